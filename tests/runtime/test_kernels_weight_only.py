"""The compiled weight-only CONV_2D and FULLY_CONNECTED kernels (qrt/kernels/weight_only.pyx,
simd/weight_only.h) are bit-exact with their NumPy references (reference_weight_only in
qrt/ops/fully_connected.py and conv_2d.py: the ordered, unfused float32 rule of
qrt/ops/hybrid.py), on every instruction-set path this machine supports and at 1 and 2 threads.

Cases are one-op models built with ModelBuilder and checked by verify_model, prepared with
prepare_op; the kernel writes into an array pre-filled with the bitwise complement of the
reference, and the two are compared as bits (so -0.0 against 0.0, or a skipped element, fails).
Swept: rows around the micro-kernels' tiles, channels around the 16-channel panels, reductions
from 1 to 1000, int8 and int4, per-tensor, per-channel and per-group scales (groups of 1, odd
sizes, sizes that do not divide K, larger than K), fused activations, conv strides, dilations,
asymmetric pads, groups, batches. Also: data on which a fused multiply-add would give other
bits, NaN and infinities, the packed layout (still quantized), bad arguments, and whole models
through qrt.load with the fast and the reference kernel sets.
"""
from __future__ import annotations

import dataclasses
import itertools
import zlib

import numpy as np
import pytest

import qrt
from qrt import verify_model
from qrt.format import Activation, Conv2DOptions, DType, ModelBuilder, OpCode
from qrt.format.model import pack_int4
from qrt.format.writer import to_bytes
from qrt.kernels import isa as ISA
from qrt.kernels import weight_only as WO
from qrt.ops import OPS, op_form, prepare_op
from qrt.ops.base import DYNAMIC, FLOAT32, WEIGHT_ONLY
from qrt.ops.hybrid import HybridParams, QuantizedWeights, dequantize_weights, weight_values

PATHS = [(isa, threads) for isa in ISA.supported() for threads in (1, 2)]
FC_WEIGHT_ONLY = next(f for f in OPS[OpCode.FULLY_CONNECTED].forms if f.name == WEIGHT_ONLY)


# ------------------------------------------------------------------------------- case makers

def _scales(rng, count, per_tensor):
    """A scale per (channel, group), or one per tensor: random magnitudes over a few decades, and
    some powers of two (their products are exact, so the sums' roundings carry the test)."""
    size = None if per_tensor else count
    if rng.integers(0, 3) == 0:
        s = np.exp2(-rng.integers(3, 9, size=size).astype(np.float64))
    else:
        s = rng.uniform(0.001, 0.1, size=size) * 10.0 ** rng.integers(-2, 3, size=size)
    return np.float32(s) if per_tensor else np.asarray(s, np.float32)


