"""Graph passes on the float IR (converters/ir.py). Each is `(graph) -> graph` and works in place.

    simplify(graph)            all of them, in order (what the converter runs after a front-end)
    remove_identities(graph)   Identity, Dropout (inference) and float -> float Cast / CastLike go
    split_variadic(graph)      Sum / Max / Min of n inputs -> a chain of two-input nodes
    infer_shapes(graph)        runs the graph once on zeros: graph.shapes of every value
    fold_constants(graph)      nodes whose inputs are all constants (and Shape / Size of a value
                               with a known shape) become constants
    fold_batch_norms(graph)    BatchNormalization into the Conv / Gemm / MatMul before it
    fold_pads_into_convs(graph)  a constant zero Pad before Convs becomes their pads
    decompose_conv_transposes(graph)  ConvTranspose -> one Conv of all stride phases + depth to space
    remove_unused(graph)       nodes and constants nobody reads
    inline_constant_ifs(graph)  an If whose condition is a constant becomes its branch's nodes
    fuse_layer_norms(graph)    the decomposed layer norm older exporters write -> LayerNormalization
    fuse_rms_norms(graph)      x / sqrt(mean(x^2) + eps) * g (LLaMA's, T5's) -> RMSNormalization
    fuse_softmaxes(graph)      Exp(x - ReduceMax x) / ReduceSum -> Softmax
    fuse_gelus(graph)          x * 0.5 * (1 + Erf(x / sqrt 2)) (or the tanh form) -> Gelu (one table)
    fuse_l2_norms(graph)       x / ReduceL2(x) (F.normalize's clamp too) -> RMSNormalization
    rewrite_squares(graph)     Pow(x, 2) -> Mul(x, x), Pow(Sqrt(a), 2) -> a, Pow(x, 0.5) -> Sqrt

Shapes are static: infer_shapes uses the input shapes of graph.shapes (a dynamic batch was set
to 1 by the reader), and constant folding turns exporters' shape chains (Shape -> Gather ->
Concat -> Reshape) into constant shapes for exactly those input shapes.

Values named in graph.fixed_qparams keep their names; where a pass removes a value in favour of
another (an Identity), its qparams move to the value that replaces it. Activation fusion is not
done here: the lowering decides what to fuse.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from . import float_exec
from .errors import ConversionError
from .ir import Graph, Node

_FLOAT_TYPES = {1, 10, 11, 16}


# --------------------------------------------------------------------------- helpers

def _move_qparams(graph: Graph, old: str, new: str):
    q = graph.fixed_qparams.pop(old, None)
    if q is not None and new not in graph.fixed_qparams:
        graph.fixed_qparams[new] = q


def _replace_value(graph: Graph, old: str, new: str):
    """Every reader of `old` reads `new` (old disappears). Graph outputs are renamed too."""
    graph.rename_value(old, new)
    _move_qparams(graph, old, new)
    if old in graph.shapes and new not in graph.shapes:
        graph.shapes[new] = graph.shapes[old]
    graph.shapes.pop(old, None)


def _rename_produced(graph: Graph, old: str, new: str):
    """The node producing `old` produces `new` instead; every reader follows."""
    for n in graph.nodes:
        n.outputs = [new if o == old else o for o in n.outputs]
    _replace_value(graph, old, new)


def _normalize(a):
    a = np.asarray(a)
    if a.dtype.kind == "f" and a.dtype != np.float32:
        return a.astype(np.float32)
    if a.dtype.kind in "iu" and a.dtype != np.int64:
        return a.astype(np.int64)
    return a


def value_types(graph: Graph) -> tuple[dict, dict]:
    """(shapes, dtypes) of every value: the graph run once on zeros of its input shapes."""
    missing = [n for n in graph.inputs if n not in graph.shapes]
    if missing:
        raise ValueError(f"the shapes of inputs {missing} are unknown")
    shapes, dtypes = {}, {}
    for name, a in graph.constants.items():
        shapes[name] = tuple(np.shape(a))
        dtypes[name] = np.asarray(a).dtype

    def observe(name, a):
        shapes[name] = tuple(np.shape(a))
        dtypes[name] = np.asarray(a).dtype

    feeds = {n: np.zeros(graph.shapes[n], dtype=graph.dtypes.get(n, np.float32)) for n in graph.inputs}
    float_exec.run_graph(graph, feeds, outputs=[], observe=observe)
    return shapes, dtypes


# --------------------------------------------------------------------------- passes

def infer_shapes(graph: Graph) -> Graph:
    """graph.shapes[name] for every value (inputs, constants, node outputs): the exact shapes of
    one run on zeros. Input shapes are kept; shapes of values that no longer exist go."""
    shapes, _ = value_types(graph)
    graph.shapes = {n: graph.shapes[n] for n in graph.inputs}
    graph.shapes.update(shapes)
    return graph


def _drop_empty_concat_inputs(graph: Graph):
    """A Concat input with no elements (exporters' padding of zero width, a slice of nothing)
    adds nothing: it goes (a Concat left with one input is then an identity)."""
    for node in graph.nodes:
        if node.op != "Concat" or len(node.inputs) < 2:
            continue
        shapes = [np.shape(graph.constants[i]) if i in graph.constants else graph.shapes.get(i) for i in node.inputs]
        keep = [i for i, shape in zip(node.inputs, shapes) if shape is None or 0 not in shape]
        if len(keep) < len(node.inputs):
            node.inputs = keep or node.inputs[:1]


def remove_identities(graph: Graph, dtypes: dict | None = None) -> Graph:
    """Remove Identity, Dropout (its mask output unread), Cast float -> float (when the input's
    dtype is known to be float: from `dtypes`, a float constant or a graph input) and Concat of
    one input (after empty inputs are dropped)."""
    _drop_empty_concat_inputs(graph)
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if not _is_identity(graph, node, dtypes):
                continue
            x, y = node.inputs[0], node.outputs[0]
            if y in graph.outputs:
                # keep the graph's output name: rename the producer of x instead, if x is an
                # intermediate value
                producers = graph.producers()
                if x in producers and x not in graph.outputs and x not in graph.inputs:
                    graph.nodes.remove(node)
                    _rename_produced(graph, x, y)
                    changed = True
                continue
            graph.nodes.remove(node)
            _replace_value(graph, y, x)
            changed = True
    return graph


def _float_value(graph, name, dtypes) -> bool:
    """Whether a value is known to be floating point (a float input, constant or value)."""
    if name in graph.inputs:
        return name not in graph.dtypes
    if name in graph.constants:
        return np.asarray(graph.constants[name]).dtype.kind == "f"
    return dtypes is not None and name in dtypes and np.dtype(dtypes[name]).kind == "f"


def split_variadic(graph: Graph) -> Graph:
    """Sum, Max and Min of n inputs become a chain of n - 1 two-input Add, Max or Min (one
    input: an Identity), which have integer forms."""
    nodes = []
    for n in graph.nodes:
        if n.op not in ("Sum", "Max", "Min") or (len(n.inputs) == 2 and n.op != "Sum"):
            nodes.append(n)
            continue
        op = "Add" if n.op == "Sum" else n.op
        if len(n.inputs) == 1:
            nodes.append(Node("Identity", n.inputs, n.outputs, {}, n.name))
            continue
        acc = n.inputs[0]
        for k, v in enumerate(n.inputs[1:]):
            out = n.outputs[0] if k == len(n.inputs) - 2 else graph.fresh(f"{n.outputs[0]}.{k}")
            nodes.append(Node(op, [acc, v], [out], {}, f"{n.name}/{k}" if n.name else ""))
            acc = out
    graph.nodes = nodes
    return graph


def _is_identity(graph, node, dtypes):
    if node.op == "Identity" or (node.op == "Concat" and len(node.inputs) == 1):
        return True
    if node.op == "Dropout":
        mask = node.outputs[1] if len(node.outputs) > 1 else ""
        return not mask or (mask not in graph.outputs and not any(mask in n.inputs for n in graph.nodes))
    like = node.op == "CastLike" and _float_value(graph, node.inputs[1], dtypes)
    if (node.op == "Cast" and int(node.attrs.get("to", 0)) in _FLOAT_TYPES) or like:
        return _float_value(graph, node.inputs[0], dtypes)  # an integer value's Cast is real
    return False


def fold_constants(graph: Graph, dtypes: dict | None = None) -> Graph:
    """Evaluate every node whose inputs are all constants (Shape / Size: whose input has a
    known shape in graph.shapes; CastLike: whose second input has a known dtype, from `dtypes`
    or one run of the graph) and make its outputs constants. Nodes producing a graph output
    stay (an output must be computed)."""
    if dtypes is None and any(n.op == "CastLike" and n.inputs[0] in graph.constants and
                              n.inputs[1] not in graph.constants for n in graph.nodes):
        dtypes = value_types(graph)[1]
    changed = True
    while changed:
        changed = False
        keep = []
        for node in graph.nodes:
            if any(o in graph.outputs for o in node.outputs) or node.op not in float_exec.OPS:
                keep.append(node)
                continue
            if node.op in ("Shape", "Size") and node.inputs[0] not in graph.constants \
                    and node.inputs[0] in graph.shapes:
                dummy = np.zeros(graph.shapes[node.inputs[0]], dtype=np.float32)
                outs = float_exec.run_node(node, [dummy], graph)
            elif node.op == "CastLike" and node.inputs[0] in graph.constants and dtypes \
                    and node.inputs[1] in dtypes:
                dummy = np.zeros(0, dtype=dtypes[node.inputs[1]])
                outs = float_exec.run_node(node, [graph.constants[node.inputs[0]], dummy], graph)
            elif all((not i) or i in graph.constants for i in node.inputs) and (node.inputs or node.op == "Constant"):
                args = [graph.constants[i] if i else None for i in node.inputs]
                outs = float_exec.run_node(node, args, graph)
            else:
                keep.append(node)
                continue
            for name, value in zip(node.outputs, outs):
                if name:
                    graph.constants[name] = _normalize(value)
                    graph.shapes[name] = tuple(np.shape(value))
            _propagate_weight_qparams(graph, node)
            changed = True
        graph.nodes = keep
    return graph


_LAYOUT_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast", "CastLike"}


def _propagate_weight_qparams(graph, node):
    """A folded Transpose / Reshape / ... of a QDQ weight keeps the weight's qparams (the
    per-channel axis follows the layout change when it survives it)."""
    if node.op not in _LAYOUT_OPS or not node.inputs or node.inputs[0] not in graph.weight_qparams:
        return
    scales, axis = graph.weight_qparams[node.inputs[0]]
    out = node.outputs[0]
    if np.asarray(scales).size == 1:
        graph.weight_qparams[out] = (scales, 0)
        return
    in_shape = np.shape(graph.constants[node.inputs[0]])
    out_shape = np.shape(graph.constants[out])
    if node.op == "Transpose":
        perm = node.attrs.get("perm")
        perm = list(perm) if perm is not None else list(range(len(in_shape)))[::-1]
        graph.weight_qparams[out] = (scales, perm.index(axis))
        return
    lead = int(np.prod(in_shape[:axis], dtype=np.int64))
    for j, d in enumerate(out_shape):
        if d == in_shape[axis] and int(np.prod(out_shape[:j], dtype=np.int64)) == lead:
            graph.weight_qparams[out] = (scales, j)
            return


def _single_reader(graph, name):
    if name in graph.outputs:
        return False
    return sum(i == name for n in graph.nodes for i in n.inputs) == 1


def _bn_params(graph, bn):
    if len(bn.inputs) < 5 or not all(i in graph.constants for i in bn.inputs[1:5]):
        return None
    if len(bn.outputs) > 1 and any(o for o in bn.outputs[1:]):
        used = {i for n in graph.nodes for i in n.inputs} | set(graph.outputs)
        if any(o in used for o in bn.outputs[1:] if o):
            return None
    if bn.attrs.get("training_mode", 0):
        return None
    scale, bias, mean, var = (np.asarray(graph.constants[i], dtype=np.float64) for i in bn.inputs[1:5])
    eps = float(bn.attrs.get("epsilon", 1e-5))
    a = scale / np.sqrt(var + eps)
    return a, bias - mean * a


def _scaled_weight_qparams(graph, w_name, new_name, a, axis):
    """Per-channel weight qparams along the scaled axis stay exact (q unchanged, scale * |a|)."""
    wq = graph.weight_qparams.get(w_name)
    if wq is None:
        return
    scales, qaxis = wq
    scales = np.asarray(scales, dtype=np.float64)
    if scales.size == a.size and scales.size > 1 and qaxis == axis:
        graph.weight_qparams[new_name] = ((scales * np.abs(a)).astype(np.float32), axis)


def fold_batch_norms(graph: Graph) -> Graph:
    """Fold BatchNormalization into the Conv, ConvTranspose, Gemm or 2-D MatMul (constant weights) that
    produces its input, when nothing else reads that value. New weight and bias constants are
    created (the old ones may be shared). BatchNormalizations that cannot be folded stay."""
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        params = _bn_params(graph, bn)
        if params is None:
            continue
        a, shift = params
        x = bn.inputs[0]
        producers = graph.producers()
        prev = producers.get(x)
        if prev is None or not _single_reader(graph, x):
            continue
        if prev.op in ("Conv", "ConvTranspose"):
            folded = _fold_into_conv(graph, prev, a, shift)
        elif prev.op == "Gemm":
            folded = _fold_into_gemm(graph, prev, a, shift)
        elif prev.op == "MatMul":
            folded = _fold_into_matmul(graph, prev, a, shift)
        else:
            folded = False
        if not folded:
            continue
        y = bn.outputs[0]
        graph.nodes.remove(bn)
        prev.outputs[0] = y
        # x disappears; its qparams (if any) described the value before the BatchNormalization
        graph.fixed_qparams.pop(x, None)
        graph.shapes.pop(x, None)
    return graph


def _fold_into_conv(graph, conv, a, shift):
    """Conv weights [M, C/g, K..] scale along axis 0; ConvTranspose's [C, M/g, K..] along the
    columns of each group (output channel g * M/g + j is column j of group g)."""
    w_name = conv.inputs[1]
    b_name = conv.inputs[2] if len(conv.inputs) > 2 else ""
    if w_name not in graph.constants or (b_name and b_name not in graph.constants):
        return False
    w = np.asarray(graph.constants[w_name], dtype=np.float64)
    if conv.op == "Conv":
        if w.shape[0] != a.size:
            return False
        scaled = w * a.reshape((-1,) + (1,) * (w.ndim - 1))
    else:
        group = int(conv.attrs.get("group", 1))
        if w.ndim < 3 or w.shape[0] % group or w.shape[1] * group != a.size:
            return False
        scaled = (w.reshape((group, -1) + w.shape[1:]) * a.reshape((group, 1, w.shape[1]) + (1,) * (w.ndim - 2))
                  ).reshape(w.shape)
    b = np.asarray(graph.constants[b_name], dtype=np.float64) if b_name else np.zeros(a.size)
    new_w = graph.fresh(w_name + "_bnfold")
    graph.constants[new_w] = scaled.astype(np.float32)
    new_b = graph.fresh((b_name or conv.outputs[0] + "_bias") + "_bnfold")
    graph.constants[new_b] = (b * a + shift).astype(np.float32)
    if conv.op == "Conv":
        _scaled_weight_qparams(graph, w_name, new_w, a, 0)
    else:  # the ConvTranspose becomes a Conv of other weights (decompose_conv_transposes)
        graph.weight_qparams.pop(w_name, None)
    conv.inputs = [conv.inputs[0], new_w, new_b]
    return True


def _fold_into_gemm(graph, gemm, a, shift):
    w_name = gemm.inputs[1]
    c_name = gemm.inputs[2] if len(gemm.inputs) > 2 else ""
    if w_name not in graph.constants or (c_name and c_name not in graph.constants):
        return False
    w = np.asarray(graph.constants[w_name], dtype=np.float64)
    trans_b = bool(gemm.attrs.get("transB", 0))
    n_axis = 0 if trans_b else 1
    if w.ndim != 2 or w.shape[n_axis] != a.size:
        return False
    beta = float(gemm.attrs.get("beta", 1.0))
    c = np.asarray(graph.constants[c_name], dtype=np.float64) * beta if c_name else np.zeros(a.size)
    if c.ndim == 2 and c.shape[0] != 1:
        c_new = c * a.reshape(1, -1) + shift.reshape(1, -1)
    else:
        c_new = np.broadcast_to(c.reshape(-1) if c.size > 1 else c.reshape(()), (a.size,)) * a + shift
    new_w = graph.fresh(w_name + "_bnfold")
    graph.constants[new_w] = (w * (a.reshape(-1, 1) if trans_b else a.reshape(1, -1))).astype(np.float32)
    new_c = graph.fresh((c_name or gemm.outputs[0] + "_bias") + "_bnfold")
    graph.constants[new_c] = c_new.astype(np.float32)
    _scaled_weight_qparams(graph, w_name, new_w, a, n_axis)
    gemm.inputs = [gemm.inputs[0], new_w, new_c]
    gemm.attrs["beta"] = 1.0
    return True


def _fold_into_matmul(graph, mm, a, shift):
    w_name = mm.inputs[1]
    x_shape = graph.shapes.get(mm.inputs[0])
    if w_name not in graph.constants or x_shape is None or len(x_shape) != 2:
        return False
    w = np.asarray(graph.constants[w_name], dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != a.size:
        return False
    new_w = graph.fresh(w_name + "_bnfold")
    graph.constants[new_w] = (w * a.reshape(1, -1)).astype(np.float32)
    new_c = graph.fresh(mm.outputs[0] + "_bias_bnfold")
    graph.constants[new_c] = shift.astype(np.float32)
    _scaled_weight_qparams(graph, w_name, new_w, a, 1)
    mm.op = "Gemm"
    mm.inputs = [mm.inputs[0], new_w, new_c]
    mm.attrs = {}
    return True


def fold_pads_into_convs(graph: Graph) -> Graph:
    """A constant zero Pad of the spatial axes whose only readers are Convs (explicit pads)
    becomes part of their pads: the TF-style "SAME" padding of exported EfficientNets and
    MobileNets. The padded value disappears; its qparams (if any) move to the Pad's input."""
    consumers = graph.consumers()
    for pad in [n for n in graph.nodes if n.op == "Pad"]:
        y = pad.outputs[0]
        readers = consumers.get(y, [])
        if y in graph.outputs or not readers or any(r.op != "Conv" or r.inputs[0] != y or y in r.inputs[1:]
                                                     for r in readers):
            continue
        if any(r.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID") for r in readers):
            continue
        if pad.attrs.get("mode", "constant") != "constant":
            continue
        x = pad.inputs[0]
        rank = len(graph.shapes.get(x, ()))
        amounts = _constant_pads(graph, pad, rank)
        if amounts is None or rank < 3:
            continue
        begin, end = amounts[:rank], amounts[rank:]
        if begin[:2] != [0, 0] or end[:2] != [0, 0] or min(amounts) < 0:
            continue
        nsp = rank - 2
        for r in readers:
            old = [0] * (2 * nsp) if r.attrs.get("auto_pad", "NOTSET") == "VALID" else \
                [int(v) for v in r.attrs.get("pads", [0] * (2 * nsp))]
            r.attrs["pads"] = [old[i] + begin[2 + i] for i in range(nsp)] + \
                              [old[nsp + i] + end[2 + i] for i in range(nsp)]
            r.attrs["auto_pad"] = "NOTSET"
            r.inputs[0] = x
        graph.nodes.remove(pad)
        _move_qparams(graph, y, x)
        graph.shapes.pop(y, None)
    return graph


def _constant_pads(graph, pad, rank):
    """The Pad's amounts as [begin..., end...] over all `rank` axes, if constant and the pad
    value is 0; else None."""
    ins = pad.inputs
    if len(ins) > 1 and ins[1]:
        if ins[1] not in graph.constants:
            return None
        pads = [int(v) for v in np.asarray(graph.constants[ins[1]]).reshape(-1)]
    else:
        pads = [int(v) for v in pad.attrs.get("pads", [])]
    if len(ins) > 2 and ins[2]:
        if ins[2] not in graph.constants:
            return None
        v = np.asarray(graph.constants[ins[2]])
        if v.size and float(v.reshape(-1)[0]) != 0.0:
            return None
    elif float(pad.attrs.get("value", 0.0)) != 0.0:
        return None
    axes = list(range(rank))
    if len(ins) > 3 and ins[3]:
        if ins[3] not in graph.constants:
            return None
        axes = [int(a) + rank if int(a) < 0 else int(a) for a in np.asarray(graph.constants[ins[3]]).reshape(-1)]
    k = len(axes)
    if len(pads) != 2 * k:
        return None
    full = [0] * (2 * rank)
    for i, a in enumerate(axes):
        full[a], full[rank + a] = pads[i], pads[k + i]
    return full


def inline_constant_ifs(graph: Graph) -> bool:
    """Replace each If whose condition (inputs[0]) is a constant by the nodes of the branch it
    takes: their values and constants renamed fresh, the branch's outputs passed to the If's
    through Identity nodes. Returns whether any was inlined."""
    done = False
    for node in list(graph.nodes):
        if node.op != "If" or node.inputs[0] not in graph.constants:
            continue
        cond = np.asarray(graph.constants[node.inputs[0]])
        if cond.size != 1:
            raise ConversionError(f"node {node.name!r} (If): its condition {node.inputs[0]!r} has {cond.size} "
                                  f"elements; ONNX requires one")
        taken = bool(cond.reshape(-1)[0])
        branch = node.attrs["then_branch" if taken else "else_branch"]
        rename = {}
        for name in list(branch.constants) + [o for n in branch.nodes for o in n.outputs if o]:
            rename[name] = graph.fresh(f"{node.name}/{name}")
        for name, value in branch.constants.items():
            graph.constants[rename[name]] = _normalize(value)
        new = [_renamed(n, rename) for n in branch.nodes]
        new += [Node("Identity", [rename.get(src, src)], [dst], {}, f"{node.name}/{dst}")
                for src, dst in zip(branch.outputs, node.outputs) if dst]
        at = graph.nodes.index(node)
        graph.nodes[at:at + 1] = new
        graph.notes.append(f"If {node.name!r}: condition {node.inputs[0]!r} is constant ({taken}); its "
                           f"{'then' if taken else 'else'} branch inlined")
        done = True
    return done


def _renamed(node: Node, rename: dict) -> Node:
    """A copy of node reading and writing the renamed values, and so do nested If branches
    (ONNX names are unique across scopes: a nested branch's own names are never in rename)."""
    attrs = node.attrs
    if node.op == "If":
        attrs = {k: Graph(nodes=[_renamed(n, rename) for n in b.nodes], constants=b.constants,
                          outputs=[rename.get(o, o) for o in b.outputs], name=b.name)
                 for k, b in node.attrs.items()}
    return Node(node.op, [rename.get(i, i) for i in node.inputs], [rename.get(o, o) for o in node.outputs],
                attrs, node.name)


def check_no_control_flow(graph: Graph):
    """An If left after folding tests a value computed at run time: say which inputs it
    depends on and how to freeze them."""
    ifs = [n for n in graph.nodes if n.op == "If"]
    if not ifs:
        return
    producers = graph.producers()
    lines = []
    for node in ifs:
        seen, todo, inputs = set(), [node.inputs[0]], []
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in graph.inputs:
                inputs.append(name)
            elif name in producers:
                todo.extend(i for i in producers[name].inputs if i)
        lines.append(f"  {node.name!r}: condition {node.inputs[0]!r} depends on input(s) {sorted(inputs)}")
    raise ConversionError("control flow on run-time values is not supported; If nodes remain whose condition "
                          "is not constant:\n" + "\n".join(lines) + "\nWhat to do: if those inputs are constant "
                          "in practice (a sample rate, a flag), freeze them: qrt convert --freeze NAME=VALUE "
                          "(qrt.convert(..., freeze={NAME: VALUE})).")


def _kept_axis(graph: Graph, node, op: str, rank: int):
    """The axis a Reduce `op` node reduces, keeping it, when it reduces exactly one; else None."""
    if node is None or node.op != op or not node.attrs.get("keepdims", 1):
        return None
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1] in graph.constants:
        axes = np.asarray(graph.constants[node.inputs[1]]).reshape(-1).tolist()
    return axes[0] % rank if axes is not None and len(axes) == 1 else None


