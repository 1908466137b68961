"""qrt.load / Model.run as a user calls them: feeds, layouts, batches, bad input, threads,
and whole models against an independent op-by-op evaluation of the reference."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import qrt
from qrt.format import OpCode
from qrt.runtime.arena import lifetimes, plan_arena
from qrt.ops import OPS, prepare_op
from qrt.runtime.kernel_sets import KERNEL_SETS
from bench.fixtures.sample_models import all_ops_model, conv_chain_model

KERNELS = sorted(KERNEL_SETS)


def op_by_op(model, feeds: dict) -> dict:
    """Evaluate the graph tensor by tensor with each op's reference (qrt.ops; no arena, no plan)."""
    values = {i: t.data for i, t in enumerate(model.tensors) if t.data is not None}
    values.update(feeds)
    for i, op in enumerate(model.operators):
        p = prepare_op(model, i)
        ins = [values[t] for t in op.inputs]
        y = OPS[op.opcode].reference(ins, p)
        values[op.outputs[0]] = np.asarray(y).reshape(model.tensors[op.outputs[0]].shape)
    return {g.name: values[g.tensor] for g in model.outputs}


@pytest.fixture(scope="module")
def all_ops():
    return qrt.to_bytes(all_ops_model())


@pytest.fixture(scope="module")
def chain():
    return qrt.to_bytes(conv_chain_model())


@pytest.mark.parametrize("kernels", KERNELS)
def test_all_ops_model_matches_op_by_op_reference(all_ops, kernels):
    m = qrt.load(all_ops, kernels=kernels)
    rng = np.random.default_rng(3)
    for trial in range(5):
        x = (rng.standard_normal((1, 8, 8, 3)) * (trial + 1)).astype(np.float32)
        want = op_by_op(m.definition, {0: x})
        got = m.run(x)
        for name in ("probs", "features"):
            assert got[name].dtype == np.float32
            assert np.array_equal(got[name], want[name]), (trial, name)


@pytest.mark.parametrize("kernels", KERNELS)
def test_nchw_boundary_and_batches(chain, kernels):
    m = qrt.load(chain, kernels=kernels)
    info = m.inputs[0]
    assert (info.name, info.shape, info.dtype, info.layout) == ("input", (1, 3, 16, 16), "int8", "NCHW")
    assert (round(info.scale, 6), info.zero_point) == (0.05, -128)
    assert m.outputs[0].shape == (1, 10)
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (3, 3, 16, 16), dtype=np.int8)  # stored integers, NCHW
    raw = m.run(x, raw=True)
    assert raw.dtype == np.int8 and raw.shape == (3, 10)
    for b in range(3):
        nhwc = np.ascontiguousarray(x[b:b + 1].transpose(0, 2, 3, 1))
        assert np.array_equal(raw[b:b + 1], op_by_op(m.definition, {0: nhwc})["logits"])
    scaled = m.run(x)
    assert np.array_equal(scaled, np.float32(m.outputs[0].scale) * raw.astype(np.float32))


@pytest.mark.parametrize("kernels", KERNELS)
def test_feed_styles_agree(chain, kernels):
    m = qrt.load(chain, kernels=kernels)
    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32) * 10
    y = m.run(x)
    assert np.array_equal(m.run({"input": x}), y)
    assert np.array_equal(m.run(input=x), y)
    assert np.array_equal(m.run(x.astype(np.float64)), y)
    # A float feed is quantized with the input's scale and zero point (round half to even).
    q = np.clip(np.rint(x.astype(np.float64) / np.float32(0.05)) - 128, -128, 127).astype(np.int8)
    assert np.array_equal(m.run(q), y)
    # Non-contiguous views are fine.
    wide = np.zeros((1, 3, 16, 32), np.float32)
    wide[..., ::2] = x
    assert np.array_equal(m.run(wide[..., ::2]), y)


@pytest.mark.parametrize("feed, message", [
    ({"inputs": np.zeros((1, 3, 16, 16), np.float32)}, r"inputs must be exactly \['input'\]; unknown: \['inputs'\]; missing"),
    ({}, r"missing: \['input'\]"),
    (np.zeros((1, 16, 16, 3), np.float32), r"shape \(1, 16, 16, 3\) does not match \(1, 3, 16, 16\) \(NCHW\)"),
    (np.zeros((0, 3, 16, 16), np.float32), r"shape \(0, 3, 16, 16\)"),
    (np.zeros((3, 16, 16), np.float32), r"shape \(3, 16, 16\)"),
    (np.zeros((1, 3, 16, 16), np.int32), r"dtype int32 is not accepted; pass float32 or int8"),
    (np.zeros((1, 3, 16, 16), np.uint8), r"dtype uint8 is not accepted"),
    (np.zeros((1, 3, 16, 16), np.complex64), r"dtype complex64 is not accepted"),
    (np.array([["a"]]), r"dtype <U1 is not accepted"),
    ([[object()]], r"dtype object is not accepted"),
])
def test_bad_feeds_are_clear_errors(chain, feed, message):
    m = qrt.load(chain)
    with pytest.raises(qrt.InputError, match=message):
        m.run(feed)


