"""Dynamic dimensions through `qrt convert --max-shape` (converters/symbolic.py): one file runs
every length up to the maximum, without reloading, and follows the float model at each; what
cannot follow a length is refused with the reason."""
from __future__ import annotations

import math

import numpy as np
import pytest

import qrt
from qrt.converters import ConversionError

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
from torch import nn  # noqa: E402

from qrt.converters.torch_frontend import quiet_export  # noqa: E402

MAX = 16


class TextEncoder(nn.Module):
    """Token and position embeddings (positions cut to the length by a Shape chain), masked
    attention, LayerNorm, GELU, mean over the tokens."""

    def __init__(self, d=32, h=2):
        super().__init__()
        self.d, self.h = d, h
        self.emb, self.pos = nn.Embedding(60, d), nn.Parameter(torch.randn(64, d) * 0.3)
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, d))

    def forward(self, ids, mask):
        b, t = ids.shape
        x = self.emb(ids) + self.pos[:t]
        q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, self.h, self.d // self.h).permute(2, 0, 3, 1, 4)
        ext = (1.0 - mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        att = torch.softmax(q @ k.transpose(-1, -2) * 0.25 + ext, -1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, self.d))
        x = x + self.ff(self.ln2(x))
        return x.mean(1)


class SignalNet(nn.Module):
    """A strided Conv1d front end (length floor((L + 1) / 2)), frames as tokens, a LayerNorm."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(4, 16, 3, padding=1), nn.Conv1d(16, 16, 3, stride=2, padding=1)
        self.ln = nn.LayerNorm(16)

    def forward(self, x):
        y = torch.nn.functional.gelu(self.c2(torch.nn.functional.gelu(self.c1(x))))
        return self.ln(y.transpose(1, 2))


def _export(model, args, names, dynamic, path):
    with quiet_export(), torch.no_grad():
        torch.onnx.export(model, args, path, input_names=names, output_names=["y"], dynamic_axes=dynamic,
                          opset_version=17, dynamo=False)
    return path


def _cos(a, b):
    return float(np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b))


def test_text_encoder_runs_every_length(tmp_path):
    torch.manual_seed(0)
    model = TextEncoder().eval()
    ids, mask = torch.randint(0, 60, (1, MAX)), torch.ones(1, MAX, dtype=torch.int64)
    path = _export(model, (ids, mask), ["ids", "mask"], {"ids": {1: "sequence"}, "mask": {1: "sequence"}},
                   str(tmp_path / "text.onnx"))
    rng = np.random.default_rng(0)
    calib = []  # sentences of every length: ranges for short and long inputs alike
    for t in list(range(1, MAX + 1)) * 3:
        keep = (rng.random((1, t)) < 0.9).astype(np.int64)
        keep[:, 0] = 1
        calib.append({"ids": rng.integers(0, 60, (1, t)), "mask": keep})
    out = tmp_path / "text.qmodel"
    report = qrt.convert(path, calib, out, show_progress=False, integer_only=True,
                         max_shape={"ids": (1, MAX), "mask": (1, MAX)})
    assert any("sequence" in n for n in report.notes), report.notes
    m = qrt.load(out)
    assert m.definition.symbols[0].name == "sequence" and m.definition.symbols[0].max == MAX
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for t in (MAX, 11, 5, 1):
        x = rng.integers(0, 60, (3, t))
        keep = np.ones((3, t), np.int64)
        keep[1, t // 2 + 1:] = 0
        want = np.concatenate([sess.run(None, {"ids": x[i:i + 1], "mask": keep[i:i + 1]})[0] for i in range(3)])
        got = m.run({"ids": x, "mask": keep})
        assert got.shape == want.shape
        assert _cos(got, want) > 0.99, (t, _cos(got, want))
    with pytest.raises(qrt.InputError, match="sequence"):
        m.run({"ids": np.zeros((1, MAX + 1), np.int64), "mask": np.ones((1, MAX + 1), np.int64)})
    with pytest.raises(qrt.InputError):
        m.run({"ids": np.zeros((1, 4), np.int64), "mask": np.ones((1, 5), np.int64)})


def test_strided_signal_runs_every_length(tmp_path):
    torch.manual_seed(0)
    model = SignalNet().eval()
    path = _export(model, (torch.randn(1, 4, 40),), ["x"], {"x": {2: "length"}}, str(tmp_path / "sig.onnx"))
    rng = np.random.default_rng(1)
    out = tmp_path / "sig.qmodel"
    qrt.convert(path, rng.normal(size=(30, 1, 4, 40)).astype(np.float32), out, show_progress=False,
                integer_only=True, max_shape={"x": (1, 4, 40)})
    m = qrt.load(out)
    for length in (40, 39, 24, 7, 2):
        x = rng.normal(size=(2, 4, length)).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        got = m.run(x)
        assert got.shape == want.shape == (2, (length + 1) // 2, 16)
        assert _cos(got, want) > 0.99, (length, _cos(got, want))


class PoolNet(nn.Module):
    """MTCNN P-Net's front: conv, a ceil-mode 2x2 max pool (its windows at odd sizes overhang),
    four 2x poolings in a row on the width (a dimension of floor(W / 16))."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.squeeze = nn.Sequential(*[nn.MaxPool2d((1, 2)) for _ in range(4)])

    def forward(self, x):
        y = self.c2(self.pool(torch.relu(self.c1(x))))
        return y, self.squeeze(y)


