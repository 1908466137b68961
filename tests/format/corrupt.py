"""Helpers that build broken .qmodel files for tests/format/test_broken_files.py.

Two ways to break a file:

* ``unverified_bytes(model)``: serialise a (deliberately broken) ModelDefinition with qrt's own writer,
  with its verification switched off, so that the file the writer would refuse to write exists.
* ``Patcher(data)``: locate fields of a valid file with the flatc-generated code
  (qrt/format/qmodel_generated.py, independent of qrt's hand-written reader and layout.py) and
  overwrite bytes in place. Every write checks the value it replaces, so a patch that lands on
  the wrong bytes fails loudly instead of testing nothing.

File layout: [u32 size][FlatBuffer, identifier "QMDL" at file bytes 8..12][zero padding to a
multiple of 64][data segment]. Positions below are file positions (the FlatBuffer starts at 4).
"""
from __future__ import annotations

import struct

import flatbuffers
import pytest

from qrt.format import qmodel_generated as G
from qrt.format import writer

# vtable slots, in schema declaration order (a union takes two: its type, then its value).
MODEL_SLOTS = dict(format_version=0, min_runtime_version=1, numerics_version=2, name=3, tensors=4,
                   operators=5, inputs=6, outputs=7, buffers=8, metadata=9, symbols=10)
TENSOR_SLOTS = dict(name=0, dtype=1, shape=2, buffer=3, quantization=4, symbolic_dims=5)
OPERATOR_SLOTS = dict(opcode=0, version=1, inputs=2, outputs=3, options_type=4, options=5,
                      activation=6, clip_min=7, clip_max=8, name=9, input_quantization=10)
GRAPH_IO_SLOTS = dict(name=0, tensor=1, layout=2)
BUFFER_STRUCT_SIZE = 16  # struct Buffer { offset: ulong; size: ulong; }


def unverified_bytes(model, **writer_overrides) -> bytes:
    """Serialise `model` with qrt's writer but without verify_model, so broken models can be
    written. `writer_overrides` replace other names of qrt.format.writer for the call (e.g.
    NUMERICS_VERSION=2, or min_runtime_version=lambda m: "9.0.0")."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(writer, "verify_model", lambda m: None)
        for name, value in writer_overrides.items():
            mp.setattr(writer, name, value)  # raising=True: a misspelt name fails the test
        return writer.to_bytes(model)


class Patcher:
    """A valid .qmodel file as a bytearray, with helpers that find and overwrite its fields."""

    def __init__(self, data: bytes):
        self.original = bytes(data)
        self.data = bytearray(data)
        self.fb_size = struct.unpack_from("<I", self.original, 0)[0]
        self.model = G.Model.GetRootAs(self.original, 4)

    # ------------------------------------------------------------------ reading

    def get(self, pos: int, fmt: str):
        return struct.unpack_from(fmt, self.data, pos)[0]

    def tensor_index(self, name: str) -> int:
        for i in range(self.model.TensorsLength()):
            if self.model.Tensors(i).Name().decode() == name:
                return i
        raise KeyError(name)

    def tensor(self, name: str):
        return self.model.Tensors(self.tensor_index(name))

    def operator_index(self, name: str) -> int:
        for i in range(self.model.OperatorsLength()):
            if self.model.Operators(i).Name().decode() == name:
                return i
        raise KeyError(name)

    def operator(self, name: str):
        return self.model.Operators(self.operator_index(name))

    @staticmethod
    def table_pos(obj) -> int:
        return obj._tab.Pos

    def vtable_pos(self, obj) -> int:
        return obj._tab.Pos - self.get(obj._tab.Pos, "<i")

    def field(self, obj, slots: dict, name: str) -> int:
        """File position of a field stored in `obj` (the field must be present in the file)."""
        off = obj._tab.Offset(4 + 2 * slots[name])
        assert off, f"field {name} is not stored (it has its default value)"
        return obj._tab.Pos + off

    def vtable_entry(self, obj, slots: dict, name: str) -> int:
        """File position of the vtable entry (u16) of a field of `obj`."""
        return self.vtable_pos(obj) + 4 + 2 * slots[name]

    def target(self, obj, slots: dict, name: str) -> int:
        """File position of the string, vector or table an offset field of `obj` points to."""
        return obj._tab.Indirect(self.field(obj, slots, name))

    def vector(self, obj, slots: dict, name: str):
        """(position of the length word, position of element 0) of a vector field."""
        start = self.target(obj, slots, name)
        return start, start + 4

    def buffer_entry(self, j: int) -> int:
        """File position of Model.buffers[j] (a 16-byte struct: u64 offset, u64 size)."""
        _, first = self.vector(self.model, MODEL_SLOTS, "buffers")
        assert j < self.model.BuffersLength()
        return first + BUFFER_STRUCT_SIZE * j

    def same_vtable(self, obj, objs) -> int:
        """The index of the first of `objs` that shares obj's vtable (flatc deduplicates them)."""
        v = self.vtable_pos(obj)
        return next(i for i, o in enumerate(objs) if self.vtable_pos(o) == v)

    # ------------------------------------------------------------------ writing

    def put(self, pos: int, fmt: str, value, old=None) -> "Patcher":
        """Overwrite the value at `pos`; if `old` is given, check that it was there."""
        if old is not None:
            assert self.get(pos, fmt) == old, (pos, fmt, self.get(pos, fmt), old)
        struct.pack_into(fmt, self.data, pos, value)
        return self

    def put_bytes(self, pos: int, raw: bytes) -> "Patcher":
        self.data[pos:pos + len(raw)] = raw
        return self

    def bytes(self) -> bytes:
        assert bytes(self.data) != self.original, "the patch changed nothing"
        return bytes(self.data)


