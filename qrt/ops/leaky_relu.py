"""LEAKY_RELU (SPEC.md section 2.13.12; 2.14): y = zp_y + rounding_shift(x - zp_x, m, n), with
(m, n) the positive slope for x >= zp_x and alpha's (signed) slope below. PRELU
(qrt/ops/prelu.py) is the same with alpha per element. Compiled kernel:
qrt/kernels/elementwise.pyx slope (both ops). Its float32 form (float32 x and y) is
where(x >= 0, x, alpha * x) in NumPy (slope_float, PRELU's too)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..format.model import LeakyReluOptions, OpCode
from ..numerics import quantize_multiplier, quantize_signed_multiplier, rounding_shift
from .base import FLOAT32, Check, Form, OpDef, scale, zero_point


@dataclass
class SlopeParams:
    """alpha arrays broadcast to x."""
    input_zero_point: int
    pos_multiplier: int
    pos_shift: int
    neg_multiplier: np.ndarray
    neg_shift: np.ndarray
    out_zero_point: int


def slopes(x, y, alpha_real: np.ndarray) -> SlopeParams:
    base = np.float64(scale(x)) / np.float64(scale(y))
    mp, np_ = quantize_multiplier(base)
    neg = [quantize_signed_multiplier(a * base) for a in alpha_real.ravel()]
    shape = alpha_real.shape
    return SlopeParams(zero_point(x), mp, np_, np.array([m for m, _ in neg], np.int64).reshape(shape),
                       np.array([n for _, n in neg], np.int64).reshape(shape), zero_point(y))


def prepare(model, op) -> SlopeParams:
    x, y = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    return slopes(x, y, np.array(np.float32(op.options.alpha), dtype=np.float64))


def verify(c: Check):
    c.elementwise()
    if not math.isfinite(c.options.alpha):
        c.fail(f"alpha = {c.options.alpha}; must be finite")


def reference(ins, p: SlopeParams) -> np.ndarray:
    """The positive slope above zp_x, alpha's (signed) slope below."""
    v = ins[0].astype(np.int64) - p.input_zero_point
    pos = rounding_shift(v, p.pos_multiplier, p.pos_shift)
    neg = rounding_shift(v, p.neg_multiplier, p.neg_shift)
    return np.clip(np.where(v >= 0, pos, neg) + p.out_zero_point, -128, 127).astype(np.int8)


# ---------------------------------------------------------------------------- float32 form

@dataclass
class FloatSlopeParams:
    alpha: np.float32  # the option, rounded to float32 as the file stores it


def prepare_float(model, op) -> FloatSlopeParams:
    return FloatSlopeParams(np.float32(op.options.alpha))


def slope_float(x: np.ndarray, alpha) -> np.ndarray:
    """x where x >= 0, else alpha * x (float32; NaN stays NaN)."""
    return np.where(x >= 0, x, x * alpha)


def reference_float(ins, p: FloatSlopeParams) -> np.ndarray:
    return slope_float(ins[0], p.alpha)


LEAKY_RELU = OpDef(OpCode.LEAKY_RELU, (1, 1), 1, False, LeakyReluOptions, verify, prepare, reference, "slope",
                   forms=(Form(FLOAT32, verify, prepare_float, reference_float, None, "0.3.0"),),
                   batch=True)
