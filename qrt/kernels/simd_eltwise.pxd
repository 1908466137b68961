# cython: language_level=3
"""simd/eltwise.h for Cython: same-shape ADD/SUB and MUL rows, QUANTIZE and DEQUANTIZE."""
from libc.stdint cimport int8_t, int32_t, int64_t

cdef extern from "simd/eltwise.h":
    ctypedef struct qrt_eltwise_ops:
        pass
    const qrt_eltwise_ops* qrt_eltwise_ops_for(int isa) noexcept nogil
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
    void qrt_add_run(const qrt_add* p, const int8_t* a, const int8_t* b, int8_t* y,
                     int64_t count) noexcept nogil
    void qrt_mul_row(const qrt_mul* p, const int8_t* a, const int8_t* b, int8_t* y,
                     int64_t count) noexcept nogil
    void qrt_mul_run(const qrt_mul* p, const int8_t* a, const int8_t* b, int8_t* y,
                     int64_t count) noexcept nogil
    ctypedef struct qrt_quant:
        int64_t N, C, P
        double scale, qlo, qhi
        float s
        int32_t zp
        int kind, isa, threads
        const qrt_eltwise_ops* ops
    int qrt_quant_run(const qrt_quant* q, const void* x, void* y, int quantize) noexcept nogil
