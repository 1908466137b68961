"""qrt: quantized model format and integer-only CPU runtime.

Needs numpy only.

    m = qrt.load("model.qmodel")   # verified, prepared, weights memory-mapped
    y = m.run(x)                   # float or int8 in, float out (raw=True: int8)

qrt.read_model / qrt.write_model give the file's contents as objects (qrt.format).
"""
from ._version import __version__
from .errors import InputError, InvalidModelError, ModelFormatError, QrtError, UnsupportedModelError
from .format.reader import read_model
from .format.verify import verify_model
from .format.writer import to_bytes, write_model
from .runtime import IOInfo, Model, load



def convert(model, calibration, out_path, **options):
    """Quantize a float ONNX or PyTorch model after training and write a .qmodel; returns the
    conversion report. Needs the converters extra (pip install 'qrt[convert]'); qrt.converters
    is imported only here, when called. Options: see qrt.converters.pipeline.convert."""
    try:
        from .converters import convert as run
    except ImportError as e:
        raise QrtError(f"qrt.convert needs the converters and their packages ({e.name}): "
                       f"pip install 'qrt[convert]'") from e
    return run(model, calibration, out_path, **options)


__all__ = [
    "__version__", "QrtError", "ModelFormatError", "InvalidModelError", "UnsupportedModelError",
    "InputError", "load", "Model", "IOInfo", "convert",
    "read_model", "write_model", "to_bytes", "verify_model",
]
