"""qrt.load and the runnable model: load -> verify -> prepare -> plan -> run.

A loaded model holds the verified file (weights stay in the memory map), each operator's
prepared integer parameters and packed weights, and an arena plan. Each thread that runs the
model gets its own arena and compiled plan (qrt/kernels/plan.pyx: every op bound to its
buffers, run by a C loop) on first use, so one model may be run from several threads at once;
a run allocates nothing but its outputs.

A model pickles by reference to what it was loaded from (Model.__reduce__): the file's path
with its size and SHA-256, or the bytes, with the load options as the caller gave them; the
receiving process loads it again, so it picks its own CPU's best path unless an isa was forced.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, QrtError
from ..format.model import NUMPY_DTYPE, DType, Layout, OpCode
from ..format.reader import read_model, release_pages
from .arena import plan_arena
from .batching import MAX_BATCH_ARENA, batchable, batched
from ..kernels import isa as _isa
from ..kernels.plan import Plan
from ..ops import Form, op_form, op_macs, prepare_op
from ..ops.dequantize import dequantize_params
from ..ops.quantize import quantize_params
from .kernel_sets import DEFAULT_KERNELS, KERNEL_SETS


@dataclass(frozen=True)
class IOInfo:
    """A graph input or output as the user sees it."""
    name: str
    shape: tuple  # in `layout`; shape[0] is the batch the file was made for
    dtype: str  # numpy name of the stored tensor's dtype
    layout: str  # "NCHW" or "AS_STORED"
    scale: float | None
    zero_point: int | None


@dataclass
class _PreparedOp:
    opcode: OpCode
    form: Form  # which of the op's forms (integer, float32, weight-only, dynamic) it runs
    inputs: tuple
    output: int
    params: object


@dataclass(eq=False, repr=False)
class _Batched:
    """The model at k file batches per run (batching.py): its definition, prepared operators
    and arena plan; k = 1 is the file itself."""
    definition: object
    ops: list
    arena: object


@dataclass(eq=False, repr=False)
class _Bound:
    """One thread's arena and plan for one _Batched: a view per run-time tensor, the float32
    staging arrays and conversions of the graph boundary, and the compiled plan."""
    views: dict
    conversions: dict
    plan: object
    fast: tuple | None  # run()'s short path (k = 1): the boundary's quantize and dequantize steps
    finite: list  # the finiteness check's scratch, one file batch per input that takes floats


def _user_shape(shape: tuple, layout: Layout) -> tuple:
    return (shape[0], shape[3], shape[1], shape[2]) if layout == Layout.NCHW else shape


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
        self._ops = [_PreparedOp(op.opcode, op_form(m, i), op.inputs, op.outputs[0], prepare_op(m, i))
                     for i, op in enumerate(m.operators)]
        self._arena = plan_arena(m)
        self._batched = {1: _Batched(m, self._ops, self._arena)}  # by k, made on first use
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
                      None if q is None else int(q.zero_point[0]))

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

    def _at(self, k: int):
        """The model at k file batches per run (None if it cannot run so: batching.py); made
        once and shared by the threads, a few k at a time."""
        b = self._batched.get(k)
        if b is None and k not in self._batched:
            d = batched(self.definition, k)
            if d is not None:
                ops = [_PreparedOp(s.opcode, s.form, s.inputs, s.output, prepare_op(d, i))
                       for i, s in enumerate(self._ops)]
                b = _Batched(d, ops, plan_arena(d))
            with self._batch_lock:
                if len(self._batched) > 4:  # feeds of many sizes: keep the file's and the latest
                    for old in [j for j in self._batched if j != 1][:-2]:
                        del self._batched[old]
                self._batched[k] = b
        return b

    def _bind(self, k: int) -> _Bound:
        """This thread's arena and plan for k file batches per run, made on first use and
        reused by every later run of this thread with that k."""
        bounds = getattr(self._local, "bounds", None)
        if bounds is None:
            bounds = self._local.bounds = {}
        bound = bounds.get(k)
        if bound is not None:
            return bound
        at = self._at(k)
        m = at.definition
        buf = np.zeros(at.arena.size + 64, np.uint8)
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
        # the finiteness check's scratch: a flag per element of each input that takes floats
        finite = [np.empty(info.shape, np.bool_) if info.scale is not None or np.dtype(info.dtype).kind == "f"
                  else None for info in self.inputs]
        # run()'s short path: every input and output converted at the boundary
        fast = None
        if k == 1 and all((True, g.tensor) in conversions for g in m.inputs) \
                and all((False, g.tensor) in conversions for g in m.outputs):
            fast = ([conversions[(True, g.tensor)] for g in m.inputs],
                    [(conversions[(False, g.tensor)], info.shape) for g, info in zip(m.outputs, self.outputs)])
        constants = self._constants
        plan = Plan([
            self.kernels.step(s.form, [views[t] if t in views else constants[t] for t in s.inputs],
                              s.params, views[s.output], self.isa, self.threads, packed)
            for s, packed in zip(at.ops, self._packed)])
        if k != 1 and len(bounds) > 3:  # this thread's arenas for other k: the file's and the latest
            for old in [j for j in bounds if j != 1][:-1]:
                del bounds[old]
        bound = bounds[k] = _Bound(views, conversions, plan, fast, finite)
        return bound

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
        if x.ndim != len(info.shape) or x.shape[1:] != info.shape[1:] or x.shape[0] % batch or x.shape[0] == 0:
            raise InputError(f"input '{info.name}': shape {x.shape} does not match {info.shape} "
                             f"({info.layout}); the first dimension may be any multiple of {batch}")
        return x, x.shape[0] // batch

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
        m = self.definition
        if check_finite:  # feeds the boundary's QUANTIZE does not check as it converts them
            for info, g, (x, _), flags in zip(self.inputs, m.inputs, feeds, self._bind(1).finite):
                if x.dtype.kind == "f" and not self._kernel_checks(g, x) and not _all_finite(x, flags):
                    raise _non_finite(info.name, x)
        results = []
        for g, info in zip(m.outputs, self.outputs):
            t = m.tensors[g.tensor]
            dtype = t.dtype if raw or t.quant is None else DType.FLOAT32
            results.append(np.empty((info.shape[0] * chunks,) + info.shape[1:], NUMPY_DTYPE[dtype]))
        group = self._group(chunks)  # file batches per run of the plan
        c = 0
        while c < chunks:
            k = min(group, chunks - c)
            if k > 1 and self._at(k) is None:  # this k's copy does not verify: one batch at a time
                group = k = 1
            bound = self._bind(k)
            for (x, _), g, info in zip(feeds, m.inputs, self.inputs):
                b = m.tensors[g.tensor].shape[0]
                if self._load_input(x[c * b:(c + k) * b], g, bound) and check_finite \
                        and self._kernel_checks(g, x):
                    raise _non_finite(info.name, x)
            bound.plan.run()
            for out, g, info in zip(results, m.outputs, self.outputs):
                b = info.shape[0]
                self._store_output(g, bound, out[c * b:(c + k) * b])
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
        bound = self._bind(1)
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
        plan, m = self._local.last.plan, self.definition
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
