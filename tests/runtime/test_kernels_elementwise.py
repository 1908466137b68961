"""The compiled elementwise, data-movement and SOFTMAX kernels (qrt/kernels/elementwise.pyx,
movement.pyx, softmax.pyx; each op's kernel found as the runtime finds it, in
qrt.runtime.kernel_sets.COMPILED) are bit-exact with the NumPy reference (qrt/ops/<op>.py).

Every case is a one-op model built with ModelBuilder and checked with verify_model, so it is
a valid model; its parameters come from prepare_op. Seeded random shapes, ranks, broadcast
patterns, scales (1e-4 .. 10, so outputs saturate), zero points (-128, 127 and random), fused
activations and options. Kernel outputs are prefilled with the bitwise complement of the
reference, so an element the kernel fails to write is caught too. Each case runs twice: the
plain kernel (bind and run once), and a step bound once by bind_<name> and run three times,
the last after its run-time inputs were rewritten in place, so that nothing computed from the
data at bind time or left over from an earlier run goes unnoticed. Same-shape ADD/SUB/MUL meet
every byte pair on every instruction-set path and thread count. Bad shapes raise ValueError."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from qrt.format import (
    Activation, ConcatOptions, DType, LeakyReluOptions, LutOptions, OpCode,
    PadOptions, SoftmaxOptions, TransposeOptions,
)
from qrt.format.model import NUMPY_DTYPE, QUANT_RANGE
from qrt.kernels import isa as ISA
from qrt.kernels.plan import PyStep
from qrt.runtime.kernel_sets import COMPILED, KERNEL_SETS
from qrt.ops import OPS, op_form, prepare_op
from qrt.ops.pad import PadParams
from bench.fixtures.sample_models import all_ops_model
from tests.runtime.helpers import (Spec, assert_refused, broadcast_partner, inputs_of, one_op, rand_activation,
                                   rand_scale, rand_shape)

KERNEL = {op: COMPILED[OPS[op].kernel].run for op in (
    OpCode.ADD, OpCode.SUB, OpCode.MUL, OpCode.MAXIMUM, OpCode.MINIMUM, OpCode.REQUANTIZE, OpCode.CONCAT, OpCode.LEAKY_RELU, OpCode.PRELU,
    OpCode.LUT, OpCode.SOFTMAX, OpCode.QUANTIZE, OpCode.DEQUANTIZE, OpCode.PAD, OpCode.TRANSPOSE, OpCode.RESHAPE)}
BIND = {op: COMPILED[OPS[op].kernel].bind for op in KERNEL}


# ---------------------------------------------------------------------------- helpers

def random_values(rng, shape, dtype: DType):
    dt = NUMPY_DTYPE[dtype]
    if dt.kind == "f":
        return np.asarray(rng.standard_normal(shape) * 10, dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)


def garbage(rng, shape, dtype):
    out = np.empty(shape, dtype)
    out.reshape(-1).view(np.uint8)[...] = rng.integers(0, 256, out.nbytes, dtype=np.uint8)
    return out


def _reference_and_garbage(op, ins, p, y):
    """The reference's output, and an array holding its bitwise complement for the kernel."""
    ref = np.zeros(y.shape, NUMPY_DTYPE[y.dtype])
    ref[...] = OPS[op.opcode].reference(ins, p).reshape(y.shape)
    got = np.empty_like(ref)
    got.reshape(-1).view(np.uint8)[...] = ~ref.reshape(-1).view(np.uint8)
    return ref, got


def _assert_same(op, ref, got, view, what="kernel"):
    if view is not None:
        ref, got = ref.view(view), got.view(view)
    assert np.array_equal(ref, got), (
        f"{op.opcode.name}: {what} differs from the reference at "
        f"{np.argwhere(ref != got)[:5].tolist()}; ref {ref[ref != got][:5]} got {got[got != ref][:5]}")


def check(model, ins, *, view=None):
    """Run the reference and the kernel on `ins`; assert bit-equality; the same for a bound
    step (check_bound); return the kernel's output."""
    op = model.operators[0]
    y = model.tensors[op.outputs[0]]
    p = prepare_op(model, 0)
    ins = [np.array(x) for x in ins]
    for x in ins:  # constants come read-only from the memory-mapped file
        x.flags.writeable = False
    ref, got = _reference_and_garbage(op, ins, p, y)
    assert KERNEL[op.opcode](ins, p, got) is None
    _assert_same(op, ref, got, view)
    check_bound(model, p, ins, view=view)
    return got


def check_bound(model, p, ins, *, view=None):
    """A step bound once by bind_<name> matches the reference at every run: twice as bound (out
    scrambled in between: nothing carries over from one run to the next), then after every
    run-time input was rewritten in place (the step reads its inputs where they lie; nothing
    made from their values at bind time). Constants stay read-only."""
    op = model.operators[0]
    y = model.tensors[op.outputs[0]]
    rng = np.random.default_rng(sum(x.size for x in ins))
    live = [model.tensors[t].data is None for t in op.inputs]
    ins = [np.array(x) for x in ins]
    for x, is_live in zip(ins, live):
        x.flags.writeable = is_live
    got = np.empty(y.shape, NUMPY_DTYPE[y.dtype])
    step = BIND[op.opcode](ins, p, got)
    assert not isinstance(step, PyStep)
    for run in range(3):
        if run == 2:
            for x, t, is_live in zip(ins, op.inputs, live):
                if is_live:
                    x[...] = random_values(rng, x.shape, model.tensors[t].dtype)
        ref, scrambled = _reference_and_garbage(op, ins, p, y)
        got[...] = scrambled
        assert step() is None
        _assert_same(op, ref, got, view, f"bound step (run {run + 1})")


