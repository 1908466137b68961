"""Lowering: a simplified float IR (ONNX semantics, NCHW) plus quantization parameters for its
values -> a qrt.format.ModelDefinition (int8, channels-last inside).

Every 4-D value becomes an NHWC tensor; the graph's 4-D inputs and outputs keep the source
model's NCHW interface through GraphIO.layout. Ops that only move data keep their input's
quantization (SPEC.md section 3); SOFTMAX outputs get its fixed parameters; a Relu or Clip
that directly follows an op able to fuse it becomes that op's fused activation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from qrt.format import (
    Activation, ConcatOptions, Conv2DOptions, DepthwiseConv2DOptions, DType, Layout,
    LeakyReluOptions, LutOptions, MeanOptions, Metadata, ModelBuilder, OpCode, PadOptions,
    Pool2DOptions, SoftmaxOptions, TransposeOptions,
)
from qrt.numerics import INT32_MAX, SOFTMAX_OUTPUT, accumulator_bound

from . import calibration as C
from .errors import ConversionError, UnsupportedOpsError
from .ir import Graph, Node

TO_NHWC = (0, 2, 3, 1)  # nhwc = nchw.transpose(TO_NHWC)
TO_NCHW = (0, 3, 1, 2)
NCHW_AXIS_IN_NHWC = {0: 0, 1: 3, 2: 1, 3: 2}

# Elementwise functions lowered to a 256-entry table (SPEC.md LUT): float64 math at conversion.
_LUT_FUNCTIONS = {
    "Sigmoid": lambda v, n: 1.0 / (1.0 + np.exp(-v)),
    "Tanh": lambda v, n: np.tanh(v),
    "HardSigmoid": lambda v, n: np.clip(n.attrs.get("alpha", 0.2) * v + n.attrs.get("beta", 0.5), 0.0, 1.0),
    "HardSwish": lambda v, n: v * np.clip(v / 6.0 + 0.5, 0.0, 1.0),
    "SiLU": lambda v, n: v / (1.0 + np.exp(-v)),
    "Gelu": lambda v, n: (0.5 * v * (1.0 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))
                          if n.attrs.get("approximate", "none") == "tanh" else 0.5 * v * (1.0 + _erf(v / np.sqrt(2.0)))),
    "Erf": lambda v, n: _erf(v),
    "Sqrt": lambda v, n: np.sqrt(np.maximum(v, 0.0)),
    "Neg": lambda v, n: -v,
}


@dataclass(frozen=True)
class LoweringRule:
    """How one ONNX op type becomes qrt ops: RULES holds one per op type, made by @lowers on
    the Lowering method that does it."""
    lower: Callable  # lower(lowering, node): adds the node's qrt ops
    supports: Callable | None  # supports(lowering, node) -> bool: whether lower() handles this form
    fusable: bool  # a Relu / Clip right after it becomes its fused activation
    keeps_input_quantization: bool  # moves data only: its output keeps its input's parameters
    fixed_quantization: tuple | None  # (scale, zero point) its output always has


RULES: dict[str, LoweringRule] = {}


def lowers(*ops, supports=None, fusable=False, keeps_input_quantization=False, fixed_quantization=None):
    """Register the decorated Lowering method as the rule of ONNX op types `ops`."""
    def register(fn):
        for op in ops:
            assert op not in RULES, f"two lowering rules for {op}"
            RULES[op] = LoweringRule(fn, supports, fusable, keeps_input_quantization, fixed_quantization)
        return fn
    return register


def _erf(v):
    from math import erf
    return np.vectorize(erf)(v)


@dataclass
class LoweringOptions:
    per_channel: bool = True
    # Per value: mean over all but the channel axis of the float input of each Conv/Gemm
    # (from calibration), for empirical bias correction; empty: no correction.
    input_means: dict = field(default_factory=dict)


@dataclass
class _Value:
    tensor: int
    nhwc: bool  # a 4-D value stored channels-last


class Lowering:
    def __init__(self, graph: Graph, qparams: dict, options: LoweringOptions):
        self.g = graph
        self.qparams = dict(qparams)
        self.opt = options
        self.b = ModelBuilder(graph.name)
        self.values: dict[str, _Value] = {}
        self.consumers = graph.consumers()
        self.producers = graph.producers()
        self.skip: set = set()  # nodes folded into another (activations, SiLU patterns)
        self.fused: dict = {}  # node name/id -> (activation, clip, output value name)
        self.report: list = []  # (source op, qrt ops) for the conversion report

    # ------------------------------------------------------------------ helpers

    def shape(self, name: str) -> tuple:
        return tuple(self.g.shapes[name])

    def q(self, name: str) -> tuple:
        if name not in self.qparams:
            raise ConversionError(f"value '{name}' has no quantization parameters (was it calibrated?)")
        return self.qparams[name]

    def act_tensor(self, name: str, shape=None, qp=None) -> _Value:
        """A new int8 activation tensor for IR value `name` (NHWC when 4-D)."""
        ir_shape = self.shape(name) if shape is None else tuple(shape)
        nhwc = len(ir_shape) == 4
        stored = tuple(ir_shape[i] for i in TO_NHWC) if nhwc else ir_shape
        s, z = self.q(name) if qp is None else qp
        idx = self.b.tensor(self._unique(name), DType.INT8, stored, scale=s, zero_point=z)
        v = _Value(idx, nhwc)
        self.values[name] = v
        return v

    def _unique(self, name: str) -> str:
        existing = {t.name for t in self.b.model.tensors}
        if name not in existing:
            return name
        k = 1
        while f"{name}:{k}" in existing:
            k += 1
        return f"{name}:{k}"

    def value(self, name: str) -> _Value:
        if name in self.values:
            return self.values[name]
        if name in self.g.constants:
            return self.const_activation(name)
        raise ConversionError(f"value '{name}' is read before it is computed")

    def const_activation(self, name: str, target_rank: int | None = None) -> _Value:
        """A float constant used as an activation operand: int8, per tensor, asymmetric."""
        data = np.asarray(self.g.constants[name], dtype=np.float32)
        if target_rank and data.ndim < target_rank:
            data = data.reshape((1,) * (target_rank - data.ndim) + data.shape)
        nhwc = data.ndim == 4
        if nhwc:
            data = data.transpose(TO_NHWC)
        lo, hi = min(float(data.min()), 0.0), max(float(data.max()), 0.0)
        s, z = C.qparams(lo, hi)
        qd = np.clip(np.rint(data / s) + z, -128, 127).astype(np.int8)
        idx = self.b.tensor(self._unique(name), DType.INT8, qd.shape, qd, scale=s, zero_point=z)
        return _Value(idx, nhwc)

    def out_value(self, node: Node) -> str:
        """The IR value the lowered op writes: the fused activation's output, if any."""
        return self.fused[id(node)][2] if id(node) in self.fused else node.outputs[0]

    def activation(self, node: Node):
        act, clip, _ = self.fused.get(id(node), (Activation.NONE, (0.0, 0.0), None))
        return act, clip

    def op(self, code, inputs, outputs, options=None, node: Node | None = None, fuse=False):
        act, clip = self.activation(node) if (fuse and node is not None) else (Activation.NONE, (0.0, 0.0))
        self.b.op(code, [self._idx(i) for i in inputs], [self._idx(o) for o in outputs], options, act, clip,
                  name=node.name if node is not None else "")
        if node is not None:
            self.report.append((node.op, OpCode(code).name))

    @staticmethod
    def _idx(v):
        return v.tensor if isinstance(v, _Value) else v

    def to_layout(self, name: str, want_nhwc: bool) -> _Value:
        """`name`'s tensor in the wanted layout (inserting a TRANSPOSE when it differs)."""
        v = self.value(name)
        if v.nhwc == want_nhwc:
            return v
        t = self.b.model.tensors[v.tensor]
        perm = TO_NCHW if v.nhwc else TO_NHWC
        shape = tuple(t.shape[p] for p in perm)
        s, z = float(t.quant.scale[0]), int(t.quant.zero_point[0])
        idx = self.b.tensor(self._unique(name + ".t"), DType.INT8, shape, scale=s, zero_point=z)
        self.b.op(OpCode.TRANSPOSE, [v.tensor], [idx], TransposeOptions(perm), name=f"{name}.layout")
        return _Value(idx, not v.nhwc)

    # ------------------------------------------------------------------ planning

    def plan_fusions(self):
        outputs = set(self.g.outputs)
        for n in self.g.nodes:
            if n.op not in ("Relu", "Clip"):
                continue
            src = self.producers.get(n.inputs[0])
            if src is None or not RULES[src.op].fusable or n.inputs[0] in outputs:
                continue
            if len(self.consumers.get(n.inputs[0], [])) != 1 or id(src) in self.fused:
                continue
            if n.op == "Relu":
                act, clip = Activation.RELU, (0.0, 0.0)
            else:
                lo, hi = self._clip_bounds(n)
                act, clip = (Activation.RELU6, (0.0, 0.0)) if (lo, hi) == (0.0, 6.0) else (Activation.CLIP, (lo, hi))
                if act == Activation.CLIP and not (math.isfinite(lo) and math.isfinite(hi)):
                    if lo == 0.0 and hi == math.inf:
                        act = Activation.RELU
                    else:
                        continue
            self.fused[id(src)] = (act, clip, n.outputs[0])
            self.skip.add(id(n))
        # x * Sigmoid(x) and x * HardSigmoid(x): one table.
        for n in self.g.nodes:
            if n.op != "Mul" or any(i in self.g.constants for i in n.inputs):
                continue
            for a, b in ((0, 1), (1, 0)):
                gate = self.producers.get(n.inputs[b])
                if gate is not None and gate.op in ("Sigmoid", "HardSigmoid") and gate.inputs[0] == n.inputs[a] \
                        and len(self.consumers.get(gate.outputs[0], [])) == 1 and gate.outputs[0] not in outputs:
                    if gate.op == "HardSigmoid" and (gate.attrs.get("alpha", 0.2), gate.attrs.get("beta", 0.5)) != (1 / 6, 0.5):
                        continue
                    n.attrs["__lut__"] = "SiLU" if gate.op == "Sigmoid" else "HardSwish"
                    n.attrs["__lut_input__"] = n.inputs[a]
                    self.skip.add(id(gate))
                    break

    def _clip_bounds(self, n: Node):
        lo = n.attrs.get("min", -math.inf)
        hi = n.attrs.get("max", math.inf)
        if len(n.inputs) > 1 and n.inputs[1]:
            lo = float(np.asarray(self.g.constants[n.inputs[1]]))
        if len(n.inputs) > 2 and n.inputs[2]:
            hi = float(np.asarray(self.g.constants[n.inputs[2]]))
        return float(lo), float(hi)

    def pin_qparams(self):
        """Outputs that must keep their input's parameters, or take fixed ones."""
        for n in self.g.nodes:
            rule = RULES[n.op]
            if rule.keeps_input_quantization and n.inputs[0] in self.qparams:
                self.qparams[n.outputs[0]] = self.qparams[n.inputs[0]]
            elif rule.fixed_quantization is not None:
                self.qparams[n.outputs[0]] = rule.fixed_quantization

    # ------------------------------------------------------------------ lowering

    def run(self, metadata: Metadata):
        self.check_supported()
        self.plan_fusions()
        self.pin_qparams()
        for name in self.g.inputs:
            v = self.act_tensor(name)
            self.b.input(name, v.tensor, Layout.NCHW if v.nhwc else Layout.AS_STORED)
        for n in self.g.nodes:
            if id(n) in self.skip:
                continue
            RULES[n.op].lower(self, n)
        for name in self.g.outputs:
            v = self.value(name)
            self.b.output(name, v.tensor, Layout.NCHW if v.nhwc else Layout.AS_STORED)
        return self.b.build(metadata)

    def check_supported(self):
        missing = {}
        for n in self.g.nodes:
            rule = RULES.get(n.op)
            if rule is None or (rule.supports is not None and not rule.supports(self, n)):
                missing.setdefault(n.op, []).append(n.name or repr(n))
        if missing:
            raise UnsupportedOpsError(missing, self.g.name)

    # Conv family -----------------------------------------------------------

    def _window(self, n: Node, kh, kw):
        x = self.shape(n.inputs[0])
        y = self.shape(n.outputs[0])
        sh, sw = n.attrs.get("strides", [1, 1])
        dh, dw = n.attrs.get("dilations", [1, 1])
        pads = list(n.attrs.get("pads", [0, 0, 0, 0]))
        auto = n.attrs.get("auto_pad", "NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = []
            for size, out, k, s, d in ((x[2], y[2], kh, sh, dh), (x[3], y[3], kw, sw, dw)):
                total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
                small = total // 2
                pads.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
            pads = [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
        elif auto == "VALID":
            pads = [0, 0, 0, 0]
        # ceil_mode (pools): pad the bottom/right so the window arithmetic yields y's size.
        top, left, bottom, right = pads
        need_h = (y[2] - 1) * sh + (kh - 1) * dh + 1 - (x[2] + top + bottom)
        need_w = (y[3] - 1) * sw + (kw - 1) * dw + 1 - (x[3] + left + right)
        return dict(stride_h=sh, stride_w=sw, pad_top=top, pad_left=left,
                    pad_bottom=bottom + max(need_h, 0), pad_right=right + max(need_w, 0)), (dh, dw)

    def _weights(self, name: str, w: np.ndarray, axis: int):
        """Symmetric int8 weights and their scales (imported scales win, else per channel/tensor)."""
        if name in self.g.weight_qparams:
            scales, qaxis = self.g.weight_qparams[name]
            scales = np.asarray(scales, np.float32)
            if scales.size > 1 and qaxis != axis:
                scales = None
        else:
            scales = None
        if scales is None:
            scales = C.weight_qparams(w, axis, per_channel=self.opt.per_channel)
        return C.quantize_weights(w, scales, axis), scales

    def _bias(self, name: str | None, x_scale: float, w_scales, w_float, w_int, channels: int, reduction: int,
              input_name: str, conv_like: bool):
        s = np.float32(x_scale) * np.broadcast_to(w_scales, (channels,)).astype(np.float32)
        b = np.zeros(channels, np.float64) if not name else np.asarray(self.g.constants[name], np.float64).reshape(-1)
        b = np.broadcast_to(b, (channels,)).astype(np.float64)
        mean = self.opt.input_means.get(input_name)
        if mean is not None:  # empirical bias correction: E[(W - W_q s_w) x] folded into the bias
            deq = w_int.astype(np.float64) * np.broadcast_to(w_scales, (channels,)).reshape((-1,) + (1,) * (w_float.ndim - 1))
            err = (w_float.astype(np.float64) - deq)
            if conv_like:  # [C_out, C_in/g, KH, KW] (grouped: input channel block per group)
                groups = mean.size // err.shape[1]
                m = mean.reshape(groups, err.shape[1])
                cout_g = channels // groups
                b = b + np.concatenate([
                    (err[g * cout_g:(g + 1) * cout_g].sum(axis=(2, 3)) * m[g]).sum(axis=1) for g in range(groups)])
            else:  # [N_out, K]
                b = b + err @ mean.astype(np.float64)
        limit = INT32_MAX - accumulator_bound(reduction)  # the loader's bound (SPEC.md 4.5)
        bq = np.clip(np.rint(b / s.astype(np.float64)), -limit, limit).astype(np.int32)
        return bq, s

    def _conv_supported(self, n: Node) -> bool:
        return len(self.shape(n.inputs[0])) == 4 and n.inputs[1] in self.g.constants

    @lowers("Conv", supports=_conv_supported, fusable=True)
    def lower_Conv(self, n: Node):
        x_name, w_name = n.inputs[0], n.inputs[1]
        w = np.asarray(self.g.constants[w_name], np.float32)  # [M, C/g, KH, KW]
        cin = self.shape(x_name)[1]
        group = int(n.attrs.get("group", 1))
        m, _, kh, kw = w.shape
        win, (dh, dw) = self._window(n, kh, kw)
        x = self.to_layout(x_name, True)
        sx = self.q(x_name)[0]
        wq, ws = self._weights(w_name, w, 0)
        bias_name = n.inputs[2] if len(n.inputs) > 2 and n.inputs[2] else None
        y = self.act_tensor(self.out_value(n), self.shape(n.outputs[0]))
        depthwise = group == cin and group > 1 and m % cin == 0
        if depthwise:
            bq, bs = self._bias(bias_name, sx, ws, w, wq, m, kh * kw, x_name, True)
            wt = wq.transpose(1, 2, 3, 0)  # [1, KH, KW, M]
            wi = self.b.tensor(self._unique(w_name), DType.INT8, wt.shape, wt, scale=ws, axis=3)
            bi = self.b.tensor(self._unique(bias_name or w_name + ".bias"), DType.INT32, (m,), bq, scale=bs)
            opts = DepthwiseConv2DOptions(**win, dilation_h=dh, dilation_w=dw, depth_multiplier=m // cin)
            self.op(OpCode.DEPTHWISE_CONV_2D, [x, wi, bi], [y], opts, n, fuse=True)
        else:
            bq, bs = self._bias(bias_name, sx, ws, w, wq, m, kh * kw * (cin // group), x_name, True)
            wt = wq.transpose(0, 2, 3, 1)  # [M, KH, KW, C/g]
            wi = self.b.tensor(self._unique(w_name), DType.INT8, wt.shape, np.ascontiguousarray(wt), scale=ws, axis=0)
            bi = self.b.tensor(self._unique(bias_name or w_name + ".bias"), DType.INT32, (m,), bq, scale=bs)
            opts = Conv2DOptions(**win, dilation_h=dh, dilation_w=dw, groups=group)
            self.op(OpCode.CONV_2D, [x, wi, bi], [y], opts, n, fuse=True)

    def _fully_connected(self, n: Node, x_name: str, w: np.ndarray, w_name: str, bias):
        """w: [N_out, K] float; bias: float array or None."""
        x = self.to_layout(x_name, False)
        sx = self.q(x_name)[0]
        wq, ws = self._weights(w_name, w, 0)
        nout, k = w.shape
        b_name = None
        if bias is not None:
            b_name = self.g.fresh(w_name + ".bias")
            self.g.constants[b_name] = np.broadcast_to(np.asarray(bias, np.float32).reshape(-1), (nout,)).copy()
        bq, bs = self._bias(b_name, sx, ws, w, wq, nout, k, x_name, False)
        y = self.act_tensor(self.out_value(n), self.shape(n.outputs[0]))
        wi = self.b.tensor(self._unique(w_name), DType.INT8, wq.shape, wq, scale=ws, axis=0)
        bi = self.b.tensor(self._unique(w_name + ".bias"), DType.INT32, (nout,), bq, scale=bs)
        self.op(OpCode.FULLY_CONNECTED, [x, wi, bi], [y], None, n, fuse=True)

    def _fc_supported(self, n: Node) -> bool:
        return n.inputs[1] in self.g.constants and (n.op == "MatMul" or not n.attrs.get("transA", 0))

    @lowers("Gemm", supports=_fc_supported, fusable=True)
    def lower_Gemm(self, n: Node):
        b = np.asarray(self.g.constants[n.inputs[1]], np.float32) * n.attrs.get("alpha", 1.0)
        w = b if n.attrs.get("transB", 0) else b.T
        bias = None
        if len(n.inputs) > 2 and n.inputs[2]:
            bias = np.asarray(self.g.constants[n.inputs[2]], np.float32) * n.attrs.get("beta", 1.0)
        self._fully_connected(n, n.inputs[0], np.ascontiguousarray(w), n.inputs[1], bias)

    @lowers("MatMul", supports=_fc_supported, fusable=True)
    def lower_MatMul(self, n: Node):
        b = np.asarray(self.g.constants[n.inputs[1]], np.float32)
        self._fully_connected(n, n.inputs[0], np.ascontiguousarray(b.T), n.inputs[1], None)

    @lowers("BatchNormalization")
    def lower_BatchNormalization(self, n: Node):
        """An unfolded BatchNorm: a 1x1 depthwise convolution (per-channel scale and shift)."""
        gamma, beta, mean, var = (np.asarray(self.g.constants[i], np.float64) for i in n.inputs[1:5])
        scale = gamma / np.sqrt(var + n.attrs.get("epsilon", 1e-5))
        c = scale.size
        w_name = self.g.fresh(n.outputs[0] + ".bn_scale")
        b_name = self.g.fresh(n.outputs[0] + ".bn_shift")
        self.g.constants[w_name] = scale.astype(np.float32).reshape(c, 1, 1, 1)
        self.g.constants[b_name] = (beta - mean * scale).astype(np.float32)
        conv = Node("Conv", [n.inputs[0], w_name, b_name], n.outputs, {"group": c}, n.name)
        if id(n) in self.fused:
            self.fused[id(conv)] = self.fused[id(n)]
        self.lower_Conv(conv)

    # Elementwise -------------------------------------------------------------

    def _binary(self, n: Node, code):
        out = self.shape(n.outputs[0])
        rank = len(out)
        operands = []
        for name in n.inputs[:2]:
            if name in self.g.constants:
                operands.append(self.const_activation(name, rank))
            else:
                if len(self.shape(name)) != rank:
                    raise ConversionError(f"{n.op} '{n.name}': operands of rank {len(self.shape(name))} "
                                              f"and {rank} (only equal ranks or constants broadcast)")
                operands.append(self.to_layout(name, rank == 4))
        y = self.act_tensor(self.out_value(n), out)
        self.op(code, operands, [y], None, n, fuse=True)

    def _binary_supported(self, n: Node) -> bool:
        """Operands of equal ranks, or a constant that broadcasts."""
        rank = len(self.shape(n.outputs[0]))
        return all(i in self.g.constants or len(self.shape(i)) == rank for i in n.inputs[:2])

    @lowers("Add", supports=_binary_supported, fusable=True)
    def lower_Add(self, n):
        self._binary(n, OpCode.ADD)

    @lowers("Sub", supports=_binary_supported, fusable=True)
    def lower_Sub(self, n):
        self._binary(n, OpCode.SUB)

    @lowers("Mul", supports=_binary_supported, fusable=True)
    def lower_Mul(self, n):
        if "__lut__" in n.attrs:
            return self._lut(n, n.attrs["__lut_input__"], _LUT_FUNCTIONS[n.attrs["__lut__"]], n.attrs["__lut__"])
        self._binary(n, OpCode.MUL)

    def _divisor_constant(self, n: Node) -> bool:
        return n.inputs[1] in self.g.constants

    def _two_operands(self, n: Node) -> bool:
        return len(n.inputs) == 2 and self._binary_supported(n)

    @lowers("Max", "Min", supports=_two_operands, fusable=True)
    def lower_extremum(self, n):
        self._binary(n, OpCode.MAXIMUM if n.op == "Max" else OpCode.MINIMUM)

    @lowers("Div", supports=_divisor_constant)
    def lower_Div(self, n):
        if n.inputs[1] not in self.g.constants:
            raise ConversionError(f"Div '{n.name}': only division by a constant is supported")
        recip = self.g.fresh(n.inputs[1] + ".reciprocal")
        self.g.constants[recip] = (1.0 / np.asarray(self.g.constants[n.inputs[1]], np.float64)).astype(np.float32)
        self._binary(Node("Mul", [n.inputs[0], recip], n.outputs, {}, n.name), OpCode.MUL)

    def _requantize(self, n: Node, act=Activation.NONE, clip=(0.0, 0.0)):
        x = self.value(n.inputs[0])
        y = self.act_tensor(n.outputs[0])
        self.b.op(OpCode.REQUANTIZE, [x.tensor], [y.tensor], None, act, clip, name=n.name)
        self.report.append((n.op, "REQUANTIZE"))

    @lowers("Relu")
    def lower_Relu(self, n):
        self._requantize(n, Activation.RELU)

    @lowers("Clip")
    def lower_Clip(self, n):
        lo, hi = self._clip_bounds(n)
        lo, hi = max(lo, -3.0e38), min(hi, 3.0e38)
        self._requantize(n, Activation.CLIP, (lo, hi))

    @lowers("LeakyRelu")
    def lower_LeakyRelu(self, n):
        x = self.value(n.inputs[0])
        y = self.act_tensor(n.outputs[0])
        self.op(OpCode.LEAKY_RELU, [x], [y], LeakyReluOptions(float(n.attrs.get("alpha", 0.01))), n)

    def _alpha_constant(self, n: Node) -> bool:
        return n.inputs[1] in self.g.constants

    @lowers("PRelu", supports=_alpha_constant)
    def lower_PRelu(self, n):
        x = self.value(n.inputs[0])
        rank = len(self.shape(n.inputs[0]))
        alpha = self.const_activation(n.inputs[1], rank)
        y = self.act_tensor(n.outputs[0])
        self.op(OpCode.PRELU, [x, alpha], [y], None, n)

    def _lut(self, n: Node, x_name: str, fn, label: str):
        x = self.value(x_name)
        sx, zx = self.q(x_name)
        sy, zy = self.q(n.outputs[0])
        real = np.float64(sx) * (np.arange(-128, 128, dtype=np.float64) - zx)
        table = np.clip(np.rint(fn(real, n) / np.float64(sy)) + zy, -128, 127).astype(np.int8)
        ti = self.b.tensor(self._unique(n.outputs[0] + ".table"), DType.INT8, (256,), table)
        y = self.act_tensor(n.outputs[0])
        self.op(OpCode.LUT, [x, ti], [y], LutOptions(label), n)

    @lowers("Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Gelu", "Erf", "Sqrt", "Neg")
    def lower_table(self, n):
        """An elementwise function as a 256-entry table (its float64 math in _LUT_FUNCTIONS)."""
        self._lut(n, n.inputs[0], _LUT_FUNCTIONS[n.op], n.op)

    @lowers("Softmax", fixed_quantization=SOFTMAX_OUTPUT)
    def lower_Softmax(self, n):
        x = self.value(n.inputs[0])
        rank = len(self.shape(n.inputs[0]))
        axis = n.attrs.get("axis", -1) % rank
        if x.nhwc:
            axis = NCHW_AXIS_IN_NHWC[axis]
        y = self.act_tensor(n.outputs[0])
        self.op(OpCode.SOFTMAX, [x], [y], SoftmaxOptions(axis=axis, beta=1.0), n)

    # Pooling and reductions --------------------------------------------------

    def _pool(self, n: Node, code):
        kh, kw = n.attrs["kernel_shape"]
        win, dil = self._window(n, kh, kw)
        if dil != (1, 1):
            raise ConversionError(f"{n.op} '{n.name}': dilated pooling is not supported")
        include = bool(n.attrs.get("count_include_pad", 0))
        pads = list(n.attrs.get("pads", [0, 0, 0, 0]))
        if include and (win["pad_bottom"], win["pad_right"]) != (pads[2], pads[3]):
            # ceil_mode windows that overhang the padded input count only what they cover: with
            # no explicit padding that is exactly count_include_pad = False.
            if any(pads):
                raise ConversionError(f"{n.op} '{n.name}': ceil_mode with padding and count_include_pad "
                                      f"is not supported")
            include = False
        x = self.to_layout(n.inputs[0], True)
        y = self.act_tensor(self.out_value(n), self.shape(n.outputs[0]))
        opts = Pool2DOptions(kh, kw, **win, count_include_pad=include)
        self.op(code, [x], [y], opts, n, fuse=code == OpCode.AVERAGE_POOL_2D)

    def _pool_supported(self, n: Node) -> bool:
        return list(n.attrs.get("dilations", [1, 1])) == [1, 1] and len(self.shape(n.inputs[0])) == 4

    @lowers("MaxPool", supports=_pool_supported, keeps_input_quantization=True)
    def lower_MaxPool(self, n):
        self._pool(n, OpCode.MAX_POOL_2D)

    @lowers("AveragePool", supports=_pool_supported, fusable=True)
    def lower_AveragePool(self, n):
        self._pool(n, OpCode.AVERAGE_POOL_2D)

    def _mean(self, n: Node, axes, keep):
        rank = len(self.shape(n.inputs[0]))
        axes = sorted({a % rank for a in axes})
        x = self.value(n.inputs[0])
        stored_axes = tuple(axes)
        if x.nhwc:
            kept = set(range(4)) - set(axes)
            if not keep and 1 in kept and kept & {2, 3}:
                # The result would list C before H/W in NCHW but after them in NHWC: go via NCHW.
                x = self.to_layout(n.inputs[0], False)
            else:
                stored_axes = tuple(sorted(NCHW_AXIS_IN_NHWC[a] for a in axes))
        y = self.act_tensor(self.out_value(n), self.shape(n.outputs[0]))
        self.op(OpCode.MEAN, [x], [y], MeanOptions(stored_axes, bool(keep)), n, fuse=True)

    @lowers("GlobalAveragePool", fusable=True)
    def lower_GlobalAveragePool(self, n):
        self._mean(n, (2, 3), True)

    @lowers("ReduceMean", fusable=True)
    def lower_ReduceMean(self, n):
        axes = n.attrs.get("axes")
        if axes is None and len(n.inputs) > 1 and n.inputs[1]:
            axes = [int(a) for a in np.asarray(self.g.constants[n.inputs[1]]).reshape(-1)]
        if axes is None:
            axes = list(range(len(self.shape(n.inputs[0]))))
        self._mean(n, axes, bool(n.attrs.get("keepdims", 1)))

    @lowers("GlobalMaxPool", keeps_input_quantization=True)
    def lower_GlobalMaxPool(self, n):
        xs = self.shape(n.inputs[0])
        node = Node("MaxPool", n.inputs, n.outputs, {"kernel_shape": [xs[2], xs[3]]}, n.name)
        self._pool(node, OpCode.MAX_POOL_2D)

    # Data movement -------------------------------------------------------------

    @lowers("Concat")
    def lower_Concat(self, n):
        rank = len(self.shape(n.outputs[0]))
        axis = n.attrs.get("axis", 0) % rank
        ins = [self.to_layout(i, rank == 4) if i not in self.g.constants else self.const_activation(i, rank)
               for i in n.inputs]
        if rank == 4:
            axis = NCHW_AXIS_IN_NHWC[axis]
        y = self.act_tensor(n.outputs[0])
        self.op(OpCode.CONCAT, ins, [y], ConcatOptions(axis), n)

    @lowers("Reshape", "Flatten", "Squeeze", "Unsqueeze", keeps_input_quantization=True)
    def lower_reshape(self, n: Node):
        """Element order follows the source model's NCHW layout: go through NCHW when needed."""
        out_shape = self.shape(n.outputs[0])
        src = n.inputs[0]
        in_shape = self.shape(src)
        x = self.value(src)
        s, z = self.q(src)
        if x.nhwc and in_shape[2] * in_shape[3] != 1 and in_shape[1] != 1:
            x = self.to_layout(src, False)
        if len(out_shape) == 4:
            mid = self.b.tensor(self._unique(n.outputs[0] + ".nchw"), DType.INT8, out_shape, scale=s, zero_point=z)
            self.op(OpCode.RESHAPE, [x], [mid], None, n)
            self.values[n.outputs[0]] = _Value(mid, False)
            v = self.to_layout(n.outputs[0], True)
            self.values[n.outputs[0]] = v
        else:
            y = self.act_tensor(n.outputs[0])
            self.op(OpCode.RESHAPE, [x], [y], None, n)

    @lowers("Transpose", keeps_input_quantization=True)
    def lower_Transpose(self, n):
        perm = list(n.attrs.get("perm", list(range(len(self.shape(n.inputs[0]))))[::-1]))
        rank = len(perm)
        x = self.value(n.inputs[0])
        if rank == 4:
            x = self.to_layout(n.inputs[0], True)
            # y_nhwc = x_nhwc.transpose(q) with q[i] = TO_NCHW[perm[TO_NHWC[i]]]
            perm = [TO_NCHW[perm[TO_NHWC[i]]] for i in range(4)]
        y = self.act_tensor(n.outputs[0])
        self.op(OpCode.TRANSPOSE, [x], [y], TransposeOptions(tuple(perm)), n)

    def _pad_supported(self, n: Node) -> bool:
        value_ok = len(n.inputs) < 3 or not n.inputs[2] or (
            n.inputs[2] in self.g.constants and float(np.asarray(self.g.constants[n.inputs[2]])) == 0.0)
        return n.attrs.get("mode", "constant") in ("constant", b"constant") and value_ok

    @lowers("Pad", supports=_pad_supported, keeps_input_quantization=True)
    def lower_Pad(self, n):
        pads = n.attrs.get("pads")
        if pads is None:
            pads = [int(p) for p in np.asarray(self.g.constants[n.inputs[1]]).reshape(-1)]
        if len(n.inputs) > 2 and n.inputs[2] and float(np.asarray(self.g.constants[n.inputs[2]])) != 0.0:
            raise ConversionError(f"Pad '{n.name}': only zero padding is supported")
        rank = len(pads) // 2
        x = self.value(n.inputs[0])
        if rank == 4:
            x = self.to_layout(n.inputs[0], True)
            pads = [pads[TO_NHWC[i]] for i in range(4)] + [pads[4 + TO_NHWC[i]] for i in range(4)]
        y = self.act_tensor(n.outputs[0])
        self.op(OpCode.PAD, [x], [y], PadOptions(tuple(pads)), n)


# Shape arithmetic and no-ops that simplify() folds into constants or removes.
FOLDED_OPS = {"Identity", "Dropout", "Constant", "Shape", "Gather", "Slice", "Cast", "CastLike",
              "ConstantOfShape", "Range", "Expand", "Equal", "Where", "Split"}


def quantizable(op: str) -> bool:
    """Whether an ONNX op type has an int8 form here (or disappears before lowering)."""
    return op in RULES or op in FOLDED_OPS


def check_quantizable(graph: Graph):
    """Raise UnsupportedOpsError listing every node of a simplified graph that cannot be
    lowered (before any calibration is spent on it)."""
    Lowering(graph, {}, LoweringOptions()).check_supported()


def lower(graph: Graph, qparams: dict, options: LoweringOptions | None = None, metadata: Metadata | None = None):
    """(qrt.format.ModelDefinition, [(source op, qrt op)]) for a simplified, shape-inferred graph."""
    low = Lowering(graph, qparams, options or LoweringOptions())
    model = low.run(metadata or Metadata())
    return model, low.report
