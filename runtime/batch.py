"""Batch scoring of aerial imagery on Dask: every chip of many rasters through a featurizer program and a head.

The land-cover workflow at scale: each raster is cut into chips
(``runtime.imagery``), consecutive chips are grouped into tasks of
``chunk_size`` (task ``(input, chunk)``: deterministic), and the tasks run on
a Dask cluster -- a ``LocalCluster`` on this machine by default, any cluster
given its scheduler address, the same code.  Every worker process loads the
program (and head) once, then for each of its tasks reads the chips, applies
the program's preprocessing recipe, runs the simulated NPU (functional mode:
the arithmetic without the timing model, bit-exact with a full run), applies
the head, and writes the task's rows as one Parquet part.

Output directory::

    job.json        what the job is: program (path, SHA-256), inputs (paths, sizes), head, chip grid, chunking
    manifest.json   the finished chunks (part file, rows) and a record of every run
    parts/part-<input>-<chunk>.parquet

Columns of a part: ``input`` (the raster's absolute path), ``chip`` (index
in the raster's row-major grid), ``row``, ``col``, ``row_off``, ``col_off``,
``height``, ``width`` (the chip's valid window), ``transform`` (its affine,
6 float64), ``crs`` (null without georeference); with a head ``class``,
``score`` (its probability), ``probabilities`` (list<float32>) and ``label``
if the head has labels; without one ``output`` (the program's output
vector, list<float32>); ``features`` (the program's output vector) if asked.

Parts are written by the workers (the results never pass through the
scheduler or the client; a real cluster needs ``out_dir`` on a filesystem
all workers share) to a hidden temporary name, then renamed: the rename
commits the chunk.  Started again with the same arguments, a job skips every
chunk whose part exists and removes stale temporaries, so an interrupted job
finishes as if it had never stopped; other arguments in the same directory
are refused.  The client keeps ``manifest.json``, rewritten atomically as
parts finish (at most once per ``manifest_interval`` seconds; 0: after every
part) and at the end; the parts directory is the truth it indexes, and a
restart rebuilds it from the parts.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from npu.hostio import run_on_simulator, run_warm
from npu.npuz import ProgramFileError

from .backends import BACKENDS, RunStats, model_macs
from .heads import DenseHead, MlpHead
from .imagery import ImageryError, chip_grid, read_chips
from .session import Session

#: The published figures this run is compared with: the Azure land-cover run scored about 195 million chips
#: on 800 FPGAs (Brainwave) at about 305,000 images/s, i.e. about 381 images/s per device.
PUBLISHED_CHIPS = 195_000_000
PUBLISHED_DEVICES = 800
PUBLISHED_IMAGES_PER_S = 305_000
PUBLISHED_PER_DEVICE = PUBLISHED_IMAGES_PER_S / PUBLISHED_DEVICES

#: run_batch's ``mode`` -> the Session backend that runs the NPU.
FUNCTIONAL_BACKEND = "sim-functional"
MODES = {"functional": FUNCTIONAL_BACKEND, "full": "sim"}

JOB_FILE = "job.json"
MANIFEST_FILE = "manifest.json"
PARTS_DIR = "parts"
LOCK_FILE = ".lock"
JOB_VERSION = 1
_PART_RE = re.compile(r"^part-(\d+)-(\d+)\.parquet$")
_TMP_RE = re.compile(r"^\.part-.*\.tmp$")


#: Tasks kept in flight per worker (at least :data:`MIN_IN_FLIGHT`): enough to keep every worker busy, bounded so
#: the client's and the scheduler's memory does not grow with the job (millions of chunks).
IN_FLIGHT_PER_WORKER = 4
MIN_IN_FLIGHT = 8


class BatchError(ValueError):
    """A batch job cannot start or did not finish: the message names the input, file or argument at fault."""


class BatchFailed(BatchError):
    """Some tasks failed (every other chunk is committed; run again to retry them); ``report`` has the run."""

    def __init__(self, message: str, report: "BatchReport"):
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------------------------- the NPU


class FunctionalSimBackend:
    """The simulator in functional mode: the NPU's arithmetic, bit-exact with a full run, without its timing model.

    Registered in ``runtime.backends.BACKENDS`` as ``"sim-functional"``, so a
    ``Session`` (and a segmented program's ``SegmentedBackend``) runs on it as
    on ``"sim"``.  The run statistics carry no cycles (a batch job takes the
    NPU's latency from one timing run instead: :func:`npu_latency_us`).
    Weights stay resident between runs, as on ``SimBackend``.
    """

    name = FUNCTIONAL_BACKEND

    def __init__(self, program):
        self.program = program
        self.macs = model_macs(program)
        self._resident = None
        self._lock = threading.Lock()
        self.keep_resident = True

    def run(self, feeds):
        """One inference in functional mode."""
        with self._lock:
            if self._resident is not None:
                outs, _ = run_warm(self.program, feeds, self._resident, mode="functional")
                warm = True
            else:
                outs, result = run_on_simulator(self.program, feeds, mode="functional")
                warm = False
                if self.keep_resident and self.program.warm() is not None:
                    self._resident = result
        return outs, RunStats(0, 0.0, 0.0, warm)


BACKENDS.setdefault(FUNCTIONAL_BACKEND, FunctionalSimBackend)


def npu_latency_us(program) -> float:
    """Microseconds of one inference on the simulated NPU, from the timing model.

    A plain program whose weights stay resident is timed warm (as a
    ``Session`` scores every image after the first); a segmented program
    sums its NPU segments, each loading its weights (host segments not
    counted).
    """
    from npu.segments import SegmentedProgram
    from npu.sim import simulate

    if isinstance(program, SegmentedProgram):
        return float(sum(simulate(s.program, s.program.config, mode="timing").stats.latency_us
                         for s in program.segments if s.kind == "npu"))
    warm = program.warm()
    return float(simulate(warm if warm is not None else program, program.config, mode="timing").stats.latency_us)


# --------------------------------------------------------------------------------------------- heads


def load_head(path) -> "DenseHead | MlpHead":
    """A classifier head saved by ``runtime.heads.save_head`` (BatchError naming the file and the fault)."""
    from .heads import HeadFileError
    from .heads import load_head as load

    try:
        return load(path)
    except HeadFileError as exc:
        raise BatchError(str(exc)) from None


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class _HeadSpec:
    """How a worker builds the head: from a file (checked against its SHA-256) or by calling a factory."""

    key: str                             # identifies the head in the workers' cache
    path: str | None = None
    factory: bytes | None = None         # the factory, cloudpickled on the client


# --------------------------------------------------------------------------------------------- the workers


@dataclass(frozen=True)
class _TaskSpec:
    """What every task of a job shares (small: it travels with each task)."""

    program: str
    program_sha256: str
    mode: str
    head: _HeadSpec | None
    chip: int
    stride: int | None
    edge: str
    chunk_size: int
    features: bool
    parts: str                           # the parts directory (absolute; shared by the workers)


_CACHE: dict = {}                        # (program, sha256, mode, head key) -> (Session, head): one load per process
_GRIDS: dict = {}                        # (input, chip, stride, edge) -> ChipGrid
_CACHE_LOCK = threading.Lock()
_LOADS = {"program": 0}                  # programs this process has loaded (reported with each task)


def _loaded(spec: _TaskSpec):
    """This process's Session and head for the job, loaded on its first task."""
    key = (spec.program, spec.program_sha256, spec.mode, spec.head.key if spec.head else None)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is None:
            if _sha256(spec.program) != spec.program_sha256:
                raise BatchError(f"{spec.program}: the program file changed since the job started (SHA-256 differs)")
            session = Session(spec.program, backend=MODES[spec.mode])
            head = _make_head(spec.head) if spec.head else None
            if len(_CACHE) >= 4:
                _CACHE.clear()
            hit = _CACHE[key] = (session, head)
            _LOADS["program"] += 1
    return hit


def _make_head(spec: _HeadSpec):
    if spec.path is not None:
        if _sha256(spec.path) != spec.key:
            raise BatchError(f"{spec.path}: the head file changed since the job started (SHA-256 differs)")
        return load_head(spec.path)
    import cloudpickle

    # unpickled here from bytes, not by Dask: Dask may hand a task's arrays over in unaligned message buffers,
    # and numpy's matmul on unaligned float32 rounds differently from BLAS (the last bit of a probability)
    return cloudpickle.loads(spec.factory)()


def _grid(spec: _TaskSpec, path: str, count: int):
    key = (path, spec.chip, spec.stride, spec.edge)
    with _CACHE_LOCK:
        grid = _GRIDS.get(key)
    if grid is None:
        grid = chip_grid(path, spec.chip, spec.stride, spec.edge)
        with _CACHE_LOCK:
            if len(_GRIDS) >= 256:
                _GRIDS.clear()
            _GRIDS[key] = grid
    if grid.count != count:
        raise BatchError(f"{path}: the raster now cuts into {grid.count} chips, not the {count} the job started "
                         f"with")
    return grid


def part_name(input_index: int, chunk: int) -> str:
    """The part file of a task, relative to the parts directory."""
    return f"part-{input_index:05d}-{chunk:06d}.parquet"


def score_chips(session: Session, head, chips: np.ndarray):
    """Score uint8 RGB chips (n, chip, chip, 3) one by one, as a Session (and a Pipeline, with a head) would.

    Returns (outputs (n, F) float32, head scores (n, C) float32 or None,
    preprocess seconds, scoring seconds).
    """
    outs, probs = [], []
    t_pre = t_score = 0.0
    for rgb in chips:
        t0 = time.perf_counter()
        x = session.preprocess.array(rgb)
        if session.input.order == "hwc":
            x = x.transpose(0, 2, 3, 1)
        t1 = time.perf_counter()
        y = session.score_numpy_array(x).output
        outs.append(y.reshape(-1))
        if head is not None:
            probs.append(np.asarray(head(y.reshape(1, -1)), np.float32).reshape(-1))
        t_pre += t1 - t0
        t_score += time.perf_counter() - t1
    width = session.outputs[0].shape
    outs_a = np.stack(outs).astype(np.float32) if outs else np.zeros((0, int(np.prod(width))), np.float32)
    probs_a = (np.stack(probs) if probs else np.zeros((0, 0), np.float32)) if head is not None else None
    return outs_a, probs_a, t_pre, t_score


def _list_array(matrix: np.ndarray):
    """A list<float32> column from the rows of an (n, w) array."""
    import pyarrow as pa

    m = np.ascontiguousarray(matrix, np.float32)
    n, w = m.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * w, pa.int32()),
                                    pa.array(m.reshape(-1), pa.float32()))


