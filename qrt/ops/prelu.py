"""PRELU (SPEC.md section 2.13.13): LEAKY_RELU (qrt/ops/leaky_relu.py) with alpha an int8 constant
that broadcasts to x. Compiled kernel: qrt/kernels/elementwise.pyx slope. Its float32 form takes a
FLOAT32 alpha constant (no quantization) and is LEAKY_RELU's in NumPy."""
from __future__ import annotations

import numpy as np

from ..format.model import OpCode
from .base import FLOAT32, Check, Form, OpDef, no_params, scale, zero_point
from .leaky_relu import SlopeParams, reference, slope_float, slopes


def prepare(model, op) -> SlopeParams:
    x, alpha, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    real = np.float64(scale(alpha)) * (alpha.data.astype(np.float64) - zero_point(alpha))
    return slopes(x, y, real)


def verify(c: Check):
    c.elementwise()
    x, alpha = c.input(0), c.input(1)
    c.constant(alpha)
    c.activation(alpha)  # the float32 form: a FLOAT32 constant without quantization
    try:
        if np.broadcast_shapes(x.shape, alpha.shape) != x.shape:
            raise ValueError
    except ValueError:
        c.fail(f"alpha {c.label(alpha)} of shape {alpha.shape} does not broadcast to the input {x.shape}")


def reference_float(ins, p) -> np.ndarray:
    x, alpha = ins
    return slope_float(x, alpha)


PRELU = OpDef(OpCode.PRELU, (2, 2), 1, False, None, verify, prepare, reference, "slope",
              forms=(Form(FLOAT32, verify, no_params, reference_float, None, "0.3.0"),),
              batch=True)
