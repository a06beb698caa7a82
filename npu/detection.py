"""Host-side SSD detection output: prior boxes, box decoding, non-maximum suppression (numpy only).

An SSD detector's network ends in raw head tensors, one box-regression
(``loc``) and one class-score (``conf``) convolution per feature map, in
NCHW.  Everything after them runs on the host, here: the prior (default,
anchor) boxes of the configuration, the reordering of the heads into one
row per prior, the decoding of the regressions against the priors, the
softmax over classes, per-class thresholding and non-maximum suppression,
and the final top-k.  :class:`SSDConfig` holds the prior geometry and the
detection settings; a compiled program may carry it (its ``to_dict`` form)
so that both the compiler and the runtime read the same definition.

Boxes are fractions of the network's (square) input image: priors in
centre-size form (cx, cy, w, h), detections as corners (x1, y1, x2, y2).

A configuration read from a file is checked field by field before anything
is computed from it (:meth:`SSDConfig.from_dict`): sizes are bounded, and
so are the number of priors (:data:`MAX_PRIORS`) and the number of class
scores per image (:data:`MAX_SCORES`), so a hostile configuration cannot
make the host allocate without limit.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields

import numpy as np

#: Largest input side a configuration may name, in pixels.
MAX_IMAGE_SIZE = 4096
#: Most feature maps (heads) a configuration may have.
MAX_FEATURE_MAPS = 16
#: Largest feature-map side.
MAX_FEATURE_MAP = 1024
#: Most aspect ratios per feature map (each gives two priors per location).
MAX_ASPECT_RATIOS = 8
#: Largest aspect ratio.
MAX_ASPECT_RATIO = 64.0
#: Most prior boxes a configuration may imply (SSD300 has 8732, SSD512 24564).
MAX_PRIORS = 100_000
#: Most classes (background included).
MAX_CLASSES = 1000
#: Most class scores per image (priors x classes); SSD300 on VOC has 183,372.
MAX_SCORES = 10_000_000
#: Longest output tensor name.
MAX_NAME_LENGTH = 256
#: The exponent of a decoded width or height is clipped here (torchvision's ``BoxCoder`` bound, log(1000 / 16)),
#: so that a huge regression value gives a large box rather than an overflow.
MAX_LOG_SCALE = math.log(1000.0 / 16)

#: The 20 PASCAL VOC classes with the background class first (SSD300's 21 classes).
VOC_LABELS = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
              "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
              "tvmonitor")


def _names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(n))


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(float(value)))


def _sequence(name: str, value, length: int | None = None, min_length: int = 0, max_length: int | None = None):
    """A list / tuple field as a tuple, with its length checked."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"SSD configuration {name}={value!r}: must be a list")
    if length is not None and len(value) != length:
        raise ValueError(f"SSD configuration {name}: {len(value)} entries, but feature_maps has {length} "
                         f"(one per feature map)")
    if len(value) < min_length or (max_length is not None and len(value) > max_length):
        bound = f"between {min_length} and {max_length}" if max_length is not None else f"at least {min_length}"
        raise ValueError(f"SSD configuration {name}: {len(value)} entries; must have {bound}")
    return tuple(value)


def _integer(name: str, value, lo: int, hi: int) -> int:
    if not _is_int(value) or not lo <= value <= hi:
        raise ValueError(f"SSD configuration {name}={value!r}: must be an integer in [{lo}, {hi}]")
    return int(value)


def _positive(name: str, value, hi: float = math.inf) -> float:
    if not _is_number(value) or not 0 < float(value) <= hi:
        bound = f" at most {hi:g}" if hi < math.inf else ""
        raise ValueError(f"SSD configuration {name}={value!r}: must be a positive finite number{bound}")
    return float(value)


def _fraction(name: str, value) -> float:
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"SSD configuration {name}={value!r}: must be a number in [0, 1]")
    return float(value)


