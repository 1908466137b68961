"""The compiled DEPTHWISE_CONV_2D of the int16 form (16-bit activations x int8 weights, SPEC.md
4.6: qrt/kernels/depthwise.pyx depthwise_conv_2d_int16, the int16 mode of simd/depthwise.h) is
bit-exact with its NumPy reference (the form's own, qrt.ops.op_form(model, 0).reference) on
every instruction-set path this machine supports and at 1 and 2 threads.

Every case is a one-op model built with ModelBuilder (INT16 x and y with zero point 0, INT8
weights [1, KH, KW, C*m] per tensor or per channel along axis 3, INT32 bias) and checked by
verify_model, so it is a model the loader accepts: in particular sum_taps |w| * 2^15 + |bias|
<= 2^31 - 1 per channel. The kernel writes into an array pre-filled with the bitwise complement
of the reference, so any element it skips is caught. Covered: channel counts around the
kernels' blocks (16 and 32 channels), depth multipliers 1-3, kernels 1x1 to 7x7 and 3x1,
strides 1 and 2, dilation 2, asymmetric padding, batches of 2, inputs at the ends of int16,
weights at +-127, biases at the bound, outputs saturating at both ends, fused RELU, RELU6 and
CLIP; the runtime end to end (fast against reference); a packed step run again; guard pages.
"""
from __future__ import annotations

import ctypes
import dataclasses
import mmap
import sys

import numpy as np
import pytest

import qrt
from qrt import verify_model
from qrt.format import Activation, DepthwiseConv2DOptions, DType, ModelBuilder, OpCode
from qrt.kernels import isa as ISA
from qrt.kernels.depthwise import (
    KERNELS, bind_depthwise_conv_2d, bind_depthwise_conv_2d_int16, depthwise_conv_2d_int16,
    pack_depthwise_conv_2d, pack_depthwise_conv_2d_int16,
)
from qrt.ops import op_form, prepare_op
from qrt.ops.base import INT16
from tests.runtime.helpers import int16_scales

INT32_MAX = 2**31 - 1
X_MAX = 2**15  # |x| <= 2^15
PATHS = [(isa, threads) for isa in ISA.supported() for threads in (1, 2)]


# ------------------------------------------------------------------------------- case makers

def _out_size(size, pad_a, pad_b, k, d, s):
    return (size + pad_a + pad_b - d * (k - 1) - 1) // s + 1


def _weights(rng, shape, kind=None) -> np.ndarray:
    kind = int(rng.integers(0, 5)) if kind is None else kind
    if kind == 0:
        return rng.choice(np.array([-127, 127], np.int8), size=shape)  # at +-127
    if kind == 1:
        return np.full(shape, 127 if rng.integers(0, 2) else -127, np.int8)
    return rng.integers(-127, 128, size=shape, dtype=np.int8)


def _bias(rng, w_data, kind=None) -> np.ndarray:
    """Per channel within the loader's bound sum |w| * 2^15 + |bias| <= 2^31 - 1 (SPEC.md 4.6)."""
    l1 = np.abs(w_data.astype(np.int64)).reshape(-1, w_data.shape[3]).sum(axis=0)
    limit = INT32_MAX - l1 * X_MAX
    assert (limit >= 0).all()
    kind = int(rng.integers(0, 4)) if kind is None else kind
    if kind == 0:
        return limit * rng.choice(np.array([-1, 1], np.int64), size=limit.shape)  # at the bound
    if kind == 1:
        return np.zeros(limit.shape, np.int64)
    cap = np.minimum(limit, 1 << 24)
    return (rng.uniform(-1, 1, size=limit.shape) * cap).astype(np.int64)


def _input(rng, shape, kind=None) -> np.ndarray:
    """Random int16, or (one case in two) at the ends of int16."""
    kind = int(rng.integers(0, 8)) if kind is None else kind
    if kind == 0:
        return np.full(shape, 32767, np.int16)
    if kind == 1:
        return np.full(shape, -32768, np.int16)
    if kind == 2:  # alternating ends, along every axis
        idx = np.indices(shape).sum(axis=0)
        return np.where(idx % 2 == 0, 32767, -32768).astype(np.int16)
    if kind == 3:
        return rng.choice(np.array([-32768, 32767], np.int16), size=shape)
    return rng.integers(-32768, 32768, size=shape, dtype=np.int16)


