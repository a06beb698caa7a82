"""Synthesise the RTL core with Yosys and derive the area model's unit costs (docs/architecture.md "Synthesis").

    .venv/bin/python benchmarks/measure_synthesis.py --write-costs        # tiny + mid64 + all units
    .venv/bin/python benchmarks/measure_synthesis.py --second small16 --write-costs   # quicker second core
    .venv/bin/python benchmarks/measure_synthesis.py --cores-only
    .venv/bin/python benchmarks/measure_synthesis.py --units-only   # then without: finished runs are reused

Synthesises the ``tiny`` core and a second core at another N (``--second``: ``mid64``, tiny with N = 64 and
4 tiles of 16 lanes, 4,096 MACs; or ``small16``, N = 16, 256 MACs) through ``hdl.synth.synthesize`` (the
full flow), then, for every block format given (``--formats``, default all the RTL builds), the slice-dot of
a tile engine, its per-row rounding and the input conversion, and the three MFU stages for bf16 and fp32
(``hdl.synth.synthesize_module``).  One Yosys at a time by default (``--jobs``).
Prints the markdown table of docs/architecture.md and the ``COSTS`` table of ``npu/area.py`` (written into
it with ``--write-costs``), checks the model against the two cores, and writes everything to
``build/synth/measurements.json`` (which tests/test_area.py compares with ``npu/area.py`` when it exists).
Finished runs are reused when they ran the same script on the same sources (``hdl.synth.finished``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hdl.core import block_parameters  # noqa: E402
from hdl.synth import (SYNTH_BUILD, dsp_blocks, ff_bits, lut_count, report_table, synthesize,  # noqa: E402
                       synthesize_module, yosys_version)
from hdl.toolchain import RTL  # noqa: E402
from npu.config import MVU_FORMATS, NPUConfig, load_config  # noqa: E402
from npu.numerics.formats import get_format  # noqa: E402

OUT = SYNTH_BUILD / "measurements.json"
SLICE_SOURCES = ["npu_elem_decode.v", "npu_slice_dot.v"]
ROUND_SOURCES = ["npu_round_float.v", "npu_block_round.v"]
UNIT_LANES = 8
MFU_STAGES = ("npu_mfu_mul", "npu_mfu_add", "npu_mfu_act")
QUANT_SOURCES = ["npu_round_float.v", "npu_block_scale.v", "npu_bfp_quantize.v", "npu_mx_quantize.v",
                 "npu_block_quantize.v"]
MFU_SOURCES = ["npu_mfu_mul.v", "npu_mfu_add.v", "npu_mfu_act.v"]
SLICE_PARAMS = ("KIND", "E_BITS", "M_BITS", "EXP_BITS", "ELEM_SPECIAL")
ROUND_PARAMS = ("F_BITS", "SCALE_BITS", "SCALE_BIAS")
QUANT_PARAMS = ("KIND", "E_BITS", "M_BITS", "F_BITS", "EXP_BITS", "EXP_BIAS", "ELEM_SPECIAL", "SCALE_BITS", "SCALE_BIAS",
                "EMAX")
MFU_CODES = {"fp16": 0, "bf16": 1, "fp32": 2}


#: The second core of the fit (with ``tiny``), by name: a machine the RTL builds at another N.
SECOND = {"mid64": dict(native_dim=64, tiles=4, lanes=16),       # 4,096 MACs: 8 x tiny
          "small16": dict(native_dim=16, tiles=2, lanes=8)}      # 256 MACs: half of tiny


def machines(second: str = "mid64") -> list[NPUConfig]:
    """The two synthesised cores: the tiny preset and ``second`` (:data:`SECOND`), tiny at another N."""
    tiny = load_config("tiny")
    if second not in SECOND:
        raise ValueError(f"the second core must be one of {', '.join(SECOND)}, not {second!r}")
    return [tiny, tiny.replace(name=second, **SECOND[second])]


def resources(cells: dict) -> list[float]:
    """[ALUTs, registers, DSP blocks] of mapped cell counts."""
    return [lut_count(cells), ff_bits(cells), dsp_blocks(cells)[0]]


def block_n(fmt: str) -> int:
    """The native dimension a format's units are synthesised at: 32, or 16 where the RTL needs it."""
    for n in (32, 16):
        if get_format(fmt).block_for(n) == n:
            return n
    raise ValueError(fmt)


