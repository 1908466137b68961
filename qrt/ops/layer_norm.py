"""LAYER_NORM (SPEC.md section 2.13.22): x [..., C] normalised over its last dimension, then
y = gamma * n + beta per channel (gamma, beta float32 constants [C]). int8 form, integers only:

    d = x - zp_x;  S = sum d;  Q = sum d^2;  D = (C Q - S^2) 2^14 + E      (int64; E from epsilon)
    r = isqrt(D);  t = (C d - S) 2^22;  n = round(t / r), ties away from 0   (n ~ (x - mean) / std * 2^15)
    y = clamp(zp_y + B[c] + ((n m[c] + 2^(s[c]-1)) >> s[c]), lo, hi)

(r carries 7 fraction bits, so that its floor costs n no accuracy) where E = round(epsilon
C^2 2^14 / s_x^2) (at least 1, at most 2^61), m[c], s[c] the signed multiplier of
gamma[c] / (s_y 2^15) and B[c] = round(beta[c] / s_y): the input's scale cancels out of n.
Compiled kernel: qrt/kernels/softmax.pyx layer_norm. Its float32 form computes in float64, rounded
once to float32."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import DType, LayerNormOptions, OpCode
from ..numerics import quantize_signed_multiplier
from .base import FLOAT32, Check, Form, OpDef, QUANT_RANGE, scale, zero_point

FRACTION_BITS = 15  # of the normalised value n
ROOT_BITS = 7  # fraction bits of r = isqrt(D): D carries twice as many
MAX_CHANNELS = 1 << 16  # keeps |n| <= sqrt(C) 2^15 inside int32, D < 2^63 and (r + 1)^2 < 2^63
MAX_EPSILON_TERM = 1 << 61


@dataclass
class LayerNormParams:
    zp_x: int
    eps_term: int  # E
    multiplier: np.ndarray  # int64 [C], signed
    shift: np.ndarray  # int64 [C]
    offset: np.ndarray  # int64 [C]: B[c] + zp_y
    lo: int
    hi: int
    epsilon: float = 0.0  # the float32 form's
    gamma: np.ndarray | None = None  # the float32 form's
    beta: np.ndarray | None = None


def prepare(model, op) -> LayerNormParams:
    x, g, b, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.inputs[2], op.outputs[0]))
    c = x.shape[-1]
    sx, sy = np.float64(scale(x)), np.float64(scale(y))
    e = np.float64(np.float32(op.options.epsilon)) * c * c * 2.0 ** (2 * ROOT_BITS) / (sx * sx)
    eps_term = int(min(max(np.rint(e), 1), MAX_EPSILON_TERM))
    pairs = [quantize_signed_multiplier(float(gc) / (float(sy) * 2.0**FRACTION_BITS))
             for gc in g.data.astype(np.float64)]
    offset = np.rint(b.data.astype(np.float64) / sy)
    offset = np.clip(offset, -2**31, 2**31 - 1).astype(np.int64) + zero_point(y)
    lo, hi = QUANT_RANGE[y.dtype]
    return LayerNormParams(zero_point(x), eps_term, np.array([m for m, _ in pairs], np.int64),
                           np.array([n for _, n in pairs], np.int64), offset, lo, hi)


def prepare_float(model, op) -> LayerNormParams:
    g, b = model.tensors[op.inputs[1]], model.tensors[op.inputs[2]]
    return LayerNormParams(0, 0, None, None, None, 0, 0, float(np.float32(op.options.epsilon)), g.data, b.data)


def verify(c: Check):
    x, g, b, y = c.input(0), c.input(1), c.input(2), c.output()
    c.activation(x)
    c.activation(y)
    c.same_shape(x, y)
    if not x.shape:
        c.fail(f"input {c.label(x)} must have rank >= 1 (its last dimension is normalised)")
    channels = x.shape[-1]
    for t, what in ((g, "gamma"), (b, "beta")):
        c.constant(t)
        c.dtype(t, DType.FLOAT32)
        if t.shape != (channels,):
            c.fail(f"{what} {c.label(t)} has shape {t.shape}; expected ({channels},)")
        if not np.isfinite(t.data).all():
            c.fail(f"{what} {c.label(t)} holds non-finite values")
    eps = c.options.epsilon
    if not (np.isfinite(eps) and eps >= 0):
        c.fail(f"epsilon = {eps}; must be finite and >= 0")
    if c.form != FLOAT32 and channels > MAX_CHANNELS:
        c.fail(f"{channels} channels: the integer form normalises at most {MAX_CHANNELS}")


def isqrt(d: np.ndarray) -> np.ndarray:
    """floor(sqrt(d)) of int64 0 <= d < 2^63 - 2^33, exactly (a float64 estimate, then
    corrected by whole steps)."""
    d = np.asarray(d, np.int64)
    r = np.floor(np.sqrt(d.astype(np.float64))).astype(np.int64)
    while (r * r > d).any():
        r = np.where(r * r > d, r - 1, r)
    while ((r + 1) * (r + 1) <= d).any():
        r = np.where((r + 1) * (r + 1) <= d, r + 1, r)
    return r


def reference(ins, p: LayerNormParams) -> np.ndarray:
    x = ins[0]
    c = x.shape[-1]
    d = x.astype(np.int64) - p.zp_x
    s = d.sum(axis=-1, keepdims=True)
    q = (d * d).sum(axis=-1, keepdims=True)
    r = isqrt(((c * q - s * s) << (2 * ROOT_BITS)) + p.eps_term)
    t = (c * d - s) << (FRACTION_BITS + ROOT_BITS)
    n = np.sign(t) * ((2 * np.abs(t) + r) // (2 * r))  # round(t / r), ties away from 0
    v = (n * p.multiplier + (np.int64(1) << (p.shift - 1))) >> p.shift
    return np.clip(v + p.offset, p.lo, p.hi).astype(np.int8)


def reference_float(ins, p: LayerNormParams) -> np.ndarray:
    x = ins[0].astype(np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + p.epsilon) * p.gamma.astype(np.float64) + p.beta.astype(np.float64)
    return y.astype(np.float32)


LAYER_NORM = OpDef(OpCode.LAYER_NORM, (3, 3), 1, False, LayerNormOptions, verify, prepare, reference, "layer_norm",
                   since="0.3.0", forms=(Form(FLOAT32, verify, prepare_float, reference_float, None, "0.3.0"),),
                   batch=lambda model, op: len(model.tensors[op.inputs[0]].shape) > 1)
