"""Real photographs bundled with scikit-image and scikit-learn.

No images can be downloaded here, but three installed packages ship
photographs: scikit-image (``skimage.data``: a cat, a cup of coffee, an
astronaut, a rocket, a motorcycle, textures of brick, grass and gravel,
...), scikit-learn (a Chinese temple and a flower) and matplotlib (a
portrait of Grace Hopper and a wrapped present).  Greyscale photographs
are repeated into three channels.
A program's recipe (``npu.preprocess.Preprocess.array``) turns one into a
model input.
"""
from __future__ import annotations

import numpy as np

#: (name, greyscale) of the scikit-image photographs, in the order they are returned.
SKIMAGE_PHOTOS = [
    ("chelsea", False), ("coffee", False), ("astronaut", False), ("rocket", False),
    ("motorcycle_left", False), ("motorcycle_right", False), ("retina", False), ("hubble_deep_field", False),
    ("immunohistochemistry", False), ("camera", True), ("clock", True), ("coins", True), ("moon", True),
    ("brick", True), ("grass", True), ("gravel", True), ("cell", True), ("page", True), ("text", True),
]
#: The scikit-learn sample photographs (``load_sample_images``).
SKLEARN_PHOTOS = ["china", "flower"]
#: The photographs in matplotlib's sample data: name -> file.
MATPLOTLIB_PHOTOS = {"grace_hopper": "grace_hopper.jpg", "present": "Minduka_Present_Blue_Pack.png"}
#: Every photograph ``load_photos`` knows, in order (the first fifteen were the original set; keep it a prefix).
PHOTO_NAMES = ([name for name, _ in SKIMAGE_PHOTOS[:9]] + SKLEARN_PHOTOS + [name for name, _ in SKIMAGE_PHOTOS[9:13]]
               + list(MATPLOTLIB_PHOTOS) + [name for name, _ in SKIMAGE_PHOTOS[13:]])


class MissingPhotosError(ImportError):
    """scikit-image (the ``models`` extra) is not installed."""


def _skimage_photo(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise MissingPhotosError("the bundled photographs need scikit-image: "
                                 "pip install scikit-image (or pip install -e '.[models]')") from None
    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _disparity = data.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return getattr(data, name)()


def _matplotlib_photo(name: str) -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data(MATPLOTLIB_PHOTOS[name], asfileobj=False)) as img:
        return np.asarray(img.convert("RGB"))


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 photograph, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def load_photos(names=None) -> list[tuple[str, np.ndarray]]:
    """(name, H x W x 3 uint8 RGB array) for the named photographs (default: all of ``PHOTO_NAMES``)."""
    names = list(PHOTO_NAMES if names is None else names)
    unknown = sorted(set(names) - set(PHOTO_NAMES))
    if unknown:
        raise KeyError(f"unknown photographs {unknown}; known: {PHOTO_NAMES}")
    sklearn_images = {}
    if any(n in SKLEARN_PHOTOS for n in names):
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        sklearn_images = {f.replace("\\", "/").rsplit("/", 1)[-1].split(".")[0]: img
                          for f, img in zip(bunch.filenames, bunch.images)}
    return [(n, _as_rgb(sklearn_images[n] if n in SKLEARN_PHOTOS else
                        _matplotlib_photo(n) if n in MATPLOTLIB_PHOTOS else _skimage_photo(n))) for n in names]
