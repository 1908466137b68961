"""LSTM and GRU in the float reference executor (converters/float_exec.py) against ONNX Runtime
and against the ONNX backend node test cases (onnx.backend.test.case.node lstm.py / gru.py).

Single-node models built with onnx.helper: LSTM and GRU x forward / reverse / bidirectional x
with and without B, initial states, sequence_lens (varying, one entry shorter than T, and 0) and
peepholes, batch 1 and 3, several T / I / H; clip, input_forget, linear_before_reset 0 / 1, a
non-default activations list with alpha / beta, outputs left out (""), opsets 7, 14 and 22.
ONNX Runtime refuses layout 1 (batch-first), so layout 1 is compared with ORT's layout-0 result
transposed, and with the backend cases test_lstm_batchwise / test_gru_batchwise. The 4th LSTM
output (qrt's extension: every step's cell state) is checked against Y_c and against ORT's Y_c on
the sequence cut at each step.
"""
from __future__ import annotations

import importlib
import itertools
import re
import warnings
import zlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from qrt.converters.float_exec import run_graph, run_node  # noqa: E402
from qrt.converters.ir import Graph, Node  # noqa: E402

INPUTS = {"LSTM": ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"],
          "GRU": ["X", "W", "R", "B", "sequence_lens", "initial_h"]}
OUTPUTS = {"LSTM": ["Y", "Y_h", "Y_c"], "GRU": ["Y", "Y_h"]}
GATES = {"LSTM": 4, "GRU": 3}
TOL = dict(rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- helpers

def _attrs_of(proto):
    out = {}
    for a in proto.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode() for s in v]
        elif isinstance(v, list):
            v = list(v)
        out[a.name] = v
    return out


def _qrt(proto, values):
    """float_exec's outputs of a NodeProto; values: {input name: array}."""
    node = Node(proto.op_type, list(proto.input), list(proto.output), _attrs_of(proto), proto.name)
    outs = run_node(node, [values[n] if n else None for n in proto.input])
    assert len(outs) == len(proto.output)
    return outs


