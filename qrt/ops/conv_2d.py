"""CONV_2D (SPEC.md section 2.13.1): x [N, H, W, C_in] int8, weights [C_out, KH, KW, C_in / groups]
int8 or int4 symmetric (per tensor or per output channel), bias [C_out] int32 -> y [N, OH, OW, C_out].
Compiled kernel: qrt/kernels/gemm.pyx conv_2d. Its float32, weight-only and dynamic forms
(float32 x, y and bias) follow qrt/ops/hybrid.py; compiled kernels: qrt/kernels/weight_only.pyx,
dynamic.pyx."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..format.model import Conv2DOptions, OpCode
from . import hybrid as H
from .base import (DYNAMIC, FLOAT32, INT16, WEIGHT_ONLY, Check, Form, OpDef, Requant, int4_shape, requant,
                   requantize_to, scale, weight_ints, zero_point)
from .window import check_spatial_output, check_window, windows


@dataclass
class ConvParams:
    """CONV_2D and DEPTHWISE_CONV_2D."""
    stride: tuple  # (h, w)
    dilation: tuple  # (h, w)
    pads: tuple  # (top, left, bottom, right)
    groups: int  # CONV_2D groups; DEPTHWISE: the depth multiplier
    input_zero_point: int
    out: Requant
    w4: tuple | None = None  # CONV_2D's int4 weights: their shape (base.int4_shape)


def channel_multipliers(x, w, y, channels: int) -> np.ndarray:
    """s_x * s_w[c] / s_y per output channel, in float64."""
    sw = np.broadcast_to(w.quant.scale.astype(np.float64), (channels,))
    return np.float64(scale(x)) * sw / np.float64(scale(y))


def conv_params(model, op) -> ConvParams:
    x, w, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    o = op.options
    if op.opcode == OpCode.CONV_2D:
        channels, groups = w.shape[0], o.groups
    else:
        channels, groups = w.shape[3], o.depth_multiplier
    return ConvParams((o.stride_h, o.stride_w), (o.dilation_h, o.dilation_w),
                      (o.pad_top, o.pad_left, o.pad_bottom, o.pad_right), groups, zero_point(x),
                      requant(channel_multipliers(x, w, y, channels), y, op), int4_shape(w))


def verify(c: Check):
    x, w, b, y = c.input(0), c.input(1), c.input(2), c.output()
    o = c.options
    check_window(c, o)
    c.positive(o, "groups")
    c.activation(x)
    c.activation(y)
    c.rank(x, 4, "[N, H, W, C]")
    c.rank(w, 4, "[C_out, KH, KW, C_in / groups]")
    c.weights(w, 0, int4=True)
    cout, kh, kw, cin_g = w.shape
    cin = x.shape[3]
    if cin % o.groups or cout % o.groups or cin_g * o.groups != cin:
        c.fail(f"groups = {o.groups} does not fit input channels {cin}, output channels {cout} "
               f"and weights {w.shape}")
    check_spatial_output(c, x, y, o, kh, kw, o.dilation_h, o.dilation_w, cout)
    c.bias(b, x, w, cout, kh * kw * cin_g)


def reference(ins, p: ConvParams) -> np.ndarray:
    """acc[c] = bias[c] + sum (x - zp_x) * w[c]; padding stands for real 0 (x = zp_x)."""
    x, w, bias = ins[0], weight_ints(ins[1], p.w4), ins[2]
    xs = x.astype(np.int64) - p.input_zero_point
    cout, kh, kw, cin_g = w.shape
    win = windows(xs, (kh, kw), p.stride, p.dilation, p.pads, 0)
    cout_g = cout // p.groups
    acc = np.empty(win.shape[:3] + (cout,), np.int64)
    for g in range(p.groups):
        patch = win[..., g * cin_g:(g + 1) * cin_g]
        wg = w[g * cout_g:(g + 1) * cout_g].astype(np.int64)
        acc[..., g * cout_g:(g + 1) * cout_g] = np.einsum("nhwijk,oijk->nhwo", patch, wg)
    return requantize_to(acc + bias.astype(np.int64), p.out)


def gemm_macs(model, op) -> int:
    """Output elements x the weights' reduction length (CONV_2D and FULLY_CONNECTED)."""
    return model.tensors[op.outputs[0]].numel * math.prod(model.tensors[op.inputs[1]].shape[1:])


