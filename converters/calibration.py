"""Calibration: streamed activation statistics and the choice of each tensor's int8 range.

Post-training quantization needs, for every activation tensor, a real range [lo, hi] that the
256 int8 levels cover (SPEC.md section 3: asymmetric, per tensor, real = scale * (q - zp)).
Activations are never kept: a TensorStats holds O(bins) numbers whatever the amount of data.

Two passes over the calibration data (the caller runs the float model twice):

    pass 1  stats.update_range(x)      running min/max, and the exponential moving average of
                                       the per-batch min/max (each call is one batch)
            stats.finish_ranges()      (optional) fixes the histogram range
    pass 2  stats.update_histogram(x)  a BINS-bin histogram over [min(min, 0), max(max, 0)]
                                       plus exact count, zero count, sum and sum of squares

Range methods, each `f(stats, **options) -> (lo, hi)` with lo <= 0 <= hi (zero exact):

    minmax          the observed [min, max].
    moving_average  EMA of the per-batch min and max: m <- m + (1 - momentum) * (batch - m),
                    initialised with the first batch; PyTorch's MovingAverageMinMaxObserver
                    update, whose averaging_constant is 1 - momentum (PyTorch's default is
                    0.01, i.e. momentum 0.99; ours is momentum 0.9, set per TensorStats).
    percentile      lo at the (100 - p) percentile, hi at the p percentile (p = 99.99), read
                    from the histogram's CDF with linear interpolation inside a bin.
    entropy         the KL-divergence threshold search of TensorRT's entropy calibrator
                    (Migacz, "8-bit Inference with TensorRT", GTC 2017), adapted to our
                    256-level asymmetric range:
                      * one-sided tensors (min >= 0, as ReLU outputs; or max <= 0, mirrored):
                        the search runs on the histogram of x over [0, max] and each candidate
                        [0, T] is merged into 256 levels, as all 256 int8 levels land there;
                      * two-sided tensors: the histogram is folded into one of |x| (re-binned
                        by linear interpolation of the CDF), TensorRT's symmetric search with
                        128 levels per side picks T, and the range is [max(min, -T), min(max, T)].
                    As NVIDIA's pytorch-quantization (_compute_amax_entropy) does, the bin
                    holding 0 is flattened to its neighbour's count (the zero spike of a ReLU
                    would otherwise dominate the KL) and the i kept bins are merged into levels
                    in balanced groups (bin j*i//levels ...); P and Q are smoothed as in
                    MXNet/ONNX Runtime (eps 1e-4) before KL(P || Q). Candidates are the
                    histogram edges from the 128th/256th on, every 4th, then every edge around
                    the best (4x faster than all of them; the KL curve is smooth at that scale).
    mse             the range minimising the expected squared error of the 256-level quantizer,
                    computed from the histogram (values uniform inside a bin, exact zeros kept
                    apart): clipping error outside [lo, hi] + rounding error to the grid s * k
                    inside. One-sided: a 1-D search of hi; two-sided: a search of a common
                    threshold T, then coordinate descent on lo and hi separately.
    aciq            analytic clipping (Banner, Nahshan, Soudry, "Post training 4-bit
                    quantization of convolutional networks for rapid-deployment", NeurIPS
                    2019): fit a Laplace and a Gaussian to the histogram by maximum likelihood,
                    keep the one with the larger log-likelihood of the binned data, clip at
                    mu +- alpha (constants below), intersected with the observed [min, max].
                    One-sided tensors (ReLU outputs) are fitted on their non-zero values, with
                    the half distributions (exponential, half-normal: clip at [0, alpha], where
                    2^8 levels on one side is the paper's symmetric 9-bit case) competing with
                    the two-sided ones (a shifted bump that happens to be positive).
    auto            every method above, scored by the tensor's signal-to-quantization-noise
                    ratio computed from the histogram with the real quantizer that qparams()
                    builds; the best wins, and a method within AUTO_TIE_DB of the best that
                    comes earlier in METHODS wins ties (the simplest range that is as good).

qparams(lo, hi) turns a range into (scale, zero_point); weight_qparams / quantize_weights give
symmetric int8 weights.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import CalibrationDataError, ConversionError

BINS = 2048
QMIN, QMAX = -128, 127  # activations: int8, asymmetric
LEVELS = QMAX - QMIN + 1  # 256
WEIGHT_QMAX = 127  # weights: int8 symmetric in [-127, 127]
INT4_QMAX = 7  # int4 weights: symmetric in [-7, 7]

DEFAULT_MOMENTUM = 0.9
DEFAULT_PERCENTILE = 99.99

# Smallest scale qparams() returns for a non-degenerate range: float32 machine epsilon,
# PyTorch's observer default (eps=torch.finfo(torch.float32).eps).
MIN_SCALE = float(np.finfo(np.float32).eps)  # 1.1920929e-07
# Scale of an all-zero tensor (lo == hi == 0), where any scale represents the data exactly.
# 1.0, as ONNX Runtime's compute_scale_zp does: a tiny scale here would make the int32 bias
# of a layer reading this tensor (scale s_x * s_w) overflow, and its requantization
# multipliers huge; 1.0 keeps every derived integer in range.
DEGENERATE_SCALE = 1.0

# ACIQ optimal clipping alpha for 8 bits (Banner et al. 2019, table of alpha*/b and
# alpha*/sigma; checked numerically by minimising clip error + alpha^2 / (3 * 4^M)):
ACIQ_LAPLACE = 9.89  # alpha = 9.89 b, symmetric, M = 8
ACIQ_GAUSS = 3.92  # alpha = 3.92 sigma, symmetric, M = 8
ACIQ_LAPLACE_ONE_SIDED = 11.16  # [0, alpha] with 256 levels = the symmetric M = 9 case
ACIQ_GAUSS_ONE_SIDED = 4.22

ENTROPY_LEVELS_TWO_SIDED = 128  # per side, as TensorRT
ENTROPY_LEVELS_ONE_SIDED = 256
ENTROPY_MAX_CLIPPED = 0.001  # entropy never clips more than 0.1 % of the non-zero values
ENTROPY_SMOOTHING_EPS = 1e-4

AUTO_TIE_DB = 0.05

METHODS = ("minmax", "moving_average", "percentile", "entropy", "mse", "aciq", "auto")


# --------------------------------------------------------------------------- statistics


class TensorStats:
    """Streamed statistics of one activation tensor, O(bins) memory.

    Pass 1: update_range(x) per batch. Pass 2: update_histogram(x) per batch, over the same
    data. Values outside the pass-1 range in pass 2 (other data, say) are counted in
    `outside` and land in the edge bins.
    """

    def __init__(self, name: str = "", bins: int = BINS, momentum: float = DEFAULT_MOMENTUM):
        if int(bins) < 16:
            raise ConversionError(f"a calibration histogram needs at least 16 bins, got {bins}")
        if not 0.0 <= float(momentum) < 1.0:
            raise ConversionError(f"momentum must be in [0, 1), got {momentum}")
        self.name = name
        self.bins = int(bins)
        self.momentum = float(momentum)
        # pass 1
        self.count = 0
        self.batches = 0
        self.min = math.inf
        self.max = -math.inf
        self.ema_min = math.nan
        self.ema_max = math.nan
        # pass 2
        self.hist: np.ndarray | None = None  # int64 [bins] over [hist_lo, hist_hi]
        self.hist_lo = 0.0
        self.hist_hi = 0.0
        self.hist_count = 0
        self.zero_count = 0  # values exactly 0 (exactly representable: no rounding error)
        self.sum = 0.0
        self.sumsq = 0.0
        self.outside = 0

    def __repr__(self):
        label = f" '{self.name}'" if self.name else ""
        return (f"TensorStats{label}(count={self.count}, min={self.min:g}, max={self.max:g}, "
                f"histogram={'yes' if self.hist is not None else 'no'})")

    # -- input checks

    def _label(self) -> str:
        return f"tensor '{self.name}'" if self.name else "a tensor"

    def _array(self, x) -> np.ndarray:
        a = np.asarray(x)
        if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise CalibrationDataError(f"calibration statistics of {self._label()}: expected a real "
                                       f"numeric array, found dtype {a.dtype}")
        return a

    def _non_finite(self):
        return CalibrationDataError(
            f"{self._label()} holds NaN or infinite values during calibration; the float model "
            "overflows or the calibration data is bad (check the inputs for NaN/inf and their scale)")

    # -- pass 1

    def update_range(self, x) -> None:
        """Pass 1: one batch of values (any shape)."""
        if self.hist is not None:
            raise ConversionError(f"{self._label()}: update_range after the histogram pass started")
        a = self._array(x)
        if a.size == 0:
            return
        bmin, bmax = float(a.min()), float(a.max())
        if not (math.isfinite(bmin) and math.isfinite(bmax)):
            raise self._non_finite()
        self.count += a.size
        self.min = min(self.min, bmin)
        self.max = max(self.max, bmax)
        if self.batches == 0:
            self.ema_min, self.ema_max = bmin, bmax
        else:
            c = 1.0 - self.momentum  # PyTorch's averaging_constant
            self.ema_min += c * (bmin - self.ema_min)
            self.ema_max += c * (bmax - self.ema_max)
        self.batches += 1

    def finish_ranges(self) -> None:
        """End of pass 1: fix the histogram range [min(min, 0), max(max, 0)] and allocate it.
        update_histogram calls it on its first call when the caller did not."""
        if self.hist is not None:
            return
        if self.count == 0:
            raise CalibrationDataError(f"{self._label()} saw no calibration values in the range pass")
        self.hist_lo = min(self.min, 0.0)
        self.hist_hi = max(self.max, 0.0)
        self.hist = np.zeros(self.bins, np.int64)

    # -- pass 2

    def update_histogram(self, x) -> None:
        """Pass 2: one batch of values, the same data as pass 1."""
        self.finish_ranges()
        a = self._array(x)
        if a.size == 0:
            return
        v = a.astype(np.float64, copy=False).ravel()
        s = float(v.sum())
        sq = float(np.dot(v, v))
        if not (math.isfinite(s) and math.isfinite(sq)):
            raise self._non_finite()
        self.hist_count += v.size
        self.sum += s
        self.sumsq += sq
        self.zero_count += v.size - int(np.count_nonzero(v))
        lo, hi = self.hist_lo, self.hist_hi
        out = int(np.count_nonzero((v < lo) | (v > hi)))
        self.outside += out
        if hi == lo:  # all-zero range: every value sits in bin 0 (others were counted outside)
            self.hist[0] += v.size
            return
        idx = np.floor((v - lo) * (self.bins / (hi - lo)))
        np.clip(idx, 0, self.bins - 1, out=idx)
        self.hist += np.bincount(idx.astype(np.intp), minlength=self.bins)

    # -- views

    @property
    def has_histogram(self) -> bool:
        return self.hist is not None and self.hist_count > 0

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.hist_lo, self.hist_hi, self.bins + 1)

    @property
    def bin_width(self) -> float:
        return (self.hist_hi - self.hist_lo) / self.bins

    @property
    def mean(self) -> float:
        return self.sum / self.hist_count if self.hist_count else 0.0

    @property
    def signal_power(self) -> float:
        """E[x^2] over the histogram pass (exact)."""
        return self.sumsq / self.hist_count if self.hist_count else 0.0

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes: the histogram and a fixed number of scalars."""
        return (self.hist.nbytes if self.hist is not None else 0) + 8 * 16

    def quantile(self, q: float) -> float:
        """The q-quantile (q in [0, 1]) from the histogram, linear inside a bin."""
        return _hist_quantile(self.hist, self.edges, q)


