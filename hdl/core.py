"""Building the RTL core for a machine configuration and running a program on it (Verilator).

``run_program(words, dram_image, config)`` runs the program on the fast path
(hdl/fast.py): the core compiled with a C++ testbench whose DRAM is a C++ model
of an AXI RAM, no Python per cycle (built once per configuration, cached under
``build/hdl``).  It returns the DRAM contents after the run and the cycle count.
The runtime's ``rtl`` backend and the co-simulation tests use it.

``run_program_cocotb`` runs the same program under cocotb with DRAM as
cocotbext-axi's AXI RAM (hdl/cosim_tb.py; about 2,000 cycles a second on `tiny`): the
reference the fast path's DRAM model is checked against, cycle for cycle.
``runner_for`` builds the core for cocotb testbenches.
"""
from __future__ import annotations

import fcntl
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npu.config import NPUConfig
from npu.numerics.formats import BlockFormat, get_format

from .toolchain import GENERATED, HDL, RTL, ToolchainError, activate

#: The core's sources, in dependency order.
SOURCES = [RTL / f for f in ("npu_round_float.v", "npu_block_scale.v", "npu_bfp_quantize.v", "npu_mx_quantize.v", "npu_elem_decode.v", "npu_slice_dot.v", "npu_block_round.v", "npu_block_quantize.v",
                             "npu_combine_lane.v", "npu_mfu_mul.v", "npu_mfu_add.v", "npu_mfu_act.v",
                             "npu_tile_engine.v", "npu_compute.v", "npu_axi_burst.v", "npu_dma_load.v", "npu_dma_store.v", "npu_core.v")]
BUILD = HDL.parent / "build" / "hdl"
#: Instructions each stream's instruction memory holds (npu_core's IMEM_DEPTH, left at its default).
IMEM_DEPTH = 4096


class UnsupportedConfig(ValueError):
    """The RTL does not implement this machine configuration yet (says what it supports)."""


@dataclass(frozen=True)
class CoreRun:
    """What one program run on the RTL left behind."""

    dram: bytes
    cycles: int


def block_parameters(fmt: BlockFormat) -> dict[str, int]:
    """Verilog descriptor of a block format (hdl/rtl/npu_block_format.vh), from its record in
    npu.numerics.formats (KIND is the element's kind code)."""
    e = fmt.element
    params = {"KIND": e.kind_code, "E_BITS": e.bits, "SCALE_BITS": fmt.scale_bits,
              "SCALE_BIAS": fmt.scale_bias, "EMAX": e.emax}
    if e.kind == "fp":
        codes = np.arange(1 << e.bits, dtype=np.uint8).view(e.dtype).astype(np.float32)
        special = 2 if np.isinf(codes).any() else 1 if np.isnan(codes).any() else 0
        params.update(M_BITS=e.mbits, F_BITS=e.mbits - e.emin, EXP_BITS=e.ebits, EXP_BIAS=1 - e.emin,
                      ELEM_SPECIAL=special)
    else:
        params.update(M_BITS=e.bits - 1, F_BITS=e.frac_bits)
    return params


#: Most MVU format modes the core holds (the 3-bit ``fmt`` field of ``mv_mul`` and ``m_load``).
MAX_MODES = 8
#: The block format descriptor fields passed per mode, packed 16 bits a mode (mode m in bits [16m +: 16]).
MODE_FIELDS = ("KIND", "E_BITS", "M_BITS", "F_BITS", "EXP_BITS", "EXP_BIAS", "ELEM_SPECIAL", "SCALE_BITS",
               "SCALE_BIAS", "EMAX")


def mode_parameters(formats: list[BlockFormat]) -> dict[str, str]:
    """Packed per-mode descriptors (``MODE_KIND``, ``MODE_E_BITS``, ...) of the MVU modes' block formats, from
    :func:`block_parameters`: field f of mode m is bits [16m +: 16] (two's complement) of ``MODE_<f>``."""
    out = {}
    for field in MODE_FIELDS:
        packed = 0
        for m, fmt in enumerate(formats):
            value = block_parameters(fmt).get(field, 0)
            assert -(1 << 15) <= value < (1 << 15), (fmt.name, field, value)
            packed |= (value & 0xFFFF) << (16 * m)
        out[f"MODE_{field}"] = f"{16 * MAX_MODES}'h{packed:0{4 * MAX_MODES}x}"
    return out


