"""Which qrt release reads what. The writer stamps each file with the lowest qrt release
that can run it; the reader refuses files that need a newer one (schema/SPEC.md, section 6)."""
from __future__ import annotations

import re

from .._version import __version__

# Revision of schema/qmodel.fbs. Bump it whenever a field, enum value or op is added.
# 2: MAXIMUM, MINIMUM. 3: per-group quantization, float32 and hybrid forms (weight-only,
# dynamic), UNARY. 4: symbols (dimensions that vary from run to run), LSTM and GRU. 5: RESIZE,
# PadOptions.mode (reflect, edge, wrap).
FORMAT_VERSION = 5
# What the writer stamps on a file that declares no symbols: such a file is written byte for
# byte as revision 3's writer wrote it (SPEC.md section 6).
REVISION_WITHOUT_SYMBOLS = 3
# Revision of the numerics rule (SPEC.md section 4).
NUMERICS_VERSION = 1

# The release that introduced format revision 1. Each op's own release is its OpDef.since
# (qrt/ops/), which min_runtime_version in qrt/ops/__init__.py takes into account.
BASE_SINCE = "0.1.0"


_VERSION = re.compile(r"[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}", re.ASCII)


def parse_version(text: str) -> tuple[int, int, int]:
    if not _VERSION.fullmatch(text):
        raise ValueError(f"'{text}' is not a MAJOR.MINOR.PATCH version")
    return tuple(int(p) for p in text.split("."))


RUNTIME_VERSION = parse_version(__version__)


def written_revision(model) -> int:
    """Model.format_version as the writer stamps it: the oldest revision with all the file uses."""
    from .model import OpCode, PadMode  # (model.py imports this module)
    if any(op.opcode == OpCode.RESIZE or (op.opcode == OpCode.PAD and getattr(op.options, "mode", PadMode.CONSTANT)
                                          != PadMode.CONSTANT) for op in model.operators):
        return 5
    recurrent = any(op.opcode in (OpCode.LSTM, OpCode.GRU) for op in model.operators)
    return 4 if model.symbols or recurrent else REVISION_WITHOUT_SYMBOLS

