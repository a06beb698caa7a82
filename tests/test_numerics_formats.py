"""The format registry against docs/numerics.md, section 1.

Expected values are transcribed from the document's tables; element values
are decoded with a small decoder written here from the OCP MX v1.0 encoding
rules (sign | exponent | mantissa, bias 2^(E-1) - 1, subnormals at exponent
field 0), never with the package's helpers.
"""
from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from npu.numerics import formats as F
from npu.numerics import mfu
from npu_toolkit.testing.exact import floor_log2

# --------------------------------------------------------------------------
# Section 1.1, transcribed.  B = 0 means "N (one native vector)".
# name: (element bits, block B, scale bits, scale bias, emax_elem, largest element)
DOC_TABLE = {
    "ms-fp8": (3, 0, 5, 15, 0, Fraction(3, 2)),
    "ms-fp9": (4, 0, 5, 15, 0, Fraction(7, 4)),
    "msfp12": (4, 16, 8, 127, 0, Fraction(7, 4)),
    "msfp16": (8, 16, 8, 127, 0, Fraction("1.984375")),
    "bfp24": (16, 0, 8, 127, 0, Fraction("1.99993896484375")),
    "mxint8": (8, 32, 8, 127, 0, Fraction("1.984375")),
    "mxfp8_e4m3": (8, 32, 8, 127, 8, Fraction(448)),
    "mxfp8_e5m2": (8, 32, 8, 127, 15, Fraction(57344)),
    "mxfp6_e2m3": (6, 32, 8, 127, 2, Fraction("7.5")),
    "mxfp6_e3m2": (6, 32, 8, 127, 4, Fraction(28)),
    "mxfp4_e2m1": (4, 32, 8, 127, 2, Fraction(6)),
}

# Sign-magnitude / integer rows: magnitude bits m and fraction bits f
# ("value M * 2^-f"; section 2 step 3 lists f = 1, 2, 2, 6, 14, 6).
INT_ROWS = {
    "ms-fp8": ("sm", 2, 1),
    "ms-fp9": ("sm", 3, 2),
    "msfp12": ("sm", 3, 2),
    "msfp16": ("sm", 7, 6),
    "bfp24": ("sm", 15, 14),
    "mxint8": ("int", 7, 6),
}

# Minifloat rows: (exponent bits, mantissa bits, specials, emin_elem from section 2, ml_dtypes type)
# specials: "fn" = only the all-ones code (per sign) is NaN (OCP E4M3);
#           "ieee" = exponent field all ones is inf (mantissa 0) / NaN;
#           None = every code is finite (FP6 / FP4).
FP_ROWS = {
    "mxfp8_e4m3": (4, 3, "fn", -6, ml_dtypes.float8_e4m3fn),
    "mxfp8_e5m2": (5, 2, "ieee", -14, ml_dtypes.float8_e5m2),
    "mxfp6_e2m3": (2, 3, None, 0, ml_dtypes.float6_e2m3fn),
    "mxfp6_e3m2": (3, 2, None, -2, ml_dtypes.float6_e3m2fn),
    "mxfp4_e2m1": (2, 1, None, 0, ml_dtypes.float4_e2m1fn),
}


def decode_minifloat(code: int, ebits: int, mbits: int, specials):
    """Value of a minifloat code: a Fraction, or the strings 'nan' / '+inf' / '-inf'."""
    sign = (code >> (ebits + mbits)) & 1
    e = (code >> mbits) & ((1 << ebits) - 1)
    m = code & ((1 << mbits) - 1)
    bias = (1 << (ebits - 1)) - 1
    e_all = (1 << ebits) - 1
    if specials == "ieee" and e == e_all:
        return "nan" if m else ("-inf" if sign else "+inf")
    if specials == "fn" and e == e_all and m == (1 << mbits) - 1:
        return "nan"
    if e == 0:
        mag = Fraction(m, 1 << mbits) * Fraction(2) ** (1 - bias)
    else:
        mag = (1 + Fraction(m, 1 << mbits)) * Fraction(2) ** (e - bias)
    return -mag if sign else mag