def _output_scale(rng, s_x, s_w, taps) -> np.float32:
    """Around the accumulator's typical size over int16's range, times a random factor: most
    outputs inside int16, some saturating, some collapsing to 0 (tiny multipliers)."""
    s_x, s_w_max = float(s_x), float(np.max(s_w))
    if np.log2(s_x).is_integer() and np.all(np.log2(np.asarray(s_w, np.float64)) % 1 == 0):
        return np.float32(s_x * s_w_max * 2.0 ** int(rng.integers(0, 12)))
    typical = np.sqrt(taps) * 20000.0 * 73.0
    factor = 10.0 ** rng.uniform(-0.5, 1.5)
    if rng.integers(0, 25) == 0:
        factor = 2.0**40  # multiplier below 2^-32: the shift-62 path of SPEC.md 4.1
    return np.float32(s_x * s_w_max * typical / 20000.0 * factor)


def _activation(rng, act=None):
    act = Activation(int(rng.integers(0, 4))) if act is None else act
    kwargs = {"activation": act}
    if act == Activation.CLIP:
        lo = float(rng.uniform(-8, 2))
        kwargs["clip"] = (lo, lo + float(rng.uniform(0, 8)))
    return act, kwargs


@dataclasses.dataclass
class Case:
    model: object
    ins: list
    what: str

    @property
    def params(self):
        return prepare_op(self.model, 0)

    def reference(self, ins=None):
        return op_form(self.model, 0).reference(self.ins if ins is None else ins, self.params)


def make_case(rng, c, mult=1, kernel=(3, 3), stride=(1, 1), dilation=(1, 1), pads=(1, 1, 1, 1),
              n=1, hw=(6, 7), act=None, per_channel=None, x_kind=None, w_kind=None, b_kind=None):
    kh, kw = kernel
    h, w = hw
    oh = _out_size(h, pads[0], pads[2], kh, dilation[0], stride[0])
    ow = _out_size(w, pads[1], pads[3], kw, dilation[1], stride[1])
    assert oh >= 1 and ow >= 1, (hw, kernel, stride, dilation, pads)
    cout = c * mult
    per_channel = bool(rng.integers(0, 2)) if per_channel is None else per_channel
    s_x, s_w = int16_scales(rng, cout, per_channel, rng.integers(0, 3) == 0)  # pow2: ties (x.5) met
    w_data = _weights(rng, (1, kh, kw, cout), w_kind)
    bias_data = _bias(rng, w_data, b_kind)
    act, kwargs = _activation(rng, act)
    b = ModelBuilder("dw16")
    x = b.tensor("x", DType.INT16, (n, h, w, c), scale=s_x, zero_point=0)
    wt = b.tensor("w", DType.INT8, w_data.shape, w_data, scale=s_w, axis=3)
    bias_scale = None
    if rng.integers(0, 2):
        bias_scale = np.float32(s_x) * np.broadcast_to(np.asarray(s_w, np.float32), (cout,))
    bt = b.tensor("bias", DType.INT32, (cout,), bias_data, scale=bias_scale)
    y = b.tensor("y", DType.INT16, (n, oh, ow, cout), scale=_output_scale(rng, s_x, s_w, kh * kw),
                 zero_point=0)
    options = DepthwiseConv2DOptions(stride[0], stride[1], dilation[0], dilation[1], *pads,
                                     depth_multiplier=mult)
    b.op(OpCode.DEPTHWISE_CONV_2D, [x, wt, bt], [y], options, **kwargs)
    b.input("x", x)
    b.output("y", y)
    model = b.build()
    verify_model(model)
    assert op_form(model, 0).name == INT16 and op_form(model, 0).kernel == "depthwise_conv_2d_int16"
    ins = [_input(rng, (n, h, w, c), x_kind), _readonly(w_data), _readonly(bias_data.astype(np.int32))]
    what = (f"x{ins[0].shape} w{w_data.shape} m={mult} stride={stride} dilation={dilation} "
            f"pads={pads} {act.name} per_channel={per_channel}")
    return Case(model, ins, what)


