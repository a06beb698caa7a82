"""A program split into NPU and host segments (host fallback): the segmented program file.

A model whose operators do not all run on the NPU is compiled into an
ordered list of segments.  An NPU segment is a whole program
(``npu.npuz.ProgramFile``); a host segment is an ONNX model of the
operators the host runs, which the runtime executes with onnxruntime.
Segments run in order; each reads the model's inputs and earlier segments'
outputs by tensor name.

The file is a ZIP archive like ``.npuz``, with the format name
``npuz-segments``::

    header.json      format, version, machine, the model's inputs and
                     outputs, the tensors that cross between segments, the
                     segment table, the operators that fell to the host (with
                     the reason), metadata, each member's size and SHA-256,
                     and the header's own SHA-256
    segment<k>.npuz  NPU segment k: a complete program file, read with every
                     check of ``npu.npuz.load_program``
    segment<k>.onnx  host segment k: an ONNX model (default-domain operators,
                     weights inside the file, never external data)

Loading checks every field, size and checksum before anything runs; an
error is a ProgramFileError naming the field or member.  The runtime checks
a host segment's ONNX model again before handing it to onnxruntime.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .config import NPUConfig
from .npuz import (MAX_DRAM_IMAGE_BYTES, MAX_HEADER_BYTES, MAX_PROGRAM_BYTES,
                   MAX_TENSOR_ELEMENTS, SEGMENTED_FORMAT, ProgramFile, ProgramFileError, ProgramMetadata,
                   SchemaError, _config, _ints, _known_keys, _load, _read_member, _short,
                   _str, archive_format, header_digest, open_archive, open_program_file, parse_archive_header,
                   read_listed_members, write_atomically)

FORMAT = SEGMENTED_FORMAT
VERSION = 1
#: Most segments in one program.
MAX_SEGMENTS = 32
#: Largest host segment (ONNX bytes).
MAX_HOST_SEGMENT_BYTES = 1 << 28
#: Largest NPU segment (a whole program file: its DRAM image, instructions and header).
MAX_NPU_SEGMENT_BYTES = MAX_DRAM_IMAGE_BYTES + 2 * MAX_PROGRAM_BYTES + MAX_HEADER_BYTES
HEADER_KEYS = ("format", "version", "config", "inputs", "outputs", "tensors", "segments", "host_ops", "metadata",
               "sha256", "sizes", "header_sha256")
KINDS = ("npu", "host")
ORDERS = ("chw", "hwc")


@dataclass
class TensorSpec:
    """A model input or output of a segmented program: name, ONNX shape (batch 1 first) and array order."""

    name: str
    shape: tuple[int, ...]
    order: str = "chw"           # "hwc": the model takes the image as N x H x W x C

    def to_dict(self) -> dict:
        """JSON form."""
        return {"name": self.name, "shape": list(self.shape), "order": self.order}

    @classmethod
    def from_dict(cls, data) -> "TensorSpec":
        """Rebuild from JSON; SchemaError names a bad field."""
        data = _known_keys(data, ["name", "shape", "order"], "tensor")
        shape = _ints(data.get("shape"), "shape", lo=1)
        if not shape or shape[0] != 1:
            raise SchemaError("shape", f"{list(shape)} does not start with the batch dimension 1")
        _check_elements(shape, "shape")
        order = data.get("order", "chw")
        if order not in ORDERS:
            raise SchemaError("order", f"{_short(order)} is none of {', '.join(ORDERS)}")
        return cls(_str(data.get("name"), "name"), shape, order)


@dataclass
class Segment:
    """One step of a segmented program: an NPU program or a host ONNX model, with the tensors it reads and writes."""

    kind: str                              # "npu" or "host"
    name: str
    inputs: list[str]
    outputs: list[str]
    program: ProgramFile | None = None     # kind "npu"
    onnx: bytes = b""                      # kind "host": a serialized onnx.ModelProto
    nodes: list[str] = field(default_factory=list)   # the model's operators it runs ("op_type name")

    @property
    def member(self) -> str:
        """Its archive member's name, given its position ``name`` (``segment<k>``)."""
        return f"{self.name}.{'npuz' if self.kind == 'npu' else 'onnx'}"

    def to_dict(self) -> dict:
        """The segment table's JSON entry."""
        return {"kind": self.kind, "name": self.name, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "nodes": list(self.nodes)}


