"""The in-memory form of a .qmodel: plain Python objects that mirror schema/qmodel.fbs.

The reader builds these from a file (constant tensors are read-only views of the file, not
copies) and the writer turns them back into bytes. Field meanings are in schema/SPEC.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum

import numpy as np


class DType(IntEnum):
    FLOAT32 = 0
    INT8 = 1
    UINT8 = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    INT4 = 6  # two per byte, low nibble first


class Layout(IntEnum):
    AS_STORED = 0
    NCHW = 1


class Activation(IntEnum):
    NONE = 0
    RELU = 1
    RELU6 = 2
    CLIP = 3


class OpCode(IntEnum):
    CONV_2D = 0
    DEPTHWISE_CONV_2D = 1
    FULLY_CONNECTED = 2
    ADD = 3
    SUB = 4
    MUL = 5
    CONCAT = 6
    MAX_POOL_2D = 7
    AVERAGE_POOL_2D = 8
    MEAN = 9
    PAD = 10
    RESHAPE = 11
    TRANSPOSE = 12
    LEAKY_RELU = 13
    PRELU = 14
    LUT = 15
    SOFTMAX = 16
    QUANTIZE = 17
    DEQUANTIZE = 18
    REQUANTIZE = 19
    MAXIMUM = 20
    MINIMUM = 21
    UNARY = 22
    BATCH_MATMUL = 23
    LAYER_NORM = 24
    SLICE = 25
    GATHER = 26
    REDUCE = 27
    LSTM = 28
    GRU = 29
    RESIZE = 30


class InputQuantization(IntEnum):
    """How CONV_2D / FULLY_CONNECTED with float32 activations and quantized weights compute."""
    NONE = 0  # float32 arithmetic, weights dequantized in the kernel (weight-only)
    DYNAMIC_INT8 = 1  # input quantized to int8 per row at run time; integer arithmetic


class UnaryFunction(IntEnum):
    SIGMOID = 0
    TANH = 1
    HARD_SIGMOID = 2
    HARD_SWISH = 3
    SILU = 4
    GELU = 5
    GELU_TANH = 6
    ERF = 7
    SQRT = 8
    NEG = 9
    EXP = 10
    LOG = 11
    ABS = 12


class PadMode(IntEnum):  # numpy.pad's modes; CONSTANT fills with the zero point
    CONSTANT = 0
    REFLECT = 1
    EDGE = 2
    WRAP = 3


class ReduceFunction(IntEnum):
    SUM = 0
    MAX = 1
    MIN = 2
    L2 = 3  # sqrt(sum x^2)
    SUM_SQUARE = 4  # sum x^2


# numpy dtype of each DType's elements (INT4 is stored packed, as raw bytes).
NUMPY_DTYPE = {
    DType.FLOAT32: np.dtype("<f4"),
    DType.INT8: np.dtype("i1"),
    DType.UINT8: np.dtype("u1"),
    DType.INT16: np.dtype("<i2"),
    DType.INT32: np.dtype("<i4"),
    DType.INT64: np.dtype("<i8"),
    DType.INT4: np.dtype("u1"),
}

# Integer range of each quantized dtype (zero points must lie inside it).
QUANT_RANGE = {
    DType.INT8: (-128, 127),
    DType.UINT8: (0, 255),
    DType.INT16: (-32768, 32767),
    DType.INT32: (-(2**31), 2**31 - 1),
    DType.INT4: (-8, 7),
}


def pack_int4(values) -> np.ndarray:
    """int values in [-8, 7] -> bytes, two per byte, the lower-indexed value in the low nibble."""
    v = np.asarray(values).reshape(-1).astype(np.uint8) & 0x0F
    if v.size % 2:
        v = np.append(v, np.uint8(0))
    return (v[0::2] | (v[1::2] << 4)).astype(np.uint8)


def unpack_int4(data: np.ndarray, numel: int) -> np.ndarray:
    """The int8 values of `numel` packed INT4 elements (sign-extended nibbles)."""
    b = np.asarray(data, np.uint8).reshape(-1)
    v = np.empty(b.size * 2, np.int8)
    v[0::2] = (b << 4).view(np.int8) >> 4
    v[1::2] = b.view(np.int8) >> 4
    return v[:numel]


def buffer_nbytes(dtype: DType, numel: int) -> int:
    """Bytes a constant tensor of `numel` elements occupies in the data segment."""
    if dtype == DType.INT4:
        return (numel + 1) // 2
    return numel * NUMPY_DTYPE[dtype].itemsize


@dataclass(eq=False)
class Quantization:
    """real = scale * (q - zero_point); per tensor (one entry), per channel along `axis`, or per
    group of `group_size` values along the reduction axis (scale[c * groups + g])."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0  # schema: quantized_dimension
    group_size: int = 0  # > 0: per group (weights of CONV_2D and FULLY_CONNECTED)

    def __post_init__(self):
        self.scale = np.atleast_1d(np.asarray(self.scale, dtype=np.float32))
        self.zero_point = np.atleast_1d(np.asarray(self.zero_point, dtype=np.int32))

    @property
    def per_channel(self) -> bool:
        """More than one scale: per channel or per group."""
        return self.scale.size > 1

    @property
    def per_group(self) -> bool:
        return self.group_size > 0


