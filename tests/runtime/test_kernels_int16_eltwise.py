"""The compiled int16 forms (SPEC.md 4.6) of the non-GEMM ops are bit-exact with their NumPy
references: ADD/SUB ("add_int16"), MUL ("mul_int16") and REQUANTIZE with an int16 side
("requantize_int16") in qrt/kernels/elementwise.pyx; MAX_POOL_2D, AVERAGE_POOL_2D and MEAN
("*_int16") in pool.pyx; PAD and CONCAT ("pad_int16", "concat_int16") in movement.pyx; SOFTMAX
("softmax_int16") in softmax.pyx.

Every case is a one-op model built with ModelBuilder and checked by verify_model (int16
activations symmetric: zero point 0), prepared by prepare_op; the reference is the one of the
operator's form (qrt.ops.op_form), the kernel is COMPILED[form.kernel], as the runtime finds it.
Each case runs on every instruction-set path of this machine with 1 and 2 threads, into a window
of a larger buffer: the window starts as the bitwise complement of the reference (an element
the kernel skips is caught), the guard bytes around it must stay as they were (a write out of
bounds is caught). Then a step bound once runs three times, the last after its run-time inputs
were rewritten in place. Inputs mix uniform int16 values with both ends (-32768, 32767); scales
make multipliers large and small (saturating and collapsing outputs); fused RELU, RELU6 and CLIP.
A small int16 chain also runs end to end, qrt.load(kernels="fast") against "reference"."""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import numpy as np
import pytest

import qrt
from qrt.ops.max_pool_2d import MAX_POOL_2D
from qrt import verify_model
from qrt.format import (
    Activation, ConcatOptions, DType, MeanOptions, ModelBuilder, OpCode, PadOptions, Pool2DOptions,
)
from qrt.format.model import SoftmaxOptions
from qrt.errors import InvalidModelError
from qrt.numerics import SOFTMAX_OUTPUT, SOFTMAX_OUTPUT_16
from qrt.format.model import NUMPY_DTYPE, QUANT_RANGE
from qrt.kernels import isa as ISA
from qrt.kernels.plan import PyStep
from qrt.ops import OPS, op_form, prepare_op
from qrt.ops.base import INT16
from qrt.ops.pad import PadParams
from qrt.ops.window import out_size
from qrt.runtime.kernel_sets import COMPILED, KERNEL_SETS
from tests.runtime.helpers import (Spec, assert_refused, broadcast_partner, inputs_of, one_op, rand_activation,
                                   rand_scale, rand_shape)

PATHS = ISA.supported()
I8, U8, I16 = DType.INT8, DType.UINT8, DType.INT16
GUARD = 24  # guard bytes on each side of the output window
GUARD_BYTE = 0xA5
INT16_OPS = {OpCode.ADD: "add_int16", OpCode.SUB: "add_int16", OpCode.MUL: "mul_int16",
             OpCode.REQUANTIZE: "requantize_int16", OpCode.MAX_POOL_2D: "max_pool_2d_int16",
             OpCode.AVERAGE_POOL_2D: "average_pool_2d_int16", OpCode.MEAN: "mean_int16",
             OpCode.PAD: "pad_int16", OpCode.CONCAT: "concat_int16", OpCode.SOFTMAX: "softmax_int16"}


# ---------------------------------------------------------------------------- helpers

def values(rng, shape, dtype=I16):
    """Random integers of dtype: uniform, both ends only, small, or uniform with ends mixed in."""
    dt = NUMPY_DTYPE[dtype]
    info = np.iinfo(dt)
    kind = int(rng.integers(0, 5))
    if kind == 0:
        ends = np.array([info.min, info.min + 1, info.max, info.max - 1, 0], dt)
        return rng.choice(ends, size=shape)
    if kind == 1 and dtype == I16:
        return rng.integers(-300, 301, size=shape).astype(dt)
    x = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)
    if kind >= 3:
        x = np.where(rng.random(shape) < 0.15, rng.choice(np.array([info.min, info.max], dt), size=shape), x)
    return np.asarray(x, dt)


inputs_of = functools.partial(inputs_of, draw=values)


def _reference(form, ins, p, y):
    r = np.asarray(form.reference(ins, p))
    lo, hi = QUANT_RANGE[y.dtype]
    assert r.size == 0 or (lo <= r.min() and r.max() <= hi), "the reference left the output's range"
    ref = np.empty(y.shape, NUMPY_DTYPE[y.dtype])
    ref[...] = r.reshape(y.shape)
    return ref


def _guarded(ref):
    """(buffer, out): out a C-contiguous window of buffer holding ~ref, guard bytes around it."""
    nbytes = ref.nbytes
    buf = np.full(nbytes + 2 * GUARD, GUARD_BYTE, np.uint8)
    out = buf[GUARD:GUARD + nbytes].view(ref.dtype).reshape(ref.shape)
    out.reshape(-1).view(np.uint8)[...] = ~ref.reshape(-1).view(np.uint8)
    return buf, out


def _assert_same(buf, out, ref, what):
    assert (buf[:GUARD] == GUARD_BYTE).all() and (buf[-GUARD:] == GUARD_BYTE).all(), f"{what} wrote outside its output"
    if not np.array_equal(out, ref):
        bad = np.argwhere(out != ref)[:5]
        raise AssertionError(f"{what} differs from the reference at {bad.tolist()}: kernel "
                             f"{[int(out[tuple(i)]) for i in bad]}, reference {[int(ref[tuple(i)]) for i in bad]}")


