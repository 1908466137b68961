"""The forms of revision 3 as the format sees them (SPEC.md sections 2.7, 2.9, 3.2, 4.6): what the
verifier accepts and refuses, what survives a write and a read, and which files need qrt 0.3.0."""
from __future__ import annotations

import numpy as np
import pytest

import qrt
from qrt import InvalidModelError, UnsupportedModelError, verify_model
from qrt.format import (
    DType, InputQuantization, LutOptions, ModelBuilder, OpCode, UnaryFunction, UnaryOptions,
)
from qrt.format.model import pack_int4, unpack_int4
from qrt.format.writer import to_bytes
from qrt.ops import min_runtime_version, op_form

RNG = np.random.default_rng(7)


def fc_model(x_dtype=DType.FLOAT32, w_dtype=DType.INT8, group=0, k=40, n=8, w_values=None, dynamic=False,
             bias_dtype=DType.FLOAT32, w_scales=None):
    b = ModelBuilder("fc")
    quant = {} if x_dtype == DType.FLOAT32 else {"scale": 0.05, "zero_point": 0}
    x = b.tensor("x", x_dtype, (2, k), **quant)
    q = w_values if w_values is not None else RNG.integers(-7, 8, (n, k))
    groups = -(-k // group) if group else 1
    scales = w_scales if w_scales is not None else RNG.uniform(0.01, 0.02, n * groups)
    w = b.tensor("w", w_dtype, (n, k), pack_int4(q) if w_dtype == DType.INT4 else q, scale=scales, axis=0,
                 group_size=group)
    if bias_dtype == DType.FLOAT32:
        bias = b.tensor("b", DType.FLOAT32, (n,), RNG.standard_normal(n))
    else:
        bias = b.tensor("b", DType.INT32, (n,), RNG.integers(-100, 100, n))
    y = b.tensor("y", x_dtype, (2, n), **quant)
    b.op(OpCode.FULLY_CONNECTED, [x, w, bias], [y], name="fc",
         input_quantization=InputQuantization.DYNAMIC_INT8 if dynamic else InputQuantization.NONE)
    b.input("x", x)
    b.output("y", y)
    return b.build()


def refused(model, pattern, exc=InvalidModelError):
    with pytest.raises(exc, match=pattern):
        to_bytes(model)


def test_each_form_round_trips_and_needs_0_3_0():
    for model, form in [(fc_model(w_dtype=DType.INT4, group=16), "weight-only"),
                        (fc_model(), "weight-only"),
                        (fc_model(dynamic=True), "dynamic")]:
        back = qrt.read_model(to_bytes(model))
        assert op_form(back, 0).name == form
        w = back.tensors[back.operators[0].inputs[1]]
        assert w.quant.group_size == model.tensors[1].quant.group_size
        assert back.operators[0].input_quantization == model.operators[0].input_quantization
        assert back.min_runtime_version == "0.3.0" and back.format_version == 3
        assert np.array_equal(back.tensors[1].data, model.tensors[1].data)


def test_int4_pack_and_unpack_agree():
    v = RNG.integers(-8, 8, 1001)
    packed = pack_int4(v)
    assert packed.size == 501 and packed[-1] >> 4 == 0  # the unused high nibble is 0
    assert np.array_equal(unpack_int4(packed, v.size), v)


def test_per_group_rules():
    refused(fc_model(group=16, w_scales=np.full(8 * 2, 0.01)), r"16 per-group scales; 8 channels x 3 groups")
    m = fc_model(group=16)
    m.tensors[1].quant.group_size = -1
    refused(m, "group_size -1 is negative")
    refused(fc_model(x_dtype=DType.INT8, group=16, bias_dtype=DType.INT32),
            "per group, which the int8 form does not read")
    refused(fc_model(group=16, dynamic=True), "per group, which the dynamic form does not read")


def test_int4_rules():
    q = RNG.integers(-7, 8, (8, 40))
    q[3, 5] = -8
    refused(fc_model(w_dtype=DType.INT4, w_values=q), "contain -8; int4 weights must lie in")
    refused(fc_model(w_dtype=DType.INT4, dynamic=True), "'w' is INT4; expected INT8")  # dynamic: int8 weights
    int8_form = fc_model(x_dtype=DType.INT8, w_dtype=DType.INT4, bias_dtype=DType.INT32)  # W4A8: read
    verify_model(int8_form)
    assert op_form(int8_form, 0).name == "int8" and min_runtime_version(int8_form) == "0.3.0"
    b = ModelBuilder("add4")
    a = b.tensor("a", DType.INT8, (4,), scale=0.1, zero_point=0)
    c = b.tensor("c", DType.INT4, (4,), pack_int4(np.arange(4)), scale=0.1, zero_point=0)
    y = b.tensor("y", DType.INT8, (4,), scale=0.1, zero_point=0)
    b.op(OpCode.ADD, [a, c], [y])
    b.input("a", a)
    b.output("y", y)
    refused(b.build(), "'c' is INT4, which ADD does not read")


def test_input_quantization_only_on_the_dynamic_form():
    refused(fc_model(x_dtype=DType.INT8, dynamic=True, bias_dtype=DType.INT32),
            "input_quantization DYNAMIC_INT8 applies only to")
    b = ModelBuilder("add")
    a = b.tensor("a", DType.FLOAT32, (4,))
    c = b.tensor("c", DType.FLOAT32, (4,))
    y = b.tensor("y", DType.FLOAT32, (4,))
    b.op(OpCode.ADD, [a, c], [y], input_quantization=InputQuantization.DYNAMIC_INT8)
    b.input("a", a)
    b.input("c", c)
    b.output("y", y)
    refused(b.build(), "applies only to CONV_2D and FULLY_CONNECTED")


def test_float_bias_and_weights_must_match_the_form():
    refused(fc_model(bias_dtype=DType.INT32), r"tensor 'b' is INT32; expected FLOAT32")
    m = fc_model()
    m.tensors[0].quant = qrt.format.Quantization(0.1, 0)
    refused(m, "a FLOAT32 tensor cannot carry quantization")


def _unary(dtype, function=UnaryFunction.GELU):
    b = ModelBuilder("u")
    quant = {} if dtype == DType.FLOAT32 else {"scale": 0.1, "zero_point": 0}
    x = b.tensor("x", dtype, (3, 5), **quant)
    y = b.tensor("y", dtype, (3, 5), **quant)
    b.op(OpCode.UNARY, [x], [y], UnaryOptions(function))
    b.input("x", x)
    b.output("y", y)
    return b.build()


def test_unary_is_float_only_and_lut_integer_only():
    refused(_unary(DType.INT8), "UNARY computes in: float32")
    refused(_unary(DType.FLOAT32, 99), "function 99 is not a UnaryFunction")
    b = ModelBuilder("lut")
    x = b.tensor("x", DType.FLOAT32, (4,))
    t = b.tensor("t", DType.INT8, (256,), np.zeros(256, np.int8))
    y = b.tensor("y", DType.FLOAT32, (4,))
    b.op(OpCode.LUT, [x, t], [y], LutOptions("f"))
    b.input("x", x)
    b.output("y", y)
    refused(b.build(), "has no float32 form")


@pytest.mark.parametrize("function", list(UnaryFunction))
def test_unary_functions_match_float64_math(function):
    import math

    m = qrt.load(to_bytes(_unary(DType.FLOAT32, function)))
    x = np.linspace(-3, 3, 15, dtype=np.float32).reshape(3, 5)
    if function in (UnaryFunction.SQRT, UnaryFunction.LOG):
        x = np.abs(x) + np.float32(0.1)
    got = m.run(x)
    ref = {
        UnaryFunction.SIGMOID: lambda v: 1 / (1 + math.exp(-v)), UnaryFunction.TANH: math.tanh,
        UnaryFunction.HARD_SIGMOID: lambda v: min(max(0.2 * v + 0.5, 0.0), 1.0),
        UnaryFunction.HARD_SWISH: lambda v: v * min(max(v / 6 + 0.5, 0.0), 1.0),
        UnaryFunction.SILU: lambda v: v / (1 + math.exp(-v)),
        UnaryFunction.GELU: lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))),
        UnaryFunction.GELU_TANH: lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))),
        UnaryFunction.ERF: math.erf, UnaryFunction.SQRT: math.sqrt, UnaryFunction.NEG: lambda v: -v,
        UnaryFunction.EXP: math.exp, UnaryFunction.LOG: math.log, UnaryFunction.ABS: abs,
    }[function]
    want = np.array([ref(float(v)) for v in x.reshape(-1)]).reshape(x.shape)
    np.testing.assert_allclose(got, want, rtol=5e-7, atol=1e-7)


