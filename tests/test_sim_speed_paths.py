"""The simulator's fused VNNI chain kernels (npu.numerics.fused) are bit-exact.

Each case runs a program twice -- on the fused kernels, and with them turned
off (the block-sum path, itself tested against the numerics contract) -- and
compares the bits; GEMV cases are also compared with the contract reference
computed here from ``quantize`` and ``matvec``.  Data are adversarial:
elements spanning every binade of a block (plane-1 elements of the E4M3 path),
all-equal blocks at the largest values (the int32 sum bounds), zero blocks and
zero columns, fp16 subnormals and near-overflow values, NaN and infinities,
scales far outside binary32's normal range (which must fall back), NaN weight
codes, tails of iterations and partial channel counts.
"""
from __future__ import annotations

import math
import zlib

import ml_dtypes
import numpy as np
import pytest

from npu import kernels as sp
from npu.numerics import fused, mfu
from npu.numerics.dot import matvec
from npu.numerics.pack import tile_nbytes
from npu.numerics.quantize import quantize, quantize_to_values
from npu.sim import machine as machine_mod

needs_vnni = pytest.mark.skipif(not fused.AVAILABLE, reason="the fused kernels need AVX-512 VNNI")

# (weight, activation, MFU) formats the fused kernels serve
PAIRS = [
    ("ms-fp9", "ms-fp9", "fp16"),
    ("ms-fp8", "ms-fp9", "bf16"),
    ("msfp12", "ms-fp9", "fp16"),          # 16-element weight blocks inside one-vector activation blocks
    ("mxfp8_e4m3", "mxfp8_e4m3", "fp16"),
    ("mxfp8_e4m3", "mxfp8_e4m3", "bf16"),
]
IDS = ["/".join(p) for p in PAIRS]


def _counting(monkeypatch):
    """Count the fused kernels' calls."""
    calls = []
    for name in ("chain_int8", "chain_e4m3"):
        real = getattr(fused, name)

        def wrapper(*args, _real=real, _name=name):
            calls.append(_name)
            return _real(*args)
        monkeypatch.setattr(fused, name, wrapper)
    return calls


def _run_both(monkeypatch, kernel, *, expect_fused=True):
    """(output on the fused kernels, output with them off)."""
    calls = _counting(monkeypatch)
    fast = kernel.output(kernel.run())
    if expect_fused:
        assert calls, "the fused kernel did not run"
    before = len(calls)
    with monkeypatch.context() as m:
        m.setattr(machine_mod, "fused_plan", lambda *a, **k: None)
        slow = kernel.output(kernel.run())
    assert len(calls) == before, "the fused kernel ran with it turned off"
    return fast, slow


