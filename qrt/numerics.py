"""The numerics rule (schema/SPEC.md, section 4), written plainly in NumPy: the executable spec
that every op's reference (qrt/ops/) and, through them, every compiled kernel obey. Its C twin
is qrt/kernels/simd/api.h (the scalar form; each vector path's is a sibling in simd/requant.h,
tested against it).

Real multiplier M = s_in * s_w / s_out is stored as (m, n): M ~= m * 2**-n with m an int32
mantissa in [2**30, 2**31) and n a right shift in [1, 62] (for M < 2**-32 the shift stays 62 and
m shrinks below 2**30, down to 0). Requantizing an int32 accumulator:

    y = clamp(zero_point + ((acc * m + 2**(n-1)) >> n), lo, hi)

one rounding: to nearest, ties toward +infinity, computed exactly in 64 bits.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import InvalidModelError

MIN_SHIFT, MAX_SHIFT = 1, 62

# The int32 accumulator bound (SPEC.md section 4.5), checked when a model is loaded:
# reduction x MAX_INPUT_MAGNITUDE x MAX_WEIGHT_MAGNITUDE + |bias| <= INT32_MAX.
INT32_MAX = 2**31 - 1
MAX_INPUT_MAGNITUDE = 255  # largest |x - zero_point| of an int8 activation
MAX_WEIGHT_MAGNITUDE = 127  # largest |w| of an int8 weight (-128 is not allowed)

# int16 activations (SPEC.md section 4.6): symmetric, so |x| <= 2**15; the int32 accumulator of
# a weighted op is bounded per output channel by sum_k |w[c, k]| x MAX_INT16_MAGNITUDE + |bias[c]|.
MAX_INT16_MAGNITUDE = 32768

# Constants of single ops that the verifier, the references, the kernels and the converters share.
ADD_LEFT_SHIFT = 20  # headroom bits of ADD/SUB operands (|x - zp| << 20 < 2**28)
ADD_LEFT_SHIFT_16 = 15  # the same for int16 operands (|x| << 15 <= 2**30)
SOFTMAX_EXP_BITS = 23  # SOFTMAX's exp table entries are round(exp(-beta * s * d) * 2**23)
SOFTMAX_OUTPUT = (1.0 / 256.0, -128)  # the fixed (scale, zero_point) of SOFTMAX outputs
SOFTMAX_OUTPUT_16 = (1.0 / 32768.0, 0)  # the same for int16 SOFTMAX outputs (SPEC.md 2.13.15)
SOFTMAX_EXP_BITS_16 = 30  # the int16 form's table entries are round(exp(-beta * s * 16 * i) * 2**30)
SOFTMAX_TABLE_16 = 4097  # its entries: the differences d = 16 i, i = 0 .. 4096 (the last past 65535)
SOFTMAX_STEP_BITS_16 = 4  # 16 differences between entries, interpolated linearly
REDUCE_L2_ROOT_BITS = 8  # REDUCE L2's root isqrt(Q << 16) carries 8 fraction bits (SPEC.md 2.13.25)


def accumulator_bound(reduction: int, max_bias: int = 0) -> int:
    """The largest |int32 accumulator| a reduction of `reduction` int8 products plus a bias of
    magnitude <= max_bias can reach; a model is valid only if it is <= INT32_MAX."""
    return reduction * MAX_INPUT_MAGNITUDE * MAX_WEIGHT_MAGNITUDE + max_bias


def int16_accumulator_bound(weight_l1: np.ndarray, bias) -> np.ndarray:
    """Per output channel, the largest |int32 accumulator| of int16 inputs: sum_k |w[c, k]|
    x 2**15 + |bias[c]|; a model is valid only if every one is <= INT32_MAX."""
    return np.asarray(weight_l1, np.int64) * MAX_INT16_MAGNITUDE + np.abs(np.asarray(bias, np.int64))


def isqrt(d) -> np.ndarray:
    """floor(sqrt(d)) of int64 0 <= d < 2^63 - 2^33, exactly (a float64 estimate, then
    corrected by whole steps): LAYER_NORM's and REDUCE L2's root. Its C twin is common.pxd's
    _isqrt, the same steps."""
    d = np.asarray(d, np.int64)
    r = np.floor(np.sqrt(d.astype(np.float64))).astype(np.int64)
    while (r * r > d).any():
        r = np.where(r * r > d, r - 1, r)
    while ((r + 1) * (r + 1) <= d).any():
        r = np.where((r + 1) * (r + 1) <= d, r + 1, r)
    return r


def quantize_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """(m, n) int64 arrays for an array of positive real multipliers, as SPEC.md section 4.1
    specifies (float64 math, done once at load or conversion time)."""
    r = np.atleast_1d(np.asarray(reals, dtype=np.float64))
    bad = ~(np.isfinite(r) & (r > 0))
    if bad.any():
        raise InvalidModelError(f"requantization multiplier {float(r[bad][0])!r} must be finite and > 0")
    frac, exp = np.frexp(r)  # r = frac * 2**exp, frac in [0.5, 1)
    m = np.round(frac * 2.0**31).astype(np.int64)  # round half to even, exact in float64
    carry = m == 2**31
    m[carry] = 2**30
    n = 31 - (exp.astype(np.int64) + carry)
    if (n < MIN_SHIFT).any():
        raise InvalidModelError(f"requantization multiplier {float(r[n < MIN_SHIFT][0])!r} is too "
                                f"large (the limit is 2^{31 - MIN_SHIFT}); check the scales")
    drop = n - MAX_SHIFT  # M < 2**-32: keep the shift in range, lose mantissa bits
    some = (drop > 0) & (drop <= 32)
    m[some] = (m[some] + (np.int64(1) << (drop[some] - 1))) >> drop[some]
    m[drop > 32] = 0  # m < 2**31 <= 2**(drop-1): rounds to 0
    return m, np.minimum(n, MAX_SHIFT)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(m, n) for one positive real multiplier (see quantize_multipliers)."""
    m, n = quantize_multipliers(float(real))
    return int(m[0]), int(n[0])


def quantize_signed_multiplier(real: float) -> tuple[int, int]:
    """(m, n) for any finite real multiplier: the mantissa carries the sign, and 0 is (0, 1).
    Used where the real factor can be negative or zero (LEAKY_RELU and PRELU slopes)."""
    if real == 0:
        return 0, MIN_SHIFT
    m, n = quantize_multiplier(abs(real))
    return (-m if real < 0 else m), n


def rounding_shift(v: np.ndarray, multiplier, shift) -> np.ndarray:
    """(v * m + 2**(n-1)) >> n in exact 64-bit integers: v * M rounded to nearest, ties up."""
    v = np.asarray(v, dtype=np.int64)
    n = np.asarray(shift, dtype=np.int64)
    return (v * np.asarray(multiplier, dtype=np.int64) + (np.int64(1) << (n - 1))) >> n


def requantize(acc: np.ndarray, multiplier, shift, zero_point: int, lo: int, hi: int) -> np.ndarray:
    """int32 accumulators -> clamped integers; multiplier and shift per element or broadcast
    along the last axis (per channel)."""
    return np.clip(rounding_shift(acc, multiplier, shift) + zero_point, lo, hi)
