"""MFU arithmetic (docs/numerics.md section 4) against exact and step-by-step references.

* add / sub / mul: the exact rational result (with IEEE 754's special cases
  for zeros, infinities and NaN written out here) rounded by ``rne_to`` -- a
  generic round-to-nearest-even onto (precision, emin, emax) written from
  scratch -- and compared bit for bit, NaNs as the canonical NaN.
* sigmoid / tanh: the 512-entry tables are rebuilt here from the doc's
  definition (50-digit decimal f and differences, then RNE to binary32), and
  the evaluation is replayed one binary32 operation at a time with numpy
  float32 scalars.
"""
from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npu.numerics import mfu
from npu_toolkit.testing.exact import rne_binary32, rne_to

# IEEE overflow / invalid / underflow are the point of several cases here.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# precision p (significand bits incl. the implicit one), emin, emax, numpy type, unsigned view type
FMT = {
    "fp16": (11, -14, 15, np.float16, np.uint16),
    "bf16": (8, -126, 127, ml_dtypes.bfloat16, np.uint16),
    "fp32": (24, -126, 127, np.float32, np.uint32),
}
CANON = {"fp16": 0x7E00, "bf16": 0x7FC0, "fp32": 0x7FC00000}
NAMES = list(FMT)


def encode(value, name) -> int:
    """Bits of a value exactly representable in ``name`` (a Fraction, +-inf, +-0.0 float, or 'nan')."""
    _, _, _, dt, ut = FMT[name]
    if isinstance(value, str):
        return CANON[name]
    return int(np.array(float(value), np.float64).astype(dt).view(ut))


def result_bits(exact_or_special, name, zero_sign=False):
    """Round and encode: NaN -> canonical; zero results use zero_sign; non-zero exact values are rounded."""
    p, emin, emax, _, _ = FMT[name]
    v = exact_or_special
    if isinstance(v, str):
        return CANON[name]
    if isinstance(v, float):                                  # infinities and signed zeros
        return encode(v, name)
    if v == 0:
        return encode(-0.0 if zero_sign else 0.0, name)
    r = rne_to(v, p, emin, emax)
    if isinstance(r, float):
        return encode(r, name)
    if r == 0:                                                # underflow keeps the sign of the exact result
        return encode(-0.0 if v < 0 else 0.0, name)
    return encode(r, name)


def op_bits(res, name) -> int:
    value, zero_negative = res
    return result_bits(value, name, zero_sign=zero_negative)


def ref_add(a: float, b: float, name):
    """IEEE a + b in the format: (value or special, sign of an exact-zero result)."""
    if math.isnan(a) or math.isnan(b):
        return "nan", False
    if math.isinf(a) or math.isinf(b):
        if math.isinf(a) and math.isinf(b) and (a > 0) != (b > 0):
            return "nan", False
        return (a if math.isinf(a) else b), False
    exact = Fraction(a) + Fraction(b)
    if exact == 0:
        # x + (-x) = +0 under RNE; (-0) + (-0) = -0
        both_neg_zero = a == 0 and b == 0 and math.copysign(1, a) < 0 and math.copysign(1, b) < 0
        return Fraction(0), both_neg_zero
    return exact, False


def ref_mul(a: float, b: float, name):
    if math.isnan(a) or math.isnan(b):
        return "nan", False
    neg = (math.copysign(1, a) < 0) != (math.copysign(1, b) < 0)
    if math.isinf(a) or math.isinf(b):
        if a == 0 or b == 0:
            return "nan", False
        return (-math.inf if neg else math.inf), False
    return Fraction(a) * Fraction(b), neg


