"""Smoke tests of the benchmark harness (`python -m bench --quick` on the small CNN) and of
`qrt bench`: the files, runtimes and fields are there. No timing is judged: the machine is
shared and the numbers of a quick run mean nothing."""
import json

import pytest

import qrt
from qrt.cli import main as qrt_main
from bench.fixtures.sample_models import all_ops_model, conv_chain_model

RUNTIMES = ("qrt int8", "ORT int8 QOperator U8S8", "ORT int8 QDQ S8S8", "PyTorch int8 FX x86",
            "ORT fp32", "PyTorch fp32")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    for needed in ("onnxruntime", "torch", "matplotlib"):  # the peers and the chart
        pytest.importorskip(needed)
    from bench.__main__ import main

    out = tmp_path_factory.mktemp("bench")
    assert main(["--models", "small_cnn", "--quick", "--threads", "1,2", "--batch", "2", "--out", str(out)]) == 0
    return out


@pytest.mark.slow  # the quick run takes ~10 s; `qrt bench` below stays in `make check`
def test_harness_writes_json_markdown_and_png(quick_run):
    doc = json.loads((quick_run / "results.json").read_text())
    env = doc["environment"]
    assert {"model", "cores", "avx512_vnni", "amx_int8"} <= set(env["cpu"])
    assert "gops" in env["int8_peak"] or "error" in env["int8_peak"]
    [model] = doc["models"]
    assert model["model"] == "small_cnn" and model["macs"] > 0
    assert [r["runtime"] for r in model["runtimes"]] == list(RUNTIMES)
    for r in model["runtimes"]:
        assert r["error"] is None, r["error"]
        assert r["file_bytes"] > 0 and r["load_ms_median"] > 0 and r["argmax_matches_float"] is not None
        assert r["rss"]["peak_mb"] >= r["rss"]["import_mb"] > 0, r["rss"]
    # the qrt process imports qrt and numpy, nothing of the peers
    assert set(model["runtimes"][0]["rss"]["packages"]) == {"numpy", "qrt"}
    assert [(c["threads"], c["batch"]) for c in model["timings"]] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for c in model["timings"]:
        rows = {r["runtime"]: r for r in c["results"]}
        assert set(rows) == set(RUNTIMES)
        for name, r in rows.items():
            assert len(r["times_ms"]) == c["rounds"] == 3
            assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] and r["iqr_ms"] >= 0 and r["gops"] > 0
            assert (r["peak_fraction"] is None) == ("error" in env["int8_peak"])
            assert ("qrt_speedup" in r) == (name != "qrt int8")

    md = (quick_run / "results.md").read_text()
    assert "Median latency" in md and "small_cnn" in md and "peak RSS" in md
    assert all(name in md for name in RUNTIMES)
    assert (quick_run / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("make", [conv_chain_model, all_ops_model])  # int8 NCHW input; float input
def test_qrt_bench_times_one_model(make, tmp_path, capsys):
    path = tmp_path / "m.qmodel"
    qrt.write_model(make(), path)
    assert qrt_main(["bench", str(path), "--threads", "1", "--repeats", "5", "--warmup", "1", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "1 thread(s)" in out and "load " in out and "median" in out and "p10-p90" in out and "GOPS" in out


def test_qrt_bench_rejects_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        qrt_main(["bench", "m.qmodel", "--repeats", "0"])
    assert qrt_main(["bench", str(tmp_path / "missing.qmodel")]) == 2
