"""FULLY_CONNECTED and CONV_2D in the dynamic form (qrt/kernels/dynamic.pyx, simd/dynamic.h over
the int8 GEMM's int32 mode): float32 x, each row (FC: a vector along K; CONV_2D: an image)
quantized at run time from its own range, integer sums, the float epilogue. Every path this
machine supports is compared with the NumPy references (qrt/ops/fully_connected.py and
conv_2d.py reference_dynamic) bit for bit: float32 bit patterns, -0.0 included, any NaN equal
to any NaN. Rows of every kind (zeros, one sign, constant, huge, tiny, rounding ties, NaN and
infinities), sizes around the GEMM's panels and micro-kernel rows, fused activations, threads,
conv windows (stride, dilation, asymmetric padding, groups), images whose zero points differ,
and a case where a fused multiply-add would round differently."""
from __future__ import annotations

import dataclasses
import itertools
import warnings

import numpy as np
import pytest

import qrt
from qrt.format import Activation, Conv2DOptions, DType, InputQuantization, ModelBuilder, OpCode
from qrt.format.writer import to_bytes
from qrt.kernels import isa as ISA
from qrt.kernels.dynamic import (KERNELS, PackedDynamic, bind_conv_2d_dynamic, bind_fully_connected_dynamic,
                                 pack_conv_2d_dynamic, pack_fully_connected_dynamic)
from qrt.ops import op_form, prepare_op
from qrt.ops import hybrid as H
from qrt.ops.base import WEIGHT_ONLY

PATHS = ISA.supported()
ACTIVATIONS = {"none": (Activation.NONE, (0.0, 0.0)), "relu": (Activation.RELU, (0.0, 0.0)),
               "relu6": (Activation.RELU6, (0.0, 0.0)), "clip": (Activation.CLIP, (-0.75, 0.5))}

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the references on NaN, inf


def same(a, b) -> bool:
    """Bit for bit (so -0.0 differs from 0.0), any NaN equal to any NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and np.array_equal(a.view(np.uint32)[~nan], b.view(np.uint32)[~nan]))


def _weights(rng, shape, wmax=127):
    w = rng.integers(-wmax, wmax + 1, shape, dtype=np.int8)
    scales = rng.uniform(0.002, 0.03, shape[0]).astype(np.float32)
    return w, scales


def fc_model(x_shape, w, scales, bias, activation="none"):
    """A one-op model: FULLY_CONNECTED, dynamic (float32 x, y, bias; int8 weights per channel)."""
    act, clip = ACTIVATIONS[activation]
    b = ModelBuilder("fc_dynamic")
    x = b.tensor("x", DType.FLOAT32, tuple(x_shape))
    wt = b.tensor("w", DType.INT8, w.shape, w, scale=scales, axis=0)
    bt = b.tensor("b", DType.FLOAT32, bias.shape, bias)
    y = b.tensor("y", DType.FLOAT32, tuple(x_shape[:-1]) + (w.shape[0],))
    b.op(OpCode.FULLY_CONNECTED, [x, wt, bt], [y], activation=act, clip=clip,
         input_quantization=InputQuantization.DYNAMIC_INT8)
    b.input("x", x)
    b.output("y", y)
    return b.build()


def conv_model(x_shape, w, scales, bias, stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), groups=1,
               activation="none"):
    """A one-op model: CONV_2D, dynamic; pads (top, left, bottom, right)."""
    from qrt.ops.window import out_size
    act, clip = ACTIVATIONS[activation]
    n, h, wd, _ = x_shape
    cout, kh, kw, _ = w.shape
    oh = out_size(h, pads[0], pads[2], kh, dilation[0], stride[0])
    ow = out_size(wd, pads[1], pads[3], kw, dilation[1], stride[1])
    b = ModelBuilder("conv_dynamic")
    x = b.tensor("x", DType.FLOAT32, tuple(x_shape))
    wt = b.tensor("w", DType.INT8, w.shape, w, scale=scales, axis=0)
    bt = b.tensor("b", DType.FLOAT32, bias.shape, bias)
    y = b.tensor("y", DType.FLOAT32, (n, oh, ow, cout))
    b.op(OpCode.CONV_2D, [x, wt, bt], [y], Conv2DOptions(stride[0], stride[1], dilation[0], dilation[1],
                                                         *pads, groups),
         activation=act, clip=clip, input_quantization=InputQuantization.DYNAMIC_INT8)
    b.input("x", x)
    b.output("y", y)
    return b.build()


def prepared(model):
    """(form, ins, params) of the model's operator 0, as the runtime prepares it."""
    form = op_form(model, 0)
    op = model.operators[0]
    ins = [None] + [model.tensors[i].data for i in op.inputs[1:]]
    return form, ins, prepare_op(model, 0)


