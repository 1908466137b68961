"""The int16 form of CONV_2D and FULLY_CONNECTED (SPEC.md section 4.6: int16 activations with
zero point 0, int8 weights, int32 accumulators under the loader's per-channel bound) in its
compiled kernels, gemm.pyx "conv_2d_int16" and "fully_connected_int16" (the GEMM's int16 mode,
simd/gemm.h qrt_gemm_int16_ops_for), bit-exact with the reference of the op's INT16 Form
(qrt.ops.op_form(model, 0).reference) on every instruction-set path this machine supports, at 1
and 2 threads.

Every case is a one-op model built with ModelBuilder and accepted by verify_model (so the
weights and bias respect the bound), prepared with prepare_op, run by the reference and by the
kernel into an array pre-filled with the bitwise complement of the reference (a skipped element
is caught). Swept: rows M around the 6-row micro-kernels (1..7, 13, 64), output channels around
the 16-channel panels (1, 15, 16, 17, 31, 33, 69), reductions K 1, 2, 3, 5, 17, 64, 1000 (pairs
of k: odd K pads the last pair); extreme inputs (all 32767, all -32768, alternating) with
weights at +-127 and biases at the bound; fused RELU, RELU6, CLIP; per-tensor and per-channel
weights; both requantization forms (32-bit when every shift >= 33, 64-bit otherwise) and exact
ties; convolutions with stride 2, dilation 2, asymmetric pads, groups 2 and 3, 1x1, 3x3 and 5x1
kernels, 2 images. End to end: qrt.load(kernels="fast") against kernels="reference", and a file
whose weights break the bound is refused naming the channel. `slow` adds the whole M x N x K
product and more random convolutions.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path

import numpy as np
import pytest

import qrt
import qrt.kernels
from qrt import InvalidModelError, verify_model
from qrt.format import Activation, Conv2DOptions, DType, ModelBuilder, OpCode
from qrt.kernels import gemm
from qrt.kernels import isa as ISA
from qrt.kernels.requantize import tables32
from qrt.numerics import MAX_INT16_MAGNITUDE
from qrt.ops import op_form, prepare_op
from qrt.ops.base import INT16
from tests.runtime.helpers import int16_scales

INT32_MAX = 2**31 - 1
PATHS = [(isa, threads) for isa in ISA.supported() for threads in (1, 2)]

M_SWEEP = (1, 2, 3, 4, 5, 6, 7, 13, 64)
N_SWEEP = (1, 15, 16, 17, 31, 33, 69)
K_SWEEP = (1, 2, 3, 5, 17, 64, 1000)
X_KINDS = ("random", "max", "min", "alternating")


# ------------------------------------------------------------------------------- case makers

def _x(rng, shape, kind: str) -> np.ndarray:
    if kind == "max":
        return np.full(shape, 32767, np.int16)
    if kind == "min":
        return np.full(shape, -32768, np.int16)
    if kind == "alternating":  # -32768, 32767, ... in memory order
        return np.where(np.arange(int(np.prod(shape))) % 2, 32767, -32768).astype(np.int16).reshape(shape)
    return rng.integers(-32768, 32768, size=shape, dtype=np.int16)


def _weights(rng, shape, kind: str = "random") -> np.ndarray:
    """int8 in [-127, 127] with sum_k |w[c, k]| * 2^15 < 2^31 per channel (SPEC.md 4.6): random
    values scaled down where a channel would break the bound, or +-127 where K allows it."""
    c, k = shape[0], int(np.prod(shape[1:]))
    cap = (INT32_MAX - 2**16) // MAX_INT16_MAGNITUDE  # leaves room for a bias of 2^16
    if kind == "extreme" and 127 * k <= cap:
        w = rng.choice(np.array([-127, 127], np.int64), size=(c, k))
    else:
        w = rng.integers(-127, 128, size=(c, k)).astype(np.int64)
        l1 = np.abs(w).sum(axis=1, keepdims=True)
        over = l1 > cap
        w = np.where(over, np.sign(w) * (np.abs(w) * cap // np.maximum(l1, 1)), w)
    return w.astype(np.int8).reshape(shape)


def _bias(rng, w: np.ndarray, kind: str = "random") -> np.ndarray:
    """int32 bias within the bound: up to 2^16 in magnitude, or at the bound ("extreme")."""
    l1 = np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(axis=1)
    limit = INT32_MAX - l1 * MAX_INT16_MAGNITUDE
    if kind == "extreme":
        return (limit * rng.choice([-1, 1], size=len(limit))).astype(np.int32)
    if kind == "zero":
        return np.zeros(len(limit), np.int32)
    return rng.integers(-np.minimum(limit, 2**16), np.minimum(limit, 2**16) + 1).astype(np.int32)


def _output_scale(rng, s_x, s_w, w: np.ndarray, big: bool) -> np.float32:
    """Around the accumulators' typical size times a random factor: most outputs land inside
    int16, some saturate; `big`: multipliers >= 1/4 somewhere (shifts < 33: the 64-bit form)."""
    s_xw = float(s_x) * float(np.max(s_w))
    if big:
        return np.float32(s_xw * rng.uniform(0.3, 3.0))
    if np.log2(float(s_x)).is_integer() and np.all(np.log2(np.asarray(s_w, np.float64)) % 1 == 0):
        return np.float32(s_xw * 2.0 ** int(rng.integers(2, 20)))
    k = int(np.prod(w.shape[1:]))
    typical = np.sqrt(k) * 18918.0 * max(float(np.sqrt(np.mean(w.astype(np.float64) ** 2))), 1.0)
    return np.float32(s_xw * typical / 8000.0 * 10.0 ** rng.uniform(-1.0, 1.0))


def _activation(rng):
    act = Activation(int(rng.integers(0, 4)))
    clip = (0.0, 0.0)
    if act == Activation.CLIP:
        lo = float(rng.uniform(-8, 2))
        clip = (lo, lo + float(rng.uniform(0, 8)))
    return act, clip


def _model(opcode, x_shape, w, bias, y_shape, options, s_x, s_w, s_y, act=Activation.NONE,
           clip=(0.0, 0.0), bias_scale=False):
    b = ModelBuilder("int16")
    x = b.tensor("x", DType.INT16, x_shape, scale=s_x, zero_point=0)
    wt = b.tensor("w", DType.INT8, w.shape, w, scale=s_w, axis=0)
    scale = np.float32(s_x) * np.broadcast_to(np.asarray(s_w, np.float32), (len(bias),)) if bias_scale else None
    bt = b.tensor("bias", DType.INT32, (len(bias),), bias, scale=scale)
    y = b.tensor("y", DType.INT16, y_shape, scale=s_y, zero_point=0)
    b.op(opcode, [x, wt, bt], [y], options, activation=act, clip=clip)
    b.input("x", x)
    b.output("y", y)
    model = b.build()
    verify_model(model)
    return model


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a)  # weights of a loaded model are read-only memory-mapped data
    a.setflags(write=False)
    return a


def _check(model, x, what: str):
    """The model's one op through its int16 kernel on every path and thread count, against the
    reference of its form. Returns (reference output, params)."""
    form = op_form(model, 0)
    assert form.name == INT16
    op = model.operators[0]
    ins = [x, _readonly(model.tensors[op.inputs[1]].data), _readonly(model.tensors[op.inputs[2]].data)]
    p = prepare_op(model, 0)
    assert p.out.dtype == np.int16
    ref = form.reference(ins, p)
    assert ref.dtype == np.int16 and ref.shape == model.tensors[op.outputs[0]].shape
    kernel = gemm.KERNELS[form.kernel].run
    for isa, threads in PATHS:
        out = np.ascontiguousarray(~ref)  # every element differs from the expected one
        assert kernel(ins, p, out, isa=isa, threads=threads) is None
        if not np.array_equal(out, ref):
            bad = np.argwhere(out != ref)
            i = tuple(bad[0])
            raise AssertionError(f"{what} [{isa}, {threads} threads]: {len(bad)} of {ref.size} outputs "
                                 f"differ; first at {i}: kernel {out[i]}, reference {ref[i]}")
    return ref, p


def _fc_case(rng, m, n, k, x_kind="random", w_kind="random", b_kind="random", act=None, big=False,
             lead=None):
    per_channel, pow2 = bool(rng.integers(0, 2)), rng.integers(0, 4) == 0
    w = _weights(rng, (n, k), w_kind)
    bias = _bias(rng, w, b_kind)
    s_x, s_w = int16_scales(rng, n, per_channel, pow2)
    act, clip = _activation(rng) if act is None else act
    lead = (m,) if lead is None else lead
    model = _model(OpCode.FULLY_CONNECTED, lead + (k,), w, bias, lead + (n,), None, s_x, s_w,
                   _output_scale(rng, s_x, s_w, w, big), act, clip, bias_scale=bool(rng.integers(0, 2)))
    return model, _x(rng, lead + (k,), x_kind), f"fc M={m} N={n} K={k} x={x_kind} w={w_kind} {act.name}"


def _out_size(size, pad_a, pad_b, k, d, s):
    return (size + pad_a + pad_b - d * (k - 1) - 1) // s + 1


def _conv_case(rng, n, h, w_, cin, cout, kernel, stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0),
               groups=1, x_kind="random", w_kind="random", b_kind="random", act=None, big=False):
    kh, kw = kernel
    oh = _out_size(h, pads[0], pads[2], kh, dilation[0], stride[0])
    ow = _out_size(w_, pads[1], pads[3], kw, dilation[1], stride[1])
    assert oh >= 1 and ow >= 1
    w = _weights(rng, (cout, kh, kw, cin // groups), w_kind)
    bias = _bias(rng, w, b_kind)
    s_x, s_w = int16_scales(rng, cout, bool(rng.integers(0, 2)), rng.integers(0, 4) == 0)
    act, clip = _activation(rng) if act is None else act
    options = Conv2DOptions(*stride, *dilation, *pads, groups=groups)
    model = _model(OpCode.CONV_2D, (n, h, w_, cin), w, bias, (n, oh, ow, cout), options, s_x, s_w,
                   _output_scale(rng, s_x, s_w, w, big), act, clip, bias_scale=bool(rng.integers(0, 2)))
    what = f"conv x{(n, h, w_, cin)} w{w.shape} {options} x={x_kind} {act.name}"
    return model, _x(rng, (n, h, w_, cin), x_kind), what


def test_int16_tiles_are_what_the_sweep_assumes():
    """Every path's int16 micro-kernel (simd/gemm.h qrt_gemm_int16_ops_for) takes 6 rows of
    int16 (2 bytes per packed k), k in pairs (K padded to a multiple of 2), up to 4 panels of
    16 channels: M_SWEEP, N_SWEEP and K_SWEEP are chosen around those sizes."""
    text = (Path(qrt.kernels.__file__).parent / "simd" / "gemm.h").read_text()
    table = text[text.index("qrt_gemm_int16_ops_for(int isa) {"):]
    table = table[:table.index("\n}\n")]
    entries = dict(re.findall(r"\[QRT_(\w+)\] = \{([^}]*)\}", table))
    assert set(entries) == {name.upper() for name in ISA.NAMES}
    for name, entry in entries.items():
        for field in (r"\.mr = QRT_MR\b", r"\.es = 2\b", r"\.kg = 2\b", r"\.k_align = 2\b", r"\.xs = 2\b"):
            assert re.search(field, entry), (name, field, entry)
    assert re.search(r"#define QRT_MR 6\b", text) and re.search(r"#define QRT_NP 4\b", text)
    assert re.search(r"#define QRT_BLOCK_BYTES \(192 \* 1024\)", text)


# ------------------------------------------------------------------------------- FULLY_CONNECTED

def _mnk_fast():
    """Every M, N and K of the sweeps at least once, N and K taking turns (the full product is
    slow)."""
    ns, ks = itertools.cycle(N_SWEEP), itertools.cycle(K_SWEEP)
    cases = [(m, next(ns), next(ks)) for m in M_SWEEP for _ in range(2)]
    # K = 1000: 96 rows per block of packed int16 rows (QRT_BLOCK_BYTES), so 97 and 200 rows
    # take 2 and 3 blocks
    return (cases + [(7, n, 1000) for n in N_SWEEP] + [(13, 69, k) for k in K_SWEEP]
            + [(97, 17, 1000), (200, 33, 1000)])


@pytest.mark.parametrize("m,n,k", _mnk_fast())
def test_fully_connected_int16_sweep(m, n, k):
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    _check(*_fc_case(rng, m, n, k)[:2], f"fc M={m} N={n} K={k}")


@pytest.mark.slow
@pytest.mark.parametrize("m", M_SWEEP)
def test_fully_connected_int16_full_product(m):
    rng = np.random.default_rng(500 + m)
    for n, k in itertools.product(N_SWEEP, K_SWEEP):
        for x_kind, w_kind in itertools.product(X_KINDS, ("random", "extreme")):
            model, x, what = _fc_case(rng, m, n, k, x_kind, w_kind, str(rng.choice(["random", "extreme"])))
            _check(model, x, what)


@pytest.mark.parametrize("x_kind", X_KINDS)
@pytest.mark.parametrize("k", (3, 64, 516))
def test_fully_connected_int16_extremes(x_kind, k):
    """Inputs at the ends of int16, weights +-127 and biases at the bound: K = 516 is the
    longest reduction +-127 weights allow (516 * 127 * 2^15 <= 2^31 - 1), so sums reach
    about +-(2^31 - 1)."""
    rng = np.random.default_rng(k + len(x_kind))
    for m, n in ((1, 17), (7, 33)):
        for b_kind in ("extreme", "zero"):
            model, x, what = _fc_case(rng, m, n, k, x_kind, "extreme", b_kind, (Activation.NONE, (0.0, 0.0)))
            _check(model, x, what)


def test_fully_connected_int16_at_the_bound():
    """Sums exactly +-(2^31 - 1): x = -32768 everywhere, weights all +127 or all -127 over
    K = 516, bias the rest of the bound with the same sign."""
    k = 516
    l1 = 127 * k
    limit = INT32_MAX - l1 * MAX_INT16_MAGNITUDE
    w = np.empty((4, k), np.int8)
    w[0], w[1], w[2], w[3] = -127, 127, -127, 127
    bias = np.array([limit, -limit, -limit, limit], np.int32)
    s_x, s_w = np.float32(2.0**-10), np.full(4, 2.0**-7, np.float32)
    model = _model(OpCode.FULLY_CONNECTED, (2, k), w, bias, (2, 4), None, s_x, s_w,
                   np.float32(2.0**-17 * 2.0**16))  # y = acc / 2^16: about +-32768
    x = np.full((2, k), -32768, np.int16)
    x[1, ::2] = 32767  # second row: partial sums swing
    ref, _ = _check(model, x, "fc at the bound")
    acc = x[0].astype(np.int64) @ w.astype(np.int64).T + bias
    assert acc[0] == INT32_MAX and acc[1] == -INT32_MAX
    assert ref[0, 0] == 32767 and ref[0, 1] == -32768


def test_fully_connected_int16_rank_and_activations():
    """x of rank 1 to 4 (the leading dimensions are the GEMM's rows); each fused activation."""
    rng = np.random.default_rng(77)
    acts = [(Activation.NONE, (0.0, 0.0)), (Activation.RELU, (0.0, 0.0)), (Activation.RELU6, (0.0, 0.0)),
            (Activation.CLIP, (-1.5, 0.75)), (Activation.CLIP, (0.25, 0.25))]
    for lead, act in zip(((), (3,), (2, 3), (1, 2, 5), (2, 1, 1)), acts):
        model, x, what = _fc_case(rng, 0, 21, 40, act=act, lead=lead)
        ref, p = _check(model, x, what)
        if act[0] != Activation.NONE:
            assert ref.min() >= p.out.lo and ref.max() <= p.out.hi
            assert (p.out.lo, p.out.hi) != (-32768, 32767)


# ------------------------------------------------------------------------------- CONV_2D

CONVS = [  # (n, h, w, cin, cout, kernel, stride, dilation, pads, groups)
    (1, 5, 5, 3, 8, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),
    (2, 7, 6, 5, 17, (3, 3), (2, 2), (1, 1), (1, 0, 2, 1), 1),
    (1, 9, 9, 4, 16, (3, 3), (1, 1), (2, 2), (2, 2, 2, 2), 1),
    (2, 6, 7, 6, 33, (5, 1), (1, 2), (1, 1), (2, 0, 2, 0), 1),
    (1, 8, 8, 16, 31, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 1),
    (2, 4, 4, 64, 69, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 1),
    (1, 6, 6, 8, 10, (3, 3), (1, 1), (1, 1), (0, 1, 2, 0), 2),
    (2, 7, 5, 9, 15, (3, 3), (2, 1), (2, 1), (1, 2, 0, 1), 3),
    (1, 5, 8, 6, 6, (5, 1), (2, 2), (1, 2), (0, 3, 1, 0), 3),
    (1, 6, 6, 4, 34, (1, 1), (2, 2), (1, 1), (1, 1, 1, 1), 2),
    (1, 3, 3, 120, 20, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),  # K = 1080
    (2, 9, 9, 2, 1, (3, 3), (1, 1), (1, 1), (0, 0, 0, 0), 1),
]


@pytest.mark.parametrize("case", range(len(CONVS)))
def test_conv_2d_int16_shapes(case):
    n, h, w, cin, cout, kernel, stride, dilation, pads, groups = CONVS[case]
    rng = np.random.default_rng(900 + case)
    for x_kind in ("random", X_KINDS[1 + case % 3]):
        model, x, what = _conv_case(rng, n, h, w, cin, cout, kernel, stride, dilation, pads, groups, x_kind)
        _check(model, x, what)


@pytest.mark.parametrize("x_kind", X_KINDS)
def test_conv_2d_int16_extremes(x_kind):
    """Weights +-127, biases at the bound (K = 3 * 3 * 57 = 513 <= 516), inputs at the ends of
    int16; the padding (zero) makes the border pixels' sums differ."""
    rng = np.random.default_rng(len(x_kind))
    for b_kind in ("extreme", "zero"):
        model, x, what = _conv_case(rng, 1, 4, 5, 57, 18, (3, 3), pads=(1, 1, 1, 1), x_kind=x_kind,
                                    w_kind="extreme", b_kind=b_kind, act=(Activation.NONE, (0.0, 0.0)))
        _check(model, x, what)


@pytest.mark.parametrize("act", [Activation.RELU, Activation.RELU6, Activation.CLIP])
def test_conv_2d_int16_fused_activations(act):
    rng = np.random.default_rng(int(act))
    clip = (-2.0, 1.5) if act == Activation.CLIP else (0.0, 0.0)
    model, x, what = _conv_case(rng, 2, 6, 6, 8, 20, (3, 3), pads=(1, 1, 1, 1), act=(act, clip))
    ref, p = _check(model, x, what)
    assert ref.min() >= p.out.lo and ref.max() <= p.out.hi


def _random_conv(rng, x_kind=None):
    groups = int(rng.choice([1, 1, 2, 3]))
    cin, cout = groups * int(rng.integers(1, 7)), groups * int(rng.integers(1, 12))
    while True:
        kh, kw = (int(v) for v in rng.integers(1, 6, 2))
        sh, sw, dh, dw = (int(v) for v in rng.integers(1, 3, 4))
        pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        h, w = (int(v) for v in rng.integers(1, 10, 2))
        if _out_size(h, pads[0], pads[2], kh, dh, sh) >= 1 and _out_size(w, pads[1], pads[3], kw, dw, sw) >= 1:
            break
    n = int(rng.integers(1, 3))
    return _conv_case(rng, n, h, w, cin, cout, (kh, kw), (sh, sw), (dh, dw), pads, groups,
                      x_kind or str(rng.choice(X_KINDS)), str(rng.choice(["random", "extreme"])),
                      str(rng.choice(["random", "extreme", "zero"])), big=rng.integers(0, 6) == 0)


@pytest.mark.parametrize("seed", range(4))
def test_conv_2d_int16_random(seed):
    rng = np.random.default_rng(4000 + seed)
    for _ in range(8):
        _check(*_random_conv(rng)[:2], "random conv")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(16))