inputs_of = functools.partial(inputs_of, draw=random_values)


def rand_zp(rng, dtype=DType.INT8):
    lo, hi = QUANT_RANGE[dtype]
    return int(rng.choice([lo, hi, int(rng.integers(lo, hi + 1))]))


def int8_act(rng, shape):
    return Spec(shape, DType.INT8, rand_scale(rng), rand_zp(rng))


# ---------------------------------------------------------------------------- ADD / SUB / MUL / MAXIMUM / MINIMUM

BINARY = [OpCode.ADD, OpCode.SUB, OpCode.MUL, OpCode.MAXIMUM, OpCode.MINIMUM]


@pytest.mark.parametrize("opcode", BINARY)
def test_binary_matches_reference(opcode):
    rng = np.random.default_rng(int(opcode) + 100)
    for case in range(50):
        out_shape = rand_shape(rng)
        sa, sb = broadcast_partner(rng, out_shape), broadcast_partner(rng, out_shape)
        if rng.random() < 0.5:
            sa, sb = sb, sa
        if case % 5 == 0:
            sa = sb = out_shape  # the fast path
        shape = np.broadcast_shapes(sa, sb)
        a, b = int8_act(rng, sa), int8_act(rng, sb)
        if rng.random() < 0.3:  # a constant operand
            b.data = random_values(rng, sb, DType.INT8)
        if case % 7 == 0:  # same quantization on both sides
            b.scale, b.zp = a.scale, a.zp
        act, clip = rand_activation(rng)
        model = one_op(opcode, [a, b], int8_act(rng, shape), activation=act, clip=clip)
        check(model, inputs_of(model, rng))


def test_binary_large_and_saturating():
    """Longer rows, per-channel operands and extreme scale ratios (most outputs saturate)."""
    rng = np.random.default_rng(7)
    cases = [((2, 17, 19, 33), (33,)), ((2, 17, 19, 33), (2, 1, 1, 33)), ((5, 300), (5, 1)),
             ((4, 1, 6, 1), (1, 3, 1, 7)), ((1000,), ()), ((3, 64, 64), (3, 64, 64))]
    for opcode in BINARY:
        for sa, sb in cases:
            for scales in ((1e-4, 10.0, 1e-4), (10.0, 10.0, 1e-4), (1e-4, 1e-4, 10.0)):
                shape = np.broadcast_shapes(sa, sb)
                a = Spec(sa, DType.INT8, scales[0], -128)
                b = Spec(sb, DType.INT8, scales[1], 127)
                model = one_op(opcode, [a, b], Spec(shape, DType.INT8, scales[2], int(rng.integers(-128, 128))))
                check(model, inputs_of(model, rng))
                model = one_op(opcode, [b, a], Spec(shape, DType.INT8, scales[2], 0), activation=Activation.RELU)
                check(model, inputs_of(model, rng))


@pytest.mark.parametrize("opcode", [OpCode.ADD, OpCode.SUB, OpCode.MUL])
def test_binary_every_byte_pair_on_every_path(opcode):
    """Same-shape operands take the row kernel of simd/eltwise.h: every (a, b) byte pair, on
    every instruction-set path, on 1 and 2 threads (65536 elements and more are split), with
    lengths that leave vector tails; scales that collapse, saturate and tie, with output shifts
    on both sides of 33 (the AVX2 path's 32-bit rounding applies from 33 on)."""
    rng = np.random.default_rng(60 + int(opcode))
    a_bytes, b_bytes = (v.astype(np.int8).reshape(-1) for v in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128),
                                                                           indexing="ij"))
    shifts = set()
    for scales in ((0.05, 0.03, 0.06), (1e-4, 10.0, 1e-4), (10.0, 1e-4, 10.0), (0.02, 0.02, 0.01),
                   (10.0, 10.0, 1e-5)):
        for length in (65536, 65536 + 13, 1003):
            act, clip = rand_activation(rng)
            model = one_op(opcode, [Spec((length,), DType.INT8, scales[0], rand_zp(rng)),
                                    Spec((length,), DType.INT8, scales[1], rand_zp(rng))],
                           Spec((length,), DType.INT8, scales[2], rand_zp(rng)), activation=act, clip=clip)
            p = prepare_op(model, 0)
            shifts.add(p.out.shift[0] >= 33)
            ins = [np.resize(a_bytes, length), np.resize(b_bytes, length)]
            for isa in ISA.supported():
                for threads in (1, 2):
                    ref, got = _reference_and_garbage(model.operators[0], ins, p, model.tensors[2])
                    KERNEL[opcode](ins, p, got, isa=isa, threads=threads)
                    _assert_same(model.operators[0], ref, got, None, f"{isa} path on {threads} threads")
    assert shifts == {True, False}


