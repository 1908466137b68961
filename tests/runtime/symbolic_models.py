"""Models with symbols (SPEC.md section 2.15) for tests/runtime/test_symbolic.py and
tests/format/test_symbols.py, each also buildable as the same model cut to one size and written
without symbols: build(size=None) is the model with its symbols, build(size=S) the static model
at S (every shape there, constants cut to their corners by hand)."""
from __future__ import annotations

import numpy as np

from qrt.format import (BatchMatMulOptions, Conv2DOptions, DType, LayerNormOptions, Layout, ModelBuilder, OpCode,
                        SoftmaxOptions)
from qrt.format.model import SymbolicDim

I8 = DType.INT8


class _Sized:
    """A ModelBuilder that writes one model either with a symbol (size None) or at one size."""

    def __init__(self, name: str, symbol: str, max_size: int, min_size: int, size):
        self.b = ModelBuilder(name)
        self.size = size
        self.n = max_size if size is None else size  # the symbol's value in the stored shapes
        if size is None:
            self.b.symbol(symbol, max_size, min_size)

    def dim(self, d: SymbolicDim) -> int:
        """The stored value of a dimension that follows the symbol by d."""
        return d.at(self.n)

    def tensor(self, name, dtype, shape, data=None, **kw):
        """shape: ints, or SymbolicDims (of symbol 0) for the dimensions that vary; constants
        given at the max are cut to their corner in the static build."""
        dims = [(a, d) for a, d in enumerate(shape) if isinstance(d, SymbolicDim)]
        shape = tuple(self.dim(d) if isinstance(d, SymbolicDim) else d for d in shape)
        if data is not None:
            data = np.asarray(data)[tuple(slice(0, s) for s in shape)]
        symbolic = [SymbolicDim(a, 0, d.multiplier, d.offset, d.divisor) for a, d in dims] if self.size is None else ()
        return self.b.tensor(name, dtype, shape, data, symbolic_dims=symbolic, **kw)


T_ = SymbolicDim(0, 0)  # the symbol itself (its axis is set where it is used)


def attention(size=None, max_size: int = 12, min_size: int = 1, seed: int = 0):
    """x [1, T, 16] -> FULLY_CONNECTED -> ADD a position table [T, 16] (the corner of a
    [max, 16] constant) -> LAYER_NORM -> BATCH_MATMUL(h, h, transpose_b) [1, T, T] -> SOFTMAX
    with a causal mask [1, T, T] (the corner of a [1, max, max] constant) -> y [1, T, T]."""
    rng = np.random.default_rng(seed)
    m = _Sized("attention", "sequence", max_size, min_size, size)
    d = 16
    x = m.tensor("x", I8, (1, T_, d), scale=0.05, zero_point=-3)
    ws = rng.uniform(0.005, 0.02, d).astype(np.float32)
    w = m.tensor("fc.weight", I8, (d, d), data=rng.integers(-127, 128, (d, d)), scale=ws)
    bias = m.tensor("fc.bias", DType.INT32, (d,), data=rng.integers(-3000, 3000, d), scale=np.float32(0.05) * ws)
    h1 = m.tensor("h1", I8, (1, T_, d), scale=0.08, zero_point=2)
    m.b.op(OpCode.FULLY_CONNECTED, [x, w, bias], [h1], name="fc")
    pos = m.tensor("pos", I8, (T_, d), data=rng.integers(-128, 128, (max_size, d)), scale=0.04, zero_point=0)
    h2 = m.tensor("h2", I8, (1, T_, d), scale=0.1, zero_point=0)
    m.b.op(OpCode.ADD, [h1, pos], [h2], name="add_pos")
    gamma = m.tensor("ln.gamma", DType.FLOAT32, (d,), data=rng.normal(1, 0.3, d))
    beta = m.tensor("ln.beta", DType.FLOAT32, (d,), data=rng.normal(0, 0.2, d))
    h3 = m.tensor("h3", I8, (1, T_, d), scale=0.03, zero_point=-4)
    m.b.op(OpCode.LAYER_NORM, [h2, gamma, beta], [h3], LayerNormOptions(1e-5), name="ln")
    s = m.tensor("scores", I8, (1, T_, T_), scale=0.05, zero_point=0)
    m.b.op(OpCode.BATCH_MATMUL, [h3, h3], [s], BatchMatMulOptions(True), name="scores")
    causal = np.tril(np.ones((max_size, max_size), np.int32))[None]
    mask = m.tensor("causal", DType.INT32, (1, T_, T_), data=causal)
    y = m.tensor("y", I8, (1, T_, T_), scale=1 / 256, zero_point=-128)
    m.b.op(OpCode.SOFTMAX, [s, mask], [y], SoftmaxOptions(-1, 1.0), name="softmax")
    m.b.input("x", x)
    m.b.output("y", y)
    return m.b.build()


