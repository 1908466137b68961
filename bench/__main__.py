"""Runtime comparison: qrt int8 against ONNX Runtime (int8 QOperator U8S8, int8 QDQ S8S8, fp32)
and PyTorch (fp32, int8 FX x86), batch 1, in one process, interleaved.

    python -m bench [--models small_cnn,resnet18,mobilenet_v2] [--threads 1] [--repeats N]
                    [--warmup N] [--out bench/out]

Each timing round calls every runtime once on the same input, in an order rotated from round
to round, so drift in the machine (clocks, caches, other load) hits all runtimes alike. Warm-up
rounds run first and are not counted. Per runtime: median, p10 and p90 of the per-call times.
Writes OUT/results.md (the tables printed) and OUT/results.json (every number, raw times too).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

DEFAULT_REPEATS = {"small_cnn": 200, "resnet18": 30, "mobilenet_v2": 30}


def _parse(argv):
    from bench.torch_models import MODELS
    p = argparse.ArgumentParser(
        prog="python -m bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Time qrt int8 against ONNX Runtime (int8 QOperator U8S8 per-channel, int8 QDQ "
                    "S8S8 per-channel, fp32) and PyTorch (fp32, int8 FX graph mode on the x86 "
                    "backend) at batch 1, in one process, interleaved round by round. Models have "
                    "random fixed-seed weights and are calibrated on 16 random normal samples.",
        epilog="Results: OUT/results.md (Markdown tables, also printed) and OUT/results.json; the "
               "model files made on the way are kept in OUT/models.")
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma-separated models to run, from: {', '.join(MODELS)} (default: all)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads for every runtime: torch.set_num_threads, ORT "
                        "intra_op_num_threads (inter-op is 1). qrt's kernels are single-threaded "
                        "either way (default: 1)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds per model; each round runs every runtime once (default: "
                        + ", ".join(f"{k} {v}" for k, v in DEFAULT_REPEATS.items()) + ")")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed rounds before the timed ones (default: a tenth of the repeats, at least 3)")
    p.add_argument("--out", default=os.path.join("bench", "out"),
                   help="folder for results.md, results.json and models/ (default: bench/out)")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {', '.join(bad)}; choose from {', '.join(MODELS)}")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def time_interleaved(runners, x, repeats: int, warmup: int) -> dict:
    """{runner name: [ms per call]} over `repeats` rounds after `warmup` untimed ones."""
    live = [r for r in runners if r.fn is not None]
    times = {r.name: [] for r in live}
    clock = time.perf_counter
    for i in range(warmup + repeats):
        k = i % len(live)
        for r in live[k:] + live[:k]:  # rotate the order each round
            t = clock()
            r.fn(x)
            dt = clock() - t
            if i >= warmup:
                times[r.name].append(dt * 1e3)
    return times


def _ratio(peer_ms, qrt_ms) -> str:
    if peer_ms is None or qrt_ms is None:
        return ""
    r = peer_ms / qrt_ms
    return f"qrt is {r:.2f}x faster" if r >= 1 else f"qrt is {1 / r:.2f}x slower"


def _size(n) -> str:
    if n is None:
        return ""
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def bench_model(name: str, args, workdir: str) -> dict:
    import torch
    from bench.suite import prepare

    t0 = time.perf_counter()
    p = prepare(name, workdir, args.threads)
    prep_total = time.perf_counter() - t0
    repeats = args.repeats or DEFAULT_REPEATS.get(name, 30)
    warmup = args.warmup if args.warmup is not None else max(3, repeats // 10)
    torch.set_num_threads(args.threads)
    times = time_interleaved(p.runners, p.x, repeats, warmup)

    rows = []
    qrt_ms = None
    for r in p.runners:
        row = {"runtime": r.name, "file_bytes": r.file_bytes, "error": r.error}
        if r.fn is not None:
            ts = np.array(times[r.name])
            y = np.asarray(r.fn(p.x)).reshape(p.float_out.shape)
            row.update(median_ms=float(np.median(ts)), p10_ms=float(np.percentile(ts, 10)),
                       p90_ms=float(np.percentile(ts, 90)), mean_ms=float(ts.mean()),
                       min_ms=float(ts.min()), times_ms=[float(v) for v in ts],
                       gops=2 * p.macs / (np.median(ts) * 1e-3) / 1e9,
                       argmax_matches_float=bool(np.array_equal(y.argmax(-1), p.float_out.argmax(-1))),
                       cosine_to_float=_cosine(y, p.float_out))
            if r.name == "qrt int8":
                qrt_ms = row["median_ms"]
        rows.append(row)
    for row in rows:
        if "median_ms" in row and row["runtime"] != "qrt int8":
            row["qrt_speedup"] = row["median_ms"] / qrt_ms  # >1: qrt faster
            row["qrt_vs_this"] = _ratio(row["median_ms"], qrt_ms)
    return {"model": name, "input_shape": list(p.input_shape), "macs": p.macs,
            "qrt_load_ms_median": float(np.median(p.load_ms)), "qrt_load_ms": p.load_ms,
            "repeats": repeats, "warmup": warmup, "threads": args.threads,
            "prepare_s": {**p.prep_s, "total": prep_total}, "runtimes": rows}


def markdown(res: dict) -> str:
    q = next(r for r in res["runtimes"] if r["runtime"] == "qrt int8")
    lines = [f"### {res['model']}  (input {'x'.join(map(str, res['input_shape']))}, "
             f"{res['macs'] / 1e6:.1f} MMAC, {res['threads']} thread(s), {res['repeats']} rounds "
             f"after {res['warmup']} warm-up)", "",
             f"qrt load: {res['qrt_load_ms_median']:.2f} ms (median of {len(res['qrt_load_ms'])}); "
             f"qrt argmax matches float: {'yes' if q.get('argmax_matches_float') else 'NO'}; "
             f"cosine(qrt, float) = {q.get('cosine_to_float', float('nan')):.5f}", "",
             "| runtime | median ms | p10 ms | p90 ms | GOPS | qrt vs this | file | argmax = float | cosine to float |",
             "|---|---:|---:|---:|---:|---|---:|:---:|---:|"]
    for r in res["runtimes"]:
        if "median_ms" not in r:
            err = (r["error"] or "").splitlines()[-1].replace("|", "\\|")[:200]
            lines.append(f"| {r['runtime']} | failed: {err} | | | | | | | |")
            continue
        lines.append(f"| {r['runtime']} | {r['median_ms']:.3f} | {r['p10_ms']:.3f} | {r['p90_ms']:.3f} | "
                     f"{r['gops']:.2f} | {r.get('qrt_vs_this', '—')} | {_size(r['file_bytes'])} | "
                     f"{'yes' if r['argmax_matches_float'] else 'no'} | {r['cosine_to_float']:.5f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = _parse(argv)
    import onnxruntime
    import torch
    import qrt
    workdir = os.path.join(args.out, "models")
    os.makedirs(workdir, exist_ok=True)
    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "qrt": qrt.__version__, "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
           "numpy": np.__version__, "threads": args.threads}
    results, md = [], [f"## qrt benchmark (batch 1, {args.threads} thread(s))", "",
                       "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    print(md[0] + "\n", flush=True)
    for name in args.models:
        print(f"[{name}] preparing and timing ...", file=sys.stderr, flush=True)
        res = bench_model(name, args, workdir)
        results.append(res)
        table = markdown(res)
        md.append(table)
        print(table, flush=True)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"environment": env, "models": results}, f, indent=1)
    print(f"wrote {os.path.join(args.out, 'results.md')} and results.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