# --------------------------------------------------------------------------- helpers


def _widen(lo: float, hi: float) -> tuple[float, float]:
    return min(float(lo), 0.0) + 0.0, max(float(hi), 0.0) + 0.0  # + 0.0: no -0.0


def _hist_quantile(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    """The q-quantile of a histogram, linear inside a bin."""
    cum = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    cum /= cum[-1]
    k = int(np.searchsorted(cum, q, side="left"))
    if k <= 0:
        return float(edges[0])
    if k >= cum.size:
        return float(edges[-1])
    lo_c, hi_c = cum[k - 1], cum[k]
    frac = (q - lo_c) / (hi_c - lo_c) if hi_c > lo_c else 1.0
    return float(edges[k - 1] + frac * (edges[k] - edges[k - 1]))


def _need_range(stats: TensorStats):
    if stats.count == 0:
        raise CalibrationDataError(f"{stats._label()} saw no calibration values: nothing to choose a range from")


def _need_histogram(stats: TensorStats, method: str):
    _need_range(stats)
    if not stats.has_histogram:
        raise ConversionError(f"calibration method '{method}' needs the histogram pass "
                              f"(update_histogram) of {stats._label()}; only 'minmax' and "
                              "'moving_average' work from the range pass alone")


def _trivial(stats: TensorStats):
    """The range of a constant tensor (zero included), which every method returns as is."""
    if stats.min == stats.max:
        return _widen(stats.min, stats.max)
    return None


def _one_sided(stats: TensorStats) -> int:
    """+1: all values >= 0; -1: all <= 0; 0: both signs."""
    if stats.min >= 0:
        return 1
    if stats.max <= 0:
        return -1
    return 0


def _clamp_observed(stats: TensorStats, lo: float, hi: float) -> tuple[float, float]:
    lo = min(max(lo, stats.min), stats.max)
    hi = min(max(hi, stats.min), stats.max)
    return _widen(lo, hi)


def _positive_view(stats: TensorStats):
    """(counts, edges) of a one-sided tensor as values >= 0 (a negative one mirrored), the
    exact zeros removed from the bin holding 0."""
    h = stats.hist.astype(np.float64)
    e = stats.edges
    if _one_sided(stats) < 0:
        h, e = h[::-1].copy(), -e[::-1]
    zero_bin = 0
    h[zero_bin] = max(h[zero_bin] - stats.zero_count, 0.0)
    return h, e


# --------------------------------------------------------------------------- expected error


def _sawtooth_integral(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Integral from 0 to x of (t - s*round(t/s))^2 dt, grid s*k (one grid point at 0)."""
    t = x / s
    k = np.floor(t + 0.5)
    u = t - k
    return (s * s * s) * (k * (1.0 / 12.0) + u * u * u * (1.0 / 3.0))


def _mse_many(stats: TensorStats, lo: np.ndarray, hi: np.ndarray, step: np.ndarray,
              chunk: int = 256) -> np.ndarray:
    """Expected squared error, per candidate, of clipping to [lo, hi] and rounding to the grid
    step * k, for the histogrammed distribution: each bin's mass uniform over the bin, except
    the exact zeros (error 0: zero is on the grid and inside every range)."""
    lo, hi, step = (np.atleast_1d(np.asarray(v, np.float64)) for v in (lo, hi, step))
    e = stats.edges
    a, b = e[:-1], e[1:]
    w = stats.bin_width
    n = stats.hist.astype(np.float64)
    zero_bin = min(int((0.0 - stats.hist_lo) / w), stats.bins - 1) if w > 0 else 0
    n[zero_bin] = max(n[zero_bin] - stats.zero_count, 0.0)
    keep = n > 0
    a, b, n = a[keep], b[keep], n[keep]
    total = float(stats.hist.sum())
    out = np.empty(lo.size)
    for c in range(0, lo.size, chunk):
        L = lo[c:c + chunk, None]
        H = hi[c:c + chunk, None]
        S = step[c:c + chunk, None]
        # below lo: integral of (lo - x)^2 over [a, b] meet (-inf, lo]
        d1, d2 = L - np.minimum(a, L), L - np.minimum(b, L)
        err = d1 * d1 * d1 - d2 * d2 * d2
        # above hi: integral of (x - hi)^2 over [a, b] meet [hi, inf)
        d1, d2 = np.maximum(b, H) - H, np.maximum(a, H) - H
        err += d1 * d1 * d1 - d2 * d2 * d2
        err /= 3.0
        # inside: the rounding sawtooth over [a, b] meet [lo, hi]
        err += np.maximum(_sawtooth_integral(np.clip(b, L, H), S) - _sawtooth_integral(np.clip(a, L, H), S), 0.0)
        out[c:c + chunk] = err @ n / (w * total)
    return out


def quantizer_grid(lo: float, hi: float) -> tuple[float, float, float]:
    """(step, first, last) real values of the int8 grid qparams(lo, hi) builds."""
    s, zp = qparams(lo, hi)
    return s, s * (QMIN - zp), s * (QMAX - zp)


def expected_mse(stats: TensorStats, lo: float, hi: float) -> float:
    """Expected squared quantization error of the tensor with the int8 parameters
    qparams(lo, hi), from the histogram."""
    _need_histogram(stats, "expected_mse")
    s, first, last = quantizer_grid(lo, hi)
    if stats.min == stats.max:  # a constant: exact
        c = stats.min
        q = min(max(round(c / s), round(first / s)), round(last / s)) * s
        return (c - q) ** 2 * (1 - stats.zero_count / stats.hist_count) if c != 0 else 0.0
    return float(_mse_many(stats, first, last, s)[0])


def sqnr_db(stats: TensorStats, lo: float, hi: float) -> float:
    """10 log10(E[x^2] / expected quantization MSE) with qparams(lo, hi); inf when exact."""
    noise = expected_mse(stats, lo, hi)
    signal = stats.signal_power
    if noise <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


# --------------------------------------------------------------------------- range methods


def minmax(stats: TensorStats) -> tuple[float, float]:
    _need_range(stats)
    return _widen(stats.min, stats.max)


def moving_average_minmax(stats: TensorStats) -> tuple[float, float]:
    _need_range(stats)
    return _widen(stats.ema_min, stats.ema_max)


def percentile(stats: TensorStats, percentile: float = DEFAULT_PERCENTILE) -> tuple[float, float]:
    p = float(percentile)
    if not 50.0 < p <= 100.0:
        raise ConversionError(f"percentile must be in (50, 100], got {percentile}")
    _need_histogram(stats, "percentile")
    t = _trivial(stats)
    if t:
        return t
    if p == 100.0:
        return _widen(stats.min, stats.max)
    return _clamp_observed(stats, stats.quantile(1.0 - p / 100.0), stats.quantile(p / 100.0))


def _smooth(p: np.ndarray, eps: float = ENTROPY_SMOOTHING_EPS):
    """MXNet's / ONNX Runtime's smooth_distribution (on histogram counts)."""
    zeros = p == 0
    nz = p.size - int(zeros.sum())
    if nz == 0:
        return None
    eps1 = eps * float(zeros.sum()) / nz
    out = p + np.where(zeros, eps, -eps1)
    return out if (out > 0).all() else None


def _kl_divergence(hist: np.ndarray, suffix: np.ndarray, i: int, levels: int) -> float:
    """KL(P || Q) of TensorRT's search for the first i bins of hist merged into `levels`."""
    sliced = hist[:i]
    p = sliced.copy()
    p[i - 1] += suffix[i]  # the clipped tail lands in the last kept bin
    nonzero = p != 0
    bounds = (np.arange(levels + 1) * i) // levels  # balanced groups, each >= 1 bin
    starts = bounds[:-1]
    qsum = np.add.reduceat(sliced, starts)
    qnz = np.add.reduceat(nonzero.astype(np.float64), starts)
    per = np.divide(qsum, qnz, out=np.zeros_like(qsum), where=qnz > 0)
    q = np.where(nonzero, np.repeat(per, np.diff(bounds)), 0.0)
    if q.sum() <= 0 or p.sum() <= 0:
        return math.inf
    ps = _smooth(p)  # on the counts, as ONNX Runtime and MXNet do; then normalised
    qs = _smooth(q)
    if ps is None or qs is None:
        return math.inf
    ps, qs = ps / ps.sum(), qs / qs.sum()
    return float(np.sum(ps * np.log(ps / qs)))


def _kl_best_index(hist: np.ndarray, levels: int, stride: int = 4) -> int:
    """TensorRT's threshold search on a histogram of values >= 0 starting at 0: the number of
    bins i (levels <= i <= len(hist)) whose [0, edge_i] range, merged into `levels` levels,
    minimises KL(P || Q). Every `stride`-th i first, then every i around the best."""
    hist = np.asarray(hist, np.float64)
    n = hist.size
    if n <= levels:
        return n
    suffix = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # suffix[i] = sum(hist[i:])
    kl = {}

    def best_of(candidates):
        for i in candidates:
            if i not in kl:
                kl[i] = _kl_divergence(hist, suffix, i, levels)
        return min(candidates, key=lambda i: (kl[i], -i))

    coarse = list(range(levels, n + 1, stride))
    if coarse[-1] != n:
        coarse.append(n)
    i = best_of(coarse)
    if not math.isfinite(kl[i]):
        return n
    return best_of(list(range(max(levels, i - stride + 1), min(n, i + stride - 1) + 1)))


def _folded_abs_histogram(stats: TensorStats) -> tuple[np.ndarray, np.ndarray]:
    """The histogram of |x| over [0, max|x|] with `bins` bins, from the CDF of x (linear inside
    bins)."""
    e = stats.edges
    cum = np.concatenate([[0.0], np.cumsum(stats.hist, dtype=np.float64)])
    amax = max(-stats.hist_lo, stats.hist_hi)
    t = np.linspace(0.0, amax, stats.bins + 1)
    mass = np.interp(t, e, cum) - np.interp(-t, e, cum)  # mass of |x| <= t
    return np.maximum(np.diff(mass), 0.0), t


def entropy(stats: TensorStats) -> tuple[float, float]:
    _need_histogram(stats, "entropy")
    t = _trivial(stats)
    if t:
        return t
    side = _one_sided(stats)
    if side:
        h, e = _positive_view(stats)
        levels = ENTROPY_LEVELS_ONE_SIDED
    else:
        h, e = _folded_abs_histogram(stats)
        levels = ENTROPY_LEVELS_TWO_SIDED
    nonzero = h[1:].sum()
    h[0] = h[1]  # the zero spike (ReLU) flattened, as NVIDIA's pytorch-quantization does
    T = float(e[_kl_best_index(h, levels)])
    # KL favours resolving a few spikes (e.g. a bias seen on blank background) over a tail that
    # carries the signal; never clip more than ENTROPY_MAX_CLIPPED of the non-zero values.
    if nonzero > 0:
        kept = np.concatenate([[0.0], np.cumsum(h[1:])]) / nonzero
        T = max(T, float(e[min(int(np.searchsorted(kept, 1.0 - ENTROPY_MAX_CLIPPED)) + 1, len(e) - 1)]))
    if side:
        return _clamp_observed(stats, 0.0, T) if side > 0 else _clamp_observed(stats, -T, 0.0)
    return _clamp_observed(stats, -T, T)


def _argmin_1d(stats, make, candidates):
    """The candidate c minimising the idealised expected MSE of the range make(c)."""
    lo, hi = make(np.asarray(candidates, np.float64))
    step = np.maximum((hi - lo) / (LEVELS - 1), 1e-300)
    err = _mse_many(stats, lo, hi, step)
    k = int(np.argmin(err))
    return float(candidates[k]), float(err[k]), k


def _search(stats, make, top: float):
    """Coarse (geometric + linear) then fine search of a clip value in (0, top]."""
    coarse = np.unique(np.concatenate([np.geomspace(1e-4, 1.0, 96), np.linspace(0.01, 1.0, 100)])) * top
    best, _, k = _argmin_1d(stats, make, coarse)
    left = coarse[k - 1] if k > 0 else best * 0.5
    right = coarse[k + 1] if k + 1 < coarse.size else top
    fine = np.linspace(left, right, 41)
    best, err, _ = _argmin_1d(stats, make, fine)
    return best, err


def mse(stats: TensorStats) -> tuple[float, float]:
    _need_histogram(stats, "mse")
    t = _trivial(stats)
    if t:
        return t
    mn, mx = stats.min, stats.max
    side = _one_sided(stats)
    if side > 0:
        hi, _ = _search(stats, lambda c: (np.zeros_like(c), c), mx)
        return _clamp_observed(stats, 0.0, hi)
    if side < 0:
        lo, _ = _search(stats, lambda c: (-c, np.zeros_like(c)), -mn)
        return _clamp_observed(stats, -lo, 0.0)
    # two-sided: a common threshold first, then lo and hi in turn
    amax = max(-mn, mx)
    T, err = _search(stats, lambda c: (np.maximum(-c, mn), np.minimum(c, mx)), amax)
    lo, hi = max(-T, mn), min(T, mx)
    for _ in range(2):
        c_hi, e_hi = _search(stats, lambda c, lo=lo: (np.full_like(c, lo), c), mx)
        if e_hi < err:
            hi, err = c_hi, e_hi
        c_lo, e_lo = _search(stats, lambda c, hi=hi: (-c, np.full_like(c, hi)), -mn)
        if e_lo < err:
            lo, err = -c_lo, e_lo
        else:
            break
    return _clamp_observed(stats, lo, hi)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.frompyfunc(math.erf, 1, 1)(np.asarray(x, np.float64) / math.sqrt(2.0)).astype(np.float64))


def _binned_loglik(counts: np.ndarray, cdf_edges: np.ndarray) -> float:
    prob = np.maximum(np.diff(cdf_edges), 1e-300)
    return float(np.sum(counts * np.log(prob)))


def _two_sided_fits(h: np.ndarray, e: np.ndarray, median: float) -> dict:
    """Maximum-likelihood Laplace (median, mean |x - median|) and Gaussian (mean, std) of the
    binned values h over edges e, each with its binned log-likelihood."""
    c = 0.5 * (e[:-1] + e[1:])
    n = h.sum()
    mu = float(h @ c / n)
    sigma = float(math.sqrt(max(h @ ((c - mu) ** 2) / n, 0.0)))
    b = float(h @ np.abs(c - median) / n)
    fits = {}
    if b > 0:
        z = (e - median) / b
        cdf = np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0.0)), 1.0 - 0.5 * np.exp(-np.maximum(z, 0.0)))
        fits["laplace"] = (median, b, _binned_loglik(h, cdf))
    if sigma > 0:
        fits["gauss"] = (mu, sigma, _binned_loglik(h, _normal_cdf((e - mu) / sigma)))
    return fits


