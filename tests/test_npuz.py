"""The .npuz program file: round trip, and a clear error for every kind of damage.

Every header field is covered by a checksum (``header_sha256``) and checked
against the schema; each archive member's size is checked against a limit
before it is read.  ``resign`` recomputes the header's checksum, so a test
can reach the schema checks behind it.
"""
import io
import json
import struct
import hashlib
import tracemalloc
import zipfile

import numpy as np
import pytest

from npu.config import PRESETS
from npu_toolkit.testing.examples import conv3x3_dram_image, conv3x3_reference, conv3x3_source
from npu.isa import assemble
from npu.npuz import (MAX_DRAM_IMAGE_BYTES, VERSION, ProgramFile, ProgramFileError, ProgramMetadata, TensorDesc,
                      TensorLayout, header_digest, load_program)
from npu.numerics.pack import unpack_floats
from npu.sim import simulate

TINY = PRESETS["tiny"]


def make_file(tmp_path, name="conv.npuz"):
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
    path = tmp_path / name
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


def members(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def write_members(path, items, compression=zipfile.ZIP_DEFLATED):
    """Write an archive from (name, bytes) pairs (a name may repeat)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for n, d in items:
            zf.writestr(n, d)
    path.write_bytes(buf.getvalue())


def rewrite(path, mutate):
    m = members(path)
    mutate(m)
    write_members(path, m.items())


def resign(header: dict) -> dict:
    """The header with its own checksum recomputed (what a deliberate edit would do)."""
    header["header_sha256"] = header_digest(header)
    return header


def edit_header(path, change, sign=True):
    """Apply ``change(header)`` to the program file's header.json, re-signing it unless ``sign`` is False."""
    def mutate(m):
        h = json.loads(m["header.json"])
        change(h)
        m["header.json"] = json.dumps(resign(h) if sign else h).encode()
    rewrite(path, mutate)


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

    edit_header(path, lambda h: h.__setitem__("version", VERSION + 1))
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
    edit_header(path, lambda h: (h["metadata"] if where == "metadata" else h["inputs"][0]["params"]).update({key: 1}))
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


# ----- the header is checksummed ------------------------------------------------------------------
def test_a_changed_header_is_refused(tmp_path):
    """Regression: moving an output's address in header.json used to load and score all zeros without a word."""
    path, pf, _ = make_file(tmp_path)
    edit_header(path, lambda h: h["outputs"][0].__setitem__("daddr", h["outputs"][0]["daddr"] + 4096), sign=False)
    with pytest.raises(ProgramFileError, match=r"header\.json checksum mismatch \(header_sha256\)"):
        load_program(path)
    edit_header(path, lambda h: h["metadata"].__setitem__("model", "other"), sign=False)
    with pytest.raises(ProgramFileError, match="header_sha256"):
        load_program(path)


def test_the_header_checksum_covers_content_not_formatting(tmp_path):
    path, pf, _ = make_file(tmp_path)
    rewrite(path, lambda m: m.__setitem__("header.json", json.dumps(json.loads(m["header.json"]), indent=7,
                                                                    sort_keys=True).encode()))
    assert load_program(path).outputs == pf.outputs


def test_an_older_file_says_recompile(tmp_path):
    """Version 2 files (no header checksum, no sizes) are refused with the version and what to do."""
    path, _, _ = make_file(tmp_path)

    def to_v2(h):
        h["version"] = 2
        for key in ("sizes", "header_sha256"):
            h.pop(key)
    edit_header(path, to_v2, sign=False)
    with pytest.raises(ProgramFileError, match=f"version 2; this toolkit reads version {VERSION} "
                                               r"\(recompile the model\)"):
        load_program(path)


# ----- every header field is checked and named ----------------------------------------------------
DELETE = object()


def set_path(h, path, value):
    target = h
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    elif isinstance(target, list) and path[-1] == len(target):
        target.append(value)
    else:
        target[path[-1]] = value


OUT_END = ("outputs", 0, "daddr")
FIELD_CASES = [
    (OUT_END, 1 << 24, "outputs[0].daddr: the tensor's bytes"),
    (OUT_END, -1, "outputs[0].daddr: -1 is below 0"),
    (OUT_END, 1.5, "outputs[0].daddr: 1.5 is not an integer"),
    (OUT_END, True, "outputs[0].daddr: True is not an integer"),
    (OUT_END, "0x10", "outputs[0].daddr: '0x10' is not an integer"),
    (("inputs", 0, "nbytes"), 5, "inputs[0].nbytes: 5, but params describe 12800 bytes"),
    (("inputs", 0, "nbytes"), 0, "inputs[0].nbytes: 0 is below 1"),
    (("inputs", 0, "shape"), [8, 8], "inputs[0].shape: [8, 8], but an H x W x C array"),
    (("inputs", 0, "shape"), "abc", "inputs[0].shape: 'abc' is not a list of integers"),
    (("inputs", 0, "shape"), [8, 8, -64], "inputs[0].shape[2]: -64 is below 1"),
    (("inputs", 0, "shape"), [], "inputs[0].shape: [] must have 1 to 8 dimensions"),
    (("inputs", 0, "params", "channels"), -3, "inputs[0].params.channels: -3 is below 1"),
    (("inputs", 0, "params", "vectors"), 0, "inputs[0].params.vectors: 0 is below 1"),
    (("inputs", 0, "params", "native_dim"), 64, "inputs[0].params.native_dim: 64, but the machine's vectors"),
    (("inputs", 0, "params", "kernel"), [3], "inputs[0].params.kernel: expected 2 integers"),
    (("inputs", 0, "params", "packing"), "im2col", "inputs[0].params.image_shape"),
    (("inputs", 0, "params", "packing"), "jpeg", "inputs[0].params.packing"),
    (("inputs", 0, "params", "order"), 5, "inputs[0].params.order"),
    (("inputs", 0, "params", "pad"), 1000, "inputs[0].nbytes"),
    (("inputs", 0, "params", "height"), 10 ** 9, "inputs[0].params: the tensor's DRAM image holds"),
    (("inputs", 0, "params", "channel_offset"), 1, "inputs[0].params.channel_offset"),
    (("inputs", 0, "params"), [], "inputs[0].params: tensor layout must be a JSON object"),
    (("inputs", 0, "params", "channels"), DELETE, "inputs[0].params.channels: missing"),
    (("inputs", 0, "dtype"), "bf16", "inputs[0].dtype: 'bf16', but the machine's memories hold fp16"),
    (("inputs", 0, "layout"), "nchw", "inputs[0].layout: 'nchw'; known: hwc-padded"),
    (("inputs", 0, "name"), DELETE, "inputs[0].name: missing"),
    (("inputs", 0, "name"), 7, "inputs[0].name: 7 is not a string"),
    (("inputs", 0, "colour"), 1, "inputs[0]: unknown tensor description key(s) colour"),
    (("inputs",), {}, "inputs: not a list"),
    (("outputs", 0), 7, "outputs[0]: tensor description must be a JSON object"),
    (("outputs", 0, "params", "packing"), "strip", "outputs[0].params"),
    (("outputs", 0, "params", "channel_offset"), 1, "outputs[0].params.channel_offset"),
    (("regions", 0, 2), 10 ** 6, "regions[0][2]: instruction 1000000, but the program has"),
    (("regions", 0), "x", "regions[0]: 'x' is not [name, first instruction, last instruction]"),
    (("warm_regions",), [["a", 0, 0]], "warm_regions[0][2]"),
    (("metadata", "labels"), 5, "metadata.labels: not a list of names"),
    (("metadata", "preprocess"), {"crop": -1}, "metadata.preprocess: recipe crop=-1"),
    (("metadata", "preprocess"), {"channel_order": 5}, "metadata.preprocess: channel_order 5"),
    (("metadata", "preprocess"), [1], "metadata.preprocess: a preprocessing recipe is a JSON object"),
    (("metadata", "preprocess"), {"crop": 10 ** 6}, "metadata.preprocess: recipe crop=1000000"),
    (("metadata", "layers"), [5], "metadata.layers[0]: not an object"),
    (("metadata", "layers"), [{"macs": "many"}], "metadata.layers[0].macs"),
    (("metadata", "weight_tiles"), -1, "metadata.weight_tiles: -1 is below 0"),
    (("metadata",), [], "metadata: metadata must be a JSON object"),
    (("metadata", "postprocess"), {"y": 3}, "metadata.postprocess"),
    (("instructions",), 3, "header field instructions: 3, but program.bin holds"),
    (("instructions",), "many", "header field instructions: 'many' is not an integer"),
    (("config", "native_dim"), 33, "header field config: not a valid machine configuration"),
    (("config",), None, "header field config"),
    (("sizes",), {}, "header field sizes: must list exactly the parts"),
    (("sizes", "dram.bin"), 1, "archive member dram.bin declares"),
    (("sizes", "dram.bin"), -1, "header field sizes.dram.bin: -1 is below 0"),
    (("sha256", "dram.bin"), "0" * 64, "checksum mismatch in dram.bin"),
    (("sha256", "dram.bin"), 5, "checksum mismatch in dram.bin"),
    (("colour",), 1, "unknown header key(s) colour"),
    (("sizes",), DELETE, "header lacks sizes"),
    (("format",), "zip", "not a npuz program file"),
]


@pytest.mark.parametrize("where, value, message", FIELD_CASES,
                         ids=[".".join(map(str, c[0])) + "=" + repr(c[1])[:12] for c in FIELD_CASES])
def test_a_tampered_field_is_named(tmp_path, where, value, message):
    """Each tampered field gives a ProgramFileError naming it (never a KeyError or ValueError traceback), even with
    the header's checksum recomputed; without that, the checksum catches it first."""
    path, _, _ = make_file(tmp_path)
    good = path.read_bytes()
    edit_header(path, lambda h: set_path(h, where, value))
    with pytest.raises(ProgramFileError) as info:
        load_program(path)
    assert message in str(info.value), str(info.value)
    if where[0] not in ("format",):
        path.write_bytes(good)
        edit_header(path, lambda h: set_path(h, where, value), sign=False)
        with pytest.raises(ProgramFileError, match="checksum mismatch|version"):
            load_program(path)


def test_duplicate_and_overlapping_tensors(tmp_path):
    path, _, _ = make_file(tmp_path)
    edit_header(path, lambda h: h["inputs"].append(dict(h["inputs"][0], daddr=1 << 20)))
    with pytest.raises(ProgramFileError, match=r"inputs\[1\]\.name: 'x' names inputs\[0\] too"):
        load_program(path)
    path, _, _ = make_file(tmp_path)
    edit_header(path, lambda h: h["outputs"].append(dict(h["outputs"][0], name="z", daddr=h["outputs"][0]["daddr"] + 2)))
    with pytest.raises(ProgramFileError, match=r"outputs\[1\]\.daddr: its bytes overlap those of outputs\[0\]"):
        load_program(path)


def test_save_refuses_tables_that_would_not_load(tmp_path):
    _, pf, _ = make_file(tmp_path)
    pf.outputs = [TensorDesc("y", (8, 8, 32), "hwc-padded", "fp16", (1 << 24) - 100, 8 * 8 * 32 * 2,
                             TensorLayout(32, 8, 8, 0, 1, 32, order="hwc"))]
    with pytest.raises(ProgramFileError, match=r"not saved: header field outputs\[0\]\.daddr"):
        pf.save(tmp_path / "bad.npuz")
    assert not (tmp_path / "bad.npuz").exists()
    with pytest.raises(ValueError, match="channels: -1 is below 1"):
        TensorLayout(-1, 8, 8, 0, 1, 32)


# ----- memory is bounded before it is spent ---------------------------------------------------------
def _zeros_member(zf, name, size):
    digest = hashlib.sha256()
    with zf.open(name, "w", force_zip64=True) as w:
        chunk = bytes(1 << 20)
        for start in range(0, size, len(chunk)):
            part = chunk[:min(len(chunk), size - start)]
            w.write(part)
            digest.update(part)
    return digest.hexdigest()


def bomb(tmp_path, size, declared=None):
    """A program file whose dram.bin inflates to ``size`` zero bytes (about size / 1000 in the file); the
    header says so.  With ``declared``, the archive directory claims that size instead."""
    path, pf, _ = make_file(tmp_path)
    header = pf.header()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("program.bin", pf.words)
        header["sha256"]["dram.bin"] = _zeros_member(zf, "dram.bin", size)
        header["sizes"]["dram.bin"] = declared if declared is not None else size
        zf.writestr("header.json", json.dumps(resign(header)))
    raw = buf.getvalue()
    if declared is not None:
        raw = patch_directory(raw, "dram.bin", usize=declared)
    path.write_bytes(raw)
    return path


def patch_directory(raw: bytes, name: str, usize=None, flags=None) -> bytes:
    """Change a member's uncompressed size or flags in the archive's central directory."""
    raw = bytearray(raw)
    pos = 0
    while True:
        pos = raw.index(b"PK\x01\x02", pos)
        nlen = struct.unpack_from("<H", raw, pos + 28)[0]
        if raw[pos + 46: pos + 46 + nlen].decode() == name:
            break
        pos += 4
    if usize is not None:
        struct.pack_into("<I", raw, pos + 24, usize)
        xlen = struct.unpack_from("<H", raw, pos + 30)[0]
        extra = pos + 46 + nlen
        if xlen:                                          # zip64 extra field: its sizes too
            raw[extra: extra + xlen] = bytes(xlen)
            struct.pack_into("<HH", raw, extra, 0x7075, xlen - 4)      # an ignored extra field instead
    if flags is not None:
        struct.pack_into("<H", raw, pos + 8, flags)
    return bytes(raw)


def load_peak(path, **kw):
    """(error message, peak traced bytes) of loading ``path``."""
    tracemalloc.start()
    try:
        load_program(path, **kw)
        message = None
    except ProgramFileError as exc:
        message = str(exc)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return message, peak


def test_a_member_larger_than_its_limit_is_never_read(tmp_path):
    """Regression: a 1 MB .npuz whose member inflates to 1 GiB peaked at 2.2 GB before its checksum failed.
    The DRAM image may not exceed the machine's DRAM (16 MiB on tiny): refused from its declared size."""
    path = bomb(tmp_path, 64 << 20)
    assert path.stat().st_size < 1 << 20
    message, peak = load_peak(path)
    assert "dram.bin" in message and "more than the machine's DRAM (16777216 bytes)" in message, message
    assert peak < 4 << 20, peak


def test_a_lying_directory_cannot_inflate_a_member(tmp_path):
    """The archive directory claims 100 KB, the stream inflates to 64 MiB: reading stops at 100 KB."""
    path = bomb(tmp_path, 64 << 20, declared=100_000)
    message, peak = load_peak(path)
    assert "corrupt archive member dram.bin" in message, message
    assert peak < 4 << 20, peak


def test_the_dram_image_limit_of_the_loader(tmp_path):
    path, pf, _ = make_file(tmp_path)
    with pytest.raises(ProgramFileError, match=r"dram\.bin holds .* more than the loader's limit .*max_dram_bytes"):
        load_program(path, max_dram_bytes=len(pf.dram) - 1)
    assert load_program(path, max_dram_bytes=len(pf.dram)).dram == pf.dram
    assert MAX_DRAM_IMAGE_BYTES == 1 << 30


def test_a_huge_header_is_never_read(tmp_path):
    path, pf, _ = make_file(tmp_path)
    m = members(path)
    m["header.json"] = m["header.json"] + b" " * (8 << 20)          # 8 MiB of whitespace: deflates to 8 KB
    write_members(path, m.items())
    message, peak = load_peak(path)
    assert "header.json declares 8,3" in message and "MAX_HEADER_BYTES" in message, message
    assert peak < 2 << 20, peak


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("case, message", [
    ("duplicate", "holds header.json 2 times"),
    ("unknown", "unexpected archive member(s) notes.txt"),
    ("missing", "lacks dram.bin"),
    ("encrypted", "archive member dram.bin is encrypted"),
    ("bzip2", "archive member dram.bin uses compression method 12"),
    ("many", "lists 39 members"),
    ("truncated", "not a .npuz program file"),
    ("stored", None),
])
def test_archive_structure(tmp_path, case, message):
    path, pf, _ = make_file(tmp_path)
    m = members(path)
    items = list(m.items())
    if case == "duplicate":
        write_members(path, items + [("header.json", m["header.json"])])
    elif case == "unknown":
        write_members(path, items + [("notes.txt", b"hi")])
    elif case == "missing":
        write_members(path, [(n, d) for n, d in items if n != "dram.bin"])
    elif case == "encrypted":
        write_members(path, items)
        path.write_bytes(patch_directory(path.read_bytes(), "dram.bin", flags=0x1))
    elif case == "bzip2":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for n, d in items:
                zf.writestr(n, d, compress_type=zipfile.ZIP_BZIP2 if n == "dram.bin" else zipfile.ZIP_DEFLATED)
        path.write_bytes(buf.getvalue())
    elif case == "many":
        write_members(path, items + [(f"x{i}", b"") for i in range(36)])
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:-30])
    elif case == "stored":                                  # uncompressed members are fine
        write_members(path, items, compression=zipfile.ZIP_STORED)
    if message is None:
        assert load_program(path).dram == pf.dram
        return
    with pytest.raises(ProgramFileError) as info:
        load_program(path)
    assert message in str(info.value), str(info.value)


def test_a_corrupt_deflate_stream_is_a_program_file_error(tmp_path):
    path, _, _ = make_file(tmp_path)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"dram.bin") + len(b"dram.bin") + 40      # inside dram.bin's compressed data
    raw[start: start + 64] = bytes(range(64))
    path.write_bytes(bytes(raw))
    with pytest.raises(ProgramFileError, match="dram.bin|corrupt|checksum"):
        load_program(path)                       # zlib's error, or the CRC's, as a ProgramFileError
