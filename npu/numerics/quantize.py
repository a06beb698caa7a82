"""Block quantisation: binary32 values -> (shared scales, element codes), and back.

One rule covers every block format (docs/numerics.md, "Conversion"):
``shared = clamp(floor(log2(max|v|)) - emax_elem)``, then each element
``v / 2**shared`` is rounded to nearest-even onto the element grid and
saturated to the element's largest finite magnitude.  A block holding a NaN
or an infinity gets the NaN scale.  The per-element arithmetic runs in a Numba
kernel; element bit patterns come from ml_dtypes where it has the type.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from .float_bits import U32, as_bits, from_bits, widen_bf16, widen_fp16
from .formats import BlockFormat, FormatError, get_format

_KIND_CODE = {"sm": 0, "int": 1, "fp": 2}


@dataclass(frozen=True)
class BlockTensor:
    """A quantised tensor: blocks run along the last axis.

    ``scales`` has shape ``(..., K // block)`` (uint8 scale codes);
    ``codes`` has shape ``(..., K)`` (element codes, uint8 or uint16).
    """

    fmt: BlockFormat
    block: int
    scales: np.ndarray
    codes: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the value tensor."""
        return self.codes.shape

    def values(self) -> np.ndarray:
        """Exact values as float64 (see :func:`dequantize`)."""
        return dequantize(self)


_POW2_OFFSET = 400
_POW2 = np.ldexp(1.0, np.arange(-_POW2_OFFSET, _POW2_OFFSET + 1))


@numba.njit(cache=True, nogil=True, inline="always")
def _largest_magnitude_bits(xb):
    """max(bits & 0x7FFFFFFF) over binary32 bit patterns ``xb``: integer order is magnitude order."""
    top = U32(0)
    for e in range(xb.shape[0]):
        v = U32(xb[e] & U32(0x7FFFFFFF))
        top = U32(v if v > top else top)
    return top


@numba.njit(cache=True, nogil=True)
def _quantize_row(x, xbits, block, kind, frac_bits, mag_max, mbits, emin_e, max_normal, emax_elem,
                  scale_lo, scale_hi, scale_bias, scale_nan, sign_shift, pow2, want_values, q_out, c_out, s_out):
    """Quantise one row of binary32 ``x`` (``xbits`` is its uint32 view), block by block.

    kind 0/1 (sign-magnitude / two's-complement integers) write element codes
    to ``c_out``; kind 2 (minifloats) writes exact element values to ``q_out``
    for ml_dtypes to encode.  With ``want_values`` every kind writes its exact
    element values to ``q_out`` (no codes).
    """
    nblk = x.shape[0] // block
    off = 400
    for b in range(nblk):
        lo = b * block
        top = _largest_magnitude_bits(xbits[lo:lo + block])
        if top >= np.uint32(0x7F800000):                 # a NaN or an infinity
            s_out[b] = scale_nan
            for j in range(lo, lo + block):
                if kind == 2 or want_values:
                    q_out[j] = 0.0
                else:
                    c_out[j] = 0
            continue
        if top == 0:
            shared = scale_lo
        else:
            amax = np.float64(np.uint32(top).view(np.float32))
            shared = math.frexp(amax)[1] - 1 - emax_elem
            shared = min(max(shared, scale_lo), scale_hi)
        s_out[b] = shared + scale_bias
        if kind != 2:
            mul = pow2[off + frac_bits - shared]
            quantum = pow2[off - frac_bits]
            # branch-free loops (they vectorise): M = min(RNE(|u|), mag_max) with the sign of u
            if want_values:
                for j in range(lo, lo + block):
                    u = np.float64(x[j]) * mul
                    m = min(np.rint(abs(u)), mag_max)
                    q_out[j] = np.copysign(m, u) * quantum + 0.0      # + 0.0: a zero element is +0
            elif kind == 0:
                for j in range(lo, lo + block):
                    u = np.float64(x[j]) * mul
                    mi = np.int64(min(np.rint(abs(u)), mag_max))
                    c_out[j] = mi | (np.int64(u < 0 and mi != 0) << sign_shift)   # zeros carry sign 0
            else:
                for j in range(lo, lo + block):
                    u = np.float64(x[j]) * mul
                    mi = np.int64(min(np.rint(abs(u)), mag_max))
                    c_out[j] = (-mi if u < 0 else mi) & 0xFF
        else:
            for j in range(lo, lo + block):
                bits = xbits[j]
                ex = np.int64((bits >> 23) & 0xFF)
                if ex == 0:                              # binary32 subnormal input
                    ex = math.frexp(np.float64(x[j]))[1] if x[j] != 0 else -1000
                else:
                    ex = ex - 126
                e = ex - 1 - shared                      # exponent of x / 2**shared
                if e < emin_e:
                    e = emin_e
                a = abs(np.float64(x[j])) * pow2[off - shared]
                q = np.rint(a * pow2[off + mbits - e]) * pow2[off + e - mbits]
                if q > max_normal:
                    q = max_normal
                if q == 0.0:
                    q_out[j] = 0.0
                elif x[j] < 0:
                    q_out[j] = -q
                else:
                    q_out[j] = q


@numba.njit(cache=True, nogil=True, parallel=True)
def _quantize_kernel(x, xbits, block, kind, frac_bits, mag_max, mbits, emin_e, max_normal, emax_elem,
                     scale_lo, scale_hi, scale_bias, scale_nan, sign_shift, pow2, want_values, q_out, c_out, s_out):
    """Quantise every row of ``x`` (see :func:`_quantize_row`); unused outputs may be (1, 1) dummies."""
    rows = x.shape[0]
    for i in numba.prange(rows):
        qi = i if q_out.shape[0] == rows else i - i     # i - i keeps i's integer type (0 would unify to float)
        ci = i if c_out.shape[0] == rows else i - i
        _quantize_row(x[i], xbits[i], block, kind, frac_bits, mag_max, mbits, emin_e, max_normal, emax_elem,
                      scale_lo, scale_hi, scale_bias, scale_nan, sign_shift, pow2, want_values, q_out[qi],
                      c_out[ci], s_out[i])


@numba.njit(cache=True, nogil=True, parallel=True)
def _gather_quantize_kernel(vbits, lut, addr, block, kind, frac_bits, mag_max, mbits, emin_e, max_normal,
                            emax_elem, scale_lo, scale_hi, scale_bias, scale_nan, sign_shift, pow2, q_out, s_out):
    """Rows of 16-bit vectors ``vbits[addr[i, :]]``, widened to binary32 by ``lut``, quantised to values."""
    rows, k = addr.shape
    n = vbits.shape[1]
    dummy = np.empty(1, np.uint16)                    # not np.zeros: that would be a parallel loop of its own
    dummy[0] = 0
    for i in numba.prange(rows):
        x = np.empty(k * n, np.float32)
        for j in range(k):
            src = vbits[addr[i, j]]
            for e in range(n):
                x[j * n + e] = lut[src[e]]
        _quantize_row(x, x.view(np.uint32), block, kind, frac_bits, mag_max, mbits, emin_e, max_normal,
                      emax_elem, scale_lo, scale_hi, scale_bias, scale_nan, sign_shift, pow2, True, q_out[i],
                      dummy, s_out[i])


@numba.njit(cache=True, nogil=True, inline="always")
def _fixed_point_values(q, mul, mag_max, quantum):
    """``q`` = element values of ``q`` scaled by ``mul``: RNE to integers, saturated to ``mag_max``."""
    for e in range(q.shape[0]):
        u = q[e] * mul
        a = np.rint(abs(u))
        m = a if a < mag_max else mag_max
        q[e] = (-m if u < 0 else m) * quantum + np.float32(0.0)      # + 0.0: a zero element is +0


@numba.njit(cache=True, nogil=True, parallel=True)
def _gather_quantize_fixed_kernel(vbits, bf16, addr, block, frac_bits, mag_max, emax_elem, scale_lo, scale_hi,
                                  scale_bias, scale_nan, q_out, s_out, want_ints, offset, ints_out):
    """:func:`_gather_quantize_kernel` for fixed-point elements (sm/int), in binary32 arithmetic.

    Vectors are widened arithmetically into ``q_out`` and quantised there.
    Equal to the binary64 rule when ``2**(frac_bits - shared)`` is a normal
    binary32 for every shared exponent: scaling is then exact, except that a
    product overflowing to infinity saturates (as its exact value would) and
    one below 2**-126 rounds to zero (as its exact value would).  With
    ``want_ints``, ``ints_out`` receives each element's integer (value /
    quantum) plus ``offset`` instead, and ``q_out`` may be a (1, 1) dummy.
    """
    rows, k = addr.shape
    n = vbits.shape[1]
    magf = np.float32(mag_max)
    quantum = np.float32(2.0 ** -frac_bits)
    per_quantum = np.float32(2.0 ** frac_bits)
    for i in numba.prange(rows):
        q = np.empty(k * n, np.float32) if want_ints else q_out[i]
        qb = q.view(np.uint32)
        for j in range(k):
            src = vbits[addr[i, j]]
            dst = qb[j * n:(j + 1) * n]
            if bf16:
                for e in range(n):
                    dst[e] = as_bits(widen_bf16(src[e]))
            else:
                for e in range(n):
                    dst[e] = as_bits(widen_fp16(src[e]))
        for b in range(q.shape[0] // block):
            lo = b * block
            top = _largest_magnitude_bits(qb[lo:lo + block])
            if top >= U32(0x7F800000):                           # a NaN or an infinity
                s_out[i, b] = scale_nan
                q[lo:lo + block] = np.float32(0.0)
                continue
            if top == 0:
                shared = scale_lo
            elif top < U32(0x00800000):                         # binary32 subnormal
                shared = math.frexp(np.float64(from_bits(top)))[1] - 1 - emax_elem
            else:
                shared = np.int64(top >> U32(23)) - 127 - emax_elem
            shared = min(max(shared, scale_lo), scale_hi)
            s_out[i, b] = shared + scale_bias
            _fixed_point_values(q[lo:lo + block], np.float32(2.0 ** (frac_bits - shared)), magf, quantum)
        if want_ints:
            dst = ints_out[i]
            for e in range(k * n):
                dst[e] = np.uint8(np.int32(q[e] * per_quantum) + np.int32(offset))


def _binary32_scaling_is_exact(fmt: BlockFormat) -> bool:
    """Whether :func:`_gather_quantize_fixed_kernel` applies: fixed-point elements, scalings normal in binary32."""
    el = fmt.element
    return el.kind != "fp" and el.frac_bits - fmt.scale_emin <= 127 and el.frac_bits - fmt.scale_emax >= -126


def _as_rows(values, block: int, name: str) -> np.ndarray:
    x = np.asarray(values)
    if x.ndim == 0:
        raise FormatError(f"{name}: cannot quantise a scalar; give a vector or tensor")
    if x.shape[-1] % block:
        raise FormatError(
            f"{name}: last axis has {x.shape[-1]} values, not a multiple of the block size {block}; pad it")
    return np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)


def _block_size(fmt: BlockFormat, native_dim: int | None) -> int:
    if fmt.block == 0 and native_dim is None:
        raise FormatError(f"{fmt.name} blocks are one native vector: give native_dim")
    return fmt.block_for(native_dim or 0)


def _resolve(fmt) -> BlockFormat:
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    if not isinstance(fmt, BlockFormat):
        raise FormatError(f"{fmt.name} is not a block format")
    return fmt


def _run_kernel(values, fmt: BlockFormat, native_dim: int | None, want_values: bool = False):
    block = _block_size(fmt, native_dim)
    x = _as_rows(values, block, fmt.name)
    el = fmt.element
    kind = _KIND_CODE[el.kind]
    as_values = kind == 2 or want_values
    q = np.empty(x.shape if as_values else (1, 1), np.float32)
    c = np.empty((1, 1) if as_values else x.shape, np.uint16 if el.bits > 8 else np.uint8)
    s = np.empty((x.shape[0], x.shape[1] // block), np.uint8)
    _quantize_kernel(x, x.view(np.uint32), block, kind, el.frac_bits, float(el.mag_max), el.mbits, el.emin,
                     float(el.max_normal), el.emax, fmt.scale_emin, fmt.scale_emax, fmt.scale_bias,
                     fmt.scale_nan, el.bits - 1, _POW2, want_values, q, c, s)
    shape = np.shape(values)
    scales = s.reshape(shape[:-1] + (shape[-1] // block,))
    if want_values:
        return block, q.reshape(shape), scales
    if kind == 2:
        return block, q.astype(el.dtype).view(np.uint8).reshape(shape), scales
    return block, c.reshape(shape), scales


def quantize_to_values(values, fmt, native_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Quantise, returning exact element values (binary32, scale left out) and scale codes.

    The same rounding as :func:`quantize`, for consumers (the simulator's
    MVU) that need values rather than bit patterns.
    """
    fmt = _resolve(fmt)
    _block, q, scales = _run_kernel(values, fmt, native_dim, want_values=True)
    return q, scales


_WIDEN: dict[str, np.ndarray] = {}


def _widen_table(dtype) -> np.ndarray:
    """binary32 value of every 16-bit pattern of ``dtype`` (fp16 or bf16)."""
    key = np.dtype(dtype).name
    if key not in _WIDEN:
        _WIDEN[key] = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dtype).astype(np.float32)
    return _WIDEN[key]


def gather_quantize_to_values(vectors: np.ndarray, addr: np.ndarray, fmt, native_dim: int):
    """Quantise rows made of gathered vectors: row i is ``vectors[addr[i, 0]], vectors[addr[i, 1]], ...``.

    ``vectors`` is (V, N) in a 16-bit float format (fp16 or bf16) or binary32.
    Returns exact element values (binary32, rows x len(addr[i]) * N) and scale
    codes, as :func:`quantize_to_values` of the gathered, widened rows would.
    """
    fmt = _resolve(fmt)
    addr = np.ascontiguousarray(addr, dtype=np.int64)
    if vectors.dtype.itemsize != 2:
        return quantize_to_values(vectors[addr].reshape(addr.shape[0], -1).astype(np.float32), fmt, native_dim)
    block, k = _gathered_rows(vectors, addr, fmt, native_dim)
    el = fmt.element
    q = np.empty((addr.shape[0], k), np.float32)
    s = np.empty((addr.shape[0], k // block), np.uint8)
    if _binary32_scaling_is_exact(fmt):
        _gather_fixed(vectors, addr, fmt, block, q, s, None, 0)
        return q, s
    _gather_quantize_kernel(np.ascontiguousarray(vectors).view(np.uint16), _widen_table(vectors.dtype), addr, block,
                            _KIND_CODE[el.kind], el.frac_bits, float(el.mag_max), el.mbits, el.emin,
                            float(el.max_normal), el.emax, fmt.scale_emin, fmt.scale_emax, fmt.scale_bias,
                            fmt.scale_nan, el.bits - 1, _POW2, q, s)
    return q, s


_NO_INTS = np.zeros((1, 1), np.uint8)
_NO_VALUES = np.zeros((1, 1), np.float32)


def integers_gather(fmt: BlockFormat, offset: int) -> bool:
    """Whether :func:`gather_quantize_to_integers` serves ``fmt`` with ``offset``."""
    el = fmt.element
    return _binary32_scaling_is_exact(fmt) and 0 <= offset - el.mag_max and offset + el.mag_max <= 255


def gather_quantize_to_integers(vectors: np.ndarray, addr: np.ndarray, fmt, native_dim: int, offset: int):
    """:func:`gather_quantize_to_values` with each element as its integer (value / quantum) plus ``offset``.

    For fixed-point formats (sm/int elements) whose integers plus ``offset``
    fit uint8, from 16-bit vectors; returns (uint8 integers, scale codes).
    """
    fmt = _resolve(fmt)
    if not (integers_gather(fmt, offset) and vectors.dtype.itemsize == 2):
        raise FormatError(f"{fmt.name}: elements plus {offset} are not uint8 integers here")
    addr = np.ascontiguousarray(addr, dtype=np.int64)
    block, k = _gathered_rows(vectors, addr, fmt, native_dim)
    ints = np.empty((addr.shape[0], k), np.uint8)
    s = np.empty((addr.shape[0], k // block), np.uint8)
    _gather_fixed(vectors, addr, fmt, block, _NO_VALUES, s, ints, offset)
    return ints, s


def _gathered_rows(vectors: np.ndarray, addr: np.ndarray, fmt: BlockFormat, native_dim: int) -> tuple[int, int]:
    """(block, values per gathered row), checking that blocks tile the rows."""
    block = _block_size(fmt, native_dim)
    k = addr.shape[1] * vectors.shape[1]
    if k % block:
        raise FormatError(f"{fmt.name}: rows of {k} values are not a multiple of the block size {block}")
    return block, k


def _gather_fixed(vectors, addr, fmt: BlockFormat, block: int, q, s, ints, offset: int) -> None:
    """:func:`_gather_quantize_fixed_kernel` into values ``q`` or, given ``ints``, integers plus ``offset``."""
    el = fmt.element
    _gather_quantize_fixed_kernel(np.ascontiguousarray(vectors).view(np.uint16), vectors.dtype != np.float16,
                                  addr, block, el.frac_bits, float(el.mag_max), el.emax, fmt.scale_emin,
                                  fmt.scale_emax, fmt.scale_bias, fmt.scale_nan, q, s, ints is not None, offset,
                                  _NO_INTS if ints is None else ints)


def quantize(values, fmt, native_dim: int | None = None) -> BlockTensor:
    """Quantise binary32 values to a block format (blocks along the last axis).

    Inputs in other float types are first converted to binary32.  Formats
    whose block is one native vector need ``native_dim``.
    """
    fmt = _resolve(fmt)
    block, codes, scales = _run_kernel(values, fmt, native_dim)
    return BlockTensor(fmt, block, scales, codes)


def _element_table(fmt: BlockFormat) -> np.ndarray:
    """Value of every element code of ``fmt`` (float64, exact), indexed by code."""
    el = fmt.element
    codes = np.arange(1 << el.bits, dtype=np.int64)
    if el.kind == "fp":
        return codes.astype(np.uint8).view(el.dtype).astype(np.float64)
    if el.kind == "int":
        return np.ldexp(codes.astype(np.uint8).view(np.int8).astype(np.float64), -el.frac_bits)
    mag_bits = el.bits - 1
    mag = codes & ((1 << mag_bits) - 1)
    sign = np.where((codes >> mag_bits) & 1, -1.0, 1.0)
    return np.ldexp(sign * mag, -el.frac_bits)


_TABLES: dict[tuple[str, str], np.ndarray] = {}


def element_values(fmt: BlockFormat, codes: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Element values (without the shared scale) of element codes, exact in ``dtype``.

    Every element of every block format is exact in binary32 as well as binary64.
    """
    key = (fmt.name, np.dtype(dtype).name)
    table = _TABLES.get(key)
    if table is None:
        table = _TABLES[key] = _element_table(fmt).astype(dtype)
    codes = np.asarray(codes)
    if codes.dtype.kind not in "ui":
        codes = codes.astype(np.int64)
    if codes.size and (codes.max() >= table.size or codes.min() < 0):
        raise FormatError(f"{fmt.name}: element code above {fmt.element.bits} bits")
    return table[codes]


def scale_values(fmt: BlockFormat, scale_codes: np.ndarray) -> np.ndarray:
    """Shared scales 2**(code - bias) as float64; the NaN code gives NaN."""
    codes = np.asarray(scale_codes).astype(np.int64)
    out = np.ldexp(1.0, codes - fmt.scale_bias)
    return np.where(codes == fmt.scale_nan, np.nan, out)


def dequantize(t: BlockTensor) -> np.ndarray:
    """Exact values of a block tensor as float64 (NaN blocks read NaN)."""
    el = element_values(t.fmt, t.codes)
    scale = scale_values(t.fmt, t.scales)
    return el * np.repeat(scale, t.block, axis=-1)


def fake_quantize(values, fmt, native_dim: int | None = None) -> np.ndarray:
    """Round-trip ``values`` through ``fmt``; returns the exact float64 values."""
    return dequantize(quantize(values, fmt, native_dim))
