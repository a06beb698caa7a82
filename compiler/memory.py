"""Vector-memory planning: place buffers by liveness so that buffers alive at once never overlap."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import MemoryPlanError


@dataclass(frozen=True)
class Buffer:
    """A buffer of ``size`` vectors, written first at step ``first`` and read last at step ``last``."""

    name: str
    size: int
    first: int
    last: int


def plan_memory(buffers: list[Buffer], capacity: int, *, reserved: int = 0, alternate: bool = False) -> dict[str, int]:
    """Base address of every buffer (first fit in order of first use); addresses below ``reserved`` stay free.

    Two buffers may share addresses only if their lifetimes [first, last] do
    not overlap.  With ``alternate`` every second buffer (in order of first
    use) is placed as high as it fits instead of as low: neighbours in a
    chain of layers then sit at opposite ends, which leaves room that plain
    first fit can fragment.  Raises MemoryPlanError naming the step and the
    buffers alive there when the memory is too small.
    """
    for b in buffers:
        if b.size <= 0 or b.last < b.first:
            raise ValueError(f"buffer {b.name!r}: size {b.size} and lifetime [{b.first}, {b.last}] are not valid")
    placed: list[tuple[Buffer, int]] = []
    out: dict[str, int] = {}
    for k, b in enumerate(sorted(buffers, key=lambda x: (x.first, -x.size, x.name))):
        live = sorted((base, base + o.size) for o, base in placed if not (o.last < b.first or o.first > b.last))
        gaps, lo = [], reserved
        for start, end in live:
            if start > lo:
                gaps.append((lo, start))
            lo = max(lo, end)
        gaps.append((lo, max(capacity, lo)))
        fits = [(g0, g1) for g0, g1 in gaps if g1 - g0 >= b.size]
        if not fits:
            alive = [o.name for o, _ in placed if o.first <= b.first <= o.last] + [b.name]
            need = sum(o.size for o, _ in placed if o.first <= b.first <= o.last) + b.size + reserved
            why = (f"more than the {capacity} the vector memory holds" if need > capacity else
                   f"and the {capacity} of the vector memory cannot hold them side by side there (the space is "
                   f"fragmented by the buffers placed before)")
            raise MemoryPlanError(
                f"step {b.first}: buffers {', '.join(alive)} need {need} vectors together, {why} (a larger "
                f"machine, or spilling to DRAM, is needed)", b.first, tuple(alive))
        addr = fits[-1][1] - b.size if alternate and k % 2 else fits[0][0]
        placed.append((b, addr))
        out[b.name] = addr
    return out
