"""`import qrt` and loading a model need numpy only: no flatbuffers, torch, onnx, onnxruntime,
and not qrt.converters (imported only when qrt.convert or `qrt convert` runs). The converters
install as qrt.converters; there is no top-level `converters` package. (tests/test_imports.py
checks the same rules on the source, without importing it.)"""
import subprocess
import sys

from bench.fixtures.sample_models import conv_chain_model
import qrt

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        top = name.split('.')[0]
        if top in {'flatbuffers', 'torch', 'onnx', 'onnxruntime', 'onnxscript', 'converters'} \\
                or name == 'qrt.converters' or name.startswith('qrt.converters.'):
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_import_and_load_need_numpy_only(tmp_path):
    path = tmp_path / "m.qmodel"
    qrt.write_model(conv_chain_model(), path)
    code = BLOCK + f"""
import qrt
m = qrt.read_model({str(path)!r})
assert m.tensors[1].data.shape == (16, 3, 3, 3)
qrt.load({str(path)!r})
mods = sorted(n.split('.')[0] for n in sys.modules)
assert not {{'flatbuffers', 'torch', 'onnx', 'onnxruntime'}} & set(mods), mods
assert 'qrt.converters' not in sys.modules
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_writing_without_flatbuffers_says_what_to_install():
    code = BLOCK + """
import qrt, sys
sys.path.insert(0, '.')
from bench.fixtures.sample_models import conv_chain_model
try:
    qrt.to_bytes(conv_chain_model())
except qrt.QrtError as e:
    print(e)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'qrt[write]'" in r.stdout, r.stdout + r.stderr


def test_import_and_run_leave_converters_and_their_packages_unloaded(tmp_path):
    """With every package installed (nothing blocked), `import qrt`, qrt.load and run import
    none of qrt.converters, torch, onnx, onnxruntime or flatbuffers."""
    path = tmp_path / "m.qmodel"
    qrt.write_model(conv_chain_model(), path)
    code = f"""
import sys
import numpy as np
import qrt
m = qrt.load({str(path)!r})
m.run(np.zeros(m.inputs[0].shape, np.float32))
heavy = {{'flatbuffers', 'torch', 'onnx', 'onnxruntime', 'onnxscript', 'converters'}}
loaded = sorted(n for n in sys.modules if n.split('.')[0] in heavy or n == 'qrt.converters'
                or n.startswith('qrt.converters.'))
print(loaded)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"import qrt / load / run imported: {r.stdout.strip()}"


def test_converters_install_as_qrt_converters(tmp_path):
    """From a folder other than the repository's root (so the checkout is not on sys.path),
    qrt.converters imports and `converters` does not: the install maps the folder converters/
    to qrt.converters (setup.py). A failure here after a packaging change: reinstall with the
    Makefile's line, pip install -e '.[dev]'."""
    code = """
import importlib.util
import qrt.converters
from qrt.converters.errors import ConversionError
assert issubclass(ConversionError, qrt.QrtError)
print(ConversionError.__module__)
print(importlib.util.find_spec('converters'))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    module, top_level = r.stdout.split()
    assert module == "qrt.converters.errors", module
    assert top_level == "None", f"a top-level `converters` package is importable: {top_level}"