def test_conv_2d_int16_random_slow(seed):
    rng = np.random.default_rng(5000 + seed)
    for _ in range(24):
        model, x, what = _random_conv(rng)
        _check(model, x, what)


def test_sweep_covers_both_requantization_forms_and_the_clamps():
    """The generators reach what they claim: both forms of the vector requantization (every
    shift >= 33, or not), outputs saturated at both ends and inside, fused clamps, groups."""
    rng = np.random.default_rng(31)
    forms, seen = set(), set()
    for i in range(60):
        model, x, _ = _random_conv(rng) if i % 2 else _fc_case(rng, 3, 17, 9, big=rng.integers(0, 4) == 0)
        p = prepare_op(model, 0)
        op = model.operators[0]
        w, b = model.tensors[op.inputs[1]].data, model.tensors[op.inputs[2]].data
        ref = op_form(model, 0).reference([x, w, b], p)
        forms.add(tables32(p.out.shift, True, p.out.zero_point)[0])
        seen |= {("lo", bool((ref == -32768).any())), ("hi", bool((ref == 32767).any())),
                 ("inside", bool(((ref > -32768) & (ref < 32767)).any())),
                 ("clamp", (p.out.lo, p.out.hi) != (-32768, 32767)), ("groups", getattr(p, "groups", 1) > 1)}
    assert forms == {True, False}
    for flag in ("lo", "hi", "inside", "clamp", "groups"):
        assert (flag, True) in seen, flag


