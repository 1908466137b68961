"""REDUCE (SPEC.md 2.13.25): SUM, MAX, MIN, L2 and SUM_SQUARE over axes, in its int8, int16 and
float32 forms. The compiled kernel (qrt/kernels/pool.pyx, MEAN's walk) is compared bit for bit
with the reference (qrt/ops/reduce.py) on one-op models accepted by verify_model: every axes
subset of ranks 1-4 (empty included: no dimension reduced), keep_dims both ways, random
dimensions with 1s, zero points at the ends of int8, saturating and collapsing output scales,
fused activations, reductions at the loader's bounds, on every instruction-set path with 1 and
2 threads, and as a step bound once and run again after its input was rewritten in place. The
reference itself is checked against the real function; the float32 form against float64; the
verifier's and the kernel's refusals."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

import qrt
from qrt import InvalidModelError
from qrt.format import Activation, DType, ModelBuilder, OpCode, ReduceFunction, ReduceOptions
from qrt.kernels import isa as ISA
from qrt.kernels.plan import PyStep
from qrt.ops import OPS, min_runtime_version, op_form, prepare_op
from qrt.runtime.kernel_sets import COMPILED
from tests.runtime.helpers import Spec, assert_refused, one_op, rand_activation

I8, I16, F32 = DType.INT8, DType.INT16, DType.FLOAT32
SUM, MAX, MIN, L2, SUM_SQUARE = ReduceFunction
PATHS = ISA.supported()
GUARD = 24  # bytes each side of the output window, which the kernel must leave alone


def _shape_out(shape, axes, keep):
    return tuple(1 if a in axes else d for a, d in enumerate(shape) if keep or a not in axes)


def _values(rng, shape, dtype):
    """Uniform integers, or only the dtype's two ends, or one end throughout."""
    info = np.iinfo(np.int8 if dtype == I8 else np.int16)
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return rng.choice(np.array([info.min, info.max], info.dtype), size=shape)
    if kind == 1:
        return np.full(shape, info.min if rng.integers(0, 2) else info.max, info.dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(info.dtype)


def _model(f, shape, axes, keep, dtype=I8, x_q=(0.05, 0), y_q=None, activation=Activation.NONE, clip=(0.0, 0.0)):
    """A one-op REDUCE model; MAX and MIN keep x's quantization unless y_q says otherwise."""
    y_q = y_q or x_q
    return one_op(OpCode.REDUCE, [Spec(shape, dtype, *x_q)],
                  Spec(_shape_out(shape, {a % len(shape) for a in axes}, keep), dtype, *y_q),
                  ReduceOptions(tuple(axes), keep, f), activation, clip)


def _random_model(rng, f, shape, axes, keep, dtype):
    """Random quantization and fused activation: y's scale from equal to x's to far off both
    ways (MAX and MIN keep x's); axes spelled negative at random."""
    rank = len(shape)
    spelled = [a - rank if rng.random() < 0.3 else a for a in axes]
    rng.shuffle(spelled)  # the option's order is free
    s_x = float(np.float32(10.0 ** rng.uniform(-3, 0)))
    zp_x = 0 if dtype == I16 else int(rng.choice([-128, 127, 0, int(rng.integers(-128, 128))]))
    if f in (MAX, MIN):
        y_q = (s_x, zp_x)
    else:
        typical = {SUM: 1.0, SUM_SQUARE: s_x * 64.0, L2: 1.0}[f] * (255 if dtype == I8 else 32768) / 64
        fine = rng.uniform(-2.5, -1.5)  # steps finer than s_x: the L2 root's fraction bits show
        s_y = float(np.float32(s_x * typical * 10.0 ** rng.choice([0.0, rng.uniform(-1.5, 1.5), -3.0, 3.0, fine])))
        y_q = (s_y, 0 if dtype == I16 else int(rng.integers(-128, 128)))
    act, clip = rand_activation(rng)
    return _model(f, shape, spelled, keep, dtype, (s_x, zp_x), y_q, act, clip)


def _guarded(ref):
    """(buffer, out): out a C-contiguous window of buffer holding ~ref, guard bytes around it."""
    buf = np.full(ref.nbytes + 2 * GUARD, 0x5A, np.uint8)
    out = buf[GUARD:GUARD + ref.nbytes].view(ref.dtype).reshape(ref.shape)
    out[...] = ~ref
    return buf, out


def check(model, x):
    """The form's kernel against its reference on every path with 1 and 2 threads, then a step
    bound once: run twice, then after x was rewritten in place. Returns the reference's y."""
    form, p = op_form(model, 0), prepare_op(model, 0)
    y = model.tensors[model.operators[0].outputs[0]]
    ref = np.asarray(form.reference([x], p)).reshape(y.shape)
    assert ref.dtype == x.dtype
    kernel = COMPILED[form.kernel]
    x.flags.writeable = False  # kernels only read their inputs
    for isa, threads in itertools.product(PATHS, (1, 2)):
        buf, out = _guarded(ref)
        kernel.run([x], p, out, isa=isa, threads=threads)
        assert (buf[:GUARD] == 0x5A).all() and (buf[-GUARD:] == 0x5A).all(), "wrote outside its output"
        np.testing.assert_array_equal(out, ref, err_msg=f"{p.function.name} on {isa}, {threads} thread(s)")
    x = x.copy()
    buf, out = _guarded(ref)
    step = kernel.bind([x], p, out, isa=PATHS[-1], threads=2)
    assert not isinstance(step, PyStep)
    want = ref
    for run in range(3):
        if run == 2:
            x[...] = _values(np.random.default_rng(x.size), x.shape, model.tensors[0].dtype)
            want = np.asarray(form.reference([x], p)).reshape(y.shape)
        out[...] = ~want
        step()
        np.testing.assert_array_equal(out, want, err_msg=f"bound step, run {run + 1}")
    return ref


# ---------------------------------------------------------------------------- kernel = reference

@pytest.mark.parametrize("dtype", [I8, I16], ids=["int8", "int16"])
@pytest.mark.parametrize("f", list(ReduceFunction), ids=lambda f: f.name)
def test_every_axes_combination(f, dtype):
    rng = np.random.default_rng(int(f) * 10 + int(dtype))
    for rank in (1, 2, 3, 4):
        for k in range(rank + 1):
            for axes in itertools.combinations(range(rank), k):
                for keep in (False, True):
                    shape = tuple(int(rng.choice([1, 2, 3, 5, 8, 17])) for _ in range(rank))
                    if dtype == I16 and f == SUM_SQUARE:  # the int16 bound: one value per sum
                        shape = tuple(1 if a in axes else d for a, d in enumerate(shape))
                    model = _random_model(rng, f, shape, axes, keep, dtype)
                    check(model, _values(rng, shape, dtype))


LONG = [((3, 2000), (1,)), ((2000, 3), (0,)), ((2, 7, 9, 37), (1, 2)), ((1, 14, 14, 64), (1, 2)),
        ((2, 3, 4, 5, 6), (0, 2, 4)), ((2, 1, 2, 3, 2, 1, 2, 3), (0, 1, 3, 4, 7)), ((4, 128, 384), (2,))]


@pytest.mark.parametrize("f", list(ReduceFunction), ids=lambda f: f.name)
def test_long_reductions_and_higher_ranks(f):
    """Long contiguous runs (the last axis of [N, T, C]), long strided rows, the global pool,
    ranks 5 and 8."""
    rng = np.random.default_rng(50 + int(f))
    for shape, axes in LONG:
        for keep in (False, True):
            check(_random_model(rng, f, shape, axes, keep, I8), _values(rng, shape, I8))
            if f != SUM_SQUARE:
                check(_random_model(rng, f, shape, axes, keep, I16), _values(rng, shape, I16))


@pytest.mark.parametrize("f,dtype,count", [(SUM, I8, 8421504), (SUM_SQUARE, I8, 33025), (SUM, I16, 65535),
                                           (L2, I16, 65535), (L2, I8, 1 << 20)],
                         ids=["sum-int8", "sum_square-int8", "sum-int16", "l2-int16", "l2-int8-2^20"])
def test_sums_at_the_bound(f, dtype, count):
    """Every difference at its largest (|x - zp| = 255, or 2^15 in int16) over the largest count
    the loader accepts: the sums, squares and roots stay exact; one more value is refused."""
    zp, magnitude = (127, 255) if dtype == I8 else (0, 2**15)
    x = np.full((1, count), -128 if dtype == I8 else -32768, np.int8 if dtype == I8 else np.int16)
    real = {SUM: magnitude * count, SUM_SQUARE: magnitude**2 * count, L2: magnitude * count**0.5}[f]
    y = check(_model(f, x.shape, (1,), False, dtype, (1.0, zp), (float(np.float32(real / 100)), 0)), x)
    assert abs(abs(int(y[0])) - 100) <= 1  # -100 (SUM) or 100: exact, nothing wrapped
    if f == L2 and dtype == I8:
        return  # its bound (count <= 1082179841) is past what the test allocates; see the refusals
    with pytest.raises(InvalidModelError, match="overflow"):
        _model(f, (1, count + 1), (1,), False, dtype, (1.0, zp), (1.0, 0))


def test_max_and_min_have_no_bound():
    """MAX and MIN sum nothing: any count binds (here count x |zp| is past int32)."""
    x = np.full((1, 17_000_001), -5, np.int8)
    x[0, 12345], x[0, -1] = 100, -128
    assert check(_model(MAX, x.shape, (1,), True, I8, (0.1, 127)), x).tolist() == [[100]]
    assert check(_model(MIN, x.shape, (1,), False, I8, (0.1, 127)), x).tolist() == [-128]


def test_reference_is_the_real_function():
    """Independent of the reference's code: MAX/MIN are numpy's, SUM with equal scales is the
    sum clamped, L2 is the real norm within a half step and 2^-8 of s_x, SUM_SQUARE the real
    sum of squares rounded."""
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (6, 5, 7)).astype(np.int8)
    d = x.astype(np.int64) - 3
    for f, want in ((MAX, x.max(axis=(0, 2))), (MIN, x.min(axis=(0, 2)))):
        np.testing.assert_array_equal(check(_model(f, x.shape, (0, 2), False, I8, (0.1, 3)), x), want)
    y = check(_model(SUM, x.shape, (1,), True, I8, (0.1, 3), (0.1, -5)), x)
    np.testing.assert_array_equal(y, np.clip(d.sum(axis=1, keepdims=True) - 5, -128, 127))
    s_x, s_y = 0.1, 0.5  # norms up to sqrt(7) 255 s_x: no saturation
    y = check(_model(L2, x.shape, (-1,), False, I8, (s_x, 3), (s_y, -128)), x)
    real = np.sqrt((d.astype(np.float64) ** 2).sum(axis=-1)) * s_x
    got = (y.astype(np.float64) + 128) * s_y
    assert (np.abs(got - real) <= s_y / 2 + s_x * 2.0**-8 + 1e-9).all()
    y = check(_model(SUM_SQUARE, x.shape, (2,), False, I8, (0.25, 3), (64.0, -128)), x)
    real = (d.astype(np.float64) ** 2).sum(axis=2) * 0.0625 / 64
    np.testing.assert_array_equal(y, np.clip(np.floor(real + 0.5) - 128, -128, 127))


