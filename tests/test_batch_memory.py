"""Batch scoring memory stays flat as the raster grows (benchmarks/measure_batch_memory.py at two small sizes).

A 512 px and a 2048 px GeoTIFF (256 and 4,096 chips of 32 px: 16x the pixels) are scored by ``run_batch`` on a
fresh LocalCluster of two single-thread worker processes each, every size in its own subprocesses; the peak RSS of
each worker and of the client of the large run must stay within 1.25x (+ 30 MB) of the small run's.  Measured on
2 cores: workers 1.01-1.02x, client 1.01x (a few MB), 25 s in all (56 s beside other jobs).
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")
pytest.importorskip("rasterio")
pytest.importorskip("pyarrow")

ROOT = Path(__file__).resolve().parents[1]
SLACK_KIB = 30 * 1024
RATIO = 1.25


@pytest.mark.slow
def test_batch_memory_is_flat_as_the_raster_grows():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "measure_batch_memory.py"), "--sides",
                          "512,2048", "--chunk-size", "32", "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    data = json.loads(run.stdout.strip().splitlines()[-1])
    assert data["chip"] == 32
    small, large = data["rows"]
    assert large["pixels"] == 16 * small["pixels"]
    assert (small["chips"], large["chips"]) == (256, 4096)
    assert len(small["worker_peak_kib"]) == len(large["worker_peak_kib"]) == 2
    assert large["scheduler_tasks_left"] == 0
    for what in ("worker", "client"):
        peak = lambda r: max(r["worker_peak_kib"]) if what == "worker" else r["client_peak_kib"]  # noqa: E731
        limit = RATIO * peak(small) + SLACK_KIB
        assert peak(large) <= limit, (f"{what} peak {peak(large) / 1024:.1f} MB at 2048 px vs "
                                      f"{peak(small) / 1024:.1f} MB at 512 px (limit {limit / 1024:.1f} MB)")
