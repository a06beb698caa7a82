"""How activations sit in the NPU's vector memory and in DRAM.

A C x H x W tensor is stored channel-minor: pixel (y, x) is ``vectors``
consecutive native vectors holding its channels (zero-padded to a multiple
of N), pixels are row-major, and a zero border of ``pad`` pixels surrounds
the image, so a convolution reads fixed strides with no boundary checks.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class ActLayout:
    """A zero-bordered, channel-minor activation tensor at vector address ``base``."""

    channels: int
    height: int
    width: int
    pad: int
    native_dim: int
    base: int = 0
    pitch: int = 0        # vectors per stored pixel when larger than ``vectors`` (a view of a wider buffer)

    @property
    def vectors(self) -> int:
        """Native vectors holding the tensor's channels at each pixel."""
        return -(-self.channels // self.native_dim)

    @property
    def stride(self) -> int:
        """Vectors from one pixel to the next."""
        return max(self.pitch, self.vectors)

    @property
    def padded_width(self) -> int:
        """Pixels per stored row, border included."""
        return self.width + 2 * self.pad

    @property
    def row_stride(self) -> int:
        """Vectors from one stored row to the next."""
        return self.padded_width * self.stride

    @property
    def size(self) -> int:
        """Vectors the whole tensor occupies, border included."""
        return (self.height + 2 * self.pad) * self.row_stride

    def addr(self, y: int, x: int) -> int:
        """Vector address of pixel (y, x); -pad <= y, x reach into the border."""
        if not (-self.pad <= y < self.height + self.pad and -self.pad <= x < self.width + self.pad):
            raise ValueError(f"pixel ({y}, {x}) lies outside the tensor and its {self.pad}-pixel border")
        return self.base + ((y + self.pad) * self.padded_width + (x + self.pad)) * self.stride

    def at(self, base: int) -> "ActLayout":
        """The same layout placed at another address."""
        return replace(self, base=base)

    def to_vectors(self, chw: np.ndarray) -> np.ndarray:
        """The (size, N) vector image of a C x H x W array (border and channel padding zero)."""
        c, h, w = chw.shape
        if (c, h, w) != (self.channels, self.height, self.width):
            raise ValueError(f"array of shape {chw.shape} does not match layout {self.channels}x{self.height}x"
                             f"{self.width}")
        n, p = self.native_dim, self.pad
        img = np.zeros((h + 2 * p, w + 2 * p, self.stride * n), np.float32)
        img[p:p + h, p:p + w, :c] = np.moveaxis(chw, 0, -1)
        return img.reshape(self.size, n)

    def from_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """The C x H x W array held in a (size, N) vector image."""
        n, p = self.native_dim, self.pad
        img = np.asarray(vectors).reshape(self.height + 2 * p, self.width + 2 * p, self.stride * n)
        return np.moveaxis(img[p:p + self.height, p:p + self.width, :self.channels], -1, 0)