def _last_axis_mean(graph: Graph, node, rank: int) -> bool:
    """A ReduceMean over the last axis only, keeping it."""
    return _kept_axis(graph, node, "ReduceMean", rank) == rank - 1


def _private(graph: Graph, consumers: dict, nodes: list, inside: list) -> bool:
    """Whether every output of `nodes` is read only by `inside` nodes (and is no graph output)."""
    ids = {id(n) for n in inside}
    return not any(v in graph.outputs or any(id(r) not in ids for r in consumers.get(v, []))
                   for n in nodes for v in n.outputs)


def fuse_rms_norms(graph: Graph) -> Graph:
    """x / Sqrt(ReduceMean(x^2) + eps), or x * Reciprocal(Sqrt(...)) (also 1 / Sqrt), over the
    last axis, then * gamma (how exporters write LLaMA's and T5's RMSNorm) becomes one
    RMSNormalization (ONNX opset 23), which has an integer form (LAYER_NORM without the mean)."""
    producers, consumers = graph.producers(), graph.consumers()

    def const(name):
        return np.asarray(graph.constants[name], np.float64) if name in graph.constants else None

    def root_of(x, v, rank):  # the nodes of Sqrt(ReduceMean(x^2) + eps) producing v, and eps
        sqrt = producers.get(v)
        add = producers.get(sqrt.inputs[0]) if sqrt is not None and sqrt.op == "Sqrt" else None
        if add is None or add.op != "Add":
            return None
        eps = next((i for i in add.inputs if i in graph.constants and const(i).size == 1), None)
        mean = next((producers.get(i) for i in add.inputs if i != eps), None)
        if eps is None or not _last_axis_mean(graph, mean, rank):
            return None
        sq = producers.get(mean.inputs[0])
        if sq is None or not ((sq.op == "Pow" and sq.inputs[0] == x and sq.inputs[1] in graph.constants
                               and float(const(sq.inputs[1]).reshape(-1)[0]) == 2.0)
                              or (sq.op == "Mul" and sq.inputs[:2] == [x, x])):
            return None
        return [sq, mean, add, sqrt], float(const(eps).reshape(-1)[0])

    gone = set()  # ids of nodes fused by an earlier match
    for n in [n for n in graph.nodes if n.op in ("Div", "Mul")]:
        if id(n) in gone:
            continue
        found = None
        for x, other in ((n.inputs[0], n.inputs[1]), (n.inputs[1], n.inputs[0])) if n.op == "Mul" else \
                ((n.inputs[0], n.inputs[1]),):
            rank = len(graph.shapes.get(x, ()))
            if not rank or x in graph.constants:
                continue
            if n.op == "Div":
                found = root_of(x, other, rank)
            else:
                r = producers.get(other)
                one = r is not None and r.op == "Div" and r.inputs[0] in graph.constants and \
                    const(r.inputs[0]).size == 1 and float(const(r.inputs[0]).reshape(-1)[0]) == 1.0
                if r is not None and (r.op == "Reciprocal" or one):
                    found = root_of(x, r.inputs[-1] if one else r.inputs[0], rank)
                    found = found and (found[0] + [r], found[1])
            if found:
                break
        if not found:
            continue
        nodes, eps = found
        c = graph.shapes[x][-1]
        gamma, out, tail = np.ones(c, np.float32), n.outputs[0], [n]
        readers = consumers.get(out, [])
        k = next((i for i in readers[0].inputs if i in graph.constants), None) \
            if len(readers) == 1 and readers[0].op == "Mul" and out not in graph.outputs else None
        if k is not None and const(k).size in (1, c):
            gamma[:] = np.broadcast_to(const(k).reshape(-1), (c,))
            out, tail = readers[0].outputs[0], tail + [readers[0]]
        inside = nodes + tail
        if not _private(graph, consumers, inside[:-1], inside):
            continue
        g_name = graph.fresh(out + ".gamma")
        graph.constants[g_name] = gamma
        rms = Node("RMSNormalization", [x, g_name], [out], {"axis": -1, "epsilon": eps}, n.name + "/rmsnorm")
        graph.nodes[graph.nodes.index(tail[-1])] = rms
        gone |= {id(m) for m in inside}
        graph.nodes = [m for m in graph.nodes if id(m) not in gone]
        producers, consumers = graph.producers(), graph.consumers()
    return graph


