"""The versioned program file (``.npuz``): everything needed to run one compiled model.

A ``.npuz`` file is a ZIP archive holding::

    header.json    format name and version, machine configuration, tensor
                   descriptions, region table, metadata, the size and
                   SHA-256 of each part, and the SHA-256 of the header itself
    program.bin    the instruction words (16 bytes each, little-endian)
    dram.bin       the initial DRAM image (packed weights, constants)
    warm.bin       optional: the same inference without its weight loads, for
                   a machine whose matrix register file already holds them

Loading checks the format, the version, every checksum (the header's too:
``header_sha256`` is the SHA-256 of the header's canonical JSON without that
field) and, when asked, that the file was built for the machine it is about
to run on.  Every field of the header is checked against the schema declared
here (``TensorLayout``, ``TensorDesc``, ``ProgramMetadata``): a missing,
mistyped, negative or inconsistent value is a ProgramFileError naming the
field, never another exception.

Memory is bounded before it is spent: each member's size, declared in the
archive's directory and in the header, is checked against a limit before it
is read, and reading never inflates past the declared size.  The limits
(docs list them): ``header.json`` at most :data:`MAX_HEADER_BYTES`;
``program.bin`` and ``warm.bin`` at most ``npu.isa.encoding.MAX_INSTRUCTIONS``
words; ``dram.bin`` at most the machine's ``dram_bytes`` and the loader's
``max_dram_bytes`` (default :data:`MAX_DRAM_IMAGE_BYTES`); a host array a
tensor description implies at most :data:`MAX_TENSOR_ELEMENTS` elements; the
archive at most :data:`MAX_ARCHIVE_MEMBERS` members in a directory of at most
:data:`MAX_DIRECTORY_BYTES`.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import numbers
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError, NPUConfig
from .isa.encoding import MAX_INSTRUCTIONS

if TYPE_CHECKING:
    from .detection import SSDConfig
    from .preprocess import Preprocess

FORMAT = "npuz"
#: The format name of a program split into NPU and host segments (``npu.segments``), in the same kind of archive.
SEGMENTED_FORMAT = "npuz-segments"
#: Version 3 added the header's own checksum and the part sizes; older files must be recompiled.
VERSION = 3
PARTS = ("program.bin", "dram.bin")
OPTIONAL_PARTS = ("warm.bin",)
MEMBERS = ("header.json",) + PARTS + OPTIONAL_PARTS
WORD_BYTES = 16

#: Largest ``header.json`` (the largest compiled network's is about 40 KB).
MAX_HEADER_BYTES = 4 << 20
#: Largest ``program.bin`` / ``warm.bin``.
MAX_PROGRAM_BYTES = MAX_INSTRUCTIONS * WORD_BYTES
#: Default largest ``dram.bin`` :func:`load_program` reads (``max_dram_bytes``); VGG-16's is 98 MB.
MAX_DRAM_IMAGE_BYTES = 1 << 30
#: Largest host array (elements) a tensor description implies: the input or output array, a packed input's
#: windows, the padded DRAM image; the compiler takes the same bound for any tensor (``compiler.limits``).
MAX_TENSOR_ELEMENTS = 1 << 28
#: Most members, and largest central directory, of a program file's ZIP archive.
MAX_ARCHIVE_MEMBERS = 16
MAX_DIRECTORY_BYTES = 1 << 20
_READ_CHUNK = 1 << 20

HEADER_KEYS = ("format", "version", "config", "instructions", "inputs", "outputs", "regions", "metadata",
               "warm_regions", "sha256", "sizes", "header_sha256")
LAYOUTS = ("hwc-padded",)


class ProgramFileError(ValueError):
    """A program file is missing, corrupt, of another version or built for another machine."""


class SchemaError(ValueError):
    """A value of the program file's schema is missing, mistyped or inconsistent; ``field`` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}" if field_name else message)
        self.field = field_name
        self.reason = message

    def within(self, prefix: str) -> "SchemaError":
        """The same error with its field named from ``prefix`` (``inputs[0]`` + ``params.channels``)."""
        return SchemaError(f"{prefix}.{self.field}" if self.field else prefix, self.reason)


