"""The rules a decoded model must obey before any kernel sees it (schema/SPEC.md, section 5.2).

verify_model runs on every load and before every write: the tensors and the graph here, then
each operator's own rules from its module in qrt/ops/. Each failure raises InvalidModelError
naming the tensor or operator and what was expected. The checks are cheap: one pass over
tensors and operators plus a min/max over the weights.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidModelError
from ..ops import check_op_version, verify_operator
from ..ops.base import fail
from .model import NUMPY_DTYPE, QUANT_RANGE, DType, ModelDefinition, Tensor, buffer_nbytes

MAX_RANK = 8
MAX_TENSOR_ELEMENTS = 2**31 - 1


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
    if q.group_size < 0:
        fail(where, f"group_size {q.group_size} is negative")
    if q.group_size > 0:
        if t.dtype not in (DType.INT8, DType.INT4) or len(t.shape) < 2 or q.axis != 0:
            fail(where, f"per-group quantization needs INT8 or INT4 weights of rank >= 2 with their "
                        f"channels in quantized_dimension 0, not {t.dtype.name} {t.shape} along {q.axis}")
        k = t.numel // t.shape[0]
        groups = -(-k // q.group_size)
        if n != t.shape[0] * groups:
            fail(where, f"{n} per-group scales; {t.shape[0]} channels x {groups} groups of {q.group_size} "
                        f"(reduction {k}) need {t.shape[0] * groups}")
    elif n > 1:
        if not 0 <= q.axis < len(t.shape):
            fail(where, f"quantized_dimension {q.axis} is not a dimension of shape {t.shape}")
        if t.shape[q.axis] != n:
            fail(where, f"{n} per-channel scales but dimension {q.axis} of shape {t.shape} "
                        f"has {t.shape[q.axis]} channels")


# ---------------------------------------------------------------------------- symbols

INT32 = (-(2**31), 2**31 - 1)


def _int32(value) -> bool:
    return isinstance(value, (int, np.integer)) and INT32[0] <= value <= INT32[1]


def _check_symbols(model: ModelDefinition):
    """Model.symbols and every tensor's symbolic_dims (SPEC.md section 2.15)."""
    names = {}
    for i, s in enumerate(model.symbols):
        where = f"symbol {i} '{s.name}'"
        if not isinstance(s.name, str) or not s.name:
            fail(f"symbol {i}", "name must be a non-empty string")
        if s.name in names:
            fail(where, f"the name is already used by symbol {names[s.name]}")
        names[s.name] = i
        if not (_int32(s.min) and _int32(s.max) and 1 <= s.min <= s.max):
            fail(where, f"sizes min {s.min}, max {s.max}: need 1 <= min <= max (32-bit integers)")
    for i, t in enumerate(model.tensors):
        if not t.symbolic_dims:
            continue
        where = f"tensor {i} '{t.name}'"
        axes = set()
        for sd in t.symbolic_dims:
            what = f"symbolic dimension (axis {sd.axis}, symbol {sd.symbol})"
            if not (_int32(sd.symbol) and 0 <= sd.symbol < len(model.symbols)):
                fail(where, f"{what}: symbol {sd.symbol} is not one of the model's {len(model.symbols)} symbols")
            if not (_int32(sd.axis) and 0 <= sd.axis < len(t.shape)):
                fail(where, f"{what}: axis {sd.axis} is not a dimension of shape {t.shape}")
            if sd.axis in axes:
                fail(where, f"{what}: axis {sd.axis} has two symbolic dimensions")
            axes.add(sd.axis)
            if not (_int32(sd.multiplier) and _int32(sd.offset) and _int32(sd.divisor)):
                fail(where, f"{what}: multiplier, offset and divisor must be 32-bit integers")
            if sd.divisor < 1:
                fail(where, f"{what}: divisor {sd.divisor} must be >= 1")
            if sd.multiplier < 0:
                fail(where, f"{what}: multiplier {sd.multiplier} must be >= 0 (a dimension never shrinks "
                            f"as the symbol grows)")
            s = model.symbols[sd.symbol]
            expr = sd.text(s.name)
            if sd.at(s.max) != t.shape[sd.axis]:
                fail(where, f"{what}: {expr} is {sd.at(s.max)} at {s.name} = {s.max} (its max), but the "
                            f"stored dimension {sd.axis} of shape {t.shape} is {t.shape[sd.axis]}")
            if sd.at(s.min) < 1:
                fail(where, f"{what}: {expr} is {sd.at(s.min)} at {s.name} = {s.min} (its min); "
                            f"dimensions must be >= 1")


def _check_symbolic_inputs(model: ModelDefinition):
    """Where a run reads each symbol's size: plain dimensions of graph inputs, not the batch."""
    seen = set()
    for k, io in enumerate(model.inputs):
        t = model.tensors[io.tensor]
        for sd in t.symbolic_dims:
            where = f"graph inputs[{k}] '{io.name}'"
            name = model.symbols[sd.symbol].name
            if sd.axis == 0:
                fail(where, f"dimension 0 varies with symbol '{name}', but the batch is not symbolic: "
                            f"the first dimension may be any multiple of the file's batch")
            if not sd.plain:
                fail(where, f"dimension {sd.axis} is {sd.text(name)}; a graph input's symbolic dimensions must "
                            f"be the symbol itself (multiplier 1, offset 0, divisor 1), so that a run reads its size")
            seen.add(sd.symbol)
    for i, s in enumerate(model.symbols):
        if i not in seen:
            fail(f"symbol {i} '{s.name}'", "appears on no graph input, so a run cannot tell its size")


def _verify_at_min(model: ModelDefinition):
    """The model with every symbol at its min (constants cut to their corners) must verify too."""
    sizes = model.min_sizes
    if sizes == model.max_sizes:
        return
    try:
        verify_model(model.cut(sizes))
    except InvalidModelError as e:
        at = ", ".join(f"{s.name} = {s.min}" for s in model.symbols)
        raise InvalidModelError(f"at {at} (every symbol at its min): {e}") from None


# ---------------------------------------------------------------------------- graph

def _check_graph(model: ModelDefinition):
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


def _find_cycle(model: ModelDefinition, producer: dict):
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


def verify_model(model: ModelDefinition):
    """Raise InvalidModelError (or UnsupportedModelError) if `model` breaks a rule of the spec."""
    for i in range(len(model.operators)):
        check_op_version(model, i)
    names = {}
    for i, t in enumerate(model.tensors):
        _check_tensor(f"tensor {i} '{t.name}'", t)
        if t.name in names:
            fail(f"tensor {i} '{t.name}'", f"the name is already used by tensor {names[t.name]}")
        names[t.name] = i
    _check_symbols(model)
    _check_graph(model)
    _check_symbolic_inputs(model)
    for i in range(len(model.operators)):
        verify_operator(model, i)
    _verify_at_min(model)
