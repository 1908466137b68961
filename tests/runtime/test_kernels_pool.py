"""The compiled MAX_POOL_2D, AVERAGE_POOL_2D and MEAN kernels (qrt/kernels/pool.pyx) are
bit-exact with their NumPy references (qrt/ops/<op>.py).

Every case is a one-op model built with ModelBuilder and checked by verify_model (so it is a
model the loader would accept), prepared with prepare_op, run by the reference kernel set
(qrt/ops/<op>.py) and by the compiled kernel. The kernel writes into a window of
a larger buffer: the window is pre-filled with the bitwise complement of the reference (an
element the kernel skips is caught) and the guard bytes around it must stay untouched (a write
out of bounds is caught). Seeded sweeps: random batches, sizes, channel counts (vector tails
included), kernels 1-5, strides 1-3, asymmetric pads smaller than the kernel,
count_include_pad both ways, zero points at both ends of int8, saturating and collapsing
output scales, exact rounding ties, fused activations, and MEAN over every axes combination
of ranks 1-5 with keep_dims both ways. Each case also runs through a step bound once by
bind_<name>: twice as bound, then after x was rewritten in place (nothing left over from a
run, nothing computed from the data at bind time); the requantization of the sums is swept over
every instruction-set path. Bad shapes and parameters must raise ValueError.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from qrt.format import (
    Activation, DType, MeanOptions, ModelBuilder, OpCode, Pool2DOptions,
)
from qrt.format.model import NUMPY_DTYPE
from qrt.kernels import isa as ISA
from qrt.kernels import pool
from qrt.kernels.plan import PyStep
from qrt.runtime.kernel_sets import KERNEL_SETS
from qrt import verify_model
from qrt.ops import OPS, op_form, prepare_op
from bench.fixtures.sample_models import all_ops_model

KERNELS = {op: pool.KERNELS[OPS[op].kernel].run for op in (OpCode.MAX_POOL_2D, OpCode.AVERAGE_POOL_2D, OpCode.MEAN)}
BIND = {op: pool.KERNELS[OPS[op].kernel].bind for op in KERNELS}
GUARD = 37  # guard bytes on each side of the output window
GUARD_BYTE = 0x5A


# ------------------------------------------------------------------------------- case makers

def _zero_point(rng) -> int:
    return int(rng.choice([-128, 127, int(rng.integers(-128, 128)), 0]))


def _input(rng, shape, zp) -> np.ndarray:
    """Random int8 data; sometimes constant at either end or at the far end from zp, sometimes
    only the two extremes."""
    kind = rng.integers(0, 7)
    if kind == 0:
        return np.full(shape, -128 if zp >= 0 else 127, np.int8)
    if kind == 1:
        return np.full(shape, -128 if rng.integers(0, 2) else 127, np.int8)
    if kind == 2:
        return rng.choice(np.array([-128, 127], np.int8), size=shape)
    return rng.integers(-128, 128, size=shape, dtype=np.int8)


def _scales(rng):
    """(s_x, s_y): ratios from collapsing (outputs near zp) to heavily saturating."""
    s_x = np.float32(10.0 ** rng.uniform(-3, 0))
    kind = rng.integers(0, 8)
    if kind == 0:
        return s_x, s_x  # same scale: multipliers 1/count, exact ties
    if kind == 1:
        return s_x, np.float32(s_x * 10.0 ** rng.uniform(-4, -2))  # saturates
    if kind == 2:
        return s_x, np.float32(s_x * 10.0 ** rng.uniform(2, 4))  # collapses to zp
    return s_x, np.float32(s_x * 10.0 ** rng.uniform(-1.5, 1.5))


def _activation(rng):
    kind = int(rng.integers(0, 5))
    if kind == 0:
        return Activation.RELU, (0.0, 0.0)
    if kind == 1:
        return Activation.RELU6, (0.0, 0.0)
    if kind == 2:
        lo = float(rng.uniform(-3, 1))
        return Activation.CLIP, (lo, lo + float(rng.uniform(0, 3)))
    return Activation.NONE, (0.0, 0.0)


def _model(opcode, x_shape, y_shape, x_quant, y_quant, options, activation=Activation.NONE,
           clip=(0.0, 0.0)):
    b = ModelBuilder("one_op")
    x = b.tensor("x", DType.INT8, x_shape, scale=x_quant[0], zero_point=x_quant[1])
    y = b.tensor("y", DType.INT8, y_shape, scale=y_quant[0], zero_point=y_quant[1])
    b.op(opcode, [x], [y], options, activation, clip, name="op")
    b.input("x", x)
    b.output("y", y)
    model = b.build()
    verify_model(model)  # a model the loader accepts
    return model


def _guarded_output(shape, fill: np.ndarray):
    """(buffer, out): out is a C-contiguous window of buffer pre-filled with `fill`; the guard
    bytes on both sides hold GUARD_BYTE."""
    size = int(np.prod(shape, dtype=np.int64))
    buf = np.full(size + 2 * GUARD, GUARD_BYTE, np.int8)
    out = buf[GUARD:GUARD + size].reshape(shape)
    assert out.flags.c_contiguous and np.shares_memory(out, buf)
    out[...] = fill
    return buf, out


def _reference(op, params, x, y_shape):
    return OPS[op.opcode].reference([x.copy()], params).astype(np.int8).reshape(y_shape)


def _assert_output(op, params, buf, out, ref, what="kernel"):
    assert (buf[:GUARD] == GUARD_BYTE).all() and (buf[-GUARD:] == GUARD_BYTE).all(), \
        f"the {what} wrote outside its output"
    if not np.array_equal(out, ref):
        bad = np.argwhere(out != ref)[:5]
        raise AssertionError(f"{op.opcode.name} {what} differs from the reference at {bad.tolist()}: "
                             f"kernel {[int(out[tuple(i)]) for i in bad]}, "
                             f"reference {[int(ref[tuple(i)]) for i in bad]}; params {params}")


def _check(model, x: np.ndarray, isa=None):
    """Run the reference and the compiled kernel on x, then a bound step (_check_bound); they
    must agree bit for bit."""
    op = model.operators[0]
    params = prepare_op(model, 0)
    y_shape = model.tensors[op.outputs[0]].shape
    ref = _reference(op, params, x, y_shape)
    buf, out = _guarded_output(y_shape, ~ref)
    x_before = x.copy()
    assert KERNELS[op.opcode]([x], params, out, isa=isa) is None
    assert np.array_equal(x, x_before), "the kernel modified its input"
    _assert_output(op, params, buf, out, ref)
    _check_bound(op, params, x, ref, isa)
    return ref


def _check_bound(op, params, x, ref, isa):
    """A step bound once by bind_<name> matches the reference at every run: twice as bound (the
    output scrambled in between), then after x was rewritten in place."""
    x = x.copy()
    buf, out = _guarded_output(ref.shape, ~ref)
    step = BIND[op.opcode]([x], params, out, isa=isa)
    rng = np.random.default_rng(x.size)
    for run in range(3):
        if run == 2:
            x[...] = rng.integers(-128, 128, size=x.shape, dtype=np.int8)
            ref = _reference(op, params, x, ref.shape)
        out[...] = ~ref
        assert step() is None
        _assert_output(op, params, buf, out, ref, f"bound step (run {run + 1})")


# ------------------------------------------------------------------------------- pools

def _pool_case(rng, opcode, *, n=None, size=None, c=None, kernel=None, stride=None):
    """A random valid pooling model and input."""
    while True:
        kh, kw = kernel or (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        sh, sw = stride or (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        pads = [int(rng.integers(0, kh)), int(rng.integers(0, kw)),
                int(rng.integers(0, kh)), int(rng.integers(0, kw))]
        if rng.integers(0, 3) == 0:
            pads = [0, 0, 0, 0]
        h, w = size or (int(rng.integers(1, 10)), int(rng.integers(1, 10)))
        oh = (h + pads[0] + pads[2] - kh) // sh + 1
        ow = (w + pads[1] + pads[3] - kw) // sw + 1
        if oh >= 1 and ow >= 1:
            break
    batch = n or int(rng.integers(1, 4))
    channels = c or int(rng.choice([1, 2, 3, 7, 8, 16, 17, 31, 33, int(rng.integers(1, 70))]))
    options = Pool2DOptions(kh, kw, sh, sw, *pads, count_include_pad=bool(rng.integers(0, 2)))
    zp_x = _zero_point(rng)
    x = _input(rng, (batch, h, w, channels), zp_x)
    s_x, s_y = _scales(rng)
    if opcode == OpCode.MAX_POOL_2D:
        model = _model(opcode, x.shape, (batch, oh, ow, channels), (s_x, zp_x), (s_x, zp_x), options)
    else:
        activation, clip = _activation(rng)
        model = _model(opcode, x.shape, (batch, oh, ow, channels), (s_x, zp_x), (s_y, _zero_point(rng)),
                       options, activation, clip)
    return model, x


@pytest.mark.parametrize("seed", range(4))
def test_max_pool_2d_matches_reference(seed):
    rng = np.random.default_rng(1000 + seed)
    for _ in range(50):
        _check(*_pool_case(rng, OpCode.MAX_POOL_2D))


@pytest.mark.parametrize("seed", range(6))
def test_average_pool_2d_matches_reference(seed):
    rng = np.random.default_rng(2000 + seed)
    for _ in range(50):
        _check(*_pool_case(rng, OpCode.AVERAGE_POOL_2D))


@pytest.mark.parametrize("isa", ISA.supported())
def test_pool_sums_requantized_on_every_path(isa):
    """AVERAGE_POOL_2D and MEAN requantize rows of sums on the chosen path (16 lanes on the
    AVX-512 ones): channel counts around the vector width, every path."""
    rng = np.random.default_rng(2100 + ISA.NAMES.index(isa))
    for c in (1, 15, 16, 17, 31, 32, 33, 64, 100):
        _check(*_pool_case(rng, OpCode.AVERAGE_POOL_2D, c=c), isa=isa)
        _check(*_mean_case(rng, (2, 3, 5, c), (1, 2), bool(rng.integers(0, 2))), isa=isa)
        _check(*_mean_case(rng, (3, c, 4), (0, 2), False), isa=isa)


def test_max_pool_padding_never_wins():
    """All inputs -128 with padding on every side: the maximum stays -128 everywhere."""
    options = Pool2DOptions(3, 3, 1, 1, 2, 2, 2, 2)
    model = _model(OpCode.MAX_POOL_2D, (1, 2, 3, 5), (1, 4, 5, 5), (0.1, -128), (0.1, -128), options)
    y = _check(model, np.full((1, 2, 3, 5), -128, np.int8))
    assert (y == -128).all()


@pytest.mark.parametrize("include_pad", [False, True])
def test_average_pool_rounding_ties(include_pad):
    """Same scales and zero points, a 2x2 window with padding: multipliers 1/4, 1/3, 1/2, so
    many sums sit exactly halfway; SPEC.md 4.2 rounds those toward +infinity."""
    options = Pool2DOptions(2, 2, 1, 1, 1, 1, 1, 1, count_include_pad=include_pad)
    model = _model(OpCode.AVERAGE_POOL_2D, (2, 5, 6, 19), (2, 6, 7, 19), (0.25, 0), (0.25, 0), options)
    x = np.random.default_rng(7).integers(-128, 128, size=(2, 5, 6, 19), dtype=np.int8)
    y = _check(model, x)
    total = np.pad(x.astype(np.int64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    total = total[:, :-1, :-1] + total[:, 1:, :-1] + total[:, :-1, 1:] + total[:, 1:, 1:]
    if include_pad:  # one hand-checked corner: floor(sum / 4 + 1/2)
        assert y[0, 0, 0, 0] == (total[0, 0, 0, 0] * 2 + 4) // 8
    assert (total[:, 1:-1, 1:-1] % 4 == 2).any()  # the sweep does contain ties


def test_average_pool_large_window_and_batch():
    """A 5x5 window with uneven pads and strides over many channels and a batch."""
    rng = np.random.default_rng(3)
    for include_pad in (False, True):
        options = Pool2DOptions(5, 5, 2, 3, 4, 1, 2, 3, count_include_pad=include_pad)
        model = _model(OpCode.AVERAGE_POOL_2D, (3, 11, 13, 67), (3, 7, 5, 67), (0.02, 127),
                       (0.015, -128), options, Activation.RELU6)
        _check(model, rng.integers(-128, 128, size=(3, 11, 13, 67), dtype=np.int8))


# ------------------------------------------------------------------------------- mean

def _mean_case(rng, shape, axes, keep_dims, *, negative=False):
    rank = len(shape)
    axes_opt = tuple(a - rank if negative and rng.integers(0, 2) else a for a in axes)
    if rng.integers(0, 2):
        axes_opt = tuple(reversed(axes_opt))  # the option's order is free; prepare sorts
    y_shape = tuple(1 if a in axes else d for a, d in enumerate(shape) if keep_dims or a not in axes)
    zp_x = _zero_point(rng)
    s_x, s_y = _scales(rng)
    activation, clip = _activation(rng)
    model = _model(OpCode.MEAN, shape, y_shape, (s_x, zp_x), (s_y, _zero_point(rng)),
                   MeanOptions(axes_opt, keep_dims), activation, clip)
    return model, _input(rng, shape, zp_x)


@pytest.mark.parametrize("rank", [1, 2, 3, 4, 5])
def test_mean_every_axes_combination(rank):
    """Every non-empty axes subset of ranks 1-5, keep_dims both ways, with random dims (1s
    included, which the kernel drops before merging dimensions)."""
    rng = np.random.default_rng(3000 + rank)
    for k in range(1, rank + 1):
        for axes in itertools.combinations(range(rank), k):
            for keep_dims in (False, True):
                for _ in range(2):
                    shape = tuple(int(rng.choice([1, 2, 3, 4, 5, 8, 17])) for _ in range(rank))
                    _check(*_mean_case(rng, shape, axes, keep_dims, negative=True))


def test_mean_global_average_pool():
    """The fast path: axes (1, 2) of [N, H, W, C], with and without keep_dims."""
    rng = np.random.default_rng(4)
    for shape in [(1, 7, 7, 64), (3, 5, 4, 33), (2, 1, 9, 1), (1, 14, 14, 17), (4, 2, 2, 3)]:
        for keep_dims in (False, True):
            _check(*_mean_case(rng, shape, (1, 2), keep_dims))


def test_mean_larger_shapes():
    """Longer runs and rows: reduced inner axes (sums of contiguous runs), kept inner axes
    (vector rows), interleaved kept and reduced axes, rank 6 to 8."""
    rng = np.random.default_rng(5)
    cases = [((4, 300), (1,)), ((300, 5), (0,)), ((2, 40, 3, 50), (1, 3)), ((6, 1, 70, 2, 3), (0, 2, 4)),
             ((2, 3, 1, 4, 2, 3), (1, 3, 5)), ((2, 2, 3, 2, 2, 3, 2), (0, 2, 4, 6)),
             ((2, 1, 2, 3, 2, 1, 2, 3), (0, 1, 3, 4, 7)), ((1, 1, 1), (0, 1, 2)), ((1000,), (0,))]
    for shape, axes in cases:
        for keep_dims in (False, True):
            _check(*_mean_case(rng, shape, axes, keep_dims))


def test_mean_rounding_ties():
    """Same scales and zero points, count 4: the multiplier is 1/4 and sums = 2 (mod 4) tie."""
    model = _model(OpCode.MEAN, (3, 2, 2, 11), (3, 11), (0.5, 0), (0.5, 0), MeanOptions((1, 2)))
    x = np.random.default_rng(8).integers(-128, 128, size=(3, 2, 2, 11), dtype=np.int8)
    y = _check(model, x)
    total = x.astype(np.int64).sum(axis=(1, 2))
    assert (total % 4 == 2).any()  # ties occur
    assert np.array_equal(y, np.clip((total * 2 + 4) // 8, -128, 127))  # floor(s/4 + 1/2)


# ------------------------------------------------------------------------------- bad operands

def _pool_model(opcode):
    return _model(opcode, (2, 6, 5, 4), (2, 3, 3, 4), (0.1, 3), (0.1, 3),
                  Pool2DOptions(2, 3, 2, 2, 0, 1, 1, 1))


@pytest.mark.parametrize("opcode", [OpCode.MAX_POOL_2D, OpCode.AVERAGE_POOL_2D])
def test_pool_rejects_bad_shapes(opcode):
    params = prepare_op(_pool_model(opcode), 0)
    fn = KERNELS[opcode]
    x = np.zeros((2, 6, 5, 4), np.int8)
    good = np.zeros((2, 3, 3, 4), np.int8)
    fn([x], params, good)  # the valid call works
    sentinel = np.int8(77)
    for out_shape in [(2, 3, 3, 5), (2, 3, 4, 4), (2, 2, 3, 4), (1, 3, 3, 4), (2, 3, 3, 3)]:
        out = np.full(out_shape, sentinel, np.int8)
        with pytest.raises(ValueError, match="output has shape"):
            fn([x], params, out)
        assert (out == sentinel).all()
    with pytest.raises(ValueError):
        fn([np.zeros((2, 6, 5), np.int8)], params, good)  # rank 3 input
    with pytest.raises(ValueError):
        fn([x], params, np.zeros((2, 3, 3, 4, 1), np.int8))  # rank 5 output
    with pytest.raises(ValueError):
        fn([x.astype(np.int16)], params, good)  # wrong dtype
    with pytest.raises(ValueError):
        fn([x], params, np.zeros((2, 3, 3, 4), np.int16))
    with pytest.raises(ValueError):
        fn([np.zeros((2, 6, 5, 8), np.int8)[..., ::2]], params, good)  # not C-contiguous
    with pytest.raises(ValueError):
        fn([x], params, np.zeros((2, 3, 3, 8), np.int8)[..., ::2])
    with pytest.raises(ValueError):
        fn([x, x], params, good)  # one input only
    with pytest.raises(ValueError):  # an empty spatial dimension (every window would be padding)
        fn([np.zeros((2, 0, 5, 4), np.int8)], params, np.zeros((2, 1, 3, 4), np.int8))


@pytest.mark.parametrize("opcode", [OpCode.MAX_POOL_2D, OpCode.AVERAGE_POOL_2D])
def test_pool_rejects_bad_params(opcode):
    params = prepare_op(_pool_model(opcode), 0)
    fn = KERNELS[opcode]
    x = np.zeros((2, 6, 5, 4), np.int8)
    out = np.zeros((2, 3, 3, 4), np.int8)
    for change in [dict(pads=(2, 1, 1, 1)), dict(pads=(0, -1, 1, 1)), dict(stride=(0, 2)),
                   dict(kernel=(0, 3))]:
        with pytest.raises(ValueError):
            fn([x], dataclasses.replace(params, **change), out)
    if opcode == OpCode.AVERAGE_POOL_2D:  # one (multiplier, shift) per window count 1..KH*KW
        short = dataclasses.replace(params.out, multiplier=params.out.multiplier[:-1],
                                    shift=params.out.shift[:-1])
        with pytest.raises(ValueError, match="multiplier/shift"):
            fn([x], dataclasses.replace(params, out=short), out)
        bad_shift = dataclasses.replace(params.out, shift=np.zeros_like(params.out.shift))
        with pytest.raises(ValueError, match="shift"):
            fn([x], dataclasses.replace(params, out=bad_shift), out)
        with pytest.raises(ValueError, match="clamp"):
            fn([x], dataclasses.replace(params, out=dataclasses.replace(params.out, lo=-129)), out)


def test_mean_rejects_bad_shapes_and_params():
    model = _model(OpCode.MEAN, (2, 3, 4, 5), (2, 5), (0.1, 3), (0.2, -1), MeanOptions((1, 2)))
    params = prepare_op(model, 0)
    x = np.zeros((2, 3, 4, 5), np.int8)
    pool.mean([x], params, np.zeros((2, 5), np.int8))  # the valid call works
    sentinel = np.int8(-9)
    for out_shape in [(2, 1, 1, 5), (5, 2), (2, 4), (10,), (2, 5, 1)]:
        out = np.full(out_shape, sentinel, np.int8)
        with pytest.raises(ValueError, match="output has shape"):
            pool.mean([x], params, out)
        assert (out == sentinel).all()
    out = np.zeros((2, 5), np.int8)
    with pytest.raises(ValueError):
        pool.mean([np.zeros((2, 3, 4, 6), np.int8)], params, out)  # wrong kept dimension
    with pytest.raises(ValueError):
        pool.mean([np.zeros((2, 3, 4), np.int8)], params, out)  # axis 2 is the last one left
    with pytest.raises(ValueError):
        pool.mean([x.astype(np.uint8)], params, out)
    with pytest.raises(ValueError):
        pool.mean([np.zeros((2, 3, 4, 10), np.int8)[..., ::2]], params, out)  # not C-contiguous
    with pytest.raises(ValueError):
        pool.mean([x], params, np.zeros((2, 10), np.int8)[:, ::2])
    with pytest.raises(ValueError):
        pool.mean([x], params, np.zeros((2, 5), np.int32))
    with pytest.raises(ValueError):
        pool.mean([np.zeros((1,) * 9, np.int8)], dataclasses.replace(params, axes=(0,)),
                  np.zeros((1,) * 8, np.int8))  # rank 9
    for axes in [(2, 1), (1, 1), (1, 4), (-1,), ()]:
        with pytest.raises(ValueError, match="axes"):
            pool.mean([x], dataclasses.replace(params, axes=axes), out)
    r = params.rescale
    two = dataclasses.replace(r.out, multiplier=np.repeat(r.out.multiplier, 2), shift=np.repeat(r.out.shift, 2))
    with pytest.raises(ValueError, match="multiplier/shift"):
        pool.mean([x], dataclasses.replace(params, rescale=dataclasses.replace(r, out=two)), out)
    with pytest.raises(ValueError, match="zero point"):
        pool.mean([x], dataclasses.replace(params, rescale=dataclasses.replace(r, input_zero_point=200)), out)


def test_every_op_binds_a_compiled_step_and_checks_the_isa_name():
    """Every op of this module binds a compiled step in the fast kernel set, on every path
    (threads accepted); an unknown path name is refused."""
    model = all_ops_model()
    seen = set()
    for i, op in enumerate(model.operators):
        if op.opcode not in KERNELS:
            continue
        seen.add(op.opcode)
        p = prepare_op(model, i)
        x = np.zeros(model.tensors[op.inputs[0]].shape, np.int8)
        out = np.zeros(model.tensors[op.outputs[0]].shape, NUMPY_DTYPE[model.tensors[op.outputs[0]].dtype])
        for isa in ISA.supported():
            assert not isinstance(KERNEL_SETS["fast"].step(op_form(model, i), [x], p, out, isa, 2), PyStep)
        with pytest.raises(ValueError, match="instruction-set path"):
            BIND[op.opcode]([x], p, out, isa="sse9")
    assert seen == set(KERNELS)
