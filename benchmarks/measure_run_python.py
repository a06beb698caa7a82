"""What a ResNet-50 run spends around its fused chain kernels: Python and the small kernels, by op kind.

    .venv/bin/python benchmarks/measure_run_python.py                  # mxfp8
    .venv/bin/python benchmarks/measure_run_python.py --precision ms-fp9 --runs 50

Compiles ResNet-50 for bw-s10 and runs one request several times as a
serving session does (``hostio.run_on_simulator``), then runs it again with
the fused chain kernel (``fused.chain_e4m3`` or ``fused.chain_int8``)
replaced by a call that does nothing.  It prints the best full run, the
best and the mean run without the chain kernels, and that mean split
over the kinds of op ``Machine.execute`` ran (the rest: the input's
packing, the machine's set-up, thread placement, the output), each run
started 30 ms after the last so the kernel threads have gone idle, as in
a serving session between requests.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import npu._threads  # noqa: F401  (before numpy loads OpenBLAS: see npu/_threads.py)

import numpy as np

from compiler.compile import compile_model
from compiler.models import nets
from npu.hostio import run_on_simulator
from npu.numerics import fused
from npu.sim import machine
from npu.sim.program import ChainOp

KERNELS = {"mxfp8": "chain_e4m3", "ms-fp9": "chain_int8"}


def op_kind(op) -> str:
    """A short name for what kind of op ``op`` is."""
    if isinstance(op, ChainOp):
        if op.mbase is not None:
            return "MVU chain"
        return "vector copy" if op.reduce == "none" and not op.mfu else f"vector chain ({op.reduce})"
    return op.mnemonic


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=sorted(KERNELS), default="mxfp8")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    compiled = compile_model(nets.MODELS["resnet50"](), "bw-s10", args.precision)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)

    def timed_runs() -> list[float]:
        times = []
        for _ in range(args.runs):
            time.sleep(0.03)
            t0 = time.perf_counter()
            run_on_simulator(compiled.program, {"data": x})
            times.append(time.perf_counter() - t0)
        return times

    for _ in range(3):
        run_on_simulator(compiled.program, {"data": x})
    full = min(timed_runs())
    spent: dict = defaultdict(float)
    real_kernel, real_execute = getattr(fused, KERNELS[args.precision]), machine.Machine.execute

    def execute(self, op):
        t0 = time.perf_counter()
        real_execute(self, op)
        spent[op_kind(op)] += time.perf_counter() - t0

    setattr(fused, KERNELS[args.precision], lambda *a: True)
    machine.Machine.execute = execute
    try:
        times = timed_runs()
    finally:
        setattr(fused, KERNELS[args.precision], real_kernel)
        machine.Machine.execute = real_execute
    mean = sum(times) / len(times)
    print(f"ResNet-50 {args.precision}: best run {full * 1e3:.2f} ms; without the chain kernels best "
          f"{min(times) * 1e3:.2f} ms, mean {mean * 1e3:.2f} ms, of which (mean):")
    for kind, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:24s} {seconds / len(times) * 1e3:6.3f} ms")
    print(f"  {'(the rest)':24s} {(mean - sum(spent.values()) / len(times)) * 1e3:6.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
