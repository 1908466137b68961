"""schema/SPEC.md must keep up with schema/qmodel.fbs and with the code.

- Every table, struct, enum and union of the schema has a section whose heading names it in
  backticks, and that section names each of its fields / values / members in backticks; every
  op code has its own heading.
- The op summary table (section 2.4) matches qrt.ops.OPS (arity, fused activation).
- The worked examples of section 4 are recomputed with qrt.numerics.
- Every "SPEC.md section N" reference in the code points at an existing heading.
"""
from __future__ import annotations

import ast
import math
import operator
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from qrt.errors import InvalidModelError
from qrt.format.model import OpCode
from qrt.ops import OPS as OP_RULES
from qrt.numerics import quantize_multiplier, requantize

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "schema" / "qmodel.fbs"
SPEC = ROOT / "schema" / "SPEC.md"


# ---------------------------------------------------------------------------- schema parser

def parse_schema(text: str) -> dict:
    """{(kind, name): [member names]} for every table, struct, enum and union."""
    text = re.sub(r"//[^\n]*", "", text)
    out = {}
    for kind, name, body in re.findall(r"\b(table|struct|enum|union)\s+(\w+)\s*(?::\s*\w+\s*)?\{(.*?)\}",
                                       text, re.S):
        if kind in ("table", "struct"):
            members = re.findall(r"^\s*(\w+)\s*:", body, re.M)
        else:
            members = [m.split("=")[0].strip() for m in body.split(",") if m.strip()]
            members = [m.split(":")[0].strip() for m in members]  # union member aliases (a: T)
        assert members, f"{kind} {name}: no members parsed"
        out[(kind, name)] = members
    return out


@pytest.fixture(scope="module")
def schema():
    parsed = parse_schema(SCHEMA.read_text())
    assert ("table", "Model") in parsed and ("enum", "OpCode") in parsed
    return parsed


@pytest.fixture(scope="module")
def spec():
    return SPEC.read_text()


def test_schema_parser_sees_everything(schema):
    # Guard the regex parser itself: it must agree with the reader's layout and the enums.
    from qrt.format import layout as L
    from qrt.format.model import Activation, DType, Layout

    assert schema[("table", "Model")] == [f[0] for f in L.MODEL.fields]
    assert schema[("table", "Operator")] == [f[0] for f in L.OPERATOR.fields]
    assert schema[("struct", "Buffer")] == [f[0] for f in L.BUFFER.fields]
    assert schema[("union", "OpOptions")] == [t.name for t in L.OP_OPTIONS.members]
    for enum in (DType, Layout, Activation, OpCode):
        assert schema[("enum", enum.__name__)] == [e.name for e in enum]


# ---------------------------------------------------------------------------- spec sections

HEADING = re.compile(r"^(#{1,6})\s+(.*)$", re.M)


def sections(text: str):
    """(level, heading, body) for every heading; body runs to the next heading of the same or a
    higher level, so it includes subsections."""
    heads = [(m.start(), m.end(), len(m.group(1)), m.group(2)) for m in HEADING.finditer(text)]
    out = []
    for i, (start, end, level, title) in enumerate(heads):
        stop = len(text)
        for s2, _, l2, _ in heads[i + 1:]:
            if l2 <= level:
                stop = s2
                break
        out.append((level, title, text[end:stop]))
    return out


def section_of(text: str, name: str):
    """The body of the deepest section whose heading names `name` in backticks."""
    found = [(level, body) for level, title, body in sections(text) if f"`{name}`" in title]
    if not found:
        return None
    return max(found, key=lambda f: f[0])[1]


def test_every_schema_element_is_documented(schema, spec):
    missing = []
    for (kind, name), members in schema.items():
        if name == "OpCode":
            continue  # checked below: one heading per op code
        body = section_of(spec, name)
        if body is None:
            missing.append(f"{kind} {name}: no heading names `{name}`")
            continue
        for m in members:
            if f"`{m}`" not in body:
                missing.append(f"{kind} {name}: `{m}` is not mentioned in its section")
    assert not missing, "SPEC.md is behind schema/qmodel.fbs:\n" + "\n".join(missing)


def test_every_op_code_has_a_subsection(schema, spec):
    titles = [title for _, title, _ in sections(spec)]
    missing = [op for op in schema[("enum", "OpCode")]
               if not any(f"`{op}`" in t for t in titles)]
    assert not missing, f"SPEC.md has no subsection for op codes {missing}"
    body = section_of(spec, "OpCode")
    assert body is not None
    assert all(f"`{op}`" in body for op in schema[("enum", "OpCode")])


def test_file_identifier_and_root(spec):
    text = SCHEMA.read_text()
    ident = re.search(r'file_identifier\s+"(\w+)"', text).group(1)
    root = re.search(r"root_type\s+(\w+)", text).group(1)
    assert f'"{ident}"' in spec and f"`{root}`" in spec


def test_numbered_sections_that_code_refers_to(spec):
    numbered = {}
    for _, title, _ in sections(spec):
        m = re.match(r"(\d+(?:\.\d+)*)\.?\s+(.*)", title)
        if m:
            numbered[m.group(1)] = m.group(2).lower()
    for number, word in {"1": "layout", "2": "schema", "3": "quantization", "4": "numerics",
                         "5": "verification", "6": "version", "4.1": "multiplier",
                         "4.2": "requantization", "4.3": "zero point", "4.4": "saturation",
                         "4.5": "accumulator"}.items():
        assert number in numbered and word in numbered[number], (number, word, numbered.get(number))
    refs = set()
    for path in list((ROOT / "qrt").rglob("*.py")) + list((ROOT / "qrt").rglob("*.pyx")) + [SCHEMA]:
        refs |= {(path.name, r) for r in re.findall(r"SPEC\.md,?\s+section\s+(\d+(?:\.\d+)*)", path.read_text())}
    assert refs, "expected the code to refer to SPEC.md sections"
    dangling = sorted(r for r in refs if r[1] not in numbered)
    assert not dangling, f"code refers to SPEC.md sections that do not exist: {dangling}"


