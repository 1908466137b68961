# cython: language_level=3
"""The GEMM of CONV_2D and FULLY_CONNECTED for Cython: its struct (simd/api.h) and the packed
layout (simd/layout.h). The path's code, qrt_gemm_ops_for and qrt_gemm_run, is compiled once in
qrt.kernels.isa and cimported from there (isa.pxd)."""
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

from qrt.kernels.simd_requant cimport qrt_channel_requant

cdef extern from "simd/api.h":
    ctypedef struct qrt_gemm_ops:
        int64_t mr
        int es, kg, k_align, xs
    ctypedef struct qrt_gemm:
        int64_t N, H, W, C_in, OH, OW, C_out, KH, KW, sh, sw, dh, dw, top, left
        int64_t groups, cin_g, cout_g, K4, panels
        uint8_t pad_u8
        const uint8_t* pad_n  # NULL, or a flipped zero point per image (dynamic.h)
        const int8_t* w
        int w4  # w holds int4 panels (layout.h qrt_gemm_pack_int4)
        qrt_channel_requant rq
        int32_t* y32  # NULL, or the int32 mode's output (dynamic.h)
        int isa, threads
        const qrt_gemm_ops* ops

cdef extern from "simd/layout.h":
    enum:
        QRT_PANEL
    void qrt_gemm_pack_weights(const int8_t* w, int64_t rows, int64_t K, int64_t cout_g, int64_t K4,
                               int64_t panels, int64_t kg, int8_t* out, int64_t* sums) noexcept nogil
    void qrt_gemm_pack_int4(const int8_t* panels, int64_t n, uint8_t* out) noexcept nogil
