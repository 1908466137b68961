"""qrt: quantized model format and integer-only CPU runtime.

Needs numpy only. Reading a .qmodel:  model = qrt.read_model("model.qmodel")
"""
from ._version import __version__
from .errors import InvalidModelError, ModelFormatError, QrtError, UnsupportedModelError
from .format import read_model, to_bytes, verify_model, write_model

__all__ = [
    "__version__", "QrtError", "ModelFormatError", "InvalidModelError", "UnsupportedModelError",
    "read_model", "write_model", "to_bytes", "verify_model",
]
