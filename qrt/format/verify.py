"""The rules a decoded model must obey before any kernel sees it (schema/SPEC.md, section 5).

verify_model runs on every load and before every write. Each failure raises
InvalidModelError naming the tensor or operator and what was expected. The checks are
cheap: one pass over tensors and operators plus a min/max over the weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._version import __version__
from ..errors import InvalidModelError, UnsupportedModelError
from .model import (
    NUMPY_DTYPE, QUANT_RANGE, Activation, ConcatOptions, Conv2DOptions, DType,
    DepthwiseConv2DOptions, LeakyReluOptions, LutOptions, MeanOptions, Model, OpCode,
    PadOptions, Pool2DOptions, SoftmaxOptions, Tensor, TransposeOptions, buffer_nbytes,
)
from .versions import OP_SINCE

MAX_RANK = 8
MAX_TENSOR_ELEMENTS = 2**31 - 1
INT32_MAX = 2**31 - 1
# Largest |x - zero_point| of an int8 activation and largest |w| of an int8 weight.
MAX_INPUT_MAGNITUDE = 255
MAX_WEIGHT_MAGNITUDE = 127
SOFTMAX_OUTPUT = (1.0 / 256.0, -128)  # fixed (scale, zero_point) of SOFTMAX outputs


def fail(where: str, what: str):
    raise InvalidModelError(f"{where}: {what}")


# ---------------------------------------------------------------------------- tensors

def check_shape(where: str, shape: tuple):
    if len(shape) > MAX_RANK:
        fail(where, f"rank {len(shape)} exceeds the limit of {MAX_RANK}")
    if any(d < 1 for d in shape):
        fail(where, f"shape {shape} has a dimension < 1")
    if math.prod(shape) > MAX_TENSOR_ELEMENTS:
        fail(where, f"shape {shape} has more than {MAX_TENSOR_ELEMENTS} elements")


def _check_tensor(where: str, t: Tensor):
    if not isinstance(t.name, str) or not t.name:
        fail(where, "tensor name must be a non-empty string")
    check_shape(where, t.shape)
    if t.data is not None:
        expect = (buffer_nbytes(t.dtype, t.numel),) if t.dtype == DType.INT4 else t.shape
        if not isinstance(t.data, np.ndarray) or t.data.dtype != NUMPY_DTYPE[t.dtype] or t.data.shape != expect:
            got = f"{t.data.dtype} {t.data.shape}" if isinstance(t.data, np.ndarray) else type(t.data).__name__
            fail(where, f"data must be a {NUMPY_DTYPE[t.dtype]} array of shape {expect}, got {got}")
    q = t.quant
    if q is None:
        return
    if t.dtype not in QUANT_RANGE:
        fail(where, f"a {t.dtype.name} tensor cannot carry quantization parameters")
    n = q.scale.size
    if n == 0 or q.zero_point.size != n:
        fail(where, f"quantization needs as many zero points as scales (>= 1), got "
                    f"{n} scales and {q.zero_point.size} zero points")
    bad = ~(np.isfinite(q.scale) & (q.scale > 0))
    if bad.any():
        i = int(np.argmax(bad))
        fail(where, f"scale[{i}] = {q.scale[i]!r}; scales must be finite and > 0")
    lo, hi = QUANT_RANGE[t.dtype]
    out = (q.zero_point < lo) | (q.zero_point > hi)
    if out.any():
        i = int(np.argmax(out))
        fail(where, f"zero_point[{i}] = {int(q.zero_point[i])} is outside the {t.dtype.name} "
                    f"range [{lo}, {hi}]")
    if n > 1:
        if not 0 <= q.axis < len(t.shape):
            fail(where, f"quantized_dimension {q.axis} is not a dimension of shape {t.shape}")
        if t.shape[q.axis] != n:
            fail(where, f"{n} per-channel scales but dimension {q.axis} of shape {t.shape} "
                        f"has {t.shape[q.axis]} channels")


# ---------------------------------------------------------------------------- graph

def _check_graph(model: Model):
    n = len(model.tensors)
    producer = {}  # tensor -> operator index
    for i, op in enumerate(model.operators):
        for k, ti in enumerate(op.inputs + op.outputs):
            if not 0 <= ti < n:
                role = f"input {k}" if k < len(op.inputs) else f"output {k - len(op.inputs)}"
                fail(model.operator_label(i), f"{role} refers to tensor {ti}, but the model has {n} tensors")
        for ti in op.outputs:
            if model.tensors[ti].data is not None:
                fail(model.operator_label(i), f"writes {model.tensor_label(ti)}, which is a constant")
            if ti in producer:
                fail(model.operator_label(i), f"writes {model.tensor_label(ti)}, already written by "
                                              f"{model.operator_label(producer[ti])}")
            producer[ti] = i

    for kind, ios in (("inputs", model.inputs), ("outputs", model.outputs)):
        names = set()
        for k, io in enumerate(ios):
            where = f"graph {kind}[{k}] '{io.name}'"
            if not isinstance(io.name, str) or not io.name:
                fail(where, "name must be a non-empty string")
            if io.name in names:
                fail(where, f"the name '{io.name}' is used twice")
            names.add(io.name)
            if not 0 <= io.tensor < n:
                fail(where, f"refers to tensor {io.tensor}, but the model has {n} tensors")
            t = model.tensors[io.tensor]
            if t.data is not None:
                fail(where, f"{model.tensor_label(io.tensor)} is a constant")
            if kind == "inputs" and io.tensor in producer:
                fail(where, f"{model.tensor_label(io.tensor)} is written by "
                            f"{model.operator_label(producer[io.tensor])}")
            if io.layout != 0 and len(t.shape) != 4:
                fail(where, f"layout {io.layout.name} needs a rank-4 tensor, {model.tensor_label(io.tensor)} "
                            f"has shape {t.shape}")
    if not model.inputs or not model.outputs:
        fail("model", "a model needs at least one graph input and one graph output")

    graph_inputs = {io.tensor for io in model.inputs}
    for io in model.outputs:
        if io.tensor not in producer and io.tensor not in graph_inputs:
            fail(f"graph output '{io.name}'", f"{model.tensor_label(io.tensor)} is never computed")
    for i, op in enumerate(model.operators):
        for ti in op.inputs:
            if model.tensors[ti].data is not None or ti in graph_inputs:
                continue
            if ti not in producer:
                fail(model.operator_label(i), f"reads {model.tensor_label(ti)}, which no operator "
                                              f"writes and which is neither a constant nor a graph input")
            if producer[ti] >= i:
                cycle = _find_cycle(model, producer)
                if cycle:
                    fail("graph", "operators form a cycle: " + " -> ".join(model.operator_label(c) for c in cycle))
                fail(model.operator_label(i), f"reads {model.tensor_label(ti)} before "
                                              f"{model.operator_label(producer[ti])} writes it "
                                              f"(operators must be stored in execution order)")


def _find_cycle(model: Model, producer: dict):
    """A list of operators that depend on each other in a ring, or None."""
    deps = [sorted({producer[t] for t in op.inputs if t in producer}) for op in model.operators]
    state = [0] * len(deps)  # 0 new, 1 on the stack, 2 done
    for start in range(len(deps)):
        if state[start]:
            continue
        stack, path = [(start, iter(deps[start]))], [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state[nxt] == 1:
                return path[path.index(nxt):] + [nxt]
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(deps[nxt])))
                path.append(nxt)
    return None


# ---------------------------------------------------------------------------- operators

@dataclass
class _Op:
    """The operator under check, with helpers that name it in every error."""
    model: Model
    index: int

    @property
    def op(self):
        return self.model.operators[self.index]

    def fail(self, what: str):
        fail(self.model.operator_label(self.index), what)

    def input(self, k: int) -> Tensor:
        return self.model.tensors[self.op.inputs[k]]

    def output(self, k: int = 0) -> Tensor:
        return self.model.tensors[self.op.outputs[k]]

    def label(self, t: Tensor) -> str:
        return f"tensor '{t.name}'"

    def dtype(self, t: Tensor, *allowed: DType):
        if t.dtype not in allowed:
            self.fail(f"{self.label(t)} is {t.dtype.name}; expected {' or '.join(a.name for a in allowed)}")

    def activation(self, t: Tensor, dtype=DType.INT8):
        """An int8 activation with per-tensor quantization."""
        self.dtype(t, dtype)
        if t.quant is None or t.quant.per_channel:
            self.fail(f"{self.label(t)} needs per-tensor quantization (one scale and zero point)")

    def constant(self, t: Tensor):
        if t.data is None:
            self.fail(f"{self.label(t)} must be a constant (weights, bias or table stored in the file)")

    def weights(self, w: Tensor, channel_axis: int):
        """int8 symmetric weights, per tensor or per output channel along channel_axis."""
        self.constant(w)
        self.dtype(w, DType.INT8)
        if w.quant is None:
            self.fail(f"weights {self.label(w)} have no quantization")
        if np.any(w.quant.zero_point != 0):
            self.fail(f"weights {self.label(w)} must be symmetric (zero point 0)")
        if w.quant.per_channel and w.quant.axis != channel_axis:
            self.fail(f"weights {self.label(w)} are per-channel along dimension {w.quant.axis}; "
                      f"expected dimension {channel_axis} (the output channels)")
        if w.data.size and int(w.data.min()) < -MAX_WEIGHT_MAGNITUDE:
            self.fail(f"weights {self.label(w)} contain -128; int8 weights must lie in [-127, 127]")

    def bias(self, b: Tensor, x: Tensor, w: Tensor, channels: int, reduction: int):
        """int32 bias of scale s_x * s_w[c], and the int32 accumulator bound for this op."""
        self.constant(b)
        self.dtype(b, DType.INT32)
        if b.shape != (channels,):
            self.fail(f"bias {self.label(b)} has shape {b.shape}; expected ({channels},)")
        if b.quant is not None:
            if np.any(b.quant.zero_point != 0):
                self.fail(f"bias {self.label(b)} must have zero point 0")
            expect = np.float64(x.quant.scale[0]) * np.broadcast_to(w.quant.scale.astype(np.float64), (channels,))
            got = b.quant.scale.astype(np.float64)
            if got.size not in (1, channels) or not np.allclose(got, expect, rtol=1e-4, atol=0):
                self.fail(f"bias {self.label(b)} scale must equal input scale x weight scale per channel")
        max_bias = int(np.abs(b.data.astype(np.int64)).max()) if b.data.size else 0
        bound = reduction * MAX_INPUT_MAGNITUDE * MAX_WEIGHT_MAGNITUDE + max_bias
        if bound > INT32_MAX:
            self.fail(f"reduction length {reduction} with |bias| up to {max_bias} can overflow the "
                      f"int32 accumulator ({reduction} x 255 x 127 + {max_bias} > 2^31 - 1)")

    def same_shape(self, a: Tensor, b: Tensor):
        if a.shape != b.shape:
            self.fail(f"{self.label(b)} has shape {b.shape}; expected {a.shape} (same as {self.label(a)})")

    def same_quant(self, a: Tensor, b: Tensor):
        qa, qb = a.quant, b.quant
        if (qa is None) != (qb is None) or (qa is not None and (
                not np.array_equal(qa.scale, qb.scale) or not np.array_equal(qa.zero_point, qb.zero_point))):
            self.fail(f"{self.label(b)} must keep the quantization of {self.label(a)} (this op only moves data)")

    def options(self, cls):
        o = self.op.options
        if cls is None:
            if o is not None:
                self.fail(f"takes no options, got {type(o).__name__}")
            return None
        if o is None:
            return cls()
        if type(o) is not cls:
            self.fail(f"needs {cls.__name__}, got {type(o).__name__}")
        return o

    def positive(self, o, *names):
        for n in names:
            if getattr(o, n) < 1:
                self.fail(f"{n} = {getattr(o, n)}; must be >= 1")

    def non_negative(self, o, *names):
        for n in names:
            if getattr(o, n) < 0:
                self.fail(f"{n} = {getattr(o, n)}; must be >= 0")

    def axis(self, axis: int, rank: int, what: str = "axis") -> int:
        if not -rank <= axis < rank:
            self.fail(f"{what} {axis} is out of range for rank {rank}")
        return axis % rank

    def rank(self, t: Tensor, rank: int, layout: str):
        if len(t.shape) != rank:
            self.fail(f"{self.label(t)} has shape {t.shape}; expected rank {rank} {layout}")

    def spatial_output(self, x, y, o, kh, kw, dh, dw, channels):
        """Check y's shape [N, OH, OW, channels] against the window arithmetic."""
        n, h, w = x.shape[:3]
        oh = (h + o.pad_top + o.pad_bottom - dh * (kh - 1) - 1) // o.stride_h + 1
        ow = (w + o.pad_left + o.pad_right - dw * (kw - 1) - 1) // o.stride_w + 1
        if oh < 1 or ow < 1:
            self.fail(f"the window ({kh}x{kw}, dilation {dh}x{dw}) is larger than the padded input {x.shape}")
        expect = (n, oh, ow, channels)
        if y.shape != expect:
            self.fail(f"output {self.label(y)} has shape {y.shape}; the window arithmetic gives {expect}")


