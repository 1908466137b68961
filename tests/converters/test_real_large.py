"""Converting real, pretrained models end to end, and importing a QDQ model made by ONNX
Runtime's own quantizer (everything here works offline: weights and photos ship inside packages).

1. EfficientNet-Lite0 (ImageNet weights) on 10 real photos (scikit-image, scikit-learn), by both
   routes: the PyTorch module (qrt.convert(module, ..., example_inputs=...)) and the .onnx file
   exported with torch.onnx.export(dynamo=True). Calibration: 5 random crops/flips of each photo
   (50 samples); the test images are the photos' ImageNet centre crops, which are not among the
   calibration samples. Every photo must keep a logit cosine > 0.99, and the 7 photos of
   ImageNet subjects their float top-1 class. Three photos show no ImageNet subject (a deep
   field, a tissue stain, a retina): the float model's top two classes there lie within 0.5
   logit (0.08 for the retina), so there int8 may pick the float runner-up, nothing else.
   Plain post-training quantization of this model (qrt's or ONNX Runtime's) stays just under
   0.99 on some photos; empirical bias correction (bias_correction=True) brings every photo
   above it, so both routes use it. A conversion without bias correction (minmax) is held to
   ONNX Runtime's quantizer (quantize_static, QDQ, per channel, MinMax) on the same samples;
   one with the entropy method to the same bars as minmax; and a channels-last example input
   (a photo permuted from HWC) must export like a contiguous one.
2. MTCNN R-Net and O-Net (facenet-pytorch's weights, in modules defined here: importing
   facenet_pytorch needs torchvision) on skimage's lfw_subset (100 faces, 100 non-faces), both
   routes: the same face/non-face decision as float on every image, every head close.
3. A digits CNN trained here, quantized by onnxruntime.quantization.quantize_static (QDQ,
   per-channel, int8 activations and weights), imported by qrt.convert: its outputs equal ONNX
   Runtime's on the same QDQ model, or differ by one quantization step.

Run with -s to see the results table. About 2 minutes on 2 cores.
"""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

import onnx
import torch

from bench.fixtures import real_models
from tests.converters import onnxruntime_peer as peer

import qrt  # noqa: E402

from bench.fixtures.photos import center_crop, photos, random_crops, to_input  # noqa: E402

pytestmark = pytest.mark.slow  # about 2 minutes: left out of `make check`

RESULTS: list = []  # (model, route, method, top-1 agreement, min cosine, conversion seconds)


@pytest.fixture(scope="module", autouse=True)
def _results_table():
    yield
    if RESULTS:
        print("\n\nmodel            route     method                   top-1 agreement   min cosine   convert s")
        for model, route, method, agree, cos, secs in RESULTS:
            print(f"{model:<16} {route:<9} {method:<24} {agree:<17} {cos:<12.4f} {secs:8.1f}")


def export_onnx(module, example: np.ndarray, path) -> str:
    return real_models.export_onnx(module, example, path)


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def run_qmodel(path, x) -> list:
    """The outputs of a .qmodel on x (batch of any multiple of the file's), in graph order."""
    m = qrt.load(path)
    y = m.run(x)
    return [y[o.name] for o in m.outputs] if isinstance(y, dict) else [y]


def timed_convert(*args, **kwargs):
    start = time.perf_counter()
    report = qrt.convert(*args, **kwargs)
    return report, time.perf_counter() - start


# =========================================================================== EfficientNet-Lite0

IMAGENET = {"espresso": 967, "daisy": 985, "palace": 698, "cats": range(281, 286)}
# photos without an ImageNet subject, where the float top-1 is a near tie (< 0.5 logit)
NO_SUBJECT = ("hubble_deep_field", "immunohistochemistry", "retina")
NEAR_TIE = 0.5


def top1_changes(names, ref, got) -> tuple[dict, dict]:
    """({photo: (float top-1, int8 top-1)} for photos that must keep their class and did not,
    {photo: ...} for the near ties of NO_SUBJECT photos where int8 chose the float runner-up)."""
    bad, ties = {}, {}
    for n, a, b in zip(names, ref, got):
        if a.argmax() == b.argmax():
            continue
        order = np.argsort(a)[::-1]
        tie = n in NO_SUBJECT and b.argmax() == order[1] and a[order[0]] - a[order[1]] < NEAR_TIE
        (ties if tie else bad)[n] = (int(a.argmax()), int(b.argmax()))
    return bad, ties


