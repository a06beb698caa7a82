"""The image recipe a program carries: decode, resize, centre-crop, normalise, in the program's channel order.

A compiled program stores its recipe in its metadata (``ProgramMetadata.preprocess``);
everything that turns photographs into model inputs (the runtime's sessions
and servers, ``npu verify``, the demo, the accuracy benchmark) applies it
with this one definition.  The default is the featurizer services' recipe:
resize so the shorter side is 256 (bilinear), centre-crop 224 x 224,
subtract the per-channel means R 123.68, G 116.779, B 103.939, multiply by
0.017 (the unit-scale inputs DenseNet-style networks expect), RGB order.  A
model file may carry its own recipe (``metadata_props['preprocess']``), and
``compile_model(..., preprocess=)`` overrides either.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field, fields

import numpy as np

DEFAULT_MEAN = (123.68, 116.779, 103.939)
DEFAULT_SCALE = 0.017


class ImageError(ValueError):
    """An image could not be decoded (names the source and the reason)."""


@dataclass(frozen=True)
class Preprocess:
    """How raw images become the model's input tensor."""

    crop: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = DEFAULT_MEAN
    scale: float = DEFAULT_SCALE
    channel_order: str = "RGB"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.channel_order.upper() not in ("RGB", "BGR"):
            raise ValueError(f"channel_order {self.channel_order!r}: choose RGB or BGR")
        if not (int(self.crop) > 0 and int(self.resize) > 0 and len(self.mean) == 3):
            raise ValueError(f"recipe crop={self.crop}, resize={self.resize}, mean={list(self.mean)} is not valid "
                             f"(positive sizes, three means)")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))

    @classmethod
    def for_input(cls, side: int, **overrides) -> "Preprocess":
        """The default recipe for a model whose input images are ``side`` x ``side``: resize side * 256 / 224."""
        side = int(side)
        return cls(**{"crop": side, "resize": int(round(side * 256 / 224)), **overrides})

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocess":
        """Rebuild from program metadata; unknown keys are an error naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown preprocessing key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**data)

    def to_dict(self) -> dict:
        """JSON form for program metadata."""
        d = asdict(self)
        d["mean"] = list(d["mean"])
        return d

    def replace(self, **changes) -> "Preprocess":
        """A copy with some keys changed."""
        return Preprocess.from_dict({**self.to_dict(), **changes})

    def decode(self, data: bytes, source: str = "image"):
        """Decode JPEG/PNG/... bytes to an RGB PIL image; ImageError names ``source`` on failure."""
        from PIL import Image, UnidentifiedImageError

        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageError(f"{source}: not a decodable image ({exc})") from None
        return img.convert("RGB")

    def tensor(self, img) -> np.ndarray:
        """The (1, 3, crop, crop) float32 input for a decoded RGB PIL image."""
        from PIL import Image

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

    def array(self, rgb: np.ndarray) -> np.ndarray:
        """The input for an H x W x 3 uint8 RGB array (a photograph already decoded)."""
        from PIL import Image

        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ImageError(f"expected an H x W x 3 uint8 RGB array, got {rgb.dtype} {list(rgb.shape)}")
        return self.tensor(Image.fromarray(rgb, "RGB"))

    def __call__(self, data: bytes, source: str = "image") -> np.ndarray:
        """Bytes of an encoded image -> the model's input tensor."""
        return self.tensor(self.decode(data, source))
