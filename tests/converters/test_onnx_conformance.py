"""ONNX backend conformance of `qrt convert` and the runtime for the ops of transformer encoders
and the CNNs around them: every backend test case of these ops is converted (calibrated on the
case's own inputs), run on those inputs and compared with the case's expected outputs, in three
schemes: float islands (mode "float", float32 kernels), int16 activations and the default int8.

Cases: onnx's node test cases (onnx.backend.test.case.node; the onnx wheel does not ship their
serialized form, backend/test/data/node, so they are built in memory by the code that writes it,
which seeds NumPy before each case), their `_expanded` forms included (the op's function body,
as older exporters write it), and pytorch-converted cases the wheel ships as files
(backend/test/data/pytorch-converted: 1-D, grouped and depthwise convolutions, which the node
cases lack, zero padding, 1-D pools and BatchNorm1d, embeddings; most at opset 6, which qrt upgrades).

The node cases feed every input as a graph input; those that are constants in a real model
(weights, axes, shapes, starts, pads, bounds) are frozen (convert(freeze=...)) and integer
indices stay graph inputs. FROZEN lists them per op, in variants where both kinds occur: MatMul
of two activations and by weights; Gather of an embedding table at run-time ids and of an
activation at constant indices; Add/Sub/Mul/Div of two activations and by a constant.
LayerNormalization's Mean and InvStdDev outputs (training statistics; exporters never ask for
them) are dropped and Y alone is compared. SKIPPED lists the cases not run and why; GAPS the
cases qrt refuses or gets wrong although it should not (strict xfail: each turns green when fixed).

Bounds (calibration by min/max, so that the ranges cover the data):
- float: rtol 1e-4, atol 1e-5 (float32 kernels summing in another order than NumPy).
- int16: 3 steps of the int16 grid (peak / 32767, symmetric) of the widest float tensor of the
  case, input or output: ops that keep their input's quantization (pools, Gather of a table,
  ReduceMax, Slice) put the output on the input's grid, and an input's rounding reaches the
  output of the others. Elementwise functions (LUT) 8 steps, for the 513-entry interpolated
  table (SPEC.md 2.13.14): its nodes are 128 input steps apart (h, about 0.009 here), and
  h^2 / 8 |f''| is 2.5e-4, 3 steps, for sqrt at x = 0.05. Where the int16 scheme computes at
  int8 precision (INT8_PRECISION: the op has no int16 form, or int8 weights) the int8 bound.
- int8: 3 steps of the int8 grid (range including 0, / 255) of the widest float tensor: half a
  step from the input's rounding and from the output's, more where a sum or a table compounds.
Measured, the largest: float 1 % of the bound (71 % for the case whose expected values have 4
decimals), int16 2.2 steps (LayerNormalization), LUT 4.9 (Sqrt), int8 2.1 (LayerNormalization),
int8 precision in the int16 scheme 1.1 (PRelu).
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

NODE_CASES = {  # op type: the onnx.backend.test.case.node module defining its cases
    "LayerNormalization": "layernormalization", "MatMul": "matmul", "Gather": "gather", "ReduceSum": "reducesum",
    "ReduceMax": "reducemax", "ReduceMin": "reducemin", "ReduceL2": "reducel2", "ReduceMean": "reducemean",
    "ReduceSumSquare": "reducesumsquare", "Where": "where", "Expand": "expand", "Softmax": "softmax",
    "Slice": "slice", "Split": "split", "Squeeze": "squeeze", "Unsqueeze": "unsqueeze", "Transpose": "transpose",
    "Concat": "concat", "Gelu": "gelu", "Erf": "erf", "Exp": "exp", "Sqrt": "sqrt", "Tanh": "tanh",
    "Sigmoid": "sigmoid", "Max": "max", "Min": "min", "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div",
    "Conv": "conv", "MaxPool": "maxpool", "AveragePool": "averagepool", "BatchNormalization": "batch_normalization",
    "Reshape": "reshape", "Flatten": "flatten", "Pad": "pad", "Relu": "relu", "Clip": "clip",
    "LeakyRelu": "leakyrelu", "PRelu": "prelu", "LSTM": "lstm", "GRU": "gru", "Resize": "resize",
    "Upsample": "upsample", "ConvTranspose": "convtranspose"}
TORCH_CASES = ("test_Conv1d*", "test_Conv2d*", "test_AvgPool[12]d*", "test_MaxPool[12]d*", "test_BatchNorm[12]d*",
               "test_PReLU*", "test_ZeroPad2d", "test_Embedding*")  # directories of backend/test/data/pytorch-converted

_AXES = {"": (1,)}
_BY_CONSTANT = {"act": (), "const": (1,)}
FROZEN = {  # op type: {variant: positions of the inputs frozen}
    "LayerNormalization": {"": (1, 2)}, "BatchNormalization": {"": (1, 2, 3, 4)}, "Conv": {"": (1, 2)},
    "ConvTranspose": {"": (1, 2)},
    "PRelu": {"": (1,)}, "Clip": {"": (1, 2)}, "Where": {"": (0,)}, "Slice": {"": (1, 2, 3, 4)},
    "ReduceSum": _AXES, "ReduceMax": _AXES, "ReduceMin": _AXES, "ReduceL2": _AXES, "ReduceMean": _AXES,
    "ReduceSumSquare": _AXES, "Expand": _AXES, "Reshape": _AXES, "Squeeze": _AXES, "Unsqueeze": _AXES, "Split": _AXES,
    "MatMul": _BY_CONSTANT, "Add": _BY_CONSTANT, "Sub": _BY_CONSTANT, "Mul": _BY_CONSTANT, "Div": _BY_CONSTANT,
    "Gather": {"embedding": (0,), "select": (1,)},
    "Pad": {"value": (1, 2, 3), "zero": (1, 2, 3)},
    "LSTM": {"": (1, 2, 3, 4, 7)}, "GRU": {"": (1, 2, 3, 4)},  # weights, biases, lengths, peepholes
    "Resize": {"": (1, 2, 3)}, "Upsample": {"": (1,)},  # roi, scales, sizes
}
# variants that also change a frozen input, (op, variant): {position: value}; a case has the
# variant when it has those inputs, and onnx.reference computes its expected outputs
CHANGED = {("Pad", "zero"): {2: 0.0}}  # the node cases pad with 1.2; qrt pads with zeros

SCHEMES = {"float": dict(mode="float"), "int16": dict(activations="int16"), "int8": {}}

# Tables keyed by test id patterns (fnmatch on "<case>[-<variant>]-<scheme>"), the first match wins.
_DTYPES = "bool, int8, int16, uint*, float16 or float64 data: qrt reads float32 data and int32/int64 indices"
_INT_DATA = "int32 / int64 data (not indices): qrt's activations are real numbers"
_EMPTY = "an empty tensor (a dimension of 0): the format has none"
_WHERE = "Where on a computed condition (Less): qrt lowers Where only as an attention mask ahead of Softmax"
_NO_DILATION = "dilated pooling: the format's pools have no dilation"
_3D_POOL = "3-D pooling: the format's pools are 1-D and 2-D"
SKIPPED = {  # why a case is not run
    "test_*_bool*": _DTYPES, "test_*_int8*": _DTYPES, "test_*_int16*": _DTYPES, "test_*_uint*": _DTYPES,
    "test_*_float16*": _DTYPES, "test_*_float64*": _DTYPES,
    "test_*_int32*": _INT_DATA, "test_*_int64*": _INT_DATA, "test_where_long_example*": _INT_DATA,
    "test_edge_pad*": _INT_DATA + " (the modes: tests/converters/test_resize_pad.py)",
    "test_reflect_pad*": _INT_DATA + " (the modes: tests/converters/test_resize_pad.py)",
    "test_wrap_pad*": _INT_DATA + " (the modes: tests/converters/test_resize_pad.py)",
    "test_reduce_*empty_set*": _EMPTY, "test_split_zero_size_splits*": _EMPTY,
    "test_reshape_allowzero_reordered*": _EMPTY, "test_slice_start_out_of_bounds*": _EMPTY + " (the output)",
    "test_where_example*": "Where selecting between two activations by a constant condition: qrt lowers Where "
                           "only as an attention mask ahead of Softmax, which no backend case has (refused)",
    "test_clip_expanded*": _WHERE, "test_clip_[eios]*_expanded*": _WHERE, "test_clip_default_m*_expanded*": _WHERE,
    "test_clip_min_greater_than_max_expanded*": _WHERE, "test_leakyrelu*expanded*": _WHERE,
    "test_prelu*expanded*": _WHERE,
    "test_div*-act-*": "division by an activation: qrt divides by constants (refused)",
    "test_*pad*-value-*": "constant_value 1.2: qrt pads with zeros (refused); the -zero variant pads with 0",
    "test_softmax_large_number*-int*": "inputs up to 10003 that differ by 1: one input step (0.31 in int16, "
                                       "39 in int8) is of the order of the differences softmax sees",
    "test_maxpool_3d*": _3D_POOL, "test_averagepool_3d*": _3D_POOL,
    "test_convtranspose_3d*": "3-D ConvTranspose: qrt's convolutions are 1-D and 2-D (refused)",
    "test_maxpool_2d_dilations*": _NO_DILATION, "test_averagepool_2d_dilations*": _NO_DILATION,
    "test_MaxPool*_stride_padding_dilation*": _NO_DILATION,
    "test_maxpool_with_argmax*": "the Indices output (argmax positions) has no qrt op; y is the "
                                 "test_maxpool_2d_precomputed_* case's",
    "test_batchnorm_*training_mode*": "training mode (batch statistics, running-statistics outputs)",
    "test_resize_downsample_scales_linear_align_corners*": "the case's expected output samples align_corners over "
        "the unrounded output length in x scale (2.4); ONNX Runtime, which qrt follows, over the output size (2)",
}
_ONE_D = "MatMul with a 1-D operand (a vector): refused (UnsupportedOpsError)"
_IDENTITY = "a graph whose output is its input (one Identity): refused as 'unsupported op type Identity'"
_RECURRENT_FLOAT = "LSTM and GRU have integer forms only: a float island computes them in int8"
GAPS = {  # what qrt refuses or gets wrong although it should not
    "test_matmul_1d_3d-const-*": _ONE_D, "test_matmul_*_1d-const-*": _ONE_D,
    "test_matmul_1d_*-act-*": _ONE_D, "test_matmul_4d_1d-act-*": _ONE_D,
    "test_clip_default_inbounds_expanded-*": _IDENTITY, "test_max_one_input-*": _IDENTITY,
    "test_min_one_input-*": _IDENTITY,
    "test_lstm_*-float": _RECURRENT_FLOAT, "test_gru_*-float": _RECURRENT_FLOAT,
    "test_lstm_with_peepholes-*": "LSTM peephole connections (input P): refused",
    "test_resize_*cubic*": "cubic interpolation: refused (RESIZE's tables could hold its 4 taps; not made yet)",
    "test_resize_*antialias*": "antialiased downsampling: refused",
    "test_resize_tf_crop_and_resize*": "tf_crop_and_resize (a crop by roi, then extrapolation): refused",
    "test_resize_*_not_larger-*": "keep_aspect_ratio_policy not_larger: refused",
    "test_resize_*_not_smaller-*": "keep_aspect_ratio_policy not_smaller: refused",
    "test_PReLU_*_multiparam-*": "opset-6 PRelu's per-channel slope [C] is upgraded by onnx.version_converter "
                                 "without a reshape to [C, 1, ...]: the float run cannot broadcast it",
}
INT8_PRECISION = {  # why the int16 scheme computes a case at int8 precision
    "test_max_*": "Max has no int16 form", "test_min_*": "Min has no int16 form",
    "test_prelu*": "PRelu has no int16 form",
    "test_PReLU*": "PRelu has no int16 form", "test_leakyrelu*": "LeakyRelu has no int16 form",
    "test_relu_expanded*": "its Max(x, 0) has no int16 form",
    "test_reduce_sum_square_*": "ReduceSumSquare has no int16 form (int16 squares overflow int32 sums)",
    "test_*conv*": "int8 weights", "test_lstm_*": "int8 weights", "test_gru_*": "int8 weights", "test_Conv*": "int8 weights", "test_matmul_*-const-*": "int8 weights",
}
LUT = dict.fromkeys(("test_exp*", "test_erf*", "test_gelu*", "test_sigmoid*", "test_tanh*", "test_sqrt*",
                     "test_reduce_l2_*expanded*"), "an elementwise function: an interpolated table in int16")
FLOAT_ATOL = {"test_averagepool_2d_ceil_last_window_starts_on_pad-*": 5e-5}  # its expected has 4 decimals


def _match(table, test_id):
    return next((v for k, v in table.items() if fnmatch.fnmatchcase(test_id, k)), None)


def _read_pb(path):
    t = onnx.TensorProto()
    t.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(t)


def _collect() -> dict:
    """case name -> (model, inputs, expected outputs, op type): the node cases of NODE_CASES (an
    expanded case has its source node's op type) and the pytorch-converted TORCH_CASES (op type
    None: their weights are initializers already)."""
    from onnx.backend.test.case import node
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for m in NODE_CASES.values():  # defining a module's cases appends them to node._NodeTestCases
            importlib.import_module(f"{node.__name__}.{m}")
    found = {c.name: c for c in node._NodeTestCases}
    cases = {}
    for name, c in found.items():
        source = found.get(re.sub(r"_expanded.*", "", name))
        op = source.model.graph.node[0].op_type if source is not None and len(source.model.graph.node) == 1 else None
        if op in NODE_CASES:
            cases[name] = (c.model, *c.data_sets[0], op)
    root = Path(onnx.__file__).parent / "backend" / "test" / "data" / "pytorch-converted"
    for d in sorted(p for pattern in TORCH_CASES for p in root.glob(pattern)):
        data = d / "test_data_set_0"
        cases[d.name] = (onnx.load(d / "model.onnx"), [_read_pb(p) for p in sorted(data.glob("input_*.pb"))],
                         [_read_pb(p) for p in sorted(data.glob("output_*.pb"))], None)
    return cases


CASES = _collect()


def _params():
    for name, (_, inputs, _, op) in CASES.items():
        for variant in FROZEN.get(op, {"": ()}):
            if any(p >= len(inputs) for p in CHANGED.get((op, variant), {})):
                continue
            for scheme in SCHEMES:
                test_id = "-".join(s for s in (name, variant, scheme) if s)
                skip, gap = _match(SKIPPED, test_id), _match(GAPS, test_id)
                marks = [pytest.mark.skip(reason=skip)] if skip else \
                    [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
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
    return model, feeds, {n: values[n] for n in frozen}, [np.asarray(o) for o in outputs]


def _check(test_id, scheme, got, want, tensors):
    """got against want within the scheme's bound (module docstring); tensors: the case's inputs."""
    assert got.shape == want.shape, (got.shape, want.shape)
    if scheme == "float":
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=_match(FLOAT_ATOL, test_id) or 1e-5)
        return
    floats = [np.asarray(t, np.float64) for t in [*tensors, want] if np.asarray(t).dtype == np.float32]
    if scheme == "int16" and not _match(INT8_PRECISION, test_id):
        step, steps = max(float(np.abs(t).max()) for t in floats) / 32767, 8 if _match(LUT, test_id) else 3
    else:
        step, steps = max(float(max(t.max(), 0) - min(t.min(), 0)) for t in floats) / 255, 3
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= steps * step, f"max |error| {err:.3g}: {err / step:.1f} steps of {step:.3g}, bound {steps}"


@pytest.mark.parametrize("name,variant,scheme", list(_params()))
def test_backend_case(name, variant, scheme, tmp_path, request):
    model, feeds, freeze, want = _load(name, variant)
    path = tmp_path / "case.qmodel"
    qrt.convert(model, [feeds], path, method="minmax", freeze=freeze, show_progress=False, **SCHEMES[scheme])
    got = qrt.load(path).run(feeds)
    got = [got] if isinstance(got, np.ndarray) else [got[o.name] for o in model.graph.output]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        _check(request.node.callspec.id, scheme, g, w, [*feeds.values(), *freeze.values()])


def test_every_table_pattern_names_a_test():
    ids = [p.id for p in _params()]
    for table in (SKIPPED, GAPS, INT8_PRECISION, LUT, FLOAT_ATOL):
        for pattern in table:
            assert any(fnmatch.fnmatchcase(i, pattern) for i in ids), pattern
