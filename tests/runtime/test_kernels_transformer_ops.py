"""The ops transformer encoders need (SPEC.md 2.13.21-24): BATCH_MATMUL (int8 x int8 -> int32 ->
int8, leading dimensions broadcast, b read transposed or not), LAYER_NORM (integers only: isqrt
of the row's scaled variance), SLICE (a strided window, any dtype) and GATHER (embedding rows
by int32 / int64 ids; an id outside the table fails the run, writing nothing). Each compiled kernel is
compared bit for bit with its form's reference on one-op models accepted by verify_model, over
shapes, extreme zero points and values, fused activations, and every instruction-set name (one C
path each); the float32 forms and qrt.load "fast" against "reference"; the verifier's refusals."""
from __future__ import annotations

import numpy as np
import pytest

import qrt
from qrt import InvalidModelError
from qrt.format import Activation, BatchMatMulOptions, DType, GatherOptions, LayerNormOptions, OpCode, SliceOptions
from qrt.kernels import isa as ISA
from qrt.kernels import gemm, movement
from qrt.kernels import softmax as rows
from qrt.ops import op_form, prepare_op
from qrt.ops.batch_matmul import output_shape
from qrt.ops.layer_norm import isqrt
from tests.runtime.helpers import Spec, one_op

I8 = DType.INT8


def _check(model, ins, kernel):
    form = op_form(model, 0)
    p = prepare_op(model, 0)
    ref = form.reference(ins, p)
    for isa in ISA.supported():
        out = np.ascontiguousarray(~ref) if ref.dtype.kind == "i" else np.full(ref.shape, np.nan, ref.dtype)
        kernel(ins, p, out, isa=isa)
        np.testing.assert_array_equal(out, ref, err_msg=isa)
    return ref


# ---------------------------------------------------------------------------- BATCH_MATMUL

BMM = [  # a, b, transpose_b
    ((1, 7), (7, 1), False), ((5, 3), (3, 4), False), ((2, 6, 16), (2, 16, 9), False),
    ((2, 3, 5, 8), (2, 3, 4, 8), True), ((4, 1, 5, 8), (1, 3, 8, 2), False), ((3, 5, 7), (7, 6), False),
    ((2, 4, 28, 16), (2, 4, 28, 16), True), ((1, 2, 28, 28), (1, 2, 28, 16), False),
]


@pytest.mark.parametrize("a_shape,b_shape,tb", BMM, ids=[f"{a}x{b}{'T' if t else ''}" for a, b, t in BMM])
@pytest.mark.parametrize("zps", [(0, 0, 0), (-128, 127, -3), (127, -128, 5), (7, -9, -128)])
def test_batch_matmul(a_shape, b_shape, tb, zps):
    rng = np.random.default_rng(sum(a_shape) + sum(b_shape) + zps[0] + 128)
    y_shape = output_shape(a_shape, b_shape, tb)
    k = a_shape[-1]
    s_y = 0.02 * 0.05 * np.sqrt(k) * 60 / 30  # typical sums land around +-30 steps: some saturate
    model = one_op(OpCode.BATCH_MATMUL, [Spec(a_shape, I8, 0.02, zps[0]), Spec(b_shape, I8, 0.05, zps[1])],
                   Spec(y_shape, I8, s_y, zps[2]), BatchMatMulOptions(tb))
    for kind in ("random", "extreme"):
        if kind == "random":
            a, b = (rng.integers(-128, 128, s).astype(np.int8) for s in (a_shape, b_shape))
        else:  # every difference at its largest: x - zp = +-255 where the zero point allows
            a = np.full(a_shape, -128 if zps[0] > 0 else 127, np.int8)
            b = np.full(b_shape, -128 if zps[1] > 0 else 127, np.int8)
        ref = _check(model, [a, b], gemm.batch_matmul)
        assert ref.shape == y_shape


