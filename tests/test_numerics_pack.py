"""Byte images (docs/numerics.md section 5) and int8 per-channel data (section 1.2).

Expected images are built here with a plain LSB-first bit packer on Python
integers: code k occupies bits k*w .. k*w + w - 1 of the element section read
as one little-endian integer.
"""
from __future__ import annotations

import math
import struct
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npu.numerics import FormatError, get_format, quantize
from npu.numerics.int8 import dequantize_int8_channels, quantize_int8_channels
from npu.numerics.pack import (pack_block_tensor, pack_floats, pack_int8_channels, packed_nbytes, tile_nbytes,
                               unpack_block_tensor, unpack_floats, unpack_int8_channels)
from npu.numerics.quantize import BlockTensor
from npu_toolkit.testing.exact import rne_binary32

# name: (element bits w, block B (0 = N), scale bits) -- docs/numerics.md section 1.1
SPEC = {
    "ms-fp8": (3, 0, 5), "ms-fp9": (4, 0, 5), "msfp12": (4, 16, 8), "msfp16": (8, 16, 8), "bfp24": (16, 0, 8),
    "mxint8": (8, 32, 8), "mxfp8_e4m3": (8, 32, 8), "mxfp8_e5m2": (8, 32, 8), "mxfp6_e2m3": (6, 32, 8),
    "mxfp6_e3m2": (6, 32, 8), "mxfp4_e2m1": (4, 32, 8),
}
NAMES = list(SPEC)


def block_len(name, nd):
    return nd if SPEC[name][1] == 0 else SPEC[name][1]