def fuse_l2_norms(graph: Graph) -> Graph:
    """x / ReduceL2(x) over the last axis, the divisor maybe clamped from below (Clip min eps,
    F.normalize) and expanded to x's shape: x's unit vector (speaker and face embeddings).
    It is RMSNormalization with gamma 1/sqrt(C) and epsilon eps^2 / C (which differs from the
    clamp only where |x| < eps), so it gets that op's integer form."""
    producers, consumers = graph.producers(), graph.consumers()

    def const(name):
        return np.asarray(graph.constants[name], np.float64).reshape(-1) if name in graph.constants else None

    for div in [n for n in graph.nodes if n.op == "Div"]:
        x, rank = div.inputs[0], len(graph.shapes.get(div.inputs[0], ()))
        if not rank or x in graph.constants:
            continue
        inside, eps, d = [div], 0.0, producers.get(div.inputs[1])
        if d is not None and d.op == "Expand" and graph.shapes.get(d.outputs[0]) == graph.shapes[x]:
            inside, d = inside + [d], producers.get(d.inputs[0])
        if d is not None and d.op == "Clip":
            lo = const(d.inputs[1]) if len(d.inputs) > 1 and d.inputs[1] else \
                np.array([d.attrs["min"]]) if "min" in d.attrs else None
            high = len(d.inputs) > 2 and d.inputs[2] or "max" in d.attrs
            if lo is None or lo.size != 1 or high:
                continue
            eps = max(float(lo[0]), 0.0)
            inside, d = inside + [d], producers.get(d.inputs[0])
        if d is None or d.inputs[0] != x or _kept_axis(graph, d, "ReduceL2", rank) != rank - 1:
            continue
        inside.append(d)
        if not _private(graph, consumers, inside[1:], inside):
            continue
        c = graph.shapes[x][-1]
        g_name = graph.fresh(div.outputs[0] + ".gamma")
        graph.constants[g_name] = np.full(c, 1.0 / math.sqrt(c), np.float32)
        graph.nodes[graph.nodes.index(div)] = Node("RMSNormalization", [x, g_name], list(div.outputs),
                                                   {"axis": -1, "epsilon": eps * eps / c}, div.name + "/l2norm")
        gone = {id(n) for n in inside[1:]}
        graph.nodes = [n for n in graph.nodes if id(n) not in gone]
        producers, consumers = graph.producers(), graph.consumers()
    return graph


