"""Converters: ONNX and PyTorch models -> float IR -> calibration -> .qmodel.

    from qrt.converters import convert        # or qrt.convert(...), which forwards here
    report = convert("model.onnx", "samples.npy", "model.qmodel", method="auto")
    print(report)

This folder (converters/ in the repository) installs as the subpackage qrt.converters
(setup.py's package_dir); there is no top-level `converters` package. Its modules import torch,
onnx and onnxruntime (the optional `qrt[convert]` extra) lazily. The rest of qrt imports from here
only inside two functions: qrt.convert and the CLI's `qrt convert` (tests/test_imports.py checks
this), so `import qrt` never loads it.
"""
from .errors import ConversionError, UnsupportedOpsError


def convert(model, calibration, out_path, **options):
    """See qrt.converters.pipeline.convert."""
    from .pipeline import convert as run

    return run(model, calibration, out_path, **options)


__all__ = ["convert", "ConversionError", "UnsupportedOpsError"]
