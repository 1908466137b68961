"""What qrt.convert and `qrt convert` do with what they cannot convert: unsupported ops, broken
files, calibration data that does not fit, an output path that is the source, an unknown
method, an untrusted .pt2. Each must raise the documented error (UnsupportedOpsError,
ConversionError, CalibrationDataError: all qrt.QrtError) with a message that names what is at
fault, write nothing (no output, no temporary file) and leave the source untouched; the CLI
must return 2 and print 'qrt: error: ...'. Each case has a positive control that converts.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import warnings

import numpy as np
import pytest

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import qrt  # noqa: E402
from qrt.converters.errors import CalibrationDataError, ConversionError, UnsupportedOpsError  # noqa: E402
from qrt.cli import main  # noqa: E402

RNG = np.random.default_rng(7)
SHAPE = (1, 1, 8, 8)


# --------------------------------------------------------------------------- helpers

def make_model(nodes, inits=(), inputs=(("x", SHAPE),), outputs=(("y", TensorProto.FLOAT, [1, 3]),), opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def conv_inits(cin=1, cout=4, classes=3):
    return {"w": RNG.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.3,
            "b": RNG.standard_normal(cout).astype(np.float32) * 0.1,
            "fw": RNG.standard_normal((classes, cout)).astype(np.float32) * 0.5,
            "fb": np.zeros(classes, np.float32)}


def good_model():
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm: converts."""
    return make_model([
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ], conv_inits())


def two_input_model():
    return make_model([
        helper.make_node("Conv", ["x", "w", "b"], ["cx"], name="conv_x", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["z", "w", "b"], ["cz"], name="conv_z", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["cx", "cz"], ["y"], name="add"),
    ], {k: v for k, v in conv_inits().items() if k in ("w", "b")}, inputs=(("x", SHAPE), ("z", SHAPE)),
        outputs=(("y", TensorProto.FLOAT, [1, 4, 8, 8]),))


def calib(n=12, shape=SHAPE[1:]):
    return RNG.random((n,) + tuple(shape)).astype(np.float32)


