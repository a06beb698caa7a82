"""Chips from aerial imagery, and maps back: the land-cover workflow's one window onto rasters.

A raster (GeoTIFF, or any format GDAL reads, PNG and JPEG included) is cut into a
regular grid of square chips (:func:`chip_grid`, from the header alone); a batch
scorer reads any range of chips in row-major order (:func:`read_chips`) with memory
bounded by the chips asked for, never the whole raster; the classes it predicts
come back as a georeferenced class map with one pixel per chip
(:func:`write_class_map`) and as a colour picture with a legend for people
(:func:`write_map_png`).  :func:`label_of_chips` gives the reference class of each
chip from a label raster, for training heads and scoring accuracy.

Only 8-bit imagery is read: 3+ bands give RGB (the bands marked red/green/blue,
else the first three), 1 or 2 bands (grey, grey + alpha) are replicated to RGB, a
palette band is looked up in its colour table.  Every failure to open or read a
file is an :class:`ImageryError` naming the file and the cause.  Hostile inputs
are bounded before any work: the chip side is within
[:data:`MIN_CHIP`, :data:`MAX_CHIP`], a grid has at most :data:`MAX_CHIPS` chips
and one read returns at most :data:`MAX_READ_BYTES` bytes (the limits are read
when used, so a deployment may change them).

PNG and JPEG are read through GDAL too (one code path); they are compressed as a
whole, so GDAL decodes them from the top for each read: fine for photographs,
slow for large mosaics (convert those to tiled GeoTIFF).  GDAL's JPEG decoder
upsamples chroma more simply than Pillow's libjpeg-turbo, so pixels of 4:2:0 JPEGs
may differ from Pillow's by a few levels.
"""
from __future__ import annotations

import json
import math
import os
import uuid
import warnings
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import Affine
from rasterio.windows import Window

#: Smallest and largest chip side, in pixels.
MIN_CHIP = 8
MAX_CHIP = 4096
#: Most chips one raster's grid may have.
MAX_CHIPS = 10_000_000
#: Most bytes one :func:`read_chips` call may return (1 GiB: about 7,100 chips of 224 x 224 RGB).
MAX_READ_BYTES = 1 << 30

EDGES = ("pad", "drop", "shift")

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class ImageryError(ValueError):
    """A raster could not be opened, read, cut or written as asked (names the file and the cause)."""


@dataclass(frozen=True)
class ChipKey:
    """One chip of a raster: its place in the grid, its pixel window and its georeference."""

    index: int          #: row-major position in the grid: ``row * cols + col``
    row: int
    col: int
    row_off: int        #: pixel window origin in the raster
    col_off: int
    height: int         #: valid (inside-the-raster) pixels of the window; < chip only at an edge with edge="pad"
    width: int
    transform: tuple[float, float, float, float, float, float]  #: affine (a, b, c, d, e, f) of the chip's pixel (0, 0)


