"""qrt.load and the runnable model: load -> verify -> prepare -> plan -> run.

A loaded model holds the verified file (weights stay in the memory map), each operator's
prepared integer parameters and packed weights, and an arena plan. Each thread that runs the
model gets its own arena and compiled plan (qrt/kernels/plan.pyx: every op bound to its
buffers, run by a C loop) on first use, so one model may be run from several threads at once;
a run allocates nothing but its outputs.

Runs at other shapes - several file batches per feed, symbol sizes below their max (SPEC.md
section 2.15) - run the model at those shapes (batching.py: a verified copy, prepared once and
shared by the threads), each thread binding its plan once; both are kept for the latest
MAX_PLANS shapes. A thread's plans of one file batch, at any symbol sizes, share one arena
buffer of the file's arena size (no tensor is larger than at the symbols' max); its plans of
several file batches share another, grown when a shape needs more.

A model pickles by reference to what it was loaded from (Model.__reduce__): the file's path
with its size and SHA-256, or the bytes, with the load options as the caller gave them; the
receiving process loads it again, so it picks its own CPU's best path unless an isa was forced.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, QrtError
from ..format.model import NUMPY_DTYPE, DType, Layout, OpCode, shape_text, user_axis
from ..format.reader import read_model, release_pages
from .arena import plan_arena
from .batching import MAX_BATCH_ARENA, at, batchable
from ..kernels import isa as _isa
from ..kernels.plan import Plan
from ..ops import Form, op_form, op_macs, prepare_op
from ..ops.dequantize import dequantize_params
from ..ops.quantize import quantize_params
from .kernel_sets import DEFAULT_KERNELS, KERNEL_SETS


# Shapes (file batches per run, symbol sizes) whose prepared model, and whose plan per thread,
# a model keeps besides the file's own: the latest used.
MAX_PLANS = 8


@dataclass(frozen=True)
class IOInfo:
    """A graph input or output as the user sees it."""
    name: str
    shape: tuple  # in `layout`, symbolic dimensions at their max; shape[0] is the file's batch
    dtype: str  # numpy name of the stored tensor's dtype
    layout: str  # "NCHW" or "AS_STORED"
    scale: float | None
    zero_point: int | None
    # the dimensions that vary from run to run (SPEC.md section 2.15): axis (in `layout`) ->
    # (name, min, max); an output's name is its expression in the symbols, e.g. "(length+1)//2"
    symbols: dict = field(default_factory=dict, hash=False)

    @property
    def shape_text(self) -> str:
        """The shape for people: "[1, sequence<=128, 256]"."""
        return shape_text(self.shape, self.symbols)


@dataclass
class _PreparedOp:
    opcode: OpCode
    form: Form  # which of the op's forms (integer, float32, weight-only, dynamic) it runs
    inputs: tuple
    outputs: tuple  # most ops write one tensor; LSTM and GRU also their final states
    params: object


@dataclass(eq=False, repr=False)
class _Batched:
    """The model at one shape: k file batches per run and symbol sizes (batching.at): its
    definition, prepared operators, arena plan, constants (cut to the sizes) and packed
    weights (the file's, unless an operator's constants were cut); k = 1 at the symbols' max
    is the file itself."""
    definition: object
    ops: list
    arena: object
    constants: dict
    packed: list


@dataclass(eq=False, repr=False)
class _Bound:
    """One thread's arena and plan for one _Batched: a view per run-time tensor, the float32
    staging arrays and conversions of the graph boundary, and the compiled plan."""
    views: dict
    conversions: dict
    plan: object
    fast: tuple | None  # run()'s short path (the file's shape): the boundary's quantize and dequantize steps
    definition: object = None  # the model at this plan's shapes


def _out(views: dict, outputs: tuple):
    """What a step writes: its output's view, or a list of views for an op of several outputs."""
    return views[outputs[0]] if len(outputs) == 1 else [views[t] for t in outputs]


def _user_shape(shape: tuple, layout: Layout) -> tuple:
    return (shape[0], shape[3], shape[1], shape[2]) if layout == Layout.NCHW else shape


def _evict(cache: OrderedDict, keep):
    """Drop the least recently used entries of `cache` beyond MAX_PLANS, all but `keep`'s."""
    while len(cache) - (keep in cache) > MAX_PLANS:
        cache.pop(next(key for key in cache if key != keep))