def acc_width(fmt: str, n: int) -> int:
    """ACC_W of the tile engine (npu_block_format.vh block_acc_width): the exact block sum's bits."""
    e = get_format(fmt).element
    mag = {"fp": e.mbits + 1 + (1 << e.ebits) - 2, "int": e.bits}.get(e.kind, e.bits - 1)
    return 2 * mag + math.ceil(math.log2(n)) + 2


def unit_tasks(formats: tuple[str, ...] = MVU_FORMATS) -> dict[str, tuple]:
    """The unit syntheses: name -> (top, parameters, sources).  A tile engine is synthesised as its parts
    (the slice-dot of LANES lanes, the per-row rounding), not whole: the whole engine selects its slice
    with a shifter as wide as the tile register, which Yosys 0.23 takes gigabytes over for 3- and 6-bit
    elements; the rest of the engine (accumulators, the tile register) comes from the cores.  ``formats``:
    the MVU formats to measure (ms-fp9 always: the cores' engines are split by it)."""
    tasks = {}
    for fmt in dict.fromkeys(("ms-fp9", *formats)):
        bp = block_parameters(get_format(fmt))
        n = block_n(fmt)
        aw = acc_width(fmt, n)
        tasks[f"slice {fmt}"] = ("npu_slice_dot", {"L": UNIT_LANES, "ACC_W": aw,
                                                    **{k: bp.get(k, 0) for k in SLICE_PARAMS}}, SLICE_SOURCES)
        tasks[f"round {fmt}"] = ("npu_block_round", {"ACC_W": aw, **{k: bp.get(k, 0) for k in ROUND_PARAMS}},
                                 ROUND_SOURCES)
        tasks[f"quantizer {fmt}"] = ("npu_block_quantize", {"B": n, "FMT": 0, **{k: bp.get(k, 0) for k in QUANT_PARAMS}},
                                     QUANT_SOURCES)
    for mfu, code in MFU_CODES.items():
        if mfu == "fp16":
            continue                        # from the cores
        for stage in MFU_STAGES:
            tasks[f"{stage} {mfu}"] = (stage, {"FMT": code}, MFU_SOURCES)
    return tasks


def run_unit(name: str, task: tuple) -> dict:
    """One unit synthesis (full flow; then flattened for ``sta``, except the input conversions, whose timing run
    takes longer than their synthesis)."""
    top, params, sources = task
    return synthesize_module(top, params, SYNTH_BUILD / ("unit_" + name.replace(" ", "_")),
                             sources=[RTL / s for s in sources], reuse=True, timing=not name.startswith("quantizer"))


def unit_costs(results: dict[str, dict], tiny) -> dict:
    """The cost table: per multiplier lane (the slice-dot / LANES), per row (the rounding, plus the rest of an
    ms-fp9 engine per row in the tiny core: accumulator, tile register), per element of the input
    conversion, per MFU lane (three stages; fp16 from the tiny core)."""
    costs: dict[str, dict] = {"mvu_lane": {}, "mvu_row": {}, "quantizer": {}, "mfu_lane": {}}
    cfg = load_config("tiny")
    rows = cfg.tiles * cfg.native_dim
    u = tiny.units
    own = [u["npu_tile_engine"][k] - u["npu_slice_dot"][k] - u["npu_block_round"][k] for k in ("luts", "ffs", "dsps")]
    for fmt in (f for f in MVU_FORMATS if f"slice {f}" in results):
        name = get_format(fmt).name
        n = block_n(fmt)
        costs["mvu_lane"][name] = [round(v / UNIT_LANES, 3) for v in resources(results[f"slice {fmt}"]["cells"])]
        costs["mvu_row"][name] = [round(r + o / rows, 3)
                                  for r, o in zip(resources(results[f"round {fmt}"]["cells"]), own)]
        costs["quantizer"][name] = [round(v / n, 3) for v in resources(results[f"quantizer {fmt}"]["cells"])]
    lanes = cfg.mfus * cfg.native_dim
    costs["mfu_lane"]["fp16"] = [round(sum(u[st][k] for st in MFU_STAGES) / lanes, 3) for k in ("luts", "ffs", "dsps")]
    for mfu in MFU_CODES:
        if mfu != "fp16":
            costs["mfu_lane"][mfu] = [round(sum(resources(results[f"{st} {mfu}"]["cells"])[i] for st in MFU_STAGES), 3)
                                      for i in range(3)]
    return costs


