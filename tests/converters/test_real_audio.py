"""Real audio models through `qrt convert` (issue 14), judged against float on real speech
(bench/fixtures/audio.py: 8 alsa-utils recordings of one woman and 44 espeak-ng sentences in
4 voices; calibration on one half of each speaker's clips, evaluation on the other half):

  Resemblyzer==0.1.4's GE2E speaker encoder (LSTM(40, 256, 3) + Linear + ReLU + L2 norm):
    every pair's cosine within 0.01 of float, same/different-speaker separation kept.
  speechmos==0.0.1.1: PLCMOS v2 (GRU x2, opset 11), AECMOS 16 kHz (GRU x2, opset 9), DNSMOS
    SIG/BAK/OVR (in-graph spectrogram: Conv STFT, Pow, Sqrt, Log; opset 12) and P.808:
    every score within 0.05 of float on clean, noisy and packet-loss speech.

Each model converts as shipped (its input shapes fixed where the frame count cannot be
dynamic: bench/fixtures/audio.py with_static_inputs). Targets that are not met stay asserted;
the xfail mark gives the measured figure (raises=: only that failure is expected).
"""
from __future__ import annotations

import numpy as np
import pytest

import qrt

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
A = pytest.importorskip("bench.fixtures.audio")
from qrt.converters.errors import ConversionError  # noqa: E402

SPEAKERS = ("alsa", "en-us", "en-us_f3", "en_m7", "en-gb_f2")
CONDITIONS = ("clean", "noisy", "packet_loss")
COSINE_TOL, MOS_TOL = 0.01, 0.05


@pytest.fixture(scope="module")
def speech():
    """{"calib" | "eval": [(name, audio, speaker)]}: the alsa recordings split 4 / 4, each voice's
    sentences 0-5 / 6-10."""
    try:
        clips = A.speech()
    except A.SpeechUnavailable as e:
        pytest.skip(f"no speech clips: {e}")
    split = {"calib": [], "eval": []}
    alsa = [c for c in clips if c[2] == "alsa"]
    for c in clips:
        first = alsa.index(c) < len(alsa) // 2 if c[2] == "alsa" else int(c[0].split("_")[1]) <= 5
        split["calib" if first else "eval"].append(c)
    return split


