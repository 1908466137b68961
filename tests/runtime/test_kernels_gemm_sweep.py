"""Remainder sweeps around every GEMM micro-kernel's tile (qrt/kernels/simd/gemm.h), generated
from the tile sizes rather than listed by hand.

Every instruction-set path has a micro-kernel of `rows` output pixels x `cols` output channels
(panels of 16) that runs over the whole K, padded with zeros to a multiple of `k_align`:

    scalar      6 rows x 4 panels of 16 channels, 4 k per step
    avx2        6 rows x 1 panel (the driver hands it up to 4 panels), 2 k per step (vpmaddwd on
                uint16 rows: 2 bytes per packed k); a copy of the kernel per row count 1-6
    avx512vnni  6 rows x 1-4 panels (a copy per (row count, panel count)), 4 k per step (vpdpbusd)
    amx         32 rows (two 16-row tiles) x 2 panels, 64 k per step (tdpbusd), K padded to 64
(K is padded to a multiple of 4 on the other paths; weights are packed 4 k at a time, AVX2: 2.)

There is no blocking of K: each micro-kernel call runs the whole K. Rows are taken in blocks
of QRT_BLOCK_BYTES of packed rows (a multiple of the kernel's rows); with 2 threads an odd
block count is re-split into an even one, and when there are few blocks the panels are split
between the threads as well (qrt_gemm_run; mirrored by `_work_split` below).

The sweep, per path: M over every remainder mod the tile's rows (1 .. 2*rows+1), N over every
remainder mod the tile's columns and into the next tile, K = 1 .. 9 (every remainder mod 4,
K4 = 4, 8, 12; AMX also both sides of 64 and 128), plus a part at the row-block boundary (K long
enough that a block holds 2 tiles of rows, M from 1 to past 3 blocks). The compiled
FULLY_CONNECTED runs every data variant over the whole product at 1 thread, a 1x1 CONV_2D
(groups 1 and 2) the variant of each K; at 2 threads every (M, panel count) pair runs once,
N and K taking turns (the split between threads depends on M, the panel count and the row
block, not on the remainders of N or K). Every output must equal the NumPy reference bit for
bit, with nothing written outside it. The data variants: random values; extreme input zero
points (-128, 127) with |x - zp_x| = 255; extreme weights (+-127, all +127, all -127); extreme
output zero points; a ReLU clamp; both requantization forms (32-bit when every shift is >= 33,
64-bit otherwise).

`fast` (in `make check`, about a second per path) takes the edges of each range; `full` (marked
slow) is those and the whole ranges.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import qrt.kernels
from qrt.format import OpCode
from qrt.kernels import isa as ISA
from qrt.kernels.gemm import bind_conv_2d, bind_fully_connected, pack_conv_2d, pack_fully_connected
from qrt.numerics import quantize_multipliers
from qrt.ops import OPS
from qrt.ops.base import Requant
from qrt.ops.conv_2d import ConvParams
from qrt.ops.fully_connected import FullyConnectedParams

PATHS = ISA.supported()
REF_CONV, REF_FC = (OPS[op].reference for op in (OpCode.CONV_2D, OpCode.FULLY_CONNECTED))

# simd/gemm.h
QRT_MR, QRT_NP, PANEL, QRT_BLOCK_BYTES = 6, 4, 16, 192 * 1024


@dataclass(frozen=True)
class Tile:
    rows: int     # output pixels per micro-kernel call
    cols: int     # output channels per micro-kernel call (the driver's panel group)
    k_align: int  # K4: K padded to a multiple of this
    k_bytes: int  # bytes per packed k of a row


TILES = {
    "scalar": Tile(QRT_MR, QRT_NP * PANEL, 4, 1),
    "avx2": Tile(QRT_MR, QRT_NP * PANEL, 4, 2),
    "avx512vnni": Tile(QRT_MR, QRT_NP * PANEL, 4, 1),
    "amx": Tile(32, 2 * PANEL, 64, 1),
}
assert set(TILES) == set(ISA.NAMES)


def _ceil(a, b):
    return -(-a // b)


def _k4(tile, k):
    return max(_ceil(k, tile.k_align) * tile.k_align, tile.k_align)


def _row_block(tile, k):
    """qrt_gemm_block: rows per block."""
    mc = QRT_BLOCK_BYTES // (_k4(tile, k) * tile.k_bytes)
    mc -= mc % tile.rows
    return max(mc, tile.rows)


def _work_split(tile, k, m, n, groups, threads):
    """qrt_gemm_run: (rows per block, blocks, panel splits)."""
    mc = _row_block(tile, k)
    blocks = _ceil(m, mc)
    if threads > 1 and blocks % threads:
        per = _ceil(m, _ceil(blocks, threads) * threads)
        per += (tile.rows - per % tile.rows) % tile.rows
        mc = min(per, mc)
        blocks = _ceil(m, mc)
    panels = _ceil(n, PANEL)
    splits = 1
    if threads > 1 and (groups * blocks) % threads and groups * blocks < 4 * threads:
        splits = min(panels, threads)
    return mc, blocks, splits


# ------------------------------------------------------------------------------ data variants

@dataclass(frozen=True)
class Variant:
    name: str
    zp_x: int | None    # None: random
    zp_y: int | None
    x: str              # "random", or "far": |x - zp_x| = 255 (x = -zp_x - 1) for most entries
    w: str              # "random" [-127, 127], "pm127" random signs, "+127", "-127"
    wide: bool = False  # one channel's multiplier >= 1/4: shift < 33, the 64-bit requantization
    lo: int = -128      # the clamp's lower end (a fused activation when > -128)


VARIANTS = (
    Variant("random", None, None, "random", "random"),
    Variant("zp_x=-128 w=+-127 zp_y=127, 64-bit", -128, 127, "far", "pm127", wide=True),
    Variant("zp_x=127 w=+127 zp_y=127: the most negative sums", 127, 127, "far", "+127"),
    Variant("zp_x=127 w=-127 zp_y=-128 clamp at -80, 64-bit", 127, -128, "random", "-127", wide=True, lo=-80),
)


class Case(NamedTuple):  # ordered as the runner groups them: one data set per (op, groups, k, variant)
    op: str       # "fc" or "conv" (1x1 CONV_2D)
    groups: int
    k: int        # K per group
    variant: int  # index into VARIANTS
    n: int        # output channels per group
    m: int        # rows (pixels)
    threads: int


def _edges(q):
    return {1, q - 1, q, q + 1, 2 * q + 1}


def _remainders(ms, ns_fc, ns_conv, ks):
    """FULLY_CONNECTED with every variant and 1x1 CONV_2D (groups 1 and 2, the variant K mod 4)
    over ms x ns x ks at 1 thread. At 2 threads (the split between the threads depends on M,
    the panel count and the row block, not on the remainders of N or K) every (M, panel count)
    pair once, N within the panel count and K taking turns."""
    cases = set()
    ms, ks = sorted(ms), sorted(ks)

    def two_threads(ns):
        """{(n, m): k} at 2 threads."""
        by_panels = {}
        for n in sorted(ns):
            by_panels.setdefault(_ceil(n, PANEL), []).append(n)
        pairs = itertools.product(ms, sorted(by_panels.values()))
        return {(same[i % len(same)], m): ks[i % len(ks)] for i, (m, same) in enumerate(pairs)}

    for op, groups, ns in (("fc", 1, ns_fc), ("conv", 1, ns_conv), ("conv", 2, ns_conv)):
        pick = two_threads(ns)
        for k in ks:
            turn = k % len(VARIANTS)
            variants = range(len(VARIANTS)) if op == "fc" else [turn]
            for n in ns:
                for m in ms:
                    cases.update(Case(op, groups, k, v, n, m, 1) for v in variants)
                    if pick.get((n, m)) == k:
                        cases.add(Case(op, groups, k, turn, n, m, 2))
    return cases


def _row_blocks(t, ms, ns_fc, ns_conv, k_short):
    """Around the row-block boundary: K4 such that a block holds 2 tiles of rows, K short of
    K4 by each of k_short; every case at 1 and 2 threads, the variant K mod 4."""
    k4 = QRT_BLOCK_BYTES // (2 * t.rows * t.k_bytes)
    mc = 2 * t.rows
    assert _row_block(t, k4) == mc
    cases = set()
    for k in (k4 - d for d in k_short):
        for op, groups, ns in (("fc", 1, ns_fc), ("conv", 2, ns_conv)):
            cases.update(Case(op, groups, k, k % len(VARIANTS), n, m, threads)
                         for n in ns for m in ms(mc) for threads in (1, 2))
    return cases


def _sweep(isa, full):
    """The cases for one path, sorted: `fast` the edges of each range, `full` those and the
    whole ranges."""
    t = TILES[isa]
    ks = {1, 4, 5, 6, 7, 8}  # K4 = 4 and 8, K short of it by 0-3
    if t.k_align > 4:
        ks |= {t.k_align - 1, t.k_align, t.k_align + 1}
    cases = _remainders(ms=_edges(t.rows) | ({15, 16, 17} if t.rows > PANEL else set()),
                        ns_fc={1, PANEL - 1, PANEL, PANEL + 1, t.cols, t.cols + 1, t.cols + PANEL + 1},
                        ns_conv={1, PANEL + 1, t.cols + 1}, ks=ks)
    cases |= _row_blocks(t, lambda mc: {mc + 1, 3 * mc - 1}, (t.cols + 1,), (PANEL + 1,), k_short=[1])
    if full:
        ks = set(range(1, 10))
        if t.k_align > 4:
            ks |= {t.k_align + d for d in (-1, 0, 1)} | {2 * t.k_align + d for d in (-1, 0, 1)}
        ns_conv = set(range(1, PANEL + 2)) | {2 * t.cols + 1}
        ns_conv |= {PANEL * j + d for j in range(2, t.cols // PANEL + 2) for d in (-1, 0, 1)}
        cases |= _remainders(ms=range(1, 2 * t.rows + 2), ks=ks, ns_conv=ns_conv,
                             ns_fc=set(range(1, t.cols + PANEL + 2)) | {2 * t.cols + d for d in (-1, 0, 1)})
        cases |= _row_blocks(t, lambda mc: {1, t.rows + 1, mc, mc + 1, 2 * mc, 2 * mc + 1, 3 * mc - 1, 3 * mc + 1},
                             (1, PANEL + 1, t.cols + 1), (PANEL + 1,), k_short=[3, 2, 1, 0])
    return sorted(cases)


# ------------------------------------------------------------------------------ running


def _data(rng, variant, m, n, k, groups):
    """x [m, groups*k], w [groups, n, k], bias and real multipliers [groups, n], zero points."""
    zp_x = int(rng.integers(-128, 128)) if variant.zp_x is None else variant.zp_x
    zp_y = int(rng.integers(-20, 21)) if variant.zp_y is None else variant.zp_y
    x = rng.integers(-128, 128, (m, groups * k), dtype=np.int8)
    if variant.x == "far":
        x[rng.random(x.shape) < 0.8] = -zp_x - 1  # 127 for zp -128, -128 for zp 127
    if variant.w == "random":
        w = rng.integers(-127, 128, (groups, n, k), dtype=np.int8)
    elif variant.w == "pm127":
        w = np.where(rng.random((groups, n, k)) < 0.5, -127, 127).astype(np.int8)
    else:
        w = np.full((groups, n, k), int(variant.w), np.int8)
    xs = x.astype(np.int64).reshape(m, groups, k) - zp_x
    acc = np.einsum("mgk,gnk->gmn", xs, w.astype(np.int64))  # [groups, m, n]
    spread = np.abs(acc).max(axis=1) + 1  # [groups, n]
    bias = (rng.uniform(-0.3, 0.3, (groups, n)) * spread).astype(np.int32)
    # the sums (bias included) onto about +-90: most outputs inside int8, rounding seen
    real = 90 / (spread + np.abs(bias)) * rng.uniform(0.6, 1.0, (groups, n))
    if variant.wide:
        real[0, 0] = 0.7
    mult, shift = quantize_multipliers(real.reshape(-1))
    return x, w, bias, mult.astype(np.int32).reshape(groups, n), shift.astype(np.int32).reshape(groups, n), zp_x, zp_y


def _guarded(shape, ref, rng):
    """An output array inside a buffer with 64 random bytes either side; the array holds ~ref,
    so every element the kernel leaves unwritten differs from the reference."""
    size = int(np.prod(shape))
    buf = rng.integers(-128, 128, size + 128, dtype=np.int8)
    out = buf[64:64 + size].reshape(shape)
    out[...] = ~ref
    return buf, out, buf.copy()


def _run_sweep(isa, cases):
    """Runs the cases; returns (failures, runs, requantization forms seen, {variant: fraction
    of the reference's outputs strictly inside the clamp range})."""
    failures, runs, forms = [], 0, set()
    inside = np.zeros((len(VARIANTS), 2))
    key = lambda c: (c.op, c.groups, c.k, c.variant)  # noqa: E731
    for (op, groups, k, vi), group in itertools.groupby(cases, key):
        group = list(group)
        variant = VARIANTS[vi]
        rng = np.random.default_rng([("fc", "conv").index(op), groups, k, vi])
        mmax, nmax = max(c.m for c in group), max(c.n for c in group)
        x, w, bias, mult, shift, zp_x, zp_y = _data(rng, variant, mmax, nmax, k, groups)
        for n, cs in itertools.groupby(group, lambda c: c.n):
            requant = Requant(np.ascontiguousarray(mult[:, :n]).reshape(-1),
                              np.ascontiguousarray(shift[:, :n]).reshape(-1), zp_y, variant.lo, 127)
            b = np.ascontiguousarray(bias[:, :n]).reshape(-1)
            if op == "fc":
                wn = np.ascontiguousarray(w[0, :n])
                p = FullyConnectedParams(zp_x, requant)
                ref = REF_FC([x, wn, b], p)
                packed = pack_fully_connected([x, wn, b], p, isa=isa)
            else:
                wn = np.ascontiguousarray(w[:, :n]).reshape(groups * n, 1, 1, k)
                p = ConvParams((1, 1), (1, 1), (0, 0, 0, 0), groups, zp_x, requant)
                ref = REF_CONV([x.reshape(1, mmax, 1, groups * k), wn, b], p).reshape(mmax, groups * n)
                packed = pack_conv_2d([x.reshape(1, mmax, 1, groups * k), wn, b], p, isa=isa)
            forms.add(packed.n33)
            inside[vi] += (((ref > variant.lo) & (ref < 127)).sum(), ref.size)
            for c in cs:
                xm, refm = x[:c.m], ref[:c.m]
                buf, out, before = _guarded(refm.shape, refm, rng)
                if op == "fc":
                    bind_fully_connected([xm, wn, b], p, out, isa=isa, threads=c.threads, packed=packed)()
                else:
                    bind_conv_2d([xm.reshape(1, c.m, 1, groups * k), wn, b], p,
                                 out.reshape(1, c.m, 1, groups * n), isa=isa, threads=c.threads,
                                 packed=packed)()
                runs += 1
                outside = np.concatenate([buf[:64] != before[:64], buf[-64:] != before[-64:]]).sum()
                if not np.array_equal(out, refm) or outside:
                    failures.append(f"{c} ({variant.name}): {int((out != refm).sum())} of {refm.size} "
                                    f"outputs differ, {int(outside)} bytes written outside")
    return failures, runs, forms, {v.name: inside[i, 0] / inside[i, 1] for i, v in enumerate(VARIANTS)}


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["fast", "full"])
@pytest.mark.parametrize("isa", PATHS)
def test_gemm_remainder_sweep(isa, full):
    cases = _sweep(isa, full)
    failures, runs, forms, inside = _run_sweep(isa, cases)
    assert runs == len(cases)
    assert not failures, f"{isa}: {len(failures)} of {runs} cases wrong, e.g.\n" + "\n".join(failures[:20])
    assert forms == {True, False}, forms  # both requantization forms ran
    assert min(inside.values()) > 0.25, inside  # every variant often unclamped: rounding is seen


# ------------------------------------------------------------------------------ the generator


def test_tile_constants_match_gemm_h():
    """The sizes the sweep is generated from are the kernel's (simd/gemm.h)."""
    header = Path(qrt.kernels.__file__).parent / "simd" / "gemm.h"
    text = header.read_text()
    defines = {name: m.group(1) for name in ("QRT_MR", "QRT_NP", "QRT_BLOCK_BYTES")
               for m in [re.search(rf"#define {name} +(\S.*?)\s*(?:/\*|$)", text, re.M)] if m}
    assert defines == {"QRT_MR": str(QRT_MR), "QRT_NP": str(QRT_NP), "QRT_BLOCK_BYTES": "(192 * 1024)"}
    # each path's entry of qrt_gemm_ops_for: rows per call and bytes per packed k
    entries = dict(re.findall(r"\[QRT_(\w+)\] = \{([^}]*)\}", text[text.index("qrt_gemm_ops_for(int isa)"):]))
    for name, tile in TILES.items():
        entry = entries[name.upper()]
        assert re.search(rf"\.mr = {'QRT_MR' if tile.rows == QRT_MR else tile.rows}\b", entry), (name, entry)
        assert re.search(rf"\.es = {tile.k_bytes}\b", entry), (name, entry)
        assert re.search(rf"\.k_align = {tile.k_align}\b", entry), (name, entry)


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["fast", "full"])
@pytest.mark.parametrize("isa", ISA.NAMES)
def test_sweep_reaches_every_remainder(isa, full):
    """The generated cases, on every path (this machine's or not), reach what the module
    docstring claims: every remainder of M, N and K, 1, 2 and 3 row blocks, a re-split of the blocks,
    panels split between threads, every data variant with both ops and both thread counts."""
    t = TILES[isa]
    cases = _sweep(isa, full)
    assert len(set(cases)) == len(cases)
    if full:
        assert set(_sweep(isa, False)) <= set(cases)
    shapes = {(c.op, c.groups, c.k, c.n, c.m) for c in cases}
    small = {(k, m) for _, _, k, _, m in shapes if _row_block(t, k) > m}  # one block, several tiles
    if full:
        assert {m % t.rows for _, m in small} == set(range(t.rows))
        assert {n % t.cols for op, _, _, n, _ in shapes if op == "fc"} == set(range(t.cols))
        assert {k % 4 for _, _, k, _, _ in shapes} == set(range(4))
        for op, groups in (("fc", 1), ("conv", 1), ("conv", 2)):
            ns = {n for o, g, _, n, _ in shapes if (o, g) == (op, groups)}
            assert {n % PANEL for n in ns} == set(range(PANEL)), (op, groups)
            assert {_ceil(n, PANEL) % (t.cols // PANEL) for n in ns} == set(range(t.cols // PANEL))
            assert {(c.variant, c.threads) for c in cases if (c.op, c.groups) == (op, groups)} == {
                (v, th) for v in range(len(VARIANTS)) for th in (1, 2)}
    assert {m % t.rows for _, m in small} >= {0, 1, t.rows - 1}
    assert {n % PANEL for *_, n, _ in shapes} >= {0, 1, PANEL - 1}
    assert {k % 4 for _, _, k, _, _ in shapes} >= {0, 1, 3}
    assert {_k4(t, k) - k for _, _, k, _, _ in shapes} >= {0, 1}  # K a multiple of K4's step, and one short
    blocks, resplit, split_panels = set(), False, False
    for k, m, n, groups, threads in {(c.k, c.m, c.n, c.groups, c.threads) for c in cases}:
        mc, b, s = _work_split(t, k, m, n, groups, threads)
        blocks.add(b)
        resplit |= mc < _row_block(t, k)  # an odd block count re-split for 2 threads
        split_panels |= s > 1  # panels split between the threads
    assert blocks >= {1, 2, 3} and resplit and split_panels, (sorted(blocks), resplit, split_panels)
