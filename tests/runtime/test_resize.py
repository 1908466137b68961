"""RESIZE (SPEC.md 2.13.27) and PAD's modes (2.13.9, 2.10.20) at run time, on both kernel sets.

RESIZE: random valid tables (1 to 3 taps per axis, negative weights included, every F from 1 to
16) against the spec's formula written independently here: each (i, j) tap pair gathered in 2-D
and summed in int64, then one rounding by floor division; the reference computes one axis after
the other, in int32 or int64. int8 with zero points -128 and 127, int16, float32; batches > 1,
C not a multiple of 16. The converter's own tables (every coordinate and nearest mode) are
compared with ONNX Runtime in tests/converters/test_resize_pad.py. Malformed files are refused
by the loader with a message naming what is wrong.

PAD modes: reflect, edge and wrap against numpy.pad, through both kernel sets (the fast set's
bind hands them to NumPy), int8, int16 and float32; pads past what the mode copies from are
refused."""
from __future__ import annotations

import numpy as np
import pytest

import qrt
from qrt.errors import InvalidModelError
from qrt.format import DType, ModelBuilder, OpCode, PadMode, PadOptions
from qrt.format.model import QUANT_RANGE
from qrt.format.versions import written_revision
from qrt.ops import min_runtime_version
from tests.format.corrupt import unverified_bytes

KERNELS = ("reference", "fast")
DTYPES = {DType.INT8: np.int8, DType.INT16: np.int16, DType.FLOAT32: np.float32}


def random_table(rng, n_in: int, n_out: int, taps: int, frac: int, negative: bool):
    """(indices, weights) int32 [n_out, taps]: indices anywhere in [0, n_in), weights summing to
    2^frac per row (some negative when asked)."""
    index = rng.integers(0, n_in, (n_out, taps)).astype(np.int32)
    one = 1 << frac
    lo = -one if negative else 0
    weight = rng.integers(lo, one + 1, (n_out, taps)).astype(np.int64)
    weight[:, -1] = one - weight[:, :-1].sum(axis=1)
    return index, weight.astype(np.int32)


def resize_model(x_shape, dtype, scale, zp, tables, fracs, name="x"):
    """A one-RESIZE model: x (a graph input) and the tables as constants."""
    b = ModelBuilder("resize")
    q = {} if dtype == DType.FLOAT32 else {"scale": scale, "zero_point": zp}
    x = b.tensor(name, dtype, x_shape, **q)
    b.input(name, x)
    ins = [x]
    for axis, ((index, weight), f) in enumerate(zip(tables, fracs)):
        ins.append(b.tensor(f"index{axis}", DType.INT32, index.shape, index))
        ins.append(b.tensor(f"weight{axis}", DType.INT32, weight.shape, weight, scale=2.0 ** -f, zero_point=0))
    out_shape = (x_shape[0], tables[0][0].shape[0], tables[1][0].shape[0], x_shape[3])
    y = b.tensor("y", dtype, out_shape, **q)
    b.op(OpCode.RESIZE, ins, [y])
    b.output("y", y)
    return b.build()


def spec_formula(x, zp, tables, fracs, dtype):
    """SPEC.md 2.13.27: sum over every (i, j) of weight_h weight_w (x - zp) at the 2-D gathered
    position, exact in int64 (float64 for float32), one rounding, clamp."""
    (ih, wh), (iw, ww) = tables
    n = fracs[0] + fracs[1]
    exact = dtype != DType.FLOAT32
    d = x.astype(np.int64) - zp if exact else x.astype(np.float64)
    acc = 0
    for i in range(ih.shape[1]):
        for j in range(iw.shape[1]):
            w = wh[:, i].astype(np.int64)[:, None] * ww[:, j].astype(np.int64)[None, :]
            acc = acc + (w if exact else w.astype(np.float64))[None, :, :, None] * \
                d[:, ih[:, i][:, None], iw[:, j][None, :], :]
    if not exact:
        return acc * 2.0 ** -n
    lo, hi = QUANT_RANGE[dtype]
    return np.clip(zp + np.floor_divide(acc + 2 ** (n - 1), 2**n), lo, hi).astype(DTYPES[dtype])


