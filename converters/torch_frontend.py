"""PyTorch front-end: nn.Module or saved torch.export program -> ONNX -> the float IR.

Route: torch.onnx.export in its torch.export-based (dynamo) mode. It traces with torch.export,
decomposes to core ATen ops and translates them to standard ONNX ops, so PyTorch models reach
the same reader, passes and executor as ONNX models: one set of op semantics to get right
instead of two (ONNX's, and ATen's several hundred ops). The legacy TorchScript exporter is
deprecated in PyTorch 2.9+.

Saved torch.export programs (.pt2) are loaded with torch.export.load, which unpickles: only
with trusted=True (the CLI's --trust-source), never by default.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings

from .errors import ConversionError


# The loggers torch.onnx.export (dynamo) writes through.
EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "torch.__trace", "onnxscript")


@contextlib.contextmanager
def quiet_export():
    """Silence torch.onnx.export (and ONNX Runtime's quantizer): progress lines on stdout and
    stderr, warnings and log messages meant for their own debugging."""
    loggers = [logging.getLogger(n) for n in EXPORTER_LOGGERS + ("",)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _args(example_inputs):
    import torch

    if example_inputs is None:
        raise ConversionError("a torch.nn.Module needs example_inputs (a tensor or a tuple of tensors) "
                              "of the shape it will be run with")
    # Contiguous copies: a channels-last view makes the exporter emit as_strided gathers.
    inputs = example_inputs if isinstance(example_inputs, (list, tuple)) else (example_inputs,)
    return tuple(torch.as_tensor(x).clone(memory_format=torch.contiguous_format) for x in inputs)


def module_to_onnx(module, example_inputs):
    """An onnx.ModelProto of module.eval() traced on example_inputs."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ConversionError(f"cannot convert a {type(module).__name__}: pass an .onnx or .pt2 path, an "
                              f"onnx.ModelProto or a torch.nn.Module")
    module = module.eval()
    try:
        with quiet_export(), torch.no_grad():
            program = torch.onnx.export(module, _args(example_inputs), dynamo=True, optimize=True)
    except Exception as e:
        raise ConversionError(f"torch.onnx.export failed for {type(module).__name__}: {e}") from e
    return program.model_proto


def load_exported_program(path, trusted: bool = False):
    import torch

    if not trusted:
        raise ConversionError(
            f"{path}: torch.export.load unpickles the file, which can run any code it contains; qrt does "
            f"not do that by default. If you made this file yourself, pass trusted=True (qrt convert "
            f"--trust-source); otherwise export it to ONNX where it came from and convert the .onnx.")
    try:
        return torch.export.load(str(path))
    except Exception as e:
        raise ConversionError(f"{path}: not a loadable torch.export program: {e}") from e


def exported_program_to_onnx(program):
    import torch

    try:
        with quiet_export():
            return torch.onnx.export(program, dynamo=True, optimize=True).model_proto
    except Exception as e:
        raise ConversionError(f"torch.onnx.export failed for the exported program: {e}") from e