def check(model, ins, *, paths=PATHS, threads=(1, 2), fresh=values):
    """The kernel of the operator's form against its reference, on `paths` x `threads`, then a
    bound step run three times (the last after the run-time inputs were rewritten in place with
    fresh(rng, shape, dtype)); returns the reference's output."""
    op = model.operators[0]
    form = op_form(model, 0)
    assert form.name == INT16 and form.kernel == INT16_OPS[op.opcode]
    p = prepare_op(model, 0)
    y = model.tensors[op.outputs[0]]
    live = [model.tensors[t].data is None for t in op.inputs]
    ins = [np.array(x) for x in ins]
    for x in ins:
        x.flags.writeable = False  # the kernels only read their inputs
    ref = _reference(form, ins, p, y)
    kernel = COMPILED[form.kernel]
    for isa in paths:
        for t in threads:
            buf, out = _guarded(ref)
            assert kernel.run(ins, p, out, isa=isa, threads=t) is None
            _assert_same(buf, out, ref, f"{op.opcode.name} on the {isa} path, {t} thread(s)")
    ins = [np.array(x) for x in ins]
    buf, out = _guarded(ref)
    step = kernel.bind(ins, p, out, isa=paths[-1], threads=threads[-1])
    assert not isinstance(step, PyStep)
    rng = np.random.default_rng(sum(x.size for x in ins))
    want = ref
    for run in range(3):
        if run == 2:
            for x, t, is_live in zip(ins, op.inputs, live):
                if is_live:
                    x[...] = fresh(rng, x.shape, model.tensors[t].dtype)
            want = _reference(form, ins, p, y)
        out.reshape(-1).view(np.uint8)[...] = ~want.reshape(-1).view(np.uint8)
        assert step() is None
        _assert_same(buf, out, want, f"{op.opcode.name} bound step (run {run + 1})")
    return ref


# ---------------------------------------------------------------------------- ADD / SUB / MUL

BINARY = [OpCode.ADD, OpCode.SUB, OpCode.MUL]


@pytest.mark.parametrize("opcode", BINARY)
def test_binary_matches_reference(opcode):
    """Broadcasting shapes of every kind (rows, columns, one value, constants), random scales,
    fused activations."""
    rng = np.random.default_rng(300 + int(opcode))
    for case in range(40):
        out_shape = rand_shape(rng)
        sa, sb = broadcast_partner(rng, out_shape), broadcast_partner(rng, out_shape)
        if rng.random() < 0.5:
            sa, sb = sb, sa
        if case % 5 == 0:
            sa = sb = out_shape  # the row kernel
        shape = np.broadcast_shapes(sa, sb)
        a, b = Spec(sa, I16, rand_scale(rng, -5, 1)), Spec(sb, I16, rand_scale(rng, -5, 1))
        if rng.random() < 0.3:
            b.data = values(rng, sb)  # a constant operand
        if case % 7 == 0:
            b.scale = a.scale
        act, clip = rand_activation(rng)
        model = one_op(opcode, [a, b], Spec(shape, I16, rand_scale(rng, -5, 1)), activation=act, clip=clip)
        check(model, inputs_of(model, rng))


@pytest.mark.parametrize("opcode", BINARY)
def test_binary_broadcast_patterns(opcode):
    """Per-channel operands, rows against columns, one value against a long row (the strided
    rows of the scalar rule), and long same-shape tails of a broadcast."""
    rng = np.random.default_rng(310 + int(opcode))
    for sa, sb in (((2, 9, 7, 33), (33,)), ((2, 9, 7, 33), (2, 1, 1, 33)), ((5, 300), (5, 1)),
                   ((4, 1, 6, 1), (1, 3, 1, 7)), ((1000,), ()), ((3, 1, 40), (3, 50, 40)), ((1,), (9, 1))):
        for scales in ((1e-4, 10.0, 1e-4), (10.0, 10.0, 1e-4), (3e-4, 2e-4, 5e-4)):
            shape = np.broadcast_shapes(sa, sb)
            act, clip = rand_activation(rng)
            model = one_op(opcode, [Spec(sa, I16, scales[0]), Spec(sb, I16, scales[1])], Spec(shape, I16, scales[2]),
                           activation=act, clip=clip)
            check(model, inputs_of(model, rng))


@pytest.mark.parametrize("opcode", BINARY)
def test_binary_long_rows_every_path(opcode):
    """Same shapes take simd/eltwise.h's vector rows (8 at a time on avx2 and avx512vnni), split
    over 2 threads from 65536 elements: lengths that leave vector tails, every int16 value
    against a shuffled copy and both ends; multipliers large (saturating) and small
    (collapsing), output shifts below and above 31."""
    rng = np.random.default_rng(320 + int(opcode))
    every = np.arange(-32768, 32768, dtype=np.int16)
    shifts = set()
    for scales in ((0.05, 0.03, 0.06), (1e-4, 10.0, 1e-4), (10.0, 1e-4, 10.0), (2e-3, 2e-3, 1e-3),
                   (10.0, 10.0, 1e-5), (1e-5, 1e-5, 10.0)):
        act, clip = rand_activation(rng)
        for length in (65536 + 13, 1003, 7):
            model = one_op(opcode, [Spec((length,), I16, scales[0]), Spec((length,), I16, scales[1])],
                           Spec((length,), I16, scales[2]), activation=act, clip=clip)
            shifts.add(int(prepare_op(model, 0).out.shift[0]) >= 31)
            a = np.resize(every, length)
            b = np.resize(rng.permutation(every), length)
            k = min(16, length)
            b[:k] = ([-32768, 32767] * 8)[:k]
            a[:k] = ([-32768] * 4 + [32767] * 4 + [-32768, 32767] * 4)[:k]
            check(model, [a, b], threads=(1, 2) if length > 65536 else (1,))
    assert shifts == {True, False}


def test_binary_exact_sums_and_products():
    """Independent of the references: with the output in the inputs' scale ADD and SUB are the
    saturated integer sum and difference, and MUL with s_y = s_a * s_b the saturated product."""
    a = np.array([32767, 32767, -32768, -32768, 1, -1, 20000, -20000, 0, 123], np.int16)
    b = np.array([32767, -32768, -32768, 32767, -1, -1, 20000, 20000, -32768, -77], np.int16)
    wide_a, wide_b = a.astype(np.int64), b.astype(np.int64)
    for opcode, want in ((OpCode.ADD, wide_a + wide_b), (OpCode.SUB, wide_a - wide_b)):
        model = one_op(opcode, [Spec(a.shape, I16, 0.01), Spec(b.shape, I16, 0.01)], Spec(a.shape, I16, 0.01))
        assert np.array_equal(check(model, [a, b]), np.clip(want, -32768, 32767))
        model = one_op(opcode, [Spec(a.shape, I16, 0.01), Spec(b.shape, I16, 0.01)], Spec(a.shape, I16, 0.01),
                       activation=Activation.RELU)
        assert np.array_equal(check(model, [a, b]), np.clip(want, 0, 32767))
    model = one_op(OpCode.MUL, [Spec(a.shape, I16, 0.5), Spec(b.shape, I16, 0.25)], Spec(a.shape, I16, 0.125))
    assert np.array_equal(check(model, [a, b]), np.clip(wide_a * wide_b, -32768, 32767))


