"""RESHAPE (SPEC.md section 2.13.10): the same elements in the output's shape; quantization kept.
Compiled kernel: qrt/kernels/movement.pyx reshape (a copy, or nothing when the arena aliases).
Its float32 and int16 forms are the same copy: RESHAPE has moved tensors of any dtype since 0.1.0."""
from __future__ import annotations

from ..format.model import OpCode
from .base import FLOAT32, INT16, Check, Form, OpDef, no_params


def verify(c: Check):
    x, y = c.input(0), c.output()
    if x.numel != y.numel:
        c.fail(f"cannot reshape {x.shape} ({x.numel} elements) to {y.shape} ({y.numel} elements)")
    c.dtype(y, x.dtype)
    c.same_quant(x, y)


def reference(ins, p):
    return ins[0]


RESHAPE = OpDef(OpCode.RESHAPE, (1, 1), 1, False, None, verify, no_params, reference, "reshape",
                forms=(Form(FLOAT32, verify, no_params, reference, "reshape", "0.1.0"),
                       Form(INT16, verify, no_params, reference, "reshape", "0.1.0")),
                batch=lambda model, op: model.tensors[op.inputs[0]].shape[:1] == model.tensors[op.outputs[0]].shape[:1])
