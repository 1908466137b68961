# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Pooling kernels: MAX_POOL_2D, AVERAGE_POOL_2D, MEAN and REDUCE on int8 activations, and their
int16 forms (SPEC.md 4.6: the same loops over int16 x and y, instantiated from Cython fused types).

References: qrt/ops/max_pool_2d.py, average_pool_2d.py, mean.py and reduce.py (SPEC.md sections
2.13.6-2.13.8, 2.13.25 and 4); every kernel here is bit-exact with its reference.

Each op is used in two steps, as in qrt/kernels/gemm.pyx: bind_NAME(ins, p, out, isa=None,
threads=1) -> Step checks every shape and parameter once (ValueError), keeps raw pointers to x
[N, H, W, C] (channels-last; MEAN: any rank <= 8) and to the preallocated C-contiguous output
(x's dtype), reduces the window or reduction walk to integers and owns the int32 row of sums;
step.run() then only loops, without Python or allocation. NAME(ins, p, out) binds and runs
once. `isa` picks the requantization path of the sums; `threads` is accepted and unused.

Integer only. Window and reduction sums are int32 (SPEC.md section 4.5 bounds them); each
sum is the reference's sum of (x - zp_x) with the zero-point term folded in as -count * zp_x,
which is the same integer. Requantization is SPEC.md section 4.2, in 64-bit arithmetic, a row
of sums at a time (qrt_requant1_row of simd/api.h, over the path's row of simd/requant.h: 16
lanes on avx512vnni and amx). The int16 forms requantize their sums into int16 with the
scalar rule (common.pxd _requant16) on every path; their window and reduction bounds are
count * (|zp_x| + 2^15) <= 2^31 - 1 (SPEC.md 4.6, zp_x = 0).
"""
import numpy as np

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t

from qrt.kernels.plan cimport Step

from qrt.kernels import Kernel, isa as _isa
from qrt.numerics import INT32_MAX, MAX_INPUT_MAGNITUDE, MAX_INT16_MAGNITUDE, REDUCE_L2_ROOT_BITS
from qrt.ops.window import out_size

from qrt.kernels.common cimport MAX_RANK, _clamp64, _isqrt, _requant16, act_t
from qrt.kernels.numerics cimport rounding_shift
from qrt.kernels.isa cimport qrt_requant_ops_for
from qrt.kernels.simd_requant cimport qrt_requant1_row, qrt_requant_ops, qrt_requant_select



# ------------------------------------------------------------------------------------------
# Parameter checks (at bind time, before any memory is touched)

cdef object _single_input(ins, str op):
    if len(ins) != 1:
        raise ValueError(f"{op} takes one input, got {len(ins)}")
    return ins[0]


cdef void _check_c_contiguous(a, object dtype, str what) except *:
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{what} must be {np.dtype(dtype)}, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")


cdef int64_t _magnitude(object zp, object dtype, str op) except -1:
    """The largest |x - zp| a sum may add (the zero point folded in as -count * zp, so each
    partial sum stays within count * (|zp| + the largest |x|)): 255 for int8 (SPEC.md 4.5),
    |zp| + 2^15 for int16 (4.6; 2^15 with its zero point 0). The zero point must lie in dtype."""
    info = np.iinfo(dtype)
    if not (info.min <= zp <= info.max):
        raise ValueError(f"{op}: input zero point {zp} must lie in [{info.min}, {info.max}]")
    return MAX_INPUT_MAGNITUDE if dtype == np.int8 else abs(zp) - info.min


cdef void _check_requant(r, Py_ssize_t entries, str op, object dtype=np.int8) except *:
    """The Requant's multiplier/shift arrays must hold `entries` valid (m, n) pairs, the clamp
    range and the zero point must lie in the output's dtype (so no int64 step can overflow)."""
    info = np.iinfo(dtype)
    if len(r.multiplier) != entries or len(r.shift) != entries:
        raise ValueError(f"{op}: the requantization needs {entries} multiplier/shift entries, "
                         f"got {len(r.multiplier)}/{len(r.shift)}")
    if not (info.min <= r.lo <= r.hi <= info.max):
        raise ValueError(f"{op}: clamp range [{r.lo}, {r.hi}] must lie inside [{info.min}, {info.max}]")
    if not (info.min <= r.zero_point <= info.max):
        raise ValueError(f"{op}: output zero point {r.zero_point} must lie in [{info.min}, {info.max}]")
    m = np.asarray(r.multiplier)
    n = np.asarray(r.shift)
    if entries and (m.min() < 0 or m.max() > INT32_MAX or n.min() < 1 or n.max() > 62):
        raise ValueError(f"{op}: shifts must lie in [1, 62] and multipliers in [0, 2^31)")


cdef tuple _pool_geometry(x, p, out, str op, int64_t magnitude=255):
    """Validate a pool's parameters and shapes (a window of sums of at most `magnitude` each);
    return (N, H, W, C, OH, OW)."""
    kh, kw = p.kernel
    sh, sw = p.stride
    top, left, bottom, right = p.pads
    if kh < 1 or kw < 1 or sh < 1 or sw < 1:
        raise ValueError(f"{op}: kernel {p.kernel} and stride {p.stride} must be >= 1")
    if min(top, left, bottom, right) < 0 or max(top, bottom) >= kh or max(left, right) >= kw:
        raise ValueError(f"{op}: pads {p.pads} must be >= 0 and smaller than the {kh}x{kw} window")
    if kh * kw * magnitude > INT32_MAX:
        raise ValueError(f"{op}: a {kh}x{kw} window can overflow the int32 accumulator")
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be [N, H, W, C], got shape {x.shape}")
    n, h, w, c = x.shape
    if h < 1 or w < 1:
        raise ValueError(f"{op}: input {x.shape} has an empty spatial dimension")
    oh, ow = out_size(h, top, bottom, kh, 1, sh), out_size(w, left, right, kw, 1, sw)
    if oh < 1 or ow < 1:
        raise ValueError(f"{op}: the {kh}x{kw} window is larger than the padded input {x.shape}")
    if tuple(out.shape) != (n, oh, ow, c):
        raise ValueError(f"{op}: output has shape {tuple(out.shape)}; input {tuple(x.shape)} with "
                         f"kernel {p.kernel}, stride {p.stride}, pads {p.pads} gives {(n, oh, ow, c)}")
    return n, h, w, c, oh, ow


# ------------------------------------------------------------------------------------------
# MAX_POOL_2D and AVERAGE_POOL_2D

cdef inline void _window_span(Py_ssize_t o, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t k,
                              Py_ssize_t size, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the input rows (or columns) of output position o's window, padding cut off."""
    lo[0] = o * stride - pad
    hi[0] = lo[0] + k
    if lo[0] < 0:
        lo[0] = 0
    if hi[0] > size:
        hi[0] = size


# The channel loops on their own: gcc vectorises them better there than inside the window
# loops (max pool about 8 % faster).
cdef inline void _max_into(act_t* y, const act_t* x, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(C):
        y[c] = x[c] if x[c] > y[c] else y[c]


cdef inline void _add_into(int32_t* acc, const act_t* x, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(C):
        acc[c] += x[c]


cdef inline void _requant_row(const qrt_requant_ops* rq, const int32_t* acc, Py_ssize_t count,
                              int32_t m, int32_t n, int32_t zp, int32_t lo, int32_t hi,
                              act_t* y) noexcept nogil:
    """A row of sums sharing one (m, n): the path's row for int8, the scalar rule for int16."""
    cdef Py_ssize_t i
    if act_t is int8_t:
        qrt_requant1_row(rq, acc, count, m, n, zp, lo, hi, y)
    else:
        for i in range(count):
            y[i] = _requant16(acc[i], m, n, zp, lo, hi)


cdef inline void _requant_at(act_t* y, int32_t acc, int32_t m, int32_t n, int32_t zp, int32_t lo,
                             int32_t hi) noexcept nogil:
    if act_t is int8_t:
        y[0] = qrt_requant_select(acc, m, n, zp, lo, hi)
    else:
        y[0] = _requant16(acc, m, n, zp, lo, hi)


cdef struct Pool:
    const void* x  # [N, H, W, C], int8 or int16 (int16)
    void* y  # [N, OH, OW, C], x's type
    Py_ssize_t N, H, W, C, OH, OW, KH, KW, SH, SW, TOP, LEFT  # N = 0: nothing to write
    bint int16


cdef int _bind_pool(Pool* g, ins, p, out, str op, object dtype, int64_t magnitude) except -1:
    x = _single_input(ins, op)
    n, h, w, c, oh, ow = _pool_geometry(x, p, out, op, magnitude)
    _check_c_contiguous(x, dtype, f"{op} input")
    _check_c_contiguous(out, dtype, f"{op} output")
    cdef const uint8_t[::1] xv = x.reshape(-1).view(np.uint8)
    cdef uint8_t[::1] yv = out.reshape(-1).view(np.uint8)
    g.N, g.H, g.W, g.C, g.OH, g.OW = (n if yv.shape[0] else 0), h, w, c, oh, ow
    g.KH, g.KW, g.SH, g.SW = p.kernel[0], p.kernel[1], p.stride[0], p.stride[1]
    g.TOP, g.LEFT = p.pads[0], p.pads[1]
    g.int16 = dtype == np.int16
    if g.N:
        g.x, g.y = &xv[0], &yv[0]
    return 0


cdef void _max_pool(const Pool* gp, const act_t* x, act_t* yp) noexcept nogil:
    cdef Pool g = gp[0]  # locals: every store may alias a field read through the step
    cdef Py_ssize_t C = g.C, n, oh, ow, h, w, c, h0, h1, w0, w1
    cdef const act_t* row
    for n in range(g.N):
        for oh in range(g.OH):
            _window_span(oh, g.SH, g.TOP, g.KH, g.H, &h0, &h1)
            for ow in range(g.OW):
                _window_span(ow, g.SW, g.LEFT, g.KW, g.W, &w0, &w1)
                row = x + ((n * g.H + h0) * g.W + w0) * C
                for c in range(C):  # the first position of the window: never padding
                    yp[c] = row[c]
                for h in range(h0, h1):
                    row = x + (n * g.H + h) * g.W * C
                    for w in range(w0, w1):
                        _max_into(yp, row + w * C, C)
                yp += C


cdef class MaxPoolStep(Step):
    cdef Pool g

    cdef int run(self) noexcept nogil:
        if self.g.int16:
            _max_pool(&self.g, <const int16_t*>self.g.x, <int16_t*>self.g.y)
        else:
            _max_pool(&self.g, <const int8_t*>self.g.x, <int8_t*>self.g.y)
        return 0


cdef MaxPoolStep _bind_max_pool(ins, p, out, isa, object dtype, int64_t magnitude):
    cdef MaxPoolStep s = MaxPoolStep.__new__(MaxPoolStep)
    _bind_pool(&s.g, ins, p, out, "MAX_POOL_2D", dtype, magnitude)
    _isa.resolve(isa)
    s.keep = (ins[0], out)
    return s


def bind_max_pool_2d(ins, p, out, isa=None, threads=1):
    """MAX_POOL_2D as a Step: y[n, oh, ow, c] = max of x over the window's non-padded positions
    (every window has at least one: pads < kernel and H, W >= 1). Reference:
    qrt/ops/max_pool_2d.py."""
    return _bind_max_pool(ins, p, out, isa, np.int8, MAX_INPUT_MAGNITUDE)


def max_pool_2d(ins, p, out, isa=None, threads=1):
    """MAX_POOL_2D once: bind and run (see bind_max_pool_2d)."""
    bind_max_pool_2d(ins, p, out, isa, threads)()


def bind_max_pool_2d_int16(ins, p, out, isa=None, threads=1):
    """MAX_POOL_2D of int16 activations as a Step (see bind_max_pool_2d; the window bound of
    SPEC.md 4.6, KH * KW * 2^15 <= 2^31 - 1, as the loader checks it)."""
    return _bind_max_pool(ins, p, out, isa, np.int16, MAX_INT16_MAGNITUDE)


def max_pool_2d_int16(ins, p, out, isa=None, threads=1):
    """int16 MAX_POOL_2D once: bind and run (see bind_max_pool_2d_int16)."""
    bind_max_pool_2d_int16(ins, p, out, isa, threads)()


cdef struct AvgPool:
    Pool g
    int32_t* acc  # C sums, owned through the step's keep
    const int32_t* mult  # by window count - 1
    const int32_t* shift
    int32_t zp_x, zp, lo, hi
    bint include_pad
    const qrt_requant_ops* rq  # the path's requantization (simd/requant.h; int8 outputs)


cdef void _average_pool(const AvgPool* a, const act_t* x, act_t* yp) noexcept nogil:
    cdef Pool g = a.g  # locals: every store may alias a field read through the step
    cdef Py_ssize_t C = g.C, n, oh, ow, h, w, c, h0, h1, w0, w1, count, k
    cdef int32_t* acc = a.acc
    cdef const int32_t* mult = a.mult
    cdef const int32_t* shift = a.shift
    cdef int32_t zp_x = a.zp_x, zp = a.zp, lo = a.lo, hi = a.hi, init
    cdef bint include_pad = a.include_pad
    cdef const qrt_requant_ops* rq = a.rq
    cdef const act_t* row
    for n in range(g.N):
        for oh in range(g.OH):
            _window_span(oh, g.SH, g.TOP, g.KH, g.H, &h0, &h1)
            for ow in range(g.OW):
                _window_span(ow, g.SW, g.LEFT, g.KW, g.W, &w0, &w1)
                count = (h1 - h0) * (w1 - w0)  # non-padded positions, >= 1
                init = -<int32_t>count * zp_x  # padded positions contribute 0
                for c in range(C):
                    acc[c] = init
                for h in range(h0, h1):
                    row = x + (n * g.H + h) * g.W * C
                    for w in range(w0, w1):
                        _add_into(acc, row + w * C, C)
                k = g.KH * g.KW - 1 if include_pad else count - 1
                _requant_row(rq, acc, C, mult[k], shift[k], zp, lo, hi, yp)
                yp += C


cdef class AveragePoolStep(Step):
    cdef AvgPool a

    cdef int run(self) noexcept nogil:
        if self.a.g.int16:
            _average_pool(&self.a, <const int16_t*>self.a.g.x, <int16_t*>self.a.g.y)
        else:
            _average_pool(&self.a, <const int8_t*>self.a.g.x, <int8_t*>self.a.g.y)
        return 0


cdef AveragePoolStep _bind_average_pool(ins, p, out, isa, object dtype):
    cdef AveragePoolStep s = AveragePoolStep.__new__(AveragePoolStep)
    cdef AvgPool* a = &s.a
    magnitude = _magnitude(p.input_zero_point, dtype, "AVERAGE_POOL_2D")
    _bind_pool(&a.g, ins, p, out, "AVERAGE_POOL_2D", dtype, magnitude)
    r = p.out
    _check_requant(r, p.kernel[0] * p.kernel[1], "AVERAGE_POOL_2D", dtype)
    a.rq = qrt_requant_ops_for(_isa.resolve(isa))
    mult_arr = np.ascontiguousarray(r.multiplier, dtype=np.int32)
    shift_arr = np.ascontiguousarray(r.shift, dtype=np.int32)
    acc_arr = np.empty(max(a.g.C, 1), np.int32)
    cdef const int32_t[::1] mult = mult_arr
    cdef const int32_t[::1] shift = shift_arr
    cdef int32_t[::1] acc = acc_arr
    a.mult, a.shift, a.acc = &mult[0], &shift[0], &acc[0]
    a.include_pad = bool(p.count_include_pad)
    a.zp_x, a.zp, a.lo, a.hi = p.input_zero_point, r.zero_point, r.lo, r.hi
    s.keep = (ins[0], out, mult_arr, shift_arr, acc_arr)
    return s


def bind_average_pool_2d(ins, p, out, isa=None, threads=1):
    """AVERAGE_POOL_2D as a Step: y = requantize(sum over the window of (x - zp_x)) with the
    multiplier/shift of entry count - 1, count = KH*KW (count_include_pad) or the number of
    non-padded positions. Reference: qrt/ops/average_pool_2d.py."""
    return _bind_average_pool(ins, p, out, isa, np.int8)


def average_pool_2d(ins, p, out, isa=None, threads=1):
    """AVERAGE_POOL_2D once: bind and run (see bind_average_pool_2d)."""
    bind_average_pool_2d(ins, p, out, isa, threads)()


def bind_average_pool_2d_int16(ins, p, out, isa=None, threads=1):
    """AVERAGE_POOL_2D of int16 activations as a Step (see bind_average_pool_2d), the sums
    requantized into int16."""
    return _bind_average_pool(ins, p, out, isa, np.int16)


def average_pool_2d_int16(ins, p, out, isa=None, threads=1):
    """int16 AVERAGE_POOL_2D once: bind and run (see bind_average_pool_2d_int16)."""
    bind_average_pool_2d_int16(ins, p, out, isa, threads)()


# ------------------------------------------------------------------------------------------
# MEAN

cdef struct _Odometer:
    # Row-major walk over nd dimensions (sizes and element strides), last fastest.
    int nd
    Py_ssize_t size[MAX_RANK]
    Py_ssize_t stride[MAX_RANK]
    Py_ssize_t idx[MAX_RANK]


cdef inline Py_ssize_t _advance(_Odometer* od, Py_ssize_t off) noexcept nogil:
    """One odometer step: bump the index and return the offset of the next position."""
    cdef int d = od.nd - 1
    while d >= 0:
        od.idx[d] += 1
        off += od.stride[d]
        if od.idx[d] < od.size[d]:
            return off
        off -= od.idx[d] * od.stride[d]
        od.idx[d] = 0
        d -= 1
    return off


cdef void _mean_gap(const qrt_requant_ops* rq, const act_t* x, act_t* y, int32_t* acc, Py_ssize_t C,
                    Py_ssize_t n_out, Py_ssize_t out_stride, Py_ssize_t rows, Py_ssize_t row_stride,
                    int32_t init, int32_t m, int32_t n, int32_t zp, int32_t lo,
                    int32_t hi) noexcept nogil:
    """Fast path (the global average pool): output o sums `rows` rows of C contiguous values,
    rows row_stride apart, starting at x + o * out_stride."""
    cdef Py_ssize_t o, j, c
    cdef const act_t* xp
    for o in range(n_out):
        for c in range(C):
            acc[c] = init
        xp = x + o * out_stride
        for j in range(rows):
            for c in range(C):
                acc[c] += xp[c]
            xp += row_stride
        _requant_row(rq, acc, C, m, n, zp, lo, hi, y + o * C)


cdef void _mean_rows(const qrt_requant_ops* rq, const act_t* x, act_t* y, int32_t* acc, Py_ssize_t C,
                     _Odometer* kept, Py_ssize_t n_out, _Odometer* red, Py_ssize_t n_red,
                     int32_t init, int32_t m, int32_t n, int32_t zp, int32_t lo,
                     int32_t hi) noexcept nogil:
    """Innermost group kept: every output row of C values sums n_red rows of C values."""
    cdef Py_ssize_t o, j, c, koff = 0, roff
    cdef const act_t* xp
    for o in range(n_out):
        for c in range(C):
            acc[c] = init
        roff = 0
        for j in range(n_red):
            xp = x + koff + roff
            for c in range(C):
                acc[c] += xp[c]
            roff = _advance(red, roff)
        _requant_row(rq, acc, C, m, n, zp, lo, hi, y + o * C)
        koff = _advance(kept, koff)


cdef void _mean_runs(const act_t* x, act_t* y, Py_ssize_t L,
                     _Odometer* kept, Py_ssize_t n_out, _Odometer* red, Py_ssize_t n_red,
                     int32_t init, int32_t m, int32_t n, int32_t zp, int32_t lo,
                     int32_t hi) noexcept nogil:
    """Innermost group reduced: every output value sums n_red runs of L contiguous values."""
    cdef Py_ssize_t o, j, c, koff = 0, roff
    cdef const act_t* xp
    cdef int32_t s
    for o in range(n_out):
        s = init
        roff = 0
        for j in range(n_red):
            xp = x + koff + roff
            for c in range(L):
                s += xp[c]
            roff = _advance(red, roff)
        _requant_at(y + o, s, m, n, zp, lo, hi)
        koff = _advance(kept, koff)


cdef enum MeanMode:
    MEAN_EMPTY  # x is empty: nothing to write
    MEAN_GAP
    MEAN_ROWS
    MEAN_RUNS


cdef int L2_ROOT_BITS = REDUCE_L2_ROOT_BITS


cdef enum:  # REDUCE's functions (qrt.format.model.ReduceFunction); MEAN walks as SUM
    R_SUM = 0
    R_MAX = 1
    R_MIN = 2
    R_L2 = 3
    R_SUM_SQUARE = 4


cdef struct MeanWalk:
    # The walk of mean()'s docstring: `inner` contiguous values (C kept or L reduced), n_out
    # outputs over the kept groups, n_red positions over the reduced ones.
    const void* x  # int8 or int16 (int16)
    void* y  # x's type
    int32_t* acc  # inner sums (GAP, ROWS), owned through the step's keep
    int64_t* acc64  # REDUCE but SUM: inner (GAP, ROWS) or 1 (RUNS) folds, acc's memory
    MeanMode mode
    int function  # R_SUM for MEAN
    bint int16
    Py_ssize_t inner, n_out, n_red
    int32_t init, zp_x, m, sh, zp, lo, hi
    const qrt_requant_ops* rq  # the path's requantization (simd/requant.h; int8 outputs)
    _Odometer kept, red  # idx all 0: each run walks copies


cdef void _mean(const MeanWalk* s, const act_t* x, act_t* y) noexcept nogil:
    cdef _Odometer kept = s.kept, red = s.red
    if s.mode == MEAN_RUNS:
        _mean_runs(x, y, s.inner, &kept, s.n_out, &red, s.n_red, s.init, s.m, s.sh, s.zp, s.lo, s.hi)
    elif s.mode == MEAN_GAP:
        _mean_gap(s.rq, x, y, s.acc, s.inner, s.n_out, kept.stride[0] if kept.nd else 0,
                  red.size[0], red.stride[0], s.init, s.m, s.sh, s.zp, s.lo, s.hi)
    elif s.mode == MEAN_ROWS:
        _mean_rows(s.rq, x, y, s.acc, s.inner, &kept, s.n_out, &red, s.n_red,
                   s.init, s.m, s.sh, s.zp, s.lo, s.hi)


cdef inline void _fold(int function, int64_t* acc, const act_t* x, Py_ssize_t n, int64_t zp) noexcept nogil:
    """REDUCE but SUM, a row of n contiguous values into n folds: acc[i] = max(acc[i], x[i]),
    min(acc[i], x[i]) or acc[i] + (x[i] - zp)^2."""
    cdef Py_ssize_t i
    cdef int64_t d
    if function == R_MAX:
        for i in range(n):
            acc[i] = x[i] if x[i] > acc[i] else acc[i]
    elif function == R_MIN:
        for i in range(n):
            acc[i] = x[i] if x[i] < acc[i] else acc[i]
    else:
        for i in range(n):
            d = x[i] - zp
            acc[i] += d * d


cdef inline int64_t _fold_run(int function, int64_t a, const act_t* x, Py_ssize_t n, int64_t zp) noexcept nogil:
    """A run of n contiguous values into the one fold a (see _fold)."""
    cdef Py_ssize_t i
    cdef int64_t d
    if function == R_MAX:
        for i in range(n):
            a = x[i] if x[i] > a else a
    elif function == R_MIN:
        for i in range(n):
            a = x[i] if x[i] < a else a
    else:
        for i in range(n):
            d = x[i] - zp
            a += d * d
    return a


cdef inline act_t _finish(const MeanWalk* s, int64_t a, act_t* kind) noexcept nogil:
    """One output of REDUCE but SUM: a maximum or minimum clamped to [lo, hi]; the L2 root of a
    sum of squares (8 fraction bits, < 2^31 by the bind-time bound) or the sum of squares
    (< 2^31), requantized by SPEC.md 4.2."""
    if s.function == R_MAX or s.function == R_MIN:
        return <act_t>_clamp64(a, s.lo, s.hi)
    if s.function == R_L2:
        a = _isqrt(a << (2 * L2_ROOT_BITS))
    return <act_t>_clamp64(rounding_shift(a, s.m, s.sh) + s.zp, s.lo, s.hi)


cdef void _reduce(const MeanWalk* s, const act_t* x, act_t* y) noexcept nogil:
    """REDUCE but SUM over the walk of mean()'s docstring, kept inner groups (GAP, ROWS) as
    rows of `inner` folds, a reduced inner group (RUNS) as one fold per output."""
    cdef _Odometer kept = s.kept, red = s.red
    cdef Py_ssize_t o, j, c, koff = 0, roff, C = s.inner
    cdef int64_t* acc = s.acc64
    cdef int64_t zp_x = s.zp_x
    cdef int64_t start = -65536 if s.function == R_MAX else (65536 if s.function == R_MIN else 0)  # past int16
    cdef bint runs = s.mode == MEAN_RUNS
    for o in range(s.n_out):
        for c in range(1 if runs else C):
            acc[c] = start
        roff = 0
        for j in range(s.n_red):
            if runs:
                acc[0] = _fold_run(s.function, acc[0], x + koff + roff, C, zp_x)
            else:
                _fold(s.function, acc, x + koff + roff, C, zp_x)
            roff = _advance(&red, roff)
        if runs:
            y[o] = _finish(s, acc[0], y)
        else:
            for c in range(C):
                y[o * C + c] = _finish(s, acc[c], y)
        koff = _advance(&kept, koff)


cdef class MeanStep(Step):
    cdef MeanWalk w

    cdef int run(self) noexcept nogil:
        if self.w.mode == MEAN_EMPTY:
            return 0
        if self.w.function != R_SUM:
            if self.w.int16:
                _reduce(&self.w, <const int16_t*>self.w.x, <int16_t*>self.w.y)
            else:
                _reduce(&self.w, <const int8_t*>self.w.x, <int8_t*>self.w.y)
            return 0
        if self.w.int16:
            _mean(&self.w, <const int16_t*>self.w.x, <int16_t*>self.w.y)
        else:
            _mean(&self.w, <const int8_t*>self.w.x, <int8_t*>self.w.y)
        return 0


cdef void _odometer(_Odometer* od, list groups):
    cdef int i
    od.nd = len(groups)
    for i in range(MAX_RANK):
        od.size[i] = groups[i][1] if i < od.nd else 0
        od.stride[i] = groups[i][2] if i < od.nd else 0
        od.idx[i] = 0


cdef MeanStep _bind_mean(ins, p, out, isa, object dtype):
    """MEAN's params, or REDUCE's (with a function). The messages name both ops literally: a
    formatted name would cost the module about a kilobyte each."""
    cdef MeanStep step = MeanStep.__new__(MeanStep)
    cdef MeanWalk* s = &step.w
    cdef int32_t[::1] acc
    cdef int function = getattr(p, "function", R_SUM)
    x = _single_input(ins, "MEAN/REDUCE")
    _check_c_contiguous(x, dtype, "MEAN/REDUCE input")
    _check_c_contiguous(out, dtype, "MEAN/REDUCE output")
    shape = tuple(x.shape)
    rank = len(shape)
    if rank < 1 or rank > MAX_RANK:
        raise ValueError(f"MEAN/REDUCE: input rank {rank} must lie in [1, {MAX_RANK}]")
    axes = tuple(p.axes)
    if (not axes and not hasattr(p, "function")) or (axes and not (0 <= min(axes) and max(axes) < rank)) \
            or list(axes) != sorted(set(axes)):
        raise ValueError(f"MEAN/REDUCE: axes {axes} must be sorted, distinct and in [0, {rank})")
    reduced = set(axes)
    expect = tuple(1 if a in reduced else d for a, d in enumerate(shape) if p.keep_dims or a not in reduced)
    if tuple(out.shape) != expect:
        raise ValueError(f"MEAN/REDUCE: output has shape {tuple(out.shape)}; input {shape} reduced over "
                         f"{axes} (keep_dims={bool(p.keep_dims)}) gives {expect}")
    count = 1
    for a in axes:
        count *= shape[a]
    if count < 1:
        raise ValueError(f"MEAN/REDUCE: the reduced dimensions of {shape} are empty")
    if not R_SUM <= function <= R_SUM_SQUARE:
        raise ValueError("REDUCE: the function is not a ReduceFunction")
    zp_x = p.rescale.input_zero_point
    # the bounds of SPEC.md 4.5, 4.6 and 2.13.25 (in C): every sum, sum of squares and L2 root
    # stays below 2^31 (L2: count M^2 2^16 < 2^62); MAX and MIN sum nothing
    cdef int64_t n = count, mag = _magnitude(zp_x, dtype, "MEAN/REDUCE"), limit = n
    if function == R_SUM:
        limit = 2147483647 // mag
    elif function == R_SUM_SQUARE:
        limit = 2147483647 // (mag * mag)
    elif function == R_L2:
        limit = (((<int64_t>1) << (62 - 2 * L2_ROOT_BITS)) - 1) // (mag * mag)
    if n > limit:
        raise ValueError(f"MEAN/REDUCE: {count} values can overflow the accumulator")
    r = p.rescale.out
    _check_requant(r, 1, "MEAN/REDUCE", dtype)
    s.rq = qrt_requant_ops_for(_isa.resolve(isa))
    s.int16 = dtype == np.int16
    s.function = function
    step.keep = (x, out)
    if x.size == 0:
        s.mode = MEAN_EMPTY
        return step

    # Merge: groups [kept?, size, stride of the innermost dimension], built innermost first.
    groups = []
    last = None
    stride = 1
    for a in range(rank - 1, -1, -1):
        d = shape[a]
        if d != 1:
            kept = a not in reduced
            if last is not None and last[0] == kept and last[2] * last[1] == stride:
                last[1] *= d
            else:
                last = [kept, d, stride]
                groups.append(last)
        stride *= d
    inner_kept = not groups or groups[0][0]
    s.inner = groups[0][1] if groups else 1  # C (kept) or L (reduced)
    groups = groups[1:]
    groups.reverse()  # outermost first
    kept_groups = [g for g in groups if g[0]]
    red_groups = [g for g in groups if not g[0]]
    _odometer(&s.kept, kept_groups)
    _odometer(&s.red, red_groups)
    s.n_out = 1
    for g in kept_groups:
        s.n_out *= g[1]
    s.n_red = 1
    for g in red_groups:
        s.n_red *= g[1]
    if not inner_kept:
        s.mode = MEAN_RUNS
    elif len(kept_groups) <= 1 and len(red_groups) == 1:
        s.mode = MEAN_GAP
    else:
        s.mode = MEAN_ROWS
    s.init, s.zp_x = (-count * zp_x if function == R_SUM else 0), zp_x  # (the sums' bound keeps init in int32)
    s.m, s.sh, s.zp, s.lo, s.hi = r.multiplier[0], r.shift[0], r.zero_point, r.lo, r.hi
    cdef const uint8_t[::1] xv = x.reshape(-1).view(np.uint8)
    cdef uint8_t[::1] yv = out.reshape(-1).view(np.uint8)
    s.x, s.y = &xv[0], &yv[0]
    if function != R_SUM or s.mode != MEAN_RUNS:  # the int64 folds: int32 pairs (NumPy aligns them)
        acc_arr = np.empty((1 if s.mode == MEAN_RUNS else s.inner) * (1 if function == R_SUM else 2), np.int32)
        acc = acc_arr
        s.acc = &acc[0]
        s.acc64 = <int64_t*>s.acc
        step.keep += (acc_arr,)
    return step


def bind_mean(ins, p, out, isa=None, threads=1):
    """MEAN as a Step: y = requantize(sum over `axes` of (x - zp_x)), 1/count folded into the
    single multiplier. Reference: qrt/ops/mean.py. REDUCE's kernel too, given its params
    (qrt/ops/reduce.py, with a function; empty axes reduce nothing): SUM runs MEAN's loops
    with the multiplier s_x/s_y, MAX, MIN, L2 and SUM_SQUARE fold in int64 (_reduce) and
    finish one output at a time.

    Size-1 dimensions are dropped and adjacent kept/reduced dimensions merged, leaving
    alternating groups. If the innermost group is kept (C contiguous values, e.g. the global
    average pool, axes (1, 2) of [N, H, W, C]), rows of C are summed into an int32 vector;
    if it is reduced (L contiguous values), each output sums contiguous runs of L."""
    return _bind_mean(ins, p, out, isa, np.int8)


def mean(ins, p, out, isa=None, threads=1):
    """MEAN once: bind and run (see bind_mean)."""
    bind_mean(ins, p, out, isa, threads)()


def bind_mean_int16(ins, p, out, isa=None, threads=1):
    """MEAN of int16 activations as a Step (see bind_mean), the sums requantized into int16;
    count * 2^15 <= 2^31 - 1 (SPEC.md 4.6)."""
    return _bind_mean(ins, p, out, isa, np.int16)


def mean_int16(ins, p, out, isa=None, threads=1):
    """int16 MEAN once: bind and run (see bind_mean_int16)."""
    bind_mean_int16(ins, p, out, isa, threads)()


KERNELS = {
    "max_pool_2d": Kernel(max_pool_2d, bind_max_pool_2d),
    "average_pool_2d": Kernel(average_pool_2d, bind_average_pool_2d),
    "mean": Kernel(mean, bind_mean),
    "max_pool_2d_int16": Kernel(max_pool_2d_int16, bind_max_pool_2d_int16),
    "average_pool_2d_int16": Kernel(average_pool_2d_int16, bind_average_pool_2d_int16),
    "mean_int16": Kernel(mean_int16, bind_mean_int16),
    "reduce": Kernel(mean, bind_mean),  # MEAN's walk binds REDUCE's params too
    "reduce_int16": Kernel(mean_int16, bind_mean_int16),
}