@pytest.mark.parametrize("opcode", BINARY)
def test_binary_zero_points_bound_directly(opcode):
    """Bound directly, the kernels take int16 zero points off 0 where every step stays exact
    (ADD/SUB: any; MUL: products within int32) and any int32 output zero point; MUL refuses
    zero points whose products could leave int32."""
    rng = np.random.default_rng(330 + int(opcode))
    n = 1000
    model = one_op(opcode, [Spec((n,), I16, 3e-4), Spec((n,), I16, 5e-4)], Spec((n,), I16, 4e-4))
    base = prepare_op(model, 0)
    ins = [values(rng, (n,)), values(rng, (n,))]
    zps = [(-32768, 32767), (32767, -32768), (100, -100)] if opcode != OpCode.MUL else [(100, -100), (-7, 3)]
    for za, zb in zps:
        for zy in (0, -2**31, 2**31 - 1, 40000):
            p = dataclasses.replace(base, a_zero_point=za, b_zero_point=zb,
                                    out=dataclasses.replace(base.out, zero_point=zy))
            ref = OPS[opcode].reference(ins, p)
            for isa in PATHS:
                got = np.zeros(n, np.int16)
                COMPILED[INT16_OPS[opcode]].run(ins, p, got, isa=isa)
                assert np.array_equal(got, ref), (za, zb, zy, isa)
    if opcode == OpCode.MUL:
        with pytest.raises(ValueError, match="int32|2\\^31"):
            COMPILED["mul_int16"].run(ins, dataclasses.replace(base, a_zero_point=32767, b_zero_point=-32768),
                                      np.zeros(n, np.int16))


# ---------------------------------------------------------------------------- REQUANTIZE

DIRECTIONS = [(I8, I16), (U8, I16), (I16, I8), (I16, U8), (I16, I16)]


def _zp(rng, dtype):
    if dtype == I16:
        return 0  # symmetric (SPEC.md 4.6)
    lo, hi = QUANT_RANGE[dtype]
    return int(rng.choice([lo, hi, int(rng.integers(lo, hi + 1))]))


@pytest.mark.parametrize("din, dout", DIRECTIONS, ids=lambda d: d.name)
def test_requantize_every_input_value(din, dout):
    """Every value of the input dtype, with scale ratios that saturate, collapse, tie and keep
    the values, zero points at both ends of the 8-bit side, fused activations."""
    rng = np.random.default_rng(340 + 10 * int(din) + int(dout))
    lo, hi = QUANT_RANGE[din]
    every = np.arange(lo, hi + 1).astype(NUMPY_DTYPE[din])
    for scales in ((1e-4, 10.0), (10.0, 1e-4), (0.05, 0.05), (0.3, 0.7), (1 / 256, 1 / 65536), (1 / 65536, 1 / 256)):
        for act, clip in ((Activation.NONE, (0.0, 0.0)), rand_activation(rng)):
            x = Spec(every.shape, din, scales[0], _zp(rng, din))
            model = one_op(OpCode.REQUANTIZE, [x], Spec(every.shape, dout, scales[1], _zp(rng, dout)),
                           activation=act, clip=clip)
            check(model, [every])


@pytest.mark.parametrize("din, dout", DIRECTIONS, ids=lambda d: d.name)
def test_requantize_shapes(din, dout):
    """Random shapes (rank 0 and empty included), and the identity (int16 -> int16, same
    scale, no clamp), which copies."""
    rng = np.random.default_rng(350 + 10 * int(din) + int(dout))
    for case in range(12):
        shape = rand_shape(rng)
        s = rand_scale(rng, -5, 1)
        identity = din == dout and case % 3 == 0
        act, clip = (Activation.NONE, (0.0, 0.0)) if identity else rand_activation(rng)
        model = one_op(OpCode.REQUANTIZE, [Spec(shape, din, s, _zp(rng, din))],
                       Spec(shape, dout, s if identity else rand_scale(rng, -5, 1), _zp(rng, dout)), activation=act, clip=clip)
        assert prepare_op(model, 0).identity == identity
        check(model, inputs_of(model, rng))
    p = prepare_op(model, 0)  # empty arrays (no valid model has them): nothing to write
    for isa in PATHS:
        COMPILED["requantize_int16"].run([np.zeros((0, 3), NUMPY_DTYPE[din])], p, np.zeros((0, 3), NUMPY_DTYPE[dout]),
                                         isa=isa)


def test_requantize_int16_exact_cases():
    """Independent of the reference: int8 -> int16 with s_y = s_x / 256 is x * 256; int16 ->
    int8 with s_y = 256 s_x rounds half up (ties toward +infinity) and saturates."""
    x8 = np.arange(-128, 128, dtype=np.int8)
    model = one_op(OpCode.REQUANTIZE, [Spec((256,), I8, 0.5, 0)], Spec((256,), I16, 0.5 / 256))
    assert np.array_equal(check(model, [x8]), x8.astype(np.int16) * 256)
    x16 = np.array([-32768, -384, -128, -127, 127, 128, 384, 32767, 0, -129], np.int16)
    model = one_op(OpCode.REQUANTIZE, [Spec(x16.shape, I16, 1 / 1024)], Spec(x16.shape, I8, 0.25, 0))
    assert check(model, [x16]).tolist() == [-128, -1, 0, 0, 0, 1, 2, 127, 0, -1]


# ---------------------------------------------------------------------------- CONCAT / PAD