def test_bad_feed_combinations(chain):
    m = qrt.load(chain)
    x = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(qrt.InputError, match="takes 1 input"):
        m.run(x, x)
    with pytest.raises(qrt.InputError, match="not both"):
        m.run(x, input=x)
    with pytest.raises(qrt.InputError, match="unknown kernel set 'turbo'"):
        qrt.load(chain, kernels="turbo")


@pytest.mark.parametrize("kernels", KERNELS)
def test_concurrent_runs_are_correct(chain, kernels):
    m = qrt.load(chain, kernels=kernels)
    rng = np.random.default_rng(7)
    xs = [rng.random((2, 3, 16, 16), dtype=np.float32) * 12 for _ in range(8)]
    want = [m.run(x) for x in xs]
    errors = []

    def worker(k):
        try:
            for rep in range(10):
                i = (k + rep) % len(xs)
                if not np.array_equal(m.run(xs[i]), want[i]):
                    errors.append((k, rep))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("make", [all_ops_model, conv_chain_model])
def test_arena_never_overlaps_live_tensors(make):
    model = make()
    plan = plan_arena(model)
    life = lifetimes(model)
    spans = {t: (plan.offsets[t], plan.offsets[t] + model.tensors[t].numel * (4 if model.tensors[t].dtype == 0 else 1))
             for t in life}
    for a in life:
        for b in life:
            if a < b and life[a][0] <= life[b][1] and life[b][0] <= life[a][1]:
                (s1, e1), (s2, e2) = spans[a], spans[b]
                assert e1 <= s2 or e2 <= s1, (model.tensors[a].name, model.tensors[b].name)
    assert all(off % 64 == 0 for off in plan.offsets.values())
    assert plan.size < plan.naive_size


def test_load_from_path_and_describe(tmp_path, chain):
    path = tmp_path / "m.qmodel"
    path.write_bytes(chain)
    m = qrt.load(path)
    pixels = 16 * 16 * 16  # output elements of each conv
    assert m.macs == pixels * 9 * 3 + 2 * pixels * 9 * 16 + 10 * 16
    assert m.arena_bytes == 8192 and m.naive_arena_bytes > m.arena_bytes


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("dtype, zp, want", [
    ("UINT8", 128, [128, 148, 0, 255]),
    ("INT16", -7, [-7, 13, -2007, 1993]),
    ("INT8", 3, [3, 23, -128, 127]),
])
def test_quantize_to_every_integer_dtype(kernels, dtype, zp, want):
    from qrt.format import DType, ModelBuilder
    b = ModelBuilder()
    x = b.tensor("x", DType.FLOAT32, (1, 4))
    y = b.tensor("y", DType[dtype], (1, 4), scale=0.5, zero_point=zp)
    b.op(OpCode.QUANTIZE, [x], [y])
    b.input("x", x)
    b.output("y", y)
    m = qrt.load(qrt.to_bytes(b.build()), kernels=kernels)
    got = m.run(np.array([[0, 10, -1000, 1000]], np.float32), raw=True)
    assert got.dtype == np.dtype(dtype.lower()) and got.tolist() == [want]


@pytest.mark.parametrize("kernels", KERNELS)
def test_requantize_int8_to_uint8(kernels):
    from qrt.format import DType, ModelBuilder
    b = ModelBuilder()
    x = b.tensor("x", DType.INT8, (1, 4), scale=0.5, zero_point=0)
    y = b.tensor("y", DType.UINT8, (1, 4), scale=0.5, zero_point=128)
    b.op(OpCode.REQUANTIZE, [x], [y])
    b.input("x", x)
    b.output("y", y)
    m = qrt.load(qrt.to_bytes(b.build()), kernels=kernels)
    assert m.run(np.array([[0, 10, -128, 127]], np.int8), raw=True).tolist() == [[128, 138, 0, 255]]


def test_a_run_allocates_only_its_outputs():
    import tracemalloc
    m = qrt.load(qrt.to_bytes(conv_chain_model(channels=16, blocks=3, size=64)), kernels="fast")
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    m.run(x)  # the first run of a thread makes its arena
    activations = 64 * 64 * 16
    tracemalloc.start()
    m.run(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert m.arena_bytes >= 2 * activations
    assert peak < activations // 4, peak  # outputs are 40 bytes; no tensor-sized allocation


def test_resnet_like_fast_equals_reference_and_arena_shares():
    from bench.fixtures.models import resnet18
    data = qrt.to_bytes(resnet18(size=40, width=8, classes=10, seed=3))
    fast, ref = qrt.load(data, kernels="fast"), qrt.load(data, kernels="reference")
    x = np.random.default_rng(2).random((2, 3, 40, 40), dtype=np.float32) * 4 - 2
    assert np.array_equal(fast.run(x, raw=True), ref.run(x, raw=True))
    assert fast.arena_bytes < fast.naive_arena_bytes / 2
