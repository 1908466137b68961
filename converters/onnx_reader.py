"""ONNX front-end: an .onnx file (or onnx.ModelProto) -> the float IR (converters/ir.py).

    read_onnx(source) -> Graph

What it does, in order:
1. loads the model (a ConversionError names the file and the problem when that fails), upgrades
   a default-domain opset older than 13 to TARGET_OPSET with onnx's version converter (noted in
   Graph.notes) and inlines the model's local functions (the dynamo exporter may emit some).
   Nothing of the file is ever executed: ONNX is data.
2. collects every op type the float executor (converters/float_exec.py) does not implement
   and raises UnsupportedOpsError listing all of them with their nodes, before anything else.
   QuantizeLinear / DequantizeLinear and the QOperator ops (QLinearConv, ..., see step 5) are
   accepted here and removed in step 5. `If` is read with
   its branches as Graphs (Node.attrs then_branch / else_branch, their ops checked too); the
   passes inline it once its condition is constant (passes.inline_constant_ifs), e.g. after
   `freeze` made the input it tests a constant.
3. initializers and Constant nodes become Graph.constants: every float tensor float32, every
   integer tensor int64 (shape-like), except int8/uint8/int32 tensors that a DequantizeLinear
   reads. Graph inputs that are initializers are not inputs, nor are the inputs `freeze` names:
   they become constants of the given values. Each input must have a static shape; a symbolic
   or unknown first (batch) dimension is set to 1. Inputs are float, or int32 / int64 (ids, masks:
   Graph.dtypes), which pass through to the ops that read integers (GATHER).
4. nodes are copied with their attributes as Python values (str, int, float, lists, numpy
   arrays for tensors) and sorted topologically.
5. QDQ: an activation pair QuantizeLinear -> DequantizeLinear is removed (readers of the DQ
   output read the Q input, which keeps its name) and Graph.fixed_qparams[name] = (scale,
   zero_point) is recorded. The zero point is stored in the int8 convention of qrt: a uint8
   zero point z becomes z - 128, which describes exactly the same real range. A weight
   DequantizeLinear of an int8/uint8 constant (or a Q -> DQ pair on a float constant, as in
   PyTorch QAT exports) becomes the dequantized float32 constant, named as the DQ output, and
   Graph.weight_qparams[that name] = (scales float32 array, axis) (per-tensor: 1 scale, axis 0).
   An int32 bias DequantizeLinear becomes a float constant. Q/DQ that fit none of these
   patterns (or use 16-bit / 4-bit types) raise UnsupportedOpsError.
   QOperator models are first rewritten into that QDQ form (_rewrite_qoperators): QLinearConv,
   QLinearMatMul and ONNX Runtime's com.microsoft QGemm, QLinearAdd/Mul, QLinear pools,
   activations, Softmax and Concat become their float op between DequantizeLinear (inputs) and
   QuantizeLinear (output), an int32 bias a float constant (scale x_scale * w_scale); ops that
   move uint8 data (MaxPool, Reshape, ...) get the Q/DQ of their input around them. ONNX
   Runtime's dynamic pattern (DynamicQuantizeLinear -> MatMulInteger / ConvInteger -> Cast ->
   Mul by x_scale * w_scale) becomes the float MatMul / Conv on the float input, its weight a
   DequantizeLinear of the integer one (weight_qparams; no fixed activation parameters).
   ONNX Runtime's com.microsoft DynamicQuantizeLSTM (quantize_dynamic's LSTM) becomes the ONNX
   LSTM with its int8 W and R dequantized (and transposed back from ORT's [D, K, 4H]).
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from .errors import ConversionError, UnsupportedOpsError
from .ir import Graph, Node

MIN_OPSET = 13
TARGET_OPSET = 17  # what older opsets are upgraded to
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
# QOperator op -> (float op, input positions of its (data, scale, zero point) operands, position
# of the output's scale (its zero point follows; absent scale: float output), of the int32 bias)
_QLINEAR = {
    "QLinearConv": ("Conv", (0, 3), 6, 8),
    "QLinearMatMul": ("MatMul", (0, 3), 6, None),
    "QGemm": ("Gemm", (0, 3), 7, 6),  # this one and those below: ONNX Runtime's com.microsoft ops
    "QLinearAdd": ("Add", (0, 3), 6, None),
    "QLinearMul": ("Mul", (0, 3), 6, None),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", (0,), 3, None),
    "QLinearAveragePool": ("AveragePool", (0,), 3, None),
    "QLinearSigmoid": ("Sigmoid", (0,), 3, None),
    "QLinearLeakyRelu": ("LeakyRelu", (0,), 3, None),
    "QLinearSoftmax": ("Softmax", (0,), 3, None),
    "QLinearConcat": ("Concat", None, 0, None),  # y_scale, y_zero_point, then (x, scale, zp) per input
}
_DYNAMIC_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}
# ONNX Runtime's com.microsoft recurrent ops with int8 weights (quantize_dynamic's LSTM): read
# back as the float op with dequantized weights (_resolve_dynamic_recurrent)
_DYNAMIC_RECURRENT = {"DynamicQuantizeLSTM": "LSTM"}
_QOP_OPS = set(_QLINEAR) | _DYNAMIC_OPS | set(_DYNAMIC_RECURRENT)
# ops that ONNX Runtime's QOperator form runs on uint8 data as is: the output keeps the input's
# scale and zero point
_MOVE_OPS = {"MaxPool", "GlobalMaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Split",
             "Slice", "Gather", "Resize", "Pad", "Identity", "Expand", "Tile", "DepthToSpace", "SpaceToDepth"}
_DEFAULT_DOMAINS = ("", "ai.onnx")


def _describe(source):
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return "<onnx.ModelProto>"


def _load(source, onnx):
    where = _describe(source)
    if isinstance(source, onnx.ModelProto):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ConversionError(f"read_onnx expects a path or an onnx.ModelProto, not {type(source).__name__}")
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ConversionError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ConversionError(f"{path}: is a directory, not an ONNX file")
    try:
        model = onnx.load(path)
    except Exception as e:  # DecodeError, OSError (external data), ...
        raise ConversionError(f"{where}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ConversionError(f"{where}: not an ONNX model (no graph, or a graph without nodes and outputs)")
    return model


def _to_numpy(tensor, onnx, where, keep_int=False):
    from onnx import numpy_helper

    try:
        a = numpy_helper.to_array(tensor)
    except Exception as e:
        raise ConversionError(f"{where}: tensor {tensor.name!r} cannot be decoded ({type(e).__name__}: {e})") from e
    return _normalize(np.asarray(a), keep_int)


def _normalize(a, keep_int=False):
    """float32 for every float tensor, int64 for integers (unless kept for a Q/DQ)."""
    kind = a.dtype.kind
    if kind == "f" or a.dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        return a.astype(np.float32)
    if kind in "iu":
        if keep_int:
            return a
        return a.astype(np.int64)
    if kind == "b":
        return a.astype(np.bool_)
    if kind == "V" and a.dtype.names is None:  # ml_dtypes types reported as void
        return a.astype(np.float32)
    return a


def _attr_value(attr, onnx, where):
    from onnx import AttributeProto, helper

    t = attr.type
    if t in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        raise ConversionError(f"{where}: attribute {attr.name!r} holds a subgraph (control flow other than an "
                              f"If on a constant condition is not supported)")
    v = helper.get_attribute_value(attr)
    if t == AttributeProto.STRING:
        return v.decode("utf-8", "replace")
    if t == AttributeProto.STRINGS:
        return [s.decode("utf-8", "replace") for s in v]
    if t == AttributeProto.TENSOR:
        return _to_numpy(v, onnx, where)
    if t == AttributeProto.TENSORS:
        return [_to_numpy(x, onnx, where) for x in v]
    if t == AttributeProto.INTS:
        return [int(x) for x in v]
    if t == AttributeProto.FLOATS:
        return [float(x) for x in v]
    if t == AttributeProto.INT:
        return int(v)
    if t == AttributeProto.FLOAT:
        return float(v)
    if t == AttributeProto.SPARSE_TENSOR:
        raise ConversionError(f"{where}: sparse tensor attribute {attr.name!r} is not supported")
    return v


def _node_label(node, index):
    return node.name or f"#{index} ({node.op_type} -> {node.output[0] if node.output else '?'})"


def _check_ops(model, where, also_supported=None):
    """Every node whose op the float executor cannot run, or (when also_supported is given)
    that also_supported(op) refuses, in one UnsupportedOpsError; the branches of If included
    (either may be the one kept)."""
    from .float_exec import SUPPORTED_OPS

    bad, rewritten = {}, _QDQ_OPS | _QOP_OPS  # Q/DQ and QOperator nodes become float ops

    def visit(nodes):
        for i, node in enumerate(nodes):
            op = node.op_type
            if node.domain in _DEFAULT_DOMAINS and op == "If":
                for a in node.attribute:
                    if a.name in ("then_branch", "else_branch"):
                        visit(a.g.node)
                continue
            if node.domain in _DEFAULT_DOMAINS or (node.domain == "com.microsoft" and op in rewritten):
                if op in rewritten or (op in SUPPORTED_OPS and (also_supported is None or also_supported(op))):
                    continue
                key = op
            else:
                key = f"{node.domain}::{op}"
            bad.setdefault(key, []).append(_node_label(node, i))
    visit(model.graph.node)
    if bad:
        raise UnsupportedOpsError(bad, where)


def _static_shape(value_info, where):
    tt = value_info.type
    if not tt.HasField("tensor_type"):
        raise ConversionError(f"{where}: input {value_info.name!r} is not a tensor")
    t = tt.tensor_type
    if not t.HasField("shape"):
        raise ConversionError(f"{where}: input {value_info.name!r} has no shape; re-export with a static input shape")
    shape = []
    for i, d in enumerate(t.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
        elif i == 0:
            shape.append(1)  # symbolic / dynamic batch
        else:
            sym = d.dim_param or "?"
            dims = "x".join(str(v.dim_value) if v.HasField("dim_value") and v.dim_value > 0 else "N"
                            for v in t.shape.dim)
            raise ConversionError(
                f"{where}: input {value_info.name!r} has a dynamic dimension {i} ({sym!r}): give its "
                f"maximum, e.g. --max-shape {value_info.name}={dims} (max_shape={{{value_info.name!r}: ...}}), "
                "and the file runs any size up to it")
    return shape, t.elem_type


def _symbolic_dims(value_info, shape, where) -> dict:
    """{axis: symbol name} of the dynamic dimensions (but the batch) of an input given its
    maximum `shape`; a static dimension must match it."""
    dims = list(value_info.type.tensor_type.shape.dim)
    if len(dims) != len(shape):
        raise ConversionError(f"{where}: input {value_info.name!r} has rank {len(dims)}; the shape given for it, "
                              f"{tuple(shape)}, has rank {len(shape)}")
    symbols = {}
    for i, (d, size) in enumerate(zip(dims, shape)):
        if d.HasField("dim_value") and d.dim_value > 0:
            if d.dim_value != size:
                raise ConversionError(f"{where}: input {value_info.name!r} dimension {i} is {d.dim_value}; the "
                                      f"shape given for it says {size}")
        elif i > 0:
            symbols[i] = d.dim_param or f"{value_info.name}:{i}"
    return symbols


def _topo_sort(nodes, available, where):
    producer = {}
    for i, n in enumerate(nodes):
        for o in n.outputs:
            if o:
                if o in producer or o in available:
                    raise ConversionError(f"{where}: value {o!r} is produced twice")
                producer[o] = i
    order, state = [], [0] * len(nodes)  # 0 new, 1 visiting, 2 done
    for start in range(len(nodes)):
        if state[start]:
            continue
        stack = [(start, 0)]
        state[start] = 1
        while stack:
            i, k = stack[-1]
            ins = nodes[i].inputs
            if k < len(ins):
                stack[-1] = (i, k + 1)
                name = ins[k]
                if not name or name in available:
                    continue
                j = producer.get(name)
                if j is None:
                    raise ConversionError(f"{where}: node {nodes[i].name!r} ({nodes[i].op}) reads {name!r}, "
                                          "which no node, initializer or input provides")
                if state[j] == 1:
                    raise ConversionError(f"{where}: the graph has a cycle through {name!r}")
                if state[j] == 0:
                    state[j] = 1
                    stack.append((j, 0))
            else:
                state[i] = 2
                order.append(nodes[i])
                stack.pop()
    return order


# --------------------------------------------------------------------------- QDQ

def _qparam_arrays(g, node, where):
    """(scale float32 array, zero point int array or None, axis, dtype name) of a Q/DQ node."""
    if len(node.inputs) < 2 or node.inputs[1] not in g.constants:
        raise UnsupportedOpsError({node.op + " (scale not a constant)": [node.name]}, where)
    scale = np.asarray(g.constants[node.inputs[1]], dtype=np.float32)
    zp = None
    if len(node.inputs) > 2 and node.inputs[2]:
        if node.inputs[2] not in g.constants:
            raise UnsupportedOpsError({node.op + " (zero point not a constant)": [node.name]}, where)
        zp = np.asarray(g.constants[node.inputs[2]])
    return scale, zp


def _zp_dtype(zp, node):
    """The quantized type of a Q/DQ: from the zero point (or output_dtype); uint8 by default."""
    if zp is not None:
        return zp.dtype.name
    od = node.attrs.get("output_dtype", 0)
    return {3: "int8", 2: "uint8", 5: "int16", 4: "uint16", 6: "int32"}.get(od, "uint8")


def _dequantize(q, scale, zp, axis):
    q = np.asarray(q).astype(np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    zp = np.zeros(1) if zp is None else np.asarray(zp, dtype=np.float64)
    if scale.size > 1 or zp.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape) if scale.size > 1 else scale.reshape(())
        zp = zp.reshape(shape) if zp.size > 1 else zp.reshape(())
    else:
        scale, zp = scale.reshape(()), zp.reshape(())
    return ((q - zp) * scale).astype(np.float32)


def _quantize(x, scale, zp, axis, qmin, qmax):
    x = np.asarray(x, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    zp = np.zeros(1) if zp is None else np.asarray(zp, dtype=np.float64)
    if scale.size > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zp = zp.reshape(shape) if zp.size > 1 else zp.reshape(())
    else:
        scale, zp = scale.reshape(()), zp.reshape(())
    return np.clip(np.rint(x / scale) + zp, qmin, qmax)


_QRANGE = {"int8": (-128, 127), "uint8": (0, 255)}
_INT8_LIKE = ("int8", "uint8")


def _resolve_qdq(g, where, int_consts):
    """Remove QuantizeLinear / DequantizeLinear nodes as described in the module docstring."""
    consumers = g.consumers()
    remove = set()
    dq_nodes = [n for n in g.nodes if n.op == "DequantizeLinear"]
    q_nodes = [n for n in g.nodes if n.op == "QuantizeLinear"]
    rename = {}  # removed value -> the value that replaces it
    dropped_inputs = {i for n in g.nodes if n.op in _QDQ_OPS for i in n.inputs if i}
    extra_outputs = []
    lower_bound_zero = []  # values whose Q range starts at exactly 0.0

    def res(name):
        while name in rename:
            name = rename[name]
        return name

    # 1. DequantizeLinear of a constant: weights (int8/uint8) and biases (int32)
    for dq in dq_nodes:
        x = dq.inputs[0]
        if x not in g.constants:
            continue
        scale, zp = _qparam_arrays(g, dq, where)
        q = g.constants[x]
        qtype = q.dtype.name
        axis = dq.attrs.get("axis", 1)
        if scale.size > 1:
            axis = axis + q.ndim if axis < 0 else axis
            if not 0 <= axis < q.ndim or q.shape[axis] != scale.size:
                raise ConversionError(f"{where}: DequantizeLinear {dq.name!r}: {scale.size} scales do not fit "
                                      f"axis {axis} of {x!r} {q.shape}")
        if dq.attrs.get("block_size", 0):
            raise UnsupportedOpsError({"DequantizeLinear (blocked quantization)": [dq.name]}, where)
        if qtype not in _INT8_LIKE + ("int32",):
            raise UnsupportedOpsError({f"DequantizeLinear of {qtype}": [dq.name]}, where)
        out = dq.outputs[0]
        g.constants[out] = _dequantize(q, scale, zp, axis)
        if qtype in _INT8_LIKE:
            g.weight_qparams[out] = (scale.reshape(-1).astype(np.float32), axis if scale.size > 1 else 0)
        remove.add(id(dq))

    # 2. QuantizeLinear -> DequantizeLinear pairs
    for qn in q_nodes:
        x, y = res(qn.inputs[0]), qn.outputs[0]
        readers = consumers.get(y, [])
        if not readers or any(r.op != "DequantizeLinear" for r in readers) or y in g.outputs:
            raise UnsupportedOpsError({"QuantizeLinear (not followed only by DequantizeLinear)": [qn.name]}, where)
        scale, zp = _qparam_arrays(g, qn, where)
        qtype = _zp_dtype(zp, qn)
        axis = qn.attrs.get("axis", 1)
        for dq in readers:
            s2, z2 = _qparam_arrays(g, dq, where)
            if not (np.array_equal(s2.reshape(-1), scale.reshape(-1)) and
                    np.array_equal(np.zeros(1) if z2 is None else z2.reshape(-1).astype(np.int64),
                                   np.zeros(1) if zp is None else zp.reshape(-1).astype(np.int64))):
                raise ConversionError(f"{where}: QuantizeLinear {qn.name!r} and DequantizeLinear {dq.name!r} "
                                      "use different scales or zero points")
        if qtype not in _INT8_LIKE:
            raise UnsupportedOpsError({f"QuantizeLinear/DequantizeLinear to {qtype}": [qn.name]}, where)
        if x in g.constants:
            # fake-quantized weight (PyTorch QAT export): constant = dequantize(quantize(w))
            w = np.asarray(g.constants[x], dtype=np.float32)
            if scale.size > 1:
                axis = axis + w.ndim if axis < 0 else axis
            qmin, qmax = _QRANGE[qtype]
            fq = _dequantize(_quantize(w, scale, zp, axis, qmin, qmax), scale, zp, axis)
            for dq in readers:
                g.constants[dq.outputs[0]] = fq
                g.weight_qparams[dq.outputs[0]] = (scale.reshape(-1).astype(np.float32),
                                                   axis if scale.size > 1 else 0)
                remove.add(id(dq))
            remove.add(id(qn))
            continue
        if scale.size != 1:
            raise UnsupportedOpsError({"QuantizeLinear (per-axis on an activation)": [qn.name]}, where)
        z = 0 if zp is None else int(zp.reshape(-1)[0])
        if qtype == "uint8":
            z -= 128
        s = float(scale.reshape(-1)[0])
        if not (np.isfinite(s) and s > 0):
            raise ConversionError(f"{where}: QuantizeLinear {qn.name!r} has scale {s}")
        x = res(x)
        # the value keeps its name, unless a DQ output is a graph output: then the graph's
        # output name wins (the producer of x is renamed), so the interface does not change
        target = x
        if x not in g.inputs and x not in g.outputs and x not in g.constants:
            for dq in readers:
                if dq.outputs[0] in g.outputs:
                    target = dq.outputs[0]
                    break
        if target != x:
            rename[x] = target
            if x in g.fixed_qparams:
                g.fixed_qparams[target] = g.fixed_qparams.pop(x)
        prev = g.fixed_qparams.get(target)
        if prev is not None and prev != (s, z):
            warnings.warn(f"{where}: value {target!r} is quantized twice with different parameters "
                          f"({prev} and {(s, z)}); keeping the first", stacklevel=3)
        else:
            g.fixed_qparams[target] = (s, z)
        for dq in readers:
            o = dq.outputs[0]
            if o != target:
                if o in g.outputs:
                    extra_outputs.append((target, o))
                else:
                    rename[o] = target
            remove.add(id(dq))
        remove.add(id(qn))
        if z == -128:
            lower_bound_zero.append(target)

    left = [n for n in g.nodes if n.op in _QDQ_OPS and id(n) not in remove]
    if left:
        bad = {}
        for n in left:
            bad.setdefault(f"{n.op} (not part of a Q->DQ pair or a constant weight)", []).append(n.name)
        raise UnsupportedOpsError(bad, where)
    g.nodes = [n for n in g.nodes if id(n) not in remove]
    for n in g.nodes:
        n.inputs = [res(i) if i else i for i in n.inputs]
        n.outputs = [res(o) if o else o for o in n.outputs]
    _restore_fused_relus(g, lower_bound_zero)
    for src, o in extra_outputs:
        # a graph output that would collapse onto a graph input or another output: keep it a
        # value of its own
        g.nodes.append(Node("Identity", [res(src)], [o], {}, f"qdq_output_{o}"))
        if res(src) in g.fixed_qparams:
            g.fixed_qparams[o] = g.fixed_qparams[res(src)]
    # the integer tensors the Q/DQ read are not constants of the float graph any more
    used = {i for n in g.nodes for i in n.inputs} | set(g.outputs)
    for name in list(g.constants):  # Q/DQ parameters, raw integer weights, ...
        if name not in used and (name in int_consts or name in dropped_inputs):
            g.constants.pop(name, None)
    for name in list(g.constants):
        a = g.constants[name]
        if a.dtype.kind in "iu" and a.dtype != np.int64:
            g.constants[name] = a.astype(np.int64)


# ops whose output is >= 0 for any input, and ops whose output is >= 0 when their data
# inputs are
_NONNEG_OPS = {"Relu", "Sigmoid", "Softmax", "HardSigmoid", "Abs", "Exp", "Sqrt", "Softplus"}
_NONNEG_IF_INPUTS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Reshape", "Flatten",
                     "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather", "Identity", "Dropout",
                     "Resize", "Expand", "Split", "ReduceMean", "ReduceMax", "ReduceMin", "Tile",
                     "Max", "Mul", "Add", "Concat"}


def _nonnegative(g, name, producers, memo):
    if name in memo:
        return memo[name]
    memo[name] = False  # guards against cycles
    if name in g.constants:
        a = np.asarray(g.constants[name])
        r = a.dtype.kind in "iuf" and bool(np.all(a >= 0))
    elif name in g.inputs or name not in producers:
        r = False
    else:
        p = producers[name]
        if p.op in _NONNEG_OPS:
            r = True
        elif p.op == "Clip":
            lo = p.inputs[1] if len(p.inputs) > 1 else ""
            lo_val = g.constants.get(lo) if lo else p.attrs.get("min")
            r = lo_val is not None and float(np.asarray(lo_val).reshape(-1)[0]) >= 0
        elif p.op in ("Concat", "Max", "Add", "Mul"):
            r = all(_nonnegative(g, i, producers, memo) for i in p.inputs if i)
        elif p.op == "Pad":
            r = _nonnegative(g, p.inputs[0], producers, memo)
            mode = p.attrs.get("mode", "constant")
            if r and mode == "constant" and len(p.inputs) > 2 and p.inputs[2]:
                r = _nonnegative(g, p.inputs[2], producers, memo)
        elif p.op in _NONNEG_IF_INPUTS:
            r = _nonnegative(g, p.inputs[0], producers, memo)
        else:
            r = False
    memo[name] = r
    return r


def _restore_fused_relus(g, names):
    """ONNX Runtime's QDQ quantizer deletes a Relu / Clip before a QuantizeLinear whose range
    starts at 0: the Q clamps instead. With the Q/DQ pair gone the float graph needs that clamp
    back: a value whose range starts at 0 and that is not provably >= 0 gets a Relu (the
    producer writes `name__prerelu`, the Relu writes `name`, which keeps its qparams)."""
    if not names:
        return
    producers = g.producers()
    memo = {}
    for name in names:
        p = producers.get(name)
        if p is None or _nonnegative(g, name, producers, memo):
            continue
        pre = g.fresh(name + "__prerelu")
        p.outputs = [pre if o == name else o for o in p.outputs]
        relu = Node("Relu", [pre], [name], {}, f"{p.name}_qdq_relu")
        g.nodes.insert(g.nodes.index(p) + 1, relu)
        producers[name] = relu
        producers[pre] = p
        memo[name] = True


# --------------------------------------------------------------------------- QOperator

def _value_names(g) -> set:
    return set(g.inputs) | set(g.outputs) | set(g.constants) | {v for n in g.nodes for v in n.inputs + n.outputs}


def _float_name(g, v, used: set) -> str:
    """A new name for the float form of quantized value v: ORT calls the quantized form of
    `name` `name_quantized`, so `name` when free."""
    base = v[:-len("_quantized")] if v.endswith("_quantized") else v + "_float"
    name = g.fresh(base) if base in used else base
    used.add(name)
    return name


def _resolve_dynamic(g, where):
    """ONNX Runtime's dynamic quantization back to the float op it came from:
        DynamicQuantizeLinear(x) -> q, s, z;  MatMulInteger | ConvInteger(q, W, z, W_zp) -> Cast(float)
        -> Mul by Mul(s, W_scale) -> y
    becomes y = MatMul | Conv(x, DequantizeLinear(W, W_scale, W_zp)). The weight keeps its scales;
    x gets no fixed parameters (ORT computed them per run), so the user's scheme decides."""
    consumers, producers, used = g.consumers(), g.producers(), _value_names(g)
    drop, put = set(), {}  # ids of removed nodes; id of a final Mul -> the nodes replacing it

    def only(name, op):
        r = consumers.get(name, [])
        return r[0] if len(r) == 1 and r[0].op == op and name not in g.outputs else None

    for d in [n for n in g.nodes if n.op == "DynamicQuantizeLinear"]:
        x, (q, s, z) = (d.inputs + [""])[0], (d.outputs + ["", "", ""])[:3]
        for m in consumers.get(q, []):
            cast = only(m.outputs[0], "Cast") if m.outputs else None
            mul = only(cast.outputs[0], "Mul") if cast and cast.attrs.get("to") == 1 else None
            sc = producers.get(next((i for i in mul.inputs if i != cast.outputs[0]), "")) if mul else None
            ws = [i for i in sc.inputs if i != s] if sc and sc.op == "Mul" and s in sc.inputs else []
            if not (x and m.op in ("MatMulInteger", "ConvInteger") and m.inputs[0] == q and m.inputs[2:3] == [z]
                    and m.inputs[1] in g.constants and len(ws) == 1 and ws[0] in g.constants):
                raise UnsupportedOpsError({f"{m.op} (reading DynamicQuantizeLinear {d.name!r}, not in ONNX "
                                           "Runtime's dynamic quantization pattern)": [m.name]}, where)
            conv = m.op == "ConvInteger"
            w = _float_name(g, m.inputs[1], used)
            put[id(mul)] = [Node("DequantizeLinear", [m.inputs[1], ws[0]] + m.inputs[3:4], [w],
                                 {"axis": 0 if conv else -1}, m.name + "/dq"),
                            Node("Conv" if conv else "MatMul", [x, w], mul.outputs,
                                 m.attrs if conv else {}, m.name)]
            drop |= {id(m), id(cast), id(mul), id(sc)}
        drop.add(id(d))
    left = {}
    for n in g.nodes:
        if n.op in _DYNAMIC_OPS and id(n) not in drop:
            left.setdefault(f"{n.op} (not in ONNX Runtime's dynamic quantization pattern)", []).append(n.name)
    if left:
        raise UnsupportedOpsError(left, where)
    gone = {o for n in g.nodes if id(n) in drop for o in n.outputs} - {o for ns in put.values() for o in ns[1].outputs}
    g.nodes = [k for n in g.nodes for k in put.get(id(n), [] if id(n) in drop else [n])]
    for n in g.nodes:
        for i in n.inputs:
            if i in gone:  # e.g. a scale product or a zero point another node reads too
                raise ConversionError(f"{where}: node {n.name!r} ({n.op}) reads {i!r}, a value of ONNX Runtime's "
                                      "dynamic quantization pattern that the import removes")


