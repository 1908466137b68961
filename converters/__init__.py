"""Converters: ONNX and PyTorch models -> float IR -> calibration -> .qmodel.

    from converters import convert
    report = convert("model.onnx", "samples.npy", "model.qmodel", method="auto")
    print(report)

They import torch, onnx and onnxruntime (the optional `qrt[convert]` extra) lazily; nothing in
qrt/ imports from here except qrt.convert, which forwards to this package.
"""
from .errors import ConversionError, UnsupportedOpsError


def convert(model, calibration, out_path, **options):
    """See converters.pipeline.convert."""
    from .pipeline import convert as run

    return run(model, calibration, out_path, **options)


__all__ = ["convert", "ConversionError", "UnsupportedOpsError"]
