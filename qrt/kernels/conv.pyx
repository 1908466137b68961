# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CONV_2D and DEPTHWISE_CONV_2D, int8 in, int32 accumulation, int8 out (SPEC.md 2.13.1, 2.13.2,
section 4). References: qrt/reference/ops.py conv_2d and depthwise_conv_2d, bit for bit.

Calling convention (qrt/runtime/kernels.py): fn([x, w, bias], params, out) fills `out`.
x int8 [N, H, W, C_in] and out int8 [N, OH, OW, C_out], channels-last and C-contiguous.

conv_2d: for each output pixel and group, the window of (x - zp_x) is gathered once into a small
int16 buffer (zeros where the window lies in the padding: real 0 contributes nothing), in the
order [KH, KW, C_in/groups] of a weight row; every output channel of the group is then one
contiguous dot product of length KH*KW*C_in/groups against w[c], four channels per pass (they
share the loads of the window), which gcc -O3 vectorises.

depthwise_conv_2d: per output pixel, int32 accumulators for all output channels start at the
bias; each tap inside the input adds (x - zp_x) * w over contiguous channels.
"""
from libc.stdint cimport int8_t, int16_t, int32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from qrt.kernels.numerics cimport check_requant, dot4_s16_s8, dot_s16_s8, requantize_one


cdef Py_ssize_t _out_size(Py_ssize_t size, Py_ssize_t pad_a, Py_ssize_t pad_b, Py_ssize_t k,
                          Py_ssize_t dilation, Py_ssize_t stride):
    """floor((size + pads - d*(k-1) - 1) / stride) + 1 (SPEC.md 2.13); may be <= 0."""
    cdef Py_ssize_t span = size + pad_a + pad_b - dilation * (k - 1) - 1
    if span < 0:
        return 0
    return span // stride + 1


cdef tuple _window(p):
    """(sh, sw, dh, dw, top, left, bottom, right) from ConvParams, validated."""
    sh, sw = p.stride
    dh, dw = p.dilation
    top, left, bottom, right = p.pads
    if sh < 1 or sw < 1 or dh < 1 or dw < 1:
        raise ValueError(f"stride {tuple(p.stride)} and dilation {tuple(p.dilation)} must be >= 1")
    if top < 0 or left < 0 or bottom < 0 or right < 0:
        raise ValueError(f"pads {tuple(p.pads)} must be >= 0")
    return sh, sw, dh, dw, top, left, bottom, right


cdef _check_inputs(ins):
    if len(ins) < 3:
        raise ValueError(f"expected inputs [x, w, bias], got {len(ins)}")


cdef _check_output(y_shape, expect):
    if y_shape != expect:
        raise ValueError(f"output has shape {y_shape}; the window arithmetic gives {expect}")


cdef tuple _geometry(p, const int32_t[::1] mult, const int32_t[::1] shift, tuple nhw, tuple kernel,
                     Py_ssize_t C_out, Py_ssize_t bias_len, tuple y_shape):
    """Check the kernel, bias, output shape, input zero point and requantization of a conv;
    return (OH, OW, multiplier step per channel)."""
    N, H, W = nhw
    KH, KW = kernel
    sh, sw, dh, dw, top, left, bottom, right = _window(p)
    if KH < 1 or KW < 1:
        raise ValueError(f"kernel {KH}x{KW} must be at least 1x1")
    if bias_len != C_out:
        raise ValueError(f"bias has {bias_len} entries; expected {C_out}")
    OH = _out_size(H, top, bottom, KH, dh, sh)
    OW = _out_size(W, left, right, KW, dw, sw)
    _check_output(y_shape, (N, OH, OW, C_out))
    if not (-128 <= p.input_zero_point <= 127):
        raise ValueError(f"input zero point {p.input_zero_point} must lie in [-128, 127]")
    r = p.out
    return OH, OW, check_requant(mult, shift, C_out, r.zero_point, r.lo, r.hi)


def conv_2d(ins, p, out):
    """CONV_2D: ins = [x [N,H,W,C_in], w [C_out,KH,KW,C_in/groups], bias [C_out]], p ConvParams."""
    _check_inputs(ins)
    cdef const int8_t[:, :, :, ::1] x = ins[0]
    cdef const int8_t[:, :, :, ::1] w = ins[1]
    cdef const int32_t[::1] bias = ins[2]
    cdef int8_t[:, :, :, ::1] y = out
    r = p.out
    cdef const int32_t[::1] mult = r.multiplier
    cdef const int32_t[::1] shift = r.shift

    cdef Py_ssize_t sh, sw, dh, dw, top, left, bottom, right
    sh, sw, dh, dw, top, left, bottom, right = _window(p)
    cdef Py_ssize_t groups = p.groups
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C_in = x.shape[3]
    cdef Py_ssize_t C_out = w.shape[0], KH = w.shape[1], KW = w.shape[2], cin_g = w.shape[3]
    if groups < 1 or C_out % groups or cin_g * groups != C_in:
        raise ValueError(f"groups = {groups} does not fit input channels {C_in}, output channels "
                         f"{C_out} and weights {(w.shape[0], w.shape[1], w.shape[2], w.shape[3])}")
    cdef Py_ssize_t OH, OW, ms
    OH, OW, ms = _geometry(p, mult, shift, (N, H, W), (KH, KW), C_out, bias.shape[0],
                           (y.shape[0], y.shape[1], y.shape[2], y.shape[3]))
    cdef int32_t zp_x = p.input_zero_point
    cdef int32_t zp_y = r.zero_point, lo = r.lo, hi = r.hi
    if N == 0 or OH == 0 or OW == 0 or C_out == 0:
        return None

    cdef Py_ssize_t cout_g = C_out // groups
    cdef Py_ssize_t K = KH * KW * cin_g  # reduction length, one weight row
    cdef Py_ssize_t row = KW * cin_g
    cdef int16_t* patch = <int16_t*>malloc((K if K > 0 else 1) * sizeof(int16_t))
    if patch == NULL:
        raise MemoryError()
    cdef const int8_t* xb = &x[0, 0, 0, 0]
    cdef const int8_t* wb = &w[0, 0, 0, 0]
    cdef const int32_t* bb = &bias[0]
    cdef const int32_t* mb = &mult[0]
    cdef const int32_t* nb = &shift[0]
    cdef int8_t* yp = &y[0, 0, 0, 0]
    cdef const int8_t* xs
    cdef int16_t* pp
    cdef Py_ssize_t n, oh, ow, g, kh, kw, i, j, c, c_end, ih, iw, ih0, iw0
    cdef int32_t acc
    cdef int32_t acc4[4]
    try:
        with nogil:
            for n in range(N):
                for oh in range(OH):
                    ih0 = oh * sh - top
                    for ow in range(OW):
                        iw0 = ow * sw - left
                        for g in range(groups):
                            # Gather the window of group g as (x - zp_x), 0 in the padding.
                            pp = patch
                            for kh in range(KH):
                                ih = ih0 + kh * dh
                                if ih < 0 or ih >= H:
                                    memset(pp, 0, row * sizeof(int16_t))
                                    pp += row
                                    continue
                                for kw in range(KW):
                                    iw = iw0 + kw * dw
                                    if iw < 0 or iw >= W:
                                        memset(pp, 0, cin_g * sizeof(int16_t))
                                    else:
                                        xs = xb + ((n * H + ih) * W + iw) * C_in + g * cin_g
                                        for i in range(cin_g):
                                            pp[i] = <int16_t>(xs[i] - zp_x)
                                    pp += cin_g
                            c = g * cout_g
                            c_end = c + cout_g
                            while c + 4 <= c_end:
                                dot4_s16_s8(patch, wb + c * K, K, K, acc4)
                                for j in range(4):
                                    yp[c + j] = requantize_one(bb[c + j] + acc4[j], mb[(c + j) * ms],
                                                               nb[(c + j) * ms], zp_y, lo, hi)
                                c += 4
                            while c < c_end:
                                acc = bb[c] + dot_s16_s8(patch, wb + c * K, K)
                                yp[c] = requantize_one(acc, mb[c * ms], nb[c * ms], zp_y, lo, hi)
                                c += 1
                        yp += C_out
    finally:
        free(patch)
    return None


def depthwise_conv_2d(ins, p, out):
    """DEPTHWISE_CONV_2D: ins = [x [N,H,W,C], w [1,KH,KW,C*M], bias [C*M]], p ConvParams with
    p.groups the depth multiplier M; output channel c*M + j reads input channel c."""
    _check_inputs(ins)
    cdef const int8_t[:, :, :, ::1] x = ins[0]
    cdef const int8_t[:, :, :, ::1] w = ins[1]
    cdef const int32_t[::1] bias = ins[2]
    cdef int8_t[:, :, :, ::1] y = out
    r = p.out
    cdef const int32_t[::1] mult = r.multiplier
    cdef const int32_t[::1] shift = r.shift

    cdef Py_ssize_t sh, sw, dh, dw, top, left, bottom, right
    sh, sw, dh, dw, top, left, bottom, right = _window(p)
    cdef Py_ssize_t M = p.groups
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t KH = w.shape[1], KW = w.shape[2], C_out = w.shape[3]
    if M < 1:
        raise ValueError(f"depth multiplier {M} must be >= 1")
    if w.shape[0] != 1 or C_out != C * M:
        raise ValueError(f"weights have shape {(w.shape[0], w.shape[1], w.shape[2], w.shape[3])}; "
                         f"expected (1, KH, KW, {C * M}) for {C} input channels and depth "
                         f"multiplier {M}")
    cdef Py_ssize_t OH, OW, ms
    OH, OW, ms = _geometry(p, mult, shift, (N, H, W), (KH, KW), C_out, bias.shape[0],
                           (y.shape[0], y.shape[1], y.shape[2], y.shape[3]))
    cdef int32_t zp_x = p.input_zero_point
    cdef int32_t zp_y = r.zero_point, lo = r.lo, hi = r.hi
    if N == 0 or OH == 0 or OW == 0 or C_out == 0:
        return None

    cdef int32_t* acc = <int32_t*>malloc(C_out * sizeof(int32_t))
    if acc == NULL:
        raise MemoryError()
    cdef const int8_t* xb = &x[0, 0, 0, 0]
    cdef const int8_t* wb = &w[0, 0, 0, 0]
    cdef const int32_t* bb = &bias[0]
    cdef const int32_t* mb = &mult[0]
    cdef const int32_t* nb = &shift[0]
    cdef int8_t* yp = &y[0, 0, 0, 0]
    cdef const int8_t* xs
    cdef const int8_t* ws
    cdef Py_ssize_t n, oh, ow, kh, kw, c, j, ih, iw, ih0, iw0
    cdef int32_t xv
    try:
        with nogil:
            for n in range(N):
                for oh in range(OH):
                    ih0 = oh * sh - top
                    for ow in range(OW):
                        iw0 = ow * sw - left
                        for c in range(C_out):
                            acc[c] = bb[c]
                        for kh in range(KH):
                            ih = ih0 + kh * dh
                            if ih < 0 or ih >= H:
                                continue  # padding: x = zp_x contributes 0
                            for kw in range(KW):
                                iw = iw0 + kw * dw
                                if iw < 0 or iw >= W:
                                    continue
                                xs = xb + ((n * H + ih) * W + iw) * C
                                ws = wb + (kh * KW + kw) * C_out
                                if M == 1:
                                    for c in range(C):
                                        acc[c] += (<int32_t>xs[c] - zp_x) * <int32_t>ws[c]
                                else:
                                    for c in range(C):
                                        xv = <int32_t>xs[c] - zp_x
                                        for j in range(M):
                                            acc[c * M + j] += xv * <int32_t>ws[c * M + j]
                        for c in range(C_out):
                            yp[c] = requantize_one(acc[c], mb[c * ms], nb[c * ms], zp_y, lo, hi)
                        yp += C_out
    finally:
        free(acc)
    return None
