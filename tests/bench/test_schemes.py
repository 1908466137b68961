"""Smoke tests of `python -m bench.schemes` (qrt's quantization schemes next to their peers):
the quick run on the smallest models writes its files with the expected rows; the Gemm ->
MatMul rewrite the ORT peers read computes what the export does; the targets are the ratios
they say. No timing is judged: the machine is shared and a quick run's numbers mean nothing."""
import json
import types

import numpy as np
import pytest


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    for needed in ("onnxruntime", "torch", "matplotlib", "threadpoolctl"):
        pytest.importorskip(needed)
    from bench.schemes import main

    out = tmp_path_factory.mktemp("schemes")
    assert main(["--quick", "--models", "mlp_small,small_cnn", "--threads", "1", "--batch", "4",
                 "--out", str(out)]) == 0
    return out


@pytest.mark.slow  # the quick run takes ~10 s
def test_quick_run_writes_every_row(quick_run):
    from bench.schemes import FAMILIES, ROWS

    doc = json.loads((quick_run / "results.json").read_text())
    assert doc["families"] == FAMILIES
    fc, conv = doc["models"]
    assert (fc["model"], fc["kind"], conv["model"], conv["kind"]) == ("mlp_small", "fc", "small_cnn", "conv")
    assert [r["runtime"] for r in fc["runtimes"]] == [r.label for r in ROWS] and not fc["not_applicable"]
    assert [r["runtime"] for r in conv["runtimes"]] == [r.label for r in ROWS if not r.fc_only]
    assert [n["runtime"] for n in conv["not_applicable"]] == [r.label for r in ROWS if r.fc_only]
    assert all(n["reason"] for n in conv["not_applicable"])
    for m in doc["models"]:
        for r in m["runtimes"]:
            assert r["error"] is None, (m["model"], r["runtime"], r["error"])
            assert r["file_bytes"] > 0 and r["inputs_compared"] == 3
            assert 0.9 < r["cosine_min"] <= r["cosine_mean"] <= 1.0 + 1e-9, (r["runtime"], r["cosine_min"])
        if m["kind"] == "fc":  # int4 weights: smaller files than int8, int8 smaller than float
            size = {r["runtime"]: r["file_bytes"] for r in m["runtimes"]}
            assert size["qrt weight-only int4 g128"] < size["qrt weight-only int8"] < size["ORT fp32"] / 3
            assert size["qrt int4 w, int8 act"] < 0.7 * size["qrt int8"]
    assert [(c["threads"], c["batch"]) for c in fc["timings"]] == [(1, 1), (1, 4)]
    assert [(c["threads"], c["batch"]) for c in conv["timings"]] == [(1, 1)]
    for m in doc["models"]:
        ok = {r["runtime"] for r in m["runtimes"] if not r["error"]}
        for c in m["timings"]:
            rows = {r["runtime"]: r for r in c["results"]}
            assert set(rows) == ok
            for name, r in rows.items():
                assert len(r["times_ms"]) == c["rounds"] == 3 and r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
                assert r["family"] in FAMILIES
            assert rows["qrt dynamic"]["best_peer"].startswith("ORT quantize_dynamic")
            assert "best_peer" not in rows.get("qrt int16 act", {})  # no peer runs int16 activations
            assert rows["qrt int8"]["best_peer"] in ("ORT int8 QOperator U8S8", "PyTorch int8 FX x86")
    targets = {(t["model"], t["target"], t["batch"], t["row"]) for t in doc["targets"]}
    assert {t[1] for t in targets} == {"int16_conv", "int4_fc", "int4_static_fc", "dynamic_fc", "weight_only_fc"}
    assert ("mlp_small", "int4_static_fc", 1, "qrt int4 w, int8 act") in targets
    assert ("small_cnn", "int16_conv", 1, "qrt int16 act") in targets
    assert ("mlp_small", "dynamic_fc", 4, "qrt dynamic") in targets
    assert len([t for t in targets if t[1] == "weight_only_fc"]) == 6  # 3 rows x 2 batches

    md = (quick_run / "results.md").read_text()
    assert "Targets (measured, not asserted)" in md and "vs best peer" in md
    assert all(r.label in md for r in ROWS) and "n/a" in md
    assert (quick_run / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_matmul_form_computes_the_gemms(tmp_path):
    """ORT's quantize_dynamic and MatMulNBits read Gemm as MatMul + Add: the same outputs."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from bench.schemes import _matmul_form

    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((6, 8)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    w2 = rng.standard_normal((6, 4)).astype(np.float32)  # transB 0, no bias
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    src = types.SimpleNamespace(onnx_path=str(tmp_path / "m.onnx"), base=str(tmp_path / "m"))
    path = _matmul_form(src)
    assert [n.op_type for n in onnx.load(path).graph.node] == ["MatMul", "Add", "Relu", "MatMul"]
    x = rng.standard_normal((3, 8)).astype(np.float32)
    run = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for p in (src.onnx_path, path)]
    np.testing.assert_allclose(run[0], run[1], rtol=1e-5, atol=1e-5)


def test_targets_are_the_measured_ratios():
    from bench.schemes import targets

    def res(name, ms):
        return {"runtime": name, "median_ms": ms}
    fc = {"model": "mlp", "kind": "fc", "timings": [{"threads": 1, "batch": 64, "results": [
        res("qrt dynamic", 2.0), res("ORT quantize_dynamic S8 per-channel", 4.0),
        res("ORT quantize_dynamic U8 per-channel", 2.0), res("numpy fp32", 3.0),
        res("qrt weight-only int8", 3.0), res("qrt weight-only int4 g32", 3.6),
        {"runtime": "qrt weight-only int4 g128", "error": "KeyError: 'x'"}]}]}
    conv = {"model": "cnn", "kind": "conv", "timings": [{"threads": 2, "batch": 1, "results": [
        res("qrt int8", 1.0), res("qrt int16 act", 2.0)]}]}
    got = {(t["target"], t["row"]): t for t in targets({"models": [fc, conv]})}
    assert got["dynamic_fc", "qrt dynamic"]["reference"] == "ORT quantize_dynamic U8 per-channel"
    assert got["dynamic_fc", "qrt dynamic"]["met"] is False  # equal is not faster
    assert got["int4_fc", "qrt weight-only int4 g32"]["ratio"] == pytest.approx(1.2)
    assert got["int4_fc", "qrt weight-only int4 g32"]["met"] is True
    assert got["int4_fc", "qrt weight-only int4 g128"]["met"] is None  # failed: not measured
    assert got["weight_only_fc", "qrt weight-only int8"]["met"] is True
    assert got["int16_conv", "qrt int16 act"]["met"] is True and got["int16_conv", "qrt int16 act"]["threads"] == 2
    assert got["int4_static_fc", "qrt int4 w, int8 act"]["met"] is None  # not in the run: not measured
    assert len(got) == 8
