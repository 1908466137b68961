"""The float reference executor of the IR (converters/ir.py), in NumPy.

    run_graph(graph, feeds, outputs=None, observe=None) -> {name: array}

runs every node in order with ONNX semantics (opset 13+) and float32 math, like ONNX Runtime;
shape math is int64. It is what calibration streams samples through (`observe(name, array)`
sees every computed value, graph inputs included) and what the quantized model is compared
against. Memory stays bounded: a value is freed as soon as its last reader ran, unless it
was asked for.

    OPS            op type -> function(node, inputs, graph) -> list of outputs
    SUPPORTED_OPS  the op types OPS implements (the ONNX reader rejects every other one)

An input the node does not have ("" in node.inputs) reaches the function as None.

LSTM and GRU follow ONNX Runtime where it departs from the ONNX text (see the comment above
_lstm). One extension for calibration: an LSTM node with a 4th output gets there the sequence of
cell states (every step's c_t) in Y's layout, [T, num_directions, B, H] ([B, T, num_directions, H]
with layout 1), 0 at the steps past an entry's sequence length.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from qrt.ops.window import out_size

from . import resampling
from .errors import ConversionError, UnsupportedOpsError

F32 = np.float32
I64 = np.int64


# --------------------------------------------------------------------------- helpers

def _f32(a):
    a = np.asarray(a)
    return a if a.dtype == F32 else a.astype(F32)


def _like(result, ref):
    """Keep float math float32 and integer math int64 (NumPy promotes Python scalars)."""
    result = np.asarray(result)
    if np.issubdtype(ref.dtype, np.floating):
        return result.astype(F32, copy=False)
    return result


def _float_dtype_of(a):
    a = np.asarray(a)
    if a.dtype == np.bool_:
        return a
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(F32, copy=False)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(I64, copy=False)
    return a


def _ints(a):
    return [int(v) for v in np.asarray(a).reshape(-1)]


def _axis(axis, rank):
    axis = int(axis)
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _opt(inputs, i):
    return inputs[i] if len(inputs) > i else None


def _axes_of(node, inputs, index=1):
    """Axes given as an input (newer opsets) or as an attribute (older ones); None if neither."""
    a = _opt(inputs, index)
    if a is not None:
        return _ints(a)
    if "axes" in node.attrs:
        return _ints(node.attrs["axes"])
    return None


# --------------------------------------------------------------------------- elementwise

def _binary(fn):
    def op(node, inputs, graph):
        a, b = inputs
        return [_like(fn(a, b), a)]
    return op


def _div(a, b):
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        q = np.abs(a) // np.abs(b)  # ONNX integer division truncates toward zero
        return np.where((a < 0) != (b < 0), -q, q).astype(a.dtype)
    return np.divide(a, b, dtype=F32) if a.dtype == F32 else a / b


def _pow(node, inputs, graph):
    x, y = inputs
    if np.issubdtype(x.dtype, np.floating):
        y = np.asarray(y)
        if y.size == 1 and float(y.reshape(-1)[0]) == 2.0:
            return [np.square(x)]
        if y.size == 1 and float(y.reshape(-1)[0]) == 0.5:
            return [np.sqrt(x)]
        return [np.power(x, y.astype(F32)).astype(F32, copy=False)]
    return [np.power(x, y).astype(x.dtype)]


def _unary(fn):
    def op(node, inputs, graph):
        return [_like(fn(inputs[0]), inputs[0])]
    return op


def _float_unary(fn):
    def op(node, inputs, graph):
        return [fn(_f32(inputs[0])).astype(F32, copy=False)]
    return op


def _sigmoid(x):
    x = _f32(x)
    # exp of -|x| never overflows; both branches are exact sigmoid
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(F32)


def _erf(x):
    """erf in float64 (Abramowitz & Stegun 7.1.26 refined; |error| < 1.2e-7), as float32.
    NumPy has no erf and the runtime must not need SciPy."""
    x = np.asarray(x, dtype=np.float64)
    s = np.sign(x)
    a = np.abs(x)
    # Numerical Recipes erfc (Chebyshev fit, fractional error < 1.2e-7 everywhere)
    t = 1.0 / (1.0 + 0.5 * a)
    y = t * np.exp(-a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277)))))))))
    return (s * (1.0 - y)).astype(F32)


def _relu(node, inputs, graph):
    return [np.maximum(inputs[0], 0).astype(inputs[0].dtype, copy=False)]


def _clip(node, inputs, graph):
    x = inputs[0]
    lo = _opt(inputs, 1)
    hi = _opt(inputs, 2)
    if lo is None and "min" in node.attrs:
        lo = node.attrs["min"]
    if hi is None and "max" in node.attrs:
        hi = node.attrs["max"]
    if lo is None and hi is None:
        return [x.copy()]
    y = np.maximum(x, np.asarray(lo).astype(x.dtype)) if lo is not None else x.copy()
    if hi is not None:
        np.minimum(y, np.asarray(hi).astype(x.dtype), out=y)
    return [y]


def _leaky_relu(node, inputs, graph):
    x = _f32(inputs[0])
    alpha = F32(node.attrs.get("alpha", 0.01))
    return [np.where(x >= 0, x, x * alpha).astype(F32)]


def _prelu(node, inputs, graph):
    x, slope = _f32(inputs[0]), _f32(inputs[1])
    return [np.where(x >= 0, x, x * slope).astype(F32)]


def _elu(node, inputs, graph):
    x = _f32(inputs[0])
    alpha = F32(node.attrs.get("alpha", 1.0))
    return [np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(F32)]


def _hard_sigmoid(node, inputs, graph):
    x = _f32(inputs[0])
    alpha = F32(node.attrs.get("alpha", 0.2))
    beta = F32(node.attrs.get("beta", 0.5))
    return [np.clip(x * alpha + beta, 0, 1).astype(F32)]


def _hard_swish(node, inputs, graph):
    x = _f32(inputs[0])
    return [(x * np.clip(x * F32(1 / 6) + F32(0.5), 0, 1)).astype(F32)]


def _gelu(node, inputs, graph):
    x = _f32(inputs[0])
    if node.attrs.get("approximate", "none") == "tanh":
        inner = F32(math.sqrt(2 / math.pi)) * (x + F32(0.044715) * x * x * x)
        return [(F32(0.5) * x * (1 + np.tanh(inner))).astype(F32)]
    return [(F32(0.5) * x * (1 + _erf(x * F32(1 / math.sqrt(2))))).astype(F32)]


def _softplus(x):
    x = _f32(x)
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(F32)


def _softmax(node, inputs, graph):
    x = _f32(inputs[0])
    axis = _axis(node.attrs.get("axis", -1), x.ndim)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [(e / e.sum(axis=axis, keepdims=True)).astype(F32)]


def _log_softmax(node, inputs, graph):
    x = _f32(inputs[0])
    axis = _axis(node.attrs.get("axis", -1), x.ndim)
    s = x - x.max(axis=axis, keepdims=True)
    return [(s - np.log(np.exp(s).sum(axis=axis, keepdims=True))).astype(F32)]


def _variadic(fn):
    def op(node, inputs, graph):
        out = inputs[0]
        for other in inputs[1:]:
            out = fn(out, other)
        return [np.array(_like(out, inputs[0]), copy=True)]
    return op


def _where(node, inputs, graph):
    c, a, b = inputs
    return [np.where(c.astype(bool), a, b)]


def _compare(fn):
    def op(node, inputs, graph):
        return [np.asarray(fn(inputs[0], inputs[1]), dtype=np.bool_)]
    return op


# --------------------------------------------------------------------------- linear algebra

def _gemm(node, inputs, graph):
    a, b = _f32(inputs[0]), _f32(inputs[1])
    c = _opt(inputs, 2)
    if node.attrs.get("transA", 0):
        a = a.T
    if node.attrs.get("transB", 0):
        b = b.T
    alpha = F32(node.attrs.get("alpha", 1.0))
    beta = F32(node.attrs.get("beta", 1.0))
    y = a @ b
    if alpha != 1:
        y *= alpha
    if c is not None:
        y = y + (_f32(c) * beta if beta != 1 else _f32(c))
    return [y.astype(F32, copy=False)]


def _matmul(node, inputs, graph):
    return [np.matmul(_f32(inputs[0]), _f32(inputs[1]))]


# --------------------------------------------------------------------------- conv and pooling

def _spatial_params(node, x_spatial, kernel, ceil_mode=False):
    """strides, dilations, begin pads, end pads and output sizes of Conv / pooling, with
    auto_pad and ceil_mode resolved (ONNX rules; a ceil_mode window that would start in the end
    padding is dropped, as ONNX Runtime and PyTorch do)."""
    n = len(x_spatial)
    strides = _ints(node.attrs.get("strides", [1] * n))
    dil = _ints(node.attrs.get("dilations", [1] * n))
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(x_spatial, strides)]
        total = [max((o - 1) * s + e - i, 0) for o, s, e, i in zip(out, strides, eff, x_spatial)]
        if auto_pad == "SAME_UPPER":
            pb = [t // 2 for t in total]
        else:
            pb = [t - t // 2 for t in total]
        pe = [t - b for t, b in zip(total, pb)]
        return strides, dil, pb, pe, out
    if auto_pad == "VALID":
        pb, pe = [0] * n, [0] * n
    elif auto_pad in ("NOTSET", "", None):
        pads = _ints(node.attrs.get("pads", [0] * (2 * n)))
        pb, pe = pads[:n], pads[n:]
    else:
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    out = []
    for i, s, e, b, en, k, d in zip(x_spatial, strides, eff, pb, pe, kernel, dil):
        span = i + b + en - e
        if span < 0:
            raise ValueError(f"kernel (extent {e}) larger than padded input ({i + b + en})")
        if ceil_mode:
            o = -(-span // s) + 1
            if (o - 1) * s >= i + b:
                o -= 1
        else:
            o = out_size(i, b, en, k, d, s)  # the runtime's window arithmetic
        out.append(o)
    return strides, dil, pb, pe, out


def _pad_spatial(x, pb, pe, value):
    """Pad the spatial axes (2..) by pb at the start and pe at the end; negative = crop."""
    if not any(pb) and not any(pe):
        return x
    width = [(0, 0), (0, 0)] + [(max(b, 0), max(e, 0)) for b, e in zip(pb, pe)]
    if any(w != (0, 0) for w in width):
        x = np.pad(x, width, mode="constant", constant_values=value)
    if any(b < 0 for b in pb) or any(e < 0 for e in pe):
        sl = [slice(None), slice(None)] + [slice(-min(b, 0), x.shape[i + 2] + min(e, 0))
                                           for i, (b, e) in enumerate(zip(pb, pe))]
        x = x[tuple(sl)]
    return x


def _window_slices(kernel, dil, strides, out):
    """For each kernel offset, the strided slices of the padded input it reads."""
    for offs in itertools.product(*[range(k) for k in kernel]):
        yield offs, tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                          for o, d, s, n in zip(offs, dil, strides, out))


def _conv(node, inputs, graph):
    x, w = _f32(inputs[0]), _f32(inputs[1])
    b = _opt(inputs, 2)
    group = int(node.attrs.get("group", 1))
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    kernel = list(w.shape[2:])
    if "kernel_shape" in node.attrs and _ints(node.attrs["kernel_shape"]) != kernel:
        raise ValueError(f"kernel_shape {node.attrs['kernel_shape']} != weight shape {w.shape}")
    if c != cg * group or m % group:
        raise ValueError(f"input channels {c}, weight {w.shape} and group {group} do not fit")
    strides, dil, pb, pe, out = _spatial_params(node, x.shape[2:], kernel)
    xp = _pad_spatial(x, pb, pe, 0.0)
    nsp = len(kernel)
    if cg == 1 and group > 1:
        # depthwise (with channel multiplier m // group): accumulate over kernel offsets
        mult = m // group
        if mult > 1:
            xp = np.repeat(xp, mult, axis=1)
        y = np.zeros((n, m, *out), dtype=F32)
        wk = w.reshape(m, -1)
        tmp = np.empty_like(y)
        for k, (offs, sl) in enumerate(_window_slices(kernel, dil, strides, out)):
            np.multiply(xp[(slice(None), slice(None)) + sl],
                        wk[:, k].reshape((1, m) + (1,) * nsp), out=tmp)
            y += tmp
    elif all(k == 1 for k in kernel) and all(s == 1 for s in strides):
        xs = xp.reshape(n, group, cg, -1)
        y = np.matmul(w.reshape(group, m // group, cg), xs).reshape(n, m, *out)
    else:
        # im2col: a strided view (N, G, Cg, *K, *O), copied to (N, G, Cg*prod(K), prod(O))
        st = xp.strides
        view = np.lib.stride_tricks.as_strided(
            xp, shape=(n, group, cg, *kernel, *out),
            strides=(st[0], st[1] * cg, st[1], *[st[2 + i] * dil[i] for i in range(nsp)],
                     *[st[2 + i] * strides[i] for i in range(nsp)]),
            writeable=False)
        col = view.reshape(n, group, cg * int(np.prod(kernel)), int(np.prod(out)))
        y = np.matmul(w.reshape(group, m // group, -1), col).reshape(n, m, *out)
    if b is not None:
        y += _f32(b).reshape((1, m) + (1,) * nsp)
    return [y]


def conv_transpose_geometry(node, x_spatial, kernel):
    """strides, dilations, begin pads, end pads and output sizes of a ConvTranspose: ONNX's
    rules (output_shape, or SAME_* without it, sets the total padding; its odd unit goes at the
    end for SAME_UPPER, at the start otherwise)."""
    n = len(x_spatial)
    strides = _ints(node.attrs.get("strides", [1] * n))
    dil = _ints(node.attrs.get("dilations", [1] * n))
    extra = _ints(node.attrs.get("output_padding", [0] * n))
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    full = [s * (i - 1) + o + (k - 1) * d + 1 for i, s, o, k, d in zip(x_spatial, strides, extra, kernel, dil)]
    total = None
    if "output_shape" in node.attrs:  # beyond the full output: zeros at the end (ONNX Runtime)
        total = [f - w for f, w in zip(full, _ints(node.attrs["output_shape"])[-n:])]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):  # x * stride, or the full output if shorter
        total = [max(f - i * s, 0) for f, i, s in zip(full, x_spatial, strides)]
    if total is not None:
        if auto_pad == "SAME_UPPER":
            pb = [max(t // 2, 0) for t in total]
        else:
            pb = [max(t - t // 2, 0) for t in total]
        pe = [t - b for t, b in zip(total, pb)]
    elif auto_pad in ("NOTSET", "", "VALID", None):
        pads = [0] * (2 * n) if auto_pad == "VALID" else _ints(node.attrs.get("pads", [0] * (2 * n)))
        pb, pe = pads[:n], pads[n:]
    else:
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    out = [f - b - e for f, b, e in zip(full, pb, pe)]
    if min(out) < 1 or min(pb) < 0:
        raise ValueError(f"ConvTranspose pads {pb + pe} leave no output of {full}")
    return strides, dil, pb, pe, out


def _conv_transpose(node, inputs, graph):
    """ONNX ConvTranspose: each input position scatters x * w over the kernel's window of the
    (stride-spaced) full output, which the pads then crop."""
    x, w = _f32(inputs[0]), _f32(inputs[1])
    b = _opt(inputs, 2)
    group = int(node.attrs.get("group", 1))
    n, c = x.shape[:2]
    kernel = list(w.shape[2:])
    if w.shape[0] != c or c % group:
        raise ValueError(f"input channels {c}, weight {w.shape} and group {group} do not fit")
    mg = w.shape[1]
    strides, dil, pb, pe, out = conv_transpose_geometry(node, x.shape[2:], kernel)
    full = [o + p + max(e, 0) for o, p, e in zip(out, pb, pe)]
    nsp = len(kernel)
    y = np.zeros((n, group, mg, *full), F32)
    xg = x.reshape(n, group, c // group, -1)
    wg = w.reshape(group, c // group, mg, -1)
    for k, offs in enumerate(itertools.product(*[range(kk) for kk in kernel])):
        part = np.einsum("ngcp,gcm->ngmp", xg, wg[..., k]).reshape(n, group, mg, *x.shape[2:])
        sl = tuple(slice(o * d, o * d + (i - 1) * s + 1, s) for o, d, s, i in zip(offs, dil, strides, x.shape[2:]))
        y[(slice(None), slice(None), slice(None)) + sl] += part
    y = y.reshape(n, group * mg, *full)[(slice(None), slice(None)) +
                                        tuple(slice(p, p + o) for p, o in zip(pb, out))]
    if b is not None:
        y = y + _f32(b).reshape((1, group * mg) + (1,) * nsp)
    return [np.ascontiguousarray(y)]


def _pool(kind):
    def op(node, inputs, graph):
        x = _f32(inputs[0])
        kernel = _ints(node.attrs["kernel_shape"])
        ceil_mode = bool(node.attrs.get("ceil_mode", 0))
        strides, dil, pb, pe, out = _spatial_params(node, x.shape[2:], kernel, ceil_mode)
        # extra end padding so every (ceil_mode) window fits
        need = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out, strides, kernel, dil)]
        extra = [max(nd - (i + b + e), 0) for nd, i, b, e in zip(need, x.shape[2:], pb, pe)]
        pe2 = [e + ex for e, ex in zip(pe, extra)]
        if kind == "max":
            xp = _pad_spatial(x, pb, pe2, -np.inf)
            y = None
            for offs, sl in _window_slices(kernel, dil, strides, out):
                v = xp[(slice(None), slice(None)) + sl]
                y = v.copy() if y is None else np.maximum(y, v, out=y)
            return [y]
        xp = _pad_spatial(x, pb, pe2, 0.0)
        y = None
        for offs, sl in _window_slices(kernel, dil, strides, out):
            v = xp[(slice(None), slice(None)) + sl]
            y = v.copy() if y is None else np.add(y, v, out=y)
        # divisor: the window's elements inside the input, plus the explicit pads when
        # count_include_pad (never the ceil_mode extension)
        spatial = x.shape[2:]
        ones = np.ones((1, 1, *spatial), dtype=F32)
        if node.attrs.get("count_include_pad", 0):
            ones = _pad_spatial(ones, pb, pe, 1.0)
            ones = _pad_spatial(ones, [0] * len(pb), extra, 0.0)
        else:
            ones = _pad_spatial(ones, pb, pe2, 0.0)
        cnt = None
        for offs, sl in _window_slices(kernel, dil, strides, out):
            v = ones[(slice(None), slice(None)) + sl]
            cnt = v.copy() if cnt is None else cnt + v
        return [(y / np.maximum(cnt, 1)).astype(F32)]
    return op


def _global_pool(fn):
    def op(node, inputs, graph):
        x = _f32(inputs[0])
        return [fn(x, axis=tuple(range(2, x.ndim)), keepdims=True).astype(F32)]
    return op


def _batch_norm(node, inputs, graph):
    x, scale, bias, mean, var = (_f32(a) for a in inputs[:5])
    eps = F32(node.attrs.get("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    a = (scale / np.sqrt(var + eps)).astype(F32)
    return [(x * a.reshape(shape) + (bias - mean * a).reshape(shape)).astype(F32)]


def _layer_norm(node, inputs, graph):
    x = _f32(inputs[0])
    scale = _f32(inputs[1])
    b = _opt(inputs, 2)
    axis = _axis(node.attrs.get("axis", -1), x.ndim)
    eps = F32(node.attrs.get("epsilon", 1e-5))
    axes = tuple(range(axis, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    d = x - mean
    var = (d * d).mean(axis=axes, keepdims=True)
    inv = (1 / np.sqrt(var + eps)).astype(F32)
    y = d * inv * scale
    if b is not None:
        y = y + _f32(b)
    return [y.astype(F32), mean.astype(F32), inv]


def _rms_norm(node, inputs, graph):
    """ONNX RMSNormalization (opset 23): x / sqrt(mean(x^2) + eps) * scale over axis.. end."""
    x = _f32(inputs[0])
    axes = tuple(range(_axis(node.attrs.get("axis", -1), x.ndim), x.ndim))
    inv = (1 / np.sqrt((x * x).mean(axis=axes, keepdims=True) + F32(node.attrs.get("epsilon", 1e-5)))).astype(F32)
    return [(x * inv * _f32(inputs[1])).astype(F32)]


def _reduce(fn):
    def op(node, inputs, graph):
        x = inputs[0]
        axes = _axes_of(node, inputs)
        keep = bool(node.attrs.get("keepdims", 1))
        if not axes:  # noop_with_empty_axes: reduce nothing (ReduceL2 is |x|, ReduceSumSquare x^2)
            axes = [] if node.attrs.get("noop_with_empty_axes", 0) else list(range(x.ndim))
        axes = tuple(sorted(_axis(a, x.ndim) for a in axes))
        return [_like(fn(x, axis=axes, keepdims=keep), x)]
    return op


# --------------------------------------------------------------------------- data movement

def _concat(node, inputs, graph):
    arrays = [a for a in inputs if a is not None]
    axis = _axis(node.attrs["axis"], arrays[0].ndim)
    if arrays[0].dtype.kind == "f":
        arrays = [_f32(a) for a in arrays]
    return [np.concatenate(arrays, axis=axis)]


def _reshape(node, inputs, graph):
    x, shape = inputs[0], _ints(inputs[1])
    allowzero = node.attrs.get("allowzero", 0)
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape).copy()]


def _flatten(node, inputs, graph):
    x = inputs[0]
    axis = int(node.attrs.get("axis", 1))
    if axis < 0:
        axis += x.ndim
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    return [x.reshape(lead, -1).copy() if x.size else x.reshape(lead, int(np.prod(x.shape[axis:])))]


def _transpose(node, inputs, graph):
    x = inputs[0]
    perm = node.attrs.get("perm")
    perm = _ints(perm) if perm is not None else list(range(x.ndim))[::-1]
    return [np.ascontiguousarray(np.transpose(x, perm))]


def _squeeze(node, inputs, graph):
    x = inputs[0]
    axes = _axes_of(node, inputs)
    if axes is None:
        return [x.reshape([d for d in x.shape if d != 1]).copy()]
    axes = sorted(_axis(a, x.ndim) for a in axes)
    for a in axes:
        if x.shape[a] != 1:
            raise ValueError(f"cannot squeeze axis {a} of shape {x.shape}")
    return [x.reshape([d for i, d in enumerate(x.shape) if i not in axes]).copy()]


def _unsqueeze(node, inputs, graph):
    x = inputs[0]
    axes = _axes_of(node, inputs)
    rank = x.ndim + len(axes)
    axes = sorted(_axis(a, rank) for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return [x.reshape(shape).copy()]


def _pad(node, inputs, graph):
    x = inputs[0]
    pads = _opt(inputs, 1)
    pads = _ints(pads) if pads is not None else _ints(node.attrs.get("pads", []))
    value = _opt(inputs, 2)
    value = float(np.asarray(value).reshape(-1)[0]) if value is not None and np.asarray(value).size else \
        float(node.attrs.get("value", 0.0))
    axes = _opt(inputs, 3)
    r = x.ndim
    axes = list(range(r)) if axes is None else [_axis(a, r) for a in _ints(axes)]
    k = len(axes)
    begin, end = [0] * r, [0] * r
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[i + k]
    mode = node.attrs.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    width = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    if mode == "constant":
        y = np.pad(x, width, mode="constant", constant_values=np.asarray(value).astype(x.dtype))
    elif mode in ("reflect", "edge", "wrap"):
        y = np.pad(x, width, mode=mode)
    else:
        raise ValueError(f"Pad mode {mode!r} not supported")
    if any(b < 0 for b in begin) or any(e < 0 for e in end):
        y = y[tuple(slice(-min(b, 0), y.shape[i] + min(e, 0)) for i, (b, e) in enumerate(zip(begin, end)))]
    return [np.ascontiguousarray(y)]


def _identity(node, inputs, graph):
    return [inputs[0]]


def _dropout(node, inputs, graph):
    x = inputs[0]
    outs = [x]
    if len(node.outputs) > 1:
        outs.append(np.ones(x.shape, dtype=np.bool_))
    return outs


def _constant(node, inputs, graph):
    a = node.attrs
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in a:
            return [_float_dtype_of(np.asarray(a[key], dtype=F32 if "float" in key else None))]
    raise ValueError(f"Constant without a supported value attribute ({sorted(a)})")


def _shape(node, inputs, graph):
    shape = np.array(inputs[0].shape, dtype=I64)
    start = node.attrs.get("start", 0)
    end = node.attrs.get("end", None)
    return [shape[start:end].copy()]


def _size(node, inputs, graph):
    return [np.array(inputs[0].size, dtype=I64)]


def _gather(node, inputs, graph):
    x, idx = inputs
    axis = _axis(node.attrs.get("axis", 0), x.ndim)
    idx = np.asarray(idx).astype(I64)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return [np.take(x, idx, axis=axis)]


def _slice(node, inputs, graph):
    x = inputs[0]
    if len(inputs) > 1 and inputs[1] is not None:
        starts, ends = _ints(inputs[1]), _ints(inputs[2])
        axes = _opt(inputs, 3)
        steps = _opt(inputs, 4)
        axes = _ints(axes) if axes is not None else list(range(len(starts)))
        steps = _ints(steps) if steps is not None else [1] * len(starts)
    else:  # opset < 10 attributes
        starts, ends = _ints(node.attrs["starts"]), _ints(node.attrs["ends"])
        axes = _ints(node.attrs.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = _axis(a, x.ndim)
        dim = x.shape[a]
        if st == 0:
            raise ValueError("Slice step 0")
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
            sl[a] = slice(s, e, st)
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
            sl[a] = slice(s, None if e < 0 else e, st)
    return [np.ascontiguousarray(x[tuple(sl)])]


# TensorProto data types -> the executor's dtype (all floats float32, all ints int64)
_FLOAT_TYPES = {1, 10, 11, 16}
_INT_TYPES = {2, 3, 4, 5, 6, 7, 12, 13}


def _cast_to(x, to):
    to = int(to)
    if to in _FLOAT_TYPES:
        return np.asarray(x).astype(F32)
    if to in _INT_TYPES:
        x = np.asarray(x)
        if x.dtype.kind == "f":
            x = np.trunc(x)
        return x.astype(I64)
    if to == 9:
        return np.asarray(x).astype(np.bool_)
    raise ValueError(f"Cast to TensorProto type {to} not supported")


def _cast(node, inputs, graph):
    return [_cast_to(inputs[0], node.attrs["to"])]


def _cast_like(node, inputs, graph):
    target = inputs[1].dtype
    return [inputs[0].astype(target)]


def _expand(node, inputs, graph):
    x, shape = inputs[0], _ints(inputs[1])
    out = np.broadcast_shapes(x.shape, tuple(shape))
    return [np.broadcast_to(x, out).copy()]


def _tile(node, inputs, graph):
    return [np.tile(inputs[0], _ints(inputs[1]))]


def _split(node, inputs, graph):
    x = inputs[0]
    axis = _axis(node.attrs.get("axis", 0), x.ndim)
    split = _opt(inputs, 1)
    split = _ints(split) if split is not None else (_ints(node.attrs["split"]) if "split" in node.attrs else None)
    n = len(node.outputs)
    dim = x.shape[axis]
    if split is None:
        n = int(node.attrs.get("num_outputs", n))
        size = -(-dim // n)
        split = [size] * (n - 1) + [dim - size * (n - 1)]
    if sum(split) != dim:
        raise ValueError(f"split {split} does not add up to dimension {dim}")
    bounds = np.cumsum(split)[:-1]
    return [np.ascontiguousarray(p) for p in np.split(x, bounds, axis=axis)]


def _constant_of_shape(node, inputs, graph):
    shape = _ints(inputs[0])
    value = node.attrs.get("value")
    value = np.zeros(1, dtype=F32) if value is None else _float_dtype_of(np.asarray(value))
    return [np.full(shape, value.reshape(-1)[0], dtype=value.dtype)]


def _range(node, inputs, graph):
    start, limit, delta = (np.asarray(a).reshape(()) for a in inputs)
    dtype = F32 if start.dtype.kind == "f" else I64
    n = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
    return [(start + np.arange(n, dtype=dtype) * delta).astype(dtype)]


def _not(node, inputs, graph):
    return [np.logical_not(inputs[0])]


def _resize(node, inputs, graph):
    x = _f32(inputs[0])
    scales = _opt(inputs, 2)
    sizes = _opt(inputs, 3)
    if len(inputs) == 2 and scales is None:  # Upsample-style (X, scales)
        scales = inputs[1]
    r = x.ndim
    axes = _ints(node.attrs["axes"]) if "axes" in node.attrs else list(range(r))
    axes = [_axis(a, r) for a in axes]
    mode = node.attrs.get("mode", "nearest")
    ctm = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    nearest_mode = node.attrs.get("nearest_mode", "round_prefer_floor")
    if node.attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ValueError("Resize keep_aspect_ratio_policy other than 'stretch' not supported")
    if mode not in ("nearest", "linear"):
        raise ValueError(f"Resize mode {mode!r} not supported (nearest and linear are)")
    if ctm == "tf_crop_and_resize":
        raise ValueError("Resize coordinate_transformation_mode 'tf_crop_and_resize' not supported")
    given = [1.0] * r  # each axis' scale as given; None: from sizes (resampling.axis_scale)
    out_shape = list(x.shape)
    if sizes is not None and np.asarray(sizes).size:
        for a, s in zip(axes, _ints(sizes)):
            out_shape[a] = s
            given[a] = None
    elif scales is not None and np.asarray(scales).size:
        for a, s in zip(axes, np.asarray(scales, dtype=np.float64).reshape(-1)):
            given[a] = float(s)
            out_shape[a] = int(math.floor(x.shape[a] * float(s)))
    else:
        raise ValueError("Resize needs scales or sizes")
    y = x
    for a in range(r):  # ONNX Runtime's sampling, axis by axis (converters/resampling.py)
        scale = resampling.axis_scale(x.shape[a], out_shape[a], given[a])
        y = resampling.resize_1d(y, a, out_shape[a], scale, mode, ctm, nearest_mode)
    return [np.ascontiguousarray(y, dtype=F32)]


# --------------------------------------------------------------------------- recurrent: LSTM, GRU
#
# ONNX Runtime's CPU kernels (deep_cpu_lstm / deep_cpu_gru) are the reference where the ONNX
# text leaves room or differs; the places where they do:
# - activation_alpha / activation_beta are consumed in activation order, only by the functions
#   that take them (Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid: alpha; Affine,
#   ScaledTanh, HardSigmoid: beta). Missing values default to LeakyRelu 0.01, HardSigmoid
#   0.2 / 0.5, Elu 1.0 and 0 for all others (ORT): the ONNX spec says "the defaults of the
#   corresponding ONNX operators", which would be Affine alpha 1.0 and ThresholdedRelu 1.0.
# - ThresholdedRelu is x if x > alpha (ORT, and the ThresholdedRelu op); the RNN docs say >=.
# - clip clamps every gate pre-activation, the LSTM cell input c and the GRU hidden gate h
#   included, after the biases (and peepholes) are added.
# - an entry whose sequence length is 0 gets Y_h = 0 and Y_c = 0 (not initial_h / initial_c).
# - the LSTM output gate's peephole reads the new cell state C_t (as the spec's equations).
# - layout 1 is handled here; ORT refuses it (layout 0 with transposes is the same math).

# name (lower case) -> (function(x, alpha, beta), takes alpha, takes beta, default alpha, default beta)
_RNN_ACTIVATIONS = {
    "sigmoid": (lambda x, a, b: _sigmoid(x), False, False, 0.0, 0.0),
    "tanh": (lambda x, a, b: np.tanh(x), False, False, 0.0, 0.0),
    "relu": (lambda x, a, b: np.maximum(x, F32(0)), False, False, 0.0, 0.0),
    "affine": (lambda x, a, b: x * a + b, True, True, 0.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, x * a), True, False, 0.01, 0.0),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, F32(0)), True, False, 0.0, 0.0),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), True, True, 0.0, 0.0),
    "hardsigmoid": (lambda x, a, b: np.clip(x * a + b, F32(0), F32(1)), True, True, 0.2, 0.5),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, F32(0)))), True, False, 1.0, 0.0),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), False, False, 0.0, 0.0),
    "softplus": (lambda x, a, b: _softplus(x), False, False, 0.0, 0.0),
}


def _rnn_activations(node, defaults, num_dir):
    """The activation functions of a recurrent node, one list of len(defaults) per direction,
    each a function of a float32 array."""
    names = node.attrs.get("activations") or list(defaults) * num_dir
    if len(names) != len(defaults) * num_dir:
        raise ValueError(f"{node.op} activations {names}: expected {len(defaults) * num_dir} "
                         f"({len(defaults)} per direction)")
    alphas = iter(float(v) for v in node.attrs.get("activation_alpha", []))
    betas = iter(float(v) for v in node.attrs.get("activation_beta", []))
    fns = []
    for name in names:
        entry = _RNN_ACTIVATIONS.get(str(name).lower())
        if entry is None:
            raise ValueError(f"{node.op} activation {name!r} not supported (one of Sigmoid, Tanh, Relu, "
                             "Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus)")
        fn, takes_alpha, takes_beta, alpha, beta = entry
        alpha = next(alphas, alpha) if takes_alpha else alpha
        beta = next(betas, beta) if takes_beta else beta

        def act(x, fn=fn, alpha=F32(alpha), beta=F32(beta)):
            return np.asarray(fn(x, alpha, beta), dtype=F32)
        fns.append(act)
    return [fns[d * len(defaults):(d + 1) * len(defaults)] for d in range(num_dir)]


def _rnn_setup(node, inputs, gates):
    """What LSTM and GRU share: X as [T, B, I], the weights per direction, the sequence lengths,
    the initial hidden state as [num_dir, B, H], the clip and the direction list."""
    layout = int(node.attrs.get("layout", 0))
    x = _f32(inputs[0])
    w, r = _f32(inputs[1]), _f32(inputs[2])
    if x.ndim != 3:
        raise ValueError(f"{node.op} X must be 3-D, got shape {x.shape}")
    if layout == 1:
        x = x.transpose(1, 0, 2)
    elif layout != 0:
        raise ValueError(f"{node.op} layout {layout} (0 or 1)")
    t_len, batch, _ = x.shape
    direction = node.attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"{node.op} direction {direction!r}")
    num_dir = 2 if direction == "bidirectional" else 1
    hidden = int(node.attrs.get("hidden_size", r.shape[-1]))
    if w.shape != (num_dir, gates * hidden, x.shape[2]) or r.shape != (num_dir, gates * hidden, hidden):
        raise ValueError(f"{node.op} W {w.shape} / R {r.shape} do not match num_directions {num_dir}, "
                         f"hidden_size {hidden}")
    b = _opt(inputs, 3)
    b = np.zeros((num_dir, 2 * gates * hidden), F32) if b is None else _f32(b).reshape(num_dir, 2 * gates * hidden)
    lens = _opt(inputs, 4)
    if lens is None:
        lens = np.full(batch, t_len, I64)
    else:
        lens = np.asarray(lens).reshape(-1).astype(I64)
        if lens.shape != (batch,) or (lens < 0).any() or (lens > t_len).any():
            raise ValueError(f"{node.op} sequence_lens {lens.tolist()}: batch {batch} values in 0..{t_len}")

    def state(a):
        if a is None:
            return np.zeros((num_dir, batch, hidden), F32)
        a = _f32(a)
        return a.transpose(1, 0, 2) if layout == 1 else a

    h0 = state(_opt(inputs, 5))
    clip = node.attrs.get("clip")
    clip = None if clip is None else F32(clip)
    directions = ["reverse"] if direction == "reverse" else ["forward", "reverse"][:num_dir]
    return layout, x, w, r, b, lens, h0, state, clip, directions, hidden


def _rnn_steps(x_proj, lens, reverse):
    """For each step s of one direction: (time index per batch entry, active entries mask).
    Forward, step s reads time s; reverse, entry b reads time lens[b]-1-s (each sequence is
    reversed within its own length, as ONNX Runtime does). Entries past their length are
    inactive: their state stays and their outputs are 0."""
    batch = x_proj.shape[1]
    rows = np.arange(batch)
    for s in range(int(lens.max(initial=0))):
        active = s < lens
        t = np.where(active, lens - 1 - s, 0) if reverse else np.full(batch, s)
        yield t, active, x_proj[t, rows]


def _rnn_outputs(node, layout, y, y_h, *more):
    """Y [T, D, B, H] / states [D, B, H] to the node's layout, in the order of node.outputs."""
    if layout == 1:
        y = y.transpose(2, 0, 1, 3)
        y_h = y_h.transpose(1, 0, 2)
        more = [m.transpose(1, 0, 2) if m.ndim == 3 else m.transpose(2, 0, 1, 3) for m in more]
    outs = [np.ascontiguousarray(a, dtype=F32) for a in (y, y_h, *more)]
    return outs[:max(len(node.outputs), 1)]


