"""cocotb testbench: the compute stream (chains over the register files) against the simulator.

Each program comes from the simulator tests' kernel builders.  The register
files start as the simulator's do once the program's loads have run (vector
memory from the simulator, matrix register file from the DRAM bytes the
m_loads copy); the RTL then runs every compute instruction and its whole
vector memory must equal the simulator's bit for bit.
"""
import sys
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sim_programs as sp  # noqa: E402

from npu.isa.encoding import decode_program  # noqa: E402
from npu.numerics.pack import tile_nbytes  # noqa: E402
from npu.sim import simulate  # noqa: E402
from npu.sim.machine import Machine  # noqa: E402


def kernels():
    cfg = sp.config("tiny", weight="ms-fp9", act="ms-fp9", mfu_format="fp16")
    rng = np.random.default_rng(11)
    yield "gemv", sp.gemv(cfg, rng, batch=3, rows=2, k0=2, c=2)
    yield "conv3x3", sp.conv2d(cfg, rng, h=4, w=5, cin_v=2, cout_v=2, ksize=3)
    yield "maxpool", sp.pool(cfg, rng, h=6, w=6, c_v=2, ksize=3, stride=2, pad=1)
    yield "avgpool", sp.global_avg_pool(cfg, rng, h=3, w=4, c_v=2)
    yield "mfu_ops", sp.elementwise(cfg, rng, ["vv_mul", "vv_add", "v_relu", "vs_mul", "vv_b_sub_a"])
    yield "mfu_max", sp.elementwise(cfg, rng, ["vs_max", "v_relu", "vv_a_sub_b"])
    yield "lane_concat", sp.lane_concat(cfg, rng, count=3, lo=5, hi=21)
    yield "mlp", sp.mlp(cfg, rng, batch=2, d_in=2, d_hidden=2, d_out=1)   # uses v_tanh: refused for now

#: Kernels using operations the RTL does not implement yet (the sigmoid/tanh tables): it must flag them.
REFUSED = {"mlp"}


def state_after_loads(kernel):
    """(vector memory, {tile: packed bytes}) once the program's v_load / m_load ops have run."""
    cfg = kernel.config
    machine = Machine(cfg, kernel.dram)
    tiles = {}
    tb = tile_nbytes(cfg.weight_format, cfg.native_dim)
    for ins in decode_program(kernel.words):
        f = ins.fields
        if ins.mnemonic == "v_load":
            machine.v_load(f)
        elif ins.mnemonic == "m_load":
            for i in range(f["count"]):
                tiles[f["maddr"] + i] = kernel.dram[f["daddr"] + i * tb: f["daddr"] + (i + 1) * tb]
    return machine.vmem.copy(), tiles


@cocotb.test()
async def compute_stream_matches_the_simulator(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    failures = []
    for name, kernel in kernels():
        n = kernel.config.native_dim
        dut.rst.value = 1
        dut.start.value = 0
        dut.imem_we.value = 0
        dut.vrf_we.value = 0
        dut.mrf_we.value = 0
        await RisingEdge(dut.clk)
        dut.rst.value = 0
        vmem, tiles = state_after_loads(kernel)
        expected = simulate(kernel.words, kernel.config, dram=kernel.dram, mode="functional").machine.vmem
        words = kernel.words
        for i in range(len(words) // 16):
            dut.imem[i].value = int.from_bytes(words[16 * i:16 * (i + 1)], "little")
        for t, raw in tiles.items():
            dut.mrf[t].value = int.from_bytes(raw, "little")
        bits = vmem.view(np.uint16)
        for a in range(len(bits)):           # every vector: the RTL's memory must start where the simulator's does
            dut.vrf[a].value = int.from_bytes(bits[a].astype("<u2").tobytes(), "little")
        await RisingEdge(dut.clk)
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await RisingEdge(dut.clk)
        for _ in range(200000):
            if not int(dut.busy.value):
                break
            await RisingEdge(dut.clk)
        if name in REFUSED:
            assert int(dut.error.value), f"{name}: the RTL ran an activation table it does not have"
            continue
        assert not int(dut.error.value), f"{name}: the RTL flagged an instruction it cannot execute"
        want = expected.view(np.uint16)
        bad = []
        for a in range(len(want)):
            got = int(dut.vrf[a].value)
            if got != int.from_bytes(want[a].astype("<u2").tobytes(), "little"):
                bad.append(a)
        dut._log.info(f"{name}: {int(dut.cycles.value)} cycles, {len(bad)} vectors differ")
        if bad:
            failures.append(f"{name}: vectors {bad[:8]} differ ({len(bad)} in all)")
    assert not failures, "; ".join(failures)
