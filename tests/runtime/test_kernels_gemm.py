"""The GEMM behind CONV_2D and FULLY_CONNECTED (qrt/kernels/gemm.pyx, simd/gemm.h) at the sizes
where its blocking shows: many row blocks, several panels of 16 channels with a ragged last one,
row counts that are not a multiple of the micro-kernel's rows (6, or 32 for AMX tiles), K long
enough to split blocks and not a multiple of 4 or 64, groups, and 1-3 threads (panels split
between threads when there are few rows), and both requantization forms (32-bit when every
shift is >= 33, 64-bit otherwise; see simd/requant.h). Every instruction-set path this machine supports is
compared with the NumPy reference, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from qrt.kernels import isa as ISA
from qrt.kernels.gemm import bind_conv_2d, bind_fully_connected, pack_conv_2d
from qrt.format import OpCode
from qrt.numerics import quantize_multipliers
from qrt.ops import OPS
from qrt.ops.base import Requant
from qrt.ops.conv_2d import ConvParams
from qrt.ops.fully_connected import FullyConnectedParams

PATHS = ISA.supported()


def _requant(rng, channels, zp_y, typical):
    """Multipliers that map a typical sum (of size `typical`) onto about +-60, so most outputs
    land inside int8 (rounding shows) and some saturate."""
    real = 60 / typical * rng.uniform(0.5, 2, channels)
    m, n = quantize_multipliers(real)
    return Requant(m.astype(np.int32), n.astype(np.int32), zp_y, -128, 127)


def _conv(rng, n, h, w, cin, cout, k, stride, pad, groups=1, wmax=127, zp=None):
    zp = int(rng.integers(-128, 128)) if zp is None else zp
    x = rng.integers(-128, 128, (n, h, w, cin), dtype=np.int8)
    wt = rng.integers(-wmax, wmax + 1, (cout, k, k, cin // groups), dtype=np.int8)
    typical = np.sqrt(k * k * cin // groups) * 128 * (wmax * 0.58 + 0.3)  # rms of the sum
    b = rng.integers(-typical // 3 - 1, typical // 3 + 1, cout).astype(np.int32)
    p = ConvParams((stride, stride), (1, 1), (pad, pad, pad, pad), groups, zp,
                   _requant(rng, cout, int(rng.integers(-20, 20)), typical))
    return [x, wt, b], p


CONV_SHAPES = [  # (n, h, w, cin, cout, k, stride, pad, groups[, largest weight])
    (1, 9, 11, 300, 70, 3, 1, 1, 1),    # K = 2700: several row blocks; 5 panels, last ragged
    (2, 7, 5, 33, 17, 3, 2, 1, 1),      # K = 297 (not a multiple of 4 or 64); 17 channels
    (1, 13, 3, 8, 40, 1, 1, 0, 1),      # 1x1 over every pixel: rows copied whole; 39 rows
    (1, 6, 6, 12, 96, 3, 1, 0, 3),      # groups: each a GEMM of its own
    (3, 4, 4, 5, 33, 5, 1, 2, 1),       # padding everywhere; batch 3
    (1, 1, 1, 1024, 1000, 1, 1, 0, 1),  # one row: threads split the panels
    (1, 6, 7, 1, 20, 1, 1, 0, 1, 1),    # weights +-1, multipliers near 1/2: 64-bit requantization
    (1, 64, 64, 16, 48, 1, 1, 0, 1),    # 4096 rows of K = 16 in one block: split evenly per thread
    (1, 7, 7, 512, 64, 3, 1, 1, 1),     # 49 rows of K = 4608, 3 blocks: panels split as well
]


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=[str(s) for s in CONV_SHAPES])
@pytest.mark.parametrize("isa", PATHS)
def test_conv_blocks_panels_and_threads(shape, isa):
    rng = np.random.default_rng(sum(shape))
    ins, p = _conv(rng, *shape)
    ref = OPS[OpCode.CONV_2D].reference(ins, p)
    assert ((ref > -128) & (ref < 127)).mean() > 0.5  # mostly unsaturated: rounding is seen
    packed = pack_conv_2d(ins, p, isa=isa)
    for threads in (1, 2, 3):
        out = np.ascontiguousarray(~ref)
        bind_conv_2d(ins, p, out, isa=isa, threads=threads, packed=packed)()
        assert np.array_equal(out, ref), (isa, threads, int((out != ref).sum()))


@pytest.mark.parametrize("isa", PATHS)
def test_fully_connected_rows_and_threads(isa):
    rng = np.random.default_rng(7)
    for rows, k, n_out in ((1, 1000, 10), (37, 130, 65), (100, 64, 16), (5, 3, 1)):
        x = rng.integers(-128, 128, (rows, k), dtype=np.int8)
        w = rng.integers(-127, 128, (n_out, k), dtype=np.int8)
        b = rng.integers(-5000, 5000, n_out).astype(np.int32)
        p = FullyConnectedParams(int(rng.integers(-128, 128)), _requant(rng, n_out, 3, np.sqrt(k) * 9400))
        ref = OPS[OpCode.FULLY_CONNECTED].reference([x, w, b], p)
        for threads in (1, 2):
            out = np.ascontiguousarray(~ref)
            bind_fully_connected([x, w, b], p, out, isa=isa, threads=threads)()
            assert np.array_equal(out, ref), (isa, rows, k, n_out, threads)


def test_both_requantization_forms_are_covered():
    seen = {pack_conv_2d(*_conv(np.random.default_rng(sum(s)), *s)).n33 for s in CONV_SHAPES}
    assert seen == {True, False}


def test_step_reruns_and_follows_its_buffers():
    """A bound step reads its input buffer afresh on every run (the arena is refilled between
    runs) and leaves nothing behind that changes the next result."""
    rng = np.random.default_rng(3)
    ins, p = _conv(rng, 1, 8, 8, 16, 24, 3, 1, 1)
    out = np.empty((1, 8, 8, 24), np.int8)
    step = bind_conv_2d(ins, p, out)
    for _ in range(3):
        ins[0][...] = rng.integers(-128, 128, ins[0].shape, dtype=np.int8)
        step()
        assert np.array_equal(out, OPS[OpCode.CONV_2D].reference(ins, p))


def test_packed_for_another_path_is_refused():
    if len(PATHS) < 2:
        pytest.skip("one path only on this machine")
    rng = np.random.default_rng(4)
    ins, p = _conv(rng, 1, 4, 4, 8, 8, 3, 1, 1)
    packed = pack_conv_2d(ins, p, isa=PATHS[0])
    with pytest.raises(ValueError, match="packed for"):
        bind_conv_2d(ins, p, np.empty((1, 4, 4, 8), np.int8), isa=PATHS[-1], packed=packed)


def test_unknown_or_unsupported_path_is_refused(monkeypatch):
    rng = np.random.default_rng(5)
    ins, p = _conv(rng, 1, 4, 4, 8, 8, 3, 1, 1)
    out = np.empty((1, 4, 4, 8), np.int8)
    with pytest.raises(ValueError, match="unknown instruction-set path"):
        bind_conv_2d(ins, p, out, isa="neon")
    monkeypatch.setenv("QRT_ISA", "sse9")
    with pytest.raises(ValueError, match="unknown instruction-set path 'sse9'"):
        bind_conv_2d(ins, p, out)
    missing = [name for name in ISA.NAMES if name not in PATHS]
    if missing:
        with pytest.raises(ValueError, match="cannot run"):
            bind_conv_2d(ins, p, out, isa=missing[0])
