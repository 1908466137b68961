"""The compiled CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED kernels (qrt/kernels/gemm.pyx,
qrt/kernels/depthwise.pyx) are bit-exact with their NumPy references (qrt/ops/conv_2d.py, depthwise_conv_2d.py), on
every instruction-set path this machine supports (qrt/kernels/isa.pyx) and at 1 and 2 threads.

Every case is a one-op model built with ModelBuilder and checked by verify_model (so it is a
model the loader would accept), prepared with prepare_op, then run by the reference and by the
kernel into an array pre-filled with the bitwise complement of the reference (so any element
the kernel skips is caught). Seeded and swept: random shapes, strides, dilations, asymmetric
padding, groups, depth multipliers, batches, zero points at both ends of int8, weights at +-127,
per-tensor and per-channel scales, saturating outputs, fused activations, and reductions at the
int32 accumulator bound of SPEC.md section 4.5. Bad shapes must raise ValueError.
"""
from __future__ import annotations

import ctypes
import dataclasses
import mmap
import sys

import numpy as np
import pytest

from qrt.format import (
    Activation, Conv2DOptions, DepthwiseConv2DOptions, DType, ModelBuilder, OpCode,
)
from qrt.kernels import isa as ISA
from qrt.kernels.requantize import tables32
from qrt.kernels.depthwise import bind_depthwise_conv_2d, depthwise_conv_2d, pack_depthwise_conv_2d
from qrt.kernels.gemm import conv_2d, fully_connected
from qrt import verify_model
from qrt.ops import OPS, prepare_op
from qrt.ops.base import Requant
from qrt.ops.conv_2d import ConvParams
from qrt.ops.fully_connected import FullyConnectedParams

INT32_MAX = 2**31 - 1
REF_CONV, REF_DEPTHWISE, REF_FC = (OPS[op].reference for op in (
    OpCode.CONV_2D, OpCode.DEPTHWISE_CONV_2D, OpCode.FULLY_CONNECTED))
ACC_TERM = 255 * 127  # largest |(x - zp_x) * w|


# ------------------------------------------------------------------------------- case makers

def _zero_point(rng) -> int:
    return int(rng.choice([-128, 127, int(rng.integers(-128, 128)), 0]))


def _input(rng, shape, zp) -> np.ndarray:
    """Random int8 data; sometimes all at the far end from zp (|x - zp| = 255 where possible)."""
    kind = rng.integers(0, 5)
    if kind == 0:
        return np.full(shape, -128 if zp >= 0 else 127, np.int8)
    if kind == 1:
        return rng.choice(np.array([-128, 127], np.int8), size=shape)
    return rng.integers(-128, 128, size=shape, dtype=np.int8)


def _weights(rng, shape) -> np.ndarray:
    kind = rng.integers(0, 5)
    if kind == 0:
        return rng.choice(np.array([-127, 127], np.int8), size=shape)  # weights at +-127
    if kind == 1:
        return np.full(shape, 127 if rng.integers(0, 2) else -127, np.int8)
    return rng.integers(-127, 128, size=shape, dtype=np.int8)


def _scales(rng, channels):
    """(s_x, s_w): s_w per tensor (a scalar) or per channel (one scale per output channel).
    One case in three uses powers of two only, so that the multipliers are exact powers of two
    and the requantization meets exact ties (x.5), which must round toward +infinity."""
    pow2 = rng.integers(0, 3) == 0
    per_tensor = rng.integers(0, 2) == 0
    size = None if per_tensor else channels
    if pow2:
        s_x = np.float32(2.0 ** -int(rng.integers(3, 7)))
        s_w = np.exp2(-rng.integers(5, 9, size=size)).astype(np.float32)
    else:
        s_x = np.float32(rng.uniform(0.01, 0.1))
        s_w = np.asarray(rng.uniform(0.001, 0.05, size=size), np.float32)
    return s_x, (np.float32(s_w) if per_tensor else s_w)


def _bias(rng, channels, reduction) -> np.ndarray:
    limit = INT32_MAX - reduction * ACC_TERM  # the loader's bound (SPEC.md 4.5)
    assert limit >= 0
    kind = rng.integers(0, 4)
    if kind == 0:
        return rng.choice(np.array([-limit, limit], np.int64), size=channels)  # at the bound
    if kind == 1:
        return np.zeros(channels, np.int64)
    return rng.integers(-min(limit, 1 << 20), min(limit, 1 << 20) + 1, size=channels)