def test_empty_axes_reduce_nothing():
    """ONNX noop_with_empty_axes: each output is the function of its element alone (L2 is the
    magnitude, SUM a requantization, MAX and MIN a copy)."""
    x = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    np.testing.assert_array_equal(check(_model(MAX, x.shape, (), False, I8, (0.1, 0)), x), x)
    y = check(_model(L2, x.shape, (), False, I8, (0.1, 0), (0.1, -128)), x)
    np.testing.assert_array_equal(y, np.clip(np.abs(x.astype(np.int64)) - 128, -128, 127))
    y = check(_model(SUM, x.shape, (), True, I8, (0.1, 0), (0.2, 0)), x)
    np.testing.assert_array_equal(y, (x.astype(np.int64) + 1) >> 1)  # half, ties up


def test_fused_activation_clamps_max_and_min():
    """MAX/MIN keep x's quantization; RELU clamps at its zero point, CLIP to its range."""
    x = np.array([[-100, -20, 50], [-17, -18, -11]], np.int8)
    y = check(_model(MAX, x.shape, (1,), False, I8, (0.5, -10), activation=Activation.RELU), x)
    np.testing.assert_array_equal(y, [50, -10])
    y = check(_model(MIN, x.shape, (0,), False, I8, (0.5, -10), activation=Activation.CLIP, clip=(-2.0, 10.0)), x)
    np.testing.assert_array_equal(y, [-14, -14, -11])


