"""The ONNX front end's help for real-world exports (converters/onnx_reader.py, passes.py):
opsets older than 13 upgraded (the report says so), inputs frozen to constants, If on a constant
condition inlined (nested too), If on a run-time value refused naming the inputs to freeze, and
calibration arrays given as stacked full feeds or as a concatenation along the batch axis."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import qrt
from qrt.cli import main as cli_main
from qrt.converters.data import iter_calibration
from qrt.converters.errors import ConversionError, UnsupportedOpsError

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _accuracy(path, t) -> float:
    return float(np.mean(qrt.load(path).run(t.x_test).argmax(1) == t.y_test))


def _old_export(t, tmp_path, opset: int) -> str:
    """The digits CNN through PyTorch's TorchScript exporter at an old opset."""
    path = str(tmp_path / f"digits_opset{opset}.onnx")
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation warning
        warnings.simplefilter("ignore")
        torch.onnx.export(t.model.eval(), torch.from_numpy(t.x_train[:1]), path, opset_version=opset,
                          dynamo=False, input_names=["x"], output_names=["y"])
    assert onnx.load(path).opset_import[0].version == opset
    return path


@pytest.mark.parametrize("opset", [9, 11])
def test_old_opsets_are_upgraded(digits, opset, tmp_path):
    src = _old_export(digits, tmp_path, opset)
    out = tmp_path / "old.qmodel"
    report = qrt.convert(src, digits.calib, out, show_progress=False)
    assert f"opset {opset} upgraded to 17 (onnx.version_converter)" in report.notes
    assert f"note: opset {opset} upgraded" in str(report)
    assert _accuracy(out, digits) >= digits.float_accuracy - 0.01


def _with_if(src: str, dst: str, cond_from_input: bool = False, nested: bool = False) -> str:
    """The model's logits y (input x), then z = y * 2 if sr == 16000 else y * 3 (sr an int64 input), or
    with the condition computed from the image itself (cond_from_input): a run-time If.
    nested: the then branch holds another If on sr > 10000 (y * 2 or y * 5)."""
    m = onnx.load(src)
    g = m.graph
    y, x = g.output[0].name, g.input[0].name
    for name, v in (("two", 2.0), ("three", 3.0), ("five", 5.0)):
        g.initializer.append(numpy_helper.from_array(np.array(v, np.float32), name))
    g.initializer.append(numpy_helper.from_array(np.array([16000], np.int64), "k16"))
    g.initializer.append(numpy_helper.from_array(np.array([10000], np.int64), "k10"))

    def branch(name, factor):
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)
        return helper.make_graph([helper.make_node("Mul", [y, factor], [f"{name}_out"])], name, [], [out])

    then = branch("then", "two")
    if nested:
        inner = helper.make_node("If", ["gt"], ["then_out"], name="inner", then_branch=branch("in_then", "two"),
                                 else_branch=branch("in_else", "five"))
        then = helper.make_graph([helper.make_node("Greater", ["sr", "k10"], ["gt"]), inner], "then", [],
                                 [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, None)])
    if cond_from_input:
        for name, v in (("s0", [0, 0, 0, 0]), ("s1", [1, 1, 1, 1])):
            g.initializer.append(numpy_helper.from_array(np.array(v, np.int64), name))
        g.node.extend([helper.make_node("Slice", [x, "s0", "s1"], ["first"]),  # the first pixel
                       helper.make_node("Greater", ["first", "three"], ["c"])])
    else:
        g.input.append(helper.make_tensor_value_info("sr", TensorProto.INT64, [1]))
        g.node.append(helper.make_node("Equal", ["sr", "k16"], ["c"]))
    g.node.append(helper.make_node("If", ["c"], ["z"], name="pick", then_branch=then,
                                   else_branch=branch("else", "three")))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 10]))
    onnx.save(m, dst)
    return dst


@pytest.mark.parametrize("nested", [False, True], ids=["if", "nested-if"])
def test_freeze_folds_control_flow(digits, nested, tmp_path):
    src = _with_if(str(digits.onnx_path), str(tmp_path / "if.onnx"), nested=nested)
    want = digits.model(torch.from_numpy(digits.x_test[:20])).detach().numpy()
    cases = [(16000, 2.0, "then"), (8000, 3.0, "else")] + ([(16000, 2.0, "then")] if not nested else [])
    for rate, factor, branch in cases:
        out = tmp_path / f"if_{rate}.qmodel"
        report = qrt.convert(src, digits.calib, out, show_progress=False, freeze={"sr": rate})
        assert f"input 'sr' frozen to [{rate}]" in report.notes
        assert any(f"If 'pick'" in n and f"its {branch} branch inlined" in n for n in report.notes), report.notes
        m = qrt.load(out)
        assert [i.name for i in m.inputs] == ["input"]  # sr is a constant now
        got = m.run(digits.x_test[:20]) / factor  # the branch's factor is in the logits
        assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.95
        np.testing.assert_allclose(got, want, atol=0.1 * np.abs(want).max())


def test_if_on_a_run_time_value_says_what_to_freeze(digits, tmp_path):
    src = _with_if(str(digits.onnx_path), str(tmp_path / "if_rt.onnx"), cond_from_input=True)
    with pytest.raises(ConversionError, match=r"'pick': condition 'c' depends on input\(s\) \['input'\]"
                                              r"(.|\n)*--freeze NAME=VALUE"):
        qrt.convert(src, digits.calib, tmp_path / "no.qmodel", show_progress=False)
    assert not (tmp_path / "no.qmodel").exists()