def _window(c: _Op, o):
    c.positive(o, "stride_h", "stride_w", "dilation_h", "dilation_w")
    c.non_negative(o, "pad_top", "pad_left", "pad_bottom", "pad_right")


def _conv_2d(c: _Op):
    x, w, b, y = c.input(0), c.input(1), c.input(2), c.output()
    o = c.options(Conv2DOptions)
    _window(c, o)
    c.positive(o, "groups")
    c.activation(x)
    c.activation(y)
    c.rank(x, 4, "[N, H, W, C]")
    c.rank(w, 4, "[C_out, KH, KW, C_in / groups]")
    c.weights(w, 0)
    cout, kh, kw, cin_g = w.shape
    cin = x.shape[3]
    if cin % o.groups or cout % o.groups or cin_g * o.groups != cin:
        c.fail(f"groups = {o.groups} does not fit input channels {cin}, output channels {cout} "
               f"and weights {w.shape}")
    c.spatial_output(x, y, o, kh, kw, o.dilation_h, o.dilation_w, cout)
    c.bias(b, x, w, cout, kh * kw * cin_g)


def _depthwise_conv_2d(c: _Op):
    x, w, b, y = c.input(0), c.input(1), c.input(2), c.output()
    o = c.options(DepthwiseConv2DOptions)
    _window(c, o)
    c.positive(o, "depth_multiplier")
    c.activation(x)
    c.activation(y)
    c.rank(x, 4, "[N, H, W, C]")
    c.rank(w, 4, "[1, KH, KW, C * depth_multiplier]")
    c.weights(w, 3)
    cout = x.shape[3] * o.depth_multiplier
    if w.shape[0] != 1 or w.shape[3] != cout:
        c.fail(f"weights {c.label(w)} have shape {w.shape}; expected (1, KH, KW, {cout})")
    c.spatial_output(x, y, o, w.shape[1], w.shape[2], o.dilation_h, o.dilation_w, cout)
    c.bias(b, x, w, cout, w.shape[1] * w.shape[2])


