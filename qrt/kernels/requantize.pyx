# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Requantization of int32 accumulators to int8, per output channel: the shared rounding rule
(numerics.pxd requantize_one, and simd/requant.h on each instruction-set path) exposed on its
own, so tests/test_numerics.py can drive it with any accumulator, including -2^31 and
2^31 - 1, against the reference.
Reference: qrt/numerics.py requantize (SPEC.md section 4.2)."""
import numpy as np
from libc.stdint cimport int8_t, int32_t

from qrt.kernels.numerics cimport requantize_one

from qrt.kernels import isa as _isa


cdef extern from "simd/requant.h":
    void qrt_requant_row(int isa, const int32_t* acc, const int32_t* m, const int32_t* n,
                         Py_ssize_t count, int32_t zp, int32_t lo, int32_t hi, int8_t* y) noexcept nogil


def tables32(shift, valid, zero_point):
    """The 32-bit form of the rounding rule (simd/requant.h qrt_requant8_avx2_n33) for a
    layer's per-channel shifts, padded to whole vectors (valid: which entries are real
    channels; padding gets shift 33, its results are dropped). Returns (n33, round32,
    shift32): n33 true when every real shift is >= 33 and the zero point is small, so the
    32-bit form applies; round32 = 2^(n-33), shift32 = n - 32."""
    n = np.where(valid, np.asarray(shift, np.int64), 33)
    n33 = bool((n >= 33).all()) and abs(int(zero_point)) <= 2**16
    round32 = np.where(n >= 33, np.left_shift(1, np.maximum(n - 33, 0)), 0).astype(np.int32)
    return n33, round32, (n - 32).astype(np.int32)


def requantize_int8(const int32_t[:, ::1] acc, const int32_t[::1] multiplier,
                    const int32_t[::1] shift, int32_t zero_point, int32_t lo, int32_t hi, isa=None):
    """acc [rows, channels] -> int8 [rows, channels]; multiplier/shift per channel. isa: None
    for the scalar rule of numerics.pxd, or a path name for simd/requant.h's vector code."""
    cdef Py_ssize_t rows = acc.shape[0], channels = acc.shape[1], r, c
    if multiplier.shape[0] != channels or shift.shape[0] != channels:
        raise ValueError("multiplier and shift need one entry per channel")
    if not (-128 <= lo <= hi <= 127):
        raise ValueError("clamp range must lie inside [-128, 127]")
    for c in range(channels):
        if not (1 <= shift[c] <= 62) or multiplier[c] < 0:
            raise ValueError("shift must lie in [1, 62] and multiplier be >= 0")
    out = np.empty((rows, channels), dtype=np.int8)
    cdef int8_t[:, ::1] y = out
    cdef int path = -1 if isa is None else _isa.resolve(isa)
    if path >= 0:
        with nogil:
            for r in range(rows):
                qrt_requant_row(path, &acc[r, 0], &multiplier[0], &shift[0], channels,
                                zero_point, lo, hi, &y[r, 0])
        return out
    with nogil:
        for r in range(rows):
            for c in range(channels):
                y[r, c] = requantize_one(acc[r, c], multiplier[c], shift[c], zero_point, lo, hi)
    return out
