"""converters/calibration.py (range methods, qparams, weights) and converters/data.py
(calibration sources, errors, progress, hold-out)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from qrt.converters import calibration as C
from qrt.converters import data as D
from qrt.converters.errors import CalibrationDataError, ConversionError

N = 1_000_000
RANGE_METHODS = ("minmax", "moving_average", "percentile", "entropy", "mse", "aciq")


def stats_of(x, batches=10, name="t"):
    st = C.TensorStats(name)
    parts = np.array_split(np.asarray(x), batches)
    for b in parts:
        st.update_range(b)
    st.finish_ranges()
    for b in parts:
        st.update_histogram(b)
    return st


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def gauss(rng):
    return rng.standard_normal(N)


@pytest.fixture(scope="module")
def dists(rng, gauss):
    g_out = gauss.copy()
    g_out[:2] = [50.0, -50.0]  # 2 ppm of outliers at 50 sigma
    rng.shuffle(g_out)
    return {
        "uniform": stats_of(rng.uniform(-1, 1, N)),
        "gauss": stats_of(gauss),
        "laplace": stats_of(rng.laplace(0, 1, N)),
        "relu": stats_of(np.maximum(gauss, 0)),
        "outliers": stats_of(g_out),
    }


@pytest.fixture(scope="module")
def ranges(dists):
    return {d: {m: C.choose_range(st, m) for m in C.METHODS} for d, st in dists.items()}


# --------------------------------------------------------------------------- every method


@pytest.mark.parametrize("dist", ["uniform", "gauss", "laplace", "relu", "outliers"])
def test_every_range_contains_zero_and_stays_inside_observed(dists, ranges, dist):
    st = dists[dist]
    for m in C.METHODS:
        lo, hi, used = ranges[dist][m]
        assert lo <= 0.0 <= hi, (m, lo, hi)
        assert min(st.min, 0) - 1e-12 <= lo and hi <= max(st.max, 0) + 1e-12, (m, lo, hi)
        assert hi - lo > 0
        assert used == m if m != "auto" else used in RANGE_METHODS


def test_uniform(dists, ranges):
    r = ranges["uniform"]
    assert r["minmax"][:2] == pytest.approx((-1, 1), abs=1e-4)
    assert r["percentile"][:2] == pytest.approx((-0.9998, 0.9998), abs=2e-3)
    for m in ("entropy", "mse", "aciq"):  # nothing worth clipping in a uniform distribution
        assert r[m][0] < -0.98 and r[m][1] > 0.98, (m, r[m])
    assert r["auto"][2] == "minmax"  # no method beats it by more than the tie margin


def test_gaussian(dists, ranges, gauss):
    r = ranges["gauss"]
    fit = C.aciq_fit(dists["gauss"])
    assert fit["chosen"] == "gauss" and fit["gauss"][1] == pytest.approx(1.0, abs=0.01)
    assert r["aciq"][:2] == pytest.approx((-3.92, 3.92), abs=0.05)  # Banner et al.: 3.92 sigma
    st = dists["gauss"]
    assert r["percentile"][:2] == pytest.approx(np.percentile(gauss, [0.01, 99.99]), abs=st.bin_width)
    assert r["percentile"][:2] == pytest.approx((-3.719, 3.719), abs=0.15)  # N(0,1) 99.99 %
    lo, hi, _ = r["mse"]  # the MSE optimum of a Gaussian at 8 bits is ~3.92 sigma
    assert 3.6 < -lo < 4.3 and 3.6 < hi < 4.3
    lo, hi, _ = r["entropy"]
    assert 3.0 < -lo < 5.0 and 3.0 < hi < 5.0
    assert lo == pytest.approx(-hi)  # symmetric search on a symmetric tensor


def test_laplace(dists, ranges):
    r = ranges["laplace"]
    fit = C.aciq_fit(dists["laplace"])
    assert fit["chosen"] == "laplace" and fit["laplace"][1] == pytest.approx(1.0, abs=0.01)
    assert r["aciq"][:2] == pytest.approx((-9.89, 9.89), abs=0.15)  # 9.89 b
    assert r["percentile"][:2] == pytest.approx((-math.log(5000), math.log(5000)), abs=0.25)
    lo, hi, _ = r["mse"]
    assert 9.0 < -lo < 11.0 and 9.0 < hi < 11.0


def test_relu_one_sided(dists, ranges):
    r = ranges["relu"]
    for m in C.METHODS:
        assert r[m][0] == 0.0, m
    fit = C.aciq_fit(dists["relu"])
    assert fit["chosen"] == "half_normal"
    assert r["aciq"][1] == pytest.approx(4.22, abs=0.06)  # [0, 4.22 sigma]: 9-bit symmetric case
    assert r["mse"][1] == pytest.approx(4.2, abs=0.25)
    assert r["percentile"][1] == pytest.approx(3.719, abs=0.15)  # half the mass is at 0
    assert 2.5 < r["entropy"][1] <= dists["relu"].max


def test_negative_one_sided_mirrors_positive(gauss):
    pos = stats_of(np.maximum(gauss[:200_000], 0))
    neg = stats_of(-np.maximum(gauss[:200_000], 0))
    for m in RANGE_METHODS:
        lo_p, hi_p, _ = C.choose_range(pos, m)
        lo_n, hi_n, _ = C.choose_range(neg, m)
        assert hi_n == 0.0 and lo_p == 0.0
        assert -lo_n == pytest.approx(hi_p, rel=2e-3), m


def test_outliers_are_clipped_except_by_minmax(dists, ranges):
    r = ranges["outliers"]
    assert r["minmax"][:2] == (-50.0, 50.0)
    for m in ("percentile", "entropy", "mse", "aciq"):
        lo, hi, _ = r[m]
        assert -lo < 20 and hi < 20, (m, lo, hi)
    lo, hi, used = r["auto"]
    assert used != "minmax"
    st = dists["outliers"]
    assert C.sqnr_db(st, lo, hi) > C.sqnr_db(st, -50.0, 50.0) + 3.0


def test_auto_reports_every_method_and_picks_the_best(dists):
    st = dists["laplace"]
    scores = C.evaluate_methods(st)
    assert set(scores) == set(RANGE_METHODS)
    lo, hi, used = C.auto(st)
    best = max(s for _, _, s in scores.values())
    assert scores[used][2] >= best - C.AUTO_TIE_DB
    assert (lo, hi) == scores[used][:2]


@pytest.mark.parametrize("value", [3.0, -2.0, 0.25])
def test_constant_tensor(value):
    st = stats_of(np.full(5000, value, np.float32))
    want = (min(value, 0.0), max(value, 0.0))
    for m in C.METHODS:
        lo, hi, _ = C.choose_range(st, m)
        assert (lo, hi) == want, m
    s, zp = C.qparams(*want)
    q = np.clip(np.rint(value / s) + zp, -128, 127)
    assert abs(s * (q - zp) - value) <= s / 2


def test_all_zero_tensor():
    st = stats_of(np.zeros((100, 8), np.float32))
    for m in C.METHODS:
        lo, hi, _ = C.choose_range(st, m)
        assert (lo, hi) == (0.0, 0.0) and not math.copysign(1, lo) < 0, m
    assert C.qparams(0.0, 0.0) == (C.DEGENERATE_SCALE, 0)


# --------------------------------------------------------------------------- streaming


def test_streaming_many_batches_equals_one_batch(rng):
    x = rng.normal(0.5, 2.0, 300_000).astype(np.float32)
    cuts = np.sort(rng.choice(np.arange(1, x.size), 199, replace=False))
    many, one = stats_of_parts(np.split(x, cuts)), stats_of_parts([x])
    assert (many.min, many.max) == (one.min, one.max) == (float(x.min()), float(x.max()))
    assert C.minmax(many) == C.minmax(one)
    np.testing.assert_array_equal(many.hist, one.hist)
    for m in ("percentile", "entropy", "mse", "aciq"):
        assert C.choose_range(many, m)[:2] == pytest.approx(C.choose_range(one, m)[:2], rel=1e-9), m


def stats_of_parts(parts):
    st = C.TensorStats()
    for p in parts:
        st.update_range(p)
    for p in parts:
        st.update_histogram(p)
    return st


def test_histogram_memory_is_constant(rng):
    batches = [rng.standard_normal((4, 16)) * (1 + k % 7) for k in range(1000)]
    st = C.TensorStats()
    for b in batches:
        st.update_range(b)
    st.finish_ranges()
    after_setup = st.nbytes
    for b in batches[:10]:
        st.update_histogram(b)
    after_10 = st.nbytes
    for b in batches[10:]:
        st.update_histogram(b)
    assert st.nbytes == after_10 == after_setup
    assert st.hist.shape == (C.BINS,) and st.hist.sum() == 1000 * 64
    assert not any(isinstance(v, (list, dict, tuple)) for v in vars(st).values())
    assert st.batches == 1000


def test_moving_average_matches_pytorch_observer(rng):
    batches = [rng.normal(0, 1 + 0.1 * k, 256).astype(np.float32) for k in range(30)]
    st = C.TensorStats(momentum=0.9)
    for b in batches:
        st.update_range(b)
    lo, hi = C.moving_average_minmax(st)
    m_lo, m_hi = float(batches[0].min()), float(batches[0].max())
    for b in batches[1:]:
        m_lo += 0.1 * (float(b.min()) - m_lo)
        m_hi += 0.1 * (float(b.max()) - m_hi)
    assert (lo, hi) == pytest.approx((m_lo, m_hi), rel=1e-12)
    import torch
    from torch.ao.quantization.observer import MovingAverageMinMaxObserver

    obs = MovingAverageMinMaxObserver(averaging_constant=0.1)
    for b in batches:
        obs(torch.from_numpy(b))
    assert (lo, hi) == pytest.approx((float(obs.min_val), float(obs.max_val)), rel=1e-5)


def test_expected_mse_matches_a_monte_carlo_quantizer(rng):
    skewed = rng.gamma(2.0, 1.0, N) - 1.0  # asymmetric, two-sided
    relu = np.maximum(rng.standard_normal(N), 0)  # half the mass exactly at 0
    for x in (skewed, relu):
        st = stats_of(x)
        for lo, hi in [C.minmax(st), C.mse(st), (-0.1, 1.5)]:
            s, zp = C.qparams(lo, hi)
            q = np.clip(np.rint(x / s) + zp, -128, 127)
            empirical = np.mean((x - s * (q - zp)) ** 2)
            assert C.expected_mse(st, lo, hi) == pytest.approx(empirical, rel=0.01)


def test_stats_errors():
    st = C.TensorStats("conv1")
    with pytest.raises(CalibrationDataError, match="'conv1' saw no calibration values"):
        C.minmax(st)
    with pytest.raises(CalibrationDataError, match="'conv1' holds NaN or infinite"):
        st.update_range(np.array([1.0, np.nan]))
    with pytest.raises(CalibrationDataError, match="'conv1' holds NaN or infinite"):
        st.update_range(np.array([1.0, np.inf]))
    st.update_range(np.array([-1.0, 2.0]))
    with pytest.raises(ConversionError, match="needs the histogram pass"):
        C.choose_range(st, "percentile")
    assert C.choose_range(st, "minmax") == (-1.0, 2.0, "minmax")
    st.update_histogram(np.array([-1.0, 2.0, 5.0]))  # 5.0: outside the pass-1 range
    assert st.outside == 1 and st.hist.sum() == 3
    with pytest.raises(ConversionError, match="after the histogram pass"):
        st.update_range(np.array([0.0]))
    with pytest.raises(ConversionError, match="unknown calibration method 'kl'"):
        C.choose_range(st, "kl")
    with pytest.raises(ConversionError, match="takes no option bins"):
        C.choose_range(st, "mse", bins=10)
    assert C.choose_range(st, "percentile", percentile=100)[:2] == (-1.0, 2.0)
    with pytest.raises(ConversionError, match="percentile must be"):
        C.choose_range(st, "percentile", percentile=20)


# --------------------------------------------------------------------------- qparams


def _ranges_sweep(rng):
    out = [(0.0, 1.0), (-1.0, 0.0), (-1.0, 1.0), (-1e-9, 1.0), (-1.0, 1e-9), (-3.0, 0.01),
           (0.0, 1e-30), (-1e-12, 1e-12), (-1e30, 1e30), (-0.3, 7.7), (2.0, 5.0), (-5.0, -2.0)]
    for _ in range(300):
        lo, hi = sorted(rng.normal(0, 10, 2) * 10.0 ** rng.integers(-6, 6))
        out.append((lo, hi))
    return out


def test_qparams_invariants(rng):
    for lo, hi in _ranges_sweep(rng):
        s, zp = C.qparams(lo, hi)
        assert isinstance(zp, int) and -128 <= zp <= 127
        assert math.isfinite(s) and s > 0 and s == float(np.float32(s))
        assert s >= C.MIN_SCALE
        first, last = s * (-128 - zp), s * (127 - zp)
        # zero is the integer zp exactly; the grid covers [lo, hi] widened to include 0
        assert first <= min(lo, 0.0) and last >= max(hi, 0.0), (lo, hi, s, zp)
        width = max(hi, 0.0) - min(lo, 0.0)
        assert s <= max(width / 255 * 1.01, C.MIN_SCALE * 1.0000001), (lo, hi, s)


def test_qparams_examples():
    assert C.qparams(0.0, 2.55) == (pytest.approx(0.01), -128)  # ReLU: zp at the bottom
    assert C.qparams(-2.55, 0.0) == (pytest.approx(0.01), 127)
    s, zp = C.qparams(-1.0, 1.0)
    assert zp in (-1, 0) and s == pytest.approx(2 / 255, rel=0.005)
    assert C.qparams(0.0, 0.0) == (1.0, 0)  # degenerate: DEGENERATE_SCALE
    assert C.qparams(0.0, 1e-30)[0] == pytest.approx(C.MIN_SCALE)
    for bad in [(math.nan, 1.0), (0.0, math.inf), (1.0, -1.0)]:
        with pytest.raises(ConversionError):
            C.qparams(*bad)


# --------------------------------------------------------------------------- weights


def test_weight_qparams_per_channel_and_zero_channel(rng):
    w = rng.normal(0, 0.1, (6, 3, 3, 3)).astype(np.float32)
    w[2] = 0.0
    w[4] *= 10
    s = C.weight_qparams(w, 0)
    assert s.dtype == np.float32 and s.shape == (6,)
    amax = np.abs(w).reshape(6, -1).max(1)
    for c in (0, 1, 3, 4, 5):
        assert s[c] == np.float32(amax[c] / 127)
    assert s[2] > 0 and s[2] == s.max()  # a zero channel takes the largest (a safe) scale
    q = C.quantize_weights(w, s, 0)
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
    assert (q[2] == 0).all()
    assert (np.abs(q.reshape(6, -1)).max(1)[[0, 1, 3, 4, 5]] == 127).all()
    err = np.abs(w - q * s[:, None, None, None])
    assert (err <= s[:, None, None, None] / 2 * (1 + 1e-6)).all()


def test_weight_qparams_other_axes_and_per_tensor(rng):
    w = rng.normal(0, 1, (3, 3, 1, 8)).astype(np.float32)  # depthwise, channels last
    s3, sm1 = C.weight_qparams(w, 3), C.weight_qparams(w, -1)
    np.testing.assert_array_equal(s3, sm1)
    assert s3.shape == (8,)
    q = C.quantize_weights(w, s3, 3)
    assert (np.abs(q).reshape(-1, 8).max(0) == 127).all()
    st = C.weight_qparams(w, 3, per_channel=False)
    assert st.shape == (1,) and st[0] == np.float32(np.abs(w).max() / 127)
    q = C.quantize_weights(w, st, 3)
    assert np.abs(q).max() == 127
    zero = C.weight_qparams(np.zeros((4, 5), np.float32), 0)
    assert (zero == np.float32(C.DEGENERATE_SCALE)).all()  # an all-zero tensor
    assert (C.quantize_weights(np.zeros((4, 5)), zero, 0) == 0).all()


def test_quantize_weights_rounds_half_to_even_and_clips():
    s = np.array([0.5], np.float32)
    w = np.array([0.25, 0.75, -0.25, -0.75, 1.25, 100.0, -100.0])  # x / s = .5, 1.5, ..., 2.5
    np.testing.assert_array_equal(C.quantize_weights(w, s, 0), [0, 2, 0, -2, 2, 127, -127])
    with pytest.raises(ConversionError, match="3 weight scales for 7 channels"):
        C.quantize_weights(w, np.ones(3), 0)
    with pytest.raises(ConversionError, match="finite and > 0"):
        C.quantize_weights(w, np.zeros(1), 0)
    with pytest.raises(ConversionError, match="NaN"):
        C.weight_qparams(np.array([1.0, np.nan]), 0)


def test_input_gram_is_the_patches_second_moment(rng):
    """Grouped, strided, padded: the Gram matrix of explicit im2col patches in the weights' order."""
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    attrs = {"kernel_shape": [3, 2], "pads": [1, 0, 0, 1], "strides": [2, 1], "group": 2}
    xp = np.pad(x, ((0, 0), (0, 0), (1, 0), (0, 1)))
    patches = [xp[n, 2 * g:2 * g + 2, 2 * i:2 * i + 3, j:j + 2].reshape(-1)
               for g in range(2) for n in range(2) for i in range(3) for j in range(6)]
    p = np.array(patches, np.float64).reshape(2, 36, 12)
    np.testing.assert_allclose(C.input_gram(x, "Conv", attrs), p.transpose(0, 2, 1) @ p, rtol=1e-5, atol=1e-4)
    no_shape = {k: v for k, v in attrs.items() if k != "kernel_shape"}  # optional in ONNX: from the weights
    np.testing.assert_array_equal(C.input_gram(x, "Conv", no_shape, (3, 2)), C.input_gram(x, "Conv", attrs))
    assert C.input_gram(x, "Conv", no_shape) is None
    x2 = rng.standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_allclose(C.input_gram(x2, "Gemm", {})[0], x2.T.astype(np.float64) @ x2, rtol=1e-5, atol=1e-4)