# ---------------------------------------------------------------------------- float32 activations

@dataclass
class HybridConvParams:
    window: ConvParams  # stride, dilation, pads, groups (its zero point and Requant unused)
    hybrid: H.HybridParams


def hybrid_conv_params(model, op, form: str) -> HybridConvParams:
    o = op.options
    win = ConvParams((o.stride_h, o.stride_w), (o.dilation_h, o.dilation_w),
                     (o.pad_top, o.pad_left, o.pad_bottom, o.pad_right), o.groups, 0, None)
    return HybridConvParams(win, H.hybrid_params(model, op, form))


def _grouped(x, w_rows, p: ConvParams, kernel: tuple, matmul):
    """matmul(patches [M, KH*KW*cin_g], weight rows of group g, g) per group, into [N, OH, OW, C_out]:
    the im2col of x (padding 0) in (kh, kw, c) order, the weights' storage order."""
    kh, kw = kernel
    win = windows(x, (kh, kw), p.stride, p.dilation, p.pads, 0)
    n, oh, ow = win.shape[:3]
    cin_g = x.shape[3] // p.groups
    outs = []
    for g in range(p.groups):
        patch = win[..., g * cin_g:(g + 1) * cin_g].reshape(n * oh * ow, kh * kw * cin_g)
        outs.append(matmul(patch, g))
    return np.concatenate(outs, axis=1).reshape(n, oh, ow, -1)


def reference_float(ins, p: HybridConvParams) -> np.ndarray:
    x, w, bias = ins
    cout_g = w.shape[0] // p.window.groups
    w2 = w.reshape(w.shape[0], -1)
    y = _grouped(x, w2, p.window, w.shape[1:3], lambda a, g: a @ w2[g * cout_g:(g + 1) * cout_g].T)
    return H.finish(y + bias, p.hybrid)


def reference_weight_only(ins, p: HybridConvParams) -> np.ndarray:
    x, w, bias = ins
    qw = p.hybrid.weights
    wd = H.dequantize_weights(w, qw)
    cout_g = qw.channels // p.window.groups
    y = _grouped(x, wd, p.window, qw.shape[1:3], lambda a, g: H.ordered_matmul(
        a, wd[g * cout_g:(g + 1) * cout_g], bias[g * cout_g:(g + 1) * cout_g]))
    return H.finish(y, p.hybrid)


def reference_dynamic(ins, p: HybridConvParams) -> np.ndarray:
    """Each image quantized on its own (quantize_rows); padding is real 0 (q = zp)."""
    x, w, bias = ins
    qw = p.hybrid.weights
    q, s, zp = H.quantize_rows(x.reshape(x.shape[0], -1))
    xs = q.reshape(x.shape).astype(np.int64) - zp.reshape(-1, 1, 1, 1)
    wi = H.weight_values(w, qw).astype(np.int64)
    cout_g = qw.channels // p.window.groups
    acc = _grouped(xs, wi, p.window, qw.shape[1:3], lambda a, g: a @ wi[g * cout_g:(g + 1) * cout_g].T)
    return H.finish(H.dequantize_sums(acc, s, qw.scales[:, 0], bias), p.hybrid)


def _form(name, reference, kernel):
    return Form(name, verify, lambda model, op: hybrid_conv_params(model, op, name), reference, kernel, "0.3.0")


CONV_2D = OpDef(OpCode.CONV_2D, (3, 3), 1, True, Conv2DOptions, verify, conv_params, reference, "conv_2d",
                macs=gemm_macs, select=H.select, forms=(
                    _form(FLOAT32, reference_float, None),
                    _form(WEIGHT_ONLY, reference_weight_only, "conv_2d_weight_only"),
                    _form(DYNAMIC, reference_dynamic, "conv_2d_dynamic"),
                    Form(INT16, verify, conv_params, reference, "conv_2d_int16", "0.3.0")),
                batch=True)
