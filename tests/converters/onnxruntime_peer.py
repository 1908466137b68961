"""ONNX Runtime as the peer the converter tests compare with: its static quantizer on a list of
samples, and a plain run of a model as written (graph optimisations off)."""
from __future__ import annotations

import numpy as np

import onnx
import onnxruntime as ort

from qrt.converters.torch_frontend import quiet_export


def quantize_static(src, dst, samples, input_name=None, **options) -> str:
    """onnxruntime.quantization.quantize_static of src into dst, calibrated on `samples` (one
    batch-1 feed each): QDQ, per-channel QInt8 weights, QUInt8 activations unless `options`
    say otherwise (quant_format=QuantFormat.QOperator, activation_type=...)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    name = input_name or onnx.load(str(src), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: s[None]} for s in samples])

        def get_next(self):
            return next(self.it, None)

    opts = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8)
    opts.update(options)
    with quiet_export():
        ort_quantize_static(str(src), str(dst), Reader(), **opts)
    return str(dst)


def run(path, x, input_name=None) -> np.ndarray:
    """ONNX Runtime's outputs, batch 1 each. Graph optimisations off: a QDQ or QOperator model
    then runs as written, the semantics qrt imports. Optimised, ORT fuses it into int8 kernels
    whose AVX2 form (vpmaddubsw, without VNNI) saturates int16 pair sums and so depends on the
    CPU: on such a machine it was 2 steps off its own QDQ graph."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = input_name or s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
