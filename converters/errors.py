"""The converters' exceptions. Both derive from qrt.QrtError, like every error qrt reports."""
from __future__ import annotations

from qrt.errors import QrtError


class ConversionError(QrtError, ValueError):
    """The source model cannot be converted: the file is not a readable ONNX model, it is
    malformed (a value nobody produces, a cycle, a dynamic input shape), or a node of it failed
    to evaluate. The message names the file, the node or the value at fault."""


class UnsupportedOpsError(ConversionError):
    """The model uses op types the converters do not implement. `ops` maps every unsupported
    op type to the names of the nodes that use it (all of them; the message shows the first 5)."""

    def __init__(self, ops: dict, source: str = ""):
        self.ops = {k: list(v) for k, v in ops.items()}
        self.source = source
        lines = []
        for op in sorted(self.ops):
            names = self.ops[op]
            shown = ", ".join(repr(n) for n in names[:5])
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            lines.append(f"  {op} ({len(names)} node{'s' if len(names) != 1 else ''}): {shown}{more}")
        where = f" in {source}" if source else ""
        super().__init__(
            f"unsupported op type{'s' if len(self.ops) != 1 else ''}{where}: "
            + ", ".join(sorted(self.ops)) + "\n" + "\n".join(lines) + "\n"
            "What to do: re-export the model with a newer opset (torch.onnx.export(..., opset_version=17 "
            "or newer) often replaces old or custom ops by standard ones), or replace the op in the "
            "model by supported ones, or open an issue naming the op type.")


class CalibrationDataError(ConversionError):
    """The calibration data does not fit the model: wrong shape, dtype or number of inputs,
    an empty source, NaN or infinite values, an unreadable file. The message says what was
    expected and what was found, and where (sample index, input name, file)."""
