"""Every operator of the format, one module each (qrt/ops/<op name>.py): its verification rule,
its prepare step (all float math, once at load), its NumPy reference, and the name of its
compiled kernel (qrt/kernels/). OPS is the one registry: the verifier, the runtime's kernel
sets and the tests all go through it.

Adding an op: docs/ARCHITECTURE.md has the checklist.
"""
from __future__ import annotations

import dataclasses
import math

from .._version import __version__
from ..errors import InvalidModelError, UnsupportedModelError
from ..format.model import Activation, DType, InputQuantization, ModelDefinition, OpCode
from ..format.versions import BASE_SINCE, parse_version
from .add import ADD
from .average_pool_2d import AVERAGE_POOL_2D
from .batch_matmul import BATCH_MATMUL
from .base import DYNAMIC, Check, Form, OpDef
from .concat import CONCAT
from .conv_2d import CONV_2D
from .depthwise_conv_2d import DEPTHWISE_CONV_2D
from .dequantize import DEQUANTIZE
from .fully_connected import FULLY_CONNECTED
from .gather import GATHER
from .gru import GRU
from .layer_norm import LAYER_NORM
from .leaky_relu import LEAKY_RELU
from .lstm import LSTM
from .lut import LUT
from .max_pool_2d import MAX_POOL_2D
from .maximum import MAXIMUM
from .mean import MEAN
from .minimum import MINIMUM
from .mul import MUL
from .pad import PAD
from .prelu import PRELU
from .quantize import QUANTIZE
from .reduce import REDUCE
from .requantize import REQUANTIZE
from .reshape import RESHAPE
from .resize import RESIZE
from .slice import SLICE
from .softmax import SOFTMAX
from .sub import SUB
from .transpose import TRANSPOSE
from .unary import UNARY

OPS: dict[OpCode, OpDef] = {d.opcode: d for d in (
    CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL, CONCAT, MAX_POOL_2D, AVERAGE_POOL_2D,
    MEAN, PAD, RESHAPE, TRANSPOSE, LEAKY_RELU, PRELU, LUT, SOFTMAX, QUANTIZE, DEQUANTIZE, REQUANTIZE,
    MAXIMUM, MINIMUM, UNARY, BATCH_MATMUL, LAYER_NORM, SLICE, GATHER, REDUCE, LSTM, GRU, RESIZE,
)}

# Releases of the format's features that are not ops (each op's form has its own `since`).
PER_GROUP_SINCE = "0.3.0"
INT4_SINCE = "0.3.0"  # operators reading int4 weights (the weight-only form is 0.3.0's too)
INT4_WEIGHTS = (OpCode.CONV_2D, OpCode.FULLY_CONNECTED)
MASKED_SOFTMAX_SINCE = "0.3.0"  # SOFTMAX's optional mask input
SYMBOLS_SINCE = "0.3.0"  # Model.symbols, Tensor.symbolic_dims (format revision 4)
PAD_MODES_SINCE = "0.3.0"  # PadOptions.mode, revision 5 (older readers ignore it)


def check_op_version(model: ModelDefinition, index: int):
    """A version < 1 is invalid; one this qrt does not know needs a newer qrt (SPEC.md section 5.2,
    rule 0)."""
    op = model.operators[index]
    if op.opcode not in OPS:  # a file's unknown codes are refused by the reader already
        raise UnsupportedModelError(f"{model.operator_label(index)}: op code {int(op.opcode)} is unknown "
                                    f"to qrt {__version__}; the model needs a newer qrt (pip install -U qrt)")
    if op.version < 1:
        raise InvalidModelError(f"{model.operator_label(index)}: version {op.version} is not an op "
                                f"version (they start at 1)")
    if op.version != 1:  # every op of this qrt has version 1 only
        raise UnsupportedModelError(
            f"{model.operator_label(index)} is version {op.version}, which qrt {__version__} does "
            f"not know; the file needs a newer qrt (pip install -U qrt)")


def op_form(model: ModelDefinition, index: int) -> Form:
    """The form (integer, float32, weight-only, dynamic) operator `index` computes in."""
    op = model.operators[index]
    return OPS[op.opcode].form(model, index)


