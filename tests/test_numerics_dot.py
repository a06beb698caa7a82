"""The MVU dot-product contract (docs/numerics.md section 3) against exact references.

Element codes are decoded here from the doc's encodings into exact integers
(in units of the format's smallest quantum), block sums are formed as exact
Python integers, and rounded once to binary32 by ``rne_binary32`` below
(written from scratch: exponent, 24-bit significand, ties to even,
subnormals, overflow to infinity).  Single binary32 additions of the
accumulation use numpy float32 scalars as the oracle.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npu.numerics import FormatError, get_format, quantize
from npu.numerics.dot import (_binary32_scales, accumulate_blocks, block_partial_sums, exact_sum_bits, gemm_plan,
                              matvec, reduction_block)
from npu.numerics.quantize import BlockTensor
from npu_toolkit.testing.exact import rne_binary32

# IEEE overflow / invalid / underflow are the point of several cases here.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# --------------------------------------------------------------------------
# Element encodings from docs/numerics.md section 1.1.
#   name: (kind, bits, B (0 = N), scale bits, bias, params)
#   sm/int params: (magnitude bits, fraction bits f, largest M);  fp: (ebits, mbits, specials)
SPEC = {
    "ms-fp8": ("sm", 3, 0, 5, 15, (2, 1)),
    "ms-fp9": ("sm", 4, 0, 5, 15, (3, 2)),
    "msfp12": ("sm", 4, 16, 8, 127, (3, 2)),
    "msfp16": ("sm", 8, 16, 8, 127, (7, 6)),
    "bfp24": ("sm", 16, 0, 8, 127, (15, 14)),
    "mxint8": ("int", 8, 32, 8, 127, (7, 6)),
    "mxfp8_e4m3": ("fp", 8, 32, 8, 127, (4, 3, "fn")),
    "mxfp8_e5m2": ("fp", 8, 32, 8, 127, (5, 2, "ieee")),
    "mxfp6_e2m3": ("fp", 6, 32, 8, 127, (2, 3, None)),
    "mxfp6_e3m2": ("fp", 6, 32, 8, 127, (3, 2, None)),
    "mxfp4_e2m1": ("fp", 4, 32, 8, 127, (2, 1, None)),
}
NAMES = list(SPEC)


def block_len(name, nd):
    return nd if SPEC[name][2] == 0 else SPEC[name][2]


def _decode_fp(code, ebits, mbits, specials):
    sign = (code >> (ebits + mbits)) & 1
    e = (code >> mbits) & ((1 << ebits) - 1)
    m = code & ((1 << mbits) - 1)
    bias = (1 << (ebits - 1)) - 1
    if specials == "ieee" and e == (1 << ebits) - 1:
        return None                                    # inf / NaN
    if specials == "fn" and e == (1 << ebits) - 1 and m == (1 << mbits) - 1:
        return None                                    # NaN
    mag = Fraction(m, 1 << mbits) * Fraction(2) ** (1 - bias) if e == 0 else \
        (1 + Fraction(m, 1 << mbits)) * Fraction(2) ** (e - bias)
    return -mag if sign else mag


def element_table(name):
    """(list code -> exact integer I or None for NaN/inf, F) with element value I * 2^-F."""
    kind, bits, _, _, _, p = SPEC[name]
    if kind == "sm":
        m, f = p
        return [(-(c & ((1 << m) - 1)) if c >> m else c & ((1 << m) - 1)) for c in range(1 << bits)], f
    if kind == "int":
        return [c - 256 if c >= 128 else c for c in range(256)], 6
    ebits, mbits, specials = p
    bias = (1 << (ebits - 1)) - 1
    F = mbits - (1 - bias)                             # smallest quantum 2^(emin - mbits)
    out = []
    for c in range(1 << bits):
        v = _decode_fp(c, ebits, mbits, specials)
        if v is None:
            out.append(None)
        else:
            i = v * 2**F
            assert i.denominator == 1
            out.append(int(i))
    return out, F


TABLES = {n: element_table(n) for n in NAMES}


def test_rne_binary32_self_check():
    """The reference rounding agrees with hand-worked cases."""
    assert rne_binary32(Fraction(1) + Fraction(1, 2**24)) == 1.0                         # tie -> even
    assert rne_binary32(Fraction(1) + Fraction(3, 2**24)) == 1 + 2.0**-22                # tie -> even (up)
    assert rne_binary32(Fraction(1) + Fraction(1, 2**24) + Fraction(1, 2**80)) == 1 + 2.0**-23
    assert rne_binary32(Fraction(1, 2**150)) == 0.0 and not np.signbit(rne_binary32(Fraction(1, 2**150)))
    assert np.signbit(rne_binary32(-Fraction(1, 2**150)))                                # tie to 0, keeps sign
    assert rne_binary32(Fraction(3, 2**151)) == 2.0**-149                               # above half: up
    assert rne_binary32(Fraction(3, 2**150)) == 2.0**-148                               # 1.5 ulp tie -> 2 (even)
    assert rne_binary32(Fraction(2**128 - 2**103)) == np.inf                            # max + half ulp -> inf
    assert rne_binary32(Fraction(2**128 - 2**103 - 1)) == np.float32(3.4028234663852886e38)
    assert rne_binary32(-Fraction(2**200)) == -np.inf


def scale_exp(name, code):
    _, _, _, sbits, bias, _ = SPEC[name]
    return None if code == (1 << sbits) - 1 else int(code) - bias


def ref_partials(w: BlockTensor, x: BlockTensor, wname, xname, nd):
    """(M, R, nb) array of reference P_b, plus a mask of exact zero sums."""
    Bw, Bx = block_len(wname, nd), block_len(xname, nd)
    B = min(Bw, Bx)
    wt, Fw = TABLES[wname]
    xt, Fx = TABLES[xname]
    wc, xc = w.codes.astype(np.int64).tolist(), x.codes.astype(np.int64).tolist()
    R, K = w.codes.shape
    M = x.codes.shape[0]
    nb = K // B
    out = np.zeros((M, R, nb), np.float32)
    exact_zero = np.zeros((M, R, nb), bool)
    for m in range(M):
        for r in range(R):
            for b in range(nb):
                lo = b * B
                sw = scale_exp(wname, w.scales[r, lo // Bw])
                sx = scale_exp(xname, x.scales[m, lo // Bx])
                wi = [wt[c] for c in wc[r][lo:lo + B]]
                xi = [xt[c] for c in xc[m][lo:lo + B]]
                if sw is None or sx is None or None in wi or None in xi:
                    out[m, r, b] = np.nan
                    continue
                total = sum(a * c for a, c in zip(wi, xi))
                exact_zero[m, r, b] = total == 0
                out[m, r, b] = rne_binary32(Fraction(total) * Fraction(2) ** (sw + sx - Fw - Fx))
    return out, exact_zero


def ref_accumulate(partials: np.ndarray) -> np.ndarray:
    """acc = +0; acc = acc + P_b in block order, each a binary32 addition (numpy float32 scalars)."""
    out = np.zeros(partials.shape[:-1], np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for idx in np.ndindex(*partials.shape[:-1]):
            acc = np.float32(0.0)
            for p in partials[idx]:
                acc = np.float32(acc + np.float32(p))
            out[idx] = acc
    return out


def assert_same_f32(got, want, exact_zero=None):
    """Bitwise equality of binary32 arrays; any NaN matches any NaN."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    bad = nan_g != nan_w
    gb = np.where(nan_g, np.float32(0), got).view(np.uint32)
    wb = np.where(nan_w, np.float32(0), want).view(np.uint32)
    bad |= gb != wb
    assert not bad.any(), (f"{int(bad.sum())} mismatches, first at {np.argwhere(bad)[0].tolist()}: "
                           f"got {got[tuple(np.argwhere(bad)[0])]!r}, want {want[tuple(np.argwhere(bad)[0])]!r}")


