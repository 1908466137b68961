"""Import of QOperator ONNX models (converters/onnx_reader.py: _rewrite_qoperators): QLinearConv,
QLinearMatMul, ONNX Runtime's com.microsoft QGemm / QLinearAdd / QLinearMul / QLinear pools,
activations, Softmax and Concat, and ONNX Runtime's dynamic pattern (DynamicQuantizeLinear ->
MatMulInteger / ConvInteger -> Cast -> Mul).

1. The digits CNN (conftest `digits`) quantized by onnxruntime.quantization: quantize_static in
   QOperator form (QLinearConv, QGemm; and with its Gemm as MatMul + Add: QLinearMatMul), and
   quantize_dynamic (ConvInteger, MatMulInteger). read_onnx gives the float graph with no
   QOperator op, the activation parameters recorded (static) and the weight scales; qrt.convert
   then runs like ONNX Runtime on the QOperator model (optimisations off) on the test split:
   top-1 agreement >= 99 %, accuracy within 1 point of float; the static form converts to
   exactly what the QDQ form of the same quantization does.
2. A small random graph whose static QOperator form uses every com.microsoft op above (and
   Pad / MaxPool / Flatten on uint8 data): qrt stays within one output step of ONNX Runtime.
3. Hand-made QLinearConv with per-channel weight scales: imported with those scales, the bias
   dequantized with x_scale * w_scale, and bit-for-bit ONNX Runtime's result after conversion.
4. Malformed or unknown patterns: ConversionError / UnsupportedOpsError naming the node.
"""
from __future__ import annotations

import numpy as np
import pytest

import onnx
from onnx import TensorProto, helper, numpy_helper

import qrt
from qrt.converters.errors import ConversionError, UnsupportedOpsError
from qrt.converters.float_exec import run_graph
from qrt.converters.onnx_reader import read_onnx
from qrt.converters.torch_frontend import quiet_export
from bench.runtimes import gemm_as_matmul
from tests.converters import onnxruntime_peer as peer

QOPS = {"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
        "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearConcat",
        "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"}


