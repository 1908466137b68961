"""ONNX Resize / Upsample and Pad's reflect, edge and wrap modes converted end to end (RESIZE,
SPEC.md 2.13.27; PAD modes, 2.10.20).

Against ONNX Runtime's float Resize run on the dequantized int8 input (so the input's own
rounding is not counted): nearest is exactly equal (RESIZE copies, and the tables pick ORT's
pixels: converters/resampling.py follows its float32 arithmetic); linear within the bound SPEC
2.13.27 proves, 1/2 step for the one rounding + 2 x 255 x 2^-12 for the weights (F = 11)
< 0.63 steps; int16 (F = 15) 1/2 + 2 x (2^16 - 1) x 2^-16 < 2.5 int16 steps (neighbours may be
2^16 - 1 apart). Every coordinate mode,
every nearest mode, scales up and down (2, 0.5, 1.7) and sizes (7 -> 13), batch 2, C = 3 and
17, both kernel sets bit for bit. PyTorch models (nn.Upsample, F.interpolate bilinear with and
without align_corners, ReflectionPad2d, Conv2d with padding_mode reflect, ReplicationPad2d)
exported by torch.onnx.export and compared with PyTorch. Refusals name the node and what to do."""
from __future__ import annotations

import numpy as np
import pytest

import qrt
from qrt.converters.errors import ConversionError
from qrt.format import OpCode, PadMode

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tests.converters.test_ir_passes import _export, _ort_run, _torch  # noqa: E402

COORDINATES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric",
               "tf_half_pixel_for_nn")
NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
SIZES = {  # name: (input [N, C, H, W], scales or None, sizes or None)
    "up2": ((2, 3, 5, 4), [1, 1, 2, 2], None),
    "down_half": ((1, 17, 8, 6), [1, 1, 0.5, 0.5], None),
    "up1.7_down0.6": ((2, 3, 7, 5), [1, 1, 1.7, 0.6], None),
    "sizes_7_13": ((1, 3, 7, 9), None, [1, 3, 13, 4]),
}


def resize_model(shape, attrs, scales=None, sizes=None, opset=19, axes=None):
    """One Resize node: x a graph input, roi, scales and sizes initializers (empty names when absent)."""
    inits = [numpy_helper.from_array(np.zeros(0, np.float32), "roi")]
    names = ["x", "roi", "", ""]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.array(scales, np.float32), "scales"))
        names[2] = "scales"
    if sizes is not None:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        names[3] = "sizes"
    while not names[-1]:
        names.pop()
    if axes is not None:
        attrs = dict(attrs, axes=axes)
    node = helper.make_node("Resize", names, ["y"], name="the_resize", **attrs)
    graph = helper.make_graph([node], "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _ort(model, x):
    return _ort_run(model, {"x": x})["y"]


def _converted(model, x, tmp_path, **kw):
    """{kernel set: qrt model} of `model` calibrated on x."""
    path = tmp_path / "m.qmodel"
    qrt.convert(model, [x], path, method="minmax", show_progress=False, **kw)
    return {k: qrt.load(path, kernels=k) for k in ("reference", "fast")}


def _dequantized_input(m, x):
    """x on the model input's grid, as DEQUANTIZE computes it: float32(s) * float32(q - zp)."""
    info = m.inputs[0]
    lo, hi = (-32768, 32767) if info.dtype == "int16" else (-128, 127)
    q = np.clip(np.rint(x.astype(np.float64) / info.scale) + info.zero_point, lo, hi)
    return np.float32(info.scale) * (q - info.zero_point).astype(np.float32), np.float32(info.scale)


def _check_against_ort(model, x, tmp_path, linear_bound, **kw):
    models = _converted(model, x, tmp_path, **kw)
    xd, step = _dequantized_input(models["fast"], x)
    want = _ort(model, xd)
    raw = [m.run(xd, raw=True) for m in models.values()]
    assert np.array_equal(raw[0], raw[1]), "the kernel sets differ"
    got = models["fast"].run(xd)
    assert got.shape == want.shape
    if linear_bound is None:
        assert np.array_equal(got, want), f"nearest differs at {np.argwhere(got != want)[:3].tolist()}"
    else:
        err = float(np.abs(got.astype(np.float64) - want).max()) / step
        assert err <= linear_bound, f"{err:.3f} steps > {linear_bound}"
    return models["fast"]


def _x(shape, seed=0, offset=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) * 2 + offset).astype(np.float32)


