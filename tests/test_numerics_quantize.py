"""Block quantisation against a plain-Python transcription of docs/numerics.md section 2.

The reference below works block by block on exact integers: every binary32
input is ``(-1)^sign * n * 2^k`` with integers ``n, k``, so ``u = v / 2^s`` and
its rounding onto the element grid are integer shifts with an explicit
round-half-to-even.  Element *codes* of minifloats are taken from ml_dtypes
(the doc names it as the encoding authority) for the exact element value the
reference computes; decoded values are computed here, not with the package.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npu.numerics import FormatError, dequantize, fake_quantize, get_format, quantize
from npu.numerics.quantize import BlockTensor

# --------------------------------------------------------------------------
# Section 1.1 / 2 transcribed.  B = 0: one native vector.
SPEC = {
    # name: kind, element bits, B, scale bits, bias, emax_elem, (f, mag_max) or (mbits, emin, largest, dtype)
    "ms-fp8": ("sm", 3, 0, 5, 15, 0, (1, 3)),
    "ms-fp9": ("sm", 4, 0, 5, 15, 0, (2, 7)),
    "msfp12": ("sm", 4, 16, 8, 127, 0, (2, 7)),
    "msfp16": ("sm", 8, 16, 8, 127, 0, (6, 127)),
    "bfp24": ("sm", 16, 0, 8, 127, 0, (14, 32767)),
    "mxint8": ("int", 8, 32, 8, 127, 0, (6, 127)),
    "mxfp8_e4m3": ("fp", 8, 32, 8, 127, 8, (3, -6, Fraction(448), ml_dtypes.float8_e4m3fn)),
    "mxfp8_e5m2": ("fp", 8, 32, 8, 127, 15, (2, -14, Fraction(57344), ml_dtypes.float8_e5m2)),
    "mxfp6_e2m3": ("fp", 6, 32, 8, 127, 2, (3, 0, Fraction(15, 2), ml_dtypes.float6_e2m3fn)),
    "mxfp6_e3m2": ("fp", 6, 32, 8, 127, 4, (2, -2, Fraction(28), ml_dtypes.float6_e3m2fn)),
    "mxfp4_e2m1": ("fp", 4, 32, 8, 127, 2, (1, 0, Fraction(6), ml_dtypes.float4_e2m1fn)),
}
NATIVE_FORMATS = [n for n, s in SPEC.items() if s[2] == 0]

# (format, native_dim) cases: native-vector formats at N = 32 and 64.
CASES = [(n, nd) for n in SPEC for nd in ((32, 64) if SPEC[n][2] == 0 else (None,))]
CASE_IDS = [f"{n}-N{nd}" if nd else n for n, nd in CASES]


def block_len(name, native_dim):
    b = SPEC[name][2]
    return native_dim if b == 0 else b


def scale_range(name):
    sbits = SPEC[name][3]
    return (-15, 15, 31) if sbits == 5 else (-127, 127, 255)


def f32_parts(v: float):
    """v (a binary32 value held in a Python float) = (-1)^neg * n * 2^k."""
    num, den = abs(v).as_integer_ratio()
    return v < 0 or (v == 0 and math.copysign(1.0, v) < 0), num, -(den.bit_length() - 1)


def rne_shift(n: int, sh: int) -> int:
    """RNE(n * 2^-sh) for an integer n >= 0."""
    if sh <= 0:
        return n << -sh
    q, r = n >> sh, n & ((1 << sh) - 1)
    half = 1 << (sh - 1)
    if r > half or (r == half and q & 1):
        q += 1
    return q


def ref_quantize_block(vals, name):
    """(scale code, element codes, decoded float64 values) of one block, per section 2."""
    kind, bits, _, _, bias, emax_elem, params = SPEC[name]
    s_min, s_max, nan_code = scale_range(name)
    # step 1: NaN / inf anywhere -> NaN scale, element codes 0
    if any(not math.isfinite(v) for v in vals):
        return nan_code, [0] * len(vals), [math.nan] * len(vals)
    # step 2: shared exponent
    a = max(abs(v) for v in vals)
    if a == 0:
        s = s_min
    else:
        s = min(max(math.frexp(a)[1] - 1 - emax_elem, s_min), s_max)   # frexp: a = m 2^e, m in [0.5, 1)
    codes, values = [], []
    for v in vals:
        neg, n, k = f32_parts(v)          # |u| = n * 2^(k - s)
        if kind in ("sm", "int"):
            f, mag_max = params
            mag = min(rne_shift(n, -(k - s + f)), mag_max)     # M = RNE(|u| 2^f), clamped
            qexp = -f
            if mag == 0:
                code = 0                                       # step 4: +0
            elif kind == "sm":
                code = ((1 << (bits - 1)) | mag) if neg else mag
            else:
                code = ((-mag) & 0xFF) if neg else mag
        else:
            mbits, emin, largest, dtype = params
            if n == 0:
                mag, qexp = 0, 0
            else:
                e = max(n.bit_length() - 1 + k - s, emin)     # floor(log2 |u|), at least emin_elem
                qexp = e - mbits
                mag = rne_shift(n, qexp - (k - s))             # RNE(|u| / 2^(e-m))
                if Fraction(mag) * Fraction(2) ** qexp > largest:   # saturate to the largest element
                    mag, qexp = largest.numerator, -(largest.denominator.bit_length() - 1)
            elem = math.ldexp(mag, qexp)
            if mag == 0:
                code = 0
            else:
                code = int(np.array(-elem if neg else elem, np.float64).astype(dtype).view(np.uint8))
        value = math.ldexp(mag, qexp + s)
        values.append(-value if (neg and mag) else value)
        codes.append(code)
    return s + bias, codes, values


def ref_quantize(x: np.ndarray, name, native_dim):
    """Reference over a 2-D float32 array (blocks along the last axis)."""
    B = block_len(name, native_dim)
    rows, K = x.shape
    scales = np.zeros((rows, K // B), np.int64)
    codes = np.zeros((rows, K), np.int64)
    values = np.zeros((rows, K), np.float64)
    xl = x.astype(np.float64).tolist()
    for r in range(rows):
        for b in range(K // B):
            sc, cs, vs = ref_quantize_block(xl[r][b * B:(b + 1) * B], name)
            scales[r, b] = sc
            codes[r, b * B:(b + 1) * B] = cs
            values[r, b * B:(b + 1) * B] = vs
    return scales, codes, values


def same_values(a, b):
    """Bitwise-equal float64 arrays, except that any NaN equals any NaN (+0 and -0 differ)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    return np.array_equal(np.where(np.isnan(a), 0.0, a).view(np.int64), np.where(np.isnan(b), 0.0, b).view(np.int64))