def aciq_fit(stats: TensorStats) -> dict:
    """The distributions ACIQ chooses between, fitted by maximum likelihood to the histogram:
    {family: (location, spread, binned log-likelihood)} with families 'laplace' (median, b)
    and 'gauss' (mean, sigma), and for one-sided tensors also 'exponential' (0, b) and
    'half_normal' (0, sigma) fitted to the non-zero values (the exact zeros of a ReLU are a
    point mass that no continuous fit should see). 'chosen': the family of largest
    log-likelihood."""
    _need_histogram(stats, "aciq")
    side = _one_sided(stats)
    if side:
        h, e = _positive_view(stats)  # the non-zero values, mirrored to >= 0
        n = h.sum()
        if n <= 0:
            return {"chosen": None}
        c = 0.5 * (e[:-1] + e[1:])
        fits = _two_sided_fits(h, e, _hist_quantile(h, e, 0.5))
        b = float(h @ c / n)  # exponential MLE: the mean
        sigma = float(math.sqrt(h @ (c * c) / n))  # half-normal MLE: root mean square
        if b > 0:
            fits["exponential"] = (0.0, b, _binned_loglik(h, -np.expm1(-np.maximum(e, 0.0) / b)))
        if sigma > 0:
            fits["half_normal"] = (0.0, sigma, _binned_loglik(h, 2.0 * _normal_cdf(np.maximum(e, 0.0) / sigma) - 1.0))
    else:
        fits = _two_sided_fits(stats.hist.astype(np.float64), stats.edges, stats.quantile(0.5))
    fits["chosen"] = max((k for k in fits), key=lambda k: fits[k][2]) if fits else None
    return fits


