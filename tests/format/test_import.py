"""`import qrt` and loading a model need numpy only: no flatbuffers, torch, onnx, onnxruntime."""
import subprocess
import sys

from tests.sample_models import conv_chain_model
import qrt

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'flatbuffers', 'torch', 'onnx', 'onnxruntime', 'converters'}:
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
mods = sorted(n.split('.')[0] for n in sys.modules)
assert not {{'flatbuffers', 'torch', 'onnx', 'onnxruntime'}} & set(mods), mods
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_writing_without_flatbuffers_says_what_to_install():
    code = BLOCK + """
import qrt, sys
sys.path.insert(0, '.')
from tests.sample_models import conv_chain_model
try:
    qrt.to_bytes(conv_chain_model())
except qrt.QrtError as e:
    print(e)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'qrt[write]'" in r.stdout, r.stdout + r.stderr
