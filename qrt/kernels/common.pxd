# cython: language_level=3
"""What the elementwise, data-movement and SOFTMAX kernels (elementwise.pyx, movement.pyx,
softmax.pyx) share at bind time: flat views of the inputs and output, the shape, dtype,
zero-point and (multiplier, shift) checks, the named-path check of single-path ops, and the
256-entry rescale table (REQUANTIZE, MAXIMUM/MINIMUM, CONCAT) with the loop that applies one.

Inline functions only, so no module is built from this file; cimport them with
`from qrt.kernels.common cimport _flat_in, ...`. A .pxd holds no module-level imports, so the
functions that call NumPy or qrt.kernels.isa import it themselves (bind time only)."""
from libc.stdint cimport INT32_MAX, int8_t, int32_t, int64_t, uint8_t

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
