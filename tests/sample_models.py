"""Small valid models for the format tests, the fuzzers and the CLI demo.

all_ops_model() uses every op code, every fused activation kind, per-tensor and per-channel
quantization, constants of every dtype and full metadata.
"""
from __future__ import annotations

import numpy as np

from qrt.format import (
    Activation, Calibration, ConcatOptions, Conv2DOptions, DepthwiseConv2DOptions, DType, Layout,
    LeakyReluOptions, LutOptions, MeanOptions, Metadata, ModelBuilder, OpCode, PadOptions,
    Pool2DOptions, SoftmaxOptions, TransposeOptions,
)


def _weights(rng, shape):
    return rng.integers(-127, 128, size=shape, dtype=np.int8)


def all_ops_model(seed: int = 0):
    rng = np.random.default_rng(seed)
    b = ModelBuilder("all_ops")
    T = b.tensor
    s_act = 0.05

    def act(name, shape, scale=s_act, zp=-3):
        return T(name, DType.INT8, shape, scale=scale, zero_point=zp)

    def conv_params(prefix, cout, kshape, axis, s_in):
        ws = rng.uniform(0.001, 0.02, cout).astype(np.float32)
        w = T(prefix + ".weight", DType.INT8, kshape, _weights(rng, kshape), scale=ws, axis=axis)
        bias = T(prefix + ".bias", DType.INT32, (cout,), rng.integers(-5000, 5000, cout),
                 scale=np.float32(s_in) * ws, axis=0)
        return w, bias

    x = T("image", DType.FLOAT32, (1, 8, 8, 3))
    q0 = act("q0", (1, 8, 8, 3), zp=-128)
    b.op(OpCode.QUANTIZE, [x], [q0], name="quantize")

    w, bias = conv_params("conv", 4, (4, 3, 3, 3), 0, s_act)
    c1 = act("c1", (1, 8, 8, 4))
    b.op(OpCode.CONV_2D, [q0, w, bias], [c1], Conv2DOptions(pad_top=1, pad_left=1, pad_bottom=1, pad_right=1),
         Activation.RELU, name="conv")

    w, bias = conv_params("dw", 8, (1, 3, 3, 8), 3, s_act)
    d = act("d", (1, 4, 4, 8))
    b.op(OpCode.DEPTHWISE_CONV_2D, [c1, w, bias], [d],
         DepthwiseConv2DOptions(stride_h=2, stride_w=2, pad_bottom=1, pad_right=1, depth_multiplier=2),
         Activation.RELU6, name="dw")

    w, bias = conv_params("grouped", 8, (8, 1, 1, 4), 0, s_act)
    g = act("g", (1, 4, 4, 8))
    b.op(OpCode.CONV_2D, [d, w, bias], [g], Conv2DOptions(groups=2, dilation_h=2), Activation.CLIP,
         clip=(-1.0, 2.5), name="grouped")

    a = act("a", (1, 4, 4, 8), 0.1, 0)
    b.op(OpCode.ADD, [g, d], [a], name="add")
    k = T("k", DType.INT8, (8,), _weights(rng, (8,)), scale=0.01, zero_point=0)
    mu = act("mu", (1, 4, 4, 8))
    b.op(OpCode.MUL, [a, k], [mu], name="mul")
    s = act("s", (1, 4, 4, 8))
    b.op(OpCode.SUB, [mu, a], [s], activation=Activation.RELU, name="sub")
    lr = act("lr", (1, 4, 4, 8))
    b.op(OpCode.LEAKY_RELU, [s], [lr], LeakyReluOptions(alpha=0.125), name="leaky")
    alpha = T("alpha", DType.INT8, (8,), _weights(rng, (8,)), scale=0.002, zero_point=0)
    p = act("p", (1, 4, 4, 8))
    b.op(OpCode.PRELU, [lr, alpha], [p], name="prelu")
    table = T("sigmoid.table", DType.INT8, (256,), rng.integers(-128, 128, 256))
    t = act("t", (1, 4, 4, 8), 1 / 256, -128)
    b.op(OpCode.LUT, [p, table], [t], LutOptions("sigmoid"), name="sigmoid")

    mp = act("mp", (1, 2, 2, 8), 1 / 256, -128)
    b.op(OpCode.MAX_POOL_2D, [t], [mp], Pool2DOptions(2, 2, 2, 2), name="maxpool")
    ap = act("ap", (1, 2, 2, 8))
    b.op(OpCode.AVERAGE_POOL_2D, [mp], [ap], Pool2DOptions(2, 2, 1, 1, pad_bottom=1, pad_right=1,
                                                           count_include_pad=True), name="avgpool")
    cc = act("cc", (1, 2, 2, 16))
    b.op(OpCode.CONCAT, [mp, ap], [cc], ConcatOptions(axis=3), name="concat")
    pd = act("pd", (1, 3, 3, 16))
    b.op(OpCode.PAD, [cc], [pd], PadOptions((0, 1, 0, 0, 0, 0, 1, 0)), name="pad")
    tr = act("tr", (1, 16, 3, 3))
    b.op(OpCode.TRANSPOSE, [pd], [tr], TransposeOptions((0, 3, 1, 2)), name="to_nchw")
    rs = act("rs", (1, 144))
    b.op(OpCode.RESHAPE, [tr], [rs], name="flatten")

    ws = rng.uniform(0.001, 0.01, 10).astype(np.float32)
    w = T("fc.weight", DType.INT8, (10, 144), _weights(rng, (10, 144)), scale=ws)
    bias = T("fc.bias", DType.INT32, (10,), rng.integers(-1000, 1000, 10), scale=np.float32(s_act) * ws)
    fc = act("fc", (1, 10), 0.2, 5)
    b.op(OpCode.FULLY_CONNECTED, [rs, w, bias], [fc], name="fc")
    sm = act("sm", (1, 10), 1 / 256, -128)
    b.op(OpCode.SOFTMAX, [fc], [sm], SoftmaxOptions(axis=-1, beta=1.0), name="softmax")
    rq = act("rq", (1, 10), 1 / 128, -128)
    b.op(OpCode.REQUANTIZE, [sm], [rq], name="requantize")
    probs = T("probs", DType.FLOAT32, (1, 10))
    b.op(OpCode.DEQUANTIZE, [rq], [probs], name="dequantize")

    mn = act("mn", (1, 16))
    b.op(OpCode.MEAN, [cc], [mn], MeanOptions((1, 2), False), name="mean")
    feat = T("features", DType.FLOAT32, (1, 16))
    b.op(OpCode.DEQUANTIZE, [mn], [feat], name="dequantize_features")

    # Constants of the remaining dtypes (not read by any op): round trips of every dtype.
    T("c.float32", DType.FLOAT32, (2, 3), rng.standard_normal((2, 3)))
    T("c.uint8", DType.UINT8, (5,), np.arange(250, 255), scale=0.5, zero_point=128)
    T("c.int16", DType.INT16, (2, 2), [[-32768, 32767], [0, 1]], scale=[0.1, 0.2], zero_point=[0, -7], axis=0)
    T("c.int64", DType.INT64, (3,), [-(2**63), 0, 2**63 - 1])
    T("c.int4", DType.INT4, (3,), np.array([0x7F, 0x08], dtype=np.uint8), scale=0.25, zero_point=0)

    b.input("image", x, Layout.AS_STORED)
    b.output("probs", probs)
    b.output("features", feat)
    return b.build(Metadata(
        producer="qrt tests", producer_version="0.1.0", source_file="all_ops.onnx",
        source_sha256="ab" * 32,
        calibration=Calibration("minmax", 100, {"percentile": "99.99", "per_channel": "true"}),
        properties={"task": "classification", "note": "ünïcode ✓"}))


