"""`qrt inspect`: what a .qmodel holds, as a table for people or JSON for machines."""
from __future__ import annotations

import dataclasses
import os

from .format import Activation, Layout, ModelDefinition
from .format.model import shape_text
from .format.reader import read_model


def _quant(t) -> str:
    q = t.quant
    if q is None:
        return ""
    if q.per_group:
        return f"per-group[{q.group_size}] x{q.scale.size} s {q.scale.min():.3g}..{q.scale.max():.3g}"
    if q.per_channel:
        return f"per-channel[{q.scale.size}] axis {q.axis} s {q.scale.min():.3g}..{q.scale.max():.3g}"
    return f"s {float(q.scale[0]):.4g} zp {int(q.zero_point[0])}"


def _user_shape(t, layout) -> list:
    s = list(t.shape)
    return [s[0], s[3], s[1], s[2]] if layout == Layout.NCHW else s


def _options(op) -> str:
    parts = []
    if op.options is not None:
        for k, v in dataclasses.asdict(op.options).items():
            default = getattr(type(op.options)(), k)
            if v != default:
                parts.append(f"{k}={list(v) if isinstance(v, tuple) else v}")
    if op.activation != Activation.NONE:
        act = Activation(op.activation).name.lower()
        parts.append(f"{act}[{op.clip_min:g},{op.clip_max:g}]" if op.activation == Activation.CLIP else act)
    return " ".join(parts)


def summary(model: ModelDefinition, path: str | None = None) -> dict:
    """Everything `qrt inspect` shows, as plain JSON-able data."""
    from .ops import op_form, op_macs
    from .runtime.arena import plan_arena

    def io(ios):
        out = []
        for g in ios:
            t = model.tensors[g.tensor]
            out.append({"name": g.name, "tensor": g.tensor, "dtype": t.dtype.name,
                        "shape": _user_shape(t, g.layout), "layout": Layout(g.layout).name,
                        "scale": None if t.quant is None else float(t.quant.scale[0]),
                        "zero_point": None if t.quant is None else int(t.quant.zero_point[0])})
            if t.symbolic_dims:  # the dimensions that vary from run to run; "shape" holds their max
                out[-1]["symbols"] = [{"axis": a, "name": n, "min": lo, "max": hi}
                                      for a, (n, lo, hi) in model.io_symbols(g).items()]
        return out

    ops = []
    for i, op in enumerate(model.operators):
        consts = [model.tensors[t] for t in op.inputs if model.tensors[t].data is not None]
        outs = [model.tensors[t] for t in op.outputs]
        weights = [model.tensors[t] for t in op.inputs[1:2] if model.tensors[t].data is not None]
        ops.append({
            "index": i, "name": op.name, "op": op.opcode.name, "version": op.version,
            "form": op_form(model, i).name,
            "weights": "" if not weights else weights[0].dtype.name.lower() + (
                f"/g{weights[0].quant.group_size}" if weights[0].quant is not None and weights[0].quant.per_group else ""),
            "inputs": [model.tensors[t].name for t in op.inputs],
            "input_shapes": [list(model.tensors[t].shape) for t in op.inputs if model.tensors[t].data is None],
            "output": outs[0].name, "output_shape": list(outs[0].shape), "output_dtype": outs[0].dtype.name,
            "output_quant": _quant(outs[0]), "options": _options(op),
            "weight_bytes": sum(t.data.nbytes for t in consts), "macs": op_macs(model, op),
        })
    arena = plan_arena(model)
    md = dataclasses.asdict(model.metadata)
    return {
        "file": path, "file_bytes": os.path.getsize(path) if path else None,
        "name": model.name, "format_version": model.format_version,
        "symbols": [{"name": s.name, "min": s.min, "max": s.max} for s in model.symbols],
        "min_runtime_version": model.min_runtime_version, "numerics_version": model.numerics_version,
        "inputs": io(model.inputs), "outputs": io(model.outputs), "operators": ops,
        "tensors": len(model.tensors),
        "constant_bytes": sum(t.data.nbytes for t in model.tensors if t.data is not None),
        "macs": sum(o["macs"] for o in ops),
        "float_ops": [f"{o['index']} {o['name'] or o['op']} ({o['op']}, {o['form']})" for o in ops
                      if o["form"] not in ("int8", "int16")],
        "arena_bytes": arena.size, "unshared_activation_bytes": arena.naive_size,
        "metadata": md,
    }


def _table(headers, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def render(s: dict) -> str:
    out = [f"{s['file'] or s['name'] or 'model'}: {s['file_bytes'] or '?'} bytes, "
           f"{len(s['operators'])} operators, {s['tensors']} tensors, {s['constant_bytes']} bytes of constants",
           f"format revision {s['format_version']}, needs qrt >= {s['min_runtime_version']}, "
           f"numerics rule {s['numerics_version']}" + (f", name '{s['name']}'" if s["name"] else ""),
           f"{s['macs']:,} MACs per batch; activation arena {s['arena_bytes']:,} bytes "
           f"({s['unshared_activation_bytes']:,} without sharing)",
           (f"float32 activations in {len(s['float_ops'])} operator(s): " + ", ".join(s["float_ops"]))
           if s["float_ops"] else "integer-only: every operator computes on integer activations"]
    if s["symbols"]:
        out.append("sizes that vary from run to run: " + ", ".join(
            f"{y['name']} {y['min']} to {y['max']}" for y in s["symbols"])
            + " (operator shapes below at every symbol's max)")
    out.append("")

    def shape(g):
        if "symbols" in g:
            return shape_text(g["shape"], {y["axis"]: (y["name"], y["min"], y["max"]) for y in g["symbols"]})
        return "x".join(map(str, g["shape"]))

    for kind in ("inputs", "outputs"):
        rows = [[g["name"], g["dtype"], shape(g), g["layout"],
                 "" if g["scale"] is None else f"{g['scale']:.6g}", "" if g["zero_point"] is None else g["zero_point"]]
                for g in s[kind]]
        out += [kind.capitalize(), _table(["name", "dtype", "shape", "layout", "scale", "zero_point"], rows), ""]
    rows = [[o["index"], o["name"], o["op"], o["form"], " ".join("x".join(map(str, sh)) for sh in o["input_shapes"]),
             "x".join(map(str, o["output_shape"])), o["output_dtype"], o["output_quant"],
             f"{o['weight_bytes']} {o['weights']}" if o["weight_bytes"] else "", f"{o['macs']:,}" if o["macs"] else "",
             o["options"]] for o in s["operators"]]
    out += ["Operators", _table(["#", "name", "op", "form", "in", "out", "dtype", "quantization", "weights", "MACs",
                                 "options"], rows), ""]
    md = s["metadata"]
    rows = [[k, v] for k, v in md.items() if k not in ("calibration", "properties") and v]
    if md["calibration"]:
        c = md["calibration"]
        rows.append(["calibration", f"{c['method']}, {c['num_samples']} samples"
                     + "".join(f", {k}={v}" for k, v in c["settings"].items())])
    rows += [[k, v] for k, v in md["properties"].items()]
    if rows:
        out += ["Metadata", _table(["key", "value"], rows)]
    return "\n".join(out).rstrip() + "\n"


def inspect_file(path: str) -> dict:
    return summary(read_model(path), path)
