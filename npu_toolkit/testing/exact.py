"""Exact rounding of rationals, written from scratch for the tests (independent of npu.numerics)."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def floor_log2(a: Fraction) -> int:
    """floor(log2 a) of a positive rational, exactly."""
    e = a.numerator.bit_length() - a.denominator.bit_length()
    return e - 1 if Fraction(2) ** e > a else e


def rne_to(x: Fraction, p: int, emin: int, emax: int):
    """Round an exact non-zero rational to precision p, exponent range [emin, emax], ties to even.

    Returns the rounded value as a Fraction, or +-inf as a float on overflow.
    """
    neg = x < 0
    a = -x if neg else x
    e = max(floor_log2(a), emin)            # binade, or the subnormal range
    q = e - (p - 1)                         # value of one unit in the last place
    num, den = a.numerator, a.denominator
    if q >= 0:
        den <<= q
    else:
        num <<= -q
    n, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and n & 1):
        n += 1
    if n and n.bit_length() - 1 + q > emax:  # >= 2^(emax+1): overflow
        return -math.inf if neg else math.inf
    v = Fraction(n) * Fraction(2) ** q
    return -v if neg else v


def rne_binary32(x: Fraction) -> np.float32:
    """Round an exact rational to binary32: RNE, subnormals, overflow to +-inf, sign of zero kept."""
    if x == 0:
        return np.float32(0.0)
    r = rne_to(x, 24, -126, 127)
    if isinstance(r, float):
        return np.float32(r)
    return np.float32(float(r)) if r != 0 else np.float32(-0.0 if x < 0 else 0.0)
