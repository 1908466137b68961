"""The runtime: load a .qmodel, prepare it once, run it with integer-only kernels."""
from .executor import IOInfo, Model, load

__all__ = ["IOInfo", "Model", "load"]
