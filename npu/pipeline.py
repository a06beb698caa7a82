"""The pipeline file (``.npup``): one deployable artifact from image to class names.

A pipeline holds the preprocessing recipe, one compiled program (a plain
``.npuz`` or a segmented one, embedded byte for byte), an optional host
head that turns the program's output into class scores, the class labels and
a version string.  It is a ZIP archive like ``.npuz``, format name ``npup``::

    header.json    format, version, name, model_version, labels, the
                   preprocess override (null: the program's own recipe),
                   the head's kind ("none", "arrays", "onnx"), each member's
                   size and SHA-256, and the header's own SHA-256
    program.npuz   the compiled program file, read with every check of
                   ``npu.segments.open_program``
    head.npz       kind "arrays": a dense or MLP head as plain NumPy arrays
                   ``w0, b0, w1, b1, ..., labels`` (never pickled objects)
    head.onnx      kind "onnx": an ONNX model (default-domain operators,
                   weights inside the file); the runtime checks it before
                   onnxruntime sees it

Loading checks every field, size and checksum and the embedded program;
nothing in the file is executed and nothing is unpickled.  An error is a
ProgramFileError naming the field or member.  What the head's arrays or ONNX
graph mean (feature count, classes) is checked by the runtime
(``runtime.pipelines``), which runs it.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .npuz import (MAX_DRAM_IMAGE_BYTES, MAX_HEADER_BYTES, ProgramFileError, _read_member, _short,
                   archive_format, header_digest, open_archive, open_program_file, parse_archive_header,
                   read_listed_members, write_atomically)
from .preprocess import Preprocess
from .segments import MAX_NPU_SEGMENT_BYTES, load_program_bytes

FORMAT = "npup"
VERSION = 1
HEADER_KEYS = ("format", "version", "name", "model_version", "labels", "preprocess", "head", "sha256", "sizes",
               "header_sha256")
HEAD_KINDS = ("none", "arrays", "onnx")
HEAD_MEMBERS = {"arrays": "head.npz", "onnx": "head.onnx"}
PROGRAM_MEMBER = "program.npuz"

#: Largest embedded program file (a segmented program of NPU segments holds several whole programs).
MAX_PIPELINE_PROGRAM_BYTES = 2 * MAX_NPU_SEGMENT_BYTES
#: Largest head member (``head.npz`` or ``head.onnx``), and the most bytes a ``head.npz``'s arrays may declare.
MAX_PIPELINE_HEAD_BYTES = 1 << 28
#: Most arrays in a ``head.npz`` (16 layers of weight and bias, and the labels).
MAX_HEAD_ARRAYS = 33
#: Most class labels, longest label, longest name and version string.
MAX_LABELS = 1 << 16
MAX_LABEL_CHARS = 256
MAX_NAME_CHARS = 256
_NAME = re.compile(r"[^\x00-\x1f\x7f]*")


@dataclass
class PipelineFile:
    """A pipeline: a program file's bytes, an optional head, labels, a version and a name.

    ``program_bytes`` is the embedded ``.npuz`` file as is; ``head_kind`` is
    "none", "arrays" (``head_bytes`` a ``.npz`` written by
    ``runtime.heads.save_head``) or "onnx" (``head_bytes`` an ONNX model);
    ``preprocess`` overrides the program's own recipe (None: the program's).
    """

    program_bytes: bytes
    head_kind: str = "none"
    head_bytes: bytes = b""
    labels: list[str] | None = None
    version: str = ""
    name: str = ""
    preprocess: Preprocess | None = None
    _program: object = field(default=None, repr=False, compare=False)

    def program(self, where: str = PROGRAM_MEMBER):
        """The embedded program (``ProgramFile`` or ``SegmentedProgram``), loaded with every check once."""
        if self._program is None:
            self._program = load_program_bytes(self.program_bytes, where)
        return self._program

    def members(self) -> dict[str, bytes]:
        """The archive's members other than the header."""
        out = {PROGRAM_MEMBER: bytes(self.program_bytes)}
        if self.head_kind != "none":
            out[HEAD_MEMBERS[self.head_kind]] = bytes(self.head_bytes)
        return out

    def check(self, where: str = "pipeline") -> None:
        """ProgramFileError naming the field unless every field is well formed (the program and an arrays head are
        read and checked too)."""
        def fail(message: str) -> ProgramFileError:
            return ProgramFileError(f"{where}: {message}")

        _check_fields(self.name, self.version, self.labels, self.head_kind, fail)
        if self.preprocess is not None and not isinstance(self.preprocess, Preprocess):
            raise fail("field preprocess: not an npu.preprocess.Preprocess")
        if len(self.program_bytes) > MAX_PIPELINE_PROGRAM_BYTES:
            raise fail(f"{PROGRAM_MEMBER} holds {len(self.program_bytes):,} bytes, more than "
                       f"{MAX_PIPELINE_PROGRAM_BYTES:,}")
        if self.head_kind == "none" and self.head_bytes:
            raise fail("field head: kind 'none' with head bytes")
        if self.head_kind != "none":
            if not self.head_bytes:
                raise fail(f"{HEAD_MEMBERS[self.head_kind]} is empty")
            if len(self.head_bytes) > MAX_PIPELINE_HEAD_BYTES:
                raise fail(f"{HEAD_MEMBERS[self.head_kind]} holds {len(self.head_bytes):,} bytes, more than "
                           f"{MAX_PIPELINE_HEAD_BYTES:,}")
        if self.head_kind == "arrays":
            check_head_arrays(self.head_bytes, fail)
        self.program(f"{where}!{PROGRAM_MEMBER}")

    def header(self) -> dict:
        """The ``header.json`` content, checksums included."""
        members = self.members()
        header = {
            "format": FORMAT, "version": VERSION, "name": self.name, "model_version": self.version,
            "labels": None if self.labels is None else [str(x) for x in self.labels],
            "preprocess": None if self.preprocess is None else self.preprocess.to_dict(),
            "head": self.head_kind,
            "sha256": {n: hashlib.sha256(d).hexdigest() for n, d in members.items()},
            "sizes": {n: len(d) for n, d in members.items()},
        }
        header = json.loads(json.dumps(header))
        header["header_sha256"] = header_digest(header)
        return header

    def to_bytes(self, where: str = "pipeline") -> bytes:
        """The file's bytes (what :meth:`save` writes), after :meth:`check`."""
        self.check(where)
        buf = io.BytesIO()
        members = {"header.json": json.dumps(self.header(), indent=1).encode(), **self.members()}
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():       # a fixed time stamp: the same pipeline, the same bytes
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED if name == PROGRAM_MEMBER else zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        """Write the pipeline file atomically; a file that would not load is never written."""
        path = Path(path)
        write_atomically(path, self.to_bytes(f"{path}: not saved"))