def reference(form, x, ins, p):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return form.reference([x] + ins[1:], p)


def check(form, x, ins, p, threads=(1, 2), paths=PATHS, bind=None):
    """The compiled kernel equals the reference on every path and thread count."""
    ref = reference(form, x, ins, p)
    kernel = KERNELS[form.kernel]
    for isa in paths:
        packed = kernel.pack([x] + ins[1:], p, isa=isa)
        for t in threads:
            out = np.full(ref.shape, 12345.0, np.float32)
            kernel.bind([x] + ins[1:], p, out, isa=isa, threads=t, packed=packed)()
            assert same(out, ref), (isa, t, int((out.view(np.uint32) != ref.view(np.uint32)).sum()))
    return ref


# ------------------------------------------------------------------------------ row contents

def special_rows(rng, K):
    """Rows of every kind the quantization meets, K floats each."""
    def r(lo, hi):
        return rng.uniform(lo, hi, K)
    ties = np.resize(np.array([-64.0, 63.5, 0.25, 0.75, -0.25, -1.25, 2.5, 31.75]), K)
    rows = [
        np.zeros(K),                                   # zero range: s = 1
        np.full(K, -0.0),
        r(0.1, 5),                                     # one sign: zp = -128
        r(-5, -0.1),                                   # zp = 127
        np.full(K, 2.5),                               # constant rows
        np.full(K, -7.0),
        r(-1e38, 1e38),                                # huge
        np.resize([3e38, -3e38, 1.0], K),              # hi - lo overflows: s = inf, y NaN
        r(-1e-40, 1e-40),                              # subnormal
        np.resize([1e-45, -1e-45, 0.0], K),            # s rounds to 0: s = 1
        np.resize([1e30, 1e-3, -2.0, 0.5], K),         # one huge element among small ones
        np.where(np.arange(K) == K // 2, -3.0, 0.0),   # a single nonzero
        ties,                                          # s = 0.5: x / s on .5 ties
        r(-2, 2) * 10.0 ** rng.integers(-20, 20),
    ]
    return np.array(rows, np.float32)


def non_finite_rows(rng, K):
    base = rng.uniform(-3, 3, (5, K)).astype(np.float32)
    base[0, K // 3] = np.nan
    base[1, -1] = np.inf
    base[2, 0] = -np.inf                 # s = inf and lo / s NaN: zp is INT32_MIN in NumPy
    base[3, 0], base[3, -1] = np.inf, -np.inf
    base[4, :] = -np.inf
    return base


@pytest.mark.parametrize("K", [1, 5, 37, 1000])
@pytest.mark.parametrize("activation", ["none", "relu"])
def test_fc_row_kinds(K, activation):
    rng = np.random.default_rng(K)
    x = np.concatenate([special_rows(rng, K), non_finite_rows(rng, K)])
    w, sc = _weights(rng, (33, K))
    bias = rng.standard_normal(33).astype(np.float32)
    form, ins, p = prepared(fc_model(x.shape, w, sc, bias, activation))
    assert form.kernel == "fully_connected_dynamic"
    ref = check(form, x, ins, p)
    assert np.isnan(ref).any() and np.isfinite(ref).any()


def test_fc_rows_panels_and_reduction():
    """Rows M around the micro-kernel's 6, N around the panel's 16, K around the GEMM's 4."""
    rng = np.random.default_rng(1)
    for M, N, K in itertools.chain(((M, 17, 40) for M in (1, 2, 3, 4, 5, 6, 7, 13, 64)),
                                   ((5, N, 24) for N in (1, 15, 16, 17, 33, 69)),
                                   ((7, 20, K) for K in (1, 3, 4, 5, 63, 1000))):
        x = (rng.standard_normal((M, K)) * rng.uniform(0.1, 10, (M, 1))
             + rng.uniform(-2, 2, (M, 1))).astype(np.float32)
        w, sc = _weights(rng, (N, K))
        bias = rng.standard_normal(N).astype(np.float32)
        form, ins, p = prepared(fc_model(x.shape, w, sc, bias))
        check(form, x, ins, p)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_fc_rank3_activations_and_threads(activation):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 5, 70)) * 2 + 0.5).astype(np.float32)
    w, sc = _weights(rng, (45, 70))
    bias = (rng.standard_normal(45) * 0.5).astype(np.float32)
    form, ins, p = prepared(fc_model(x.shape, w, sc, bias, activation))
    ref = check(form, x, ins, p, threads=(1, 2, 3))
    if activation != "none":
        assert (ref == np.float32(p.bounds[0])).any()  # the clamp bites


