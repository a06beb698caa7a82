"""What reading the next chain's weights ahead is worth: ResNet-50 runs with and without it, in turn.

    .venv/bin/python benchmarks/measure_weights_ahead.py              # 40 runs each
    .venv/bin/python benchmarks/measure_weights_ahead.py --flush      # each run after a write over 64 MB
    .venv/bin/python benchmarks/measure_weights_ahead.py --touch      # the bound: weights touched first

Compiles ResNet-50 for bw-s10 in mxfp8 and runs one request at a time as a
serving session does (``hostio.run_on_simulator``), alternating runs whose
E4M3 chain kernels get the next chain's weights as ``ahead`` (what the
machine passes) with runs whose kernels get none (the call is wrapped to
pass an empty array), each run 30 ms after the last.  With ``--touch`` the
runs without also read each kernel's own weights just before it, outside
the time taken: what the chains would take with their weights in the
caches.  Prints for each the best and median chain-kernel time and run
time, and the median over the pairs of (without / with) chain time.
"""
from __future__ import annotations

import argparse
import time

import npu._threads  # noqa: F401  (before numpy loads OpenBLAS: see npu/_threads.py)

import numpy as np

from compiler.compile import compile_model
from compiler.models import nets
from npu.hostio import run_on_simulator
from npu.numerics import fused

#: Positions of the chain's packed weights and of ``ahead`` among ``fused.chain_e4m3``'s arguments.
WEIGHTS_ARG, AHEAD_ARG = 15, 28
#: Bytes written over before each run with ``--flush`` (the host's L3 is 32 MB).
FLUSH_BYTES = 64 << 20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="runs with and runs without (each)")
    parser.add_argument("--flush", action="store_true", help="write over 64 MB before each run")
    parser.add_argument("--touch", action="store_true",
                        help="runs without ahead read each kernel's weights first (untimed)")
    args = parser.parse_args(argv)
    if not fused.AVAILABLE:
        print("this host has no AVX-512 VNNI: the fused chain kernels do not run here")
        return 1
    compiled = compile_model(nets.MODELS["resnet50"](), "bw-s10", "mxfp8")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    real = fused.chain_e4m3
    nothing = np.zeros(0, np.uint8)
    state = {"ahead": True, "spent": 0.0}

    def kernel(*call):
        if not state["ahead"]:
            call = call[:AHEAD_ARG] + (nothing,) + call[AHEAD_ARG + 1:]
            if args.touch:
                int(call[WEIGHTS_ARG].view(np.uint8)[::64].max())
        t0 = time.perf_counter()
        done = real(*call)
        state["spent"] += time.perf_counter() - t0
        return done

    fused.chain_e4m3 = kernel
    junk = np.zeros(FLUSH_BYTES if args.flush else 0, np.uint8)
    chains: dict[bool, list[float]] = {True: [], False: []}
    runs: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(3):
            run_on_simulator(compiled.program, {"data": x})
        for i in range(args.runs):
            for ahead in ((True, False) if i % 2 == 0 else (False, True)):
                state["ahead"], state["spent"] = ahead, 0.0
                junk[::64] += 1
                time.sleep(0.03)
                t0 = time.perf_counter()
                run_on_simulator(compiled.program, {"data": x})
                runs[ahead].append(time.perf_counter() - t0)
                chains[ahead].append(state["spent"])
    finally:
        fused.chain_e4m3 = real
    for ahead in (True, False):
        c, r = np.array(chains[ahead]) * 1e3, np.array(runs[ahead]) * 1e3
        label = "with ahead" if ahead else ("weights touched" if args.touch else "without ahead")
        print(f"{label:15s}: chain kernels best {c.min():.2f} ms, median "
              f"{np.median(c):.2f} ms; runs best {r.min():.2f} ms, median {np.median(r):.2f} ms")
    ratio = np.median(np.array(chains[False]) / np.array(chains[True]))
    other = "touched" if args.touch else "without"
    print(f"chain kernels {other} / with ahead, median over the pairs: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
