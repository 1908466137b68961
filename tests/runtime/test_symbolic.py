"""Symbols (SPEC.md section 2.15): one file runs at any size of a symbolic dimension up to its
max, without reloading. A run at size S computes, bit for bit, what the same model cut to S and
written as a file without symbols computes (tests/runtime/symbolic_models.py builds both) - on
every kernel set, instruction-set path and thread count, batched feeds included; plans are made
once per shape and kept for the latest few; threads run different sizes at once; feeds outside a
symbol's range, or disagreeing on it, are refused; the verifier refuses each broken rule."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import qrt
from qrt import InputError, InvalidModelError, verify_model
from qrt.format import DType, ModelBuilder, OpCode, Symbol, SymbolicDim
from qrt.kernels import isa as ISA
from qrt.runtime import executor
from qrt.runtime.batching import at, at_sizes, batchable
from tests.format.corrupt import unverified_bytes
from tests.runtime.symbolic_models import MODELS, attention, op_cases, pair, signal

PATHS = [("fast", isa, t) for isa in ISA.supported() for t in (1, 2)] + [("reference", None, 1)]
PATH_IDS = [f"{k}-{i}-{t}" if i else k for k, i, t in PATHS]


def _feed(info, size, axis, k=1, seed=0):
    shape = list(info.shape)
    shape[axis] = size
    shape[0] *= k
    rng = np.random.default_rng(seed + 31 * size + k)
    if info.dtype == "int32":
        return rng.integers(-20, 20, shape).astype(np.int32)
    return rng.uniform(-3, 3, shape).astype(np.float32)


_STATIC = {}


def _static(build, size) -> bytes:
    """The model cut to `size`, written without symbols."""
    key = (build, size)
    if key not in _STATIC:
        _STATIC[key] = qrt.to_bytes(build(size))
    return _STATIC[key]


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_every_size_equals_the_static_model_cut_to_it(name, path):
    build, lo, hi, axis = MODELS[name]
    kernels, isa, threads = path
    m = qrt.load(qrt.to_bytes(build()), kernels=kernels, isa=isa, threads=threads)
    for size in range(lo, hi + 1):
        static = qrt.load(_static(build, size), kernels=kernels, isa=isa, threads=threads)
        assert not static.definition.symbols
        x = _feed(m.inputs[0], size, axis)
        got, want = m.run(x, raw=True), static.run(x, raw=True)
        assert got.shape == want.shape == static.outputs[0].shape, (name, size)
        np.testing.assert_array_equal(got, want, err_msg=f"{name} at {size}")
        np.testing.assert_array_equal(m.run(x), static.run(x), err_msg=f"{name} at {size}, float")
        assert m.run(x.astype(np.float64)).shape == want.shape  # the general path's staging at the size
    # the file's own size takes run()'s short path
    x = _feed(m.inputs[0], hi, axis)
    assert m._run_float((x,), True) is not None


@pytest.mark.parametrize("name,case", list(op_cases().items()), ids=list(op_cases()))
def test_ops_with_shape_options_verify_and_run_at_every_size(name, case):
    """Operators take their shapes from their tensors, so those whose options bear on shapes
    (SLICE's begins and steps, PAD, TRANSPOSE, CONCAT, MEAN's axes, windows) verify and run at
    every size as the static model cut to it does; batched feeds too."""
    build, lo, hi = case
    m = qrt.load(qrt.to_bytes(build()))
    axis = next(iter(m.inputs[0].symbols))
    for size in range(lo, hi + 1):
        static = qrt.load(_static(build, size))
        for k in (1, 2):
            x = _feed(m.inputs[0], size, axis, k)
            np.testing.assert_array_equal(m.run(x, raw=True), static.run(x, raw=True), err_msg=f"{name} {size} {k}")


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_batched_feeds_at_a_size(path):
    kernels, isa, threads = path
    m = qrt.load(qrt.to_bytes(attention()), kernels=kernels, isa=isa, threads=threads)
    static = qrt.load(_static(attention, 5), kernels=kernels, isa=isa, threads=threads)
    assert batchable(static.definition) and m._at(3, (5,)) is not None
    for k in (2, 3, 7):
        x = _feed(m.inputs[0], 5, 1, k)
        got = m.run(x, raw=True)
        assert m._local.last is m._bind(k, (5,))  # one plan for k batches at size 5
        np.testing.assert_array_equal(got, static.run(x, raw=True))
        one_at_a_time = np.concatenate([m.run(x[i:i + 1], raw=True) for i in range(k)])
        np.testing.assert_array_equal(got, one_at_a_time)


def test_the_copy_at_a_size_is_the_static_model():
    model = attention()
    copy = at_sizes(model, (5,))
    static = attention(5)
    assert not copy.symbols and all(not t.symbolic_dims for t in copy.tensors)
    for a, b in zip(copy.tensors, static.tensors):
        assert (a.name, a.shape) == (b.name, b.shape)
        assert (a.data is None) == (b.data is None) and (a.data is None or np.array_equal(a.data, b.data)), a.name
    # tensors without symbolic dimensions are shared, and so are the file's weights
    assert copy.tensors[1] is model.tensors[1] and copy.tensors[1].name == "fc.weight"
    assert at(model, 1, model.max_sizes) is model
    assert at(model, 2, (5,)).tensors[0].shape == (2, 5, 16)


def test_plans_are_made_once_per_size_and_kept_for_the_latest(monkeypatch):
    made = []
    plan = executor.Plan
    monkeypatch.setattr(executor, "Plan", lambda steps: made.append(1) or plan(steps))
    m = qrt.load(qrt.to_bytes(attention()))
    assert len(made) == 1  # the file's, at load
    buffer = m._local.buffers[False]
    x = _feed(m.inputs[0], 5, 1)
    m.run(x)
    assert len(made) == 2
    m.run(x)
    m.run(_feed(m.inputs[0], 5, 1, seed=3))
    assert len(made) == 2  # the same size again: no new plan
    for size in range(1, 13):
        m.run(_feed(m.inputs[0], size, 1))
    assert len(m._batched) <= executor.MAX_PLANS + 1  # and the file's
    assert len(m._local.bounds) <= executor.MAX_PLANS
    assert (1, (12,)) in m._batched and m._bind(1) is m._local.file  # the file's plan stays
    # one file batch at any size runs in the thread's one arena buffer, the file's size
    assert m._local.buffers[False] is buffer and buffer.size == m.arena_bytes + 64
    # the latest sizes are still bound: running them again makes nothing
    before = len(made)
    for size in range(12, 5, -1):
        m.run(_feed(m.inputs[0], size, 1))
    assert len(made) == before


def test_threads_run_different_sizes_at_once():
    data = qrt.to_bytes(attention())
    m = qrt.load(data, threads=1)
    sizes = (1, 4, 7, 12)
    feeds = {s: _feed(m.inputs[0], s, 1, k=1 + s % 2) for s in sizes}
    want = {s: qrt.load(_static(attention, s), threads=1).run(feeds[s], raw=True) for s in sizes}
    errors = []

    def work(sizes):
        try:
            for _ in range(4):
                for s in sizes:
                    np.testing.assert_array_equal(m.run(feeds[s], raw=True), want[s])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(sizes[i:] + sizes[:i],)) for i in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# ---------------------------------------------------------------------------- the API

def test_io_info_names_the_symbolic_dimensions():
    m = qrt.load(qrt.to_bytes(attention()))
    x, y = m.inputs[0], m.outputs[0]
    assert x.shape == (1, 12, 16) and x.symbols == {1: ("sequence", 1, 12)}
    assert x.shape_text == "[1, sequence<=12, 16]"
    assert y.shape == (1, 12, 12) and y.symbols == {1: ("sequence", 1, 12), 2: ("sequence", 1, 12)}
    s = qrt.load(qrt.to_bytes(signal()))
    assert s.outputs[0].symbols == {1: ("(length+1)//2", 1, 8)}
    assert s.outputs[0].shape_text == "[1, (length+1)//2<=8, 12]"
    img = qrt.load(qrt.to_bytes(MODELS["image"][0]()))  # NCHW: stored axis 2 (W) is the user's axis 3
    assert img.inputs[0].shape == (1, 3, 4, 10) and img.inputs[0].symbols == {3: ("width", 3, 10)}
    assert img.inputs[0].shape_text == "[1, 3, 4, 3<=width<=10]"
    static = qrt.load(qrt.to_bytes(attention(5)))
    assert static.inputs[0].symbols == {} and static.inputs[0].shape == (1, 5, 16)


def test_feeds_outside_the_range_or_disagreeing_are_refused():
    m = qrt.load(qrt.to_bytes(attention()))
    with pytest.raises(InputError, match=r"input 'x': axis 1 has size 13, outside the range of symbol "
                                         r"'sequence': 1 to 12"):
        m.run(_feed(m.inputs[0], 13, 1))
    p = qrt.load(qrt.to_bytes(pair()))  # min 2
    a = np.zeros((1, 1, 4), np.float32)
    with pytest.raises(InputError, match=r"input 'a': axis 1 has size 1, outside the range of symbol "
                                         r"'sequence': 2 to 8"):
        p.run(a, a)
    with pytest.raises(InputError, match=r"inputs 'a' \(axis 1\) and 'b' \(axis 1\) both have symbol 'sequence' "
                                         r"\(2 to 8\) but sizes 3 and 5"):
        p.run(np.zeros((1, 3, 4), np.float32), np.zeros((1, 5, 4), np.float32))
    with pytest.raises(InputError, match=r"shape \(1, 5, 8\) does not match \[1, sequence<=12, 16\]"):
        m.run(np.zeros((1, 5, 8), np.float32))
    got = p.run(np.ones((2, 3, 4), np.float32), np.ones((2, 3, 4), np.float32))
    assert got.shape == (2, 3, 4)


# ---------------------------------------------------------------------------- verification

def _base(**change):
    """x [1, T, 4] (T max 6, min 2) -> ADD a [T, 4] table -> y, with the pieces to break."""
    b = ModelBuilder("base")
    sym = b.symbol(change.get("name", "sequence"), change.get("max", 6), change.get("min", 2))
    x = b.tensor("x", DType.INT8, change.get("x_shape", (1, 6, 4)), scale=0.05,
                 symbolic_dims=change.get("x_dims", [(1, sym)]))
    table = b.tensor("table", DType.INT8, change.get("t_shape", (6, 4)), np.ones(change.get("t_shape", (6, 4))),
                     scale=0.05, symbolic_dims=change.get("t_dims", [(0, sym)]))
    y = b.tensor("y", DType.INT8, (1, 6, 4), scale=0.1, symbolic_dims=change.get("y_dims", [(1, sym)]))
    b.op(OpCode.ADD, [x, table], [y])
    b.input("x", x)
    b.output("y", y)
    for extra in change.get("symbols", ()):
        b.model.symbols += (extra,)
    return b.build()


REFUSED = [
    ("symbol index", dict(t_dims=[(0, 1)]), r"tensor 1 'table': symbolic dimension \(axis 0, symbol 1\): symbol 1 "
                                            r"is not one of the model's 1 symbols"),
    ("min 0", dict(min=0), r"symbol 0 'sequence': sizes min 0, max 6: need 1 <= min <= max"),
    ("min > max", dict(min=7), r"symbol 0 'sequence': sizes min 7, max 6"),
    ("no name", dict(name=""), r"symbol 0: name must be a non-empty string"),
    ("same name", dict(symbols=[Symbol("sequence", 3)]), r"symbol 1 'sequence': the name is already used by symbol 0"),
    ("axis", dict(t_dims=[(2, 0)]), r"tensor 1 'table': symbolic dimension \(axis 2, symbol 0\): axis 2 is not a "
                                    r"dimension of shape \(6, 4\)"),
    ("axis twice", dict(y_dims=[(1, 0), (1, 0)]), r"tensor 2 'y': .*axis 1 has two symbolic dimensions"),
    ("divisor", dict(t_dims=[SymbolicDim(0, 0, 1, 0, 0)]), r"tensor 1 'table': .*divisor 0 must be >= 1"),
    ("multiplier", dict(t_dims=[SymbolicDim(0, 0, -1, 12)]), r"tensor 1 'table': .*multiplier -1 must be >= 0"),
    ("value at max", dict(t_dims=[SymbolicDim(0, 0, 1, 1)]),
     r"tensor 1 'table': .*: sequence\+1 is 7 at sequence = 6 \(its max\), but the stored "
     r"dimension 0 of shape \(6, 4\) is 6"),
    ("value at min", dict(t_dims=[SymbolicDim(0, 0, 2, -6)]),
     r"tensor 1 'table': .*: 2\*sequence-6 is -2 at sequence = 2 \(its min\); dimensions must be >= 1"),
    ("input expression", dict(x_dims=[SymbolicDim(1, 0, 1, 0, 1), SymbolicDim(2, 0, 0, 4)]),
     r"graph inputs\[0\] 'x': dimension 2 is 4; a graph input's symbolic "
     r"dimensions must be the symbol itself"),
    ("input batch", dict(x_dims=[(1, 0), (0, 0)], x_shape=(6, 6, 4)),
     r"graph inputs\[0\] 'x': dimension 0 varies with symbol 'sequence', but the batch is not symbolic: the first "
     r"dimension may be any multiple of the file's batch"),
    ("on no input", dict(symbols=[Symbol("other", 3)]), r"symbol 1 'other': appears on no graph input"),
    # valid at max, broken at min: a table of fixed length does not broadcast against x at T = 2
    ("at min", dict(t_dims=[]), r"at sequence = 2 \(every symbol at its min\): operator 0 \(ADD\): "),
    ("output at min", dict(y_dims=[]), r"at sequence = 2 \(every symbol at its min\): operator 0 \(ADD\): "),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_the_verifier_refuses(case):
    _, change, message = case
    model = _base(**change)
    with pytest.raises(InvalidModelError, match=message):
        verify_model(model)
    with pytest.raises(InvalidModelError, match=message):  # the writer verifies first
        qrt.to_bytes(model)
    with pytest.raises(InvalidModelError, match=message):  # and so does the reader
        qrt.read_model(unverified_bytes(model))


def test_the_base_model_of_the_refusals_is_valid():
    verify_model(_base())
    assert qrt.load(qrt.to_bytes(_base())).run(np.zeros((1, 3, 4), np.float32)).shape == (1, 3, 4)


def test_a_size_the_loader_did_not_check_that_breaks_a_rule_fails_the_run():
    """The loader verifies the symbols' max and min; a size between that breaks an operator's
    rule (here a SLICE of rows 1, 3, 5 ... that leaves its input at odd lengths) fails that run
    with InvalidModelError naming the size, and the sizes that verify keep running."""
    from qrt.format import SliceOptions

    b = ModelBuilder("odd")
    t = b.symbol("sequence", 6, 2)
    x = b.tensor("x", DType.INT8, (1, 6, 4), scale=0.05, symbolic_dims=[(1, t)])
    y = b.tensor("y", DType.INT8, (1, 3, 4), scale=0.05, symbolic_dims=[SymbolicDim(1, t, 1, 1, 2)])
    b.op(OpCode.SLICE, [x], [y], SliceOptions((0, 1, 0), (1, 2, 1)))  # floor((T + 1) / 2) rows from row 1
    b.input("x", x)
    b.output("y", y)
    m = qrt.load(qrt.to_bytes(b.build()))
    assert m.run(np.zeros((1, 4, 4), np.float32)).shape == (1, 2, 4)
    with pytest.raises(InvalidModelError, match=r"^at sequence = 3: operator 0 \(SLICE\): "):
        m.run(np.zeros((1, 3, 4), np.float32))
    assert m.run(np.zeros((1, 2, 4), np.float32)).shape == (1, 1, 4)
