"""Window arithmetic of the windowed ops (CONV_2D, DEPTHWISE_CONV_2D, the pools; SPEC.md
section 2.13), once: the verifier, the references, the compiled kernels' bind-time checks, the
lowering and the float executor all use these."""
from __future__ import annotations

import numpy as np


def out_size(size: int, pad_a: int, pad_b: int, k: int, dilation: int = 1, stride: int = 1) -> int:
    """floor((size + pads - d*(k-1) - 1) / stride) + 1; 0 when no window fits."""
    span = size + pad_a + pad_b - dilation * (k - 1) - 1
    return 0 if span < 0 else span // stride + 1


def windows(x: np.ndarray, kernel, stride, dilation, pads, fill) -> np.ndarray:
    """[N, OH, OW, KH, KW, C] read-only view of every window of x [N, H, W, C] padded with `fill`
    (pads: top, left, bottom, right)."""
    top, left, bottom, right = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    n, hp, wp, c = xp.shape
    kh, kw = kernel
    (sh, sw), (dh, dw) = stride, dilation
    oh, ow = out_size(hp, 0, 0, kh, dh, sh), out_size(wp, 0, 0, kw, dw, sw)
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (n, oh, ow, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]), writeable=False)


def check_window(c, o):
    """Strides and dilations >= 1, pads >= 0 (c: a qrt.ops.base.Check; o: conv options)."""
    c.positive(o, "stride_h", "stride_w", "dilation_h", "dilation_w")
    c.non_negative(o, "pad_top", "pad_left", "pad_bottom", "pad_right")


def check_spatial_output(c, x, y, o, kh, kw, dh, dw, channels):
    """y's shape must be [N, OH, OW, channels] of the window arithmetic over x [N, H, W, C]."""
    n, h, w = x.shape[:3]
    oh = out_size(h, o.pad_top, o.pad_bottom, kh, dh, o.stride_h)
    ow = out_size(w, o.pad_left, o.pad_right, kw, dw, o.stride_w)
    if oh < 1 or ow < 1:
        c.fail(f"the window ({kh}x{kw}, dilation {dh}x{dw}) is larger than the padded input {x.shape}")
    expect = (n, oh, ow, channels)
    if y.shape != expect:
        c.fail(f"output {c.label(y)} has shape {y.shape}; the window arithmetic gives {expect}")
