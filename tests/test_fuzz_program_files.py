"""Fuzzing the program-file reader (npu/npuz.py) with random mutations of a valid .npuz.

Mutations: a header field replaced, deleted or added (with the header's
checksum recomputed, so the schema checks behind it are reached, or not);
a member's bytes changed (with the checksums and sizes recomputed, or not);
the archive's structure changed (members dropped, repeated, added,
compressed otherwise); the file's bytes flipped, cut or spliced.

Property: every outcome is either a ProgramFileError with a message naming
the file, or a successful load whose program runs (the simulator may refuse
the program with a SimulationError naming the instruction); never another
exception, and memory stays bounded.
"""
from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from npu.hostio import dram_image_with_inputs, unpack_output
from npu.npuz import ProgramFileError, load_program
from npu.sim import SimulationError, simulate

from test_npuz import make_file, resign

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                      HealthCheck.data_too_large])
#: Bytes a load and a run of the (tiny, 16 MiB DRAM) test program may allocate.
MEMORY = 96 << 20


class Original(tuple):
    """(file bytes, {member: bytes}) of the valid program file every mutation starts from."""

    def __repr__(self):
        return "<the valid conv3x3 program file>"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path, pf, _ = make_file(tmp_path_factory.mktemp("fuzz"))
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    return Original((path.read_bytes(), members))


