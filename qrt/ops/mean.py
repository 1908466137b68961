"""MEAN (SPEC.md section 2.13.8): the average of int8 activations over `axes`, with the 1/count
folded into one multiplier. Compiled kernel: qrt/kernels/pool.pyx mean. Its float32 form (float32 x
and y) averages in float64, rounded once to float32."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..format.model import MeanOptions, OpCode
from .base import FLOAT32, INT16, Check, Form, OpDef, RescaleParams, float_bounds, float_clamp, requantize_to, rescale


@dataclass
class MeanParams:
    axes: tuple
    keep_dims: bool
    rescale: RescaleParams


def reduced_axes(model, op) -> tuple:
    """The options' axes wrapped and sorted (MEAN, REDUCE)."""
    rank = len(model.tensors[op.inputs[0]].shape)
    return tuple(sorted({a % rank for a in op.options.axes}))


def entries_apart(model, op) -> bool:
    """The batch rule of MEAN and REDUCE: dimension 0 is not reduced."""
    return all(a % len(model.tensors[op.inputs[0]].shape) for a in op.options.axes)


def prepare(model, op) -> MeanParams:
    x, y = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    axes = reduced_axes(model, op)
    return MeanParams(axes, op.options.keep_dims, rescale(x, y, op, math.prod(x.shape[a] for a in axes)))


def check_reduction(c: Check, at_least_one: bool = True) -> int:
    """What MEAN and REDUCE check alike: x and y activations of the form, the options' axes in
    range and distinct (MEAN: at least one), y's shape; returns the count of reduced values."""
    x, y = c.input(0), c.output()
    o = c.options
    c.activation(x)
    c.activation(y)
    rank = len(x.shape)
    axes = sorted({c.axis(a, rank, "axes entry") for a in o.axes})
    if (at_least_one and not axes) or len(axes) != len(o.axes):
        c.fail(f"axes {o.axes} must name distinct dimensions" + (", at least one" if at_least_one else ""))
    expect = tuple(1 if a in axes else d for a, d in enumerate(x.shape) if o.keep_dims or a not in axes)
    if y.shape != expect:
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {expect}")
    return math.prod(x.shape[a] for a in axes)


def verify(c: Check):
    count = check_reduction(c)
    c.sum_bound(count, f"averaging {count} values")


def reference(ins, p: MeanParams) -> np.ndarray:
    total = (ins[0].astype(np.int64) - p.rescale.input_zero_point).sum(axis=p.axes, keepdims=p.keep_dims)
    return requantize_to(total, p.rescale.out).reshape(total.shape)


@dataclass
class FloatMeanParams:
    axes: tuple
    keep_dims: bool
    bounds: tuple  # the fused activation's real range


def prepare_float(model, op) -> FloatMeanParams:
    return FloatMeanParams(reduced_axes(model, op), op.options.keep_dims, float_bounds(op))


def reference_float(ins, p: FloatMeanParams) -> np.ndarray:
    y = ins[0].mean(axis=p.axes, dtype=np.float64, keepdims=p.keep_dims)
    return float_clamp(np.asarray(y, np.float32), p.bounds)


MEAN = OpDef(OpCode.MEAN, (1, 1), 1, True, MeanOptions, verify, prepare, reference, "mean",
             forms=(Form(FLOAT32, verify, prepare_float, reference_float, None, "0.3.0"),
                    Form(INT16, verify, prepare, reference, "mean_int16", "0.3.0")),
             batch=entries_apart)