def draw(rng, shape, dtype):
    if dtype == DType.FLOAT32:
        return rng.standard_normal(shape).astype(np.float32)
    lo, hi = QUANT_RANGE[dtype]
    return rng.integers(lo, hi, shape, endpoint=True).astype(DTYPES[dtype])


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("dtype", [DType.INT8, DType.INT16, DType.FLOAT32], ids=lambda d: d.name)
def test_resize_matches_the_spec(kernels, dtype):
    rng = np.random.default_rng(int(dtype) * 7 + len(kernels))
    zps = [-128, 127, 0, 5] if dtype == DType.INT8 else [0]
    for case in range(48):
        n, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 10)), int(rng.integers(1, 10))
        c = int(rng.choice([1, 3, 17, 33]))
        oh, ow = int(rng.integers(1, 14)), int(rng.integers(1, 14))
        fracs = [int(rng.choice([1, 2, 5, 11, 15, 16])) for _ in range(2)]
        taps = [int(rng.integers(1, 4)) for _ in range(2)]
        negative = case % 3 == 0
        tables = [random_table(rng, h, oh, taps[0], fracs[0], negative),
                  random_table(rng, w, ow, taps[1], fracs[1], negative)]
        zp = zps[case % len(zps)]
        model = resize_model((n, h, w, c), dtype, 0.05, zp, tables, fracs)
        x = draw(rng, (n, h, w, c), dtype)
        got = qrt.load(qrt.to_bytes(model), kernels=kernels).run(x, raw=True)
        want = spec_formula(x, zp, tables, fracs, dtype)
        assert got.dtype == DTYPES[dtype] and got.shape == want.shape
        if dtype == DType.FLOAT32:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        else:
            assert np.array_equal(got, want), (case, np.argwhere(got != want)[:3].tolist())


@pytest.mark.parametrize("kernels", KERNELS)
def test_one_tap_is_an_exact_gather(kernels):
    """Nearest neighbour: one tap of weight 2^F per axis copies x, whatever F and zero point."""
    rng = np.random.default_rng(11)
    for zp in (-128, 127):
        for frac in (1, 11, 16):
            ih = rng.integers(0, 5, (9, 1)).astype(np.int32)
            iw = rng.integers(0, 7, (13, 1)).astype(np.int32)
            ones = [np.full((9, 1), 1 << frac, np.int32), np.full((13, 1), 1 << frac, np.int32)]
            model = resize_model((2, 5, 7, 19), DType.INT8, 0.1, zp, [(ih, ones[0]), (iw, ones[1])], [frac, frac])
            x = draw(rng, (2, 5, 7, 19), DType.INT8)
            got = qrt.load(qrt.to_bytes(model), kernels=kernels).run(x, raw=True)
            assert np.array_equal(got, x[:, ih[:, 0]][:, :, iw[:, 0]])


def test_blend_of_extremes_rounds_once():
    """Ties of the one rounding go up (SPEC 4.2): halfway between -128 and -127 is -127, and
    between 126 and 127 is 127; int32 sums are wide enough at F = 11 (255 x 2^22)."""
    half = [np.array([[0, 1]], np.int32), np.array([[1 << 10, 1 << 10]], np.int32)]
    one = [np.array([[0]], np.int32), np.array([[1 << 11]], np.int32)]
    for zp, pair, want in ((-128, (-128, -127), -127), (127, (126, 127), 127), (0, (-3, -2), -2)):
        model = resize_model((1, 1, 2, 1), DType.INT8, 0.1, zp, [one, half], [11, 11])
        x = np.array(pair, np.int8).reshape(1, 1, 2, 1)
        for kernels in KERNELS:
            assert qrt.load(qrt.to_bytes(model), kernels=kernels).run(x, raw=True).item() == want


