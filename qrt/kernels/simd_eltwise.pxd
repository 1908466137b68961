# cython: language_level=3
"""Same-shape ADD/SUB and MUL rows, QUANTIZE and DEQUANTIZE for Cython: the structs and the
inline row dispatch (simd/api.h). The paths' code, qrt_eltwise_ops_for and the qrt_*_run
functions, is compiled once in qrt.kernels.isa and cimported from there (isa.pxd)."""
from libc.stdint cimport int8_t, int32_t, int64_t

cdef extern from "simd/api.h":
    ctypedef struct qrt_eltwise_ops:
        pass
    ctypedef struct qrt_add:
        int32_t ta[256]
        int32_t tb[256]
        int32_t za, zb, ma, mb, ka, kb, sign, m, n, zp, lo, hi
        int isa, threads
        const qrt_eltwise_ops* ops
    ctypedef struct qrt_mul:
        int32_t za, zb, m, n, zp, lo, hi
        int isa, threads
        const qrt_eltwise_ops* ops
    void qrt_add_row(const qrt_add* p, const int8_t* a, const int8_t* b, int8_t* y,
                     int64_t count) noexcept nogil
    void qrt_mul_row(const qrt_mul* p, const int8_t* a, const int8_t* b, int8_t* y,
                     int64_t count) noexcept nogil
    ctypedef struct qrt_quant:
        int64_t N, C, P
        double scale, qlo, qhi
        float s
        int32_t zp
        int kind, isa, threads
        const qrt_eltwise_ops* ops
