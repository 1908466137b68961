"""MAX_POOL_2D (SPEC.md section 2.13.6): the largest int8 of each window; padding never wins, and
the output keeps the input's quantization. Shares PoolParams and the checks with
AVERAGE_POOL_2D (qrt/ops/average_pool_2d.py). Compiled kernel: qrt/kernels/pool.pyx max_pool_2d."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import QUANT_RANGE, OpCode, Pool2DOptions
from .base import Check, OpDef, Requant, zero_point
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
    """Padding never wins: it is filled below the int8 range."""
    win = windows(ins[0].astype(np.int16), p.kernel, p.stride, (1, 1), p.pads, -129)
    return win.max(axis=(3, 4)).astype(np.int8)


MAX_POOL_2D = OpDef(OpCode.MAX_POOL_2D, (1, 1), 1, False, Pool2DOptions, verify, prepare, reference,
                    "max_pool_2d")
