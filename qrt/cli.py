"""The `qrt` command."""
from __future__ import annotations

import argparse
import json
import sys

from ._version import __version__
from .errors import QrtError


def _named(path: str, load):
    """Load with `load`; a load error names the file."""
    try:
        return load(path)
    except QrtError as e:
        raise type(e)(f"{path}: {e}") from None


def _inspect(args) -> int:
    from .inspect import inspect_file, render

    s = _named(args.model, inspect_file)
    sys.stdout.write(json.dumps(s, indent=2) + "\n" if args.json else render(s))
    return 0


def _run(args) -> int:
    import time

    import numpy as np

    from .runtime import load

    model = _named(args.model, lambda p: load(p, kernels=args.kernels))
    try:
        data = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise QrtError(f"cannot read --input {args.input}: {e}") from None
    feeds = dict(data) if isinstance(data, np.lib.npyio.NpzFile) else data
    start = time.perf_counter()
    result = model.run(feeds, raw=args.raw, check_finite=not args.allow_non_finite)
    elapsed = time.perf_counter() - start
    outputs = result if isinstance(result, dict) else {model.outputs[0].name: result}
    if args.output:
        if len(outputs) == 1 and args.output.endswith(".npy"):
            np.save(args.output, next(iter(outputs.values())))
        else:
            np.savez(args.output, **outputs)
    for name, y in outputs.items():
        flat = y.reshape(y.shape[0], -1)
        top = f", argmax {flat.argmax(axis=1).tolist()}" if flat.shape[1] > 1 else ""
        print(f"{name}: {y.dtype} {list(y.shape)}, min {y.min():.4g}, max {y.max():.4g}{top}")
    print(f"ran in {elapsed * 1e3:.2f} ms ({model.kernels.name} kernels)"
          + (f"; wrote {args.output}" if args.output else ""))
    return 0


def _convert(args) -> int:
    from . import convert

    preprocess = None
    if args.image_size:
        from .converters.data import ImagePreprocess
        preprocess = ImagePreprocess(size=tuple(args.image_size), mean=args.mean, std=args.std, scale=args.pixel_scale)
    float_ops = [k.strip() for k in args.float_ops.split(",") if k.strip()] if args.float_ops else None
    report = convert(args.source, args.calib, args.output, method=args.method, per_channel=not args.per_tensor,
                     bias_correction=args.bias_correction, limit=args.limit, preprocess=preprocess,
                     trust_source=args.trust_source, show_progress=None if not args.quiet else False,
                     mode=args.mode, weights=args.weights, group_size=args.group_size,
                     activations=args.activations, symmetric_activations=args.symmetric_activations,
                     float_ops=float_ops, overrides=args.overrides, integer_only=args.integer_only,
                     freeze=_freeze(args.freeze), weight_rounding=args.weight_rounding,
                     max_shape=_max_shape(args.max_shape))
    print(report)
    return 0


def _max_shape(items) -> dict | None:
    """--max-shape NAME=1x512 ...: an input's shape, the maximum of its dynamic dimensions."""
    if not items:
        return None
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name] = tuple(int(d) for d in value.lower().split("x"))
        except ValueError:
            out[name] = None
        if not sep or not name or not out[name]:
            raise SystemExit(f"qrt convert: --max-shape takes NAME=SHAPE with the dimensions joined by x "
                             f"(e.g. input_ids=1x512), not {item!r}")
    return out


def _freeze(items) -> dict | None:
    """--freeze NAME=VALUE ...: VALUE a number, comma-separated numbers or a .npy file."""
    if not items:
        return None
    import numpy as np

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"qrt convert: --freeze takes NAME=VALUE (e.g. sample_rate=16000), not {item!r}")
        if value.endswith(".npy"):
            out[name] = np.load(value, allow_pickle=False)
            continue
        try:
            nums = [float(v) for v in value.split(",")]
        except ValueError:
            raise SystemExit(f"qrt convert: --freeze {name}: {value!r} is not a number, a comma-separated "
                             f"list of numbers or a .npy file") from None
        out[name] = np.asarray(nums[0] if len(nums) == 1 else nums)
    return out


