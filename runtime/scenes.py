"""Synthetic land-cover scenes: an aerial-looking RGB GeoTIFF and its label GeoTIFF, for tests and demos.

:func:`make_scene` lays five classes (:data:`CLASSES`) out in large irregular regions
(a jittered Voronoi partition with wavy borders, several chips across each region, so
most chips are of one class) and paints each region with its class's procedural
texture: water smooth dark blue-green with faint ripples, forest dark green
blobby canopy, fields light green to yellow with parallel stripes at a random angle
per field, built-up grey blocks between a grid of roads, bare ground brown/tan with
speckle.  The classes differ in colour and in texture, as a pretrained CNN's
features can tell apart.  Every pixel is a function of its coordinates, the seed
and its region's parameters, so the scene is written strip by strip with memory
bounded by one strip, and the same seed gives the same files.
"""
from __future__ import annotations

import json
import os

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.windows import Window

CLASSES = ("water", "forest", "field", "built-up", "bare ground")
#: Map colours of :data:`CLASSES` (r, g, b), for class-map pictures and the label raster's colour table.
CLASS_COLOURS = ((31, 120, 200), (20, 110, 40), (230, 210, 80), (200, 50, 50), (170, 120, 70))
#: The scenes' coordinate reference system (WGS 84 / UTM zone 33N), top-left corner and pixel size (metres).
SCENE_CRS = "EPSG:32633"
SCENE_ORIGIN = (500_000.0, 5_300_000.0)
PIXEL_SIZE = 0.5
#: Largest scene side, in pixels.
MAX_SIDE = 100_000

_STRIP = 256          # rows written at a time (a multiple of the GeoTIFF's 256 x 256 tiles)
_U32 = 0xFFFFFFFF


# --------------------------------------------------------------------------------------------- noise