def _output_scale(rng, s_x, s_w, reduction) -> np.float32:
    """Output scale around the accumulator's typical size, times a random factor: most cases
    land inside int8, some saturate, some collapse to the zero point (tiny multipliers). With
    power-of-two input scales the output scale is one too (M_c = 2^-k: ties are frequent)."""
    s_x, s_w_max = float(s_x), float(np.max(s_w))
    if np.log2(s_x).is_integer() and np.all(np.log2(np.asarray(s_w, np.float64)) % 1 == 0):
        return np.float32(s_x * s_w_max * 2.0 ** int(rng.integers(0, 15)))
    typical = np.sqrt(reduction) * 150.0 * 73.0
    factor = 10.0 ** rng.uniform(-2.5, 1.0)
    if rng.integers(0, 25) == 0:
        factor = 2.0**45  # multiplier below 2^-32: the shift-62 path of SPEC.md 4.1
    return np.float32(s_x * s_w_max * typical / 100.0 * factor)


def _activation(rng, b_op_kwargs):
    act = Activation(int(rng.integers(0, 4)))
    b_op_kwargs["activation"] = act
    if act == Activation.CLIP:
        lo = float(rng.uniform(-8, 2))
        b_op_kwargs["clip"] = (lo, lo + float(rng.uniform(0, 8)))
    return act


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a)  # weights of a loaded model are read-only memory-mapped data
    a.setflags(write=False)
    return a


def _one_op_model(opcode, x_shape, zp_x, s_x, w_data, s_w, w_axis, bias_data, y_shape, options, rng):
    b = ModelBuilder("one_op")
    x = b.tensor("x", DType.INT8, x_shape, scale=s_x, zero_point=zp_x)
    w = b.tensor("w", DType.INT8, w_data.shape, w_data, scale=s_w, axis=w_axis)
    bias_scale = None
    if rng.integers(0, 2):
        bias_scale = np.float32(s_x) * np.broadcast_to(np.asarray(s_w, np.float32), (len(bias_data),))
    bias = b.tensor("bias", DType.INT32, (len(bias_data),), bias_data, scale=bias_scale)
    reduction = int(np.prod(w_data.shape[1:])) if opcode != OpCode.DEPTHWISE_CONV_2D \
        else int(w_data.shape[1] * w_data.shape[2])
    y = b.tensor("y", DType.INT8, y_shape, scale=_output_scale(rng, s_x, s_w, reduction),
                 zero_point=_zero_point(rng))
    kwargs = {}
    act = _activation(rng, kwargs)
    b.op(opcode, [x, w, bias], [y], options, **kwargs)
    b.input("x", x)
    b.output("y", y)
    model = b.build()
    verify_model(model)
    return model, act


def _out_size(size, pad_a, pad_b, k, d, s):
    return (size + pad_a + pad_b - d * (k - 1) - 1) // s + 1


def _maybe_shared_requant(rng, p, s_w):
    """With per-tensor weights, sometimes hand the kernel one shared multiplier/shift (the
    reference broadcasts it): exercises the kernels' step-0 indexing."""
    if np.ndim(s_w) == 0 and rng.integers(0, 3) == 0:
        r = p.out
        p = dataclasses.replace(p, out=Requant(r.multiplier[:1].copy(), r.shift[:1].copy(),
                                               r.zero_point, r.lo, r.hi))
    return p


PATHS = [(isa, threads) for isa in ISA.supported() for threads in (1, 2)]


def _run_and_compare(kernel, reference, ins, p, what):
    """On every instruction-set path and at 1 and 2 threads."""
    ref = reference(ins, p)
    for isa, threads in PATHS:
        out = np.ascontiguousarray(~ref)  # every element differs from the expected one
        assert kernel(ins, p, out, isa=isa, threads=threads) is None
        if not np.array_equal(out, ref):
            bad = np.argwhere(out != ref)
            i = tuple(bad[0])
            raise AssertionError(f"{what} [{isa}, {threads} threads]: {len(bad)} of {ref.size} "
                                 f"outputs differ; first at {i}: kernel {out[i]}, reference {ref[i]}")
    return ref


