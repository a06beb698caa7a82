"""Simulated kernels against independent numpy references, bit for bit.

Each test builds a program with ``npu.kernels``, runs it, and compares the
DRAM output with a reference computed here from docs/numerics.md using only
the numerics building blocks (block quantisation, the MVU contract
``matvec``, the MFU operations) on plain numpy tensors -- never the
simulator.  The single-tile GEMV is also checked against exact rational
arithmetic (``tests/exact.py``), so the reference chain itself is anchored.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from npu import kernels as sp
from npu_toolkit.testing.exact import rne_binary32
from npu.numerics import mfu
from npu.numerics.dot import matvec
from npu.numerics.quantize import dequantize, quantize

# (weight format, activation format, MFU format): the default, the MX formats, the wide reference
FORMATS = [
    ("ms-fp9", "ms-fp9", "fp16"),
    ("mxfp8_e4m3", "mxfp8_e4m3", "fp16"),
    ("mxfp8_e5m2", "mxfp8_e5m2", "fp16"),
    ("mxfp4_e2m1", "mxfp4_e2m1", "fp16"),
    ("bfp24", "bfp24", "fp32"),
    ("ms-fp9", "ms-fp9", "bf16"),
    ("msfp12", "mxint8", "fp16"),          # mixed: 16-element weight blocks inside 32-element activation blocks
    ("mxfp8_e5m2", "mxfp8_e4m3", "bf16"),  # mixed MX pair (needs the split GEMM)
    # binary32 MFU: the output keeps the accumulator's bits, so block order and rounding are observable
    ("ms-fp9", "ms-fp9", "fp32"),
    ("mxfp4_e2m1", "mxfp8_e5m2", "fp32"),
]
FMT_IDS = [f"{w}/{a}/{m}" for w, a, m in FORMATS]
MFU_FORMATS = ["fp16", "bf16", "fp32"]


def cfg_for(fmts, base="tiny"):
    w, a, m = fmts
    return sp.config(base, weight=w, act=a, mfu_format=m)


# ----------------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------------
def ref_mvu(cfg, xrows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """MVU contract: (M, K*N) MFU-format inputs times (R*N, K*N) weights -> (M, R*N) in the MFU format."""
    n = cfg.native_dim
    xq = quantize(np.asarray(xrows, np.float32), cfg.activation_format, n)
    wq = quantize(np.asarray(w, np.float32), cfg.weight_format, n)
    return mfu.accumulator_to_format(matvec(wq, xq, n), cfg.mfu_format)


def ref_mvu_exact(cfg, xrows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Same contract with exact rational block sums (slow; small operands only)."""
    n = cfg.native_dim
    xq = quantize(np.asarray(xrows, np.float32), cfg.activation_format, n)
    wq = quantize(np.asarray(w, np.float32), cfg.weight_format, n)
    block = min(xq.block, wq.block)
    xv, wv = dequantize(xq), dequantize(wq)
    m, k = xv.shape
    out = np.zeros((m, wv.shape[0]), np.float32)
    for i in range(m):
        for r in range(wv.shape[0]):
            acc = np.float32(0.0)
            for b0 in range(0, k, block):
                s = sum((Fraction(float(wv[r, j])) * Fraction(float(xv[i, j])) for j in range(b0, b0 + block)),
                        Fraction(0))
                acc = np.float32(acc + rne_binary32(s))
            out[i, r] = acc
    return mfu.accumulator_to_format(out, cfg.mfu_format)


def seq_sum(vectors: np.ndarray, fmt: str) -> np.ndarray:
    """binary32 sum over axis 0 from +0 in order, rounded once to ``fmt``."""
    acc = np.zeros(vectors.shape[1:], np.float32)
    for v in vectors:
        acc = (acc + v.astype(np.float32)).astype(np.float32)
    return mfu.to_format(acc, fmt)


