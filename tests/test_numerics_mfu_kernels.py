"""The simulator's fused MFU kernels (npu.numerics.mfu_kernels) equal npu.numerics.mfu bit for bit.

npu.numerics.mfu is checked against exact arithmetic in test_numerics_mfu.py;
here the kernels are compared with it on random values plus every edge the
rounding has: each 16-bit format value, the midpoints between neighbours
(ties) and their binary32 neighbours, overflow thresholds, subnormals,
infinities and NaNs with odd payloads.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from npu.numerics import mfu
from npu.numerics import mfu_kernels as mk

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

DTYPES = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16, "fp32": np.float32}
UINT = {"fp16": np.uint16, "bf16": np.uint16, "fp32": np.uint32}
NAMES = list(DTYPES)
VV = ["vv_add", "vv_a_sub_b", "vv_b_sub_a", "vv_mul", "vv_max", "vv_min"]
VS = ["vs_add", "vs_mul", "vs_max", "vs_min"]
UNARY = ["v_relu", "v_sigm", "v_tanh"]


def bits_of(values, name) -> np.ndarray:
    return np.asarray(values).astype(DTYPES[name]).view(UINT[name])


def edge_binary32() -> np.ndarray:
    """binary32 values at every rounding edge of fp16 and bf16, plus specials and a sweep of all patterns."""
    h = np.arange(1 << 16, dtype=np.uint32)
    parts = []
    for dt in (np.float16, ml_dtypes.bfloat16):
        v = h.astype(np.uint16).view(dt).astype(np.float32)
        v = v[np.isfinite(v)]
        v = np.unique(v)
        mid = ((v[:-1].astype(np.float64) + v[1:].astype(np.float64)) / 2).astype(np.float32)   # exact ties
        for w in (v, mid):
            wb = w.view(np.uint32)
            parts += [w, (wb + 1).view(np.float32), (wb - 1).view(np.float32)]
    parts.append(np.array([65504, 65519.996, 65520, 65536, 3.4028235e38, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26,
                           2.0 ** -14, 1e-45, np.inf, -np.inf, 0.0, -0.0], np.float32))
    parts.append(np.array([0x7F800001, 0x7FC00000, 0xFFC00000, 0x7FFFFFFF, 0xFF800001], np.uint32).view(np.float32))
    parts.append(np.arange(0, 1 << 32, 65521, dtype=np.uint64).astype(np.uint32).view(np.float32))
    x = np.concatenate(parts)
    return np.concatenate([x, -x])


def machine_view(vmem: np.ndarray, name: str) -> np.ndarray:
    """The vector memory as the kernels read it: raw 16-bit patterns, or binary32 values."""
    return vmem if name == "fp32" else vmem.view(np.uint16)


def run(y: np.ndarray, name: str, ops=(), operand_addr=None, vmem=None, scalars=None) -> np.ndarray:
    """run_chain over rows of ``y`` with ops given as mnemonics; returns the output bits."""
    rows = y.shape[0]
    codes = np.array([mk.OP_CODES[op.partition("_")[2]] for op in ops], np.int64)
    sources = np.array([{"v": mk.NO_OPERAND, "vv": mk.VECTOR_OPERAND, "vs": mk.SCALAR_OPERAND}[op.partition("_")[0]]
                        for op in ops], np.int64)
    scal = np.zeros(len(ops), np.float32) if scalars is None else np.asarray(scalars, np.float32)
    addr = np.zeros((len(ops), rows), np.int64) if operand_addr is None else operand_addr
    if vmem is None:
        vmem = np.zeros((1, y.shape[1]), DTYPES[name])
    out = np.empty(y.shape, UINT[name])
    mk.run_chain(y.astype(np.float32), mk.format_code(name), codes, sources, scal, addr, machine_view(vmem, name),
                 mk.activation_tables(True), out)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_encode_values_equals_to_format_at_every_edge(name):
    """encode_values (the host's input packing) gives the bits of mfu.to_format, canonical NaN included."""
    x = edge_binary32()
    got = np.empty(x.size, UINT[name])
    mk.encode_values(x, mk.format_code(name), got)
    want = mfu.to_format(x, name).view(UINT[name])
    bad = np.nonzero(got != want)[0]
    assert not bad.size, f"{bad.size} differ, first {x[bad[0]]!r}: {got[bad[0]]:#x} vs {want[bad[0]]:#x}"


@pytest.mark.parametrize("name", NAMES)
def test_rounding_and_encoding_at_every_edge(name):
    """The chain input rounded to the format and encoded equals mfu.accumulator_to_format."""
    x = edge_binary32()
    x = np.concatenate([x, np.zeros((-x.size) % 64, np.float32)])
    got = run(x.reshape(-1, 64), name).reshape(-1)
    want = bits_of(mfu.accumulator_to_format(x, name), name)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, (hex(int(x.view(np.uint32)[bad[0]])), hex(int(got[bad[0]])), hex(int(want[bad[0]])))
    # the rounded value itself (not only its encoding) feeds the next op: 65520 must be infinity, not 65536
    for op, s in (("vs_mul", 0.5), ("vs_add", -1.0)):
        got = run(x.reshape(-1, 64), name, [op], scalars=[s]).reshape(-1)
        want = reference(x, name, [op], None, None, [s])
        assert np.array_equal(got, want), op


def format_values(rng, name, shape) -> np.ndarray:
    """Format values from random bit patterns mixed with ordinary magnitudes and specials."""
    dt, ut = DTYPES[name], UINT[name]
    width = 8 * np.dtype(ut).itemsize
    raw = rng.integers(0, 1 << width, shape, dtype=np.uint64).astype(ut).view(dt)
    normal = (rng.standard_normal(shape) * np.exp2(rng.integers(-6, 6, shape))).astype(dt)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 2.0 ** -24, -(2.0 ** -20)]).astype(dt)
    pick = rng.random(shape)
    out = np.where(pick < 0.4, raw, normal)
    return np.where(pick > 0.9, special[rng.integers(0, special.size, shape)], out).astype(dt)


