"""The FLOAT32 forms of the ops that have one besides CONV_2D / FULLY_CONNECTED / UNARY
(qrt/ops/<op>.py, Form FLOAT32): float32 activations without quantization, float arithmetic,
the NumPy reference as the runtime kernel.

Every case is a one-op model of FLOAT32 tensors built with ModelBuilder, written to bytes and
loaded with qrt.load (so the verifier accepts it), run, and compared with a float64 computation
written here from the op's real-valued meaning (SPEC.md section 2.13): fused activations,
broadcasting, odd shapes, padding. The verifier refuses float ops that mix in int8 tensors or
quantized FLOAT32 tensors. A float island between QUANTIZE and DEQUANTIZE of an int8 graph runs
the same with both kernel sets, and min_runtime_version names the release of the float forms."""
from __future__ import annotations

import math

import numpy as np
import pytest

import qrt
from qrt import verify_model
from qrt.errors import InvalidModelError
from qrt.format import (
    Activation, ConcatOptions, DepthwiseConv2DOptions, DType, LeakyReluOptions, MeanOptions, ModelBuilder,
    OpCode, PadOptions, Pool2DOptions, SoftmaxOptions, TransposeOptions,
)
from qrt.format.writer import to_bytes
from qrt.ops import min_runtime_version, op_form, prepare_op
from qrt.ops.base import FLOAT32, INT8

F = DType.FLOAT32
RTOL, ATOL = 1e-6, 1e-6

# fused activations and their real ranges
ACTIVATIONS = [(Activation.NONE, (0.0, 0.0), (-math.inf, math.inf)), (Activation.RELU, (0.0, 0.0), (0.0, math.inf)),
               (Activation.RELU6, (0.0, 0.0), (0.0, 6.0)), (Activation.CLIP, (-0.5, 0.75), (-0.5, 0.75))]


def one_op(opcode, inputs, out_shape, options=None, activation=Activation.NONE, clip=(0.0, 0.0)):
    """A model of one float op: inputs are shapes (graph inputs) or arrays (FLOAT32 constants)."""
    b = ModelBuilder("float_op")
    ids = []
    for k, x in enumerate(inputs):
        if isinstance(x, np.ndarray):
            ids.append(b.tensor(f"c{k}", F, x.shape, x))
        else:
            ids.append(b.tensor(f"in{k}", F, x))
            b.input(f"in{k}", ids[-1])
    y = b.tensor("out", F, out_shape)
    b.op(opcode, ids, [y], options, activation, clip)
    b.output("out", y)
    return b.build()


def io(b, inputs, outputs):
    for name, t in inputs:
        b.input(name, t)
    for name, t in outputs:
        b.output(name, t)


def run(model, *feeds, kernels="fast"):
    m = qrt.load(to_bytes(model), kernels=kernels)
    assert m.definition.min_runtime_version == min_runtime_version(model)
    return m.run(*feeds)


def check(model, feeds, want, rtol=RTOL, atol=ATOL):
    """Runs with both kernel sets (the same: a float form's reference is its kernel, but
    RESHAPE's and TRANSPOSE's are compiled) and compares with `want`."""
    assert op_form(model, 0).name == FLOAT32
    got = run(model, *feeds)
    np.testing.assert_array_equal(got, run(model, *feeds, kernels="reference"))
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return got


def feed(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def clamp64(y, bounds):
    return np.clip(y, *bounds)


def out_size(size, a, b, k, d=1, s=1):
    return (size + a + b - d * (k - 1) - 1) // s + 1


# ---------------------------------------------------------------------------- DEPTHWISE_CONV_2D

def depthwise64(x, w, bias, o: DepthwiseConv2DOptions):
    """Sum over taps with explicit index arithmetic; positions in the padding contribute 0."""
    n, h, wd, c = x.shape
    _, kh, kw, cout = w.shape
    m = cout // c
    oh = out_size(h, o.pad_top, o.pad_bottom, kh, o.dilation_h, o.stride_h)
    ow = out_size(wd, o.pad_left, o.pad_right, kw, o.dilation_w, o.stride_w)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    y = np.zeros((n, oh, ow, cout)) + bias.astype(np.float64)
    src = np.arange(cout) // m  # output channel c*m + j reads input channel c
    for i in range(kh):
        rows = np.arange(oh) * o.stride_h - o.pad_top + i * o.dilation_h
        for j in range(kw):
            cols = np.arange(ow) * o.stride_w - o.pad_left + j * o.dilation_w
            ok = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < wd))[None, :]
            g = x64[:, np.clip(rows, 0, h - 1)][:, :, np.clip(cols, 0, wd - 1)][..., src]
            y += np.where(ok[None, :, :, None], g, 0.0) * w64[0, i, j]
    return y


