"""Simulated batch-1 throughput of the CNNs on the machine presets, with where each one's cycles go.

    .venv/bin/python benchmarks/measure_throughput.py --markdown
    .venv/bin/python benchmarks/measure_throughput.py --models resnet50 --presets bw-a10 bw-s10
    .venv/bin/python benchmarks/measure_throughput.py --models resnet50 --presets bw-s10 --set write_ports=8

Each network is compiled at ms-fp9 and run timing-only, as the server runs it:
the warm program when the weights fit the matrix register file (they stay
resident between images), the whole program otherwise (weights streamed from
DRAM every image).  Utilisation is the model's MACs over the run's peak
MACs.  The last columns split the layers' cycles by the resource that bounds
each (docs/architecture.md, "Timing model"): MVU tile passes, the write path
(output vectors), input reads without an MVU, DRAM.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

from compiler.compile import compile_model
from compiler.models import nets
from npu.config import load_config
from npu.sim import simulate

PRESETS = ("bw-a10", "bw-s10", "bw-s10-n64w16")
MODELS = ("resnet50", "vgg16", "densenet121")
BOUNDS = ("MVU", "write", "read", "DRAM")


def measure(model: str, preset: str, changes: dict | None = None) -> dict:
    """One network on one preset (with ``changes`` to its fields): cycles, images/s, utilisation, resident
    weights, cycles per bound."""
    cfg = load_config(preset)
    if changes:
        cfg = cfg.replace(**changes)
        preset += " " + " ".join(f"{k}={v}" for k, v in changes.items())
    program = compile_model(getattr(nets, model)(), cfg, "ms-fp9").program
    warm = program.warm()
    stats = simulate(warm or program, cfg, dram=program.dram, mode="timing").stats
    by = defaultdict(int)
    for r in stats.regions:
        by[r.bound] += r.cycles
    return {"model": model, "preset": preset, "macs": cfg.macs, "clock_mhz": cfg.clock_mhz,
            "resident": warm is not None, "cycles": stats.total_cycles, "latency_us": stats.latency_us,
            "images_per_s": cfg.clock_mhz * 1e6 / stats.total_cycles,
            "utilisation": program.metadata.macs / (stats.total_cycles * cfg.macs),
            **{f"cycles_{b}": by.get(b, 0) for b in BOUNDS}}


def markdown(rows: list[dict]) -> str:
    """The rows as the docs' table."""
    out = ["| model | preset | MACs | weights | cycles | latency | images/s | utilisation | MVU / write / read / DRAM-bound cycles |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        split = " / ".join(f"{r['cycles_' + b]:,}" for b in BOUNDS)
        out.append(f"| {r['model']} | `{r['preset']}` | {r['macs']:,} | {'resident' if r['resident'] else 'streamed'} | "
                   f"{r['cycles']:,} | {r['latency_us']:,.0f} us | {r['images_per_s']:,.0f} | "
                   f"{100 * r['utilisation']:.1f} % | {split} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--presets", nargs="+", default=list(PRESETS))
    ap.add_argument("--set", nargs="+", default=[], metavar="FIELD=INT",
                    help="change integer fields of every preset (e.g. write_ports=8)")
    ap.add_argument("--markdown", action="store_true", help="print the docs' table")
    args = ap.parse_args(argv)
    changes = {}
    for item in args.set:
        field, _, value = item.partition("=")
        if not value.lstrip("-").isdigit():
            ap.error(f"--set {item!r}: expected FIELD=INTEGER")
        changes[field] = int(value)
    rows = [measure(m, p, changes) for m in args.models for p in args.presets]
    if args.markdown:
        print(markdown(rows))
    else:
        for r in rows:
            print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