def _clamp(a, clip):
    return a if clip is None else np.clip(a, -clip, clip)


def _lstm(node, inputs, graph):
    """ONNX LSTM (opsets 7-22). Gates i, o, f, c; B = [Wb, Rb]; P = [Pi, Po, Pf]:
        i = f(Xt Wi^T + Ht-1 Ri^T + Pi * Ct-1 + Wbi + Rbi)
        f = f(Xt Wf^T + Ht-1 Rf^T + Pf * Ct-1 + Wbf + Rbf)     (1 - i with input_forget)
        c = g(Xt Wc^T + Ht-1 Rc^T + Wbc + Rbc)
        Ct = f * Ct-1 + i * c
        o = f(Xt Wo^T + Ht-1 Ro^T + Po * Ct + Wbo + Rbo)
        Ht = o * h(Ct)
    Outputs Y, Y_h, Y_c and (a qrt extension, for calibration) a 4th: every step's Ct in Y's
    layout, 0 past an entry's sequence length."""
    layout, x, w, r, b, lens, h0, state, clip, directions, hidden = _rnn_setup(node, inputs, 4)
    c0 = state(_opt(inputs, 6))
    p = _opt(inputs, 7)
    p = np.zeros((len(directions), 3 * hidden), F32) if p is None else _f32(p).reshape(len(directions), 3 * hidden)
    acts = _rnn_activations(node, ("Sigmoid", "Tanh", "Tanh"), len(directions))
    input_forget = bool(node.attrs.get("input_forget", 0))
    t_len, batch, _ = x.shape
    y = np.zeros((t_len, len(directions), batch, hidden), F32)
    c_seq = np.zeros_like(y)
    y_h = np.zeros((len(directions), batch, hidden), F32)
    y_c = np.zeros_like(y_h)
    rows = np.arange(batch)
    for d, direction in enumerate(directions):
        f_act, g_act, h_act = acts[d]
        x_proj = x @ w[d].T  # [T, B, 4H]
        r_t = r[d].T
        bias = b[d, :4 * hidden] + b[d, 4 * hidden:]
        p_i, p_o, p_f = p[d, :hidden], p[d, hidden:2 * hidden], p[d, 2 * hidden:]
        h, c = h0[d].copy(), c0[d].copy()
        for t, active, xw in _rnn_steps(x_proj, lens, direction == "reverse"):
            g = xw + h @ r_t + bias
            gi, go, gf, gc = g[:, :hidden], g[:, hidden:2 * hidden], g[:, 2 * hidden:3 * hidden], g[:, 3 * hidden:]
            i = f_act(_clamp(gi + p_i * c, clip))
            f = (1 - i) if input_forget else f_act(_clamp(gf + p_f * c, clip))
            c_new = f * c + i * g_act(_clamp(gc, clip))
            o = f_act(_clamp(go + p_o * c_new, clip))
            h_new = o * h_act(c_new)
            a = active[:, None]
            h = np.where(a, h_new, h).astype(F32)
            c = np.where(a, c_new, c).astype(F32)
            y[t[active], d, rows[active]] = h_new[active]
            c_seq[t[active], d, rows[active]] = c_new[active]
        done = (lens > 0)[:, None]  # a sequence of length 0 ends in 0 states (ORT)
        y_h[d] = np.where(done, h, 0)
        y_c[d] = np.where(done, c, 0)
    return _rnn_outputs(node, layout, y, y_h, y_c, c_seq)


