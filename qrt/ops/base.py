"""What every op module of qrt/ops/ is made of, and the pieces they share.

An op module defines one OpDef per op code (SPEC.md section 2.13):
  verify(c: Check)           the op's rules, run on every load before any kernel sees the model;
  prepare(model, op) -> p    all its floating-point work, once at load: multipliers, shifts,
                             clamp bounds, tables (section 4);
  reference(ins, p) -> y     its NumPy reference: the executable spec, integer-only;
  kernel                     the name of its compiled twin in qrt/kernels/ (bit-exact with reference).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InvalidModelError
from ..format.model import QUANT_RANGE, Activation, DType, ModelDefinition, OpCode, Operator, Tensor
from ..numerics import (
    INT32_MAX, MAX_INPUT_MAGNITUDE, MAX_WEIGHT_MAGNITUDE, accumulator_bound, quantize_multipliers, requantize,
)

ANY = 2**31  # no upper limit on the number of inputs


@dataclass(frozen=True)
class OpDef:
    opcode: OpCode
    inputs: tuple  # (min, max) number of inputs
    outputs: int
    fused_activation: bool  # may carry a fused RELU / RELU6 / CLIP
    options: type | None  # its options class of the schema (qrt.format.model), None: takes none
    verify: Callable
    prepare: Callable
    reference: Callable
    kernel: str  # its compiled kernel in qrt/kernels/ (KERNELS of a kernel module)
    since: str = "0.1.0"  # the qrt release that introduced it (its version 1)
    macs: Callable | None = None  # macs(model, op): its multiply-accumulates (None: not counted)


# ---------------------------------------------------------------------------- verification

def fail(where: str, what: str):
    raise InvalidModelError(f"{where}: {what}")


@dataclass
class Check:
    """The operator under verification, with helpers that name it in every error. `options` is
    the operator's options (the defaults when the file has none), checked for type already."""
    model: ModelDefinition
    index: int
    options: object = None

    @property
    def op(self) -> Operator:
        return self.model.operators[self.index]

    def fail(self, what: str):
        fail(self.model.operator_label(self.index), what)

    def input(self, k: int) -> Tensor:
        return self.model.tensors[self.op.inputs[k]]

    def output(self, k: int = 0) -> Tensor:
        return self.model.tensors[self.op.outputs[k]]

    def label(self, t: Tensor) -> str:
        return f"tensor '{t.name}'"

    def dtype(self, t: Tensor, *allowed: DType):
        if t.dtype not in allowed:
            self.fail(f"{self.label(t)} is {t.dtype.name}; expected {' or '.join(a.name for a in allowed)}")

    def activation(self, t: Tensor, dtype=DType.INT8):
        """An int8 activation with per-tensor quantization."""
        self.dtype(t, dtype)
        if t.quant is None or t.quant.per_channel:
            self.fail(f"{self.label(t)} needs per-tensor quantization (one scale and zero point)")

    def constant(self, t: Tensor):
        if t.data is None:
            self.fail(f"{self.label(t)} must be a constant (weights, bias or table stored in the file)")

    def weights(self, w: Tensor, channel_axis: int):
        """int8 symmetric weights, per tensor or per output channel along channel_axis."""
        self.constant(w)
        self.dtype(w, DType.INT8)
        if w.quant is None:
            self.fail(f"weights {self.label(w)} have no quantization")
        if np.any(w.quant.zero_point != 0):
            self.fail(f"weights {self.label(w)} must be symmetric (zero point 0)")
        if w.quant.per_channel and w.quant.axis != channel_axis:
            self.fail(f"weights {self.label(w)} are per-channel along dimension {w.quant.axis}; "
                      f"expected dimension {channel_axis} (the output channels)")
        if w.data.size and int(w.data.min()) < -MAX_WEIGHT_MAGNITUDE:
            self.fail(f"weights {self.label(w)} contain -128; int8 weights must lie in [-127, 127]")

    def bias(self, b: Tensor, x: Tensor, w: Tensor, channels: int, reduction: int):
        """int32 bias of scale s_x * s_w[c], and the int32 accumulator bound for this op."""
        self.constant(b)
        self.dtype(b, DType.INT32)
        if b.shape != (channels,):
            self.fail(f"bias {self.label(b)} has shape {b.shape}; expected ({channels},)")
        if b.quant is not None:
            if np.any(b.quant.zero_point != 0):
                self.fail(f"bias {self.label(b)} must have zero point 0")
            expect = np.float64(x.quant.scale[0]) * np.broadcast_to(w.quant.scale.astype(np.float64), (channels,))
            got = b.quant.scale.astype(np.float64)
            if got.size not in (1, channels) or not np.allclose(got, expect, rtol=1e-4, atol=0):
                self.fail(f"bias {self.label(b)} scale must equal input scale x weight scale per channel")
        max_bias = int(np.abs(b.data.astype(np.int64)).max()) if b.data.size else 0
        if accumulator_bound(reduction, max_bias) > INT32_MAX:
            self.fail(f"reduction length {reduction} with |bias| up to {max_bias} can overflow the "
                      f"int32 accumulator ({reduction} x {MAX_INPUT_MAGNITUDE} x {MAX_WEIGHT_MAGNITUDE} "
                      f"+ {max_bias} > 2^31 - 1)")

    def sum_bound(self, count: int, what: str):
        """A sum of `count` int8 differences |x - zp| must fit the int32 accumulator."""
        if count * MAX_INPUT_MAGNITUDE > INT32_MAX:
            self.fail(f"{what} can overflow the int32 accumulator")

    def same_shape(self, a: Tensor, b: Tensor):
        if a.shape != b.shape:
            self.fail(f"{self.label(b)} has shape {b.shape}; expected {a.shape} (same as {self.label(a)})")

    def same_quant(self, a: Tensor, b: Tensor):
        qa, qb = a.quant, b.quant
        if (qa is None) != (qb is None) or (qa is not None and (
                not np.array_equal(qa.scale, qb.scale) or not np.array_equal(qa.zero_point, qb.zero_point))):
            self.fail(f"{self.label(b)} must keep the quantization of {self.label(a)} (this op only moves data)")

    def positive(self, o, *names):
        for n in names:
            if getattr(o, n) < 1:
                self.fail(f"{n} = {getattr(o, n)}; must be >= 1")

    def non_negative(self, o, *names):
        for n in names:
            if getattr(o, n) < 0:
                self.fail(f"{n} = {getattr(o, n)}; must be >= 0")

    def axis(self, axis: int, rank: int, what: str = "axis") -> int:
        if not -rank <= axis < rank:
            self.fail(f"{what} {axis} is out of range for rank {rank}")
        return axis % rank

    def rank(self, t: Tensor, rank: int, layout: str):
        if len(t.shape) != rank:
            self.fail(f"{self.label(t)} has shape {t.shape}; expected rank {rank} {layout}")

    def elementwise(self):
        """x -> y of the same shape, both int8 activations."""
        x, y = self.input(0), self.output()
        self.activation(x)
        self.activation(y)
        self.same_shape(x, y)