def rewrite_squares(graph: Graph) -> Graph:
    """Pow(x, 2) of a run-time value becomes Mul(x, x) (an integer op), and Pow(Sqrt(a), 2)
    just a (a magnitude squared: in-graph power spectra), when nothing else reads the Sqrt;
    Pow(x, 0.5) becomes Sqrt. Runs after the norm and GELU fusions, which read Pow as it is."""
    producers, consumers = graph.producers(), graph.consumers()
    for n in [n for n in graph.nodes if n.op == "Pow"]:
        x, e = n.inputs[0], n.inputs[1]
        if x in graph.constants or e not in graph.constants or np.asarray(graph.constants[e]).size != 1:
            continue
        power = float(np.asarray(graph.constants[e]).reshape(-1)[0])
        root = producers.get(x)
        if power == 2.0 and root is not None and root.op == "Sqrt" and len(consumers.get(x, [])) == 1 \
                and x not in graph.outputs and n.outputs[0] not in graph.outputs:
            graph.nodes = [m for m in graph.nodes if m is not n and m is not root]
            _replace_value(graph, n.outputs[0], root.inputs[0])
            graph.shapes.pop(x, None)
        elif power == 2.0:
            n.op, n.inputs = "Mul", [x, x]
        elif power == 0.5:
            n.op, n.inputs = "Sqrt", [x]
        producers, consumers = graph.producers(), graph.consumers()
    return graph


