"""ONNX backend conformance of `qrt convert` and the runtime for the ops of transformer encoders
and the CNNs around them: every backend test case of these ops is converted (calibrated on the
case's own inputs), run on those inputs and compared with the case's expected outputs, in three
schemes: float islands (mode "float", float32 kernels), int16 activations and the default int8.

Cases: onnx's node test cases (onnx.backend.test.case.node; the onnx wheel does not ship their
serialized form, backend/test/data/node, so they are built in memory by the code that writes
it, which seeds NumPy before each) including their `_expanded` forms (the op's function body,
as older exporters write it), and the pytorch-converted cases the wheel does ship as files
(backend/test/data/pytorch-converted: the only 1-D convolutions, zero padding and embeddings).

The node cases feed every input as a graph input; those that are constants in a real model
(weights, axes, shapes, starts, pads, bounds) are frozen (convert(freeze=...)), integer indices
stay graph inputs. FROZEN lists them per op, with variants where both kinds occur (MatMul of two
activations and by weights; Gather of an embedding table at run-time ids and of an activation at
constant indices; Add/Sub/Mul/Div of two activations and by a constant). LayerNormalization's
Mean and InvStdDev outputs (training statistics; exporters never ask for them) are dropped and Y
alone is compared. SKIPPED lists the cases not run, with why; GAPS the cases qrt gets wrong or
refuses although it should not (strict xfail: each turns green when fixed).

Bounds (calibration by min/max, so the ranges cover the data):
- float: rtol 1e-4, atol 1e-5 (float32 kernels, summing in another order than NumPy).
- int16: 4 steps of the int16 grid (peak / 32767, symmetric) of the widest float tensor of the
  case, input or output: ops that keep their input's quantization (pools, Gather of a table,
  ReduceMax, Slice) put the output on the input's grid, and an input's rounding error reaches the
  output of the others. Elementwise functions (a 513-entry interpolated table, SPEC.md 2.13.14):
  16 steps, the interpolation error at these inputs (h = 128 input steps, about 0.01: h^2 / 8
  |f''| up to 4e-4, 8 steps of sqrt's output near x = 0.05). Where the int16 scheme computes
  at int8 precision (INT8_PRECISION: the op has no int16 form, or int8 weights) the int8 bound.
- int8: 4 steps of the int8 grid (range including 0 / 255) of the widest float tensor: half a
  step from each of the input's and output's rounding, more where a sum or a table compounds.
"""
from __future__ import annotations

import copy
import fnmatch
import importlib
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import qrt

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

NODE_MODULES = (  # onnx.backend.test.case.node modules of the ops covered
    "layernormalization", "matmul", "gather", "reducesum", "reducemax", "reducemin", "reducel2", "reducemean",
    "reducesumsquare", "where", "expand", "softmax", "slice", "split", "squeeze", "unsqueeze", "transpose", "concat",
    "gelu", "erf", "exp", "sqrt", "tanh", "sigmoid", "max", "min", "add", "sub", "mul", "div", "conv", "maxpool",
    "averagepool", "batch_normalization", "reshape", "flatten", "pad", "relu", "clip", "leakyrelu", "prelu")
TORCH_CASES = ("test_Conv1d*", "test_Conv2d*", "test_AvgPool[12]d*", "test_MaxPool[12]d*", "test_BatchNorm[12]d*",
               "test_PReLU*", "test_ZeroPad2d", "test_Embedding*")  # in backend/test/data/pytorch-converted

OPS = {  # the op types covered (NODE_MODULES define cases of some others, as Identity)
    "LayerNormalization", "MatMul", "Gather", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceMean",
    "ReduceSumSquare", "Where", "Expand", "Softmax", "Slice", "Split", "Squeeze", "Unsqueeze", "Transpose",
    "Concat", "Gelu", "Erf", "Exp", "Sqrt", "Tanh", "Sigmoid", "Max", "Min", "Add", "Sub", "Mul", "Div", "Conv",
    "MaxPool", "AveragePool", "BatchNormalization", "Reshape", "Flatten", "Pad", "Relu", "Clip", "LeakyRelu",
    "PRelu"}
