"""ResNet-50's fused MVU chains alone: one inference's chain kernel calls, replayed in-process.

    .venv/bin/python benchmarks/measure_fused_chains.py                       # mxfp8, 1 and 2 threads
    .venv/bin/python benchmarks/measure_fused_chains.py --precision ms-fp9 --rounds 9
    .venv/bin/python benchmarks/measure_fused_chains.py --flush              # each call after a cache flush
    .venv/bin/python benchmarks/measure_fused_chains.py --no-convert         # E4M3 input conversion left out

Compiles ResNet-50 for bw-s10, runs it once on the simulator to warm it,
then once more recording the arguments of every fused chain kernel call
(``fused.chain_e4m3`` for mxfp8, ``fused.chain_int8`` for ms-fp9).  Each
call is then replayed on its own, best of ``--rounds``, on each thread
count, the calling thread and its kernel threads placed as a run places
them (``npu.sim.placement``); the sums are printed with the dot-product
instructions the E4M3 calls issue (``vpdpwssd``: micro tiles of 6 rows).
The figure is the chains' share of a run without the rest of it (MFU-only
chains, Python; the ms-fp9 input conversion, which runs before its chain
kernel, while the E4M3 kernel converts its own input), and without the
misses of a run whose weights stream once: a lower bound on their time in
a run.  With ``--flush`` each timed call follows a write over 64 MB (more
than the caches), so weights, inputs and the call's buffers come from
memory, as in a run they partly do.  With ``--no-convert`` the timed E4M3
calls reuse the input conversion an untimed call made, so the difference to
a run without it is what converting the inputs costs.
"""
from __future__ import annotations

import argparse
import time

import npu._threads  # noqa: F401  (before numpy loads OpenBLAS: see npu/_threads.py)

import numba
import numpy as np

from compiler.compile import compile_model
from compiler.models import nets
from npu.hostio import dram_image_with_inputs
from npu.numerics import fused
from npu.sim import placement, simulate

KERNELS = {"mxfp8": "chain_e4m3", "ms-fp9": "chain_int8"}
#: Bytes written over before each timed call with ``--flush`` (the host's L3 is 32 MB).
FLUSH_BYTES = 64 << 20


def recorded_calls(precision: str) -> list[tuple]:
    """The argument tuples of one ResNet-50 inference's fused chain calls (arrays copied)."""
    compiled = compile_model(nets.MODELS["resnet50"](), "bw-s10", precision)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    image = dram_image_with_inputs(compiled.program, {"data": x})
    simulate(compiled.program, compiled.config, dram=image)
    name = KERNELS[precision]
    real = getattr(fused, name)
    calls = []

    def record(*args):
        calls.append(tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args))
        return real(*args)

    setattr(fused, name, record)
    try:
        simulate(compiled.program, compiled.config, dram=image)
    finally:
        setattr(fused, name, real)
    return calls


def replay(kernel, calls: list[tuple], threads: int, rounds: int, flush: bool = False, convert: bool = True) -> float:
    """Seconds: the sum over the calls of each one's best time on ``threads`` threads (each timed call after
    a write over :data:`FLUSH_BYTES`, with ``flush``; without ``convert``, E4M3 calls reusing the input
    conversion of the untimed call before them)."""
    numba.set_num_threads(threads)
    junk = np.zeros(FLUSH_BYTES if flush else 0, np.uint8)
    total = 0.0
    with placement.threads_apart():
        for args in calls:
            args = list(args)
            args[-1] = threads
            kernel(*args)
            if not convert and kernel is fused.chain_e4m3:
                args[-2] = False                       # the conversion the call above made
            best = float("inf")
            for _ in range(rounds):
                junk[::64] += 1
                t0 = time.perf_counter()
                kernel(*args)
                best = min(best, time.perf_counter() - t0)
            total += best
    return total


def vpdpwssd_count(calls: list[tuple]) -> int:
    """``vpdpwssd`` instructions of the E4M3 calls (rows padded to micro tiles, as the kernel runs them)."""
    count = 0
    for args in calls:
        aidx, pan_w0, pan_nv, steps = args[12], args[16], args[18], args[19]
        tiles = -(-aidx.shape[0] // fused.MICRO_ROWS)
        count += tiles * fused.MICRO_ROWS * pan_w0.shape[0] * int(pan_nv.sum()) * int(steps.sum())
    return count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=sorted(KERNELS), default="mxfp8")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5, help="timed replays of each call (best taken)")
    parser.add_argument("--flush", action="store_true", help="write over 64 MB before each timed call")
    parser.add_argument("--no-convert", action="store_true",
                        help="E4M3 calls reuse an untimed call's input conversion")
    args = parser.parse_args(argv)
    if not fused.AVAILABLE:
        print("this host has no AVX-512 VNNI: the fused chain kernels do not run here")
        return 1
    calls = recorded_calls(args.precision)
    kernel = getattr(fused, KERNELS[args.precision])
    extra = ""
    if args.precision == "mxfp8":
        extra = f", {vpdpwssd_count(calls) / 1e6:.1f} million vpdpwssd"
    print(f"ResNet-50 {args.precision}: {len(calls)} fused chain calls{extra}")
    for threads in args.threads:
        seconds = replay(kernel, calls, threads, args.rounds, args.flush, not args.no_convert)
        print(f"  {threads} thread(s): {seconds * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