@pytest.mark.parametrize("name", list(DOC_TABLE))
def test_block_format_row_matches_doc(name):
    bits, block, sbits, bias, emax_elem, largest = DOC_TABLE[name]
    fmt = F.get_format(name)
    assert isinstance(fmt, F.BlockFormat)
    assert fmt.name == name
    assert fmt.element.bits == bits
    assert fmt.block == block
    assert fmt.scale_bits == sbits
    assert fmt.scale_bias == bias
    assert fmt.element.emax == emax_elem
    assert Fraction(fmt.element.max_normal) == largest
    # emax_elem is floor(log2(largest element)) for every row of the table
    assert floor_log2(largest) == emax_elem


def test_registry_holds_exactly_the_documented_formats():
    assert [f.name for f in F.block_formats()] == list(DOC_TABLE)
    assert set(F.FORMATS) == set(DOC_TABLE) | {"fp16", "bf16", "fp32", "int8"}


@pytest.mark.parametrize("name", list(DOC_TABLE))
def test_block_length_rule(name):
    fmt = F.get_format(name)
    block = DOC_TABLE[name][1]
    for n in (32, 64, 128, 256):
        assert fmt.block_for(n) == (n if block == 0 else block)


@pytest.mark.parametrize("name", list(DOC_TABLE))
def test_scale_range_and_nan_code(name):
    # "The all-ones code (31 for 5-bit scales, 255 for 8-bit scales) is NaN ...
    #  So s ranges over [-15, 15] (5-bit) or [-127, 127] (8-bit, E8M0)."
    fmt = F.get_format(name)
    if fmt.scale_bits == 5:
        assert (fmt.scale_nan, fmt.scale_emin, fmt.scale_emax) == (31, -15, 15)
    else:
        assert (fmt.scale_nan, fmt.scale_emin, fmt.scale_emax) == (255, -127, 127)
    # code c means s = c - bias: code 0 is s_min, code nan-1 is s_max
    assert 0 - fmt.scale_bias == fmt.scale_emin
    assert fmt.scale_nan - 1 - fmt.scale_bias == fmt.scale_emax


@pytest.mark.parametrize("name", list(INT_ROWS))
def test_integer_elements_largest_code(name):
    kind, m, f = INT_ROWS[name]
    fmt = F.get_format(name)
    el = fmt.element
    assert el.kind == kind
    assert el.bits == m + 1
    assert el.frac_bits == f
    assert el.mag_max == (1 << m) - 1
    # the largest code (sign 0, all magnitude bits set / q = 127) decodes to the table's largest element
    largest_code_value = Fraction((1 << m) - 1, 1 << f)
    assert largest_code_value == DOC_TABLE[name][5]
    assert Fraction(el.quantum_min) == Fraction(1, 1 << f)


@pytest.mark.parametrize("name", list(FP_ROWS))
def test_minifloat_elements_largest_code(name):
    ebits, mbits, specials, emin, dtype = FP_ROWS[name]
    fmt = F.get_format(name)
    el = fmt.element
    assert el.kind == "fp"
    assert (el.ebits, el.mbits, el.bits) == (ebits, mbits, 1 + ebits + mbits)
    assert el.emin == emin
    assert el.dtype == np.dtype(dtype)
    ncodes = 1 << el.bits
    decoded = [decode_minifloat(c, ebits, mbits, specials) for c in range(ncodes)]
    finite = [v for v in decoded if isinstance(v, Fraction)]
    largest = max(finite)
    assert largest == DOC_TABLE[name][5]
    assert Fraction(el.max_normal) == largest
    # the largest finite code: sign 0, then the top finite exponent/mantissa pattern
    top = {"fn": (1 << (ebits + mbits)) - 2, "ieee": (((1 << ebits) - 2) << mbits) | ((1 << mbits) - 1),
           None: (1 << (ebits + mbits)) - 1}[specials]
    assert decoded[top] == largest
    # smallest subnormal is 2^(emin - m)
    assert min(v for v in finite if v > 0) == Fraction(2) ** (emin - mbits) == Fraction(el.quantum_min)
    # emin_elem = 1 - bias
    assert emin == 1 - ((1 << (ebits - 1)) - 1)


