"""Batch scoring memory as the raster grows: peak RSS of the Dask workers, the client and the scheduler.

    .venv/bin/python benchmarks/measure_batch_memory.py                       # 1024 and 4096 px: 1,024 vs 16,384 chips
    .venv/bin/python benchmarks/measure_batch_memory.py --sides 512,2048 --json
    .venv/bin/python benchmarks/measure_batch_memory.py --sides 1024,2048,4096 --chunk-size 8

A headless featurizer is compiled once (default resnet_small on ``tiny`` at
ms-fp9: 32 px chips) and, for each raster side in ``--sides``, a square
3-band tiled GeoTIFF of that side is written strip by strip through rasterio
windows (smooth, cheap gradients: the benchmark never holds the raster, so
it stays flat itself).  Each size then runs in its own fresh processes, so
no two sizes share a peak:

* a *host* subprocess starts ``distributed.LocalCluster(n_workers=2,
  threads_per_worker=1, processes=True)`` (the scheduler and the nannies live in it; worker
  processes under nannies) and, once the job is over, collects each worker's
  peak with ``client.run`` and its own (the scheduler's process) peak;
* a *client* subprocess of the host calls ``runtime.batch.run_batch`` with
  the scheduler's address and reports its own peak.

A peak is the process's own high-water RSS, ``VmHWM`` from /proc/self/status
(``ru_maxrss`` where there is no /proc).  ``getrusage().ru_maxrss`` is not
used for the host and client: Linux carries the exec-ing parent's peak into
it, so a fresh subprocess's ru_maxrss starts at its parent's (see
:func:`_peak_kib`); the workers' ru_maxrss is collected too (``--json``) and
equals their VmHWM.

The table gives, per size, the raster's pixels and bytes, chips and tasks,
wall time and chips/s (run_batch's wall time, checks and timing run
included), and the peak RSS of the larger worker, of the client and of the
scheduler's process, each also as a ratio to the first size beside the
ratio of raster pixels.  Flat memory means peaks near 1.00x while the raster
grows 16x.  ``--json`` prints the rows as JSON instead (tests/test_batch_memory.py).

What still grows is per *task* (chips / chunk size), not per pixel, and is
small at the default chunk of 32: ``run_batch`` submits every task at once,
so the client holds a future and an ``as_completed`` watcher for each (about
8.6 KiB a task) and the scheduler a task state for each (2-3 KiB); a small
``--chunk-size`` (e.g. 2) makes it visible.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import npu._threads  # noqa: F401  (before numpy loads OpenBLAS: see npu/_threads.py)

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:                    # run as a script: the repository's packages
    sys.path.insert(0, str(ROOT))

STRIP = 256                                      # rows per write; also the GeoTIFF's tile side


def _maxrss_kib() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss``: KiB on Linux, but floored at the exec-ing parent's peak (see _peak_kib)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_kib() -> int:
    """This process's own peak resident set size in KiB: ``VmHWM`` of /proc/self/status, else ru_maxrss.

    On Linux ru_maxrss is not the process's own: exec() keeps the larger of the new image's peak and the
    peak of the process that called it, and Python starts subprocesses with vfork + exec, so a fresh
    subprocess's ru_maxrss starts at its parent's peak (measured: a child of a 426 MB parent reports
    426 MB, VmHWM 11 MB).  VmHWM is the high-water mark of the process's own address space.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return _maxrss_kib()


