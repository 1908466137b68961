"""qrt.Model as an object handed around: pickled to other processes (by path or by bytes,
reloaded there), and float feeds holding NaN or +-inf refused before they are quantized."""
from __future__ import annotations

import multiprocessing
import os
import pickle
import tracemalloc
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import qrt
from qrt.format import DType, ModelBuilder, OpCode
from qrt.kernels import isa as _isa
from bench.fixtures.sample_models import conv_chain_model

KERNELS = ["fast", "reference"]


@pytest.fixture(scope="module")
def chain():
    return qrt.to_bytes(conv_chain_model())


def _feeds(n: int) -> list:
    rng = np.random.default_rng(7)
    return [rng.random((1, 3, 16, 16), dtype=np.float32) * 10 for _ in range(n)]


# ---------------------------------------------------------------------------------- pickling
# Workers of the spawned pool: top-level, so that the children can import them.

def score(model, x):
    return os.getpid(), model.run(x)


@pytest.fixture(scope="module")
def spawn_pool():
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@pytest.mark.parametrize("loaded_from", ["path", "bytes"])
def test_model_pickles_to_a_spawned_pool(spawn_pool, tmp_path, chain, loaded_from):
    if loaded_from == "path":
        path = tmp_path / "chain.qmodel"
        path.write_bytes(chain)
        m = qrt.load(path, threads=1)
        assert len(pickle.dumps(m)) < 1000  # the path, size and hash, not the weights
    else:
        m = qrt.load(chain, threads=1)
        assert len(pickle.dumps(m)) > len(chain)
    xs = _feeds(8)
    want = [m.run(x) for x in xs]
    got = list(spawn_pool.map(score, [m] * len(xs), xs, chunksize=1))
    assert all(pid != os.getpid() for pid, _ in got)
    for (_, y), w in zip(got, want):
        assert y.dtype == w.dtype and y.shape == w.shape
        assert y.tobytes() == w.tobytes()  # bit for bit


def test_options_not_given_are_left_to_the_receiver(monkeypatch, chain):
    monkeypatch.setenv("QRT_THREADS", "3")
    monkeypatch.delenv("QRT_KERNELS", raising=False)
    free, forced = qrt.load(chain), qrt.load(chain, threads=1, kernels="fast")
    assert (free.threads, free.kernels.name) == (3, "fast")
    # the receiving process has other defaults (in its environment)
    monkeypatch.setenv("QRT_THREADS", "2")
    monkeypatch.setenv("QRT_KERNELS", "reference")
    again = pickle.loads(pickle.dumps(free))
    assert (again.threads, again.kernels.name) == (2, "reference")
    again = pickle.loads(pickle.dumps(forced))
    assert (again.threads, again.kernels.name) == (1, "fast")


def test_pickle_keeps_a_forced_isa_and_leaves_the_rest_to_the_receiver(monkeypatch, chain):
    paths = _isa.supported()
    if len(paths) < 2:
        pytest.skip(f"this CPU has a single instruction-set path {paths}")
    best, other = paths[-1], paths[0]
    monkeypatch.delenv("QRT_ISA", raising=False)
    free, forced = qrt.load(chain), qrt.load(chain, isa=other)
    assert (free.isa, forced.isa) == (best, other)
    monkeypatch.setenv("QRT_ISA", other)  # stands in for a CPU whose best path is `other`
    assert pickle.loads(pickle.dumps(free)).isa == other
    monkeypatch.setenv("QRT_ISA", best)
    assert pickle.loads(pickle.dumps(forced)).isa == other
    x = _feeds(1)[0]
    assert np.array_equal(pickle.loads(pickle.dumps(free)).run(x), free.run(x))


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview])
def test_bytes_loaded_model_pickles_by_value(chain, make):
    m = qrt.load(make(chain))
    again = pickle.loads(pickle.dumps(m))
    x = _feeds(1)[0]
    assert np.array_equal(again.run(x), m.run(x))
    assert np.array_equal(pickle.loads(pickle.dumps(again)).run(x), m.run(x))


