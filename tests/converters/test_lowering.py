"""Every op the lowering handles, in small PyTorch models: the int8 model must track the float
one closely (the layout changes, axis remaps, fusions and tables are where bugs hide)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qrt
from qrt.format import OpCode

torch.set_num_threads(1)


class Block(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fn = fn

    def forward(self, x):
        return self.fn(self, self.conv(x))


class PReLUBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.PReLU(8)

    def forward(self, x):
        return self.act(self.conv(x))


class BNOnInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(self.bn(x))


CASES = {
    "relu6": lambda s, y: F.relu6(y),
    "clip": lambda s, y: torch.clamp(y, -0.5, 1.5),
    "sigmoid": lambda s, y: torch.sigmoid(y),
    "silu": lambda s, y: y * torch.sigmoid(y),
    "hardswish": lambda s, y: F.hardswish(y),
    "tanh": lambda s, y: torch.tanh(y),
    "gelu": lambda s, y: F.gelu(y),
    "leaky": lambda s, y: F.leaky_relu(y, 0.1),
    "flatten_linear": lambda s, y: torch.flatten(y, 1) @ torch.linspace(-1, 1, 8 * 8 * 8 * 5).reshape(512, 5),
    "softmax_channels": lambda s, y: torch.softmax(y, dim=1),
    "concat": lambda s, y: torch.cat([y, torch.relu(y)], dim=1),
    "transpose": lambda s, y: y.permute(0, 2, 3, 1).contiguous() * 1.0 + 0.0,
    "pad": lambda s, y: F.pad(y, (1, 2, 0, 1)),
    "avgpool_ceil": lambda s, y: F.avg_pool2d(y, 3, 2, ceil_mode=True),
    "maxpool": lambda s, y: F.max_pool2d(y, 2),
    "mean_hw": lambda s, y: y.mean(dim=(2, 3)),
    "mean_c_keep": lambda s, y: y.mean(dim=1, keepdim=True),
    "sub_div_const": lambda s, y: (y - 0.25) / 2.0,
    "mul_channel_const": lambda s, y: y * torch.linspace(0.5, 2, 8).reshape(1, 8, 1, 1),
    "residual_add": lambda s, y: F.relu(y + torch.relu(y)),
    "squeeze_unsqueeze": lambda s, y: y.mean(dim=(2, 3)).unsqueeze(-1).unsqueeze(-1) + y,
    "reshape_split_channels": lambda s, y: y.reshape(y.shape[0], 2, 4, 64).mean(dim=1),
    "maximum_broadcast": lambda s, y: torch.maximum(y, y.mean(dim=1, keepdim=True)),
    "minimum_const_relu": lambda s, y: F.relu(torch.minimum(y, torch.linspace(-0.5, 0.5, 8).reshape(1, 8, 1, 1))),
    # REDUCE (SPEC.md 2.13.25): ReduceSum, ReduceMax, ReduceMin, ReduceL2
    "reduce_sum_hw": lambda s, y: y.sum(dim=(2, 3)),
    "reduce_sum_c_keep": lambda s, y: y.sum(dim=1, keepdim=True),
    "reduce_max_c": lambda s, y: y.amax(dim=1),
    "reduce_min_hw_keep": lambda s, y: y.amin(dim=(2, 3), keepdim=True),
    "reduce_l2_c": lambda s, y: torch.linalg.vector_norm(y, dim=1),
}


def _convert(module, tmp_path, name, **scheme):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3, 8, 8)).astype(np.float32)
    path = tmp_path / f"{name}.qmodel"
    report = qrt.convert(module, x[:30], path, example_inputs=torch.tensor(x[:1]), method="minmax",
                         show_progress=False, **scheme)
    return x, path, report


# Every case in every domain the lowering has: int8, int16 (with int8 where an op has no int16
# form), float32 islands, and the float-activation modes around quantized Conv / Gemm.
SCHEMES = {
    "int8": ({}, 0.99),
    "int16": ({"activations": "int16"}, 0.999),
    "float": ({"mode": "float"}, 0.99999),
    "dynamic": ({"mode": "dynamic"}, 0.995),
    "int4 g32": ({"mode": "weight-only", "weights": "int4", "group_size": 32}, 0.97),
}


@pytest.mark.parametrize("scheme", [s if s in ("int8", "int16") else pytest.param(s, marks=pytest.mark.slow)
                                    for s in SCHEMES])
@pytest.mark.parametrize("name", sorted(CASES))
def test_op_lowering_tracks_float(name, scheme, tmp_path):
    torch.manual_seed(0)
    module = Block(CASES[name]).eval()
    kw, min_cos = SCHEMES[scheme]
    x, path, report = _convert(module, tmp_path, name, **kw)
    m = qrt.load(path)
    want = module(torch.tensor(x[30:])).detach().numpy()
    got = m.run(x[30:])
    assert got.shape == want.shape
    cos = float(np.sum(want * got) / (np.linalg.norm(want) * np.linalg.norm(got)))
    assert cos > min_cos, (name, scheme, cos, report.qrt_ops, report.forms)
    assert np.array_equal(got, qrt.load(path, kernels="reference").run(x[30:]))


@pytest.mark.parametrize("scheme", ["int8", "int16"])
def test_softmax_lowers_with_its_fixed_output(scheme, tmp_path):
    """Softmax computes in the scheme's domain with the form's fixed output: int8 (1/256, -128),
    int16 (1/32768, 0; SPEC.md 2.13.15)."""
    from qrt.numerics import SOFTMAX_OUTPUT, SOFTMAX_OUTPUT_16
    from qrt.ops import op_form

    module = Block(CASES["softmax_channels"]).eval()
    _convert(module, tmp_path, "softmax", **SCHEMES[scheme][0])
    model = qrt.read_model(tmp_path / "softmax.qmodel")
    index = [op.opcode for op in model.operators].index(OpCode.SOFTMAX)
    assert op_form(model, index).name == scheme
    y = model.tensors[model.operators[index].outputs[0]]
    fixed = SOFTMAX_OUTPUT_16 if scheme == "int16" else SOFTMAX_OUTPUT
    assert (float(y.quant.scale[0]), int(y.quant.zero_point[0])) == fixed


def test_prelu_and_unfolded_batchnorm(tmp_path):
    for module in (PReLUBlock(), BNOnInput()):
        torch.manual_seed(0)
        module.eval()
        if isinstance(module, BNOnInput):
            with torch.no_grad():
                module.bn.running_mean.uniform_(-1, 1)
                module.bn.running_var.uniform_(0.5, 2)
        x, path, _ = _convert(module, tmp_path, type(module).__name__)
        want = module(torch.tensor(x[30:])).detach().numpy()
        got = qrt.load(path).run(x[30:])
        cos = float(np.sum(want * got) / (np.linalg.norm(want) * np.linalg.norm(got)))
        assert cos > 0.99, (type(module).__name__, cos)


def test_relu_fuses_into_conv_and_silu_is_one_table(tmp_path):
    module = Block(lambda s, y: torch.relu(y) * torch.sigmoid(torch.relu(y))).eval()
    _, path, report = _convert(module, tmp_path, "fusion")
    ops = [op.opcode for op in qrt.read_model(path).operators]
    assert ops == [OpCode.CONV_2D, OpCode.LUT], ops
    assert qrt.read_model(path).operators[0].activation.name == "RELU"


def test_max_and_min_lower_to_maximum_and_minimum(tmp_path):
    """ONNX Max / Min of two operands become MAXIMUM / MINIMUM (a following Relu fused)."""
    module = Block(lambda s, y: F.relu(torch.minimum(torch.maximum(y, 0.5 * y), y.mean(dim=1, keepdim=True)))).eval()
    _, path, report = _convert(module, tmp_path, "extremum")
    ops = qrt.read_model(path).operators
    codes = [op.opcode for op in ops]
    assert OpCode.MAXIMUM in codes and OpCode.MINIMUM in codes, report.qrt_ops
    assert ops[codes.index(OpCode.MINIMUM)].activation.name == "RELU"
    assert qrt.read_model(path).min_runtime_version == "0.2.0"


class Signal(nn.Module):
    """A 1-D front end on [N, 4, 24] signals, then `fn`."""

    def __init__(self, fn):
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3, padding=1)
        self.fn = fn
        self.conv2 = nn.Conv1d(8, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv1d(8, 8, 5, padding=4, dilation=2, groups=8)
        self.bn = nn.BatchNorm1d(8)
        self.lin = nn.Linear(8, 6)
        self.ln = nn.LayerNorm(8)

    def forward(self, x):
        return self.fn(self, F.gelu(self.conv(x)))


SIGNAL_CASES = {
    "conv1d_strided": lambda s, y: s.conv2(y),
    "depthwise_dilated": lambda s, y: s.dw(y),
    "batchnorm1d": lambda s, y: torch.relu(s.bn(y)),
    "maxpool1d": lambda s, y: F.max_pool1d(y, 3, 2, padding=1),
    "avgpool1d": lambda s, y: F.avg_pool1d(y, 2),
    "global_pool": lambda s, y: s.lin(F.adaptive_avg_pool1d(y, 1).squeeze(-1)),
    "mean_over_time": lambda s, y: y.mean(dim=2),
    "softmax_channels": lambda s, y: torch.softmax(y, dim=1),
    "concat_time": lambda s, y: torch.cat([y, -y], dim=2),
    # Whisper's front end: frames as tokens after the convolutions
    "tokens": lambda s, y: s.lin(s.ln(F.gelu(s.conv2(y)).transpose(1, 2))),
    "tokens_pos": lambda s, y: s.ln(s.conv2(y).permute(0, 2, 1) + torch.linspace(-1, 1, 96).reshape(12, 8)),
    "l2_over_time": lambda s, y: torch.linalg.vector_norm(y, dim=2),
    "max_over_channels": lambda s, y: y.amax(dim=1, keepdim=True),
    "token_norms": lambda s, y: s.lin(s.ln(s.conv2(y).transpose(1, 2)) / 4.0).norm(dim=-1),
}


@pytest.mark.parametrize("scheme", ["int8", "int16", pytest.param("float", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", sorted(SIGNAL_CASES))
def test_signal_ops_track_float(name, scheme, tmp_path):
    """1-D convolutions and pools run as 2-D ones of height 1 on channels-last signals [N, L, C],
    whose bytes are those of the image [N, 1, L, C]; a transpose to frames-as-tokens is free."""
    torch.manual_seed(0)
    module = Signal(SIGNAL_CASES[name]).eval()
    if name == "batchnorm1d":
        with torch.no_grad():
            module.bn.running_mean.uniform_(-1, 1)
            module.bn.running_var.uniform_(0.5, 2)
    x = np.random.default_rng(1).standard_normal((40, 4, 24)).astype(np.float32)
    path = tmp_path / f"{name}.qmodel"
    report = qrt.convert(module, x[:30], path, example_inputs=torch.tensor(x[:1]), method="minmax",
                         show_progress=False, **SCHEMES[scheme][0])
    m = qrt.load(path)
    want = module(torch.tensor(x[30:])).detach().numpy()
    got = m.run(x[30:])
    assert got.shape == want.shape
    cos = float(np.sum(want * got) / (np.linalg.norm(want) * np.linalg.norm(got)))
    assert cos > SCHEMES[scheme][1], (name, scheme, cos, report.qrt_ops)
    assert np.array_equal(got, qrt.load(path, kernels="reference").run(x[30:]))
    transposes = [op for op in qrt.read_model(path).operators if op.opcode == OpCode.TRANSPOSE]
    want_transposes = {"tokens": 1, "tokens_pos": 1, "mean_over_time": 1, "global_pool": 1, "l2_over_time": 1,
                       "token_norms": 1}.get(name, 2)  # in (and out)
    assert len(transposes) == want_transposes, report.qrt_ops


@pytest.mark.parametrize("form", ["erf", "erf_scaled_first", "tanh", "tanh_pow"])
def test_gelu_is_one_table(form, tmp_path):
    """GELU as exporters before opset 20 write it (Div by sqrt 2 or Mul by 1/sqrt 2, Erf; or the
    tanh form with x^3 as x * x * x or Pow 3; then Add 1, Mul by x and by 0.5 in either order)
    becomes one table (passes.fuse_gelus)."""
    import math

    c = math.sqrt(2 / math.pi)
    fn = {"erf": lambda s, y: F.gelu(y),
          "erf_scaled_first": lambda s, y: (y * 0.5) * (1.0 + torch.erf(y * (1 / math.sqrt(2.0)))),
          "tanh": lambda s, y: F.gelu(y, approximate="tanh"),
          "tanh_pow": lambda s, y: 0.5 * y * (1.0 + torch.tanh(c * (y + 0.044715 * torch.pow(y, 3.0))))}[form]
    module = Block(fn).eval()
    x, path, report = _convert(module, tmp_path, form)
    ops = [op.opcode for op in qrt.read_model(path).operators]
    assert ops == [OpCode.CONV_2D, OpCode.LUT], report.qrt_ops
    want = module(torch.tensor(x[30:])).detach().numpy()
    got = qrt.load(path).run(x[30:])
    assert float(np.sum(want * got) / (np.linalg.norm(want) * np.linalg.norm(got))) > 0.999


@pytest.mark.parametrize("kw", [{"weights": "int4"}, {"weight_rounding": "gptq"}, {"float_ops": ["node_conv1d_1"]},
                                {"activations": "int16", "float_ops": ["node_conv1d_1"]}],
                         ids=["int4_bias_corrected", "gptq", "float_reader", "int16_and_float_readers"])
def test_signal_schemes(kw, tmp_path):
    """Conv1d inputs calibrated per channel (bias correction, GPTQ's Gram matrices of 1-D
    windows), and one signal read as an image by convolutions in different forms."""
    torch.manual_seed(0)

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.conv2 = nn.Conv1d(4, 16, 3, padding=1), nn.Conv1d(16, 8, 3, stride=2, padding=1)
            self.conv3 = nn.Conv1d(16, 8, 3, stride=2, padding=1)

        def forward(self, x):
            y = F.relu(self.conv(x))
            return self.conv2(y) + self.conv3(y)

    module = Two().eval()
    x = np.random.default_rng(2).standard_normal((40, 4, 24)).astype(np.float32)
    path = tmp_path / "two.qmodel"
    report = qrt.convert(module, x[:30], path, example_inputs=torch.tensor(x[:1]), show_progress=False, **kw)
    want = module(torch.tensor(x[30:])).detach().numpy()
    got = qrt.load(path).run(x[30:])
    cos = float(np.sum(want * got) / (np.linalg.norm(want) * np.linalg.norm(got)))
    assert cos > (0.97 if kw.get("weights") == "int4" else 0.99), (kw, cos, report.notes)


class TwoHeads(nn.Module):
    """A detector's output: boxes in pixels (0..300) next to class scores (0..1), one Concat."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.box, self.cls = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        f = torch.relu(self.conv(x))
        return torch.cat([150 + 150 * torch.tanh(self.box(f)), torch.sigmoid(self.cls(f))], 1).flatten(2)


