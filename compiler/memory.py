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


def plan_memory(buffers: list[Buffer], capacity: int, *, reserved: int = 0) -> dict[str, int]:
    """Base address of every buffer (first fit in order of first use); addresses below ``reserved`` stay free.

    Two buffers may share addresses only if their lifetimes [first, last] do
    not overlap.  Raises MemoryPlanError naming the step and the buffers
    alive there when the memory is too small.
    """
    for b in buffers:
        if b.size <= 0 or b.last < b.first:
            raise ValueError(f"buffer {b.name!r}: size {b.size} and lifetime [{b.first}, {b.last}] are not valid")
    placed: list[tuple[Buffer, int]] = []
    out: dict[str, int] = {}
    for b in sorted(buffers, key=lambda x: (x.first, -x.size, x.name)):
        live = sorted((base, base + o.size) for o, base in placed if not (o.last < b.first or o.first > b.last))
        addr = reserved
        for lo, hi in live:
            if addr + b.size <= lo:
                break
            addr = max(addr, hi)
        if addr + b.size > capacity:
            alive = [o.name for o, _ in placed if o.first <= b.first <= o.last] + [b.name]
            need = sum(o.size for o, _ in placed if o.first <= b.first <= o.last) + b.size + reserved
            raise MemoryPlanError(
                f"step {b.first}: buffers {', '.join(alive)} need {need} vectors together, more than the "
                f"{capacity} the vector memory holds (a larger machine, or spilling to DRAM, is needed)",
                b.first, tuple(alive))
        placed.append((b, addr))
        out[b.name] = addr
    return out
