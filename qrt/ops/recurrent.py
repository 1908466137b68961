"""What LSTM and GRU (qrt/ops/lstm.py, gru.py) share: their parameters, verification, tables
and the parts of their references. The integer math, to the bit: SPEC.md section 2.13.26 (int16
pre-activations in units of 2^-12, gate values in 2^-15, an int16 cell state, 4097-entry
interpolated tables). Compiled kernels: qrt/kernels/recurrent.py."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import DType, OpCode
from ..numerics import quantize_multipliers, rounding_shift
from .base import Check, QUANT_RANGE, scale, zero_point

TABLE_STEP_BITS = 4  # 16 inputs between table entries
TABLE_SIZE = (1 << (16 - TABLE_STEP_BITS)) + 1  # 4097: the inputs -32768 + 16 i
GATE_BITS = 12  # pre-activations: int16 in units of 2^-12 (the range [-8, 8))
UNIT_BITS = 15  # gate values: int16 in units of 2^-15
WIDE = 1 << 20  # the two halves of a pre-activation are clamped to [-W, W] before they meet
HALF = 1 << (UNIT_BITS - 1)


def gate_bounds(clip: float) -> tuple[int, int]:
    """[lo, hi] of a pre-activation before its table: int16, or +-clip in units of 2^-12."""
    if clip > 0:
        limit = int(min(32767, np.floor(np.float64(clip) * 2.0**GATE_BITS)))
        return -limit, limit
    return -32768, 32767


def make_table(fn, step: float) -> np.ndarray:
    """The table of activation fn over int16 inputs of scale `step` (2^-12 for pre-activations,
    s_c for the cell state): round(fn(v) 2^15) at v = (-32768 + 16 i) step, in int16."""
    v = (-32768.0 + (1 << TABLE_STEP_BITS) * np.arange(TABLE_SIZE)) * np.float64(step)
    return np.clip(np.rint(fn(v) * 2.0**UNIT_BITS), -32768, 32767).astype(np.int16)


@dataclass
class RecurrentParams:
    zp_x: int
    zp_h: int
    mx: np.ndarray  # int64 [G H]: multipliers and shifts of the input half
    nx: np.ndarray
    mh: np.ndarray  # of the recurrent half
    nh: np.ndarray
    lo: int  # pre-activation bounds (the clip)
    hi: int
    mo: int  # 2^-30 / s_h: a product of two gate values into h
    no: int
    lo_h: int  # h's dtype range
    hi_h: int
    mc: int = 0  # LSTM: 2^-30 / s_c, i g into the cell state
    nc: int = 1
    reverse: bool = False
    linear_before_reset: bool = False


def _pair(real: float) -> tuple[int, int]:
    m, n = quantize_multipliers(real)
    return int(m[0]), int(n[0])


def prepare(model, op) -> RecurrentParams:
    x, w, r, h0 = (model.tensors[op.inputs[i]] for i in (0, 1, 2, 5))
    y = model.tensors[op.outputs[0]]
    sx, sh = np.float64(scale(x)), np.float64(scale(h0))
    rows = w.shape[0]
    mx, nx = quantize_multipliers(sx * np.broadcast_to(w.quant.scale.astype(np.float64), (rows,)) * 2.0**GATE_BITS)
    mh, nh = quantize_multipliers(sh * np.broadcast_to(r.quant.scale.astype(np.float64), (rows,)) * 2.0**GATE_BITS)
    o = op.options
    lo, hi = gate_bounds(o.clip)
    mo, no = _pair(2.0**-30 / sh)
    p = RecurrentParams(zero_point(x), zero_point(h0), mx, nx, mh, nh, lo, hi, mo, no, *QUANT_RANGE[y.dtype],
                        reverse=bool(o.reverse), linear_before_reset=bool(o.linear_before_reset))
    if op.opcode == OpCode.LSTM:
        p.mc, p.nc = _pair(2.0**-30 / np.float64(scale(model.tensors[op.inputs[6]])))
    return p


# ---------------------------------------------------------------------------- verification

def verify(c: Check, gates: int):
    lstm = gates == 4
    x, w, r, b, rb, h0 = (c.input(i) for i in range(6))
    y, h_t = c.output(0), c.output(1)
    for t in (x, h0, y, h_t):
        c.activation(t)
    c.rank(x, 3, "[T, B, I]")
    c.rank(w, 2, "[G H, I]")
    c.rank(r, 2, "[G H, H]")
    c.weights(w, 0)
    c.weights(r, 0)
    rows, hidden = r.shape
    if rows != gates * hidden or rows == 0:
        c.fail(f"recurrent weights {c.label(r)} have shape {r.shape}; expected [{gates} H, H] with H >= 1")
    steps, batch, width = x.shape
    if w.shape != (rows, width):
        c.fail(f"weights {c.label(w)} have shape {w.shape}; expected {(rows, width)} ([{gates} H, I])")
    c.bias(b, x, w, rows, width)
    c.bias(rb, h0, r, rows, hidden)
    if h0.shape != (batch, hidden):
        c.fail(f"initial state {c.label(h0)} has shape {h0.shape}; expected {(batch, hidden)} ([B, H])")
    if y.shape != (steps, batch, hidden):
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {(steps, batch, hidden)} ([T, B, H])")
    c.same_shape(h0, h_t)
    c.same_quant(h0, y)
    c.same_quant(h0, h_t)
    tables = (7, 8, 9) if lstm else (6, 7)
    if lstm:
        c0, c_t = c.input(6), c.output(2)
        tables = (7, 8, 9)
        for t in (c0, c_t):
            c.dtype(t, DType.INT16)
            if t.quant is None or t.quant.per_channel or int(t.quant.zero_point[0]) != 0:
                c.fail(f"cell state {c.label(t)} needs one scale and zero point 0 (int16, symmetric)")
        c.same_shape(h0, c0)
        c.same_shape(h0, c_t)
        c.same_quant(c0, c_t)
    for i in tables:
        t = c.input(i)
        c.constant(t)
        c.dtype(t, DType.INT16)
        if t.shape != (TABLE_SIZE,):
            c.fail(f"table {c.label(t)} has shape {t.shape}; expected ({TABLE_SIZE},)")
    o = c.options
    if not (np.isfinite(o.clip) and o.clip >= 0):
        c.fail(f"clip = {o.clip}; must be finite and >= 0 (0: no clip)")
    if lstm and o.linear_before_reset:
        c.fail("linear_before_reset is a GRU option; an LSTM must not set it")


# ---------------------------------------------------------------------------- the references' parts

def half(acc, m, n):
    """One half of a pre-activation: sums requantized to units of 2^-12, clamped to [-W, W]."""
    return np.clip(rounding_shift(acc, m, n), -WIDE, WIDE)


def product(a, b):
    """(a b + 2^14) >> 15: a gate value (2^-15) times an integer, in that integer's units."""
    return (a * b + HALF) >> UNIT_BITS


def steps(p: RecurrentParams, count: int):
    """The step order: forward, or from the last step with `reverse`."""
    return range(count - 1, -1, -1) if p.reverse else range(count)


def input_half(x, w, bias, p):
    """px for every step at once: [T, B, G H]."""
    return half((x.astype(np.int64) - p.zp_x) @ w.astype(np.int64).T + bias.astype(np.int64), p.mx, p.nx)
