"""Checks the compiled conv-like kernels run once, when a step is bound (never per run):
window arithmetic of SPEC.md 2.13, kernel, bias and output shapes, zero points, and the params
of the float-activation forms (qrt/ops/hybrid.py)."""
from __future__ import annotations

from qrt.ops.window import out_size


def window(p) -> tuple:
    """(sh, sw, dh, dw, top, left, bottom, right) of ConvParams or PoolParams, validated."""
    sh, sw = p.stride
    dh, dw = getattr(p, "dilation", (1, 1))
    top, left, bottom, right = p.pads
    if sh < 1 or sw < 1 or dh < 1 or dw < 1:
        raise ValueError(f"stride {tuple(p.stride)} and dilation {(dh, dw)} must be >= 1")
    if top < 0 or left < 0 or bottom < 0 or right < 0:
        raise ValueError(f"pads {tuple(p.pads)} must be >= 0")
    return sh, sw, dh, dw, top, left, bottom, right


def check_inputs(ins, names=("x", "w", "bias")):
    if len(ins) < len(names):
        raise ValueError(f"expected inputs [{', '.join(names)}], got {len(ins)}")


def conv_output(p, nhw: tuple, kernel: tuple, c_out: int, bias_len: int, y_shape: tuple) -> tuple:
    """Check kernel size, bias length, output shape and input zero point; return (OH, OW)."""
    n, h, w = nhw
    kh, kw = kernel
    sh, sw, dh, dw, top, left, bottom, right = window(p)
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel {kh}x{kw} must be at least 1x1")
    if bias_len != c_out:
        raise ValueError(f"bias has {bias_len} entries; expected {c_out}")
    oh, ow = out_size(h, top, bottom, kh, dh, sh), out_size(w, left, right, kw, dw, sw)
    expect = (n, oh, ow, c_out)
    if tuple(y_shape) != expect:
        raise ValueError(f"output has shape {tuple(y_shape)}; the window arithmetic gives {expect}")
    if not (-128 <= p.input_zero_point <= 127):
        raise ValueError(f"input zero point {p.input_zero_point} must lie in [-128, 127]")
    return oh, ow


def hybrid(p, form: str) -> tuple:
    """(HybridParams, QuantizedWeights) of FULLY_CONNECTED's params, or of CONV_2D's
    HybridConvParams, of the form `form` (qrt/ops/base.py WEIGHT_ONLY, DYNAMIC): ValueError for
    params of another form or without quantized weights."""
    h = getattr(p, "hybrid", p)
    qw = getattr(h, "weights", None)
    if getattr(h, "form", None) != form or qw is None or not hasattr(h, "bounds"):
        raise ValueError(f"params must be the {form} form's (HybridParams with quantized weights), "
                         f"not {getattr(h, 'form', None) or type(h).__name__}'s")
    return h, qw


def hybrid_window(p):
    """The window (ConvParams) of CONV_2D's HybridConvParams: ValueError for other params."""
    win = getattr(p, "window", None)
    if win is None:
        raise ValueError(f"params must be CONV_2D's (HybridConvParams), not {type(p).__name__}")
    return win