def _joined(clips, speaker, seconds):
    """The speaker's clips one after another, repeated (as speechmos does) or cut to `seconds`."""
    x = np.concatenate([a for _, a, s in clips if s == speaker])
    n = int(seconds * A.SAMPLE_RATE)
    return np.tile(x, -(-n // len(x)))[:n].astype(np.float32)


def _worst(want, got, names):
    d = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    k = np.unravel_index(np.argmax(d), d.shape)
    return float(d.max()), "\n".join(f"{n:28s} float {np.round(w, 3)} qrt {np.round(g, 3)}"
                                     for n, w, g in zip(names, want, got)) + f"\nworst at {k}"


# ----------------------------------------------------------------------------- Resemblyzer


@pytest.fixture(scope="module")
def partials(speech):
    return {k: [(n, A.resemblyzer_partials(a), s) for n, a, s in v] for k, v in speech.items()}


def test_resemblyzer_as_shipped_converts(partials, tmp_path):
    """Its last step, e / torch.norm(e, dim=1, keepdim=True), becomes one RMSNormalization
    (converters/passes.py fuse_l2_norms)."""
    onnx_path = A.resemblyzer_onnx(tmp_path / "resemblyzer.onnx")
    calib = [p[i:i + 1] for _, p, _ in partials["calib"] for i in range(len(p))]
    out = tmp_path / "resemblyzer.qmodel"
    report = qrt.convert(onnx_path, calib, out, show_progress=False, holdout=0.0)
    assert report.float_ops == [], report
    got = qrt.load(out).run(calib[0])
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=0.02)  # the L2 norm is in the file


@pytest.mark.parametrize("activations", [
    pytest.param("int8", marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
        "measured: max |cosine(float) - cosine(int8)| 0.32 over 24 held-out utterances (mean 0.12; same-minus-"
        "different margin 0.20 -> 0.13); the input is "
        "linear mel power (median 6e-5, max 26): int8 input steps round 87 % of it to 0 (quantizing the "
        "input alone, float otherwise: embedding cosine 0.72)"))),
    pytest.param("int16", marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
        "measured: max |cosine difference| 0.12 (mean 0.026); the int16 input step (8e-4) is still above "
        "the median mel power; quantizing the input alone: embedding cosine 0.988"))),
])
def test_resemblyzer_speaker_cosines(partials, tmp_path, activations):
    model = A.resemblyzer_encoder()
    onnx_path = A.resemblyzer_onnx(tmp_path / "resemblyzer.onnx")
    calib = [p[i:i + 1] for _, p, _ in partials["calib"] for i in range(len(p))]
    out = tmp_path / f"resemblyzer_{activations}.qmodel"
    report = qrt.convert(onnx_path, calib, out, activations=activations, show_progress=False, holdout=0.0)
    assert report.float_ops == [] and report.qrt_ops.get("LSTM") == 3, report
    q = qrt.load(out)
    names = [n for n, _, _ in partials["eval"]]
    spk = np.array([s for _, _, s in partials["eval"]])
    with torch.no_grad():
        want = np.stack([A.utterance_embedding(model(torch.from_numpy(p)).numpy()) for _, p, _ in partials["eval"]])
    got = np.stack([A.utterance_embedding(np.concatenate([q.run(p[i:i + 1]) for i in range(len(p))]))
                    for _, p, _ in partials["eval"]])
    sf, sq = want @ want.T, got @ got.T
    off = ~np.eye(len(spk), dtype=bool)
    same, diff = (spk[:, None] == spk[None]) & off, spk[:, None] != spk[None]

    def margin(s):
        return s[same].mean() - s[diff].mean()

    def nn_accuracy(s):
        return np.mean(spk[np.where(off, s, -2).argmax(1)] == spk)

    assert margin(sf) > 0.1, ("the float encoder does not separate the speakers", margin(sf))  # the data is sound
    worst = float(np.abs(sf - sq).max())
    table = f"max |dcos| {worst:.4f} (mean {np.abs(sf - sq).mean():.4f}); margin float {margin(sf):.3f} " \
            f"qrt {margin(sq):.3f}; 1-NN float {nn_accuracy(sf):.3f} qrt {nn_accuracy(sq):.3f}; {names}"
    assert worst <= COSINE_TOL, table
    assert margin(sq) >= margin(sf) - COSINE_TOL and nn_accuracy(sq) >= nn_accuracy(sf) - 1 / len(spk), table


# ----------------------------------------------------------------------------- PLCMOS

PLCMOS_SECONDS = 4.0


@pytest.fixture(scope="module")
def plcmos_data(speech):
    """{"calib" | "eval": [(name, features)]}: every speaker x condition, 4 s each."""
    return {k: [(f"{s}/{c}", A.plcmos_features(A.degrade(_joined(v, s, PLCMOS_SECONDS), c)))
                for s in SPEAKERS for c in CONDITIONS] for k, v in speech.items()}


def test_plcmos_as_shipped_runs(plcmos_data, tmp_path):
    """Its output is a scalar (rank 0): one run per call."""
    f = plcmos_data["calib"][0][1]
    calib = [{"degraded_audio": f, "rater_embed": r} for r in A.rater_embeds(3)]
    out = tmp_path / "plcmos.qmodel"
    qrt.convert(A.speechmos_model("plcmos_v2"), calib, out, show_progress=False, holdout=0.0,
                max_shape={"degraded_audio": f.shape, "rater_embed": (1, 64)})
    assert np.shape(qrt.load(out).run(calib[0])) == ()


