"""NumPy reference of every operator: the executable form of SPEC.md section 2.13.

Each function takes the op's input arrays (channels-last, as stored) and the parameters made
by qrt/runtime/prepare.py, and returns the output. Integer arithmetic only (int64 where a
plain formula needs it; the spec's bounds guarantee the int32 kernels get the same numbers).
Written for clarity, not speed: qrt/kernels/ hold the fast twins, bit-exact with these.
"""
from __future__ import annotations

import numpy as np

from ..runtime.prepare import (
    ADD_LEFT_SHIFT, AddParams, ConcatParams, ConvParams, DequantizeParams, FullyConnectedParams, MeanParams,
    MulParams, PadParams, PoolParams, QuantizeParams, Requant, RescaleParams, SlopeParams,
    SoftmaxParams, TransposeParams,
)
from .numerics import requantize, rounding_shift


def _requant(acc, r: Requant, dtype=np.int8) -> np.ndarray:
    return requantize(acc, r.multiplier, r.shift, r.zero_point, r.lo, r.hi).astype(dtype)


def _windows(x: np.ndarray, kernel, stride, dilation, pads, fill) -> np.ndarray:
    """[N, OH, OW, KH, KW, C] view of every window of x [N, H, W, C] padded with `fill`."""
    top, left, bottom, right = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    n, hp, wp, c = xp.shape
    kh, kw = kernel
    (sh, sw), (dh, dw) = stride, dilation
    oh = (hp - dh * (kh - 1) - 1) // sh + 1
    ow = (wp - dw * (kw - 1) - 1) // sw + 1
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (n, oh, ow, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]), writeable=False)


def conv_2d(x, w, bias, p: ConvParams) -> np.ndarray:
    """acc[c] = bias[c] + sum (x - zp_x) * w[c]; padding stands for real 0 (x = zp_x)."""
    xs = x.astype(np.int64) - p.input_zero_point
    cout, kh, kw, cin_g = w.shape
    win = _windows(xs, (kh, kw), p.stride, p.dilation, p.pads, 0)
    cout_g = cout // p.groups
    acc = np.empty(win.shape[:3] + (cout,), np.int64)
    for g in range(p.groups):
        patch = win[..., g * cin_g:(g + 1) * cin_g]
        wg = w[g * cout_g:(g + 1) * cout_g].astype(np.int64)
        acc[..., g * cout_g:(g + 1) * cout_g] = np.einsum("nhwijk,oijk->nhwo", patch, wg)
    return _requant(acc + bias.astype(np.int64), p.out)


def depthwise_conv_2d(x, w, bias, p: ConvParams) -> np.ndarray:
    """Output channel c * multiplier + j reads input channel c only."""
    xs = x.astype(np.int64) - p.input_zero_point
    _, kh, kw, cout = w.shape
    win = _windows(xs, (kh, kw), p.stride, p.dilation, p.pads, 0)
    win = np.repeat(win, p.groups, axis=-1)  # input channel c feeds outputs c*m .. c*m + m-1
    acc = np.einsum("nhwijc,ijc->nhwc", win, w[0].astype(np.int64))
    return _requant(acc + bias.astype(np.int64), p.out)


def fully_connected(x, w, bias, p: FullyConnectedParams) -> np.ndarray:
    acc = (x.astype(np.int64) - p.input_zero_point) @ w.astype(np.int64).T + bias.astype(np.int64)
    return _requant(acc, p.out)


def add(a, b, p: AddParams) -> np.ndarray:
    """Both operands to a common scale with ADD_LEFT_SHIFT bits of headroom, then one sum."""
    sa = rounding_shift((a.astype(np.int64) - p.a_zero_point) << ADD_LEFT_SHIFT, p.a_multiplier, p.a_shift)
    sb = rounding_shift((b.astype(np.int64) - p.b_zero_point) << ADD_LEFT_SHIFT, p.b_multiplier, p.b_shift)
    return _requant(sa - sb if p.subtract else sa + sb, p.out)


def mul(a, b, p: MulParams) -> np.ndarray:
    acc = (a.astype(np.int64) - p.a_zero_point) * (b.astype(np.int64) - p.b_zero_point)
    return _requant(acc, p.out)