def _conv_case(rng, depthwise_like=False):
    groups_kind = rng.integers(0, 3) if not depthwise_like else 2
    cin_g = int(rng.integers(1, 6))
    cout_g = int(rng.integers(1, 6))
    if groups_kind == 0:
        groups = 1
    elif groups_kind == 1:
        groups = int(rng.integers(2, 5))  # several channels per group
    else:
        groups, cin_g = int(rng.integers(2, 7)), 1  # groups == C_in (depthwise-like)
    while True:
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        sh, sw, dh, dw = (int(v) for v in rng.integers(1, 4, 4))
        pads = tuple(int(v) for v in rng.integers(0, 4, 4))
        h, w = (int(v) for v in rng.integers(1, 10, 2))
        oh = _out_size(h, pads[0], pads[2], kh, dh, sh)
        ow = _out_size(w, pads[1], pads[3], kw, dw, sw)
        if oh >= 1 and ow >= 1:
            break
    n = int(rng.integers(1, 4))
    cin, cout = cin_g * groups, cout_g * groups
    zp_x, (s_x, s_w) = _zero_point(rng), _scales(rng, cout)
    w_data = _weights(rng, (cout, kh, kw, cin_g))
    bias_data = _bias(rng, cout, kh * kw * cin_g)
    options = Conv2DOptions(sh, sw, dh, dw, *pads, groups=groups)
    model, act = _one_op_model(OpCode.CONV_2D, (n, h, w, cin), zp_x, s_x, w_data, s_w, 0, bias_data,
                               (n, oh, ow, cout), options, rng)
    p = _maybe_shared_requant(rng, prepare_op(model, 0), s_w)
    x = _input(rng, (n, h, w, cin), zp_x)
    ins = [x, _readonly(w_data), _readonly(bias_data.astype(np.int32))]
    return ins, p, f"conv x{x.shape} w{w_data.shape} {options} {act.name} zp_x={zp_x} out={p.out}"


def _depthwise_case(rng):
    mult = int(rng.integers(1, 4))
    c = int(rng.integers(1, 9))
    while True:
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        sh, sw, dh, dw = (int(v) for v in rng.integers(1, 4, 4))
        pads = tuple(int(v) for v in rng.integers(0, 4, 4))
        h, w = (int(v) for v in rng.integers(1, 10, 2))
        oh = _out_size(h, pads[0], pads[2], kh, dh, sh)
        ow = _out_size(w, pads[1], pads[3], kw, dw, sw)
        if oh >= 1 and ow >= 1:
            break
    n = int(rng.integers(1, 4))
    cout = c * mult
    zp_x, (s_x, s_w) = _zero_point(rng), _scales(rng, cout)
    w_data = _weights(rng, (1, kh, kw, cout))
    bias_data = _bias(rng, cout, kh * kw)
    options = DepthwiseConv2DOptions(sh, sw, dh, dw, *pads, depth_multiplier=mult)
    model, act = _one_op_model(OpCode.DEPTHWISE_CONV_2D, (n, h, w, c), zp_x, s_x, w_data, s_w, 3,
                               bias_data, (n, oh, ow, cout), options, rng)
    p = _maybe_shared_requant(rng, prepare_op(model, 0), s_w)
    x = _input(rng, (n, h, w, c), zp_x)
    ins = [x, _readonly(w_data), _readonly(bias_data.astype(np.int32))]
    return ins, p, f"depthwise x{x.shape} w{w_data.shape} {options} {act.name} zp_x={zp_x} out={p.out}"


def _fc_case(rng):
    k = int(rng.choice([1, 2, 3, 7, 8, 15, 16, 17, 33, 64, 100, 257]))
    n_out = int(rng.integers(1, 12))
    lead = tuple(int(v) for v in rng.integers(1, 4, int(rng.integers(0, 4))))  # rank 1 to 4
    zp_x, (s_x, s_w) = _zero_point(rng), _scales(rng, n_out)
    w_data = _weights(rng, (n_out, k))
    bias_data = _bias(rng, n_out, k)
    model, act = _one_op_model(OpCode.FULLY_CONNECTED, lead + (k,), zp_x, s_x, w_data, s_w, 0,
                               bias_data, lead + (n_out,), None, rng)
    p = _maybe_shared_requant(rng, prepare_op(model, 0), s_w)
    x = _input(rng, lead + (k,), zp_x)
    ins = [x, _readonly(w_data), _readonly(bias_data.astype(np.int32))]
    return ins, p, f"fc x{x.shape} w{w_data.shape} {act.name} zp_x={zp_x} out={p.out}"


# ------------------------------------------------------------------------------- sweeps

SEEDS = range(16)


@pytest.mark.parametrize("seed", SEEDS)
def test_conv_2d_matches_reference(seed):
    rng = np.random.default_rng(1000 + seed)
    for _ in range(14):
        ins, p, what = _conv_case(rng)
        _run_and_compare(conv_2d, REF_CONV, ins, p, what)


@pytest.mark.parametrize("seed", SEEDS)
def test_depthwise_conv_2d_matches_reference(seed):
    rng = np.random.default_rng(2000 + seed)
    for _ in range(14):
        ins, p, what = _depthwise_case(rng)
        _run_and_compare(depthwise_conv_2d, REF_DEPTHWISE, ins, p, what)