def fuse_gelus(graph: Graph) -> Graph:
    """GELU as exporters before opset 20 write it becomes one Gelu (one table instead of a
    table, an Add and two Muls whose int8 steps lose the small values of x * (1 + f)):
    exact, 1 + Erf(x / sqrt(2)) (or x * 1/sqrt(2)), and the tanh form, 1 + Tanh(sqrt(2/pi) (x +
    0.044715 x^3)) (x^3 as Pow 3 or x * x * x), then times x and 0.5 in any order."""
    producers, consumers = graph.producers(), graph.consumers()

    def scalar(name):
        if name not in graph.constants or np.size(graph.constants[name]) != 1:
            return None
        return float(np.asarray(graph.constants[name]).reshape(-1)[0])

    def other(n, v):  # n's operand that is not v (binary n)
        return n.inputs[1] if n.inputs[0] == v else n.inputs[0]

    def only_reader(v, op):
        readers = consumers.get(v, [])
        return readers[0] if len(readers) == 1 and readers[0].op == op and v not in graph.outputs else None

    def scaled(v, op, c):  # (x, node) when v = op(x, ~c) (Mul: either order), else None
        n = producers.get(v)
        if n is None or n.op != op or len(n.inputs) != 2:
            return None
        for k in ((1,) if op == "Div" else (1, 0)):
            got = scalar(n.inputs[k])
            if got is not None and math.isclose(got, c, rel_tol=1e-3):
                return n.inputs[1 - k], n
        return None

    def cube_of(v):  # (x, nodes) when v = x^3
        n = producers.get(v)
        if n is not None and n.op == "Pow" and scalar(n.inputs[1]) == 3.0:
            return n.inputs[0], [n]
        if n is not None and n.op == "Mul":
            for a, b in (n.inputs[:2], n.inputs[1::-1]):
                sq = producers.get(b)
                if sq is not None and sq.op == "Mul" and sq.inputs[:2] == [a, a]:
                    return a, [sq, n]
        return None

    def head(f):  # (x, the nodes before f, approximate) when f computes erf / tanh of GELU's argument
        if f.op == "Erf":
            found = scaled(f.inputs[0], "Div", math.sqrt(2.0)) or scaled(f.inputs[0], "Mul", math.sqrt(0.5))
            return (found[0], [found[1]], "none") if found else None
        found = scaled(f.inputs[0], "Mul", math.sqrt(2.0 / math.pi))
        inner = producers.get(found[0]) if found else None
        if inner is None or inner.op != "Add":
            return None
        for x, w in (inner.inputs[:2], inner.inputs[1::-1]):
            term = scaled(w, "Mul", 0.044715)
            cube = cube_of(term[0]) if term else None
            if cube and cube[0] == x:
                return x, cube[1] + [term[1], inner, found[1]], "tanh"
        return None

    for f in [n for n in graph.nodes if n.op in ("Erf", "Tanh")]:
        found = head(f)
        if found is None:
            continue
        x, before, approximate = found
        add = only_reader(f.outputs[0], "Add")
        if add is None or scalar(other(add, f.outputs[0])) != 1.0:
            continue
        m1 = only_reader(add.outputs[0], "Mul")
        if m1 is None:
            continue
        o1, inside = other(m1, add.outputs[0]), before + [f, add, m1]
        half = producers.get(o1)
        if o1 == x or scalar(o1) == 0.5:  # (1 + f) * x, then * 0.5; or * 0.5, then * x
            m2 = only_reader(m1.outputs[0], "Mul")
            if m2 is None or (scalar(other(m2, m1.outputs[0])) != 0.5 if o1 == x else other(m2, m1.outputs[0]) != x):
                continue
            inside.append(m2)
        elif half is not None and half.op == "Mul" and x in half.inputs and scalar(other(half, x)) == 0.5 \
                and only_reader(o1, "Mul") is m1:  # (x * 0.5) * (1 + f)
            inside.insert(0, half)
        else:
            continue
        if not _private(graph, consumers, inside[:-1], inside):
            continue
        gelu = Node("Gelu", [x], [inside[-1].outputs[0]], {"approximate": approximate}, f.name + "/gelu")
        graph.nodes[graph.nodes.index(inside[-1])] = gelu
        graph.nodes = [n for n in graph.nodes if n is gelu or all(n is not i for i in inside)]
        producers, consumers = graph.producers(), graph.consumers()
    return graph


