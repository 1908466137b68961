"""Whole models give the same bits on every instruction-set path this machine supports, at 1 and
2 threads, as the NumPy reference kernels; and the path and thread count are chosen as the
README says (argument, then QRT_ISA / QRT_THREADS, then the machine), with clear errors."""
from __future__ import annotations

import numpy as np
import pytest

import qrt
from qrt.kernels import isa as ISA
from bench.fixtures.sample_models import all_ops_model, conv_chain_model


@pytest.fixture(scope="module")
def models():
    from bench.fixtures.models import resnet18
    return {"all_ops": qrt.to_bytes(all_ops_model()),
            "chain": qrt.to_bytes(conv_chain_model(channels=40, blocks=2, size=20)),
            "resnet18_small": qrt.to_bytes(resnet18(size=48, width=16, classes=10, seed=5))}


@pytest.mark.parametrize("name", ["all_ops", "chain", "resnet18_small"])
def test_every_path_and_thread_count_matches_reference(models, name):
    ref = qrt.load(models[name], kernels="reference")
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2,) + ref.inputs[0].shape[1:]) * 2).astype(np.float32)
    want = ref.run(x, raw=True)
    for isa in ISA.supported():
        for threads in (1, 2):
            m = qrt.load(models[name], isa=isa, threads=threads)
            assert (m.isa, m.threads) == (isa, threads)
            got = m.run(x, raw=True)
            if isinstance(want, dict):
                for k in want:
                    assert np.array_equal(got[k], want[k]), (name, isa, threads, k)
            else:
                assert np.array_equal(got, want), (name, isa, threads)


def test_defaults_and_environment(models, monkeypatch):
    data = models["chain"]
    monkeypatch.delenv("QRT_ISA", raising=False)
    monkeypatch.delenv("QRT_THREADS", raising=False)
    m = qrt.load(data)
    assert m.isa == ISA.supported()[-1] and m.threads >= 1
    monkeypatch.setenv("QRT_ISA", "scalar")
    monkeypatch.setenv("QRT_THREADS", "3")
    m = qrt.load(data)
    assert (m.isa, m.threads) == ("scalar", 3)
    assert qrt.load(data, isa=ISA.supported()[-1], threads=1).isa == ISA.supported()[-1]


@pytest.mark.parametrize("kwargs,env,message", [
    ({"isa": "neon"}, {}, "unknown instruction-set path 'neon'"),
    ({}, {"QRT_ISA": "avx9"}, "unknown instruction-set path 'avx9'"),
    ({"threads": 0}, {}, "threads must be a whole number >= 1"),
    ({}, {"QRT_THREADS": "many"}, "QRT_THREADS='many' is not a whole number"),
])
def test_bad_choices_are_clear_errors(models, monkeypatch, kwargs, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(qrt.InputError, match=message):
        qrt.load(models["chain"], **kwargs)


def test_the_c_is_compiled_once_with_one_scratch_per_thread():
    """The paths' C (simd/*.h) is compiled into qrt.kernels.isa only; the other kernel modules
    see simd/api.h and cimport its entry points (isa.pxd). So only isa's shared object has
    thread-local storage: the one per-thread scratch (simd/isa.h qrt_scratch) of every op."""
    import importlib
    import struct

    def has_tls(path):  # an ELF64 program header of type PT_TLS (7)
        data = open(path, "rb").read()
        if data[:5] != b"\x7fELF\x02":
            pytest.skip("not an ELF64 shared object")
        phoff, = struct.unpack_from("<Q", data, 0x20)
        size, count = struct.unpack_from("<HH", data, 0x36)
        return any(struct.unpack_from("<I", data, phoff + i * size)[0] == 7 for i in range(count))

    names = ("isa", "gemm", "depthwise", "elementwise", "movement", "softmax", "pool", "requantize", "plan")
    tls = {n: has_tls(importlib.import_module(f"qrt.kernels.{n}").__file__) for n in names}
    assert tls == {n: n == "isa" for n in names}, tls


def test_no_fused_multiply_add_in_any_kernel():
    """The float kernels (simd/weight_only.h, dynamic.h, eltwise.h's QUANTIZE / DEQUANTIZE) round
    every product and every sum as their NumPy references do, so no kernel module may hold a
    fused multiply-add: setup.py compiles every module with -ffp-contract=off (gcc's default
    fuses a * b + c wherever the target has FMA: every AVX2 and AVX-512 function)."""
    import glob
    import os
    import re
    import shutil
    import subprocess

    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump not found")
    paths = sorted(glob.glob(os.path.join(os.path.dirname(ISA.__file__), "*.so")))
    assert any(os.path.basename(p).startswith("isa.") for p in paths)
    for path in paths:
        text = subprocess.run([objdump, "-d", "--no-show-raw-insn", path], capture_output=True,
                              text=True, check=True).stdout
        fused = re.findall(r"^\s*[0-9a-f]+:\s+(vfn?m(?:add|sub)\w*)", text, re.M)
        assert not fused, (os.path.basename(path), len(fused), sorted(set(fused)))