# ---------------------------------------------------------------------- hand-built files


def _finish(b: flatbuffers.Builder, root: int) -> bytes:
    b.FinishSizePrefixed(root, file_identifier=b"QMDL")
    return bytes(b.Output())


def aliased_tensors_file(n: int, shape_len: int) -> bytes:
    """A Model whose `tensors` vector has n entries that all point to one Tensor table with a
    shape vector of shape_len entries: decoding it naively costs n * shape_len work for a file
    of about 4 * (n + shape_len) bytes."""
    b = flatbuffers.Builder(0)
    name = b.CreateString("t")
    G.TensorStartShapeVector(b, shape_len)
    for _ in range(shape_len):
        b.PrependInt32(1)
    shape = b.EndVector()
    G.TensorStart(b)
    G.TensorAddName(b, name)
    G.TensorAddDtype(b, 1)
    G.TensorAddShape(b, shape)
    tensor = G.TensorEnd(b)
    G.ModelStartTensorsVector(b, n)
    for _ in range(n):
        b.PrependUOffsetTRelative(tensor)
    tensors = b.EndVector()
    version = b.CreateString("0.1.0")
    G.ModelStart(b)
    G.ModelAddFormatVersion(b, 1)
    G.ModelAddMinRuntimeVersion(b, version)
    G.ModelAddTensors(b, tensors)
    return _finish(b, G.ModelEnd(b))


def aliased_properties_file(n: int, value_len: int) -> bytes:
    """A Model whose metadata.properties has n entries that all point to one KeyValue whose
    value is a value_len-byte string."""
    b = flatbuffers.Builder(0)
    key = b.CreateString("k")
    value = b.CreateString("v" * value_len)
    G.KeyValueStart(b)
    G.KeyValueAddKey(b, key)
    G.KeyValueAddValue(b, value)
    kv = G.KeyValueEnd(b)
    G.MetadataStartPropertiesVector(b, n)
    for _ in range(n):
        b.PrependUOffsetTRelative(kv)
    props = b.EndVector()
    G.MetadataStart(b)
    G.MetadataAddProperties(b, props)
    md = G.MetadataEnd(b)
    version = b.CreateString("0.1.0")
    G.ModelStart(b)
    G.ModelAddFormatVersion(b, 1)
    G.ModelAddMinRuntimeVersion(b, version)
    G.ModelAddMetadata(b, md)
    return _finish(b, G.ModelEnd(b))