def random_format_values(rng, name, n):
    """Values of the format from random bit patterns, plus near-equal / near-overflow / tiny companions."""
    _, _, _, dt, ut = FMT[name]
    width = 8 * np.dtype(ut).itemsize
    a = rng.integers(0, 1 << width, n, dtype=np.uint64).astype(ut)
    b = rng.integers(0, 1 << width, n, dtype=np.uint64).astype(ut)
    k = n // 4
    # b close to +-a: same exponent, a few low bits changed (cancellation, exact ties)
    b[:k] = (a[:k] ^ rng.integers(0, 64, k).astype(ut)) ^ (rng.integers(0, 2, k).astype(ut) << (width - 1))
    # both near the top of the range (overflow) and both tiny (subnormals / underflow)
    top = (np.array(0x7F, ut) << (width - 8)) if name != "fp16" else np.array(0x7800, ut)
    sl = slice(k, 2 * k)
    a[sl] = top | rng.integers(0, 1 << (width - 9), k).astype(ut)
    b[sl] = top | rng.integers(0, 1 << (width - 9), k).astype(ut)
    sl = slice(2 * k, 2 * k + k // 2)
    a[sl] = rng.integers(0, 1 << (width - 6), k // 2).astype(ut)
    b[sl] = rng.integers(0, 1 << (width - 6), k // 2).astype(ut) | (rng.integers(0, 2, k // 2).astype(ut) << (width - 1))
    return a.view(dt), b.view(dt)


def bits_of(arr, name):
    return np.asarray(arr).astype(FMT[name][3]).view(FMT[name][4])


def check_binary(name, a, b):
    with np.errstate(invalid="ignore"):
        xa = a.astype(np.float64).tolist()
        xb = b.astype(np.float64).tolist()
    with np.errstate(all="ignore"):
        got = {"add": bits_of(mfu.add(a, b, name), name), "sub": bits_of(mfu.sub(a, b, name), name),
               "bsub": bits_of(mfu.sub(b, a, name), name), "mul": bits_of(mfu.mul(a, b, name), name)}
    for i, (x, y) in enumerate(zip(xa, xb)):
        want = {"add": op_bits(ref_add(x, y, name), name),
                "sub": op_bits(ref_add(x, -y, name), name),
                "bsub": op_bits(ref_add(y, -x, name), name),
                "mul": op_bits(ref_mul(x, y, name), name)}
        for op in want:
            assert int(got[op][i]) == want[op], (op, name, x, y, hex(int(got[op][i])), hex(want[op]))


@pytest.mark.parametrize("name", NAMES)
def test_add_sub_mul_bulk(name):
    rng = np.random.default_rng(2024)
    a, b = random_format_values(rng, name, 2500)
    check_binary(name, a, b)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_add_sub_mul_hypothesis(name, data):
    ut = FMT[name][4]
    width = 8 * np.dtype(ut).itemsize
    n = data.draw(st.integers(1, 20))
    xs = data.draw(st.lists(st.integers(0, (1 << width) - 1), min_size=n, max_size=n))
    ys = data.draw(st.lists(st.integers(0, (1 << width) - 1), min_size=n, max_size=n))
    a = np.array(xs, np.uint64).astype(ut).view(FMT[name][3])
    b = np.array(ys, np.uint64).astype(ut).view(FMT[name][3])
    check_binary(name, a, b)


def test_binary_hand_worked():
    # fp16: 2048 + 1 = 2049 needs 12 bits; ulp at 2048 is 2, tie -> even -> 2048.  2048 + 3 -> 2051 -> tie -> 2052
    assert mfu.add(np.float16(2048), np.float16(1), "fp16") == 2048
    assert mfu.add(np.float16(2048), np.float16(3), "fp16") == 2052
    # fp16 overflow: 65504 + 16 = 65520 = max + half ulp (ulp 32): rounds to infinity
    assert mfu.add(np.float16(65504), np.float16(16), "fp16") == np.inf
    # 65504 + 8 rounds back to 65504
    assert mfu.add(np.float16(65504), np.float16(8), "fp16") == 65504
    # fp16 subnormals: 2^-24 * 0.5 -> tie between 0 and 2^-24 -> 0 (+0: positive product)
    r = mfu.mul(np.float16(2.0**-24), np.float16(0.5), "fp16")
    assert r == 0 and not np.signbit(r)
    r = mfu.mul(np.float16(-(2.0**-24)), np.float16(0.75), "fp16")    # 0.75 ulp -> -2^-24
    assert r == -(2.0**-24)
    # bf16: 1 + 2^-8 is a tie (ulp 2^-7) -> 1;  1 + 3 * 2^-8 -> tie -> 1 + 2^-6
    one = np.array(1.0, ml_dtypes.bfloat16)
    assert mfu.add(one, np.array(2.0**-8, ml_dtypes.bfloat16), "bf16") == 1.0
    assert mfu.add(one, np.array(3 * 2.0**-8, ml_dtypes.bfloat16), "bf16") == 1 + 2.0**-6
    # x - x = +0 ;  -0 - (+0) = -0
    r = mfu.sub(np.float32(5), np.float32(5), "fp32")
    assert r == 0 and not np.signbit(r)
    assert np.signbit(mfu.sub(np.float32(-0.0), np.float32(0.0), "fp32"))
    # inf - inf is the canonical NaN
    assert int(bits_of(mfu.sub(np.float16(np.inf), np.float16(np.inf), "fp16"), "fp16")) == 0x7E00


# --------------------------------------------------------------------------
# max / min / relu / conversions
SPECIALS = [0.0, -0.0, 1.0, -1.0, 2.5, -2.5, math.inf, -math.inf, math.nan, 1e-40, -1e-40, 65504.0]


@pytest.mark.parametrize("name", NAMES)
def test_max_min_relu_rules(name):
    dt = FMT[name][3]
    vals = np.array(SPECIALS, np.float64).astype(dt)
    # also a NaN with a non-canonical payload and a negative NaN
    ut = FMT[name][4]
    odd_nan = np.array(CANON[name] | 1, ut).view(dt)
    neg_nan = np.array(CANON[name] | (1 << (8 * np.dtype(ut).itemsize - 1)), ut).view(dt)
    vals = np.concatenate([vals, [odd_nan, neg_nan]]).astype(dt)
    a = np.repeat(vals, vals.size)
    b = np.tile(vals, vals.size)
    got = bits_of(mfu.maximum(a, b, name), name)
    got_min = bits_of(mfu.minimum(a, b, name), name)
    for i in range(a.size):
        x, y = float(a[i]), float(b[i])
        xb, yb = int(np.array(a[i]).view(ut)), int(np.array(b[i]).view(ut))
        nan = math.isnan(x) or math.isnan(y)
        assert int(got[i]) == (CANON[name] if nan else yb if y > x else xb), (x, y)        # y if y > x else x
        assert int(got_min[i]) == (CANON[name] if nan else yb if y < x else xb), (x, y)    # y if y < x else x
    got = bits_of(mfu.relu(vals, name), name)
    for i, v in enumerate(vals):
        fv = float(v)
        want = CANON[name] if math.isnan(fv) else (int(np.array(v).view(ut)) if fv > 0 else 0)
        assert int(got[i]) == want, fv
    # max(+0, -0) is +0 (x); max(-0, +0) is -0 (x: +0 > -0 is false); min likewise keeps x
    for f in (mfu.maximum, mfu.minimum):
        assert not np.signbit(f(np.array(0.0, dt), np.array(-0.0, dt), name))
        assert np.signbit(f(np.array(-0.0, dt), np.array(0.0, dt), name))
    # infinities: min(x, -inf) = -inf, min(x, +inf) = x, and the mirror for max
    one, inf = np.array(1.0, dt), np.array(np.inf, dt)
    assert mfu.minimum(one, -inf, name) == -np.inf and mfu.minimum(one, inf, name) == 1.0
    assert mfu.maximum(one, inf, name) == np.inf and mfu.maximum(one, -inf, name) == 1.0


def ordered_key(bits: np.ndarray, width: int) -> np.ndarray:
    """An integer that orders non-NaN encodings as their values (+0 and -0 both map to 0)."""
    b = bits.astype(np.int64)
    mag = b & ((1 << (width - 1)) - 1)
    return np.where(b >> (width - 1), -mag, mag)


@pytest.mark.parametrize("name", NAMES)
def test_max_min_against_integer_order(name):
    """max and min on many pairs against a model that compares encodings as integers, not floats.

    16-bit formats: every encoding as x against 64 values y (specials and random
    patterns); fp32: every pair of specials and a million random pairs, a quarter of them near each other.
    """
    p, _, _, dt, ut = FMT[name]
    width = 8 * np.dtype(ut).itemsize
    rng = np.random.default_rng(7)
    specials = np.array(SPECIALS, np.float64).astype(dt).view(ut)
    if width == 16:
        ys = np.concatenate([specials, rng.integers(0, 1 << 16, 64 - specials.size).astype(ut)])
        xb = np.tile(np.arange(1 << 16, dtype=np.uint32).astype(ut), ys.size)
        yb = np.repeat(ys, 1 << 16)
    else:
        xb = rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(ut)
        yb = rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(ut)
        k = xb.size // 4
        yb[:k] = xb[:k] ^ rng.integers(0, 4, k).astype(ut) ^ (rng.integers(0, 2, k).astype(ut) << 31)
        xb = np.concatenate([np.repeat(specials, specials.size), xb])
        yb = np.concatenate([np.tile(specials, specials.size), yb])
    exp_mask = ((1 << (width - p)) - 1) << (p - 1)
    frac_mask = (1 << (p - 1)) - 1
    x_nan, y_nan = (((b & exp_mask) == exp_mask) & ((b & frac_mask) != 0) for b in (xb, yb))
    either_nan = x_nan | y_nan
    kx, ky = ordered_key(xb, width), ordered_key(yb, width)
    x, y = xb.view(dt), yb.view(dt)
    for f, y_wins in ((mfu.maximum, ky > kx), (mfu.minimum, ky < kx)):
        want = np.where(either_nan, CANON[name], np.where(y_wins, yb, xb)).astype(ut)
        got = bits_of(f(x, y, name), name)
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (f.__name__, hex(int(xb[bad[0]])), hex(int(yb[bad[0]])), hex(int(got[bad[0]])))


@pytest.mark.parametrize("name", ["fp16", "bf16"])
@settings(max_examples=50, deadline=None)
@given(bits=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=50))
def test_scalar_register_rounding(name, bits):
    """A binary32 scalar-register value is rounded (RNE) to the format; NaN -> canonical NaN."""
    v = np.array(bits, np.uint64).astype(np.uint32).view(np.float32)
    with np.errstate(all="ignore"):
        got = np.array([int(bits_of(mfu.scalar(float(x), name), name)) for x in v])
        got2 = bits_of(mfu.to_format(v, name), name)
        got3 = bits_of(mfu.accumulator_to_format(v, name), name)
    for i, x in enumerate(v.astype(np.float64).tolist()):
        if math.isnan(x):
            want = CANON[name]
        elif math.isinf(x) or x == 0:
            want = encode(x, name)
        else:
            want = result_bits(Fraction(x), name)
        assert got[i] == want and got2[i] == want and got3[i] == want, (x, hex(int(got[i])), hex(want))


def test_fp32_nan_canonical():
    nan_bits = np.array([0x7F800001, 0xFFC00000, 0x7FFFFFFF], np.uint32).view(np.float32)
    for f in (mfu.to_format(nan_bits, "fp32"), mfu.add(nan_bits, np.float32(1), "fp32"),
              mfu.relu(nan_bits, "fp32"), mfu.sigmoid(nan_bits, "fp32"), mfu.tanh(nan_bits, "fp32")):
        assert (bits_of(f, "fp32") == 0x7FC00000).all()


# --------------------------------------------------------------------------
# Activation tables
def my_table(f_dec):
    """The doc's tables: knots k_i = -8 + i/32; f(k) and f(k_{i+1}) - f(k_i) evaluated in decimal
    arithmetic with 50 significant digits, then each rounded (RNE) to binary32."""
    with localcontext() as ctx:
        ctx.prec = 50
        knots = [Decimal(-8) + Decimal(i) / 32 for i in range(513)]          # exact decimals
        fv = [f_dec(k) for k in knots]
        a = [rne_binary32(Fraction(fv[i])) for i in range(512)]
        b = [rne_binary32(Fraction(fv[i + 1] - fv[i])) for i in range(512)]   # difference at 50 digits
    return a, b


def sigmoid_dec(k: Decimal) -> Decimal:
    return 1 / (1 + (-k).exp())


def tanh_dec(k: Decimal) -> Decimal:
    e = (-2 * k).exp()
    return (1 - e) / (1 + e)


def my_sigmoid(k: float) -> float:
    """binary64 sigmoid, only for the accuracy checks."""
    return 1.0 / (1.0 + math.exp(-k))


MY_TABLES = {"sigmoid": (my_table(sigmoid_dec), 0.0, 1.0, my_sigmoid),
             "tanh": (my_table(tanh_dec), -1.0, 1.0, math.tanh)}


@pytest.mark.parametrize("fn", ["sigmoid", "tanh"])
def test_table_close_to_binary64_functions(fn):
    """Sanity of the reference tables: a_i within 1 binary32 ulp of math.exp / math.tanh at the knots."""
    (a, b), _, _, f = MY_TABLES[fn]
    for i in range(512):
        k = -8 + i / 32
        assert abs(float(a[i]) - f(k)) <= 2.0**-24 * max(abs(f(k)), 2.0**-126)
        assert abs(float(b[i]) - (f(k + 1 / 32) - f(k))) <= 1e-15 + 2.0**-23 * abs(float(b[i]))


@pytest.mark.parametrize("fn", ["sigmoid", "tanh"])
def test_tables_match_doc_definition(fn):
    """SIGMOID_TABLE / TANH_TABLE are a_i = RNE32(f(k_i)), b_i = RNE32(f(k_{i+1}) - f(k_i)) (50-digit f)."""
    (a, b), _, _, _ = MY_TABLES[fn]
    ta, tb = mfu.SIGMOID_TABLE if fn == "sigmoid" else mfu.TANH_TABLE
    assert ta.dtype == np.float32 and tb.dtype == np.float32 and ta.shape == tb.shape == (512,)
    bad_a = [i for i in range(512) if ta[i].view(np.uint32) != np.float32(a[i]).view(np.uint32)]
    bad_b = [(i, -8 + i / 32, hex(int(tb[i].view(np.uint32))), hex(int(np.float32(b[i]).view(np.uint32))))
             for i in range(512) if tb[i].view(np.uint32) != np.float32(b[i]).view(np.uint32)]
    assert not bad_a, f"a_i differ at {bad_a}"
    assert not bad_b, f"b_i differ (index, knot k_i, got bits, want bits): {bad_b}"


def ref_activation32(x: np.float32, fn) -> np.float32:
    """The doc's evaluation, one binary32 operation at a time (numpy float32 scalars)."""
    (a, b), lo, hi, _ = MY_TABLES[fn]
    if np.isnan(x):
        return np.float32(np.nan)
    u = np.float32(np.float32(x + np.float32(8)) * np.float32(32))
    if u < 0:
        return np.float32(lo)
    if u >= 512:
        return np.float32(hi)
    i = int(math.floor(u))
    t = np.float32(u - np.float32(i))
    assert Fraction(float(t)) == Fraction(float(u)) - i                    # the doc: t is exact
    return np.float32(a[i] + np.float32(b[i] * t))


def ref_activation_bits(x32: np.float32, fn, name) -> int:
    y = ref_activation32(x32, fn)
    if np.isnan(y):
        return CANON[name]
    return result_bits(Fraction(float(y)) if y != 0 else float(y), name)


@pytest.mark.parametrize("name", ["fp16", "bf16"])
@pytest.mark.parametrize("fn", ["sigmoid", "tanh"])
def test_activation_every_16bit_input(fn, name):
    """All 65536 inputs of fp16 / bf16, bit for bit, and within 1e-3 of the true function."""
    _, _, _, dt, ut = FMT[name]
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dt)
    with np.errstate(all="ignore"):
        got = bits_of(getattr(mfu, fn)(x, name), name)
    x32 = x.astype(np.float32)
    cache = {}
    for i in range(1 << 16):
        key = int(x32[i:i + 1].view(np.uint32)[0])
        if key not in cache:
            cache[key] = ref_activation_bits(x32[i], fn, name)
        assert int(got[i]) == cache[key], (float(x32[i]), hex(int(got[i])), hex(cache[key]))
    # accuracy against the binary64 function (table interpolation + output rounding)
    f = MY_TABLES[fn][3]
    y = got.view(dt).astype(np.float64)
    xs = x32.astype(np.float64)
    fin = np.isfinite(xs)
    true = np.array([f(v) if abs(v) < 700 else (math.copysign(1.0, v) if fn == "tanh" else float(v > 0))
                     for v in xs[fin]])
    tol = 1e-3 if name == "fp16" else 4e-3                                   # bf16 has 8 significant bits
    assert np.abs(y[fin] - true).max() <= tol
    assert np.isnan(y[~np.isfinite(xs) & np.isnan(xs)]).all()


@pytest.mark.parametrize("fn", ["sigmoid", "tanh"])
def test_activation_fp32_random(fn):
    rng = np.random.default_rng(99)
    parts = [
        rng.integers(0, 1 << 32, 3000, dtype=np.uint64).astype(np.uint32).view(np.float32),   # any bit pattern
        rng.uniform(-9, 9, 4000).astype(np.float32),                                          # the table range
        # knots and their neighbours (floor boundaries), and the +-8 edges
        np.array([np.nextafter(np.float32(-8 + i / 32), np.float32(d)) for i in range(0, 513, 3) for d in (-9, 9)]
                 + [np.float32(-8 + i / 32) for i in range(513)], np.float32),
        np.array([8 - 2.0**-21, 8 - 2.0**-20, -8 - 2.0**-20, -8 - 2.0**-21, -8.0, 8.0, 0.0, -0.0, 1e-30, -1e-30,
                  np.inf, -np.inf], np.float32),
    ]
    x = np.concatenate(parts)
    with np.errstate(all="ignore"):
        got = bits_of(getattr(mfu, fn)(x, "fp32"), "fp32")
    for i in range(x.size):
        want = ref_activation_bits(x[i], fn, "fp32")
        assert int(got[i]) == want, (float(x[i]), hex(int(got[i])), hex(want))
    f = MY_TABLES[fn][3]
    inside = np.abs(x.astype(np.float64)) < 50
    true = np.array([f(float(v)) for v in x[inside]])
    # interpolation error is ~1e-4 at most; sigmoid's low limit 0 below -8 is off by sigmoid(-8) = 3.4e-4
    assert np.abs(got.view(np.float32)[inside].astype(np.float64) - true).max() <= (3.5e-4 if fn == "sigmoid" else 2e-4)


def test_activation_hand_worked():
    # x = 0: u = (0 + 8) * 32 = 256, i = 256, t = 0 -> y = a_256 = RNE32(f(0)) = 0.5 / 0
    assert mfu.sigmoid(np.float32(0), "fp32") == 0.5
    assert mfu.tanh(np.float32(0), "fp32") == 0.0
    # x = -8 - 2^-20: x + 8 = -2^-20 exactly, u = -2^-15 < 0 -> low limits 0 / -1
    assert mfu.sigmoid(np.float32(-8 - 2.0**-20), "fp32") == 0.0
    assert mfu.tanh(np.float32(-8 - 2.0**-20), "fp32") == -1.0
    # x = 8 - 2^-21 (the largest binary32 below 8): x + 8 = 16 - 2^-21 is a tie between
    # 16 - 2^-20 and 16 -> 16 (even), u = 512 -> high limit 1
    assert mfu.sigmoid(np.float32(8 - 2.0**-21), "fp32") == 1.0
    assert mfu.tanh(np.float32(8 - 2.0**-21), "fp32") == 1.0
    # x = 8 - 2^-20: x + 8 = 16 - 2^-20 exact, u = 512 - 2^-15 < 512: i = 511, t = 1 - 2^-15
    (a, b), _, _, _ = MY_TABLES["sigmoid"]
    want = np.float32(a[511] + np.float32(b[511] * np.float32(1 - 2.0**-15)))
    assert mfu.sigmoid(np.float32(8 - 2.0**-20), "fp32") == want
    assert want < 1.0


# --------------------------------------------------------------------------
# Reductions
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 10))
def test_reduce_sum_and_max(name, seed, n):
    _, _, _, dt, ut = FMT[name]
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal((n, 16)) * np.exp2(rng.integers(-20, 20, (n, 16)))).astype(dt)
    if rng.random() < 0.3:
        v[rng.integers(0, n), rng.integers(0, 16)] = rng.choice([np.nan, np.inf, -np.inf, -0.0])
    with np.errstate(all="ignore"):
        got_s = bits_of(mfu.reduce_sum(v, name), name)
        got_m = bits_of(mfu.reduce_max(v, name), name)
    for col in range(16):
        acc = np.float32(0.0)                                  # binary32 from +0, in input order
        with np.errstate(all="ignore"):
            for i in range(n):
                acc = np.float32(acc + np.float32(v[i, col]))
        fa = float(acc)
        want = CANON[name] if math.isnan(fa) else (encode(fa, name) if (math.isinf(fa) or fa == 0)
                                                   else result_bits(Fraction(fa), name))
        assert int(got_s[col]) == want, col
        m = v[0, col]                                          # max in input order
        for i in range(1, n):
            x, y = float(m), float(v[i, col])
            m = np.array(np.nan, dt) if (math.isnan(x) or math.isnan(y)) else (v[i, col] if y > x else m)
        want_m = CANON[name] if math.isnan(float(m)) else int(np.array(m, dt).view(ut))
        assert int(got_m[col]) == want_m, col


