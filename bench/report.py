"""The Markdown report and the chart of `python -m bench`, from its results document (the
same object it writes to results.json)."""
from __future__ import annotations

from bench.suite import INT8_PEERS, QRT, RUNTIMES


def _size(n) -> str:
    if n is None:
        return ""
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _ms(v) -> str:
    return "" if v is None else f"{v:.1f}" if v >= 100 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f} %"


def _ratio(speedup) -> str:
    if speedup is None:
        return ""
    return f"qrt {speedup:.2f}x faster" if speedup >= 1 else f"qrt {1 / speedup:.2f}x slower"


def _yes(v) -> str:
    return "" if v is None else "yes" if v else "NO"


def _by_runtime(config) -> dict:
    return {r["runtime"]: r for r in config["results"]}


def _best_int8_peer(rows: dict):
    timed = [rows[n] for n in INT8_PEERS if "median_ms" in rows.get(n, {})]
    return min(timed, key=lambda r: r["median_ms"]) if timed else None


def machine_lines(env) -> list:
    """The CPU, the machine's load during the run and the package versions: three list items."""
    cpu = env["cpu"]
    has = {True: "yes", False: "no"}
    return [
        f"- CPU: {cpu['model']}, {cpu['cores']} logical cores; AVX-512 VNNI {has[cpu['avx512_vnni']]}, "
        f"AVX-VNNI {has[cpu['avx_vnni']]}, AMX-INT8 {has[cpu['amx_int8']]}",
        f"- Load average (1 min) of the machine: {env['load_average_start']:.2f} at the start, "
        f"{env['load_average_end']:.2f} at the end of the run ({env['total_s']:.0f} s); the run itself "
        "accounts for 1 to the thread count, more means other work shared the cores, which weighs "
        "most on the multi-thread figures",
        f"- qrt {env['qrt']} (ISA path {env['qrt_isa']}), onnxruntime {env['onnxruntime']}, torch {env['torch']}, "
        f"numpy {env['numpy']}, Python {env['python']}, {env['platform']}",
    ]


def _header(doc) -> list:
    env = doc["environment"]
    cpu = env["cpu"]
    peak = env["int8_peak"]
    peak_line = (f"measured int8 peak ({peak['instruction']}): "
                 + ", ".join(f"{g:.0f} GOPS on {n} thread(s)" for n, g in peak["gops"].items())
                 if "gops" in peak else f"measured int8 peak: n/a ({peak['error']})")
    imports = {}
    for m in doc["models"]:
        for r in m["runtimes"]:
            if "packages" in r.get("rss", {}):
                imports.setdefault(r["runtime"], ", ".join(r["rss"]["packages"]))
    rule = env["adaptive_rounds"]
    rounds = (f"as many rounds as fit in about {rule['budget_s']:g} s per configuration (between "
              f"{rule['min']} and {rule['max']})" if rule else "a fixed number of rounds per configuration")
    cpu_line, load_line, versions_line = machine_lines(env)
    lines = [
        "## qrt benchmark" + (" (--quick: smoke run, do not quote)" if env["quick"] else ""), "",
        cpu_line + (" (a runtime that uses AMX is not bounded by the vpdpbusd peak)" if cpu["amx_int8"] else ""),
        f"- {peak_line}",
        load_line,
        versions_line,
        f"- Method: one process; each configuration (model, threads, batch) runs every runtime once per "
        f"round, in an order rotated each round, on more than one thread with a {env.get('settle_s', 0) * 1e3:g} ms untimed pause before "
        "each call (so that no runtime's spinning worker threads still hold the cores), after "
        f"{doc['models'][0]['timings'][0]['warmup'] if doc['models'] else 0} "
        f"warm-up round(s); {rounds}. So each call finds the caches holding the previous runtime's "
        "data, which weighs most on the smallest models. Times are per call, float32 NCHW in and "
        "float32 out for every runtime (qrt and the int8 peers quantize the input). GOPS = 2 x MACs x batch / median, with "
        "the MACs as qrt counts them, for every runtime; % of peak = GOPS / the measured int8 peak at "
        "that thread count (shown for the fp32 runtimes too, for scale).",
        "- Memory: peak RSS (VmHWM) of a fresh process per runtime per model that imports the "
        "runtime, loads the model, runs it at batch 1 on 1 thread; 'after import' is the same before "
        "loading. The PyTorch int8 process rebuilds the FX model from the pickled float module and "
        "loads the int8 state_dict (PyTorch's recipe for FX models), so the float weights are in "
        "memory while it loads. Packages each process imported: "
        + ("; ".join(f"{k}: {v}" for k, v in imports.items()) or "n/a") + ".",
        "",
    ]
    return lines


