"""The requantization kernels (the scalar rule, and the vector code of every instruction-set
path this machine supports) are bit-exact with the NumPy reference (SPEC.md section 4)."""
import math

import numpy as np
import pytest

from qrt.errors import InvalidModelError
from qrt.kernels import isa as ISA
from qrt.kernels.requantize import requantize_int8
from qrt.numerics import quantize_multiplier, requantize


@pytest.mark.parametrize("real", [1e-12, 2**-40, 1e-6, 0.0001234, 0.3, 0.5, 0.75, 0.9999999, 1.0, 3.7, 1000.0, 2**29])
def test_multiplier_encodes_real_within_half_ulp(real):
    m, n = quantize_multiplier(real)
    assert 1 <= n <= 62 and 0 <= m < 2**31
    if n < 62:
        assert 2**30 <= m < 2**31
        assert abs(m * 2.0**-n - real) <= 2.0**(-n - 1)


def test_multiplier_rounding_carry_and_limits():
    assert quantize_multiplier(math.nextafter(1.0, 0)) == (2**30, 30)  # mantissa rounds up to 2^31
    with pytest.raises(InvalidModelError, match="too large"):
        quantize_multiplier(2.0**31)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidModelError):
            quantize_multiplier(bad)


def test_reference_rounds_half_toward_plus_infinity():
    m, n = 2**30, 31  # M = 0.5
    acc = np.array([1, 3, -1, -3, 2, -2])
    assert requantize(acc, m, n, 0, -128, 127).tolist() == [1, 2, 0, -1, 1, -1]


@pytest.mark.parametrize("below_quarter", [False, True])
@pytest.mark.parametrize("path", [None] + ISA.supported())
def test_kernel_is_bit_exact_with_reference(path, below_quarter):
    """below_quarter: every real multiplier < 1/4 (shifts >= 33), where the vector paths use
    their 32-bit form (simd/requant.h)."""
    rng = np.random.default_rng(0)
    for trial in range(40):
        rows, ch = rng.integers(1, 50), rng.integers(1, 70)
        acc = rng.integers(-2**31, 2**31, (rows, ch), dtype=np.int64).astype(np.int32)
        acc[0, :] = np.resize([-(2**31), 2**31 - 1, 0, -1, 1], ch)  # extremes
        top = 0.25 * (1 - 2**-30) if below_quarter else 100  # the largest with m < 2^31, n = 33
        reals = np.exp(rng.uniform(np.log(1e-12), np.log(top), ch))
        reals[0] = top if below_quarter else 0.75  # shifts 33 and 31
        assert below_quarter == all(quantize_multiplier(r)[1] >= 33 for r in reals)
        mn = [quantize_multiplier(r) for r in reals]
        m = np.array([x for x, _ in mn], dtype=np.int32)
        n = np.array([y for _, y in mn], dtype=np.int32)
        zp = int(rng.choice([-128, 127, 0, int(rng.integers(-128, 128))]))
        lo, hi = sorted(rng.integers(-128, 128, 2)) if trial % 3 == 0 else (-128, 127)
        want = requantize(acc, m, n, zp, lo, hi).astype(np.int8)
        got = requantize_int8(acc, m, n, zp, int(lo), int(hi), isa=path)
        assert np.array_equal(got, want), trial


def test_kernel_rejects_bad_arguments():
    acc = np.zeros((2, 3), np.int32)
    with pytest.raises(ValueError, match="per channel"):
        requantize_int8(acc, np.ones(2, np.int32), np.ones(3, np.int32), 0, -128, 127)
    with pytest.raises(ValueError, match="shift"):
        requantize_int8(acc, np.ones(3, np.int32), np.zeros(3, np.int32), 0, -128, 127)