@dataclass(frozen=True)
class ChipGrid:
    """How one raster is cut into chips; built from the raster's metadata only (see :func:`chip_grid`)."""

    path: str
    width: int
    height: int
    bands: int
    chip: int
    stride: int
    edge: str           #: "pad", "drop" or "shift"
    rows: int
    cols: int
    transform: tuple[float, ...]    #: the raster's affine (a, b, c, d, e, f); identity without georeference
    crs: str | None                 #: the raster's CRS ("EPSG:32633", or WKT); None without georeference

    @property
    def count(self) -> int:
        """Number of chips: ``rows * cols``."""
        return self.rows * self.cols

    def key(self, index: int) -> ChipKey:
        """The chip at row-major position ``index`` (IndexError outside ``[0, count)``)."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"chip index must be an integer, got {index!r}")
        index = int(index)
        if not 0 <= index < self.count:
            raise IndexError(f"chip index {index} outside [0, {self.count}) of {self.path}")
        row, col = divmod(index, self.cols)
        row_off = _origin(row, self.height, self.chip, self.stride, self.edge)
        col_off = _origin(col, self.width, self.chip, self.stride, self.edge)
        a, b, c, d, e, f = self.transform[:6]
        return ChipKey(index=index, row=row, col=col, row_off=row_off, col_off=col_off,
                       height=min(self.chip, self.height - row_off), width=min(self.chip, self.width - col_off),
                       transform=(a, b, a * col_off + b * row_off + c, d, e, d * col_off + e * row_off + f))

    def keys(self, start: int = 0, stop: int | None = None) -> list[ChipKey]:
        """The chips ``[start, stop)`` in row-major order."""
        start, stop = _check_range(self, start, stop)
        return [self.key(i) for i in range(start, stop)]

    def map_transform(self) -> tuple[float, float, float, float, float, float]:
        """Affine of the class map (one pixel per chip): pixel (r, c) is centred on chip (r, c)'s centre, side = stride.

        With ``stride == chip`` (the default) each map pixel covers exactly its chip.  The map is a regular
        grid, so with ``edge="shift"`` its last row/column stands for chips that were shifted inward.
        """
        a, b, c, d, e, f = (float(v) for v in self.transform[:6])
        off, s = (self.chip - self.stride) / 2.0, float(self.stride)
        return (a * s, b * s, a * off + b * off + c, d * s, e * s, d * off + e * off + f)


# --------------------------------------------------------------------------------------------- the grid


def _count(size: int, chip: int, stride: int, edge: str) -> int:
    """Chips along one axis of ``size`` pixels."""
    if edge == "drop":
        return (size - chip) // stride + 1 if size >= chip else 0
    # pad / shift: origins k * stride inside the raster, until a chip reaches the far edge
    reach = 1 + (-(-(size - chip) // stride) if size > chip else 0)
    return min(-(-size // stride), reach)


def _origin(k: int, size: int, chip: int, stride: int, edge: str) -> int:
    """Pixel origin of the ``k``-th chip along an axis."""
    o = k * stride
    if edge == "shift" and o + chip > size:
        o = size - chip
    return o


def _check_chip(chip, stride, edge) -> tuple[int, int, str]:
    if isinstance(chip, bool) or not isinstance(chip, (int, np.integer)) or not MIN_CHIP <= chip <= MAX_CHIP:
        raise ImageryError(f"chip size {chip!r}: must be an integer in [{MIN_CHIP}, {MAX_CHIP}] pixels")
    if stride is None:
        stride = chip
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ImageryError(f"stride {stride!r}: must be a positive integer number of pixels")
    if edge not in EDGES:
        raise ImageryError(f"edge {edge!r}: choose one of {', '.join(EDGES)}")
    return int(chip), int(stride), edge


def chip_grid(path, chip: int = 224, stride: int | None = None, edge: str = "pad") -> ChipGrid:
    """The grid of ``chip`` x ``chip`` chips, ``stride`` pixels apart (default: ``chip``), over the raster at ``path``.

    ``edge`` says what happens where the raster does not divide evenly: "pad" keeps partial edge chips
    (zero-padded when read), "drop" keeps only whole chips, "shift" moves the last chip of each row/column
    inward so it is whole (it then overlaps its neighbour).  Only the header is read.  Raises
    :class:`ImageryError` for a file that is not a readable 8-bit raster, a chip size outside
    [MIN_CHIP, MAX_CHIP], a stride < 1, a raster too small for one whole chip with "drop"/"shift", or a
    grid of more than MAX_CHIPS chips.
    """
    chip, stride, edge = _check_chip(chip, stride, edge)
    path = _path(path)
    with _open(path) as src:
        _check_dtype(path, src)
        width, height, bands = src.width, src.height, src.count
        transform, crs = _georef(src)
    if edge != "pad" and (width < chip or height < chip):
        raise ImageryError(f"{path}: the raster is {width} x {height} pixels, smaller than one {chip} x {chip} "
                           f'chip, so edge="{edge}" leaves no chip; use edge="pad" (zero-padded) or a smaller chip')
    rows, cols = _count(height, chip, stride, edge), _count(width, chip, stride, edge)
    if rows * cols > MAX_CHIPS:
        raise ImageryError(f"{path}: a {width} x {height} raster cut into {chip}-pixel chips every {stride} pixels "
                           f"makes {rows} x {cols} = {rows * cols:,} chips, more than {MAX_CHIPS:,} "
                           f"(runtime.imagery.MAX_CHIPS); use a larger stride or chip")
    return ChipGrid(path=path, width=width, height=height, bands=bands, chip=chip, stride=stride, edge=edge,
                    rows=rows, cols=cols, transform=transform, crs=crs)


# --------------------------------------------------------------------------------------------- reading


def _path(path) -> str:
    try:
        return os.fspath(path)
    except TypeError:
        raise ImageryError(f"{path!r} is not a file path") from None


def _is_local(path: str) -> bool:
    return not path.startswith("/vsi") and "://" not in path


class _open:
    """``rasterio.open(path)`` for reading, with failures as ImageryError and no NotGeoreferencedWarning."""

    def __init__(self, path: str):
        self.path = path
        if _is_local(path):
            if not os.path.exists(path):
                raise ImageryError(f"{path}: no such file")
            if os.path.isdir(path):
                raise ImageryError(f"{path}: is a directory, not a raster file")
            if not os.access(path, os.R_OK):
                raise ImageryError(f"{path}: permission denied (not readable)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self.src = rasterio.open(path)
        except (RasterioError, OSError) as e:
            raise ImageryError(f"{path}: cannot be read as a raster image ({_cause(e, path)})") from None

    def __enter__(self):
        return self.src

    def __exit__(self, *exc):
        self.src.close()


def _cause(e: Exception, path: str) -> str:
    """The exception's message, without repeating the path it names."""
    text = str(e).strip() or type(e).__name__
    for p in (f"'{path}' ", f"{path}: "):
        if text.startswith(p):
            text = text[len(p):]
    return text