def conv_chain_model(channels: int = 16, blocks: int = 3, size: int = 16, seed: int = 0):
    """An NCHW-interface CNN of conv + ReLU blocks, global mean and FC: a ResNet-like stand-in."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder("conv_chain")
    s = 0.05
    x = b.tensor("input", DType.INT8, (1, size, size, 3), scale=s, zero_point=-128)
    cur, cin = x, 3
    for i in range(blocks):
        ws = rng.uniform(0.002, 0.02, channels).astype(np.float32)
        w = b.tensor(f"conv{i}.weight", DType.INT8, (channels, 3, 3, cin), _weights(rng, (channels, 3, 3, cin)), scale=ws)
        bias = b.tensor(f"conv{i}.bias", DType.INT32, (channels,), rng.integers(-2000, 2000, channels),
                        scale=np.float32(s) * ws)
        y = b.tensor(f"conv{i}.out", DType.INT8, (1, size, size, channels), scale=s, zero_point=-128)
        b.op(OpCode.CONV_2D, [cur, w, bias], [y], Conv2DOptions(pad_top=1, pad_left=1, pad_bottom=1, pad_right=1),
             Activation.RELU, name=f"conv{i}")
        cur, cin = y, channels
    m = b.tensor("pooled", DType.INT8, (1, channels), scale=s, zero_point=-128)
    b.op(OpCode.MEAN, [cur], [m], MeanOptions((1, 2)), name="gap")
    ws = rng.uniform(0.002, 0.02, 10).astype(np.float32)
    w = b.tensor("fc.weight", DType.INT8, (10, channels), _weights(rng, (10, channels)), scale=ws)
    bias = b.tensor("fc.bias", DType.INT32, (10,), rng.integers(-2000, 2000, 10), scale=np.float32(s) * ws)
    y = b.tensor("logits", DType.INT8, (1, 10), scale=0.1, zero_point=0)
    b.op(OpCode.FULLY_CONNECTED, [m, w, bias], [y], name="fc")
    b.input("input", x, Layout.NCHW)
    b.output("logits", y)
    return b.build(Metadata(producer="qrt tests", producer_version="0.1.0"))
