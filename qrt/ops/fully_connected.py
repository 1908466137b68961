"""FULLY_CONNECTED (SPEC.md section 2.13.3): x [..., K] int8, weights [N_out, K] int8 symmetric,
bias [N_out] int32 -> y [..., N_out]. Compiled kernel: qrt/kernels/gemm.pyx fully_connected."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import OpCode
from .base import Check, OpDef, Requant, requant, requantize_to, zero_point
from .conv_2d import channel_multipliers, gemm_macs


@dataclass
class FullyConnectedParams:
    input_zero_point: int
    out: Requant


def prepare(model, op) -> FullyConnectedParams:
    x, w, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    return FullyConnectedParams(zero_point(x), requant(channel_multipliers(x, w, y, w.shape[0]), y, op))


def verify(c: Check):
    x, w, b, y = c.input(0), c.input(1), c.input(2), c.output()
    c.activation(x)
    c.activation(y)
    c.rank(w, 2, "[N_out, K]")
    c.weights(w, 0)
    nout, k = w.shape
    if not x.shape or x.shape[-1] != k:
        c.fail(f"input {c.label(x)} has shape {x.shape}; its last dimension must be K = {k}")
    if y.shape != x.shape[:-1] + (nout,):
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {x.shape[:-1] + (nout,)}")
    c.bias(b, x, w, nout, k)


def reference(ins, p: FullyConnectedParams) -> np.ndarray:
    x, w, bias = ins
    acc = (x.astype(np.int64) - p.input_zero_point) @ w.astype(np.int64).T + bias.astype(np.int64)
    return requantize_to(acc, p.out)


FULLY_CONNECTED = OpDef(OpCode.FULLY_CONNECTED, (3, 3), 1, True, None, verify, prepare, reference,
                        "fully_connected", macs=gemm_macs)