@pytest.mark.parametrize("opcode", [OpCode.MAXIMUM, OpCode.MINIMUM])
def test_extremum_every_byte_pair_on_every_path(opcode):
    """MAXIMUM / MINIMUM: every (a, b) byte pair, on every path and thread count, with operand
    scales below, at and above the output's (rescales that saturate, tie and keep the bytes),
    fused clamps, and both operands broadcast against rows and columns."""
    rng = np.random.default_rng(80 + int(opcode))
    a_bytes, b_bytes = (v.astype(np.int8).reshape(-1) for v in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128),
                                                                           indexing="ij"))
    for scales in ((0.05, 0.03, 0.06), (1e-4, 10.0, 1e-4), (0.02, 0.02, 0.02), (0.01, 0.04, 0.02)):
        act, clip = rand_activation(rng)
        model = one_op(opcode, [Spec((65536,), DType.INT8, scales[0], rand_zp(rng)),
                                Spec((65536,), DType.INT8, scales[1], rand_zp(rng))],
                       Spec((65536,), DType.INT8, scales[2], rand_zp(rng)), activation=act, clip=clip)
        p = prepare_op(model, 0)
        for isa in ISA.supported():
            for threads in (1, 2):
                ref, got = _reference_and_garbage(model.operators[0], [a_bytes, b_bytes], p, model.tensors[2])
                KERNEL[opcode]([a_bytes, b_bytes], p, got, isa=isa, threads=threads)
                _assert_same(model.operators[0], ref, got, None, f"{isa} path on {threads} threads")
    for sa, sb in (((256, 1), (1, 256)), ((1, 256), (256, 1)), ((256, 256), ()), ((), (256, 256))):
        model = one_op(opcode, [Spec(sa, DType.INT8, 0.05, 3), Spec(sb, DType.INT8, 0.07, -9)],
                       Spec((256, 256), DType.INT8, 0.06, 1))
        ins = [a_bytes.reshape(256, 256)[:sa[0], :sa[1]] if sa else a_bytes[:1].reshape(()),
               b_bytes.reshape(256, 256)[:sb[0], :sb[1]] if sb else b_bytes[:1].reshape(())]
        check(model, [np.ascontiguousarray(x) for x in ins])


def test_extremum_is_the_rescaled_max_and_min():
    """Independent of the reference: with every operand already in the output's quantization
    the ops are numpy.maximum / numpy.minimum of the bytes, clamped by a fused RELU."""
    x = np.arange(-128, 128, dtype=np.int8)
    ins = [x, x[::-1].copy()]
    for opcode, fn in ((OpCode.MAXIMUM, np.maximum), (OpCode.MINIMUM, np.minimum)):
        same = [Spec((256,), DType.INT8, 0.1, -5), Spec((256,), DType.INT8, 0.1, -5)]
        got = check(one_op(opcode, same, Spec((256,), DType.INT8, 0.1, -5)), ins)
        assert np.array_equal(got, fn(*ins))
        got = check(one_op(opcode, same, Spec((256,), DType.INT8, 0.1, -5), activation=Activation.RELU), ins)
        assert np.array_equal(got, np.maximum(fn(*ins), -5))


@pytest.mark.parametrize("opcode", [OpCode.ADD, OpCode.MUL])
def test_binary_output_zero_point_at_the_int32_ends(opcode):
    """Bound directly (a file keeps int8 zero points in int8), the kernels take any int32 output
    zero point: the vector paths' 32-bit rounding must step aside where lo - zp or hi - zp
    would wrap."""
    import dataclasses

    rng = np.random.default_rng(90 + int(opcode))
    model = one_op(opcode, [Spec((64,), DType.INT8, 0.05, 3), Spec((64,), DType.INT8, 0.04, -7)],
                   Spec((64,), DType.INT8, 0.02, 0))
    base = prepare_op(model, 0)
    ins = [random_values(rng, (64,), DType.INT8), random_values(rng, (64,), DType.INT8)]
    for zp in (-2**31, -2**31 + 5, -65537, 65537, 2**31 - 1):
        p = dataclasses.replace(base, out=dataclasses.replace(base.out, zero_point=zp))
        ref = OPS[opcode].reference(ins, p).astype(np.int8)
        for isa in ISA.supported():
            got = np.zeros(64, np.int8)
            KERNEL[opcode](ins, p, got, isa=isa)
            assert np.array_equal(got, ref), (zp, isa)


# ---------------------------------------------------------------------------- REQUANTIZE

