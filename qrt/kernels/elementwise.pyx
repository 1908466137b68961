# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Elementwise and data-movement kernels: ADD/SUB, MUL, REQUANTIZE, CONCAT, LEAKY_RELU/PRELU,
LUT, SOFTMAX, QUANTIZE, DEQUANTIZE, PAD, TRANSPOSE, RESHAPE.

Each `def NAME(ins, p, out)` follows the calling convention of qrt/runtime/kernels.py: `ins` the
input arrays, `p` the op's parameters from qrt/runtime/prepare.py, `out` a preallocated
C-contiguous output array, filled in place. Bit-exact with the NumPy references of
qrt/reference/ops.py (SPEC.md sections 2.13 and 4): integer arithmetic only, except QUANTIZE and
DEQUANTIZE, whose float steps are the reference's exactly (IEEE float64 division and
round-half-even; one float32 multiplication).

Every kernel checks shapes, dtypes and parameter ranges at entry (ValueError) so that the
loops, which run without the GIL, never index outside an array.
"""
import numpy as np

from libc.math cimport nearbyint
from libc.stdint cimport (
    int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t,
)
from libc.string cimport memcpy, memmove, memset

from qrt.kernels.numerics cimport check_requant, requantize_one, rounding_shift

cdef enum:
    MAX_RANK = 8
    # ADD/SUB headroom bits; must equal qrt.runtime.prepare.ADD_LEFT_SHIFT (not imported here:
    # the runtime imports this module; the ADD tests fail if the two differ).
    ADD_LEFT_SHIFT = 20

cdef int64_t INT32_LIMIT = 2147483648  # 2**31


# ---------------------------------------------------------------------------- helpers

cdef inline int8_t _clamp_int8(int64_t v) noexcept nogil:
    if v < -128:
        return -128
    if v > 127:
        return 127
    return <int8_t>v


cdef object _flat(object x, str what):
    """x as a 1-D C-contiguous array (a view when x is C-contiguous, else a copy)."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(x).__name__}")
    return x.reshape(-1)


cdef object _flat_out(object out):
    """out as a 1-D view sharing its memory; out must be C-contiguous and writeable."""
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a numpy array, got {type(out).__name__}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    return out.reshape(-1)


cdef int _check_dtype(object x, object dtype, str what) except -1:
    if x.dtype != dtype:
        raise ValueError(f"{what} has dtype {x.dtype}; expected {np.dtype(dtype)}")
    return 0


cdef int _check_same_shape(object x, object out, str what) except -1:
    if x.shape != out.shape:
        raise ValueError(f"{what} has shape {x.shape} but out has shape {out.shape}")
    return 0


cdef int _check_rank(object shape, str what) except -1:
    if len(shape) > MAX_RANK:
        raise ValueError(f"{what} has rank {len(shape)}; the limit is {MAX_RANK}")
    return 0


cdef int _check_mn(object m, object n, bint signed, str what) except -1:
    """A (multiplier, shift) pair that keeps rounding_shift exact for |v| < 2^31."""
    lo = -INT32_LIMIT + 1 if signed else 0
    if not (lo <= m < INT32_LIMIT) or not (1 <= n <= 62):
        raise ValueError(f"{what}: multiplier {m} must lie in [{lo}, 2^31) and shift {n} in [1, 62]")
    return 0


cdef int _check_zp8(object zp, str what) except -1:
    if not (-128 <= zp <= 127):
        raise ValueError(f"{what} {zp} must lie in [-128, 127]")
    return 0


cdef int _check_zp32(object zp, str what) except -1:
    if not (-INT32_LIMIT <= zp < INT32_LIMIT):
        raise ValueError(f"{what} {zp} does not fit int32")
    return 0


# ---------------------------------------------------------------------------- broadcasting

cdef struct Bcast:
    # The output iterated in C order over `ndim` coalesced dimensions; sa/sb: element strides
    # of the two inputs (0 along broadcast dimensions).
    Py_ssize_t ndim
    Py_ssize_t shape[MAX_RANK]
    Py_ssize_t sa[MAX_RANK]
    Py_ssize_t sb[MAX_RANK]


ctypedef void (*row_fn)(void* ctx, Py_ssize_t ia, Py_ssize_t sa, Py_ssize_t ib, Py_ssize_t sb,
                        Py_ssize_t io, Py_ssize_t n) noexcept nogil


cdef int _broadcast(tuple ashape, tuple bshape, tuple oshape, Bcast* bc) except -1:
    """Check out's shape is numpy.broadcast_shapes(a, b) and fill bc: size-1 output dimensions
    dropped, neighbours merged where both inputs advance (or stay) alike."""
    cdef Py_ssize_t ra = len(ashape), rb = len(bshape), ro = len(oshape)
    cdef Py_ssize_t k, da, db, od, nd = 0, acc_a, acc_b
    cdef bint fa, fb, pfa = 0, pfb = 0
    if ro > MAX_RANK:
        raise ValueError(f"out has rank {ro}; the limit is {MAX_RANK}")
    if ro != max(ra, rb):
        raise ValueError(f"out has shape {oshape}; broadcasting {ashape} with {bshape} gives rank {max(ra, rb)}")
    for k in range(ro):
        od = oshape[k]
        da = ashape[k - ro + ra] if k - ro + ra >= 0 else 1
        db = bshape[k - ro + rb] if k - ro + rb >= 0 else 1
        if not ((da == db or da == 1 or db == 1) and od == (db if da == 1 else da)):
            raise ValueError(f"out has shape {oshape}; it is not the broadcast of {ashape} and {bshape}")
        if od == 1:
            continue
        fa = da != 1
        fb = db != 1
        if nd > 0 and fa == pfa and fb == pfb:
            bc.shape[nd - 1] *= od
        else:
            bc.shape[nd] = od
            bc.sa[nd] = fa
            bc.sb[nd] = fb
            nd += 1
        pfa = fa
        pfb = fb
    if nd == 0:
        bc.shape[0] = 1
        bc.sa[0] = 0
        bc.sb[0] = 0
        nd = 1
    bc.ndim = nd
    acc_a = 1
    acc_b = 1
    for k in range(nd - 1, -1, -1):
        if bc.sa[k]:
            bc.sa[k] = acc_a
            acc_a *= bc.shape[k]
        if bc.sb[k]:
            bc.sb[k] = acc_b
            acc_b *= bc.shape[k]
    return 0