def random_case(rng, c=None, per_channel=None):
    """A random layer: any of the kernel shapes, strides 1-2, dilations 1-2, pads 0-3."""
    c = int(rng.integers(1, 71)) if c is None else c
    mult = int(rng.integers(1, 4))
    while True:
        kernel = [(1, 1), (3, 3), (5, 5), (7, 7), (3, 1), (1, 3), (2, 4)][int(rng.integers(0, 7))]
        stride = tuple(int(v) for v in rng.integers(1, 3, 2))
        dilation = tuple(int(v) for v in rng.integers(1, 3, 2))
        pads = tuple(int(v) for v in rng.integers(0, 4, 4))
        hw = tuple(int(v) for v in rng.integers(1, 12, 2))
        if (_out_size(hw[0], pads[0], pads[2], kernel[0], dilation[0], stride[0]) >= 1
                and _out_size(hw[1], pads[1], pads[3], kernel[1], dilation[1], stride[1]) >= 1):
            break
    return make_case(rng, c, mult, kernel, stride, dilation, pads, int(rng.integers(1, 3)), hw,
                     per_channel=per_channel)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a)  # weights of a loaded model are read-only memory-mapped data
    a.setflags(write=False)
    return a


def run_and_compare(case: Case, paths=PATHS):
    ref = case.reference()
    assert ref.dtype == np.int16
    p = case.params
    for isa, threads in paths:
        out = np.ascontiguousarray(~ref)  # every element differs from the expected one
        assert depthwise_conv_2d_int16(case.ins, p, out, isa=isa, threads=threads) is None
        if not np.array_equal(out, ref):
            bad = np.argwhere(out != ref)
            i = tuple(bad[0])
            raise AssertionError(f"{case.what} [{isa}, {threads} threads]: {len(bad)} of {ref.size} "
                                 f"outputs differ; first at {i}: kernel {out[i]}, reference {ref[i]}")
    return ref


# ------------------------------------------------------------------------------- the kernel

def test_registered_for_the_int16_form():
    k = KERNELS["depthwise_conv_2d_int16"]
    assert (k.run, k.bind, k.pack) == (depthwise_conv_2d_int16, bind_depthwise_conv_2d_int16,
                                       pack_depthwise_conv_2d_int16)


# Around the blocks: the AVX2 kernels take 16 channels at a time, the others 32.
CHANNELS = (1, 2, 7, 15, 16, 17, 31, 32, 33, 40, 47, 48, 63, 64, 65, 70)


@pytest.mark.parametrize("c", CHANNELS)
def test_channel_counts(c):
    """The 3x3 stride-1 layer (the vector paths' column-sharing kernels) and a stride-2 one, at
    multipliers 1-3, N = 2, on every path."""
    rng = np.random.default_rng(100 + c)
    for mult in (1, 2, 3):
        run_and_compare(make_case(rng, c, mult, n=2, hw=(5, 9)))
        run_and_compare(make_case(rng, c, mult, stride=(2, 2), pads=(0, 1, 1, 0), hw=(7, 6)))


@pytest.mark.slow
def test_every_channel_count():
    """Every channel count 1..70 x multipliers 1-3: the common layer (N = 2), a stride-2 one and
    a random one."""
    rng = np.random.default_rng(200)
    for c in range(1, 71):
        for mult in (1, 2, 3):
            run_and_compare(make_case(rng, c, mult, n=2, hw=(6, 9)))
            run_and_compare(make_case(rng, c, mult, stride=(2, 2), pads=(1, 0, 0, 1), hw=(7, 8)))
        run_and_compare(random_case(rng, c))


KERNEL_SHAPES = ((1, 1), (3, 3), (5, 5), (7, 7), (3, 1))