def _summary(doc) -> list:
    lines = ["### Median latency, ms", "",
             "| model | threads | batch | " + " | ".join(RUNTIMES)
             + " | qrt vs best int8 peer | qrt % of peak | best int8 peer % of peak |",
             "|---|---:|---:|" + "---:|" * len(RUNTIMES) + "---|---:|---:|"]
    for m in doc["models"]:
        for c in m["timings"]:
            rows = _by_runtime(c)
            cells = [_ms(rows[n].get("median_ms")) if "median_ms" in rows.get(n, {}) else
                     "failed" if n in rows else "" for n in RUNTIMES]
            q, best = rows.get(QRT, {}), _best_int8_peer(rows)
            vs = _ratio(best["median_ms"] / q["median_ms"]) if best and "median_ms" in q else ""
            lines.append(f"| {m['model']} | {c['threads']} | {c['batch']} | " + " | ".join(cells)
                         + f" | {vs} | {_pct(q.get('peak_fraction'))} | {_pct(best and best['peak_fraction'])} |")
    return lines + [""]


def _details(m) -> list:
    shape = "x".join(map(str, m["input_shape"]))
    ops = m["qrt_ops"]
    lines = [f"### {m['model']}: {m['title']}", "",
             f"Input {shape}, {m['macs'] / 1e6:.1f} MMAC per batch-1 run; qrt: {len(ops)} operator(s)"
             + (f" ({', '.join(ops)})" if len(ops) <= 3 else "")
             + f"; prepared in {m['prepare_s']['total']:.1f} s.", "",
             "| threads | batch | rounds | runtime | median ms | p10–p90 ms | IQR ms | GOPS | % of peak | qrt vs this |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for c in m["timings"]:
        for r in c["results"]:
            lead = f"| {c['threads']} | {c['batch']} | {c['rounds']} | {r['runtime']} |"
            if "median_ms" not in r:
                lines.append(f"{lead} failed | | | | | |")
                continue
            gops = "" if r["gops"] is None else f"{r['gops']:.1f}"
            lines.append(f"{lead} {_ms(r['median_ms'])} | {_ms(r['p10_ms'])}–{_ms(r['p90_ms'])} | "
                         f"{_ms(r['iqr_ms'])} | {gops} | {_pct(r['peak_fraction'])} | "
                         f"{_ratio(r.get('qrt_speedup')) if r['runtime'] != QRT else '—'} |")
    lines += ["", "| runtime | file | load ms (median) | fresh process peak RSS MB | after import MB | "
                  "argmax = float | cosine to float |",
              "|---|---:|---:|---:|---:|:---:|---:|"]
    errors = []
    for r in m["runtimes"]:
        rss = r.get("rss", {})
        cos = f"{r['cosine_to_float']:.5f}" if "cosine_to_float" in r else ""
        lines.append(f"| {r['runtime']} | {_size(r['file_bytes'])} | {_ms(r['load_ms_median'])} | "
                     f"{rss.get('peak_mb', 0):.0f} | {rss.get('import_mb', 0):.0f} | "
                     f"{_yes(r.get('argmax_matches_float'))} | {cos} |" if "peak_mb" in rss else
                     f"| {r['runtime']} | {_size(r['file_bytes'])} | {_ms(r['load_ms_median'])} | | | "
                     f"{_yes(r.get('argmax_matches_float'))} | {cos} |")
        for what, err in (("", r["error"]), ("memory process: ", rss.get("error"))):
            if err:
                errors.append(f"- {r['runtime']}: {what}{err.splitlines()[-1][:300]}")
    for c in m["timings"]:
        errors += [f"- {r['runtime']} at {c['threads']} thread(s): {r['error'].splitlines()[-1][:300]}"
                   for r in c["results"] if "error" in r]
    return lines + ([""] + errors if errors else []) + [""]


def markdown(doc) -> str:
    lines = _header(doc) + _summary(doc)
    for m in doc["models"]:
        lines += _details(m)
    return "\n".join(lines)


def chart(doc, path: str):
    """Two rows of grouped bars, one column per thread count, batch 1: median latency per model
    and runtime (log scale), and % of the measured int8 peak."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state; PNG is drawn by Agg

    threads = doc["environment"]["threads"]
    models = [m["model"] for m in doc["models"]]
    fig = Figure(figsize=(max(7.0, 1.1 * len(models) + 2) * len(threads), 9), layout="constrained")
    axes = fig.subplots(2, len(threads), squeeze=False, sharey="row")
    width = 0.8 / len(RUNTIMES)
    for col, t in enumerate(threads):
        rows = [next((_by_runtime(c) for c in m["timings"] if c["threads"] == t and c["batch"] == 1), {})
                for m in doc["models"]]
        for i, name in enumerate(RUNTIMES):
            xs = [j + (i - (len(RUNTIMES) - 1) / 2) * width for j in range(len(models))]
            ms = [r.get(name, {}).get("median_ms") or 0 for r in rows]
            pct = [100 * (r.get(name, {}).get("peak_fraction") or 0) for r in rows]
            axes[0][col].bar(xs, ms, width, label=name, color=f"C{i}")
            axes[1][col].bar(xs, pct, width, color=f"C{i}")
        axes[0][col].set_yscale("log")
        axes[0][col].set_title(f"batch 1, {t} thread(s)")
        for ax in axes[:, col]:
            ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("median latency, ms (log scale)")
    axes[1][0].set_ylabel("% of the measured int8 peak")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside upper center", ncols=len(RUNTIMES))
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------- python -m bench.schemes

def _cos(r) -> str:
    if "cosine_min" not in r:
        return ""
    return f"{r['cosine_min']:.5f} / {r['cosine_mean']:.5f}"


def _vs(r) -> str:
    if "vs_best_peer" not in r:
        return "no peer" if "median_ms" in r else ""
    return "best" if r["runtime"] == r["best_peer"] else f"{r['vs_best_peer']:.2f}x"


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1][:300]


def _scheme_header(doc) -> list:
    env = doc["environment"]
    rule = env["adaptive_rounds"]
    rounds = (f"as many rounds as fit in about {rule['budget_s']:g} s per configuration (between "
              f"{rule['min']} and {rule['max']})" if rule else "a fixed number of rounds per configuration")
    warmup = next((c["warmup"] for m in doc["models"] for c in m["timings"]), 0)
    compared = next((r["inputs_compared"] for m in doc["models"] for r in m["runtimes"] if "inputs_compared" in r), 0)
    lines = ["## qrt quantization schemes" + (" (--quick: smoke run, do not quote)" if env["quick"] else ""), "",
             *machine_lines(env),
             f"- Method: one process; each configuration (model, threads, batch) runs every row once per "
             f"round, in an order rotated each round, on more than one thread with a {env['settle_s'] * 1e3:g} ms "
             f"untimed pause before each call, after {warmup} warm-up round(s); {rounds}. Times are per call, "
             "float32 in and float32 out for every row. Every row's model is made from the same float model "
             f"(random fixed-seed weights); the static schemes calibrate on {env['calib_samples']} random normal "
             "samples (minmax).",
             "- vs best peer: the row's median over the median of the fastest peer (a runtime other than "
             "qrt) of the same scheme family, at that thread count and batch; below 1.00x the row is faster "
             "than every peer; 'best': the fastest peer itself.",
             f"- Cosine: of the row's output with the float PyTorch model's, over {compared} random normal "
             "inputs at batch 1: lowest / mean. File: the model's size on disk (PyTorch int8: its state_dict; "
             "numpy: the .npz of the float weights).",
             "- Scheme families: " + "; ".join(f"**{k}**: {v}" for k, v in doc["families"].items()) + ".", ""]
    return lines


def _scheme_targets(doc) -> list:
    lines = ["### Targets (measured, not asserted)", "",
             "| target | model | threads | batch | row | ms | reference | ms | ratio | limit | met |",
             "|---|---|---:|---:|---|---:|---|---:|---:|---:|:---:|"]
    for t in doc["targets"]:
        ratio = "" if t["ratio"] is None else f"{t['ratio']:.2f}x"
        met = "n/a" if t["met"] is None else "yes" if t["met"] else "NO"
        limit = f"{'<' if t['strict'] else '<='} {t['limit']:g}x"
        lines.append(f"| {t['text']} | {t['model']} | {t['threads']} | {t['batch']} | {t['row']} | "
                     f"{_ms(t['row_ms']) or 'failed'} | {t['reference']} | {_ms(t['reference_ms']) or 'failed'} | "
                     f"{ratio} | {limit} | {met} |")
    if not doc["targets"]:
        lines.append("| (no target applies to the models run) | | | | | | | | | | |")
    return lines + [""]


def _scheme_model(doc, m) -> list:
    shape = "x".join(map(str, m["input_shape"]))
    configs = m["timings"]
    lines = [f"### {m['model']}: {m['title']}", "",
             f"Input {shape}, {m['macs'] / 1e6:.1f} MMAC per batch-1 run (as qrt counts them); prepared in "
             f"{m['prepare_s']['total']:.1f} s.", "",
             "| family | runtime | file | cosine lowest / mean | "
             + " | ".join(f"{c['threads']} thr, batch {c['batch']}: ms | vs best peer" for c in configs) + " |",
             "|---|---|---:|---:|" + "---:|---:|" * len(configs)]
    results = [{r["runtime"]: r for r in c["results"]} for c in configs]
    notes = []
    for family in doc["families"]:
        for r in m["runtimes"]:
            if r["family"] != family:
                continue
            cells = []
            for rows in results:
                t = rows.get(r["runtime"], {})
                cells += [_ms(t["median_ms"]), _vs(t)] if "median_ms" in t else ["failed", ""]
            lines.append(f"| {family} | {r['runtime']} | {_size(r['file_bytes'])} | {_cos(r)} | " + " | ".join(cells) + " |")
            if r["error"]:
                notes.append(f"- {r['runtime']}: failed: {_last_line(r['error'])}")
            elif r.get("qrt_kernels", {}).get("reference"):
                notes.append(f"- {r['runtime']}: runs the NumPy reference (no compiled kernel) for "
                             + ", ".join(r["qrt_kernels"]["reference"]))
        for na in m["not_applicable"]:
            if na["family"] == family:
                lines.append(f"| {family} | {na['runtime']} | | | " + " | ".join(["n/a", ""] * len(configs)) + " |")
                notes.append(f"- {na['runtime']}: n/a, {na['reason']}")
    for c in configs:
        notes += [f"- {r['runtime']} at {c['threads']} thread(s): failed to load: {_last_line(r['error'])}"
                  for r in c["results"] if "error" in r]
    lines += [""] + (notes + [""] if notes else []) + (["| threads | batch | rounds | runtime | median ms | p10–p90 ms | IQR ms | GOPS |",
                               "|---:|---:|---:|---|---:|---:|---:|---:|"] if configs else [])
    for c in configs:
        for r in c["results"]:
            if "median_ms" in r:
                gops = "" if r["gops"] is None else f"{r['gops']:.1f}"
                lines.append(f"| {c['threads']} | {c['batch']} | {c['rounds']} | {r['runtime']} | "
                             f"{_ms(r['median_ms'])} | {_ms(r['p10_ms'])}–{_ms(r['p90_ms'])} | {_ms(r['iqr_ms'])} | {gops} |")
    return lines + [""]


def schemes_markdown(doc) -> str:
    lines = _scheme_header(doc) + _scheme_targets(doc)
    for m in doc["models"]:
        lines += _scheme_model(doc, m)
    return "\n".join(lines)


def schemes_chart(doc, path: str):
    """One panel per model and batch (rows) and thread count (columns): each row's median
    latency as a horizontal bar, coloured by scheme family, log scale."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    threads = doc["environment"]["threads"]
    panels = [(m, b) for m in doc["models"] for b in sorted({c["batch"] for c in m["timings"]})]
    families = list(doc["families"])
    colour = {f: f"C{i}" for i, f in enumerate(families)}
    height = sum(0.22 * len(m["runtimes"]) + 0.9 for m, _ in panels) or 2
    fig = Figure(figsize=(6.5 * len(threads) + 2.5, height + 1), layout="constrained")
    axes = fig.subplots(max(len(panels), 1), len(threads), squeeze=False,
                        height_ratios=[len(m["runtimes"]) + 3 for m, _ in panels] or None)
    for i, (m, batch) in enumerate(panels):
        names = [r["runtime"] for r in m["runtimes"]]
        for j, t in enumerate(threads):
            ax = axes[i][j]
            c = next((c for c in m["timings"] if c["threads"] == t and c["batch"] == batch), None)
            rows = {r["runtime"]: r for r in c["results"]} if c else {}
            ms = [rows.get(n, {}).get("median_ms") or 0 for n in names]
            ax.barh(range(len(names)), ms, color=[colour[r["family"]] for r in m["runtimes"]])
            ax.set_yticks(range(len(names)), names if j == 0 else [""] * len(names), fontsize=7)
            ax.invert_yaxis()
            if any(ms):
                ax.set_xscale("log")
            ax.set_title(f"{m['model']}, batch {batch}, {t} thread(s)", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
        axes[i][0].set_xlabel("median latency, ms (log scale; no bar: failed)", fontsize=8)
    fig.legend([Patch(color=colour[f]) for f in families], families, loc="outside upper center",
               ncols=min(4, len(families)), fontsize=8)
    fig.savefig(path, dpi=100)