def test_requantize_matches_reference():
    rng = np.random.default_rng(11)
    dtypes = [DType.INT8, DType.UINT8]
    for case in range(60):
        shape = rand_shape(rng)
        din, dout = dtypes[case % 2], dtypes[(case // 2) % 2]
        x = Spec(shape, din, rand_scale(rng), rand_zp(rng, din))
        y = Spec(shape, dout, rand_scale(rng), rand_zp(rng, dout))
        act, clip = rand_activation(rng)
        if case % 6 == 0 and din == dout:  # identity: same quantization, no clamp
            y.scale, y.zp, act = x.scale, x.zp, Activation.NONE
        model = one_op(OpCode.REQUANTIZE, [x], y, activation=act, clip=clip)
        if case % 6 == 0 and din == dout:
            assert prepare_op(model, 0).identity
        check(model, inputs_of(model, rng))


def test_requantize_every_input_value():
    rng = np.random.default_rng(12)
    for din in (DType.INT8, DType.UINT8):
        for dout in (DType.INT8, DType.UINT8):
            for scales in ((1e-4, 10.0), (10.0, 1e-4), (0.05, 0.05), (0.3, 0.7)):
                x = Spec((256,), din, scales[0], rand_zp(rng, din))
                model = one_op(OpCode.REQUANTIZE, [x], Spec((256,), dout, scales[1], rand_zp(rng, dout)))
                values = np.arange(256, dtype=np.uint8).view(NUMPY_DTYPE[din])
                check(model, [values])


# ---------------------------------------------------------------------------- CONCAT

def test_concat_matches_reference():
    rng = np.random.default_rng(13)
    for case in range(50):
        rank = int(rng.integers(1, 6))
        base = [int(d) for d in rng.integers(1, 6, rank)]
        axis = int(rng.integers(-rank, rank))
        ax = axis % rank
        k = int(rng.integers(1, 5))
        y = int8_act(rng, ())
        specs = []
        for _ in range(k):
            s = list(base)
            s[ax] = int(rng.integers(1, 5))
            mode = case % 3
            if mode == 0:  # identical to the output: copied
                specs.append(Spec(s, DType.INT8, y.scale, y.zp))
            elif mode == 1:  # mixed: some copied, some rescaled
                specs.append(Spec(s, DType.INT8, y.scale, y.zp) if rng.random() < 0.5 else int8_act(rng, s))
            else:
                specs.append(int8_act(rng, s))
        shape = list(base)
        shape[ax] = sum(sp.shape[ax] for sp in specs)
        y.shape = tuple(shape)
        model = one_op(OpCode.CONCAT, specs, y, ConcatOptions(axis))
        if case % 3 == 0:
            assert all(q.identity for q in prepare_op(model, 0).inputs)
        check(model, inputs_of(model, rng))


# ---------------------------------------------------------------------------- LEAKY_RELU / PRELU

def test_leaky_relu_matches_reference():
    rng = np.random.default_rng(14)
    alphas = [0.0, -0.0, 0.1, 0.01, -0.2, -1.5, 1.0, 3.0, 1e-6, -1e-6, 0.125, 7.5]
    for case in range(48):
        shape = rand_shape(rng)
        alpha = alphas[case % len(alphas)] if case < 2 * len(alphas) else float(rng.uniform(-4, 4))
        model = one_op(OpCode.LEAKY_RELU, [int8_act(rng, shape)], int8_act(rng, shape), LeakyReluOptions(alpha))
        check(model, inputs_of(model, rng))


def test_leaky_relu_negative_multiplier_ties():
    """Signed slopes with exact ties: rs rounds toward +infinity for negative products too."""
    x = np.arange(-128, 128, dtype=np.int8)
    for alpha in (-0.5, -0.25, -1.5, -0.75, 0.5, 0.25):
        model = one_op(OpCode.LEAKY_RELU, [Spec((256,), DType.INT8, 0.5, 0)], Spec((256,), DType.INT8, 0.5, 0),
                       LeakyReluOptions(alpha))
        p = prepare_op(model, 0)
        assert (int(p.neg_multiplier) < 0) == (alpha < 0)
        check(model, [x])


def test_prelu_matches_reference():
    rng = np.random.default_rng(16)
    for case in range(48):
        shape = rand_shape(rng, max_rank=5)
        if not shape:
            shape = (3,)
        mode = case % 4
        if mode == 0:  # per channel (last dimension)
            ashape = (shape[-1],)
        elif mode == 1:  # per channel with leading ones
            ashape = (1,) * (len(shape) - 1) + (shape[-1],)
        elif mode == 2:  # the full shape
            ashape = shape
        else:
            ashape = broadcast_partner(rng, shape)
        alpha = Spec(ashape, DType.INT8, rand_scale(rng) / 10, rand_zp(rng),
                     data=random_values(rng, ashape, DType.INT8))
        model = one_op(OpCode.PRELU, [int8_act(rng, shape), alpha], int8_act(rng, shape))
        check(model, inputs_of(model, rng))


def test_prelu_many_elements_per_slope():
    """Large inputs take the per-alpha-element table path (rows with one slope, and slopes
    varying along the row)."""
    rng = np.random.default_rng(17)
    for shape, ashape in (((2, 32, 32, 8), (8,)), ((4, 32, 32, 8), (32, 1, 1)), ((4, 2048), (4, 1)),
                          ((3, 40, 50), (40, 50)), ((2, 32, 32, 8), (1,))):
        for ascale in (1e-3, 0.05, 1.0):
            alpha = Spec(ashape, DType.INT8, ascale, rand_zp(rng), data=random_values(rng, ashape, DType.INT8))
            model = one_op(OpCode.PRELU, [int8_act(rng, shape), alpha], int8_act(rng, shape))
            check(model, inputs_of(model, rng))


# ---------------------------------------------------------------------------- LUT

def test_lut_matches_reference():
    rng = np.random.default_rng(17)
    for case in range(20):
        shape = rand_shape(rng)
        table = Spec((256,), DType.INT8, data=random_values(rng, (256,), DType.INT8))
        model = one_op(OpCode.LUT, [int8_act(rng, shape), table], int8_act(rng, shape), LutOptions("f"))
        check(model, inputs_of(model, rng))
    model = one_op(OpCode.LUT, [int8_act(rng, (256,)), table], int8_act(rng, (256,)), LutOptions("f"))
    got = check(model, [np.arange(-128, 128, dtype=np.int8), table.data])
    assert np.array_equal(got, table.data)


# ---------------------------------------------------------------------------- SOFTMAX

def test_softmax_matches_reference():
    rng = np.random.default_rng(18)
    for case in range(50):
        shape = rand_shape(rng, max_rank=4, max_dim=7)
        if not shape:
            shape = (int(rng.integers(1, 8)),)
        rank = len(shape)
        axis = -1 if case % 3 == 0 else int(rng.integers(-rank, rank))
        beta = float(np.float32(10.0 ** rng.uniform(-2, 1)))
        x = int8_act(rng, shape)
        model = one_op(OpCode.SOFTMAX, [x], Spec(shape, DType.INT8, 1 / 256, -128), SoftmaxOptions(axis, beta))
        ins = inputs_of(model, rng)
        if case % 5 == 0:  # narrow range: many ties at the maximum
            ins = [rng.integers(-2, 2, shape, dtype=np.int8)]
        check(model, ins)


def test_softmax_long_axes():
    rng = np.random.default_rng(19)
    # up to rows whose totals near 2^49: the division by a reciprocal stays exact
    for shape, axis in (((2, 1000), -1), ((1000, 3), 0), ((3, 257, 5), 1), ((1, 4096), 1), ((2, 300000), 1)):
        for scale in (1e-4, 0.05, 10.0):
            model = one_op(OpCode.SOFTMAX, [Spec(shape, DType.INT8, scale, 0)], Spec(shape, DType.INT8, 1 / 256, -128),
                           SoftmaxOptions(axis, 1.0))
            check(model, inputs_of(model, rng))


# ---------------------------------------------------------------------------- QUANTIZE / DEQUANTIZE

SPECIALS = np.array([np.nan, -np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e30, -1e30, 0.0, -0.0,
                     1e-45, -1e-45, 1e-38, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 127.5, -128.5, 255.5,
                     32767.5, -32768.5, 1e6, -1e6], np.float32)


@pytest.mark.parametrize("dtype", [DType.INT8, DType.UINT8, DType.INT16])
def test_quantize_matches_reference(dtype):
    rng = np.random.default_rng(20 + int(dtype))
    for case in range(40):
        shape = rand_shape(rng)
        scale = rand_scale(rng) if case % 4 else 1.0
        model = one_op(OpCode.QUANTIZE, [Spec(shape, DType.FLOAT32)], Spec(shape, dtype, scale, rand_zp(rng, dtype)))
        n = math.prod(shape)
        x = (rng.standard_normal(n) * scale * 10.0 ** rng.uniform(0, 5)).astype(np.float32)
        if case % 2:  # exact ties k + 0.5 (in units of the scale) and special values
            ties = ((rng.integers(-300, 300, n) + 0.5) * scale).astype(np.float32)
            x = np.where(rng.random(n) < 0.5, ties, rng.choice(SPECIALS, n))
        check(model, [x.reshape(shape)])


def test_quantize_special_values_saturate():
    x = np.concatenate([SPECIALS, SPECIALS * np.float32(1e-3)])
    for dtype in (DType.INT8, DType.UINT8, DType.INT16):
        for scale in (1e-4, 1e-3, 1.0, 10.0):
            for zp in QUANT_RANGE[dtype] + (0,) * (dtype != DType.UINT8):
                model = one_op(OpCode.QUANTIZE, [Spec(x.shape, DType.FLOAT32)], Spec(x.shape, dtype, scale, zp))
                got = check(model, [x])
                assert got[0] == zp and got[2] == QUANT_RANGE[dtype][1] and got[3] == QUANT_RANGE[dtype][0]


@pytest.mark.parametrize("dtype", [DType.INT8, DType.UINT8, DType.INT16])
def test_graph_boundary_conversions_every_path_layout_and_thread_count(dtype):
    """The graph boundary's QUANTIZE (float NCHW -> integer NHWC) and DEQUANTIZE (back), as
    qrt.load binds them: every path, 1 and 2 threads, both layouts; pixel counts around the
    vector width (8) and the work item (256 pixels), channel counts from 1 to 65; special
    values and exact ties. feed()/into() point a bound step at a new float array."""
    from qrt.ops.dequantize import DequantizeParams
    from qrt.ops.quantize import QuantizeParams

    rng = np.random.default_rng(40 + int(dtype))
    lo, hi = QUANT_RANGE[dtype]
    for n, c, h, w in [(1, 1, 1, 1), (1, 3, 1, 7), (2, 5, 2, 4), (1, 17, 3, 3), (1, 64, 16, 16),
                       (3, 2, 1, 257), (1, 65, 10, 60), (2, 1, 7, 37)]:
        scale = rand_scale(rng)
        zp = rand_zp(rng, dtype)
        qp, dp = QuantizeParams(scale, zp, lo, hi), DequantizeParams(np.float32(scale), zp)
        x = (rng.standard_normal((n, c, h, w)) * scale * 200).astype(np.float32)
        ties = ((rng.integers(-300, 300, x.shape) + 0.5) * scale).astype(np.float32)
        x = np.where(rng.random(x.shape) < 0.3, ties, x)
        x = np.where(rng.random(x.shape) < 0.1, rng.choice(SPECIALS, x.shape), x).astype(np.float32)
        q = random_values(rng, (n, h, w, c), dtype)
        for nchw in (True, False):
            xf = x if nchw else x.reshape(n, h, w, c)
            want_q = OPS[OpCode.QUANTIZE].reference([xf.transpose(0, 2, 3, 1) if nchw else xf], qp).astype(q.dtype)
            dq = OPS[OpCode.DEQUANTIZE].reference([q], dp)
            want_f = dq.transpose(0, 3, 1, 2) if nchw else dq
            for isa in ISA.supported():
                for threads in (1, 2):
                    got_q = np.full(q.shape, 7, q.dtype)
                    step = COMPILED["quantize"].bind([np.zeros_like(xf)], qp, got_q, isa=isa, threads=threads, nchw=nchw)
                    feed = np.array(xf)
                    feed.flags.writeable = False  # a user's array may be read-only
                    step.feed(feed)
                    step()
                    np.testing.assert_array_equal(got_q, want_q, err_msg=f"quantize {isa} {threads} {nchw}")
                    got_f = np.full(want_f.shape, np.nan, np.float32)
                    step = COMPILED["dequantize"].bind([q], dp, np.empty_like(got_f), isa=isa, threads=threads, nchw=nchw)
                    step.into(got_f)
                    step()
                    np.testing.assert_array_equal(got_f.view(np.uint32), want_f.view(np.uint32),
                                                  err_msg=f"dequantize {isa} {threads} {nchw}")
    step = COMPILED["quantize"].bind([np.zeros((1, 2, 3, 4), np.float32)], qp, np.empty((1, 3, 4, 2), q.dtype), nchw=True)
    for bad in (np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 4, 3), np.float32), np.zeros((1, 4, 3, 2), np.float32).transpose(0, 3, 2, 1)):
        with pytest.raises(ValueError, match="C-contiguous float32 array of shape"):
            step.feed(bad)
    with pytest.raises(ValueError, match="must hold the same tensor"):
        COMPILED["quantize"].bind([np.zeros((1, 2, 3, 4), np.float32)], qp, np.empty((1, 2, 3, 4), q.dtype), nchw=True)


