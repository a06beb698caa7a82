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
                     + (", bias correction" if rounding.get("bias_correction") else "")
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


def host_macs(model) -> int:
    """Multiply-accumulates of an ONNX model's Conv, ConvTranspose, Gemm and MatMul nodes (batch 1), from its shapes."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    for t in inferred.graph.initializer:
        shapes[t.name] = list(t.dims)
    total = 0
    for n in inferred.graph.node:
        out = shapes.get(n.output[0]) if n.output else None
        if not out:
            continue
        size = 1
        for d in out:
            size *= max(int(d), 1)
        if n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 1 and shapes.get(n.input[1]):
            w = shapes[n.input[1]]
            per = 1
            for d in w[1:]:
                per *= max(int(d), 1)
            total += size * per
        elif n.op_type in ("Gemm", "MatMul") and shapes.get(n.input[0]):
            a = shapes[n.input[0]]
            trans = any(attr.name == "transA" and attr.i for attr in n.attribute)
            k = a[0] if n.op_type == "Gemm" and trans else a[-1]
            total += size * max(int(k), 1)
    return total


def measure_host_seconds(model, repeats: int = 3) -> float:
    """The median wall time of one onnxruntime run of an ONNX model on zero inputs, on this machine."""
    import time

    import numpy as np
    import onnx
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString() if isinstance(model, onnx.ModelProto) else model,
                                   providers=["CPUExecutionProvider"])
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(double)": np.float64}
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], types.get(i.type, np.float32))
             for i in session.get_inputs()}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def split_table(segmented, npu_stats: dict, host_seconds: dict) -> str:
    """The split of a host-fallback program: per segment its side, operators, MACs and time.

    ``npu_stats`` maps an NPU segment to its simulated run's statistics
    (``latency_us``); ``host_seconds`` maps a host segment to its measured
    onnxruntime time on this machine.  Then the totals per side, and every
    operator that runs on the host with the reason.
    """
    rows = [f"{'segment':<10} {'side':<5} {'operators':>9} {'MACs':>16} {'time (us)':>11}  first operators"]
    totals = {"npu": [0, 0, 0.0], "host": [0, 0, 0.0]}
    for seg in segmented.program.segments:
        if seg.kind == "npu":
            macs = seg.program.metadata.macs
            us = npu_stats[seg.name].latency_us if seg.name in npu_stats else 0.0
        else:
            macs = host_macs(segmented.models[seg.name])
            us = host_seconds.get(seg.name, 0.0) * 1e6
        t = totals[seg.kind]
        t[0] += len(seg.nodes)
        t[1] += macs
        t[2] += us
        names = ", ".join(n.split(" ", 1)[-1] for n in seg.nodes[:4]) + (", ..." if len(seg.nodes) > 4 else "")
        rows.append(f"{seg.name:<10} {seg.kind:<5} {len(seg.nodes):>9} {macs:>16,} {us:>11,.1f}  {names}")
    all_macs = sum(t[1] for t in totals.values()) or 1
    for side, label in (("npu", "NPU (simulated)"), ("host", "host (onnxruntime, measured here)")):
        t = totals[side]
        rows.append(f"{'total':<10} {side:<5} {t[0]:>9} {t[1]:>16,} {t[2]:>11,.1f}  {label}: "
                    f"{t[1] / all_macs:.1%} of the MACs")
    rows.append("operators on the host, and why:")
    rows += [f"  {p['node']} ({p['op']}): {p['reason']}" for p in segmented.host_ops]
    return "\n".join(rows)