def core_parameters(config: NPUConfig) -> dict[str, int | str]:
    """Verilog parameters of the core for ``config``; UnsupportedConfig if the RTL cannot build it.

    Every MVU format mode (mode 0 the machine's pair, then ``extra_formats``) gets its block format
    descriptor in the packed ``MODE_*`` parameters; the modes must share one block size, one block per
    native vector.  With ``write_ports`` W the core has W ports (``WP``), each with tiles/W tile engines
    when tiles is a multiple of W and at most W x N/LANES; otherwise, at N/LANES = 1 only, the tiles
    engines are pooled across the ports (up to two tile ops a cycle per port: tiles at most 2 W)."""
    wf, af = get_format(config.weight_format), get_format(config.activation_format)
    problems = []
    if wf.name != af.name:
        problems.append(f"weights {wf.name} and activations {af.name} differ (one block format for both)")
    formats = [wf] + [get_format(f) for f in config.extra_formats]
    blocks = {f.name: (f.block_for(config.native_dim) if isinstance(f, BlockFormat) else None) for f in formats}
    if len(set(blocks.values())) > 1:
        problems.append("the MVU modes' formats do not share one block size (" +
                        ", ".join(f"{name}: block {b}" for name, b in blocks.items()) + ")")
    for f in formats:
        if not isinstance(f, BlockFormat) or f.block_for(config.native_dim) != config.native_dim:
            problems.append(f"{f.name} (the RTL has block formats with one block per native vector: ms-fp8, "
                            f"ms-fp9, bfp24 at any N; msfp12/msfp16 at N = 16; the MX formats at N = 32)")
    w, cpt, tiles = config.write_ports, config.cycles_per_tile, config.tiles
    if tiles % w or tiles > w * cpt:
        # the tile engines pooled across the ports (up to two tile ops of a row a cycle per port)
        if cpt != 1:
            problems.append(f"tiles={tiles} with write_ports={w} at native_dim/lanes={cpt} (the RTL splits the "
                            f"tile engines evenly over the write ports, tiles a multiple of write_ports and at most "
                            f"write_ports x native_dim/lanes, or pools them across the ports only at "
                            f"native_dim/lanes = 1)")
        elif tiles > 2 * w:
            problems.append(f"tiles={tiles} > 2 x write_ports={w} at native_dim/lanes=1 (the pooled tile engines "
                            f"take at most two tile ops a cycle per write port)")
    if problems:
        raise UnsupportedConfig(f"the RTL cannot build machine {config.name!r}: " + "; ".join(problems))
    return {"N": config.native_dim, "TILES": config.tiles, "LANES": config.lanes, "MFUS": config.mfus,
            "WP": config.write_ports, "VRF_DEPTH": config.vrf_depth, "MRF_TILES": config.mrf_tiles,
            "FMT": get_format(config.mfu_format).code, "MODES": len(formats), **mode_parameters(formats)}


def build_dir(config: NPUConfig) -> Path:
    """Where the core for ``config`` is compiled (named by its scalar parameters and its modes' formats)."""
    params = core_parameters(config)
    scalars = "_".join(f"{k.lower()}{v}" for k, v in sorted(params.items()) if not k.startswith("MODE_"))
    names = [get_format(f).name for f in (config.weight_format, *config.extra_formats)]
    modes = "-".join(n.replace("-", "").replace("_", "") for n in names)
    return BUILD / f"core_{scalars}_{modes}"


def runner_for(config: NPUConfig):
    """A cocotb runner with the core for ``config`` built (compiling it the first time, several minutes)."""
    activate()
    from cocotb_tools.runner import get_runner

    runner = get_runner("verilator")
    directory = build_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    # one build at a time per configuration (parallel test workers, several sessions): the others wait
    with open(directory.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # one C++ file per module: Verilator's split output races its precompiled header under parallel make
        runner.build(sources=SOURCES, hdl_toplevel="npu_core", includes=[GENERATED, RTL], build_dir=directory,
                     parameters=core_parameters(config), always=False,
                     build_args=["--output-split", "0", "--output-split-cfuncs", "0"])
    return runner


def check_program(words: bytes) -> None:
    """ToolchainError unless ``words`` is a whole number of 16-byte instructions that fits the core's
    instruction memories (IMEM_DEPTH words)."""
    if len(words) % 16:
        raise ToolchainError(f"a program is a whole number of 16-byte instructions, not {len(words)} bytes")
    if len(words) // 16 > IMEM_DEPTH:
        raise ToolchainError(f"the program has {len(words) // 16} instructions; the RTL core's instruction "
                             f"memories hold {IMEM_DEPTH}")


def run_program(words: bytes, dram_image: bytes, config: NPUConfig, *, max_cycles: int = 50_000_000) -> CoreRun:
    """Run one program on the RTL core (the fast path); returns DRAM after the run and the cycle count.

    ToolchainError when the core flags an instruction or transfer it cannot execute, or does not halt
    within ``max_cycles``."""
    from .fast import run

    check_program(words)
    return run(words, dram_image, config, max_cycles=max_cycles)


def run_program_cocotb(words: bytes, dram_image: bytes, config: NPUConfig, *,
                       max_cycles: int = 50_000_000) -> CoreRun:
    """Run one program on the RTL core under cocotb (DRAM as cocotbext-axi's AXI RAM, Python every
    cycle: slow); returns DRAM after the run and the cycle count, as :func:`run_program` does."""
    from cocotb_tools.runner import get_results

    check_program(words)
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
