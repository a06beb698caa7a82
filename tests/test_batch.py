"""Batch scoring on Dask (runtime.batch, ``npu batch``): every chip of rasters through a featurizer and a head.

Small programs (32 x 32 featurizers on the ``tiny`` machine) on small rasters written here (a PNG photo-like
image and a georeferenced GeoTIFF), scored on LocalClusters of one or two worker processes.  The job's rows are
checked against per-chip ``Session``/``Pipeline`` scoring (the simulator in full mode, bit for bit); the output
directory (parts, manifest, job.json) and restarts (skip what is done, refuse other arguments) are checked; and
two crash tests: the whole job SIGKILLed mid-run and started again, and one Dask worker killed mid-task.
"""
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
rasterio = pytest.importorskip("rasterio")
pytest.importorskip("distributed")

from compiler.compile import compile_model                       # noqa: E402
from compiler.models import nets                                 # noqa: E402
from compiler.models.graph import GraphBuilder                   # noqa: E402
from compiler.partition import compile_with_host_fallback        # noqa: E402
from npu_toolkit.cli import main                                 # noqa: E402
from runtime.batch import (BatchError, load_head, read_results, run_batch,  # noqa: E402
                           PUBLISHED_PER_DEVICE)
from runtime.heads import DenseHead, save_head                              # noqa: E402
from runtime.imagery import chip_grid, read_chips                # noqa: E402
from runtime.session import Pipeline, Session                    # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHIP = 32
CHUNK = 2
CLASSES = ["water", "forest", "field", "road", "building"]
KEY_COLUMNS = ["input", "chip", "row", "col", "row_off", "col_off", "height", "width", "transform", "crs"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A featurizer program, a head for it, a PNG and a georeferenced GeoTIFF (79 chips of 32 px in all)."""
    d = tmp_path_factory.mktemp("batch")
    program = d / "featurizer.npuz"
    compile_model(nets.resnet_small(headless=True), "tiny", "ms-fp9",
                  preprocess={"crop": CHIP, "resize": CHIP}).program.save(program)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:200, 0:230]
    photo = np.stack([(xx * 255 // 229), (yy * 255 // 199), ((xx + yy) % 256)], -1).astype(np.uint8)
    photo = np.clip(photo.astype(int) + rng.integers(-30, 30, photo.shape), 0, 255).astype(np.uint8)
    png = d / "photo.png"
    from PIL import Image

    Image.fromarray(photo).save(png)                         # 200 x 230: 7 x 8 = 56 chips, partial at the edges
    tif = d / "scene.tif"
    scene = rng.integers(0, 256, (3, 96, 150), dtype=np.uint8)
    transform = rasterio.transform.Affine(0.6, 0.0, 500000.0, 0.0, -0.6, 4200000.0)
    with rasterio.open(tif, "w", driver="GTiff", width=150, height=96, count=3, dtype="uint8",
                       crs="EPSG:32610", transform=transform) as dst:
        dst.write(scene)                                     # 96 x 150: 3 x 5 = 15 chips
    session = Session(program)
    features = session.outputs[0].shape[0]
    head = d / "head.npz"
    save_head(DenseHead(rng.standard_normal((len(CLASSES), features)).astype(np.float32) * 0.5,
                        rng.standard_normal(len(CLASSES)).astype(np.float32), list(CLASSES)), head)
    return {"dir": d, "program": program, "png": png, "tif": tif, "head": head, "photo": photo, "scene": scene,
            "transform": transform, "features": features}


def _job(files, out, **kw):
    args = dict(head=files["head"], chip=CHIP, chunk_size=CHUNK, features=True, workers=2)
    args.update(kw)
    return run_batch(files["program"], [files["png"], files["tif"]], out, **args)


@pytest.fixture(scope="module")
def finished(files, tmp_path_factory):
    """The job run once, uninterrupted, on two workers."""
    out = tmp_path_factory.mktemp("finished") / "job"
    calls = []
    report = _job(files, out, manifest_interval=0, progress=lambda d, t, info: calls.append((d, t, info)))
    return {"out": out, "report": report, "table": read_results(out), "calls": calls}


def _rows(table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: (r["input"], r["chip"]))


def _parts(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "parts").glob("part-*.parquet")}


def test_rows_equal_per_chip_session_scoring(files, finished):
    rows = _rows(finished["table"])
    session = Session(files["program"])                       # the simulator in full mode
    head = load_head(files["head"])
    pipeline = Pipeline(session, head)
    assert len(rows) == 56 + 15
    for path in (files["png"], files["tif"]):
        grid = chip_grid(path, CHIP)
        keys, chips = read_chips(grid, 0, grid.count)
        mine = [r for r in rows if r["input"] == str(path)]
        assert [r["chip"] for r in mine] == list(range(grid.count))
        for key, rgb, r in zip(keys, chips, mine):
            x = session.preprocess.array(rgb)
            features = session.score_numpy_array(x).output.reshape(-1)
            probs, _ = pipeline.score_numpy_array(x)
            assert np.array_equal(np.array(r["features"], np.float32), features)       # bit for bit
            assert np.array_equal(np.array(r["probabilities"], np.float32), probs.reshape(-1))
            assert r["class"] == int(np.argmax(probs)) and r["label"] == CLASSES[r["class"]]
            assert r["score"] == np.float32(probs.reshape(-1)[r["class"]])
            assert (r["row"], r["col"], r["row_off"], r["col_off"], r["height"], r["width"]) == \
                   (key.row, key.col, key.row_off, key.col_off, key.height, key.width)
            assert r["transform"] == list(key.transform)
    # an interior chip of the PNG is the photo's pixels there: the rows follow the raster
    r = next(r for r in rows if r["input"] == str(files["png"]) and (r["row"], r["col"]) == (2, 3))
    x = session.preprocess.array(np.ascontiguousarray(files["photo"][64:96, 96:128]))
    assert np.array_equal(np.array(r["features"], np.float32), session.score_numpy_array(x).output.reshape(-1))


def test_columns_georeference_and_partial_chips(files, finished):
    table = finished["table"]
    assert table.schema.names == KEY_COLUMNS + ["class", "score", "probabilities", "label", "features"]
    assert str(table.schema.field("transform").type) == "fixed_size_list<element: double>[6]"
    rows = _rows(table)
    tif = [r for r in rows if r["input"] == str(files["tif"])]
    assert {r["crs"] for r in tif} == {"EPSG:32610"}
    assert tif[6]["transform"] == pytest.approx([0.6, 0.0, 500000.0 + 0.6 * 32, 0.0, -0.6, 4200000.0 - 0.6 * 32])
    png = [r for r in rows if r["input"] == str(files["png"])]
    assert {r["crs"] for r in png} == {None}
    last = png[-1]                                             # bottom-right chip: 200 - 192 by 230 - 224 pixels
    assert (last["row"], last["col"], last["height"], last["width"]) == (6, 7, 8, 6)
    assert all(len(r["probabilities"]) == len(CLASSES) and len(r["features"]) == files["features"] for r in rows)


def test_parts_manifest_and_job_record(files, finished):
    out = finished["out"]
    report = finished["report"]
    names = sorted(_parts(out))
    assert len(names) == report.tasks == 28 + 8 and names[0] == "part-00000-000000.parquet"
    assert not [p for p in (out / "parts").iterdir() if p.name.startswith(".")]      # no temporaries left
    for name in names:
        assert pq.read_metadata(out / "parts" / name).num_rows in (1, CHUNK)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["finished_chips"] == 71 and manifest["tasks"] == 36
    assert sorted(Path(c["part"]).name for c in manifest["chunks"]) == names
    assert sum(c["rows"] for c in manifest["chunks"]) == 71
    (run,) = manifest["runs"]
    assert run["status"] == "complete" and len(run["scored"]) == 36 and run["skipped"] == 0
    job = json.loads((out / "job.json").read_text())
    assert job["program"]["path"] == str(files["program"]) and len(job["program"]["sha256"]) == 64
    assert [i["path"] for i in job["inputs"]] == [str(files["png"]), str(files["tif"])]
    assert job["inputs"][0]["size"] == files["png"].stat().st_size
    assert (job["chip"], job["stride"], job["edge"], job["chunk_size"], job["features"]) == (CHIP, CHIP, "pad", 2, True)
    assert len(job["head"]["sha256"]) == 64
    # the report
    assert (report.chips, report.scored_chips, report.skipped, report.failed) == (71, 71, 0, 0)
    assert report.workers == 2 and report.dashboard.startswith("http")
    assert report.score_s > 0 and report.read_s > 0 and report.preprocess_s > 0 and report.chips_per_s > 0
    assert report.npu_latency_us > 0 and report.npu_images_per_s == pytest.approx(1e6 / report.npu_latency_us)
    text = report.table()
    assert "images/s per device" in text and f"~{PUBLISHED_PER_DEVICE:,.0f}" in text and "chips/s" in text
    # each worker process loaded the program once
    assert report.worker_pids and all(loads == 1 for _, _, loads in report.worker_pids)
    # progress: from 0 to every chip
    calls = finished["calls"]
    assert calls[0][0] == 0 and calls[-1][:2] == (71, 71) and calls[-1][2]["tasks_done"] == 36
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


def test_second_run_skips_everything_without_a_cluster(files, finished, monkeypatch):
    import distributed

    def no_cluster(*a, **k):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(distributed, "LocalCluster", no_cluster)
    before = _parts(finished["out"])
    report = _job(files, finished["out"])
    assert (report.skipped, report.scored_tasks, report.scored_chips) == (36, 0, 0)
    assert _parts(finished["out"]) == before
    manifest = json.loads((finished["out"] / "manifest.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["complete", "complete"]
    assert manifest["runs"][1]["scored"] == [] and manifest["runs"][1]["skipped"] == 36


@pytest.mark.parametrize("change, says", [
    ({"chunk_size": 4}, "chunk_size was 2, now 4"),
    ({"features": False}, "features was true, now false"),
    ({"head": None}, "head was"),
    ({"edge": "shift"}, 'edge was "pad", now "shift"'),
])
def test_other_arguments_in_the_same_directory_are_refused(files, finished, monkeypatch, change, says):
    import distributed

    monkeypatch.setattr(distributed, "LocalCluster", lambda *a, **k: pytest.fail("a cluster was started"))
    with pytest.raises(BatchError, match="holds another job") as err:
        _job(files, finished["out"], **change)
    assert says in str(err.value)


def test_lost_parts_and_stale_temporaries(files, finished, tmp_path):
    """A part that vanished is scored again (and only it); temporaries a killed writer left are removed."""
    import shutil

    out = tmp_path / "job"
    shutil.copytree(finished["out"], out)
    job = json.loads((out / "job.json").read_text())
    assert job["program"]["path"] == str(files["program"])
    (out / "parts" / "part-00001-000003.parquet").unlink()
    stale = out / "parts" / ".part-00000-000001.parquet.999-abc.tmp"
    stale.write_bytes(b"half a part")
    before = _parts(out)
    report = _job(files, out, workers=1)
    assert (report.skipped, report.scored_tasks, report.scored_chips) == (35, 1, 2)
    assert not stale.exists()
    after = _parts(out)
    assert {k: v for k, v in after.items() if k in before} == before
    assert _rows(read_results(out)) == _rows(finished["table"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runs"][-1]["scored"] == [[1, 3]] and manifest["runs"][-1]["removed_temporaries"] == 1


@pytest.mark.slow
def test_killed_job_resumes_to_the_uninterrupted_result(files, finished, tmp_path):
    """SIGKILL ``npu batch`` (client, scheduler and workers: the process group) once some parts are committed;
    the same command again finishes the job: rows identical to the uninterrupted run, no chunk scored twice."""
    out = tmp_path / "job"
    cmd = [sys.executable, "-m", "npu_toolkit.cli", "batch", str(files["program"]), str(files["png"]),
           str(files["tif"]), "--out", str(out), "--head", str(files["head"]), "--chip", str(CHIP),
           "--chunk-size", str(CHUNK), "--features", "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob("parts/part-*.parquet"))) < 3:
            assert proc.poll() is None, "npu batch ended before committing a part"
            assert time.monotonic() < deadline, "no part within 60 s"
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.2)                                            # let the killed processes' files settle
    kept = _parts(out)
    assert 0 < len(kept) < 36, f"{len(kept)} parts at the kill"
    done_then = {(int(n[5:10]), int(n[11:17])) for n in kept}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runs"][0]["status"] == "running"          # never finished
    assert {tuple(k) for k in manifest["runs"][0]["scored"]} <= done_then

    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(kept)} tasks" in proc.stdout                 # "already done  N tasks (...) skipped"
    assert "dashboard: http" in proc.stderr and "71/71 chips" in proc.stderr
    after = _parts(out)
    assert {k: v for k, v in after.items() if k in kept} == kept          # committed parts were not rewritten
    assert len(after) == 36
    assert not [p for p in (out / "parts").iterdir() if p.name.startswith(".")]
    manifest = json.loads((out / "manifest.json").read_text())
    second = manifest["runs"][1]
    assert second["status"] == "complete" and second["skipped"] == len(kept)
    scored = [tuple(k) for k in second["scored"]]
    assert len(scored) == len(set(scored)) == 36 - len(kept) and not set(scored) & done_then
    rows = _rows(read_results(out))
    assert len({(r["input"], r["chip"]) for r in rows}) == len(rows) == 71
    assert rows == _rows(finished["table"])


@pytest.mark.slow
def test_a_worker_killed_mid_task_is_replaced_and_the_job_completes(files, finished, tmp_path):
    killed = []

    def progress(done, total, info):
        last = info.get("last")
        if last and not killed:                                # the worker has already taken its next task
            os.kill(last["pid"], signal.SIGKILL)
            killed.append(last["pid"])

    report = _job(files, tmp_path / "job", workers=2, chunk_size=CHUNK, progress=progress)
    # a task the killed worker had committed before it died is found complete by its retry ("existing"):
    # its chips count as skipped, not scored again; every chip is in the output exactly once either way
    assert killed and report.failed == 0 and report.scored_chips + report.skipped_chips == 71
    assert _rows(read_results(tmp_path / "job")) == _rows(finished["table"])
    assert not [p for p in (tmp_path / "job" / "parts").iterdir() if p.name.startswith(".")]


def test_segmented_program_without_head_writes_outputs(files, tmp_path):
    """A host-fallback program (LRN on onnxruntime between two NPU segments); no head: the ``output`` column."""
    g = GraphBuilder("lrn_featurizer", 0, input_shape=(1, 3, CHIP, CHIP))
    x = g.relu(g.conv(g.input_name, 3, 16, 3, bias=True))
    x = g.op("LRN", [x], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    x = g.relu(g.conv(g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]), 16, 24, 3, bias=True))
    model = g.finish(g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1), [1, 24], 13)
    compiled = compile_with_host_fallback(model, "tiny", "ms-fp9", preprocess={"crop": CHIP, "resize": CHIP})
    assert [s.kind for s in compiled.program.segments] == ["npu", "host", "npu"]
    program = tmp_path / "segmented.npuz"
    compiled.program.save(program)
    report = run_batch(program, [files["tif"]], tmp_path / "job", chip=CHIP, chunk_size=8, workers=1)
    assert (report.tasks, report.scored_chips) == (2, 15)
    assert report.npu_latency_us > 0                          # the two NPU segments' timing runs
    table = read_results(tmp_path / "job")
    assert table.schema.names == KEY_COLUMNS + ["output"]
    session = Session(program)
    _, chips = read_chips(chip_grid(files["tif"], CHIP), 0, 15)
    for rgb, r in zip(chips, _rows(table)):
        want = session.score_numpy_array(session.preprocess.array(rgb)).output.reshape(-1)
        assert np.array_equal(np.array(r["output"], np.float32), want)


def test_a_head_factory_on_a_cluster_given_by_its_scheduler(files, finished, tmp_path):
    """A picklable factory instead of a head file, on a cluster run_batch did not start: the rows are the same."""
    from distributed import LocalCluster

    head = load_head(files["head"])
    factory = functools.partial(DenseHead, head.weight, head.bias, head.labels)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        report = run_batch(files["program"], [files["tif"]], tmp_path / "job", head=factory, chip=CHIP,
                           chunk_size=8, scheduler=cluster.scheduler_address)
        assert report.scored_chips == 15 and report.workers == 1
        assert cluster.scheduler_address in json.loads((tmp_path / "job" / "manifest.json").read_text())["runs"][0][
            "scheduler"]
    job = json.loads((tmp_path / "job" / "job.json").read_text())
    assert job["head"]["factory"] == "functools.partial" and len(job["head"]["sha256"]) == 64
    want = [r for r in _rows(finished["table"]) if r["input"] == str(files["tif"])]
    got = _rows(read_results(tmp_path / "job"))
    assert [(r["class"], r["probabilities"]) for r in got] == [(r["class"], r["probabilities"]) for r in want]


# ------------------------------------------------------------------------------------ errors, before any cluster


@pytest.fixture
def no_cluster(monkeypatch):
    import distributed

    def refuse(*a, **k):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(distributed, "LocalCluster", refuse)
    monkeypatch.setattr(distributed, "Client", refuse)


def test_unreadable_inputs_are_named(files, tmp_path, no_cluster):
    with pytest.raises(BatchError, match="missing.tif: no such file"):
        run_batch(files["program"], [files["png"], tmp_path / "missing.tif"], tmp_path / "a", chip=CHIP)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a raster at all")
    with pytest.raises(BatchError, match="junk.tif: cannot be read as a raster"):
        run_batch(files["program"], [junk], tmp_path / "b", chip=CHIP)
    with pytest.raises(BatchError, match="given twice"):
        run_batch(files["program"], [files["png"], files["png"]], tmp_path / "c", chip=CHIP)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_program_that_is_not_a_featurizer_of_rgb_images(files, tmp_path, no_cluster):
    g = GraphBuilder("grey", 0, input_shape=(1, 1, CHIP, CHIP))
    x = g.op("Flatten", [g.op("GlobalAveragePool", [g.relu(g.conv(g.input_name, 1, 8, 3, bias=True))])], axis=1)
    grey = tmp_path / "grey.npuz"
    compile_model(g.finish(x, [1, 8], 13), "tiny", "ms-fp9").program.save(grey)
    with pytest.raises(BatchError, match=r"takes \[1, 32, 32\].*featurizer of 3-channel images"):
        run_batch(grey, [files["png"]], tmp_path / "a", chip=CHIP)
    with pytest.raises(BatchError, match="no such program file"):
        run_batch(tmp_path / "none.npuz", [files["png"]], tmp_path / "a", chip=CHIP)
    bad = tmp_path / "bad.npuz"
    bad.write_bytes(b"PK not a zip")
    with pytest.raises(BatchError, match="bad.npuz: not a usable program file"):
        run_batch(bad, [files["png"]], tmp_path / "a", chip=CHIP)


def test_a_head_that_does_not_fit_the_program(files, tmp_path, no_cluster):
    head = tmp_path / "head.npz"
    save_head(DenseHead(np.ones((3, files["features"] + 1), np.float32)), head)
    with pytest.raises(BatchError, match=f"head takes {files['features'] + 1} features but the program gives "
                                         f"{files['features']}"):
        run_batch(files["program"], [files["png"]], tmp_path / "a", head=head, chip=CHIP)
    with pytest.raises(BatchError, match="the head cannot take the program's"):
        run_batch(files["program"], [files["png"]], tmp_path / "a", chip=CHIP,
                  head=lambda: (lambda f: np.asarray(f).reshape(1, 7) @ np.ones((7, 2))))


def test_load_head_names_the_file(tmp_path):
    """Heads are runtime.heads' saved arrays (tests/test_heads_saved.py checks the format); a bad file is a
    BatchError naming it."""
    p = tmp_path / "h.npz"
    save_head(DenseHead(np.eye(3, 4), np.arange(3.0), ["a", "b", "c"]), p)
    head = load_head(p)
    assert isinstance(head, DenseHead) and head.labels == ["a", "b", "c"] and head.weight.shape == (3, 4)
    np.savez(p, weight=np.eye(3, 4))
    with pytest.raises(BatchError, match="h.npz: a head file holds w0, b0"):
        load_head(p)
    with pytest.raises(BatchError, match="cannot read the head"):
        load_head(tmp_path / "none.npz")


def test_one_run_at_a_time_in_a_directory(files, finished, no_cluster):
    import fcntl

    fd = os.open(finished["out"] / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BatchError, match="another batch run is using this directory"):
            _job(files, finished["out"])
    finally:
        os.close(fd)


def test_load_head_reads_saved_heads(tmp_path):
    """A file of w0, b0, ... (runtime.heads.save_head: a DenseHead or an MlpHead) is read by runtime.heads."""
    from runtime import heads

    if not hasattr(heads, "save_head"):
        pytest.skip("runtime.heads.save_head is not there")
    rng = np.random.default_rng(3)
    mlp = heads.MlpHead([(rng.standard_normal((8, 6)), rng.standard_normal(8)),
                         (rng.standard_normal((3, 8)), rng.standard_normal(3))], ["a", "b", "c"])
    heads.save_head(mlp, tmp_path / "mlp.npz")
    back = load_head(tmp_path / "mlp.npz")
    x = rng.standard_normal((1, 6)).astype(np.float32)
    assert back.labels == ["a", "b", "c"] and back.weight.shape == (8, 6) and np.array_equal(back(x), mlp(x))


def test_cli_reports_errors_before_starting(files, tmp_path, capsys, no_cluster):
    code = main(["batch", str(files["program"]), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o"),
                 "--chip", str(CHIP)])
    assert code == 2
    assert "npu batch: error:" in capsys.readouterr().err
