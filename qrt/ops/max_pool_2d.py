"""MAX_POOL_2D (SPEC.md section 2.13.6): the largest int8 of each window; padding never wins, and
the output keeps the input's quantization. Shares PoolParams and the checks with
AVERAGE_POOL_2D (qrt/ops/average_pool_2d.py). Compiled kernel: qrt/kernels/pool.pyx max_pool_2d.
Its float32 form (float32 x and y) runs in NumPy, padding -inf."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import QUANT_RANGE, OpCode, Pool2DOptions
from .base import FLOAT32, INT16, Check, Form, OpDef, Requant, float_bounds, zero_point
from .window import check_spatial_output, windows


@dataclass
class PoolParams:
    kernel: tuple
    stride: tuple
    pads: tuple
    count_include_pad: bool
    input_zero_point: int
    out: Requant  # AVERAGE: multiplier/shift indexed by (window count - 1); MAX: unused


def pool_params(model, op, out: Requant) -> PoolParams:
    o = op.options
    return PoolParams((o.kernel_h, o.kernel_w), (o.stride_h, o.stride_w),
                      (o.pad_top, o.pad_left, o.pad_bottom, o.pad_right), o.count_include_pad,
                      zero_point(model.tensors[op.inputs[0]]), out)


def prepare(model, op) -> PoolParams:
    y = model.tensors[op.outputs[0]]
    unused = Requant(np.zeros(1, np.int32), np.ones(1, np.int32), zero_point(y), *QUANT_RANGE[y.dtype])
    return pool_params(model, op, unused)


@dataclass
class FloatPoolParams:
    """The float32 forms of MAX_POOL_2D and AVERAGE_POOL_2D."""
    kernel: tuple  # (h, w)
    stride: tuple  # (h, w)
    pads: tuple  # (top, left, bottom, right)
    count_include_pad: bool
    bounds: tuple  # the fused activation's real range (AVERAGE_POOL_2D; MAX_POOL_2D has none)


def prepare_float(model, op) -> FloatPoolParams:
    o = op.options
    return FloatPoolParams((o.kernel_h, o.kernel_w), (o.stride_h, o.stride_w),
                           (o.pad_top, o.pad_left, o.pad_bottom, o.pad_right), o.count_include_pad,
                           float_bounds(op))


def verify_pool(c: Check):
    x, y = c.input(0), c.output()
    o = c.options
    c.positive(o, "kernel_h", "kernel_w", "stride_h", "stride_w")
    c.non_negative(o, "pad_top", "pad_left", "pad_bottom", "pad_right")
    if max(o.pad_top, o.pad_bottom) >= o.kernel_h or max(o.pad_left, o.pad_right) >= o.kernel_w:
        c.fail(f"padding must be smaller than the {o.kernel_h}x{o.kernel_w} window "
               f"(a window must not lie wholly in the padding)")
    c.activation(x)
    c.activation(y)
    c.rank(x, 4, "[N, H, W, C]")
    c.sum_bound(o.kernel_h * o.kernel_w, f"a {o.kernel_h}x{o.kernel_w} window")
    check_spatial_output(c, x, y, o, o.kernel_h, o.kernel_w, 1, 1, x.shape[3])


def verify(c: Check):
    verify_pool(c)
    c.same_quant(c.input(0), c.output())


def reference(ins, p: PoolParams) -> np.ndarray:
    """Padding never wins: it is filled below the input dtype's range."""
    x = ins[0]
    win = windows(x.astype(np.int32), p.kernel, p.stride, (1, 1), p.pads, int(np.iinfo(x.dtype).min) - 1)
    return win.max(axis=(3, 4)).astype(x.dtype)


def reference_float(ins, p: FloatPoolParams) -> np.ndarray:
    """The max over each window's taps, one tap at a time; padding is -inf (never wins)."""
    win = windows(ins[0], p.kernel, p.stride, (1, 1), p.pads, -np.inf)
    y = win[:, :, :, 0, 0, :].copy()
    for i in range(p.kernel[0]):
        for j in range(p.kernel[1]):
            if i or j:
                np.maximum(y, win[:, :, :, i, j, :], out=y)
    return y


MAX_POOL_2D = OpDef(OpCode.MAX_POOL_2D, (1, 1), 1, False, Pool2DOptions, verify, prepare, reference,
                    "max_pool_2d", forms=(Form(FLOAT32, verify, prepare_float, reference_float, None, "0.3.0"),
                                          Form(INT16, verify, prepare, reference, "max_pool_2d_int16", "0.3.0")),
                    batch=True)
