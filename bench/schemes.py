"""qrt's quantization schemes next to the peers that have them, on a fully-connected stack and
on a conv net, in one process, interleaved round by round (the timing loop, statistics and
report of `python -m bench`).

    python -m bench.schemes [--models mlp,mobilenet_v2] [--threads 1,2] [--batch 64]
                            [--repeats N] [--warmup N] [--quick] [--out bench/out/schemes]

Rows, each in a scheme family; "vs best peer" is a row's median over the fastest peer's (a
runtime other than qrt) of the same family:
  float32           ORT fp32, PyTorch fp32, numpy fp32 (the chain x @ w.T + b, ReLU; FC only)
  static int8       qrt int8 (qrt.convert's default), ORT int8 QOperator U8S8, PyTorch int8 FX x86
  static int16      qrt int16 activations x int8 weights (no peer runs int16 activations on CPU)
  dynamic int8      qrt dynamic; ORT quantize_dynamic per-channel with QInt8 and with QUInt8
                    weights (rows for both: which is faster depends on the model); PyTorch
                    quantize_dynamic on nn.Linear (FC only: PyTorch has no dynamic conv)
  weight-only int8  qrt weight-only int8 per channel; ORT MatMulNBits 8-bit, block 128
  weight-only int4  qrt weight-only int4 per group of 32 / 128; ORT MatMulNBits 4-bit
  g32, g128         symmetric, block 32 / 128 (accuracy_level unset: float32 arithmetic)
  int4 w, int8 act  qrt int4 weights per channel with static int8 activations (W4A8, integer
                    arithmetic); ORT MatMulNBits 4-bit with accuracy_level 4 (activations
                    quantized to int8 per block at run time): ORT's fastest 4-bit setting
MatMulNBits and quantize_dynamic quantize MatMul, not Gemm: their source is the exported ONNX
model with each Gemm rewritten as MatMul + Add; every other ONNX runtime reads the export as
it is. MatMulNBits covers MatMul only, so on a conv net its rows are n/a (the convolutions
would stay float32), as are PyTorch dynamic and numpy.

Per row: median latency (and p10-p90, GOPS from qrt's MAC count) per thread count and batch,
the model's size on disk, and its agreement with the float PyTorch model: cosine of the
outputs on a few random inputs (min and mean). Then the targets, measured and not asserted.
Writes OUT/results.json (every number, raw times too), OUT/results.md and OUT/results.png.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import textwrap
import time

import numpy as np

from bench.__main__ import (MAX_ROUNDS, MIN_ROUNDS, NORMAL, QUICK, ROUND_BUDGET_S, SETTLE_S, _cosine,
                            environment, model_result, time_model, timing_args, write_results)

# model -> what it is: "fc" (timed at batch 1 and --batch), "conv", "encoder" or "recurrent" (batch 1)
MODELS = {"mlp": "fc", "mobilenet_v2": "conv", "resnet18": "conv", "mlp_small": "fc", "small_cnn": "conv",
          "encoder": "encoder", "encoder_small": "encoder", "lstm": "recurrent", "lstm_small": "recurrent"}
DEFAULT_MODELS = ("mlp", "mobilenet_v2")
QUICK_MODELS = ("mlp", "small_cnn")  # --quick without --models: well under a minute
FC_BATCH = 64
CALIB = {"quick": 4, "normal": 16}    # calibration samples (static schemes)
CHECKS = {"quick": 2, "normal": 4}    # random inputs besides the first, for the cosine to float
SLOW_CALL_MS, SLOW_FACTOR = 1000, 50  # a row slower than both on its first call is not timed

FAMILIES = {
    "float32": "no quantization",
    "static int8": "int8 activations with calibrated ranges, int8 weights, integer arithmetic",
    "static int16": "symmetric 16-bit activations with calibrated ranges, int8 weights",
    "dynamic int8": "each Conv/Gemm/MatMul input quantized to int8 per call, int8 weights, float32 elsewhere",
    "weight-only int8": "int8 weights per channel (ORT: per block of 128), float32 activations and arithmetic",
    "weight-only int4 g32": "int4 weights per group of 32 along the reduction, float32 activations and arithmetic",
    "weight-only int4 g128": "the same with groups of 128",
    "int4 w, int8 act": "int4 weights, int8 activations (qrt: per channel, static ranges; ORT: per block of "
                        "32 / 128, activations quantized per block at run time)",
}
FC_ONLY_NBITS = "MatMulNBits quantizes MatMul only: every convolution would stay float32"
FC_ONLY_DYN = "PyTorch has no dynamic quantized convolution (quantize_dynamic covers nn.Linear, nn.LSTM, nn.GRU)"
FC_ONLY_NUMPY = "numpy runs the FC stack only (its chain of x @ w.T + b)"


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    family: str
    kind: str                      # its loader in bench.runtimes
    files: object                  # files(Sources) -> tuple of paths, written
    fc_only: str | None = None     # on a conv net: n/a, for this reason


def _matmul_form(src) -> str:
    """src.onnx_path with every Gemm that has constant weights rewritten as MatMul (+ Add of
    the bias): the form ORT's quantize_dynamic and MatMulNBits quantize. Made once per model."""
    from bench.runtimes import gemm_as_matmul

    path = src.base + ".matmul.onnx"
    if getattr(src, "matmul_path", None) != path:
        src.matmul_path = gemm_as_matmul(src.onnx_path, path)
    return path


