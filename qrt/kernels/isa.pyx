# cython: language_level=3
"""Which instruction-set path the compiled kernels take (qrt/kernels/simd/isa.h), and the C of
every path.

The best path this CPU supports is the default; the QRT_ISA environment variable forces one
("scalar", "avx2", "avx512vnni", "amx"), for tests and for users who want to compare. Every
path gives the same integers. "amx" uses Intel AMX tiles for the GEMM and AVX-512 VNNI for the
other ops.

The kernels' C (simd/gemm.h, depthwise.h, eltwise.h, requant.h) is compiled here and only here:
one copy of each kernel, and one per-thread scratch (simd/isa.h qrt_scratch) shared by every op,
for the whole runtime. The kernel modules cimport the entry points (isa.pxd) and see only
simd/api.h otherwise."""
import os

from libc.stdint cimport int8_t, int64_t
from libc.stdint cimport int16_t

from qrt.kernels.simd_isa cimport qrt_isa_supported

cdef extern from "simd/gemm.h":
    const qrt_gemm_ops* c_gemm_ops_for "qrt_gemm_ops_for"(int isa) noexcept nogil
    const qrt_gemm_ops* c_gemm_int16_ops_for "qrt_gemm_int16_ops_for"(int isa) noexcept nogil
    int c_gemm_run "qrt_gemm_run"(const qrt_gemm* g, const int8_t* x, int8_t* y) noexcept nogil

cdef extern from "simd/depthwise.h":
    const qrt_dw_ops* c_dw_ops_for "qrt_dw_ops_for"(int isa) noexcept nogil
    const qrt_dw_ops* c_dw_int16_ops_for "qrt_dw_int16_ops_for"(int isa) noexcept nogil
    int c_dw_run "qrt_dw_run"(const qrt_dw* d, const int8_t* x, int8_t* y) noexcept nogil

cdef extern from "simd/eltwise.h":
    const qrt_eltwise_ops* c_eltwise_ops_for "qrt_eltwise_ops_for"(int isa) noexcept nogil
    void c_add_run "qrt_add_run"(const qrt_add* p, const int8_t* a, const int8_t* b, int8_t* y,
                                 int64_t count) noexcept nogil
    void c_mul_run "qrt_mul_run"(const qrt_mul* p, const int8_t* a, const int8_t* b, int8_t* y,
                                 int64_t count) noexcept nogil
    int c_quant_run "qrt_quant_run"(const qrt_quant* q, const void* x, void* y,
                                    int quantize) noexcept nogil
    void c_add16_run "qrt_add16_run"(const qrt_add* p, const int16_t* a, const int16_t* b,
                                     int16_t* y, int64_t count) noexcept nogil
    void c_mul16_run "qrt_mul16_run"(const qrt_mul* p, const int16_t* a, const int16_t* b,
                                     int16_t* y, int64_t count) noexcept nogil
    void c_add16_row "qrt_add16_row"(const qrt_add* p, const int16_t* a, int64_t sa, const int16_t* b,
                                     int64_t sb, int16_t* y, int64_t count) noexcept nogil
    void c_mul16_row "qrt_mul16_row"(const qrt_mul* p, const int16_t* a, int64_t sa, const int16_t* b,
                                     int64_t sb, int16_t* y, int64_t count) noexcept nogil

cdef extern from "simd/requant.h":
    const qrt_requant_ops* c_requant_ops_for "qrt_requant_ops_for"(int isa) noexcept nogil

cdef extern from "simd/dynamic.h":
    const qrt_dynamic_ops* c_dynamic_ops_for "qrt_dynamic_ops_for"(int isa) noexcept nogil
    int c_dynamic_run "qrt_dynamic_run"(const qrt_dynamic* d, const float* x, float* y) noexcept nogil

cdef extern from "simd/weight_only.h":
    const qrt_weight_only_ops* c_weight_only_ops_for "qrt_weight_only_ops_for"(int isa) noexcept nogil
    int c_weight_only_run "qrt_weight_only_run"(const qrt_weight_only* g, const float* x,
                                                float* y) noexcept nogil

NAMES = ("scalar", "avx2", "avx512vnni", "amx")  # index = the C enum


