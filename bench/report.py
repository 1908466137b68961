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


def _header(doc) -> list:
    env = doc["environment"]
    cpu = env["cpu"]
    has = {True: "yes", False: "no"}
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
    lines = [
        "## qrt benchmark" + (" (--quick: smoke run, do not quote)" if env["quick"] else ""), "",
        f"- CPU: {cpu['model']}, {cpu['cores']} logical cores; AVX-512 VNNI {has[cpu['avx512_vnni']]}, "
        f"AVX-VNNI {has[cpu['avx_vnni']]}, AMX-INT8 {has[cpu['amx_int8']]}"
        + (" (a runtime that uses AMX is not bounded by the vpdpbusd peak)" if cpu["amx_int8"] else ""),
        f"- {peak_line}",
        f"- Load average (1 min) of the machine: {env['load_average_start']:.2f} at the start, "
        f"{env['load_average_end']:.2f} at the end of the run ({env['total_s']:.0f} s); the run itself "
        "accounts for 1 to the thread count, more means other work shared the cores, which weighs "
        "most on the multi-thread figures",
        f"- qrt {env['qrt']} (ISA path {env['qrt_isa']}), onnxruntime {env['onnxruntime']}, torch {env['torch']}, "
        f"numpy {env['numpy']}, Python {env['python']}, {env['platform']}",
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
