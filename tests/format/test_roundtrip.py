"""Write -> read -> write gives identical models and identical bytes; files load zero-copy."""
from __future__ import annotations

import mmap

import numpy as np
import pytest

import qrt
from qrt.format import DType, ModelBuilder, OpCode
from qrt.format.reader import release_pages
from bench.fixtures.sample_models import all_ops_model, conv_chain_model


def assert_same_model(a, b):
    assert (a.name, len(a.tensors), len(a.operators)) == (b.name, len(b.tensors), len(b.operators))
    for ta, tb in zip(a.tensors, b.tensors):
        assert (ta.name, ta.dtype, ta.shape) == (tb.name, tb.dtype, tb.shape)
        assert (ta.data is None) == (tb.data is None), ta.name
        if ta.data is not None:
            assert ta.data.dtype == tb.data.dtype and np.array_equal(ta.data, tb.data), ta.name
        assert (ta.quant is None) == (tb.quant is None), ta.name
        if ta.quant is not None:
            assert ta.quant.scale.tobytes() == tb.quant.scale.tobytes(), ta.name  # bit-exact floats
            assert np.array_equal(ta.quant.zero_point, tb.quant.zero_point), ta.name
            assert ta.quant.axis == tb.quant.axis, ta.name
    assert a.operators == b.operators
    assert a.inputs == b.inputs and a.outputs == b.outputs
    assert a.metadata == b.metadata


@pytest.mark.parametrize("make", [all_ops_model, conv_chain_model])
def test_round_trip_bytes(make):
    model = make()
    data = qrt.to_bytes(model)
    back = qrt.read_model(data)
    assert_same_model(model, back)
    assert qrt.to_bytes(back) == data
    assert back.format_version == qrt.format.versions.REVISION_WITHOUT_SYMBOLS  # no symbols: as revision 3 wrote
    uses_0_2 = any(op.opcode in (OpCode.MAXIMUM, OpCode.MINIMUM) for op in model.operators)
    assert back.min_runtime_version == ("0.2.0" if uses_0_2 else "0.1.0")  # MAXIMUM, MINIMUM: 0.2.0


def test_round_trip_path_is_zero_copy(tmp_path):
    model = all_ops_model()
    path = tmp_path / "m.qmodel"
    size = qrt.write_model(model, path)
    assert size == path.stat().st_size == len(qrt.to_bytes(model))
    back = qrt.read_model(path)
    assert_same_model(model, back)
    for t in back.tensors:
        if t.data is not None:
            assert not t.data.flags.writeable and not t.data.flags.owndata, t.name
    w = next(t for t in back.tensors if t.name == "fc.weight")
    # The weights are a view of the mapped file at a 64-byte aligned address.
    assert w.data.ctypes.data % 64 == 0
    assert [p.name for p in tmp_path.iterdir()] == ["m.qmodel"]  # no temporary left


def test_released_pages_read_back_the_same(tmp_path):
    """release_pages (what qrt.load does to each op's weights once packed) changes resident
    memory only: the mapped constants read back unchanged, arrays not backed by a file are
    left alone, and a model loaded from the path runs as one loaded from bytes."""
    model = conv_chain_model()
    path = tmp_path / "m.qmodel"
    qrt.write_model(model, path)
    back = qrt.read_model(path)
    constants = [t.data for t in back.tensors if t.data is not None]
    copies = [c.copy() for c in constants]
    release_pages(constants + copies + [np.zeros(3)])
    for c, saved in zip(constants, copies):
        assert np.array_equal(c, saved)
    x = np.random.default_rng(0).standard_normal(qrt.load(path).inputs[0].shape).astype(np.float32)
    want = qrt.load(qrt.to_bytes(model)).run(x)
    assert np.array_equal(qrt.load(path).run(x), want)
    # A map the caller owns (here private and anonymous, where dropping pages would drop the
    # data) is never released.
    data = qrt.to_bytes(model)
    private = mmap.mmap(-1, len(data), flags=mmap.MAP_PRIVATE)
    private[:] = data
    loaded = qrt.load(memoryview(private))
    assert np.array_equal(loaded.run(x), want)
    for t, saved in zip(loaded.definition.tensors, model.tensors):
        if t.data is not None:
            assert np.array_equal(t.data, saved.data), t.name


def test_every_dtype_and_quantization_kind_round_trips():
    rng = np.random.default_rng(1)
    b = ModelBuilder("dtypes")
    x = b.tensor("x", DType.FLOAT32, (2, 3))
    y = b.tensor("y", DType.INT8, (2, 3), scale=0.1, zero_point=-128)
    b.op(OpCode.QUANTIZE, [x], [y])
    b.input("x", x)
    b.output("y", y)
    cases = {
        DType.FLOAT32: rng.standard_normal((4, 5)),
        DType.INT8: rng.integers(-128, 128, (4, 5)),
        DType.UINT8: rng.integers(0, 256, (4, 5)),
        DType.INT16: rng.integers(-32768, 32768, (4, 5)),
        DType.INT32: rng.integers(-2**31, 2**31, (4, 5)),
        DType.INT64: rng.integers(-2**63, 2**63 - 1, (4, 5), dtype=np.int64),
    }
    for dtype, values in cases.items():
        b.tensor(f"plain.{dtype.name}", dtype, (4, 5), values)
        if dtype != DType.FLOAT32 and dtype != DType.INT64:
            lo, hi = qrt.format.model.QUANT_RANGE[dtype]
            b.tensor(f"per_tensor.{dtype.name}", dtype, (4, 5), values, scale=0.37, zero_point=hi)
            b.tensor(f"per_channel.{dtype.name}", dtype, (4, 5), values, scale=rng.uniform(1e-6, 10, 5),
                     zero_point=np.linspace(lo, hi, 5).astype(int), axis=1)
    b.tensor("int4.odd", DType.INT4, (7,), np.arange(4, dtype=np.uint8), scale=[0.5], zero_point=-8)
    b.tensor("tiny_scale", DType.INT8, (1,), [1], scale=np.float32(1e-38))
    model = b.build()
    back = qrt.read_model(qrt.to_bytes(model))
    assert_same_model(model, back)
    assert back.tensors[-2].data.tolist() == [0, 1, 2, 3]


def test_writer_refuses_to_overwrite_with_invalid_model(tmp_path):
    path = tmp_path / "m.qmodel"
    path.write_bytes(b"keep me")
    model = all_ops_model()
    model.tensors[2].quant.scale[0] = np.nan
    with pytest.raises(qrt.InvalidModelError, match="conv.weight.*scale"):
        qrt.write_model(model, path)
    assert path.read_bytes() == b"keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["m.qmodel"]

