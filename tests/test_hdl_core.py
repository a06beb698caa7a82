"""RTL: the whole core (three streams, tokens, AXI DMA) runs the simulator's programs and compiled small CNNs.

External memory is cocotbext-axi's AXI RAM; every DRAM byte must equal the
simulator's after the run.  The RTL's cycle count per program is written to
build/hdl/core_cycles.txt next to the simulator's estimate.  The runtime's
``rtl`` backend scores through the same core.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from hdl.core import SOURCES, UnsupportedConfig, build_dir, core_parameters, runner_for
from hdl.toolchain import lint
from npu.config import PRESETS

HERE = Path(__file__).resolve().parent
TINY = PRESETS["tiny"].replace(weight_format="ms-fp9", activation_format="ms-fp9", mfu_format="fp16")


@pytest.mark.rtl
@pytest.mark.parametrize("block,mfu", [("ms-fp9", "fp16"), ("ms-fp8", "bf16"), ("bfp24", "fp32")])
def test_core_lints_clean(block, mfu):
    cfg = TINY.replace(weight_format=block, activation_format=block, mfu_format=mfu)
    result = lint(*SOURCES, top="npu_core", parameters=core_parameters(cfg))
    assert result.returncode == 0, result.stderr


def run_core_testbench(tmp_path, block: str, mfu: str, models: bool) -> None:
    """tests/hdl/tb_core.py on the tiny core built for ``block`` weights/activations and ``mfu`` MFUs: the
    simulator tests' kernels and, with ``models``, the compiled small ResNet and VGG."""
    from cocotb_tools.runner import get_results

    if str(HERE / "hdl") not in sys.path:
        sys.path.insert(0, str(HERE / "hdl"))
    cfg = PRESETS["tiny"].replace(weight_format=block, activation_format=block, mfu_format=mfu)
    runner = runner_for(cfg)
    suffix = "" if (block, mfu) == ("ms-fp9", "fp16") else f"_{block}_{mfu}"
    report = build_dir(cfg).parent / f"core_cycles{suffix}.txt"
    env = {"NPU_CORE_REPORT": str(report), "NPU_CORE_FORMATS": f"{block},{mfu}"}
    if not models:
        env["NPU_CORE_MODELS"] = ""
    results = runner.test(hdl_toplevel="npu_core", test_module="tb_core", build_dir=build_dir(cfg),
                          test_dir=tmp_path, extra_env=env)
    total, failed = get_results(results)
    assert total >= 1 and failed == 0


@pytest.mark.rtl
def test_core_runs_programs_and_small_cnns_bit_exactly(tmp_path):
    """The compiler's tiny target: ms-fp9 with fp16 MFUs (test_hdl_core_formats.py runs other formats)."""
    run_core_testbench(tmp_path, "ms-fp9", "fp16", models=True)


@pytest.mark.rtl
def test_session_scores_on_the_rtl_like_on_the_simulator(tmp_path):
    from compiler.compile import compile_model
    from compiler.models import nets
    from runtime import Session

    path = tmp_path / "small.npuz"
    compile_model(nets.vgg_small(), "tiny", "ms-fp9").save(path)
    x = np.random.default_rng(8).standard_normal((1, 3, 32, 32)).astype(np.float32)
    sim = Session(path).score_numpy_array(x)
    rtl = Session(path, backend="rtl").score_numpy_array(x)
    assert np.array_equal(rtl.output, sim.output)
    assert rtl.stats.cycles > 0 and abs(rtl.stats.cycles / sim.stats.cycles - 1) < 0.5


@pytest.mark.rtl
def test_random_legal_programs_agree_with_the_simulator():
    """Random legal programs from the simulator's property tests, each on a fresh core (the register files
    start zeroed, as docs/isa.md says; the RTL does not clear them, a new simulation does)."""
    import warnings

    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import NonInteractiveExampleWarning

    from hdl.core import run_program
    from npu.sim import simulate

    from npu_toolkit.testing.strategies import programs

    strategy = programs(formats=("ms-fp9", "ms-fp9", "fp16"))

    @settings(max_examples=10, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(strategy)
    def check(kernel):
        run = run_program(kernel.words, bytes(kernel.dram), kernel.config)
        sim = simulate(kernel.words, kernel.config, dram=bytes(kernel.dram), mode="functional")
        assert run.dram[:len(kernel.dram)] == sim.dram(0, len(kernel.dram)), repr(kernel)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        check()


def test_unsupported_machines_are_refused_clearly():
    with pytest.raises(UnsupportedConfig, match="weights mxfp8_e4m3 and activations ms-fp9 differ"):
        core_parameters(TINY.replace(weight_format="mxfp8_e4m3"))
    with pytest.raises(UnsupportedConfig, match="msfp12"):                  # blocks of 16 on N = 32
        core_parameters(TINY.replace(weight_format="msfp12", activation_format="msfp12"))
    with pytest.raises(UnsupportedConfig, match="tiles=8"):
        core_parameters(TINY.replace(tiles=8, lanes=16))
    with pytest.raises(UnsupportedConfig, match="write_ports=4"):          # one MFU chain, one write port
        core_parameters(TINY.replace(write_ports=4))