_AXES = {"": (1,)}
FROZEN = {  # op: {variant: positions of the inputs frozen}
    "LayerNormalization": {"": (1, 2)}, "BatchNormalization": {"": (1, 2, 3, 4)}, "Conv": {"": (1, 2)},
    "PRelu": {"": (1,)}, "Clip": {"": (1, 2)}, "Where": {"": (0,)}, "Slice": {"": (1, 2, 3, 4)},
    "ReduceSum": _AXES, "ReduceMax": _AXES, "ReduceMin": _AXES, "ReduceL2": _AXES, "ReduceMean": _AXES,
    "ReduceSumSquare": _AXES, "Expand": _AXES, "Reshape": _AXES, "Squeeze": _AXES, "Unsqueeze": _AXES, "Split": _AXES,
    "MatMul": {"act": (), "const": (1,)},
    "Gather": {"embedding": (0,), "select": (1,)},
    "Add": {"act": (), "const": (1,)}, "Sub": {"act": (), "const": (1,)}, "Mul": {"act": (), "const": (1,)},
    "Div": {"act": (), "const": (1,)},
    "Pad": {"value": (1, 2, 3), "zero": (1, 2, 3)},
}
# variants that also change a frozen input: (op, variant): {position: value}; a case has the
# variant when it has those inputs, and its expected outputs come from onnx.reference
CHANGED = {("Pad", "zero"): {2: 0.0}}  # the node cases pad with 1.2; qrt pads with zeros

SCHEMES = {"float": dict(mode="float"), "int16": dict(activations="int16"), "int8": {}}

_DTYPES = "bool, int8, int16, uint*, float16 or float64 data: qrt reads float32 data and int32/int64 indices"
_INT_DATA = "int32 / int64 data (not indices): qrt's activations are real numbers"
_EMPTY = "an empty tensor (a dimension of 0): the format has none"
_WHERE = ("Where on a computed condition (Less): qrt lowers Where only as an attention mask's select ahead "
          "of Softmax")
SKIPPED = {  # test id pattern (fnmatch on "<case>[-<variant>]-<scheme>"): why it is not run
    "test_*_bool*": _DTYPES, "test_*_int8*": _DTYPES, "test_*_int16*": _DTYPES, "test_*_uint*": _DTYPES,
    "test_*_float16*": _DTYPES, "test_*_float64*": _DTYPES,
    "test_*_int32*": _INT_DATA, "test_*_int64*": _INT_DATA, "test_where_long_example*": _INT_DATA,
    "test_edge_pad*": _INT_DATA + "; edge padding (qrt pads with zeros)",
    "test_reflect_pad*": _INT_DATA + "; reflect padding (qrt pads with zeros)",
    "test_wrap_pad*": _INT_DATA + "; wrap padding (qrt pads with zeros)",
    "test_reduce_*empty_set*": _EMPTY, "test_split_zero_size_splits*": _EMPTY,
    "test_reshape_allowzero_reordered*": _EMPTY, "test_slice_start_out_of_bounds*": _EMPTY + " (the output)",
    "test_where_example*": "Where selecting between two activations by a constant condition: qrt lowers Where "
                           "only as an attention mask's select ahead of Softmax (no backend case has that form)",
    "test_clip_*expanded*": _WHERE, "test_leakyrelu*expanded*": _WHERE, "test_prelu*expanded*": _WHERE,
    "test_div*-act-*": "division by an activation: qrt divides by constants",
    "test_*pad*-value-*": "constant_value 1.2: qrt pads with zeros (refused); see the -zero variant",
    "test_softmax_large_number*-int*": "inputs up to 10003 that differ by 1: one input step (0.31 in int16, "
                                       "39 in int8) is of the order of the differences softmax sees",
    "test_maxpool_3d*": "3-D pooling: the format's pools are 1-D and 2-D",
    "test_averagepool_3d*": "3-D pooling: the format's pools are 1-D and 2-D",
    "test_maxpool_2d_dilations*": "dilated pooling: the format's pools have no dilation",
    "test_averagepool_2d_dilations*": "dilated pooling: the format's pools have no dilation",
    "test_MaxPool*_stride_padding_dilation*": "dilated pooling: the format's pools have no dilation",
    "test_maxpool_with_argmax*": "the Indices output (argmax positions) has no qrt op; y is the same as the "
                                 "test_maxpool_2d_precomputed_* case's",
    "test_batchnorm_*training_mode*": "training mode (batch statistics, running-statistics outputs)",
}
_RANKS = "two activations of different ranks (x [3,4,5] op y [5]): refused (UnsupportedOpsError); a reshape"
_LN_AXIS = ("LayerNormalization over several trailing axes (axis != -1): refused (UnsupportedOpsError); "
            "LAYER_NORM of a [..., prod(normalized dims)] view")
