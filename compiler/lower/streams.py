"""The three instruction streams of a compiled program and the tokens that order them.

Lowering appends loads, compute groups and stores and says, for each, which
earlier item of another stream it must follow.  :meth:`Streams.finish` then
places the dependency tokens: because every stream runs in order, an item
only has to wait when its requirement is later than every requirement an
earlier item of its stream already waited for, so each wait pops exactly the
token pushed by the item it needs.  Loads that must follow a store (DRAM
read after write) are ordered through a compute ``nop`` that waits for the
store and releases the load.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from npu.isa.encoding import Instruction, make


@dataclass
class _Item:
    instrs: list[Instruction]
    after: dict[str, list[int]] = field(default_factory=dict)   # stream -> items that must finish first
    region: str = ""
    group: int = 0
    kind: str = ""                # e.g. "weights": items a warm program (weights resident) leaves out


# Which token carries "item of stream A finished" to stream B.
_TOKEN = {("load", "compute"): "l2c", ("compute", "load"): "c2l", ("compute", "store"): "c2s",
          ("store", "compute"): "s2c"}


class Streams:
    """Loads, compute groups and stores with cross-stream dependencies; produces one instruction list."""

    def __init__(self):
        self.items: dict[str, list[_Item]] = {"load": [], "compute": [], "store": []}
        self.group = 0
        self.region_name = ""

    def begin(self, region: str) -> None:
        """Start a new group of items (one layer): emitted together, its compute items form one region."""
        self.group += 1
        self.region_name = region

    def _add(self, stream: str, instrs: list[Instruction], after: dict, region: str, kind: str = "") -> int:
        deps = {}
        for other, v in after.items():
            idx = [i for i in ([v] if isinstance(v, int) or v is None else v) if i is not None and i >= 0]
            if not idx:
                continue
            if (other, stream) not in _TOKEN:
                raise ValueError(f"a {stream} item cannot wait for a {other} item")
            deps[other] = idx
        self.items[stream].append(_Item(list(instrs), deps, region or self.region_name, self.group, kind))
        return len(self.items[stream]) - 1

    def load(self, instrs: list[Instruction], *, after_compute: int | None = None, after_store: int | None = None,
             region: str = "", kind: str = "") -> int:
        """Append DMA loads; they start after compute item ``after_compute`` (and store ``after_store``) finish."""
        after = [after_compute]
        if after_store is not None and after_store >= 0:
            after.append(self.compute([make("nop")], after_store=after_store, region=region))
        return self._add("load", instrs, {"compute": after}, region, kind)

    def compute(self, instrs: list[Instruction], *, after_load=None, after_store: int | None = None,
                region: str = "") -> int:
        """Append a compute group (a chain, s_wr or nop)."""
        return self._add("compute", instrs, {"load": after_load, "store": after_store}, region)

    def store(self, instrs: list[Instruction], *, after_compute: int | None = None, region: str = "") -> int:
        """Append DMA stores; they start after compute item ``after_compute`` finishes."""
        return self._add("store", instrs, {"compute": after_compute}, region)

    @property
    def last_compute(self) -> int:
        """Index of the latest compute item (-1 if none)."""
        return len(self.items["compute"]) - 1

    def finish(self, skip: frozenset = frozenset()) -> tuple[list[Instruction], list[tuple[str, int, int]]]:
        """The program (halt appended) and its regions as (name, first, last) instruction indices.

        Items whose kind is in ``skip`` are left out, with the dependencies on
        them (the warm program of a model whose weights are already resident).
        """
        kept = {s: [it.kind not in skip for it in items] for s, items in self.items.items()}
        waits = {s: [set() for _ in items] for s, items in self.items.items()}
        signals = {s: [set() for _ in items] for s, items in self.items.items()}
        for stream, items in self.items.items():
            for src in ("load", "compute", "store"):
                if (src, stream) not in _TOKEN:
                    continue
                token = _TOKEN[(src, stream)]
                done = -1
                for i, it in enumerate(items):
                    if not kept[stream][i]:
                        continue
                    need = max((d for d in it.after.get(src, []) if kept[src][d]), default=-1)
                    if need > done:
                        waits[stream][i].add(token)
                        signals[src][need].add(token)     # each item is awaited at most once per stream
                        done = need
        out: list[Instruction] = []
        regions: list[tuple[str, int, int]] = []
        rank = {"load": 0, "compute": 1, "store": 2}
        order = sorted(((it.group, rank[stream], i, stream, it) for stream, items in self.items.items()
                        for i, it in enumerate(items) if kept[stream][i]), key=lambda e: e[:3])
        last_group = None
        for group, _, i, stream, it in order:
            instrs = _with_tokens(it.instrs, waits[stream][i], signals[stream][i])
            start = len(out)
            out += instrs
            if stream == "compute" and it.region:
                if regions and last_group == group:
                    regions[-1] = (regions[-1][0], regions[-1][1], len(out) - 1)
                else:
                    regions.append((it.region, start, len(out) - 1))
                last_group = group
        out.append(make("halt"))
        return out, regions


def _with_tokens(instrs: list[Instruction], wait: set, signal: set) -> list[Instruction]:
    """Put the waits on the first instruction and the signals on the last (chains: chain / end_chain)."""
    instrs = list(instrs)
    if wait:
        instrs[0] = replace(instrs[0], wait=frozenset(instrs[0].wait | wait))
    if signal:
        instrs[-1] = replace(instrs[-1], signal=frozenset(instrs[-1].signal | signal))
    return instrs
