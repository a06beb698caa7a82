"""Structured synthetic images for calibrating the seeded networks' classifiers.

White noise makes every image look alike after global average pooling;
these images have what natural photographs have and noise lacks: smooth
colour regions, edges, stripes at several frequencies and orientations, and
a few filled shapes.  They are returned normalised as ImageNet models expect
(torchvision's per-channel ImageNet mean and standard deviation).
"""
from __future__ import annotations

import numpy as np

#: ImageNet per-channel mean and standard deviation (RGB, 0..1 scale).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def synthetic_image(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """One RGB image in [0, 1], shape (3, size, size)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    k = int(rng.integers(2, 9))
    low = rng.random((3, k, k), dtype=np.float32)
    idx = np.minimum((np.arange(size) * k) // size, k - 1)
    img = low[:, idx][:, :, idx]                                           # blocky colour field
    for _ in range(int(rng.integers(1, 4))):                               # stripes
        f, ang = rng.uniform(1, 24), rng.uniform(0, np.pi)
        wave = np.sin(2 * np.pi * f * (xx * np.cos(ang) + yy * np.sin(ang)))
        img = img + 0.25 * wave[None] * rng.uniform(-1, 1, (3, 1, 1)).astype(np.float32)
    for _ in range(int(rng.integers(1, 5))):                               # discs and boxes
        cy, cx, r = rng.random(), rng.random(), rng.uniform(0.05, 0.3)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) if rng.random() < 0.5 else \
            ((np.abs(yy - cy) < r) & (np.abs(xx - cx) < r * rng.uniform(0.3, 1.5)))
        img = np.where(mask[None], rng.random((3, 1, 1), dtype=np.float32), img)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def synthetic_batch(n: int, seed: int, size: int = 224) -> np.ndarray:
    """``n`` normalised images, shape (n, 3, size, size), float32."""
    rng = np.random.default_rng(seed)
    imgs = np.stack([synthetic_image(rng, size) for _ in range(n)])
    return ((imgs - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]).astype(np.float32)
