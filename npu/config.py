"""Machine configuration of the NPU: one typed, frozen record read by every tool.

The compiler, the simulator and the RTL generator all take an :class:`NPUConfig`;
presets model published Brainwave instances (see ``docs/architecture.md``).
A configuration round-trips through a small JSON file.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from npu.numerics.formats import block_formats, get_format, mfu_formats  # formats never import config
from npu.numerics.pack import tile_nbytes  # nor does pack


class ConfigError(ValueError):
    """A configuration is malformed or inconsistent (message names the field)."""


#: Formats the MVU accepts for weights and activations: the block formats of npu.numerics.formats.
MVU_FORMATS = tuple(f.name for f in block_formats())
#: Formats the MFU computes in and the vector memories store: the MFU formats of npu.numerics.formats.
MFU_FORMATS = tuple(f.name for f in mfu_formats())
#: Most MVU format modes besides mode 0 (the ``fmt`` field of mv_mul and m_load is 3 bits).
MAX_EXTRA_FORMATS = 7


#: Fields that set how fast the machine runs a program but never which programs it runs or what they compute:
#: instructions work on whole N x N tiles and native vectors whatever the engines, lanes, ports, clock and DRAM
#: speed, so the compiler reads none of them (NPUConfig.program_key).
TIMING_FIELDS = ("tiles", "lanes", "write_ports", "multiplier_bits", "clock_mhz", "dram_gbps", "dram_latency_ns")


@dataclass(frozen=True)
class NPUConfig:
    """One build of the NPU.

    Sizes are in the machine's own units: the vector memory (activation buffer)
    holds ``vrf_depth`` native vectors of ``native_dim`` elements in the MFU
    format; the matrix register file holds ``mrf_tiles`` tiles of
    ``native_dim x native_dim`` weights in the weight format (each slot
    sized for the widest of the machine's MVU formats).

    MVU format modes (mixed precision): a chain's ``mv_mul`` and the
    ``m_load`` of its tiles select a mode with their ``fmt`` field.  Mode 0
    is (``weight_format``, ``activation_format``); mode i >= 1 is
    (``extra_formats[i-1]``, ``extra_formats[i-1]``) for weights and
    activations both.  ``extra_formats`` holds at most 7 distinct block
    formats, none repeated.

    ``multiplier_bits`` is the width of the MVU's multipliers in element
    significand bits (``BlockFormat.significand_bits``); None means the
    widest significand among the machine's formats, so every mode runs at
    full rate.  A chain whose formats have a significand w wider than
    ``multiplier_bits`` takes ceil(w / multiplier_bits) passes: its MVU
    cycles are multiplied by that (:meth:`mvu_passes`).

    ``write_ports`` (W) widens the path from the MVU to the vector memory:
    W MFU pipelines side by side, and a vector memory of W banks (bank =
    address mod W), each with its own write port.  A chain moves up to W
    vectors per cycle, one per bank, so its write, operand and (without
    ``mv_mul``) input cycles are the largest number of its vectors that fall
    in one bank.  W = 1 is the single-ported machine.
    """

    name: str
    native_dim: int          # N: elements per native vector, rows/cols per tile
    tiles: int               # matrix-vector tile engines working in parallel
    lanes: int               # multiplier lanes per dot-product engine
    mfus: int                # multi-function units in the chain
    vrf_depth: int           # native vectors in the vector memory
    mrf_tiles: int           # N x N tiles in the matrix register file
    dram_bytes: int          # addressable external memory
    dram_gbps: float         # DRAM bandwidth, GB/s (1e9 bytes per second)
    dram_latency_ns: float   # first-beat latency of one DMA burst
    clock_mhz: float         # core clock
    weight_format: str = "ms-fp9"
    activation_format: str = "ms-fp9"
    mfu_format: str = "fp16"
    scalar_regs: int = 16    # scalar registers written by s_wr
    extra_formats: tuple[str, ...] = ()   # block formats of MVU modes 1.. (weights and activations both)
    multiplier_bits: int | None = None    # MVU multiplier width in significand bits (None: the widest format's)
    write_ports: int = 1     # vectors the MFU path writes per cycle: MFU pipelines side by side, vector-memory banks

    def __post_init__(self) -> None:
        if isinstance(self.extra_formats, list):          # from JSON
            object.__setattr__(self, "extra_formats", tuple(self.extra_formats))
        self.validate()

    # ----- derived quantities -------------------------------------------------
    @property
    def macs(self) -> int:
        """Multiply-accumulate units: tiles x N dot-product engines x lanes."""
        return self.tiles * self.native_dim * self.lanes

    @property
    def peak_tops(self) -> float:
        """Peak tera-operations per second (2 ops per MAC)."""
        return 2 * self.macs * self.clock_mhz * 1e6 / 1e12

    @property
    def cycles_per_tile(self) -> int:
        """Cycles one tile engine needs for one N x N tile times one vector."""
        return -(-self.native_dim // self.lanes)

    @property
    def dram_bytes_per_cycle(self) -> float:
        """DRAM bandwidth in bytes per core clock cycle."""
        return self.dram_gbps * 1e9 / (self.clock_mhz * 1e6)

    @property
    def dram_latency_cycles(self) -> int:
        """DRAM latency in core clock cycles (rounded up)."""
        return int(-(-self.dram_latency_ns * self.clock_mhz // 1000))

    @property
    def mfu_bytes(self) -> int:
        """Bytes per element of the MFU / vector-memory format."""
        return get_format(self.mfu_format).bits // 8

    @property
    def vector_bytes(self) -> int:
        """Bytes of one native vector as stored in DRAM and the vector memory."""
        return self.native_dim * self.mfu_bytes

    @property
    def mvu_modes(self) -> tuple[tuple[str, str], ...]:
        """(weight format, activation format) of each MVU mode: mode 0 the machine's pair, then the extras."""
        return ((self.weight_format, self.activation_format),) + tuple((f, f) for f in self.extra_formats)

    def mode_formats(self, mode: int) -> tuple[str, str]:
        """(weight format, activation format) of MVU mode ``mode``; ConfigError if the machine has no such mode."""
        modes = self.mvu_modes
        if not 0 <= mode < len(modes):
            raise ConfigError(f"config {self.name!r}: MVU format mode {mode} does not exist; modes are "
                              f"0..{len(modes) - 1}")
        return modes[mode]

    def mode_of(self, weight_format: str, activation_format: str) -> int | None:
        """The MVU mode of a (weight, activation) format pair, or None when the machine has none."""
        w, a = get_format(weight_format).name, get_format(activation_format).name
        for i, pair in enumerate(self.mvu_modes):
            if pair == (w, a):
                return i
        return None

    @property
    def mvu_format_names(self) -> tuple[str, ...]:
        """Every block format the MVU holds (weights or activations, any mode), without repeats, in mode order."""
        out: list[str] = []
        for pair in self.mvu_modes:
            for f in pair:
                if f not in out:
                    out.append(f)
        return tuple(out)

    @property
    def widest_weight_format(self) -> str:
        """The weight format of the largest packed tile: the size of one MRF slot."""
        return max((w for w, _ in self.mvu_modes), key=lambda f: tile_nbytes(f, self.native_dim))

    @property
    def effective_multiplier_bits(self) -> int:
        """``multiplier_bits``, or (None) the widest significand among the machine's formats."""
        if self.multiplier_bits is not None:
            return self.multiplier_bits
        return max(get_format(f).significand_bits for f in self.mvu_format_names)

    def mvu_passes(self, mode: int = 0) -> int:
        """Passes the MVU makes over a chain of mode ``mode``: ceil(widest significand / multiplier_bits)."""
        bits = max(get_format(f).significand_bits for f in self.mode_formats(mode))
        return -(-bits // self.effective_multiplier_bits)

    # ----- checks -------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError naming the first inconsistent field."""
        if not isinstance(self.name, str) or not self.name or len(self.name) > 64 or not self.name.isprintable():
            raise ConfigError(f"config name must be printable text of 1 to 64 characters, got {self.name!r:.80}")
        ints = {
            "native_dim": (2, 4096), "tiles": (1, 256), "lanes": (1, 4096),
            "mfus": (1, 8), "vrf_depth": (1, 1 << 20), "mrf_tiles": (1, 1 << 16),
            "dram_bytes": (1 << 12, 1 << 32), "scalar_regs": (1, 16), "write_ports": (1, 16),
        }
        for name, (lo, hi) in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"config {self.name!r}: {name} must be an integer, got {value!r}")
            if not lo <= value <= hi:
                raise ConfigError(f"config {self.name!r}: {name}={value} outside [{lo}, {hi}]")
        for name in ("native_dim", "write_ports"):
            value = getattr(self, name)
            if value & (value - 1):
                raise ConfigError(f"config {self.name!r}: {name}={value} must be a power of two")
        if self.lanes > self.native_dim or self.native_dim % self.lanes:
            raise ConfigError(
                f"config {self.name!r}: lanes={self.lanes} must divide native_dim={self.native_dim}")
        for name in ("dram_gbps", "dram_latency_ns", "clock_mhz"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ConfigError(f"config {self.name!r}: {name} must be a positive number, got {value!r}")
        for name in ("weight_format", "activation_format"):
            value = getattr(self, name)
            if value not in MVU_FORMATS:
                raise ConfigError(
                    f"config {self.name!r}: {name}={value!r} is not an MVU format; "
                    f"choose one of {', '.join(MVU_FORMATS)}")
        if self.mfu_format not in MFU_FORMATS:
            raise ConfigError(
                f"config {self.name!r}: mfu_format={self.mfu_format!r}; choose one of {', '.join(MFU_FORMATS)}")
        for name in ("weight_format", "activation_format"):
            block = get_format(getattr(self, name)).block_for(self.native_dim)
            if self.native_dim % block:
                raise ConfigError(
                    f"config {self.name!r}: {name}={getattr(self, name)!r} has blocks of {block}, "
                    f"which must divide native_dim={self.native_dim}")

        self._validate_modes()

    def _validate_modes(self) -> None:
        extras = self.extra_formats
        if not isinstance(extras, tuple) or not all(isinstance(f, str) for f in extras):
            raise ConfigError(f"config {self.name!r}: extra_formats must be a list of format names, got {extras!r:.80}")
        if len(extras) > MAX_EXTRA_FORMATS:
            raise ConfigError(f"config {self.name!r}: extra_formats has {len(extras)} formats; the 3-bit fmt field "
                              f"allows at most {MAX_EXTRA_FORMATS}")
        for i, value in enumerate(extras):
            if value not in MVU_FORMATS:
                raise ConfigError(
                    f"config {self.name!r}: extra_formats[{i}]={value!r} is not an MVU format; "
                    f"choose one of {', '.join(MVU_FORMATS)}")
            block = get_format(value).block_for(self.native_dim)
            if self.native_dim % block:
                raise ConfigError(
                    f"config {self.name!r}: extra_formats[{i}]={value!r} has blocks of {block}, "
                    f"which must divide native_dim={self.native_dim}")
            if value in extras[:i]:
                raise ConfigError(f"config {self.name!r}: extra_formats[{i}]={value!r} is listed twice")
        bits = self.multiplier_bits
        if bits is not None and (not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 64):
            raise ConfigError(f"config {self.name!r}: multiplier_bits must be an integer in [1, 64] or null, "
                              f"got {bits!r}")

    def program_key(self) -> tuple:
        """The fields a program depends on: two configurations with equal keys run the same programs with the
        same results, at different speeds (every field but the name and :data:`TIMING_FIELDS`)."""
        return tuple((f.name, getattr(self, f.name)) for f in fields(self)
                     if f.name != "name" and f.name not in TIMING_FIELDS)

    # ----- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON-ready)."""
        out = dataclasses.asdict(self)
        out["extra_formats"] = list(self.extra_formats)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NPUConfig":
        """Build a config from a dict, rejecting unknown or missing fields by name."""
        if not isinstance(data, dict):
            raise ConfigError(f"a configuration must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}")
        required = {f.name for f in fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise ConfigError(f"configuration is missing field(s): {', '.join(missing)}")
        return cls(**data)

    def to_json(self) -> str:
        """JSON text of this configuration."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | Path) -> None:
        """Write this configuration as JSON."""
        Path(path).write_text(self.to_json())

    def replace(self, **changes: Any) -> "NPUConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, NPUConfig] = {}


def _preset(cfg: NPUConfig) -> NPUConfig:
    PRESETS[cfg.name] = cfg
    return cfg


# Stratix-10-class: ~96k MACs as in the published S10 280 build (6 x 400 x 40).
# The CNN build keeps the MAC count and uses N = 128, the width the ResNet
# firmware needs, so that 64..2048-channel layers tile without padding waste.
BW_S10 = _preset(NPUConfig(
    name="bw-s10", native_dim=128, tiles=12, lanes=64, mfus=2,
    vrf_depth=32768, mrf_tiles=2048, dram_bytes=1 << 32,
    dram_gbps=76.8, dram_latency_ns=200.0, clock_mhz=500.0,
))
# Stratix-10-class with the same 98,304 multipliers, built to keep them busy on CNNs at batch 1: N = 64
# (ResNet's 64-channel layers tile without padding), and 16 write ports (16 MFU pipelines side by side, a
# vector memory of 16 banks) so that 1x1 convolutions are not bound by one output vector per cycle.  Same
# vector-memory and MRF bytes as bw-s10.  docs/architecture.md ("Keeping the multipliers busy") gives its cost.
BW_S10_N64W16 = _preset(NPUConfig(
    name="bw-s10-n64w16", native_dim=64, tiles=24, lanes=64, mfus=2, write_ports=16,
    vrf_depth=65536, mrf_tiles=8192, dram_bytes=1 << 32,
    dram_gbps=76.8, dram_latency_ns=200.0, clock_mhz=500.0,
))
# Arria-10-class, as the shipped ResNet-50 firmware needs: N = 128, 2 MFUs.
BW_A10 = _preset(NPUConfig(
    name="bw-a10", native_dim=128, tiles=4, lanes=32, mfus=2,
    vrf_depth=16384, mrf_tiles=512, dram_bytes=1 << 32,
    dram_gbps=34.1, dram_latency_ns=250.0, clock_mhz=300.0,
))
# Small enough for RTL simulation; N = 32 so MX blocks (32) fit one vector.
TINY = _preset(NPUConfig(
    name="tiny", native_dim=32, tiles=2, lanes=8, mfus=2,
    vrf_depth=4096, mrf_tiles=256, dram_bytes=1 << 24,
    dram_gbps=1.6, dram_latency_ns=100.0, clock_mhz=100.0,
))

DEFAULT_PRESET = "bw-s10"


def load_config(spec: str | Path) -> NPUConfig:
    """Return a preset by name, or load a JSON configuration file.

    A JSON file may name a ``"base"`` preset and override some of its fields.
    """
    text = str(spec)
    if text in PRESETS:
        return PRESETS[text]
    path = Path(text)
    if not path.exists():
        raise ConfigError(
            f"{text!r} is neither a preset ({', '.join(PRESETS)}) nor an existing configuration file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}") from None
    if isinstance(data, dict) and "base" in data:
        base = data.pop("base")
        if base not in PRESETS:
            raise ConfigError(f"{path}: base preset {base!r} unknown; choose one of {', '.join(PRESETS)}")
        merged = PRESETS[base].to_dict()
        unknown = sorted(set(data) - set(merged))
        if unknown:
            raise ConfigError(f"{path}: unknown configuration field(s): {', '.join(unknown)}")
        merged.update(data)
        data = merged
    try:
        return NPUConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