def signal(size=None, max_size: int = 16, min_size: int = 1, seed: int = 1):
    """x [1, L, 8] -> RESHAPE [1, 1, L, 8] -> CONV_2D (1x3, stride 2, padding 1) [1, 1,
    floor((L + 1) / 2), 12] -> RESHAPE -> y [1, floor((L + 1) / 2), 12]."""
    rng = np.random.default_rng(seed)
    m = _Sized("signal", "length", max_size, min_size, size)
    c, co = 8, 12
    half = SymbolicDim(0, 0, 1, 1, 2)  # floor((L + 1) / 2)
    x = m.tensor("x", I8, (1, T_, c), scale=0.05, zero_point=1)
    x4 = m.tensor("x4", I8, (1, 1, T_, c), scale=0.05, zero_point=1)
    m.b.op(OpCode.RESHAPE, [x], [x4], name="to_image")
    ws = rng.uniform(0.005, 0.02, co).astype(np.float32)
    w = m.tensor("conv.weight", I8, (co, 1, 3, c), data=rng.integers(-127, 128, (co, 1, 3, c)), scale=ws)
    bias = m.tensor("conv.bias", DType.INT32, (co,), data=rng.integers(-2000, 2000, co), scale=np.float32(0.05) * ws)
    y4 = m.tensor("y4", I8, (1, 1, half, co), scale=0.06, zero_point=-5)
    m.b.op(OpCode.CONV_2D, [x4, w, bias], [y4], Conv2DOptions(stride_w=2, pad_left=1, pad_right=1), name="conv")
    y = m.tensor("y", I8, (1, half, co), scale=0.06, zero_point=-5)
    m.b.op(OpCode.RESHAPE, [y4], [y], name="to_signal")
    m.b.input("x", x)
    m.b.output("y", y)
    return m.b.build()


def image(size=None, max_size: int = 10, min_size: int = 3, seed: int = 2):
    """An NCHW input [1, 3, 4, W] (stored [1, 4, W, 3], W symbolic on stored axis 2, the user's
    axis 3) -> CONV_2D 3x3, padding 1 -> NCHW output [1, 5, 4, W]."""
    rng = np.random.default_rng(seed)
    m = _Sized("image", "width", max_size, min_size, size)
    x = m.tensor("x", I8, (1, 4, T_, 3), scale=0.05, zero_point=-128)
    ws = rng.uniform(0.005, 0.02, 5).astype(np.float32)
    w = m.tensor("conv.weight", I8, (5, 3, 3, 3), data=rng.integers(-127, 128, (5, 3, 3, 3)), scale=ws)
    bias = m.tensor("conv.bias", DType.INT32, (5,), data=rng.integers(-2000, 2000, 5), scale=np.float32(0.05) * ws)
    y = m.tensor("y", I8, (1, 4, T_, 5), scale=0.1, zero_point=3)
    m.b.op(OpCode.CONV_2D, [x, w, bias], [y], Conv2DOptions(pad_top=1, pad_left=1, pad_bottom=1, pad_right=1),
           name="conv")
    m.b.input("x", x, Layout.NCHW)
    m.b.output("y", y, Layout.NCHW)
    return m.b.build()


def pair(size=None, max_size: int = 8, min_size: int = 2):
    """Two inputs a, b [1, T, 4] that share the symbol -> ADD -> y [1, T, 4]."""
    m = _Sized("pair", "sequence", max_size, min_size, size)
    a = m.tensor("a", I8, (1, T_, 4), scale=0.05, zero_point=0)
    b = m.tensor("b", I8, (1, T_, 4), scale=0.05, zero_point=0)
    y = m.tensor("y", I8, (1, T_, 4), scale=0.1, zero_point=0)
    m.b.op(OpCode.ADD, [a, b], [y], name="add")
    m.b.input("a", a)
    m.b.input("b", b)
    m.b.output("y", y)
    return m.b.build()


# name -> (build, its symbol's min and max, the symbol's axis on the user's input array)
MODELS = {"attention": (attention, 1, 12, 1), "signal": (signal, 1, 16, 1), "image": (image, 3, 10, 3)}