def _recurrent_weight(g, node, q_name, s_name, z_name, d, rows, where, what):
    """Float [D, rows, K] of DynamicQuantizeLSTM's int8 [D, K, rows] weight (ONNX Runtime keeps it
    transposed: W [D, I, 4H], R [D, H, 4H]) and its scales: 1 (per tensor), D (per direction) or
    D * rows (per direction and gate row, [D, 4H]); zero points likewise, int8 or uint8."""
    for name, label in ((q_name, what), (s_name, what + "_scale")):
        if not name or name not in g.constants:
            raise UnsupportedOpsError({f"{node.op} ({label} not a constant)": [node.name]}, where)
    q = np.asarray(g.constants[q_name])
    if q.dtype.name not in _INT8_LIKE or q.ndim != 3 or q.shape[0] != d or q.shape[2] != rows:
        raise ConversionError(f"{where}: {node.op} node {node.name!r}: {what} {q_name!r} is {q.dtype.name} "
                              f"{q.shape}; expected int8 or uint8 [{d}, K, {rows}]")
    s = np.asarray(g.constants[s_name], np.float64).reshape(-1)
    if z_name and z_name not in g.constants:
        raise UnsupportedOpsError({f"{node.op} ({what}_zero_point not a constant)": [node.name]}, where)
    z = np.asarray(g.constants[z_name], np.float64).reshape(-1) if z_name else np.zeros(1)

    def per(a, label):  # broadcastable against q [D, K, rows]
        if a.size == 1:
            return a.reshape(1, 1, 1)
        if a.size == d:
            return a.reshape(d, 1, 1)
        if a.size == d * rows:
            return a.reshape(d, 1, rows)
        raise ConversionError(f"{where}: {node.op} node {node.name!r}: {a.size} {label} values fit neither one per "
                              f"tensor, {d} per direction nor {d * rows} per row of {what}")
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ConversionError(f"{where}: {node.op} node {node.name!r}: {what}_scale has values <= 0 or not finite")
    w = ((q.astype(np.float64) - per(z, "zero point")) * per(s, "scale")).astype(np.float32)
    w = np.ascontiguousarray(w.transpose(0, 2, 1))  # ONNX LSTM's [D, 4H, K]
    # the scales for the lowering where one axis carries them (weight_qparams: flat scales and
    # the axis of the [D, 4H, K] constant); per-row scales of two directions have no such axis
    qp = None
    if np.abs(q.astype(np.int64) - per(z, "zero point")).max(initial=0) > 127:
        pass  # asymmetric weights beyond [-127, 127] around their zero point: not qrt's grid
    elif s.size == 1 or (s.size == d and d > 1):
        qp = (s.astype(np.float32), 0)
    elif d == 1:
        qp = (s.astype(np.float32), 1)
    return w, qp


