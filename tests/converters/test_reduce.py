"""ReduceSum, ReduceMax, ReduceMin, ReduceL2 and ReduceSumSquare converted to REDUCE (SPEC.md
2.13.25) end to end: the ONNX backend node cases of these ops that apply (their shapes and data:
keepdims, do_not_keepdims, default_axes_keepdims, negative_axes_keepdims, ReduceSum's
empty_axes_input_noop; axes as an attribute before opset 13 / 18 and as a constant input since),
calibrated on their own input, run int8 and int16 against ONNX Runtime. Not applicable: the
empty_set cases (the format has no empty dimensions), bool and integer inputs (activations are
real), axes computed at run time (refused as unsupported)."""
from __future__ import annotations

import numpy as np
import pytest

import qrt
from qrt.converters.errors import UnsupportedOpsError
from qrt.format import OpCode, ReduceFunction
from qrt.ops import op_form
from tests.converters.test_ir_passes import _op_case, _ort_run

SHAPE = (3, 2, 2)
EXAMPLE = {  # the node cases' example data
    "ReduceSum": np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]], [[9, 10], [11, 12]]], np.float32),
    "ReduceMax": np.array([[[5, 1], [20, 2]], [[30, 1], [40, 2]], [[55, 1], [60, 2]]], np.float32),
    "ReduceL2": np.arange(1, 13, dtype=np.float32).reshape(SHAPE),
}
EXAMPLE["ReduceMin"] = EXAMPLE["ReduceMax"]
EXAMPLE["ReduceSumSquare"] = EXAMPLE["ReduceSum"]
OPS = {"ReduceSum": ReduceFunction.SUM, "ReduceMax": ReduceFunction.MAX, "ReduceMin": ReduceFunction.MIN,
       "ReduceL2": ReduceFunction.L2, "ReduceSumSquare": ReduceFunction.SUM_SQUARE}
CASES = {  # name: (attributes, axes input or None); the node cases' axes
    "do_not_keepdims": (dict(keepdims=0), [1]),
    "keepdims": (dict(keepdims=1), [1]),
    "default_axes_keepdims": (dict(keepdims=1), None),
    "negative_axes_keepdims": (dict(keepdims=1), [-2]),
}


def _case(op, attrs, axes, opset):
    """The node with its axes as the opset has them: an attribute before ReduceSum's opset 13 and
    the others' 18, else a constant input."""
    attrs = dict(attrs)
    if axes is not None and opset < (13 if op == "ReduceSum" else 18):
        return _op_case(op, {"x": EXAMPLE[op]}, dict(attrs, axes=axes), None, opset)
    consts = None if axes is None else {"axes": np.array(axes, np.int64)}
    return _op_case(op, {"x": EXAMPLE[op]}, attrs, consts, opset)


def _convert_and_compare(model, x, tmp_path, activations, tolerance):
    """Convert (calibrated on x and a random sample), run on x and on the random data, compare
    with ONNX Runtime: the error within `tolerance` of the output's calibrated range."""
    rng = np.random.default_rng(0)
    other = rng.uniform(-10, 10, x.shape).astype(np.float32)  # as the node cases' *_random data
    path = tmp_path / "m.qmodel"
    report = qrt.convert(model, [x, other], path, method="minmax", show_progress=False, activations=activations,
                         holdout=0.0)
    m = qrt.load(path)
    want = [_ort_run(model, {"x": data})["y0"] for data in (x, other)]
    peak = max(float(np.abs(w).max()) for w in want)
    for data, w in zip((x, other), want):
        got = m.run(data)
        assert got.shape == w.shape
        assert np.abs(got - w).max() <= tolerance * peak, (got, w, report.qrt_ops)
    return qrt.read_model(path)


@pytest.mark.parametrize("activations,tolerance", [("int8", 0.03), ("int16", 0.002)])
@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("op", list(OPS))
def test_node_cases(op, case, opset, activations, tolerance, tmp_path):
    attrs, axes = CASES[case]
    if op == "ReduceSumSquare":  # int8 in either scheme (below)
        tolerance = 0.03
    model = _convert_and_compare(_case(op, attrs, axes, opset), EXAMPLE[op], tmp_path, activations, tolerance)
    (index,) = [i for i, o in enumerate(model.operators) if o.opcode == OpCode.REDUCE]
    op_ = model.operators[index]
    assert op_.options.function == OPS[op]
    # ReduceSumSquare has no int16 form: the sum of int16 squares overflows int32
    assert op_form(model, index).name == ("int8" if op == "ReduceSumSquare" else activations)
    assert model.min_runtime_version == "0.3.0"


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceL2", "ReduceSumSquare", "ReduceMax"])
def test_noop_with_empty_axes(op, tmp_path):
    """Empty axes with noop_with_empty_axes reduce nothing: REDUCE over no axis (ReduceL2 is |x|,
    ReduceSumSquare x^2, ReduceSum and ReduceMax x)."""
    x = (EXAMPLE["ReduceSum"] - 6.5).astype(np.float32)
    model = _op_case(op, {"x": x}, dict(noop_with_empty_axes=1), {"axes": np.zeros(0, np.int64)}, 18)
    qm = _convert_and_compare(model, x, tmp_path, "int8", 0.03)
    assert [o.options.axes for o in qm.operators if o.opcode == OpCode.REDUCE] == [()]


def test_activation_fuses_into_sum_not_into_max(tmp_path):
    """A Relu after ReduceSum becomes REDUCE's fused activation; ReduceMax keeps its input's
    quantization, so the Relu after it stays an op of its own."""
    from onnx import TensorProto, helper, numpy_helper

    x = EXAMPLE["ReduceSum"] - 6.5
    for op, fused in (("ReduceSum", True), ("ReduceMax", False)):
        nodes = [helper.make_node(op, ["x", "axes"], ["r"], keepdims=0), helper.make_node("Relu", ["r"], ["y0"])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                                  [helper.make_tensor_value_info("y0", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(np.array([2], np.int64), "axes")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
        qm = _convert_and_compare(model, x, tmp_path, "int8", 0.03)
        reduce = next(o for o in qm.operators if o.opcode == OpCode.REDUCE)
        assert (reduce.activation.name == "RELU") == fused
        assert (OpCode.REQUANTIZE in [o.opcode for o in qm.operators]) != fused


def test_axes_computed_at_run_time_are_refused(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("ReduceSum", ["x", "axes"], ["y0"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE),
                                            helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y0", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    with pytest.raises(UnsupportedOpsError, match="ReduceSum"):
        qrt.convert(model, [{"x": EXAMPLE["ReduceSum"], "axes": np.array([1], np.int64)}], tmp_path / "m.qmodel",
                    method="minmax", show_progress=False)
