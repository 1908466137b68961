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
    result = model.run(feeds, raw=args.raw)
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
    p.set_defaults(run=_run)
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