def test_boundary_quantize_reports_every_non_finite_value():
    """The boundary's QUANTIZE notices NaN, +inf and -inf wherever they sit (vector body,
    pixel tails, channel tails of the byte transpose, int16's tile, a second thread's share),
    on every path, and nothing for finite values up to float32's largest; its output is the
    reference's all the same."""
    from qrt.ops.quantize import QuantizeParams

    rng = np.random.default_rng(44)
    fmax = np.finfo(np.float32).max
    for dtype in (DType.INT8, DType.INT16):
        lo, hi = QUANT_RANGE[dtype]
        qp = QuantizeParams(0.05, 3, lo, hi)
        for n, c, h, w in [(1, 1, 1, 1), (1, 1, 5, 7), (1, 3, 4, 4), (2, 11, 3, 5), (1, 9, 16, 20), (1, 3, 160, 160)]:
            size = n * c * h * w
            for nchw in (True, False):
                shape = (n, c, h, w) if nchw else (n, h, w, c)
                spots = sorted({0, size - 1, int(rng.integers(size)), size // 2})
                cases = [(None, 0.0)] + [(i, v) for i in spots for v in (np.nan, np.inf, -np.inf)]
                for spot, value in cases:
                    x = (rng.standard_normal(size) * 40).astype(np.float32)
                    x[rng.random(size) < 0.2] = fmax * np.float32(rng.choice([-1, 1]))
                    if spot is not None:
                        x[spot] = value
                    x = x.reshape(shape)
                    want = OPS[OpCode.QUANTIZE].reference([x.transpose(0, 2, 3, 1) if nchw else x], qp)
                    for isa in ISA.supported():
                        for threads in (1, 2):
                            got = np.zeros(want.shape, NUMPY_DTYPE[dtype])
                            step = COMPILED["quantize"].bind([x], qp, got, isa=isa, threads=threads, nchw=nchw)
                            step()
                            what = f"{dtype.name} {shape} nchw={nchw} {isa} x{threads} value {value} at {spot}"
                            assert step.nonfinite == (spot is not None), what
                            np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.mark.parametrize("dtype", [DType.INT8, DType.UINT8, DType.INT16])
def test_dequantize_matches_reference(dtype):
    rng = np.random.default_rng(30 + int(dtype))
    for case in range(25):
        shape = rand_shape(rng)
        model = one_op(OpCode.DEQUANTIZE, [Spec(shape, dtype, rand_scale(rng), rand_zp(rng, dtype))],
                       Spec(shape, DType.FLOAT32))
        check(model, inputs_of(model, rng), view=np.uint32)
    lo, hi = QUANT_RANGE[dtype]
    every = np.arange(lo, hi + 1).astype(NUMPY_DTYPE[dtype])
    for scale in (1e-4, 0.1, 0.3, 7.77):
        model = one_op(OpCode.DEQUANTIZE, [Spec(every.shape, dtype, scale, rand_zp(rng, dtype))],
                       Spec(every.shape, DType.FLOAT32))
        check(model, [every], view=np.uint32)


# ---------------------------------------------------------------------------- PAD / TRANSPOSE / RESHAPE

def test_pad_matches_reference():
    rng = np.random.default_rng(40)
    for case in range(50):
        shape = rand_shape(rng) or (3,)  # rank 0: see test_pad_rank_0
        rank = len(shape)
        pads = [int(v) for v in rng.integers(0, 4, 2 * rank)]
        if case % 4 == 0:  # some dimensions unpadded (coalesced)
            pads = [v if rng.random() < 0.4 else 0 for v in pads]
        x = int8_act(rng, shape)
        out = tuple(d + pads[k] + pads[rank + k] for k, d in enumerate(shape))
        model = one_op(OpCode.PAD, [x], Spec(out, DType.INT8, x.scale, x.zp), PadOptions(tuple(pads)))
        check(model, inputs_of(model, rng))


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32, np.int64, np.uint8])
def test_pad_wider_elements(dtype):
    """PAD models are int8 (SPEC 2.13.9), but the kernel moves elements of any size; checked
    against the reference directly."""
    rng = np.random.default_rng(44)
    for case in range(10):
        shape = rand_shape(rng) or (2,)
        rank = len(shape)
        pads = tuple(int(v) if rng.random() < 0.6 else 0 for v in rng.integers(0, 3, 2 * rank))
        p = PadParams(pads, int(rng.integers(0, 100)))
        x = np.asarray(rng.integers(-100, 100, shape)).astype(dtype)
        ref = OPS[OpCode.PAD].reference([x], p)
        got = garbage(rng, ref.shape, ref.dtype)
        COMPILED["pad"].run([x], p, got)
        assert np.array_equal(ref.view(np.uint8), got.view(np.uint8))


