# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CONV_2D and FULLY_CONNECTED in the dynamic form (float32 x, y and bias; int8 weights per
output channel; each row of x quantized at run time): qrt/kernels/simd/dynamic.h has the data
path, the int8 GEMM of gemm.pyx (simd/gemm.h) in its int32 mode the sums. References:
qrt/ops/fully_connected.py and conv_2d.py reference_dynamic (rule: qrt/ops/hybrid.py), bit for
bit on every path.

Each op is used in three steps, as gemm.pyx's:
  pack_conv_2d_dynamic / pack_fully_connected_dynamic(ins, p) -> PackedDynamic   once, at
      load: the weights in the GEMM's panels (gemm.PackedGemm, bias 0, rows read as x + 128),
      their sums per channel, the channels' scales and the bias as float32;
  bind_conv_2d_dynamic / bind_fully_connected_dynamic(ins, p, out, ...) -> Step   once per
      thread arena: shapes and dtypes checked, the quantized rows' buffers made;
  step.run()   every inference, no Python, no allocation once warm.
conv_2d_dynamic(ins, p, out) and fully_connected_dynamic(ins, p, out) do all three.
"""
import numpy as np

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

from qrt.kernels.plan cimport Step

from qrt.kernels import Kernel, geometry, isa as _isa
from qrt.kernels.gemm import PackedGemm
from qrt.numerics import INT32_MAX, MAX_INPUT_MAGNITUDE
from qrt.ops.base import DYNAMIC

from qrt.kernels.isa cimport qrt_dynamic_ops_for, qrt_dynamic_run, qrt_gemm_ops_for
from qrt.kernels.simd_dynamic cimport qrt_dynamic

CHUNK = 16384  # floats per range chunk: threads share the rows of a large image


def _hybrid(p):
    """(HybridParams, QuantizedWeights) of the dynamic form's params: ValueError otherwise."""
    return geometry.hybrid(p, DYNAMIC)


def _array(a, dtype, name):
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype).name} array, not {type(a).__name__}")
    if a.dtype != dtype or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype).name} array, not "
                         f"{'a non-contiguous ' if not a.flags.c_contiguous else ''}{a.dtype}")
    return a


class PackedDynamic:
    """The weights in the int8 GEMM's layout for its int32 mode (gemm.PackedGemm with bias 0 and
    input zero point -128: the sums come out as sum_k (q + 128) w), their per-channel sums
    wsum [C_out] (int32), the scales s_w [C_out] and the bias [C_out] as float32. Only int8
    weights with one scale per channel (or per tensor) have this form: qw.scales [C_out, 1]."""

    def __init__(self, w, bias, qw, groups, isa):
        _check_constants(w, bias, qw)
        c_out = w.shape[0]
        k = int(np.prod(w.shape[1:]))
        if k < 1:
            raise ValueError(f"weights {tuple(w.shape)} have an empty reduction")
        if groups < 1 or c_out % groups:
            raise ValueError(f"output channels {c_out} must be divisible by groups = {groups}")
        wmax = int(np.abs(w.astype(np.int16)).max()) if w.size else 0
        if k * MAX_INPUT_MAGNITUDE * wmax > INT32_MAX:
            raise ValueError(f"reduction length {k} with weights up to {wmax} can overflow the int32 "
                             f"accumulator ({k} x {MAX_INPUT_MAGNITUDE} x {wmax} > 2^31 - 1)")
        self.gemm = PackedGemm(w, np.zeros(c_out, np.int32), -128, None, groups, isa)
        cout_g = c_out // groups
        self.wsum = np.ascontiguousarray(self.gemm.sums[:, :cout_g].reshape(-1), np.int32)
        self.s_w = np.ascontiguousarray(qw.scales[:, 0], np.float32)
        self.bias = np.array(bias, np.float32)  # a copy: the constants' pages may be released
        self.isa = isa
        self.groups, self.channels, self.k = groups, c_out, k