def test_gptq_weights_lower_the_output_error(rng):
    """Uncorrelated inputs: rounding to nearest. Correlated ones (image-like patches): a smaller
    error ||(W - s Wq) x||^2 than rounding to nearest, on the same scales."""
    w = rng.standard_normal((16, 27))
    s = C.weight_qparams(w, 0)
    np.testing.assert_array_equal(C.gptq_weights(w, s, np.eye(27)[None] * 50.0), C.quantize_weights(w, s, 0))
    x = np.cumsum(rng.standard_normal((4000, 27)), axis=1)  # neighbours alike
    gram = (x.T @ x)[None]
    err = [np.sum(((w - q * s[:, None]) @ x.T) ** 2) for q in (C.quantize_weights(w, s, 0), C.gptq_weights(w, s, gram))]
    assert err[1] < 0.5 * err[0], err


# --------------------------------------------------------------------------- data sources

SHAPE = (1, 1, 4, 4)


def samples_of(source, names=("x",), shapes=(SHAPE,), **kw):
    return list(D.iter_calibration(source, list(names), list(shapes), **kw))


def test_npy_source(tmp_path, rng):
    x = rng.random((7,) + SHAPE[1:]).astype(np.float32)
    np.save(tmp_path / "c.npy", x)
    got = samples_of(tmp_path / "c.npy")
    assert len(got) == 7 and all(set(g) == {"x"} for g in got)
    np.testing.assert_array_equal(np.concatenate([g["x"] for g in got]), x)
    assert len(samples_of(str(tmp_path / "c.npy"), limit=3)) == 3
    bare = samples_of(tmp_path / "c.npy", as_dict=False)
    assert isinstance(bare[0], np.ndarray) and bare[0].shape == SHAPE and bare[0].dtype == np.float32