@dataclass
class SegmentedProgram:
    """A model compiled with host fallback: segments run in order over named tensors."""

    config: NPUConfig
    segments: list[Segment]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    tensors: dict[str, tuple[int, ...]]           # every tensor crossing between segments: ONNX shape
    metadata: ProgramMetadata = field(default_factory=ProgramMetadata)
    host_ops: list[dict] = field(default_factory=list)   # {"node", "op", "reason"}: what runs on the host, and why

    @property
    def npu_segments(self) -> list[Segment]:
        """The segments that run on the NPU."""
        return [s for s in self.segments if s.kind == "npu"]

    def check(self) -> None:
        """SchemaError naming the field unless every segment reads only tensors available before it runs."""
        if not 1 <= len(self.segments) <= MAX_SEGMENTS:
            raise SchemaError("segments", f"{len(self.segments)} segments; a program holds 1 to {MAX_SEGMENTS}")
        known = {t.name for t in self.inputs}
        if len(known) != len(self.inputs):
            raise SchemaError("inputs", "a name is used twice")
        for name, shape in self.tensors.items():
            _check_elements(shape, f"tensors[{name!r}]")
        for t in self.inputs:
            if tuple(self.tensors.get(t.name, ())) != tuple(t.shape):
                raise SchemaError(f"tensors[{t.name!r}]", f"the input's shape {list(t.shape)} is not listed")
        names = set()
        for k, seg in enumerate(self.segments):
            where = f"segments[{k}]"
            if seg.kind not in KINDS:
                raise SchemaError(f"{where}.kind", f"{_short(seg.kind)} is none of {', '.join(KINDS)}")
            if seg.name != f"segment{k}" or seg.name in names:
                raise SchemaError(f"{where}.name", f"{_short(seg.name)}; segment {k} is named 'segment{k}'")
            names.add(seg.name)
            if not seg.outputs:
                raise SchemaError(f"{where}.outputs", "a segment writes at least one tensor")
            for i, t in enumerate(seg.inputs):
                if t not in known:
                    raise SchemaError(f"{where}.inputs[{i}]", f"{t!r} is neither a model input nor written by an "
                                      f"earlier segment")
            for i, t in enumerate(seg.outputs):
                if t in known:
                    raise SchemaError(f"{where}.outputs[{i}]", f"{t!r} is already written before this segment")
                if t not in self.tensors:
                    raise SchemaError(f"{where}.outputs[{i}]", f"{t!r} has no shape in the tensor table")
                known.add(t)
            if seg.kind == "npu":
                _check_npu_segment(seg, self.config, self.tensors, where)
        for i, t in enumerate(self.outputs):
            if t.name not in known:
                raise SchemaError(f"outputs[{i}]", f"{t.name!r} is written by no segment")
            if tuple(self.tensors[t.name]) != tuple(t.shape):
                raise SchemaError(f"outputs[{i}].shape", f"{list(t.shape)}, but the tensor table says "
                                  f"{list(self.tensors[t.name])}")

    def header(self, members: dict[str, bytes]) -> dict:
        """The ``header.json`` content for these member bytes, checksums included."""
        header = {
            "format": FORMAT, "version": VERSION, "config": self.config.to_dict(),
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "tensors": {k: list(v) for k, v in self.tensors.items()},
            "segments": [s.to_dict() for s in self.segments], "host_ops": [dict(p) for p in self.host_ops],
            "metadata": self.metadata.to_dict(),
            "sha256": {n: hashlib.sha256(d).hexdigest() for n, d in members.items()},
            "sizes": {n: len(d) for n, d in members.items()},
        }
        header = json.loads(json.dumps(header))
        header["header_sha256"] = header_digest(header)
        return header

    def to_bytes(self) -> bytes:
        """The file's bytes; SchemaError if the segment table is inconsistent."""
        self.check()
        members = {s.member: (s.program.to_bytes() if s.kind == "npu" else bytes(s.onnx)) for s in self.segments}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("header.json", json.dumps(self.header(members), indent=1))
            for name, data in members.items():
                zf.writestr(name, data, compress_type=zipfile.ZIP_STORED if name.endswith(".npuz") else None)
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        """Write the program file atomically; a file that would not load is never written."""
        path = Path(path)
        try:
            data = self.to_bytes()
        except SchemaError as exc:
            raise ProgramFileError(f"{path}: not saved: header field {exc}") from None
        write_atomically(path, data)


