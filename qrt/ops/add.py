"""ADD (SPEC.md section 2.13.4; 2.14): y = a + b of int8 activations, broadcasting. Each operand
is rescaled to a common scale with ADD_LEFT_SHIFT bits of headroom, the two summed, the sum
requantized. SUB (qrt/ops/sub.py) is the same with b negated. Compiled kernel:
qrt/kernels/elementwise.pyx add."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import OpCode
from ..numerics import ADD_LEFT_SHIFT, quantize_multiplier, rounding_shift
from .base import Check, OpDef, Requant, requant, requantize_to, scale, zero_point


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


def prepare(model, op) -> AddParams:
    a, b, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    sa, sb, sy = scale(a), scale(b), scale(y)
    common = 2 * max(sa, sb)
    ma, na = quantize_multiplier(sa / common)
    mb, nb = quantize_multiplier(sb / common)
    return AddParams(zero_point(a), zero_point(b), ma, na, mb, nb, op.opcode == OpCode.SUB,
                     requant(common / (2**ADD_LEFT_SHIFT * sy), y, op))


def verify_binary(c: Check):
    """Two int8 activations that broadcast to the output's shape (ADD, SUB, MUL)."""
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
    sa = rounding_shift((a.astype(np.int64) - p.a_zero_point) << ADD_LEFT_SHIFT, p.a_multiplier, p.a_shift)
    sb = rounding_shift((b.astype(np.int64) - p.b_zero_point) << ADD_LEFT_SHIFT, p.b_multiplier, p.b_shift)
    return requantize_to(sa - sb if p.subtract else sa + sb, p.out)


ADD = OpDef(OpCode.ADD, (2, 2), 1, True, None, verify_binary, prepare, reference, "add")
