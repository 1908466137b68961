"""The float32-activation forms of the weighted ops, CONV_2D and FULLY_CONNECTED (SPEC.md
section 3.2), and the rules they share:

  float32       float weights and arithmetic (a float island; NumPy's BLAS);
  weight-only   int8 or int4 weights, per channel or per group, dequantized in the kernel's tile:
                y[m, c] = (...((0 + x[m,0] w[c,0]) + x[m,1] w[c,1]) ... + x[m,K-1] w[c,K-1]) + b[c],
                w[c, k] = float32(q[c, k]) * s[c, group of k], every operation rounded to float32
                in this order (no fused multiply-add), so that kernels are bit-exact with it;
  dynamic       int8 weights per channel; each row of the input quantized to int8 at run time
                from its own range (quantize_rows), an exact integer sum, then
                y[m, c] = float32(acc) * float32(s_x[m] * s_w[c]) + b[c], rounded in that order.

A "row" is one vector along the last dimension of FULLY_CONNECTED's input and one image of
CONV_2D's. The compiled kernels are in qrt/kernels/weight_only.pyx and dynamic.pyx.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import DType, InputQuantization, ModelDefinition, Operator, Tensor, unpack_int4
from .base import DYNAMIC, FLOAT32, WEIGHT_ONLY, float_bounds, float_clamp, group_count, select_by_output


def select(model: ModelDefinition, op: Operator) -> str:
    """INT8 or INT16 for integer activations; with float32 activations FLOAT32, WEIGHT_ONLY or
    DYNAMIC by the weights' dtype and the operator's input_quantization."""
    if model.tensors[op.outputs[0]].dtype != DType.FLOAT32:
        return select_by_output(model, op)
    if len(op.inputs) > 1 and model.tensors[op.inputs[1]].dtype == DType.FLOAT32:
        return FLOAT32
    return DYNAMIC if op.input_quantization == InputQuantization.DYNAMIC_INT8 else WEIGHT_ONLY


# ---------------------------------------------------------------------------- weights

@dataclass
class QuantizedWeights:
    """How to read an op's stored weights: shape, INT4 packing, and one scale per (channel,
    group) as float32 [channels, groups] (one group of K for per-channel weights)."""
    shape: tuple
    int4: bool
    scales: np.ndarray  # float32 [channels, groups]
    group_size: int  # K when not per group

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def reduction(self) -> int:
        return int(np.prod(self.shape[1:]))


def quantized_weights(w: Tensor) -> QuantizedWeights:
    """For weights with their output channels in dimension 0 (CONV_2D, FULLY_CONNECTED)."""
    channels = w.shape[0]
    k = w.numel // channels
    q = w.quant
    g = q.group_size if q.per_group else k
    scales = np.broadcast_to(q.scale.astype(np.float32).reshape(channels if q.per_channel else 1, -1),
                             (channels, group_count(k, g)))
    return QuantizedWeights(w.shape, w.dtype == DType.INT4, np.ascontiguousarray(scales), g)


def weight_values(data: np.ndarray, qw: QuantizedWeights) -> np.ndarray:
    """The stored weights as int8 [channels, K] (INT4 unpacked)."""
    if qw.int4:
        return unpack_int4(data, qw.channels * qw.reduction).reshape(qw.channels, qw.reduction)
    return np.asarray(data).reshape(qw.channels, qw.reduction)


def dequantize_weights(data: np.ndarray, qw: QuantizedWeights) -> np.ndarray:
    """float32 [channels, K]: float32(q) * s[c, k // group_size], rounded once."""
    per_k = np.repeat(qw.scales, qw.group_size, axis=1)[:, :qw.reduction]
    return weight_values(data, qw).astype(np.float32) * per_k


def ordered_matmul(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x [M, K] @ w[C, K].T + bias in float32, summed k by k from 0, each product and sum
    rounded to float32: the weight-only rule that every kernel reproduces bit for bit."""
    acc = np.zeros((x.shape[0], w.shape[0]), np.float32)
    for k in range(x.shape[1]):
        acc += x[:, k, None] * w[None, :, k]
    return acc + bias


# ---------------------------------------------------------------------------- dynamic inputs

def quantize_rows(x: np.ndarray):
    """Each row of x [R, L] (float32) to int8 from its own range, in float32 arithmetic:
    lo = min(0, min x), hi = max(0, max x), s = (hi - lo) / 255 (1 where that is 0),
    zp = -128 - round(lo / s), q = clamp(round(x / s) + zp, -128, 127); round: half to even.
    Returns (q int8 [R, L], s float32 [R], zp int32 [R])."""
    x = np.asarray(x, np.float32)
    lo = np.minimum(x.min(axis=1), np.float32(0))
    hi = np.maximum(x.max(axis=1), np.float32(0))
    s = (hi - lo) / np.float32(255)
    s[s == 0] = np.float32(1)
    zp = np.clip(np.float32(-128) - np.rint(lo / s), -128, 127).astype(np.int32)
    v = np.rint(x / s[:, None]) + zp[:, None].astype(np.float32)
    # fmax first, then fmin: a NaN becomes -128 exactly as the kernels' max/min do
    q = np.fmin(np.fmax(v, np.float32(-128)), np.float32(127)).astype(np.int8)
    return q, s, zp


def dequantize_sums(acc: np.ndarray, s_x: np.ndarray, s_w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """float32(acc [R, ..., C]) * float32(s_x[r] * s_w[c]) + b[c], each step rounded to float32."""
    shape = (-1,) + (1,) * (acc.ndim - 2) + (1,)
    scale = s_x.astype(np.float32).reshape(shape) * s_w.astype(np.float32)
    return acc.astype(np.float32) * scale + bias.astype(np.float32)


# ---------------------------------------------------------------------------- params

@dataclass
class HybridParams:
    """What every float-activation form of CONV_2D / FULLY_CONNECTED needs besides its window."""
    form: str
    bounds: tuple  # the fused activation's real range
    weights: QuantizedWeights | None  # None in the float32 form


def hybrid_params(model: ModelDefinition, op: Operator, form: str) -> HybridParams:
    w = model.tensors[op.inputs[1]]
    return HybridParams(form, float_bounds(op), None if form == FLOAT32 else quantized_weights(w))


def finish(y: np.ndarray, p: HybridParams) -> np.ndarray:
    return float_clamp(np.ascontiguousarray(y, np.float32), p.bounds)
