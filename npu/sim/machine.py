"""The functional model: memories and the batched execution of each op.

Every chain runs as one batched computation over all its iterations: the
address generators become index arrays, the MVU is one exact GEMM per
reduction block (``npu.numerics.dot``), and the chain's MFU pipeline runs
in one fused pass per vector (``npu.numerics.mfu_kernels``).  Results equal
the numerics contract bit for bit.
"""
from __future__ import annotations

import bisect
import functools
import hashlib
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from typing import NamedTuple

import numba
import numpy as np

from ..config import NPUConfig
from ..numerics import mfu as mfu_math
from ..numerics import fused, mfu_kernels
from ..numerics import int_gemm
from ..numerics.dot import BlockSums, elements_always_finite, gemm_plan, matvec_block_sums, reduction_block
from ..numerics.formats import get_format
from ..numerics.pack import tile_nbytes, unpack_bits
from ..numerics.quantize import (element_values, gather_quantize_to_integers, gather_quantize_to_values,
                                 integers_gather, scale_values)
from ..isa.validate import address_extent
from .dram import Dram
from .errors import SimulationError
from .program import ChainOp, DmaOp, ScalarOp


#: Serial time (seconds) below which a parallel kernel runs on the calling thread alone: starting a
#: parallel loop and joining its threads costs about 0.1 ms on a 2-core host, more than it saves there.
SERIAL_BELOW_S = 3e-4
#: Measured serial seconds per element of the kernels :func:`_threads_for` sizes (2-core AMD EPYC).
KERNEL_S_PER_ELEMENT = {"gather_reduce": 0.2e-9, "run_chain": 0.45e-9, "max3_rows": 0.04e-9,
                        "quantize_fixed": 0.43e-9}


@contextmanager
def _threads_for(kernel: str, elements: int):
    """Run the parallel kernel inside on one thread when its estimated serial time is below
    :data:`SERIAL_BELOW_S`, else on the pool's threads."""
    if elements * KERNEL_S_PER_ELEMENT[kernel] >= SERIAL_BELOW_S:
        yield
        return
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)


class DecodedTiles(NamedTuple):
    """Weight tiles decoded from their packed image (read-only arrays)."""

    elem: np.ndarray        #: (count, N out, N in) element values, exact in binary32
    scale: np.ndarray       #: (count, N out, N / B_w) scale values (NaN for a NaN block)
    live_in: np.ndarray     #: (count,) 1 + the last input column holding a non-zero element (0: none)
    live_out: np.ndarray    #: (count,) 1 + the last output row holding a non-zero element (0: none)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self)

    def select(self, index) -> "DecodedTiles":
        """The tiles at ``index`` (a slice gives views)."""
        return DecodedTiles(*(a[index] for a in self))


def _tiles_key(tiles: DecodedTiles) -> tuple[np.ndarray | None, tuple]:
    """(the array whose lifetime a cache of data derived from ``tiles`` follows, the tiles' place in it).

    The owner is the decoded set's (read-only) element array; None for tiles copied from several loads
    (:meth:`Machine.mrf_tiles`), which nothing is kept for.
    """
    elem = tiles.elem
    owner = elem if elem.base is None else elem.base
    if owner.flags.writeable:
        return None, ()
    offset = 0 if owner is elem else elem.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
    return owner, (offset, elem.shape)


def _live_extent(nonzero: np.ndarray) -> np.ndarray:
    """1 + the last True position along the last axis (0 when none)."""
    last = nonzero.shape[-1] - np.argmax(nonzero[..., ::-1], axis=-1)
    return np.where(nonzero.any(axis=-1), last, 0)


def _decoded_tiles(elem: np.ndarray, scale: np.ndarray) -> DecodedTiles:
    nonzero = elem != 0                                   # NaN and infinite elements count as non-zero
    tiles = DecodedTiles(elem, scale, _live_extent(nonzero.any(axis=1)), _live_extent(nonzero.any(axis=2)))
    for a in tiles:
        a.flags.writeable = False
    return tiles


#: Decoded weight tiles by (format, N, digest of their DRAM image), least recently used first.
_TILE_CACHE: OrderedDict = OrderedDict()
TILE_CACHE_BYTES = 1 << 29
_tile_cache_size = 0
#: Weight elements decoded at a time by one m_load (bounds the unpacking's temporary arrays).
DECODE_CHUNK_ELEMENTS = 1 << 20
#: The image last decoded at each (format, N, DRAM address, size) and its cache key: comparing the bytes
#: is several times faster than hashing them, and a rerun loads the same images at the same addresses.
#: The image is a copy of its bytes, or the immutable base DRAM image (``npu.sim.dram``) that holds them.
_LAST_AT: dict = {}


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two byte arrays hold the same bytes (compared eight at a time: about twice as fast)."""
    if a.size != b.size:
        return False
    words = a.size // 8 * 8
    if a.flags.c_contiguous and b.flags.c_contiguous:
        return bool(np.array_equal(a[:words].view(np.uint64), b[:words].view(np.uint64))
                    and np.array_equal(a[words:], b[words:]))
    return bool(np.array_equal(a, b))


def _held_bytes(image, daddr: int, nbytes: int) -> np.ndarray:
    """The bytes a ``_LAST_AT`` image holds: the copy itself, or the base image's at ``daddr``."""
    if isinstance(image, bytes):
        return np.frombuffer(image, np.uint8, nbytes, daddr)
    return image


