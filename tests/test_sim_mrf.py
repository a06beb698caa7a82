"""The matrix register file holds, slot by slot, the tile the last load over that slot brought.

A chain's tiles are looked up without per-slot work when its slots are
exactly those of one load that no later load has touched; these tests load
over parts of earlier loads and check every slot against a machine that
loaded its tile alone.
"""
import numpy as np

from npu import kernels as sp
from npu.sim.machine import Machine

CFG = sp.config("tiny", weight="mxfp8_e4m3", act="mxfp8_e4m3", mfu_format="bf16")


def _image(tiles: int) -> bytes:
    """Packed MXFP8 tiles of random bytes (every byte is an E8M0 scale or an E4M3 element)."""
    nbytes = tiles * Machine(CFG).tile_bytes
    return np.random.default_rng(9).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


IMAGE = _image(8)


def _tile(source: int) -> np.ndarray:
    """Tile ``source`` of the image, decoded by a machine that loads it alone."""
    m = Machine(CFG, IMAGE)
    m.m_load({"daddr": source * m.tile_bytes, "maddr": 0, "count": 1})
    return m.mrf_tiles(0, 1)


def _check(m: Machine, first: int, count: int, sources: list[int]) -> None:
    got = m.mrf_tiles(first, count)
    for i, source in enumerate(sources):
        want = _tile(source)
        for name, g, w in zip(got._fields, got, want):
            assert np.array_equal(g[i], w[0], equal_nan=True), (first + i, source, name)


def test_slots_hold_what_the_last_load_over_them_brought():
    m = Machine(CFG, IMAGE)
    tb = m.tile_bytes
    m.m_load({"daddr": 0, "maddr": 0, "count": 4})                  # tiles 0-3 in slots 0-3
    _check(m, 0, 4, [0, 1, 2, 3])
    m.m_load({"daddr": 5 * tb, "maddr": 2, "count": 1})             # tile 5 over slot 2
    _check(m, 0, 4, [0, 1, 5, 3])
    _check(m, 2, 1, [5])
    m.m_load({"daddr": 0, "maddr": 0, "count": 4})                  # the first load again
    _check(m, 0, 4, [0, 1, 2, 3])
    m.m_load({"daddr": 6 * tb, "maddr": 3, "count": 2})             # tiles 6-7 over slots 3-4
    _check(m, 0, 4, [0, 1, 2, 6])
    _check(m, 3, 2, [6, 7])
    m.m_load({"daddr": 4 * tb, "maddr": 1, "count": 1})             # tile 4 over slot 1
    _check(m, 0, 4, [0, 4, 2, 6])
    _check(m, 3, 2, [6, 7])


def test_a_machine_adopting_another_mrf_sees_its_loads_not_later_ones():
    first = Machine(CFG, IMAGE)
    tb = first.tile_bytes
    first.m_load({"daddr": 0, "maddr": 0, "count": 4})
    warm = Machine(CFG, IMAGE)
    warm.adopt_mrf(first)
    first.m_load({"daddr": 4 * tb, "maddr": 0, "count": 4})         # after the adoption: not the other's
    _check(warm, 0, 4, [0, 1, 2, 3])
    warm.m_load({"daddr": 7 * tb, "maddr": 3, "count": 1})
    _check(warm, 0, 4, [0, 1, 2, 7])
    _check(first, 0, 4, [4, 5, 6, 7])


def test_random_loads_over_each_other():
    """Loads of random places and lengths; after each, the range of every load still recorded and a random
    range hold, slot by slot, the tile the last load over them brought."""
    rng = np.random.default_rng(4)
    m = Machine(CFG, IMAGE)
    slots = min(CFG.mrf_tiles, 24)
    held = [None] * slots                                       # image tile each slot holds
    loads = []
    for _ in range(60):
        count = int(rng.integers(1, 5))
        first = int(rng.integers(0, slots - count + 1))
        source = int(rng.integers(0, 8 - count + 1))
        m.m_load({"daddr": source * m.tile_bytes, "maddr": first, "count": count})
        held[first:first + count] = range(source, source + count)
        loads.append((first, count))
        a = int(rng.integers(0, slots))
        for lo, n in loads[-4:] + [(a, int(rng.integers(1, slots - a + 1)))]:
            if None not in held[lo:lo + n]:
                _check(m, lo, n, held[lo:lo + n])