@dataclass(frozen=True)
class Symbol:
    """A size that varies from run to run (a sequence length): min <= S <= max. The tensors'
    stored shapes hold their sizes at S = max (SPEC.md section 2.15)."""
    name: str
    max: int
    min: int = 1


@dataclass(frozen=True)
class SymbolicDim:
    """Dimension `axis` of a tensor at a run: floor((multiplier * S + offset) / divisor), S the
    run's size of Model.symbols[symbol] (SPEC.md section 2.15)."""
    axis: int
    symbol: int
    multiplier: int = 1
    offset: int = 0
    divisor: int = 1

    def at(self, size: int) -> int:
        """The dimension when the symbol's size is `size` (exact integer floor division; the
        verifier has checked divisor >= 1)."""
        return (self.multiplier * size + self.offset) // self.divisor

    @property
    def plain(self) -> bool:
        """The dimension is the symbol's size itself."""
        return (self.multiplier, self.offset, self.divisor) == (1, 0, 1)

    def text(self, name: str) -> str:
        """The expression with the symbol called `name`, as Python writes it: "length",
        "(length+1)//2", "2*length-1"."""
        m, o, d = self.multiplier, self.offset, self.divisor
        t = name if m == 1 else f"{m}*{name}" if m else ""
        if o:
            t = f"{t}{'+' if o > 0 else '-'}{abs(o)}" if t else str(o)
        t = t or "0"
        if d != 1:
            t = f"({t})//{d}" if t != name else f"{t}//{d}"
        return t


def user_axis(axis: int, layout: Layout) -> int:
    """Where stored axis `axis` of a graph input or output is in the array the user sees
    (NCHW: stored [N, H, W, C] is the user's [N, C, H, W])."""
    return (0, 2, 3, 1)[axis] if layout == Layout.NCHW else axis


def shape_text(shape, symbols: dict) -> str:
    """A shape for people: "[1, sequence<=128, 256]", the symbolic axes (symbols: axis ->
    (expression, min, max), as ModelDefinition.io_symbols gives them) by their range."""
    dims = []
    for a, d in enumerate(shape):
        if a in symbols:
            text, lo, hi = symbols[a]
            dims.append(f"{text}<={hi}" if lo <= 1 else f"{lo}<={text}<={hi}")
        else:
            dims.append(str(d))
    return "[" + ", ".join(dims) + "]"


