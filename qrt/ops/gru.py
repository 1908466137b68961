"""GRU (SPEC.md section 2.13.26): one direction of a GRU layer, integer only (the math and what
it shares with LSTM: qrt/ops/recurrent.py). Compiled kernel: qrt/kernels/recurrent.py gru."""
from __future__ import annotations

import numpy as np

from ..format.model import OpCode, RecurrentOptions
from ..numerics import rounding_shift
from .base import INT16, Check, Form, OpDef
from .lut import interpolate
from .recurrent import TABLE_STEP_BITS, UNIT_BITS, RecurrentParams, half, input_half, prepare, product, steps, verify


def verify_gru(c: Check):
    verify(c, 3)


def reference_gru(ins, p: RecurrentParams):
    x, w, r, bias, rbias, h0, tf, tg = ins
    hidden = r.shape[1]
    px = input_half(x, w, bias, p)  # [T, B, 3H]
    rw, rb = r.astype(np.int64).T, rbias.astype(np.int64)
    h = h0.astype(np.int64)
    y = np.empty(x.shape[:2] + (hidden,), h0.dtype)
    zr, nn = slice(0, 2 * hidden), slice(2 * hidden, 3 * hidden)
    for t in steps(p, x.shape[0]):
        ph = half((h - p.zp_h) @ rw[:, zr] + rb[zr], p.mh[zr], p.nh[zr])
        gates = interpolate(tf, np.clip(px[t][:, zr] + ph, p.lo, p.hi), TABLE_STEP_BITS)
        z, rg = gates[:, :hidden], gates[:, hidden:]
        if p.linear_before_reset:
            pn = product(rg, half((h - p.zp_h) @ rw[:, nn] + rb[nn], p.mh[nn], p.nh[nn]))
        else:
            reset = product(rg, h - p.zp_h)  # r * h, in h's units (zero point removed)
            pn = half(reset @ rw[:, nn] + rb[nn], p.mh[nn], p.nh[nn])
        n = interpolate(tg, np.clip(px[t][:, nn] + pn, p.lo, p.hi), TABLE_STEP_BITS)
        h = np.clip(p.zp_h + rounding_shift(((1 << UNIT_BITS) - z) * n, p.mo, p.no) + product(z, h - p.zp_h),
                    p.lo_h, p.hi_h)
        y[t] = h
    return y, h.astype(h0.dtype)


GRU = OpDef(OpCode.GRU, (8, 8), 2, False, RecurrentOptions, verify_gru, prepare, reference_gru, "gru",
            since="0.3.0", forms=(Form(INT16, verify_gru, prepare, reference_gru, "gru_int16", "0.3.0"),))
