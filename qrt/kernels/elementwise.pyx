# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Elementwise kernels: ADD/SUB, MUL, MAXIMUM/MINIMUM, REQUANTIZE, LEAKY_RELU/PRELU, LUT,
QUANTIZE, DEQUANTIZE. The data-movement kernels (CONCAT, PAD, TRANSPOSE, RESHAPE) are in
movement.pyx, SOFTMAX in softmax.pyx; the bind-time helpers the three share (flat views, checks,
the rescale table) in common.pxd.

Each op is used in two steps, as in qrt/kernels/gemm.pyx:
  bind_NAME(ins, p, out, isa=None, threads=1) -> Step   once per thread arena: shapes, dtypes
      and parameter ranges checked (ValueError), raw pointers to the inputs and the output
      kept, and everything that depends on the parameters only made here: lookup tables,
      broadcast strides, scratch rows;
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

The int16 forms (SPEC.md 4.6; "add_int16", "mul_int16", "requantize_int16") share the broadcast
walk. ADD/SUB and MUL of int16 operands compute every element with the same integer formulas
in 64 bits (simd/eltwise.h qrt_add16_row, qrt_mul16_row: 8 lanes at a time on avx2, avx512vnni
and amx, long same-shape rows over `threads`); REQUANTIZE from int8/uint8 to int16 goes through
a 256-entry table, from int16 element by element (common.pxd _rescale16).
"""
import numpy as np

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t
from libc.string cimport memmove

from qrt.kernels.common cimport (
    MAX_RANK, Rescale16, _apply_table, _check_clamp, _check_dtype, _check_isa, _check_mn, _check_rank,
    _check_same_shape, _check_zp8, _check_zp32, _check_zp_in, _flat, _flat_in, _flat_out, _in_bytes,
    _out_bytes, _rescale16, _rescale16_params, _rescale_table, _rescale_table16,
)
from qrt.kernels.numerics cimport check_requant, requantize_one, rounding_shift
from qrt.kernels.plan cimport Step

from qrt import numerics
from qrt.ops.lut import INT16_TABLE
from qrt.kernels import Kernel, isa as _isa

from qrt.kernels.isa cimport (
    qrt_add16_row, qrt_add16_run, qrt_add_run, qrt_eltwise_ops_for, qrt_mul16_row, qrt_mul16_run, qrt_mul_run,
    qrt_quant_run,
)
from qrt.kernels.simd_eltwise cimport (
    qrt_add, qrt_add_row, qrt_eltwise_ops, qrt_mul, qrt_mul_row, qrt_quant,
)
from qrt.kernels.simd_requant cimport qrt_requant_select


cdef enum:
    # A one-value operand is folded into a 256-entry table when the other is longer than that.
    TABLE_MIN = 256

cdef int ADD_LEFT_SHIFT = numerics.ADD_LEFT_SHIFT
cdef int ADD_LEFT_SHIFT_16 = numerics.ADD_LEFT_SHIFT_16
cdef int64_t INT32_MAX = numerics.INT32_MAX


# ---------------------------------------------------------------------------- helpers

cdef inline int8_t _clamp_int8(int64_t v) noexcept nogil:
    if v < -128:
        return -128
    if v > 127:
        return 127
    return <int8_t>v


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


cdef int _bind_operands(_BinaryStep s, ins, out, object dtype, bint tables, const uint8_t** a,
                        const uint8_t** b, uint8_t** o) except -1:
    """Shapes and dtypes of a binary op's operands (all three of `dtype`); the walk, the mode
    (the table modes only if `tables`: int8 operands) and the addresses (unset when empty)."""
    x, w = ins[0], ins[1]
    af, bf, of = _flat_in(x, "input a"), _flat_in(w, "input b"), _flat_out(out)
    _check_dtype(x, dtype, "input a")
    _check_dtype(w, dtype, "input b")
    _check_dtype(out, dtype, "out")
    _broadcast(x.shape, w.shape, out.shape, &s.bc)
    s.keep = (x, w, out)
    s.n = of.shape[0]
    if s.n == 0:
        s.mode = BIN_EMPTY
        return 0
    a[0], b[0], o[0] = _in_bytes(x, "input a"), _in_bytes(w, "input b"), _out_bytes(out)
    if _contiguous(&s.bc):
        s.mode = BIN_ROW
    elif tables and bf.shape[0] == 1 and af.shape[0] == s.n and s.n > TABLE_MIN:
        s.mode = BIN_TABLE_A
    elif tables and af.shape[0] == 1 and bf.shape[0] == s.n and s.n > TABLE_MIN:
        s.mode = BIN_TABLE_B
    else:
        s.mode = BIN_DRIVE
    return 0


cdef int _bind_binary(_BinaryStep s, Operands* v, ins, out, za, zb) except -1:
    """Shapes, dtypes and zero points of int8 ADD/SUB, MUL, MAXIMUM/MINIMUM; the pointers, walk and mode."""
    cdef const uint8_t* a = NULL
    cdef const uint8_t* b = NULL
    cdef uint8_t* o = NULL
    _bind_operands(s, ins, out, np.int8, True, &a, &b, &o)
    _check_zp8(za, "input a zero point")
    _check_zp8(zb, "input b zero point")
    v.a, v.b, v.o = <const int8_t*>a, <const int8_t*>b, <int8_t*>o
    return 0


cdef int _bind_path(object isa, object threads, int* path, int* count,
                    const qrt_eltwise_ops** ops) except -1:
    """The path (and its functions, simd/eltwise.h qrt_eltwise_ops_for) and the thread count."""
    path[0] = _isa.resolve(isa)
    count[0] = max(1, int(threads))
    ops[0] = qrt_eltwise_ops_for(path[0])
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


# ---------------------------------------------------------------------------- int16 ADD / SUB / MUL

# The int16 form (SPEC.md 4.6): int16 operands and output. No tables (an operand has 65536
# values): the rows of simd/eltwise.h compute every element, the path's vector code on
# contiguous rows (same shapes: split over `threads`), the scalar rule on strided ones.

cdef struct Operands16:
    const int16_t* a
    const int16_t* b
    int16_t* o


cdef struct Add16Ctx:
    Operands16 v
    qrt_add q


cdef struct Mul16Ctx:
    Operands16 v
    qrt_mul q


cdef void _add16_row(void* c, Py_ssize_t ia, Py_ssize_t sa, Py_ssize_t ib, Py_ssize_t sb,
                     Py_ssize_t io, Py_ssize_t n) noexcept nogil:
    cdef Add16Ctx* ctx = <Add16Ctx*>c
    qrt_add16_row(&ctx.q, ctx.v.a + ia, sa, ctx.v.b + ib, sb, ctx.v.o + io, n)


cdef void _mul16_row(void* c, Py_ssize_t ia, Py_ssize_t sa, Py_ssize_t ib, Py_ssize_t sb,
                     Py_ssize_t io, Py_ssize_t n) noexcept nogil:
    cdef Mul16Ctx* ctx = <Mul16Ctx*>c
    qrt_mul16_row(&ctx.q, ctx.v.a + ia, sa, ctx.v.b + ib, sb, ctx.v.o + io, n)


cdef class Add16Step(_BinaryStep):
    cdef Add16Ctx ctx

    cdef int run(self) noexcept nogil:
        if self.mode == BIN_ROW:
            qrt_add16_run(&self.ctx.q, self.ctx.v.a, self.ctx.v.b, self.ctx.v.o, self.n)
        elif self.mode == BIN_DRIVE:
            _drive(&self.bc, _add16_row, &self.ctx)
        return 0


cdef class Mul16Step(_BinaryStep):
    cdef Mul16Ctx ctx

    cdef int run(self) noexcept nogil:
        if self.mode == BIN_ROW:
            qrt_mul16_run(&self.ctx.q, self.ctx.v.a, self.ctx.v.b, self.ctx.v.o, self.n)
        elif self.mode == BIN_DRIVE:
            _drive(&self.bc, _mul16_row, &self.ctx)
        return 0


cdef int64_t _span16(object zp, str what) except -1:
    """The largest |x - zp| of an int16 x, for a zero point that must lie in int16."""
    _check_zp_in(zp, np.int16, what)
    return max(32767 - zp, zp + 32768)


cdef int _bind16(_BinaryStep s, Operands16* v, ins, out, r, isa, threads, int* path, int* count,
                 const qrt_eltwise_ops** ops) except -1:
    """What int16 ADD/SUB and MUL share: operands, walk, mode, the output requantization (one
    multiplier; [lo, hi] inside int16), the path and the thread count."""
    cdef const uint8_t* a = NULL
    cdef const uint8_t* b = NULL
    cdef uint8_t* o = NULL
    _bind_operands(s, ins, out, np.int16, False, &a, &b, &o)
    v.a, v.b, v.o = <const int16_t*>a, <const int16_t*>b, <int16_t*>o
    if len(r.multiplier) != 1 or len(r.shift) != 1:
        raise ValueError(f"requantization needs one multiplier and shift, got {len(r.multiplier)} and {len(r.shift)}")
    _check_mn(r.multiplier[0], r.shift[0], False, "output requantization")
    _check_clamp(r.lo, r.hi, np.int16)
    _check_zp32(r.zero_point, "output zero point")
    _bind_path(isa, threads, path, count, ops)
    return 0


def bind_add_int16(ins, p, out, isa=None, threads=1):
    """ADD and SUB (p.subtract) of int16 activations as a Step: p.left_shift must be 15
    (ADD_LEFT_SHIFT_16) and the operand factors <= 1/2, as prepare makes them; then every
    intermediate is exact (simd/eltwise.h). Reference: qrt/ops/add.py."""
    cdef Add16Step s = Add16Step.__new__(Add16Step)
    cdef qrt_add* q = &s.ctx.q
    _bind16(s, &s.ctx.v, ins, out, p.out, isa, threads, &q.isa, &q.threads, &q.ops)
    _span16(p.a_zero_point, "input a zero point")
    _span16(p.b_zero_point, "input b zero point")
    if p.left_shift != ADD_LEFT_SHIFT_16:
        raise ValueError(f"int16 operands are shifted left by {ADD_LEFT_SHIFT_16} bits, not {p.left_shift}")
    _check_mn(p.a_multiplier, p.a_shift, False, "input a rescale")
    _check_mn(p.b_multiplier, p.b_shift, False, "input b rescale")
    for m, n in ((p.a_multiplier, p.a_shift), (p.b_multiplier, p.b_shift)):
        if n < 31 or 2 * m > 2**n:  # factor m / 2^n <= 1/2: |a' + b'| < 2^31
            raise ValueError(f"operand rescale (multiplier {m}, shift {n}) must be a factor <= 1/2 "
                             "with a shift >= 31")
    r = p.out
    q.za, q.zb, q.ma, q.mb = p.a_zero_point, p.b_zero_point, p.a_multiplier, p.b_multiplier
    q.ka, q.kb = p.a_shift - ADD_LEFT_SHIFT_16, p.b_shift - ADD_LEFT_SHIFT_16
    q.sign = -1 if p.subtract else 1
    q.m, q.n, q.zp, q.lo, q.hi = r.multiplier[0], r.shift[0], r.zero_point, r.lo, r.hi
    return s


def add_int16(ins, p, out, isa=None, threads=1):
    """int16 ADD and SUB once: bind and run (see bind_add_int16)."""
    bind_add_int16(ins, p, out, isa, threads)()


def bind_mul_int16(ins, p, out, isa=None, threads=1):
    """MUL of int16 activations as a Step: the zero points must keep every product
    (a - zp_a) * (b - zp_b) in int32 (zero points 0, as SPEC.md 4.6 has them: at most 2^30).
    Reference: qrt/ops/mul.py."""
    cdef Mul16Step s = Mul16Step.__new__(Mul16Step)
    cdef qrt_mul* q = &s.ctx.q
    _bind16(s, &s.ctx.v, ins, out, p.out, isa, threads, &q.isa, &q.threads, &q.ops)
    span = _span16(p.a_zero_point, "input a zero point") * _span16(p.b_zero_point, "input b zero point")
    if span > INT32_MAX:
        raise ValueError(f"zero points {p.a_zero_point}, {p.b_zero_point} let a product reach {span} > 2^31 - 1")
    r = p.out
    q.za, q.zb = p.a_zero_point, p.b_zero_point
    q.m, q.n, q.zp, q.lo, q.hi = r.multiplier[0], r.shift[0], r.zero_point, r.lo, r.hi
    return s


def mul_int16(ins, p, out, isa=None, threads=1):
    """int16 MUL once: bind and run (see bind_mul_int16)."""
    bind_mul_int16(ins, p, out, isa, threads)()


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


# The int16 form of REQUANTIZE (either side int16): an int8 or uint8 input through a 256-entry
# table of int16 results; an int16 input rescaled element by element (common.pxd _rescale16).
cdef enum Requant16Mode:
    RQ16_COPY  # identity: the same dtype, scale and zero point, no clamp
    RQ16_TABLE  # int8 / uint8 -> int16
    RQ16_TO_INT8  # int16 -> int8
    RQ16_TO_UINT8  # int16 -> uint8
    RQ16_TO_INT16  # int16 -> int16


cdef class Requantize16Step(Step):
    cdef const uint8_t* x
    cdef uint8_t* o
    cdef Py_ssize_t n, nbytes  # elements, output bytes
    cdef Requant16Mode mode
    cdef Rescale16 r
    cdef int16_t table[256]  # RQ16_TABLE: by the byte of x

    cdef int run(self) noexcept nogil:
        cdef const int16_t* t = self.table  # locals: int16 stores may alias the table
        cdef const uint8_t* x = self.x
        cdef int16_t* o16 = <int16_t*>self.o
        cdef Py_ssize_t i
        if self.n == 0:
            return 0
        if self.mode == RQ16_COPY:
            memmove(self.o, self.x, self.nbytes)
        elif self.mode == RQ16_TABLE:
            for i in range(self.n):
                o16[i] = t[x[i]]
        elif self.mode == RQ16_TO_INT8:
            _rescale16(<const int16_t*>x, <int8_t*>self.o, self.n, &self.r)
        elif self.mode == RQ16_TO_UINT8:
            _rescale16(<const int16_t*>x, <uint8_t*>self.o, self.n, &self.r)
        else:
            _rescale16(<const int16_t*>x, o16, self.n, &self.r)
        return 0


cdef object _requant_dtype(object a, str what):
    _flat_in(a, what)  # an array (ValueError otherwise)
    dt = a.dtype
    if dt != np.int8 and dt != np.uint8 and dt != np.int16:
        raise ValueError(f"{what} has dtype {dt}; expected int8, uint8 or int16")
    return dt


def bind_requantize_int16(ins, p, out, isa=None, threads=1):
    """REQUANTIZE (p: RescaleParams) with an int16 input or output as a Step: int8, uint8 or
    int16 in and out (8-bit on both sides is bind_requantize's). Reference:
    qrt/ops/requantize.py."""
    x = ins[0]
    din, dout = _requant_dtype(x, "input"), _requant_dtype(out, "out")
    if din != np.int16 and dout != np.int16:
        return bind_requantize(ins, p, out, isa, threads)
    cdef Requantize16Step s = Requantize16Step.__new__(Requantize16Step)
    _check_same_shape(x, out, "input")
    s.x, s.o = _in_bytes(x, "input"), _out_bytes(out)
    s.n, s.nbytes = out.size, out.nbytes
    _check_isa(isa)
    s.keep = (x, out)
    if p.identity:
        if din != dout:
            raise ValueError(f"an identity requantization copies; input {din} and out {dout} differ")
        s.mode = RQ16_COPY
        return s
    _rescale16_params(p, din, dout, &s.r)
    if din != np.int16:
        _rescale_table16(&s.r, din == np.int8, s.table)
        s.mode = RQ16_TABLE
    elif dout == np.int8:
        s.mode = RQ16_TO_INT8
    elif dout == np.uint8:
        s.mode = RQ16_TO_UINT8
    else:
        s.mode = RQ16_TO_INT16
    return s


def requantize_int16(ins, p, out, isa=None, threads=1):
    """int16 REQUANTIZE once: bind and run (see bind_requantize_int16)."""
    bind_requantize_int16(ins, p, out, isa, threads)()


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


cdef class Lut16Step(Step):
    cdef const int16_t* x
    cdef const int16_t* t  # INT16_TABLE entries, 128 inputs apart
    cdef int16_t* o
    cdef Py_ssize_t n

    cdef int run(self) noexcept nogil:
        cdef const int16_t* x = self.x  # locals: a store may alias any field of self
        cdef const int16_t* t = self.t
        cdef int16_t* o = self.o
        cdef Py_ssize_t i
        cdef int32_t u, j, a
        for i in range(self.n):
            u = <int32_t>x[i] + 32768
            j = u >> 7
            a = t[j]
            o[i] = <int16_t>(a + ((((<int32_t>t[j + 1]) - a) * (u & 127) + 64) >> 7))
        return 0


def bind_lut_int16(ins, p, out, isa=None, threads=1):
    """LUT's int16 form as a Step: the 513-entry table ins[1] interpolated linearly, 128 inputs
    between entries (an arithmetic shift: |t[j+1] - t[j]| * 127 < 2^23). Reference:
    qrt/ops/lut.py reference_int16."""
    cdef Lut16Step s = Lut16Step.__new__(Lut16Step)
    x, t = ins[0], ins[1]
    _check_same_shape(x, out, "input")
    if t.shape != (INT16_TABLE,):
        raise ValueError(f"the table has shape {t.shape}; expected ({INT16_TABLE},)")
    for a, what in ((x, "input"), (t, "table"), (out, "output")):
        if np.asarray(a).dtype != np.int16:
            raise ValueError(f"the {what} must be int16, got {np.asarray(a).dtype}")
    xf, tf, of = _flat_in(x, "input"), _flat_in(t, "table"), _flat_out(out)
    cdef const int16_t[::1] xv = xf
    cdef const int16_t[::1] tv = tf
    cdef int16_t[::1] ov = of
    _check_isa(isa)
    s.n = ov.shape[0]
    if s.n:
        s.x, s.t, s.o = &xv[0], &tv[0], &ov[0]
    s.keep = (x, t, out)
    return s


def lut_int16(ins, p, out, isa=None, threads=1):
    """LUT's int16 form once: bind and run (see bind_lut_int16)."""
    bind_lut_int16(ins, p, out, isa, threads)()


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


KERNELS = {
    "add": Kernel(add, bind_add),
    "mul": Kernel(mul, bind_mul),
    "maximum": Kernel(maximum, bind_maximum),
    "requantize": Kernel(requantize, bind_requantize),
    "add_int16": Kernel(add_int16, bind_add_int16),
    "mul_int16": Kernel(mul_int16, bind_mul_int16),
    "requantize_int16": Kernel(requantize_int16, bind_requantize_int16),
    "slope": Kernel(slope, bind_slope),
    "lut": Kernel(lut, bind_lut),
    "lut_int16": Kernel(lut_int16, bind_lut_int16),
    "quantize": Kernel(quantize, bind_quantize),
    "dequantize": Kernel(dequantize, bind_dequantize),
}