def my_pack_codes(codes, w) -> bytes:
    """LSB-first packing: code k at bits k*w .. k*w+w-1 of one little-endian integer, zero-padded."""
    acc = 0
    codes = [int(c) for c in np.asarray(codes).ravel()]
    for k, c in enumerate(codes):
        assert 0 <= c < (1 << w)
        acc |= c << (k * w)
    return acc.to_bytes((len(codes) * w + 7) // 8, "little")


def my_image(scales, codes, w) -> bytes:
    """Scale section (one byte per block, rows in order, blocks in order) + element section."""
    return bytes(int(s) for s in np.asarray(scales).ravel()) + my_pack_codes(codes, w)


def random_tensor(rng, name, rows, cols, nd, mode):
    w, _, sbits = SPEC[name]
    B = block_len(name, nd)
    if mode == "quantized":
        x = rng.standard_normal((rows, cols)) * np.exp2(rng.integers(-40, 40, (rows, 1)))
        return quantize(x.astype(np.float32), name, native_dim=nd)
    codes = rng.integers(0, 1 << w, (rows, cols)).astype(np.uint16 if w > 8 else np.uint8)
    scales = rng.integers(0, 1 << sbits, (rows, cols // B)).astype(np.uint8)       # NaN code included
    return BlockTensor(get_format(name), B, scales, codes)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("nd", [32, 64])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 5), nblk=st.integers(1, 3),
       mode=st.sampled_from(["quantized", "codes"]))
def test_pack_matches_independent_packer(name, nd, seed, rows, nblk, mode):
    rng = np.random.default_rng(seed)
    w = SPEC[name][0]
    cols = nblk * block_len(name, nd)
    t = random_tensor(rng, name, rows, cols, nd, mode)
    img = pack_block_tensor(t)
    assert img == my_image(t.scales, t.codes, w)
    assert len(img) == packed_nbytes(name, rows, cols, nd) == rows * (cols // block_len(name, nd)) + \
        math.ceil(rows * cols * w / 8)
    back = unpack_block_tensor(img, name, rows, cols, nd)
    assert back.fmt is get_format(name) and back.block == t.block
    np.testing.assert_array_equal(back.scales, t.scales)
    np.testing.assert_array_equal(back.codes.astype(np.int64), t.codes.astype(np.int64))
    assert back.codes.shape == (rows, cols) and back.scales.shape == t.scales.shape


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("nd", [32, 64])
def test_tile_image(name, nd):
    """A weight tile is an N x N block tensor."""
    rng = np.random.default_rng(nd)
    w, _, sbits = SPEC[name]
    B = block_len(name, nd)
    t = random_tensor(rng, name, nd, nd, nd, "quantized")
    img = pack_block_tensor(t)
    assert len(img) == tile_nbytes(name, nd) == nd * nd // B + math.ceil(nd * nd * w / 8)
    assert img == my_image(t.scales, t.codes, w)
    if sbits == 5:
        assert all(b < 32 for b in img[: nd * nd // B])         # 5-bit scales: top bits zero


@pytest.mark.parametrize("name", NAMES)
def test_tile_nbytes_formula(name):
    w = SPEC[name][0]
    for n in (32, 64, 128, 256, 512):
        B = block_len(name, n)
        assert tile_nbytes(name, n) == n * n // B + (n * n * w + 7) // 8
        assert tile_nbytes(get_format(name), n) == tile_nbytes(name, n)


def test_hand_worked_images():
    # ms-fp8 (w = 3), one block of 8 (N = 8), scale code 17, codes 1..7, 0:
    #   bits 0-2 = 001, 3-5 = 010, 6-8 = 011, 9-11 = 100, 12-14 = 101, 15-17 = 110, 18-20 = 111, 21-23 = 000
    #   byte0 = 1 + 2<<3 + (3 & 3)<<6 = 1 + 16 + 192 = 0xD1
    #   byte1 = (3 >> 2) + 4<<1 + 5<<4 + (6 & 1)<<7 = 0 + 8 + 80 + 0 = 0x58
    #   byte2 = (6 >> 1) + 7<<2 + 0<<5 = 3 + 28 = 0x1F
    t = BlockTensor(get_format("ms-fp8"), 8, np.array([[17]], np.uint8), np.array([[1, 2, 3, 4, 5, 6, 7, 0]], np.uint8))
    assert pack_block_tensor(t) == bytes([17, 0xD1, 0x58, 0x1F])
    # ms-fp8 with N = 5: 15 bits of ones -> 0xFF, 0x7F (the 16th bit is padding, zero)
    t = BlockTensor(get_format("ms-fp8"), 5, np.array([[3]], np.uint8), np.full((1, 5), 7, np.uint8))
    assert pack_block_tensor(t) == bytes([3, 0xFF, 0x7F])
    assert unpack_block_tensor(bytes([3, 0xFF, 0x7F]), "ms-fp8", 1, 5, 5).codes.tolist() == [[7] * 5]
    # mxfp4: two codes per byte, code 0 in the low nibble: (1, 2) -> 0x21, (0xF, 0) -> 0x0F
    codes = np.zeros((1, 32), np.uint8)
    codes[0, :3] = [0x1, 0x2, 0xF]
    img = pack_block_tensor(BlockTensor(get_format("mxfp4_e2m1"), 32, np.array([[127]], np.uint8), codes))
    assert img[:3] == bytes([127, 0x21, 0x0F]) and len(img) == 1 + 16 and not any(img[3:])
    # mxfp6 (w = 6): codes 0x3F, 0x01, 0x2A, 0x15
    #   byte0 = 0x3F | (0x01 & 3) << 6 = 0x7F ; byte1 = (0x01 >> 2) | (0x2A & 0xF) << 4 = 0xA0
    #   byte2 = (0x2A >> 4) | 0x15 << 2 = 0x02 | 0x54 = 0x56
    codes = np.zeros((1, 32), np.uint8)
    codes[0, :4] = [0x3F, 0x01, 0x2A, 0x15]
    img = pack_block_tensor(BlockTensor(get_format("mxfp6_e2m3"), 32, np.array([[9]], np.uint8), codes))
    assert img[:4] == bytes([9, 0x7F, 0xA0, 0x56]) and len(img) == 1 + 24
    # bfp24 (w = 16): little-endian 16-bit codes; two rows -> scale bytes first, row by row
    codes = np.zeros((2, 32), np.uint16)
    codes[0, 0], codes[1, 31] = 0x1234, 0xBEEF
    img = pack_block_tensor(BlockTensor(get_format("bfp24"), 32, np.array([[1], [2]], np.uint8), codes))
    assert img[:4] == bytes([1, 2, 0x34, 0x12]) and img[-2:] == bytes([0xEF, 0xBE]) and len(img) == 2 + 128


@pytest.mark.parametrize("name", NAMES)
def test_wrong_image_length_raises(name):
    rng = np.random.default_rng(5)
    t = random_tensor(rng, name, 4, 64, 32, "codes")
    img = pack_block_tensor(t)
    for bad in (img[:-1], img[: len(img) // 2], b"", img + b"\0", img + img):
        with pytest.raises(FormatError, match=rf"needs {len(img)} bytes, got {len(bad)}"):
            unpack_block_tensor(bad, name, 4, 64, 32)


def test_pack_interface_errors():
    with pytest.raises(FormatError):
        packed_nbytes("mxint8", 2, 48, 32)                     # 48 is not a multiple of the block
    with pytest.raises(FormatError):
        unpack_block_tensor(b"\0" * 100, "fp16", 2, 32, 32)    # not a block format
    t = quantize(np.ones((2, 2, 32), np.float32), "mxint8")
    with pytest.raises(FormatError):
        pack_block_tensor(t)                                   # 3-D


# --------------------------------------------------------------------------
# Scalar-format vectors
FLOATS = {"fp16": (np.float16, np.uint16, 2), "bf16": (ml_dtypes.bfloat16, np.uint16, 2),
          "fp32": (np.float32, np.uint32, 4)}


@pytest.mark.parametrize("name", list(FLOATS))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_pack_floats(name, data):
    dt, ut, nb = FLOATS[name]
    bits = data.draw(st.lists(st.integers(0, (1 << (8 * nb)) - 1), min_size=0, max_size=40))
    v = np.array(bits, np.uint64).astype(ut).view(dt)
    img = pack_floats(v, name)
    assert img == b"".join(b.to_bytes(nb, "little") for b in bits)      # IEEE encodings, element 0 first
    back = unpack_floats(img, name)
    assert back.dtype == np.dtype(dt)
    assert back.view(ut).tolist() == bits
    if bits:
        assert unpack_floats(img, name, count=1).view(ut).tolist() == bits[:1]
    with pytest.raises(FormatError):
        unpack_floats(img + b"\0", name)                 # not a whole number of elements


def test_pack_floats_hand_worked():
    # fp16 1.0 = 0x3C00 -> 00 3C ; -2.0 = 0xC000 -> 00 C0
    assert pack_floats(np.array([1.0, -2.0], np.float16), "fp16") == bytes([0x00, 0x3C, 0x00, 0xC0])
    # bf16 1.0 = 0x3F80 -> 80 3F
    assert pack_floats(np.array([1.0], ml_dtypes.bfloat16), "bf16") == bytes([0x80, 0x3F])
    assert pack_floats(np.array([1.5], np.float32), "fp32") == struct.pack("<f", 1.5)
    with pytest.raises(FormatError):
        pack_floats(np.zeros(4), "mxint8")


# --------------------------------------------------------------------------
# int8 per output channel
def rne_int(x: Fraction) -> int:
    f = x.numerator // x.denominator
    r = x - f
    return f + 1 if (r > Fraction(1, 2) or (r == Fraction(1, 2) and f % 2)) else f


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 6), cols=st.integers(1, 40))
def test_int8_channels(seed, rows, cols):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, cols)) * np.exp2(rng.integers(-30, 30, (rows, 1)))).astype(np.float32)
    w[rng.random((rows, cols)) < 0.1] = 0.0
    if rows > 1:
        w[rng.integers(0, rows)] = 0.0                         # an all-zero row
    scales, q = quantize_int8_channels(w)
    assert scales.dtype == np.float32 and q.dtype == np.int8 and q.shape == (rows, cols)
    for r in range(rows):
        amax = max(abs(Fraction(float(v))) for v in w[r])
        s = Fraction(float(scales[r]))
        # scale_r = max |w_r| / 127 as a binary32 (1.0 for an all-zero row)
        assert float(s) == (rne_binary32(amax / 127) if amax else 1.0)
        for j in range(cols):
            v = Fraction(float(w[r, j]))
            qq = int(q[r, j])
            assert -127 <= qq <= 127
            # the error bound |w - q s| <= s/2 and the doc's single rounding of the exact quotient
            assert abs(v - qq * s) <= s / 2, (r, j)
            assert qq == max(-127, min(127, rne_int(v / s))), (r, j)
    # decoding: q * scale as binary32
    d = dequantize_int8_channels(scales, q)
    assert d.dtype == np.float32
    for r in range(rows):
        for j in range(cols):
            want = Fraction(int(q[r, j])) * Fraction(float(scales[r]))
            assert d[r, j] == (np.float32(0) if want == 0 else np.float32(math.copysign(
                rne_binary32(abs(want)), float(want))))
    # byte image: rows binary32 scales (little-endian), then the codes row-major
    img = pack_int8_channels(scales, q)
    assert img == b"".join(struct.pack("<f", float(s)) for s in scales) + bytes(int(c) & 0xFF for c in q.ravel())
    s2, q2 = unpack_int8_channels(img, rows, cols)
    np.testing.assert_array_equal(s2.view(np.uint32), scales.view(np.uint32))
    np.testing.assert_array_equal(q2, q)
    with pytest.raises(FormatError):
        unpack_int8_channels(img[:-1], rows, cols)


def test_int8_hand_worked():
    # row [127, -63.5, 0.5, 1.5]: scale = 127/127 = 1; codes RNE: 127, -64 (tie -> even), 0 (tie), 2 (tie)
    s, q = quantize_int8_channels(np.array([[127.0, -63.5, 0.5, 1.5], [0, 0, 0, 0]], np.float32))
    assert s.tolist() == [1.0, 1.0]
    assert q.tolist() == [[127, -64, 0, 2], [0, 0, 0, 0]]
    with pytest.raises(FormatError):
        quantize_int8_channels(np.zeros(4, np.float32))


def test_int8_single_rounding_near_a_tie():
    # scale = RNE32(100 / 127) = 0.787401556968689 (binary32); w = 1.9685039520263672 (binary32)
    # exact w / scale = 2.5000000757 -> RNE -> 3 ; |w - 3 * scale| = 0.49999992 * scale <= scale / 2
    # (in binary32, w / scale rounds to 2.5 exactly, a tie, and RNE then gives 2: |w - 2 scale| > scale / 2)
    s, q = quantize_int8_channels(np.array([[100.0, 1.9685039520263672]], np.float32))
    assert float(s[0]) == rne_binary32(Fraction(100, 127))
    assert int(q[0, 1]) == rne_int(Fraction(1.9685039520263672) / Fraction(float(s[0]))) == 3