def _decode_tiles(raw: np.ndarray, wfmt, n: int, tile_bytes: int, daddr: int, base: bytes | None = None
                  ) -> DecodedTiles:
    """Decoded packed tiles, via a bounded cache keyed by the image's content.

    Programs run many times over the same weight image (a serving session),
    so tiles are decoded once per distinct image.  ``base``: the immutable
    DRAM image whose bytes ``raw`` are (``Dram.base_region``), if known; a
    load of the same base's bytes as last time is known to match unread.
    """
    global _tile_cache_size
    place = (wfmt.name, n, daddr, raw.size)
    last = _LAST_AT.get(place)
    if last is not None and last[1] in _TILE_CACHE and (
            (base is not None and last[0] is base) or _same_bytes(_held_bytes(last[0], daddr, raw.size), raw)):
        key = last[1]
        if base is not None:
            _LAST_AT[place] = (base, key)
    else:
        key = (wfmt.name, n, raw.size, hashlib.blake2b(raw, digest_size=20).digest())
        _LAST_AT[place] = (base if base is not None else raw.copy(), key)
    hit = _TILE_CACHE.get(key)
    if hit is not None:
        _TILE_CACHE.move_to_end(key)
        return hit
    count = raw.size // tile_bytes
    per_row = n // wfmt.block_for(n)
    tiles = raw.reshape(count, tile_bytes)
    nscale = n * per_row
    scale_codes = tiles[:, :nscale].reshape(count, n, per_row)
    wide = scale_codes >= (1 << wfmt.scale_bits)
    if wide.any():
        t = int(np.argwhere(wide.any(axis=(1, 2)))[0, 0])
        raise SimulationError(f"tile at DRAM {daddr + t * tile_bytes:#x} has a scale byte wider "
                              f"than {wfmt.scale_bits} bits (not a {wfmt.name} tile)")
    bits = wfmt.element.bits
    # each tile's element section is a whole number of bytes, so all sections form one bitstream, decoded
    # a bounded number of tiles at a time (unpacking odd widths needs tens of bytes per element)
    step = max(1, DECODE_CHUNK_ELEMENTS // (n * n)) if (n * n * bits) % 8 == 0 else count
    elem = np.empty((count, n, n), np.float32)
    live_in = np.empty(count, np.int64)
    live_out = np.empty(count, np.int64)
    for t0 in range(0, count, step):
        part = tiles[t0:t0 + step, nscale:]
        m = part.shape[0]
        codes = unpack_bits(np.ascontiguousarray(part).reshape(-1), bits, m * n * n)
        elem[t0:t0 + m] = element_values(wfmt, codes, np.float32).reshape(m, n, n)
        nonzero = elem[t0:t0 + m] != 0                    # NaN and infinite elements count as non-zero
        live_in[t0:t0 + m] = _live_extent(nonzero.any(axis=1))
        live_out[t0:t0 + m] = _live_extent(nonzero.any(axis=2))
    decoded = DecodedTiles(elem, scale_values(wfmt, scale_codes), live_in, live_out)
    for a in decoded:
        a.flags.writeable = False
    _TILE_CACHE[key] = decoded
    _tile_cache_size += decoded.nbytes
    while _tile_cache_size > TILE_CACHE_BYTES and len(_TILE_CACHE) > 1:
        gone, old = _TILE_CACHE.popitem(last=False)
        _tile_cache_size -= old.nbytes
        for place in [p for p, (_, k) in _LAST_AT.items() if k == gone]:
            del _LAST_AT[place]
    return decoded


def decoded_tile_nbytes(config: NPUConfig) -> int:
    """Host bytes of one decoded weight tile: binary32 elements, binary64 scales, two extents (the largest
    over the machine's MVU format modes)."""
    n = config.native_dim
    per_row = max(n // get_format(w).block_for(n) for w, _ in config.mvu_modes)
    return n * n * 4 + n * per_row * 8 + 16


class MvuMode:
    """What the MVU uses in one format mode: its formats, reduction block, GEMM plan and packed tile size."""

    def __init__(self, config: NPUConfig, mode: int, mfu_dtype):
        n = config.native_dim
        w, a = config.mode_formats(mode)
        self.index = mode
        self.wfmt, self.xfmt = get_format(w), get_format(a)
        self.block = reduction_block(self.wfmt, self.xfmt, n)
        self.plan = gemm_plan(self.wfmt, self.xfmt, self.block)
        self.quantum = self.wfmt.element.quantum_min * self.xfmt.element.quantum_min
        self.weights_may_be_nonfinite = not elements_always_finite(self.wfmt)
        self.int_pair = (np.dtype(mfu_dtype).itemsize == 2 and int_gemm.applicable(self.wfmt, self.xfmt, self.plan)
                         and integers_gather(self.xfmt, int_gemm.ZERO_POINT))
        self.tile_bytes = tile_nbytes(self.wfmt, n)
        self.wscale_per_row = n // self.wfmt.block_for(n)
        self.sub = n // self.block                            #: reduction blocks per vector
        self.rep = self.xfmt.block_for(n) // self.block       #: reduction blocks per activation scale block
        #: The fused chain kernel's plan (``npu.numerics.fused``) for this pair, or None.
        self.fused = fused_plan(self.wfmt, self.xfmt, self.block, self.plan, n, mfu_dtype)
        #: binary32 value of each activation scale code (NaN for the NaN code).
        codes = np.arange(1 << self.xfmt.scale_bits)
        self.xscale_table = scale_values(self.xfmt, codes).astype(np.float32)


def _machine_constants(config: NPUConfig) -> tuple[tuple[MvuMode, ...], DecodedTiles]:
    """What every machine of ``config`` starts from and never changes: its MVU modes, and the all-zero tile
    of a fresh MRF (mode 0).  Built once per configuration and fused-plan chooser (tests replace
    :func:`fused_plan` to run the block-sum path)."""
    return _constants(config, fused_plan)


@functools.lru_cache(maxsize=8)
def _constants(config: NPUConfig, chooser) -> tuple[tuple[MvuMode, ...], DecodedTiles]:
    dtype = get_format(config.mfu_format).dtype
    modes = tuple(MvuMode(config, m, dtype) for m in range(len(config.mvu_modes)))
    n = config.native_dim
    zero = _decoded_tiles(np.zeros((1, n, n), np.float32), np.ones((1, n, modes[0].wscale_per_row)))
    return modes, zero


def fold(mode: "MvuMode") -> float:
    """The power of two the fused kernel's weight scales carry: the value of one unit of its integer block sums."""
    return mode.quantum if mode.fused == "int8" else 2.0 ** fused.E0W


def fused_plan(wfmt, xfmt, block: int, plan: str, n: int, mfu_dtype) -> str | None:
    """The fused VNNI chain kernel's plan for this format pair on this host (``npu.numerics.fused``), or None.

    ``"int8"``: fixed-point elements whose integers fit int8 (weights) and, plus the zero point, uint8
    (activations), with block sums exact in binary32 (the ``"f32"`` GEMM plan); ``"e4m3"``: MXFP8
    E4M3 weights and activations, on int16 planes.  Both quantise activations from a 16-bit vector
    memory.
    """
    if not fused.AVAILABLE or n % 16 or block % fused.STEP_BYTES or np.dtype(mfu_dtype).itemsize != 2:
        return None
    w, x = wfmt.element, xfmt.element
    if (plan == "f32" and w.kind != "fp" and x.kind != "fp" and w.mag_max <= 127
            and integers_gather(xfmt, fused.ZERO_POINT)):
        return "int8"
    if wfmt.name == xfmt.name == "mxfp8_e4m3" and block == fused.MX_BLOCK:
        return "e4m3"
    return None


def chain_batch(ch: ChainOp, n: int, sub: int) -> int:
    """Iterations of a chain executed together: its gathered inputs, block sums and outputs stay within
    ``Machine.CHUNK_ELEMENTS`` elements (or one iteration, when a single one needs more)."""
    if ch.mbase is not None:
        per_iter = ch.k * n + ch.r * n + ch.k * sub * ch.r * n
    else:
        per_iter = ch.k * n * ch.r + ch.r * n
    return max(1, Machine.CHUNK_ELEMENTS // per_iter)


def batch_address_bytes(ch: ChainOp, iterations: int) -> int:
    """Bytes of the address arrays (reads, MFU operands, writes) of ``iterations`` iterations of a chain."""
    reads = ch.k * (1 if ch.mbase is not None else ch.r)
    return 8 * iterations * (reads + (len(ch.mfu) + 1) * ch.r)


_NO_ROWS = np.zeros(0, np.int64)
_NOTHING_AHEAD = np.zeros(0, np.uint8)


def _row_indices(raddr: np.ndarray):
    """(addresses (V, 1) to quantise, row indices ``aidx`` (M, k) into them, the first address when they are
    one run of consecutive vectors, else -1, the lowest and the highest address read) of a batch's MVU read
    addresses.

    When the chain reads fewer vectors than it makes reads (convolution taps, overlapping strips), the
    address range is quantised once, every vector of it; else each read is quantised in order.
    """
    m, k = raddr.shape
    lo, hi = int(raddr.min()), int(raddr.max())
    if raddr.size <= hi - lo + 1:
        flat = raddr.reshape(-1)
        run = raddr.size == hi - lo + 1 and bool((flat == np.arange(lo, hi + 1)).all())
        return (np.ascontiguousarray(raddr.reshape(-1, 1), dtype=np.int64),
                np.arange(m * k, dtype=np.int64).reshape(m, k), lo if run else -1, lo, hi)
    return (np.arange(lo, hi + 1, dtype=np.int64)[:, None], np.ascontiguousarray(raddr - lo, dtype=np.int64), lo,
            lo, hi)


class E4m3Input(NamedTuple):
    """A batch's input vectors converted for :func:`fused.chain_e4m3` (its arguments of the same names)."""

    addr: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    xflags: np.ndarray
    e0x: np.ndarray
    scodes: np.ndarray
    xscale: np.ndarray
    xunit: np.ndarray
    vnan: np.ndarray
    chunk_lo: np.ndarray
    chunk_hi: np.ndarray

    @classmethod
    def empty(cls, addr: np.ndarray, n: int, sub: int) -> "E4m3Input":
        """Arrays for the conversion of the vectors at ``addr`` (V, 1)."""
        count, blocks = addr.shape[0], n // fused.MX_BLOCK
        chunks = -(-count // fused.CONVERT_ROWS)
        return cls(addr, np.empty((count, n), np.int16), np.empty((count, n), np.int16),
                   np.empty((count, blocks), np.uint32), np.empty((count, blocks), np.int8),
                   np.empty((count, blocks), np.uint8), np.empty((count, sub), np.float32),
                   np.empty((count, sub), np.float64), np.empty(count, np.bool_), np.empty(chunks, np.float64),
                   np.empty(chunks, np.float64))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self)


class KeptConversion(NamedTuple):
    """An E4M3 input conversion a machine keeps for later chains: of vectors ``first .. last`` (a run of
    them), in MVU mode ``mode`` for weights up to ``wmax``."""

    mode: int
    wmax: int
    first: int
    last: int
    x: E4m3Input
    nbytes: int


class Machine:
    """Architectural state of one NPU and the functional semantics of its ops."""

    def __init__(self, config: NPUConfig, dram_image=None, dram_extent: int = 0):
        self.config = config
        n = config.native_dim
        self.mfu_format = config.mfu_format
        self.dtype = get_format(config.mfu_format).dtype
        self.dram = Dram(config.dram_bytes, dram_image, dram_extent)
        self.vmem = np.zeros((config.vrf_depth, n), self.dtype)
        # the MFU kernels read and write the vector memory as raw bits (16-bit formats) or as
        # binary32 values
        self._fmt_code = mfu_kernels.format_code(self.mfu_format)
        wide = self.dtype.itemsize == 4
        self._vmem_load = self.vmem if wide else self.vmem.view(np.uint16)
        self._vmem_bits = self.vmem.view(np.uint32 if wide else np.uint16)
        self._vmem_i16 = None if wide else self.vmem.view(np.int16)
        self._bf16 = self.vmem.dtype != np.float16        # a 16-bit vector memory in bfloat16, not binary16
        self.sregs = np.zeros(config.scalar_regs, np.float32)
        #: Threads the fused chain kernels split their work for: the Numba pool's when the machine was made.
        self.threads = numba.get_num_threads()
        #: What the MVU uses in each format mode (``NPUConfig.mvu_modes``); mode 0's also as attributes.
        self.modes, zero = _machine_constants(config)
        mode0 = self.modes[0]
        self.wfmt, self.xfmt, self.block, self.plan = mode0.wfmt, mode0.xfmt, mode0.block, mode0.plan
        self.quantum, self.tile_bytes = mode0.quantum, mode0.tile_bytes
        # decoded MRF: slot t holds tile _mrf_index[t] of the decoded tile set _mrf_sets[_mrf_set[t]]
        # (element values exact in binary32, scale values), loaded in MVU mode _mrf_mode[t]; set 0 is the
        # all-zero tile of a fresh MRF (mode 0)
        self._mrf_sets: list[DecodedTiles] = [zero]
        self._mrf_set_bytes = zero.nbytes              # decoded bytes the sets hold
        self._mrf_set = np.zeros(config.mrf_tiles, np.int64)
        self._mrf_index = np.zeros(config.mrf_tiles, np.int64)
        self._mrf_mode = np.zeros(config.mrf_tiles, np.int8)
        self._slot_order = np.arange(config.mrf_tiles)          # tile t of a load goes to its slot t
        self._mixed = len(self.modes) > 1
        #: The loads whose slots no later load has touched: first slot -> (count, the decoded set they hold),
        #: and their first slots in order.
        self._whole_loads: dict[int, tuple[int, DecodedTiles]] = {}
        self._whole_starts: list[int] = []
        #: Index in ``_mrf_sets`` of each set, by ``id``.
        self._set_index = {id(zero): 0}
        #: The latest E4M3 input conversions of runs of vectors, each kept until an op writes one of its
        #: vectors, and their bytes.
        self._conversions: list[KeptConversion] = []
        self._conversion_bytes = 0
        #: The MVU chain that ran last on the E4M3 kernel: it learns which weights follow it (``ahead``).
        self._last_e4m3_chain: ChainOp | None = None
        #: Decoded tile bytes the MRF's sets may hold before they are compacted to the tiles slots refer to.
        self._mrf_hold = 2 * config.mrf_tiles * decoded_tile_nbytes(config)

    # ----- DMA -------------------------------------------------------------------
    def _vector_rows(self, f: dict):
        """The vector-memory addresses of a transfer: a slice when its rows are contiguous, else an index array."""
        rows, row_len, vstride = f["rows"], f["row_len"], f["vstride"]
        if rows == 1 or vstride == row_len:
            return slice(f["vaddr"], f["vaddr"] + rows * row_len)
        return (f["vaddr"] + np.arange(rows)[:, None] * vstride + np.arange(row_len)[None, :]).reshape(-1)

    def v_load(self, f: dict) -> None:
        """DRAM -> vector memory, row by row (a later row wins where rows overlap)."""
        n = self.config.native_dim
        data = self.dram.rows(f["daddr"], f["rows"], f["dstride"], f["row_len"] * self.config.vector_bytes)
        vecs = np.ascontiguousarray(data).reshape(-1).view(self.dtype).reshape(-1, n)
        self.vmem[self._vector_rows(f)] = vecs

    def v_store(self, f: dict) -> None:
        """Vector memory -> DRAM, row by row (a later row wins where rows overlap)."""
        data = np.ascontiguousarray(self.vmem[self._vector_rows(f)]).view(np.uint8).reshape(f["rows"], -1)
        self.dram.write_rows(f["daddr"], f["dstride"], data)

    def m_load(self, f: dict) -> None:
        """DRAM packed tiles -> MRF (decoded once here; identical tile images decode from a cache)."""
        count = f["count"]
        mode = self.modes[f.get("fmt", 0)]
        nbytes = count * mode.tile_bytes
        raw = self.dram.span(f["daddr"], nbytes)
        tiles = _decode_tiles(raw, mode.wfmt, self.config.native_dim, mode.tile_bytes, f["daddr"],
                              self.dram.base_region(f["daddr"], nbytes))
        first, end = f["maddr"], f["maddr"] + count
        self._mrf_set[first:end] = self._mrf_set_id(tiles)
        self._mrf_index[first:end] = self._slot_order[:count]
        self._mrf_mode[first:end] = mode.index
        self._keep_whole_load(first, count, tiles)

    def _keep_whole_load(self, first: int, count: int, tiles: DecodedTiles) -> None:
        """Record a load of ``tiles`` into slots ``first .. first + count - 1``, forgetting the loads it
        overwrites a part of.  The loads kept never overlap, so those it overwrites lie just below its end."""
        starts = self._whole_starts
        i = bisect.bisect_left(starts, first + count)
        while i and starts[i - 1] + self._whole_loads[starts[i - 1]][0] > first:
            del self._whole_loads[starts[i - 1]]
            del starts[i - 1]
            i -= 1
        starts.insert(i, first)
        self._whole_loads[first] = (count, tiles)

    def _mrf_set_id(self, tiles: DecodedTiles) -> int:
        """Index of a decoded tile set in ``_mrf_sets``, added if new; sets no slot holds any more are dropped.

        When the sets hold more than twice the decoded size of the whole MRF
        (sets of which only a few tiles are still in use), each set is cut
        down to the tiles slots still refer to, so the decoded weights a run
        holds stay below ``_mrf_hold`` plus the set being added.
        """
        known = self._set_index.get(id(tiles))
        if known is not None:
            return known
        if len(self._mrf_sets) >= self.MRF_SETS:
            self._drop_unused_sets()
        nbytes = tiles.nbytes
        if self._mrf_set_bytes + nbytes > self._mrf_hold:
            self._drop_unused_sets(compact=True)
        self._mrf_sets.append(tiles)
        self._mrf_set_bytes += nbytes
        self._set_index[id(tiles)] = len(self._mrf_sets) - 1
        return len(self._mrf_sets) - 1

    def _drop_unused_sets(self, compact: bool = False) -> None:
        """Drop the sets no MRF slot refers to; with ``compact``, cut each set down to the tiles slots refer to."""
        used = np.unique(self._mrf_set)
        renumber = np.zeros(len(self._mrf_sets), np.int64)
        renumber[used] = np.arange(used.size)
        sets = []
        for s in used:
            known = self._mrf_sets[s]
            if compact:
                slots = self._mrf_set == s
                held, inverse = np.unique(self._mrf_index[slots], return_inverse=True)
                if held.size < known.elem.shape[0]:
                    known = DecodedTiles(*(np.ascontiguousarray(a[held]) for a in known))
                    for a in known:
                        a.flags.writeable = False
                    self._mrf_index[slots] = inverse.reshape(-1)
            sets.append(known)
        self._mrf_sets = sets
        self._set_index = {id(known): i for i, known in enumerate(sets)}
        self._mrf_set_bytes = sum(known.nbytes for known in sets)
        self._mrf_set = renumber[self._mrf_set]

    def mrf_tiles(self, first: int, count: int) -> DecodedTiles:
        """The decoded tiles in MRF slots ``first .. first + count - 1``.

        The decoded tile set itself when the slots are those of one load no later load touched, views into
        it when they hold consecutive tiles of one load, else copies.
        """
        whole = self._whole_loads.get(first)
        if whole is not None and whole[0] == count:
            return whole[1]
        sets = self._mrf_set[first:first + count]
        index = self._mrf_index[first:first + count]
        if (sets == sets[0]).all() and (index == index[0] + np.arange(count)).all():
            return self._mrf_sets[sets[0]].select(slice(index[0], index[0] + count))
        out = [np.empty((count,) + a.shape[1:], a.dtype) for a in self._mrf_sets[sets[0]]]
        for s in np.unique(sets):
            here = sets == s
            for o, a in zip(out, self._mrf_sets[s].select(index[here])):
                o[here] = a
        return DecodedTiles(*out)

    # ----- scalar ---------------------------------------------------------------
    def adopt_mrf(self, other: "Machine") -> None:
        """Start with the matrix register file contents of ``other`` (weights kept resident between runs)."""
        self._mrf_sets = list(other._mrf_sets)
        self._mrf_set_bytes = other._mrf_set_bytes
        self._mrf_set = other._mrf_set.copy()
        self._mrf_index = other._mrf_index.copy()
        self._mrf_mode = other._mrf_mode.copy()
        self._whole_loads = dict(other._whole_loads)
        self._whole_starts = list(other._whole_starts)
        self._set_index = dict(other._set_index)

    def s_wr(self, f: dict) -> None:
        """Write a scalar register (binary32 bit pattern)."""
        self.sregs[f["sreg"]] = np.array(f["value"], np.uint32).view(np.float32)

    # ----- chains ---------------------------------------------------------------
    @staticmethod
    def _addresses(ch: ChainOp, f: dict, *, rows: bool, reduction: bool,
                   iterations: slice | None = None) -> np.ndarray:
        """Addresses of an address generator for a range of output iterations.

        Shape (iterations[, r][, k0 * k1 * c]); iteration p is (i0, i1) = divmod(p, n1).
        """
        p = np.arange(ch.iterations)[iterations] if iterations is not None else np.arange(ch.iterations)
        i0, i1 = np.divmod(p, ch.n1)
        addr = f["base"] + i0 * f.get("s_n0", 0) + i1 * f.get("s_n1", 0)
        inner = np.zeros(1, np.int64)
        if rows:
            inner = (inner[:, None] + np.arange(ch.r) * f.get("s_r", 0)).reshape(-1)
        if reduction:
            red = (np.arange(ch.k0)[:, None, None] * f.get("s_k0", 0) + np.arange(ch.k1)[None, :, None]
                   * f.get("s_k1", 0) + np.arange(ch.c)[None, None, :]).reshape(-1)
            inner = (inner[:, None] + red[None, :]).reshape(-1)
        shape = (p.size,) + ((ch.r,) if rows else ()) + ((ch.k,) if reduction else ())
        return (addr.astype(np.int64)[:, None] + inner[None, :]).reshape(shape)

    @staticmethod
    def _extent(ch: ChainOp, f: dict, *, rows: bool, reduction: bool) -> tuple[int, int]:
        """Lowest and highest address an address generator reaches over the whole chain."""
        terms = [(f.get("s_n0", 0), ch.n0), (f.get("s_n1", 0), ch.n1)]
        if rows:
            terms.append((f.get("s_r", 0), ch.r))
        if reduction:
            terms += [(f.get("s_k0", 0), ch.k0), (f.get("s_k1", 0), ch.k1), (1, ch.c)]
        return address_extent(f["base"], terms)

    #: E4M3 input conversions a machine keeps for the chains after the ones they were made for, at most,
    #: and their bytes at most.
    KEPT_CONVERSIONS = 8
    KEPT_CONVERSION_BYTES = 8 << 20
    #: Decoded tile sets the MRF may refer to before unreferenced ones are dropped.
    MRF_SETS = 64
    #: Largest number of input elements one batch of a chain gathers (bounds memory use).
    CHUNK_ELEMENTS = 1 << 23
    #: Largest number of addresses the exact hazard analysis of one chain may build.
    HAZARD_ADDRESSES = 1 << 24
    #: Largest size of the address arrays of one chain kept for later runs of the program.
    BATCH_CACHE_BYTES = 1 << 26
    #: Read addresses the hazard analysis checks at a time.
    HAZARD_CHUNK = 1 << 20

    def _generators(self, ch: ChainOp):
        """(fields, rows, reduction, mnemonic, instruction index) of every read, then the write."""
        with_mv = ch.mbase is not None
        reads = [(ch.rd, not with_mv, True, "v_rd", ch.index + 1)]
        reads += [(self._operand_fields(op), True, False, op.mnemonic, op.index)
                  for op in ch.mfu if op.mnemonic.startswith("vv_")]
        return reads, (ch.wr, True, False, "v_wr", ch.end_index - 1)

    def chain(self, ch: ChainOp) -> None:
        """Execute one chain over all its iterations, in batches of whole iterations (see :func:`chain_batch`)."""
        copies = ch.derived.get("copies")
        if copies is None and ch.mbase is None and ch.reduce == "none" and not ch.mfu:
            copies = self._copies(ch)                  # vectors copied as they are
        if copies is not None:
            for src, waddr, lo, hi in copies:
                mfu_kernels.copy_rows(self._vmem_bits, self._fmt_code, src, waddr, lo, hi)
            return
        ops, sources, tables = self._mfu_program(ch)
        scalars = self._mfu_scalars(ch)
        mfu = (self._fmt_code, ops, sources, scalars)
        direct = self._writes_apart(ch)
        batches = self._batches(ch)
        # the fused kernel's row indices depend on the batch's read addresses alone: kept with the batches
        kept = ch.derived.setdefault("row_indices", {}) if isinstance(batches, list) and ch.mbase is not None else None
        n = self.config.native_dim
        for bi, (raddr, operand_addr, waddr) in enumerate(batches):
            if ch.mbase is None and direct and self._max_pool(ch, ops, sources):   # straight into the memory
                src = raddr.reshape(-1)
                with _threads_for("max3_rows", 3 * src.size * n):
                    mfu_kernels.max3_rows(self._vmem_i16, self._fmt_code, src, operand_addr, waddr)
            elif ch.mbase is None:
                y = self._reduction(ch, raddr)
                out = np.empty((y.shape[0], n), self._vmem_bits.dtype)
                with _threads_for("run_chain", y.size):
                    mfu_kernels.run_chain(y, *mfu, operand_addr, self._vmem_load, tables, out)
                self._write(ch, waddr, out)
            else:
                rows = None
                if kept is not None:
                    rows = kept.get(bi)
                    if rows is None:
                        rows = kept[bi] = _row_indices(raddr)
                if direct and self._fused_chain(ch, raddr, mfu, operand_addr, tables, self._vmem_bits, waddr, rows):
                    continue                           # written straight into the vector memory
                out = np.empty((raddr.shape[0] * ch.r, n), self._vmem_bits.dtype)
                # accumulators formed from block sums in the MFU pass
                if direct or not self._fused_chain(ch, raddr, mfu, operand_addr, tables, out, _NO_ROWS, rows):
                    mfu_kernels.run_chain_on_block_sums(*self._mvu(ch, raddr), *mfu, operand_addr,
                                                        self._vmem_load, tables, out)
                self._write(ch, waddr, out)

    def _copies(self, ch: ChainOp):
        """(source vectors, destination vectors, first lane, end lane) of each batch of a chain that copies
        vectors as they are (no MVU, reduction or MFU op); kept in ``ch.derived`` when its batches are."""
        lo, hi = ch.wr.get("lo", 0), ch.wr.get("hi", 0) or self.config.native_dim
        batches = self._batches(ch)
        copies = ((np.ascontiguousarray(raddr.reshape(raddr.shape[0] * ch.r, -1)[:, 0]), waddr, lo, hi)
                  for raddr, _, waddr in batches)
        if isinstance(batches, list):
            copies = ch.derived["copies"] = list(copies)
        return copies

    def _writes_apart(self, ch: ChainOp) -> bool:
        """Whether a kernel may write the chain's outputs straight into the vector memory: whole vectors,
        none of them a vector its MFU operands read, nor (a chain without the MVU) one it reduces (an MVU
        chain's inputs are quantised before the kernel writes).  Kept in ``ch.derived``."""
        known = ch.derived.get("writes_apart")
        if known is None:
            n = self.config.native_dim
            lo, hi = ch.wr.get("lo", 0), ch.wr.get("hi", 0) or n
            wlo, whi = self._extent(ch, ch.wr, rows=True, reduction=False)
            known = lo == 0 and hi == n
            reads, _ = self._generators(ch)
            for fields, rows, reduction, name, _ in reads:
                if name != "v_rd" or ch.mbase is None:
                    olo, ohi = self._extent(ch, fields, rows=rows, reduction=reduction)
                    known = known and (ohi < wlo or olo > whi)
            ch.derived["writes_apart"] = known
        return known

    def _max_pool(self, ch: ChainOp, ops: np.ndarray, sources: np.ndarray) -> bool:
        """Whether a chain without the MVU is a max pool's row of :func:`mfu_kernels.max3_rows`: one vector
        read per output vector (reduction none or max), then two ``vv_max``, in a 16-bit MFU format."""
        vector = mfu_kernels.VECTOR_OPERAND
        return (self._vmem_i16 is not None and ch.k == 1 and ch.reduce in ("none", "max") and len(ops) == 2
                and ops[0] == ops[1] == mfu_kernels.MAX and sources[0] == sources[1] == vector)

    def _batches(self, ch: ChainOp):
        """(read, MFU operand, write) addresses of each batch of iterations; checked on first use.

        They depend on the chain alone, so a program run again (a serving
        session) reuses them from ``ch.derived``, unless together they take
        more than ``BATCH_CACHE_BYTES``: then each run builds them batch by
        batch.
        """
        batches = ch.derived.get("batches")
        if batches is not None:
            return batches
        if not ch.derived.get("hazards_checked"):
            self._check_hazards(ch)
            ch.derived["hazards_checked"] = True
        # iterations never read what other iterations of this chain write (checked above),
        # so batches of iterations may run one after another
        step = chain_batch(ch, self.config.native_dim, self.config.native_dim // self.modes[ch.fmt].block)
        gen = self._batch_addresses(ch, step)
        if batch_address_bytes(ch, ch.iterations) > self.BATCH_CACHE_BYTES:
            return gen
        batches = ch.derived["batches"] = list(gen)
        return batches

    def _batch_addresses(self, ch: ChainOp, step: int):
        with_mv = ch.mbase is not None
        p = ch.iterations
        _, sources, _ = self._mfu_program(ch)
        for p0 in range(0, p, step):
            sl = slice(p0, min(p, p0 + step))
            raddr = self._addresses(ch, ch.rd, rows=not with_mv, reduction=True, iterations=sl)
            operand_addr = np.zeros((len(ch.mfu), (sl.stop - sl.start) * ch.r), np.int64)
            for o, op in enumerate(ch.mfu):
                if sources[o] == mfu_kernels.VECTOR_OPERAND:
                    operand_addr[o] = self._addresses(ch, self._operand_fields(op), rows=True, reduction=False,
                                                      iterations=sl).reshape(-1)
            waddr = self._addresses(ch, ch.wr, rows=True, reduction=False, iterations=sl).reshape(-1)
            yield raddr, operand_addr, waddr

    def _reduction(self, ch: ChainOp, raddr: np.ndarray) -> np.ndarray:
        """A chain without the MVU: its binary32 input (iterations * r, N), the reduction of the vectors read."""
        n = self.config.native_dim
        out = np.empty((raddr.shape[0] * ch.r, n), np.float32)
        with _threads_for("gather_reduce", raddr.size * n):
            return mfu_kernels.gather_reduce(self._vmem_load, self._fmt_code, raddr.reshape(out.shape[0], -1),
                                             mfu_kernels.REDUCE_CODES[ch.reduce], out)

    def _mfu_program(self, ch: ChainOp):
        """The chain's MFU ops as kernel arrays: op codes, operand sources, tables (kept in ``ch.derived``)."""
        program = ch.derived.get("mfu")
        if program is not None:
            return program
        ops = np.empty(len(ch.mfu), np.int64)
        sources = np.empty(len(ch.mfu), np.int64)
        for o, op in enumerate(ch.mfu):
            kind, _, name = op.mnemonic.partition("_")
            if name not in mfu_kernels.OP_CODES or kind not in ("v", "vv", "vs"):
                raise SimulationError("not an MFU operation", op.index, mnemonic=op.mnemonic)
            ops[o] = mfu_kernels.OP_CODES[name]
            sources[o] = {"v": mfu_kernels.NO_OPERAND, "vv": mfu_kernels.VECTOR_OPERAND,
                          "vs": mfu_kernels.SCALAR_OPERAND}[kind]
        uses_tables = bool(np.isin(ops, (mfu_kernels.SIGMOID, mfu_kernels.TANH)).any())
        program = ch.derived["mfu"] = (ops, sources, mfu_kernels.activation_tables(uses_tables))
        return program

    def _mfu_scalars(self, ch: ChainOp) -> np.ndarray:
        """The scalar-register operand of each ``vs_`` op, in the MFU format, as the registers hold now
        (read-only zeros, kept in ``ch.derived``, for a chain without one)."""
        none = ch.derived.get("no_scalars")
        if none is not None:
            return none
        if not any(op.mnemonic.startswith("vs_") for op in ch.mfu):
            none = ch.derived["no_scalars"] = np.zeros(len(ch.mfu), np.float32)
            none.flags.writeable = False
            return none
        scalars = np.zeros(len(ch.mfu), np.float32)
        for o, op in enumerate(ch.mfu):
            if op.mnemonic.startswith("vs_"):
                scalars[o] = mfu_math.scalar(self.sregs[op.sreg], self.mfu_format)
        return scalars

    def _write(self, ch: ChainOp, waddr: np.ndarray, bits: np.ndarray) -> None:
        """Write MFU-format bits (iterations * r, N) to the vector memory, within the lane mask."""
        n = self.config.native_dim
        lo, hi = ch.wr.get("lo", 0), ch.wr.get("hi", 0) or n
        if lo == 0 and hi == n:
            self._vmem_bits[waddr] = bits
        else:
            self._vmem_bits[waddr, lo:hi] = bits[:, lo:hi]

    @staticmethod
    def _operand_fields(op) -> dict:
        return {"base": op.base, "s_n0": op.s_n0, "s_n1": op.s_n1, "s_r": op.s_r}

    def _mvu(self, ch: ChainOp, raddr: np.ndarray) -> BlockSums:
        """The block sums of the chain's matrix-vector products (accumulators (iterations, r * N)).

        Both operands enter the block GEMMs as strided views: tiles straight
        from the decoded MRF, activations as quantised.  Input columns and
        output rows past the last non-zero weight of every tile (channel
        padding) are left out of the GEMMs: their products are exact zeros.
        """
        mode = self.modes[ch.fmt]
        n, k, r, block = self.config.native_dim, ch.k, ch.r, mode.block
        sub = n // block                                              # reduction blocks per vector
        if self._mixed:
            self._check_tile_modes(ch, r * k)
        tiles = self.mrf_tiles(ch.mbase, r * k)                       # tile rr * k + kk: (N out, N in)
        live_in = min(block, max(1, int(tiles.live_in.max()))) if sub == 1 else block
        live_out = max(1, int(tiles.live_out.max()))
        ws = tiles.scale.reshape(r, k, n, mode.wscale_per_row).transpose(0, 2, 1, 3).reshape(r * n, -1)
        ws = np.repeat(ws, mode.wfmt.block_for(n) // block, axis=1)                  # (r * N, k * sub)
        gemm = self._int_gemm(ch, tiles, live_in, live_out)
        elems, xcodes = self._quantised_inputs(raddr, as_integers=gemm is not None, xfmt=mode.xfmt)  # (k, M, N)
        x = elems.reshape(k, -1, sub, block).transpose(0, 2, 1, 3)[..., :live_in]  # (k, sub, M, B')
        xs = np.repeat(scale_values(mode.xfmt, xcodes), mode.xfmt.block_for(n) // block, axis=1)
        if gemm is not None:                                     # int32 sums (k * sub, M, r * live_out)
            sums = gemm(x.reshape(k * sub, -1, live_in))
            return BlockSums.of(sums.reshape(k * sub, -1, r, live_out), xs * mode.quantum, ws, block_major=True)
        w = tiles.elem.reshape(r, k, n, sub, block).transpose(0, 1, 3, 4, 2)       # (r, k, sub, B, N)
        # quantised activations are always finite (bad blocks get a NaN scale); weights decoded from
        # DRAM may hold Inf/NaN codes only in formats that have them
        return matvec_block_sums(x, xs, w[..., :live_in, :live_out], ws, mode.plan, mode.quantum,
                                 check_x=False, check_w=mode.weights_may_be_nonfinite)

    def _fused_chain(self, ch: ChainOp, raddr: np.ndarray, mfu, operand_addr, tables, out, wrows, rows=None) -> bool:
        """Run one batch of an MVU chain on the fused kernel (``npu.numerics.fused``); False if it does not apply.

        Output row ``o`` goes to ``out[wrows[o]]``, or ``out[o]`` when ``wrows`` is empty.  ``rows``:
        the batch's :func:`_row_indices`, if known.

        Bit for bit the block-sum path's result: the same exact block sums,
        terms and accumulation order, formed tile by tile in registers.
        """
        mode = self.modes[ch.fmt]
        if mode.fused is None:
            return False
        n, k, r = self.config.native_dim, ch.k, ch.r
        if self._mixed:
            self._check_tile_modes(ch, r * k)
        packed = self._packed_weights(ch, self.mrf_tiles(ch.mbase, r * k), mode)
        sub, rep = mode.sub, mode.rep
        addr, aidx, first, read_lo, read_hi = rows if rows is not None else _row_indices(raddr)
        if mode.fused == "e4m3":                       # the input's conversion runs inside the chain's kernel
            w1 = packed.extra
            x, aidx, convert = self._e4m3_input(mode, w1.wmax, raddr, addr, aidx, first, read_lo, read_hi)
            self._follows(ch, packed)
            done = fused.chain_e4m3(
                self._vmem_bits, self._bf16, x.addr, w1.wmax, mode.xscale_table,
                x.x0, x.x1, x.xflags, x.e0x, x.scodes, x.xscale, x.xunit, aidx, sub, w1.blocks,
                packed.wp, packed.pan_w0, packed.pan_c0, packed.pan_nv, packed.steps, packed.ws, packed.ws_lo,
                packed.ws_hi, packed.colnan, w1.vec, w1.p, w1.s, w1.off,
                ch.derived.get("ahead", _NOTHING_AHEAD), *mfu,
                operand_addr, self._vmem_load, tables, out, wrows, x.vnan, x.chunk_lo, x.chunk_hi, convert,
                self.threads)
            if convert and first >= 0:
                self._keep_conversion(KeptConversion(mode.index, w1.wmax, first, read_hi, x, x.nbytes))
            return done
        with _threads_for("quantize_fixed", addr.size * n):
            codes, scodes = gather_quantize_to_integers(self.vmem, addr, mode.xfmt, n, fused.ZERO_POINT)
        xscale = np.empty((scodes.shape[0], sub), np.float32)              # (V, sub), each reduction block's scale
        lo, hi = fused.block_scales(scodes, rep, mode.xscale_table, xscale)
        if not fused.scales_fit(lo, hi, packed.ws_lo, packed.ws_hi, 2.0 ** -149):
            return False
        fused.chain_int8(codes.reshape(-1), n, xscale, aidx, sub, mode.block, packed.wp, packed.pan_w0, packed.pan_c0,
                         packed.pan_nv, packed.steps, packed.cw, packed.ws, packed.colnan, *mfu, operand_addr,
                         self._vmem_load, tables, out, wrows, self.threads)
        return True

    def _follows(self, ch: ChainOp, packed: "fused.PackedWeights") -> None:
        """Note that ``ch`` runs after the previous E4M3 chain: in a later run of the program, that chain's
        threads read ``ch``'s weights into the caches once they run out of work (``fused.chain_e4m3``'s
        ``ahead``).  Only a matter of speed: weights noted by a run that took another course are read for
        nothing."""
        last = self._last_e4m3_chain
        if last is not None and last is not ch:
            last.derived["ahead"] = packed.wp.view(np.uint8)
        self._last_e4m3_chain = ch

    def _e4m3_input(self, mode: "MvuMode", wmax: int, raddr: np.ndarray, addr: np.ndarray, aidx: np.ndarray,
                    first: int, read_lo: int, read_hi: int):
        """(the batch's converted input, its row indices, whether the kernel must convert it first).

        ``raddr`` are the batch's reads, the rest its :func:`_row_indices`.  A conversion kept from an
        earlier chain serves when its run of vectors holds every vector read, for the same mode and
        ``wmax``, and no op has written them since (:meth:`_forget_conversions`).
        """
        for kept in self._conversions:
            if kept.mode == mode.index and kept.wmax == wmax and kept.first <= read_lo and read_hi <= kept.last:
                if first == kept.first:
                    return kept.x, aidx, False
                return kept.x, np.ascontiguousarray(raddr - kept.first, dtype=np.int64), False
        return E4m3Input.empty(addr, self.config.native_dim, self.config.native_dim // mode.block), aidx, True

    def _keep_conversion(self, kept: "KeptConversion") -> None:
        """Keep an E4M3 input conversion (the latest :data:`KEPT_CONVERSIONS` within
        :data:`KEPT_CONVERSION_BYTES`)."""
        self._conversions.append(kept)
        self._conversion_bytes += kept.nbytes
        while len(self._conversions) > self.KEPT_CONVERSIONS or self._conversion_bytes > self.KEPT_CONVERSION_BYTES:
            self._conversion_bytes -= self._conversions.pop(0).nbytes

    def _forget_conversions(self, op) -> None:
        """Drop the kept E4M3 input conversions of which ``op`` wrote a vector."""
        if isinstance(op, ChainOp):
            span = op.derived.get("write_extent")
            if span is None:
                span = op.derived["write_extent"] = self._extent(op, op.wr, rows=True, reduction=False)
        elif isinstance(op, DmaOp) and op.mnemonic == "v_load":
            f = op.fields
            span = (f["vaddr"], f["vaddr"] + (f["rows"] - 1) * f["vstride"] + f["row_len"] - 1)
        else:
            return
        lo, hi = span
        for kept in self._conversions:
            if lo <= kept.last and kept.first <= hi:
                self._conversions = [c for c in self._conversions if lo > c.last or c.first > hi]
                self._conversion_bytes = sum(c.nbytes for c in self._conversions)
                return

    def _packed_weights(self, ch: ChainOp, tiles: "DecodedTiles", mode: "MvuMode") -> "fused.PackedWeights":
        """The chain's weights packed for the fused kernel, kept in ``ch.derived`` for the tiles they came from."""
        owner, key = _tiles_key(tiles)
        key += (mode.index,)
        known = ch.derived.get("fused")
        if owner is not None and known is not None and known[0] == key and known[1]() is owner:
            return known[2]
        n, k, r = self.config.native_dim, ch.k, ch.r
        block, sub = mode.block, n // mode.block
        nb = k * sub
        # weight values (r, nb, B, N): block b = (tap/tile kk, sub-block s), element j, output column c
        w = tiles.elem.reshape(r, k, n, sub, block).transpose(0, 1, 3, 4, 2).reshape(r, nb, block, n)
        ws = tiles.scale.reshape(r, k, n, mode.wscale_per_row).transpose(0, 2, 1, 3).reshape(r, n, -1)
        ws = np.repeat(ws, mode.wfmt.block_for(n) // block, axis=2).transpose(0, 2, 1)   # (r, nb, N)
        # an all-zero block's terms are +0 at any finite scale: scale 1 keeps the range checks tight
        ws = np.where(~(w != 0).any(axis=2) & np.isfinite(ws), 1.0 / fold(mode), ws)
        if mode.fused == "int8":
            wint = (w * (1.0 / mode.wfmt.element.quantum_min)).astype(np.int8)
            used = wint.any(axis=(0, 3))                                            # (nb, B)
            last = np.where(used.any(axis=1), block - np.argmax(used[:, ::-1], axis=1), 0)
            steps = -(-last // fused.STEP_BYTES)
            packed = fused.pack_weights(wint, ws * fold(mode), steps, fused.STEP_BYTES, fused.ZERO_POINT, np.int8)
        else:
            bad = np.isnan(w).any(axis=2)                         # a NaN element makes its block's sums NaN
            if bad.any():
                ws = np.where(bad, np.nan, ws)
                w = np.where(np.isnan(w), 0, w)
            w0, w1 = fused.e4m3_weight_planes(w)
            used = (w0 != 0) | (w1 != 0)
            cols = np.flatnonzero(used.any(axis=(0, 1, 2)))
            rows_used = used.any(axis=(0, 3))
            last = np.where(rows_used.any(axis=1), block - np.argmax(rows_used[:, ::-1], axis=1), 0)
            steps = -(-last // 2)
            live = np.flatnonzero(steps > 0)                      # blocks without weights are left out
            packed = fused.pack_weights(w0[:, live], (ws * fold(mode))[:, live], steps[live], 2, 0, np.int16,
                                        live_out=int(cols[-1]) + 1 if cols.size else 0)
            packed.colnan = np.isnan(ws).any(axis=1)              # a NaN scale of any block, with weights or not
            packed.extra = fused.Plane1Weights(w1[:, live], packed.pan_nv, packed.steps)
            packed.extra.wmax = int(np.abs(w0.astype(np.int32)).max(initial=0))
            packed.extra.blocks = live.astype(np.int64)
        if owner is not None:
            ch.derived["fused"] = (key, weakref.ref(owner), packed)
        return packed

    def _check_tile_modes(self, ch: ChainOp, count: int) -> None:
        """SimulationError (naming mv_mul) unless every tile the chain multiplies was loaded in its mode.

        Slots never loaded hold zero tiles of mode 0.
        """
        modes = self._mrf_mode[ch.mbase:ch.mbase + count]
        bad = np.flatnonzero(modes != ch.fmt)
        if bad.size:
            slot = ch.mbase + int(bad[0])
            w, a = self.config.mode_formats(ch.fmt)
            raise SimulationError(
                f"mv_mul fmt={ch.fmt} ({w}/{a}) multiplies MRF tile {slot}, which was loaded in mode "
                f"{int(modes[bad[0]])} ({self.config.mode_formats(int(modes[bad[0]]))[0]}); a chain's tiles must "
                f"be loaded (m_load fmt) in the chain's own mode", ch.index + 2, mnemonic="mv_mul")

    def _quantised_inputs(self, raddr: np.ndarray, as_integers: bool = False,
                          xfmt=None) -> tuple[np.ndarray, np.ndarray]:
        """Elements (k, M, N) and scale codes (M, k * blocks) of the MVU input vectors at ``raddr`` (M, k).

        Elements are exact values (binary32) or, with ``as_integers``, their
        integers plus the integer GEMM's zero point (uint8).  A vector's
        quantisation depends on that vector alone, so when the chain reads
        its vectors several times over (convolution taps), each vector of the
        address range is quantised once and the results are gathered.  ``xfmt``
        is the activation format (default: mode 0's).
        """
        n = self.config.native_dim
        m, k = raddr.shape
        xfmt = self.xfmt if xfmt is None else xfmt
        if as_integers:
            def quantise(addr):
                return gather_quantize_to_integers(self.vmem, addr, xfmt, n, int_gemm.ZERO_POINT)
        else:
            def quantise(addr):
                return gather_quantize_to_values(self.vmem, addr, xfmt, n)
        lo, hi = int(raddr.min()), int(raddr.max())
        if raddr.size < 2 * (hi - lo + 1):                     # each vector read about once
            elems, codes = quantise(raddr.T.reshape(-1, 1))
            return elems.reshape(k, m, n), codes.reshape(k, m, -1).transpose(1, 0, 2).reshape(m, -1)
        elems, codes = quantise(np.arange(lo, hi + 1)[:, None])
        idx = raddr - lo
        return elems[idx.T], codes[idx].reshape(m, -1)

    def _int_gemm(self, ch: ChainOp, tiles: "DecodedTiles", live_in: int, live_out: int):
        """The chain's integer block-sum GEMM with its weights packed (built on first use), or None.

        Used for large chains of a format pair :func:`int_gemm.applicable`
        accepts whose tiles are one consecutive run of a decoded set.  Kept
        in ``ch.derived`` for the weights it was built from.
        """
        n, k, r = self.config.native_dim, ch.k, ch.r
        mode = self.modes[ch.fmt]
        if not mode.int_pair or ch.iterations * k * r * n * n < int_gemm.MIN_MACS:
            return None
        owner, key = _tiles_key(tiles)
        if owner is None:                                          # tiles copied from several loads
            return None
        key += (live_in, live_out)
        known = ch.derived.get("int_gemm")
        if known is not None and known[0] == key and known[1]() is owner:
            return known[2]
        sub, block = n // mode.block, mode.block
        w = tiles.elem.reshape(r, k, n, sub, block).transpose(1, 3, 4, 0, 2)[:, :, :live_in, :, :live_out]
        w = (w * (1.0 / mode.wfmt.element.quantum_min)).astype(np.int8).reshape(k * sub, live_in, r * live_out)
        gemm = int_gemm.IntBlockGemm(w)
        ch.derived["int_gemm"] = (key, weakref.ref(owner), gemm)
        return gemm

    def _check_hazards(self, ch: ChainOp) -> None:
        """Reject a chain whose iterations write one vector twice, or write what a later iteration reads.

        Memory stays bounded: a table over the vector memory records which
        iteration writes each vector, and reads are checked a batch of
        iterations at a time.
        """
        reads, (wf, _, _, wname, windex) = self._generators(ch)
        wlo, whi = self._extent(ch, wf, rows=True, reduction=False)
        extents = [self._extent(ch, g[0], rows=g[1], reduction=g[2]) for g in reads]
        overlapping = [g for g, (lo, hi) in zip(reads, extents) if hi >= wlo and lo <= whi]
        writes = ch.iterations * ch.r
        if writes > self.HAZARD_ADDRESSES:
            raise SimulationError(f"chain writes {writes:,} vectors, more than the simulator analyses in one "
                                  f"chain ({self.HAZARD_ADDRESSES:,}); split it", ch.index, mnemonic="chain")
        if writes > whi - wlo + 1:                    # more writes than vectors they reach: one is written twice
            raise SimulationError("two iterations write the same vector (write-after-write in one chain)",
                                  windex, mnemonic=wname)
        waddr = self._addresses(ch, wf, rows=True, reduction=False).reshape(-1) - wlo
        writer = np.full(whi - wlo + 1, -1, np.int64)         # iteration writing each vector of the write range
        writer[waddr] = np.repeat(np.arange(ch.iterations), ch.r)
        if np.count_nonzero(writer >= 0) != waddr.size:
            raise SimulationError("two iterations write the same vector (write-after-write in one chain)",
                                  windex, mnemonic=wname)
        del waddr
        for fields, rows, reduction, name, index in overlapping:
            per_iter = (ch.r if rows else 1) * (ch.k if reduction else 1)
            size = ch.iterations * per_iter
            if size > self.HAZARD_ADDRESSES:
                raise SimulationError(f"{name} reads {size:,} vectors overlapping the chain's writes, more than "
                                      f"the simulator analyses in one chain; split it", index, mnemonic=name)
            step = max(1, self.HAZARD_CHUNK // per_iter)
            for p0 in range(0, ch.iterations, step):
                sl = slice(p0, min(ch.iterations, p0 + step))
                flat = self._addresses(ch, fields, rows=rows, reduction=reduction,
                                       iterations=sl).reshape(sl.stop - sl.start, -1) - wlo
                inside = (flat >= 0) & (flat < writer.size)
                first_writer = np.where(inside, writer[np.where(inside, flat, 0)], -1)
                later = (first_writer >= 0) & (first_writer < np.arange(sl.start, sl.stop)[:, None])
                if later.any():
                    it, col = np.unravel_index(int(np.argmax(later)), later.shape)
                    raise SimulationError(
                        f"iteration {sl.start + it} reads vector {int(flat[it, col]) + wlo} that iteration "
                        f"{int(first_writer[it, col])} of the same chain wrote (read-after-write hazard)",
                        index, mnemonic=name)

    # ----- dispatch -------------------------------------------------------------
    def execute(self, op) -> None:
        """Apply one op's effect on the architectural state."""
        try:
            self._execute(op)
        except SimulationError as exc:
            if exc.index is not None:
                raise
            name = getattr(op, "mnemonic", "chain")
            raise SimulationError(str(exc), op.index, mnemonic=name) from None
        except MemoryError:
            raise SimulationError("the host ran out of memory executing this instruction (lower the "
                                  "simulate(memory_budget=...) so such programs are refused before they run)",
                                  op.index, mnemonic=getattr(op, "mnemonic", "chain")) from None

    def _execute(self, op) -> None:
        if isinstance(op, ChainOp):
            self.chain(op)
        elif isinstance(op, DmaOp):
            getattr(self, op.mnemonic)(op.fields)
        elif isinstance(op, ScalarOp) and op.mnemonic == "s_wr":
            self.s_wr(op.fields)
        if self._conversions:
            self._forget_conversions(op)
