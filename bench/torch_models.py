"""Float PyTorch models for the benchmark suite: ResNet-18, MobileNetV2 and a small 28x28 CNN
with random, fixed-seed weights (torchvision is not available, so the well-known shapes are
defined here), EfficientNet-Lite0 with its ImageNet weights (bench.fixtures.real_models), and
single convolutions and a GEMM, to compare kernels one shape at a time, and a fully-connected
stack (the MLP) for the quantization-scheme comparison of bench.schemes."""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn


def _init(module: nn.Module, seed: int) -> nn.Module:
    """Deterministic He-style weights and non-trivial batch-norm statistics, then eval()."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.01)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1.0 + 0.1 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(1.0 + 0.1 * torch.rand(n, generator=g))
    return module.eval()


# ---------------------------------------------------------------- small CNN

class SmallCNN(nn.Module):
    """1x28x28 -> 10 classes; about 3.9 MMAC."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.relu(self.c1(x))
        x = self.relu(self.c2(x))
        x = self.relu(self.c3(x))
        return self.fc(torch.flatten(self.pool(x), 1))


# ---------------------------------------------------------------- ResNet-18

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + idt)


class ResNet18(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


# ---------------------------------------------------------------- MobileNetV2

def _cbr(cin, cout, k, stride, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_cbr(cin, hidden, 1, 1)]
        layers += [_cbr(hidden, hidden, 3, stride, groups=hidden), _cbr(hidden, cout, 1, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, cin = [_cbr(3, 32, 3, 2)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_cbr(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# ---------------------------------------------------------------- MLP

class MLP(nn.Module):
    """A fully-connected stack: `layers` nn.Linear of width x width, ReLU between them (not
    after the last); 1 x width -> 1 x width. At width 1024 and 4 layers, 4.2 MMAC per row."""

    def __init__(self, width: int = 1024, layers: int = 4):
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.relu = nn.ReLU()

    def forward(self, x):
        for i, fc in enumerate(self.fc):
            x = fc(x)
            if i + 1 < len(self.fc):
                x = self.relu(x)
        return x


class Encoder(nn.Module):
    """A BERT-like encoder on embeddings: `layers` post-norm blocks of `heads`-head
    self-attention (written as MatMuls, as exporters emit them) and a GELU MLP of 4 x width, over
    [1, seq, width] float features (ids and their embedding table left out: every runtime
    compared here reads float input)."""

    def __init__(self, width: int = 256, heads: int = 4, layers: int = 4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.ModuleList(nn.Linear(width, 3 * width) for _ in range(layers))
        self.out = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
                                 for _ in range(layers))
        self.norm1 = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.norm2 = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))

    def forward(self, x):
        b, t, d = x.shape
        h = self.heads
        for qkv, out, ffn, n1, n2 in zip(self.qkv, self.out, self.ffn, self.norm1, self.norm2):
            q, k, v = qkv(x).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-1, -2) * (d // h) ** -0.5, dim=-1)
            x = n1(x + out((att @ v).transpose(1, 2).reshape(b, t, d)))
            x = n2(x + ffn(x))
        return x


class Recurrent(nn.Module):
    """An LSTM over [1, steps, inputs] float features (batch first), its output sequence: the
    acoustic-model shape of speech and sensor models."""

    def __init__(self, inputs: int = 64, hidden: int = 256):
        super().__init__()
        self.lstm = nn.LSTM(inputs, hidden, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


# ---------------------------------------------------------------- the suite

def _efficientnet_lite0():
    from bench.fixtures.real_models import efficientnet_lite0
    return efficientnet_lite0()


@dataclasses.dataclass(frozen=True)
class Entry:
    make: Callable[[], nn.Module]
    shape: tuple                # the input at batch 1 (the GEMM: its 1024 rows)
    title: str
    single_op: bool = False     # one conv or GEMM: fixed shape, timed at batch 1 only
    pretrained: bool = False    # keeps the weights it comes with
    in_suite: bool = True       # in `python -m bench`'s default model list


MODELS = {
    "small_cnn": Entry(SmallCNN, (1, 1, 28, 28), "small CNN 28²"),
    "resnet18": Entry(ResNet18, (1, 3, 224, 224), "ResNet-18 224²"),
    "mobilenet_v2": Entry(MobileNetV2, (1, 3, 224, 224), "MobileNetV2 224²"),
    "efficientnet_lite0": Entry(_efficientnet_lite0, (1, 3, 224, 224), "EfficientNet-Lite0 224²",
                                pretrained=True),
    # nn.Sequential: FX quantization handles a convolution as a submodule, not as the root
    "conv3x3": Entry(lambda: nn.Sequential(nn.Conv2d(64, 64, 3, padding=1)), (1, 64, 56, 56),
                     "conv 3x3 56x56x64->64", single_op=True),
    "conv1x1": Entry(lambda: nn.Sequential(nn.Conv2d(128, 256, 1)), (1, 128, 28, 28),
                     "conv 1x1 28x28x128->256", single_op=True),
    "depthwise3x3": Entry(lambda: nn.Sequential(nn.Conv2d(144, 144, 3, padding=1, groups=144)),
                          (1, 144, 56, 56), "depthwise 3x3 56x56x144", single_op=True),
    "gemm1024": Entry(lambda: nn.Sequential(nn.Linear(1024, 1024)), (1024, 1024),
                      "GEMM 1024x1024x1024 (fully connected, 1024 rows)", single_op=True),
    # the FC stack of bench.schemes (`python -m bench --models mlp` times it too)
    "mlp": Entry(MLP, (1, 1024), "MLP 4 x Linear 1024->1024, ReLU", in_suite=False),
    "mlp_small": Entry(lambda: MLP(256, 2), (1, 256), "MLP 2 x Linear 256->256, ReLU (smoke tests)",
                       in_suite=False),
    "encoder": Entry(Encoder, (1, 128, 256), "BERT-like encoder, 4 layers, width 256, 4 heads, sequence 128",
                     in_suite=False),
    "encoder_small": Entry(lambda: Encoder(64, 2, 1), (1, 16, 64), "encoder, 1 layer, width 64, sequence 16 (smoke tests)",
                           in_suite=False),
    # one layer, exported at batch 1 (torch fixes an LSTM's batch in the export): timed as a single op
    "lstm": Entry(Recurrent, (1, 100, 64), "LSTM 64->256, 100 steps", single_op=True, in_suite=False),
    "lstm_small": Entry(lambda: Recurrent(8, 16), (1, 10, 8), "LSTM 8->16, 10 steps (smoke tests)", single_op=True,
                        in_suite=False),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple]:
    """(float eval-mode module, fixed-seed weights unless pretrained; input shape at batch 1)."""
    entry = MODELS[name]
    torch.manual_seed(seed)
    module = entry.make()
    return (module.eval() if entry.pretrained else _init(module, seed)), entry.shape