def windows(xp: np.ndarray, oh: int, ow: int, ksize: int, stride: int) -> np.ndarray:
    """(oh, ow, k*k, C) windows of a padded (H, W, C) tensor, taps in (ky, kx) order."""
    return np.stack([xp[ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
                     for ky in range(ksize) for kx in range(ksize)], axis=2)


def assert_bits(got: np.ndarray, want: np.ndarray) -> None:
    """Bit-for-bit equality with a readable first mismatch."""
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    ub = np.uint32 if got.dtype.itemsize == 4 else np.uint16
    gb, wb = np.ascontiguousarray(got).view(ub), np.ascontiguousarray(want).view(ub)
    bad = np.argwhere(gb != wb)
    if bad.size:
        i = tuple(bad[0])
        raise AssertionError(f"{len(bad)} of {got.size} elements differ; first at {i}: got {got[i]!r} "
                             f"({int(gb[i]):#x}), want {want[i]!r} ({int(wb[i]):#x})")


def nontrivial(y: np.ndarray) -> None:
    """Guard against vacuous comparisons (all zero / all NaN outputs)."""
    f = y.astype(np.float32)
    assert np.count_nonzero(np.isfinite(f) & (f != 0)) > f.size // 4


def run_output(kernel, **kw):
    result = kernel.run(**kw)
    return kernel.output(result), result


# ----------------------------------------------------------------------------------------------
# MVU kernels
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmts", FORMATS, ids=FMT_IDS)
def test_gemv_single_tile(fmts):
    cfg = cfg_for(fmts)
    k = sp.gemv(cfg, np.random.default_rng(1))
    y, res = run_output(k)
    want = ref_mvu(cfg, k.inputs["x"], k.inputs["w"])
    assert_bits(y, want)
    assert_bits(y, ref_mvu_exact(cfg, k.inputs["x"], k.inputs["w"]))
    nontrivial(y)
    assert res.stats.macs == cfg.native_dim ** 2


@pytest.mark.parametrize("fmts", FORMATS, ids=FMT_IDS)
def test_gemv_tiled(fmts):
    """r = 3 output vectors, K = k0*k1*c = 2*2*2 input vectors, 4 inputs in a batch, bias and ReLU."""
    cfg = cfg_for(fmts)
    k = sp.gemv(cfg, np.random.default_rng(2), batch=4, rows=3, k0=2, k1=2, c=2, bias=True, act="v_relu")
    y, res = run_output(k)
    acc = ref_mvu(cfg, k.inputs["x"], k.inputs["w"])
    want = mfu.relu(mfu.add(acc, k.inputs["b"][None, :], cfg.mfu_format), cfg.mfu_format)
    assert_bits(y, want)
    nontrivial(y)
    assert res.stats.macs == 4 * 3 * 8 * cfg.native_dim ** 2


def test_reference_is_sensitive_to_block_order():
    """Guard: with a binary32 MFU, summing the blocks in another order changes some outputs, so the
    bit-exact comparisons above do check the contract's across-block order (tap, channel tile, block)."""
    cfg = sp.config("tiny", weight="bfp24", act="bfp24", mfu_format="fp32")
    n = cfg.native_dim
    k = sp.gemv(cfg, np.random.default_rng(2), batch=8, rows=2, k0=4, c=2)
    y = k.output(k.run())
    x, w = k.inputs["x"], k.inputs["w"]
    rev = np.arange(8)[::-1]
    x_rev = x.reshape(8, 8, n)[:, rev].reshape(8, -1)
    w_rev = w.reshape(2 * n, 8, n)[:, rev].reshape(2 * n, -1)
    assert_bits(y, ref_mvu(cfg, x, w))
    assert (ref_mvu(cfg, x_rev, w_rev).view(np.uint32) != y.view(np.uint32)).any()


@pytest.mark.parametrize("fmts", [("ms-fp9", "ms-fp9", "fp16"), ("ms-fp9", "mxfp8_e4m3", "fp32"),
                                  ("mxfp4_e2m1", "bfp24", "bf16")], ids=lambda f: "/".join(f))
def test_gemv_tiled_bw_a10(fmts):
    """N = 128: one ms-fp9/bfp24 block per vector against 32-element MX blocks (4 reduction blocks per vector)."""
    cfg = cfg_for(fmts, "bw-a10")
    k = sp.gemv(cfg, np.random.default_rng(3), batch=2, rows=2, k0=3, c=1, act="v_tanh")
    y, _ = run_output(k)
    want = mfu.tanh(ref_mvu(cfg, k.inputs["x"], k.inputs["w"]), cfg.mfu_format)
    assert_bits(y, want)
    nontrivial(y)


@pytest.mark.parametrize("fmts", [FORMATS[0], FORMATS[2], FORMATS[8]], ids=[FMT_IDS[0], FMT_IDS[2], FMT_IDS[8]])
def test_gemv_zero_padded_channels(fmts):
    """Tiles whose trailing input columns and output rows are zero (channel padding), which the simulator
    leaves out of its GEMMs: the results equal the contract, including an otherwise zero weight row with an
    infinite weight (a NaN weight block) and an infinite input (a NaN input block)."""
    cfg = cfg_for(fmts)
    n = cfg.native_dim
    rng = np.random.default_rng(6)
    w = (rng.standard_normal((2 * n, 2 * n)) / 8).astype(np.float32)
    w[:, n - 7:n] = 0                                        # trailing input columns of each tile
    w[:, 2 * n - 12:] = 0
    w[n - 5:n] = 0                                           # trailing output rows of each tile
    w[2 * n - 9:] = 0
    w[2 * n - 2, 3] = np.inf
    x = rng.standard_normal((4, 2 * n)).astype(np.float32)
    x[2, n + 1] = np.inf
    k = sp.gemv(cfg, rng, batch=4, rows=2, c=2, x=x, w=w)
    y, _ = run_output(k)
    assert_bits(y, ref_mvu(cfg, k.inputs["x"], k.inputs["w"]))
    f = y.astype(np.float32)
    assert np.isnan(f[:, 2 * n - 2]).all() and np.isnan(f[2]).all()
    assert (f[[0, 1, 3]][:, n - 5:n] == 0).all()
    nontrivial(y)


def test_gemv_nonfinite_input_poisons_its_outputs():
    """An infinity in one input vector gives a NaN block: that batch item's outputs are all canonical NaN."""
    cfg = sp.config("tiny")
    n = cfg.native_dim
    x = np.random.default_rng(4).standard_normal((3, 2 * n)).astype(np.float32)
    x[1, n + 5] = np.inf
    k = sp.gemv(cfg, np.random.default_rng(4), batch=3, rows=2, c=2, x=x)
    y, _ = run_output(k)
    assert_bits(y, ref_mvu(cfg, k.inputs["x"], k.inputs["w"]))
    assert np.all(y[1].view(np.uint16) == 0x7E00)
    assert np.isfinite(y[[0, 2]].astype(np.float32)).all()


def conv_reference(k, stride, pad=1, ksize=3):
    cfg = k.config
    x, wt = k.inputs["x"], k.inputs["wt"]
    oh, ow, cout = k.out_shape
    win = windows(sp.pad_hw(x, pad), oh, ow, ksize, stride)
    acc = ref_mvu(cfg, win.reshape(oh * ow, -1), wt.reshape(cout, -1))
    y = mfu.add(acc, k.inputs["b"][None, :], cfg.mfu_format)
    return mfu.relu(y, cfg.mfu_format).reshape(oh, ow, cout)


@pytest.mark.parametrize("fmts", FORMATS, ids=FMT_IDS)
def test_conv3x3_stride2_zero_padding(fmts):
    """3x3, stride 2, zero border of 1: 7x9 input (odd sizes), 2 input and 2 output vectors per pixel."""
    cfg = cfg_for(fmts)
    k = sp.conv2d(cfg, np.random.default_rng(5), h=7, w=9, cin_v=2, cout_v=2, stride=2)
    assert k.out_shape == (4, 5, 2 * cfg.native_dim)
    y, _ = run_output(k)
    assert_bits(y, conv_reference(k, stride=2))
    nontrivial(y)


def test_conv3x3_stride1_bw_a10():
    """64 real input and 100 real output channels padded to one N = 128 vector each."""
    cfg = sp.config("bw-a10")
    k = sp.conv2d(cfg, np.random.default_rng(6), h=5, w=4, cin_v=1, cout_v=1, stride=1, cin=64, cout=100)
    y, _ = run_output(k)
    assert_bits(y, conv_reference(k, stride=1))
    assert not y[..., 100:].view(np.uint16).any()                             # padding channels: relu(0 + 0) = +0
    assert np.count_nonzero(y[..., :100]) > y[..., :100].size // 4


def test_lane_mask_concat_writes_only_its_lanes():
    cfg = sp.config("tiny")
    for lo, hi in ((8, 20), (0, 1), (31, 0), (0, 0)):
        k = sp.lane_concat(cfg, np.random.default_rng(7), count=5, lo=lo, hi=hi)
        y, _ = run_output(k)
        full = mfu.relu(ref_mvu(cfg, k.inputs["x"], k.inputs["w"]), cfg.mfu_format)
        want = k.inputs["dest"].copy()
        stop = hi or cfg.native_dim
        want[:, lo:stop] = full[:, lo:stop]
        assert_bits(y, want)


def test_concat_two_layers_into_one_buffer():
    """Two chains write disjoint lane ranges of the same vectors (as two DenseNet layers would)."""
    cfg = sp.config("tiny", mfu_format="bf16")
    n = cfg.native_dim
    rng = np.random.default_rng(8)
    b = sp.Builder(cfg)
    xa = b.load_vectors(rng.standard_normal((4, n)).astype(np.float32), name="x")
    dest = b.load_vectors(rng.standard_normal((4, n)).astype(np.float32), name="dest")
    w1 = b.load_weights(rng.standard_normal((n, n)).astype(np.float32) / 6, name="w1")
    w2 = b.load_weights(rng.standard_normal((n, n)).astype(np.float32) / 6, name="w2")
    b.chain(n0=4, mbase=w1, rd=dict(base=xa, s_n0=1), wr=dict(base=dest, s_n0=1, lo=0, hi=10))
    b.chain(n0=4, mbase=w2, mfu_ops=["v_sigm"], rd=dict(base=xa, s_n0=1), wr=dict(base=dest, s_n0=1, lo=10, hi=25))
    k = b.build(b.store(dest, 4), (4, n))
    y, _ = run_output(k)
    want = k.inputs["dest"].copy()
    want[:, :10] = ref_mvu(cfg, k.inputs["x"], k.inputs["w1"])[:, :10]
    want[:, 10:25] = mfu.sigmoid(ref_mvu(cfg, k.inputs["x"], k.inputs["w2"]), "bf16")[:, 10:25]
    assert_bits(y, want)


# ----------------------------------------------------------------------------------------------
# vector chains
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mfu_format", MFU_FORMATS)
def test_max_pool_3x3_stride2(mfu_format):
    cfg = sp.config("tiny", mfu_format=mfu_format)
    k = sp.pool(cfg, np.random.default_rng(9), h=8, w=7, c_v=2, mode="max")
    y, _ = run_output(k)
    oh, ow, c = k.out_shape
    win = windows(sp.pad_hw(k.inputs["x"], 1, -np.inf), oh, ow, 3, 2)       # -inf border never wins
    want = win.astype(np.float32).max(axis=2).astype(y.dtype)
    assert_bits(y, want)
    assert np.isfinite(y.astype(np.float32)).all()


@pytest.mark.parametrize("mfu_format", MFU_FORMATS)
def test_avg_pool_3x3_stride2(mfu_format):
    cfg = sp.config("tiny", mfu_format=mfu_format)
    k = sp.pool(cfg, np.random.default_rng(10), h=7, w=8, c_v=2, mode="avg")
    y, _ = run_output(k)
    oh, ow, c = k.out_shape
    win = windows(sp.pad_hw(k.inputs["x"], 1, 0.0), oh, ow, 3, 2)
    s = seq_sum(np.moveaxis(win, 2, 0), mfu_format)
    want = mfu.mul(s, mfu.to_format(np.float32(1 / 9), mfu_format), mfu_format)
    assert_bits(y, want)
    nontrivial(y)


@pytest.mark.parametrize("mfu_format", MFU_FORMATS)
def test_global_avg_pool(mfu_format):
    cfg = sp.config("tiny", mfu_format=mfu_format)
    k = sp.global_avg_pool(cfg, np.random.default_rng(11), h=7, w=7, c_v=3)
    y, res = run_output(k)
    x = k.inputs["x"]
    s = seq_sum(x.reshape(49, -1), mfu_format)              # pixels in (row, column) order
    want = mfu.mul(s, mfu.to_format(np.float32(1 / 49), mfu_format), mfu_format)
    assert_bits(y, want)
    nontrivial(y)
    assert res.stats.macs == 0


@pytest.mark.parametrize("mfu_format", MFU_FORMATS)
def test_residual_add_relu(mfu_format):
    cfg = sp.config("tiny", mfu_format=mfu_format)
    k = sp.elementwise(cfg, np.random.default_rng(12), ["vv_add", "v_relu"], rows=4, cols=5)
    y, _ = run_output(k)
    want = mfu.relu(mfu.add(k.inputs["x"], k.inputs["op0"], mfu_format), mfu_format)
    assert_bits(y, want)
    assert (y.astype(np.float32) >= 0).all() and np.count_nonzero(y) > y.size // 4


def activation_inputs(cfg, rows=3, cols=4):
    """Random values over [-10, 10] plus the edges of the table and special values."""
    n = cfg.native_dim
    rng = np.random.default_rng(13)
    x = rng.uniform(-10, 10, (rows, cols, n)).astype(np.float32)
    special = np.array([0.0, -0.0, 8.0, -8.0, 7.99, -7.99, 8.5, -8.5, np.inf, -np.inf, np.nan, 1 / 32, -1 / 32,
                        3.0 + 1 / 64, 1e-3, -1e-3, 65504.0, -65504.0, 0.5, -0.5], np.float32)
    x.reshape(-1)[: special.size] = special
    return sp.to_mfu(x, cfg)


@pytest.mark.parametrize("op", ["v_sigm", "v_tanh"])
@pytest.mark.parametrize("mfu_format", MFU_FORMATS)
def test_sigmoid_tanh_chains(op, mfu_format):
    cfg = sp.config("tiny", mfu_format=mfu_format)
    x = activation_inputs(cfg)
    k = sp.elementwise(cfg, None, [op], x=x)
    y, _ = run_output(k)
    f = mfu.sigmoid if op == "v_sigm" else mfu.tanh
    assert_bits(y, f(x, mfu_format))


@pytest.mark.parametrize("mfu_format", MFU_FORMATS)
def test_scaled_tanh_then_sigmoid_on_two_mfus(mfu_format):
    """vs_mul, v_tanh on MFU 0; vs_add, v_sigm on MFU 1 (LSTM-gate style)."""
    cfg = sp.config("tiny", mfu_format=mfu_format)
    k = sp.elementwise(cfg, np.random.default_rng(14), ["vs_mul", "v_tanh", "vs_add", "v_sigm"],
                       scalars={0: 2.5, 2: -0.3})
    y, _ = run_output(k)
    fm = mfu_format
    t = mfu.tanh(mfu.mul(k.inputs["x"], mfu.scalar(np.float32(2.5), fm), fm), fm)
    want = mfu.sigmoid(mfu.add(t, mfu.scalar(np.float32(-0.3), fm), fm), fm)
    assert_bits(y, want)


@pytest.mark.parametrize("mfu_format", MFU_FORMATS)
def test_vv_mul_max_b_sub_a(mfu_format):
    """vv_mul, vv_max (MFU 0), vv_b_sub_a (MFU 1)."""
    cfg = sp.config("tiny", mfu_format=mfu_format)
    k = sp.elementwise(cfg, np.random.default_rng(15), ["vv_mul", "vv_max", "vv_b_sub_a"])
    y, _ = run_output(k)
    fm, inp = mfu_format, k.inputs
    t = mfu.mul(inp["x"], inp["op0"], fm)
    t = mfu.maximum(t, inp["op1"], fm)
    want = mfu.sub(inp["op2"], t, fm)                   # b - a: the operand minus the chain value
    assert_bits(y, want)
    nontrivial(y)


@pytest.mark.parametrize("mfu_format", MFU_FORMATS)
def test_vv_max_vv_max_with_signed_zeros_and_specials(mfu_format):
    """A max pool's chain (one vector read, two vv_max), which the 16-bit formats run on the bits: signed zeros
    keep the first of equal values, NaN wins, infinities order."""
    cfg = sp.config("tiny", mfu_format=mfu_format)
    n = cfg.native_dim
    rng = np.random.default_rng(18)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.5, -1.5, 2.0 ** -20], np.float32)
    x, a, b = (rng.choice(special, (3, 4, n)) for _ in range(3))
    k = sp.elementwise(cfg, rng, ["vv_max", "vv_max"], x=x, operands={0: a, 1: b})
    y, _ = run_output(k)
    fm, inp = mfu_format, k.inputs
    want = mfu.maximum(mfu.maximum(inp["x"], inp["op0"], fm), inp["op1"], fm)
    assert_bits(y, want)
    assert np.signbit(y[(y == 0)]).any() and (~np.signbit(y[(y == 0)])).any() and np.isnan(y).any()


