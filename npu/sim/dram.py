"""The simulator's external memory, and DRAM images made of an immutable base and writes over it.

A program's DRAM image is mostly its packed weights (28 MB for ResNet-50),
the same bytes on every run; only the inputs differ.  A :class:`DramImage`
says so: an immutable ``bytes`` base (``ProgramFile.dram``) and the writes
that put one run's inputs over it.  Two things follow.

* The machine knows which of its bytes still equal the base (none of the
  image's writes nor of the run's stores touched them), so a weight load
  from them is known to hold the bytes it held on the last run, without
  comparing them (:meth:`Dram.base_region`).
* A memory built over a base whose last run's memory is gone takes that
  memory's buffer, puts back the bytes its image and run changed, and
  skips copying the whole image (:class:`Dram`; at most :data:`SPARES`
  buffers are kept, and only one no array view still refers to).

A plain ``bytes`` image is its own base; a ``bytearray`` or array image is
copied and compared as before.
"""
from __future__ import annotations

import sys
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .errors import SimulationError


@dataclass(frozen=True)
class DramImage:
    """A DRAM image: the immutable ``base`` with ``writes`` ((address, bytes), in order) over it."""

    base: bytes
    writes: tuple[tuple[int, bytes], ...] = ()

    def __post_init__(self):
        if not isinstance(self.base, bytes):
            raise TypeError(f"a DramImage's base must be bytes (immutable), not {type(self.base).__name__}")
        for addr, data in self.writes:
            if addr < 0:
                raise SimulationError(f"DRAM image write at negative address {addr}")

    @property
    def nbytes(self) -> int:
        """Bytes the image covers: the base, and every write past its end."""
        return max([len(self.base)] + [addr + len(data) for addr, data in self.writes])


#: Spare buffers of memories that are gone, by their base image, most recently used last.
_SPARES: OrderedDict = OrderedDict()
#: Spare buffers kept at most (each as large as its image).
SPARES = 2
_spares_lock = threading.Lock()


def _byte_view(image) -> np.ndarray:
    """The bytes of a DRAM image as a uint8 array, without copying when the image is contiguous."""
    if image is None:
        return np.zeros(0, np.uint8)
    if isinstance(image, np.ndarray):
        return np.ascontiguousarray(image).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(image, np.uint8)
    except (TypeError, ValueError):
        return np.frombuffer(bytes(image), np.uint8)


def _spare_buffer(base: bytes, length: int):
    """A gone memory's (buffer, changed ranges) over ``base`` of ``length`` bytes, taken from the spares, or None."""
    with _spares_lock:
        spare = _SPARES.pop(id(base), None)
    if spare is None or spare[0] is not base or spare[1].size != length:
        return None
    return spare[1], spare[2]


def _keep_spare(base: bytes, holder: list) -> None:
    """When a memory over ``base`` is gone: keep its buffer for the next one, unless a view still refers to it."""
    data, changed = holder
    # references: the holder, the local name, getrefcount's argument; any more is a view someone holds
    if sys.getrefcount(data) > 3:
        return
    with _spares_lock:
        _SPARES[id(base)] = (base, data, changed)
        _SPARES.move_to_end(id(base))
        while len(_SPARES) > SPARES:
            _SPARES.popitem(last=False)


