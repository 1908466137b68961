# cython: language_level=3
"""DEPTHWISE_CONV_2D for Cython: its struct (simd/api.h) and its packed-weight layout
(simd/layout.h). The path's code, qrt_dw_ops_for (qrt_dw_int16_ops_for for the int16 form) and
qrt_dw_run, is compiled once in qrt.kernels.isa and cimported from there (isa.pxd)."""
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t

from qrt.kernels.simd_requant cimport qrt_channel_requant

cdef extern from "simd/api.h":
    ctypedef struct qrt_dw_ops:
        pass
    ctypedef struct qrt_dw:
        int64_t N, H, W, C, M, C_out, OH, OW, KH, KW, sh, sw, dh, dw, top, left
        int64_t taps, pairs, blocks
        const int8_t* w
        const int16_t* wp
        qrt_channel_requant rq
        const int8_t* zrow
        int8_t* tail
        int64_t tail_at
        int isa, threads
        const qrt_dw_ops* ops


cdef extern from "simd/layout.h":
    enum:
        QRT_DW_BLOCK
    int64_t qrt_dw_block_elems(int64_t pairs) noexcept nogil
    void qrt_dw_pack_weights(const int8_t* w, int64_t taps, int64_t C_out, int64_t pairs,
                             int16_t* out) noexcept nogil
