"""SLICE (SPEC.md section 2.13.23): y[i] = x[begin + i * step] along every dimension, y's shape
giving the extent (a step of 0 repeats one index: ONNX Expand); quantization kept, any dtype (as
TRANSPOSE). Compiled kernel:
qrt/kernels/movement.pyx slice, TRANSPOSE's strided copy from another origin. Its float32 and
int16 forms are the same copy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import OpCode, SliceOptions
from .base import FLOAT32, INT16, Check, Form, OpDef


@dataclass
class SliceParams:
    begin: tuple
    step: tuple
    shape: tuple  # y's


def prepare(model, op) -> SliceParams:
    return SliceParams(tuple(op.options.begin), tuple(op.options.step), tuple(model.tensors[op.outputs[0]].shape))


def check_window(x_shape: tuple, y_shape: tuple, begin, step):
    """A message saying why y cannot be this window of x, or None."""
    rank = len(x_shape)
    if len(y_shape) != rank or len(begin) != rank or len(step) != rank:
        return f"x {x_shape}, y {y_shape}, begin {tuple(begin)} and step {tuple(step)} must have the same length"
    for d, (n, m, b, s) in enumerate(zip(x_shape, y_shape, begin, step)):
        if m and not (0 <= b < n and 0 <= b + (m - 1) * s < n):
            return f"dimension {d}: indices {b}, {b + s}, ..., {b + (m - 1) * s} leave [0, {n})"
    return None


def verify(c: Check):
    x, y = c.input(0), c.output()
    o = c.options
    why = check_window(x.shape, y.shape, o.begin, o.step)
    if why:
        c.fail(why)
    c.dtype(y, x.dtype)
    c.same_quant(x, y)


def reference(ins, p: SliceParams):
    return ins[0][np.ix_(*[b + s * np.arange(m) for b, s, m in zip(p.begin, p.step, p.shape)])]


SLICE = OpDef(OpCode.SLICE, (1, 1), 1, False, SliceOptions, verify, prepare, reference, "slice", since="0.3.0",
              forms=(Form(FLOAT32, verify, prepare, reference, "slice", "0.3.0"),
                     Form(INT16, verify, prepare, reference, "slice", "0.3.0")),
              batch=lambda model, op: tuple(op.options.begin[:1]) == (0,) and tuple(op.options.step[:1]) == (1,)
              and model.tensors[op.inputs[0]].shape[:1] == model.tensors[op.outputs[0]].shape[:1])