def _fully_connected(c: _Op):
    x, w, b, y = c.input(0), c.input(1), c.input(2), c.output()
    c.options(None)
    c.activation(x)
    c.activation(y)
    c.rank(w, 2, "[N_out, K]")
    c.weights(w, 0)
    nout, k = w.shape
    if not x.shape or x.shape[-1] != k:
        c.fail(f"input {c.label(x)} has shape {x.shape}; its last dimension must be K = {k}")
    if y.shape != x.shape[:-1] + (nout,):
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {x.shape[:-1] + (nout,)}")
    c.bias(b, x, w, nout, k)


def _binary(c: _Op):
    a, b, y = c.input(0), c.input(1), c.output()
    c.options(None)
    for t in (a, b, y):
        c.activation(t)
    try:
        expect = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        c.fail(f"shapes {a.shape} and {b.shape} do not broadcast")
    if y.shape != expect:
        c.fail(f"output {c.label(y)} has shape {y.shape}; broadcasting gives {expect}")


def _concat(c: _Op):
    o = c.options(ConcatOptions)
    y = c.output()
    c.activation(y)
    first = c.input(0)
    axis = c.axis(o.axis, len(first.shape))
    total = 0
    for k in range(len(c.op.inputs)):
        t = c.input(k)
        c.activation(t)
        if len(t.shape) != len(first.shape) or any(
                d != e for j, (d, e) in enumerate(zip(t.shape, first.shape)) if j != axis):
            c.fail(f"{c.label(t)} has shape {t.shape}; it must match {first.shape} except on axis {axis}")
        total += t.shape[axis]
    expect = first.shape[:axis] + (total,) + first.shape[axis + 1:]
    if y.shape != expect:
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {expect}")