def _ort_dynamic(src, weight_type: str) -> tuple:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from qrt.converters.torch_frontend import quiet_export

    out = src.base + f".ort_dynamic_{weight_type.lower()}.onnx"
    with quiet_export():
        quantize_dynamic(_matmul_form(src), out, weight_type=QuantType[weight_type], per_channel=True)
    return (out,)


def _ort_nbits(src, bits: int, block: int, accuracy_level: int | None = None) -> tuple:
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    out = src.base + f".ort_nbits{bits}_b{block}" + (f"_acc{accuracy_level}" if accuracy_level else "") + ".onnx"
    log = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level, log.level = log.level, logging.WARNING  # it logs every node at INFO
    try:
        # symmetric, as qrt's int4 weights ([-7, 7], no zero point)
        q = MatMulNBitsQuantizer(onnx.load(_matmul_form(src)), bits=bits, block_size=block, is_symmetric=True,
                                 accuracy_level=accuracy_level)
        q.process()
    finally:
        log.level = level
    if not any(n.op_type == "MatMulNBits" for n in q.model.model.graph.node):
        raise RuntimeError("MatMulNBitsQuantizer left every MatMul as it was")
    q.model.save_model_to_file(out, use_external_data_format=False)
    return (out,)


def _torch_dynamic(src) -> tuple:
    import torch

    from bench.runtimes import dynamic_int8
    torch.save(dynamic_int8(copy.deepcopy(src.module)).state_dict(), src.base + ".int8dyn.pt")
    return (src.base + ".fp32.pt", src.base + ".int8dyn.pt")


def qrt_kernels(path: str) -> dict:
    """The operators of a .qmodel that have no compiled kernel: "missing" (the form names a
    kernel this build of qrt lacks: loading fails) and "reference" (an integer or weight-only
    form without a kernel: its NumPy reference runs, slowly). float32 forms are NumPy by design."""
    import qrt
    from qrt.ops import op_form
    from qrt.ops.base import FLOAT32
    from qrt.runtime.kernel_sets import COMPILED

    d = qrt.read_model(path)
    missing, reference = set(), set()
    for i, op in enumerate(d.operators):
        f = op_form(d, i)
        if f.kernel is None and f.name != FLOAT32:
            reference.add(f"{op.opcode.name} ({f.name})")
        elif f.kernel is not None and f.kernel not in COMPILED:
            missing.add(f"{op.opcode.name} ({f.name}): {f.kernel}")
    return {"missing": sorted(missing), "reference": sorted(reference)}


def _lacks(k: dict) -> str:
    """qrt_kernels(...) in words, or ""."""
    return "; ".join(filter(None, [
        k["missing"] and f"no compiled kernel in this build for {', '.join(k['missing'])}",
        k["reference"] and f"NumPy reference for {', '.join(k['reference'])}"]))


def _qrt_recipe(suffix: str, **scheme):
    """files(Sources) for a qrt row: qrt.convert with this scheme. qrt.convert loads the file it
    wrote; if that fails, the error says which kernels the file needs and this build lacks."""
    from bench.suite import describe_error, qrt_files

    def files(src):
        path = src.base + f".{suffix}.qmodel"
        if os.path.exists(path):
            os.remove(path)  # a file of an earlier run is not this one's
        try:
            return qrt_files(src, path, **scheme)
        except Exception as e:
            try:
                lacks = _lacks(qrt_kernels(path)) if os.path.exists(path) else ""
            except Exception:
                lacks = ""
            if lacks:
                raise RuntimeError(f"{describe_error(e)} ({lacks})") from e
            raise
    return files