def _resolve_dynamic_recurrent(g, where):
    """ONNX Runtime's DynamicQuantizeLSTM (com.microsoft: X, W, R, B, sequence_lens, initial_h,
    initial_c, P, W_scale, W_zero_point, R_scale, R_zero_point; the LSTM's attributes but layout,
    which is always 0) -> the ONNX LSTM it was made from, W and R dequantized and transposed back
    to [D, 4H, I] / [D, 4H, H], their scales in weight_qparams. ORT quantizes X and the hidden
    state per run (uint8, from their min / max): like _resolve_dynamic, no fixed activation
    parameters; the user's scheme decides."""
    nodes = [n for n in g.nodes if n.op in _DYNAMIC_RECURRENT]
    if not nodes:
        return
    used, consumed = _value_names(g), set()
    for n in nodes:
        ins = list(n.inputs) + [""] * (12 - len(n.inputs))
        if len(n.inputs) > 12:
            raise ConversionError(f"{where}: {n.op} node {n.name!r} has {len(n.inputs)} inputs; at most 12")
        hidden = n.attrs.get("hidden_size")
        if not hidden:
            raise ConversionError(f"{where}: {n.op} node {n.name!r} has no hidden_size")
        d = 2 if n.attrs.get("direction", "forward") == "bidirectional" else 1
        floats = []
        for k, (q, s, z, what) in enumerate(((ins[1], ins[8], ins[9], "W"), (ins[2], ins[10], ins[11], "R"))):
            w, qp = _recurrent_weight(g, n, q, s, z, d, 4 * int(hidden), where, what)
            if k == 1 and w.shape[2] != hidden:
                raise ConversionError(f"{where}: {n.op} node {n.name!r}: R is [D, {w.shape[2]}, 4H]; "
                                      f"hidden_size is {hidden}")
            name = _float_name(g, q, used)
            g.constants[name] = w
            if qp is not None:
                g.weight_qparams[name] = qp
            floats.append(name)
            consumed |= {q, s, z} - {""}
        lstm_ins = [ins[0]] + floats + ins[3:8]
        while lstm_ins and not lstm_ins[-1]:
            lstm_ins.pop()
        n.op, n.inputs = _DYNAMIC_RECURRENT[n.op], lstm_ins
        n.attrs = {k: v for k, v in n.attrs.items() if k != "layout"}
    read = {i for m in g.nodes for i in m.inputs} | set(g.outputs)
    for name in consumed - read:  # the int8 weights, scales and zero points
        g.constants.pop(name, None)


