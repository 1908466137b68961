"""Write a ModelDefinition as a .qmodel file, through the flatc-generated code (qmodel_generated.py).

Writing needs the `flatbuffers` package (pip install 'qrt[write]'); reading does not. The model
is verified first, so qrt never writes a file it would refuse to load, and files are written
atomically: a temporary file in the target folder, renamed into place when complete.
"""
from __future__ import annotations

import os
import secrets

import numpy as np

from ..errors import QrtError
from . import layout as L
from .model import OPTIONS_TYPES, ModelDefinition
from .verify import verify_model
from ..ops import min_runtime_version
from .versions import NUMERICS_VERSION, written_revision


def _generated():
    try:
        from . import qmodel_generated
    except ImportError as e:
        raise QrtError("writing .qmodel files needs the flatbuffers package: "
                       "pip install 'qrt[write]'") from e
    return qmodel_generated


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _options(gen, options):
    """The generated object-API twin of an options dataclass: same fields, camelCase names."""
    t = getattr(gen, type(options).__name__ + "T")()
    for name, value in vars(options).items():
        setattr(t, _camel(name), list(value) if isinstance(value, tuple) else value)
    return t


def _key_values(gen, d: dict):
    return [gen.KeyValueT(key=str(k), value=str(v)) for k, v in d.items()]


def _layout(model: ModelDefinition):
    """Assign each constant tensor a 64-aligned span of the data segment."""
    spans, offset = [(0, 0)], 0
    buffer_of = {}
    for i, t in enumerate(model.tensors):
        if t.data is not None:
            size = t.data.nbytes
            buffer_of[i] = len(spans)
            spans.append((offset, size))
            offset = -(-(offset + size) // L.DATA_ALIGNMENT) * L.DATA_ALIGNMENT
    return spans, buffer_of


def _flatbuffer(model: ModelDefinition, spans, buffer_of) -> bytes:
    gen = _generated()
    import flatbuffers

    tensors = []
    for i, t in enumerate(model.tensors):
        q = None
        if t.quant is not None:
            q = gen.QuantizationT(scale=t.quant.scale.astype("<f4"),
                                  zeroPoint=t.quant.zero_point.astype("<i4"),
                                  quantizedDimension=t.quant.axis, groupSize=t.quant.group_size)
        dims = [gen.SymbolicDimT(axis=d.axis, symbol=d.symbol, multiplier=d.multiplier, offset=d.offset,
                                 divisor=d.divisor) for d in t.symbolic_dims]
        tensors.append(gen.TensorT(name=t.name, dtype=int(t.dtype), shape=list(t.shape),
                                   buffer=buffer_of.get(i, 0), quantization=q,
                                   symbolicDims=dims or None))  # absent, not empty: as revision 3 wrote
    operators = []
    for op in model.operators:
        options, options_type = None, 0
        if op.options is not None:
            options, options_type = _options(gen, op.options), OPTIONS_TYPES.index(type(op.options)) + 1
        operators.append(gen.OperatorT(
            opcode=int(op.opcode), version=op.version, inputs=list(op.inputs), outputs=list(op.outputs),
            optionsType=options_type, options=options, activation=int(op.activation),
            clipMin=op.clip_min, clipMax=op.clip_max, name=op.name or None,
            inputQuantization=int(op.input_quantization)))
    md = model.metadata
    calibration = None
    if md.calibration is not None:
        c = md.calibration
        calibration = gen.CalibrationT(method=c.method, numSamples=c.num_samples,
                                       settings=_key_values(gen, c.settings))
    root = gen.ModelT(
        formatVersion=written_revision(model),
        minRuntimeVersion=min_runtime_version(model),
        numericsVersion=NUMERICS_VERSION,
        name=model.name or None,
        tensors=tensors,
        operators=operators,
        inputs=[gen.GraphIOT(name=io.name, tensor=io.tensor, layout=int(io.layout)) for io in model.inputs],
        outputs=[gen.GraphIOT(name=io.name, tensor=io.tensor, layout=int(io.layout)) for io in model.outputs],
        buffers=[gen.BufferT(offset=o, size=s) for o, s in spans],
        metadata=gen.MetadataT(producer=md.producer, producerVersion=md.producer_version,
                               sourceFile=md.source_file, sourceSha256=md.source_sha256,
                               calibration=calibration, properties=_key_values(gen, md.properties)),
        symbols=[gen.SymbolT(name=s.name, max=s.max, min=s.min) for s in model.symbols] or None,
    )
    builder = flatbuffers.Builder(1024)
    builder.FinishSizePrefixed(root.Pack(builder), file_identifier=L.FILE_IDENTIFIER)
    return bytes(builder.Output())


def _chunks(model: ModelDefinition):
    """The file's bytes, in order: size-prefixed FlatBuffer, padding, data segment."""
    verify_model(model)
    spans, buffer_of = _layout(model)
    fb = _flatbuffer(model, spans, buffer_of)
    yield fb
    pos = len(fb)
    segment = L.data_segment_start(len(fb) - 4)
    for i, b in buffer_of.items():
        start = segment + spans[b][0]
        yield bytes(start - pos)
        data = np.ascontiguousarray(model.tensors[i].data)
        yield memoryview(data).cast("B")
        pos = start + data.nbytes


def to_bytes(model: ModelDefinition) -> bytes:
    """Verify `model` and serialise it as .qmodel bytes."""
    return b"".join(bytes(c) for c in _chunks(model))


def _new_temporary(folder: str):
    """(fd, path) of a new hidden file in `folder`, created with the mode any new file gets
    (0666 less the umask, as open() makes it; tempfile.mkstemp's would be private, 0600)."""
    while True:
        tmp = os.path.join(folder, f".{secrets.token_hex(8)}.qmodel.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def write_model(model: ModelDefinition, path) -> int:
    """Verify `model` and write it to `path` atomically. Returns the file size in bytes."""
    path = os.fspath(path)
    chunks = _chunks(model)  # a generator: verification runs on the first chunk, below
    first = next(chunks)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = _new_temporary(folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(first)
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return size