@pytest.mark.parametrize("kernel", KERNEL_SHAPES, ids=lambda k: f"{k[0]}x{k[1]}")
@pytest.mark.parametrize("stride", (1, 2))
@pytest.mark.parametrize("dilation", (1, 2))
def test_kernel_shapes(kernel, stride, dilation):
    """Each kernel shape at strides 1 and 2 and dilations 1 and 2, with asymmetric padding (up
    to the kernel's reach, so borders read padding and interiors do not), multipliers 1-3."""
    rng = np.random.default_rng(300 + 10 * kernel[0] + kernel[1] + 100 * stride + 1000 * dilation)
    kh, kw = kernel
    reach_h, reach_w = dilation * (kh - 1), dilation * (kw - 1)
    for mult, c in ((1, 19), (2, 9), (3, 12)):
        pads = (reach_h, min(reach_w, 1), 0, reach_w)  # top, left, bottom, right
        hw = (reach_h + 4, reach_w + 6)
        run_and_compare(make_case(rng, c, mult, kernel, (stride, stride), (dilation, dilation), pads,
                                  n=2, hw=hw))


@pytest.mark.parametrize("x_kind,name", [(0, "all 32767"), (1, "all -32768"), (2, "alternating"),
                                         (3, "random ends")])
def test_extreme_inputs(x_kind, name):
    """Inputs at the ends of int16, weights at +-127, biases at the bound: the accumulators reach
    the bound's edge, and the outputs saturate at both ends of int16."""
    rng = np.random.default_rng(400 + x_kind)
    for c, mult, kernel, stride in ((33, 1, (3, 3), 1), (20, 2, (5, 5), 2), (7, 3, (3, 1), 1),
                                    (64, 1, (7, 7), 1)):
        for w_kind in (0, 1, 2):
            case = make_case(rng, c, mult, kernel, (stride, stride), pads=(1, 2, 2, 1), hw=(9, 8),
                             x_kind=x_kind, w_kind=w_kind, b_kind=0, act=Activation.NONE)
            run_and_compare(case)


def test_at_the_accumulator_bound():
    """x = -32768 everywhere, weights -127 (and +127), 3x3, |bias| = 2^31 - 1 - 9 * 127 * 2^15:
    the interior sums are exactly +-(2^31 - 1); with padding the borders sum fewer taps."""
    c, mult = 40, 1
    w_data = np.full((1, 3, 3, c), -127, np.int8)
    w_data[..., 1::2] = 127
    limit = INT32_MAX - 9 * 127 * X_MAX
    bias_data = np.where(np.arange(c) % 2 == 0, limit, -limit).astype(np.int64)
    b = ModelBuilder("bound16")
    x = b.tensor("x", DType.INT16, (2, 5, 6, c), scale=np.float32(2.0**-10), zero_point=0)
    wt = b.tensor("w", DType.INT8, w_data.shape, w_data, scale=np.float32(2.0**-7), axis=3)
    bt = b.tensor("bias", DType.INT32, (c,), bias_data)
    # M = 2^-10 * 2^-7 / 1: outputs acc / 2^17, +-16384 at the bound, inside int16
    y = b.tensor("y", DType.INT16, (2, 5, 6, c), scale=np.float32(1.0), zero_point=0)
    b.op(OpCode.DEPTHWISE_CONV_2D, [x, wt, bt], [y], DepthwiseConv2DOptions(1, 1, 1, 1, 1, 1, 1, 1))
    b.input("x", x)
    b.output("y", y)
    model = b.build()
    verify_model(model)
    ins = [np.full((2, 5, 6, c), -32768, np.int16), _readonly(w_data), _readonly(bias_data.astype(np.int32))]
    ref = run_and_compare(Case(model, ins, "bound"))
    assert 9 * 127 * X_MAX + limit == INT32_MAX  # the interior sums: +-(2^31 - 1)
    assert ref[0, 2, 2, 0] == 16384 and ref[0, 2, 2, 1] == -16384


@pytest.mark.parametrize("act", [Activation.RELU, Activation.RELU6, Activation.CLIP])
def test_fused_activations(act):
    rng = np.random.default_rng(500 + int(act))
    seen_lo = seen_hi = False
    for i in range(12):
        case = make_case(rng, int(rng.integers(1, 70)), int(rng.integers(1, 4)), act=act,
                         per_channel=i % 2 == 0, n=2, hw=(6, 5))
        ref = run_and_compare(case)
        r = case.params.out
        assert r.lo > -32768 or act == Activation.CLIP
        seen_lo |= bool((ref == r.lo).any())
        seen_hi |= bool((ref == r.hi).any())
    assert seen_lo


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_random_layers(per_channel):
    """Random layers of every kind (see random_case), per-tensor or per-channel weight scales."""
    rng = np.random.default_rng(600 + per_channel)
    for _ in range(20):
        run_and_compare(random_case(rng, per_channel=per_channel))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(16))
