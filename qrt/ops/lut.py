"""LUT (SPEC.md section 2.13.14): y = table[x + 128], the table a 256-entry int8 constant made at
conversion (sigmoid, tanh, GELU, ...; LutOptions.function names it). Compiled kernel:
qrt/kernels/elementwise.pyx lut."""
from __future__ import annotations

import numpy as np

from ..format.model import DType, LutOptions, OpCode
from .base import Check, OpDef, no_params


def verify(c: Check):
    c.elementwise()
    table = c.input(1)
    c.constant(table)
    c.dtype(table, DType.INT8)
    if table.shape != (256,):
        c.fail(f"table {c.label(table)} has shape {table.shape}; expected (256,)")


def reference(ins, p) -> np.ndarray:
    x, table = ins
    return table[x.astype(np.int64) + 128]


LUT = OpDef(OpCode.LUT, (2, 2), 1, False, LutOptions, verify, no_params, reference, "lut")