@dataclass(eq=False)
class Tensor:
    """A named tensor. `data` holds the values of a constant (weights, biases, tables); it is
    None for tensors computed at run time. `symbolic_dims`: the dimensions that vary with a
    symbol (revision 4), SymbolicDims or tuples of their fields (axis, symbol[, multiplier,
    offset, divisor]); `shape` holds their sizes at every symbol's max."""

    name: str
    dtype: DType
    shape: tuple
    data: np.ndarray | None = None
    quant: Quantization | None = None
    symbolic_dims: tuple = ()

    def __post_init__(self):
        self.dtype = DType(self.dtype)
        self.shape = tuple(int(d) for d in self.shape)
        self.symbolic_dims = tuple(d if isinstance(d, SymbolicDim) else SymbolicDim(*d) for d in self.symbolic_dims)

    def shape_at(self, sizes) -> tuple:
        """The shape when symbol i has size sizes[i] (the stored shape with each symbolic
        dimension evaluated)."""
        shape = list(self.shape)
        for sd in self.symbolic_dims:
            shape[sd.axis] = sd.at(sizes[sd.symbol])
        return tuple(shape)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


# Operator options: one dataclass per options table of the schema, same field names.
@dataclass
class Conv2DOptions:
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    pad_top: int = 0
    pad_left: int = 0
    pad_bottom: int = 0
    pad_right: int = 0
    groups: int = 1


@dataclass
class DepthwiseConv2DOptions:
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    pad_top: int = 0
    pad_left: int = 0
    pad_bottom: int = 0
    pad_right: int = 0
    depth_multiplier: int = 1


@dataclass
class Pool2DOptions:
    kernel_h: int = 0
    kernel_w: int = 0
    stride_h: int = 1
    stride_w: int = 1
    pad_top: int = 0
    pad_left: int = 0
    pad_bottom: int = 0
    pad_right: int = 0
    count_include_pad: bool = False


@dataclass
class ConcatOptions:
    axis: int = 0


@dataclass
class MeanOptions:
    axes: tuple = ()
    keep_dims: bool = False


@dataclass
class PadOptions:
    pads: tuple = ()
    mode: int = PadMode.CONSTANT


@dataclass
class TransposeOptions:
    perm: tuple = ()


@dataclass
class LeakyReluOptions:
    alpha: float = 0.0


@dataclass
class SoftmaxOptions:
    axis: int = -1
    beta: float = 1.0
    mask_zero_keeps: bool = False  # with a mask input: elements whose mask is 0 take part


@dataclass
class LutOptions:
    function: str = ""


@dataclass
class UnaryOptions:
    function: int = UnaryFunction.SIGMOID  # a UnaryFunction; checked by the verifier
    alpha: float = 0.2  # HARD_SIGMOID only
    beta: float = 0.5


@dataclass
class BatchMatMulOptions:
    transpose_b: bool = False  # b is [..., N, K]


@dataclass
class LayerNormOptions:
    epsilon: float = 1e-5
    rms: bool = False  # no mean subtracted (RMSNorm)


@dataclass
class GatherOptions:
    axis: int = 0


@dataclass
class SliceOptions:
    begin: tuple = ()
    step: tuple = ()


@dataclass
class ReduceOptions:
    axes: tuple = ()  # empty: no dimension is reduced (f of each element alone)
    keep_dims: bool = False
    function: int = ReduceFunction.SUM  # a ReduceFunction; checked by the verifier


@dataclass
class RecurrentOptions:
    reverse: bool = False  # the sequence runs from its last step to its first
    clip: float = 0.0  # > 0: gate pre-activations clamped to [-clip, clip]
    linear_before_reset: bool = False  # GRU: r * (R h + b) rather than R (r * h) + b


# Union member order of OpOptions in the schema: the type code of options class i is i + 1.
OPTIONS_TYPES = (
    Conv2DOptions,
    DepthwiseConv2DOptions,
    Pool2DOptions,
    ConcatOptions,
    MeanOptions,
    PadOptions,
    TransposeOptions,
    LeakyReluOptions,
    SoftmaxOptions,
    LutOptions,
    UnaryOptions,
    BatchMatMulOptions,
    LayerNormOptions,
    SliceOptions,
    GatherOptions,
    ReduceOptions,
    RecurrentOptions,
)


