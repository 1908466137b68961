"""Case makers the kernel tests share (tests/runtime/test_kernels_*.py): one-op models, random
shapes, scales, activations and broadcast partners, the int16 forms' weight scales. Each test
module keeps what is its own (value generators, checks)."""
from __future__ import annotations

import numpy as np
import pytest

from qrt import verify_model
from qrt.format import Activation, DType, ModelBuilder


class Spec:
    """One tensor of a one-op model: shape, dtype, quantization and (for constants) data."""

    def __init__(self, shape, dtype=DType.INT8, scale=None, zp=0, data=None, group_size=0):
        self.shape, self.dtype, self.scale, self.zp, self.data = tuple(shape), DType(dtype), scale, zp, data
        self.group_size = group_size  # weights per group (along axis 0's reduction)


def one_op(opcode, inputs, output, options=None, activation=Activation.NONE, clip=(0.0, 0.0)):
    """A verified model of one operator: inputs (Specs without data are the model's inputs) ->
    output."""
    b = ModelBuilder("one_op")
    ids = []
    for k, s in enumerate(inputs):
        kw = {} if s.scale is None else {"scale": s.scale, "zero_point": s.zp, "group_size": s.group_size}
        ids.append(b.tensor(f"in{k}", s.dtype, s.shape, s.data, **kw))
        if s.data is None:
            b.input(f"in{k}", ids[-1])
    kw = {} if output.scale is None else {"scale": output.scale, "zero_point": output.zp}
    y = b.tensor("out", output.dtype, output.shape, **kw)
    b.op(opcode, ids, [y], options, activation, clip)
    b.output("out", y)
    model = b.build()
    verify_model(model)
    return model


def inputs_of(model, rng, draw):
    """Input arrays for the one-op model's operator: constants as stored, run-time tensors from
    draw(rng, shape, dtype)."""
    ins = []
    for t in model.operators[0].inputs:
        tensor = model.tensors[t]
        ins.append(tensor.data if tensor.data is not None else draw(rng, tensor.shape, tensor.dtype))
    return ins


def rand_scale(rng, lo=-4, hi=1):
    """A float32 scale 10^u, u uniform in [lo, hi]."""
    return float(np.float32(10.0 ** rng.uniform(lo, hi)))


def rand_shape(rng, max_rank=5, max_dim=6):
    rank = int(rng.integers(0, max_rank + 1))
    return tuple(int(d) for d in rng.integers(1, max_dim + 1, rank))


def rand_activation(rng):
    act = Activation(int(rng.integers(0, 4)))
    clip = (0.0, 0.0)
    if act == Activation.CLIP:
        a, b = sorted(float(np.float32(v)) for v in rng.uniform(-8, 8, 2))
        clip = (a, b)
    return act, clip


def broadcast_partner(rng, out_shape):
    """A shape that broadcasts to out_shape: leading dimensions dropped, some set to 1."""
    drop = int(rng.integers(0, len(out_shape) + 1))
    s = list(out_shape[drop:])
    mode = rng.integers(0, 4)
    if mode == 0:
        return tuple(s)  # same trailing dimensions
    if mode == 1:
        return () if rng.random() < 0.5 else (1,) * len(s)  # a scalar
    return tuple(1 if rng.random() < 0.5 else d for d in s)


def int16_scales(rng, channels: int, per_channel: bool, pow2: bool):
    """(s_x, s_w) of an int16 form's weighted op: s_w a float32 scalar or one per channel; powers
    of two make the multipliers exact powers of two, whose products meet exact ties (x.5)."""
    size = channels if per_channel else None
    if pow2:
        s_x = np.float32(2.0 ** -int(rng.integers(8, 14)))
        s_w = np.exp2(-rng.integers(5, 9, size=size)).astype(np.float32)
    else:
        s_x = np.float32(rng.uniform(1e-4, 1e-3))
        s_w = np.asarray(rng.uniform(0.001, 0.05, size=size), np.float32)
    return s_x, (s_w if per_channel else np.float32(s_w))


def assert_refused(kernel, ins, p, out):
    """kernel(ins, p, out) raises ValueError and leaves out as it was."""
    before = out.copy() if out.flags.c_contiguous else None
    with pytest.raises(ValueError):
        kernel(ins, p, out)
    if before is not None:
        assert np.array_equal(before.view(np.uint8), out.view(np.uint8)), "a refused call wrote to out"