class Model:
    """A verified, prepared .qmodel ready to run. Create it with qrt.load()."""

    def __init__(self, source, kernels: str | None = None, threads: int | None = None,
                 isa: str | None = None):
        self.definition = read_model(source)
        m = self.definition
        # What to pickle (see __reduce__): the options as given, so that another machine
        # resolves its own defaults, and where the file came from.
        self._options = (kernels, threads, isa)
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._source, self._path = source, None
        else:
            self._source = None
            self._path = os.path.abspath(os.fspath(source))
            self._identity = _file_identity(os.stat(self._path))
            self._digest = None  # the file's SHA-256, taken when the model is first pickled
        name = kernels or os.environ.get("QRT_KERNELS") or DEFAULT_KERNELS
        if name not in KERNEL_SETS:
            raise InputError(f"unknown kernel set '{name}'; choose one of {sorted(KERNEL_SETS)}")
        self.kernels = KERNEL_SETS[name]
        try:
            self.isa = _isa.NAMES[_isa.resolve(isa)]
        except ValueError as e:
            raise InputError(str(e)) from None
        self.threads = _threads(threads)
        self._ops = [_PreparedOp(op.opcode, op_form(m, i), op.inputs, op.outputs, prepare_op(m, i))
                     for i, op in enumerate(m.operators)]
        self._arena = plan_arena(m)
        self._batchable = None  # whether a plan for k file batches can exist (batching.py), once known
        self._batch_lock = threading.Lock()
        self._local = threading.local()
        self._constants = {i: t.data for i, t in enumerate(m.tensors) if t.data is not None}
        # Weights are read from the file's pages once, to be packed: each op's are handed back
        # to the OS once packed, so that the file and its packed copy are never both resident.
        self._packed = []
        for s in self._ops:
            ins = [self._constants.get(t) for t in s.inputs]
            self._packed.append(self.kernels.pack(s.form, ins, s.params, self.isa))
            release_pages(ins)
        # The model at each shape a run has needed, by (k file batches, symbol sizes), made on
        # first use; the file's shape, (1, every symbol at its max), always.
        self._sizes = m.max_sizes
        self._file_key = (1, self._sizes)
        self._batched = OrderedDict({self._file_key: _Batched(m, self._ops, self._arena, self._constants,
                                                              self._packed)})
        # where a run reads each symbol's size: (input index, user axis) of its plain dimensions
        self._symbol_axes = [[] for _ in m.symbols]
        for j, g in enumerate(m.inputs):
            for sd in m.tensors[g.tensor].symbolic_dims:
                self._symbol_axes[sd.symbol].append((j, user_axis(sd.axis, g.layout)))
        # Graph-boundary conversions of quantized inputs and outputs.
        self._boundary = {g.tensor: (quantize_params(m.tensors[g.tensor]), dequantize_params(m.tensors[g.tensor]))
                          for g in m.inputs + m.outputs if m.tensors[g.tensor].quant is not None}
        self.inputs = [self._io(g) for g in m.inputs]
        self.outputs = [self._io(g) for g in m.outputs]
        self.macs = sum(op_macs(m, op) for op in m.operators)
        self._views()  # this thread's arena and plan, now rather than on the first run

    def _io(self, g) -> IOInfo:
        t = self.definition.tensors[g.tensor]
        q = t.quant
        return IOInfo(g.name, _user_shape(t.shape, g.layout), NUMPY_DTYPE[t.dtype].name,
                      Layout(g.layout).name, None if q is None else float(q.scale[0]),
                      None if q is None else int(q.zero_point[0]), self.definition.io_symbols(g))

    @property
    def arena_bytes(self) -> int:
        """Bytes of the arena one thread uses for all intermediate tensors."""
        return self._arena.size

    @property
    def naive_arena_bytes(self) -> int:
        """Bytes all run-time tensors would take without sharing (for comparison)."""
        return self._arena.naive_size

    # ------------------------------------------------------------------ pickling

    def __reduce__(self):
        """Pickle by reference: the path (with the file's size and SHA-256) or the bytes the
        model was loaded from, and the load options as given. Unpickling loads the model again
        (verify, prepare); a path-loaded model fails there with a QrtError naming the path if
        the file has gone or its contents changed. Pickling a path-loaded model whose file
        changed since it was loaded fails too: the file would no longer give this model."""
        if self._path is None:
            data = self._source if type(self._source) is bytes else memoryview(self._source).tobytes()
            return _unpickle, (("bytes", data), self._options)
        path = self._path
        try:
            if self._digest is None:
                st, digest = _hash_file(path)
            else:
                st, digest = os.stat(path), self._digest
        except OSError as e:
            raise QrtError(f"cannot pickle the model loaded from {path}: the file cannot be read now "
                           f"({e.strerror}); a model loaded from a path pickles by that path (load it "
                           f"from bytes, qrt.load(data), to pickle it by value)") from None
        if _file_identity(st) != self._identity:
            raise QrtError(f"cannot pickle the model loaded from {path}: the file changed since it was "
                           f"loaded (size, modification time or inode differ), so it would no longer "
                           f"give this model; load it again")
        self._digest = digest
        return _unpickle, (("path", path, st.st_size, digest), self._options)

    # ------------------------------------------------------------------ running

    def _views(self) -> dict:
        """This thread's arena views for one file batch (the plan bound to them is made too)."""
        return self._bind(1).views

    def _key(self, k: int, sizes) -> tuple:
        return (k, self._sizes if sizes is None else tuple(sizes))

    def _at(self, k: int, sizes=None):
        """The model at k file batches per run and symbol sizes `sizes` (None: the file's), or
        None if k batches cannot run as one plan (batching.py); made once and shared by the
        threads, for the latest MAX_PLANS shapes besides the file's. InvalidModelError if the
        model breaks a rule at those sizes."""
        key = self._key(k, sizes)
        with self._batch_lock:
            if key in self._batched:
                self._batched.move_to_end(key)
                return self._batched[key]
        b = None
        d = at(self.definition, k, key[1])
        if d is not None:
            ops = [_PreparedOp(s.opcode, s.form, s.inputs, s.outputs, prepare_op(d, i))
                   for i, s in enumerate(self._ops)]
            constants = {i: t.data for i, t in enumerate(d.tensors) if t.data is not None}
            # the file's packed weights, unless an operator's constants were cut to the sizes
            packed = [p if all(constants.get(t) is self._constants.get(t) for t in s.inputs)
                      else self.kernels.pack(s.form, [constants.get(t) for t in s.inputs], s.params, self.isa)
                      for s, p in zip(ops, self._packed)]
            # at one file batch every tensor is at most its size in the file (SPEC.md section
            # 2.15), so the file's arena plan holds it
            arena = self._arena if k == 1 else plan_arena(d)
            b = _Batched(d, ops, arena, constants, packed)
        with self._batch_lock:
            self._batched[key] = b
            _evict(self._batched, self._file_key)
        return b

    def _arena_buffer(self, k: int, size: int) -> np.ndarray:
        """This thread's arena buffer for plans of k file batches, at least `size` bytes past a
        64-byte boundary. One file batch: one buffer of the file's arena, shared by the plans at
        every symbol size (the file's arena plan holds them all). More: one more buffer, shared
        by those plans; a larger one replaces it, and the plans bound to the old one go."""
        local = self._local
        if getattr(local, "bounds", None) is None:
            local.bounds, local.buffers = OrderedDict(), {}
        buf = local.buffers.get(k > 1)
        if buf is None or buf.size < size + 64:
            buf = local.buffers[k > 1] = np.zeros(size + 64, np.uint8)
            for key in [key for key in local.bounds if key[0] > 1]:
                del local.bounds[key]
        return buf

    def _bind(self, k: int = 1, sizes=None) -> _Bound:
        """This thread's arena and plan for k file batches per run at symbol sizes `sizes`
        (None: the file's), made on first use and reused by every later run of this thread at
        that shape (the latest MAX_PLANS shapes besides the file's)."""
        key = k, sizes = self._key(k, sizes)
        local = self._local
        if key == self._file_key:
            bound = getattr(local, "file", None)
            if bound is not None:
                return bound
        bounds = getattr(local, "bounds", None)
        if bounds is not None and key in bounds:
            bounds.move_to_end(key)
            return bounds[key]
        at = self._at(k, sizes)
        m = at.definition
        buf = self._arena_buffer(k, at.arena.size)
        base = (-buf.ctypes.data) % 64
        views = {}
        for t, off in at.arena.offsets.items():
            tensor = m.tensors[t]
            dt = NUMPY_DTYPE[tensor.dtype]
            start = base + off
            views[t] = buf[start:start + tensor.numel * dt.itemsize].view(dt).reshape(tensor.shape)
        # the graph boundary: float32 staging in the user's layout (for feeds that are not
        # C-contiguous float32) and the conversions between it and the stored tensor
        conversions = {}
        for g, quantize in [(g, True) for g in m.inputs] + [(g, False) for g in m.outputs]:
            t = m.tensors[g.tensor]
            if t.dtype != DType.FLOAT32 and t.quant is not None:
                stage = np.empty(_user_shape(t.shape, g.layout), np.float32)
                views[("float", quantize, g.tensor)] = stage  # a tensor may be input and output
                params = self._boundary[g.tensor][0 if quantize else 1]
                src, dst = (stage, views[g.tensor]) if quantize else (views[g.tensor], stage)
                conversions[(quantize, g.tensor)] = self.kernels.conversion(
                    quantize, src, params, dst, nchw=g.layout == Layout.NCHW, isa=self.isa,
                    threads=self.threads)
        # run()'s short path (the file's shape): every input and output converted at the boundary
        fast = None
        if key == self._file_key and all((True, g.tensor) in conversions for g in m.inputs) \
                and all((False, g.tensor) in conversions for g in m.outputs):
            fast = ([conversions[(True, g.tensor)] for g in m.inputs],
                    [(conversions[(False, g.tensor)], info.shape) for g, info in zip(m.outputs, self.outputs)])
        constants = at.constants
        plan = Plan([
            self.kernels.step(s.form, [views[t] if t in views else constants[t] for t in s.inputs],
                              s.params, _out(views, s.outputs), self.isa, self.threads, packed)
            for s, packed in zip(at.ops, at.packed)])
        bound = _Bound(views, conversions, plan, fast, m)
        if key == self._file_key:
            local.file = bound
        else:
            local.bounds[key] = bound
            _evict(local.bounds, None)
        return bound

    def _finite(self) -> list:
        """This thread's scratch for the finiteness check: a flag per element of one file batch
        of each input that takes floats, at the symbols' max (a run at smaller sizes uses a part)."""
        finite = getattr(self._local, "finite", None)
        if finite is None:
            finite = self._local.finite = [
                np.empty(info.shape, np.bool_) if info.scale is not None or np.dtype(info.dtype).kind == "f"
                else None for info in self.inputs]
        return finite

    def _group(self, chunks: int) -> int:
        """How many file batches one run of the plan takes when a feed holds `chunks`: all of
        them, within MAX_BATCH_ARENA of arena, if the model can run batched; else 1."""
        if chunks == 1:
            return 1
        if self._batchable is None:  # and its copy for 2 batches verifies (a constant may not broadcast)
            self._batchable = batchable(self.definition) and self._at(2) is not None
        if not self._batchable:
            return 1
        return max(1, min(chunks, MAX_BATCH_ARENA // max(self._arena.size, 1)))

    def _feeds(self, args, kwargs) -> list:
        """Match what the user passed to the graph inputs, in order."""
        if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
            kwargs, args = args[0], ()
        names = [g.name for g in self.inputs]
        if args and kwargs:
            raise InputError("pass the inputs either positionally or by name, not both")
        if args:
            if len(args) != len(names):
                raise InputError(f"the model takes {len(names)} input(s) {names}, got {len(args)}")
            return list(args)
        unknown = sorted(set(kwargs) - set(names))
        missing = [n for n in names if n not in kwargs]
        if unknown or missing:
            raise InputError(f"inputs must be exactly {names}"
                             + (f"; unknown: {unknown}" if unknown else "")
                             + (f"; missing: {missing}" if missing else ""))
        return [kwargs[n] for n in names]

    def _check_feed(self, info: IOInfo, x) -> tuple[np.ndarray, int]:
        """The array and how many file-batches it holds."""
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except Exception as e:
                raise InputError(f"input '{info.name}': cannot be read as an array ({e})") from None
        stored = np.dtype(info.dtype)
        ok = x.dtype == stored or (x.dtype.kind == "f" and (stored.kind == "f" or info.scale is not None))
        if not ok and info.scale is None and stored.kind == "i" and x.dtype.kind in "iub":
            # ids and masks: any integer array whose values the stored type holds
            lim = np.iinfo(stored)
            ok = x.size == 0 or (np.can_cast(x.dtype, stored) or (lim.min <= x.min() and x.max() <= lim.max))
            if not ok:
                raise InputError(f"input '{info.name}': values [{x.min()}, {x.max()}] do not fit {stored.name}")
        if not ok:
            want = f"float32 or {stored.name}" if info.scale is not None else stored.name
            raise InputError(f"input '{info.name}': dtype {x.dtype} is not accepted; pass {want}")
        batch = info.shape[0]
        if x.ndim != len(info.shape) or x.shape[0] % batch or x.shape[0] == 0 or (
                any(a != b for i, (a, b) in enumerate(zip(x.shape, info.shape)) if i and i not in info.symbols)
                if info.symbols else x.shape[1:] != info.shape[1:]):
            shape = info.shape_text if info.symbols else info.shape
            raise InputError(f"input '{info.name}': shape {x.shape} does not match {shape} "
                             f"({info.layout}); the first dimension may be any multiple of {batch}")
        return x, x.shape[0] // batch

    def _sizes_of(self, feeds) -> tuple:
        """Each symbol's size in this run's feeds (SPEC.md section 2.15): inside its range, the
        same on every input that carries it."""
        sizes = []
        for s, places in zip(self.definition.symbols, self._symbol_axes):
            first = None
            for j, axis in places:
                name, n = self.inputs[j].name, feeds[j][0].shape[axis]
                if not s.min <= n <= s.max:
                    raise InputError(f"input '{name}': axis {axis} has size {n}, outside the range of symbol "
                                     f"'{s.name}': {s.min} to {s.max}")
                if first is None:
                    first = (name, axis, n)
                elif n != first[2]:
                    raise InputError(f"inputs '{first[0]}' (axis {first[1]}) and '{name}' (axis {axis}) both have "
                                     f"symbol '{s.name}' ({s.min} to {s.max}) but sizes {first[2]} and {n}")
            sizes.append(first[2])
        return tuple(sizes)

    def run(self, *args, raw: bool = False, check_finite: bool = True, **kwargs):
        """Run the model.

        Inputs: positional arrays in input order, a dict, or keywords, by input name. A float
        array is quantized with the input's scale and zero point (finite values beyond the
        input's range saturate); an array of the stored integer dtype is used as is. The first
        dimension may be any multiple of the batch the file was made for. Returns the output
        array when the model has one output, else a dict by output name; outputs are float
        unless raw=True (stored integers).

        check_finite: a float feed holding NaN or +-inf raises InputError naming the input and
        the first such element; False skips the check (NaN then reads as 0.0, +-inf as the
        ends of the input's range), for callers who check their data themselves.
        """
        if not raw and not kwargs:
            done = self._run_float(args, check_finite)
            if done is not None:
                return done
        feeds = [self._check_feed(info, x) for info, x in zip(self.inputs, self._feeds(args, kwargs))]
        chunks = {n for _, n in feeds}
        if len(chunks) != 1:
            raise InputError("all inputs must hold the same number of batches")
        chunks = chunks.pop()
        sizes = self._sizes_of(feeds)
        m = self.definition
        if check_finite:  # feeds the boundary's QUANTIZE does not check as it converts them
            for info, g, (x, _), flags in zip(self.inputs, m.inputs, feeds, self._finite()):
                if x.dtype.kind == "f" and not self._kernel_checks(g, x) and not _all_finite(x, flags):
                    raise _non_finite(info.name, x)
        results = []
        for g, info in zip(m.outputs, self.outputs):
            t = m.tensors[g.tensor]
            dtype = t.dtype if raw or t.quant is None else DType.FLOAT32
            shape = info.shape if sizes == self._sizes else _user_shape(t.shape_at(sizes), g.layout)
            if not shape and chunks > 1:  # a scalar has no batch dimension to stack runs along
                raise InputError(f"output '{info.name}' is a scalar: feed one batch of the file's size "
                                 f"per run, not {chunks}")
            results.append(np.empty((shape[0] * chunks,) + shape[1:] if shape else (), NUMPY_DTYPE[dtype]))
        group = self._group(chunks)  # file batches per run of the plan
        c = 0
        while c < chunks:
            k = min(group, chunks - c)
            if k > 1 and self._at(k, sizes) is None:  # this k's copy does not verify: one batch at a time
                group = k = 1
            bound = self._bind(k, sizes)
            for (x, _), g, info in zip(feeds, m.inputs, self.inputs):
                b = info.shape[0]
                if self._load_input(x[c * b:(c + k) * b], g, bound) and check_finite \
                        and self._kernel_checks(g, x):
                    raise _non_finite(info.name, x)
            bound.plan.run()
            for out, g in zip(results, m.outputs):
                b = out.shape[0] // chunks if out.ndim else 0
                self._store_output(g, bound, out[c * b:(c + k) * b] if out.ndim else out)
            c += k
        self._local.last = bound
        if len(results) == 1:
            return results[0]
        return {info.name: r for info, r in zip(self.outputs, results)}

    def _run_float(self, args, check_finite: bool):
        """run() for the common call, with less Python per call (it counts on small models):
        every input a C-contiguous float32 array of the file's shape, every input quantized
        and every output dequantized at the boundary. None for any other call, which the
        general path then takes (and explains, if it is wrong)."""
        bound = getattr(self._local, "file", None) or self._bind(1)
        fast = bound.fast
        if fast is None or len(args) != len(fast[0]):
            return None
        quantize, dequantize = fast
        try:
            for step, x in zip(quantize, args):
                step.feed(x)  # checks dtype, layout and shape
        except (TypeError, ValueError):
            return None
        for step in quantize:
            step()
        if check_finite:  # the compiled QUANTIZE notices NaN and +-inf as it converts
            for step, info, x in zip(quantize, self.inputs, args):
                if step.nonfinite:
                    raise _non_finite(info.name, x)
        bound.plan.run()
        self._local.last = bound
        results = []
        for step, shape in dequantize:
            out = np.empty(shape, np.float32)
            step.into(out)
            step()
            results.append(out)
        if len(results) == 1:
            return results[0]
        return {info.name: r for info, r in zip(self.outputs, results)}

    def profile(self, *args, repeats: int = 20, **kwargs) -> list:
        """Per-operator timing: runs the model once on the inputs (as run() takes them), then
        each operator alone `repeats` times on the same data; returns one dict per operator
        (index, name, op, seconds = the median, macs) in execution order."""
        import time

        self.run(*args, **kwargs)  # fills this thread's arena with real intermediate values
        plan, m = self._local.last.plan, self._local.last.definition  # at the shapes it ran
        rows = []
        for i, op in enumerate(m.operators):
            step, times = plan[i], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            rows.append({"index": i, "name": op.name, "op": OpCode(op.opcode).name,
                         "seconds": float(np.median(times)), "macs": op_macs(m, op)})
        return rows

    def _kernel_checks(self, g, x: np.ndarray) -> bool:
        """Whether the boundary's QUANTIZE step tells if feed x held NaN or +-inf: x is float32
        (a wider float is rounded to float32 first, where a large finite value becomes inf) and
        the stored tensor is quantized (a float32 one is copied as it is)."""
        return x.dtype == np.float32 and self.definition.tensors[g.tensor].dtype != DType.FLOAT32

    def _load_input(self, x: np.ndarray, g, bound: _Bound) -> bool:
        """Put k file batches of feed x into the arena of `bound` (bound for k); True if the
        boundary's QUANTIZE saw a NaN or an infinity in it."""
        views = bound.views
        t = self.definition.tensors[g.tensor]
        if x.dtype.kind == "f" and t.dtype != DType.FLOAT32:
            if x.dtype != np.float32 or not x.flags.c_contiguous:
                stage = views[("float", True, g.tensor)]
                with np.errstate(over="ignore"):  # a float64 beyond float32 saturates like any other
                    np.copyto(stage, x, casting="unsafe")  # float64 feeds are rounded to float32 first
                x = stage
            step = bound.conversions[(True, g.tensor)]
            step.feed(x)
            step()
            return step.nonfinite
        np.copyto(views[g.tensor], x.transpose(0, 2, 3, 1) if g.layout == Layout.NCHW else x)
        return False

    def _store_output(self, g, bound: _Bound, out: np.ndarray):
        views = bound.views
        t = self.definition.tensors[g.tensor]
        if out.dtype == np.float32 and t.dtype != DType.FLOAT32:
            step = bound.conversions[(False, g.tensor)]
            step.into(out)  # a C-contiguous slice of the result array
            step()
        else:
            np.copyto(out.transpose(0, 2, 3, 1) if g.layout == Layout.NCHW else out, views[g.tensor])


def _all_finite(x: np.ndarray, flags: np.ndarray) -> bool:
    """Whether every element of a float feed is finite, using `flags` (bool, one file batch)
    as scratch so that the check allocates nothing. A finite sum settles it in one pass (NaN
    and +-inf make any sum non-finite); only a sum that is not (an overflow, or a bad value)
    is checked element by element."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(x.sum()):
            return True
    b = flags.shape[0]
    if x.shape[1:] != flags.shape[1:]:  # symbol sizes below their max: the first elements will do
        flags = flags.reshape(-1)[:x[:b].size].reshape((b,) + x.shape[1:])
    if x.shape[0] == b:
        return bool(np.isfinite(x, out=flags).all())
    return all(np.isfinite(x[i:i + b], out=flags).all() for i in range(0, x.shape[0], b))


def _non_finite(name: str, x: np.ndarray) -> InputError:
    """The error for a feed that holds NaN or +-inf (the slow path: only once it is known)."""
    bad = ~np.isfinite(x)
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), x.shape))
    value = x[index]
    what = "nan" if np.isnan(value) else "inf" if value > 0 else "-inf"
    count = int(np.count_nonzero(bad))
    more = f" ({count} of its {x.size} elements are not finite)" if count > 1 else ""
    return InputError(f"input '{name}': element {index} is {what}{more}; a quantized model takes "
                      f"finite numbers only: replace or drop such values before running (e.g. "
                      f"np.nan_to_num), or pass check_finite=False (qrt run: --allow-non-finite) to run anyway (NaN then reads as "
                      f"0.0 and +-inf as the ends of the input's range)")


def _file_identity(st) -> tuple:
    """What changes when a file is replaced or rewritten, short of reading it (not its mode,
    owner or links: a chmod leaves the model as it was)."""
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev


def _hash_file(path: str):
    """The stat of the open file and the SHA-256 of its contents, read through once."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        while n := f.readinto(buf):
            h.update(view[:n])
    return st, h.hexdigest()


def _unpickle(source, options) -> Model:
    """Model.__reduce__'s inverse: load the model again from its bytes or its checked file."""
    if source[0] == "bytes":
        return Model(source[1], *options)
    _, path, size, digest = source
    now = None
    try:
        st = os.stat(path)
        if st.st_size == size:
            st, now = _hash_file(path)
    except OSError as e:
        raise QrtError(f"cannot unpickle the qrt model: its file {path} cannot be read ({e.strerror}); "
                       f"a model loaded from a path pickles by that path, so the file must stay in "
                       f"place (load it from bytes, qrt.load(data), to pickle it by value)") from None
    if st.st_size != size:
        raise QrtError(f"cannot unpickle the qrt model: its file {path} changed since the model was "
                       f"pickled ({st.st_size} bytes now, {size} then)")
    if now != digest:
        raise QrtError(f"cannot unpickle the qrt model: its file {path} changed since the model was "
                       f"pickled (same size, but SHA-256 {now[:16]}... now, {digest[:16]}... then)")
    model = Model(path, *options)
    if model._identity != _file_identity(st):  # replaced between the hash and the load
        raise QrtError(f"cannot unpickle the qrt model: its file {path} changed while it was being "
                       f"loaded; try again once it is stable")
    model._digest = digest  # the file this model was read from is the one hashed
    return model


def _threads(threads) -> int:
    """The thread count: the argument, else QRT_THREADS, else the cores this process may use."""
    if threads is None:
        env = os.environ.get("QRT_THREADS")
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise InputError(f"QRT_THREADS='{env}' is not a whole number") from None
        else:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be a whole number >= 1, got {threads!r}")
    return threads


def load(source, kernels: str | None = None, threads: int | None = None,
         isa: str | None = None) -> Model:
    """Load, verify and prepare a .qmodel (a path, memory-mapped, or bytes).

    kernels: "fast" (compiled, the default) or "reference" (the NumPy spec); the QRT_KERNELS
    environment variable sets the default.
    threads: how many threads one run uses (QRT_THREADS; default: the cores this process may
    use). Results are identical for every count.
    isa: the instruction-set path of the fast kernels, "amx" (Intel AMX tiles for conv and
    fully connected, AVX-512 VNNI for the rest), "avx512vnni", "avx2" or "scalar" (QRT_ISA;
    default: the best this CPU supports). Results are identical on every path."""
    return Model(source, kernels, threads, isa)
