"""The ONNX reader, the float executor and the graph passes (converters/onnx_reader.py,
float_exec.py, passes.py).

Small PyTorch models are exported with both torch.onnx.export modes (dynamo and legacy), read,
simplified and run by run_graph; the outputs must match PyTorch's and ONNX Runtime's. Single ONNX
ops built with onnx.helper are checked against ONNX Runtime. Bad models must get clear errors;
QDQ models must give their quantization parameters."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import pytest

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper  # noqa: E402

from qrt.converters.errors import ConversionError, UnsupportedOpsError  # noqa: E402
from qrt.converters.float_exec import OPS, SUPPORTED_OPS, run_graph  # noqa: E402
from qrt.converters.onnx_reader import read_onnx  # noqa: E402
from qrt.converters.passes import simplify  # noqa: E402
from qrt.errors import QrtError  # noqa: E402


def _ort_run(model, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, feeds)))


def _close(got, ref, rel=1e-4):
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = max(float(np.abs(ref).max()), 1e-3)
    err = float(np.abs(got - ref).max())
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel} x output scale {scale:.3g}"


# --------------------------------------------------------------------------- PyTorch models

torch = None


def _torch():
    global torch
    if torch is None:
        import torch
        torch.set_num_threads(1)
        for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "torch.fx"):
            logging.getLogger(name).setLevel(logging.ERROR)
    return torch


def _export(model, x, dynamo: bool, dynamic_batch=False, **kw):
    """torch.onnx.export in one of its two modes, quietly, as an onnx.ModelProto."""
    t = _torch()
    out = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        warnings.simplefilter("ignore")
        if dynamo:
            ds = {"x": {0: t.export.Dim("batch", min=1, max=64)}} if dynamic_batch else None
            return t.onnx.export(model, (x,), dynamo=True, dynamic_shapes=ds, verbose=False, **kw).model_proto
        f = io.BytesIO()
        t.onnx.export(model, (x,), f, dynamo=False, input_names=["x"], opset_version=17,
                      dynamic_axes={"x": {0: "batch"}} if dynamic_batch else None, **kw)
        return onnx.load_from_string(f.getvalue())


def _models():
    t = _torch()
    nn, F = t.nn, t.nn.functional

    def bn(c):
        b = nn.BatchNorm2d(c)
        b.running_mean.uniform_(-0.5, 0.5)
        b.running_var.uniform_(0.5, 2.0)
        b.weight.data.uniform_(0.5, 1.5)
        b.bias.data.uniform_(-0.3, 0.3)
        return b

    class ConvBnRelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.b = nn.Conv2d(3, 8, 3, padding=1), bn(8)
            self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), bn(8)

        def forward(self, x):
            return F.relu(self.b2(self.c2(F.relu(self.b(self.c(x))))))

    class Depthwise(nn.Module):
        def __init__(self):
            super().__init__()
            self.pw = nn.Conv2d(3, 8, 1)
            self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
            self.dw5 = nn.Conv2d(8, 16, 5, stride=2, padding=2, groups=8)  # channel multiplier 2

        def forward(self, x):
            return self.dw5(F.relu6(self.dw(self.pw(x))))

    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.g = nn.Conv2d(3, 12, 3, padding=1)
            self.g2 = nn.Conv2d(12, 8, 3, groups=4, dilation=2, padding=2, stride=(1, 2))
            self.c1 = nn.Conv1d(8, 4, 3, padding=1)

        def forward(self, x):
            y = self.g2(self.g(x))
            return self.c1(y.mean(3))

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return F.relu(x + self.b(F.relu(self.a(x))))

    class Pools(nn.Module):
        def forward(self, x):
            a = F.max_pool2d(x, 3, 2, ceil_mode=True)
            b = F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=False)
            c = F.avg_pool2d(x, 2, 2, padding=1, ceil_mode=True, count_include_pad=True)
            d = F.max_pool2d(x, 2, 1, padding=1)
            return a.sum() + b, c, d

    class GapLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 8, 3, stride=2)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            y = F.adaptive_avg_pool2d(F.relu(self.c(x)), 1)
            return self.fc(t.flatten(y, 1))

    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 3, padding=1)

        def forward(self, x):
            return t.cat([self.a(x), F.relu(self.b(x)), x], dim=1)

    class Activations(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.PReLU(3)
            self.p.weight.data = t.tensor([0.1, 0.25, -0.3])

        def forward(self, x):
            return (t.sigmoid(x), t.tanh(x), F.hardswish(x), F.silu(x), F.gelu(x),
                    F.gelu(x, approximate="tanh"), F.leaky_relu(x, 0.1), self.p(x), F.hardsigmoid(x),
                    F.relu6(x * 4), F.elu(x))

    class Softmax(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 6)

        def forward(self, x):
            return t.softmax(self.fc(self.pool(x)), -1), t.softmax(x, 1)

        def pool(self, x):
            return t.cat([x.mean((2, 3)), x.amax((2, 3)), x[:, :2, 0, 0]], 1)

    class TransposeReshape(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            b, c, h, w = x.shape
            y = self.fc(x.reshape(b, c, h * w).transpose(1, 2))  # tokens (b, hw, 4)
            z = y.permute(0, 2, 1).reshape(b, 4, h, w)
            return z.flatten(1), y.unsqueeze(1).squeeze(1)

    class Pad(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = F.pad(x, (1, 2, 0, 1), value=0.5)
            return self.c(F.pad(y, (1, 1, 2, 2), mode="reflect"))

    class Resize(nn.Module):
        def forward(self, x):
            return (F.interpolate(x, scale_factor=2, mode="nearest"),
                    F.interpolate(x, size=(13, 11), mode="bilinear", align_corners=False),
                    F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))

    return {
        "conv_bn_relu": ConvBnRelu, "depthwise": Depthwise, "grouped_dilated_conv1d": Grouped,
        "residual_add": Residual, "pools_ceil_mode": Pools, "gap_flatten_linear": GapLinear,
        "concat_branches": Branches, "activations": Activations, "softmax": Softmax,
        "transpose_reshape": TransposeReshape, "pad": Pad, "resize": Resize,
    }


MODEL_NAMES = ["conv_bn_relu", "depthwise", "grouped_dilated_conv1d", "residual_add", "pools_ceil_mode",
               "gap_flatten_linear", "concat_branches", "activations", "softmax", "transpose_reshape",
               "pad", "resize"]
SHAPE_CHAIN_OPS = {"Shape", "Size", "Identity", "Dropout", "Constant", "ConstantOfShape", "Range", "Equal",
                   "Where", "Cast"}


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_exported_model_matches_torch_and_onnxruntime(name, dynamo):
    t = _torch()
    t.manual_seed(0)
    model = _models()[name]().eval()
    x = t.randn(1, 3, 9, 10)
    with t.no_grad():
        ref = model(x)
    ref = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
    proto = _export(model, x, dynamo, dynamic_batch=name in ("transpose_reshape", "gap_flatten_linear"))

    g = read_onnx(proto)
    assert g.shapes[g.inputs[0]] == (1, 3, 9, 10)
    simplify(g)
    leftover = set(g.op_counts()) & SHAPE_CHAIN_OPS
    assert not leftover, f"shape chains not folded: {g.op_counts()}"
    assert "BatchNormalization" not in g.op_counts()
    for n in g.nodes:
        for o in n.outputs:
            assert o in g.shapes

    xs = x.numpy()
    got = run_graph(g, {g.inputs[0]: xs})
    assert list(got) == g.outputs
    ort_out = _ort_run(proto, {proto.graph.input[0].name: xs})
    for out_name, r in zip(g.outputs, ref):
        _close(got[out_name], r)
        _close(got[out_name], ort_out[out_name])


def test_batchnorm_folding_keeps_outputs():
    t = _torch()
    t.manual_seed(1)
    nn = t.nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.bn = nn.Conv2d(3, 6, 3, groups=3), nn.BatchNorm2d(6)
            self.c2, self.bn2 = nn.Conv2d(6, 6, 1, bias=False), nn.BatchNorm2d(6)
            self.fc, self.bn1d = nn.Linear(6, 5), nn.BatchNorm1d(5)
            self.bn_in = nn.BatchNorm2d(3)  # on the input: nothing to fold into
            for b in (self.bn, self.bn2, self.bn1d, self.bn_in):
                b.running_mean.uniform_(-1, 1)
                b.running_var.uniform_(0.3, 3)
                b.weight.data.uniform_(-1.5, 1.5)
                b.bias.data.uniform_(-0.5, 0.5)

        def forward(self, x):
            y = self.bn2(self.c2(t.relu(self.bn(self.c(self.bn_in(x))))))
            return self.bn1d(self.fc(y.mean((2, 3))))

    model = M().eval()
    x = t.randn(1, 3, 8, 8)
    with t.no_grad():
        ref = model(x).numpy()
    for proto in (_export(model, x, dynamo=True, optimize=False), _export(model, x, dynamo=False,
                                                                           do_constant_folding=False)):
        g = read_onnx(proto)
        assert g.op_counts().get("BatchNormalization", 0) == 4
        before = run_graph(g, {g.inputs[0]: x.numpy()})[g.outputs[0]]
        simplify(g)
        # the three after Conv / Gemm fold; the one on the graph input stays
        assert g.op_counts().get("BatchNormalization", 0) == 1, g.op_counts()
        after = run_graph(g, {g.inputs[0]: x.numpy()})[g.outputs[0]]
        _close(before, ref)
        _close(after, ref)


def _bn_inputs(prefix, c, rng):
    return [helper.make_tensor(f"{prefix}_{k}", TensorProto.FLOAT, [c], v.tolist()) for k, v in (
        ("s", rng.uniform(-2, 2, c)), ("b", rng.uniform(-1, 1, c)), ("m", rng.uniform(-1, 1, c)),
        ("v", rng.uniform(0.2, 2, c)))]


def test_batchnorm_folds_into_gemm_and_matmul_shared_weights():
    rng = np.random.default_rng(3)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 6], rng.standard_normal(24).tolist())
    wt = helper.make_tensor("wt", TensorProto.FLOAT, [6, 4], rng.standard_normal(24).tolist())
    nodes = [
        helper.make_node("Gemm", ["x", "wt", ""], ["g"], transB=1, alpha=0.5),
        helper.make_node("BatchNormalization", ["g", "bn1_s", "bn1_b", "bn1_m", "bn1_v"], ["y1"], epsilon=1e-3),
        helper.make_node("MatMul", ["x", "w"], ["mm"]),
        helper.make_node("BatchNormalization", ["mm", "bn2_s", "bn2_b", "bn2_m", "bn2_v"], ["y2"]),
        helper.make_node("MatMul", ["x", "w"], ["mm2"]),  # shares w: w itself must not change
        helper.make_node("Relu", ["mm2"], ["y3"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y1", "y2", "y3")],
        [w, wt] + _bn_inputs("bn1", 6, rng) + _bn_inputs("bn2", 6, rng))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    g = simplify(read_onnx(model))
    assert "BatchNormalization" not in g.op_counts()
    x = rng.standard_normal((2, 4)).astype(np.float32)
    got, ref = run_graph(g, {"x": x}), _ort_run(model, {"x": x})
    for k in ("y1", "y2", "y3"):
        _close(got[k], ref[k])


def test_zero_pads_fold_into_convs():
    rng = np.random.default_rng(4)
    inits = [onnx.numpy_helper.from_array(a, n) for n, a in [
        ("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
        ("p0", np.array([0, 0, 0, 1, 0, 0, 1, 2], np.int64)), ("z", np.float32(0)),
        ("p1", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)), ("v", np.float32(0.5))]]
    vi = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Pad", ["x", "p0", "z"], ["xp"]),           # TF "SAME": folds
        helper.make_node("Conv", ["xp", "w"], ["a"], strides=[2, 2], pads=[1, 0, 0, 0]),
        helper.make_node("Pad", ["x", "p1", "v"], ["xq"]),           # pads with 0.5: stays
        helper.make_node("Conv", ["xq", "w"], ["b"]),
        helper.make_node("Pad", ["x", "p1"], ["xr"]),                # also read by Relu: stays
        helper.make_node("Conv", ["xr", "w"], ["c"]),
        helper.make_node("Relu", ["xr"], ["d"]),
    ]
    graph = helper.make_graph(nodes, "pads", [vi("x", TensorProto.FLOAT, [1, 3, 7, 6])],
                              [vi(n, TensorProto.FLOAT, None) for n in "abcd"], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    g = simplify(read_onnx(model))
    assert g.op_counts()["Pad"] == 2
    conv_a = next(n for n in g.nodes if n.outputs == ["a"])
    assert conv_a.inputs[0] == "x" and conv_a.attrs["pads"] == [1, 1, 1, 2]
    x = rng.standard_normal((1, 3, 7, 6)).astype(np.float32)
    got, ref = run_graph(g, {"x": x}), _ort_run(model, {"x": x})
    for k in "abcd":
        _close(got[k], ref[k])


class _Normalized:
    """Three ways exporters meet an L2 normalisation of the last axis."""

    @staticmethod
    def make(kind):
        t = _torch()

        class M(t.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = t.nn.Linear(8, 6)

            def forward(self, x):
                e = self.fc(x)
                if kind == "div":
                    return e / t.norm(e, dim=1, keepdim=True)
                if kind == "normalize":
                    return t.nn.functional.normalize(e, dim=-1)
                return e / e.norm(p=2, dim=-1, keepdim=True).clamp(min=1e-6)
        return M().eval()


@pytest.mark.parametrize("dynamo", [True, False])
@pytest.mark.parametrize("kind", ["div", "normalize", "clamp"])
def test_l2_normalisation_becomes_one_rms_norm(kind, dynamo, tmp_path):
    import qrt
    t = _torch()
    t.manual_seed(0)
    model = _Normalized.make(kind)
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    proto = _export(model, t.from_numpy(x[:1]), dynamo)
    g = simplify(read_onnx(proto))
    assert g.op_counts() == {"Gemm": 1, "RMSNormalization": 1} or g.op_counts() == {"MatMul": 1, "Add": 1,
                                                                                    "RMSNormalization": 1}
    with t.no_grad():
        want = model(t.from_numpy(x)).numpy()
    _close(np.concatenate([run_graph(g, {g.inputs[0]: x[i:i + 1]})[g.outputs[0]] for i in range(4)]), want[:4])
    out = tmp_path / "l2.qmodel"
    qrt.convert(proto, x[:48], out, show_progress=False)
    got = qrt.load(out).run(x[48:])
    assert np.abs(np.linalg.norm(got, axis=1) - 1).max() < 0.03
    cos = np.sum(got * want[48:], 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want[48:], axis=1)
    assert cos.min() > 0.999, cos.min()


def test_squares_and_roots_of_a_power_spectrum_are_rewritten():
    """|X|^2 written as Pow(Sqrt(re^2 + im^2), 2): the Sqrt and Pow go; a lone Pow 2 is a Mul."""
    vi = helper.make_tensor_value_info
    two = onnx.numpy_helper.from_array(np.float32(2.0), "two")
    half = onnx.numpy_helper.from_array(np.float32(0.5), "half")
    nodes = [helper.make_node("Pow", ["re", "two"], ["re2"]), helper.make_node("Mul", ["im", "im"], ["im2"]),
             helper.make_node("Add", ["re2", "im2"], ["p"]), helper.make_node("Sqrt", ["p"], ["mag"]),
             helper.make_node("Pow", ["mag", "two"], ["pw"]), helper.make_node("Log", ["pw"], ["y"]),
             helper.make_node("Pow", ["p", "half"], ["z"])]
    graph = helper.make_graph(nodes, "spec", [vi("re", TensorProto.FLOAT, [1, 5]), vi("im", TensorProto.FLOAT, [1, 5])],
                              [vi("y", TensorProto.FLOAT, None), vi("z", TensorProto.FLOAT, None)], [two, half])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    g = simplify(read_onnx(model))
    assert g.op_counts() == {"Mul": 2, "Add": 1, "Log": 1, "Sqrt": 1}
    rng = np.random.default_rng(0)
    feeds = {"re": rng.standard_normal((1, 5)).astype(np.float32), "im": rng.standard_normal((1, 5)).astype(np.float32)}
    got, ref = run_graph(g, feeds), _ort_run(model, feeds)
    for k in "yz":
        _close(got[k], ref[k])


def test_empty_concat_inputs_are_dropped_and_scalar_outputs_run(tmp_path):
    """A Concat with an input of no elements (an exporter's zero-width padding) is what its other
    inputs are; an output of rank 0 converts and runs one batch per call."""
    import qrt
    from qrt.errors import InputError
    vi = helper.make_tensor_value_info
    inits = [onnx.numpy_helper.from_array(np.zeros((1, 0), np.float32), "nothing"),
             onnx.numpy_helper.from_array(np.ones((4, 1), np.float32), "w"),
             onnx.numpy_helper.from_array(np.zeros((0,), np.int64), "scalar")]
    nodes = [helper.make_node("Concat", ["nothing", "x"], ["c"], axis=1), helper.make_node("MatMul", ["c", "w"], ["m"]),
             helper.make_node("Reshape", ["m", "scalar"], ["y"])]
    graph = helper.make_graph(nodes, "g", [vi("x", TensorProto.FLOAT, [1, 4])], [vi("y", TensorProto.FLOAT, [])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    g = simplify(read_onnx(model))
    assert "Concat" not in g.op_counts()
    x = np.random.default_rng(0).standard_normal((16, 1, 4)).astype(np.float32)
    out = tmp_path / "scalar.qmodel"
    report = qrt.convert(model, list(x), out, show_progress=False)
    assert report.agreement[0].top1_agreement is None
    m = qrt.load(out)
    y = m.run(x[0])
    assert y.shape == () and abs(float(y) - float(x[0].sum())) < 0.05
    with pytest.raises(InputError, match="scalar"):
        m.run(x[:2].reshape(2, 4))


# --------------------------------------------------------------------------- single ops vs ONNX Runtime

def _op_case(op, inputs, attrs=None, consts=None, opset=17, n_out=1):
    """A one-node model: inputs {name: array} are graph inputs, consts {name: array} initializers."""
    consts = consts or {}
    names = list(inputs) + list(consts)
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, [n if n is not None else "" for n in names], outs, **(attrs or {}))
    vi = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()]
    inits = [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    graph = helper.make_graph([node], op, vi, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                               for o in outs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


W33 = _rand(6, 3, 3, 3, seed=1)
OP_CASES = {
    "conv_same_upper": ("Conv", {"x": _rand(1, 3, 7, 8)}, dict(auto_pad="SAME_UPPER", strides=[2, 2]), {"w": W33}),
    "conv_same_lower": ("Conv", {"x": _rand(1, 3, 7, 8)}, dict(auto_pad="SAME_LOWER", strides=[2, 3]), {"w": W33}),
    "conv_valid_dil": ("Conv", {"x": _rand(2, 3, 9, 9)}, dict(auto_pad="VALID", dilations=[2, 1]), {"w": W33}),
    "conv_asym_pads": ("Conv", {"x": _rand(1, 3, 6, 6)}, dict(pads=[0, 1, 2, 0]),
                       {"w": W33, "b": _rand(6, seed=2)}),
    "conv_1d": ("Conv", {"x": _rand(1, 4, 11)}, dict(pads=[2, 1], strides=[2], group=2), {"w": _rand(6, 2, 4)}),
    "conv_depthwise_mult": ("Conv", {"x": _rand(1, 3, 8, 7)}, dict(group=3, pads=[1, 1, 1, 1], strides=[2, 1]),
                            {"w": _rand(6, 1, 3, 3)}),
    "maxpool_ceil_dil": ("MaxPool", {"x": _rand(1, 2, 10, 9)}, dict(kernel_shape=[3, 2], strides=[2, 2],
                                                                     ceil_mode=1, dilations=[1, 2]), None),
    "maxpool_same": ("MaxPool", {"x": _rand(1, 2, 7, 7)}, dict(kernel_shape=[3, 3], strides=[2, 2],
                                                               auto_pad="SAME_UPPER"), None),
    "avgpool_pad_excl": ("AveragePool", {"x": _rand(1, 2, 7, 6)},
                         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1), None),
    "avgpool_pad_incl": ("AveragePool", {"x": _rand(1, 2, 7, 6)},
                         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1], ceil_mode=1,
                              count_include_pad=1), None),
    "gemm_trans": ("Gemm", {"a": _rand(4, 3)}, dict(transA=1, transB=1, alpha=0.7, beta=1.3),
                   {"b": _rand(5, 4), "c": _rand(5)}),
    "matmul_batched": ("MatMul", {"a": _rand(2, 3, 4)}, None, {"b": _rand(4, 5)}),
    "clip_inputs": ("Clip", {"x": _rand(3, 4)}, None, {"lo": np.float32(-0.5), "hi": np.float32(0.7)}),
    "hardsigmoid": ("HardSigmoid", {"x": _rand(3, 4) * 4}, dict(alpha=0.3, beta=0.4), None),
    "erf": ("Erf", {"x": _rand(50) * 2}, None, None),
    "softmax_axis1": ("Softmax", {"x": _rand(2, 3, 4)}, dict(axis=1), None),
    "logsoftmax": ("LogSoftmax", {"x": _rand(2, 5)}, None, None),
    "reducemean_attr": ("ReduceMean", {"x": _rand(2, 3, 4)}, dict(axes=[0, 2], keepdims=0), None, 13),
    "reducemean_input": ("ReduceMean", {"x": _rand(2, 3, 4)}, dict(keepdims=1), {"axes": np.array([-1], np.int64)},
                         18),
    # the Reduce* of REDUCE: axes as an attribute (before opset 13 / 18) or an input, keepdims,
    # every axis by default, noop_with_empty_axes (L2 then is |x|, SumSquare x^2)
    "reducesum_input": ("ReduceSum", {"x": _rand(2, 3, 4)}, dict(keepdims=0), {"axes": np.array([0, -1], np.int64)},
                        13),
    "reducesum_default_axes": ("ReduceSum", {"x": _rand(2, 3, 4)}, None, None, 13),
    "reducesum_noop": ("ReduceSum", {"x": _rand(2, 3, 4)}, dict(noop_with_empty_axes=1), None, 13),
    "reducemax_attr": ("ReduceMax", {"x": _rand(2, 3, 4)}, dict(axes=[1], keepdims=1), None, 13),
    "reducemin_input": ("ReduceMin", {"x": _rand(2, 3, 4)}, dict(keepdims=0), {"axes": np.array([-2], np.int64)},
                        18),
    "reducel2_attr": ("ReduceL2", {"x": _rand(3, 2, 2)}, dict(axes=[2], keepdims=0), None, 13),
    "reducel2_default_axes": ("ReduceL2", {"x": _rand(3, 2, 2)}, None, None, 18),
    "reducel2_noop": ("ReduceL2", {"x": _rand(2, 3)}, dict(noop_with_empty_axes=1),
                      {"axes": np.array([], np.int64)}, 18),
    "reducesumsquare_input": ("ReduceSumSquare", {"x": _rand(3, 2, 2)}, dict(keepdims=1),
                              {"axes": np.array([-2], np.int64)}, 18),
    "reducesumsquare_noop": ("ReduceSumSquare", {"x": _rand(2, 3)}, dict(noop_with_empty_axes=1), None, 18),
    "pad_reflect_axes": ("Pad", {"x": _rand(1, 2, 4, 5)}, dict(mode="reflect"),
                         {"pads": np.array([1, 2, 2, 0], np.int64), "v": np.float32(0),
                          "axes": np.array([2, 3], np.int64)}, 18),
    "pad_negative": ("Pad", {"x": _rand(1, 2, 4, 5)}, None,
                     {"pads": np.array([0, 0, -1, 2, 0, 0, 1, -2], np.int64), "v": np.float32(1.5)}),
    "slice_neg_step": ("Slice", {"x": _rand(4, 6)}, None,
                       {"s": np.array([-1, 5], np.int64), "e": np.array([-100, 0], np.int64),
                        "a": np.array([0, 1], np.int64), "st": np.array([-2, -1], np.int64)}),
    "split_uneven": ("Split", {"x": _rand(2, 7)}, dict(axis=1, num_outputs=3), None, 18, 3),
    "split_input": ("Split", {"x": _rand(6, 2)}, None, {"split": np.array([1, 5], np.int64)}, 13, 2),
    "transpose": ("Transpose", {"x": _rand(2, 3, 4)}, dict(perm=[2, 0, 1]), None),
    "gather_neg": ("Gather", {"x": _rand(5, 3)}, dict(axis=0), {"i": np.array([[-1, 0], [2, 4]], np.int64)}),
    "resize_nearest_asym": ("Resize", {"x": _rand(1, 2, 3, 4)},
                            dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
                            {"roi": np.zeros(0, np.float32), "scales": np.array([1, 1, 2.5, 1.5], np.float32)}),
    "resize_linear_half": ("Resize", {"x": _rand(1, 2, 5, 4)}, dict(mode="linear"),
                           {"roi": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32),
                            "sizes": np.array([1, 2, 3, 9], np.int64)}),
    "expand": ("Expand", {"x": _rand(3, 1)}, None, {"s": np.array([2, 3, 4], np.int64)}),
    "prelu": ("PRelu", {"x": _rand(2, 3, 4)}, None, {"s": np.array([[0.1], [-0.2], [0.3]], np.float32)}),
    "layernorm": ("LayerNormalization", {"x": _rand(2, 3, 4)}, dict(axis=-2),
                  {"s": _rand(3, 4), "b": _rand(3, 4)}),
    "pow_const": ("Pow", {"x": np.abs(_rand(3, 4))}, None, {"e": np.float32(1.7)}),
}


@pytest.mark.parametrize("case", list(OP_CASES))
def test_op_matches_onnxruntime(case):
    op, inputs, attrs, consts, *rest = OP_CASES[case]
    opset = rest[0] if rest else 17
    n_out = rest[1] if len(rest) > 1 else 1
    model = _op_case(op, inputs, attrs, consts, opset, n_out)
    ref = _ort_run(model, inputs)
    g = read_onnx(model)
    got = run_graph(g, inputs)
    for k in ref:
        assert got[k].dtype == np.float32
        _close(got[k], ref[k], rel=2e-6 if op != "Erf" else 1e-6)


def test_supported_ops_table():
    assert SUPPORTED_OPS == frozenset(OPS)
    for op in ("Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Neg", "Relu", "Clip",
               "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Erf", "Gelu", "Softmax",
               "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax",
               "ReduceMin", "ReduceL2", "ReduceSumSquare", "Concat", "Reshape",
               "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Pad", "Identity", "Dropout",
               "BatchNormalization", "Constant", "Shape", "Gather", "Slice", "Cast", "Expand", "Split",
               "ConstantOfShape", "Range", "Resize"):
        assert op in SUPPORTED_OPS, op


def test_run_graph_observes_every_value_and_frees_memory():
    model = _op_case("Conv", {"x": _rand(1, 3, 7, 8)}, dict(pads=[1, 1, 1, 1]), {"w": W33})
    # x -> Conv -> y0 -> Relu -> r -> Sigmoid -> s (graph output)
    model.graph.node.extend([helper.make_node("Relu", ["y0"], ["r"]), helper.make_node("Sigmoid", ["r"], ["s"])])
    del model.graph.output[:]
    model.graph.output.extend([helper.make_tensor_value_info("s", TensorProto.FLOAT, None)])
    g = read_onnx(model)
    seen = []
    out = run_graph(g, {"x": _rand(1, 3, 7, 8)}, observe=lambda n, a: seen.append((n, a.shape)))
    assert [n for n, _ in seen] == ["x", "y0", "r", "s"]
    assert list(out) == ["s"]
    out = run_graph(g, {"x": _rand(1, 3, 7, 8)}, outputs=["y0", "s"])
    assert set(out) == {"y0", "s"} and out["y0"].shape == (1, 6, 7, 8)

    import gc
    import weakref

    class Tracked(np.ndarray):
        pass

    refs = {}
    orig = OPS["Relu"]

    def relu(node, inputs, graph):  # the Conv output must be gone once Relu (its last reader) ran
        res = orig(node, inputs, graph)[0].view(Tracked)
        refs["r"] = weakref.ref(res)
        return [res]

    OPS["Relu"] = relu
    try:
        run_graph(g, {"x": _rand(1, 3, 7, 8)})
        gc.collect()
        assert refs["r"]() is None
    finally:
        OPS["Relu"] = orig


# --------------------------------------------------------------------------- errors

def test_unsupported_ops_listed_with_every_node():
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("RNN", ["x", "w", "r"], ["h"], name=f"rnn{i}", hidden_size=2) for i in range(7)]
    nodes += [helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk"),
              helper.make_node("NonMaxSuppression", ["x", "x"], ["sel"], name="nms"),
              helper.make_node("Relu", ["x"], ["ok"], name="fine"),
              helper.make_node("Foo", ["x"], ["foo"], name="custom", domain="com.example")]
    graph = helper.make_graph(nodes, "bad", [vi("x", TensorProto.FLOAT, [1, 2, 3])],
                              [vi("ok", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedOpsError) as e:
        read_onnx(model)
    err = e.value
    assert isinstance(err, QrtError)
    assert set(err.ops) == {"RNN", "TopK", "NonMaxSuppression", "com.example::Foo"}
    assert err.ops["RNN"] == [f"rnn{i}" for i in range(7)]
    msg = str(err)
    for s in ("RNN", "TopK", "NonMaxSuppression", "com.example::Foo", "'rnn0'", "'rnn4'", "2 more", "'topk'",
              "'nms'", "'custom'", "opset", "replace", "issue"):
        assert s in msg, s
    assert "'rnn5'" not in msg and "Relu" not in msg


def test_broken_files_raise_conversion_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07this is not protobuf \xff\xfe" * 10)
    with pytest.raises(ConversionError, match="model.onnx"):
        read_onnx(bad)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ConversionError, match="empty.onnx"):
        read_onnx(str(empty))
    with pytest.raises(ConversionError, match="no such file"):
        read_onnx(tmp_path / "missing.onnx")
    text = tmp_path / "notes.onnx"
    text.write_text("just some text, not a model\n" * 20)
    with pytest.raises(ConversionError, match="notes.onnx"):
        read_onnx(text)


def test_old_opset_upgraded_and_dynamic_shapes_rejected():
    vi = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [vi("x", TensorProto.FLOAT, ["n", 3, "h", 4])], [vi("y", TensorProto.FLOAT, None)])
    old = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=9)
    with pytest.raises(ConversionError, match="dynamic dimension 2"):  # upgraded, then read
        read_onnx(old)
    g = read_onnx(old, input_shapes={"x": (1, 3, 5, 4)})
    assert g.notes == ["opset 11 upgraded to 17 (onnx.version_converter)"]
    assert [n.op for n in g.nodes] == ["Relu"]
    new = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    with pytest.raises(ConversionError, match="dynamic dimension 2"):
        read_onnx(new)
    g = read_onnx(new, input_shapes={"x": (2, 3, 5, 4)})
    assert g.shapes["x"] == (2, 3, 5, 4)
    graph.input[0].type.tensor_type.shape.dim[2].dim_value = 6
    g = read_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9))
    assert g.inputs == ["x"] and g.shapes["x"] == (1, 3, 6, 4)  # dynamic batch -> 1


# --------------------------------------------------------------------------- QDQ models

def test_qdq_model_from_onnxruntime_quantizer(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    t = _torch()
    t.manual_seed(2)
    nn = t.nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, groups=8),
                          nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    x = t.randn(1, 3, 12, 12)
    float_path, q_path = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(_export(model, x, dynamo=False), str(float_path))

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.it, None)

    results = {}
    for act in (QuantType.QInt8, QuantType.QUInt8):
        root = logging.getLogger()
        level = root.level
        try:  # ORT's quantizer logs advice on the root logger
            root.setLevel(logging.ERROR)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                quantize_static(str(float_path), str(q_path), Reader(), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=act, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        qproto = onnx.load(str(q_path))
        assert {n.op_type for n in qproto.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
        g = simplify(read_onnx(q_path))
        assert not {"QuantizeLinear", "DequantizeLinear"} & set(g.op_counts())
        # activations: the input and every node output ORT quantized, in qrt's int8 convention
        assert "x" in g.fixed_qparams
        assert g.outputs == ["y" if "y" in g.fixed_qparams else g.outputs[0]]
        for name, (s, z) in g.fixed_qparams.items():
            assert isinstance(s, float) and s > 0 and isinstance(z, int) and -128 <= z <= 127, (name, s, z)
        assert len(g.fixed_qparams) >= 5
        # weights: per output channel
        convs = [n for n in g.nodes if n.op in ("Conv", "Gemm")]
        assert len(convs) == 3
        for n in convs:
            scales, axis = g.weight_qparams[n.inputs[1]]
            assert scales.dtype == np.float32 and axis == 0
            assert scales.shape == (g.constants[n.inputs[1]].shape[0],)
            wq = g.constants[n.inputs[1]] / scales.reshape((-1,) + (1,) * (g.constants[n.inputs[1]].ndim - 1))
            assert np.allclose(wq, np.round(wq), atol=1e-3) and np.abs(wq).max() <= 128
        # ORT removed the ReLUs (the Q clamps at 0): the reader puts them back
        assert g.op_counts().get("Relu", 0) == 2
        with t.no_grad():
            ref = model(x).numpy()
        got = run_graph(g, {"x": x.numpy()})[g.outputs[0]]
        _close(got, ref, rel=0.03)  # only the weights are quantized in the float graph
        results[act] = g.fixed_qparams
    # the same ranges whether ORT stored int8 or uint8 (uint8 zero points are shifted by 128)
    q8, u8 = results[QuantType.QInt8], results[QuantType.QUInt8]
    assert set(q8) == set(u8)
    for k in q8:
        assert abs(q8[k][0] - u8[k][0]) <= 1e-6 * q8[k][0] and abs(q8[k][1] - u8[k][1]) <= 1, (k, q8[k], u8[k])


def test_qdq_handmade_pairs_and_bias():
    """Q->DQ on an activation that is a graph output, an int8 per-tensor weight, an int32 bias,
    and a Q->DQ on a float weight (PyTorch QAT style)."""
    rng = np.random.default_rng(5)
    wq = rng.integers(-50, 51, (4, 3, 1, 1)).astype(np.int8)
    bq = rng.integers(-500, 500, 4).astype(np.int32)
    wf = rng.standard_normal((4, 4)).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(a, n) for n, a in [
        ("wq", wq), ("ws", np.float32(0.02)), ("bq", bq), ("bs", np.float32(0.001)),
        ("xs", np.float32(0.05)), ("xz", np.uint8(128)), ("ys", np.float32(0.1)), ("yz", np.int8(-3)),
        ("wf", wf), ("wfs", np.full(4, 0.03, np.float32)), ("wfz", np.zeros(4, np.int8)),
        ("wq2", rng.integers(-127, 128, (5, 4)).astype(np.int8)), ("ws2", np.linspace(0.01, 0.02, 5, dtype=np.float32)),
        ("wz2", np.zeros(5, np.int8))]]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
        helper.make_node("DequantizeLinear", ["bq", "bs"], ["bd"]),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["c"]),
        helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"]),
        helper.make_node("QuantizeLinear", ["wf", "wfs", "wfz"], ["wfq"], axis=1),
        helper.make_node("DequantizeLinear", ["wfq", "wfs", "wfz"], ["wfd"], axis=1),
        helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["yt", "wfd"], ["z"]),
        helper.make_node("DequantizeLinear", ["wq2", "ws2", "wz2"], ["wd2"], axis=0),
        helper.make_node("Transpose", ["wd2"], ["wd2t"], perm=[1, 0]),
        helper.make_node("MatMul", ["z", "wd2t"], ["z2"]),
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "qdq", [vi("x", TensorProto.FLOAT, [1, 3, 2, 2])],
                              [vi("y", TensorProto.FLOAT, None), vi("z", TensorProto.FLOAT, None),
                               vi("z2", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    g = read_onnx(model)
    assert g.outputs == ["y", "z", "z2"]
    assert g.fixed_qparams == {"x": (pytest.approx(0.05), 0), "y": (pytest.approx(0.1), -3)}
    assert g.weight_qparams["wd"][1] == 0 and g.weight_qparams["wd"][0].shape == (1,)
    assert g.weight_qparams["wfd"][1] == 1 and g.weight_qparams["wfd"][0].shape == (4,)
    assert "bd" in g.constants and "bd" not in g.weight_qparams
    np.testing.assert_allclose(g.constants["bd"], bq * 0.001, rtol=1e-6)
    np.testing.assert_allclose(g.constants["wfd"], np.clip(np.round(wf / 0.03), -128, 127) * 0.03, rtol=1e-6)
    assert all(c.dtype in (np.float32, np.int64) for c in g.constants.values())
    simplify(g)
    assert g.fixed_qparams["y"] == (pytest.approx(0.1), -3)
    # the folded Transpose of a per-channel weight keeps its qparams, on the new axis
    w2 = next(n for n in g.nodes if n.outputs == ["z2"]).inputs[1]
    assert g.constants[w2].shape == (4, 5)
    np.testing.assert_array_equal(g.weight_qparams[w2][0], np.linspace(0.01, 0.02, 5, dtype=np.float32))
    assert g.weight_qparams[w2][1] == 1
    x = rng.uniform(-3, 3, (1, 3, 2, 2)).astype(np.float32)
    got = run_graph(g, {"x": x})
    ref = _ort_run(model, {"x": x})
    # the float graph skips the activation rounding: within a few quantization steps of ORT
    assert np.abs(got["y"] - ref["y"]).max() <= 0.15
    np.testing.assert_allclose(got["z"], got["y"].transpose(0, 2, 3, 1) @ g.constants["wfd"], rtol=1e-5, atol=1e-5)


def test_qdq_from_pytorch_qat_export():
    """Fake-quantized weights (QuantizeLinear -> DequantizeLinear on a float initializer, per
    channel) and activations, as the legacy exporter writes a torch.ao QAT model."""
    t = _torch()
    from torch.ao import quantization as tq
    t.manual_seed(3)
    nn = t.nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.c, self.dq = tq.QuantStub(), nn.Conv2d(3, 8, 3, padding=1), tq.DeQuantStub()

        def forward(self, x):
            return self.dq(t.relu(self.c(self.q(x))))

    model = M().train()
    model.qconfig = tq.QConfig(
        activation=tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=255),
        weight=tq.FakeQuantize.with_args(observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-128,
                                         quant_max=127, dtype=t.qint8, qscheme=t.per_channel_symmetric, ch_axis=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare_qat(model, inplace=True)
        for _ in range(3):
            model(t.randn(2, 3, 8, 8))
        model.eval()
        model.apply(tq.disable_observer)
    x = t.randn(1, 3, 8, 8)
    g = simplify(read_onnx(_export(model, x, dynamo=False)))
    assert not {"QuantizeLinear", "DequantizeLinear"} & set(g.op_counts())
    conv = next(n for n in g.nodes if n.op == "Conv")
    scales, axis = g.weight_qparams[conv.inputs[1]]
    assert scales.shape == (8,) and axis == 0
    np.testing.assert_allclose(scales, model.c.weight_fake_quant.scale.numpy(), rtol=1e-6)
    s_in, z_in = g.fixed_qparams[g.inputs[0]]
    assert s_in == pytest.approx(float(model.q.activation_post_process.scale)) and \
        z_in == int(model.q.activation_post_process.zero_point) - 128
    assert conv.outputs[0] in g.fixed_qparams
    with t.no_grad():
        ref = model(x).numpy()
    # only the activations' rounding differs from the fake-quantized PyTorch model
    got = run_graph(g, {g.inputs[0]: x.numpy()})[g.outputs[0]]
    _close(got, ref, rel=0.03)