def _ort(proto, values, opset=14):
    """ONNX Runtime's outputs of a NodeProto, one per name in proto.output ("" -> None)."""
    ins = [helper.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens" else TensorProto.FLOAT,
                                         values[n].shape) for n in proto.input if n]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in proto.output if n]
    model = helper.make_model(helper.make_graph([proto], "g", ins, outs),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10  # ONNX Runtime reads IR versions up to 13 or so
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    got = dict(zip([o for o in proto.output if o], s.run(None, {n: values[n] for n in proto.input if n})))
    return [got.get(n) if n else None for n in proto.output]


def _case(op, rng, t, b, i, h, direction="forward", bias=False, init=False, lens=None, peep=False,
          scale=0.5, x_scale=1.0):
    """Random values of a recurrent node's inputs: {name: array} (present inputs only)."""
    d = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    v = {"X": (rng.standard_normal((t, b, i)) * x_scale).astype(np.float32),
         "W": (rng.standard_normal((d, g * h, i)) * scale).astype(np.float32),
         "R": (rng.standard_normal((d, g * h, h)) * scale).astype(np.float32)}
    if bias:
        v["B"] = (rng.standard_normal((d, 2 * g * h)) * scale).astype(np.float32)
    if lens is not None:
        v["sequence_lens"] = np.asarray(lens, np.int32)
    if init:
        v["initial_h"] = rng.standard_normal((d, b, h)).astype(np.float32)
        if op == "LSTM":
            v["initial_c"] = rng.standard_normal((d, b, h)).astype(np.float32)
    if peep:
        v["P"] = (rng.standard_normal((d, 3 * h)) * scale).astype(np.float32)
    return v


def _node(op, values, outputs=None, **attrs):
    names = INPUTS[op]
    last = max(k for k, n in enumerate(names) if n in values)
    inputs = [n if n in values else "" for n in names[:last + 1]]
    return helper.make_node(op, inputs, OUTPUTS[op] if outputs is None else outputs, **attrs)


def _compare(proto, values, opset=14):
    want = _ort(proto, values, opset)
    got = _qrt(proto, values)
    for name, g, w in zip(proto.output, got, want):
        if name:
            assert g.dtype == np.float32, name
            np.testing.assert_allclose(g, w, err_msg=name, **TOL)
    return got


def _lens(rng, t, b):
    """Sequence lengths of a batch: varying, one at T, one shorter than T."""
    if b == 1:
        return [max(t - 1, 1)]
    return [t, max(t - 2, 1), int(rng.integers(1, t + 1))][:b]


SHAPES = [(1, 2, 3), (3, 4, 5), (5, 3, 8), (4, 1, 2)]  # (T, I, H)


# --------------------------------------------------------------------------- against ONNX Runtime

@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("bias,init,lens,extra", list(itertools.product([0, 1], repeat=4)))
def test_against_ort(op, direction, batch, bias, init, lens, extra):
    """extra: peepholes for LSTM, linear_before_reset for GRU."""
    rng = np.random.default_rng(zlib.crc32(repr((op, direction, batch, bias, init, lens, extra)).encode()))
    t, i, h = SHAPES[(bias + 2 * init + lens + extra + batch) % len(SHAPES)]
    values = _case(op, rng, t, batch, i, h, direction, bias=bias, init=init,
                   lens=_lens(rng, t, batch) if lens else None, peep=extra and op == "LSTM")
    attrs = dict(hidden_size=h, direction=direction)
    if op == "GRU":
        attrs["linear_before_reset"] = extra
    _compare(_node(op, values, **attrs), values)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("extra", [0, 1])
def test_clip(op, direction, extra):
    """clip bounds every gate's pre-activation (the LSTM cell input, the GRU hidden gate included):
    large weights and inputs so that it bites."""
    rng = np.random.default_rng(7 + extra)
    values = _case(op, rng, 4, 3, 3, 4, direction, bias=True, init=True, lens=[4, 2, 3], peep=extra and op == "LSTM",
                   scale=1.5, x_scale=2.0)
    attrs = dict(hidden_size=4, direction=direction, clip=0.7)
    if op == "GRU":
        attrs["linear_before_reset"] = extra
    got = _compare(_node(op, values, **attrs), values)
    unclipped = _qrt(_node(op, values, **{k: v for k, v in attrs.items() if k != "clip"}), values)
    assert not np.allclose(got[0], unclipped[0], atol=1e-3)  # the clip changed something


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("peep", [0, 1])
def test_lstm_input_forget(direction, peep):
    rng = np.random.default_rng(11)
    values = _case("LSTM", rng, 5, 3, 2, 3, direction, bias=True, init=True, lens=[5, 3, 1], peep=peep)
    _compare(_node("LSTM", values, hidden_size=3, direction=direction, input_forget=1), values)


ACTIVATIONS = {  # op: (activations per direction (forward then reverse), activation_alpha, activation_beta)
    "LSTM": (["HardSigmoid", "Elu", "Softsign", "LeakyRelu", "ScaledTanh", "Affine"],
             [0.3, 0.9, 0.05, 0.8, 0.6], [0.4, 1.3, 0.1]),
    "GRU": (["ThresholdedRelu", "Softplus", "hardsigmoid", "ScaledTanh"], [0.1, 0.25, 0.9], [0.45, 1.1]),
}


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("extra", [0, 1])
def test_activations(op, extra):
    """A non-default activations list, bidirectional; alpha / beta are consumed in order by the
    functions that take them (LSTM: HardSigmoid a b, Elu a, LeakyRelu a, ScaledTanh a b, Affine a
    b; GRU: ThresholdedRelu a, HardSigmoid a b, ScaledTanh a b); names are case-insensitive."""
    names, alpha, beta = ACTIVATIONS[op]
    rng = np.random.default_rng(3)
    values = _case(op, rng, 4, 3, 3, 4, "bidirectional", bias=True, init=True, lens=[4, 1, 3], peep=extra and op == "LSTM")
    attrs = dict(hidden_size=4, direction="bidirectional", activations=names, activation_alpha=alpha,
                 activation_beta=beta)
    if op == "GRU":
        attrs["linear_before_reset"] = extra
    _compare(_node(op, values, **attrs), values)


@pytest.mark.parametrize("names", [["Affine", "ThresholdedRelu", "ScaledTanh"], ["Tanh", "Relu", "Softplus"],
                                   ["HardSigmoid", "ScaledTanh", "Affine"]])
def test_activation_defaults(names):
    """Missing alpha / beta: ORT's defaults (LeakyRelu 0.01, HardSigmoid 0.2 / 0.5, Elu 1, else 0)."""
    rng = np.random.default_rng(5)
    values = _case("LSTM", rng, 3, 2, 3, 4, "forward", bias=True, init=True)
    _compare(_node("LSTM", values, hidden_size=4, activations=names, activation_alpha=[0.5][:len(names) - 2]), values)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_zero_and_short_lengths(op, direction):
    """A length-0 entry: Y = 0 and final states 0 (ORT), the others unaffected."""
    rng = np.random.default_rng(13)
    values = _case(op, rng, 5, 4, 3, 2, direction, bias=True, init=True, lens=[5, 0, 2, 1], peep=op == "LSTM")
    got = _compare(_node(op, values, hidden_size=2, direction=direction), values)
    assert not got[0][:, :, 1].any() and not got[1][:, 1].any()
    assert not got[0][2:, :, 2].any() and not got[0][1:, :, 3].any()


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("outputs", [["", "Y_h"], ["Y"], ["", "", "Y_c"], ["Y", "", "Y_c"]])
def test_outputs_left_out(op, outputs):
    """Outputs named "" still get a value, in node.outputs' order; those asked for match ORT."""
    outputs = outputs[:len(OUTPUTS[op])]
    if not any(outputs):
        return
    rng = np.random.default_rng(17)
    values = _case(op, rng, 4, 3, 2, 3, "bidirectional", bias=True, lens=[4, 2, 3])
    got = _compare(_node(op, values, outputs=outputs, hidden_size=3, direction="bidirectional"), values)
    assert [g.shape for g in got] == [(4, 2, 3, 3), (2, 3, 3), (2, 3, 3)][:len(outputs)]


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("opset", [7, 22])
def test_opsets(op, opset):
    rng = np.random.default_rng(19)
    values = _case(op, rng, 3, 3, 4, 5, "bidirectional", bias=True, init=True, lens=[3, 1, 2], peep=op == "LSTM")
    _compare(_node(op, values, hidden_size=5, direction="bidirectional"), values, opset=opset)


def test_hidden_size_from_r():
    """hidden_size left out: taken from R's shape."""
    rng = np.random.default_rng(23)
    values = _case("GRU", rng, 3, 2, 3, 4, "forward", bias=True)
    want = _qrt(_node("GRU", values, hidden_size=4), values)
    got = _qrt(_node("GRU", values), values)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


# --------------------------------------------------------------------------- layout 1

def _batch_first(values):
    out = dict(values)
    out["X"] = values["X"].transpose(1, 0, 2).copy()
    for n in ("initial_h", "initial_c"):
        if n in values:
            out[n] = values[n].transpose(1, 0, 2).copy()
    return out


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("full", [0, 1])
def test_layout_1(op, direction, full):
    """layout 1 (opset 14): X [B, T, I], Y [B, T, D, H], Y_h / Y_c [B, D, H], initial states
    batch-first; ORT refuses it, so compare with ORT's layout 0 transposed."""
    rng = np.random.default_rng(29 + full)
    t, b, h = 4, 3, 5
    values = _case(op, rng, t, b, 3, h, direction, bias=full, init=full, lens=[4, 2, 1] if full else None,
                   peep=full and op == "LSTM")
    want = _ort(_node(op, values, hidden_size=h, direction=direction), values)
    bf = _batch_first(values)
    got = _qrt(_node(op, bf, hidden_size=h, direction=direction, layout=1), bf)
    np.testing.assert_allclose(got[0], want[0].transpose(2, 0, 1, 3), **TOL)
    for g, w in zip(got[1:], want[1:]):
        np.testing.assert_allclose(g, w.transpose(1, 0, 2), **TOL)


# --------------------------------------------------------------------------- the 4th LSTM output

@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_lstm_cell_sequence(direction, layout):
    """The 4th output: every step's cell state in Y's layout, 0 past an entry's length; its last
    valid step (t = len-1 forward, t = 0 reverse) is Y_c."""
    rng = np.random.default_rng(31)
    t, b, h = 5, 3, 4
    lens = [5, 3, 1]
    values = _case("LSTM", rng, t, b, 2, h, direction, bias=True, init=True, lens=lens, peep=True)
    feed = _batch_first(values) if layout else values
    proto = _node("LSTM", feed, outputs=["Y", "Y_h", "Y_c", "C_seq"], hidden_size=h, direction=direction, layout=layout)
    y, y_h, y_c, c_seq = _qrt(proto, feed)
    assert c_seq.shape == y.shape and c_seq.dtype == np.float32
    if layout:  # back to [T, D, B, H] / [D, B, H]
        y, c_seq = y.transpose(1, 2, 0, 3), c_seq.transpose(1, 2, 0, 3)
        y_h, y_c = y_h.transpose(1, 0, 2), y_c.transpose(1, 0, 2)
    dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    for d, dname in enumerate(dirs):
        for k, n in enumerate(lens):
            last = n - 1 if dname == "forward" else 0
            np.testing.assert_array_equal(c_seq[last, d, k], y_c[d, k])
            np.testing.assert_array_equal(y[last, d, k], y_h[d, k])
            assert not c_seq[n:, d, k].any()
    # every step against ORT: the cell state at t is Y_c of the sequence cut there (forward: the
    # steps 0..t; reverse: the steps t..len-1, fed as a sequence of its own)
    for d, dname in enumerate(dirs):
        sub = {k: v[d:d + 1] for k, v in values.items() if k in ("W", "R", "B", "initial_h", "initial_c", "P")}
        for step in range(t):
            for k, n in enumerate(lens):
                if step >= n:
                    continue
                xs = values["X"][:step + 1, k:k + 1] if dname == "forward" else values["X"][step:n, k:k + 1]
                part = dict(sub, X=np.ascontiguousarray(xs))
                for s in ("initial_h", "initial_c"):
                    part[s] = np.ascontiguousarray(sub[s][:, k:k + 1])
                want = _ort(_node("LSTM", part, hidden_size=h, direction=dname), part)
                np.testing.assert_allclose(c_seq[step, d, k], want[2][0, 0], **TOL)


def test_run_graph():
    """Through run_graph on a tiny Graph: sequence_lens fed as a graph input (run_graph feeds
    numbers as float32), "" outputs skipped, the cell sequence output readable."""
    rng = np.random.default_rng(37)
    values = _case("LSTM", rng, 4, 3, 2, 3, "bidirectional", bias=True, init=True, lens=[4, 2, 3], peep=True)
    consts = {k: v for k, v in values.items() if k not in ("X", "sequence_lens")}
    g = Graph(nodes=[Node("LSTM", INPUTS["LSTM"], ["", "Y_h", "", "C_seq"],
                          {"hidden_size": 3, "direction": "bidirectional"}, "lstm")],
              constants=consts, inputs=["X", "sequence_lens"], outputs=["Y_h", "C_seq"])
    got = run_graph(g, {"X": values["X"], "sequence_lens": values["sequence_lens"]})
    want = _ort(_node("LSTM", values, hidden_size=3, direction="bidirectional"), values)
    np.testing.assert_allclose(got["Y_h"], want[1], **TOL)
    assert got["C_seq"].shape == (4, 2, 3, 3)

    gru_values = _case("GRU", rng, 3, 2, 2, 4, "reverse", bias=True, lens=[3, 1])
    g = Graph(nodes=[Node("GRU", INPUTS["GRU"][:5], ["Y", ""], {"hidden_size": 4, "direction": "reverse",
                                                               "linear_before_reset": 1})],
              constants={k: v for k, v in gru_values.items() if k not in ("X", "sequence_lens")},
              inputs=["X", "sequence_lens"], outputs=["Y"])
    got = run_graph(g, {"X": gru_values["X"], "sequence_lens": gru_values["sequence_lens"]})
    want = _ort(_node("GRU", gru_values, outputs=["Y"], hidden_size=4, direction="reverse", linear_before_reset=1),
                gru_values)
    np.testing.assert_allclose(got["Y"], want[0], **TOL)


def test_bad_attributes():
    rng = np.random.default_rng(41)
    values = _case("LSTM", rng, 3, 2, 2, 3, "bidirectional")
    with pytest.raises(ValueError, match="activations"):
        _qrt(_node("LSTM", values, hidden_size=3, direction="bidirectional", activations=["Sigmoid", "Tanh", "Tanh"]),
             values)
    with pytest.raises(ValueError, match="not supported"):
        _qrt(_node("LSTM", values, hidden_size=3, direction="bidirectional", activations=["Gelu"] * 6), values)
    with pytest.raises(ValueError, match="sequence_lens"):
        _qrt(_node("LSTM", dict(values, sequence_lens=np.array([4, 1], np.int32)), hidden_size=3,
                   direction="bidirectional"), dict(values, sequence_lens=np.array([4, 1], np.int32)))


# --------------------------------------------------------------------------- ONNX backend node cases

def _backend_cases():
    from onnx.backend.test.case import node
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for m in ("lstm", "gru"):  # defining a module's cases appends them to node._NodeTestCases
            importlib.import_module(f"{node.__name__}.{m}")
    return {c.name: c for c in node._NodeTestCases if re.match(r"test_(lstm|gru)_", c.name)}


BACKEND = _backend_cases()


def test_backend_cases_found():
    assert {"test_lstm_defaults", "test_lstm_with_peepholes", "test_lstm_batchwise", "test_gru_seq_length",
            "test_gru_batchwise", "test_gru_reverse", "test_gru_bidirectional"} <= set(BACKEND)


@pytest.mark.parametrize("name", sorted(BACKEND))
def test_backend_case(name):
    case = BACKEND[name]
    (proto,) = case.model.graph.node
    inputs, outputs = case.data_sets[0]
    values = dict(zip([n for n in proto.input if n], inputs))
    got = _qrt(proto, values)
    present = [g for n, g in zip(proto.output, got) if n]
    assert len(present) == len(outputs)
    for g, w in zip(present, outputs):
        np.testing.assert_allclose(g, w, **TOL)
