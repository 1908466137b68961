# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Elementwise and data-movement kernels: ADD/SUB, MUL, MAXIMUM/MINIMUM, REQUANTIZE, CONCAT, LEAKY_RELU/PRELU,
LUT, SOFTMAX, QUANTIZE, DEQUANTIZE, PAD, TRANSPOSE, RESHAPE.

Each op is used in two steps, as in qrt/kernels/gemm.pyx:
  bind_NAME(ins, p, out, isa=None, threads=1) -> Step   once per thread arena: shapes, dtypes
      and parameter ranges checked (ValueError), raw pointers to the inputs and the output
      kept, and everything that depends on the parameters only made here: lookup tables,
      broadcast strides, coalesced copy plans, scratch rows;
  step.run()   every inference: C loops only, no Python, no allocation.
NAME(ins, p, out) binds and runs once (tests, and the graph boundary's QUANTIZE/DEQUANTIZE).
`ins` are the input arrays, `p` the op's parameters from its prepare step (qrt/ops/<op>.py), `out` the
preallocated output; inputs and output must be C-contiguous, since the step reads and writes
them where they lie at each run.

Bit-exact with the NumPy references of qrt/ops/<op>.py (SPEC.md sections 2.13 and 4):
integer arithmetic only, except QUANTIZE and DEQUANTIZE, whose float steps are the reference's
exactly (IEEE float64 division and round-half-even; one float32 multiplication). Same-shape
ADD/SUB and MUL run simd/eltwise.h: 64-bit vector lanes on avx512vnni and amx, long rows over
`threads`; so do QUANTIZE and DEQUANTIZE (AVX2 and up; with nchw=True they also change the
layout, as the graph boundary needs); the other ops take `isa` and `threads` and ignore them (a
named path is still checked).
"""
import numpy as np

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport (
    int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t,
)
from libc.string cimport memcpy, memmove, memset

from qrt.kernels.numerics cimport check_requant, requantize_one, rounding_shift
from qrt.kernels.plan cimport Step

from qrt import numerics
from qrt.kernels import Kernel, isa as _isa

from qrt.kernels.isa cimport qrt_add_run, qrt_eltwise_ops_for, qrt_mul_run, qrt_quant_run
from qrt.kernels.simd_eltwise cimport (
    qrt_add, qrt_add_row, qrt_eltwise_ops, qrt_mul, qrt_mul_row, qrt_quant,
)
from qrt.kernels.simd_requant cimport qrt_requant_select


cdef enum:
    MAX_RANK = 8
    # A one-value operand is folded into a 256-entry table when the other is longer than that.
    TABLE_MIN = 256

cdef int ADD_LEFT_SHIFT = numerics.ADD_LEFT_SHIFT
cdef int64_t INT32_MAX = numerics.INT32_MAX


# ---------------------------------------------------------------------------- helpers

cdef inline int8_t _clamp_int8(int64_t v) noexcept nogil:
    if v < -128:
        return -128
    if v > 127:
        return 127
    return <int8_t>v


cdef object _flat(object x, str what):
    """x as a 1-D C-contiguous array (a view when x is C-contiguous, else a copy): parameter
    arrays, which the step keeps."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(x).__name__}")
    return x.reshape(-1)


cdef object _flat_in(object x, str what):
    """An input as a 1-D view of its own memory, which the step reads at every run."""
    if isinstance(x, np.ndarray) and not x.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")
    return _flat(x, what)


cdef object _flat_out(object out):
    """out as a 1-D view sharing its memory; out must be C-contiguous and writeable."""
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a numpy array, got {type(out).__name__}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    return out.reshape(-1)


cdef const uint8_t* _in_bytes(object x, str what) except? NULL:
    """The first byte of input x (NULL when it is empty)."""
    cdef const uint8_t[::1] v = _flat_in(x, what).view(np.uint8)
    return &v[0] if v.shape[0] else NULL


cdef uint8_t* _out_bytes(object out) except? NULL:
    cdef uint8_t[::1] v = _flat_out(out).view(np.uint8)
    return &v[0] if v.shape[0] else NULL


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
    lo = -INT32_MAX if signed else 0
    if not (lo <= m <= INT32_MAX) or not (1 <= n <= 62):
        raise ValueError(f"{what}: multiplier {m} must lie in [{lo}, 2^31) and shift {n} in [1, 62]")
    return 0


cdef int _check_zp8(object zp, str what) except -1:
    if not (-128 <= zp <= 127):
        raise ValueError(f"{what} {zp} must lie in [-128, 127]")
    return 0


cdef int _check_zp32(object zp, str what) except -1:
    if not (-INT32_MAX - 1 <= zp <= INT32_MAX):
        raise ValueError(f"{what} {zp} does not fit int32")
    return 0


