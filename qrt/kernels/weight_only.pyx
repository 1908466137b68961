# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CONV_2D and FULLY_CONNECTED in their weight-only form: float32 x, y and bias, int8 or int4
weights per channel or per group, dequantized inside the micro-kernel (qrt/kernels/simd/
weight_only.h has the data path). References: qrt/ops/fully_connected.py and conv_2d.py
reference_weight_only (the rule of qrt/ops/hybrid.py ordered_matmul), bit for bit.

Each op is used in three steps:
  pack_conv_2d / pack_fully_connected(ins, p) -> PackedWeightOnly   once, at load: the
      weights, still quantized, into panels of 16 channels; scales and bias per panel;
  bind_conv_2d / bind_fully_connected(ins, p, out, ...) -> Step   once per thread arena: every
      shape checked, raw pointers kept;
  step.run()   every inference, no Python, no allocation once warm, the GIL released.
conv_2d(ins, p, out) and fully_connected(ins, p, out) do all three, for tests and tools.
"""
import numpy as np

from libc.stdint cimport int64_t, uint8_t

from qrt.kernels.plan cimport Step

from qrt.kernels import Kernel, geometry, isa as _isa
from qrt.ops import hybrid as H
from qrt.ops.base import WEIGHT_ONLY

from qrt.kernels.isa cimport qrt_weight_only_ops_for, qrt_weight_only_run
from qrt.kernels.simd_weight_only cimport QRT_WO_PANEL, qrt_weight_only

PANEL = QRT_WO_PANEL


class PackedWeightOnly:
    """The weights in the kernel's layout (simd/weight_only.h), the same for every path:
    w: uint8, int8 weights [groups][panels][K][16] or int4 nibble pairs [groups][panels]
       [ceil(K/2)][16] (byte = k even in the low nibble, k + 1 in the high one);
    scales: float32 [groups][panels][kgroups][16]; bias: float32 [groups][panels][16].
    Padding channels (and int4's padding k) are zero. No float or unpacked copy is kept."""

    def __init__(self, w, qw, bias, groups):
        c, k = qw.channels, qw.reduction
        cout_g = c // groups
        panels = -(-cout_g // PANEL)
        nch = panels * PANEL
        self.groups, self.cout_g, self.k, self.panels = groups, cout_g, k, panels
        self.channels, self.int4 = c, bool(qw.int4)
        self.group_size = int(qw.group_size)
        self.kgroups = int(qw.scales.shape[1])
        # int8 [C, K]: a view of int8 weights; int4 unpacked here, only while packing
        q = np.zeros((groups, nch, k + (k % 2 if qw.int4 else 0)), np.int8)
        q[:, :cout_g, :k] = H.weight_values(w, qw).reshape(groups, cout_g, k)
        q = q.reshape(groups, panels, PANEL, -1)
        if qw.int4:
            u = q.view(np.uint8) & 0x0F
            q = u[..., 0::2] | (u[..., 1::2] << 4)  # [groups][panels][16][ceil(K/2)]
        self.w = np.ascontiguousarray(q.transpose(0, 1, 3, 2)).view(np.uint8).reshape(-1)
        s = np.zeros((groups, nch, self.kgroups), np.float32)
        s[:, :cout_g] = np.asarray(qw.scales, np.float32).reshape(groups, cout_g, self.kgroups)
        self.scales = np.ascontiguousarray(
            s.reshape(groups, panels, PANEL, self.kgroups).transpose(0, 1, 3, 2)).reshape(-1)
        b = np.zeros((groups, nch), np.float32)
        b[:, :cout_g] = np.asarray(bias, np.float32).reshape(groups, cout_g)
        self.bias = b.reshape(-1)

    @property
    def nbytes(self):
        return self.w.nbytes + self.scales.nbytes + self.bias.nbytes


cdef class WeightOnlyStep(Step):
    cdef qrt_weight_only g
    cdef const float* x
    cdef float* y

    cdef int run(self) noexcept nogil:
        return qrt_weight_only_run(&self.g, self.x, self.y)

    def __call__(self):
        """Run this step alone, the GIL released."""
        cdef int rc
        with nogil:
            rc = self.run()
        if rc == -2:
            raise MemoryError("qrt: out of memory for kernel scratch space")
        if rc != 0:
            raise RuntimeError(f"qrt: kernel failed with code {rc}")

    @property
    def isa(self):
        return _isa.NAMES[self.g.isa]


# ------------------------------------------------------------------------------ checks

cdef _array(a, dtype, name):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype).name} array")
    return a


def _hybrid(p):
    """(HybridParams, QuantizedWeights) of the weight-only form's params: ValueError otherwise."""
    return geometry.hybrid(p, WEIGHT_ONLY)


