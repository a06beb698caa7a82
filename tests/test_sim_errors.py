"""Illegal programs: each raises npu.sim.errors.SimulationError naming the instruction (and field).

Never a crash, a hang or another exception type: a fuzz test feeds random
words with valid opcodes and random fields through every mode.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npu import kernels as sp
from npu.isa.assembler import AssembledProgram
from npu.isa.encoding import encode, encode_program, make
from npu.isa.table import INSTRUCTIONS, WORD_BYTES
from npu.numerics.pack import tile_nbytes
from npu.sim import simulate
from npu.sim.errors import CycleBudgetExceeded, SimulationError

TINY = sp.config("tiny")
HALT = make("halt")


def words(*instrs) -> bytes:
    return encode_program(list(instrs))


def expect(program, *fragments, cfg=TINY, mode="full", dram=None, exc=SimulationError, **kw):
    """Run in ``mode``; the error's message must contain every fragment.  Returns the exception."""
    with pytest.raises(exc) as info:
        simulate(program, cfg, dram=dram, mode=mode, **kw)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return info.value


def chain(*, n0=1, n1=1, k0=1, k1=1, c=1, r=1, reduce=0, rd=None, mv=None, ops=(), wr=None, wait=(), signal=()):
    out = [make("chain", n0=n0, n1=n1, k0=k0, k1=k1, c=c, r=r, reduce=reduce, wait=wait),
           make("v_rd", **(rd or dict(base=0)))]
    if mv is not None:
        out.append(make("mv_mul", mbase=mv))
    out += [make(o, **f) for o, f in ops]
    out += [make("v_wr", **(wr or dict(base=100))), make("end_chain", signal=signal)]
    return out


# ----- words -------------------------------------------------------------------------------------
def test_illegal_opcode():
    prog = bytearray(words(make("nop"), make("nop"), make("nop"), HALT))
    prog[2 * WORD_BYTES] = 63                                  # opcode field of instruction 2
    expect(bytes(prog), "instruction 2", "unknown opcode 63")
    assert 63 not in {s.opcode for s in INSTRUCTIONS}


@pytest.mark.parametrize("mode", ["full", "timing", "functional"])
def test_reserved_bits_set(mode):
    word = encode(make("v_rd", base=5)) | (1 << 127)            # v_rd uses bits 0..109
    prog = words(make("nop")) + word.to_bytes(WORD_BYTES, "little") + words(HALT)
    expect(prog, "instruction 1", "v_rd", "reserved bits", mode=mode)


def test_dependency_bit_without_meaning():
    word = encode(make("v_store", vaddr=0, daddr=0)) | (1 << 7)     # wait_next: no queue on the store stream
    expect(word.to_bytes(WORD_BYTES, "little") + words(HALT), "instruction 0", "v_store", "wait_next")


def test_truncated_program():
    expect(words(make("nop"), HALT)[:-3], "not a multiple", "16-byte word")


def test_empty_program():
    expect(b"", "empty program")
    expect(AssembledProgram([], b""), "empty program")


# ----- addresses -------------------------------------------------------------------------------------
@pytest.mark.parametrize("instrs, index, fragments", [
    # vector memory: 4096 vectors on tiny
    (chain(n0=10, rd=dict(base=4090, s_n0=1), wr=dict(base=0, s_n0=1)), 1, ["v_rd", "field base", "4090..4099"]),
    (chain(n0=2, rd=dict(base=0, s_n0=-1), wr=dict(base=10, s_n0=1)), 1, ["v_rd", "field base", "-1..0"]),
    (chain(k0=3, k1=2, c=4, reduce=1, rd=dict(base=4000, s_k0=50, s_k1=4)), 1, ["v_rd", "field base", "4000..4107"]),
    (chain(n0=4, rd=dict(base=0, s_n0=1), wr=dict(base=4094, s_n0=1)), 2, ["v_wr", "field base", "4094..4097"]),
    (chain(n0=3, rd=dict(base=0, s_n0=1), ops=[("vv_add", dict(base=4095, s_n0=1))]), 2,
     ["vv_add", "field base", "4095..4097"]),
    ([make("v_load", vaddr=4095, daddr=0, row_len=2)], 0, ["v_load", "field vaddr", "4095..4096"]),
    ([make("v_store", vaddr=4000, daddr=0, rows=2, row_len=1, vstride=100)], 0, ["v_store", "field vaddr"]),
    # matrix register file: 256 tiles on tiny
    ([make("m_load", maddr=250, daddr=0, count=10)], 0, ["m_load", "field maddr", "250..259"]),
    (chain(r=2, mv=255), 2, ["mv_mul", "field mbase", "255..256"]),
    # DRAM: 16 MiB on tiny
    ([make("v_load", vaddr=0, daddr=(1 << 24) - 32, row_len=1)], 0, ["v_load", "field daddr", "beyond DRAM"]),
    ([make("m_load", maddr=0, daddr=(1 << 24) - 544, count=2)], 0, ["m_load", "field daddr", "beyond DRAM"]),
    # lanes
    (chain(wr=dict(base=0, lo=20, hi=10)), 2, ["v_wr", "lo=20", "hi=10"]),
    (chain(wr=dict(base=0, lo=0, hi=33)), 2, ["v_wr", "hi=33"]),
])
def test_out_of_range_addresses(instrs, index, fragments):
    expect(words(*instrs, HALT), f"instruction {index}", *fragments)


