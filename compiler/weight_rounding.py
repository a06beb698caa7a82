"""Post-training weight rounding for block formats: choose each weight block's scale and codes offline.

The machine quantises weights with the max rule and round-to-nearest-even
(``npu.numerics.quantize``; docs/numerics.md, "Conversion").  Weights are
quantised once, offline, so the compiler may instead pick the values that
lose least, as long as the machine's own rounding then reproduces them:
every function here returns weights whose values lie on the format's grid
*and* are a fixed point of ``quantize`` (:func:`make_representable` checks
this with the machine's kernel and repairs any block that is not).  The
MVU's block dot product is exact, so equal values give bit-identical
results; the hardware and the simulator need no change.

Blocks run along the reduction dimension of the MVU's weight matrix
(``compiler.lower.weights.conv_matrix``): for output row ``o`` (of ``P*Cout``
rows with column phases), tap ``(ky, kx)`` and input channels
``[j*B, (j+1)*B)`` counted over the whole input tensor (a chunk starts at a
whole native vector and B divides N, so the blocks of every chunk are these
blocks).  A grouped or depthwise convolution's row is zero outside its
group's channels (``codegen._chunk_weight``); :func:`block_view` builds the
``rows x (taps * channels)`` matrix with that geometry and
:func:`from_block_view` reads weights back.

Levers (compiler/passes/round_weights.py applies them per Conv):

* :func:`mse_round`: per block, the scale among the max rule's, one above it
  and up to four below it (clipping the largest elements) with the least
  squared error; no data needed.
* :func:`gptq_round`: GPTQ-style error feedback (Frantar et al., 2022) with
  the scales fixed first by ``mse``: codes are chosen column by column in
  the MVU's column order and each column's error is spread over the columns
  not yet rounded through the inverse Hessian ``H = X^T X`` of the layer's
  input rows (Cholesky, dampened by 1% of the mean diagonal), in blocks of
  128 columns.
* :func:`bias_shift`: the mean of ``(W - Q) x`` over the calibration rows,
  added to the bias so the layer's mean output is the float one.
"""
from __future__ import annotations

import numpy as np

from npu.numerics.formats import BlockFormat, get_format
from npu.numerics.quantize import quantize_to_values

METHODS = ("nearest", "mse", "gptq")
#: Scale offsets ``mse`` tries, relative to the max rule's (0 first: ties keep the max rule).
MSE_OFFSETS = (0, 1, -1, -2, -3, -4)
#: GPTQ's dampening: this fraction of the mean diagonal of H is added to it.
GPTQ_DAMPING = 0.01
#: Columns per lazy-update block of GPTQ.
GPTQ_BLOCK = 128


def _fmt(fmt) -> BlockFormat:
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    if not isinstance(fmt, BlockFormat):
        raise ValueError(f"{fmt.name} is not a block format")
    return fmt


# --- geometry ------------------------------------------------------------------------------------------------

