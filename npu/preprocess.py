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

Memory is bounded before it is spent (docs list these limits): an image
whose header declares more than :data:`MAX_IMAGE_PIXELS` pixels is refused
before it is decoded, and so is one that would exceed
:data:`MAX_RESIZED_PIXELS` once its shorter side is resized to ``resize``
(a 1 x 200000 PNG of a few hundred bytes would otherwise become a
256 x 51,200,000 image).  A recipe's ``crop`` and ``resize`` are at most
:data:`MAX_SIDE`.  Pillow's own decompression-bomb guard
(``PIL.Image.MAX_IMAGE_PIXELS``) is lowered to :data:`MAX_IMAGE_PIXELS`
when an image is decoded here.  The limits are read when used, so a
deployment may change them (``npu.preprocess.MAX_IMAGE_PIXELS = ...``).
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field, fields

import numpy as np

DEFAULT_MEAN = (123.68, 116.779, 103.939)
DEFAULT_SCALE = 0.017

#: Largest decoded image, in pixels (width x height as its header declares them): 50 megapixels.
MAX_IMAGE_PIXELS = 50_000_000
#: Largest image after the resize step (shorter side to ``resize``), in pixels: 4096 x 4096.
MAX_RESIZED_PIXELS = 1 << 24
#: Largest ``crop`` and ``resize`` a recipe may name.
MAX_SIDE = 4096


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
        if not isinstance(self.channel_order, str) or self.channel_order.upper() not in ("RGB", "BGR"):
            raise ValueError(f"channel_order {self.channel_order!r}: choose RGB or BGR")
        for name in ("crop", "resize"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 < value <= MAX_SIDE:
                raise ValueError(f"recipe {name}={value!r}: must be an integer in [1, {MAX_SIDE}] "
                                 f"(npu.preprocess.MAX_SIDE)")
            object.__setattr__(self, name, int(value))
        mean = self.mean
        if isinstance(mean, (str, bytes)) or not hasattr(mean, "__len__") or len(mean) != 3 or \
                not all(_is_number(m) for m in mean):
            raise ValueError(f"recipe mean={mean!r}: must be three numbers")
        if not _is_number(self.scale):
            raise ValueError(f"recipe scale={self.scale!r}: must be a number")
        if not isinstance(self.extra, dict):
            raise ValueError(f"recipe extra={self.extra!r}: must be a JSON object")
        object.__setattr__(self, "mean", tuple(float(m) for m in mean))
        object.__setattr__(self, "scale", float(self.scale))

    @classmethod
    def for_input(cls, side: int, **overrides) -> "Preprocess":
        """The default recipe for a model whose input images are ``side`` x ``side``: resize side * 256 / 224."""
        side = int(side)
        return cls(**{"crop": side, "resize": int(round(side * 256 / 224)), **overrides})

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocess":
        """Rebuild from program metadata; unknown keys are an error naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"a preprocessing recipe is a JSON object, not {type(data).__name__}")
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

    def check_size(self, width: int, height: int, source: str = "image") -> tuple[int, int]:
        """The size after the resize step of a ``width`` x ``height`` image; ImageError if a limit is passed.

        Called with the size an image's header declares, before any pixel is
        decoded, and again before resizing.
        """
        w, h = int(width), int(height)
        if min(w, h) < 1:
            raise ImageError(f"{source}: image of size {w}x{h} is empty")
        if w * h > MAX_IMAGE_PIXELS:
            raise ImageError(f"{source}: a {w} x {h} image has {w * h:,} pixels, more than the limit of "
                             f"{MAX_IMAGE_PIXELS:,} (npu.preprocess.MAX_IMAGE_PIXELS)")
        s = self.resize / min(w, h)
        rw, rh = max(self.crop, round(w * s)), max(self.crop, round(h * s))
        if rw * rh > MAX_RESIZED_PIXELS:
            raise ImageError(f"{source}: a {w} x {h} image would become {rw} x {rh} ({rw * rh:,} pixels) when its "
                             f"shorter side is resized to {self.resize}, more than the limit of "
                             f"{MAX_RESIZED_PIXELS:,} resized pixels (npu.preprocess.MAX_RESIZED_PIXELS); its aspect "
                             f"ratio is too extreme")
        return rw, rh

    def decode(self, data: bytes, source: str = "image"):
        """Decode JPEG/PNG/... bytes to an RGB PIL image; ImageError names ``source`` on failure.

        The size the image's header declares is checked against the limits
        (:meth:`check_size`) before its pixels are decoded.
        """
        from PIL import Image

        _cap_pillow_guard(Image)
        try:
            img = Image.open(io.BytesIO(data))
            self.check_size(*img.size, source)        # the header's size, before decoding
            img.load()
            self.check_size(*img.size, source)        # a format may settle its size while loading
            return img.convert("RGB")
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:     # Pillow's guard, lowered to ours, saw the header first
            raise ImageError(f"{source}: {exc} (the limit is {MAX_IMAGE_PIXELS:,} pixels, "
                             f"npu.preprocess.MAX_IMAGE_PIXELS)") from None
        except MemoryError:
            raise ImageError(f"{source}: not enough memory to decode the image") from None
        except Exception as exc:                      # a malformed file may make a decoder raise anything
            raise ImageError(f"{source}: not a decodable image ({type(exc).__name__}: {exc})") from None

    def tensor(self, img, source: str = "image") -> np.ndarray:
        """The (1, 3, crop, crop) float32 input for a decoded RGB PIL image."""
        from PIL import Image

        w, h = img.size
        size = self.check_size(w, h, source)
        img = img.resize(size, Image.BILINEAR)
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
        return self.tensor(Image.fromarray(rgb, "RGB"), "array")

    def __call__(self, data: bytes, source: str = "image") -> np.ndarray:
        """Bytes of an encoded image -> the model's input tensor."""
        return self.tensor(self.decode(data, source), source)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _cap_pillow_guard(image_module) -> None:
    """Lower Pillow's decompression-bomb limit to ours (never raise it: other code in the process may rely on it)."""
    if image_module.MAX_IMAGE_PIXELS is None or image_module.MAX_IMAGE_PIXELS > MAX_IMAGE_PIXELS:
        image_module.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