def test_random_layers_sweep(seed):
    rng = np.random.default_rng(700 + seed)
    for _ in range(60):
        run_and_compare(random_case(rng))


def test_realistic_size():
    """MobileNet-sized layers (rows enough for both threads, the interior kernels' long runs)."""
    rng = np.random.default_rng(800)
    run_and_compare(make_case(rng, 144, 1, hw=(28, 28)))
    run_and_compare(make_case(rng, 96, 1, stride=(2, 2), pads=(0, 0, 1, 1), hw=(29, 30)))
    run_and_compare(make_case(rng, 24, 2, kernel=(5, 5), pads=(2, 2, 2, 2), hw=(20, 21)))


def test_sweep_reaches_the_edges():
    """The generators reach what they claim: saturation at both ends, outputs inside, both
    forms of the vector requantization (32-bit when every shift >= 33, 64-bit otherwise)."""
    from qrt.kernels.requantize import tables32

    rng = np.random.default_rng(900)
    seen, forms = set(), set()
    for _ in range(80):
        case = random_case(rng)
        ref, r = case.reference(), case.params.out
        seen.add(("lo", bool((ref == -32768).any())))
        seen.add(("hi", bool((ref == 32767).any())))
        seen.add(("inside", bool(((ref > -32768) & (ref < 32767) & (ref != 0)).any())))
        forms.add(tables32(r.shift, True, r.zero_point)[0])
    for flag in ("lo", "hi", "inside"):
        assert (flag, True) in seen, flag
    assert forms == {True, False}


# ------------------------------------------------------------------------------- as the runtime uses it

@pytest.mark.parametrize("isa", ISA.supported())
def test_end_to_end_fast_equals_reference(isa):
    """qrt.load(kernels="fast") runs the compiled int16 kernel; it equals the reference set."""
    rng = np.random.default_rng(1000)
    for i in range(4):
        case = random_case(rng) if i else make_case(rng, 48, 2, n=2, hw=(8, 8))
        data = qrt.to_bytes(case.model)
        x = case.ins[0]
        want = qrt.load(data, kernels="reference").run(x, raw=True)
        assert want.dtype == np.int16 and np.array_equal(want, case.reference())
        for threads in (1, 2):
            got = qrt.load(data, kernels="fast", isa=isa, threads=threads).run(x, raw=True)
            assert np.array_equal(got, want), f"{case.what} [{isa}, {threads} threads]"


def test_packed_step_runs_again_on_new_input():
    """Packed at load (no input yet), bound once, run on new data each time; a pack of one
    form or path does not bind to another."""
    rng = np.random.default_rng(1100)
    case = make_case(rng, 7, 1, hw=(10, 9))  # 7 channels: the last pixels come from the tail copy
    p = case.params
    w, bias = case.ins[1], case.ins[2]
    for isa in ISA.supported():
        packed = pack_depthwise_conv_2d_int16([None, w, bias], p, isa=isa)
        x, out = case.ins[0].copy(), np.zeros(case.reference().shape, np.int16)
        step = bind_depthwise_conv_2d_int16([x, w, bias], p, out, isa=isa, threads=2, packed=packed)
        for _ in range(3):
            x[...] = rng.integers(-32768, 32768, x.shape, dtype=np.int16)
            step()
            assert np.array_equal(out, case.reference([x, w, bias])), f"{case.what} [{isa}]"
        assert step.isa == isa
        other = next((o for o in ISA.supported() if o != isa), None)
        if other is not None:
            with pytest.raises(ValueError):
                bind_depthwise_conv_2d_int16([x, w, bias], p, out, isa=other, packed=packed)
        # the int8 form's pack (same weights) is refused too
        p8 = dataclasses.replace(p, out=dataclasses.replace(p.out, lo=-128, hi=127, dtype=np.int8))
        with pytest.raises(ValueError):
            bind_depthwise_conv_2d_int16([x, w, bias], p, out, isa=isa,
                                         packed=pack_depthwise_conv_2d([None, w, bias], p8, isa=isa))


