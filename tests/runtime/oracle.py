"""An independent oracle: the same quantized parameters run through ONNX Runtime's QLinear*
operators. ONNX Runtime rounds in float, so outputs may differ from qrt's by one; anything
larger is a bug. `python -m tests.runtime.oracle` prints the agreement table.
"""
from __future__ import annotations

import numpy as np

import qrt
from qrt.format import (
    ConcatOptions, Conv2DOptions, DepthwiseConv2DOptions, DType, LeakyReluOptions, MeanOptions,
    ModelBuilder, OpCode, Pool2DOptions, SoftmaxOptions,
)


def _ort_run(nodes, inputs: dict, initializers: dict, output_name: str, output_dtype):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    elem = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.float32): TensorProto.FLOAT,
            np.dtype(np.uint8): TensorProto.UINT8}
    graph = helper.make_graph(
        nodes, "oracle",
        [helper.make_tensor_value_info(k, elem[v.dtype], v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info(output_name, elem[np.dtype(output_dtype)], None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 9
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


def _qrt_run(b: ModelBuilder, x_index: int, feeds: list):
    m = qrt.load(qrt.to_bytes(b.build()))
    return m.run(*feeds, raw=True)


def _f32(v):
    return np.asarray(v, dtype=np.float32)


def _i8(v):
    return np.asarray(v, dtype=np.int8)


def conv_case(rng, depthwise=False):
    n, h, w = 1, int(rng.integers(5, 12)), int(rng.integers(5, 12))
    cin = int(rng.integers(1, 9))
    kh, kw = (int(k) for k in rng.integers(1, 4, 2))
    sh, sw = (int(k) for k in rng.integers(1, 3, 2))
    dh, dw = (int(k) for k in rng.integers(1, 3, 2))
    pads = [int(k) for k in rng.integers(0, 2, 4)]
    if depthwise:
        mult = int(rng.integers(1, 3))
        cout, groups = cin * mult, cin
        w_q = rng.integers(-127, 128, (1, kh, kw, cout)).astype(np.int8)
        w_onnx = w_q[0].transpose(2, 0, 1)[:, None]  # [C*mult, 1, KH, KW]
    else:
        groups = int(rng.choice([g for g in (1, 2, 3) if cin % g == 0]))
        cout = groups * int(rng.integers(1, 5))
        w_q = rng.integers(-127, 128, (cout, kh, kw, cin // groups)).astype(np.int8)
        w_onnx = w_q.transpose(0, 3, 1, 2)
    oh = (h + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        return None
    sx, zx = float(rng.uniform(0.01, 0.1)), int(rng.integers(-128, 128))
    sw_ = rng.uniform(0.001, 0.02, cout).astype(np.float32)
    sy, zy = float(rng.uniform(0.05, 0.5)), int(rng.integers(-128, 128))
    bias = rng.integers(-3000, 3000, cout).astype(np.int32)
    x = rng.integers(-128, 128, (n, h, w, cin)).astype(np.int8)

    b = ModelBuilder()
    xi = b.tensor("x", DType.INT8, x.shape, scale=sx, zero_point=zx)
    wi = b.tensor("w", DType.INT8, w_q.shape, w_q, scale=sw_, axis=3 if depthwise else 0)
    bi = b.tensor("b", DType.INT32, (cout,), bias, scale=np.float32(sx) * sw_)
    yi = b.tensor("y", DType.INT8, (n, oh, ow, cout), scale=sy, zero_point=zy)
    window = dict(stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw, pad_top=pads[0], pad_left=pads[1],
                  pad_bottom=pads[2], pad_right=pads[3])
    if depthwise:
        b.op(OpCode.DEPTHWISE_CONV_2D, [xi, wi, bi], [yi], DepthwiseConv2DOptions(**window, depth_multiplier=cout // cin))
    else:
        b.op(OpCode.CONV_2D, [xi, wi, bi], [yi], Conv2DOptions(**window, groups=groups))
    b.input("x", xi)
    b.output("y", yi)
    ours = _qrt_run(b, xi, [x])

    from onnx import helper
    node = helper.make_node("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"], ["y"],
                            strides=[sh, sw], dilations=[dh, dw], pads=[pads[0], pads[1], pads[2], pads[3]],
                            group=groups, kernel_shape=[kh, kw])
    theirs = _ort_run([node], {"x": x.transpose(0, 3, 1, 2).copy()},
                      {"sx": _f32(sx), "zx": _i8(zx), "w": np.ascontiguousarray(w_onnx), "sw": sw_,
                       "zw": np.zeros(cout, np.int8), "sy": _f32(sy), "zy": _i8(zy), "b": bias}, "y", np.int8)
    return ours, theirs.transpose(0, 2, 3, 1)


def fc_case(rng):
    m_, k, nout = int(rng.integers(1, 8)), int(rng.integers(1, 300)), int(rng.integers(1, 40))
    sx, zx = float(rng.uniform(0.01, 0.1)), int(rng.integers(-128, 128))
    sw_ = rng.uniform(0.001, 0.02, nout).astype(np.float32)
    sy, zy = float(rng.uniform(0.1, 2.0)), int(rng.integers(-128, 128))
    w_q = rng.integers(-127, 128, (nout, k)).astype(np.int8)
    bias = rng.integers(-5000, 5000, nout).astype(np.int32)
    x = rng.integers(-128, 128, (m_, k)).astype(np.int8)
    b = ModelBuilder()
    xi = b.tensor("x", DType.INT8, x.shape, scale=sx, zero_point=zx)
    wi = b.tensor("w", DType.INT8, w_q.shape, w_q, scale=sw_)
    bi = b.tensor("b", DType.INT32, (nout,), bias, scale=np.float32(sx) * sw_)
    yi = b.tensor("y", DType.INT8, (m_, nout), scale=sy, zero_point=zy)
    b.op(OpCode.FULLY_CONNECTED, [xi, wi, bi], [yi])
    b.input("x", xi)
    b.output("y", yi)
    ours = _qrt_run(b, xi, [x])
    from onnx import helper
    node = helper.make_node("QGemm", ["x", "sx", "zx", "w", "sw", "zw", "b", "sy", "zy"], ["y"],
                            domain="com.microsoft", transB=1)
    theirs = _ort_run([node], {"x": x}, {"sx": _f32(sx), "zx": _i8(zx), "w": w_q, "sw": sw_,
                                         "zw": np.zeros(nout, np.int8), "b": bias, "sy": _f32(sy), "zy": _i8(zy)},
                      "y", np.int8)
    return ours, theirs


def binary_case(rng, opcode):
    shape = tuple(int(d) for d in rng.integers(1, 6, int(rng.integers(1, 5))))
    bshape = tuple(d if rng.random() < 0.6 else 1 for d in shape)
    (sa, sb, sy) = rng.uniform(0.01, 0.2, 3)
    za, zb, zy = (int(z) for z in rng.integers(-128, 128, 3))
    a = rng.integers(-128, 128, shape).astype(np.int8)
    c = rng.integers(-128, 128, bshape).astype(np.int8)
    b = ModelBuilder()
    ai = b.tensor("a", DType.INT8, shape, scale=sa, zero_point=za)
    ci = b.tensor("c", DType.INT8, bshape, scale=sb, zero_point=zb)
    yi = b.tensor("y", DType.INT8, shape, scale=sy, zero_point=zy)
    b.op(opcode, [ai, ci], [yi])
    b.input("a", ai)
    b.input("c", ci)
    b.output("y", yi)
    ours = _qrt_run(b, ai, [a, c])
    from onnx import helper
    name = {OpCode.ADD: "QLinearAdd", OpCode.MUL: "QLinearMul"}[opcode]
    node = helper.make_node(name, ["a", "sa", "za", "c", "sb", "zb", "sy", "zy"], ["y"], domain="com.microsoft")
    theirs = _ort_run([node], {"a": a, "c": c}, {"sa": _f32(sa), "za": _i8(za), "sb": _f32(sb), "zb": _i8(zb),
                                                  "sy": _f32(sy), "zy": _i8(zy)}, "y", np.int8)
    return ours, theirs


def avgpool_case(rng):
    n, h, w, c = 1, int(rng.integers(3, 10)), int(rng.integers(3, 10)), int(rng.integers(1, 9))
    kh, kw = (int(k) for k in rng.integers(1, 4, 2))
    sh, sw = (int(k) for k in rng.integers(1, 3, 2))
    pads = [int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)), int(rng.integers(0, kw))]
    include = bool(rng.random() < 0.5)
    oh = (h + pads[0] + pads[2] - kh) // sh + 1
    ow = (w + pads[1] + pads[3] - kw) // sw + 1
    sx, sy = rng.uniform(0.01, 0.1, 2)
    zx, zy = (int(z) for z in rng.integers(-128, 128, 2))
    x = rng.integers(-128, 128, (n, h, w, c)).astype(np.int8)
    b = ModelBuilder()
    xi = b.tensor("x", DType.INT8, x.shape, scale=sx, zero_point=zx)
    yi = b.tensor("y", DType.INT8, (n, oh, ow, c), scale=sy, zero_point=zy)
    b.op(OpCode.AVERAGE_POOL_2D, [xi], [yi], Pool2DOptions(kh, kw, sh, sw, *pads, count_include_pad=include))
    b.input("x", xi)
    b.output("y", yi)
    ours = _qrt_run(b, xi, [x])
    from onnx import helper
    node = helper.make_node("QLinearAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"], domain="com.microsoft",
                            kernel_shape=[kh, kw], strides=[sh, sw], pads=pads, count_include_pad=int(include),
                            channels_last=1)
    theirs = _ort_run([node], {"x": x}, {"sx": _f32(sx), "zx": _i8(zx), "sy": _f32(sy), "zy": _i8(zy)}, "y", np.int8)
    return ours, theirs


def global_avgpool_case(rng):
    n, h, w, c = int(rng.integers(1, 3)), int(rng.integers(1, 12)), int(rng.integers(1, 12)), int(rng.integers(1, 20))
    sx, sy = rng.uniform(0.01, 0.1, 2)
    zx, zy = (int(z) for z in rng.integers(-128, 128, 2))
    x = rng.integers(-128, 128, (n, h, w, c)).astype(np.int8)
    b = ModelBuilder()
    xi = b.tensor("x", DType.INT8, x.shape, scale=sx, zero_point=zx)
    yi = b.tensor("y", DType.INT8, (n, 1, 1, c), scale=sy, zero_point=zy)
    b.op(OpCode.MEAN, [xi], [yi], MeanOptions((1, 2), True))
    b.input("x", xi)
    b.output("y", yi)
    ours = _qrt_run(b, xi, [x])
    from onnx import helper
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"],
                            domain="com.microsoft", channels_last=1)
    theirs = _ort_run([node], {"x": x}, {"sx": _f32(sx), "zx": _i8(zx), "sy": _f32(sy), "zy": _i8(zy)}, "y", np.int8)
    return ours, theirs


def concat_case(rng):
    k = int(rng.integers(1, 4))
    base = [int(d) for d in rng.integers(1, 6, 3)]
    axis = int(rng.integers(0, 3))
    shapes = []
    for _ in range(k):
        s = list(base)
        s[axis] = int(rng.integers(1, 5))
        shapes.append(tuple(s))
    out = list(base)
    out[axis] = sum(s[axis] for s in shapes)
    sy, zy = float(rng.uniform(0.01, 0.1)), int(rng.integers(-128, 128))
    b = ModelBuilder()
    xs, feeds, init, names = [], [], {}, []
    for i, s in enumerate(shapes):
        sx, zx = float(rng.uniform(0.01, 0.1)), int(rng.integers(-128, 128))
        if i == 0 and rng.random() < 0.5:
            sx, zx = sy, zy  # same parameters: a plain copy
        x = rng.integers(-128, 128, s).astype(np.int8)
        xs.append(b.tensor(f"x{i}", DType.INT8, s, scale=sx, zero_point=zx))
        b.input(f"x{i}", xs[-1])
        feeds.append(x)
        init.update({f"s{i}": _f32(sx), f"z{i}": _i8(zx)})
        names += [f"x{i}", f"s{i}", f"z{i}"]
    yi = b.tensor("y", DType.INT8, tuple(out), scale=sy, zero_point=zy)
    b.op(OpCode.CONCAT, xs, [yi], ConcatOptions(axis))
    b.output("y", yi)
    ours = _qrt_run(b, xs[0], feeds)
    from onnx import helper
    node = helper.make_node("QLinearConcat", ["sy", "zy"] + names, ["y"], domain="com.microsoft", axis=axis)
    init.update({"sy": _f32(sy), "zy": _i8(zy)})
    theirs = _ort_run([node], {f"x{i}": f for i, f in enumerate(feeds)}, init, "y", np.int8)
    return ours, theirs


def leaky_case(rng):
    shape = tuple(int(d) for d in rng.integers(1, 8, 3))
    sx, sy = rng.uniform(0.01, 0.1, 2)
    zx, zy = (int(z) for z in rng.integers(-128, 128, 2))
    alpha = float(np.float32(rng.uniform(0.01, 0.5)))
    x = rng.integers(-128, 128, shape).astype(np.int8)
    b = ModelBuilder()
    xi = b.tensor("x", DType.INT8, shape, scale=sx, zero_point=zx)
    yi = b.tensor("y", DType.INT8, shape, scale=sy, zero_point=zy)
    b.op(OpCode.LEAKY_RELU, [xi], [yi], LeakyReluOptions(alpha))
    b.input("x", xi)
    b.output("y", yi)
    ours = _qrt_run(b, xi, [x])
    from onnx import helper
    node = helper.make_node("QLinearLeakyRelu", ["x", "sx", "zx", "sy", "zy"], ["y"], domain="com.microsoft", alpha=alpha)
    theirs = _ort_run([node], {"x": x}, {"sx": _f32(sx), "zx": _i8(zx), "sy": _f32(sy), "zy": _i8(zy)}, "y", np.int8)
    return ours, theirs


def softmax_case(rng):
    shape = (int(rng.integers(1, 4)), int(rng.integers(2, 64)))
    sx, zx = float(rng.uniform(0.01, 0.2)), int(rng.integers(-128, 128))
    x = rng.integers(-128, 128, shape).astype(np.int8)
    b = ModelBuilder()
    xi = b.tensor("x", DType.INT8, shape, scale=sx, zero_point=zx)
    yi = b.tensor("y", DType.INT8, shape, scale=1 / 256, zero_point=-128)
    b.op(OpCode.SOFTMAX, [xi], [yi], SoftmaxOptions(-1, 1.0))
    b.input("x", xi)
    b.output("y", yi)
    ours = _qrt_run(b, xi, [x])
    from onnx import helper
    node = helper.make_node("QLinearSoftmax", ["x", "sx", "zx", "sy", "zy"], ["y"], domain="com.microsoft",
                            axis=-1, opset=13)
    theirs = _ort_run([node], {"x": x}, {"sx": _f32(sx), "zx": _i8(zx), "sy": _f32(1 / 256), "zy": _i8(-128)},
                      "y", np.int8)
    return ours, theirs


def quantize_case(rng):
    shape = tuple(int(d) for d in rng.integers(1, 10, 2))
    s, z = float(rng.uniform(0.01, 0.2)), int(rng.integers(-128, 128))
    x = (rng.standard_normal(shape) * 10).astype(np.float32)
    b = ModelBuilder()
    xi = b.tensor("x", DType.FLOAT32, shape)
    yi = b.tensor("y", DType.INT8, shape, scale=s, zero_point=z)
    b.op(OpCode.QUANTIZE, [xi], [yi])
    b.input("x", xi)
    b.output("y", yi)
    ours = _qrt_run(b, xi, [x])
    from onnx import helper
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    theirs = _ort_run([node], {"x": x}, {"s": _f32(s), "z": _i8(z)}, "y", np.int8)
    return ours, theirs


CASES = {
    "CONV_2D (QLinearConv)": lambda rng: conv_case(rng),
    "DEPTHWISE_CONV_2D (QLinearConv, group=C)": lambda rng: conv_case(rng, depthwise=True),
    "FULLY_CONNECTED (QGemm)": fc_case,
    "ADD (QLinearAdd)": lambda rng: binary_case(rng, OpCode.ADD),
    "MUL (QLinearMul)": lambda rng: binary_case(rng, OpCode.MUL),
    "AVERAGE_POOL_2D (QLinearAveragePool)": avgpool_case,
    "MEAN (QLinearGlobalAveragePool)": global_avgpool_case,
    "CONCAT (QLinearConcat)": concat_case,
    "LEAKY_RELU (QLinearLeakyRelu)": leaky_case,
    "SOFTMAX (QLinearSoftmax)": softmax_case,
    "QUANTIZE (QuantizeLinear)": quantize_case,
}


def agreement(name: str, trials: int, seed: int = 0) -> dict:
    """Run `trials` random cases of one op; count identical outputs and the largest difference."""
    rng = np.random.default_rng(seed)
    same = total = 0
    worst = 0
    for _ in range(trials):
        r = CASES[name](rng)
        if r is None:
            continue
        ours, theirs = r
        assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
        diff = np.abs(ours.astype(np.int32) - theirs.astype(np.int32))
        same += int((diff == 0).sum())
        total += diff.size
        worst = max(worst, int(diff.max(initial=0)))
    return {"op": name, "outputs": total, "identical": same / max(total, 1), "max_diff": worst}


if __name__ == "__main__":
    print("| op (ONNX Runtime oracle) | outputs compared | identical | largest difference |")
    print("|---|---|---|---|")
    for name in CASES:
        r = agreement(name, 60)
        print(f"| {r['op']} | {r['outputs']} | {100 * r['identical']:.2f} % | {r['max_diff']} |")
