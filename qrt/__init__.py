"""qrt: quantized model format and integer-only CPU runtime.

Needs numpy only.

    m = qrt.load("model.qmodel")   # verified, prepared, weights memory-mapped
    y = m.run(x)                   # float or int8 in, float out (raw=True: int8)

qrt.read_model / qrt.write_model give the file's contents as objects (qrt.format).
"""
from ._version import __version__
from .errors import InputError, InvalidModelError, ModelFormatError, QrtError, UnsupportedModelError
from .format import read_model, to_bytes, verify_model, write_model
from .runtime import IOInfo, Model, load

__all__ = [
    "__version__", "QrtError", "ModelFormatError", "InvalidModelError", "UnsupportedModelError",
    "InputError", "load", "Model", "IOInfo",
    "read_model", "write_model", "to_bytes", "verify_model",
]