def test_pad_rank_0():
    """A rank-0 PAD (no pads) is a valid model and a copy. The reference cannot run it (np.pad
    refuses the empty pad list: "`pad_width` must be of integral type"), so the kernel is checked
    against the definition."""
    rng = np.random.default_rng(43)
    x = int8_act(rng, ())
    model = one_op(OpCode.PAD, [x], Spec((), DType.INT8, x.scale, x.zp), PadOptions(()))
    v = np.array(-77, np.int8)
    out = garbage(rng, (), np.int8)
    COMPILED["pad"].run([v], prepare_op(model, 0), out)
    assert out == v


ANY_DTYPES = [DType.INT8, DType.UINT8, DType.INT16, DType.INT32, DType.INT64, DType.FLOAT32]


def _any_spec(rng, shape, dtype):
    if dtype in (DType.INT8, DType.UINT8, DType.INT16, DType.INT32) and rng.random() < 0.7:
        return Spec(shape, dtype, rand_scale(rng), rand_zp(rng, dtype) if dtype != DType.INT32 else 0)
    return Spec(shape, dtype)


def test_transpose_matches_reference():
    rng = np.random.default_rng(41)
    for case in range(60):
        shape = rand_shape(rng, max_rank=8 if case % 10 == 0 else 6, max_dim=4 if case % 10 == 0 else 6)
        perm = tuple(int(v) for v in rng.permutation(len(shape)))
        dtype = ANY_DTYPES[case % len(ANY_DTYPES)]
        x = _any_spec(rng, shape, dtype)
        y = Spec(tuple(shape[k] for k in perm), dtype, x.scale, x.zp)
        model = one_op(OpCode.TRANSPOSE, [x], y, TransposeOptions(perm))
        check(model, inputs_of(model, rng))
    for shape, perm in (((1, 56, 56, 64), (0, 3, 1, 2)), ((1, 64, 56, 56), (0, 2, 3, 1)), ((300, 200), (1, 0)),
                        ((3, 4, 5), (1, 0, 2)), ((3, 4, 5), (2, 1, 0)), ((70, 3, 45), (2, 1, 0)),
                        ((2, 3, 4, 5), (3, 1, 2, 0)), ((2, 3, 4, 5), (0, 2, 1, 3))):
        for dtype in ANY_DTYPES:  # the innermost dimension kept (row copies) or moved (tiles)
            x = _any_spec(rng, shape, dtype)
            y = Spec(tuple(shape[k] for k in perm), dtype, x.scale, x.zp)
            model = one_op(OpCode.TRANSPOSE, [x], y, TransposeOptions(perm))
            check(model, inputs_of(model, rng))