def _pool_2d(c: _Op):
    x, y = c.input(0), c.output()
    o = c.options(Pool2DOptions)
    c.positive(o, "kernel_h", "kernel_w", "stride_h", "stride_w")
    c.non_negative(o, "pad_top", "pad_left", "pad_bottom", "pad_right")
    if max(o.pad_top, o.pad_bottom) >= o.kernel_h or max(o.pad_left, o.pad_right) >= o.kernel_w:
        c.fail(f"padding must be smaller than the {o.kernel_h}x{o.kernel_w} window "
               f"(a window must not lie wholly in the padding)")
    c.activation(x)
    c.activation(y)
    c.rank(x, 4, "[N, H, W, C]")
    if o.kernel_h * o.kernel_w * MAX_INPUT_MAGNITUDE > INT32_MAX:
        c.fail(f"a {o.kernel_h}x{o.kernel_w} window can overflow the int32 accumulator")
    c.spatial_output(x, y, o, o.kernel_h, o.kernel_w, 1, 1, x.shape[3])
    if c.op.opcode == OpCode.MAX_POOL_2D:
        c.same_quant(x, y)


def _mean(c: _Op):
    x, y = c.input(0), c.output()
    o = c.options(MeanOptions)
    c.activation(x)
    c.activation(y)
    rank = len(x.shape)
    axes = sorted({c.axis(a, rank, "axes entry") for a in o.axes})
    if not axes or len(axes) != len(o.axes):
        c.fail(f"axes {o.axes} must name distinct dimensions, at least one")
    count = math.prod(x.shape[a] for a in axes)
    if count * MAX_INPUT_MAGNITUDE > INT32_MAX:
        c.fail(f"averaging {count} values can overflow the int32 accumulator")
    expect = tuple(1 if a in axes else d for a, d in enumerate(x.shape) if o.keep_dims or a not in axes)
    if y.shape != expect:
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {expect}")


