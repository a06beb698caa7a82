"""runtime.imagery: chip grids, chip reads (pixels, georeference, bounded memory), class maps, labels, errors."""
import os
import pickle
import tracemalloc

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.windows import Window

from runtime import imagery
from runtime.imagery import (ChipGrid, ChipKey, ImageryError, chip_grid, label_of_chips, read_chips,
                             write_class_map, write_map_png)

UTM = "EPSG:32633"
ORIGIN = Affine(0.5, 0.0, 600_000.0, 0.0, -0.5, 5_400_000.0)


def write_tif(path, data, *, crs=UTM, transform=ORIGIN, nodata=None, **options):
    """Write ``data`` (bands, h, w) or (h, w) as a GeoTIFF."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata, **options) as dst:
        dst.write(data)
    return str(path)


def random_rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8)


def expected_chips(hwc: np.ndarray, keys: list[ChipKey], chip: int) -> np.ndarray:
    """Chips cut by hand from the whole image: the valid window, zeros elsewhere."""
    out = np.zeros((len(keys), chip, chip, 3), np.uint8)
    for i, k in enumerate(keys):
        out[i, :k.height, :k.width] = hwc[k.row_off:k.row_off + k.height, k.col_off:k.col_off + k.width]
    return out


# --------------------------------------------------------------------------------------------- grids

# A 1000 x 700 (width x height) raster.  Chip origins worked out by hand per axis:
#   chip 224, stride 224: pad   x 0,224,448,672,896 (896+224 >= 1000)      y 0,224,448,672
#                         drop  x 0,224,448,672 (672+224 <= 1000)          y 0,224,448
#                         shift x 0,224,448,672,776 (1000-224)             y 0,224,448,476 (700-224)
#   chip 224, stride 150: pad   x 0,150,...,750,900 (750+224 < 1000)       y 0,150,300,450,600
#                         drop  x 0,150,...,750                            y 0,150,300,450
#                         shift x 0,150,...,750,776                        y 0,150,300,450,476
#   chip 224, stride 300: pad   x 0,300,600,900 (600+224 < 1000)           y 0,300,600 (300+224 < 700)
#                         drop  x 0,300,600                                y 0,300
#                         shift x 0,300,600,776                            y 0,300,476
GRIDS = [
    (224, 224, "pad", [0, 224, 448, 672, 896], [0, 224, 448, 672]),
    (224, 224, "drop", [0, 224, 448, 672], [0, 224, 448]),
    (224, 224, "shift", [0, 224, 448, 672, 776], [0, 224, 448, 476]),
    (224, 150, "pad", [0, 150, 300, 450, 600, 750, 900], [0, 150, 300, 450, 600]),
    (224, 150, "drop", [0, 150, 300, 450, 600, 750], [0, 150, 300, 450]),
    (224, 150, "shift", [0, 150, 300, 450, 600, 750, 776], [0, 150, 300, 450, 476]),
    (224, 300, "pad", [0, 300, 600, 900], [0, 300, 600]),
    (224, 300, "drop", [0, 300, 600], [0, 300]),
    (224, 300, "shift", [0, 300, 600, 776], [0, 300, 476]),
]


@pytest.fixture(scope="module")
def odd_raster(tmp_path_factory):
    path = tmp_path_factory.mktemp("odd") / "odd.tif"
    return write_tif(path, random_rgb(700, 1000, seed=1), tiled=True, blockxsize=128, blockysize=128)


@pytest.mark.parametrize("chip,stride,edge,xs,ys", GRIDS)
def test_grid_counts_and_windows(odd_raster, chip, stride, edge, xs, ys):
    g = chip_grid(odd_raster, chip=chip, stride=stride, edge=edge)
    assert (g.width, g.height, g.bands) == (1000, 700, 3)
    assert (g.cols, g.rows, g.count) == (len(xs), len(ys), len(xs) * len(ys))
    assert g.crs == UTM and g.transform == tuple(ORIGIN)[:6]
    for index in range(g.count):
        k = g.key(index)
        row, col = divmod(index, g.cols)
        assert (k.index, k.row, k.col, k.row_off, k.col_off) == (index, row, col, ys[row], xs[col])
        assert k.height == min(chip, 700 - ys[row]) and k.width == min(chip, 1000 - xs[col])
        if edge != "pad":
            assert (k.height, k.width) == (chip, chip)
    with pytest.raises(IndexError):
        g.key(g.count)
    with pytest.raises(IndexError):
        g.key(-1)


def test_default_stride_is_chip_and_partial_pad_chip(odd_raster):
    g = chip_grid(odd_raster)
    assert (g.chip, g.stride, g.edge, g.rows, g.cols) == (224, 224, "pad", 4, 5)
    last = g.key(g.count - 1)
    assert (last.row_off, last.col_off, last.height, last.width) == (672, 896, 28, 104)


def test_raster_smaller_than_a_chip(tmp_path):
    path = write_tif(tmp_path / "small.tif", random_rgb(50, 100))
    g = chip_grid(path, chip=224)
    assert (g.rows, g.cols) == (1, 1)
    assert (g.key(0).height, g.key(0).width) == (50, 100)
    for edge in ("drop", "shift"):
        with pytest.raises(ImageryError, match=r"smaller than one 224 x 224 chip.*edge=\"pad\""):
            chip_grid(path, chip=224, edge=edge)


def test_grid_and_keys_pickle(odd_raster):
    g = chip_grid(odd_raster, chip=100, stride=90, edge="shift")
    g2 = pickle.loads(pickle.dumps(g))
    assert g2 == g and g2.key(7) == g.key(7)
    assert g.keys(3, 6) == [g.key(3), g.key(4), g.key(5)]


# --------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("edge", ["pad", "drop", "shift"])
@pytest.mark.parametrize("chip,stride", [(16, 16), (16, 12), (16, 21)])
def test_read_chips_equal_the_rasters_pixels(tmp_path, edge, chip, stride):
    data = random_rgb(45, 61, seed=chip + stride)
    path = write_tif(tmp_path / "img.tif", data)
    hwc = data.transpose(1, 2, 0)
    g = chip_grid(path, chip=chip, stride=stride, edge=edge)
    keys, x = read_chips(g, 0, g.count)
    assert x.dtype == np.uint8 and x.shape == (g.count, chip, chip, 3)
    assert keys == [g.key(i) for i in range(g.count)]
    np.testing.assert_array_equal(x, expected_chips(hwc, keys, chip))
    # any range, starting and ending inside grid rows, gives the same chips
    start, stop = g.cols // 2, g.count - 1
    keys2, x2 = read_chips(g, start, stop)
    assert keys2 == keys[start:stop]
    np.testing.assert_array_equal(x2, x[start:stop])
    keys3, x3 = read_chips(g, 3, 3)
    assert keys3 == [] and x3.shape == (0, chip, chip, 3)


def test_read_chips_band_handling(tmp_path):
    rng = np.random.default_rng(5)
    four = rng.integers(0, 256, (4, 40, 50), dtype=np.uint8)
    grey = four[0]
    # 4 bands (no colour interpretation): the first three
    g = chip_grid(write_tif(tmp_path / "four.tif", four), chip=16)
    np.testing.assert_array_equal(read_chips(g, 0, g.count)[1],
                                  expected_chips(four[:3].transpose(1, 2, 0), g.keys(), 16))
    # 1 band: replicated to RGB
    g = chip_grid(write_tif(tmp_path / "grey.tif", grey), chip=16)
    assert g.bands == 1
    np.testing.assert_array_equal(read_chips(g, 0, g.count)[1],
                                  expected_chips(np.repeat(grey[..., None], 3, 2), g.keys(), 16))
    # bands marked blue, green, red: read as RGB
    path = write_tif(tmp_path / "bgr.tif", four[:3][::-1].copy())
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.green,
                           rasterio.enums.ColorInterp.red]
    g = chip_grid(path, chip=16)
    np.testing.assert_array_equal(read_chips(g, 0, g.count)[1],
                                  expected_chips(four[:3].transpose(1, 2, 0), g.keys(), 16))


def test_read_chips_from_png_and_jpeg(tmp_path):
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    cases = {"rgb.png": ("RGB", rgb), "rgba.png": ("RGBA", np.dstack([rgb, rgb[..., :1]])),
             "grey.png": ("L", rgb[..., 0]), "greyalpha.png": ("LA", np.dstack([rgb[..., 0], rgb[..., 1]]))}
    for name, (mode, pixels) in cases.items():
        Image.fromarray(pixels, mode).save(tmp_path / name)
        g = chip_grid(tmp_path / name, chip=16, stride=12)
        assert g.crs is None and g.transform == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        want = np.array(Image.open(tmp_path / name).convert("RGB"))
        np.testing.assert_array_equal(read_chips(g, 0, g.count)[1], expected_chips(want, g.keys(), 16), name)
    # a palette PNG: indices looked up in its colour table
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "pal.png")
    g = chip_grid(tmp_path / "pal.png", chip=16)
    want = np.array(Image.open(tmp_path / "pal.png").convert("RGB"))
    np.testing.assert_array_equal(read_chips(g, 0, g.count)[1], expected_chips(want, g.keys(), 16))
    # JPEG: GDAL's decoder, within a level or two of Pillow's (4:4:4, so no chroma upsampling differences)
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=95, subsampling=0)
    g = chip_grid(tmp_path / "photo.jpg", chip=16)
    want = np.array(Image.open(tmp_path / "photo.jpg").convert("RGB"))
    got = read_chips(g, 0, g.count)[1].astype(int)
    assert np.abs(got - expected_chips(want, g.keys(), 16)).max() <= 2


def test_chip_transforms_map_pixel_zero_to_the_world(tmp_path):
    rotated = Affine(0.5, 0.1, 600_000.0, 0.05, -0.5, 5_400_000.0)
    for transform in (ORIGIN, rotated):
        path = write_tif(tmp_path / "geo.tif", random_rgb(70, 90), transform=transform)
        g = chip_grid(path, chip=32, stride=24, edge="shift")
        for i in range(g.count):
            k = g.key(i)
            chip_t = Affine(*k.transform)
            assert chip_t @ (0, 0) == pytest.approx(transform @ (k.col_off, k.row_off))
            assert chip_t @ (5, 7) == pytest.approx(transform @ (k.col_off + 5, k.row_off + 7))
    k = chip_grid(write_tif(tmp_path / "plain.tif", random_rgb(70, 90)), chip=32).key(4)   # row 1, col 1
    assert k.transform == (0.5, 0.0, 600_016.0, 0.0, -0.5, 5_399_984.0)


def test_memory_stays_bounded_by_the_chips_read(tmp_path):
    n = 8000
    path = str(tmp_path / "big.tif")
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=3, dtype="uint8", crs=UTM,
                       transform=ORIGIN, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                       interleave="band") as dst:
        for y0 in range(0, n, 512):                  # strip by strip: the test itself never holds the raster
            h = min(512, n - y0)
            strip = np.empty((3, h, n), np.uint8)
            strip[0] = (np.arange(y0, y0 + h) % 251)[:, None]
            strip[1] = (np.arange(n) % 241)[None, :]
            strip[2] = 7
            dst.write(strip, window=Window(0, y0, n, h))
    g = chip_grid(path)
    assert (g.rows, g.cols) == (36, 36)
    raster_bytes = n * n * 3
    tracemalloc.start()
    try:
        keys, x = read_chips(g, 20, 84)               # 64 chips over three grid rows
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert x.nbytes == 64 * 224 * 224 * 3
    assert peak < 3 * x.nbytes and peak < raster_bytes / 10, (peak, x.nbytes, raster_bytes)
    for k, c in zip(keys, x):
        np.testing.assert_array_equal(c[:k.height, :k.width, 0], np.broadcast_to(
            (np.arange(k.row_off, k.row_off + k.height) % 251)[:, None], (k.height, k.width)))
        np.testing.assert_array_equal(c[:k.height, :k.width, 1], np.broadcast_to(
            (np.arange(k.col_off, k.col_off + k.width) % 241)[None, :], (k.height, k.width)))
        assert (c[:k.height, :k.width, 2] == 7).all()
        assert not c[k.height:].any() and not c[:, k.width:].any()


# --------------------------------------------------------------------------------------------- maps


def test_write_class_map_round_trip(tmp_path):
    src = write_tif(tmp_path / "img.tif", random_rgb(50, 70))
    g = chip_grid(src, chip=16)                                       # 4 x 5 chips
    classes = np.arange(20, dtype=np.uint8).reshape(4, 5) % 5
    classes[1, 2] = 255
    out = tmp_path / "map.tif"
    write_class_map(out, g, classes, names=["a", "b", "c", "d", "e"])
    with rasterio.open(out) as m:
        assert (m.width, m.height, m.count, m.dtypes[0], m.nodata) == (5, 4, 1, "uint8", 255)
        assert m.crs == CRS.from_user_input(UTM)
        assert tuple(m.transform)[:6] == pytest.approx((8.0, 0.0, 600_000.0, 0.0, -8.0, 5_400_000.0))
        np.testing.assert_array_equal(m.read(1), classes)
        assert m.tags()["CLASS_NAMES"] == '["a", "b", "c", "d", "e"]'
        assert m.colormap(1)[255][3] == 0
    # stride < chip: map pixels are stride wide and centred on their chips; a flat array and a masked one work
    g = chip_grid(src, chip=16, stride=8)
    flat = np.ma.masked_equal(np.arange(g.count) % 3, 2)
    write_class_map(out, g, flat, nodata=9)
    with rasterio.open(out) as m:
        assert (m.width, m.height, m.nodata) == (g.cols, g.rows, 9)
        assert tuple(m.transform)[:6] == pytest.approx((4.0, 0.0, 600_002.0, 0.0, -4.0, 5_399_998.0))
        centre = Affine(*g.key(g.cols + 2).transform) @ (8, 8)       # the centre of chip (1, 2)
        assert m.transform @ (2.5, 1.5) == pytest.approx(centre)
        np.testing.assert_array_equal(m.read(1).ravel(), np.where(np.arange(g.count) % 3 == 2, 9,
                                                                  np.arange(g.count) % 3))
    assert sorted(os.listdir(tmp_path)) == ["img.tif", "map.tif"]       # no temporary left behind


def test_write_class_map_refuses_bad_arrays(tmp_path):
    g = chip_grid(write_tif(tmp_path / "img.tif", random_rgb(50, 70)), chip=16)
    with pytest.raises(ImageryError, match=r"the grid has 4 x 5 chips"):
        write_class_map(tmp_path / "m.tif", g, np.zeros((5, 4), np.uint8))
    with pytest.raises(ImageryError, match=r"\[0, 255\].*nodata"):
        write_class_map(tmp_path / "m.tif", g, np.full((4, 5), -1))
    with pytest.raises(ImageryError, match="integers"):
        write_class_map(tmp_path / "m.tif", g, np.zeros((4, 5), np.float32))
    with pytest.raises(ImageryError, match="does not exist"):
        write_class_map(tmp_path / "no" / "m.tif", g, np.zeros((4, 5), np.uint8))
    assert not (tmp_path / "m.tif").exists()


def test_write_map_png(tmp_path):
    classes = np.random.default_rng(0).integers(0, 3, (12, 20)).astype(np.uint8)
    classes[0, :4] = 255
    path = tmp_path / "map.png"
    write_map_png(path, classes, ["water", "forest", "field"], [(0, 0, 255), (0, 128, 0), (255, 255, 0)],
                  title="a test map")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 200 and im.height > 100
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    for colour in [(0, 0, 255), (0, 128, 0), (255, 255, 0)]:
        assert (pixels == colour).all(1).sum() > 100
    write_map_png(tmp_path / "default.png", classes[:, :3], ["a", "b", "c"])     # default colours, tall map
    assert Image.open(tmp_path / "default.png").format == "PNG"
    assert sorted(os.listdir(tmp_path)) == ["default.png", "map.png"]


# --------------------------------------------------------------------------------------------- labels


def test_label_of_chips_majority_by_hand(tmp_path):
    src = write_tif(tmp_path / "img.tif", random_rgb(30, 40))
    g = chip_grid(src, chip=16)                                  # 2 x 3 chips; last row 14, last column 8 valid
    label = np.zeros((30, 40), np.uint8)
    label[:16, :16] = 3                                          # chip 0: all 3
    label[:16, 16:32] = 1
    label[:8, 16:32] = 2
    label[8, 16:20] = 2                                          # chip 1: 132 of 2 vs 124 of 1 -> 2
    label[:16, 32:] = 4
    label[:9, 32:] = 1                                           # chip 2 (8 wide): 72 of 1, 56 of 4 -> 1
    label[16:, :16] = 5                                          # chip 3: 5
    label[16:, 16:32] = 6
    label[16:23, 16:32] = 0                                      # chip 4: 7 rows of 0, 7 of 6 -> tie -> 0
    label[16:, 32:] = 7
    label[29, 32:] = 4                                           # chip 5 (14 x 8 valid): 7
    lab = write_tif(tmp_path / "lab.tif", label)
    np.testing.assert_array_equal(label_of_chips(lab, g, 0, g.count), [3, 2, 1, 5, 0, 7])
    np.testing.assert_array_equal(label_of_chips(lab, g, 2, 5), [1, 5, 0])
    # nodata does not vote; a chip with nothing but nodata gets nodata
    np.testing.assert_array_equal(label_of_chips(lab, g, 0, g.count, nodata=2), [3, 1, 1, 5, 0, 7])
    np.testing.assert_array_equal(label_of_chips(lab, g, 0, 1, nodata=3), [3])
    # the label raster's own nodata is used by default
    lab2 = write_tif(tmp_path / "lab2.tif", label, nodata=2)
    np.testing.assert_array_equal(label_of_chips(lab2, g, 0, g.count), [3, 1, 1, 5, 0, 7])


def test_label_raster_must_match_the_image(tmp_path):
    g = chip_grid(write_tif(tmp_path / "img.tif", random_rgb(30, 40)), chip=16)
    other = write_tif(tmp_path / "other_size.tif", np.zeros((31, 40), np.uint8))
    with pytest.raises(ImageryError, match=r"other_size.tif: the label raster is 40 x 31 pixels.*40 x 30"):
        label_of_chips(other, g, 0, g.count)
    moved = write_tif(tmp_path / "moved.tif", np.zeros((30, 40), np.uint8),
                      transform=Affine(0.5, 0.0, 600_010.0, 0.0, -0.5, 5_400_000.0))
    with pytest.raises(ImageryError, match="moved.tif: label raster transform"):
        label_of_chips(moved, g, 0, g.count)
    other_crs = write_tif(tmp_path / "crs.tif", np.zeros((30, 40), np.uint8), crs="EPSG:32634")
    with pytest.raises(ImageryError, match="crs.tif: label raster CRS EPSG:32634 differs"):
        label_of_chips(other_crs, g, 0, g.count)
    floats = write_tif(tmp_path / "floats.tif", np.zeros((30, 40), np.float32))
    with pytest.raises(ImageryError, match="float32; class codes must be integers"):
        label_of_chips(floats, g, 0, g.count)


# --------------------------------------------------------------------------------------------- errors


def test_errors_name_the_file_and_the_cause(tmp_path):
    missing = tmp_path / "nowhere.tif"
    with pytest.raises(ImageryError, match=r"nowhere.tif: no such file"):
        chip_grid(missing)
    text = tmp_path / "notes.tif"
    text.write_text("not a raster at all\n")
    with pytest.raises(ImageryError, match=r"notes.tif: cannot be read as a raster image \(.*not recognized"):
        chip_grid(text)
    with pytest.raises(ImageryError, match="is a directory"):
        chip_grid(tmp_path)
    deep = write_tif(tmp_path / "deep.tif", np.zeros((3, 40, 40), np.uint16))
    with pytest.raises(ImageryError, match=r"deep.tif: pixels are uint16, but only 8-bit \(uint8\).*gdal_translate"):
        chip_grid(deep)
    floats = write_tif(tmp_path / "floats.tif", np.zeros((3, 40, 40), np.float32))
    with pytest.raises(ImageryError, match=r"floats.tif: pixels are float32"):
        chip_grid(floats)
    Image.fromarray(np.zeros((40, 40), np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(ImageryError, match=r"deep.png: pixels are uint16"):
        chip_grid(tmp_path / "deep.png")
    # a grid whose raster was replaced by another since
    path = write_tif(tmp_path / "img.tif", random_rgb(40, 40))
    g = chip_grid(path, chip=16)
    write_tif(path, random_rgb(48, 40))
    with pytest.raises(ImageryError, match=r"img.tif: the raster now is 40 x 48 pixels"):
        read_chips(g, 0, 1)
    write_tif(path, np.zeros((3, 40, 40), np.uint16))
    with pytest.raises(ImageryError, match="pixels are uint16"):
        read_chips(g, 0, 1)


@pytest.mark.parametrize("kwargs,message", [
    (dict(chip=4), r"chip size 4: must be an integer in \[8, 4096\]"),
    (dict(chip=5000), r"chip size 5000"),
    (dict(chip=16.0), r"chip size 16.0"),
    (dict(chip=16, stride=0), r"stride 0: must be a positive integer"),
    (dict(chip=16, stride=-3), r"stride -3"),
    (dict(chip=16, edge="wrap"), r"edge 'wrap': choose one of pad, drop, shift"),
])
def test_bad_grid_parameters(odd_raster, kwargs, message):
    with pytest.raises(ImageryError, match=message):
        chip_grid(odd_raster, **kwargs)


def test_bad_parameters_are_refused_before_the_file_is_opened():
    with pytest.raises(ImageryError, match="chip size 2"):
        chip_grid("/nonexistent/file.tif", chip=2)


def test_grid_too_large_and_reads_too_large(tmp_path, monkeypatch):
    path = str(tmp_path / "huge.tif")
    with rasterio.open(path, "w", driver="GTiff", width=40_000, height=40_000, count=3, dtype="uint8", crs=UTM,
                       transform=ORIGIN, tiled=True, compress="deflate", sparse_ok=True):
        pass                                                     # no tile written: a tiny file
    with pytest.raises(ImageryError, match=r"huge.tif: .*more than 10,000,000 .*MAX_CHIPS"):
        chip_grid(path, chip=8, stride=1)
    g = chip_grid(path, chip=224)
    assert g.count == 179 * 179
    monkeypatch.setattr(imagery, "MAX_READ_BYTES", 10 * 224 * 224 * 3)
    with pytest.raises(ImageryError, match=r"reading 11 chips .*MAX_READ_BYTES"):
        read_chips(g, 0, 11)
    keys, x = read_chips(g, 0, 10)
    assert len(keys) == 10 and not x.any()


def test_bad_ranges(odd_raster):
    g = chip_grid(odd_raster)
    for start, stop in [(-1, 2), (3, 2), (0, g.count + 1)]:
        with pytest.raises(ImageryError, match=r"chip range .* outside"):
            read_chips(g, start, stop)
    with pytest.raises(ImageryError, match="must be an integer"):
        read_chips(g, 0.5, 2)
    assert isinstance(ImageryError("x"), ValueError)


def test_grid_is_a_plain_value():
    g = ChipGrid(path="x.tif", width=50, height=40, bands=3, chip=16, stride=16, edge="pad", rows=3, cols=4,
                 transform=(1.0, 0.0, 10.0, 0.0, -1.0, 20.0), crs=None)
    assert g.count == 12
    assert g.key(11) == ChipKey(index=11, row=2, col=3, row_off=32, col_off=48, height=8, width=2,
                                transform=(1.0, 0.0, 58.0, 0.0, -1.0, -12.0))
