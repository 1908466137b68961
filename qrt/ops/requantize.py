"""REQUANTIZE (SPEC.md section 2.13.18): int8/uint8 -> int8/uint8 with another scale and zero
point, one multiplier; may carry a fused activation. Compiled kernel: qrt/kernels/elementwise.pyx
requantize. Its int16 form (either side INT16, revision 3) joins int8 and int16 parts of a
model; compiled kernel requantize_int16."""
from __future__ import annotations

from ..format.model import DType, OpCode
from .base import INT8, INT16, Check, Form, OpDef, RescaleParams, rescale, rescale_reference


def prepare(model, op) -> RescaleParams:
    return rescale(model.tensors[op.inputs[0]], model.tensors[op.outputs[0]], op)


def verify(c: Check):
    x, y = c.input(0), c.output()
    allowed = (DType.UINT8, DType.INT16) if c.form == INT16 else (DType.UINT8,)
    c.activation(x, x.dtype if x.dtype in allowed else DType.INT8)
    c.activation(y, y.dtype if y.dtype in allowed else DType.INT8)
    c.same_shape(x, y)


def select(model, op) -> str:
    """INT16 when either side is int16, else INT8 (whatever the dtype it writes)."""
    dtypes = {model.tensors[op.inputs[0]].dtype, model.tensors[op.outputs[0]].dtype}
    return INT16 if DType.INT16 in dtypes else INT8


def reference(ins, p: RescaleParams):
    return rescale_reference(ins[0], p)


REQUANTIZE = OpDef(OpCode.REQUANTIZE, (1, 1), 1, True, None, verify, prepare, reference, "requantize",
                    select=select,
                    forms=(Form(INT16, verify, prepare, reference, "requantize_int16", "0.3.0"),),
                   batch=True)