def _pad(c: _Op):
    x, y = c.input(0), c.output()
    o = c.options(PadOptions)
    rank = len(x.shape)
    if len(o.pads) != 2 * rank or min(o.pads, default=0) < 0:
        c.fail(f"pads {o.pads} must be {2 * rank} values >= 0 (begins, then ends)")
    c.activation(x)
    expect = tuple(d + o.pads[i] + o.pads[rank + i] for i, d in enumerate(x.shape))
    if y.shape != expect:
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {expect}")
    c.dtype(y, x.dtype)
    c.same_quant(x, y)


def _reshape(c: _Op):
    x, y = c.input(0), c.output()
    c.options(None)
    if x.numel != y.numel:
        c.fail(f"cannot reshape {x.shape} ({x.numel} elements) to {y.shape} ({y.numel} elements)")
    c.dtype(y, x.dtype)
    c.same_quant(x, y)


def _transpose(c: _Op):
    x, y = c.input(0), c.output()
    o = c.options(TransposeOptions)
    if sorted(o.perm) != list(range(len(x.shape))):
        c.fail(f"perm {o.perm} is not a permutation of the {len(x.shape)} dimensions")
    expect = tuple(x.shape[p] for p in o.perm)
    if y.shape != expect:
        c.fail(f"output {c.label(y)} has shape {y.shape}; expected {expect}")
    c.dtype(y, x.dtype)
    c.same_quant(x, y)


