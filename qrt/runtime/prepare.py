"""Prepare: every operator's floating-point work, done once at load (SPEC.md section 2.13).

prepare_op turns scales, zero points and options into the integers an Eval step needs:
fixed-point multipliers and shifts, clamp bounds, lookup tables. After this the inference
path (qrt/reference/ops.py and qrt/kernels/) is integer-only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidModelError
from ..format.model import QUANT_RANGE, Activation, Model, OpCode, Tensor
from ..reference.numerics import quantize_multiplier, quantize_multipliers, quantize_signed_multiplier

ADD_LEFT_SHIFT = 20  # headroom bits of ADD/SUB operands (|x - zp| << 20 < 2**28)
SOFTMAX_EXP_BITS = 23  # exp table entries are round(exp(-beta * s * d) * 2**23)


@dataclass
class Requant:
    """Requantize an int32 accumulator: clamp(zp + ((acc * m + 2**(n-1)) >> n), lo, hi)."""
    multiplier: np.ndarray  # int32, one per output channel (or one)
    shift: np.ndarray  # int32
    zero_point: int
    lo: int
    hi: int


@dataclass
class ConvParams:
    stride: tuple  # (h, w)
    dilation: tuple  # (h, w)
    pads: tuple  # (top, left, bottom, right)
    groups: int  # CONV_2D groups; DEPTHWISE: the depth multiplier
    input_zero_point: int
    out: Requant


@dataclass
class FullyConnectedParams:
    input_zero_point: int
    out: Requant


@dataclass
class AddParams:
    """ADD/SUB: each operand is rescaled to a common scale with ADD_LEFT_SHIFT bits of
    headroom, summed, and the sum requantized."""
    a_zero_point: int
    b_zero_point: int
    a_multiplier: int
    a_shift: int
    b_multiplier: int
    b_shift: int
    subtract: bool
    out: Requant


@dataclass
class MulParams:
    a_zero_point: int
    b_zero_point: int
    out: Requant


@dataclass
class RescaleParams:
    """y = requantize(x - zp_x) with one multiplier: CONCAT inputs, REQUANTIZE, MEAN (the
    multiplier folds 1/count in)."""
    input_zero_point: int
    out: Requant
    identity: bool  # same scale and zero point and no clamp: a plain copy


@dataclass
class ConcatParams:
    axis: int
    inputs: list  # RescaleParams per input


@dataclass
class PadParams:
    pads: tuple  # begins then ends, per dimension
    zero_point: int  # the fill: real 0


@dataclass
class TransposeParams:
    perm: tuple


@dataclass
class PoolParams:
    kernel: tuple
    stride: tuple
    pads: tuple
    count_include_pad: bool
    input_zero_point: int
    out: Requant  # AVERAGE: multiplier/shift indexed by (window count - 1); MAX: unused


@dataclass
class MeanParams:
    axes: tuple
    keep_dims: bool
    rescale: RescaleParams


@dataclass
class SlopeParams:
    """LEAKY_RELU / PRELU: y = zp_y + rounding_shift(x - zp_x, m, n), with (m, n) the positive
    slope for x >= zp_x and the (signed) alpha slope below; alpha arrays broadcast to x."""
    input_zero_point: int
    pos_multiplier: int
    pos_shift: int
    neg_multiplier: np.ndarray
    neg_shift: np.ndarray
    out_zero_point: int


@dataclass
class SoftmaxParams:
    axis: int
    exp_table: np.ndarray  # int64 [256]: round(exp(-beta * s_x * d) * 2**SOFTMAX_EXP_BITS)


@dataclass
class QuantizeParams:
    scale: float  # float32 value, used in float64
    zero_point: int
    lo: int
    hi: int


@dataclass
class DequantizeParams:
    scale: np.float32
    zero_point: int


def _scale(t: Tensor) -> float:
    return float(t.quant.scale[0])


def _zp(t: Tensor) -> int:
    return int(t.quant.zero_point[0])


def clamp_bounds(y: Tensor, activation: Activation, clip_min: float, clip_max: float) -> tuple[int, int]:
    """[lo, hi] of SPEC.md section 4.4: the dtype range meet the quantized activation range."""
    dmin, dmax = QUANT_RANGE[y.dtype]
    a, b = {Activation.NONE: (-math.inf, math.inf), Activation.RELU: (0.0, math.inf),
            Activation.RELU6: (0.0, 6.0), Activation.CLIP: (float(clip_min), float(clip_max))}[Activation(activation)]
    s, zp = _scale(y), _zp(y)

    def q(v):
        if math.isinf(v):
            return dmin if v < 0 else dmax
        return min(max(zp + round(v / s), dmin), dmax)  # round(): half to even, in float64

    return q(a), q(b)


def requant(real_multipliers, y: Tensor, op=None) -> Requant:
    m, n = quantize_multipliers(real_multipliers)
    lo_hi = clamp_bounds(y, op.activation, op.clip_min, op.clip_max) if op else QUANT_RANGE[y.dtype]
    return Requant(m.astype(np.int32), n.astype(np.int32), _zp(y), *lo_hi)


def _channel_multipliers(x: Tensor, w: Tensor, y: Tensor, channels: int) -> np.ndarray:
    sw = np.broadcast_to(w.quant.scale.astype(np.float64), (channels,))
    return np.float64(_scale(x)) * sw / np.float64(_scale(y))


def _conv(model: Model, op) -> ConvParams:
    x, w, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    o = op.options
    if op.opcode == OpCode.CONV_2D:
        channels, groups = w.shape[0], o.groups
    else:
        channels, groups = w.shape[3], o.depth_multiplier
    return ConvParams((o.stride_h, o.stride_w), (o.dilation_h, o.dilation_w),
                      (o.pad_top, o.pad_left, o.pad_bottom, o.pad_right), groups, _zp(x),
                      requant(_channel_multipliers(x, w, y, channels), y, op))


def _fully_connected(model: Model, op) -> FullyConnectedParams:
    x, w, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    return FullyConnectedParams(_zp(x), requant(_channel_multipliers(x, w, y, w.shape[0]), y, op))


def _add(model: Model, op) -> AddParams:
    a, b, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    sa, sb, sy = _scale(a), _scale(b), _scale(y)
    common = 2 * max(sa, sb)
    ma, na = quantize_multiplier(sa / common)
    mb, nb = quantize_multiplier(sb / common)
    return AddParams(_zp(a), _zp(b), ma, na, mb, nb, op.opcode == OpCode.SUB,
                     requant(common / (2**ADD_LEFT_SHIFT * sy), y, op))


def _mul(model: Model, op) -> MulParams:
    a, b, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    return MulParams(_zp(a), _zp(b), requant(np.float64(_scale(a)) * _scale(b) / _scale(y), y, op))


def rescale(x: Tensor, y: Tensor, op=None, divisor: int = 1) -> RescaleParams:
    r = requant(np.float64(_scale(x)) / (np.float64(_scale(y)) * divisor), y, op)
    identity = (divisor == 1 and _scale(x) == _scale(y) and _zp(x) == _zp(y) and x.dtype == y.dtype
                and (r.lo, r.hi) == QUANT_RANGE[y.dtype])
    return RescaleParams(_zp(x), r, identity)


def _concat(model: Model, op) -> ConcatParams:
    y = model.tensors[op.outputs[0]]
    return ConcatParams(op.options.axis % len(y.shape), [rescale(model.tensors[i], y) for i in op.inputs])


def _pad(model: Model, op) -> PadParams:
    x = model.tensors[op.inputs[0]]
    return PadParams(tuple(op.options.pads), _zp(x) if x.quant is not None else 0)


def _transpose(model: Model, op) -> TransposeParams:
    return TransposeParams(tuple(op.options.perm))


def _pool(model: Model, op) -> PoolParams:
    x, y = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    o = op.options
    window = o.kernel_h * o.kernel_w
    if op.opcode == OpCode.AVERAGE_POOL_2D:
        # Indexed by (count - 1); with count_include_pad every window counts the full area.
        counts = np.full(window, window) if o.count_include_pad else np.arange(1, window + 1)
        out = requant(np.float64(_scale(x)) / (np.float64(_scale(y)) * counts), y, op)
    else:
        out = Requant(np.zeros(1, np.int32), np.ones(1, np.int32), _zp(y), *QUANT_RANGE[y.dtype])
    return PoolParams((o.kernel_h, o.kernel_w), (o.stride_h, o.stride_w),
                      (o.pad_top, o.pad_left, o.pad_bottom, o.pad_right), o.count_include_pad, _zp(x), out)


def _mean(model: Model, op) -> MeanParams:
    x, y = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    axes = tuple(sorted({a % len(x.shape) for a in op.options.axes}))
    return MeanParams(axes, op.options.keep_dims, rescale(x, y, op, math.prod(x.shape[a] for a in axes)))


def _slopes(x: Tensor, y: Tensor, alpha_real: np.ndarray) -> SlopeParams:
    base = np.float64(_scale(x)) / np.float64(_scale(y))
    mp, np_ = quantize_multiplier(base)
    neg = [quantize_signed_multiplier(a * base) for a in alpha_real.ravel()]
    shape = alpha_real.shape
    return SlopeParams(_zp(x), mp, np_, np.array([m for m, _ in neg], np.int64).reshape(shape),
                       np.array([n for _, n in neg], np.int64).reshape(shape), _zp(y))


def _leaky_relu(model: Model, op) -> SlopeParams:
    x, y = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    return _slopes(x, y, np.array(np.float32(op.options.alpha), dtype=np.float64))


def _prelu(model: Model, op) -> SlopeParams:
    x, alpha, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    real = np.float64(_scale(alpha)) * (alpha.data.astype(np.float64) - _zp(alpha))
    return _slopes(x, y, real)


def _softmax(model: Model, op) -> SoftmaxParams:
    x = model.tensors[op.inputs[0]]
    d = np.arange(256, dtype=np.float64)
    table = np.rint(np.exp(-np.float64(np.float32(op.options.beta)) * _scale(x) * d) * 2.0**SOFTMAX_EXP_BITS)
    return SoftmaxParams(op.options.axis % len(x.shape), table.astype(np.int64))


def quantize_params(y: Tensor) -> QuantizeParams:
    """float -> y's integers (QUANTIZE, and float feeds at the graph boundary)."""
    return QuantizeParams(_scale(y), _zp(y), *QUANT_RANGE[y.dtype])