def _gru(node, inputs, graph):
    """ONNX GRU (opsets 7-22). Gates z, r, h; B = [Wb, Rb]:
        z = f(Xt Wz^T + Ht-1 Rz^T + Wbz + Rbz)
        r = f(Xt Wr^T + Ht-1 Rr^T + Wbr + Rbr)
        h = g(Xt Wh^T + (r * Ht-1) Rh^T + Rbh + Wbh)        linear_before_reset = 0
        h = g(Xt Wh^T + r * (Ht-1 Rh^T + Rbh) + Wbh)        linear_before_reset = 1
        Ht = (1 - z) * h + z * Ht-1
    Outputs Y, Y_h."""
    layout, x, w, r, b, lens, h0, state, clip, directions, hidden = _rnn_setup(node, inputs, 3)
    acts = _rnn_activations(node, ("Sigmoid", "Tanh"), len(directions))
    linear_before_reset = bool(node.attrs.get("linear_before_reset", 0))
    t_len, batch, _ = x.shape
    y = np.zeros((t_len, len(directions), batch, hidden), F32)
    y_h = np.zeros((len(directions), batch, hidden), F32)
    rows = np.arange(batch)
    for d, direction in enumerate(directions):
        f_act, g_act = acts[d]
        x_proj = x @ w[d].T  # [T, B, 3H]
        r_zr, r_h = r[d, :2 * hidden].T, r[d, 2 * hidden:].T
        wb, rb = b[d, :3 * hidden], b[d, 3 * hidden:]
        b_zr = wb[:2 * hidden] + rb[:2 * hidden]
        wb_h, rb_h = wb[2 * hidden:], rb[2 * hidden:]
        h = h0[d].copy()
        for t, active, xw in _rnn_steps(x_proj, lens, direction == "reverse"):
            zr = f_act(_clamp(xw[:, :2 * hidden] + h @ r_zr + b_zr, clip))
            z, rt = zr[:, :hidden], zr[:, hidden:]
            if linear_before_reset:
                pre = xw[:, 2 * hidden:] + rt * (h @ r_h + rb_h) + wb_h
            else:
                pre = xw[:, 2 * hidden:] + (rt * h) @ r_h + (wb_h + rb_h)
            h_new = (1 - z) * g_act(_clamp(pre, clip)) + z * h
            h = np.where(active[:, None], h_new, h).astype(F32)
            y[t[active], d, rows[active]] = h_new[active]
        y_h[d] = np.where((lens > 0)[:, None], h, 0)  # a sequence of length 0 ends in a 0 state (ORT)
    return _rnn_outputs(node, layout, y, y_h)