def test_reduce_hand_worked():
    # fp32: ((0 + 1e8) + 1) - 1e8: 1e8 + 1 is not representable (ulp 8) -> 1e8, then 0.  Exact answer 1.
    v = np.array([[1e8], [1.0], [-1e8]], np.float32)
    assert mfu.reduce_sum(v, "fp32")[0] == 0.0
    assert mfu.reduce_sum(v[[1, 0, 2]], "fp32")[0] == 0.0
    assert mfu.reduce_sum(v[[0, 2, 1]], "fp32")[0] == 1.0
    # fp16: the sum runs in binary32, so 60000 + 60000 - 60000 - 60000 = 0 (no fp16 overflow on the way) ...
    h = np.array([[60000.0], [60000.0], [-60000.0], [-60000.0]], np.float16)
    assert mfu.reduce_sum(h, "fp16")[0] == 0.0
    # ... and 60000 + 60000 = 120000 is rounded to fp16 once at the end: infinity
    assert mfu.reduce_sum(h[:2], "fp16")[0] == np.inf
    # max in order with signed zeros: max(+0, -0) = +0, max(-0, +0) = -0
    assert not np.signbit(mfu.reduce_max(np.array([[0.0], [-0.0]], np.float16), "fp16")[0])
    assert np.signbit(mfu.reduce_max(np.array([[-0.0], [0.0]], np.float16), "fp16")[0])