def test_npz_source(tmp_path, rng):
    a = rng.random((4, 3)).astype(np.float64)
    b = rng.random((4, 2, 2)).astype(np.float32)
    np.savez(tmp_path / "two.npz", a=a, b=b)
    got = samples_of(tmp_path / "two.npz", ("a", "b"), ((2, 3), (2, 2, 2)))
    assert len(got) == 2 and got[0]["a"].dtype == np.float32
    np.testing.assert_array_equal(got[1]["b"], b[2:])
    np.savez(tmp_path / "one.npz", whatever=rng.random((3,) + SHAPE[1:]))
    assert len(samples_of(tmp_path / "one.npz")) == 3  # one input: the single array, any name
    with pytest.raises(CalibrationDataError, match=r"has inputs \['a', 'b'\]; the model expects \['a', 'c'\]"):
        samples_of(tmp_path / "two.npz", ("a", "c"), ((2, 3), (2, 2, 2)))


def test_iterable_sources(rng):
    x = [rng.random(SHAPE).astype(np.float32) for _ in range(5)]
    assert len(samples_of(x)) == 5
    assert len(samples_of(iter(x))) == 5  # a one-shot generator
    assert len(samples_of([{"x": v} for v in x])) == 5
    assert len(samples_of([(v,) for v in x])) == 5
    big = np.concatenate(x)  # one item of 5 model batches is split into 5 samples
    got = samples_of([big])
    assert len(got) == 5 and got[3]["x"].shape == SHAPE
    np.testing.assert_array_equal(got[3]["x"], x[3])
    assert len(samples_of(big)) == 5  # an array: samples along the first axis
    assert len(samples_of({"x": big})) == 5
    two = samples_of([(v, v[0, 0, :1]) for v in x], ("x", "y"), (SHAPE, (1, 4)))
    assert len(two) == 5 and set(two[0]) == {"x", "y"}
    # dynamic batch dimension: any number of rows is one sample
    assert samples_of([big], shapes=((None, 1, 4, 4),))[0]["x"].shape == (5, 1, 4, 4)
    # float64 and float16 are converted
    assert samples_of([x[0].astype(np.float64)])[0]["x"].dtype == np.float32
    import torch
    assert samples_of([torch.from_numpy(x[0])])[0]["x"].dtype == np.float32