def part_schema(head: bool, features: bool, labels: bool = False):
    """The Parquet schema of a job's parts."""
    import pyarrow as pa

    cols = [("input", pa.string()), ("chip", pa.int64()), ("row", pa.int64()), ("col", pa.int64()),
            ("row_off", pa.int64()), ("col_off", pa.int64()), ("height", pa.int64()), ("width", pa.int64()),
            ("transform", pa.list_(pa.float64(), 6)), ("crs", pa.string())]
    if head:
        cols += [("class", pa.int64()), ("score", pa.float32()), ("probabilities", pa.list_(pa.float32()))]
        if labels:
            cols.append(("label", pa.string()))
    else:
        cols.append(("output", pa.list_(pa.float32())))
    if features:
        cols.append(("features", pa.list_(pa.float32())))
    return pa.schema(cols)


def _part_table(path: str, crs, keys, outs, probs, labels, features: bool):
    import pyarrow as pa

    n = len(keys)
    ints = lambda name: pa.array([getattr(k, name) for k in keys], pa.int64())   # noqa: E731
    cols = {"input": pa.array([path] * n, pa.string()), "chip": ints("index"), "row": ints("row"),
            "col": ints("col"), "row_off": ints("row_off"), "col_off": ints("col_off"), "height": ints("height"),
            "width": ints("width"),
            "transform": pa.FixedSizeListArray.from_arrays(
                pa.array(np.array([k.transform[:6] for k in keys], np.float64).reshape(-1), pa.float64()), 6),
            "crs": pa.array([crs] * n, pa.string())}
    if probs is not None:
        cls = probs.argmax(axis=1) if n else np.zeros(0, np.int64)
        cols["class"] = pa.array(cls.astype(np.int64), pa.int64())
        cols["score"] = pa.array(probs[np.arange(n), cls].astype(np.float32) if n else [], pa.float32())
        cols["probabilities"] = _list_array(probs)
        if labels:
            cols["label"] = pa.array([labels[c] if c < len(labels) else str(c) for c in cls], pa.string())
    else:
        cols["output"] = _list_array(outs)
    if features:
        cols["features"] = _list_array(outs)
    schema = part_schema(probs is not None, features, bool(labels) and probs is not None)
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)


