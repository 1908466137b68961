"""FULLY_CONNECTED (SPEC.md section 2.13.3): x [..., K] int8, weights [N_out, K] int8 or int4 symmetric,
bias [N_out] int32 -> y [..., N_out]. Compiled kernel: qrt/kernels/gemm.pyx fully_connected.
Its float32, weight-only and dynamic forms (float32 x, y and bias) follow qrt/ops/hybrid.py;
compiled kernels: qrt/kernels/weight_only.pyx,
dynamic.pyx."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import OpCode
from . import hybrid as H
from .base import (DYNAMIC, FLOAT32, INT16, WEIGHT_ONLY, Check, Form, OpDef, Requant, int4_shape, requant,
                   requantize_to, weight_ints, zero_point)
from .conv_2d import channel_multipliers, gemm_macs


@dataclass
class FullyConnectedParams:
    input_zero_point: int
    out: Requant
    w4: tuple | None = None  # int4 weights: their shape (base.int4_shape)


def prepare(model, op) -> FullyConnectedParams:
    x, w, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    return FullyConnectedParams(zero_point(x), requant(channel_multipliers(x, w, y, w.shape[0]), y, op),
                                int4_shape(w))


def verify(c: Check):
    x, w, b, y = c.input(0), c.input(1), c.input(2), c.output()
    c.activation(x)
    c.activation(y)
    c.rank(w, 2, "[N_out, K]")
    c.weights(w, 0, int4=True)
    nout, k = w.shape
    if not x.shape or x.shape[-1] != k:
        c.fail(f"input {c.label(x)} has shape {x.shape}; its last dimension must be K = {k}")
    if y.shape != x.shape[:-1] + (nout,):
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {x.shape[:-1] + (nout,)}")
    c.bias(b, x, w, nout, k)


def reference(ins, p: FullyConnectedParams) -> np.ndarray:
    x, w, bias = ins[0], weight_ints(ins[1], p.w4), ins[2]
    acc = (x.astype(np.int64) - p.input_zero_point) @ w.astype(np.int64).T + bias.astype(np.int64)
    return requantize_to(acc, p.out)


# ---------------------------------------------------------------------------- float32 activations

def reference_float(ins, p: H.HybridParams) -> np.ndarray:
    x, w, bias = ins
    x2 = x.reshape(-1, x.shape[-1])
    return H.finish((x2 @ w.T + bias).reshape(x.shape[:-1] + (w.shape[0],)), p)


def reference_weight_only(ins, p: H.HybridParams) -> np.ndarray:
    x, w, bias = ins
    x2 = x.reshape(-1, x.shape[-1])
    y = H.ordered_matmul(x2, H.dequantize_weights(w, p.weights), bias)
    return H.finish(y.reshape(x.shape[:-1] + (p.weights.channels,)), p)


def reference_dynamic(ins, p: H.HybridParams) -> np.ndarray:
    x, w, bias = ins
    q, s, zp = H.quantize_rows(x.reshape(-1, x.shape[-1]))
    acc = (q.astype(np.int64) - zp[:, None]) @ H.weight_values(w, p.weights).astype(np.int64).T
    y = H.dequantize_sums(acc, s, p.weights.scales[:, 0], bias)
    return H.finish(y.reshape(x.shape[:-1] + (p.weights.channels,)), p)


def _form(name, reference, kernel):
    return Form(name, verify, lambda model, op: H.hybrid_params(model, op, name), reference, kernel, "0.3.0")


FULLY_CONNECTED = OpDef(OpCode.FULLY_CONNECTED, (3, 3), 1, True, None, verify, prepare, reference,
                        "fully_connected", macs=gemm_macs, select=H.select, forms=(
                            _form(FLOAT32, reference_float, None),
                            _form(WEIGHT_ONLY, reference_weight_only, "fully_connected_weight_only"),
                            _form(DYNAMIC, reference_dynamic, "fully_connected_dynamic"),
                            Form(INT16, verify, prepare, reference, "fully_connected_int16", "0.3.0")),
                        batch=True)
