# cython: language_level=3
"""simd/isa.h for Cython: the instruction-set paths (the C enum; NAMES in isa.pyx)."""

cdef extern from "simd/isa.h":
    enum:
        QRT_SCALAR
        QRT_AVX2
        QRT_AVX512VNNI
        QRT_AMX
    int qrt_isa_supported(int isa) noexcept nogil
