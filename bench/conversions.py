"""Conversion table: real trained models through both routes and the calibration methods,
with accuracy, file sizes, conversion time and the calibration's peak memory.

    python -m bench.conversions            # digits, MNIST, EfficientNet-Lite0 (about 5 minutes)
    python -m bench.conversions --quick    # digits and MNIST only

Accuracy: digits and MNIST on their held-out test splits; EfficientNet-Lite0 has no labelled
data here, so its "accuracy" is the top-1 agreement with the float model on 10 real photos
(the scikit-image and scikit-learn ones) plus the lowest logit cosine.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

METHODS = ("auto", "minmax", "moving_average", "percentile", "entropy", "mse", "aciq")


def _row(model, route, method, float_acc, int8_acc, report, seconds):
    return (model, route, method, float_acc, int8_acc, f"{report.float_bytes / 1024:.0f} KiB",
            f"{report.int8_bytes / 1024:.0f} KiB", f"{seconds:.1f} s", f"{report.calibration_peak_mb:.0f} MB")


def small_models(folder: str, rows: list):
    import torch

    import qrt
    from bench.fixtures.real_models import export_onnx, float_accuracy, train_digits_cnn, train_mnist_cnn

    for name, train in (("digits CNN", train_digits_cnn), ("MNIST CNN", train_mnist_cnn)):
        model, x_train, _, x_test, y_test = train(seed=0)
        f_acc = f"{100 * float_accuracy(model, x_test, y_test):.2f} %"
        onnx_path = export_onnx(model, x_train[:1], os.path.join(folder, f"{name.split()[0]}.onnx"))
        jobs = [("PyTorch", "auto", model)] + [("ONNX", m, onnx_path) for m in METHODS]
        for route, method, source in jobs:
            out = os.path.join(folder, f"{name.split()[0]}-{route}-{method}.qmodel")
            t = time.perf_counter()
            report = qrt.convert(source, x_train[:100], out, method=method, show_progress=False,
                                 example_inputs=torch.from_numpy(x_train[:1]))
            seconds = time.perf_counter() - t
            acc = float(np.mean(qrt.load(out).run(x_test).argmax(1) == y_test))
            rows.append(_row(name, route, method, f_acc, f"{100 * acc:.2f} %", report, seconds))
            print(" | ".join(rows[-1]), flush=True)


def efficientnet(folder: str, rows: list):
    import torch

    import qrt
    from bench.fixtures.photos import center_crop, photos, random_crops, to_input
    from bench.fixtures.real_models import efficientnet_lite0, export_onnx

    model = efficientnet_lite0()
    imgs = photos()
    x = np.stack([to_input(center_crop(img)) for img in imgs.values()])
    rng = np.random.default_rng(0)
    calib = np.stack([to_input(c) for img in imgs.values() for c in random_crops(img, 5, rng)])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    onnx_path = export_onnx(model, x[:1], os.path.join(folder, "efficientnet_lite0.onnx"))
    for route, method, source, bias_correction in (("PyTorch", "auto", model, True), ("ONNX", "mse", onnx_path, True),
                                                    ("ONNX", "minmax", onnx_path, False)):
        out = os.path.join(folder, f"effnet-{route}-{method}.qmodel")
        t = time.perf_counter()
        report = qrt.convert(source, calib, out, method=method, bias_correction=bias_correction, show_progress=False,
                             example_inputs=torch.from_numpy(x[:1]))
        seconds = time.perf_counter() - t
        got = qrt.load(out).run(x)
        agree = int(np.sum(got.argmax(1) == ref.argmax(1)))
        cos = min(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(ref, got))
        label = method + (" + bias correction" if bias_correction else "")
        rows.append(_row("EfficientNet-Lite0", route, label, "(reference)",
                         f"top-1 {agree}/10 photos, cosine >= {cos:.4f}", report, seconds))
        print(" | ".join(rows[-1]), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="digits and MNIST only")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows: list = []
    with tempfile.TemporaryDirectory() as folder:
        small_models(folder, rows)
        if not args.quick:
            efficientnet(folder, rows)
    print("\n| model | route | method | float accuracy | int8 accuracy | float file | int8 file | conversion | calibration peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
