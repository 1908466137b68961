"""QUANTIZE (SPEC.md section 2.13.16): float32 -> the output's integers, round-half-even of the
float64 quotient, NaN to the zero point, clamped; also the graph boundary's conversion of float
feeds. Compiled kernel: qrt/kernels/elementwise.pyx quantize."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import QUANT_RANGE, DType, OpCode, Tensor
from .base import Check, OpDef, conversion, scale, zero_point

BOUNDARY_DTYPES = (DType.INT8, DType.UINT8, DType.INT16)  # integer sides of QUANTIZE / DEQUANTIZE


@dataclass
class QuantizeParams:
    scale: float  # float32 value, used in float64
    zero_point: int
    lo: int
    hi: int


def quantize_params(y: Tensor) -> QuantizeParams:
    """float -> y's integers (QUANTIZE, and float feeds at the graph boundary)."""
    return QuantizeParams(scale(y), zero_point(y), *QUANT_RANGE[y.dtype])


def prepare(model, op) -> QuantizeParams:
    return quantize_params(model.tensors[op.outputs[0]])


def verify(c: Check):
    x, y = c.input(0), c.output()
    c.dtype(x, DType.FLOAT32)
    c.activation(y, y.dtype if y.dtype in BOUNDARY_DTYPES else DType.INT8)
    c.same_shape(x, y)


def reference(ins, p: QuantizeParams) -> np.ndarray:
    """round-half-even(float64(x) / float64(s)) + zp, clamped to [lo, hi] (the output dtype's
    range), as int64; NaN maps to the zero point."""
    q = np.rint(ins[0].astype(np.float64) / p.scale)
    q = np.clip(np.nan_to_num(q, nan=0.0), p.lo - p.zero_point, p.hi - p.zero_point)
    return q.astype(np.int64) + p.zero_point


QUANTIZE = OpDef(OpCode.QUANTIZE, (1, 1), 1, False, None, verify, prepare, reference, "quantize",
                  select=conversion,
                 batch=True)