def fuse_softmaxes(graph: Graph) -> Graph:
    """e = Exp(x - ReduceMax(x)) (or Exp(x)), then e / ReduceSum(e), along one axis (how some
    exporters and hand-written attention write softmax) becomes one Softmax, which has an
    integer form."""
    producers, consumers = graph.producers(), graph.consumers()
    for div in [n for n in graph.nodes if n.op == "Div"]:
        e, s = div.inputs[:2]
        exp, total = producers.get(e), producers.get(s)
        rank = len(graph.shapes.get(e, ()))
        if exp is None or exp.op != "Exp" or not rank:
            continue
        axis = _kept_axis(graph, total, "ReduceSum", rank)
        if axis is None or total.inputs[0] != e:
            continue
        x, inside = exp.inputs[0], [exp, total, div]
        sub = producers.get(x)
        if sub is not None and sub.op == "Sub":
            peak = producers.get(sub.inputs[1])
            if _kept_axis(graph, peak, "ReduceMax", rank) == axis and peak.inputs[0] == sub.inputs[0]:
                x, inside = sub.inputs[0], [peak, sub] + inside
        if not _private(graph, consumers, inside[:-1], inside):
            continue
        sm = Node("Softmax", [x], [div.outputs[0]], {"axis": axis}, div.name + "/softmax")
        graph.nodes[graph.nodes.index(div)] = sm
        graph.nodes = [n for n in graph.nodes if n is sm or all(n is not i for i in inside)]
        producers, consumers = graph.producers(), graph.consumers()
    return graph