# --------------------------------------------------------------------------- the table

OPS = {
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(_div),
    "Pow": _pow,
    "Mod": _binary(np.mod),
    "Sqrt": _float_unary(np.sqrt),
    "Reciprocal": _float_unary(lambda x: 1 / x),
    "Exp": _float_unary(np.exp),
    "Log": _float_unary(np.log),
    "Abs": _unary(np.abs),
    "Neg": _unary(np.negative),
    "Floor": _float_unary(np.floor),
    "Ceil": _float_unary(np.ceil),
    "Relu": _relu,
    "Clip": _clip,
    "LeakyRelu": _leaky_relu,
    "PRelu": _prelu,
    "Elu": _elu,
    "Sigmoid": _float_unary(_sigmoid),
    "Tanh": _float_unary(np.tanh),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "Erf": _float_unary(_erf),
    "Gelu": _gelu,
    "Softplus": _float_unary(_softplus),
    "Softmax": _softmax,
    "LogSoftmax": _log_softmax,
    "Max": _variadic(np.maximum),
    "Min": _variadic(np.minimum),
    "Sum": _variadic(np.add),
    "Equal": _compare(np.equal),
    "Less": _compare(np.less),
    "Greater": _compare(np.greater),
    "LessOrEqual": _compare(np.less_equal),
    "GreaterOrEqual": _compare(np.greater_equal),
    "Not": _not,
    "Where": _where,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Conv": _conv,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global_pool(np.mean),
    "GlobalMaxPool": _global_pool(np.max),
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "RMSNormalization": _rms_norm,
    "ReduceMean": _reduce(np.mean),
    "ReduceSum": _reduce(np.sum),
    "ReduceMax": _reduce(np.max),
    "ReduceMin": _reduce(np.min),
    "ReduceL2": _reduce(lambda x, axis, keepdims: np.sqrt(np.sum(np.square(x), axis, keepdims=keepdims))),
    "ReduceSumSquare": _reduce(lambda x, axis, keepdims: np.sum(np.square(x), axis, keepdims=keepdims)),
    "Concat": _concat,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Pad": _pad,
    "Identity": _identity,
    "Dropout": _dropout,
    "Constant": _constant,
    "Shape": _shape,
    "Size": _size,
    "Gather": _gather,
    "Slice": _slice,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Expand": _expand,
    "Tile": _tile,
    "Split": _split,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "Resize": _resize,
    "ConvTranspose": _conv_transpose,
    "LSTM": _lstm,
    "GRU": _gru,
}

