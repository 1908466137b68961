"""UNARY (SPEC.md section 2.13.20): y = f(x) elementwise in float32, f one of UnaryFunction. It
has no integer form: an int8 graph carries such functions as LUT tables made at conversion (the
table then depends on no one's libm); UNARY is how a float island computes them. Its kernel is
this NumPy code (float64 inside, rounded once to float32)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..format.model import OpCode, UnaryFunction, UnaryOptions
from .base import FLOAT32, Check, Form, OpDef


def erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 to about 2e-7 relative: Taylor series near 0, else 1 - erfc with Numerical
    Recipes' Chebyshev fit (fractional error < 1.2e-7). NumPy has no erf; math.erf is per element."""
    x = np.asarray(x, np.float64)
    a = np.abs(x)
    x2 = x * x
    term, small = x.copy(), x.copy()
    for n in range(1, 12):  # |x| < 0.5: x^(2n+1) / (n! (2n+1)) converges past 1e-17 by n = 11
        term = term * (-x2) / n
        small += term / (2 * n + 1)
    small *= 2.0 / math.sqrt(math.pi)
    t = 1.0 / (1.0 + 0.5 * a)
    poly = -a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    large = np.sign(x) * (1.0 - t * np.exp(poly))
    return np.where(a < 0.5, small, large)


def _sigmoid(v):
    return 0.5 * (1.0 + np.tanh(0.5 * v))  # no overflow for large |v|


FUNCTIONS = {
    UnaryFunction.SIGMOID: lambda v, o: _sigmoid(v),
    UnaryFunction.TANH: lambda v, o: np.tanh(v),
    UnaryFunction.HARD_SIGMOID: lambda v, o: np.clip(np.float64(np.float32(o.alpha)) * v
                                                     + np.float64(np.float32(o.beta)), 0.0, 1.0),
    UnaryFunction.HARD_SWISH: lambda v, o: v * np.clip(v / 6.0 + 0.5, 0.0, 1.0),
    UnaryFunction.SILU: lambda v, o: v * _sigmoid(v),
    UnaryFunction.GELU: lambda v, o: 0.5 * v * (1.0 + erf(v / math.sqrt(2.0))),
    UnaryFunction.GELU_TANH: lambda v, o: 0.5 * v * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))),
    UnaryFunction.ERF: lambda v, o: erf(v),
    UnaryFunction.SQRT: lambda v, o: np.sqrt(v),
    UnaryFunction.NEG: lambda v, o: -v,
    UnaryFunction.EXP: lambda v, o: np.exp(v),
    UnaryFunction.LOG: lambda v, o: np.log(v),
    UnaryFunction.ABS: lambda v, o: np.abs(v),
}


@dataclass
class UnaryParams:
    function: UnaryFunction
    options: UnaryOptions


def prepare(model, op) -> UnaryParams:
    return UnaryParams(UnaryFunction(op.options.function), op.options)


def verify(c: Check):
    c.elementwise()
    o = c.options
    if o.function not in UnaryFunction._value2member_map_:
        c.fail(f"function {o.function} is not a UnaryFunction (0-{max(UnaryFunction)})")
    if o.function == UnaryFunction.HARD_SIGMOID and not (math.isfinite(o.alpha) and math.isfinite(o.beta)):
        c.fail(f"HARD_SIGMOID needs finite alpha and beta, got {o.alpha}, {o.beta}")


def reference(ins, p: UnaryParams) -> np.ndarray:
    with np.errstate(all="ignore"):  # sqrt and log of negatives give NaN, as in float32 math
        return FUNCTIONS[p.function](ins[0].astype(np.float64), p.options).astype(np.float32)


UNARY = OpDef(OpCode.UNARY, (1, 1), 1, False, UnaryOptions, verify, prepare, reference, None, since="0.3.0",
              integer=False, forms=(Form(FLOAT32, verify, prepare, reference, None, "0.3.0"),),
              batch=True)