def _quantized(rng, b, shape, int4, grouping, name="w"):
    """A weight tensor: grouping "tensor", "channel" or a group size (int)."""
    channels, k = shape[0], int(np.prod(shape[1:]))
    lo, hi = (-7, 7) if int4 else (-127, 127)
    q = rng.integers(lo, hi + 1, size=shape)
    if rng.integers(0, 4) == 0:
        q = rng.choice(np.array([lo, hi]), size=shape)  # weights at the ends of the range
    group = grouping if isinstance(grouping, int) else 0
    count = channels * -(-k // group) if group else channels
    s = _scales(rng, count, grouping == "tensor")
    data = pack_int4(q) if int4 else q
    return b.tensor(name, DType.INT4 if int4 else DType.INT8, shape, data, scale=s, axis=0, group_size=group)


def _activation(rng, kind=None):
    act = Activation(int(rng.integers(0, 4)) if kind is None else kind)
    clip = (0.0, 0.0)
    if act == Activation.CLIP:
        lo = float(rng.uniform(-3, 0.5))
        clip = (lo, lo + float(rng.uniform(0, 3)))
    return act, clip


def fc_model(rng, x_shape, channels, int4=False, grouping="channel", activation=None):
    k = x_shape[-1]
    b = ModelBuilder("fc")
    x = b.tensor("x", DType.FLOAT32, x_shape)
    w = _quantized(rng, b, (channels, k), int4, grouping)
    bias = b.tensor("bias", DType.FLOAT32, (channels,), rng.standard_normal(channels).astype(np.float32))
    y = b.tensor("y", DType.FLOAT32, tuple(x_shape[:-1]) + (channels,))
    act, clip = _activation(rng, activation)
    b.op(OpCode.FULLY_CONNECTED, [x, w, bias], [y], activation=act, clip=clip)
    b.input("x", x)
    b.output("y", y)
    model = b.build()
    verify_model(model)
    return model


def _out_size(size, pad_a, pad_b, k, d, s):
    return (size + pad_a + pad_b - d * (k - 1) - 1) // s + 1


def conv_model(rng, n, hw, cin_g, cout_g, kernel, stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0),
               groups=1, int4=False, grouping="channel", activation=None):
    kh, kw = kernel
    oh = _out_size(hw[0], pads[0], pads[2], kh, dilation[0], stride[0])
    ow = _out_size(hw[1], pads[1], pads[3], kw, dilation[1], stride[1])
    assert oh >= 1 and ow >= 1
    b = ModelBuilder("conv")
    x = b.tensor("x", DType.FLOAT32, (n, hw[0], hw[1], cin_g * groups))
    cout = cout_g * groups
    w = _quantized(rng, b, (cout, kh, kw, cin_g), int4, grouping)
    bias = b.tensor("bias", DType.FLOAT32, (cout,), rng.standard_normal(cout).astype(np.float32))
    y = b.tensor("y", DType.FLOAT32, (n, oh, ow, cout))
    act, clip = _activation(rng, activation)
    b.op(OpCode.CONV_2D, [x, w, bias], [y], Conv2DOptions(*stride, *dilation, *pads, groups=groups),
         activation=act, clip=clip)
    b.input("x", x)
    b.output("y", y)
    model = b.build()
    verify_model(model)
    return model


def _ins(model, x):
    op = model.operators[0]
    return [x, model.tensors[op.inputs[1]].data, model.tensors[op.inputs[2]].data]


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def check(model, x, paths=PATHS, what=""):
    """The model's op by the compiled kernel on every path = its reference, bit for bit."""
    form, p = op_form(model, 0), prepare_op(model, 0)
    assert form.name == WEIGHT_ONLY and form.kernel in WO.KERNELS
    ins = _ins(model, x)
    ref = form.reference(ins, p)
    kernel = WO.KERNELS[form.kernel]
    packed = kernel.pack(ins, p)
    for isa, threads in paths:
        for pk in (None, packed):  # packed by bind, and once for all paths (as at load)
            out = (~_bits(ref)).view(np.float32).reshape(ref.shape)  # every element differs
            kernel.bind(ins, p, out, isa=isa, threads=threads, packed=pk)()
            if not np.array_equal(_bits(out), _bits(ref)):
                bad = np.argwhere(_bits(out) != _bits(ref))
                i = tuple(int(v) for v in bad[0])
                raise AssertionError(f"{what} [{isa}, {threads} threads]: {len(bad)} of {ref.size} "
                                     f"outputs differ; first at {i}: kernel {out[i]!r}, reference {ref[i]!r}")
    return ref