# --------------------------------------------------------------------------
# Operand generation
def negate_code(name, code):
    kind, bits = SPEC[name][0], SPEC[name][1]
    if kind == "int":
        return (-(code - 256 if code >= 128 else code)) & 0xFF
    return code ^ (1 << (bits - 1))


def finite_codes(name, rng, shape):
    bits = SPEC[name][1]
    table = TABLES[name][0]
    ok = np.array([c for c in range(1 << bits) if table[c] is not None])
    return ok[rng.integers(0, ok.size, shape)]


def make_operand(rng, name, rows, K, nd, mode, scale_mode):
    kind, bits, _, sbits, bias, _ = SPEC[name]
    B = block_len(name, nd)
    nb = K // B
    if mode == "quantized":
        # wide magnitude spread inside each block (35 binades: the whole E5M2 range), random centres
        centre = rng.integers(-40, 40, (rows, nb, 1))
        e = centre - rng.integers(0, 36, (rows, nb, B))
        v = np.ldexp(rng.integers(1 << 23, 1 << 24, (rows, nb, B)) / 2.0**23, e) * rng.choice([-1, 1], (rows, nb, B))
        v[rng.random((rows, nb, B)) < 0.1] = 0.0
        t = quantize(v.reshape(rows, K).astype(np.float32), name, native_dim=nd)
        codes, scales = t.codes.astype(np.int64), t.scales.astype(np.int64)
    else:
        codes = finite_codes(name, rng, (rows, K))
        smax = (1 << sbits) - 2
        if scale_mode == "mid":
            lo, hi = max(bias - 20, 0), min(bias + 20, smax)
        elif scale_mode == "high":
            lo, hi = smax - (8 if sbits == 5 else 30), smax
        elif scale_mode == "low":
            lo, hi = 0, (8 if sbits == 5 else 30)
        else:
            lo, hi = 0, smax
        scales = rng.integers(lo, hi + 1, (rows, nb))
    dtype = np.uint16 if bits > 8 else np.uint8
    return codes.astype(dtype), scales.astype(np.uint8)