# ---------------------------------------------------------------------------- markdown tables

def md_tables(text: str):
    """Every markdown table as (header cells, rows of cells), backticks stripped."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip().strip("`").replace("\\|", "|") for c in line.strip().strip("|").split("|")])
        elif block:
            rows = [r for r in block[1:] if not all(set(c) <= set("-: ") for c in r)]
            tables.append((block[0], rows))
            block = []
    return tables


def table_with(text: str, header: list):
    found = [rows for head, rows in md_tables(text) if head[:len(header)] == header]
    assert len(found) == 1, f"expected one table with header {header}, found {len(found)}"
    assert found[0], f"table {header} is empty"
    return found[0]


def section_body(text: str, number: str) -> str:
    for _, title, body in sections(text):
        if re.match(rf"{re.escape(number)}\.?\s", title):
            return body
    raise AssertionError(f"no section {number}")


def test_op_table_matches_verifier(spec):
    rows = table_with(section_body(spec, "2.4"), ["value", "op code", "inputs", "outputs"])
    seen = set()
    for value, name, inputs, outputs, _options, fused in rows:
        op = OpCode[name]
        assert int(value) == int(op), name
        rule = OP_RULES[op]
        if inputs.startswith(">="):
            assert rule.inputs[0] == int(inputs[2:]) and rule.inputs[1] > 1000, name
        elif " or " in inputs:  # an optional input (SOFTMAX's mask)
            lo, hi = inputs.split(" or ")
            assert rule.inputs == (int(lo), int(hi)), name
        else:
            assert rule.inputs == (int(inputs), int(inputs)), name
        assert rule.outputs == int(outputs), name
        assert rule.fused_activation == {"yes": True, "no": False}[fused], name
        seen.add(op)
    assert seen == set(OpCode)


# ---------------------------------------------------------------------------- section 4 examples

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.Pow: operator.pow}


def number(text: str) -> float:
    """A float from a cell such as `0.25`, `2^-40` or `1 - 2^-33` (arithmetic only)."""
    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(f"not arithmetic: {text!r}")
    if text.strip() in ("inf", "+inf"):
        return math.inf
    return float(ev(ast.parse(text.replace("^", "**"), mode="eval").body))


def test_multiplier_examples(spec):
    body = section_body(spec, "4.1")
    rows = table_with(body, ["s_in", "s_w", "s_out", "M", "m", "n"])
    for s_in, s_w, s_out, M, m, n in rows:
        f64 = [np.float64(np.float32(float(s))) for s in (s_in, s_w, s_out)]
        real = float((f64[0] * f64[1]) / f64[2])
        assert real == float(M), (s_in, s_w, s_out, real)
        assert quantize_multiplier(real) == (int(m), int(n)), (M, quantize_multiplier(real))
    rows = table_with(body, ["M", "m", "n"])
    assert len(rows) >= 4
    for M, m, n, *_ in rows:
        if m == "error":
            with pytest.raises(InvalidModelError):
                quantize_multiplier(number(M))
        else:
            assert quantize_multiplier(number(M)) == (int(m), int(n)), M


def test_requantize_examples(spec):
    rows = table_with(section_body(spec, "4.2"), ["acc", "m", "n", "zp", "lo", "hi", "acc*m/2^n", "y"])
    ties = 0
    for acc, m, n, zp, lo, hi, exact, y, *_ in rows:
        acc, m, n, zp, lo, hi = map(int, (acc, m, n, zp, lo, hi))
        real = Fraction(acc * m, 2**n)
        assert abs(real - Fraction(exact)) <= Fraction(1, 10**6), (acc, real, exact)
        got = requantize(np.array([acc], dtype=np.int32), m, n, zp, lo, hi)
        assert int(got[0]) == int(y), (acc, m, n, int(got[0]), y)
        if real.denominator == 2:
            ties += 1 + (real < 0)  # count negative ties twice: both kinds must be present
    assert ties >= 3, "the examples must include a positive and a negative tie"


def _clamp_bounds(activation: str, s: float, zp: int, cmin: float, cmax: float, dmin=-128, dmax=127):
    """Section 4.4, written independently of the spec's example table."""
    a, b = {"NONE": (-math.inf, math.inf), "RELU": (0.0, math.inf), "RELU6": (0.0, 6.0),
            "CLIP": (cmin, cmax)}[activation]
    s64 = np.float64(np.float32(s))

    def bound(v, default):
        if math.isinf(v):
            return default
        return min(max(zp + round(float(np.float64(np.float32(v)) / s64)), dmin), dmax)

    return bound(a, dmin), bound(b, dmax)


def test_activation_clamp_examples(spec):
    rows = table_with(section_body(spec, "4.4"), ["activation", "s_out", "zp_out", "clip_min", "clip_max", "lo", "hi"])
    for act, s, zp, cmin, cmax, lo, hi in rows:
        assert _clamp_bounds(act, float(s), int(zp), number(cmin), number(cmax)) == (int(lo), int(hi)), act


def test_accumulator_bound_example(spec):
    # "K may reach 66311 with a zero bias" (section 4.5) follows from the verifier's constants.
    from qrt.numerics import INT32_MAX, MAX_INPUT_MAGNITUDE, MAX_WEIGHT_MAGNITUDE

    k = INT32_MAX // (MAX_INPUT_MAGNITUDE * MAX_WEIGHT_MAGNITUDE)
    assert f"K may reach {k}" in section_body(spec, "4.5")