def test_clamp_keeps_negative_zero():
    """np.clip keeps y where it equals a bound: -0.0 stays -0.0 under RELU (a product that
    underflows to -0.0 plus a bias of -0.0)."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (4, 16)).astype(np.float32)
    w, sc = _weights(rng, (16, 16))
    sc[:8] = np.float32(1e-45)                   # s_x * s_w underflows to 0
    bias = np.where(np.arange(16) % 2, np.float32(-0.0), np.float32(0.0)).astype(np.float32)
    for activation in ("none", "relu", "relu6"):
        form, ins, p = prepared(fc_model(x.shape, w, sc, bias, activation))
        ref = check(form, x, ins, p, threads=(1,))
        assert np.signbit(ref[ref == 0]).any()


def test_no_fused_multiply_add():
    """bias[c] = -fl(float32(acc) * scale) for row 0: the rule gives exactly 0 there, a fused
    multiply-add the product's rounding error instead. The kernel gives the rule's 0."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 64)).astype(np.float32)
    w, sc = _weights(rng, (64, 64))
    q, s, zp = H.quantize_rows(x)
    acc = ((q.astype(np.int64) - zp[:, None]) @ w.astype(np.int64).T).astype(np.float32)
    scale = s[:, None] * sc[None, :]
    product = acc * scale
    bias = -product[0]
    fused = (acc[0].astype(np.float64) * scale[0].astype(np.float64) + bias.astype(np.float64)).astype(np.float32)
    assert (fused != 0).sum() > 32  # an FMA would differ in most channels
    form, ins, p = prepared(fc_model(x.shape, w, sc, bias))
    ref = check(form, x, ins, p)
    assert (ref[0] == 0).all()


def test_step_reruns_and_follows_its_buffers():
    """A bound step quantizes its input afresh on every run (ranges, zero points, padding)."""
    rng = np.random.default_rng(5)
    w, sc = _weights(rng, (12, 3, 3, 4))
    bias = rng.standard_normal(12).astype(np.float32)
    form, ins, p = prepared(conv_model((2, 6, 6, 4), w, sc, bias, pads=(1, 1, 1, 1)))
    x = np.zeros((2, 6, 6, 4), np.float32)
    out = np.empty((2, 6, 6, 12), np.float32)
    step = bind_conv_2d_dynamic([x] + ins[1:], p, out, threads=2)
    for i in range(4):
        x[...] = rng.standard_normal(x.shape) * (i + 1) + rng.uniform(-3, 3, (2, 1, 1, 1))
        step()
        assert same(out, reference(form, x, ins, p))


# ------------------------------------------------------------------------------ CONV_2D

