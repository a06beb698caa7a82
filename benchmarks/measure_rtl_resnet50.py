"""A whole ResNet-50 co-simulated: the RTL core (Verilator fast path) against the simulator, on a photograph.

    .venv/bin/python benchmarks/measure_rtl_resnet50.py                 # the N = 64 machine
    .venv/bin/python benchmarks/measure_rtl_resnet50.py --machine n32   # tiny's N = 32 core, bigger memories
    .venv/bin/python benchmarks/measure_rtl_resnet50.py --no-session    # skip the runtime Session check

ResNet-50 does not fit the ``tiny`` preset's memories; it is compiled (ms-fp9
weights and activations, fp16 MFUs) for tiny with bigger memories: ``n64`` has
N = 64 with 4 tile engines of 16 lanes (about 1.7 M cycles), ``n32`` keeps
tiny's N = 32 core (about 8.3 M cycles).  The chelsea photograph, preprocessed
with the program's recipe, goes into the DRAM image; the RTL core runs the
program on it (hdl.core.run_program: C++ testbench and AXI RAM model, no Python
per cycle) and the simulator runs it in full mode on the same image, with its
DRAM latency set to the AXI RAM model's (3 cycles from a read address to its
first beat, as tests/hdl/tb_core.py does).  Every byte of the simulator's DRAM
and every output tensor must be the same on both; the RTL's cycle count must
be within 10 % of the simulator's.  Then ``runtime.Session(program,
backend="rtl")`` scores the photograph and its output must equal the
simulator session's.  Each step's wall time is printed; the co-simulation (RTL
run and simulator run) must take under 30 minutes.  Exits non-zero when any
check fails.
"""
from __future__ import annotations

import argparse
import sys
import time

import npu._threads  # noqa: F401  (before numpy loads OpenBLAS: see npu/_threads.py)

import numpy as np

#: Machines ResNet-50 compiles on: tiny with these fields changed.
MACHINES = {
    "n64": dict(native_dim=64, tiles=4, lanes=16, vrf_depth=32768, mrf_tiles=512, dram_bytes=1 << 26),
    "n32": dict(vrf_depth=65536, mrf_tiles=1024, dram_bytes=1 << 26),
}
#: Cycles from a read address to its first data beat in the AXI RAM model (tests/hdl/tb_core.py).
AXI_RAM_LATENCY = 3
#: Longest co-simulation allowed (seconds).
BUDGET_S = 30 * 60


def machine(name: str):
    """The ResNet-50 machine called ``name`` (a key of MACHINES)."""
    from npu.config import load_config

    return load_config("tiny").replace(name=f"tiny-resnet50-{name}", **MACHINES[name])


def _timed(label: str, fn):
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    print(f"{label}: {seconds:.1f} s", flush=True)
    return out, seconds


def _first_difference(a: bytes, b: bytes) -> str:
    diff = np.flatnonzero(np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8))
    return f"{len(diff)} bytes differ, the first at {int(diff[0]):#x}"


def main(argv=None) -> int:
    """Compile, co-simulate and compare; print the figures; 0 when every check passes."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--machine", choices=sorted(MACHINES), default="n64")
    ap.add_argument("--photo", default="chelsea")
    ap.add_argument("--no-session", action="store_true", help="skip the runtime Session(backend='rtl') check")
    args = ap.parse_args(argv)

    from compiler.compile import compile_model
    from compiler.models import nets
    from compiler.models.photos import load_photos
    from hdl.core import core_parameters, run_program
    from hdl.fast import build
    from npu.hostio import dram_image_with_inputs, unpack_output
    from npu.sim import simulate

    cfg = machine(args.machine)
    core_parameters(cfg)                                   # UnsupportedConfig before any work
    compiled, _ = _timed(f"compile ResNet-50 for {cfg.name}", lambda: compile_model(nets.resnet50(), cfg, "ms-fp9"))
    program = compiled.program
    (inp,) = program.inputs
    photo = dict(load_photos([args.photo]))[args.photo]
    x = program.metadata.preprocess.array(photo)
    image = bytes(dram_image_with_inputs(program, {inp.name: x}))
    _timed("build the fast RTL model (cached after the first time)", lambda: build(cfg))

    rtl, rtl_s = _timed("RTL run (fast path)", lambda: run_program(program.words, image, cfg))
    same_memory = cfg.replace(dram_latency_ns=AXI_RAM_LATENCY * 1000.0 / cfg.clock_mhz)
    sim, sim_s = _timed("simulator run (full mode)", lambda: simulate(program, same_memory, dram=image, mode="full"))

    failures = []
    size = int(sim.machine.dram.data.size)
    want = sim.dram(0, size)
    whole = rtl.dram[:size] == want
    if not whole:
        failures.append(f"DRAM: {_first_difference(rtl.dram[:size], want)}")
    for d in program.outputs:
        got, ref = rtl.dram[d.daddr:d.daddr + d.nbytes], want[d.daddr:d.daddr + d.nbytes]
        if got != ref:
            failures.append(f"output {d.name}: {_first_difference(got, ref)}")
    sim_cycles = sim.stats.total_cycles
    ratio = rtl.cycles / sim_cycles
    if abs(ratio - 1) > 0.10:
        failures.append(f"RTL cycles {rtl.cycles} are {ratio:.3f}x the simulator's {sim_cycles}")
    cosim_s = rtl_s + sim_s
    if cosim_s > BUDGET_S:
        failures.append(f"the co-simulation took {cosim_s:.0f} s, over {BUDGET_S} s")
    top = {d.name: int(np.argmax(unpack_output(d, rtl.dram[d.daddr:d.daddr + d.nbytes]))) for d in program.outputs}

    print(f"\nResNet-50 on {cfg.name} (N={cfg.native_dim}, tiles={cfg.tiles}, lanes={cfg.lanes}), "
          f"photograph {args.photo}, {len(program.words) // 16} instructions, {len(image):,} B DRAM image")
    print(f"  RTL: {rtl.cycles:,} cycles in {rtl_s:.1f} s = {rtl.cycles / rtl_s:,.0f} cycles/s")
    print(f"  simulator (full, DRAM latency {AXI_RAM_LATENCY} cycles): {sim_cycles:,} cycles in {sim_s:.1f} s; "
          f"RTL/simulator {ratio:.4f}")
    print(f"  DRAM bit-exact: {'yes' if whole else 'no'} ({size:,} bytes); outputs bit-exact: "
          f"{'yes' if not any(f.startswith('output') for f in failures) else 'no'}; top class {top}")
    print(f"  co-simulation wall time {cosim_s:.1f} s (RTL {rtl_s:.1f} s + simulator {sim_s:.1f} s)")

    if not args.no_session:
        from runtime import Session

        scored, session_s = _timed("Session(program, backend='rtl').score_numpy_array",
                                   lambda: Session(program, backend="rtl").score_numpy_array(x))
        reference = Session(program).score_numpy_array(x)
        same = np.array_equal(np.asarray(scored.output), np.asarray(reference.output))
        print(f"  Session(backend='rtl'): {scored.stats.cycles:,} cycles, output equal to the simulator "
              f"session's: {'yes' if same else 'no'}")
        if not same:
            failures.append("the rtl Session's output differs from the simulator Session's")
        if scored.stats.cycles != rtl.cycles:
            failures.append(f"the rtl Session counted {scored.stats.cycles} cycles, run_program {rtl.cycles}")

    for f in failures:
        print(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
