"""Lowering: a simplified float IR (ONNX semantics, NCHW) plus quantization parameters for its
values -> a qrt.format.ModelDefinition (channels-last inside).

Each node computes in the form its scheme gives it (converters/schemes.py): int8 (the
default), float32 (a float island), weight-only or dynamic. Its tensors are int8 or float32
accordingly, and where a value crosses from one to the other a QUANTIZE or DEQUANTIZE is
inserted (once per value and direction). A value is stored in the source's order or channels
last (axis 1 moved to the end: NHWC images, [N, L, C] signals), as the ops around it want
(convolutions and pools read channels last, attention reads the source's order); a TRANSPOSE goes
where a reader wants the other. The graph's 4-D inputs and outputs keep the source model's NCHW
interface through GraphIO.layout. Ops that
only move data keep their input's quantization (SPEC.md section 3); SOFTMAX outputs get its
fixed parameters; a Relu or Clip that directly follows an op able to fuse it becomes that op's
fused activation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from qrt.format import (
    Activation, BatchMatMulOptions, ConcatOptions, Conv2DOptions, DepthwiseConv2DOptions, DType, InputQuantization,
    LayerNormOptions, Layout, LeakyReluOptions, LutOptions, MeanOptions, Metadata, ModelBuilder, OpCode, PadMode,
    PadOptions, Pool2DOptions, GatherOptions, RecurrentOptions, ReduceFunction, ReduceOptions, SliceOptions, SoftmaxOptions,
    TransposeOptions, UnaryFunction, UnaryOptions,
)
from qrt.format.model import NUMPY_DTYPE, QUANT_RANGE, pack_int4
from qrt.ops.recurrent import GATE_BITS, make_table
from qrt.ops.window import out_size
from qrt.numerics import INT32_MAX, SOFTMAX_OUTPUT, SOFTMAX_OUTPUT_16, accumulator_bound, int16_accumulator_bound

from . import calibration as C
from . import float_exec, resampling
from .errors import ConversionError, UnsupportedOpsError
from .ir import Graph, Node
from .schemes import DYNAMIC, FLOAT32, INT8, INT16, WEIGHT_ONLY, Scheme, SchemeTable, node_form



def last_perm(rank: int) -> tuple:
    """stored = source.transpose(last_perm(rank)) for a channels-last value: axis 1 to the end."""
    return (0,) + tuple(range(2, rank)) + (1,)


def first_perm(rank: int) -> tuple:
    """The inverse of last_perm: a channels-last array back to the source's order."""
    return (0, rank - 1) + tuple(range(1, rank - 1))


def stored_order(rank: int, last: bool) -> tuple:
    """The source axes in storage order (channels last only for 3-D and 4-D values)."""
    return last_perm(rank) if last and rank in (3, 4) else tuple(range(rank))