def padded_channels(in_channels: int, native_dim: int) -> int:
    """Input channels of the MVU's rows: the input's channels padded to whole native vectors."""
    return -(-in_channels // native_dim) * native_dim


def _row_groups(rows: int, out_channels: int, groups: int) -> np.ndarray:
    """Group of every weight row (rows = P * Cout with column phases)."""
    return (np.arange(rows) % out_channels) // (out_channels // groups)


def block_view(weight: np.ndarray, groups: int, column_phases: int, native_dim: int) -> np.ndarray:
    """The ``(P*Cout) x (taps * Cpad)`` float32 matrix whose rows the MVU reads block by block.

    Column ``t * Cpad + c`` holds the weight of tap ``t = ky*kw + kx`` for
    input channel ``c`` of the whole input tensor (Cpad: channels padded to
    whole native vectors), zero outside the row's group.  For ``groups`` 1 it
    is ``conv_matrix`` without its padding rows.
    """
    rows, cin_g, kh, kw = weight.shape
    cpad = padded_channels(cin_g * groups, native_dim)
    m = np.zeros((rows, kh * kw, cpad), np.float32)
    w = np.asarray(weight, np.float32).transpose(0, 2, 3, 1).reshape(rows, kh * kw, cin_g)
    g = _row_groups(rows, rows // column_phases, groups)
    for gi in range(groups):
        sel = g == gi
        m[sel, :, gi * cin_g:(gi + 1) * cin_g] = w[sel]
    return m.reshape(rows, kh * kw * cpad)


def from_block_view(m: np.ndarray, shape: tuple[int, ...], groups: int, column_phases: int) -> np.ndarray:
    """The (rows, Cin/groups, kh, kw) weights of a :func:`block_view` matrix (the inverse of it)."""
    rows, cin_g, kh, kw = shape
    m = np.asarray(m).reshape(rows, kh * kw, -1)
    g = _row_groups(rows, rows // column_phases, groups)
    cols = g[:, None] * cin_g + np.arange(cin_g)[None, :]                 # (rows, cin_g) absolute channels
    w = np.take_along_axis(m, np.broadcast_to(cols[:, None, :], (rows, kh * kw, cin_g)), axis=2)
    return np.ascontiguousarray(w.reshape(rows, kh, kw, cin_g).transpose(0, 3, 1, 2), dtype=np.float32)


def group_columns(shape: tuple[int, ...], groups: int, native_dim: int) -> np.ndarray:
    """(groups, taps * Cin/groups) indices into a block-view row of each group's columns, in column order."""
    _rows, cin_g, kh, kw = shape
    cpad = padded_channels(cin_g * groups, native_dim)
    taps = np.arange(kh * kw)[:, None] * cpad
    return np.stack([(taps + g * cin_g + np.arange(cin_g)[None, :]).reshape(-1) for g in range(groups)])


# --- element rounding at a given scale ------------------------------------------------------------------------

def element_round(v: np.ndarray, shared: np.ndarray, fmt) -> np.ndarray:
    """``v`` rounded onto the element grid of shared exponent ``shared`` (broadcast), as the machine rounds.

    Round to nearest even, saturating to the largest element; float64
    values (element value times ``2**shared``).
    """
    el = _fmt(fmt).element
    v = np.asarray(v, np.float64)
    shared = np.asarray(shared, np.int64)
    if el.kind != "fp":
        u = np.ldexp(v, el.frac_bits - shared)
        m = np.minimum(np.rint(np.abs(u)), float(el.mag_max))
        return np.copysign(np.ldexp(m, shared - el.frac_bits), v) + 0.0
    a = np.ldexp(np.abs(v), -shared)
    _m, ex = np.frexp(a)
    e = np.maximum(ex.astype(np.int64) - 1, el.emin)
    q = np.ldexp(np.rint(np.ldexp(a, el.mbits - e)), e - el.mbits)
    q = np.minimum(q, float(el.max_normal))
    return np.ldexp(np.where(v < 0, -q, q), shared) + 0.0


def max_rule_scale(blocks: np.ndarray, fmt) -> np.ndarray:
    """Shared exponent of the max rule per block (blocks along the last axis of ``blocks``)."""
    fmt = _fmt(fmt)
    amax = np.max(np.abs(np.asarray(blocks, np.float64)), axis=-1)
    _m, ex = np.frexp(amax)
    s = ex.astype(np.int64) - 1 - fmt.element.emax
    s = np.where(amax > 0, s, fmt.scale_emin)
    return np.clip(s, fmt.scale_emin, fmt.scale_emax)


def is_fixed_point(blocks: np.ndarray, fmt) -> np.ndarray:
    """Per block: whether the max rule and RNE reproduce ``blocks`` exactly."""
    s = max_rule_scale(blocks, fmt)
    return np.all(element_round(blocks, s[..., None], fmt) == blocks, axis=-1)


def _blocks(m: np.ndarray, fmt: BlockFormat, native_dim: int) -> np.ndarray:
    b = fmt.block_for(native_dim)
    m = np.asarray(m, np.float64)
    return m.reshape(*m.shape[:-1], m.shape[-1] // b, b)


def nearest_round(m: np.ndarray, fmt, native_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, shared exponent per block) of the machine's own rounding (max rule, RNE) of rows ``m``."""
    fmt = _fmt(fmt)
    blocks = _blocks(np.asarray(m, np.float32), fmt, native_dim)
    s = max_rule_scale(blocks, fmt)
    return element_round(blocks, s[..., None], fmt).reshape(np.shape(m)), s


def mse_round(m: np.ndarray, fmt, native_dim: int, offsets=MSE_OFFSETS) -> tuple[np.ndarray, np.ndarray]:
    """(values, shared exponent per block): per block, the scale of least squared error among the max rule's
    plus ``offsets`` whose rounding the machine reproduces; never worse than :func:`nearest_round`."""
    fmt = _fmt(fmt)
    blocks = _blocks(np.asarray(m, np.float32), fmt, native_dim)
    shape = blocks.shape
    flat = blocks.reshape(-1, shape[-1])
    s_all = max_rule_scale(flat, fmt)
    q_all = np.zeros_like(flat)
    live = np.flatnonzero(np.any(flat != 0, axis=-1))         # all-zero blocks (most of a depthwise view) stay 0
    blocks, s0 = flat[live], s_all[live]
    best_q = best_s = best_err = None
    for d in offsets:
        s = np.clip(s0 + d, fmt.scale_emin, fmt.scale_emax)
        q = element_round(blocks, s[..., None], fmt)
        err = np.sum((q - blocks) ** 2, axis=-1)
        if best_q is None:
            best_q, best_s, best_err = q, s, err
            continue
        better = (err < best_err) & is_fixed_point(q, fmt)
        best_q = np.where(better[..., None], q, best_q)
        best_s = np.where(better, s, best_s)
        best_err = np.where(better, err, best_err)
    q_all[live], s_all[live] = best_q, best_s
    return q_all.reshape(np.shape(m)), s_all.reshape(shape[:-1])


def make_representable(m: np.ndarray, fmt, native_dim: int) -> tuple[np.ndarray, int]:
    """``m`` with every block the machine's ``quantize`` does not reproduce replaced by that rounding of it.

    Returns (float32 values that are a fixed point of ``quantize``, number of
    blocks replaced).  Checked with the machine's own kernel, not with this
    module's model of it.
    """
    fmt = _fmt(fmt)
    m = np.ascontiguousarray(m, np.float32)
    b = fmt.block_for(native_dim)
    replaced = 0
    for _ in range(3):
        q, scales = quantize_to_values(m, fmt, native_dim)
        vals = (q.astype(np.float64) * np.repeat(np.ldexp(1.0, scales.astype(np.int64) - fmt.scale_bias), b, axis=-1))
        bad = np.any((vals != m).reshape(*m.shape[:-1], -1, b), axis=-1)
        if not bad.any():
            return m, replaced
        replaced += int(bad.sum())
        mask = np.repeat(bad, b, axis=-1)
        m = np.where(mask, vals, m).astype(np.float32)
    raise AssertionError(f"{fmt.name}: rounded weights do not settle under the machine's quantisation")


# --- GPTQ ------------------------------------------------------------------------------------------------------

def _inverse_hessian_factor(h: np.ndarray, damping: float) -> np.ndarray:
    """Upper Cholesky factor of H^-1 per stack entry (H dampened; dead columns decoupled)."""
    h = np.array(h, np.float64, copy=True)
    k = h.shape[-1]
    idx = np.arange(k)
    dead = np.einsum("...ii->...i", h) <= 0
    h = np.where(dead[..., :, None] | dead[..., None, :], 0.0, h)
    h[..., idx, idx] = np.where(dead, 1.0, h[..., idx, idx])
    diag = np.einsum("...ii->...i", h)
    h[..., idx, idx] += damping * np.mean(diag, axis=-1, keepdims=True)
    lower = np.linalg.cholesky(h)
    eye = np.broadcast_to(np.eye(k), h.shape)
    linv = np.linalg.solve(lower, eye)                    # L^-1; H^-1 = L^-T L^-1
    hinv = np.swapaxes(linv, -1, -2) @ linv
    return np.swapaxes(np.linalg.cholesky(hinv), -1, -2)


def gptq_round(w: np.ndarray, h: np.ndarray, shared: np.ndarray, fmt, *, free: np.ndarray | None = None,
               zero: np.ndarray | None = None, damping: float = GPTQ_DAMPING,
               block: int = GPTQ_BLOCK) -> np.ndarray:
    """GPTQ rounding of weights ``w`` (G, rows, cols) with Hessians ``h`` (G, cols, cols), columns in order.

    ``shared`` (G, rows, cols) is each element's fixed shared exponent;
    where ``free`` is set the element is alone in its block and rounds at
    its own max-rule scale; where ``zero`` is set it must stay 0.  Returns
    float64 values on the grid (not yet checked against the max rule: see
    :func:`make_representable`).
    """
    fmt = _fmt(fmt)
    w = np.array(w, np.float64, copy=True)
    g, rows, cols = w.shape
    u = _inverse_hessian_factor(h, damping)               # (G, cols, cols), upper
    q = np.zeros_like(w)
    free = np.zeros(w.shape, bool) if free is None else free
    zero = np.zeros(w.shape, bool) if zero is None else zero

    def quant(col: np.ndarray, j: int) -> np.ndarray:
        s = shared[:, :, j]
        if free[:, :, j].any():
            own = max_rule_scale(col[..., None], fmt)
            s = np.where(free[:, :, j], own, s)
        out = element_round(col, s, fmt)
        return np.where(zero[:, :, j], 0.0, out)

    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = w[:, :, i1:i2].copy()
        err1 = np.zeros_like(w1)
        u1 = u[:, i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, :, i]
            qc = quant(col, i1 + i)
            q[:, :, i1 + i] = qc
            d = u1[:, i, i][:, None]                       # (G, 1)
            e = (col - qc) / d
            w1[:, :, i:] -= e[:, :, None] * u1[:, None, i, i:]
            err1[:, :, i] = e
        if i2 < cols:
            w[:, :, i2:] -= err1 @ u[:, i1:i2, i2:]
    return q


# --- bias correction -------------------------------------------------------------------------------------------

def bias_shift(w: np.ndarray, q: np.ndarray, mean_x: np.ndarray) -> np.ndarray:
    """Per row: the mean of (W - Q) x, given the mean input row ``mean_x`` (rows x cols block-view matrices)."""
    return (np.asarray(w, np.float64) - np.asarray(q, np.float64)) @ np.asarray(mean_x, np.float64)


def layer_output_error(x: np.ndarray, w: np.ndarray, q: np.ndarray) -> float:
    """||X W^T - X Q^T|| (Frobenius), the output error GPTQ minimises."""
    x = np.asarray(x, np.float64)
    return float(np.linalg.norm(x @ (np.asarray(w, np.float64) - np.asarray(q, np.float64)).T))