_ACIQ_ALPHA = {"laplace": ACIQ_LAPLACE, "gauss": ACIQ_GAUSS,
               "exponential": ACIQ_LAPLACE_ONE_SIDED, "half_normal": ACIQ_GAUSS_ONE_SIDED}


def aciq(stats: TensorStats) -> tuple[float, float]:
    _need_histogram(stats, "aciq")
    t = _trivial(stats)
    if t:
        return t
    fit = aciq_fit(stats)
    family = fit["chosen"]
    if family is None:
        return minmax(stats)
    mu, spread, _ = fit[family]
    alpha = _ACIQ_ALPHA[family] * spread
    lo, hi = (0.0, alpha) if family in ("exponential", "half_normal") else (mu - alpha, mu + alpha)
    if _one_sided(stats) < 0:  # fitted on the mirrored values
        lo, hi = -hi, -lo
    return _clamp_observed(stats, lo, hi)


_RANGE_FUNCTIONS = {
    "minmax": minmax,
    "moving_average": moving_average_minmax,
    "percentile": percentile,
    "entropy": entropy,
    "mse": mse,
    "aciq": aciq,
}
_OPTIONS = {"percentile": ("percentile",)}


def evaluate_methods(stats: TensorStats, methods=None, **options) -> dict:
    """{method: (lo, hi, sqnr_db)} for every range method (not 'auto'), scored on the
    histogram with the int8 parameters qparams(lo, hi) would give."""
    _need_histogram(stats, "auto")
    out = {}
    for name in methods or _RANGE_FUNCTIONS:
        fn = _RANGE_FUNCTIONS[name]
        kw = {k: v for k, v in options.items() if k in _OPTIONS.get(name, ())}
        lo, hi = fn(stats, **kw)
        out[name] = (lo, hi, sqnr_db(stats, lo, hi))
    return out


