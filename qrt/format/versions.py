"""Which qrt release reads what. The writer stamps each file with the lowest qrt release
that can run it; the reader refuses files that need a newer one (schema/SPEC.md, section 6)."""
from __future__ import annotations

import re

from .._version import __version__
from .model import Model, OpCode

# Revision of schema/qmodel.fbs. Bump it whenever a field, enum value or op is added.
FORMAT_VERSION = 1
# Revision of the numerics rule (SPEC.md section 4).
NUMERICS_VERSION = 1

# The qrt release that introduced each (op code, op version) this qrt can run.
OP_SINCE: dict[tuple[int, int], str] = {(int(op), 1): "0.1.0" for op in OpCode}
# The release that introduced format revision 1.
BASE_SINCE = "0.1.0"


_VERSION = re.compile(r"[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}", re.ASCII)


def parse_version(text: str) -> tuple[int, int, int]:
    if not _VERSION.fullmatch(text):
        raise ValueError(f"'{text}' is not a MAJOR.MINOR.PATCH version")
    return tuple(int(p) for p in text.split("."))


RUNTIME_VERSION = parse_version(__version__)


def min_runtime_version(model: Model) -> str:
    """The lowest qrt release that can run `model` (every op and op version it uses)."""
    needed = [BASE_SINCE] + [OP_SINCE[(int(op.opcode), op.version)] for op in model.operators]
    return max(needed, key=parse_version)