CONV_CASES = [  # (N, H, W, C_in, C_out, KH, KW, stride, dilation, pads (t, l, b, r), groups)
    (1, 8, 8, 4, 16, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1),
    (3, 9, 7, 6, 17, 3, 3, (2, 2), (1, 1), (0, 1, 2, 1), 1),     # stride 2, asymmetric pads
    (3, 10, 9, 4, 8, 3, 3, (1, 1), (2, 2), (2, 1, 2, 0), 1),     # dilation 2
    (1, 6, 6, 6, 12, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 2),     # groups 2
    (3, 5, 7, 9, 33, 5, 1, (1, 2), (1, 1), (2, 0, 2, 0), 3),     # groups 3, a 5x1 kernel
    (3, 6, 5, 8, 20, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), 1),     # 1x1 over every pixel
    (2, 5, 4, 3, 5, 1, 1, (2, 2), (1, 1), (1, 0, 0, 1), 1),      # 1x1 with stride and padding
    (2, 7, 6, 5, 31, 3, 3, (2, 1), (2, 1), (3, 2, 1, 0), 1),     # all of it, K = 45
]


def _images(rng, shape):
    """Images of different ranges, so their zero points (and padding bytes) differ."""
    x = rng.standard_normal(shape).astype(np.float32)
    for i in range(shape[0]):
        if i % 3 == 0:
            x[i] *= 0.5 + i                          # both signs
        elif i % 3 == 1:
            x[i] = np.abs(x[i]) * (1 + i) + 0.1      # all positive: zero point -128
        else:
            x[i] = -np.abs(x[i]) * 2 - 0.05          # all negative: zero point 127
    return x


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c[:7]) for c in CONV_CASES])
def test_conv_windows_groups_and_images(case):
    n, h, wd, cin, cout, kh, kw, stride, dilation, pads, groups = case
    rng = np.random.default_rng(sum(case[:7]))
    x = _images(rng, (n, h, wd, cin))
    w, sc = _weights(rng, (cout, kh, kw, cin // groups))
    bias = rng.standard_normal(cout).astype(np.float32)
    form, ins, p = prepared(conv_model(x.shape, w, sc, bias, stride, dilation, pads, groups, "relu6"))
    assert form.kernel == "conv_2d_dynamic"
    if n > 1:
        with np.errstate(all="ignore"):
            zps = H.quantize_rows(x.reshape(n, -1))[2]
        assert len(set(zps.tolist())) == min(n, 3)
    check(form, x, ins, p, threads=(1, 2, 3))


def test_conv_special_images():
    """An all-zero image, a constant one, and non-finite ones (NaN; -inf, whose zero point is
    NumPy's INT32_MIN: the padded border then sums fewer weights than the interior)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 6, 7, 3)).astype(np.float32)
    x[0] = 0
    x[1] = 1.5
    x[2, 3, 3, 1] = np.nan
    x[3, 0, 0, 0] = -np.inf
    x[4, 2, 5, 2] = np.inf
    w, sc = _weights(rng, (10, 3, 3, 3))
    bias = rng.standard_normal(10).astype(np.float32)
    for activation in ("none", "clip"):
        form, ins, p = prepared(conv_model(x.shape, w, sc, bias, pads=(1, 2, 1, 0), activation=activation))
        ref = check(form, x, ins, p)
        assert np.isnan(ref[2]).all() and np.isnan(ref[4]).all()
        if activation == "none":
            assert np.isinf(ref[3]).any()


def test_conv_large_image_chunks():
    """An image longer than a range chunk (dynamic.pyx CHUNK): its range is found in pieces,
    the extremes in the last one."""
    from qrt.kernels.dynamic import CHUNK
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (2, 48, 48, 16)).astype(np.float32)
    assert x[0].size > 2 * CHUNK
    x[0, -1, -1, -1], x[1, -1, -1, 0] = -9.0, 11.0
    w, sc = _weights(rng, (16, 3, 3, 16))
    bias = rng.standard_normal(16).astype(np.float32)
    form, ins, p = prepared(conv_model(x.shape, w, sc, bias, stride=(2, 2), pads=(1, 1, 1, 1)))
    check(form, x, ins, p)


# ------------------------------------------------------------------------------ end to end

@pytest.mark.parametrize("isa", PATHS)
def test_models_fast_equals_reference(isa):
    rng = np.random.default_rng(8)
    w, sc = _weights(rng, (24, 40))
    bias = rng.standard_normal(24).astype(np.float32)
    fc = to_bytes(fc_model((2, 3, 40), w, sc, bias, "relu"))
    wc, scc = _weights(rng, (10, 3, 3, 2))
    conv = to_bytes(conv_model((3, 7, 6, 4), wc, scc, rng.standard_normal(10).astype(np.float32),
                               (2, 1), (1, 1), (1, 1, 0, 1), 2, "relu6"))
    for data, shape in ((fc, (2, 3, 40)), (conv, (3, 7, 6, 4))):
        ref = qrt.load(data, kernels="reference")
        for threads in (1, 2):
            fast = qrt.load(data, kernels="fast", isa=isa, threads=threads)
            assert fast._bind(1).plan[0].isa == isa
            for _ in range(2):
                x = _images(rng, shape) if len(shape) == 4 else (rng.standard_normal(shape) * 3).astype(np.float32)
                assert same(fast.run(x), ref.run(x))


# ------------------------------------------------------------------------------ checks at bind

def fc_case(rng, shape=(8, 12), rows=3):
    """A prepared FULLY_CONNECTED of weights `shape` and its buffers: (ins, p, x, out)."""
    w, sc = _weights(rng, shape)
    bias = rng.standard_normal(shape[0]).astype(np.float32)
    _, ins, p = prepared(fc_model((rows, shape[1]), w, sc, bias))
    x = rng.standard_normal((rows, shape[1])).astype(np.float32)
    return ins, p, x, np.empty((rows, shape[0]), np.float32)


def test_bind_refuses_wrong_inputs():
    rng = np.random.default_rng(9)
    ins, p, x, out = fc_case(rng)
    bias = ins[2]
    bind = bind_fully_connected_dynamic
    with pytest.raises(ValueError, match="x must be a C-contiguous float32"):
        bind([x.astype(np.float64), ins[1], ins[2]], p, out)
    with pytest.raises(ValueError, match="non-contiguous"):
        bind([np.asfortranarray(x), ins[1], ins[2]], p, out)
    with pytest.raises(ValueError, match="out must be"):
        bind([x, ins[1], ins[2]], p, out.astype(np.int8))
    with pytest.raises(ValueError, match="last dimension must be K"):
        bind([x[:, :11].copy(), ins[1], ins[2]], p, out)
    with pytest.raises(ValueError, match="output has shape"):
        bind([x, ins[1], ins[2]], p, np.empty((3, 9), np.float32))
    with pytest.raises(ValueError, match="bias must be a float32"):
        bind([x, ins[1], ins[2].astype(np.int32)], p, out)
    with pytest.raises(ValueError, match="weights must be an int8"):
        bind([x, ins[1].astype(np.float32), ins[2]], p, out)
    with pytest.raises(ValueError, match="expected inputs"):
        bind([x, ins[1]], p, out)
    if len(PATHS) > 1:
        packed = pack_fully_connected_dynamic([x] + ins[1:], p, isa=PATHS[0])
        with pytest.raises(ValueError, match="packed for"):
            bind([x] + ins[1:], p, out, isa=PATHS[-1], packed=packed)
    # conv: window, groups and output shape
    wc, scc = _weights(rng, (6, 3, 3, 2))
    cform, cins, cp = prepared(conv_model((1, 5, 5, 4), wc, scc, bias[:6], groups=2))
    xc = rng.standard_normal((1, 5, 5, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="window arithmetic"):
        bind_conv_2d_dynamic([xc] + cins[1:], cp, np.empty((1, 5, 5, 6), np.float32))
    with pytest.raises(ValueError, match="groups"):
        bind_conv_2d_dynamic([rng.standard_normal((1, 5, 5, 6)).astype(np.float32)] + cins[1:], cp,
                             np.empty((1, 3, 3, 6), np.float32))


def test_params_other_than_per_channel_int8_are_refused():
    """Only int8 weights with one scale per channel (or per tensor) and params of the dynamic form
    are taken, at pack and at bind: per-group scales would otherwise silently give every channel
    its first group's scale; int4, mis-shaped weights and the weight-only form's params are
    another op's."""
    rng = np.random.default_rng(13)
    ins, p, x, out = fc_case(rng)
    w, bias = ins[1], ins[2]
    qw = p.weights
    per_group = dataclasses.replace(p, weights=dataclasses.replace(
        qw, scales=np.repeat(qw.scales, 2, axis=1) * np.float32([1, 2]), group_size=6))
    bad = {
        "per group": (per_group, "per-tensor or per-channel"),
        "int4": (dataclasses.replace(p, weights=dataclasses.replace(qw, int4=True)), "do not describe"),
        "shape": (dataclasses.replace(p, weights=dataclasses.replace(qw, shape=(8, 3, 4))), "do not describe"),
        "scales float64": (dataclasses.replace(p, weights=dataclasses.replace(
            qw, scales=qw.scales.astype(np.float64))), "per-tensor or per-channel"),
        "weight-only form": (dataclasses.replace(p, form=WEIGHT_ONLY), "dynamic form"),
        "no weights": (dataclasses.replace(p, weights=None), "dynamic form"),
    }
    for name, (params, match) in bad.items():
        with pytest.raises(ValueError, match=match):
            pack_fully_connected_dynamic([x] + ins[1:], params)
        with pytest.raises(ValueError, match=match):
            bind_fully_connected_dynamic([x] + ins[1:], params, out)
        with pytest.raises(ValueError, match=match):  # a bound step checks its params too
            bind_fully_connected_dynamic([x] + ins[1:], params, out,
                                         packed=pack_fully_connected_dynamic([x] + ins[1:], p))
    with pytest.raises(ValueError, match="per-tensor or per-channel"):
        PackedDynamic(w, bias, per_group.weights, 1, ISA.resolve())
    # CONV_2D alike: per-group params, and FULLY_CONNECTED's params without a window
    wc, scc = _weights(rng, (6, 3, 3, 2))
    cform, cins, cp = prepared(conv_model((1, 5, 5, 2), wc, scc, bias[:6]))
    xc = rng.standard_normal((1, 5, 5, 2)).astype(np.float32)
    cqw = cp.hybrid.weights
    cp_group = dataclasses.replace(cp, hybrid=dataclasses.replace(cp.hybrid, weights=dataclasses.replace(
        cqw, scales=np.repeat(cqw.scales, 2, axis=1), group_size=9)))
    with pytest.raises(ValueError, match="per-tensor or per-channel"):
        pack_conv_2d_dynamic([xc] + cins[1:], cp_group)
    with pytest.raises(ValueError, match="per-tensor or per-channel"):
        bind_conv_2d_dynamic([xc] + cins[1:], cp_group, np.empty((1, 3, 3, 6), np.float32))
    with pytest.raises(ValueError, match="HybridConvParams"):
        bind_conv_2d_dynamic([xc] + cins[1:], cp.hybrid, np.empty((1, 3, 3, 6), np.float32))


def test_bind_refuses_packs_of_another_op():
    """A pack made for other weights (K, C_out, groups) or another path, or not a PackedDynamic,
    is refused at bind: its panels, sums, scales and bias would be read by this op's sizes."""
    rng = np.random.default_rng(14)
    ins, p, x, out = fc_case(rng)
    bias = ins[2]
    bind_fully_connected_dynamic([x] + ins[1:], p, out, packed=pack_fully_connected_dynamic([x] + ins[1:], p))()
    for shape in ((8, 10), (6, 12), (16, 12), (8, 40)):
        oins, op, _, _ = fc_case(rng, shape)
        other = pack_fully_connected_dynamic([None] + oins[1:], op)
        with pytest.raises(ValueError, match="another op"):
            bind_fully_connected_dynamic([x] + ins[1:], p, out, packed=other)
    from qrt.kernels import weight_only as WO
    wo = dataclasses.replace(p, form=WEIGHT_ONLY)
    with pytest.raises(ValueError, match="PackedDynamic"):
        bind_fully_connected_dynamic([x] + ins[1:], p, out, packed=WO.pack_fully_connected([x] + ins[1:], wo))
    # CONV_2D: the same weights packed for groups 1, bound with groups 2 (cout_g differs)
    wc, scc = _weights(rng, (6, 3, 3, 2))
    cform, cins, cp = prepared(conv_model((1, 5, 5, 4), wc, scc, bias[:6], groups=2))
    _, cins1, cp1 = prepared(conv_model((1, 5, 5, 2), wc, scc, bias[:6], groups=1))
    xc = rng.standard_normal((1, 5, 5, 4)).astype(np.float32)
    yc = np.empty((1, 3, 3, 6), np.float32)
    with pytest.raises(ValueError, match="another op"):
        bind_conv_2d_dynamic([xc] + cins[1:], cp, yc, packed=pack_conv_2d_dynamic([None] + cins1[1:], cp1))
    bind_conv_2d_dynamic([xc] + cins[1:], cp, yc, packed=pack_conv_2d_dynamic([None] + cins[1:], cp))()
    assert same(yc, reference(cform, xc, cins, cp))


def test_reduction_that_could_overflow_is_refused():
    """K x 255 x max|w| must fit int32: the verifier's bound, checked again at pack."""
    K = 66000
    w = np.zeros((1, K), np.int8)
    w[0, 0] = 127
    p = H.HybridParams("dynamic", (-np.inf, np.inf), H.QuantizedWeights(w.shape, False, np.ones((1, 1), np.float32), K))
    x = np.zeros((1, K), np.float32)
    bind_fully_connected_dynamic([x, w, np.zeros(1, np.float32)], p, np.empty((1, 1), np.float32))()
    w[0, 1] = -128
    with pytest.raises(ValueError, match="overflow"):
        pack_fully_connected_dynamic([x, w, np.zeros(1, np.float32)], p)


def test_empty_rows():
    rng = np.random.default_rng(10)
    w, sc = _weights(rng, (5, 7))
    bias = rng.standard_normal(5).astype(np.float32)
    form, ins, p = prepared(fc_model((2, 7), w, sc, bias))
    out = np.empty((0, 5), np.float32)
    bind_fully_connected_dynamic([np.empty((0, 7), np.float32)] + ins[1:], p, out)()


# ------------------------------------------------------------------------------ the long sweep

@pytest.mark.slow
@pytest.mark.parametrize("isa", PATHS)
def test_fc_full_sweep(isa):
    rng = np.random.default_rng(11)
    for M, N, K in itertools.product((1, 2, 3, 4, 5, 6, 7, 13, 64), (1, 15, 16, 17, 33, 69),
                                     (1, 3, 4, 5, 31, 1000)):
        rows = np.concatenate([special_rows(rng, K), non_finite_rows(rng, K)])
        x = (rng.standard_normal((M, K)) * rng.uniform(0.01, 100, (M, 1))).astype(np.float32)
        x[:min(M, len(rows))] = rows[rng.permutation(len(rows))[:min(M, len(rows))]]
        w, sc = _weights(rng, (N, K))
        bias = rng.standard_normal(N).astype(np.float32)
        activation = ("none", "relu", "relu6", "clip")[(M + N + K) % 4]
        form, ins, p = prepared(fc_model(x.shape, w, sc, bias, activation))
        check(form, x, ins, p, threads=(1, 2), paths=[isa])


@pytest.mark.slow
@pytest.mark.parametrize("isa", PATHS)
def test_conv_full_sweep(isa):
    rng = np.random.default_rng(12)
    for n, (kh, kw), stride, dilation, groups, cout in itertools.product(
            (1, 3), ((1, 1), (3, 3), (5, 1), (2, 3)), (1, 2), (1, 2), (1, 2, 3), (6, 18, 42)):
        cin = 3 * groups
        h, wd = 9, 8
        pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        x = _images(rng, (n, h, wd, cin))
        w, sc = _weights(rng, (cout, kh, kw, cin // groups))
        bias = rng.standard_normal(cout).astype(np.float32)
        form, ins, p = prepared(conv_model(x.shape, w, sc, bias, (stride, stride), (dilation, dilation),
                                           pads, groups, ("none", "relu")[cout % 2]))
        check(form, x, ins, p, threads=(1, 2), paths=[isa])
