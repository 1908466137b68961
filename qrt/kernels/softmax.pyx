# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The row normalisations: LAYER_NORM (at the end) and the SOFTMAX kernel, int8 in and out along any axis: e = exp_table[max - x] (the table made
by prepare, qrt/ops/softmax.py), y = clamp(((e << 8) + total / 2) // total - 128), in 64-bit
integers. Bit-exact with the reference (SPEC.md sections 2.13 and 4). Its int16 form
(softmax_int16, SPEC.md 4.6): a 4097-entry table interpolated 16 differences apart,
y = clamp(((e << 15) + total / 2) // total, 0, 32767).

Both forms are one loop over a fused element type (_softmax_rows): only the exp lookup and the
final division differ. Used in two steps, as in qrt/kernels/elementwise.pyx: bind_softmax(ins,
p, out, isa=None, threads=1) -> Step checks shapes and the table once (ValueError), keeps raw
pointers and makes the per-column scratch rows; step.run() then only loops, without Python or
allocation.
softmax(ins, p, out) binds and runs once. `isa` and `threads` are accepted and ignored (a named
path is still checked). The bind-time helpers are common.pxd's.
"""
import numpy as np

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint64_t

from qrt.kernels.common cimport _check_isa, _check_same_shape, _in_bytes, _isqrt, _out_bytes
from qrt.kernels.plan cimport Step

from qrt import numerics
from qrt.kernels import Kernel
from qrt.ops import layer_norm as _spec

cdef int64_t INT32_MAX = numerics.INT32_MAX
cdef Py_ssize_t TABLE_16 = numerics.SOFTMAX_TABLE_16
cdef int STEP_BITS_16 = numerics.SOFTMAX_STEP_BITS_16
cdef int64_t EXP_ONE_16 = 1 << numerics.SOFTMAX_EXP_BITS_16


# ---------------------------------------------------------------------------- SOFTMAX

ctypedef fused act_t:
    int8_t
    int16_t


cdef inline int64_t _exp16(const int64_t* tab, int64_t d) noexcept nogil:
    """E[j] + (((E[j+1] - E[j]) * r + 8) >> 4), j = d >> 4, r = d & 15: |E[j+1] - E[j]| * 15 < 2^34,
    and >> of a negative int64 is the arithmetic (flooring) shift on the compilers qrt supports."""
    cdef int64_t j = d >> STEP_BITS_16
    cdef int64_t r = d & ((1 << STEP_BITS_16) - 1)
    return tab[j] + (((tab[j + 1] - tab[j]) * r + (1 << (STEP_BITS_16 - 1))) >> STEP_BITS_16)


cdef inline int64_t _exp(const int64_t* tab, int64_t d, act_t* kind) noexcept nogil:
    """The exp term of a difference d = max - x: the int8 form's table entry, or the int16
    form's interpolation (kind only selects the form)."""
    if act_t is int8_t:
        return tab[d]
    else:
        return _exp16(tab, d)


cdef extern from *:
    ctypedef unsigned long long u128 "unsigned __int128"


cdef inline uint64_t _reciprocal(int64_t total) noexcept nogil:
    """floor(2^64 / total) for total >= 2 (0 for 1, which _divide handles apart)."""
    return <uint64_t>((<u128>1 << 64) // <u128>total) if total > 1 else 0


cdef inline int64_t _divide(int64_t n, int64_t total, uint64_t inv) noexcept nogil:
    """floor(n / total) for 0 <= n < 2^63 without a division: n inv / 2^64 is at most 1 below
    it (inv <= 2^64 / total, n < 2^64), so one correction step makes it exact."""
    cdef int64_t q
    if total == 1:
        return n
    q = <int64_t>((<u128>n * inv) >> 64)
    if (q + 1) * total <= n:
        q += 1
    return q


cdef inline act_t _share(int64_t e, int64_t total, uint64_t inv, act_t* kind) noexcept nogil:
    """y of one element: the reference's floor division (total >= tab[0] > 0, both terms >= 0),
    by a reciprocal taken once per row; the sums stay below 2^62 and the shifted term below
    2^63 (int8: length < 2^31, entries <= 2^31; int16: entries <= 2^30)."""
    cdef int64_t q
    if act_t is int8_t:
        q = _divide((e << 8) + (total >> 1), total, inv) - 128
        return <int8_t>(127 if q > 127 else q)  # q >= -128 as e >= 0
    else:
        q = _divide((e << 15) + (total >> 1), total, inv)
        return <int16_t>(32767 if q > 32767 else q)  # q >= 0 as e >= 0


cdef void _softmax_rows(const act_t* xv, act_t* ov, const int64_t* tab, Py_ssize_t outer,
                        Py_ssize_t length, Py_ssize_t inner, int32_t* mxs, int64_t* totals,
                        uint64_t* invs) noexcept nogil:
    cdef Py_ssize_t o, k, j, i, base
    cdef int64_t mx, total
    cdef uint64_t inv
    cdef act_t* kind = NULL
    if inner == 1:
        for o in range(outer):
            base = o * length
            mx = xv[base]
            for k in range(1, length):
                if xv[base + k] > mx:
                    mx = xv[base + k]
            total = 0
            for k in range(length):
                total += _exp(tab, mx - xv[base + k], kind)
            inv = _reciprocal(total)
            for k in range(length):
                ov[base + k] = _share(_exp(tab, mx - xv[base + k], kind), total, inv, kind)
        return
    for o in range(outer):
        base = o * length * inner
        for j in range(inner):
            mxs[j] = xv[base + j]
        for k in range(1, length):
            i = base + k * inner
            for j in range(inner):
                if xv[i + j] > mxs[j]:
                    mxs[j] = xv[i + j]
        for j in range(inner):
            totals[j] = 0
        for k in range(length):
            i = base + k * inner
            for j in range(inner):
                totals[j] += _exp(tab, mxs[j] - xv[i + j], kind)
        for j in range(inner):
            invs[j] = _reciprocal(totals[j])
        for k in range(length):
            i = base + k * inner
            for j in range(inner):
                ov[i + j] = _share(_exp(tab, mxs[j] - xv[i + j], kind), totals[j], invs[j], kind)


cdef inline bint _keeps(const void* mask, bint mask64, Py_ssize_t at, bint zero_keeps) noexcept nogil:
    cdef int64_t v = (<const int64_t*>mask)[at] if mask64 else (<const int32_t*>mask)[at]
    return (v == 0) if zero_keeps else (v != 0)


cdef void _softmax_masked_rows(const act_t* xv, act_t* ov, const int64_t* tab, Py_ssize_t outer,
                               Py_ssize_t length, const void* mask, bint mask64, const int64_t* moff,
                               Py_ssize_t mstep, bint zero_keeps) noexcept nogil:
    """Along the last axis, over the elements the mask keeps (SPEC.md 2.13.15): the others get
    e = 0; a row that keeps none is uniform (every element, d = 0)."""
    cdef Py_ssize_t o, k, base, m
    cdef int64_t mx, total, e
    cdef uint64_t inv
    cdef bint any_kept
    cdef act_t* kind = NULL
    for o in range(outer):
        base = o * length
        m = moff[o]
        any_kept = False
        mx = 0
        for k in range(length):
            if _keeps(mask, mask64, m + k * mstep, zero_keeps):
                if not any_kept or xv[base + k] > mx:
                    mx = xv[base + k]
                any_kept = True
        total = 0
        for k in range(length):
            if not any_kept:
                total += _exp(tab, 0, kind)
            elif _keeps(mask, mask64, m + k * mstep, zero_keeps):
                total += _exp(tab, mx - xv[base + k], kind)
        inv = _reciprocal(total)
        for k in range(length):
            if not any_kept:
                e = _exp(tab, 0, kind)
            elif _keeps(mask, mask64, m + k * mstep, zero_keeps):
                e = _exp(tab, mx - xv[base + k], kind)
            else:
                e = 0
            ov[base + k] = _share(e, total, inv, kind)


cdef class SoftmaxStep(Step):
    cdef const void* x
    cdef void* o
    cdef bint int16
    cdef const int64_t* tab
    cdef Py_ssize_t outer, length, inner
    cdef int32_t* mxs  # inner > 1: per-column maxima and totals (bind-time rows)
    cdef int64_t* totals
    cdef uint64_t* invs  # and the totals' reciprocals
    cdef const void* mask  # NULL, or the mask (int32 / int64) read at moff[row] + k * mstep
    cdef bint mask64, zero_keeps
    cdef const int64_t* moff
    cdef Py_ssize_t mstep

    cdef int run(self) noexcept nogil:
        if self.mask != NULL:
            if self.int16:
                _softmax_masked_rows(<const int16_t*>self.x, <int16_t*>self.o, self.tab, self.outer, self.length,
                                     self.mask, self.mask64, self.moff, self.mstep, self.zero_keeps)
            else:
                _softmax_masked_rows(<const int8_t*>self.x, <int8_t*>self.o, self.tab, self.outer, self.length,
                                     self.mask, self.mask64, self.moff, self.mstep, self.zero_keeps)
            return 0
        if self.int16:
            _softmax_rows(<const int16_t*>self.x, <int16_t*>self.o, self.tab, self.outer, self.length,
                          self.inner, self.mxs, self.totals, self.invs)
        else:
            _softmax_rows(<const int8_t*>self.x, <int8_t*>self.o, self.tab, self.outer, self.length,
                          self.inner, self.mxs, self.totals, self.invs)
        return 0


def _bind(ins, p, out, isa, bint int16):
    """Both forms' Step: shapes, the table's size and entries checked once (ValueError)."""
    cdef SoftmaxStep s = SoftmaxStep.__new__(SoftmaxStep)
    cdef Py_ssize_t axis, rank, k
    cdef int32_t[::1] mxs
    cdef int64_t[::1] totals
    cdef uint64_t[::1] invs
    cdef int64_t top = EXP_ONE_16 if int16 else INT32_MAX + 1
    cdef Py_ssize_t size = TABLE_16 if int16 else 256
    dtype = np.int16 if int16 else np.int8
    x = ins[0]
    _check_same_shape(x, out, "input")
    for a, what in ((x, "input"), (out, "output")):
        if np.asarray(a).dtype != dtype:
            raise ValueError(f"the {what} must be {np.dtype(dtype).name}, got {np.asarray(a).dtype}")
    shape = x.shape
    rank = len(shape)
    axis = p.axis
    if not (0 <= axis < rank):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    tab_arr = p.exp_table
    if tab_arr.shape != (size,):
        raise ValueError(f"exp table has shape {tab_arr.shape}; expected ({size},)")
    cdef const int64_t[::1] tab = tab_arr
    for k in range(size):
        if not (0 <= tab[k] <= top):
            raise ValueError(f"exp table entry {k} = {tab[k]} must lie in [0, 2^{30 if int16 else 31}]")
    if tab[0] <= 0:
        raise ValueError("exp table entry 0 must be > 0 (it is the largest element's term)")
    if int16 and shape[axis] > INT32_MAX:
        raise ValueError(f"axis length {shape[axis]} must be < 2^31")
    _check_isa(isa)
    s.int16 = int16
    s.outer = 1
    for k in range(axis):
        s.outer *= shape[k]
    s.length = shape[axis]
    s.inner = 1
    for k in range(axis + 1, rank):
        s.inner *= shape[k]
    s.keep = (x, out, tab_arr)
    s.x, s.o, s.tab = _in_bytes(x, "input"), _out_bytes(out), &tab[0]
    if s.o == NULL:
        s.outer = 0
        return s
    if s.inner > 1:
        mxs_arr, totals_arr, invs_arr = (np.empty(s.inner, d) for d in (np.int32, np.int64, np.uint64))
        mxs, totals, invs = mxs_arr, totals_arr, invs_arr
        s.mxs, s.totals, s.invs = &mxs[0], &totals[0], &invs[0]
        s.keep += (mxs_arr, totals_arr, invs_arr)
    if len(ins) > 1 and ins[1] is not None:
        _bind_mask(s, ins[1], shape, axis, p)
    return s


cdef _bind_mask(SoftmaxStep s, mask, tuple shape, Py_ssize_t axis, p):
    """The mask's reading plan: its offset at each row of x (broadcast dimensions step 0)."""
    cdef int64_t[::1] mo
    if not isinstance(mask, np.ndarray) or mask.dtype not in (np.int32, np.int64) or not mask.flags.c_contiguous:
        raise ValueError("the mask must be a C-contiguous int32 or int64 array")
    rank = len(shape)
    if axis != rank - 1:
        raise ValueError("a masked softmax runs along the last dimension")
    if mask.ndim != rank or any(a not in (b, 1) for a, b in zip(mask.shape, shape)):
        raise ValueError(f"mask of shape {mask.shape} does not broadcast to x {shape}")
    strides = [0] * rank
    st = 1
    for k in range(rank - 1, -1, -1):
        strides[k] = 0 if mask.shape[k] == 1 else st
        st *= mask.shape[k]
    lead = shape[:rank - 1]
    idx = np.indices(lead, dtype=np.int64).reshape(len(lead), -1) if lead else np.zeros((0, 1), np.int64)
    moff_arr = np.ascontiguousarray((idx * np.array(strides[:rank - 1], np.int64)[:, None]).sum(axis=0), np.int64)
    if moff_arr.size == 0:
        moff_arr = np.zeros(1, np.int64)
    mo = moff_arr
    s.moff = &mo[0]
    s.mstep = strides[rank - 1]
    s.mask64 = mask.dtype == np.int64
    s.zero_keeps = bool(p.mask_zero_keeps)
    s.mask = <const void*>_in_bytes(mask, "mask")
    s.keep += (mask, moff_arr)


def bind_softmax(ins, p, out, isa=None, threads=1):
    """SOFTMAX along p.axis as a Step: e = exp_table[max - x], y = clamp(((e << 8) + total / 2)
    // total - 128). Reference: qrt/ops/softmax.py."""
    return _bind(ins, p, out, isa, False)


def softmax(ins, p, out, isa=None, threads=1):
    """SOFTMAX once: bind and run (see bind_softmax)."""
    bind_softmax(ins, p, out, isa, threads)()


def bind_softmax_int16(ins, p, out, isa=None, threads=1):
    """SOFTMAX's int16 form along p.axis as a Step: e interpolated in the 4097-entry exp_table
    (entries in [0, 2^30], the first > 0), y = clamp(((e << 15) + total / 2) // total, 0, 32767).
    Reference: qrt/ops/softmax.py reference_int16."""
    return _bind(ins, p, out, isa, True)


def softmax_int16(ins, p, out, isa=None, threads=1):
    """SOFTMAX's int16 form once: bind and run (see bind_softmax_int16)."""
    bind_softmax_int16(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- LAYER_NORM
#
# int8 -> int8 over the last dimension (reference: qrt/ops/layer_norm.py, bit for bit; SPEC.md
# 2.13.22): per row, S = sum d and Q = sum d^2 of d = x - zp_x, r = isqrt((C Q - S^2) 2^14 + E),
# then n = round((C d - S) 2^22 / r) (ties away from 0) and y = clamp(offset[c] + ((n m[c] +
# 2^(s[c]-1)) >> s[c])), all in 64-bit integers; S = 0 for RMSNorm. isqrt is a double estimate corrected to the exact
# floor. Like SOFTMAX, a normalisation along the rows; `isa` checked, `threads` ignored.

MAX_CHANNELS = _spec.MAX_CHANNELS
cdef int ROOT_BITS = _spec.ROOT_BITS
cdef int ROOT_BITS_16 = _spec.ROOT_BITS_16


cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil


cdef extern from "<math.h>" nogil:
    double rint(double)
    double ldexp(double, int)


cdef void _ln_rows(const act_t* x, act_t* y, Py_ssize_t rows, Py_ssize_t C, int64_t zp, int64_t eps, double eps_unit,
                   int frac_bits, bint rms, const int64_t* mult, const int64_t* shift, const int64_t* offset, int64_t lo,
                   int64_t hi) noexcept nogil:
    cdef Py_ssize_t row, i
    cdef const act_t* xr
    cdef act_t* yr
    cdef int64_t d, s, q, r, t, n, v, a, e
    cdef int bits, length
    cdef double u
    cdef uint64_t inv
    for row in range(rows):
        xr = x + row * C
        yr = y + row * C
        s = 0
        q = 0
        for i in range(C):
            d = xr[i] - zp
            s += d
            q += d * d
        if rms:
            s = 0
        a = C * q - s * s
        bits = ROOT_BITS
        e = eps
        if act_t is int16_t:  # as many fraction bits as keep a 2^(2 bits) below 2^61
            length = 64 - __builtin_clzll(<unsigned long long>(a + eps)) if a + eps > 0 else 0
            bits = (61 - length) // 2
            bits = 0 if bits < 0 else (ROOT_BITS_16 if bits > ROOT_BITS_16 else bits)
            u = ldexp(eps_unit, 2 * bits)
            e = <int64_t>rint(u if u < 2.0**61 else 2.0**61)
            if e < 1:
                e = 1
        r = _isqrt((a << (2 * bits)) + e)
        inv = _reciprocal(2 * r)  # r >= 1: D >= 1
        for i in range(C):
            t = (C * (xr[i] - zp) - s) << (frac_bits + bits)
            if t >= 0:
                n = _divide(2 * t + r, 2 * r, inv)
            else:
                n = -_divide(-2 * t + r, 2 * r, inv)
            v = ((n * mult[i] + (<int64_t>1 << (shift[i] - 1))) >> shift[i]) + offset[i]
            yr[i] = <act_t>(lo if v < lo else (hi if v > hi else v))


cdef class LayerNormStep(Step):
    cdef const void* x
    cdef void* y
    cdef const int64_t* mult
    cdef const int64_t* shift
    cdef const int64_t* offset
    cdef Py_ssize_t rows, C
    cdef int64_t zp, eps, lo, hi
    cdef double eps_unit
    cdef int frac_bits  # n's
    cdef bint rms, wide  # RMSNorm (S = 0); int16 activations

    cdef int run(self) noexcept nogil:
        if self.wide:
            _ln_rows(<const int16_t*>self.x, <int16_t*>self.y, self.rows, self.C, self.zp, self.eps, self.eps_unit,
                     self.frac_bits, self.rms, self.mult, self.shift, self.offset, self.lo, self.hi)
        else:
            _ln_rows(<const int8_t*>self.x, <int8_t*>self.y, self.rows, self.C, self.zp, self.eps, self.eps_unit,
                     self.frac_bits, self.rms, self.mult, self.shift, self.offset, self.lo, self.hi)
        return 0


def _params(a, n, what):
    a = np.ascontiguousarray(a, np.int64)
    if a.shape != (n,):
        raise ValueError(f"{what} has shape {a.shape}; expected ({n},)")
    return a


def bind_layer_norm(ins, p, out, isa=None, threads=1):
    """LAYER_NORM as a Step: ins = [x [..., C] int8 or int16, gamma, beta] (their values are in
    p), out of x's dtype and shape (ValueError on anything else)."""
    cdef LayerNormStep s = LayerNormStep.__new__(LayerNormStep)
    cdef const int64_t[::1] mv, sv, ov
    x = ins[0]
    for a, what in ((x, "x"), (out, "out")):
        if not isinstance(a, np.ndarray) or a.dtype not in (np.int8, np.int16) or not a.flags.c_contiguous \
                or a.dtype != x.dtype:
            raise ValueError(f"{what} must be a C-contiguous int8 or int16 array, both of one dtype")
    if x.shape != out.shape or x.ndim < 1:
        raise ValueError(f"out has shape {out.shape}; expected x's {x.shape} (rank >= 1)")
    C = x.shape[x.ndim - 1]
    if C > MAX_CHANNELS:
        raise ValueError(f"{C} channels: at most {MAX_CHANNELS}")
    mult, shift, offset = (_params(v, C, w) for v, w in ((p.multiplier, "multiplier"), (p.shift, "shift"),
                                                        (p.offset, "offset")))
    if ((shift < 1) | (shift > 62)).any() or (np.abs(mult) >= 2**31).any():
        raise ValueError("shifts must lie in [1, 62] and multipliers in (-2^31, 2^31)")
    wide = x.dtype == np.int16
    if (np.abs(offset) >= 2**40).any() or not ((0 if wide else 1) <= p.eps_term <= 2**61):
        raise ValueError("offsets must be below 2^40 in magnitude and the epsilon term in [1, 2^61] "
                         "([0, 2^61] for int16)")
    info = np.iinfo(x.dtype)
    if not (info.min <= p.zp_x <= info.max and info.min <= p.lo <= p.hi <= info.max) or (wide and p.zp_x):
        raise ValueError(f"zero point {p.zp_x} and clamp [{p.lo}, {p.hi}] must lie in {x.dtype} "
                         f"(int16: symmetric, zero point 0)")
    _check_isa(isa)
    mv, sv, ov = mult, shift, offset
    s.mult, s.shift, s.offset = &mv[0], &sv[0], &ov[0]
    s.C = C
    s.rows = x.size // C if C else 0
    s.zp, s.eps, s.lo, s.hi = p.zp_x, p.eps_term, p.lo, p.hi
    s.eps_unit = p.eps_unit
    if not (0.0 <= p.eps_unit < float("inf")):
        raise ValueError(f"the epsilon unit {p.eps_unit} must be finite and >= 0")
    s.rms, s.wide = p.rms, wide
    s.frac_bits = _spec.fraction_bits(x.dtype)
    s.x, s.y = _in_bytes(x, "x"), _out_bytes(out)
    if s.y == NULL:
        s.rows = 0
    s.keep = (x, out, mult, shift, offset)
    return s


def layer_norm(ins, p, out, isa=None, threads=1):
    """LAYER_NORM once: bind and run (see bind_layer_norm)."""
    bind_layer_norm(ins, p, out, isa, threads)()




KERNELS = {
    "layer_norm": Kernel(layer_norm, bind_layer_norm),
    "layer_norm_int16": Kernel(layer_norm, bind_layer_norm),
    "softmax": Kernel(softmax, bind_softmax),
    "softmax_int16": Kernel(softmax_int16, bind_softmax_int16),
}
