"""The conversion pipeline: source model -> float IR -> passes -> calibration -> lowering ->
.qmodel, then an honest report comparing the int8 model with the float one on held-back
samples.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import qrt
from qrt.format import Calibration, Metadata

from . import calibration as C
from . import data as D
from .errors import ConversionError
from .float_exec import run_graph
from .ir import Graph
from .lower import LoweringOptions, check_quantizable, lower, node_forms, output_joins, quantizable
from .passes import simplify
from .schemes import INT8, INT16, Scheme, SchemeTable
from .symbolic import make_symbolic


@dataclass
class OutputAgreement:
    name: str
    sqnr_db: float  # 10 log10(signal power / error power), float vs int8
    cosine: float
    top1_agreement: float | None  # classifiers (2-D outputs with several classes)


@dataclass
class Report:
    source: str
    output: str
    method: str
    per_channel: bool
    bias_correction: bool
    calibration_samples: int
    holdout_samples: int
    source_ops: dict  # op type -> count in the simplified float graph
    qrt_ops: dict  # qrt op -> count
    float_bytes: int  # float32 parameters of the source (what a float file holds)
    int8_bytes: int  # the .qmodel file
    agreement: list = field(default_factory=list)
    methods_chosen: dict = field(default_factory=dict)  # auto: method -> number of tensors
    seconds: float = 0.0
    peak_rss_mb: float = 0.0  # the whole process, PyTorch included when it was used
    calibration_peak_mb: float = 0.0  # memory the calibration passes allocated at most
    float_accuracy: float | None = None
    int8_accuracy: float | None = None  # the converted model's (whatever its scheme)
    scheme: str = "static, int8 weights, int8 asymmetric activations"
    forms: dict = field(default_factory=dict)  # form (int8, float32, weight-only, dynamic) -> qrt ops
    float_ops: list = field(default_factory=list)  # "name (qrt op, form)" of every op with float32 activations
    int16_ops: list = field(default_factory=list)  # "name (qrt op)" of every op with int16 activations
    notes: list = field(default_factory=list)  # where a layer's scheme could not be followed, and why

    def __str__(self) -> str:
        lines = [f"converted {self.source} -> {self.output}",
                 "  ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.source_ops.items())),
                 "  qrt ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.qrt_ops.items())),
                 f"  scheme: {self.scheme}; forms: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.forms.items())),
                 f"  calibration: {self.method}" + (f" ({', '.join(f'{k} {v}' for k, v in sorted(self.methods_chosen.items()))})" if self.methods_chosen else "")
                 + f", {'per-channel' if self.per_channel else 'per-tensor'} weights"
                 + (", bias correction" if self.bias_correction else "")
                 + f", {self.calibration_samples} samples ({self.holdout_samples} held back for this report)",
                 f"  size: {self.float_bytes / 1e6:.2f} MB float32 -> {self.int8_bytes / 1e6:.2f} MB .qmodel "
                 f"({self.float_bytes / max(self.int8_bytes, 1):.1f}x smaller)"]
        for label, ops in (("float32 ops", self.float_ops),
                           ("int16 ops", self.int16_ops if self.forms.get(INT8) else [])):  # int16 among int8
            if ops:
                shown = ", ".join(ops[:12]) + (f", ... ({len(ops)} in all)" if len(ops) > 12 else "")
                lines.append(f"  {label}: {shown}")
        lines += [f"  note: {note}" for note in self.notes]
        for a in self.agreement:
            top = f", top-1 agreement {100 * a.top1_agreement:.1f} %" if a.top1_agreement is not None else ""
            lines.append(f"  output '{a.name}': SQNR {a.sqnr_db:.1f} dB, cosine {a.cosine:.4f}{top}")
        if self.float_accuracy is not None:
            lines.append(f"  accuracy: float {100 * self.float_accuracy:.2f} %, qrt {100 * self.int8_accuracy:.2f} %")
        lines.append(f"  took {self.seconds:.1f} s; calibration peaked at {self.calibration_peak_mb:.0f} MB "
                     f"(process peak {self.peak_rss_mb:.0f} MB)")
        return "\n".join(lines)


def _onnx_file_bytes(path: Path) -> bytes:
    """The .onnx file followed by the external-data files it names (torch.onnx's dynamo export
    writes weights to <name>.onnx.data): the bytes that make up the float model."""
    return b"".join(f.read_bytes() for f in _source_files(path))


def _source_files(model) -> list:
    """The files a path source consists of: the model and, for ONNX, its external data."""
    if not isinstance(model, (str, os.PathLike)):
        return []
    path = Path(model)
    files = [path]
    if path.suffix != ".pt2":
        try:
            import onnx
            from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

            proto = onnx.load(str(path), load_external_data=False)
            files += [path.parent / n for n in sorted({ExternalDataInfo(t).location for t in _get_all_tensors(proto)
                                                       if uses_external_data(t)})]
        except Exception:  # not readable as ONNX: the reader reports it
            pass
    return [f for f in files if f.is_file()]


def _check_output_path(out_path: str, model) -> str:
    """Refuse an output that would overwrite the source (or its weights) or cannot be written."""
    if os.path.isdir(out_path):
        raise ConversionError(f"the output {out_path} is a folder: give a file path such as {out_path}/model.qmodel")
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise ConversionError(f"the output's folder {folder} does not exist")
    if os.path.exists(out_path):
        for k, f in enumerate(_source_files(model)):
            if os.path.samefile(f, out_path):
                what = "the input model" if k == 0 else f"the source model's external data ({f})"
                raise ConversionError(f"the output {out_path} is {what}: choose another path")
    return out_path


def load_source(model, example_inputs=None, trust_source: bool = False, freeze: dict | None = None,
                max_shape: dict | None = None) -> tuple[Graph, str, bytes | None]:
    """(float IR, a name for it, the source file's bytes when it is a file); max_shape: input
    shapes (the maximum of dynamic dimensions)."""
    from .onnx_reader import read_onnx as read

    def read_onnx(src, also_supported):
        return read(src, also_supported=also_supported, freeze=freeze, input_shapes=max_shape)

    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ConversionError(f"{path}: no such file")
        if path.suffix == ".pt2":
            from .torch_frontend import exported_program_to_onnx, load_exported_program
            program = load_exported_program(path, trusted=trust_source)
            return read_onnx(exported_program_to_onnx(program), also_supported=quantizable), str(path), path.read_bytes()
        return read_onnx(str(path), also_supported=quantizable), str(path), _onnx_file_bytes(path)
    try:
        import onnx
        if isinstance(model, onnx.ModelProto):
            return read_onnx(model, also_supported=quantizable), model.graph.name or "onnx model", model.SerializeToString()
    except ImportError:
        pass
    from .torch_frontend import module_to_onnx
    proto = module_to_onnx(model, example_inputs)
    return read_onnx(proto, also_supported=quantizable), type(model).__name__, None


def _stats_pass(graph: Graph, samples, stats: dict, means: dict | None, histogram: bool, progress,
                grams: dict | None = None, unquantized: frozenset = frozenset(), graph_for=None):
    """One pass over the calibration samples; graph_for(feeds) gives the graph at a sample's own
    shapes (dynamic dimensions below their maximum), else every sample runs `graph`."""
    wanted_means = means is not None
    conv_inputs = {n.inputs[0] for n in graph.nodes if n.op == "Conv"}  # per channel: axis 1
    layers = {}  # layer input -> its layers' nodes, for grams (weight name -> summed input Gram matrix)
    for n in _layers(graph) if grams is not None else ():
        layers.setdefault(n.inputs[0], []).append(n)
    for feeds in progress(samples, desc="calibrating (histograms)" if histogram else "calibrating (ranges)"):
        def observe(name, value):
            if name in unquantized or not np.issubdtype(np.asarray(value).dtype, np.floating):
                return
            st = stats.get(name)
            if st is None:
                st = stats[name] = C.TensorStats()
            (st.update_histogram if histogram else st.update_range)(value)
            if wanted_means and name in means and value.ndim >= 2:
                axes = (0,) + tuple(range(2, value.ndim)) if name in conv_inputs else tuple(range(value.ndim - 1))
                m = value.astype(np.float64).mean(axis=axes)
                acc = means[name]
                acc[0] = m if acc[0] is None else acc[0] + m
                acc[1] += 1
            for n in layers.get(name, ()):
                h = C.input_gram(value, n.op, n.attrs, np.shape(graph.constants[n.inputs[1]])[2:])
                if h is not None:
                    grams[n.inputs[1]] = h + grams.get(n.inputs[1], 0.0)
        run_graph(graph_for(feeds) if graph_for else graph, feeds, observe=observe)


def _layers(graph: Graph) -> list:
    return [n for n in graph.nodes if n.op in ("Conv", "Gemm", "MatMul") and len(n.inputs) > 1
            and n.inputs[1] in graph.constants]


def _layer_inputs(graph: Graph) -> set:
    return {n.inputs[0] for n in _layers(graph)}


def _joined(arrays: list) -> np.ndarray:
    """The samples' outputs stacked; of several lengths, one row of all their values (which
    has no top-1 to compare: _agreement leaves it out)."""
    if all(np.ndim(a) == 0 for a in arrays):  # scalars: one row of them
        return np.asarray(arrays, np.float64)[None]
    if len({a.shape[1:] for a in arrays}) == 1:
        return np.concatenate(arrays)
    return np.concatenate([a.reshape(-1) for a in arrays])[None]


def _agreement(name: str, ref: np.ndarray, got: np.ndarray, joined: bool = False) -> OutputAgreement:
    """Top-1 only for [samples, classes] outputs: of a map or a state it would mean nothing."""
    joined = joined or ref.ndim != 2
    ref = ref.astype(np.float64).reshape(ref.shape[0], -1)
    got = got.astype(np.float64).reshape(got.shape[0], -1)
    err = np.sum((ref - got) ** 2)
    sqnr = 10 * np.log10(max(np.sum(ref**2), 1e-30) / max(err, 1e-30))
    cos = float(np.sum(ref * got) / max(np.linalg.norm(ref) * np.linalg.norm(got), 1e-30))
    top1 = float(np.mean(ref.argmax(1) == got.argmax(1))) if ref.shape[1] > 1 and not joined else None
    return OutputAgreement(name, float(sqnr), cos, top1)


def _plan(graph: Graph, table: SchemeTable, integer_only: bool) -> dict:
    """node id -> form; refuses float forms under integer_only."""
    forms = node_forms(graph, table)
    if integer_only:
        joins = output_joins(graph)  # the output's own conversion step, not a float computation
        floats = [f"{n.name or n.op} ({n.op})" for n in graph.nodes
                  if forms[id(n)] not in (INT8, INT16) and id(n) not in joins]
        if floats:
            raise ConversionError(f"integer_only: {len(floats)} node(s) would compute in float32 by the schemes "
                                  f"asked for: {', '.join(floats[:10])}{' ...' if len(floats) > 10 else ''}; drop "
                                  f"--integer-only or the float/dynamic/weight-only schemes")
    return forms


def convert(model, calibration, out_path, *, method: str = "auto", per_channel: bool = True,
            bias_correction: bool | None = None, example_inputs=None, limit: int = 100, holdout: float = 0.2,
            preprocess=None, labels=None, show_progress: bool | None = None, metadata: dict | None = None,
            trust_source: bool = False, mode: str = "static", weights: str = "int8", group_size: int | None = None,
            activations: str = "int8", symmetric_activations: bool = False, float_ops=None, overrides=None,
            integer_only: bool = False, freeze: dict | None = None, weight_rounding: str = "nearest",
            max_shape: dict | None = None) -> Report:
    """Quantize a float model after training and write it as .qmodel. Returns a Report.

    model: an .onnx or .pt2 path, an onnx.ModelProto, or a torch.nn.Module (with example_inputs).
    calibration: an iterable of arrays (or of dicts by input name), a .npy/.npz path, or a folder
    of images (with preprocess=qrt.converters.data.ImagePreprocess(...)); `limit` samples are used.
    labels: optional class indices of the held-back samples, to report accuracy.
    trust_source: allow loading a .pt2 file, which unpickles (only for files you made).
    bias_correction: fold the expected error of the quantized weights into the biases; None
    (default): only where weights are int4, whose rounding error is large (on the MNIST CNN at
    int4, group 128, it is the difference between -1.1 and -0.5 points).
    weight_rounding: "nearest" (default) or "gptq": the integer layers' weights rounded by GPTQ
    on the calibration inputs (calibration.gptq_weights), minimising each layer's output error.
    The scheme (converters/schemes.py): mode "static" | "dynamic" | "weight-only" | "float";
    weights "int8" | "int4" (static: per channel; weight-only: also per group_size); activations
    "int8" | "int16";
    symmetric_activations (zero points 0); float_ops: node names or op types kept in float32;
    overrides: per-layer schemes, a dict or a JSON file; integer_only: refuse any float32 op.
    freeze: {input name: value}: those inputs become constants (control flow and shapes that
    depend on them fold away). Opsets older than 13 are upgraded (the report notes it).
    max_shape: {input name: shape}: the maximum of an input's dynamic dimensions (a sequence
    length) and the size of its batch; the file then runs any size up to the maximum
    (converters/symbolic.py). Calibration feeds have the maximum shape.
    """
    if weight_rounding not in ("nearest", "gptq"):
        raise ConversionError(f"unknown weight_rounding '{weight_rounding}'; choose nearest or gptq")
    if method not in C.METHODS:
        raise ConversionError(f"unknown calibration method '{method}'; choose one of {', '.join(C.METHODS)}")
    default = Scheme(mode=mode, weights=weights, group_size=group_size, activations=activations,
                     symmetric_activations=symmetric_activations)
    start = time.perf_counter()
    out_path = _check_output_path(os.fspath(out_path), model)
    graph, source_name, source_bytes = load_source(model, example_inputs, trust_source, freeze, max_shape)
    graph = simplify(graph)
    table = SchemeTable(default, overrides, float_ops)
    forms = _plan(graph, table, integer_only)
    int4_only = bias_correction is None  # by default only int4 weights are corrected
    if bias_correction is None:
        bias_correction = default.weights == "int4" or any(o.get("weights") == "int4" for o in table.overrides.values())
    unquantized = check_quantizable(graph)  # before calibration is spent on a model that cannot be lowered
    progress = (lambda it, desc: D.progress(it, total=None, desc=desc, force=show_progress))

    # dynamic dimensions are free in the calibration feeds, up to their maximum: each length
    # runs the graph simplified at its shapes (ranges then cover short and long inputs alike)
    shapes = {n: tuple(None if a in graph.symbols.get(n, {}) else d for a, d in enumerate(graph.shapes[n]))
              for n in graph.inputs}
    samples = list(D.iter_calibration(calibration, graph.inputs, shapes, limit=limit, preprocess=preprocess,
                                      dtypes=graph.dtypes))
    top = tuple(graph.shapes[n] for n in graph.inputs)
    graphs = {top: graph}  # and the last other length's (samples are sorted by shape: each is built once a pass)

    def shape_key(feeds):
        return tuple(tuple(np.shape(feeds[n])) for n in graph.inputs)

    def graph_for(feeds):
        key = shape_key(feeds)
        if key not in graphs:
            for n, shape in zip(graph.inputs, key):
                if any(d > m for d, m in zip(shape, graph.shapes[n])):
                    raise ConversionError(f"calibration feed for input '{n}' has shape {shape}, beyond the "
                                          f"maximum {graph.shapes[n]}")
            for old in [k for k in graphs if k != top]:
                del graphs[old]
            graphs[key] = simplify(load_source(model, example_inputs, trust_source, freeze,
                                               dict(zip(graph.inputs, key)))[0])
        return graphs[key]

    calib, held = D.split_holdout(samples, holdout)
    calib.sort(key=shape_key)  # one length after another (a stable sort: the order within one stays)
    if not calib:
        raise ConversionError("no calibration samples left after holding some back; pass more data")

    stats: dict = {}
    means = {name: [None, 0] for name in _layer_inputs(graph)} if bias_correction else None
    tracing = tracemalloc.is_tracing()  # the caller's own tracing is left running
    if tracing:
        tracemalloc.reset_peak()
    else:
        tracemalloc.start()
    try:
        integer = any(f in (INT8, INT16) for f in forms.values())  # ranges: for integer values only
        grams = {} if integer and weight_rounding == "gptq" else None  # GPTQ rounding (lower.py)
        if integer or means is not None:
            _stats_pass(graph, calib, stats, means, histogram=False, progress=progress, grams=grams,
                        unquantized=unquantized, graph_for=graph_for)
            for st in stats.values():
                st.finish_ranges()
        if integer:
            _stats_pass(graph, calib, stats, None, histogram=True, progress=progress, unquantized=unquantized,
                        graph_for=graph_for)
        else:
            stats.clear()
        calibration_peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not tracing:
            tracemalloc.stop()

    producers = graph.producers()
    qparams, chosen = {}, {}
    qparams16 = {name: C.int16_qparams(st.min, st.max) for name, st in stats.items()}
    for name, st in stats.items():
        lo, hi, used = C.choose_range(st, method)
        p = producers.get(name)
        symmetric = (table.scheme(p.name, p.op) if p is not None else default).symmetric_activations
        qparams[name] = C.symmetric_qparams(lo, hi) if symmetric else C.qparams(lo, hi)
        chosen[used] = chosen.get(used, 0) + 1
    qparams.update(graph.fixed_qparams)
    input_means = {k: v[0] / v[1] for k, v in (means or {}).items() if v[1]}

    md = Metadata(producer="qrt convert", producer_version=qrt.__version__, source_file=os.path.basename(source_name),
                  source_sha256=hashlib.sha256(source_bytes).hexdigest() if source_bytes else "",
                  calibration=Calibration(method, len(calib), {"per_channel": str(per_channel).lower(),
                                                              "bias_correction": ("int4 weights" if int4_only and bias_correction
                                                                                  else str(bias_correction).lower())}),
                  properties=dict(metadata or {}))
    float_bytes = len(source_bytes) if source_bytes else graph.parameter_bytes()
    md.calibration.settings["scheme"] = default.describe()
    md.calibration.settings["weight_rounding"] = weight_rounding
    if table.overrides:
        md.calibration.settings["overrides"] = json.dumps(table.overrides, sort_keys=True)
    options = LoweringOptions(per_channel=per_channel, input_means=input_means, schemes=table,
                              correct_int4_only=int4_only, weight_grams=grams or {},
                              ranges={name: (st.min, st.max) for name, st in stats.items()})
    qmodel, lowered, notes = lower(graph, qparams, options, md, qparams16)
    if graph.symbols:  # one file for every size up to the maximum
        def lowered_at(shapes):
            g = simplify(load_source(model, example_inputs, trust_source, freeze, shapes)[0])
            return lower(g, qparams, options, md, qparams16)[0]
        qmodel, more = make_symbolic(qmodel, graph, lowered_at,
                                     lambda it, desc: D.progress(it, total=len(it), desc=desc, force=show_progress))
        notes = notes + more
    size = qrt.write_model(qmodel, out_path)

    report = Report(source=source_name, output=out_path, method=method, per_channel=per_channel,
                    bias_correction=bias_correction, calibration_samples=len(calib), holdout_samples=len(held),
                    source_ops=graph.op_counts(), qrt_ops={}, float_bytes=float_bytes, int8_bytes=size,
                    methods_chosen=chosen if method == "auto" else {}, scheme=default.describe(),
                    notes=graph.notes + notes)
    for _, code, form, name in lowered:
        report.qrt_ops[code] = report.qrt_ops.get(code, 0) + 1
        report.forms[form] = report.forms.get(form, 0) + 1
        if form not in (INT8, INT16):
            report.float_ops.append(f"{name or code} ({code}, {form})")
        elif form == INT16:
            report.int16_ops.append(f"{name or code} ({code})")
    evaluate(report, graph, out_path, held or calib[-1:], labels, graph_for)
    report.seconds = time.perf_counter() - start
    report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report.calibration_peak_mb = calibration_peak / 2**20
    return report


def evaluate(report: Report, graph: Graph, qmodel_path: str, samples, labels=None, graph_for=None):
    """Fill the report's agreement (and accuracy) from float and int8 runs on `samples`
    (graph_for(feeds): the graph at a sample's shapes, when they vary)."""
    m = qrt.load(qmodel_path)
    ref = {n: [] for n in graph.outputs}
    got = {n: [] for n in graph.outputs}
    for feeds in samples:
        f = run_graph(graph_for(feeds) if graph_for else graph, feeds)
        q = m.run(feeds)
        q = q if isinstance(q, dict) else {graph.outputs[0]: q}
        for n in graph.outputs:
            ref[n].append(np.asarray(f[n]))
            got[n].append(np.asarray(q[n]))
    report.agreement = [_agreement(n, _joined(ref[n]), _joined(got[n]),
                                   len({a.shape for a in ref[n]}) > 1 or ref[n][0].ndim == 0)
                        for n in graph.outputs]
    first = graph.outputs[0]
    if labels is not None and len({a.shape for a in ref[first]}) == 1:
        labels = np.asarray(labels).reshape(-1)
        fr, qr = _joined(ref[first]), _joined(got[first])
        n = min(len(labels), len(fr))
        report.float_accuracy = float(np.mean(fr[:n].reshape(n, -1).argmax(1) == labels[:n]))
        report.int8_accuracy = float(np.mean(qr[:n].reshape(n, -1).argmax(1) == labels[:n]))
