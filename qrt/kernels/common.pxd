# cython: language_level=3
"""What the elementwise, data-movement and SOFTMAX kernels (elementwise.pyx, movement.pyx,
softmax.pyx) share at bind time: flat views of the inputs and output, the shape, dtype,
zero-point and (multiplier, shift) checks, the named-path check of single-path ops, and the
256-entry rescale table (REQUANTIZE, MAXIMUM/MINIMUM, CONCAT) with the loop that applies one,
the exact integer square root (LAYER_NORM, REDUCE L2);
and what the int16 forms (SPEC.md 4.6) of REQUANTIZE, CONCAT and the pools share: the element
types as fused types, the requantization into int16 and the rescale of int16 values.

Inline functions only, so no module is built from this file; cimport them with
`from qrt.kernels.common cimport _flat_in, ...`. A .pxd holds no module-level imports, so the
functions that call NumPy or qrt.kernels.isa import it themselves (bind time only)."""
from libc.math cimport floor, sqrt
from libc.stdint cimport INT32_MAX, int8_t, int16_t, int32_t, int64_t, uint8_t

from qrt.kernels.numerics cimport requantize_one, rounding_shift


cdef enum:
    MAX_RANK = 8  # the format's rank limit (qrt/format/verify.py MAX_RANK), as a C constant


cdef inline object _flat(object x, str what):
    """x as a 1-D C-contiguous array (a view when x is C-contiguous, else a copy): parameter
    arrays, which the step keeps."""
    import numpy as np
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(x).__name__}")
    return x.reshape(-1)


cdef inline object _flat_in(object x, str what):
    """An input as a 1-D view of its own memory, which the step reads at every run."""
    import numpy as np
    if isinstance(x, np.ndarray) and not x.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")
    return _flat(x, what)


cdef inline object _flat_out(object out):
    """out as a 1-D view sharing its memory; out must be C-contiguous and writeable."""
    import numpy as np
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a numpy array, got {type(out).__name__}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    return out.reshape(-1)


cdef inline const uint8_t* _in_bytes(object x, str what) except? NULL:
    """The first byte of input x (NULL when it is empty)."""
    import numpy as np
    cdef const uint8_t[::1] v = _flat_in(x, what).view(np.uint8)
    return &v[0] if v.shape[0] else NULL


cdef inline uint8_t* _out_bytes(object out) except? NULL:
    import numpy as np
    cdef uint8_t[::1] v = _flat_out(out).view(np.uint8)
    return &v[0] if v.shape[0] else NULL


cdef inline int _check_dtype(object x, object dtype, str what) except -1:
    import numpy as np
    if x.dtype != dtype:
        raise ValueError(f"{what} has dtype {x.dtype}; expected {np.dtype(dtype)}")
    return 0


cdef inline int _check_same_shape(object x, object out, str what) except -1:
    if x.shape != out.shape:
        raise ValueError(f"{what} has shape {x.shape} but out has shape {out.shape}")
    return 0


cdef inline int _check_rank(object shape, str what) except -1:
    if len(shape) > MAX_RANK:
        raise ValueError(f"{what} has rank {len(shape)}; the limit is {MAX_RANK}")
    return 0


cdef inline int _check_mn(object m, object n, bint signed, str what) except -1:
    """A (multiplier, shift) pair that keeps rounding_shift exact for |v| < 2^31."""
    lo = -INT32_MAX if signed else 0
    if not (lo <= m <= INT32_MAX) or not (1 <= n <= 62):
        raise ValueError(f"{what}: multiplier {m} must lie in [{lo}, 2^31) and shift {n} in [1, 62]")
    return 0


cdef inline int _check_zp8(object zp, str what) except -1:
    if not (-128 <= zp <= 127):
        raise ValueError(f"{what} {zp} must lie in [-128, 127]")
    return 0


cdef inline int _check_zp32(object zp, str what) except -1:
    if not (-INT32_MAX - 1 <= zp <= INT32_MAX):
        raise ValueError(f"{what} {zp} does not fit int32")
    return 0


