"""Hand-worked conversions following the OCP MX v1.0 rule (docs/numerics.md section 2).

Rule: X = 2^s with s = clamp(floor(log2 max|V|) - emax_elem, -127, 127);
each element u = v / X is rounded (RNE) onto the element grid and saturated
to the largest finite element; elements that round to 0 are +0; the E8M0
scale code is s + 127.  Every expected value and code below is worked out by
hand in the comment next to it; codes are additionally checked against
ml_dtypes' own encoding of the expected element value.

Bit layouts used for the hand codes (sign | exponent | mantissa):
  E2M1 (bias 1):  s ee m       0.5=0001 1=0010 1.5=0011 2=0100 3=0101 4=0110 6=0111
  E4M3 (bias 7):  s eeee mmm   (S.1111.111 is NaN; max 0x7E = 448)
  E5M2 (bias 15): s eeeee mm   (exponent 11111 is inf/NaN; max 0x7B = 57344)
  E2M3 (bias 1):  s ee mmm     (max 0x1F = 7.5)
  E3M2 (bias 3):  s eee mm     (max 0x1F = 28)
"""
from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from npu.numerics import dequantize, quantize

ML = {
    "mxfp4_e2m1": ml_dtypes.float4_e2m1fn,
    "mxfp6_e2m3": ml_dtypes.float6_e2m3fn,
    "mxfp6_e3m2": ml_dtypes.float6_e3m2fn,
    "mxfp8_e4m3": ml_dtypes.float8_e4m3fn,
    "mxfp8_e5m2": ml_dtypes.float8_e5m2,
}
F = Fraction
P2 = lambda k: F(2) ** k  # noqa: E731

