"""What every op module of qrt/ops/ is made of, and the pieces they share.

An op module defines one OpDef per op code (SPEC.md section 2.13). Its integer form (INT8) is
the OpDef's own fields:
  verify(c: Check)           the op's rules, run on every load before any kernel sees the model;
  prepare(model, op) -> p    all its floating-point work, once at load: multipliers, shifts,
                             clamp bounds, tables (section 4);
  reference(ins, p) -> y     its NumPy reference: the executable spec, integer-only;
  kernel                     the name of its compiled twin in qrt/kernels/ (bit-exact with reference).
Other forms (SPEC.md section 3.2: float32 islands, weight-only, dynamic) are Forms of the same
four parts in OpDef.forms; OpDef.form(model, op) picks one by the operator's tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InvalidModelError
from ..format.model import QUANT_RANGE, Activation, DType, ModelDefinition, OpCode, Operator, Tensor, unpack_int4
from ..numerics import (
    INT32_MAX, MAX_INPUT_MAGNITUDE, MAX_INT16_MAGNITUDE, MAX_WEIGHT_MAGNITUDE, accumulator_bound,
    int16_accumulator_bound, quantize_multipliers, requantize,
)

ANY = 2**31  # no upper limit on the number of inputs

# The forms an operator computes in (SPEC.md section 3.2), named by what its activations are.
INT8 = "int8"  # quantized activations, integer arithmetic (the default; int8 or uint8 tensors)
INT16 = "int16"  # int16 symmetric activations, int8 weights, integer arithmetic (SPEC.md 4.6)
FLOAT32 = "float32"  # float32 activations and weights: a float island
WEIGHT_ONLY = "weight-only"  # float32 activations, quantized weights dequantized in the kernel
DYNAMIC = "dynamic"  # float32 activations quantized per row at run time, integer arithmetic
FLOAT_FORMS = (FLOAT32, WEIGHT_ONLY, DYNAMIC)  # activations are float32


@dataclass(frozen=True)
class Form:
    """One way an op computes: the same four parts as an OpDef's integer form."""
    name: str  # INT8, FLOAT32, WEIGHT_ONLY or DYNAMIC
    verify: Callable
    prepare: Callable
    reference: Callable
    kernel: str | None  # its compiled kernel; None: the reference runs (float32 NumPy forms)
    since: str  # the qrt release that introduced this form


def select_by_output(model: ModelDefinition, op: Operator) -> str:
    """FLOAT32 or INT16 when the op writes float32 or int16, else INT8: the forms of most ops."""
    dtype = model.tensors[op.outputs[0]].dtype
    return FLOAT32 if dtype == DType.FLOAT32 else INT16 if dtype == DType.INT16 else INT8