def test_ceil_mode_pools_and_deep_poolings_run_every_height_and_width(tmp_path):
    torch.manual_seed(0)
    model = PoolNet().eval()
    path = _export(model, (torch.randn(1, 3, 40, 128),), ["x"], {"x": {2: "height", 3: "width"}},
                   str(tmp_path / "pool.onnx"))
    rng = np.random.default_rng(2)
    out = tmp_path / "pool.qmodel"
    qrt.convert(path, rng.normal(size=(20, 1, 3, 40, 128)).astype(np.float32), out, show_progress=False,
                max_shape={"x": (1, 3, 40, 128)})
    m = qrt.load(out)
    for h, w in ((40, 128), (39, 127), (25, 97), (20, 64)):  # the smallest ones the file takes
        x = rng.normal(size=(1, 3, h, w)).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x))
        for got, want in zip(m.run(x).values(), want):
            assert got.shape == want.shape, (h, w, got.shape, want.shape)
            assert _cos(got, want.numpy()) > 0.99, (h, w, _cos(got, want.numpy()))


def test_what_cannot_follow_a_length_is_refused(tmp_path):
    """A constant computed from the length (a ramp 0 .. 1 over the tokens: at every length
    other values, not a corner of the longest) cannot run at other lengths from one file: the
    conversion says which constant and why. And a dynamic dimension needs its maximum."""
    torch.manual_seed(0)

    class Ramp(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            t = x.shape[1]
            return self.lin(x) * (torch.arange(t, dtype=torch.float32) / t)[None, :, None]

    path = _export(Ramp().eval(), (torch.randn(1, 6, 8),), ["x"], {"x": {1: "sequence"}}, str(tmp_path / "ramp.onnx"))
    with pytest.raises(ConversionError, match="changes with 'sequence' other than by cutting its corner"):
        qrt.convert(path, np.random.default_rng(0).normal(size=(10, 1, 6, 8)).astype(np.float32),
                    tmp_path / "ramp.qmodel", show_progress=False, max_shape={"x": (1, 6, 8)})
    with pytest.raises(ConversionError, match="--max-shape x=1xNx8"):
        qrt.convert(path, np.zeros((2, 1, 6, 8), np.float32), tmp_path / "ramp2.qmodel", show_progress=False)


class BertLayer(nn.Module):
    """A Hugging Face BertLayer as its code writes it: views and permutes for the heads, the
    extended mask added to the scores, the exact GELU written out with erf, post-norm."""

    def __init__(self, d=64, heads=4):
        super().__init__()
        self.d, self.h = d, heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-12), nn.LayerNorm(d, eps=1e-12)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def heads(self, x):
        b, t, _ = x.size()
        return x.view(b, t, self.h, self.d // self.h).permute(0, 2, 1, 3)

    def forward(self, x, ext):
        q, k, v = self.heads(self.q(x)), self.heads(self.k(x)), self.heads(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d // self.h) + ext
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous()
        x = self.ln1(x + self.o(ctx.view(ctx.size()[:-2] + (self.d,))))
        h = self.up(x)
        return self.ln2(x + self.down(h * 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))))


