"""LSTM (SPEC.md section 2.13.26): one direction of an LSTM layer, integer only (the math and
what it shares with GRU: qrt/ops/recurrent.py). Compiled kernel: qrt/kernels/recurrent.py lstm."""
from __future__ import annotations

import numpy as np

from ..format.model import OpCode, RecurrentOptions
from ..numerics import rounding_shift
from .base import INT16, Check, Form, OpDef
from .lut import interpolate
from .recurrent import TABLE_STEP_BITS, RecurrentParams, half, input_half, prepare, product, steps, verify


def verify_lstm(c: Check):
    verify(c, 4)


def reference_lstm(ins, p: RecurrentParams):
    x, w, r, bias, rbias, h0, c0, tf, tg, th = ins
    hidden = r.shape[1]
    px = input_half(x, w, bias, p)  # [T, B, 4H]
    rw, rb = r.astype(np.int64).T, rbias.astype(np.int64)
    h, c = h0.astype(np.int64), c0.astype(np.int64)
    y = np.empty(x.shape[:2] + (hidden,), h0.dtype)
    for t in steps(p, x.shape[0]):
        pre = np.clip(px[t] + half((h - p.zp_h) @ rw + rb, p.mh, p.nh), p.lo, p.hi)
        i, o, f = (interpolate(tf, pre[:, k * hidden:(k + 1) * hidden], TABLE_STEP_BITS) for k in range(3))
        g = interpolate(tg, pre[:, 3 * hidden:], TABLE_STEP_BITS)
        c = np.clip(product(f, c) + rounding_shift(i * g, p.mc, p.nc), -32768, 32767)
        h = np.clip(p.zp_h + rounding_shift(o * interpolate(th, c, TABLE_STEP_BITS), p.mo, p.no), p.lo_h, p.hi_h)
        y[t] = h
    return y, h.astype(h0.dtype), c.astype(np.int16)


LSTM = OpDef(OpCode.LSTM, (10, 10), 3, False, RecurrentOptions, verify_lstm, prepare, reference_lstm, "lstm",
             since="0.3.0", forms=(Form(INT16, verify_lstm, prepare, reference_lstm, "lstm_int16", "0.3.0"),))