def conversion(model: ModelDefinition, op: Operator) -> str:
    """The conversions QUANTIZE, DEQUANTIZE, REQUANTIZE: one form, whatever they write."""
    return INT8


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
    forms: tuple = ()  # its other Forms
    select: Callable = select_by_output  # select(model, op) -> the name of the form it computes in
    integer: bool = True  # has the integer form above (False: float32 forms only)
    # batch(model, op) -> bool: dimension 0 of its run-time tensors is a batch whose entries it
    # computes apart (so a plan for k file batches at once computes what k runs would); False
    # for ops that mix entries or move dimension 0 (runtime/batching.py)
    batch: Callable | bool = False

    def all_forms(self) -> tuple:
        base = (Form(INT8, self.verify, self.prepare, self.reference, self.kernel, self.since),) \
            if self.integer else ()
        return base + self.forms

    def form(self, model: ModelDefinition, index: int) -> Form:
        """The form operator `index` computes in; InvalidModelError if this op has none such."""
        op = model.operators[index]
        name = self.select(model, op)
        for f in self.all_forms():
            if f.name == name:
                return f
        have = ", ".join(f.name for f in self.all_forms())
        fail(model.operator_label(index),
             f"has no {name} form (its tensors' dtypes ask for one); {op.opcode.name} computes in: {have}")


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
    form: str = INT8

    @property
    def float_activations(self) -> bool:
        return self.form in FLOAT_FORMS

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

    def activation(self, t: Tensor, dtype=None):
        """An activation of the form: int8 (or `dtype`) or int16 with per-tensor quantization, or
        float32 without; int16 activations of the int16 forms are symmetric."""
        if self.float_activations:  # (a FLOAT32 tensor never carries quantization: format/verify.py)
            self.dtype(t, DType.FLOAT32)
            return
        if dtype is None:
            dtype = DType.INT16 if self.form == INT16 else DType.INT8
        self.dtype(t, dtype)
        if t.quant is None or t.quant.per_channel:
            self.fail(f"{self.label(t)} needs per-tensor quantization (one scale and zero point)")
        if self.form == INT16 and t.dtype == DType.INT16 and int(t.quant.zero_point[0]) != 0:
            self.fail(f"{self.label(t)} is an int16 activation: its zero point must be 0 (symmetric)")

    def constant(self, t: Tensor):
        if t.data is None:
            self.fail(f"{self.label(t)} must be a constant (weights, bias or table stored in the file)")

    def weights(self, w: Tensor, channel_axis: int, int4: bool = False):
        """The form's weights: int8 symmetric per tensor or per output channel along
        channel_axis, or int4 in the integer forms of ops that read them (int4); float32
        (FLOAT32 form); int8 or int4, also per group (weight-only form)."""
        self.constant(w)
        if self.form == FLOAT32:
            self.dtype(w, DType.FLOAT32)
            return
        if self.form == WEIGHT_ONLY or (int4 and self.form in (INT8, INT16)):
            self.dtype(w, DType.INT8, DType.INT4)
        else:
            self.dtype(w, DType.INT8)
        if w.quant is None:
            self.fail(f"weights {self.label(w)} have no quantization")
        q = w.quant
        if np.any(q.zero_point != 0):
            self.fail(f"weights {self.label(w)} must be symmetric (zero point 0)")
        if q.per_group:  # (the count of scales is a tensor rule: format/verify.py)
            if self.form != WEIGHT_ONLY:
                self.fail(f"weights {self.label(w)} are per group, which the {self.form} form does not "
                          f"read (per-group weights need the weight-only form in this release)")
            if channel_axis != 0:
                self.fail(f"per-group weights {self.label(w)} need their output channels in dimension 0")
        elif q.per_channel and q.axis != channel_axis:
            self.fail(f"weights {self.label(w)} are per-channel along dimension {q.axis}; "
                      f"expected dimension {channel_axis} (the output channels)")
        if w.dtype == DType.INT8 and w.data.size and int(w.data.min()) < -MAX_WEIGHT_MAGNITUDE:
            self.fail(f"weights {self.label(w)} contain -128; int8 weights must lie in [-127, 127]")
        if w.dtype == DType.INT4 and (unpack_int4(w.data, w.numel) == -8).any():
            self.fail(f"weights {self.label(w)} contain -8; int4 weights must lie in [-7, 7]")

    def bias(self, b: Tensor, x: Tensor, w: Tensor, channels: int, reduction: int, channel_axis: int = 0):
        """int32 bias of scale s_x * s_w[c], and the int32 accumulator bound for this op; a
        float32 bias in the float forms."""
        self.constant(b)
        if self.float_activations:
            self.dtype(b, DType.FLOAT32)
            if b.shape != (channels,):
                self.fail(f"bias {self.label(b)} has shape {b.shape}; expected ({channels},)")
            if self.form == DYNAMIC and reduction * MAX_INPUT_MAGNITUDE * MAX_WEIGHT_MAGNITUDE > INT32_MAX:
                self.fail(f"reduction length {reduction} can overflow the int32 accumulator")
            return
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
        if self.form == INT16:  # the per-channel bound of SPEC.md 4.6
            wi = weight_ints(w.data, int4_shape(w)).astype(np.int64)
            l1 = np.abs(np.moveaxis(wi, channel_axis, 0)).reshape(channels, -1).sum(axis=1)
            bound = int16_accumulator_bound(l1, b.data)
            if (bound > INT32_MAX).any():
                c = int(np.argmax(bound))
                self.fail(f"output channel {c}: sum |w| x 2^15 + |bias| = {int(bound[c])} can overflow the int32 "
                          f"accumulator of int16 inputs (> 2^31 - 1); keep this layer int8")
            return
        max_bias = int(np.abs(b.data.astype(np.int64)).max()) if b.data.size else 0
        if accumulator_bound(reduction, max_bias) > INT32_MAX:
            self.fail(f"reduction length {reduction} with |bias| up to {max_bias} can overflow the "
                      f"int32 accumulator ({reduction} x {MAX_INPUT_MAGNITUDE} x {MAX_WEIGHT_MAGNITUDE} "
                      f"+ {max_bias} > 2^31 - 1)")

    def sum_bound(self, count: int, what: str):
        """A sum of `count` differences |x - zp| (<= 255 for int8, 2^15 for int16) must fit the
        int32 accumulator (the forms that sum integers; float sums have no such bound)."""
        magnitude = {INT8: MAX_INPUT_MAGNITUDE, DYNAMIC: MAX_INPUT_MAGNITUDE, INT16: MAX_INT16_MAGNITUDE}.get(self.form)
        if magnitude and count * magnitude > INT32_MAX:
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
        """x -> y of the same shape, both activations of the form (int8, or float32)."""
        x, y = self.input(0), self.output()
        self.activation(x)
        self.activation(y)
        self.same_shape(x, y)