# ---------------------------------------------------------------------------- prepare

def scale(t: Tensor) -> float:
    return float(t.quant.scale[0])


def zero_point(t: Tensor) -> int:
    return int(t.quant.zero_point[0])


@dataclass
class Requant:
    """Requantize an int32 accumulator: clamp(zp + ((acc * m + 2**(n-1)) >> n), lo, hi)."""
    multiplier: np.ndarray  # int32, one per output channel (or one)
    shift: np.ndarray  # int32
    zero_point: int
    lo: int
    hi: int


def clamp_bounds(y: Tensor, activation: Activation, clip_min: float, clip_max: float) -> tuple[int, int]:
    """[lo, hi] of SPEC.md section 4.4: the dtype range meet the quantized activation range."""
    dmin, dmax = QUANT_RANGE[y.dtype]
    a, b = {Activation.NONE: (-math.inf, math.inf), Activation.RELU: (0.0, math.inf),
            Activation.RELU6: (0.0, 6.0), Activation.CLIP: (float(clip_min), float(clip_max))}[Activation(activation)]
    s, zp = scale(y), zero_point(y)

    def q(v):
        if math.isinf(v):
            return dmin if v < 0 else dmax
        return min(max(zp + round(v / s), dmin), dmax)  # round(): half to even, in float64

    return q(a), q(b)


def requant(real_multipliers, y: Tensor, op: Operator | None = None) -> Requant:
    """The Requant to y of accumulators whose real value is acc * real_multipliers * s_y, with
    op's fused activation as the clamp (the dtype range without an op)."""
    m, n = quantize_multipliers(real_multipliers)
    lo_hi = clamp_bounds(y, op.activation, op.clip_min, op.clip_max) if op else QUANT_RANGE[y.dtype]
    return Requant(m.astype(np.int32), n.astype(np.int32), zero_point(y), *lo_hi)


def requantize_to(acc, r: Requant, dtype=np.int8) -> np.ndarray:
    """The reference's requantization of int accumulators with a Requant."""
    return requantize(acc, r.multiplier, r.shift, r.zero_point, r.lo, r.hi).astype(dtype)


@dataclass
class RescaleParams:
    """y = requantize(x - zp_x) with one multiplier: CONCAT inputs, REQUANTIZE, MEAN (the
    multiplier folds 1/count in)."""
    input_zero_point: int
    out: Requant
    identity: bool  # same scale and zero point and no clamp: a plain copy


def rescale(x: Tensor, y: Tensor, op: Operator | None = None, divisor: int = 1) -> RescaleParams:
    r = requant(np.float64(scale(x)) / (np.float64(scale(y)) * divisor), y, op)
    identity = (divisor == 1 and scale(x) == scale(y) and zero_point(x) == zero_point(y) and x.dtype == y.dtype
                and (r.lo, r.hi) == QUANT_RANGE[y.dtype])
    return RescaleParams(zero_point(x), r, identity)


def rescale_reference(x, p: RescaleParams) -> np.ndarray:
    """Values in the output dtype's range (int8 or uint8), as int64."""
    if p.identity:
        return x.astype(np.int64)
    return requantize_to(x.astype(np.int64) - p.input_zero_point, p.out, np.int64)


def tensors(model: ModelDefinition, op: Operator):
    """op's input tensors followed by its output tensors."""
    return [model.tensors[i] for i in op.inputs + op.outputs]


def no_params(model: ModelDefinition, op: Operator):
    return None
