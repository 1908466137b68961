# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The SOFTMAX kernel, int8 in and out along any axis: e = exp_table[max - x] (the table made
by prepare, qrt/ops/softmax.py), y = clamp(((e << 8) + total / 2) // total - 128), in 64-bit
integers. Bit-exact with the reference (SPEC.md sections 2.13 and 4). Its int16 form
(softmax_int16, SPEC.md 4.6): a 4097-entry table interpolated 16 differences apart,
y = clamp(((e << 15) + total / 2) // total, 0, 32767).

Used in two steps, as in qrt/kernels/elementwise.pyx: bind_softmax(ins, p, out, isa=None,
threads=1) -> Step checks shapes and the table once (ValueError), keeps raw pointers and makes
the per-column scratch rows; step.run() then only loops, without Python or allocation.
softmax(ins, p, out) binds and runs once. `isa` and `threads` are accepted and ignored (a named
path is still checked). The bind-time helpers are common.pxd's.
"""
import numpy as np

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t

from qrt.kernels.common cimport _check_isa, _check_same_shape, _flat_in, _flat_out
from qrt.kernels.plan cimport Step

from qrt import numerics
from qrt.kernels import Kernel

cdef int64_t INT32_MAX = numerics.INT32_MAX
cdef Py_ssize_t TABLE_16 = numerics.SOFTMAX_TABLE_16
cdef int STEP_BITS_16 = numerics.SOFTMAX_STEP_BITS_16
cdef int64_t EXP_ONE_16 = 1 << numerics.SOFTMAX_EXP_BITS_16


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


# ---------------------------------------------------------------------------- SOFTMAX, int16

cdef inline int64_t _exp16(const int64_t* tab, int64_t d) noexcept nogil:
    """E[j] + (((E[j+1] - E[j]) * r + 8) >> 4), j = d >> 4, r = d & 15: |E[j+1] - E[j]| * 15 < 2^34,
    and >> of a negative int64 is the arithmetic (flooring) shift on the compilers qrt supports."""
    cdef int64_t j = d >> STEP_BITS_16
    cdef int64_t r = d & ((1 << STEP_BITS_16) - 1)
    return tab[j] + (((tab[j + 1] - tab[j]) * r + (1 << (STEP_BITS_16 - 1))) >> STEP_BITS_16)


cdef class SoftmaxInt16Step(Step):
    cdef const int16_t* x
    cdef int16_t* o
    cdef const int64_t* tab
    cdef Py_ssize_t outer, length, inner
    cdef int32_t* mxs  # inner > 1: per-column maxima and totals (bind-time rows)
    cdef int64_t* totals

    cdef int run(self) noexcept nogil:
        cdef Py_ssize_t o, k, j, i, base
        cdef Py_ssize_t outer = self.outer, length = self.length, inner = self.inner
        cdef const int16_t* xv = self.x
        cdef int16_t* ov = self.o
        cdef const int64_t* tab = self.tab
        cdef int32_t* mxs = self.mxs
        cdef int64_t* totals = self.totals
        cdef int64_t mx, total, half, e, q
        # length < 2^31 (verify) and entries in [0, 2^30] keep every sum < 2^61 and
        # (e << 15) + total/2 < 2^63; both are >= 0 and total >= tab[0] > 0, so C division is the
        # reference's floor division.
        if inner == 1:
            for o in range(outer):
                base = o * length
                mx = xv[base]
                for k in range(1, length):
                    if xv[base + k] > mx:
                        mx = xv[base + k]
                total = 0
                for k in range(length):
                    total += _exp16(tab, mx - xv[base + k])
                half = total >> 1
                for k in range(length):
                    e = _exp16(tab, mx - xv[base + k])
                    q = ((e << 15) + half) / total
                    ov[base + k] = <int16_t>(32767 if q > 32767 else q)  # q >= 0 as e >= 0
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
                    totals[j] += _exp16(tab, mxs[j] - xv[i + j])
            for k in range(length):
                i = base + k * inner
                for j in range(inner):
                    e = _exp16(tab, mxs[j] - xv[i + j])
                    q = ((e << 15) + (totals[j] >> 1)) / totals[j]
                    ov[i + j] = <int16_t>(32767 if q > 32767 else q)
        return 0


def bind_softmax_int16(ins, p, out, isa=None, threads=1):
    """SOFTMAX's int16 form along p.axis as a Step: e interpolated in the 4097-entry exp_table
    (entries in [0, 2^30], the first > 0), y = clamp(((e << 15) + total / 2) // total, 0, 32767).
    Reference: qrt/ops/softmax.py reference_int16."""
    cdef SoftmaxInt16Step s = SoftmaxInt16Step.__new__(SoftmaxInt16Step)
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
    cdef const int16_t[::1] xv = xf
    cdef int16_t[::1] ov = of
    tab_arr = p.exp_table
    if tab_arr.shape != (TABLE_16,):
        raise ValueError(f"exp table has shape {tab_arr.shape}; expected ({TABLE_16},)")
    cdef const int64_t[::1] tab = tab_arr
    for k in range(TABLE_16):
        if not (0 <= tab[k] <= EXP_ONE_16):
            raise ValueError(f"exp table entry {k} = {tab[k]} must lie in [0, 2^30]")
    if tab[0] <= 0:
        raise ValueError("exp table entry 0 must be > 0 (it is the largest element's term)")
    if shape[axis] > INT32_MAX:
        raise ValueError(f"axis length {shape[axis]} must be < 2^31")
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


def softmax_int16(ins, p, out, isa=None, threads=1):
    """SOFTMAX's int16 form once: bind and run (see bind_softmax_int16)."""
    bind_softmax_int16(ins, p, out, isa, threads)()


KERNELS = {
    "softmax": Kernel(softmax, bind_softmax),
    "softmax_int16": Kernel(softmax_int16, bind_softmax_int16),
}