def auto(stats: TensorStats, tie_db: float = AUTO_TIE_DB, **options) -> tuple[float, float, str]:
    """The range with the best SQNR; among methods within tie_db of the best, the first in
    METHODS order."""
    scores = evaluate_methods(stats, **options)
    best = max(v[2] for v in scores.values())
    for name in METHODS:
        if name in scores and (scores[name][2] >= best - tie_db or scores[name][2] == best):
            lo, hi, _ = scores[name]
            return lo, hi, name
    raise AssertionError("unreachable")


def choose_range(stats: TensorStats, method: str = "auto", **options) -> tuple[float, float, str]:
    """(lo, hi, method that chose it): lo <= 0 <= hi. Options: percentile=99.99 (percentile,
    and auto), tie_db (auto)."""
    if method not in METHODS:
        raise ConversionError(f"unknown calibration method '{method}'; choose one of {', '.join(METHODS)}")
    allowed = set(_OPTIONS.get(method, ()))
    if method == "auto":
        allowed = {o for opts in _OPTIONS.values() for o in opts} | {"tie_db"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConversionError(f"calibration method '{method}' takes no option {', '.join(unknown)}"
                              + (f"; it takes {', '.join(sorted(allowed))}" if allowed else ""))
    if method == "auto":
        return auto(stats, **options)
    lo, hi = _RANGE_FUNCTIONS[method](stats, **options)
    return lo, hi, method


# --------------------------------------------------------------------------- parameters


def _float32_at_least(x: float) -> float:
    """The smallest float32 value >= x (x > 0, finite)."""
    f = np.float32(x)
    if float(f) < x:
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


def symmetric_qparams(lo: float, hi: float, min_scale: float = MIN_SCALE) -> tuple[float, int]:
    """(scale, 0): int8 symmetric activations covering [lo, hi] with [-127, 127] * scale (the
    level -128 is left unused so that the range is symmetric), scale rounded up to float32."""
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ConversionError(f"quantization range [{lo}, {hi}] is not a finite range")
    top = max(-lo, hi, 0.0)
    if top == 0.0:
        return DEGENERATE_SCALE, 0
    return _float32_at_least(max(top / QMAX, min_scale)), 0


def int16_qparams(lo: float, hi: float, min_scale: float = MIN_SCALE) -> tuple[float, int]:
    """(scale, 0): int16 symmetric activations (SPEC.md 4.6) covering [lo, hi] with
    [-32767, 32767] * scale, scale rounded up to float32. With 65535 levels the full observed
    range costs little resolution, so int16 values take min/max rather than a clipping method."""
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ConversionError(f"quantization range [{lo}, {hi}] is not a finite range")
    top = max(-lo, hi, 0.0)
    if top == 0.0:
        return DEGENERATE_SCALE, 0
    return _float32_at_least(max(top / 32767, min_scale)), 0


def qparams(lo: float, hi: float, min_scale: float = MIN_SCALE) -> tuple[float, int]:
    """(scale, zero_point) of int8 asymmetric activations covering [lo, hi].

    The range is widened to include 0. scale is a float32 value (returned as a Python float)
    and zero_point an int in [-128, 127], such that real 0 is exactly q = zero_point and the
    represented range [scale*(-128 - zp), scale*(127 - zp)] covers [lo, hi]: starting from
    s0 = (hi - lo) / 255, zp is the integer next to -128 - lo/s0 (below or above; usually
    round()) that needs the smaller scale, and scale = max(-lo/(128 + zp), hi/(127 - zp)),
    rounded up to float32. Scales never fall below min_scale (float32 eps); an all-zero range
    gives (DEGENERATE_SCALE, 0) = (1.0, 0).
    """
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConversionError(f"quantization range [{lo}, {hi}] is not finite")
    if lo > hi:
        raise ConversionError(f"quantization range [{lo}, {hi}] has lo > hi")
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if lo == 0.0 and hi == 0.0:
        return DEGENERATE_SCALE, 0
    s0 = max((hi - lo) / (QMAX - QMIN), min_scale)
    z = QMIN - lo / s0
    best = None
    for zp in {min(max(math.floor(z), QMIN), QMAX), min(max(math.ceil(z), QMIN), QMAX)}:
        if (zp == QMIN and lo < 0) or (zp == QMAX and hi > 0):
            continue  # that side would have no level at all
        need_lo = -lo / (zp - QMIN) if lo < 0 else 0.0
        need_hi = hi / (QMAX - zp) if hi > 0 else 0.0
        s = max(need_lo, need_hi, min_scale)
        if best is None or s < best[0] or (s == best[0] and abs(zp - z) < abs(best[1] - z)):
            best = (s, zp)
    if best is None:  # z sits at an end whose side is non-empty: step one level inwards
        zp = QMIN + 1 if z <= QMIN else QMAX - 1
        best = (max(-lo / (zp - QMIN), hi / (QMAX - zp), min_scale), zp)
    s, zp = best
    scale = _float32_at_least(s)
    if not (math.isfinite(scale) and scale > 0):
        raise ConversionError(f"quantization range [{lo}, {hi}] gives an unusable scale {scale}")
    return scale, int(zp)


def group_weight_qparams(w2, group_size: int, qmax: int = WEIGHT_QMAX) -> np.ndarray:
    """float32 scales [C, groups] of symmetric weights w2 [C, K] in [-qmax, qmax], one per
    channel and block of group_size values along K (the last block may be shorter): max|w| /
    qmax; an all-zero block takes its channel's largest scale (or 1.0). (A clipping search
    minimising each block's squared rounding error lost accuracy on the MNIST and digits CNNs
    at int4, 0.4-1 point: their largest weights matter most; bias correction is what helps.)"""
    w2 = np.asarray(w2, np.float64)
    c, k = w2.shape
    groups = -(-k // group_size)
    padded = np.zeros((c, groups * group_size))
    padded[:, :k] = np.abs(w2)
    amax = padded.reshape(c, groups, group_size).max(axis=2)
    top = amax.max(axis=1, keepdims=True)
    amax = np.where(amax > 0, amax, np.where(top > 0, top, DEGENERATE_SCALE * qmax))
    return np.maximum((amax / qmax).astype(np.float32), np.float32(np.finfo(np.float32).tiny))


def quantize_group_weights(w2, scales, group_size: int, qmax: int = WEIGHT_QMAX) -> np.ndarray:
    """int8 values of w2 [C, K] with per-group scales [C, groups]: round half to even, clipped
    to [-qmax, qmax]."""
    w2 = np.asarray(w2, np.float64)
    per_k = np.repeat(np.asarray(scales, np.float64), group_size, axis=1)[:, :w2.shape[1]]
    return np.clip(np.rint(w2 / per_k), -qmax, qmax).astype(np.int8)


def weight_qparams(w, axis: int = 0, per_channel: bool = True, qmax: int = WEIGHT_QMAX) -> np.ndarray:
    """float32 scales of int8 symmetric weights in [-127, 127]: max|w_c| / 127 per channel
    along `axis` ([C] array), or per tensor ([1] array). A channel of zeros takes the tensor's
    largest scale (its integers are 0 whatever the scale, and a sane scale keeps the int32
    bias s_x * s_w[c] and requantization multipliers in range); an all-zero tensor takes
    DEGENERATE_SCALE (1.0)."""
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.floating):
        raise ConversionError(f"weights must be floating point, found dtype {w.dtype}")
    if w.size == 0:
        raise ConversionError(f"weights of shape {w.shape} are empty")
    if not np.isfinite(w).all():
        raise ConversionError("weights hold NaN or infinite values")
    a = np.abs(w.astype(np.float64))
    if per_channel:
        if w.ndim == 0:
            raise ConversionError("per-channel weights need at least one dimension")
        ax = axis % w.ndim if -w.ndim <= axis < w.ndim else None
        if ax is None:
            raise ConversionError(f"channel axis {axis} is out of range for weights of shape {w.shape}")
        amax = a.max(axis=tuple(d for d in range(w.ndim) if d != ax)) if w.ndim > 1 else a
        amax = np.atleast_1d(amax)
    else:
        amax = np.array([a.max()])
    top = float(amax.max())
    fill = top if top > 0 else DEGENERATE_SCALE * qmax
    amax = np.where(amax > 0, amax, fill)
    scales = (amax / qmax).astype(np.float32)
    # a tiny max|w| can underflow float32: keep every scale positive
    return np.maximum(scales, np.float32(np.finfo(np.float32).tiny))


def quantize_weights(w, scales, axis: int = 0, qmax: int = WEIGHT_QMAX) -> np.ndarray:
    """int8 weights: round(w / scale) half to even, clipped to [-qmax, qmax] ([-127, 127]; int4:
    [-7, 7]); `scales` of length 1 (per tensor) or w.shape[axis] (per channel)."""
    w = np.asarray(w, np.float64)
    s = np.asarray(scales, np.float64).reshape(-1)
    if s.size == 0 or not (np.isfinite(s).all() and (s > 0).all()):
        raise ConversionError("weight scales must be finite and > 0")
    if s.size != 1:
        if w.ndim == 0 or not -w.ndim <= axis < w.ndim:
            raise ConversionError(f"channel axis {axis} is out of range for weights of shape {w.shape}")
        ax = axis % w.ndim
        if w.shape[ax] != s.size:
            raise ConversionError(f"{s.size} weight scales for {w.shape[ax]} channels (axis {ax} of "
                                  f"shape {w.shape})")
        shape = [1] * w.ndim
        shape[ax] = s.size
        s = s.reshape(shape)
    q = np.rint(w / s)
    return np.clip(q, -qmax, qmax).astype(np.int8)


GPTQ_DAMPING = 0.01  # of the mean diagonal, added to the Gram matrix: keeps its inverse well conditioned
GPTQ_BLOCK = 128  # inputs rounded between two matrix updates of the rest


def input_gram(x, op: str, attrs: dict, kernel: tuple | None = None) -> np.ndarray | None:
    """sum x_p x_p^T over the input vectors x_p that a Conv (3-D or 4-D input) or Gemm / MatMul layer
    multiplies by each output channel's weights: [groups, K, K] float64, K in the weights'
    order ([C/g, KH, KW] flattened, or the reduction axis); None for a layout it does not know.
    kernel: the Conv's (KH, KW) when its attributes do not say (kernel_shape is optional)."""
    x = np.asarray(x, np.float32)
    if op != "Conv":
        x2 = x.reshape(-1, x.shape[-1])
        return (x2.T @ x2).astype(np.float64)[None]
    if x.ndim not in (3, 4) or attrs.get("auto_pad", "NOTSET") != "NOTSET":
        return None
    if "kernel_shape" not in attrs and kernel is None:
        return None
    kh, kw = attrs.get("kernel_shape", kernel)[-2:] if x.ndim == 4 else (1, attrs.get("kernel_shape", kernel)[-1])
    if x.ndim == 3:  # a signal [N, C, L] as the image [N, C, 1, L], as the lowering runs it
        x = x[:, :, None, :]
        (left, right), sh, dh = attrs.get("pads", (0, 0)), 1, 1
        top, bottom = 0, 0
        sw, dw = attrs.get("strides", (1,))[0], attrs.get("dilations", (1,))[0]
    else:
        top, left, bottom, right = attrs.get("pads", (0, 0, 0, 0))
        sh, sw = attrs.get("strides", (1, 1))
        dh, dw = attrs.get("dilations", (1, 1))
    group = int(attrs.get("group", 1))
    n, c, h, w = x.shape
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    if (kh, kw, sh, sw, top, left, bottom, right) == (1, 1, 1, 1, 0, 0, 0, 0):
        cols = x  # a pointwise convolution: the input itself, no copy
    else:
        xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        cols = np.stack([xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
                         for i in range(kh) for j in range(kw)], axis=2)  # [N, C, KH*KW, OH, OW]
    cols = cols.reshape(n, group, c // group * kh * kw, oh * ow).transpose(1, 2, 0, 3)
    cols = cols.reshape(group, c // group * kh * kw, n * oh * ow)  # [groups, K, positions]
    return np.matmul(cols, cols.transpose(0, 2, 1)).astype(np.float64)


def gptq_weights(w, scales, gram, qmax: int = WEIGHT_QMAX) -> np.ndarray:
    """int8 weights like quantize_weights(w, scales, 0), rounded one input at a time with the
    error of each carried onto the inputs not yet rounded, weighted by the calibration inputs'
    second moments (GPTQ, Frantar et al. 2022): this minimises the error of W x rather than of
    W, which matters where inputs are strongly correlated (image patches, depthwise windows).
    w: [C_out, ...] channels first; gram: [groups, K, K] (input_gram), C_out a multiple of groups."""
    from .float_exec import _blas_limit

    with _blas_limit():  # as run_graph: threaded BLAS thrashes on a shared machine (1.5 s -> 15 s here)
        return _gptq(np.asarray(w, np.float64), scales, gram, qmax)


def _gptq(w, scales, gram, qmax):
    g, k = gram.shape[0], gram.shape[1]
    rows = w.reshape(g, -1, k).copy()  # [groups, C_out / groups, K]
    s = np.broadcast_to(np.asarray(scales, np.float64).reshape(-1), (w.shape[0],)).reshape(g, -1)
    h = gram.copy()
    diag = np.einsum("gkk->gk", h)  # a view: dead inputs (never non-zero) get 1 so h stays invertible
    diag += np.where(diag > 0, 0.0, 1.0) + GPTQ_DAMPING * diag.mean(axis=1, keepdims=True)
    try:
        u = np.linalg.cholesky(np.linalg.inv(h)).transpose(0, 2, 1)  # upper: the inverse's Cholesky factor
    except np.linalg.LinAlgError:
        return quantize_weights(w, scales, 0, qmax)
    q = np.empty_like(rows)
    for start in range(0, k, GPTQ_BLOCK):  # within a block input by input; beyond it one matmul per block
        end = min(start + GPTQ_BLOCK, k)
        errs = np.empty(rows.shape[:2] + (end - start,))
        for i in range(start, end):
            q[:, :, i] = np.clip(np.rint(rows[:, :, i] / s), -qmax, qmax)
            errs[:, :, i - start] = err = (rows[:, :, i] - q[:, :, i] * s) / u[:, i, i][:, None]
            rows[:, :, i + 1:end] -= err[:, :, None] * u[:, None, i, i + 1:end]
        rows[:, :, end:] -= errs @ u[:, start:end, end:]
    return q.reshape(w.shape).astype(np.int8)
