"""Settings for the whole test suite (loaded before any test module imports torch or qrt).

Tiers: tests marked `slow` (registered in pyproject.toml, --strict-markers) are left out of
`make check`; `make test` runs everything.

OpenMP threads wait passively here (unless OMP_WAIT_POLICY is already set). The suite runs
PyTorch, ONNX Runtime and qrt's kernels in one process, each with OpenMP threads; with the
default (spinning for a while after every parallel region) a 2-thread qrt region could wait
milliseconds for a core that another runtime's idle threads were spinning on, and on a shared
2-core machine `make check` took 117 s instead of 75 s. Results do not depend on it: every
kernel's output is the same at any thread count and wait policy. libgomp reads the variable
when it is loaded, hence here, before the imports.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
