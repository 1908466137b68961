# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""BATCH_MATMUL, int8 x int8 -> int8 (reference: qrt/ops/batch_matmul.py, bit for bit): for
each pair of broadcast leading indices, y[m, n] = requant(sum_k (a[m, k] - zp_a)(b[k, n] - zp_b)).

Per product, a's rows and b's columns are first copied as int16 differences (x - zp), b's
transposed to [N, K] unless transpose_b already stores it so: the inner loop is then a dot
product of two contiguous int16 rows, which gcc vectorises (pmaddwd), and the sums are exact
in int32 under the verifier's bound (K * 255 * 255 < 2^31). The scratch rows are made at bind;
run() computes only. `isa` is checked and otherwise unused (one C path), `threads` ignored.
"""
import numpy as np

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t

from qrt.kernels.common cimport _check_isa, _in_bytes, _out_bytes
from qrt.kernels.numerics cimport check_requant, requantize_one
from qrt.kernels.plan cimport Step

from qrt.kernels import Kernel
from qrt.ops.batch_matmul import output_shape

DEF MAX_LEAD = 8


cdef class BatchMatMulStep(Step):
    cdef const int8_t* a
    cdef const int8_t* b
    cdef int8_t* y
    cdef int16_t* ra  # [M, K] scratch
    cdef int16_t* rb  # [N, K] scratch
    cdef Py_ssize_t M, N, K, batches, lead
    cdef bint tb
    cdef int32_t zp_a, zp_b, m, n, zp_y, lo, hi
    cdef Py_ssize_t ya[MAX_LEAD]   # per leading dimension: y's extent, a's and b's strides (0: broadcast)
    cdef Py_ssize_t sa[MAX_LEAD]
    cdef Py_ssize_t sb[MAX_LEAD]

    cdef int run(self) noexcept nogil:
        cdef Py_ssize_t bi, j, rem, oa, ob, i, kk, c
        cdef const int8_t* pa
        cdef const int8_t* pb
        cdef int16_t* row
        cdef const int16_t* r1
        cdef const int16_t* r2
        cdef int32_t acc
        cdef Py_ssize_t MK = self.M * self.K, KN = self.K * self.N
        for bi in range(self.batches):
            rem, oa, ob = bi, 0, 0
            for j in range(self.lead - 1, -1, -1):  # y's leading index -> a's and b's offsets
                oa += (rem % self.ya[j]) * self.sa[j]
                ob += (rem % self.ya[j]) * self.sb[j]
                rem //= self.ya[j]
            pa = self.a + oa * MK
            pb = self.b + ob * KN
            for i in range(MK):
                self.ra[i] = <int16_t>pa[i] - self.zp_a
            if self.tb:  # b is [N, K] already
                for i in range(KN):
                    self.rb[i] = <int16_t>pb[i] - self.zp_b
            else:
                for kk in range(self.K):
                    for c in range(self.N):
                        self.rb[c * self.K + kk] = <int16_t>pb[kk * self.N + c] - self.zp_b
            for i in range(self.M):
                r1 = self.ra + i * self.K
                for c in range(self.N):
                    r2 = self.rb + c * self.K
                    acc = 0
                    for kk in range(self.K):
                        acc = acc + <int32_t>r1[kk] * r2[kk]
                    self.y[(bi * self.M + i) * self.N + c] = requantize_one(acc, self.m, self.n, self.zp_y,
                                                                            self.lo, self.hi)
        return 0


def _lead_strides(x, int lead):
    """x's stride, in whole matrices, along each of y's `lead` leading dimensions (x's own,
    right-aligned; 0 where x broadcasts)."""
    dims = (1,) * (lead - (x.ndim - 2)) + tuple(x.shape[:x.ndim - 2])
    strides, step = [0] * lead, 1
    for j in range(lead - 1, -1, -1):
        strides[j] = 0 if dims[j] == 1 else step
        step *= dims[j]
    return strides


def _int8(x, what):
    if not isinstance(x, np.ndarray) or x.dtype != np.int8 or not x.flags.c_contiguous:
        raise ValueError(f"{what} must be a C-contiguous int8 array")
    return x


def bind_batch_matmul(ins, p, out, isa=None, threads=1):
    """BATCH_MATMUL as a Step: ins = [a [..., M, K], b [..., K, N] (transpose_b: [..., N, K])],
    out [..., M, N] int8, leading dimensions broadcast (ValueError on anything else)."""
    cdef BatchMatMulStep s = BatchMatMulStep.__new__(BatchMatMulStep)
    cdef const int32_t[::1] mult = p.out.multiplier
    cdef const int32_t[::1] shift = p.out.shift
    cdef int16_t[::1] ra, rb
    if len(ins) != 2:
        raise ValueError(f"expected inputs [a, b], got {len(ins)}")
    a, b, y = _int8(ins[0], "a"), _int8(ins[1], "b"), _int8(out, "out")
    shape = output_shape(a.shape, b.shape, bool(p.transpose_b))
    if isinstance(shape, str):
        raise ValueError(shape)
    if y.shape != shape:
        raise ValueError(f"out has shape {y.shape}; expected {shape}")
    check_requant(mult, shift, 1, p.out.zero_point, p.out.lo, p.out.hi)
    for zp, what in ((p.zp_a, "a"), (p.zp_b, "b")):
        if not -128 <= zp <= 127:
            raise ValueError(f"zero point of {what} {zp} must lie in [-128, 127]")
    _check_isa(isa)
    M, K = a.shape[a.ndim - 2], a.shape[a.ndim - 1]
    N = shape[len(shape) - 1]
    if K * 255 * 255 > 2**31 - 1:
        raise ValueError(f"reduction length {K} can overflow the int32 accumulator")
    lead = shape[:len(shape) - 2]
    if len(lead) > MAX_LEAD:
        raise ValueError(f"at most {MAX_LEAD} leading dimensions, not {len(lead)}")
    s.lead = len(lead)
    s.batches = int(np.prod(lead, dtype=np.int64))
    sa, sb = _lead_strides(a, len(lead)), _lead_strides(b, len(lead))
    for j in range(len(lead)):
        s.ya[j], s.sa[j], s.sb[j] = lead[j], sa[j], sb[j]
    s.M, s.N, s.K, s.tb = M, N, K, bool(p.transpose_b)
    s.zp_a, s.zp_b = p.zp_a, p.zp_b
    s.m, s.n, s.zp_y, s.lo, s.hi = mult[0], shift[0], p.out.zero_point, p.out.lo, p.out.hi
    ra_arr, rb_arr = np.empty(max(M * K, 1), np.int16), np.empty(max(N * K, 1), np.int16)
    ra, rb = ra_arr, rb_arr
    s.ra, s.rb = &ra[0], &rb[0]
    s.a, s.b = <const int8_t*>_in_bytes(a, "a"), <const int8_t*>_in_bytes(b, "b")
    s.y = <int8_t*>_out_bytes(y)
    if s.y == NULL:  # an empty output
        s.batches = 0
    s.keep = (a, b, y, ra_arr, rb_arr)
    return s


def batch_matmul(ins, p, out, isa=None, threads=1):
    """BATCH_MATMUL once: bind and run (see bind_batch_matmul)."""
    bind_batch_matmul(ins, p, out, isa, threads)()


KERNELS = {
    "batch_matmul": Kernel(batch_matmul, bind_batch_matmul),
}