def reference(y32: np.ndarray, name: str, ops, vmem, operand_addr, scalars) -> np.ndarray:
    """npu.numerics.mfu applied op by op, as the simulator's reference chain does."""
    fns = {"add": mfu.add, "mul": mfu.mul, "max": mfu.maximum, "min": mfu.minimum, "a_sub_b": mfu.sub,
           "b_sub_a": lambda a, b, f: mfu.sub(b, a, f)}
    unary = {"relu": mfu.relu, "sigm": mfu.sigmoid, "tanh": mfu.tanh}
    y = mfu.accumulator_to_format(y32, name)
    for o, op in enumerate(ops):
        kind, _, base = op.partition("_")
        if kind == "v":
            y = unary[base](y, name)
        else:
            b = vmem[operand_addr[o]] if kind == "vv" else mfu.scalar(scalars[o], name)
            y = fns[base](y, b, name)
    return bits_of(mfu.to_format(y, name), name)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", range(6))
def test_random_chains_match_the_numpy_model(name, seed):
    rng = np.random.default_rng(seed)
    rows, n, depth = 97, 32, 40
    vmem = format_values(rng, name, (depth, n))
    # chain inputs: binary32 accumulators, some beyond the format's range or between its values
    y32 = (rng.standard_normal((rows, n)) * np.exp2(rng.integers(-30, 20, (rows, n)))).astype(np.float32)
    y32[rng.random((rows, n)) < 0.05] = np.nan
    y32[rng.random((rows, n)) < 0.05] = np.inf
    ops = list(rng.choice(VV + VS + UNARY, size=rng.integers(1, 5)))
    operand_addr = rng.integers(0, depth, (len(ops), rows))
    sregs = format_values(rng, "fp32", len(ops))
    got = run(y32, name, ops, operand_addr, vmem, [mfu.scalar(s, name) for s in sregs])
    assert np.array_equal(got, reference(y32, name, ops, vmem, operand_addr, sregs)), ops


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("ops", [["vv_add"], ["vv_add", "v_relu"], ["vv_add", "vv_add", "v_relu"],
                                 ["vv_max", "vv_max"]])
def test_one_pass_rows_at_every_edge(name, ops):
    """The op sequences with one-pass rows (mfu_kernels._fused_pattern), on every rounding edge as the chain input
    and operands of format values, specials included."""
    rng = np.random.default_rng(11)
    x = edge_binary32()
    x = np.concatenate([x, np.zeros((-x.size) % 64, np.float32)]).reshape(-1, 64)
    vmem = format_values(rng, name, (50, 64))
    addr = rng.integers(0, 50, (len(ops), x.shape[0]))
    got = run(x, name, ops, addr, vmem)
    assert np.array_equal(got, reference(x, name, ops, vmem, addr, [0.0] * len(ops)))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("op", VV + VS + UNARY)
def test_each_op_on_every_pair_of_edge_values(name, op):
    """Every pair of edge values: the vector operand of row i is row i; a vs_* op takes each value as its scalar."""
    dt = DTYPES[name]
    vals = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 2.5, -7.9, 8.0, 65504.0, -65504.0, 2.0 ** -24, -(2.0 ** -24),
                     1e-40, np.inf, -np.inf, np.nan], np.float64).astype(dt)
    ut = UINT[name]
    odd_nan = np.array([int(np.array(np.nan, dt).view(ut)) | 1], ut).view(dt)
    vals = np.concatenate([vals, odd_nan]).astype(dt)
    n = vals.size
    y32 = np.repeat(vals, n).astype(np.float32).reshape(n, n)
    vmem = np.tile(vals, (n, 1))                              # row i: every value; operand of row i is row i
    addr = np.arange(n)[None, :]
    for sreg in (vals.astype(np.float32) if op.startswith("vs") else [np.float32(0.0)]):
        got = run(y32, name, [op], addr if op.startswith("vv") else None, vmem, [mfu.scalar(sreg, name)])
        assert np.array_equal(got, reference(y32, name, [op], vmem, addr, [sreg])), float(sreg)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["none", "sum", "max"])