# ---------------------------------------------------------------------------- float32 form

@pytest.mark.parametrize("f", list(ReduceFunction), ids=lambda f: f.name)
def test_float32_form(f):
    rng = np.random.default_rng(90 + int(f))
    real = {SUM: np.sum, MAX: np.max, MIN: np.min, L2: lambda v, **k: np.sqrt(np.sum(v * v, **k)),
            SUM_SQUARE: lambda v, **k: np.sum(v * v, **k)}[f]
    for shape, axes, keep in (((2, 3, 4), (1,), False), ((2, 3, 4), (0, 2), True), ((5, 7), (), False),
                              ((4, 128, 16), (-1,), True)):
        b = ModelBuilder("float_reduce")
        x = b.tensor("x", F32, shape)
        y = b.tensor("y", F32, _shape_out(shape, {a % len(shape) for a in axes}, keep))
        b.op(OpCode.REDUCE, [x], [y], ReduceOptions(axes, keep, f), Activation.CLIP, (-20.0, 20.0))
        b.input("x", x)
        b.output("y", y)
        model = b.build()
        assert op_form(model, 0).name == "float32" and min_runtime_version(model) == "0.3.0"
        v = (rng.standard_normal(shape) * 4).astype(np.float32)
        want = np.clip(real(v.astype(np.float64), axis=tuple(a % len(shape) for a in axes), keepdims=keep), -20, 20)
        got = qrt.load(qrt.to_bytes(model)).run(v)
        np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------- refusals

