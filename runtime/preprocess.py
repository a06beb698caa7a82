"""Image preprocessing as the featurizer services do it: decode, resize, centre-crop, normalise.

The recipe (``../shared/brief.md``): resize so the shorter side is 256
(bilinear), centre-crop 224x224, subtract the per-channel means R 123.68,
G 116.779, B 103.939, RGB or BGR order per model, and an optional scale
(DenseNet uses 0.017).  A program carries its recipe in its metadata
(``compile_model(..., preprocess=...)``); sizes follow the model's input.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_MEAN = (123.68, 116.779, 103.939)


class ImageError(ValueError):
    """An image could not be decoded (names the source and the reason)."""


@dataclass(frozen=True)
class Preprocess:
    """How raw images become the model's input tensor."""

    crop: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = DEFAULT_MEAN
    scale: float = 1.0
    channel_order: str = "RGB"
    extra: dict = field(default_factory=dict)

    @classmethod
    def for_input(cls, shape, **overrides) -> "Preprocess":
        """The default recipe for a (C, H, W) input: crop H, resize H * 256 / 224."""
        crop = int(shape[-1])
        return cls(crop=crop, resize=int(round(crop * 256 / 224)), **overrides)

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocess":
        """Rebuild from program metadata."""
        d = dict(data)
        d["mean"] = tuple(d.get("mean", DEFAULT_MEAN))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict:
        """JSON form for program metadata."""
        return asdict(self)

    def decode(self, data: bytes, source: str = "image") -> Image.Image:
        """Decode JPEG/PNG/... bytes to RGB; ImageError names ``source`` on failure."""
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageError(f"{source}: not a decodable image ({exc})") from None
        return img.convert("RGB")

    def tensor(self, img: Image.Image) -> np.ndarray:
        """The (1, 3, crop, crop) float32 input for a decoded image."""
        w, h = img.size
        if min(w, h) < 1:
            raise ImageError(f"image of size {w}x{h} is empty")
        s = self.resize / min(w, h)
        img = img.resize((max(self.crop, round(w * s)), max(self.crop, round(h * s))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - self.crop) // 2, (h - self.crop) // 2
        img = img.crop((left, top, left + self.crop, top + self.crop))
        x = np.asarray(img, np.float32) - np.asarray(self.mean, np.float32)
        if self.channel_order.upper() == "BGR":
            x = x[:, :, ::-1]
        return (np.transpose(x, (2, 0, 1))[None] * np.float32(self.scale)).astype(np.float32)

    def __call__(self, data: bytes, source: str = "image") -> np.ndarray:
        """Bytes of an encoded image -> the model's input tensor."""
        return self.tensor(self.decode(data, source))
