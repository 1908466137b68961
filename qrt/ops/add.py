"""ADD (SPEC.md section 2.13.4; 2.14): y = a + b of int8 activations, broadcasting. Each operand
is rescaled to a common scale with ADD_LEFT_SHIFT bits of headroom, the two summed, the sum
requantized. SUB (qrt/ops/sub.py) is the same with b negated. Compiled kernel:
qrt/kernels/elementwise.pyx add. Its float32 form (float32 a, b and y) is one NumPy ufunc, as are
those of SUB, MUL, MAXIMUM and MINIMUM (BinaryFloatParams)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..format.model import DType, OpCode
from ..numerics import ADD_LEFT_SHIFT, ADD_LEFT_SHIFT_16, quantize_multiplier, rounding_shift
from .base import (
    FLOAT32, INT16, Check, Form, OpDef, Requant, float_bounds, float_clamp, requant, requantize_to, scale, zero_point,
)


@dataclass
class AddParams:
    a_zero_point: int
    b_zero_point: int
    a_multiplier: int
    a_shift: int
    b_multiplier: int
    b_shift: int
    subtract: bool
    out: Requant
    left_shift: int = ADD_LEFT_SHIFT  # headroom bits: ADD_LEFT_SHIFT_16 for int16 operands


def prepare(model, op) -> AddParams:
    a, b, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    sa, sb, sy = scale(a), scale(b), scale(y)
    common = 2 * max(sa, sb)
    ma, na = quantize_multiplier(sa / common)
    mb, nb = quantize_multiplier(sb / common)
    shift = ADD_LEFT_SHIFT_16 if y.dtype == DType.INT16 else ADD_LEFT_SHIFT
    return AddParams(zero_point(a), zero_point(b), ma, na, mb, nb, op.opcode == OpCode.SUB,
                     requant(common / (2**shift * sy), y, op), shift)


def verify_binary(c: Check):
    """Two activations of the form that broadcast to the output's shape (ADD, SUB, MUL,
    MAXIMUM, MINIMUM); a constant operand of the float32 form is a FLOAT32 constant."""
    a, b, y = c.input(0), c.input(1), c.output()
    for t in (a, b, y):
        c.activation(t)
    try:
        expect = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        c.fail(f"shapes {a.shape} and {b.shape} do not broadcast")
    if y.shape != expect:
        c.fail(f"output {c.label(y)} has shape {y.shape}; broadcasting gives {expect}")


def reference(ins, p: AddParams) -> np.ndarray:
    """Both operands to a common scale with ADD_LEFT_SHIFT bits of headroom, then one sum."""
    a, b = ins
    sa = rounding_shift((a.astype(np.int64) - p.a_zero_point) << p.left_shift, p.a_multiplier, p.a_shift)
    sb = rounding_shift((b.astype(np.int64) - p.b_zero_point) << p.left_shift, p.b_multiplier, p.b_shift)
    return requantize_to(sa - sb if p.subtract else sa + sb, p.out)


# ---------------------------------------------------------------------------- float32 form

FLOAT_FUNCTIONS = {OpCode.ADD: np.add, OpCode.SUB: np.subtract, OpCode.MUL: np.multiply,
                   OpCode.MAXIMUM: np.maximum, OpCode.MINIMUM: np.minimum}


@dataclass
class BinaryFloatParams:
    """The float32 form of ADD, SUB, MUL, MAXIMUM and MINIMUM."""
    function: Callable  # a NumPy ufunc of FLOAT_FUNCTIONS
    bounds: tuple  # the fused activation's real range


def prepare_float(model, op) -> BinaryFloatParams:
    return BinaryFloatParams(FLOAT_FUNCTIONS[op.opcode], float_bounds(op))


def reference_float(ins, p: BinaryFloatParams) -> np.ndarray:
    a, b = ins
    return float_clamp(np.asarray(p.function(a, b, dtype=np.float32)), p.bounds)


FLOAT_FORM = Form(FLOAT32, verify_binary, prepare_float, reference_float, None, "0.3.0")
# int16 operands and output (SPEC.md 4.6): ADD_LEFT_SHIFT_16 bits of headroom, one kernel for ADD and SUB
INT16_FORM = Form(INT16, verify_binary, prepare, reference, "add_int16", "0.3.0")

ADD = OpDef(OpCode.ADD, (2, 2), 1, True, None, verify_binary, prepare, reference, "add",
            forms=(FLOAT_FORM, INT16_FORM),
            batch=True)