@pytest.fixture(scope="module")
def effnet():
    model = real_models.efficientnet_lite0()
    imgs = photos()
    names = list(imgs)
    x = np.stack([to_input(center_crop(img)) for img in imgs.values()])
    rng = np.random.default_rng(0)
    calib = np.stack([to_input(c) for img in imgs.values() for c in random_crops(img, 5, rng)])
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    return SimpleNamespace(model=model, names=names, x=x, calib=calib, logits=logits)


@pytest.fixture(scope="module")
def effnet_onnx(effnet, tmp_path_factory):
    return export_onnx(effnet.model, effnet.x[:1], tmp_path_factory.mktemp("effnet") / "effnet_lite0.onnx")


@pytest.fixture(scope="module")
def effnet_pytorch_route(effnet, tmp_path_factory):
    path = tmp_path_factory.mktemp("effnet_pt") / "effnet_lite0.qmodel"
    report, secs = timed_convert(effnet.model, effnet.calib, path, method="auto", bias_correction=True,
                                 example_inputs=torch.from_numpy(effnet.x[:1].copy()))
    return SimpleNamespace(route="pytorch", method="auto + bias corr.", path=path, report=report, seconds=secs)


@pytest.fixture(scope="module")
def effnet_onnx_route(effnet, effnet_onnx, tmp_path_factory):
    path = tmp_path_factory.mktemp("effnet_onnx") / "effnet_lite0.qmodel"
    report, secs = timed_convert(effnet_onnx, effnet.calib, path, method="mse", bias_correction=True)
    return SimpleNamespace(route="onnx", method="mse + bias corr.", path=path, report=report, seconds=secs)


def test_effnet_float_model_and_photos_are_right(effnet):
    """Guards the rest: the weights load and the preprocessing is ImageNet's, or the float
    model would not name these photos."""
    top1 = dict(zip(effnet.names, effnet.logits.argmax(1)))
    assert effnet.x.shape == (10, 3, 224, 224) and effnet.calib.shape == (50, 3, 224, 224)
    assert -1.0 <= effnet.x.min() < -0.9 and 0.9 < effnet.x.max() <= 1.0
    assert top1["coffee"] == IMAGENET["espresso"]
    assert top1["flower"] == IMAGENET["daisy"]
    assert top1["china"] == IMAGENET["palace"]
    assert top1["chelsea"] in IMAGENET["cats"]


@pytest.mark.parametrize("route", ["effnet_pytorch_route", "effnet_onnx_route"])
def test_effnet_int8_keeps_every_photo(effnet, route, request):
    conv = request.getfixturevalue(route)
    report = conv.report
    got = run_qmodel(conv.path, effnet.x)[0]
    assert got.shape == effnet.logits.shape == (10, 1000)
    cos = {n: cosine(a, b) for n, a, b in zip(effnet.names, effnet.logits, got)}
    bad, ties = top1_changes(effnet.names, effnet.logits, got)
    agree = len(effnet.names) - len(bad) - len(ties)
    RESULTS.append(("EfficientNet-L0", conv.route, conv.method, f"{agree}/{len(effnet.names)} photos",
                    min(cos.values()), conv.seconds))
    if ties:
        print(f"\n{conv.route}: near ties resolved to the float runner-up (float, int8): {ties}")
    assert not bad, f"top-1 (float, int8) changed on {bad}"
    low = {n: round(c, 4) for n, c in cos.items() if not c > 0.99}
    assert not low, f"logit cosine <= 0.99 on {low}; all: { {n: round(c, 4) for n, c in cos.items()} }"
    assert report.agreement and report.agreement[0].cosine > 0.99


