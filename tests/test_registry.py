"""One home per op: every op code has its module qrt/ops/<name>.py holding its OpDef (rule,
prepare, reference), a compiled kernel under the name the OpDef gives, and a SPEC section; every
ONNX op the converter accepts has exactly one lowering rule."""
from __future__ import annotations

import importlib
import inspect

import pytest

from qrt.format import OpCode
from qrt.ops import OPS
from qrt.runtime.kernel_sets import COMPILED


@pytest.mark.parametrize("op", list(OpCode), ids=lambda op: op.name)
def test_every_op_lives_in_the_module_named_after_it(op):
    module = importlib.import_module(f"qrt.ops.{op.name.lower()}")
    d = getattr(module, op.name)
    assert OPS[op] is d and d.opcode == op
    assert d.kernel in COMPILED, f"{op.name}: no compiled kernel '{d.kernel}'"
    for part in (d.verify, d.prepare, d.reference):
        assert callable(part)
    # the reference of a sibling may live next door (SUB uses ADD's), but no further
    home = inspect.getmodule(d.reference).__name__
    assert home.startswith("qrt.ops."), home


def test_every_compiled_kernel_serves_an_op():
    assert set(COMPILED) == {d.kernel for d in OPS.values()}


def test_lowering_rules_come_from_one_registry():
    from qrt.converters import lower

    assert lower.RULES, "no lowering rules registered"
    for name, rule in lower.RULES.items():
        assert callable(rule.lower), name
        assert lower.quantizable(name)
    # what the converter reports as quantizable is exactly the rules plus the folded ops
    assert not lower.quantizable("NoSuchOp")
    assert not hasattr(lower.Lowering, "_supported_form")