# --------------------------------------------------------------------------
# Data generation: blocks of different "kinds" so every rule gets exercised.
KINDS = ("zero", "wide", "narrow", "ties", "rawbits", "subnormal", "huge", "grid", "single")


def make_block(rng, kind, B, centre, name):
    if kind == "zero":
        v = np.where(rng.random(B) < 0.5, -0.0, 0.0)
    elif kind == "wide":       # magnitudes spread over 40 binades below 2^centre
        e = rng.integers(centre - 40, centre + 1, B)
        m = rng.integers(1 << 23, 1 << 24, B) / float(1 << 23)
        v = np.ldexp(m, e) * rng.choice([-1.0, 1.0], B)
        v[rng.random(B) < 0.1] = 0.0
    elif kind == "narrow":     # few mantissa bits, close exponents: many exact ties
        e = rng.integers(centre - 4, centre + 1, B)
        v = np.ldexp(rng.integers(0, 32, B) / 16.0, e) * rng.choice([-1.0, 1.0], B)
    elif kind == "ties":       # odd multiples of half a quantum of the element grid, around 2^centre
        v = np.ldexp(rng.integers(-64, 65, B) + 0.5, centre - 8)
    elif kind == "rawbits":    # any finite binary32
        bits = rng.integers(0, 1 << 32, B, dtype=np.uint64).astype(np.uint32)
        bits = np.where((bits & 0x7F800000) == 0x7F800000, bits & 0xBFFFFFFF, bits)
        v = bits.view(np.float32).astype(np.float64)
    elif kind == "subnormal":  # binary32 subnormals (and a few normals near 2^-126)
        v = np.ldexp(rng.integers(-(1 << 24), 1 << 24, B).astype(np.float64), -149)
    elif kind == "huge":       # close to the binary32 maximum
        v = np.ldexp(rng.integers(1 << 23, 1 << 24, B) / float(1 << 23), rng.integers(120, 128, B))
        v *= rng.choice([-1.0, 1.0], B)
    elif kind == "grid":       # exact fixed points: element values times 2^s
        x = np.ldexp(rng.standard_normal(B), min(max(centre, -140), 120)).astype(np.float32)
        t = quantize(x, name, native_dim=B)
        v = dequantize(t)
    else:                      # one non-zero value, the rest zero
        v = np.zeros(B)
        v[rng.integers(0, B)] = np.ldexp(rng.uniform(1, 2), centre) * rng.choice([-1.0, 1.0])
    return np.asarray(v, np.float64).astype(np.float32)


