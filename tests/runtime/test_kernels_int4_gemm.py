"""int4 weights in the integer forms of CONV_2D and FULLY_CONNECTED (SPEC.md 2.1, 3.2: W4A8 and
W4A16, per tensor or per channel): the GEMM keeps its panels as int4 (simd/layout.h
qrt_gemm_pack_int4) and expands a few at a time (gemm.h qrt_unpack_w4). Each case is a one-op
model with INT4 weights accepted by verify_model, run by its form's reference and by the
compiled kernel on every instruction-set path this machine supports at 1 and 2 threads, into an
output pre-filled with the reference's complement, bit for bit.

Swept: rows M around the 6-row micro-kernels, output channels around the 16-channel panels and
the 4-panel groups the expansion covers (1 .. 130), reductions K 1 .. 1000 (odd counts leave a
half-used last byte), extreme zero points (-128, 127) and inputs, weights at +-7, several row
blocks and panel splits between threads; convolutions with stride, dilation, asymmetric pads,
groups; int16 activations. Also: the packed weights take half the bytes of int8's and no int8
copy is kept; the verifier's refusals; min_runtime_version; qrt.load "fast" = "reference"."""
from __future__ import annotations

import numpy as np
import pytest

import qrt
from qrt import InvalidModelError, verify_model
from qrt.format import Conv2DOptions, DepthwiseConv2DOptions, DType, ModelBuilder, OpCode
from qrt.format.model import pack_int4
from qrt.kernels import gemm
from qrt.kernels import isa as ISA
from qrt.ops import min_runtime_version, op_form, prepare_op
from qrt.ops.base import INT8, INT16
from tests.runtime.helpers import Spec, one_op

PATHS = [(isa, threads) for isa in ISA.supported() for threads in (1, 2)]


def _out_size(size, a, b, k, d, s):
    return (size + a + b - d * (k - 1) - 1) // s + 1


