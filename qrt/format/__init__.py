"""The .qmodel format: in-memory model objects, reader (numpy only), verifier and writer.

    schema/qmodel.fbs  ->  model.py (objects)  ->  writer.py  ->  file
    file  ->  reader.py (structure, offsets)  ->  verify.py (spec rules; each op's own in qrt/ops/)  ->  ModelDefinition

This package's namespace holds the objects and ModelBuilder only: the reader, the verifier and
the writer need the op rules of qrt/ops/, which build on these objects, so they are imported
from their modules (or as qrt.read_model, qrt.write_model, qrt.verify_model, qrt.to_bytes).
"""
from .model import (
    Activation, BatchMatMulOptions, Calibration, GatherOptions, ConcatOptions, Conv2DOptions, DepthwiseConv2DOptions, DType,
    GraphIO, InputQuantization, LayerNormOptions, Layout, LeakyReluOptions, LutOptions, MeanOptions, Metadata, ModelDefinition,
    OpCode, Operator, PadMode, PadOptions, Pool2DOptions, Quantization, ReduceFunction, ReduceOptions, RecurrentOptions, SliceOptions, SoftmaxOptions,
    Symbol, SymbolicDim, Tensor, TransposeOptions, UnaryFunction, UnaryOptions,
)
from .builder import ModelBuilder
from .versions import FORMAT_VERSION, NUMERICS_VERSION

__all__ = [
    "Activation", "BatchMatMulOptions", "Calibration", "GatherOptions", "ConcatOptions", "Conv2DOptions", "DepthwiseConv2DOptions",
    "DType", "GraphIO", "InputQuantization", "LayerNormOptions", "Layout", "LeakyReluOptions", "LutOptions", "MeanOptions", "Metadata",
    "ModelDefinition", "OpCode", "Operator", "PadMode", "PadOptions", "Pool2DOptions", "Quantization", "ReduceFunction", "ReduceOptions", "RecurrentOptions",
    "SliceOptions", "SoftmaxOptions", "Symbol", "SymbolicDim",
    "Tensor", "TransposeOptions", "UnaryFunction", "UnaryOptions", "ModelBuilder", "FORMAT_VERSION", "NUMERICS_VERSION",
]