def _x(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------------------- FULLY_CONNECTED

GROUPINGS = ["tensor", "channel", 1, 7, 32, 128, 4096]  # 4096: one group larger than any K here

FAST_FC = [  # (M, N, K, int4, grouping)
    (1, 16, 1, False, "channel"), (1, 17, 3, True, "channel"), (1, 69, 1000, False, 32),
    (1, 33, 1000, True, 128), (2, 31, 37, True, 7), (3, 15, 64, False, "tensor"),
    (4, 1, 130, True, 1), (5, 64 + 5, 37, False, 4096), (6, 33, 130, True, "tensor"),
    (7, 16, 257, False, 7), (13, 17, 33, True, 32), (64, 69, 100, False, "channel"),
    (64, 31, 129, True, 128), (13, 1, 1, True, 1), (2, 64 + 5, 1000, False, "channel"),
]


@pytest.mark.parametrize("m,n,k,int4,grouping", FAST_FC)
def test_fully_connected(m, n, k, int4, grouping):
    rng = np.random.default_rng(zlib.crc32(repr((m, n, k, int4, grouping)).encode()))  # stable seed
    model = fc_model(rng, (m, k), n, int4, grouping)
    check(model, _x(rng, (m, k)), what=f"FC {m}x{k} -> {n}, {'int4' if int4 else 'int8'} {grouping}")


@pytest.mark.slow
def test_fully_connected_sweep():
    """Every M x N x K x dtype x grouping (one model per weights; x of each M through it)."""
    rng = np.random.default_rng(7)
    for n, k, int4, grouping in itertools.product((1, 15, 16, 17, 31, 33, 64 + 5), (1, 3, 37, 130, 1000),
                                                  (False, True), GROUPINGS):
        model = fc_model(rng, (1, k), n, int4, grouping)
        form, p = op_form(model, 0), prepare_op(model, 0)
        for m in (1, 2, 3, 4, 5, 6, 7, 13, 64):
            ins = _ins(model, _x(rng, (m, k)))
            ref = form.reference(ins, p)
            for isa, threads in PATHS:
                out = (~_bits(ref)).view(np.float32).reshape(ref.shape)
                WO.fully_connected(ins, p, out, isa=isa, threads=threads)
                assert np.array_equal(_bits(out), _bits(ref)), (m, n, k, int4, grouping, isa, threads)


@pytest.mark.parametrize("lead", [(2, 3), (1, 1, 5), (4,), ()])
def test_fully_connected_rows_of_any_rank(lead):
    rng = np.random.default_rng(len(lead))
    model = fc_model(rng, lead + (19,), 21, bool(len(lead) % 2), 7)
    check(model, _x(rng, lead + (19,)))


def test_unaligned_and_offset_arrays():
    """x and out at odd offsets into larger buffers (views, still C-contiguous)."""
    rng = np.random.default_rng(21)
    model = fc_model(rng, (5, 23), 19, True, 4)
    form, p = op_form(model, 0), prepare_op(model, 0)
    x = _x(rng, 5 * 23 + 1)[1:].reshape(5, 23)
    ins = _ins(model, x)
    ref = form.reference(ins, p)
    for isa, threads in PATHS:
        buf = np.zeros(5 * 19 + 3, np.float32)
        out = buf[3:].reshape(5, 19)
        WO.fully_connected(ins, p, out, isa=isa, threads=threads)
        assert np.array_equal(_bits(out), _bits(ref)) and not buf[:3].any()


@pytest.mark.parametrize("act", [Activation.RELU, Activation.RELU6, Activation.CLIP])
@pytest.mark.parametrize("int4", [False, True])
def test_fused_activations(act, int4):
    rng = np.random.default_rng(int(act) + 10 * int4)
    for m, n in ((1, 40), (7, 33)):
        model = fc_model(rng, (m, 50), n, int4, 16, activation=act)
        x = _x(rng, (m, 50)) * 8  # outputs well past 0, 6 and the clip bounds
        ref = check(model, x)
        lo, hi = prepare_op(model, 0).bounds
        assert (ref == np.float32(lo)).any() and (ref > np.float32(lo)).any()


def test_no_fused_multiply_add():
    """On this data a fused multiply-add (each x*w added unrounded) gives other bits than the
    rule somewhere; the kernels give the rule's bits exactly, so none of them fuses."""
    rng = np.random.default_rng(2024)
    m, n, k = 5, 40, 1000
    model = fc_model(rng, (m, k), n, False, 64, activation=Activation.NONE)
    x = _x(rng, (m, k))
    p = prepare_op(model, 0)
    ins = _ins(model, x)
    w = dequantize_weights(ins[1], p.weights).astype(np.float64)
    fused = np.zeros((m, n), np.float32)
    for j in range(k):  # fma(x, w, acc): the exact product (float64 holds it), one rounding
        fused = (fused.astype(np.float64) + x[:, j, None].astype(np.float64) * w[None, :, j]).astype(np.float32)
    fused = fused + ins[2]
    ref = check(model, x)
    assert not np.array_equal(fused, ref), "the data does not tell a fused multiply-add apart"
    assert np.count_nonzero(fused != ref) > m * n // 4


def test_nan_and_infinity():
    """Non-finite inputs: NaN where the reference has NaN (a clamp keeps it), the same bits
    everywhere else."""
    rng = np.random.default_rng(5)
    for act in (Activation.NONE, Activation.RELU6):
        model = fc_model(rng, (6, 40), 35, True, 8, activation=act)
        x = _x(rng, (6, 40))
        x[0, 3], x[1, 0], x[2, 39], x[3, :] = np.inf, -np.inf, np.nan, 0.0
        form, p = op_form(model, 0), prepare_op(model, 0)
        ins = _ins(model, x)
        with np.errstate(invalid="ignore"):
            ref = form.reference(ins, p)
        assert np.isnan(ref).any()
        for isa, threads in PATHS:
            out = np.zeros_like(ref)
            WO.fully_connected(ins, p, out, isa=isa, threads=threads)
            nan = np.isnan(ref)
            assert np.array_equal(np.isnan(out), nan)
            assert np.array_equal(_bits(out[~nan]), _bits(ref[~nan]))


def test_clamp_ties_and_signed_zeros():
    """y exactly at a bound, and bounds of -0.0 and +0.0 (np.clip keeps y when it ties): x = 0,
    so y = 0 + bias."""
    bias = np.array([0.0, -0.0, 1.5, -1.5, 6.0, 1e-45, -1e-45, np.inf, -np.inf, 3.0], np.float32)
    n = bias.size
    qw = QuantizedWeights((n, 5), False, np.full((n, 1), 0.5, np.float32), 5)
    w = np.ones((n, 5), np.int8)
    x = np.zeros((3, 5), np.float32)
    for bounds in ((-0.0, 6.0), (0.0, 6.0), (-1.5, 1.5), (1.5, -0.0), (-np.inf, np.inf), (0.0, np.inf)):
        p = HybridParams("weight-only", bounds, qw)
        ins = [x, w, bias]
        ref = FC_WEIGHT_ONLY.reference(ins, p)
        for isa, threads in PATHS:
            out = np.full_like(ref, 7.0)
            WO.fully_connected(ins, p, out, isa=isa, threads=threads)
            assert np.array_equal(_bits(out), _bits(ref)), (bounds, isa)


def test_int4_minus_eight():
    """-8, the nibble the model rules leave out, still decodes as -8 (the kernel reads any
    nibble); odd K: a row's values straddle bytes in the stored packing."""
    rng = np.random.default_rng(3)
    for n, k, g in ((33, 37, 5), (16, 1, 1), (5, 99, 100)):
        q = rng.integers(-8, 8, size=(n, k))
        q[:, 0] = -8
        qw = QuantizedWeights((n, k), True, rng.uniform(0.01, 1, (n, -(-k // g))).astype(np.float32), g)
        data = pack_int4(q)
        assert np.array_equal(weight_values(data, qw), q)
        p = HybridParams("weight-only", (-np.inf, np.inf), qw)
        for m in (1, 6, 9):
            ins = [_x(rng, (m, k)), data, rng.standard_normal(n).astype(np.float32)]
            ref = FC_WEIGHT_ONLY.reference(ins, p)
            for isa, threads in PATHS:
                out = np.empty_like(ref)
                WO.fully_connected(ins, p, out, isa=isa, threads=threads)
                assert np.array_equal(_bits(out), _bits(ref)), (n, k, g, m, isa)


def test_packed_weights_stay_quantized():
    """int8 weights pack to one byte each, int4 to a nibble (plus panel padding): no float or
    unpacked copy is kept; scales and bias per panel."""
    rng = np.random.default_rng(11)
    for int4, grouping in ((False, "channel"), (True, 32), (True, "tensor")):
        model = fc_model(rng, (1, 300), 40, int4, grouping)
        p = prepare_op(model, 0)
        packed = WO.pack_fully_connected(_ins(model, _x(rng, (1, 300))), p)
        panels = 3  # 40 channels in panels of 16
        per_k = 0.5 if int4 else 1
        assert packed.w.dtype == np.uint8 and packed.w.nbytes == panels * 16 * 300 * per_k
        assert packed.scales.size == panels * 16 * p.weights.scales.shape[1]
        assert packed.bias.size == panels * 16
        arrays = {name: v for name, v in vars(packed).items() if isinstance(v, np.ndarray)}
        assert sorted(arrays) == ["bias", "scales", "w"]  # nothing else is kept
        assert packed.scales.dtype == packed.bias.dtype == np.float32
        assert packed.nbytes < 300 * 40 * 4 / (3 if int4 else 2)  # float32 would be 48000 bytes


def test_bad_arguments():
    rng = np.random.default_rng(0)
    model = fc_model(rng, (3, 10), 5, False, "channel")
    p = prepare_op(model, 0)
    x = _x(rng, (3, 10))
    ins = _ins(model, x)
    y = np.empty((3, 5), np.float32)
    bad = [
        ([x.astype(np.float64)] + ins[1:], y, "x must be"),
        ([_x(rng, (3, 20))[:, ::2]] + ins[1:], y, "x must be"),  # not contiguous
        ([_x(rng, (3, 9))] + ins[1:], y, "last dimension"),
        (ins, np.empty((3, 6), np.float32), "output has shape"),
        (ins, np.empty((3, 5), np.float64), "out must be"),
        (ins[:2] + [ins[2].astype(np.float64)], y, "bias"),
        (ins[:2] + [ins[2][:4]], y, "bias"),
        ([x, ins[1].astype(np.int16), ins[2]], y, "int8"),
        ([x, ins[1]], y, "expected inputs"),
    ]
    for args, out, message in bad:
        with pytest.raises(ValueError, match=message):
            WO.fully_connected(args, p, out)
    with pytest.raises(ValueError, match="unknown instruction-set path"):
        WO.fully_connected(ins, p, y, isa="sse9")
    for form in (DYNAMIC, FLOAT32):  # params of another form (the same weights) are refused
        other_form = dataclasses.replace(p, form=form)
        with pytest.raises(ValueError, match="weight-only form"):
            WO.pack_fully_connected(ins, other_form)
        with pytest.raises(ValueError, match="weight-only form"):
            WO.bind_fully_connected(ins, other_form, y, packed=WO.pack_fully_connected(ins, p))
    other = prepare_op(fc_model(rng, (3, 10), 6, False, "channel"), 0)
    with pytest.raises(ValueError, match="another op"):
        WO.bind_fully_connected(ins, p, y, packed=WO.pack_fully_connected(
            _ins(fc_model(rng, (3, 10), 6, False, "channel"), x), other))
    conv = conv_model(rng, 1, (5, 5), 2, 3, (3, 3))
    pc = prepare_op(conv, 0)
    xc = _x(rng, (1, 5, 5, 2))
    with pytest.raises(ValueError, match="window arithmetic"):
        WO.conv_2d(_ins(conv, xc), pc, np.empty((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="weight-only form"):
        WO.conv_2d(_ins(conv, xc), dataclasses.replace(pc, hybrid=dataclasses.replace(pc.hybrid, form=DYNAMIC)),
                   np.empty((1, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="groups"):
        WO.conv_2d(_ins(conv, _x(rng, (1, 5, 5, 4))), pc, np.empty((1, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="4-D"):
        WO.conv_2d(_ins(conv, _x(rng, (5, 5, 2))), pc, np.empty((1, 3, 3, 3), np.float32))


# ------------------------------------------------------------------------------- CONV_2D

FAST_CONV = [  # (n, hw, cin_g, cout_g, kernel, stride, dilation, pads, groups, int4, grouping)
    (1, (6, 7), 3, 16, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1, False, "channel"),
    (2, (7, 6), 4, 17, (3, 3), (2, 2), (1, 1), (0, 1, 2, 0), 1, True, 7),
    (1, (8, 8), 2, 5, (3, 3), (1, 2), (2, 2), (2, 0, 1, 3), 2, False, 4),
    (2, (5, 9), 3, 33, (5, 1), (1, 1), (1, 1), (2, 0, 2, 0), 3, True, "channel"),
    (1, (6, 6), 8, 31, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 1, True, 3),
    (2, (5, 5), 5, 7, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 3, False, "tensor"),
    (1, (9, 9), 4, 16, (1, 1), (2, 2), (1, 1), (0, 0, 0, 0), 2, False, 1),
    (1, (4, 4), 16, 40, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1, False, 32),
    (2, (12, 11), 1, 8, (5, 1), (2, 1), (2, 1), (1, 2, 3, 0), 1, True, 1000),
    (1, (3, 3), 7, 3, (3, 3), (1, 1), (1, 1), (0, 0, 0, 0), 1, True, "tensor"),  # one pixel out
]


@pytest.mark.parametrize("case", FAST_CONV)
def test_conv_2d(case):
    n, hw, cin_g, cout_g, kernel, stride, dilation, pads, groups, int4, grouping = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    model = conv_model(rng, n, hw, cin_g, cout_g, kernel, stride, dilation, pads, groups, int4, grouping)
    check(model, _x(rng, (n, hw[0], hw[1], cin_g * groups)), what=str(case))


@pytest.mark.slow
def test_conv_2d_sweep():
    rng = np.random.default_rng(99)
    for case in range(400):
        kernel = [(1, 1), (3, 3), (5, 1), (1, 3), (2, 2)][case % 5]
        groups = [1, 2, 3][case // 5 % 3]
        stride = tuple(int(v) for v in rng.integers(1, 3, 2))
        dilation = tuple(int(v) for v in rng.integers(1, 3, 2))
        pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        hw = tuple(int(v) for v in rng.integers(1, 11, 2))
        if _out_size(hw[0], pads[0], pads[2], kernel[0], dilation[0], stride[0]) < 1 or \
                _out_size(hw[1], pads[1], pads[3], kernel[1], dilation[1], stride[1]) < 1:
            continue
        n, cin_g, cout_g = int(rng.integers(1, 3)), int(rng.integers(1, 9)), int(rng.integers(1, 40))
        int4 = bool(rng.integers(0, 2))
        grouping = [*GROUPINGS, 5][int(rng.integers(0, len(GROUPINGS) + 1))]
        model = conv_model(rng, n, hw, cin_g, cout_g, kernel, stride, dilation, pads, groups, int4,
                           grouping)
        check(model, _x(rng, (n, hw[0], hw[1], cin_g * groups)), what=f"case {case}")


@pytest.mark.slow
def test_conv_2d_large_reduction():
    """K = 3 * 3 * 128 = 1152 (im2col blocks of few rows), 2 images of 9 x 9."""
    rng = np.random.default_rng(8)
    model = conv_model(rng, 2, (9, 9), 128, 24, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1, True, 64)
    check(model, _x(rng, (2, 9, 9, 128)))


# ------------------------------------------------------------------------------- whole models

def _two_op_model(rng):
    """CONV_2D (int4, per group, stride 2, groups 2, RELU6) then FULLY_CONNECTED (int8 per
    channel) over [2, 3, 3*10] rows: both weight-only."""
    b = ModelBuilder("two")
    x = b.tensor("x", DType.FLOAT32, (2, 6, 6, 4))
    w = _quantized(rng, b, (10, 3, 3, 2), True, 7)
    bias = b.tensor("b", DType.FLOAT32, (10,), rng.standard_normal(10).astype(np.float32))
    y = b.tensor("y", DType.FLOAT32, (2, 3, 3, 10))
    b.op(OpCode.CONV_2D, [x, w, bias], [y], Conv2DOptions(2, 2, 1, 1, 1, 1, 0, 0, groups=2),
         activation=Activation.RELU6)
    w2 = _quantized(rng, b, (21, 10), False, "channel", "w2")
    b2 = b.tensor("b2", DType.FLOAT32, (21,), rng.standard_normal(21).astype(np.float32))
    z = b.tensor("z", DType.FLOAT32, (2, 3, 3, 21))
    b.op(OpCode.FULLY_CONNECTED, [y, w2, b2], [z])
    b.input("x", x)
    b.output("z", z)
    model = b.build()
    verify_model(model)
    return model


def test_model_fast_equals_reference():
    rng = np.random.default_rng(12)
    data = to_bytes(_two_op_model(rng))
    reference = qrt.load(data, kernels="reference")
    assert [op_form(reference.definition, i).kernel for i in range(2)] == [
        "conv_2d_weight_only", "fully_connected_weight_only"]
    x = _x(rng, (2, 6, 6, 4))
    ref = reference.run(x)
    for isa, threads in PATHS:
        fast = qrt.load(data, kernels="fast", isa=isa, threads=threads)
        steps = [type(fast._bind(1).plan[i]).__name__ for i in range(len(fast._bind(1).plan))]
        assert steps == ["WeightOnlyStep", "WeightOnlyStep"], steps
        for _ in range(2):  # the bound plan again: same bits
            got = fast.run(x)
            assert np.array_equal(_bits(got), _bits(ref)), (isa, threads)