def _assert_bits(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    ub = np.uint32 if got.dtype.itemsize == 4 else np.uint16
    gb, wb = np.ascontiguousarray(got).view(ub), np.ascontiguousarray(want).view(ub)
    bad = np.argwhere(gb != wb)
    assert not bad.size, f"{len(bad)} of {got.size} differ; first at {tuple(bad[0])}: {got[tuple(bad[0])]!r} " \
                         f"vs {want[tuple(bad[0])]!r}"


def _contract(cfg, x, w):
    """The MVU contract: MFU-format rows ``x`` (M, K) times float weights ``w`` (R, K), in the MFU format."""
    n = cfg.native_dim
    xq = quantize(np.asarray(x, np.float32), cfg.activation_format, n)
    wq = quantize(np.asarray(w, np.float32), cfg.weight_format, n)
    return mfu.accumulator_to_format(matvec(wq, xq, n), cfg.mfu_format)


def _adversarial_x(rng, rows, cols, dtype, *, specials=True):
    """MFU-format activations: Gaussians with, per 32-element stretch, one of several hard patterns."""
    # (bf16 extremes within what the fused kernel's scale check takes; test_scales_outside... goes beyond)
    big = 60000.0 if dtype == np.float16 else 1e25
    tiny = 2.0 ** -24 if dtype == np.float16 else 2.0 ** -90
    x = rng.standard_normal((rows, cols)) * np.exp2(rng.integers(-6, 6, (rows, 1)))
    for r in range(rows):
        for b0 in range(0, cols, 32):
            kind = rng.integers(0, 9)
            special = specials and kind == 5 and r % 4 == 0      # NaN / Inf in a few rows only
            seg = slice(b0, b0 + 32)
            if kind == 0:
                x[r, seg] = 0.0                                            # zero block
            elif kind == 1:
                x[r, seg] *= np.exp2(-rng.integers(0, 22, 32))              # every binade (plane-1 elements)
            elif kind == 2:
                x[r, seg] = big * np.sign(rng.standard_normal())            # all at the top, one sign
            elif kind == 3:
                x[r, seg] = tiny * rng.integers(-3, 4, 32)                  # subnormals
            elif kind == 4:
                x[r, seg] = 448.0 * rng.choice([1.0, 1.0625, 1.0703125, 0.96875], 32) * 2.0 ** rng.integers(-8, 8)
            elif special:
                x[r, b0 + rng.integers(0, 32)] = rng.choice([np.nan, np.inf, -np.inf])
    return np.asarray(x, np.float32).astype(dtype)


def _adversarial_w(rng, rows, cols, *, live_rows=None, live_cols=None):
    """Float weights: Gaussians with elements across many binades, all-equal maxima, zero rows and blocks."""
    w = rng.standard_normal((rows, cols)) / math.sqrt(cols)
    w *= np.exp2(-rng.integers(0, 16, (rows, cols)) * (rng.random((rows, cols)) < 0.2))
    w[: rows // 8] = np.sign(rng.standard_normal((rows // 8, 1))) * 3.0          # largest elements, one sign
    w[:, 32:64] = 0.0 if cols > 64 else w[:, 32:64]                             # a zero block column
    if live_rows is not None:
        w[live_rows:] = 0.0
    if live_cols is not None:
        w[:, live_cols:] = 0.0
    return w.astype(np.float32)


@needs_vnni
@pytest.mark.parametrize("fmts", PAIRS, ids=IDS)
@pytest.mark.parametrize("base", ["tiny", "bw-s10"])
def test_gemv_equals_block_sum_path_and_contract(monkeypatch, fmts, base):
    cfg = sp.config(base, weight=fmts[0], act=fmts[1], mfu_format=fmts[2])
    n = cfg.native_dim
    rng = np.random.default_rng(zlib.crc32("/".join(fmts + (base,)).encode()))
    batch, rows, c = 53, 3, 2                                   # 53 iterations: partial tiles and tasks
    dtype = mfu.mfu_format(cfg.mfu_format).dtype
    x = _adversarial_x(rng, batch, c * n, dtype)
    w = _adversarial_w(rng, rows * n, c * n, live_rows=rows * n - 7)
    kernel = sp.gemv(cfg, rng, batch=batch, rows=rows, c=c, x=x, w=w)
    fast, slow = _run_both(monkeypatch, kernel)
    _assert_bits(fast, slow)
    _assert_bits(fast, _contract(cfg, kernel.inputs["x"], w).reshape(fast.shape))
    assert np.isfinite(fast.astype(np.float32)).mean() > 0.5


@needs_vnni
@pytest.mark.parametrize("fmts", PAIRS, ids=IDS)
def test_conv_with_bias_relu_partial_channels(monkeypatch, fmts):
    """3x3 convolution (taps read each input vector 9 times), channels padded, bias and ReLU in the MFU."""
    cfg = sp.config("bw-s10", weight=fmts[0], act=fmts[1], mfu_format=fmts[2])
    rng = np.random.default_rng(7)
    kernel = sp.conv2d(cfg, rng, h=9, w=11, cin_v=2, cout_v=2, cin=150, cout=200)
    fast, slow = _run_both(monkeypatch, kernel)
    _assert_bits(fast, slow)
    assert np.count_nonzero(fast.astype(np.float32)) > fast.size // 8


@needs_vnni
def test_e4m3_extremes_of_the_int32_bound(monkeypatch):
    """Blocks whose every element is 448 (times their scale) against weights likewise: the largest block sums,
    with the finest activation unit refused by the bound; and blocks with one large element among tiny ones."""
    cfg = sp.config("bw-s10", weight="mxfp8_e4m3", act="mxfp8_e4m3", mfu_format="fp16")
    n = cfg.native_dim
    rng = np.random.default_rng(11)
    batch = 20
    x = np.full((batch, n), 448.0, np.float32) * np.exp2(rng.integers(-10, 6, (batch, 1)))
    x[1::2, 1:] *= np.exp2(-rng.integers(4, 18, (batch // 2, n - 1)))         # one big element, the rest tiny
    x[2::4] *= -1
    w = np.full((n, n), 448.0 * 2 ** -9, np.float32)
    w[::3, 5::7] *= 2.0 ** -12                                                  # plane-1 weights here and there
    kernel = sp.gemv(cfg, rng, batch=batch, rows=1, x=x.astype(np.float16), w=w)
    fast, slow = _run_both(monkeypatch, kernel)
    _assert_bits(fast, slow)
    _assert_bits(fast, _contract(cfg, kernel.inputs["x"], w).reshape(fast.shape))


@needs_vnni
def test_e4m3_blocks_without_weights(monkeypatch):
    """Reduction blocks whose weights are all zero are left out of the E4M3 kernel: their terms are +0, or NaN
    when the activations of the block hold a NaN or an infinity (a NaN scale), whatever the other blocks hold."""
    cfg = sp.config("bw-s10", weight="mxfp8_e4m3", act="mxfp8_e4m3", mfu_format="fp16")
    n = cfg.native_dim
    rng = np.random.default_rng(23)
    batch = 14
    x = (rng.standard_normal((batch, 2 * n)) * 4).astype(np.float32)
    w = (rng.standard_normal((n, 2 * n)) * 2.0 ** -6).astype(np.float32)
    w[:, 32:64] = 0.0                                  # blocks 1, 3 and 6: no weight anywhere
    w[:, 96:128] = 0.0
    w[:, n + 64:n + 96] = 0.0
    x[3, 40] = np.nan
    x[5, 100] = np.inf
    x[6, n + 70] = -np.inf
    x[7, 33:64] = 60000.0                              # large values where nothing multiplies them
    x[8, n + 64:n + 96] = 0.0
    kernel = sp.gemv(cfg, rng, batch=batch, rows=1, c=2, x=x.astype(np.float16), w=w)
    fast, slow = _run_both(monkeypatch, kernel)
    _assert_bits(fast, slow)
    _assert_bits(fast, _contract(cfg, kernel.inputs["x"], w).reshape(fast.shape))
    got = fast.astype(np.float32)
    assert np.isnan(got[[3, 5, 6]]).all() and np.isfinite(got[[0, 1, 2, 4, 7, 8]]).all()


@needs_vnni
def test_e4m3_plane1_activations_times_plane1_weights(monkeypatch):
    """Terms made of plane-1 activations times plane-1 weights alone (every other product zero): the smallest
    block sums there are, which must still be exact (not flushed to zero)."""
    cfg = sp.config("bw-s10", weight="mxfp8_e4m3", act="mxfp8_e4m3", mfu_format="bf16")
    n = cfg.native_dim
    rng = np.random.default_rng(41)
    batch = 8
    x = np.zeros((batch, n), np.float32)
    x[:, 0] = 256.0                                    # the block's largest: plane-0 unit 2**-6 or coarser
    x[:, 1] = 2.0 ** -8 * rng.choice([-3.0, -1.0, 1.0, 2.0], batch)     # plane 1: not multiples of 2**-6
    x[::2, 5] = 2.0 ** -7
    w = np.zeros((n, n), np.float32)
    w[:, 2] = 1.0                                      # the weight blocks' largest (256 after their scale 2**8)
    w[:, 1] = 2.0 ** -15 * rng.choice([-1.0, 1.0, 3.0], n)               # plane 1 after the scale
    w[::3, 5] = -3 * 2.0 ** -16
    kernel = sp.gemv(cfg, rng, batch=batch, rows=1, x=x.astype(ml_dtypes.bfloat16), w=w)
    fast, slow = _run_both(monkeypatch, kernel)
    _assert_bits(fast, slow)
    _assert_bits(fast, _contract(cfg, kernel.inputs["x"], w).reshape(fast.shape))
    exact = x.astype(np.float64) @ w.astype(np.float64).T          # a few products of 2**-23: exact in bf16
    assert np.array_equal(fast.astype(np.float64).reshape(exact.shape), exact)
    assert np.count_nonzero(exact) > exact.size // 2


@needs_vnni
def test_e4m3_nan_weight_codes(monkeypatch):
    """E4M3 weight codes 0x7F / 0xFF (NaN) under finite scales: their blocks' sums are NaN."""
    cfg = sp.config("tiny", weight="mxfp8_e4m3", act="mxfp8_e4m3", mfu_format="fp16")
    n = cfg.native_dim
    rng = np.random.default_rng(3)
    kernel = sp.gemv(cfg, rng, batch=9, rows=2, c=2)
    load = next(ins for ins in kernel.instructions if ins.spec.mnemonic == "m_load")
    tb = tile_nbytes(cfg.weight_format, n)
    image = bytearray(kernel.dram)
    for tile, row, col, code in [(0, 3, 5, 0x7F), (1, 30, 31, 0xFF), (3, 0, 0, 0x7F)]:
        at = load.fields["daddr"] + tile * tb + n * n // 32 + row * n + col
        image[at] = code
    kernel.dram = bytes(image)
    fast, slow = _run_both(monkeypatch, kernel)
    _assert_bits(fast, slow)
    assert np.isnan(fast.astype(np.float32)).any()


@needs_vnni
@pytest.mark.parametrize("mfu_format", ["bf16", "fp16"])
def test_scales_outside_binary32_fall_back(monkeypatch, mfu_format):
    """Activations around 1e-38 (bf16) or weights around 2**-120: E8M0 scale products below 2**-126 are
    refused by the fused kernel's check and computed on the block-sum path, with the same bits."""
    cfg = sp.config("tiny", weight="mxfp8_e4m3", act="mxfp8_e4m3", mfu_format=mfu_format)
    n = cfg.native_dim
    rng = np.random.default_rng(5)
    if mfu_format == "bf16":
        x = (rng.standard_normal((6, n)) * 1e-36).astype(ml_dtypes.bfloat16)
        w = rng.standard_normal((n, n)).astype(np.float32) * 1e-3
    else:
        x = rng.standard_normal((6, n)).astype(np.float16)
        w = (rng.standard_normal((n, n)) * 2.0 ** -115).astype(np.float32)
    kernel = sp.gemv(cfg, rng, batch=6, rows=1, x=x, w=w)
    fast, slow = _run_both(monkeypatch, kernel, expect_fused=False)
    _assert_bits(fast, slow)


@needs_vnni
def test_in_place_operand_and_tail_batches(monkeypatch):
    """A chain whose MFU operand is the vector it writes (not written in place by the kernel), and a batch count
    beyond one task, in both kernels."""
    for fmts in [("ms-fp9", "ms-fp9", "fp16"), ("mxfp8_e4m3", "mxfp8_e4m3", "fp16")]:
        cfg = sp.config("tiny", weight=fmts[0], act=fmts[1], mfu_format=fmts[2])
        n = cfg.native_dim
        rng = np.random.default_rng(13)
        b = sp.Builder(cfg)
        batch = 101
        x = rng.standard_normal((batch, n)).astype(np.float32)
        w = rng.standard_normal((n, n)).astype(np.float32) / 6
        xa = b.load_vectors(x, name="x")
        mbase = b.load_weights(w, name="w")
        out = b.load_vectors(rng.standard_normal((batch, n)).astype(np.float32), name="acc")
        b.chain(n0=batch, mbase=mbase, mfu_ops=[("vv_add", dict(base=out, s_n0=1)), "v_relu"],
                rd=dict(base=xa, s_n0=1), wr=dict(base=out, s_n0=1))
        daddr = b.store(out, batch)
        kernel = b.build(daddr, (batch, n))
        fast, slow = _run_both(monkeypatch, kernel)
        _assert_bits(fast, slow)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("groups", [1, 2, 5, 16])
def test_row_tasks_cover_every_row_once_in_whole_micro_tiles(threads, groups):
    for m_rows in list(range(0, 60)) + [97, 196, 784, 3136, 12544]:
        tasks, per_task = fused.row_tasks(m_rows, groups, threads)
        tiles = -(-m_rows // fused.MR)
        assert per_task % fused.MR == 0 and fused.MR <= per_task <= fused.MR * fused.TILES_PER_TASK
        assert tasks * per_task >= m_rows and (tasks - 1) * per_task < max(m_rows, 1)   # none empty
        if m_rows:                  # no task holds more than an even share of TASKS_PER_THREAD per thread
            want = min(-(-fused.TASKS_PER_THREAD * threads // groups), tiles)
            assert per_task // fused.MR <= -(-tiles // want)


@needs_vnni
def test_thread_counts_and_serial_kernels_give_the_same_bits(monkeypatch):
    """Row tasks depend on the thread count, and small kernels run on one thread: neither changes a bit."""
    import numba

    for fmts in [("ms-fp9", "ms-fp9", "fp16"), ("mxfp8_e4m3", "mxfp8_e4m3", "bf16")]:
        cfg = sp.config("tiny", weight=fmts[0], act=fmts[1], mfu_format=fmts[2])
        n = cfg.native_dim
        rng = np.random.default_rng(17)
        x = _adversarial_x(rng, 55, 2 * n, mfu.mfu_format(cfg.mfu_format).dtype)
        kernel = sp.gemv(cfg, rng, batch=55, rows=3, c=2, x=x, w=_adversarial_w(rng, 3 * n, 2 * n))
        outputs = []
        threads = numba.get_num_threads()
        for use, serial_below in [(1, 0.0), (threads, 0.0), (threads, math.inf)]:
            monkeypatch.setattr(machine_mod, "SERIAL_BELOW_S", serial_below)
            numba.set_num_threads(use)
            try:
                outputs.append(kernel.output(kernel.run()))
            finally:
                numba.set_num_threads(threads)
        for got in outputs[1:]:
            _assert_bits(got, outputs[0])


# ----- the E4M3 plane quantiser against the conversion rule --------------------------------------------
def _planes(v: np.ndarray, wmax: int = 28672):
    rows, n = v.shape
    x0, x1 = np.empty((rows, n), np.int16), np.full((rows, n), 0x5A5A, np.int16)
    sc = np.empty((rows, n // 32), np.uint8)
    e0 = np.empty((rows, n // 32), np.int8)
    fl = np.empty((rows, n // 32), np.uint32)
    fused.gather_quantize_e4m3(np.ascontiguousarray(v).view(np.uint16), v.dtype != np.float16,
                               np.arange(rows)[:, None], wmax, x0, x1, sc, e0, fl)
    # plane 1 is defined only in the blocks with plane-1 flags (the kernels read it nowhere else)
    x1 = np.where(np.repeat(fl != 0, 32, axis=1), x1, 0).astype(np.int16)
    return x0, x1, sc, e0, fl


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["fp16", "bf16"])
def test_e4m3_planes_equal_the_conversion_rule(dtype):
    """Every finite 16-bit pattern, in order and shuffled, then blocks spread over many binades and scales: the
    planes' values equal the contract's conversion (quantize_to_values), and the planes' invariants hold."""
    rng = np.random.default_rng(17)
    allv = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dtype)
    allv = allv[np.isfinite(allv.astype(np.float32))]
    allv = np.concatenate([allv, np.zeros(-allv.size % 128, dtype)])
    cases = [allv.reshape(-1, 128), allv[rng.permutation(allv.size)].reshape(-1, 128)]
    scales = range(-30, 16, 3) if dtype == np.float16 else range(-140, 127, 9)
    for e in scales:
        base = rng.standard_normal((32, 128)) * 2.0 ** e
        base[:, ::5] *= np.exp2(-rng.integers(0, 24, base[:, ::5].shape))
        with np.errstate(over="ignore"):
            cases.append(np.asarray(base, np.float32).astype(dtype))
    for v in cases:
        for wmax in (28672, 1, 0):
            x0, x1, sc, e0, fl = _planes(v, wmax)
            q, s = quantize_to_values(v.astype(np.float32), "mxfp8_e4m3")
            rows = v.shape[0]
            bad_block = ~np.isfinite(v.astype(np.float32)).reshape(rows, -1, 32).all(-1)
            zero_block = (v.astype(np.float32).reshape(rows, -1, 32) == 0).all(-1) & ~bad_block
            assert np.array_equal(sc, np.where(zero_block, 127, s))
            unit = np.repeat(np.exp2(e0.astype(np.float64)), 32, axis=1)
            got = x0 * unit + x1 * 2.0 ** -9
            assert np.array_equal(got, q.astype(np.float64))
            assert np.all((x0 == 0) | (x1 == 0))
            assert np.all((e0 >= fused.E0X_MIN) & (e0 <= fused.E0X))
            l1 = np.abs(x0.astype(np.int64)).reshape(rows, -1, 32).sum(-1)
            assert np.all(l1 * wmax < 2 ** 31)
            # and it is the finest such unit: one binade finer would break the bound
            quanta = (np.abs(q.astype(np.float64)) * 2.0 ** 9).astype(np.int64).reshape(rows, -1, 32).sum(-1)
            finer = quanta * wmax > (2 ** 31 - 1) << (e0.astype(np.int64) - 1 + 9)
            assert np.all((e0 == fused.E0X_MIN) | finer | zero_block | bad_block)
            bits = ((x1 != 0).reshape(rows, -1, 32) * (1 << np.arange(32, dtype=np.uint64))).sum(-1)
            assert np.array_equal(bits.astype(np.uint32), fl)
            # plane 1 holds exactly the elements that are not multiples of the block's plane-0 unit
            assert np.all((x1 == 0) | (np.abs(x1) < np.repeat(np.exp2(e0.astype(np.int64) + 12), 32, axis=1)))


def test_e4m3_weight_planes_cover_every_code():
    """Plane 0 takes the multiples of 2**E0W (below 2**15 of them), plane 1 the rest, for every finite code."""
    codes = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    codes = codes[np.isfinite(codes)]
    w0, w1 = fused.e4m3_weight_planes(codes)
    assert np.array_equal(w0.astype(np.float64) * 2.0 ** fused.E0W + w1 * 2.0 ** -9, codes.astype(np.float64))
    assert np.all((w0 == 0) | (w1 == 0)) and np.abs(w0.astype(np.int64)).max() < 2 ** 15
    assert np.abs(w1).max() < 2 ** (fused.E0W + 12)


def test_plane1_chunks_hold_every_plane1_weight_once():
    """The plane-1 weights' K-step chunks, laid back out by their (group, panel, block, column group) and
    K-step, give back every plane-1 weight, and each chunk holds some."""
    rng = np.random.default_rng(31)
    r, nb, n = 3, 5, 80                                       # 80 columns: panels of 4 and 1 column groups
    w1 = np.where(rng.random((r, nb, 32, n)) < 0.004, rng.integers(-63, 64, (r, nb, 32, n)), 0).astype(np.int32)
    w1[1, 2, 31, 79] = 5                                      # the last element of the last column
    steps = np.full(nb, 16, np.int64)
    nvs = fused.panel_widths(n)
    chunks, ksteps, off = fused._plane1_chunks(w1, nvs, steps)
    back = np.zeros_like(w1)
    c0 = 0
    for p, nv in enumerate(nvs):
        for g, b, v in np.argwhere(off[:, p] != 0):
            first, count = off[g, p, b, v] >> fused.CHUNK_COUNT_BITS, off[g, p, b, v] & 31
            for q in range(first, first + count):
                pairs = chunks[32 * q: 32 * q + 32].reshape(16, 2)            # per column, the step's two elements
                assert pairs.any()
                cols = slice(c0 + 16 * v, c0 + 16 * v + 16)
                back[g, b, 2 * ksteps[q]: 2 * ksteps[q] + 2, cols] = pairs.T[:, :n - cols.start]
        c0 += 16 * int(nv)
    assert np.array_equal(back, w1) and np.count_nonzero(w1) > 100


@needs_vnni
@pytest.mark.parametrize("name, precision", [("resnet_small", "ms-fp9"), ("resnet_small", "mxfp8"),
                                             ("densenet_small", "mxfp8")])
def test_whole_networks_on_the_fused_kernels_equal_the_reference(monkeypatch, name, precision):
    """Compiled networks on the fused kernels, twice (the second run reuses the packed weights): the output
    equals the numpy reference of the compiled model bit for bit."""
    from compiler.compile import compile_model
    from compiler.models import nets
    from compiler.reference import reference_outputs
    from npu.hostio import run_on_simulator
    from npu.sim import clear_program_cache

    calls = _counting(monkeypatch)
    clear_program_cache()
    model = nets.MODELS[name]()
    compiled = compile_model(model, "tiny", precision)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(5).standard_normal(dims).astype(np.float32)
    (ref,) = reference_outputs(compiled, {"data": x}).values()
    for _ in range(2):
        outs, _ = run_on_simulator(compiled.program, {"data": x}, mode="functional")
        (y,) = outs.values()
        assert np.array_equal(y.reshape(-1).view(np.uint32), ref.reshape(-1).astype(np.float32).view(np.uint32))
    assert calls
    clear_program_cache()


@needs_vnni
def test_e4m3_chains_read_the_weights_of_the_next_chain_ahead(monkeypatch):
    """A run on the E4M3 kernel notes each chain's weights on the chain before it; the next run passes them to
    that chain's kernel (``ahead``, read into the caches while its threads wait for the last task).  After
    every chain the vector memory of the run with ``ahead`` equals that of the run without, bit for bit, and
    both outputs equal the reference's."""
    from compiler.compile import compile_model
    from compiler.models import nets
    from compiler.reference import reference_outputs
    from npu.hostio import run_on_simulator
    from npu.sim import clear_program_cache

    calls = []
    real = fused.chain_e4m3

    def recording(*args):
        done = real(*args)
        # (the chain's weights, ahead, the vector memory after the chain)
        calls.append((args[15], args[28], zlib.crc32(np.ascontiguousarray(args[-7]).view(np.uint8))))
        return done
    monkeypatch.setattr(fused, "chain_e4m3", recording)
    clear_program_cache()
    model = nets.MODELS["resnet_small"]()
    compiled = compile_model(model, "tiny", "mxfp8")
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(6).standard_normal(dims).astype(np.float32)
    (ref,) = reference_outputs(compiled, {"data": x}).values()
    runs = []
    for _ in range(2):
        calls.clear()
        outs, _ = run_on_simulator(compiled.program, {"data": x}, mode="functional")
        (y,) = outs.values()
        assert np.array_equal(y.reshape(-1).view(np.uint32), ref.reshape(-1).astype(np.float32).view(np.uint32))
        runs.append(list(calls))
    first, second = runs
    assert len(first) == len(second) > 3
    assert all(ahead.size == 0 for _, ahead, _ in first)
    assert [memory for _, _, memory in second] == [memory for _, _, memory in first]
    assert len({memory for _, _, memory in first}) == len(first)          # every chain changed the memory
    for i, (wp, ahead, _) in enumerate(second):
        later = [w for w, _, _ in second[i + 1:] if w is not wp]
        if later:
            assert ahead.dtype == np.uint8 and ahead.nbytes == later[0].nbytes
            assert np.shares_memory(ahead, later[0])
        else:
            assert ahead.size == 0
    clear_program_cache()


@pytest.mark.parametrize("fmt_name", ["fp16", "bf16"])
def test_fused_mfu_rows_equal_the_generic_pipeline(fmt_name):
    """The one-pass MFU rows (vv_add, vv_add + relu, vv_add + vv_add + relu, none) against the generic op-by-op
    pipeline: overflow to infinity, NaN and infinite operands, signed zeros, subnormals, exact ties."""
    import numba

    from npu.numerics import mfu_kernels as mk

    fmt = mk.format_code(fmt_name)
    dtype = np.float16 if fmt_name == "fp16" else ml_dtypes.bfloat16
    rng = np.random.default_rng(19)
    rows, n = 64, 128
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 65504.0, -65504.0, 6e-8, -6e-8, 1e38, -1e38, 3e-39],
                        np.float32)
    y = (rng.standard_normal((rows, n)) * np.exp2(rng.integers(-30, 30, (rows, n)))).astype(np.float32)
    y.reshape(-1)[rng.integers(0, y.size, 400)] = rng.choice(specials, 400)
    vm = (rng.standard_normal((2 * rows, n)) * np.exp2(rng.integers(-20, 20, (2 * rows, n)))).astype(np.float32)
    vm.reshape(-1)[rng.integers(0, vm.size, 400)] = rng.choice(specials, 400)
    with np.errstate(over="ignore"):
        vmem = vm.astype(dtype).view(np.uint16)
    oa = np.stack([np.arange(rows), rows + np.arange(rows)]).astype(np.int64)
    tables = np.zeros((4, 512), np.float32)

    @numba.njit
    def both(pattern, y, ops, sources, oa, vmem, fast, slow):
        n = y.shape[1]
        v, t, w = np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32)
        scalars = np.zeros(ops.shape[0], np.float32)
        for i in range(y.shape[0]):
            if pattern == 0:
                mk._row_round(y[i], i, fmt, oa, vmem, fast[i])
            elif pattern == 1:
                mk._row_add(y[i], i, fmt, oa, vmem, fast[i])
            elif pattern == 2:
                mk._row_add_relu(y[i], i, fmt, oa, vmem, fast[i])
            else:
                mk._row_add_add_relu(y[i], i, fmt, oa, vmem, fast[i])
            mk._pipeline_row(y[i], i, fmt, ops, sources, scalars, oa, vmem, tables, v, t, w, slow)

    for ops in ([], [mk.ADD], [mk.ADD, mk.RELU], [mk.ADD, mk.ADD, mk.RELU]):
        ops_a = np.array(ops, np.int64)
        sources = np.array([mk.VECTOR_OPERAND if op == mk.ADD else mk.NO_OPERAND for op in ops], np.int64)
        pattern = mk._fused_pattern(fmt, ops_a, sources)
        assert pattern == len(ops) if len(ops) < 3 else pattern == 3
        fast, slow = np.empty((rows, n), np.uint16), np.empty((rows, n), np.uint16)
        both(pattern, y, ops_a, sources, oa, vmem, fast, slow)
        assert np.array_equal(fast, slow), (ops, np.argwhere(fast != slow)[:3])
    assert mk._fused_pattern(fmt, np.array([mk.MUL], np.int64), np.array([mk.VECTOR_OPERAND], np.int64)) == -1
    assert mk._fused_pattern(mk.FP32, np.zeros(0, np.int64), np.zeros(0, np.int64)) == -1


@pytest.mark.parametrize("raddr, quantised, first", [
    (np.array([[4, 5], [5, 6], [6, 7]]), 4, 4),          # overlapping reads: the range 4..7, once each
    (np.array([[0, 9], [3, 6]]), 4, -1),                 # reads apart: each in order (the range has 10)
    (np.array([[2, 3], [4, 5]]), 4, 2),                  # each vector once, in order: one run from 2
    (np.array([[3, 2], [4, 5]]), 4, -1),                 # each once, not in order: no run
])
def test_row_indices_quantise_the_fewer_vectors(raddr, quantised, first):
    """The fused kernels' inputs: the vectors quantised are the read range or the reads, whichever is fewer,
    the row indices give back every read, a run of consecutive vectors is known by its first, and the read
    range by its ends."""
    addr, aidx, got_first, lo, hi = machine_mod._row_indices(raddr)
    assert addr.shape == (quantised, 1)
    assert np.array_equal(addr[aidx, 0], raddr)
    assert got_first == first and (lo, hi) == (raddr.min(), raddr.max())
    if first >= 0:
        assert np.array_equal(addr[:, 0], np.arange(first, first + quantised))


@needs_vnni
@pytest.mark.parametrize("mfu_format", ["fp16", "bf16"])
@pytest.mark.parametrize("overwrite", ["chain", "v_load"])
def test_e4m3_input_conversions_serve_later_chains_until_written(monkeypatch, mfu_format, overwrite):
    """A chain's E4M3 input conversion serves a later chain reading vectors of it (here every other one), and
    not one reading them after a chain or a load wrote over them: the outputs equal the block-sum path's."""
    cfg = sp.config("tiny", weight="mxfp8_e4m3", act="mxfp8_e4m3", mfu_format=mfu_format)
    n, count = cfg.native_dim, 40
    rng = np.random.default_rng(21)
    b = sp.Builder(cfg, grouped=False, auto_tokens=False)
    x = rng.standard_normal((count, n)) * 2.0 ** rng.integers(-6, 6, (count, 1))
    y = rng.standard_normal((count, n)) * 3
    xa = b.load_vectors(x)
    ya = b.load_vectors(y)
    wa = b.load_weights(rng.standard_normal((n, n)) / 8)
    wb = b.load_weights(rng.standard_normal((n, n)) / 8, signal={"l2c"})
    out = b.alloc(3 * count)
    b.chain(n0=count, mbase=wa, rd=dict(base=xa, s_n0=1), wr=dict(base=out, s_n0=1), wait={"l2c"})
    b.chain(n0=count // 2, mbase=wb, rd=dict(base=xa + 1, s_n0=2), wr=dict(base=out + count, s_n0=1),
            signal={"c2l"} if overwrite == "v_load" else set())
    if overwrite == "chain":                                                      # Y copied over X
        b.chain(n0=count, rd=dict(base=ya, s_n0=1), wr=dict(base=xa, s_n0=1))
    else:                                                                         # Y loaded over X
        b.load_vectors(y, vaddr=xa, wait={"c2l"}, signal={"l2c"})
    b.chain(n0=count, mbase=wb, rd=dict(base=xa, s_n0=1), wr=dict(base=out + 2 * count, s_n0=1),
            wait={"l2c"} if overwrite == "v_load" else set(), signal={"c2s"})
    daddr = b.store(out, 3 * count, wait={"c2s"})
    kernel = b.build(daddr, (3 * count, n))
    converts = []
    real = fused.chain_e4m3

    def recording(*args):
        converts.append(bool(args[-2]))
        return real(*args)
    monkeypatch.setattr(fused, "chain_e4m3", recording)
    fast, slow = _run_both(monkeypatch, kernel)
    assert converts == [True, False, True]
    _assert_bits(fast[:count + count // 2], slow[:count + count // 2])
    _assert_bits(fast[2 * count:], slow[2 * count:])
