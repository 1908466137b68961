"""qrt against an independent implementation: ONNX Runtime's QLinear* ops on the same
quantized parameters. ONNX Runtime rounds in float, so a difference of one is allowed at
near-ties; anything larger is a bug. The agreement table: python -m tests.runtime.oracle"""
import pytest

from tests.runtime.oracle import CASES, agreement


@pytest.mark.parametrize("name", list(CASES))
def test_agrees_with_onnxruntime(name):
    r = agreement(name, trials=25, seed=11)
    assert r["outputs"] > 100, r
    assert r["max_diff"] <= 1, r
    assert r["identical"] >= 0.98, r
