"""Builds qrt's Cython kernels (qrt/kernels/*.pyx, with the C of qrt/kernels/simd/); everything
else is in pyproject.toml. Vector code is compiled per function for its instruction set
(simd/*.h), so the modules load on any x86-64 and pick a path at run time (qrt/kernels/isa.pyx)."""
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

headers = [str(h) for h in sorted(Path("qrt/kernels/simd").glob("*.h"))]
extensions = [
    Extension(
        f"qrt.kernels.{pyx.stem}",
        [str(pyx)],
        include_dirs=[np.get_include(), "qrt/kernels"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3", "-fopenmp"],
        extra_link_args=["-fopenmp"],
        depends=headers,
    )
    for pyx in sorted(Path("qrt/kernels").glob("*.pyx"))
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}))