def int4_shape(w: Tensor) -> tuple | None:
    """INT4 weights' shape, which the integer forms' params carry (their data is nibble pairs
    without it); None for int8 weights."""
    return tuple(w.shape) if w.dtype == DType.INT4 else None


def weight_ints(data: np.ndarray, w4: tuple | None) -> np.ndarray:
    """Integer weights as the references read them: INT4 data unpacked to int8 of shape w4,
    int8 data as it is (w4 None)."""
    if w4 is None:
        return data
    return unpack_int4(data, math.prod(w4)).reshape(w4)


def group_count(k: int, group_size: int) -> int:
    return -(-k // group_size)


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
    dtype: type = np.int8  # the output's numpy dtype: int8, uint8 or int16


def activation_range(activation: Activation, clip_min: float, clip_max: float) -> tuple[float, float]:
    """The real range a fused activation clamps to (SPEC.md section 4.4)."""
    return {Activation.NONE: (-math.inf, math.inf), Activation.RELU: (0.0, math.inf),
            Activation.RELU6: (0.0, 6.0), Activation.CLIP: (float(clip_min), float(clip_max))}[Activation(activation)]


def clamp_bounds(y: Tensor, activation: Activation, clip_min: float, clip_max: float) -> tuple[int, int]:
    """[lo, hi] of SPEC.md section 4.4: the dtype range meet the quantized activation range."""
    dmin, dmax = QUANT_RANGE[y.dtype]
    a, b = activation_range(activation, clip_min, clip_max)
    s, zp = scale(y), zero_point(y)

    def q(v):
        if math.isinf(v):
            return dmin if v < 0 else dmax
        return min(max(zp + round(v / s), dmin), dmax)  # round(): half to even, in float64

    return q(a), q(b)


def float_bounds(op: Operator) -> tuple[float, float]:
    """The real range of op's fused activation (float32 forms clamp to it)."""
    return activation_range(op.activation, op.clip_min, op.clip_max)


def float_clamp(y: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """y (float32) clamped to a fused activation's range, in place where y is a temporary."""
    lo, hi = bounds
    if lo == -math.inf and hi == math.inf:
        return y
    return np.clip(y, np.float32(lo), np.float32(hi), out=y if y.flags.writeable else None)


def requant(real_multipliers, y: Tensor, op: Operator | None = None) -> Requant:
    """The Requant to y of accumulators whose real value is acc * real_multipliers * s_y, with
    op's fused activation as the clamp (the dtype range without an op)."""
    m, n = quantize_multipliers(real_multipliers)
    lo_hi = clamp_bounds(y, op.activation, op.clip_min, op.clip_max) if op else QUANT_RANGE[y.dtype]
    return Requant(m.astype(np.int32), n.astype(np.int32), zero_point(y), *lo_hi,
                   {DType.INT16: np.int16, DType.UINT8: np.uint8}.get(y.dtype, np.int8))


def requantize_to(acc, r: Requant, dtype=None) -> np.ndarray:
    """The reference's requantization of int accumulators with a Requant (into its output
    dtype, unless another is given)."""
    return requantize(acc, r.multiplier, r.shift, r.zero_point, r.lo, r.hi).astype(dtype or r.dtype)


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