def _model(opcode, x_shape, w, y_shape, options=None, *, act16=False, zp_x=0, zp_y=0,
           per_channel=True, rng=None, w_dtype=DType.INT4, group_size=0):
    """A verified one-op model with int4 weights w (int8 values in [-7, 7]), int8 or int16
    activations and a bias of typical size."""
    rng = rng or np.random.default_rng(0)
    c = w.shape[0]
    k = int(np.prod(w.shape[1:]))
    dtype = DType.INT16 if act16 else DType.INT8
    s_x = np.float32(2e-4 if act16 else 0.02)
    if group_size:
        s_w = rng.uniform(0.01, 0.03, c * -(-k // group_size)).astype(np.float32)
    else:
        s_w = rng.uniform(0.01, 0.03, c).astype(np.float32) if per_channel else np.float32(0.02)
    typical = np.sqrt(k) * (18918.0 if act16 else 74.0) * 4.0
    s_y = np.float32(float(s_x) * 0.02 * typical / (8000.0 if act16 else 40.0))
    bias = rng.integers(-int(typical), int(typical) + 1, c).astype(np.int32)
    return one_op(opcode, [Spec(x_shape, dtype, s_x, 0 if act16 else zp_x),
                           Spec(w.shape, w_dtype, s_w, 0, pack_int4(w) if w_dtype == DType.INT4 else w, group_size),
                           Spec((c,), DType.INT32, data=bias)],
                  Spec(y_shape, dtype, s_y, 0 if act16 else zp_y), options)


def _x(rng, shape, act16=False, kind="random"):
    lo, hi = (-32768, 32767) if act16 else (-128, 127)
    dtype = np.int16 if act16 else np.int8
    if kind == "min":
        return np.full(shape, lo, dtype)
    if kind == "max":
        return np.full(shape, hi, dtype)
    return rng.integers(lo, hi + 1, size=shape).astype(dtype)


def _w(rng, shape, kind="random"):
    if kind == "extreme":
        return rng.choice(np.array([-7, 7], np.int8), size=shape)
    return rng.integers(-7, 8, size=shape).astype(np.int8)


def _check(model, x, what):
    form = op_form(model, 0)
    op = model.operators[0]
    ins = [x, model.tensors[op.inputs[1]].data, model.tensors[op.inputs[2]].data]
    p = prepare_op(model, 0)
    assert p.w4 == model.tensors[op.inputs[1]].shape
    ref = form.reference(ins, p)
    kernel = gemm.KERNELS[form.kernel].run
    for isa, threads in PATHS:
        out = np.ascontiguousarray(~ref)
        kernel(ins, p, out, isa=isa, threads=threads)
        if not np.array_equal(out, ref):
            bad = np.argwhere(out != ref)
            i = tuple(bad[0])
            raise AssertionError(f"{what} [{isa}, {threads} threads]: {len(bad)} of {ref.size} outputs differ; "
                                 f"first at {i}: kernel {out[i]}, reference {ref[i]}")
    return ref


def _fc(m, n, k, seed=0, **kw):
    rng = np.random.default_rng(seed)
    act16 = kw.pop("act16", False)
    x_kind, w_kind = kw.pop("x_kind", "random"), kw.pop("w_kind", "random")
    w = _w(rng, (n, k), w_kind)
    model = _model(OpCode.FULLY_CONNECTED, (m, k), w, (m, n), act16=act16, rng=rng, **kw)
    return model, _x(rng, (m, k), act16, x_kind)


@pytest.mark.parametrize("m,n,k", [(m, 33, 17) for m in (1, 2, 5, 6, 7, 13, 64)]
                         + [(6, n, 64) for n in (1, 15, 16, 17, 63, 65, 130)]
                         + [(7, 17, k) for k in (1, 2, 3, 5, 63, 64, 1000)])
@pytest.mark.parametrize("act16", [False, True], ids=["int8", "int16"])
def test_fully_connected_int4_sweep(m, n, k, act16):
    model, x = _fc(m, n, k, seed=m * 1000 + n * 10 + k, act16=act16, zp_x=-3, zp_y=5)
    ref = _check(model, x, f"fc M={m} N={n} K={k}")
    assert ref.dtype == (np.int16 if act16 else np.int8)
    assert op_form(model, 0).name == (INT16 if act16 else INT8)


@pytest.mark.parametrize("zp_x", [-128, 127])
@pytest.mark.parametrize("x_kind", ["min", "max", "random"])
def test_fully_connected_int4_extreme_zero_points_and_weights(zp_x, x_kind):
    model, x = _fc(13, 40, 301, seed=7, zp_x=zp_x, zp_y=-128 if zp_x > 0 else 127, x_kind=x_kind,
                   w_kind="extreme")
    _check(model, x, f"fc zp_x={zp_x} x={x_kind}")


def test_fully_connected_int4_per_tensor_and_many_blocks():
    """Per-tensor scale; 2000 rows of K = 1000 are ten row blocks, split between threads."""
    model, x = _fc(2000, 70, 1000, seed=3, per_channel=False)
    _check(model, x, "fc 2000 x 1000 -> 70")


def test_fully_connected_int4_panels_split_between_threads():
    """Few rows and many panels: the threads split the panels, each expanding its own."""
    model, x = _fc(3, 300, 200, seed=4)
    _check(model, x, "fc 3 x 200 -> 300")


CONV_CASES = [
    # n, h, w, cin, cout, (kh, kw), stride, dilation, pads, groups
    (1, 9, 9, 8, 16, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),
    (2, 11, 7, 5, 33, (3, 3), (2, 2), (1, 1), (0, 1, 2, 0), 1),
    (1, 12, 12, 6, 20, (3, 3), (1, 1), (2, 2), (2, 2, 2, 2), 2),
    (1, 8, 9, 9, 12, (5, 1), (1, 2), (1, 1), (2, 0, 2, 0), 3),
    (1, 6, 6, 64, 130, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"conv{i}" for i in range(len(CONV_CASES))])
@pytest.mark.parametrize("act16", [False, True], ids=["int8", "int16"])
def test_conv_2d_int4(case, act16):
    n, h, w_, cin, cout, (kh, kw), stride, dil, pads, groups = case
    rng = np.random.default_rng(sum(case[:5]))
    oh = _out_size(h, pads[0], pads[2], kh, dil[0], stride[0])
    ow = _out_size(w_, pads[1], pads[3], kw, dil[1], stride[1])
    w = _w(rng, (cout, kh, kw, cin // groups))
    options = Conv2DOptions(*stride, *dil, *pads, groups=groups)
    model = _model(OpCode.CONV_2D, (n, h, w_, cin), w, (n, oh, ow, cout), options, act16=act16, rng=rng,
                   zp_x=int(rng.integers(-128, 128)), zp_y=int(rng.integers(-20, 20)))
    _check(model, _x(rng, (n, h, w_, cin), act16), f"conv {case}")


def test_int4_panels_take_half_the_bytes_and_no_int8_copy():
    """The packed weights are the int8 panels' bytes halved; nothing else the size of the
    weights is kept."""
    model, _ = _fc(4, 200, 500, seed=5)
    op = model.operators[0]
    ins = [None, model.tensors[op.inputs[1]].data, model.tensors[op.inputs[2]].data]
    p = prepare_op(model, 0)
    for isa in ISA.supported():
        packed4 = gemm.pack_fully_connected(ins, p, isa)
        w8 = qrt.format.model.unpack_int4(ins[1], 200 * 500).reshape(200, 500)
        p8 = type(p)(p.input_zero_point, p.out)
        packed8 = gemm.pack_fully_connected([None, w8, ins[2]], p8, isa)
        assert packed4.int4 and not packed8.int4
        assert packed4.w.nbytes * 2 == packed8.w.nbytes
        big = [k for k, v in vars(packed4).items() if isinstance(v, np.ndarray) and v.nbytes >= packed4.w.nbytes]
        assert big == ["w"], big


def _depthwise_int4():
    w = np.ones((1, 3, 3, 8), np.int8)
    b = ModelBuilder("dw4")
    x = b.tensor("x", DType.INT8, (1, 5, 5, 8), scale=0.1, zero_point=0)
    wt = b.tensor("w", DType.INT4, w.shape, pack_int4(w), scale=0.1)
    bt = b.tensor("bias", DType.INT32, (8,), np.zeros(8, np.int32))
    y = b.tensor("y", DType.INT8, (1, 3, 3, 8), scale=0.1, zero_point=0)
    b.op(OpCode.DEPTHWISE_CONV_2D, [x, wt, bt], [y], DepthwiseConv2DOptions())
    b.input("x", x)
    b.output("y", y)
    return b.build()


def test_verifier_refuses_int4_where_no_form_reads_it():
    with pytest.raises(InvalidModelError, match="INT4, which DEPTHWISE_CONV_2D does not read"):
        verify_model(_depthwise_int4())
    rng = np.random.default_rng(1)
    with pytest.raises(InvalidModelError, match="per group"):  # per-group scales: weight-only only
        _model(OpCode.FULLY_CONNECTED, (2, 64), _w(rng, (4, 64)), (2, 4), group_size=32)
    w = _w(rng, (4, 64))
    w[2, 5] = -8
    with pytest.raises(InvalidModelError, match="contain -8"):
        _model(OpCode.FULLY_CONNECTED, (2, 64), w, (2, 4))


def test_int4_files_need_0_3_0_and_int8_files_do_not():
    rng = np.random.default_rng(2)
    w = _w(rng, (4, 64))
    assert min_runtime_version(_model(OpCode.FULLY_CONNECTED, (2, 64), w, (2, 4))) == "0.3.0"
    assert min_runtime_version(_model(OpCode.FULLY_CONNECTED, (2, 64), w, (2, 4), w_dtype=DType.INT8)) == "0.1.0"


def test_load_fast_matches_reference():
    rng = np.random.default_rng(9)
    for model, x in (_fc(5, 40, 77, seed=9, zp_x=11),
                     (_model(OpCode.CONV_2D, (1, 7, 7, 6), _w(rng, (24, 3, 3, 6)), (1, 5, 5, 24),
                             Conv2DOptions(), rng=rng), None)):
        data = qrt.to_bytes(model)
        ref_model = qrt.load(data, kernels="reference")
        name = ref_model.inputs[0].name
        x = _x(rng, ref_model.inputs[0].shape) if x is None else x
        xf = (x.astype(np.float32) - ref_model.inputs[0].zero_point) * ref_model.inputs[0].scale
        want = ref_model.run({name: xf})[0]
        for isa, threads in PATHS:
            got = qrt.load(data, kernels="fast", isa=isa, threads=threads).run({name: xf})[0]
            np.testing.assert_array_equal(got, want, err_msg=f"{isa}, {threads} threads")


def test_bad_int4_arguments_raise_value_error():
    model, x = _fc(2, 16, 32, seed=6)
    op = model.operators[0]
    p = prepare_op(model, 0)
    w4, bias = model.tensors[op.inputs[1]].data, model.tensors[op.inputs[2]].data
    out = np.zeros((2, 16), np.int8)
    with pytest.raises(ValueError, match="uint8 bytes of nibble pairs"):
        gemm.fully_connected([x, w4[:-1], bias], p, out)
    with pytest.raises(ValueError, match="uint8 bytes of nibble pairs"):
        gemm.fully_connected([x, w4.view(np.int8), bias], p, out)
    packed8 = gemm.pack_fully_connected([x, qrt.format.model.unpack_int4(w4, 512).reshape(16, 32), bias],
                                        type(p)(p.input_zero_point, p.out))
    with pytest.raises(ValueError, match="packed as int8"):
        gemm.bind_fully_connected([x, w4, bias], p, out, packed=packed8)