def _random_feed(info, batch: int, rng):
    """A random input for `info` at `batch` times the file's batch: for a quantized input,
    float values spread over its whole int8 range (quantizing them is part of the timed run,
    as when a user passes floats); otherwise values of its own dtype."""
    import numpy as np

    shape = (info.shape[0] * batch,) + tuple(info.shape[1:])
    dtype = np.dtype(info.dtype)
    if info.scale is not None:
        q = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, shape, endpoint=True)
        return ((q - info.zero_point) * info.scale).astype(np.float32)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(-100, 100, shape).astype(dtype)


def _bench(args) -> int:
    import time

    import numpy as np

    from .runtime import load

    clock = time.perf_counter
    load_ms = []
    for _ in range(5):
        start = clock()
        model = _named(args.model, lambda p: load(p, threads=args.threads, isa=args.isa))
        load_ms.append((clock() - start) * 1e3)
    rng = np.random.default_rng(0)
    feeds = [_random_feed(info, args.batch, rng) for info in model.inputs]
    for _ in range(args.warmup):
        model.run(*feeds)
    run_ms = []
    for _ in range(args.repeats):
        start = clock()
        model.run(*feeds)
        run_ms.append((clock() - start) * 1e3)
    p10, p25, median, p75, p90 = np.percentile(run_ms, [10, 25, 50, 75, 90])
    macs = model.macs * args.batch
    print(f"{args.model}: {len(model.definition.operators)} operator(s), {macs / 1e6:.1f} MMAC per run, "
          f"input {' '.join('x'.join(map(str, f.shape)) for f in feeds)}, {model.threads} thread(s), "
          f"{model.kernels.name} kernels, {model.isa} path")
    print(f"load    {np.median(load_ms):.2f} ms (median of {len(load_ms)})")
    print(f"run     median {median:.3f} ms, p10-p90 {p10:.3f}-{p90:.3f} ms, IQR {p75 - p25:.3f} ms "
          f"({args.repeats} runs after {args.warmup} warm-up)")
    print(f"speed   {2 * macs / (median * 1e-3) / 1e9:.2f} GOPS (2 ops per MAC), "
          f"{1e3 / median:.1f} runs/s")
    return 0