def _check_dtype(path: str, src) -> None:
    if src.count < 1:
        raise ImageryError(f"{path}: the raster has no bands")
    dtypes = set(src.dtypes)
    if dtypes != {"uint8"}:
        dt = ", ".join(sorted(dtypes))
        raise ImageryError(f"{path}: pixels are {dt}, but only 8-bit (uint8) imagery is read; scale it to 0-255 "
                           f"first, e.g. gdal_translate -ot Byte -scale <min> <max> 0 255 {path} out.tif")


def _georef(src) -> tuple[tuple[float, ...], str | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        transform = tuple(float(v) for v in src.transform[:6])
        crs = src.crs
    return transform, (crs.to_string() if crs else None)


def _rgb_plan(src) -> tuple[list[int], np.ndarray | None]:
    """Which bands to read for RGB, and a palette lookup table (256 x 3) for a palette band."""
    interp = list(src.colorinterp)
    if src.count >= 3:
        if all(c in interp for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
            return [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)], None
        return [1, 2, 3], None
    if interp and interp[0] == ColorInterp.palette:
        try:
            cmap = src.colormap(1)
        except (RasterioError, ValueError):
            cmap = None
        if cmap:
            lut = np.zeros((256, 3), np.uint8)
            for k, v in cmap.items():
                if 0 <= k < 256:
                    lut[k] = v[:3]
            return [1], lut
    return [1], None


def _check_range(grid: ChipGrid, start, stop) -> tuple[int, int]:
    if stop is None:
        stop = grid.count
    for name, v in (("start", start), ("stop", stop)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ImageryError(f"chip range {name}={v!r}: must be an integer")
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop <= grid.count:
        raise ImageryError(f"chip range [{start}, {stop}) outside [0, {grid.count}] of {grid.path}")
    return start, stop


def _check_same(path: str, src, grid: ChipGrid, what: str) -> None:
    if (src.width, src.height) != (grid.width, grid.height):
        raise ImageryError(f"{path}: {what} is {src.width} x {src.height} pixels but the grid's raster "
                           f"{grid.path} is {grid.width} x {grid.height}")


def _row_bands(grid: ChipGrid, start: int, stop: int):
    """The reads covering chips [start, stop): (window, [(position in output, key, column offset in window)])."""
    i = start
    while i < stop:
        row = i // grid.cols
        last = min(stop, (row + 1) * grid.cols)
        keys = [grid.key(j) for j in range(i, last)]
        if grid.stride <= grid.chip:       # the chips of a grid row touch or overlap: one read spans them all
            lo = keys[0].col_off
            hi = max(k.col_off + k.width for k in keys)
            yield (Window(lo, keys[0].row_off, hi - lo, keys[0].height),
                   [(j - start, k, k.col_off - lo) for j, k in zip(range(i, last), keys)])
        else:                              # gaps between chips: read each chip's window alone
            for j, k in zip(range(i, last), keys):
                yield Window(k.col_off, k.row_off, k.width, k.height), [(j - start, k, 0)]
        i = last


def _read(path: str, src, indexes: list[int], window: Window) -> np.ndarray:
    try:
        return src.read(indexes, window=window)
    except (RasterioError, OSError) as e:
        raise ImageryError(f"{path}: reading pixels (rows {window.row_off}-{window.row_off + window.height}, "
                           f"columns {window.col_off}-{window.col_off + window.width}) failed: "
                           f"{_cause(e, path)}") from None


def read_chips(grid: ChipGrid, start: int, stop: int) -> tuple[list[ChipKey], np.ndarray]:
    """Chips ``[start, stop)`` of ``grid`` in row-major order: their keys, and their pixels as uint8 RGB
    (n, chip, chip, 3).

    Pixels of a partial edge chip outside the raster are 0.  Only the windows under the requested chips are
    read (one read per grid row the range covers), so memory is about twice the returned array.  Raises
    :class:`ImageryError` for a range outside the grid, a request larger than MAX_READ_BYTES, or a file
    that is unreadable or no longer matches the grid.
    """
    start, stop = _check_range(grid, start, stop)
    n = stop - start
    if n * grid.chip * grid.chip * 3 > MAX_READ_BYTES:
        raise ImageryError(f"{grid.path}: reading {n:,} chips of {grid.chip} x {grid.chip} at once would take "
                           f"{n * grid.chip * grid.chip * 3:,} bytes, more than {MAX_READ_BYTES:,} "
                           f"(runtime.imagery.MAX_READ_BYTES); read fewer chips per call")
    out = np.zeros((n, grid.chip, grid.chip, 3), np.uint8)
    keys: list[ChipKey] = [None] * n  # type: ignore[list-item]
    if n == 0:
        return [], out
    with _open(grid.path) as src:
        _check_dtype(grid.path, src)
        _check_same(grid.path, src, grid, "the raster now")
        indexes, lut = _rgb_plan(src)
        for window, chips in _row_bands(grid, start, stop):
            band = _read(grid.path, src, indexes, window)            # (bands, h, span)
            for pos, key, x in chips:
                piece = band[:, :, x:x + key.width]
                if lut is not None:
                    out[pos, :key.height, :key.width] = lut[piece[0]]
                else:
                    out[pos, :key.height, :key.width] = piece.transpose(1, 2, 0)   # 1 band broadcasts to 3
                keys[pos] = key
    return keys, out


def label_of_chips(label_path, grid: ChipGrid, start: int, stop: int, nodata: int | None = None) -> np.ndarray:
    """The majority class of the label raster under each chip ``[start, stop)`` of ``grid`` (its valid window).

    The label raster is single-band integer class codes, the same size and georeference as the grid's
    raster (:class:`ImageryError` if not).  Pixels equal to ``nodata`` (default: the label raster's own
    nodata value) do not vote; a chip with no voting pixel gets ``nodata``.  Ties go to the smallest code.
    Returns one entry per chip, of the label raster's dtype (int64 if ``nodata`` does not fit in it).
    """
    start, stop = _check_range(grid, start, stop)
    label_path = _path(label_path)
    with _open(label_path) as src:
        dtype = np.dtype(src.dtypes[0])
        if not np.issubdtype(dtype, np.integer):
            raise ImageryError(f"{label_path}: label pixels are {dtype}; class codes must be integers")
        _check_same(label_path, src, grid, "the label raster")
        transform, crs = _georef(src)
        if not np.allclose(transform, grid.transform[:6], rtol=1e-9, atol=1e-9):
            raise ImageryError(f"{label_path}: label raster transform {transform} differs from the image's "
                               f"{tuple(grid.transform[:6])} ({grid.path})")
        if (crs is None) != (grid.crs is None) or (crs is not None and CRS.from_user_input(crs)
                                                   != CRS.from_user_input(grid.crs)):
            raise ImageryError(f"{label_path}: label raster CRS {crs} differs from the image's {grid.crs} "
                               f"({grid.path})")
        if nodata is None and src.nodata is not None and math.isfinite(src.nodata):
            nodata = int(src.nodata)
        fill = nodata if nodata is not None else 0
        out = np.zeros(stop - start, np.int64)
        for window, chips in _row_bands(grid, start, stop):
            band = _read(label_path, src, [1], window)[0]
            for pos, key, x in chips:
                v = band[:, x:x + key.width].ravel()
                if nodata is not None:
                    v = v[v != nodata]
                if v.size == 0:
                    out[pos] = fill
                elif v.dtype == np.uint8:
                    out[pos] = int(np.argmax(np.bincount(v, minlength=256)))
                else:
                    codes, counts = np.unique(v, return_counts=True)
                    out[pos] = int(codes[np.argmax(counts)])
    info = np.iinfo(dtype)
    return out.astype(dtype) if info.min <= fill <= info.max else out


# --------------------------------------------------------------------------------------------- writing


def _atomic_target(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ImageryError(f"{path}: cannot write, the folder {folder} does not exist")
    return os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _class_array(classes, grid_shape: tuple[int, int] | None, nodata: int) -> np.ndarray:
    if isinstance(nodata, bool) or not isinstance(nodata, (int, np.integer)) or not 0 <= nodata <= 255:
        raise ImageryError(f"nodata {nodata!r}: must be an integer in [0, 255]")
    if np.ma.isMaskedArray(classes):
        classes = classes.filled(nodata) if classes.dtype.kind in "iub" else classes
    a = np.asarray(classes)
    if a.dtype.kind not in "iub":
        raise ImageryError(f"class codes must be integers, got an array of {a.dtype}")
    if grid_shape is not None:
        rows, cols = grid_shape
        if a.shape == (rows * cols,):
            a = a.reshape(rows, cols)
        if a.shape != (rows, cols):
            raise ImageryError(f"class map of shape {a.shape}: the grid has {rows} x {cols} chips "
                               f"(give shape ({rows}, {cols}) or ({rows * cols},))")
    elif a.ndim != 2 or 0 in a.shape:
        raise ImageryError(f"class map of shape {a.shape}: must be a non-empty 2-D array (rows x cols)")
    if a.size and (int(a.min()) < 0 or int(a.max()) > 255):
        raise ImageryError(f"class codes must be in [0, 255] (found {int(a.min())}..{int(a.max())}); "
                           f"mark chips that were not scored with nodata={nodata} or a masked array")
    return a.astype(np.uint8)


def _colours(n: int, colours) -> list[tuple[int, int, int]]:
    if colours is None:
        from matplotlib import colormaps
        cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "hsv"]
        return [tuple(int(round(255 * c)) for c in cmap(i if n <= 20 else i / n)[:3]) for i in range(n)]
    colours = [tuple(int(c) for c in rgb) for rgb in colours]
    if len(colours) < n or any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in colours):
        raise ImageryError(f"colours: need {n} (r, g, b) triples of 0-255, got {colours!r}")
    return colours


def write_class_map(path, grid: ChipGrid, classes: np.ndarray, *, nodata: int = 255,
                    names: list[str] | None = None, colours: list[tuple[int, int, int]] | None = None) -> None:
    """Write the chip classes as a GeoTIFF with one pixel per chip, overlaying the source raster.

    ``classes`` is (rows, cols) or (count,) uint8 class codes; ``nodata`` (or a masked entry) marks chips
    that were not scored.  The map carries the source's CRS and the transform of :meth:`ChipGrid.map_transform`
    (the raster's, scaled by the stride).  ``names`` (stored as the CLASS_NAMES tag) and ``colours`` (a colour
    table, so GIS viewers show the classes in colour) are optional.  Written to a temporary name in the same
    folder, then renamed: readers never see a partial file.
    """
    path = _path(path)
    a = _class_array(classes, (grid.rows, grid.cols), nodata)
    profile = dict(driver="GTiff", width=grid.cols, height=grid.rows, count=1, dtype="uint8", nodata=nodata,
                   transform=Affine(*grid.map_transform()), compress="deflate")
    if grid.crs is not None:
        profile["crs"] = CRS.from_user_input(grid.crs)
    if grid.rows >= 512 and grid.cols >= 512:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    tmp = _atomic_target(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(a, 1)
                dst.set_band_description(1, "class")
                tags = {"CHIP": str(grid.chip), "STRIDE": str(grid.stride), "EDGE": grid.edge,
                        "SOURCE": os.path.basename(grid.path)}
                if names is not None:
                    tags["CLASS_NAMES"] = json.dumps(list(names))
                dst.update_tags(**tags)
                if names is not None or colours is not None:
                    n = len(names) if names is not None else len(colours)
                    table = {i: (*c, 255) for i, c in enumerate(_colours(n, colours)) if i != nodata}
                    table[nodata] = (0, 0, 0, 0)
                    dst.write_colormap(1, table)
        os.replace(tmp, path)
    except (RasterioError, OSError) as e:
        raise ImageryError(f"{path}: writing the class map failed ({_cause(e, tmp)})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_map_png(path, classes: np.ndarray, names: list[str], colours: list[tuple[int, int, int]] | None = None,
                  title: str = "") -> None:
    """Draw a class map (rows x cols class codes) as a colour PNG with a legend, for people to look at.

    Codes ``0 .. len(names) - 1`` are drawn in ``colours`` (default: matplotlib's tab10/tab20); any other
    code (nodata) is drawn light grey as "not scored".  The legend gives each class's share of the scored
    chips.  Written atomically (temporary name, then rename).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = _path(path)
    a = _class_array(classes, None, 255)
    names = [str(n) for n in names]
    if not names:
        raise ImageryError("write_map_png: names must list at least one class")
    cols = _colours(len(names), colours)[:len(names)]
    unscored = a >= len(names)
    scored = int((~unscored).sum())
    rgba = [tuple(v / 255 for v in c) for c in cols] + [(0.85, 0.85, 0.85)]
    shown = np.where(unscored, len(names), a)

    rows_, cols_ = a.shape
    aspect = cols_ / rows_
    img_w, img_h = (8.0, 8.0 / aspect) if aspect >= 1 else (8.0 * aspect, 8.0)
    img_w, img_h = max(img_w, 2.0), max(img_h, 2.0)
    fig = Figure(figsize=(img_w + 3.0, img_h + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(shown, cmap=ListedColormap(rgba), vmin=-0.5, vmax=len(names) + 0.5, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    handles = []
    for i, (name, c) in enumerate(zip(names, rgba)):
        share = (a == i).sum() / scored if scored else 0.0
        handles.append(Patch(facecolor=c, edgecolor="black", linewidth=0.5, label=f"{name} ({share:.0%})"))
    if unscored.any():
        handles.append(Patch(facecolor=rgba[-1], edgecolor="black", linewidth=0.5,
                             label=f"not scored ({int(unscored.sum())} chips)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=10)
    tmp = _atomic_target(path)
    try:
        fig.savefig(tmp, format="png", bbox_inches="tight")
        os.replace(tmp, path)
    except OSError as e:
        raise ImageryError(f"{path}: writing the map picture failed ({e})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