def _rows() -> list:
    from bench.runtimes import save_fc_stack
    from bench.suite import FP32_PEERS, INT8_PEERS, QRT, fx_files, ort_quantize

    q = _qrt_recipe
    wo4 = dict(mode="weight-only", weights="int4")
    return [
        Row(FP32_PEERS[0], "float32", "ort", lambda s: (s.onnx_path,)),
        Row(FP32_PEERS[1], "float32", "torch", lambda s: (s.base + ".fp32.pt",)),
        Row("numpy fp32", "float32", "numpy", lambda s: (save_fc_stack(s.module, s.base + ".fc.npz"),),
            fc_only=FC_ONLY_NUMPY),
        Row(QRT, "static int8", "qrt", q("static")),
        Row(INT8_PEERS[0], "static int8", "ort",
            lambda s: (ort_quantize(s.onnx_path, s.base + ".ort_qoperator.onnx", s.calib, "qoperator"),)),
        Row(INT8_PEERS[2], "static int8", "fx", fx_files),
        Row("qrt int16 act", "static int16", "qrt", q("int16", activations="int16")),
        Row("qrt dynamic", "dynamic int8", "qrt", q("dynamic", mode="dynamic")),
        Row("ORT quantize_dynamic S8 per-channel", "dynamic int8", "ort", lambda s: _ort_dynamic(s, "QInt8")),
        Row("ORT quantize_dynamic U8 per-channel", "dynamic int8", "ort", lambda s: _ort_dynamic(s, "QUInt8")),
        Row("PyTorch dynamic int8", "dynamic int8", "dyn", _torch_dynamic, fc_only=FC_ONLY_DYN),
        Row("qrt weight-only int8", "weight-only int8", "qrt", q("wo_int8", mode="weight-only")),
        Row("ORT MatMulNBits int8 b128", "weight-only int8", "ort", lambda s: _ort_nbits(s, 8, 128),
            fc_only=FC_ONLY_NBITS),
        Row("qrt weight-only int4 g32", "weight-only int4 g32", "qrt", q("wo_int4_g32", group_size=32, **wo4)),
        Row("ORT MatMulNBits int4 b32", "weight-only int4 g32", "ort", lambda s: _ort_nbits(s, 4, 32),
            fc_only=FC_ONLY_NBITS),
        Row("qrt weight-only int4 g128", "weight-only int4 g128", "qrt", q("wo_int4_g128", group_size=128, **wo4)),
        Row("ORT MatMulNBits int4 b128", "weight-only int4 g128", "ort", lambda s: _ort_nbits(s, 4, 128),
            fc_only=FC_ONLY_NBITS),
        Row("qrt int4 w, int8 act", "int4 w, int8 act", "qrt", q("w4a8", weights="int4")),
        Row("ORT MatMulNBits int4 b32 acc4", "int4 w, int8 act", "ort", lambda s: _ort_nbits(s, 4, 32, 4),
            fc_only=FC_ONLY_NBITS),
        Row("ORT MatMulNBits int4 b128 acc4", "int4 w, int8 act", "ort", lambda s: _ort_nbits(s, 4, 128, 4),
            fc_only=FC_ONLY_NBITS),
    ]


ROWS = _rows()
FAMILY = {r.label: r.family for r in ROWS}
QRT_ROWS = {r.label for r in ROWS if r.kind == "qrt"}

# The targets, measured and not asserted: (key, text, models' kind, row(s), reference, limit, strict)
# reference: a row's label, or a tuple of labels (the fastest of them)
ORT_DYNAMIC = ("ORT quantize_dynamic S8 per-channel", "ORT quantize_dynamic U8 per-channel")
WEIGHT_ONLY = ("qrt weight-only int8", "qrt weight-only int4 g32", "qrt weight-only int4 g128")
TARGETS = (
    ("int16_conv", "int16 x int8 conv <= 2.0x the int8 conv", "conv", ("qrt int16 act",), "qrt int8", 2.0, False),
    ("int4_fc", "int4 per-group FC <= 1.3x the int8 FC (both weight-only)", "fc",
     ("qrt weight-only int4 g32", "qrt weight-only int4 g128"), "qrt weight-only int8", 1.3, False),
    ("int4_static_fc", "int4 FC <= 1.3x the int8 FC (both static, integer arithmetic)", "fc",
     ("qrt int4 w, int8 act",), "qrt int8", 1.3, False),
    ("dynamic_fc", "dynamic FC faster than ORT quantize_dynamic (its faster row)", "fc", ("qrt dynamic",),
     ORT_DYNAMIC, 1.0, True),
    ("weight_only_fc", "weight-only FC no slower than numpy float32", "fc", WEIGHT_ONLY, "numpy fp32", 1.0, False),
    ("encoder", "encoder, integer-only: <= 0.9x ORT quantize_dynamic (its faster row)", "encoder", ("qrt int8",),
     ORT_DYNAMIC, 0.9, False),
    ("lstm", "LSTM, integer-only: <= 0.9x the faster of ORT quantize_dynamic and PyTorch dynamic int8", "recurrent",
     ("qrt int8",), ORT_DYNAMIC + ("PyTorch dynamic int8",), 0.9, False),
)


