"""SUB (SPEC.md section 2.13.4): y = a - b; ADD's algorithm with b negated (qrt/ops/add.py, whose
compiled kernel it shares: AddParams.subtract). Its float32 form is ADD's (np.subtract)."""
from ..format.model import OpCode
from .add import FLOAT_FORM, INT16_FORM, prepare, reference, verify_binary
from .base import OpDef

SUB = OpDef(OpCode.SUB, (2, 2), 1, True, None, verify_binary, prepare, reference, "add", forms=(FLOAT_FORM, INT16_FORM),
            batch=True)
