"""Quantization schemes: what each node of the float graph becomes (SPEC.md section 3.2).

A Scheme says how one layer is quantized. The conversion has a default scheme (from
`qrt convert`'s flags or qrt.convert's keywords) and optional per-layer overrides, keyed by a
node's name, its op type or a regular expression ("re:<pattern>") over its name; the first
override that matches wins, in this order: exact name, op type, then the patterns in the order
given. Overrides come as a dict or a JSON file, the format the mixed-precision search writes:

    {"conv1": {"mode": "float"},
     "Softmax": {"mode": "float"},
     "re:^blocks\\.3\\.": {"mode": "weight-only", "weights": "int4", "group_size": 32}}

Modes: "static" (int8 activations with calibrated ranges, integer arithmetic: the default;
with activations "int16", 16-bit symmetric activations wherever the op has an int16 form;
weights int8, or int4 per channel for Conv (not depthwise) and Gemm/MatMul),
"dynamic" (Conv and Gemm/MatMul quantize their input per row at run time; int8 weights),
"weight-only" (int8 or int4 weights, per channel or per group; float32 activations and
arithmetic), "float" (a float32 island). Under "dynamic" and "weight-only" the nodes that are
not Conv / Gemm / MatMul with constant weights compute in float32, as in every runtime's
dynamic scheme.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass

from .errors import ConversionError

MODES = ("static", "dynamic", "weight-only", "float")
WEIGHTS = ("int8", "int4")
ACTIVATIONS = ("int8", "int16")
# What a node computes in: the qrt op form (qrt.ops.base): int8, int16, float32, weight-only, dynamic.
INT8, INT16, FLOAT32, WEIGHT_ONLY, DYNAMIC = "int8", "int16", "float32", "weight-only", "dynamic"
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")  # the ops with weight-only and dynamic forms


@dataclass(frozen=True)
class Scheme:
    mode: str = "static"
    weights: str = "int8"  # int8 | int4 (static: per channel; weight-only: also per group)
    group_size: int | None = None  # weights per group of this many along the reduction axis
    activations: str = "int8"  # int16: symmetric 16-bit activations where the op has the form
    symmetric_activations: bool = False  # int8 activation zero points 0 (static mode)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConversionError(f"unknown mode '{self.mode}'; choose one of {', '.join(MODES)}")
        if self.weights not in WEIGHTS:
            raise ConversionError(f"unknown weights '{self.weights}'; choose one of {', '.join(WEIGHTS)}")
        if self.activations not in ACTIVATIONS:
            raise ConversionError(f"unknown activations '{self.activations}'; choose one of {', '.join(ACTIVATIONS)}")
        if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size < 1):
            raise ConversionError(f"group_size must be a positive integer, got {self.group_size!r}")
        if self.mode == "dynamic" and self.weights == "int4":
            raise ConversionError("int4 weights need mode 'static' (per channel) or 'weight-only' (also per "
                                  "group); the dynamic mode has int8 weights")
        if self.mode in ("static", "dynamic") and self.group_size is not None:
            raise ConversionError(f"per-group weights need mode 'weight-only' (asked: mode '{self.mode}', group "
                                  f"size {self.group_size}); integer arithmetic takes one weight scale per "
                                  f"output channel")

    def describe(self) -> str:
        if self.mode == "float":
            return "float32"
        w = self.weights + (f" per group of {self.group_size}" if self.group_size else "")
        if self.mode == "static":
            sym = "symmetric" if self.symmetric_activations or self.activations == "int16" else "asymmetric"
            return f"static, {w} weights, {self.activations} {sym} activations"
        return f"{self.mode}, {w} weights"


# ops whose qrt forms are integer only (LSTM and GRU: integer gates and states, SPEC.md 2.13.26)
INTEGER_ONLY_OPS = {"LSTM", "GRU"}


def node_form(scheme: Scheme, op: str, has_constant_weights: bool, int16_capable: bool = False) -> str:
    """The qrt form a node with this scheme computes in (int16 activations where the op's qrt
    ops have an int16 form, int8 elsewhere)."""
    if scheme.mode == "static":
        return INT16 if scheme.activations == "int16" and int16_capable else INT8
    if op in INTEGER_ONLY_OPS:  # no float, dynamic or weight-only form: int8 (the lowering notes it)
        return INT8
    if scheme.mode in ("dynamic", "weight-only") and op in WEIGHTED_OPS and has_constant_weights:
        return DYNAMIC if scheme.mode == "dynamic" else WEIGHT_ONLY
    return FLOAT32


_FIELDS = {f.name for f in dataclasses.fields(Scheme)}


def load_overrides(overrides) -> dict:
    """A dict of key -> Scheme fields from a dict, or a path to a JSON file (YAML when PyYAML is
    installed)."""
    if overrides is None:
        return {}
    if isinstance(overrides, (str, os.PathLike)):
        path = os.fspath(overrides)
        try:
            text = open(path, encoding="utf-8").read()
        except OSError as e:
            raise ConversionError(f"cannot read the overrides file {path}: {e.strerror}") from None
        if path.endswith((".yaml", ".yml")):
            try:
                import yaml
            except ImportError:
                raise ConversionError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); "
                                      f"or write the overrides as JSON") from None
            overrides = yaml.safe_load(text)
        else:
            try:
                overrides = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConversionError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(overrides, dict):
        raise ConversionError("overrides must map a layer name, op type or 're:<pattern>' to scheme fields")
    out = {}
    for key, fields in overrides.items():
        if not isinstance(fields, dict):
            raise ConversionError(f"override '{key}': expected a mapping of scheme fields, got {fields!r}")
        unknown = set(fields) - _FIELDS
        if unknown:
            raise ConversionError(f"override '{key}': unknown field(s) {', '.join(sorted(unknown))}; "
                                  f"fields: {', '.join(sorted(_FIELDS))}")
        if str(key).startswith("re:"):
            try:
                re.compile(key[3:])
            except re.error as e:
                raise ConversionError(f"override '{key}': bad regular expression: {e}") from None
        out[str(key)] = dict(fields)
    return out


class SchemeTable:
    """The scheme of each node: the default, overridden per layer."""

    def __init__(self, default: Scheme, overrides=None, float_ops=()):
        self.default = default
        self.overrides = load_overrides(overrides)
        for key in float_ops or ():
            self.overrides.setdefault(str(key), {})["mode"] = "float"
        self.used: set = set()  # override keys that matched some node

    def scheme(self, name: str, op: str) -> Scheme:
        key = None
        if name in self.overrides:
            key = name
        elif op in self.overrides:
            key = op
        else:
            key = next((k for k in self.overrides if k.startswith("re:") and re.search(k[3:], name or "")), None)
        if key is None:
            return self.default
        self.used.add(key)
        fields = dict(self.overrides[key])
        mode = fields.get("mode", self.default.mode)
        if mode != "weight-only":  # groups are weight-only's; int4 weight-only's and static's
            fields.setdefault("group_size", None)
            if mode != "static":
                fields.setdefault("weights", "int8")
        return dataclasses.replace(self.default, **fields)

    def unused(self) -> list:
        return [k for k in self.overrides if k not in self.used]
