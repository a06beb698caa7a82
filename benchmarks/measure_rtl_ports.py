"""The co-simulated programs on machines with write ports: RTL cycles against the simulator's, per program.

    .venv/bin/python benchmarks/measure_rtl_ports.py                          # W = 1, 2, 4 on tiny
    .venv/bin/python benchmarks/measure_rtl_ports.py --machine 2x8 --machine 4x16
    .venv/bin/python benchmarks/measure_rtl_ports.py --machine 2x3x32        # pooled engines, one cycle a tile

Each ``--machine WxT`` is ``tiny`` (N = 32, 8 lanes: N/LANES = 4) with
``write_ports`` W and ``tiles`` T; ``WxTxL`` also sets ``lanes`` L (``2x3x32``:
one cycle a tile, 3 engines pooled over 2 ports).  For each, tests/hdl/tb_core.py's programs
(the simulator tests' kernels and the small ResNet, VGG and MobileNet-style
network, compiled for that machine) run on the RTL core's fast path
(hdl.core.run_program; the build profile from ``$NPU_RTL_PROFILE``, "quick"
here unless set) and on the simulator in full mode with the AXI RAM model's
DRAM latency, as tests/test_hdl_core.py does; every DRAM byte must be the same.
Prints one line per program (RTL cycles, simulator cycles, their ratio) and
exits non-zero when any program's DRAM differs or its ratio is outside
[0.9, 1.1].  The first run of a machine builds its core (about a minute at the
quick profile, more for W = 4).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import npu._threads  # noqa: F401  (before numpy loads OpenBLAS: see npu/_threads.py)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MACHINES = ("1x2", "2x4", "2x8", "4x8", "4x16")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", action="append", metavar="WxT",
                        help=f"write_ports x tiles [x lanes] on tiny (repeatable; default {' '.join(DEFAULT_MACHINES)})")
    args = parser.parse_args(argv)
    os.environ.setdefault("NPU_RTL_PROFILE", "quick")
    sys.path.insert(0, str(ROOT / "tests" / "hdl"))
    from tb_core import AXI_RAM_LATENCY, programs

    from hdl.core import run_program
    from npu.sim import simulate

    bad = 0
    for machine in args.machine or DEFAULT_MACHINES:
        w, t, *lanes = (int(v) for v in machine.lower().split("x"))
        fields = {"write_ports": w, "tiles": t, **({"lanes": lanes[0]} if lanes else {})}
        label = f"W={w} tiles={t}" + (f" lanes={lanes[0]}" if lanes else "")
        start = time.perf_counter()
        ratios = []
        for name, words, image, cfg in programs(**fields):
            same_memory = cfg.replace(dram_latency_ns=AXI_RAM_LATENCY * 1000.0 / cfg.clock_mhz)
            sim = simulate(words, same_memory, dram=image, mode="full")
            size = int(sim.machine.dram.data.size)
            run = run_program(words, image + bytes(max(0, size - len(image))), cfg, max_cycles=3_000_000)
            same = run.dram[:size] == sim.dram(0, size)
            ratio = run.cycles / sim.stats.total_cycles
            ratios.append(ratio)
            ok = same and abs(ratio - 1) <= 0.10
            bad += not ok
            print(f"{label} {name:13s} RTL {run.cycles:6d} simulator {sim.stats.total_cycles:6d} "
                  f"{ratio:.3f}x {'bit-exact' if same else 'DRAM DIFFERS'}{'' if ok else '  <- FAIL'}", flush=True)
        print(f"{label}: ratios {min(ratios):.3f}-{max(ratios):.3f}x "
              f"({time.perf_counter() - start:.0f} s with the build)", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