@dataclass
class Operator:
    opcode: OpCode
    inputs: tuple
    outputs: tuple
    options: object = None
    activation: Activation = Activation.NONE
    clip_min: float = 0.0
    clip_max: float = 0.0
    name: str = ""
    version: int = 1
    input_quantization: InputQuantization = InputQuantization.NONE

    def __post_init__(self):
        self.inputs = tuple(int(i) for i in self.inputs)
        self.outputs = tuple(int(i) for i in self.outputs)


@dataclass
class GraphIO:
    name: str
    tensor: int
    layout: Layout = Layout.AS_STORED


@dataclass
class Calibration:
    method: str = ""
    num_samples: int = 0
    settings: dict = field(default_factory=dict)


@dataclass
class Metadata:
    producer: str = ""
    producer_version: str = ""
    source_file: str = ""
    source_sha256: str = ""
    calibration: Calibration | None = None
    properties: dict = field(default_factory=dict)


@dataclass(eq=False)
class ModelDefinition:
    """What a .qmodel file holds (qrt.read_model returns one; qrt.load runs one as a qrt.Model)."""
    tensors: list
    operators: list
    inputs: list
    outputs: list
    metadata: Metadata = field(default_factory=Metadata)
    name: str = ""
    # Filled in by the reader from the file; the writer computes them.
    format_version: int = 0
    min_runtime_version: str = ""
    numerics_version: int = 1
    symbols: tuple = ()  # Symbols (revision 4): sizes that vary from run to run

    @property
    def max_sizes(self) -> tuple:
        """Every symbol at its max: the sizes the stored shapes hold."""
        return tuple(s.max for s in self.symbols)

    @property
    def min_sizes(self) -> tuple:
        return tuple(s.min for s in self.symbols)

    def io_symbols(self, g) -> dict:
        """The symbolic dimensions of graph input or output `g` as the user sees them: user
        axis -> (expression, its min, its max); for a graph input the expression is the
        symbol's name and the range the symbol's."""
        t = self.tensors[g.tensor]
        out = {}
        for sd in t.symbolic_dims:
            s = self.symbols[sd.symbol]
            out[user_axis(sd.axis, g.layout)] = (sd.text(s.name), sd.at(s.min), sd.at(s.max))
        return dict(sorted(out.items()))

    def cut(self, sizes) -> "ModelDefinition":
        """The model with symbol i at size sizes[i], as a model without symbols (SPEC.md section
        2.15): every tensor at its shape there, a constant cut to the corner data[:d0, :d1, ...]
        of its stored values. Tensors without symbolic dimensions are shared, not copied.
        Unverified: the caller verifies (the verifier at every symbol's min, the runtime at
        each run's sizes)."""
        sizes = tuple(int(s) for s in sizes)
        tensors = []
        for t in self.tensors:
            if not t.symbolic_dims:
                tensors.append(t)
                continue
            shape = t.shape_at(sizes)
            data = t.data
            if data is not None and shape != t.shape:
                corner = tuple(slice(0, d) for d in shape)
                if t.dtype == DType.INT4:
                    data = pack_int4(unpack_int4(data, t.numel).reshape(t.shape)[corner])
                else:
                    data = np.ascontiguousarray(data[corner])
                data.flags.writeable = False
            tensors.append(Tensor(t.name, t.dtype, shape, data, t.quant))
        return replace(self, tensors=tensors, symbols=())

    def tensor_label(self, index: int) -> str:
        """How errors name a tensor: its index and, when it is valid, its name."""
        if 0 <= index < len(self.tensors):
            return f"tensor {index} '{self.tensors[index].name}'"
        return f"tensor {index}"

    def operator_label(self, index: int) -> str:
        op = self.operators[index]
        opname = OpCode(op.opcode).name if op.opcode in OpCode._value2member_map_ else str(op.opcode)
        named = f" '{op.name}'" if op.name else ""
        return f"operator {index}{named} ({opname})"
