"""Model construction and conversion for `python -m bench` (the runtime comparison).

For each model name in bench.torch_models.MODELS, prepare() builds the float PyTorch module
(fixed-seed weights), exports it to ONNX (torch.onnx.export, dynamo=True, weights inline), and
from the same 16 calibration samples makes:
  - qrt int8 (.qmodel via qrt.convert, method="minmax"),
  - ONNX Runtime int8, QOperator format, U8S8 per-channel (its fastest x86 configuration),
  - ONNX Runtime int8, QDQ format, S8S8 per-channel,
  - PyTorch int8 with FX graph mode quantization (x86 backend).
Every runtime is returned as a zero-argument-after-input callable `fn(x) -> np.ndarray` in
Runner records, with its file size and any error met while making it (recorded, not raised).
"""
from __future__ import annotations

import dataclasses
import os
import time
import traceback
from typing import Callable

import numpy as np

from bench.torch_models import build

CALIB_SAMPLES = 16


@dataclasses.dataclass
class Runner:
    name: str                       # e.g. "qrt int8"
    fn: Callable | None             # fn(x: float32 NCHW array) -> output array; None on error
    file_bytes: int | None = None   # size of the model file it runs (None: in-memory module)
    error: str | None = None        # why it could not be made


@dataclasses.dataclass
class Prepared:
    name: str
    input_shape: tuple
    x: np.ndarray                   # the timing input
    calib: list                     # calibration samples (batch-1 arrays)
    float_out: np.ndarray           # the float PyTorch model's output on x
    macs: int                       # qrt's MAC count per run
    qmodel_path: str
    load_ms: list                   # qrt.load times, ms
    runners: list                   # [Runner]
    prep_s: dict                    # seconds spent per preparation step


def _err(e: BaseException) -> str:
    lines = traceback.format_exception_only(type(e), e)
    return "".join(lines).strip()[-1500:]


def export_onnx(module, x: np.ndarray, path: str) -> str:
    """torch.onnx.export(dynamo=True), quietly, then rewritten with the weights inline (one
    file, so its size is the model's size)."""
    import onnx
    import torch
    from converters.torch_frontend import quiet_export

    with quiet_export(), torch.no_grad():
        torch.onnx.export(module, (torch.from_numpy(x.copy()),), path, dynamo=True)
    model = onnx.load(path)  # pulls in <path>.data if the exporter wrote one
    onnx.save(model, path, save_as_external_data=False)
    if os.path.exists(path + ".data"):
        os.remove(path + ".data")
    return path


def ort_session(path: str, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def ort_quantize(fp32_path: str, out_path: str, calib: list, fmt: str) -> str:
    """Static int8 quantization with onnxruntime.quantization.quantize_static.
    fmt "qoperator": QOperator ops, QUInt8 activations, QInt8 per-channel weights (U8S8);
    fmt "qdq": QDQ nodes, QInt8 activations and per-channel QInt8 weights (S8S8)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from converters.torch_frontend import quiet_export

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


def torch_fx_int8(module, x: np.ndarray, calib: list):
    """PyTorch FX graph mode post-training static quantization, x86 backend."""
    import copy
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    m = copy.deepcopy(module).eval()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(m, get_default_qconfig_mapping("x86"), (torch.from_numpy(x),))
        with torch.no_grad():
            for s in calib:
                prepared(torch.from_numpy(s))
        q = convert_fx(prepared)
    return q


def _torch_fn(module):
    import torch

    def fn(x):
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    return fn


def _state_bytes(module, path: str) -> int | None:
    import torch
    try:
        torch.save(module.state_dict(), path)
        return os.path.getsize(path)
    except Exception:
        return None


def prepare(name: str, workdir: str, threads: int, seed: int = 0, load_repeats: int = 5) -> Prepared:
    """Build, export, convert and quantize one model; every runtime as a Runner."""
    import qrt
    import torch

    torch.set_num_threads(threads)
    os.makedirs(workdir, exist_ok=True)
    module, shape = build(name, seed)
    rng = np.random.default_rng(seed + 1)
    calib = [rng.standard_normal(shape).astype(np.float32) for _ in range(CALIB_SAMPLES)]
    x = rng.standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        float_out = module(torch.from_numpy(x)).numpy()
    prep_s = {}
    runners = []

    t = time.perf_counter()
    onnx_path = export_onnx(module, x, os.path.join(workdir, f"{name}.onnx"))
    prep_s["onnx export"] = time.perf_counter() - t

    # qrt
    qpath = os.path.join(workdir, f"{name}.qmodel")
    t = time.perf_counter()
    qrt.convert(onnx_path, calib, qpath, method="minmax", show_progress=False, holdout=0.0)
    prep_s["qrt convert"] = time.perf_counter() - t
    load_ms = []
    for _ in range(load_repeats):
        t = time.perf_counter()
        qm = qrt.load(qpath, kernels="fast")
        load_ms.append((time.perf_counter() - t) * 1e3)
    runners.append(Runner("qrt int8", qm.run, os.path.getsize(qpath)))

    # ONNX Runtime int8, two formats
    for label, fmt in (("ORT int8 QOperator U8S8", "qoperator"), ("ORT int8 QDQ S8S8", "qdq")):
        out = os.path.join(workdir, f"{name}.ort_{fmt}.onnx")
        t = time.perf_counter()
        try:
            ort_quantize(onnx_path, out, calib, fmt)
            runners.append(Runner(label, ort_session(out, threads), os.path.getsize(out)))
        except Exception as e:
            runners.append(Runner(label, None, error=_err(e)))
        prep_s[label] = time.perf_counter() - t

    # ONNX Runtime fp32
    runners.append(Runner("ORT fp32", ort_session(onnx_path, threads), os.path.getsize(onnx_path)))

    # PyTorch fp32
    runners.append(Runner("PyTorch fp32", _torch_fn(module),
                          _state_bytes(module, os.path.join(workdir, f"{name}.fp32.pt"))))

    # PyTorch int8 (FX)
    t = time.perf_counter()
    try:
        q = torch_fx_int8(module, x, calib)
        fn = _torch_fn(q)
        fn(x)  # fail here, not in the timing loop
        runners.append(Runner("PyTorch int8 FX x86", fn,
                              _state_bytes(q, os.path.join(workdir, f"{name}.int8fx.pt"))))
    except Exception as e:
        runners.append(Runner("PyTorch int8 FX x86", None, error=_err(e)))
    prep_s["PyTorch int8 FX x86"] = time.perf_counter() - t

    return Prepared(name, tuple(shape), x, calib, float_out, int(qm.macs), qpath, load_ms, runners, prep_s)