@pytest.mark.parametrize("size,ctm", [(size, ctm) for size in SIZES for ctm in COORDINATES
                                      if ctm != "tf_half_pixel_for_nn" or SIZES[size][1]])  # (opset 11's: scales)
@pytest.mark.parametrize("nearest", NEAREST)
def test_nearest_equals_onnxruntime(size, ctm, nearest, tmp_path):
    shape, scales, sizes = SIZES[size]
    opset = 11 if ctm == "tf_half_pixel_for_nn" else 19
    model = resize_model(shape, dict(mode="nearest", coordinate_transformation_mode=ctm, nearest_mode=nearest),
                         scales, sizes, opset=opset)
    m = _check_against_ort(model, _x(shape, offset=-3.0), tmp_path, None)
    assert [op.opcode for op in m.definition.operators if op.opcode == OpCode.RESIZE] == [OpCode.RESIZE]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("ctm", [c for c in COORDINATES if c != "tf_half_pixel_for_nn"])
def test_linear_within_the_proven_bound(size, ctm, tmp_path):
    shape, scales, sizes = SIZES[size]
    model = resize_model(shape, dict(mode="linear", coordinate_transformation_mode=ctm), scales, sizes)
    _check_against_ort(model, _x(shape, seed=1, offset=4.0), tmp_path, 0.5 + 2 * 255 * 2**-12)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_int16_resize(mode, tmp_path):
    shape, scales, _ = SIZES["up1.7_down0.6"]
    model = resize_model(shape, dict(mode=mode, coordinate_transformation_mode="half_pixel"), scales)
    bound = 0.5 + 2 * (2**16 - 1) * 2**-16
    m = _check_against_ort(model, _x(shape, seed=2), tmp_path, None if mode == "nearest" else bound,
                           activations="int16")
    assert {t.dtype.name for t in m.definition.tensors if t.name == "y"} == {"INT16"}


def test_float_island_resize(tmp_path):
    shape, scales, _ = SIZES["up1.7_down0.6"]
    model = resize_model(shape, dict(mode="linear", coordinate_transformation_mode="align_corners"), scales)
    x = _x(shape, seed=3)
    path = tmp_path / "f.qmodel"
    qrt.convert(model, [x], path, method="minmax", show_progress=False, mode="float")
    np.testing.assert_allclose(qrt.load(path).run(x), _ort(model, x), rtol=1e-4, atol=1e-4)


def test_resize_of_a_signal_and_axes(tmp_path):
    """A 1-D resize of [N, C, L] (the image [N, 1, L, C]), and opset 18's axes."""
    model = resize_model((2, 5, 9), dict(mode="linear"), [1, 1, 1.5])
    _check_against_ort(model, _x((2, 5, 9), seed=4), tmp_path, 0.5 + 255 * 2**-12)
    model = resize_model((1, 3, 4, 6), dict(mode="nearest"), sizes=[9, 3], axes=[3, 2], opset=18)
    _check_against_ort(model, _x((1, 3, 4, 6), seed=5), tmp_path, None)