@pytest.mark.parametrize("a_shape,b_shape,tb", [((2, 5, 8), (2, 8, 6), False), ((1, 3, 7, 64), (1, 3, 9, 64), True),
                                                 ((4, 1, 1500), (4, 1500, 3), False), ((2, 1, 1), (1, 1, 1), True)])
def test_batch_matmul_int16(a_shape, b_shape, tb):
    """The int16 form: int64 sums rounded by 2^k (k from K) and requantized; bit-exact with the
    reference on every path, and the real product within an output step or so at every K."""
    rng = np.random.default_rng(sum(a_shape))
    y_shape = output_shape(a_shape, b_shape, tb)
    k = a_shape[-1]
    s_a, s_b = 1 / 32768, 4 / 32768
    s_y = s_a * s_b * 32768 * 40 * np.sqrt(k) / 32768
    model = one_op(OpCode.BATCH_MATMUL, [Spec(a_shape, DType.INT16, s_a, 0), Spec(b_shape, DType.INT16, s_b, 0)],
                   Spec(y_shape, DType.INT16, s_y, 0), BatchMatMulOptions(tb))
    for kind in ("random", "extreme"):
        if kind == "random":
            a, b = (rng.integers(-32768, 32768, s).astype(np.int16) for s in (a_shape, b_shape))
        else:  # the accumulator's largest magnitude: every product (-2^15)^2
            a, b = np.full(a_shape, -32768, np.int16), np.full(b_shape, -32768, np.int16)
        ref = _check(model, [a, b], gemm.batch_matmul)
        real = np.matmul(a.astype(np.float64) * s_a, np.swapaxes(b, -1, -2) * s_b if tb else b * s_b)
        want = np.clip(np.rint(real / s_y), -32768, 32767)
        assert np.abs(ref.astype(np.float64) - want).max() <= 1, kind


def test_batch_matmul_fused_relu_and_accumulator_bound():
    a_shape, b_shape = (1, 2, 33025), (1, 33025, 2)
    model = one_op(OpCode.BATCH_MATMUL, [Spec(a_shape, I8, 0.1, -128), Spec(b_shape, I8, 0.1, 127)],
                   Spec((1, 2, 2), I8, 2000.0, 0), BatchMatMulOptions(False), activation=Activation.RELU)
    a = np.full(a_shape, 127, np.int8)
    b = np.full(b_shape, -128, np.int8)  # every product 255 x -255: the sum is -(2^31 - 4350)
    ref = _check(model, [a, b], gemm.batch_matmul)
    assert (ref == 0).all()  # RELU
    with pytest.raises(InvalidModelError, match="can overflow the int32 accumulator"):
        one_op(OpCode.BATCH_MATMUL, [Spec((1, 2, 33026), I8, 0.1), Spec((1, 33026, 2), I8, 0.1)],
               Spec((1, 2, 2), I8, 1.0), BatchMatMulOptions(False))
    with pytest.raises(InvalidModelError, match="K differs"):
        one_op(OpCode.BATCH_MATMUL, [Spec((2, 3), I8, 0.1), Spec((4, 2), I8, 0.1)], Spec((2, 2), I8, 1.0),
               BatchMatMulOptions(False))
    with pytest.raises(InvalidModelError, match="do not broadcast"):
        one_op(OpCode.BATCH_MATMUL, [Spec((2, 2, 3), I8, 0.1), Spec((3, 3, 2), I8, 0.1)], Spec((3, 2, 2), I8, 1.0),
               BatchMatMulOptions(False))


# ---------------------------------------------------------------------------- LAYER_NORM

