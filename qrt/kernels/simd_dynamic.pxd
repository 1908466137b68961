# cython: language_level=3
"""CONV_2D and FULLY_CONNECTED with dynamic inputs for Cython: the struct of simd/api.h. The
path's code, qrt_dynamic_ops_for and qrt_dynamic_run (simd/dynamic.h), is compiled once in
qrt.kernels.isa and cimported from there (isa.pxd)."""
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

from qrt.kernels.simd_gemm cimport qrt_gemm

cdef extern from "simd/api.h":
    ctypedef struct qrt_dynamic_ops:
        pass
    ctypedef struct qrt_dynamic:
        qrt_gemm g
        int64_t rows, row_len, out_rows, C_out, chunk, chunks
        const int32_t* wsum
        const float* s_w
        const float* bias
        float lo, hi
        int8_t* q
        float* s
        int32_t* zp
        uint8_t* pads
        float* range
        int isa, threads
        const qrt_dynamic_ops* ops
