"""REDUCE (SPEC.md section 2.13.25): SUM, MAX, MIN, L2 or SUM_SQUARE of activations over `axes`
(MEAN's walk; empty axes: no dimension reduced). Integer forms, with d = x - zp_x:

    SUM         y = requantize(sum d, s_x / s_y)                      (MEAN with count 1)
    MAX, MIN    y = clamp(max x or min x, lo, hi)                      (y keeps x's quantization)
    L2          y = requantize(isqrt((sum d^2) << 16), s_x / (s_y 2^8))
    SUM_SQUARE  y = requantize(sum d^2, s_x^2 / s_y)

with the sums and the root exact in 64-bit integers under the bounds verify checks. Compiled
kernel: qrt/kernels/pool.pyx reduce. Its float32 form computes in float64, rounded once to
float32."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import OpCode, ReduceFunction, ReduceOptions
from ..numerics import INT32_MAX, MAX_INPUT_MAGNITUDE, MAX_INT16_MAGNITUDE, REDUCE_L2_ROOT_BITS, isqrt
from .base import (
    FLOAT32, INT8, INT16, Check, Form, OpDef, RescaleParams, float_bounds, float_clamp, requant, requantize_to,
    rescale, scale, zero_point,
)
from .mean import check_reduction, entries_apart, reduced_axes

SUM, MAX, MIN, L2, SUM_SQUARE = ReduceFunction


@dataclass
class ReduceParams:
    function: ReduceFunction
    axes: tuple  # sorted, distinct, in [0, rank)
    keep_dims: bool
    # SUM, L2, SUM_SQUARE: the requantization of the sum (or root); MAX, MIN: only its clamp
    # [lo, hi] applies (its multiplier is 1); None in the float32 form
    rescale: RescaleParams | None
    bounds: tuple = ()  # the float32 form's fused activation range


def prepare(model, op) -> ReduceParams:
    x, y = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    f = ReduceFunction(op.options.function)
    if f == SUM_SQUARE:
        r = RescaleParams(zero_point(x), requant(np.float64(scale(x)) * np.float64(scale(x)) / np.float64(scale(y)),
                                                 y, op), False)
    else:
        r = rescale(x, y, op, 1 << REDUCE_L2_ROOT_BITS if f == L2 else 1)
    return ReduceParams(f, reduced_axes(model, op), op.options.keep_dims, r)


def verify(c: Check):
    x, y = c.input(0), c.output()
    f = c.options.function
    if f not in ReduceFunction._value2member_map_:
        c.fail(f"function {f} is not a ReduceFunction (0-{max(ReduceFunction)})")
    if not x.shape:
        c.fail(f"input {c.label(x)} must have rank >= 1")
    count = check_reduction(c, at_least_one=False)
    f = ReduceFunction(f)
    if f in (MAX, MIN):
        if c.form != FLOAT32 and (x.quant.scale[0] != y.quant.scale[0] or x.quant.zero_point[0] != y.quant.zero_point[0]):
            c.fail(f"{f.name}: output {c.label(y)} must keep the quantization of {c.label(x)} "
                   f"(scale {x.quant.scale[0]}, zero point {x.quant.zero_point[0]}): it selects values")
        return
    magnitude = {INT8: MAX_INPUT_MAGNITUDE, INT16: MAX_INT16_MAGNITUDE}.get(c.form)
    if magnitude is None:  # float32: no integer bound
        return
    if f == SUM:
        c.sum_bound(count, f"summing {count} values")
    elif f == SUM_SQUARE and count * magnitude**2 > INT32_MAX:
        c.fail(f"summing {count} squares can overflow the int32 accumulator ({count} x {magnitude}^2 > 2^31 - 1)")
    elif f == L2 and (count * magnitude**2) << (2 * REDUCE_L2_ROOT_BITS) >= 1 << 62:
        c.fail(f"the L2 norm of {count} values can overflow its 64-bit root ({count} x {magnitude}^2 x "
               f"2^{2 * REDUCE_L2_ROOT_BITS} >= 2^62)")


def reference(ins, p: ReduceParams) -> np.ndarray:
    x, r = ins[0], p.rescale.out
    if p.function in (MAX, MIN):
        v = (x.max if p.function == MAX else x.min)(axis=p.axes, keepdims=p.keep_dims)
        return np.clip(v, r.lo, r.hi).astype(r.dtype)
    d = x.astype(np.int64) - p.rescale.input_zero_point
    acc = (d if p.function == SUM else d * d).sum(axis=p.axes, keepdims=p.keep_dims)
    if p.function == L2:
        acc = isqrt(acc << (2 * REDUCE_L2_ROOT_BITS))
    return requantize_to(acc, r).reshape(acc.shape)


def prepare_float(model, op) -> ReduceParams:
    return ReduceParams(ReduceFunction(op.options.function), reduced_axes(model, op), op.options.keep_dims, None,
                        float_bounds(op))


def reference_float(ins, p: ReduceParams) -> np.ndarray:
    x = ins[0].astype(np.float64)
    if p.function in (L2, SUM_SQUARE):
        x = x * x
    y = {MAX: np.max, MIN: np.min}.get(p.function, np.sum)(x, axis=p.axes, keepdims=p.keep_dims)
    if p.function == L2:
        y = np.sqrt(y)
    return float_clamp(np.asarray(y, np.float32), p.bounds)


REDUCE = OpDef(OpCode.REDUCE, (1, 1), 1, True, ReduceOptions, verify, prepare, reference, "reduce", since="0.3.0",
               forms=(Form(FLOAT32, verify, prepare_float, reference_float, None, "0.3.0"),
                      Form(INT16, verify, prepare, reference, "reduce_int16", "0.3.0")),
               batch=entries_apart)
