"""npu sweep: machine configurations x models compiled and timed on Dask, resumable, illegal points reported.

A small spec on the tiny machine: six points, three of which the compiler refuses (a vector memory too small
for the network), each refusal a row with its reason.  Each legal point's cycles equal a direct compile and
timing run of the same configuration; a second run reuses every point; the Pareto frontier is the legal rows
that no other beats on images/s and area proxy, checked by brute force.  The area proxy is npu.area's
synthesis-measured model, extended to write ports and falling back for formats it has no cost for.
"""
import json

import pyarrow.parquet as pq
import pytest

from compiler.compile import compile_model
from compiler.models import nets
from compiler.sweep import SweepError, area_proxy, check_spec, multiplier_proxy, pareto, points, run_sweep
from npu.config import load_config
from npu.sim import simulate

SPEC = {"base": "tiny", "models": ["resnet_small"], "precision": "ms-fp9",
        "grid": {"tiles": [1, 2, 4], "vrf_depth": [64, 4096]}}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "r.parquet"
    rows = run_sweep(check_spec(SPEC), out, workers=2)
    return out, rows


def test_every_point_is_a_row_and_refusals_have_reasons(swept):
    out, rows = swept
    table = pq.read_table(out).to_pylist()
    assert len(table) == len(rows) == 6
    refused = [r for r in table if not r["ok"]]
    assert {r["vrf_depth"] for r in refused} == {"64"} and all("vector memory" in r["reason"] for r in refused)
    assert out.with_suffix(".png").stat().st_size > 5_000


def test_legal_points_equal_a_direct_compile(swept):
    _, rows = swept
    for r in (r for r in rows if r["ok"]):
        cfg = load_config("tiny").replace(name="check", tiles=int(r["tiles"]), vrf_depth=int(r["vrf_depth"]))
        program = compile_model(nets.resnet_small(), cfg, "ms-fp9").program
        cycles = simulate(program.warm() or program, cfg, dram=program.dram, mode="timing").stats.total_cycles
        assert r["cycles"] == cycles
        assert r["area_proxy"] == area_proxy(cfg)
        assert r["images_per_s"] == pytest.approx(cfg.clock_mhz * 1e6 / cycles)


def test_a_second_run_reuses_every_point(swept, monkeypatch):
    out, rows = swept
    import compiler.sweep as sweep

    monkeypatch.setattr(sweep, "evaluate", lambda *a: pytest.fail("a computed point was computed again"))
    again = run_sweep(check_spec(SPEC), out, workers=1)
    assert again == rows
    assert len(list(out.with_name(out.name + ".points").glob("*.json"))) == 6


def test_the_frontier_by_brute_force(swept):
    _, rows = swept
    ok = [r for r in rows if r["ok"]]
    beaten = {id(r) for r in ok for s in ok if s is not r and s["images_per_s"] >= r["images_per_s"]
              and s["area_proxy"] <= r["area_proxy"] and (s["images_per_s"], s["area_proxy"]) !=
              (r["images_per_s"], r["area_proxy"])}
    assert {r["key"] for r in pareto(rows)} == {r["key"] for r in ok if id(r) not in beaten}


def test_random_specs_and_bad_specs():
    spec = check_spec({"base": "tiny", "models": ["resnet_small"],
                       "random": {"samples": 5, "seed": 3, "fields": {"tiles": [1, 2], "lanes": [4, 8]}}})
    assert len(points(spec)) == 5 and points(spec) == points(spec)
    for bad, says in [({"grid": {"tiles": [1]}, "random": {}}, "exactly one of grid and random"),
                      ({"grid": {"colour": [1]}}, "cannot be swept"), ({"grid": {"tiles": []}}, "non-empty list"),
                      ({"models": ["nope"], "grid": {"tiles": [1]}}, "models must be"),
                      ({"random": {"samples": 0, "fields": {"tiles": [1]}}}, "samples"), ([], "mapping"),
                      ({"grid": {"tiles": [1]}, "extra": 1}, "unknown key")]:
        with pytest.raises(SweepError, match=says):
            check_spec(bad)
    assert json.dumps(check_spec({"grid": {"tiles": [1]}}))


def test_points_that_share_a_program_compile_it_once(monkeypatch):
    """Timing fields (tiles, lanes, write ports, clock) leave the program alone: one compile per program key
    and per process, every point still timed on its own configuration; a refused program is refused for each
    of its points."""
    import compiler.sweep as sweep

    spec = check_spec({"base": "tiny", "models": ["resnet_small"],
                       "grid": {"tiles": [1, 2], "write_ports": [1, 4], "clock_mhz": [50, 100],
                                "vrf_depth": [64, 4096]}})
    todo = points(spec)
    chunks = sweep.task_chunks(spec, todo)
    assert sorted(p.key for c in chunks for p in c) == sorted(p.key for p in todo)
    assert len(chunks) == 2 and all(len({dict(p.changes)["vrf_depth"] for p in c}) == 1 for c in chunks)
    compiled = []
    import compiler.compile as compile_module

    original = compile_module.compile_model
    monkeypatch.setattr(compile_module, "compile_model", lambda *a, **k: compiled.append(a[1]) or original(*a, **k))
    monkeypatch.setattr(sweep, "_PROGRAMS", {})
    rows = [r for c in chunks for r in sweep.evaluate_many("tiny", "ms-fp9", c)]
    assert len(compiled) == 2
    ok = [r for r in rows if r["ok"]]
    assert len(ok) == 8 and len({r["cycles"] for r in ok}) > 4         # each point timed on its own machine
    assert all("vector memory" in r["reason"] for r in rows if not r["ok"])
    for r in ok[:3]:
        cfg = load_config("tiny").replace(name="check", **{k: type(getattr(load_config("tiny"), k))(v) for k, v in
                                                           r.items() if k in ("tiles", "write_ports", "clock_mhz",
                                                                              "vrf_depth")})
        program = compile_model(nets.resnet_small(), cfg, "ms-fp9").program
        assert r["cycles"] == simulate(program.warm() or program, cfg, dram=program.dram,
                                       mode="timing").stats.total_cycles


def test_area_proxy_is_the_synthesis_area_model(monkeypatch):
    from npu import area

    tiny = load_config("tiny")
    assert area_proxy(tiny) == area.area_estimate(tiny).equivalent
    # write ports are charged beyond the RTL (extra MFU chains, the bank network), never refused
    assert area_proxy(tiny.replace(write_ports=2)) > area_proxy(tiny)
    # a format without a measured cost falls back to multiplier-equivalents priced as ms-fp9 lanes
    costs = {k: dict(v) for k, v in area.COSTS.items()}
    costs["mvu_lane"].pop("mxint8")
    monkeypatch.setattr(area, "COSTS", costs)
    mx = tiny.replace(weight_format="mxint8", activation_format="mxint8")
    assert area_proxy(mx) == pytest.approx(multiplier_proxy(mx) * area.lut_equivalent("mvu_lane", "ms-fp9"), abs=0.1)
