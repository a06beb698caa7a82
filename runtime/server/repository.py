"""The model repository on disk: ``ROOT/NAME/VERSION/<file>.npuz|.npup`` (Triton's and KServe's layout).

NAME is a plain directory name (letters, digits, ``_``, ``.``, ``-``; never ``.``/``..`` or a path), VERSION a
positive integer; each version directory holds exactly one program (``.npuz``) or pipeline (``.npup``) file.
The highest version is a model's default.  Nothing here raises for a malformed entry: a version that cannot be
served is reported with the reason, so the index can list it as UNAVAILABLE.
"""
from __future__ import annotations

import re
from pathlib import Path

#: Files a version directory may hold to be served.
PROGRAM_SUFFIXES = (".npuz", ".npup")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_VERSION = re.compile(r"[1-9][0-9]{0,17}")
#: What a worker's Session of a program takes besides its DRAM image counted ``DRAM_FACTOR`` times (decoded
#: weight tiles are binary32, several times the packed image): the interpreter-side arrays, caches, metadata.
SESSION_MARGIN = 16 << 20
DRAM_FACTOR = 4


def name_problem(name) -> str | None:
    """Why ``name`` cannot be a model name (None: it can).  Refuses anything that could leave the repository."""
    if not isinstance(name, str) or not name:
        return "a model name must be a non-empty string"
    if not _NAME.fullmatch(name):
        return (f"invalid model name {name[:200]!r}: a model name is one directory name of letters, digits, '_', "
                f"'.' and '-' (no path separators or '..'), at most 128 characters")
    return None


def is_version(text) -> bool:
    """Whether ``text`` is a version number (a positive integer written without sign or leading zeros)."""
    return isinstance(text, str) and bool(_VERSION.fullmatch(text))


def model_names(root: Path) -> list[str]:
    """Names of the model directories under ``root`` (sorted; entries with invalid names are skipped)."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    return sorted(p.name for p in entries if p.is_dir() and name_problem(p.name) is None)


def model_versions(root: Path, name: str) -> dict[str, "Path | str"]:
    """Version -> its program file, or the reason it cannot be served (str).  Empty when NAME has no version
    directories; FileNotFoundError when there is no directory NAME."""
    d = root / name
    if not d.is_dir():
        raise FileNotFoundError(f"no model directory {name!r} in the repository {root}")
    out: dict[str, Path | str] = {}
    for v in d.iterdir():
        if not v.is_dir() or not is_version(v.name):
            continue
        try:
            files = sorted(p for p in v.iterdir() if p.suffix in PROGRAM_SUFFIXES and p.is_file())
        except OSError as exc:
            out[v.name] = f"cannot list {v}: {exc.strerror or exc}"
            continue
        if not files:
            out[v.name] = f"{v} holds no program file ({' or '.join(PROGRAM_SUFFIXES)})"
        elif len(files) > 1:
            out[v.name] = f"{v} holds several program files ({', '.join(p.name for p in files)}); keep one"
        else:
            out[v.name] = files[0]
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def size_estimate(program, path: Path) -> int:
    """Bytes a worker's Session of ``program`` is estimated to hold: ``DRAM_FACTOR`` times its DRAM images (every
    NPU segment's) plus ``SESSION_MARGIN``; for a file whose program is not known here (a pipeline), the file's
    size stands in for the images."""
    image = None
    if program is not None:
        if hasattr(program, "dram"):
            image = len(program.dram)
        elif hasattr(program, "segments"):
            image = 0
            for seg in program.segments:
                prog = getattr(seg, "program", None)
                image += len(getattr(prog, "dram", b"") or b"") + len(getattr(seg, "onnx", b"") or b"")
    if image is None:
        try:
            image = path.stat().st_size
        except OSError:
            image = 0
    return DRAM_FACTOR * image + SESSION_MARGIN