def test_resize_file_needs_revision_5():
    rng = np.random.default_rng(2)
    tables = [random_table(rng, 3, 5, 2, 11, False), random_table(rng, 4, 2, 1, 11, False)]
    model = qrt.read_model(qrt.to_bytes(resize_model((1, 3, 4, 2), DType.INT8, 0.1, 3, tables, [11, 11])))
    assert (model.format_version, model.min_runtime_version) == (5, "0.3.0")


# ---------------------------------------------------------------------------- refusals

def _valid_tables():
    ih, wh = np.array([[0, 1], [1, 2]], np.int32), np.array([[1024, 1024], [2048, 0]], np.int32)
    iw, ww = np.array([[0], [2], [1]], np.int32), np.full((3, 1), 2048, np.int32)
    return [(ih, wh), (iw, ww)]


def _with(**change):
    """A RESIZE model of x [1, 3, 3, 4] with one thing changed: a table, a scale, the output."""
    tables = _valid_tables()
    fracs = [11, 11]
    if "index_h" in change:
        tables[0] = (np.asarray(change["index_h"], np.int32), tables[0][1])
    if "index_w" in change:
        tables[1] = (np.asarray(change["index_w"], np.int32), tables[1][1])
    if "weight_h" in change:
        tables[0] = (tables[0][0], np.asarray(change["weight_h"], np.int32))
    if "weight_w" in change:
        tables[1] = (tables[1][0], np.asarray(change["weight_w"], np.int32))
    if "frac_h" in change:
        fracs[0] = change["frac_h"]
    model = resize_model((1, 3, 3, 4), DType.INT8, 0.1, -3, tables, fracs)
    if "edit" in change:
        change["edit"](model)
    return model


def _refused(model, pattern):
    with pytest.raises(InvalidModelError, match=pattern):
        qrt.read_model(unverified_bytes(model))
    with pytest.raises(InvalidModelError, match=pattern):
        qrt.to_bytes(model)


def _tensor(model, name):
    return next(t for t in model.tensors if t.name == name)


def _set_quant(name, scale=None, zero_point=None):
    def edit(model):
        q = _tensor(model, name).quant
        if scale is not None:
            q.scale = np.array([scale], np.float32)
        if zero_point is not None:
            q.zero_point = np.array([zero_point], np.int64)
    return edit


@pytest.mark.parametrize("change,pattern", [
    (dict(index_h=[[0, 3], [1, 2]]), r"index0.*leave \[0, 3\)"),
    (dict(index_h=[[0, -1], [1, 2]]), r"index0.*leave \[0, 3\)"),
    (dict(weight_h=[[1024, 1023], [2048, 0]]), r"weight0.: row 0 does not sum to 2\^11"),
    (dict(weight_h=[[1024, 1024], [4096, -2047]]), r"row 1 does not sum to 2\^11"),
    (dict(frac_h=17, weight_h=[[1 << 16, 1 << 16], [1 << 17, 0]]), r"one scale 2\^-F \(1 <= F <= 16\)"),
    (dict(edit=_set_quant("weight0", scale=1.0)), r"one scale 2\^-F"),
    (dict(edit=_set_quant("weight0", scale=0.0003)), r"one scale 2\^-F"),
    (dict(edit=_set_quant("weight1", zero_point=1)), r"weight1.*zero point 0"),
    (dict(weight_h=[[2**30, 2048 - 2**30], [2048, 0]], weight_w=[[2048]] * 3), None),  # the control: fits
    (dict(weight_h=[[2**30, 2048 - 2**30], [2048, 0]], weight_w=[[2**30 + 2048 - 1]] * 3), r"weight1.: row 0 does not sum"),
    (dict(weight_h=[[2**30, 2048 - 2**30]] * 2, index_w=[[0, 1]] * 3, weight_w=[[2**30, 2048 - 2**30]] * 3),
     r"the weights' row sums of \|w\| can overflow the 64-bit sums"),
    (dict(edit=lambda m: setattr(_tensor(m, "y"), "shape", (1, 2, 4, 4))),
     r"output tensor 'y' has shape \(1, 2, 4, 4\); expected \(1, 2, 3, 4\)"),
    (dict(index_h=[[0], [1]]), r"tables \(2, 1\) \(2, 2\) must both be \[OH, taps\]"),
])
def test_malformed_resize_is_refused(change, pattern):
    if pattern is None:
        qrt.read_model(qrt.to_bytes(_with(**change)))
    else:
        _refused(_with(**change), pattern)