def _write_part(table, parts: str, name: str) -> None:
    """Write a part through a hidden temporary name in the same directory, then rename: the rename commits it."""
    import pyarrow.parquet as pq

    tmp = os.path.join(parts, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(parts, name))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(parts)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def score_chunk(spec: _TaskSpec, input_index: int, path: str, count: int, chunk: int) -> dict:
    """One task, on a worker: chips [chunk * chunk_size, ...) of input ``path`` -> its committed Parquet part.

    A part that already exists (an earlier attempt committed it) is not scored again.
    """
    t_start = time.perf_counter()
    name = part_name(input_index, chunk)
    target = os.path.join(spec.parts, name)
    info = {"input": input_index, "chunk": chunk, "part": f"{PARTS_DIR}/{name}", "pid": os.getpid(),
            "host": socket.gethostname()}
    if os.path.exists(target):
        import pyarrow.parquet as pq

        return {**info, "rows": pq.read_metadata(target).num_rows, "existing": True, "read_s": 0.0,
                "preprocess_s": 0.0, "score_s": 0.0, "write_s": 0.0, "loads": _LOADS["program"]}
    session, head = _loaded(spec)
    grid = _grid(spec, path, count)
    start = chunk * spec.chunk_size
    stop = min(start + spec.chunk_size, grid.count)
    t0 = time.perf_counter()
    keys, chips = read_chips(grid, start, stop)
    t_read = time.perf_counter() - t0
    outs, probs, t_pre, t_score = score_chips(session, head, chips)
    t0 = time.perf_counter()
    labels = getattr(head, "labels", None) if head is not None else None
    _write_part(_part_table(path, grid.crs, keys, outs, probs, labels, spec.features), spec.parts, name)
    t_write = time.perf_counter() - t0
    return {**info, "rows": len(keys), "existing": False, "read_s": t_read, "preprocess_s": t_pre,
            "score_s": t_score, "write_s": t_write, "task_s": time.perf_counter() - t_start,
            "loads": _LOADS["program"]}