def _upsample_model(opset):
    """Upsample (opset 7: scales attribute; 9: scales input), upgraded by the reader."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if opset == 7:
        node = helper.make_node("Upsample", ["x"], ["y"], mode="nearest", scales=[1.0, 1.0, 2.0, 3.0])
        inits = []
    else:
        node = helper.make_node("Upsample", ["x", "s"], ["y"], mode="linear")
        inits = [numpy_helper.from_array(np.array([1, 1, 2, 3], np.float32), "s")]
    graph = helper.make_graph([node], "up", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


@pytest.mark.parametrize("opset", [7, 9])
def test_upsample_of_old_opsets(opset, tmp_path):
    model = _upsample_model(opset)
    x = _x((1, 2, 3, 4), seed=6)
    m = _converted(model, x, tmp_path)["fast"]
    assert any(op.opcode == OpCode.RESIZE for op in m.definition.operators)
    xd, step = _dequantized_input(m, x)
    # Upsample's sampling is Resize's asymmetric mode; ONNX Runtime runs the old opset itself
    want = _ort_run(model, {"x": xd})["y"]
    err = float(np.abs(m.run(xd).astype(np.float64) - want).max()) / step
    assert err <= (0 if opset == 7 else 0.5 + 2 * 255 * 2**-12), err


@pytest.mark.parametrize("attrs,inputs,pattern", [  # (the float run refuses some first: same node, same cause)
    (dict(mode="cubic"), {}, r"mode 'cubic' not supported"),
    (dict(mode="linear", antialias=1), {}, r"antialias is not supported; resize without it"),
    (dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize"), {},
     r"coordinate_transformation_mode 'tf_crop_and_resize' not supported"),
    (dict(mode="nearest", keep_aspect_ratio_policy="not_larger"), {"sizes": [1, 3, 8, 8]},
     r"keep_aspect_ratio_policy other than 'stretch' not supported"),
    (dict(mode="nearest"), {"scales": [1, 2, 2, 2]}, r"it resizes the batch or channel axis, which qrt's RESIZE keeps"),
])
def test_unsupported_resize_is_refused_before_calibration(attrs, inputs, pattern, tmp_path):
    scales = inputs.get("scales", [1, 1, 2, 2] if "sizes" not in inputs else None)
    model = resize_model((1, 3, 4, 4), attrs, scales, inputs.get("sizes"))
    with pytest.raises(ConversionError, match=r"'the_resize'.*" + pattern):
        qrt.convert(model, [_x((1, 3, 4, 4))], tmp_path / "m.qmodel", show_progress=False)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------- PyTorch

def _torch_models():
    t = _torch()
    nn, F = t.nn, t.nn.functional

    class Head(nn.Module):
        """Conv, resize, conv: a detector's or a U-Net's upsampling."""

        def __init__(self, resize, pad=None, padding_mode="zeros"):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1, padding_mode=padding_mode)
            self.resize, self.pad = resize, pad or nn.Identity()
            self.b = nn.Conv2d(8, 4, 3)

        def forward(self, x):
            return self.b(self.pad(self.resize(t.relu(self.a(x)))))

    return {
        "upsample_nearest": Head(nn.Upsample(scale_factor=2, mode="nearest")),
        "bilinear": Head(lambda v: F.interpolate(v, scale_factor=1.5, mode="bilinear", align_corners=False)),
        "bilinear_align_corners": Head(lambda v: F.interpolate(v, size=(13, 7), mode="bilinear", align_corners=True)),
        "reflection_pad": Head(nn.Identity(), nn.ReflectionPad2d((1, 2, 2, 0))),
        "conv_reflect": Head(nn.Identity(), padding_mode="reflect"),
        "replication_pad": Head(nn.Upsample(scale_factor=2), nn.ReplicationPad2d(3)),
    }


@pytest.mark.parametrize("name", list(_torch_models()))
def test_torch_models(name, tmp_path):
    t = _torch()
    t.manual_seed(0)
    model = _torch_models()[name].eval()
    x = _x((2, 3, 9, 7), seed=7)
    with t.no_grad():
        want = model(t.from_numpy(x)).numpy()
    onnx_model = _export(model, t.from_numpy(x), dynamo=False)
    path = tmp_path / "m.qmodel"
    qrt.convert(onnx_model, [x], path, method="minmax", show_progress=False)
    m = qrt.load(path)
    ops = {op.opcode for op in m.definition.operators}
    if "pad" in name or "reflect" in name:
        modes = {op.options.mode for op in m.definition.operators if op.opcode == OpCode.PAD}
        assert modes == {PadMode.EDGE if "replication" in name else PadMode.REFLECT}, modes
    else:
        assert OpCode.RESIZE in ops
    got = m.run(x)
    step = float(want.max() - min(want.min(), 0)) / 255
    err = float(np.abs(got - want).max())
    assert err <= 4 * step, f"{err / step:.2f} steps"  # weights, input and output roundings


def test_reflect_pad_longer_than_the_input_is_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])
    node = helper.make_node("Pad", ["x", "p"], ["y"], name="big_pad", mode="reflect")
    pads = numpy_helper.from_array(np.array([0, 0, 3, 0, 0, 0, 0, 0], np.int64), "p")
    graph = helper.make_graph([node], "p", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [pads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(ConversionError, match=r"Pad 'big_pad': reflect pads 3, 0 of axis 2 exceed its size 3 - 1"):
        qrt.convert(model, [_x((1, 2, 3, 3))], tmp_path / "m.qmodel", show_progress=False)
