"""MAXIMUM (SPEC.md section 2.13.19; 2.14): y = max(a, b) of int8 activations, broadcasting.
Each operand is first re-expressed in y's scale and zero point (one rounding, clamped to the
fused activation's range), then the larger taken: rescaling is monotonic, so this is the max of
the real values up to that one rounding. MINIMUM (qrt/ops/minimum.py) takes the smaller.
Compiled kernel: qrt/kernels/elementwise.pyx maximum. Its float32 form is ADD's (np.maximum;
qrt/ops/add.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import OpCode
from .add import FLOAT_FORM, verify_binary
from .base import OpDef, RescaleParams, rescale, rescale_reference


@dataclass
class ExtremumParams:
    a: RescaleParams  # a -> y's scale and zero point, with the clamp
    b: RescaleParams
    minimum: bool  # MINIMUM: the smaller one


def prepare(model, op) -> ExtremumParams:
    a, b, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    return ExtremumParams(rescale(a, y, op), rescale(b, y, op), op.opcode == OpCode.MINIMUM)


def reference(ins, p: ExtremumParams) -> np.ndarray:
    a, b = rescale_reference(ins[0], p.a), rescale_reference(ins[1], p.b)
    return (np.minimum(a, b) if p.minimum else np.maximum(a, b)).astype(np.int8)


MAXIMUM = OpDef(OpCode.MAXIMUM, (2, 2), 1, True, None, verify_binary, prepare, reference, "maximum",
                since="0.2.0", forms=(FLOAT_FORM,),
                batch=True)