def _elementwise(c: _Op, options_cls=None):
    x, y = c.input(0), c.output()
    o = c.options(options_cls)
    c.activation(x)
    c.activation(y)
    c.same_shape(x, y)
    return o


def _leaky_relu(c: _Op):
    o = _elementwise(c, LeakyReluOptions)
    if not math.isfinite(o.alpha):
        c.fail(f"alpha = {o.alpha}; must be finite")


def _prelu(c: _Op):
    _elementwise(c)
    x, alpha = c.input(0), c.input(1)
    c.constant(alpha)
    c.activation(alpha)
    try:
        if np.broadcast_shapes(x.shape, alpha.shape) != x.shape:
            raise ValueError
    except ValueError:
        c.fail(f"alpha {c.label(alpha)} of shape {alpha.shape} does not broadcast to the input {x.shape}")


def _lut(c: _Op):
    _elementwise(c, LutOptions)
    table = c.input(1)
    c.constant(table)
    c.dtype(table, DType.INT8)
    if table.shape != (256,):
        c.fail(f"table {c.label(table)} has shape {table.shape}; expected (256,)")


def _softmax(c: _Op):
    o = _elementwise(c, SoftmaxOptions)
    c.axis(o.axis, len(c.input(0).shape))
    if not (math.isfinite(o.beta) and o.beta > 0):
        c.fail(f"beta = {o.beta}; must be finite and > 0")
    y = c.output()
    if (float(y.quant.scale[0]), int(y.quant.zero_point[0])) != SOFTMAX_OUTPUT:
        c.fail(f"output {c.label(y)} must have scale 1/256 and zero point -128 (fixed by softmax's range)")


def _quantize(c: _Op):
    x, y = c.input(0), c.output()
    c.options(None)
    c.dtype(x, DType.FLOAT32)
    c.activation(y, y.dtype if y.dtype in (DType.INT8, DType.UINT8, DType.INT16) else DType.INT8)
    c.same_shape(x, y)


def _dequantize(c: _Op):
    x, y = c.input(0), c.output()
    c.options(None)
    c.activation(x, x.dtype if x.dtype in (DType.INT8, DType.UINT8, DType.INT16) else DType.INT8)
    c.dtype(y, DType.FLOAT32)
    c.same_shape(x, y)


def _requantize(c: _Op):
    x, y = c.input(0), c.output()
    c.options(None)
    c.activation(x, x.dtype if x.dtype == DType.UINT8 else DType.INT8)
    c.activation(y, y.dtype if y.dtype == DType.UINT8 else DType.INT8)
    c.same_shape(x, y)


@dataclass(frozen=True)
class OpRule:
    inputs: tuple  # (min, max) number of inputs
    outputs: int
    fused_activation: bool
    check: Callable