@pytest.mark.parametrize("route", ["effnet_pytorch_route", "effnet_onnx_route"])
def test_effnet_conversion_report(route, request):
    """Every conv became an int8 conv; the file is about 4x smaller than the float32 weights
    (the exported .onnx keeps them in an external-data file next to it: they count too)."""
    conv = request.getfixturevalue(route)
    report = conv.report
    assert report.qrt_ops.get("CONV_2D", 0) + report.qrt_ops.get("DEPTHWISE_CONV_2D", 0) == 49
    assert report.qrt_ops.get("DEPTHWISE_CONV_2D", 0) == 16  # one per MBConv block
    assert report.qrt_ops.get("FULLY_CONNECTED") == 1
    assert report.calibration_samples + report.holdout_samples == 50
    assert os.path.getsize(conv.path) == report.int8_bytes
    assert 4.5e6 < report.int8_bytes < 5.5e6  # 4.65 M parameters as int8, int32 biases
    assert report.float_bytes > 3.5 * report.int8_bytes, (report.float_bytes, report.int8_bytes)


def test_effnet_plain_ptq_is_as_good_as_onnxruntime_quantizer(effnet, effnet_onnx, tmp_path):
    """Without bias correction, qrt (minmax) against ONNX Runtime's quantize_static (MinMax, QDQ,
    per-channel int8 weights, uint8 activations) calibrated on the same 50 samples: per photo,
    qrt's logit cosine is at most 0.005 below ORT's, on average at most 0.002, and it keeps at
    least as many top-1 classes."""
    path = tmp_path / "effnet_minmax.qmodel"
    report, secs = timed_convert(effnet_onnx, effnet.calib, path, method="minmax")
    got = run_qmodel(path, effnet.x)[0]
    input_name = onnx.load(effnet_onnx, load_external_data=False).graph.input[0].name
    qdq = peer.quantize_static(effnet_onnx, tmp_path / "effnet_qdq.onnx", effnet.calib, input_name)
    ref = peer.run(qdq, effnet.x)
    cos_q = np.array([cosine(a, b) for a, b in zip(effnet.logits, got)])
    cos_o = np.array([cosine(a, b) for a, b in zip(effnet.logits, ref)])
    top_q = int((effnet.logits.argmax(1) == got.argmax(1)).sum())
    top_o = int((effnet.logits.argmax(1) == ref.argmax(1)).sum())
    RESULTS.append(("EfficientNet-L0", "onnx", "minmax", f"{top_q}/10 photos", float(cos_q.min()), secs))
    RESULTS.append(("EfficientNet-L0", "ORT QDQ", "ORT MinMax", f"{top_o}/10 photos", float(cos_o.min()), float("nan")))
    table = {n: (round(float(q), 4), round(float(o), 4)) for n, q, o in zip(effnet.names, cos_q, cos_o)}
    assert (cos_q >= cos_o - 0.005).all(), f"(qrt, ORT) cosine per photo: {table}"
    assert cos_q.mean() >= cos_o.mean() - 0.002, f"(qrt, ORT) cosine per photo: {table}"
    assert top_q >= top_o, f"top-1 kept: qrt {top_q}, ORT {top_o}"
    assert cos_q.min() > 0.98


def test_effnet_entropy_calibration(effnet, effnet_onnx, tmp_path):
    """The KL-divergence (TensorRT-style) method on the same samples: as good as plain minmax
    within a little (every photo cosine > 0.98; the subject photos keep their class). At
    9c6ff6e it clipped EfficientNet's activations so hard that 0 of 10 photos kept their class
    (logit cosine 0.95)."""
    path = tmp_path / "effnet_entropy.qmodel"
    report, secs = timed_convert(effnet_onnx, effnet.calib, path, method="entropy")
    got = run_qmodel(path, effnet.x)[0]
    cos = {n: cosine(a, b) for n, a, b in zip(effnet.names, effnet.logits, got)}
    bad, ties = top1_changes(effnet.names, effnet.logits, got)
    RESULTS.append(("EfficientNet-L0", "onnx", "entropy", f"{10 - len(bad) - len(ties)}/10 photos",
                    min(cos.values()), secs))
    assert not bad, f"top-1 (float, int8) changed on {bad}"
    assert min(cos.values()) > 0.98, {n: round(c, 4) for n, c in cos.items()}


