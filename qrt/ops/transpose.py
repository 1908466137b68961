"""TRANSPOSE (SPEC.md section 2.13.11): y = x.transpose(perm); quantization kept. Compiled kernel:
qrt/kernels/movement.pyx transpose. Its float32 and int16 forms are the same: TRANSPOSE has moved
tensors of any dtype since 0.1.0."""
from __future__ import annotations

from dataclasses import dataclass

from ..format.model import OpCode, TransposeOptions
from .base import FLOAT32, INT16, Check, Form, OpDef


@dataclass
class TransposeParams:
    perm: tuple


def prepare(model, op) -> TransposeParams:
    return TransposeParams(tuple(op.options.perm))


def verify(c: Check):
    x, y = c.input(0), c.output()
    perm = c.options.perm
    if sorted(perm) != list(range(len(x.shape))):
        c.fail(f"perm {perm} is not a permutation of the {len(x.shape)} dimensions")
    expect = tuple(x.shape[p] for p in perm)
    if y.shape != expect:
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {expect}")
    c.dtype(y, x.dtype)
    c.same_quant(x, y)


def reference(ins, p: TransposeParams):
    return ins[0].transpose(p.perm)


TRANSPOSE = OpDef(OpCode.TRANSPOSE, (1, 1), 1, False, TransposeOptions, verify, prepare, reference, "transpose",
                  forms=(Form(FLOAT32, verify, prepare, reference, "transpose", "0.1.0"),
                         Form(INT16, verify, prepare, reference, "transpose", "0.1.0")),
                  batch=lambda model, op: tuple(op.options.perm)[:1] == (0,))
