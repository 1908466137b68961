"""SOFTMAX (SPEC.md section 2.13.15; 2.14): integers only, e = exp_table[max - x] (2**23 fixed
point), y = clamp(((e << 8) + sum/2) // sum - 128); the output's (scale, zero point) is fixed
to SOFTMAX_OUTPUT. Compiled kernel: qrt/kernels/softmax.pyx softmax. Its float32 form (float32 x
and y, y's quantization not fixed: there is none) computes in float64, rounded once to float32."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..format.model import OpCode, SoftmaxOptions
from ..numerics import SOFTMAX_EXP_BITS, SOFTMAX_OUTPUT
from .base import FLOAT32, Check, Form, OpDef, scale


@dataclass
class SoftmaxParams:
    axis: int
    exp_table: np.ndarray  # int64 [256]: round(exp(-beta * s_x * d) * 2**SOFTMAX_EXP_BITS)


def prepare(model, op) -> SoftmaxParams:
    x = model.tensors[op.inputs[0]]
    d = np.arange(256, dtype=np.float64)
    table = np.rint(np.exp(-np.float64(np.float32(op.options.beta)) * scale(x) * d) * 2.0**SOFTMAX_EXP_BITS)
    return SoftmaxParams(op.options.axis % len(x.shape), table.astype(np.int64))


def verify(c: Check):
    c.elementwise()
    o = c.options
    c.axis(o.axis, len(c.input(0).shape))
    if not (math.isfinite(o.beta) and o.beta > 0):
        c.fail(f"beta = {o.beta}; must be finite and > 0")
    y = c.output()
    if not c.float_activations and (float(y.quant.scale[0]), int(y.quant.zero_point[0])) != SOFTMAX_OUTPUT:
        c.fail(f"output {c.label(y)} must have scale 1/256 and zero point -128 (fixed by softmax's range)")


def reference(ins, p: SoftmaxParams) -> np.ndarray:
    x = ins[0]
    d = x.max(axis=p.axis, keepdims=True).astype(np.int64) - x
    e = p.exp_table[d]
    total = e.sum(axis=p.axis, keepdims=True)
    return np.clip(((e << 8) + (total >> 1)) // total - 128, -128, 127).astype(np.int8)


@dataclass
class FloatSoftmaxParams:
    axis: int
    beta: float  # the float32 option, exactly, as a float64


def prepare_float(model, op) -> FloatSoftmaxParams:
    rank = len(model.tensors[op.inputs[0]].shape)
    return FloatSoftmaxParams(op.options.axis % rank, float(np.float32(op.options.beta)))


def reference_float(ins, p: FloatSoftmaxParams) -> np.ndarray:
    """exp(beta * (x - max)) / sum along axis, in float64."""
    e = ins[0].astype(np.float64)
    e -= e.max(axis=p.axis, keepdims=True)
    e *= p.beta
    np.exp(e, out=e)
    e /= e.sum(axis=p.axis, keepdims=True)
    return e.astype(np.float32)


SOFTMAX = OpDef(OpCode.SOFTMAX, (1, 1), 1, False, SoftmaxOptions, verify, prepare, reference, "softmax",
                forms=(Form(FLOAT32, verify, prepare_float, reference_float, None, "0.3.0"),))
