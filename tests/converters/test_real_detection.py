"""Real detectors end to end through qrt.convert (int8, the defaults), judged against float on
real images (issue 14). Loaders and pre/post-processing: bench/fixtures/detection.py.

1. nudenet==3.4.2's 320n.onnx, Ultralytics YOLOv8n (SiLU, nearest Resize, Split, Concat, the
   DFL Softmax), input fixed to 1x3x320x320 (its anchor grid is computed from the input size:
   a dynamic size is refused, see test_yolov8n_dynamic_size_is_refused). Float is ONNX Runtime on
   the same file. Judged on skimage's astronaut, camera, coffee, chelsea and a grid of 16 lfw
   faces; calibrated on other real images (grace_hopper, rocket, motorcycle, china, flower,
   grids of the other lfw faces and of the non-faces). "Same boxes": decoded (best class above
   0.3, NMS at IoU 0.45), every detection scoring >= 0.35 in one model has one of the same
   class at IoU >= 0.9 in the other (scores within 0.05 of the threshold may fall either side:
   a cut at 0.3 flips a detection of 0.30 for any error at all).
2. MTCNN's P-Net (facenet-pytorch's pnet.pt in a module written here), H and W dynamic: one
   .qmodel converted with max_shape 1x3x120x160, run at 12x12 (lfw faces and non-faces, P-Net's
   own window), 25x25 (lfw as shipped: 8x8 maps) and the 7 levels of MTCNN's pyramid of the
   astronaut (120x160 down to 15x20). Calibrated on the pyramids of other photos
   (grace_hopper, coffee, chelsea, rocket, camera). The file is converted as torch exports it:
   its ceil_mode MaxPool keeps one padding at every size (converters/lower.py _window).

Run with -s to see the figures. About 90 s on 2 cores.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

import qrt
from qrt.converters import ConversionError

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("skimage")

from bench.fixtures import detection as D  # noqa: E402

try:  # the weight wheels (make test installs them; their own imports need cv2 / torchvision)
    D.nudenet_onnx(), D._package_dir("facenet_pytorch")
except ModuleNotFoundError as e:
    pytest.skip(str(e), allow_module_level=True)

SCORE_THR = 0.3  # the recipe's and a common YOLO confidence threshold
BAND = 0.05  # detections scoring within this of the threshold may be missing on either side
MIN_IOU = 0.9
FACE_THR = 0.6  # MTCNN's first-stage threshold (facenet-pytorch's default thresholds[0])
MAX_HW = (120, 160)

pytestmark = pytest.mark.slow  # about 90 s: left out of `make check`

RESULTS: list = []  # lines printed at the end


@pytest.fixture(scope="module", autouse=True)
def _figures():
    yield
    if RESULTS:
        print("\n\n" + "\n".join(RESULTS))


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _outputs(model, x) -> list:
    y = model.run(x)
    return [y[o.name] for o in model.outputs] if isinstance(y, dict) else [y]


# =========================================================================== YOLOv8n (nudenet)


def unmatched(ref: list, got: list) -> list:
    """Detections of ref scoring >= threshold + BAND without one of the same class at IoU >=
    MIN_IOU in got (got decoded at threshold - BAND, so a near-threshold partner counts)."""
    return [(c, round(s, 3), tuple(round(float(v), 1) for v in b)) for c, s, b in ref
            if s >= SCORE_THR + BAND and not any(c == c2 and D.iou(b, b2) >= MIN_IOU for c2, _, b2 in got)]


def same_boxes(out_f: np.ndarray, out_q: np.ndarray) -> tuple[list, list, list]:
    """(float detections missing from int8, int8 detections missing from float, [(class, float
    score, int8 score, IoU)] of the matched ones)."""
    low_f, low_q = D.decode_yolov8(out_f, SCORE_THR - BAND), D.decode_yolov8(out_q, SCORE_THR - BAND)
    det_f = [d for d in low_f if d[1] > SCORE_THR]
    det_q = [d for d in low_q if d[1] > SCORE_THR]
    pairs = []
    for c, s, b in det_f:
        best = max(((D.iou(b, b2), s2) for c2, s2, b2 in low_q if c2 == c), default=(0.0, 0.0))
        pairs.append((c, round(s, 3), round(best[1], 3), round(best[0], 3)))
    return unmatched(det_f, low_q), unmatched(det_q, low_f), pairs


@pytest.fixture(scope="module")
def yolo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("yolov8n")
    path = D.yolov8n_fixed(folder / "320n_fixed.onnx")
    photos = D.detection_photos()
    x = {name: D.letterbox(img)[0] for name, img in photos.items()}
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref = {name: sess.run(None, {"images": v})[0] for name, v in x.items()}
    return SimpleNamespace(path=path, folder=folder, x=x, ref=ref)


def _yolo_converted(yolo, activations):
    out = yolo.folder / f"320n_{activations}.qmodel"
    start = time.perf_counter()
    report = qrt.convert(yolo.path, D.detection_calibration(), out, show_progress=False, activations=activations)
    secs = time.perf_counter() - start
    model = qrt.load(out)
    got, run_s = {}, []
    for name, v in yolo.x.items():
        t = time.perf_counter()
        got[name] = _outputs(model, v)[0]
        run_s.append(time.perf_counter() - t)
    RESULTS.append(f"YOLOv8n {activations}: convert {secs:.1f} s, run {np.median(run_s):.2f} s per image (median), "
                   f"ops {dict(report.qrt_ops)}")
    return SimpleNamespace(report=report, model=model, got=got, path=out)


@pytest.fixture(scope="module")
def yolo_int8(yolo):
    return _yolo_converted(yolo, "int8")


def _same_boxes_everywhere(yolo, converted, label):
    missing, extra, pairs = [], [], []
    for name in yolo.x:
        m, e, p = same_boxes(yolo.ref[name], converted.got[name])
        missing += [(name,) + d for d in m]
        extra += [(name,) + d for d in e]
        pairs += [(name,) + d for d in p]
    judged = sum(p[2] >= SCORE_THR + BAND for p in pairs)
    RESULTS.append(f"YOLOv8n {label} same boxes: {judged - len(missing)}/{judged} float detections >= "
                   f"{SCORE_THR + BAND} matched; "
                   f"(photo, class, float score, {label} score, IoU): {pairs}; extra: {extra}")
    assert not missing, f"float detections missing in {label}: {missing}"
    assert not extra, f"{label} detections not in float: {extra}"


def test_yolov8n_float_finds_the_faces(yolo):
    """Guards the rest: the letterbox and the decoding are NudeDetector's, or these faces would
    not be found."""
    det = {name: D.decode_yolov8(out, SCORE_THR) for name, out in yolo.ref.items()}
    assert [d[0] for d in det["astronaut"]] == ["FACE_FEMALE"] and det["astronaut"][0][1] > 0.8
    assert [d[0] for d in det["camera"]] == ["FACE_MALE"]
    faces = [d for d in det["lfw_grid"] if d[0].startswith("FACE")]
    assert len(faces) >= 10, det["lfw_grid"]  # 11 of the 16 (the others score below 0.3)
    assert not det["chelsea"]


def test_yolov8n_conversion(yolo_int8):
    """Everything is integer: the Resize upsamples are RESIZE, SiLU's Sigmoid a LUT."""
    ops = yolo_int8.report.qrt_ops
    assert ops.get("CONV_2D") == 64 and ops.get("RESIZE") == 2 and ops.get("LUT") == 58, ops
    assert yolo_int8.model.outputs[0].name == "output0"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "measured: 7 of the 13 float detections scoring >= 0.35 have an int8 match at IoU >= 0.9 (output0's "
    "Concat of boxes and scores joins in float: lower.output_joins). Of the rest, 4 are the same faces at IoU "
    "0.80-0.89 (box edges a few px off: the DFL head's softmax over 16 bins in int8) and 2 lfw faces merge "
    "with a neighbour under NMS; scores within 0.07 but camera's face (0.53 -> 0.26) and one lfw face (0.59 "
    "-> 0.26). activations='int16': all 13 matched, IoU >= 0.94 (test_yolov8n_int16_same_boxes)"))
