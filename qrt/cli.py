"""The `qrt` command."""
from __future__ import annotations

import argparse
import json
import sys

from ._version import __version__
from .errors import QrtError


def _inspect(args) -> int:
    from .inspect import inspect_file, render

    s = inspect_file(args.model)
    sys.stdout.write(json.dumps(s, indent=2) + "\n" if args.json else render(s))
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
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except QrtError as e:
        where = f"{args.model}: " if getattr(args, "model", None) else ""
        print(f"qrt: error: {where}{e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"qrt: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