def _check_packed(packed, w, groups, isa):
    """packed was made by PackedDynamic for weights of w's shape, `groups` and path isa (the
    kernel reads its panels, sums, scales and bias by the op's sizes): ValueError otherwise."""
    if not isinstance(packed, PackedDynamic):
        raise ValueError(f"packed must be a PackedDynamic, not {type(packed).__name__}")
    if packed.isa != isa:
        raise ValueError(f"weights were packed for the {_isa.NAMES[packed.isa]} path, not {_isa.NAMES[isa]}")
    c_out, k = w.shape[0], int(np.prod(w.shape[1:]))
    g = packed.gemm
    made = (packed.channels, packed.k, packed.groups, g.groups, g.groups * g.cout_g, g.k, g.isa,
            packed.wsum.size, packed.s_w.size, packed.bias.size, bool(g.int16))
    if made != (c_out, k, groups, groups, c_out, k, isa, c_out, c_out, c_out, False):
        raise ValueError(f"the packed weights were made for another op (C_out {packed.channels}, "
                         f"K {packed.k}, groups {packed.groups}), not C_out {c_out}, K {k}, "
                         f"groups {groups}")


cdef class DynamicStep(Step):
    cdef qrt_dynamic d
    cdef const float* x
    cdef float* y

    cdef int run(self) noexcept nogil:
        return qrt_dynamic_run(&self.d, self.x, self.y)

    @property
    def isa(self):
        return _isa.NAMES[self.d.isa]


cdef void* _ptr(a):
    """The data of a C-contiguous array, NULL when empty."""
    cdef size_t address = a.ctypes.data
    return NULL if a.size == 0 else <void*>address