def _int(value, name: str, lo: int | None = 0, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SchemaError(name, f"{value!r} is not an integer")
    v = int(value)
    if lo is not None and v < lo:
        raise SchemaError(name, f"{v} is below {lo}")
    if hi is not None and v > hi:
        raise SchemaError(name, f"{v} is above {hi}")
    return v


def _ints(value, name: str, n: int | None = None, lo: int = 0) -> tuple[int, ...]:
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
        raise SchemaError(name, f"{value!r} is not a list of integers")
    out = tuple(_int(v, f"{name}[{i}]", lo) for i, v in enumerate(value))
    if n is not None and len(out) != n:
        raise SchemaError(name, f"expected {n} integers, got {len(out)}")
    return out


def _str(value, name: str) -> str:
    if not isinstance(value, str):
        raise SchemaError(name, f"{value!r} is not a string")
    return value


def _known_keys(data, names, what: str) -> dict:
    """``data`` if it is a JSON object of known keys (SchemaError otherwise)."""
    if not isinstance(data, dict):
        raise SchemaError("", f"{what} must be a JSON object, not {type(data).__name__}")
    unknown = sorted(map(str, set(data) - set(names)))
    if unknown:
        raise SchemaError("", f"unknown {what} key(s) {', '.join(unknown)} (known: {', '.join(names)})")
    return data


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
        for name in ("channels", "height", "width", "vectors", "native_dim"):
            object.__setattr__(self, name, _int(getattr(self, name), name, 1))
        for name in ("pad", "channel_offset", "group"):
            object.__setattr__(self, name, _int(getattr(self, name), name, 0))
        for name, n, lo in (("kernel", 2, 1), ("stride", 2, 1), ("pads", 4, 0), ("image_shape", None, 1)):
            object.__setattr__(self, name, _ints(getattr(self, name), name, n, lo))
        if self.order not in self.ORDERS:
            raise SchemaError("order", f"array order {self.order!r}; known: {', '.join(self.ORDERS)}")
        if self.packing not in self.PACKINGS:
            raise SchemaError("packing", f"input packing {self.packing!r}; known: strip, im2col")
        if self.packing and len(self.image_shape) != 3:
            raise SchemaError("image_shape", f"a {self.packing}-packed input needs the C x H x W image shape, "
                                             f"got {list(self.image_shape)}")
        if self.packing == "strip" and self.group < 1:
            raise SchemaError("group", "a strip-packed input needs group >= 1 columns per strip")
        if self.channel_offset + self.channels > self.vectors * self.native_dim:
            raise SchemaError("channel_offset", f"channels {self.channel_offset}..{self.channel_offset + self.channels - 1}"
                                                f" do not fit {self.vectors} vector(s) of {self.native_dim}")

    @property
    def image_elements(self) -> int:
        """Elements of the tensor's padded DRAM image."""
        return (self.height + 2 * self.pad) * (self.width + 2 * self.pad) * self.vectors * self.native_dim

    @classmethod
    def from_params(cls, params: dict) -> "TensorLayout":
        """Rebuild from a program file's JSON; an unknown key is an error naming it."""
        _known_keys(params, [f.name for f in fields(cls)], "tensor layout")
        missing = [n for n in ("channels", "height", "width", "pad", "vectors", "native_dim") if n not in params]
        if missing:
            raise SchemaError(missing[0], "missing")
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

    KEYS = ("name", "shape", "layout", "dtype", "daddr", "nbytes", "params")

    def __post_init__(self):
        _str(self.name, "name")
        if not self.name:
            raise SchemaError("name", "empty")
        shape = _ints(self.shape, "shape", lo=1)
        if not 1 <= len(shape) <= 8:
            raise SchemaError("shape", f"{list(shape)} must have 1 to 8 dimensions")
        object.__setattr__(self, "shape", shape)
        _str(self.layout, "layout")
        _str(self.dtype, "dtype")
        object.__setattr__(self, "daddr", _int(self.daddr, "daddr", 0))
        object.__setattr__(self, "nbytes", _int(self.nbytes, "nbytes", 1))
        if not isinstance(self.params, TensorLayout):
            raise SchemaError("params", "not a tensor layout")

    @classmethod
    def from_dict(cls, data: dict) -> "TensorDesc":
        """Rebuild from the header's JSON form (SchemaError naming the field)."""
        _known_keys(data, cls.KEYS, "tensor description")
        for key in cls.KEYS:
            if key not in data:
                raise SchemaError(key, "missing")
        try:
            params = TensorLayout.from_params(data["params"])
        except SchemaError as exc:
            raise exc.within("params") from None
        return cls(data["name"], data["shape"], data["layout"], data["dtype"], data["daddr"], data["nbytes"], params)

    def to_dict(self) -> dict:
        """The header's JSON form."""
        return {"name": self.name, "shape": list(self.shape), "layout": self.layout, "dtype": self.dtype,
                "daddr": self.daddr, "nbytes": self.nbytes, "params": self.params.to_params()}

    def check(self, config: NPUConfig, role: str = "input") -> None:
        """SchemaError naming the field unless this description fits ``config`` and is consistent in itself.

        The DRAM image lies inside the machine's DRAM and is exactly as large
        as ``params`` describe; the model shape matches the layout (after
        packing, for a packed input); no host array it implies passes
        :data:`MAX_TENSOR_ELEMENTS`.  ``role`` is "input" or "output".
        """
        p = self.params
        if self.layout not in LAYOUTS:
            raise SchemaError("layout", f"{self.layout!r}; known: {', '.join(LAYOUTS)}")
        if self.dtype != config.mfu_format:
            raise SchemaError("dtype", f"{self.dtype!r}, but the machine's memories hold {config.mfu_format}")
        if p.native_dim != config.native_dim:
            raise SchemaError("params.native_dim", f"{p.native_dim}, but the machine's vectors have "
                                                   f"{config.native_dim} elements")
        if p.image_elements > MAX_TENSOR_ELEMENTS:
            raise SchemaError("params", f"the tensor's DRAM image holds {p.image_elements:,} elements, more than "
                                        f"the limit of {MAX_TENSOR_ELEMENTS:,} (npu.npuz.MAX_TENSOR_ELEMENTS)")
        want = p.image_elements * config.mfu_bytes
        if self.nbytes != want:
            raise SchemaError("nbytes", f"{self.nbytes}, but params describe {want} bytes ((height + 2 pad) x "
                                        f"(width + 2 pad) x vectors x native_dim x {config.mfu_bytes})")
        if self.daddr + self.nbytes > config.dram_bytes:
            raise SchemaError("daddr", f"the tensor's bytes {self.daddr:#x}..{self.daddr + self.nbytes - 1:#x} "
                                       f"pass the end of the machine's {config.dram_bytes}-byte DRAM")
        chw = (p.channels, p.height, p.width)
        if math.prod(self.shape) > MAX_TENSOR_ELEMENTS:
            raise SchemaError("shape", f"{list(self.shape)} has more than {MAX_TENSOR_ELEMENTS:,} elements")
        if role == "output":
            if p.packing:
                raise SchemaError("params.packing", f"{p.packing!r}: only a model input is packed")
            self._check_shape(chw)
            return
        if p.channel_offset:
            raise SchemaError("params.channel_offset", f"{p.channel_offset}: an input's channels start at "
                                                       f"element 0 (the host writes them there)")
        if not p.packing:
            self._check_shape(chw)
            return
        c0, h0, w0 = p.image_shape
        (kh, kw), (sy, sx), (top, left, bottom, right) = p.kernel, p.stride, p.pads
        self._check_shape((c0, h0, w0))
        if h0 + top + bottom < kh or w0 + left + right < kw:
            raise SchemaError("params.kernel", f"{list(p.kernel)} is larger than the padded image "
                                               f"{h0 + top + bottom} x {w0 + left + right}")
        oh = (h0 + top + bottom - kh) // sy + 1
        if p.height != oh:
            raise SchemaError("params.height", f"{p.height}, but the packed windows make {oh} rows")
        if p.packing == "im2col":
            ow = (w0 + left + right - kw) // sx + 1
            if p.width != ow or p.channels != kh * kw * c0:
                raise SchemaError("params", f"an im2col-packed {c0} x {h0} x {w0} image is {kh * kw * c0} x {oh} "
                                            f"x {ow}, not {p.channels} x {p.height} x {p.width}")
            cols = max(w0 + left, (ow - 1) * sx + kw)
        else:
            if p.channels != kh * p.group * c0:
                raise SchemaError("params.channels", f"{p.channels}, but strips of {kh} rows x {p.group} columns x "
                                                     f"{c0} channels have {kh * p.group * c0}")
            cols = max(w0 + left, p.group * p.width)
        padded = c0 * max(h0 + top, (oh - 1) * sy + kh) * cols
        if padded > MAX_TENSOR_ELEMENTS:
            raise SchemaError("params", f"packing the input needs a padded image of {padded:,} elements, more than "
                                        f"the limit of {MAX_TENSOR_ELEMENTS:,}")

    def _check_shape(self, chw: tuple[int, int, int]) -> None:
        c, h, w = chw
        if self.params.order == "hwc":
            if self.shape != (h, w, c):
                raise SchemaError("shape", f"{list(self.shape)}, but an H x W x C array of the layout is {[h, w, c]}")
        elif math.prod(self.shape) != c * h * w:
            raise SchemaError("shape", f"{list(self.shape)} has {math.prod(self.shape)} elements, the layout "
                                       f"{c} x {h} x {w} has {c * h * w}")


@dataclass
class ProgramMetadata:
    """What a program file says about its model beyond the machine code: each key declared here once.

    ``precision`` names the weight, activation and MFU formats;
    ``postprocess`` maps an output to what the host applies to it
    ("softmax"); ``layers`` holds the compiler's per-layer report (name,
    kind, macs, tiles, weight_bytes, banded); ``preprocess`` is the image
    recipe (``npu.preprocess.Preprocess``); ``labels`` the class names;
    ``layer_formats`` maps each layer that uses the MVU to its formats,
    ``{"weight": ..., "activation": ...}`` (mixed precision);
    ``weight_rounding`` says how the compiler rounded the weights
    (``method`` nearest/mse/gptq, ``bias_correction``, ``calibration_inputs``,
    ``repaired_blocks``; empty in older files: nearest); ``detection`` is
    the SSD prior configuration and detection settings of a detector
    (``npu.detection.SSDConfig``), whose head outputs the host decodes.
    """

    model: str = ""
    precision: dict = field(default_factory=dict)
    postprocess: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)
    weight_tiles: int = 0
    preprocess: "Preprocess | None" = None
    labels: list | None = None
    layer_formats: dict = field(default_factory=dict)
    weight_rounding: dict = field(default_factory=dict)
    detection: "SSDConfig | None" = None

    @property
    def macs(self) -> int:
        """The model's multiply-accumulates per inference (the sum over its layers)."""
        return sum(int(layer.get("macs", 0)) for layer in self.layers)

    @classmethod
    def from_dict(cls, data: dict) -> "ProgramMetadata":
        """Rebuild from the header's JSON; an unknown key is an error naming it (SchemaError naming the field)."""
        from .preprocess import Preprocess

        names = [f.name for f in fields(cls)]
        data = dict(_known_keys(data, names, "metadata"))
        _str(data.get("model", ""), "model")
        for name in ("precision", "postprocess"):
            value = data.get(name, {})
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise SchemaError(name, f"{value!r} is not an object of strings")
        layers = data.get("layers", [])
        if not isinstance(layers, list):
            raise SchemaError("layers", "not a list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict):
                raise SchemaError(f"layers[{i}]", "not an object")
            if "macs" in layer:
                _int(layer["macs"], f"layers[{i}].macs", 0)
        _int(data.get("weight_tiles", 0), "weight_tiles", 0)
        layer_formats = data.get("layer_formats", {})
        if not isinstance(layer_formats, dict):
            raise SchemaError("layer_formats", "not an object")
        for name, pair in layer_formats.items():
            if (not isinstance(pair, dict) or set(pair) != {"weight", "activation"}
                    or not all(isinstance(v, str) for v in pair.values())):
                raise SchemaError(f"layer_formats[{name!r}]", 'not an object {"weight": name, "activation": name}')
        rounding = data.get("weight_rounding", {})
        if not isinstance(rounding, dict):
            raise SchemaError("weight_rounding", "not an object")
        _known_keys(rounding, ["method", "bias_correction", "calibration_inputs", "repaired_blocks"],
                    "weight_rounding")
        if rounding.get("method", "nearest") not in ("nearest", "mse", "gptq"):
            raise SchemaError("weight_rounding.method", f"{rounding['method']!r} is none of nearest, mse, gptq")
        if not isinstance(rounding.get("bias_correction", False), bool):
            raise SchemaError("weight_rounding.bias_correction", "not true or false")
        for key in ("calibration_inputs", "repaired_blocks"):
            _int(rounding.get(key, 0), f"weight_rounding.{key}", 0)
        if data.get("preprocess") is not None:
            try:
                data["preprocess"] = Preprocess.from_dict(data["preprocess"])
            except (TypeError, ValueError) as exc:
                raise SchemaError("preprocess", str(exc)) from None
        if data.get("detection") is not None:
            from .detection import SSDConfig

            try:
                data["detection"] = SSDConfig.from_dict(data["detection"])
            except (TypeError, ValueError) as exc:
                raise SchemaError("detection", str(exc)) from None
        labels = data.get("labels")
        if labels is not None:
            if not isinstance(labels, list) or not all(isinstance(x, (str, int, float)) for x in labels):
                raise SchemaError("labels", "not a list of names")
            data["labels"] = [str(x) for x in labels]
        return cls(**data)

    def to_dict(self) -> dict:
        """The header's JSON form."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["preprocess"] = self.preprocess.to_dict() if self.preprocess is not None else None
        out["detection"] = self.detection.to_dict() if self.detection is not None else None
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

    def header(self) -> dict:
        """The ``header.json`` content of this program, checksums included."""
        parts = self.parts()
        header = {
            "format": FORMAT, "version": VERSION, "config": self.config.to_dict(),
            "instructions": len(self.words) // WORD_BYTES,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "regions": [list(r) for r in self.regions], "metadata": self.metadata.to_dict(),
            "warm_regions": [list(r) for r in self.warm_regions],
            "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in parts.items()},
            "sizes": {name: len(data) for name, data in parts.items()},
        }
        header = json.loads(json.dumps(header))          # the checksum covers what a reader will parse
        header["header_sha256"] = header_digest(header)
        return header

    def parts(self) -> dict[str, bytes]:
        """The binary members of the archive."""
        parts = {"program.bin": self.words, "dram.bin": self.dram}
        if self.warm_words:
            parts["warm.bin"] = self.warm_words
        return parts

    def check(self) -> None:
        """SchemaError naming the field unless the tensor and region tables fit the program and its machine."""
        _check_tables(self.config, self.inputs, self.outputs, self.regions, len(self.words) // WORD_BYTES,
                      self.warm_regions, len(self.warm_words) // WORD_BYTES)

    def save(self, path: str | Path) -> None:
        """Write the program file (atomically: a partial file never replaces a good one).

        The tables are checked first (:meth:`check`): a file that would not
        load is never written.
        """
        path = Path(path)
        try:
            self.check()
        except SchemaError as exc:
            raise ProgramFileError(f"{path}: not saved: header field {exc}") from None
        try:
            data = self.to_bytes()
        except SchemaError as exc:
            raise ProgramFileError(f"{path}: not saved: header field {exc}") from None
        write_atomically(path, data)

    def to_bytes(self) -> bytes:
        """The program file's bytes (what :meth:`save` writes); SchemaError if its tables are inconsistent."""
        self.check()
        header = self.header()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("header.json", json.dumps(header, indent=1))
            for name, data in self.parts().items():
                zf.writestr(name, data)
        return buf.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name, so a partial file never replaces a good one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def parse_archive_header(raw: bytes, fail, fmt: str, version: int, keys, what: str, hint: str = "") -> dict:
    """The ``header.json`` of an archive of format ``fmt`` (a segmented program, a pipeline), checked: valid UTF-8
    JSON, the format and ``version``, the header's own checksum, exactly ``keys``.  ``what`` names the kind of
    file in messages; ``hint`` follows a version mismatch."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise fail(f"header.json is not valid UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict) or header.get("format") != fmt:
        raise fail(f"not a {what} (header format "
                   f"{_short(header.get('format') if isinstance(header, dict) else header)})")
    if header.get("version") != version or isinstance(header.get("version"), bool):
        raise fail(f"{what} version {_short(header.get('version'))}; this toolkit reads version {version}{hint}")
    check_header_digest(header, fail)
    unknown = sorted(set(header) - set(keys))
    missing = [k for k in keys if k not in header]
    if unknown or missing:
        raise fail(f"header keys: unknown {', '.join(unknown) or 'none'}; missing {', '.join(missing) or 'none'}")
    return header


def read_listed_members(zf: zipfile.ZipFile, by_name: dict, header: dict, limits: dict[str, int], fail,
                        table: str = "the header") -> dict[str, bytes]:
    """The bytes of exactly the members ``limits`` names (member -> largest size), each checked against the
    header's ``sizes`` and ``sha256`` tables before and after it is read."""
    expected = set(limits)
    unknown = sorted(set(by_name) - expected - {"header.json"})
    missing = sorted(expected - set(by_name))
    if unknown or missing:
        raise fail(f"the archive's members do not match {table} (unexpected: {', '.join(unknown) or 'none'}; "
                   f"missing: {', '.join(missing) or 'none'})")
    sums, sizes = header["sha256"], header["sizes"]
    for key, tab in (("sha256", sums), ("sizes", sizes)):
        if not isinstance(tab, dict) or sorted(tab) != sorted(expected):
            raise fail(f"header field {key}: must list exactly the members {', '.join(sorted(expected))}")
    data = {}
    for member in sorted(expected):
        try:
            size = _int(sizes[member], f"sizes.{member}", 0, limits[member])
        except SchemaError as exc:
            raise fail(f"header field {exc}") from None
        if by_name[member].file_size != size:
            raise fail(f"archive member {member} declares {by_name[member].file_size:,} bytes, the header "
                       f"{size:,}: the file is corrupt")
        raw = _read_member(zf, by_name[member], size, f"the limit for {member}", fail)
        if not isinstance(sums[member], str) or hashlib.sha256(raw).hexdigest() != sums[member]:
            raise fail(f"checksum mismatch in {member}: the file is corrupt")
        data[member] = raw
    return data


def archive_format(path) -> str | None:
    """The ``format`` named by the ``header.json`` of the ZIP archive at ``path`` (or in a binary file object),
    or None when it is not such an archive (not a ZIP, no header, a header too large or not JSON)."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("header.json")
            if info.file_size > MAX_HEADER_BYTES:
                return None
            head = json.loads(zf.read(info).decode("utf-8"))
    except Exception:                     # not a ZIP, no header, not JSON: no format
        return None
    return head.get("format") if isinstance(head, dict) else None


def check_header_digest(header: dict, fail) -> None:
    """Raise ``fail(...)`` unless the header's ``header_sha256`` is the digest of the rest of it."""
    digest = header.get("header_sha256")
    try:
        ok = isinstance(digest, str) and header_digest(header) == digest
    except (ValueError, RecursionError):
        ok = False
    if not ok:
        raise fail("header.json checksum mismatch (header_sha256): the header was changed or is corrupt")


def header_digest(header: dict) -> str:
    """SHA-256 of a header's canonical JSON (sorted keys, no spaces), without its ``header_sha256`` field."""
    body = {k: v for k, v in header.items() if k != "header_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _regions(value, name: str, count: int) -> list[tuple[str, int, int]]:
    if not isinstance(value, list):
        raise SchemaError(name, "not a list")
    out = []
    for i, r in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(r, (list, tuple)) or len(r) != 3:
            raise SchemaError(where, f"{r!r} is not [name, first instruction, last instruction]")
        start = _int(r[1], f"{where}[1]", 0)
        end = _int(r[2], f"{where}[2]", start)
        if end >= count:
            raise SchemaError(f"{where}[2]", f"instruction {end}, but the program has {count}")
        out.append((_str(r[0], f"{where}[0]"), start, end))
    return out


def _check_tables(config: NPUConfig, inputs, outputs, regions, count: int, warm_regions, warm_count: int) -> None:
    for role, table in (("input", inputs), ("output", outputs)):
        seen: dict[str, int] = {}
        spans = []
        for i, desc in enumerate(table):
            try:
                desc.check(config, role)
            except SchemaError as exc:
                raise exc.within(f"{role}s[{i}]") from None
            if desc.name in seen:
                raise SchemaError(f"{role}s[{i}].name", f"{desc.name!r} names {role}s[{seen[desc.name]}] too")
            seen[desc.name] = i
            spans.append((desc.daddr, desc.daddr + desc.nbytes, i))
        spans.sort()
        for (_, end, i), (start, _, j) in zip(spans, spans[1:]):
            if start < end:
                raise SchemaError(f"{role}s[{j}].daddr", f"its bytes overlap those of {role}s[{i}]")
    _regions([list(r) for r in regions], "regions", count)
    _regions([list(r) for r in warm_regions], "warm_regions", warm_count)


def load_program(path: str | Path, config: NPUConfig | None = None, *,
                 max_dram_bytes: int = MAX_DRAM_IMAGE_BYTES) -> ProgramFile:
    """Read and verify a program file; with ``config``, require that it was built for that machine.

    Raises ProgramFileError for everything a file can get wrong (naming the
    field of the header, or the archive member); no member is read before
    its declared size has been checked against the limits (module docs;
    ``max_dram_bytes`` bounds the DRAM image).
    """
    path = Path(path)
    with open_program_file(path) as fp:
        return _load(fp, path, config, max_dram_bytes)


def open_program_file(path: Path):
    """``path`` opened for reading; ProgramFileError if it is missing or unreadable."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ProgramFileError(f"{path}: no such program file") from None
    except OSError as exc:
        raise ProgramFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _load(fp, path: Path, config: NPUConfig | None, max_dram_bytes: int) -> ProgramFile:
    def fail(message: str) -> ProgramFileError:
        return ProgramFileError(f"{path}: {message}")

    zf, by_name = open_archive(fp, fail)
    with zf:
        names = list(by_name)
        if SEGMENTED_FORMAT.encode() in _peek_header(zf, names):
            _parse_header(_read_member(zf, zf.getinfo("header.json"), MAX_HEADER_BYTES,
                                       "the limit (npu.npuz.MAX_HEADER_BYTES)", fail), fail)
        unknown = sorted(set(names) - set(MEMBERS))
        if unknown:
            raise fail(f"unexpected archive member(s) {', '.join(unknown)} (a program file holds "
                       f"{', '.join(MEMBERS)})")
        missing = [n for n in ("header.json",) + PARTS if n not in names]
        if missing:
            raise fail(f"program file lacks {', '.join(missing)}")
        raw = _read_member(zf, by_name["header.json"], MAX_HEADER_BYTES, "the limit (npu.npuz.MAX_HEADER_BYTES)",
                           fail)
        header = _parse_header(raw, fail)
        file_config = _config(header["config"], fail)
        if config is not None and file_config != config:
            diff = sorted(k for k, v in file_config.to_dict().items() if config.to_dict().get(k) != v)
            raise fail(f"compiled for machine {file_config.name!r}, not {config.name!r} "
                       f"(differs in {', '.join(diff)}); recompile with --config {config.name}")
        count = _header_int(header, "instructions", fail, 1, MAX_INSTRUCTIONS)
        present = [n for n in PARTS + OPTIONAL_PARTS if n in by_name]
        sums, sizes = header["sha256"], header["sizes"]
        for key, table in (("sha256", sums), ("sizes", sizes)):
            if not isinstance(table, dict) or sorted(table) != sorted(present):
                raise fail(f"header field {key}: must list exactly the parts {', '.join(present)}")
        dram_limit = min(file_config.dram_bytes, max_dram_bytes)
        limits = {"program.bin": (MAX_PROGRAM_BYTES, "the limit of MAX_INSTRUCTIONS instructions"),
                  "warm.bin": (MAX_PROGRAM_BYTES, "the limit of MAX_INSTRUCTIONS instructions"),
                  "dram.bin": (dram_limit, f"the machine's DRAM ({file_config.dram_bytes} bytes)"
                               if dram_limit == file_config.dram_bytes else
                               "the loader's limit (load_program(max_dram_bytes=...))")}
        parts = {}
        for name in present:
            size = _header_int(sizes, name, fail, 0, None, f"sizes.{name}")
            limit, what = limits[name]
            if size > limit:
                raise fail(f"{name} holds {size:,} bytes, more than {what}: {limit:,}")
            if by_name[name].file_size != size:
                raise fail(f"archive member {name} declares {by_name[name].file_size:,} bytes, the header "
                           f"{size:,}: the file is corrupt")
            data = _read_member(zf, by_name[name], size, what, fail)
            if not isinstance(sums[name], str) or hashlib.sha256(data).hexdigest() != sums[name]:
                raise fail(f"checksum mismatch in {name}: the file is corrupt")
            parts[name] = data
    for name in ("program.bin", "warm.bin"):
        if len(parts.get(name, b"")) % WORD_BYTES:
            raise fail(f"{name} is not a whole number of 16-byte instructions")
    if len(parts["program.bin"]) != count * WORD_BYTES:
        raise fail(f"header field instructions: {count}, but program.bin holds "
                   f"{len(parts['program.bin']) // WORD_BYTES}")
    warm = parts.get("warm.bin", b"")
    try:
        inputs = _descs(header["inputs"], "inputs")
        outputs = _descs(header["outputs"], "outputs")
        regions = _regions(header["regions"], "regions", count)
        warm_regions = _regions(header["warm_regions"], "warm_regions", len(warm) // WORD_BYTES)
        try:
            metadata = ProgramMetadata.from_dict(header["metadata"])
        except SchemaError as exc:
            raise exc.within("metadata") from None
        _check_tables(file_config, inputs, outputs, regions, count, warm_regions, len(warm) // WORD_BYTES)
    except SchemaError as exc:
        raise fail(f"header field {exc}") from None
    return ProgramFile(config=file_config, words=parts["program.bin"], dram=parts["dram.bin"], inputs=inputs,
                       outputs=outputs, regions=regions, metadata=metadata, warm_words=warm,
                       warm_regions=warm_regions)


def _peek_header(zf: zipfile.ZipFile, names: list[str]) -> bytes:
    """The header's first bytes (to name a segmented program before its members are judged), or b""."""
    if "header.json" not in names or zf.getinfo("header.json").file_size > MAX_HEADER_BYTES:
        return b""
    try:
        with zf.open("header.json") as f:
            return f.read(256)
    except Exception:            # a corrupt member is reported by the full checks that follow
        return b""


def _config(value, fail) -> NPUConfig:
    """The header's machine configuration (NPUConfig checks every field but the name's type: checked here)."""
    if isinstance(value, dict) and not isinstance(value.get("name"), str):
        raise fail(f"header field config.name: {_short(value.get('name'))} is not a string")
    try:
        return NPUConfig.from_dict(value)
    except (ConfigError, TypeError, ValueError) as exc:
        raise fail(f"header field config: not a valid machine configuration: {exc}") from None


def _descs(value, name: str) -> list[TensorDesc]:
    if not isinstance(value, list):
        raise SchemaError(name, "not a list")
    out = []
    for i, d in enumerate(value):
        try:
            out.append(TensorDesc.from_dict(d))
        except SchemaError as exc:
            raise exc.within(f"{name}[{i}]") from None
    return out


def _header_int(table: dict, key: str, fail, lo: int, hi: int | None, name: str | None = None) -> int:
    try:
        return _int(table.get(key), key, lo, hi)
    except SchemaError as exc:
        raise fail(f"header field {name or key}: {exc.reason}") from None


def _parse_header(raw: bytes, fail) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise fail("header.json is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise fail(f"header.json is not valid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:         # a number of too many digits, nesting too deep
        raise fail(f"header.json is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise fail("header is not a JSON object")
    if header.get("format") == SEGMENTED_FORMAT:
        raise fail("a program of NPU and host segments (compiled with host fallback): open it with "
                   "npu.segments.open_program, or score it with runtime.Session")
    if header.get("format") != FORMAT:
        raise fail(f"not a {FORMAT} program file (header format {_short(header.get('format'))})")
    version = header.get("version")
    if version != VERSION or isinstance(version, bool):
        raise fail(f"program file version {_short(version)}; this toolkit reads version {VERSION} "
                   f"(recompile the model)")
    check_header_digest(header, fail)
    unknown = sorted(set(header) - set(HEADER_KEYS))
    missing = [k for k in HEADER_KEYS if k not in header]
    if unknown:
        raise fail(f"unknown header key(s) {', '.join(unknown)}")
    if missing:
        raise fail(f"header lacks {', '.join(missing)}")
    return header


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def open_archive(fp, fail, max_members: int = MAX_ARCHIVE_MEMBERS,
                 what: str = "a program file") -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """The ZIP archive in ``fp`` and its members by name, once its directory is bounded, no member appears twice,
    none is encrypted and each is stored or deflated (``fail(message)`` makes the error)."""
    _check_directory(fp, fail, max_members, what)
    try:
        zf = zipfile.ZipFile(fp)
    except Exception:                 # the archive parser's errors are not documented: any is "not an archive"
        raise fail("not a .npuz program file (not a ZIP archive, or truncated)") from None
    infos = zf.infolist()
    names = [i.filename for i in infos]
    try:
        for name in sorted(set(names)):
            if names.count(name) > 1:
                raise fail(f"the archive holds {name} {names.count(name)} times")
        for info in infos:
            if info.flag_bits & 0x1:
                raise fail(f"archive member {info.filename} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise fail(f"archive member {info.filename} uses compression method {info.compress_type}; program "
                           f"files use deflate")
    except ProgramFileError:
        zf.close()
        raise
    return zf, {i.filename: i for i in infos}


def _check_directory(fp, fail, max_members: int = MAX_ARCHIVE_MEMBERS, what: str = "a program file") -> None:
    """Bound the archive's central directory (what the ZIP reader allocates first) before it is parsed."""
    try:
        end = zipfile._EndRecData(fp)
    except Exception:
        end = None
    if end is None:
        raise fail("not a .npuz program file (not a ZIP archive, or truncated)")
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if entries > max_members or size > MAX_DIRECTORY_BYTES:
        raise fail(f"the archive's directory lists {entries:,} members in {size:,} bytes; {what} has at most "
                   f"{max_members} in {MAX_DIRECTORY_BYTES:,} (npu.npuz.MAX_ARCHIVE_MEMBERS, "
                   f"npu.segments.MAX_SEGMENTS)")
    fp.seek(0)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, what: str, fail) -> bytes:
    """The bytes of an archive member, read a chunk at a time, never more than ``limit`` nor its declared size."""
    size = info.file_size
    if size > limit:
        raise fail(f"archive member {info.filename} declares {size:,} bytes, more than {what}: {limit:,}")
    chunks, total = [], 0
    try:
        with zf.open(info) as f:
            while total < size:
                chunk = f.read(min(_READ_CHUNK, size - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            f.read(1)                  # reach the end of the member: its CRC is checked there
    except Exception as exc:           # the archive reader's errors are not documented (zlib, EOF, struct, ...)
        raise fail(f"corrupt archive member {info.filename}: {type(exc).__name__}: {exc}") from None
    if total != size:
        raise fail(f"corrupt archive member {info.filename}: {total:,} bytes, its directory entry says {size:,}")
    return b"".join(chunks)
