"""Read PyTorch ``.pth`` state dicts into numpy arrays, without torch and without running code.

Both of torch's file layouts are read: the legacy one (a sequence of pickles
followed by the raw storages) and the zip archive of torch >= 1.6
(``<name>/data.pkl`` plus one ``<name>/data/<key>`` file per storage).  The
pickles are read by an unpickler that only knows the handful of records a
tensor state dict is made of (an ``OrderedDict``, torch's tensor rebuild
functions and its storage types), each mapped to a small numpy stand-in; any
other global, such as ``posix.system``, is refused before anything runs.
Every declared size is checked against the file's size before memory is
allocated, and every problem is reported as a :class:`PthError` naming the
file.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import struct
import zipfile
from dataclasses import dataclass

import numpy as np

#: The first pickle of a legacy file.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: The format version pickled after the magic number.
LEGACY_PROTOCOL = 1001
#: The first bytes of a zip archive (the layout of torch >= 1.6).
ZIP_MAGIC = b"PK\x03\x04"

#: torch storage type name -> numpy element type of the stored bytes (little-endian).
STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "BFloat16Storage": "<u2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


class PthError(ValueError):
    """A ``.pth`` file that cannot be read: the message names the file and what is wrong."""


class UnsafePickleError(PthError):
    """A ``.pth`` file whose pickle asks for something other than tensor records."""


class _Sealed:
    """The pickle cannot change these records: its BUILD opcode (``__setstate__``) is refused."""

    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafePickleError(f"refused to set the state of {type(self).__name__.strip('_')}")


class _Global(_Sealed):
    """An allowed global: calls ``fn`` and nothing else."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