def _rewrite_qoperators(g, where):
    """QOperator nodes -> their float op between DequantizeLinear and QuantizeLinear nodes, the
    QDQ form _resolve_qdq reads (see the module docstring)."""
    if not any(n.op in _QOP_OPS for n in g.nodes):
        return
    _resolve_dynamic_recurrent(g, where)
    _resolve_dynamic(g, where)
    used = _value_names(g)

    def float_name(v):
        return _float_name(g, v, used)

    out, made, quantized = [], {}, {}  # new node list; (x, scale, zp, axis) -> DQ output; value -> (scale, zp)

    def deq(x, s, z, label, axis=1):
        key = (x, s, z, axis)
        if key not in made:
            made[key] = float_name(x)
            out.append(Node("DequantizeLinear", [x, s, z], [made[key]], {"axis": axis}, label))
        return made[key]

    def requant(n, s, z):  # n writes float values; Q gives the original (quantized) names
        names, n.outputs = n.outputs, [float_name(o) if o else o for o in n.outputs]
        out.append(n)
        for f, o in zip(n.outputs, names):
            if o:
                out.append(Node("QuantizeLinear", [f, s, z], [o], {}, f"{n.name}/q"))
                quantized[o] = (s, z)

    for n in g.nodes:
        spec = _QLINEAR.get(n.op)
        x = n.inputs[0] if n.inputs else ""
        if spec is None and n.op in _MOVE_OPS and x in quantized:
            s, z = quantized[x]
            n.inputs = [deq(x, s, z, f"{n.name}/dq")] + n.inputs[1:]
            if n.op == "Pad" and len(n.inputs) > 2 and n.inputs[2] in g.constants and s in g.constants:
                # its uint8 pad value (ORT's QPad: the quantized pad value, or the zero point)
                v = g.fresh(n.inputs[2])
                g.constants[v] = _dequantize(g.constants[n.inputs[2]], g.constants[s],
                                             g.constants.get(z) if z else None, 0)
                n.inputs[2] = v
            requant(n, s, z)
            continue
        if spec is None:
            if n.op == "QuantizeLinear" and n.outputs:
                quantized[n.outputs[0]] = (n.inputs[1] if len(n.inputs) > 1 else "", (n.inputs + ["", ""])[2])
            out.append(n)
            continue
        fop, operands, y, bias = spec
        ins = n.inputs + [""] * 9
        if operands is None:  # QLinearConcat
            operands = tuple(range(2, max(len(n.inputs), 3), 3))
        need = [(p, f"operand {k}") for k, p in enumerate(operands)] + \
               [(p + 1, f"scale of operand {k}") for k, p in enumerate(operands)] + \
               ([] if n.op == "QGemm" else [(y, "output scale")])
        for p, what in need:
            if not ins[p]:
                raise ConversionError(f"{where}: {n.op} node {n.name!r} lacks input {p} (the {what})")
        attrs = dict(n.attrs)
        if attrs.pop("channels_last", 0):
            raise UnsupportedOpsError({f"{n.op} (channels_last)": [n.name]}, where)
        if attrs.pop("opset", 13) < 13 and attrs.get("axis", 1) != -1:  # Softmax before opset 13: 2-D
            raise UnsupportedOpsError({f"{n.op} (opset < 13 softmax axis)": [n.name]}, where)
        # weights: per output channel along the axis the float op's weight has it
        axis = {"Conv": 0, "MatMul": -1, "Gemm": 0 if attrs.get("transB", 0) else 1}.get(fop, 1)
        fins = [deq(ins[p], ins[p + 1], ins[p + 2], f"{n.name}/dq{k}", axis if k == 1 else 1)
                for k, p in enumerate(operands)]
        if bias is not None and ins[bias]:  # int32, scale x_scale * w_scale (* alpha), zero point 0
            scales = [ins[bias], ins[operands[0] + 1], ins[operands[1] + 1]]
            if any(c not in g.constants for c in scales):
                raise UnsupportedOpsError({f"{n.op} (bias or scales not constants)": [n.name]}, where)
            b, sx, sw = (np.asarray(g.constants[c], np.float64) for c in scales)
            if sx.size != 1 or sw.size not in (1, b.shape[-1] if b.ndim else 1):
                raise ConversionError(f"{where}: {n.op} node {n.name!r}: bias {b.shape} does not fit the scales "
                                      f"{sx.shape} and {sw.shape}")
            fins.append(float_name(ins[bias]))
            g.constants[fins[-1]] = (b * sx.reshape(()) * sw.reshape(-1) * attrs.get("alpha", 1.0)).astype(np.float32)
        f = Node(fop, fins, list(n.outputs), attrs, n.name)
        if ins[y]:
            requant(f, ins[y], ins[y + 1])
        else:  # QGemm without y_scale: float output
            out.append(f)
    g.nodes = out


