# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""DEPTHWISE_CONV_2D, int8 in, int32 accumulation, int8 out (SPEC.md 2.13.2, section 4), and
its int16 form (int16 x with zero point 0, int8 weights, int16 out: SPEC.md 4.6), on every
instruction-set path (qrt/kernels/simd/depthwise.h has the data path of both). Reference:
qrt/ops/depthwise_conv_2d.py, bit for bit.

x int8 [N, H, W, C] and out int8 [N, OH, OW, C*M], channels-last and C-contiguous; output
channel c*M + j reads input channel c. Used in three steps:
  pack_depthwise_conv_2d(ins, p, isa) -> PackedDepthwise   once, at load: weights as int16 tap
      pairs in the vector kernels' order, the input zero point folded into the bias
      (bias - zp_x * sum_taps w, so the kernels multiply raw x and pad with zp_x), and
      per-channel requantization tables, all padded to whole blocks of 32 channels;
  bind_depthwise_conv_2d(ins, p, out, ...) -> Step   once per thread arena: every shape
      checked, raw pointers kept;
  step.run()   every inference, no Python, no allocation once warm.
depthwise_conv_2d(ins, p, out) does all three, for tests and tools. The int16 form's are the
same three with _int16 appended: x and out int16, everything else as above (the weights are
packed alike; the zero point, 0, folds to nothing).
"""
import numpy as np

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t

from qrt.kernels.numerics cimport check_requant
from qrt.kernels.plan cimport Step

from qrt.kernels import Kernel, geometry, isa as _isa
from qrt.kernels.requantize import tables32


from qrt.kernels.isa cimport qrt_dw_int16_ops_for, qrt_dw_ops_for, qrt_dw_run
from qrt.kernels.simd_depthwise cimport QRT_DW_BLOCK, qrt_dw, qrt_dw_block_elems, qrt_dw_pack_weights


_SCALAR = _isa.NAMES.index("scalar")


class PackedDepthwise:
    """Weights and per-channel tables in the kernels' layout (see simd/depthwise.h)."""

    def __init__(self, w, bias, zp_x, requant, isa, int16=False):
        _, kh, kw, c_out = w.shape
        taps = kh * kw
        self.isa, self.shape, self.int16 = isa, (kh, kw, c_out), int16
        self.pairs, self.blocks = -(-taps // 2), -(-c_out // QRT_DW_BLOCK)
        span = QRT_DW_BLOCK * self.blocks
        # Taps in the kernels' order (simd/depthwise.h qrt_dw_taps): rows paired down each
        # column, an odd last row along itself, then a dummy of weight 0 if taps is odd.
        order = [(h + i, k) for h in range(0, kh - 1, 2) for k in range(kw) for i in (0, 1)]
        order += [(kh - 1, k) for k in range(kw)] if kh % 2 else []
        w3 = np.asarray(w).reshape(kh, kw, c_out)
        self.w = np.ascontiguousarray([w3[i, j] for i, j in order], np.int8).reshape(taps, c_out)
        wt = np.zeros((2 * self.pairs, span), np.int64)
        wt[:taps, :c_out] = self.w
        # The vector paths' int16 tap pairs, simd/layout.h qrt_dw_packed_at.
        self.wp = np.zeros(0, np.int16) if isa == _SCALAR else _pack_weights(self.w, self.pairs, self.blocks)
        b = np.zeros(span, np.int64)
        b[:c_out] = np.asarray(bias, np.int64)
        # The kernels multiply raw x; a padding tap reads zp_x and so cancels its own share.
        # int32 wraps like the reference's accumulator (SPEC.md 4.5), so folding is exact.
        b -= int(zp_x) * wt.sum(axis=0)
        self.bias = ((b + 2**31) % 2**32 - 2**31).astype(np.int32)
        self.mult = self._per_channel(requant.multiplier, c_out, span, 0)
        self.shift = self._per_channel(requant.shift, c_out, span, 1)
        # Shifts >= 33 everywhere: the 32-bit requantization of simd/requant.h applies.
        self.n33, self.round32, self.shift32 = tables32(self.shift, np.arange(span) < c_out,
                                                        requant.zero_point)

    @staticmethod
    def _per_channel(values, c_out, span, fill):
        out = np.full(span, fill, np.int32)
        out[:c_out] = np.broadcast_to(np.asarray(values, np.int32), (c_out,))
        return out


cdef object _pack_weights(const int8_t[:, ::1] w, int64_t pairs, int64_t blocks):
    """simd/layout.h qrt_dw_pack_weights: w [taps][C_out] (the kernels' tap order) -> int16 tap
    pairs, zeros where a tap or channel is padding."""
    out = np.zeros(blocks * qrt_dw_block_elems(pairs), np.int16)
    cdef int16_t[::1] o = out
    if o.shape[0]:
        qrt_dw_pack_weights(&w[0, 0], w.shape[0], w.shape[1], pairs, &o[0])
    return out


cdef class DepthwiseStep(Step):
    cdef qrt_dw d
    cdef const int8_t* x  # x's and y's first bytes (int8, or int16 in the int16 mode)
    cdef int8_t* y

    cdef int run(self) noexcept nogil:
        return qrt_dw_run(&self.d, self.x, self.y)

    @property
    def isa(self):
        return _isa.NAMES[self.d.isa]


cdef _check_requant(r, Py_ssize_t channels, bint int16):
    """numerics.pxd check_requant of Requant r (its arrays, zero point and clamp); for the int16
    form the clamp inside int16 instead of int8 and the output zero point 0 (SPEC.md 4.6, as
    the int16 GEMM's bind requires)."""
    cdef const int32_t[::1] mult = r.multiplier
    cdef const int32_t[::1] shift = r.shift
    if not int16:
        check_requant(mult, shift, channels, r.zero_point, r.lo, r.hi)
        return
    if not (-32768 <= r.lo <= r.hi <= 32767):
        raise ValueError(f"clamp range [{r.lo}, {r.hi}] must lie inside [-32768, 32767]")
    check_requant(mult, shift, channels, 0, 0, 0)  # the clamp is checked above, the zero point below
    if r.zero_point != 0:
        raise ValueError(f"output zero point {r.zero_point} must be 0: int16 activations are "
                         f"symmetric (SPEC.md 4.6)")


cdef _check_constants(ins, p, Py_ssize_t channels, bint int16):
    """Bias int32 [channels], requantization int32 and in range, input zero point in int8 (0
    for the int16 form): ValueError (numpy buffer mismatches included) otherwise."""
    cdef const int32_t[::1] bias = ins[2]
    if bias.shape[0] != channels:
        raise ValueError(f"bias has {bias.shape[0]} entries; expected {channels}")
    _check_requant(p.out, channels, int16)
    if not (-128 <= p.input_zero_point <= 127):
        raise ValueError(f"input zero point {p.input_zero_point} must lie in [-128, 127]")
    if int16 and p.input_zero_point != 0:
        raise ValueError(f"input zero point {p.input_zero_point} must be 0: int16 activations are "
                         f"symmetric (SPEC.md 4.6)")


def _pack(ins, p, isa, bint int16):
    geometry.check_inputs(ins)
    cdef const int8_t[:, :, :, ::1] w = ins[1]
    if p.groups < 1 or w.shape[0] != 1 or w.shape[1] < 1 or w.shape[2] < 1 or w.shape[3] % p.groups:
        raise ValueError(f"weights have shape {(w.shape[0], w.shape[1], w.shape[2], w.shape[3])}; "
                         f"expected (1, KH, KW, C*M) for depth multiplier {p.groups}")
    _check_constants(ins, p, w.shape[3], int16)
    return PackedDepthwise(ins[1], ins[2], p.input_zero_point, p.out, _isa.resolve(isa), int16)


def pack_depthwise_conv_2d(ins, p, isa=None):
    """ins = [x (unused), w [1, KH, KW, C*M], bias [C*M]] -> PackedDepthwise for path isa."""
    return _pack(ins, p, isa, False)


def pack_depthwise_conv_2d_int16(ins, p, isa=None):
    """The int16 form's pack_depthwise_conv_2d (input zero point 0, clamp inside int16)."""
    return _pack(ins, p, isa, True)


cdef const void* _data(arr):
    """The first element of a C-contiguous array, or NULL when it has none."""
    return <const void*><size_t>arr.ctypes.data if arr.size else NULL


cdef tuple _activations(x, out, bint int16):
    """x [N,H,W,C] and out 4-d, C-contiguous, of the form's dtype (int8, or int16), out
    writable (ValueError otherwise, numpy buffer mismatches included): their shapes and the
    addresses of their first elements (0 where they have none)."""
    cdef const int8_t[:, :, :, ::1] x8
    cdef int8_t[:, :, :, ::1] y8
    cdef const int16_t[:, :, :, ::1] x16
    cdef int16_t[:, :, :, ::1] y16
    if int16:
        x16, y16 = x, out
        xs = (x16.shape[0], x16.shape[1], x16.shape[2], x16.shape[3])
        ys = (y16.shape[0], y16.shape[1], y16.shape[2], y16.shape[3])
        return (xs, ys, <size_t>&x16[0, 0, 0, 0] if x16.size else 0,
                <size_t>&y16[0, 0, 0, 0] if y16.size else 0)
    x8, y8 = x, out
    xs = (x8.shape[0], x8.shape[1], x8.shape[2], x8.shape[3])
    ys = (y8.shape[0], y8.shape[1], y8.shape[2], y8.shape[3])
    return xs, ys, <size_t>&x8[0, 0, 0, 0] if x8.size else 0, <size_t>&y8[0, 0, 0, 0] if y8.size else 0


def bind_depthwise_conv_2d(ins, p, out, isa=None, threads=1, packed=None):
    """DEPTHWISE_CONV_2D as a Step: ins = [x [N,H,W,C], w [1,KH,KW,C*M], bias [C*M]], p
    ConvParams with p.groups the depth multiplier M; output channel c*M + j reads input
    channel c. Every check runs here, before anything is written."""
    return _bind(ins, p, out, isa, threads, packed, False)


def bind_depthwise_conv_2d_int16(ins, p, out, isa=None, threads=1, packed=None):
    """The int16 form's bind_depthwise_conv_2d: x and out int16, the input zero point 0, the
    clamp [p.out.lo, p.out.hi] inside int16 (SPEC.md 4.6); weights and bias as there."""
    return _bind(ins, p, out, isa, threads, packed, True)


def _bind(ins, p, out, isa, threads, packed, bint int16):
    geometry.check_inputs(ins)
    xshape, yshape, xaddr, yaddr = _activations(ins[0], out, int16)
    cdef const int8_t[:, :, :, ::1] w = ins[1]
    cdef const int32_t[::1] bias = ins[2]
    r = p.out

    sh, sw, dh, dw, top, left, bottom, right = geometry.window(p)
    cdef Py_ssize_t M = p.groups
    cdef Py_ssize_t N = xshape[0], H = xshape[1], W = xshape[2], C = xshape[3]
    cdef Py_ssize_t KH = w.shape[1], KW = w.shape[2], C_out = w.shape[3]
    if M < 1:
        raise ValueError(f"depth multiplier {M} must be >= 1")
    if w.shape[0] != 1 or C_out != C * M:
        raise ValueError(f"weights have shape {(w.shape[0], w.shape[1], w.shape[2], w.shape[3])}; "
                         f"expected (1, KH, KW, {C * M}) for {C} input channels and depth "
                         f"multiplier {M}")
    OH, OW = geometry.conv_output(p, (N, H, W), (KH, KW), C_out, bias.shape[0], yshape)
    _check_constants(ins, p, C_out, int16)
    path = _isa.resolve(isa)
    if packed is None:
        packed = PackedDepthwise(ins[1], ins[2], p.input_zero_point, r, path, int16)
    elif packed.isa != path or packed.shape != (KH, KW, C_out) or packed.int16 != int16:
        form = {False: "int8", True: "int16"}
        raise ValueError(f"weights were packed for the {_isa.NAMES[packed.isa]} path, kernel "
                         f"{packed.shape} and the {form[packed.int16]} form, not "
                         f"{_isa.NAMES[path]}, {(KH, KW, C_out)} and {form[int16]}")

    cdef DepthwiseStep s = DepthwiseStep.__new__(DepthwiseStep)
    (s.d.N, s.d.H, s.d.W, s.d.C, s.d.M, s.d.C_out, s.d.OH, s.d.OW, s.d.KH, s.d.KW) = \
        (N, H, W, C, M, C_out, OH, OW, KH, KW)
    s.d.sh, s.d.sw, s.d.dh, s.d.dw, s.d.top, s.d.left = sh, sw, dh, dw, top, left
    s.d.taps, s.d.pairs, s.d.blocks = KH * KW, packed.pairs, packed.blocks
    s.d.w = <const int8_t*>_data(packed.w)
    s.d.wp = <const int16_t*>_data(packed.wp)
    s.d.rq.bias = <const int32_t*>_data(packed.bias)
    s.d.rq.mult = <const int32_t*>_data(packed.mult)
    s.d.rq.shift = <const int32_t*>_data(packed.shift)
    s.d.rq.round32 = <const int32_t*>_data(packed.round32)
    s.d.rq.shift32 = <const int32_t*>_data(packed.shift32)
    s.d.rq.n33 = packed.n33
    cdef Py_ssize_t total = N * H * W * C, span = QRT_DW_BLOCK * packed.blocks
    dtype = np.int16 if int16 else np.int8
    # Padding taps read zp_x; the interior pixels of a row advance all their taps together by
    # sw * C_out elements per pixel (the 3x3 stride-1 kernel reads two columns ahead), those in
    # padded rows too, so the row of zp_x is that long.
    zrow = np.full((OW + 1) * sw * C_out + span, p.input_zero_point, dtype)
    s.d.zrow = <const int8_t*>_data(zrow)
    # M = 1 reads x in place, whole 32-channel blocks per tap: the pixels from which such a read
    # would pass x's end are read from a copy with room behind it (made at each run).
    tail = None
    s.d.tail_at = total
    if M == 1 and C_out > 0:
        s.d.tail_at = min(((total - span) // C + 1) * C if total >= span else 0, total)
        tail = np.zeros(total - s.d.tail_at + span, dtype)
        s.d.tail = <int8_t*><size_t>tail.ctypes.data
    s.d.rq.zp_y, s.d.rq.lo, s.d.rq.hi = r.zero_point, r.lo, r.hi
    s.d.isa = path
    s.d.ops = qrt_dw_int16_ops_for(path) if int16 else qrt_dw_ops_for(path)
    s.d.threads = max(1, int(threads))
    s.x = <const int8_t*><size_t>xaddr
    s.y = <int8_t*><size_t>yaddr
    s.keep = (ins[0], out, packed, zrow, tail)
    return s


def depthwise_conv_2d(ins, p, out, isa=None, threads=1):
    """DEPTHWISE_CONV_2D once: bind and run (see bind_depthwise_conv_2d)."""
    bind_depthwise_conv_2d(ins, p, out, isa, threads)()


def depthwise_conv_2d_int16(ins, p, out, isa=None, threads=1):
    """The int16 form once: bind and run (see bind_depthwise_conv_2d_int16)."""
    bind_depthwise_conv_2d_int16(ins, p, out, isa, threads)()


KERNELS = {
    "depthwise_conv_2d": Kernel(depthwise_conv_2d, bind_depthwise_conv_2d, pack_depthwise_conv_2d),
    "depthwise_conv_2d_int16": Kernel(depthwise_conv_2d_int16, bind_depthwise_conv_2d_int16,
                                      pack_depthwise_conv_2d_int16),
}
