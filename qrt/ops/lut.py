"""LUT (SPEC.md section 2.13.14): y = table[x + 128], the table a 256-entry int8 constant made at
conversion (sigmoid, tanh, GELU, ...; LutOptions.function names it). Compiled kernel:
qrt/kernels/elementwise.pyx lut. Its int16 form (SPEC.md 4.6) interpolates a 513-entry int16
table linearly between its entries, 128 input steps apart; compiled kernel lut_int16."""
from __future__ import annotations

import numpy as np

from ..format.model import DType, LutOptions, OpCode
from .base import INT16, Check, Form, OpDef, no_params

INT16_TABLE = 513  # entries of the int16 form's table: the inputs -32768 + 128 i, i = 0 .. 512
INT16_STEP_BITS = 7  # 128 inputs between entries


def verify(c: Check):
    c.elementwise()
    table = c.input(1)
    c.constant(table)
    dtype, size = (DType.INT16, INT16_TABLE) if c.form == INT16 else (DType.INT8, 256)
    c.dtype(table, dtype)
    if table.shape != (size,):
        c.fail(f"table {c.label(table)} has shape {table.shape}; expected ({size},)")


def reference(ins, p) -> np.ndarray:
    x, table = ins
    return table[x.astype(np.int64) + 128]


def interpolate(table: np.ndarray, x, step_bits: int) -> np.ndarray:
    """table read at int16 inputs x, linearly between entries 2^step_bits inputs apart: u = x +
    32768, j = u >> b, r = u & (2^b - 1): y = t[j] + ((t[j+1] - t[j]) r + 2^(b-1)) >> b, exact
    in int32 (floor shift) and always between t[j] and t[j+1]. LUT's int16 form (b = 7) and the
    recurrent ops' gates (b = 4, qrt/ops/recurrent.py)."""
    u = np.asarray(x).astype(np.int32) + 32768
    j, r = u >> step_bits, u & ((1 << step_bits) - 1)
    t = table.astype(np.int32)
    return t[j] + (((t[j + 1] - t[j]) * r + (1 << (step_bits - 1))) >> step_bits)


def reference_int16(ins, p) -> np.ndarray:
    x, table = ins
    return interpolate(table, x, INT16_STEP_BITS).astype(np.int16)


LUT = OpDef(OpCode.LUT, (2, 2), 1, False, LutOptions, verify, no_params, reference, "lut",
            forms=(Form(INT16, verify, no_params, reference_int16, "lut_int16", "0.3.0"),),
            batch=True)