# --------------------------------------------------------------------------- entry point

def _read_nodes(gp, constants: dict, onnx, where, keep_int_of, int_consts) -> list:
    """The nodes of graph proto gp (Constant nodes into `constants`); an If's branches become
    Graphs (their own constants, nodes and outputs) in its attrs."""
    nodes = []
    for i, n in enumerate(gp.node):
        label = n.name or f"{n.op_type}_{i}"
        ctx = f"{where}: node {label!r}"
        if n.op_type == "If" and n.domain in _DEFAULT_DOMAINS:
            attrs = {}
            for a in n.attribute:
                branch = Graph(name=f"{label}.{a.name}")
                for init in a.g.initializer:
                    branch.constants[init.name] = _to_numpy(init, onnx, ctx)
                branch.nodes = _read_nodes(a.g, branch.constants, onnx, ctx, keep_int_of, int_consts)
                branch.outputs = [o.name for o in a.g.output]
                attrs[a.name] = branch
            # inputs: the condition, then the outer values the branches read (so that ordering
            # and dead-code removal see them)
            captured = sorted(set().union(*(_outer_reads(b) for b in attrs.values())) - {n.input[0]})
            nodes.append(Node(n.op_type, [n.input[0]] + captured, list(n.output), attrs, label))
            continue
        attrs = {a.name: _attr_value(a, onnx, ctx) for a in n.attribute}
        if n.op_type == "Constant" and n.domain in _DEFAULT_DOMAINS:
            name = n.output[0]
            keep = name in keep_int_of
            if "value" in attrs:
                a = attrs["value"]
                if keep:
                    a = _to_numpy(next(x for x in n.attribute if x.name == "value").t, onnx, ctx, keep_int=True)
                    int_consts.add(name)
            elif "value_float" in attrs or "value_floats" in attrs:
                a = np.asarray(attrs.get("value_float", attrs.get("value_floats")), dtype=np.float32)
            elif "value_int" in attrs or "value_ints" in attrs:
                a = np.asarray(attrs.get("value_int", attrs.get("value_ints")), dtype=np.int64)
            else:
                raise ConversionError(f"{ctx}: Constant with unsupported value attribute {sorted(attrs)}")
            constants[name] = a
            continue
        nodes.append(Node(n.op_type, list(n.input), list(n.output), attrs, label))
    return nodes