def test_mrf_exactly_full_is_legal():
    wr = dict(base=100, s_r=1)
    simulate(words(*chain(k0=4, c=8, r=8, mv=0, rd=dict(base=0, s_k0=8), wr=wr), HALT), TINY)   # tiles 0..255
    expect(words(*chain(k0=4, c=8, r=8, mv=1, rd=dict(base=0, s_k0=8), wr=wr), HALT), "instruction 2", "mv_mul",
           "field mbase", "1..256")


def test_scalar_register_out_of_range():
    cfg = TINY.replace(scalar_regs=4)
    expect(words(make("s_wr", sreg=5, value=0), HALT), "instruction 0", "field sreg", cfg=cfg)
    expect(words(*chain(ops=[("vs_mul", dict(sreg=4))]), HALT), "instruction 2", "vs_mul", "field sreg", cfg=cfg)


# ----- grammar -------------------------------------------------------------------------------------
def test_no_halt():
    expect(words(make("nop"), *chain()), "instruction 4", "must end with halt")      # the last instruction


def test_halt_not_last():
    expect(words(HALT, make("nop"), HALT), "instruction 0", "halt must be the last")


def test_open_chain():
    expect(words(make("nop"), *chain()[:-1], HALT), "instruction 1", "not closed by end_chain", "instruction 4 is halt")


def test_chain_grammar_errors():
    expect(words(make("v_rd", base=0), HALT), "instruction 0", "outside a chain")
    expect(words(make("chain"), make("v_wr", base=0), make("end_chain"), HALT), "instruction 1", "starts with v_rd")
    body = chain(ops=[("vv_add", dict(base=0)), ("vv_add", dict(base=0)), ("vv_add", dict(base=0))])
    expect(words(*body, HALT), "instruction 0", "needs MFU 3")
    expect(words(*chain(mv=0, reduce=1), HALT), "instruction 0", "reduce=sum")
    expect(words(*chain(k0=2), HALT), "instruction 0", "k0, k1, c must be 1")
    bad_token = chain()
    bad_token[-1] = make("end_chain", signal={"c2s"})
    bad_token[2] = make("v_wr", base=100)
    simulate(words(*bad_token, HALT), TINY)                     # legal: the signal is on end_chain


# ----- tokens -------------------------------------------------------------------------------------
def test_deadlock_names_the_blocked_instruction():
    t0 = time.perf_counter()
    expect(words(make("nop"), *chain(wait={"l2c"}), HALT), "deadlock", "instruction 1 (compute stream) waits for l2c")
    assert time.perf_counter() - t0 < 2


def test_deadlock_between_two_streams():
    prog = words(make("v_load", vaddr=0, daddr=0, wait={"c2l"}, signal={"l2c"}),
                 *chain(wait={"l2c"}, signal={"c2l"}), HALT)
    expect(prog, "deadlock", "instruction 0 (load stream) waits for c2l", "instruction 1 (compute stream) waits for l2c")


