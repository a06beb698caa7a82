"""Hypothesis strategies for random small legal programs on the ``tiny`` machine (see tests/test_sim_properties.py).

``programs`` draws loads at the start (random activations with some
infinities and NaNs, random weight tiles, scalar registers), then 1-4 chains
with random loop counts, strides, reductions, MFU op lists that fit 2 MFUs
and lane masks, and stores at the end, all ordered by tokens.  Chain ``j``
writes only its own area of the vector memory and reads only the inputs and
earlier chains' areas.  Needs hypothesis (the ``test`` extra).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from npu import kernels as sp
from npu.isa.table import MFU_SLOTS
from npu.isa.validate import mfu_assignment

N = 32
INPUT = 64                  # vectors of loaded activations at [0, INPUT)
AREA = 48                   # vectors each chain may write
TILES = 8                   # random weight tiles at MRF 0..TILES-1
SREGS = 4
BLOCK_FORMATS = ["ms-fp8", "ms-fp9", "msfp12", "msfp16", "bfp24", "mxint8", "mxfp8_e4m3", "mxfp8_e5m2",
                 "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4_e2m1"]
MFU_OPS = sorted(MFU_SLOTS)

def _extent(base, terms):
    lo = hi = base
    for stride, count in terms:
        span = stride * (count - 1)
        lo, hi = lo + min(0, span), hi + max(0, span)
    return lo, hi


@st.composite
def strides_within(draw, counts, limit, max_stride=4):
    """Signed strides for ``counts`` and a base so that every address lies in [0, limit)."""
    strides = [draw(st.integers(-max_stride, max_stride)) if cnt > 1 else draw(st.integers(-2, 2))
               for cnt in counts]
    lo, hi = _extent(0, zip(strides, counts))
    while hi - lo >= limit:                                    # too wide: halve the strides
        strides = [s // 2 if s > 0 else -((-s) // 2) for s in strides]
        lo, hi = _extent(0, zip(strides, counts))
    base = -lo + draw(st.integers(0, limit - 1 - (hi - lo)))
    return base, strides


@st.composite
def write_layout(draw, n0, n1, r, area_start):
    """Injective output strides (random axis order, small gaps, either direction) inside one area."""
    counts = {"s_n0": n0, "s_n1": n1, "s_r": r}
    order = draw(st.permutations(list(counts)))
    gaps = [draw(st.integers(0, 1)) for _ in order]
    strides, step = {}, 1
    for name, gap in zip(order, gaps):
        strides[name] = step + gap
        step = (step + gap) * counts[name]
    _, hi = _extent(0, [(strides[k], counts[k]) for k in counts])
    if hi >= AREA:                                                # no gaps: at most 3*3*2 = 18 vectors
        strides, step = {}, 1
        for name in order:
            strides[name] = step
            step *= counts[name]
        _, hi = _extent(0, [(strides[k], counts[k]) for k in counts])
    if draw(st.booleans()):                                       # walk downwards from the top
        strides = {k: -v for k, v in strides.items()}
        base = area_start + hi
    else:
        base = area_start
    return dict(base=base, **strides)


@st.composite
def mfu_op_list(draw):
    ops = draw(st.lists(st.sampled_from(MFU_OPS), max_size=4))
    while ops:                                                    # keep the longest prefix that fits 2 MFUs
        try:
            mfu_assignment(ops, 2)
            break
        except Exception:
            ops = ops[:-1]
    return ops


@st.composite
def chain_spec(draw, j, n0_max=3):
    limit = INPUT + AREA * j                                      # inputs and earlier chains' areas
    area = INPUT + AREA * j
    n0, n1 = draw(st.integers(1, n0_max)), draw(st.integers(1, 3))
    with_mv = draw(st.booleans())
    if with_mv:
        reduce = "none"
        r = draw(st.integers(1, 2))
        k0, k1, c = (draw(st.integers(1, 2)) for _ in range(3))
        while r * k0 * k1 * c > TILES:
            c = 1
            k1 = 1
        base, (s_n0, s_n1, s_k0, s_k1) = draw(strides_within([n0, n1, k0, k1], limit - (c - 1)))
        rd = dict(base=base, s_n0=s_n0, s_n1=s_n1, s_k0=s_k0, s_k1=s_k1)
        mbase = draw(st.integers(0, TILES - r * k0 * k1 * c))
    else:
        reduce = draw(st.sampled_from(["none", "sum", "max"]))
        r = draw(st.integers(1, 2))
        k0, k1, c = (1, 1, 1) if reduce == "none" else (draw(st.integers(1, 3)) for _ in range(3))
        base, (s_n0, s_n1, s_k0, s_k1, s_r) = draw(strides_within([n0, n1, k0, k1, r], limit - (c - 1)))
        rd = dict(base=base, s_n0=s_n0, s_n1=s_n1, s_k0=s_k0, s_k1=s_k1, s_r=s_r)
        mbase = None
    ops = []
    for name in draw(mfu_op_list()):
        if name.startswith("vv_"):
            b, (a0, a1, ar) = draw(strides_within([n0, n1, r], limit))
            ops.append((name, dict(base=b, s_n0=a0, s_n1=a1, s_r=ar)))
        elif name.startswith("vs_"):
            ops.append((name, dict(sreg=draw(st.integers(0, SREGS - 1)))))
        else:
            ops.append(name)
    wr = draw(write_layout(n0, n1, r, area))
    lo = draw(st.integers(0, N - 1))
    hi = draw(st.integers(lo + 1, N))
    wr.update(lo=lo, hi=0 if hi == N and draw(st.booleans()) else hi)
    return dict(n0=n0, n1=n1, k0=k0, k1=k1, c=c, r=r, reduce=reduce, rd=rd, mbase=mbase, mfu_ops=ops, wr=wr)


def random_vectors(rng, count, specials=True):
    x = rng.standard_normal((count, N)) * np.exp2(rng.integers(-6, 6, (count, 1)))
    if specials:
        mask = rng.random(x.shape) < 0.003
        x[mask] = rng.choice([np.inf, -np.inf, np.nan, 0.0, 70000.0], mask.sum())
    return x.astype(np.float32)


@st.composite
def programs(draw, grouped=False, formats=None):
    """A random legal program (an npu.kernels.Kernel).

    Instructions are listed in the order the ops are generated (the reload comes after chain 0, whose c2l it
    waits on); ``grouped=True`` lists all loads first instead (see test_functional_mode_follows_tokens).
    ``formats`` = (weight, activation, MFU) fixes the formats (the RTL co-simulation uses one machine).
    """
    if formats is None:
        wfmt, afmt = draw(st.sampled_from(BLOCK_FORMATS)), draw(st.sampled_from(BLOCK_FORMATS))
        mfmt = draw(st.sampled_from(["fp16", "bf16", "fp32"]))
    else:
        wfmt, afmt, mfmt = formats
    cfg = sp.config("tiny", weight=wfmt, act=afmt, mfu_format=mfmt)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    nchains = draw(st.integers(1, 4))
    specs = [draw(chain_spec(j)) for j in range(nchains)]
    stores = [draw(st.booleans()) for _ in range(nchains - 1)] + [True]
    reload = nchains > 1 and draw(st.booleans())

    b = sp.Builder(cfg, auto_tokens=False, grouped=grouped)
    b.load_vectors(random_vectors(rng, INPUT), vaddr=0)
    b.load_weights(rng.standard_normal((TILES * N, N)).astype(np.float32) *
                   np.exp2(rng.integers(-4, 4, (TILES * N, 1))).astype(np.float32), maddr=0, signal={"l2c"})
    for s in range(SREGS):
        b.scalar(s, float(rng.standard_normal() * 2))
    for j, spec in enumerate(specs):
        wait = {"l2c"} if j == 0 or (reload and j == 1) else set()
        signal = ({"c2s"} if stores[j] else set()) | ({"c2l"} if reload and j == 0 else set())
        b.chain(**spec, wait=wait, signal=signal)
        if reload and j == 0:   # a second batch of inputs into the same area, once chain 0 is done with it
            b.load_vectors(random_vectors(rng, INPUT), vaddr=0, wait={"c2l"}, signal={"l2c"})
    for j in range(nchains):
        if stores[j]:
            b.store(INPUT + AREA * j, AREA, wait={"c2s"})
    kernel = b.build(0, (len(b.image) // cfg.mfu_bytes // N, N))
    return kernel
