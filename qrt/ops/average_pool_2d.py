"""AVERAGE_POOL_2D (SPEC.md section 2.13.7; 2.14): sum (x - zp_x) over each window / count, count
the window area or its non-padded positions, the 1/count folded into the multiplier (one
rounding). Compiled kernel: qrt/kernels/pool.pyx average_pool_2d. Its float32 form (float32 x
and y) runs in NumPy, summing in float64 rounded once to float32."""
from __future__ import annotations

import numpy as np

from ..format.model import OpCode, Pool2DOptions
from ..numerics import requantize
from .base import FLOAT32, INT16, Form, OpDef, float_clamp, requant, scale
from .max_pool_2d import FloatPoolParams, PoolParams, pool_params, prepare_float, verify_pool
from .window import windows


def prepare(model, op) -> PoolParams:
    x, y = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    o = op.options
    window = o.kernel_h * o.kernel_w
    # Indexed by (count - 1); with count_include_pad every window counts the full area.
    counts = np.full(window, window) if o.count_include_pad else np.arange(1, window + 1)
    return pool_params(model, op, requant(np.float64(scale(x)) / (np.float64(scale(y)) * counts), y, op))


def reference(ins, p: PoolParams) -> np.ndarray:
    x = ins[0]
    xs = x.astype(np.int64) - p.input_zero_point
    total = windows(xs, p.kernel, p.stride, (1, 1), p.pads, 0).sum(axis=(3, 4))
    if p.count_include_pad:
        count = np.full(total.shape, p.kernel[0] * p.kernel[1])
    else:
        ones = np.ones((1,) + x.shape[1:3] + (1,), np.int64)
        count = np.broadcast_to(windows(ones, p.kernel, p.stride, (1, 1), p.pads, 0).sum(axis=(3, 4)), total.shape)
    r = p.out
    return requantize(total, r.multiplier[count - 1], r.shift[count - 1], r.zero_point, r.lo, r.hi).astype(r.dtype)


def reference_float(ins, p: FloatPoolParams) -> np.ndarray:
    """The window sums (padding 0) in float64, one tap at a time, / count, rounded once."""
    x = ins[0]
    win = windows(x, p.kernel, p.stride, (1, 1), p.pads, 0)
    total = np.zeros(win.shape[:3] + win.shape[5:], np.float64)
    for i in range(p.kernel[0]):
        for j in range(p.kernel[1]):
            total += win[:, :, :, i, j, :]
    if p.count_include_pad:
        count = p.kernel[0] * p.kernel[1]
    else:  # the non-padded positions of each window: [1, OH, OW, 1]
        ones = np.ones((1,) + x.shape[1:3] + (1,), np.float64)
        count = windows(ones, p.kernel, p.stride, (1, 1), p.pads, 0).sum(axis=(3, 4))
    return float_clamp((total / count).astype(np.float32), p.bounds)


AVERAGE_POOL_2D = OpDef(OpCode.AVERAGE_POOL_2D, (1, 1), 1, True, Pool2DOptions, verify_pool, prepare,
                        reference, "average_pool_2d",
                        forms=(Form(FLOAT32, verify_pool, prepare_float, reference_float, None, "0.3.0"),
                               Form(INT16, verify_pool, prepare, reference, "average_pool_2d_int16", "0.3.0")),
                        batch=True)