def _ln_model(c, zp_x=5, zp_y=-4, eps=1e-5, gamma=None, beta=None, s_x=0.05, s_y=0.03, rows=(3, 4), seed=0,
              dtype=I8, rms=False):
    rng = np.random.default_rng(seed)
    gamma = rng.normal(1, 0.5, c).astype(np.float32) if gamma is None else np.asarray(gamma, np.float32)
    beta = rng.normal(0, 0.3, c).astype(np.float32) if beta is None else np.asarray(beta, np.float32)
    shape = rows + (c,)
    return one_op(OpCode.LAYER_NORM, [Spec(shape, dtype, s_x, zp_x), Spec((c,), DType.FLOAT32, data=gamma),
                                      Spec((c,), DType.FLOAT32, data=beta)],
                  Spec(shape, dtype, s_y, zp_y), LayerNormOptions(eps, rms)), gamma, beta


@pytest.mark.parametrize("c", [1, 3, 16, 384, 1000, 1 << 16])
@pytest.mark.parametrize("rms", [False, True])
def test_layer_norm_int16(c, rms):
    """The int16 form (no fraction bits in the root) and RMSNorm (no mean): bit-exact on every
    path, and within about one output step of the real function."""
    s_x, s_y = 0.05 / 256, 0.03 / 256
    zps = (0, 0)  # int16 activations are symmetric
    model, g, b = _ln_model(c, *zps, s_x=s_x, s_y=s_y, rows=(2, 3), seed=c, dtype=DType.INT16, rms=rms)
    rng = np.random.default_rng(c)
    x = rng.integers(-32768, 32768, (2, 3, c)).astype(np.int16)
    x[0, 0] = 7
    x[0, 1] = np.where(np.arange(c) % 2, 32767, -32768)
    ref = _check(model, [x, g, b], rows.layer_norm)
    xf = (x.astype(np.float64) - zps[0]) * s_x
    mu = 0.0 if rms else xf.mean(-1, keepdims=True)
    var = ((xf - mu) ** 2).mean(-1, keepdims=True)
    want = np.clip((xf - mu) / np.sqrt(var + 1e-5) * g + b, (-32768 - zps[1]) * s_y, (32767 - zps[1]) * s_y)
    assert np.abs((ref.astype(np.float64) - zps[1]) * s_y - want).max() <= 1.1 * s_y


def test_rms_norm_int8():
    model, g, b = _ln_model(64, 3, -2, rms=True, seed=4)
    x = np.random.default_rng(4).integers(-128, 128, (3, 4, 64)).astype(np.int8)
    ref = _check(model, [x, g, b], rows.layer_norm)
    xf = (x.astype(np.float64) - 3) * 0.05
    want = np.clip(xf / np.sqrt((xf**2).mean(-1, keepdims=True) + 1e-5) * g + b, (-128 + 2) * 0.03, (127 + 2) * 0.03)
    assert np.abs((ref.astype(np.float64) + 2) * 0.03 - want).max() <= 1.1 * 0.03


@pytest.mark.parametrize("c", [1, 2, 3, 16, 31, 64, 384, 1000])
@pytest.mark.parametrize("zps", [(5, -4), (-128, 127), (127, -128)])
def test_layer_norm(c, zps):
    model, g, b = _ln_model(c, *zps, seed=c)
    rng = np.random.default_rng(c)
    x = rng.integers(-128, 128, (3, 4, c)).astype(np.int8)
    x[0, 0] = 7  # a constant row: only epsilon under the square root
    x[0, 1] = np.where(np.arange(c) % 2, 127, -128)  # the largest spread
    ref = _check(model, [x, g, b], rows.layer_norm)
    # and it is the layer norm: within about one output step of the real function
    xf = (x.astype(np.float64) - zps[0]) * 0.05
    mu, var = xf.mean(-1, keepdims=True), xf.var(-1, keepdims=True)
    want = np.clip((xf - mu) / np.sqrt(var + 1e-5) * g + b, (-128 - zps[1]) * 0.03, (127 - zps[1]) * 0.03)
    assert np.abs((ref.astype(np.float64) - zps[1]) * 0.03 - want).max() <= 1.1 * 0.03