def test_reshape_matches_reference():
    rng = np.random.default_rng(42)
    for case in range(30):
        shape = rand_shape(rng)
        n = math.prod(shape)
        new = list(rng.permutation(list(shape) + [1] * int(rng.integers(0, 3))))
        if case % 3 == 0:
            new = [n]
        dtype = ANY_DTYPES[case % len(ANY_DTYPES)]
        x = _any_spec(rng, shape, dtype)
        model = one_op(OpCode.RESHAPE, [x], Spec(tuple(int(d) for d in new), dtype, x.scale, x.zp))
        check(model, inputs_of(model, rng))


# ---------------------------------------------------------------------------- bad calls

def _model_and_params(opcode, ins_specs, out_spec, options=None):
    model = one_op(opcode, ins_specs, out_spec, options)
    return model, prepare_op(model, 0)


def _bad_cases():
    """(name, kernel, ins, params, out) that break a shape or dtype rule: each must raise ValueError."""
    rng = np.random.default_rng(50)
    i8 = lambda *s: rng.integers(-128, 128, s, dtype=np.int8)  # noqa: E731
    cases = []
    _, p = _model_and_params(OpCode.ADD, [int8_act(rng, (4, 3)), int8_act(rng, (3,))], int8_act(rng, (4, 3)))
    cases += [("add out too big", COMPILED["add"].run, [i8(4, 3), i8(3)], p, np.empty((2, 4, 3), np.int8)),
              ("add out too small", COMPILED["add"].run, [i8(4, 3), i8(3)], p, np.empty((4, 1), np.int8)),
              ("add no broadcast", COMPILED["add"].run, [i8(4, 3), i8(2)], p, np.empty((4, 3), np.int8)),
              ("add out not broadcast", COMPILED["add"].run, [i8(4, 1), i8(1, 3)], p, np.empty((4, 1), np.int8)),
              ("add out not contiguous", COMPILED["add"].run, [i8(4, 3), i8(3)], p, np.empty((3, 4), np.int8).T),
              ("add wrong dtype", COMPILED["add"].run, [i8(4, 3).view(np.uint8), i8(3)], p, np.empty((4, 3), np.int8))]
    _, p = _model_and_params(OpCode.MUL, [int8_act(rng, (4, 3)), int8_act(rng, (4, 3))], int8_act(rng, (4, 3)))
    cases += [("mul mismatch", COMPILED["mul"].run, [i8(4, 3), i8(3, 4)], p, np.empty((4, 3), np.int8)),
              ("mul rank 9", COMPILED["mul"].run, [i8(*[1] * 9), i8(1)], p, np.empty([1] * 9, np.int8))]
    _, p = _model_and_params(OpCode.REQUANTIZE, [int8_act(rng, (5,))], int8_act(rng, (5,)))
    cases += [("requantize mismatch", COMPILED["requantize"].run, [i8(5)], p, np.empty((6,), np.int8)),
              ("requantize int16", COMPILED["requantize"].run, [i8(5).astype(np.int16)], p, np.empty((5,), np.int8))]
    y = int8_act(rng, (2, 5))
    _, p = _model_and_params(OpCode.CONCAT, [int8_act(rng, (2, 2)), int8_act(rng, (2, 3))], y, ConcatOptions(1))
    cases += [("concat sum", COMPILED["concat"].run, [i8(2, 2), i8(2, 4)], p, np.empty((2, 5), np.int8)),
              ("concat other dim", COMPILED["concat"].run, [i8(2, 2), i8(3, 3)], p, np.empty((2, 5), np.int8)),
              ("concat rank", COMPILED["concat"].run, [i8(2, 2), i8(2, 3, 1)], p, np.empty((2, 5), np.int8)),
              ("concat count", COMPILED["concat"].run, [i8(2, 5)], p, np.empty((2, 5), np.int8))]
    alpha = Spec((3,), DType.INT8, 0.01, 0, data=i8(3))
    _, p = _model_and_params(OpCode.PRELU, [int8_act(rng, (2, 3)), alpha], int8_act(rng, (2, 3)))
    cases += [("prelu alpha does not broadcast", COMPILED["slope"].run, [i8(2, 4), alpha.data], p, np.empty((2, 4), np.int8)),
              ("prelu out mismatch", COMPILED["slope"].run, [i8(2, 3), alpha.data], p, np.empty((3, 2), np.int8))]
    _, p = _model_and_params(OpCode.LEAKY_RELU, [int8_act(rng, (4,))], int8_act(rng, (4,)), LeakyReluOptions(0.1))
    cases += [("leaky mismatch", COMPILED["slope"].run, [i8(4)], p, np.empty((5,), np.int8))]
    cases += [("lut short table", COMPILED["lut"].run, [i8(4), i8(255)], None, np.empty((4,), np.int8)),
              ("lut mismatch", COMPILED["lut"].run, [i8(4), i8(256)], None, np.empty((2, 2), np.int8))]
    _, p = _model_and_params(OpCode.SOFTMAX, [int8_act(rng, (2, 6))], Spec((2, 6), DType.INT8, 1 / 256, -128),
                             SoftmaxOptions(1, 1.0))
    cases += [("softmax mismatch", COMPILED["softmax"].run, [i8(2, 6)], p, np.empty((2, 5), np.int8)),
              ("softmax rank", COMPILED["softmax"].run, [i8(12)], p, np.empty((12,), np.int8))]
    _, p = _model_and_params(OpCode.QUANTIZE, [Spec((3,), DType.FLOAT32)], int8_act(rng, (3,)))
    cases += [("quantize mismatch", COMPILED["quantize"].run, [np.zeros(4, np.float32)], p, np.empty((3,), np.int8)),
              ("quantize float64", COMPILED["quantize"].run, [np.zeros(3)], p, np.empty((3,), np.int8)),
              ("quantize int32 out", COMPILED["quantize"].run, [np.zeros(3, np.float32)], p, np.empty((3,), np.int32))]
    _, p = _model_and_params(OpCode.DEQUANTIZE, [int8_act(rng, (3,))], Spec((3,), DType.FLOAT32))
    cases += [("dequantize mismatch", COMPILED["dequantize"].run, [i8(3)], p, np.empty((4,), np.float32)),
              ("dequantize float64 out", COMPILED["dequantize"].run, [i8(3)], p, np.empty((3,), np.float64))]
    x = int8_act(rng, (2, 3))
    _, p = _model_and_params(OpCode.PAD, [x], Spec((3, 5), DType.INT8, x.scale, x.zp), PadOptions((1, 1, 0, 1)))
    cases += [("pad out", COMPILED["pad"].run, [i8(2, 3)], p, np.empty((3, 6), np.int8)),
              ("pad rank", COMPILED["pad"].run, [i8(6)], p, np.empty((9,), np.int8))]
    _, p = _model_and_params(OpCode.TRANSPOSE, [Spec((2, 3, 4), DType.INT8, 0.1, 0)],
                             Spec((4, 2, 3), DType.INT8, 0.1, 0), TransposeOptions((2, 0, 1)))
    cases += [("transpose out", COMPILED["transpose"].run, [i8(2, 3, 4)], p, np.empty((2, 3, 4), np.int8)),
              ("transpose rank", COMPILED["transpose"].run, [i8(6, 4)], p, np.empty((4, 6), np.int8)),
              ("transpose itemsize", COMPILED["transpose"].run, [i8(2, 3, 4)], p, np.empty((4, 2, 3), np.int16))]
    cases += [("reshape count", COMPILED["reshape"].run, [i8(2, 3)], None, np.empty((7,), np.int8)),
              ("reshape itemsize", COMPILED["reshape"].run, [i8(2, 3)], None, np.empty((6,), np.int16))]
    return cases