def test_token_used_up():
    """One l2c, two chains waiting on it: the second can never start."""
    prog = words(make("v_load", vaddr=0, daddr=0, signal={"l2c"}), *chain(wait={"l2c"}),
                 *chain(wait={"l2c"}, wr=dict(base=101)), make("v_store", vaddr=100, daddr=0, wait={"c2s"}), HALT)
    expect(prog, "deadlock", "instruction 5 (compute stream) waits for l2c", "instruction 9 (store stream) waits for c2s")


@pytest.mark.parametrize("mode", ["full", "timing"])
def test_deadlock_in_timing_modes(mode):
    expect(words(make("v_store", vaddr=0, daddr=0, wait={"c2s"}), HALT), "deadlock", "instruction 0", mode=mode)


# ----- runaway -------------------------------------------------------------------------------------
HUGE = dict(n0=4095, n1=4095, k0=4095, k1=4095, c=4095, r=4095)


@pytest.mark.parametrize("mode", ["full", "timing", "functional"])
@pytest.mark.parametrize("mv", [False, True])
def test_runaway_chain_stopped_by_cycle_budget(mode, mv):
    """Refused up front (the work is never started), in well under a second."""
    if mv:   # 4095 x 4095 iterations x 256 tiles: 4.3e9 tile products (the whole MRF)
        instrs = chain(n0=4095, n1=4095, k0=16, k1=16, mv=0, rd=dict(base=0, s_k0=16, s_k1=1))
    else:    # ~4.7e21 vector reads
        instrs = chain(**HUGE, reduce=1, rd=dict(base=0))
    prog = words(make("nop"), make("nop"), *instrs, HALT)
    t0 = time.perf_counter()
    err = expect(prog, "instruction 2", "cycle budget", mode=mode, exc=CycleBudgetExceeded, cycle_budget=1_000_000)
    assert err.index == 2
    assert time.perf_counter() - t0 < 1.0
    if not mv:                                                  # the default budget stops it too
        t0 = time.perf_counter()
        expect(prog, "instruction 2", mode=mode, exc=CycleBudgetExceeded)
        assert time.perf_counter() - t0 < 1.0


def test_cycle_budget_boundary():
    """A run of T cycles fits a budget of T; with T - 1 the simulator must refuse (the halt cycle counts).
    (Regression: the halt cycle used to be left out of the check.)"""
    prog = words(*chain(), HALT)
    total = simulate(prog, TINY).stats.total_cycles
    simulate(prog, TINY, cycle_budget=total)
    expect(prog, exc=CycleBudgetExceeded, cycle_budget=total - 5)
    expect(prog, exc=CycleBudgetExceeded, cycle_budget=total - 1)


def test_cycle_budget_consistent_across_modes():
    """A load overlapping a chain takes max(load, chain) cycles on the machine; a budget the full run fits
    must not stop the functional run of the same program.  (Regression: functional mode used to sum the ops'
    cycles.)"""
    prog = words(make("m_load", maddr=0, daddr=0, count=100),
                 *chain(n0=8, n1=8, k0=3, k1=3, c=2, mv=0, rd=dict(base=0, s_n0=20, s_n1=2, s_k0=20, s_k1=2),
                        wr=dict(base=1000, s_n0=8, s_n1=1)), HALT)
    budget = simulate(prog, TINY, mode="timing").stats.total_cycles
    simulate(prog, TINY, mode="full", cycle_budget=budget)
    simulate(prog, TINY, mode="functional", cycle_budget=budget)


# ----- data -------------------------------------------------------------------------------------
def corrupt_tile_program(scale_byte: int, tile: int = 1):
    cfg = TINY
    tb = tile_nbytes(cfg.weight_format, cfg.native_dim)
    rng = np.random.default_rng(0)
    b = sp.Builder(cfg)
    b.load_vectors(rng.standard_normal((1, 32)).astype(np.float32))
    b.load_weights(rng.standard_normal((32, 3 * 32)).astype(np.float32))
    k = b.build(0, (1, 32))
    m_load = next(i for i, ins in enumerate(k.instructions) if ins.mnemonic == "m_load")
    daddr = k.instructions[m_load].fields["daddr"]
    image = bytearray(k.dram)
    image[daddr + tile * tb + 7] = scale_byte              # scale of row 7 of tile 1
    return k.words, bytes(image), m_load, daddr + tile * tb


