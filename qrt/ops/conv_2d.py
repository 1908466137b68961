"""CONV_2D (SPEC.md section 2.13.1): x [N, H, W, C_in] int8, weights [C_out, KH, KW, C_in / groups]
int8 symmetric (per tensor or per output channel), bias [C_out] int32 -> y [N, OH, OW, C_out].
Compiled kernel: qrt/kernels/gemm.pyx conv_2d."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..format.model import Conv2DOptions, OpCode
from .base import Check, OpDef, Requant, requant, requantize_to, scale, zero_point
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
                      requant(channel_multipliers(x, w, y, channels), y, op))


def verify(c: Check):
    x, w, b, y = c.input(0), c.input(1), c.input(2), c.output()
    o = c.options
    check_window(c, o)
    c.positive(o, "groups")
    c.activation(x)
    c.activation(y)
    c.rank(x, 4, "[N, H, W, C]")
    c.rank(w, 4, "[C_out, KH, KW, C_in / groups]")
    c.weights(w, 0)
    cout, kh, kw, cin_g = w.shape
    cin = x.shape[3]
    if cin % o.groups or cout % o.groups or cin_g * o.groups != cin:
        c.fail(f"groups = {o.groups} does not fit input channels {cin}, output channels {cout} "
               f"and weights {w.shape}")
    check_spatial_output(c, x, y, o, kh, kw, o.dilation_h, o.dilation_w, cout)
    c.bias(b, x, w, cout, kh * kw * cin_g)


def reference(ins, p: ConvParams) -> np.ndarray:
    """acc[c] = bias[c] + sum (x - zp_x) * w[c]; padding stands for real 0 (x = zp_x)."""
    x, w, bias = ins
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


CONV_2D = OpDef(OpCode.CONV_2D, (3, 3), 1, True, Conv2DOptions, verify, conv_params, reference, "conv_2d",
                macs=gemm_macs)