@st.composite
def block_arrays(draw, name, native_dim, max_rows=2, max_blocks=3):
    B = block_len(name, native_dim)
    rows = draw(st.integers(1, max_rows))
    nblk = draw(st.integers(1, max_blocks))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=rows * nblk, max_size=rows * nblk))
    centres = draw(st.lists(st.integers(-150, 127), min_size=rows * nblk, max_size=rows * nblk))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    blocks = [make_block(rng, k, B, c, name) for k, c in zip(kinds, centres)]
    return np.concatenate(blocks).reshape(rows, nblk * B)


def q(x, name, nd):
    return quantize(x, name, native_dim=nd)


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------
# (a) the implementation equals the reference: scale codes, element codes, decoded values
@pytest.mark.parametrize("name,nd", CASES, ids=CASE_IDS)
@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_matches_reference(name, nd, data):
    x = data.draw(block_arrays(name, nd))
    t = q(x, name, nd)
    rs, rc, rv = ref_quantize(x, name, nd)
    assert t.block == block_len(name, nd)
    np.testing.assert_array_equal(t.scales.astype(np.int64), rs)
    np.testing.assert_array_equal(t.codes.astype(np.int64), rc)
    assert same_values(dequantize(t), rv)


@pytest.mark.parametrize("name,nd", CASES, ids=CASE_IDS)
def test_matches_reference_bulk(name, nd):
    """A larger deterministic mix of every block kind."""
    rng = np.random.default_rng(1234)
    B = block_len(name, nd)
    blocks = [make_block(rng, KINDS[i % len(KINDS)], B, int(rng.integers(-150, 128)), name) for i in range(96)]
    x = np.concatenate(blocks).reshape(8, -1)
    t = q(x, name, nd)
    rs, rc, rv = ref_quantize(x, name, nd)
    np.testing.assert_array_equal(t.scales.astype(np.int64), rs)
    np.testing.assert_array_equal(t.codes.astype(np.int64), rc)
    assert same_values(dequantize(t), rv)
    assert same_values(fake_quantize(x, name, nd), rv)


# (b) quantised values are fixed points
@pytest.mark.parametrize("name,nd", CASES, ids=CASE_IDS)
@settings(max_examples=30, **SETTINGS)
@given(data=st.data())
def test_round_trip_fixed_point(name, nd, data):
    x = data.draw(block_arrays(name, nd))
    t = q(x, name, nd)
    d = dequantize(t)
    t2 = q(d, name, nd)
    np.testing.assert_array_equal(t2.scales, t.scales)
    np.testing.assert_array_equal(t2.codes, t.codes)
    assert same_values(dequantize(t2), d)