def _program(model: str, config: str, precision: str, out: Path) -> tuple[Path, int]:
    """The headless featurizer, compiled as the scaling benchmark compiles it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from measure_batch_scaling import _program as compile_featurizer

    return compile_featurizer(model, config, precision, out)


def _raster(path: Path, side: int) -> None:
    """A side x side, 3-band tiled GeoTIFF of smooth gradients, written one strip of STRIP rows at a time."""
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    ramp = lambda a, b, k: ((np.arange(a, b) // k) % 256).astype(np.uint8)   # noqa: E731  (wraps every 256 k px)
    x4, x8 = ramp(0, side, 4), ramp(0, side, 8)
    # GDAL keeps written tiles in its block cache until it is full (default 5 % of RAM): a small cache keeps
    # the writer's memory to about one strip whatever the raster's size
    with rasterio.Env(GDAL_CACHEMAX=16), \
            rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8",
                          crs="EPSG:32610", transform=Affine(0.6, 0, 500000, 0, -0.6, 4200000), tiled=True,
                          blockxsize=STRIP, blockysize=STRIP) as dst:
        strip = np.empty((3, STRIP, side), np.uint8)                 # one strip of tiles, reused
        for top in range(0, side, STRIP):
            h = min(STRIP, side - top)
            s = strip[:, :h]
            s[0] = x4                                                # red: ramp along x
            s[1] = ramp(top, top + h, 4)[:, None]                    # green: ramp along y
            np.add(x8, ramp(top, top + h, 8)[:, None], out=s[2])     # blue: diagonal ramp (uint8, wraps)
            dst.write(s, window=Window(0, top, side, h))


# --------------------------------------------------------------------------------------------- one size


def _client_main(cfg: dict) -> int:
    """In the client subprocess: run_batch against the host's scheduler; print JSON with this process's peak."""
    from runtime.batch import run_batch

    before = _peak_kib()
    report = run_batch(cfg["program"], [cfg["raster"]], cfg["out"], scheduler=cfg["scheduler"], chip=cfg["chip"],
                       chunk_size=cfg["chunk_size"], mode=cfg["mode"])
    print(json.dumps({"chips": report.scored_chips, "tasks": report.tasks, "wall_s": report.wall_s,
                      "startup_s": report.startup_s, "chips_per_s": report.chips_per_s, "workers": report.workers,
                      "client_peak_kib": _peak_kib(), "client_imports_kib": before,
                      "client_maxrss_kib": _maxrss_kib()}))
    return 0


def _host_main(cfg: dict) -> int:
    """In the host subprocess: a fresh LocalCluster, the client as a child process, then every process's peak."""
    from distributed import Client, LocalCluster

    env = {"NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS") or "1"}   # as runtime.batch's own cluster
    with LocalCluster(n_workers=cfg["workers"], threads_per_worker=1, processes=True, dashboard_address=None,
                      env=env) as cluster, Client(cluster) as client:
        client.wait_for_workers(cfg["workers"], timeout=120)
        workers_before = client.run(_peak_kib)
        host_before = _peak_kib()
        child = subprocess.run([sys.executable, __file__, "--_client", json.dumps({**cfg,
                                "scheduler": cluster.scheduler_address})], stdout=subprocess.PIPE, text=True)
        if child.returncode:
            raise SystemExit(f"the client run failed (exit {child.returncode})")
        row = json.loads(child.stdout.strip().splitlines()[-1])
        host_after = _peak_kib()                 # before anything else runs here: the scheduler's peak over the job
        workers_after = client.run(_peak_kib)
        workers_maxrss = client.run(_maxrss_kib)    # getrusage's figure too: a worker is not exec'd by a big parent
        tasks_left = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    row.update(worker_peak_kib=sorted(workers_after.values()), worker_maxrss_kib=sorted(workers_maxrss.values()),
               worker_start_kib=sorted(workers_before.values()),
               scheduler_peak_kib=host_after, scheduler_start_kib=host_before, scheduler_tasks_left=tasks_left)
    print(json.dumps(row))
    return 0


def measure(program: Path, side: int, chip: int, chunk_size: int, mode: str, work: Path, workers: int = 2) -> dict:
    """Write a side x side raster, score it in fresh host + client processes, and return their peaks (KiB)."""
    raster = work / f"scene-{side}.tif"
    _raster(raster, side)
    try:
        cfg = {"program": str(program), "raster": str(raster), "out": str(work / f"out-{side}"), "chip": chip,
               "chunk_size": chunk_size, "mode": mode, "workers": workers}
        t0 = time.perf_counter()
        host = subprocess.run([sys.executable, __file__, "--_host", json.dumps(cfg)], stdout=subprocess.PIPE,
                              text=True)
        if host.returncode:
            raise SystemExit(f"the run at {side} px failed (exit {host.returncode})")
        row = json.loads(host.stdout.strip().splitlines()[-1])
        row.update(side=side, pixels=side * side, raster_bytes=raster.stat().st_size,
                   total_s=time.perf_counter() - t0)
    finally:
        raster.unlink(missing_ok=True)
    return row