@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_concat_every_axis(count):
    """1-4 inputs of ranks 1-4 along every axis (and its negative spelling): all in the output's
    quantization (copies), mixed, or all rescaled."""
    rng = np.random.default_rng(360 + count)
    for rank in range(1, 5):
        for axis in range(rank):
            for mode in range(3):
                base = [int(d) for d in rng.integers(1, 5, rank)]
                y = Spec((), I16, rand_scale(rng, -5, -2))
                specs = []
                for _ in range(count):
                    s = list(base)
                    s[axis] = int(rng.integers(1, 4))
                    same = mode == 0 or (mode == 1 and rng.random() < 0.5)
                    specs.append(Spec(s, I16, y.scale if same else rand_scale(rng, -5, -2)))
                shape = list(base)
                shape[axis] = sum(sp.shape[axis] for sp in specs)
                y.shape = tuple(shape)
                model = one_op(OpCode.CONCAT, specs, y, ConcatOptions(axis - rank if mode == 2 else axis))
                p = prepare_op(model, 0)
                if mode == 0:
                    assert all(q.identity for q in p.inputs)
                check(model, inputs_of(model, rng), threads=(1,))


def test_concat_large_and_saturating():
    """Longer parts with scale ratios that saturate and collapse."""
    rng = np.random.default_rng(365)
    for scales in ((1e-4, 10.0, 1e-3), (10.0, 1e-4, 1e-2)):
        specs = [Spec((2, 37, 300), I16, scales[0]), Spec((2, 37, 5), I16, scales[1]),
                 Spec((2, 37, 64), I16, scales[2])]
        model = one_op(OpCode.CONCAT, specs, Spec((2, 37, 369), I16, scales[2]), ConcatOptions(-1))
        check(model, inputs_of(model, rng))


def test_pad_ranks_1_to_4():
    rng = np.random.default_rng(370)
    for case in range(40):
        rank = 1 + case % 4
        shape = tuple(int(d) for d in rng.integers(1, 6, rank))
        pads = [int(v) for v in rng.integers(0, 4, 2 * rank)]
        if case % 3 == 0:  # some dimensions unpadded (coalesced)
            pads = [v if rng.random() < 0.4 else 0 for v in pads]
        x = Spec(shape, I16, rand_scale(rng, -5, 1))
        out = tuple(d + pads[k] + pads[rank + k] for k, d in enumerate(shape))
        model = one_op(OpCode.PAD, [x], Spec(out, I16, x.scale), PadOptions(tuple(pads)))
        check(model, inputs_of(model, rng), threads=(1,))


def test_pad_fills_with_any_int16_zero_point():
    """Bound directly, the int16 PAD fills with any int16 zero point (a model's is 0)."""
    rng = np.random.default_rng(371)
    x = values(rng, (3, 4, 5))
    for zp in (-32768, 32767, -1, 258):
        p = PadParams((1, 0, 2, 2, 3, 0), zp)
        ref = OPS[OpCode.PAD].reference([x], p)
        for isa in PATHS:
            got = np.empty(ref.shape, np.int16)
            COMPILED["pad_int16"].run([x], p, got, isa=isa)
            assert np.array_equal(got, ref)
    with pytest.raises(ValueError, match="zero point"):
        COMPILED["pad_int16"].run([x], PadParams((0,) * 6, 40000), np.empty(x.shape, np.int16))


# ---------------------------------------------------------------------------- pools and MEAN

def _pool_case(rng, opcode):
    while True:
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        pads = [int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)), int(rng.integers(0, kw))]
        if rng.integers(0, 3) == 0:
            pads = [0, 0, 0, 0]
        h, w = int(rng.integers(1, 10)), int(rng.integers(1, 10))
        oh, ow = out_size(h, pads[0], pads[2], kh, 1, sh), out_size(w, pads[1], pads[3], kw, 1, sw)
        if oh >= 1 and ow >= 1:
            break
    n = int(rng.integers(1, 3))
    c = int(rng.choice([1, 3, 8, 16, 17, 33]))
    options = Pool2DOptions(kh, kw, sh, sw, *pads, count_include_pad=bool(rng.integers(0, 2)))
    s_x = rand_scale(rng, -5, -2)
    if opcode == OpCode.MAX_POOL_2D:
        return one_op(opcode, [Spec((n, h, w, c), I16, s_x)], Spec((n, oh, ow, c), I16, s_x), options)
    s_y = float(np.float32(s_x * 10.0 ** rng.choice([0.0, rng.uniform(-2, 2), -3.0, 3.0])))
    act, clip = rand_activation(rng)
    return one_op(opcode, [Spec((n, h, w, c), I16, s_x)], Spec((n, oh, ow, c), I16, s_y), options, act, clip)


@pytest.mark.parametrize("opcode", [OpCode.MAX_POOL_2D, OpCode.AVERAGE_POOL_2D])
def test_pool_matches_reference(opcode):
    """Kernels 1-5, strides 1-3, asymmetric pads smaller than the kernel, count_include_pad both
    ways, channel counts with vector tails, saturating and collapsing output scales."""
    rng = np.random.default_rng(380 + int(opcode))
    for _ in range(60):
        model = _pool_case(rng, opcode)
        check(model, [values(rng, model.tensors[0].shape, I16)], threads=(1,), fresh=values)


def test_max_pool_padding_never_wins():
    """Windows over padding, every input at the bottom of int16 or near it: the maximum is
    over the non-padded positions only (SPEC.md 2.13.6), checked against that definition and
    the reference."""
    rng = np.random.default_rng(385)
    options = Pool2DOptions(3, 3, 1, 1, 2, 2, 2, 2)
    model = one_op(OpCode.MAX_POOL_2D, [Spec((2, 4, 5, 9), I16, 1e-4)], Spec((2, 6, 7, 9), I16, 1e-4), options)
    p = prepare_op(model, 0)
    for x in (np.full((2, 4, 5, 9), -32768, np.int16), rng.integers(-32768, -30000, (2, 4, 5, 9)).astype(np.int16)):
        xp = np.pad(x.astype(np.int64), ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-2**40)
        want = np.empty((2, 6, 7, 9), np.int64)
        for i in range(6):
            for j in range(7):
                want[:, i, j] = xp[:, i:i + 3, j:j + 3].max(axis=(1, 2))
        assert np.array_equal(MAX_POOL_2D.reference([x], p), want)
        for isa in PATHS:
            got = np.zeros(want.shape, np.int16)
            COMPILED["max_pool_2d_int16"].run([x], p, got, isa=isa)
            assert np.array_equal(got, want), isa