cdef void _drive(const Bcast* bc, row_fn fn, void* ctx) noexcept nogil:
    """Call fn once per output row (the last coalesced dimension) with the inputs' offsets."""
    cdef Py_ssize_t nd = bc.ndim, last = bc.ndim - 1, k, r, rows = 1
    cdef Py_ssize_t ia = 0, ib = 0, io = 0
    cdef Py_ssize_t n = bc.shape[last], sa = bc.sa[last], sb = bc.sb[last]
    cdef Py_ssize_t idx[MAX_RANK]
    for k in range(last):
        idx[k] = 0
        rows *= bc.shape[k]
    for r in range(rows):
        fn(ctx, ia, sa, ib, sb, io, n)
        io += n
        k = last - 1
        while k >= 0:
            idx[k] += 1
            ia += bc.sa[k]
            ib += bc.sb[k]
            if idx[k] < bc.shape[k]:
                break
            ia -= bc.sa[k] * bc.shape[k]
            ib -= bc.sb[k] * bc.shape[k]
            idx[k] = 0
            k -= 1


# ---------------------------------------------------------------------------- ADD / SUB

cdef struct AddCtx:
    const int8_t* a
    const int8_t* b
    int8_t* o
    int32_t ta[256]  # rounding_shift((a - zp_a) << 20, m_a, n_a), by the byte of a
    int32_t tb[256]  # the same for b, negated for SUB
    int32_t m, n, zp, lo, hi


cdef void _add_row(void* c, Py_ssize_t ia, Py_ssize_t sa, Py_ssize_t ib, Py_ssize_t sb,
                   Py_ssize_t io, Py_ssize_t n) noexcept nogil:
    cdef AddCtx* ctx = <AddCtx*>c
    cdef const int8_t* a = ctx.a + ia
    cdef const int8_t* b = ctx.b + ib
    cdef int8_t* o = ctx.o + io
    cdef Py_ssize_t i
    cdef int32_t m = ctx.m, sh = ctx.n, zp = ctx.zp, lo = ctx.lo, hi = ctx.hi, vb
    if sa == 1 and sb == 1:
        for i in range(n):
            o[i] = requantize_one(ctx.ta[<uint8_t>a[i]] + ctx.tb[<uint8_t>b[i]], m, sh, zp, lo, hi)
    elif sb == 0:
        vb = ctx.tb[<uint8_t>b[0]]
        for i in range(n):
            o[i] = requantize_one(ctx.ta[<uint8_t>a[i * sa]] + vb, m, sh, zp, lo, hi)
    else:
        for i in range(n):
            o[i] = requantize_one(ctx.ta[<uint8_t>a[i * sa]] + ctx.tb[<uint8_t>b[i * sb]], m, sh, zp, lo, hi)


def add(ins, p, out):
    """ADD and SUB (p.subtract). Reference: qrt/reference/ops.py add."""
    cdef AddCtx ctx
    cdef Bcast bc
    cdef uint8_t table[256]
    cdef int64_t za, zb, ma, na, mb, nb, sign
    cdef Py_ssize_t n
    cdef int k
    a, b = ins[0], ins[1]
    af, bf, of = _flat(a, "input a"), _flat(b, "input b"), _flat_out(out)
    cdef const int8_t[::1] av = af
    cdef const int8_t[::1] bv = bf
    cdef int8_t[::1] ov = of
    _broadcast(a.shape, b.shape, out.shape, &bc)
    _check_zp8(p.a_zero_point, "input a zero point")
    _check_zp8(p.b_zero_point, "input b zero point")
    _check_mn(p.a_multiplier, p.a_shift, False, "input a rescale")
    _check_mn(p.b_multiplier, p.b_shift, False, "input b rescale")
    if p.a_shift < 31 or p.b_shift < 31:  # factors <= 1 (prepare's are <= 1/2): int32 sums
        raise ValueError(f"operand rescale shifts {p.a_shift}, {p.b_shift} must be >= 31 (factors <= 1)")
    r = p.out
    check_requant(r.multiplier, r.shift, 1, r.zero_point, r.lo, r.hi)
    za, zb = p.a_zero_point, p.b_zero_point
    ma, na, mb, nb = p.a_multiplier, p.a_shift, p.b_multiplier, p.b_shift
    sign = -1 if p.subtract else 1
    ctx.m, ctx.n, ctx.zp, ctx.lo, ctx.hi = r.multiplier[0], r.shift[0], r.zero_point, r.lo, r.hi
    if ov.shape[0] == 0:
        return None
    ctx.a, ctx.b, ctx.o = &av[0], &bv[0], &ov[0]
    n = ov.shape[0]
    with nogil:
        # |x - zp| <= 255 and m / 2^n < 1 (n >= 31), so |entry| <= 255 * 2^20 < 2^28 and the
        # sum or difference of two fits int32, as requantize_one takes it.
        for k in range(256):
            ctx.ta[k] = <int32_t>rounding_shift((<int64_t><int8_t><uint8_t>k - za) * (1 << ADD_LEFT_SHIFT), ma, na)
            ctx.tb[k] = <int32_t>(sign * rounding_shift((<int64_t><int8_t><uint8_t>k - zb) * (1 << ADD_LEFT_SHIFT), mb, nb))
        if bv.shape[0] == 1 and av.shape[0] == n:  # b one value: y is a function of a's byte
            for k in range(256):
                table[k] = <uint8_t>requantize_one(ctx.ta[k] + ctx.tb[<uint8_t>bv[0]], ctx.m, ctx.n,
                                                   ctx.zp, ctx.lo, ctx.hi)
            _apply_table(table, <const uint8_t*>ctx.a, <uint8_t*>ctx.o, n)
        elif av.shape[0] == 1 and bv.shape[0] == n:
            for k in range(256):
                table[k] = <uint8_t>requantize_one(ctx.ta[<uint8_t>av[0]] + ctx.tb[k], ctx.m, ctx.n,
                                                   ctx.zp, ctx.lo, ctx.hi)
            _apply_table(table, <const uint8_t*>ctx.b, <uint8_t*>ctx.o, n)
        else:
            _drive(&bc, _add_row, &ctx)
    return None