@pytest.mark.parametrize("seed", SEEDS)
def test_fully_connected_matches_reference(seed):
    rng = np.random.default_rng(3000 + seed)
    for _ in range(14):
        ins, p, what = _fc_case(rng)
        _run_and_compare(fully_connected, REF_FC, ins, p, what)


def test_sweep_covers_the_edges():
    """The generators above do reach the corners they claim to (so the sweep means something):
    saturation at both ends, outputs inside the range, grouped and depthwise-like convolutions,
    every activation and the one-shared-multiplier path."""
    rng = np.random.default_rng(1000)
    seen = set()
    for _ in range(120):
        ins, p, _ = _conv_case(rng)
        ref = REF_CONV(ins, p)
        seen.add(("groups>1", p.groups > 1))
        seen.add(("dwlike", p.groups == ins[0].shape[3] and p.groups > 1))
        seen.add(("shared", len(p.out.multiplier) == 1))
        seen.add(("lo", bool((ref == p.out.lo).any())))
        seen.add(("hi", bool((ref == p.out.hi).any())))
        seen.add(("inside", bool(((ref > p.out.lo) & (ref < p.out.hi)).any())))
        seen.add(("zp_x", p.input_zero_point))
    for flag in ("groups>1", "dwlike", "shared", "lo", "hi", "inside"):
        assert (flag, True) in seen, flag
    assert ("zp_x", -128) in seen and ("zp_x", 127) in seen
    # both forms of the vector requantization (simd/requant.h: 32-bit when every shift >= 33,
    # 64-bit otherwise) are met by the conv and the depthwise sweeps
    for make in (_conv_case, _depthwise_case):
        forms = set()
        for _ in range(120):
            ins, p, _ = make(rng)
            forms.add(tables32(p.out.shift, True, p.out.zero_point)[0])
        assert forms == {True, False}, (make.__name__, forms)


def test_ties_round_toward_plus_infinity():
    """M = 0.5 exactly (m = 2^30, n = 31): accumulators -3..3 give -1, -1, 0, 0, 1, 1, 2 (SPEC.md
    4.2: ties toward +infinity), through each of the three kernels."""
    accs = np.arange(-3, 4)
    expect = np.array([-1, -1, 0, 0, 1, 1, 2], np.int8)
    half = Requant(np.array([2**30], np.int32), np.array([31], np.int32), 0, -128, 127)
    b = _readonly(accs.astype(np.int32))  # the bias carries the accumulator: x - zp_x = 0
    one = dict(stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), input_zero_point=5, out=half)
    conv_p = ConvParams(groups=1, **one)
    x = np.full((1, 1, 1, 1), 5, np.int8)
    for kernel, w, p in ((conv_2d, np.ones((7, 1, 1, 1), np.int8), conv_p),
                         (depthwise_conv_2d, np.ones((1, 1, 1, 7), np.int8), dataclasses.replace(conv_p, groups=7))):
        out = np.zeros((1, 1, 1, 7), np.int8)
        kernel([x, _readonly(w), b], p, out)
        assert out.ravel().tolist() == expect.tolist()
    fc_p = FullyConnectedParams(5, half)
    out = np.zeros((1, 7), np.int8)
    fully_connected([np.full((1, 1), 5, np.int8), _readonly(np.ones((7, 1), np.int8)), b], fc_p, out)
    assert out.ravel().tolist() == expect.tolist()


# ------------------------------------------------------------------------------- accumulator bound

def _bound_model(opcode, x_shape, w_data, bias_data, y_shape, options, s_w, zp_x, w_axis):
    s_x = np.float32(0.05)
    b = ModelBuilder("bound")
    x = b.tensor("x", DType.INT8, x_shape, scale=s_x, zero_point=zp_x)
    w = b.tensor("w", DType.INT8, w_data.shape, w_data, scale=s_w, axis=w_axis)
    bias = b.tensor("bias", DType.INT32, (len(bias_data),), bias_data)
    # outputs ~ acc / 2^25: about +-64 at the bound, so the values are not all saturated
    y = b.tensor("y", DType.INT8, y_shape, scale=np.float32(float(s_x) * float(np.max(s_w)) * 2.0**25),
                 zero_point=0)
    b.op(opcode, [x, w, bias], [y], options)
    b.input("x", x)
    b.output("y", y)
    model = b.build()
    verify_model(model)
    return model