@pytest.mark.parametrize("case", range(6))
def test_depthwise_conv_2d(case):
    rng = np.random.default_rng(100 + case)
    n, h, wd, c = [(1, 7, 5, 3), (2, 6, 6, 4), (1, 9, 4, 1), (1, 5, 8, 5), (3, 4, 4, 2), (1, 11, 3, 6)][case]
    m = [1, 2, 3, 1, 1, 2][case]
    kh, kw = [(3, 3), (2, 3), (3, 1), (5, 5), (1, 1), (3, 2)][case]
    o = DepthwiseConv2DOptions(stride_h=1 + case % 2, stride_w=1 + case % 3, dilation_h=1 + (case == 3),
                               dilation_w=1 + (case == 5), pad_top=case % 3, pad_left=(case + 1) % 2,
                               pad_bottom=(case * 2) % 3, pad_right=case % 2, depth_multiplier=m)
    if case == 3:
        o.pad_top = o.pad_bottom = o.pad_left = o.pad_right = 4  # padding wider than the input's reach
    activation, clip, bounds = ACTIVATIONS[case % 4]
    x, w, bias = feed(rng, (n, h, wd, c)), feed(rng, (1, kh, kw, c * m), 0.5), feed(rng, (c * m,))
    want = clamp64(depthwise64(x, w, bias, o), bounds)
    model = one_op(OpCode.DEPTHWISE_CONV_2D, [(n, h, wd, c), w, bias], want.shape, o, activation, clip)
    check(model, [x], want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- ADD SUB MUL MAXIMUM MINIMUM

BINARY = {OpCode.ADD: np.add, OpCode.SUB: np.subtract, OpCode.MUL: np.multiply, OpCode.MAXIMUM: np.maximum,
          OpCode.MINIMUM: np.minimum}
SHAPES = [((2, 3, 5, 7), (2, 3, 5, 7)), ((1, 4, 4, 3), (3,)), ((5, 1, 3), (1, 4, 1)), ((7,), (2, 3, 7)),
          ((1,), (3, 2)), ((2, 1), (1,))]


@pytest.mark.parametrize("opcode", list(BINARY), ids=lambda o: o.name)
def test_binary(opcode):
    rng = np.random.default_rng(int(opcode))
    for k, (sa, sb) in enumerate(SHAPES):
        activation, clip, bounds = ACTIVATIONS[k % 4]
        a, b = feed(rng, sa, 3.0), feed(rng, sb, 3.0)
        want = clamp64(BINARY[opcode](a.astype(np.float64), b.astype(np.float64)), bounds)
        model = one_op(opcode, [sa, sb], want.shape, activation=activation, clip=clip)
        check(model, [a, b], want)
        # b a FLOAT32 constant; then a constant first
        check(one_op(opcode, [sa, b], want.shape, activation=activation, clip=clip), [a], want)
        check(one_op(opcode, [a, sb], want.shape, activation=activation, clip=clip), [b], want)
    # rank 0 (graph inputs and outputs need a batch dimension: the form itself, on a constant)
    a, b = feed(rng, (2, 3)), np.array(-0.25, np.float32)
    want = clamp64(BINARY[opcode](a.astype(np.float64), -0.25), (0.0, math.inf))
    check(one_op(opcode, [(2, 3), b], (2, 3), activation=Activation.RELU), [a], want)
    model = one_op(opcode, [(), ()], ())
    got = op_form(model, 0).reference([a[0, 0], b], prepare_op(model, 0))
    assert got.shape == () and got.dtype == np.float32 and got == BINARY[opcode](a[0, 0], b)


# ---------------------------------------------------------------------------- CONCAT

def test_concat():
    rng = np.random.default_rng(3)
    for shapes, axis in [([(1, 4, 4, 3), (1, 4, 4, 5)], 3), ([(2, 3), (1, 3), (4, 3)], 0), ([(2, 7, 3)], -2),
                         ([(2, 1, 3), (2, 5, 3), (2, 2, 3)], -2)]:
        xs = [feed(rng, s) for s in shapes]
        want = np.concatenate([x.astype(np.float64) for x in xs], axis=axis)
        check(one_op(OpCode.CONCAT, shapes, want.shape, ConcatOptions(axis)), xs, want, rtol=0, atol=0)
    # a constant part
    x, k = feed(rng, (2, 3)), feed(rng, (2, 4))
    check(one_op(OpCode.CONCAT, [(2, 3), k], (2, 7), ConcatOptions(1)), [x], np.concatenate([x, k], 1), 0, 0)


# ---------------------------------------------------------------------------- pools

def pool64(x, o: Pool2DOptions, kind: str):
    """Each window over the input's real (non-padded) positions, one output at a time."""
    n, h, w, c = x.shape
    oh = out_size(h, o.pad_top, o.pad_bottom, o.kernel_h, 1, o.stride_h)
    ow = out_size(w, o.pad_left, o.pad_right, o.kernel_w, 1, o.stride_w)
    y = np.empty((n, oh, ow, c))
    for i in range(oh):
        r0 = i * o.stride_h - o.pad_top
        rows = slice(max(r0, 0), min(r0 + o.kernel_h, h))
        for j in range(ow):
            c0 = j * o.stride_w - o.pad_left
            part = x[:, rows, max(c0, 0):min(c0 + o.kernel_w, w)].astype(np.float64)
            if kind == "max":
                y[:, i, j] = part.max(axis=(1, 2))
            else:
                count = o.kernel_h * o.kernel_w if o.count_include_pad else part.shape[1] * part.shape[2]
                y[:, i, j] = part.sum(axis=(1, 2)) / count
    return y


POOLS = [Pool2DOptions(2, 2, 2, 2), Pool2DOptions(3, 3, 1, 1, 1, 1, 1, 1), Pool2DOptions(3, 2, 2, 1, 2, 0, 1, 1),
         Pool2DOptions(3, 3, 2, 2, 0, 1, 2, 0, count_include_pad=True), Pool2DOptions(7, 5, 1, 1),
         Pool2DOptions(4, 4, 3, 3, 3, 3, 3, 3, count_include_pad=True)]


@pytest.mark.parametrize("kind", ["max", "average"])
def test_pools(kind):
    rng = np.random.default_rng(4)
    opcode = OpCode.MAX_POOL_2D if kind == "max" else OpCode.AVERAGE_POOL_2D
    for k, o in enumerate(POOLS):
        shape = [(1, 6, 6, 3), (2, 5, 7, 4), (1, 9, 5, 2), (1, 8, 8, 1), (1, 7, 5, 16), (1, 5, 6, 3)][k]
        # all negative where padding could win (max) or count (average) if it were 0
        x = feed(rng, shape) - (4.0 if k % 2 else 0.0)
        want = pool64(x, o, kind)
        activation, clip, bounds = (ACTIVATIONS[k % 4] if kind == "average" else ACTIVATIONS[0])
        want = clamp64(want, bounds)
        got = check(one_op(opcode, [shape], want.shape, o, activation, clip), [x], want,
                    rtol=0 if kind == "max" else RTOL, atol=0 if kind == "max" else ATOL)
        if kind == "max" and k % 2:
            assert (got < 0).all(), "padding won the maximum"


# ---------------------------------------------------------------------------- MEAN

def test_mean():
    rng = np.random.default_rng(5)
    for k, (shape, axes, keep) in enumerate([((1, 7, 5, 3), (1, 2), False), ((1, 7, 5, 3), (1, 2), True),
                                             ((4, 6), (-1,), False), ((3, 2, 5), (0, 2), True), ((9, 1), (0,), False),
                                             ((2, 300, 3), (1,), False)]):
        activation, clip, bounds = ACTIVATIONS[k % 4]
        x = feed(rng, shape) + 0.3
        want = clamp64(x.astype(np.float64).mean(axis=axes, keepdims=keep), bounds)
        check(one_op(OpCode.MEAN, [shape], want.shape, MeanOptions(axes, keep), activation, clip), [x], want)


# ---------------------------------------------------------------------------- PAD RESHAPE TRANSPOSE

def test_pad():
    rng = np.random.default_rng(6)
    for shape, pads in [((1, 3, 4, 2), (0, 1, 2, 0, 0, 3, 1, 1)), ((5,), (2, 0)), ((2, 3), (0, 0, 0, 0)),
                        ((2, 1, 3), (1, 2, 0, 0, 1, 4))]:
        x = feed(rng, shape)
        rank = len(shape)
        want = np.pad(x.astype(np.float64), [(pads[i], pads[rank + i]) for i in range(rank)])
        got = check(one_op(OpCode.PAD, [shape], want.shape, PadOptions(pads)), [x], want, 0, 0)
        assert not np.signbit(got[want == 0]).any()  # padding is +0.0


def test_reshape_and_transpose():
    rng = np.random.default_rng(7)
    x = feed(rng, (2, 3, 4, 5))
    check(one_op(OpCode.RESHAPE, [x.shape], (6, 20)), [x], x.reshape(6, 20), 0, 0)
    check(one_op(OpCode.RESHAPE, [x.shape], (120,)), [x], x.reshape(120), 0, 0)
    for perm in [(0, 3, 1, 2), (3, 2, 1, 0), (0, 1, 2, 3)]:
        want = x.transpose(perm)
        check(one_op(OpCode.TRANSPOSE, [x.shape], want.shape, TransposeOptions(perm)), [x], want, 0, 0)


# ---------------------------------------------------------------------------- LEAKY_RELU PRELU

def test_leaky_relu():
    rng = np.random.default_rng(8)
    for shape, alpha in [((1, 4, 4, 3), 0.1), ((7,), -0.3), ((2, 5), 1.7), ((3, 3), 0.0)]:
        x = feed(rng, shape)
        x.flat[0] = 0.0
        x64 = x.astype(np.float64)
        want = np.where(x64 >= 0, x64, float(np.float32(alpha)) * x64)
        check(one_op(OpCode.LEAKY_RELU, [shape], shape, LeakyReluOptions(alpha)), [x], want)


def test_prelu():
    rng = np.random.default_rng(9)
    for shape, ashape in [((1, 4, 4, 3), (3,)), ((1, 4, 4, 3), (1, 4, 1, 1)), ((2, 5), (2, 5)), ((6,), (1,)),
                          ((2, 3, 4), (1, 4))]:
        x, alpha = feed(rng, shape), feed(rng, ashape, 0.5)
        x64 = x.astype(np.float64)
        want = np.where(x64 >= 0, x64, alpha.astype(np.float64) * x64)
        check(one_op(OpCode.PRELU, [shape, alpha], shape), [x], want)


# ---------------------------------------------------------------------------- SOFTMAX

def test_softmax():
    rng = np.random.default_rng(10)
    for shape, axis, beta in [((1, 10), -1, 1.0), ((2, 3, 7), 1, 0.5), ((4, 5), 0, 2.25), ((1, 1000), 1, 1.0),
                              ((3, 2, 2, 6), -1, 0.1)]:
        x = feed(rng, shape, 8.0) + 200.0  # large values: the max is subtracted first
        z = float(np.float32(beta)) * x.astype(np.float64)
        e = np.exp(z - z.max(axis=axis, keepdims=True))
        want = e / e.sum(axis=axis, keepdims=True)
        got = check(one_op(OpCode.SOFTMAX, [shape], shape, SoftmaxOptions(axis, beta)), [x], want, atol=1e-9)
        np.testing.assert_allclose(got.astype(np.float64).sum(axis=axis), 1.0, rtol=1e-5)


# ---------------------------------------------------------------------------- verification

def _refused(model, match):
    with pytest.raises(InvalidModelError, match=match):
        verify_model(model)


def test_verifier_refuses_int8_tensors_and_quantized_float32_in_float_ops():
    rng = np.random.default_rng(11)
    # an INT8 operand of a float ADD
    b = ModelBuilder("mixed")
    a = b.tensor("a", DType.INT8, (2, 3), scale=0.1, zero_point=0)
    x = b.tensor("x", F, (2, 3))
    y = b.tensor("y", F, (2, 3))
    b.op(OpCode.ADD, [a, x], [y])
    io(b, [("a", a), ("x", x)], [("y", y)])
    _refused(b.build(), r"tensor 'a' is INT8; expected FLOAT32")
    # a FLOAT32 input of an int8 ADD (the output decides the form)
    b = ModelBuilder("mixed")
    a = b.tensor("a", DType.INT8, (2, 3), scale=0.1, zero_point=0)
    x = b.tensor("x", F, (2, 3))
    y = b.tensor("y", DType.INT8, (2, 3), scale=0.1, zero_point=0)
    b.op(OpCode.ADD, [a, x], [y])
    io(b, [("a", a), ("x", x)], [("y", y)])
    _refused(b.build(), r"tensor 'x' is FLOAT32; expected INT8")
    # a FLOAT32 tensor with quantization
    b = ModelBuilder("quantized_float")
    x = b.tensor("x", F, (2, 3))
    y = b.tensor("y", F, (2, 3), scale=0.1, zero_point=0)
    b.op(OpCode.SOFTMAX, [x], [y], SoftmaxOptions(-1, 1.0))
    io(b, [("x", x)], [("y", y)])
    _refused(b.build(), r"FLOAT32 tensor cannot carry quantization|must not carry quantization")
    # int8 constants of float ops: ADD's operand, PRELU's alpha, depthwise weights and bias
    k8 = rng.integers(-5, 5, (3,))
    b = ModelBuilder("int8_constant")
    x = b.tensor("x", F, (2, 3))
    k = b.tensor("k", DType.INT8, (3,), k8, scale=0.1, zero_point=0)
    y = b.tensor("y", F, (2, 3))
    b.op(OpCode.PRELU, [x, k], [y])
    io(b, [("x", x)], [("y", y)])
    _refused(b.build(), r"tensor 'k' is INT8; expected FLOAT32")
    b = ModelBuilder("int8_weights")
    x = b.tensor("x", F, (1, 4, 4, 3))
    w = b.tensor("w", DType.INT8, (1, 3, 3, 3), rng.integers(-5, 5, (1, 3, 3, 3)), scale=0.1)
    bias = b.tensor("b", F, (3,), np.zeros(3))
    y = b.tensor("y", F, (1, 2, 2, 3))
    b.op(OpCode.DEPTHWISE_CONV_2D, [x, w, bias], [y], DepthwiseConv2DOptions())
    io(b, [("x", x)], [("y", y)])
    _refused(b.build(), r"FLOAT32")
    # the float form's own shape rules still hold
    _refused(one_op(OpCode.ADD, [(2, 3), (4,)], (2, 3)), r"do not broadcast")
    _refused(one_op(OpCode.MEAN, [(2, 3)], (2, 3), MeanOptions((1,), False)), r"expected \(2,\)")
    _refused(one_op(OpCode.DEPTHWISE_CONV_2D, [(1, 4, 4, 3), np.zeros((1, 3, 3, 3), np.float32),
                                              np.zeros(4, np.float32)], (1, 2, 2, 3), DepthwiseConv2DOptions()),
             r"bias")


def test_float_forms_drop_the_integer_only_rules():
    """SOFTMAX's fixed output quantization and the int32 window / averaging bound are integer
    rules; the float forms have neither (the int8 twins of the same models are refused)."""
    big = (1, 9_000_000)  # count * 255 > 2^31 - 1; verification only, nothing allocated
    verify_model(one_op(OpCode.MEAN, [big], (1,), MeanOptions((1,), False)))
    b = ModelBuilder("int8_mean")
    x = b.tensor("x", DType.INT8, big, scale=0.1, zero_point=0)
    y = b.tensor("y", DType.INT8, (1,), scale=0.1, zero_point=0)
    b.op(OpCode.MEAN, [x], [y], MeanOptions((1,), False))
    io(b, [("x", x)], [("y", y)])
    _refused(b.build(), "overflow the int32 accumulator")
    assert op_form(one_op(OpCode.SOFTMAX, [(1, 4)], (1, 4), SoftmaxOptions()), 0).name == FLOAT32


# ---------------------------------------------------------------------------- a float island in an int8 graph

def island_model():
    """int8 ADD -> DEQUANTIZE -> float SOFTMAX -> float MUL (constant) -> float AVERAGE_POOL_2D
    -> QUANTIZE -> int8 MAX_POOL_2D, quantized input and output at the graph boundary."""
    rng = np.random.default_rng(12)
    b = ModelBuilder("island")
    shape = (1, 6, 6, 8)
    x = b.tensor("x", DType.INT8, shape, scale=0.05, zero_point=-3)
    k = b.tensor("k", DType.INT8, (8,), rng.integers(-100, 100, 8), scale=0.02, zero_point=1)
    a = b.tensor("a", DType.INT8, shape, scale=0.07, zero_point=2)
    b.op(OpCode.ADD, [x, k], [a], activation=Activation.RELU6, name="add")
    f = b.tensor("f", F, shape)
    b.op(OpCode.DEQUANTIZE, [a], [f], name="dequantize")
    s = b.tensor("s", F, shape)
    b.op(OpCode.SOFTMAX, [f], [s], SoftmaxOptions(-1, 1.5), name="softmax")
    w = b.tensor("w", F, (8,), rng.uniform(0.5, 2.0, 8))
    m = b.tensor("m", F, shape)
    b.op(OpCode.MUL, [s, w], [m], name="mul")
    p = b.tensor("p", F, (1, 3, 3, 8))
    b.op(OpCode.AVERAGE_POOL_2D, [m], [p], Pool2DOptions(2, 2, 2, 2), name="avgpool")
    q = b.tensor("q", DType.INT8, (1, 3, 3, 8), scale=1 / 128, zero_point=-128)
    b.op(OpCode.QUANTIZE, [p], [q], name="quantize")
    y = b.tensor("y", DType.INT8, (1, 2, 2, 8), scale=1 / 128, zero_point=-128)
    b.op(OpCode.MAX_POOL_2D, [q], [y], Pool2DOptions(2, 2, 1, 1), name="maxpool")
    io(b, [("x", x)], [("y", y)])
    return b.build()


def test_float_island_in_an_int8_graph():
    model = island_model()
    assert [op_form(model, i).name for i in range(len(model.operators))] == \
        [INT8, INT8, FLOAT32, FLOAT32, FLOAT32, INT8, INT8]
    assert min_runtime_version(model) == "0.3.0"
    data = to_bytes(model)
    fast, ref = qrt.load(data, kernels="fast"), qrt.load(data, kernels="reference")
    assert fast.definition.min_runtime_version == "0.3.0"
    rng = np.random.default_rng(13)
    for _ in range(3):
        x = rng.uniform(-7, 7, (1, 6, 6, 8)).astype(np.float32)
        got = fast.run(x)
        np.testing.assert_array_equal(got, ref.run(x))
        np.testing.assert_array_equal(fast.run(x, raw=True), ref.run(x, raw=True))
        assert got.min() >= 0 and got.max() <= 2.0  # softmax x [0.5, 2] pooled and max-pooled


def test_min_runtime_version_of_float_forms():
    # a plain int8 model stays 0.1.0
    b = ModelBuilder("int8")
    x = b.tensor("x", DType.INT8, (1, 10), scale=0.1, zero_point=0)
    k = b.tensor("k", DType.INT8, (10,), np.arange(10), scale=0.1, zero_point=0)
    a = b.tensor("a", DType.INT8, (1, 10), scale=0.2, zero_point=0)
    b.op(OpCode.ADD, [x, k], [a])
    y = b.tensor("y", DType.INT8, (1, 10), scale=1 / 256, zero_point=-128)
    b.op(OpCode.SOFTMAX, [a], [y], SoftmaxOptions(-1, 1.0))
    io(b, [("x", x)], [("y", y)])
    assert min_runtime_version(b.build()) == "0.1.0"
    # every float form here is 0.3.0
    assert min_runtime_version(one_op(OpCode.ADD, [(2, 3), (2, 3)], (2, 3))) == "0.3.0"
    assert min_runtime_version(one_op(OpCode.SOFTMAX, [(2, 3)], (2, 3), SoftmaxOptions())) == "0.3.0"
    # ... except RESHAPE and TRANSPOSE, which have moved float32 (any dtype) since 0.1.0
    assert min_runtime_version(one_op(OpCode.RESHAPE, [(2, 3)], (6,))) == "0.1.0"
    assert min_runtime_version(one_op(OpCode.TRANSPOSE, [(2, 3)], (3, 2), TransposeOptions((1, 0)))) == "0.1.0"