def _outer_reads(branch: Graph) -> set:
    """Names a branch reads from the enclosing graph (its nodes' inputs and its outputs that it
    neither computes nor holds as constants)."""
    local = set(branch.constants) | {o for n in branch.nodes for o in n.outputs}
    reads = {i for n in branch.nodes for i in n.inputs if i} | set(branch.outputs)
    return reads - local


def _upgrade_opset(model, onnx, where, notes: list):
    """The model at TARGET_OPSET when its default-domain opset is older than MIN_OPSET."""
    opset = None
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            opset = int(imp.version)
    if opset is None:
        raise ConversionError(f"{where}: the model imports no default-domain opset")
    if opset >= MIN_OPSET:
        return model
    from onnx import version_converter
    resizes = sum(n.op_type in ("Upsample", "Resize") and n.domain in _DEFAULT_DOMAINS for n in model.graph.node)
    try:
        upgraded = version_converter.convert_version(model, TARGET_OPSET)
    except Exception as e:  # the converter's adapters do not cover every op and version
        raise ConversionError(
            f"{where}: opset {opset} is older than {MIN_OPSET} and onnx's version converter could not upgrade it "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Re-export the model with a newer "
            f"opset (torch.onnx.export(..., opset_version=17)).") from e
    notes.append(f"opset {opset} upgraded to {TARGET_OPSET} (onnx.version_converter)")
    if opset <= 10 and resizes:
        _old_resize_sampling(upgraded, onnx)
    return upgraded