def test_average_pool_exact_means():
    """Independent of the reference: a 2x2 window with the output in the input's scale is the
    window sum / 4 rounded half up, with padded positions counted or not."""
    x = np.array([[-32768, -32768, 32767], [-32768, -32767, 32767], [5, 6, 7]], np.int16).reshape(1, 3, 3, 1)
    options = Pool2DOptions(2, 2, 2, 2, 0, 0, 1, 1, count_include_pad=True)
    model = one_op(OpCode.AVERAGE_POOL_2D, [Spec(x.shape, I16, 0.001)], Spec((1, 2, 2, 1), I16, 0.001), options)
    got = check(model, [x])
    wide = np.pad(x.astype(np.int64)[0, :, :, 0], ((0, 1), (0, 1)))
    sums = wide.reshape(2, 2, 2, 2).sum(axis=(1, 3))
    assert np.array_equal(got[0, :, :, 0], np.floor(sums / 4 + 0.5).astype(np.int64))


@pytest.mark.parametrize("rank", [1, 2, 3, 4])
def test_mean_every_axes_combination(rank):
    rng = np.random.default_rng(390 + rank)
    for axes_count in range(1, rank + 1):
        for axes in itertools.combinations(range(rank), axes_count):
            for keep_dims in (False, True):
                shape = tuple(int(d) for d in rng.integers(1, 6, rank))
                out = tuple(1 if a in axes else d for a, d in enumerate(shape) if keep_dims or a not in axes)
                s_x = rand_scale(rng, -5, -2)
                s_y = float(np.float32(s_x * 10.0 ** rng.choice([0.0, rng.uniform(-2, 2), -3.0, 3.0])))
                act, clip = rand_activation(rng)
                spelled = tuple(a - rank if rng.random() < 0.3 else a for a in axes)
                model = one_op(OpCode.MEAN, [Spec(shape, I16, s_x)], Spec(out, I16, s_y),
                               MeanOptions(spelled, keep_dims), act, clip)
                check(model, inputs_of(model, rng), threads=(1,))


def test_mean_global_pool_and_long_reductions():
    """The global average pool (axes 1, 2 of NHWC: the row-summing path), long contiguous
    reductions (runs), rank 5, and a count near the int16 bound (count * 2^15 <= 2^31 - 1)."""
    rng = np.random.default_rng(395)
    for shape, axes, keep in (((2, 7, 9, 37), (1, 2), True), ((1, 14, 14, 64), (1, 2), False),
                              ((3, 2000), (1,), False), ((2, 3, 4, 5, 6), (0, 2, 4), True),
                              ((1, 65535), (1,), True), ((65535, 2), (0,), False)):
        out = tuple(1 if a in axes else d for a, d in enumerate(shape) if keep or a not in axes)
        for s_y in (1e-3, 1e-5):
            model = one_op(OpCode.MEAN, [Spec(shape, I16, 1e-3)], Spec(out, I16, s_y), MeanOptions(axes, keep))
            x = values(rng, shape)
            if math.prod(shape) == 65535 * 2 or 65535 in shape:
                x[...] = rng.choice(np.array([-32768, 32767], np.int16))  # the largest |sum|
            check(model, [x], threads=(1,))


# ---------------------------------------------------------------------------- bind checks, registry

def _binary_params(opcode, shape=(4, 3)):
    model = one_op(opcode, [Spec(shape, I16, 0.01), Spec(shape, I16, 0.02)], Spec(shape, I16, 0.03))
    return prepare_op(model, 0)


