"""Int8 models with random weights in the shapes of well-known networks, built directly as
.qmodel (no converter needed): for benchmarks, memory figures and whole-graph tests.

    python -m bench.models resnet18 -o resnet18.qmodel [--size 224] [--width 64]
"""
from __future__ import annotations

import argparse

import numpy as np

from qrt.format import (
    Activation, Conv2DOptions, DType, Layout, MeanOptions, Metadata, ModelBuilder, OpCode,
    Pool2DOptions,
)


class _Net:
    """Adds quantized layers with plausible random scales to a ModelBuilder."""

    def __init__(self, name: str, seed: int):
        self.b = ModelBuilder(name)
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def act(self, shape, scale=None, zp=None):
        self.count += 1
        scale = float(self.rng.uniform(0.02, 0.08)) if scale is None else scale
        zp = int(self.rng.integers(-128, -100)) if zp is None else zp
        return self.b.tensor(f"t{self.count}", DType.INT8, shape, scale=scale, zero_point=zp)

    def shape(self, t):
        return self.b.model.tensors[t].shape

    def conv(self, x, cout, k, stride=1, relu=True, name="conv"):
        n, h, w, cin = self.shape(x)
        pad = k // 2
        oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        sx = float(self.b.model.tensors[x].quant.scale[0])
        ws = self.rng.uniform(0.002, 0.01, cout).astype(np.float32)
        wq = self.rng.integers(-127, 128, (cout, k, k, cin), dtype=np.int8)
        w = self.b.tensor(f"{name}.weight", DType.INT8, wq.shape, wq, scale=ws)
        bias = self.b.tensor(f"{name}.bias", DType.INT32, (cout,), self.rng.integers(-2000, 2000, cout),
                             scale=np.float32(sx) * ws)
        y = self.act((n, oh, ow, cout))
        self.b.op(OpCode.CONV_2D, [x, w, bias], [y],
                  Conv2DOptions(stride, stride, pad_top=pad, pad_left=pad, pad_bottom=pad, pad_right=pad),
                  Activation.RELU if relu else Activation.NONE, name=name)
        return y

    def add_relu(self, a, c, name):
        y = self.act(self.shape(a))
        self.b.op(OpCode.ADD, [a, c], [y], activation=Activation.RELU, name=name)
        return y


def resnet18(size: int = 224, width: int = 64, classes: int = 1000, seed: int = 0):
    """ResNet-18 (basic blocks, [2, 2, 2, 2]) with an NCHW float-quantized interface."""
    net = _Net("resnet18", seed)
    b = net.b
    x = net.act((1, size, size, 3), scale=0.0186, zp=-14)
    b.input("input", x, Layout.NCHW)
    y = net.conv(x, width, 7, 2, name="conv1")
    n, h, w, c = net.shape(y)
    p = net.act((n, (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1, c), *[float(b.model.tensors[y].quant.scale[0]),
                                                                      int(b.model.tensors[y].quant.zero_point[0])])
    b.op(OpCode.MAX_POOL_2D, [y], [p], Pool2DOptions(3, 3, 2, 2, 1, 1, 1, 1), name="maxpool")
    y = p
    for stage, blocks in enumerate((2, 2, 2, 2)):
        cout = width * 2**stage
        for blk in range(blocks):
            stride = 2 if stage > 0 and blk == 0 else 1
            name = f"layer{stage + 1}.{blk}"
            h1 = net.conv(y, cout, 3, stride, name=f"{name}.conv1")
            h2 = net.conv(h1, cout, 3, 1, relu=False, name=f"{name}.conv2")
            short = y if stride == 1 and net.shape(y)[3] == cout else net.conv(
                y, cout, 1, stride, relu=False, name=f"{name}.downsample")
            y = net.add_relu(h2, short, f"{name}.add")
    n, h, w, c = net.shape(y)
    pooled = net.act((n, c))
    b.op(OpCode.MEAN, [y], [pooled], MeanOptions((1, 2)), name="avgpool")
    sx = float(b.model.tensors[pooled].quant.scale[0])
    ws = net.rng.uniform(0.002, 0.01, classes).astype(np.float32)
    wq = net.rng.integers(-127, 128, (classes, c), dtype=np.int8)
    w = b.tensor("fc.weight", DType.INT8, wq.shape, wq, scale=ws)
    bias = b.tensor("fc.bias", DType.INT32, (classes,), net.rng.integers(-2000, 2000, classes), scale=np.float32(sx) * ws)
    logits = net.act((n, classes), scale=0.1, zp=0)
    b.op(OpCode.FULLY_CONNECTED, [pooled, w, bias], [logits], name="fc")
    b.output("logits", logits)
    return b.build(Metadata(producer="qrt bench.models", producer_version="0.1.0",
                            properties={"weights": f"random, seed {seed}"}))


MODELS = {"resnet18": resnet18}


def main(argv=None) -> int:
    import qrt

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("-o", "--output", required=True, help="where to write the .qmodel")
    parser.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument("--width", type=int, default=64, help="channels of the first stage (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model = MODELS[args.model](size=args.size, width=args.width, seed=args.seed)
    size = qrt.write_model(model, args.output)
    print(f"wrote {args.output}: {size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
