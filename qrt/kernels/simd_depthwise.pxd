# cython: language_level=3
"""simd/depthwise.h for Cython: DEPTHWISE_CONV_2D."""
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t

cdef extern from "simd/depthwise.h":
    ctypedef struct qrt_dw_ops:
        pass
    ctypedef struct qrt_dw:
        int64_t N, H, W, C, M, C_out, OH, OW, KH, KW, sh, sw, dh, dw, top, left
        int64_t taps, pairs, blocks
        const int8_t* w
        const int16_t* wp
        const int32_t* bias
        const int32_t* mult
        const int32_t* shift
        const int32_t* round32
        const int32_t* shift32
        int n33
        const int8_t* zrow
        int8_t* tail
        int64_t tail_at
        int32_t zp_y, lo, hi
        int isa, threads
        const qrt_dw_ops* ops
    const qrt_dw_ops* qrt_dw_ops_for(int isa) noexcept nogil
    int qrt_dw_run(const qrt_dw* d, const int8_t* x, int8_t* y) noexcept nogil
