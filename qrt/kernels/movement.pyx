# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Data-movement kernels: CONCAT, PAD, TRANSPOSE, RESHAPE. Each output element is an input
element (CONCAT: through its input's 256-entry rescale table when the quantizations differ) or
PAD's fill; no arithmetic at run time, except in the int16 form of CONCAT (SPEC.md 4.6), which
rescales an int16 input element by element (common.pxd _rescale16). PAD's int16 form is PAD's
copy plan with int16 checked.

Each op is used in two steps, as in qrt/kernels/elementwise.pyx: bind_NAME(ins, p, out,
isa=None, threads=1) -> Step checks shapes, dtypes and parameters once (ValueError), keeps raw
pointers to the C-contiguous inputs and output and makes the coalesced copy plan (and CONCAT's
tables); step.run() then only copies, without Python or allocation. NAME(ins, p, out) binds and
runs once. `isa` and `threads` are accepted and ignored (a named path is still checked).

Bit-exact with the NumPy references qrt/ops/concat.py, pad.py, transpose.py and reshape.py.
The bind-time helpers (flat views, checks, the rescale table) are common.pxd's.
"""
import numpy as np

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove, memset

from qrt.kernels.common cimport (
    MAX_RANK, Rescale16, _apply_table, _check_dtype, _check_isa, _check_rank, _check_zp_in, _flat_in,
    _flat_out, _in_bytes, _out_bytes, _rescale16, _rescale16_params, _rescale_table,
)
from qrt.kernels.plan cimport Step

from qrt.kernels import Kernel
from qrt.kernels.numpy_steps import bind_pad_modes


# ---------------------------------------------------------------------------- CONCAT

cdef struct ConcatPart:
    const uint8_t* src
    Py_ssize_t chunk  # bytes per outer index: the input's extent along the axis times inner
    const uint8_t* table  # int8: NULL, a copy
    bint rescale  # int16: rescaled by r, else a copy
    Rescale16 r


cdef class ConcatStep(Step):
    cdef ConcatPart* parts
    cdef Py_ssize_t count, outer, total_chunk
    cdef uint8_t* o

    def __dealloc__(self):
        PyMem_Free(self.parts)

    cdef int run(self) noexcept nogil:
        cdef Py_ssize_t k, o, offset = 0
        cdef const ConcatPart* part
        for k in range(self.count):
            part = &self.parts[k]
            for o in range(self.outer):
                if part.table != NULL:
                    _apply_table(part.table, part.src + o * part.chunk,
                                 self.o + offset + o * self.total_chunk, part.chunk)
                elif part.rescale:
                    _rescale16(<const int16_t*>(part.src + o * part.chunk),
                               <int16_t*>(self.o + offset + o * self.total_chunk), part.chunk // 2, &part.r)
                else:
                    memcpy(self.o + offset + o * self.total_chunk, part.src + o * part.chunk, part.chunk)
            offset += part.chunk
        return 0


cdef ConcatStep _bind_concat(ins, p, out, isa, object dtype):
    cdef ConcatStep s = ConcatStep.__new__(ConcatStep)
    cdef Py_ssize_t axis, rank, k, inner, isz
    cdef const uint8_t[::1] xv
    cdef uint8_t[::1] ov
    cdef uint8_t[:, ::1] tables
    oshape = out.shape
    rank = len(oshape)
    axis = p.axis
    if not (0 <= axis < rank):
        raise ValueError(f"axis {axis} is out of range for out of rank {rank}")
    if len(ins) == 0 or len(ins) != len(p.inputs):
        raise ValueError(f"{len(ins)} inputs but parameters for {len(p.inputs)}")
    ov = _flat_out(out).view(np.uint8)
    _check_dtype(out, dtype, "out")
    isz = out.dtype.itemsize
    total = 0
    flats = []
    for k in range(len(ins)):
        x = ins[k]
        flats.append(_flat_in(x, f"input {k}").view(np.uint8))
        _check_dtype(x, dtype, f"input {k}")
        sh = x.shape
        if len(sh) != rank or sh[:axis] != oshape[:axis] or sh[axis + 1:] != oshape[axis + 1:]:
            raise ValueError(f"input {k} has shape {sh}; it must match out {oshape} except on axis {axis}")
        total += sh[axis]
    if total != oshape[axis]:
        raise ValueError(f"inputs add up to {total} along axis {axis}, out has {oshape[axis]}")
    s.outer = 1
    for k in range(axis):
        s.outer *= oshape[k]
    inner = 1
    for k in range(axis + 1, rank):
        inner *= oshape[k]
    s.total_chunk = oshape[axis] * inner * isz
    s.o = <uint8_t*>&ov[0] if ov.shape[0] else NULL
    table_arr = np.empty((len(ins), 256), np.uint8)
    tables = table_arr
    s.parts = <ConcatPart*>PyMem_Malloc(len(ins) * sizeof(ConcatPart))
    if s.parts == NULL:
        raise MemoryError()
    s.count = len(ins) if ov.shape[0] else 0  # nothing to write: no part to run
    for k in range(len(ins)):
        xv = flats[k]
        s.parts[k].src = <const uint8_t*>&xv[0] if xv.shape[0] else NULL
        s.parts[k].chunk = ins[k].shape[axis] * inner * isz
        s.parts[k].table = NULL
        s.parts[k].rescale = False
        q = p.inputs[k]
        if q.identity:
            continue
        if isz == 1:
            _rescale_table(q, True, &tables[k, 0])
            s.parts[k].table = &tables[k, 0]
        else:
            _rescale16_params(q, np.int16, np.int16, &s.parts[k].r)
            s.parts[k].rescale = True
    _check_isa(isa)
    s.keep = (list(ins), out, table_arr)
    return s


def bind_concat(ins, p, out, isa=None, threads=1):
    """CONCAT along p.axis as a Step, each input re-expressed in the output's quantization
    (identity inputs copied). Reference: qrt/ops/concat.py."""
    return _bind_concat(ins, p, out, isa, np.int8)


def concat(ins, p, out, isa=None, threads=1):
    """CONCAT once: bind and run (see bind_concat)."""
    bind_concat(ins, p, out, isa, threads)()


def bind_concat_int16(ins, p, out, isa=None, threads=1):
    """CONCAT of int16 activations as a Step: identity inputs copied, the others rescaled into
    the output's quantization element by element. Reference: qrt/ops/concat.py."""
    return _bind_concat(ins, p, out, isa, np.int16)


def concat_int16(ins, p, out, isa=None, threads=1):
    """int16 CONCAT once: bind and run (see bind_concat_int16)."""
    bind_concat_int16(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- PAD

cdef class PadStep(Step):
    # Output bytes filled with the fill element, then the input's rows copied in: `rows` rows of
    # `row` bytes, the first at byte `start`, the next found by an odometer over dims[:nd-1]
    # with output byte strides ostride.
    cdef const uint8_t* x
    cdef uint8_t* o
    cdef const uint8_t* fill  # one element: zero_point in out's dtype
    cdef Py_ssize_t total, isz, nd, row, rows, start
    cdef Py_ssize_t dims[MAX_RANK]
    cdef Py_ssize_t ostride[MAX_RANK]

    cdef int run(self) noexcept nogil:
        cdef Py_ssize_t r, k, n, io
        cdef Py_ssize_t idx[MAX_RANK]
        cdef uint8_t* ob = self.o
        if self.total == 0:
            return 0
        if self.isz == 1:
            memset(ob, self.fill[0], self.total)
        else:  # one element, then doubling copies
            memcpy(ob, self.fill, self.isz)
            r = self.isz
            while r < self.total:
                n = r if 2 * r <= self.total else self.total - r
                memcpy(ob + r, ob, n)
                r += n
        if self.row == 0 or self.x == NULL:
            return 0
        for k in range(self.nd - 1):
            idx[k] = 0
        io = self.start
        for r in range(self.rows):
            memcpy(ob + io, self.x + r * self.row, self.row)
            k = self.nd - 2
            while k >= 0:
                idx[k] += 1
                io += self.ostride[k]
                if idx[k] < self.dims[k]:
                    break
                io -= self.ostride[k] * self.dims[k]
                idx[k] = 0
                k -= 1
        return 0


def bind_pad(ins, p, out, isa=None, threads=1):
    """PAD as a Step: p.pads (begins, then ends) filled with p.zero_point, any rank and dtype.
    Reference: qrt/ops/pad.py."""
    cdef PadStep s = PadStep.__new__(PadStep)
    cdef Py_ssize_t rank, k, nd, r
    cdef Py_ssize_t before[MAX_RANK]
    cdef Py_ssize_t oext[MAX_RANK]
    cdef const uint8_t[::1] fill
    if p.mode:  # reflect, edge, wrap: NumPy (numpy_steps.py)
        return bind_pad_modes(ins, p, out)
    x = ins[0]
    xs, os_ = x.shape, out.shape
    rank = len(xs)
    _check_rank(xs, "input")
    pads = tuple(p.pads)
    if len(pads) != 2 * rank or any(v < 0 for v in pads):
        raise ValueError(f"pads {pads} must be {2 * rank} values >= 0 (begins, then ends)")
    expect = tuple(xs[k] + pads[k] + pads[rank + k] for k in range(rank))
    if os_ != expect:
        raise ValueError(f"out has shape {os_}; padding {xs} by {pads} gives {expect}")
    if x.dtype.itemsize != out.dtype.itemsize:
        raise ValueError(f"input dtype {x.dtype} and out dtype {out.dtype} differ in size")
    s.x, s.o = _in_bytes(x, "input"), _out_bytes(out)
    _check_isa(isa)
    s.isz = out.dtype.itemsize
    fill_arr = np.array(p.zero_point).astype(out.dtype).reshape(-1).view(np.uint8)
    fill = fill_arr
    s.fill = &fill[0]
    s.total = out.nbytes
    s.keep = (x, out, fill_arr)
    # Coalesce: a dimension without padding merges into the one before it (its index then
    # just scales that one's); the element's bytes become part of the innermost dimension.
    nd = 0
    for k in range(rank):
        if nd > 0 and pads[k] == 0 and pads[rank + k] == 0:
            s.dims[nd - 1] *= xs[k]
            before[nd - 1] *= xs[k]
            oext[nd - 1] *= xs[k]
        else:
            s.dims[nd] = xs[k]
            before[nd] = pads[k]
            oext[nd] = xs[k] + pads[k] + pads[rank + k]
            nd += 1
    if nd == 0:  # rank 0: one element
        s.dims[0], before[0], oext[0], nd = 1, 0, 1, 1
    s.dims[nd - 1] *= s.isz
    before[nd - 1] *= s.isz
    oext[nd - 1] *= s.isz
    s.nd = nd
    s.row = s.dims[nd - 1]
    s.rows = 1
    s.start = 0
    r = 1
    for k in range(nd - 1, -1, -1):
        s.ostride[k] = r
        s.start += before[k] * r
        r *= oext[k]
    for k in range(nd - 1):
        s.rows *= s.dims[k]
    return s


def pad(ins, p, out, isa=None, threads=1):
    """PAD once: bind and run (see bind_pad)."""
    bind_pad(ins, p, out, isa, threads)()


def bind_pad_int16(ins, p, out, isa=None, threads=1):
    """PAD of an int16 activation as a Step: bind_pad's copy plan, with x and out int16 and the
    fill (the zero point) in int16's range checked. Reference: qrt/ops/pad.py."""
    x = ins[0]
    _flat_in(x, "input")
    _flat_out(out)
    _check_dtype(x, np.int16, "input")
    _check_dtype(out, np.int16, "out")
    _check_zp_in(p.zero_point, np.int16, "zero point (the fill)")
    return bind_pad(ins, p, out, isa, threads)


def pad_int16(ins, p, out, isa=None, threads=1):
    """int16 PAD once: bind and run (see bind_pad_int16)."""
    bind_pad_int16(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- TRANSPOSE

ctypedef fused elem_t:
    uint8_t
    uint16_t
    uint32_t
    uint64_t


cdef void _permute(const elem_t* src, elem_t* dst, Py_ssize_t nd, const Py_ssize_t* shape,
                   const Py_ssize_t* stride) noexcept nogil:
    """dst in C order over `shape`; src element offsets by `stride` per dimension."""
    cdef Py_ssize_t last = nd - 1, k, r, rows = 1, i, si = 0, di = 0
    cdef Py_ssize_t n = shape[last], s = stride[last]
    cdef Py_ssize_t idx[MAX_RANK]
    for k in range(last):
        idx[k] = 0
        rows *= shape[k]
    for r in range(rows):
        if s == 1:
            for i in range(n):
                dst[di + i] = src[si + i]
        else:
            for i in range(n):
                dst[di + i] = src[si + i * s]
        di += n
        k = last - 1
        while k >= 0:
            idx[k] += 1
            si += stride[k]
            if idx[k] < shape[k]:
                break
            si -= stride[k] * shape[k]
            idx[k] = 0
            k -= 1


cdef enum:
    TILE = 32


cdef inline Py_ssize_t _c_stride(const Py_ssize_t* shape, Py_ssize_t nd, Py_ssize_t k) noexcept nogil:
    """Dimension k's element stride in C order over shape[:nd]: the product of the sizes after it."""
    cdef Py_ssize_t r = 1, i
    for i in range(k + 1, nd):
        r *= shape[i]
    return r


cdef void _permute_tiled(const elem_t* src, elem_t* dst, Py_ssize_t nd, const Py_ssize_t* shape,
                         const Py_ssize_t* stride, Py_ssize_t j) noexcept nogil:
    """As _permute, when dimension j (< nd - 1) is the one src walks with stride 1: the
    (j, last) planes go in TILE x TILE blocks, so that both sides stay in cache."""
    cdef Py_ssize_t last = nd - 1, k, m = 0, r, rows = 1, jb, je, lb, le, jj, ll
    cdef Py_ssize_t so = 0, do = 0, s = stride[last], nj = shape[j], nl = shape[last]
    cdef Py_ssize_t dj = _c_stride(shape, nd, j)  # dst is in C order over shape
    cdef Py_ssize_t oshape[MAX_RANK]
    cdef Py_ssize_t osrc[MAX_RANK]
    cdef Py_ssize_t odst[MAX_RANK]
    cdef Py_ssize_t idx[MAX_RANK]
    cdef const elem_t* sp
    cdef elem_t* dp
    for k in range(last):  # the odometer over the dimensions other than j and last
        if k != j:
            oshape[m] = shape[k]
            osrc[m] = stride[k]
            odst[m] = _c_stride(shape, nd, k)
            idx[m] = 0
            rows *= shape[k]
            m += 1
    for r in range(rows):
        jb = 0
        while jb < nj:
            je = jb + TILE if jb + TILE < nj else nj
            lb = 0
            while lb < nl:
                le = lb + TILE if lb + TILE < nl else nl
                for jj in range(jb, je):
                    sp = src + so + jj
                    dp = dst + do + jj * dj
                    for ll in range(lb, le):
                        dp[ll] = sp[ll * s]
                lb = le
            jb = je
        k = m - 1
        while k >= 0:
            idx[k] += 1
            so += osrc[k]
            do += odst[k]
            if idx[k] < oshape[k]:
                break
            so -= osrc[k] * oshape[k]
            do -= odst[k] * oshape[k]
            idx[k] = 0
            k -= 1


cdef void _transpose_run(const elem_t* src, elem_t* dst, Py_ssize_t nd, const Py_ssize_t* shape,
                         const Py_ssize_t* stride, Py_ssize_t j) noexcept nogil:
    if j >= 0:
        _permute_tiled(src, dst, nd, shape, stride, j)
    else:
        _permute(src, dst, nd, shape, stride)


cdef class TransposeStep(Step):
    # The output in C order over nd coalesced dimensions; stride: x's element stride along each.
    cdef const uint8_t* x
    cdef uint8_t* o
    cdef Py_ssize_t n, isz, nd, j  # j: the dimension x walks contiguously (tiles), or -1
    cdef Py_ssize_t shape[MAX_RANK]
    cdef Py_ssize_t stride[MAX_RANK]

    cdef int run(self) noexcept nogil:
        if self.n == 0:
            return 0
        if self.nd == 1 and self.stride[0] == 1:
            memcpy(self.o, self.x, self.n)
        elif self.isz == 1:
            _transpose_run(<const uint8_t*>self.x, <uint8_t*>self.o, self.nd, self.shape, self.stride, self.j)
        elif self.isz == 2:
            _transpose_run(<const uint16_t*>self.x, <uint16_t*>self.o, self.nd, self.shape, self.stride, self.j)
        elif self.isz == 4:
            _transpose_run(<const uint32_t*>self.x, <uint32_t*>self.o, self.nd, self.shape, self.stride, self.j)
        else:
            _transpose_run(<const uint64_t*>self.x, <uint64_t*>self.o, self.nd, self.shape, self.stride, self.j)
        return 0


cdef _bind_copy(TransposeStep s, x, out, isa):
    """TRANSPOSE's and SLICE's checks and pointers: elements of 1, 2, 4 or 8 bytes, both sides."""
    s.isz = x.dtype.itemsize
    if out.dtype.itemsize != s.isz or s.isz not in (1, 2, 4, 8):
        raise ValueError(f"input dtype {x.dtype} and out dtype {out.dtype} must have the same "
                         f"size of 1, 2, 4 or 8 bytes")
    s.x, s.o = _in_bytes(x, "input"), _out_bytes(out)
    _check_isa(isa)
    s.n = out.nbytes
    s.keep = (x, out)


def bind_transpose(ins, p, out, isa=None, threads=1):
    """TRANSPOSE by p.perm (output dimension i is input dimension perm[i]) as a Step, any rank
    <= 8 and any dtype of 1, 2, 4 or 8 bytes. Reference: qrt/ops/transpose.py."""
    cdef TransposeStep s = TransposeStep.__new__(TransposeStep)
    cdef Py_ssize_t rank, k, nd, size, st
    cdef Py_ssize_t instride[MAX_RANK]
    x = ins[0]
    xs = x.shape
    rank = len(xs)
    _check_rank(xs, "input")
    perm = tuple(p.perm)
    if sorted(perm) != list(range(rank)):
        raise ValueError(f"perm {perm} is not a permutation of the {rank} dimensions")
    expect = tuple(xs[k] for k in perm)
    if out.shape != expect:
        raise ValueError(f"out has shape {out.shape}; transposing {xs} by {perm} gives {expect}")
    _bind_copy(s, x, out, isa)
    st = 1
    for k in range(rank - 1, -1, -1):
        instride[k] = st
        st *= xs[k]
    nd = 0
    for k in range(rank):
        size = xs[perm[k]]
        if size == 1:
            continue
        st = instride[perm[k]]
        if nd > 0 and s.stride[nd - 1] == st * size:
            s.shape[nd - 1] *= size
            s.stride[nd - 1] = st
        else:
            s.shape[nd] = size
            s.stride[nd] = st
            nd += 1
    if nd == 0:
        s.shape[0], s.stride[0], nd = 1, 1, 1
    s.nd = nd
    s.j = -1
    if s.stride[nd - 1] != 1:
        for k in range(nd - 1):
            if s.stride[k] == 1:
                s.j = k
    return s


def transpose(ins, p, out, isa=None, threads=1):
    """TRANSPOSE once: bind and run (see bind_transpose)."""
    bind_transpose(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- SLICE

def bind_slice(ins, p, out, isa=None, threads=1):
    """SLICE as a Step: TRANSPOSE's strided copy (y in C order; x read from the window's first
    element with strides stride * step, negative ones included). Reference: qrt/ops/slice.py."""
    from qrt.ops.slice import check_window
    cdef TransposeStep s = TransposeStep.__new__(TransposeStep)
    cdef Py_ssize_t rank, k, st, origin = 0
    x = ins[0]
    xs = x.shape
    rank = len(xs)
    _check_rank(xs, "input")
    why = check_window(tuple(xs), tuple(out.shape), tuple(p.begin), tuple(p.step))
    if why:
        raise ValueError(why)
    _bind_copy(s, x, out, isa)
    st = 1
    for k in range(rank - 1, -1, -1):
        s.shape[k] = out.shape[k]
        s.stride[k] = st * p.step[k]
        origin += st * p.begin[k]
        st *= xs[k]
    if rank == 0:
        s.shape[0], s.stride[0], rank = 1, 1, 1
    s.nd, s.j = rank, -1
    if s.n:
        s.x += origin * s.isz
    return s


def slice(ins, p, out, isa=None, threads=1):
    """SLICE once: bind and run (see bind_slice)."""
    bind_slice(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- GATHER

cdef class GatherStep(Step):
    cdef const uint8_t* data
    cdef const void* idx
    cdef uint8_t* o
    cdef bint idx64
    cdef Py_ssize_t outer, n, count, inner  # inner in bytes

    cdef int run(self) noexcept nogil:
        cdef Py_ssize_t i, j
        cdef int64_t v
        for j in range(self.count):  # every index first: a bad one writes nothing
            v = (<const int64_t*>self.idx)[j] if self.idx64 else (<const int32_t*>self.idx)[j]
            if v < -self.n or v >= self.n:
                return -3
        for i in range(self.outer):
            for j in range(self.count):
                v = (<const int64_t*>self.idx)[j] if self.idx64 else (<const int32_t*>self.idx)[j]
                if v < 0:
                    v += self.n
                memcpy(self.o + (i * self.count + j) * self.inner, self.data + (i * self.n + v) * self.inner,
                       self.inner)
        return 0


def bind_gather(ins, p, out, isa=None, threads=1):
    """GATHER along p.axis as a Step: data of any dtype, indices int32 or int64 (checked at
    every run, -3 when one is outside [-n, n)). Reference: qrt/ops/gather.py."""
    cdef GatherStep s = GatherStep.__new__(GatherStep)
    cdef Py_ssize_t k
    data, idx = ins[0], ins[1]
    for a, what in ((data, "data"), (idx, "indices"), (out, "out")):
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
            raise ValueError(f"{what} must be a C-contiguous array")
    if idx.dtype not in (np.int32, np.int64):
        raise ValueError(f"indices must be int32 or int64, not {idx.dtype}")
    if out.dtype.itemsize != data.dtype.itemsize:
        raise ValueError(f"out dtype {out.dtype} and data dtype {data.dtype} differ in size")
    axis = p.axis
    if not 0 <= axis < data.ndim:
        raise ValueError(f"axis {axis} is out of range for data of rank {data.ndim}")
    expect = data.shape[:axis] + idx.shape + data.shape[axis + 1:]
    if out.shape != expect:
        raise ValueError(f"out has shape {out.shape}; expected {expect}")
    _check_isa(isa)
    s.outer = int(np.prod(data.shape[:axis], dtype=np.int64))
    s.n = data.shape[axis]
    s.count = idx.size
    s.inner = int(np.prod(data.shape[axis + 1:], dtype=np.int64)) * data.dtype.itemsize
    s.idx64 = idx.dtype == np.int64
    s.data, s.o = _in_bytes(data, "data"), _out_bytes(out)
    s.idx = <const void*>_in_bytes(idx, "indices")
    if s.o == NULL:  # an empty output: the indices are still checked
        s.outer = 0
    s.keep = (data, idx, out)
    return s


def gather(ins, p, out, isa=None, threads=1):
    """GATHER once: bind and run (see bind_gather)."""
    bind_gather(ins, p, out, isa, threads)()


# ---------------------------------------------------------------------------- RESHAPE

cdef class ReshapeStep(Step):
    cdef const uint8_t* x
    cdef uint8_t* o
    cdef Py_ssize_t n

    cdef int run(self) noexcept nogil:
        if self.n and <const uint8_t*>self.o != self.x:  # the arena may alias the two
            memmove(self.o, self.x, self.n)
        return 0


def bind_reshape(ins, p, out, isa=None, threads=1):
    """RESHAPE as a Step: the same elements in the same C order (p is None); a byte copy."""
    cdef ReshapeStep s = ReshapeStep.__new__(ReshapeStep)
    x = ins[0]
    if x.size != out.size or x.dtype.itemsize != out.dtype.itemsize:
        raise ValueError(f"cannot reshape {x.shape} {x.dtype} into out {out.shape} {out.dtype}")
    s.x, s.o = _in_bytes(x, "input"), _out_bytes(out)
    _check_isa(isa)
    s.n = out.nbytes
    s.keep = (x, out)
    return s


def reshape(ins, p, out, isa=None, threads=1):
    """RESHAPE once: bind and run (see bind_reshape)."""
    bind_reshape(ins, p, out, isa, threads)()


KERNELS = {
    "concat": Kernel(concat, bind_concat),
    "pad": Kernel(pad, bind_pad),
    "concat_int16": Kernel(concat_int16, bind_concat_int16),
    "pad_int16": Kernel(pad_int16, bind_pad_int16),
    "transpose": Kernel(transpose, bind_transpose),
    "slice": Kernel(slice, bind_slice),
    "gather": Kernel(gather, bind_gather),
    "reshape": Kernel(reshape, bind_reshape),
}
