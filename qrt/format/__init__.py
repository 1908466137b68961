"""The .qmodel format: in-memory model objects, reader (numpy only), verifier and writer.

    schema/qmodel.fbs  ->  model.py (objects)  ->  writer.py  ->  file
    file  ->  reader.py (structure, offsets)  ->  verify.py (spec rules)  ->  Model
"""
from .model import (
    Activation, Calibration, ConcatOptions, Conv2DOptions, DepthwiseConv2DOptions, DType,
    GraphIO, Layout, LeakyReluOptions, LutOptions, MeanOptions, Metadata, Model, OpCode,
    Operator, PadOptions, Pool2DOptions, Quantization, SoftmaxOptions, Tensor, TransposeOptions,
)
from .builder import ModelBuilder
from .reader import read_model
from .verify import verify_model
from .versions import FORMAT_VERSION, NUMERICS_VERSION
from .writer import to_bytes, write_model

__all__ = [
    "Activation", "Calibration", "ConcatOptions", "Conv2DOptions", "DepthwiseConv2DOptions",
    "DType", "GraphIO", "Layout", "LeakyReluOptions", "LutOptions", "MeanOptions", "Metadata",
    "Model", "OpCode", "Operator", "PadOptions", "Pool2DOptions", "Quantization", "SoftmaxOptions",
    "Tensor", "TransposeOptions", "ModelBuilder", "read_model", "verify_model", "to_bytes", "write_model",
    "FORMAT_VERSION", "NUMERICS_VERSION",
]
