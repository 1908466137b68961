"""BATCH_MATMUL (SPEC.md section 2.13.21): the product of two activations, a [..., M, K] and b
[..., K, N] (or [..., N, K] with transpose_b), over leading dimensions that broadcast, -> y
[..., M, N]: attention's Q K^T and weights x V. int8 form: acc = sum_k (a - zp_a)(b - zp_b),
exact in int32 for K <= 33025 (K * 255 * 255 < 2^31), requantized with one multiplier s_a s_b / s_y. int16 form (a, b, y int16, symmetric): acc exact in
int64 (|acc| <= K 2^30), rounded to acc' = (acc + 2^(k-1)) >> k with k = bitlength(K), so that
|acc'| <= 2^30 + 1, and acc' requantized with s_a s_b 2^k / s_y: attention over long
sequences keeps int16's probabilities (SOFTMAX's 1/32768) and values.
Compiled kernel: qrt/kernels/gemm.pyx batch_matmul (both forms). Its float32 form multiplies in
NumPy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.model import BatchMatMulOptions, OpCode
from ..numerics import INT32_MAX, MAX_INPUT_MAGNITUDE
from .base import (FLOAT32, INT8, INT16, Check, Form, OpDef, Requant, float_bounds, float_clamp, requant, requantize_to, scale,
                   zero_point)


@dataclass
class BatchMatMulParams:
    transpose_b: bool
    zp_a: int
    zp_b: int
    out: Requant | None  # None in the float32 form
    bounds: tuple = (float("-inf"), float("inf"))  # the float32 form's fused activation
    pre_shift: int = 0  # k: the int16 form's rounding of the int64 sums before requantizing


def pre_shift(k: int) -> int:
    """The int16 form's shift for a reduction of length k: bitlength(k), so |acc| <= k 2^30 is
    brought to <= 2^30."""
    return k.bit_length()


def prepare(model, op) -> BatchMatMulParams:
    a, b, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    real = np.float64(scale(a)) * np.float64(scale(b)) / np.float64(scale(y))
    return BatchMatMulParams(bool(op.options.transpose_b), zero_point(a), zero_point(b), requant(np.array([real]), y, op))


def prepare_int16(model, op) -> BatchMatMulParams:
    a, b, y = (model.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    k = pre_shift(a.shape[-1])
    real = np.float64(scale(a)) * np.float64(scale(b)) * 2.0**k / np.float64(scale(y))
    return BatchMatMulParams(bool(op.options.transpose_b), 0, 0, requant(np.array([real]), y, op), pre_shift=k)


def prepare_float(model, op) -> BatchMatMulParams:
    return BatchMatMulParams(bool(op.options.transpose_b), 0, 0, None, float_bounds(op))


def output_shape(a_shape: tuple, b_shape: tuple, transpose_b: bool):
    """y's shape, or a message saying why there is none."""
    if len(a_shape) < 2 or len(b_shape) < 2:
        return f"both inputs need rank >= 2, not {a_shape} and {b_shape}"
    m, k = a_shape[-2:]
    kb, n = (b_shape[-1], b_shape[-2]) if transpose_b else b_shape[-2:]
    if k != kb:
        return f"a is {a_shape} and b {b_shape}{' (read transposed)' if transpose_b else ''}: K differs ({k}, {kb})"
    try:
        lead = np.broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2]))
    except ValueError:
        return f"leading dimensions {a_shape[:-2]} and {b_shape[:-2]} do not broadcast"
    return tuple(lead) + (m, n)


def verify(c: Check):
    a, b, y = c.input(0), c.input(1), c.output()
    for t in (a, b, y):
        c.activation(t)
    shape = output_shape(a.shape, b.shape, bool(c.options.transpose_b))
    if isinstance(shape, str):
        c.fail(shape)
    if y.shape != shape:
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {shape}")
    k = a.shape[-1]
    if c.form == INT8 and k * MAX_INPUT_MAGNITUDE * MAX_INPUT_MAGNITUDE > INT32_MAX:
        c.fail(f"reduction length {k} can overflow the int32 accumulator ({k} x 255 x 255 > 2^31 - 1)")


def _operands(ins, p):
    a, b = ins[0], ins[1]
    return a, (np.swapaxes(b, -1, -2) if p.transpose_b else b)


def reference(ins, p: BatchMatMulParams) -> np.ndarray:
    a, b = _operands(ins, p)
    acc = np.matmul(a.astype(np.int64) - p.zp_a, b.astype(np.int64) - p.zp_b)
    if p.pre_shift:  # the int16 form's
        acc = (acc + (np.int64(1) << (p.pre_shift - 1))) >> p.pre_shift
    return requantize_to(acc, p.out)


def reference_float(ins, p: BatchMatMulParams) -> np.ndarray:
    a, b = _operands(ins, p)
    return float_clamp(np.matmul(a, b).astype(np.float32), p.bounds)


def macs(model, op) -> int:
    y = model.tensors[op.outputs[0]]
    return y.numel * model.tensors[op.inputs[0]].shape[-1]


BATCH_MATMUL = OpDef(OpCode.BATCH_MATMUL, (2, 2), 1, True, BatchMatMulOptions, verify, prepare, reference,
                     "batch_matmul", since="0.3.0", macs=macs,
                     forms=(Form(FLOAT32, verify, prepare_float, reference_float, None, "0.3.0"),
                            Form(INT16, verify, prepare_int16, reference, "batch_matmul", "0.3.0")),
                     batch=lambda model, op: len({len(model.tensors[t].shape) for t in (*op.inputs, *op.outputs)}) == 1
                     and len(model.tensors[op.outputs[0]].shape) > 2)
