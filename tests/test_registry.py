"""One home per op: every op code has its module qrt/ops/<name>.py holding its OpDef (rule,
prepare, reference) and its forms, a compiled kernel for every form but the float32 NumPy ones
under the name the form gives, and a SPEC section; every ONNX op the converter accepts has
exactly one lowering rule."""
from __future__ import annotations

import importlib
import inspect

import pytest

from qrt.format import OpCode
from qrt.ops import OPS
from qrt.ops.base import FLOAT32
from qrt.runtime.kernel_sets import COMPILED


@pytest.mark.parametrize("op", list(OpCode), ids=lambda op: op.name)
def test_every_op_lives_in_the_module_named_after_it(op):
    module = importlib.import_module(f"qrt.ops.{op.name.lower()}")
    d = getattr(module, op.name)
    assert OPS[op] is d and d.opcode == op
    forms = d.all_forms()
    assert forms and len({f.name for f in forms}) == len(forms), f"{op.name}: forms {[f.name for f in forms]}"
    for f in forms:
        # only float32 forms may run their NumPy reference as the kernel
        assert f.kernel in COMPILED or (f.kernel is None and f.name == FLOAT32), \
            f"{op.name} {f.name}: no compiled kernel '{f.kernel}'"
        for part in (f.verify, f.prepare, f.reference):
            assert callable(part)
        # the reference of a sibling may live next door (SUB uses ADD's), but no further
        home = inspect.getmodule(f.reference).__name__
        assert home.startswith("qrt.ops."), home


def test_every_compiled_kernel_serves_an_op():
    assert set(COMPILED) == {f.kernel for d in OPS.values() for f in d.all_forms() if f.kernel is not None}


def test_lowering_rules_come_from_one_registry():
    from qrt.converters import lower

    assert lower.RULES, "no lowering rules registered"
    for name, rule in lower.RULES.items():
        assert callable(rule.lower), name
        assert lower.quantizable(name)
    # what the converter reports as quantizable is exactly the rules plus the folded ops
    assert not lower.quantizable("NoSuchOp")
    assert not hasattr(lower.Lowering, "_supported_form")
