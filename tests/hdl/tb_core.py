"""cocotb testbench: whole programs on the RTL core with DRAM as cocotbext-axi's AXI RAM, against the simulator.

Programs: the simulator tests' kernels (with their loads and stores) and the
compiler's output for the small ResNet, VGG and MobileNet-style network on 32x32 inputs
(tiny preset; ms-fp9 with fp16 MFUs unless NPU_CORE_FORMATS says
otherwise).  The DRAM image (program data, inputs) goes into the AXI RAM; after the run, every byte the simulator's run leaves in DRAM must be
the same in the AXI RAM, and the RTL's cycle count must be within 10 % of the
simulator's estimate for the same memory: the AXI RAM model answers a read
burst AXI_RAM_LATENCY cycles after its address, so the estimate is made with
that DRAM latency (the presets' 100 ns is a DRAM's, not this model's).
"""
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock

from hdl.cosim_tb import run_on_core
from npu.sim import simulate
from npu import kernels as sp


#: Cycles from a read address to its first data beat in cocotbext-axi's AXI RAM.
AXI_RAM_LATENCY = 3


def programs(**machine):
    """(name, words, dram image, config) of each program to co-simulate, for the block and MFU formats named
    by NPU_CORE_FORMATS ("block,mfu"; the core must have been built for them), on `tiny` with the fields in
    ``machine`` changed (write_ports=2, tiles=4: the kernels and the compiled networks for that machine)."""
    block, mfu_format = os.environ.get("NPU_CORE_FORMATS", "ms-fp9,fp16").split(",")
    cfg = sp.config("tiny", weight=block, act=block, mfu_format=mfu_format, **machine)
    rng = np.random.default_rng(21)
    for name, k in (("gemv", sp.gemv(cfg, rng, batch=3, rows=2, k0=2, c=2)),
                    ("conv3x3", sp.conv2d(cfg, rng, h=4, w=5, cin_v=2, cout_v=2, ksize=3)),
                    ("maxpool", sp.pool(cfg, rng, h=6, w=6, c_v=2, ksize=3, stride=2, pad=1)),
                    ("avgpool", sp.global_avg_pool(cfg, rng, h=3, w=4, c_v=2)),
                    ("mfu_ops", sp.elementwise(cfg, rng, ["vv_mul", "vv_add", "v_relu", "vs_mul", "vv_b_sub_a"])),
                    ("mfu_act", sp.elementwise(cfg, rng, ["vs_mul", "v_sigm", "vv_add", "v_tanh"])),
                    ("mfu_max", sp.elementwise(cfg, rng, ["vs_max", "v_relu", "vv_a_sub_b"])),
                    ("mfu_relu6", sp.elementwise(cfg, rng, ["vs_mul", "vs_min", "v_relu"], rows=6, cols=8,
                                                 scalars={0: 4.0, 1: 6.0})),
                    ("mfu_min", sp.elementwise(cfg, rng, ["vv_min", "v_tanh", "vs_mul", "vv_min"])),
                    ("lane_concat", sp.lane_concat(cfg, rng, count=3, lo=5, hi=21)),
                    ("mlp", sp.mlp(cfg, rng, batch=2, d_in=2, d_hidden=2, d_out=1))):
        yield name, k.words, bytes(k.dram), k.config
    which = os.environ.get("NPU_CORE_MODELS", "resnet_small,vgg_small,mobile_small")
    if which:
        from compiler.compile import compile_model
        from npu.hostio import dram_image_with_inputs
        from compiler.models import nets

        for model in which.split(","):
            compiled = compile_model(nets.MODELS[model](), cfg)
            x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
            yield model, compiled.program.words, bytes(dram_image_with_inputs(compiled.program, {"data": x})), \
                compiled.config


@cocotb.test()
async def programs_match_the_simulator(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    failures, report = [], []
    for name, words, image, cfg in programs():
        ram, error = await run_on_core(dut, words, image, 3_000_000)
        same_memory = cfg.replace(dram_latency_ns=AXI_RAM_LATENCY * 1000.0 / cfg.clock_mhz)
        sim = simulate(words, same_memory, dram=image, mode="full")
        if error:
            failures.append(f"{name}: {error}")
            continue
        size = int(sim.machine.dram.data.size)          # every byte the simulator's DRAM holds
        want = sim.dram(0, size)
        got = ram.read(0, size)
        if got != want:
            diff = np.flatnonzero(np.frombuffer(got, np.uint8) != np.frombuffer(want, np.uint8))
            failures.append(f"{name}: {len(diff)} DRAM bytes differ, first at {int(diff[0]):#x}")
        rtl_cycles, sim_cycles = int(dut.cycles.value), sim.stats.total_cycles
        ratio = rtl_cycles / sim_cycles
        report.append(f"{name}: RTL {rtl_cycles} cycles, simulator {sim_cycles} ({ratio:.2f}x)")
        dut._log.info(report[-1])
        if abs(ratio - 1) > 0.10:
            failures.append(f"{name}: RTL cycles {rtl_cycles} are {ratio:.2f}x the simulator's {sim_cycles}")
    Path(os.environ.get("NPU_CORE_REPORT", "core_cycles.txt")).write_text("\n".join(report) + "\n")
    assert not failures, "; ".join(failures)
