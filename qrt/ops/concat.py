"""CONCAT (SPEC.md section 2.13.5): int8 activations joined along `axis`, each input rescaled to
the output's scale and zero point (a plain copy where they already match). Compiled kernel:
qrt/kernels/movement.pyx concat. Its float32 form (float32 inputs and y) is np.concatenate."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import ConcatOptions, OpCode
from .base import ANY, FLOAT32, INT16, Check, Form, OpDef, rescale, rescale_reference


@dataclass
class ConcatParams:
    axis: int
    inputs: list  # RescaleParams per input


def prepare(model, op) -> ConcatParams:
    y = model.tensors[op.outputs[0]]
    return ConcatParams(op.options.axis % len(y.shape), [rescale(model.tensors[i], y) for i in op.inputs])


def verify(c: Check):
    y = c.output()
    c.activation(y)
    first = c.input(0)
    axis = c.axis(c.options.axis, len(first.shape))
    total = 0
    for k in range(len(c.op.inputs)):
        t = c.input(k)
        c.activation(t)
        if len(t.shape) != len(first.shape) or any(
                d != e for j, (d, e) in enumerate(zip(t.shape, first.shape)) if j != axis):
            c.fail(f"{c.label(t)} has shape {t.shape}; it must match {first.shape} except on axis {axis}")
        total += t.shape[axis]
    expect = first.shape[:axis] + (total,) + first.shape[axis + 1:]
    if y.shape != expect:
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {expect}")


def reference(ins, p: ConcatParams) -> np.ndarray:
    dtype = p.inputs[0].out.dtype
    return np.concatenate([rescale_reference(x, q) for x, q in zip(ins, p.inputs)], axis=p.axis).astype(dtype)


def prepare_float(model, op) -> int:
    """The axis, in [0, rank)."""
    return op.options.axis % len(model.tensors[op.outputs[0]].shape)


def reference_float(ins, axis: int) -> np.ndarray:
    return np.concatenate(ins, axis=axis)


CONCAT = OpDef(OpCode.CONCAT, (1, ANY), 1, False, ConcatOptions, verify, prepare, reference, "concat",
               forms=(Form(FLOAT32, verify, prepare_float, reference_float, None, "0.3.0"),
                      Form(INT16, verify, prepare, reference, "concat_int16", "0.3.0")),
               batch=lambda model, op: op.options.axis % len(model.tensors[op.outputs[0]].shape) != 0)
