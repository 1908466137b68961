"""GATHER (SPEC.md section 2.13.24): y = numpy.take(data, indices, axis), indices INT32 / INT64 in
[-n, n) (a negative one counts from the end); y keeps data's dtype and quantization (embedding
tables, token ids). Compiled kernel: qrt/kernels/movement.pyx gather (an index outside the table
fails the run before anything is written). Its float32 and int16 forms are the same copy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..format.model import DType, GatherOptions, OpCode
from .base import FLOAT32, INT16, Check, Form, OpDef


@dataclass
class GatherParams:
    axis: int


def prepare(model, op) -> GatherParams:
    return GatherParams(op.options.axis % len(model.tensors[op.inputs[0]].shape))


def verify(c: Check):
    data, idx, y = c.input(0), c.input(1), c.output()
    c.dtype(idx, DType.INT32, DType.INT64)
    if idx.quant is not None:
        c.fail(f"indices {c.label(idx)} must not be quantized")
    axis = c.axis(c.options.axis, len(data.shape))
    expect = tuple(data.shape[:axis]) + tuple(idx.shape) + tuple(data.shape[axis + 1:])
    if y.shape != expect:
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {expect}")
    c.dtype(y, data.dtype)
    c.same_quant(data, y)
    n = data.shape[axis]
    if idx.data is not None and idx.data.size and (idx.data.min() < -n or idx.data.max() >= n):
        c.fail(f"indices {c.label(idx)} leave [-{n}, {n})")


def check_indices(indices: np.ndarray, n: int):
    """InputError naming the first index outside [-n, n)."""
    bad = (indices < -n) | (indices >= n)
    if bad.any():
        i = tuple(int(k) for k in np.argwhere(bad)[0])
        raise InputError(f"GATHER: index {int(indices[i])} at {i} is outside [-{n}, {n}) (the table has "
                         f"{n} entries); check the ids fed to the model")


def reference(ins, p: GatherParams):
    data, indices = ins
    check_indices(indices, data.shape[p.axis])
    return np.take(data, indices.astype(np.int64), axis=p.axis)


def _batch(model, op) -> bool:
    """Dimension 0 stays the batch: the table's rows picked by batched ids, or batched data read
    at constant indices along another axis."""
    data, idx = (model.tensors[t] for t in op.inputs)
    axis = op.options.axis % len(data.shape)
    if data.data is not None:
        return axis == 0 and idx.data is None and len(idx.shape) > 0
    return axis != 0 and idx.data is not None


GATHER = OpDef(OpCode.GATHER, (2, 2), 1, False, GatherOptions, verify, prepare, reference, "gather", since="0.3.0",
               forms=(Form(FLOAT32, verify, prepare, reference, "gather", "0.3.0"),
                      Form(INT16, verify, prepare, reference, "gather", "0.3.0")), batch=_batch)