@dataclass(frozen=True)
class _StorageType(_Sealed):
    """Stand-in for ``torch.FloatStorage`` and friends: only its element type matters."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


class _Storage(_Sealed):
    """A storage named in the pickle; its bytes arrive later (legacy) or from the archive (zip)."""

    def __init__(self, stype: _StorageType, key: str, numel: int):
        self.stype, self.key, self.numel = stype, key, numel
        self.data: np.ndarray | None = None


@dataclass
class _Tensor(_Sealed):
    """Stand-in for a rebuilt tensor: a strided view of a storage, materialised after loading."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """``torch._utils._rebuild_tensor`` / ``_rebuild_tensor_v2`` (requires_grad, hooks, metadata ignored)."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor record does not refer to a storage")
    try:
        size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(storage_offset)
    except (TypeError, ValueError):
        raise pickle.UnpicklingError("a tensor record has a malformed size, stride or offset") from None
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    """``torch._utils._rebuild_parameter``: a Parameter is its tensor."""
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): _Global(collections.OrderedDict),
    ("torch._utils", "_rebuild_tensor"): _Global(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Global(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Global(_rebuild_parameter),
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    """Resolves only the tensor records of ``_ALLOWED``; storages are created on first mention."""

    def __init__(self, data: bytes, allow_globals: bool):
        super().__init__(io.BytesIO(data))
        self.allow_globals = allow_globals
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        found = _ALLOWED.get((module, name)) if self.allow_globals else None
        if found is None:
            raise UnsafePickleError(f"refused global {module}.{name}: only tensor state dicts can be loaded")
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafePickleError(f"refused persistent id {str(pid)[:80]}: only storage records are allowed")
        stype, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(stype, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage record {str(pid)[:80]}")
        key = str(key)
        storage = self.storages.setdefault(key, _Storage(stype, key, numel))
        if storage.stype != stype or storage.numel != numel:
            raise pickle.UnpicklingError(f"storage {key} is declared twice with different types or sizes")
        if view is None:
            return storage
        # Legacy view of a storage: (view key, element offset, element count).
        _view_key, offset, count = view
        return _View(storage, int(offset), int(count))


class _View(_Storage):
    """A legacy storage view: a slice of a root storage."""

    def __init__(self, root: _Storage, offset: int, count: int):
        super().__init__(root.stype, root.key, count)
        self.root, self.start = root, offset


def _pickle_end(data: bytes, start: int) -> int:
    """The offset just after the pickle starting at ``start`` (checks it is complete)."""
    stream = io.BytesIO(data)
    stream.seek(start)
    for _op, _arg, _pos in pickletools.genops(stream):      # bounded: reads only what the file holds
        pass
    return stream.tell()


def _unpickle(data: bytes, start: int, allow_globals: bool):
    """(object, end offset, storages) of the pickle at ``start``."""
    end = _pickle_end(data, start)
    unpickler = _Unpickler(data[start:end], allow_globals)
    return unpickler.load(), end, unpickler.storages


def _fill(storage: _Storage, raw, byteorder: str) -> None:
    """Attach the bytes of a storage (exactly ``numel`` elements) as a native-order array."""
    dtype = storage.stype.dtype.newbyteorder("<" if byteorder == "little" else ">")
    if len(raw) != storage.numel * dtype.itemsize:
        raise PthError(f"storage {storage.key} holds {len(raw)} bytes, "
                       f"{storage.numel} x {dtype.itemsize} declared")
    storage.data = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="), copy=False)


def _read_legacy(data: bytes) -> tuple[object, dict]:
    magic, pos, _ = _unpickle(data, 0, False)
    if magic != LEGACY_MAGIC:
        raise PthError("not a torch file (wrong magic number)")
    version, pos, _ = _unpickle(data, pos, False)
    if version != LEGACY_PROTOCOL:
        raise PthError(f"unsupported legacy protocol version {version}")
    sys_info, pos, _ = _unpickle(data, pos, False)
    byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else "big"
    obj, pos, storages = _unpickle(data, pos, True)
    keys, pos, _ = _unpickle(data, pos, False)
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise PthError("the storage key list does not match the storages the state dict uses")
    for key in map(str, keys):
        storage = storages[key]
        if pos + 8 > len(data):
            raise PthError(f"truncated: storage {key} is missing")
        (numel,) = struct.unpack_from("<q" if byteorder == "little" else ">q", data, pos)
        nbytes = numel * storage.stype.dtype.itemsize
        if numel != storage.numel or pos + 8 + nbytes > len(data):
            raise PthError(f"truncated or corrupt: storage {key} declares {numel} elements "
                           f"({storage.numel} expected), {len(data) - pos - 8} bytes remain")
        _fill(storage, memoryview(data)[pos + 8:pos + 8 + nbytes], byteorder)
        pos += 8 + nbytes
    return obj, storages


def _read_zip(path: str, file_size: int) -> tuple[object, dict]:
    with zipfile.ZipFile(path) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        pkl = [name for name in infos if name == "data.pkl" or name.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise PthError("zip archive without exactly one data.pkl: not a torch file")
        prefix = pkl[0][:-len("data.pkl")]

        def read(name: str, expected: int | None = None) -> bytes:
            info = infos.get(name)
            if info is None:
                raise PthError(f"archive member {name} is missing")
            if info.file_size > file_size or (expected is not None and info.file_size != expected):
                raise PthError(f"archive member {name} declares {info.file_size} bytes"
                               + (f", {expected} expected" if expected is not None else ""))
            return archive.read(info)

        byteorder = "little"
        if prefix + "byteorder" in infos:
            byteorder = read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise PthError(f"unknown byte order {byteorder!r}")
        obj, _, storages = _unpickle(read(pkl[0]), 0, True)
        for key, storage in storages.items():
            _fill(storage, read(f"{prefix}data/{key}", storage.numel * storage.stype.dtype.itemsize), byteorder)
    return obj, storages


def _materialise(name: str, t: _Tensor, budget: list[int]) -> np.ndarray:
    """A contiguous copy of a strided tensor view, after checking it lies inside its storage."""
    storage, start = t.storage, t.offset
    if isinstance(storage, _View):
        start += storage.start
        if storage.start < 0 or storage.start + storage.numel > storage.root.numel:
            raise PthError(f"{name}: storage view outside its storage")
        storage = storage.root
    if len(t.size) != len(t.stride) or min(t.size + t.stride + (start,), default=0) < 0:
        raise PthError(f"{name}: malformed size {t.size} / stride {t.stride} / offset {start}")
    count = int(np.prod(t.size, dtype=np.int64)) if t.size else 1
    last = start + sum((n - 1) * s for n, s in zip(t.size, t.stride)) if count else start - 1
    if last >= storage.numel or count > max(storage.numel, 1):
        raise PthError(f"{name}: size {t.size}, stride {t.stride}, offset {start} "
                       f"exceed its storage of {storage.numel} elements")
    budget[0] -= count * storage.data.itemsize
    if budget[0] < 0:
        raise PthError(f"{name}: the tensors would need far more memory than the file holds")
    item = storage.data.itemsize
    view = np.lib.stride_tricks.as_strided(storage.data[start:], t.size, [s * item for s in t.stride],
                                           writeable=False)
    out = np.array(view, order="C")                         # (ascontiguousarray makes 0-d arrays 1-d)
    if storage.stype.name == "BFloat16Storage":                # no numpy bfloat16: widen to float32
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def load_state_dict(path) -> dict[str, np.ndarray]:
    """The tensors of a torch ``.pth`` state dict as contiguous numpy arrays, keyed by name.

    Reads legacy and zip-format files.  Raises :class:`PthError` (a
    ``ValueError``) for unreadable, truncated or corrupt files and
    :class:`UnsafePickleError` for pickles that reference anything but
    tensor records; nothing in the file is executed.
    """
    path = os.fspath(path)
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4)
        if head == ZIP_MAGIC:
            if not zipfile.is_zipfile(path):
                raise PthError("truncated or corrupt zip archive (no central directory)")
            obj, _ = _read_zip(path, file_size)
        else:
            with open(path, "rb") as f:
                data = f.read()
            obj, _ = _read_legacy(data)
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise PthError(f"holds a {type(obj).__name__}, not a state dict")
        budget = [4 * file_size + (1 << 20)]
        out = {}
        for name, value in obj.items():
            if not isinstance(value, _Tensor):
                raise PthError(f"entry {name!r} is a {type(value).__name__}, not a tensor")
            out[str(name)] = _materialise(str(name), value, budget)
        return out
    except PthError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    except OSError as exc:
        raise PthError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            struct.error, zipfile.BadZipFile, MemoryError, RecursionError, UnicodeDecodeError) as exc:
        raise PthError(f"{path}: truncated or corrupt ({type(exc).__name__}: {exc})") from None
