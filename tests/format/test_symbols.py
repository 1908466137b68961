"""Symbols in the file (format revision 4, SPEC.md section 2.15): Model.symbols and
Tensor.symbolic_dims round-trip; a file that declares symbols is stamped revision 4 and needs qrt
0.3.0; a file without them is written as before (no empty vectors, revision 3); the model cut
to a size (ModelDefinition.cut) takes the corners of its constants; `qrt inspect` shows the
symbolic dimensions; mutated files with symbols load or raise qrt's own errors."""
from __future__ import annotations

import json
import random

import numpy as np

import qrt
from bench.fixtures.mutate import mutate
from qrt.cli import main
from qrt.format import DType, ModelBuilder, OpCode
from qrt.format import qmodel_generated as G
from qrt.format.model import Symbol, SymbolicDim, pack_int4, unpack_int4
from tests.runtime.symbolic_models import attention, signal


def test_symbols_round_trip():
    model = signal()
    data = qrt.to_bytes(model)
    back = qrt.read_model(data)
    assert back.symbols == (Symbol("length", 16, 1),)
    assert [t.symbolic_dims for t in back.tensors] == [t.symbolic_dims for t in model.tensors]
    y4 = next(t for t in back.tensors if t.name == "y4")
    assert y4.symbolic_dims == (SymbolicDim(2, 0, 1, 1, 2),)  # floor((length + 1) / 2)
    assert qrt.to_bytes(back) == data
    # revision 4 and qrt 0.3.0 for the symbols alone: the same ops without them need 0.1.0
    assert (back.format_version, back.min_runtime_version) == (4, "0.3.0")
    static = qrt.read_model(qrt.to_bytes(signal(5)))
    assert (static.format_version, static.min_runtime_version) == (3, "0.1.0")


def test_a_file_without_symbols_stores_no_symbol_fields():
    """Absent, not empty: such a file is byte for byte what revision 3's writer wrote
    (tests/format/test_old_files.py pins two files' bytes)."""
    data = qrt.to_bytes(attention(4))
    root = G.Model.GetRootAs(data, 4)
    assert root.SymbolsIsNone() and root.FormatVersion() == 3
    assert all(root.Tensors(i).SymbolicDimsIsNone() for i in range(root.TensorsLength()))
    root = G.Model.GetRootAs(qrt.to_bytes(attention()), 4)
    assert root.SymbolsLength() == 1 and root.Symbols(0).Name() == b"sequence" and root.Symbols(0).Max() == 12
    assert root.FormatVersion() == 4


def test_cut_takes_the_corner_of_each_constant():
    b = ModelBuilder("corners")
    t = b.symbol("n", 6, 2)
    values = np.arange(-18, 18).reshape(6, 6) % 15 - 7
    x = b.tensor("x", DType.INT8, (1, 6, 6), scale=0.1, symbolic_dims=[(1, t), (2, t)])
    mask = b.tensor("mask", DType.INT8, (6, 6), values, scale=0.1, symbolic_dims=[(0, t), (1, t)])
    packed = b.tensor("w4", DType.INT4, (6, 6), pack_int4(values), scale=0.1, symbolic_dims=[(1, t)])
    fixed = b.tensor("fixed", DType.INT8, (6, 6), values, scale=0.1)
    y = b.tensor("y", DType.INT8, (1, 6, 6), scale=0.2, symbolic_dims=[(1, t), (2, t)])
    b.op(OpCode.ADD, [x, mask], [y])
    b.input("x", x)
    b.output("y", y)
    model = b.build()
    qrt.verify_model(model)
    cut = model.cut((4,))
    assert not cut.symbols and all(not t.symbolic_dims for t in cut.tensors)
    assert cut.tensors[mask].shape == (4, 4) and np.array_equal(cut.tensors[mask].data, values[:4, :4])
    assert cut.tensors[mask].data.flags.c_contiguous and not cut.tensors[mask].data.flags.writeable
    assert cut.tensors[packed].shape == (6, 4)
    assert np.array_equal(unpack_int4(cut.tensors[packed].data, 24).reshape(6, 4), values[:, :4])
    assert cut.tensors[fixed] is model.tensors[fixed]  # not symbolic: shared
    assert cut.tensors[x].shape == (1, 4, 4) and model.tensors[x].shape_at((3,)) == (1, 3, 3)
    assert model.cut(model.max_sizes).tensors[mask].data is model.tensors[mask].data


def test_inspect_shows_the_symbolic_dimensions(tmp_path, capsys):
    path = tmp_path / "s.qmodel"
    qrt.write_model(signal(), path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sizes that vary from run to run: length 1 to 16" in out
    assert "[1, length<=16, 8]" in out and "[1, (length+1)//2<=8, 12]" in out
    assert main(["inspect", "--json", str(path)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["symbols"] == [{"name": "length", "min": 1, "max": 16}]
    assert s["inputs"][0]["shape"] == [1, 16, 8]
    assert s["inputs"][0]["symbols"] == [{"axis": 1, "name": "length", "min": 1, "max": 16}]
    assert s["outputs"][0]["symbols"] == [{"axis": 1, "name": "(length+1)//2", "min": 1, "max": 8}]


def test_mutated_files_with_symbols_load_or_raise_qrt_errors():
    seeds = [qrt.to_bytes(attention()), qrt.to_bytes(signal())]
    loaded = 0
    for seed in range(400):
        data = mutate(seeds[seed % 2], random.Random(seed))
        try:
            model = qrt.read_model(data)
        except qrt.QrtError:
            continue
        qrt.to_bytes(model)  # a model that verified must also write
        loaded += 1
    assert loaded  # some mutations leave a valid model
