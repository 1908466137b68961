# cython: language_level=3
"""The requantization of int32 sums (SPEC.md 4.2) for Cython (simd/api.h): the scalar rule, the
rows dispatched through a path's table, and the 32-bit form's tables. The table of each path,
qrt_requant_ops_for, is compiled once in qrt.kernels.isa and cimported from there (isa.pxd)."""
from libc.stdint cimport int8_t, int32_t, int64_t

cdef extern from "simd/api.h":
    ctypedef struct qrt_requant_ops:
        pass
    ctypedef struct qrt_channel_requant:  # a conv-like op's per-channel requantization
        const int32_t* bias
        const int32_t* mult
        const int32_t* shift
        const int32_t* round32
        const int32_t* shift32
        int n33
        int32_t zp_y, lo, hi
    int8_t qrt_requant_select(int32_t acc, int32_t m, int32_t n, int32_t zp, int32_t lo,
                              int32_t hi) noexcept nogil
    void qrt_requant_row(const qrt_requant_ops* ops, const int32_t* acc, const int32_t* m,
                         const int32_t* n, int64_t count, int32_t zp, int32_t lo, int32_t hi,
                         int8_t* y) noexcept nogil
    void qrt_requant1_row(const qrt_requant_ops* ops, const int32_t* acc, int64_t count, int32_t m,
                          int32_t n, int32_t zp, int32_t lo, int32_t hi, int8_t* y) noexcept nogil
    int qrt_requant_tables32(const int32_t* n, int64_t count, int32_t zp, int32_t* round32,
                             int32_t* shift32) noexcept nogil