def model_without_rest(cfg: NPUConfig, costs: dict) -> list[float]:
    """The model's MVU, input-conversion and MFU terms for ``cfg`` (npu/area.py without vector_lane, fixed)."""
    n, out = cfg.native_dim, [0.0, 0.0, 0.0]
    for fmt, _ in cfg.mvu_modes:
        name = get_format(fmt).name
        for i in range(3):
            out[i] += (cfg.tiles * n * cfg.lanes * costs["mvu_lane"][name][i] + cfg.tiles * n * costs["mvu_row"][name][i]
                       + n * costs["quantizer"][name][i])
    for i in range(3):
        out[i] += cfg.mfus * n * costs["mfu_lane"][cfg.mfu_format][i]
    return out


def fit_rest(cores: list[tuple[NPUConfig, list[float]]], costs: dict) -> None:
    """vector_lane and fixed: the rest of the two cores (fp16, same MFUs), a + b x N, solved exactly."""
    (c1, r1), (c2, r2) = cores
    rest1 = [t - m for t, m in zip(r1, model_without_rest(c1, costs))]
    rest2 = [t - m for t, m in zip(r2, model_without_rest(c2, costs))]
    n1, n2 = c1.native_dim, c2.native_dim
    slope = [(b - a) / (n2 - n1) for a, b in zip(rest1, rest2)]
    costs["vector_lane"] = {"all": [round(s, 3) + 0.0 for s in slope]}          # + 0.0: no -0.0 in the table
    costs["fixed"] = {"all": [round(a - s * n1, 1) + 0.0 for a, s in zip(rest1, slope)]}


def held_out(costs: dict, fitted: list[NPUConfig]) -> list[dict]:
    """The model with ``costs`` against every second core of :data:`SECOND` not among ``fitted`` whose full
    run is finished in build/synth (read back, no Yosys): measured and modelled [ALUTs, registers, DSPs]."""
    from hdl.synth import checks_affordable, finished, read_reports, synthesis_script, workdir_for
    from npu import area

    out = []
    saved, area.COSTS = area.COSTS, costs
    try:
        for name in SECOND:
            cfg = machines(name)[1]
            workdir = workdir_for(cfg, "full")
            script = synthesis_script(cfg, workdir, "full", flat_checks=checks_affordable(cfg))
            if any(f.name == cfg.name for f in fitted) or not finished(workdir, script, "full"):
                continue
            r = read_reports(cfg, workdir, "full", yosys="(read back)")
            e = area.area_estimate(cfg)
            out.append({"machine": name, "measured": [r.luts, r.ffs, r.dsps], "modelled": [e.luts, e.ffs, e.dsps]})
    finally:
        area.COSTS = saved
    return out


def docs_table(reports, costs, cores: list[NPUConfig]) -> str:
    """The markdown of docs/architecture.md "Synthesis": the cores, the Arria 10 1150 for scale, the model."""
    from npu import area

    lines = [report_table(reports), "",
             "| machine | model ALUTs | model registers | model DSP blocks | memory bits (exact) | "
             "LUT-equivalents |", "|---|---|---|---|---|---|"]
    area.COSTS = costs
    for cfg in cores + [load_config("bw-a10").replace(name="bw-a10 (as modelled)")]:
        e = area.area_estimate(cfg)
        lines.append(f"| `{cfg.name}` | {e.luts:,} | {e.ffs:,} | {e.dsps:,} | {e.bram_bits:,} | {e.equivalent:,.0f} |")
    return "\n".join(lines)


AREA_PY = ROOT / "npu" / "area.py"
COSTS_START = "COSTS: dict[str, dict] = "


def costs_source(costs: dict) -> str:
    """The ``COSTS = ...`` assignment of npu/area.py for ``costs``: one line per table, entries sorted."""
    lines = [COSTS_START + "{"]
    for table, entries in costs.items():
        body = ", ".join(f"{json.dumps(key)}: {json.dumps(list(value))}" for key, value in sorted(entries.items()))
        lines.append(f"    {json.dumps(table)}: {{{body}}},")
    return "\n".join(lines) + "\n}"


