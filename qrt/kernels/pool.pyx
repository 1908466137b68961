# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Pooling kernels: MAX_POOL_2D, AVERAGE_POOL_2D and MEAN on int8 activations.

References: qrt/reference/ops.py max_pool_2d, average_pool_2d and mean (SPEC.md sections
2.13.6-2.13.8 and 4); every kernel here is bit-exact with its reference.

Calling convention (qrt/runtime/kernels.py): fn(ins, p, out) with ins = [x], p the parameters
of qrt/runtime/prepare.py and out the preallocated C-contiguous int8 output, filled in place.
Pools take x as [N, H, W, C] (channels-last); MEAN takes any rank <= 8.

Integer only. Window and reduction sums are int32 (SPEC.md section 4.5 bounds them); each
sum is the reference's sum of (x - zp_x) with the zero-point term folded in as -count * zp_x,
which is the same integer. Requantization is SPEC.md section 4.2, in 64-bit arithmetic
(requantize_one of qrt/kernels/numerics.pxd).
"""
import numpy as np

from libc.stdint cimport int8_t, int32_t, int64_t

from qrt.kernels.numerics cimport requantize_one

cdef enum:
    MAX_RANK = 8
cdef int64_t INT32_MAX = 2147483647
cdef int64_t MAX_INPUT_MAGNITUDE = 255  # |x - zp_x| for int8 activations


cdef inline void _requantize_row(const int32_t* acc, int8_t* y, Py_ssize_t count, int32_t m,
                                 int32_t n, int32_t zp, int32_t lo, int32_t hi) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(count):
        y[c] = requantize_one(acc[c], m, n, zp, lo, hi)


# ------------------------------------------------------------------------------------------
# Parameter checks (cheap, Python level, before any memory is touched)

cdef object _single_input(ins, str op):
    if len(ins) != 1:
        raise ValueError(f"{op} takes one input, got {len(ins)}")
    return ins[0]


cdef void _check_int8_c_contiguous(a, str what) except *:
    if a.dtype != np.int8:
        raise ValueError(f"{what} must be int8, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")


cdef void _check_requant(r, Py_ssize_t entries, str op) except *:
    """The Requant's multiplier/shift arrays must hold `entries` valid (m, n) pairs, the clamp
    range must lie in int8 and the zero point in int8 (so no int64 step can overflow)."""
    if len(r.multiplier) != entries or len(r.shift) != entries:
        raise ValueError(f"{op}: the requantization needs {entries} multiplier/shift entries, "
                         f"got {len(r.multiplier)}/{len(r.shift)}")
    if not (-128 <= r.lo <= r.hi <= 127):
        raise ValueError(f"{op}: clamp range [{r.lo}, {r.hi}] must lie inside [-128, 127]")
    if not (-128 <= r.zero_point <= 127):
        raise ValueError(f"{op}: output zero point {r.zero_point} must lie in [-128, 127]")
    m = np.asarray(r.multiplier)
    n = np.asarray(r.shift)
    if entries and (m.min() < 0 or m.max() > INT32_MAX or n.min() < 1 or n.max() > 62):
        raise ValueError(f"{op}: shifts must lie in [1, 62] and multipliers in [0, 2^31)")


cdef tuple _pool_geometry(x, p, out, str op):
    """Validate a pool's parameters and shapes; return (N, H, W, C, OH, OW)."""
    kh, kw = p.kernel
    sh, sw = p.stride
    top, left, bottom, right = p.pads
    if kh < 1 or kw < 1 or sh < 1 or sw < 1:
        raise ValueError(f"{op}: kernel {p.kernel} and stride {p.stride} must be >= 1")
    if min(top, left, bottom, right) < 0 or max(top, bottom) >= kh or max(left, right) >= kw:
        raise ValueError(f"{op}: pads {p.pads} must be >= 0 and smaller than the {kh}x{kw} window")
    if kh * kw * MAX_INPUT_MAGNITUDE > INT32_MAX:
        raise ValueError(f"{op}: a {kh}x{kw} window can overflow the int32 accumulator")
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be [N, H, W, C], got shape {x.shape}")
    n, h, w, c = x.shape
    if h < 1 or w < 1:
        raise ValueError(f"{op}: input {x.shape} has an empty spatial dimension")
    oh = (h + top + bottom - kh) // sh + 1
    ow = (w + left + right - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"{op}: the {kh}x{kw} window is larger than the padded input {x.shape}")
    if tuple(out.shape) != (n, oh, ow, c):
        raise ValueError(f"{op}: output has shape {tuple(out.shape)}; input {tuple(x.shape)} with "
                         f"kernel {p.kernel}, stride {p.stride}, pads {p.pads} gives {(n, oh, ow, c)}")
    return n, h, w, c, oh, ow


