"""LAYER_NORM (SPEC.md section 2.13.22, which gives the integer algorithm of both forms): x [..., C]
normalised over its last dimension, then y = gamma * n + beta per channel; the input's scale
cancels out of n, estimated with an exact integer square root (int8: 15 fraction bits; int16: 20,
and R per row in the root). `rms` (RMSNorm) subtracts no mean. Compiled kernel:
qrt/kernels/softmax.pyx layer_norm. Its float32 form computes in float64, rounded once."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import DType, LayerNormOptions, OpCode
from ..numerics import isqrt, quantize_signed_multiplier
from .base import FLOAT32, INT16, Check, Form, OpDef, QUANT_RANGE, scale, zero_point

FRACTION_BITS = 15  # of the normalised value n in the int8 form; 20 in the int16 form
ROOT_BITS = 7  # fraction bits of r = isqrt(D) in the int8 form: D carries twice as many
ROOT_BITS_16 = 15  # at most, per row, in the int16 form


def epsilon_term(unit: float, bits) -> np.ndarray:
    """The int16 form's E at R fraction bits: rint(unit 2^(2R)) in float64 (exact scaling),
    within [1, 2^61]."""
    return np.clip(np.rint(np.minimum(unit * np.exp2(2.0 * np.asarray(bits)), 2.0**61)), 1, None).astype(np.int64)


def root_bits(a: np.ndarray, p) -> np.ndarray:
    """r's fraction bits per row, given A = C Q - S^2: as many as keep (A + E_0) 2^(2R) below
    2^61, at most 15 (large rows need none, small ones all); the int16 form's."""
    b = a + p.eps_term  # E_0 = E at R = 0
    length = ((b[..., None] >> np.arange(63)) > 0).sum(-1)  # bit length, exactly
    return np.clip((61 - length) // 2, 0, ROOT_BITS_16)


def fraction_bits(dtype) -> int:
    """n's fraction bits: 15 for int8, 20 for int16 (whose output steps are 256 times finer)."""
    return FRACTION_BITS if np.dtype(dtype) == np.int8 else 20

MAX_CHANNELS = 1 << 16  # keeps |n| <= sqrt(C) 2^20, D < 2^63 and (r + 1)^2 < 2^63
MAX_EPSILON_TERM = 1 << 61


@dataclass
class LayerNormParams:
    zp_x: int
    eps_term: int  # E (the int8 form's); E_0 = rint(min(eps_unit, 2^61)) (the int16 form's)
    multiplier: np.ndarray  # int64 [C], signed
    shift: np.ndarray  # int64 [C]
    offset: np.ndarray  # int64 [C]: B[c] + zp_y
    lo: int
    hi: int
    epsilon: float = 0.0  # the float32 form's
    gamma: np.ndarray | None = None  # the float32 form's
    beta: np.ndarray | None = None
    rms: bool = False  # S = 0: no mean subtracted
    eps_unit: float = 0.0  # the int16 form's E at R = 0 (float64): E_R = rint(eps_unit 2^(2R))


def prepare(model, op) -> LayerNormParams:
    x, g, b, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.inputs[2], op.outputs[0]))
    c = x.shape[-1]
    sx, sy = np.float64(scale(x)), np.float64(scale(y))
    dtype = np.int8 if x.dtype == DType.INT8 else np.int16
    eps_unit = np.float64(np.float32(op.options.epsilon)) * c * c / (sx * sx)
    e = np.float64(np.float32(op.options.epsilon)) * c * c * 2.0 ** (2 * ROOT_BITS) / (sx * sx)
    eps_term = int(min(max(np.rint(e), 1), MAX_EPSILON_TERM)) if dtype == np.int8 else \
        int(np.rint(min(eps_unit, float(MAX_EPSILON_TERM))))
    pairs = [quantize_signed_multiplier(float(gc) / (float(sy) * 2.0**fraction_bits(dtype)))
             for gc in g.data.astype(np.float64)]
    offset = np.rint(b.data.astype(np.float64) / sy)
    offset = np.clip(offset, -2**31, 2**31 - 1).astype(np.int64) + zero_point(y)
    lo, hi = QUANT_RANGE[y.dtype]
    return LayerNormParams(zero_point(x), eps_term, np.array([m for m, _ in pairs], np.int64),
                           np.array([n for _, n in pairs], np.int64), offset, lo, hi, rms=bool(op.options.rms),
                           eps_unit=float(eps_unit) if dtype == np.int16 else 0.0)


def prepare_float(model, op) -> LayerNormParams:
    g, b = model.tensors[op.inputs[1]], model.tensors[op.inputs[2]]
    return LayerNormParams(0, 0, None, None, None, 0, 0, float(np.float32(op.options.epsilon)), g.data, b.data,
                           bool(op.options.rms))


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
        c.fail(f"{channels} channels: the integer forms normalise at most {MAX_CHANNELS}")


def reference(ins, p: LayerNormParams) -> np.ndarray:
    x = ins[0]
    c = x.shape[-1]
    d = x.astype(np.int64) - p.zp_x
    s = d.sum(axis=-1, keepdims=True) * (not p.rms)
    q = (d * d).sum(axis=-1, keepdims=True)
    a = c * q - s * s
    if x.dtype == np.int8:
        bits, e = ROOT_BITS, p.eps_term
    else:
        bits = root_bits(a, p)
        e = epsilon_term(p.eps_unit, bits)
    r = isqrt((a << (2 * bits)) + e)
    t = (c * d - s) << (fraction_bits(x.dtype) + bits)
    n = np.sign(t) * ((2 * np.abs(t) + r) // (2 * r))  # round(t / r), ties away from 0
    v = (n * p.multiplier + (np.int64(1) << (p.shift - 1))) >> p.shift
    return np.clip(v + p.offset, p.lo, p.hi).astype(x.dtype)


def reference_float(ins, p: LayerNormParams) -> np.ndarray:
    x = ins[0].astype(np.float64)
    mean = x.mean(axis=-1, keepdims=True) * (not p.rms)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + p.epsilon) * p.gamma.astype(np.float64) + p.beta.astype(np.float64)
    return y.astype(np.float32)


LAYER_NORM = OpDef(OpCode.LAYER_NORM, (3, 3), 1, False, LayerNormOptions, verify, prepare, reference, "layer_norm",
                   since="0.3.0", forms=(Form(FLOAT32, verify, prepare_float, reference_float, None, "0.3.0"),
                                         Form(INT16, verify, prepare, reference, "layer_norm_int16", "0.3.0")),
                   batch=lambda model, op: len(model.tensors[op.inputs[0]].shape) > 1)