def test_ties_round_toward_plus_infinity():
    """M = 1/2 exactly (m = 2^30, n = 31) and x = 0: the bias is the sum, -3..3 give -1, -1, 0, 0,
    1, 1, 2 (SPEC.md 4.2: ties toward +infinity), through both kernels on every path."""
    bias = np.arange(-3, 4, dtype=np.int32)
    w = np.ones((7, 1), np.int8)
    expect = [-1, -1, 0, 0, 1, 1, 2]
    fc = _model(OpCode.FULLY_CONNECTED, (1, 1), w, bias, (1, 7), None, np.float32(0.5), np.float32(0.25),
                np.float32(0.25))
    ref, p = _check(fc, np.zeros((1, 1), np.int16), "fc ties")
    assert (int(p.out.multiplier[0]), int(p.out.shift[0])) == (2**30, 31)
    assert ref.ravel().tolist() == expect
    conv = _model(OpCode.CONV_2D, (1, 1, 1, 1), w.reshape(7, 1, 1, 1), bias, (1, 1, 1, 7), Conv2DOptions(),
                  np.float32(0.5), np.float32(0.25), np.float32(0.25))
    ref, _ = _check(conv, np.zeros((1, 1, 1, 1), np.int16), "conv ties")
    assert ref.ravel().tolist() == expect


