"""RTL arithmetic blocks, linted and simulated with Verilator under cocotb against the numerics reference.

Each testbench (tests/hdl/tb_*.py) computes its expected values with the
project's numerics code (or numpy's IEEE binary32 for the adder) and
compares bit for bit.
"""
import sys
from pathlib import Path

import pytest

from hdl.core import block_parameters
from hdl.toolchain import GENERATED, RTL, activate, lint
from npu.numerics.formats import get_format, mfu_formats

pytestmark = pytest.mark.rtl

HERE = Path(__file__).resolve().parent
BUILD = HERE.parent / "build" / "hdl"
ROUND = RTL / "npu_round_float.v"
BLOCK_DOT = [ROUND] + [RTL / f for f in ("npu_elem_decode.v", "npu_slice_dot.v", "npu_block_round.v", "npu_bfp_block_dot.v")]
MFU = [HERE / "hdl" / "mfu_stages_top.v"]
MFU_FORMATS = {f.name: f.code for f in mfu_formats()}       # name: the FMT parameter
MX_FORMATS = ["mxint8", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4_e2m1"]
QUANTIZE = [RTL / f for f in ("npu_block_scale.v", "npu_bfp_quantize.v", "npu_mx_quantize.v", "npu_block_quantize.v")]
BFP_QUANTIZE = [RTL / "npu_block_scale.v", RTL / "npu_bfp_quantize.v"]
BLOCK_DOT_PARAMS = ("KIND", "E_BITS", "M_BITS", "F_BITS", "EXP_BITS", "ELEM_SPECIAL", "SCALE_BITS", "SCALE_BIAS")


def _mx(fmt: str) -> dict:
    return block_parameters(get_format(fmt))

INPUT_FORMATS = {"bf16": {"X_EXP_W": 8, "X_MAN_W": 7}, "fp32": {"X_EXP_W": 8, "X_MAN_W": 23}}

CASES = {
    # name: (top, sources, testbench, parameters, extra environment)
    "fp32_add": ("npu_fp32_add", [ROUND, RTL / "npu_fp32_add.v"], "tb_fp32", {}, {}),
    "fp32_mul": ("npu_fp32_mul", [ROUND, RTL / "npu_fp32_mul.v"], "tb_fp32", {}, {"NPU_FP32_OP": "mul"}),
    "fp32_to_fp16": ("npu_fp32_to_fp16", [ROUND, RTL / "npu_fp32_to_fp16.v"], "tb_fp32", {}, {}),
    "block_dot_ms-fp9": ("npu_bfp_block_dot", BLOCK_DOT, "tb_block_dot",
                         {"B": 32, "M_BITS": 3, "F_BITS": 2}, {"NPU_BLOCK_FORMAT": "ms-fp9", "NPU_BLOCK": "32"}),
    "block_dot_ms-fp8": ("npu_bfp_block_dot", BLOCK_DOT, "tb_block_dot",
                         {"B": 32, "M_BITS": 2, "F_BITS": 1}, {"NPU_BLOCK_FORMAT": "ms-fp8", "NPU_BLOCK": "32"}),
    "block_dot_msfp12": ("npu_bfp_block_dot", BLOCK_DOT, "tb_block_dot",
                         {"B": 16, "M_BITS": 3, "F_BITS": 2, "SCALE_BITS": 8, "SCALE_BIAS": 127},
                         {"NPU_BLOCK_FORMAT": "msfp12", "NPU_BLOCK": "16"}),
    "quantize_ms-fp9": ("npu_bfp_quantize", BFP_QUANTIZE, "tb_quantize",
                        {"B": 32, "M_BITS": 3, "F_BITS": 2}, {"NPU_BLOCK_FORMAT": "ms-fp9", "NPU_BLOCK": "32"}),
    "quantize_ms-fp8": ("npu_bfp_quantize", BFP_QUANTIZE, "tb_quantize",
                        {"B": 32, "M_BITS": 2, "F_BITS": 1}, {"NPU_BLOCK_FORMAT": "ms-fp8", "NPU_BLOCK": "32"}),
    "quantize_msfp12": ("npu_bfp_quantize", BFP_QUANTIZE, "tb_quantize",
                        {"B": 16, "M_BITS": 3, "F_BITS": 2, "SCALE_BITS": 8, "SCALE_BIAS": 127},
                        {"NPU_BLOCK_FORMAT": "msfp12", "NPU_BLOCK": "16"}),
    **{f"quantize_ms-fp9_from_{f}": ("npu_bfp_quantize", BFP_QUANTIZE, "tb_quantize",
                                     {"B": 32, "M_BITS": 3, "F_BITS": 2, **p},
                                     {"NPU_BLOCK_FORMAT": "ms-fp9", "NPU_BLOCK": "32", "NPU_INPUT_FORMAT": f})
       for f, p in INPUT_FORMATS.items()},
    **{f"block_dot_{f}": ("npu_bfp_block_dot", BLOCK_DOT, "tb_block_dot",
                          {"B": 32, **{k: v for k, v in _mx(f).items() if k in BLOCK_DOT_PARAMS}},
                          {"NPU_BLOCK_FORMAT": f, "NPU_BLOCK": "32"})
       for f in MX_FORMATS},
    **{f"quantize_{f}": ("npu_block_quantize", QUANTIZE, "tb_quantize", {"B": 32, "FMT": MFU_FORMATS["fp16"], **_mx(f)},
                         {"NPU_BLOCK_FORMAT": f, "NPU_BLOCK": "32"})
       for f in MX_FORMATS},
    **{f"mfu_{f}": ("mfu_stages_top", MFU, "tb_mfu_lane", {"FMT": code}, {"NPU_MFU_FORMAT": f})
       for f, code in MFU_FORMATS.items()},
    "mvu_dot_ms-fp9": ("npu_mvu_dot", [ROUND] + [RTL / f for f in ("npu_block_scale.v", "npu_bfp_quantize.v", "npu_elem_decode.v", "npu_slice_dot.v", "npu_block_round.v", "npu_bfp_block_dot.v",
                                                                 "npu_fp32_add.v", "npu_fp32_to_fp16.v",
                                                                 "npu_mvu_dot.v")],
                       "tb_mvu_dot", {"B": 32, "M_BITS": 3, "F_BITS": 2},
                       {"NPU_BLOCK_FORMAT": "ms-fp9", "NPU_BLOCK": "32"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_block_lints_clean(name):
    top, sources, _, params, _ = CASES[name]
    result = lint(*sources, top=top, parameters=params)
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
    runner.build(sources=sources, hdl_toplevel=top, includes=[GENERATED, RTL], build_dir=build, parameters=params,
                 always=False, build_args=["--output-split", "0", "--output-split-cfuncs", "0",
                                           *env.get("BUILD_ARGS", "").split()])
    results = runner.test(hdl_toplevel=top, test_module=tb, build_dir=build, test_dir=tmp_path,
                          extra_env={"PYTHONPATH": f"{HERE / 'hdl'}:{HERE.parent}", **env})
    total, failed = get_results(results)
    assert total >= 1 and failed == 0
