"""Compiled kernels (Cython). Each one names its NumPy reference in qrt/reference and is
tested bit for bit against it."""