def test_unpickling_checks_the_file_contents(tmp_path, chain):
    path = tmp_path / "chain.qmodel"
    path.write_bytes(chain)
    m = qrt.load(path)
    blob = pickle.dumps(m)
    where = str(path)

    changed = bytearray(chain)
    changed[-1] ^= 1  # same size, other contents
    path.write_bytes(bytes(changed))
    with pytest.raises(qrt.QrtError, match=f"its file {where} changed since the model was pickled "
                                           r"\(same size, but SHA-256"):
        pickle.loads(blob)
    path.write_bytes(chain + b"\0" * 8)
    with pytest.raises(qrt.QrtError, match=rf"{where} changed .* \({len(chain) + 8} bytes now, {len(chain)} then\)"):
        pickle.loads(blob)
    path.unlink()
    with pytest.raises(qrt.QrtError, match=f"its file {where} cannot be read"):
        pickle.loads(blob)
    # The contents decide, not the file's dates: the same bytes written again load.
    path.write_bytes(chain)
    x = _feeds(1)[0]
    assert np.array_equal(pickle.loads(blob).run(x), m.run(x))


def test_a_relative_path_pickles_as_absolute(tmp_path, monkeypatch, chain):
    (tmp_path / "chain.qmodel").write_bytes(chain)
    monkeypatch.chdir(tmp_path)
    m = qrt.load("chain.qmodel")
    monkeypatch.chdir(os.path.dirname(tmp_path))
    x = _feeds(1)[0]
    assert np.array_equal(pickle.loads(pickle.dumps(m)).run(x), m.run(x))


@pytest.mark.parametrize("pickled_before", [False, True])
def test_pickling_refuses_a_file_changed_since_loading(tmp_path, chain, pickled_before):
    path = tmp_path / "chain.qmodel"
    path.write_bytes(chain)
    m = qrt.load(path)
    if pickled_before:
        pickle.dumps(m)  # hashes the file once
    other = tmp_path / "other.qmodel"
    other.write_bytes(qrt.to_bytes(conv_chain_model(seed=1)))
    os.replace(other, path)  # the usual way a file is updated: the model now differs from the file
    with pytest.raises(qrt.QrtError, match=f"cannot pickle the model loaded from {path}: the file "
                                           "changed since it was loaded"):
        pickle.dumps(m)
    path.unlink()
    with pytest.raises(qrt.QrtError, match=f"cannot pickle the model loaded from {path}: the file "
                                           "cannot be read now"):
        pickle.dumps(m)


def test_a_mode_change_does_not_stop_pickling(tmp_path, chain):
    """chmod (or chown, or a new hard link) changes the file's status, not the model in it."""
    path = tmp_path / "chain.qmodel"
    path.write_bytes(chain)
    m = qrt.load(path)
    os.chmod(path, 0o600)
    os.link(path, tmp_path / "link.qmodel")
    x = _feeds(1)[0]
    assert np.array_equal(pickle.loads(pickle.dumps(m)).run(x), m.run(x))


# ------------------------------------------------------------------------ non-finite feeds

BAD = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}


def _style(m, x, style):
    if style == "positional":
        return m.run(x)
    if style == "dict":
        return m.run({"input": x})
    if style == "keyword":
        return m.run(input=x)
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)  # "strided": a non-contiguous view
    wide[..., ::2] = x
    return m.run(wide[..., ::2])