# --------------------------------------------------------------------------------------------- the report


@dataclass
class BatchReport:
    """What a run did: chips and tasks, time where it went, and the simulated NPU's throughput."""

    out_dir: str
    inputs: int
    chips: int                   # every chip of the job
    tasks: int                   # every task of the job
    skipped: int                 # tasks already done before this run (their parts existed)
    skipped_chips: int
    scored_tasks: int            # tasks this run committed
    scored_chips: int
    failed: int                  # tasks that failed (run again to retry them)
    wall_s: float                # the whole run_batch call, cluster start included
    startup_s: float             # checks, timing run and cluster start before the first task was submitted
    read_s: float                # summed over tasks: reading chips from the rasters
    preprocess_s: float          # summed over tasks: the program's preprocessing recipe
    score_s: float               # summed over tasks: the simulated NPU and the head
    write_s: float               # summed over tasks: writing and committing parts
    workers: int
    mode: str
    config: str                  # the simulated machine
    npu_latency_us: float        # one inference on the simulated NPU (timing model)
    dashboard: str | None = None
    chip: int = 224
    recipe: str = ""             # the program's preprocessing of each chip
    chunk_size: int = 32
    worker_pids: list = field(default_factory=list)   # [host, pid, programs loaded] of each worker that scored

    @property
    def chips_per_s(self) -> float:
        """Chips scored per second of this run's wall time."""
        return self.scored_chips / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def read_preprocess_s(self) -> float:
        """Summed read + preprocess seconds."""
        return self.read_s + self.preprocess_s

    @property
    def npu_images_per_s(self) -> float:
        """Images per second one simulated device would score: 1e6 / latency in microseconds."""
        return 1e6 / self.npu_latency_us if self.npu_latency_us > 0 else 0.0

    def to_dict(self) -> dict:
        """JSON form (with the derived rates)."""
        d = asdict(self)
        d.update(chips_per_s=self.chips_per_s, read_preprocess_s=self.read_preprocess_s,
                 npu_images_per_s=self.npu_images_per_s, published_images_per_s_per_device=PUBLISHED_PER_DEVICE)
        return d

    def table(self) -> str:
        """The report as text."""
        busy = self.read_preprocess_s + self.score_s + self.write_s
        share = (lambda s: f" ({100 * s / busy:.0f} %)") if busy > 0 else (lambda s: "")   # noqa: E731
        rows = [
            ("output", self.out_dir),
            ("job", f"{self.chips:,} chips of {self.chip} px from {self.inputs} input(s) in {self.tasks:,} tasks of "
                    f"up to {self.chunk_size} chips"),
            ("preprocessing", self.recipe),
            ("already done", f"{self.skipped:,} tasks ({self.skipped_chips:,} chips) skipped"),
            ("this run", f"{self.scored_chips:,} chips in {self.scored_tasks:,} tasks"
                         + (f", {self.failed:,} tasks FAILED" if self.failed else "")),
            ("wall time", f"{self.wall_s:.2f} s ({self.startup_s:.2f} s to start) on {self.workers} worker(s): "
                          f"{self.chips_per_s:,.1f} chips/s" if self.workers else
                          f"{self.wall_s:.2f} s (nothing to score: no cluster started)"),
            ("read + preprocess", f"{self.read_preprocess_s:.2f} s{share(self.read_preprocess_s)} summed over tasks "
                                  f"(read {self.read_s:.2f} s, preprocess {self.preprocess_s:.2f} s)"),
            ("scoring", f"{self.score_s:.2f} s{share(self.score_s)} summed over tasks (simulated NPU, {self.mode} "
                        f"mode, + head)"),
            ("writing parts", f"{self.write_s:.2f} s{share(self.write_s)}"),
            ("simulated NPU", f"{self.npu_latency_us:,.1f} us per chip on {self.config}: "
                              f"{self.npu_images_per_s:,.0f} images/s per device"),
            ("published", f"~{PUBLISHED_PER_DEVICE:,.0f} images/s per device (Azure land cover: "
                          f"{PUBLISHED_CHIPS / 1e6:,.0f}M chips on {PUBLISHED_DEVICES} FPGAs, "
                          f"~{PUBLISHED_IMAGES_PER_S:,} images/s)"),
        ]
        if self.dashboard:
            rows.append(("dashboard", self.dashboard))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# --------------------------------------------------------------------------------------------- the output directory


