"""ONNX Resize's sampling, shared by the float executor (float_exec._resize) and the lowering
(lower.lower_Resize), so that a quantized model reads the very pixels its float run reads.

Coordinates follow ONNX Runtime's CPU kernel to the bit: float32 arithmetic in its order, the
scale as given or float32(out) / float32(in) from sizes; linear clamps the source coordinate to
[0, in - 1] and blends its two neighbours; nearest rounds it by nearest_mode, then clamps.
resize_tables turns one axis' sampling into RESIZE's integer tables (SPEC.md 2.13.27)."""
from __future__ import annotations

import numpy as np

F32 = np.float32
COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric",
                    "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def source_coordinates(n_in: int, n_out: int, scale: float, ctm: str) -> np.ndarray:
    """x_original (float32) of every output index along one axis."""
    o, s = np.arange(n_out, dtype=F32), F32(scale)
    half = F32(0.5)
    with np.errstate(all="ignore"):
        if ctm == "half_pixel":
            return (o + half) / s - half
        if ctm == "pytorch_half_pixel":
            return (o + half) / s - half if n_out > 1 else np.zeros(n_out, F32)
        if ctm == "align_corners":
            return o * F32(n_in - 1) / F32(n_out - 1) if n_out > 1 else np.zeros(n_out, F32)
        if ctm == "asymmetric":
            return o / s
        if ctm == "tf_half_pixel_for_nn":
            return (o + half) / s
        if ctm == "half_pixel_symmetric":  # ORT: the offset in float32, the rest in double (0.5, not 0.5f)
            adjustment = F32(n_out) / (s * F32(n_in))
            offset = F32(n_in) / F32(2) * (F32(1) - adjustment)
            return (np.float64(offset) + (o.astype(np.float64) + 0.5) / np.float64(s) - 0.5).astype(F32)
    raise ValueError(f"Resize coordinate_transformation_mode {ctm!r} not supported")


def nearest_indices(src: np.ndarray, n_in: int, nearest_mode: str) -> np.ndarray:
    floor = np.floor(src)
    if nearest_mode == "round_prefer_floor":  # std::round (ties away from 0), but floor on ties
        idx = np.where(src == floor + F32(0.5), floor, np.sign(src) * np.floor(np.abs(src) + F32(0.5)))
    elif nearest_mode == "round_prefer_ceil":
        idx = np.where(src == floor + F32(0.5), floor + 1, np.sign(src) * np.floor(np.abs(src) + F32(0.5)))
    elif nearest_mode == "floor":
        idx = floor
    elif nearest_mode == "ceil":
        idx = np.ceil(src)
    else:
        raise ValueError(f"Resize nearest_mode {nearest_mode!r} not supported")
    return np.clip(idx, 0, n_in - 1).astype(np.int64)


def linear_taps(src: np.ndarray, n_in: int) -> tuple:
    """(lower index, upper index, float32 weight of the upper one) per output index."""
    src = np.clip(src, F32(0), F32(n_in - 1))
    lo = np.minimum(src.astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo.astype(F32)).astype(F32)


def axis_scale(n_in: int, n_out: int, scale: float | None) -> float:
    """The float32 scale ONNX Runtime samples with: the given one, or out / in from sizes."""
    return F32(scale) if scale is not None else F32(n_out) / F32(n_in)


def resize_1d(x: np.ndarray, axis: int, n_out: int, scale: float, mode: str, ctm: str, nearest_mode: str):
    """x (float32) resized along one axis."""
    n_in = x.shape[axis]
    if n_in == n_out and scale == 1:
        return x
    src = source_coordinates(n_in, n_out, scale, ctm)
    if mode == "nearest":
        return np.take(x, nearest_indices(src, n_in, nearest_mode), axis=axis)
    lo, hi, w = linear_taps(src, n_in)
    w = w.reshape([-1 if i == axis else 1 for i in range(x.ndim)])
    return np.take(x, lo, axis=axis) * (F32(1) - w) + np.take(x, hi, axis=axis) * w


def resize_tables(n_in: int, n_out: int, scale: float, mode: str, ctm: str, nearest_mode: str, frac_bits: int):
    """(indices [n_out, K], weights [n_out, K]) int32 of one axis for RESIZE: nearest one tap of
    weight 2^F, linear two whose weights round the float32 ones to multiples of 2^-F and sum to
    2^F (so that the blend stays between its neighbours)."""
    one = 1 << frac_bits
    if n_in == n_out and scale == 1:
        return np.arange(n_out, dtype=np.int32)[:, None], np.full((n_out, 1), one, np.int32)
    src = source_coordinates(n_in, n_out, scale, ctm)
    if mode == "nearest":
        return nearest_indices(src, n_in, nearest_mode).astype(np.int32)[:, None], np.full((n_out, 1), one, np.int32)
    lo, hi, w = linear_taps(src, n_in)
    upper = np.floor(w.astype(np.float64) * one + 0.5).astype(np.int64)
    return (np.stack([lo, hi], axis=1).astype(np.int32),
            np.stack([one - upper, upper], axis=1).astype(np.int32))
