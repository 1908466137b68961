# cython: language_level=3
"""Shared inline numerics of the compiled kernels: the one place for the rounding rule of
SPEC.md section 4.2 (reference: qrt/reference/numerics.py requantize), and the int8 dot product
the convolution and fully-connected kernels reduce with (section 4.3/4.5).

Inline functions only, so no module is built from this file; cimport it with
`from qrt.kernels.numerics cimport requantize_one, dot_s16_s8`."""
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t


cdef inline int64_t rounding_shift(int64_t v, int64_t m, int64_t n) noexcept nogil:
    """(v * m + 2^(n-1)) >> n in 64 bits: v * M rounded to nearest, ties toward +infinity, for
    a multiplier of either sign. Callers guarantee 1 <= n <= 62 and |v * m| + 2^(n-1) < 2^63.
    Reference: qrt/reference/numerics.py rounding_shift."""
    return (v * m + ((<int64_t>1) << (n - 1))) >> n


cdef inline int8_t requantize_one(int32_t acc, int32_t m, int32_t n, int32_t zp,
                                  int32_t lo, int32_t hi) noexcept nogil:
    """clamp(zp + rounding_shift(acc, m, n), lo, hi) for int8 outputs.
    Callers guarantee 1 <= n <= 62, m >= 0 and -128 <= lo <= hi <= 127."""
    cdef int64_t v = rounding_shift(acc, m, n)
    v += zp
    if v < lo:
        v = lo
    elif v > hi:
        v = hi
    return <int8_t>v


cdef inline int32_t dot_s16_s8(const int16_t* a, const int8_t* b, Py_ssize_t n) noexcept nogil:
    """sum a[i] * b[i] in int32; a holds (x - zp_x) in [-255, 255], b weights in [-127, 127].
    The section 4.5 bound keeps every partial sum inside int32. Written so that gcc -O3
    vectorises it (a widening multiply-add, pmaddwd on x86)."""
    cdef int32_t s = 0
    cdef Py_ssize_t i
    for i in range(n):
        s += <int32_t>a[i] * <int32_t>b[i]
    return s


cdef inline void dot4_s16_s8(const int16_t* a, const int8_t* b, Py_ssize_t b_stride, Py_ssize_t n,
                             int32_t* out) noexcept nogil:
    """out[j] = dot_s16_s8(a, b + j*b_stride, n) for j < 4: four weight rows share each load of
    a (register blocking over output channels)."""
    cdef int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, v
    cdef const int8_t* b1 = b + b_stride
    cdef const int8_t* b2 = b1 + b_stride
    cdef const int8_t* b3 = b2 + b_stride
    cdef Py_ssize_t i
    for i in range(n):
        v = a[i]
        s0 += v * <int32_t>b[i]
        s1 += v * <int32_t>b1[i]
        s2 += v * <int32_t>b2[i]
        s3 += v * <int32_t>b3[i]
    out[0] = s0
    out[1] = s1
    out[2] = s2
    out[3] = s3


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