BAD_CASES = _bad_cases()


@pytest.mark.parametrize("name, kernel, ins, p, out", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_shapes_raise_value_error(name, kernel, ins, p, out):
    assert_refused(kernel, ins, p, out)


def test_every_op_binds_a_compiled_step_and_checks_the_isa_name():
    """Every op of this module has a bind_<name> that the fast kernel set uses, on every path
    (threads accepted by all); an unknown path name is refused, even by ops with one path."""
    model = all_ops_model()
    seen = set()
    for i, op in enumerate(model.operators):
        if op.opcode not in KERNEL:
            continue
        seen.add(op.opcode)
        p = prepare_op(model, i)
        tensors = [model.tensors[t] for t in op.inputs]
        ins = [t.data if t.data is not None else np.zeros(t.shape, NUMPY_DTYPE[t.dtype]) for t in tensors]
        y = model.tensors[op.outputs[0]]
        out = np.zeros(y.shape, NUMPY_DTYPE[y.dtype])
        for isa in ISA.supported():
            assert not isinstance(KERNEL_SETS["fast"].step(op_form(model, i), ins, p, out, isa, 2), PyStep)
        with pytest.raises(ValueError, match="instruction-set path"):
            BIND[op.opcode](ins, p, out, isa="sse9")
    assert seen == set(KERNEL)