def rescale(x, p: RescaleParams) -> np.ndarray:
    """Values in the output dtype's range (int8 or uint8), as int64."""
    if p.identity:
        return x.astype(np.int64)
    return _requant(x.astype(np.int64) - p.input_zero_point, p.out, np.int64)


def concat(inputs, p: ConcatParams) -> np.ndarray:
    return np.concatenate([rescale(x, q) for x, q in zip(inputs, p.inputs)], axis=p.axis).astype(np.int8)


def max_pool_2d(x, p: PoolParams) -> np.ndarray:
    """Padding never wins: it is filled below the int8 range."""
    win = _windows(x.astype(np.int16), p.kernel, p.stride, (1, 1), p.pads, -129)
    return win.max(axis=(3, 4)).astype(np.int8)


def average_pool_2d(x, p: PoolParams) -> np.ndarray:
    """sum (x - zp_x) over the window / count, count = window area or non-padded positions,
    with the 1/count folded into the multiplier (one rounding)."""
    xs = x.astype(np.int64) - p.input_zero_point
    total = _windows(xs, p.kernel, p.stride, (1, 1), p.pads, 0).sum(axis=(3, 4))
    if p.count_include_pad:
        count = np.full(total.shape, p.kernel[0] * p.kernel[1])
    else:
        ones = np.ones((1,) + x.shape[1:3] + (1,), np.int64)
        count = np.broadcast_to(_windows(ones, p.kernel, p.stride, (1, 1), p.pads, 0).sum(axis=(3, 4)), total.shape)
    r = p.out
    return requantize(total, r.multiplier[count - 1], r.shift[count - 1], r.zero_point, r.lo, r.hi).astype(np.int8)


def mean(x, p: MeanParams) -> np.ndarray:
    total = (x.astype(np.int64) - p.rescale.input_zero_point).sum(axis=p.axes, keepdims=p.keep_dims)
    return _requant(total, p.rescale.out).reshape(total.shape)


def pad(x, p: PadParams) -> np.ndarray:
    rank = x.ndim
    if rank == 0:
        return x.copy()
    return np.pad(x, [(p.pads[i], p.pads[rank + i]) for i in range(rank)], constant_values=p.zero_point)


def transpose(x, p: TransposeParams) -> np.ndarray:
    return x.transpose(p.perm)


def slope(x, p: SlopeParams) -> np.ndarray:
    """LEAKY_RELU and PRELU: the positive slope above zp_x, alpha's (signed) slope below."""
    v = x.astype(np.int64) - p.input_zero_point
    pos = rounding_shift(v, p.pos_multiplier, p.pos_shift)
    neg = rounding_shift(v, p.neg_multiplier, p.neg_shift)
    return np.clip(np.where(v >= 0, pos, neg) + p.out_zero_point, -128, 127).astype(np.int8)


def lut(x, table) -> np.ndarray:
    return table[x.astype(np.int64) + 128]


def softmax(x, p: SoftmaxParams) -> np.ndarray:
    """e = exp_table[max - x]; y = clamp(((e << 8) + sum/2) // sum - 128): integers only."""
    d = x.max(axis=p.axis, keepdims=True).astype(np.int64) - x
    e = p.exp_table[d]
    total = e.sum(axis=p.axis, keepdims=True)
    return np.clip(((e << 8) + (total >> 1)) // total - 128, -128, 127).astype(np.int8)


def quantize(x, p: QuantizeParams) -> np.ndarray:
    """round-half-even(float64(x) / float64(s)) + zp, clamped to [lo, hi] (the output dtype's
    range), as int64; NaN maps to the zero point."""
    q = np.rint(x.astype(np.float64) / p.scale)
    q = np.clip(np.nan_to_num(q, nan=0.0), p.lo - p.zero_point, p.hi - p.zero_point)
    return q.astype(np.int64) + p.zero_point


def dequantize(x, p: DequantizeParams) -> np.ndarray:
    """float32(s) * float32(x - zp): one float32 multiplication, correctly rounded."""
    return p.scale * (x.astype(np.int32) - p.zero_point).astype(np.float32)