def _bad_cases():
    z16 = lambda *s: np.zeros(s, np.int16)  # noqa: E731
    z8 = lambda *s: np.zeros(s, np.int8)  # noqa: E731
    cases = []
    for name in ("add_int16", "mul_int16"):
        p = _binary_params(OpCode.ADD if name == "add_int16" else OpCode.MUL)
        run = COMPILED[name].run
        cases += [(f"{name} int8 operand", run, [z8(4, 3), z16(4, 3)], p, z16(4, 3)),
                  (f"{name} int8 out", run, [z16(4, 3), z16(4, 3)], p, z8(4, 3)),
                  (f"{name} no broadcast", run, [z16(4, 3), z16(2)], p, z16(4, 3)),
                  (f"{name} out shape", run, [z16(4, 3), z16(3)], p, z16(4, 4)),
                  (f"{name} out not contiguous", run, [z16(4, 3), z16(3)], p, z16(3, 4).T),
                  (f"{name} two multipliers", run, [z16(4, 3), z16(4, 3)],
                   dataclasses.replace(p, out=dataclasses.replace(p.out, multiplier=np.repeat(p.out.multiplier, 2),
                                                                  shift=np.repeat(p.out.shift, 2))), z16(4, 3)),
                  (f"{name} clamp beyond int16", run, [z16(4, 3), z16(4, 3)],
                   dataclasses.replace(p, out=dataclasses.replace(p.out, hi=40000)), z16(4, 3)),
                  (f"{name} zero point beyond int16", run, [z16(4, 3), z16(4, 3)],
                   dataclasses.replace(p, a_zero_point=-32769), z16(4, 3))]
    p = _binary_params(OpCode.ADD)
    run = COMPILED["add_int16"].run
    cases += [("add_int16 int8 left shift", run, [z16(4, 3), z16(4, 3)], dataclasses.replace(p, left_shift=20),
               z16(4, 3)),
              ("add_int16 factor 1", run, [z16(4, 3), z16(4, 3)],
               dataclasses.replace(p, a_multiplier=2**30, a_shift=30), z16(4, 3))]
    model = one_op(OpCode.REQUANTIZE, [Spec((5,), I8, 0.1, 3)], Spec((5,), I16, 0.001))
    p = prepare_op(model, 0)
    run = COMPILED["requantize_int16"].run
    cases += [("requantize_int16 shape", run, [z8(5)], p, z16(6)),
              ("requantize_int16 int32 out", run, [z8(5)], p, np.zeros(5, np.int32)),
              ("requantize_int16 float in", run, [np.zeros(5, np.float32)], p, z16(5)),
              ("requantize_int16 clamp", run, [z16(5)],
               dataclasses.replace(p, out=dataclasses.replace(p.out, lo=-40000)), z16(5)),
              ("requantize_int16 int16 in, uint8 clamp", run, [z16(5)], p, np.zeros(5, np.uint8))]
    model = one_op(OpCode.CONCAT, [Spec((2, 2), I16, 0.1), Spec((2, 3), I16, 0.2)], Spec((2, 5), I16, 0.1),
                   ConcatOptions(1))
    p = prepare_op(model, 0)
    run = COMPILED["concat_int16"].run
    cases += [("concat_int16 sum", run, [z16(2, 2), z16(2, 4)], p, z16(2, 5)),
              ("concat_int16 int8 input", run, [z8(2, 2), z16(2, 3)], p, z16(2, 5)),
              ("concat_int16 int8 out", run, [z16(2, 2), z16(2, 3)], p, z8(2, 5)),
              ("concat_int16 count", run, [z16(2, 5)], p, z16(2, 5))]
    model = one_op(OpCode.PAD, [Spec((2, 3), I16, 0.1)], Spec((3, 5), I16, 0.1), PadOptions((1, 1, 0, 1)))
    p = prepare_op(model, 0)
    cases += [("pad_int16 out", COMPILED["pad_int16"].run, [z16(2, 3)], p, z16(3, 6)),
              ("pad_int16 int8", COMPILED["pad_int16"].run, [z8(2, 3)], p, z8(3, 5))]
    for opcode in (OpCode.MAX_POOL_2D, OpCode.AVERAGE_POOL_2D):
        model = one_op(opcode, [Spec((2, 6, 5, 4), I16, 0.1)], Spec((2, 3, 3, 4), I16, 0.1),
                       Pool2DOptions(2, 3, 2, 2, 0, 1, 1, 1))
        p = prepare_op(model, 0)
        run = COMPILED[INT16_OPS[opcode]].run
        cases += [(f"{opcode.name} int8", run, [z8(2, 6, 5, 4)], p, z8(2, 3, 3, 4)),
                  (f"{opcode.name} out shape", run, [z16(2, 6, 5, 4)], p, z16(2, 3, 4, 4)),
                  (f"{opcode.name} not contiguous", run, [z16(2, 6, 5, 8)[..., ::2]], p, z16(2, 3, 3, 4)),
                  (f"{opcode.name} window bound", run, [z16(2, 6, 5, 4)], dataclasses.replace(p, kernel=(300, 300)),
                   z16(2, 3, 3, 4))]
    model = one_op(OpCode.MEAN, [Spec((2, 3, 4, 5), I16, 0.1)], Spec((2, 5), I16, 0.2), MeanOptions((1, 2)))
    p = prepare_op(model, 0)
    run = COMPILED["mean_int16"].run
    cases += [("mean_int16 int8", run, [z8(2, 3, 4, 5)], p, z8(2, 5)),
              ("mean_int16 out shape", run, [z16(2, 3, 4, 5)], p, z16(2, 1, 1, 5)),
              ("mean_int16 clamp", run, [z16(2, 3, 4, 5)],
               dataclasses.replace(p, rescale=dataclasses.replace(
                   p.rescale, out=dataclasses.replace(p.rescale.out, lo=-32769))),
               z16(2, 5)),
              ("mean_int16 count bound", run, [z16(1, 65536)],
               dataclasses.replace(p, axes=(1,)), z16(1))]
    model = one_op(OpCode.SOFTMAX, [Spec((3, 4), I16, 0.01)], Spec((3, 4), I16, *SOFTMAX_OUTPUT_16),
                   SoftmaxOptions(-1, 1.0))
    p = prepare_op(model, 0)
    run = COMPILED["softmax_int16"].run
    big = p.exp_table.copy()
    big[5] = 2**30 + 1
    negative = p.exp_table.copy()
    negative[-1] = -1
    zero_first = p.exp_table.copy()
    zero_first[0] = 0
    cases += [("softmax_int16 int8 in", run, [z8(3, 4)], p, z16(3, 4)),
              ("softmax_int16 int8 out", run, [z16(3, 4)], p, z8(3, 4)),
              ("softmax_int16 out shape", run, [z16(3, 4)], p, z16(3, 5)),
              ("softmax_int16 not contiguous", run, [z16(3, 8)[:, ::2]], p, z16(3, 4)),
              ("softmax_int16 axis", run, [z16(3, 4)], dataclasses.replace(p, axis=2), z16(3, 4)),
              ("softmax_int16 int8 table", run, [z16(3, 4)],
               dataclasses.replace(p, exp_table=np.zeros(256, np.int64)), z16(3, 4)),
              ("softmax_int16 table entry > 2^30", run, [z16(3, 4)], dataclasses.replace(p, exp_table=big), z16(3, 4)),
              ("softmax_int16 negative entry", run, [z16(3, 4)], dataclasses.replace(p, exp_table=negative),
               z16(3, 4)),
              ("softmax_int16 first entry 0", run, [z16(3, 4)], dataclasses.replace(p, exp_table=zero_first),
               z16(3, 4))]
    return cases


BAD_CASES = _bad_cases()


