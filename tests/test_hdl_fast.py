"""RTL fast path (hdl/fast.py): the core under a C++ testbench with a C++ AXI RAM, no Python per cycle.

Its DRAM must equal the simulator's byte for byte, and its cycle counts (the
core's own counter) must equal the cocotb path's, whose DRAM is cocotbext-axi's
AXI RAM: the C++ model answers the core's bursts on the same cycles.  A core
that flags an error, runs away or gets a program too long for its instruction
memories ends in a ToolchainError that says so.
"""
import numpy as np
import pytest

from hdl.core import IMEM_DEPTH, run_program, run_program_cocotb
from hdl.toolchain import ToolchainError
from npu.isa.encoding import encode_program, make
from npu.sim import simulate
from npu import kernels as sp

pytestmark = pytest.mark.rtl

TINY = sp.config("tiny", weight="ms-fp9", act="ms-fp9", mfu_format="fp16")
#: The machine the cocotb path is compared on: test_hdl_core_formats.py builds its cocotb core anyway, and its
#: 32-bit vector elements (fp32 MFUs) take the fast path's DRAM model through wider transfers than ``TINY``.
MX = sp.config("tiny", weight="mxfp8_e4m3", act="mxfp8_e4m3", mfu_format="fp32")
#: Cycles from a read address to its first data beat in the AXI RAM (tests/hdl/tb_core.py).
AXI_RAM_LATENCY = 3


def kernels(cfg):
    """Small programs touching every part of the core: DMA both ways, the MVU, reductions, MFU ops."""
    rng = np.random.default_rng(31)
    return {"conv3x3": sp.conv2d(cfg, rng, h=4, w=5, cin_v=2, cout_v=2, ksize=3),
            "maxpool": sp.pool(cfg, rng, h=6, w=6, c_v=2, ksize=3, stride=2, pad=1),
            "mfu_act": sp.elementwise(cfg, rng, ["vs_mul", "v_sigm", "vv_add", "v_tanh"], rows=4, cols=6)}


@pytest.mark.parametrize("name", ["conv3x3", "maxpool", "mfu_act"])
def test_fast_path_matches_the_simulator_and_the_cocotb_path(name):
    kernel = kernels(MX)[name]
    sim = simulate(kernel.words, MX.replace(dram_latency_ns=AXI_RAM_LATENCY * 1000.0 / MX.clock_mhz),
                   dram=bytes(kernel.dram), mode="full")
    size = int(sim.machine.dram.data.size)               # every byte the simulator's DRAM holds
    # the RTL returns as many DRAM bytes as it is given: zeros up to the simulator's size, as in its RAM
    image = bytes(kernel.dram) + bytes(max(0, size - len(kernel.dram)))
    fast = run_program(kernel.words, image, MX)
    assert fast.dram[:size] == sim.dram(0, size)
    assert abs(fast.cycles / sim.stats.total_cycles - 1) < 0.10
    cocotb = run_program_cocotb(kernel.words, image, MX)
    assert (fast.cycles, fast.dram) == (cocotb.cycles, cocotb.dram)


def test_an_illegal_instruction_stops_the_run_with_an_error():
    undefined = (63).to_bytes(16, "little")              # opcode 63: no instruction
    words = undefined + encode_program([make("halt")])
    with pytest.raises(ToolchainError, match="flagged an instruction or transfer it cannot execute"):
        run_program(words, bytes(64), TINY)


def test_a_misaligned_transfer_stops_the_run_with_an_error():
    words = encode_program([make("v_load", vaddr=0, daddr=8, rows=1, row_len=1), make("halt")])
    with pytest.raises(ToolchainError, match="flagged an instruction or transfer it cannot execute"):
        run_program(words, bytes(256), TINY)


def test_a_program_that_never_halts_stops_at_max_cycles():
    words = encode_program([make("nop", wait=("l2c",)), make("halt")])    # no load ever signals l2c
    with pytest.raises(ToolchainError, match="no halt within 2000 cycles"):
        run_program(words, bytes(64), TINY, max_cycles=2000)


def test_a_program_longer_than_the_instruction_memories_is_refused():
    words = encode_program([make("nop")] * IMEM_DEPTH + [make("halt")])
    with pytest.raises(ToolchainError, match=f"{IMEM_DEPTH + 1} instructions.*hold {IMEM_DEPTH}"):
        run_program(words, bytes(64), TINY)