def _check_constants(ins, qw, shape):
    """Weights int8 of `shape` (int4: ceil(numel / 2) packed bytes), scales float32
    [channels, ceil(K / group_size)], bias float32 [channels]: ValueError otherwise."""
    geometry.check_inputs(ins)
    w, bias = ins[1], ins[2]
    shape = tuple(shape)
    if tuple(qw.shape) != shape:
        raise ValueError(f"weights have shape {shape}; the params describe {tuple(qw.shape)}")
    c, k = qw.channels, qw.reduction
    if not isinstance(w, np.ndarray):
        raise ValueError(f"weights must be a numpy array, not {type(w).__name__}")
    if qw.int4:
        if w.dtype != np.uint8 or w.size != (c * k + 1) // 2:
            raise ValueError(f"int4 weights must be {(c * k + 1) // 2} packed uint8 bytes for shape "
                             f"{shape}, not {w.size} {w.dtype}")
    elif w.dtype != np.int8 or w.size != c * k:
        raise ValueError(f"weights must be an int8 array of shape {shape}, not {w.dtype} {w.shape}")
    if k < 1 or qw.group_size < 1:
        raise ValueError(f"reduction length {k} and group size {qw.group_size} must be >= 1")
    s = qw.scales
    kgroups = -(-k // qw.group_size)
    if not isinstance(s, np.ndarray) or s.dtype != np.float32 or s.shape != (c, kgroups):
        raise ValueError(f"scales must be float32 [{c}, {kgroups}] (channels x groups of "
                         f"{qw.group_size}), not {getattr(s, 'dtype', type(s))} {getattr(s, 'shape', '')}")
    if not isinstance(bias, np.ndarray) or bias.dtype != np.float32 or bias.shape != (c,):
        raise ValueError(f"bias must be a float32 array of shape ({c},), not "
                         f"{getattr(bias, 'dtype', type(bias))} {getattr(bias, 'shape', '')}")


def _check_packed(packed, qw, groups):
    if not isinstance(packed, PackedWeightOnly):
        raise ValueError(f"packed must be a PackedWeightOnly, not {type(packed).__name__}")
    if (packed.channels, packed.k, packed.groups, packed.int4, packed.group_size, packed.kgroups) != (
            qw.channels, qw.reduction, groups, bool(qw.int4), int(qw.group_size), int(qw.scales.shape[1])):
        raise ValueError("the packed weights were made for another op (channels, K, groups, int4 "
                         "or group size differ)")


cdef WeightOnlyStep _bind(x, y, packed, h, geometry_, isa, threads):
    cdef WeightOnlyStep s = WeightOnlyStep.__new__(WeightOnlyStep)
    cdef const uint8_t[::1] wv = packed.w
    cdef const float[::1] sv = packed.scales
    cdef const float[::1] bv = packed.bias
    cdef const float[::1] xv = x.reshape(-1)
    cdef float[::1] yv = y.reshape(-1)
    (s.g.N, s.g.H, s.g.W, s.g.C_in, s.g.OH, s.g.OW, s.g.C_out, s.g.KH, s.g.KW, s.g.sh, s.g.sw,
     s.g.dh, s.g.dw, s.g.top, s.g.left) = geometry_
    s.g.groups, s.g.cin_g, s.g.cout_g = packed.groups, s.g.C_in // packed.groups, packed.cout_g
    s.g.K, s.g.panels = packed.k, packed.panels
    s.g.group_size, s.g.kgroups, s.g.int4 = packed.group_size, packed.kgroups, packed.int4
    s.g.w = &wv[0] if wv.shape[0] else NULL
    s.g.scales = &sv[0] if sv.shape[0] else NULL
    s.g.bias = &bv[0] if bv.shape[0] else NULL
    lo, hi = h.bounds
    s.g.lo, s.g.hi = np.float32(lo), np.float32(hi)
    s.g.isa = _isa.resolve(isa)
    s.g.ops = qrt_weight_only_ops_for(s.g.isa)
    s.g.threads = max(1, int(threads))
    s.x = &xv[0] if xv.shape[0] else NULL
    s.y = &yv[0] if yv.shape[0] else NULL
    s.keep = (x, y, packed)
    return s


# ------------------------------------------------------------------------------ FULLY_CONNECTED

def pack_fully_connected(ins, p, isa=None):
    """ins = [x, w [N_out, K] (int8, or int4 packed bytes), bias [N_out]] -> PackedWeightOnly."""
    h, qw = _hybrid(p)
    if len(qw.shape) != 2:
        raise ValueError(f"weights {tuple(qw.shape)} must be [N_out, K]")
    _check_constants(ins, qw, qw.shape)
    return PackedWeightOnly(ins[1], qw, ins[2], 1)


def bind_fully_connected(ins, p, out, isa=None, threads=1, packed=None):
    """FULLY_CONNECTED as a Step: ins = [x [..., K] float32, w [N_out, K], bias [N_out] float32],
    out [..., N_out] float32; the rows of x are the rows of the product."""
    h, qw = _hybrid(p)
    geometry.check_inputs(ins)
    x = _array(ins[0], np.float32, "x")
    y = _array(out, np.float32, "out")
    if len(qw.shape) != 2:
        raise ValueError(f"weights {tuple(qw.shape)} must be [N_out, K]")
    N_out, K = qw.shape
    if x.ndim < 1 or x.shape[x.ndim - 1] != K:
        raise ValueError(f"x has shape {x.shape}; its last dimension must be K = {K}")
    lead = x.shape[:x.ndim - 1]
    if y.shape != lead + (N_out,):
        raise ValueError(f"output has shape {y.shape}; expected {lead + (N_out,)}")
    if packed is None:
        packed = pack_fully_connected(ins, p, isa)
    else:
        _check_packed(packed, qw, 1)
        if not isinstance(ins[2], np.ndarray) or ins[2].shape != (N_out,):
            raise ValueError(f"bias must be a float32 array of shape ({N_out},)")
    rows = int(np.prod(lead, dtype=np.int64))
    return _bind(x, y, packed, h, (rows, 1, 1, K, 1, 1, N_out, 1, 1, 1, 1, 1, 1, 0, 0), isa, threads)


def fully_connected(ins, p, out, isa=None, threads=1):
    """FULLY_CONNECTED once: bind and run (see bind_fully_connected)."""
    bind_fully_connected(ins, p, out, isa, threads)()


# ------------------------------------------------------------------------------ CONV_2D

def pack_conv_2d(ins, p, isa=None):
    """ins = [x, w [C_out, KH, KW, C_in/groups] (int8, or int4 packed bytes), bias [C_out]]
    -> PackedWeightOnly."""
    h, qw = _hybrid(p)
    win = geometry.hybrid_window(p)
    if len(qw.shape) != 4 or win.groups < 1 or qw.shape[0] % win.groups:
        raise ValueError(f"weights {tuple(qw.shape)} must be [C_out, KH, KW, C_in/groups] with "
                         f"C_out divisible by groups = {win.groups}")
    _check_constants(ins, qw, qw.shape)
    return PackedWeightOnly(ins[1], qw, ins[2], win.groups)


def bind_conv_2d(ins, p, out, isa=None, threads=1, packed=None):
    """CONV_2D as a Step: ins = [x [N,H,W,C_in] float32, w [C_out,KH,KW,C_in/groups],
    bias [C_out] float32], out [N,OH,OW,C_out] float32."""
    h, qw = _hybrid(p)
    win = geometry.hybrid_window(p)
    geometry.check_inputs(ins)
    x = _array(ins[0], np.float32, "x")
    y = _array(out, np.float32, "out")
    if x.ndim != 4 or y.ndim != 4 or len(qw.shape) != 4:
        raise ValueError("x, w and out must be 4-D (NHWC; w is [C_out, KH, KW, C_in/groups])")
    N, H_, W_, C_in = x.shape
    C_out, KH, KW, cin_g = qw.shape
    groups = win.groups
    if groups < 1 or C_out % groups or cin_g * groups != C_in:
        raise ValueError(f"groups = {groups} does not fit input channels {C_in}, output channels "
                         f"{C_out} and weights {tuple(qw.shape)}")
    bias_len = ins[2].shape[0] if isinstance(ins[2], np.ndarray) and ins[2].ndim == 1 else -1
    OH, OW = geometry.conv_output(win, (N, H_, W_), (KH, KW), C_out, bias_len, y.shape)
    if packed is None:
        packed = pack_conv_2d(ins, p, isa)
    else:
        _check_packed(packed, qw, groups)
    sh, sw, dh, dw, top, left, _, _ = geometry.window(win)
    return _bind(x, y, packed, h, (N, H_, W_, C_in, OH, OW, C_out, KH, KW, sh, sw, dh, dw, top, left),
                 isa, threads)


def conv_2d(ins, p, out, isa=None, threads=1):
    """CONV_2D once: bind and run (see bind_conv_2d)."""
    bind_conv_2d(ins, p, out, isa, threads)()


KERNELS = {
    "fully_connected_weight_only": Kernel(fully_connected, bind_fully_connected, pack_fully_connected),
    "conv_2d_weight_only": Kernel(conv_2d, bind_conv_2d, pack_conv_2d),
}
