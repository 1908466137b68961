"""Arena planning: every tensor computed at run time gets an offset in one buffer; tensors
whose lifetimes do not overlap share bytes (greedy by size, as TFLite's planner does)."""
from __future__ import annotations

from dataclasses import dataclass

from ..format.model import NUMPY_DTYPE, ModelDefinition

ALIGNMENT = 64


@dataclass
class ArenaPlan:
    offsets: dict  # tensor index -> byte offset
    size: int  # bytes
    naive_size: int  # bytes if every tensor had its own buffer


def lifetimes(model: ModelDefinition) -> dict:
    """tensor -> (first step that needs it, last step that needs it); graph inputs live from
    step -1, graph outputs until the end."""
    end = len(model.operators)
    life = {io.tensor: [-1, -1] for io in model.inputs}
    for i, op in enumerate(model.operators):
        for t in op.outputs:
            life[t] = [i, i]
        for t in op.inputs:
            if t in life:
                life[t][1] = max(life[t][1], i)
    for io in model.outputs:
        life[io.tensor][1] = end
    return {t: tuple(v) for t, v in life.items()}


def plan_arena(model: ModelDefinition) -> ArenaPlan:
    life = lifetimes(model)

    def nbytes(t):
        tensor = model.tensors[t]
        return -(-tensor.numel * NUMPY_DTYPE[tensor.dtype].itemsize // ALIGNMENT) * ALIGNMENT

    placed = []  # (offset, size, first, last)
    offsets = {}
    for t in sorted(life, key=lambda t: (-nbytes(t), t)):
        size, (first, last) = nbytes(t), life[t]
        conflicts = sorted((o, s) for o, s, f, l in placed if f <= last and first <= l)
        offset = 0
        for o, s in conflicts:  # lowest gap that fits
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        offsets[t] = offset
        placed.append((offset, size, first, last))
    size = max((o + s for o, s, _, _ in placed), default=0)
    return ArenaPlan(offsets, size, sum(nbytes(t) for t in life))