def _check_elements(shape, name: str) -> None:
    count = 1
    for d in shape:
        count *= int(d)
    if count > MAX_TENSOR_ELEMENTS:
        raise SchemaError(name, f"{list(shape)} holds {count:,} elements, more than {MAX_TENSOR_ELEMENTS:,} "
                          f"(npu.npuz.MAX_TENSOR_ELEMENTS)")


def _check_npu_segment(seg: Segment, config: NPUConfig, tensors: dict, where: str) -> None:
    """An NPU segment's program reads and writes exactly the segment's tensors, in their shapes, on this machine."""
    prog = seg.program
    if prog is None:
        raise SchemaError(where, "an NPU segment without its program")
    if prog.config != config:
        raise SchemaError(f"{where}.program.config", f"built for {prog.config.name!r}, the program for "
                          f"{config.name!r}")
    for role, descs, names in (("inputs", prog.inputs, seg.inputs), ("outputs", prog.outputs, seg.outputs)):
        if sorted(d.name for d in descs) != sorted(names):
            raise SchemaError(f"{where}.{role}", f"{sorted(names)}, but its program's {role} are "
                              f"{sorted(d.name for d in descs)}")
        for d in descs:
            want = tuple(tensors.get(d.name, ()))
            have = (1, *d.shape)
            if _elements(want) != _elements(have):
                raise SchemaError(f"{where}.{role}", f"{d.name!r} is {list(have)} in the NPU program, "
                                  f"{list(want)} in the tensor table")