def test_malformed_resize_operands_are_refused():
    def quantized_index(m):
        t = _tensor(m, "index1")
        t.quant = _tensor(m, "weight1").quant
    _refused(_with(edit=quantized_index), r"indices tensor 'index1' must not be quantized")

    def int16_index(m):
        t = _tensor(m, "index0")
        t.dtype, t.data = DType.INT16, t.data.astype(np.int16)
    _refused(_with(edit=int16_index), r"'index0' is INT16; expected INT32")

    def other_output_scale(m):
        _tensor(m, "y").quant.scale = np.array([0.2], np.float32)
    _refused(_with(edit=other_output_scale), r"must keep the quantization")

    # tables fed at run time: a graph input is not a constant
    b = ModelBuilder("resize")
    x = b.tensor("x", DType.INT8, (1, 3, 3, 4), scale=0.1, zero_point=0)
    ih = b.tensor("ih", DType.INT32, (2, 1))
    tables = _valid_tables()
    wh = b.tensor("wh", DType.INT32, (2, 1), np.full((2, 1), 2048, np.int32), scale=2.0**-11, zero_point=0)
    iw = b.tensor("iw", DType.INT32, tables[1][0].shape, tables[1][0])
    ww = b.tensor("ww", DType.INT32, tables[1][1].shape, tables[1][1], scale=2.0**-11, zero_point=0)
    y = b.tensor("y", DType.INT8, (1, 2, 3, 4), scale=0.1, zero_point=0)
    b.input("x", x)
    b.input("ih", ih)
    b.op(OpCode.RESIZE, [x, ih, wh, iw, ww], [y])
    b.output("y", y)
    _refused(b.build(), r"'ih' must be a constant")


def test_resize_of_a_signal_shape_is_refused():
    b = ModelBuilder("resize")
    x = b.tensor("x", DType.INT8, (1, 3, 4), scale=0.1, zero_point=0)
    t = _valid_tables()
    ins = [x] + [b.tensor(f"t{k}", DType.INT32, a.shape, a, **({"scale": 2.0**-11, "zero_point": 0} if k % 2 else {}))
                 for k, a in enumerate([t[0][0], t[0][1], t[1][0], t[1][1]])]
    y = b.tensor("y", DType.INT8, (1, 2, 3), scale=0.1, zero_point=0)
    b.input("x", x)
    b.op(OpCode.RESIZE, ins, [y])
    b.output("y", y)
    _refused(b.build(), r"expected \[N, H, W, C\]")


# ---------------------------------------------------------------------------- PAD modes

