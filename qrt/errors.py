"""qrt's exceptions: every problem qrt reports derives from QrtError."""


class QrtError(Exception):
    """Base class of every error qrt raises on purpose."""


class ModelFormatError(QrtError, ValueError):
    """The bytes are not a well-formed .qmodel: wrong identifier, truncated, or an offset,
    length or index that points outside the file."""


class UnsupportedModelError(QrtError):
    """The file is well-formed but needs a newer qrt (a newer format revision, op code,
    op version or numerics rule)."""


class InvalidModelError(QrtError, ValueError):
    """The file decodes but breaks a rule of the spec (schema/SPEC.md): bad shapes, scales,
    zero points, operator arity, dtypes or options, graph order, accumulator bounds."""


class InputError(QrtError, ValueError):
    """What was passed to a model (names, shapes, dtypes of the feeds) does not fit it."""