@pytest.fixture(scope="module")
def digits_qop(digits, tmp_path_factory):
    """{form: path} of the digits CNN quantized by ONNX Runtime in QOperator forms (and, to
    compare, in QDQ form)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic

    folder = tmp_path_factory.mktemp("qoperator")
    matmul = gemm_as_matmul(digits.onnx_path, folder / "digits_matmul.onnx")
    qop = QuantFormat.QOperator
    paths = {"static": peer.quantize_static(digits.onnx_path, folder / "static.onnx", digits.calib, quant_format=qop),
             "static-matmul": peer.quantize_static(matmul, folder / "static_matmul.onnx", digits.calib,
                                                   quant_format=qop, per_channel=False),
             "qdq": peer.quantize_static(digits.onnx_path, folder / "qdq.onnx", digits.calib)}
    for per_channel in (False, True):
        out = folder / f"dynamic{int(per_channel)}.onnx"
        with quiet_export():
            quantize_dynamic(matmul, str(out), weight_type=QuantType.QInt8, per_channel=per_channel,
                             op_types_to_quantize=["Conv", "MatMul"])
        paths[f"dynamic-pc{int(per_channel)}"] = str(out)
    return paths


EXPECTED_OPS = {"static": {"QLinearConv", "QGemm"}, "static-matmul": {"QLinearConv", "QLinearMatMul"},
                "dynamic-pc0": {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"},
                "dynamic-pc1": {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}}


@pytest.mark.parametrize("form", sorted(EXPECTED_OPS))
def test_ort_qoperator_model_reads_as_float_graph(digits, digits_qop, form):
    src = onnx.load(digits_qop[form])
    assert EXPECTED_OPS[form] <= {n.op_type for n in src.graph.node}
    inits = {t.name: numpy_helper.to_array(t) for t in src.graph.initializer}
    g = read_onnx(digits_qop[form])
    assert not set(g.op_counts()) & QOPS, g.op_counts()
    assert g.op_counts()["Conv"] == 2 and g.inputs == [i.name for i in src.graph.input]
    assert g.outputs == [o.name for o in src.graph.output]
    assert all(np.asarray(c).dtype in (np.float32, np.int64) for c in g.constants.values())
    # every weight imported with its scales: 2 convs and the linear layer (QLinearMatMul's
    # QLinearAdd of the bias reads a uint8 constant too: it comes with its scale as well)
    weights = {n.inputs[1] for n in g.nodes if n.op in ("Conv", "MatMul", "Gemm")}
    assert len(weights) == 3 and weights <= set(g.weight_qparams)
    for name, (scales, axis) in g.weight_qparams.items():
        assert g.constants[name].dtype == np.float32 and scales.dtype == np.float32
        assert any(np.array_equal(scales, np.asarray(v, np.float32).reshape(-1)) for k, v in inits.items()
                   if k.endswith("_scale")), name
    if form.startswith("static"):
        # activations keep ORT's parameters; uint8 zero points in qrt's int8 convention
        q_in = next(n for n in src.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == g.inputs[0])
        s, z = float(inits[q_in.input[1]]), int(inits[q_in.input[2]]) - 128
        assert g.fixed_qparams[g.inputs[0]] == (pytest.approx(s), z)
        dq_out = next(n for n in src.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == g.outputs[0])
        assert g.fixed_qparams[g.outputs[0]] == (pytest.approx(float(inits[dq_out.input[1]])),
                                                int(inits[dq_out.input[2]]) - 128)
        assert len(g.fixed_qparams) >= 5
    else:
        # dynamic: the float model back, activation ranges left to the user's scheme
        assert g.fixed_qparams == {}
    if form == "dynamic-pc1":
        assert sorted(len(g.weight_qparams[w][0]) for w in weights) == [1, 1, 10]  # MatMul per column
        assert [g.weight_qparams[w][1] for w in weights if len(g.weight_qparams[w][0]) == 10] == [1]
    # the imported float graph computes what the float model does, up to the weights' rounding
    x = digits.x_test[:50]
    ref = peer.run(digits.onnx_path, x)
    got = np.concatenate([run_graph(g, {g.inputs[0]: x[i:i + 1]})[g.outputs[0]] for i in range(len(x))])
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.98


@pytest.mark.parametrize("form", sorted(EXPECTED_OPS))
def test_ort_qoperator_model_converts_and_runs_like_onnxruntime(digits, digits_qop, form, tmp_path):
    path = tmp_path / f"{form}.qmodel"
    qrt.convert(digits_qop[form], digits.calib, path)
    got = qrt.load(path).run(digits.x_test)
    ref = peer.run(digits_qop[form], digits.x_test)
    assert got.shape == ref.shape == (len(digits.x_test), 10)
    agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
    acc = float(np.mean(got.argmax(1) == digits.y_test))
    assert agree >= 0.99, f"top-1 agreement with ONNX Runtime {agree:.4f}"
    assert acc >= digits.float_accuracy - 0.01, (acc, digits.float_accuracy)
    if form.startswith("static"):
        # the logits keep the QOperator model's output quantization: one step from ORT at most
        # (two where ORT rounds the MatMul's output before its QLinearAdd of the bias, which
        # qrt folds into the layer)
        scale = read_onnx(digits_qop[form]).fixed_qparams[qrt.load(path).outputs[0].name][0]
        steps = np.abs(got.astype(np.float64) - ref) / scale
        assert steps.max() <= (1 if form == "static" else 2) + 1e-3, steps.max()
    if form == "static":
        # and exactly what the QDQ form of the same quantization converts to
        qdq = tmp_path / "qdq.qmodel"
        qrt.convert(digits_qop["qdq"], digits.calib, qdq)
        np.testing.assert_array_equal(got, qrt.load(qdq).run(digits.x_test))


# --------------------------------------------------------------------------- com.microsoft ops

def _model(nodes, inits, x_shape, y_shape, y_type=TensorProto.FLOAT, opsets=(("", 17),)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", y_type, list(y_shape))],
                              initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8
    return model


def test_ort_contrib_qlinear_ops(tmp_path):
    """Conv, Pad, residual Add, Sigmoid * x, LeakyRelu, AveragePool, GlobalAveragePool, MaxPool,
    Concat, Flatten, Gemm, Softmax: ORT's QOperator form has QLinearAdd, QLinearMul,
    QLinearSigmoid, QLinearLeakyRelu, QLinearAveragePool, QLinearGlobalAveragePool,
    QLinearConcat, QGemm, QLinearSoftmax and a Pad (padding with the zero point), MaxPool and
    Flatten on uint8 data."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    N = helper.make_node
    nodes = [N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4), N("Relu", ["c1"], ["a"]),
             N("Conv", ["a", "w2", "b2"], ["b"], pads=[1] * 4), N("Add", ["a", "b"], ["c0"]),
             N("Pad", ["c0", "pads"], ["c"]), N("Sigmoid", ["c"], ["s"]), N("Mul", ["c", "s"], ["d"]), N("LeakyRelu", ["d"], ["e"], alpha=0.1),
             N("AveragePool", ["e"], ["f"], kernel_shape=[2, 2], strides=[2, 2]),
             N("GlobalAveragePool", ["f"], ["g1"]), N("MaxPool", ["f"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
             N("GlobalAveragePool", ["m"], ["g2"]), N("Concat", ["g1", "g2"], ["h"], axis=1),
             N("Flatten", ["h"], ["hf"]), N("Gemm", ["hf", "W", "B"], ["logits"]), N("Softmax", ["logits"], ["y"])]
    inits = {"w1": w(8, 3, 3, 3), "b1": w(8), "w2": w(8, 8, 3, 3), "b2": w(8), "W": w(16, 10), "B": w(10),
             "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}
    src = tmp_path / "small.onnx"
    onnx.save(_model(nodes, inits, (1, 3, 8, 8), (1, 10)), src)
    xs = rng.random((100, 3, 8, 8)).astype(np.float32)
    from onnxruntime.quantization import QuantFormat

    qop = peer.quantize_static(src, tmp_path / "small_qop.onnx", xs[:40], quant_format=QuantFormat.QOperator)
    ops = {n.op_type for n in onnx.load(qop).graph.node}
    assert {"QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool",
            "QLinearGlobalAveragePool", "QLinearConcat", "QGemm", "QLinearSoftmax", "MaxPool", "Pad"} <= ops, ops

    g = read_onnx(qop)
    assert not set(g.op_counts()) & QOPS
    assert {"Add", "Mul", "Sigmoid", "LeakyRelu", "AveragePool", "GlobalAveragePool", "Concat", "Gemm",
            "Softmax", "MaxPool"} <= set(g.op_counts())
    assert g.fixed_qparams["y"] == (pytest.approx(1 / 256), -128)  # ORT's fixed softmax output
    assert g.fixed_qparams["m"] == g.fixed_qparams["f"]  # MaxPool on uint8 keeps its input's
    pad = next(n for n in g.nodes if n.op == "Pad")
    assert g.fixed_qparams[pad.outputs[0]] == g.fixed_qparams[pad.inputs[0]]
    assert g.fixed_qparams["c0"][1] != -128  # pads with a nonzero zero point: the real 0.0
    assert g.constants[pad.inputs[2]].dtype == np.float32 and float(g.constants[pad.inputs[2]]) == 0.0

    path = tmp_path / "small.qmodel"
    qrt.convert(qop, xs[:40], path)
    got = qrt.load(path).run(xs[40:])
    ref = peer.run(qop, xs[40:])
    assert np.abs(got - ref).max() <= 1 / 256 + 1e-6  # one output step


# --------------------------------------------------------------------------- hand-made QLinearConv

X_SCALE, X_ZP = np.float32(1 / 255), np.uint8(0)
W_SCALES = np.array([0.02, 0.005, 0.01, 0.04], np.float32)
Y_SCALE, Y_ZP = np.float32(0.05), np.uint8(100)


def _qlinearconv_model(drop: str | None = None, bias=True):
    rng = np.random.default_rng(1)
    inits = {"x_scale": X_SCALE, "x_zp": X_ZP, "w": rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8),
             "w_scale": W_SCALES, "w_zp": np.zeros(4, np.int8), "y_scale": Y_SCALE, "y_zp": Y_ZP,
             "B": rng.integers(-3000, 3000, 4).astype(np.int32)}
    ins = ["x_q", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp"] + (["B"] if bias else [])
    ins = ["" if i == drop else i for i in ins]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="quant_x"),
             helper.make_node("QLinearConv", ins, ["y_q"], name="qconv", pads=[1, 1, 1, 1]),
             helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zp"], ["y"], name="dequant_y")]
    return _model(nodes, inits, (1, 2, 6, 6), (1, 4, 6, 6)), inits


def test_handmade_qlinearconv_per_channel(tmp_path):
    model, inits = _qlinearconv_model()
    g = read_onnx(model)
    assert g.op_counts() == {"Conv": 1}
    conv = g.nodes[0]
    assert conv.name == "qconv" and conv.attrs["pads"] == [1, 1, 1, 1]
    assert conv.inputs[0] == "x" and conv.outputs == ["y"]
    w = conv.inputs[1]
    scales, axis = g.weight_qparams[w]
    np.testing.assert_array_equal(scales, W_SCALES)
    assert axis == 0
    np.testing.assert_allclose(g.constants[w], inits["w"] * W_SCALES[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(g.constants[conv.inputs[2]], inits["B"] * X_SCALE * W_SCALES, rtol=1e-6)
    assert g.fixed_qparams == {"x": (pytest.approx(float(X_SCALE)), -128),
                               "y": (pytest.approx(float(Y_SCALE)), int(Y_ZP) - 128)}

    # converted, it computes what ONNX Runtime's QLinearConv does
    src = tmp_path / "qconv.onnx"
    onnx.save(model, src)
    xs = np.random.default_rng(2).random((20, 1, 2, 6, 6)).astype(np.float32)
    path = tmp_path / "qconv.qmodel"
    qrt.convert(str(src), xs[:10], path)
    got = qrt.load(path).run(xs[:, 0])
    ref = peer.run(src, xs[:, 0])
    assert np.abs(got - ref).max() <= Y_SCALE * 1.001
    assert np.mean(np.abs(got - ref) < Y_SCALE / 2) >= 0.99


def test_handmade_qlinearconv_without_bias():
    g = read_onnx(_qlinearconv_model(bias=False)[0])
    assert g.op_counts() == {"Conv": 1} and len(g.nodes[0].inputs) == 2


# --------------------------------------------------------------------------- malformed / unknown

@pytest.mark.parametrize("drop", ["x_scale", "w_scale", "y_scale", "w"])
def test_qlinearconv_missing_input_is_named(drop):
    with pytest.raises(ConversionError, match="QLinearConv node 'qconv' lacks input"):
        read_onnx(_qlinearconv_model(drop)[0])


def test_qlinearconv_scale_not_constant():
    model, _ = _qlinearconv_model()
    model.graph.node[1].input[4] = "x"  # a run-time weight scale
    with pytest.raises(UnsupportedOpsError, match="qconv"):
        read_onnx(model)


def _dynamic_model(extra_reader: bool = False, cast_to=TensorProto.FLOAT):
    """x -> DynamicQuantizeLinear -> MatMulInteger(W) -> Cast -> Mul(x_scale * w_scale) -> y."""
    W = np.random.default_rng(3).integers(-127, 128, (8, 3)).astype(np.int8)
    N = helper.make_node
    nodes = [N("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql"),
             N("MatMulInteger", ["xq", "W", "xz", "wz"], ["acc"], name="mmi"),
             N("Cast", ["acc"], ["accf"], to=cast_to, name="cast"),
             N("Mul", ["xs", "ws"], ["s"], name="scale_mul"),
             N("Mul", ["accf", "s"], ["y"], name="out_mul")]
    outputs = ["y"]
    if extra_reader:  # the run-time scale read by something else too
        nodes.append(N("Identity", ["xs"], ["xs_copy"], name="peek"))
        outputs.append("xs_copy")
    m = _model(nodes, {"W": W, "wz": np.int8(0), "ws": np.float32(0.01)}, (1, 8), (1, 3))
    for o in outputs[1:]:
        m.graph.output.append(helper.make_tensor_value_info(o, TensorProto.FLOAT, []))
    return m, W


def test_dynamic_matmulinteger_pattern_is_the_float_matmul():
    model, W = _dynamic_model()
    g = read_onnx(model)
    assert g.op_counts() == {"MatMul": 1} and g.fixed_qparams == {}
    mm = g.nodes[0]
    assert mm.inputs[0] == "x" and mm.outputs == ["y"] and mm.name == "mmi"
    np.testing.assert_allclose(g.constants[mm.inputs[1]], W * np.float32(0.01), rtol=1e-6)
    assert g.weight_qparams[mm.inputs[1]][0].tolist() == [pytest.approx(0.01)]


def test_dynamic_pattern_variants_refused():
    with pytest.raises(ConversionError, match="'peek'"):
        read_onnx(_dynamic_model(extra_reader=True)[0])
    with pytest.raises(UnsupportedOpsError, match="mmi"):
        read_onnx(_dynamic_model(cast_to=TensorProto.INT64)[0])


def test_matmulinteger_outside_the_dynamic_pattern_refused():
    N = helper.make_node
    nodes = [N("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             N("MatMulInteger", ["xq", "W", "z"], ["acc"], name="lonely_mmi"),
             N("Cast", ["acc"], ["y"], to=TensorProto.FLOAT, name="cast")]
    m = _model(nodes, {"s": np.float32(0.1), "z": np.uint8(128), "W": np.ones((8, 3), np.uint8)}, (1, 8), (1, 3))
    with pytest.raises(UnsupportedOpsError, match="lonely_mmi"):
        read_onnx(m)


def test_unknown_contrib_qoperator_refused():
    N = helper.make_node
    nodes = [N("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             N("QLinearReduceMean", ["xq", "s", "z", "s", "z"], ["yq"], name="qmean", domain="com.microsoft"),
             N("DequantizeLinear", ["yq", "s", "z"], ["y"], name="dq")]
    m = _model(nodes, {"s": np.float32(0.1), "z": np.uint8(128)}, (1, 8), (1, 3),
               opsets=(("", 17), ("com.microsoft", 1)))
    with pytest.raises(UnsupportedOpsError, match="com.microsoft::QLinearReduceMean") as e:
        read_onnx(m)
    assert "qmean" in str(e.value)
