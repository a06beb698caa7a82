"""RTL: the fp16 MFU lane, linted and simulated with Verilator under cocotb against the numerics reference."""
import sys
from pathlib import Path

from hdl.toolchain import GENERATED, RTL, activate, lint

HERE = Path(__file__).resolve().parent
SOURCE = RTL / "npu_mfu_lane_fp16.v"


def test_mfu_lane_lints_clean():
    result = lint(RTL / "npu_round_float.v", SOURCE, top="npu_mfu_lane_fp16")
    assert result.returncode == 0, result.stderr


def test_mfu_lane_matches_the_contract_bit_for_bit(tmp_path):
    activate()
    from cocotb_tools.runner import get_runner

    runner = get_runner("verilator")
    build = Path(__file__).resolve().parents[1] / "build" / "hdl" / "mfu_lane"
    runner.build(sources=[RTL / "npu_round_float.v", SOURCE], hdl_toplevel="npu_mfu_lane_fp16", includes=[GENERATED], build_dir=build,
                 always=False, build_args=["-Wno-fatal"])
    if str(HERE / "hdl") not in sys.path:
        sys.path.insert(0, str(HERE / "hdl"))           # the runner hands sys.path to the simulator's Python
    results = runner.test(hdl_toplevel="npu_mfu_lane_fp16", test_module="tb_mfu_lane", build_dir=build,
                          test_dir=tmp_path, extra_env={"PYTHONPATH": f"{HERE / 'hdl'}:{HERE.parent}"})
    from cocotb_tools.runner import get_results

    total, failed = get_results(results)
    assert total >= 1 and failed == 0