def test_bad_inputs_raise_value_error():
    rng = np.random.default_rng(1200)
    case = make_case(rng, 5, 2, hw=(4, 4), act=Activation.NONE)
    p, (x, w, bias) = case.params, case.ins
    shape = case.reference().shape
    bad = {
        "x int8": ([x.astype(np.int8), w, bias], p, np.zeros(shape, np.int16)),
        "out int8": ([x, w, bias], p, np.zeros(shape, np.int8)),
        "out int32": ([x, w, bias], p, np.zeros(shape, np.int32)),
        "out read-only": ([x, w, bias], p, _readonly(np.zeros(shape, np.int16))),
        "x not contiguous": ([np.repeat(x, 2, axis=-1)[..., ::2], w, bias], p, np.zeros(shape, np.int16)),
        "out one row short": ([x, w, bias], p, np.zeros((shape[0], shape[1] - 1) + shape[2:], np.int16)),
        "input zero point 1": ([x, w, bias], dataclasses.replace(p, input_zero_point=1), np.zeros(shape, np.int16)),
        "output zero point 1": ([x, w, bias], dataclasses.replace(p, out=dataclasses.replace(p.out, zero_point=1)),
                                np.zeros(shape, np.int16)),
        "clamp beyond int16": ([x, w, bias], dataclasses.replace(p, out=dataclasses.replace(p.out, lo=-32769)),
                               np.zeros(shape, np.int16)),
        "clamp reversed": ([x, w, bias], dataclasses.replace(p, out=dataclasses.replace(p.out, lo=5, hi=4)),
                           np.zeros(shape, np.int16)),
        "shift 0": ([x, w, bias], dataclasses.replace(p, out=dataclasses.replace(
            p.out, shift=np.zeros(1, np.int32), multiplier=np.full(1, 2**30, np.int32))), np.zeros(shape, np.int16)),
        "bias one short": ([x, w, bias[:-1].copy()], p, np.zeros(shape, np.int16)),
    }
    for name, (ins, pp, out) in bad.items():
        before = out.copy()
        with pytest.raises(ValueError):
            depthwise_conv_2d_int16(ins, pp, out)
        assert np.array_equal(out, before), name
        if name in ("input zero point 1", "output zero point 1", "clamp beyond int16", "clamp reversed", "shift 0", "bias one short"):
            with pytest.raises(ValueError):  # the constants are checked at load too
                pack_depthwise_conv_2d_int16([None] + ins[1:], pp)
    # the int8 kernel refuses int16 tensors
    with pytest.raises(ValueError):
        bind_depthwise_conv_2d([x, w, bias], p, np.zeros(shape, np.int16))


def _before_guard_page(shape, dtype):
    """A zeroed array whose last byte ends a page followed by an inaccessible one: a kernel
    that reads or writes past the array stops the test with a segmentation fault."""
    size, page = int(np.prod(shape)) * np.dtype(dtype).itemsize, mmap.PAGESIZE
    pages = -(-size // page) + 1
    mem = mmap.mmap(-1, pages * page)
    start = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(start + (pages - 1) * page), page, 0) == 0  # PROT_NONE
    return np.frombuffer(mem, dtype, int(np.prod(shape)), (pages - 1) * page - size).reshape(shape)


@pytest.mark.skipif(sys.platform != "linux", reason="guard pages through mprotect")
def test_stays_inside_its_buffers():
    """The vector kernels read whole 32-channel blocks (64 bytes of int16) per tap: with x and
    out ending at a guard page, channel counts off the block size must neither read past x nor
    write past out."""
    rng = np.random.default_rng(1300)
    for c, mult, stride in ((7, 1, 1), (17, 1, 2), (33, 1, 1), (1, 1, 1), (5, 3, 1)):
        case = make_case(rng, c, mult, stride=(stride, stride), hw=(12, 11))
        ref = case.reference()
        x = _before_guard_page(case.ins[0].shape, np.int16)
        x[...] = case.ins[0]
        for isa in ISA.supported():
            out = _before_guard_page(ref.shape, np.int16)
            depthwise_conv_2d_int16([x, case.ins[1], case.ins[2]], case.params, out, isa=isa, threads=2)
            assert np.array_equal(out, ref), f"{case.what} [{isa}]"