# ------------------------------------------------------------------------------- end to end, refusals

def test_load_fast_matches_reference():
    """Whole models through qrt.load: "fast" (the int16 kernels) against "reference", on every
    path at 1 and 2 threads, raw int16 inputs and outputs and float ones."""
    rng = np.random.default_rng(11)
    models = [_conv_case(rng, 2, 9, 7, 12, 40, (3, 3), (2, 1), (1, 2), (1, 2, 0, 1), 2)[:2],
              _fc_case(rng, 5, 33, 300)[:2]]
    for model, x in models:
        data = qrt.to_bytes(model)
        ref_model = qrt.load(data, kernels="reference")
        want = ref_model.run(x, raw=True)
        assert want.dtype == np.int16
        xf = x.astype(np.float32) * np.float32(model.tensors[model.inputs[0].tensor].quant.scale[0])
        want_f = ref_model.run(xf)
        for isa, threads in PATHS:
            fast = qrt.load(data, kernels="fast", isa=isa, threads=threads)
            got = fast.run(x, raw=True)
            assert np.array_equal(got, want), (isa, threads)
            assert np.array_equal(fast.run(xf), want_f), (isa, threads)


def test_model_breaking_the_bound_is_refused():
    """sum |w[c]| * 2^15 + |bias[c]| > 2^31 - 1 for channel 2 only: the verifier (so the writer
    and the loader) refuses the model with InvalidModelError naming the channel; the same file
    with the bias patched over the bound is refused by qrt.load."""
    k = 520  # 520 * 127 * 2^15 > 2^31 - 1
    w = np.full((4, k), 3, np.int8)
    w[2] = 127
    model = _model(OpCode.FULLY_CONNECTED, (1, k), np.full((4, k), 3, np.int8), np.zeros(4, np.int32),
                   (1, 4), None, np.float32(1e-4), np.float32(0.01), np.float32(0.05))
    model.tensors[model.operators[0].inputs[1]].data = w
    with pytest.raises(InvalidModelError, match="output channel 2"):
        verify_model(model)
    with pytest.raises(InvalidModelError, match="output channel 2"):
        qrt.load(qrt.to_bytes(model))
    # a valid file, then its bias bytes for channel 1 replaced by one that breaks the bound
    marker = 1234567
    ok = _model(OpCode.FULLY_CONNECTED, (1, 8), np.full((4, 8), 5, np.int8),
                np.array([0, marker, 0, 0], np.int32), (1, 4), None, np.float32(1e-4), np.float32(0.01),
                np.float32(0.05))
    data = qrt.to_bytes(ok)
    assert data.count(np.int32(marker).tobytes()) == 1
    bad = data.replace(np.int32(marker).tobytes(), np.int32(INT32_MAX - 1000).tobytes())
    with pytest.raises(InvalidModelError, match="output channel 1"):
        qrt.load(bad)