def _old_resize_sampling(model, onnx):
    """Upsample and Resize before opset 11 sample at x_out / scale and round down (nearest, ONNX
    Runtime's mode for them); the version converter leaves Resize 11's defaults (half_pixel,
    round_prefer_floor), which would move every pixel, so the upgraded nodes get them back."""
    for n in model.graph.node:
        if n.op_type == "Resize" and n.domain in _DEFAULT_DOMAINS:
            have = {a.name for a in n.attribute}
            for name, value in (("coordinate_transformation_mode", "asymmetric"), ("nearest_mode", "floor")):
                if name not in have:
                    n.attribute.append(onnx.helper.make_attribute(name, value))


def _frozen_value(vi, value, onnx, where):
    """freeze's value for graph input vi, as the input's dtype and shape (a scalar fills it)."""
    t = vi.type.tensor_type
    elem = t.elem_type
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
        a = np.asarray(value, dtype=dtype)
    except Exception as e:
        raise ConversionError(f"{where}: freeze value for input {vi.name!r} cannot be read as "
                              f"{onnx.TensorProto.DataType.Name(elem)} ({e})") from None
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim] \
        if t.HasField("shape") else None
    if dims is not None and None not in dims:
        if a.size == 1:
            a = np.full(dims, a.reshape(-1)[0], dtype)
        elif a.size == int(np.prod(dims)):
            a = a.reshape(dims)
        else:
            raise ConversionError(f"{where}: freeze value for input {vi.name!r} has {a.size} elements; the input "
                                  f"has shape {dims}")
    return _normalize(a)