def recipes_for(kind: str):
    """prepare()'s recipes for a model of this kind, and its n/a rows [{runtime, family, reason}]."""
    def applies(r):  # an encoder's MatMuls take the FC-only rows, but it is no FC stack for numpy;
        # a recurrent net has PyTorch's dynamic LSTM, and no MatMul for MatMulNBits
        return kind == "fc" or not r.fc_only or (kind == "encoder" and r.kind != "numpy") or \
            (kind == "recurrent" and r.kind == "dyn")
    rows = [r for r in ROWS if applies(r)]
    na = [{"runtime": r.label, "family": r.family, "reason": r.fc_only} for r in ROWS if not applies(r)]
    return (lambda src: [(r.label, r.kind, (lambda r=r: r.files(src))) for r in rows]), na


def _parse(argv):
    from bench.torch_models import MODELS as ENTRIES
    p = argparse.ArgumentParser(
        prog="python -m bench.schemes", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0].replace("\n", " ") + "\n\nmodels:\n"
        + "\n".join(f"  {k:<16}{ENTRIES[k].title} ({v})" for k, v in MODELS.items()),
        epilog=textwrap.fill(
            "Results: OUT/results.md (also printed), OUT/results.json and OUT/results.png; the "
            "model files made on the way are kept in OUT/models. The targets are printed as "
            "measured, not asserted: the exit status is 0 whether they are met or not.", 90))
    p.add_argument("--models", default=None,
                   help=f"comma-separated models (default: {','.join(DEFAULT_MODELS)}; with --quick: "
                        f"{','.join(QUICK_MODELS)})")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default: 1,2)")
    p.add_argument("--batch", type=int, default=FC_BATCH,
                   help=f"the FC stack's throughput batch, timed besides batch 1; conv nets run at "
                        f"batch 1 only (default: {FC_BATCH}; 1: batch 1 only)")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"timed rounds per configuration (default: as many as fit in about "
                        f"{ROUND_BUDGET_S:g} s, between {MIN_ROUNDS} and {MAX_ROUNDS})")
    p.add_argument("--warmup", type=int, default=None,
                   help=f"untimed rounds before the timed ones (default: {NORMAL['warmup']})")
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run: {QUICK['rounds']} rounds after {QUICK['warmup']} warm-up, one load per "
                        f"runtime, {CALIB['quick']} calibration samples, {1 + CHECKS['quick']} inputs for the "
                        "cosine (numbers are not to be quoted)")
    p.add_argument("--out", default=os.path.join("bench", "out", "schemes"),
                   help="folder for results.md, results.json, results.png and models/ (default: bench/out/schemes)")
    args = p.parse_args(argv)
    models = args.models or ",".join(QUICK_MODELS if args.quick else DEFAULT_MODELS)
    args.models = [m.strip() for m in models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {', '.join(bad)}; choose from {', '.join(MODELS)}")
    return timing_args(p, args)


def _compare(configs: list):
    """Adds family, best_peer and vs_best_peer (median / the best peer's median) to every timed
    result; a peer is a runtime other than qrt."""
    for c in configs:
        best = {}
        for r in c["results"]:
            r["family"] = FAMILY[r["runtime"]]
            if "median_ms" in r and r["runtime"] not in QRT_ROWS:
                if r["family"] not in best or r["median_ms"] < best[r["family"]]["median_ms"]:
                    best[r["family"]] = r
        for r in c["results"]:
            peer = best.get(r["family"])
            if peer and "median_ms" in r:
                r["best_peer"], r["vs_best_peer"] = peer["runtime"], r["median_ms"] / peer["median_ms"]


def _screen(p) -> dict:
    """qrt rows: the kernels they lack (added to a load error); any row whose first call took
    longer than SLOW_CALL_MS and SLOW_FACTOR times the fastest float32 row's is not timed (it
    would take minutes at MIN_ROUNDS rounds): its row says why. Returns {label: qrt_kernels()}."""
    found = {}
    for rt in p.runtimes:
        if rt.kind != "qrt" or not rt.paths:
            continue
        try:
            found[rt.name] = qrt_kernels(rt.paths[0])
        except Exception:  # unreadable: its load error says why
            continue
        lacks = _lacks(found[rt.name])
        if rt.error and lacks and lacks not in rt.error:
            rt.error += f" ({lacks})"
    floats = [rt.first_run_ms for rt in p.runtimes if FAMILY[rt.name] == "float32" and rt.first_run_ms]
    limit = max(SLOW_CALL_MS, SLOW_FACTOR * min(floats)) if floats else None
    for rt in p.runtimes:
        if not rt.error and limit and rt.first_run_ms > limit:
            k = found.get(rt.name, {})
            why = f"; it runs the NumPy reference for {', '.join(k['reference'])}" if k.get("reference") else ""
            rt.error = (f"too slow to time: its first call took {rt.first_run_ms:.4g} ms, over {limit:.4g} ms "
                        f"({SLOW_FACTOR}x the fastest float32 row, at least {SLOW_CALL_MS} ms){why}")
    return found


def _agreement(p, res: dict):
    """cosine_min and cosine_mean over the batch-1 input and the check inputs, per runtime row."""
    rows = {r["runtime"]: r for r in res["runtimes"]}
    for rt in p.runtimes:
        row = rows[rt.name]
        row.update(family=FAMILY[rt.name], first_run_ms=rt.first_run_ms)
        if rt.output is None:
            continue
        cos = [_cosine(rt.output, p.float_out)] + [_cosine(o, f) for o, f in zip(rt.check_outputs, p.check_float)]
        row.update(cosine_min=min(cos), cosine_mean=float(np.mean(cos)), inputs_compared=len(cos))


def targets(doc) -> list:
    """Every target on every model and configuration it applies to: the measured ratio."""
    out = []
    for m in doc["models"]:
        for c in m["timings"]:
            rows = {r["runtime"]: r for r in c["results"]}
            for key, text, kind, labels, ref, limit, strict in TARGETS:
                if kind != m["kind"] or (kind == "conv" and c["batch"] != 1):
                    continue
                refs = [rows[n] for n in ((ref,) if isinstance(ref, str) else ref) if "median_ms" in rows.get(n, {})]
                best = min(refs, key=lambda r: r["median_ms"]) if refs else None
                for label in labels:
                    r = rows.get(label, {})
                    t = {"target": key, "text": text, "model": m["model"], "threads": c["threads"],
                         "batch": c["batch"], "row": label, "row_ms": r.get("median_ms"),
                         "reference": best["runtime"] if best else " / ".join((ref,) if isinstance(ref, str) else ref),
                         "reference_ms": best["median_ms"] if best else None, "limit": limit, "strict": strict,
                         "ratio": None, "met": None}
                    if t["row_ms"] is not None and best:
                        t["ratio"] = t["row_ms"] / t["reference_ms"]
                        t["met"] = bool(t["ratio"] < limit if strict else t["ratio"] <= limit)
                    out.append(t)
    return out


def main(argv=None) -> int:
    args = _parse(argv)
    from bench.report import schemes_chart, schemes_markdown
    from bench.suite import prepare

    t_start = time.perf_counter()
    workdir = os.path.join(args.out, "models")
    os.makedirs(workdir, exist_ok=True)
    env = environment(args, {})
    del env["int8_peak"]  # no % of peak here: most rows do not compute in int8
    env.update(fc_batch=args.batch, calib_samples=CALIB["quick" if args.quick else "normal"], settle_s=SETTLE_S)
    results = []
    for name in args.models:
        kind = MODELS[name]
        print(f"[{name}] preparing ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        recipes, na = recipes_for(kind)
        p = prepare(name, workdir, load_repeats=args.mode["load_repeats"], recipes=recipes,
                    calib_samples=env["calib_samples"], checks=CHECKS["quick" if args.quick else "normal"])
        kernels = _screen(p)
        res = model_result(p, time.perf_counter() - t)
        res.update(kind=kind, not_applicable=na)
        _agreement(p, res)
        for row in res["runtimes"]:
            if row["runtime"] in kernels:
                row["qrt_kernels"] = kernels[row["runtime"]]
        batches = [1, args.batch] if kind == "fc" and args.batch > 1 else [1]
        res["timings"] = time_model(p, args, {}, batches=batches, baseline=None)
        _compare(res["timings"])
        results.append(res)
    env["total_s"] = time.perf_counter() - t_start
    env["load_average_end"] = os.getloadavg()[0]

    doc = {"environment": env, "families": FAMILIES, "models": results}
    doc["targets"] = targets(doc)
    write_results(doc, args.out, schemes_markdown, schemes_chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