def min_runtime_version(model: ModelDefinition) -> str:
    """The lowest qrt release that can run `model`: every op and form it uses, per-group
    quantization, int4 weights, masked softmax, symbols and PAD's modes (files that use none of the newer features keep the older
    number)."""
    needs = [BASE_SINCE] + [OPS[op.opcode].since for op in model.operators]
    for i in range(len(model.operators)):
        try:
            needs.append(op_form(model, i).since)
        except (IndexError, InvalidModelError):  # an invalid operator: the verifier reports it
            pass
    if any(t.quant is not None and t.quant.per_group for t in model.tensors):
        needs.append(PER_GROUP_SINCE)
    # INT4 storage is 0.1.0's; operators read it since INT4_SINCE
    if any(0 <= t < len(model.tensors) and model.tensors[t].dtype == DType.INT4
           for op in model.operators for t in op.inputs):
        needs.append(INT4_SINCE)
    if any(op.opcode == OpCode.SOFTMAX and len(op.inputs) > 1 for op in model.operators):
        needs.append(MASKED_SOFTMAX_SINCE)
    if model.symbols or any(t.symbolic_dims for t in model.tensors):
        needs.append(SYMBOLS_SINCE)
    if any(op.opcode == OpCode.PAD and getattr(op.options, "mode", 0) for op in model.operators):
        needs.append(PAD_MODES_SINCE)
    return max(needs, key=parse_version)


def verify_operator(model: ModelDefinition, index: int):
    """Operator `index`'s arity, fused activation, options and the op's own rules (SPEC.md
    section 5.2, rule 3); InvalidModelError names the operator."""
    op = model.operators[index]
    d = OPS[op.opcode]
    c = Check(model, index)
    lo, hi = d.inputs
    if not lo <= len(op.inputs) <= hi:
        c.fail(f"has {len(op.inputs)} inputs; expected {lo if lo == hi else f'at least {lo}'}")
    if len(op.outputs) != d.outputs:
        c.fail(f"has {len(op.outputs)} outputs; expected {d.outputs}")
    form = d.form(model, index)
    c.form = form.name
    for k, t in enumerate(op.inputs + op.outputs):
        # INT4 is only ever weights (input 1) of the ops that unpack them; their forms say which
        if model.tensors[t].dtype == DType.INT4 and not (k == 1 and op.opcode in INT4_WEIGHTS):
            c.fail(f"{c.label(model.tensors[t])} is INT4, which {op.opcode.name} does not read (int4 is for "
                   f"the weights of {' and '.join(o.name for o in INT4_WEIGHTS)})")
    if op.input_quantization not in InputQuantization._value2member_map_:
        c.fail(f"input_quantization {int(op.input_quantization)} is unknown")
    if op.input_quantization != InputQuantization.NONE and form.name != DYNAMIC:
        c.fail(f"input_quantization {InputQuantization(op.input_quantization).name} applies only to CONV_2D "
               f"and FULLY_CONNECTED with float32 activations and int8 weights (the dynamic form)")
    if op.activation != Activation.NONE:
        if not d.fused_activation:
            c.fail(f"cannot fuse activation {Activation(op.activation).name}")
        if op.activation == Activation.CLIP and not (
                math.isfinite(op.clip_min) and math.isfinite(op.clip_max) and op.clip_min <= op.clip_max):
            c.fail(f"clip range [{op.clip_min}, {op.clip_max}] must be finite with min <= max")
    c.options = _options(c, d)
    form.verify(c)


def _options(c: Check, d: OpDef):
    """The operator's options, checked for type; the defaults when the file has none."""
    o = c.op.options
    if d.options is None:
        if o is not None:
            c.fail(f"takes no options, got {type(o).__name__}")
        return None
    if o is None:
        return d.options()
    if type(o) is not d.options:
        c.fail(f"needs {d.options.__name__}, got {type(o).__name__}")
    return o


def op_macs(model: ModelDefinition, op) -> int:
    """Multiply-accumulates of one operator (those whose OpDef counts them: conv, depthwise,
    fully connected), for reports and the benchmark's GOPS."""
    macs = OPS[op.opcode].macs
    return 0 if macs is None else macs(model, op)


def prepare_op(model: ModelDefinition, index: int):
    """The integer parameters of (verified) operator `index`; InvalidModelError names the
    operator when its scales cannot be expressed (a multiplier too large, say)."""
    op = model.operators[index]
    d = OPS[op.opcode]
    form = d.form(model, index)
    if op.options is None and d.options is not None:
        op = dataclasses.replace(op, options=d.options())
    try:
        return form.prepare(model, op)
    except InvalidModelError as e:
        raise InvalidModelError(f"{model.operator_label(index)}: {e}") from None


__all__ = ["OPS", "OpDef", "Form", "Check", "check_op_version", "verify_operator", "prepare_op", "op_form",
           "min_runtime_version", "op_macs"]