# ---------------------------------------------------------------------------- MUL

cdef struct MulCtx:
    const int8_t* a
    const int8_t* b
    int8_t* o
    int32_t za, zb, m, n, zp, lo, hi


cdef void _mul_row(void* c, Py_ssize_t ia, Py_ssize_t sa, Py_ssize_t ib, Py_ssize_t sb,
                   Py_ssize_t io, Py_ssize_t n) noexcept nogil:
    cdef MulCtx* ctx = <MulCtx*>c
    cdef const int8_t* a = ctx.a + ia
    cdef const int8_t* b = ctx.b + ib
    cdef int8_t* o = ctx.o + io
    cdef Py_ssize_t i
    cdef int32_t za = ctx.za, zb = ctx.zb, m = ctx.m, sh = ctx.n, zp = ctx.zp, lo = ctx.lo, hi = ctx.hi, vb
    if sa == 1 and sb == 1:
        for i in range(n):
            o[i] = requantize_one((a[i] - za) * (b[i] - zb), m, sh, zp, lo, hi)
    elif sb == 0:
        vb = b[0] - zb
        for i in range(n):
            o[i] = requantize_one((a[i * sa] - za) * vb, m, sh, zp, lo, hi)
    else:
        for i in range(n):
            o[i] = requantize_one((a[i * sa] - za) * (b[i * sb] - zb), m, sh, zp, lo, hi)


def mul(ins, p, out):
    """MUL. Reference: qrt/reference/ops.py mul."""
    cdef MulCtx ctx
    cdef Bcast bc
    cdef uint8_t table[256]
    cdef Py_ssize_t n
    cdef int k
    cdef int32_t other
    a, b = ins[0], ins[1]
    af, bf, of = _flat(a, "input a"), _flat(b, "input b"), _flat_out(out)
    cdef const int8_t[::1] av = af
    cdef const int8_t[::1] bv = bf
    cdef int8_t[::1] ov = of
    _broadcast(a.shape, b.shape, out.shape, &bc)
    _check_zp8(p.a_zero_point, "input a zero point")
    _check_zp8(p.b_zero_point, "input b zero point")
    r = p.out
    check_requant(r.multiplier, r.shift, 1, r.zero_point, r.lo, r.hi)
    ctx.za, ctx.zb = p.a_zero_point, p.b_zero_point
    ctx.m, ctx.n, ctx.zp, ctx.lo, ctx.hi = r.multiplier[0], r.shift[0], r.zero_point, r.lo, r.hi
    if ov.shape[0] == 0:
        return None
    ctx.a, ctx.b, ctx.o = &av[0], &bv[0], &ov[0]
    n = ov.shape[0]
    with nogil:
        if bv.shape[0] == 1 and av.shape[0] == n:  # b one value: y is a function of a's byte
            other = bv[0] - ctx.zb
            for k in range(256):
                table[k] = <uint8_t>requantize_one((<int8_t><uint8_t>k - ctx.za) * other, ctx.m, ctx.n,
                                                   ctx.zp, ctx.lo, ctx.hi)
            _apply_table(table, <const uint8_t*>ctx.a, <uint8_t*>ctx.o, n)
        elif av.shape[0] == 1 and bv.shape[0] == n:
            other = av[0] - ctx.za
            for k in range(256):
                table[k] = <uint8_t>requantize_one(other * (<int8_t><uint8_t>k - ctx.zb), ctx.m, ctx.n,
                                                   ctx.zp, ctx.lo, ctx.hi)
            _apply_table(table, <const uint8_t*>ctx.b, <uint8_t*>ctx.o, n)
        else:
            _drive(&bc, _mul_row, &ctx)
    return None


# ---------------------------------------------------------------------------- REQUANTIZE

cdef bint _byte_signed(object x, str what) except -1:
    """True for int8, False for uint8; ValueError for anything else."""
    dt = x.dtype
    if dt == np.int8:
        return True
    if dt == np.uint8:
        return False
    raise ValueError(f"{what} has dtype {dt}; expected int8 or uint8")


cdef int _rescale_table(object q, bint in_signed, uint8_t* table) except -1:
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
    with nogil:
        for k in range(256):
            v = (<int8_t><uint8_t>k if in_signed else k) - zx
            if int8_range:
                table[k] = <uint8_t>requantize_one(v, m, n, zy, lo, hi)
            else:
                w = rounding_shift(v, m, n) + zy
                table[k] = <uint8_t>(lo if w < lo else (hi if w > hi else w))
    return 0


