# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""FULLY_CONNECTED, int8 in, int32 accumulation, int8 out (SPEC.md 2.13.3, section 4).
Reference: qrt/reference/ops.py fully_connected, bit for bit.

Calling convention (qrt/runtime/kernels.py): fn([x, w, bias], params, out) fills `out`.
x int8 [..., K], w int8 [N_out, K], bias int32 [N_out], out int8 [..., N_out], C-contiguous.
Each row of x is turned into (x - zp_x) once (an int16 buffer of K), then the outputs are
contiguous dot products over K against the weight rows, four rows per pass (they share the loads
of x), which gcc -O3 vectorises.
"""
import numpy as np
from libc.stdint cimport int8_t, int16_t, int32_t
from libc.stdlib cimport free, malloc

from qrt.kernels.numerics cimport check_requant, dot4_s16_s8, dot_s16_s8, requantize_one


def fully_connected(ins, p, out):
    """FULLY_CONNECTED: ins = [x [..., K], w [N_out, K], bias [N_out]], p FullyConnectedParams."""
    if len(ins) < 3:
        raise ValueError(f"expected inputs [x, w, bias], got {len(ins)}")
    xa, ya = ins[0], out
    if not isinstance(xa, np.ndarray) or not isinstance(ya, np.ndarray):
        raise ValueError("x and out must be numpy arrays")
    if xa.ndim < 1:
        raise ValueError("x must have rank >= 1 (its last dimension is reduced)")
    if not xa.flags.c_contiguous or not ya.flags.c_contiguous:
        raise ValueError("x and out must be C-contiguous")
    shape = xa.shape
    lead, k_x = shape[:len(shape) - 1], shape[len(shape) - 1]  # no negative indices here
    cdef const int8_t[:, ::1] w = ins[1]
    cdef const int32_t[::1] bias = ins[2]
    cdef Py_ssize_t N_out = w.shape[0], K = w.shape[1]
    if k_x != K:
        raise ValueError(f"x has shape {shape}; its last dimension must be K = {K}")
    if bias.shape[0] != N_out:
        raise ValueError(f"bias has {bias.shape[0]} entries; expected {N_out}")
    if ya.shape != lead + (N_out,):
        raise ValueError(f"output has shape {ya.shape}; expected {lead + (N_out,)}")
    cdef Py_ssize_t rows = 1, d
    for d in lead:
        rows *= d
    # C-contiguous reshapes to the same element count are views (the writes land in `out`).
    cdef const int8_t[:, ::1] x = xa.reshape(rows, K)
    cdef int8_t[:, ::1] y = ya.reshape(rows, N_out)
    r = p.out
    cdef const int32_t[::1] mult = r.multiplier
    cdef const int32_t[::1] shift = r.shift
    cdef int32_t zp_x = p.input_zero_point
    if not (-128 <= zp_x <= 127):
        raise ValueError(f"input zero point {zp_x} must lie in [-128, 127]")
    cdef Py_ssize_t ms = check_requant(mult, shift, N_out, r.zero_point, r.lo, r.hi)
    cdef int32_t zp_y = r.zero_point, lo = r.lo, hi = r.hi
    if rows == 0 or N_out == 0:
        return None

    cdef int16_t* xs = <int16_t*>malloc((K if K > 0 else 1) * sizeof(int16_t))
    if xs == NULL:
        raise MemoryError()
    cdef const int8_t* xb = &x[0, 0]
    cdef const int8_t* wb = &w[0, 0]
    cdef const int32_t* bb = &bias[0]
    cdef const int32_t* mb = &mult[0]
    cdef const int32_t* nb = &shift[0]
    cdef int8_t* yp = &y[0, 0]
    cdef const int8_t* xr
    cdef Py_ssize_t i, j, k, o
    cdef int32_t acc
    cdef int32_t acc4[4]
    try:
        with nogil:
            for i in range(rows):
                xr = xb + i * K
                for k in range(K):
                    xs[k] = <int16_t>(xr[k] - zp_x)
                o = 0
                while o + 4 <= N_out:  # four weight rows per pass share the loads of xs
                    dot4_s16_s8(xs, wb + o * K, K, K, acc4)
                    for j in range(4):
                        yp[o + j] = requantize_one(bb[o + j] + acc4[j], mb[(o + j) * ms],
                                                   nb[(o + j) * ms], zp_y, lo, hi)
                    o += 4
                while o < N_out:
                    acc = bb[o] + dot_s16_s8(xs, wb + o * K, K)
                    yp[o] = requantize_one(acc, mb[o * ms], nb[o * ms], zp_y, lo, hi)
                    o += 1
                yp += N_out
    finally:
        free(xs)
    return None
