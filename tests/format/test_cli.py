"""`qrt inspect` on good and bad files, as a user runs it."""
import json
import subprocess
import sys

import pytest

import qrt
from qrt.cli import main
from bench.fixtures.sample_models import all_ops_model, conv_chain_model


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "all.qmodel"
    qrt.write_model(all_ops_model(), path)
    return path


def test_inspect_table(model_path, capsys):
    assert main(["inspect", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert "24 operators" in out and "needs qrt >= 0.2.0" in out  # MAXIMUM, MINIMUM came in 0.2.0
    assert "DEPTHWISE_CONV_2D" in out and "depth_multiplier=2 relu6" in out
    assert "per-channel" not in out.split("Operators")[0]  # IO rows are per tensor
    assert "calibration       minmax, 100 samples" in out
    assert "1480" in out  # fc weights + bias bytes


def test_inspect_json(model_path, capsys):
    assert main(["inspect", "--json", str(model_path)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["file_bytes"] == model_path.stat().st_size
    assert [o["op"] for o in s["operators"]][:3] == ["QUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D"]
    assert s["inputs"][0] == {"name": "image", "tensor": 0, "dtype": "FLOAT32", "shape": [1, 8, 8, 3],
                              "layout": "AS_STORED", "scale": None, "zero_point": None}
    assert s["metadata"]["properties"]["note"] == "ünïcode ✓"


def test_inspect_shows_user_layout(tmp_path, capsys):
    path = tmp_path / "c.qmodel"
    qrt.write_model(conv_chain_model(), path)
    main(["inspect", "--json", str(path)])
    s = json.loads(capsys.readouterr().out)
    assert s["inputs"][0]["shape"] == [1, 3, 16, 16] and s["inputs"][0]["layout"] == "NCHW"
    assert s["inputs"][0]["zero_point"] == -128


def test_inspect_bad_file_is_a_clear_error(model_path, capsys):
    model_path.write_bytes(model_path.read_bytes()[:300])
    assert main(["inspect", str(model_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qrt: error: {model_path}: ") and "truncated" in err


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "qrt.cli", "inspect", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--json" in r.stdout and "verify" in r.stdout


def test_run_refuses_a_non_finite_input_unless_allowed(tmp_path, capsys):
    """`qrt run` on an input holding NaN: a clear error naming the input and the element, and
    --allow-non-finite runs it (NaN read as 0.0)."""
    import numpy as np

    path = tmp_path / "c.qmodel"
    qrt.write_model(conv_chain_model(), path)
    m = qrt.load(path)
    x = np.zeros(m.inputs[0].shape, np.float32)
    x[0, 1, 2, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert f"input '{m.inputs[0].name}': element (0, 1, 2, 3) is nan" in err and "--allow-non-finite" in err
    out_path = tmp_path / "y.npy"
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--allow-non-finite", "-o", str(out_path)]) == 0
    x[0, 1, 2, 3] = 0.0
    assert np.array_equal(np.load(out_path), m.run(x))