class Bert(nn.Module):
    """Word, position and token-type embeddings (positions and types cut from buffers of 64 by
    the length, as Hugging Face's BertEmbeddings does), two layers, the tanh pooler."""

    def __init__(self, vocab=100, d=64):
        super().__init__()
        self.word, self.pos, self.typ = nn.Embedding(vocab, d), nn.Embedding(64, d), nn.Embedding(2, d)
        self.ln, self.layers, self.pool = nn.LayerNorm(d, eps=1e-12), nn.ModuleList(BertLayer() for _ in range(2)), \
            nn.Linear(d, d)
        self.register_buffer("position_ids", torch.arange(64).expand((1, -1)))
        self.register_buffer("token_type_ids", torch.zeros(1, 64, dtype=torch.long))

    def forward(self, input_ids, attention_mask):
        b, t = input_ids.shape
        x = self.ln(self.word(input_ids) + self.pos(self.position_ids[:, :t])
                    + self.typ(self.token_type_ids[:, :t].expand(b, t)))
        ext = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, ext)
        return torch.tanh(self.pool(x[:, 0]))


@pytest.mark.parametrize("activations", ["int8", pytest.param("int16", marks=pytest.mark.slow)])
def test_bert_dynamic_batch_and_sequence(activations, tmp_path):
    """An ONNX export with dynamic batch and sequence (opset 14, as Hugging Face's exporters
    write it): one integer-only file at batch 1 and sequences up to 24 runs batches of 4 at
    every length. Measured: cosine 0.9995 (int8) and 0.99998 (int16) to ONNX Runtime at 24, 13
    and 3 tokens."""
    torch.manual_seed(0)
    t_max = 24
    model = Bert().eval()
    ids, keep = torch.randint(0, 100, (2, t_max)), torch.ones(2, t_max, dtype=torch.int64)
    path = _export(model, (ids, keep), ["input_ids", "attention_mask"],
                   {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
                   str(tmp_path / "bert.onnx"))
    rng = np.random.default_rng(0)
    calib = []
    for t in list(range(2, t_max + 1)) * 2:
        mask = np.ones((1, t), np.int64)
        mask[0, rng.integers(1, t + 1):] = 0
        calib.append({"input_ids": rng.integers(0, 100, (1, t)), "attention_mask": mask})
    out = tmp_path / "bert.qmodel"
    qrt.convert(path, calib, out, show_progress=False, integer_only=True, activations=activations,
                max_shape={"input_ids": (1, t_max), "attention_mask": (1, t_max)})
    m = qrt.load(out)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for t in (t_max, 13, 3):
        x, mask = rng.integers(0, 100, (4, t)), np.ones((4, t), np.int64)
        mask[1, t // 2 + 1:] = 0
        want = sess.run(None, {"input_ids": x, "attention_mask": mask})[0]
        got = m.run({"input_ids": x, "attention_mask": mask})
        assert _cos(got, want) > (0.999 if activations == "int16" else 0.995), (t, _cos(got, want))


def test_cli_max_shape(tmp_path, capsys):
    """`qrt convert --max-shape x=1x4x40` makes the dynamic file; a malformed value is refused
    saying what the flag takes."""
    from qrt.cli import main as cli_main

    torch.manual_seed(0)
    path = _export(SignalNet().eval(), (torch.randn(1, 4, 40),), ["x"], {"x": {2: "length"}}, str(tmp_path / "s.onnx"))
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).normal(size=(8, 1, 4, 40)).astype(np.float32))
    out = tmp_path / "s.qmodel"
    assert cli_main(["convert", path, "--calib", str(calib), "-o", str(out), "--quiet", "--max-shape", "x=1x4x40"]) == 0
    assert "dynamic dimension 'length': any size up to 40" in capsys.readouterr().out
    assert qrt.load(out).run(np.zeros((1, 4, 9), np.float32)).shape == (1, 5, 16)
    with pytest.raises(SystemExit, match="NAME=SHAPE"):
        cli_main(["convert", path, "--calib", str(calib), "-o", str(tmp_path / "t.qmodel"), "--max-shape", "x=1by40"])
