"""REQUANTIZE (SPEC.md section 2.13.18): int8/uint8 -> int8/uint8 with another scale and zero
point, one multiplier; may carry a fused activation. Compiled kernel: qrt/kernels/elementwise.pyx
requantize."""
from __future__ import annotations

from ..format.model import DType, OpCode
from .base import Check, OpDef, RescaleParams, rescale, rescale_reference


def prepare(model, op) -> RescaleParams:
    return rescale(model.tensors[op.inputs[0]], model.tensors[op.outputs[0]], op)


def verify(c: Check):
    x, y = c.input(0), c.output()
    c.activation(x, x.dtype if x.dtype == DType.UINT8 else DType.INT8)
    c.activation(y, y.dtype if y.dtype == DType.UINT8 else DType.INT8)
    c.same_shape(x, y)


def reference(ins, p: RescaleParams):
    return rescale_reference(ins[0], p)


REQUANTIZE = OpDef(OpCode.REQUANTIZE, (1, 1), 1, True, None, verify, prepare, reference, "requantize")