def test_verifier_refusals():
    with pytest.raises(InvalidModelError, match="axes entry 3 is out of range for rank 3"):
        _model(SUM, (2, 3, 4), (3,), False)
    with pytest.raises(InvalidModelError, match=r"axes \(1, -2\) must name distinct dimensions$"):
        one_op(OpCode.REDUCE, [Spec((2, 3, 4), I8, 0.1)], Spec((2, 4), I8, 0.1), ReduceOptions((1, -2), False, SUM))
    with pytest.raises(InvalidModelError, match=r"has shape \(2, 4\); expected \(2, 1, 4\)"):
        one_op(OpCode.REDUCE, [Spec((2, 3, 4), I8, 0.1)], Spec((2, 4), I8, 0.1), ReduceOptions((1,), True, SUM))
    with pytest.raises(InvalidModelError, match="function 7 is not a ReduceFunction"):
        one_op(OpCode.REDUCE, [Spec((2, 3), I8, 0.1)], Spec((2,), I8, 0.1), ReduceOptions((1,), False, 7))
    with pytest.raises(InvalidModelError, match="must have rank >= 1"):
        one_op(OpCode.REDUCE, [Spec((), I8, 0.1)], Spec((), I8, 0.1), ReduceOptions((), False, SUM))
    for f in (MAX, MIN):
        for y_q in ((0.2, 0), (0.1, 1)):
            with pytest.raises(InvalidModelError, match=f"{f.name}: output .* must keep the quantization of "
                                                        r"tensor 'in0' \(scale 0.1.*zero point 0\)"):
                _model(f, (2, 3), (1,), False, I8, (0.1, 0), y_q)
    with pytest.raises(InvalidModelError, match="zero point must be 0"):
        _model(L2, (2, 3), (1,), False, I16, (0.1, 0), (0.1, 5))
    with pytest.raises(InvalidModelError, match=r"the L2 norm of 1082179842 values can overflow its 64-bit root"):
        _model(L2, (1082179842,), (0,), False, I8, (0.1, 0), (1.0, 0))
    _model(L2, (1082179841,), (0,), False, I8, (0.1, 0), (1.0, 0))  # the largest (never allocated)
    with pytest.raises(InvalidModelError, match=r"summing 2 squares can overflow the int32 accumulator"):
        _model(SUM_SQUARE, (2, 3), (0,), False, I16, (0.1, 0), (1.0, 0))


def test_kernel_refusals():
    """Bad binds raise ValueError and write nothing."""
    model = _model(L2, (2, 3, 4), (1,), False, I8, (0.1, 3), (0.2, -1))
    p = prepare_op(model, 0)
    run = COMPILED["reduce"].run
    x, out = np.zeros((2, 3, 4), np.int8), np.zeros((2, 4), np.int8)
    run([x], p, out)  # the valid call works
    for ins, params, o in [
        ([x], p, np.zeros((2, 1, 4), np.int8)),  # shape of keep_dims
        ([x], dataclasses.replace(p, axes=(2, 1)), out),  # unsorted
        ([x], dataclasses.replace(p, axes=(3,)), out),
        ([x], dataclasses.replace(p, function=9), out),
        ([x.astype(np.int16)], p, out),
        ([np.zeros((2, 3, 8), np.int8)[..., ::2]], p, out),
        ([x], dataclasses.replace(p, rescale=dataclasses.replace(p.rescale, input_zero_point=128)), out),
        ([np.zeros((1, 65536), np.int16)], dataclasses.replace(p, axes=(1,), rescale=dataclasses.replace(
            p.rescale, out=dataclasses.replace(p.rescale.out, dtype=np.int16))), np.zeros((1,), np.int16)),
    ]:
        kernel = COMPILED["reduce_int16" if o.dtype == np.int16 else "reduce"].run
        assert_refused(kernel, ins, params, o)
    with pytest.raises(ValueError, match="instruction-set path"):
        COMPILED["reduce"].bind([x], p, out, isa="sse9")


def test_file_round_trip_batches_and_release():
    """The options survive a file; dimension 0 is a batch unless it is reduced; files with
    REDUCE need qrt 0.3.0."""
    for axes, apart in (((1,), True), ((0,), False), ((-1,), True), ((), True), ((-2,), False)):
        model = _model(L2, (2, 3), axes, True, I8, (0.1, 0), (0.1, 0))
        assert OPS[OpCode.REDUCE].batch(model, model.operators[0]) == apart, axes
        back = qrt.read_model(qrt.to_bytes(model))
        assert back.operators[0].options == ReduceOptions(axes, True, L2) and back.min_runtime_version == "0.3.0"
