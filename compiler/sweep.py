"""Design-space sweeps: many machine configurations x models, compiled and timed on Dask.

A spec (YAML or JSON) names a base preset, the models, a precision and the
machine fields to vary, as a full grid or a random sample::

    base: bw-s10
    models: [resnet50]
    precision: ms-fp9
    grid: {native_dim: [64, 128], tiles: [6, 12], vrf_depth: [16384, 32768]}
    # or: random: {samples: 100, seed: 0, fields: {tiles: [4, 8, 12, 16], ...}}

Each point is compiled and run timing-only; its result (cycles, MVU
utilisation, images/s, on-chip memory, an area proxy (npu/area.py), how many layers each
resource bounds) is kept in a cache directory beside the output, so a sweep
started again reuses every point already computed.  A point the machine or
the compiler refuses is a row with its reason, never a crash.  The points
run on a Dask LocalCluster, or on any cluster given its scheduler.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Machine fields a spec may vary (NPUConfig fields).
FIELDS = ("native_dim", "tiles", "lanes", "mfus", "write_ports", "vrf_depth", "mrf_tiles", "dram_bytes", "dram_gbps",
          "dram_latency_ns", "clock_mhz", "multiplier_bits", "weight_format", "activation_format", "mfu_format")
#: Most points one Dask task evaluates (points that share a program go together, so it is compiled once).
POINTS_PER_TASK = 25
#: Most points one spec may name.
MAX_POINTS = 100_000
#: Bits of on-chip memory that cost as much area as one multiplier, in the fallback area proxy (multiplier_proxy).
BITS_PER_MULTIPLIER = 2048


class SweepError(ValueError):
    """A sweep spec is malformed; the message names the key."""


@dataclass(frozen=True)
class Point:
    """One configuration of a sweep: the model and the machine fields that differ from the base."""

    model: str
    changes: tuple[tuple[str, object], ...]

    @property
    def key(self) -> str:
        """A stable name for the point (its cache file)."""
        text = json.dumps([self.model, list(self.changes)], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def read_spec(path) -> dict:
    """The sweep spec at ``path`` (YAML or JSON), checked."""
    import yaml

    try:
        spec = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SweepError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not YAML/JSON: {exc}") from None
    return check_spec(spec, str(path))


def check_spec(spec, where: str = "spec") -> dict:
    """``spec`` with its defaults, or SweepError naming the bad key."""
    from .models.nets import MODELS

    if not isinstance(spec, dict):
        raise SweepError(f"{where}: a spec is a mapping (base, models, precision, grid or random)")
    unknown = set(spec) - {"base", "models", "precision", "grid", "random"}
    if unknown:
        raise SweepError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    models = spec.get("models", ["resnet50"])
    if not isinstance(models, list) or not models or any(m not in MODELS for m in models):
        raise SweepError(f"{where}: models must be a list of {', '.join(sorted(MODELS))}")
    if ("grid" in spec) == ("random" in spec):
        raise SweepError(f"{where}: give exactly one of grid and random")
    fields = spec["grid"] if "grid" in spec else (spec["random"] or {}).get("fields")
    if not isinstance(fields, dict) or not fields:
        raise SweepError(f"{where}: the fields to vary are a mapping of field -> list of values")
    for name, values in fields.items():
        if name not in FIELDS:
            raise SweepError(f"{where}: field {name!r} cannot be swept; choose from {', '.join(FIELDS)}")
        if not isinstance(values, list) or not values:
            raise SweepError(f"{where}: field {name!r} needs a non-empty list of values")
    if "random" in spec:
        samples = spec["random"].get("samples")
        if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_POINTS:
            raise SweepError(f"{where}: random.samples must be an integer from 1 to {MAX_POINTS}")
    return {"base": str(spec.get("base", "bw-s10")), "models": models, "precision": spec.get("precision"),
            **({"grid": fields} if "grid" in spec else {"random": {**spec["random"], "fields": fields}})}


def points(spec: dict) -> list[Point]:
    """Every point of the spec: the grid's product, or the random sample (seeded), each model."""
    if "grid" in spec:
        names = sorted(spec["grid"])
        combos = list(itertools.product(*(spec["grid"][n] for n in names)))
    else:
        r = spec["random"]
        names = sorted(r["fields"])
        rng = np.random.default_rng(int(r.get("seed", 0)))
        combos = [tuple(r["fields"][n][rng.integers(len(r["fields"][n]))] for n in names)
                  for _ in range(r["samples"])]
    if len(combos) * len(spec["models"]) > MAX_POINTS:
        raise SweepError(f"the spec names {len(combos) * len(spec['models']):,} points, more than {MAX_POINTS:,}")
    return [Point(m, tuple(zip(names, c))) for m in spec["models"] for c in combos]