def _at_least(minimum: int):
    """An argparse type: a whole number >= minimum."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {n}")
        return n
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qrt",
        description="qrt: quantized .qmodel files and an integer-only CPU runtime.",
        epilog="Run 'qrt COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"qrt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "inspect", help="show a .qmodel's inputs, outputs, operators and metadata",
        description="Load and verify a .qmodel, then show its inputs and outputs (as the user feeds "
                    "them), every operator with shapes, quantization and weight bytes, and the "
                    "metadata. A file that fails verification is reported with what is wrong.")
    p.add_argument("model", help="path to a .qmodel file")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(run=_inspect)

    p = sub.add_parser(
        "run", help="run a .qmodel on inputs from a .npy or .npz file",
        description="Load a .qmodel and run it once. --input is a .npy (one input, or the first) or "
                    ".npz (arrays named after the inputs). Float arrays are quantized with each "
                    "input's scale and zero point; arrays of the stored integer type are used as is. "
                    "Prints a summary of each output; --output saves them.")
    p.add_argument("model", help="path to a .qmodel file")
    p.add_argument("--input", "-i", required=True, help=".npy or .npz file with the input array(s)")
    p.add_argument("--output", "-o", help="save outputs: .npy for a single output, else .npz")
    p.add_argument("--raw", action="store_true", help="return the stored integers instead of float")
    p.add_argument("--kernels", choices=("fast", "reference"), default=None,
                   help="kernel set (default: fast, or $QRT_KERNELS)")
    p.add_argument("--allow-non-finite", action="store_true",
                   help="run even if a float input holds NaN or +-inf (NaN reads as 0.0, +-inf as the "
                        "ends of the input's range); by default such an input is an error")
    p.set_defaults(run=_run)

    p = sub.add_parser(
        "convert", help="quantize an ONNX (or saved torch.export) model to .qmodel",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Post-training quantization. Reads the float model, simplifies it (constant folding,\n"
                    "BatchNorm folding), runs it in NumPy on calibration samples to measure every activation's\n"
                    "range, quantizes (int8 weights per output channel, int8 activations per tensor, int32\n"
                    "biases) and writes OUTPUT atomically. Then reports what was converted, the file size\n"
                    "float -> int8, and how closely the int8 model agrees with the float one on the\n"
                    "held-back 20 % of the calibration samples.",
        epilog="calibration methods:\n"
               "  minmax          the full observed range\n"
               "  moving_average  moving average of the per-sample ranges\n"
               "  percentile      clip the 0.01 % tails\n"
               "  entropy         the clip that minimises the KL divergence (TensorRT's calibrator)\n"
               "  mse             the clip with the least expected quantization error\n"
               "  aciq            analytic clip for a Laplace or Gaussian fit (Banner et al. 2019)\n"
               "  auto            per tensor, the method with the best signal-to-quantization-noise ratio\n\n"
               "schemes (--mode):\n"
               "  static       int8 activations with calibrated ranges, integer arithmetic (default);\n"
               "               --weights int4: int4 weights per channel (W4A8), packed two per byte\n"
               "  dynamic      Conv/Gemm/MatMul quantize their input per row at run time (int8\n"
               "               weights, float32 output); the other ops compute in float32\n"
               "  weight-only  int8 or int4 weights (--weights, --group-size), float32 activations\n"
               "               and arithmetic; for size rather than integer speed\n"
               "  float        everything float32 (a reference point)\n"
               "Float32 appears only where asked (--float-ops, --overrides, the modes above); the\n"
               "report names every float32 op, and --integer-only refuses any.\n\n"
               "examples:\n  qrt convert model.onnx --calib samples.npy -o model.qmodel\n"
               "  qrt convert model.onnx --calib samples.npy -o model.qmodel --float-ops Softmax,head.fc\n"
               "  qrt convert model.onnx --calib samples.npy -o small.qmodel --mode weight-only --weights int4 --group-size 32")
    p.add_argument("source", help=".onnx model (or .pt2 torch.export program with --trust-source)")
    p.add_argument("-o", "--output", required=True, help="the .qmodel to write (never the source)")
    p.add_argument("--calib", required=True,
                   help="calibration data: .npy (batch first), .npz (arrays named after the inputs), "
                        "or a folder of images (with --image-size)")
    p.add_argument("--method", default="auto",
                   choices=("auto", "minmax", "moving_average", "percentile", "entropy", "mse", "aciq"),
                   help="how activation ranges are chosen (default: auto)")
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor instead of per channel")
    p.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=None,
                   help="fold the expected error of quantized weights into the biases (empirical bias "
                        "correction); default: on for int4 weights only")
    p.add_argument("--weight-rounding", default="nearest", choices=("nearest", "gptq"),
                   help="how integer layers' weights are rounded: to nearest (default), or by GPTQ, "
                        "carrying each rounding error onto the inputs not yet rounded so that the "
                        "layer's output error on the calibration data is least (slower conversion)")
    p.add_argument("--limit", type=int, default=100, help="calibration samples to use (default 100)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                   help="for a folder of images: resize the shorter side and center-crop to H x W")
    p.add_argument("--mean", type=float, nargs="+", default=[0.0], help="image normalisation mean (after --pixel-scale)")
    p.add_argument("--std", type=float, nargs="+", default=[1.0], help="image normalisation std")
    p.add_argument("--pixel-scale", type=float, default=1 / 255, help="pixels are multiplied by this first (default 1/255)")
    p.add_argument("--trust-source", action="store_true",
                   help="allow a .pt2 source: torch.export.load unpickles, so only for files you made")
    p.add_argument("--mode", default="static", choices=("static", "dynamic", "weight-only", "float"),
                   help="quantization scheme (default: static; see below)")
    p.add_argument("--weights", default="int8", choices=("int8", "int4"),
                   help="weight precision (default int8); int4: per channel with --mode static (not "
                        "depthwise convolutions, which keep int8), also per group with --mode weight-only")
    p.add_argument("--group-size", type=_at_least(1), default=None, metavar="N",
                   help="weight scales per group of N values along the reduction axis instead of per "
                        "channel (--mode weight-only), e.g. 32, 64 or 128")
    p.add_argument("--activations", default="int8", choices=("int8", "int16"),
                   help="activation precision (default int8); int16: 16-bit symmetric activations with "
                        "int8 weights wherever the op has that form (convolutions, fully connected, add, "
                        "mean, reshapes), int8 elsewhere")
    p.add_argument("--symmetric-activations", action="store_true",
                   help="activation zero points 0 (ranges symmetric about 0) instead of asymmetric")
    p.add_argument("--float-ops", metavar="TYPE_OR_NAME,...",
                   help="keep these op types (e.g. Softmax) or node names in float32")
    p.add_argument("--overrides", metavar="FILE",
                   help="per-layer schemes: a JSON file mapping a node name, op type or 're:<pattern>' "
                        "to scheme fields, e.g. {\"fc1\": {\"mode\": \"float\"}}")
    p.add_argument("--integer-only", action="store_true",
                   help="refuse any op that would compute in float32")
    p.add_argument("--freeze", action="append", metavar="NAME=VALUE",
                   help="make input NAME a constant (a number, comma-separated numbers or a .npy file), "
                        "so that control flow and shapes depending on it fold away, e.g. "
                        "--freeze sample_rate=16000 (repeatable)")
    p.add_argument("--max-shape", action="append", metavar="NAME=SHAPE",
                   help="the shape of input NAME with its dynamic dimensions at their maximum, e.g. "
                        "--max-shape input_ids=1x512: the file then runs any length up to 512 without "
                        "reloading (repeatable; calibration feeds have this shape)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_convert)

    p = sub.add_parser(
        "bench", help="time one .qmodel: latency, spread, GOPS, load time",
        description="Time qrt alone on one .qmodel: load it 5 times (median load time), then run it "
                    "on a random input of its input shape (float values over each quantized "
                    "input's whole int8 range, so input quantization is timed, as when a user "
                    "passes floats), WARMUP times untimed and REPEATS times timed. Prints the median, "
                    "the p10-p90 spread and the IQR of the run times, GOPS (2 ops per MAC, MACs of "
                    "conv, depthwise and fully connected operators) and runs per second. To "
                    "compare with ONNX Runtime and PyTorch, use 'python -m bench' in a checkout.",
        epilog="example: qrt bench model.qmodel --threads 1 --repeats 200")
    p.add_argument("model", help="path to a .qmodel file")
    p.add_argument("--threads", type=_at_least(1), default=None,
                   help="threads per run (default: $QRT_THREADS, else the cores this process may use)")
    p.add_argument("--repeats", type=_at_least(1), default=100, help="timed runs (default 100)")
    p.add_argument("--warmup", type=_at_least(0), default=10, help="untimed runs first (default 10)")
    p.add_argument("--batch", type=_at_least(1), default=1,
                   help="run on this many times the file's batch at once (default 1)")
    p.add_argument("--isa", default=None,
                   help="instruction-set path of the kernels, e.g. avx512vnni, avx2, scalar (default: "
                        "$QRT_ISA, else the best this CPU supports)")
    p.set_defaults(run=_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except QrtError as e:
        print(f"qrt: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"qrt: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