def inject_bad(rng, name, codes, scales, nd):
    """Put a NaN scale, or a NaN / inf element code, into one random block (in place)."""
    bits, sbits = SPEC[name][1], SPEC[name][3]
    B = block_len(name, nd)
    r, b = rng.integers(0, codes.shape[0]), rng.integers(0, scales.shape[1])
    specials = [c for c in range(1 << bits) if TABLES[name][0][c] is None]
    if specials and rng.random() < 0.6:
        codes[r, b * B + rng.integers(0, B)] = specials[rng.integers(0, len(specials))]
    else:
        scales[r, b] = (1 << sbits) - 1


def make_pair(rng, wname, xname, nd, R, M, K, mode, scale_mode, bad, cancel):
    wc, ws = make_operand(rng, wname, R, K, nd, mode, scale_mode)
    xc, xs = make_operand(rng, xname, M, K, nd, mode, scale_mode)
    if cancel:
        # products cancel in pairs (w_{j+1} = w_j, x_{j+1} = -x_j) except every 4th pair:
        # the block sum is what the big products leave behind, so exactness matters
        for j in range(0, K, 2):
            if (j // 2) % 4 == 3:
                continue
            wc[:, j + 1] = wc[:, j]
            xc[:, j + 1] = [negate_code(xname, int(c)) for c in xc[:, j]]
    if bad:
        if rng.random() < 0.5:
            inject_bad(rng, wname, wc, ws, nd)
        inject_bad(rng, xname, xc, xs, nd)
    w = BlockTensor(get_format(wname), block_len(wname, nd), ws, wc)
    x = BlockTensor(get_format(xname), block_len(xname, nd), xs, xc)
    return w, x


# Every block format as weights with ms-fp9, mxfp8_e4m3, mxfp8_e5m2 and itself as activations;
# N = 32 and 64 (duplicate block-length combinations dropped).
PAIRS = []
_seen = set()
for _nd in (32, 64):
    for _w in NAMES:
        for _x in dict.fromkeys(["ms-fp9", "mxfp8_e4m3", "mxfp8_e5m2", _w]):
            key = (_w, _x, block_len(_w, _nd), block_len(_x, _nd))
            bw, bx = key[2], key[3]
            if max(bw, bx) % min(bw, bx) or key in _seen:
                continue
            _seen.add(key)
            PAIRS.append((_w, _x, _nd))
PAIR_IDS = [f"{w}x{x}-N{nd}" for w, x, nd in PAIRS]


@pytest.mark.parametrize("wname,xname,nd", PAIRS, ids=PAIR_IDS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1),
       mode=st.sampled_from(["quantized", "codes"]),
       scale_mode=st.sampled_from(["mid", "mid", "high", "low", "any"]),
       bad=st.booleans(), cancel=st.booleans())