@dataclass(frozen=True)
class SSDConfig:
    """The prior-box geometry and the detection settings of an SSD detector (defaults: SSD300 on VOC).

    Prior geometry (sizes in input pixels): ``image_size`` (the square
    input's side), per feature map its side (``feature_maps``), the
    distance between prior centres (``steps``), the prior sizes
    (``min_sizes``, ``max_sizes``) and extra aspect ratios
    (``aspect_ratios``: each r gives an r:1 and a 1:r prior), the
    regression ``variances`` (centre, size) and whether priors are
    ``clip``-ped to [0, 1].  Detection settings: ``num_classes``
    (background, class 0, included), the per-class score threshold
    (``confidence_threshold``), the per-class candidates kept before
    non-maximum suppression (``candidates_per_class``), its IoU threshold
    (``nms_iou``), the detections kept per image (``top_k``), and the
    names of the head outputs in feature-map order (``loc_outputs``,
    ``conf_outputs``).  Every field is checked on construction
    (ValueError naming the field).
    """

    image_size: int = 300
    feature_maps: tuple[int, ...] = (38, 19, 10, 5, 3, 1)
    steps: tuple[float, ...] = (8, 16, 32, 64, 100, 300)
    min_sizes: tuple[float, ...] = (30, 60, 111, 162, 213, 264)
    max_sizes: tuple[float, ...] = (60, 111, 162, 213, 264, 315)
    aspect_ratios: tuple[tuple[float, ...], ...] = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    variances: tuple[float, float] = (0.1, 0.2)
    clip: bool = True
    num_classes: int = 21
    confidence_threshold: float = 0.01
    nms_iou: float = 0.45
    top_k: int = 200
    candidates_per_class: int = 200
    loc_outputs: tuple[str, ...] = field(default_factory=lambda: _names("loc", 6))
    conf_outputs: tuple[str, ...] = field(default_factory=lambda: _names("conf", 6))

    def __post_init__(self):
        put = functools.partial(object.__setattr__, self)
        put("image_size", _integer("image_size", self.image_size, 1, MAX_IMAGE_SIZE))
        maps = _sequence("feature_maps", self.feature_maps, min_length=1, max_length=MAX_FEATURE_MAPS)
        put("feature_maps", tuple(_integer(f"feature_maps[{k}]", f, 1, MAX_FEATURE_MAP) for k, f in enumerate(maps)))
        n = len(maps)
        for name in ("steps", "min_sizes", "max_sizes"):
            values = _sequence(name, getattr(self, name), n)
            put(name, tuple(_positive(f"{name}[{k}]", v, 16.0 * MAX_IMAGE_SIZE) for k, v in enumerate(values)))
        for k, (lo, hi) in enumerate(zip(self.min_sizes, self.max_sizes)):
            if hi < lo:
                raise ValueError(f"SSD configuration max_sizes[{k}]={hi:g}: smaller than min_sizes[{k}]={lo:g}")
        ratios = []
        for k, r in enumerate(_sequence("aspect_ratios", self.aspect_ratios, n)):
            r = _sequence(f"aspect_ratios[{k}]", r, max_length=MAX_ASPECT_RATIOS)
            ratios.append(tuple(_positive(f"aspect_ratios[{k}][{i}]", v, MAX_ASPECT_RATIO) for i, v in enumerate(r)))
        put("aspect_ratios", tuple(ratios))
        variances = _sequence("variances", self.variances, min_length=2, max_length=2)
        put("variances", tuple(_positive(f"variances[{i}]", v, 10.0) for i, v in enumerate(variances)))
        if not isinstance(self.clip, (bool, np.bool_)):
            raise ValueError(f"SSD configuration clip={self.clip!r}: must be true or false")
        put("clip", bool(self.clip))
        put("num_classes", _integer("num_classes", self.num_classes, 2, MAX_CLASSES))
        put("confidence_threshold", _fraction("confidence_threshold", self.confidence_threshold))
        put("nms_iou", _fraction("nms_iou", self.nms_iou))
        priors = self.num_priors                            # Python integers: no overflow whatever the sizes
        if priors > MAX_PRIORS:
            raise ValueError(f"SSD configuration feature_maps / aspect_ratios: {priors:,} prior boxes, more than "
                             f"the limit of {MAX_PRIORS:,} (npu.detection.MAX_PRIORS)")
        if priors * self.num_classes > MAX_SCORES:
            raise ValueError(f"SSD configuration num_classes={self.num_classes}: {priors:,} priors x "
                             f"{self.num_classes} classes = {priors * self.num_classes:,} scores, more than the "
                             f"limit of {MAX_SCORES:,} (npu.detection.MAX_SCORES)")
        put("top_k", _integer("top_k", self.top_k, 1, MAX_PRIORS))
        put("candidates_per_class", _integer("candidates_per_class", self.candidates_per_class, 1, MAX_PRIORS))
        seen: set[str] = set()
        for name in ("loc_outputs", "conf_outputs"):
            values = _sequence(name, getattr(self, name), n)
            for i, v in enumerate(values):
                if not isinstance(v, str) or not 0 < len(v) <= MAX_NAME_LENGTH:
                    raise ValueError(f"SSD configuration {name}[{i}]={v!r}: must be a tensor name of 1 to "
                                     f"{MAX_NAME_LENGTH} characters")
                if v in seen:
                    raise ValueError(f"SSD configuration {name}[{i}]={v!r}: names an output twice")
                seen.add(v)
            put(name, tuple(values))

    @property
    def anchors_per_location(self) -> tuple[int, ...]:
        """Priors per feature-map cell, per map: 2 squares plus 2 per aspect ratio (SSD300: 4, 6, 6, 6, 4, 4)."""
        return tuple(2 + 2 * len(r) for r in self.aspect_ratios)

    @property
    def num_priors(self) -> int:
        """The number of prior boxes (SSD300: 8732)."""
        return sum(f * f * a for f, a in zip(self.feature_maps, self.anchors_per_location))

    @property
    def output_names(self) -> tuple[str, ...]:
        """The head outputs, box regressions first: loc0..locN-1, conf0..confN-1."""
        return self.loc_outputs + self.conf_outputs

    def head_shapes(self, batch: int = 1) -> dict[str, tuple[int, int, int, int]]:
        """The NCHW shape of each head output the configuration implies (``loc``: anchors x 4 channels,
        ``conf``: anchors x num_classes)."""
        shapes = {}
        for k, (f, a) in enumerate(zip(self.feature_maps, self.anchors_per_location)):
            shapes[self.loc_outputs[k]] = (batch, a * 4, f, f)
            shapes[self.conf_outputs[k]] = (batch, a * self.num_classes, f, f)
        return shapes

    @classmethod
    def ssd300(cls, num_classes: int = 21, **changes) -> "SSDConfig":
        """The standard SSD300 (VGG-16) configuration: 8732 priors on six maps, 38 x 38 down to 1 x 1."""
        return cls(num_classes=num_classes, **changes)

    @classmethod
    def small(cls, num_classes: int = 21, **changes) -> "SSDConfig":
        """The configuration of ``compiler.models.ssd.ssd_small``: a 100 x 100 input, four maps 13, 6, 3, 1
        (950 priors), prior sizes scaled from SSD300's fractions of the image."""
        settings = dict(image_size=100, feature_maps=(13, 6, 3, 1), steps=(8, 16, 33, 100),
                        min_sizes=(10, 20, 40, 70), max_sizes=(20, 40, 70, 100),
                        aspect_ratios=((2,), (2, 3), (2, 3), (2,)),
                        loc_outputs=_names("loc", 4), conf_outputs=_names("conf", 4))
        return cls(num_classes=num_classes, **{**settings, **changes})

    def to_dict(self) -> dict:
        """JSON form (lists, numbers, strings), as stored in model and program metadata."""
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "aspect_ratios":
                v = [list(r) for r in v]
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "SSDConfig":
        """Rebuild from the JSON form; a missing key takes the SSD300 default, an unknown or invalid one is a
        ValueError naming it."""
        if not isinstance(data, dict):
            raise ValueError(f"an SSD configuration is a JSON object, not {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(data) - names)
        if unknown:
            raise ValueError(f"unknown SSD configuration key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(names))}")
        return cls(**data)

    def replace(self, **changes) -> "SSDConfig":
        """A copy with some fields changed (checked again)."""
        return SSDConfig.from_dict({**self.to_dict(), **changes})


@dataclass(frozen=True)
class Detection:
    """One detected object: its ``box`` (x1, y1, x2, y2) as fractions of the input image, clipped to [0, 1],
    its class ``label`` (an index, 1 or more: 0 is the background) and its softmax ``score``."""

    box: tuple[float, float, float, float]
    label: int
    score: float

    def to_dict(self, labels: list[str] | tuple[str, ...] | None = None) -> dict:
        """JSON form; with ``labels`` (class names by index) the class name too."""
        d = {"box": list(self.box), "label": self.label, "score": self.score}
        if labels is not None and 0 <= self.label < len(labels):
            d["name"] = labels[self.label]
        return d


def _check(cfg) -> None:
    if not isinstance(cfg, SSDConfig):
        raise TypeError(f"expected an SSDConfig, not {type(cfg).__name__}")


@functools.lru_cache(maxsize=8)
def _priors(cfg: SSDConfig) -> np.ndarray:
    parts = []
    for f, step, lo, hi, ratios in zip(cfg.feature_maps, cfg.steps, cfg.min_sizes, cfg.max_sizes,
                                       cfg.aspect_ratios):
        centres = (np.arange(f, dtype=np.float64) + 0.5) * step / cfg.image_size
        cy, cx = np.meshgrid(centres, centres, indexing="ij")       # row-major cells: i is the row (y)
        s = lo / cfg.image_size
        sizes = [(s, s), (math.sqrt(s * hi / cfg.image_size),) * 2]
        for r in ratios:
            sizes += [(s * math.sqrt(r), s / math.sqrt(r)), (s / math.sqrt(r), s * math.sqrt(r))]
        wh = np.asarray(sizes, np.float64)                          # (anchors, 2)
        boxes = np.empty((f, f, len(sizes), 4))
        boxes[..., 0] = cx[..., None]
        boxes[..., 1] = cy[..., None]
        boxes[..., 2:] = wh
        parts.append(boxes.reshape(-1, 4))
    priors = np.concatenate(parts)
    if cfg.clip:
        np.clip(priors, 0.0, 1.0, out=priors)
    priors.setflags(write=False)
    return priors


def prior_boxes(cfg: SSDConfig) -> np.ndarray:
    """The (P, 4) prior boxes (cx, cy, w, h), float64, as fractions of the input.

    In the standard SSD order: map by map; within a map cell by cell in
    row-major order (row i, then column j; centre ((j + 0.5) * step,
    (i + 0.5) * step) / image_size); within a cell the min_size square,
    the sqrt(min_size * max_size) square, then for each aspect ratio r
    the r:1 (wide) and 1:r (tall) boxes of area min_size^2.  With ``clip``
    all four values are clipped to [0, 1].
    """
    _check(cfg)
    return _priors(cfg).copy()


def flatten_heads(outputs: dict, cfg: SSDConfig) -> tuple[np.ndarray, np.ndarray]:
    """The head outputs as one row per prior: ``loc`` (P, 4) and ``conf`` (P, num_classes) logits, float64.

    ``outputs`` maps the names ``cfg.loc_outputs`` / ``cfg.conf_outputs``
    to the NCHW head tensors of one image (batch 1), as
    :meth:`SSDConfig.head_shapes` gives them; rows are in the order of
    :func:`prior_boxes`.  A missing tensor or a wrong shape is a ValueError
    naming the tensor.
    """
    _check(cfg)
    if not isinstance(outputs, dict):
        raise ValueError(f"expected the head outputs as a dict of name -> array, not {type(outputs).__name__}")
    locs, confs = [], []
    for name, shape in cfg.head_shapes().items():
        if name not in outputs:
            raise ValueError(f"SSD head output {name!r} is missing (have: {', '.join(map(str, outputs)) or 'none'})")
        t = np.asarray(outputs[name])
        if t.shape != shape:
            raise ValueError(f"SSD head output {name!r} has shape {list(t.shape)}; the configuration implies "
                             f"{list(shape)} (NCHW, batch 1)")
        if not (np.issubdtype(t.dtype, np.floating) or np.issubdtype(t.dtype, np.integer)):
            raise ValueError(f"SSD head output {name!r} has dtype {t.dtype}, not a number type")
        is_loc = name in cfg.loc_outputs
        rows = np.transpose(t, (0, 2, 3, 1)).reshape(-1, 4 if is_loc else cfg.num_classes).astype(np.float64)
        (locs if is_loc else confs).append(rows)
    return np.concatenate(locs), np.concatenate(confs)


def decode_boxes(loc: np.ndarray, priors: np.ndarray, variances=(0.1, 0.2)) -> np.ndarray:
    """The (P, 4) corner boxes (x1, y1, x2, y2) the regressions ``loc`` (P, 4) give against the centre-size
    ``priors`` (P, 4), with the SSD encoding: centre = prior centre + loc * variance[0] * prior size,
    size = prior size * exp(loc * variance[1]) (the exponent clipped at :data:`MAX_LOG_SCALE`).  Not clipped
    to the image."""
    loc = np.asarray(loc, np.float64)
    priors = np.asarray(priors, np.float64)
    if loc.ndim != 2 or loc.shape[1] != 4 or priors.shape != loc.shape:
        raise ValueError(f"decode_boxes: loc {list(loc.shape)} and priors {list(priors.shape)} must both be (P, 4)")
    v0, v1 = (float(v) for v in variances)
    centre = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    size = priors[:, 2:] * np.exp(np.minimum(loc[:, 2:] * v1, MAX_LOG_SCALE))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: the indices of the boxes kept, highest score first.

    ``boxes`` (N, 4) are corners (x1, y1, x2, y2); a box is dropped when its
    intersection over union with a kept box of higher score (equal scores:
    lower index first) is more than ``iou``.  Boxes of zero area overlap
    nothing.
    """
    boxes = np.asarray(boxes, np.float64)
    scores = np.asarray(scores, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms: boxes {list(boxes.shape)} must be (N, 4) and scores {list(scores.shape)} (N,)")
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.asarray(keep, np.int64)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """The softmax of ``logits`` along ``axis``, float64."""
    x = np.asarray(logits, np.float64)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def detect(outputs: dict, cfg: SSDConfig) -> list[Detection]:
    """The detections in one image's head outputs (see :func:`flatten_heads`), highest score first.

    Class scores are the softmax of the ``conf`` logits; boxes are the
    decoded ``loc`` regressions (:func:`decode_boxes`) clipped to [0, 1].
    For each class but the background (0): the priors whose score is more
    than ``confidence_threshold``, at most ``candidates_per_class`` of the
    highest, then non-maximum suppression at ``nms_iou``; of all classes'
    survivors the ``top_k`` highest scores.  Priors whose box or score is
    not finite are left out.
    """
    loc, conf = flatten_heads(outputs, cfg)
    scores = softmax(conf, axis=1)
    boxes = np.clip(decode_boxes(loc, _priors(cfg), cfg.variances), 0.0, 1.0)
    finite = np.isfinite(boxes).all(axis=1)
    found = []                                              # (score, label, box) in class order
    for c in range(1, cfg.num_classes):
        s = scores[:, c]
        idx = np.flatnonzero((s > cfg.confidence_threshold) & finite)
        if idx.size == 0:
            continue
        idx = idx[np.argsort(-s[idx], kind="stable")[:cfg.candidates_per_class]]
        for i in idx[nms(boxes[idx], s[idx], cfg.nms_iou)]:
            found.append((float(s[i]), c, boxes[i]))
    order = sorted(range(len(found)), key=lambda n: -found[n][0])[:cfg.top_k]      # stable: ties keep class order
    return [Detection(tuple(float(v) for v in found[n][2]), found[n][1], found[n][0]) for n in order]