def test_yolov8n_int8_same_boxes(yolo, yolo_int8):
    _same_boxes_everywhere(yolo, yolo_int8, "int8")


def test_yolov8n_int16_same_boxes(yolo):
    """int16 activations (int8 weights, integer-only): the same boxes. Measured: all 13 float
    detections scoring >= 0.35 matched, IoU >= 0.94; convert about 20 s."""
    _same_boxes_everywhere(yolo, _yolo_converted(yolo, "int16"), "int16")


def test_yolov8n_dynamic_size_is_refused(tmp_path):
    """The shipped file has a dynamic height and width; its anchor grid is computed from them,
    a constant that differs at each size, so one file cannot serve every size: the conversion
    says which constant. (Hence yolov8n_fixed.)"""
    x = D.letterbox(D.detection_photos()["astronaut"])[0]
    with pytest.raises(ConversionError, match="changes with 'height' other than by cutting its corner"):
        qrt.convert(D.nudenet_onnx(), [x, x[:, :, ::-1].copy()], tmp_path / "dyn.qmodel", show_progress=False,
                    holdout=0.0, max_shape={"images": (1, 3, D.YOLO_SIZE, D.YOLO_SIZE)})


# =========================================================================== MTCNN P-Net


def _photo(name):
    import skimage.data as data

    return np.asarray(getattr(data, name)(), np.float64) / 255.0