def test_fully_connected_at_the_accumulator_bound():
    """K = 60000, |x - zp_x| = 255 everywhere, weights +-127, |bias| = 2^31 - 1 - K*255*127: the
    exact sums reach +-(2^31 - 1) and must still be exact."""
    k = 60000
    limit = INT32_MAX - k * ACC_TERM
    assert limit > 0
    w_data = np.empty((6, k), np.int8)
    w_data[0::2] = 127
    w_data[1::2] = -127
    w_data[4, ::2] = -127  # a mixed row: partial sums swing
    bias_data = np.array([limit, -limit, -limit, limit, 0, 7], np.int64)
    for zp_x, xv in ((-128, 127), (127, -128)):
        s_w = np.full(6, 0.01, np.float32)
        model = _bound_model(OpCode.FULLY_CONNECTED, (2, k), w_data, bias_data, (2, 6), None, s_w, zp_x, 0)
        p = prepare_op(model, 0)
        x = np.full((2, k), xv, np.int8)
        x[1, : k // 2] = -128 if xv == 127 else 127  # second row: half the terms cancel
        ins = [x, _readonly(w_data), _readonly(bias_data.astype(np.int32))]
        ref = _run_and_compare(fully_connected, REF_FC, ins, p, f"FC bound zp_x={zp_x}")
        acc0 = (x[0].astype(np.int64) - zp_x) @ w_data.astype(np.int64).T + bias_data
        assert abs(acc0[:4]).max() == INT32_MAX  # the case really sits on the bound
        assert ((ref > -128) & (ref < 127)).any()


def test_conv_2d_at_the_accumulator_bound():
    """A 3x3 conv with 4000 input channels (K = 36000) at |x - zp_x| = 255, weights +-127 and a
    bias at the limit, with padding (border outputs sum fewer taps)."""
    cin, cout = 4000, 4
    k = 9 * cin
    limit = INT32_MAX - k * ACC_TERM
    w_data = np.empty((cout, 3, 3, cin), np.int8)
    w_data[0], w_data[1], w_data[2], w_data[3] = 127, -127, 127, -127
    bias_data = np.array([limit, -limit, -limit, limit], np.int64)
    s_w = np.array([0.01, 0.02, 0.01, 0.03], np.float32)
    options = Conv2DOptions(pad_top=1, pad_left=0, pad_bottom=2, pad_right=1)
    model = _bound_model(OpCode.CONV_2D, (1, 3, 3, cin), w_data, bias_data, (1, 4, 2, cout), options,
                         s_w, -128, 0)
    p = prepare_op(model, 0)
    x = np.full((1, 3, 3, cin), 127, np.int8)
    ins = [x, _readonly(w_data), _readonly(bias_data.astype(np.int32))]
    _run_and_compare(conv_2d, REF_CONV, ins, p, "conv bound")


def test_depthwise_at_the_accumulator_bound():
    """Depthwise reduces KH*KW only, so the bias carries the bound: |bias| = 2^31 - 1 - 9*255*127."""
    c, mult = 3, 2
    limit = INT32_MAX - 9 * ACC_TERM
    w_data = np.tile(np.array([127, -127], np.int8), (1, 3, 3, c * mult // 2))
    bias_data = np.array([limit, -limit, -limit, limit, 5, -5], np.int64)
    s_w = np.float32(0.02)
    options = DepthwiseConv2DOptions(pad_top=1, pad_left=1, pad_bottom=1, pad_right=1, depth_multiplier=mult)
    model = _bound_model(OpCode.DEPTHWISE_CONV_2D, (2, 4, 4, c), w_data, bias_data, (2, 4, 4, c * mult),
                         options, s_w, 127, 3)
    p = prepare_op(model, 0)
    x = np.full((2, 4, 4, c), -128, np.int8)
    ins = [x, _readonly(w_data), _readonly(bias_data.astype(np.int32))]
    _run_and_compare(depthwise_conv_2d, REF_DEPTHWISE, ins, p, "depthwise bound")


# ------------------------------------------------------------------------------- depthwise at size

# The vector kernels work in blocks of 32 channels: none, one partial or several, with tails of
# every kind; 96, 144 and 960 are MobileNetV2's.
DEPTHWISE_CHANNELS = (1, 7, 16, 17, 32, 63, 96, 144, 960)


def _depthwise_sized_case(rng, c, zp_x, common):
    """c input channels at a realistic size: the common layer (3x3, stride 1, padding 1,
    multiplier 1: the vector paths' column-sharing kernels) or a random one (kernel up to 5x5,
    strides and dilations 1-2, asymmetric pads, multiplier 1-3); a batch of 1-2 images of about
    1.5M output values x taps (rows enough for every thread)."""
    mult = 1 if common else int(rng.integers(1, 4))
    while True:
        if common:
            (kh, kw), (sh, sw, dh, dw), pads = (3, 3), (1, 1, 1, 1), (1, 1, 1, 1)
        else:
            kh, kw = (int(v) for v in rng.integers(1, 6, 2))
            sh, sw, dh, dw = (int(v) for v in rng.integers(1, 3, 4))
            pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        n = int(rng.integers(1, 3))
        side = int(np.clip(np.sqrt(1.5e6 / (n * c * mult * kh * kw)), 4, 40))
        h, w = (side + int(v) for v in rng.integers(0, 4, 2))
        oh = _out_size(h, pads[0], pads[2], kh, dh, sh)
        ow = _out_size(w, pads[1], pads[3], kw, dw, sw)
        if oh >= 1 and ow >= 1:
            break
    cout = c * mult
    s_x, s_w = _scales(rng, cout)
    w_data = _weights(rng, (1, kh, kw, cout))
    bias_data = _bias(rng, cout, kh * kw)
    options = DepthwiseConv2DOptions(sh, sw, dh, dw, *pads, depth_multiplier=mult)
    model, act = _one_op_model(OpCode.DEPTHWISE_CONV_2D, (n, h, w, c), zp_x, s_x, w_data, s_w, 3,
                               bias_data, (n, oh, ow, cout), options, rng)
    p = _maybe_shared_requant(rng, prepare_op(model, 0), s_w)
    x = _input(rng, (n, h, w, c), zp_x)
    ins = [x, _readonly(w_data), _readonly(bias_data.astype(np.int32))]
    return ins, p, f"depthwise x{x.shape} w{w_data.shape} {options} {act.name} zp_x={zp_x} out={p.out}"


@pytest.mark.parametrize("channels", DEPTHWISE_CHANNELS)
def test_depthwise_channel_counts(channels):
    """Every path at 1 and 2 threads, and at 3 (rows split unevenly): the common layer and
    five random ones, with zero points at both ends of int8 and random."""
    rng = np.random.default_rng(4000 + channels)
    for i in range(6):
        zp_x = (-128, 127, int(rng.integers(-128, 128)))[i % 3]
        ins, p, what = _depthwise_sized_case(rng, channels, zp_x, common=i == 0)
        ref = _run_and_compare(depthwise_conv_2d, REF_DEPTHWISE, ins, p, what)
        out = np.zeros_like(ref)
        depthwise_conv_2d(ins, p, out, threads=3)
        assert np.array_equal(out, ref), f"{what} [3 threads]"


def test_depthwise_packed_step_runs_again_on_new_input():
    """As the runtime uses it: packed at load (no input yet), bound once, run on new data each
    time. With 7 channels the last input pixels are read from a copy each run refreshes."""
    rng = np.random.default_rng(5000)
    ins, p, what = _depthwise_sized_case(rng, 7, 3, common=True)
    for isa in ISA.supported():
        packed = pack_depthwise_conv_2d([None, ins[1], ins[2]], p, isa=isa)
        x, out = ins[0].copy(), np.zeros(REF_DEPTHWISE(ins, p).shape, np.int8)
        step = bind_depthwise_conv_2d([x, ins[1], ins[2]], p, out, isa=isa, threads=2, packed=packed)
        for _ in range(3):
            x[...] = rng.integers(-128, 128, x.shape, dtype=np.int8)
            step()
            assert np.array_equal(out, REF_DEPTHWISE([x, ins[1], ins[2]], p)), f"{what} [{isa}]"
        other = next((o for o in ISA.supported() if o != isa), None)
        if other is not None:
            with pytest.raises(ValueError):
                bind_depthwise_conv_2d([x, ins[1], ins[2]], p, out, isa=other, packed=packed)


def _before_guard_page(shape):
    """A zeroed int8 array whose last byte ends a page followed by an inaccessible one: a kernel
    that reads or writes past the array stops the test with a segmentation fault."""
    size, page = int(np.prod(shape)), mmap.PAGESIZE
    pages = -(-size // page) + 1
    mem = mmap.mmap(-1, pages * page)
    start = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(start + (pages - 1) * page), page, 0) == 0  # PROT_NONE
    return np.frombuffer(mem, np.int8, size, (pages - 1) * page - size).reshape(shape)


@pytest.mark.skipif(sys.platform != "linux", reason="guard pages through mprotect")
def test_depthwise_stays_inside_its_buffers():
    """The vector kernels read whole 32-channel blocks per tap: with x and out ending at a guard
    page, channel counts off the block size must neither read past x nor write past out."""
    rng = np.random.default_rng(6000)
    for c, common in ((7, True), (17, False), (33, True), (1, False)):
        ins, p, what = _depthwise_sized_case(rng, c, int(rng.integers(-128, 128)), common)
        ref = REF_DEPTHWISE(ins, p)
        x = _before_guard_page(ins[0].shape)
        x[...] = ins[0]
        for isa in ISA.supported():
            out = _before_guard_page(ref.shape)
            depthwise_conv_2d([x, ins[1], ins[2]], p, out, isa=isa, threads=2)
            assert np.array_equal(out, ref), f"{what} [{isa}]"


# ------------------------------------------------------------------------------- bad shapes

def _conv_fixture():
    """A grouped, padded conv: x [2,5,6,4], w [6,3,2,2] (groups 2), out [2,5,5,6]."""
    b = ModelBuilder()
    x = b.tensor("x", DType.INT8, (2, 5, 6, 4), scale=0.05, zero_point=3)
    w_data = np.arange(6 * 3 * 2 * 2, dtype=np.int64).reshape(6, 3, 2, 2) % 255 - 127
    w = b.tensor("w", DType.INT8, (6, 3, 2, 2), w_data, scale=0.01)
    bias = b.tensor("b", DType.INT32, (6,), np.arange(6) * 100)
    y = b.tensor("y", DType.INT8, (2, 5, 5, 6), scale=0.1, zero_point=-1)
    b.op(OpCode.CONV_2D, [x, w, bias], [y], Conv2DOptions(pad_top=1, pad_bottom=1, groups=2))
    b.input("x", x)
    b.output("y", y)
    model = b.build()
    verify_model(model)
    ins = [np.zeros((2, 5, 6, 4), np.int8), model.tensors[w].data, model.tensors[bias].data]
    return ins, prepare_op(model, 0), (2, 5, 5, 6)


def _depthwise_fixture():
    """x [1,4,4,3], multiplier 2, 3x3 kernel, no padding: out [1,2,2,6]."""
    b = ModelBuilder()
    x = b.tensor("x", DType.INT8, (1, 4, 4, 3), scale=0.05, zero_point=0)
    w = b.tensor("w", DType.INT8, (1, 3, 3, 6), np.ones((1, 3, 3, 6)), scale=0.01, axis=3)
    bias = b.tensor("b", DType.INT32, (6,), np.zeros(6))
    y = b.tensor("y", DType.INT8, (1, 2, 2, 6), scale=0.1, zero_point=0)
    b.op(OpCode.DEPTHWISE_CONV_2D, [x, w, bias], [y], DepthwiseConv2DOptions(depth_multiplier=2))
    b.input("x", x)
    b.output("y", y)
    model = b.build()
    verify_model(model)
    ins = [np.zeros((1, 4, 4, 3), np.int8), model.tensors[w].data, model.tensors[bias].data]
    return ins, prepare_op(model, 0), (1, 2, 2, 6)


def _fc_fixture():
    """x [2,3,5] -> out [2,3,4]."""
    b = ModelBuilder()
    x = b.tensor("x", DType.INT8, (2, 3, 5), scale=0.05, zero_point=-7)
    w = b.tensor("w", DType.INT8, (4, 5), np.ones((4, 5)), scale=0.01)
    bias = b.tensor("b", DType.INT32, (4,), np.zeros(4))
    y = b.tensor("y", DType.INT8, (2, 3, 4), scale=0.1, zero_point=0)
    b.op(OpCode.FULLY_CONNECTED, [x, w, bias], [y])
    b.input("x", x)
    b.output("y", y)
    model = b.build()
    verify_model(model)
    ins = [np.zeros((2, 3, 5), np.int8), model.tensors[w].data, model.tensors[bias].data]
    return ins, prepare_op(model, 0), (2, 3, 4)


FIXTURES = {"conv": (_conv_fixture, conv_2d, REF_CONV),
            "depthwise": (_depthwise_fixture, depthwise_conv_2d, REF_DEPTHWISE),
            "fc": (_fc_fixture, fully_connected, REF_FC)}


@pytest.mark.parametrize("kind", sorted(FIXTURES))
def test_fixtures_run(kind):
    """The unmodified fixtures are accepted and exact, so the rejections below are specific."""
    make, kernel, reference = FIXTURES[kind]
    ins, p, shape = make()
    ins[0] = np.random.default_rng(0).integers(-128, 128, ins[0].shape, dtype=np.int8)
    _run_and_compare(kernel, reference, ins, p, kind)


def _replace_input(k, new):
    def mutate(ins, p, shape):
        ins = list(ins)
        ins[k] = new(ins[k])
        return ins, p, np.zeros(shape, np.int8)
    return mutate


def _replace_out(new_shape_or_array):
    def mutate(ins, p, shape):
        out = new_shape_or_array(shape) if callable(new_shape_or_array) else new_shape_or_array
        return ins, p, out
    return mutate


def _replace_params(**changes):
    def mutate(ins, p, shape):
        return ins, dataclasses.replace(p, **changes), np.zeros(shape, np.int8)
    return mutate


def _replace_requant(**changes):
    def mutate(ins, p, shape):
        return ins, dataclasses.replace(p, out=dataclasses.replace(p.out, **changes)), np.zeros(shape, np.int8)
    return mutate


def _grow(axis, by=1):
    def f(a):
        shape = list(a.shape)
        shape[axis] += by
        return np.zeros(shape, a.dtype)
    return f


def _shrink(axis):
    def f(a):
        idx = [slice(None)] * a.ndim
        idx[axis] = slice(0, a.shape[axis] - 1)
        return np.ascontiguousarray(a[tuple(idx)])
    return f


COMMON_BAD = {
    "out one row too many": _replace_out(lambda s: np.zeros((s[0], s[1] + 1) + s[2:], np.int8)),
    "out one channel short": _replace_out(lambda s: np.zeros(s[:-1] + (s[-1] - 1,), np.int8)),
    "out int16": _replace_out(lambda s: np.zeros(s, np.int16)),
    "out not contiguous": _replace_out(lambda s: np.zeros(s[:-1] + (2 * s[-1],), np.int8)[..., ::2]),
    "out read-only": _replace_out(lambda s: _readonly(np.zeros(s, np.int8))),
    "x int16": _replace_input(0, lambda a: a.astype(np.int16)),
    "x not contiguous": _replace_input(0, lambda a: np.repeat(a, 2, axis=-1)[..., ::2]),
    "bias one short": _replace_input(2, _shrink(0)),
    "bias int64": _replace_input(2, lambda a: a.astype(np.int64)),
    "weights uint8": _replace_input(1, lambda a: a.view(np.uint8)),
    "two inputs": lambda ins, p, shape: (ins[:2], p, np.zeros(shape, np.int8)),
    "multiplier count": _replace_requant(multiplier=np.full(9, 2**30, np.int32), shift=np.full(9, 31, np.int32)),
    "shift 0": _replace_requant(shift=np.zeros(1, np.int32), multiplier=np.full(1, 2**30, np.int32)),
    "shift 63": _replace_requant(shift=np.full(1, 63, np.int32), multiplier=np.full(1, 2**30, np.int32)),
    "negative multiplier": _replace_requant(multiplier=np.full(1, -5, np.int32), shift=np.full(1, 31, np.int32)),
    "multiplier int64": _replace_requant(multiplier=np.full(1, 2**30, np.int64), shift=np.full(1, 31, np.int32)),
    "clamp beyond int8": _replace_requant(lo=-129),
    "clamp reversed": _replace_requant(lo=5, hi=4),
    "input zero point 200": _replace_params(input_zero_point=200),
}
CONV_BAD = {
    "x one channel short": _replace_input(0, _shrink(3)),
    "x one row taller": _replace_input(0, _grow(1)),
    "x rank 3": _replace_input(0, lambda a: a[0]),
    "weights one output short": _replace_input(1, _shrink(0)),
    "weights kernel taller": _replace_input(1, _grow(1)),
    "stride 0": _replace_params(stride=(0, 1)),
    "dilation 0": _replace_params(dilation=(1, 0)),
    "negative pad": _replace_params(pads=(0, -1, 0, 0)),
}
BAD = {
    "conv": {**COMMON_BAD, **CONV_BAD,
             "groups 3": _replace_params(groups=3),
             "groups 0": _replace_params(groups=0),
             "weights input channels": _replace_input(1, _grow(3))},
    "depthwise": {**COMMON_BAD, **CONV_BAD,
                  "multiplier 3": _replace_params(groups=3),
                  "multiplier 0": _replace_params(groups=0),
                  "weights leading dim 2": _replace_input(1, _grow(0))},
    "fc": {**COMMON_BAD,
           "x K short": _replace_input(0, _shrink(-1)),
           "x batch larger": _replace_input(0, _grow(0)),
           "x rank 0": _replace_input(0, lambda a: np.zeros((), np.int8)),
           "weights K longer": _replace_input(1, _grow(1)),
           "weights rank 3": _replace_input(1, lambda a: a[None]),
           "out rank 2": _replace_out(lambda s: np.zeros((s[0] * s[1], s[2]), np.int8))},
}


@pytest.mark.parametrize("kind,case", [(k, c) for k in sorted(BAD) for c in sorted(BAD[k])])
def test_bad_shapes_raise_value_error(kind, case):
    make, kernel, _ = FIXTURES[kind]
    ins, p, shape = make()
    ins, p, out = BAD[kind][case](ins, p, shape)
    before = out.copy()
    with pytest.raises(ValueError):
        kernel(ins, p, out)
    assert np.array_equal(out, before)  # nothing written before the check failed