def _elements(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def is_segmented(path: "str | Path | io.BytesIO") -> bool:
    """Whether ``path`` (or a binary file object) holds a segmented program (False for a plain ``.npuz`` or
    anything unreadable)."""
    return archive_format(path) == FORMAT


def open_program(path: str | Path, config: NPUConfig | None = None, *,
                 max_dram_bytes: int = MAX_DRAM_IMAGE_BYTES) -> "ProgramFile | SegmentedProgram":
    """Load a program file of either kind: a plain ``.npuz`` program or a segmented one."""
    from .npuz import load_program

    if is_segmented(path):
        return load_segmented(path, config, max_dram_bytes=max_dram_bytes)
    return load_program(path, config, max_dram_bytes=max_dram_bytes)


def load_program_bytes(data: bytes, where: str = "<bytes>", config: NPUConfig | None = None, *,
                       max_dram_bytes: int = MAX_DRAM_IMAGE_BYTES) -> "ProgramFile | SegmentedProgram":
    """:func:`open_program` for a program file's bytes (e.g. one embedded in a pipeline file), with every check of
    the file loaders; ``where`` names it in errors."""
    fp = io.BytesIO(bytes(data))
    if is_segmented(fp):
        fp.seek(0)
        return _load_segmented(fp, Path(where), config, max_dram_bytes)
    fp.seek(0)
    return _load(fp, Path(where), config, max_dram_bytes)


def load_segmented(path: str | Path, config: NPUConfig | None = None, *,
                   max_dram_bytes: int = MAX_DRAM_IMAGE_BYTES) -> SegmentedProgram:
    """Read and verify a segmented program file (ProgramFileError naming the field or member)."""
    path = Path(path)
    with open_program_file(path) as fp:
        return _load_segmented(fp, path, config, max_dram_bytes)


def _load_segmented(fp, path: Path, config: NPUConfig | None, max_dram_bytes: int) -> SegmentedProgram:
    def fail(message: str) -> ProgramFileError:
        return ProgramFileError(f"{path}: {message}")

    zf, by_name = open_archive(fp, fail, MAX_SEGMENTS + 1, "a segmented program")
    with zf:
        if "header.json" not in by_name:
            raise fail("program file lacks header.json")
        header = _parse_header(_read_member(zf, by_name["header.json"], MAX_HEADER_BYTES,
                                            "the limit (npu.npuz.MAX_HEADER_BYTES)", fail), fail)
        file_config = _config(header["config"], fail)
        if config is not None and file_config != config:
            raise fail(f"compiled for machine {file_config.name!r}, not {config.name!r}; recompile with "
                       f"--config {config.name}")
        try:
            table = _segment_table(header)
        except SchemaError as exc:
            raise fail(f"header field {exc}") from None
        limits = {f"{name}.{'npuz' if kind == 'npu' else 'onnx'}":
                  MAX_NPU_SEGMENT_BYTES if kind == "npu" else MAX_HOST_SEGMENT_BYTES for kind, name, *_ in table}
        members = read_listed_members(zf, by_name, header, limits, fail, "the segment table")
        segments = []
        for kind, name, inputs, outputs, nodes in table:
            member = f"{name}.{'npuz' if kind == 'npu' else 'onnx'}"
            data = members[member]
            if kind == "npu":
                program = _load(io.BytesIO(data), Path(f"{path}!{member}"), file_config, max_dram_bytes)
                segments.append(Segment(kind, name, inputs, outputs, program=program, nodes=nodes))
            else:
                segments.append(Segment(kind, name, inputs, outputs, onnx=data, nodes=nodes))
    try:
        inputs = [_spec(d, f"inputs[{i}]") for i, d in enumerate(_list(header["inputs"], "inputs"))]
        outputs = [_spec(d, f"outputs[{i}]") for i, d in enumerate(_list(header["outputs"], "outputs"))]
        tensors = _tensor_table(header["tensors"])
        host_ops = _host_ops(header["host_ops"])
        try:
            metadata = ProgramMetadata.from_dict(header["metadata"])
        except SchemaError as exc:
            raise exc.within("metadata") from None
        program = SegmentedProgram(file_config, segments, inputs, outputs, tensors, metadata, host_ops)
        program.check()
    except SchemaError as exc:
        raise fail(f"header field {exc}") from None
    return program


def _parse_header(raw: bytes, fail) -> dict:
    return parse_archive_header(raw, fail, FORMAT, VERSION, HEADER_KEYS, "segmented program file",
                                " (recompile the model)")


def _list(value, name: str) -> list:
    if not isinstance(value, list):
        raise SchemaError(name, "not a list")
    return value


def _names(value, name: str) -> list[str]:
    return [_str(v, f"{name}[{i}]") for i, v in enumerate(_list(value, name))]


def _spec(data, name: str) -> TensorSpec:
    try:
        return TensorSpec.from_dict(data)
    except SchemaError as exc:
        raise exc.within(name) from None


def _segment_table(header: dict) -> list[tuple]:
    rows = _list(header["segments"], "segments")
    if not 1 <= len(rows) <= MAX_SEGMENTS:
        raise SchemaError("segments", f"{len(rows)} segments; a program holds 1 to {MAX_SEGMENTS}")
    out = []
    for k, row in enumerate(rows):
        where = f"segments[{k}]"
        try:
            row = _known_keys(row, ["kind", "name", "inputs", "outputs", "nodes"], "segment")
        except SchemaError as exc:
            raise exc.within(where) from None
        kind = row.get("kind")
        if kind not in KINDS:
            raise SchemaError(f"{where}.kind", f"{_short(kind)} is none of {', '.join(KINDS)}")
        name = _str(row.get("name"), f"{where}.name")
        if name != f"segment{k}":
            raise SchemaError(f"{where}.name", f"{_short(name)}; segment {k} is named 'segment{k}'")
        out.append((kind, name, _names(row.get("inputs"), f"{where}.inputs"),
                    _names(row.get("outputs"), f"{where}.outputs"), _names(row.get("nodes", []), f"{where}.nodes")))
    return out


def _tensor_table(value) -> dict[str, tuple[int, ...]]:
    if not isinstance(value, dict):
        raise SchemaError("tensors", "not an object")
    return {_str(k, "tensors"): _ints(v, f"tensors[{k!r}]", lo=1) for k, v in value.items()}


def _host_ops(value) -> list[dict]:
    out = []
    for i, row in enumerate(_list(value, "host_ops")):
        row = _known_keys(row, ["node", "op", "reason"], f"host_ops[{i}]")
        out.append({k: _str(row.get(k), f"host_ops[{i}].{k}") for k in ("node", "op", "reason")})
    return out
