"""RTL arithmetic blocks, linted and simulated with Verilator under cocotb against the numerics reference.

Each testbench (tests/hdl/tb_*.py) computes its expected values with the
project's numerics code (or numpy's IEEE binary32 for the adder) and
compares bit for bit.
"""
import sys
from pathlib import Path

import pytest

from hdl.toolchain import GENERATED, RTL, activate, lint

HERE = Path(__file__).resolve().parent
BUILD = HERE.parent / "build" / "hdl"
ROUND = RTL / "npu_round_float.v"

CASES = {
    # name: (top, sources, testbench, parameters, extra environment)
    "fp32_add": ("npu_fp32_add", [ROUND, RTL / "npu_fp32_add.v"], "tb_fp32", {}, {}),
    "fp32_to_fp16": ("npu_fp32_to_fp16", [ROUND, RTL / "npu_fp32_to_fp16.v"], "tb_fp32", {}, {}),
    "block_dot_ms-fp9": ("npu_bfp_block_dot", [ROUND, RTL / "npu_bfp_block_dot.v"], "tb_block_dot",
                         {"B": 32, "M_BITS": 3, "F_BITS": 2}, {"NPU_BLOCK_FORMAT": "ms-fp9", "NPU_BLOCK": "32"}),
    "block_dot_ms-fp8": ("npu_bfp_block_dot", [ROUND, RTL / "npu_bfp_block_dot.v"], "tb_block_dot",
                         {"B": 32, "M_BITS": 2, "F_BITS": 1}, {"NPU_BLOCK_FORMAT": "ms-fp8", "NPU_BLOCK": "32"}),
    "block_dot_msfp12": ("npu_bfp_block_dot", [ROUND, RTL / "npu_bfp_block_dot.v"], "tb_block_dot",
                         {"B": 16, "M_BITS": 3, "F_BITS": 2, "SCALE_BITS": 8, "SCALE_BIAS": 127},
                         {"NPU_BLOCK_FORMAT": "msfp12", "NPU_BLOCK": "16"}),
    "quantize_ms-fp9": ("npu_bfp_quantize", [RTL / "npu_bfp_quantize.v"], "tb_quantize",
                        {"B": 32, "M_BITS": 3, "F_BITS": 2}, {"NPU_BLOCK_FORMAT": "ms-fp9", "NPU_BLOCK": "32"}),
    "quantize_ms-fp8": ("npu_bfp_quantize", [RTL / "npu_bfp_quantize.v"], "tb_quantize",
                        {"B": 32, "M_BITS": 2, "F_BITS": 1}, {"NPU_BLOCK_FORMAT": "ms-fp8", "NPU_BLOCK": "32"}),
    "quantize_msfp12": ("npu_bfp_quantize", [RTL / "npu_bfp_quantize.v"], "tb_quantize",
                        {"B": 16, "M_BITS": 3, "F_BITS": 2, "SCALE_BITS": 8, "SCALE_BIAS": 127},
                        {"NPU_BLOCK_FORMAT": "msfp12", "NPU_BLOCK": "16"}),
    "mvu_dot_ms-fp9": ("npu_mvu_dot", [ROUND] + [RTL / f for f in ("npu_bfp_quantize.v", "npu_bfp_block_dot.v",
                                                                 "npu_fp32_add.v", "npu_fp32_to_fp16.v",
                                                                 "npu_mvu_dot.v")],
                       "tb_mvu_dot", {"B": 32, "M_BITS": 3, "F_BITS": 2},
                       {"NPU_BLOCK_FORMAT": "ms-fp9", "NPU_BLOCK": "32"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_block_lints_clean(name):
    top, sources, _, params, _ = CASES[name]
    result = lint(*sources, top=top)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(CASES))
def test_block_matches_the_reference_bit_for_bit(name, tmp_path):
    activate()
    from cocotb_tools.runner import get_results, get_runner

    top, sources, tb, params, env = CASES[name]
    if str(HERE / "hdl") not in sys.path:
        sys.path.insert(0, str(HERE / "hdl"))           # the runner hands sys.path to the simulator's Python
    runner = get_runner("verilator")
    build = BUILD / name
    # one C++ file per model: Verilator's split output races its precompiled header under parallel make
    runner.build(sources=sources, hdl_toplevel=top, includes=[GENERATED], build_dir=build, parameters=params,
                 always=False, build_args=["--output-split", "0", "--output-split-cfuncs", "0",
                                           *env.get("BUILD_ARGS", "").split()])
    results = runner.test(hdl_toplevel=top, test_module=tb, build_dir=build, test_dir=tmp_path,
                          extra_env={"PYTHONPATH": f"{HERE / 'hdl'}:{HERE.parent}", **env})
    total, failed = get_results(results)
    assert total >= 1 and failed == 0