def dequantize_params(x: Tensor) -> DequantizeParams:
    """x's integers -> float (DEQUANTIZE, and float results at the graph boundary)."""
    return DequantizeParams(np.float32(_scale(x)), _zp(x))


def _quantize(model: Model, op) -> QuantizeParams:
    return quantize_params(model.tensors[op.outputs[0]])


def _dequantize(model: Model, op) -> DequantizeParams:
    return dequantize_params(model.tensors[op.inputs[0]])


def _requantize(model: Model, op) -> RescaleParams:
    return rescale(model.tensors[op.inputs[0]], model.tensors[op.outputs[0]], op)


def _none(model: Model, op):
    return None


_PREPARE = {
    OpCode.CONV_2D: _conv,
    OpCode.DEPTHWISE_CONV_2D: _conv,
    OpCode.FULLY_CONNECTED: _fully_connected,
    OpCode.ADD: _add,
    OpCode.SUB: _add,
    OpCode.MUL: _mul,
    OpCode.CONCAT: _concat,
    OpCode.MAX_POOL_2D: _pool,
    OpCode.AVERAGE_POOL_2D: _pool,
    OpCode.MEAN: _mean,
    OpCode.PAD: _pad,
    OpCode.RESHAPE: _none,
    OpCode.TRANSPOSE: _transpose,
    OpCode.LEAKY_RELU: _leaky_relu,
    OpCode.PRELU: _prelu,
    OpCode.LUT: _none,
    OpCode.SOFTMAX: _softmax,
    OpCode.QUANTIZE: _quantize,
    OpCode.DEQUANTIZE: _dequantize,
    OpCode.REQUANTIZE: _requantize,
}


def prepare_op(model: Model, index: int):
    """The integer parameters of operator `index`; InvalidModelError names the operator when
    its scales cannot be expressed (a multiplier too large, say)."""
    op = model.operators[index]
    try:
        return _PREPARE[op.opcode](model, op)
    except InvalidModelError as e:
        raise InvalidModelError(f"{model.operator_label(index)}: {e}") from None
