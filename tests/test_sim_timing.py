"""Timing model against hand calculations from docs/architecture.md ("Timing model").

Every expected cycle count is written out here from the documented formulas
and the configuration's fields (cycles_per_tile, tiles, dram_latency_cycles,
dram_bytes_per_cycle, ...), and cross-checked against the number worked by
hand for the preset, so a change to either the model or a preset shows up.

    DMA:            2 + dram_latency_cycles + ceil(bytes / dram_bytes_per_cycle)
    mv_mul chain:   fill + max(ceil(iterations*r*k / tiles) * cycles_per_tile, iterations*r)
    vector chain:   fill + iterations*r*k
    fill:           2 + 2 + 3*(MFUs used) + 1  [+ cycles_per_tile + 1 + ceil(log2 N) + 2 with mv_mul]
    s_wr, nop:      1;   halt: 1 after every stream has drained
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from npu import kernels as sp
from npu.isa.assembler import AssembledProgram
from npu.isa.encoding import encode_program, make
from npu.numerics.pack import tile_nbytes
from npu.sim import simulate
from npu.sim.program import build_program

TINY = sp.config("tiny")
A10 = sp.config("bw-a10")


# ----- the documented formulas, spelled out ------------------------------------------------
def dma_cycles(cfg, nbytes):
    return 2 + cfg.dram_latency_cycles + math.ceil(nbytes / cfg.dram_bytes_per_cycle)


def dma_transfer(cfg, nbytes):
    return math.ceil(nbytes / cfg.dram_bytes_per_cycle)


def fill(cfg, mfus_used, mv):
    f = 2 + 2 + 3 * mfus_used + 1
    if mv:
        f += cfg.cycles_per_tile + 1 + math.ceil(math.log2(cfg.native_dim)) + 2
    return f


def mv_chain_cycles(cfg, iterations, r, k, mfus_used):
    tile_ops = iterations * r * k
    return fill(cfg, mfus_used, True) + max(math.ceil(tile_ops / cfg.tiles) * cfg.cycles_per_tile, iterations * r)


def vec_chain_cycles(cfg, iterations, r, k, mfus_used):
    return fill(cfg, mfus_used, False) + iterations * r * k


def run(instrs, cfg=TINY, mode="full", **kw):
    return simulate(encode_program(list(instrs) + [make("halt")]), cfg, mode=mode, **kw)


def entries(res):
    """{instruction index: (start, end)} of the schedule."""
    return {e.op.index: (e.start, e.end) for e in res.schedule.entries}


def mv_chain(n0=1, n1=1, k0=1, k1=1, c=1, r=1, ops=(), wait=(), signal=(), out=1000, rd=None):
    rd = rd or dict(base=0)
    return ([make("chain", n0=n0, n1=n1, k0=k0, k1=k1, c=c, r=r, wait=wait), make("v_rd", **rd),
             make("mv_mul", mbase=0)] + [make(o, **f) for o, f in ops] +
            [make("v_wr", base=out, s_n0=n1 * r, s_n1=r, s_r=1), make("end_chain", signal=signal)])


# ----- the preset numbers the formulas give (hand-worked) ------------------------------------
def test_preset_derived_quantities():
    assert (TINY.cycles_per_tile, TINY.tiles, TINY.native_dim) == (4, 2, 32)          # 32 / 8 lanes
    assert TINY.dram_latency_cycles == 10                                              # 100 ns at 100 MHz
    assert TINY.dram_bytes_per_cycle == pytest.approx(16.0)                            # 1.6 GB/s / 100 MHz
    assert TINY.vector_bytes == 64 and tile_nbytes("ms-fp9", 32) == 32 + 32 * 32 // 2  # 544
    assert A10.dram_latency_cycles == 75 and A10.cycles_per_tile == 4                  # 250 ns at 300 MHz
    assert A10.dram_bytes_per_cycle == pytest.approx(34.1e9 / 300e6)


def test_single_tile_mv_mul():
    res = run(mv_chain())
    # fill = 2 + 2 + 0 MFUs + 1 + (4 + 1 + 5 + 2) = 17; steady = max(ceil(1/2) * 4, 1) = 4
    expected = mv_chain_cycles(TINY, iterations=1, r=1, k=1, mfus_used=0)
    assert expected == 21
    assert entries(res)[0] == (0, expected)
    assert res.stats.total_cycles == expected + 1                # halt
    assert res.stats.mvu_busy == TINY.cycles_per_tile
    assert res.stats.macs == TINY.native_dim ** 2


def test_single_tile_mv_mul_bw_a10():
    res = run(mv_chain(ops=[("v_relu", {})]), cfg=A10)
    expected = mv_chain_cycles(A10, 1, 1, 1, mfus_used=1)
    # 2 + 2 + 3 + 1 + (128/32 + 1 + 7 + 2) + max(ceil(1/4) * 4, 1)
    assert expected == 8 + 14 + 4
    assert res.stats.total_cycles == expected + 1


def test_odd_tile_count_rounds_up_over_tile_engines():
    res = run(mv_chain(n0=3, rd=dict(base=0, s_n0=1)))
    expected = fill(TINY, 0, True) + math.ceil(3 / TINY.tiles) * TINY.cycles_per_tile
    assert expected == 17 + 8
    assert res.stats.total_cycles == expected + 1


def test_chain_with_many_iterations_mvu_bound():
    """8x8 output pixels, 3x3 taps x 2 channel tiles, bias + ReLU on one MFU (the demo's conv)."""
    ops = [("vv_add", dict(base=500, s_r=1)), ("v_relu", {})]
    res = run(mv_chain(n0=8, n1=8, k0=3, k1=3, c=2, ops=ops, rd=dict(base=0, s_n0=20, s_n1=2, s_k0=20, s_k1=2)))
    expected = mv_chain_cycles(TINY, iterations=64, r=1, k=18, mfus_used=1)
    assert expected == (2 + 2 + 3 + 1 + 12) + (64 * 18 // 2) * 4 == 2324
    assert entries(res)[0] == (0, expected)
    assert res.stats.mvu_busy == 64 * 18 // 2 * 4
    assert res.stats.mfu_busy == 64
    assert res.stats.macs == 64 * 18 * 32 * 32


def test_chain_with_many_iterations_vector_bound():
    """One cycle per tile (lanes = N) and 4 engines: the MFU/write port (one vector a cycle) is the limit."""
    cfg = TINY.replace(lanes=32, tiles=4)
    ops = [("vv_add", dict(base=3000, s_r=1)), ("vv_add", dict(base=3002, s_r=1)), ("v_relu", {})]   # 2 MFUs
    res = run(mv_chain(n0=16, n1=16, r=2, ops=ops, rd=dict(base=0, s_n0=16, s_n1=1)), cfg=cfg)
    tile_ops = 256 * 2
    assert math.ceil(tile_ops / 4) * 1 < 256 * 2
    expected = mv_chain_cycles(cfg, iterations=256, r=2, k=1, mfus_used=2)
    assert expected == (2 + 2 + 6 + 1 + (1 + 1 + 5 + 2)) + 512 == 532
    assert res.stats.total_cycles == expected + 1
    assert res.stats.mvu_busy == 128


def test_pure_vector_chain():
    instrs = [make("s_wr", sreg=0, value=sp.f32_bits(1 / 9)),
              make("chain", n0=4, n1=4, k0=3, k1=3, reduce=1), make("v_rd", base=0, s_n0=12, s_n1=2, s_k0=6, s_k1=1),
              make("vs_mul", sreg=0), make("v_wr", base=1000, s_n0=4, s_n1=1), make("end_chain")]
    res = run(instrs)
    expected = vec_chain_cycles(TINY, iterations=16, r=1, k=9, mfus_used=1)
    assert expected == 8 + 144
    assert entries(res)[1] == (1, 1 + expected)                    # after the 1-cycle s_wr
    assert res.stats.total_cycles == 1 + expected + 1
    assert res.stats.macs == 0 and res.stats.mvu_busy == 0


def test_copy_chain_and_scalar_ops():
    instrs = [make("nop"), make("s_wr", sreg=1, value=0), make("chain", n0=10), make("v_rd", base=0, s_n0=1),
              make("v_wr", base=100, s_n0=1), make("end_chain")]
    res = run(instrs)
    assert entries(res) == {0: (0, 1), 1: (1, 2), 2: (2, 2 + 5 + 10), 6: (17, 18)}
    assert vec_chain_cycles(TINY, 10, 1, 1, 0) == 15


@pytest.mark.parametrize("cfg", [TINY, A10], ids=["tiny", "bw-a10"])
def test_dma_of_known_size(cfg):
    vb, tb = cfg.vector_bytes, tile_nbytes(cfg.weight_format, cfg.native_dim)
    instrs = [make("v_load", vaddr=0, daddr=0, rows=5, row_len=20, dstride=20 * vb, vstride=20),
              make("m_load", maddr=0, daddr=1 << 20, count=3),
              make("v_store", vaddr=0, daddr=1 << 21, rows=1, row_len=1)]
    res = run(instrs, cfg=cfg)
    t_vload = dma_cycles(cfg, 100 * vb)
    t_mload = dma_cycles(cfg, 3 * tb)
    t_store = dma_cycles(cfg, vb)
    if cfg is TINY:
        assert (t_vload, t_mload, t_store) == (2 + 10 + 400, 2 + 10 + 102, 2 + 10 + 4)
    else:                                   # 25600 B, 3 x 8320 B, 256 B at 113.67 B/cycle
        assert (t_vload, t_mload, t_store) == (2 + 75 + 226, 2 + 75 + 220, 2 + 75 + 3)
    e = entries(res)
    assert e[0] == (0, t_vload)
    assert e[1] == (t_vload, t_vload + t_mload)                    # same stream: one after the other
    # the store runs on its own stream, but its transfer waits for the DRAM channel held by the v_load
    assert e[2] == (0, t_vload + dma_transfer(cfg, vb))
    assert res.stats.stalls == {"dram": t_vload - (2 + cfg.dram_latency_cycles)}
    assert res.stats.total_cycles == t_vload + t_mload + 1
    assert res.stats.dram_read_bytes == 100 * vb + 3 * tb and res.stats.dram_write_bytes == vb
    assert res.stats.load_busy == dma_transfer(cfg, 100 * vb) + dma_transfer(cfg, 3 * tb)
    assert res.stats.store_busy == dma_transfer(cfg, vb)


def big_load():
    """100 tiles: 54,400 bytes on tiny."""
    return make("m_load", maddr=0, daddr=0, count=100)


def test_decoupled_load_overlaps_compute():
    t_load = dma_cycles(TINY, 100 * 544)
    t_chain = mv_chain_cycles(TINY, 64, 1, 18, 0)
    conv = mv_chain(n0=8, n1=8, k0=3, k1=3, c=2, rd=dict(base=0, s_n0=20, s_n1=2, s_k0=20, s_k1=2))
    res = run([big_load()] + conv)                 # the chain waits on nothing: both streams start at 0
    e = entries(res)
    assert e[0] == (0, t_load) and e[1] == (0, t_chain)
    assert res.stats.total_cycles == max(t_load, t_chain) + 1 < t_load + t_chain + 1
    assert res.stats.stalls == {}


def test_token_wait_serialises_and_stall_is_attributed():
    t_load = dma_cycles(TINY, 100 * 544)
    t_chain = mv_chain_cycles(TINY, 64, 1, 18, 0)
    t_store = dma_cycles(TINY, 64 * 64)
    load = make("m_load", maddr=0, daddr=0, count=100, signal={"l2c"})
    conv = mv_chain(n0=8, n1=8, k0=3, k1=3, c=2, wait={"l2c"}, signal={"c2s"},
                    rd=dict(base=0, s_n0=20, s_n1=2, s_k0=20, s_k1=2))
    store = make("v_store", vaddr=1000, daddr=1 << 20, row_len=64, wait={"c2s"})
    res = run([load] + conv + [store])
    e = entries(res)
    assert e[1] == (t_load, t_load + t_chain)
    assert e[1 + len(conv)] == (t_load + t_chain, t_load + t_chain + t_store)
    assert res.stats.total_cycles == t_load + t_chain + t_store + 1
    assert res.stats.stalls == {"wait l2c": t_load, "wait c2s": t_load + t_chain}
    stall_of = {s.op.index: (s.stall, s.stall_cause) for s in res.schedule.entries}
    assert stall_of[1] == (t_load, "wait l2c")


def test_c2l_and_s2c_round_trip():
    """compute -> load (c2l) and store -> compute (s2c): double-buffer style hand-offs."""
    t_v = dma_cycles(TINY, 64)                                        # 2 + 10 + 4
    t_c = mv_chain_cycles(TINY, 1, 1, 1, 0)                           # 21
    chain1 = mv_chain(wait={"l2c"}, signal={"c2l", "c2s"})
    chain2 = mv_chain(wait={"l2c", "s2c"}, out=1001)
    instrs = ([make("v_load", vaddr=0, daddr=0, signal={"l2c"}),
               make("v_load", vaddr=0, daddr=64, wait={"c2l"}, signal={"l2c"})] + chain1 + chain2 +
              [make("v_store", vaddr=1000, daddr=4096, wait={"c2s"}, signal={"s2c"})])
    res = run(instrs)
    e = entries(res)
    c1, c2, st = 2, 2 + len(chain1), 2 + len(chain1) + len(chain2)
    assert e[0] == (0, t_v)
    assert e[c1] == (t_v, t_v + t_c)
    t1 = t_v + t_c                                                    # c2l and c2s arrive
    assert e[1] == (t1, t1 + t_v)                                     # the second load waited for c2l
    # the store also starts at t1; both transfers want the DRAM channel at t1 + 12: the load has it first
    assert e[st] == (t1, t1 + t_v + dma_transfer(TINY, 64))
    assert e[c2] == (e[st][1], e[st][1] + t_c)                        # needs the second l2c and s2c
    assert res.stats.total_cycles == e[c2][1] + 1
    causes = {s.op.index: s.stall_cause for s in res.schedule.entries if s.stall}
    assert causes[c1] == "wait l2c" and causes[1] == "wait c2l"
    assert causes[c2] == "wait s2c"                                   # the token that arrived last


def test_store_stall_split_between_token_wait_and_dram():
    """A store that first waits t1 cycles for c2s and then 4 cycles for the DRAM channel: stall cycles are
    attributed to the token waited on and to the DRAM channel separately, t1 (wait c2s) + 4 (dram).
    (Regression: all t1 + 4 cycles used to be reported as "dram".)
    """
    t_v = dma_cycles(TINY, 64)
    t_c = mv_chain_cycles(TINY, 1, 1, 1, 0)
    chain1 = mv_chain(wait={"l2c"}, signal={"c2l", "c2s"})
    instrs = ([make("v_load", vaddr=0, daddr=0, signal={"l2c"}),
               make("v_load", vaddr=0, daddr=64, wait={"c2l"})] + chain1 +
              [make("v_store", vaddr=1000, daddr=4096, wait={"c2s"})])
    res = run(instrs)
    t1 = t_v + t_c
    # the chain waits t_v for l2c; load 1 waits t1 - t_v for c2l; the store waits t1 for c2s, then
    # dma_transfer(64) = 4 for the channel the second load holds
    assert sum(res.stats.stalls.values()) == t_v + (t1 - t_v) + t1 + dma_transfer(TINY, 64)
    assert res.stats.stalls == {"wait l2c": t_v, "wait c2l": t1 - t_v, "wait c2s": t1,
                                "dram": dma_transfer(TINY, 64)}


def test_dram_tie_goes_to_program_order():
    """Two transfers that want the DRAM channel at the same cycle: the one earlier in the program goes first."""
    t_store = dma_cycles(TINY, 64 * 64)
    res = run([make("v_store", vaddr=0, daddr=1 << 20, row_len=64), make("v_load", vaddr=100, daddr=0, row_len=10)])
    e = entries(res)
    assert e[0] == (0, t_store)
    assert e[1] == (0, t_store + dma_transfer(TINY, 10 * 64))
    assert res.stats.stalls == {"dram": dma_transfer(TINY, 64 * 64)}


def test_timing_mode_same_schedule_as_full():
    k = sp.conv2d(TINY, np.random.default_rng(0), h=6, w=6, cin_v=2, cout_v=2, stride=2)
    full, timing = k.run("full"), k.run("timing")
    assert [(e.op.index, e.start, e.end, e.stall, e.stall_cause) for e in full.schedule.entries] == \
           [(e.op.index, e.start, e.end, e.stall, e.stall_cause) for e in timing.schedule.entries]
    assert full.stats.total_cycles == timing.stats.total_cycles


# ----- statistics ------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [TINY, A10], ids=["tiny", "bw-a10"])
def test_stats_consistency_with_regions(cfg):
    k = sp.conv2d(cfg, np.random.default_rng(1), h=6, w=5, cin_v=1, cout_v=2 if cfg is TINY else 1, stride=1)
    res = k.run(with_regions=True)
    st = res.stats
    oh, ow, cout = k.out_shape
    tile_ops = oh * ow * (cout // cfg.native_dim) * 9
    assert st.macs == tile_ops * cfg.native_dim ** 2
    assert st.peak_macs == st.total_cycles * cfg.tiles * cfg.native_dim * cfg.lanes
    assert st.mac_utilisation == pytest.approx(st.macs / (st.total_cycles * cfg.macs))
    assert 0 < st.mac_utilisation <= 1
    assert st.mvu_busy == math.ceil(tile_ops / cfg.tiles) * cfg.cycles_per_tile
    assert st.utilisation(st.mvu_busy) == pytest.approx(st.mvu_busy / st.total_cycles)
    assert st.instructions == len(k.instructions)
    assert st.dram_read_bytes == sum(_load_bytes(k, cfg))
    assert st.dram_write_bytes == k.out_bytes
    # regions: load / compute / store, each within the totals, together covering them
    names = [r.name for r in st.regions]
    assert names == ["load", "compute", "store"]
    assert sum(r.macs for r in st.regions) == st.macs
    assert sum(r.dram_bytes for r in st.regions) == st.dram_read_bytes + st.dram_write_bytes
    assert sum(r.mvu_busy for r in st.regions) <= st.mvu_busy
    assert sum(r.stall_cycles for r in st.regions) <= sum(st.stalls.values())
    for r in st.regions:
        assert 0 < r.cycles <= st.total_cycles
        assert 0 <= r.start < r.end <= st.total_cycles
    comp = st.regions[1]
    assert comp.macs == st.macs and comp.mvu_busy == st.mvu_busy
    assert comp.cycles == mv_chain_cycles(cfg, oh * ow, cout // cfg.native_dim, 9, 1)
    text = st.table()
    assert "total cycles" in text and "compute" in text and f"{st.total_cycles:,}" in text


def _load_bytes(k, cfg):
    tb = tile_nbytes(cfg.weight_format, cfg.native_dim)
    for ins in k.instructions:
        if ins.mnemonic == "v_load":
            yield ins.fields["rows"] * ins.fields["row_len"] * cfg.vector_bytes
        elif ins.mnemonic == "m_load":
            yield ins.fields["count"] * tb


def test_regions_via_sim_program_and_partial_cover():
    """Regions given through a SimProgram / AssembledProgram; a region may cover part of the program."""
    k = sp.gemv(TINY, np.random.default_rng(2), batch=3, rows=2, c=2)
    chain_idx = next(i for i, ins in enumerate(k.instructions) if ins.mnemonic == "chain")
    regions = [("weights", 0, chain_idx - 1), ("layer", chain_idx, chain_idx + 4)]
    prog = build_program(k.instructions, TINY, regions)
    a = simulate(prog, TINY, dram=k.dram)
    b = simulate(AssembledProgram(k.instructions, k.words, regions=regions), TINY, dram=k.dram)
    for res in (a, b):
        st = res.stats
        assert [r.name for r in st.regions] == ["weights", "layer"]
        layer = st.regions[1]
        assert layer.ops == 1 and layer.macs == st.macs == 3 * 2 * 2 * 32 * 32
        assert layer.cycles == mv_chain_cycles(TINY, 3, 2, 2, 0)
        assert sum(r.cycles for r in st.regions) <= st.total_cycles
        assert sum(r.dram_bytes for r in st.regions) == st.dram_read_bytes   # the store is in no region
    assert [(e.start, e.end) for e in a.schedule.entries] == [(e.start, e.end) for e in b.schedule.entries]


def _first_region_reference(schedule, regions):
    """Per region (name, first, last): (ops, macs, dram bytes) of the ops whose index it is the first listed to hold."""
    out = [[0, 0, 0] for _ in regions]
    for e in schedule.entries:
        for i, (_, first, last) in enumerate(regions):
            if first <= e.op.index <= last:
                out[i][0] += 1
                out[i][1] += e.cost.macs
                out[i][2] += e.cost.dram_bytes
                break
    return [tuple(r) for r in out]


@pytest.mark.parametrize("layout", ["apart", "out of order", "overlapping", "gaps"])
def test_region_stats_count_each_op_in_the_first_region_holding_it(layout):
    """Regions apart (looked up by bisection) or not (scanned in order): each op counts in the first region
    listed that holds its index, as a plain scan finds it."""
    k = sp.conv2d(TINY, np.random.default_rng(3), h=5, w=4, cin_v=1, cout_v=2, stride=1)
    n = len(k.instructions)
    starts = sorted(e.op.index for e in simulate(k.words, TINY, mode="timing").schedule.entries)
    cuts = [0] + [starts[len(starts) * q // 5] for q in (1, 2, 3, 4)] + [n]       # regions starting at ops
    regions = [(f"r{i}", a, b - 1) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    if layout == "out of order":
        regions = regions[::-1]
    elif layout == "overlapping":
        regions = [("wide", 0, n // 2)] + regions
    elif layout == "gaps":
        regions = regions[::2]
    res = simulate(build_program(k.instructions, TINY, regions), TINY, dram=k.dram)
    got = [(r.ops, r.macs, r.dram_bytes) for r in res.stats.regions]
    assert got == _first_region_reference(res.schedule, regions)
    assert sum(r[0] for r in got) > 0


# ----- trace -------------------------------------------------------------------------------------
def test_trace_json(tmp_path):
    k = sp.conv2d(TINY, np.random.default_rng(3), h=4, w=4, cin_v=1, cout_v=1, stride=1)
    res = k.run(with_regions=True)
    path = tmp_path / "trace.json"
    res.write_trace(path)
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    threads = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert sorted(threads.values()) == sorted(["load DMA", "MVU", "MFU", "store DMA", "control"])
    assert len(set(threads)) == len(threads)                       # one thread per unit
    tid = {name: t for t, name in threads.items()}
    xs = [e for e in events if e["ph"] == "X"]
    us = 1.0 / TINY.clock_mhz
    expected = 0
    for s in res.schedule.entries:
        op = s.op
        mine = [e for e in xs if e["args"]["instruction"] == op.index]
        name = getattr(op, "mnemonic", "chain")
        if name == "chain":
            want_tids = {tid["MVU"], tid["MFU"]} if op.mbase is not None else {tid["MFU"]}
        elif name == "v_store":
            want_tids = {tid["store DMA"]}
        elif name in ("v_load", "m_load"):
            want_tids = {tid["load DMA"]}
        else:
            want_tids = {tid["control"]}
        assert sorted(e["tid"] for e in mine) == sorted(want_tids), (name, mine)    # one event per unit used
        expected += len(want_tids)
        for e in mine:
            assert e["ts"] == pytest.approx(s.start * us)
            assert e["dur"] == pytest.approx(max(s.end - s.start, 1) * us)
            assert e["args"]["start_cycle"] == s.start and e["args"]["cycles"] == s.end - s.start
            assert e["pid"] == 1
    assert len(xs) == expected
    assert doc["otherData"]["total_cycles"] == res.stats.total_cycles
    assert max(e["ts"] + e["dur"] for e in xs) == pytest.approx(res.stats.total_cycles * us)
    assert {e["args"].get("region") for e in xs} == {"load", "compute", "store", None}


def test_timing_mode_trace_and_no_memory(tmp_path):
    k = sp.gemv(TINY, np.random.default_rng(4))
    res = k.run("timing")
    res.write_trace(tmp_path / "t.json")
    json.loads((tmp_path / "t.json").read_text())
    from npu.sim.errors import SimulationError

    with pytest.raises(SimulationError):
        res.dram(0, 4)
    fres = k.run("functional")
    assert fres.stats is None and fres.schedule is None
    with pytest.raises(SimulationError):
        fres.write_trace(tmp_path / "f.json")


# ----- several write ports: a banked vector memory (NPUConfig.write_ports) ---------------------
def bank_counts(addresses, banks):
    """The most addresses that fall in one bank (address mod banks), counted one by one."""
    counts = [0] * banks
    for a in addresses:
        counts[a % banks] += 1
    return max(counts)


def affine(base, loops):
    """Every address base + sum(i_d * stride_d), loops in order (innermost last)."""
    out = [base]
    for count, stride in loops:
        out = [a + i * stride for a in out for i in range(count)]
    return out


def test_bank_cycles_counts_the_busiest_bank():
    from npu.sim.timing import bank_cycles

    rng = np.random.default_rng(7)
    for _ in range(500):
        banks = int(rng.choice([1, 2, 4, 8, 16]))
        loops = tuple((int(rng.integers(0, 9)), int(rng.integers(-40, 41))) for _ in range(rng.integers(1, 5)))
        base = int(rng.integers(0, 5000))
        assert bank_cycles(base, loops, banks) == bank_counts(affine(base, loops), banks), (base, loops, banks)


WIDE = TINY.replace(lanes=32, tiles=4)          # one cycle per tile, four engines: the write path is the limit


@pytest.mark.parametrize("ports", [2, 4, 8])
def test_consecutive_writes_go_one_per_bank(ports):
    """256 pixels x 2 rows written at consecutive addresses: ceil(512 / ports) write cycles, the MVU
    (128 cycles) permitting; a bias read at the same address every iteration is held, not re-read."""
    cfg = WIDE.replace(write_ports=ports)
    ops = [("vv_add", dict(base=3000, s_r=1)), ("v_relu", {})]
    res = run(mv_chain(n0=16, n1=16, r=2, ops=ops, rd=dict(base=0, s_n0=16, s_n1=1)), cfg=cfg)
    writes = bank_counts(affine(1000, [(16, 32), (16, 2), (2, 1)]), ports)
    assert writes == math.ceil(512 / ports)
    mvu = math.ceil(512 / 4) * 1
    assert res.stats.total_cycles == fill(cfg, 1, True) + max(mvu, writes) + 1


@pytest.mark.parametrize("ports", [2, 8])
def test_write_ports_change_time_never_values(ports):
    """A 1x1 convolution with data (write-bound on one port): the same output bits on one port and on
    several, and fewer cycles."""
    k = sp.conv2d(WIDE, np.random.default_rng(3), h=9, w=8, cin_v=1, cout_v=2, ksize=1, stride=1, pad=0)
    one, wide = k.run(), k.run(config=WIDE.replace(write_ports=ports))
    assert np.any(k.output(one) != 0)
    assert np.array_equal(k.output(one).view(np.uint16), k.output(wide).view(np.uint16))
    assert wide.stats.total_cycles < one.stats.total_cycles


def test_writes_that_share_a_bank_serialise():
    """Every output at a multiple of 4 falls in one of 4 banks: no faster than one port."""
    cfg = WIDE.replace(write_ports=4)
    instrs = [make("chain", n0=1, n1=64, r=1), make("v_rd", base=0, s_n1=1), make("mv_mul", mbase=0),
              make("v_wr", base=1000, s_n1=4), make("end_chain")]
    res = run(instrs, cfg=cfg)
    assert res.stats.total_cycles == fill(cfg, 0, True) + max(math.ceil(64 / 4), 64) + 1


def test_a_moving_operand_in_one_bank_serialises():
    """The writes spread over the banks, but a vv_add operand whose every read lands in bank 0 sets the pace."""
    cfg = WIDE.replace(write_ports=4)
    ops = [("vv_add", dict(base=2000, s_n1=8))]
    res = run(mv_chain(n0=1, n1=64, ops=ops, rd=dict(base=0, s_n1=1)), cfg=cfg)
    assert res.stats.total_cycles == fill(cfg, 1, True) + 64 + 1


def test_a_vector_chain_reads_through_the_banks():
    """A sum over 9 reads per output without mv_mul: the reads spread over 4 banks take ceil(9*16/4) cycles."""
    cfg = TINY.replace(write_ports=4)
    instrs = [make("chain", n0=4, n1=4, k0=3, k1=3, reduce=1), make("v_rd", base=0, s_n0=12, s_n1=2, s_k0=6, s_k1=1),
              make("v_wr", base=1000, s_n0=4, s_n1=1), make("end_chain")]
    res = run(instrs, cfg=cfg)
    reads = bank_counts(affine(0, [(4, 12), (4, 2), (1, 0), (3, 6), (3, 1), (1, 1)]), 4)
    assert reads >= math.ceil(144 / 4)
    assert res.stats.total_cycles == fill(cfg, 0, False) + max(reads, math.ceil(16 / 4)) + 1


@pytest.mark.parametrize("ports", [2, 4, 8])
def test_a_reduction_over_fewer_rows_than_ports_reads_in_order(ports):
    """A global sum over 12 vectors for each of 2 rows: each row accumulates in order on its pipeline, so
    12 read cycles however many banks the reads spread over (one port: 24)."""
    cfg = TINY.replace(write_ports=ports)
    instrs = [make("chain", n0=1, n1=2, k0=1, k1=12, reduce=1), make("v_rd", base=0, s_n1=12, s_k1=1),
              make("v_wr", base=1000, s_n1=1), make("end_chain")]
    res = run(instrs, cfg=cfg)
    spread = bank_counts(affine(0, [(1, 0), (2, 12), (1, 0), (1, 0), (12, 1), (1, 1)]), ports)
    assert spread == math.ceil(24 / ports)               # the banks alone would allow that (6 on 4 ports)
    assert res.stats.total_cycles == fill(cfg, 0, False) + 12 + 1
    one = run(instrs, cfg=TINY)
    assert one.stats.total_cycles == fill(TINY, 0, False) + 24 + 1