def test_layer_norm_signs_zero_gamma_and_no_epsilon():
    c = 8
    gamma = [-2.0, 0.0, 1.0, 0.5, -0.25, 3.0, 1e-6, -1e-6]
    model, g, b = _ln_model(c, eps=0.0, gamma=gamma, beta=[0.1, 0.7, 0, -0.2, 0, 0, 0.3, 0])
    x = np.random.default_rng(3).integers(-128, 128, (3, 4, c)).astype(np.int8)
    x[1, 2] = 0  # constant row with epsilon 0: E = 1 keeps the square root defined
    ref = _check(model, [x, g, b], rows.layer_norm)
    assert (ref[..., 1] == round(0.7 / 0.03) - 4).all()  # gamma 0: beta alone


def test_isqrt_is_exact():
    d = np.array([0, 1, 2, 3, 4, 15, 16, 17, 2**52 - 1, 2**52, 2**62 - 1, (2**31 - 1) ** 2, (2**31) ** 2 - 1])
    r = isqrt(d)
    assert (r * r <= d).all() and ((r + 1) * (r + 1) > d).all()


def test_layer_norm_refusals():
    with pytest.raises(InvalidModelError, match="gamma .* has shape"):
        one_op(OpCode.LAYER_NORM, [Spec((2, 4), I8, 0.1), Spec((3,), DType.FLOAT32, data=np.ones(3, np.float32)),
                                   Spec((4,), DType.FLOAT32, data=np.zeros(4, np.float32))],
               Spec((2, 4), I8, 0.1), LayerNormOptions())
    with pytest.raises(InvalidModelError, match="epsilon"):
        _ln_model(4, eps=float("nan"))
    with pytest.raises(InvalidModelError, match="integer forms normalise at most 65536"):
        _ln_model((1 << 16) + 1, 0, 0, dtype=DType.INT16, rows=(1,))


# ---------------------------------------------------------------------------- SLICE

SLICES = [  # x shape, begin, step, y shape
    ((2, 3, 4, 5), (0, 1, 0, 4), (1, 1, 2, -1), (2, 2, 2, 5)), ((6,), (5,), (-2,), (3,)),
    ((3, 4), (0, 0), (1, 1), (3, 4)), ((1, 3, 28, 32), (0, 0, 0, 8), (1, 1, 1, 1), (1, 3, 28, 8)),
    ((3, 1, 2, 4, 8), (1, 0, 0, 0, 0), (1, 1, 1, 1, 1), (1, 1, 2, 4, 8)), ((5, 7), (4, 6), (-1, -3), (5, 3)),
    ((1, 4, 1, 6), (0, 0, 0, 0), (0, 1, 0, 1), (3, 4, 5, 6)), ((2, 3), (1, 2), (0, 0), (4, 7)),  # broadcasts
]
DTYPES = {DType.INT8: np.int8, DType.INT16: np.int16, DType.FLOAT32: np.float32, DType.UINT8: np.uint8}


@pytest.mark.parametrize("xs,begin,step,ys", SLICES, ids=[str(s[0]) + str(s[2]) for s in SLICES])
@pytest.mark.parametrize("dtype", [DType.INT8, DType.INT16, DType.FLOAT32])
def test_slice(xs, begin, step, ys, dtype):
    s = None if dtype == DType.FLOAT32 else 0.1
    model = one_op(OpCode.SLICE, [Spec(xs, dtype, s)], Spec(ys, dtype, s), SliceOptions(begin, step))
    x = np.random.default_rng(len(xs)).integers(-100, 100, xs).astype(DTYPES[dtype])
    ref = _check(model, [x], movement.slice)
    idx = np.ix_(*[b + st * np.arange(n) for b, st, n in zip(begin, step, ys)])
    np.testing.assert_array_equal(ref, x[idx])


def test_slice_refusals():
    for begin, step, ys, what in (((0, 3), (1, 1), (2, 2), "leave"), ((0, 4), (1, 0), (2, 2), "leave"),
                                  ((0,), (1,), (2,), "same length")):
        with pytest.raises(InvalidModelError, match=what):
            one_op(OpCode.SLICE, [Spec((2, 4), I8, 0.1)], Spec(ys, I8, 0.1), SliceOptions(begin, step))