@pytest.mark.parametrize("name, kernel, ins, p, out", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_binds_raise_value_error(name, kernel, ins, p, out):
    assert_refused(kernel, ins, p, out)


def test_every_int16_form_binds_a_compiled_step():
    """Each op's int16 form names its kernel here, the fast kernel set binds a compiled step on
    every path (threads accepted), and an unknown path name is refused."""
    for opcode, name in INT16_OPS.items():
        assert {f.name: f.kernel for f in OPS[opcode].all_forms()}[INT16] == name
    model = one_op(OpCode.MUL, [Spec((3, 4), I16, 0.1), Spec((4,), I16, 0.2)], Spec((3, 4), I16, 0.3))
    form, p = op_form(model, 0), prepare_op(model, 0)
    ins, out = [np.zeros((3, 4), np.int16), np.zeros(4, np.int16)], np.zeros((3, 4), np.int16)
    for isa in PATHS:
        assert not isinstance(KERNEL_SETS["fast"].step(form, ins, p, out, isa, 2), PyStep)
    for name in sorted(set(INT16_OPS.values())):
        assert name in COMPILED
    with pytest.raises(ValueError, match="instruction-set path"):
        COMPILED["mul_int16"].bind(ins, p, out, isa="sse9")


# ---------------------------------------------------------------------------- end to end

def _int16_chain():
    """int8 image -> REQUANTIZE to int16 -> ADD (a constant) -> MUL (a second input) -> SUB ->
    AVERAGE_POOL_2D -> MAX_POOL_2D -> PAD, CONCAT with a rescaled branch -> MEAN -> REQUANTIZE
    to int8 and to uint8; every activation between the conversions int16."""
    rng = np.random.default_rng(400)
    b = ModelBuilder("int16_chain")
    T = b.tensor
    x = T("x", I8, (1, 9, 9, 8), scale=0.05, zero_point=-3)
    x2 = T("x2", I16, (8,), scale=1e-4)
    b.input("x", x)
    b.input("x2", x2)
    h = T("h", I16, (1, 9, 9, 8), scale=2e-4)
    b.op(OpCode.REQUANTIZE, [x], [h])
    k = T("k", I16, (1, 1, 9, 8), rng.integers(-32768, 32768, (1, 1, 9, 8)), scale=3e-4)
    a = T("a", I16, (1, 9, 9, 8), scale=4e-4)
    b.op(OpCode.ADD, [h, k], [a], activation=Activation.RELU)
    m = T("m", I16, (1, 9, 9, 8), scale=1e-4)
    b.op(OpCode.MUL, [a, x2], [m], activation=Activation.CLIP, clip=(-1.0, 2.5))
    s = T("s", I16, (1, 9, 9, 8), scale=3e-4)
    b.op(OpCode.SUB, [m, a], [s])
    ap = T("ap", I16, (1, 5, 5, 8), scale=2e-4)
    b.op(OpCode.AVERAGE_POOL_2D, [s], [ap], Pool2DOptions(3, 3, 2, 2, 1, 1, 1, 1), Activation.RELU6)
    mp = T("mp", I16, (1, 4, 4, 8), scale=2e-4)
    b.op(OpCode.MAX_POOL_2D, [ap], [mp], Pool2DOptions(2, 2, 1, 1))
    pd = T("pd", I16, (1, 6, 6, 8), scale=2e-4)
    b.op(OpCode.PAD, [mp], [pd], PadOptions((0, 1, 1, 0, 0, 1, 1, 0)))
    cut = T("cut", I16, (1, 6, 6, 8), scale=5e-4)
    b.op(OpCode.AVERAGE_POOL_2D, [h], [cut], Pool2DOptions(4, 4, 1, 1))
    cat = T("cat", I16, (1, 6, 6, 16), scale=3e-4)
    b.op(OpCode.CONCAT, [pd, cut], [cat], ConcatOptions(-1))
    mean = T("mean", I16, (1, 1, 1, 16), scale=1e-4)
    b.op(OpCode.MEAN, [cat], [mean], MeanOptions((1, 2), True))
    y8 = T("y8", I8, (1, 1, 1, 16), scale=0.01, zero_point=5)
    b.op(OpCode.REQUANTIZE, [mean], [y8])
    yu = T("yu", U8, (1, 1, 1, 16), scale=0.002, zero_point=128)
    b.op(OpCode.REQUANTIZE, [mean], [yu], activation=Activation.RELU)
    b.output("y8", y8)
    b.output("yu", yu)
    b.output("cat", cat)
    model = b.build()
    verify_model(model)
    return model


def test_int16_chain_fast_equals_reference():
    model = _int16_chain()
    assert {op_form(model, i).name for i in range(len(model.operators))} == {INT16}
    data = qrt.to_bytes(model)
    reference = qrt.load(data, kernels="reference")
    rng = np.random.default_rng(401)
    feeds = [{"x": rng.integers(-128, 128, (1, 9, 9, 8), dtype=np.int8), "x2": values(rng, (8,))} for _ in range(3)]
    feeds[0]["x"][...] = 127
    feeds[0]["x2"][...] = -32768
    for isa in PATHS:
        for threads in (1, 2):
            fast = qrt.load(data, kernels="fast", isa=isa, threads=threads)
            for feed in feeds:
                want, got = reference.run(feed, raw=True), fast.run(feed, raw=True)
                for name in want:
                    assert want[name].dtype == got[name].dtype
                    assert np.array_equal(want[name], got[name]), (name, isa, threads)


# ---------------------------------------------------------------------------- LUT (int16 form)

def test_lut_int16_every_input_on_every_path():
    """All 65536 inputs through random, extreme (alternating -32768 / 32767) and smooth tables:
    the interpolated table of SPEC.md 2.13.14, bit for bit, and always between its neighbours."""
    from qrt.format import LutOptions
    from qrt.ops.lut import INT16_TABLE

    rng = np.random.default_rng(777)
    x = np.arange(-32768, 32768, dtype=np.int16).reshape(256, 256)
    smooth = np.rint(32767 * np.tanh(np.linspace(-4, 4, INT16_TABLE))).astype(np.int16)
    extreme = np.where(np.arange(INT16_TABLE) % 2, 32767, -32768).astype(np.int16)
    for table in (rng.integers(-32768, 32768, INT16_TABLE).astype(np.int16), extreme, smooth):
        model = one_op(OpCode.LUT, [Spec(x.shape, I16, 0.001), Spec((INT16_TABLE,), I16, None, 0, table)],
                       Spec(x.shape, I16, 0.002), LutOptions("test"))
        assert op_form(model, 0).name == "int16"
        p = prepare_op(model, 0)
        want = op_form(model, 0).reference([x, table], p)
        j = (x.astype(np.int64) + 32768) >> 7
        lo = np.minimum(table[j], table[j + 1])
        hi = np.maximum(table[j], table[j + 1])
        assert ((want >= lo) & (want <= hi)).all()
        assert np.array_equal(want.reshape(-1)[::128], table[:512])  # exact at the entries
        for isa in PATHS:
            got = np.zeros_like(x)
            COMPILED["lut_int16"].run([x, table], p, got, isa=isa)
            assert np.array_equal(got, want), isa
    with pytest.raises(ValueError, match="expected \\(513,\\)"):
        COMPILED["lut_int16"].run([x, table[:256]], p, np.zeros_like(x))


# ---------------------------------------------------------------------------- SOFTMAX (int16 form)

def _softmax16(shape, axis, beta, s_x):
    return one_op(OpCode.SOFTMAX, [Spec(shape, I16, s_x)], Spec(shape, I16, *SOFTMAX_OUTPUT_16),
                  SoftmaxOptions(axis, beta))


def test_softmax_int16_table():
    """E[i] = round-half-even(exp(-beta * s_x * 16 i) * 2^30), i = 0 .. 4096, float64 with beta as float32."""
    for beta, s_x in ((1.0, 1e-3), (0.7, 3e-4), (2.0, 10.0)):
        p = prepare_op(_softmax16((2, 5), -1, beta, s_x), 0)
        t = p.exp_table
        assert t.dtype == np.int64 and t.shape == (4097,) and t[0] == 2**30
        assert ((t >= 0) & (t <= 2**30)).all() and (np.diff(t) <= 0).all()
        b = np.float64(np.float32(beta))
        for i in (1, 7, 1000, 4096):
            assert t[i] == np.rint(math.exp(-b * np.float64(np.float32(s_x)) * (16 * i)) * 2.0**30)


def test_softmax_int16_matches_reference():
    """Every path, the axis first, middle and last, lengths 1, 2, 7 and 1000, beta 0.5, 1, 2, input
    scales tiny (every e near 2^30) to large (only the maximum survives); random inputs, all-equal
    rows and both ends (d = 65535: the table's last entry)."""
    rng = np.random.default_rng(1616)
    scales = (1e-7, 1e-4, 3e-3, 0.05, 10.0)
    case = 0
    for length in (1, 2, 7, 1000):
        for shape, axis in (((length, 3, 4), 0), ((3, length, 4), 1), ((2, 3, length), -1)):
            for beta in (0.5, 1.0, 2.0):
                s_x = scales[case % len(scales)]
                case += 1
                model = _softmax16(shape, axis, beta, s_x)
                x = values(rng, shape)
                check(model, [x])
                check(model, [np.full(shape, int(rng.integers(-32768, 32768)), np.int16)])
                ends = rng.choice(np.array([-32768, 32767], np.int16), size=shape)
                ref = check(model, [ends])
                if length == 1:
                    assert (ref == 32767).all()  # one element: 1 (clamped to 32767)


def test_softmax_int16_exact_cases():
    """The rule by hand: all equal gives round(32768 / n); a difference of 65535 at a large scale
    gives the maximum 32767 and the minimum 0; y tracks float softmax within the rounding."""
    for n in (1, 2, 3, 7, 1000):
        model = _softmax16((1, n), -1, 1.0, 0.01)
        ref = check(model, [np.zeros((1, n), np.int16)])
        assert (ref == min(32767, (2**45 + (n * 2**30 >> 1)) // (n * 2**30))).all()
    model = _softmax16((1, 2), -1, 1.0, 10.0)
    assert check(model, [np.array([[-32768, 32767]], np.int16)]).tolist() == [[0, 32767]]
    rng = np.random.default_rng(5)
    for beta, s_x in ((1.0, 1e-3), (0.5, 2e-4), (2.0, 5e-4)):
        x = rng.integers(-32768, 32768, (4, 50)).astype(np.int16)
        ref = check(_softmax16(x.shape, 1, beta, s_x), [x])
        z = np.float64(np.float32(beta)) * np.float64(np.float32(s_x)) * x
        want = np.exp(z - z.max(axis=1, keepdims=True))
        want /= want.sum(axis=1, keepdims=True)
        assert np.abs(ref / 32768.0 - want).max() < 2e-4


def test_softmax_int16_fixed_output_is_verified():
    """The int16 form's output must be (1/32768, 0): the int8 form's (1/256, -128), another scale
    or a nonzero zero point is refused; the int8 form keeps its own fixed output."""
    for scale, zp in ((1 / 256, 0), (1 / 16384, 0), (1 / 32768, 1), (1 / 256, -128)):
        with pytest.raises(InvalidModelError):
            one_op(OpCode.SOFTMAX, [Spec((2, 5), I16, 0.01)], Spec((2, 5), I16, scale, zp), SoftmaxOptions(-1, 1.0))
    with pytest.raises(InvalidModelError, match="1/32768"):
        one_op(OpCode.SOFTMAX, [Spec((2, 5), I16, 0.01)], Spec((2, 5), I16, 1 / 256, 0), SoftmaxOptions(-1, 1.0))
    with pytest.raises(InvalidModelError, match="symmetric"):  # int16 input with a zero point
        one_op(OpCode.SOFTMAX, [Spec((2, 5), I16, 0.01, 3)], Spec((2, 5), I16, *SOFTMAX_OUTPUT_16),
               SoftmaxOptions(-1, 1.0))
    with pytest.raises(InvalidModelError):
        one_op(OpCode.SOFTMAX, [Spec((2, 5), I8, 0.01, 0)], Spec((2, 5), I8, *SOFTMAX_OUTPUT_16),
               SoftmaxOptions(-1, 1.0))
    assert op_form(one_op(OpCode.SOFTMAX, [Spec((2, 5), I8, 0.01, 0)], Spec((2, 5), I8, *SOFTMAX_OUTPUT),
                          SoftmaxOptions(-1, 1.0)), 0).name == "int8"
