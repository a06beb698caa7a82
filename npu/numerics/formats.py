"""The numeric formats of the NPU, described as data.

Two families matter to the matrix-vector unit (MVU):

* Brainwave block floating point: ``ms-fp8``, ``ms-fp9`` (one shared 5-bit
  exponent per native vector), ``msfp12``, ``msfp16`` (8-bit exponent, blocks of
  16) and the project's wide reference ``bfp24`` (8-bit exponent, 15-bit
  magnitudes, one block per native vector).  Elements are sign-magnitude integers.
* OCP Microscaling v1.0: ``mxint8``, ``mxfp8_e4m3``, ``mxfp8_e5m2``,
  ``mxfp6_e2m3``, ``mxfp6_e3m2``, ``mxfp4_e2m1``: blocks of 32 with an E8M0 scale.

The MFU and the vector memories use IEEE ``fp16`` / ``bf16`` / ``fp32``;
``int8`` (symmetric, per output channel) is a reference format for weight
studies.  ``docs/numerics.md`` is the contract these records encode.

The codes by which the simulator's kernels and the RTL name an MFU format
(:attr:`FloatFormat.code`) and an element kind (:data:`ELEMENT_KIND_CODES`)
are defined here and nowhere else; ``python -m npu.generate --format-codes``
writes them into the Verilog header ``hdl/generated/format_codes.vh``.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


class FormatError(ValueError):
    """An unknown format name or data the format cannot hold."""


#: Code of each element kind (see :class:`ElementSpec`): the RTL's ``KIND`` parameter.
ELEMENT_KIND_CODES = {"sm": 0, "int": 1, "fp": 2}


@dataclass(frozen=True)
class ElementSpec:
    """How one element of a block is encoded.

    ``kind`` is ``"sm"`` (sign + ``mag_bits`` magnitude integer, value
    ``M * 2**-frac_bits``), ``"int"`` (two's complement, value
    ``q * 2**-frac_bits``) or ``"fp"`` (a minifloat; ``dtype`` is its
    ml_dtypes type).
    """

    kind: str
    bits: int                 # bits per element code in the packed image
    frac_bits: int = 0        # for sm/int: fixed-point fraction bits
    mag_max: int = 0          # for sm/int: largest magnitude code
    ebits: int = 0            # for fp: exponent bits
    mbits: int = 0            # for fp: mantissa bits
    emin: int = 0             # for fp: exponent of the smallest normal
    max_normal: float = 0.0   # largest finite magnitude
    emax: int = 0             # exponent of the largest normal (MX "emax_elem")
    dtype: object = None      # for fp: ml_dtypes element type

    def __post_init__(self) -> None:
        if self.kind not in ELEMENT_KIND_CODES:
            raise FormatError(f"element kind {self.kind!r} is none of {', '.join(ELEMENT_KIND_CODES)}")

    @property
    def kind_code(self) -> int:
        """Code of the element kind (:data:`ELEMENT_KIND_CODES`)."""
        return ELEMENT_KIND_CODES[self.kind]

    @property
    def significand_bits(self) -> int:
        """Width of the element's significand, what an MVU multiplier must take in one pass.

        Sign-magnitude and int elements: their magnitude bits (``bits - 1``);
        minifloats: mantissa bits plus the implicit leading one.
        """
        return self.mbits + 1 if self.kind == "fp" else self.bits - 1

    @property
    def quantum_min(self) -> float:
        """Smallest non-zero magnitude step of the element."""
        if self.kind == "fp":
            return 2.0 ** (self.emin - self.mbits)
        return 2.0 ** -self.frac_bits


@dataclass(frozen=True)
class BlockFormat:
    """A block format: ``block`` elements share one power-of-two scale.

    ``block == 0`` means one block per native vector (the Brainwave rule).
    The scale is a biased exponent of ``scale_bits`` bits; the all-ones code
    is NaN (the whole block reads as NaN).
    """

    name: str
    element: ElementSpec
    block: int
    scale_bits: int
    scale_bias: int

    family = "block"

    def block_for(self, native_dim: int) -> int:
        """Block length on a machine whose native vector is ``native_dim``."""
        return native_dim if self.block == 0 else self.block

    @property
    def scale_nan(self) -> int:
        """Scale code that marks a NaN block."""
        return (1 << self.scale_bits) - 1

    @property
    def scale_emin(self) -> int:
        """Smallest shared exponent (scale code 0)."""
        return -self.scale_bias

    @property
    def scale_emax(self) -> int:
        """Largest finite shared exponent (scale code all-ones minus one)."""
        return self.scale_nan - 1 - self.scale_bias

    @property
    def significand_bits(self) -> int:
        """Significand bits of one element (:attr:`ElementSpec.significand_bits`): sets the MVU passes it needs."""
        return self.element.significand_bits

    def bits_per_value(self, native_dim: int) -> float:
        """Storage bits per value, the scale amortised over its block."""
        return self.element.bits + self.scale_bits / self.block_for(native_dim)


@dataclass(frozen=True)
class FloatFormat:
    """An IEEE-style scalar format: an MFU format (MFU arithmetic, vector memory) and host data.

    ``code`` names the format to the simulator's kernels and to the RTL (its ``FMT`` parameter).
    """

    name: str
    dtype: object
    bits: int
    code: int

    family = "float"


@dataclass(frozen=True)
class IntChannelFormat:
    """Symmetric int8 with one binary32 scale per output channel (row)."""

    name: str
    bits: int = 8
    qmax: int = 127

    family = "int-channel"


def _sm(bits: int) -> ElementSpec:
    mag = bits - 1
    return ElementSpec(kind="sm", bits=bits, frac_bits=mag - 1, mag_max=(1 << mag) - 1,
                       max_normal=((1 << mag) - 1) / 2.0 ** (mag - 1), emax=0)


def _fp(dtype, ebits: int, mbits: int) -> ElementSpec:
    info = ml_dtypes.finfo(dtype)
    return ElementSpec(kind="fp", bits=1 + ebits + mbits, ebits=ebits, mbits=mbits,
                       emin=int(info.minexp), max_normal=float(info.max),
                       emax=int(np.floor(np.log2(float(info.max)))), dtype=np.dtype(dtype))


FORMATS: dict[str, object] = {}


def _register(fmt):
    FORMATS[fmt.name] = fmt
    return fmt


# Brainwave block floating point (sign-magnitude elements, shared exponent).
_register(BlockFormat("ms-fp8", _sm(3), block=0, scale_bits=5, scale_bias=15))
_register(BlockFormat("ms-fp9", _sm(4), block=0, scale_bits=5, scale_bias=15))
_register(BlockFormat("msfp12", _sm(4), block=16, scale_bits=8, scale_bias=127))
_register(BlockFormat("msfp16", _sm(8), block=16, scale_bits=8, scale_bias=127))
_register(BlockFormat("bfp24", _sm(16), block=0, scale_bits=8, scale_bias=127))
# OCP Microscaling v1.0 (E8M0 scale, blocks of 32).
_register(BlockFormat("mxint8", ElementSpec(kind="int", bits=8, frac_bits=6, mag_max=127,
                                            max_normal=127 / 64, emax=0), 32, 8, 127))
_register(BlockFormat("mxfp8_e4m3", _fp(ml_dtypes.float8_e4m3fn, 4, 3), 32, 8, 127))
_register(BlockFormat("mxfp8_e5m2", _fp(ml_dtypes.float8_e5m2, 5, 2), 32, 8, 127))
_register(BlockFormat("mxfp6_e2m3", _fp(ml_dtypes.float6_e2m3fn, 2, 3), 32, 8, 127))
_register(BlockFormat("mxfp6_e3m2", _fp(ml_dtypes.float6_e3m2fn, 3, 2), 32, 8, 127))
_register(BlockFormat("mxfp4_e2m1", _fp(ml_dtypes.float4_e2m1fn, 2, 1), 32, 8, 127))
# MFU formats (IEEE scalars; ``code`` as the kernels and the RTL know them), then int8 for weight studies.
_register(FloatFormat("fp16", np.dtype(np.float16), 16, code=0))
_register(FloatFormat("bf16", np.dtype(ml_dtypes.bfloat16), 16, code=1))
_register(FloatFormat("fp32", np.dtype(np.float32), 32, code=2))
_register(IntChannelFormat("int8"))

ALIASES = {
    "msfp8": "ms-fp8", "msfp9": "ms-fp9", "ms-fp12": "msfp12", "ms-fp16": "msfp16",
    "mxfp8": "mxfp8_e4m3", "mxfp6": "mxfp6_e2m3", "mxfp4": "mxfp4_e2m1",
    "float16": "fp16", "bfloat16": "bf16", "float32": "fp32",
}


def get_format(name: str):
    """Look a format up by name (or alias); FormatError lists the known ones."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    try:
        return FORMATS[key]
    except KeyError:
        raise FormatError(f"unknown numeric format {name!r}; known: {', '.join(FORMATS)}") from None


def block_formats() -> list[BlockFormat]:
    """Every block format (the MVU's formats), in registry order."""
    return [f for f in FORMATS.values() if isinstance(f, BlockFormat)]


def mfu_formats() -> list[FloatFormat]:
    """Every MFU format, in code order."""
    return sorted((f for f in FORMATS.values() if isinstance(f, FloatFormat)), key=lambda f: f.code)
