"""PAD (SPEC.md section 2.13.9): pads begins then ends per dimension, filled with the zero point
(real 0); the output keeps the input's quantization. Compiled kernel: qrt/kernels/movement.pyx pad.
Its float32 form (float32 x and y) pads with 0.0 in NumPy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import OpCode, PadOptions
from .base import FLOAT32, INT16, Check, Form, OpDef, zero_point


@dataclass
class PadParams:
    pads: tuple  # begins then ends, per dimension
    zero_point: int  # the fill: real 0


def prepare(model, op) -> PadParams:
    x = model.tensors[op.inputs[0]]
    return PadParams(tuple(op.options.pads), zero_point(x) if x.quant is not None else 0)


def verify(c: Check):
    x, y = c.input(0), c.output()
    o = c.options
    rank = len(x.shape)
    if len(o.pads) != 2 * rank or min(o.pads, default=0) < 0:
        c.fail(f"pads {o.pads} must be {2 * rank} values >= 0 (begins, then ends)")
    c.activation(x)
    expect = tuple(d + o.pads[i] + o.pads[rank + i] for i, d in enumerate(x.shape))
    if y.shape != expect:
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {expect}")
    c.dtype(y, x.dtype)
    c.same_quant(x, y)


def reference(ins, p: PadParams) -> np.ndarray:
    x = ins[0]
    rank = x.ndim
    if rank == 0:
        return x.copy()
    return np.pad(x, [(p.pads[i], p.pads[rank + i]) for i in range(rank)], constant_values=p.zero_point)


def reference_float(ins, p: PadParams) -> np.ndarray:
    """p from prepare: its fill is 0 for a tensor without quantization."""
    x = ins[0]
    if x.ndim == 0:
        return x.copy()
    return np.pad(x, [(p.pads[i], p.pads[x.ndim + i]) for i in range(x.ndim)])


PAD = OpDef(OpCode.PAD, (1, 1), 1, False, PadOptions, verify, prepare, reference, "pad",
            forms=(Form(FLOAT32, verify, prepare, reference_float, None, "0.3.0"),
                   Form(INT16, verify, prepare, reference, "pad_int16", "0.3.0")),
            batch=lambda model, op: op.options.pads[0] == 0 == op.options.pads[len(op.options.pads) // 2])