# (format, inputs (the rest of the 32-block is +0), expected scale code,
#  expected [(element value, hand-worked element code)] for each input)
EXAMPLES = [
    # ---------------- MXFP4 E2M1, emax_elem 2 ----------------
    ("mxfp4_e2m1", [6.0, 5.0, 2.5, 0.25, 0.75, -1.25, -0.25, 1.75, 3.5], 127, [
        # max 6: floor(log2 6) = 2, s = 2 - 2 = 0, X = 1, code 0 + 127 = 127
        (F(6), 0b0111),    # 6: e = 2, quantum 2^(2-1) = 2, 6/2 = 3 -> 6
        (F(4), 0b0110),    # 5: e = 2, 5/2 = 2.5 tie -> 2 (even) -> 4
        (F(2), 0b0100),    # 2.5: e = 1, quantum 1, 2.5 tie -> 2 (even)
        (F(0), 0b0000),    # 0.25: e = max(-2, 0) = 0, quantum 0.5, 0.5 tie -> 0 (even)
        (F(1), 0b0010),    # 0.75: quantum 0.5, 1.5 tie -> 2 (even) -> 1.0 (0.5 has odd mantissa 1)
        (F(-1), 0b1010),   # -1.25: quantum 0.5, 2.5 tie -> 2 -> -1.0
        (F(0), 0b0000),    # -0.25: rounds to 0 -> encoded +0 (not 0b1000)
        (F(2), 0b0100),    # 1.75: quantum 0.5, 3.5 tie -> 4 -> 2.0
        (F(4), 0b0110),    # 3.5: e = 1, quantum 1, 3.5 tie -> 4 -> 4.0
    ]),
    ("mxfp4_e2m1", [7.9, -7.9, 7.0, 0.3, -5.5], 127, [
        # max 7.9 (binary32 7.900000095...): floor(log2 7.9) = 2, s = 0, X = 1
        (F(6), 0b0111),    # 7.9: quantum 2, 3.95 -> 4 -> 8 > 6: saturates to 6
        (F(-6), 0b1111),   # -7.9 -> -6
        (F(6), 0b0111),    # 7: 7/2 = 3.5 tie -> 4 -> 8 -> saturates to 6
        (F(1, 2), 0b0001),  # 0.3 (0.30000001...): e = 0, quantum 0.5, 0.6000... -> 1 -> 0.5
        (F(-6), 0b1111),   # -5.5: quantum 2, 2.75 -> 3 -> 6
    ]),
    ("mxfp4_e2m1", [8.0, 1.0, 0.5, -3.0, 5.0, 0.75], 128, [
        # max 8: floor(log2 8) = 3, s = 1, X = 2, code 128
        (F(4), 0b0110),    # 8/2 = 4
        (F(1, 2), 0b0001),  # 1/2 = 0.5 (subnormal)
        (F(0), 0b0000),    # 0.5/2 = 0.25: quantum 0.5, 0.5 tie -> 0
        (F(-3, 2), 0b1011),  # -3/2 = -1.5 exact
        (F(2), 0b0100),    # 5/2 = 2.5: quantum 1, tie -> 2 (decoded 2 * 2 = 4)
        (F(1, 2), 0b0001),  # 0.75/2 = 0.375: quantum 0.5, 0.75 -> 1 -> 0.5 (decoded 1.0)
    ]),
    ("mxfp4_e2m1", [1.5 * 2.0**127, -2.0**126, 2.0**125], 252, [
        # max 1.5 * 2^127: floor(log2) = 127, s = 125, code 252
        (F(6), 0b0111), (F(-2), 0b1100), (F(1), 0b0010),   # u = 6, -2, 1 exactly
    ]),
    ("mxfp4_e2m1", [2.0**-130, -(2.0**-131)], 0, [
        # max 2^-130 (a binary32 subnormal): s = -130 - 2 = -132 -> clamped to -127, code 0
        (F(0), 0), (F(0), 0),  # u = 2^-3: e = 0, quantum 0.5, 0.25 -> 0 ; u = -2^-4 -> 0 -> +0
    ]),
    ("mxfp4_e2m1", [2.0**-125, 3 * 2.0**-127], 0, [
        # max 2^-125: s = -127 (no clamping needed), code 0
        (F(4), 0b0110),    # u = 2^2 = 4
        (F(3), 0b0101),    # u = 3 -> decoded 3 * 2^-127 exactly
    ]),
    ("mxfp4_e2m1", [0.0, -0.0], 0, [(F(0), 0), (F(0), 0)]),   # all zero: s = s_min = -127, code 0

    # ---------------- MXFP8 E4M3, emax_elem 8 ----------------
    ("mxfp8_e4m3", [1.0, 0.5, -0.75, 1.0625, 0.9375, 2.0**-17, 2.0**-18, 3 * 2.0**-19, 0.3], 119, [
        # max 1.0625: floor(log2) = 0, s = 0 - 8 = -8, X = 2^-8, code 119
        (F(256), 0x78),    # 1.0 / 2^-8 = 256 = 1.0 * 2^8: exponent field 8 + 7 = 15, mantissa 0
        (F(128), 0x70),    # 128 = 2^7: exponent 14
        (F(-192), 0xF4),   # -192 = -1.5 * 2^7: exponent 14, mantissa 100
        (F(256), 0x78),    # 1.0625 -> u = 272: e = 8, quantum 2^(8-3) = 32, 8.5 tie -> 8 -> 256
        (F(240), 0x77),    # 240 = 1.875 * 2^7: exponent 14, mantissa 111
        (P2(-9), 0x01),    # 2^-17 -> u = 2^-9: e = max(-9, -6) = -6, quantum 2^-9: 1 -> smallest subnormal
        (F(0), 0x00),      # 2^-18 -> u = 2^-10: 0.5 tie -> 0 -> +0
        (P2(-9), 0x01),    # 3 * 2^-19 -> u = 3 * 2^-11: 0.75 -> 1 -> 2^-9
        (F(80), 0x6A),     # 0.3 (0.3000000119...) -> u = 76.80000305: e = 6, quantum 8, 9.6 -> 10 -> 80
        #                    80 = 1.25 * 2^6: exponent 13, mantissa 010 -> 0 1101 010; decoded 0.3125
    ]),
    ("mxfp8_e4m3", [1.875, -1.8, 1.75, 1.6875, 1.5625], 119, [
        # max 1.875: floor(log2) = 0, s = -8, code 119
        (F(448), 0x7E),    # u = 480: quantum 32, 15 -> 480 > 448 (480 would be the NaN code): saturates
        (F(-448), 0xFE),   # -1.8 (-1.79999995...) -> u = -460.8: 14.4 -> 14 -> -448
        (F(448), 0x7E),    # u = 448 exactly = 1.75 * 2^8: exponent 15, mantissa 110
        (F(448), 0x7E),    # 1.6875 -> u = 432: 13.5 tie -> 14 -> 448
        (F(384), 0x7C),    # 1.5625 -> u = 400: 12.5 tie -> 12 -> 384 = 1.5 * 2^8 (decoded 1.5)
    ]),
    ("mxfp8_e4m3", [100.0, -7.0, 0.01], 125, [
        # max 100: floor(log2 100) = 6, s = -2, X = 1/4, code 125
        (F(384), 0x7C),    # u = 400: quantum 32, 12.5 tie -> 12 -> 384 (decoded 96: OCP's rule loses 100)
        (F(-28), 0xDE),    # u = -28 = -1.75 * 2^4: exponent 11, mantissa 110 -> 1 1011 110
        (F(10, 256), 0x12),  # 0.01 (0.0099999997...) -> u = 0.0399999991: e = -5, quantum 2^-8,
        #                      10.2399997 -> 10 -> 10/256 = 1.25 * 2^-5: exponent 2, mantissa 010
    ]),

    # ---------------- MXFP8 E5M2, emax_elem 15 ----------------
    ("mxfp8_e5m2", [1.0, 0.75, 2.0**-30, 2.0**-32, -3 * 2.0**-33, 0.3], 112, [
        # max 1: s = 0 - 15 = -15, X = 2^-15, code 112
        (P2(15), 0x78),    # u = 2^15: exponent 30, mantissa 0
        (F(3) * P2(13), 0x76),  # u = 1.5 * 2^14: exponent 29, mantissa 10
        (P2(-15), 0x02),   # u = 2^-15: e = max(-15, -14) = -14, quantum 2^-16: 2 -> subnormal mantissa 10
        (F(0), 0x00),      # u = 2^-17: 0.5 tie -> 0 -> +0
        (-P2(-16), 0x81),  # u = -3 * 2^-18: 0.75 -> 1 -> -2^-16 (decoded -2^-31)
        (F(10240), 0x71),  # u = 0.3000000119 * 32768 = 9830.40039: e = 13, quantum 2^11, 4.8 -> 5 -> 10240
        #                    10240 = 1.25 * 2^13: exponent 28, mantissa 01; decoded 0.3125
    ]),
    ("mxfp8_e5m2", [1.9375, 1.625, -1.875], 112, [
        # max 1.9375: s = -15, code 112
        (F(57344), 0x7B),  # u = 63488: quantum 2^13, 7.75 -> 8 -> 65536 > 57344: saturates (decoded 1.75)
        (F(49152), 0x7A),  # u = 53248: 6.5 tie -> 6 -> 49152 = 1.5 * 2^15 (decoded 1.5)
        (F(-57344), 0xFB),  # u = -61440: 7.5 tie -> 8 -> 65536: saturates to -57344
    ]),
    ("mxfp8_e5m2", [2.0**100, 2.0**70, 2.0**85, 5 * 2.0**80, 7 * 2.0**70], 212, [
        # max 2^100: s = 100 - 15 = 85, code 212 -- the whole E5M2 range in one block
        (P2(15), 0x78),    # u = 2^15, the top binade
        (P2(-15), 0x02),   # u = 2^-15, a subnormal
        (F(1), 0x3C),      # u = 1: exponent 15
        (F(5, 32), 0x31),  # u = 5 * 2^-5 = 1.25 * 2^-3: exponent 12, mantissa 01
        (F(7) * P2(-15), 0x0B),  # u = 1.75 * 2^-13: exponent 2, mantissa 11
    ]),

    # ---------------- MXINT8, emax_elem 0: element = RNE(u * 64) / 64 ----------------
    ("mxint8", [3.0, -1.0, 1 / 64, 3 / 64, -0.01, 5 / 64], 128, [
        # max 3: floor(log2 3) = 1, s = 1, X = 2, code 128
        (F(96, 64), 96),       # u = 1.5 -> 96
        (F(-32, 64), 0xE0),    # u = -0.5 -> -32 -> two's complement 0xE0
        (F(0), 0),             # u = 1/128 -> 0.5 tie -> 0
        (F(2, 64), 2),         # u = 3/128 -> 1.5 tie -> 2
        (F(0), 0),             # u = -0.005 -> -0.32 -> 0 -> +0
        (F(2, 64), 2),         # u = 5/128 -> 2.5 tie -> 2
    ]),
    ("mxint8", [1.999, -1.999, 1.9921875, -(2.0**-7)], 127, [
        # max 1.999: floor = 0, s = 0, code 127
        (F(127, 64), 0x7F),    # 1.99899995 * 64 = 127.936 -> 128 -> saturates to 127
        (F(-127, 64), 0x81),   # -127 (never -128)
        (F(127, 64), 0x7F),    # 255/128 * 64 = 127.5 tie -> 128 (even) -> saturates to 127
        (F(0), 0),             # -2^-7 * 64 = -0.5 tie -> 0 -> +0
    ]),
    ("mxint8", [0.5, 0.1, -0.25], 126, [
        # max 0.5: floor(log2 0.5) = -1, s = -1, X = 1/2, code 126
        (F(64, 64), 0x40),     # u = 1 -> 64
        (F(13, 64), 0x0D),     # 0.1 (0.100000001...) -> u = 0.2 -> 12.8 -> 13 (decoded 0.1015625)
        (F(-32, 64), 0xE0),    # u = -0.5 -> -32
    ]),

    # ---------------- MXFP6 E2M3, emax_elem 2 ----------------
    ("mxfp6_e2m3", [7.5, 5.25, 0.0625, 0.1875, -1.0625, 7.75], 127, [
        # max 7.75: floor(log2) = 2, s = 0, code 127
        (F(15, 2), 0x1F),      # 7.5 = 1.875 * 4: exponent 3, mantissa 111
        (F(5), 0x1A),          # 5.25: quantum 0.5, 10.5 tie -> 10 -> 5 = 1.25 * 4: 0 11 010
        (F(0), 0x00),          # 0.0625: e = 0, quantum 0.125, 0.5 tie -> 0
        (F(1, 4), 0x02),       # 0.1875: 1.5 tie -> 2 -> 0.25 (subnormal mantissa 010)
        (F(-1), 0x28),         # -1.0625: 8.5 tie -> 8 -> -1.0: 1 01 000
        (F(15, 2), 0x1F),      # 7.75: 15.5 tie -> 16 -> 8 > 7.5: saturates
    ]),
    ("mxfp6_e2m3", [0.3, 0.01, -0.125], 123, [
        # max 0.3 (0.30000001...): floor(log2) = -2, s = -4, X = 1/16, code 123
        (F(5), 0x1A),          # u = 4.8000002: quantum 0.5, 9.6 -> 10 -> 5 (decoded 0.3125)
        (F(1, 8), 0x01),       # 0.01 -> u = 0.16: e = 0, quantum 0.125, 1.28 -> 1 -> 0.125 (decoded 2^-7)
        (F(-2), 0x30),         # u = -2 = -1.0 * 2^1: 1 10 000
    ]),
    ("mxfp6_e2m3", [1e30], 224, [
        # 1e30 in binary32 is 1.5777218... * 2^99: floor(log2) = 99, s = 97, code 224
        (F(13, 2), 0x1D),      # u = 6.3108874: quantum 0.5, 12.62 -> 13 -> 6.5 = 1.625 * 4: 0 11 101
    ]),

    # ---------------- MXFP6 E3M2, emax_elem 4 ----------------
    ("mxfp6_e3m2", [28.0, 30.0, 26.0, 0.09375, 0.03125, -5.0], 127, [
        # max 30: floor(log2 30) = 4, s = 0, code 127
        (F(28), 0x1F),         # 28 = 1.75 * 16: 0 111 11
        (F(28), 0x1F),         # 30: quantum 4, 7.5 tie -> 8 -> 32 > 28: saturates
        (F(24), 0x1E),         # 26: 6.5 tie -> 6 -> 24 = 1.5 * 16: 0 111 10
        (F(1, 8), 0x02),       # 0.09375: e = max(-4, -2) = -2, quantum 2^-4, 1.5 tie -> 2 -> 0.125
        (F(0), 0x00),          # 0.03125: 0.5 tie -> 0
        (F(-5), 0x35),         # -5 = -1.25 * 4: 1 101 01
    ]),
    ("mxfp6_e3m2", [1.0, 0.1, -3 / 128], 123, [
        # max 1: s = 0 - 4 = -4, X = 1/16, code 123
        (F(16), 0x1C),         # u = 16: 0 111 00
        (F(3, 2), 0x0E),       # 0.1 -> u = 1.6000000238: quantum 0.25, 6.4 -> 6 -> 1.5: 0 011 10 (decoded 0.09375)
        (F(-3, 8), 0x26),      # u = -0.375 = -1.5 * 2^-2: quantum 2^-4, 6 exact: 1 001 10
    ]),
    ("mxfp6_e3m2", [2.0**-130, 2.0**-133, 3 * 2.0**-132], 0, [
        # max 2^-130: s = -134 -> clamped to -127, code 0
        (F(1, 8), 0x02),       # u = 2^-3: e = -2, quantum 2^-4, 2 -> 0.125 (decoded 2^-130 exactly)
        (F(0), 0x00),          # u = 2^-6: 0.25 -> 0
        (F(1, 8), 0x02),       # u = 3 * 2^-5 = 0.09375: 1.5 tie -> 2 -> 0.125
    ]),
]