def listing(folder) -> dict:
    """{name: sha256} of every file under folder (hidden ones included)."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@contextlib.contextmanager
def writes_nothing(folder):
    """The block must leave `folder` exactly as it was: no output, no temporary file, every
    existing file byte for byte the same."""
    before = listing(folder)
    yield
    after = listing(folder)
    assert after == before, f"files changed: added {sorted(set(after) - set(before))}, " \
                            f"changed {sorted(k for k in before if after.get(k) != before[k])}"


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["convert", *map(str, args), "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def good_onnx(tmp_path):
    path = tmp_path / "good.onnx"
    onnx.save(good_model(), path)
    return path


# --------------------------------------------------------------------------- positive controls

def test_good_model_converts_by_api_and_cli(good_onnx, tmp_path, capsys):
    """The controls for everything below: the same model and data convert."""
    report = qrt.convert(good_onnx, calib(), tmp_path / "out.qmodel")
    assert (tmp_path / "out.qmodel").exists() and report.int8_bytes > 0
    np.save(tmp_path / "calib.npy", calib())
    code, out, err = cli(capsys, good_onnx, "-o", tmp_path / "cli.qmodel", "--calib", tmp_path / "calib.npy")
    assert code == 0, err
    assert (tmp_path / "cli.qmodel").exists() and "converted" in out
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


# --------------------------------------------------------------------------- unsupported ops

def many_unsupported_model():
    """A valid model (ONNX Runtime runs it) with an RNN, a NonMaxSuppression and two TopK."""
    hidden = 3
    return make_model([
        helper.make_node("RNN", ["x", "rnn_W", "rnn_R"], ["", "h"], name="encoder_rnn", hidden_size=hidden),
        helper.make_node("Tile", ["x", "reps"], ["s"], name="scores_tile"),
        helper.make_node("Transpose", ["s"], ["scores"], name="scores_t", perm=[0, 2, 1]),
        helper.make_node("NonMaxSuppression", ["x", "scores", "max_boxes"], ["keep"], name="box_nms"),
        helper.make_node("Flatten", ["x"], ["flat"], name="flat"),
        helper.make_node("TopK", ["flat", "k3"], ["top3", "top3_idx"], name="topk_first"),
        helper.make_node("TopK", ["top3", "k1"], ["y", "top1_idx"], name="topk_second"),
    ], {"rnn_W": RNG.standard_normal((1, hidden, 4)).astype(np.float32),
        "rnn_R": RNG.standard_normal((1, hidden, hidden)).astype(np.float32),
        "reps": np.array([1, 1, 2], np.int64), "max_boxes": np.array([2], np.int64),
        "k3": np.array([3], np.int64), "k1": np.array([1], np.int64)},
        inputs=(("x", (1, 6, 4)),),
        outputs=(("y", TensorProto.FLOAT, [1, 1]), ("h", TensorProto.FLOAT, [1, 6, hidden]),
                 ("keep", TensorProto.INT64, ["n", 3])))


def test_unsupported_ops_are_all_named_and_nothing_is_written(tmp_path, capsys):
    model = many_unsupported_model()
    path = tmp_path / "many.onnx"
    onnx.save(model, path)
    x = RNG.random((1, 6, 4)).astype(np.float32)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})  # a valid model
    out = tmp_path / "many.qmodel"
    with writes_nothing(tmp_path):
        with pytest.raises(UnsupportedOpsError) as info:
            qrt.convert(path, x[None].repeat(4, 0)[:, 0], out)
    e = info.value
    # Tile runs in the float executor but has no int8 form: named in the same error.
    assert e.ops == {"RNN": ["encoder_rnn"], "NonMaxSuppression": ["box_nms"],
                     "TopK": ["topk_first", "topk_second"], "Tile": ["scores_tile"]}
    msg = str(e)
    for word in ("RNN", "NonMaxSuppression", "TopK (2 nodes)", "'encoder_rnn'", "'box_nms'",
                 "'topk_first'", "'topk_second'", str(path)):
        assert word in msg, (word, msg)
    np.save(tmp_path / "calib.npy", x[None].repeat(4, 0)[:, 0])
    with writes_nothing(tmp_path):
        code, _, err = cli(capsys, path, "-o", out, "--calib", tmp_path / "calib.npy")
    assert code == 2
    assert err.startswith("qrt: error: ") and "TopK" in err and "encoder_rnn" in err and "box_nms" in err


def test_unsupported_op_of_another_domain_is_named(tmp_path):
    node = helper.make_node("Inverse", ["x"], ["y"], name="inv", domain="com.microsoft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    with writes_nothing(tmp_path), pytest.raises(UnsupportedOpsError) as info:
        qrt.convert(model, calib(), tmp_path / "o.qmodel")
    assert info.value.ops == {"com.microsoft::Inverse": ["inv"]}


def test_torch_topk_is_unsupported(tmp_path):
    import torch

    class TopK(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            return torch.topk(self.conv(x).flatten(1), 5).values

    with writes_nothing(tmp_path), pytest.raises(UnsupportedOpsError) as info:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            qrt.convert(TopK().eval(), calib(), tmp_path / "topk.qmodel", example_inputs=torch.zeros(SHAPE))
    assert list(info.value.ops) == ["TopK"] and len(info.value.ops["TopK"]) == 1
    assert "TopK" in str(info.value) and info.value.ops["TopK"][0] in str(info.value)


def elu_model():
    """Elu: the float executor runs it, the lowering has no int8 form of it."""
    return make_model([
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Elu", ["c"], ["y"], name="act_elu"),
    ], {k: v for k, v in conv_inits().items() if k in ("w", "b")}, outputs=(("y", TensorProto.FLOAT, [1, 4, 8, 8]),))


def test_every_unsupported_op_is_named_at_once(tmp_path):
    """A model with TopK (no float implementation) and Elu (no int8 lowering): one error must
    name both, or the user fixes TopK, calibrates for minutes, and only then hears of Elu.
    BUG: the ONNX reader raises for TopK alone; the lowering's check runs after calibration."""
    model = make_model([
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Elu", ["c"], ["e"], name="act_elu"),
        helper.make_node("Flatten", ["e"], ["f"], name="flatten"),
        helper.make_node("TopK", ["f", "k"], ["y", "idx"], name="best5"),
    ], {**{k: v for k, v in conv_inits().items() if k in ("w", "b")}, "k": np.array([5], np.int64)},
        outputs=(("y", TensorProto.FLOAT, [1, 5]),))
    with writes_nothing(tmp_path), pytest.raises(UnsupportedOpsError) as info:
        qrt.convert(model, calib(), tmp_path / "o.qmodel")
    assert info.value.ops == {"TopK": ["best5"], "Elu": ["act_elu"]}


