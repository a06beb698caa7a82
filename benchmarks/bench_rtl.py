"""RTL simulation speed: simulated clock cycles per wall-clock second, Verilator against the simulator.

Run with::

    .venv/bin/pytest benchmarks/bench_rtl.py --benchmark-only -o python_files='bench_*.py' -s

The compiled small ResNet (tiny, ms-fp9) runs once on the RTL core
(Verilator + cocotb, DRAM as an AXI RAM; the core is built first, once) and on
the cycle-approximate simulator in full and timing-only mode in the same
run.  ``extra_info`` holds each one's cycles and cycles per second, and the
RTL/simulator cycle ratio.
"""
from __future__ import annotations

import time

import numpy as np

from compiler.compile import compile_model
from npu.hostio import dram_image_with_inputs
from compiler.models import nets
from hdl.core import run_program, runner_for
from npu.sim import simulate


def test_rtl_cycles_per_second(benchmark):
    compiled = compile_model(nets.resnet_small(), "tiny", "ms-fp9")
    cfg = compiled.config
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    image = bytes(dram_image_with_inputs(compiled.program, {"data": x}))
    runner_for(cfg)                                            # build outside the timing
    result = benchmark.pedantic(lambda: run_program(compiled.program.words, image, cfg), rounds=1, iterations=1)
    rtl_s = benchmark.stats.stats.min
    t0 = time.perf_counter()
    full = simulate(compiled.program, cfg, dram=image)
    full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    simulate(compiled.program, cfg, dram=image, mode="timing")
    timing_s = time.perf_counter() - t0
    sim_cycles = full.stats.total_cycles
    benchmark.extra_info.update({
        "rtl_cycles": result.cycles, "rtl_cycles_per_s": result.cycles / rtl_s,
        "sim_cycles": sim_cycles, "sim_full_cycles_per_s": sim_cycles / full_s,
        "sim_timing_cycles_per_s": sim_cycles / timing_s, "rtl_over_sim_cycles": result.cycles / sim_cycles,
    })
    print(f"\nRTL (Verilator): {result.cycles} cycles in {rtl_s:.2f} s = {result.cycles / rtl_s:,.0f} cycles/s; "
          f"simulator full {sim_cycles / full_s:,.0f} cycles/s, timing-only {sim_cycles / timing_s:,.0f} cycles/s; "
          f"RTL/simulator cycles {result.cycles / sim_cycles:.2f}")