def test_partial_sums_and_matvec(wname, xname, nd, seed, mode, scale_mode, bad, cancel):
    rng = np.random.default_rng(seed)
    B = min(block_len(wname, nd), block_len(xname, nd))
    K = 2 * max(block_len(wname, nd), block_len(xname, nd))
    w, x = make_pair(rng, wname, xname, nd, 3, 2, K, mode, scale_mode, bad, cancel)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        got = block_partial_sums(w, x, nd)
        mv = matvec(w, x, nd)
    want, exact_zero = ref_partials(w, x, wname, xname, nd)
    assert got.shape == (2, 3, K // B)
    assert got.dtype == np.float32
    assert_same_f32(got, want)
    assert_same_f32(mv, ref_accumulate(want))
    if bad:
        assert np.isnan(mv).any()


# --------------------------------------------------------------------------
# Hand-worked cases for the rounding of exact block sums
def _e5m2(v):
    import ml_dtypes
    return int(np.array(v, np.float64).astype(ml_dtypes.float8_e5m2).view(np.uint8))


@pytest.mark.parametrize("elems,expected", [
    # products 2^30 + 2^6 + 2^-32: binary32 ulp at 2^30 is 2^7, so 2^30 + 2^6 is a tie and the
    # 2^-32 term (62 binades below) breaks it upwards: 2^30 + 2^7.  (A binary64 sum would lose
    # the 2^-32 and round the tie to even, 2^30.)
    ([(2.0**15, 2.0**15), (2.0**3, 2.0**3), (2.0**-16, 2.0**-16)], 2.0**30 + 2.0**7),
    # the same, negated: -(2^30 + 2^7)
    ([(-(2.0**15), 2.0**15), (2.0**3, -(2.0**3)), (2.0**-16, -(2.0**-16))], -(2.0**30 + 2.0**7)),
    # 2^30 + 2^6 - 2^-32: just below the tie, rounds down to 2^30
    ([(2.0**15, 2.0**15), (2.0**3, 2.0**3), (2.0**-16, -(2.0**-16))], 2.0**30),
    # exact tie 2^30 + 2^6 -> even: 2^30;  2^30 + 3 * 2^6 -> tie -> 2^30 + 2^8
    ([(2.0**15, 2.0**15), (2.0**3, 2.0**3)], 2.0**30),
    ([(2.0**15, 2.0**15), (2.0**3, 2.0**3), (2.0**4, 2.0**3)], 2.0**30 + 2.0**8),
    # 57344^2 * 2 - 57344^2 * 2 + 2^-32: everything cancels but the smallest product
    ([(57344.0, 57344.0), (57344.0, 57344.0), (57344.0, -57344.0), (-57344.0, 57344.0),
      (2.0**-16, 2.0**-16)], 2.0**-32),
])
def test_e5m2_split_rounding_hand_worked(elems, expected):
    assert gemm_plan(get_format("mxfp8_e5m2"), get_format("mxfp8_e5m2"), 32) == "split"
    wc = np.zeros((1, 32), np.uint8)
    xc = np.zeros((1, 32), np.uint8)
    for j, (a, b) in enumerate(elems):
        wc[0, j], xc[0, j] = _e5m2(a), _e5m2(b)
    one = np.array([[127]], np.uint8)                 # s = 0
    fmt = get_format("mxfp8_e5m2")
    w, x = BlockTensor(fmt, 32, one, wc), BlockTensor(fmt, 32, one.copy(), xc)
    p = block_partial_sums(w, x, 32)
    assert p[0, 0, 0] == np.float32(expected)
    assert matvec(w, x, 32)[0, 0] == np.float32(expected)


def pow2_codes(name):
    """{k: code} of the positive element codes whose value is exactly 2^k."""
    table, F = TABLES[name]
    out = {}
    for c, v in enumerate(table):
        if v is not None and v > 0 and v & (v - 1) == 0:
            out[v.bit_length() - 1 - F] = c
    return out


TIE_PAIRS = [("mxfp8_e5m2", "mxfp8_e5m2"), ("mxfp8_e5m2", "mxfp8_e4m3"), ("mxfp8_e4m3", "mxfp8_e5m2"),
             ("mxfp8_e4m3", "mxfp8_e4m3"), ("bfp24", "mxfp8_e5m2"), ("mxfp8_e5m2", "bfp24"),
             ("msfp16", "mxfp8_e5m2"), ("bfp24", "bfp24"), ("mxint8", "mxint8"), ("mxfp4_e2m1", "mxfp6_e3m2")]


@pytest.mark.parametrize("wname,xname", TIE_PAIRS, ids=[f"{w}x{x}" for w, x in TIE_PAIRS])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_block_sums_near_binary32_ties(wname, xname, data):
    """Block sums built as A + half an ulp of A (+ a far smaller sticky term): the one rounding decides."""
    W, X = pow2_codes(wname), pow2_codes(xname)
    prods = sorted({a + b for a in W for b in X})

    a = data.draw(st.sampled_from(prods[-8:]) | st.sampled_from(prods))     # often a large A
    terms = [(a, 1)]
    if data.draw(st.booleans()):
        terms.append((a - 23, 1))                       # makes A's last binary32 bit odd
    terms.append((a - 24, 1))                           # half an ulp: an exact tie so far
    if data.draw(st.booleans()):
        lo = [t for t in prods if t < a - 24]
        if lo:
            t = data.draw(st.sampled_from(lo[:4]) | st.sampled_from(lo))      # often far below A
            terms.append((t, data.draw(st.sampled_from([1, -1]))))
    neg_all = data.draw(st.booleans())
    B = min(block_len(wname, 32), block_len(xname, 32))
    wc = np.zeros((1, 32), np.int64)
    xc = np.zeros((1, 32), np.int64)
    j = 0
    for t, sgn in terms:
        opts = [k for k in W if t - k in X]
        if not opts:
            continue
        k = data.draw(st.sampled_from(opts))
        wc[0, j], xc[0, j] = W[k], X[t - k]
        if (sgn < 0) != neg_all:
            xc[0, j] = negate_code(xname, int(xc[0, j]))
        j += 1
    perm = np.random.default_rng(data.draw(st.integers(0, 1000))).permutation(32)
    wc, xc = wc[:, perm], xc[:, perm]
    sw = data.draw(st.integers(100, 154))
    sx = data.draw(st.integers(100, 154))
    fw, fx = get_format(wname), get_format(xname)
    nbw, nbx = 32 // block_len(wname, 32), 32 // block_len(xname, 32)
    w = BlockTensor(fw, block_len(wname, 32), np.full((1, nbw), sw, np.uint8),
                    wc.astype(np.uint16 if SPEC[wname][1] > 8 else np.uint8))
    x = BlockTensor(fx, block_len(xname, 32), np.full((1, nbx), sx, np.uint8),
                    xc.astype(np.uint16 if SPEC[xname][1] > 8 else np.uint8))
    got = block_partial_sums(w, x, 32)
    want, _ = ref_partials(w, x, wname, xname, 32)
    assert got.shape[-1] == 32 // B
    assert_same_f32(got, want)
    assert_same_f32(matvec(w, x, 32), ref_accumulate(want))


def test_nonfinite_element_gives_nan_not_inf():
    """An infinite E5M2 element makes P_b NaN (not inf); the other block is unaffected."""
    fmt = get_format("mxfp8_e5m2")
    wc = np.full((1, 64), _e5m2(1.0), np.uint8)
    xc = np.full((1, 64), _e5m2(1.0), np.uint8)
    xc[0, 3] = 0x7C                                   # +inf
    s = np.array([[127, 127]], np.uint8)
    p = block_partial_sums(BlockTensor(fmt, 32, s, wc), BlockTensor(fmt, 32, s.copy(), xc), 32)
    assert np.isnan(p[0, 0, 0])
    assert p[0, 0, 1] == 32.0                          # 32 products of 1 * 1
    e4 = get_format("mxfp8_e4m3")
    wc4 = np.full((1, 32), 0x38, np.uint8)             # 1.0 in E4M3 (exponent 7, mantissa 0)
    wc4[0, 31] = 0xFF                                  # NaN
    p = block_partial_sums(BlockTensor(e4, 32, np.array([[127]], np.uint8), wc4),
                           BlockTensor(fmt, 32, np.array([[127]], np.uint8), np.zeros((1, 32), np.uint8)), 32)
    assert np.isnan(p).all()                           # NaN element even though x is all zero


def test_nan_scale_gives_nan():
    fmt = get_format("ms-fp9")
    codes = np.full((1, 64), 4, np.uint8)             # 1.0
    w = BlockTensor(fmt, 32, np.array([[31, 15]], np.uint8), codes)
    x = BlockTensor(fmt, 32, np.array([[15, 15]], np.uint8), codes.copy())
    p = block_partial_sums(w, x, 32)
    assert np.isnan(p[0, 0, 0]) and p[0, 0, 1] == 32.0
    assert np.isnan(matvec(w, x, 32)[0, 0])


# --------------------------------------------------------------------------
# Accumulation order
def test_accumulation_order_hand_worked():
    # acc = 0 + 2^24 = 2^24; + 1 -> 2^24 + 1 is a tie -> 2^24 (even); + 1 -> 2^24 again
    p = np.array([[2.0**24, 1.0, 1.0]], np.float32)
    assert accumulate_blocks(p)[0] == 2.0**24
    # the other order: 1 + 1 = 2, + 2^24 = 2^24 + 2 (exact)
    assert accumulate_blocks(p[:, ::-1].copy())[0] == 2.0**24 + 2
    # acc starts at +0: -0 + -0 accumulated from +0 is +0
    z = accumulate_blocks(np.array([[-0.0, -0.0]], np.float32))
    assert z[0] == 0 and not np.signbit(z[0])
    # overflow to infinity, then inf - finite stays inf; inf + -inf is NaN
    with np.errstate(over="ignore", invalid="ignore"):
        assert accumulate_blocks(np.array([[3e38, 3e38, -3e38]], np.float32))[0] == np.inf
        assert np.isnan(accumulate_blocks(np.array([[3e38, 3e38, -np.inf]], np.float32))[0])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nb=st.integers(1, 12))
