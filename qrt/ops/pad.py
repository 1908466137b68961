"""PAD (SPEC.md section 2.13.9): pads begins then ends per dimension, filled with the zero point
(real 0) or, by mode, numpy.pad's reflect, edge, wrap; the output keeps the input's quantization.
Kernel: qrt/kernels/movement.pyx pad (modes: numpy_steps.py). Its float32 form fills with 0.0."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import OpCode, PadMode, PadOptions
from .base import FLOAT32, INT16, Check, Form, OpDef, zero_point


@dataclass
class PadParams:
    pads: tuple  # begins then ends, per dimension
    zero_point: int  # the fill: real 0
    mode: int = PadMode.CONSTANT


def prepare(model, op) -> PadParams:
    x = model.tensors[op.inputs[0]]
    return PadParams(tuple(op.options.pads), zero_point(x) if x.quant is not None else 0, PadMode(op.options.mode))


def verify(c: Check):
    x, y = c.input(0), c.output()
    o = c.options
    rank = len(x.shape)
    if len(o.pads) != 2 * rank or min(o.pads, default=0) < 0:
        c.fail(f"pads {o.pads} must be {2 * rank} values >= 0 (begins, then ends)")
    if o.mode not in PadMode._value2member_map_:
        c.fail(f"mode {o.mode} is not a PadMode (0-{max(PadMode)})")
    # longer pads than reflect, wrap copy from mean different things in NumPy and ONNX Runtime
    most = {PadMode.REFLECT: -1, PadMode.WRAP: 0}.get(o.mode)
    for i, d in enumerate(x.shape if most is not None else ()):
        if max(o.pads[i], o.pads[rank + i]) > d + most:
            c.fail(f"{PadMode(o.mode).name.lower()} pads {o.pads[i]}, {o.pads[rank + i]} of dimension {i} exceed "
                   f"its size {d}{' - 1' if most else ''}")
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
    widths = [(p.pads[i], p.pads[rank + i]) for i in range(rank)]
    if p.mode != PadMode.CONSTANT:
        return np.pad(x, widths, mode=PadMode(p.mode).name.lower())
    return np.pad(x, widths, constant_values=p.zero_point)


reference_float = reference  # (prepare's fill is 0 without quantization)


PAD = OpDef(OpCode.PAD, (1, 1), 1, False, PadOptions, verify, prepare, reference, "pad",
            forms=(Form(FLOAT32, verify, prepare, reference_float, None, "0.3.0"),
                   Form(INT16, verify, prepare, reference, "pad_int16", "0.3.0")),
            batch=lambda model, op: op.options.pads[0] == 0 == op.options.pads[len(op.options.pads) // 2])
