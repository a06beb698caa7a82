"""The MVU dot-product contract (docs/numerics.md, "Matrix-vector multiply").

For one output element, the reduction of length K is cut into reduction
blocks of B elements (B = the smaller block of the two operand formats).
Each block's partial sum ``P_b`` is the *exact* sum of the exact products,
rounded once to binary32 (round to nearest, ties to even).  The accumulator
starts at +0.0 and adds ``P_0, P_1, ...`` in block order, rounding to
binary32 after every addition.  A block holding a NaN scale or a non-finite
element gives ``P_b = NaN``.

Exact block sums cost one BLAS GEMM per block: when the integer sum of a
block provably fits binary32 (24 bits) or binary64 (53 bits) the GEMM is
exact in any summation order.  Pairs that need more (MXFP8 E5M2) are split
into high and low element bands whose four GEMMs are each exact, and the
bands are combined exactly in integer limbs before the one rounding.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from .formats import BlockFormat, FormatError
from .quantize import BlockTensor, element_values, scale_values


def _element_span_bits(fmt: BlockFormat) -> float:
    """log2(largest element magnitude / smallest element quantum)."""
    return math.log2(fmt.element.max_normal / fmt.element.quantum_min)


def reduction_block(wfmt: BlockFormat, xfmt: BlockFormat, native_dim: int) -> int:
    """Reduction block length for a weight/activation format pair."""
    bw, bx = wfmt.block_for(native_dim), xfmt.block_for(native_dim)
    small, large = min(bw, bx), max(bw, bx)
    if large % small:
        raise FormatError(f"blocks of {wfmt.name} ({bw}) and {xfmt.name} ({bx}) do not nest")
    return small


def exact_sum_bits(wfmt: BlockFormat, xfmt: BlockFormat, block: int) -> float:
    """Bits an exact block sum may need, counted in units of the smallest product."""
    return _element_span_bits(wfmt) + _element_span_bits(xfmt) + math.log2(block)


def gemm_plan(wfmt: BlockFormat, xfmt: BlockFormat, block: int) -> str:
    """How block sums are computed exactly: ``"f32"``, ``"f64"`` or ``"split"``."""
    bits = exact_sum_bits(wfmt, xfmt, block)
    if bits < 24:
        return "f32"
    if bits < 53:
        return "f64"
    return "split"


def _split_bands(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    high = np.where(np.abs(vals) >= 1.0, vals, 0.0)
    return high, vals - high


def _round_to_odd_f64(parts: list[np.ndarray], quantum: float) -> np.ndarray:
    """The exact sum of ``parts`` (float64 integer multiples of ``quantum``), rounded to odd in binary64.

    Rounding to odd at 53 bits and then to nearest-even at 24 bits equals one
    correct rounding of the exact sum to binary32.
    """
    hi = np.zeros(parts[0].shape, np.int64)
    lo = np.zeros(parts[0].shape, np.int64)
    two32 = float(1 << 32)
    for p in parts:
        v = p / quantum                       # exact: integer-valued float64
        h = np.floor(v / two32)
        hi += h.astype(np.int64)
        lo += (v - h * two32).astype(np.int64)
    hi += lo >> 32
    lo &= (1 << 32) - 1
    a = hi.astype(np.float64) * two32
    b = lo.astype(np.float64)
    s = a + b
    bb = s - a
    err = (a - (s - bb)) + (b - bb)
    fix = (err != 0) & ((s.view(np.int64) & 1) == 0)
    s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s * quantum


def _nan_scales_for_nonfinite(v: np.ndarray, scales: np.ndarray, *, weights: bool):
    """(values with non-finite elements zeroed, scales with NaN for every block holding one).

    ``v`` is an activation operand (..., M, B) with ``scales`` (M, nb), or a
    weight operand (g, ..., B, C' <= C) with ``scales`` (g * C, nb) (see
    :func:`matvec_blocks`).  A NaN scale already makes its block's partial
    sum NaN, so one rule covers both causes.
    """
    finite = np.isfinite(v)
    if finite.all():
        return v, scales
    if weights:                                       # (g, ..., C') -> (g, nb, C) -> (g * C, nb)
        bad = ~finite.all(axis=-2)
        g, live = bad.shape[0], bad.shape[-1]
        full = np.zeros((g, scales.shape[1], scales.shape[0] // g), np.bool_)
        full[:, :, :live] = bad.reshape(g, -1, live)
        bad = full.transpose(0, 2, 1).reshape(scales.shape)
    else:                                             # (..., M) -> (nb, M) -> (M, nb)
        bad = (~finite.all(axis=-1)).reshape(-1, scales.shape[0]).T
    return np.where(finite, v, 0), np.where(bad, np.nan, scales)


def block_sums(x: np.ndarray, w: np.ndarray, plan: str, quantum: float) -> np.ndarray:
    """Exact sums of every reduction block: ``x`` (..., M, B) @ ``w`` (..., B, C), block dims broadcast.

    Elements are finite exact values (scales left out).  ``"f32"`` and
    ``"f64"`` are one batched GEMM, exact in that precision in any summation
    order; ``"split"`` gives the exact sums rounded to odd in binary64 (four
    exact GEMMs over high and low element bands, combined in integer limbs),
    which round to binary32 as the exact sums would.
    """
    if plan == "f32":
        return np.matmul(x, w)
    x, w = x.astype(np.float64), w.astype(np.float64)
    if plan == "f64":
        return np.matmul(x, w)
    xh, xl = _split_bands(x)
    wh, wl = _split_bands(w)
    return _round_to_odd_f64([xh @ wh, xh @ wl, xl @ wh, xl @ wl], quantum)


@numba.njit(cache=True, nogil=True, inline="always")
def accumulate_row(sums, block_major, in_binary32, xs, ws_t, m, g, acc):
    """``acc`` (C,) = output row ``m``, group ``g`` of the accumulator of :class:`BlockSums` fields.

    acc[c] = binary32 sum over b, in order, of RNE32(P[g, b, m, c] * xs[m, b] * ws_t[b, g*C + c]), where
    ``P[g, b, m, c]`` is ``sums[b, m, g, c]`` when ``block_major``, else
    ``sums[g, b, m, c]``.  The scale product is an exact power of two (NaN
    for a NaN block), so each term is the block's exact sum rounded once to
    binary32: in binary64, or in binary32 when the sums are exact in
    binary32 (binary32, or int32 below 2**24) and ``xs`` / ``ws_t`` are
    binary32 whose products are binary32 numbers (see :func:`_binary32_scales`):
    ``in_binary32``.  The sums may hold only the first C' columns; the
    others are sums of zero weights: 0, or NaN for a NaN block.
    """
    cols = acc.shape[0]
    live = sums.shape[3]
    acc[:] = np.float32(0.0)
    for b in range(xs.shape[1]):
        sx = xs[m, b]
        ws = ws_t[b, g * cols:(g + 1) * cols]
        row = sums[b, m, g] if block_major else sums[g, b, m]
        if in_binary32:
            for c in range(live):
                acc[c] = np.float32(acc[c] + np.float32(row[c]) * (sx * ws[c]))
        else:
            for c in range(live):
                acc[c] = np.float32(acc[c] + np.float32(row[c] * (sx * ws[c])))
        for c in range(live, cols):
            acc[c] = np.float32(acc[c] + np.float32(0.0 * (sx * ws[c])))


@numba.njit(cache=True, nogil=True, parallel=True)
def _accumulate(sums, block_major, in_binary32, xs, ws_t, out):
    """``out`` (M, g * C): every row of the accumulator (:func:`accumulate_row`)."""
    groups = sums.shape[2] if block_major else sums.shape[0]
    cols = out.shape[1] // groups
    for m in numba.prange(xs.shape[0]):
        for g in range(groups):
            accumulate_row(sums, block_major, in_binary32, xs, ws_t, m, g, out[m, g * cols:(g + 1) * cols])


class BlockSums(NamedTuple):
    """Exact block sums with their scales: what the MVU accumulator is made from (:func:`accumulate_row`)."""

    sums: np.ndarray        #: (g, nb, M, C') or, block-major, (nb, M, g, C'); C-contiguous
    block_major: bool
    in_binary32: bool       #: terms are formed in binary32 (exactly as in binary64)
    xs: np.ndarray          #: (M, nb) activation scale values
    ws_t: np.ndarray        #: (nb, g * C) weight scale values

    @classmethod
    def of(cls, sums: np.ndarray, xs: np.ndarray, ws: np.ndarray, *, block_major: bool = False) -> "BlockSums":
        """From exact sums (binary32, int32 below 2**24, or binary64 exact or rounded to odd) and scales
        ``xs`` (M, nb), ``ws`` (g * C, nb)."""
        exact32 = sums.dtype in (np.float32, np.int32)
        sdt = np.float32 if exact32 and _binary32_scales(xs, ws) else np.float64
        return cls(np.ascontiguousarray(sums), block_major, sdt == np.float32, np.ascontiguousarray(xs, sdt),
                   np.ascontiguousarray(ws.T, sdt))

    def accumulate(self) -> np.ndarray:
        """The MVU accumulator (M, g * C), binary32."""
        out = np.empty((self.xs.shape[0], self.ws_t.shape[1]), np.float32)
        _accumulate(*self, out)
        return out


def matvec_blocks(x: np.ndarray, xs: np.ndarray, w: np.ndarray, ws: np.ndarray, plan: str, quantum: float, *,
                  check_x: bool = True, check_w: bool = True) -> np.ndarray:
    """The MVU accumulator (M, g * C) from operands laid out block by block (any strides).

    ``x`` (..., M, B) and ``w`` (g, ..., B, C') hold exact element values;
    their block dimensions ``...`` broadcast and, flattened, number the
    ``nb`` reduction blocks in order.  Output column ``g * C + c`` uses
    ``w[g, ..., :, c]``; ``xs`` (M, nb) and ``ws`` (g * C, nb) are the
    block scale values (2**s, NaN for a NaN block).  Zero weights may be
    left out: ``w`` may hold only the first C' <= C columns of each group
    and, with ``x``, only the first elements of each block.  ``check_x`` /
    ``check_w=False`` skip the search for non-finite elements, for operands
    whose format cannot encode any.
    """
    return matvec_block_sums(x, xs, w, ws, plan, quantum, check_x=check_x, check_w=check_w).accumulate()


def matvec_block_sums(x: np.ndarray, xs: np.ndarray, w: np.ndarray, ws: np.ndarray, plan: str, quantum: float, *,
                      check_x: bool = True, check_w: bool = True) -> BlockSums:
    """The block sums of :func:`matvec_blocks`, not yet accumulated."""
    if check_x:
        x, xs = _nan_scales_for_nonfinite(x, xs, weights=False)
    if check_w:
        w, ws = _nan_scales_for_nonfinite(w, ws, weights=True)
    sums = block_sums(x, w, plan, quantum)
    return BlockSums.of(sums.reshape((-1, xs.shape[1]) + sums.shape[-2:]), xs, ws)


_TINY, _HUGE = 2.0 ** -149, 2.0 ** 127


def _binary32_scales(xs: np.ndarray, ws: np.ndarray) -> bool:
    """Whether all scale values and their products are binary32 numbers (no flush to 0 or infinity).

    Then an exact binary32 block sum times the binary32 scale product,
    rounded once by the binary32 multiply, equals the binary64 term rounded
    to binary32.  NaN scales propagate either way.
    """
    lo_x, hi_x = np.fmin.reduce(xs, axis=None), np.fmax.reduce(xs, axis=None)
    lo_w, hi_w = np.fmin.reduce(ws, axis=None), np.fmax.reduce(ws, axis=None)
    return bool(min(lo_x, lo_w, lo_x * lo_w) >= _TINY and max(hi_x, hi_w, hi_x * hi_w) <= _HUGE)


def _block_views(we: np.ndarray, xe: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Views of ``xe`` (M, K) as (nb, M, B) and of ``we`` (R, K) as (1, nb, B, R)."""
    r, k = we.shape
    m = xe.shape[0]
    nb = k // block
    return xe.reshape(m, nb, block).transpose(1, 0, 2), we.reshape(r, nb, block).transpose(1, 2, 0)[None]


def _decoded(t: BlockTensor, block: int) -> tuple[np.ndarray, np.ndarray]:
    return element_values(t.fmt, t.codes), np.repeat(scale_values(t.fmt, t.scales), t.block // block, axis=-1)


def _operands(w: BlockTensor, x: BlockTensor, native_dim: int):
    if w.codes.ndim != 2 or x.codes.ndim != 2 or w.codes.shape[1] != x.codes.shape[1]:
        raise FormatError(f"operand shapes {w.codes.shape} and {x.codes.shape} do not form a matrix-vector product")
    block = reduction_block(w.fmt, x.fmt, native_dim)
    plan = gemm_plan(w.fmt, x.fmt, block)
    quantum = w.fmt.element.quantum_min * x.fmt.element.quantum_min
    return _decoded(w, block) + _decoded(x, block) + (block, plan, quantum)


def block_partial_sums(w: BlockTensor, x: BlockTensor, native_dim: int) -> np.ndarray:
    """Per-block partial sums ``P_b`` rounded to binary32.

    ``w`` has shape (R, K), ``x`` has shape (M, K); the result has shape
    (M, R, K // B).
    """
    we, ws, xe, xs, block, plan, quantum = _operands(w, x, native_dim)
    xv, wv = _block_views(we, xe, block)
    xv, xs = _nan_scales_for_nonfinite(xv, xs, weights=False)
    wv, ws = _nan_scales_for_nonfinite(wv, ws, weights=True)
    sums = block_sums(xv, wv, plan, quantum)[0]                   # (nb, M, R)
    scale = xs.T[:, :, None] * ws.T[:, None, :]                   # exact powers of two, NaN for NaN blocks
    return (sums * scale).astype(np.float32).transpose(1, 2, 0)


def accumulate_blocks(partials: np.ndarray) -> np.ndarray:
    """Sequential binary32 accumulation over the last axis, starting at +0.0."""
    acc = np.zeros(partials.shape[:-1], np.float32)
    for b in range(partials.shape[-1]):
        acc = (acc + partials[..., b]).astype(np.float32)
    return acc


def elements_always_finite(fmt: BlockFormat) -> bool:
    """Whether no element code of ``fmt`` decodes to an infinity or NaN."""
    el = fmt.element
    if el.kind != "fp":
        return True
    codes = np.arange(1 << el.bits, dtype=np.uint8).view(el.dtype).astype(np.float64)
    return bool(np.isfinite(codes).all())


def matvec_decoded(we: np.ndarray, ws: np.ndarray, xe: np.ndarray, xs: np.ndarray,
                   block: int, plan: str, quantum: float) -> np.ndarray:
    """The MVU accumulator (M, R) from decoded operands (see :func:`matvec_blocks`).

    ``we`` (R, K) and ``xe`` (M, K) are exact element values (scales left
    out); ``ws`` (R, K // B) and ``xs`` (M, K // B) are the scale values
    (2**s, NaN for a NaN block) already repeated to the reduction block.
    """
    x, w = _block_views(we, xe, block)
    return matvec_blocks(x, xs, w, ws, plan, quantum)


def matvec(w: BlockTensor, x: BlockTensor, native_dim: int) -> np.ndarray:
    """The MVU result (binary32 accumulator) of ``w`` (R, K) times each row of ``x`` (M, K)."""
    return matvec_decoded(*_operands(w, x, native_dim))
