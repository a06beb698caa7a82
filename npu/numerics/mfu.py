"""MFU arithmetic, bit for bit (docs/numerics.md, "Multi-function unit").

Values live in the MFU format (fp16, bf16 or fp32).  add, sub and mul are
IEEE 754 operations rounded to nearest-even in that format; max, min, ReLU and
the scalar forms follow the rules below; sigmoid and tanh are piecewise
linear over a fixed 512-segment table evaluated in binary32.  Every NaN a
unit produces is the format's canonical quiet NaN.
"""
from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np

from .formats import FloatFormat, FormatError, get_format

CANONICAL_NAN_BITS = {"fp16": 0x7E00, "bf16": 0x7FC0, "fp32": 0x7FC00000}

#: Piecewise-linear activation table: segments of width 1/32 over [-8, 8).
ACT_LO = -8.0
ACT_SEGMENTS_PER_UNIT = 32
ACT_SEGMENTS = 512


def mfu_format(name: str) -> FloatFormat:
    """The FloatFormat of an MFU format name."""
    fmt = get_format(name)
    if not isinstance(fmt, FloatFormat):
        raise FormatError(f"{name!r} is not an MFU format (fp16, bf16, fp32)")
    return fmt


def canonical_nan(fmt: str) -> np.ndarray:
    """The canonical quiet NaN of an MFU format, as a 0-d array of that type."""
    f = mfu_format(fmt)
    bits = np.array(CANONICAL_NAN_BITS[f.name], np.uint32 if f.bits == 32 else np.uint16)
    return bits.view(f.dtype)


def to_format(values, fmt: str) -> np.ndarray:
    """Round binary32/binary64 values to an MFU format (RNE, overflow to infinity, canonical NaN)."""
    f = mfu_format(fmt)
    x = np.asarray(values)
    with np.errstate(over="ignore", invalid="ignore"):
        if x.dtype != np.float64:
            x = x.astype(np.float32, copy=False)
        out = x.astype(f.dtype, copy=False)
    nan = np.isnan(out)
    return np.where(nan, canonical_nan(fmt), out) if nan.any() else out


def _f32(x) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x).astype(np.float32)


def _round(x32: np.ndarray, fmt: str) -> np.ndarray:
    return to_format(x32, fmt)


def add(x, y, fmt: str) -> np.ndarray:
    """x + y, rounded to ``fmt``."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _round(_f32(x) + _f32(y), fmt)


def sub(x, y, fmt: str) -> np.ndarray:
    """x - y, rounded to ``fmt``."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _round(_f32(x) - _f32(y), fmt)


def mul(x, y, fmt: str) -> np.ndarray:
    """x * y, rounded to ``fmt``."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _round(_f32(x) * _f32(y), fmt)


def maximum(x, y, fmt: str) -> np.ndarray:
    """max(x, y): y where y > x, else x; NaN if either is NaN."""
    a, b = _f32(x), _f32(y)
    out = np.where(b > a, b, a)
    out = np.where(np.isnan(a) | np.isnan(b), np.float32(np.nan), out)
    return _round(out, fmt)


def minimum(x, y, fmt: str) -> np.ndarray:
    """min(x, y): y where y < x, else x; NaN if either is NaN."""
    a, b = _f32(x), _f32(y)
    out = np.where(b < a, b, a)
    out = np.where(np.isnan(a) | np.isnan(b), np.float32(np.nan), out)
    return _round(out, fmt)


def relu(x, fmt: str) -> np.ndarray:
    """x where x > 0, else +0; NaN stays NaN."""
    a = _f32(x)
    out = np.where(a > 0, a, np.float32(0.0))
    out = np.where(np.isnan(a), np.float32(np.nan), out)
    return _round(out, fmt)


def scalar(value: float, fmt: str) -> np.ndarray:
    """A scalar register's binary32 value as an MFU operand (rounded to ``fmt``)."""
    return to_format(np.float32(value), fmt)