# --------------------------------------------------------------------------------------------- the table


def _mb(kib: float) -> float:
    return kib / 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet_small", help="headless featurizer from compiler.models.nets "
                   "(default resnet_small: 32 px chips)")
    p.add_argument("--config", default="tiny", help="machine preset (default tiny)")
    p.add_argument("--precision", default="ms-fp9")
    p.add_argument("--sides", default="1024,4096", help="raster sides in pixels, comma-separated (default "
                   "1024,4096: 16x the pixels)")
    p.add_argument("--chunk-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2, one thread each)")
    p.add_argument("--mode", default="functional", choices=("functional", "full"))
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    p.add_argument("--_host", help=argparse.SUPPRESS)
    p.add_argument("--_client", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._client:
        return _client_main(json.loads(args._client))
    if args._host:
        return _host_main(json.loads(args._host))
    sides = [int(s) for s in args.sides.split(",")]
    with tempfile.TemporaryDirectory(prefix="batch-memory-") as tmp:
        work = Path(tmp)
        program, chip = _program(args.model, args.config, args.precision, work)
        rows = [measure(program, s, chip, args.chunk_size, args.mode, work, args.workers) for s in sides]
    if args.json:
        print(json.dumps({"model": args.model, "chip": chip, "chunk_size": args.chunk_size, "rows": rows}))
        return 0
    base = rows[0]
    print(f"\n{args.model} ({args.precision}, {args.config}), {chip} px chips in tasks of {args.chunk_size}, "
          f"{args.mode} simulation, {args.workers} worker processes x 1 thread, {os.cpu_count()} CPUs; "
          f"each size in fresh processes\n")
    print("| raster px | pixels | raster MB | chips | tasks | wall s | chips/s | worker peak MB (max) | "
          "client peak MB | scheduler peak MB | pixels vs first | worker peak vs first | client peak vs first | "
          "scheduler peak vs first |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        w, bw = max(r["worker_peak_kib"]), max(base["worker_peak_kib"])
        print(f"| {r['side']:,} | {r['pixels']:,} | {r['raster_bytes'] / 1e6:.1f} | {r['chips']:,} | "
              f"{r['tasks']:,} | {r['wall_s']:.1f} | {r['chips_per_s']:.1f} | {_mb(w):.1f} | "
              f"{_mb(r['client_peak_kib']):.1f} | {_mb(r['scheduler_peak_kib']):.1f} | "
              f"{r['pixels'] / base['pixels']:.0f}x | {w / bw:.2f}x | "
              f"{r['client_peak_kib'] / base['client_peak_kib']:.2f}x | "
              f"{r['scheduler_peak_kib'] / base['scheduler_peak_kib']:.2f}x |")
    print("\nPeaks are each process's own high-water RSS (VmHWM; ru_maxrss would start at the parent's peak) "
          "over its life: imports, program load and Numba compilation included.  Over the job itself:")
    for r in rows:
        print(f"  {r['side']:,} px: workers {' / '.join(f'{_mb(a):.1f}' for a in r['worker_start_kib'])} MB at "
              f"start -> {' / '.join(f'{_mb(a):.1f}' for a in r['worker_peak_kib'])} MB; client "
              f"{_mb(r['client_imports_kib']):.1f} MB after imports -> {_mb(r['client_peak_kib']):.1f} MB; "
              f"scheduler process {_mb(r['scheduler_start_kib']):.1f} -> {_mb(r['scheduler_peak_kib']):.1f} MB; "
              f"{r['scheduler_tasks_left']} tasks left on the scheduler")
    return 0


if __name__ == "__main__":
    sys.exit(main())
