"""runtime.scenes: synthetic land-cover scenes (georeferenced RGB + labels, large regions, separable classes)."""
import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS

from runtime.imagery import chip_grid, label_of_chips, read_chips
from runtime.scenes import CLASS_COLOURS, CLASSES, PIXEL_SIZE, SCENE_CRS, make_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    image, label = str(folder / "scene.tif"), str(folder / "labels.tif")
    names = make_scene(image, label, width=2240, height=2240, seed=0, chip=224)
    with rasterio.open(image) as src:
        rgb = src.read().transpose(1, 2, 0)
    with rasterio.open(label) as src:
        codes = src.read(1)
    return image, label, names, rgb, codes


def test_files_are_georeferenced_tiled_geotiffs(scene):
    image, label, names, _, _ = scene
    assert names == list(CLASSES) and len(CLASS_COLOURS) == len(CLASSES)
    with rasterio.open(image) as img, rasterio.open(label) as lab:
        assert (img.width, img.height, img.count, img.dtypes) == (2240, 2240, 3, ("uint8",) * 3)
        assert (lab.width, lab.height, lab.count, lab.dtypes) == (2240, 2240, 1, ("uint8",))
        for src in (img, lab):
            assert src.crs == CRS.from_user_input(SCENE_CRS)
            assert (src.transform.a, src.transform.e, src.transform.b, src.transform.d) == \
                (PIXEL_SIZE, -PIXEL_SIZE, 0.0, 0.0)
            assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
        assert img.transform == lab.transform
        assert [c.name for c in img.colorinterp] == ["red", "green", "blue"]
        assert lab.colormap(1)[0][:3] == CLASS_COLOURS[0]


def test_all_classes_in_sensible_proportions(scene):
    codes = scene[4]
    share = np.bincount(codes.ravel(), minlength=len(CLASSES)) / codes.size
    assert len(share) == len(CLASSES), "codes beyond the classes"
    assert (share > 0.08).all() and (share < 0.4).all(), share


def test_regions_are_large(scene):
    codes = scene[4]
    purity = [np.bincount(codes[r:r + 224, c:c + 224].ravel()).max() / 224 ** 2
              for r in range(0, 2240, 224) for c in range(0, 2240, 224)]
    assert np.mean(np.array(purity) >= 0.9) > 0.5
    assert np.mean(np.array(purity) >= 0.6) > 0.85


def test_classes_differ_in_colour_and_texture(scene):
    _, _, _, rgb, codes = scene
    means = np.array([rgb[codes == k].mean(0) for k in range(len(CLASSES))])
    for i in range(len(CLASSES)):
        for j in range(i + 1, len(CLASSES)):
            assert np.linalg.norm(means[i] - means[j]) > 25, (CLASSES[i], CLASSES[j], means[i], means[j])
    water, forest, field, built, bare = means
    assert water[2] > water[0] and forest[1] > forest[0] and forest[1] > forest[2]     # blue-green, green
    assert field.sum() > forest.sum() and abs(built[0] - built[2]) < 20                 # light, grey
    assert bare[0] > bare[1] > bare[2]                                                   # brown
    # texture: mean absolute difference of horizontally adjacent green pixels, inside each class
    grad = np.abs(np.diff(rgb[..., 1].astype(np.int16), axis=1))
    inside = codes[:, 1:] == codes[:, :-1]
    rough = [grad[inside & (codes[:, 1:] == k)].mean() for k in range(len(CLASSES))]
    assert rough[0] < 2 and min(rough[1:]) > 2 * rough[0], rough          # water is the smooth one
    assert rough[1] > rough[2], rough                                     # canopy busier than a field


def test_scene_reads_as_chips_with_labels(scene):
    image, label, _, rgb, codes = scene
    grid = chip_grid(image)
    assert (grid.rows, grid.cols, grid.crs) == (10, 10, SCENE_CRS)
    keys, chips = read_chips(grid, 45, 50)
    np.testing.assert_array_equal(chips[0], rgb[896:1120, 1120:1344])
    majority = label_of_chips(label, grid, 0, grid.count)
    assert set(majority) == set(range(len(CLASSES)))
    assert majority[45] == np.bincount(codes[896:1120, 1120:1344].ravel()).argmax()


def test_deterministic_per_seed(tmp_path):
    def pixels(seed, name):
        image, label = tmp_path / f"{name}.tif", tmp_path / f"{name}-labels.tif"
        make_scene(image, label, width=600, height=530, seed=seed, chip=64)
        with rasterio.open(image) as a, rasterio.open(label) as b:
            return a.read(), b.read(1)
    a_img, a_lab = pixels(3, "a")
    b_img, b_lab = pixels(3, "b")
    c_img, c_lab = pixels(4, "c")
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert (a_img != c_img).mean() > 0.5 and (a_lab != c_lab).mean() > 0.2
    assert a_img.shape == (3, 530, 600) and set(np.unique(a_lab)) == set(range(len(CLASSES)))


def test_small_scene_still_has_every_class(tmp_path):
    make_scene(tmp_path / "s.tif", tmp_path / "l.tif", width=300, height=200, seed=1)
    with rasterio.open(tmp_path / "l.tif") as src:
        assert set(np.unique(src.read(1))) == set(range(len(CLASSES)))


@pytest.mark.parametrize("kwargs", [dict(width=0), dict(height=10 ** 6), dict(chip=2), dict(seed=-1),
                                    dict(width=100.5), dict(region=0)])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_scene(tmp_path / "s.tif", tmp_path / "l.tif", **kwargs)
