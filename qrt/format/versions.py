"""Which qrt release reads what. The writer stamps each file with the lowest qrt release
that can run it; the reader refuses files that need a newer one (schema/SPEC.md, section 6)."""
from __future__ import annotations

import re

from .._version import __version__

# Revision of schema/qmodel.fbs. Bump it whenever a field, enum value or op is added.
# 2: MAXIMUM, MINIMUM. 3: per-group quantization, float32 and hybrid forms (weight-only,
# dynamic), UNARY.
FORMAT_VERSION = 3
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