def element_code_ml(name, value: Fraction) -> int:
    """ml_dtypes' code for an exactly representable element value (+0 for zero)."""
    if name == "mxint8":
        return int(np.array(int(value * 64), np.int8).view(np.uint8))
    if value == 0:
        return 0
    return int(np.array(float(value), np.float64).astype(ML[name]).view(np.uint8))


@pytest.mark.parametrize("name,inputs,scale_code,expected", EXAMPLES,
                         ids=[f"{e[0]}-{i}" for i, e in enumerate(EXAMPLES)])
def test_worked_example(name, inputs, scale_code, expected):
    x = np.zeros(32, np.float32)
    x[:len(inputs)] = inputs
    t = quantize(x, name)
    assert t.block == 32
    assert int(t.scales[0]) == scale_code
    s = scale_code - 127
    d = dequantize(t)
    for i, (elem, code) in enumerate(expected):
        assert element_code_ml(name, elem) == code, f"hand code of element {i} disagrees with ml_dtypes"
        assert int(t.codes[i]) == code, f"element {i}: code {int(t.codes[i]):#x}, expected {code:#x}"
        assert Fraction(float(d[i])) == elem * P2(s), f"element {i}"
        if elem == 0:
            assert not np.signbit(d[i])
    # the padding zeros
    assert not t.codes[len(inputs):].any()
    assert not np.signbit(d[len(inputs):]).any()