def area_proxy(cfg) -> float:
    """LUT-equivalents of the machine's core: ``npu.area.area_estimate(cfg, beyond_rtl=True).equivalent``, the
    area model measured by synthesis (ALUTs, registers, DSP blocks and memory bits, each priced by its share
    of an Arria 10 1150), so MFU lanes, write ports, memories and formats all cost what the RTL makes of them.

    Points the RTL does not build are extrapolated by the model: more tile engines than N / lanes at the
    measured unit costs, and more than one write port as extra MFU chains plus a modelled bank network (the
    RTL has one write port; see npu/area.py).  A format the model has no measured cost for
    (``AreaModelError``) falls back to :func:`multiplier_proxy` scaled to LUT-equivalents by the measured
    cost of one ms-fp9 multiplier lane, so every point still gets an area in the same unit."""
    from npu.area import AreaModelError, area_estimate, lut_equivalent

    try:
        return area_estimate(cfg, beyond_rtl=True).equivalent
    except AreaModelError:
        return round(multiplier_proxy(cfg) * lut_equivalent("mvu_lane", "ms-fp9"), 1)


def multiplier_proxy(cfg) -> float:
    """Multiplier-equivalents: the MVU's multipliers plus on-chip memory bits / BITS_PER_MULTIPLIER (the area
    proxy before synthesis measured the units; :func:`area_proxy` falls back to it)."""
    return cfg.macs + on_chip_bytes(cfg) * 8 / BITS_PER_MULTIPLIER


def on_chip_bytes(cfg) -> int:
    """Vector and matrix register file bytes."""
    return cfg.vrf_depth * cfg.vector_bytes + cfg.mrf_tiles * cfg.native_dim * cfg.native_dim


_MODELS: dict = {}
#: Programs compiled in this process, by (model, precision, NPUConfig.program_key): the last few.
_PROGRAMS: dict = {}
_PROGRAMS_KEPT = 4


def _program(model: str, precision, cfg):
    """The compiled program of ``model`` for ``cfg`` (compiled once per program key in this process), or the
    user error compiling it raised (raised again for every point that shares the key)."""
    from .compile import compile_model
    from .errors import USER_ERRORS
    from .models.nets import MODELS

    key = (model, precision, cfg.program_key())
    if key not in _PROGRAMS:
        if model not in _MODELS:
            _MODELS[model] = MODELS[model]()
        try:
            _PROGRAMS[key] = compile_model(_MODELS[model], cfg, precision).program
        except USER_ERRORS as exc:
            _PROGRAMS[key] = exc
        while len(_PROGRAMS) > _PROGRAMS_KEPT:
            del _PROGRAMS[next(iter(_PROGRAMS))]
    found = _PROGRAMS[key]
    if isinstance(found, Exception):
        raise found
    return found


def evaluate_many(base: str, precision, chunk: list[Point]) -> list[dict]:
    """:func:`evaluate` for each point of ``chunk`` (points sharing a program compile it once)."""
    return [evaluate(base, precision, p) for p in chunk]


