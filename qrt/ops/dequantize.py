"""DEQUANTIZE (SPEC.md section 2.13.17): integers -> float32(s) * float32(x - zp), one float32
multiplication; also the graph boundary's conversion of results. Compiled kernel:
qrt/kernels/elementwise.pyx dequantize."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import DType, OpCode, Tensor
from .base import Check, OpDef, conversion, scale, zero_point
from .quantize import BOUNDARY_DTYPES


@dataclass
class DequantizeParams:
    scale: np.float32
    zero_point: int


def dequantize_params(x: Tensor) -> DequantizeParams:
    """x's integers -> float (DEQUANTIZE, and float results at the graph boundary)."""
    return DequantizeParams(np.float32(scale(x)), zero_point(x))


def prepare(model, op) -> DequantizeParams:
    return dequantize_params(model.tensors[op.inputs[0]])


def verify(c: Check):
    x, y = c.input(0), c.output()
    c.activation(x, x.dtype if x.dtype in BOUNDARY_DTYPES else DType.INT8)
    c.dtype(y, DType.FLOAT32)
    c.same_shape(x, y)


def reference(ins, p: DequantizeParams) -> np.ndarray:
    return p.scale * (ins[0].astype(np.int32) - p.zero_point).astype(np.float32)


DEQUANTIZE = OpDef(OpCode.DEQUANTIZE, (1, 1), 1, False, None, verify, prepare, reference, "dequantize",
                    select=conversion,
                   batch=True)
