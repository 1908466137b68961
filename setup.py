"""Builds qrt's Cython kernels (qrt/kernels/*.pyx, with the C of qrt/kernels/simd/) and lists
the packages; everything else is in pyproject.toml. Vector code is compiled per function for its
instruction set (simd/*.h), so the modules load on any x86-64 and pick a path at run time
(qrt/kernels/isa.pyx). That C is compiled once, into qrt.kernels.isa; the other modules include
only simd/api.h and cimport its entry points (isa.pxd).

The converters live in the top-level folder converters/ (the repository's layout) but install as
the subpackage qrt.converters: package_dir maps the one onto the other, for wheels and for
editable installs alike. There is no top-level `converters` package.

Every module is compiled with -ffp-contract=off: gcc never fuses a multiplication and an
addition into one FMA (its default, -ffp-contract=fast, does wherever the target has FMA: the
AVX2 and AVX-512 functions), so that the float kernels (simd/weight_only.h, dynamic.h, eltwise.h's
QUANTIZE/DEQUANTIZE) round every product and sum as their NumPy references do.

The extensions are built without debug information and stripped (QRT_DEBUG=1 keeps both), and
the install carries no kernel sources (.pyx, .pxd, the generated .c, simd/*.h): the runtime
installs in about 2.7 MB instead of 24."""
import os
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_namespace_packages, setup

packages = find_namespace_packages(include=["qrt", "qrt.*"], exclude=["qrt.kernels.simd"]) + [
    "qrt.converters" + name[len("converters"):]
    for name in find_namespace_packages(include=["converters", "converters.*"])
]

headers = [str(h) for h in sorted(Path("qrt/kernels/simd").glob("*.h"))]
debug = os.environ.get("QRT_DEBUG") == "1"
cflags = ["-ffp-contract=off"] + ([] if debug else ["-g0"])  # every module's (see the top)
# smaller modules at no cost in speed: only PyInit_* is exported (Cython's shared code is reached
# through module attributes, not symbols), C needs no unwind tables, unused sections are dropped
small = [] if debug else ["-fvisibility=hidden", "-fno-asynchronous-unwind-tables", "-ffunction-sections",
                          "-fdata-sections"]
ldflags = [] if debug else ["-s", "-Wl,--gc-sections"]
# -O3 where loops compiled here are hot: the vector paths (isa), BATCH_MATMUL's and the recurrent
# steps' loops (gemm), softmax, the elementwise ops, data movement (the encoder 2-7x slower at
# -O2), the depthwise and dynamic forms' float loops (MobileNetV2 4-7 %). The rest spend their
# time in isa's code (pools, weight-only): -O2 keeps them 75 kB smaller, within run-to-run noise.
FAST = {"isa", "plan", "gemm", "softmax", "elementwise", "movement", "depthwise", "dynamic"}
extensions = [
    Extension(
        f"qrt.kernels.{pyx.stem}",
        [str(pyx)],
        include_dirs=[np.get_include(), "qrt/kernels"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3" if pyx.stem in FAST else "-O2", "-fopenmp"] + cflags + small,
        extra_link_args=["-fopenmp"] + ldflags,
        depends=headers,
    )
    for pyx in sorted(Path("qrt/kernels").glob("*.pyx"))
]
# Cython's own support code (memoryviews, argument parsing, ...) once, in one module the others
# import, rather than a copy in each: about 1.3 MB less installed.
SHARED = "qrt.kernels._cython"
extensions.append(Extension(SHARED, sources=[], extra_compile_args=["-O2"] + cflags + small,
                            extra_link_args=ldflags))

setup(
    packages=packages,
    package_dir={"qrt.converters": "converters"},
    exclude_package_data={"qrt.kernels": ["*.c", "*.pyx", "*.pxd", "simd/*.h"]},
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"},
                          shared_utility_qualified_name=SHARED),
)
