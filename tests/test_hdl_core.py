"""RTL: the whole core (three streams, tokens, AXI DMA) runs the simulator's programs and compiled small CNNs.

External memory is cocotbext-axi's AXI RAM; every DRAM byte must equal the
simulator's after the run.  The RTL's cycle count per program is written to
build/hdl/core_cycles.txt next to the simulator's estimate.
"""
import sys
from pathlib import Path

from hdl.toolchain import GENERATED, RTL, activate, lint

HERE = Path(__file__).resolve().parent
BUILD = HERE.parent / "build" / "hdl"
SOURCES = [RTL / f for f in ("npu_round_float.v", "npu_bfp_quantize.v", "npu_bfp_block_dot.v", "npu_fp32_add.v",
                             "npu_fp32_to_fp16.v", "npu_fp16_to_fp32.v", "npu_mfu_lane_fp16.v", "npu_compute.v",
                             "npu_dma_load.v", "npu_dma_store.v", "npu_core.v")]


def test_core_lints_clean():
    result = lint(*SOURCES, top="npu_core")
    assert result.returncode == 0, result.stderr


def test_core_runs_programs_bit_exactly(tmp_path):
    activate()
    from cocotb_tools.runner import get_results, get_runner

    if str(HERE / "hdl") not in sys.path:
        sys.path.insert(0, str(HERE / "hdl"))
    runner = get_runner("verilator")
    build = BUILD / "core"
    runner.build(sources=SOURCES, hdl_toplevel="npu_core", includes=[GENERATED], build_dir=build, always=False,
                 build_args=["--output-split", "0", "--output-split-cfuncs", "0"])
    report = BUILD / "core_cycles.txt"
    results = runner.test(hdl_toplevel="npu_core", test_module="tb_core", build_dir=build, test_dir=tmp_path,
                          extra_env={"NPU_CORE_REPORT": str(report)})
    total, failed = get_results(results)
    assert total >= 1 and failed == 0