def test_accumulate_blocks_random(seed, nb):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 1 << 32, (3, 4, nb), dtype=np.uint64).astype(np.uint32)
    p = bits.view(np.float32).copy()
    # mostly moderate values of mixed signs so rounding in the adds matters
    mod = rng.random(p.shape) < 0.8
    p[mod] = (rng.standard_normal(mod.sum()) * np.exp2(rng.integers(-30, 30, mod.sum()))).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        got = accumulate_blocks(p)
    assert_same_f32(got, ref_accumulate(p))


# --------------------------------------------------------------------------
# The exact-sum bound and the GEMM plan, recomputed from the element table
LARGEST = {"ms-fp8": Fraction(3, 2), "ms-fp9": Fraction(7, 4), "msfp12": Fraction(7, 4),
           "msfp16": Fraction(127, 64), "bfp24": Fraction(32767, 16384), "mxint8": Fraction(127, 64),
           "mxfp8_e4m3": Fraction(448), "mxfp8_e5m2": Fraction(57344), "mxfp6_e2m3": Fraction(15, 2),
           "mxfp6_e3m2": Fraction(28), "mxfp4_e2m1": Fraction(6)}
# smallest element quantum: 2^-f for sm/int rows, 2^(emin_elem - m) for minifloats
QUANTUM = {"ms-fp8": Fraction(1, 2), "ms-fp9": Fraction(1, 4), "msfp12": Fraction(1, 4),
           "msfp16": Fraction(1, 64), "bfp24": Fraction(1, 2**14), "mxint8": Fraction(1, 64),
           "mxfp8_e4m3": Fraction(1, 2**9), "mxfp8_e5m2": Fraction(1, 2**16), "mxfp6_e2m3": Fraction(1, 8),
           "mxfp6_e3m2": Fraction(1, 16), "mxfp4_e2m1": Fraction(1, 2)}


