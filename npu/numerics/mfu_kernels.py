"""The MFU contract as fused Numba kernels, for the simulator (docs/numerics.md, "Multi-function unit").

:mod:`npu.numerics.mfu` computes each MFU operation on whole numpy arrays
(and is the tests' oracle).  The simulator instead runs a chain's whole MFU
pipeline in one pass per vector: the chain input is rounded to the MFU
format ``F``, each operation is applied and rounded, and the result is
encoded to ``F``'s bits (canonical NaN).  Values are carried as the binary32
number equal to the ``F`` value (fp16 and bf16 values are exact in binary32),
so no step converts between float types.

The vector memory is passed as its raw bits (uint16 for fp16/bf16) or, for
fp32, as binary32 values; the kernels widen 16-bit patterns arithmetically.

Performance notes: every loop over a vector's lanes is branch-free and, with
integers kept at 32 bits, vectorises.  Steps write to a different row than
they read: an in-place ``v[e] = c ? v[e] : x`` compiles to masked stores,
which are microcoded on AMD cores (a ReLU ran 6x slower in place).
"""
from __future__ import annotations

import numba
import numpy as np

from .dot import accumulate_row
from .float_bits import as_bits, fp16_bits, from_bits, widen_bf16, widen_fp16
from .formats import FORMATS, FormatError, mfu_formats
from .mfu import CANONICAL_NAN_BITS

#: MFU format codes of the kernels: the formats' ``code`` (npu.numerics.formats).
FORMAT_CODES = {f.name: f.code for f in mfu_formats()}
FP16, BF16, FP32 = (FORMATS[name].code for name in ("fp16", "bf16", "fp32"))

#: Operation codes.  A vector-vector or vector-scalar op takes its second operand ``b``.
ADD, A_SUB_B, B_SUB_A, MUL, MAX, MIN, RELU, SIGMOID, TANH = range(9)
OP_CODES = {"add": ADD, "a_sub_b": A_SUB_B, "b_sub_a": B_SUB_A, "mul": MUL, "max": MAX, "min": MIN,
            "relu": RELU, "sigm": SIGMOID, "tanh": TANH}

#: Where an op's second operand comes from.
NO_OPERAND, VECTOR_OPERAND, SCALAR_OPERAND = 0, 1, 2

#: Chain-input reductions over the gathered vectors.
REDUCE_FIRST, REDUCE_SUM, REDUCE_MAX = 0, 1, 2
REDUCE_CODES = {"none": REDUCE_FIRST, "sum": REDUCE_SUM, "max": REDUCE_MAX}

_ROWS_PER_TASK = 16                       # rows one parallel task runs (scratch rows are per task)

_ACT_LO = np.float32(8.0)                 # -ACT_LO of npu.numerics.mfu
_ACT_SCALE = np.float32(32.0)             # segments per unit
_ACT_SEGMENTS = 512


def format_code(name: str) -> int:
    """The kernels' code of an MFU format name."""
    try:
        return FORMAT_CODES[name]
    except KeyError:
        raise FormatError(f"{name!r} is not an MFU format ({', '.join(FORMAT_CODES)})") from None


@numba.njit(cache=True, nogil=True, inline="always")
def _round_fp16(x):
    """binary32 ``x`` rounded (RNE, overflow to infinity) to binary16, as a binary32 value; NaN stays NaN."""
    return widen_fp16(fp16_bits(x))


@numba.njit(cache=True, nogil=True, inline="always")
def _round_bf16(x):
    """binary32 ``x`` rounded (RNE, overflow to infinity) to bfloat16, as a binary32 value; NaN stays NaN."""
    b = as_bits(x)
    r = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return from_bits(b if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else r)


