"""RESIZE (SPEC.md section 2.13.27): x [N, H, W, C] resampled over H, W by constant tables (indices,
weights of scale 2^-F), summed exactly, rounded once. Kernel: qrt/kernels/numpy_steps.py."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..format.model import DType, OpCode
from .base import FLOAT32, INT16, Check, Form, OpDef, zero_point


@dataclass
class ResizeParams:
    zero_point: int
    shift: int  # Fh + Fw
    sums: type  # np.int32, or np.int64 where int32 could overflow


def frac_bits(t):
    q = t.quant
    if q is None or q.scale.size != 1 or q.zero_point.size != 1 or q.zero_point[0]:
        return None
    m, e = math.frexp(float(q.scale[0]))
    return 1 - e if m == 0.5 and 1 <= 1 - e <= 16 else None


def _bound(x, wh, ww) -> int:
    m = {DType.INT8: 255, DType.INT16: 2**15}.get(x.dtype, 1)
    return m * math.prod(int(np.abs(w.data.astype(np.int64)).sum(axis=1).max()) for w in (wh, ww))


def prepare(model, op) -> ResizeParams:
    x, _, wh, _, ww = (model.tensors[t] for t in op.inputs)
    n = frac_bits(wh) + frac_bits(ww)
    return ResizeParams(zero_point(x) if x.quant else 0, n,
                        np.int64 if _bound(x, wh, ww) + 2 ** (n - 1) >= 2**31 else np.int32)


def verify(c: Check):
    x, y = c.input(0), c.output()
    c.activation(x)
    if len(x.shape) != 4:
        c.fail(f"input {c.label(x)} has shape {x.shape}; expected [N, H, W, C]")
    for k, axis in ((1, 1), (3, 2)):
        index, weight = c.input(k), c.input(k + 1)
        for t in (index, weight):
            c.constant(t)
            c.dtype(t, DType.INT32)
        if index.quant is not None:
            c.fail(f"indices {c.label(index)} must not be quantized")
        if len(index.shape) != 2 or weight.shape != index.shape:
            c.fail(f"tables {index.shape} {weight.shape} must both be [{'OH' if axis == 1 else 'OW'}, taps]")
        f = frac_bits(weight)
        if f is None:
            c.fail(f"weights {c.label(weight)} need one scale 2^-F (1 <= F <= 16) and zero point 0")
        if index.data.min() < 0 or index.data.max() >= x.shape[axis]:
            c.fail(f"indices {c.label(index)} leave [0, {x.shape[axis]})")
        bad = np.flatnonzero(weight.data.astype(np.int64).sum(axis=1) != 2**f)
        if bad.size:
            c.fail(f"weights {c.label(weight)}: row {bad[0]} does not sum to 2^{f}")
    expect = (x.shape[0], c.input(1).shape[0], c.input(3).shape[0], x.shape[3])
    if y.shape != expect:
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {expect}")
    if _bound(x, c.input(2), c.input(4)) > 2**62:
        c.fail("the weights' row sums of |w| can overflow the 64-bit sums")
    c.dtype(y, x.dtype)
    c.same_quant(x, y)


def _resample(v, ih, wh, iw, ww, dtype):
    # one axis, then the other (cheaper first): the same exact sum
    def along(v, idx, wt, axis):
        shape = (1, -1, 1, 1) if axis == 1 else (1, 1, -1, 1)
        return sum(np.take(v, idx[:, k], axis=axis) * wt[:, k].astype(dtype).reshape(shape) for k in range(idx.shape[1]))
    (oh, kh), (ow, kw) = ih.shape, iw.shape
    if v.shape[1] * ow * kw + oh * ow * kh <= oh * v.shape[2] * kh + oh * ow * kw:
        return along(along(v, iw, ww, 2), ih, wh, 1)
    return along(along(v, ih, wh, 1), iw, ww, 2)


def reference(ins, p: ResizeParams) -> np.ndarray:
    """Every form: float32 x sums in float64."""
    x, ih, wh, iw, ww = ins
    if ih.shape[1] == iw.shape[1] == 1:  # one tap: the sum 2^n (x - zp) gives x back
        return x[:, ih[:, 0]][:, :, iw[:, 0]]
    if x.dtype == np.float32:
        return (_resample(x.astype(np.float64), ih, wh, iw, ww, np.float64) * 2.0 ** -p.shift).astype(x.dtype)
    acc = _resample(x.astype(p.sums) - p.sums(p.zero_point), ih, wh, iw, ww, p.sums)
    r = np.iinfo(x.dtype)
    return np.clip(p.zero_point + ((acc + (1 << (p.shift - 1))) >> p.shift), r.min, r.max).astype(x.dtype)


RESIZE = OpDef(OpCode.RESIZE, (5, 5), 1, False, None, verify, prepare, reference, "resize", since="0.3.0",
               forms=(Form(FLOAT32, verify, prepare, reference, None, "0.3.0"),
                      Form(INT16, verify, prepare, reference, "resize", "0.3.0")), batch=True)
