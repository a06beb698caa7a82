"""cocotb test that runs one program on npu_core (used by hdl.core.run_program_cocotb, not collected by pytest).

Reads ``program.bin`` and ``dram.bin`` from $NPU_COSIM_DIR, runs the core with
DRAM as cocotbext-axi's AXI RAM, and writes ``dram_out.bin`` and
``result.json`` (cycles, or the error) there.  The fast path's C++ testbench
(hdl/harness/npu_sim_main.cpp) runs a program the same way, with a C++ model
that answers the AXI bursts on the same cycles as this RAM.
"""
import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiRam

DRAM_BYTES = 1 << 24


async def run_on_core(dut, words: bytes, image: bytes, limit: int = 50_000_000) -> tuple[AxiRam, str]:
    """Reset the core, put ``image`` in a fresh AXI RAM and ``words`` in the instruction memories, run to
    halt; returns the RAM and an error text ('' when the core halted cleanly).  The clock must be running."""
    dut.rst.value = 1
    dut.start.value = 0
    dut.imem_we.value = 0
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=max(DRAM_BYTES, len(image)))
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    ram.write(0, image)
    dut.imem_we.value = 1
    for i in range(len(words) // 16):
        dut.imem_addr.value = i
        dut.imem_wdata.value = int.from_bytes(words[16 * i:16 * (i + 1)], "little")
        await RisingEdge(dut.clk)
    dut.imem_we.value = 0
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    # the core counts its own cycles and stops counting at done; poll it every 256 cycles
    for _ in range(0, limit, 256):
        await ClockCycles(dut.clk, 256)
        if int(dut.error.value):          # checked first: a short program may also have finished
            return ram, "the core flagged an instruction or transfer it cannot execute"
        if int(dut.done.value):
            return ram, ""
    return ram, f"no halt within {limit} cycles"


@cocotb.test()
async def run(dut):
    """Run $NPU_COSIM_DIR/program.bin on dram.bin; write dram_out.bin and result.json."""
    work = Path(os.environ["NPU_COSIM_DIR"])
    words = (work / "program.bin").read_bytes()
    image = (work / "dram.bin").read_bytes()
    limit = int(os.environ.get("NPU_COSIM_MAX_CYCLES", "50000000"))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    ram, error = await run_on_core(dut, words, image, limit)
    (work / "dram_out.bin").write_bytes(ram.read(0, max(len(image), 1)))
    (work / "result.json").write_text(json.dumps({"cycles": int(dut.cycles.value), "error": error}))