def test_an_output_concat_keeps_each_inputs_precision(tmp_path):
    """Joined in float32 after each input's own DEQUANTIZE: the scores keep their int8 steps of
    about 1/255, not the boxes' 300/255 (and integer_only still holds: it is the output's step)."""
    torch.manual_seed(0)
    model = TwoHeads().eval()
    x = np.random.default_rng(0).standard_normal((40, 3, 8, 8)).astype(np.float32)
    out = tmp_path / "heads.qmodel"
    report = qrt.convert(model, x[:32], out, example_inputs=(torch.from_numpy(x[:1]),), show_progress=False,
                         integer_only=True)
    assert [f.split(" ")[1] for f in report.float_ops] == ["(CONCAT,", "(RESHAPE,"]
    got = qrt.load(out).run(x[32:])
    with torch.no_grad():
        want = model(torch.from_numpy(x[32:])).numpy()
    assert np.abs(got[:, 4:] - want[:, 4:]).max() < 0.02
    assert np.abs(got[:, :4] - want[:, :4]).max() < 15.0  # 5 % of the boxes' range: int8 tanh and scaling


def test_data_movement_after_an_embedding_keeps_the_tables_parameters(tmp_path):
    """Gather from a table (an embedding) takes the table's parameters, and a Transpose after it
    (torch's batch-first GRU export) keeps them, though calibration saw only some of the rows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    table = rng.normal(0, 1, (10, 4)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("Transpose", ["e"], ["y"], perm=[1, 0, 2])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 1, 4])],
                          [numpy_helper.from_array(table, "table")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    calib = [rng.integers(0, 5, (1, 3)).astype(np.int64) for _ in range(8)]  # rows 0-4 only
    out = tmp_path / "emb.qmodel"
    qrt.convert(model, calib, out, show_progress=False, holdout=0.0)
    ids = np.array([[9, 7, 5]], np.int64)  # rows calibration never read
    got = qrt.load(out).run(ids)
    step = (table.max() - min(table.min(), 0)) / 255
    assert np.abs(got - table[ids].transpose(1, 0, 2)).max() <= step


def test_negative_pads_are_refused_by_name(tmp_path):
    """ONNX Pad may crop (negative pads); qrt's PAD does not: a ConversionError naming the node,
    before calibration, rather than a file that fails verification."""
    from onnx import TensorProto, helper, numpy_helper
    from qrt.converters import ConversionError
    pads = numpy_helper.from_array(np.array([0, 0, -1, 0, 0, 0, 2, 0], np.int64), "pads")
    g = helper.make_graph([helper.make_node("Pad", ["x", "pads"], ["y"], name="crop", mode="reflect")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [pads])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((4, 1, 2, 5, 5)).astype(np.float32)
    with pytest.raises(ConversionError, match="Pad 'crop': negative pads"):
        qrt.convert(model, list(x), tmp_path / "crop.qmodel", show_progress=False)
    assert not (tmp_path / "crop.qmodel").exists()