@pytest.mark.parametrize("style", ["positional", "dict", "keyword", "strided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", sorted(BAD))
def test_non_finite_feed_is_refused(chain, style, dtype, bad):
    m = qrt.load(chain)
    x = _feeds(1)[0].astype(dtype)
    x[0, 2, 5, 7] = BAD[bad]  # NCHW, as the user holds it (stored NHWC: element (0, 5, 7, 2))
    with pytest.raises(qrt.InputError, match=rf"input 'input': element \(0, 2, 5, 7\) is {bad}; "
                                             r".*check_finite=False"):
        _style(m, x, style)
    with pytest.raises(qrt.InputError, match=rf"element \(0, 2, 5, 7\) is {bad}"):
        m.run(x, raw=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_in_a_later_batch_is_reported_where_the_user_put_it(chain, dtype):
    m = qrt.load(chain)
    x = np.concatenate(_feeds(3)).astype(dtype)  # three of the file's batch of 1
    x[2, 1, 15, 0] = np.inf
    x[2, 2, 0, 0] = np.nan
    with pytest.raises(qrt.InputError, match=r"input 'input': element \(2, 1, 15, 0\) is inf "
                                             r"\(2 of its 2304 elements are not finite\)"):
        m.run(x)
    x[2] = 0
    assert m.run(x).shape == (3, 10)


def _two_inputs():
    b = ModelBuilder()
    a = b.tensor("a", DType.INT8, (2, 4), scale=0.5, zero_point=3)
    c = b.tensor("b", DType.INT8, (2, 4), scale=0.25, zero_point=-2)
    y = b.tensor("y", DType.INT8, (2, 4), scale=0.5, zero_point=0)
    b.op(OpCode.ADD, [a, c], [y])
    b.input("a", a)
    b.input("b", c)
    b.output("y", y)
    return qrt.to_bytes(b.build())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_error_names_the_input_that_holds_it(dtype):
    m = qrt.load(_two_inputs())
    a, b = np.ones((2, 4), dtype), np.ones((2, 4), dtype)
    b[1, 3] = -np.inf
    for call in (lambda: m.run(a, b), lambda: m.run({"a": a, "b": b}), lambda: m.run(a=a, b=b)):
        with pytest.raises(qrt.InputError, match=r"input 'b': element \(1, 3\) is -inf;"):
            call()
    b[1, 3] = 1
    assert np.array_equal(m.run(a, b), np.full((2, 4), 2.0, np.float32))


def _identity_model(stored: DType):
    """x -> y with the same quantization, so that raw y is x as quantized at the boundary
    (INT8 input) or by a QUANTIZE op (FLOAT32 input)."""
    b = ModelBuilder()
    x = b.tensor("x", stored, (1, 6), **({} if stored == DType.FLOAT32 else {"scale": 0.5, "zero_point": 3}))
    y = b.tensor("y", DType.INT8, (1, 6), scale=0.5, zero_point=3)
    b.op(OpCode.QUANTIZE if stored == DType.FLOAT32 else OpCode.REQUANTIZE, [x], [y])
    b.input("x", x)
    b.output("y", y)
    return qrt.to_bytes(b.build())


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("stored", [DType.INT8, DType.FLOAT32])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_finite_false_quantizes_as_before(kernels, stored, dtype):
    m = qrt.load(_identity_model(stored), kernels=kernels)
    x = np.array([[np.nan, 1, np.inf, -np.inf, 2, -3]], dtype)
    with pytest.raises(qrt.InputError, match=r"input 'x': element \(0, 0\) is nan \(3 of its 6 elements"):
        m.run(x)
    # NaN quantizes to the zero point (0.0), +-inf to the ends of the range.
    assert m.run(x, raw=True, check_finite=False).tolist() == [[3, 5, 127, -128, 7, -3]]
    assert m.run(x, check_finite=False).tolist() == [[0, 1, 62, -65.5, 2, -3]]
    assert m.run({"x": x}, check_finite=False).tolist() == [[0, 1, 62, -65.5, 2, -3]]


@pytest.mark.parametrize("kernels", KERNELS)
def test_finite_values_beyond_the_range_saturate_silently(kernels):
    m = qrt.load(_identity_model(DType.INT8), kernels=kernels)
    big = np.array([[1e300, -1e300, 3e38, -3e38, 1e5, 0]])  # the first two overflow float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.run(big, raw=True).tolist() == [[127, -128, 127, -128, 127, 3]]
        assert m.run(big.clip(-3e38, 3e38).astype(np.float32), raw=True).tolist() == \
            [[127, -128, 127, -128, 127, 3]]


def test_integer_feeds_are_not_checked(chain):
    m = qrt.load(chain)
    q = np.random.default_rng(2).integers(-128, 128, (2, 3, 16, 16), dtype=np.int8)
    want = m.run(q)
    assert want.shape == (2, 10)
    x = (q.astype(np.float32) + 128) * np.float32(0.05)  # the same values as floats
    assert np.array_equal(m.run(x), want)
    assert np.array_equal(m.run(q, check_finite=False), want)


def test_the_check_allocates_nothing_sized_like_the_input():
    m = qrt.load(qrt.to_bytes(conv_chain_model(channels=4, blocks=1, size=128)))
    x = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    for feed in (x, x.astype(np.float64), np.concatenate([x, x])):  # fast path, general path, 2 batches
        m.run(feed)  # the first run of a thread makes its arena and scratch
        tracemalloc.start()
        m.run(feed)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < x.size // 8, peak  # a flag per element would take x.size bytes