@numba.njit(cache=True, nogil=True, inline="always")
def round_into(v, fmt, dst):
    """``dst`` = binary32 values ``v`` rounded to the MFU format (RNE, overflow to infinity; NaN stays NaN)."""
    n = v.shape[0]
    if fmt == FP16:
        for e in range(n):
            dst[e] = _round_fp16(v[e])
    elif fmt == BF16:
        for e in range(n):
            dst[e] = _round_bf16(v[e])
    else:
        for e in range(n):
            dst[e] = v[e]


@numba.njit(cache=True, nogil=True, inline="always")
def load_row(vmem, fmt, addr, dst):
    """``dst`` = binary32 values of vector ``addr`` of the vector memory (see the module docstring)."""
    n = dst.shape[0]
    if fmt == FP16:
        for e in range(n):
            dst[e] = widen_fp16(vmem[addr, e])
    elif fmt == BF16:
        for e in range(n):
            dst[e] = widen_bf16(vmem[addr, e])
    else:
        for e in range(n):
            dst[e] = np.float32(vmem[addr, e])


#: The canonical NaN encodings (compile-time constants of the kernels).
_NAN_FP16, _NAN_BF16, _NAN_FP32 = (CANONICAL_NAN_BITS[f] for f in ("fp16", "bf16", "fp32"))


@numba.njit(cache=True, nogil=True, inline="always")
def _encode_fp16(x):
    """binary16 bits of binary32 ``x``, a binary16 value; NaN gives the canonical NaN."""
    return np.uint16(_NAN_FP16) if x != x else fp16_bits(x)


@numba.njit(cache=True, nogil=True, inline="always")
def encode_row(v, fmt, out):
    """Bits of the MFU-format values ``v`` (binary32) into ``out``; every NaN becomes the canonical NaN."""
    if fmt == FP16:
        for e in range(v.shape[0]):
            out[e] = _encode_fp16(v[e])
    elif fmt == BF16:
        for e in range(v.shape[0]):
            b = as_bits(v[e])
            out[e] = np.uint32(_NAN_BF16) if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else b >> np.uint32(16)
    else:
        for e in range(v.shape[0]):
            b = as_bits(v[e])
            out[e] = np.uint32(_NAN_FP32) if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else b


@numba.njit(cache=True, nogil=True)
def encode_values(v, fmt, out):
    """``out`` = bits of binary32 values ``v`` (1-D) rounded to the MFU format: :func:`npu.numerics.mfu.to_format`
    (RNE, overflow to infinity, canonical NaN) as its bit patterns (uint16 for fp16/bf16, uint32 for fp32)."""
    rounded = np.empty_like(v)
    round_into(v, fmt, rounded)
    encode_row(rounded, fmt, out)


@numba.njit(cache=True, nogil=True)
def copy_rows(vbits, fmt, src, dst, lo, hi):
    """A chain without the MVU, reduction or MFU ops: lanes ``lo .. hi - 1`` of vector ``src[i]`` written to
    vector ``dst[i]``, for every ``i``, as :func:`run_chain` writes them (a format value rounds to itself:
    the same bits, every NaN the canonical NaN).  All vectors are read before any is written."""
    if fmt == FP16:
        mag, inf, nan = np.uint32(0x7FFF), np.uint32(0x7C00), np.uint32(_NAN_FP16)
    elif fmt == BF16:
        mag, inf, nan = np.uint32(0x7FFF), np.uint32(0x7F80), np.uint32(_NAN_BF16)
    else:
        mag, inf, nan = np.uint32(0x7FFFFFFF), np.uint32(0x7F800000), np.uint32(_NAN_FP32)
    rows = src.shape[0]
    buf = np.empty((rows, hi - lo), vbits.dtype)
    for i in range(rows):
        row, out = vbits[src[i], lo:hi], buf[i]
        for e in range(hi - lo):
            b = np.uint32(row[e])
            out[e] = nan if (b & mag) > inf else b
    for i in range(rows):                  # element by element: numba's slice assignment is 3x slower here
        row, out = vbits[dst[i], lo:hi], buf[i]
        for e in range(hi - lo):
            row[e] = out[e]


