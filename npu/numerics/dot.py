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


def _blocks(values: np.ndarray, block: int) -> np.ndarray:
    return values.reshape(values.shape[:-1] + (values.shape[-1] // block, block))


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


def block_partial_sums(w: BlockTensor, x: BlockTensor, native_dim: int) -> np.ndarray:
    """Per-block partial sums ``P_b`` rounded to binary32.

    ``w`` has shape (R, K), ``x`` has shape (M, K); the result has shape
    (M, R, K // B).
    """
    if w.codes.ndim != 2 or x.codes.ndim != 2 or w.codes.shape[1] != x.codes.shape[1]:
        raise FormatError(f"operand shapes {w.codes.shape} and {x.codes.shape} do not form a matrix-vector product")
    block = reduction_block(w.fmt, x.fmt, native_dim)
    plan = gemm_plan(w.fmt, x.fmt, block)
    we = _blocks(element_values(w.fmt, w.codes), block)           # (R, nb, B)
    xe = _blocks(element_values(x.fmt, x.codes), block)           # (M, nb, B)
    ws = np.repeat(scale_values(w.fmt, w.scales), w.block // block, axis=-1)   # (R, nb)
    xs = np.repeat(scale_values(x.fmt, x.scales), x.block // block, axis=-1)   # (M, nb)
    bad_w = ~np.isfinite(we).all(axis=-1) | np.isnan(ws)
    bad_x = ~np.isfinite(xe).all(axis=-1) | np.isnan(xs)
    we = np.where(np.isfinite(we), we, 0.0)
    xe = np.where(np.isfinite(xe), xe, 0.0)
    m, r, nb = xe.shape[0], we.shape[0], we.shape[1]
    out = np.empty((m, r, nb), np.float32)
    for b in range(nb):
        scale = xs[:, b, None] * ws[None, :, b]                   # exact powers of two
        if plan == "split":
            quantum = w.fmt.element.quantum_min * x.fmt.element.quantum_min
            wh, wl = _split_bands(we[:, b])
            xh, xl = _split_bands(xe[:, b])
            parts = [xh @ wh.T, xh @ wl.T, xl @ wh.T, xl @ wl.T]
            p = (_round_to_odd_f64(parts, quantum) * scale).astype(np.float32)
        elif plan == "f32":
            s32 = xe[:, b].astype(np.float32) @ we[:, b].astype(np.float32).T
            p = (s32.astype(np.float64) * scale).astype(np.float32)
        else:
            p = ((xe[:, b] @ we[:, b].T) * scale).astype(np.float32)
        bad = bad_x[:, b, None] | bad_w[None, :, b]
        out[:, :, b] = np.where(bad, np.float32(np.nan), p)
    return out


def accumulate_blocks(partials: np.ndarray) -> np.ndarray:
    """Sequential binary32 accumulation over the last axis, starting at +0.0."""
    acc = np.zeros(partials.shape[:-1], np.float32)
    for b in range(partials.shape[-1]):
        acc = (acc + partials[..., b]).astype(np.float32)
    return acc


def matvec(w: BlockTensor, x: BlockTensor, native_dim: int) -> np.ndarray:
    """The MVU result (binary32 accumulator) of ``w`` (R, K) times each row of ``x`` (M, K)."""
    return accumulate_blocks(block_partial_sums(w, x, native_dim))