def _pnet_calibration() -> list:
    import matplotlib.cbook
    from PIL import Image

    hopper = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
                        .convert("RGB"), np.float64) / 255.0
    photos = [hopper] + [_photo(n) for n in ("coffee", "chelsea", "rocket", "camera")]
    return [D.mtcnn_input(level) for img in photos for level in D.pyramid(img, MAX_HW)]


@pytest.fixture(scope="module")
def pnet(tmp_path_factory):
    import skimage.data

    folder = tmp_path_factory.mktemp("pnet")
    exported = D.pnet_onnx(folder / "pnet.onnx", MAX_HW)
    model = D.pnet()
    lfw = np.asarray(skimage.data.lfw_subset(), np.float64)  # 100 faces, then 100 non-faces
    inputs = {"lfw 12x12": np.concatenate([D.mtcnn_input(D.resize(f, (12, 12))) for f in lfw]),
              "lfw 25x25": np.concatenate([D.mtcnn_input(f) for f in lfw])}
    # the astronaut's top 3/4 (her face and shoulders), so that H and W differ at every level
    for level in D.pyramid(_photo("astronaut")[:384], MAX_HW):
        inputs[f"astronaut {level.shape[0]}x{level.shape[1]}"] = D.mtcnn_input(level)
    with torch.no_grad():
        ref = {k: [o.numpy() for o in model(torch.from_numpy(v))] for k, v in inputs.items()}
    return SimpleNamespace(folder=folder, onnx=exported, model=model, inputs=inputs, ref=ref,
                           is_face=np.r_[np.ones(100, bool), np.zeros(100, bool)], calib=_pnet_calibration())


@pytest.fixture(scope="module")
def pnet_int8(pnet):
    """One file for every size, from the exported P-Net as it is."""
    out = pnet.folder / "pnet.qmodel"
    start = time.perf_counter()
    report = qrt.convert(pnet.onnx, pnet.calib, out, show_progress=False, limit=len(pnet.calib),
                         max_shape={"x": (1, 3) + MAX_HW})
    secs = time.perf_counter() - start
    model = qrt.load(out)
    got, times = {}, {}
    for k, v in pnet.inputs.items():
        t = time.perf_counter()
        got[k] = _outputs(model, v)
        times[k] = time.perf_counter() - t
    RESULTS.append(f"P-Net int8 (dynamic H, W up to {MAX_HW}): convert {secs:.1f} s, "
                   f"{report.calibration_samples} calibration samples; notes {report.notes}")
    return SimpleNamespace(report=report, model=model, got=got, times=times)


