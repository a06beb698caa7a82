"""The versioned program file (``.npuz``): everything needed to run one compiled model.

A ``.npuz`` file is a ZIP archive holding::

    header.json    format name and version, machine configuration, tensor
                   descriptions, region table, metadata, SHA-256 of each part
    program.bin    the instruction words (16 bytes each, little-endian)
    dram.bin       the initial DRAM image (packed weights, constants)
    warm.bin       optional: the same inference without its weight loads, for
                   a machine whose matrix register file already holds them

Loading checks the format, the version, every checksum and, when asked, that
the file was built for the machine it is about to run on.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import ConfigError, NPUConfig

FORMAT = "npuz"
VERSION = 2
PARTS = ("program.bin", "dram.bin")
OPTIONAL_PARTS = ("warm.bin",)


class ProgramFileError(ValueError):
    """A program file is missing, corrupt, of another version or built for another machine."""


@dataclass(frozen=True)
class TensorDesc:
    """Where and how a model input or output lives in DRAM.

    ``layout`` names the arrangement (e.g. ``"hwc-padded"``: rows of
    pixels, each pixel ``vectors`` native vectors of channels, with a zero
    border of ``pad`` pixels); ``dtype`` is the MFU format of the elements.
    """

    name: str
    shape: tuple[int, ...]
    layout: str
    dtype: str
    daddr: int
    nbytes: int
    params: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "TensorDesc":
        """Rebuild from the header's JSON form."""
        return cls(data["name"], tuple(data["shape"]), data["layout"], data["dtype"], int(data["daddr"]),
                   int(data["nbytes"]), dict(data.get("params", {})))


@dataclass
class ProgramFile:
    """A compiled program: machine, instructions, DRAM image, tensors and regions."""

    config: NPUConfig
    words: bytes
    dram: bytes
    inputs: list[TensorDesc] = field(default_factory=list)
    outputs: list[TensorDesc] = field(default_factory=list)
    regions: list[tuple[str, int, int]] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    warm_words: bytes = b""
    warm_regions: list[tuple[str, int, int]] = field(default_factory=list)

    def warm(self) -> "ProgramFile | None":
        """The warm program (weights already resident) as a ProgramFile of its own, or None."""
        if not self.warm_words:
            return None
        return ProgramFile(self.config, self.warm_words, self.dram, self.inputs, self.outputs, self.warm_regions,
                           self.metadata)

    def save(self, path: str | Path) -> None:
        """Write the program file (atomically: a partial file never replaces a good one)."""
        path = Path(path)
        parts = {"program.bin": self.words, "dram.bin": self.dram}
        if self.warm_words:
            parts["warm.bin"] = self.warm_words
        header = {
            "format": FORMAT, "version": VERSION, "config": self.config.to_dict(),
            "instructions": len(self.words) // 16,
            "inputs": [asdict(t) for t in self.inputs], "outputs": [asdict(t) for t in self.outputs],
            "regions": [list(r) for r in self.regions], "metadata": self.metadata,
            "warm_regions": [list(r) for r in self.warm_regions],
            "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in parts.items()},
        }
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("header.json", json.dumps(header, indent=1))
            for name, data in parts.items():
                zf.writestr(name, data)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)


def load_program(path: str | Path, config: NPUConfig | None = None) -> ProgramFile:
    """Read and verify a program file; with ``config``, require that it was built for that machine."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProgramFileError(f"{path}: no such program file") from None
    except OSError as exc:
        raise ProgramFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        raise ProgramFileError(f"{path}: not a .npuz program file (not a ZIP archive, or truncated)") from None
    with zf:
        names = set(zf.namelist())
        missing = [n for n in ("header.json",) + PARTS if n not in names]
        if missing:
            raise ProgramFileError(f"{path}: program file lacks {', '.join(missing)}")
        try:
            header = json.loads(zf.read("header.json"))
            parts = {name: zf.read(name) for name in PARTS + OPTIONAL_PARTS if name in names}
        except (zipfile.BadZipFile, zlib_error()) as exc:
            raise ProgramFileError(f"{path}: corrupt archive member: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ProgramFileError(f"{path}: header.json is not valid JSON ({exc.msg})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ProgramFileError(f"{path}: not a {FORMAT} program file (header format {header.get('format')!r})"
                               if isinstance(header, dict) else f"{path}: header is not a JSON object")
    version = header.get("version")
    if version != VERSION:
        raise ProgramFileError(f"{path}: program file version {version!r}; this toolkit reads version {VERSION} "
                               f"(recompile the model)")
    sums = header.get("sha256", {})
    for name, data in parts.items():
        if hashlib.sha256(data).hexdigest() != sums.get(name):
            raise ProgramFileError(f"{path}: checksum mismatch in {name}: the file is corrupt")
    try:
        file_config = NPUConfig.from_dict(header["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise ProgramFileError(f"{path}: header holds no valid machine configuration: {exc}") from None
    if config is not None and file_config != config:
        diff = sorted(k for k, v in file_config.to_dict().items() if config.to_dict().get(k) != v)
        raise ProgramFileError(f"{path}: compiled for machine {file_config.name!r}, not {config.name!r} "
                               f"(differs in {', '.join(diff)}); recompile with --config {config.name}")
    for name in ("program.bin", "warm.bin"):
        if len(parts.get(name, b"")) % 16:
            raise ProgramFileError(f"{path}: {name} is not a whole number of 16-byte instructions")
    try:
        return ProgramFile(
            config=file_config, words=parts["program.bin"], dram=parts["dram.bin"],
            inputs=[TensorDesc.from_dict(t) for t in header.get("inputs", [])],
            outputs=[TensorDesc.from_dict(t) for t in header.get("outputs", [])],
            regions=[(str(r[0]), int(r[1]), int(r[2])) for r in header.get("regions", [])],
            metadata=dict(header.get("metadata", {})), warm_words=parts.get("warm.bin", b""),
            warm_regions=[(str(r[0]), int(r[1]), int(r[2])) for r in header.get("warm_regions", [])])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ProgramFileError(f"{path}: malformed tensor or region table in header: {exc!r}") from None


def zlib_error():
    """The exception a corrupt DEFLATE stream raises."""
    import zlib

    return zlib.error