class Dram:
    """Byte-addressed external memory of ``size`` bytes.

    Storage covers the initial image and ``extent`` bytes (the highest
    address the program's transfers reach, known before the run) and grows
    on demand beyond that; bytes never stored read as zero.  ``image`` is
    a :class:`DramImage`, ``bytes`` (its own base), or any other buffer or
    array (copied, no base).
    """

    def __init__(self, size: int, image=None, extent: int = 0):
        self.size = size
        if isinstance(image, bytes):
            image = DramImage(image)
        self.base = image.base if isinstance(image, DramImage) else None
        data = _byte_view(image.base if self.base is not None else image)
        writes = image.writes if self.base is not None else ()
        end = max([data.size] + [addr + len(w) for addr, w in writes])
        if end > size:
            raise SimulationError(f"DRAM image of {end} bytes exceeds the configured {size} bytes")
        length = min(size, max(end, extent, 1 << 12))
        #: Byte ranges [lo, hi) that may differ from the base: the image's writes and the run's stores.
        self.changed: list[tuple[int, int]] = []
        spare = _spare_buffer(self.base, length) if self.base is not None else None
        # the buffer is held here alone (``data`` reads it), so that when this memory is gone a count of
        # its references tells whether an array view still refers to it
        if spare is not None:
            self._holder = [spare[0], self.changed]
            for lo, hi in spare[1]:                        # put back what the last run changed
                self._restore(data, lo, hi)
        else:
            self._holder = [np.empty(length, np.uint8), self.changed]
            self.data[: data.size] = data
            self.data[data.size:] = 0
        for addr, w in writes:
            self.data[addr: addr + len(w)] = np.frombuffer(w, np.uint8)
            self.changed.append((addr, addr + len(w)))
        if self.base is not None:
            weakref.finalize(self, _keep_spare, self.base, self._holder)

    @property
    def data(self) -> np.ndarray:
        """The stored bytes (uint8): the image, then zeros up to the extent, as the run changed them."""
        return self._holder[0]

    def _restore(self, base: np.ndarray, lo: int, hi: int) -> None:
        """Bytes [lo, hi) as the base has them (zero past its end)."""
        hi = min(hi, self.data.size)
        cut = min(max(lo, base.size), hi)
        self.data[lo:cut] = base[lo:cut]
        self.data[cut:hi] = 0

    def _ensure(self, end: int) -> None:
        if end > self.data.size:
            grown = np.zeros(min(self.size, max(end, 2 * self.data.size)), np.uint8)
            grown[: self.data.size] = self.data
            self._holder[0] = grown

    def _mark(self, lo: int, hi: int) -> None:
        if self.base is not None and hi > lo:
            self.changed.append((lo, hi))

    def base_region(self, addr: int, nbytes: int) -> bytes | None:
        """The base image when bytes ``addr .. addr + nbytes - 1`` are as it has them (nothing wrote them), else None."""
        if self.base is None or addr + nbytes > len(self.base):
            return None
        end = addr + nbytes
        for lo, hi in self.changed:
            if lo < end and addr < hi:
                return None
        return self.base

    def rows(self, addr: int, count: int, stride: int, nbytes: int) -> np.ndarray:
        """A read-only (count, nbytes) view of ``count`` rows ``stride`` bytes apart from ``addr`` (no copy)."""
        end = addr + (count - 1) * stride + nbytes
        self._ensure(end)
        if stride == nbytes or count == 1:
            view = self.data[addr: addr + count * nbytes].reshape(count, nbytes)
        else:
            view = np.lib.stride_tricks.as_strided(self.data[addr:], (count, nbytes), (stride, 1), writeable=False)
        view.flags.writeable = False
        return view

    def write_rows(self, addr: int, stride: int, rows: np.ndarray) -> None:
        """Write ``rows`` (count, nbytes) ``stride`` bytes apart from ``addr``; overlapping rows: the later wins."""
        count, nbytes = rows.shape
        end = addr + (count - 1) * stride + nbytes
        self._ensure(end)
        self._mark(addr, end)
        if stride == nbytes or count == 1:
            self.data[addr: addr + count * nbytes] = rows.reshape(-1)
        elif stride > nbytes:
            np.lib.stride_tricks.as_strided(self.data[addr:], (count, nbytes), (stride, 1))[...] = rows
        elif stride == 0:
            self.data[addr: addr + nbytes] = rows[-1]
        else:
            for i in range(count):
                self.data[addr + i * stride: addr + i * stride + nbytes] = rows[i]

    def span(self, addr: int, nbytes: int) -> np.ndarray:
        """A read-only view of ``nbytes`` bytes at ``addr``."""
        self._ensure(addr + nbytes)
        view = self.data[addr: addr + nbytes]
        view.flags.writeable = False
        return view

    def bytes(self, addr: int, nbytes: int) -> bytes:
        """A copy of ``nbytes`` bytes at ``addr`` (bytes past the stored ones read as zero; storage does not grow)."""
        if addr < 0 or nbytes < 0 or addr + nbytes > self.size:
            raise SimulationError(f"DRAM range {addr:#x}+{nbytes} lies outside the {self.size}-byte DRAM")
        stored = self.data[min(addr, self.data.size): min(addr + nbytes, self.data.size)].tobytes()
        return stored + bytes(nbytes - len(stored))