cdef inline void _apply_table(const uint8_t* table, const uint8_t* x, uint8_t* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = table[x[i]]


cdef inline int _check_isa(object isa) except -1:
    """Ops with one path: a named path is still checked (ValueError for an unknown one), None
    needs no resolving (that costs more than the graph boundary's conversions themselves)."""
    from qrt.kernels import isa as _isa
    if isa is not None:
        _isa.resolve(isa)
    return 0


cdef inline int _rescale_table(object q, bint in_signed, uint8_t* table) except -1:
    """table[byte of x] = the low byte of clamp(zp_y + rounding_shift(x - zp_x, m, n), lo, hi)
    for one RescaleParams (int8 or uint8 in and out: the reference's astype wraps alike)."""
    cdef int32_t m, n, zx, zy, lo, hi, v
    cdef int64_t w
    cdef bint int8_range
    cdef int k
    r = q.out
    cdef const int32_t[::1] mv = r.multiplier
    cdef const int32_t[::1] nv = r.shift
    if mv.shape[0] != 1 or nv.shape[0] != 1:
        raise ValueError(f"requantization needs one multiplier and shift, got {mv.shape[0]} and {nv.shape[0]}")
    _check_mn(mv[0], nv[0], False, "requantization")
    if not (-128 <= r.lo <= r.hi <= 255):
        raise ValueError(f"clamp range [{r.lo}, {r.hi}] must lie inside [-128, 255]")
    _check_zp32(r.zero_point, "output zero point")
    if not (-128 <= q.input_zero_point <= 255):
        raise ValueError(f"input zero point {q.input_zero_point} must lie in [-128, 255]")
    m, n, zx, zy, lo, hi = mv[0], nv[0], q.input_zero_point, r.zero_point, r.lo, r.hi
    int8_range = -128 <= lo and hi <= 127  # requantize_one's contract; uint8 outputs go below
    for k in range(256):
        v = (<int8_t><uint8_t>k if in_signed else k) - zx
        if int8_range:
            table[k] = <uint8_t>requantize_one(v, m, n, zy, lo, hi)
        else:
            w = rounding_shift(v, m, n) + zy
            table[k] = <uint8_t>(lo if w < lo else (hi if w > hi else w))
    return 0


# ---------------------------------------------------------------------------- int16 forms

ctypedef fused act_t:
    # the activations of the integer forms: int8 (the int8 form) or int16 (the int16 form)
    int8_t
    int16_t


ctypedef fused rescaled_t:
    # what a rescale of int16 values writes: REQUANTIZE's int8, uint8 or int16, CONCAT's int16
    int8_t
    uint8_t
    int16_t


cdef struct Rescale16:
    # y = clamp(zy + rounding_shift(x - zx, m, n), lo, hi), checked by _rescale16_params
    int64_t zx, m, n, zy, lo, hi


cdef inline int64_t _clamp64(int64_t v, int64_t lo, int64_t hi) noexcept nogil:
    v = lo if v < lo else v
    return hi if v > hi else v


cdef inline int64_t _isqrt(int64_t d) noexcept nogil:
    """floor(sqrt(d)) for 0 <= d < 2^63 - 2^33 (LAYER_NORM, REDUCE L2): a double estimate
    corrected to the exact floor, as qrt/numerics.py isqrt, its reference."""
    cdef int64_t r = <int64_t>floor(sqrt(<double>d))
    while r * r > d:
        r -= 1
    while (r + 1) * (r + 1) <= d:
        r += 1
    return r


cdef inline int16_t _requant16(int64_t acc, int64_t m, int64_t n, int64_t zp, int64_t lo,
                               int64_t hi) noexcept nogil:
    """SPEC.md 4.2 into int16: clamp(zp + rounding_shift(acc, m, n), lo, hi), exact in 64 bits
    for |acc| <= 2^31 (the binding keeps [lo, hi] inside int16)."""
    return <int16_t>_clamp64(rounding_shift(acc, m, n) + zp, lo, hi)


cdef inline void _rescale16(const int16_t* x, rescaled_t* y, Py_ssize_t count,
                            const Rescale16* r) noexcept nogil:
    """y[i] = clamp(zy + rounding_shift(x[i] - zx, m, n), lo, hi) for int16 x: |x - zx| <= 65535,
    so every step is exact in 64 bits."""
    cdef Py_ssize_t i
    cdef int64_t zx = r.zx, m = r.m, n = r.n, zy = r.zy, lo = r.lo, hi = r.hi  # y may alias r
    for i in range(count):
        y[i] = <rescaled_t>_clamp64(rounding_shift(x[i] - zx, m, n) + zy, lo, hi)


cdef inline int _check_clamp(object lo, object hi, object dtype) except -1:
    """[lo, hi] must lie inside dtype's range (so that a clamped value is stored exactly)."""
    import numpy as np
    info = np.iinfo(dtype)
    if not (info.min <= lo <= hi <= info.max):
        raise ValueError(f"clamp range [{lo}, {hi}] must lie inside the {np.dtype(dtype)} range "
                         f"[{info.min}, {info.max}]")
    return 0


cdef inline int _check_zp_in(object zp, object dtype, str what) except -1:
    import numpy as np
    info = np.iinfo(dtype)
    if not (info.min <= zp <= info.max):
        raise ValueError(f"{what} {zp} must lie in [{info.min}, {info.max}] ({np.dtype(dtype)})")
    return 0


cdef inline int _rescale16_params(object q, object in_dtype, object out_dtype, Rescale16* r) except -1:
    """One RescaleParams (REQUANTIZE, a CONCAT input) for an input of in_dtype and an output of
    out_dtype (int8, uint8 or int16 each), checked so that every step is exact in 64 bits: one
    multiplier in [0, 2^31) with a shift in [1, 62], the input zero point in its dtype's range,
    [lo, hi] inside the output's, the output zero point in int32."""
    out = q.out
    cdef const int32_t[::1] mv = out.multiplier
    cdef const int32_t[::1] nv = out.shift
    if mv.shape[0] != 1 or nv.shape[0] != 1:
        raise ValueError(f"requantization needs one multiplier and shift, got {mv.shape[0]} and {nv.shape[0]}")
    _check_mn(mv[0], nv[0], False, "requantization")
    _check_clamp(out.lo, out.hi, out_dtype)
    _check_zp32(out.zero_point, "output zero point")
    _check_zp_in(q.input_zero_point, in_dtype, "input zero point")
    r.zx, r.m, r.n, r.zy, r.lo, r.hi = q.input_zero_point, mv[0], nv[0], out.zero_point, out.lo, out.hi
    return 0


cdef inline void _rescale_table16(const Rescale16* r, bint in_signed, int16_t* table) noexcept:
    """table[byte of x] = the rescale of an int8 (in_signed) or uint8 x into int16."""
    cdef int k
    cdef int64_t v
    for k in range(256):
        v = (<int8_t><uint8_t>k if in_signed else k) - r.zx
        table[k] = <int16_t>_clamp64(rounding_shift(v, r.m, r.n) + r.zy, r.lo, r.hi)
