"""Properties of the simulator over random small legal programs (hypothesis).

The generator builds programs on the ``tiny`` machine with random block and
MFU formats: loads at the start (random activations with some infinities and
NaNs, random weight tiles, scalar registers), then 1-4 chains with random loop
counts, strides, reductions, MFU op lists that fit 2 MFUs and lane masks, and
stores at the end, all ordered by tokens.  Chain ``j`` writes only its own
area of the vector memory and reads only the inputs and earlier chains'
areas, so no chain has an intra-chain hazard; an optional reload of the input
area between chains exercises ``c2l``.

* ``full`` equals an independent loop-by-loop reference interpreter written
  here from docs/isa.md and docs/numerics.md (numerics building blocks only);
* ``full`` and ``functional`` leave identical DRAM and vector memory;
* ``timing`` gives the same cycle counts, schedule and statistics as ``full``;
* batching a chain into small pieces (Machine.CHUNK_ELEMENTS) changes nothing;
* a chain raises SimulationError exactly when an independent, loop-by-loop
  check finds a later iteration reading what an earlier one wrote, or two
  writes to one vector.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npu import kernels as sp
from npu_toolkit.testing.strategies import N, programs, strides_within
from npu.isa.encoding import encode_program
from npu.numerics import mfu
from npu.numerics.dot import matvec
from npu.numerics.pack import tile_nbytes, unpack_block_tensor, unpack_floats
from npu.numerics.quantize import BlockTensor, quantize
from npu.sim import simulate
from npu.sim.errors import SimulationError
from npu.sim.machine import Machine

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------------------------
# an independent reference interpreter (program order; valid for programs listed in token order)
# ----------------------------------------------------------------------------------------------
def reference_run(kernel):
    """Execute ``kernel`` instruction by instruction from the ISA text; returns (vector memory, DRAM)."""
    cfg = kernel.config
    n, fm = cfg.native_dim, cfg.mfu_format
    dtype = mfu.mfu_format(fm).dtype
    vb = cfg.vector_bytes
    tb = tile_nbytes(cfg.weight_format, n)
    dram = bytearray(kernel.dram)
    vmem = np.zeros((cfg.vrf_depth, n), dtype)
    tiles: dict[int, BlockTensor] = {}
    sregs = np.zeros(16, np.float32)
    instrs = kernel.instructions
    i = 0
    while i < len(instrs):
        ins = instrs[i]
        f, name = ins.fields, ins.mnemonic
        if name == "v_load":
            for row in range(f["rows"]):
                a = f["daddr"] + row * f["dstride"]
                vals = unpack_floats(bytes(dram[a:a + f["row_len"] * vb]), fm).reshape(-1, n)
                vmem[f["vaddr"] + row * f["vstride"]: f["vaddr"] + row * f["vstride"] + f["row_len"]] = vals
        elif name == "v_store":
            for row in range(f["rows"]):
                v = f["vaddr"] + row * f["vstride"]
                a = f["daddr"] + row * f["dstride"]
                dram[a:a + f["row_len"] * vb] = vmem[v:v + f["row_len"]].tobytes()
        elif name == "m_load":
            for t in range(f["count"]):
                a = f["daddr"] + t * tb
                tiles[f["maddr"] + t] = unpack_block_tensor(bytes(dram[a:a + tb]), cfg.weight_format, n, n, n)
        elif name == "s_wr":
            sregs[f["sreg"]] = np.array(f["value"], np.uint32).view(np.float32)
        elif name == "chain":
            j = i
            while instrs[j].mnemonic != "end_chain":
                j += 1
            _reference_chain(cfg, f, instrs[i + 1:j], vmem, tiles, sregs)
            i = j
        i += 1
    return vmem, bytes(dram)


def _reference_chain(cfg, head, body, vmem, tiles, sregs):
    n, fm = cfg.native_dim, cfg.mfu_format
    before = vmem.copy()                                          # a chain's reads see memory as before it
    n0, n1, k0, k1, c, r = (head[x] for x in ("n0", "n1", "k0", "k1", "c", "r"))
    reduce = ("none", "sum", "max")[head["reduce"]]
    rd = body[0].fields
    mv = body[1].fields["mbase"] if len(body) > 1 and body[1].mnemonic == "mv_mul" else None
    ops = [b for b in body[1:-1] if b.mnemonic != "mv_mul"]
    wr = body[-1].fields
    kk = k0 * k1 * c
    its = list(itertools.product(range(n0), range(n1)))

    def rd_addrs(i0, i1, rr):
        return [rd["base"] + i0 * rd["s_n0"] + i1 * rd["s_n1"] + j0 * rd["s_k0"] + j1 * rd["s_k1"] + cc
                + rr * rd["s_r"] for j0, j1, cc in itertools.product(range(k0), range(k1), range(c))]

    if mv is not None:
        # weight matrix (r*N, K*N) from tiles mbase + rr*K + j, assembled block-wise
        ts = [[tiles.get(mv + rr * kk + j) for j in range(kk)] for rr in range(r)]
        zero = quantize(np.zeros((n, n), np.float32), cfg.weight_format, n)
        ts = [[t if t is not None else zero for t in row] for row in ts]
        w = BlockTensor(zero.fmt, zero.block, np.block([[t.scales for t in row] for row in ts]),
                        np.block([[t.codes for t in row] for row in ts]))
        x = np.stack([before[rd_addrs(i0, i1, 0)].reshape(-1) for i0, i1 in its]).astype(np.float32)
        acc = matvec(w, quantize(x, cfg.activation_format, n), n)           # (iterations, r*N)
        y = mfu.accumulator_to_format(acc, fm).reshape(len(its), r, n)
    else:
        y = np.empty((len(its), r, n), before.dtype)
        for p, (i0, i1) in enumerate(its):
            for rr in range(r):
                vecs = before[rd_addrs(i0, i1, rr)]
                if reduce == "none":
                    y[p, rr] = vecs[0]
                elif reduce == "sum":
                    acc = np.zeros(n, np.float32)
                    for v in vecs:
                        acc = (acc + v.astype(np.float32)).astype(np.float32)
                    y[p, rr] = mfu.to_format(acc, fm)
                else:
                    m = vecs[0]
                    for v in vecs[1:]:
                        m = mfu.maximum(m, v, fm)
                    y[p, rr] = m
    for op in ops:
        name, f = op.mnemonic, op.fields
        if name.startswith("vv_"):
            b = np.stack([[before[f["base"] + i0 * f["s_n0"] + i1 * f["s_n1"] + rr * f["s_r"]] for rr in range(r)]
                          for i0, i1 in its])
        elif name.startswith("vs_"):
            b = mfu.scalar(sregs[f["sreg"]], fm)
        fn = {"vv_add": lambda a: mfu.add(a, b, fm), "vs_add": lambda a: mfu.add(a, b, fm),
              "vv_a_sub_b": lambda a: mfu.sub(a, b, fm), "vv_b_sub_a": lambda a: mfu.sub(b, a, fm),
              "vv_mul": lambda a: mfu.mul(a, b, fm), "vs_mul": lambda a: mfu.mul(a, b, fm),
              "vv_max": lambda a: mfu.maximum(a, b, fm), "vs_max": lambda a: mfu.maximum(a, b, fm),
              "vv_min": lambda a: mfu.minimum(a, b, fm), "vs_min": lambda a: mfu.minimum(a, b, fm),
              "v_relu": lambda a: mfu.relu(a, fm), "v_sigm": lambda a: mfu.sigmoid(a, fm),
              "v_tanh": lambda a: mfu.tanh(a, fm)}[name]
        y = fn(y)
    y = mfu.to_format(y, fm)                                      # every NaN written is the canonical one
    lo, hi = wr["lo"], wr["hi"] or n
    for p, (i0, i1) in enumerate(its):
        for rr in range(r):
            vmem[wr["base"] + i0 * wr["s_n0"] + i1 * wr["s_n1"] + rr * wr["s_r"], lo:hi] = y[p, rr, lo:hi]


def outcome(kernel, mode, **kw):
    try:
        return kernel.run(mode, **kw), None
    except SimulationError as exc:
        return None, str(exc)


def memories(res, kernel):
    dram = np.frombuffer(res.dram(0, len(kernel.dram)), np.uint8)
    vmem = res.vectors(0, kernel.config.vrf_depth)
    return dram, vmem.view(np.uint32 if vmem.dtype.itemsize == 4 else np.uint16)


def _bits(a):
    return a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint16)


@SETTINGS
@given(programs())
def test_full_matches_reference_interpreter(kernel):
    res = kernel.run("full")
    vmem, dram = reference_run(kernel)
    got = memories(res, kernel)
    bad = np.argwhere(got[1] != _bits(vmem))
    assert bad.size == 0, f"{len(bad)} elements differ, first at vector/lane {tuple(bad[0])}"
    assert got[0].tobytes() == dram


@SETTINGS
@given(programs())
def test_full_and_functional_agree(kernel):
    full, err_full = outcome(kernel, "full")
    func, err_func = outcome(kernel, "functional")
    assert err_full is None and err_func is None, (err_full, err_func)
    d_full, v_full = memories(full, kernel)
    d_func, v_func = memories(func, kernel)
    assert np.array_equal(v_full, v_func)
    assert np.array_equal(d_full, d_func)
    # the last store really moved the last chain's area to DRAM
    st_ = [i for i in kernel.instructions if i.mnemonic == "v_store"][-1].fields
    vb = kernel.config.vector_bytes
    assert full.dram(st_["daddr"], st_["row_len"] * vb) == full.vectors(st_["vaddr"], st_["row_len"]).tobytes()


@SETTINGS
@given(programs())
def test_timing_mode_matches_full(kernel):
    full = kernel.run("full")
    timing = kernel.run("timing")
    key = lambda res: [(e.op.index, e.start, e.end, e.stall, e.stall_cause, e.cost)   # noqa: E731
                       for e in res.schedule.entries]
    assert key(full) == key(timing)
    a, b = full.stats, timing.stats
    assert (a.total_cycles, a.mvu_busy, a.mfu_busy, a.load_busy, a.store_busy, a.macs, a.dram_read_bytes,
            a.dram_write_bytes, a.stalls) == \
           (b.total_cycles, b.mvu_busy, b.mfu_busy, b.load_busy, b.store_busy, b.macs, b.dram_read_bytes,
            b.dram_write_bytes, b.stalls)
    assert timing.machine is None
    # halt is the last op and ends the run; no op ends after it
    assert full.schedule.entries[-1].end == a.total_cycles == max(e.end for e in full.schedule.entries)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_batching_does_not_change_results(kernel):
    ref = kernel.run("functional")
    saved = Machine.CHUNK_ELEMENTS
    Machine.CHUNK_ELEMENTS = 1                # one iteration per batch
    try:
        small = kernel.run("functional")
    finally:
        Machine.CHUNK_ELEMENTS = saved
    assert np.array_equal(memories(ref, kernel)[1], memories(small, kernel)[1])


# ----------------------------------------------------------------------------------------------
# hazards
# ----------------------------------------------------------------------------------------------
def hazard_expected(spec) -> bool:
    """Loop-by-loop: does an iteration read a vector an earlier iteration wrote, or is a vector written twice?"""
    n0, n1, k0, k1, c, r = (spec[x] for x in ("n0", "n1", "k0", "k1", "c", "r"))
    rd, wr = spec["rd"], spec["wr"]
    writer = {}
    its = list(itertools.product(range(n0), range(n1)))
    for it, (i0, i1) in enumerate(its):
        for rr in range(r):
            a = wr["base"] + i0 * wr["s_n0"] + i1 * wr["s_n1"] + rr * wr["s_r"]
            if a in writer:
                return True
            writer[a] = it
    for it, (i0, i1) in enumerate(its):
        reads = []
        rows = [0] if spec["mbase"] is not None else range(r)
        for rr in rows:
            for j0, j1, cc in itertools.product(range(k0), range(k1), range(c)):
                reads.append(rd["base"] + i0 * rd["s_n0"] + i1 * rd["s_n1"] + j0 * rd["s_k0"] + j1 * rd["s_k1"]
                             + cc + rr * rd.get("s_r", 0))
        for name, f in spec["mfu_ops"]:
            if name.startswith("vv_"):
                for rr in range(r):
                    reads.append(f["base"] + i0 * f["s_n0"] + i1 * f["s_n1"] + rr * f["s_r"])
        if any(writer.get(a, it) < it for a in reads):
            return True
    return False


@st.composite
def overlapping_chain(draw):
    """One chain whose reads, operands and writes all fall in the same 24 vectors."""
    n0, n1 = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    with_mv = draw(st.booleans())
    r = draw(st.integers(1, 2))
    if with_mv:
        k0, k1, c, reduce = draw(st.integers(1, 2)), 1, draw(st.integers(1, 2)), "none"
    else:
        reduce = draw(st.sampled_from(["none", "sum", "max"]))
        k0, k1, c = (1, 1, 1) if reduce == "none" else (draw(st.integers(1, 2)), draw(st.integers(1, 2)), 1)
    counts = [n0, n1, k0, k1] if with_mv else [n0, n1, k0, k1, r]
    base, strides = draw(strides_within(counts, 24 - (c - 1), max_stride=3))
    names = ["s_n0", "s_n1", "s_k0", "s_k1"] + ([] if with_mv else ["s_r"])
    rd = dict(base=base, **dict(zip(names, strides)))
    wbase, (w0, w1, wr_) = draw(strides_within([n0, n1, r], 24, max_stride=3))
    ops = []
    if draw(st.booleans()):
        ob, (o0, o1, orr) = draw(strides_within([n0, n1, r], 24, max_stride=3))
        ops.append(("vv_add", dict(base=ob, s_n0=o0, s_n1=o1, s_r=orr)))
    return dict(n0=n0, n1=n1, k0=k0, k1=k1, c=c, r=r, reduce=reduce, rd=rd, mbase=0 if with_mv else None,
                mfu_ops=ops, wr=dict(base=wbase, s_n0=w0, s_n1=w1, s_r=wr_))


@settings(max_examples=150, deadline=None)
@given(overlapping_chain())
def test_hazard_detected_exactly_when_present(spec):
    cfg = sp.config("tiny")
    b = sp.Builder(cfg)
    b.chain(**spec)
    instrs, _ = b.instructions()
    expected = hazard_expected(spec)
    for mode in ("full", "functional"):
        try:
            simulate(encode_program(instrs), cfg, mode=mode)
            raised = None
        except SimulationError as exc:
            raised = str(exc)
        assert (raised is not None) == expected, (mode, raised, spec)
        if raised:
            assert ("hazard" in raised or "write-after-write" in raised) and "instruction" in raised


def test_hazardous_chain_raises():
    """Iteration i reads vector i and writes vector i + 1: iteration 1 reads what iteration 0 wrote."""
    cfg = sp.config("tiny")
    b = sp.Builder(cfg)
    b.chain(n0=4, rd=dict(base=0, s_n0=1), wr=dict(base=1, s_n0=1))
    with pytest.raises(SimulationError, match="read-after-write hazard"):
        b.build(0, (1, N)).run()
    b = sp.Builder(cfg)                       # in place (same iteration) is fine
    b.chain(n0=4, mfu_ops=["v_relu"], rd=dict(base=0, s_n0=1), wr=dict(base=0, s_n0=1))
    b.build(0, (1, N)).run()
    b = sp.Builder(cfg)                       # write-after-write: two iterations write vector 7
    b.chain(n0=2, rd=dict(base=0, s_n0=1), wr=dict(base=7, s_n0=0))
    with pytest.raises(SimulationError, match="write-after-write"):
        b.build(0, (1, N)).run()
    b = sp.Builder(cfg)                       # through a vv operand
    b.chain(n0=3, mfu_ops=[("vv_add", dict(base=8, s_n0=1))], rd=dict(base=0, s_n0=1), wr=dict(base=9, s_n0=1))
    with pytest.raises(SimulationError, match="hazard"):
        b.build(0, (1, N)).run()


def test_functional_mode_follows_tokens():
    """Instruction order need not be a valid execution order: the decoder hands each instruction to its
    stream and only tokens order the streams (docs/isa.md).  Here the second load is listed before the chain
    whose ``c2l`` it waits on, so it must not overwrite vector 0 until that chain has read it.

    Both modes must honour the tokens: vector 10 = first input, vector 11 = second.  (Regression: functional
    mode used to apply ops in instruction order, so the second load overwrote the input first.)
    """
    cfg = sp.config("tiny")
    first, second = np.full((1, N), 1.0, np.float32), np.full((1, N), 2.0, np.float32)
    b = sp.Builder(cfg, auto_tokens=False, grouped=True)          # all loads first in the program
    b.load_vectors(first, vaddr=0, signal={"l2c"})
    b.chain(rd=dict(base=0), wr=dict(base=10), wait={"l2c"}, signal={"c2l"})
    b.load_vectors(second, vaddr=0, wait={"c2l"}, signal={"l2c"})
    b.chain(rd=dict(base=0), wr=dict(base=11), wait={"l2c"}, signal={"c2s"})
    out = b.store(10, 2, wait={"c2s"})
    k = b.build(out, (2, N))
    assert [i.mnemonic for i in k.instructions][:2] == ["v_load", "v_load"]
    want = np.concatenate([first, second]).astype(np.float16)
    assert np.array_equal(k.output(k.run("full")), want)
    assert np.array_equal(k.output(k.run("functional")), want)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(grouped=True))
def test_full_and_functional_agree_loads_listed_first(kernel):
    """The property above with every load listed first (legal: tokens order the streams)."""
    full = kernel.run("full")
    func = kernel.run("functional")
    assert np.array_equal(memories(full, kernel)[1], memories(func, kernel)[1])