_ANY = 2**31
OP_RULES = {
    OpCode.CONV_2D: OpRule((3, 3), 1, True, _conv_2d),
    OpCode.DEPTHWISE_CONV_2D: OpRule((3, 3), 1, True, _depthwise_conv_2d),
    OpCode.FULLY_CONNECTED: OpRule((3, 3), 1, True, _fully_connected),
    OpCode.ADD: OpRule((2, 2), 1, True, _binary),
    OpCode.SUB: OpRule((2, 2), 1, True, _binary),
    OpCode.MUL: OpRule((2, 2), 1, True, _binary),
    OpCode.CONCAT: OpRule((1, _ANY), 1, False, _concat),
    OpCode.MAX_POOL_2D: OpRule((1, 1), 1, False, _pool_2d),
    OpCode.AVERAGE_POOL_2D: OpRule((1, 1), 1, True, _pool_2d),
    OpCode.MEAN: OpRule((1, 1), 1, True, _mean),
    OpCode.PAD: OpRule((1, 1), 1, False, _pad),
    OpCode.RESHAPE: OpRule((1, 1), 1, False, _reshape),
    OpCode.TRANSPOSE: OpRule((1, 1), 1, False, _transpose),
    OpCode.LEAKY_RELU: OpRule((1, 1), 1, False, _leaky_relu),
    OpCode.PRELU: OpRule((2, 2), 1, False, _prelu),
    OpCode.LUT: OpRule((2, 2), 1, False, _lut),
    OpCode.SOFTMAX: OpRule((1, 1), 1, False, _softmax),
    OpCode.QUANTIZE: OpRule((1, 1), 1, False, _quantize),
    OpCode.DEQUANTIZE: OpRule((1, 1), 1, False, _dequantize),
    OpCode.REQUANTIZE: OpRule((1, 1), 1, True, _requantize),
}


def _check_op_versions(model: Model):
    for i, op in enumerate(model.operators):
        if op.version < 1:
            fail(model.operator_label(i), f"version {op.version} is not an op version (they start at 1)")
        if (int(op.opcode), op.version) not in OP_SINCE:
            raise UnsupportedModelError(
                f"{model.operator_label(i)} is version {op.version}, which qrt {__version__} does "
                f"not know; the file needs a newer qrt (pip install -U qrt)")


def _check_operator(model: Model, i: int):
    c = _Op(model, i)
    op = c.op
    for t in op.inputs + op.outputs:
        if model.tensors[t].dtype == DType.INT4:
            c.fail(f"{c.label(model.tensors[t])} is INT4, which no operator of this format revision reads or writes")
    rule = OP_RULES[op.opcode]
    lo, hi = rule.inputs
    if not lo <= len(op.inputs) <= hi:
        want = f"{lo}" if lo == hi else f"at least {lo}"
        c.fail(f"has {len(op.inputs)} inputs; expected {want}")
    if len(op.outputs) != rule.outputs:
        c.fail(f"has {len(op.outputs)} outputs; expected {rule.outputs}")
    if op.activation != Activation.NONE:
        if not rule.fused_activation:
            c.fail(f"cannot fuse activation {Activation(op.activation).name}")
        if op.activation == Activation.CLIP and not (
                math.isfinite(op.clip_min) and math.isfinite(op.clip_max) and op.clip_min <= op.clip_max):
            c.fail(f"clip range [{op.clip_min}, {op.clip_max}] must be finite with min <= max")
    rule.check(c)


def verify_model(model: Model):
    """Raise InvalidModelError (or UnsupportedModelError) if `model` breaks a rule of the spec."""
    _check_op_versions(model)
    names = {}
    for i, t in enumerate(model.tensors):
        _check_tensor(f"tensor {i} '{t.name}'", t)
        if t.name in names:
            fail(f"tensor {i} '{t.name}'", f"the name is already used by tensor {names[t.name]}")
        names[t.name] = i
    _check_graph(model)
    for i in range(len(model.operators)):
        _check_operator(model, i)
