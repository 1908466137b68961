"""brainmaze-eeg-models' sleep-spindle detector (OpenSpindleNet, the 'eeg' model: a 1-D conv
U-Net with four ConvTranspose upsamplings, GELU (Erf) and a segmentation / detection head),
through `qrt convert` and judged as its users run it: the package's own pipeline (resampling,
z-scoring, wavelet scalogram, decoding, NMS) with the network swapped for the int8 .qmodel,
on synthetic EEG (pink noise) with sleep spindles inserted at known times. The events int8
finds must be the events float finds (issue: recurrent, audio and detection models)."""
from __future__ import annotations

import numpy as np
import pytest

import qrt
from qrt.format import OpCode

pytestmark = pytest.mark.slow

spindles = pytest.importorskip("brainmaze_eeg_models.spindles", reason="brainmaze-eeg-models (make test installs it)")
pytest.importorskip("onnx")

FS = 250  # the model's rate: no resampling in the package's pipeline


def eeg_with_spindles(seed: int, seconds: int = 300):
    """~20 uV pink-noise EEG at 250 Hz with a spindle (11.5-14.5 Hz, 0.7-1.5 s, Gaussian
    envelope, 45 uV) about every 20 s; returns (signal, [(start s, end s)] of the spindles)."""
    rng = np.random.default_rng(seed)
    n = FS * seconds
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spectrum / np.sqrt(f), n)
    x = 20 * x / x.std()
    t = np.arange(n) / FS
    events = []
    for c in np.arange(15, seconds - 15, 20.0) + rng.uniform(-3, 3, len(range(15, seconds - 15, 20))):
        d, f0 = rng.uniform(0.7, 1.5), rng.uniform(11.5, 14.5)
        x += 45 * np.exp(-0.5 * ((t - c) / (d / 4)) ** 2) * np.sin(2 * np.pi * f0 * t)
        events.append((c - d / 2, c + d / 2))
    return x, events


class Recorder:
    """Stands in for the detector's ONNX Runtime model: runs it and keeps every feed."""

    def __init__(self, model):
        self.model, self.batch_size, self.feeds = model, 1, []

    def run(self, feeds):
        self.feeds.append({k: np.array(v) for k, v in feeds.items()})
        return self.model.run(feeds)


class Quantized:
    """The .qmodel in the detector's place (its model's run(feeds) -> {output: array})."""

    def __init__(self, path):
        self.model, self.batch_size = qrt.load(path), 1

    def run(self, feeds):
        return self.model.run(feeds)


def _overlap(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    det = spindles.SpindleDetector("eeg", device="cpu", threads=1, batch_size=1)
    onnx_path = det._model.path
    recorder = Recorder(det._model)
    det._model = recorder
    det.detect(eeg_with_spindles(seed=1, seconds=160)[0], FS)  # calibration: another recording
    out = tmp_path_factory.mktemp("eeg") / "spindles.qmodel"
    report = qrt.convert(onnx_path, recorder.feeds, out, show_progress=False, holdout=0.0)
    return det, recorder.model, out, report


def test_spindle_detector_finds_the_same_events_in_int8(converted):
    det, float_model, path, report = converted
    codes = [op.opcode for op in qrt.read_model(path).operators]
    assert report.float_ops == [] and OpCode.CONV_2D in codes
    x, truth = eeg_with_spindles(seed=0)
    det._model = Recorder(float_model)
    want = det.detect(x, FS).channel_intervals(0)
    det._model = Quantized(path)
    got = det.detect(x, FS).channel_intervals(0)
    # the detector finds the inserted spindles in float (the data are fit for the test)
    found = sum(any(_overlap(e, iv[:2]) > 0 for iv in want) for e in truth)
    assert found >= len(truth) - 1, (found, len(truth))
    # and int8 finds the same events: one to one, boundaries within 0.1 s
    assert len(got) == len(want), (got, want)
    for g, w in zip(sorted(got.tolist()), sorted(want.tolist())):
        assert abs(g[0] - w[0]) <= 0.1 and abs(g[1] - w[1]) <= 0.1, (g, w)
        assert abs(g[2] - w[2]) <= 0.05, (g, w)  # confidence