# ---------------------------------------------------------------------------- float forms, qrt.load

def test_float_forms_and_load_fast_equals_reference():
    rng = np.random.default_rng(5)
    f32 = DType.FLOAT32
    models = [
        one_op(OpCode.BATCH_MATMUL, [Spec((2, 5, 8), f32), Spec((2, 6, 8), f32)], Spec((2, 5, 6), f32),
               BatchMatMulOptions(True)),
        _ln_model(16, rows=(2, 3))[0],
        one_op(OpCode.LAYER_NORM, [Spec((2, 16), f32), Spec((16,), f32, data=np.linspace(-1, 2, 16, dtype=np.float32)),
                                   Spec((16,), f32, data=np.zeros(16, np.float32))], Spec((2, 16), f32),
               LayerNormOptions(1e-3)),
        one_op(OpCode.BATCH_MATMUL, [Spec((2, 5, 8), I8, 0.03, 3), Spec((2, 8, 6), I8, 0.04, -2)],
               Spec((2, 5, 6), I8, 0.05, 1), BatchMatMulOptions(False)),
        one_op(OpCode.SLICE, [Spec((4, 6), I8, 0.1)], Spec((2, 3), I8, 0.1), SliceOptions((1, 5), (2, -2))),
    ]
    for model in models:
        data = qrt.to_bytes(model)
        ref = qrt.load(data, kernels="reference")
        feeds = {i.name: rng.uniform(-3, 3, i.shape).astype(np.float32) for i in ref.inputs}
        want = ref.run(feeds)
        for isa in ISA.supported():
            np.testing.assert_array_equal(qrt.load(data, kernels="fast", isa=isa).run(feeds), want)
        if model.tensors[model.operators[0].inputs[0]].dtype == f32 and model.operators[0].opcode == OpCode.LAYER_NORM:
            x = feeds[ref.inputs[0].name].astype(np.float64)
            g = np.linspace(-1, 2, 16)
            expect = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + np.float32(1e-3)) * g
            np.testing.assert_allclose(want, expect, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- GATHER

def _gather_model(data_shape, idx_shape, axis, dtype=I8, idx_dtype=DType.INT64, const_data=True, const_idx=False,
                  seed=0):
    rng = np.random.default_rng(seed)
    s = None if dtype == DType.FLOAT32 else 0.1
    n = data_shape[axis]
    data = rng.integers(-100, 100, data_shape).astype(DTYPES[dtype]) if const_data else None
    ids = rng.integers(-n, n, idx_shape).astype(np.int64 if idx_dtype == DType.INT64 else np.int32) if const_idx else None
    y_shape = data_shape[:axis] + idx_shape + data_shape[axis + 1:]
    return one_op(OpCode.GATHER, [Spec(data_shape, dtype, s, 3 if s else 0, data), Spec(idx_shape, idx_dtype, data=ids)],
                  Spec(y_shape, dtype, s, 3 if s else 0), GatherOptions(axis))


GATHERS = [((50, 8), (2, 5), 0), ((50, 8), (7,), 0), ((3, 10, 4), (2, 2), 1), ((4, 6), (3,), 1), ((5,), (2, 3), 0)]


@pytest.mark.parametrize("data_shape,idx_shape,axis", GATHERS, ids=[f"{d}{i}a{a}" for d, i, a in GATHERS])
@pytest.mark.parametrize("dtype", [DType.INT8, DType.INT16, DType.FLOAT32])
@pytest.mark.parametrize("idx_dtype", [DType.INT32, DType.INT64])
def test_gather(data_shape, idx_shape, axis, dtype, idx_dtype):
    model = _gather_model(data_shape, idx_shape, axis, dtype, idx_dtype)
    op = model.operators[0]
    table = model.tensors[op.inputs[0]].data
    n = data_shape[axis]
    ids = np.random.default_rng(1).integers(-n, n, idx_shape).astype(NUMPY_IDX[idx_dtype])
    ref = _check(model, [table, ids], movement.gather)
    np.testing.assert_array_equal(ref, np.take(table, ids % n, axis=axis))


NUMPY_IDX = {DType.INT32: np.int32, DType.INT64: np.int64}


def test_gather_of_an_activation_at_constant_indices():
    model = _gather_model((2, 6, 4), (3,), 1, const_data=False, const_idx=True)
    x = np.random.default_rng(2).integers(-128, 128, (2, 6, 4)).astype(np.int8)
    ids = model.tensors[model.operators[0].inputs[1]].data
    ref = _check(model, [x, ids], movement.gather)
    np.testing.assert_array_equal(ref, np.take(x, ids % 6, axis=1))


def test_gather_index_outside_the_table_fails_the_run_and_writes_nothing():
    model = _gather_model((50, 8), (2, 5), 0)
    data = qrt.to_bytes(model)
    ids = np.zeros((2, 5), np.int64)
    for bad in (50, -51, 2**40):
        ids[1, 3] = bad
        for kernels in ("fast", "reference"):
            m = qrt.load(data, kernels=kernels)
            with pytest.raises(qrt.InputError, match="GATHER: (an )?index"):
                m.run(ids)
    p = prepare_op(model, 0)
    out = np.full((2, 5, 8), 7, np.int8)
    with pytest.raises(qrt.InputError):
        movement.gather([model.tensors[model.operators[0].inputs[0]].data, ids], p, out)
    assert (out == 7).all()  # nothing written
    # the kernel alone (files have no empty dimension): an empty output still checks its indices
    with pytest.raises(qrt.InputError):
        movement.gather([np.zeros((3, 0), np.int8), np.array([0, 7], np.int64)], p, np.zeros((2, 0), np.int8))
    with pytest.raises(InvalidModelError, match="leave"):  # constant indices are checked at load
        one_op(OpCode.GATHER, [Spec((4, 2), I8, 0.1), Spec((1,), DType.INT64, data=np.array([4]))],
               Spec((1, 2), I8, 0.1), GatherOptions(0))


def test_integer_inputs_take_any_integer_array_that_fits():
    m = qrt.load(qrt.to_bytes(_gather_model((50, 8), (2, 5), 0)))
    ids = np.random.default_rng(3).integers(0, 50, (2, 5))
    want = m.run(ids.astype(np.int64))
    for dtype in (np.int32, np.int16, np.uint8):
        np.testing.assert_array_equal(m.run(ids.astype(dtype)), want)
    np.testing.assert_array_equal(m.run(np.concatenate([ids, ids])), np.concatenate([want, want]))  # batched
    assert m._at(2) is not None
    with pytest.raises(qrt.InputError, match="dtype float32 is not accepted"):
        m.run(ids.astype(np.float32))
    m32 = qrt.load(qrt.to_bytes(_gather_model((50, 8), (2, 5), 0, idx_dtype=DType.INT32)))
    with pytest.raises(qrt.InputError, match="do not fit int32"):
        m32.run(np.full((2, 5), 2**40, np.int64))


# ---------------------------------------------------------------------------- SOFTMAX with a mask

MASKS = [((2, 3, 4, 6), (2, 1, 1, 6)), ((2, 3, 4, 6), (2, 1, 4, 6)), ((5, 7), (5, 7)), ((3, 5), (1, 5)),
         ((2, 4, 300), (2, 1, 300))]


@pytest.mark.parametrize("x_shape,m_shape", MASKS, ids=[f"{x}{m}" for x, m in MASKS])
@pytest.mark.parametrize("dtype", [DType.INT8, DType.INT16])
@pytest.mark.parametrize("zero_keeps", [False, True])
@pytest.mark.parametrize("mask_dtype", [DType.INT32, DType.INT64])
def test_masked_softmax(x_shape, m_shape, dtype, zero_keeps, mask_dtype):
    from qrt.format import SoftmaxOptions
    from qrt.kernels import softmax

    rng = np.random.default_rng(sum(x_shape) + sum(m_shape))
    out_q = (1 / 256, -128) if dtype == DType.INT8 else (1 / 32768, 0)
    model = one_op(OpCode.SOFTMAX, [Spec(x_shape, dtype, 0.05 if dtype == DType.INT8 else 2e-4), Spec(m_shape, mask_dtype)],
                   Spec(x_shape, dtype, *out_q), SoftmaxOptions(-1, 1.0, zero_keeps))
    lo, hi = (-128, 127) if dtype == DType.INT8 else (-32768, 32767)
    x = rng.integers(lo, hi + 1, x_shape).astype(DTYPES[dtype])
    mask = rng.integers(0, 3, m_shape).astype(NUMPY_IDX[mask_dtype])  # 0, 1 and 2 (also nonzero)
    mask.reshape(-1)[:m_shape[-1]] = 1 if zero_keeps else 0  # the first row keeps nothing: uniform
    ref = _check(model, [x, mask], softmax.KERNELS[op_form(model, 0).kernel].run)
    keep = np.broadcast_to((mask == 0) if zero_keeps else (mask != 0), x_shape)
    none = ~keep.any(-1, keepdims=True)
    floor = out_q[1] if dtype == DType.INT8 else 0
    assert (ref[~keep & ~none] == floor).all()  # masked elements: probability 0
    real = (ref.astype(np.float64) - out_q[1]) * out_q[0]
    assert np.allclose(real.sum(-1), 1, atol=x_shape[-1] * out_q[0])  # each row still sums to 1
    first = real.reshape(-1, x_shape[-1])[0]
    np.testing.assert_allclose(first, 1 / x_shape[-1], atol=out_q[0])  # the row that keeps nothing


def test_masked_softmax_float_and_refusals():
    from qrt.format import SoftmaxOptions
    from qrt.ops import min_runtime_version

    f32 = DType.FLOAT32
    model = one_op(OpCode.SOFTMAX, [Spec((2, 6), f32), Spec((2, 6), DType.INT64)], Spec((2, 6), f32), SoftmaxOptions(-1))
    q = qrt.load(qrt.to_bytes(model))
    x = np.random.default_rng(4).normal(size=(2, 6)).astype(np.float32)
    mk = np.array([[1, 1, 0, 1, 0, 0], [0] * 6])
    got = q.run({q.inputs[0].name: x, q.inputs[1].name: mk})
    e = np.exp(x[0, [0, 1, 3]] - x[0, [0, 1, 3]].max())
    np.testing.assert_allclose(got[0, [0, 1, 3]], e / e.sum(), rtol=1e-6)
    assert (got[0, [2, 4, 5]] == 0).all() and np.allclose(got[1], 1 / 6)
    masked8 = one_op(OpCode.SOFTMAX, [Spec((2, 6), I8, 0.1), Spec((2, 6), DType.INT64)], Spec((2, 6), I8, 1 / 256, -128))
    plain8 = one_op(OpCode.SOFTMAX, [Spec((2, 6), I8, 0.1)], Spec((2, 6), I8, 1 / 256, -128))
    assert (min_runtime_version(masked8), min_runtime_version(plain8)) == ("0.3.0", "0.1.0")
    for m_shape, opts, what in (((2, 6), SoftmaxOptions(0), "last dimension"), ((2, 3), SoftmaxOptions(-1), "broadcast|rank"),
                                ((6,), SoftmaxOptions(-1), "rank")):
        with pytest.raises(InvalidModelError, match=what):
            one_op(OpCode.SOFTMAX, [Spec((2, 6), I8, 0.1), Spec(m_shape, DType.INT64)], Spec((2, 6), I8, 1 / 256, -128), opts)