@numba.njit(cache=True, nogil=True)
def _activation(x, a_tab, b_tab, lo_value, hi_value):
    """Piecewise-linear table activation in binary32 (before the rounding to the MFU format)."""
    if x != x:
        return x
    u = (x + _ACT_LO) * _ACT_SCALE
    if u < np.float32(0.0):
        return lo_value
    if u >= np.float32(_ACT_SEGMENTS):
        return hi_value
    i = np.int64(u)                                       # floor: u >= 0
    t = u - np.float32(i)
    return a_tab[i] + b_tab[i] * t


@numba.njit(cache=True, nogil=True, inline="always")
def _max_rule(a, b):
    """The MFU max: ``b`` if ``b > a``, else ``a``; NaN if either is NaN."""
    r = b if b > a else a
    return np.float32(np.nan) if (a != a or b != b) else r


@numba.njit(cache=True, nogil=True, inline="always")
def _min_rule(a, b):
    """The MFU min: ``b`` if ``b < a``, else ``a``; NaN if either is NaN."""
    r = b if b < a else a
    return np.float32(np.nan) if (a != a or b != b) else r


@numba.njit(cache=True, nogil=True, inline="always")
def apply_op(op, v, w, tables, dst):
    """``dst`` = one MFU operation on the chain values ``v`` with operands ``w``, in binary32.

    ``dst`` must not be ``v``.  The caller rounds the result to the MFU
    format (:func:`round_into`).  ``tables`` is (4, 512) binary32: sigmoid
    intercepts and slopes, then tanh's.
    """
    n = v.shape[0]
    if op == ADD:
        for e in range(n):
            dst[e] = v[e] + w[e]
    elif op == A_SUB_B:
        for e in range(n):
            dst[e] = v[e] - w[e]
    elif op == B_SUB_A:
        for e in range(n):
            dst[e] = w[e] - v[e]
    elif op == MUL:
        for e in range(n):
            dst[e] = v[e] * w[e]
    elif op == MAX:
        for e in range(n):
            dst[e] = _max_rule(v[e], w[e])
    elif op == MIN:
        for e in range(n):
            dst[e] = _min_rule(v[e], w[e])
    elif op == RELU:                                      # v if v > 0, else +0; NaN stays NaN
        for e in range(n):
            a = v[e]
            dst[e] = a if (a > np.float32(0.0) or a != a) else np.float32(0.0)
    elif op == SIGMOID:
        for e in range(n):
            dst[e] = _activation(v[e], tables[0], tables[1], np.float32(0.0), np.float32(1.0))
    else:
        for e in range(n):
            dst[e] = _activation(v[e], tables[2], tables[3], np.float32(-1.0), np.float32(1.0))