def supported() -> list:
    """The paths this machine can run, slowest first."""
    return [name for i, name in enumerate(NAMES) if qrt_isa_supported(i)]


def resolve(name=None) -> int:
    """The C enum of a path: `name`, else QRT_ISA, else the best supported one. Raises
    ValueError for an unknown or unsupported name."""
    if name is None:
        name = os.environ.get("QRT_ISA") or supported()[-1]
    if name not in NAMES:
        raise ValueError(f"unknown instruction-set path '{name}'; choose one of {list(NAMES)}")
    if not qrt_isa_supported(NAMES.index(name)):
        raise ValueError(f"this CPU cannot run the '{name}' path; it supports {supported()}")
    return NAMES.index(name)


# ------------------------------------------------------------------------------------------
# The entry points isa.pxd exports (each the C function of the same name in simd/*.h)

cdef const qrt_gemm_ops* qrt_gemm_ops_for(int isa) noexcept nogil:
    return c_gemm_ops_for(isa)

cdef const qrt_gemm_ops* qrt_gemm_int16_ops_for(int isa) noexcept nogil:
    return c_gemm_int16_ops_for(isa)

cdef const qrt_dw_ops* qrt_dw_ops_for(int isa) noexcept nogil:
    return c_dw_ops_for(isa)

cdef const qrt_dw_ops* qrt_dw_int16_ops_for(int isa) noexcept nogil:
    return c_dw_int16_ops_for(isa)

cdef const qrt_eltwise_ops* qrt_eltwise_ops_for(int isa) noexcept nogil:
    return c_eltwise_ops_for(isa)

cdef const qrt_requant_ops* qrt_requant_ops_for(int isa) noexcept nogil:
    return c_requant_ops_for(isa)

cdef int qrt_gemm_run(const qrt_gemm* g, const int8_t* x, int8_t* y) noexcept nogil:
    return c_gemm_run(g, x, y)

cdef int qrt_dw_run(const qrt_dw* d, const int8_t* x, int8_t* y) noexcept nogil:
    return c_dw_run(d, x, y)

cdef void qrt_add_run(const qrt_add* p, const int8_t* a, const int8_t* b, int8_t* y,
                      int64_t count) noexcept nogil:
    c_add_run(p, a, b, y, count)

cdef void qrt_mul_run(const qrt_mul* p, const int8_t* a, const int8_t* b, int8_t* y,
                      int64_t count) noexcept nogil:
    c_mul_run(p, a, b, y, count)

cdef int qrt_quant_run(const qrt_quant* q, const void* x, void* y, int quantize) noexcept nogil:
    return c_quant_run(q, x, y, quantize)

cdef void qrt_add16_run(const qrt_add* p, const int16_t* a, const int16_t* b, int16_t* y,
                        int64_t count) noexcept nogil:
    c_add16_run(p, a, b, y, count)

cdef void qrt_mul16_run(const qrt_mul* p, const int16_t* a, const int16_t* b, int16_t* y,
                        int64_t count) noexcept nogil:
    c_mul16_run(p, a, b, y, count)

cdef void qrt_add16_row(const qrt_add* p, const int16_t* a, int64_t sa, const int16_t* b, int64_t sb,
                        int16_t* y, int64_t count) noexcept nogil:
    c_add16_row(p, a, sa, b, sb, y, count)

cdef void qrt_mul16_row(const qrt_mul* p, const int16_t* a, int64_t sa, const int16_t* b, int64_t sb,
                        int16_t* y, int64_t count) noexcept nogil:
    c_mul16_row(p, a, sa, b, sb, y, count)

cdef const qrt_dynamic_ops* qrt_dynamic_ops_for(int isa) noexcept nogil:
    return c_dynamic_ops_for(isa)

cdef int qrt_dynamic_run(const qrt_dynamic* d, const float* x, float* y) noexcept nogil:
    return c_dynamic_run(d, x, y)

cdef const qrt_weight_only_ops* qrt_weight_only_ops_for(int isa) noexcept nogil:
    return c_weight_only_ops_for(isa)

cdef int qrt_weight_only_run(const qrt_weight_only* g, const float* x, float* y) noexcept nogil:
    return c_weight_only_run(g, x, y)