def _write_json(path: Path, data) -> None:
    """Write JSON through a temporary name, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1 if path.name == JOB_FILE else None, sort_keys=False))
    os.replace(tmp, path)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class _OutDir:
    """The client's side of the output directory: lock, job identity, committed parts and the manifest."""

    def __init__(self, out_dir: str, identity: dict, expected: dict, interval: float):
        self.root = Path(out_dir)
        self.parts = self.root / PARTS_DIR
        self.identity = identity
        self.expected = expected              # (input, chunk) -> rows
        self.interval = interval
        self.done: dict[tuple[int, int], int] = {}
        self.runs: list[dict] = []
        self.run: dict = {}
        self._lock_fd = None
        self._last_write = 0.0

    def open(self, scheduler, workers: int) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BatchError(f"--out {self.root}: cannot create the directory ({exc.strerror or exc})") from None
        if not self.root.is_dir():
            raise BatchError(f"--out {self.root}: not a directory")
        self._lock()
        try:
            self._open(scheduler, workers)
        except BaseException:
            self.close()
            raise

    def _open(self, scheduler, workers: int) -> None:
        job = self.root / JOB_FILE
        if job.exists():
            try:
                stored = json.loads(job.read_text())
            except (OSError, ValueError) as exc:
                raise BatchError(f"{job}: unreadable ({exc}); it is not the record of a batch job") from None
            if stored != self.identity:
                raise BatchError(f"{self.root} holds another job ({_differences(stored, self.identity)}); give a "
                                 f"new --out directory, or remove {self.root} to start this job over")
        else:
            if self.parts.exists() and any(self.parts.iterdir()):
                raise BatchError(f"{self.root}: {PARTS_DIR}/ holds files but there is no {JOB_FILE}; not a batch "
                                 f"job directory")
            _write_json(job, self.identity)
        self.parts.mkdir(exist_ok=True)
        old = self._read_manifest()
        self.runs = old.get("runs", []) if isinstance(old.get("runs"), list) else []
        listed = {}
        for entry in old.get("chunks", []) if isinstance(old.get("chunks"), list) else []:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                listed[(int(entry["input"]), int(entry["chunk"]))] = int(entry["rows"])
        removed, discarded = 0, []
        for entry in os.scandir(self.parts):
            if _TMP_RE.match(entry.name):             # a temporary a killed writer left behind
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)
                    removed += 1
                continue
            m = _PART_RE.match(entry.name)
            if not m:
                continue
            key = (int(m.group(1)), int(m.group(2)))
            if key not in self.expected:
                continue
            rows = listed.get(key)
            if rows is None:                          # committed, but the manifest had not caught up
                rows = _part_rows(entry.path)
            if rows != self.expected[key]:
                os.remove(entry.path)                 # not what this chunk gives: score it again
                discarded.append(list(key))
                continue
            self.done[key] = rows
        self.run = {"run": len(self.runs) + 1, "started": _now(), "ended": None, "status": "running",
                    "pid": os.getpid(), "host": socket.gethostname(), "scheduler": scheduler, "workers": workers,
                    "skipped": len(self.done), "scored": [], "found": [], "failed": [],
                    "removed_temporaries": removed, "discarded": discarded}
        self.runs.append(self.run)
        self.write_manifest(force=True)

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:                           # not POSIX: no lock
            return
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise BatchError(f"{self.root}: another batch run is using this directory") from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove_temporaries(self) -> None:
        for entry in os.scandir(self.parts):
            if _TMP_RE.match(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)
                    self.run["removed_temporaries"] += 1

    def _read_manifest(self) -> dict:
        try:
            data = json.loads((self.root / MANIFEST_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) and data.get("job_sha256") == _digest(self.identity) else {}

    def commit(self, result: dict) -> None:
        key = (result["input"], result["chunk"])
        self.done[key] = result["rows"]
        self.run["found" if result.get("existing") else "scored"].append(list(key))
        self.write_manifest()

    def fail(self, key, error: str) -> None:
        self.run["failed"].append({"input": key[0], "chunk": key[1], "error": error})

    def finish(self, status: str) -> None:
        self.run["status"] = status
        self.run["ended"] = _now()
        self.write_manifest(force=True)

    def write_manifest(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < self.interval:
            return
        chunks = [{"input": i, "chunk": c, "part": f"{PARTS_DIR}/{part_name(i, c)}", "rows": self.done[(i, c)]}
                  for i, c in sorted(self.done)]
        data = {"job_sha256": _digest(self.identity), "tasks": len(self.expected),
                "chips": sum(self.expected.values()), "finished_tasks": len(chunks),
                "finished_chips": sum(self.done.values()), "complete": len(chunks) == len(self.expected),
                "chunks": chunks, "runs": self.runs}
        _write_json(self.root / MANIFEST_FILE, data)
        self._last_write = now


def _part_rows(path: str) -> int | None:
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows
    except Exception:                  # an unreadable part is no commit: score the chunk again
        return None


def _digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _differences(old: dict, new: dict, prefix: str = "") -> str:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out.append(_differences(a, b, f"{prefix}{k}."))
        else:
            out.append(f"{prefix}{k} was {_short(a)}, now {_short(b)}")
    return "; ".join(out)


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


def read_results(out_dir):
    """Every part of a job as one pyarrow Table, rows in (input, chip) order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = Path(out_dir) / PARTS_DIR
    names = sorted((tuple(map(int, m.groups())), e.path) for e in os.scandir(parts) if (m := _PART_RE.match(e.name)))
    tables = [pq.read_table(p) for _, p in names]
    if not tables:
        raise BatchError(f"{out_dir}: no parts")
    return pa.concat_tables(tables)


# --------------------------------------------------------------------------------------------- the client


def _open_program(program) -> tuple[Session, str]:
    path = os.path.abspath(os.fspath(program))
    if not os.path.isfile(path):
        raise BatchError(f"{program}: no such program file")
    try:
        session = Session(path, backend=FUNCTIONAL_BACKEND)
    except ProgramFileError as exc:
        raise BatchError(f"{program}: not a usable program file: {exc}") from None
    except ValueError as exc:
        raise BatchError(f"{program}: {exc}; npu batch needs a featurizer of 3-channel images") from None
    shape = tuple(session.input.shape)
    channels = shape[-1] if session.input.order == "hwc" else shape[0]
    if len(shape) != 3 or channels != 3:
        layout = "H x W x C" if session.input.order == "hwc" else "C x H x W"
        raise BatchError(f"{program}: the program takes {list(shape)} ({layout}); npu batch needs a featurizer of "
                         f"3-channel images (3 x S x S)")
    if session.detection is not None:
        raise BatchError(f"{program}: a detection program; npu batch needs a featurizer (one feature vector per "
                         f"image)")
    if len(session.outputs) != 1:
        raise BatchError(f"{program}: the program has {len(session.outputs)} outputs "
                         f"({', '.join(o.name for o in session.outputs)}); npu batch needs a featurizer with one")
    return session, path


def _head_spec(head, features: int) -> tuple[_HeadSpec | None, dict | None]:
    """The head's spec for the workers and its identity for job.json, after checking it takes ``features``."""
    if head is None:
        return None, None
    if isinstance(head, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(head))
        h = load_head(path)
        spec = _HeadSpec(key=_sha256(path), path=path)
        ident = {"path": path, "sha256": spec.key}
    elif callable(head):
        import cloudpickle

        try:
            h = head()
        except Exception as exc:
            raise BatchError(f"the head factory {_name(head)} failed: {type(exc).__name__}: {exc}") from None
        data = cloudpickle.dumps(head)
        spec = _HeadSpec(key=hashlib.sha256(data).hexdigest(), factory=data)
        ident = {"factory": _name(head), "sha256": spec.key}
    else:
        raise BatchError(f"head must be a head file (.npz) or a factory returning a head, not {type(head).__name__}")
    weight = getattr(h, "weight", None)
    if isinstance(weight, np.ndarray) and weight.ndim == 2 and weight.shape[1] != features:
        raise BatchError(f"the head takes {weight.shape[1]} features but the program gives {features}")
    try:
        out = np.asarray(h(np.zeros((1, features), np.float32)))
    except Exception as exc:
        raise BatchError(f"the head cannot take the program's {features} features: {type(exc).__name__}: "
                         f"{exc}") from None
    if out.size < 1 or out.reshape(-1).size != out.shape[-1]:
        raise BatchError(f"the head gives {list(out.shape)} for one chip; it must give one score per class")
    return spec, ident


def _name(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int):
    """A Dask client: on a LocalCluster of ``workers`` single-thread processes, or connected to ``scheduler``."""
    from distributed import Client, LocalCluster

    if scheduler is None:
        # single-threaded workers, the simulator's Numba kernels included (Dask sets OMP/MKL/OpenBLAS threads to 1
        # but not Numba's): the parallelism is the worker processes.  On 2 cores one worker scored 179 chips/s of
        # resnet_small with one Numba thread and 126 with two; ResNet-50 0.15 s/chip with one, 0.17-0.19 with two.
        env = {"NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS") or "1"}
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                          env=env) as cluster:
            with Client(cluster) as client:
                yield client
        return
    try:
        client = Client(scheduler, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise BatchError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}") from None
    with client:
        yield client


