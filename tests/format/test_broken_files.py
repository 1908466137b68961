"""A corpus of broken .qmodel files, each refused with its specific error.

Every case asserts the exception class (ModelFormatError, InvalidModelError or
UnsupportedModelError) and a regex on the message that names the culprit. Broken files are
made two ways (helpers in tests/format/corrupt.py):

* semantic: a valid model from bench/fixtures/sample_models.py, mutated, then serialised by
  qrt's writer with verification switched off. The reader must refuse the file, and the writer
  must refuse the same object with the same error, leaving no file and no temporary file behind;
* binary: bytes of a valid file patched in place, at positions found with the flatc-generated
  code (independent of qrt's own reader).
"""
from __future__ import annotations

import functools
import json
import math
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import qrt
from qrt import InvalidModelError, ModelFormatError, QrtError, UnsupportedModelError
from qrt.format import (
    Activation, ConcatOptions, Conv2DOptions, DType, GraphIO, MeanOptions, ModelBuilder, OpCode,
    PadOptions, Pool2DOptions, Quantization, Tensor, TransposeOptions,
)
from qrt.format.model import OPTIONS_TYPES
from tests.format.corrupt import (
    GRAPH_IO_SLOTS, MODEL_SLOTS, OPERATOR_SLOTS, TENSOR_SLOTS, Patcher, unverified_bytes,
)
from bench.fixtures.sample_models import all_ops_model, conv_chain_model

REPO = Path(__file__).resolve().parents[2]
INT32_MAX = 2**31 - 1
QRT = re.escape(qrt.__version__)  # the running qrt, as messages name it
FORMAT = qrt.format.FORMAT_VERSION
WRITTEN = qrt.format.versions.REVISION_WITHOUT_SYMBOLS  # what the writer stamps on these files


# ------------------------------------------------------------------------------ helpers

def ti(m, name: str) -> int:
    """Index of the tensor called `name`."""
    return next(i for i, t in enumerate(m.tensors) if t.name == name)


def oi(m, name: str) -> int:
    """Index of the operator called `name`."""
    return next(i for i, o in enumerate(m.operators) if o.name == name)


def T(m, name: str) -> Tensor:
    return m.tensors[ti(m, name)]


def OP(m, name: str):
    return m.operators[oi(m, name)]


def op_re(m, name: str) -> str:
    """Regex for how errors label an operator: "operator 3 'add' (ADD)"."""
    i = oi(m, name)
    return re.escape(f"operator {i} '{name}' ({m.operators[i].opcode.name})")


def t_re(m, name: str) -> str:
    """Regex for how errors label a tensor: "tensor 4 'c1'"."""
    return re.escape(f"tensor {ti(m, name)} '{name}'")


def new_tensor(m, name: str, like: str) -> int:
    """Append a run-time tensor with the dtype, shape and quantization of tensor `like`."""
    t = T(m, like)
    q = None if t.quant is None else Quantization(t.quant.scale.copy(), t.quant.zero_point.copy(), t.quant.axis)
    m.tensors.append(Tensor(name, t.dtype, t.shape, None, q))
    return len(m.tensors) - 1


def raises(exc, pattern, fn, *args):
    """fn(*args) raises exactly `exc` (not a subclass, not a sibling) with `pattern` in it."""
    with pytest.raises(QrtError) as info:
        fn(*args)
    assert type(info.value) is exc, f"{type(info.value).__name__}: {info.value}"
    assert re.search(pattern, str(info.value)), f"{pattern!r} not in {str(info.value)!r}"
    return info.value


