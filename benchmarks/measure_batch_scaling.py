"""Batch scoring throughput on 1 and 2 Dask workers: the same job, measured in the same run.

    .venv/bin/python benchmarks/measure_batch_scaling.py                       # resnet_small, 32 px chips
    .venv/bin/python benchmarks/measure_batch_scaling.py --chips 3072 --workers 1,2,4
    .venv/bin/python benchmarks/measure_batch_scaling.py --model resnet50 --config bw-s10 --chips 64

A headless featurizer is compiled, a raster of ``--chips`` chips (the model's
input side each, random pixels) is written as a GeoTIFF, and ``run_batch``
scores it with a fresh output directory and a fresh LocalCluster for each
worker count.  The table gives the wall-clock rate (cluster start included)
and the steady rate (chips committed after the first task finished, over the
time to the last), the summed read + preprocess and scoring seconds, and the
simulated NPU's images/s per device beside the published ~381 (the Azure
land-cover run: about 305,000 images/s on 800 FPGAs).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import npu._threads  # noqa: F401  (before numpy loads OpenBLAS: see npu/_threads.py)

import numpy as np


def _program(model: str, config: str, precision: str, out: Path) -> tuple[Path, int]:
    from compiler.compile import compile_model
    from compiler.models import nets

    onnx_model = nets.MODELS[model](headless=True)
    side = onnx_model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value
    path = out / f"{model}.npuz"
    compile_model(onnx_model, config, precision, preprocess={"crop": side, "resize": side}).program.save(path)
    return path, side


def _raster(path: Path, chips: int, side: int) -> None:
    import rasterio
    from rasterio.transform import Affine

    cols = max(1, int(math.sqrt(chips)))
    rows = math.ceil(chips / cols)
    data = np.random.default_rng(0).integers(0, 256, (3, rows * side, cols * side), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=cols * side, height=rows * side, count=3, dtype="uint8",
                       crs="EPSG:32610", transform=Affine(0.6, 0, 500000, 0, -0.6, 4200000), tiled=True,
                       blockxsize=256, blockysize=256) as dst:
        dst.write(data)


def measure(program: Path, raster: Path, side: int, workers: int, chunk: int, mode: str, work: Path) -> dict:
    from runtime.batch import run_batch

    marks: list[tuple[float, int]] = []
    work.mkdir(parents=True, exist_ok=True)
    report = run_batch(program, [raster], work / f"out-{workers}", chip=side, chunk_size=chunk, workers=workers,
                       mode=mode, progress=lambda done, total, info: marks.append((time.perf_counter(), done)))
    first = next((m for m in marks if m[1] > 0), marks[-1])
    steady = (marks[-1][1] - first[1]) / (marks[-1][0] - first[0]) if marks[-1][0] > first[0] else float("nan")
    return {"workers": workers, "chips": report.scored_chips, "wall_s": report.wall_s, "startup_s": report.startup_s,
            "chips_per_s": report.chips_per_s, "steady_chips_per_s": steady, "read_pre_s": report.read_preprocess_s,
            "score_s": report.score_s, "npu_images_per_s": report.npu_images_per_s, "config": report.config}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet_small", help="headless featurizer from compiler.models.nets "
                   "(default resnet_small: 32 px chips)")
    p.add_argument("--config", default="tiny", help="machine preset (default tiny)")
    p.add_argument("--precision", default="ms-fp9")
    p.add_argument("--chips", type=int, default=1536, help="chips in the job (default 1536)")
    p.add_argument("--chunk-size", type=int, default=32)
    p.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    p.add_argument("--mode", default="functional", choices=("functional", "full"))
    p.add_argument("--repeat", type=int, default=1, help="runs per worker count, interleaved; the best is shown")
    args = p.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="batch-scaling-") as tmp:
        work = Path(tmp)
        program, side = _program(args.model, args.config, args.precision, work)
        raster = work / "scene.tif"
        _raster(raster, args.chips, side)
        runs: dict[int, list[dict]] = {w: [] for w in counts}
        for k in range(args.repeat):                 # interleaved, so a change in the machine's load hits all alike
            for w in counts:
                runs[w].append(measure(program, raster, side, w, args.chunk_size, args.mode, work / f"r{k}"))
        rows = [max(runs[w], key=lambda r: r["steady_chips_per_s"]) for w in counts]
    base = rows[0]
    print(f"\n{args.model} ({args.precision}, {rows[0]['config']}), {rows[0]['chips']} chips of {side} px, "
          f"chunks of {args.chunk_size}, {args.mode} simulation, {os.cpu_count()} CPUs, best of {args.repeat}\n")
    print("| workers | wall s | start s | chips/s (wall) | chips/s (steady) | speed-up (steady) | "
          "read+preprocess s | scoring s | sim. NPU images/s/device | published images/s/device |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {r['wall_s']:.1f} | {r['startup_s']:.1f} | {r['chips_per_s']:.1f} | "
              f"{r['steady_chips_per_s']:.1f} | {r['steady_chips_per_s'] / base['steady_chips_per_s']:.2f}x | "
              f"{r['read_pre_s']:.2f} | {r['score_s']:.1f} | {r['npu_images_per_s']:,.0f} | ~381 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
