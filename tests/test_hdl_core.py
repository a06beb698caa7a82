"""RTL: the whole core (three streams, tokens, AXI DMA) runs the simulator's programs and compiled small CNNs.

External memory is an AXI RAM: the C++ model of the fast path (hdl/fast.py),
or cocotbext-axi's under cocotb (tests/hdl/tb_core.py, for the other formats
in test_hdl_core_formats.py); the two answer on the same cycles
(test_hdl_fast.py).  Every DRAM byte must equal the simulator's after the run.
The RTL's cycle count per program is written to build/hdl/core_cycles.txt next
to the simulator's estimate (core_cycles_w2_t8.txt for the machine with two
write ports and 8 tile engines, PORTS; core_cycles_w2_t3_l32.txt for the one
with 3 tile engines pooled over two ports, POOLED).  The runtime's ``rtl`` backend scores through the
same core.
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
#: The machine with write ports the co-simulation runs: two ports, 8 tile engines on N/LANES = 4 (two tile ops
#: finish per cycle, one per port), a vector memory of two banks.
PORTS = {"write_ports": 2, "tiles": 8}
#: The machine with pooled tile engines: two ports, one cycle a tile (N/LANES = 1) and 3 engines shared by the
#: ports (1.5 tile ops a cycle per port, as bw-s10-n64w16's 24 engines on 16 ports): a port issues up to two
#: tile ops of its row a cycle and its combine adds both block sums.
POOLED = {"write_ports": 2, "tiles": 3, "lanes": 32}


@pytest.mark.rtl
@pytest.mark.parametrize("block,mfu,machine", [("ms-fp9", "fp16", {}), ("ms-fp8", "bf16", {}), ("bfp24", "fp32", {}),
                                               ("ms-fp9", "fp16", {"write_ports": 4, "tiles": 8}),
                                               ("ms-fp9", "fp16", POOLED)])
def test_core_lints_clean(block, mfu, machine):
    cfg = TINY.replace(weight_format=block, activation_format=block, mfu_format=mfu, **machine)
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
@pytest.mark.parametrize("machine", [{}, PORTS, POOLED], ids=["tiny", "tiny_w2_t8", "tiny_w2_t3_l32"])
def test_core_runs_programs_and_small_cnns_bit_exactly(machine):
    """The compiler's tiny target, ms-fp9 with fp16 MFUs, on the fast path: tests/hdl/tb_core.py's programs
    (the simulator tests' kernels, the small ResNet, VGG and MobileNet-style network, compiled for the
    machine), each on a fresh core, against the simulator with the AXI RAM's read latency
    (test_hdl_core_formats.py runs other formats); and again on `tiny` with two write ports and 8 tile
    engines (PORTS), and with two ports sharing 3 tile engines at one cycle a tile (POOLED)."""
    from hdl.core import run_program
    from npu.sim import simulate

    if str(HERE / "hdl") not in sys.path:
        sys.path.insert(0, str(HERE / "hdl"))
    from tb_core import AXI_RAM_LATENCY, programs

    failures, report = [], []
    for name, words, image, cfg in programs(**machine):
        assert all(getattr(cfg, k) == v for k, v in machine.items())
        same_memory = cfg.replace(dram_latency_ns=AXI_RAM_LATENCY * 1000.0 / cfg.clock_mhz)
        sim = simulate(words, same_memory, dram=image, mode="full")
        size = int(sim.machine.dram.data.size)          # every byte the simulator's DRAM holds
        want = sim.dram(0, size)
        # the RTL returns as many DRAM bytes as it was given: zeros up to the simulator's size, as in its RAM
        run = run_program(words, image + bytes(max(0, size - len(image))), cfg, max_cycles=3_000_000)
        if run.dram[:size] != want:
            diff = np.flatnonzero(np.frombuffer(run.dram[:size], np.uint8) != np.frombuffer(want, np.uint8))
            failures.append(f"{name}: {len(diff)} DRAM bytes differ, first at {int(diff[0]):#x}")
        ratio = run.cycles / sim.stats.total_cycles
        report.append(f"{name}: RTL {run.cycles} cycles, simulator {sim.stats.total_cycles} ({ratio:.2f}x)")
        if abs(ratio - 1) > 0.10:
            failures.append(f"{name}: RTL cycles {run.cycles} are {ratio:.2f}x the simulator's")
    letter = {"write_ports": "w", "tiles": "t", "lanes": "l"}
    suffix = "".join(f"_{letter[k]}{machine[k]}" for k in letter if k in machine)
    (build_dir(TINY).parent / f"core_cycles{suffix}.txt").write_text("\n".join(report) + "\n")
    assert report and not failures, "; ".join(failures)


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
@pytest.mark.parametrize("machine,examples", [({}, 40), (PORTS, 40)], ids=["tiny", "tiny_w2_t8"])
def test_random_legal_programs_agree_with_the_simulator(machine, examples):
    """Random legal programs from the simulator's property tests, each on a fresh core (the register files
    start zeroed, as docs/isa.md says; the RTL does not clear them, a new simulation does); the same programs
    on the machine with write ports (PORTS: the values do not depend on it)."""
    import warnings

    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import NonInteractiveExampleWarning

    from hdl.core import run_program
    from npu.sim import simulate

    from npu_toolkit.testing.strategies import programs

    strategy = programs(formats=("ms-fp9", "ms-fp9", "fp16"))

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(strategy)
    def check(kernel):
        cfg = kernel.config.replace(**machine)
        sim = simulate(kernel.words, cfg, dram=bytes(kernel.dram), mode="functional")
        size = int(sim.machine.dram.data.size)        # every byte the simulator's DRAM holds (stores included)
        image = bytes(kernel.dram) + bytes(max(0, size - len(kernel.dram)))
        run = run_program(kernel.words, image, cfg)
        assert run.dram[:size] == sim.dram(0, size), repr(kernel)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        check()


def test_unsupported_machines_are_refused_clearly():
    with pytest.raises(UnsupportedConfig, match="weights mxfp8_e4m3 and activations ms-fp9 differ"):
        core_parameters(TINY.replace(weight_format="mxfp8_e4m3"))
    with pytest.raises(UnsupportedConfig, match="msfp12"):                  # blocks of 16 on N = 32
        core_parameters(TINY.replace(weight_format="msfp12", activation_format="msfp12"))
    # at N/LANES > 1, at most N/LANES tile engines per write port, a multiple of write_ports (here N/LANES = 2,
    # one port; N/LANES = 4, two ports)
    with pytest.raises(UnsupportedConfig, match=r"tiles=8 with write_ports=1 at native_dim/lanes=2 .*pools them "
                                                r"across the ports only at native_dim/lanes = 1"):
        core_parameters(TINY.replace(tiles=8, lanes=16))
    with pytest.raises(UnsupportedConfig, match=r"tiles=16 with write_ports=2 at native_dim/lanes=4"):
        core_parameters(TINY.replace(tiles=16, write_ports=2))
    with pytest.raises(UnsupportedConfig, match="tiles=2 with write_ports=4 at native_dim/lanes=4"):
        core_parameters(TINY.replace(write_ports=4))
    with pytest.raises(UnsupportedConfig, match="tiles=6 with write_ports=4 at native_dim/lanes=4"):
        core_parameters(TINY.replace(write_ports=4, tiles=6))
    # at N/LANES = 1 the engines are pooled: at most two tile ops a cycle per port
    with pytest.raises(UnsupportedConfig, match=r"tiles=5 > 2 x write_ports=2 at native_dim/lanes=1"):
        core_parameters(TINY.replace(lanes=32, write_ports=2, tiles=5))
    with pytest.raises(UnsupportedConfig, match=r"tiles=3 > 2 x write_ports=1 at native_dim/lanes=1"):
        core_parameters(TINY.replace(lanes=32, tiles=3))
    # what the RTL builds: up to write_ports x N/LANES engines, a multiple of write_ports; at N/LANES = 1 any
    # number up to 2 x write_ports
    for w, tiles in ((1, 4), (2, 2), (2, 8), (4, 4), (4, 16), (8, 32)):
        assert core_parameters(TINY.replace(write_ports=w, tiles=tiles))["WP"] == w
    for w, tiles in ((1, 2), (2, 1), (2, 3), (2, 4), (4, 6), (16, 24), (16, 32)):
        assert core_parameters(TINY.replace(lanes=32, write_ports=w, tiles=tiles))["TILES"] == tiles


def test_the_rtl_accepts_bw_s10_n64w16():
    """The machine the pooled tile engines are for: 24 engines at one cycle a tile on 16 write ports (only its
    parameters: it is far too big to simulate)."""
    params = core_parameters(PRESETS["bw-s10-n64w16"])
    assert (params["N"], params["LANES"], params["TILES"], params["WP"]) == (64, 64, 24, 16)
