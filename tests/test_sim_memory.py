"""The simulator's host memory is bounded before it is spent (npu/sim/memory.py).

Every size the functional model allocates follows from the instruction
fields, so a run's working set is computed before it starts; a program that
would need more than ``simulate(memory_budget=...)`` is refused with a
SimulationError naming the instruction, and MemoryError never escapes.  The
estimate must bound what a run really allocates (numpy reports its buffers to
tracemalloc), and the bounded forms of the machine's work (DMA on row views,
tiles decoded a chunk at a time, chain batches built on the fly, the MRF's
decoded sets compacted) must give the same results as before.
"""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npu.config import PRESETS
from npu.isa.encoding import encode_program, make
from npu.numerics.formats import get_format
from npu.numerics.pack import tile_nbytes
from npu.sim import DEFAULT_MEMORY_BUDGET, SimulationError, clear_program_cache, footprint, simulate
from npu.sim import machine as M

TINY = PRESETS["tiny"]
S10 = PRESETS["bw-s10"]
HALT = make("halt")


def words(*instrs) -> bytes:
    return encode_program(list(instrs) + [HALT])


def refused(program, cfg, *fragments, **kw) -> SimulationError:
    """The run is refused at once, allocating (almost) nothing."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(SimulationError) as info:
            simulate(program, cfg, **kw)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2
    assert peak < 16 << 20, peak
    for frag in fragments:
        assert frag in str(info.value), (frag, str(info.value))
    return info.value


# ----- refused before anything is allocated ------------------------------------------------------------
def test_one_huge_transfer_is_refused_naming_it():
    """Regression: a v_load of 4095 rows x 4095 vectors on bw-s10 asked for 4 GiB of DRAM plus 34 GiB of indices
    and died with MemoryError."""
    prog = words(make("nop"), make("v_load", vaddr=0, daddr=0, rows=4095, row_len=4095, dstride=1 << 20))
    err = refused(prog, S10, "instruction 1 v_load", "memory budget of 2.0 GiB", "memory_budget=")
    assert err.index == 1 and err.mnemonic == "v_load"


def test_a_store_at_the_top_of_a_large_dram_is_refused():
    """The DRAM is held up to the highest byte a transfer reaches: 4 GiB on bw-s10 passes the default budget."""
    prog = words(make("v_store", vaddr=0, daddr=(1 << 32) - 256, rows=1, row_len=1))
    refused(prog, S10, "instruction 0 v_store", "DRAM up to byte 4,294,967,296")
    res = simulate(prog, S10, memory_budget=8 << 30, mode="timing")           # timing mode keeps no memory
    assert res.machine is None


def test_a_machine_whose_memories_pass_the_budget_is_refused():
    big = S10.replace(vrf_depth=1 << 20, native_dim=4096, lanes=64, mfu_format="fp32")   # a 16 GiB vector memory
    refused(words(make("nop")), big, "the machine's memories (16.1 GiB)", "memory budget")
    refused(words(make("nop")), TINY, "DRAM image (15.0 MiB)", memory_budget=1 << 20, dram=bytes(15 << 20))


def test_the_budget_is_an_argument_and_none_lifts_it():
    prog = words(make("v_load", vaddr=0, daddr=0, rows=64, row_len=64))
    need = footprint(simulate(prog, TINY, mode="timing").program, TINY).total()
    simulate(prog, TINY, memory_budget=need)
    refused(prog, TINY, "instruction 0 v_load", memory_budget=need - 1)
    simulate(prog, TINY, memory_budget=None)
    assert DEFAULT_MEMORY_BUDGET == 2 << 30


def test_an_op_the_cycle_budget_stops_does_not_count():
    """A runaway chain is stopped by the cycle budget (it would never run), not refused for memory."""
    from npu.sim import CycleBudgetExceeded

    prog = words(make("chain", n0=4095, n1=4095, k0=4095, k1=4095, c=4095, r=4095, reduce="sum"),
                 make("v_rd", base=0), make("v_wr", base=100), make("end_chain"))
    with pytest.raises(CycleBudgetExceeded):
        simulate(prog, TINY)
    refused(prog, TINY, "instruction 0 chain", "memory budget", cycle_budget=None)


def test_memory_error_never_escapes(monkeypatch):
    def no_memory(self, f):
        raise MemoryError
    monkeypatch.setattr(M.Machine, "v_load", no_memory)
    with pytest.raises(SimulationError, match="instruction 1 v_load: the host ran out of memory"):
        simulate(words(make("nop"), make("v_load", vaddr=0, daddr=0)), TINY)


# ----- bounded forms of the work give the same results -------------------------------------------------
def _conv_program(cfg, rng):
    """A convolution-like chain with MFU ops, its weights and inputs, and a store."""
    tb = tile_nbytes(cfg.weight_format, cfg.native_dim)
    per_row = cfg.native_dim // get_format(cfg.weight_format).block_for(cfg.native_dim)
    count = 18
    image = rng.integers(0, 256, count * tb + 64 * cfg.vector_bytes, dtype=np.uint8)
    for t in range(count):                                   # legal scale bytes
        image[t * tb: t * tb + cfg.native_dim * per_row] = rng.integers(10, 20, cfg.native_dim * per_row)
    vecs = rng.standard_normal((64, cfg.native_dim)).astype(np.float16).view(np.uint8).reshape(-1)
    image[count * tb:] = vecs
    prog = words(make("m_load", maddr=0, daddr=0, count=count),
                 make("v_load", vaddr=0, daddr=count * tb, rows=1, row_len=64, signal={"l2c"}),
                 make("chain", n0=6, n1=6, k0=3, k1=3, r=2, wait={"l2c"}),
                 make("v_rd", base=0, s_n0=8, s_n1=1, s_k0=8, s_k1=1), make("mv_mul", mbase=0),
                 make("v_relu"), make("v_wr", base=100, s_n0=12, s_n1=2, s_r=1), make("end_chain", signal={"c2s"}),
                 make("v_store", vaddr=100, daddr=1 << 20, rows=1, row_len=72, wait={"c2s"}))
    return prog, image.tobytes()


def _run(prog, cfg, image):
    clear_program_cache()
    M._TILE_CACHE.clear()
    M._LAST_AT.clear()
    M._tile_cache_size = 0
    return simulate(prog, cfg, dram=image).dram(1 << 20, 72 * cfg.vector_bytes)


@pytest.mark.parametrize("wfmt", ["ms-fp8", "ms-fp9", "mxfp6_e2m3", "mxint8", "bfp24"])
def test_tiles_decoded_a_chunk_at_a_time_are_the_same(monkeypatch, wfmt):
    """Odd element widths unpack through bit planes (tens of bytes per element): tiles are decoded in chunks."""
    cfg = TINY.replace(weight_format=wfmt)
    prog, image = _conv_program(cfg, np.random.default_rng(1))
    whole = _run(prog, cfg, image)
    monkeypatch.setattr(M, "DECODE_CHUNK_ELEMENTS", 2 * cfg.native_dim ** 2)      # two tiles at a time
    assert _run(prog, cfg, image) == whole


def test_chain_batches_built_on_the_fly_are_the_same(monkeypatch):
    """A chain whose address arrays pass BATCH_CACHE_BYTES builds them each run instead of keeping them."""
    prog, image = _conv_program(TINY, np.random.default_rng(2))
    kept = _run(prog, TINY, image)
    monkeypatch.setattr(M.Machine, "BATCH_CACHE_BYTES", 0)
    monkeypatch.setattr(M.Machine, "CHUNK_ELEMENTS", 3000)                   # several batches
    clear_program_cache()
    res = None
    for _ in range(2):
        res = simulate(prog, TINY, dram=image)
        assert res.dram(1 << 20, 72 * TINY.vector_bytes) == kept
    chain = next(op for op in res.program.ops if hasattr(op, "derived"))
    assert "batches" not in chain.derived and chain.derived.get("hazards_checked")


def test_the_mrf_keeps_only_the_tiles_its_slots_use(monkeypatch):
    """Loads that each leave one tile of the previous set in use used to keep every whole set decoded; the sets
    are cut down to the tiles in use once they pass twice the decoded MRF, with the same results."""
    cfg = TINY.replace(mrf_tiles=8)
    rng = np.random.default_rng(3)
    tb = tile_nbytes(cfg.weight_format, cfg.native_dim)
    image = rng.integers(0, 256, 64 * tb + 8 * cfg.vector_bytes, dtype=np.uint8)
    for t in range(64):
        image[t * tb: t * tb + cfg.native_dim] = rng.integers(10, 20, cfg.native_dim)
    loads = [make("m_load", maddr=i, daddr=8 * i * tb, count=8 - i) for i in range(8)]
    prog = words(*loads, make("v_load", vaddr=0, daddr=64 * tb, rows=1, row_len=8, signal={"l2c"}),
                 make("chain", k0=8, r=1, wait={"l2c"}), make("v_rd", base=0, s_k0=1), make("mv_mul", mbase=0),
                 make("v_wr", base=50), make("end_chain", signal={"c2s"}),
                 make("v_store", vaddr=50, daddr=1 << 20, rows=1, row_len=1, wait={"c2s"}))
    image = image.tobytes()
    compacted = simulate(prog, cfg, dram=image)
    held = sum(s.nbytes for s in compacted.machine._mrf_sets)
    assert held <= compacted.machine._mrf_hold
    monkeypatch.setattr(M, "decoded_tile_nbytes", lambda config: 1 << 40)          # never compact
    clear_program_cache()
    whole = simulate(prog, cfg, dram=image, memory_budget=None)
    assert sum(s.nbytes for s in whole.machine._mrf_sets) > held
    assert compacted.dram(1 << 20, cfg.vector_bytes) == whole.dram(1 << 20, cfg.vector_bytes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_transfers_on_row_views_match_a_plain_reference(data):
    """v_load / v_store move rows through strided views (no per-byte index arrays); overlapping rows: the later
    row wins, as on the machine."""
    d = data.draw
    cfg = TINY
    vb = cfg.vector_bytes
    rows, row_len = d(st.integers(1, 6)), d(st.integers(1, 4))
    dstride = d(st.sampled_from([0, 1, vb, row_len * vb, row_len * vb + 3, 2 * row_len * vb, vb // 2]))
    vstride = d(st.sampled_from([0, 1, row_len, row_len + 2]))
    daddr, vaddr = d(st.integers(0, 5000)), d(st.integers(0, 30))
    rng = np.random.default_rng(d(st.integers(0, 1000)))
    image = rng.integers(0, 256, 1 << 14, dtype=np.uint8)
    load = dict(vaddr=vaddr, daddr=daddr, rows=rows, row_len=row_len, dstride=dstride, vstride=vstride)
    store = dict(load, daddr=daddr + 7000)
    res = simulate(words(make("v_load", **load, signal={"l2c"}), make("nop", wait={"l2c"}, signal={"c2s"}),
                         make("v_store", **store, wait={"c2s"})), cfg, dram=image.tobytes())
    vmem = np.zeros((cfg.vrf_depth, vb), np.uint8)
    for i in range(rows):
        for j in range(row_len):
            src = daddr + i * dstride + j * vb
            vmem[vaddr + i * vstride + j] = image[src: src + vb]
    want = image.copy()
    for i in range(rows):
        for j in range(row_len):
            dst = daddr + 7000 + i * dstride + j * vb
            want[dst: dst + vb] = vmem[vaddr + i * vstride + j]
    assert res.machine.vmem.view(np.uint8).reshape(cfg.vrf_depth, vb)[:64].tobytes() == vmem[:64].tobytes()
    assert res.dram(0, want.size) == want.tobytes()


# ----- the estimate bounds what a run allocates ------------------------------------------------------
def _measured(prog, cfg, image):
    """(bytes numpy allocated at the peak of a run, the footprint's total) with warm kernels and empty caches.

    Two warm-up runs: the first compiles the kernels, the second builds what
    the process keeps once (Numba's type dispatch, format tables) after the
    caches below are emptied, so the measured run holds only its own memory.
    """
    for _ in range(2):
        simulate(prog, cfg, dram=image, memory_budget=None)
        clear_program_cache()
    clear_program_cache()
    M._TILE_CACHE.clear()
    M._LAST_AT.clear()
    M._tile_cache_size = 0
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        res = simulate(prog, cfg, dram=image, memory_budget=None)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, footprint(res.program, cfg).total(len(image))


FORMATS = ["ms-fp8", "ms-fp9", "mxfp6_e2m3", "mxint8", "msfp16", "mxfp4_e2m1"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_footprint_bounds_the_memory_a_run_allocates(data):
    d = data.draw
    n = d(st.sampled_from([32, 64, 128]))
    cfg = TINY.replace(native_dim=n, weight_format=d(st.sampled_from(FORMATS)),
                       activation_format=d(st.sampled_from(FORMATS)), mfu_format=d(st.sampled_from(["fp16", "fp32"])))
    tb = tile_nbytes(cfg.weight_format, n)
    per_row = n // get_format(cfg.weight_format).block_for(n)
    count = d(st.integers(1, 64))
    rng = np.random.default_rng(d(st.integers(0, 99)))
    image = rng.integers(0, 256, count * tb + (1 << 16), dtype=np.uint8)
    for t in range(count):
        image[t * tb: t * tb + n * per_row] = rng.integers(10, 20, n * per_row)
    k0, c = d(st.integers(1, 4)), d(st.integers(1, 4))
    r = max(1, min(d(st.integers(1, 4)), count // (k0 * c)))
    mv = k0 * c * r <= count
    n0, n1 = d(st.integers(1, 20)), d(st.integers(1, 20))
    head = dict(n0=n0, n1=n1, k0=k0, c=c, r=r, wait={"l2c"})
    chain = [make("chain", **head, reduce="none" if mv else "sum"),
             make("v_rd", base=0, s_n0=1, s_n1=1, s_k0=c, s_r=0 if mv else 1)]
    chain += [make("mv_mul", mbase=0)] if mv else []
    chain += [make("vv_add", base=0, s_n0=1), make("v_relu"), make("v_wr", base=2048, s_n0=n1 * r, s_n1=r, s_r=1),
              make("end_chain", signal={"c2s"})]
    rows = d(st.integers(1, 32))
    prog = words(make("m_load", maddr=0, daddr=0, count=count),
                 make("v_load", vaddr=0, daddr=count * tb, rows=rows, row_len=8, dstride=d(st.integers(0, 4096)),
                      vstride=8, signal={"l2c"}),
                 *chain, make("v_store", vaddr=2048, daddr=1 << 20, rows=1, row_len=n0 * n1 * r, wait={"c2s"}))
    peak, estimate = _measured(prog, cfg, image.tobytes())
    assert peak <= estimate, (peak, estimate)