@pytest.mark.parametrize("mfu_format", MFU_FORMATS)
def test_vs_max_vv_a_sub_b_relu(mfu_format):
    cfg = sp.config("tiny", mfu_format=mfu_format)
    k = sp.elementwise(cfg, np.random.default_rng(16), ["vs_max", "vv_a_sub_b", "v_relu"], scalars={0: -0.25})
    y, _ = run_output(k)
    fm, inp = mfu_format, k.inputs
    t = mfu.maximum(inp["x"], mfu.scalar(np.float32(-0.25), fm), fm)
    want = mfu.relu(mfu.sub(t, inp["op1"], fm), fm)
    assert_bits(y, want)


@pytest.mark.parametrize("mfu_format", MFU_FORMATS)
def test_relu6_then_vv_min(mfu_format):
    """vs_mul, vs_min, v_relu (MFU 0: ReLU6 of 4x), vv_min (MFU 1)."""
    cfg = sp.config("tiny", mfu_format=mfu_format)
    k = sp.elementwise(cfg, np.random.default_rng(18), ["vs_mul", "vs_min", "v_relu", "vv_min"],
                       scalars={0: 4.0, 1: 6.0})
    y, _ = run_output(k)
    fm, inp = mfu_format, k.inputs
    t = mfu.mul(inp["x"], mfu.scalar(np.float32(4.0), fm), fm)
    t = mfu.relu(mfu.minimum(t, mfu.scalar(np.float32(6.0), fm), fm), fm)
    assert (t == 6).any() and (t == 0).any() and ((t > 0) & (t < 6)).any()
    want = mfu.minimum(t, inp["op3"], fm)
    assert_bits(y, want)
    nontrivial(y)