cdef DynamicStep _bind(x, y, packed, p, geometry_, rows, row_len, out_rows, isa, threads):
    cdef DynamicStep s = DynamicStep.__new__(DynamicStep)
    g = packed.gemm
    h, _ = _hybrid(p)
    (s.d.g.N, s.d.g.H, s.d.g.W, s.d.g.C_in, s.d.g.OH, s.d.g.OW, s.d.g.C_out, s.d.g.KH, s.d.g.KW,
     s.d.g.sh, s.d.g.sw, s.d.g.dh, s.d.g.dw, s.d.g.top, s.d.g.left) = geometry_
    s.d.g.groups, s.d.g.cin_g, s.d.g.cout_g = g.groups, s.d.g.C_in // g.groups, g.cout_g
    s.d.g.K4, s.d.g.panels, s.d.g.pad_u8 = g.k4, g.panels, g.pad_u8
    s.d.g.pad_n, s.d.g.y32 = NULL, NULL  # set per run (qrt_dynamic_run)
    s.d.g.w = <const int8_t*>_ptr(g.w)
    s.d.g.rq.bias = <const int32_t*>_ptr(g.bias)
    s.d.g.rq.mult = <const int32_t*>_ptr(g.mult)
    s.d.g.rq.shift = <const int32_t*>_ptr(g.shift)
    s.d.g.rq.round32 = <const int32_t*>_ptr(g.round32)
    s.d.g.rq.shift32 = <const int32_t*>_ptr(g.shift32)
    s.d.g.rq.n33, s.d.g.rq.zp_y, s.d.g.rq.lo, s.d.g.rq.hi = 0, 0, -128, 127
    s.d.isa = s.d.g.isa = isa  # resolved, and the packed weights checked for it (_check_packed)
    s.d.g.ops = qrt_gemm_ops_for(s.d.isa)
    s.d.ops = qrt_dynamic_ops_for(s.d.isa)
    s.d.threads = s.d.g.threads = max(1, int(threads))
    chunks = max(1, -(-row_len // CHUNK))
    q = np.empty(rows * row_len, np.int8)
    scales = np.empty(rows, np.float32)
    zps = np.empty(rows, np.int32)
    pads = np.empty(rows, np.uint8)
    ranges = np.empty(rows * chunks * 2, np.float32)
    s.d.rows, s.d.row_len, s.d.out_rows, s.d.C_out = rows, row_len, out_rows, s.d.g.C_out
    s.d.chunk, s.d.chunks = CHUNK, chunks
    s.d.wsum = <const int32_t*>_ptr(packed.wsum)
    s.d.s_w = <const float*>_ptr(packed.s_w)
    s.d.bias = <const float*>_ptr(packed.bias)
    lo, hi = h.bounds
    s.d.lo, s.d.hi = np.float32(lo), np.float32(hi)
    s.d.q = <int8_t*>_ptr(q)
    s.d.s = <float*>_ptr(scales)
    s.d.zp = <int32_t*>_ptr(zps)
    s.d.pads = <uint8_t*>_ptr(pads)
    s.d.range = <float*>_ptr(ranges)
    s.x = <const float*>_ptr(x)
    s.y = <float*>_ptr(y)
    s.keep = (x, y, packed, q, scales, zps, pads, ranges)
    return s


def _check_constants(w, bias, qw):
    """Weights int8 of the shape the params' QuantizedWeights qw describe, with one scale per
    channel (or per tensor: qw.scales float32 [C_out, 1]; per-group weights are the weight-only
    form's), bias float32 [C_out]: ValueError otherwise."""
    if not isinstance(w, np.ndarray) or w.dtype != np.int8:
        raise ValueError(f"weights must be an int8 array, not {getattr(w, 'dtype', type(w))}")
    if tuple(qw.shape) != w.shape or qw.int4:
        raise ValueError(f"the params' weights ({tuple(qw.shape)}, {'int4' if qw.int4 else 'int8'}) "
                         f"do not describe int8 weights of shape {tuple(w.shape)}")
    c_out = w.shape[0]
    s = qw.scales
    if not isinstance(s, np.ndarray) or s.dtype != np.float32 or s.shape != (c_out, 1):
        raise ValueError(f"the dynamic form takes per-tensor or per-channel weights: scales must be "
                         f"float32 [{c_out}, 1], not {getattr(s, 'dtype', type(s))} "
                         f"{getattr(s, 'shape', '')}")
    if not isinstance(bias, np.ndarray) or bias.dtype != np.float32 or bias.shape != (c_out,):
        raise ValueError(f"bias must be a float32 array of shape ({c_out},), not "
                         f"{getattr(bias, 'dtype', type(bias))} {getattr(bias, 'shape', '')}")


def _check_weights(ins, p):
    """(w, QuantizedWeights) of ins and the dynamic form's params p, checked (_check_constants)."""
    geometry.check_inputs(ins)
    h, qw = _hybrid(p)
    _check_constants(ins[1], ins[2], qw)
    return ins[1], qw


# ------------------------------------------------------------------------------ CONV_2D

def pack_conv_2d_dynamic(ins, p, isa=None):
    """ins = [x, w [C_out, KH, KW, C_in/groups] int8, bias [C_out] float32] -> PackedDynamic."""
    w, qw = _check_weights(ins, p)
    groups = geometry.hybrid_window(p).groups
    if w.ndim != 4 or groups < 1 or w.shape[0] % groups:
        raise ValueError(f"weights {tuple(w.shape)} must be [C_out, KH, KW, C_in/groups] with "
                         f"C_out divisible by groups = {groups}")
    return PackedDynamic(w, ins[2], qw, groups, _isa.resolve(isa))


def bind_conv_2d_dynamic(ins, p, out, isa=None, threads=1, packed=None):
    """CONV_2D (dynamic) as a Step: ins = [x [N,H,W,C_in] float32, w [C_out,KH,KW,C_in/groups]
    int8, bias [C_out] float32], out [N,OH,OW,C_out] float32; p: HybridConvParams."""
    w, _ = _check_weights(ins, p)
    win = geometry.hybrid_window(p)
    x = _array(ins[0], np.float32, "x")
    y = _array(out, np.float32, "out")
    if x.ndim != 4 or w.ndim != 4 or y.ndim != 4:
        raise ValueError("x, w and out must be 4-D (NHWC; w is [C_out, KH, KW, C_in/groups])")
    N, H, W, C_in = x.shape
    C_out, KH, KW, cin_g = w.shape
    groups = win.groups
    if groups < 1 or C_out % groups or cin_g * groups != C_in:
        raise ValueError(f"groups = {groups} does not fit input channels {C_in}, output channels "
                         f"{C_out} and weights {tuple(w.shape)}")
    if H * W * C_in == 0:
        raise ValueError(f"x {tuple(x.shape)} has empty images: nothing to quantize them from")
    OH, OW = geometry.conv_output(win, (N, H, W), (KH, KW), C_out, ins[2].shape[0], y.shape)
    path = _isa.resolve(isa)
    if packed is None:
        packed = pack_conv_2d_dynamic(ins, p, isa)
    _check_packed(packed, w, groups, path)
    sh, sw, dh, dw, top, left, _, _ = geometry.window(win)
    return _bind(x, y, packed, p, (N, H, W, C_in, OH, OW, C_out, KH, KW, sh, sw, dh, dw, top, left),
                 N, H * W * C_in, OH * OW, path, threads)


def conv_2d_dynamic(ins, p, out, isa=None, threads=1):
    """CONV_2D (dynamic) once: bind and run (see bind_conv_2d_dynamic)."""
    bind_conv_2d_dynamic(ins, p, out, isa, threads)()


# ------------------------------------------------------------------------------ FULLY_CONNECTED

def pack_fully_connected_dynamic(ins, p, isa=None):
    """ins = [x, w [N_out, K] int8, bias [N_out] float32] -> PackedDynamic."""
    w, qw = _check_weights(ins, p)
    if w.ndim != 2:
        raise ValueError(f"weights {tuple(w.shape)} must be [N_out, K]")
    return PackedDynamic(w, ins[2], qw, 1, _isa.resolve(isa))


def bind_fully_connected_dynamic(ins, p, out, isa=None, threads=1, packed=None):
    """FULLY_CONNECTED (dynamic) as a Step: ins = [x [..., K] float32, w [N_out, K] int8,
    bias [N_out] float32], out [..., N_out] float32; p: HybridParams. Each vector along K is a
    row, quantized on its own, and a row of the GEMM."""
    w, _ = _check_weights(ins, p)
    x = _array(ins[0], np.float32, "x")
    y = _array(out, np.float32, "out")
    if x.ndim < 1:
        raise ValueError("x must have rank >= 1 (its last dimension is reduced)")
    if w.ndim != 2:
        raise ValueError(f"weights {tuple(w.shape)} must be [N_out, K]")
    N_out, K = w.shape
    if x.shape[x.ndim - 1] != K:
        raise ValueError(f"x has shape {x.shape}; its last dimension must be K = {K}")
    lead = x.shape[:x.ndim - 1]
    if y.shape != lead + (N_out,):
        raise ValueError(f"output has shape {y.shape}; expected {lead + (N_out,)}")
    rows = int(np.prod(lead, dtype=np.int64))
    path = _isa.resolve(isa)
    if packed is None:
        packed = pack_fully_connected_dynamic(ins, p, isa)
    _check_packed(packed, w, 1, path)
    return _bind(x, y, packed, p, (rows, 1, 1, K, 1, 1, N_out, 1, 1, 1, 1, 1, 1, 0, 0),
                 rows, K, 1, path, threads)


def fully_connected_dynamic(ins, p, out, isa=None, threads=1):
    """FULLY_CONNECTED (dynamic) once: bind and run (see bind_fully_connected_dynamic)."""
    bind_fully_connected_dynamic(ins, p, out, isa, threads)()


KERNELS = {
    "conv_2d_dynamic": Kernel(conv_2d_dynamic, bind_conv_2d_dynamic, pack_conv_2d_dynamic),
    "fully_connected_dynamic": Kernel(fully_connected_dynamic, bind_fully_connected_dynamic,
                                      pack_fully_connected_dynamic),
}
