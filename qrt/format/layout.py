"""The binary layout of schema/qmodel.fbs, as qrt's own reader needs it.

qrt reads files without the flatbuffers package (the runtime depends on numpy only) and
verifies every offset as it goes, so it needs each table's fields: in declaration order,
which is their vtable slot (a union takes two slots: its type, then its value), with kind
and default. tests/format/test_schema.py checks this file against the flatc-generated code.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class Scalar:
    name: str
    fmt: str  # struct format, little-endian

    @property
    def size(self) -> int:
        return struct.calcsize(self.fmt)


BOOL = Scalar("bool", "<?")
I8 = Scalar("byte", "<b")
U8 = Scalar("ubyte", "<B")
U16 = Scalar("ushort", "<H")
I32 = Scalar("int", "<i")
U32 = Scalar("uint", "<I")
F32 = Scalar("float", "<f")
U64 = Scalar("ulong", "<Q")


@dataclass(frozen=True)
class String:
    pass


STRING = String()


@dataclass(frozen=True)
class Struct:
    name: str
    fields: tuple  # (name, Scalar) in declaration order, no padding needed here

    @property
    def fmt(self) -> str:
        return "<" + "".join(s.fmt[1:] for _, s in self.fields)

    @property
    def size(self) -> int:
        return struct.calcsize(self.fmt)


@dataclass(frozen=True)
class Table:
    name: str
    fields: tuple  # (name, kind, default) in declaration order


@dataclass(frozen=True)
class Vector:
    element: object  # Scalar, String, Struct or Table


@dataclass(frozen=True)
class Union:
    name: str
    members: tuple  # Tables; the type code of members[i] is i + 1 (0 is NONE)


REQUIRED = object()  # default of a field the schema marks (required)

QUANTIZATION = Table("Quantization", (
    ("scale", Vector(F32), None),
    ("zero_point", Vector(I32), None),
    ("quantized_dimension", I32, 0),
    ("group_size", I32, 0),
))

BUFFER = Struct("Buffer", (("offset", U64), ("size", U64)))

SYMBOL = Table("Symbol", (("name", STRING, None), ("max", I32, 0), ("min", I32, 1)))
SYMBOLIC_DIM = Table("SymbolicDim", (
    ("axis", I32, 0),
    ("symbol", I32, 0),
    ("multiplier", I32, 1),
    ("offset", I32, 0),
    ("divisor", I32, 1),
))

TENSOR = Table("Tensor", (
    ("name", STRING, REQUIRED),
    ("dtype", I8, 0),
    ("shape", Vector(I32), None),
    ("buffer", U32, 0),
    ("quantization", QUANTIZATION, None),
    ("symbolic_dims", Vector(SYMBOLIC_DIM), None),
))

_WINDOW = (
    ("stride_h", I32, 1),
    ("stride_w", I32, 1),
    ("dilation_h", I32, 1),
    ("dilation_w", I32, 1),
    ("pad_top", I32, 0),
    ("pad_left", I32, 0),
    ("pad_bottom", I32, 0),
    ("pad_right", I32, 0),
)

CONV_2D_OPTIONS = Table("Conv2DOptions", _WINDOW + (("groups", I32, 1),))
DEPTHWISE_CONV_2D_OPTIONS = Table("DepthwiseConv2DOptions", _WINDOW + (("depth_multiplier", I32, 1),))
POOL_2D_OPTIONS = Table("Pool2DOptions", (
    ("kernel_h", I32, 0),
    ("kernel_w", I32, 0),
    ("stride_h", I32, 1),
    ("stride_w", I32, 1),
    ("pad_top", I32, 0),
    ("pad_left", I32, 0),
    ("pad_bottom", I32, 0),
    ("pad_right", I32, 0),
    ("count_include_pad", BOOL, False),
))
CONCAT_OPTIONS = Table("ConcatOptions", (("axis", I32, 0),))
MEAN_OPTIONS = Table("MeanOptions", (("axes", Vector(I32), None), ("keep_dims", BOOL, False)))
PAD_OPTIONS = Table("PadOptions", (("pads", Vector(I32), None), ("mode", I8, 0)))
TRANSPOSE_OPTIONS = Table("TransposeOptions", (("perm", Vector(I32), None),))
LEAKY_RELU_OPTIONS = Table("LeakyReluOptions", (("alpha", F32, 0.0),))
SOFTMAX_OPTIONS = Table("SoftmaxOptions", (("axis", I32, -1), ("beta", F32, 1.0), ("mask_zero_keeps", BOOL, False)))
LUT_OPTIONS = Table("LutOptions", (("function", STRING, None),))
UNARY_OPTIONS = Table("UnaryOptions", (("function", I8, 0), ("alpha", F32, 0.2), ("beta", F32, 0.5)))
BATCH_MATMUL_OPTIONS = Table("BatchMatMulOptions", (("transpose_b", BOOL, False),))
LAYER_NORM_OPTIONS = Table("LayerNormOptions", (("epsilon", F32, 1e-5), ("rms", BOOL, False)))
SLICE_OPTIONS = Table("SliceOptions", (("begin", Vector(I32), None), ("step", Vector(I32), None)))
GATHER_OPTIONS = Table("GatherOptions", (("axis", I32, 0),))
REDUCE_OPTIONS = Table("ReduceOptions", (("axes", Vector(I32), None), ("keep_dims", BOOL, False), ("function", I8, 0)))
RECURRENT_OPTIONS = Table("RecurrentOptions", (("reverse", BOOL, False), ("clip", F32, 0.0),
                                               ("linear_before_reset", BOOL, False)))

OP_OPTIONS = Union("OpOptions", (
    CONV_2D_OPTIONS,
    DEPTHWISE_CONV_2D_OPTIONS,
    POOL_2D_OPTIONS,
    CONCAT_OPTIONS,
    MEAN_OPTIONS,
    PAD_OPTIONS,
    TRANSPOSE_OPTIONS,
    LEAKY_RELU_OPTIONS,
    SOFTMAX_OPTIONS,
    LUT_OPTIONS,
    UNARY_OPTIONS,
    BATCH_MATMUL_OPTIONS,
    LAYER_NORM_OPTIONS,
    SLICE_OPTIONS,
    GATHER_OPTIONS,
    REDUCE_OPTIONS,
    RECURRENT_OPTIONS,
))

OPERATOR = Table("Operator", (
    ("opcode", I32, 0),
    ("version", U16, 1),
    ("inputs", Vector(U32), None),
    ("outputs", Vector(U32), None),
    ("options", OP_OPTIONS, None),  # two slots: options_type, options
    ("activation", I8, 0),
    ("clip_min", F32, 0.0),
    ("clip_max", F32, 0.0),
    ("name", STRING, None),
    ("input_quantization", I8, 0),
))

GRAPH_IO = Table("GraphIO", (
    ("name", STRING, REQUIRED),
    ("tensor", U32, 0),
    ("layout", I8, 0),
))

KEY_VALUE = Table("KeyValue", (("key", STRING, REQUIRED), ("value", STRING, None)))

CALIBRATION = Table("Calibration", (
    ("method", STRING, None),
    ("num_samples", U32, 0),
    ("settings", Vector(KEY_VALUE), None),
))

METADATA = Table("Metadata", (
    ("producer", STRING, None),
    ("producer_version", STRING, None),
    ("source_file", STRING, None),
    ("source_sha256", STRING, None),
    ("calibration", CALIBRATION, None),
    ("properties", Vector(KEY_VALUE), None),
))

MODEL = Table("Model", (
    ("format_version", U32, 0),
    ("min_runtime_version", STRING, REQUIRED),
    ("numerics_version", U32, 1),
    ("name", STRING, None),
    ("tensors", Vector(TENSOR), None),
    ("operators", Vector(OPERATOR), None),
    ("inputs", Vector(GRAPH_IO), None),
    ("outputs", Vector(GRAPH_IO), None),
    ("buffers", Vector(BUFFER), None),
    ("metadata", METADATA, None),
    ("symbols", Vector(SYMBOL), None),
))

FILE_IDENTIFIER = b"QMDL"
DATA_ALIGNMENT = 64


def data_segment_start(flatbuffer_size: int) -> int:
    """Where the data segment begins: after the u32 size prefix and the FlatBuffer, at the
    next multiple of DATA_ALIGNMENT."""
    end = 4 + flatbuffer_size
    return -(-end // DATA_ALIGNMENT) * DATA_ALIGNMENT