def _int16_fc(zero_point=0, weights=None, bias=None):
    b = ModelBuilder("fc16")
    x = b.tensor("x", DType.INT16, (2, 600), scale=0.001, zero_point=zero_point)
    w = b.tensor("w", DType.INT8, (4, 600), weights if weights is not None else RNG.integers(-20, 21, (4, 600)),
                 scale=[0.01] * 4, axis=0)
    bias = b.tensor("b", DType.INT32, (4,), bias if bias is not None else np.zeros(4))
    y = b.tensor("y", DType.INT16, (2, 4), scale=0.01, zero_point=0)
    b.op(OpCode.FULLY_CONNECTED, [x, w, bias], [y], name="fc16")
    b.input("x", x)
    b.output("y", y)
    return b.build()


def test_int16_rules():
    m = _int16_fc()
    assert op_form(m, 0).name == "int16" and min_runtime_version(m) == "0.3.0"
    refused(_int16_fc(zero_point=3), "int16 activation: its zero point must be 0")
    w = RNG.integers(-20, 21, (4, 600))
    w[2] = 127  # sum |w| = 76200: x 2^15 > 2^31
    refused(_int16_fc(weights=w), r"output channel 2: sum \|w\| x 2\^15 \+ \|bias\| = 2496921600 can overflow")
    # 600 x 127 x 255 fits int8's bound, so only the int16 rule refuses this: the bias decides
    w[2] = 100  # 60000 x 32768 = 1966080000
    assert to_bytes(_int16_fc(weights=w))
    refused(_int16_fc(weights=w, bias=np.array([0, 0, 2**31 - 1966080000, 0])), "output channel 2")


def test_plain_int8_files_keep_their_old_version():
    assert min_runtime_version(fc_model(x_dtype=DType.INT8, bias_dtype=DType.INT32,
                                        w_values=RNG.integers(-127, 128, (8, 40)))) == "0.1.0"


def test_unknown_input_quantization_is_unsupported():
    from tests.format.corrupt import OPERATOR_SLOTS, Patcher

    p = Patcher(to_bytes(fc_model(dynamic=True)))
    p.put(p.field(p.operator("fc"), OPERATOR_SLOTS, "input_quantization"), "<b", 5, old=1)
    with pytest.raises(UnsupportedModelError, match="input_quantization"):
        qrt.read_model(p.bytes())
