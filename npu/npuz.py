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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError, NPUConfig

if TYPE_CHECKING:
    from .preprocess import Preprocess

FORMAT = "npuz"
VERSION = 2
PARTS = ("program.bin", "dram.bin")
OPTIONAL_PARTS = ("warm.bin",)


class ProgramFileError(ValueError):
    """A program file is missing, corrupt, of another version or built for another machine."""


def _ints(value, n: int | None = None) -> tuple[int, ...]:
    out = tuple(int(v) for v in value)
    if n is not None and len(out) != n:
        raise ValueError(f"expected {n} integers, got {list(value)}")
    return out


@dataclass(frozen=True)
class TensorLayout:
    """How a model tensor sits in its DRAM image (a ``TensorDesc``'s ``params``): each key declared here once.

    The image is ``height + 2 pad`` rows of ``width + 2 pad`` pixels, each
    pixel ``vectors`` native vectors of ``native_dim`` elements; the tensor's
    channels start at element ``channel_offset`` of a pixel's vectors.  The
    host's array is C x H x W, or H x W x C with ``order`` "hwc".  A
    first-layer input may be ``packing`` "strip" or "im2col": the host
    turns the C x H x W ``image_shape`` into the layer's windows (``kernel``,
    ``stride``, ``pads``; strips ``group`` input columns wide).
    """

    channels: int
    height: int
    width: int
    pad: int
    vectors: int
    native_dim: int
    channel_offset: int = 0
    order: str = "chw"
    packing: str = ""
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    image_shape: tuple[int, ...] = ()
    group: int = 0

    ORDERS = ("chw", "hwc")
    PACKINGS = ("", "strip", "im2col")

    def __post_init__(self):
        for name in ("channels", "height", "width", "pad", "vectors", "native_dim", "channel_offset", "group"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name, n in (("kernel", 2), ("stride", 2), ("pads", 4), ("image_shape", None)):
            object.__setattr__(self, name, _ints(getattr(self, name), n))
        if self.order not in self.ORDERS:
            raise ValueError(f"array order {self.order!r}; known: {', '.join(self.ORDERS)}")
        if self.packing not in self.PACKINGS:
            raise ValueError(f"input packing {self.packing!r}; known: strip, im2col")
        if min(self.channels, self.height, self.width, self.vectors, self.native_dim) < 1 or self.pad < 0:
            raise ValueError(f"tensor layout {self.to_params()} has a size below 1")

    @classmethod
    def from_params(cls, params: dict) -> "TensorLayout":
        """Rebuild from a program file's JSON; an unknown key is an error naming it."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise ValueError(f"unknown tensor layout key(s) {', '.join(unknown)}")
        return cls(**params)

    def to_params(self) -> dict:
        """JSON form (every key)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


@dataclass(frozen=True)
class TensorDesc:
    """Where and how a model input or output lives in DRAM.

    ``layout`` names the arrangement (``"hwc-padded"``: rows of pixels,
    each pixel ``params.vectors`` native vectors of channels, with a zero
    border of ``params.pad`` pixels); ``dtype`` is the MFU format of the
    elements; ``shape`` is the model's own (without the batch dimension).
    """

    name: str
    shape: tuple[int, ...]
    layout: str
    dtype: str
    daddr: int
    nbytes: int
    params: TensorLayout

    @classmethod
    def from_dict(cls, data: dict) -> "TensorDesc":
        """Rebuild from the header's JSON form."""
        return cls(data["name"], tuple(data["shape"]), data["layout"], data["dtype"], int(data["daddr"]),
                   int(data["nbytes"]), TensorLayout.from_params(dict(data["params"])))

    def to_dict(self) -> dict:
        """The header's JSON form."""
        return {"name": self.name, "shape": list(self.shape), "layout": self.layout, "dtype": self.dtype,
                "daddr": self.daddr, "nbytes": self.nbytes, "params": self.params.to_params()}


@dataclass
class ProgramMetadata:
    """What a program file says about its model beyond the machine code: each key declared here once.

    ``precision`` names the weight, activation and MFU formats;
    ``postprocess`` maps an output to what the host applies to it
    ("softmax"); ``layers`` holds the compiler's per-layer report (name,
    kind, macs, tiles, weight_bytes, banded); ``preprocess`` is the image
    recipe (``npu.preprocess.Preprocess``); ``labels`` the class names.
    """

    model: str = ""
    precision: dict = field(default_factory=dict)
    postprocess: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)
    weight_tiles: int = 0
    preprocess: "Preprocess | None" = None
    labels: list | None = None

    @property
    def macs(self) -> int:
        """The model's multiply-accumulates per inference (the sum over its layers)."""
        return sum(int(layer.get("macs", 0)) for layer in self.layers)

    @classmethod
    def from_dict(cls, data: dict) -> "ProgramMetadata":
        """Rebuild from the header's JSON; an unknown key is an error naming it."""
        from .preprocess import Preprocess

        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown metadata key(s) {', '.join(unknown)}")
        data = dict(data)
        if data.get("preprocess") is not None:
            data["preprocess"] = Preprocess.from_dict(data["preprocess"])
        if data.get("labels") is not None:
            data["labels"] = [str(x) for x in data["labels"]]
        return cls(**data)

    def to_dict(self) -> dict:
        """The header's JSON form."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["preprocess"] = self.preprocess.to_dict() if self.preprocess is not None else None
        return out


@dataclass
class ProgramFile:
    """A compiled program: machine, instructions, DRAM image, tensors and regions."""

    config: NPUConfig
    words: bytes
    dram: bytes
    inputs: list[TensorDesc] = field(default_factory=list)
    outputs: list[TensorDesc] = field(default_factory=list)
    regions: list[tuple[str, int, int]] = field(default_factory=list)
    metadata: ProgramMetadata = field(default_factory=ProgramMetadata)
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
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "regions": [list(r) for r in self.regions], "metadata": self.metadata.to_dict(),
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
            metadata=ProgramMetadata.from_dict(header.get("metadata", {})), warm_words=parts.get("warm.bin", b""),
            warm_regions=[(str(r[0]), int(r[1]), int(r[2])) for r in header.get("warm_regions", [])])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ProgramFileError(f"{path}: malformed tensor table, region table or metadata in the header: "
                               f"{exc}") from None


def zlib_error():
    """The exception a corrupt DEFLATE stream raises."""
    import zlib

    return zlib.error
