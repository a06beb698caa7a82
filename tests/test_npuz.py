"""The .npuz program file: round trip, and a clear error for every kind of damage."""
import io
import json
import zipfile

import numpy as np
import pytest

from npu.config import PRESETS
from npu_toolkit.testing.examples import conv3x3_dram_image, conv3x3_reference, conv3x3_source
from npu.isa import assemble
from npu.npuz import VERSION, ProgramFile, ProgramFileError, ProgramMetadata, TensorDesc, TensorLayout, load_program
from npu.numerics.pack import unpack_floats
from npu.sim import simulate

TINY = PRESETS["tiny"]


def make_file(tmp_path):
    prog = assemble(conv3x3_source(TINY), TINY)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 64)).astype(np.float32)
    w = (rng.standard_normal((32, 3, 3, 64)) / 24).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    image = conv3x3_dram_image(TINY, x, w, b)
    out = TensorDesc("y", (8, 8, 32), "hwc-padded", "fp16", len(image), 8 * 8 * 32 * 2,
                     TensorLayout(32, 8, 8, 0, 1, 32, order="hwc"))
    pf = ProgramFile(TINY, prog.words, image, inputs=[TensorDesc("x", (8, 8, 64), "hwc-padded", "fp16", 0,
                                                                 10 * 10 * 64 * 2,
                                                                 TensorLayout(64, 8, 8, 1, 2, 32, order="hwc"))],
                     outputs=[out], regions=prog.regions, metadata=ProgramMetadata(model="conv3x3"))
    path = tmp_path / "conv.npuz"
    pf.save(path)
    return path, pf, (x, w, b)


def test_round_trip_and_run(tmp_path):
    path, pf, (x, w, b) = make_file(tmp_path)
    back = load_program(path, TINY)
    assert back.words == pf.words and back.dram == pf.dram and back.config == TINY
    assert back.inputs == pf.inputs and back.outputs == pf.outputs and back.regions == pf.regions
    assert back.metadata == ProgramMetadata(model="conv3x3")
    res = simulate(back.words, back.config, dram=back.dram)
    o = back.outputs[0]
    y = unpack_floats(res.dram(o.daddr, o.nbytes), o.dtype).reshape(o.shape)
    assert np.array_equal(y.view(np.uint16), conv3x3_reference(TINY, x, w, b).view(np.uint16))


def rewrite(path, mutate):
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    mutate(members)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    path.write_bytes(buf.getvalue())


def test_damage_is_reported_precisely(tmp_path):
    path, _, _ = make_file(tmp_path)
    good = path.read_bytes()

    def expect(match):
        with pytest.raises(ProgramFileError, match=match):
            load_program(path, TINY)
        path.write_bytes(good)

    path.write_bytes(good[: len(good) // 2])
    expect("not a .npuz program file")
    path.write_bytes(b"hello")
    expect("not a .npuz program file")
    rewrite(path, lambda m: m.__setitem__("dram.bin", m["dram.bin"][:-1] + bytes([m["dram.bin"][-1] ^ 1])))
    expect("checksum mismatch in dram.bin")
    rewrite(path, lambda m: m.pop("program.bin"))
    expect("lacks program.bin")

    def bump(m):
        h = json.loads(m["header.json"])
        h["version"] = VERSION + 1
        m["header.json"] = json.dumps(h).encode()
    rewrite(path, bump)
    expect(f"version {VERSION + 1}")
    rewrite(path, lambda m: m.__setitem__("header.json", b"{not json"))
    expect("header.json is not valid JSON")
    with pytest.raises(ProgramFileError, match="compiled for machine 'tiny', not 'bw-s10'.*recompile"):
        load_program(path, PRESETS["bw-s10"])
    with pytest.raises(ProgramFileError, match="no such program file"):
        load_program(tmp_path / "missing.npuz")


@pytest.mark.parametrize("where, key", [("metadata", "modle"), ("inputs", "chanels")])
def test_an_unknown_key_in_the_schema_is_named(tmp_path, where, key):
    """Every metadata and tensor-layout key is declared once (ProgramMetadata, TensorLayout): a typo is an error."""
    path, _, _ = make_file(tmp_path)

    def add(m):
        h = json.loads(m["header.json"])
        target = h["metadata"] if where == "metadata" else h["inputs"][0]["params"]
        target[key] = 1
        m["header.json"] = json.dumps(h).encode()
    rewrite(path, add)
    with pytest.raises(ProgramFileError, match=f"unknown .*key.*{key}"):
        load_program(path)


def test_the_schema_round_trips_every_key(tmp_path):
    layout = TensorLayout(3, 5, 7, 1, 1, 32, channel_offset=0, order="hwc", packing="strip", kernel=(3, 3),
                          stride=(2, 2), pads=(1, 1, 1, 1), image_shape=(3, 10, 14), group=6)
    assert TensorLayout.from_params(json.loads(json.dumps(layout.to_params()))) == layout
    from npu.preprocess import Preprocess

    meta = ProgramMetadata("m", {"weight": "ms-fp9"}, {"y": "softmax"}, [{"name": "c", "macs": 5}], 3,
                           Preprocess(crop=32, resize=36, scale=0.5), ["a", "b"])
    assert ProgramMetadata.from_dict(json.loads(json.dumps(meta.to_dict()))) == meta
    assert meta.macs == 5


def test_save_is_atomic(tmp_path):
    path, pf, _ = make_file(tmp_path)
    before = path.read_bytes()
    pf.words = pf.words          # same content: saving again yields a loadable file and no stray temp file
    pf.save(path)
    assert load_program(path).words == load_program(path).words
    assert not list(tmp_path.glob("*.tmp")) and len(before) > 0


def test_npu_run_takes_a_program_file(tmp_path):
    import subprocess
    import sys

    path, _, _ = make_file(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "npu_toolkit.cli", "run", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "tiny" in proc.stdout and "conv" in proc.stdout          # machine line and the region table
    bad = subprocess.run([sys.executable, "-m", "npu_toolkit.cli", "run", str(path), "--config", "bw-a10"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "compiled for machine 'tiny'" in bad.stderr and "Traceback" not in bad.stderr