# (c) error bound: half a quantum at the element's exponent, unless saturated
@pytest.mark.parametrize("name,nd", CASES, ids=CASE_IDS)
@settings(max_examples=30, **SETTINGS)
@given(data=st.data())
def test_error_bound(name, nd, data):
    kind, _, _, _, bias, emax_elem, params = SPEC[name]
    x = data.draw(block_arrays(name, nd))
    t = q(x, name, nd)
    d = dequantize(t)
    B = block_len(name, nd)
    if kind == "fp":
        mbits, emin, largest, _ = params
    else:
        f, mag_max = params
        largest = Fraction(mag_max, 1 << f)
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            s = int(t.scales[r, j // B]) - bias
            v, qv = Fraction(float(x[r, j])), Fraction(float(d[r, j]))
            X = Fraction(2) ** s
            if abs(v) > largest * X:                    # saturated: the largest element, sign kept
                assert qv == (largest * X if v > 0 else -largest * X)
                continue
            if kind == "fp":
                u = abs(v) / X
                e = emin if u == 0 else max(_floor_log2(u), emin)
                quantum = Fraction(2) ** (e - mbits) * X
            else:
                quantum = Fraction(1, 1 << f) * X
            assert abs(qv - v) <= quantum / 2, (r, j, float(v), float(qv))


def _floor_log2(a: Fraction) -> int:
    e = a.numerator.bit_length() - a.denominator.bit_length()
    return e - 1 if Fraction(2) ** e > a else e


# (d) NaN / inf blocks
@pytest.mark.parametrize("name,nd", CASES, ids=CASE_IDS)
@settings(max_examples=25, **SETTINGS)
@given(data=st.data(), bad=st.sampled_from([math.nan, -math.nan, math.inf, -math.inf]))
def test_nonfinite_blocks(name, nd, data, bad):
    x = data.draw(block_arrays(name, nd, max_rows=2, max_blocks=4))
    B = block_len(name, nd)
    nblk = x.shape[1] // B
    r = data.draw(st.integers(0, x.shape[0] - 1))
    blk = data.draw(st.integers(0, nblk - 1))
    y = x.copy()
    for pos in data.draw(st.lists(st.integers(0, B - 1), min_size=1, max_size=3)):
        y[r, blk * B + pos] = bad
    t, t0 = q(y, name, nd), q(x, name, nd)
    nan_code = scale_range(name)[2]
    assert t.scales[r, blk] == nan_code
    assert not t.codes[r, blk * B:(blk + 1) * B].any()            # every element code is 0
    d = dequantize(t)
    assert np.isnan(d[r, blk * B:(blk + 1) * B]).all()
    # every other block is exactly what it was without the NaN/inf
    keep = np.ones(t.scales.shape, bool)
    keep[r, blk] = False
    keep_c = np.repeat(keep, B, axis=1)
    np.testing.assert_array_equal(t.scales[keep], t0.scales[keep])
    np.testing.assert_array_equal(t.codes[keep_c], t0.codes[keep_c])
    assert not np.isnan(d[keep_c]).any()
    # and the reference agrees on the whole tensor
    rs, rc, rv = ref_quantize(y, name, nd)
    np.testing.assert_array_equal(t.scales.astype(np.int64), rs)
    np.testing.assert_array_equal(t.codes.astype(np.int64), rc)
    assert same_values(d, rv)


@pytest.mark.parametrize("name,nd", CASES, ids=CASE_IDS)
def test_many_nonfinite_blocks(name, nd):
    """Many NaN/inf blocks in one tensor (also a float64 input beyond binary32: inf, so a NaN block)."""
    B = block_len(name, nd)
    x = np.full((64, 8 * B), np.nan, np.float32)
    x[1::4] = np.inf
    x[::2] = 1.0
    t = q(x, name, nd)
    nan_code = scale_range(name)[2]
    assert (t.scales[1::2] == nan_code).all() and not t.codes[1::2].any()
    assert (t.scales[::2] == SPEC[name][4] - SPEC[name][5]).all()     # max 1.0 -> s = 0 - emax_elem
    big = np.zeros(2 * B)
    big[3] = 1e39
    with np.errstate(over="ignore"):
        tb = quantize(big, name, nd)
    assert tb.scales[0] == nan_code and tb.scales[1] == 0


_BOUNDSCHECK_CHILD = r"""
import numpy as np
from npu.numerics import quantize
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 256)).astype(np.float32)
x[1, 40] = np.nan
x[3, 0] = np.inf
x[5] = np.nan
x[7, 255] = -np.inf
for name in ("ms-fp9", "bfp24", "mxint8", "mxfp8_e4m3", "mxfp4_e2m1"):
    t = quantize(x, name, native_dim=32)
    assert t.scales[5].tolist() == [t.fmt.scale_nan] * (256 // t.block), name
print("ok")
"""


@pytest.mark.slow
def test_kernel_stays_in_bounds(tmp_path):
    """The quantisation kernel, compiled with Numba bounds checking, indexes only its own arrays.

    (Out-of-bounds writes are silent without bounds checking: they corrupt the
    heap and crash the interpreter later, possibly in an unrelated test.)
    """
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", _BOUNDSCHECK_CHILD], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


@pytest.mark.parametrize("name,nd", CASES, ids=CASE_IDS)
def test_nan_scale_decodes_to_nan(name, nd):
    B = block_len(name, nd)
    _, _, nan_code = scale_range(name)
    codes = np.zeros((1, 2 * B), np.uint16 if SPEC[name][1] > 8 else np.uint8)
    codes[0, 1] = 1
    codes[0, B + 1] = 1
    t = BlockTensor(get_format(name), B,
                    np.array([[nan_code, SPEC[name][4]]], np.uint8), codes)
    d = dequantize(t)
    assert np.isnan(d[0, :B]).all()
    assert not np.isnan(d[0, B:]).any()


# (e) every zero element is +0 (code 0, decoded +0.0)
@pytest.mark.parametrize("name,nd", CASES, ids=CASE_IDS)
@settings(max_examples=20, **SETTINGS)
@given(data=st.data())
def test_zero_is_positive(name, nd, data):
    x = data.draw(block_arrays(name, nd))
    x = -np.abs(x)                         # all negative (or -0.0)
    t = q(x, name, nd)
    d = dequantize(t)
    zero = d == 0
    assert (t.codes[zero] == 0).all()
    assert not np.signbit(d[zero]).any()


@pytest.mark.parametrize("name,nd", CASES, ids=CASE_IDS)
def test_negative_zero_and_tiny_negatives(name, nd):
    B = block_len(name, nd)
    x = np.full(B, -0.0, np.float32)
    t = q(x, name, nd)
    assert not t.codes.any()
    assert t.scales[0] == 0                                   # a = 0 -> s = s_min -> code 0
    assert not np.signbit(dequantize(t)).any()
    x[0] = 1.0
    x[1:] = -1e-30                                            # far below half the smallest quantum
    t = q(x, name, nd)
    assert not t.codes[1:].any()
    assert not np.signbit(dequantize(t)[1:]).any()


# (f) blocks are independent
@pytest.mark.parametrize("name,nd", CASES, ids=CASE_IDS)
@settings(max_examples=20, **SETTINGS)
@given(data=st.data())
def test_blocks_independent(name, nd, data):
    x = data.draw(block_arrays(name, nd, max_rows=2, max_blocks=4))
    B = block_len(name, nd)
    nblk = x.shape[1] // B
    r = data.draw(st.integers(0, x.shape[0] - 1))
    b = data.draw(st.integers(0, nblk - 1))
    y = x.copy()
    y[r, b * B:(b + 1) * B] = make_block(np.random.default_rng(data.draw(st.integers(0, 1000))),
                                         data.draw(st.sampled_from(KINDS)), B,
                                         data.draw(st.integers(-150, 127)), name)
    tx, ty = q(x, name, nd), q(y, name, nd)
    keep = np.ones(tx.scales.shape, bool)
    keep[r, b] = False
    np.testing.assert_array_equal(tx.scales[keep], ty.scales[keep])
    keep_c = np.repeat(keep, B, axis=1)
    np.testing.assert_array_equal(tx.codes[keep_c], ty.codes[keep_c])


# --------------------------------------------------------------------------
# interface rules
@pytest.mark.parametrize("name", NATIVE_FORMATS)
def test_native_formats_need_native_dim(name):
    with pytest.raises(FormatError, match="native_dim"):
        quantize(np.zeros(64, np.float32), name)


@pytest.mark.parametrize("name,nd", CASES, ids=CASE_IDS)
def test_length_not_multiple_of_block(name, nd):
    B = block_len(name, nd)
    with pytest.raises(FormatError, match="multiple"):
        quantize(np.zeros(B + 1, np.float32), name, native_dim=nd)
    with pytest.raises(FormatError):
        quantize(np.zeros((3, 2 * B - 8), np.float32), name, native_dim=nd)


def test_scalar_and_non_block_formats_rejected():
    with pytest.raises(FormatError):
        quantize(np.float32(1.0), "mxfp8_e4m3")
    with pytest.raises(FormatError):
        quantize(np.zeros(32, np.float32), "fp16")
    with pytest.raises(FormatError):
        quantize(np.zeros(32, np.float32), "no-such-format")


@pytest.mark.parametrize("name,nd", CASES, ids=CASE_IDS)
def test_other_input_types_first_become_binary32(name, nd):
    """Section 2: 'other inputs are first converted to binary32' (RNE, overflow to infinity)."""
    B = block_len(name, nd)
    rng = np.random.default_rng(7)
    x64 = rng.standard_normal(2 * B) * np.exp2(rng.integers(-30, 30, 2 * B))
    t64, t32 = quantize(x64, name, nd), quantize(x64.astype(np.float32), name, nd)
    np.testing.assert_array_equal(t64.scales, t32.scales)
    np.testing.assert_array_equal(t64.codes, t32.codes)
    x16 = rng.standard_normal(2 * B).astype(np.float16)
    t16 = quantize(x16, name, nd)
    np.testing.assert_array_equal(t16.codes, quantize(x16.astype(np.float32), name, nd).codes)


@pytest.mark.parametrize("name,nd", CASES, ids=CASE_IDS)
def test_shapes(name, nd):
    B = block_len(name, nd)
    x = np.random.default_rng(3).standard_normal((2, 3, 2 * B)).astype(np.float32)
    t = quantize(x, name, nd)
    assert t.shape == (2, 3, 2 * B)
    assert t.codes.shape == (2, 3, 2 * B)
    assert t.scales.shape == (2, 3, 2)
    flat = quantize(x.reshape(6, 2 * B), name, nd)
    np.testing.assert_array_equal(t.codes.reshape(6, -1), flat.codes)
    np.testing.assert_array_equal(t.scales.reshape(6, -1), flat.scales)
    assert dequantize(t).shape == x.shape
    assert same_values(t.values(), dequantize(t))