MX = ["mxint8", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4_e2m1"]
EMAX = {"mxint8": 0, "mxfp8_e4m3": 8, "mxfp8_e5m2": 15, "mxfp6_e2m3": 2, "mxfp6_e3m2": 4, "mxfp4_e2m1": 2}


@pytest.mark.parametrize("name", MX)
def test_e8m0_scale_code_sweep(name):
    """Block max 2^k (and 1.99 * 2^k) for every binary32 binade k: code = clamp(k - emax, -127, 127) + 127."""
    ks = list(range(-149, 128))
    x = np.zeros((len(ks), 2, 32), np.float32)
    for i, k in enumerate(ks):
        x[i, 0, 5] = np.float32(2.0**k)
        x[i, 1, 7] = -np.float32(min(1.99 * 2.0**k, 3.4e38)) if k > -126 else -np.float32(2.0**k)
    t = quantize(x.reshape(len(ks), 64), name)
    for i, k in enumerate(ks):
        want = min(max(k - EMAX[name], -127), 127) + 127
        assert int(t.scales[i, 0]) == want, k
        assert int(t.scales[i, 1]) == want, k


# ---------------- Brainwave formats: the same rule with emax_elem = 0 ----------------
BW_EXAMPLES = [
    ("ms-fp9", [1.3, -0.2, 3.0, 2.5, -2.25], 16, [
        # max 3: floor(log2 3) = 1, s = 1 - 0 = 1, 5-bit code 1 + 15 = 16; M = RNE(|u| * 4), max 7
        (F(3, 4), 3),          # 1.3 (1.29999995) -> u = 0.65 -> 2.6 -> 3
        (F(0), 0),             # -0.2 -> u = -0.1 -> 0.4 -> 0 -> +0
        (F(6, 4), 6),          # u = 1.5 -> 6
        (F(5, 4), 5),          # u = 1.25 -> 5
        (F(-4, 4), 0b1100),    # u = -1.125 -> 4.5 tie -> 4; sign bit 8 -> 12
    ]),
    ("ms-fp8", [0.75, -0.625, 1.25 * 4, 7.0, -3.0], 17, [
        # max 7: floor(log2 7) = 2, s = 2, code 17; M = RNE(|u| * 2), max 3
        (F(0), 0),             # u = 0.1875 -> 0.375 -> 0
        (F(0), 0),             # u = -0.15625 -> 0.3125 -> 0 -> +0
        (F(1), 2),             # u = 1.25 -> 2.5 tie -> 2 -> 1.0
        (F(3, 2), 3),          # u = 1.75 -> 3.5 -> 4 -> saturates to 3
        (F(-1), 0b110),        # u = -0.75 -> 1.5 tie -> 2 -> -1.0
    ]),
    ("ms-fp8", [2.0**20, 2.0**10], 30, [
        # max 2^20: s = 20 -> clamped to 15 (5-bit scale), code 30
        (F(3, 2), 3),          # u = 32 -> 64 -> saturates to 3: 1.5 * 2^15
        (F(0), 0),             # u = 2^-5 -> 2^-4 -> 0
    ]),
    ("ms-fp9", [2.0**-20], 0, [
        # max 2^-20: s = -20 -> clamped to -15, code 0; u = 2^-5 -> 2^-3 -> 0
        (F(0), 0),
    ]),
    ("msfp16", [1.0, 0.01, -0.5078125], 127, [
        # block of 16, 8-bit scale; max 1: s = 0, code 127; M = RNE(|u| * 64), max 127
        (F(64, 64), 64),
        (F(1, 64), 1),         # 0.64 -> 1
        (F(-32, 64), 0x80 | 32),  # 32.5 tie -> 32; sign bit 0x80
    ]),
    ("bfp24", [1.0, 1 / 3], 127, [
        # max 1: s = 0, code 127; M = RNE(|u| * 16384), max 32767
        (F(16384, 16384), 16384),
        (F(5461, 16384), 5461),  # 1/3 in binary32 = 0.3333333433 -> 5461.3335 -> 5461
    ]),
]


@pytest.mark.parametrize("name,inputs,scale_code,expected", BW_EXAMPLES,
                         ids=[f"{e[0]}-{i}" for i, e in enumerate(BW_EXAMPLES)])
def test_brainwave_worked_example(name, inputs, scale_code, expected):
    n = 16 if name == "msfp16" else 32
    x = np.zeros(n, np.float32)
    x[:len(inputs)] = inputs
    t = quantize(x, name, native_dim=32)
    assert int(t.scales[0]) == scale_code
    bias = 15 if name in ("ms-fp8", "ms-fp9") else 127
    d = dequantize(t)
    for i, (elem, code) in enumerate(expected):
        assert int(t.codes[i]) == code, i
        assert Fraction(float(d[i])) == elem * P2(scale_code - bias), i