def pad_model(shape, dtype, pads, mode, zp=0):
    b = ModelBuilder("pad")
    q = {} if dtype == DType.FLOAT32 else {"scale": 0.1, "zero_point": zp}
    x = b.tensor("x", dtype, shape, **q)
    out = tuple(d + pads[k] + pads[len(shape) + k] for k, d in enumerate(shape))
    y = b.tensor("y", dtype, out, **q)
    b.input("x", x)
    b.op(OpCode.PAD, [x], [y], PadOptions(tuple(pads), mode))
    b.output("y", y)
    return b.build()


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("mode", [PadMode.REFLECT, PadMode.EDGE, PadMode.WRAP], ids=lambda m: m.name)
@pytest.mark.parametrize("dtype", [DType.INT8, DType.INT16, DType.FLOAT32], ids=lambda d: d.name)
def test_pad_modes_match_numpy(kernels, mode, dtype):
    rng = np.random.default_rng(int(mode) * 10 + int(dtype))
    for case in range(20):
        rank = int(rng.integers(1, 5))
        shape = tuple(int(d) for d in rng.integers(1, 7, rank))
        most = {PadMode.REFLECT: -1, PadMode.EDGE: 4, PadMode.WRAP: 0}[mode]
        pads = [int(rng.integers(0, max(0, min(4, shape[k % rank] + most)) + 1)) for k in range(2 * rank)]
        zp = int(rng.choice([-128, 127])) if dtype == DType.INT8 else 0
        model = pad_model(shape, dtype, pads, mode, zp)
        x = draw(rng, shape, dtype)
        got = qrt.load(qrt.to_bytes(model), kernels=kernels).run(x, raw=True)
        want = np.pad(x, [(pads[k], pads[rank + k]) for k in range(rank)], mode=mode.name.lower())
        assert np.array_equal(got, want), (shape, pads)


def test_pad_modes_by_example():
    x = np.array([1, 2, 3], np.int8)
    for mode, want in ((PadMode.REFLECT, [3, 2, 1, 2, 3, 2]), (PadMode.EDGE, [1, 1, 1, 2, 3, 3]),
                       (PadMode.WRAP, [2, 3, 1, 2, 3, 1]), (PadMode.CONSTANT, [-5, -5, 1, 2, 3, -5])):
        got = qrt.load(qrt.to_bytes(pad_model((3,), DType.INT8, (2, 1), mode, zp=-5)), kernels="fast").run(x, raw=True)
        assert got.tolist() == want, mode


def test_pad_mode_versions():
    """A constant PAD is written as before revision 5; another mode needs revision 5 and 0.3.0."""
    constant = qrt.read_model(qrt.to_bytes(pad_model((2, 3), DType.INT8, (0, 1, 0, 1), PadMode.CONSTANT)))
    assert (constant.format_version, constant.min_runtime_version) == (3, "0.1.0")
    edge = pad_model((2, 3), DType.INT8, (0, 1, 0, 1), PadMode.EDGE)
    assert (written_revision(edge), min_runtime_version(edge)) == (5, "0.3.0")
    back = qrt.read_model(qrt.to_bytes(edge))
    assert back.operators[0].options.mode == PadMode.EDGE


@pytest.mark.parametrize("shape,pads,mode,pattern", [
    ((3, 4), (0, 4, 0, 0), PadMode.REFLECT, r"reflect pads 4, 0 of dimension 1 exceed its size 4 - 1"),
    ((3, 4), (0, 0, 3, 0), PadMode.REFLECT, r"reflect pads 0, 3 of dimension 0 exceed its size 3 - 1"),
    ((1, 4), (0, 0, 1, 0), PadMode.REFLECT, r"dimension 0 exceed its size 1 - 1"),
    ((3, 4), (0, 0, 0, 5), PadMode.WRAP, r"wrap pads 0, 5 of dimension 1 exceed its size 4$"),
    ((3, 4), (0, 0, 0, 1), 4, r"mode 4 is not a PadMode \(0-3\)"),
])
def test_pad_modes_refuse_what_they_cannot_copy(shape, pads, mode, pattern):
    _refused(pad_model(shape, DType.INT8, pads, mode), pattern)


def test_edge_pads_any_length():
    x = np.array([[4, -9]], np.int8)
    model = pad_model((1, 2), DType.INT8, (3, 0, 0, 5), PadMode.EDGE)
    got = qrt.load(qrt.to_bytes(model)).run(x, raw=True)
    assert np.array_equal(got, np.pad(x, [(3, 0), (0, 5)], mode="edge"))