cdef void _apply_table(const uint8_t* table, const uint8_t* x, uint8_t* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = table[x[i]]


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


cdef inline bint _contiguous(const Bcast* bc) noexcept nogil:
    """Both operands walk the whole output in step: one row, no broadcasting."""
    return bc.ndim == 1 and bc.sa[0] == 1 and bc.sb[0] == 1


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


cdef enum BinaryMode:
    BIN_EMPTY  # nothing to write
    BIN_ROW  # same shapes: one contiguous row (simd/eltwise.h)
    BIN_TABLE_A  # b is one value: y is a function of a's byte (a table made at run time)
    BIN_TABLE_B  # a is one value
    BIN_DRIVE  # broadcasting: row by row


cdef struct Operands:
    const int8_t* a
    const int8_t* b
    int8_t* o


cdef struct AddCtx:
    Operands v
    qrt_add q


cdef struct MulCtx:
    Operands v
    qrt_mul q


cdef class _BinaryStep(Step):
    """What ADD/SUB, MUL and MAXIMUM/MINIMUM share: the broadcast walk, the mode, the table modes' run-time table
    (it depends on the one value, so it is made at each run)."""
    cdef Py_ssize_t n
    cdef Bcast bc
    cdef BinaryMode mode
    cdef uint8_t table[256]


cdef int _bind_binary(_BinaryStep s, Operands* v, ins, out, za, zb) except -1:
    """Shapes, dtypes and zero points of ADD/SUB, MUL, MAXIMUM/MINIMUM; the pointers, walk and mode."""
    a, b = ins[0], ins[1]
    af, bf, of = _flat_in(a, "input a"), _flat_in(b, "input b"), _flat_out(out)
    cdef const int8_t[::1] av = af
    cdef const int8_t[::1] bv = bf
    cdef int8_t[::1] ov = of
    _broadcast(a.shape, b.shape, out.shape, &s.bc)
    _check_zp8(za, "input a zero point")
    _check_zp8(zb, "input b zero point")
    s.keep = (a, b, out)
    s.n = ov.shape[0]
    if s.n == 0:
        s.mode = BIN_EMPTY
        return 0
    v.a, v.b, v.o = &av[0], &bv[0], &ov[0]
    if _contiguous(&s.bc):
        s.mode = BIN_ROW
    elif bv.shape[0] == 1 and av.shape[0] == s.n and s.n > TABLE_MIN:
        s.mode = BIN_TABLE_A
    elif av.shape[0] == 1 and bv.shape[0] == s.n and s.n > TABLE_MIN:
        s.mode = BIN_TABLE_B
    else:
        s.mode = BIN_DRIVE
    return 0


cdef int _bind_path(object isa, object threads, int* path, int* count,
                    const qrt_eltwise_ops** ops) except -1:
    """The path (and its functions, simd/eltwise.h qrt_eltwise_ops_for) and the thread count."""
    path[0] = _isa.resolve(isa)
    count[0] = max(1, int(threads))
    ops[0] = qrt_eltwise_ops_for(path[0])
    return 0


cdef int _check_isa(object isa) except -1:
    """Ops with one path: a named path is still checked (ValueError for an unknown one), None
    needs no resolving (that costs more than the graph boundary's conversions themselves)."""
    if isa is not None:
        _isa.resolve(isa)
    return 0


# ---------------------------------------------------------------------------- ADD / SUB

cdef void _add_row(void* c, Py_ssize_t ia, Py_ssize_t sa, Py_ssize_t ib, Py_ssize_t sb,
                   Py_ssize_t io, Py_ssize_t n) noexcept nogil:
    cdef AddCtx* ctx = <AddCtx*>c
    cdef qrt_add* q = &ctx.q
    cdef const int8_t* a = ctx.v.a + ia
    cdef const int8_t* b = ctx.v.b + ib
    cdef int8_t* o = ctx.v.o + io
    cdef Py_ssize_t i
    # locals: o is int8, which may alias anything, so fields read through q reload per store;
    # qrt_requant_select: requantize_one without branches (saturating outputs mispredict)
    cdef const int32_t* ta = q.ta
    cdef const int32_t* tb = q.tb
    cdef int32_t m = q.m, sh = q.n, zp = q.zp, lo = q.lo, hi = q.hi, vb
    if sa == 1 and sb == 1:
        qrt_add_row(q, a, b, o, n)
    elif sb == 0:
        vb = tb[<uint8_t>b[0]]
        for i in range(n):
            o[i] = qrt_requant_select(ta[<uint8_t>a[i * sa]] + vb, m, sh, zp, lo, hi)
    else:
        for i in range(n):
            o[i] = qrt_requant_select(ta[<uint8_t>a[i * sa]] + tb[<uint8_t>b[i * sb]], m, sh, zp, lo, hi)


cdef class AddStep(_BinaryStep):
    cdef AddCtx ctx

    cdef int run(self) noexcept nogil:
        cdef const qrt_add* q = &self.ctx.q
        cdef const Operands* v = &self.ctx.v
        cdef int k
        cdef int32_t other
        if self.mode == BIN_ROW:
            qrt_add_run(q, v.a, v.b, v.o, self.n)
        elif self.mode == BIN_TABLE_A:
            other = q.tb[<uint8_t>v.b[0]]
            for k in range(256):
                self.table[k] = <uint8_t>requantize_one(q.ta[k] + other, q.m, q.n, q.zp, q.lo, q.hi)
            _apply_table(self.table, <const uint8_t*>v.a, <uint8_t*>v.o, self.n)
        elif self.mode == BIN_TABLE_B:
            other = q.ta[<uint8_t>v.a[0]]
            for k in range(256):
                self.table[k] = <uint8_t>requantize_one(other + q.tb[k], q.m, q.n, q.zp, q.lo, q.hi)
            _apply_table(self.table, <const uint8_t*>v.b, <uint8_t*>v.o, self.n)
        elif self.mode == BIN_DRIVE:
            _drive(&self.bc, _add_row, &self.ctx)
        return 0


def bind_add(ins, p, out, isa=None, threads=1):
    """ADD and SUB (p.subtract) as a Step. Reference: qrt/ops/add.py."""
    cdef AddStep s = AddStep.__new__(AddStep)
    cdef qrt_add* q = &s.ctx.q
    cdef int64_t za, zb, ma, na, mb, nb, sign
    cdef int k
    _bind_binary(s, &s.ctx.v, ins, out, p.a_zero_point, p.b_zero_point)
    _check_mn(p.a_multiplier, p.a_shift, False, "input a rescale")
    _check_mn(p.b_multiplier, p.b_shift, False, "input b rescale")
    if p.a_shift < 31 or p.b_shift < 31:  # factors <= 1 (prepare's are <= 1/2): int32 sums
        raise ValueError(f"operand rescale shifts {p.a_shift}, {p.b_shift} must be >= 31 (factors <= 1)")
    r = p.out
    check_requant(r.multiplier, r.shift, 1, r.zero_point, r.lo, r.hi)
    _bind_path(isa, threads, &q.isa, &q.threads, &q.ops)
    za, zb = p.a_zero_point, p.b_zero_point
    ma, na, mb, nb = p.a_multiplier, p.a_shift, p.b_multiplier, p.b_shift
    sign = -1 if p.subtract else 1
    q.za, q.zb, q.ma, q.mb, q.sign = za, zb, ma, mb, sign
    q.ka, q.kb = na - ADD_LEFT_SHIFT, nb - ADD_LEFT_SHIFT
    q.m, q.n, q.zp, q.lo, q.hi = r.multiplier[0], r.shift[0], r.zero_point, r.lo, r.hi
    # |x - zp| <= 255 and m / 2^n < 1 (n >= 31), so |entry| <= 255 * 2^20 < 2^28 and the sum or
    # difference of two fits int32, as requantize_one takes it.
    for k in range(256):
        q.ta[k] = <int32_t>rounding_shift((<int64_t><int8_t><uint8_t>k - za) * (1 << ADD_LEFT_SHIFT), ma, na)
        q.tb[k] = <int32_t>(sign * rounding_shift((<int64_t><int8_t><uint8_t>k - zb) * (1 << ADD_LEFT_SHIFT), mb, nb))
    return s


def add(ins, p, out, isa=None, threads=1):
    """ADD and SUB once: bind and run (see bind_add)."""
    bind_add(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- MUL

cdef void _mul_row(void* c, Py_ssize_t ia, Py_ssize_t sa, Py_ssize_t ib, Py_ssize_t sb,
                   Py_ssize_t io, Py_ssize_t n) noexcept nogil:
    cdef MulCtx* ctx = <MulCtx*>c
    cdef const qrt_mul* q = &ctx.q
    cdef const int8_t* a = ctx.v.a + ia
    cdef const int8_t* b = ctx.v.b + ib
    cdef int8_t* o = ctx.v.o + io
    cdef Py_ssize_t i
    cdef int32_t za = q.za, zb = q.zb, m = q.m, sh = q.n, zp = q.zp, lo = q.lo, hi = q.hi, vb
    if sa == 1 and sb == 1:
        qrt_mul_row(q, a, b, o, n)
    elif sb == 0:
        vb = b[0] - zb
        for i in range(n):
            o[i] = qrt_requant_select((a[i * sa] - za) * vb, m, sh, zp, lo, hi)
    else:
        for i in range(n):
            o[i] = qrt_requant_select((a[i * sa] - za) * (b[i * sb] - zb), m, sh, zp, lo, hi)


cdef class MulStep(_BinaryStep):
    cdef MulCtx ctx

    cdef int run(self) noexcept nogil:
        cdef const qrt_mul* q = &self.ctx.q
        cdef const Operands* v = &self.ctx.v
        cdef int k
        cdef int32_t other
        if self.mode == BIN_ROW:
            qrt_mul_run(q, v.a, v.b, v.o, self.n)
        elif self.mode == BIN_TABLE_A:
            other = v.b[0] - q.zb
            for k in range(256):
                self.table[k] = <uint8_t>requantize_one((<int8_t><uint8_t>k - q.za) * other, q.m, q.n,
                                                        q.zp, q.lo, q.hi)
            _apply_table(self.table, <const uint8_t*>v.a, <uint8_t*>v.o, self.n)
        elif self.mode == BIN_TABLE_B:
            other = v.a[0] - q.za
            for k in range(256):
                self.table[k] = <uint8_t>requantize_one(other * (<int8_t><uint8_t>k - q.zb), q.m, q.n,
                                                        q.zp, q.lo, q.hi)
            _apply_table(self.table, <const uint8_t*>v.b, <uint8_t*>v.o, self.n)
        elif self.mode == BIN_DRIVE:
            _drive(&self.bc, _mul_row, &self.ctx)
        return 0


def bind_mul(ins, p, out, isa=None, threads=1):
    """MUL as a Step. Reference: qrt/ops/mul.py."""
    cdef MulStep s = MulStep.__new__(MulStep)
    cdef qrt_mul* q = &s.ctx.q
    _bind_binary(s, &s.ctx.v, ins, out, p.a_zero_point, p.b_zero_point)
    r = p.out
    check_requant(r.multiplier, r.shift, 1, r.zero_point, r.lo, r.hi)
    _bind_path(isa, threads, &q.isa, &q.threads, &q.ops)
    q.za, q.zb = p.a_zero_point, p.b_zero_point
    q.m, q.n, q.zp, q.lo, q.hi = r.multiplier[0], r.shift[0], r.zero_point, r.lo, r.hi
    return s


def mul(ins, p, out, isa=None, threads=1):
    """MUL once: bind and run (see bind_mul)."""
    bind_mul(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- MAXIMUM / MINIMUM

cdef struct ExtremumCtx:
    Operands v
    int8_t ta[256]  # a's byte -> a in y's scale and zero point, clamped (made at bind)
    int8_t tb[256]
    bint minimum


cdef void _extremum_row(void* c, Py_ssize_t ia, Py_ssize_t sa, Py_ssize_t ib, Py_ssize_t sb,
                        Py_ssize_t io, Py_ssize_t n) noexcept nogil:
    cdef ExtremumCtx* ctx = <ExtremumCtx*>c
    cdef const int8_t* a = ctx.v.a + ia
    cdef const int8_t* b = ctx.v.b + ib
    cdef int8_t* o = ctx.v.o + io
    cdef const int8_t* ta = ctx.ta
    cdef const int8_t* tb = ctx.tb
    cdef Py_ssize_t i
    cdef int8_t u, w
    if ctx.minimum:
        for i in range(n):
            u = ta[<uint8_t>a[i * sa]]
            w = tb[<uint8_t>b[i * sb]]
            o[i] = u if u < w else w
    else:
        for i in range(n):
            u = ta[<uint8_t>a[i * sa]]
            w = tb[<uint8_t>b[i * sb]]
            o[i] = u if u > w else w


cdef class ExtremumStep(_BinaryStep):
    cdef ExtremumCtx ctx

    cdef int run(self) noexcept nogil:
        if self.mode == BIN_ROW:
            _extremum_row(&self.ctx, 0, 1, 0, 1, 0, self.n)
        elif self.mode != BIN_EMPTY:  # one-value operands too: the walk handles stride 0
            _drive(&self.bc, _extremum_row, &self.ctx)
        return 0


def bind_maximum(ins, p, out, isa=None, threads=1):
    """MAXIMUM and MINIMUM (p.minimum) as a Step: each operand through a 256-entry table into
    y's scale, then the larger (smaller). Reference: qrt/ops/maximum.py."""
    cdef ExtremumStep s = ExtremumStep.__new__(ExtremumStep)
    _bind_binary(s, &s.ctx.v, ins, out, p.a.input_zero_point, p.b.input_zero_point)
    _rescale_table(p.a, True, <uint8_t*>s.ctx.ta)
    _rescale_table(p.b, True, <uint8_t*>s.ctx.tb)
    s.ctx.minimum = bool(p.minimum)
    _check_isa(isa)
    return s


def maximum(ins, p, out, isa=None, threads=1):
    """MAXIMUM and MINIMUM once: bind and run (see bind_maximum)."""
    bind_maximum(ins, p, out, isa, threads)()


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
    for k in range(256):
        v = (<int8_t><uint8_t>k if in_signed else k) - zx
        if int8_range:
            table[k] = <uint8_t>requantize_one(v, m, n, zy, lo, hi)
        else:
            w = rounding_shift(v, m, n) + zy
            table[k] = <uint8_t>(lo if w < lo else (hi if w > hi else w))
    return 0


cdef class RequantizeStep(Step):
    cdef const uint8_t* x
    cdef uint8_t* o
    cdef Py_ssize_t n
    cdef bint identity
    cdef uint8_t table[256]  # by the byte of x

    cdef int run(self) noexcept nogil:
        if self.n == 0:
            return 0
        if self.identity:
            memmove(self.o, self.x, self.n)
        else:
            _apply_table(self.table, self.x, self.o, self.n)
        return 0


def bind_requantize(ins, p, out, isa=None, threads=1):
    """REQUANTIZE (p: RescaleParams) as a Step; int8 or uint8 in and out. Reference:
    qrt/ops/requantize.py."""
    cdef RequantizeStep s = RequantizeStep.__new__(RequantizeStep)
    x = ins[0]
    _check_same_shape(x, out, "input")
    in_signed = _byte_signed(x, "input")
    _byte_signed(out, "out")
    s.x, s.o = _in_bytes(x, "input"), _out_bytes(out)
    s.n = out.size
    s.identity = p.identity
    if s.n and not s.identity:
        _rescale_table(p, in_signed, s.table)
    _check_isa(isa)
    s.keep = (x, out)
    return s


def requantize(ins, p, out, isa=None, threads=1):
    """REQUANTIZE once: bind and run (see bind_requantize)."""
    bind_requantize(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- CONCAT

cdef struct ConcatPart:
    const uint8_t* src
    Py_ssize_t chunk  # bytes per outer index: the input's extent along the axis times inner
    const uint8_t* table  # NULL: a copy


cdef class ConcatStep(Step):
    cdef ConcatPart* parts
    cdef Py_ssize_t count, outer, total_chunk
    cdef uint8_t* o

    def __dealloc__(self):
        PyMem_Free(self.parts)

    cdef int run(self) noexcept nogil:
        cdef Py_ssize_t k, o, offset = 0
        cdef const ConcatPart* part
        for k in range(self.count):
            part = &self.parts[k]
            for o in range(self.outer):
                if part.table == NULL:
                    memcpy(self.o + offset + o * self.total_chunk, part.src + o * part.chunk, part.chunk)
                else:
                    _apply_table(part.table, part.src + o * part.chunk,
                                 self.o + offset + o * self.total_chunk, part.chunk)
            offset += part.chunk
        return 0


def bind_concat(ins, p, out, isa=None, threads=1):
    """CONCAT along p.axis as a Step, each input re-expressed in the output's quantization
    (identity inputs copied). Reference: qrt/ops/concat.py."""
    cdef ConcatStep s = ConcatStep.__new__(ConcatStep)
    cdef Py_ssize_t axis, rank, k, inner
    cdef const int8_t[::1] xv
    cdef int8_t[::1] ov
    cdef uint8_t[:, ::1] tables
    oshape = out.shape
    rank = len(oshape)
    axis = p.axis
    if not (0 <= axis < rank):
        raise ValueError(f"axis {axis} is out of range for out of rank {rank}")
    if len(ins) == 0 or len(ins) != len(p.inputs):
        raise ValueError(f"{len(ins)} inputs but parameters for {len(p.inputs)}")
    ov = _flat_out(out)
    total = 0
    flats = []
    for k in range(len(ins)):
        x = ins[k]
        sh = x.shape
        if len(sh) != rank or sh[:axis] != oshape[:axis] or sh[axis + 1:] != oshape[axis + 1:]:
            raise ValueError(f"input {k} has shape {sh}; it must match out {oshape} except on axis {axis}")
        total += sh[axis]
        flats.append(_flat_in(x, f"input {k}"))
    if total != oshape[axis]:
        raise ValueError(f"inputs add up to {total} along axis {axis}, out has {oshape[axis]}")
    s.outer = 1
    for k in range(axis):
        s.outer *= oshape[k]
    inner = 1
    for k in range(axis + 1, rank):
        inner *= oshape[k]
    s.total_chunk = oshape[axis] * inner
    s.o = <uint8_t*>&ov[0] if ov.shape[0] else NULL
    table_arr = np.empty((len(ins), 256), np.uint8)
    tables = table_arr
    s.parts = <ConcatPart*>PyMem_Malloc(len(ins) * sizeof(ConcatPart))
    if s.parts == NULL:
        raise MemoryError()
    s.count = len(ins) if ov.shape[0] else 0  # nothing to write: no part to run
    for k in range(len(ins)):
        xv = flats[k]
        s.parts[k].src = <const uint8_t*>&xv[0] if xv.shape[0] else NULL
        s.parts[k].chunk = ins[k].shape[axis] * inner
        s.parts[k].table = NULL
        q = p.inputs[k]
        if not q.identity:
            _rescale_table(q, True, &tables[k, 0])
            s.parts[k].table = &tables[k, 0]
    _check_isa(isa)
    s.keep = (list(ins), out, table_arr)
    return s


def concat(ins, p, out, isa=None, threads=1):
    """CONCAT once: bind and run (see bind_concat)."""
    bind_concat(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- LEAKY_RELU / PRELU

cdef inline int8_t _slope_one(int64_t v, int64_t pm, int64_t pn, int64_t nm, int64_t nn,
                              int64_t zy) noexcept nogil:
    if v >= 0:
        return _clamp_int8(rounding_shift(v, pm, pn) + zy)
    return _clamp_int8(rounding_shift(v, nm, nn) + zy)


cdef struct SlopeCtx:
    const int8_t* x
    int8_t* o
    const int64_t* nm
    const int64_t* nn
    const uint8_t* tables  # NULL, or 256 entries per alpha element (by x's byte)
    int64_t zx, pm, pn, zy


cdef void _slope_row(void* c, Py_ssize_t ia, Py_ssize_t sa, Py_ssize_t ib, Py_ssize_t sb,
                     Py_ssize_t io, Py_ssize_t n) noexcept nogil:
    cdef SlopeCtx* ctx = <SlopeCtx*>c
    cdef const int8_t* x = ctx.x + ia
    cdef const int64_t* nm = ctx.nm + ib
    cdef const int64_t* nn = ctx.nn + ib
    cdef int8_t* o = ctx.o + io
    cdef const uint8_t* t
    cdef Py_ssize_t i
    cdef int64_t zx = ctx.zx, pm = ctx.pm, pn = ctx.pn, zy = ctx.zy  # o may alias ctx's fields
    if ctx.tables != NULL:
        t = ctx.tables + ib * 256
        if sb == 0:
            _apply_table(t, <const uint8_t*>x, <uint8_t*>o, n)
        else:
            for i in range(n):
                o[i] = <int8_t>t[i * sb * 256 + <uint8_t>x[i * sa]]
        return
    for i in range(n):
        o[i] = _slope_one(x[i * sa] - zx, pm, pn, nm[i * sb], nn[i * sb], zy)


cdef class SlopeStep(Step):
    cdef SlopeCtx ctx
    cdef Py_ssize_t n
    cdef Bcast bc

    cdef int run(self) noexcept nogil:
        if self.n:
            _drive(&self.bc, _slope_row, &self.ctx)
        return 0


def bind_slope(ins, p, out, isa=None, threads=1):
    """LEAKY_RELU and PRELU (p: SlopeParams; the alpha slopes, scalar or broadcast to x, are in
    p) as a Step. Reference: qrt/ops/leaky_relu.py."""
    cdef SlopeStep s = SlopeStep.__new__(SlopeStep)
    cdef SlopeCtx* ctx = &s.ctx
    cdef uint8_t[::1] tables
    cdef Py_ssize_t i, na
    cdef int k
    x = ins[0]
    _check_same_shape(x, out, "input")
    xf, of = _flat_in(x, "input"), _flat_out(out)
    cdef const int8_t[::1] xv = xf
    cdef int8_t[::1] ov = of
    nm_arr, nn_arr = p.neg_multiplier, p.neg_shift
    if nm_arr.shape != nn_arr.shape:
        raise ValueError(f"alpha multipliers {nm_arr.shape} and shifts {nn_arr.shape} differ in shape")
    _check_rank(nm_arr.shape, "alpha")
    try:
        _broadcast(out.shape, nm_arr.shape, out.shape, &s.bc)
    except ValueError:
        raise ValueError(f"alpha of shape {nm_arr.shape} does not broadcast to the input shape {out.shape}") from None
    nmf, nnf = _flat(nm_arr, "alpha multipliers"), _flat(nn_arr, "alpha shifts")
    cdef const int64_t[::1] nm = nmf
    cdef const int64_t[::1] nn = nnf
    na = nm.shape[0]
    for i in range(na):
        if not (-INT32_MAX <= nm[i] <= INT32_MAX) or not (1 <= nn[i] <= 62):
            raise ValueError(f"alpha slope {i}: multiplier {nm[i]} must lie in (-2^31, 2^31) "
                             f"and shift {nn[i]} in [1, 62]")
    _check_mn(p.pos_multiplier, p.pos_shift, False, "positive slope")
    _check_zp8(p.input_zero_point, "input zero point")
    _check_zp32(p.out_zero_point, "output zero point")
    _check_isa(isa)
    ctx.zx, ctx.pm, ctx.pn, ctx.zy = p.input_zero_point, p.pos_multiplier, p.pos_shift, p.out_zero_point
    s.n = ov.shape[0]
    s.keep = (x, out, nmf, nnf)
    if s.n == 0:
        return s
    ctx.x, ctx.o, ctx.nm, ctx.nn, ctx.tables = &xv[0], &ov[0], &nm[0], &nn[0], NULL
    # One slope (LEAKY_RELU, or a PRELU alpha of one element), or many elements per slope: one
    # 256-entry table per alpha element, by x's byte.
    if na == 1 or (na <= 4096 and s.n >= 4 * 256 * na):
        table_arr = np.empty(na * 256, np.uint8)
        tables = table_arr
        for i in range(na):
            for k in range(256):
                tables[i * 256 + k] = <uint8_t>_slope_one(<int8_t><uint8_t>k - ctx.zx, ctx.pm, ctx.pn,
                                                          nm[i], nn[i], ctx.zy)
        ctx.tables = &tables[0]
        s.keep += (table_arr,)
    return s


def slope(ins, p, out, isa=None, threads=1):
    """LEAKY_RELU and PRELU once: bind and run (see bind_slope)."""
    bind_slope(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- LUT

cdef class LutStep(Step):
    cdef const int8_t* x
    cdef const uint8_t* mid  # the table's entry 128: mid[x] = table[x + 128]
    cdef uint8_t* o
    cdef Py_ssize_t n

    cdef int run(self) noexcept nogil:
        cdef const int8_t* x = self.x  # locals: a byte store may alias any field of self
        cdef const uint8_t* mid = self.mid
        cdef uint8_t* o = self.o
        cdef Py_ssize_t i
        for i in range(self.n):
            o[i] = mid[x[i]]
        return 0


def bind_lut(ins, p, out, isa=None, threads=1):
    """LUT as a Step: y = table[x + 128], the table being ins[1] (int8 [256]), read where it
    lies at each run. Reference: qrt/ops/lut.py."""
    cdef LutStep s = LutStep.__new__(LutStep)
    x, t = ins[0], ins[1]
    _check_same_shape(x, out, "input")
    if t.shape != (256,):
        raise ValueError(f"the table has shape {t.shape}; expected (256,)")
    xf, tf, of = _flat_in(x, "input"), _flat_in(t, "table"), _flat_out(out)
    cdef const int8_t[::1] xv = xf
    cdef const int8_t[::1] tv = tf
    cdef int8_t[::1] ov = of
    _check_isa(isa)
    s.n = ov.shape[0]
    if s.n:
        s.x, s.mid, s.o = &xv[0], <const uint8_t*>&tv[128], <uint8_t*>&ov[0]
    s.keep = (x, t, out)
    return s


def lut(ins, p, out, isa=None, threads=1):
    """LUT once: bind and run (see bind_lut)."""
    bind_lut(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- SOFTMAX

cdef class SoftmaxStep(Step):
    cdef const int8_t* x
    cdef int8_t* o
    cdef const int64_t* tab
    cdef Py_ssize_t outer, length, inner
    cdef int32_t* mxs  # inner > 1: per-column maxima and totals (bind-time rows)
    cdef int64_t* totals

    cdef int run(self) noexcept nogil:
        cdef Py_ssize_t o, k, j, i, base
        cdef Py_ssize_t outer = self.outer, length = self.length, inner = self.inner
        cdef const int8_t* xv = self.x
        cdef int8_t* ov = self.o
        cdef const int64_t* tab = self.tab
        cdef int32_t* mxs = self.mxs
        cdef int64_t* totals = self.totals
        cdef int64_t mx, total, half, e, q
        # length < 2^31 and entries <= 2^31 keep every sum < 2^62 and (e << 8) + total/2 < 2^63;
        # both are >= 0 and total >= tab[0] > 0, so C division is the reference's floor division.
        if inner == 1:
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
            return 0
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
        return 0


def bind_softmax(ins, p, out, isa=None, threads=1):
    """SOFTMAX along p.axis as a Step: e = exp_table[max - x], y = clamp(((e << 8) + total / 2)
    // total - 128). Reference: qrt/ops/softmax.py."""
    cdef SoftmaxStep s = SoftmaxStep.__new__(SoftmaxStep)
    cdef Py_ssize_t axis, rank, k
    cdef int32_t[::1] mxs
    cdef int64_t[::1] totals
    x = ins[0]
    _check_same_shape(x, out, "input")
    shape = x.shape
    rank = len(shape)
    axis = p.axis
    if not (0 <= axis < rank):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    xf, of = _flat_in(x, "input"), _flat_out(out)
    cdef const int8_t[::1] xv = xf
    cdef int8_t[::1] ov = of
    tab_arr = p.exp_table
    if tab_arr.shape != (256,):
        raise ValueError(f"exp table has shape {tab_arr.shape}; expected (256,)")
    cdef const int64_t[::1] tab = tab_arr
    for k in range(256):
        if not (0 <= tab[k] <= INT32_MAX + 1):
            raise ValueError(f"exp table entry {k} = {tab[k]} must lie in [0, 2^31]")
    if tab[0] <= 0:
        raise ValueError("exp table entry 0 must be > 0 (it is the largest element's term)")
    _check_isa(isa)
    s.outer = 1
    for k in range(axis):
        s.outer *= shape[k]
    s.length = shape[axis]
    s.inner = 1
    for k in range(axis + 1, rank):
        s.inner *= shape[k]
    s.keep = (x, out, tab_arr)
    if ov.shape[0] == 0:
        s.outer = 0
        return s
    s.x, s.o, s.tab = &xv[0], &ov[0], &tab[0]
    if s.inner > 1:
        mxs_arr, totals_arr = np.empty(s.inner, np.int32), np.empty(s.inner, np.int64)
        mxs, totals = mxs_arr, totals_arr
        s.mxs, s.totals = &mxs[0], &totals[0]
        s.keep += (mxs_arr, totals_arr)
    return s


def softmax(ins, p, out, isa=None, threads=1):
    """SOFTMAX once: bind and run (see bind_softmax)."""
    bind_softmax(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- QUANTIZE / DEQUANTIZE

# dtype -> (kind as in simd/eltwise.h, lowest, highest): QUANTIZE's outputs, DEQUANTIZE's inputs
cdef dict _QKINDS = {np.dtype(np.int8): (0, -128, 127), np.dtype(np.uint8): (1, 0, 255),
                     np.dtype(np.int16): (2, -32768, 32767)}


cdef tuple _qkind(object dt, str what):
    kind = _QKINDS.get(dt)
    if kind is None:
        raise ValueError(f"{what} has dtype {dt}; expected int8, uint8 or int16")
    return kind


cdef tuple _conversion_shape(object f, object q, bint nchw):
    """(N, C, P) of a conversion between the float array f and the integer array q: with
    nchw, f is [N, C, H, W] and q [N, H, W, C] (the graph boundary's layout change); else the
    same shape, taken as one row."""
    if not nchw:
        _check_same_shape(f, q, "input")
        return 1, 1, f.size
    if f.ndim != 4 or q.shape != (f.shape[0], f.shape[2], f.shape[3], f.shape[1]):
        raise ValueError(f"float array {f.shape} (NCHW) and integer array {q.shape} (NHWC) "
                         "must hold the same tensor")
    return f.shape[0], f.shape[1], f.shape[2] * f.shape[3]


cdef class _ConversionStep(Step):
    """QUANTIZE or DEQUANTIZE. At the graph boundary the float side is the user's array, a
    new one at each run: feed() (QUANTIZE's input) and into() (DEQUANTIZE's output) point the
    step at it after checking it is what the step was bound to."""
    cdef qrt_quant q
    cdef const void* x
    cdef void* o
    cdef int quantize
    cdef bint _nonfinite
    cdef tuple float_shape

    cdef int run(self) noexcept nogil:
        cdef int rc = qrt_quant_run(&self.q, self.x, self.o, self.quantize)
        self._nonfinite = rc == 1  # quantized all the same (NaN -> zero point, +-inf saturate)
        return 0 if rc == 1 else rc

    @property
    def nonfinite(self):
        """QUANTIZE: whether the last run's float input held a NaN or an infinity (noticed
        while converting it, so the graph boundary's check costs nothing)."""
        return bool(self._nonfinite)

    cdef float* _float_side(self, a, bint writable) except? NULL:
        if (not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous
                or a.shape != self.float_shape):
            raise ValueError(f"expected a C-contiguous float32 array of shape {self.float_shape}")
        cdef const float[::1] r
        cdef float[::1] w
        if writable:
            w = a.reshape(-1)
            return &w[0] if w.shape[0] else NULL
        r = a.reshape(-1)  # the user's input may be read-only
        return <float*>&r[0] if r.shape[0] else NULL

    def feed(self, x):
        """QUANTIZE: read from x (float32, C-contiguous, the bound input's shape) from now on."""
        if not self.quantize:
            raise TypeError("feed() is for QUANTIZE steps")
        self.x = self._float_side(x, False)
        self.keep = (x, self.keep[1])

    def into(self, out):
        """DEQUANTIZE: write to out (float32, C-contiguous, the bound output's shape)."""
        if self.quantize:
            raise TypeError("into() is for DEQUANTIZE steps")
        self.o = self._float_side(out, True)
        self.keep = (self.keep[0], out)


cdef size_t _address(object a, bint writable):
    cdef const uint8_t[::1] r
    cdef uint8_t[::1] w
    if writable:
        w = _flat_out(a).view(np.uint8)
        return <size_t>&w[0] if w.shape[0] else 0
    r = _flat_in(a, "input").view(np.uint8)
    return <size_t>&r[0] if r.shape[0] else 0


cdef _bind_conversion(x, out, isa, threads, bint quantize, bint nchw):
    cdef _ConversionStep s = _ConversionStep.__new__(_ConversionStep)
    f, q = (x, out) if quantize else (out, x)
    _check_dtype(f, np.float32, "input" if quantize else "out")
    s.q.N, s.q.C, s.q.P = _conversion_shape(f, q, nchw)
    _bind_path(isa, threads, &s.q.isa, &s.q.threads, &s.q.ops)
    s.quantize, s.float_shape = quantize, f.shape
    s.x = <const void*>_address(x, False)
    s.o = <void*>_address(out, True)
    s.keep = (x, out)
    return s


def bind_quantize(ins, p, out, isa=None, threads=1, nchw=False):
    """QUANTIZE float32 -> int8, uint8 or int16 (out's dtype) as a Step; nchw: ins[0] is
    [N, C, H, W] and out [N, H, W, C]. Reference: qrt/ops/quantize.py (NaN -> zero
    point; round half to even)."""
    x = ins[0]
    kind, dlo, dhi = _qkind(out.dtype, "out")
    if not (dlo <= p.lo <= p.hi <= dhi):
        raise ValueError(f"clamp range [{p.lo}, {p.hi}] must lie inside the {out.dtype} range [{dlo}, {dhi}]")
    if not (dlo <= p.zero_point <= dhi):
        raise ValueError(f"zero point {p.zero_point} is outside the {out.dtype} range [{dlo}, {dhi}]")
    if not (p.scale > 0 and p.scale < float("inf")):
        raise ValueError(f"scale {p.scale!r} must be finite and > 0")
    cdef _ConversionStep s = _bind_conversion(x, out, isa, threads, True, nchw)
    s.q.kind, s.q.scale, s.q.zp = kind, p.scale, p.zero_point
    s.q.qlo, s.q.qhi = p.lo - p.zero_point, p.hi - p.zero_point
    return s


def quantize(ins, p, out, isa=None, threads=1):
    """QUANTIZE once: bind and run (see bind_quantize)."""
    bind_quantize(ins, p, out, isa, threads)()


def bind_dequantize(ins, p, out, isa=None, threads=1, nchw=False):
    """DEQUANTIZE int8, uint8 or int16 -> float32 as a Step: float32(s) * float32(x - zp), one
    float32 multiplication; nchw: ins[0] is [N, H, W, C] and out [N, C, H, W]. Reference:
    qrt/ops/dequantize.py."""
    x = ins[0]
    if not (-65536 <= p.zero_point <= 65536):
        raise ValueError(f"zero point {p.zero_point} is outside the int16/uint8 ranges")
    kind = _qkind(x.dtype, "input")[0]
    cdef _ConversionStep s = _bind_conversion(x, out, isa, threads, False, nchw)
    # p.scale is np.float32 in DequantizeParams (a Python float is rounded to float32, as
    # NumPy does with a weak scalar)
    s.q.kind, s.q.s, s.q.zp = kind, p.scale, p.zero_point
    return s


def dequantize(ins, p, out, isa=None, threads=1):
    """DEQUANTIZE once: bind and run (see bind_dequantize)."""
    bind_dequantize(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- PAD

cdef class PadStep(Step):
    # Output bytes filled with the fill element, then the input's rows copied in: `rows` rows of
    # `row` bytes, the first at byte `start`, the next found by an odometer over dims[:nd-1]
    # with output byte strides ostride.
    cdef const uint8_t* x
    cdef uint8_t* o
    cdef const uint8_t* fill  # one element: zero_point in out's dtype
    cdef Py_ssize_t total, isz, nd, row, rows, start
    cdef Py_ssize_t dims[MAX_RANK]
    cdef Py_ssize_t ostride[MAX_RANK]

    cdef int run(self) noexcept nogil:
        cdef Py_ssize_t r, k, n, io
        cdef Py_ssize_t idx[MAX_RANK]
        cdef uint8_t* ob = self.o
        if self.total == 0:
            return 0
        if self.isz == 1:
            memset(ob, self.fill[0], self.total)
        else:  # one element, then doubling copies
            memcpy(ob, self.fill, self.isz)
            r = self.isz
            while r < self.total:
                n = r if 2 * r <= self.total else self.total - r
                memcpy(ob + r, ob, n)
                r += n
        if self.row == 0 or self.x == NULL:
            return 0
        for k in range(self.nd - 1):
            idx[k] = 0
        io = self.start
        for r in range(self.rows):
            memcpy(ob + io, self.x + r * self.row, self.row)
            k = self.nd - 2
            while k >= 0:
                idx[k] += 1
                io += self.ostride[k]
                if idx[k] < self.dims[k]:
                    break
                io -= self.ostride[k] * self.dims[k]
                idx[k] = 0
                k -= 1
        return 0


def bind_pad(ins, p, out, isa=None, threads=1):
    """PAD as a Step: p.pads (begins, then ends) filled with p.zero_point, any rank and dtype.
    Reference: qrt/ops/pad.py."""
    cdef PadStep s = PadStep.__new__(PadStep)
    cdef Py_ssize_t rank, k, nd, r
    cdef Py_ssize_t before[MAX_RANK]
    cdef Py_ssize_t oext[MAX_RANK]
    cdef const uint8_t[::1] fill
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
    s.x, s.o = _in_bytes(x, "input"), _out_bytes(out)
    _check_isa(isa)
    s.isz = out.dtype.itemsize
    fill_arr = np.array(p.zero_point).astype(out.dtype).reshape(-1).view(np.uint8)
    fill = fill_arr
    s.fill = &fill[0]
    s.total = out.nbytes
    s.keep = (x, out, fill_arr)
    # Coalesce: a dimension without padding merges into the one before it (its index then
    # just scales that one's); the element's bytes become part of the innermost dimension.
    nd = 0
    for k in range(rank):
        if nd > 0 and pads[k] == 0 and pads[rank + k] == 0:
            s.dims[nd - 1] *= xs[k]
            before[nd - 1] *= xs[k]
            oext[nd - 1] *= xs[k]
        else:
            s.dims[nd] = xs[k]
            before[nd] = pads[k]
            oext[nd] = xs[k] + pads[k] + pads[rank + k]
            nd += 1
    if nd == 0:  # rank 0: one element
        s.dims[0], before[0], oext[0], nd = 1, 0, 1, 1
    s.dims[nd - 1] *= s.isz
    before[nd - 1] *= s.isz
    oext[nd - 1] *= s.isz
    s.nd = nd
    s.row = s.dims[nd - 1]
    s.rows = 1
    s.start = 0
    r = 1
    for k in range(nd - 1, -1, -1):
        s.ostride[k] = r
        s.start += before[k] * r
        r *= oext[k]
    for k in range(nd - 1):
        s.rows *= s.dims[k]
    return s


def pad(ins, p, out, isa=None, threads=1):
    """PAD once: bind and run (see bind_pad)."""
    bind_pad(ins, p, out, isa, threads)()


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


cdef void _transpose_run(const elem_t* src, elem_t* dst, Py_ssize_t nd, const Py_ssize_t* shape,
                         const Py_ssize_t* stride, Py_ssize_t j) noexcept nogil:
    if j >= 0:
        _permute_tiled(src, dst, nd, shape, stride, j)
    else:
        _permute(src, dst, nd, shape, stride)


cdef class TransposeStep(Step):
    # The output in C order over nd coalesced dimensions; stride: x's element stride along each.
    cdef const uint8_t* x
    cdef uint8_t* o
    cdef Py_ssize_t n, isz, nd, j  # j: the dimension x walks contiguously (tiles), or -1
    cdef Py_ssize_t shape[MAX_RANK]
    cdef Py_ssize_t stride[MAX_RANK]

    cdef int run(self) noexcept nogil:
        if self.n == 0:
            return 0
        if self.nd == 1 and self.stride[0] == 1:
            memcpy(self.o, self.x, self.n)
        elif self.isz == 1:
            _transpose_run(<const uint8_t*>self.x, <uint8_t*>self.o, self.nd, self.shape, self.stride, self.j)
        elif self.isz == 2:
            _transpose_run(<const uint16_t*>self.x, <uint16_t*>self.o, self.nd, self.shape, self.stride, self.j)
        elif self.isz == 4:
            _transpose_run(<const uint32_t*>self.x, <uint32_t*>self.o, self.nd, self.shape, self.stride, self.j)
        else:
            _transpose_run(<const uint64_t*>self.x, <uint64_t*>self.o, self.nd, self.shape, self.stride, self.j)
        return 0


def bind_transpose(ins, p, out, isa=None, threads=1):
    """TRANSPOSE by p.perm (output dimension i is input dimension perm[i]) as a Step, any rank
    <= 8 and any dtype of 1, 2, 4 or 8 bytes. Reference: qrt/ops/transpose.py."""
    cdef TransposeStep s = TransposeStep.__new__(TransposeStep)
    cdef Py_ssize_t rank, k, nd, size, st
    cdef Py_ssize_t instride[MAX_RANK]
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
    s.isz = x.dtype.itemsize
    if out.dtype.itemsize != s.isz or s.isz not in (1, 2, 4, 8):
        raise ValueError(f"input dtype {x.dtype} and out dtype {out.dtype} must have the same "
                         f"size of 1, 2, 4 or 8 bytes")
    s.x, s.o = _in_bytes(x, "input"), _out_bytes(out)
    _check_isa(isa)
    s.n = out.nbytes
    s.keep = (x, out)
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
        if nd > 0 and s.stride[nd - 1] == st * size:
            s.shape[nd - 1] *= size
            s.stride[nd - 1] = st
        else:
            s.shape[nd] = size
            s.stride[nd] = st
            nd += 1
    if nd == 0:
        s.shape[0], s.stride[0], nd = 1, 1, 1
    s.nd = nd
    s.j = -1
    if s.stride[nd - 1] != 1:
        for k in range(nd - 1):
            if s.stride[k] == 1:
                s.j = k
    return s


def transpose(ins, p, out, isa=None, threads=1):
    """TRANSPOSE once: bind and run (see bind_transpose)."""
    bind_transpose(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- RESHAPE

cdef class ReshapeStep(Step):
    cdef const uint8_t* x
    cdef uint8_t* o
    cdef Py_ssize_t n

    cdef int run(self) noexcept nogil:
        if self.n and <const uint8_t*>self.o != self.x:  # the arena may alias the two
            memmove(self.o, self.x, self.n)
        return 0


def bind_reshape(ins, p, out, isa=None, threads=1):
    """RESHAPE as a Step: the same elements in the same C order (p is None); a byte copy."""
    cdef ReshapeStep s = ReshapeStep.__new__(ReshapeStep)
    x = ins[0]
    if x.size != out.size or x.dtype.itemsize != out.dtype.itemsize:
        raise ValueError(f"cannot reshape {x.shape} {x.dtype} into out {out.shape} {out.dtype}")
    s.x, s.o = _in_bytes(x, "input"), _out_bytes(out)
    _check_isa(isa)
    s.n = out.nbytes
    s.keep = (x, out)
    return s


def reshape(ins, p, out, isa=None, threads=1):
    """RESHAPE once: bind and run (see bind_reshape)."""
    bind_reshape(ins, p, out, isa, threads)()


KERNELS = {
    "add": Kernel(add, bind_add),
    "mul": Kernel(mul, bind_mul),
    "maximum": Kernel(maximum, bind_maximum),
    "requantize": Kernel(requantize, bind_requantize),
    "concat": Kernel(concat, bind_concat),
    "slope": Kernel(slope, bind_slope),
    "lut": Kernel(lut, bind_lut),
    "softmax": Kernel(softmax, bind_softmax),
    "quantize": Kernel(quantize, bind_quantize),
    "dequantize": Kernel(dequantize, bind_dequantize),
    "pad": Kernel(pad, bind_pad),
    "transpose": Kernel(transpose, bind_transpose),
    "reshape": Kernel(reshape, bind_reshape),
}
