"""LSTM and GRU kernels (references qrt/ops/lstm.py, gru.py): operands checked here, the step in
qrt/kernels/gemm.pyx RecurrentStep."""
from __future__ import annotations

import numpy as np

from qrt.kernels import Kernel, gemm
from qrt.kernels import isa as _isa
from qrt.kernels.gemm import PackedGemm
from qrt.ops.recurrent import TABLE_SIZE


def _array(a, dtype, name):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype).name} array")
    return a


def _recurrent_arrays(ins, out, lstm, wide):
    """The operands, checked: ValueError naming the first that does not fit."""
    dtype = np.int16 if wide else np.int8
    count = 10 if lstm else 8
    if len(ins) != count or len(out) != (3 if lstm else 2):
        raise ValueError(f"expected {count} inputs and {3 if lstm else 2} outputs")
    x = _array(ins[0], dtype, "x")
    w, r = _array(ins[1], np.int8, "weights"), _array(ins[2], np.int8, "recurrent weights")
    b, rb = _array(ins[3], np.int32, "bias"), _array(ins[4], np.int32, "recurrent bias")
    h0 = _array(ins[5], dtype, "initial state")
    tables = [_array(t, np.int16, "table") for t in ins[(7 if lstm else 6):]]
    if x.ndim != 3 or w.ndim != 2 or r.ndim != 2:
        raise ValueError("x must be [T, B, I], the weights [G H, I] and [G H, H]")
    T, B, I = x.shape
    G, H = (4 if lstm else 3), r.shape[1]
    if r.shape[0] != G * H or w.shape != (G * H, I) or b.shape != (G * H,) or rb.shape != (G * H,):
        raise ValueError(f"weights {w.shape}, {r.shape} and biases {b.shape}, {rb.shape} do not fit "
                         f"x {x.shape} with {G} gates")
    y, h_t = _array(out[0], dtype, "y"), _array(out[1], dtype, "final state")
    if h0.shape != (B, H) or h_t.shape != (B, H) or y.shape != (T, B, H):
        raise ValueError(f"states must be {(B, H)} and y {(T, B, H)}")
    if any(t.shape != (TABLE_SIZE,) for t in tables):
        raise ValueError(f"tables must have {TABLE_SIZE} entries")
    cells = ()
    if lstm:
        cells = (_array(ins[6], np.int16, "initial cell state"), _array(out[2], np.int16, "final cell state"))
        if cells[0].shape != (B, H) or cells[1].shape != (B, H):
            raise ValueError(f"cell states must be {(B, H)}")
    return x, w, r, b, rb, h0, tables, y, h_t, cells, (T, B, I, G, H)


def _pack_recurrent(ins, p, isa, lstm, wide):
    """The int8 form's weights in the GEMM's layout for its int32 mode: (input, recurrent
    (GRU without lbr: its z and r rows), GRU's n rows or None); None for the int16 form."""
    if wide:
        return None
    w, r, b, rb = ins[1], ins[2], ins[3], ins[4]
    path = _isa.resolve(isa)
    h = r.shape[1]
    split = not lstm and not p.linear_before_reset
    rows = 2 * h if split else r.shape[0]
    return (PackedGemm(w, b, p.zp_x, None, 1, path),
            PackedGemm(r[:rows], rb[:rows], p.zp_h, None, 1, path),
            PackedGemm(r[rows:], rb[rows:], p.zp_h, None, 1, path) if split else None)


def _bind_recurrent(ins, p, out, isa, threads, packed, lstm, wide):
    x, w, r, b, rb, h0, tables, y, h_t, cells, dims = _recurrent_arrays(ins, out, lstm, wide)
    T, B, I, G, H = dims
    _isa.resolve(isa)  # an unknown path name: ValueError
    if wide and (p.zp_x or p.zp_h):
        raise ValueError("int16 activations are symmetric (zero points 0)")
    if not wide and not (-128 <= p.zp_x <= 127 and -128 <= p.zp_h <= 127):
        raise ValueError("zero points must lie in [-128, 127]")
    if not (-32768 <= p.lo <= p.hi <= 32767) or not (-32768 <= p.lo_h <= p.hi_h <= 32767):
        raise ValueError("the clamp ranges must lie inside int16")
    m = np.stack([np.broadcast_to(np.asarray(a, np.int64), (G * H,)) for a in (p.mx, p.nx, p.mh, p.nh)])
    pairs = [(m[0], m[1]), (m[2], m[3]), (np.int64(p.mo), np.int64(p.no)), (np.int64(p.mc), np.int64(p.nc))]
    if any(((mm < 0) | (mm >= 2**31) | (nn < 1) | (nn > 62)).any() for mm, nn in pairs):
        raise ValueError("multipliers must lie in [0, 2^31) and shifts in [1, 62]")
    scratch = (np.empty(max(T * B * G * H, 1), np.int32), np.empty(max(B * G * H, 1), np.int32),
               np.empty(max(B * H, 1), np.int32), np.empty(max(B * 2 * H, 1), np.int32),
               np.empty(max(B * H, 1), y.dtype))
    if not wide and packed is None:
        packed = _pack_recurrent(ins, p, isa, lstm, wide)
    w = w if w.size else np.zeros(1, np.int8)
    m32 = np.ascontiguousarray(m, np.int32)
    ints = np.array([T, B, I, G, H, p.zp_x, p.zp_h, p.lo, p.hi, p.lo_h, p.hi_h, p.mo, p.no, p.mc, p.nc,
                     bool(p.reverse), bool(p.linear_before_reset), lstm, wide], np.int64)
    c0, c_t = cells if lstm else (None, None)
    arrays = (x, w, r, b, rb, h0, y, h_t, c0, c_t, *scratch, m32, tables[0], tables[1], tables[-1])
    ptrs = np.array([0 if a is None or a.size == 0 else a.ctypes.data for a in arrays], np.uint64)
    return gemm.bind_recurrent(ints, ptrs, packed, isa, threads, arrays)


def _kernel(lstm: bool, wide: bool):
    """The Kernel of LSTM (ins = [x [T,B,I], w [4H,I], r [4H,H], bias, rbias [4H], h0 [B,H],
    c0 [B,H] int16, the gate, candidate and output tables], out = [y [T,B,H], h_T, c_T]) or GRU
    (w [3H,I], r [3H,H], no c0, two tables; out = [y, h_T]); int8 x and h, or int16 (`wide`:
    zero points 0, sums in loops, nothing to pack)."""
    def bind(ins, p, out, isa=None, threads=1, packed=None):
        return _bind_recurrent(ins, p, out, isa, threads, None if wide else packed, lstm, wide)

    def run(ins, p, out, isa=None, threads=1):
        bind(ins, p, out, isa, threads)()

    def pack(ins, p, isa=None):
        return _pack_recurrent(ins, p, isa, lstm, False)
    return Kernel(run, bind, None if wide else pack)


KERNELS = {"lstm": _kernel(True, False), "lstm_int16": _kernel(True, True), "gru": _kernel(False, False),
           "gru_int16": _kernel(False, True)}
