"""How each runtime of `python -m bench` loads its model file(s) and runs: the one loader used
in-process (timing, load time, outputs) and in a fresh process by bench.rss (peak memory).

Only numpy is imported here; each loader imports its own library, so a fresh process that
loads a qrt model never imports torch or onnxruntime.

    fn = load(kind, paths, threads, shape)    fn(x: float32 array) -> output array

kind   paths                                           imports
qrt    (.qmodel,)                                      qrt
ort    (.onnx,)                                        onnxruntime
torch  (pickled float module,)                         torch (+ the module's own package)
fx     (pickled float module, int8 FX state_dict)      torch, torch.ao.quantization: PyTorch's
       recipe for an FX model: rebuild it from the float module, then load the int8 state_dict
dyn    (pickled float module, dynamic int8 state_dict) torch: quantize_dynamic (nn.Linear, nn.LSTM, nn.GRU; qint8
       weights, x86 engine) on the float module, then the saved state_dict loaded into it
numpy  (.npz of a fully-connected stack,)              numpy (+ threadpoolctl): the float32 chain
       x @ w.T + b with ReLU between layers, numpy's BLAS limited to `threads` (process-wide)
"""
from __future__ import annotations

import numpy as np

LIBRARY = {"qrt": "qrt", "ort": "onnxruntime", "torch": "torch", "fx": "torch", "dyn": "torch",
           "numpy": "numpy"}


def _qrt(paths, threads, shape):
    import qrt
    return qrt.load(paths[0], threads=threads).run


def _ort(paths, threads, shape):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Each session has its own pool, whose idle workers spin by default: with several sessions
    # and other runtimes taking turns in one process, they would take the cores from whichever
    # runs next.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(paths[0], so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _torch_fn(module, threads):
    import torch
    torch.set_num_threads(threads)  # process-wide: the harness loads just before it times

    def fn(x):
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    return fn


def _read_torch(path):
    import warnings

    import torch
    with warnings.catch_warnings():  # deprecation notes about quantized tensors and storages
        warnings.simplefilter("ignore")
        return torch.load(path, weights_only=False)  # a file the harness itself wrote


def _torch(paths, threads, shape):
    return _torch_fn(_read_torch(paths[0]).eval(), threads)


def _fx(paths, threads, shape):
    q = fx_int8(_read_torch(paths[0]), np.zeros(shape, np.float32))
    state = _read_torch(paths[1])
    missing, unexpected = q.load_state_dict(state, strict=False)
    if missing:
        raise KeyError(f"{paths[1]} lacks {missing[:5]}")
    for key in unexpected:  # FX keeps the packed weights of functional convs as plain attributes
        owner, _, attr = key.rpartition(".")
        setattr(q.get_submodule(owner), attr, state[key])
    return _torch_fn(q, threads)


def fx_int8(module, example: np.ndarray, calib=()):
    """PyTorch FX graph mode post-training static quantization, x86 backend, calibrated on
    `calib` (none: to load an int8 state_dict into). prepare_fx fuses `module` in place: pass
    a copy to keep it."""
    import warnings

    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(module.eval(), get_default_qconfig_mapping("x86"), (torch.from_numpy(example),))
        for s in calib:
            prepared(torch.from_numpy(s))
        return convert_fx(prepared)


def dynamic_int8(module):
    """PyTorch eager dynamic quantization: every nn.Linear, nn.LSTM and nn.GRU with qint8
    per-tensor weights, inputs quantized per call (x86 engine). PyTorch has no dynamic form
    for convolutions."""
    import warnings

    import torch
    from torch import nn

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():  # the note that torch.ao.quantization moves to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(module.eval(), {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8)


def _dyn(paths, threads, shape):
    q = dynamic_int8(_read_torch(paths[0]))
    q.load_state_dict(_read_torch(paths[1]))
    return _torch_fn(q, threads)


def save_fc_stack(module, path: str) -> str:
    """The nn.Linear layers of a fully-connected stack (bench.torch_models.MLP: Linear, ReLU
    between them) as float32 arrays w0, b0, w1, ... in an .npz, for the numpy runtime."""
    layers = [m for m in module.modules() if type(m).__name__ == "Linear"]
    arrays = {}
    for i, fc in enumerate(layers):
        arrays[f"w{i}"] = fc.weight.detach().numpy().astype(np.float32)
        arrays[f"b{i}"] = fc.bias.detach().numpy().astype(np.float32)
    np.savez(path, **arrays)
    return path


def _numpy(paths, threads, shape):
    from threadpoolctl import threadpool_limits
    threadpool_limits(threads, user_api="blas")  # process-wide, like torch.set_num_threads
    with np.load(paths[0]) as f:
        layers = [(f[f"w{i}"], f[f"b{i}"]) for i in range(len(f.files) // 2)]
    last = len(layers) - 1

    def fn(x):
        for i, (w, b) in enumerate(layers):
            x = x @ w.T
            x += b
            if i < last:
                np.maximum(x, 0, out=x)
        return x
    return fn


_LOADERS = {"qrt": _qrt, "ort": _ort, "torch": _torch, "fx": _fx, "dyn": _dyn, "numpy": _numpy}


def gemm_as_matmul(src, dst) -> str:
    """The .onnx at src with every Gemm that has constant weights (no transA, alpha = beta = 1)
    rewritten as MatMul (+ Add of the bias), written to dst: the form ORT's quantize_dynamic
    and MatMulNBits quantize, and its QOperator form writes as QLinearMatMul."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes = []
    for n in g.node:
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        if (n.op_type != "Gemm" or n.input[1] not in inits or a.get("transA", 0)
                or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0):
            nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        w = np.ascontiguousarray(w.T if a.get("transB", 0) else w)
        w_name = n.input[1] + ".kn"
        g.initializer.append(numpy_helper.from_array(w, w_name))
        if len(n.input) > 2 and n.input[2]:
            mid = n.output[0] + ".matmul"
            nodes += [helper.make_node("MatMul", [n.input[0], w_name], [mid], name=n.name + ".matmul"),
                      helper.make_node("Add", [mid, n.input[2]], [n.output[0]], name=n.name + ".add")]
        else:
            nodes.append(helper.make_node("MatMul", [n.input[0], w_name], [n.output[0]], name=n.name + ".matmul"))
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return str(dst)


def load(kind: str, paths, threads: int, shape):
    """fn(x) running the model in `paths` on `threads` threads; `shape`: the input at batch 1."""
    return _LOADERS[kind](paths, threads, tuple(shape))
