# cython: language_level=3
"""The weight-only CONV_2D / FULLY_CONNECTED kernel for Cython: its struct and the path's table
type (the first part of simd/weight_only.h, included here alone: QRT_WEIGHT_ONLY_API_ONLY). The
path's code, qrt_weight_only_ops_for and qrt_weight_only_run, is compiled once in
qrt.kernels.isa and cimported from there (isa.pxd)."""
from libc.stdint cimport int64_t, uint8_t

cdef extern from *:
    """
    #define QRT_WEIGHT_ONLY_API_ONLY
    #include "simd/weight_only.h"
    #undef QRT_WEIGHT_ONLY_API_ONLY
    """
    enum:
        QRT_WO_PANEL
    ctypedef struct qrt_weight_only_ops:
        int64_t mr
    ctypedef struct qrt_weight_only:
        int64_t N, H, W, C_in, OH, OW, C_out, KH, KW, sh, sw, dh, dw, top, left
        int64_t groups, cin_g, cout_g, K, panels, group_size, kgroups
        int int4
        const uint8_t* w
        const float* scales
        const float* bias
        float lo, hi
        int isa, threads
        const qrt_weight_only_ops* ops