def rne_binary32(value: Fraction) -> np.float32:
    """Round an exact rational to binary32 (ties to even; subnormals; overflow to infinity)."""
    if value == 0:
        return np.float32(0.0)
    sign = -1 if value < 0 else 1
    mag = abs(value)
    e = mag.numerator.bit_length() - mag.denominator.bit_length()
    if Fraction(2) ** e > mag:
        e -= 1
    e = max(e, -126)                           # subnormals share the smallest normal exponent
    scaled = mag / Fraction(2) ** (e - 23)     # 24-bit significand
    q, rem = divmod(scaled.numerator, scaled.denominator)
    twice = 2 * rem
    if twice > scaled.denominator or (twice == scaled.denominator and q & 1):
        q += 1
    with np.errstate(over="ignore"):
        return np.float32(sign * float(Fraction(q) * Fraction(2) ** (e - 23)))


def _sigmoid_dec(x: Decimal) -> Decimal:
    return 1 / (1 + (-x).exp())


def _tanh_dec(x: Decimal) -> Decimal:
    t = (-2 * x).exp()
    return (1 - t) / (1 + t)


def _act_table(func) -> tuple[np.ndarray, np.ndarray]:
    """Intercepts a_i = f(k_i) and slopes b_i = f(k_{i+1}) - f(k_i), rounded to binary32.

    f is evaluated with 50 significant decimal digits, so the table is the same
    on every platform (no dependence on a libm).
    """
    with localcontext() as ctx:
        ctx.prec = 50
        knots = [Decimal(ACT_LO) + Decimal(i) / ACT_SEGMENTS_PER_UNIT for i in range(ACT_SEGMENTS + 1)]
        f = [func(k) for k in knots]
        a = np.array([rne_binary32(Fraction(v)) for v in f[:-1]], np.float32)
        b = np.array([rne_binary32(Fraction(f[i + 1] - f[i])) for i in range(ACT_SEGMENTS)], np.float32)
    return a, b


_TABLES: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_TABLE_FUNCS = {"SIGMOID_TABLE": _sigmoid_dec, "TANH_TABLE": _tanh_dec}


def __getattr__(name: str):
    """SIGMOID_TABLE and TANH_TABLE are built on first use (about 0.2 s each)."""
    if name in _TABLE_FUNCS:
        if name not in _TABLES:
            _TABLES[name] = _act_table(_TABLE_FUNCS[name])
        return _TABLES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _piecewise(x, table, lo_value: float, hi_value: float, fmt: str) -> np.ndarray:
    a_tab, b_tab = table
    x32 = _f32(x)
    u = ((x32 + np.float32(-ACT_LO)) * np.float32(ACT_SEGMENTS_PER_UNIT)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        inside = (u >= 0) & (u < ACT_SEGMENTS)
        idx = np.where(inside, np.floor(np.where(inside, u, 0)), 0).astype(np.int64)
    t = (u - idx.astype(np.float32)).astype(np.float32)
    y = (a_tab[idx] + (b_tab[idx] * t).astype(np.float32)).astype(np.float32)
    y = np.where(u < 0, np.float32(lo_value), y)
    y = np.where(u >= ACT_SEGMENTS, np.float32(hi_value), y)
    y = np.where(np.isnan(x32), np.float32(np.nan), y)
    return _round(y, fmt)


def sigmoid(x, fmt: str) -> np.ndarray:
    """Table sigmoid: 0 below -8, 1 at and above 8, linear within each 1/32 segment."""
    return _piecewise(x, __getattr__("SIGMOID_TABLE"), 0.0, 1.0, fmt)


def tanh(x, fmt: str) -> np.ndarray:
    """Table tanh: -1 below -8, 1 at and above 8, linear within each 1/32 segment."""
    return _piecewise(x, __getattr__("TANH_TABLE"), -1.0, 1.0, fmt)


def reduce_sum(vectors, fmt: str) -> np.ndarray:
    """Sum over the first axis: binary32 accumulation from +0 in order, then rounded to ``fmt``."""
    v = _f32(vectors)
    acc = np.zeros(v.shape[1:], np.float32)
    for i in range(v.shape[0]):
        acc = (acc + v[i]).astype(np.float32)
    return _round(acc, fmt)


def reduce_max(vectors, fmt: str) -> np.ndarray:
    """Running :func:`maximum` over the first axis, in order."""
    v = np.asarray(vectors)
    acc = v[0]
    for i in range(1, v.shape[0]):
        acc = maximum(acc, v[i], fmt)
    return _round(_f32(acc), fmt)


def accumulator_to_format(acc32, fmt: str) -> np.ndarray:
    """The MVU's binary32 accumulator converted to the MFU format."""
    return _round(_f32(acc32), fmt)
