"""DEPTHWISE_CONV_2D (SPEC.md section 2.13.2): x [N, H, W, C] int8, weights [1, KH, KW, C * m]
int8 symmetric (m the depth multiplier), bias [C * m] int32 -> y [N, OH, OW, C * m]; output
channel c * m + j reads input channel c only. Compiled kernel: qrt/kernels/depthwise.pyx.
Its float32 form (float32 x, weights, bias and y) runs in NumPy, float32 arithmetic."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import DepthwiseConv2DOptions, OpCode
from .base import FLOAT32, INT16, Check, Form, OpDef, float_bounds, float_clamp, requantize_to
from .conv_2d import ConvParams, conv_params
from .window import check_spatial_output, check_window, windows


def verify(c: Check):
    x, w, b, y = c.input(0), c.input(1), c.input(2), c.output()
    o = c.options
    check_window(c, o)
    c.positive(o, "depth_multiplier")
    c.activation(x)
    c.activation(y)
    c.rank(x, 4, "[N, H, W, C]")
    c.rank(w, 4, "[1, KH, KW, C * depth_multiplier]")
    c.weights(w, 3)
    cout = x.shape[3] * o.depth_multiplier
    if w.shape[0] != 1 or w.shape[3] != cout:
        c.fail(f"weights {c.label(w)} have shape {w.shape}; expected (1, KH, KW, {cout})")
    check_spatial_output(c, x, y, o, w.shape[1], w.shape[2], o.dilation_h, o.dilation_w, cout)
    c.bias(b, x, w, cout, w.shape[1] * w.shape[2], channel_axis=3)


def reference(ins, p: ConvParams) -> np.ndarray:
    x, w, bias = ins
    xs = x.astype(np.int64) - p.input_zero_point
    _, kh, kw, cout = w.shape
    win = windows(xs, (kh, kw), p.stride, p.dilation, p.pads, 0)
    win = np.repeat(win, p.groups, axis=-1)  # input channel c feeds outputs c*m .. c*m + m-1
    acc = np.einsum("nhwijc,ijc->nhwc", win, w[0].astype(np.int64))
    return requantize_to(acc + bias.astype(np.int64), p.out)


# ---------------------------------------------------------------------------- float32 form

@dataclass
class FloatDepthwiseParams:
    stride: tuple  # (h, w)
    dilation: tuple  # (h, w)
    pads: tuple  # (top, left, bottom, right)
    depth_multiplier: int
    bounds: tuple  # the fused activation's real range


def prepare_float(model, op) -> FloatDepthwiseParams:
    o = op.options
    return FloatDepthwiseParams((o.stride_h, o.stride_w), (o.dilation_h, o.dilation_w),
                                (o.pad_top, o.pad_left, o.pad_bottom, o.pad_right), o.depth_multiplier,
                                float_bounds(op))


def reference_float(ins, p: FloatDepthwiseParams) -> np.ndarray:
    """y = bias + sum over the KH x KW taps of x (padding 0) x w, one tap at a time in float32."""
    x, w, bias = ins
    if p.depth_multiplier > 1:  # input channel c feeds outputs c*m .. c*m + m-1
        x = np.repeat(x, p.depth_multiplier, axis=3)
    _, kh, kw, cout = w.shape
    win = windows(x, (kh, kw), p.stride, p.dilation, p.pads, 0)
    y = np.empty(win.shape[:3] + (cout,), np.float32)
    y[...] = bias
    for i in range(kh):
        for j in range(kw):
            y += win[:, :, :, i, j, :] * w[0, i, j]
    return float_clamp(y, p.bounds)


def macs(model, op) -> int:
    """Output elements x KH x KW."""
    w = model.tensors[op.inputs[1]]
    return model.tensors[op.outputs[0]].numel * w.shape[1] * w.shape[2]


DEPTHWISE_CONV_2D = OpDef(OpCode.DEPTHWISE_CONV_2D, (3, 3), 1, True, DepthwiseConv2DOptions, verify,
                          conv_params, reference, "depthwise_conv_2d", macs=macs,
                          forms=(Form(FLOAT32, verify, prepare_float, reference_float, None, "0.3.0"),
                                 Form(INT16, verify, conv_params, reference, "depthwise_conv_2d_int16", "0.3.0")),
                          batch=True)
