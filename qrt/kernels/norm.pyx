# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""LAYER_NORM, int8 -> int8 over the last dimension (reference: qrt/ops/layer_norm.py, bit for
bit; SPEC.md 2.13.22): per row, S = sum d and Q = sum d^2 of d = x - zp_x, r = isqrt((C Q - S^2) 2^14
+ E), then n = round((C d - S) 2^22 / r) (ties away from 0) and y = clamp(offset[c] + ((n m[c] +
2^(s[c]-1)) >> s[c])), all in 64-bit integers. isqrt is a double estimate corrected to the
exact floor. `isa` is checked and otherwise unused (one C path), `threads` ignored."""
import numpy as np

from libc.math cimport floor, sqrt
from libc.stdint cimport int8_t, int64_t

from qrt.kernels.common cimport _check_isa, _in_bytes, _out_bytes
from qrt.kernels.plan cimport Step

from qrt.kernels import Kernel
from qrt.ops import layer_norm as _spec

cdef int FRACTION_BITS = _spec.FRACTION_BITS
cdef int ROOT_BITS = _spec.ROOT_BITS
MAX_CHANNELS = _spec.MAX_CHANNELS


cdef inline int64_t _isqrt(int64_t d) noexcept nogil:
    cdef int64_t r = <int64_t>floor(sqrt(<double>d))
    while r * r > d:
        r -= 1
    while (r + 1) * (r + 1) <= d:
        r += 1
    return r


cdef class LayerNormStep(Step):
    cdef const int8_t* x
    cdef int8_t* y
    cdef const int64_t* mult
    cdef const int64_t* shift
    cdef const int64_t* offset
    cdef Py_ssize_t rows, C
    cdef int64_t zp, eps, lo, hi

    cdef int run(self) noexcept nogil:
        cdef Py_ssize_t row, i
        cdef const int8_t* xr
        cdef int8_t* yr
        cdef int64_t d, s, q, r, t, n, v, C = self.C
        for row in range(self.rows):
            xr = self.x + row * C
            yr = self.y + row * C
            s = 0
            q = 0
            for i in range(C):
                d = xr[i] - self.zp
                s += d
                q += d * d
            r = _isqrt(((C * q - s * s) << (2 * ROOT_BITS)) + self.eps)
            for i in range(C):
                t = (C * (xr[i] - self.zp) - s) << (FRACTION_BITS + ROOT_BITS)
                if t >= 0:
                    n = (2 * t + r) // (2 * r)
                else:
                    n = -((-2 * t + r) // (2 * r))
                v = ((n * self.mult[i] + (<int64_t>1 << (self.shift[i] - 1))) >> self.shift[i]) + self.offset[i]
                yr[i] = <int8_t>(self.lo if v < self.lo else (self.hi if v > self.hi else v))
        return 0


def _params(a, n, what):
    a = np.ascontiguousarray(a, np.int64)
    if a.shape != (n,):
        raise ValueError(f"{what} has shape {a.shape}; expected ({n},)")
    return a


def bind_layer_norm(ins, p, out, isa=None, threads=1):
    """LAYER_NORM as a Step: ins = [x [..., C] int8, gamma, beta] (their values are in p),
    out int8 of x's shape (ValueError on anything else)."""
    cdef LayerNormStep s = LayerNormStep.__new__(LayerNormStep)
    cdef const int64_t[::1] mv, sv, ov
    x = ins[0]
    for a, what in ((x, "x"), (out, "out")):
        if not isinstance(a, np.ndarray) or a.dtype != np.int8 or not a.flags.c_contiguous:
            raise ValueError(f"{what} must be a C-contiguous int8 array")
    if x.shape != out.shape or x.ndim < 1:
        raise ValueError(f"out has shape {out.shape}; expected x's {x.shape} (rank >= 1)")
    C = x.shape[x.ndim - 1]
    if C > MAX_CHANNELS:
        raise ValueError(f"{C} channels: at most {MAX_CHANNELS}")
    mult, shift, offset = (_params(v, C, w) for v, w in ((p.multiplier, "multiplier"), (p.shift, "shift"),
                                                        (p.offset, "offset")))
    if ((shift < 1) | (shift > 62)).any() or (np.abs(mult) >= 2**31).any():
        raise ValueError("shifts must lie in [1, 62] and multipliers in (-2^31, 2^31)")
    if (np.abs(offset) >= 2**40).any() or not (1 <= p.eps_term <= 2**61):
        raise ValueError("offsets must be below 2^40 in magnitude and the epsilon term in [1, 2^61]")
    if not (-128 <= p.zp_x <= 127 and -128 <= p.lo <= p.hi <= 127):
        raise ValueError(f"zero point {p.zp_x} and clamp [{p.lo}, {p.hi}] must lie in int8")
    _check_isa(isa)
    mv, sv, ov = mult, shift, offset
    s.mult, s.shift, s.offset = &mv[0], &sv[0], &ov[0]
    s.C = C
    s.rows = x.size // C if C else 0
    s.zp, s.eps, s.lo, s.hi = p.zp_x, p.eps_term, p.lo, p.hi
    s.x, s.y = <const int8_t*>_in_bytes(x, "x"), <int8_t*>_out_bytes(out)
    if s.y == NULL:
        s.rows = 0
    s.keep = (x, out, mult, shift, offset)
    return s


def layer_norm(ins, p, out, isa=None, threads=1):
    """LAYER_NORM once: bind and run (see bind_layer_norm)."""
    bind_layer_norm(ins, p, out, isa, threads)()


KERNELS = {
    "layer_norm": Kernel(layer_norm, bind_layer_norm),
}