def _check_workers(client, program: str, parts: str) -> int:
    """The number of workers; BatchError unless every worker sees the program and can write the parts."""
    try:
        client.wait_for_workers(1, timeout=120)
    except TimeoutError:
        raise BatchError("no Dask worker joined the cluster within 120 s") from None

    def probe(program=program, parts=parts):
        return os.path.isfile(program), os.access(parts, os.W_OK)

    bad = [(w, ok) for w, ok in client.run(probe).items() if not all(ok)]
    if bad:
        w, (sees, writes) = bad[0]
        what = f"cannot read {program}" if not sees else f"cannot write {parts}"
        raise BatchError(f"worker {w} {what}; a Dask cluster needs the program, inputs and output directory on a "
                         f"filesystem every worker shares ({len(bad)} worker(s) affected)")
    return len(client.scheduler_info().get("workers", {}))


def run_batch(program, inputs, out_dir, *, head=None, scheduler: str | None = None, workers: int = 2,
              chunk_size: int = 32, chip: int = 224, stride: int | None = None, edge: str = "pad",
              features: bool = False, progress: Callable | None = None, mode: str = "functional",
              manifest_interval: float = 1.0) -> BatchReport:
    """Score every chip of ``inputs`` (raster paths) with ``program`` (and ``head``) on Dask, into ``out_dir``.

    ``head``: None (the ``output`` column holds the program's output), a head
    file (.npz: :func:`load_head`) or a picklable factory returning a head
    callable (features (1, F) -> class scores).  ``scheduler``: a Dask
    scheduler address, else a LocalCluster of ``workers`` processes is started
    and closed here (a remote cluster is best run with one thread per worker
    process).  ``progress(done_chips, total_chips, info)`` is called once
    the tasks are submitted and as each finishes; ``info`` holds
    ``tasks_done``, ``tasks_total``, ``skipped_tasks``, ``scored_chips``,
    ``failed_tasks``, ``elapsed_s``, ``chips_per_s`` (this run's),
    ``dashboard`` (the cluster's dashboard link) and ``last`` (the record
    of the task that finished: input, chunk, part, rows, host, pid, seconds
    spent reading, preprocessing, scoring and writing).  ``mode``: "functional" (the NPU's arithmetic only; fast)
    or "full" (with the timing model; same outputs).  Every check (inputs,
    program, head, output directory) is made before any cluster starts;
    BatchError says what is wrong.  Raises BatchFailed (with the report)
    if tasks failed; the other chunks are committed, and running again
    retries only the failed ones.
    """
    t_begin = time.perf_counter()
    if mode not in MODES:
        raise BatchError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    for name, value in (("chunk_size", chunk_size), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BatchError(f"{name} must be a positive integer, not {value!r}")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [os.path.abspath(os.fspath(p)) for p in inputs]
    if not inputs:
        raise BatchError("no inputs: give one or more raster files")
    if len(set(inputs)) != len(inputs):
        dup = next(p for p in inputs if inputs.count(p) > 1)
        raise BatchError(f"{dup} is given twice")

    session, program_path = _open_program(program)
    n_features = int(np.prod(session.outputs[0].shape))
    head_spec, head_ident = _head_spec(head, n_features)
    grids = []
    for p in inputs:
        try:
            grid = chip_grid(p, chip, stride, edge)
        except ImageryError as exc:
            raise BatchError(str(exc)) from None
        if grid.count == 0:
            raise BatchError(f"{p}: no {chip} px chips with edge={edge!r}")
        grids.append(grid)
    latency = npu_latency_us(session.program)
    program_sha = _sha256(program_path)
    identity = {
        "version": JOB_VERSION,
        "program": {"path": program_path, "sha256": program_sha},
        "inputs": [{"path": p, "size": os.path.getsize(p)} for p in inputs],
        "head": head_ident, "chip": grids[0].chip, "stride": grids[0].stride, "edge": edge,
        "chunk_size": chunk_size, "features": bool(features),
    }
    expected = {(i, c): min(chunk_size, g.count - c * chunk_size)
                for i, g in enumerate(grids) for c in range(math.ceil(g.count / chunk_size))}
    total_chips = sum(g.count for g in grids)
    out = _OutDir(os.path.abspath(os.fspath(out_dir)), identity, expected, manifest_interval)
    out.open(scheduler, workers)
    spec = _TaskSpec(program_path, program_sha, mode, head_spec, chip, stride, edge, chunk_size, bool(features),
                     str(out.parts))
    pending = [k for k in sorted(expected) if k not in out.done]
    skipped_chips = sum(out.done.values())
    report = BatchReport(out_dir=str(out.root), inputs=len(inputs), chips=total_chips, tasks=len(expected),
                         skipped=len(out.done), skipped_chips=skipped_chips, scored_tasks=0, scored_chips=0,
                         failed=0, wall_s=0.0, startup_s=0.0, read_s=0.0, preprocess_s=0.0, score_s=0.0,
                         write_s=0.0, workers=0, mode=mode, config=_config_name(session.program),
                         npu_latency_us=latency, chip=chip, chunk_size=chunk_size, recipe=_recipe(session, chip))
    status = "interrupted"
    try:
        if pending:
            _run(spec, inputs, grids, pending, out, report, scheduler, workers, progress, t_begin)
        elif progress is not None:
            progress(total_chips, total_chips, _info(report, 0.0, None))
        out.remove_temporaries()
        status = "failed" if report.failed else "complete"
    finally:
        out.finish(status)
        out.close()
        report.wall_s = time.perf_counter() - t_begin
    if report.failed:
        first = out.run["failed"][0]
        raise BatchFailed(f"{report.failed} of {len(pending)} tasks failed; the first, chunk {first['chunk']} of "
                          f"{inputs[first['input']]}: {first['error']}; run again to retry them "
                          f"(finished chunks are kept)", report)
    return report


def _recipe(session: Session, chip: int) -> str:
    r = session.preprocess
    what = "used as they are" if r.resize == r.crop == chip else f"resized to {r.resize} px (shorter side) and " \
                                                                  f"centre-cropped to {r.crop} px"
    return f"{chip} px chips {what}; mean {list(r.mean)}, scale {r.scale:g}, {r.channel_order}"


def _config_name(program) -> str:
    return getattr(program.config, "name", "") or "?"


def _info(report: BatchReport, elapsed: float, dashboard, last: dict | None = None) -> dict:
    return {"last": last, "tasks_done": report.skipped + report.scored_tasks, "tasks_total": report.tasks,
            "skipped_tasks": report.skipped, "scored_chips": report.scored_chips, "failed_tasks": report.failed,
            "elapsed_s": elapsed, "chips_per_s": report.scored_chips / elapsed if elapsed > 0 else 0.0,
            "dashboard": dashboard}


def _run(spec, inputs, grids, pending, out, report, scheduler, workers, progress, t_begin) -> None:
    from distributed import as_completed

    with _client(scheduler, workers) as client:
        report.workers = _check_workers(client, spec.program, spec.parts)
        report.dashboard = client.dashboard_link
        tag = _digest(out.identity)[:12]
        todo = iter(pending)
        futures: dict = {}
        flight = as_completed()

        def submit_next() -> None:
            """Keep a bounded window of tasks in flight (the client and scheduler hold state per live task)."""
            for i, c in todo:
                f = client.submit(score_chunk, spec, i, inputs[i], grids[i].count, c,
                                  key=f"npu-batch-{tag}-{i}-{c}", retries=1, pure=False)
                futures[f] = (i, c)
                flight.add(f)
                return

        for _ in range(max(IN_FLIGHT_PER_WORKER * max(report.workers, 1), MIN_IN_FLIGHT)):
            submit_next()
        t0 = time.perf_counter()
        report.startup_s = t0 - t_begin
        done_chips = report.skipped_chips
        if progress is not None:
            progress(done_chips, report.chips, _info(report, 0.0, report.dashboard))
        pids: dict = {}
        for f in flight:
            key = futures.pop(f)
            submit_next()
            r = None
            if f.status != "finished":
                try:
                    exc = f.exception()
                except BaseException as e:          # a cancelled future raises instead of returning its error
                    exc = e
                out.fail(key, f"{type(exc).__name__}: {exc}")
                report.failed += 1
            else:
                r = f.result()
                out.commit(r)
                done_chips += r["rows"]
                if r.get("existing"):               # another attempt had committed it: nothing scored here
                    report.skipped += 1
                    report.skipped_chips += r["rows"]
                else:
                    report.scored_tasks += 1
                    report.scored_chips += r["rows"]
                    for k in ("read_s", "preprocess_s", "score_s", "write_s"):
                        setattr(report, k, getattr(report, k) + r[k])
                where = (r["host"], r["pid"])
                pids[where] = max(pids.get(where, 0), r["loads"])
            f.release()
            if progress is not None:
                progress(done_chips, report.chips, _info(report, time.perf_counter() - t0, report.dashboard, r))
        report.worker_pids = [[h, p, n] for (h, p), n in sorted(pids.items())]