@pytest.mark.parametrize("mode", ["full", "functional"])
def test_corrupt_weight_tile_scale_byte(mode):
    prog, image, index, tile_addr = corrupt_tile_program(0x20)               # ms-fp9 scales are 5 bits
    err = expect(prog, "scale byte", f"{tile_addr:#x}", dram=image, mode=mode)
    assert f"instruction {index}" in str(err) and "m_load" in str(err), str(err)
    assert err.index == index


def test_nan_scale_code_is_a_legal_tile():
    """31 is ms-fp9's NaN scale: legal data, the row reads NaN."""
    prog, image, _, _ = corrupt_tile_program(31)
    simulate(prog, TINY, dram=image)
    simulate(prog, TINY, dram=image, mode="timing")                           # no data in timing mode


def test_dram_image_larger_than_dram():
    expect(words(HALT), "exceeds", dram=bytes((1 << 24) + 1))


def test_unknown_mode():
    expect(words(HALT), "unknown mode", mode="fast")


def test_error_index_attributes():
    """SimulationError.index names the instruction for per-instruction problems (errors.py docstring)."""
    prog = bytearray(words(make("nop"), make("nop"), HALT))
    prog[WORD_BYTES] = 63
    cases = {
        "illegal opcode": (bytes(prog), 1),
        "out of range": (words(make("nop"), *chain(rd=dict(base=5000)), HALT), 2),
        "deadlock": (words(*chain(wait={"l2c"}), HALT), 0),
    }
    got = {}
    for name, (p, index) in cases.items():
        with pytest.raises(SimulationError) as info:
            simulate(p, TINY)
        got[name] = (info.value.index, index)
    assert all(a == b for a, b in got.values()), got


def test_hazard_error_names_the_reading_instruction():
    """The hazard message's index and mnemonic must name the same instruction (the v_rd or vv_* that reads)."""
    for ops, reader in (([], "v_rd"), ([("vv_add", dict(base=8, s_n0=1))], "vv_add")):
        rd = dict(base=0, s_n0=1) if reader == "v_rd" else dict(base=50, s_n0=1)
        instrs = [make("nop")] + chain(n0=3, rd=rd, ops=ops, wr=dict(base=1 if reader == "v_rd" else 9, s_n0=1))
        for _run in range(2):       # a decoded program is kept for later runs: its hazard must not be
            with pytest.raises(SimulationError, match="hazard") as info:       # remembered as checked
                simulate(words(*instrs, HALT), TINY)
        err = info.value
        assert err.mnemonic == reader
        assert instrs[err.index].mnemonic == reader, (str(err), instrs[err.index].mnemonic)


# ----- fuzz -------------------------------------------------------------------------------------
SPECS = [s for s in INSTRUCTIONS if s.mnemonic != "halt"]


@st.composite
def random_word(draw):
    spec = draw(st.sampled_from(SPECS))
    bits = draw(st.integers(0, (1 << (spec.used_bits - 6)) - 1))
    if draw(st.integers(0, 9)) == 0:
        bits |= draw(st.integers(0, (1 << 122) - 1))             # sometimes reserved bits too
    return ((bits << 6) | spec.opcode) & ((1 << 128) - 1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(random_word(), max_size=8), st.booleans(), st.sampled_from(["full", "timing", "functional"]))
