"""Real photographs bundled with scikit-image and scikit-learn, and the classic resize / crop / normalise step.

No images can be downloaded here, but two installed packages ship
photographs: scikit-image (``skimage.data``: a cat, a cup of coffee, an
astronaut, a rocket, a motorcycle, ...) and scikit-learn (a Chinese temple
and a flower).  Greyscale photographs are repeated into three channels.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

#: (name, greyscale) of the scikit-image photographs, in the order they are returned.
SKIMAGE_PHOTOS = [
    ("chelsea", False), ("coffee", False), ("astronaut", False), ("rocket", False),
    ("motorcycle_left", False), ("motorcycle_right", False), ("retina", False), ("hubble_deep_field", False),
    ("immunohistochemistry", False), ("camera", True), ("clock", True), ("coins", True), ("moon", True),
]
#: The scikit-learn sample photographs (``load_sample_images``).
SKLEARN_PHOTOS = ["china", "flower"]
#: Every photograph ``load_photos`` knows, in order.
PHOTO_NAMES = [name for name, _ in SKIMAGE_PHOTOS[:9]] + SKLEARN_PHOTOS + [name for name, _ in SKIMAGE_PHOTOS[9:]]


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
    return [(n, _as_rgb(sklearn_images[n] if n in SKLEARN_PHOTOS else _skimage_photo(n))) for n in names]


def preprocess(image: np.ndarray, recipe: dict) -> np.ndarray:
    """The (1, 3, crop, crop) float32 model input for an RGB uint8 photograph.

    ``recipe`` has the compiler's keys: the shorter side is resized
    (bilinear) to ``resize``, the centre ``crop`` x ``crop`` is kept, and
    the result is ``(x - mean) * scale`` in ``channel_order`` (the same
    steps as ``runtime.Preprocess``).
    """
    crop, resize = int(recipe["crop"]), int(recipe["resize"])
    img = Image.fromarray(_as_rgb(image), "RGB")
    w, h = img.size
    s = resize / min(w, h)
    img = img.resize((max(crop, round(w * s)), max(crop, round(h * s))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - crop) // 2, (h - crop) // 2
    x = np.asarray(img.crop((left, top, left + crop, top + crop)), np.float32)
    x = (x - np.asarray(recipe["mean"], np.float32)) * np.asarray(recipe["scale"], np.float32)
    if str(recipe.get("channel_order", "RGB")).upper() == "BGR":
        x = x[:, :, ::-1]
    return np.ascontiguousarray(np.transpose(x, (2, 0, 1))[None], dtype=np.float32)
