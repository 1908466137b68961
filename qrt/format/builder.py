"""ModelBuilder: assemble a ModelDefinition tensor by tensor and op by op (used by converters and tests)."""
from __future__ import annotations

import numpy as np

from .model import (
    NUMPY_DTYPE, Activation, DType, GraphIO, InputQuantization, Layout, Metadata, ModelDefinition, OpCode, Operator,
    Quantization, Symbol, Tensor,
)


class ModelBuilder:
    def __init__(self, name: str = ""):
        self.model = ModelDefinition(tensors=[], operators=[], inputs=[], outputs=[], name=name)

    def symbol(self, name: str, max: int, min: int = 1) -> int:
        """Declare a size that varies from run to run (a sequence length), min <= S <= max;
        returns its index for the symbolic_dims of tensor() (SPEC.md section 2.15)."""
        self.model.symbols += (Symbol(name, int(max), int(min)),)
        return len(self.model.symbols) - 1

    def tensor(self, name: str, dtype: DType, shape, data=None, scale=None, zero_point=0,
               axis: int = 0, group_size: int = 0, symbolic_dims=()) -> int:
        """Add a tensor (a constant when `data` is given; INT4 data packed, two per byte); returns
        its index. `scale` (scalar, per-channel or per-group sequence) adds quantization with
        `zero_point` along `axis`, per group of `group_size` when > 0. `symbolic_dims`:
        SymbolicDims, or tuples (axis, symbol[, multiplier, offset, divisor]), of the
        dimensions that vary with a symbol; `shape` (and a constant's `data`) holds them at
        every symbol's max."""
        dtype = DType(dtype)
        if data is not None and dtype != DType.INT4:
            data = np.ascontiguousarray(data, dtype=NUMPY_DTYPE[dtype]).reshape(shape)
        quant = None
        if scale is not None:
            scale = np.atleast_1d(np.asarray(scale, dtype=np.float32))
            zp = np.broadcast_to(np.asarray(zero_point, dtype=np.int32), scale.shape)
            quant = Quantization(scale, zp, axis, group_size)
        self.model.tensors.append(Tensor(name, dtype, tuple(shape), data, quant, symbolic_dims))
        return len(self.model.tensors) - 1

    def op(self, opcode: OpCode, inputs, outputs, options=None, activation=Activation.NONE,
           clip=(0.0, 0.0), name: str = "", input_quantization=InputQuantization.NONE) -> int:
        self.model.operators.append(Operator(OpCode(opcode), tuple(inputs), tuple(outputs), options,
                                             Activation(activation), clip[0], clip[1], name,
                                             input_quantization=InputQuantization(input_quantization)))
        return len(self.model.operators) - 1

    def input(self, name: str, tensor: int, layout: Layout = Layout.AS_STORED):
        self.model.inputs.append(GraphIO(name, tensor, Layout(layout)))

    def output(self, name: str, tensor: int, layout: Layout = Layout.AS_STORED):
        self.model.outputs.append(GraphIO(name, tensor, Layout(layout)))

    def build(self, metadata: Metadata | None = None) -> ModelDefinition:
        if metadata is not None:
            self.model.metadata = metadata
        return self.model
