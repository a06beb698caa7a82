"""The per-layer compile report: MACs, ideal cycles at peak, simulated cycles, MVU utilisation and what bounds each layer."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LayerRow:
    """One layer of the report."""

    name: str
    kind: str
    macs: int
    tiles: int
    ideal_cycles: float
    cycles: int
    bound: str = ""          # the layer's busiest resource (npu.sim.stats.RegionStats.bound)

    @property
    def utilisation(self) -> float:
        """Ideal cycles / simulated cycles (0 for layers without MACs)."""
        return self.ideal_cycles / self.cycles if self.cycles and self.macs else 0.0


def layer_rows(compiled, stats) -> list[LayerRow]:
    """A row per layer; cycles come from the simulated run's region statistics (``stats`` may be None)."""
    peak = compiled.config.macs
    regions = {r.name: r for r in (stats.regions if stats is not None else []) if r.ops}
    rows = []
    for layer in compiled.layers:
        r = regions.get(layer.name)
        rows.append(LayerRow(layer.name, layer.kind, layer.macs, layer.tiles, layer.macs / peak,
                             r.cycles if r else 0, r.bound if r else ""))
    return rows


def report_table(compiled, stats) -> str:
    """The readable report: one line per layer and a total line."""
    rows = layer_rows(compiled, stats)
    cfg = compiled.config
    lines = [f"{'layer':<28} {'kind':<10} {'MACs':>14} {'tiles':>6} {'ideal cyc':>10} {'sim cyc':>10} {'util':>6} "
             f"{'bound':<5}"]
    for r in rows:
        lines.append(f"{r.name[:28]:<28} {r.kind:<10} {r.macs:>14,} {r.tiles:>6} {r.ideal_cycles:>10,.0f} "
                     f"{r.cycles:>10,} {r.utilisation:>6.1%} {r.bound:<5}")
    macs = sum(r.macs for r in rows)
    ideal = macs / cfg.macs
    total = stats.total_cycles if stats is not None else 0
    lines.append(f"{'total':<28} {'':<10} {macs:>14,} {sum(r.tiles for r in rows):>6} {ideal:>10,.0f} "
                 f"{total:>10,} {(ideal / total if total else 0):>6.1%}")
    if stats is not None:
        lines.append("bound: the layer's busiest resource: MVU tile passes, vector writes or reads (one per cycle), "
                     "or DRAM transfers")
        lines.append(f"latency {stats.latency_us:,.1f} us at {cfg.clock_mhz:g} MHz; DRAM read "
                     f"{stats.dram_read_bytes / 1e6:,.1f} MB, written {stats.dram_write_bytes / 1e6:,.1f} MB")
    return "\n".join(lines)