def test_effnet_channels_last_example_input(effnet, tmp_path):
    """A photo preprocessed as [H, W, 3] and permuted to NCHW is a channels-last tensor. It is
    the same model input: qrt.convert must accept it as example_inputs. (torch.onnx.export
    traces such a tensor through aten.as_strided, which comes out as a Reshape + Gather of the
    input that the lowering rejects, after calibrating; the front-end should pass
    example_inputs through .contiguous().)"""
    hwc = np.stack([center_crop(photos()["coffee"])])
    example = torch.from_numpy(((hwc - 127.0) / 128.0).astype(np.float32)).permute(0, 3, 1, 2)
    assert not example.is_contiguous()
    path = tmp_path / "effnet_cl.qmodel"
    qrt.convert(effnet.model, effnet.calib[:4], path, example_inputs=example, limit=4)
    got = run_qmodel(path, effnet.x)[0]
    assert got.argmax(1)[effnet.names.index("coffee")] == IMAGENET["espresso"]
    assert cosine(effnet.logits, got) > 0.95


# =========================================================================== MTCNN R-Net, O-Net


def _mtcnn_modules():
    """facenet-pytorch's RNet and ONet (facenet_pytorch/models/mtcnn.py), same layer names and
    shapes, so that its state dicts load strictly."""
    from torch import nn

    class RNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
            self.prelu1 = nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
            self.prelu2 = nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
            self.prelu3 = nn.PReLU(64)
            self.dense4 = nn.Linear(576, 128)
            self.prelu4 = nn.PReLU(128)
            self.dense5_1 = nn.Linear(128, 2)
            self.softmax5_1 = nn.Softmax(dim=1)
            self.dense5_2 = nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x))
            x = x.permute(0, 3, 2, 1).contiguous()
            x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
            return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))  # boxes, face probability

    class ONet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
            self.prelu1 = nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
            self.prelu2 = nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
            self.prelu3 = nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
            self.prelu4 = nn.PReLU(128)
            self.dense5 = nn.Linear(1152, 256)
            self.prelu5 = nn.PReLU(256)
            self.dense6_1 = nn.Linear(256, 2)
            self.softmax6_1 = nn.Softmax(dim=1)
            self.dense6_2 = nn.Linear(256, 4)
            self.dense6_3 = nn.Linear(256, 10)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x))
            x = x.permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
            # boxes, landmarks, face probability
            return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))

    return {"rnet": (RNet, 24, ("boxes", "face prob.")), "onet": (ONet, 48, ("boxes", "landmarks", "face prob."))}


def _facenet_data_dir() -> str:
    from bench.fixtures.real_models import package_dir
    try:  # found without importing it (its __init__ needs torchvision)
        return str(package_dir("facenet_pytorch", "facenet-pytorch==2.6.0") / "data")
    except ModuleNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def lfw():
    """skimage's lfw_subset: 100 faces then 100 non-faces, 25x25 gray in [0, 1]."""
    import skimage.data

    faces = np.asarray(skimage.data.lfw_subset(), np.float64)
    assert faces.shape == (200, 25, 25)
    return faces, np.r_[np.ones(100, bool), np.zeros(100, bool)]


def _mtcnn_input(faces: np.ndarray, size: int) -> np.ndarray:
    """MTCNN's input: RGB pixels on 0..255, (x - 127.5) * 0.0078125, NCHW; gray -> 3 channels."""
    from skimage.transform import resize

    r = np.stack([resize(f, (size, size), order=1, anti_aliasing=True, mode="edge") for f in faces])
    r = (r * 255.0 - 127.5) * 0.0078125
    return np.array(np.repeat(r[:, None], 3, axis=1), np.float32, order="C")


@pytest.fixture(scope="module", params=["rnet", "onet"])
def mtcnn(request, lfw, tmp_path_factory):
    cls, size, heads = _mtcnn_modules()[request.param]
    model = cls().eval()
    state = torch.load(os.path.join(_facenet_data_dir(), f"{request.param}.pt"), weights_only=True)
    model.load_state_dict(state)  # strict: the module mirrors facenet-pytorch's exactly
    faces, is_face = lfw
    x = _mtcnn_input(faces, size)
    with torch.no_grad():
        ref = [o.numpy() for o in model(torch.from_numpy(x))]
    # every other image: 50 faces, 50 non-faces (80 calibrate, 20 are held back for the
    # report); the other 100 images are unseen. (60 random images can miss the extreme box
    # offsets of O-Net, which then clip at the output: box cosine 0.989 for one such draw.)
    calib = x[::2]
    folder = tmp_path_factory.mktemp(request.param)
    onnx_path = export_onnx(model, x[:1], folder / f"{request.param}.onnx")
    return SimpleNamespace(name=request.param, model=model, heads=heads, x=x, ref=ref, is_face=is_face,
                           calib=calib, onnx=onnx_path, folder=folder)


