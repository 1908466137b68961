"""What `pip install .` puts on a user's machine: qrt with its converters as qrt.converters (no
top-level `converters`), compiled kernels without debug information or their sources, under
3 MB installed (the runtime is meant for small devices)."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from the files git tracks (a clean copy: no build leftovers)."""
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True).stdout
    if not files:
        pytest.skip("not a git checkout")
    for name in files.decode().split("\0"):
        if name and (ROOT / name).is_file():
            dest = src / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes((ROOT / name).read_bytes())
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("qrt-*.whl")
    return whl


def test_wheel_installs_qrt_only_without_kernel_sources(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"qrt"}, tops
    assert any(n.startswith("qrt/converters/") for n in names)
    assert any(n.startswith("qrt/ops/") for n in names)
    sources = [n for n in names if n.endswith((".c", ".pyx", ".pxd", ".h"))]
    assert not sources, sources


def test_installed_runtime_is_small_and_stripped(wheel):
    with zipfile.ZipFile(wheel) as z:
        infos = z.infolist()
        runtime = sum(i.file_size for i in infos if i.filename.startswith("qrt/")
                      and not i.filename.startswith("qrt/converters/"))
        assert runtime < 3 * 2**20, f"the runtime installs in {runtime / 2**20:.2f} MB"
        for i in infos:
            if i.filename.endswith(".so"):
                data = z.read(i)
                assert b".debug_info" not in data and b".symtab" not in data, f"{i.filename} is not stripped"