def test_gather_reduce_matches_the_numpy_model(name, mode):
    rng = np.random.default_rng(3)
    depth, n, rows, k = 30, 16, 25, 4
    vmem = format_values(rng, name, (depth, n))
    addr = rng.integers(0, depth, (rows, k))
    y = mk.gather_reduce(machine_view(vmem, name), mk.format_code(name), addr, mk.REDUCE_CODES[mode],
                         np.empty((rows, n), np.float32))
    got = run(y, name)
    x = vmem[addr]                                            # (rows, k, n)
    want = {"none": lambda: x[:, 0], "sum": lambda: mfu.reduce_sum(np.moveaxis(x, 1, 0), name),
            "max": lambda: mfu.reduce_max(np.moveaxis(x, 1, 0), name)}[mode]()
    assert np.array_equal(got, bits_of(mfu.to_format(want, name), name))


@pytest.mark.parametrize("name", NAMES)
def test_copy_rows_writes_what_the_numpy_model_gives(name):
    """copy_rows (a chain with no MVU, reduction or op) writes mfu.to_format of the vectors it reads, every bit
    pattern of the 16-bit formats (and binary32's edges), within its lanes, all read before any is written."""
    n = 64
    if name == "fp32":
        patterns = edge_binary32().view(np.uint32)
    else:
        patterns = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    patterns = np.concatenate([patterns, np.zeros((-patterns.size) % n, patterns.dtype)])
    bits = patterns.reshape(-1, n)
    depth = bits.shape[0]
    rng = np.random.default_rng(5)
    src = rng.permutation(depth)
    dst = np.roll(src, 1)                   # each vector written is read by another row: reads come first
    for lo, hi in ((0, n), (3, 50)):
        vmem = bits.copy()
        mk.copy_rows(vmem, mk.format_code(name), src, dst, lo, hi)
        want = bits.copy()
        want[dst, lo:hi] = bits_of(mfu.to_format(bits[src].view(DTYPES[name]), name), name)[:, lo:hi]
        bad = np.argwhere(vmem != want)
        assert not bad.size, f"{len(bad)} lanes differ, first at {tuple(bad[0])}"


@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_max3_rows_is_the_numpy_models_max_pool_row(name):
    """max3_rows (a max pool's chain, on the bits) writes mfu.maximum(mfu.maximum(x, a), b) of the vectors it
    reads, for x and a over every pair of 16-bit patterns (signed zeros, subnormals, infinities, NaNs with any
    payload) and b each pattern in turn, into the vectors it is told to."""
    n = 256
    patterns = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    rng = np.random.default_rng(17)
    edges = bits_of(np.array([0.0, -0.0, np.inf, -np.inf, 1.0, -1.0], np.float32), name)
    x_bits = np.concatenate([np.repeat(edges, patterns.size // edges.size + 1)[:patterns.size], patterns,
                             rng.permutation(patterns)]).reshape(-1, n)
    a_bits = np.concatenate([patterns, np.tile(edges, patterns.size // edges.size + 1)[:patterns.size],
                             patterns]).reshape(-1, n)
    b_bits = np.roll(patterns, 1 << 12)[:x_bits.size % (1 << 16) or 1 << 16]
    b_bits = np.resize(np.concatenate([b_bits, rng.permutation(patterns)]), x_bits.size).reshape(-1, n)
    rows = x_bits.shape[0]
    vmem = np.concatenate([x_bits, a_bits, b_bits, np.zeros((rows, n), np.uint16)])
    src = rng.permutation(rows)
    operand_addr = np.stack([rows + src, 2 * rows + src])
    waddr = 3 * rows + rng.permutation(rows)
    mk.max3_rows(vmem.view(np.int16), mk.format_code(name), src, operand_addr, waddr)
    dt = DTYPES[name]
    x, a, b = (vmem[i].view(dt) for i in (src, rows + src, 2 * rows + src))
    want = bits_of(mfu.maximum(mfu.maximum(x, a, name), b, name), name)
    got = vmem[waddr]
    bad = np.argwhere(got != want)
    assert not bad.size, f"{len(bad)} lanes differ, first at {tuple(bad[0])}"
    assert np.array_equal(vmem[:3 * rows], np.concatenate([x_bits, a_bits, b_bits]))   # nothing read is written