@pytest.mark.parametrize("activations", [
    pytest.param("int8", marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
        "measured: max |MOS difference| 0.47 over 15 held-out clips (alsa/clean: float 4.12, int8 3.65, the "
        "highest score among the calibration clips, where the output's range ends); next worst 0.21"))),
    pytest.param("int16", marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
        "measured: max |MOS difference| 0.47 (alsa/clean: float 4.12, int16 3.65: the output saturates at "
        "the calibration clips' highest score, 3.652; also with method='minmax'); next worst 0.09"))),
])
def test_plcmos_scores(plcmos_data, tmp_path, activations):
    shape = plcmos_data["calib"][0][1].shape
    m = A.with_static_inputs(A.speechmos_model("plcmos_v2"), {"degraded_audio": shape})
    raters = A.rater_embeds(15)
    calib = [{"degraded_audio": f, "rater_embed": r} for _, f in plcmos_data["calib"] for r in raters[:3]]
    out = tmp_path / f"plcmos_{activations}.qmodel"
    report = qrt.convert(m, calib, out, activations=activations, show_progress=False, holdout=0.0)
    assert report.float_ops == [] and report.qrt_ops.get("GRU"), report
    q, s = qrt.load(out), ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [n for n, _ in plcmos_data["eval"]]
    # plcmos.py: the mean over 15 random raters (the same 15 for float and qrt)
    want = [np.mean([s.run(None, {"degraded_audio": f, "rater_embed": r})[0] for r in raters])
            for _, f in plcmos_data["eval"]]
    got = [np.mean([q.run({"degraded_audio": f, "rater_embed": r}) for r in raters]) for _, f in plcmos_data["eval"]]
    worst, table = _worst(want, got, names)
    assert worst <= MOS_TOL, table


# ----------------------------------------------------------------------------- AECMOS

AEC_SECONDS = 3.0
AEC_PAIRS = (("en-us", "en_m7"), ("en-us_f3", "alsa"), ("en-gb_f2", "en-us"), ("alsa", "en-gb_f2"))


@pytest.fixture(scope="module")
def aecmos_data(speech):
    """{"calib" | "eval": [(name, features)]}: double talk (near-end and far-end speakers of
    AEC_PAIRS, echo at 0.6), the output of a perfect canceller (clean, noisy, packet loss) or
    of none (the mic signal)."""
    out = {}
    for k, v in speech.items():
        rows = []
        for near_spk, far_spk in AEC_PAIRS:
            near, far = _joined(v, near_spk, AEC_SECONDS), _joined(v, far_spk, AEC_SECONDS)
            mic = np.clip(near + 0.6 * far, -1, 1)
            for c in CONDITIONS:
                rows.append((f"{near_spk}+{far_spk}/{c}", A.aecmos_features(far, mic, A.degrade(near, c), "dt")))
            rows.append((f"{near_spk}+{far_spk}/no-aec", A.aecmos_features(far, mic, mic, "dt")))
        out[k] = rows
    return out


def _aecmos_feeds(x):
    return {"input": x, "h0": np.zeros((4, 1, 64), np.float32)}  # aecmos.py: hidden_size (4, 1, 64)


@pytest.mark.xfail(strict=True, raises=ConversionError, reason=(
    "the dynamic frame count: after 4 MaxPools of 2, tensor '43' dimension 1 follows 'frames' as "
    "{114: 7, 225: 14, 226: 14, 227: 14, 228: 14}: floor((frames + b) / 16) for any b in [-1, 11]; the "
    "sizes converters/symbolic.py probes do not pin b (sizes 1-3 do not convert)"))
def test_aecmos_as_shipped_converts(aecmos_data, tmp_path):
    x = aecmos_data["calib"][0][1]
    out = tmp_path / "aecmos.qmodel"
    report = qrt.convert(A.speechmos_model("aecmos_16kHz"), [_aecmos_feeds(x)], out, show_progress=False,
                         holdout=0.0, max_shape={"input": x.shape})
    assert report.float_ops == [], report
    assert qrt.load(out).run(_aecmos_feeds(x)).shape == (2,)


