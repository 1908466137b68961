"""Read a .qmodel: bytes or a memory-mapped file -> verified ModelDefinition.

The file is untrusted. Every offset and length is checked before it is followed (Python
integers cannot overflow, so `pos + n <= size` is exact), every vector length is charged to a
work budget proportional to the file size (so aliased offsets cannot make decoding quadratic),
and constant tensors become read-only numpy views of the file (no copy). Semantic rules
(shapes, scales, graph order, op arity ...) are checked afterwards by verify.verify_model.
"""
from __future__ import annotations

import math
import mmap
import os
import struct
import weakref

import numpy as np

from ..errors import ModelFormatError, UnsupportedModelError
from . import layout as L
from .model import (
    NUMPY_DTYPE, OPTIONS_TYPES, Activation, InputQuantization, Calibration, DType, GraphIO, Layout, Metadata,
    ModelDefinition, Operator, Quantization, Symbol, SymbolicDim, Tensor, buffer_nbytes,
)
from .verify import check_shape, verify_model
from .versions import FORMAT_VERSION, NUMERICS_VERSION, RUNTIME_VERSION, __version__, parse_version

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")
_BUFFER_DTYPE = np.dtype([("offset", "<u8"), ("size", "<u8")])


class _Decoder:
    """Walks the FlatBuffer part of a file by the layout in layout.py, checking as it goes."""

    def __init__(self, buf, size: int):
        self.buf = buf  # buffer-protocol object; the FlatBuffer spans [0, size)
        self.size = size
        self.budget = size + 1024

    def fail(self, where: str, what: str):
        raise ModelFormatError(f"{where}: {what} (the file is truncated or corrupt)")

    def need(self, pos: int, nbytes: int, where: str):
        if pos < 0 or pos + nbytes > self.size:
            self.fail(where, f"{nbytes} bytes at offset {pos} lie outside the "
                             f"{self.size}-byte FlatBuffer")

    def charge(self, units: int, where: str):
        self.budget -= units
        if self.budget < 0:
            self.fail(where, "the file refers to the same data more often than its size allows")

    def scalar(self, pos: int, kind: L.Scalar, where: str):
        self.need(pos, kind.size, where)
        return struct.unpack_from(kind.fmt, self.buf, pos)[0]

    def follow(self, pos: int, where: str) -> int:
        """The target of the uoffset stored at pos."""
        self.need(pos, 4, where)
        rel = _U32.unpack_from(self.buf, pos)[0]
        if rel == 0 or rel >= 2**31:
            self.fail(where, f"offset {rel} at byte {pos} is not a valid forward offset")
        return pos + rel

    def table(self, pos: int, spec: L.Table, where: str) -> dict:
        self.charge(8, where)  # a table and the offset to it take >= 8 bytes of a file
        self.need(pos, 4, where)
        vtable = pos - _I32.unpack_from(self.buf, pos)[0]
        self.need(vtable, 4, where + " (vtable)")
        vt_size, tbl_size = _U16.unpack_from(self.buf, vtable)[0], _U16.unpack_from(self.buf, vtable + 2)[0]
        if vt_size < 4 or vt_size % 2 or tbl_size < 4:
            self.fail(where, f"vtable at byte {vtable} has impossible sizes ({vt_size}, {tbl_size})")
        self.need(vtable, vt_size, where + " (vtable)")
        self.need(pos, tbl_size, where)
        n_slots = (vt_size - 4) // 2

        def field_pos(slot: int, nbytes: int, name: str):
            if slot >= n_slots:
                return None
            off = _U16.unpack_from(self.buf, vtable + 4 + 2 * slot)[0]
            if off == 0:
                return None
            if off < 4 or off + nbytes > tbl_size:
                self.fail(f"{where}.{name}", f"field at table offset {off} lies outside its "
                                             f"{tbl_size}-byte table")
            return pos + off

        out = {}
        slot = 0
        for name, kind, default in spec.fields:
            fwhere = f"{where}.{name}"
            if isinstance(kind, L.Union):
                tpos = field_pos(slot, 1, name + "_type")
                code = 0 if tpos is None else self.scalar(tpos, L.U8, fwhere + "_type")
                vpos = field_pos(slot + 1, 4, name)
                slot += 2
                if code == 0 or vpos is None:
                    out[name] = None if code == 0 else self.fail(fwhere, f"union type {code} without a value")
                    continue
                if code > len(kind.members):
                    raise UnsupportedModelError(
                        f"{fwhere}: {kind.name} type {code} is unknown to qrt {__version__}; "
                        f"the file needs a newer qrt (pip install -U qrt)")
                out[name] = (code, self.table(self.follow(vpos, fwhere), kind.members[code - 1], fwhere))
                continue
            size = kind.size if isinstance(kind, L.Scalar) else 4
            fpos = field_pos(slot, size, name)
            slot += 1
            if fpos is None:
                if default is L.REQUIRED:
                    self.fail(fwhere, "required field is missing")
                out[name] = default
            elif isinstance(kind, L.Scalar):
                out[name] = self.scalar(fpos, kind, fwhere)
            else:
                out[name] = self.value(self.follow(fpos, fwhere), kind, fwhere)
        return out

    def value(self, pos: int, kind, where: str):
        if isinstance(kind, L.Table):
            return self.table(pos, kind, where)
        if isinstance(kind, L.String):
            return self.string(pos, where)
        return self.vector(pos, kind.element, where)

    def string(self, pos: int, where: str) -> str:
        self.need(pos, 4, where)
        n = _U32.unpack_from(self.buf, pos)[0]
        self.need(pos + 4, n + 1, where)  # the bytes and the terminating NUL
        self.charge(n // 16, where)
        raw = bytes(self.buf[pos + 4: pos + 4 + n])
        if self.buf[pos + 4 + n] != 0:
            self.fail(where, "string is not NUL-terminated")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(where, "string is not valid UTF-8")

    def vector(self, pos: int, element, where: str):
        self.need(pos, 4, where)
        n = _U32.unpack_from(self.buf, pos)[0]
        start = pos + 4
        if isinstance(element, (L.Scalar, L.Struct)):
            self.need(start, n * element.size, where)
            self.charge(n, where)
            dtype = _BUFFER_DTYPE if element is L.BUFFER else np.dtype(element.fmt)
            return np.frombuffer(self.buf, dtype=dtype, count=n, offset=start)
        self.need(start, 4 * n, where)
        self.charge(n, where)
        return [self.value(self.follow(start + 4 * i, f"{where}[{i}]"), element, f"{where}[{i}]")
                for i in range(n)]


def _enum(enum_cls, code: int, where: str):
    if code < 0:  # codes are never negative, in any revision
        raise ModelFormatError(f"{where}: {enum_cls.__name__} code {code} is invalid (codes are >= 0)")
    try:
        return enum_cls(code)
    except ValueError:
        raise UnsupportedModelError(
            f"{where}: {enum_cls.__name__} code {code} is unknown to qrt {__version__}; "
            f"the file needs a newer qrt (pip install -U qrt)") from None


def _ints(vec) -> tuple:
    return () if vec is None else tuple(int(v) for v in vec)


def _key_values(kvs) -> dict:
    return {kv["key"]: kv["value"] or "" for kv in kvs or ()}


def _check_version(header: dict):
    text = header["min_runtime_version"]
    try:
        needed = parse_version(text)
    except ValueError:
        raise ModelFormatError(f"Model.min_runtime_version: '{text[:40]}' is not a "
                               f"MAJOR.MINOR.PATCH version") from None
    if needed > RUNTIME_VERSION:
        raise UnsupportedModelError(
            f"this file needs qrt >= {text} (it was written with format revision "
            f"{header['format_version']}); this is qrt {__version__}, which reads revision "
            f"{FORMAT_VERSION}: upgrade with pip install -U qrt")
    if header["numerics_version"] < 1:
        raise ModelFormatError(f"Model.numerics_version: {header['numerics_version']} is not a "
                               f"numerics rule (rules are numbered from 1)")
    if header["numerics_version"] != NUMERICS_VERSION:
        raise UnsupportedModelError(
            f"this file uses numerics rule {header['numerics_version']}; qrt {__version__} "
            f"implements rule {NUMERICS_VERSION} only: upgrade with pip install -U qrt")


def _buffers(raw, file_size: int, segment: int):
    """Validate the buffer table; return (offset, size) pairs relative to the file start."""
    if raw is None or len(raw) == 0:
        return [(segment, 0)]
    out = []
    for i, (offset, size) in enumerate(raw.tolist()):
        where = f"Model.buffers[{i}]"
        if i == 0 and size != 0:
            raise ModelFormatError(f"{where}: buffer 0 is the empty sentinel, but has size {size}")
        if offset % L.DATA_ALIGNMENT:
            raise ModelFormatError(f"{where}: offset {offset} is not a multiple of {L.DATA_ALIGNMENT}")
        if size and segment + offset + size > file_size:
            raise ModelFormatError(
                f"{where}: {size} bytes at data offset {offset} run past the end of the file "
                f"({file_size} bytes; data segment starts at {segment}); the file is truncated")
        out.append((segment + offset, size))
    return out


def _tensor(i: int, t: dict, buffers, filebuf) -> Tensor:
    where = f"tensor {i} '{t['name']}'"
    dtype = _enum(DType, t["dtype"], where + " dtype")
    shape = _ints(t["shape"])
    check_shape(where, shape)  # before any size is computed from it
    numel = math.prod(shape)
    q = t["quantization"]
    quant = None
    if q is not None:
        quant = Quantization(q["scale"] if q["scale"] is not None else [],
                             q["zero_point"] if q["zero_point"] is not None else [],
                             q["quantized_dimension"], q["group_size"])
    data = None
    b = t["buffer"]
    if b != 0:
        if b >= len(buffers):
            raise ModelFormatError(f"{where}: buffer index {b} is out of range "
                                   f"(the file has {len(buffers)} buffers)")
        offset, size = buffers[b]
        expected = buffer_nbytes(dtype, numel)
        if size != expected:
            raise ModelFormatError(f"{where}: shape {shape} {dtype.name} needs {expected} bytes "
                                   f"but buffer {b} holds {size}")
        data = np.frombuffer(filebuf, dtype=NUMPY_DTYPE[dtype], count=size // NUMPY_DTYPE[dtype].itemsize,
                             offset=offset)
        if dtype != DType.INT4:
            data = data.reshape(shape)
    dims = tuple(SymbolicDim(d["axis"], d["symbol"], d["multiplier"], d["offset"], d["divisor"])
                 for d in t["symbolic_dims"] or ())
    return Tensor(t["name"], dtype, shape, data, quant, dims)


def _operator(i: int, o: dict) -> Operator:
    from .model import OpCode

    where = f"operator {i}" + (f" '{o['name']}'" if o["name"] else "")
    options = None
    if o["options"] is not None:
        code, fields = o["options"]
        cls = OPTIONS_TYPES[code - 1]
        # Absent vectors and strings keep the dataclass defaults ((), "").
        options = cls(**{k: (_ints(v) if isinstance(v, np.ndarray) else v)
                         for k, v in fields.items() if v is not None})
    return Operator(
        opcode=_enum(OpCode, o["opcode"], where + " opcode"),
        inputs=_ints(o["inputs"]),
        outputs=_ints(o["outputs"]),
        options=options,
        activation=_enum(Activation, o["activation"], where + " activation"),
        clip_min=o["clip_min"],
        clip_max=o["clip_max"],
        name=o["name"] or "",
        version=o["version"],
        input_quantization=_enum(InputQuantization, o["input_quantization"], where + " input_quantization"),
    )


def _graph_io(kind: str, i: int, g: dict) -> GraphIO:
    return GraphIO(g["name"], g["tensor"], _enum(Layout, g["layout"], f"{kind}[{i}] '{g['name']}' layout"))


def _metadata(m) -> Metadata:
    if m is None:
        return Metadata()
    c = m["calibration"]
    calibration = None if c is None else Calibration(c["method"] or "", c["num_samples"], _key_values(c["settings"]))
    return Metadata(m["producer"] or "", m["producer_version"] or "", m["source_file"] or "",
                    m["source_sha256"] or "", calibration, _key_values(m["properties"]))


def decode(filebuf) -> ModelDefinition:
    """Decode and verify a whole .qmodel held in a buffer-protocol object."""
    view = memoryview(filebuf).cast("B")
    file_size = len(view)
    if file_size < 12:
        raise ModelFormatError(f"not a .qmodel file: {file_size} bytes is shorter than the 12-byte header")
    if bytes(view[8:12]) != L.FILE_IDENTIFIER:
        raise ModelFormatError(f"not a .qmodel file: identifier {bytes(view[8:12])!r} at bytes "
                               f"8-12, expected {L.FILE_IDENTIFIER!r}")
    fb_size = _U32.unpack_from(view, 0)[0]
    if 4 + fb_size > file_size:
        raise ModelFormatError(f"the header claims a {fb_size}-byte FlatBuffer but the file has "
                               f"only {file_size - 4} bytes after it: the file is truncated")
    fb = view[4:4 + fb_size]
    dec = _Decoder(fb, fb_size)
    root = dec.follow(0, "Model")
    # The version fields first: a file from a newer qrt may use what this one cannot decode.
    header = dec.table(root, L.Table("Model", L.MODEL.fields[:3]), "Model")
    _check_version(header)
    m = dec.table(root, L.MODEL, "Model")
    buffers = _buffers(m["buffers"], file_size, L.data_segment_start(fb_size))
    model = ModelDefinition(
        tensors=[_tensor(i, t, buffers, view) for i, t in enumerate(m["tensors"] or ())],
        operators=[_operator(i, o) for i, o in enumerate(m["operators"] or ())],
        inputs=[_graph_io("inputs", i, g) for i, g in enumerate(m["inputs"] or ())],
        outputs=[_graph_io("outputs", i, g) for i, g in enumerate(m["outputs"] or ())],
        metadata=_metadata(m["metadata"]),
        name=m["name"] or "",
        format_version=m["format_version"],
        min_runtime_version=m["min_runtime_version"],
        numerics_version=m["numerics_version"],
        symbols=tuple(Symbol(s["name"] or "", s["max"], s["min"]) for s in m["symbols"] or ()),
    )
    verify_model(model)
    return model


# The read-only shared maps read_model opened. Only these are released: on a private or
# anonymous map a caller passed in (as a memoryview), MADV_DONTNEED would drop the data itself.
_OWN_MAPS: "weakref.WeakSet[mmap.mmap]" = weakref.WeakSet()


def release_pages(arrays) -> None:
    """Let the OS take back the pages of the memory-mapped file behind each array (madvise
    MADV_DONTNEED over the pages it spans). Only resident memory changes: a later read faults
    the pages in again from the page cache. The runtime reads most weights once, to pack them.
    Arrays not backed by a map read_model opened (or systems without madvise) are left alone."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    page, bases = mmap.PAGESIZE, {}
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.nbytes == 0:
            continue
        owner = a.base
        while isinstance(owner, np.ndarray):
            owner = owner.base
        if not (isinstance(owner, memoryview) and owner.obj in _OWN_MAPS) or owner.obj.closed:
            continue
        m = owner.obj
        if id(m) not in bases:
            bases[id(m)] = np.frombuffer(m, np.uint8).ctypes.data
        offset = a.ctypes.data - bases[id(m)]
        start, end = offset // page * page, min(len(m), -(-(offset + a.nbytes) // page) * page)
        m.madvise(mmap.MADV_DONTNEED, start, end - start)


def read_model(source) -> ModelDefinition:
    """Load and verify a .qmodel from a path (memory-mapped: weights are not copied) or from
    bytes-like data. Raises a qrt.QrtError subclass naming what is wrong with a bad file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode(source)
    path = os.fspath(source)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ModelFormatError(f"{path}: the file is empty")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    _OWN_MAPS.add(mapped)
    try:
        return decode(mapped)
    except BaseException:
        # Views into the map may be referenced by the traceback; close only if nothing holds it.
        try:
            mapped.close()
        except BufferError:
            pass
        raise