def test_mfu_nan_and_overflow_fp16():
    """NaN inputs give the canonical NaN; fp16 overflow gives infinity; max with NaN is NaN."""
    cfg = sp.config("tiny")
    n = cfg.native_dim
    x = np.full((1, 2, n), 60000.0, np.float32)
    x[0, 0, :4] = [np.nan, -np.nan, 1.0, -70000.0]
    b = np.full((1, 2, n), 40000.0, np.float32)
    b[0, 1, 7] = np.nan
    k = sp.elementwise(cfg, None, ["vv_add", "vs_max"], rows=1, cols=2, x=x, operands={0: b}, scalars={1: 0.0})
    y, _ = run_output(k)
    fm = "fp16"
    want = mfu.maximum(mfu.add(k.inputs["x"], k.inputs["op0"], fm), mfu.scalar(np.float32(0), fm), fm)
    assert_bits(y, want)
    yb = y.view(np.uint16)
    assert yb[0, 0, 0] == yb[0, 0, 1] == yb[0, 1, 7] == 0x7E00
    assert np.isinf(y[0, 1, 0])


# ----------------------------------------------------------------------------------------------
# several chains
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmts", FORMATS, ids=FMT_IDS)
def test_chains_feeding_each_other(fmts):
    cfg = cfg_for(fmts)
    k = sp.mlp(cfg, np.random.default_rng(17), batch=3, d_in=2, d_hidden=2, d_out=1)
    y, res = run_output(k)
    fm, inp = cfg.mfu_format, k.inputs
    h = mfu.relu(mfu.add(ref_mvu(cfg, inp["x"], inp["w1"]), inp["b1"][None, :], fm), fm)
    yy = mfu.tanh(ref_mvu(cfg, h, inp["w2"]), fm)                          # (batch, N)
    s = seq_sum(yy, fm)
    z = mfu.sub(mfu.mul(mfu.sigmoid(s, fm), mfu.scalar(inp["s"], fm), fm), yy[0], fm)
    want = np.concatenate([yy, s[None], z[None]])
    assert_bits(y, want)
    nontrivial(y)
    # the functional mode agrees
    assert_bits(k.output(k.run("functional")), want)


