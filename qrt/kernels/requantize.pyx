# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Requantization of int32 accumulators to int8, per output channel: the shared rounding rule
(numerics.pxd requantize_one) exposed on its own, so tests/test_numerics.py can drive it with
any accumulator, including -2^31 and 2^31 - 1, against the reference.
Reference: qrt/reference/numerics.py requantize (SPEC.md section 4.2)."""
import numpy as np
from libc.stdint cimport int8_t, int32_t

from qrt.kernels.numerics cimport requantize_one


def requantize_int8(const int32_t[:, ::1] acc, const int32_t[::1] multiplier,
                    const int32_t[::1] shift, int32_t zero_point, int32_t lo, int32_t hi):
    """acc [rows, channels] -> int8 [rows, channels]; multiplier/shift per channel."""
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
    with nogil:
        for r in range(rows):
            for c in range(channels):
                y[r, c] = requantize_one(acc[r, c], multiplier[c], shift[c], zero_point, lo, hi)
    return out
