"""MINIMUM (SPEC.md section 2.13.19): y = min(a, b); MAXIMUM's algorithm taking the smaller
operand (qrt/ops/maximum.py, whose compiled kernel it shares: ExtremumParams.minimum). Its
float32 form is ADD's (np.minimum; qrt/ops/add.py)."""
from ..format.model import OpCode
from .add import FLOAT_FORM, verify_binary
from .base import OpDef
from .maximum import prepare, reference

MINIMUM = OpDef(OpCode.MINIMUM, (2, 2), 1, True, None, verify_binary, prepare, reference, "maximum",
                since="0.2.0", forms=(FLOAT_FORM,),
                batch=True)
