# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CONV_2D and FULLY_CONNECTED: one int8 GEMM with packed weights (qrt/kernels/simd/gemm.h has
the data path); and BATCH_MATMUL, the product of two activations (at the end). References: qrt/ops/conv_2d.py and fully_connected.py, bit for bit.

Each op is used in three steps:
  pack_conv_2d / pack_fully_connected(ins, p) -> PackedGemm   once, at load: weights into
      the path's panels, the flip and zero-point compensation folded into the bias, per-channel
      requantization tables;
  bind_conv_2d / bind_fully_connected(ins, p, out, ...) -> Step   once per thread arena: every
      shape checked, raw pointers kept;
  step.run()   every inference, no Python, no allocation once warm.
conv_2d(ins, p, out) and fully_connected(ins, p, out) do all three, for tests and tools.

The int16 form (SPEC.md 4.6: int16 x and y with zero point 0, int8 weights) is the same GEMM in
its int16 mode (simd/gemm.h qrt_gemm_int16_ops_for): conv_2d_int16, fully_connected_int16 and
their pack_ and bind_ functions, with the int8 form's parameters (the Requant's dtype int16).

int4 weights (p.w4, their shape: ins[1] holds the file's nibble pairs) are unpacked only while
packing, then kept as int4 panels (simd/layout.h qrt_gemm_pack_int4) that the GEMM expands a
few panels at a time: half the resident bytes, no int8 copy.
"""
import numpy as np

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, intptr_t, uint8_t, uint64_t
from libc.string cimport memcpy

from qrt.kernels.common cimport _check_isa, _in_bytes, _out_bytes
from qrt.kernels.numerics cimport check_requant, requantize_one, rounding_shift
from qrt.kernels.plan cimport Step

from qrt.kernels import Kernel, geometry, isa as _isa
from qrt.kernels.requantize import tables32
from qrt.ops.batch_matmul import output_shape, pre_shift


from qrt.kernels.isa cimport qrt_gemm_int16_ops_for, qrt_gemm_ops_for, qrt_gemm_run
from qrt.kernels.simd_gemm cimport QRT_PANEL, qrt_gemm, qrt_gemm_ops, qrt_gemm_pack_int4, qrt_gemm_pack_weights
from qrt.ops.base import weight_ints



class PackedGemm:
    """Weights and per-channel tables in the kernel's layout (simd/layout.h, for the path's
    qrt_gemm_ops: k per channel group and K's alignment). requant None: for the int32 mode
    (qrt_gemm.y32, dynamic.pyx), the requantization tables zero; `sums` keeps the weight sums
    [groups, panels * 16]. int16: for the int16 mode (zp_x 0; the bias is just the bias).
    int4: w's values lie in [-8, 7] and the panels are kept as int4 (w4)."""

    def __init__(self, w, bias, zp_x, requant, groups, isa, int16=False, int4=False):
        w = np.asarray(w, np.int8)
        c_out, k = w.shape[0], int(np.prod(w.shape[1:]))
        cout_g = c_out // groups
        self.groups, self.cout_g, self.k = groups, cout_g, k
        self.isa = isa
        self.int16 = bool(int16)
        cdef const qrt_gemm_ops* ops = qrt_gemm_int16_ops_for(isa) if int16 else qrt_gemm_ops_for(isa)
        # AMX tiles hold 64 k per row; int4 panels are packed 64 bytes at a time (16 x 4 k)
        align = max(ops.k_align, 4) if int4 else ops.k_align
        self.k4 = max(-(-k // align) * align, align)
        self.panels = -(-cout_g // QRT_PANEL)
        nch = self.panels * QRT_PANEL
        self.w = np.zeros(groups * self.panels * self.k4 * QRT_PANEL, np.int8)
        sums = np.zeros((groups, nch), np.int64)
        _pack(np.ascontiguousarray(w).reshape(groups * cout_g, k), cout_g, self.k4, self.panels,
              ops.kg, self.w, sums.reshape(-1))
        self.int4 = bool(int4)
        if self.int4:
            if w.size and (int(w.min()) < -8 or int(w.max()) > 7):
                raise ValueError(f"int4 weights must lie in [-8, 7], not [{int(w.min())}, {int(w.max())}]")
            self.w = _pack_int4(self.w)
        b = np.zeros((groups, nch), np.int64)
        b[:, :cout_g] = np.asarray(bias, np.int64).reshape(groups, cout_g)
        # Activations are read as x + 128 and the padding as zp_x + 128: subtract both from
        # the bias once. int32 wraps like the reference's accumulator (see simd/gemm.h).
        # The int16 mode reads x as it is (zp_x = 0) and pads with 0: the bias as it is.
        if not self.int16:
            b -= (int(zp_x) + 128) * sums
        self.bias = ((b + 2**31) % 2**32 - 2**31).astype(np.int32)
        self.sums = sums
        self.pad_u8 = 0 if self.int16 else (int(zp_x) + 128) & 0xFF
        if requant is None:
            self.mult = self.shift = self.round32 = self.shift32 = np.zeros((groups, nch), np.int32)
            self.n33 = False
            return
        self.mult = self._per_channel(requant.multiplier, groups, cout_g, nch, 0)
        self.shift = self._per_channel(requant.shift, groups, cout_g, nch, 1)
        # Shifts >= 33 everywhere: the 32-bit requantization of simd/requant.h applies.
        self.n33, self.round32, self.shift32 = tables32(
            self.shift, np.arange(nch)[None, :] < cout_g, requant.zero_point)

    @staticmethod
    def _per_channel(values, groups, cout_g, nch, fill):
        v = np.broadcast_to(np.asarray(values, np.int32), (groups * cout_g,))
        out = np.full((groups, nch), fill, np.int32)
        out[:, :cout_g] = v.reshape(groups, cout_g)
        return out


cdef void _pack(const int8_t[:, ::1] w, Py_ssize_t cout_g, Py_ssize_t k4, Py_ssize_t panels,
                int kg, int8_t[::1] out, int64_t[::1] sums) noexcept nogil:
    """simd/layout.h qrt_gemm_pack_weights: w [groups*cout_g, K] -> out, the weight sums."""
    if w.shape[0] == 0 or w.shape[1] == 0:
        return
    qrt_gemm_pack_weights(&w[0, 0], w.shape[0], w.shape[1], cout_g, k4, panels, kg, &out[0], &sums[0])


def _pack_int4(const int8_t[::1] panels):
    """simd/layout.h qrt_gemm_pack_int4: the panels (a multiple of 64 bytes) at half the size."""
    out = np.empty(panels.shape[0] // 2, np.uint8)
    cdef uint8_t[::1] o = out
    if panels.shape[0]:
        qrt_gemm_pack_int4(&panels[0], panels.shape[0], &o[0])
    return out.view(np.int8)


cdef class GemmStep(Step):
    cdef qrt_gemm g
    cdef const int8_t* x
    cdef int8_t* y

    cdef int run(self) noexcept nogil:
        return qrt_gemm_run(&self.g, self.x, self.y)

    @property
    def isa(self):
        return _isa.NAMES[self.g.isa]


def _weight_shape(ins, p):
    """The weights' shape: int8 weights' own, or p.w4 for int4 ones, whose data (nibble pairs,
    format.model pack_int4) must then be uint8 of ceil(numel / 2) bytes: ValueError otherwise."""
    w, shape = ins[1], p.w4
    if shape is None:
        if not isinstance(w, np.ndarray) or w.dtype != np.int8:
            raise ValueError(f"weights must be an int8 array, not {getattr(w, 'dtype', type(w))}")
        return w.shape
    shape = tuple(int(d) for d in shape)
    need = (int(np.prod(shape, dtype=np.int64)) + 1) // 2
    if not isinstance(w, np.ndarray) or w.dtype != np.uint8 or w.size != need:
        raise ValueError(f"int4 weights of shape {shape} must be {need} uint8 bytes of nibble pairs, not "
                         f"{getattr(w, 'dtype', type(w))} {getattr(w, 'shape', '')}")
    return shape


cdef _check_constants(ins, p, Py_ssize_t channels, bint int16=False):
    """Weights int8 (or int4: _weight_shape), bias int32 [channels], requantization int32 and
    in range: ValueError (numpy buffer mismatches included) otherwise. int16: the int16 form's,
    whose input and output zero points are 0 and whose clamp range lies inside int16."""
    _weight_shape(ins, p)
    cdef const int32_t[::1] bias = ins[2]
    if bias.shape[0] != channels:
        raise ValueError(f"bias has {bias.shape[0]} entries; expected {channels}")
    r = p.out
    cdef const int32_t[::1] mult = r.multiplier
    cdef const int32_t[::1] shift = r.shift
    if not int16:
        check_requant(mult, shift, channels, r.zero_point, r.lo, r.hi)
        return
    # the same checks with int16's clamp range (check_requant's is int8's): its multipliers and
    # shifts with an int8-range stand-in, then the bounds
    check_requant(mult, shift, channels, 0, -128, 127)
    if not (-32768 <= r.lo <= r.hi <= 32767):
        raise ValueError(f"clamp range [{r.lo}, {r.hi}] must lie inside [-32768, 32767]")
    if r.zero_point != 0 or p.input_zero_point != 0:
        raise ValueError(f"int16 activations are symmetric: zero points must be 0 (input "
                         f"{p.input_zero_point}, output {r.zero_point})")


cdef _check_packed(packed, p, bint int16):
    if packed.int16 != bool(int16):
        raise ValueError("weights were packed for the other form (int8 / int16)")
    if packed.int4 != (p.w4 is not None):
        raise ValueError(f"weights were packed as {'int4' if packed.int4 else 'int8'}; the params say "
                         f"{'int4' if p.w4 is not None else 'int8'}")


cdef _array(a, dtype, name):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype).name} array")
    return a


cdef int _bind_gemm(qrt_gemm* g, packed, geometry_, isa, threads) except -1:
    """g for packed weights over one geometry (N, H, W, C_in, OH, OW, C_out, KH, KW, sh, sw,
    dh, dw, top, left); its clamp (rq.zp_y, lo, hi) and y32 are the caller's. ValueError if the
    weights were packed for another path."""
    cdef const int8_t[::1] wv = packed.w.reshape(-1)
    cdef const int32_t[::1] bv = packed.bias.reshape(-1)
    cdef const int32_t[::1] mv = packed.mult.reshape(-1)
    cdef const int32_t[::1] nv = packed.shift.reshape(-1)
    cdef const int32_t[::1] rv = packed.round32.reshape(-1)
    cdef const int32_t[::1] sv = packed.shift32.reshape(-1)
    cdef int path = _isa.resolve(isa)
    if path != packed.isa:
        raise ValueError(f"weights were packed for the {_isa.NAMES[packed.isa]} path, not {_isa.NAMES[path]}")
    (g.N, g.H, g.W, g.C_in, g.OH, g.OW, g.C_out, g.KH, g.KW, g.sh, g.sw,
     g.dh, g.dw, g.top, g.left) = geometry_
    g.groups, g.cin_g, g.cout_g = packed.groups, g.C_in // packed.groups, packed.cout_g
    g.K4, g.panels, g.pad_u8 = packed.k4, packed.panels, packed.pad_u8
    g.pad_n, g.y32 = NULL, NULL  # one zero point, int8 output
    g.w, g.rq.bias, g.rq.mult, g.rq.shift = &wv[0], &bv[0], &mv[0], &nv[0]
    g.w4 = packed.int4
    g.rq.round32, g.rq.shift32, g.rq.n33 = &rv[0], &sv[0], packed.n33
    g.isa = path
    g.ops = qrt_gemm_int16_ops_for(path) if packed.int16 else qrt_gemm_ops_for(path)
    g.threads = max(1, int(threads))
    return 0


cdef GemmStep _bind(x, y, packed, p, geometry_, isa, threads):
    """x and y int8, or int16 for weights packed for the int16 mode (seen as their bytes)."""
    cdef GemmStep s = GemmStep.__new__(GemmStep)
    dtype = np.int16 if packed.int16 else np.int8
    if x.dtype != dtype or y.dtype != dtype:
        raise ValueError(f"weights were packed for {np.dtype(dtype).name} activations; x is "
                         f"{x.dtype}, out {y.dtype}")
    cdef const int8_t[::1] xv = x.reshape(-1).view(np.int8)
    cdef int8_t[::1] yv = y.reshape(-1).view(np.int8)
    _bind_gemm(&s.g, packed, geometry_, isa, threads)
    r = p.out
    s.g.rq.zp_y, s.g.rq.lo, s.g.rq.hi = r.zero_point, r.lo, r.hi
    s.x = &xv[0] if xv.shape[0] else NULL
    s.y = &yv[0] if yv.shape[0] else NULL
    s.keep = (x, y, packed)
    return s


# ------------------------------------------------------------------------------ CONV_2D

def pack_conv_2d(ins, p, isa=None, int16=False):
    """ins = [x, w [C_out, KH, KW, C_in/groups], bias [C_out]] -> PackedGemm."""
    geometry.check_inputs(ins)
    shape, bias = _weight_shape(ins, p), ins[2]
    if len(shape) != 4 or p.groups < 1 or shape[0] % p.groups:
        raise ValueError(f"weights {tuple(shape)} must be [C_out, KH, KW, C_in/groups] with "
                         f"C_out divisible by groups = {p.groups}")
    _check_constants(ins, p, shape[0], int16)
    return PackedGemm(weight_ints(ins[1], p.w4), bias, p.input_zero_point, p.out, p.groups,
                      _isa.resolve(isa), int16, p.w4 is not None)


def bind_conv_2d(ins, p, out, isa=None, threads=1, packed=None, int16=False):
    """CONV_2D as a Step: ins = [x [N,H,W,C_in], w [C_out,KH,KW,C_in/groups], bias [C_out]].
    int16: the int16 form (x and out int16)."""
    geometry.check_inputs(ins)
    dtype = np.int16 if int16 else np.int8
    x = _array(ins[0], dtype, "x")
    y = _array(out, dtype, "out")
    shape = _weight_shape(ins, p)
    if x.ndim != 4 or len(shape) != 4 or y.ndim != 4:
        raise ValueError("x, w and out must be 4-D (NHWC; w is [C_out, KH, KW, C_in/groups])")
    N, H, W, C_in = x.shape
    C_out, KH, KW, cin_g = shape
    groups = p.groups
    if groups < 1 or C_out % groups or cin_g * groups != C_in:
        raise ValueError(f"groups = {groups} does not fit input channels {C_in}, output channels "
                         f"{C_out} and weights {tuple(shape)}")
    OH, OW = geometry.conv_output(p, (N, H, W), (KH, KW), C_out, ins[2].shape[0], y.shape)
    _check_constants(ins, p, C_out, int16)
    if packed is None:
        packed = pack_conv_2d(ins, p, isa, int16)
    _check_packed(packed, p, int16)
    sh, sw, dh, dw, top, left, _, _ = geometry.window(p)
    return _bind(x, y, packed, p, (N, H, W, C_in, OH, OW, C_out, KH, KW, sh, sw, dh, dw, top, left),
                 isa, threads)


def conv_2d(ins, p, out, isa=None, threads=1):
    """CONV_2D once: bind and run (see bind_conv_2d)."""
    bind_conv_2d(ins, p, out, isa, threads)()


def pack_conv_2d_int16(ins, p, isa=None):
    """The int16 form's pack_conv_2d."""
    return pack_conv_2d(ins, p, isa, int16=True)


def bind_conv_2d_int16(ins, p, out, isa=None, threads=1, packed=None):
    """The int16 form's bind_conv_2d: x [N,H,W,C_in] and out int16, zero points 0."""
    return bind_conv_2d(ins, p, out, isa, threads, packed, int16=True)


def conv_2d_int16(ins, p, out, isa=None, threads=1):
    """The int16 form's CONV_2D once: bind and run."""
    bind_conv_2d_int16(ins, p, out, isa, threads)()


# ------------------------------------------------------------------------------ FULLY_CONNECTED

def pack_fully_connected(ins, p, isa=None, int16=False):
    """ins = [x, w [N_out, K], bias [N_out]] -> PackedGemm."""
    geometry.check_inputs(ins)
    shape, bias = _weight_shape(ins, p), ins[2]
    if len(shape) != 2:
        raise ValueError(f"weights {tuple(shape)} must be [N_out, K]")
    _check_constants(ins, p, shape[0], int16)
    if not (-128 <= p.input_zero_point <= 127):
        raise ValueError(f"input zero point {p.input_zero_point} must lie in [-128, 127]")
    return PackedGemm(weight_ints(ins[1], p.w4), bias, p.input_zero_point, p.out, 1, _isa.resolve(isa),
                      int16, p.w4 is not None)


def bind_fully_connected(ins, p, out, isa=None, threads=1, packed=None, int16=False):
    """FULLY_CONNECTED as a Step: ins = [x [..., K], w [N_out, K], bias [N_out]]; the rows of x
    are the GEMM's rows (a 1x1 convolution over a [rows, 1, 1, K] image). int16: the int16
    form (x and out int16)."""
    geometry.check_inputs(ins)
    dtype = np.int16 if int16 else np.int8
    x = _array(ins[0], dtype, "x")
    y = _array(out, dtype, "out")
    shape, bias = _weight_shape(ins, p), ins[2]
    if x.ndim < 1:
        raise ValueError("x must have rank >= 1 (its last dimension is reduced)")
    if len(shape) != 2:
        raise ValueError(f"weights {tuple(shape)} must be [N_out, K]")
    N_out, K = shape
    if x.shape[x.ndim - 1] != K:
        raise ValueError(f"x has shape {x.shape}; its last dimension must be K = {K}")
    if bias.shape[0] != N_out:
        raise ValueError(f"bias has {bias.shape[0]} entries; expected {N_out}")
    lead = x.shape[:x.ndim - 1]
    if y.shape != lead + (N_out,):
        raise ValueError(f"output has shape {y.shape}; expected {lead + (N_out,)}")
    rows = int(np.prod(lead, dtype=np.int64))
    _check_constants(ins, p, N_out, int16)
    if not (-128 <= p.input_zero_point <= 127):
        raise ValueError(f"input zero point {p.input_zero_point} must lie in [-128, 127]")
    if packed is None:
        packed = pack_fully_connected(ins, p, isa, int16)
    _check_packed(packed, p, int16)
    return _bind(x, y, packed, p, (rows, 1, 1, K, 1, 1, N_out, 1, 1, 1, 1, 1, 1, 0, 0), isa, threads)


def fully_connected(ins, p, out, isa=None, threads=1):
    """FULLY_CONNECTED once: bind and run (see bind_fully_connected)."""
    bind_fully_connected(ins, p, out, isa, threads)()


def pack_fully_connected_int16(ins, p, isa=None):
    """The int16 form's pack_fully_connected."""
    return pack_fully_connected(ins, p, isa, int16=True)


def bind_fully_connected_int16(ins, p, out, isa=None, threads=1, packed=None):
    """The int16 form's bind_fully_connected: x [..., K] and out int16, zero points 0."""
    return bind_fully_connected(ins, p, out, isa, threads, packed, int16=True)


def fully_connected_int16(ins, p, out, isa=None, threads=1):
    """The int16 form's FULLY_CONNECTED once: bind and run."""
    bind_fully_connected_int16(ins, p, out, isa, threads)()


# ------------------------------------------------------------------------------ BATCH_MATMUL
#
# The product of two activations (reference: qrt/ops/batch_matmul.py, bit for bit): for each
# pair of broadcast leading indices, y[m, n] = requant(sum_k (a[m, k] - zp_a)(b[k, n] - zp_b)).
# Per product, a's rows and b's columns are first copied as int16 differences (x - zp), b's
# transposed to [N, K] unless transpose_b already stores it so: the inner loop is then a dot
# product of two contiguous int16 rows, which gcc vectorises (pmaddwd), and the sums are exact
# in int32 under the verifier's bound (K * 255 * 255 < 2^31). No packing at load: both sides
# change every run. `isa` is checked and otherwise unused (one C path), `threads` ignored.

DEF MAX_LEAD = 8
DEF RECURRENT_WIDE = 1 << 20  # qrt/ops/recurrent.py WIDE
DEF RECURRENT_HALF = 1 << 14  # rounds a product with a gate value (2^-15)


cdef class BatchMatMulStep(Step):
    cdef const void* a
    cdef const void* b
    cdef void* y
    cdef int16_t* ra  # [M, K] scratch
    cdef int16_t* rb  # [N, K] scratch
    cdef Py_ssize_t M, N, K, batches, lead
    cdef bint tb, wide  # transpose_b; the int16 form
    cdef int32_t zp_a, zp_b, m, n, zp_y, lo, hi, pre
    cdef Py_ssize_t ya[MAX_LEAD]   # per leading dimension: y's extent, a's and b's strides (0: broadcast)
    cdef Py_ssize_t sa[MAX_LEAD]
    cdef Py_ssize_t sb[MAX_LEAD]

    cdef int run(self) noexcept nogil:
        cdef Py_ssize_t bi, j, rem, oa, ob, i, kk, c
        cdef Py_ssize_t MK = self.M * self.K, KN = self.K * self.N
        for bi in range(self.batches):
            rem, oa, ob = bi, 0, 0
            for j in range(self.lead - 1, -1, -1):  # y's leading index -> a's and b's offsets
                oa += (rem % self.ya[j]) * self.sa[j]
                ob += (rem % self.ya[j]) * self.sb[j]
                rem //= self.ya[j]
            if self.wide:
                _products16(self, <const int16_t*>self.a + oa * MK,
                            _columns16(self, <const int16_t*>self.b + ob * KN), <int16_t*>self.y + bi * self.M * self.N)
            else:
                _rows8(self, <const int8_t*>self.a + oa * MK, <const int8_t*>self.b + ob * KN)
                _products8(self, <int8_t*>self.y + bi * self.M * self.N)
        return 0


cdef inline void _rows8(BatchMatMulStep s, const int8_t* pa, const int8_t* pb) noexcept nogil:
    """a's rows and b's columns as int16 differences x - zp, b as [N, K]."""
    cdef Py_ssize_t i, kk, c
    for i in range(s.M * s.K):
        s.ra[i] = <int16_t>pa[i] - s.zp_a
    if s.tb:  # b is [N, K] already
        for i in range(s.K * s.N):
            s.rb[i] = <int16_t>pb[i] - s.zp_b
    else:
        for kk in range(s.K):
            for c in range(s.N):
                s.rb[c * s.K + kk] = <int16_t>pb[kk * s.N + c] - s.zp_b


cdef inline const int16_t* _columns16(BatchMatMulStep s, const int16_t* pb) noexcept nogil:
    """int16 (symmetric) b as [N, K]: itself with transpose_b, else transposed into scratch."""
    cdef Py_ssize_t kk, c
    if s.tb:
        return pb
    for kk in range(s.K):
        for c in range(s.N):
            s.rb[c * s.K + kk] = pb[kk * s.N + c]
    return s.rb


cdef inline void _products8(BatchMatMulStep s, int8_t* y) noexcept nogil:
    """Four of b's columns per pass over a's row: four dot products share each load of a."""
    cdef Py_ssize_t i, c, kk, K = s.K
    cdef const int16_t* r1
    cdef const int16_t* r2
    cdef int32_t acc, a0, a1, a2, a3
    cdef int16_t v
    for i in range(s.M):
        r1 = s.ra + i * K
        c = 0
        while c + 4 <= s.N:
            r2 = s.rb + c * K
            a0 = a1 = a2 = a3 = 0
            for kk in range(K):
                v = r1[kk]
                a0 = a0 + <int32_t>v * r2[kk]
                a1 = a1 + <int32_t>v * r2[K + kk]
                a2 = a2 + <int32_t>v * r2[2 * K + kk]
                a3 = a3 + <int32_t>v * r2[3 * K + kk]
            y[i * s.N + c] = requantize_one(a0, s.m, s.n, s.zp_y, s.lo, s.hi)
            y[i * s.N + c + 1] = requantize_one(a1, s.m, s.n, s.zp_y, s.lo, s.hi)
            y[i * s.N + c + 2] = requantize_one(a2, s.m, s.n, s.zp_y, s.lo, s.hi)
            y[i * s.N + c + 3] = requantize_one(a3, s.m, s.n, s.zp_y, s.lo, s.hi)
            c += 4
        while c < s.N:
            r2 = s.rb + c * K
            acc = 0
            for kk in range(K):
                acc = acc + <int32_t>r1[kk] * r2[kk]
            y[i * s.N + c] = requantize_one(acc, s.m, s.n, s.zp_y, s.lo, s.hi)
            c += 1


cdef inline void _products16(BatchMatMulStep s, const int16_t* ra, const int16_t* rb, int16_t* y) noexcept nogil:
    """int64 sums of products (each exact in int32: |a b| <= 2^30), rounded by 2^pre, requantized;
    four of b's columns per pass over a's row."""
    cdef Py_ssize_t i, c, j, kk, K = s.K
    cdef const int16_t* r1
    cdef const int16_t* r2
    cdef int64_t a0, a1, a2, a3
    cdef int64_t acc[4]
    cdef int32_t v
    for i in range(s.M):
        r1 = ra + i * K
        c = 0
        while c < s.N:
            r2 = rb + c * K
            a0 = a1 = a2 = a3 = 0
            if c + 4 <= s.N:
                for kk in range(K):
                    v = r1[kk]
                    a0 = a0 + v * r2[kk]
                    a1 = a1 + v * r2[K + kk]
                    a2 = a2 + v * r2[2 * K + kk]
                    a3 = a3 + v * r2[3 * K + kk]
            else:
                for kk in range(K):
                    a0 = a0 + <int32_t>r1[kk] * r2[kk]
            acc[0], acc[1], acc[2], acc[3] = a0, a1, a2, a3
            for j in range(4 if c + 4 <= s.N else 1):
                y[i * s.N + c + j] = _requant16(acc[j], s)
            c += 4 if c + 4 <= s.N else 1


cdef inline int16_t _requant16(int64_t acc, BatchMatMulStep s) noexcept nogil:
    cdef int64_t v
    if s.pre:
        acc = (acc + (<int64_t>1 << (s.pre - 1))) >> s.pre
    v = rounding_shift(acc, s.m, s.n) + s.zp_y
    return <int16_t>(s.lo if v < s.lo else (s.hi if v > s.hi else v))


def _lead_strides(x, int lead):
    """x's stride, in whole matrices, along each of y's `lead` leading dimensions (x's own,
    right-aligned; 0 where x broadcasts)."""
    dims = (1,) * (lead - (x.ndim - 2)) + tuple(x.shape[:x.ndim - 2])
    strides, step = [0] * lead, 1
    for j in range(lead - 1, -1, -1):
        strides[j] = 0 if dims[j] == 1 else step
        step *= dims[j]
    return strides


def bind_batch_matmul(ins, p, out, isa=None, threads=1):
    """BATCH_MATMUL as a Step: ins = [a [..., M, K], b [..., K, N] (transpose_b: [..., N, K])],
    out [..., M, N], all int8 or all int16 (symmetric), leading dimensions broadcast (ValueError
    on anything else)."""
    cdef BatchMatMulStep s = BatchMatMulStep.__new__(BatchMatMulStep)
    cdef const int32_t[::1] mult = p.out.multiplier
    cdef const int32_t[::1] shift = p.out.shift
    cdef int16_t[::1] ra, rb
    if len(ins) != 2:
        raise ValueError(f"expected inputs [a, b], got {len(ins)}")
    dtype = np.int16 if isinstance(ins[0], np.ndarray) and ins[0].dtype == np.int16 else np.int8
    a, b, y = _array(ins[0], dtype, "a"), _array(ins[1], dtype, "b"), _array(out, dtype, "out")
    shape = output_shape(a.shape, b.shape, bool(p.transpose_b))
    if isinstance(shape, str):
        raise ValueError(shape)
    if y.shape != shape:
        raise ValueError(f"out has shape {y.shape}; expected {shape}")
    M, K = a.shape[a.ndim - 2], a.shape[a.ndim - 1]
    N = shape[len(shape) - 1]
    s.wide = dtype == np.int16
    if s.wide:
        if (p.zp_a, p.zp_b, p.out.zero_point) != (0, 0, 0) or not -32768 <= p.out.lo <= p.out.hi <= 32767:
            raise ValueError("int16 operands are symmetric (zero points 0) and the clamp inside int16")
        if len(mult) != 1 or not (1 <= shift[0] <= 62) or mult[0] < 0 or p.pre_shift != pre_shift(K):
            raise ValueError(f"one multiplier, a shift in [1, 62] and the pre-shift {pre_shift(K)} for K = {K}")
    else:
        check_requant(mult, shift, 1, p.out.zero_point, p.out.lo, p.out.hi)
        for zp, what in ((p.zp_a, "a"), (p.zp_b, "b")):
            if not -128 <= zp <= 127:
                raise ValueError(f"zero point of {what} {zp} must lie in [-128, 127]")
        if K * 255 * 255 > 2**31 - 1:
            raise ValueError(f"reduction length {K} can overflow the int32 accumulator")
    _check_isa(isa)
    lead = shape[:len(shape) - 2]
    if len(lead) > MAX_LEAD:
        raise ValueError(f"at most {MAX_LEAD} leading dimensions, not {len(lead)}")
    s.lead = len(lead)
    s.batches = int(np.prod(lead, dtype=np.int64))
    sa, sb = _lead_strides(a, len(lead)), _lead_strides(b, len(lead))
    for j in range(len(lead)):
        s.ya[j], s.sa[j], s.sb[j] = lead[j], sa[j], sb[j]
    s.M, s.N, s.K, s.tb = M, N, K, bool(p.transpose_b)
    s.zp_a, s.zp_b, s.pre = p.zp_a, p.zp_b, p.pre_shift
    s.m, s.n, s.zp_y, s.lo, s.hi = mult[0], shift[0], p.out.zero_point, p.out.lo, p.out.hi
    ra_arr, rb_arr = np.empty(max(M * K, 1), np.int16), np.empty(max(N * K, 1), np.int16)
    ra, rb = ra_arr, rb_arr
    s.ra, s.rb = &ra[0], &rb[0]
    s.a, s.b = _in_bytes(a, "a"), _in_bytes(b, "b")
    s.y = _out_bytes(y)
    if s.y == NULL:  # an empty output
        s.batches = 0
    s.keep = (a, b, y, ra_arr, rb_arr)
    return s


def batch_matmul(ins, p, out, isa=None, threads=1):
    """BATCH_MATMUL once: bind and run (see bind_batch_matmul)."""
    bind_batch_matmul(ins, p, out, isa, threads)()



# ------------------------------------------------------------------------------ LSTM, GRU
#
# One direction of a recurrent layer (reference: qrt/ops/recurrent.py, bit for bit). The input
# half of every step's pre-activations is one GEMM over all T x B rows first (the int8 GEMM's
# int32 mode: sums + bias); each step then adds the recurrent half, a GEMM of B rows over the
# previous state (y's previous step, or h0), and does the gates' integer math per element. The
# cell state is updated in c_t itself. The int16 form sums in plain loops: the GEMM's int16 mode
# has no int32 output.

cdef class RecurrentStep(Step):
    cdef qrt_gemm gx, gh, gn  # input half; recurrent half (GRU without lbr: its z, r rows); GRU's n rows
    cdef bint lstm, lbr, wide, reverse
    cdef Py_ssize_t T, B, I, H, G
    cdef const uint8_t* x
    cdef uint8_t* y
    cdef const uint8_t* h0
    cdef uint8_t* h_t
    cdef const int16_t* c0
    cdef int16_t* c
    cdef int32_t* ax  # [T B, G H]
    cdef int32_t* ah  # [B, G H] (GRU without lbr: [B, 2 H])
    cdef int32_t* an  # GRU without lbr: [B, H]
    cdef int32_t* zr  # GRU: z and r [B, 2 H]
    cdef uint8_t* hr  # GRU without lbr: zp_h + r (h - zp_h) [B, H]
    cdef const int16_t* tf
    cdef const int16_t* tg
    cdef const int16_t* th
    cdef const int32_t* m  # [4, G H]: mx, nx, mh, nh
    cdef const int8_t* w  # int16 form: the weights as stored
    cdef const int8_t* r
    cdef const int32_t* b
    cdef const int32_t* rb
    cdef int32_t zp_x, zp_h, lo, hi, mo, no, lo_h, hi_h, mc, nc

    cdef int run(self) noexcept nogil:
        cdef Py_ssize_t s, t, prev = -1, GH = self.G * self.H, es = 2 if self.wide else 1
        cdef const uint8_t* hp = self.h0
        cdef int rc
        if self.T * self.B:
            if self.wide:
                _sums16(<const int16_t*>self.x, self.T * self.B, self.I, self.w, self.b, GH, self.ax)
            else:
                self.gx.y32 = self.ax
                rc = qrt_gemm_run(&self.gx, <const int8_t*>self.x, NULL)
                if rc:
                    return rc
        if self.lstm and self.B * self.H:
            memcpy(self.c, self.c0, self.B * self.H * 2)
        for s in range(self.T):
            t = self.T - 1 - s if self.reverse else s
            rc = _lstm_step(self, t, hp) if self.lstm else _gru_step(self, t, hp)
            if rc:
                return rc
            hp = self.y + t * self.B * self.H * es
        if self.B * self.H:
            memcpy(self.h_t, hp, self.B * self.H * es)
        return 0


cdef void _sums16(const int16_t* x, Py_ssize_t rows, Py_ssize_t K, const int8_t* w, const int32_t* bias,
                  Py_ssize_t n, int32_t* out) noexcept nogil:
    """out[i, j] = bias[j] + sum_k x[i, k] w[j, k]: int16 x (zero point 0), exact in int32 under
    the int16 form's bound (SPEC.md 4.6)."""
    cdef Py_ssize_t i, j, k
    cdef int32_t acc
    for i in range(rows):
        for j in range(n):
            acc = bias[j]
            for k in range(K):
                acc = acc + <int32_t>x[i * K + k] * w[j * K + k]
            out[i * n + j] = acc


cdef int _recurrent_sums(RecurrentStep s, qrt_gemm* g, const uint8_t* h, const int8_t* r, const int32_t* rb,
                         Py_ssize_t n, int32_t* out) noexcept nogil:
    """The recurrent sums of n rows over the B rows of state h (int8 through the GEMM, int16 in loops)."""
    if s.B == 0:
        return 0
    if s.wide:
        _sums16(<const int16_t*>h, s.B, s.H, r, rb, n, out)
        return 0
    g.y32 = out
    return qrt_gemm_run(g, <const int8_t*>h, NULL)


cdef inline int64_t _wide(int32_t acc, int32_t m, int32_t n) noexcept nogil:
    cdef int64_t v = rounding_shift(acc, m, n)
    return -RECURRENT_WIDE if v < -RECURRENT_WIDE else (RECURRENT_WIDE if v > RECURRENT_WIDE else v)


cdef inline int32_t _clamp(int64_t v, int32_t lo, int32_t hi) noexcept nogil:
    return <int32_t>(lo if v < lo else (hi if v > hi else v))


cdef inline int32_t _gate(RecurrentStep s, const int16_t* table, int64_t pre) noexcept nogil:
    """table at the pre-activation, clamped to [lo, hi], interpolated 16 inputs apart."""
    cdef int32_t u = _clamp(pre, s.lo, s.hi) + 32768
    cdef int32_t j = u >> 4, f = u & 15
    return table[j] + (((table[j + 1] - table[j]) * f + 8) >> 4)


cdef inline int32_t _interp(const int16_t* table, int32_t x) noexcept nogil:
    cdef int32_t u = x + 32768
    cdef int32_t j = u >> 4, f = u & 15
    return table[j] + (((table[j + 1] - table[j]) * f + 8) >> 4)


cdef inline int64_t _pre(RecurrentStep s, const int32_t* ax, const int32_t* ah, Py_ssize_t j,
                         Py_ssize_t row) noexcept nogil:
    """Row `row`'s pre-activation: its input half ax[row] plus its recurrent half ah[j]."""
    cdef Py_ssize_t GH = s.G * s.H
    return _wide(ax[row], s.m[row], s.m[GH + row]) + _wide(ah[j], s.m[2 * GH + row], s.m[3 * GH + row])


cdef inline int32_t _h_at(RecurrentStep s, const uint8_t* h, Py_ssize_t i) noexcept nogil:
    return (<const int16_t*>h)[i] if s.wide else (<const int8_t*>h)[i]


cdef inline void _h_set(RecurrentStep s, uint8_t* h, Py_ssize_t i, int64_t v) noexcept nogil:
    v = s.lo_h if v < s.lo_h else (s.hi_h if v > s.hi_h else v)
    if s.wide:
        (<int16_t*>h)[i] = <int16_t>v
    else:
        (<int8_t*>h)[i] = <int8_t>v


cdef int _lstm_step(RecurrentStep s, Py_ssize_t t, const uint8_t* hp) noexcept nogil:
    cdef Py_ssize_t bb, j, H = s.H, GH = 4 * s.H
    cdef int32_t i, o, f, g, cv
    cdef const int32_t* ax
    cdef const int32_t* ah
    cdef uint8_t* y = s.y + t * s.B * H * (2 if s.wide else 1)
    cdef int rc = _recurrent_sums(s, &s.gh, hp, s.r, s.rb, GH, s.ah)
    if rc:
        return rc
    for bb in range(s.B):
        ax, ah = s.ax + (t * s.B + bb) * GH, s.ah + bb * GH
        for j in range(H):
            i = _gate(s, s.tf, _pre(s, ax, ah, j, j))
            o = _gate(s, s.tf, _pre(s, ax, ah, H + j, H + j))
            f = _gate(s, s.tf, _pre(s, ax, ah, 2 * H + j, 2 * H + j))
            g = _gate(s, s.tg, _pre(s, ax, ah, 3 * H + j, 3 * H + j))
            cv = s.c[bb * H + j]
            cv = _clamp(((f * cv + RECURRENT_HALF) >> 15) + rounding_shift(i * g, s.mc, s.nc), -32768, 32767)
            s.c[bb * H + j] = <int16_t>cv
            _h_set(s, y, bb * H + j, s.zp_h + rounding_shift(o * _interp(s.th, cv), s.mo, s.no))
    return 0


cdef int _gru_step(RecurrentStep s, Py_ssize_t t, const uint8_t* hp) noexcept nogil:
    cdef Py_ssize_t bb, j, H = s.H, GH = 3 * s.H, sh = 3 * s.H if s.lbr else 2 * s.H
    cdef int32_t z, rg, n, d
    cdef int64_t pn
    cdef const int32_t* ax
    cdef const int32_t* ah
    cdef uint8_t* y = s.y + t * s.B * H * (2 if s.wide else 1)
    cdef int rc = _recurrent_sums(s, &s.gh, hp, s.r, s.rb, sh, s.ah)
    if rc:
        return rc
    for bb in range(s.B):  # z and r (and r * h, which the n rows then read without lbr)
        ax, ah = s.ax + (t * s.B + bb) * GH, s.ah + bb * sh
        for j in range(2 * H):
            s.zr[bb * 2 * H + j] = _gate(s, s.tf, _pre(s, ax, ah, j, j))
        if not s.lbr:
            for j in range(H):
                d = _h_at(s, hp, bb * H + j) - s.zp_h
                _h_set(s, s.hr, bb * H + j, s.zp_h + ((<int64_t>s.zr[bb * 2 * H + H + j] * d + RECURRENT_HALF) >> 15))
    if not s.lbr:
        rc = _recurrent_sums(s, &s.gn, s.hr, s.r + 2 * H * H, s.rb + 2 * H, H, s.an)
        if rc:
            return rc
    for bb in range(s.B):
        ax = s.ax + (t * s.B + bb) * GH
        for j in range(H):
            z, rg = s.zr[bb * 2 * H + j], s.zr[bb * 2 * H + H + j]
            if s.lbr:
                pn = (rg * _wide(s.ah[bb * sh + 2 * H + j], s.m[2 * GH + 2 * H + j], s.m[3 * GH + 2 * H + j])
                      + RECURRENT_HALF) >> 15
            else:
                pn = _wide(s.an[bb * H + j], s.m[2 * GH + 2 * H + j], s.m[3 * GH + 2 * H + j])
            n = _gate(s, s.tg, _wide(ax[2 * H + j], s.m[2 * H + j], s.m[GH + 2 * H + j]) + pn)
            d = _h_at(s, hp, bb * H + j) - s.zp_h
            _h_set(s, y, bb * H + j, s.zp_h + rounding_shift((32768 - z) * n, s.mo, s.no)
                   + ((<int64_t>z * d + RECURRENT_HALF) >> 15))
    return 0


def bind_recurrent(ints, ptrs, packed, isa, threads, keep):
    """The Step of operands qrt/kernels/recurrent.py checked (ints, ptrs: its _bind_recurrent)."""
    cdef RecurrentStep s = RecurrentStep.__new__(RecurrentStep)
    cdef const int64_t[::1] v = ints
    cdef const uint64_t[::1] a = ptrs
    s.T, s.B, s.I, s.G, s.H = v[0], v[1], v[2], v[3], v[4]
    s.zp_x, s.zp_h, s.lo, s.hi, s.lo_h, s.hi_h = v[5], v[6], v[7], v[8], v[9], v[10]
    s.mo, s.no, s.mc, s.nc = v[11], v[12], v[13], v[14]
    s.reverse, s.lbr, s.lstm, s.wide = v[15], v[16], v[17], v[18]
    s.x, s.w, s.r = <const uint8_t*><intptr_t>a[0], <const int8_t*><intptr_t>a[1], <const int8_t*><intptr_t>a[2]
    s.b, s.rb = <const int32_t*><intptr_t>a[3], <const int32_t*><intptr_t>a[4]
    s.h0, s.y, s.h_t = <const uint8_t*><intptr_t>a[5], <uint8_t*><intptr_t>a[6], <uint8_t*><intptr_t>a[7]
    s.c0, s.c = <const int16_t*><intptr_t>a[8], <int16_t*><intptr_t>a[9]
    s.ax, s.ah, s.an, s.zr = <int32_t*><intptr_t>a[10], <int32_t*><intptr_t>a[11], <int32_t*><intptr_t>a[12], \
        <int32_t*><intptr_t>a[13]
    s.hr, s.m = <uint8_t*><intptr_t>a[14], <const int32_t*><intptr_t>a[15]
    s.tf, s.tg, s.th = <const int16_t*><intptr_t>a[16], <const int16_t*><intptr_t>a[17], <const int16_t*><intptr_t>a[18]
    if not s.wide:
        split = packed[2] is not None  # GRU without lbr: z, r rows on h; n rows on r * h
        _bind_gemm(&s.gx, packed[0], (s.T * s.B, 1, 1, s.I, 1, 1, s.G * s.H, 1, 1, 1, 1, 1, 1, 0, 0), isa, threads)
        _bind_gemm(&s.gh, packed[1], (s.B, 1, 1, s.H, 1, 1, 2 * s.H if split else s.G * s.H, 1, 1, 1, 1, 1, 1, 0, 0),
                   isa, threads)
        if split:
            _bind_gemm(&s.gn, packed[2], (s.B, 1, 1, s.H, 1, 1, s.H, 1, 1, 1, 1, 1, 1, 0, 0), isa, threads)
    s.keep = (keep, ints, ptrs, packed)
    return s


KERNELS = {
    "batch_matmul": Kernel(batch_matmul, bind_batch_matmul),
    "conv_2d": Kernel(conv_2d, bind_conv_2d, pack_conv_2d),
    "fully_connected": Kernel(fully_connected, bind_fully_connected, pack_fully_connected),
    "conv_2d_int16": Kernel(conv_2d_int16, bind_conv_2d_int16, pack_conv_2d_int16),
    "fully_connected_int16": Kernel(fully_connected_int16, bind_fully_connected_int16,
                                    pack_fully_connected_int16),
}
