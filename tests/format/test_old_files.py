"""Files written by an earlier qrt keep loading and give the same bits (SPEC.md section 6,
backward compatibility). tests/format/data holds two models written by qrt 0.1.0 (format
revision 1) with inputs and the outputs that qrt 0.1.0 computed for them."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import qrt
from qrt.kernels import isa as ISA

DATA = Path(__file__).resolve().parent / "data"
SAVED = np.load(DATA / "written_by_qrt0.1.0.npz")
# SHA-256 of each file written again by the revision-3 writer (before symbols, revision 4, were
# added): files without symbols must keep being written byte for byte the same.
REWRITTEN = {
    "all_ops": "8b8ae46a542d321feb572deabf9ce66ff371cc63a2b4ebf128090ca31580ecc3",
    "conv_chain": "b77e35239f445b67ea547e6d9b0ed68f7efb39ab33e340e1f140966a1e63b1d7",
}


@pytest.mark.parametrize("name", ["all_ops", "conv_chain"])
@pytest.mark.parametrize("kernels", ["fast", "reference"])
def test_files_from_qrt_0_1_0_load_and_give_the_same_outputs(name, kernels):
    path = DATA / f"{name}_qrt0.1.0.qmodel"
    model = qrt.read_model(path)
    assert (model.format_version, model.min_runtime_version) == (1, "0.1.0")
    feeds = {k.split("/")[2]: SAVED[k] for k in SAVED.files if k.startswith(f"{name}/in/")}
    want = {k.split("/")[2]: SAVED[k] for k in SAVED.files if k.startswith(f"{name}/out/")}
    for isa in ISA.supported() if kernels == "fast" else [None]:
        m = qrt.load(path, kernels=kernels, isa=isa)
        got = m.run(feeds)
        got = got if isinstance(got, dict) else {m.outputs[0].name: got}
        assert got.keys() == want.keys()
        for k in want:
            assert np.array_equal(got[k], want[k]), (name, kernels, isa, k)
    # and writing it again changes only what the writer stamps (format revision; a file without
    # symbols is written as revision 3's writer wrote it, byte for byte)
    data = qrt.to_bytes(model)
    again = qrt.read_model(data)
    assert again.format_version == qrt.format.versions.REVISION_WITHOUT_SYMBOLS
    assert again.min_runtime_version == "0.1.0"
    assert hashlib.sha256(data).hexdigest() == REWRITTEN[name]


def test_written_files_get_the_usual_mode(tmp_path):
    """The atomic write's temporary file must not leave the model private (0600): the file
    gets 0666 less the umask, like any file the user creates."""
    umask = os.umask(0o022)
    try:
        path = tmp_path / "m.qmodel"
        qrt.write_model(qrt.read_model(DATA / "conv_chain_qrt0.1.0.qmodel"), path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    finally:
        os.umask(umask)