def test_op_without_int8_form_is_refused_before_calibrating(tmp_path):
    """An op the lowering cannot quantize is known from the graph alone: the error must come
    before the calibration data is read (for a large model, before minutes of calibration).
    BUG: converters/pipeline.py calibrates first and lower() checks the ops after it."""
    read = []

    def samples():
        for i in range(8):
            read.append(i)
            yield calib(1)

    with writes_nothing(tmp_path), pytest.raises(UnsupportedOpsError) as info:
        qrt.convert(elu_model(), samples(), tmp_path / "o.qmodel")
    assert info.value.ops == {"Elu": ["act_elu"]}
    assert read == [], f"{len(read)} calibration samples were read before the unsupported op was reported"


# --------------------------------------------------------------------------- broken files

def _truncated(data: bytes, frac: float) -> bytes:
    return data[:max(1, int(len(data) * frac))]


BROKEN = {
    "truncated_10pc": lambda good: _truncated(good, 0.1),
    "truncated_50pc": lambda good: _truncated(good, 0.5),
    "truncated_last_byte": lambda good: good[:-1],
    "random_bytes": lambda good: np.random.default_rng(3).bytes(4096),
    "empty": lambda good: b"",
    "text": lambda good: b"ir_version: 8\nthis is not a model\n",
    "numpy_file": lambda good: b"\x93NUMPY\x01\x00" + bytes(200),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_file_is_a_conversion_error_naming_it(kind, tmp_path, capsys):
    good = good_model().SerializeToString()
    path = tmp_path / f"{kind}.onnx"
    path.write_bytes(BROKEN[kind](good))
    out = tmp_path / "out.qmodel"
    np.save(tmp_path / "calib.npy", calib())
    with writes_nothing(tmp_path):
        with pytest.raises(ConversionError) as info:
            qrt.convert(path, calib(), out)
        assert not isinstance(info.value, (UnsupportedOpsError, CalibrationDataError)), info.value
        assert str(path) in str(info.value)
        code, _, err = cli(capsys, path, "-o", out, "--calib", tmp_path / "calib.npy")
    assert code == 2 and err.startswith("qrt: error: ") and str(path) in err


def test_directory_and_missing_file(tmp_path, capsys):
    folder = tmp_path / "model.onnx"
    folder.mkdir()
    missing = tmp_path / "nope.onnx"
    np.save(tmp_path / "calib.npy", calib())
    for src in (folder, missing):
        with writes_nothing(tmp_path):
            with pytest.raises(ConversionError) as info:
                qrt.convert(src, calib(), tmp_path / "out.qmodel")
            assert str(src) in str(info.value)
            code, _, err = cli(capsys, src, "-o", tmp_path / "out.qmodel", "--calib", tmp_path / "calib.npy")
        assert code == 2 and err.startswith("qrt: error: ") and str(src) in err


def test_missing_external_data_names_the_model(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save_model(good_model(), path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    qrt.convert(path, calib(), tmp_path / "ok.qmodel")  # control: with its data it converts
    os.remove(tmp_path / "ext.onnx.data")
    os.remove(tmp_path / "ok.qmodel")
    with writes_nothing(tmp_path), pytest.raises(ConversionError) as info:
        qrt.convert(path, calib(), tmp_path / "out.qmodel")
    assert str(path) in str(info.value) and "ext.onnx.data" in str(info.value)


# --------------------------------------------------------------------------- calibration data

def _assert_calib_error(model, data, folder, *expected):
    with writes_nothing(folder), pytest.raises(CalibrationDataError) as info:
        qrt.convert(model, data, folder / "out.qmodel")
    msg = str(info.value)
    for word in expected:
        assert word in msg, (word, msg)
    return msg


CALIB_CASES = {
    # case: (data, words the message must hold: what was found, what was expected)
    "wrong_spatial_shape": (lambda: calib(10, (1, 9, 9)), ["(10, 1, 9, 9)", "(1, 1, 8, 8)", "expects"]),
    "no_channel_axis": (lambda: calib(10, (8, 8)), ["(10, 8, 8)", "(1, 1, 8, 8)", "expects"]),
    "channels_last": (lambda: calib(10, (8, 8, 1)), ["(10, 8, 8, 1)", "(1, 1, 8, 8)", "expects"]),
    "nan": (lambda: np.where(np.arange(10 * 64).reshape(10, 1, 8, 8) == 77, np.nan, calib(10)).astype(np.float32),
            ["NaN", "finite", "'x'"]),
    "inf": (lambda: np.where(np.arange(10 * 64).reshape(10, 1, 8, 8) == 5, np.inf, calib(10)).astype(np.float32),
            ["infinite", "finite"]),
    "uint8": (lambda: (calib(10) * 255).astype(np.uint8), ["uint8", "float32"]),
    "int64": (lambda: (calib(10) * 255).astype(np.int64), ["int64", "float32"]),
    "empty_array": (lambda: np.zeros((0, 1, 8, 8), np.float32), ["no samples", "'x'"]),
    "empty_list": (lambda: [], ["no calibration samples", "(1, 1, 8, 8)"]),
    "strings": (lambda: ["a", "b"], ["not a numeric array", "float32"]),
    "list_wrong_shape": (lambda: [calib(1), calib(1, (1, 4, 4))],
                         ["calibration sample 1", "(1, 1, 4, 4)", "(1, 1, 8, 8)"]),
}


@pytest.mark.parametrize("case", sorted(CALIB_CASES))
def test_calibration_data_that_does_not_fit(case, tmp_path, good_onnx):
    data, words = CALIB_CASES[case]
    _assert_calib_error(good_onnx, data(), tmp_path, *words)


def test_empty_array_message_shows_its_shape(tmp_path, good_onnx):
    """'found' must be the data's real shape. BUG (minor): converters/data.py formats the data's
    shape with _fmt_shape, which prints a 0 (an empty batch) as '?', the mark of a dynamic model
    dimension: 'holds no samples (shape (?, 1, 8, 8))'."""
    _assert_calib_error(good_onnx, np.zeros((0, 1, 8, 8), np.float32), tmp_path, "(0, 1, 8, 8)")


def test_wrong_number_of_inputs(tmp_path):
    model = two_input_model()
    qrt.convert(model, {"x": calib(), "z": calib()}, tmp_path / "ok.qmodel")  # control
    os.remove(tmp_path / "ok.qmodel")
    _assert_calib_error(model, calib(), tmp_path, "2 inputs", "'x'", "'z'")
    _assert_calib_error(model, {"x": calib()}, tmp_path, "missing ['z']", "['x', 'z']")
    _assert_calib_error(model, {"x": calib(), "z": calib(), "w": calib()}, tmp_path, "unknown ['w']")
    _assert_calib_error(model, [(calib(1), calib(1), calib(1))], tmp_path, "3 arrays", "2 inputs")
    _assert_calib_error(model, {"x": calib(10), "z": calib(6)}, tmp_path, "'x': 10", "'z': 6")
    # a one-input model given two arrays per sample
    _assert_calib_error(good_model(), [(calib(1), calib(1))], tmp_path, "2 arrays", "1 input")


def test_calibration_files(tmp_path, good_onnx, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, calib(10, (1, 9, 9)))
    msg = _assert_calib_error(good_onnx, bad, tmp_path, str(bad), "(10, 1, 9, 9)", "(1, 1, 8, 8)")
    assert "expects" in msg
    ints = tmp_path / "ints.npz"
    np.savez(ints, x=(calib(4) * 255).astype(np.uint8))
    _assert_calib_error(good_onnx, ints, tmp_path, str(ints), "uint8")
    missing = tmp_path / "missing.npy"
    _assert_calib_error(good_onnx, missing, tmp_path, str(missing), "no such file")
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy at all")
    _assert_calib_error(good_onnx, garbage, tmp_path, str(garbage))
    for path in (bad, ints, missing, garbage):
        with writes_nothing(tmp_path):
            code, _, err = cli(capsys, good_onnx, "-o", tmp_path / "out.qmodel", "--calib", path)
        assert code == 2 and err.startswith("qrt: error: ") and str(path) in err, err


def test_failed_conversion_leaves_an_existing_output_alone(tmp_path, good_onnx):
    out = tmp_path / "out.qmodel"
    out.write_bytes(b"the previous version")
    bad = calib(10)
    bad[3, 0, 0, 0] = np.nan
    with writes_nothing(tmp_path), pytest.raises(CalibrationDataError):
        qrt.convert(good_onnx, bad, out)
    assert out.read_bytes() == b"the previous version"


# --------------------------------------------------------------------------- the output path

def _same_path_variants(tmp_path, src):
    (tmp_path / "sub").mkdir()
    os.symlink(src, tmp_path / "link.qmodel")
    os.link(src, tmp_path / "hard.qmodel")
    return {"same string": str(src), "other spelling": str(tmp_path / "sub" / ".." / src.name),
            "relative": os.path.relpath(src), "symlink": str(tmp_path / "link.qmodel"),
            "hard link": str(tmp_path / "hard.qmodel")}


def test_output_equal_to_input_is_refused(tmp_path, good_onnx, capsys):
    np.save(tmp_path / "calib.npy", calib())
    for label, out in _same_path_variants(tmp_path, good_onnx).items():
        with writes_nothing(tmp_path):
            with pytest.raises(ConversionError) as info:
                qrt.convert(good_onnx, calib(), out)
            assert "is the input model" in str(info.value), (label, info.value)
            code, _, err = cli(capsys, good_onnx, "-o", out, "--calib", tmp_path / "calib.npy")
        assert code == 2 and err.startswith("qrt: error: "), (label, err)
    onnx.load(good_onnx)  # still the model


def test_output_equal_to_the_sources_external_data_is_refused(tmp_path):
    """Writing the .qmodel over the weights file of the .onnx destroys the source as surely as
    writing over the .onnx. BUG: pipeline.convert compares the output only with the .onnx."""
    path = tmp_path / "ext.onnx"
    onnx.save_model(good_model(), path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    data = (tmp_path / "ext.onnx.data").read_bytes()
    refused = None
    try:
        qrt.convert(path, calib(), tmp_path / "ext.onnx.data")
    except ConversionError as e:
        refused = e
    assert (tmp_path / "ext.onnx.data").read_bytes() == data, "the source's weights were overwritten by the .qmodel"
    assert refused is not None and "ext.onnx.data" in str(refused)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_output_in_a_missing_folder_or_on_a_folder(tmp_path, good_onnx, capsys):
    """The message must name the -o path the user gave. BUG (minor): for an output that is a
    directory it names the writer's hidden temporary file instead ('qrt: error:
    .../.afdxj3lg.qmodel.tmp: Is a directory'): qrt/format/writer.py lets os.replace's
    IsADirectoryError (whose filename is the temporary file) through."""
    np.save(tmp_path / "calib.npy", calib())
    missing = tmp_path / "no" / "such" / "folder" / "out.qmodel"
    (tmp_path / "adir").mkdir()
    for out in (missing, tmp_path / "adir"):
        with writes_nothing(tmp_path):
            with pytest.raises((qrt.QrtError, OSError)):
                qrt.convert(good_onnx, calib(), out)
            code, _, err = cli(capsys, good_onnx, "-o", out, "--calib", tmp_path / "calib.npy")
        assert code == 2 and err.startswith("qrt: error: ")
        assert str(out.parent if out == missing else out) in err, err


# --------------------------------------------------------------------------- options

def test_unknown_method(tmp_path, good_onnx, capsys):
    with writes_nothing(tmp_path), pytest.raises(ConversionError) as info:
        qrt.convert(good_onnx, calib(), tmp_path / "out.qmodel", method="kl_divergence")
    msg = str(info.value)
    assert "kl_divergence" in msg and "minmax" in msg and "entropy" in msg
    np.save(tmp_path / "calib.npy", calib())
    with writes_nothing(tmp_path), pytest.raises(SystemExit) as exit_info:
        main(["convert", str(good_onnx), "-o", str(tmp_path / "out.qmodel"), "--calib",
              str(tmp_path / "calib.npy"), "--method", "kl_divergence"])
    assert exit_info.value.code == 2  # argparse: invalid choice
    assert "kl_divergence" in capsys.readouterr().err


def test_bad_option_values(tmp_path, good_onnx):
    for kwargs in ({"limit": 0}, {"limit": -3}, {"holdout": 1.0}, {"holdout": -0.1}):
        with writes_nothing(tmp_path), pytest.raises(ConversionError) as info:
            qrt.convert(good_onnx, calib(), tmp_path / "out.qmodel", **kwargs)
        assert str(next(iter(kwargs.values()))) in str(info.value), (kwargs, info.value)


def test_module_without_example_inputs(tmp_path):
    import torch
    with writes_nothing(tmp_path), pytest.raises(ConversionError) as info:
        qrt.convert(torch.nn.Conv2d(1, 2, 3), calib(), tmp_path / "out.qmodel")
    assert "example_inputs" in str(info.value)
    with writes_nothing(tmp_path), pytest.raises(ConversionError) as info:
        qrt.convert(object(), calib(), tmp_path / "out.qmodel")
    assert "object" in str(info.value)


# --------------------------------------------------------------------------- .pt2

@pytest.fixture(scope="module")
def pt2_file(tmp_path_factory):
    import torch
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 64, 3)).eval()
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(model, (torch.zeros(SHAPE),)), str(path))
    return path


def test_pt2_without_trust_is_refused_and_not_unpickled(pt2_file, tmp_path, monkeypatch, capsys):
    import torch
    folder = pt2_file.parent
    loads = []
    real_load = torch.export.load
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    np.save(tmp_path / "calib.npy", calib())
    with writes_nothing(folder):
        with pytest.raises(ConversionError) as info:
            qrt.convert(pt2_file, calib(), folder / "out.qmodel")
        msg = str(info.value)
        assert "pickl" in msg and str(pt2_file) in msg and "trust" in msg, msg
        code, _, err = cli(capsys, pt2_file, "-o", folder / "out.qmodel", "--calib", tmp_path / "calib.npy")
    assert code == 2 and err.startswith("qrt: error: ") and "pickl" in err and "--trust-source" in err
    assert loads == [], "torch.export.load ran on an untrusted file"
    # control: trusted, it converts
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        qrt.convert(pt2_file, calib(), tmp_path / "trusted.qmodel", trust_source=True)
    assert loads and (tmp_path / "trusted.qmodel").exists()