SUPPORTED_OPS = frozenset(OPS)


# --------------------------------------------------------------------------- running a graph

def run_node(node, inputs, graph=None):
    """Evaluate one node on arrays (None for absent optional inputs); returns its outputs."""
    fn = OPS.get(node.op)
    if fn is None:
        raise UnsupportedOpsError({node.op: [node.name or node.outputs[0]]})
    with np.errstate(all="ignore"):
        outs = fn(node, inputs, graph)
    return outs


# NumPy's BLAS (OpenBLAS) spins up threads for every matmul; for the small matrices of one
# sample that costs far more than it gains (EfficientNet-Lite0: ~0.07 s per sample with one BLAS
# thread, 0.2-0.5 s with two on a shared 2-core machine). run_graph limits BLAS to this many
# threads while it runs, through threadpoolctl when it is installed (None: leave BLAS alone).
BLAS_THREADS = 1
_controller = []


def _blas_limit():
    import contextlib

    if BLAS_THREADS is None:
        return contextlib.nullcontext()
    if not _controller:
        try:
            from threadpoolctl import ThreadpoolController
            _controller.append(ThreadpoolController())
        except Exception:  # not installed, or it could not inspect the loaded libraries
            _controller.append(None)
    if _controller[0] is None:
        return contextlib.nullcontext()
    try:
        return _controller[0].limit(limits=BLAS_THREADS, user_api="blas")
    except Exception:
        return contextlib.nullcontext()


