"""Compiled kernels (Cython over C in simd/), each the fast twin of an op's NumPy reference in
qrt/ops/<op>.py and tested bit for bit against it. Each kernel module lists its kernels in
KERNELS under the names qrt.ops' OpDef.kernel uses."""
from __future__ import annotations

from typing import Callable, NamedTuple


class Kernel(NamedTuple):
    run: Callable  # run(ins, p, out, isa=None, threads=1): bind and run once (tests, the boundary)
    bind: Callable  # bind(ins, p, out, isa=, threads=[, packed=]) -> Step, once per thread arena
    pack: Callable | None = None  # pack(ins, p, isa=) -> the weights in the kernel's layout, once at load