def _hash(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """A uint32 hash of integer lattice coordinates (any sign)."""
    h = (ix.astype(np.uint32) * np.uint32(0x9E3779B1)) ^ (iy.astype(np.uint32) * np.uint32(0x85EBCA77))
    h ^= np.uint32(salt & _U32)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    return h


def _unit(h: np.ndarray) -> np.ndarray:
    """uint32 hashes as floats in [0, 1)."""
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _white(py: np.ndarray, px: np.ndarray, salt: int) -> np.ndarray:
    """Independent uniform [0, 1) noise per pixel."""
    return _unit(_hash(px, py, salt))


def _noise(py: np.ndarray, px: np.ndarray, period: float, salt: int) -> np.ndarray:
    """Smooth value noise in [0, 1) with features about ``period`` pixels across, at pixel coordinates."""
    fy = (py.astype(np.float32) + 0.5) / np.float32(period)
    fx = (px.astype(np.float32) + 0.5) / np.float32(period)
    iy, ix = np.floor(fy), np.floor(fx)
    ty, tx = fy - iy, fx - ix
    ty, tx = ty * ty * (3 - 2 * ty), tx * tx * (3 - 2 * tx)
    iy, ix = iy.astype(np.int64), ix.astype(np.int64)
    y0, x0 = int(iy.min()), int(ix.min())
    gy = np.arange(y0, int(iy.max()) + 2)[:, None]
    gx = np.arange(x0, int(ix.max()) + 2)[None, :]
    lattice = _unit(_hash(gx, gy, salt))            # the lattice under these pixels only: small
    ry, rx = iy - y0, ix - x0
    top = lattice[ry, rx] + tx * (lattice[ry, rx + 1] - lattice[ry, rx])
    bottom = lattice[ry + 1, rx] + tx * (lattice[ry + 1, rx + 1] - lattice[ry + 1, rx])
    return top + ty * (bottom - top)


def _noise_grid(rows: np.ndarray, cols: np.ndarray, period: float, salt: int) -> np.ndarray:
    """:func:`_noise` on the grid ``rows`` x ``cols`` (1-D pixel coordinates): (len(rows), len(cols)), same values."""
    def axis(p):
        f = (p.astype(np.float32) + 0.5) / np.float32(period)
        i = np.floor(f)
        t = f - i
        return i.astype(np.int64), t * t * (3 - 2 * t)
    iy, ty = axis(rows)
    ix, tx = axis(cols)
    y0, x0 = int(iy.min()), int(ix.min())
    gy = np.arange(y0, int(iy.max()) + 2)[:, None]
    gx = np.arange(x0, int(ix.max()) + 2)[None, :]
    lattice = _unit(_hash(gx, gy, salt))
    ry, rx = (iy - y0)[:, None], (ix - x0)[None, :]
    tx = tx[None, :]
    top = lattice[ry, rx]
    top += tx * (lattice[ry, rx + 1] - top)
    bottom = lattice[ry + 1, rx]
    bottom += tx * (lattice[ry + 1, rx + 1] - bottom)
    bottom -= top
    bottom *= ty[:, None]
    top += bottom
    return top


# --------------------------------------------------------------------------------------------- textures


class _Layout:
    """The region partition and the per-region parameters of one scene."""

    def __init__(self, width: int, height: int, chip: int, seed: int, region: float):
        rng = np.random.default_rng(seed)
        side = region * chip
        ny, nx = max(1, round(height / side)), max(1, round(width / side))
        while ny * nx < len(CLASSES) and (ny < height // 16 or nx < width // 16):
            if (ny <= nx and ny < height // 16) or nx >= width // 16:
                ny += 1
            else:
                nx += 1
        self.ny, self.nx = ny, nx
        self.ly, self.lx = height / ny, width / nx
        n = ny * nx
        self.jitter = rng.uniform(0.2, 0.8, (ny, nx, 2)).astype(np.float32)
        self.classes = rng.permutation(np.resize(np.arange(len(CLASSES)), n)).astype(np.uint8)
        self.angle = rng.uniform(0, np.pi, n).astype(np.float32)           # field stripes, water ripples
        self.period = rng.uniform(7, 14, n).astype(np.float32)             # field stripe spacing
        self.tone = rng.uniform(0, 1, n).astype(np.float32)                # field green .. yellow
        self.street = rng.uniform(-0.5, 0.5, n).astype(np.float32)         # built-up street grid angle
        self.block = rng.uniform(36, 64, n).astype(np.float32)             # built-up block size
        self.road = rng.uniform(5, 9, n).astype(np.float32)                # built-up road width
        self.tint = rng.normal(0, 6, (n, 3)).astype(np.float32)            # per-region colour shift
        self.warp = 0.1 * min(self.ly, self.lx)
        self.salt = (int(seed) * 0x9E3779B9 + 0x1234567) & _U32

    def regions(self, y0: int, y1: int, width: int) -> np.ndarray:
        """Region index of every pixel of rows [y0, y1): nearest (wavy-warped) jittered seed."""
        rows, cols = np.arange(y0, y1), np.arange(width)
        warp = np.float32(self.warp)
        wy = _noise_grid(rows, cols, 0.6 * self.ly, self.salt + 1)
        wy *= 2 * warp
        wy += (rows[:, None] + 0.5 - warp).astype(np.float32)
        wx = _noise_grid(rows, cols, 0.6 * self.lx, self.salt + 2)
        wx *= 2 * warp
        wx += (cols[None, :] + 0.5 - warp).astype(np.float32)
        cy = np.clip(np.floor(wy * np.float32(1 / self.ly)).astype(np.int32), 0, self.ny - 1)
        cx = np.clip(np.floor(wx * np.float32(1 / self.lx)).astype(np.int32), 0, self.nx - 1)
        seed_y = ((np.arange(self.ny)[:, None] + self.jitter[..., 0]) * self.ly).astype(np.float32).ravel()
        seed_x = ((np.arange(self.nx)[None, :] + self.jitter[..., 1]) * self.lx).astype(np.float32).ravel()
        best = np.full(wy.shape, np.inf, np.float32)
        region = np.zeros(wy.shape, np.int32)
        closer = np.empty(wy.shape, bool)
        for dy in (-1, 0, 1):
            ry = np.clip(cy + dy, 0, self.ny - 1) * self.nx
            for dx in (-1, 0, 1):
                cand = ry + np.clip(cx + dx, 0, self.nx - 1)
                d = np.square(wy - seed_y[cand])
                d += np.square(wx - seed_x[cand])
                np.less(d, best, out=closer)
                np.copyto(best, d, where=closer)
                np.copyto(region, cand, where=closer)
        return region


def _water(lay: _Layout, py, px, rid, salt):
    a = lay.angle[rid]
    u = px * np.cos(a) + py * np.sin(a) + 12 * _noise(py, px, 48, salt + 11)
    ripple = 3.0 * np.sin(u * np.float32(2 * np.pi / 9)) * _noise(py, px, 90, salt + 12)
    tone = 14 * (_noise(py, px, 160, salt + 13) - 0.5) + ripple + 1.5 * (_white(py, px, salt + 14) - 0.5)
    base = np.array([28, 66, 82], np.float32) + lay.tint[rid] * 0.5
    return base + tone[:, None] * np.array([0.6, 1.0, 1.0], np.float32)


def _forest(lay: _Layout, py, px, rid, salt):
    crowns = 0.65 * _noise(py, px, 7, salt + 21) + 0.35 * _noise(py, px, 3, salt + 22)
    light = 0.45 + 1.1 * crowns
    gaps = np.where(crowns < 0.35, np.float32(0.55), np.float32(1.0))
    base = np.array([38, 78, 34], np.float32) + lay.tint[rid] * 0.7
    yellow = np.array([18, 14, -4], np.float32) * (crowns[:, None] - 0.5)
    return base * (light * gaps)[:, None] + yellow + 4 * (_white(py, px, salt + 23)[:, None] - 0.5)


def _field(lay: _Layout, py, px, rid, salt):
    a = lay.angle[rid]
    u = px * np.cos(a) + py * np.sin(a)
    stripes = np.sin(u * (np.float32(2 * np.pi) / lay.period[rid]))
    t = lay.tone[rid][:, None]
    base = (1 - t) * np.array([140, 180, 85], np.float32) + t * np.array([215, 195, 115], np.float32)
    tone = 16 * stripes + 14 * (_noise(py, px, 110, salt + 31) - 0.5) + 6 * (_white(py, px, salt + 32) - 0.5)
    return base + lay.tint[rid] + tone[:, None]


def _built(lay: _Layout, py, px, rid, salt):
    a = lay.street[rid]
    c, s = np.cos(a), np.sin(a)
    u, v = px * c + py * s + 1000.0, -px * s + py * c + 1000.0
    b, w = lay.block[rid], lay.road[rid]
    bu, bv = np.floor(u / b), np.floor(v / b)
    fu, fv = u - bu * b, v - bv * b
    road = (fu < w) | (fv < w)
    inner = (fu > w + 4) & (fu < b - 4) & (fv > w + 4) & (fv < b - 4)
    bu, bv = bu.astype(np.int64) + rid * 7919, bv.astype(np.int64)
    roof = 95 + 110 * _unit(_hash(bu, bv, salt + 41))
    red = _unit(_hash(bu, bv, salt + 42)) < 0.2
    grey = np.where(road, np.float32(72), np.where(inner, roof, np.float32(150)))
    rgb = np.repeat(grey[:, None], 3, 1) + np.array([0, 0, 3], np.float32)
    terracotta = np.array([170, 92, 70], np.float32)
    rgb = np.where((inner & red)[:, None], terracotta, rgb)
    return rgb + lay.tint[rid] * 0.5 + 12 * (_white(py, px, salt + 43)[:, None] - 0.5)


def _bare(lay: _Layout, py, px, rid, salt):
    base = np.array([168, 128, 88], np.float32) + lay.tint[rid]
    mottle = 30 * (_noise(py, px, 60, salt + 51) - 0.5) + 14 * (_noise(py, px, 14, salt + 52) - 0.5)
    speck = _white(py, px, salt + 53)
    grain = 36 * (speck - 0.5) + np.where(speck > 0.97, 45, 0) - np.where(speck < 0.03, 45, 0)
    return base + (mottle + grain)[:, None] * np.array([1.0, 0.92, 0.8], np.float32)


_PAINT = (_water, _forest, _field, _built, _bare)


# --------------------------------------------------------------------------------------------- the scene


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name}={value!r}: must be an integer in [{lo}, {hi}]")
    return int(value)


def make_scene(image_path, label_path, width: int = 2240, height: int = 2240, seed: int = 0, chip: int = 224,
               region: float = 2.5) -> list[str]:
    """Write a synthetic land-cover scene: an RGB GeoTIFF at ``image_path`` and its class codes at ``label_path``.

    The image is ``width`` x ``height`` uint8 RGB, tiled and deflate-compressed, in :data:`SCENE_CRS` with
    :data:`PIXEL_SIZE` metre pixels; the label raster has the same size and georeference, one uint8 code per
    pixel (an index into the returned class names, :data:`CLASSES`), with a colour table of
    :data:`CLASS_COLOURS`.  Regions are about ``region`` chips of ``chip`` pixels across; all five classes
    appear when the scene holds at least five regions.  The same ``seed`` writes the same files.
    Returns the class names.
    """
    width = _check_int("width", width, 16, MAX_SIDE)
    height = _check_int("height", height, 16, MAX_SIDE)
    chip = _check_int("chip", chip, 8, 4096)
    seed = _check_int("seed", seed, 0, 2**63 - 1)
    if not isinstance(region, (int, float)) or isinstance(region, bool) or not 0.25 <= region <= 1000:
        raise ValueError(f"region={region!r}: must be a number of chips in [0.25, 1000]")
    lay = _Layout(width, height, chip, seed, float(region))
    transform = Affine(PIXEL_SIZE, 0.0, SCENE_ORIGIN[0], 0.0, -PIXEL_SIZE, SCENE_ORIGIN[1])
    common = dict(driver="GTiff", width=width, height=height, dtype="uint8", crs=CRS.from_user_input(SCENE_CRS),
                  transform=transform, tiled=True, blockxsize=256, blockysize=256, compress="deflate", zlevel=1,
                  num_threads="ALL_CPUS")
    with rasterio.open(os.fspath(image_path), "w", count=3, photometric="RGB", **common) as img, \
            rasterio.open(os.fspath(label_path), "w", count=1, **common) as lab:
        lab.write_colormap(1, {i: (*c, 255) for i, c in enumerate(CLASS_COLOURS)})
        lab.update_tags(CLASS_NAMES=json.dumps(list(CLASSES)))
        lab.set_band_description(1, "land-cover class")
        img.update_tags(SCENE_SEED=str(seed), CLASS_NAMES=json.dumps(list(CLASSES)))
        for y0 in range(0, height, _STRIP):
            y1 = min(height, y0 + _STRIP)
            rid = lay.regions(y0, y1, width)
            label = lay.classes[rid]
            rgb = np.empty((y1 - y0, width, 3), np.uint8)
            for k, paint in enumerate(_PAINT):
                mask = label == k
                if not mask.any():
                    continue
                ys, xs = np.nonzero(mask)
                ys = ys + y0
                colour = paint(lay, ys, xs, rid[mask], lay.salt + 1000 * (k + 1))
                rgb[mask] = np.clip(colour, 0, 255).astype(np.uint8)
            window = Window(0, y0, width, y1 - y0)
            img.write(rgb.transpose(2, 0, 1), window=window)
            lab.write(label[None], window=window)
    return list(CLASSES)