def my_bits(w, x, B):
    return math.log2(LARGEST[w] / QUANTUM[w]) + math.log2(LARGEST[x] / QUANTUM[x]) + math.log2(B)


def test_quantum_and_largest_tables_are_consistent():
    for n in NAMES:
        table, F = TABLES[n]
        finite = [abs(v) for v in table if v is not None]
        assert Fraction(max(finite), 2**F) >= LARGEST[n]          # mxint8 -128 is outside the quantiser's range
        assert Fraction(min(v for v in finite if v), 2**F) == QUANTUM[n]


@pytest.mark.parametrize("B", [16, 32, 64, 128, 400, 512])
def test_gemm_plan_matches_bound(B):
    for w in NAMES:
        for x in NAMES:
            bits = my_bits(w, x, B)
            assert exact_sum_bits(get_format(w), get_format(x), B) == pytest.approx(bits, abs=1e-9)
            want = "f32" if bits < 24 else ("f64" if bits < 53 else "split")
            assert gemm_plan(get_format(w), get_format(x), B) == want, (w, x, B, bits)


def test_doc_hardware_note_bounds():
    """The hardware-note table's bit counts follow from the element table."""
    small = ["ms-fp8", "ms-fp9", "msfp12", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4_e2m1", "mxint8"]
    for w in small:
        for x in small:
            nb = 400 if {w, x} <= {"ms-fp8", "ms-fp9"} else (16 if "msfp12" in (w, x) else 32)
            assert my_bits(w, x, nb) < 24, (w, x)
            assert gemm_plan(get_format(w), get_format(x), nb) == "f32"
    for w in ["msfp16", "bfp24", "mxfp8_e4m3"]:
        for x in NAMES:
            if x == "mxfp8_e5m2" and w == "mxfp8_e4m3":
                continue
            nb = 512 if {w, x} <= {"bfp24", "ms-fp8", "ms-fp9"} else (16 if {"msfp12", "msfp16"} & {w, x} else 32)
            assert my_bits(w, x, nb) < 53, (w, x)
            assert gemm_plan(get_format(w), get_format(x), nb) != "split"
    for x in ["mxfp8_e4m3", "mxfp8_e5m2"]:
        assert 53 <= my_bits("mxfp8_e5m2", x, 32) <= 69
        assert gemm_plan(get_format("mxfp8_e5m2"), get_format(x), 32) == "split"
        assert gemm_plan(get_format(x), get_format("mxfp8_e5m2"), 32) == "split"


def test_reduction_block_and_errors():
    f = get_format
    assert reduction_block(f("ms-fp9"), f("mxfp4_e2m1"), 64) == 32
    assert reduction_block(f("msfp16"), f("ms-fp9"), 64) == 16
    assert reduction_block(f("bfp24"), f("ms-fp8"), 128) == 128
    with pytest.raises(FormatError, match="nest"):
        reduction_block(f("ms-fp9"), f("mxint8"), 48)            # 48 is not a multiple of 32
    a = quantize(np.ones((2, 64), np.float32), "mxint8")
    b = quantize(np.ones((2, 32), np.float32), "mxint8")
    with pytest.raises(FormatError):
        block_partial_sums(a, b, 32)


@pytest.mark.parametrize("sw,sx", [(-70, -70), (-75, -74), (60, 67), (-20, 10)])
def test_binary32_scale_path_at_the_range_edges(sw, sx):
    """Scale products down to binary32's subnormals and up to 2**127 take the binary32 path; still exact."""
    rng = np.random.default_rng(abs(sw * 1000 + sx))
    w, x = make_pair(rng, "mxint8", "mxint8", 64, 3, 2, 128, "codes", "mid", False, False)
    fmt = get_format("mxint8")
    w = BlockTensor(w.fmt, w.block, np.full_like(w.scales, sw + fmt.scale_bias), w.codes)
    x = BlockTensor(x.fmt, x.block, np.full_like(x.scales, sx + fmt.scale_bias), x.codes)
    assert _binary32_scales(np.ldexp(1.0, np.array([sx])), np.ldexp(1.0, np.array([sw])))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        mv = matvec(w, x, 64)
    want, _ = ref_partials(w, x, "mxint8", "mxint8", 64)
    assert_same_f32(mv, ref_accumulate(want))