@pytest.mark.parametrize("name", list(FP_ROWS))
def test_minifloat_decoder_agrees_with_ml_dtypes(name):
    """The doc says the encodings are ml_dtypes' ones: check my decoder against them code by code."""
    ebits, mbits, specials, _, dtype = FP_ROWS[name]
    bits = 1 + ebits + mbits
    codes = np.arange(1 << bits, dtype=np.uint8)
    ml = codes.view(dtype).astype(np.float64)
    for c in range(1 << bits):
        mine = decode_minifloat(c, ebits, mbits, specials)
        if mine == "nan":
            assert np.isnan(ml[c]), c
        elif mine in ("+inf", "-inf"):
            assert ml[c] == (np.inf if mine == "+inf" else -np.inf), c
        else:
            assert Fraction(float(ml[c])) == mine, c
            if mine == 0:
                assert np.signbit(ml[c]) == bool(c >> (bits - 1)), c


def test_scalar_formats():
    assert F.get_format("fp16").dtype == np.dtype(np.float16)
    assert F.get_format("bf16").dtype == np.dtype(ml_dtypes.bfloat16)
    assert F.get_format("fp32").dtype == np.dtype(np.float32)
    assert [F.get_format(n).bits for n in ("fp16", "bf16", "fp32")] == [16, 16, 32]
    i8 = F.get_format("int8")
    assert isinstance(i8, F.IntChannelFormat)
    assert (i8.bits, i8.qmax) == (8, 127)


def test_format_and_element_kind_codes():
    # the kernels' and the RTL's FMT / KIND codes; the RTL's parameter lists (e.g. EW = (FMT == 2) ? 32 : 16)
    # cannot read hdl/generated/format_codes.vh, so these values are part of the contract
    assert {f.name: f.code for f in F.mfu_formats()} == {"fp16": 0, "bf16": 1, "fp32": 2}
    assert F.mfu_formats() == [f for f in F.FORMATS.values() if isinstance(f, F.FloatFormat)]
    assert F.ELEMENT_KIND_CODES == {"sm": 0, "int": 1, "fp": 2}
    for fmt in F.block_formats():
        assert fmt.element.kind_code == F.ELEMENT_KIND_CODES[fmt.element.kind]
    with pytest.raises(F.FormatError, match="element kind 'bcd'"):
        F.ElementSpec(kind="bcd", bits=4)


def test_canonical_nans():
    # section 1.2: fp16 0x7E00, bf16 0x7FC0, fp32 0x7FC00000
    assert mfu.CANONICAL_NAN_BITS == {"fp16": 0x7E00, "bf16": 0x7FC0, "fp32": 0x7FC00000}
    for name, bits, utype in (("fp16", 0x7E00, np.uint16), ("bf16", 0x7FC0, np.uint16),
                              ("fp32", 0x7FC00000, np.uint32)):
        n = mfu.canonical_nan(name)
        assert np.isnan(n.astype(np.float32))
        assert int(np.asarray(n).view(utype)) == bits


@pytest.mark.parametrize("alias,name", [("MS-FP9", "ms-fp9"), (" mxfp8 ", "mxfp8_e4m3"), ("mxfp4", "mxfp4_e2m1"),
                                        ("bfloat16", "bf16"), ("float32", "fp32"), ("msfp16", "msfp16")])
def test_get_format_names(alias, name):
    assert F.get_format(alias) is F.FORMATS[name]


def test_unknown_format_raises():
    with pytest.raises(F.FormatError, match="unknown numeric format"):
        F.get_format("fp7")
    assert issubclass(F.FormatError, ValueError)