def _element_order(shape, last: bool) -> list:
    """How a value's stored elements walk its source-order elements, as (size, stride) runs:
    equal for two shapes and layouts exactly when a RESHAPE between them keeps every element."""
    strides = np.cumprod((1,) + tuple(shape[:0:-1]))[::-1]
    runs = []
    for a in stored_order(len(shape), last):
        if shape[a] == 1:
            continue
        if runs and runs[-1][1] == strides[a] * shape[a]:
            runs[-1] = (runs[-1][0] * shape[a], int(strides[a]))
        else:
            runs.append((int(shape[a]), int(strides[a])))
    return runs

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
    "Exp": lambda v, n: np.exp(v),
    "Log": lambda v, n: np.log(np.maximum(v, np.finfo(np.float64).tiny)),
    "Abs": lambda v, n: np.abs(v),
}
# The same functions in a float island: UNARY computes them in float32 at run time.
_UNARY_FUNCTIONS = {
    "Sigmoid": UnaryFunction.SIGMOID, "Tanh": UnaryFunction.TANH, "HardSigmoid": UnaryFunction.HARD_SIGMOID,
    "HardSwish": UnaryFunction.HARD_SWISH, "SiLU": UnaryFunction.SILU, "Erf": UnaryFunction.ERF,
    "Sqrt": UnaryFunction.SQRT, "Neg": UnaryFunction.NEG, "Exp": UnaryFunction.EXP, "Log": UnaryFunction.LOG,
    "Abs": UnaryFunction.ABS,
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
    int16: bool  # its qrt ops have int16 forms (SPEC.md 4.6)
    fixed_quantization16: tuple | None = None  # the same for its int16 output (int16 forms)


RULES: dict[str, LoweringRule] = {}


def lowers(*ops, supports=None, fusable=False, keeps_input_quantization=False, fixed_quantization=None,
           int16=False, fixed_quantization16=None):
    """Register the decorated Lowering method as the rule of ONNX op types `ops`."""
    assert fixed_quantization16 is None or int16, "a fixed int16 output needs an int16 form"
    def register(fn):
        for op in ops:
            assert op not in RULES, f"two lowering rules for {op}"
            RULES[op] = LoweringRule(fn, supports, fusable, keeps_input_quantization, fixed_quantization, int16,
                                     fixed_quantization16)
        return fn
    return register


# Activations an LSTM / GRU gate may use: bounded by 1, so that a table of int16 values in units
# of 2^-15 holds them (ScaledTanh only with |alpha| <= 1, checked when its table is made).
_BOUNDED_ACTIVATIONS = {"sigmoid", "tanh", "hardsigmoid", "softsign", "scaledtanh"}

_PAD_MODES = {"constant": PadMode.CONSTANT, "reflect": PadMode.REFLECT, "edge": PadMode.EDGE, "wrap": PadMode.WRAP}
# RESIZE's weight fraction bits per form: int8 sums then fit int32 (255 x 2^22), int16's need
# int64 but keep the weights' rounding under one int16 step; SPEC.md 2.13.27
_RESIZE_FRAC_BITS = {INT8: 11, INT16: 15}


def _text(v) -> str:
    """A string attribute as str (ONNX readers may leave bytes)."""
    return v.decode() if isinstance(v, bytes) else v


def _erf(v):
    from math import erf
    return np.vectorize(erf)(v)


@dataclass
class LoweringOptions:
    per_channel: bool = True
    # Per value: mean over all but the channel axis of the float input of each Conv/Gemm
    # (from calibration), for empirical bias correction; empty: no correction.
    input_means: dict = field(default_factory=dict)
    # The scheme of each node (default: static int8 everywhere).
    schemes: SchemeTable = field(default_factory=lambda: SchemeTable(Scheme()))
    # Bias correction (input_means) only for int4 weights, whose rounding error is large: the
    # converter's default; False when the user asked for it everywhere.
    correct_int4_only: bool = False
    # Per weight: the summed Gram matrix of its layer's calibration inputs (calibration.input_gram),
    # for GPTQ rounding of static int8 weights; empty: round to nearest.
    weight_grams: dict = field(default_factory=dict)
    # Per value: the (min, max) calibration saw, for the int16 tables' output ranges (plan_tables).
    ranges: dict = field(default_factory=dict)


@dataclass
class _Value:
    tensor: int
    last: bool  # a 3-D or 4-D value stored channels last (stored_order)


class Lowering:
    def __init__(self, graph: Graph, qparams: dict, options: LoweringOptions, qparams16: dict | None = None):
        self.g = graph
        self.qparams = dict(qparams)
        self.qparams16 = dict(qparams16 or {})  # the values' int16 (scale, 0), for int16 forms
        self.opt = options
        self.b = ModelBuilder(graph.name)
        self.values: dict[str, _Value] = {}
        self.consumers = graph.consumers()
        self.producers = graph.producers()
        self.skip: set = set()  # nodes folded into another (activations, SiLU patterns)
        self.masked: dict | None = None  # masked softmaxes (plan_masks), once planned
        self.fused: dict = {}  # node name/id -> (activation, clip, output value name)
        self.report: list = []  # (source op, qrt op, form, node name) for the conversion report
        self.notes: list = []  # where a node's scheme could not be followed, and what was done instead
        self.forms: dict = {}  # node id -> the form it computes in (schemes.py)
        self.schemes: dict = {}  # node id -> its Scheme
        self.cur = INT8  # the form of the node being lowered
        self.scheme = Scheme()  # and its scheme
        self.converted: dict = {}  # (value name, float?) -> _Value: a value moved across Q/DQ
        self.rounded: dict = {}  # (weight name, scales) -> GPTQ-rounded int8 weights
        self.recurrent: dict = {}  # LSTM / GRU node id -> (hidden state's parameters, cell state's)
        self.cell_inputs: set = set()  # graph inputs that are an LSTM's initial cell state (int16)

    # ------------------------------------------------------------------ helpers

    def shape(self, name: str) -> tuple:
        return tuple(self.g.shapes[name])

    def q(self, name: str, dtype: DType | None = None) -> tuple:
        """`name`'s (scale, zero point) as an int8 value or, in the int16 domain (or asked), int16."""
        table = self.qparams16 if (dtype or self.act_dtype) == DType.INT16 else self.qparams
        if name not in table:
            raise ConversionError(f"value '{name}' has no quantization parameters (was it calibrated?)")
        return table[name]

    @property
    def floating(self) -> bool:
        """Whether the node being lowered has float32 activations."""
        return self.cur not in (INT8, INT16)

    @property
    def act_dtype(self) -> DType:
        """The dtype of the current node's activations: its domain."""
        return DType.FLOAT32 if self.floating else DType.INT16 if self.cur == INT16 else DType.INT8

    def new_activation(self, name: str, stored_shape, qp=None) -> int:
        """A run-time tensor in the current node's domain: int8 or int16 with `name`'s
        parameters (or qp), or float32."""
        if self.floating:
            return self.b.tensor(self._unique(name), DType.FLOAT32, stored_shape)
        s, z = self.q(name) if qp is None else qp
        return self.b.tensor(self._unique(name), self.act_dtype, stored_shape, scale=s, zero_point=z)

    def act_tensor(self, name: str, shape=None, qp=None, last: bool = False) -> _Value:
        """A new activation tensor for IR value `name` (channels last when asked and 3-D or
        4-D, else in the source's order), in the current domain."""
        ir_shape = self.shape(name) if shape is None else tuple(shape)
        last = last and len(ir_shape) in (3, 4)
        stored = tuple(ir_shape[i] for i in stored_order(len(ir_shape), last))
        v = _Value(self.new_activation(name, stored, qp), last)
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
        """`name`'s tensor in the current node's domain (through a QUANTIZE or DEQUANTIZE when
        it was computed in the other one)."""
        if name in self.values:
            return self._in_domain(name, self.values[name])
        if name in self.g.constants:
            return self.const_activation(name)
        raise ConversionError(f"value '{name}' is read before it is computed")

    def _in_domain(self, name: str, v: _Value) -> _Value:
        t = self.b.model.tensors[v.tensor]
        if t.dtype in (DType.INT32, DType.INT64):
            raise ConversionError(f"integer input '{name}' is read as a number: qrt reads integer inputs only as "
                                  f"GATHER indices (embeddings) and attention masks (Add of its float form to "
                                  f"scores before a Softmax); freeze it if it is constant (--freeze)")
        want = self.act_dtype
        if t.dtype == want:
            return v
        key = (name, want)
        if key not in self.converted:
            if want == DType.FLOAT32:
                idx = self.b.tensor(self._unique(name + ".float"), DType.FLOAT32, t.shape)
                code, suffix = OpCode.DEQUANTIZE, "dequantize"
            else:
                s, z = self.q(name)
                idx = self.b.tensor(self._unique(f"{name}.{want.name.lower()}"), want, t.shape, scale=s, zero_point=z)
                code = OpCode.QUANTIZE if t.dtype == DType.FLOAT32 else OpCode.REQUANTIZE
                suffix = code.name.lower()
            self.b.op(code, [v.tensor], [idx], name=f"{name}.{suffix}")
            self.report.append(("", code.name, INT16 if DType.INT16 in (t.dtype, want) else INT8, name))
            self.converted[key] = _Value(idx, v.last)
        return self.converted[key]

    def _constant_qparams(self, name: str, form: str) -> tuple:
        """A constant's per-tensor parameters over its whole range: int16 symmetric, int8
        asymmetric with 0 inside."""
        data = np.asarray(self.g.constants[name], dtype=np.float32)
        if form == INT16:
            return C.int16_qparams(float(data.min()), float(data.max()))
        return C.qparams(min(float(data.min()), 0.0), max(float(data.max()), 0.0))

    def const_activation(self, name: str, target_rank: int | None = None, last: bool = False) -> _Value:
        """A float constant used as an activation operand (channels last when asked and 3-D or
        4-D): int8, per tensor, asymmetric (float32 in a float island)."""
        data = np.asarray(self.g.constants[name], dtype=np.float32)
        if target_rank and data.ndim < target_rank:
            data = data.reshape((1,) * (target_rank - data.ndim) + data.shape)
        last = last and data.ndim in (3, 4)
        data = data.transpose(stored_order(data.ndim, last))
        if self.floating:
            return _Value(self.b.tensor(self._unique(name), DType.FLOAT32, data.shape, data), last)
        s, z = self._constant_qparams(name, self.cur)
        if self.cur == INT16:
            qd = np.clip(np.rint(data / s), -32768, 32767).astype(np.int16)
            return _Value(self.b.tensor(self._unique(name), DType.INT16, qd.shape, qd, scale=s, zero_point=z), last)
        qd = np.clip(np.rint(data / s) + z, -128, 127).astype(np.int8)
        idx = self.b.tensor(self._unique(name), DType.INT8, qd.shape, qd, scale=s, zero_point=z)
        return _Value(idx, last)

    def out_value(self, node: Node) -> str:
        """The IR value the lowered op writes: the fused activation's output, if any."""
        return self.fused[id(node)][2] if id(node) in self.fused else node.outputs[0]

    def activation(self, node: Node):
        act, clip, _ = self.fused.get(id(node), (Activation.NONE, (0.0, 0.0), None))
        return act, clip

    def op(self, code, inputs, outputs, options=None, node: Node | None = None, fuse=False,
           input_quantization=InputQuantization.NONE):
        act, clip = self.activation(node) if (fuse and node is not None) else (Activation.NONE, (0.0, 0.0))
        self.b.op(code, [self._idx(i) for i in inputs], [self._idx(o) for o in outputs], options, act, clip,
                  name=node.name if node is not None else "", input_quantization=input_quantization)
        if node is not None:
            form = self.cur
            if form in (WEIGHT_ONLY, DYNAMIC) and code not in (OpCode.CONV_2D, OpCode.FULLY_CONNECTED):
                form = FLOAT32
            self.report.append((node.op, OpCode(code).name, form, node.name))

    @staticmethod
    def _idx(v):
        return v.tensor if isinstance(v, _Value) else v

    def to_layout(self, name: str, last: bool, v: _Value | None = None) -> _Value:
        """`name`'s tensor (or its tensor v) channels last or in the source's order (through a
        TRANSPOSE, once, when stored the other way)."""
        v = self.value(name) if v is None else v
        if v.last == last or len(self.shape(name)) not in (3, 4):
            return v
        key = (name, v.tensor, last)
        if key not in self.converted:
            t = self.b.model.tensors[v.tensor]
            rank = len(t.shape)
            perm = last_perm(rank) if last else first_perm(rank)
            idx = self._like(t, name + ".t", tuple(t.shape[p] for p in perm))
            self.b.op(OpCode.TRANSPOSE, [v.tensor], [idx], TransposeOptions(perm), name=f"{name}.layout")
            self.converted[key] = _Value(idx, last)
        return self.converted[key]

    def _like(self, t, name: str, shape) -> int:
        """A new tensor of t's dtype and quantization in another shape."""
        if t.quant is None:
            return self.b.tensor(self._unique(name), t.dtype, shape)
        s, z = float(t.quant.scale[0]), int(t.quant.zero_point[0])
        return self.b.tensor(self._unique(name), t.dtype, shape, scale=s, zero_point=z)

    def image_view(self, name: str) -> _Value:
        """`name` as a 4-D channels-last tensor: a signal [N, C, L] as the image [N, 1, L, C]
        (a RESHAPE that the arena aliases), for CONV_2D and the pools."""
        x = self.to_layout(name, True)
        if len(self.shape(name)) == 4:
            return x
        shape = self.b.model.tensors[x.tensor].shape
        return self._view(x, name + ".image", (shape[0], 1) + tuple(shape[1:]), True)

    def _view(self, v: _Value, name: str, shape, last: bool) -> _Value:
        """v's tensor in another shape of the same elements (a RESHAPE that the arena aliases),
        made once per tensor and shape."""
        key = (v.tensor, tuple(shape))
        if key not in self.converted:
            idx = self._like(self.b.model.tensors[v.tensor], name, tuple(shape))
            self.b.op(OpCode.RESHAPE, [v.tensor], [idx], name=name)
            self.converted[key] = _Value(idx, last)
        return self.converted[key]

    def image_output(self, name: str) -> tuple:
        """(the 4-D channels-last tensor an image op writes, then-call) for IR value `name`; for
        a signal the then-call adds the RESHAPE back to [N, L, C] after the op."""
        shape = self.shape(name)
        if len(shape) == 4:
            return self.act_tensor(name, last=True), lambda: None
        y = self.act_tensor(name, last=True)
        t = self.b.model.tensors[y.tensor]
        img = _Value(self._like(t, name + ".image", (t.shape[0], 1) + tuple(t.shape[1:])), True)
        return img, lambda: self.b.op(OpCode.RESHAPE, [img.tensor], [y.tensor], name=f"{name}.signal")

    # ------------------------------------------------------------------ planning

    def plan_bias_adds(self):
        """MatMul(x, W) + b (how exporters write nn.Linear on inputs of rank > 2): the constant b
        of the last axis' size becomes the FULLY_CONNECTED's bias, and the Add goes."""
        self.matmul_bias, self.bias_owner = {}, {}  # id(MatMul) -> b; id(Add) -> its MatMul
        outputs = set(self.g.outputs)
        for m in self.g.nodes:
            if m.op != "MatMul" or m.inputs[1] not in self.g.constants or m.outputs[0] in outputs:
                continue
            readers = self.consumers.get(m.outputs[0], [])
            add = readers[0] if len(readers) == 1 else None
            if add is None or add.op != "Add" or id(add) in self.skip:
                continue
            k = next((i for i in add.inputs if i != m.outputs[0] and i in self.g.constants), None)
            n_out = np.shape(self.g.constants[m.inputs[1]])[-1]
            b = None if k is None else np.asarray(self.g.constants[k], np.float32)
            if b is None or b.size != n_out or (b.ndim and b.shape[-1] != n_out) or \
                    self.shape(add.outputs[0]) != self.shape(m.outputs[0]):
                continue
            self.matmul_bias[id(m)] = b.reshape(-1)
            self.bias_owner[id(add)] = m
            self.skip.add(id(add))
            self.fused[id(m)] = (Activation.NONE, (0.0, 0.0), add.outputs[0])

    def plan_fusions(self):
        self.plan_bias_adds()
        outputs = set(self.g.outputs)
        for n in self.g.nodes:
            if n.op not in ("Relu", "Clip"):
                continue
            src = self.producers.get(n.inputs[0])
            if src is not None and id(src) in self.bias_owner:  # after a folded bias: the MatMul's
                src = self.bias_owner[id(src)]
            if src is None or not RULES[src.op].fusable or n.inputs[0] in outputs:
                continue
            folded = self.fused.get(id(src))  # the bias fold's entry, which the activation extends
            if len(self.consumers.get(n.inputs[0], [])) != 1 or (
                    folded is not None and (folded[0] != Activation.NONE or folded[2] != n.inputs[0])):
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
        """(min, max); min above max makes every output max (ONNX Clip)."""
        lo = n.attrs.get("min", -math.inf)
        hi = n.attrs.get("max", math.inf)
        if len(n.inputs) > 1 and n.inputs[1]:
            lo = float(np.asarray(self.g.constants[n.inputs[1]]))
        if len(n.inputs) > 2 and n.inputs[2]:
            hi = float(np.asarray(self.g.constants[n.inputs[2]]))
        return float(min(lo, hi)), float(hi)

    def plan_tables(self):
        """An int16 table (SPEC.md 2.13.14) interpolates between entries 128 input steps apart:
        the output's range must hold the function at every entry around the inputs calibration
        saw (clamped entries bend the last segment), so it widens to them, before any reader
        takes its parameters."""
        for n in self.g.nodes:
            label = n.attrs.get("__lut__", n.op if n.op in _LUT_FUNCTIONS else None)
            x = n.attrs.get("__lut_input__", n.inputs[0] if n.inputs else None)
            out = n.outputs[0] if n.outputs else None
            if label is None or id(n) in self.skip or self.forms.get(id(n)) != INT16 or x not in self.opt.ranges \
                    or x not in self.qparams16 or out not in self.qparams16:
                continue
            lo, hi = self.opt.ranges[x]
            sx = np.float64(self.qparams16[x][0])
            first = int(np.clip(np.floor((lo / sx + 32768) / 128), 0, 512))
            last = int(np.clip(np.ceil((hi / sx + 32768) / 128), 0, 512))
            f = _LUT_FUNCTIONS[label](sx * (np.arange(first, last + 1, dtype=np.float64) * 128 - 32768), n)
            top = 32767 * np.float64(self.qparams16[out][0])
            if np.isfinite(f).all() and np.abs(f).max() > top:
                self.qparams16[out] = C.int16_qparams(-float(np.abs(f).max()), float(np.abs(f).max()))

    def pin_qparams(self):
        """Outputs that must keep their input's parameters, or take fixed ones; a Gather from a
        constant table (an embedding) has the table's (const_activation), first, so that the ops
        after it keep those."""
        for n in self.g.nodes:
            if n.op == "Gather" and n.inputs[0] in self.g.constants and n.outputs[0] in self.qparams:
                self.qparams[n.outputs[0]] = self._constant_qparams(n.inputs[0], INT8)
                if n.outputs[0] in self.qparams16:
                    self.qparams16[n.outputs[0]] = self._constant_qparams(n.inputs[0], INT16)
        for n in self.g.nodes:
            if id(n) in self.skip and n.op not in RULES:  # a mask's Where
                continue
            rule = RULES[n.op]
            if rule.keeps_input_quantization:
                for table in (self.qparams, self.qparams16):
                    if n.inputs[0] in table:
                        for out in n.outputs:  # Split: every output
                            if out:
                                table[out] = table[n.inputs[0]]
            else:
                if rule.fixed_quantization is not None:
                    self.qparams[n.outputs[0]] = rule.fixed_quantization
                if rule.fixed_quantization16 is not None:
                    self.qparams16[n.outputs[0]] = rule.fixed_quantization16

    # ------------------------------------------------------------------ lowering

    def plan_forms(self):
        """Each node's scheme and form (schemes.py)."""
        table = self.opt.schemes
        self.forms = node_forms(self.g, table)
        self.schemes = {id(n): table.scheme(n.name, n.op) for n in self.g.nodes}
        unused = table.unused()
        if unused:
            raise ConversionError(f"scheme overrides match no node of the model: {', '.join(unused)} (keys are "
                                  f"node names, op types or 're:<pattern>' over node names)")

    def input_form(self, name: str) -> str:
        """A graph input is float32 when any node that reads it computes in float32, else int16
        when one computes in int16, else int8."""
        if name in self.cell_inputs:
            return INT16
        readers = {self.forms[id(n)] for n in self.consumers.get(name, []) if id(n) not in self.skip}
        return FLOAT32 if readers - {INT8, INT16} else INT16 if INT16 in readers else INT8

    def run(self, metadata: Metadata):
        self.plan_forms()
        self.check_supported()
        self.plan_fusions()
        self.plan_tables()
        self.plan_recurrent_states()
        self.pin_qparams()
        for name in self.g.inputs:
            if name in self.g.dtypes:  # ids, masks: integers as they are
                dtype = DType.INT32 if self.g.dtypes[name] == np.int32 else DType.INT64
                v = self.values[name] = _Value(self.b.tensor(self._unique(name), dtype, self.shape(name)), False)
                self.b.input(name, v.tensor, Layout.AS_STORED)
                continue
            self.cur = self.input_form(name)
            v = self.act_tensor(name, last=len(self.shape(name)) == 4)  # images: NCHW outside, NHWC inside
            self.b.input(name, v.tensor, Layout.NCHW if v.last else Layout.AS_STORED)
        for n in self.g.nodes:
            if id(n) in self.skip:
                continue
            self.cur, self.scheme = self.forms[id(n)], self.schemes[id(n)]
            RULES[n.op].lower(self, n)
        for name in self.g.outputs:  # as computed, in their producer's domain
            v = self.values[name] if name in self.values else self.value(name)
            if v.last and len(self.shape(name)) != 4:  # GraphIO.layout has NCHW only
                v = self.to_layout(name, False, v)
            self.b.output(name, v.tensor, Layout.NCHW if v.last else Layout.AS_STORED)
        return self.b.build(metadata)

    # Attention masks: Add(scores, f(mask)) -> Softmax, f made of the ops below on an integer
    # graph input, becomes a masked SOFTMAX of the scores (SPEC.md 2.13.15): the additive term
    # (float32's lowest, as exporters write it) has no int8 range.
    MASK_CHAIN_OPS = {"Unsqueeze", "Reshape", "Squeeze", "Cast", "CastLike", "Sub", "Mul", "Expand", "Identity", "Not",
                      "Equal", "Where", "Neg", "Add"}

    def plan_masks(self):
        """Find the masked softmaxes: self.masked[id(softmax)] = (scores, mask input, zero
        keeps, the mask's broadcast shape); the Add and the mask's own nodes are skipped."""
        if self.masked is not None:
            return
        self.masked = {}
        producers, consumers = self.g.producers(), self.g.consumers()
        chains = []
        for sm in self.g.nodes:
            add = producers.get(sm.inputs[0]) if sm.op == "Softmax" else None
            if add is None or add.op != "Add" or len(consumers.get(add.outputs[0], [])) != 1:
                continue
            rank = len(self.shape(sm.inputs[0]))
            if sm.attrs.get("axis", -1) % rank != rank - 1:
                continue
            for k in (0, 1):
                found = self._mask_term(add.inputs[k], producers)
                if found is not None:
                    mask, nodes, zero_keeps = found
                    self.masked[id(sm)] = (add.inputs[1 - k], mask, zero_keeps, self.shape(add.inputs[k]))
                    self.skip.add(id(add))
                    chains.append(nodes)
                    break
        for sm in self.g.nodes:  # constant masks: a causal mask added, or scores.masked_fill(mask, -inf)
            src = producers.get(sm.inputs[0]) if sm.op == "Softmax" and id(sm) not in self.masked else None
            if src is None or len(consumers.get(src.outputs[0], [])) != 1 or src.outputs[0] in self.g.outputs or \
                    sm.attrs.get("axis", -1) % len(self.shape(sm.inputs[0])) != len(self.shape(sm.inputs[0])) - 1:
                continue
            found = self._constant_mask(src)
            if found is not None:
                scores, keep = found
                name = self.g.fresh(src.outputs[0] + ".mask")
                self.g.constants[name] = keep.astype(np.int32)
                self.masked[id(sm)] = (scores, name, False, keep.shape)
                self.skip.add(id(src))
        # a mask's nodes go when every reader of theirs is gone too
        dropped = {id(n) for nodes in chains for n in nodes}
        for nodes in chains:
            for n in nodes:
                if all(id(r) in self.skip or id(r) in dropped for o in n.outputs for r in consumers.get(o, [])):
                    self.skip.add(id(n))

    def _constant_mask(self, n: Node):
        """(scores, which elements a constant mask keeps) when n is Add(scores, c) with c 0 or
        huge and negative, or Where(c, scores, huge negative) / Where(c, huge negative, scores),
        and the mask broadcasts against the scores; else None."""
        const = [i in self.g.constants for i in n.inputs]
        out = self.shape(n.outputs[0])

        def lifted(v):
            v = np.asarray(v)
            return v.reshape((1,) * (len(out) - v.ndim) + v.shape)
        found = None
        if n.op == "Add" and sum(const) == 1:
            c = lifted(self.g.constants[n.inputs[const.index(True)]]).astype(np.float64)
            if ((c == 0) | (c <= -1e4)).all() and (c <= -1e4).any():
                found = n.inputs[const.index(False)], c == 0
        elif n.op == "Where" and const[0] and sum(const) == 2:
            cond = lifted(self.g.constants[n.inputs[0]]).astype(bool)
            k = 1 if const[2] else 2  # the scores' branch
            fill = lifted(self.g.constants[n.inputs[3 - k]]).astype(np.float64)
            if fill.size and (fill <= -1e4).all():
                found = n.inputs[k], np.broadcast_to(cond if k == 1 else ~cond, np.broadcast_shapes(cond.shape, fill.shape))
        if found is not None and all(d in (1, o) for d, o in zip(found[1].shape, out)) \
                and self.shape(found[0]) == out:  # the scores are not broadcast up by the mask
            return found
        return None

    def _mask_term(self, name: str, producers):
        """(integer input, its nodes, zero_keeps) when `name` is 0 for one mask value and huge
        and negative for the other, computed from one integer graph input only; else None."""
        nodes, inputs, todo, seen = [], set(), [name], set()
        while todo:
            v = todo.pop()
            if v in seen or v in self.g.constants:
                continue
            seen.add(v)
            if v in self.g.dtypes:
                inputs.add(v)
                continue
            n = producers.get(v)
            if n is None or n.op not in self.MASK_CHAIN_OPS:
                return None
            nodes.append(n)
            todo.extend(i for i in n.inputs if i)
        if len(inputs) != 1 or not nodes:
            return None
        mask = inputs.pop()
        values = []
        for fill in (0, 1):  # the term for an all-0 and an all-1 mask
            env = {mask: np.full(self.shape(mask), fill, self.g.dtypes[mask])}
            ids = {id(n) for n in nodes}
            for n in self.g.nodes:  # graph order is a topological order
                if id(n) in ids:
                    args = [env.get(i, self.g.constants.get(i)) if i else None for i in n.inputs]
                    for o, val in zip(n.outputs, float_exec.run_node(n, args, self.g)):
                        env[o] = np.asarray(val)
            t = env[name]
            if t.size == 0 or not (t == t.reshape(-1)[0]).all():
                return None
            values.append(float(t.reshape(-1)[0]))
        zero, one = values
        if one == 0 and zero <= -1e4:
            return mask, nodes, False  # a 1 keeps (the usual attention mask)
        if zero == 0 and one <= -1e4:
            return mask, nodes, True  # a 0 keeps (a padding mask)
        return None

    def check_supported(self):
        self.plan_masks()
        missing = {}
        for n in self.g.nodes:
            if id(n) in self.skip:
                continue
            rule = RULES.get(n.op)
            if rule is None or (rule.supports is not None and not rule.supports(self, n)):
                missing.setdefault(n.op, []).append(n.name or repr(n))
        if missing:
            raise UnsupportedOpsError(missing, self.g.name)

    # Conv family -----------------------------------------------------------

    def _window(self, n: Node, kh, kw):
        x = self.shape(n.inputs[0])
        y = self.shape(n.outputs[0])
        pads = list(n.attrs.get("pads", [0] * (2 * len(x) - 4)))
        sh, sw = n.attrs.get("strides", [1, 1])[-2:] if len(x) == 4 else [1] + n.attrs.get("strides", [1])
        dh, dw = n.attrs.get("dilations", [1, 1])[-2:] if len(x) == 4 else [1] + n.attrs.get("dilations", [1])
        if len(x) == 3:  # a signal [N, C, L] as the image [N, C, 1, L]
            x, y, pads = x[:2] + (1,) + x[2:], y[:2] + (1,) + y[2:], [0, pads[0], 0, pads[1]]
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
        # ceil_mode (pools): pad the bottom/right so the window arithmetic yields y's size. With
        # no end padding and windows at least a stride long, stride - 1 does at every size (a
        # last window never starts in it), so that a dynamic size keeps the pool's options.
        top, left, bottom, right = pads
        extra = []
        for size, out, k, s, d, a, b in ((x[2], y[2], kh, sh, dh, top, bottom), (x[3], y[3], kw, sw, dw, left, right)):
            need = max((out - 1) * s + (k - 1) * d + 1 - (size + a + b), 0)
            if n.attrs.get("ceil_mode", 0) and b == 0 and (k - 1) * d + 1 >= s and \
                    out_size(size, a, s - 1, k, d, s) == out:
                need = s - 1
            extra.append(need)
        return dict(stride_h=sh, stride_w=sw, pad_top=top, pad_left=left,
                    pad_bottom=bottom + extra[0], pad_right=right + extra[1]), (dh, dw)

    def _weights(self, name: str, w: np.ndarray, axis: int, bias_name: str | None = None, x_name: str | None = None,
                 reduction: int = 0, int4: bool = False):
        """Symmetric int8 (or int4) weights and their scales (imported int8 scales win, else per
        channel/tensor).
        Given the op's input and bias, a channel whose bias cannot be represented next to the
        accumulator bound (SPEC.md 4.5, 4.6) gets a coarser scale, doubled until it can: such
        channels are nearly dead (BatchNorm-folded weights of 1e-9 with a bias of 1), and
        clamping their bias instead would change their output. Weights that break the bound
        on their own are left as they are (_keep_int16 keeps such a layer in int8)."""
        imported = False
        qmax = C.INT4_QMAX if int4 else C.WEIGHT_QMAX
        if name in self.g.weight_qparams and not int4:
            scales, qaxis = self.g.weight_qparams[name]
            scales = np.asarray(scales, np.float32)
            imported = scales.size == 1 or qaxis == axis
        if not imported:
            scales = C.weight_qparams(w, axis, per_channel=self.opt.per_channel, qmax=qmax)
        gram = None if imported or axis != 0 else self.opt.weight_grams.get(name)
        if gram is None:
            wq = C.quantize_weights(w, scales, axis, qmax)
        else:  # the same weights for _keep_int16's call and the op's
            key = (name, scales.tobytes(), qmax)
            if key not in self.rounded:
                self.rounded[key] = C.gptq_weights(w, scales, gram, qmax)
            wq = self.rounded[key]
        if x_name is None or imported:
            return wq, scales
        b = self._bias_values(bias_name, w.shape[axis])
        sx = np.float32(self.q(x_name)[0])
        for _ in range(64):
            room = self._headroom(wq, axis, reduction)
            if (room < 0).any():
                break
            over = np.abs(np.rint(b / (sx * np.broadcast_to(scales, b.shape).astype(np.float32)))) > room
            if not over.any():
                break
            scales = scales.copy()
            scales[over if scales.size > 1 else 0] *= 2
            redo = over.reshape((-1,) + (1,) * (w.ndim - 1)) if scales.size > 1 else True
            wq = np.where(redo, C.quantize_weights(w, scales, axis, qmax), wq)  # the others keep their rounding
        return wq, scales

    def _bias_values(self, name: str | None, channels: int) -> np.ndarray:
        """The float bias per output channel (0 without one), float64."""
        if not name:
            return np.zeros(channels)
        return np.broadcast_to(np.asarray(self.g.constants[name], np.float64).reshape(-1), (channels,)).copy()

    def _headroom(self, wq: np.ndarray, axis: int, reduction: int) -> np.ndarray:
        """Per output channel, the largest |int32 bias| the accumulator bound of the current
        domain leaves: SPEC.md 4.5 for int8, 4.6 (from the weights themselves) for int16."""
        channels = wq.shape[axis]
        if self.cur == INT16:
            l1 = np.abs(np.moveaxis(wq, axis, 0).astype(np.int64)).reshape(channels, -1).sum(axis=1)
            return INT32_MAX - int16_accumulator_bound(l1, 0)
        return np.full(channels, INT32_MAX - accumulator_bound(reduction), np.int64)

    def _bias(self, name: str | None, x_scale: float, w_scales, w_float, w_int, channels: int, reduction: int,
              input_name: str, conv_like: bool, int4: bool = False):
        """int32 bias at scale s_x * s_w[c] (and that scale), clamped to the accumulator bound;
        w_float, w_int in the source layout, channels first."""
        s = np.float32(x_scale) * np.broadcast_to(w_scales, (channels,)).astype(np.float32)
        b = self._bias_values(name, channels)
        mean = None if self.opt.correct_int4_only and not int4 else self.opt.input_means.get(input_name)
        if mean is not None:  # empirical bias correction: E[(W - W_q s_w) x] folded into the bias
            deq = w_int.astype(np.float64) * np.broadcast_to(w_scales, (channels,)).reshape((-1,) + (1,) * (w_float.ndim - 1))
            b = b + bias_correction(w_float.astype(np.float64) - deq, mean, conv_like)
        room = self._headroom(w_int, 0, reduction)
        if (room < 0).any():
            raise ConversionError(f"{input_name}: a reduction of {reduction} can overflow the int32 accumulator "
                                  f"(SPEC.md section 4.5)")
        return np.clip(np.rint(b / s.astype(np.float64)), -room, room).astype(np.int32), s

    def _keep_int16(self, n: Node, w_name: str, w: np.ndarray, bias_name, reduction: int, int4: bool) -> bool:
        """Whether a Conv or Gemm meets int16's accumulator bound (SPEC.md 4.6) with the weights
        it will store (int4: those); if not it is lowered in int8, with REQUANTIZE around it, and
        the report says so."""
        x_name = n.inputs[0]
        wq, ws = self._weights(w_name, w, 0, bias_name, x_name, reduction, int4)
        room = self._headroom(wq, 0, reduction)
        b = self._bias_values(bias_name, w.shape[0])
        s = np.float32(self.q(x_name)[0]) * np.broadcast_to(ws, b.shape).astype(np.float32)
        fits = bool((room >= 0).all() and (np.abs(np.rint(b / s)) <= room).all())
        if not fits:
            self.cur = INT8
            self.notes.append(f"{n.name or n.op} ({n.op}): kept in int8, its weights break int16's accumulator bound")
        return fits

    def _int4_weights(self, n: Node, depthwise: bool) -> bool:
        """Whether this integer Conv / Gemm / MatMul stores int4 weights (the scheme asks; a
        depthwise convolution, which has no int4 form, keeps int8 and says so once)."""
        if self.scheme.weights != "int4":
            return False
        if depthwise:
            note = "depthwise convolutions keep int8 weights (DEPTHWISE_CONV_2D has no int4 form)"
            if note not in self.notes:
                self.notes.append(note)
            return False
        return True

    def _conv_supported(self, n: Node) -> bool:
        return len(self.shape(n.inputs[0])) in (3, 4) and n.inputs[1] in self.g.constants

    @lowers("Conv", supports=_conv_supported, fusable=True, int16=True)
    def lower_Conv(self, n: Node):
        """CONV_2D or DEPTHWISE_CONV_2D; a 1-D convolution as a 2-D one of height 1."""
        x_name, w_name = n.inputs[0], n.inputs[1]
        w = np.asarray(self.g.constants[w_name], np.float32)  # [M, C/g, KH, KW] or [M, C/g, K]
        if w.ndim == 3:
            w = w[:, :, None, :]
        cin = self.shape(x_name)[1]
        group = int(n.attrs.get("group", 1))
        m, _, kh, kw = w.shape
        win, (dh, dw) = self._window(n, kh, kw)
        bias_name = n.inputs[2] if len(n.inputs) > 2 and n.inputs[2] else None
        depthwise = group == cin and group > 1 and m % cin == 0
        if self.cur == INT16:
            self._keep_int16(n, w_name, w, bias_name, kh * kw * (cin // group), self._int4_weights(n, depthwise))
        x = self.image_view(x_name)
        y, then = self.image_output(self.out_value(n))
        if self.floating:
            bias = np.zeros(m, np.float32) if bias_name is None else np.asarray(self.g.constants[bias_name], np.float32)
            if depthwise:  # DEPTHWISE_CONV_2D has a float32 form only among the float ones
                opts = DepthwiseConv2DOptions(**win, dilation_h=dh, dilation_w=dw, depth_multiplier=m // cin)
                self._float_weighted(OpCode.DEPTHWISE_CONV_2D, n, x, y, w.transpose(1, 2, 3, 0), w_name, bias, opts,
                                     FLOAT32)
            else:
                opts = Conv2DOptions(**win, dilation_h=dh, dilation_w=dw, groups=group)
                self._float_weighted(OpCode.CONV_2D, n, x, y, w.transpose(0, 2, 3, 1), w_name, bias, opts, self.cur)
            return then()
        sx = self.q(x_name)[0]
        int4 = self._int4_weights(n, depthwise)
        wq, ws = self._weights(w_name, w, 0, bias_name, x_name, kh * kw * (1 if depthwise else cin // group), int4)
        if depthwise:
            bq, bs = self._bias(bias_name, sx, ws, w, wq, m, kh * kw, x_name, True)
            wt = wq.transpose(1, 2, 3, 0)  # [1, KH, KW, M]
            wi = self.b.tensor(self._unique(w_name), DType.INT8, wt.shape, wt, scale=ws, axis=3)
            bi = self.b.tensor(self._unique(bias_name or w_name + ".bias"), DType.INT32, (m,), bq, scale=bs)
            opts = DepthwiseConv2DOptions(**win, dilation_h=dh, dilation_w=dw, depth_multiplier=m // cin)
            self.op(OpCode.DEPTHWISE_CONV_2D, [x, wi, bi], [y], opts, n, fuse=True)
        else:
            bq, bs = self._bias(bias_name, sx, ws, w, wq, m, kh * kw * (cin // group), x_name, True, int4)
            wt = np.ascontiguousarray(wq.transpose(0, 2, 3, 1))  # [M, KH, KW, C/g]
            wi = self.b.tensor(self._unique(w_name), DType.INT4 if int4 else DType.INT8, wt.shape,
                               pack_int4(wt) if int4 else wt, scale=ws, axis=0)
            bi = self.b.tensor(self._unique(bias_name or w_name + ".bias"), DType.INT32, (m,), bq, scale=bs)
            opts = Conv2DOptions(**win, dilation_h=dh, dilation_w=dw, groups=group)
            self.op(OpCode.CONV_2D, [x, wi, bi], [y], opts, n, fuse=True)
        then()

    def _fully_connected(self, n: Node, x_name: str, w: np.ndarray, w_name: str, bias):
        """w: [N_out, K] float; bias: float array or None."""
        nout, k = w.shape
        b_name = None
        if bias is not None:
            b_name = self.g.fresh(w_name + ".bias")
            self.g.constants[b_name] = np.broadcast_to(np.asarray(bias, np.float32).reshape(-1), (nout,)).copy()
        if self.cur == INT16:
            self._keep_int16(Node(n.op, [x_name] + list(n.inputs[1:]), n.outputs, n.attrs, n.name), w_name, w, b_name, k,
                             self._int4_weights(n, False))
        x = self.to_layout(x_name, False)
        if self.floating:
            y = self.act_tensor(self.out_value(n), self.shape(n.outputs[0]))
            return self._float_weighted(OpCode.FULLY_CONNECTED, n, x, y, w, w_name, self._bias_values(b_name, nout),
                                        None, self.cur)
        sx = self.q(x_name)[0]
        int4 = self._int4_weights(n, False)
        wq, ws = self._weights(w_name, w, 0, b_name, x_name, k, int4)
        bq, bs = self._bias(b_name, sx, ws, w, wq, nout, k, x_name, False, int4)
        y = self.act_tensor(self.out_value(n), self.shape(n.outputs[0]))
        wi = self.b.tensor(self._unique(w_name), DType.INT4 if int4 else DType.INT8, wq.shape,
                           pack_int4(wq) if int4 else wq, scale=ws, axis=0)
        bi = self.b.tensor(self._unique(w_name + ".bias"), DType.INT32, (nout,), bq, scale=bs)
        self.op(OpCode.FULLY_CONNECTED, [x, wi, bi], [y], None, n, fuse=True)

    def _float_weighted(self, code, n: Node, x: _Value, y: _Value, w: np.ndarray, w_name: str, bias: np.ndarray,
                        options, form: str):
        """CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED with float32 activations and bias; w
        in the stored layout (channels first, or last for depthwise). float32 weights, or
        quantized ones for the weight-only and dynamic forms (per channel, or per group along
        the stored reduction axis)."""
        scheme = self.scheme
        channels = w.shape[3] if code == OpCode.DEPTHWISE_CONV_2D else w.shape[0]
        w = np.ascontiguousarray(w, np.float32)
        bi = self.b.tensor(self._unique(w_name + ".bias"), DType.FLOAT32, (channels,),
                           np.ascontiguousarray(bias, np.float32))
        if form == DYNAMIC and accumulator_bound(w.size // channels) > INT32_MAX:
            form = WEIGHT_ONLY  # too long a reduction for int32 sums of int8 products
            self.notes.append(f"{n.name or n.op} ({n.op}): weight-only, its reduction is too long for dynamic int8")
        iq = InputQuantization.DYNAMIC_INT8 if form == DYNAMIC else InputQuantization.NONE
        if form == FLOAT32:
            wi = self.b.tensor(self._unique(w_name), DType.FLOAT32, w.shape, w)
        else:
            int4 = form == WEIGHT_ONLY and scheme.weights == "int4"
            qmax = C.INT4_QMAX if int4 else C.WEIGHT_QMAX
            group = scheme.group_size if form == WEIGHT_ONLY else None
            if group:
                w2 = w.reshape(channels, -1)
                scales = C.group_weight_qparams(w2, group, qmax)
                wq = C.quantize_group_weights(w2, scales, group, qmax).reshape(w.shape)
            else:
                scales = C.weight_qparams(w, 0, per_channel=self.opt.per_channel, qmax=qmax)
                wq = C.quantize_weights(w, scales, 0, qmax)
            wi = self.b.tensor(self._unique(w_name), DType.INT4 if int4 else DType.INT8, w.shape,
                               pack_int4(wq) if int4 else wq, scale=scales.reshape(-1), axis=0,
                               group_size=group or 0)
            mean = self.opt.input_means.get(n.inputs[0]) if int4 or not self.opt.correct_int4_only else None
            if mean is not None:  # empirical bias correction: E[(W - W_q s) x] folded into the bias
                k = wq.size // channels
                per_k = np.repeat(scales.reshape(channels, -1).astype(np.float64), group or k, axis=1)[:, :k]
                err = (w.reshape(channels, -1).astype(np.float64) - wq.reshape(channels, -1) * per_k).reshape(w.shape)
                if code == OpCode.CONV_2D:  # stored [C_out, KH, KW, C_in/g] -> the source's [C_out, C_in/g, KH, KW]
                    err = err.transpose(0, 3, 1, 2)
                corr = bias_correction(err, mean, code == OpCode.CONV_2D)
                self.b.model.tensors[bi].data = (bias.astype(np.float64) + corr).astype(np.float32)
        self.op(code, [x, wi, bi], [y], options, n, fuse=True, input_quantization=iq)

    def _fc_supported(self, n: Node) -> bool:
        return n.inputs[1] in self.g.constants and (n.op == "MatMul" or not n.attrs.get("transA", 0))

    @lowers("Gemm", supports=_fc_supported, fusable=True, int16=True)
    def lower_Gemm(self, n: Node):
        b = np.asarray(self.g.constants[n.inputs[1]], np.float32) * n.attrs.get("alpha", 1.0)
        w = b if n.attrs.get("transB", 0) else b.T
        bias = None
        if len(n.inputs) > 2 and n.inputs[2]:
            bias = np.asarray(self.g.constants[n.inputs[2]], np.float32) * n.attrs.get("beta", 1.0)
        self._fully_connected(n, n.inputs[0], np.ascontiguousarray(w), n.inputs[1], bias)

    def _matmul_supported(self, n: Node) -> bool:
        """Constant 2-D weights (FULLY_CONNECTED), or operands of rank >= 2, one an activation
        (BATCH_MATMUL; a constant b of another rank as an int8 tensor)."""
        if n.inputs[1] in self.g.constants and np.ndim(self.g.constants[n.inputs[1]]) == 2:
            return self._fc_supported(n)
        return n.inputs[0] not in self.g.constants and min(len(self.shape(i)) for i in n.inputs[:2]) >= 2

    @lowers("MatMul", supports=_matmul_supported, fusable=True, int16=True)
    def lower_MatMul(self, n: Node):
        if n.inputs[1] not in self.g.constants or np.ndim(self.g.constants[n.inputs[1]]) != 2:
            return self._batch_matmul(n)
        b = np.asarray(self.g.constants[n.inputs[1]], np.float32)
        self._fully_connected(n, n.inputs[0], np.ascontiguousarray(b.T), n.inputs[1], self.matmul_bias.get(id(n)))

    def _batch_matmul(self, n: Node):
        """BATCH_MATMUL of two activations in the source's order; a Transpose of b's last two
        dimensions that only this MatMul reads becomes transpose_b (attention's K^T)."""
        a, b_name, transpose_b = self.to_layout(n.inputs[0], False), n.inputs[1], False
        t = self._folded_transpose(n)
        if t is not None:
            b_name, transpose_b = t.inputs[0], True
        b = self.const_activation(b_name) if b_name in self.g.constants else self.to_layout(b_name, False)
        y = self.act_tensor(self.out_value(n), self.shape(n.outputs[0]))
        self.op(OpCode.BATCH_MATMUL, [a, b], [y], BatchMatMulOptions(transpose_b), n, fuse=True)

    def _folded_transpose(self, mm: Node) -> Node | None:
        """The Transpose of the last two dimensions that produces MatMul mm's b, when mm is its
        only reader: BATCH_MATMUL reads its input transposed instead (transpose_b)."""
        b = mm.inputs[1]
        t = self.g.producers().get(b)
        if t is None or t.op != "Transpose" or b in self.g.outputs or b in self.g.constants:
            return None
        rank = len(self.shape(b))
        readers = self.g.consumers().get(b, [])
        if len(readers) == 1 and rank >= 2 and \
                list(t.attrs.get("perm", [])) == list(range(rank - 2)) + [rank - 1, rank - 2]:
            return t
        return None

    def _layer_norm_supported(self, n: Node) -> bool:
        consts = all(i in self.g.constants for i in n.inputs[1:3] if i)
        return consts and n.outputs[1:] in ([], [""], ["", ""])

    @lowers("LayerNormalization", "RMSNormalization", supports=_layer_norm_supported, int16=True)
    def lower_LayerNormalization(self, n: Node):
        """LAYER_NORM over the last dimension (in the source's order), without the mean for
        RMSNormalization; gamma and beta stay float32. Normalising from an earlier axis to the
        end: over those dimensions flattened into one (RESHAPEs the arena aliases)."""
        shape = self.shape(n.inputs[0])
        axis = n.attrs.get("axis", -1) % len(shape)
        c = math.prod(shape[axis:])
        x = self.to_layout(n.inputs[0], False)
        if axis != len(shape) - 1:
            x = self._view(x, n.inputs[0] + ".rows", tuple(shape[:axis]) + (c,), False)

        def per_channel(name, default):
            if not name:
                return np.full(c, default, np.float32)
            return np.ascontiguousarray(np.broadcast_to(np.asarray(self.g.constants[name], np.float32),
                                                        shape[axis:]).reshape(-1))
        beta_name = n.inputs[2] if len(n.inputs) > 2 else ""
        g = self.b.tensor(self._unique(n.inputs[1]), DType.FLOAT32, (c,), per_channel(n.inputs[1], 1.0))
        b = self.b.tensor(self._unique((beta_name or n.name) + ".beta"), DType.FLOAT32, (c,), per_channel(beta_name, 0.0))
        y = self.act_tensor(n.outputs[0])
        opts = LayerNormOptions(float(n.attrs.get("epsilon", 1e-5)), rms=n.op == "RMSNormalization")
        if axis == len(shape) - 1:
            return self.op(OpCode.LAYER_NORM, [x, g, b], [y], opts, n)
        rows = self._like(self.b.model.tensors[y.tensor], n.outputs[0] + ".rows", self.b.model.tensors[x.tensor].shape)
        self.op(OpCode.LAYER_NORM, [x, g, b], [rows], opts, n)
        self.b.op(OpCode.RESHAPE, [rows], [y.tensor], name=f"{n.outputs[0]}.rows")

    @lowers("BatchNormalization", int16=True)
    def lower_BatchNormalization(self, n: Node):
        """An unfolded BatchNorm: a 1x1 depthwise convolution (per-channel scale and shift)."""
        gamma, beta, mean, var = (np.asarray(self.g.constants[i], np.float64) for i in n.inputs[1:5])
        scale = gamma / np.sqrt(var + n.attrs.get("epsilon", 1e-5))
        c = scale.size
        w_name = self.g.fresh(n.outputs[0] + ".bn_scale")
        b_name = self.g.fresh(n.outputs[0] + ".bn_shift")
        self.g.constants[w_name] = scale.astype(np.float32).reshape((c, 1) + (1,) * (len(self.shape(n.inputs[0])) - 2))
        self.g.constants[b_name] = (beta - mean * scale).astype(np.float32)
        conv = Node("Conv", [n.inputs[0], w_name, b_name], n.outputs, {"group": c}, n.name)
        if id(n) in self.fused:
            self.fused[id(conv)] = self.fused[id(n)]
        self.lower_Conv(conv)

    # Elementwise -------------------------------------------------------------

    def _binary(self, n: Node, code):
        """Operands in one layout: the first activation operand's (constants follow it); an
        activation of lower rank is lifted to the output's (leading 1s, a RESHAPE the arena
        aliases) and then all are in the source's order."""
        out = self.shape(n.outputs[0])
        rank = len(out)
        names = n.inputs[:2]
        lower = [i for i in names if i not in self.g.constants and len(self.shape(i)) < rank]
        last = not lower and next(self.value(i).last for i in names if i not in self.g.constants)
        operands = [self.const_activation(i, rank, last) if i in self.g.constants else
                    self._lifted(i, rank) if i in lower else self.to_layout(i, last) for i in names]
        y = self.act_tensor(self.out_value(n), out, last=last)
        self.op(code, operands, [y], None, n, fuse=True)

    def _lifted(self, name: str, rank: int) -> _Value:
        """An activation of lower rank with leading 1s up to `rank`, in the source's order."""
        v = self.to_layout(name, False)
        shape = self.shape(name)
        return self._view(v, name + ".lifted", (1,) * (rank - len(shape)) + shape, False)

    def _binary_supported(self, n: Node) -> bool:
        """Operands that broadcast as NumPy's (constants, or activations of any lower rank)."""
        try:
            np.broadcast_shapes(*(self.shape(i) if i not in self.g.constants else np.shape(self.g.constants[i])
                                  for i in n.inputs[:2]))
        except ValueError:
            return False
        return True

    @lowers("Add", supports=_binary_supported, fusable=True, int16=True)
    def lower_Add(self, n):
        self._binary(n, OpCode.ADD)

    @lowers("Sub", supports=_binary_supported, fusable=True, int16=True)
    def lower_Sub(self, n):
        self._binary(n, OpCode.SUB)

    @lowers("Mul", supports=_binary_supported, fusable=True, int16=True)
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

    @lowers("Div", supports=_divisor_constant, int16=True)
    def lower_Div(self, n):
        if n.inputs[1] not in self.g.constants:
            raise ConversionError(f"Div '{n.name}': only division by a constant is supported")
        recip = self.g.fresh(n.inputs[1] + ".reciprocal")
        self.g.constants[recip] = (1.0 / np.asarray(self.g.constants[n.inputs[1]], np.float64)).astype(np.float32)
        self._binary(Node("Mul", [n.inputs[0], recip], n.outputs, {}, n.name), OpCode.MUL)

    def _requantize(self, n: Node, act=Activation.NONE, clip=(0.0, 0.0)):
        """A clamp: REQUANTIZE with the activation fused; in a float island MAXIMUM(x, lo) with
        it fused (MAXIMUM's float32 form clamps like any op's)."""
        x = self.value(n.inputs[0])
        y = self.act_tensor(n.outputs[0], last=x.last)
        if self.floating:
            lo = np.zeros((1,) * len(self.shape(n.inputs[0])), np.float32) + np.float32(0.0 if act == Activation.RELU else clip[0])
            li = self.b.tensor(self._unique(n.outputs[0] + ".lo"), DType.FLOAT32, lo.shape, lo)
            self.b.op(OpCode.MAXIMUM, [x.tensor, li], [y.tensor], None, act, clip, name=n.name)
            self.report.append((n.op, "MAXIMUM", FLOAT32, n.name))
            return
        self.b.op(OpCode.REQUANTIZE, [x.tensor], [y.tensor], None, act, clip, name=n.name)
        self.report.append((n.op, "REQUANTIZE", INT8, n.name))

    @lowers("Relu", int16=True)
    def lower_Relu(self, n):
        self._requantize(n, Activation.RELU)

    @lowers("Clip", int16=True)
    def lower_Clip(self, n):
        lo, hi = self._clip_bounds(n)
        lo, hi = max(lo, -3.0e38), min(hi, 3.0e38)
        self._requantize(n, Activation.CLIP, (lo, hi))

    @lowers("LeakyRelu")
    def lower_LeakyRelu(self, n):
        x = self.value(n.inputs[0])
        y = self.act_tensor(n.outputs[0], last=x.last)
        self.op(OpCode.LEAKY_RELU, [x], [y], LeakyReluOptions(float(n.attrs.get("alpha", 0.01))), n)

    def _alpha_constant(self, n: Node) -> bool:
        return n.inputs[1] in self.g.constants

    @lowers("PRelu", supports=_alpha_constant)
    def lower_PRelu(self, n):
        x = self.value(n.inputs[0])
        rank = len(self.shape(n.inputs[0]))
        alpha = self.const_activation(n.inputs[1], rank, x.last)
        y = self.act_tensor(n.outputs[0], last=x.last)
        self.op(OpCode.PRELU, [x, alpha], [y], None, n)

    def _lut(self, n: Node, x_name: str, fn, label: str):
        """An elementwise function: a 256-entry int8 table (LUT), a 513-entry interpolated int16
        table in the int16 domain (SPEC.md 2.13.14), UNARY in a float island."""
        x = self.value(x_name)
        if self.floating:
            y = self.act_tensor(n.outputs[0], last=x.last)
            if label == "Gelu":
                tanh = n.attrs.get("approximate", "none") in ("tanh", b"tanh")
                opts = UnaryOptions(UnaryFunction.GELU_TANH if tanh else UnaryFunction.GELU)
            else:
                opts = UnaryOptions(_UNARY_FUNCTIONS[label])
                if label == "HardSigmoid":
                    opts.alpha, opts.beta = float(n.attrs.get("alpha", 0.2)), float(n.attrs.get("beta", 0.5))
            self.op(OpCode.UNARY, [x], [y], opts, n)
            return
        sx, zx = self.q(x_name)
        sy, zy = self.q(n.outputs[0])
        if self.cur == INT16:
            real = np.float64(sx) * np.arange(-32768, 32769, 128, dtype=np.float64)
            table = np.clip(np.rint(fn(real, n) / np.float64(sy)), -32768, 32767).astype(np.int16)
        else:
            real = np.float64(sx) * (np.arange(-128, 128, dtype=np.float64) - zx)
            table = np.clip(np.rint(fn(real, n) / np.float64(sy)) + zy, -128, 127).astype(np.int8)
        ti = self.b.tensor(self._unique(n.outputs[0] + ".table"), self.act_dtype, table.shape, table)
        y = self.act_tensor(n.outputs[0], last=x.last)
        self.op(OpCode.LUT, [x, ti], [y], LutOptions(label), n)

    @lowers("Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Gelu", "Erf", "Sqrt", "Neg", "Exp", "Log", "Abs", int16=True)
    def lower_table(self, n):
        """An elementwise function as a 256-entry table (its float64 math in _LUT_FUNCTIONS)."""
        self._lut(n, n.inputs[0], _LUT_FUNCTIONS[n.op], n.op)

    @lowers("Softmax", fixed_quantization=SOFTMAX_OUTPUT, int16=True, fixed_quantization16=SOFTMAX_OUTPUT_16)
    def lower_Softmax(self, n):
        """SOFTMAX with its fixed output: (1/256, -128) in int8, (1/32768, 0) in the int16 domain;
        with an attention mask (plan_masks), of the scores with the mask as its second input."""
        if id(n) in self.masked:
            scores, mask, zero_keeps, shape = self.masked[id(n)]
            x = self.to_layout(scores, False)
            m = self._mask_tensor(mask, shape)
            y = self.act_tensor(n.outputs[0])
            self.op(OpCode.SOFTMAX, [x, m], [y], SoftmaxOptions(axis=len(shape) - 1, beta=1.0,
                                                               mask_zero_keeps=zero_keeps), n)
            return
        x = self.value(n.inputs[0])
        rank = len(self.shape(n.inputs[0]))
        axis = stored_order(rank, x.last).index(n.attrs.get("axis", -1) % rank)
        y = self.act_tensor(n.outputs[0], last=x.last)
        self.op(OpCode.SOFTMAX, [x], [y], SoftmaxOptions(axis=axis, beta=1.0), n)

    def _mask_tensor(self, mask: str, shape: tuple) -> _Value:
        """The integer mask input reshaped to broadcast against the scores (once per shape)."""
        key = (mask, tuple(shape))
        if key not in self.converted and mask in self.g.constants:  # a constant mask: stored as it broadcasts
            data = np.ascontiguousarray(self.g.constants[mask])
            self.converted[key] = _Value(self.b.tensor(self._unique(mask), DType.INT32, data.shape, data), False)
        if key not in self.converted:
            src = self.values[mask]
            t = self.b.model.tensors[src.tensor]
            want = tuple(shape)
            if t.shape == want:
                self.converted[key] = src
            elif int(np.prod(t.shape)) == int(np.prod(want)):
                self.converted[key] = self._view(src, mask + ".mask", want, False)
            else:
                raise ConversionError(f"attention mask '{mask}' {t.shape} does not reshape to {want}")
        return self.converted[key]

    # Recurrent layers --------------------------------------------------------

    def _recurrent_supported(self, n: Node) -> bool:
        """An LSTM / GRU with constant weights and biases; the refusals name what to change."""
        where = f"{n.op} node '{n.name or n.outputs[0]}'"
        ins = list(n.inputs) + [""] * (8 - len(n.inputs))
        if any(i and i not in self.g.constants for i in ins[1:4]):
            raise ConversionError(f"{where}: its weights and biases must be constants")
        steps = self.shape(ins[0])[1 if n.attrs.get("layout", 0) else 0]
        if ins[4] and not (ins[4] in self.g.constants and (np.asarray(self.g.constants[ins[4]]) == steps).all()):
            raise ConversionError(f"{where}: sequence_lens shorter than the sequence are not supported; "
                                  f"run each length as its own sequence (a dynamic length: --max-shape)")
        if n.op == "LSTM" and ins[7] and np.any(np.asarray(self.g.constants.get(ins[7], 1)) != 0):
            raise ConversionError(f"{where}: peephole connections (input P) are not supported")
        if n.attrs.get("input_forget", 0):
            raise ConversionError(f"{where}: input_forget = 1 is not supported")
        names = [a.lower() for a in self._recurrent_activations(n)]
        for name in names:
            if name not in _BOUNDED_ACTIVATIONS:
                raise ConversionError(f"{where}: activation {name} is not supported in integer gates (they take "
                                      f"functions bounded by 1: {', '.join(sorted(_BOUNDED_ACTIVATIONS))})")
        if "scaledtanh" in names and any(abs(float(v)) > 1 for v in n.attrs.get("activation_alpha", [])):
            raise ConversionError(f"{where}: ScaledTanh with |alpha| > 1 is not supported in integer gates")
        return True

    @staticmethod
    def _recurrent_activations(n: Node) -> list:
        per = ["Sigmoid", "Tanh", "Tanh"] if n.op == "LSTM" else ["Sigmoid", "Tanh"]
        dirs = 2 if n.attrs.get("direction", "forward") == "bidirectional" else 1
        return [str(a) for a in (n.attrs.get("activations") or per * dirs)]

    def plan_recurrent_states(self):
        """One (scale, zero point) for every hidden state an LSTM / GRU reads or writes (its
        outputs at every step, the final one, the initial one: they are the same quantity) and
        one int16 scale for its cell state, from the ranges calibration saw; the initial cell
        state, a graph input, is int16 too. Before pin_qparams, whose readers then follow."""
        self.recurrent = {}
        for n in self.g.nodes:
            if n.op not in ("LSTM", "GRU") or id(n) in self.skip:
                continue
            ins = list(n.inputs) + [""] * (8 - len(n.inputs))
            h_names = [v for v in (n.outputs[0], n.outputs[1], ins[5]) if v]
            lo, hi = self._range_of(h_names, (-1.0, 1.0))  # bounded gates keep |h| <= 1
            wide = self.forms.get(id(n)) == INT16
            hq = C.int16_qparams(lo, hi) if wide else C.qparams(lo, hi)
            cq = None
            if n.op == "LSTM":
                c_names = [v for v in (n.outputs[2], n.outputs[3] if len(n.outputs) > 3 else "", ins[6]) if v]
                lo, hi = self._range_of(c_names, (-16.0, 16.0))
                cq = C.int16_qparams(lo, hi)
                for v in c_names:
                    self.qparams16[v] = cq
                if ins[6] in self.g.inputs:
                    self.cell_inputs.add(ins[6])
            for v in h_names:
                (self.qparams16 if wide else self.qparams)[v] = hq
            self.recurrent[id(n)] = (hq, cq)

    def _range_of(self, names, default) -> tuple:
        """The union of the ranges calibration saw for `names` (constants: their values), or default."""
        seen = []
        for v in names:
            if v in self.g.constants:
                a = np.asarray(self.g.constants[v], np.float64)
                seen.append((float(a.min(initial=0.0)), float(a.max(initial=0.0))))
            elif v in self.opt.ranges:
                seen.append(tuple(map(float, self.opt.ranges[v])))
        if not seen:
            return default
        return min(0.0, min(a for a, _ in seen)), max(0.0, max(b for _, b in seen))

    def _state(self, name: str, shape, dtype: DType, qp, d: int, dirs: int, layout: int, what: str) -> int:
        """Direction d's initial state [B, H] as a tensor of dtype with parameters qp: the graph
        value (its direction taken out, requantized when its parameters differ) or zeros."""
        if not name:
            data = np.full(shape, qp[1], NUMPY_DTYPE[dtype])
            return self.b.tensor(self._unique(f"{what}.zero"), dtype, shape, data, scale=qp[0], zero_point=qp[1])
        if name in self.g.constants:
            a = np.asarray(self.g.constants[name], np.float64)
            a = (a.transpose(1, 0, 2) if layout else a)[d]
            lo, hi = QUANT_RANGE[dtype]
            data = np.clip(np.rint(a / qp[0]) + qp[1], lo, hi).astype(NUMPY_DTYPE[dtype])
            return self.b.tensor(self._unique(f"{name}.{d}"), dtype, shape, data, scale=qp[0], zero_point=qp[1])
        src = self.values.get(name)  # as it is when it has the dtype (an int16 cell state in an int8 node)
        if src is None or self.b.model.tensors[src.tensor].dtype != dtype:
            src = self.value(name)
        src = self.to_layout(name, False, src)
        t = self.b.model.tensors[src.tensor]
        v = src.tensor
        if dirs > 1 or layout:  # [D, B, H] (layout 1: [B, D, H]): direction d's [B, H]
            begin = [0, d, 0] if layout else [d, 0, 0]
            part = self._like(t, f"{name}.{d}", (shape[0], 1, shape[1]) if layout else (1,) + tuple(shape))
            self.b.op(OpCode.SLICE, [v], [part], SliceOptions(tuple(begin), (1, 1, 1)), name=f"{name}.{d}")
            v = part
        v = self._view(_Value(v, False), f"{name}.{d}.state", tuple(shape), False).tensor
        t = self.b.model.tensors[v]
        if t.dtype != dtype or float(t.quant.scale[0]) != qp[0] or int(t.quant.zero_point[0]) != qp[1]:
            out = self.b.tensor(self._unique(f"{name}.{d}.q"), dtype, tuple(shape), scale=qp[0], zero_point=qp[1])
            self.b.op(OpCode.REQUANTIZE, [v], [out], name=f"{name}.{d}.requantize")
            v = out
        return v

    def _imported_scales(self, name: str, d: int, rows: int):
        """Direction d's weight scales imported with the weights [D, rows, K] (an int8 model:
        ONNX Runtime's DynamicQuantizeLSTM): one per tensor, per direction or per row; else None."""
        if name not in self.g.weight_qparams:
            return None
        scales, axis = self.g.weight_qparams[name]
        scales = np.asarray(scales, np.float32).reshape(-1)
        if scales.size == 1:
            return scales
        if axis == 0:  # per direction
            return scales[d:d + 1]
        return scales if axis == 1 and scales.size == rows else None

    def _recurrent_weights(self, n: Node, w: np.ndarray, x_scale: float, bias: np.ndarray, label: str,
                           scales=None):
        """int8 symmetric weights [G H, K] (per row, unless per tensor; `scales` when the source
        was int8 already: its grid) and their int32 bias at s_x s_w[j], clamped to the
        accumulator bound of the node's domain."""
        ws = C.weight_qparams(w, 0, per_channel=self.opt.per_channel) if scales is None else scales
        wq = C.quantize_weights(w, ws, 0)
        rows = w.shape[0]
        bs = np.float32(x_scale) * np.broadcast_to(ws, (rows,)).astype(np.float32)
        room = self._headroom(wq, 0, w.shape[1])
        if (room < 0).any():
            raise ConversionError(f"{n.op} node '{n.name}': {label} can overflow the int32 accumulator in "
                                  f"{self.cur} (SPEC.md 4.5, 4.6); keep it int8")
        bq = np.clip(np.rint(bias / bs.astype(np.float64)), -room, room).astype(np.int32)
        wi = self.b.tensor(self._unique(f"{n.name or n.op}.{label}"), DType.INT8, wq.shape, wq, scale=ws, axis=0)
        bi = self.b.tensor(self._unique(f"{n.name or n.op}.{label}.bias"), DType.INT32, (rows,), bq, scale=bs)
        return wi, bi

    @lowers("LSTM", "GRU", supports=_recurrent_supported, int16=True)
    def lower_recurrent(self, n: Node):
        """One LSTM / GRU op per direction (SPEC.md 2.13.26): x [T, B, I] in the source's order
        (layout 1 transposed), weights per direction, every bias folded into the input half but
        GRU's n-gate recurrent bias under linear_before_reset; the directions' outputs joined by
        CONCAT (same parameters: a copy) into Y [T, D, B, H] and Y_h / Y_c [D, B, H]."""
        lstm = n.op == "LSTM"
        label = n.name or n.outputs[0]
        if self.schemes[id(n)].mode != "static":  # schemes.node_form gave it int8
            self.notes.append(f"{label} ({n.op}): computed in int8 (recurrent ops have integer forms only)")
        a = n.attrs
        ins = list(n.inputs) + [""] * (8 - len(n.inputs))
        layout = int(a.get("layout", 0))
        G = 4 if lstm else 3
        W = np.asarray(self.g.constants[ins[1]], np.float64)
        R = np.asarray(self.g.constants[ins[2]], np.float64)
        dirs, rows, _ = W.shape
        H = rows // G
        Bias = np.asarray(self.g.constants[ins[3]], np.float64).reshape(dirs, 2 * rows) if ins[3] \
            else np.zeros((dirs, 2 * rows))
        lbr = bool(a.get("linear_before_reset", 0)) and not lstm
        direction = a.get("direction", "forward")
        reverse = [direction == "reverse"] if dirs == 1 else [False, True]
        clip = float(a.get("clip", 0.0) or 0.0)
        (sh, zh), cq = self.recurrent[id(n)]
        dt = self.act_dtype
        x = self.to_layout(ins[0], False)
        if layout:  # [B, T, I] -> [T, B, I]
            t = self.b.model.tensors[x.tensor]
            xt = self._like(t, f"{ins[0]}.steps", (t.shape[1], t.shape[0], t.shape[2]))
            self.b.op(OpCode.TRANSPOSE, [x.tensor], [xt], TransposeOptions((1, 0, 2)), name=f"{ins[0]}.steps")
            x = _Value(xt, False)
        T, Bn, _ = self.b.model.tensors[x.tensor].shape
        sx = float(self.b.model.tensors[x.tensor].quant.scale[0])
        acts = self._recurrent_activations(n)
        fns = float_exec._rnn_activations(n, acts[:3 if lstm else 2], dirs)
        ys, hs, cs = [], [], []
        for d in range(dirs):
            b_w, b_r = Bias[d, :rows], Bias[d, rows:]
            rb = np.zeros(rows)
            if lbr:  # r * (R h + Rb): the n rows' recurrent bias stays with the recurrent half
                rb[2 * H:] = b_r[2 * H:]
            wi, bi = self._recurrent_weights(n, W[d], sx, b_w + b_r - rb, f"W{d}",
                                             self._imported_scales(ins[1], d, rows))
            ri, rbi = self._recurrent_weights(n, R[d], sh, rb, f"R{d}", self._imported_scales(ins[2], d, rows))
            h0 = self._state(ins[5], (Bn, H), dt, (sh, zh), d, dirs, layout, f"{label}.h0")
            gate, cand = (make_table(lambda v, f=f: f(v.astype(np.float32)).astype(np.float64), 2.0**-GATE_BITS)
                          for f in fns[d][:2])
            tables = [self._table(f"{label}.{d}.{k}", t) for k, t in (("gate", gate), ("candidate", cand))]
            y = self.b.tensor(self._unique(f"{label}.y{d}"), dt, (T, Bn, H), scale=sh, zero_point=zh)
            h_t = self.b.tensor(self._unique(f"{label}.h{d}"), dt, (Bn, H), scale=sh, zero_point=zh)
            outs = [y, h_t]
            op_ins = [x.tensor, wi, ri, bi, rbi, h0]
            if lstm:
                c0 = self._state(ins[6], (Bn, H), DType.INT16, cq, d, dirs, layout, f"{label}.c0")
                out_t = make_table(lambda v, f=fns[d][2]: f(v.astype(np.float32)).astype(np.float64), cq[0])
                tables.append(self._table(f"{label}.{d}.output", out_t))
                outs.append(self.b.tensor(self._unique(f"{label}.c{d}"), DType.INT16, (Bn, H), scale=cq[0],
                                          zero_point=0))
                op_ins.append(c0)
            self.op(OpCode.LSTM if lstm else OpCode.GRU, op_ins + tables, outs,
                    RecurrentOptions(reverse[d], clip, lbr), n)
            ys.append(y)
            hs.append(h_t)
            cs.append(outs[2] if lstm else None)
        self._recurrent_output(n.outputs[0], ys, (T, 1, Bn, H), 1, (2, 0, 1, 3) if layout else None)
        self._recurrent_output(n.outputs[1], hs, (1, Bn, H), 0, (1, 0, 2) if layout else None)
        if lstm:
            self._recurrent_output(n.outputs[2], cs, (1, Bn, H), 0, (1, 0, 2) if layout else None)

    def _table(self, name: str, data: np.ndarray) -> int:
        """An int16 table constant, stored once for every op that uses the same one (the gate
        tables of all recurrent layers are alike)."""
        key = ("table", data.tobytes())
        if key not in self.converted:
            self.converted[key] = self.b.tensor(self._unique(name), DType.INT16, data.shape, data)
        return self.converted[key]

    def _recurrent_output(self, name: str, parts: list, part_shape, axis: int, perm):
        """IR value `name` from the directions' tensors: each viewed as part_shape, joined along
        axis (CONCAT), then transposed by perm (layout 1)."""
        if not name or not self.consumers.get(name) and name not in self.g.outputs:
            return
        t = self.b.model.tensors[parts[0]]
        views = [self._view(_Value(p, False), f"{name}.{k}", part_shape, False).tensor for k, p in enumerate(parts)]
        joined = views[0]
        shape = list(part_shape)
        shape[axis] *= len(parts)
        if len(parts) > 1:
            joined = self._like(t, f"{name}.joined" if perm else name, tuple(shape))
            self.b.op(OpCode.CONCAT, views, [joined], ConcatOptions(axis), name=f"{name}.concat")
        if perm:
            out = self._like(t, name, tuple(shape[p] for p in perm))
            self.b.op(OpCode.TRANSPOSE, [joined], [out], TransposeOptions(perm), name=f"{name}.layout")
            joined = out
        self.values[name] = _Value(joined, False)

    # Pooling and reductions --------------------------------------------------

    def _pool(self, n: Node, code):
        """MAX_POOL_2D / AVERAGE_POOL_2D; a 1-D pool as a 2-D one of height 1."""
        kh, kw = ([1] + list(n.attrs["kernel_shape"]))[-2:]
        win, dil = self._window(n, kh, kw)
        if dil != (1, 1):
            raise ConversionError(f"{n.op} '{n.name}': dilated pooling is not supported")
        include = bool(n.attrs.get("count_include_pad", 0))
        pads = list(n.attrs.get("pads", [0] * len(n.attrs["kernel_shape"]) * 2))
        if len(pads) == 2:  # a signal's [left, right]
            pads = [0, pads[0], 0, pads[1]]
        if include and (win["pad_bottom"], win["pad_right"]) != (pads[2], pads[3]):
            # ceil_mode windows that overhang the padded input count only what they cover: with
            # no explicit padding that is exactly count_include_pad = False.
            if any(pads):
                raise ConversionError(f"{n.op} '{n.name}': ceil_mode with padding and count_include_pad "
                                      f"is not supported")
            include = False
        x = self.image_view(n.inputs[0])
        y, then = self.image_output(self.out_value(n))
        opts = Pool2DOptions(kh, kw, **win, count_include_pad=include)
        self.op(code, [x], [y], opts, n, fuse=code == OpCode.AVERAGE_POOL_2D)
        then()

    def _pool_supported(self, n: Node) -> bool:
        rank = len(self.shape(n.inputs[0]))
        return set(n.attrs.get("dilations", [1])) == {1} and rank in (3, 4) and \
            len(n.attrs.get("kernel_shape", [])) == rank - 2

    @lowers("MaxPool", supports=_pool_supported, keeps_input_quantization=True, int16=True)
    def lower_MaxPool(self, n):
        self._pool(n, OpCode.MAX_POOL_2D)

    @lowers("AveragePool", supports=_pool_supported, fusable=True, int16=True)
    def lower_AveragePool(self, n):
        self._pool(n, OpCode.AVERAGE_POOL_2D)

    def _reduced(self, n: Node, axes, keep) -> tuple:
        """(n's input, the stored order of its axes) for a reduction over `axes`: a
        channels-last input stays so when the result's order allows (keep, or C not left
        after the others), else it goes to the source's order."""
        rank = len(self.shape(n.inputs[0]))
        x = self.value(n.inputs[0])
        order = stored_order(rank, x.last)
        kept = [a for a in order if a not in axes]
        if x.last and not keep and kept != sorted(kept):
            x, order = self.to_layout(n.inputs[0], False), tuple(range(rank))
        return x, order

    def _mean(self, n: Node, axes, keep):
        """MEAN over the stored positions of `axes`."""
        rank = len(self.shape(n.inputs[0]))
        axes = sorted({a % rank for a in axes})
        x, order = self._reduced(n, axes, keep)
        y = self.act_tensor(self.out_value(n), self.shape(n.outputs[0]), last=x.last and keep)
        self.op(OpCode.MEAN, [x], [y], MeanOptions(tuple(sorted(order.index(a) for a in axes)), bool(keep)), n,
                fuse=True)

    @lowers("GlobalAveragePool", fusable=True, int16=True)
    def lower_GlobalAveragePool(self, n):
        self._mean(n, range(2, len(self.shape(n.inputs[0]))), True)

    def _reduce_axes(self, n: Node) -> list:
        """The axes a Reduce* node reduces (sorted, >= 0): the attribute or the constant input;
        none given: every axis, or with noop_with_empty_axes none at all."""
        rank = len(self.shape(n.inputs[0]))
        axes = n.attrs.get("axes")
        if axes is None and len(n.inputs) > 1 and n.inputs[1]:
            axes = np.asarray(self.g.constants[n.inputs[1]]).reshape(-1).tolist()
        if not axes and not n.attrs.get("noop_with_empty_axes", 0):
            axes = range(rank)
        return sorted({int(a) % rank for a in axes or ()})

    def _reduce_supported(self, n: Node) -> bool:
        """Axes known at conversion (the attribute, or a constant input since opset 13 / 18) of
        an input of rank >= 1."""
        return len(self.shape(n.inputs[0])) >= 1 and (len(n.inputs) < 2 or not n.inputs[1]
                                                      or n.inputs[1] in self.g.constants)

    @lowers("ReduceMean", supports=_reduce_supported, fusable=True, int16=True)
    def lower_ReduceMean(self, n):
        axes = self._reduce_axes(n)
        if not axes:  # noop_with_empty_axes: the input as it is (in the output's quantization)
            return self._requantize(n)
        self._mean(n, axes, bool(n.attrs.get("keepdims", 1)))

    @lowers("GlobalMaxPool", keeps_input_quantization=True, int16=True)
    def lower_GlobalMaxPool(self, n):
        xs = self.shape(n.inputs[0])
        node = Node("MaxPool", n.inputs, n.outputs, {"kernel_shape": list(xs[2:])}, n.name)
        self._pool(node, OpCode.MAX_POOL_2D)

    @lowers("ReduceSum", "ReduceL2", supports=_reduce_supported, fusable=True, int16=True)
    def lower_reduce(self, n: Node):
        """REDUCE (SPEC.md 2.13.25) over the stored positions of the node's axes (_reduce_axes;
        none: the function of each element alone)."""
        axes = self._reduce_axes(n)
        keep = bool(n.attrs.get("keepdims", 1)) or not axes
        x, order = self._reduced(n, axes, keep)
        y = self.act_tensor(self.out_value(n), self.shape(n.outputs[0]), last=x.last and keep)
        function = {"ReduceSum": ReduceFunction.SUM, "ReduceMax": ReduceFunction.MAX, "ReduceMin": ReduceFunction.MIN,
                    "ReduceL2": ReduceFunction.L2, "ReduceSumSquare": ReduceFunction.SUM_SQUARE}[n.op]
        self.op(OpCode.REDUCE, [x], [y], ReduceOptions(tuple(sorted(order.index(a) for a in axes)), keep, function),
                n, fuse=True)

    @lowers("ReduceMax", "ReduceMin", supports=_reduce_supported, keeps_input_quantization=True, int16=True)
    def lower_reduce_extremum(self, n: Node):
        """REDUCE MAX / MIN: the output keeps the input's quantization, so a Relu after it
        stays a node of its own."""
        self.lower_reduce(n)

    @lowers("ReduceSumSquare", supports=_reduce_supported, fusable=True)
    def lower_ReduceSumSquare(self, n: Node):
        """REDUCE SUM_SQUARE, int8 only: a sum of int16 squares overflows int32 (SPEC.md 2.13.25)."""
        self.lower_reduce(n)

    # Data movement -------------------------------------------------------------

    @lowers("Concat", int16=True)
    def lower_Concat(self, n):
        """In the first activation input's layout (the others and constants follow it)."""
        rank = len(self.shape(n.outputs[0]))
        last = next((self.value(i).last for i in n.inputs if i not in self.g.constants), False)
        ins = [self.to_layout(i, last) if i not in self.g.constants else self.const_activation(i, rank, last)
               for i in n.inputs]
        axis = stored_order(rank, last).index(n.attrs.get("axis", 0) % rank)
        y = self.act_tensor(n.outputs[0], last=last)
        self.op(OpCode.CONCAT, ins, [y], ConcatOptions(axis), n)

    @lowers("Reshape", "Flatten", "Squeeze", "Unsqueeze", keeps_input_quantization=True, int16=True)
    def lower_reshape(self, n: Node):
        """Elements keep the source's order: a channels-last value stays channels last when its
        bytes already are in the result's order (a signal and its image, a squeezed 1x1), else
        it goes through the source's order."""
        out_shape, src = self.shape(n.outputs[0]), n.inputs[0]
        x = self.value(src)
        same = _element_order(self.shape(src), x.last)
        last = next((k for k in (x.last, not x.last) if _element_order(out_shape, k) == same), None)
        if last is None:
            x, last = self.to_layout(src, False), False
        y = self.act_tensor(n.outputs[0], last=last)
        self.op(OpCode.RESHAPE, [x], [y], None, n)

    @lowers("Transpose", keeps_input_quantization=True, int16=True)
    def lower_Transpose(self, n):
        """TRANSPOSE of the stored order into the layout that makes it a copy (a RESHAPE the
        arena aliases) when one does, else into the input's layout."""
        readers = self.g.consumers().get(n.outputs[0], [])
        if len(readers) == 1 and readers[0].op == "MatMul" and readers[0].inputs[1] == n.outputs[0] \
                and readers[0].inputs[1] not in self.g.constants and self._folded_transpose(readers[0]) is n:
            return  # the MatMul reads n's input transposed (BATCH_MATMUL transpose_b)
        perm = list(n.attrs.get("perm", list(range(len(self.shape(n.inputs[0]))))[::-1]))
        rank = len(perm)
        x = self.value(n.inputs[0])
        src = stored_order(rank, x.last)

        def stored_perm(last):  # y_stored = x_stored.transpose(q)
            return tuple(src.index(perm[a]) for a in stored_order(rank, last))
        last = next((k for k in (x.last, not x.last) if stored_perm(k) == tuple(range(rank))), x.last)
        y = self.act_tensor(n.outputs[0], last=last)
        q = stored_perm(last)
        if q == tuple(range(rank)):
            self.op(OpCode.RESHAPE, [x], [y], None, n)
        else:
            self.op(OpCode.TRANSPOSE, [x], [y], TransposeOptions(q), n)

    def _slice(self, n: Node, out: str, windows: list):
        """SLICE of n's input into `out`: windows[d] = (begin, step) per source dimension, in the
        input's layout (the window permuted along)."""
        x = self.value(n.inputs[0])
        windows = [windows[a] for a in stored_order(len(windows), x.last)]
        begin, step = zip(*windows) if windows else ((), ())
        y = self.act_tensor(out, last=x.last)
        self.op(OpCode.SLICE, [x], [y], SliceOptions(tuple(int(b) for b in begin), tuple(int(s) for s in step)), n)

    def _slice_supported(self, n: Node) -> bool:
        return all(i in self.g.constants for i in n.inputs[1:] if i)

    @lowers("Slice", supports=_slice_supported, keeps_input_quantization=True, int16=True)
    def lower_Slice(self, n: Node):
        """ONNX's starts / ends / axes / steps resolved as Python slicing does (negative and
        out-of-range values clamped), per dimension."""
        shape = self.shape(n.inputs[0])
        rank = len(shape)
        const = [np.asarray(self.g.constants[i]).reshape(-1).tolist() if i else None for i in n.inputs[1:]] + [None] * 4
        starts, ends, axes, steps = const[:4]
        axes = [a % rank for a in (axes or range(len(starts)))]
        steps = steps or [1] * len(starts)
        windows = [(0, 1)] * rank
        for a, b, e, s in zip(axes, starts, ends, steps):
            idx = np.arange(shape[a])[slice(int(max(min(b, 2**62), -2**62)), int(max(min(e, 2**62), -2**62)), int(s))]
            windows[a] = (int(idx[0]) if idx.size else 0, int(s))
        self._slice(n, n.outputs[0], windows)

    def _gather_supported(self, n: Node) -> bool:
        """A constant table read at run-time integer indices (an embedding), or an activation
        read at constant ones."""
        data, idx = n.inputs[0], n.inputs[1]
        if data in self.g.constants:
            return idx in self.g.dtypes or idx in self.g.constants
        return idx in self.g.constants

    @lowers("Gather", supports=_gather_supported, keeps_input_quantization=True, int16=True)
    def lower_Gather(self, n: Node):
        """GATHER: an embedding table quantized per tensor over its whole range (the output keeps
        its parameters), or an activation at constant indices (in the source's order)."""
        data, idx = n.inputs[0], n.inputs[1]
        axis = n.attrs.get("axis", 0) % len(self.shape(data))
        if data in self.g.constants:
            x = self.const_activation(data)  # the output has its parameters (pin_qparams)
        else:
            x = self.to_layout(data, False)
        if idx in self.g.constants:
            ids = np.asarray(self.g.constants[idx]).astype(np.int64)
            i = _Value(self.b.tensor(self._unique(idx), DType.INT64, ids.shape, ids), False)
        else:
            i = self.values[idx]
        y = self.act_tensor(n.outputs[0])
        self.op(OpCode.GATHER, [x, i], [y], GatherOptions(axis), n)

    def _split_supported(self, n: Node) -> bool:
        return len(n.inputs) < 2 or not n.inputs[1] or n.inputs[1] in self.g.constants

    @lowers("Split", supports=_split_supported, keeps_input_quantization=True, int16=True)
    def lower_Split(self, n: Node):
        """One SLICE per output, along the axis, where the previous output ends."""
        rank = len(self.shape(n.inputs[0]))
        axis = n.attrs.get("axis", 0) % rank
        at = 0
        for out in n.outputs:
            if not out:
                continue
            windows = [(0, 1)] * rank
            windows[axis] = (at, 1)
            self._slice(n, out, windows)
            at += self.shape(out)[axis]

    def _expand_supported(self, n: Node) -> bool:
        return n.inputs[1] in self.g.constants

    @lowers("Expand", supports=_expand_supported, keeps_input_quantization=True, int16=True)
    def lower_Expand(self, n: Node):
        """A broadcast: SLICE with step 0 along the repeated dimensions (after a RESHAPE, which
        the arena aliases, to the output's rank)."""
        out, src = self.shape(n.outputs[0]), n.inputs[0]
        shape = (1,) * (len(out) - len(self.shape(src))) + self.shape(src)
        x = self.value(src) if len(shape) == len(self.shape(src)) else self._lifted(src, len(out))
        order = stored_order(len(out), x.last)
        windows = [(0, 0 if shape[a] == 1 and out[a] != 1 else 1) for a in order]
        begin, step = zip(*windows) if windows else ((), ())
        y = self.act_tensor(n.outputs[0], last=x.last)
        self.op(OpCode.SLICE, [x], [y], SliceOptions(tuple(begin), tuple(step)), n)

    def _pad_supported(self, n: Node) -> bool:
        mode = _text(n.attrs.get("mode", "constant"))
        value_ok = mode != "constant" or len(n.inputs) < 3 or not n.inputs[2] or (  # the others ignore it
            n.inputs[2] in self.g.constants and float(np.asarray(self.g.constants[n.inputs[2]])) == 0.0)
        known = all(i in self.g.constants for i in n.inputs[1:2] + n.inputs[3:4] if i)
        pads = n.attrs.get("pads") if "pads" in n.attrs else \
            np.asarray(self.g.constants[n.inputs[1]]).reshape(-1) if known and len(n.inputs) > 1 else []
        if min(pads, default=0) < 0:
            raise ConversionError(f"Pad '{n.name}': negative pads {list(map(int, pads))} crop, which qrt's PAD does "
                                  f"not do; write the crop as a Slice")
        return mode in _PAD_MODES and value_ok and known

    @lowers("Pad", supports=_pad_supported, keeps_input_quantization=True, int16=True)
    def lower_Pad(self, n):
        pads = n.attrs.get("pads")
        if pads is None:
            pads = [int(p) for p in np.asarray(self.g.constants[n.inputs[1]]).reshape(-1)]
        mode = _PAD_MODES[_text(n.attrs.get("mode", "constant"))]
        if mode == PadMode.CONSTANT and len(n.inputs) > 2 and n.inputs[2] and \
                float(np.asarray(self.g.constants[n.inputs[2]])) != 0.0:
            raise ConversionError(f"Pad '{n.name}': only zero padding is supported")
        rank = len(self.shape(n.inputs[0]))
        if len(n.inputs) > 3 and n.inputs[3]:  # pads for these axes only (opset 18)
            axes = [int(a) % rank for a in np.asarray(self.g.constants[n.inputs[3]]).reshape(-1)]
            full = [0] * (2 * rank)
            for j, a in enumerate(axes):
                full[a], full[rank + a] = pads[j], pads[len(axes) + j]
            pads = full
        most = {PadMode.REFLECT: 1, PadMode.WRAP: 0}.get(mode)  # what qrt's PAD copies from (SPEC 2.13.9)
        for a, d in enumerate(self.shape(n.inputs[0]) if most is not None else ()):
            if max(pads[a], pads[rank + a]) > d - most:
                raise ConversionError(f"Pad '{n.name}': {mode.name.lower()} pads {pads[a]}, {pads[rank + a]} of axis "
                                      f"{a} exceed its size {d}{' - 1' if most else ''}, which qrt's PAD does not do; "
                                      f"pad in several steps or with another mode")
        x = self.value(n.inputs[0])
        order = stored_order(rank, x.last)
        pads = [pads[a] for a in order] + [pads[rank + a] for a in order]
        y = self.act_tensor(n.outputs[0], last=x.last)
        self.op(OpCode.PAD, [x], [y], PadOptions(tuple(pads), mode), n)

    def _resize_axes(self, n: Node) -> list:
        """(input size, output size, scale as given or None for sizes) per axis of a Resize."""
        x, y = self.shape(n.inputs[0]), self.shape(n.outputs[0])
        rank = len(x)
        axes = [int(a) % rank for a in n.attrs.get("axes", range(rank))]
        given = [1.0] * rank
        scales, sizes = (n.inputs[k] if len(n.inputs) > k and n.inputs[k] else None for k in (2, 3))
        if sizes is not None and np.asarray(self.g.constants[sizes]).size:
            for a in axes:
                given[a] = None
        elif scales is not None:
            for a, v in zip(axes, np.asarray(self.g.constants[scales], np.float64).reshape(-1)):
                given[a] = float(v)
        return [(x[a], y[a], given[a]) for a in range(rank)]

    def _resize_supported(self, n: Node) -> bool:
        """Nearest or linear Resize of an image's H and W or a signal's L with constant scales or
        sizes. Anything else is refused here, before calibration, saying what to do."""
        a = n.attrs
        mode, ctm = _text(a.get("mode", "nearest")), _text(a.get("coordinate_transformation_mode", "half_pixel"))
        nearest = _text(a.get("nearest_mode", "round_prefer_floor"))
        why = None
        if mode not in ("nearest", "linear"):
            why = f"mode '{mode}' is not supported; re-export with nearest or (bi)linear interpolation"
        elif a.get("antialias", 0):
            why = "antialias is not supported; resize without it (antialias=False) or resize the input beforehand"
        elif ctm not in resampling.COORDINATE_MODES:
            why = (f"coordinate_transformation_mode '{ctm}' is not supported ({', '.join(resampling.COORDINATE_MODES)} "
                   f"are); crop with a Slice, then resize")
        elif mode == "nearest" and nearest not in resampling.NEAREST_MODES:
            why = f"nearest_mode '{nearest}' is not supported ({', '.join(resampling.NEAREST_MODES)} are)"
        elif _text(a.get("keep_aspect_ratio_policy", "stretch")) != "stretch":
            why = "keep_aspect_ratio_policy other than 'stretch' is not supported; give the output sizes themselves"
        elif any(i and i not in self.g.constants for i in n.inputs[1:4]):
            why = "its scales or sizes are computed at run time; freeze the inputs they come from (--freeze)"
        elif len(self.shape(n.inputs[0])) not in (3, 4):
            why = "qrt resizes images [N, C, H, W] and signals [N, C, L] only"
        elif any(d_in != d_out or scale not in (None, 1.0) for d_in, d_out, scale in self._resize_axes(n)[:2]):
            why = "it resizes the batch or channel axis, which qrt's RESIZE keeps"
        if why:
            raise ConversionError(f"Resize '{n.name}': {why}")
        return True

    @lowers("Resize", supports=_resize_supported, keeps_input_quantization=True, int16=True)
    def lower_Resize(self, n: Node):
        """RESIZE: ONNX Runtime's sampling of each axis (converters/resampling.py) as integer tables,
        constants of the file; a signal [N, C, L] as the image [N, 1, L, C] (H kept by a 1-tap table)."""
        a = n.attrs
        mode, ctm = _text(a.get("mode", "nearest")), _text(a.get("coordinate_transformation_mode", "half_pixel"))
        nearest = _text(a.get("nearest_mode", "round_prefer_floor"))
        frac = _RESIZE_FRAC_BITS.get(self.cur, 16)  # float islands: 16 (weights within 2^-17)
        axes = self._resize_axes(n)[2:]
        if len(axes) == 1:
            axes = [(1, 1, 1.0)] + axes
        x = self.image_view(n.inputs[0])
        y, then = self.image_output(self.out_value(n))
        ins = [x]
        for label, (d_in, d_out, scale) in zip("hw", axes):
            index, weight = resampling.resize_tables(d_in, d_out, resampling.axis_scale(d_in, d_out, scale), mode, ctm,
                                                     nearest, frac)
            name = f"{n.name or n.outputs[0]}.{label}"
            ins.append(self.b.tensor(self._unique(name + "_index"), DType.INT32, index.shape, index))
            ins.append(self.b.tensor(self._unique(name + "_weight"), DType.INT32, weight.shape, weight,
                                     scale=2.0 ** -frac, zero_point=0))
        self.op(OpCode.RESIZE, ins, [y], None, n)
        then()


# Shape arithmetic and no-ops that simplify() folds into constants or removes.
# ops that fold away in practice (shape chains, conditions on frozen inputs) or that the passes
# fuse (Pow and Reciprocal of decomposed layer and RMS norms) or rewrite (ConvTranspose: a Conv and a
# depth to space); check_quantizable catches any left computing on run-time values
FOLDED_OPS = {"Identity", "Dropout", "Constant", "Shape", "Size", "Cast", "CastLike",
              "ConstantOfShape", "Range", "Equal", "Where", "Sum", "Greater", "Less",
              "GreaterOrEqual", "LessOrEqual", "Not", "Pow", "Reciprocal", "ConvTranspose"}


def bias_correction(err: np.ndarray, mean: np.ndarray, conv_like: bool) -> np.ndarray:
    """E[err x] per output channel: err = W - dequantized W in the source layout ([C_out, C_in/g,
    KH, KW], or [N_out, K]), mean the calibration mean of each input channel (or of x)."""
    mean = mean.astype(np.float64)
    if not conv_like:
        return err @ mean
    groups = mean.size // err.shape[1]
    cout_g = err.shape[0] // groups
    m = np.repeat(mean.reshape(groups, err.shape[1]), cout_g, axis=0)  # each output channel's inputs
    return (err.sum(axis=(2, 3)) * m).sum(axis=1)


_LAYOUT_ONLY = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"}


def output_joins(graph: Graph) -> set:
    """Ids of the nodes that join run-time values into a graph output: a Concat (a detector's
    boxes next to its class scores) and the reshapes / transposes between it and the output.
    The values leave as float anyway, so each is dequantized with its own parameters and they
    are joined in float32, rather than all requantized to the one range the widest sets."""
    consumers, found = graph.consumers(), set()
    for n in graph.nodes:
        if n.op != "Concat" or sum(bool(i) and i not in graph.constants for i in n.inputs) < 2:
            continue
        chain, v = [n], n.outputs[0]
        while v not in graph.outputs and len(consumers.get(v, [])) == 1 and consumers[v][0].op in _LAYOUT_ONLY:
            chain.append(consumers[v][0])
            v = chain[-1].outputs[0]
        if v in graph.outputs and len(consumers.get(v, [])) == 0:
            found |= {id(m) for m in chain}
    return found


def node_forms(graph: Graph, table: SchemeTable) -> dict:
    """node id -> the qrt form it computes in, by its scheme (schemes.node_form); float32 for
    the output_joins."""
    forms, joins = {}, output_joins(graph)
    for n in graph.nodes:
        weights = len(n.inputs) > 1 and n.inputs[1] in graph.constants
        rule = RULES.get(n.op)
        forms[id(n)] = FLOAT32 if id(n) in joins else \
            node_form(table.scheme(n.name, n.op), n.op, weights, rule is not None and rule.int16)
    return forms


def quantizable(op: str) -> bool:
    """Whether an ONNX op type has an int8 form here (or disappears before lowering)."""
    return op in RULES or op in FOLDED_OPS


def check_quantizable(graph: Graph) -> set:
    """Raise UnsupportedOpsError listing every node of a simplified graph that cannot be
    lowered (before any calibration is spent on it); else the values that need no quantization
    parameters (an attention mask's terms, the masked scores: -inf is no range)."""
    low = Lowering(graph, {}, LoweringOptions())
    low.check_supported()
    return {o for n in graph.nodes if id(n) in low.skip for o in n.outputs}


def lower(graph: Graph, qparams: dict, options: LoweringOptions | None = None, metadata: Metadata | None = None,
          qparams16: dict | None = None):
    """(qrt.format.ModelDefinition, [(source op, qrt op, form, node name)], [notes]) for a
    simplified, shape-inferred graph; qparams16: each value's int16 parameters, for int16
    schemes; the notes say where a node's scheme could not be followed."""
    low = Lowering(graph, qparams, options or LoweringOptions(), qparams16)
    model = low.run(metadata or Metadata())
    return model, low.report, low.notes