def run_graph(graph, feeds: dict, outputs=None, observe=None) -> dict:
    """Run `graph` on `feeds` ({input name: array}; a single array is accepted for a graph
    with one input) and return {name: array} for `outputs` (default graph.outputs).

    observe(name, array) is called once for every graph input and every value a node computes,
    in execution order (constants are not observed). Values are freed after their last reader
    ran unless requested, so memory stays at the graph's live set."""
    with _blas_limit():
        return _run_graph(graph, feeds, outputs, observe)


def _run_graph(graph, feeds, outputs, observe):
    if not isinstance(feeds, dict):
        if len(graph.inputs) != 1:
            raise ValueError(f"the graph has {len(graph.inputs)} inputs {graph.inputs}: pass a dict")
        feeds = {graph.inputs[0]: feeds}
    missing = [n for n in graph.inputs if n not in feeds]
    unknown = [n for n in feeds if n not in graph.inputs]
    if missing or unknown:
        raise ValueError(f"feeds must name exactly the graph inputs {graph.inputs}; "
                         f"missing {missing}, unknown {unknown}")
    wanted = list(graph.outputs if outputs is None else outputs)
    wanted_set = set(wanted)

    last_use = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name:
                last_use[name] = i

    env = {}
    for name in graph.inputs:
        a = np.asarray(feeds[name])
        a = a.astype(F32, copy=False) if a.dtype.kind in "fiu" else a
        env[name] = a
        if observe is not None:
            observe(name, a)
    result = {n: env[n] for n in wanted if n in env}
    consts = graph.constants

    for i, node in enumerate(graph.nodes):
        args = []
        for name in node.inputs:
            if not name:
                args.append(None)
            elif name in env:
                args.append(env[name])
            elif name in consts:
                args.append(consts[name])
            else:
                raise ConversionError(f"node {node.name or node.op!r} ({node.op}) reads {name!r}, "
                                      "which no node, input or constant provides before it")
        try:
            outs = run_node(node, args, graph)
        except UnsupportedOpsError:
            raise
        except Exception as e:
            shapes = [None if a is None else tuple(np.shape(a)) for a in args]
            raise ConversionError(f"node {node.name or '?'!r} ({node.op}, inputs {node.inputs} of shapes "
                                  f"{shapes}) failed: {type(e).__name__}: {e}") from e
        for name, value in zip(node.outputs, outs):
            if not name:
                continue
            env[name] = value
            if observe is not None:
                observe(name, value)
            if name in wanted_set:
                result[name] = value
        for name in node.inputs:
            if name and last_use.get(name) == i and name in env:
                del env[name]
        for name in node.outputs:  # outputs nobody reads
            if name and name not in last_use and name in env:
                del env[name]
    for name in wanted:
        if name not in result:
            if name in consts:
                result[name] = consts[name]
            else:
                raise ValueError(f"{name!r} is not a value of the graph")
    return {n: result[n] for n in wanted}
