"""The model at a run's shapes: copies of the file's model at other symbol sizes and for
several file batches at once, each verified like a file before it runs (at(model, k, sizes)).

Symbols (SPEC.md section 2.15): a run whose feeds hold sizes S below the symbols' max runs the
model at S (at_sizes): every tensor at its shape there, constants cut to their corners; the
weights that are not cut are shared, and so are their packed copies.

Batches: a feed may hold any multiple k of the batch N the file was made for; rather than run
the plan k times, the runtime binds one for k * N when the model allows it: every run-time
tensor's dimension 0 is the batch, and every operator keeps the batch's entries apart
(OpDef.batch: convolutions, fully connected rows, elementwise ops, and reshapes, transposes,
concatenations, means and softmaxes that leave dimension 0 alone). Only the shapes, the
prepared parameters that depend on them and the arena change. The results are those of k
runs: each entry is computed as in a run of its own."""
from __future__ import annotations

import dataclasses

from ..errors import InvalidModelError
from ..format.model import ModelDefinition
from ..format.verify import verify_model
from ..ops import OPS

# A plan's arena may grow to this for a batched run; larger feeds run in several such batches.
MAX_BATCH_ARENA = 64 << 20


def batchable(model: ModelDefinition) -> bool:
    """Whether dimension 0 of every run-time tensor is the graph inputs' batch and every
    operator computes the batch's entries apart."""
    batches = {model.tensors[g.tensor].shape[:1] for g in model.inputs}
    if len(batches) != 1 or batches == {()}:
        return False
    runtime = [t for t in model.tensors if t.data is None]
    if any(t.shape[:1] != next(iter(batches)) for t in runtime):
        return False
    for op in model.operators:
        d = OPS[op.opcode]
        if isinstance(d.batch, bool):
            if not d.batch:
                return False
            # broadcasting ops: a run-time input of another rank would line its batch up with
            # another dimension once scaled ([1, C] against [1, H, C])
            rank = len(model.tensors[op.outputs[0]].shape)
            if any(model.tensors[t].data is None and len(model.tensors[t].shape) != rank for t in op.inputs):
                return False
            continue
        if op.options is None and d.options is not None:
            op = dataclasses.replace(op, options=d.options())
        try:
            if not d.batch(model, op):
                return False
        except (AttributeError, IndexError, TypeError, ZeroDivisionError):  # options it cannot read
            return False
    return True


def at_sizes(model: ModelDefinition, sizes) -> ModelDefinition:
    """model with symbol i at size sizes[i] (SPEC.md section 2.15), as a verified model without
    symbols: the tensors at their shapes there, constants cut to their corners, tensors
    without symbolic dimensions shared. The model itself when it has no symbols. Raises
    InvalidModelError naming the sizes when the copy breaks a rule (the loader checked the
    symbols' max and min only)."""
    if not model.symbols:
        return model
    sizes = tuple(sizes)
    copy = model.cut(sizes)
    if sizes != model.max_sizes:  # at max it is the file, verified when it was read
        try:
            verify_model(copy)
        except InvalidModelError as e:
            at = ", ".join(f"{s.name} = {n}" for s, n in zip(model.symbols, sizes))
            raise InvalidModelError(f"at {at}: {e}") from None
    return copy


def at(model: ModelDefinition, k: int, sizes) -> ModelDefinition | None:
    """The model at symbol sizes `sizes` and k file batches per run (a verified copy; the model
    itself for k = 1 and the symbols' max), or None when k batches cannot run as one plan."""
    if k == 1 and tuple(sizes) == model.max_sizes:
        return model
    return batched(at_sizes(model, sizes), k)


def batched(model: ModelDefinition, k: int) -> ModelDefinition | None:
    """model with dimension 0 of every run-time tensor multiplied by k (a verified copy sharing
    the constants), or None when the model is not batchable or the copy does not verify."""
    if k == 1:
        return model
    if k < 1 or not batchable(model):
        return None
    tensors = [t if t.data is not None else dataclasses.replace(t, shape=(t.shape[0] * k,) + tuple(t.shape[1:]))
               for t in model.tensors]
    copy = dataclasses.replace(model, tensors=tensors)
    try:
        verify_model(copy)
    except InvalidModelError:  # a broadcast against a constant that no longer fits, say
        return None
    return copy