def test_bad_arguments_raise_value_error():
    """The int16 kernels take int16 x and out with zero points 0 and a clamp inside int16; the
    int8 kernels still refuse int16 arrays, and packed weights are for one form only."""
    rng = np.random.default_rng(3)
    model, x, _ = _fc_case(rng, 2, 5, 7)
    p = prepare_op(model, 0)
    op = model.operators[0]
    w, b = model.tensors[op.inputs[1]].data, model.tensors[op.inputs[2]].data
    out = np.zeros((2, 5), np.int16)
    k16, k8 = gemm.KERNELS["fully_connected_int16"], gemm.KERNELS["fully_connected"]
    with pytest.raises(ValueError):
        k16.run([x.astype(np.int8), w, b], p, out)
    with pytest.raises(ValueError):
        k16.run([x, w, b], p, out.astype(np.int8))
    with pytest.raises(ValueError):
        k8.run([x, w, b], p, out)
    with pytest.raises(ValueError, match="zero point"):
        k16.run([x, w, b], dataclasses.replace(p, input_zero_point=1), out)
    with pytest.raises(ValueError, match="clamp"):
        k16.run([x, w, b], dataclasses.replace(p, out=dataclasses.replace(p.out, hi=40000)), out)
    p8 = dataclasses.replace(p, out=dataclasses.replace(p.out, lo=-128, hi=127))
    packed8 = k8.pack([x.astype(np.int8), w, b], p8)
    with pytest.raises(ValueError):
        k16.bind([x, w, b], p, out, packed=packed8)
    # the kernel's own pack and bind, as the fast kernel set calls them
    packed = k16.pack([x, w, b], p)
    step = k16.bind([x, w, b], p, out, packed=packed)
    step()
    assert np.array_equal(out, op_form(model, 0).reference([x, w, b], p))