def test_data_error_messages(tmp_path):
    ok = np.zeros(SHAPE, np.float32)
    cases = [
        ([ok, ok, ok, np.zeros((1, 4, 4), np.float32)],
         "calibration sample 3 for input 'x' has shape (1, 4, 4); the model expects (1, 1, 4, 4)"),
        ([ok.astype(np.uint8)], "calibration sample 0 for input 'x' has dtype uint8; the model expects float32"),
        ([], "the calibration list yielded no calibration samples; the model expects at least one for input 'x' (1, 1, 4, 4)"),
        ([np.full(SHAPE, np.nan, np.float32)], "calibration sample 0 for input 'x' holds 16 NaN values (of 16)"),
        ([np.where(np.eye(4) > 0, np.inf, 0).reshape(SHAPE)], "holds 4 infinite values"),
        ([(ok, 3)], "calibration sample 0 has 2 arrays; the model has 1 input ['x'] (if the items are (inputs, label) pairs"),
        ([{"y": ok}], "calibration sample 0 has inputs ['y']; the model expects ['x'] (missing ['x']) (unknown ['y'])"),
        (np.zeros((3, 1, 4, 5), np.float32), "calibration array for input 'x' has shape (3, 1, 4, 5); the model expects (1, 1, 4, 4) per sample"),
        (np.zeros((0, 1, 4, 4), np.float32), "holds no samples"),
        ([["a", "b"]], "calibration sample 0 has 2 arrays"),
        ([np.array(["a"])], "is not a numeric array"),
        (tmp_path / "missing.npy", "no such file or folder"),
        (42, "calibration source of type int is not supported"),
    ]
    for source, message in cases:
        with pytest.raises(CalibrationDataError) as e:
            samples_of(source)
        assert message in str(e.value), (message, str(e.value))
    with pytest.raises(CalibrationDataError, match="has 3 rows along the batch dimension .* batches of 2"):
        samples_of([np.zeros((3, 1, 4, 4), np.float32)], shapes=((2, 1, 4, 4),))
    with pytest.raises(CalibrationDataError, match=r"is a single array; the model has 2 inputs \['a', 'b'\]"):
        samples_of([ok], ("a", "b"), (SHAPE, SHAPE))
    with pytest.raises(CalibrationDataError, match="different numbers of model batches"):
        samples_of([{"a": np.zeros((2, 3), np.float32), "b": np.zeros((1, 3), np.float32)}], ("a", "b"), ((1, 3), (1, 3)))
    (tmp_path / "c.txt").write_text("1 2 3")
    with pytest.raises(CalibrationDataError, match=r"unsupported file type '\.txt'; expected \.npy, \.npz"):
        samples_of(tmp_path / "c.txt")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(CalibrationDataError, match="cannot read calibration file .*bad.npy"):
        samples_of(tmp_path / "bad.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(CalibrationDataError, match="cannot read calibration file .*obj.npy"):
        samples_of(tmp_path / "obj.npy")  # pickled objects are never loaded
    np.save(tmp_path / "one.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(CalibrationDataError, match=r"is one array; the model has 2 inputs"):
        samples_of(tmp_path / "one.npy", ("a", "b"), ((1, 3), (1, 3)))
    with pytest.raises(ConversionError, match="limit must be"):
        samples_of([ok], limit=0)


# --------------------------------------------------------------------------- images


@pytest.fixture
def image_folder(tmp_path):
    from skimage import io as skio
    folder = tmp_path / "images"
    folder.mkdir()
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 255, 51
    skio.imsave(str(folder / "a_rgb.png"), rgb, check_contrast=False)
    skio.imsave(str(folder / "b_gray.png"), np.full((50, 20), 102, np.uint8), check_contrast=False)
    halves = np.zeros((20, 40), np.uint8)
    halves[:, 20:] = 255  # left half black, right half white
    skio.imsave(str(folder / "c_halves.png"), halves, check_contrast=False)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_image_folder_rgb_nchw(image_folder):
    got = samples_of(image_folder, shapes=((1, 3, 8, 8),))
    assert len(got) == 3 and got[0]["x"].shape == (1, 3, 8, 8) and got[0]["x"].dtype == np.float32
    np.testing.assert_allclose(got[0]["x"][0, :, 3, 3], [1.0, 0.0, 0.2], atol=1e-6)  # RGB order, /255
    np.testing.assert_allclose(got[1]["x"][0, :, 3, 3], [0.4, 0.4, 0.4], atol=1e-6)  # gray -> RGB
    img = got[2]["x"][0, 0]
    assert img[:, 0].max() < 0.5 < img[:, -1].min()  # the center crop keeps left on the left


def test_image_folder_gray_nhwc_normalised(image_folder):
    pre = D.ImagePreprocess(size=(6, 6), mean=0.5, std=0.25, layout="NHWC")
    got = samples_of(image_folder, shapes=((1, 6, 6, 1),), preprocess=pre)
    assert got[0]["x"].shape == (1, 6, 6, 1)
    luma = 0.2125 * 1.0 + 0.0721 * 0.2
    assert got[0]["x"][0, 2, 2, 0] == pytest.approx((luma - 0.5) / 0.25, abs=1e-5)
    assert got[1]["x"][0, 2, 2, 0] == pytest.approx((0.4 - 0.5) / 0.25, abs=1e-5)
    mean3 = D.ImagePreprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize=10)
    got = samples_of(image_folder, shapes=((1, 3, 8, 8),), preprocess=mean3)
    assert got[0]["x"][0, 0, 4, 4] == pytest.approx((1.0 - 0.485) / 0.229, abs=1e-5)


def test_image_folder_batches_and_errors(image_folder, tmp_path):
    assert len(samples_of(image_folder, shapes=((2, 3, 8, 8),))) == 1  # 3 images, batch 2
    with pytest.raises(CalibrationDataError, match="ImagePreprocess size \\(6, 6\\) differs from input 'x'"):
        samples_of(image_folder, shapes=((1, 3, 8, 8),), preprocess=D.ImagePreprocess(size=(6, 6)))
    with pytest.raises(CalibrationDataError, match="4-D image input; input 'x' has shape \\(1, 64\\)"):
        samples_of(image_folder, shapes=((1, 64),))
    with pytest.raises(CalibrationDataError, match="1 or 3 channels; input 'x' has shape \\(1, 8, 8, 3\\)"):
        samples_of(image_folder, shapes=((1, 8, 8, 3),))  # NHWC data with the default NCHW layout
    with pytest.raises(CalibrationDataError, match="ImagePreprocess mean has 2 values; .* 3 channels"):
        samples_of(image_folder, shapes=((1, 3, 8, 8),), preprocess=D.ImagePreprocess(mean=(0.1, 0.2)))
    with pytest.raises(CalibrationDataError, match="one input; this model has 2"):
        samples_of(image_folder, ("a", "b"), ((1, 3, 8, 8), (1, 3, 8, 8)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationDataError, match="no calibration images in .*empty: expected at least 1 file"):
        samples_of(empty, shapes=((1, 3, 8, 8),))
    (image_folder / "z_broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(CalibrationDataError, match="cannot read calibration image .*z_broken.png"):
        samples_of(image_folder, shapes=((1, 3, 8, 8),))
    with pytest.raises(ConversionError, match="layout"):
        D.ImagePreprocess(layout="CHW")


# --------------------------------------------------------------------------- helpers


def test_progress_is_quiet_unless_forced(capsys):
    items = list(range(5))
    assert D.progress(items, total=5, desc="x") is items  # stderr is not a terminal under pytest
    assert D.progress(items, desc="x", force=False) is items
    assert list(D.progress(iter(items), total=5, desc="calibrating", force=True)) == items
    assert "calibrating" in capsys.readouterr().err


def test_split_holdout():
    cal, held = D.split_holdout(list(range(100)))
    assert cal == list(range(80)) and held == list(range(80, 100))
    assert D.split_holdout(iter(range(10)), 0.25) == (list(range(8)), [8, 9])
    assert D.split_holdout([1], 0.5) == ([1], [])  # at least one sample calibrates
    assert D.split_holdout([], 0.2) == ([], [])
    assert D.split_holdout(range(5), 0.0) == (list(range(5)), [])
    with pytest.raises(ConversionError, match="fraction"):
        D.split_holdout([1, 2], 1.0)