def test_unfrozen_control_input_and_bad_freezes_are_refused(digits, tmp_path):
    src = _with_if(str(digits.onnx_path), str(tmp_path / "if.onnx"))
    out = tmp_path / "x.qmodel"
    with pytest.raises(ConversionError, match=r"condition 'c' depends on input\(s\) \['sr'\](.|\n)*--freeze"):
        qrt.convert(src, digits.calib, out, show_progress=False)  # int64 inputs pass through; the If stays
    with pytest.raises(ConversionError, match=r"freeze names \['rate'\], which are not inputs"):
        qrt.convert(src, digits.calib, out, show_progress=False, freeze={"rate": 1, "sr": 16000})
    with pytest.raises(ConversionError, match="freeze value for input 'sr' has 3 elements"):
        qrt.convert(src, digits.calib, out, show_progress=False, freeze={"sr": [1, 2, 3]})
    assert not out.exists()


def test_unsupported_op_in_a_branch_is_listed_up_front(digits, tmp_path):
    src = _with_if(str(digits.onnx_path), str(tmp_path / "if.onnx"))
    m = onnx.load(src)
    node = next(n for n in m.graph.node if n.op_type == "If")
    node.attribute[1].g.node[0].op_type = "NoSuchOp"
    onnx.save(m, str(tmp_path / "bad.onnx"))
    with pytest.raises(UnsupportedOpsError) as e:
        qrt.convert(str(tmp_path / "bad.onnx"), digits.calib, tmp_path / "x.qmodel", show_progress=False,
                    freeze={"sr": 16000})
    assert "NoSuchOp" in e.value.ops


def test_cli_freeze(digits, tmp_path, capsys):
    src = _with_if(str(digits.onnx_path), str(tmp_path / "if.onnx"))
    calib = tmp_path / "calib.npy"
    np.save(calib, digits.calib)
    out = tmp_path / "cli.qmodel"
    assert cli_main(["convert", src, "--calib", str(calib), "-o", str(out), "--freeze", "sr=8000", "--quiet"]) == 0
    assert "input 'sr' frozen to [8000]" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--freeze takes NAME=VALUE"):
        cli_main(["convert", src, "--calib", str(calib), "-o", str(out), "--freeze", "sr"])


def test_calibration_stacks_and_concatenations_of_feeds():
    """[samples, *input shape] (stacked feeds, rank + 1) and [samples * batch, ...] (the input's
    rank) give the same samples; so do .npz-style dicts of either and iterables of feed dicts."""
    rng = np.random.default_rng(0)
    x = rng.random((6, 2, 3, 4), np.float32)  # 6 feeds of an input [2, 3, 4]
    m = rng.random((6, 2, 5), np.float32)
    names, shapes = ["x", "m"], [(2, 3, 4), (2, 5)]
    stacked = list(iter_calibration({"x": x, "m": m}, names, shapes))
    flat = list(iter_calibration({"x": x.reshape(12, 3, 4), "m": m.reshape(12, 5)}, names, shapes))
    dicts = list(iter_calibration(({"x": x[i], "m": m[i]} for i in range(6)), names, shapes))
    assert len(stacked) == len(flat) == len(dicts) == 6
    for a, b, c in zip(stacked, flat, dicts):
        for n in names:
            assert np.array_equal(a[n], b[n]) and np.array_equal(a[n], c[n])
    one = list(iter_calibration(x, ["x"], [(2, 3, 4)]))
    assert len(one) == 6 and all(np.array_equal(s["x"], x[i]) for i, s in enumerate(one))


def test_integer_input_read_as_a_number_is_refused_clearly(tmp_path):
    """An int64 input cast to float and computed on (not an embedding index, not an attention
    mask) is refused naming it; before, its Cast was taken for a float -> float no-op."""
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT), helper.make_node("Relu", ["f"], ["y"])]
    g = helper.make_graph(nodes, "g", [vi("ids", TensorProto.INT64, [1, 4])], [vi("y", TensorProto.FLOAT, [1, 4])])
    path = str(tmp_path / "cast.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    with pytest.raises(ConversionError, match="integer input 'ids'|Cast"):
        qrt.convert(path, np.zeros((4, 1, 4), np.int64), tmp_path / "x.qmodel", show_progress=False)
    assert not (tmp_path / "x.qmodel").exists()


def test_freeze_overrides_an_input_default(tmp_path):
    """An input that also has an initializer (ONNX's default value) takes the frozen value."""
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Mul", ["x", "gain"], ["y"])]
    g = helper.make_graph(nodes, "g", [vi("x", TensorProto.FLOAT, [1, 4]), vi("gain", TensorProto.FLOAT, [1])],
                          [vi("y", TensorProto.FLOAT, [1, 4])], [numpy_helper.from_array(np.array([2.0], np.float32), "gain")])
    path = str(tmp_path / "gain.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    x = np.linspace(-1, 1, 40, dtype=np.float32).reshape(10, 1, 4)
    for freeze, factor in ((None, 2.0), ({"gain": 3.0}, 3.0)):
        out = tmp_path / "gain.qmodel"
        qrt.convert(path, x, out, show_progress=False, freeze=freeze)
        np.testing.assert_allclose(qrt.load(out).run(x[0]), x[0] * factor, atol=0.03 * factor)