@numba.njit(cache=True, nogil=True, parallel=True)
def gather_reduce(vmem, fmt, addr, mode, out):
    """Chain input without the MVU: ``out[i]`` = the reduction of vectors ``addr[i, :]`` (binary32).

    ``REDUCE_FIRST`` takes the first vector; ``REDUCE_SUM`` accumulates in
    binary32 from +0 in order (not yet rounded to the MFU format);
    ``REDUCE_MAX`` applies the MFU max rule in order.
    """
    rows, k = addr.shape
    n = out.shape[1]
    for c in numba.prange((rows + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
        acc = np.empty(n, np.float32)
        w = np.empty(n, np.float32)
        for i in range(c * _ROWS_PER_TASK, min(rows, (c + 1) * _ROWS_PER_TASK)):
            dst = out[i]
            if mode == REDUCE_SUM:
                for e in range(n):
                    acc[e] = np.float32(0.0)
                for j in range(k):
                    load_row(vmem, fmt, addr[i, j], w)
                    for e in range(n):
                        acc[e] = acc[e] + w[e]
            else:
                load_row(vmem, fmt, addr[i, 0], acc)
                if mode == REDUCE_MAX:
                    for j in range(1, k):
                        load_row(vmem, fmt, addr[i, j], w)
                        for e in range(n):
                            dst[e] = _max_rule(acc[e], w[e])
                        acc[:] = dst
            dst[:] = acc
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _round_to(x, fmt):
    """binary32 ``x`` rounded to a 16-bit MFU format (RNE), as a binary32 value."""
    return _round_fp16(x) if fmt == FP16 else _round_bf16(x)


@numba.njit(cache=True, nogil=True, inline="always")
def _encode_to(x, fmt):
    """Bits of a 16-bit MFU-format value ``x`` (binary32); NaN gives the canonical NaN."""
    if fmt == FP16:
        return _encode_fp16(x)
    b = as_bits(x)
    return np.uint16(_NAN_BF16) if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else np.uint16(b >> np.uint32(16))


@numba.njit(cache=True, nogil=True, inline="always")
def _widen_from(h, fmt):
    return widen_fp16(h) if fmt == FP16 else widen_bf16(h)


@numba.njit(cache=True, nogil=True, inline="always")
def _relu(a):
    return a if (a > np.float32(0.0) or a != a) else np.float32(0.0)


@numba.njit(cache=True, nogil=True, inline="always")
def _fused_pattern(fmt, ops, sources):
    """0 none, 1 vv_add, 2 vv_add + relu, 3 vv_add + vv_add + relu, 4 vv_max + vv_max (16-bit formats); -1
    otherwise."""
    if fmt == FP32:
        return -1
    k = ops.shape[0]
    if k == 0:
        return 0
    if k == 2 and ops[0] == MAX and ops[1] == MAX and sources[0] == VECTOR_OPERAND and sources[1] == VECTOR_OPERAND:
        return 4
    if ops[0] != ADD or sources[0] != VECTOR_OPERAND:
        return -1
    if k == 1:
        return 1
    if k == 2 and ops[1] == RELU:
        return 2
    if k == 3 and ops[1] == ADD and sources[1] == VECTOR_OPERAND and ops[2] == RELU:
        return 3
    return -1


# The one-pass rows of the op sequences of _fused_pattern, one function each (same signature), for the
# 16-bit formats: the same operations as _pipeline_row, each rounded to ``fmt``, in the same order (a ReLU
# of a value in ``fmt``, or the max of two, is in ``fmt``: its rounding is left out).
# Callers branch on the pattern once and run one loop over their rows per branch: with the four loops in
# one body, or the branch inside the loop over the rows, they ran 2-5x slower (0.37 against 0.08 ns an
# element without operands, 128-element rows; 14 % of ResNet-50's mxfp8 chain time).

@numba.njit(cache=True, nogil=True, inline="always")
def _row_round(y, i, fmt, operand_addr, vmem, dst):
    """Pattern 0: the chain input rounded to ``fmt``."""
    for e in range(y.shape[0]):
        dst[e] = _encode_to(_round_to(y[e], fmt), fmt)


@numba.njit(cache=True, nogil=True, inline="always")
def _row_add(y, i, fmt, operand_addr, vmem, dst):
    """Pattern 1: vv_add."""
    a = vmem[operand_addr[0, i]]
    for e in range(y.shape[0]):
        x = _round_to(y[e], fmt)
        dst[e] = _encode_to(_round_to(x + _widen_from(a[e], fmt), fmt), fmt)


@numba.njit(cache=True, nogil=True, inline="always")
def _row_add_relu(y, i, fmt, operand_addr, vmem, dst):
    """Pattern 2: vv_add, relu."""
    a = vmem[operand_addr[0, i]]
    for e in range(y.shape[0]):
        x = _round_to(y[e], fmt)
        x = _round_to(x + _widen_from(a[e], fmt), fmt)
        dst[e] = _encode_to(_relu(x), fmt)


@numba.njit(cache=True, nogil=True, inline="always")
def _row_add_add_relu(y, i, fmt, operand_addr, vmem, dst):
    """Pattern 3: vv_add, vv_add, relu."""
    a = vmem[operand_addr[0, i]]
    b = vmem[operand_addr[1, i]]
    for e in range(y.shape[0]):
        x = _round_to(y[e], fmt)
        x = _round_to(x + _widen_from(a[e], fmt), fmt)
        x = _round_to(x + _widen_from(b[e], fmt), fmt)
        dst[e] = _encode_to(_relu(x), fmt)


@numba.njit(cache=True, nogil=True, inline="always")
def _row_max_max(y, i, fmt, operand_addr, vmem, dst):
    """Pattern 4: vv_max, vv_max (a row of a max pool)."""
    a = vmem[operand_addr[0, i]]
    b = vmem[operand_addr[1, i]]
    for e in range(y.shape[0]):
        x = _max_rule(_round_to(y[e], fmt), _widen_from(a[e], fmt))
        dst[e] = _encode_to(_max_rule(x, _widen_from(b[e], fmt)), fmt)


@numba.njit(cache=True, nogil=True, inline="always")
def _pipeline_row(y, i, fmt, ops, sources, scalars, operand_addr, vmem, tables, v, t, w, out, orow=-1):
    """``out[i]`` (``out[orow]`` when given) = bits of ``ops`` applied to the chain input row ``y``, whose
    vector operands are ``operand_addr[:, i]``; ``v``, ``t``, ``w`` are scratch rows."""
    round_into(y, fmt, v)
    for o in range(ops.shape[0]):
        if sources[o] == VECTOR_OPERAND:
            load_row(vmem, fmt, operand_addr[o, i], w)
        elif sources[o] == SCALAR_OPERAND:
            w[:] = scalars[o]
        apply_op(ops[o], v, w, tables, t)
        round_into(t, fmt, v)
    encode_row(v, fmt, out[i if orow < 0 else orow])


@numba.njit(cache=True, nogil=True, parallel=True)
def run_chain(y, fmt, ops, sources, scalars, operand_addr, vmem, tables, out):
    """The MFU pipeline of a chain, row by row: ``out[i]`` = bits of ``ops`` applied to ``y[i]``.

    ``y`` (rows, N) binary32 is the chain input before rounding to ``fmt``
    (the MVU accumulator or a reduction); op ``o`` takes its operand from
    vector ``operand_addr[o, i]`` of the vector memory (``VECTOR_OPERAND``)
    or from ``scalars[o]`` (``SCALAR_OPERAND``, already a format value).
    """
    rows, n = y.shape
    pattern = _fused_pattern(fmt, ops, sources)
    for c in numba.prange((rows + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
        v = np.empty(n, np.float32)
        t = np.empty(n, np.float32)
        w = np.empty(n, np.float32)
        lo, hi = c * _ROWS_PER_TASK, min(rows, (c + 1) * _ROWS_PER_TASK)
        if pattern == 0:                 # one loop over the rows per op sequence (see the one-pass rows)
            for i in range(lo, hi):
                _row_round(y[i], i, fmt, operand_addr, vmem, out[i])
        elif pattern == 1:
            for i in range(lo, hi):
                _row_add(y[i], i, fmt, operand_addr, vmem, out[i])
        elif pattern == 2:
            for i in range(lo, hi):
                _row_add_relu(y[i], i, fmt, operand_addr, vmem, out[i])
        elif pattern == 3:
            for i in range(lo, hi):
                _row_add_add_relu(y[i], i, fmt, operand_addr, vmem, out[i])
        elif pattern == 4:
            for i in range(lo, hi):
                _row_max_max(y[i], i, fmt, operand_addr, vmem, out[i])
        else:
            for i in range(lo, hi):
                _pipeline_row(y[i], i, fmt, ops, sources, scalars, operand_addr, vmem, tables, v, t, w, out)
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _order_key(x):
    """A 16-bit sign-magnitude pattern (int16) as an int16 that orders as its value (-0 and +0 equal)."""
    x = x if x != np.int16(-32768) else np.int16(0)
    return np.int16(x ^ ((x >> np.int16(15)) & np.int16(0x7FFF)))


@numba.njit(cache=True, nogil=True, inline="always")
def _max_bits(a, b, inf, nan):
    """The MFU max rule on two 16-bit format patterns (int16): ``b`` if ``b > a``, else ``a``; the canonical
    NaN ``nan`` if either is NaN (magnitude bits above infinity's, ``inf``)."""
    bad = ((a & np.int16(0x7FFF)) > inf) | ((b & np.int16(0x7FFF)) > inf)
    r = b if _order_key(b) > _order_key(a) else a
    return nan if bad else r


@numba.njit(cache=True, nogil=True, parallel=True)
def max3_rows(vbits, fmt, src, operand_addr, waddr):
    """A max pool's chain on a 16-bit MFU format, straight into the vector memory: vector ``waddr[i]`` =
    ``vv_max`` of vector ``src[i]`` with vector ``operand_addr[0, i]``, then with ``operand_addr[1, i]``
    (:func:`run_chain`'s result: a format value rounds to itself, so the max rule runs on the bits).

    ``vbits`` is the vector memory's bits as int16.  Rows run in any order: no vector written may be one
    the chain reads.
    """
    inf = np.int16(0x7C00 if fmt == FP16 else 0x7F80)
    nan = np.int16(_NAN_FP16 if fmt == FP16 else _NAN_BF16)
    rows, n = src.shape[0], vbits.shape[1]
    for c in numba.prange((rows + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
        for i in range(c * _ROWS_PER_TASK, min(rows, (c + 1) * _ROWS_PER_TASK)):
            x, a, b, dst = vbits[src[i]], vbits[operand_addr[0, i]], vbits[operand_addr[1, i]], vbits[waddr[i]]
            for e in range(n):
                dst[e] = _max_bits(_max_bits(x[e], a[e], inf, nan), b[e], inf, nan)
    return vbits


@numba.njit(cache=True, nogil=True, parallel=True)
def run_chain_on_block_sums(sums, block_major, in_binary32, xs, ws_t, fmt, ops, sources, scalars, operand_addr,
                            vmem, tables, out):
    """:func:`run_chain` on the MVU accumulator, formed row by row from block sums (``dot.BlockSums`` fields).

    Row ``i = m * g + j`` is output group ``j`` of iteration ``m``
    (:func:`npu.numerics.dot.accumulate_row`), as in ``BlockSums.accumulate().reshape(-1, N)``.
    """
    m_rows = xs.shape[0]
    n = out.shape[1]
    groups = ws_t.shape[1] // n
    per_task = max(1, _ROWS_PER_TASK // groups)
    for c in numba.prange((m_rows + per_task - 1) // per_task):
        acc = np.empty(n, np.float32)
        v = np.empty(n, np.float32)
        t = np.empty(n, np.float32)
        w = np.empty(n, np.float32)
        for m in range(c * per_task, min(m_rows, (c + 1) * per_task)):
            for j in range(groups):
                accumulate_row(sums, block_major, in_binary32, xs, ws_t, m, j, acc)
                _pipeline_row(acc, m * groups + j, fmt, ops, sources, scalars, operand_addr, vmem, tables, v, t,
                              w, out)
    return out


_TABLES: list[np.ndarray] = []


def activation_tables(needed: bool = True) -> np.ndarray:
    """(4, 512) binary32: sigmoid intercepts and slopes, then tanh's (``npu.numerics.mfu``'s tables).

    With ``needed=False``, a zero placeholder (the tables take about 0.4 s to build on first use).
    """
    if not needed:
        return np.zeros((4, _ACT_SEGMENTS), np.float32)
    if not _TABLES:
        from . import mfu
        _TABLES.append(np.stack(list(mfu.SIGMOID_TABLE) + list(mfu.TANH_TABLE)).astype(np.float32))
    return _TABLES[0]