def test_mtcnn_float_models_tell_faces(mtcnn):
    """Guards the rest: the weights and MTCNN's normalisation are right."""
    acc = float(np.mean((mtcnn.ref[-1].argmax(1) == 1) == mtcnn.is_face))
    assert acc >= 0.95, f"{mtcnn.name} float face/non-face accuracy {acc:.3f}"


@pytest.mark.parametrize("route", ["onnx", "pytorch"])
def test_mtcnn_int8_same_decisions_every_head_close(mtcnn, route):
    path = mtcnn.folder / f"{mtcnn.name}_{route}.qmodel"
    if route == "onnx":
        report, secs = timed_convert(mtcnn.onnx, mtcnn.calib, path)
    else:
        report, secs = timed_convert(mtcnn.model, mtcnn.calib, path,
                                     example_inputs=torch.from_numpy(mtcnn.x[:1].copy()))
    got = run_qmodel(path, mtcnn.x)
    assert len(got) == len(mtcnn.ref) == len(mtcnn.heads)
    face_f = mtcnn.ref[-1].argmax(1)
    face_q = got[-1].argmax(1)
    agree = int((face_f == face_q).sum())
    cos = {h: cosine(r, g) for h, r, g in zip(mtcnn.heads, mtcnn.ref, got)}
    RESULTS.append((f"MTCNN {mtcnn.name}", route, "auto", f"{agree}/200 faces", min(cos.values()), secs))
    for h, r, g in zip(mtcnn.heads, mtcnn.ref, got):
        assert g.shape == r.shape, (h, g.shape, r.shape)
    assert agree == len(face_f), f"face decision differs on images {np.flatnonzero(face_f != face_q).tolist()}"
    assert all(c > 0.99 for c in cos.values()), {h: round(c, 5) for h, c in cos.items()}
    # box offsets are in units of the box side: under a tenth of it
    assert np.abs(got[0] - mtcnn.ref[0]).max() < 0.1
    # the face probability is quantized with 1/256 steps: a few steps off at most
    assert np.abs(got[-1] - mtcnn.ref[-1]).max() < 0.1
    assert {"CONV_2D", "PRELU", "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(report.qrt_ops)


# =========================================================================== ORT QDQ import


@pytest.fixture(scope="module")
def digits_qdq(tmp_path_factory):
    """A small residual CNN trained on sklearn digits, exported, and quantized by ONNX Runtime
    (QDQ, per-channel, int8 activations and weights, MinMax over 200 training images)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch import nn

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=0.3, random_state=0, stratify=d.target)
    x_tr, x_te = np.array(x_tr, np.float32, order="C"), np.array(x_te, np.float32, order="C")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 16, 3, padding=1)
            self.c2 = nn.Conv2d(16, 16, 3, padding=1)
            self.c3 = nn.Conv2d(16, 32, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(32 * 4 * 4, 10)

        def forward(self, x):
            a = torch.relu(self.c1(x))
            b = torch.relu(self.c2(a)) + a
            z = torch.relu(self.c3(self.pool(b)))
            return self.fc(torch.flatten(z, 1))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = Net()
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        xt, yt = torch.from_numpy(x_tr), torch.from_numpy(np.asarray(y_tr, np.int64))
        gen = torch.Generator().manual_seed(0)
        for _ in range(12):
            perm = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), 64):
                idx = perm[i:i + 64]
                opt.zero_grad()
                nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            float_acc = float((model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())
    finally:
        torch.set_num_threads(threads)
    folder = tmp_path_factory.mktemp("digits")
    fp32 = export_onnx(model, x_te[:1], folder / "digits.onnx")
    input_name = onnx.load(fp32).graph.input[0].name
    qdq = peer.quantize_static(fp32, folder / "digits_qdq.onnx", x_tr[:200], input_name, activation_type=_qtype("QInt8"))
    return SimpleNamespace(qdq=qdq, x_tr=x_tr, x_te=x_te, y_te=y_te, float_acc=float_acc, folder=folder)


def _qtype(name):
    from onnxruntime.quantization import QuantType
    return getattr(QuantType, name)


def test_ort_qdq_model_runs_like_onnxruntime(digits_qdq):
    qdq = onnx.load(digits_qdq.qdq)
    ops = {n.op_type for n in qdq.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Add", "Gemm"} <= ops
    assert digits_qdq.float_acc > 0.95
    ref = peer.run(digits_qdq.qdq, digits_qdq.x_te)

    path = digits_qdq.folder / "digits_qdq.qmodel"
    report, secs = timed_convert(digits_qdq.qdq, digits_qdq.x_tr[:100], path)
    m = qrt.load(path)
    got = m.run(digits_qdq.x_te)
    assert got.shape == ref.shape == (len(digits_qdq.x_te), 10)

    # the output keeps the QDQ model's quantization of the logits
    out = m.outputs[0]
    q_out = next(n for n in qdq.graph.node
                 if n.op_type == "DequantizeLinear" and n.output[0] == qdq.graph.output[0].name)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in qdq.graph.initializer}
    scale, zp = float(inits[q_out.input[1]]), int(inits[q_out.input[2]])
    assert inits[q_out.input[2]].dtype == np.int8
    assert (out.scale, out.zero_point) == (pytest.approx(scale, rel=1e-6), zp)

    steps = np.abs(got.astype(np.float64) - ref) / scale
    exact = float(np.mean(steps < 0.5))
    agree = int((got.argmax(1) == ref.argmax(1)).sum())
    RESULTS.append(("digits CNN (QDQ)", "onnx QDQ", f"imported, {100 * exact:.2f} % exact",
                    f"{agree}/{len(ref)} vs ORT", cosine(got, ref), secs))
    assert steps.max() <= 1.0 + 1e-3, f"qrt differs from ONNX Runtime by {steps.max():.2f} steps of {scale}"
    assert exact >= 0.99, f"only {100 * exact:.2f} % of the logits equal ONNX Runtime's"
    acc_q = float(np.mean(got.argmax(1) == digits_qdq.y_te))
    acc_o = float(np.mean(ref.argmax(1) == digits_qdq.y_te))
    assert abs(acc_q - acc_o) <= 0.005, (acc_q, acc_o)
    assert "FULLY_CONNECTED" in report.qrt_ops and "CONV_2D" in report.qrt_ops


def test_effnet_int16_activations(effnet, effnet_onnx, effnet_onnx_route, tmp_path):
    """int16 activations (SPEC.md 4.6) with bias correction and GPTQ weight rounding: every layer int16 (none breaks the
    accumulator bound once near-dead channels get coarser scales), every photo keeps its float
    top-1 class (the retina's near tie, 0.08 logit, included), logit cosine >= 0.999 on every
    photo (measured: 0.9994 min, 0.9997 mean), and closer to float than the int8 conversion of
    the same recipe on average. With weights rounded to nearest it was 0.9981 min and the retina
    flipped: the error is the int8 weights' (the stem and first depthwise conv, whose inputs
    are strongly correlated image patches), which GPTQ rounding removes."""
    path = tmp_path / "effnet_int16.qmodel"
    report, secs = timed_convert(effnet_onnx, effnet.calib, path, method="mse", bias_correction=True,
                                 activations="int16", weight_rounding="gptq")
    got = run_qmodel(path, effnet.x)[0]
    cos = np.array([cosine(a, b) for a, b in zip(effnet.logits, got)])
    bad, ties = top1_changes(effnet.names, effnet.logits, got)
    RESULTS.append(("EfficientNet-L0", "onnx", "int16 act + bias corr.", f"{10 - len(bad) - len(ties)}/10 photos",
                    float(cos.min()), secs))
    assert not bad and not ties, f"top-1 (float, int16) changed on {bad | ties}"
    assert not report.notes, report.notes
    m = qrt.read_model(path)
    forms = {qrt.ops.op_form(m, i).name for i in range(len(m.operators))}
    assert forms == {"int16"}, forms
    assert cos.min() >= 0.999, dict(zip(effnet.names, cos.round(5)))
    got8 = run_qmodel(effnet_onnx_route.path, effnet.x)[0]
    cos8 = np.array([cosine(a, b) for a, b in zip(effnet.logits, got8)])
    assert cos.mean() > cos8.mean(), (cos.mean(), cos8.mean())
