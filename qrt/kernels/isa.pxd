# cython: language_level=3
"""The entry points of the C every path runs (simd/*.h), compiled once, in isa.pyx, and cimported
by the kernel modules: `from qrt.kernels.isa cimport qrt_gemm_run, qrt_gemm_ops_for`. Each is a
C function of isa.pyx that the importing module reaches through a pointer taken at import, so
one call per bound op (a run) or per op bind (a path's table); everything called per element or
per row is inline in simd/api.h (the rule, and the rows dispatched through a path's table)."""
from libc.stdint cimport int8_t, int64_t
from libc.stdint cimport int16_t

from qrt.kernels.simd_depthwise cimport qrt_dw, qrt_dw_ops
from qrt.kernels.simd_dynamic cimport qrt_dynamic, qrt_dynamic_ops
from qrt.kernels.simd_eltwise cimport qrt_add, qrt_eltwise_ops, qrt_mul, qrt_quant
from qrt.kernels.simd_gemm cimport qrt_gemm, qrt_gemm_ops
from qrt.kernels.simd_requant cimport qrt_requant_ops
from qrt.kernels.simd_weight_only cimport qrt_weight_only, qrt_weight_only_ops

# the path's table, taken once when a step is bound
cdef const qrt_gemm_ops* qrt_gemm_ops_for(int isa) noexcept nogil
cdef const qrt_gemm_ops* qrt_gemm_int16_ops_for(int isa) noexcept nogil  # the int16 mode's
cdef const qrt_dw_ops* qrt_dw_ops_for(int isa) noexcept nogil
cdef const qrt_dw_ops* qrt_dw_int16_ops_for(int isa) noexcept nogil  # DEPTHWISE_CONV_2D's int16 form
cdef const qrt_eltwise_ops* qrt_eltwise_ops_for(int isa) noexcept nogil
cdef const qrt_requant_ops* qrt_requant_ops_for(int isa) noexcept nogil
cdef const qrt_dynamic_ops* qrt_dynamic_ops_for(int isa) noexcept nogil
cdef const qrt_weight_only_ops* qrt_weight_only_ops_for(int isa) noexcept nogil

# one op, whole: its threads, blocks and rows are driven in C
cdef int qrt_gemm_run(const qrt_gemm* g, const int8_t* x, int8_t* y) noexcept nogil
cdef int qrt_dw_run(const qrt_dw* d, const int8_t* x, int8_t* y) noexcept nogil
cdef void qrt_add_run(const qrt_add* p, const int8_t* a, const int8_t* b, int8_t* y,
                      int64_t count) noexcept nogil
cdef void qrt_mul_run(const qrt_mul* p, const int8_t* a, const int8_t* b, int8_t* y,
                      int64_t count) noexcept nogil
cdef int qrt_quant_run(const qrt_quant* q, const void* x, void* y, int quantize) noexcept nogil
# the int16 form's ADD/SUB and MUL (simd/eltwise.h): a run, and a row with element strides
cdef void qrt_add16_run(const qrt_add* p, const int16_t* a, const int16_t* b, int16_t* y,
                        int64_t count) noexcept nogil
cdef void qrt_mul16_run(const qrt_mul* p, const int16_t* a, const int16_t* b, int16_t* y,
                        int64_t count) noexcept nogil
cdef void qrt_add16_row(const qrt_add* p, const int16_t* a, int64_t sa, const int16_t* b, int64_t sb,
                        int16_t* y, int64_t count) noexcept nogil
cdef void qrt_mul16_row(const qrt_mul* p, const int16_t* a, int64_t sa, const int16_t* b, int64_t sb,
                        int16_t* y, int64_t count) noexcept nogil
cdef int qrt_dynamic_run(const qrt_dynamic* d, const float* x, float* y) noexcept nogil
cdef int qrt_weight_only_run(const qrt_weight_only* g, const float* x, float* y) noexcept nogil
