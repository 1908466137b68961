"""The machine's int8 peak and what its CPU offers, for the "% of peak" figures of `python -m bench`.

measure(threads=(1, 2)) compiles bench/peak.c with the system gcc into a temporary folder,
loads it with ctypes and runs chains of independent `vpdpbusd` (zmm if the CPU has AVX-512
VNNI, else the ymm AVX-VNNI form; on AVX2 without VNNI, `vpmaddwd` + `vpaddd`, the exact int8
product there) for about `seconds` on each of 1..n threads at once. GOPS count 2 ops per
MAC: 64 MACs per zmm vpdpbusd, 32 per ymm vpdpbusd, 16 per vpmaddwd. Without gcc or AVX2 the
peak is reported as unavailable, with the reason.

cpu() reads the model name and the int8-relevant flags (avx512_vnni, avx_vnni, amx_int8)
from /proc/cpuinfo.
"""
from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import tempfile
import threading
import time

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peak.c")
# peak_path() -> (function, instruction, name, MACs per instruction)
PATHS = {2: ("zmm", "vpdpbusd zmm", "avx512vnni", 64), 1: ("ymm", "vpdpbusd ymm", "avx-vnni", 32),
         3: ("avx2", "vpmaddwd ymm + vpaddd", "avx2, no VNNI", 16)}
FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu() -> dict:
    """{"model": name, "cores": n, flag: bool for each of FLAGS}; flags False off Linux."""
    info = {"model": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    flags: set = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    info["model"] = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {**info, **{flag: flag in flags for flag in FLAGS}}


def _library(folder: str):
    so = os.path.join(folder, "peak.so")
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", SOURCE, "-o", so], check=True,
                   capture_output=True, text=True)
    lib = ctypes.CDLL(so)
    for fn in (lib.peak_zmm, lib.peak_ymm, lib.peak_avx2):
        fn.argtypes, fn.restype = [ctypes.c_int64, ctypes.c_int32], ctypes.c_int64
    return lib


def _run(fn, iterations: int, threads: int) -> float:
    """Wall seconds for `threads` threads each running fn(iterations) at once (ctypes releases
    the GIL during the call)."""
    start = threading.Barrier(threads + 1)

    def work(seed):
        start.wait()
        fn(iterations, seed)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    return time.perf_counter() - t0


def measure(threads=(1, 2), seconds: float = 0.2, tries: int = 3) -> dict:
    """{"instruction": ..., "gops": {threads: best GOPS of `tries`}} or {"error": why}."""
    try:
        with tempfile.TemporaryDirectory() as folder:
            lib = _library(folder)
            path = lib.peak_path()
            if path not in PATHS:
                return {"error": "this CPU has neither VNNI nor AVX2"}
            name, instruction, isa, macs = PATHS[path]
            fn = getattr(lib, f"peak_{name}")
            ops_per_iteration = 2 * macs * lib.peak_chains()
            # size the run from a short one, so that each try lasts about `seconds`
            probe = 100_000
            iterations = max(probe, int(probe * seconds / max(_run(fn, probe, 1), 1e-6)))
            gops = {n: max(ops_per_iteration * iterations * n / _run(fn, iterations, n) / 1e9
                           for _ in range(tries)) for n in threads}
            return {"instruction": f"{instruction} ({isa}), {lib.peak_chains()} independent chains",
                    "gops": gops}
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        return {"error": f"could not build bench/peak.c with gcc: {detail.strip()[:300]}"}


if __name__ == "__main__":
    print(cpu())
    print(measure())
