# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Requantization of int32 accumulators to int8, per output channel: the shared rounding rule
(numerics.pxd requantize_one, and simd/requant.h on each instruction-set path) exposed on its
own, so tests/test_numerics.py can drive it with any accumulator, including -2^31 and
2^31 - 1, against the reference.
Reference: qrt/numerics.py requantize (SPEC.md section 4.2)."""
import numpy as np
from libc.stdint cimport int8_t, int32_t

from qrt.kernels.numerics cimport requantize_one
from qrt.kernels.isa cimport qrt_requant_ops_for
from qrt.kernels.simd_requant cimport qrt_requant_ops, qrt_requant_row, qrt_requant_tables32

from qrt.kernels import isa as _isa


def tables32(shift, valid, zero_point):
    """The 32-bit form of the rounding rule (simd/requant.h qrt_requant8_avx2_n33) for a
    layer's per-channel shifts, padded to whole vectors (valid: which entries are real
    channels; padding gets shift 33, its results are dropped). Returns (n33, round32,
    shift32): n33 true when every real shift is >= 33 and the zero point is small, so the
    32-bit form applies; round32 = 2^(n-33), shift32 = n - 32. Made by simd/api.h
    qrt_requant_tables32, the kernels' own."""
    n = np.array(np.where(valid, np.asarray(shift, np.int64), 33), np.int32, order="C")
    round32, shift32 = np.empty_like(n), np.empty_like(n)
    cdef const int32_t[::1] nv = n.reshape(-1)
    cdef int32_t[::1] rv = round32.reshape(-1)
    cdef int32_t[::1] sv = shift32.reshape(-1)
    cdef int32_t zp = max(min(int(zero_point), 2**31 - 1), -2**31)  # beyond int32: too large anyway
    cdef int ok = qrt_requant_tables32(&nv[0] if nv.shape[0] else NULL, nv.shape[0], zp,
                                       &rv[0] if rv.shape[0] else NULL,
                                       &sv[0] if sv.shape[0] else NULL)
    return bool(ok), round32, shift32


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
    cdef const qrt_requant_ops* ops = NULL
    if isa is not None:
        ops = qrt_requant_ops_for(_isa.resolve(isa))
    if ops != NULL:
        with nogil:
            for r in range(rows):
                qrt_requant_row(ops, &acc[r, 0], &multiplier[0], &shift[0], channels,
                                zero_point, lo, hi, &y[r, 0])
        return out
    with nogil:
        for r in range(rows):
            for c in range(channels):
                y[r, c] = requantize_one(acc[r, c], multiplier[c], shift[c], zero_point, lo, hi)
    return out