def evaluate(base: str, precision, point: Point) -> dict:
    """One point compiled and timed: a result row, or the row of a refused point with its reason."""
    from npu.config import ConfigError, load_config
    from npu.sim import simulate

    from .errors import USER_ERRORS

    row = {"key": point.key, "model": point.model, **{k: str(v) for k, v in point.changes}, "ok": False,
           "reason": "", "cycles": 0, "utilisation": 0.0, "images_per_s": 0.0, "on_chip_bytes": 0,
           "area_proxy": 0.0, "macs_per_cycle": 0, "bound_mvu": 0, "bound_write": 0, "bound_read": 0,
           "bound_dram": 0, "seconds": 0.0}
    t0 = time.perf_counter()
    try:
        cfg = load_config(base).replace(name="sweep", **dict(point.changes))
        program = _program(point.model, precision, cfg)
        stats = simulate(program.warm() or program, cfg, dram=program.dram, mode="timing").stats
    except (ConfigError, *USER_ERRORS) as exc:
        row["reason"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        row["seconds"] = time.perf_counter() - t0
        return row
    macs = program.metadata.macs
    row.update(ok=True, cycles=int(stats.total_cycles), utilisation=macs / (stats.total_cycles * cfg.macs),
               images_per_s=cfg.clock_mhz * 1e6 / stats.total_cycles, on_chip_bytes=on_chip_bytes(cfg),
               area_proxy=area_proxy(cfg), macs_per_cycle=cfg.macs, seconds=time.perf_counter() - t0)
    for r in stats.regions:
        if r.ops and r.bound in BOUND_COLUMNS:
            row[BOUND_COLUMNS[r.bound]] += 1
    return row


#: A region's bound (npu.sim.stats.RegionStats.bound) -> the column counting the layers it bounds.
BOUND_COLUMNS = {"MVU": "bound_mvu", "write": "bound_write", "read": "bound_read", "DRAM": "bound_dram"}


def task_chunks(spec: dict, pending: list[Point]) -> list[list[Point]]:
    """``pending`` cut into Dask tasks of at most POINTS_PER_TASK points, each task's points sharing one program
    (same model and NPUConfig.program_key), so a task compiles once; a point the base cannot take goes alone."""
    from npu.config import ConfigError, load_config

    base = load_config(spec["base"])
    groups: dict = {}
    for p in pending:
        try:
            key = (p.model, base.replace(**dict(p.changes)).program_key())
        except (ConfigError, TypeError, ValueError):
            key = (p.model, "refused", p.key)
        groups.setdefault(key, []).append(p)
    return [group[i:i + POINTS_PER_TASK] for group in groups.values() for i in range(0, len(group), POINTS_PER_TASK)]


def pareto(rows: list[dict]) -> list[dict]:
    """The legal rows no other row beats on both images/s (higher) and area proxy (lower), by area."""
    ok = sorted((r for r in rows if r["ok"]), key=lambda r: (r["area_proxy"], -r["images_per_s"]))
    front, best = [], -1.0
    for r in ok:
        if r["images_per_s"] > best:
            front.append(r)
            best = r["images_per_s"]
    return front


def run_sweep(spec: dict, out, *, scheduler: str | None = None, workers: int = 2, progress=None) -> list[dict]:
    """Evaluate every point of ``spec`` (reusing those in ``out``'s cache), write ``out`` (Parquet) and a
    Pareto chart beside it; returns the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from distributed import Client, LocalCluster, as_completed

    out = Path(out)
    cache = out.with_name(out.name + ".points")
    cache.mkdir(parents=True, exist_ok=True)
    todo = points(spec)
    rows, pending = {}, []
    for p in todo:
        f = cache / f"{p.key}.json"
        if f.exists():
            rows[p.key] = json.loads(f.read_text())
        else:
            pending.append(p)
    if pending:
        cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
        with Client(scheduler or cluster) as client:
            chunks = task_chunks(spec, pending)
            futures = client.map(evaluate_many, [spec["base"]] * len(chunks), [spec["precision"]] * len(chunks),
                                 chunks, pure=False)
            for f in as_completed(futures):
                for row in f.result():
                    tmp = cache / f".{row['key']}.json.tmp"
                    tmp.write_text(json.dumps(row))
                    tmp.replace(cache / f"{row['key']}.json")            # the rename commits the point
                    rows[row["key"]] = row
                if progress is not None:
                    progress(len(rows), len(todo), client.dashboard_link)
        if cluster is not None:
            cluster.close()
    ordered = [rows[p.key] for p in todo]
    columns = sorted({k for r in ordered for k in r})
    table = pa.table({c: [r.get(c) for r in ordered] for c in columns})
    pq.write_table(table, out)
    pareto_chart(ordered, out.with_suffix(".png"))
    return ordered


def pareto_chart(rows: list[dict], path) -> None:
    """Images/s against the area proxy, every legal point and the frontier (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["ok"]]
    front = pareto(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r["area_proxy"] for r in ok], [r["images_per_s"] for r in ok], s=12, alpha=0.5, label="points")
    ax.plot([r["area_proxy"] for r in front], [r["images_per_s"] for r in front], "r.-", label="Pareto frontier")
    ax.set_xlabel("area proxy (LUT-equivalents, npu/area.py)")
    ax.set_ylabel("images/s (simulated, batch 1)")
    ax.set_title(f"{len(ok)} legal of {len(rows)} points")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