@pytest.mark.parametrize("activations", [
    pytest.param("int8", marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
        "measured: max |MOS difference| 0.38 over 16 held-out double-talk clips (echo MOS of "
        "en-us+en_m7/noisy: float 4.06, int8 3.68); 7 of 16 within 0.05 on both scores"))),
])
def test_aecmos_scores(aecmos_data, tmp_path, activations):
    shape = aecmos_data["calib"][0][1].shape
    m = A.with_static_inputs(A.speechmos_model("aecmos_16kHz"), {"input": shape})
    out = tmp_path / f"aecmos_{activations}.qmodel"
    report = qrt.convert(m, [_aecmos_feeds(x) for _, x in aecmos_data["calib"]], out, activations=activations,
                         show_progress=False, holdout=0.0)
    assert report.float_ops == [] and report.qrt_ops.get("GRU"), report
    q, s = qrt.load(out), ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [n for n, _ in aecmos_data["eval"]]
    want = [s.run(None, _aecmos_feeds(x))[0] for _, x in aecmos_data["eval"]]  # (echo MOS, degradation MOS)
    got = [q.run(_aecmos_feeds(x)) for _, x in aecmos_data["eval"]]
    worst, table = _worst(want, got, names)
    assert worst <= MOS_TOL, table


# ----------------------------------------------------------------------------- DNSMOS


@pytest.fixture(scope="module")
def dnsmos_audio(speech):
    """{"calib" | "eval": [(name, 9.01 s of audio)]}: every speaker x condition."""
    return {k: [(f"{s}/{c}", A.degrade(_joined(v, s, A.DNSMOS_SAMPLES / A.SAMPLE_RATE), c))
                for s in SPEAKERS for c in CONDITIONS] for k, v in speech.items()}


def test_dnsmos_as_shipped_converts(dnsmos_audio, tmp_path):
    """Its power spectrum Pow(Sqrt(re^2 + im^2), 2) is re^2 + im^2 (passes.rewrite_squares)."""
    x = dnsmos_audio["calib"][0][1][None]
    out = tmp_path / "dnsmos.qmodel"
    report = qrt.convert(A.speechmos_model("dnsmos_sig_bak_ovr"), [x], out, show_progress=False, holdout=0.0)
    assert report.float_ops == [], report
    assert qrt.load(out).run(x).shape == (1, 3)


@pytest.mark.parametrize("activations", [
    pytest.param("int8", marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
        "measured: max |MOS difference| 2.1 (SIG of en_m7/noisy: float 3.34, int8 1.20), BAK up to 1.7: the "
        "in-graph power spectrum (Sqrt, Mul, Max 1e-12, Log) is int8 before the Log, which spans 12 "
        "decades; int16 activations: still 1.6"))),
])
def test_dnsmos_sig_bak_ovr_scores(dnsmos_audio, tmp_path, activations):
    m = onnx.load(A.speechmos_model("dnsmos_sig_bak_ovr"))
    out = tmp_path / f"dnsmos_{activations}.qmodel"
    calib = [x[None] for _, x in dnsmos_audio["calib"][::2]]  # 8 clips: each speaker, each condition
    report = qrt.convert(m, calib, out, activations=activations, show_progress=False, holdout=0.0)
    assert report.float_ops == [], report
    q, s = qrt.load(out), ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [n for n, _ in dnsmos_audio["eval"]]
    want = [A.dnsmos_polyfit(s.run(None, {"input_1": x[None]})[0])[0] for _, x in dnsmos_audio["eval"]]
    got = [A.dnsmos_polyfit(q.run(x[None]))[0] for _, x in dnsmos_audio["eval"]]  # (SIG, BAK, OVRL) MOS
    worst, table = _worst(want, got, names)
    assert worst <= MOS_TOL, table


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "measured: max |MOS difference| 0.22: the held-out clean clips score up to 4.07 in float, above every "
    "calibration clip (3.89), and the int8 output saturates at 3.854 (3 clips); 13 of 15 within 0.05"))
def test_dnsmos_p808_scores(dnsmos_audio, tmp_path):
    path = A.speechmos_model("dnsmos_p808")
    out = tmp_path / "p808.qmodel"
    calib = [A.dnsmos_p808_features(x) for _, x in dnsmos_audio["calib"]]
    report = qrt.convert(path, calib, out, show_progress=False, holdout=0.0)
    assert report.float_ops == [], report
    q, s = qrt.load(out), ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [n for n, _ in dnsmos_audio["eval"]]
    feats = [A.dnsmos_p808_features(x) for _, x in dnsmos_audio["eval"]]
    want = [s.run(None, {"input_1": f})[0][0] for f in feats]
    got = [q.run(f)[0] for f in feats]
    worst, table = _worst(want, got, names)
    assert worst <= MOS_TOL, table