def read_onnx(source, input_shapes: dict | None = None, also_supported=None, freeze: dict | None = None) -> Graph:
    """Read an ONNX model (a path or an onnx.ModelProto) into the float IR.

    input_shapes gives named inputs their shape: the size of a dynamic batch, the maximum of the
    other dynamic dimensions (Graph.symbols records them). also_supported(op_type) -> bool lets a caller
    refuse more op types in the same error (the converter: ops with no int8 form). freeze:
    {input name: value} makes those inputs constants (a scalar fills the input's shape), so
    that control flow and shapes depending on them fold away."""
    try:
        import onnx
    except ImportError as e:  # pragma: no cover
        raise ConversionError("reading ONNX models needs the onnx package (pip install 'qrt[convert]')") from e

    where = _describe(source)
    model = _load(source, onnx)
    notes = []
    model = _upgrade_opset(model, onnx, where, notes)

    if model.functions:
        try:
            from onnx import inliner
            model = inliner.inline_local_functions(model)
        except Exception as e:
            raise ConversionError(f"{where}: its local functions cannot be inlined ({type(e).__name__}: {e})") from e

    _check_ops(model, where, also_supported)

    graph = model.graph
    g = Graph(name=graph.name or os.path.splitext(os.path.basename(where))[0], notes=notes)

    # names a DequantizeLinear (or a QOperator node) reads as data: keep their integer type until
    # QDQ is resolved
    dq_data = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input}
    dq_data |= {i for n in graph.node if n.op_type in _QOP_OPS for i in n.input if i}
    qdq_params = {i for n in graph.node if n.op_type in _QDQ_OPS for i in list(n.input)[1:] if i}
    int_consts = set()

    for init in graph.initializer:
        keep = init.name in dq_data or init.name in qdq_params
        a = _to_numpy(init, onnx, where, keep_int=keep)
        g.constants[init.name] = a
        if keep and a.dtype.kind in "iu":
            int_consts.add(init.name)
    if graph.sparse_initializer:
        raise ConversionError(f"{where}: sparse initializers are not supported")

    nodes = _read_nodes(graph, g.constants, onnx, where, dq_data | qdq_params, int_consts)

    freeze = dict(freeze or {})
    for vi in graph.input:
        if vi.name in freeze:  # an input with an initializer (its default) is overridden too
            g.constants[vi.name] = _frozen_value(vi, freeze.pop(vi.name), onnx, where)
            g.notes.append(f"input {vi.name!r} frozen to {np.array2string(g.constants[vi.name], threshold=6)}")
    if freeze:
        names = [vi.name for vi in graph.input if vi.name not in g.constants]
        raise ConversionError(f"{where}: freeze names {sorted(freeze)}, which are not inputs (inputs: {names})")
    const_names = set(g.constants)
    input_shapes = dict(input_shapes or {})
    for vi in graph.input:
        if vi.name in const_names:
            continue
        if vi.name in input_shapes:  # a maximum for the dynamic dimensions, a size for the batch
            shape = [int(d) for d in input_shapes.pop(vi.name)]
            elem = vi.type.tensor_type.elem_type
            if any(d < 1 for d in shape):
                raise ConversionError(f"{where}: the shape given for input {vi.name!r}, {tuple(shape)}, must be positive")
            if vi.type.tensor_type.HasField("shape"):
                symbols = _symbolic_dims(vi, shape, where)
                if symbols:
                    g.symbols[vi.name] = symbols
        else:
            shape, elem = _static_shape(vi, where)
        if elem in (6, 7):  # INT32, INT64: ids, masks, byte tokens, passed through as they are
            g.dtypes[vi.name] = np.dtype(np.int32 if elem == 6 else np.int64)
        elif elem not in (1, 10, 11, 16):
            raise ConversionError(f"{where}: input {vi.name!r} has element type "
                                  f"{onnx.TensorProto.DataType.Name(elem)}; only float, int32 and int64 inputs are "
                                  f"supported. If it is constant in practice (a sample rate, a flag), freeze it: "
                                  f"--freeze {vi.name}=VALUE (qrt.convert(..., freeze={{{vi.name!r}: VALUE}}))")
        g.inputs.append(vi.name)
        g.shapes[vi.name] = tuple(shape)
    if input_shapes:
        raise ConversionError(f"{where}: input_shapes names {sorted(input_shapes)}, which are not inputs "
                              f"(inputs: {g.inputs})")
    if not g.inputs:
        raise ConversionError(f"{where}: the model has no (non-constant) inputs")
    g.outputs = [o.name for o in graph.output]
    if not g.outputs:
        raise ConversionError(f"{where}: the model has no outputs")

    g.nodes = _topo_sort(nodes, set(g.inputs) | const_names, where)
    _rewrite_qoperators(g, where)
    _resolve_qdq(g, where, int_consts)
    produced = set(g.inputs) | set(g.constants) | {o for n in g.nodes for o in n.outputs}
    for o in g.outputs:
        if o not in produced:
            raise ConversionError(f"{where}: graph output {o!r} is not produced by any node")
    return g