def test_vector_memory_readback_matches_dram():
    cfg = sp.config("tiny")
    k = sp.gemv(cfg, np.random.default_rng(18), batch=2, rows=2, c=2)
    res = k.run()
    vec = res.vectors(k.layout["out"], 4)
    assert_bits(vec.reshape(2, -1), k.output(res))


# ----------------------------------------------------------------------------------------------
# DMA and data movement
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mfu_format", MFU_FORMATS)
def test_strided_dma_round_trip(mfu_format):
    """v_load rows with DRAM and vector-memory strides, then v_store with other strides: bytes unchanged."""
    cfg = sp.config("tiny", mfu_format=mfu_format)
    n, vb = cfg.native_dim, cfg.vector_bytes
    rng = np.random.default_rng(19)
    x = sp.to_mfu(rng.standard_normal((5, 3, n)), cfg)                       # 5 rows of 3 vectors
    b = sp.Builder(cfg)
    src = b.put(b"".join(sp.pack_floats(row, mfu_format) + bytes(2 * vb) for row in x))   # DRAM row pitch 5 vectors
    b.raw("v_load", vaddr=100, daddr=src, rows=5, row_len=3, dstride=5 * vb, vstride=7, signal={"l2c"})
    b.nop(wait={"l2c"}, signal={"c2s"})
    dst = b.reserve(5 * 4 * vb)
    b.raw("v_store", vaddr=100, daddr=dst, rows=5, row_len=3, dstride=4 * vb, vstride=7, wait={"c2s"})
    k = b.build(dst, (5, 4, n))
    res = k.run()
    y = k.output(res)
    assert_bits(y[:, :3], x)
    assert not y[:, 3].view(np.uint8).any()                                  # the gaps stay untouched (zero)
    v = res.vectors(100, 35).reshape(5, 7, n)
    assert_bits(v[:, :3], x)
    assert not v[:, 3:].view(np.uint8).any()


def test_copy_chain_writes_canonical_nan():
    """docs/numerics.md section 4: "Every NaN written to a vector memory is the canonical NaN of F".

    A DMA copies byte images unchanged, so non-canonical NaNs can reach the vector memory by v_load; a chain
    that copies them (reduce=none, no MFU op) must canonicalise them like reduce=max or any MFU op does.
    (Regression: the copy chain used to write the payloads unchanged.)
    """
    cfg = sp.config("tiny")
    x = np.zeros((1, 32), np.float16)
    x.view(np.uint16)[0, :3] = [0x7E01, 0xFE00, 0x7C01]                       # quiet with payload, negative, signalling
    b = sp.Builder(cfg)
    a = b.load_vectors(x, name="x")
    b.chain(reduce="max", rd=dict(base=a), wr=dict(base=10))
    b.chain(rd=dict(base=a), mfu_ops=["v_relu"], wr=dict(base=11))
    b.chain(rd=dict(base=a), wr=dict(base=12))
    k = b.build(b.store(10, 3), (3, 32))
    y = k.output(k.run()).view(np.uint16)
    assert (y[:2, :3] == 0x7E00).all()
    assert (y[2, :3] == 0x7E00).all(), [hex(v) for v in y[2, :3]]