cdef void _apply_table(const uint8_t* table, const uint8_t* x, uint8_t* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = table[x[i]]


def requantize(ins, p, out):
    """REQUANTIZE (p: RescaleParams); int8 or uint8 in and out. Reference:
    qrt/reference/ops.py rescale."""
    cdef uint8_t table[256]
    x = ins[0]
    _check_same_shape(x, out, "input")
    in_signed = _byte_signed(x, "input")
    _byte_signed(out, "out")
    xf, of = _flat(x, "input"), _flat_out(out)
    cdef const uint8_t[::1] xv = xf.view(np.uint8)
    cdef uint8_t[::1] ov = of.view(np.uint8)
    cdef Py_ssize_t n = ov.shape[0]
    if n == 0:
        return None
    if p.identity:
        with nogil:
            memmove(&ov[0], &xv[0], n)
        return None
    _rescale_table(p, in_signed, table)
    with nogil:
        _apply_table(table, &xv[0], &ov[0], n)
    return None


# ---------------------------------------------------------------------------- CONCAT

def concat(ins, p, out):
    """CONCAT along p.axis, each input re-expressed in the output's quantization (identity
    inputs copied). Reference: qrt/reference/ops.py concat."""
    cdef uint8_t table[256]
    cdef Py_ssize_t axis, rank, k, outer, inner, chunk, total_chunk, offset, o, ext
    cdef const int8_t[::1] xv
    cdef int8_t[::1] ov
    cdef const uint8_t* src
    cdef uint8_t* dst
    cdef bint identity
    oshape = out.shape
    rank = len(oshape)
    axis = p.axis
    if not (0 <= axis < rank):
        raise ValueError(f"axis {axis} is out of range for out of rank {rank}")
    if len(ins) == 0 or len(ins) != len(p.inputs):
        raise ValueError(f"{len(ins)} inputs but parameters for {len(p.inputs)}")
    of = _flat_out(out)
    ov = of
    total = 0
    flats = []
    for k in range(len(ins)):
        x = ins[k]
        s = x.shape
        if len(s) != rank or s[:axis] != oshape[:axis] or s[axis + 1:] != oshape[axis + 1:]:
            raise ValueError(f"input {k} has shape {s}; it must match out {oshape} except on axis {axis}")
        total += s[axis]
        flats.append(_flat(x, f"input {k}"))
    if total != oshape[axis]:
        raise ValueError(f"inputs add up to {total} along axis {axis}, out has {oshape[axis]}")
    outer = 1
    for k in range(axis):
        outer *= oshape[k]
    inner = 1
    for k in range(axis + 1, rank):
        inner *= oshape[k]
    total_chunk = oshape[axis] * inner
    if ov.shape[0] == 0:
        return None
    offset = 0
    for k in range(len(ins)):
        ext = ins[k].shape[axis]
        chunk = ext * inner
        xv = flats[k]
        q = p.inputs[k]
        identity = q.identity
        if not identity:
            _rescale_table(q, True, table)
        if chunk > 0:
            src = <const uint8_t*>&xv[0]
            dst = <uint8_t*>&ov[0] + offset
            with nogil:
                for o in range(outer):
                    if identity:
                        memcpy(dst + o * total_chunk, src + o * chunk, chunk)
                    else:
                        _apply_table(table, src + o * chunk, dst + o * total_chunk, chunk)
        offset += chunk
    return None


# ---------------------------------------------------------------------------- LEAKY_RELU / PRELU

cdef struct SlopeCtx:
    const int8_t* x
    int8_t* o
    const int64_t* nm
    const int64_t* nn
    const uint8_t* tables  # NULL, or 256 entries per alpha element (by x's byte)
    int64_t zx, pm, pn, zy


cdef inline int8_t _slope_one(int64_t v, int64_t pm, int64_t pn, int64_t nm, int64_t nn,
                              int64_t zy) noexcept nogil:
    if v >= 0:
        return _clamp_int8(rounding_shift(v, pm, pn) + zy)
    return _clamp_int8(rounding_shift(v, nm, nn) + zy)


cdef void _slope_row(void* c, Py_ssize_t ia, Py_ssize_t sa, Py_ssize_t ib, Py_ssize_t sb,
                     Py_ssize_t io, Py_ssize_t n) noexcept nogil:
    cdef SlopeCtx* ctx = <SlopeCtx*>c
    cdef const int8_t* x = ctx.x + ia
    cdef const int64_t* nm = ctx.nm + ib
    cdef const int64_t* nn = ctx.nn + ib
    cdef int8_t* o = ctx.o + io
    cdef const uint8_t* t
    cdef Py_ssize_t i
    if ctx.tables != NULL:
        t = ctx.tables + ib * 256
        if sb == 0:
            _apply_table(t, <const uint8_t*>x, <uint8_t*>o, n)
        else:
            for i in range(n):
                o[i] = <int8_t>t[i * sb * 256 + <uint8_t>x[i * sa]]
        return
    for i in range(n):
        o[i] = _slope_one(x[i * sa] - ctx.zx, ctx.pm, ctx.pn, nm[i * sb], nn[i * sb], ctx.zy)


def slope(ins, p, out):
    """LEAKY_RELU and PRELU (p: SlopeParams; the alpha slopes, scalar or broadcast to x, are in
    p). Reference: qrt/reference/ops.py slope."""
    cdef SlopeCtx ctx
    cdef Bcast bc
    cdef uint8_t table[256]
    cdef uint8_t[::1] tables
    cdef Py_ssize_t i, na, n
    cdef int k
    x = ins[0]
    _check_same_shape(x, out, "input")
    xf, of = _flat(x, "input"), _flat_out(out)
    cdef const int8_t[::1] xv = xf
    cdef int8_t[::1] ov = of
    nm_arr, nn_arr = p.neg_multiplier, p.neg_shift
    if nm_arr.shape != nn_arr.shape:
        raise ValueError(f"alpha multipliers {nm_arr.shape} and shifts {nn_arr.shape} differ in shape")
    _check_rank(nm_arr.shape, "alpha")
    try:
        _broadcast(out.shape, nm_arr.shape, out.shape, &bc)
    except ValueError:
        raise ValueError(f"alpha of shape {nm_arr.shape} does not broadcast to the input shape {out.shape}") from None
    cdef const int64_t[::1] nm = _flat(nm_arr, "alpha multipliers")
    cdef const int64_t[::1] nn = _flat(nn_arr, "alpha shifts")
    na = nm.shape[0]
    for i in range(na):
        if not (-INT32_LIMIT < nm[i] < INT32_LIMIT) or not (1 <= nn[i] <= 62):
            raise ValueError(f"alpha slope {i}: multiplier {nm[i]} must lie in (-2^31, 2^31) "
                             f"and shift {nn[i]} in [1, 62]")
    _check_mn(p.pos_multiplier, p.pos_shift, False, "positive slope")
    _check_zp8(p.input_zero_point, "input zero point")
    _check_zp32(p.out_zero_point, "output zero point")
    ctx.zx, ctx.pm, ctx.pn, ctx.zy = p.input_zero_point, p.pos_multiplier, p.pos_shift, p.out_zero_point
    if ov.shape[0] == 0:
        return None
    ctx.x, ctx.o, ctx.nm, ctx.nn, ctx.tables = &xv[0], &ov[0], &nm[0], &nn[0], NULL
    n = ov.shape[0]
    if na == 1:  # one slope (LEAKY_RELU, or a PRELU alpha of one element): a 256-entry table
        with nogil:
            for k in range(256):
                table[k] = <uint8_t>_slope_one(<int8_t><uint8_t>k - ctx.zx, ctx.pm, ctx.pn, nm[0], nn[0], ctx.zy)
            _apply_table(table, <const uint8_t*>ctx.x, <uint8_t*>ctx.o, n)
        return None
    if na <= 4096 and n >= 4 * 256 * na:  # many elements per slope: one table per alpha element
        tables = np.empty(na * 256, np.uint8)
        ctx.tables = &tables[0]
        with nogil:
            for i in range(na):
                for k in range(256):
                    tables[i * 256 + k] = <uint8_t>_slope_one(<int8_t><uint8_t>k - ctx.zx, ctx.pm, ctx.pn,
                                                              nm[i], nn[i], ctx.zy)
    with nogil:
        _drive(&bc, _slope_row, &ctx)
    return None


# ---------------------------------------------------------------------------- LUT

def lut(ins, p, out):
    """LUT: y = table[x + 128], the table being ins[1] (int8 [256]). Reference:
    qrt/reference/ops.py lut."""
    cdef uint8_t table[256]
    cdef int k
    x, t = ins[0], ins[1]
    _check_same_shape(x, out, "input")
    if t.shape != (256,):
        raise ValueError(f"the table has shape {t.shape}; expected (256,)")
    xf, tf, of = _flat(x, "input"), _flat(t, "table"), _flat_out(out)
    cdef const int8_t[::1] xv = xf
    cdef const int8_t[::1] tv = tf
    cdef int8_t[::1] ov = of
    if ov.shape[0] == 0:
        return None
    with nogil:
        for k in range(256):  # indexed by the byte of x: x = (int8)byte, entry x + 128
            table[k] = <uint8_t>tv[<int8_t><uint8_t>k + 128]
        _apply_table(table, <const uint8_t*>&xv[0], <uint8_t*>&ov[0], ov.shape[0])
    return None


# ---------------------------------------------------------------------------- SOFTMAX

def softmax(ins, p, out):
    """SOFTMAX along p.axis: e = exp_table[max - x], y = clamp(((e << 8) + total / 2) // total
    - 128). Reference: qrt/reference/ops.py softmax."""
    cdef Py_ssize_t axis, rank, k, j, o, outer, length, inner, base, i
    cdef int64_t mx, total, half, e, q
    x = ins[0]
    _check_same_shape(x, out, "input")
    shape = x.shape
    rank = len(shape)
    axis = p.axis
    if not (0 <= axis < rank):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    xf, of = _flat(x, "input"), _flat_out(out)
    cdef const int8_t[::1] xv = xf
    cdef int8_t[::1] ov = of
    tab_arr = p.exp_table
    if tab_arr.shape != (256,):
        raise ValueError(f"exp table has shape {tab_arr.shape}; expected (256,)")
    cdef const int64_t[::1] tab = tab_arr
    for k in range(256):
        if not (0 <= tab[k] <= INT32_LIMIT):
            raise ValueError(f"exp table entry {k} = {tab[k]} must lie in [0, 2^31]")
    if tab[0] <= 0:
        raise ValueError("exp table entry 0 must be > 0 (it is the largest element's term)")
    outer = 1
    for k in range(axis):
        outer *= shape[k]
    length = shape[axis]
    inner = 1
    for k in range(axis + 1, rank):
        inner *= shape[k]
    if ov.shape[0] == 0:
        return None
    # length < 2^31 and entries <= 2^31 keep every sum < 2^62 and (e << 8) + total/2 < 2^63;
    # both are >= 0 and total >= tab[0] > 0, so C division is the reference's floor division.
    if inner == 1:
        with nogil:
            for o in range(outer):
                base = o * length
                mx = xv[base]
                for k in range(1, length):
                    if xv[base + k] > mx:
                        mx = xv[base + k]
                total = 0
                for k in range(length):
                    total += tab[mx - xv[base + k]]
                half = total >> 1
                for k in range(length):
                    e = tab[mx - xv[base + k]]
                    q = ((e << 8) + half) / total - 128
                    ov[base + k] = <int8_t>(127 if q > 127 else q)  # q >= -128 as e >= 0
        return None
    cdef int32_t[::1] mxs = np.empty(inner, np.int32)
    cdef int64_t[::1] totals = np.empty(inner, np.int64)
    with nogil:
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
                    totals[j] += tab[mxs[j] - xv[i + j]]
            for k in range(length):
                i = base + k * inner
                for j in range(inner):
                    e = tab[mxs[j] - xv[i + j]]
                    q = ((e << 8) + (totals[j] >> 1)) / totals[j] - 128
                    ov[i + j] = <int8_t>(127 if q > 127 else q)
    return None


# ---------------------------------------------------------------------------- QUANTIZE / DEQUANTIZE

cdef inline int64_t _quantize_one(float x, double scale, double qlo, double qhi) noexcept nogil:
    """clamp(round-half-even(float64(x) / scale), qlo, qhi), NaN -> 0; the bounds are integers,
    so clamping before or after rounding is the same, and NaN/inf never reach the int cast."""
    cdef double q = nearbyint(<double>x / scale)
    if q != q:
        return 0
    if q < qlo:
        q = qlo
    elif q > qhi:
        q = qhi
    return <int64_t>q


ctypedef fused qint_t:
    int8_t
    uint8_t
    int16_t


cdef void _quantize_run(const float[::1] x, qint_t[::1] out, double scale, double qlo, double qhi,
                        int64_t zp) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        out[i] = <qint_t>(_quantize_one(x[i], scale, qlo, qhi) + zp)


cdef void _dequantize_run(const qint_t[::1] x, float[::1] out, float s, int32_t zp) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        out[i] = s * <float>(<int32_t>x[i] - zp)


def quantize(ins, p, out):
    """QUANTIZE float32 -> int8, uint8 or int16 (out's dtype). Reference:
    qrt/reference/ops.py quantize (NaN -> zero point; round half to even)."""
    cdef double scale, qlo, qhi
    cdef int64_t zp
    cdef Py_ssize_t n
    cdef const float[::1] xv
    cdef int8_t[::1] o8
    cdef uint8_t[::1] ou8
    cdef int16_t[::1] o16
    x = ins[0]
    _check_same_shape(x, out, "input")
    _check_dtype(x, np.float32, "input")
    xf, of = _flat(x, "input"), _flat_out(out)
    xv = xf
    dt = out.dtype
    if dt == np.int8:
        dlo, dhi = -128, 127
    elif dt == np.uint8:
        dlo, dhi = 0, 255
    elif dt == np.int16:
        dlo, dhi = -32768, 32767
    else:
        raise ValueError(f"out has dtype {dt}; expected int8, uint8 or int16")
    if not (dlo <= p.lo <= p.hi <= dhi):
        raise ValueError(f"clamp range [{p.lo}, {p.hi}] must lie inside the {dt} range [{dlo}, {dhi}]")
    if not (dlo <= p.zero_point <= dhi):
        raise ValueError(f"zero point {p.zero_point} is outside the {dt} range [{dlo}, {dhi}]")
    scale = p.scale
    if not (scale > 0 and scale < float("inf")):
        raise ValueError(f"scale {p.scale!r} must be finite and > 0")
    zp = p.zero_point
    qlo, qhi = p.lo - p.zero_point, p.hi - p.zero_point
    n = xv.shape[0]
    if n == 0:
        return None
    if dt == np.int8:
        o8 = of
        with nogil:
            _quantize_run(xv, o8, scale, qlo, qhi, zp)
    elif dt == np.uint8:
        ou8 = of
        with nogil:
            _quantize_run(xv, ou8, scale, qlo, qhi, zp)
    else:
        o16 = of
        with nogil:
            _quantize_run(xv, o16, scale, qlo, qhi, zp)
    return None


def dequantize(ins, p, out):
    """DEQUANTIZE int8, uint8 or int16 -> float32: float32(s) * float32(x - zp), one float32
    multiplication. Reference: qrt/reference/ops.py dequantize."""
    cdef float s
    cdef int32_t zp
    cdef const int8_t[::1] x8
    cdef const uint8_t[::1] xu8
    cdef const int16_t[::1] x16
    cdef float[::1] ov
    x = ins[0]
    _check_same_shape(x, out, "input")
    _check_dtype(out, np.float32, "out")
    xf, of = _flat(x, "input"), _flat_out(out)
    ov = of
    if not (-65536 <= p.zero_point <= 65536):
        raise ValueError(f"zero point {p.zero_point} is outside the int16/uint8 ranges")
    s = p.scale  # np.float32 in DequantizeParams (a Python float is rounded to float32, as
    # NumPy does with a weak scalar)
    zp = p.zero_point
    dt = x.dtype
    if dt == np.int8:
        x8 = xf
        with nogil:
            _dequantize_run(x8, ov, s, zp)
    elif dt == np.uint8:
        xu8 = xf
        with nogil:
            _dequantize_run(xu8, ov, s, zp)
    elif dt == np.int16:
        x16 = xf
        with nogil:
            _dequantize_run(x16, ov, s, zp)
    else:
        raise ValueError(f"input has dtype {dt}; expected int8, uint8 or int16")
    return None


# ---------------------------------------------------------------------------- PAD

cdef object _bytes_of(object x, str what):
    """The bytes of a C-contiguous copy or view of x, as a 1-D uint8 array."""
    return _flat(x, what).view(np.uint8)


def pad(ins, p, out):
    """PAD: p.pads (begins, then ends) filled with p.zero_point, any rank and dtype. Reference:
    qrt/reference/ops.py pad."""
    cdef Py_ssize_t rank, k, nd, isz, row, rows, r, io, total
    cdef Py_ssize_t dims[MAX_RANK]
    cdef Py_ssize_t before[MAX_RANK]
    cdef Py_ssize_t oext[MAX_RANK]
    cdef Py_ssize_t ostride[MAX_RANK]
    cdef Py_ssize_t idx[MAX_RANK]
    cdef const uint8_t[::1] fill
    cdef const uint8_t[::1] xb
    cdef uint8_t[::1] ob
    x = ins[0]
    xs, os_ = x.shape, out.shape
    rank = len(xs)
    _check_rank(xs, "input")
    pads = tuple(p.pads)
    if len(pads) != 2 * rank or any(v < 0 for v in pads):
        raise ValueError(f"pads {pads} must be {2 * rank} values >= 0 (begins, then ends)")
    expect = tuple(xs[k] + pads[k] + pads[rank + k] for k in range(rank))
    if os_ != expect:
        raise ValueError(f"out has shape {os_}; padding {xs} by {pads} gives {expect}")
    if x.dtype.itemsize != out.dtype.itemsize:
        raise ValueError(f"input dtype {x.dtype} and out dtype {out.dtype} differ in size")
    isz = out.dtype.itemsize
    fill = np.array(p.zero_point).astype(out.dtype).reshape(-1).view(np.uint8)
    xb = _bytes_of(x, "input")
    ob = _flat_out(out).view(np.uint8)
    total = ob.shape[0]
    if total == 0:
        return None
    # Coalesce: a dimension without padding merges into the one before it (its index then
    # just scales that one's); the element's bytes become part of the innermost dimension.
    nd = 0
    for k in range(rank):
        if nd > 0 and pads[k] == 0 and pads[rank + k] == 0:
            dims[nd - 1] *= xs[k]
            before[nd - 1] *= xs[k]
            oext[nd - 1] *= xs[k]
        else:
            dims[nd] = xs[k]
            before[nd] = pads[k]
            oext[nd] = xs[k] + pads[k] + pads[rank + k]
            nd += 1
    if nd == 0:  # rank 0: one element
        dims[0], before[0], oext[0], nd = 1, 0, 1, 1
    dims[nd - 1] *= isz
    before[nd - 1] *= isz
    oext[nd - 1] *= isz
    r = 1
    for k in range(nd - 1, -1, -1):
        ostride[k] = r
        r *= oext[k]
    with nogil:
        # fill everything, then copy the input rows in
        if isz == 1:
            memset(&ob[0], fill[0], total)
        else:
            memcpy(&ob[0], &fill[0], isz)
            r = isz
            while r < total:
                row = r if 2 * r <= total else total - r
                memcpy(&ob[r], &ob[0], row)
                r += row
        row = dims[nd - 1]
        rows = 1
        for k in range(nd - 1):
            rows *= dims[k]
            idx[k] = 0
        if row > 0 and xb.shape[0] > 0:
            io = 0
            for k in range(nd):
                io += before[k] * ostride[k]
            for r in range(rows):
                memcpy(&ob[io], &xb[r * row], row)
                k = nd - 2
                while k >= 0:
                    idx[k] += 1
                    io += ostride[k]
                    if idx[k] < dims[k]:
                        break
                    io -= ostride[k] * dims[k]
                    idx[k] = 0
                    k -= 1
    return None


# ---------------------------------------------------------------------------- TRANSPOSE

ctypedef fused elem_t:
    uint8_t
    uint16_t
    uint32_t
    uint64_t


cdef void _permute(const elem_t* src, elem_t* dst, Py_ssize_t nd, const Py_ssize_t* shape,
                   const Py_ssize_t* stride) noexcept nogil:
    """dst in C order over `shape`; src element offsets by `stride` per dimension."""
    cdef Py_ssize_t last = nd - 1, k, r, rows = 1, i, si = 0, di = 0
    cdef Py_ssize_t n = shape[last], s = stride[last]
    cdef Py_ssize_t idx[MAX_RANK]
    for k in range(last):
        idx[k] = 0
        rows *= shape[k]
    for r in range(rows):
        if s == 1:
            for i in range(n):
                dst[di + i] = src[si + i]
        else:
            for i in range(n):
                dst[di + i] = src[si + i * s]
        di += n
        k = last - 1
        while k >= 0:
            idx[k] += 1
            si += stride[k]
            if idx[k] < shape[k]:
                break
            si -= stride[k] * shape[k]
            idx[k] = 0
            k -= 1


cdef enum:
    TILE = 32


cdef void _permute_tiled(const elem_t* src, elem_t* dst, Py_ssize_t nd, const Py_ssize_t* shape,
                         const Py_ssize_t* stride, Py_ssize_t j) noexcept nogil:
    """As _permute, when dimension j (< nd - 1) is the one src walks with stride 1: the
    (j, last) planes go in TILE x TILE blocks, so that both sides stay in cache."""
    cdef Py_ssize_t last = nd - 1, k, m = 0, r, rows = 1, jb, je, lb, le, jj, ll
    cdef Py_ssize_t so = 0, do = 0, s = stride[last], nj = shape[j], nl = shape[last], dj
    cdef Py_ssize_t dstride[MAX_RANK]
    cdef Py_ssize_t oshape[MAX_RANK]
    cdef Py_ssize_t osrc[MAX_RANK]
    cdef Py_ssize_t odst[MAX_RANK]
    cdef Py_ssize_t idx[MAX_RANK]
    cdef const elem_t* sp
    cdef elem_t* dp
    r = 1
    for k in range(last, -1, -1):
        dstride[k] = r
        r *= shape[k]
    dj = dstride[j]
    for k in range(last):
        if k != j:
            oshape[m] = shape[k]
            osrc[m] = stride[k]
            odst[m] = dstride[k]
            idx[m] = 0
            rows *= shape[k]
            m += 1
    for r in range(rows):
        jb = 0
        while jb < nj:
            je = jb + TILE if jb + TILE < nj else nj
            lb = 0
            while lb < nl:
                le = lb + TILE if lb + TILE < nl else nl
                for jj in range(jb, je):
                    sp = src + so + jj
                    dp = dst + do + jj * dj
                    for ll in range(lb, le):
                        dp[ll] = sp[ll * s]
                lb = le
            jb = je
        k = m - 1
        while k >= 0:
            idx[k] += 1
            so += osrc[k]
            do += odst[k]
            if idx[k] < oshape[k]:
                break
            so -= osrc[k] * oshape[k]
            do -= odst[k] * oshape[k]
            idx[k] = 0
            k -= 1


def transpose(ins, p, out):
    """TRANSPOSE by p.perm (output dimension i is input dimension perm[i]), any rank <= 8 and
    any dtype of 1, 2, 4 or 8 bytes. Reference: qrt/reference/ops.py transpose."""
    cdef Py_ssize_t rank, k, nd, size, st, isz, n, j
    cdef Py_ssize_t shape[MAX_RANK]
    cdef Py_ssize_t stride[MAX_RANK]
    cdef Py_ssize_t instride[MAX_RANK]
    cdef const uint8_t[::1] xb
    cdef uint8_t[::1] ob
    x = ins[0]
    xs = x.shape
    rank = len(xs)
    _check_rank(xs, "input")
    perm = tuple(p.perm)
    if sorted(perm) != list(range(rank)):
        raise ValueError(f"perm {perm} is not a permutation of the {rank} dimensions")
    expect = tuple(xs[k] for k in perm)
    if out.shape != expect:
        raise ValueError(f"out has shape {out.shape}; transposing {xs} by {perm} gives {expect}")
    isz = x.dtype.itemsize
    if out.dtype.itemsize != isz or isz not in (1, 2, 4, 8):
        raise ValueError(f"input dtype {x.dtype} and out dtype {out.dtype} must have the same "
                         f"size of 1, 2, 4 or 8 bytes")
    xb = _bytes_of(x, "input")
    ob = _flat_out(out).view(np.uint8)
    n = ob.shape[0]
    if n == 0:
        return None
    st = 1
    for k in range(rank - 1, -1, -1):
        instride[k] = st
        st *= xs[k]
    nd = 0
    for k in range(rank):
        size = xs[perm[k]]
        if size == 1:
            continue
        st = instride[perm[k]]
        if nd > 0 and stride[nd - 1] == st * size:
            shape[nd - 1] *= size
            stride[nd - 1] = st
        else:
            shape[nd] = size
            stride[nd] = st
            nd += 1
    if nd == 0:
        shape[0], stride[0], nd = 1, 1, 1
    j = -1  # the dimension x walks contiguously, when it is not the innermost output one
    if stride[nd - 1] != 1:
        for k in range(nd - 1):
            if stride[k] == 1:
                j = k
    with nogil:
        if nd == 1 and stride[0] == 1:
            memcpy(&ob[0], &xb[0], n)
        elif j >= 0:
            if isz == 1:
                _permute_tiled(<const uint8_t*>&xb[0], <uint8_t*>&ob[0], nd, shape, stride, j)
            elif isz == 2:
                _permute_tiled(<const uint16_t*>&xb[0], <uint16_t*>&ob[0], nd, shape, stride, j)
            elif isz == 4:
                _permute_tiled(<const uint32_t*>&xb[0], <uint32_t*>&ob[0], nd, shape, stride, j)
            else:
                _permute_tiled(<const uint64_t*>&xb[0], <uint64_t*>&ob[0], nd, shape, stride, j)
        elif isz == 1:
            _permute(<const uint8_t*>&xb[0], <uint8_t*>&ob[0], nd, shape, stride)
        elif isz == 2:
            _permute(<const uint16_t*>&xb[0], <uint16_t*>&ob[0], nd, shape, stride)
        elif isz == 4:
            _permute(<const uint32_t*>&xb[0], <uint32_t*>&ob[0], nd, shape, stride)
        else:
            _permute(<const uint64_t*>&xb[0], <uint64_t*>&ob[0], nd, shape, stride)
    return None


# ---------------------------------------------------------------------------- RESHAPE

def reshape(ins, p, out):
    """RESHAPE: the same elements in the same C order (p is None); a byte copy."""
    x = ins[0]
    if x.size != out.size or x.dtype.itemsize != out.dtype.itemsize:
        raise ValueError(f"cannot reshape {x.shape} {x.dtype} into out {out.shape} {out.dtype}")
    cdef const uint8_t[::1] xb = _bytes_of(x, "input")
    cdef uint8_t[::1] ob = _flat_out(out).view(np.uint8)
    cdef Py_ssize_t n = ob.shape[0]
    if n and &ob[0] != &xb[0]:
        with nogil:
            memmove(&ob[0], &xb[0], n)
    return None
