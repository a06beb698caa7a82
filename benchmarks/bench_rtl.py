"""RTL simulation speed: simulated clock cycles per wall-clock second, Verilator against the simulator.

Run with::

    .venv/bin/pytest benchmarks/bench_rtl.py --benchmark-only -o python_files='bench_*.py' -s

The compiled small ResNet (tiny, ms-fp9) runs once on the RTL core's fast
path (hdl/fast.py: C++ testbench and AXI RAM model, the model built with the
"fast" profile; the core is built first, once), once on the cocotb path
(hdl/cosim_tb.py: Python every cycle, DRAM as cocotbext-axi's AXI RAM; the
speed before the fast path), and on the cycle-approximate simulator in full
and timing-only mode in the same run.  The two RTL runs must agree on every
DRAM byte and on the cycle count.  ``extra_info`` holds each one's cycles and
cycles per second, and the RTL/simulator cycle ratio.
"""
from __future__ import annotations

import resource
import time

import numpy as np

from compiler.compile import compile_model
from compiler.models import nets
from hdl.core import run_program, run_program_cocotb, runner_for
from hdl.fast import build
from npu.hostio import dram_image_with_inputs
from npu.sim import simulate


def _child_cpu(times: list, fn, *args):
    """``fn(*args)``, appending the CPU seconds its child processes (the simulator) used to ``times``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = fn(*args)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return out


def test_rtl_cycles_per_second(benchmark):
    compiled = compile_model(nets.resnet_small(), "tiny", "ms-fp9")
    cfg = compiled.config
    words = compiled.program.words
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    image = bytes(dram_image_with_inputs(compiled.program, {"data": x}))
    build(cfg)                                                 # build outside the timing
    runner_for(cfg)
    cpu = []
    result = benchmark.pedantic(lambda: _child_cpu(cpu, run_program, words, image, cfg), rounds=3, iterations=1)
    rtl_s, rtl_cpu_s = benchmark.stats.stats.min, min(cpu)
    t0 = time.perf_counter()
    cocotb = _child_cpu(cpu, run_program_cocotb, words, image, cfg)
    cocotb_s, cocotb_cpu_s = time.perf_counter() - t0, cpu[-1]
    assert (cocotb.cycles, cocotb.dram) == (result.cycles, result.dram), "the fast and cocotb paths disagree"
    t0 = time.perf_counter()
    full = simulate(compiled.program, cfg, dram=image)
    full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    simulate(compiled.program, cfg, dram=image, mode="timing")
    timing_s = time.perf_counter() - t0
    sim_cycles = full.stats.total_cycles
    benchmark.extra_info.update({
        "rtl_cycles": result.cycles, "rtl_cycles_per_s": result.cycles / rtl_s,
        "rtl_cycles_per_cpu_s": result.cycles / rtl_cpu_s,
        "rtl_cocotb_cycles_per_s": cocotb.cycles / cocotb_s,
        "rtl_cocotb_cycles_per_cpu_s": cocotb.cycles / cocotb_cpu_s,
        "rtl_fast_over_cocotb": cocotb_s / rtl_s,
        "sim_cycles": sim_cycles, "sim_full_cycles_per_s": sim_cycles / full_s,
        "sim_timing_cycles_per_s": sim_cycles / timing_s, "rtl_over_sim_cycles": result.cycles / sim_cycles,
    })
    print(f"\nRTL fast path (C++ testbench): {result.cycles} cycles in {rtl_s:.2f} s = "
          f"{result.cycles / rtl_s:,.0f} cycles/s ({result.cycles / rtl_cpu_s:,.0f} per CPU second); "
          f"cocotb path: {cocotb_s:.1f} s = {cocotb.cycles / cocotb_s:,.0f} cycles/s "
          f"({cocotb.cycles / cocotb_cpu_s:,.0f} per CPU second; same cycles and DRAM); "
          f"simulator full {sim_cycles / full_s:,.0f} cycles/s, timing-only {sim_cycles / timing_s:,.0f} cycles/s; "
          f"RTL/simulator cycles {result.cycles / sim_cycles:.2f}")
