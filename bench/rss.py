"""Peak memory of a fresh process that imports one runtime, loads one model and runs it.

    python -m bench.rss KIND THREADS RUNS SHAPE PATH [PATH]     (SHAPE like 1x3x224x224)

KIND and PATHs as in bench.runtimes. Prints one JSON line: import_mb (peak resident memory
after importing numpy and the runtime's library), peak_mb (after loading and RUNS runs on
random input) and packages (the top-level packages outside the
standard library that the process had imported by then). `python -m bench` runs one such
process per runtime per model, via measure().
"""
from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys

import numpy as np

from bench.runtimes import LIBRARY, load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mb() -> float:
    """Peak resident memory so far, MB. Linux: VmHWM, the high-water mark of this program's own
    memory; ru_maxrss would not do, as Linux carries the parent's high-water mark through
    fork and exec into it."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def measure(kind: str, paths, shape, threads: int = 1, runs: int = 3) -> dict:
    """Run this module in a fresh interpreter; its JSON result, or {"error": ...}."""
    cmd = [sys.executable, "-m", "bench.rss", kind, str(threads), str(runs),
           "x".join(map(str, shape)), *paths]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode:
        return {"error": (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1][:300]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv) -> int:
    kind, threads, runs, shape, *paths = argv
    importlib.import_module(LIBRARY[kind])
    import_mb = _mb()
    shape = tuple(int(d) for d in shape.split("x"))
    fn = load(kind, paths, int(threads), shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(int(runs)):
        fn(x)
    # less this harness and Cython's bookkeeping module
    packages = {name.partition(".")[0] for name in sys.modules} - set(sys.stdlib_module_names)
    packages -= {"__main__", "bench", "cython_runtime"}
    print(json.dumps({"import_mb": import_mb, "peak_mb": _mb(),
                      "packages": sorted(p for p in packages if not p.startswith("_"))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
