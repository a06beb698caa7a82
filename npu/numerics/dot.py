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


def _clear_nonfinite(v3: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values with non-finite elements zeroed, per-block flag: a non-finite element or a NaN scale)."""
    finite = np.isfinite(v3)
    bad = ~finite.all(axis=2) | np.isnan(scales)
    return (np.where(finite, v3, 0) if not finite.all() else v3), bad


def _iter_block_sums(we: np.ndarray, ws: np.ndarray, xe: np.ndarray, xs: np.ndarray,
                     block: int, plan: str, quantum: float):
    """Yield ``P_b`` (M, R) binary32 for each reduction block ``b`` in order.

    ``we`` (R, K) and ``xe`` (M, K) are exact element values (scales left
    out); ``ws`` (R, K // B) and ``xs`` (M, K // B) are the scale values
    (2**s, NaN for a NaN block) already repeated to the reduction block.
    """
    r, k = we.shape
    m = xe.shape[0]
    nb = k // block
    w3 = we.reshape(r, nb, block)
    x3 = xe.reshape(m, nb, block)
    w3, bad_w = _clear_nonfinite(w3, ws)                          # flags (R, nb)
    x3, bad_x = _clear_nonfinite(x3, xs)                          # flags (M, nb)
    if plan == "split":
        wt = w3.transpose(1, 0, 2).astype(np.float64)             # (nb, R, B)
        xt = x3.transpose(1, 0, 2).astype(np.float64)             # (nb, M, B)
    else:
        dtype = np.float32 if plan == "f32" else np.float64
        # one batched GEMM over all blocks: (nb, M, B) @ (nb, B, R)
        sums = np.matmul(np.ascontiguousarray(x3.transpose(1, 0, 2), dtype=dtype),
                         np.ascontiguousarray(w3.transpose(1, 2, 0), dtype=dtype))
    for b in range(nb):
        scale = xs[:, b, None] * ws[None, :, b]                   # exact powers of two
        if plan == "split":
            wh, wl = _split_bands(wt[b])
            xh, xl = _split_bands(xt[b])
            parts = [xh @ wh.T, xh @ wl.T, xl @ wh.T, xl @ wl.T]
            p = (_round_to_odd_f64(parts, quantum) * scale).astype(np.float32)
        else:
            p = (sums[b] * scale).astype(np.float32)
        if bad_w[:, b].any() or bad_x[:, b].any():
            p[bad_x[:, b, None] | bad_w[None, :, b]] = np.nan
        yield p


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
    parts = list(_iter_block_sums(*_operands(w, x, native_dim)))
    return np.stack(parts, axis=-1)


def accumulate_blocks(partials: np.ndarray) -> np.ndarray:
    """Sequential binary32 accumulation over the last axis, starting at +0.0."""
    acc = np.zeros(partials.shape[:-1], np.float32)
    for b in range(partials.shape[-1]):
        acc = (acc + partials[..., b]).astype(np.float32)
    return acc


@numba.njit(cache=True, nogil=True, parallel=True)
def _scale_accumulate(sums, xs, ws, bad_x, bad_w, out):
    """out[m, r] = binary32 sum over b, in order, of RNE32(sums[b, m, r] * xs[m, b] * ws[r, b])."""
    nb, m_rows, r_rows = sums.shape
    for m in numba.prange(m_rows):
        acc = np.zeros(r_rows, np.float32)
        for b in range(nb):
            sx = xs[m, b]
            bx = bad_x[m, b]
            for r in range(r_rows):
                if bx or bad_w[r, b]:
                    p = np.float32(np.nan)
                else:
                    p = np.float32(np.float64(sums[b, m, r]) * (sx * ws[r, b]))
                acc[r] = np.float32(acc[r] + p)
        for r in range(r_rows):
            out[m, r] = acc[r]


def elements_always_finite(fmt: BlockFormat) -> bool:
    """Whether no element code of ``fmt`` decodes to an infinity or NaN."""
    el = fmt.element
    if el.kind != "fp":
        return True
    codes = np.arange(1 << el.bits, dtype=np.uint8).view(el.dtype).astype(np.float64)
    return bool(np.isfinite(codes).all())


def matvec_decoded(we: np.ndarray, ws: np.ndarray, xe: np.ndarray, xs: np.ndarray,
                   block: int, plan: str, quantum: float, *, check_elements: bool = True) -> np.ndarray:
    """The MVU accumulator (M, R) from decoded operands (see :func:`_iter_block_sums`).

    ``check_elements=False`` skips the search for non-finite elements, for
    callers whose formats cannot encode any (NaN scales still give NaN).
    """
    if plan == "split":
        acc = np.zeros((xe.shape[0], we.shape[0]), np.float32)
        for p in _iter_block_sums(we, ws, xe, xs, block, plan, quantum):
            acc += p                            # binary32 addition, in block order
        return acc
    r, k = we.shape
    m = xe.shape[0]
    nb = k // block
    w3 = we.reshape(r, nb, block)
    x3 = xe.reshape(m, nb, block)
    if check_elements:
        w3, bad_w = _clear_nonfinite(w3, ws)
        x3, bad_x = _clear_nonfinite(x3, xs)
    else:                                   # a NaN scale still makes its block sum NaN in the kernel
        bad_w = np.zeros((r, nb), np.bool_)
        bad_x = np.zeros((m, nb), np.bool_)
    dtype = np.float32 if plan == "f32" else np.float64
    # exact block sums of every block in one batched GEMM: (nb, M, B) @ (nb, B, R)
    sums = np.matmul(np.ascontiguousarray(x3.transpose(1, 0, 2), dtype=dtype),
                     np.ascontiguousarray(w3.transpose(1, 2, 0), dtype=dtype))
    out = np.empty((m, r), np.float32)
    _scale_accumulate(sums, np.ascontiguousarray(xs, np.float64), np.ascontiguousarray(ws, np.float64),
                      np.ascontiguousarray(bad_x), np.ascontiguousarray(bad_w), out)
    return out


def matvec(w: BlockTensor, x: BlockTensor, native_dim: int) -> np.ndarray:
    """The MVU result (binary32 accumulator) of ``w`` (R, K) times each row of ``x`` (M, K)."""
    return matvec_decoded(*_operands(w, x, native_dim))
