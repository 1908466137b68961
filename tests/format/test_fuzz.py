"""Mutation fuzz in the normal suite: thousands of seeded byte flips, overwrites, insertions,
deletions and truncations of valid models. Each must load or raise qrt's own error. Files are
loaded in child processes, so a crash (segfault, abort) or a hang fails the test with the seed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHUNKS, PER_CHUNK = 4, 800  # 3200 mutated files


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_mutated_files_load_or_raise_qrt_error(chunk):
    first = chunk * PER_CHUNK
    try:
        r = subprocess.run([sys.executable, "-m", "bench.fixtures.mutate", str(first), str(PER_CHUNK)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        last = [l for l in out.splitlines() if l.startswith("seed ")][-1:]
        pytest.fail(f"the loader hung on {last}: rerun with python -m bench.fixtures.mutate")
    lines = r.stdout.splitlines()
    last = [l for l in lines if l.startswith("seed ")][-1:]
    assert r.returncode == 0, f"child exited {r.returncode} at {last}:\n" + "\n".join(lines[-30:]) + r.stderr[-3000:]
    assert lines[-1].startswith(f"done {PER_CHUNK} files"), lines[-3:]
