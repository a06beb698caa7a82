"""Statistics of a simulated run: totals, per-unit utilisation, stalls, per-region breakdown."""
from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field

from ..config import NPUConfig
from ..isa.table import Queue
from .program import DmaOp
from .timing import Schedule


def _shallow(obj):
    """A field-for-field copy of a dataclass instance (faster than ``dataclasses.replace``)."""
    out = object.__new__(type(obj))
    out.__dict__.update(obj.__dict__)
    return out


@dataclass
class RegionStats:
    """Totals for one program region (the compiler marks one per layer)."""

    name: str
    first: int                 # first instruction index
    last: int                  # last instruction index (inclusive)
    start: int = 0             # cycle the region's first op starts
    end: int = 0               # cycle its last op ends
    mvu_busy: int = 0
    mfu_busy: int = 0
    dma_busy: int = 0
    macs: int = 0
    dram_bytes: int = 0
    stall_cycles: int = 0
    ops: int = 0
    writes: int = 0            # vectors written by the region's chains
    reads: int = 0             # vectors read by its chains without an MVU

    @property
    def bound(self) -> str:
        """The busiest resource of the region: 'MVU', 'write' (one vector per cycle), 'read' or 'DRAM'."""
        busy = {"MVU": self.mvu_busy, "write": self.writes, "read": self.reads, "DRAM": self.dma_busy}
        return max(busy, key=busy.get) if any(busy.values()) else ""

    @property
    def cycles(self) -> int:
        """Span from the region's first start to its last end."""
        return max(0, self.end - self.start)


@dataclass
class SimStats:
    """Everything a run measured."""

    config: NPUConfig
    total_cycles: int
    instructions: int
    mvu_busy: int = 0
    mfu_busy: int = 0
    load_busy: int = 0
    store_busy: int = 0
    macs: int = 0
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    stalls: dict = field(default_factory=dict)
    regions: list = field(default_factory=list)

    def copy(self) -> "SimStats":
        """An independent copy (its stall table and regions copied too)."""
        out = _shallow(self)
        out.stalls = dict(self.stalls)
        out.regions = [_shallow(r) for r in self.regions]
        return out

    @property
    def latency_us(self) -> float:
        """Wall time the hardware would take, in microseconds."""
        return self.total_cycles / self.config.clock_mhz

    @property
    def peak_macs(self) -> int:
        """MACs the MVU could have done in the run's cycles."""
        return self.total_cycles * self.config.macs

    @property
    def mac_utilisation(self) -> float:
        """MACs done / peak MACs."""
        return self.macs / self.peak_macs if self.peak_macs else 0.0

    def utilisation(self, busy: int) -> float:
        """Busy cycles as a fraction of the run."""
        return busy / self.total_cycles if self.total_cycles else 0.0

    def table(self) -> str:
        """A readable summary table."""
        c = self.config
        lines = [
            f"machine         {c.name}: N={c.native_dim}, {c.tiles} tiles x {c.lanes} lanes, "
            f"{c.macs:,} MACs @ {c.clock_mhz:g} MHz",
            f"instructions    {self.instructions}",
            f"total cycles    {self.total_cycles:,}",
            f"latency         {self.latency_us:,.2f} us",
            f"MACs            {self.macs:,} of {self.peak_macs:,} peak ({self.mac_utilisation:.1%})",
            f"DRAM            read {self.dram_read_bytes:,} B, write {self.dram_write_bytes:,} B",
            "",
            "unit            busy cycles   utilisation",
        ]
        for name, busy in (("MVU", self.mvu_busy), ("MFU", self.mfu_busy), ("load DMA", self.load_busy),
                           ("store DMA", self.store_busy)):
            lines.append(f"{name:<15} {busy:>11,}   {self.utilisation(busy):>10.1%}")
        if self.stalls:
            lines += ["", "stall cause     cycles"]
            for cause, cycles in sorted(self.stalls.items(), key=lambda kv: -kv[1]):
                lines.append(f"{cause:<15} {cycles:>6,}")
        if self.regions:
            lines += ["", f"{'region':<20} {'cycles':>12} {'MACs':>16} {'MVU util':>9} {'DRAM B':>12} {'stalls':>9}"]
            for r in self.regions:
                util = r.macs / (r.cycles * c.macs) if r.cycles else 0.0
                lines.append(f"{r.name[:20]:<20} {r.cycles:>12,} {r.macs:>16,} {util:>9.1%} "
                             f"{r.dram_bytes:>12,} {r.stall_cycles:>9,}")
        return "\n".join(lines)


def collect(schedule: Schedule, config: NPUConfig, instructions: int,
            regions: list[tuple[str, int, int]]) -> SimStats:
    """Statistics of a schedule, broken down by the program's regions."""
    stats = SimStats(config=config, total_cycles=schedule.total_cycles, instructions=instructions)
    stalls: dict[str, int] = defaultdict(int)
    region_stats = [RegionStats(name, first, last) for name, first, last in regions]
    region_of = _region_lookup(region_stats)
    for e in schedule.entries:
        cost, op = e.cost, e.op
        stats.mvu_busy += cost.mvu_busy
        stats.mfu_busy += cost.mfu_busy
        stats.macs += cost.macs
        if isinstance(op, DmaOp):
            if op.queue is Queue.STORE:
                stats.store_busy += cost.dma_busy
                stats.dram_write_bytes += cost.dram_bytes
            else:
                stats.load_busy += cost.dma_busy
                stats.dram_read_bytes += cost.dram_bytes
        for cause, cycles in e.stalls.items():
            stalls[cause] += cycles
        r = region_of(op.index)
        if r is not None:
            r.start = e.start if r.ops == 0 else min(r.start, e.start)
            r.ops += 1
            r.end = max(r.end, e.end)
            r.mvu_busy += cost.mvu_busy
            r.mfu_busy += cost.mfu_busy
            r.dma_busy += cost.dma_busy
            r.macs += cost.macs
            r.dram_bytes += cost.dram_bytes
            r.writes += cost.writes
            r.reads += cost.reads
            r.stall_cycles += e.stall
    stats.stalls = dict(stalls)
    stats.regions = region_stats
    return stats


def _region_lookup(regions: list[RegionStats]):
    """``index -> the first region (in list order) holding instruction index``, or None."""
    firsts = [r.first for r in regions]
    apart = all(a.last < b.first for a, b in zip(regions, regions[1:])) and all(r.first <= r.last for r in regions)
    if not apart:                                   # overlapping or out of order: the first match in the list
        def scan(idx: int):
            for r in regions:
                if r.first <= idx <= r.last:
                    return r
            return None
        return scan

    def search(idx: int):
        i = bisect_right(firsts, idx) - 1
        if i >= 0 and idx <= regions[i].last:
            return regions[i]
        return None
    return search