GAPS = {  # test id pattern: what qrt does wrong (strict xfail)
    "test_layer_normalization_*expanded*": "Size of a static-shape tensor is not folded: UnsupportedOpsError Size",
    "test_layer_normalization_4d_axis[012]-*": _LN_AXIS, "test_layer_normalization_4d_axis_negative_[234]-*": _LN_AXIS,
    "test_layer_normalization_2d_axis0-*": _LN_AXIS, "test_layer_normalization_2d_axis_negative_2-*": _LN_AXIS,
    "test_layer_normalization_3d_axis[01]_epsilon-*": _LN_AXIS,
    "test_layer_normalization_3d_axis_negative_[23]_epsilon-*": _LN_AXIS,
    "test_reduce_l2_*expanded*": "CastLike(x, x) of a float is not folded away: UnsupportedOpsError CastLike",
    "test_gelu_*expanded*": "Sum (variadic add) has no lowering: UnsupportedOpsError Sum",
    "test_matmul_[34]d-const-*": "MatMul by a constant b of rank > 2: ValueError in _fully_connected (w.shape "
                                 "unpacked as 2-D) instead of a lowering or UnsupportedOpsError",
    "test_matmul_bcast-const-*": "MatMul by a constant b of rank > 2: ValueError in _fully_connected",
    "test_matmul_1d_3d-const-*": "MatMul by a constant b of rank > 2: ValueError in _fully_connected",
    "test_matmul_*_1d-const-*": "MatMul by a constant 1-D b: ValueError in _fully_connected",
    "test_matmul_*1d*-act-*": "MatMul of activations, one 1-D: refused (UnsupportedOpsError); a reshape to 2-D",
    "test_add_bcast-act-*": _RANKS, "test_sub_bcast-act-*": _RANKS, "test_mul_bcast-act-*": _RANKS,
    "test_reduce_mean_default_axes_*": "ReduceMean with an empty axes input (opset 18: every axis) is written as "
                                       "MEAN over no axes, which the verifier refuses (InvalidModelError at load)",
    "test_max_example*": "Max of 3 inputs: refused (UnsupportedOpsError); a chain of MAXIMUM",
    "test_max_one_input*": "Max of 1 input: refused (UnsupportedOpsError); the identity",
    "test_min_example*": "Min of 3 inputs: refused (UnsupportedOpsError); a chain of MINIMUM",
    "test_min_one_input*": "Min of 1 input: refused (UnsupportedOpsError); the identity",
    "test_constant_pad_*axes-zero-*": "Pad's axes input (opset 18) is ignored: PAD gets 4 pads for a rank-4 "
                                      "input and the file fails verification (InvalidModelError at load)",
    "test_clip_min_greater_than_max-*": "Clip with min > max (ONNX: every output = max) is written as a clamp "
                                        "the verifier refuses (InvalidModelError at load)",
    "test_clip_default_inbounds_expanded-*": "a graph whose output is its input (one Identity): refused as "
                                             "'unsupported op type Identity'",
    "test_PReLU_*_multiparam-*": "opset-6 PRelu's per-channel slope [C] is upgraded by onnx.version_converter "
                                 "without a reshape to [C, 1, ...]: the float run fails to broadcast",
    "test_exp-int16": "int16 LUT: the table entry past the output's calibrated maximum is clamped, so the "
                      "last segment interpolates towards it: 78 steps low at the input's maximum",
    "test_gelu_*_2-int16": "int16 LUT: the last segment interpolates towards a clamped entry (as test_exp): "
                           "37 steps low at the input's maximum",
}
INT8_PRECISION = {  # test id pattern: why the int16 scheme computes it at int8 precision
    "test_max_*": "Max has no int16 form", "test_min_*": "Min has no int16 form",
    "test_div*": "Div has no int16 form", "test_prelu*": "PRelu has no int16 form",
    "test_PReLU*": "PRelu has no int16 form", "test_leakyrelu*": "LeakyRelu has no int16 form",
    "test_relu_expanded*": "its Max(x, 0) has no int16 form",
    "test_reduce_sum_square_*": "ReduceSumSquare has no int16 form (int16 squares overflow int32 sums)",
    "test_*conv*": "int8 weights", "test_Conv*": "int8 weights", "test_matmul_*-const-*": "int8 weights",
}
LUT_OPS = ("test_exp*", "test_erf*", "test_gelu*", "test_sigmoid*", "test_tanh*", "test_sqrt*")
FLOAT_ATOL = {"test_averagepool_2d_ceil_last_window_starts_on_pad-*": 5e-5}  # expected written to 4 decimals


def _match(table, test_id):
    return next((v for k, v in table.items() if fnmatch.fnmatchcase(test_id, k)), None)


def _read_pb(path):
    t = onnx.TensorProto()
    t.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(t)


def _collect() -> dict:
    """case name -> (model, inputs, expected outputs, op): the node cases of NODE_MODULES (op: the
    node's type, an expanded case's its source node's) and the pytorch-converted TORCH_CASES (op
    None: their weights are initializers already)."""
    from onnx.backend.test.case import node
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for m in NODE_MODULES:  # defining a module's cases appends them to node._NodeTestCases
            importlib.import_module(f"{node.__name__}.{m}")
    found = {c.name: c for c in node._NodeTestCases}
    cases = {}
    for name, c in found.items():
        source = found.get(re.sub(r"_expanded.*", "", name))
        if source is not None and len(source.model.graph.node) == 1 and \
                source.model.graph.node[0].op_type in OPS:
            cases[name] = (c.model, *c.data_sets[0], source.model.graph.node[0].op_type)
    root = Path(onnx.__file__).parent / "backend" / "test" / "data" / "pytorch-converted"
    for d in sorted(p for pattern in TORCH_CASES for p in root.glob(pattern)):
        data = d / "test_data_set_0"
        cases[d.name] = (onnx.load(d / "model.onnx"), [_read_pb(p) for p in sorted(data.glob("input_*.pb"))],
                         [_read_pb(p) for p in sorted(data.glob("output_*.pb"))], None)
    return cases