def fuse_layer_norms(graph: Graph) -> Graph:
    """x - mean, then / sqrt(mean((x - mean)^2) + eps) (or of mean(x^2) - mean^2), then * gamma +
    beta, over the last axis (ReduceMean, Sub, Pow 2 or Mul by itself, ReduceMean, Add eps, Sqrt,
    Div, Mul, Add: how exporters before opset 17 write nn.LayerNorm, and ONNX's function body) becomes one LayerNormalization, which has an
    integer form; gamma and beta must be constants of the last axis' size (or absent: 1, 0)."""
    producers, consumers = graph.producers(), graph.consumers()

    def const(name):
        return np.asarray(graph.constants[name], np.float32) if name in graph.constants else None

    for div in [n for n in graph.nodes if n.op == "Div"]:
        d, s = div.inputs[:2]
        sub, sqrt = producers.get(d), producers.get(s)
        if sub is None or sub.op != "Sub" or sqrt is None or sqrt.op != "Sqrt":
            continue
        x, m = sub.inputs[:2]
        rank = len(graph.shapes.get(x, ()))
        if not rank or not _last_axis_mean(graph, producers.get(m), rank) or producers[m].inputs[0] != x:
            continue
        add = producers.get(sqrt.inputs[0])
        if add is None or add.op != "Add":
            continue
        eps_name = next((i for i in add.inputs if i in graph.constants), None)
        var = next((producers.get(i) for i in add.inputs if i != eps_name), None)
        if eps_name is None or const(eps_name).size != 1 or var is None:
            continue

        def square(v, of):  # the node computing v = of^2 (Pow 2 or a Mul by itself), or None
            n = producers.get(v)
            if n is not None and ((n.op == "Pow" and n.inputs[0] == of and n.inputs[1] in graph.constants
                                   and float(const(n.inputs[1]).reshape(-1)[0]) == 2.0)
                                  or (n.op == "Mul" and n.inputs[:2] == [of, of])):
                return n
            return None
        if _last_axis_mean(graph, var, rank):  # mean((x - mean)^2)
            sq = [square(var.inputs[0], d)]
        elif var.op == "Sub":  # mean(x^2) - mean^2, as ONNX's own function body writes it
            ms = producers.get(var.inputs[0])
            sq = [square(ms.inputs[0], x) if _last_axis_mean(graph, ms, rank) else None, ms,
                  square(var.inputs[1], m)]
        else:
            continue
        if None in sq:
            continue
        c = graph.shapes[x][-1]
        out, tail = div.outputs[0], [div]
        gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
        for op, default in (("Mul", gamma), ("Add", beta)):  # the affine part, when there is one
            readers = consumers.get(out, [])
            nxt = readers[0] if len(readers) == 1 else None
            k = None if nxt is None or nxt.op != op else next((i for i in nxt.inputs if i in graph.constants), None)
            if k is None or const(k).size not in (1, c) or out in graph.outputs:
                break
            default[:] = np.broadcast_to(const(k).reshape(-1), (c,))
            out, tail = nxt.outputs[0], tail + [nxt]
        # every intermediate value read only inside the pattern
        nodes = [producers[m], sub, *sq, var, add, sqrt, *tail]
        if not _private(graph, consumers, nodes[:-1], nodes):
            continue
        inside = {id(n) for n in nodes}
        g_name, b_name = graph.fresh(out + ".gamma"), graph.fresh(out + ".beta")
        graph.constants[g_name], graph.constants[b_name] = gamma.copy(), beta.copy()
        ln = Node("LayerNormalization", [x, g_name, b_name], [out],
                  {"axis": -1, "epsilon": float(const(eps_name).reshape(-1)[0])}, div.name + "/layernorm")
        at = graph.nodes.index(tail[-1])
        graph.nodes[at] = ln
        graph.nodes = [n for n in graph.nodes if id(n) not in inside or n is ln]
        producers, consumers = graph.producers(), graph.consumers()
    return graph


def expose_recurrent_states(graph: Graph) -> Graph:
    """Name every output of each LSTM and GRU, and give an LSTM a fourth: its cell state at
    every step (float_exec computes it). Calibration then sees the states' ranges at every step,
    whatever the model reads of them, and lowering takes the states' parameters from those."""
    for n in graph.nodes:
        if n.op not in ("LSTM", "GRU"):
            continue
        names = ("Y", "Y_h", "Y_c", "cells") if n.op == "LSTM" else ("Y", "Y_h")
        outs = list(n.outputs) + [""] * (len(names) - len(n.outputs))
        n.outputs = [o or graph.fresh(f"{n.name or n.op.lower()}.{what}") for o, what in zip(outs, names)]
    return graph


