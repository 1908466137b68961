"""The schema has one source: schema/qmodel.fbs. These tests fail when the generated code is
stale or when qrt's own reader layout (qrt/format/layout.py) or enums drift from it."""
from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qrt.format import layout as L
from qrt.format import model as M
from qrt.format import qmodel_generated as gen

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh():
    r = subprocess.run([sys.executable, str(ROOT / "schema" / "generate.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


class _Recorder:
    """Stands in for flatbuffers.Builder and records the Prepend*Slot calls of generated code."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, method):
        def record(*args):
            self.calls.append((method, args))
        return record


_SCALAR_METHOD = {
    L.BOOL: "PrependBoolSlot", L.I8: "PrependInt8Slot", L.U8: "PrependUint8Slot",
    L.U16: "PrependUint16Slot", L.I32: "PrependInt32Slot", L.U32: "PrependUint32Slot",
    L.F32: "PrependFloat32Slot", L.U64: "PrependUint64Slot",
}


def _camel(name):
    return "".join(p.title() for p in name.split("_"))


def _tables():
    seen, todo = {}, [L.MODEL]
    while todo:
        t = todo.pop()
        if t.name in seen:
            continue
        seen[t.name] = t
        for _, kind, _ in t.fields:
            kind = kind.element if isinstance(kind, L.Vector) else kind
            if isinstance(kind, L.Table):
                todo.append(kind)
            elif isinstance(kind, L.Union):
                todo.extend(kind.members)
    return list(seen.values())


@pytest.mark.parametrize("table", _tables(), ids=lambda t: t.name)
def test_layout_matches_generated_code(table):
    expected = []  # (generated field name, slot, Prepend method, default or None)
    slot = 0
    for name, kind, default in table.fields:
        if isinstance(kind, L.Union):
            expected.append((_camel(name) + "Type", slot, "PrependUint8Slot", 0))
            expected.append((_camel(name), slot + 1, "PrependUOffsetTRelativeSlot", None))
            slot += 2
            continue
        if isinstance(kind, L.Scalar):
            expected.append((_camel(name), slot, _SCALAR_METHOD[kind], default))
        else:
            expected.append((_camel(name), slot, "PrependUOffsetTRelativeSlot", None))
        slot += 1
    adders = sorted(n for n in dir(gen) if n.startswith(table.name + "Add"))
    assert sorted(table.name + "Add" + e[0] for e in expected) == adders, "fields differ from the schema"
    for field, slot, method, default in expected:
        rec = _Recorder()
        getattr(gen, table.name + "Add" + field)(rec, 7)
        (got_method, args), = rec.calls
        assert (got_method, args[0]) == (method, slot), field
        if default is not None and default is not L.REQUIRED:
            assert float(args[2]) == float(default), field


@pytest.mark.parametrize("table", _tables(), ids=lambda t: t.name)
def test_offset_field_kinds_match_generated_code(table):
    """Strings, sub-tables and vectors (with element size) are what the schema says."""
    for name, kind, _ in table.fields:
        if isinstance(kind, (L.Scalar, L.Union)):
            continue
        source = inspect.getsource(getattr(getattr(gen, table.name), _camel(name)))
        if isinstance(kind, L.String):
            assert "self._tab.String(" in source, name
        elif isinstance(kind, L.Table):
            assert "self._tab.Indirect(" in source and "Vector" not in source, name
        else:
            rec = _Recorder()
            getattr(gen, f"{table.name}Start{_camel(name)}Vector")(rec, 3)
            (method, args), = rec.calls
            size = 4 if isinstance(kind.element, (L.Table, L.String)) else kind.element.size
            assert (method, args[0]) == ("StartVector", size), name


def test_buffer_struct_matches():
    assert gen.Buffer.SizeOf() == L.BUFFER.size == 16
    source = inspect.getsource(gen.Buffer)
    assert re.search(r"def Offset\(self\).*py_type\(0\)", source)
    assert re.search(r"def Size\(self\).*py_type\(8\)", source)


@pytest.mark.parametrize("ours,theirs", [(M.DType, gen.DType), (M.Layout, gen.Layout),
                                         (M.Activation, gen.Activation), (M.OpCode, gen.OpCode)],
                         ids=lambda e: e.__name__)
def test_enums_match(ours, theirs):
    generated = {k: v for k, v in vars(theirs).items() if not k.startswith("_")}
    assert {e.name: e.value for e in ours} == generated


def test_options_union_order_matches():
    generated = {v: k for k, v in vars(gen.OpOptions).items() if not k.startswith("_") and k != "NONE"}
    assert [generated[i + 1] for i in range(len(generated))] == [c.__name__ for c in M.OPTIONS_TYPES]
    assert [t.name for t in L.OP_OPTIONS.members] == [c.__name__ for c in M.OPTIONS_TYPES]


@pytest.mark.parametrize("cls", M.OPTIONS_TYPES, ids=lambda c: c.__name__)
def test_options_dataclasses_match_layout(cls):
    spec = L.OP_OPTIONS.members[M.OPTIONS_TYPES.index(cls)]
    defaults = {f: d for f, _, d in spec.fields}
    obj = cls()
    assert list(vars(obj)) == list(defaults)
    for f, d in defaults.items():
        assert getattr(obj, f) == (() if d is None and isinstance(getattr(obj, f), tuple) else
                                   "" if d is None else pytest.approx(d)), f


def test_identifier_matches():
    text = (ROOT / "schema" / "qmodel.fbs").read_text()
    assert f'file_identifier "{L.FILE_IDENTIFIER.decode()}";' in text
