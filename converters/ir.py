"""The float graph IR every front-end produces and every later step consumes.

Semantics are ONNX's (opset 13+): op types, attributes, NCHW layout, broadcasting. A PyTorch
model reaches the IR through torch.onnx.export (see converters/torch_frontend.py), so there is
one set of op semantics, one set of graph passes and one float executor.

    Graph.nodes       topologically sorted Nodes
    Graph.constants   name -> float32 / int64 numpy array (initializers, folded values)
    Graph.inputs      names of the float inputs the user feeds, with Graph.shapes[name]
    Graph.outputs     names of the results
    Graph.shapes      name -> static shape, for every value once infer_shapes has run
    Graph.fixed_qparams  name -> (scale, zero_point) imported from a QDQ model: keep them
    Graph.weight_qparams name -> (scales, axis) of weights imported from a QDQ model
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Node:
    op: str
    inputs: list  # value names; "" marks an absent optional input
    outputs: list
    attrs: dict = field(default_factory=dict)
    name: str = ""

    def __repr__(self):
        return f"{self.op}({', '.join(self.inputs)}) -> {', '.join(self.outputs)}" + (f" [{self.name}]" if self.name else "")


@dataclass
class Graph:
    nodes: list = field(default_factory=list)
    constants: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    shapes: dict = field(default_factory=dict)
    fixed_qparams: dict = field(default_factory=dict)
    weight_qparams: dict = field(default_factory=dict)
    name: str = ""
    notes: list = field(default_factory=list)  # what the front end changed (opset upgrade, frozen inputs, ...)
    dtypes: dict = field(default_factory=dict)  # integer graph inputs (ids, masks): name -> numpy dtype
    # dynamic input dimensions, at their maximum in shapes: input name -> {axis: symbol name}
    symbols: dict = field(default_factory=dict)

    # fresh names count per graph: reading a model twice names its new values alike (symbolic.py
    # matches conversions at two lengths value by value)
    _ids: itertools.count = field(default_factory=itertools.count, repr=False, compare=False)

    def fresh(self, base: str) -> str:
        """A value name not used yet."""
        while True:
            name = f"{base}__{next(self._ids)}"
            if name not in self.constants and all(name not in n.outputs for n in self.nodes):
                return name

    def producers(self) -> dict:
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict:
        out = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def remove_unused(self):
        """Drop nodes whose outputs nobody reads and constants nobody uses."""
        while True:
            used = set(self.outputs) | {i for n in self.nodes for i in n.inputs}
            keep = [n for n in self.nodes if any(o in used for o in n.outputs)]
            if len(keep) == len(self.nodes):
                break
            self.nodes = keep
        used = set(self.outputs) | {i for n in self.nodes for i in n.inputs}
        self.constants = {k: v for k, v in self.constants.items() if k in used}

    def rename_value(self, old: str, new: str):
        """Make every reader of `old` read `new` (and the graph output, if it was one)."""
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]

    def op_counts(self) -> dict:
        counts = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def parameter_bytes(self) -> int:
        """Bytes of the float parameters (what a float32 model file mostly holds)."""
        return sum(int(np.asarray(v).nbytes) for v in self.constants.values())