def assert_refused(model, exc, pattern, tmp_path, **writer_overrides):
    """The file of `model` is refused on read; the writer refuses the object, leaving nothing."""
    data = unverified_bytes(model, **writer_overrides)
    raises(exc, pattern, qrt.read_model, data)
    raises(exc, pattern, qrt.to_bytes, model)
    out = tmp_path / "bad.qmodel"
    raises(exc, pattern, qrt.write_model, model, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "write_model left files behind"


def fc_model(k: int, bias: int):
    """A single FULLY_CONNECTED with reduction length k and one output whose bias is `bias`."""
    b = ModelBuilder("fc")
    sx, sw = 0.05, 0.01
    x = b.tensor("x", DType.INT8, (1, k), scale=sx, zero_point=0)
    w = b.tensor("w", DType.INT8, (1, k), np.ones((1, k), np.int8), scale=sw)
    bb = b.tensor("b", DType.INT32, (1,), [bias], scale=np.float32(sx) * np.float32(sw))
    y = b.tensor("y", DType.INT8, (1, 1), scale=0.1, zero_point=0)
    b.op(OpCode.FULLY_CONNECTED, [x, w, bb], [y], name="fc")
    b.input("x", x)
    b.output("y", y)
    return b.build()


@functools.lru_cache(maxsize=None)
def valid_bytes(which: str = "all_ops") -> bytes:
    return qrt.to_bytes({"all_ops": all_ops_model, "conv_chain": conv_chain_model}[which]())


# ------------------------------------------------------------------------------ controls

@pytest.mark.parametrize("factory", [all_ops_model, conv_chain_model, lambda: fc_model(66000, 0),
                                     lambda: fc_model(4, INT32_MAX - 4 * 255 * 127)],
                         ids=["all_ops", "conv_chain", "fc_k66000", "fc_bias_at_bound"])
def test_controls_are_valid(factory, tmp_path):
    """The untouched models load, and the unverified writer writes the same bytes as the real
    one: every refusal below comes from the mutation, not from the helpers."""
    m = factory()
    data = qrt.to_bytes(m)
    assert unverified_bytes(m) == data
    loaded = qrt.read_model(data)
    assert [t.name for t in loaded.tensors] == [t.name for t in m.tensors]
    assert qrt.write_model(m, tmp_path / "ok.qmodel") == len(data)
    assert qrt.read_model(tmp_path / "ok.qmodel").name == m.name


def test_patcher_finds_fields():
    """The binary helpers read back what the writer wrote."""
    p = Patcher(valid_bytes())
    m = all_ops_model()
    w = p.tensor("conv.weight")
    assert tuple(w.ShapeAsNumpy()) == T(m, "conv.weight").shape
    assert p.get(p.field(w, TENSOR_SLOTS, "buffer"), "<I") == w.Buffer() == 1
    off, size = p.buffer_entry(1), p.buffer_entry(1) + 8
    assert (p.get(off, "<Q"), p.get(size, "<Q")) == (0, T(m, "conv.weight").data.nbytes)
    assert p.get(p.field(p.operator("add"), OPERATOR_SLOTS, "opcode"), "<i") == OpCode.ADD
    assert p.get(p.field(p.tensor("q0"), TENSOR_SLOTS, "dtype"), "<b") == DType.INT8
    assert p.operator_index("conv") == oi(m, "conv")


# ------------------------------------------------------------------------------ truncation

def _cut_points(n: int):
    return sorted({0, 1, 4, 11, 12, n - 1} | set(range(0, n, 97)))


@pytest.mark.parametrize("which", ["all_ops", "conv_chain"])
def test_truncated_everywhere(which):
    data = valid_bytes(which)
    wrong = []
    for n in _cut_points(len(data)):
        try:
            qrt.read_model(data[:n])
        except ModelFormatError as e:
            if not re.search(r"truncated|shorter than the 12-byte header", str(e)):
                wrong.append((n, f"vague: {e}"))
        except BaseException as e:  # noqa: BLE001 - anything else is the bug being looked for
            wrong.append((n, f"{type(e).__name__}: {e}"))
        else:
            wrong.append((n, "loaded"))
    assert not wrong, wrong


@pytest.mark.parametrize("n", [5, 11, 12, 200, -1])
def test_truncated_file_via_path(tmp_path, n):
    """Through a path (memory-mapped) a truncated file gives the same error as bytes."""
    data = valid_bytes()[:n]
    path = tmp_path / "cut.qmodel"
    path.write_bytes(data)
    with pytest.raises(ModelFormatError) as from_bytes:
        qrt.read_model(data)
    raises(ModelFormatError, "^" + re.escape(str(from_bytes.value)) + "$", qrt.read_model, path)


def test_empty_file_via_path(tmp_path):
    path = tmp_path / "empty.qmodel"
    path.write_bytes(b"")
    raises(ModelFormatError, re.escape(str(path)) + ": the file is empty$", qrt.read_model, path)
    raises(ModelFormatError, "^not a .qmodel file: 0 bytes is shorter than the 12-byte header$",
           qrt.read_model, b"")


# ------------------------------------------------------------------------------ header and offsets

def _header_cases():
    data = valid_bytes()
    n, fb = len(data), Patcher(data).fb_size
    p = lambda: Patcher(data)  # noqa: E731
    return {
        "wrong_identifier": (p().put_bytes(8, b"TFL3"), ModelFormatError,
                             r"^not a \.qmodel file: identifier b'TFL3' at bytes 8-12, expected b'QMDL'$"),
        "size_prefix_larger_than_file": (
            p().put(0, "<I", n - 3, old=fb), ModelFormatError,
            rf"^the header claims a {n - 3}-byte FlatBuffer but the file has only {n - 4} bytes "
            rf"after it: the file is truncated$"),
        "size_prefix_max": (p().put(0, "<I", 2**32 - 1, old=fb), ModelFormatError,
                            rf"^the header claims a {2**32 - 1}-byte FlatBuffer"),
        "size_prefix_too_small": (p().put(0, "<I", 16, old=fb), ModelFormatError,
                                  r"^Model: .*outside the 16-byte FlatBuffer"),
        "root_offset_zero": (p().put(4, "<I", 0), ModelFormatError,
                             r"^Model: offset 0 at byte 0 is not a valid forward offset"),
        "root_offset_negative": (p().put(4, "<I", 2**31), ModelFormatError,
                                 rf"^Model: offset {2**31} at byte 0 is not a valid forward offset"),
        "root_offset_past_end": (p().put(4, "<I", fb), ModelFormatError,
                                 rf"^Model: 4 bytes at offset {fb} lie outside the {fb}-byte FlatBuffer"),
    }


HEADER_CASES = list(_header_cases())


@pytest.mark.parametrize("case", HEADER_CASES)
def test_header(case):
    patcher, exc, pattern = _header_cases()[case]
    raises(exc, pattern, qrt.read_model, patcher.bytes())


def _binary_cases():
    """name -> function(Patcher) -> (exception class, regex). Positions come from the generated
    code; file position = FlatBuffer position + 4, and the reader reports FlatBuffer positions."""
    cases = {}

    def case(fn):
        cases[fn.__name__] = fn
        return fn

    m = all_ops_model()
    n_tensors = len(m.tensors)

    # -- offsets, vtables and lengths pointing outside the FlatBuffer
    @case
    def tensor_vtable_before_start(p):
        t = p.tensor("c1")
        pos = p.table_pos(t)
        p.put(pos, "<i", pos)  # vtable = (pos - 4) - pos = -4
        return ModelFormatError, rf"^Model\.tensors\[{ti(m, 'c1')}\] \(vtable\): 4 bytes at offset -4 lie outside"

    @case
    def tensor_vtable_past_end(p):
        t = p.tensor("c1")
        p.put(p.table_pos(t), "<i", -p.fb_size)
        return ModelFormatError, (rf"^Model\.tensors\[{ti(m, 'c1')}\] \(vtable\): 4 bytes at offset \d+ "
                                  rf"lie outside the {p.fb_size}-byte FlatBuffer")

    @case
    def vtable_field_offset_outside_table(p):
        t = p.tensor("c1")
        p.put(p.vtable_entry(t, TENSOR_SLOTS, "shape"), "<H", 0xFFF0)
        j = p.same_vtable(t, [p.model.Tensors(i) for i in range(n_tensors)])
        return ModelFormatError, rf"^Model\.tensors\[{j}\]\.shape: field at table offset 65520 lies outside its \d+-byte table"

    @case
    def vtable_impossible_size(p):
        t = p.tensor("c1")
        vt = p.vtable_pos(t)
        p.put(vt, "<H", 3)
        j = p.same_vtable(t, [p.model.Tensors(i) for i in range(n_tensors)])
        return ModelFormatError, rf"^Model\.tensors\[{j}\]: vtable at byte {vt - 4} has impossible sizes \(3, \d+\)"

    @case
    def tensors_vector_length_huge(p):
        len_pos, first = p.vector(p.model, MODEL_SLOTS, "tensors")
        p.put(len_pos, "<I", 0x3FFFFFFF, old=n_tensors)
        return ModelFormatError, rf"^Model\.tensors: {4 * 0x3FFFFFFF} bytes at offset {first - 4} lie outside the {p.fb_size}-byte FlatBuffer"

    @case
    def operators_vector_length_max(p):
        len_pos, _ = p.vector(p.model, MODEL_SLOTS, "operators")
        p.put(len_pos, "<I", 2**32 - 1, old=len(m.operators))
        return ModelFormatError, r"^Model\.operators: \d+ bytes at offset \d+ lie outside"

    @case
    def buffers_vector_length_huge(p):
        len_pos, _ = p.vector(p.model, MODEL_SLOTS, "buffers")
        p.put(len_pos, "<I", 2**28)
        return ModelFormatError, rf"^Model\.buffers: {16 * 2**28} bytes at offset \d+ lie outside"

    @case
    def shape_vector_length_huge(p):
        len_pos, _ = p.vector(p.tensor("c1"), TENSOR_SLOTS, "shape")
        p.put(len_pos, "<I", 0x10000000, old=4)
        return ModelFormatError, rf"^Model\.tensors\[{ti(m, 'c1')}\]\.shape: {4 * 0x10000000} bytes at offset \d+ lie outside"

    @case
    def scale_vector_length_huge(p):
        q = p.tensor("conv.weight").Quantization()
        len_pos, _ = p.vector(q, dict(scale=0, zero_point=1, quantized_dimension=2), "scale")
        p.put(len_pos, "<I", 2**30, old=4)
        return ModelFormatError, rf"^Model\.tensors\[{ti(m, 'conv.weight')}\]\.quantization\.scale: .* lie outside"

    @case
    def string_length_huge(p):
        pos = p.target(p.tensor("c1"), TENSOR_SLOTS, "name")
        p.put(pos, "<I", 0xFFFFFFF0, old=2)
        return ModelFormatError, rf"^Model\.tensors\[{ti(m, 'c1')}\]\.name: {0xFFFFFFF0 + 1} bytes at offset {pos} lie outside"

    @case
    def field_offset_zero(p):
        pos = p.field(p.tensor("c1"), TENSOR_SLOTS, "shape")
        p.put(pos, "<I", 0)
        return ModelFormatError, rf"^Model\.tensors\[{ti(m, 'c1')}\]\.shape: offset 0 at byte {pos - 4} is not a valid forward offset"

    @case
    def field_offset_past_end(p):
        pos = p.field(p.tensor("c1"), TENSOR_SLOTS, "quantization")
        p.put(pos, "<I", p.fb_size)
        return ModelFormatError, rf"^Model\.tensors\[{ti(m, 'c1')}\]\.quantization: 4 bytes at offset {pos - 4 + p.fb_size} lie outside"

    @case
    def options_offset_backwards(p):
        pos = p.field(p.operator("conv"), OPERATOR_SLOTS, "options")
        p.put(pos, "<I", 2**32 - 8)
        return ModelFormatError, rf"^Model\.operators\[{oi(m, 'conv')}\]\.options: offset {2**32 - 8} at byte {pos - 4} is not a valid forward offset"

    @case
    def required_field_missing(p):
        p.put(p.vtable_entry(p.model, MODEL_SLOTS, "min_runtime_version"), "<H", 0)
        return ModelFormatError, r"^Model\.min_runtime_version: required field is missing"

    @case
    def required_tensor_name_missing(p):
        t = p.tensor("c1")
        p.put(p.vtable_entry(t, TENSOR_SLOTS, "name"), "<H", 0)
        j = p.same_vtable(t, [p.model.Tensors(i) for i in range(n_tensors)])
        return ModelFormatError, rf"^Model\.tensors\[{j}\]\.name: required field is missing"

    @case
    def union_type_without_value(p):
        o = p.operator("conv")
        p.put(p.vtable_entry(o, OPERATOR_SLOTS, "options"), "<H", 0)
        ops = [p.model.Operators(i) for i in range(len(m.operators))]
        j = p.same_vtable(o, ops)
        code = ops[j].OptionsType()
        return ModelFormatError, rf"^Model\.operators\[{j}\]\.options: union type {code} without a value"

    # -- strings
    @case
    def tensor_name_not_utf8(p):
        pos = p.target(p.tensor("c1"), TENSOR_SLOTS, "name")
        p.put(pos + 4, "<B", 0xFF, old=ord("c"))
        return ModelFormatError, rf"^Model\.tensors\[{ti(m, 'c1')}\]\.name: string is not valid UTF-8"

    @case
    def operator_name_not_utf8(p):
        pos = p.target(p.operator("conv"), OPERATOR_SLOTS, "name")
        p.put(pos + 5, "<B", 0xC3, old=ord("o"))  # a lead byte followed by "n", not a continuation
        return ModelFormatError, rf"^Model\.operators\[{oi(m, 'conv')}\]\.name: string is not valid UTF-8"

    @case
    def metadata_value_cut_multibyte(p):
        raw = "ünïcode ✓".encode()
        pos = bytes(p.data).find(raw)
        assert pos > 0
        p.put(pos + len(raw) - 1, "<B", ord(" "))  # "✓" loses its last byte
        keys = list(m.metadata.properties)
        return ModelFormatError, rf"^Model\.metadata\.properties\[{keys.index('note')}\]\.value: string is not valid UTF-8"

    @case
    def version_not_utf8(p):
        pos = p.target(p.model, MODEL_SLOTS, "min_runtime_version")
        p.put(pos + 4, "<B", 0x80, old=ord("0"))
        return ModelFormatError, r"^Model\.min_runtime_version: string is not valid UTF-8"

    @case
    def tensor_name_without_nul(p):
        pos = p.target(p.tensor("c1"), TENSOR_SLOTS, "name")
        p.put(pos + 4 + 2, "<B", ord("x"), old=0)
        return ModelFormatError, rf"^Model\.tensors\[{ti(m, 'c1')}\]\.name: string is not NUL-terminated"

    @case
    def version_without_nul(p):
        pos = p.target(p.model, MODEL_SLOTS, "min_runtime_version")
        p.put(pos + 4 + 5, "<B", ord("1"), old=0)
        return ModelFormatError, r"^Model\.min_runtime_version: string is not NUL-terminated"

    # -- buffers
    nb = 1 + sum(t.data is not None for t in m.tensors)
    const = [t.name for t in m.tensors if t.data is not None]

    @case
    def buffer_offset_not_aligned(p):
        b = p.tensor("conv.weight").Buffer()
        pos = p.buffer_entry(b)
        p.put(pos, "<Q", p.get(pos, "<Q") + 32)
        return ModelFormatError, rf"^Model\.buffers\[{b}\]: offset 32 is not a multiple of 64$"

    @case
    def buffer_size_past_end(p):
        b = nb - 1
        pos = p.buffer_entry(b)
        off, size = p.get(pos, "<Q"), p.get(pos + 8, "<Q")
        p.put(pos + 8, "<Q", size + 1)
        return ModelFormatError, (rf"^Model\.buffers\[{b}\]: {size + 1} bytes at data offset {off} run past "
                                  rf"the end of the file \({len(p.data)} bytes; data segment starts at \d+\); "
                                  rf"the file is truncated$")

    @case
    def buffer_offset_past_end(p):
        pos = p.buffer_entry(1)
        p.put(pos, "<Q", 2**64 - 64, old=0)
        return ModelFormatError, rf"^Model\.buffers\[1\]: \d+ bytes at data offset {2**64 - 64} run past the end of the file"

    @case
    def buffer_size_max(p):
        pos = p.buffer_entry(2)
        p.put(pos + 8, "<Q", 2**64 - 1)
        return ModelFormatError, rf"^Model\.buffers\[2\]: {2**64 - 1} bytes at data offset \d+ run past the end of the file"

    @case
    def buffer_zero_not_empty(p):
        p.put(p.buffer_entry(0) + 8, "<Q", 64, old=0)
        return ModelFormatError, r"^Model\.buffers\[0\]: buffer 0 is the empty sentinel, but has size 64$"

    @case
    def tensor_buffer_index_out_of_range(p):
        p.put(p.field(p.tensor("conv.weight"), TENSOR_SLOTS, "buffer"), "<I", 999, old=1)
        return ModelFormatError, rf"^{t_re(m, 'conv.weight')}: buffer index 999 is out of range \(the file has {nb} buffers\)$"

    @case
    def tensor_buffer_index_max(p):
        p.put(p.field(p.tensor(const[-1]), TENSOR_SLOTS, "buffer"), "<I", 2**32 - 1, old=nb - 1)
        return ModelFormatError, rf"^{t_re(m, const[-1])}: buffer index {2**32 - 1} is out of range"

    @case
    def shape_does_not_match_buffer(p):
        _, first = p.vector(p.tensor("conv.weight"), TENSOR_SLOTS, "shape")
        p.put(first + 12, "<i", 2, old=3)
        return ModelFormatError, rf"^{t_re(m, 'conv.weight')}: shape \(4, 3, 3, 2\) INT8 needs 72 bytes but buffer 1 holds 108$"

    @case
    def buffer_size_does_not_match_shape(p):
        p.put(p.buffer_entry(1) + 8, "<Q", 107, old=108)
        return ModelFormatError, rf"^{t_re(m, 'conv.weight')}: shape \(4, 3, 3, 3\) INT8 needs 108 bytes but buffer 1 holds 107$"

    @case
    def float32_shape_does_not_match_buffer(p):
        t = p.tensor("c.float32")
        _, first = p.vector(t, TENSOR_SLOTS, "shape")
        p.put(first + 4, "<i", 4, old=3)
        return ModelFormatError, rf"^{t_re(m, 'c.float32')}: shape \(2, 4\) FLOAT32 needs 32 bytes but buffer {t.Buffer()} holds 24$"

    @case
    def int4_shape_does_not_match_buffer(p):
        t = p.tensor("c.int4")
        _, first = p.vector(t, TENSOR_SLOTS, "shape")
        p.put(first, "<i", 5, old=3)
        return ModelFormatError, rf"^{t_re(m, 'c.int4')}: shape \(5,\) INT4 needs 3 bytes but buffer {t.Buffer()} holds 2$"

    # -- shapes (semantic rules, checked before any size is computed)
    @case
    def dimension_zero(p):
        _, first = p.vector(p.tensor("q0"), TENSOR_SLOTS, "shape")
        p.put(first + 4, "<i", 0, old=8)
        return InvalidModelError, rf"^{t_re(m, 'q0')}: shape \(1, 0, 8, 3\) has a dimension < 1$"

    @case
    def dimension_negative(p):
        _, first = p.vector(p.tensor("q0"), TENSOR_SLOTS, "shape")
        p.put(first + 8, "<i", -5, old=8)
        return InvalidModelError, rf"^{t_re(m, 'q0')}: shape \(1, 8, -5, 3\) has a dimension < 1$"

    @case
    def constant_dimension_negative(p):
        _, first = p.vector(p.tensor("conv.weight"), TENSOR_SLOTS, "shape")
        p.put(first, "<i", -(2**31), old=4)
        return InvalidModelError, rf"^{t_re(m, 'conv.weight')}: shape \({-(2**31)}, 3, 3, 3\) has a dimension < 1$"

    # -- codes this qrt does not know
    @case
    def unknown_dtype(p):
        p.put(p.field(p.tensor("q0"), TENSOR_SLOTS, "dtype"), "<b", 7, old=1)
        return UnsupportedModelError, rf"^{t_re(m, 'q0')} dtype: DType code 7 is unknown to qrt {QRT}; the file needs a newer qrt"

    @case
    def unknown_dtype_127(p):
        p.put(p.field(p.tensor("conv.weight"), TENSOR_SLOTS, "dtype"), "<b", 127, old=1)
        return UnsupportedModelError, rf"^{t_re(m, 'conv.weight')} dtype: DType code 127 is unknown to qrt {QRT}"

    @case
    def unknown_opcode(p):
        unknown = max(OpCode) + 1
        p.put(p.field(p.operator("add"), OPERATOR_SLOTS, "opcode"), "<i", unknown, old=int(OpCode.ADD))
        return UnsupportedModelError, rf"^operator {oi(m, 'add')} 'add' opcode: OpCode code {unknown} is unknown to qrt {QRT}; the file needs a newer qrt"

    @case
    def unknown_opcode_large(p):
        p.put(p.field(p.operator("softmax"), OPERATOR_SLOTS, "opcode"), "<i", INT32_MAX, old=int(OpCode.SOFTMAX))
        return UnsupportedModelError, rf"^operator {oi(m, 'softmax')} 'softmax' opcode: OpCode code {INT32_MAX} is unknown"

    @case
    def unknown_options_type(p):
        o = p.operator("conv")
        first_unknown = len(OPTIONS_TYPES) + 1
        p.put(p.field(o, OPERATOR_SLOTS, "options_type"), "<B", first_unknown, old=1)
        return UnsupportedModelError, (rf"^Model\.operators\[{oi(m, 'conv')}\]\.options: OpOptions type "
                                       rf"{first_unknown} is unknown to qrt {QRT}; the file needs a newer qrt")

    @case
    def unknown_options_type_255(p):
        o = p.operator("softmax")
        p.put(p.field(o, OPERATOR_SLOTS, "options_type"), "<B", 255, old=9)
        return UnsupportedModelError, rf"^Model\.operators\[{oi(m, 'softmax')}\]\.options: OpOptions type 255 is unknown"

    @case
    def unknown_activation(p):
        p.put(p.field(p.operator("conv"), OPERATOR_SLOTS, "activation"), "<b", 4, old=int(Activation.RELU))
        return UnsupportedModelError, rf"^operator {oi(m, 'conv')} 'conv' activation: Activation code 4 is unknown to qrt {QRT}"

    return cases


BINARY_CASES = list(_binary_cases())


@pytest.mark.parametrize("case", BINARY_CASES)
def test_binary(case):
    p = Patcher(valid_bytes())
    exc, pattern = _binary_cases()[case](p)
    raises(exc, pattern, qrt.read_model, p.bytes())


def test_unknown_layout():
    p = Patcher(valid_bytes("conv_chain"))
    io = p.model.Inputs(0)
    p.put(p.field(io, GRAPH_IO_SLOTS, "layout"), "<b", 2, old=1)
    raises(UnsupportedModelError, rf"^inputs\[0\] 'input' layout: Layout code 2 is unknown to qrt {QRT}",
           qrt.read_model, p.bytes())


# ------------------------------------------------------------------------------ versions

def _next(kind: int) -> str:
    """The running qrt's version with its patch (2) or minor (1) number raised."""
    v = list(qrt.format.versions.RUNTIME_VERSION)
    v[kind] += 1
    v[kind + 1:] = [0] * (2 - kind)
    return ".".join(map(str, v))


@pytest.mark.parametrize("version", [_next(2), _next(1), "1.0.0", "999999.0.0"])
def test_min_runtime_version_newer(version):
    data = unverified_bytes(all_ops_model(), min_runtime_version=lambda m: version)
    raises(UnsupportedModelError,
           rf"^this file needs qrt >= {re.escape(version)} \(it was written with format revision {WRITTEN}\); "
           rf"this is qrt {QRT}, which reads revision {FORMAT}: upgrade with pip install -U qrt$",
           qrt.read_model, data)


def test_version_is_checked_before_anything_else():
    """A newer file may use codes this qrt cannot decode: the version error comes first."""
    p = Patcher(unverified_bytes(all_ops_model(), min_runtime_version=lambda m: "9.0.0"))
    p.put(p.field(p.operator("add"), OPERATOR_SLOTS, "opcode"), "<i", 20, old=int(OpCode.ADD))
    p.put(p.field(p.operator("conv"), OPERATOR_SLOTS, "options_type"), "<B", 11, old=1)
    p.put(p.field(p.tensor("q0"), TENSOR_SLOTS, "dtype"), "<b", 7, old=1)
    raises(UnsupportedModelError, r"^this file needs qrt >= 9\.0\.0 ", qrt.read_model, p.bytes())


@pytest.mark.parametrize("version", ["0.1", "0.1.0.0", "v0.1.0", "", "0.1.x", " 0.1.0", "0.1.0 ",
                                     "0.-1.0", "1234567.0.0", "0..1", "0.1.0" * 20,
                                     "\u0660.\u0661.\u0660"],  # Arabic-Indic digits: not ASCII
                         ids=["two_parts", "four_parts", "v_prefix", "empty", "letter", "lead_space",
                              "trail_space", "negative", "seven_digits", "empty_part", "long",
                              "non_ascii_digits"])
def test_min_runtime_version_malformed(version):
    data = unverified_bytes(all_ops_model(), min_runtime_version=lambda m: version)
    raises(ModelFormatError,
           rf"^Model\.min_runtime_version: '{re.escape(version[:40])}' is not a MAJOR\.MINOR\.PATCH version$",
           qrt.read_model, data)


def test_numerics_version_0():
    """Numerics rules are numbered from 1: rule 0 is corrupt, and upgrading cannot help."""
    data = unverified_bytes(all_ops_model(), NUMERICS_VERSION=0)
    raises(ModelFormatError, r"^Model\.numerics_version: 0 ", qrt.read_model, data)


def test_numerics_version_2():
    data = unverified_bytes(all_ops_model(), NUMERICS_VERSION=2)
    raises(UnsupportedModelError,
           rf"^this file uses numerics rule 2; qrt {QRT} implements rule 1 only: upgrade with pip install -U qrt$",
           qrt.read_model, data)


# ------------------------------------------------------------------------------ semantic cases

SEMANTIC = {}


def semantic(base=all_ops_model, **writer_overrides):
    """Register fn(model) -> (exception class, regex) that breaks a model of `base`;
    `writer_overrides` are passed to unverified_bytes."""
    def register(fn):
        SEMANTIC[fn.__name__] = (base, fn, writer_overrides)
        return fn
    return register


# -- indices out of range
@semantic()
def op_input_index_out_of_range(m):
    o = OP(m, "conv")
    o.inputs = (o.inputs[0], 999, o.inputs[2])
    return InvalidModelError, rf"^{op_re(m, 'conv')}: input 1 refers to tensor 999, but the model has {len(m.tensors)} tensors$"


@semantic()
def op_input_index_max(m):
    o = OP(m, "mul")
    o.inputs = (o.inputs[0], 2**32 - 1)
    return InvalidModelError, rf"^{op_re(m, 'mul')}: input 1 refers to tensor {2**32 - 1}, but the model has {len(m.tensors)} tensors$"


@semantic()
def op_output_index_out_of_range(m):
    OP(m, "add").outputs = (4096,)
    return InvalidModelError, rf"^{op_re(m, 'add')}: output 0 refers to tensor 4096, but the model has {len(m.tensors)} tensors$"


@semantic()
def graph_input_index_out_of_range(m):
    m.inputs[0].tensor = 2**32 - 1
    return InvalidModelError, rf"^graph inputs\[0\] 'image': refers to tensor {2**32 - 1}, but the model has {len(m.tensors)} tensors$"


@semantic()
def graph_output_index_out_of_range(m):
    n = len(m.tensors)
    m.outputs[1].tensor = n
    return InvalidModelError, rf"^graph outputs\[1\] 'features': refers to tensor {n}, but the model has {n} tensors$"


# -- weights and quantization
@semantic()
def weight_zero_point_nonzero(m):
    T(m, "conv.weight").quant.zero_point = np.array([0, 0, 1, 0], np.int32)
    return InvalidModelError, rf"^{op_re(m, 'conv')}: weights tensor 'conv\.weight' must be symmetric \(zero point 0\)$"


@semantic()
def conv_weights_contain_minus_128(m):
    T(m, "conv.weight").data[1, 2, 0, 1] = -128
    return InvalidModelError, rf"^{op_re(m, 'conv')}: weights tensor 'conv\.weight' contain -128; int8 weights must lie in \[-127, 127\]$"


@semantic()
def fc_weights_contain_minus_128(m):
    T(m, "fc.weight").data[9, 143] = -128
    return InvalidModelError, rf"^{op_re(m, 'fc')}: weights tensor 'fc\.weight' contain -128"


@semantic()
def per_channel_scale_count(m):
    w = T(m, "conv.weight")
    w.quant = Quantization(w.quant.scale[:3], w.quant.zero_point[:3], 0)
    return InvalidModelError, rf"^{t_re(m, 'conv.weight')}: 3 per-channel scales but dimension 0 of shape \(4, 3, 3, 3\) has 4 channels$"


@semantic()
def per_channel_on_wrong_dimension(m):
    w = T(m, "dw.weight")  # (1, 3, 3, 8), per channel along 3; 3 scales along dimension 1
    w.quant = Quantization(w.quant.scale[:3], w.quant.zero_point[:3], 1)
    return InvalidModelError, rf"^{op_re(m, 'dw')}: weights tensor 'dw\.weight' are per-channel along dimension 1; expected dimension 3"


@semantic()
def quantized_dimension_too_large(m):
    T(m, "conv.weight").quant.axis = 4
    return InvalidModelError, rf"^{t_re(m, 'conv.weight')}: quantized_dimension 4 is not a dimension of shape \(4, 3, 3, 3\)$"


@semantic()
def quantized_dimension_negative(m):
    T(m, "c.int16").quant.axis = -1
    return InvalidModelError, rf"^{t_re(m, 'c.int16')}: quantized_dimension -1 is not a dimension of shape \(2, 2\)$"


@semantic()
def zero_points_fewer_than_scales(m):
    q = T(m, "conv.weight").quant
    q.zero_point = q.zero_point[:2]
    return InvalidModelError, rf"^{t_re(m, 'conv.weight')}: quantization needs as many zero points as scales \(>= 1\), got 4 scales and 2 zero points$"


@semantic()
def float_tensor_with_quantization(m):
    T(m, "probs").quant = Quantization([0.1], [0])
    return InvalidModelError, rf"^{t_re(m, 'probs')}: a FLOAT32 tensor cannot carry quantization parameters$"


# -- operator arity, options, fused activations
@semantic()
def conv_two_inputs(m):
    o = OP(m, "conv")
    o.inputs = o.inputs[:2]
    return InvalidModelError, rf"^{op_re(m, 'conv')}: has 2 inputs; expected 3$"


@semantic()
def add_three_inputs(m):
    o = OP(m, "add")
    o.inputs = o.inputs + o.inputs[:1]
    return InvalidModelError, rf"^{op_re(m, 'add')}: has 3 inputs; expected 2$"


@semantic()
def concat_no_inputs(m):
    OP(m, "concat").inputs = ()
    return InvalidModelError, rf"^{op_re(m, 'concat')}: has 0 inputs; expected at least 1$"


@semantic()
def conv_two_outputs(m):
    extra = new_tensor(m, "c1.extra", "c1")
    o = OP(m, "conv")
    o.outputs = o.outputs + (extra,)
    return InvalidModelError, rf"^{op_re(m, 'conv')}: has 2 outputs; expected 1$"


@semantic()
def conv_with_pool_options(m):
    OP(m, "conv").options = Pool2DOptions(3, 3)
    return InvalidModelError, rf"^{op_re(m, 'conv')}: needs Conv2DOptions, got Pool2DOptions$"


@semantic()
def fully_connected_with_options(m):
    OP(m, "fc").options = Conv2DOptions()
    return InvalidModelError, rf"^{op_re(m, 'fc')}: takes no options, got Conv2DOptions$"


@semantic()
def softmax_with_concat_options(m):
    OP(m, "softmax").options = ConcatOptions(axis=-1)
    return InvalidModelError, rf"^{op_re(m, 'softmax')}: needs SoftmaxOptions, got ConcatOptions$"


@semantic()
def conv_zero_stride(m):
    OP(m, "conv").options.stride_h = 0
    return InvalidModelError, rf"^{op_re(m, 'conv')}: stride_h = 0; must be >= 1$"


@semantic()
def depthwise_zero_dilation(m):
    OP(m, "dw").options.dilation_w = 0
    return InvalidModelError, rf"^{op_re(m, 'dw')}: dilation_w = 0; must be >= 1$"


@semantic()
def depthwise_zero_multiplier(m):
    OP(m, "dw").options.depth_multiplier = 0
    return InvalidModelError, rf"^{op_re(m, 'dw')}: depth_multiplier = 0; must be >= 1$"


@semantic()
def conv_zero_groups(m):
    OP(m, "grouped").options.groups = 0
    return InvalidModelError, rf"^{op_re(m, 'grouped')}: groups = 0; must be >= 1$"


@semantic()
def groups_do_not_divide_channels(m):
    OP(m, "grouped").options.groups = 3
    return InvalidModelError, rf"^{op_re(m, 'grouped')}: groups = 3 does not fit input channels 8, output channels 8 and weights \(8, 1, 1, 4\)$"


@semantic()
def conv_negative_padding(m):
    OP(m, "conv").options.pad_left = -1
    return InvalidModelError, rf"^{op_re(m, 'conv')}: pad_left = -1; must be >= 0$"


@semantic()
def pool_negative_padding(m):
    OP(m, "avgpool").options.pad_bottom = -2
    return InvalidModelError, rf"^{op_re(m, 'avgpool')}: pad_bottom = -2; must be >= 0$"


@semantic()
def pool_zero_kernel(m):
    OP(m, "maxpool").options.kernel_w = 0
    return InvalidModelError, rf"^{op_re(m, 'maxpool')}: kernel_w = 0; must be >= 1$"


@semantic()
def conv_output_shape_inconsistent(m):
    OP(m, "conv").options.stride_h = 2  # (8 + 1 + 1 - 3) // 2 + 1 = 4 rows, c1 has 8
    return InvalidModelError, rf"^{op_re(m, 'conv')}: output tensor 'c1' has shape \(1, 8, 8, 4\); the window arithmetic gives \(1, 4, 8, 4\)$"


@semantic()
def depthwise_output_shape_inconsistent(m):
    T(m, "d").shape = (1, 4, 5, 8)
    return InvalidModelError, rf"^{op_re(m, 'dw')}: output tensor 'd' has shape \(1, 4, 5, 8\); the window arithmetic gives \(1, 4, 4, 8\)$"


@semantic()
def fused_activation_on_max_pool(m):
    OP(m, "maxpool").activation = Activation.RELU
    return InvalidModelError, rf"^{op_re(m, 'maxpool')}: cannot fuse activation RELU$"


@semantic()
def fused_clip_on_concat(m):
    o = OP(m, "concat")
    o.activation, o.clip_min, o.clip_max = Activation.CLIP, 0.0, 1.0
    return InvalidModelError, rf"^{op_re(m, 'concat')}: cannot fuse activation CLIP$"


@semantic()
def clip_min_greater_than_max(m):
    o = OP(m, "grouped")
    o.clip_min, o.clip_max = 3.0, -1.0
    return InvalidModelError, rf"^{op_re(m, 'grouped')}: clip range \[3\.0, -1\.0\] must be finite with min <= max$"


@semantic()
def clip_min_nan(m):
    OP(m, "grouped").clip_min = math.nan
    return InvalidModelError, rf"^{op_re(m, 'grouped')}: clip range \[nan, 2\.5\] must be finite with min <= max$"


@semantic()
def clip_max_inf(m):
    OP(m, "grouped").clip_max = math.inf
    return InvalidModelError, rf"^{op_re(m, 'grouped')}: clip range \[-1\.0, inf\] must be finite with min <= max$"


# The writer stamps min_runtime_version from the op versions it knows; a file that claims
# 0.1.0 but holds an op version 0.1.0 does not know must still be refused by the op check.
@semantic(min_runtime_version=lambda m: "0.1.0")
def unknown_op_version(m):
    OP(m, "add").version = 2
    return UnsupportedModelError, rf"^{op_re(m, 'add')} is version 2, which qrt {QRT} does not know; the file needs a newer qrt"


@semantic(min_runtime_version=lambda m: "0.1.0")
def unknown_op_version_max(m):
    OP(m, "softmax").version = 65535
    return UnsupportedModelError, rf"^{op_re(m, 'softmax')} is version 65535, which qrt {QRT} does not know"


@semantic(min_runtime_version=lambda m: "0.1.0")
def op_version_zero(m):
    """Op versions start at 1: version 0 is corrupt, not something a newer qrt knows, so the
    error must not tell the user to upgrade."""
    OP(m, "add").version = 0
    return InvalidModelError, rf"^{op_re(m, 'add')}: version 0 "


# -- graph structure
@semantic()
def cycle_between_two_ops(m):
    o = OP(m, "add")  # add reads mul's output, mul reads add's output
    o.inputs = (ti(m, "g"), ti(m, "mu"))
    add, mul = op_re(m, "add"), op_re(m, "mul")
    return InvalidModelError, rf"^graph: operators form a cycle: {add} -> {mul} -> {add}$"


@semantic()
def op_reads_its_own_output(m):
    o = OP(m, "add")
    o.inputs = (ti(m, "g"), ti(m, "a"))
    add = op_re(m, "add")
    return InvalidModelError, rf"^graph: operators form a cycle: {add} -> {add}$"


@semantic()
def ops_out_of_order(m):
    i, j = oi(m, "add"), oi(m, "mul")
    m.operators[i], m.operators[j] = m.operators[j], m.operators[i]
    return InvalidModelError, (rf"^{op_re(m, 'mul')}: reads {t_re(m, 'a')} before {op_re(m, 'add')} writes it "
                               rf"\(operators must be stored in execution order\)$")


@semantic()
def tensor_read_but_never_produced(m):
    orphan = new_tensor(m, "orphan", "d")
    OP(m, "add").inputs = (ti(m, "g"), orphan)
    return InvalidModelError, (rf"^{op_re(m, 'add')}: reads {t_re(m, 'orphan')}, which no operator writes "
                               rf"and which is neither a constant nor a graph input$")


@semantic()
def two_ops_write_one_tensor(m):
    OP(m, "mul").outputs = (ti(m, "a"),)
    return InvalidModelError, rf"^{op_re(m, 'mul')}: writes {t_re(m, 'a')}, already written by {op_re(m, 'add')}$"


@semantic()
def op_writes_a_constant(m):
    OP(m, "conv").outputs = (ti(m, "conv.bias"),)
    return InvalidModelError, rf"^{op_re(m, 'conv')}: writes {t_re(m, 'conv.bias')}, which is a constant$"


@semantic()
def graph_input_is_a_constant(m):
    m.inputs[0].tensor = ti(m, "conv.weight")
    return InvalidModelError, rf"^graph inputs\[0\] 'image': {t_re(m, 'conv.weight')} is a constant$"


@semantic()
def graph_output_is_a_constant(m):
    m.outputs[0].tensor = ti(m, "fc.bias")
    return InvalidModelError, rf"^graph outputs\[0\] 'probs': {t_re(m, 'fc.bias')} is a constant$"


@semantic()
def graph_input_written_by_an_op(m):
    m.inputs[0].tensor = ti(m, "q0")
    return InvalidModelError, rf"^graph inputs\[0\] 'image': {t_re(m, 'q0')} is written by {op_re(m, 'quantize')}$"


@semantic()
def graph_output_never_computed(m):
    ghost = new_tensor(m, "ghost", "probs")
    m.outputs[0].tensor = ghost
    return InvalidModelError, rf"^graph output 'probs': {t_re(m, 'ghost')} is never computed$"


@semantic()
def no_graph_outputs(m):
    m.outputs = []
    return InvalidModelError, r"^model: a model needs at least one graph input and one graph output$"


@semantic()
def duplicate_tensor_names(m):
    T(m, "mu").name = "a"
    i = next(k for k, t in enumerate(m.tensors) if t.name == "a" and k != ti(m, "a"))
    return InvalidModelError, rf"^tensor {i} 'a': the name is already used by tensor {ti(m, 'a')}$"


@semantic()
def empty_tensor_name(m):
    T(m, "mu").name = ""
    return InvalidModelError, r"^tensor \d+ '': tensor name must be a non-empty string$"


@semantic()
def duplicate_graph_input_names(m):
    m.inputs.append(GraphIO("image", new_tensor(m, "image2", "image")))
    return InvalidModelError, r"^graph inputs\[1\] 'image': the name 'image' is used twice$"


@semantic()
def duplicate_graph_output_names(m):
    m.outputs[1].name = "probs"
    return InvalidModelError, r"^graph outputs\[1\] 'probs': the name 'probs' is used twice$"


# -- op-specific rules
@semantic()
def softmax_output_wrong_scale(m):
    T(m, "sm").quant.scale = np.array([1 / 128], np.float32)
    return InvalidModelError, rf"^{op_re(m, 'softmax')}: output tensor 'sm' must have scale 1/256 and zero point -128"


@semantic()
def softmax_output_wrong_zero_point(m):
    T(m, "sm").quant.zero_point = np.array([0], np.int32)
    return InvalidModelError, rf"^{op_re(m, 'softmax')}: output tensor 'sm' must have scale 1/256 and zero point -128"


@semantic()
def reshape_changes_element_count(m):
    T(m, "rs").shape = (1, 143)
    return InvalidModelError, rf"^{op_re(m, 'flatten')}: cannot reshape \(1, 16, 3, 3\) \(144 elements\) to \(1, 143\) \(143 elements\)$"


@semantic()
def transpose_perm_repeats(m):
    OP(m, "to_nchw").options = TransposeOptions((0, 3, 1, 1))
    return InvalidModelError, rf"^{op_re(m, 'to_nchw')}: perm \(0, 3, 1, 1\) is not a permutation of the 4 dimensions$"


@semantic()
def transpose_perm_out_of_range(m):
    OP(m, "to_nchw").options = TransposeOptions((0, 3, 1, 4))
    return InvalidModelError, rf"^{op_re(m, 'to_nchw')}: perm \(0, 3, 1, 4\) is not a permutation of the 4 dimensions$"


@semantic()
def transpose_perm_too_short(m):
    OP(m, "to_nchw").options = TransposeOptions((0, 2, 1))
    return InvalidModelError, rf"^{op_re(m, 'to_nchw')}: perm \(0, 2, 1\) is not a permutation of the 4 dimensions$"


@semantic()
def concat_axis_out_of_range(m):
    OP(m, "concat").options = ConcatOptions(axis=4)
    return InvalidModelError, rf"^{op_re(m, 'concat')}: axis 4 is out of range for rank 4$"


@semantic()
def pad_negative(m):
    OP(m, "pad").options = PadOptions((0, 1, 0, 0, 0, 0, 1, -1))
    return InvalidModelError, rf"^{op_re(m, 'pad')}: pads \(0, 1, 0, 0, 0, 0, 1, -1\) must be 8 values >= 0"


@semantic()
def mean_repeated_axes(m):
    OP(m, "mean").options = MeanOptions((1, -3), False)
    return InvalidModelError, rf"^{op_re(m, 'mean')}: axes \(1, -3\) must name distinct dimensions, at least one$"


# -- int32 accumulator bound
@semantic(base=lambda: fc_model(70000, 0))
def accumulator_overflow_long_reduction(m):
    return InvalidModelError, (rf"^{op_re(m, 'fc')}: reduction length 70000 with \|bias\| up to 0 can overflow "
                               rf"the int32 accumulator \(70000 x 255 x 127 \+ 0 > 2\^31 - 1\)$")


@semantic(base=lambda: fc_model(4, INT32_MAX - 4 * 255 * 127 + 1))
def accumulator_overflow_large_bias(m):
    b = INT32_MAX - 4 * 255 * 127 + 1
    return InvalidModelError, rf"^{op_re(m, 'fc')}: reduction length 4 with \|bias\| up to {b} can overflow the int32 accumulator"


@semantic(base=lambda: fc_model(1, -(2**31)))
def accumulator_overflow_most_negative_bias(m):
    return InvalidModelError, rf"^{op_re(m, 'fc')}: reduction length 1 with \|bias\| up to {2**31} can overflow"


# -- the verifier must name the culprit, not crash
@semantic(base=conv_chain_model)
def bias_per_channel_with_per_tensor_weights(m):
    """fc.weight per tensor (1 scale), fc.bias per channel (10 scales that do not match)."""
    w = T(m, "fc.weight")
    w.quant = Quantization([0.01], [0], 0)
    return InvalidModelError, rf"^{op_re(m, 'fc')}: bias tensor 'fc\.bias' scale must equal input scale x weight scale per channel$"


def test_bias_per_channel_scales_with_per_tensor_weights_loads(tmp_path):
    """SPEC section 3: a bias may carry 1 or C_out scales, each equal to s_x*s_w[c]. With
    per-tensor weights (one s_w) C_out equal scales are valid: the model must load and write."""
    m = conv_chain_model()
    w, bias = T(m, "fc.weight"), T(m, "fc.bias")
    s_x = float(T(m, "pooled").quant.scale[0])
    w.quant = Quantization([0.01], [0], 0)
    bias.quant = Quantization(np.full(10, np.float32(s_x) * np.float32(0.01), np.float32), np.zeros(10, np.int32), 0)
    data = unverified_bytes(m)
    assert qrt.read_model(data).tensors[ti(m, "fc.bias")].quant.scale.size == 10
    assert qrt.to_bytes(m) == data


def _fc_scalar_input_model():
    b = ModelBuilder("fc_scalar")
    x = b.tensor("x", DType.INT8, (), scale=0.1, zero_point=0)
    w = b.tensor("w", DType.INT8, (1, 1), [[1]], scale=0.1)
    bb = b.tensor("b", DType.INT32, (1,), [0], scale=0.01)
    y = b.tensor("y", DType.INT8, (1,), scale=0.1, zero_point=0)
    b.op(OpCode.FULLY_CONNECTED, [x, w, bb], [y], name="fc")
    b.input("x", x)
    b.output("y", y)
    return b.build()


@semantic(base=_fc_scalar_input_model)
def fully_connected_rank0_input(m):
    """A rank-0 tensor is legal (shape ()), but FULLY_CONNECTED needs an input with a last
    dimension K."""
    return InvalidModelError, rf"^{op_re(m, 'fc')}: .*tensor 'x'"


@pytest.mark.parametrize("case", list(SEMANTIC))
def test_semantic(case, tmp_path):
    base, mutate, writer_overrides = SEMANTIC[case]
    m = base()
    exc, pattern = mutate(m)
    assert_refused(m, exc, pattern, tmp_path, **writer_overrides)


@pytest.mark.parametrize("value,text", [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf"),
                                        (-0.05, "-0.05"), (0.0, "0.0"), (-0.0, "-0.0"), (1e-46, "0.0")])
def test_bad_scale(value, text, tmp_path):
    m = all_ops_model()
    T(m, "c1").quant.scale = np.array([value], np.float32)
    assert_refused(m, InvalidModelError,
                   rf"^{t_re(m, 'c1')}: scale\[0\] = (np\.float32\()?{re.escape(text)}\)?; scales must be finite and > 0$",
                   tmp_path)


def test_bad_per_channel_scale_names_the_channel(tmp_path):
    m = all_ops_model()
    T(m, "conv.weight").quant.scale[2] = np.nan
    assert_refused(m, InvalidModelError, rf"^{t_re(m, 'conv.weight')}: scale\[2\] = (np\.float32\()?nan\)?; scales",
                   tmp_path)


@pytest.mark.parametrize("name,zero_points,k,dtype,lo,hi", [
    ("q0", [128], 0, "INT8", -128, 127),
    ("q0", [-129], 0, "INT8", -128, 127),
    ("c.uint8", [256], 0, "UINT8", 0, 255),
    ("c.uint8", [-1], 0, "UINT8", 0, 255),
    ("c.int16", [0, 32768], 1, "INT16", -32768, 32767),
    ("c.int16", [-32769, 0], 0, "INT16", -32768, 32767),
    ("c.int4", [8], 0, "INT4", -8, 7),
])
def test_zero_point_out_of_range(name, zero_points, k, dtype, lo, hi, tmp_path):
    m = all_ops_model()
    T(m, name).quant.zero_point = np.array(zero_points, np.int32)
    assert_refused(m, InvalidModelError,
                   rf"^{t_re(m, name)}: zero_point\[{k}\] = {zero_points[k]} is outside the {dtype} range \[{lo}, {hi}\]$",
                   tmp_path)


# ------------------------------------------------------------------------------ absurd shapes

@pytest.mark.parametrize("name,shape,exc,tail", [
    ("q0", (1, 0, 8, 3), InvalidModelError, r"has a dimension < 1"),
    ("q0", (-1, 8, 8, 3), InvalidModelError, r"has a dimension < 1"),
    ("q0", (1,) * 9, InvalidModelError, r"rank 9 exceeds the limit of 8"),
    ("q0", (2**20,) * 3, InvalidModelError, rf"has more than {INT32_MAX} elements"),
    ("q0", (INT32_MAX,) * 8, InvalidModelError, rf"has more than {INT32_MAX} elements"),
    ("conv.weight", (4, 3, 0, 3), InvalidModelError, r"has a dimension < 1"),
    ("conv.weight", (1,) * 9, InvalidModelError, r"rank 9 exceeds the limit of 8"),
    ("conv.weight", (2**20,) * 3, InvalidModelError, rf"has more than {INT32_MAX} elements"),
    ("conv.weight", (-(2**31), -(2**31)), InvalidModelError, r"has a dimension < 1"),
    # within the element limit, but 1 GiB that the 108-byte buffer does not hold
    ("conv.weight", (2**15, 2**15), ModelFormatError, r"INT8 needs 1073741824 bytes but buffer 1 holds 108$"),
], ids=["q0-dim0", "q0-negative", "q0-rank9", "q0-2^60", "q0-int32max^8", "const-dim0", "const-rank9",
        "const-2^60", "const-int32min", "const-1GiB"])
def test_absurd_shapes_allocate_nothing(name, shape, exc, tail, tmp_path):
    m = all_ops_model()
    T(m, name).shape = shape
    data = unverified_bytes(m)
    shape_text = re.escape(str(tuple(shape)))
    pattern = rf"^{t_re(m, name)}: (shape {shape_text} )?.*{tail}"
    tracemalloc.start()
    try:
        raises(exc, pattern, qrt.read_model, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"reading allocated {peak / 2**20:.0f} MiB"
    if exc is InvalidModelError:  # the writer applies the same rule to the object
        raises(exc, pattern, qrt.to_bytes, m)


# ------------------------------------------------------------------------------ files qrt must load

def test_model_without_constants_round_trips():
    """A model with no constant tensors has an empty data segment; the writer does not pad the
    file to it, and the reader must not call qrt's own file truncated."""
    b = ModelBuilder("no_constants")
    x = b.tensor("x", DType.FLOAT32, (1, 4))
    q = b.tensor("q", DType.INT8, (1, 4), scale=0.1, zero_point=0)
    y = b.tensor("y", DType.FLOAT32, (1, 4))
    b.op(OpCode.QUANTIZE, [x], [q], name="quantize")
    b.op(OpCode.DEQUANTIZE, [q], [y], name="dequantize")
    b.input("x", x)
    b.output("y", y)
    data = qrt.to_bytes(b.build())
    assert len(data) % 64, "the test needs a FlatBuffer that does not end on a 64-byte boundary"
    assert [t.name for t in qrt.read_model(data).tensors] == ["x", "q", "y"]


# ------------------------------------------------------------------------------ reader-only cases

@pytest.mark.parametrize("op_name,options,field", [
    ("mean", MeanOptions(axes=None), "axes"),
    ("pad", PadOptions(pads=None), "pads"),
    ("to_nchw", TransposeOptions(perm=None), "perm"),
])
def test_absent_options_vector(op_name, options, field):
    """The schema makes every vector optional: a file whose MeanOptions.axes, PadOptions.pads or
    TransposeOptions.perm is absent is well-formed FlatBuffers, and must be refused by naming
    the operator and the field, not with a TypeError."""
    m = all_ops_model()
    OP(m, op_name).options = options
    data = unverified_bytes(m)  # the generated code leaves a None vector out of the file
    raises(InvalidModelError, rf"^{op_re(m, op_name)}: {field} ", qrt.read_model, data)


_ALIAS_SCRIPT = """
import json, sys
import qrt
from tests.format import corrupt
data = getattr(corrupt, sys.argv[1])(int(sys.argv[2]), int(sys.argv[3]))
try:
    qrt.read_model(data)
    print(json.dumps(["loaded", ""]))
except qrt.QrtError as e:
    print(json.dumps([type(e).__name__, str(e)]))
"""


BUDGET = "the file refers to the same data more often than its size allows"


@pytest.mark.parametrize("builder,n,size,outcomes", [
    # 100k entries -> one Tensor with a 100k-entry shape: 10^10 reads if decoded naively
    ("aliased_tensors_file", 100_000, 100_000,
     {"ModelFormatError": rf"^Model\.tensors(\[\d+\](\.shape)?)?: {BUDGET}"}),
    # 100k entries -> one small Tensor: the budget may stop it, or it decodes (linear work) and
    # the duplicate names are refused
    ("aliased_tensors_file", 100_000, 1,
     {"ModelFormatError": rf"^Model\.tensors(\[\d+\](\.\w+)?)?: {BUDGET}",
      "InvalidModelError": r"^tensor 1 't': the name is already used by tensor 0$"}),
    # 100k metadata properties -> one KeyValue with a 100 kB value
    ("aliased_properties_file", 100_000, 100_000,
     {"ModelFormatError": rf"^Model\.metadata\.properties(\[\d+\](\.value)?)?: {BUDGET}"}),
], ids=["tensors-big-shape", "tensors-small", "properties-big-value"])
def test_aliased_offsets_are_not_quadratic(builder, n, size, outcomes):
    proc = subprocess.run([sys.executable, "-c", _ALIAS_SCRIPT, builder, str(n), str(size)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kind, message = json.loads(proc.stdout.strip().splitlines()[-1])
    assert kind in outcomes and re.search(outcomes[kind], message), (kind, message)


def test_an_unknown_op_code_in_a_built_model_is_unsupported():
    """A model made in memory (not read from a file, whose codes the reader checks) with an op
    code this qrt does not know: UnsupportedModelError naming the operator, not a KeyError."""
    model = all_ops_model()
    model.operators[1].opcode = max(OpCode) + 1
    with pytest.raises(UnsupportedModelError, match=rf"^operator 1 '.*' \({max(OpCode) + 1}\): op code "
                                                    rf"{max(OpCode) + 1} is unknown to qrt {QRT}"):
        qrt.verify_model(model)
    with pytest.raises(UnsupportedModelError):
        qrt.to_bytes(model)
