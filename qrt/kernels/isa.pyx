# cython: language_level=3
"""Which instruction-set path the compiled kernels take (qrt/kernels/simd/isa.h).

The best path this CPU supports is the default; the QRT_ISA environment variable forces one
("scalar", "avx2", "avx512vnni", "amx"), for tests and for users who want to compare. Every
path gives the same integers. "amx" uses Intel AMX tiles for the GEMM and AVX-512 VNNI for the
other ops."""
import os

from qrt.kernels.simd_isa cimport qrt_isa_supported

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