def _phase_weights(w: np.ndarray, group: int, strides, dil):
    """ConvTranspose weights [C, Mg, K..] -> the Conv weights [G * P * Mg, C/G, M..] that compute
    its P = prod(strides) stride phases as output channels (group, phase, channel), M = the
    taps of one phase, ceil(K' / s) for the dilated extent K'. Phase p's output q is
    sum_m x[q - m] w'[p + m s] (w' dilated): a correlation with the phase's taps reversed over
    x padded by M - 1 at the start. Taps beyond K' (and the dilation's gaps) are 0."""
    c, mg, kernel = w.shape[0], w.shape[1], w.shape[2:]
    ext = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    wd = np.zeros((c, mg, *ext), w.dtype)
    wd[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in dil)] = w
    taps = [-(-e // s) for e, s in zip(ext, strides)]
    wd = wd.reshape(group, c // group, mg, *ext)
    out = np.zeros((group, *strides, mg, c // group, *taps), w.dtype)
    for phase in itertools.product(*[range(s) for s in strides]):
        for tap in itertools.product(*[range(t) for t in taps]):
            k = [p + (t - 1 - a) * s for p, t, a, s in zip(phase, taps, tap, strides)]
            if all(kk < e for kk, e in zip(k, ext)):
                out[(slice(None), *phase, slice(None), slice(None), *tap)] = \
                    wd[(slice(None), slice(None), slice(None), *k)].transpose(0, 2, 1)
    return out.reshape(-1, c // group, *taps), taps


def decompose_conv_transposes(graph: Graph) -> Graph:
    """A 1-D or 2-D ConvTranspose with constant weights becomes one Conv whose output channels
    are its stride phases (no multiplications by inserted zeros, one GEMM), Transposes and
    Reshapes that interleave the phases (depth to space) and a Slice for the pads:
    ops the runtime has, so the integer result is the Conv's, bit-exact on every path. A Relu
    or Clip that is the only reader moves before the interleave, where the Conv fuses it."""
    consumers = graph.consumers()
    for ct in [n for n in graph.nodes if n.op == "ConvTranspose"]:
        x, w_name = ct.inputs[0], ct.inputs[1]
        b_name = ct.inputs[2] if len(ct.inputs) > 2 else ""
        shape = graph.shapes.get(x)
        if shape is None or len(shape) not in (3, 4) or w_name not in graph.constants or \
                (b_name and b_name not in graph.constants):
            continue
        w = np.asarray(graph.constants[w_name], np.float32)
        group, nsp = int(ct.attrs.get("group", 1)), len(shape) - 2
        strides, dil, pb, pe, out = float_exec.conv_transpose_geometry(ct, list(shape[2:]), list(w.shape[2:]))
        cw, taps = _phase_weights(w, group, strides, dil)
        mg, m = w.shape[1], w.shape[1] * group
        # phase rows q0.. q0 + Q of the full output cover [pb, pb + out); q0 skips whole rows of the
        # begin pads, the Slice the rest
        q0 = [min(b // s, t - 1) for b, s, t in zip(pb, strides, taps)]
        need = [-(-(b + o) // s) - q for b, o, s, q in zip(pb, out, strides, q0)]
        end = [max(n_ - (i - q), 0) for n_, i, q in zip(need, shape[2:], q0)]
        rows = [i - q + e for i, q, e in zip(shape[2:], q0, end)]
        y = ct.outputs[0]
        base = ct.name or y
        wc = graph.fresh(base + "_phases_w")
        graph.constants[wc] = cw
        bias = np.zeros(m, np.float32) if not b_name else np.asarray(graph.constants[b_name], np.float32)
        bc = graph.fresh(base + "_phases_b")
        graph.constants[bc] = np.broadcast_to(bias.reshape(group, 1, mg), (group, int(np.prod(strides)), mg)).reshape(-1).copy()
        phases = graph.fresh(base + "_phases")
        conv = Node("Conv", [x, wc, bc], [phases], {
            "kernel_shape": taps, "strides": [1] * nsp, "dilations": [1] * nsp, "group": group,
            "pads": [t - 1 - q for t, q in zip(taps, q0)] + end}, ct.name)
        new = [conv]
        graph.shapes[phases] = (shape[0], cw.shape[0], *rows)
        readers = consumers.get(y, [])
        act = readers[0] if len(readers) == 1 and y not in graph.outputs and readers[0].op in ("Relu", "Clip") \
            and all(i in graph.constants for i in readers[0].inputs[1:] if i) else None
        last = phases
        if act is not None:  # Relu / Clip commute with the interleave and the crop
            graph.nodes.remove(act)
            acted = graph.fresh(base + "_phases_act")
            new.append(Node(act.op, [phases] + act.inputs[1:], [acted], dict(act.attrs), act.name))
            graph.shapes[acted] = graph.shapes[phases]
            last, y = acted, act.outputs[0]

        def step(op, inputs, attrs, out_shape, name=None):
            nonlocal last
            v = name or graph.fresh(base + "_" + op.lower())
            new.append(Node(op, [last] + inputs, [v], attrs, f"{ct.name}/{op}_{len(new)}" if ct.name else ""))
            graph.shapes[v] = tuple(out_shape)
            last = v

        def const(values):
            c = graph.fresh(base + "_shape")
            graph.constants[c] = np.asarray(values, np.int64)
            return c
        n = shape[0]
        g = [group] if group > 1 else []
        inter = [r * s for r, s in zip(rows, strides)]
        crop = [b - q * s for b, q, s in zip(pb, q0, strides)]
        sliced = any(c_ or i != o for c_, i, o in zip(crop, inter, out))
        if any(s > 1 for s in strides):
            # channels last, split, interleave, channels first: in the runtime's channels-last
            # storage only the middle Transpose moves bytes (the others are views)
            step("Transpose", [], {"perm": [0, *range(2, 2 + nsp), 1]}, [n, *rows, cw.shape[0]])
            split = [n, *rows, *g, *strides, mg]
            step("Reshape", [const(split)], {}, split)
            perm = [0] + [a for k in range(nsp) for a in (1 + k, 1 + nsp + len(g) + k)]
            perm += list(range(1 + nsp, 1 + nsp + len(g))) + [len(split) - 1]
            step("Transpose", [], {"perm": perm}, [split[p] for p in perm])
            step("Reshape", [const([n, *inter, m])], {}, [n, *inter, m])
            step("Transpose", [], {"perm": [0, 1 + nsp, *range(1, 1 + nsp)]}, [n, m, *inter],
                 None if sliced else y)
        if sliced:
            axes = list(range(2, 2 + nsp))
            step("Slice", [const(crop), const([c_ + o for c_, o in zip(crop, out)]), const(axes)], {},
                 [n, m, *out], y)
        elif last != y:  # stride 1 without a crop: the Conv (or its activation) is the result
            new[-1].outputs[0] = y
            graph.shapes[y] = graph.shapes.pop(last)
        at = graph.nodes.index(ct)
        graph.nodes[at:at + 1] = new
        graph.weight_qparams.pop(w_name, None)
    return graph


def remove_unused(graph: Graph) -> Graph:
    """Drop nodes whose outputs nobody reads, then constants, shapes and qparams of values
    that are gone."""
    graph.remove_unused()
    alive = set(graph.inputs) | set(graph.constants) | {o for n in graph.nodes for o in n.outputs}
    graph.shapes = {k: v for k, v in graph.shapes.items() if k in alive}
    graph.fixed_qparams = {k: v for k, v in graph.fixed_qparams.items() if k in alive}
    graph.weight_qparams = {k: v for k, v in graph.weight_qparams.items() if k in alive}
    return graph


def simplify(graph: Graph) -> Graph:
    """Run the passes in order: control flow, identities, shapes, constant folding (to a fixed
    point), BatchNormalization folding, ConvTranspose decomposition, Pad folding, the norm /
    softmax / GELU / L2 fusions, the Pow rewrites, cleanup, and shapes again (graph.shapes of
    every value): the list at the top of this module."""
    remove_unused(graph)
    while any(n.op == "If" for n in graph.nodes):  # control flow first: the rest runs the graph
        fold_constants(graph)
        if not inline_constant_ifs(graph):
            break
    check_no_control_flow(graph)
    split_variadic(graph)
    expose_recurrent_states(graph)
    shapes, dtypes = value_types(graph)
    graph.shapes.update(shapes)
    remove_identities(graph, dtypes)
    while True:
        before = len(graph.nodes)
        fold_constants(graph, dtypes)
        remove_identities(graph, dtypes)
        remove_unused(graph)
        if len(graph.nodes) == before:
            break
    fold_batch_norms(graph)
    decompose_conv_transposes(graph)
    fold_pads_into_convs(graph)
    fuse_layer_norms(graph)
    fuse_rms_norms(graph)
    fuse_softmaxes(graph)
    fuse_gelus(graph)
    fuse_l2_norms(graph)
    rewrite_squares(graph)
    remove_unused(graph)
    infer_shapes(graph)
    return graph
