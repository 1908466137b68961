"""The model files of `python -m bench`, every runtime's from the same float model.

For each name in bench.torch_models.MODELS, prepare() builds the float PyTorch module, exports
it to ONNX (torch.onnx.export, dynamo=True, weights inline; the batch dimension left free,
except for single ops, whose shape is the point) and, from the same 16 random normal
calibration samples, makes:
  - qrt int8: .qmodel via qrt.convert, method "minmax" (a single op stays one qrt operator),
  - ONNX Runtime int8, QOperator format, U8S8 per-channel (its fastest x86 configuration),
  - ONNX Runtime int8, QDQ format, S8S8 per-channel,
  - PyTorch int8: FX graph mode quantization (x86 backend), saved as its state_dict,
  - ONNX Runtime fp32: the exported .onnx,
  - PyTorch fp32: the pickled module.
Then it loads each (bench.runtimes, 1 thread) a few times, timing the loads, and runs it once
on the batch-1 input (and on `checks` more random inputs, for agreement with float). An error
met while making, loading or running one runtime is recorded in its Runtime, not raised.

Other sets of runtimes (bench.schemes: one per quantization scheme and its peers) come through
prepare(recipes=...): a function of the Sources (float module, calibration samples, exported
ONNX file) returning [(label, kind, build_files)]; suite_recipes() is this suite's.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import time
import traceback

import numpy as np

from bench.runtimes import fx_int8, load
from bench.torch_models import MODELS, Entry, build

CALIB_SAMPLES = 16
QRT = "qrt int8"
INT8_PEERS = ("ORT int8 QOperator U8S8", "ORT int8 QDQ S8S8", "PyTorch int8 FX x86")
FP32_PEERS = ("ORT fp32", "PyTorch fp32")
RUNTIMES = (QRT, *INT8_PEERS, *FP32_PEERS)


@dataclasses.dataclass
class Runtime:
    name: str                       # e.g. "qrt int8"
    kind: str                       # its loader in bench.runtimes
    paths: tuple = ()               # what the loader reads; the last is the model's file
    error: str | None = None        # why it could not be made, loaded or run
    load_ms: list = dataclasses.field(default_factory=list)
    output: np.ndarray | None = None  # on the batch-1 input
    first_run_ms: float | None = None  # that first call, right after loading
    check_outputs: list = dataclasses.field(default_factory=list)  # on Prepared.check_x

    @property
    def file_bytes(self) -> int | None:
        return os.path.getsize(self.paths[-1]) if self.paths and os.path.exists(self.paths[-1]) else None


@dataclasses.dataclass
class Prepared:
    name: str
    entry: Entry
    x: np.ndarray                   # the batch-1 input
    float_out: np.ndarray           # the float PyTorch model's output on x
    macs: int                       # per batch-1 run, as qrt counts them
    qrt_ops: list                   # qrt's operators, by op code
    runtimes: list                  # [Runtime], in the order of RUNTIMES (or of the recipes)
    prep_s: dict                    # seconds per preparation step
    check_x: list = dataclasses.field(default_factory=list)      # more batch-1 inputs
    check_float: list = dataclasses.field(default_factory=list)  # the float model's outputs on them


@dataclasses.dataclass
class Sources:
    """What every runtime's files are made from: the recipes' argument."""
    name: str
    entry: Entry
    module: object                  # the float torch module (copy it before changing it)
    x: np.ndarray                   # the batch-1 input
    calib: list                     # calibration samples, batch 1 each
    onnx_path: str                  # the float model exported to ONNX, weights inline
    base: str                       # path prefix for the files made from it


def describe_error(e: BaseException) -> str:
    lines = traceback.format_exception_only(type(e), e)
    return "".join(lines).strip()[-1500:]


def export_onnx(module, x: np.ndarray, path: str, dynamic_batch: bool) -> str:
    """bench.fixtures.real_models.export_onnx, then rewritten with the weights inline (one file,
    so its size is the model's size)."""
    import onnx
    from bench.fixtures.real_models import export_onnx as export

    export(module, x, path, dynamic_batch)
    model = onnx.load(path)  # pulls in <path>.data if the exporter wrote one
    onnx.save(model, path, save_as_external_data=False)
    if os.path.exists(path + ".data"):
        os.remove(path + ".data")
    return path


def ort_quantize(fp32_path: str, out_path: str, calib: list, fmt: str) -> str:
    """Static int8 quantization with onnxruntime.quantization.quantize_static.
    fmt "qoperator": QOperator ops, QUInt8 activations, QInt8 per-channel weights (U8S8);
    fmt "qdq": QDQ nodes, QInt8 activations and per-channel QInt8 weights (S8S8)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from qrt.converters.torch_frontend import quiet_export

    name = onnx.load(fp32_path, load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: s} for s in calib])

        def get_next(self):
            return next(self.it, None)

    src = fp32_path
    pre = out_path + ".pre.onnx"
    try:  # ORT's recommended pre-processing (shape inference, graph cleanup)
        from onnxruntime.quantization.shape_inference import quant_pre_process
        with quiet_export():
            quant_pre_process(fp32_path, pre, skip_symbolic_shape=True)
        src = pre
    except Exception:
        pass
    act = QuantType.QUInt8 if fmt == "qoperator" else QuantType.QInt8
    with quiet_export():
        quantize_static(src, out_path, Reader(),
                        quant_format=QuantFormat.QOperator if fmt == "qoperator" else QuantFormat.QDQ,
                        activation_type=act, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
    if os.path.exists(pre):
        os.remove(pre)
    return out_path


def qrt_files(src: Sources, path: str, **scheme) -> tuple:
    """The .qmodel of qrt.convert (method "minmax", every sample calibrates) with the scheme
    keywords of qrt.convert (mode, weights, group_size, activations)."""
    import qrt
    qrt.convert(src.onnx_path, src.calib, path, method="minmax", show_progress=False, holdout=0.0, **scheme)
    return (path,)


def fx_files(src: Sources) -> tuple:
    import torch
    q = fx_int8(copy.deepcopy(src.module), src.x, src.calib)
    torch.save(q.state_dict(), src.base + ".int8fx.pt")
    return (src.base + ".fp32.pt", src.base + ".int8fx.pt")


def suite_recipes(src: Sources) -> list:
    """[(label, kind, build_files)] for RUNTIMES, in order."""
    onnx_path, base, calib = src.onnx_path, src.base, src.calib
    return [
        (QRT, "qrt", lambda: qrt_files(src, base + ".qmodel")),
        (INT8_PEERS[0], "ort", lambda: (ort_quantize(onnx_path, base + ".ort_qoperator.onnx", calib, "qoperator"),)),
        (INT8_PEERS[1], "ort", lambda: (ort_quantize(onnx_path, base + ".ort_qdq.onnx", calib, "qdq"),)),
        (INT8_PEERS[2], "fx", lambda: fx_files(src)),
        (FP32_PEERS[0], "ort", lambda: (onnx_path,)),
        (FP32_PEERS[1], "torch", lambda: (base + ".fp32.pt",)),
    ]


def prepare(name: str, workdir: str, seed: int = 0, load_repeats: int = 5, recipes=suite_recipes,
            calib_samples: int = CALIB_SAMPLES, checks: int = 0) -> Prepared:
    """Build, export, convert and quantize one model; load and run every runtime once (and on
    `checks` more random inputs)."""
    import qrt
    import torch

    entry = MODELS[name]
    os.makedirs(workdir, exist_ok=True)
    module, shape = build(name, seed)
    rng = np.random.default_rng(seed + 1)
    calib = [rng.standard_normal(shape).astype(np.float32) for _ in range(calib_samples)]
    x = rng.standard_normal(shape).astype(np.float32)
    check_x = [rng.standard_normal(shape).astype(np.float32) for _ in range(checks)]
    with torch.no_grad():
        float_out = module(torch.from_numpy(x)).numpy()
        check_float = [module(torch.from_numpy(c)).numpy() for c in check_x]
    base = os.path.join(workdir, name)
    prep_s = {}

    def make(label, kind, build_files):
        """A Runtime whose files build_files() writes and returns."""
        t = time.perf_counter()
        try:
            rt = Runtime(label, kind, tuple(build_files()))
        except Exception as e:
            rt = Runtime(label, kind, error=describe_error(e))
        prep_s[label] = time.perf_counter() - t
        return rt

    # the float model as ONNX and as a pickled module: the sources of everything else
    t = time.perf_counter()
    onnx_path = export_onnx(module, x, base + ".onnx", dynamic_batch=not entry.single_op)
    torch.save(module, base + ".fp32.pt")
    prep_s["float export"] = time.perf_counter() - t
    src = Sources(name, entry, module, x, calib, onnx_path, base)
    runtimes = [make(*recipe) for recipe in recipes(src)]
    for rt in runtimes:
        if rt.error:
            continue
        try:
            for _ in range(load_repeats):
                t = time.perf_counter()
                fn = load(rt.kind, rt.paths, 1, shape)
                rt.load_ms.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            rt.output = np.asarray(fn(x)).reshape(float_out.shape)  # fail here, not while timing
            rt.first_run_ms = (time.perf_counter() - t) * 1e3
            rt.check_outputs = [np.asarray(fn(c)).reshape(float_out.shape) for c in check_x]
        except Exception as e:
            rt.error = describe_error(e)

    macs, ops = 0, []
    first = next((rt for rt in runtimes if rt.kind == "qrt" and not rt.error), None)
    if first is not None:
        m = qrt.load(first.paths[0], threads=1)
        macs, ops = int(m.macs), [op.opcode.name for op in m.definition.operators]
    return Prepared(name, entry, x, float_out, macs, ops, runtimes, prep_s, check_x, check_float)