CASES = _collect()


def _params():
    for name, (model, inputs, _, op) in CASES.items():
        for variant, frozen in FROZEN.get(op, {"": ()}).items():
            if any(p >= len(inputs) for p in CHANGED.get((op, variant), {})):
                continue
            for scheme in SCHEMES:
                test_id = "-".join(s for s in (name, variant, scheme) if s)
                marks = []
                if _match(SKIPPED, test_id):
                    marks.append(pytest.mark.skip(reason=_match(SKIPPED, test_id)))
                elif _match(GAPS, test_id):
                    marks.append(pytest.mark.xfail(strict=True, reason=_match(GAPS, test_id)))
                yield pytest.param(name, variant, scheme, id=test_id, marks=marks)


def _load(name, variant):
    """(model, feeds, freeze, expected outputs) of a case in a variant."""
    model, inputs, outputs, op = CASES[name]
    model = copy.deepcopy(model)
    g = model.graph
    if op == "LayerNormalization":  # Y only: Mean and InvStdDev are training statistics
        del g.output[1:]
        outputs = outputs[:1]
        if len(g.node) == 1:
            del g.node[0].output[1:]
    initialized = {t.name for t in g.initializer}
    names = [vi.name for vi in g.input if vi.name not in initialized]
    values = dict(zip(names, inputs))
    changed = CHANGED.get((op, variant), {})
    for p, v in changed.items():
        values[names[p]] = np.asarray(v, values[names[p]].dtype)
    if changed:
        from onnx.reference import ReferenceEvaluator
        outputs = ReferenceEvaluator(model).run(None, values)
    frozen = {names[p] for p in FROZEN.get(op, {}).get(variant, ()) if p < len(names)}
    feeds = {n: v for n, v in values.items() if n not in frozen}
    for n, v in feeds.items():
        assert v.dtype in (np.float32, np.int32, np.int64) and v.size, \
            f"{name}: input {n} is {v.dtype} {v.shape}; add the case to SKIPPED"
    return model, feeds, {n: values[n] for n in frozen}, [np.asarray(o) for o in outputs], list(inputs)


def _check(test_id, scheme, got, want, tensors):
    """got against want within the scheme's bound (module docstring)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    if scheme == "float":
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=_match(FLOAT_ATOL, test_id) or 1e-5)
        return
    floats = [np.asarray(t, np.float64) for t in tensors if np.asarray(t).dtype == np.float32] + [want]
    err = float(np.abs(got.astype(np.float64) - want).max())
    if scheme == "int16" and not _match(INT8_PRECISION, test_id):
        peak = max(float(np.abs(t).max()) for t in floats)
        step, steps = peak / 32767, 16 if _match(dict.fromkeys(LUT_OPS, 1), test_id) else 4
    else:
        span = max(float(max(t.max(), 0) - min(t.min(), 0)) for t in floats)
        step, steps = span / 255, 4
    assert err <= steps * step, f"max |error| {err:.3g} = {err / step:.1f} steps of {step:.3g} (bound {steps})"


@pytest.mark.parametrize("name,variant,scheme", list(_params()))
def test_backend_case(name, variant, scheme, tmp_path):
    model, feeds, freeze, want, tensors = _load(name, variant)
    test_id = "-".join(s for s in (name, variant, scheme) if s)
    path = tmp_path / "case.qmodel"
    qrt.convert(model, [feeds], path, method="minmax", freeze=freeze, show_progress=False, **SCHEMES[scheme])
    got = qrt.load(path).run(feeds)
    got = [got] if isinstance(got, np.ndarray) else [got[o.name] for o in model.graph.output]
    assert len(got) == len(want)
    for g_, w in zip(got, want):
        _check(test_id, scheme, g_, w, tensors + [w])


def test_tables_name_cases():
    """Every SKIPPED, GAPS, INT8_PRECISION and FLOAT_ATOL pattern names some test."""
    ids = [p.id for p in _params()]
    for table in (SKIPPED, GAPS, INT8_PRECISION, FLOAT_ATOL, dict.fromkeys(LUT_OPS)):
        for pattern in table:
            assert any(fnmatch.fnmatchcase(i, pattern) for i in ids), pattern