# ---------------------------------------------------------------------------- one op each
# The ops whose options bear on shapes (and a few windowed ones) with a symbolic dimension: each
# builder(size) is a model x [1, T, 16] (or ids [1, T]) -> the op -> y, with (min, max).

def _op_case(opcode, out_shape, options=None, min_size=1, max_size=9, x_shape=None, inputs=None,
             y_quant=None, dtype=I8):
    def build(size=None):
        m = _Sized(opcode.name.lower(), "sequence", max_size, min_size, size)
        x = m.tensor("x", dtype, x_shape or (1, T_, 16), **({} if dtype != I8 else dict(scale=0.05, zero_point=-2)))
        ins = [x] if inputs is None else inputs(m, x)
        y = m.tensor("y", I8, out_shape, **(y_quant or dict(scale=0.05, zero_point=-2)))
        m.b.op(opcode, ins, [y], options, name=opcode.name.lower())
        m.b.input("x", x)
        m.b.output("y", y)
        return m.b.build()
    return build, min_size, max_size


def op_cases():
    from qrt.format import (ConcatOptions, GatherOptions, MeanOptions, PadOptions, Pool2DOptions,
                            DepthwiseConv2DOptions, SliceOptions, TransposeOptions)
    S = SymbolicDim
    rng = np.random.default_rng(3)
    table = rng.integers(-128, 128, (20, 8))
    ws = rng.uniform(0.005, 0.02, 8).astype(np.float32)
    w, bias = rng.integers(-127, 128, (1, 1, 3, 8)), rng.integers(-500, 500, 8)

    def dw_params(m):
        return [m.tensor("dw.weight", I8, (1, 1, 3, 8), data=w, scale=ws, axis=3),
                m.tensor("dw.bias", DType.INT32, (8,), data=bias, scale=np.float32(0.05) * ws)]
    return {
        "reshape": _op_case(OpCode.RESHAPE, (1, T_, 4, 4)),
        "slice": _op_case(OpCode.SLICE, (1, S(0, 0, 1, -1), 8), SliceOptions((0, 1, 0), (1, 1, 2)), min_size=2),
        "slice_stride": _op_case(OpCode.SLICE, (1, S(0, 0, 1, 1, 2), 16), SliceOptions((0, 0, 0), (1, 2, 1))),
        "pad": _op_case(OpCode.PAD, (1, S(0, 0, 1, 3), 16), PadOptions((0, 1, 0, 0, 2, 0))),
        "transpose": _op_case(OpCode.TRANSPOSE, (1, 16, T_), TransposeOptions((0, 2, 1))),
        "concat_self": _op_case(OpCode.CONCAT, (1, S(0, 0, 2), 16), ConcatOptions(1),
                                                inputs=lambda m, x: [x, x]),
        "concat_channels": _op_case(OpCode.CONCAT, (1, T_, 32), ConcatOptions(2), inputs=lambda m, x: [x, x]),
        "mean": _op_case(OpCode.MEAN, (1, 16), MeanOptions((1,), False)),
        "softmax": _op_case(OpCode.SOFTMAX, (1, 16, T_), y_quant=dict(scale=1 / 256, zero_point=-128),
                            x_shape=(1, 16, T_)),
        "gather": _op_case(OpCode.GATHER, (1, T_, 8), GatherOptions(0), x_shape=(1, T_), dtype=DType.INT32,
                           inputs=lambda m, x: [m.tensor("table", I8, (20, 8), data=table, scale=0.05, zero_point=-2), x]),
        "max_pool": _op_case(OpCode.MAX_POOL_2D, (1, 1, S(0, 0, 1, 0, 2), 16), Pool2DOptions(1, 2, 1, 2),
                             x_shape=(1, 1, T_, 16), min_size=2),
        "average_pool": _op_case(OpCode.AVERAGE_POOL_2D, (1, 1, T_, 16),
                                 Pool2DOptions(1, 3, 1, 1, pad_left=1, pad_right=1), x_shape=(1, 1, T_, 16)),
        "depthwise": _op_case(OpCode.DEPTHWISE_CONV_2D, (1, 1, S(0, 0, 1, 1, 2), 8),
                              DepthwiseConv2DOptions(stride_w=2, pad_left=1, pad_right=1), x_shape=(1, 1, T_, 8),
                              inputs=lambda m, x: [x] + dw_params(m)),
    }
