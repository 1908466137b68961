"""MUL (SPEC.md section 2.13.4; 2.14): y = a * b of int8 activations, broadcasting; the product of
the zero-point-free operands requantized with s_a * s_b / s_y. Compiled kernel:
qrt/kernels/elementwise.pyx mul. Its float32 form is ADD's (np.multiply; qrt/ops/add.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import OpCode
from .add import FLOAT_FORM, verify_binary
from .base import INT16, Form, OpDef, Requant, requant, requantize_to, scale, zero_point


@dataclass
class MulParams:
    a_zero_point: int
    b_zero_point: int
    out: Requant


def prepare(model, op) -> MulParams:
    a, b, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    return MulParams(zero_point(a), zero_point(b), requant(np.float64(scale(a)) * scale(b) / scale(y), y, op))


def reference(ins, p: MulParams) -> np.ndarray:
    a, b = ins
    acc = (a.astype(np.int64) - p.a_zero_point) * (b.astype(np.int64) - p.b_zero_point)
    return requantize_to(acc, p.out)


MUL = OpDef(OpCode.MUL, (2, 2), 1, True, None, verify_binary, prepare, reference, "mul",
            forms=(FLOAT_FORM, Form(INT16, verify_binary, prepare, reference, "mul_int16", "0.3.0")),
            batch=True)
