"""Building the RTL core for a machine configuration and running a program on it (Verilator + cocotb).

``run_program(words, dram_image, config)`` compiles the core for the
configuration (once per configuration, cached under ``build/hdl``), runs the
program with DRAM modelled by cocotbext-axi's AXI RAM, and returns the DRAM
contents after the run and the cycle count.  The runtime's ``rtl`` backend
and the co-simulation tests use it.
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from npu.config import NPUConfig
from npu.numerics.formats import get_format

from .toolchain import GENERATED, HDL, RTL, ToolchainError, activate

#: The core's sources, in dependency order.
SOURCES = [RTL / f for f in ("npu_round_float.v", "npu_bfp_quantize.v", "npu_slice_dot.v", "npu_block_round.v", "npu_block_quantize.v", "npu_fp32_add.v",
                             "npu_fp32_to_fp16.v", "npu_fp16_to_fp32.v", "npu_mfu_lane_fp16.v", "npu_mfu_mul.v", "npu_mfu_add.v", "npu_mfu_act.v", "npu_fp32_to_mfu.v", "npu_mfu_to_fp32.v",
                             "npu_tile_engine.v", "npu_compute.v", "npu_axi_burst.v", "npu_dma_load.v", "npu_dma_store.v", "npu_core.v")]
BUILD = HDL.parent / "build" / "hdl"


class UnsupportedConfig(ValueError):
    """The RTL does not implement this machine configuration yet (says what it supports)."""


@dataclass(frozen=True)
class CoreRun:
    """What one program run on the RTL left behind."""

    dram: bytes
    cycles: int


def core_parameters(config: NPUConfig) -> dict[str, int]:
    """Verilog parameters of the core for ``config``; UnsupportedConfig if the RTL cannot build it."""
    wf, af = get_format(config.weight_format), get_format(config.activation_format)
    problems = []
    if config.mfu_format != "fp16":
        problems.append(f"MFU format {config.mfu_format} (the RTL has fp16 lanes)")
    if wf.name != af.name:
        problems.append(f"weights {wf.name} and activations {af.name} differ (one block format for both)")
    if getattr(wf.element, "kind", "") != "sm" or wf.block not in (0, config.native_dim):
        problems.append(f"{wf.name} (the RTL has sign-magnitude formats with one block per native vector: "
                        f"ms-fp8, ms-fp9, bfp24)")
    if problems:
        raise UnsupportedConfig(f"the RTL cannot build machine {config.name!r}: " + "; ".join(problems))
    if config.tiles > config.cycles_per_tile:
        problems.append(f"tiles={config.tiles} > native_dim/lanes={config.cycles_per_tile} (the tile engines "
                        f"are staggered by one cycle within one tile op)")
    if problems:
        raise UnsupportedConfig(f"the RTL cannot build machine {config.name!r}: " + "; ".join(problems))
    return {"N": config.native_dim, "TILES": config.tiles, "LANES": config.lanes, "MFUS": config.mfus,
            "VRF_DEPTH": config.vrf_depth, "MRF_TILES": config.mrf_tiles,
            "E_BITS": wf.element.bits, "M_BITS": wf.element.bits - 1, "F_BITS": wf.element.frac_bits,
            "SCALE_BITS": wf.scale_bits, "SCALE_BIAS": wf.scale_bias}


def build_dir(config: NPUConfig) -> Path:
    """Where the core for ``config`` is compiled."""
    params = core_parameters(config)
    return BUILD / ("core_" + "_".join(f"{k.lower()}{v}" for k, v in sorted(params.items())))


def runner_for(config: NPUConfig):
    """A cocotb runner with the core for ``config`` built (compiling it the first time, several minutes)."""
    activate()
    from cocotb_tools.runner import get_runner

    runner = get_runner("verilator")
    # one C++ file per module: Verilator's split output races its precompiled header under parallel make
    runner.build(sources=SOURCES, hdl_toplevel="npu_core", includes=[GENERATED, RTL], build_dir=build_dir(config),
                 parameters=core_parameters(config), always=False,
                 build_args=["--output-split", "0", "--output-split-cfuncs", "0"])
    return runner


def run_program(words: bytes, dram_image: bytes, config: NPUConfig, *, max_cycles: int = 50_000_000) -> CoreRun:
    """Run one program on the RTL core; returns DRAM after the run and the cycle count."""
    from cocotb_tools.runner import get_results

    runner = runner_for(config)
    with tempfile.TemporaryDirectory(prefix="npu-rtl-") as tmp:
        t = Path(tmp)
        (t / "program.bin").write_bytes(words)
        (t / "dram.bin").write_bytes(dram_image)
        here = str(Path(__file__).resolve().parent)
        if here not in sys.path:
            sys.path.insert(0, here)
        results = runner.test(hdl_toplevel="npu_core", test_module="cosim_tb", build_dir=build_dir(config),
                              test_dir=t, extra_env={"NPU_COSIM_DIR": str(t), "NPU_COSIM_MAX_CYCLES": str(max_cycles)})
        total, failed = get_results(results)
        report = t / "result.json"
        if failed or not report.is_file():
            detail = json.loads(report.read_text()).get("error", "") if report.is_file() else "no result written"
            raise ToolchainError(f"the RTL simulation failed: {detail}")
        info = json.loads(report.read_text())
        if info.get("error"):
            raise ToolchainError(f"the RTL core stopped: {info['error']}")
        return CoreRun((t / "dram_out.bin").read_bytes(), int(info["cycles"]))