def archive(items, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data, method in items:
            zf.writestr(name, data, compress_type=method if method is not None else compression)
    return buf.getvalue()


def note(what: str) -> None:
    """Count an outcome in hypothesis's statistics (pytest --hypothesis-show-statistics)."""
    try:
        event(what)
    except InvalidArgument:                      # not inside a hypothesis test
        pass


def outcome(raw: bytes, tmp_path) -> str:
    """Load ``raw`` as a program file and run it: "error", "refused" or "ran" (asserting the property)."""
    path = tmp_path / "fuzzed.npuz"
    path.write_bytes(raw)
    tracemalloc.start()
    try:
        try:
            pf = load_program(path)
        except ProgramFileError as exc:
            assert str(exc).startswith(f"{path}: ") and len(str(exc)) > len(str(path)) + 8, str(exc)
            note("error: " + " ".join(str(exc)[len(str(path)) + 2:].split()[:3]))
            return "error"
        feeds = {d.name: np.zeros(d.shape, np.float32) for d in pf.inputs}
        try:
            result = simulate(pf, pf.config, dram=dram_image_with_inputs(pf, feeds), cycle_budget=200_000,
                              memory_budget=64 << 20)
        except SimulationError as exc:
            assert str(exc)
            note("refused by the simulator")
            return "refused"
        for d in pf.outputs:
            y = unpack_output(d, result.dram(d.daddr, d.nbytes))
            assert y.size == int(np.prod(d.shape))
        note("loaded and ran")
        return "ran"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY, peak


# ----- header fields --------------------------------------------------------------------------------
def paths(value, prefix=()):
    """Every path into a JSON value (containers and leaves)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, prefix + (i,))


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats() | st.text(max_size=8)
    | st.sampled_from([0, -1, 1, 2, 31, 32, 33, 4095, 4096, 1 << 24, (1 << 24) - 1, 1 << 31, 1 << 32, 10 ** 30,
                       "hwc", "chw", "strip", "im2col", "fp16", "bf16", "softmax", "", "x"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)


@settings(FUZZ, max_examples=300)
@given(st.data())
def test_fuzz_header_fields(original, tmp_path, data):
    raw, members = original
    header = json.loads(members["header.json"])
    where = data.draw(st.sampled_from([p for p in paths(header) if p and p[-1] != "header_sha256"]))
    target = header
    for key in where[:-1]:
        target = target[key]
    current = target[where[-1]]
    action = data.draw(st.sampled_from(["replace", "nearby", "delete", "add"]))
    if action == "delete":
        del target[where[-1]]
    elif action == "add" and isinstance(current, (dict, list)):
        value = data.draw(json_value)
        if isinstance(current, dict):
            current[data.draw(st.text(max_size=6))] = value
        else:
            current.append(value if data.draw(st.booleans()) or not current else current[0])
    elif action == "nearby" and isinstance(current, int) and not isinstance(current, bool):
        target[where[-1]] = current + data.draw(st.sampled_from([-1, 1, -current, current, 16, -16, 4096]))
    else:
        target[where[-1]] = data.draw(json_value)
    if data.draw(st.booleans()):
        resign(header)
    members = dict(members, **{"header.json": json.dumps(header).encode()})
    outcome(archive([(n, d, None) for n, d in members.items()]), tmp_path)


# ----- member bytes -------------------------------------------------------------------------------
@settings(FUZZ, max_examples=150)
@given(st.data())
def test_fuzz_member_bytes(original, tmp_path, data):
    """A member's bytes replaced, cut, extended or flipped; with the header's sums and sizes recomputed, random
    instruction words and DRAM images reach the simulator."""
    raw, members = original
    members = dict(members)
    name = data.draw(st.sampled_from(sorted(members)))
    blob = bytearray(members[name])
    how = data.draw(st.sampled_from(["flip", "cut", "extend", "random", "words"]))
    if how == "flip" and blob:
        for _ in range(data.draw(st.integers(1, 8))):
            blob[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "cut":
        del blob[data.draw(st.integers(0, len(blob))):]
    elif how == "extend":
        blob += data.draw(st.binary(max_size=64))
    elif how == "random":
        blob = bytearray(data.draw(st.binary(max_size=256)))
    elif how == "words" and name != "header.json":
        blob = bytearray(data.draw(st.binary(min_size=16, max_size=16 * 6)))
        blob = blob[: len(blob) // 16 * 16] + bytes.fromhex("01" + "00" * 15)          # ... then halt
    members[name] = bytes(blob)
    if name != "header.json" and data.draw(st.booleans()):
        header = json.loads(members["header.json"])
        header["sha256"][name] = hashlib.sha256(members[name]).hexdigest()
        header["sizes"][name] = len(members[name])
        if name == "program.bin":
            header["instructions"] = len(members[name]) // 16
            header["regions"] = []
        members["header.json"] = json.dumps(resign(header)).encode()
    outcome(archive([(n, d, None) for n, d in members.items()]), tmp_path)


# ----- archive structure --------------------------------------------------------------------------
@settings(FUZZ, max_examples=120)
@given(st.data())
def test_fuzz_archive_structure(original, tmp_path, data):
    raw, members = original
    items = [(n, d, None) for n, d in members.items()]
    for _ in range(data.draw(st.integers(1, 3))):
        how = data.draw(st.sampled_from(["drop", "repeat", "add", "method", "shuffle"]))
        if how == "drop" and items:
            items.pop(data.draw(st.integers(0, len(items) - 1)))
        elif how == "repeat" and items:
            items.append(items[data.draw(st.integers(0, len(items) - 1))])
        elif how == "add":
            items.append((data.draw(st.sampled_from(["warm.bin", "notes.txt", "HEADER.JSON", "dram.bin/"])),
                          data.draw(st.binary(max_size=64)), None))
        elif how == "method" and items:
            i = data.draw(st.integers(0, len(items) - 1))
            items[i] = (items[i][0], items[i][1], data.draw(st.sampled_from(
                [zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA, zipfile.ZIP_DEFLATED])))
        elif how == "shuffle":
            items = data.draw(st.permutations(items))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                       # zipfile warns about a repeated name
        blob = archive(items)
    outcome(blob, tmp_path)


# ----- file bytes ---------------------------------------------------------------------------------
@settings(FUZZ, max_examples=200)
@given(st.data())
def test_fuzz_file_bytes(original, tmp_path, data):
    """Flipped, cut and spliced bytes anywhere in the file: the ZIP structure, local headers, compressed data."""
    raw, _ = original
    blob = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        how = data.draw(st.sampled_from(["flip", "cut", "splice", "set"]))
        if not blob:
            break
        at = data.draw(st.integers(0, len(blob) - 1))
        if how == "flip":
            blob[at] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "cut":
            del blob[at: at + data.draw(st.integers(1, 64))]
        elif how == "splice":
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=32))
        else:
            blob[at] = data.draw(st.sampled_from([0, 0xFF, 0x7F, 0x80]))
    outcome(bytes(blob), tmp_path)


def test_the_original_runs(original, tmp_path):
    assert outcome(original[0], tmp_path) == "ran"
