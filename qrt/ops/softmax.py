"""SOFTMAX (SPEC.md sections 2.13.15, 2.14: the integer algorithms): int8, an exp table read at
max - x, one division per element, output fixed to SOFTMAX_OUTPUT; int16, a 4097-entry table
interpolated, output SOFTMAX_OUTPUT_16. Compiled kernels: qrt/kernels/softmax.pyx softmax,
softmax_int16. Its float32 form computes in float64, rounded once to float32."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..format.model import DType, OpCode, SoftmaxOptions
from ..numerics import (
    INT32_MAX, SOFTMAX_EXP_BITS, SOFTMAX_EXP_BITS_16, SOFTMAX_OUTPUT, SOFTMAX_OUTPUT_16, SOFTMAX_STEP_BITS_16,
    SOFTMAX_TABLE_16,
)
from .base import FLOAT32, INT16, Check, Form, OpDef, scale


@dataclass
class SoftmaxParams:
    axis: int
    exp_table: np.ndarray  # int64 [256]: round(exp(-beta * s_x * d) * 2**SOFTMAX_EXP_BITS)
    #                        int16 form: [4097], round(exp(-beta * s_x * 16 * i) * 2**SOFTMAX_EXP_BITS_16)
    mask_zero_keeps: bool = False  # with a mask input (SPEC.md 2.13.15)


def kept(ins, axis: int, zero_keeps: bool):
    """With a mask input (ins[1]): (which elements take part, broadcast to x, and the rows where
    none does, which are uniform: every element takes part there); None without one."""
    if len(ins) < 2 or ins[1] is None:
        return None
    x, mask = ins[0], ins[1]
    m = np.broadcast_to(mask, x.shape)
    keep = (m == 0) if zero_keeps else (m != 0)
    none = ~keep.any(axis=axis, keepdims=True)
    return keep | none, none


def _differences(ins, p) -> tuple:
    """d = max - x over the elements that take part, and which do (all without a mask)."""
    x = ins[0].astype(np.int64)
    k = kept(ins, p.axis, p.mask_zero_keeps)
    if k is None:
        return x.max(axis=p.axis, keepdims=True) - x, None
    keep, none = k
    mx = np.where(keep, x, np.iinfo(np.int64).min).max(axis=p.axis, keepdims=True)
    return np.where(none, 0, np.where(keep, mx - x, 0)), keep


def prepare(model, op) -> SoftmaxParams:
    x = model.tensors[op.inputs[0]]
    d = np.arange(256, dtype=np.float64)
    table = np.rint(np.exp(-np.float64(np.float32(op.options.beta)) * scale(x) * d) * 2.0**SOFTMAX_EXP_BITS)
    return SoftmaxParams(op.options.axis % len(x.shape), table.astype(np.int64), bool(op.options.mask_zero_keeps))


def prepare_int16(model, op) -> SoftmaxParams:
    """The int16 form's table: E[i] = round-half-even(exp(-beta * s_x * 16 * i) * 2**30), i = 0 .. 4096
    (float64, beta as float32), the differences d = 16 i; E[0] = 2**30 and every entry in [0, 2**30]."""
    x = model.tensors[op.inputs[0]]
    d = np.arange(SOFTMAX_TABLE_16, dtype=np.float64) * (1 << SOFTMAX_STEP_BITS_16)
    table = np.rint(np.exp(-np.float64(np.float32(op.options.beta)) * scale(x) * d) * 2.0**SOFTMAX_EXP_BITS_16)
    return SoftmaxParams(op.options.axis % len(x.shape), table.astype(np.int64), bool(op.options.mask_zero_keeps))


def verify(c: Check):
    c.elementwise()
    o = c.options
    c.axis(o.axis, len(c.input(0).shape))
    if len(c.op.inputs) > 1:
        verify_mask(c)
    if not (math.isfinite(o.beta) and o.beta > 0):
        c.fail(f"beta = {o.beta}; must be finite and > 0")
    y = c.output()
    if c.form == INT16:
        # int16 form: S = sum of entries <= 2**30 stays < 2**62 (and (e << 15) + S/2 < 2**63)
        length = c.input(0).shape[o.axis % len(c.input(0).shape)]
        if length > INT32_MAX:
            c.fail(f"axis length {length} must be < 2^31 (the int16 form's 64-bit sum)")
        if (float(y.quant.scale[0]), int(y.quant.zero_point[0])) != SOFTMAX_OUTPUT_16:
            c.fail(f"output {c.label(y)} must have scale 1/32768 and zero point 0 (fixed by softmax's range, "
                   f"int16 form)")
    elif not c.float_activations and (float(y.quant.scale[0]), int(y.quant.zero_point[0])) != SOFTMAX_OUTPUT:
        c.fail(f"output {c.label(y)} must have scale 1/256 and zero point -128 (fixed by softmax's range)")


def verify_mask(c: Check):
    x, m = c.input(0), c.input(1)
    c.dtype(m, DType.INT32, DType.INT64)
    if m.quant is not None:
        c.fail(f"mask {c.label(m)} must not be quantized")
    if c.options.axis % len(x.shape) != len(x.shape) - 1:
        c.fail("a masked softmax runs along the last dimension")
    if len(m.shape) != len(x.shape) or any(a not in (b, 1) for a, b in zip(m.shape, x.shape)):
        c.fail(f"mask {c.label(m)} has shape {m.shape}; it must have x's rank, each dimension {x.shape}'s or 1")


def reference(ins, p: SoftmaxParams) -> np.ndarray:
    d, keep = _differences(ins, p)
    e = p.exp_table[d] * (1 if keep is None else keep)
    total = e.sum(axis=p.axis, keepdims=True)
    return np.clip(((e << 8) + (total >> 1)) // total - 128, -128, 127).astype(np.int8)


def reference_int16(ins, p: SoftmaxParams) -> np.ndarray:
    """d = max - x (0 .. 65535), j = d >> 4, r = d & 15: e = E[j] + (((E[j+1] - E[j]) * r + 8) >> 4)
    (int64, flooring shift; between E[j+1] and E[j]); y = clamp(((e << 15) + S/2) // S, 0, 32767)."""
    d, keep = _differences(ins, p)
    j, r = d >> SOFTMAX_STEP_BITS_16, d & ((1 << SOFTMAX_STEP_BITS_16) - 1)
    t = p.exp_table
    e = t[j] + (((t[j + 1] - t[j]) * r + (1 << (SOFTMAX_STEP_BITS_16 - 1))) >> SOFTMAX_STEP_BITS_16)
    e = e * (1 if keep is None else keep)
    total = e.sum(axis=p.axis, keepdims=True)
    return np.clip(((e << 15) + (total >> 1)) // total, 0, 32767).astype(np.int16)


@dataclass
class FloatSoftmaxParams:
    axis: int
    beta: float  # the float32 option, exactly, as a float64
    mask_zero_keeps: bool = False


def prepare_float(model, op) -> FloatSoftmaxParams:
    rank = len(model.tensors[op.inputs[0]].shape)
    return FloatSoftmaxParams(op.options.axis % rank, float(np.float32(op.options.beta)),
                              bool(op.options.mask_zero_keeps))


def reference_float(ins, p: FloatSoftmaxParams) -> np.ndarray:
    """exp(beta * (x - max)) / sum along axis, in float64 (over the elements a mask keeps)."""
    e = ins[0].astype(np.float64)
    k = kept(ins, p.axis, p.mask_zero_keeps)
    if k is None:
        e -= e.max(axis=p.axis, keepdims=True)
    else:
        keep, none = k
        e = np.where(none, 0.0, e)
        e -= np.where(keep, e, -np.inf).max(axis=p.axis, keepdims=True)
        e[~keep] = -np.inf
    e *= p.beta
    np.exp(e, out=e)
    e /= e.sum(axis=p.axis, keepdims=True)
    return e.astype(np.float32)


SOFTMAX = OpDef(OpCode.SOFTMAX, (1, 2), 1, False, SoftmaxOptions, verify, prepare, reference, "softmax",
                forms=(Form(FLOAT32, verify, prepare_float, reference_float, None, "0.3.0"),
                       Form(INT16, verify, prepare_int16, reference_int16, "softmax_int16", "0.3.0")),
                batch=lambda model, op: op.options.axis % len(model.tensors[op.inputs[0]].shape) != 0)
