"""Kernel sets: how each op of qrt.ops.OPS runs, looked up by its OpDef.

"reference" runs each operator's form's NumPy reference (qrt/ops/<op>.py); "fast" runs its
compiled kernel (qrt/kernels/, Form.kernel in the kernel modules' KERNELS), bit-exact with it,
or the reference where a form has none (the float32 forms, NumPy already). QRT_KERNELS or
qrt.load(kernels=...) chooses. Both give, per operator: pack (once at load: weights into the
kernel's layout), step (once per thread arena: the op bound to its buffers, a Step of the
compiled plan) and conversion (the graph boundary's QUANTIZE / DEQUANTIZE).
"""
from __future__ import annotations

import numpy as np

from ..kernels import (Kernel, depthwise, dynamic, elementwise, gemm, movement, numpy_steps, pool, recurrent, softmax,
                       weight_only)
from ..kernels.plan import PyStep
from ..ops import Form
from ..ops.dequantize import DEQUANTIZE
from ..ops.quantize import QUANTIZE

COMPILED: dict[str, Kernel] = {
    **gemm.KERNELS, **depthwise.KERNELS, **pool.KERNELS, **elementwise.KERNELS, **movement.KERNELS,
    **softmax.KERNELS, **weight_only.KERNELS, **dynamic.KERNELS, **recurrent.KERNELS, **numpy_steps.KERNELS,
}


def _reference_step(form: Form, ins, params, out):
    reference = form.reference

    def run(ins, p, out):
        if isinstance(out, list):  # an op of several outputs (LSTM, GRU)
            for o, y in zip(out, reference(ins, p)):
                o[...] = y.reshape(o.shape)
        else:
            out[...] = reference(ins, p).reshape(out.shape)
    return PyStep(run, ins, params, out)


class FastKernels:
    name = "fast"

    def pack(self, form: Form, ins, params, isa):
        pack = None if form.kernel is None else COMPILED[form.kernel].pack
        return None if pack is None else pack(ins, params, isa=isa)

    def step(self, form: Form, ins, params, out, isa, threads, packed=None):
        if form.kernel is None:
            return _reference_step(form, ins, params, out)
        k = COMPILED[form.kernel]
        if k.pack is not None:
            return k.bind(ins, params, out, isa=isa, threads=threads, packed=packed)
        return k.bind(ins, params, out, isa=isa, threads=threads)

    def conversion(self, quantize, x, params, out, nchw, isa, threads):
        """The graph boundary: a step with feed(x) (QUANTIZE) or into(out) (DEQUANTIZE) for the
        user's float array of each run; nchw: the float side is NCHW, the integer side NHWC."""
        k = COMPILED[(QUANTIZE if quantize else DEQUANTIZE).kernel]
        return k.bind([x], params, out, isa=isa, threads=threads, nchw=nchw)


class ReferenceKernels:
    name = "reference"

    def pack(self, form: Form, ins, params, isa):
        return None

    def step(self, form: Form, ins, params, out, isa, threads, packed=None):
        return _reference_step(form, ins, params, out)

    def conversion(self, quantize, x, params, out, nchw, isa=None, threads=1):
        return _ReferenceConversion(quantize, x, params, out, nchw)


class _ReferenceConversion:
    """The reference set's graph-boundary conversion (see FastKernels.conversion)."""

    def __init__(self, quantize, x, p, out, nchw):
        self.quantize, self.x, self.p, self.out, self.nchw = quantize, x, p, out, nchw
        self.nonfinite = False
        self.float_shape = x.shape if quantize else out.shape

    def _float_side(self, a):
        """As the compiled step: the float array must be what the step was bound to."""
        if (not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous
                or a.shape != self.float_shape):
            raise ValueError(f"expected a C-contiguous float32 array of shape {self.float_shape}")
        return a

    def feed(self, x):
        self.x = self._float_side(x)

    def into(self, out):
        self.out = self._float_side(out)

    def __call__(self):
        if self.quantize:
            self.nonfinite = not np.isfinite(self.x).all()  # as the compiled step reports it
            self.out[...] = QUANTIZE.reference([self.x.transpose(0, 2, 3, 1) if self.nchw else self.x], self.p)
        else:
            y = DEQUANTIZE.reference([self.x], self.p)
            self.out[...] = y.transpose(0, 3, 1, 2) if self.nchw else y


KERNEL_SETS = {"reference": ReferenceKernels(), "fast": FastKernels()}
DEFAULT_KERNELS = "fast"