def test_fuzz_random_words_only_raise_simulation_error(ws, halt, mode):
    prog = b"".join(w.to_bytes(WORD_BYTES, "little") for w in ws) + (words(HALT) if halt else b"")
    try:
        simulate(prog, TINY, mode=mode, cycle_budget=20_000)
    except SimulationError:
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_structured_chains_only_raise_simulation_error(data):
    """Chains with random counts, strides, lanes and tokens: many legal, some out of range or hazardous."""
    d = data.draw
    small = st.integers(1, 6)
    addr = st.integers(0, 400)
    stride = st.integers(-3, 12)
    instrs = []
    for _ in range(d(st.integers(1, 3))):
        mv = d(st.booleans())
        reduce = 0 if mv else d(st.integers(0, 2))
        kk = dict(k0=d(small), k1=d(small), c=d(small)) if mv or reduce else {}
        lo = d(st.integers(0, 31))
        hi = d(st.integers(lo + 1, 32)) if d(st.integers(0, 9)) else d(st.integers(0, 40))
        instrs += chain(n0=d(small), n1=d(small), r=d(st.integers(1, 3)), reduce=reduce, **kk,
                        rd=dict(base=d(addr), s_n0=d(stride), s_n1=d(stride), s_k0=d(stride),
                                s_k1=d(stride), s_r=0 if mv else d(stride)),
                        mv=d(st.integers(0, 255)) if mv else None,
                        ops=d(st.lists(st.sampled_from([("vv_add", dict(base=d(addr), s_n0=1)),
                                                        ("vs_mul", dict(sreg=d(st.integers(0, 15)))),
                                                        ("v_relu", {}), ("v_sigm", {})]), max_size=3)),
                        wr=dict(base=1000 + d(addr), s_n0=d(stride), s_n1=d(stride), s_r=d(stride), lo=lo, hi=hi),
                        wait=d(st.sampled_from([(), ("l2c",), ("s2c",)])), signal=d(st.sampled_from([(), ("c2s",)])))
    if d(st.booleans()):
        instrs.insert(0, make("v_load", vaddr=d(addr), daddr=d(st.integers(0, 1 << 20)), row_len=d(small),
                              signal={"l2c"}))
    try:
        simulate(words(*instrs, HALT), TINY, mode=d(st.sampled_from(["full", "functional"])), cycle_budget=50_000)
    except SimulationError:
        pass


def test_result_readback_out_of_range_raises():
    """SimResult.dram / .vectors past the end of the memory must not silently return fewer bytes / vectors."""
    res = simulate(words(HALT), TINY)
    with pytest.raises(SimulationError):
        out = res.dram((1 << 24) - 10, 100)
        assert len(out) == 100, len(out)
    with pytest.raises(SimulationError):
        v = res.vectors(4090, 20)
        assert v.shape[0] == 20, v.shape


def test_huge_chain_is_refused_quickly_without_building_its_addresses():
    """A legal chain of 4095^2 iterations x 4095 rows writes more vectors than the simulator will analyse:
    it is refused by the cycle budget (or the analysis limit) at once, not after exhausting memory."""
    import time

    from npu.isa.encoding import encode_program, make
    from npu.sim import CycleBudgetExceeded, simulate

    prog = [make("chain", n0=4095, n1=4095, r=4095), make("v_rd", base=0),
            make("v_wr", base=1, s_n0=0, s_n1=0, s_r=0), make("end_chain"), make("halt")]
    t0 = time.perf_counter()
    with pytest.raises(SimulationError):
        simulate(encode_program(prog), TINY.replace(vrf_depth=8), cycle_budget=None)
    with pytest.raises(CycleBudgetExceeded):
        simulate(encode_program(prog), TINY.replace(vrf_depth=8))
    assert time.perf_counter() - t0 < 10


# ----- memory -------------------------------------------------------------------------------------
def test_a_long_chain_runs_in_bounded_memory():
    """Regression: a 5-instruction program under the cycle budget (one chain reading 960 million vectors) kept
    every batch's address arrays, asked for gigabytes and died with a MemoryError traceback.  Batches of
    iterations are now built one at a time once they pass Machine.BATCH_CACHE_BYTES, and the working set is
    known, and checked against the memory budget, before the run."""
    import tracemalloc

    from npu.sim import footprint
    from npu.sim.machine import Machine, batch_address_bytes

    s10 = sp.config("bw-s10")

    def prog(n1, k0):
        return words(make("chain", n0=32, n1=n1, k0=k0, c=30, reduce="sum"), make("v_rd", base=0),
                     make("v_wr", base=100, s_n0=n1, s_n1=1), make("end_chain"), HALT)

    big = simulate(prog(1000, 1000), s10, mode="timing")
    chain = big.program.ops[0]
    assert batch_address_bytes(chain, chain.iterations) > 100 * Machine.BATCH_CACHE_BYTES
    assert footprint(big.program, s10).total() < 256 << 20
    small = prog(100, 100)                                            # 9.6 million reads, addresses not kept
    simulate(small, s10)                                              # (compile the kernels)
    tracemalloc.start()
    try:
        res = simulate(small, s10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "batches" not in res.program.ops[0].derived
    assert peak <= footprint(res.program, s10).total() < 256 << 20
