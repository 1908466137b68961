"""Dynamic dimensions: one .qmodel for every size of a dynamic input dimension up to its maximum
(SPEC.md, symbolic dimensions).

The model is converted at the maximum (the shapes the user gave). To learn how every tensor's
dimensions follow each symbol, the same model is read, simplified and lowered again at a few
smaller sizes, with the same quantization parameters, and the lowered models are compared
tensor by tensor: they must have the same operators with the same options, and a dimension that
changes is fitted with floor((a S + b) / c) over the sizes seen (consecutive sizes below the
maximum pin b for divisors up to 4, the strides of convolutions and pools; sizes 1 to 3 catch
what stops following the length below the maximum, such as a slice of fixed end). A constant whose
shape follows a symbol (a position table cut to the length, a causal mask) must be, at every
size, the corner of the constant at the maximum: the runtime cuts it so. Anything else that
changes with the size (an option, a constant's values, a dimension following two symbols)
cannot be expressed, and the conversion says which and where."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from qrt.format import ModelDefinition, Symbol, SymbolicDim

from .errors import ConversionError

BELOW = (1, 2, 3)  # probe sizes max - 1, max - 2, max - 3, max // 2, and the small ones:
SMALL = (1, 2, 3)  # a model that cannot convert at one of these gets a min above it
DIVISORS = tuple(range(1, 65))  # four 2x poolings in a row divide by 16


def symbols_of(graph) -> dict:
    """{symbol name: (maximum, [(input, axis), ...])} of a graph read with maximum shapes."""
    out = {}
    for name, dims in graph.symbols.items():
        for axis, sym in dims.items():
            out.setdefault(sym, (graph.shapes[name][axis], []))[1].append((name, axis))
            if out[sym][0] != graph.shapes[name][axis]:
                raise ConversionError(f"dynamic dimension '{sym}' has two maxima: {out[sym][0]} and "
                                      f"{graph.shapes[name][axis]} (input {name!r}, dimension {axis})")
    return out


def make_symbolic(model: ModelDefinition, graph, lowered_at, progress=None) -> tuple[ModelDefinition, list]:
    """model (lowered at the maximum) with its symbols and every tensor's symbolic dimensions;
    lowered_at({input: shape}) lowers the source at other input shapes. Also notes for the
    report."""
    found = symbols_of(graph)
    samples = {}  # (tensor, axis) -> (symbol index, {size: dimension})
    symbols = []
    notes = [f"dynamic dimension '{name}' has the maximum 1: fixed" for name, (top, _) in sorted(found.items())
             if top <= 1]  # (a batch of recurrent states, say): no other size to run
    found = {name: v for name, v in found.items() if v[0] > 1}
    for k, (name, (top, where)) in enumerate(sorted(found.items())):
        sizes = sorted(({top - d for d in BELOW} | {top // 2} | set(SMALL)) - {top})
        sizes = [size for size in sizes if 1 <= size < top]
        probes = {}  # size -> every tensor's shape
        least = 1  # above the small sizes that do not convert
        for size in (progress(sizes, f"dynamic '{name}'") if progress else sizes):
            shapes = {i: list(graph.shapes[i]) for i in graph.inputs}
            for i, axis in where:
                shapes[i][axis] = size
            try:
                probe = lowered_at(shapes)
                _same_program(model, probe, name, size)
                for a, b in zip(model.tensors, probe.tensors):
                    _same_constant(a, b, name, size)
            except ConversionError as e:
                if size in SMALL and size < top // 2:  # the file's sizes start above this one
                    least = size + 1
                    continue
                raise ConversionError(f"at {name} = {size} (below its maximum {top}): {e}") from None
            probes[size] = [t.shape for t in probe.tensors]
        for t, a in enumerate(model.tensors):
            for axis, top_dim in enumerate(a.shape):
                seen = {size: probed[t][axis] for size, probed in probes.items()}
                if all(d == top_dim for d in seen.values()):
                    continue
                if (t, axis) in samples:
                    raise ConversionError(f"tensor '{a.name}' dimension {axis} follows both "
                                          f"'{symbols[samples[(t, axis)][0]].name}' and '{name}'; qrt's dynamic "
                                          f"dimensions follow one each")
                samples[(t, axis)] = (k, {top: top_dim, **seen})
        symbols.append(Symbol(name, top, least))
        notes.append(f"dynamic dimension '{name}': any size up to {top} ("
                     + ", ".join(f"{i}[{axis}]" for i, axis in where) + ")")
    dims = {}
    for (t, axis), (k, seen) in samples.items():
        dims.setdefault(t, []).append(SymbolicDim(axis, k, *_fit(seen, model.tensors[t].name, axis, symbols[k].name)))
    # the least size at which every dimension is at least 1 (and the model converted)
    for k, s in enumerate(symbols):
        least = s.min
        for t, ds in dims.items():
            for d in ds:
                if d.symbol == k and d.multiplier > 0:
                    least = max(least, math.ceil((d.divisor - d.offset) / d.multiplier))
        symbols[k] = dataclasses.replace(s, min=min(least, s.max))
    tensors = [dataclasses.replace(t, symbolic_dims=tuple(sorted(dims.get(i, ()), key=lambda d: d.axis)))
               if i in dims else t for i, t in enumerate(model.tensors)]
    return dataclasses.replace(model, tensors=tensors, symbols=tuple(symbols)), notes


def _fit(seen: dict, tensor: str, axis: int, name: str) -> tuple:
    """(a, b, c) with floor((a S + b) / c) = d at every (S, d) seen, b pinned; else an error."""
    sizes = sorted(seen)
    lo_s, hi_s = sizes[0], sizes[-1]
    for c in DIVISORS:
        slope = c * (seen[hi_s] - seen[lo_s]) / (hi_s - lo_s)
        for a in {math.floor(slope), math.ceil(slope)}:
            if a < 0:
                continue
            # floor((a S + b) / c) = d  <=>  c d - a S <= b <= c d - a S + c - 1
            low = max(c * d - a * s for s, d in seen.items())
            high = min(c * d - a * s + c - 1 for s, d in seen.items())
            if low == high:  # pinned
                return a, low, c
    raise ConversionError(f"tensor '{tensor}' dimension {axis} follows '{name}' as {dict(sorted(seen.items()))}, "
                          f"which qrt cannot express (floor((a {name} + b) / c), c <= {DIVISORS[-1]})")


def _same_program(a: ModelDefinition, b: ModelDefinition, name: str, size: int):
    """The two lowerings run the same operators on the same tensors."""
    where = f"at {name} = {size}"
    if len(a.tensors) != len(b.tensors) or len(a.operators) != len(b.operators):
        raise ConversionError(f"{where} the model converts to another program ({len(b.operators)} operators, "
                              f"{len(a.operators)} at the maximum); it cannot run other sizes from one file")
    for x, y in zip(a.operators, b.operators):
        if (x.opcode, x.inputs, x.outputs, x.activation) != (y.opcode, y.inputs, y.outputs, y.activation):
            raise ConversionError(f"{where} operator '{x.name}' ({x.opcode.name}) converts differently; it cannot "
                                  f"run other sizes from one file")
        if x.options != y.options:
            raise ConversionError(f"operator '{x.name}' ({x.opcode.name}) has options that change with '{name}' "
                                  f"({x.options} at the maximum, {y.options} at {size}): qrt cannot run it at "
                                  f"other sizes; convert with a fixed shape")
    for x, y in zip(a.tensors, b.tensors):
        if x.dtype != y.dtype or ((x.data is None) != (y.data is None)):
            raise ConversionError(f"{where} tensor '{x.name}' changes type")
        if x.data is None and (x.quant is None) != (y.quant is None):
            raise ConversionError(f"{where} tensor '{x.name}' changes quantization")


def _same_constant(a, b, name: str, size: int):
    """A constant at a smaller size is the corner of the one at the maximum (values quantized
    anew: within a step of either)."""
    if a.data is None:
        return
    if len(a.shape) != len(b.shape) or any(db > da for da, db in zip(a.shape, b.shape)):
        raise ConversionError(f"constant '{a.name}' {b.shape} at {name} = {size} is not a corner of {a.shape}")
    corner = np.asarray(a.data)[tuple(slice(0, d) for d in b.shape)]
    other = np.asarray(b.data)
    if a.quant is None or a.shape == b.shape and np.array_equal(corner, other):
        ok = np.array_equal(corner, other)
    else:
        def real(t, v):
            q = t.quant
            if len(q.scale) != 1:
                return None
            return (v.astype(np.float64) - int(q.zero_point[0])) * float(q.scale[0])
        ra, rb = real(a, corner), real(b, other)
        step = float(a.quant.scale[0]) + float(b.quant.scale[0]) if ra is not None and rb is not None else 0.0
        ok = ra is not None and rb is not None and bool(np.all(np.abs(ra - rb) <= 1.01 * step))
    if not ok:
        raise ConversionError(f"constant '{a.name}' changes with '{name}' other than by cutting its corner (at "
                              f"{name} = {size}); qrt cannot run it at other sizes: convert with a fixed shape")
