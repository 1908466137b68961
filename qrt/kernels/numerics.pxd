# cython: language_level=3
"""Shared numerics of the Cython kernels: the rounding rule of SPEC.md section 4.2 (reference:
qrt/numerics.py requantize), declared from its one C definition in simd/api.h, and the
bind-time check of requantization parameters.

Declarations and an inline check only, so no module is built from this file; cimport it with
`from qrt.kernels.numerics cimport requantize_one, rounding_shift, check_requant`."""
from libc.stdint cimport int8_t, int32_t, int64_t


cdef extern from "simd/api.h":
    # The rule is written once, in C (simd/api.h); these are its names in the Cython kernels.
    int64_t rounding_shift "qrt_rounding_shift"(int64_t v, int64_t m, int64_t n) noexcept nogil
    int8_t requantize_one "qrt_requant_scalar"(int32_t acc, int32_t m, int32_t n, int32_t zp,
                                                 int32_t lo, int32_t hi) noexcept nogil


cdef inline Py_ssize_t check_requant(const int32_t[::1] multiplier, const int32_t[::1] shift,
                                     Py_ssize_t channels, object zero_point, object lo,
                                     object hi) except -1:
    """Validate a Requant's arrays and bounds for `channels` output channels, so that
    requantize_one is well defined (shift in [1, 62], multiplier >= 0, [lo, hi] inside int8).
    Returns the per-channel index step: 1 (one entry per channel) or 0 (one shared entry)."""
    cdef Py_ssize_t c, step
    if multiplier.shape[0] != shift.shape[0]:
        raise ValueError(f"requantization has {multiplier.shape[0]} multipliers but "
                         f"{shift.shape[0]} shifts")
    if multiplier.shape[0] == channels:
        step = 1
    elif multiplier.shape[0] == 1:
        step = 0
    else:
        raise ValueError(f"requantization has {multiplier.shape[0]} multipliers; expected "
                         f"{channels} (one per output channel) or 1")
    for c in range(multiplier.shape[0]):
        if not (1 <= shift[c] <= 62) or multiplier[c] < 0:
            raise ValueError(f"requantization channel {c}: shift {shift[c]} must lie in [1, 62] "
                             f"and multiplier {multiplier[c]} be >= 0")
    if not (-128 <= lo <= hi <= 127):
        raise ValueError(f"clamp range [{lo}, {hi}] must lie inside [-128, 127]")
    if not (-2**31 <= zero_point < 2**31):
        raise ValueError(f"output zero point {zero_point} does not fit int32")
    return step
