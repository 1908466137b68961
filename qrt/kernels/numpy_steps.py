"""NumPy references as steps (PAD's modes, from movement.pyx bind_pad; RESIZE): vectorised already."""
from qrt.kernels import Kernel
from qrt.kernels.plan import PyStep
from qrt.ops import pad, resize


def _run(ins, rp, out):
    out[...] = rp[0](ins, rp[1])


def _step(reference, ins, p, out, expect):
    if out.shape != expect or out.dtype != ins[0].dtype or not out.flags.c_contiguous:
        raise ValueError(f"out {out.dtype} {out.shape}: expected C-contiguous {ins[0].dtype} {expect}")
    return PyStep(_run, ins, (reference, p), out)


def bind_pad_modes(ins, p, out):
    s = ins[0].shape
    return _step(pad.reference, ins, p, out, tuple(d + a + b for d, a, b in zip(s, p.pads, p.pads[len(s):])))


def bind_resize(ins, p, out, isa=None, threads=1):
    x, ih, _, iw, _ = ins
    return _step(resize.reference, ins, p, out, (x.shape[0], ih.shape[0], iw.shape[0], x.shape[3]))


KERNELS = {"resize": Kernel(lambda ins, p, out, isa=None, threads=1: bind_resize(ins, p, out)(), bind_resize)}
