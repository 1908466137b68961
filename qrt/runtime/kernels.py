"""Kernel sets: for every op code, a function (inputs, params, out) that writes `out`, and the
way to turn an operator into a bound Step of the compiled plan (qrt/kernels/step.pyx).

"reference" runs the NumPy spec (qrt/reference/ops.py); "fast" runs the compiled kernels
(qrt/kernels/), which must be bit-exact with it. QRT_KERNELS or qrt.load(kernels=...) chooses.
A fast op has bind(ins, params, out, isa=, threads=) -> Step, and may have pack(ins, params, isa=),
run once at load (weights into the kernel's layout), whose result bind then takes as packed=.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..format.model import OpCode
from ..kernels.step import PyStep
from ..reference import ops as R


@dataclass(frozen=True)
class KernelSet:
    name: str
    table: dict  # OpCode -> fn(inputs, params, out): run once
    # the graph boundary's QUANTIZE / DEQUANTIZE: conversion(quantize, x, params, out, nchw=,
    # isa=, threads=) -> a step with feed(x) (QUANTIZE) or into(out) (DEQUANTIZE) for the
    # user's float array of each run; nchw: the float side is NCHW, the integer side NHWC
    conversion: Callable
    binders: dict = field(default_factory=dict)  # OpCode -> bind(ins, params, out, isa=, threads=[, packed=])
    packers: dict = field(default_factory=dict)  # OpCode -> pack(ins, params), once at load

    def pack(self, opcode, ins, params, isa):
        fn = self.packers.get(opcode)
        return None if fn is None else fn(ins, params, isa=isa)

    def step(self, opcode, ins, params, out, isa, threads, packed=None):
        """The op bound to its buffers; a kernel without a compiled step runs through Python."""
        bind = self.binders.get(opcode)
        if bind is None:
            return PyStep(self.table[opcode], ins, params, out)
        if opcode in self.packers:
            return bind(ins, params, out, isa=isa, threads=threads, packed=packed)
        return bind(ins, params, out, isa=isa, threads=threads)


def _into(fn):
    """Adapt a reference op (returns its result) to the (inputs, params, out) convention."""
    def run(ins, p, out):
        out[...] = fn(ins, p).reshape(out.shape)
    return run


class _ReferenceConversion:
    """The reference set's graph-boundary conversion (see KernelSet.conversion)."""

    def __init__(self, quantize, x, p, out, nchw, isa=None, threads=1):
        self.quantize, self.x, self.p, self.out, self.nchw = quantize, x, p, out, nchw
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
            self.out[...] = R.quantize(self.x.transpose(0, 2, 3, 1) if self.nchw else self.x, self.p)
        else:
            y = R.dequantize(self.x, self.p)
            self.out[...] = y.transpose(0, 3, 1, 2) if self.nchw else y


REFERENCE = KernelSet(
    "reference",
    {
        OpCode.CONV_2D: _into(lambda i, p: R.conv_2d(i[0], i[1], i[2], p)),
        OpCode.DEPTHWISE_CONV_2D: _into(lambda i, p: R.depthwise_conv_2d(i[0], i[1], i[2], p)),
        OpCode.FULLY_CONNECTED: _into(lambda i, p: R.fully_connected(i[0], i[1], i[2], p)),
        OpCode.ADD: _into(lambda i, p: R.add(i[0], i[1], p)),
        OpCode.SUB: _into(lambda i, p: R.add(i[0], i[1], p)),
        OpCode.MUL: _into(lambda i, p: R.mul(i[0], i[1], p)),
        OpCode.CONCAT: _into(R.concat),
        OpCode.MAX_POOL_2D: _into(lambda i, p: R.max_pool_2d(i[0], p)),
        OpCode.AVERAGE_POOL_2D: _into(lambda i, p: R.average_pool_2d(i[0], p)),
        OpCode.MEAN: _into(lambda i, p: R.mean(i[0], p)),
        OpCode.PAD: _into(lambda i, p: R.pad(i[0], p)),
        OpCode.RESHAPE: _into(lambda i, p: i[0]),
        OpCode.TRANSPOSE: _into(lambda i, p: R.transpose(i[0], p)),
        OpCode.LEAKY_RELU: _into(lambda i, p: R.slope(i[0], p)),
        OpCode.PRELU: _into(lambda i, p: R.slope(i[0], p)),
        OpCode.LUT: _into(lambda i, p: R.lut(i[0], i[1])),
        OpCode.SOFTMAX: _into(lambda i, p: R.softmax(i[0], p)),
        OpCode.QUANTIZE: _into(lambda i, p: R.quantize(i[0], p)),
        OpCode.DEQUANTIZE: _into(lambda i, p: R.dequantize(i[0], p)),
        OpCode.REQUANTIZE: _into(lambda i, p: R.rescale(i[0], p)),
    },
    _ReferenceConversion,
)

def _fast() -> KernelSet:
    from ..kernels import depthwise, elementwise as E, gemm, pool

    table = {
        OpCode.CONV_2D: gemm.conv_2d,
        OpCode.DEPTHWISE_CONV_2D: depthwise.depthwise_conv_2d,
        OpCode.FULLY_CONNECTED: gemm.fully_connected,
        OpCode.ADD: E.add,
        OpCode.SUB: E.add,
        OpCode.MUL: E.mul,
        OpCode.CONCAT: E.concat,
        OpCode.MAX_POOL_2D: pool.max_pool_2d,
        OpCode.AVERAGE_POOL_2D: pool.average_pool_2d,
        OpCode.MEAN: pool.mean,
        OpCode.PAD: E.pad,
        OpCode.RESHAPE: E.reshape,
        OpCode.TRANSPOSE: E.transpose,
        OpCode.LEAKY_RELU: E.slope,
        OpCode.PRELU: E.slope,
        OpCode.LUT: E.lut,
        OpCode.SOFTMAX: E.softmax,
        OpCode.QUANTIZE: E.quantize,
        OpCode.DEQUANTIZE: E.dequantize,
        OpCode.REQUANTIZE: E.requantize,
    }
    # Every module's bind_<name> for the ops above that have one.
    binders = {op: getattr(m, "bind_" + fn.__name__) for op, fn in table.items()
               for m in (depthwise, E, gemm, pool) if fn.__module__ == m.__name__
               and hasattr(m, "bind_" + fn.__name__)}
    packers = {op: getattr(m, "pack_" + fn.__name__) for op, fn in table.items()
               for m in (depthwise, E, gemm, pool) if fn.__module__ == m.__name__
               and hasattr(m, "pack_" + fn.__name__)}
    def conversion(quantize, x, p, out, nchw, isa, threads):
        bind = E.bind_quantize if quantize else E.bind_dequantize
        return bind([x], p, out, isa=isa, threads=threads, nchw=nchw)

    return KernelSet("fast", table, conversion, binders, packers)


FAST = _fast()
KERNEL_SETS = {"reference": REFERENCE, "fast": FAST}
DEFAULT_KERNELS = "fast"