def write_costs(costs: dict, path: Path = AREA_PY) -> None:
    """Replace the COSTS assignment of npu/area.py (from ``COSTS: dict[str, dict] = `` to its closing brace at
    the start of a line, or ``{}``) with ``costs``; ValueError naming the file if it has no such assignment."""
    text = path.read_text()
    start = text.find(COSTS_START)
    if start < 0:
        raise ValueError(f"{path} has no line starting {COSTS_START!r} to replace")
    rest = text[start + len(COSTS_START):]
    if rest.startswith("{}"):
        end = start + len(COSTS_START) + 2
    else:
        close = rest.find("\n}")
        if close < 0:
            raise ValueError(f"{path}: the COSTS assignment has no closing brace at the start of a line")
        end = start + len(COSTS_START) + close + 2
    path.write_text(text[:start] + costs_source(costs) + text[end:])


def main(argv: list[str] | None = None) -> int:
    """Run the syntheses, print the tables, write build/synth/measurements.json."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cores-only", action="store_true", help="only the two cores (no unit syntheses, no model)")
    p.add_argument("--units-only", action="store_true", help="only the unit syntheses (for a later full run)")
    p.add_argument("--jobs", type=int, default=1,
                   help="Yosys runs at once (default 1: the tiny core alone takes 12 GB when flattened for timing)")
    p.add_argument("--second", choices=sorted(SECOND), default="mid64",
                   help="the core synthesised beside tiny for the fit (default mid64; small16 is quicker)")
    p.add_argument("--formats", default=",".join(MVU_FORMATS),
                   help="comma-separated MVU formats to measure (default all; the model refuses the others)")
    p.add_argument("--write-costs", action="store_true", help="write the measured COSTS into npu/area.py")
    args = p.parse_args(argv)
    cores = machines(args.second)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    unknown = [f for f in formats if f not in MVU_FORMATS]
    if unknown:
        p.error(f"--formats: {', '.join(unknown)} not among the MVU formats ({', '.join(MVU_FORMATS)})")
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:7.0f} s] {msg}", file=sys.stderr, flush=True)

    def core(cfg):
        log(f"synthesising {cfg.name} ...")
        # no flatten for the longest path here (tiny's takes more than 12 GB): read back if an earlier run wrote it
        r = synthesize(cfg, reuse=True, timing=False)
        log(f"{cfg.name}: {r.luts:,} ALUTs, {r.ffs:,} registers, {r.dsps} DSP blocks, {r.cpu_seconds:.0f} s CPU")
        return r

    def unit(name, task):
        r = run_unit(name, task)
        log(f"{name}: {resources(r['cells'])}, {r.get('longest_path_ns')} ns, {r['cpu_seconds']:.0f} s CPU")
        return r

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        core_runs = pool.submit(lambda: [] if args.units_only else [core(cfg) for cfg in cores])
        unit_futures = {} if args.cores_only else {name: pool.submit(unit, name, task)
                                                   for name, task in unit_tasks(formats).items()}
        reports = core_runs.result()
        results = {name: f.result() for name, f in unit_futures.items()}
    if args.units_only:
        log("unit syntheses done; run again without --units-only for the cores and the tables")
        return 0
    print(report_table(reports))
    data = {"yosys": yosys_version(), "cores": [dict(r.to_dict(), cells=None) for r in reports],
            "machines": [c.to_dict() for c in cores]}
    if results:
        costs = unit_costs(results, reports[0])
        fit_rest([(c, [r.luts, r.ffs, r.dsps]) for c, r in zip(cores, reports)], costs)
        data.update(costs=costs, units={name: {k: v for k, v in r.items() if k not in ("cells", "units")}
                                        | {"resources": resources(r["cells"])} for name, r in results.items()})
        # how well the engines synthesised alone predict the engines inside the cores
        checks = []
        for cfg, r in zip(cores, reports):
            eng = r.units["npu_tile_engine"]
            lane, row = costs["mvu_lane"]["ms-fp9"], costs["mvu_row"]["ms-fp9"]
            pred = [cfg.tiles * cfg.native_dim * (cfg.lanes * a + b) for a, b in zip(lane, row)]
            checks.append({"machine": cfg.name, "engines_measured": [eng["luts"], eng["ffs"], eng["dsps"]],
                           "engines_predicted": [round(x) for x in pred]})
        data["engine_checks"] = checks
        data["held_out"] = held_out(costs, cores)
        print()
        print(docs_table(reports, costs, cores))
        print()
        print(costs_source(costs))
        if args.write_costs:
            write_costs(costs)
            log(f"wrote COSTS into {AREA_PY}")
        print(json.dumps(checks, indent=1))
        print("the model against cores it was not fitted to:", json.dumps(data["held_out"], indent=1))
        print(json.dumps(data["units"], indent=1))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    log(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
