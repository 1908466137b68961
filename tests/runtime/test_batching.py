"""Feeds of several file batches run as one plan bound at k times the batch (qrt/runtime/
batching.py): the outputs equal, bit for bit, those of one run per file batch, on every kernel
set, path and thread count; models whose operators mix or move dimension 0 (OpDef.batch), or
whose batched copy does not verify, run one file batch at a time as before; a feed larger than
the arena cap runs in several groups; threads may run different batch sizes at once."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import qrt
from bench.fixtures.sample_models import all_ops_model, conv_chain_model
from qrt.format import (BatchMatMulOptions, ConcatOptions, DType, MeanOptions, OpCode, PadOptions, SoftmaxOptions,
                        TransposeOptions)
from qrt.kernels import isa as ISA
from qrt.runtime import executor
from qrt.runtime.batching import batchable, batched
from tests.runtime.helpers import Spec, one_op


def _feed(model, k, seed=0):
    rng = np.random.default_rng(seed)
    return {i.name: rng.uniform(-3, 3, (i.shape[0] * k,) + tuple(i.shape[1:])).astype(np.float32)
            for i in model.inputs}


def _one_at_a_time(model, feeds):
    """The outputs of one run per file batch, concatenated."""
    n = model.inputs[0].shape[0]
    total = next(iter(feeds.values())).shape[0]
    runs = [model.run({k: v[i:i + n] for k, v in feeds.items()}, raw=True) for i in range(0, total, n)]
    if isinstance(runs[0], dict):
        return {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}
    return np.concatenate(runs)


def _same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kernels", ["fast", "reference"])
@pytest.mark.parametrize("build", [all_ops_model, conv_chain_model], ids=["all_ops", "conv_chain"])
def test_batched_runs_equal_one_run_per_batch(build, kernels):
    data = qrt.to_bytes(build())
    paths = [(isa, t) for isa in ISA.supported() for t in (1, 2)] if kernels == "fast" else [(None, 1)]
    for isa, threads in paths:
        m = qrt.load(data, kernels=kernels, isa=isa, threads=threads)
        assert m._at(2) is not None, "this model keeps batch entries apart: it must run batched"
        for k in (2, 3, 7):
            feeds = _feed(m, k, seed=k)
            got = m.run(feeds, raw=True)
            assert m._local.last is m._bind(k)  # the run used the plan bound for k batches
            _same(got, _one_at_a_time(m, feeds))
            _same(m.run(feeds), m.run(feeds))  # and again (cached plan), dequantized


def _unbatchable():
    """One-op models whose operator mixes or moves dimension 0: (name, model)."""
    s = 0.05
    i8 = DType.INT8
    yield "transpose 0<->1", one_op(OpCode.TRANSPOSE, [Spec((2, 3, 4), i8, s)], Spec((3, 2, 4), i8, s),
                                    TransposeOptions((1, 0, 2)))
    yield "concat axis 0", one_op(OpCode.CONCAT, [Spec((1, 4), i8, s), Spec((1, 4), i8, s)], Spec((2, 4), i8, s),
                                  ConcatOptions(0))
    yield "mean over 0", one_op(OpCode.MEAN, [Spec((2, 4), i8, s)], Spec((1, 4), i8, s), MeanOptions((0,), True))
    yield "softmax axis 0", one_op(OpCode.SOFTMAX, [Spec((3, 4), i8, s)], Spec((3, 4), i8, 1 / 256, -128),
                                   SoftmaxOptions(0))
    yield "pad dim 0", one_op(OpCode.PAD, [Spec((1, 4), i8, s)], Spec((2, 4), i8, s), PadOptions((1, 0, 0, 0)))
    yield "reshape moving 0", one_op(OpCode.RESHAPE, [Spec((2, 4), i8, s)], Spec((8,), i8, s))
    # broadcasting run-time inputs of different ranks: scaled, x's batch would meet z's dimension 1
    yield "add [1, 4] + [1, 2, 4]", one_op(OpCode.ADD, [Spec((1, 4), i8, s), Spec((1, 2, 4), i8, s)],
                                           Spec((1, 2, 4), i8, 2 * s))
    yield "batch_matmul ranks 3, 4", one_op(OpCode.BATCH_MATMUL, [Spec((1, 3, 4), i8, s), Spec((1, 2, 4, 5), i8, s)],
                                            Spec((1, 2, 3, 5), i8, s), BatchMatMulOptions(False))
    # batchable operators, but a constant with the file's batch does not broadcast against k of them
    const = np.arange(-4, 4, dtype=np.int8).reshape(2, 4)
    yield "add per-entry constant", one_op(OpCode.ADD, [Spec((2, 4), i8, s), Spec((2, 4), i8, s, 0, const)],
                                           Spec((2, 4), i8, 2 * s))


@pytest.mark.parametrize("name,model", list(_unbatchable()), ids=[n for n, _ in _unbatchable()])
def test_models_that_mix_the_batch_run_one_batch_at_a_time(name, model):
    assert batched(model, 3) is None
    m = qrt.load(qrt.to_bytes(model))
    assert m._at(2) is None and m._group(5) == 1
    feeds = _feed(m, 3)
    _same(m.run(feeds, raw=True), _one_at_a_time(m, feeds))


def test_batchable_needs_the_batch_in_dimension_0():
    model = all_ops_model()
    assert batchable(model)
    copy = batched(model, 4)
    runtime = [(a.shape, b.shape) for a, b in zip(model.tensors, copy.tensors) if a.data is None]
    assert runtime and all(b[0] == 4 * a[0] and b[1:] == a[1:] for a, b in runtime)
    assert all(a is b for a, b in zip(model.tensors, copy.tensors) if a.data is not None)  # weights shared


def test_feeds_beyond_the_arena_cap_run_in_groups(monkeypatch):
    m = qrt.load(qrt.to_bytes(conv_chain_model()))
    monkeypatch.setattr(executor, "MAX_BATCH_ARENA", 3 * m.arena_bytes)
    assert m._group(10) == 3
    feeds = _feed(m, 10)
    got = m.run(feeds, raw=True)  # groups of 3, 3, 3 and 1
    assert m._local.last is m._bind(1)
    _same(got, _one_at_a_time(m, feeds))


def test_threads_run_different_batch_sizes_at_once():
    m = qrt.load(qrt.to_bytes(all_ops_model()))
    feeds = {k: _feed(m, k, seed=k) for k in (1, 2, 5, 6)}
    want = {k: _one_at_a_time(m, f) for k, f in feeds.items()}
    errors = []

    def work(k):
        try:
            for _ in range(5):
                _same(m.run(feeds[k], raw=True), want[k])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((k, e))
    threads = [threading.Thread(target=work, args=(k,)) for k in feeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
