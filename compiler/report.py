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
    weight_format: str = ""  # MVU layers: the formats the layer multiplies in
    activation_format: str = ""

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
                             r.cycles if r else 0, r.bound if r else "",
                             getattr(layer, "weight_format", ""), getattr(layer, "activation_format", "")))
    return rows


def average_bits(compiled) -> tuple[float, float]:
    """(weights, activations): the program's storage bits per value of the MVU's operands.

    Weights are weighted by each layer's weight count, activations by the
    values the MVU reads in that layer (``LayerInfo.mvu_reads``); a format's
    bits per value include its shared scale (``BlockFormat.bits_per_value``).
    0.0 when the program has no MVU layer.
    """
    from npu.numerics.formats import get_format

    n = compiled.config.native_dim
    sums = [0.0, 0.0]
    counts = [0, 0]
    for layer in compiled.layers:
        if not getattr(layer, "weight_format", ""):
            continue
        for i, (fmt, count) in enumerate(((layer.weight_format, layer.weights),
                                          (layer.activation_format, layer.mvu_reads))):
            sums[i] += get_format(fmt).bits_per_value(n) * count
            counts[i] += count
    return tuple(s / c if c else 0.0 for s, c in zip(sums, counts))


def report_table(compiled, stats) -> str:
    """The readable report: one line per layer and a total line."""
    rows = layer_rows(compiled, stats)
    cfg = compiled.config
    lines = [f"{'layer':<28} {'kind':<10} {'MACs':>14} {'tiles':>6} {'ideal cyc':>10} {'sim cyc':>10} {'util':>6} "
             f"{'bound':<5} {'weights/activations':<21}"]
    for r in rows:
        formats = f"{r.weight_format}/{r.activation_format}" if r.weight_format else "-"
        lines.append(f"{r.name[:28]:<28} {r.kind:<10} {r.macs:>14,} {r.tiles:>6} {r.ideal_cycles:>10,.0f} "
                     f"{r.cycles:>10,} {r.utilisation:>6.1%} {r.bound:<5} {formats:<21}")
    macs = sum(r.macs for r in rows)
    ideal = macs / cfg.macs
    total = stats.total_cycles if stats is not None else 0
    lines.append(f"{'total':<28} {'':<10} {macs:>14,} {sum(r.tiles for r in rows):>6} {ideal:>10,.0f} "
                 f"{total:>10,} {(ideal / total if total else 0):>6.1%}")
    wbits, abits = average_bits(compiled)
    if wbits:
        lines.append(f"average bits per value (scales included): weights {wbits:.3g} (by weight count), "
                     f"activations {abits:.3g} (by values the MVU reads)")
    rounding = compiled.program.metadata.weight_rounding
    if rounding and (rounding.get("method", "nearest") != "nearest" or rounding.get("bias_correction")):
        lines.append(f"weights rounded: {rounding['method']}"
                     + (f", bias correction" if rounding.get("bias_correction") else "")
                     + (f" ({rounding['calibration_inputs']} calibration inputs)"
                        if rounding.get("calibration_inputs") else "")
                     + (f"; {rounding['repaired_blocks']} blocks re-rounded to stay exact"
                        if rounding.get("repaired_blocks") else ""))
    if stats is not None:
        lines.append("bound: the layer's busiest resource: MVU tile passes, vector writes or reads (one per cycle), "
                     "or DRAM transfers")
        lines.append(f"latency {stats.latency_us:,.1f} us at {cfg.clock_mhz:g} MHz; DRAM read "
                     f"{stats.dram_read_bytes / 1e6:,.1f} MB, written {stats.dram_write_bytes / 1e6:,.1f} MB")
    return "\n".join(lines)