def test_pnet_float_tells_faces(pnet):
    """Guards the rest: P-Net's own 12x12 window tells lfw faces from non-faces, and the
    astronaut's face makes candidates at every level where it is 12 px or more."""
    prob = pnet.ref["lfw 12x12"][1][:, 1, 0, 0]
    assert np.mean((prob > FACE_THR) == pnet.is_face) >= 0.95  # measured 0.98
    levels = [k for k in pnet.ref if k.startswith("astronaut")]
    assert len(levels) == 7
    assert all((pnet.ref[k][1][:, 1] > FACE_THR).any() for k in levels[:5])


def test_pnet_one_file_runs_every_size(pnet, pnet_int8):
    """Two symbols, H and W: the file runs each size with float's output shapes and follows it
    (cosine > 0.99 on both heads)."""
    symbols = {s.name: (s.min, s.max) for s in pnet_int8.model.definition.symbols}
    assert symbols == {"height": (11, MAX_HW[0]), "width": (11, MAX_HW[1])}, symbols
    for k, ref in pnet.ref.items():
        got = pnet_int8.got[k]
        assert [g.shape for g in got] == [r.shape for r in ref], k
        cos = [_cosine(g, r) for g, r in zip(got, ref)]
        f, q = ref[1][:, 1], got[1][:, 1]
        flipped = (f > FACE_THR) != (q > FACE_THR)
        flips = int(flipped.sum())
        images = int(((f > FACE_THR).any(axis=(1, 2)) != (q > FACE_THR).any(axis=(1, 2))).sum())
        margin = float(np.abs(f[flipped] - FACE_THR).max()) if flips else 0.0
        RESULTS.append(f"P-Net {k:<18} {str(ref[1].shape):<18} run {1e3 * pnet_int8.times[k]:6.1f} ms  "
                       f"face cells float {int((f > FACE_THR).sum()):4d} int8 {int((q > FACE_THR).sum()):4d} "
                       f"flipped {flips:3d} of {f.size:5d} (float within {margin:.3f} of {FACE_THR}; images changed {images})  max |dp| {np.abs(f - q).max():.3f}  "
                       f"max |dbox| {np.abs(got[0] - ref[0]).max():.3f}  cosine box {cos[0]:.4f} prob {cos[1]:.4f}")
        assert min(cos) > 0.99, (k, cos)
    with pytest.raises(qrt.InputError):
        pnet_int8.model.run(np.zeros((1, 3, MAX_HW[0] + 1, 20), np.float32))


def test_pnet_int8_same_decisions_12x12(pnet, pnet_int8):
    """P-Net's own 12x12 window on lfw (one cell per image): the same face decision at 0.6 on
    all 200 images, probabilities within 0.1 (as R-Net and O-Net in test_real_large)."""
    f, q = pnet.ref["lfw 12x12"][1][:, 1, 0, 0], pnet_int8.got["lfw 12x12"][1][:, 1, 0, 0]
    differ = np.flatnonzero((f > FACE_THR) != (q > FACE_THR))
    assert differ.size == 0, f"face decision differs on images {differ.tolist()}: float {f[differ]}, int8 {q[differ]}"
    assert np.abs(f - q).max() < 0.1


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "measured: cells flipped at 0.6: 54 of 12800 at lfw 25x25 (6 of 200 images change whether any cell passes), "
    "5 of 4125 at 120x160, 3 of 1976 at 85x113, 1 of 875 at 60x80, 1 of 15 at 15x20 (its only face cell); every "
    "flipped cell's float probability lies within 0.115 of 0.6; max |dp| 0.215 (lfw 25x25), 0.14 (120x160, 85x113)"))
def test_pnet_int8_same_decisions_every_size(pnet, pnet_int8):
    """The face-probability map at every size: the same decision at 0.6 on every cell, and
    probabilities within 0.1."""
    bad = {}
    for k, ref in pnet.ref.items():
        f, q = ref[1][:, 1], pnet_int8.got[k][1][:, 1]
        flips = int(((f > FACE_THR) != (q > FACE_THR)).sum())
        dp = float(np.abs(f - q).max())
        if flips or dp >= 0.1:
            bad[k] = (flips, round(dp, 3))
    assert not bad, f"(flipped cells, max |dp|) per input: {bad}"