def _check_fields(name, version, labels, head_kind, fail) -> None:
    for key, value in (("name", name), ("model_version", version)):
        if not isinstance(value, str):
            raise fail(f"header field {key}: {_short(value)} is not a string")
        if len(value) > MAX_NAME_CHARS or not _NAME.fullmatch(value):
            raise fail(f"header field {key}: longer than {MAX_NAME_CHARS} characters or holds control characters")
    if head_kind not in HEAD_KINDS:
        raise fail(f"header field head: {_short(head_kind)} is none of {', '.join(HEAD_KINDS)}")
    if labels is not None:
        if not isinstance(labels, list):
            raise fail("header field labels: not a list of strings (or null)")
        if not 1 <= len(labels) <= MAX_LABELS:
            raise fail(f"header field labels: {len(labels)} labels; a pipeline has 1 to {MAX_LABELS:,}")
        for i, label in enumerate(labels):
            if not isinstance(label, str) or len(label) > MAX_LABEL_CHARS:
                raise fail(f"header field labels[{i}]: {_short(label)} is not a string of at most "
                           f"{MAX_LABEL_CHARS} characters")


def check_head_arrays(data: bytes, fail) -> dict:
    """The arrays of a ``head.npz``, read without unpickling, once the archive is bounded (``fail`` makes the
    error): a NumPy .npz of at most :data:`MAX_HEAD_ARRAYS` plain arrays declaring at most
    :data:`MAX_PIPELINE_HEAD_BYTES` bytes."""
    import numpy as np

    def inner(message: str) -> ProgramFileError:
        return fail(f"head.npz: {message}")

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise inner("not a NumPy .npz of arrays (not a ZIP archive)")
    zf, by_name = open_archive(io.BytesIO(data), inner, MAX_HEAD_ARRAYS, "a head")
    with zf:
        total = sum(i.file_size for i in by_name.values())
        bad = [n for n in by_name if not n.endswith(".npy")]
    if bad:
        raise inner(f"member {_short(bad[0])} is not a .npy array")
    if total > MAX_PIPELINE_HEAD_BYTES:
        raise inner(f"its arrays declare {total:,} bytes, more than {MAX_PIPELINE_HEAD_BYTES:,}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise inner("holds pickled objects; a head is plain arrays only") from None
        raise inner(f"not a NumPy .npz of arrays: {exc}") from None
    except Exception as exc:           # numpy's and zipfile's errors for a malformed array
        raise inner(f"not a NumPy .npz of arrays: {type(exc).__name__}: {exc}") from None
    for k, a in arrays.items():
        if a.dtype.hasobject:
            raise inner(f"array {k!r} holds objects; a head is plain arrays only")
    return arrays


def is_pipeline(path) -> bool:
    """Whether ``path`` (or a binary file object) holds a pipeline file (False for a program or anything
    unreadable)."""
    return archive_format(path) == FORMAT


def load_pipeline(path: str | Path, *, max_dram_bytes: int = MAX_DRAM_IMAGE_BYTES) -> PipelineFile:
    """Read and verify a pipeline file (ProgramFileError naming the field or member); the embedded program is loaded
    with every check of ``npu.segments.open_program`` (``PipelineFile.program()`` returns it)."""
    path = Path(path)
    with open_program_file(path) as fp:
        return _load_pipeline(fp, path, max_dram_bytes)


def load_pipeline_bytes(data: bytes, where: str = "<bytes>", *,
                        max_dram_bytes: int = MAX_DRAM_IMAGE_BYTES) -> PipelineFile:
    """:func:`load_pipeline` for a pipeline file's bytes; ``where`` names it in errors."""
    return _load_pipeline(io.BytesIO(bytes(data)), Path(where), max_dram_bytes)


def _load_pipeline(fp, path: Path, max_dram_bytes: int) -> PipelineFile:
    def fail(message: str) -> ProgramFileError:
        return ProgramFileError(f"{path}: {message}")

    zf, by_name = open_archive(fp, fail, 1 + 1 + len(HEAD_MEMBERS), "a pipeline file")
    with zf:
        if "header.json" not in by_name:
            raise fail("pipeline file lacks header.json")
        header = _parse_header(_read_member(zf, by_name["header.json"], MAX_HEADER_BYTES,
                                            "the limit (npu.npuz.MAX_HEADER_BYTES)", fail), fail)
        kind = header["head"]
        _check_fields(header["name"], header["model_version"], header["labels"], kind, fail)
        limits = {PROGRAM_MEMBER: MAX_PIPELINE_PROGRAM_BYTES}
        if kind != "none":
            limits[HEAD_MEMBERS[kind]] = MAX_PIPELINE_HEAD_BYTES
        data = read_listed_members(zf, by_name, header, limits, fail, f"the header (head {kind!r})")
    preprocess = None
    if header["preprocess"] is not None:
        try:
            preprocess = Preprocess.from_dict(header["preprocess"])
        except (TypeError, ValueError, AttributeError) as exc:
            raise fail(f"header field preprocess: {exc}") from None
    if kind == "arrays":
        check_head_arrays(data["head.npz"], fail)
    elif kind == "onnx" and not data["head.onnx"]:
        raise fail("head.onnx is empty")
    pipeline = PipelineFile(data[PROGRAM_MEMBER], kind, data.get(HEAD_MEMBERS.get(kind, ""), b""),
                            header["labels"], header["model_version"], header["name"], preprocess)
    pipeline._program = load_program_bytes(data[PROGRAM_MEMBER], f"{path}!{PROGRAM_MEMBER}",
                                           max_dram_bytes=max_dram_bytes)
    return pipeline


def _parse_header(raw: bytes, fail) -> dict:
    return parse_archive_header(raw, fail, FORMAT, VERSION, HEADER_KEYS, "pipeline file", "")