# ------------------------------------------------------------------------------------------
# MAX_POOL_2D

cdef inline void _window_span(Py_ssize_t o, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t k,
                              Py_ssize_t size, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the input rows (or columns) of output position o's window, padding cut off."""
    lo[0] = o * stride - pad
    hi[0] = lo[0] + k
    if lo[0] < 0:
        lo[0] = 0
    if hi[0] > size:
        hi[0] = size


def max_pool_2d(ins, p, out):
    """y[n, oh, ow, c] = max of x over the window's non-padded positions (every window has
    at least one: pads < kernel and H, W >= 1). Reference: qrt/reference/ops.py max_pool_2d."""
    x = _single_input(ins, "MAX_POOL_2D")
    n_, h_, w_, c_, oh_, ow_ = _pool_geometry(x, p, out, "MAX_POOL_2D")
    cdef const int8_t[:, :, :, ::1] xv = x
    cdef int8_t[:, :, :, ::1] yv = out
    cdef Py_ssize_t N = n_, H = h_, W = w_, C = c_, OH = oh_, OW = ow_
    cdef Py_ssize_t KH = p.kernel[0], KW = p.kernel[1], SH = p.stride[0], SW = p.stride[1]
    cdef Py_ssize_t TOP = p.pads[0], LEFT = p.pads[1]
    cdef Py_ssize_t n, oh, ow, h, w, c, h0, h1, w0, w1
    cdef const int8_t* xp
    cdef const int8_t* row
    cdef int8_t* yp
    cdef int8_t v
    if N * C == 0:
        return None
    with nogil:
        for n in range(N):
            for oh in range(OH):
                _window_span(oh, SH, TOP, KH, H, &h0, &h1)
                for ow in range(OW):
                    _window_span(ow, SW, LEFT, KW, W, &w0, &w1)
                    yp = &yv[n, oh, ow, 0]
                    row = &xv[n, h0, w0, 0]
                    for c in range(C):  # the first position of the window: never padding
                        yp[c] = row[c]
                    for h in range(h0, h1):
                        row = &xv[n, h, 0, 0]
                        for w in range(w0, w1):
                            xp = row + w * C
                            for c in range(C):
                                v = xp[c]
                                yp[c] = v if v > yp[c] else yp[c]
    return None


# ------------------------------------------------------------------------------------------
# AVERAGE_POOL_2D

def average_pool_2d(ins, p, out):
    """y = requantize(sum over the window of (x - zp_x)) with the multiplier/shift of entry
    count - 1, count = KH*KW (count_include_pad) or the number of non-padded positions.
    Reference: qrt/reference/ops.py average_pool_2d."""
    x = _single_input(ins, "AVERAGE_POOL_2D")
    n_, h_, w_, c_, oh_, ow_ = _pool_geometry(x, p, out, "AVERAGE_POOL_2D")
    r = p.out
    _check_requant(r, p.kernel[0] * p.kernel[1], "AVERAGE_POOL_2D")
    if not (-128 <= p.input_zero_point <= 127):
        raise ValueError(f"AVERAGE_POOL_2D: input zero point {p.input_zero_point} must lie in [-128, 127]")
    cdef const int8_t[:, :, :, ::1] xv = x
    cdef int8_t[:, :, :, ::1] yv = out
    cdef const int32_t[::1] mult = np.ascontiguousarray(r.multiplier, dtype=np.int32)
    cdef const int32_t[::1] shift = np.ascontiguousarray(r.shift, dtype=np.int32)
    cdef Py_ssize_t N = n_, H = h_, W = w_, C = c_, OH = oh_, OW = ow_
    cdef Py_ssize_t KH = p.kernel[0], KW = p.kernel[1], SH = p.stride[0], SW = p.stride[1]
    cdef Py_ssize_t TOP = p.pads[0], LEFT = p.pads[1]
    cdef bint include_pad = bool(p.count_include_pad)
    cdef int32_t zp_x = p.input_zero_point, zp = r.zero_point, lo = r.lo, hi = r.hi
    cdef Py_ssize_t n, oh, ow, h, w, c, h0, h1, w0, w1, count, k
    cdef int32_t init
    cdef const int8_t* xp
    cdef const int8_t* row
    if N * C == 0:
        return None
    acc_buf = np.empty(C, dtype=np.int32)
    cdef int32_t[::1] accv = acc_buf
    cdef int32_t* acc = &accv[0]
    with nogil:
        for n in range(N):
            for oh in range(OH):
                _window_span(oh, SH, TOP, KH, H, &h0, &h1)
                for ow in range(OW):
                    _window_span(ow, SW, LEFT, KW, W, &w0, &w1)
                    count = (h1 - h0) * (w1 - w0)  # non-padded positions, >= 1
                    init = -<int32_t>count * zp_x  # padded positions contribute 0
                    for c in range(C):
                        acc[c] = init
                    for h in range(h0, h1):
                        row = &xv[n, h, 0, 0]
                        for w in range(w0, w1):
                            xp = row + w * C
                            for c in range(C):
                                acc[c] += xp[c]
                    k = KH * KW - 1 if include_pad else count - 1
                    _requantize_row(acc, &yv[n, oh, ow, 0], C, mult[k], shift[k], zp, lo, hi)
    return None


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


cdef void _mean_gap(const int8_t* x, int8_t* y, int32_t* acc, Py_ssize_t C, Py_ssize_t n_out,
                    Py_ssize_t out_stride, Py_ssize_t rows, Py_ssize_t row_stride, int32_t init,
                    int32_t m, int32_t n, int32_t zp, int32_t lo, int32_t hi) noexcept nogil:
    """Fast path (the global average pool): output o sums `rows` rows of C contiguous values,
    rows row_stride apart, starting at x + o * out_stride."""
    cdef Py_ssize_t o, j, c
    cdef const int8_t* xp
    for o in range(n_out):
        for c in range(C):
            acc[c] = init
        xp = x + o * out_stride
        for j in range(rows):
            for c in range(C):
                acc[c] += xp[c]
            xp += row_stride
        _requantize_row(acc, y + o * C, C, m, n, zp, lo, hi)


cdef void _mean_rows(const int8_t* x, int8_t* y, int32_t* acc, Py_ssize_t C,
                     _Odometer* kept, Py_ssize_t n_out, _Odometer* red, Py_ssize_t n_red,
                     int32_t init, int32_t m, int32_t n, int32_t zp, int32_t lo,
                     int32_t hi) noexcept nogil:
    """Innermost group kept: every output row of C values sums n_red rows of C values."""
    cdef Py_ssize_t o, j, c, koff = 0, roff
    cdef const int8_t* xp
    for o in range(n_out):
        for c in range(C):
            acc[c] = init
        roff = 0
        for j in range(n_red):
            xp = x + koff + roff
            for c in range(C):
                acc[c] += xp[c]
            roff = _advance(red, roff)
        _requantize_row(acc, y + o * C, C, m, n, zp, lo, hi)
        koff = _advance(kept, koff)


cdef void _mean_runs(const int8_t* x, int8_t* y, Py_ssize_t L,
                     _Odometer* kept, Py_ssize_t n_out, _Odometer* red, Py_ssize_t n_red,
                     int32_t init, int32_t m, int32_t n, int32_t zp, int32_t lo,
                     int32_t hi) noexcept nogil:
    """Innermost group reduced: every output value sums n_red runs of L contiguous values."""
    cdef Py_ssize_t o, j, c, koff = 0, roff
    cdef const int8_t* xp
    cdef int32_t s
    for o in range(n_out):
        s = init
        roff = 0
        for j in range(n_red):
            xp = x + koff + roff
            for c in range(L):
                s += xp[c]
            roff = _advance(red, roff)
        y[o] = requantize_one(s, m, n, zp, lo, hi)
        koff = _advance(kept, koff)


# Plan layout (int64): mode, inner, n_out, n_red, init, m, n, zp, lo, hi, nk, nr, then the
# kept groups' sizes and strides and the reduced groups' sizes and strides (MAX_RANK each).
cdef enum:
    _MODE_GAP = 0
    _MODE_ROWS = 1
    _MODE_RUNS = 2
    _PLAN_HEAD = 12
    _PLAN_SIZE = _PLAN_HEAD + 4 * MAX_RANK


def _mean_plan(x, p, out):
    """Validate MEAN's operands and parameters and reduce the walk to integers (an int64
    plan, see above), or None when x is empty. Kept apart from mean() so that the compiled
    loops do not sit behind this function's many error branches (gcc would then treat them
    as cold and not vectorise them)."""
    _check_int8_c_contiguous(x, "MEAN input")
    _check_int8_c_contiguous(out, "MEAN output")
    shape = tuple(x.shape)
    rank = len(shape)
    if rank < 1 or rank > MAX_RANK:
        raise ValueError(f"MEAN: input rank {rank} must lie in [1, {MAX_RANK}]")
    axes = tuple(p.axes)
    if not axes or not (0 <= min(axes) and max(axes) < rank) or list(axes) != sorted(set(axes)):
        raise ValueError(f"MEAN: axes {axes} must be sorted, distinct and in [0, {rank})")
    reduced = set(axes)
    expect = tuple(1 if a in reduced else d for a, d in enumerate(shape) if p.keep_dims or a not in reduced)
    if tuple(out.shape) != expect:
        raise ValueError(f"MEAN: output has shape {tuple(out.shape)}; input {shape} reduced over "
                         f"{axes} (keep_dims={bool(p.keep_dims)}) gives {expect}")
    count = 1
    for a in axes:
        count *= shape[a]
    if count < 1:
        raise ValueError(f"MEAN: the reduced dimensions of {shape} are empty")
    if count * MAX_INPUT_MAGNITUDE > INT32_MAX:
        raise ValueError(f"MEAN: averaging {count} values can overflow the int32 accumulator")
    r = p.rescale.out
    _check_requant(r, 1, "MEAN")
    zp_x = p.rescale.input_zero_point
    if not (-128 <= zp_x <= 127):
        raise ValueError(f"MEAN: input zero point {zp_x} must lie in [-128, 127]")
    if x.size == 0:
        return None

    # Merge: groups [kept?, size, stride of the innermost dimension], built innermost first.
    # (No negative indices: this module is compiled with wraparound=False.)
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
    inner = groups[0][1] if groups else 1  # C (kept) or L (reduced)
    groups = groups[1:]
    groups.reverse()  # outermost first
    kept_groups = [g for g in groups if g[0]]
    red_groups = [g for g in groups if not g[0]]
    n_out = 1
    for g in kept_groups:
        n_out *= g[1]
    n_red = 1
    for g in red_groups:
        n_red *= g[1]
    if not inner_kept:
        mode = _MODE_RUNS
    elif len(kept_groups) <= 1 and len(red_groups) == 1:
        mode = _MODE_GAP
    else:
        mode = _MODE_ROWS
    plan = np.zeros(_PLAN_SIZE, dtype=np.int64)
    plan[:_PLAN_HEAD] = (mode, inner, n_out, n_red, -count * zp_x, int(r.multiplier[0]), int(r.shift[0]),
                         r.zero_point, r.lo, r.hi, len(kept_groups), len(red_groups))
    for i, g in enumerate(kept_groups):
        plan[_PLAN_HEAD + i] = g[1]
        plan[_PLAN_HEAD + MAX_RANK + i] = g[2]
    for i, g in enumerate(red_groups):
        plan[_PLAN_HEAD + 2 * MAX_RANK + i] = g[1]
        plan[_PLAN_HEAD + 3 * MAX_RANK + i] = g[2]
    return plan


def mean(ins, p, out):
    """y = requantize(sum over `axes` of (x - zp_x)), 1/count folded into the single multiplier.
    Reference: qrt/reference/ops.py mean.

    Size-1 dimensions are dropped and adjacent kept/reduced dimensions merged, leaving
    alternating groups. If the innermost group is kept (C contiguous values, e.g. the global
    average pool, axes (1, 2) of [N, H, W, C]), rows of C are summed into an int32 vector;
    if it is reduced (L contiguous values), each output sums contiguous runs of L."""
    x = _single_input(ins, "MEAN")
    plan = _mean_plan(x, p, out)
    if plan is None:
        return None
    cdef const int64_t[::1] pl = plan
    cdef const int8_t[::1] xv = x.reshape(-1)
    cdef int8_t[::1] yv = out.reshape(-1)
    cdef int mode = <int>pl[0]
    cdef Py_ssize_t inner = pl[1], n_out = pl[2], n_red = pl[3]
    cdef int32_t init = <int32_t>pl[4], m = <int32_t>pl[5], sh = <int32_t>pl[6]
    cdef int32_t zp = <int32_t>pl[7], lo = <int32_t>pl[8], hi = <int32_t>pl[9]
    cdef _Odometer kept, red
    cdef int i
    kept.nd = <int>pl[10]
    red.nd = <int>pl[11]
    for i in range(MAX_RANK):
        kept.size[i] = pl[_PLAN_HEAD + i]
        kept.stride[i] = pl[_PLAN_HEAD + MAX_RANK + i]
        kept.idx[i] = 0
        red.size[i] = pl[_PLAN_HEAD + 2 * MAX_RANK + i]
        red.stride[i] = pl[_PLAN_HEAD + 3 * MAX_RANK + i]
        red.idx[i] = 0
    cdef const int8_t* xp = &xv[0]
    cdef int8_t* yp = &yv[0]
    cdef int32_t[::1] accv
    if mode == _MODE_RUNS:
        with nogil:
            _mean_runs(xp, yp, inner, &kept, n_out, &red, n_red, init, m, sh, zp, lo, hi)
        return None
    accv = np.empty(inner, dtype=np.int32)
    if mode == _MODE_GAP:
        with nogil:
            _mean_gap(xp, yp, &accv[0], inner, n_out, kept.stride[0] if kept.nd else 0,
                      red.size[0], red.stride[0], init, m, sh, zp, lo, hi)
    else:
        with nogil:
            _mean_rows(xp, yp, &accv[0], inner, &kept, n_out, &red, n_red, init, m, sh, zp, lo, hi)
    return None
