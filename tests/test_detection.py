"""npu.detection: SSD priors, head flattening, box decoding, NMS and the detection output, against naive references."""
import json
import math

import numpy as np
import pytest

from npu.detection import (MAX_LOG_SCALE, MAX_PRIORS, VOC_LABELS, Detection, SSDConfig, decode_boxes, detect,
                           flatten_heads, nms, prior_boxes)

# ---------------------------------------------------------------------------------------------------------------
# Naive references: explicit loops straight from the SSD formulas (ssd.pytorch's PriorBox / Detect), sharing no
# code with npu.detection.


def naive_priors(cfg: SSDConfig) -> list[list[float]]:
    out = []
    for k, f in enumerate(cfg.feature_maps):
        f_k = cfg.image_size / cfg.steps[k]
        s_k = cfg.min_sizes[k] / cfg.image_size
        s_k_prime = math.sqrt(s_k * (cfg.max_sizes[k] / cfg.image_size))
        for i in range(f):
            for j in range(f):
                cx = (j + 0.5) / f_k
                cy = (i + 0.5) / f_k
                out.append([cx, cy, s_k, s_k])
                out.append([cx, cy, s_k_prime, s_k_prime])
                for ar in cfg.aspect_ratios[k]:
                    out.append([cx, cy, s_k * math.sqrt(ar), s_k / math.sqrt(ar)])
                    out.append([cx, cy, s_k / math.sqrt(ar), s_k * math.sqrt(ar)])
    if cfg.clip:
        out = [[min(max(v, 0.0), 1.0) for v in box] for box in out]
    return out


def naive_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def naive_detect(outputs: dict, cfg: SSDConfig) -> list[tuple[float, int, list[float]]]:
    """(score, label, box) per detection, highest score first, by per-prior, per-class Python loops."""
    priors = naive_priors(cfg)
    C = cfg.num_classes
    loc_rows, conf_rows = [], []
    for k, f in enumerate(cfg.feature_maps):                 # NCHW -> one row per (i, j, anchor)
        loc, conf = outputs[cfg.loc_outputs[k]], outputs[cfg.conf_outputs[k]]
        anchors = loc.shape[1] // 4
        for i in range(f):
            for j in range(f):
                for a in range(anchors):
                    loc_rows.append([float(loc[0, a * 4 + t, i, j]) for t in range(4)])
                    conf_rows.append([float(conf[0, a * C + c, i, j]) for c in range(C)])
    v0, v1 = cfg.variances
    boxes, scores = [], []
    for p, (l, pr) in enumerate(zip(loc_rows, priors)):
        cx = pr[0] + l[0] * v0 * pr[2]
        cy = pr[1] + l[1] * v0 * pr[3]
        w = pr[2] * math.exp(min(l[2] * v1, math.log(1000 / 16)))
        h = pr[3] * math.exp(min(l[3] * v1, math.log(1000 / 16)))
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        boxes.append([min(max(v, 0.0), 1.0) for v in box])
        m = max(conf_rows[p])
        e = [math.exp(x - m) for x in conf_rows[p]]
        scores.append([x / sum(e) for x in e])
    found = []
    for c in range(1, C):
        cands = [(scores[p][c], p) for p in range(len(priors)) if scores[p][c] > cfg.confidence_threshold]
        cands.sort(key=lambda t: (-t[0], t[1]))
        cands = cands[:cfg.candidates_per_class]
        kept = []
        for s, p in cands:
            if all(naive_iou(boxes[p], boxes[q]) <= cfg.nms_iou for q in kept):
                kept.append(p)
        found += [(scores[p][c], c, boxes[p]) for p in kept]
    found.sort(key=lambda t: -t[0])
    return found[:cfg.top_k]


def random_heads(cfg: SSDConfig, seed: int, conf_scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * (conf_scale if name in cfg.conf_outputs else 1.0)).astype(np.float32)
            for name, shape in cfg.head_shapes().items()}


def assert_same(got: list[Detection], want: list[tuple]) -> None:
    assert len(got) == len(want)
    for d, (score, label, box) in zip(got, want):
        assert isinstance(d, Detection) and isinstance(d.label, int) and isinstance(d.score, float)
        assert d.label == label
        assert d.score == pytest.approx(score, rel=1e-9, abs=1e-12)
        assert np.allclose(d.box, box, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Priors


def test_ssd300_prior_count_and_order():
    cfg = SSDConfig.ssd300()
    assert cfg.anchors_per_location == (4, 6, 6, 6, 4, 4)
    assert cfg.num_priors == 38 * 38 * 4 + 19 * 19 * 6 + 10 * 10 * 6 + 5 * 5 * 6 + 3 * 3 * 4 + 1 * 1 * 4 == 8732
    p = prior_boxes(cfg)
    assert p.shape == (8732, 4)
    # First cell of the 38 x 38 map: centre 0.5 * 8 / 300; the 30-pixel square, then the sqrt(30 * 60) one,
    # then the 2:1 and 1:2 boxes of the 30-pixel square.
    c = 4 / 300
    assert np.allclose(p[0], [c, c, 0.1, 0.1])
    assert np.allclose(p[1], [c, c, math.sqrt(1800) / 300, math.sqrt(1800) / 300])
    assert np.allclose(p[2], [c, c, 0.1 * math.sqrt(2), 0.1 / math.sqrt(2)])
    assert np.allclose(p[3], [c, c, 0.1 / math.sqrt(2), 0.1 * math.sqrt(2)])
    assert np.allclose(p[4], [12 / 300, c, 0.1, 0.1])            # the next cell is to the right (row-major)
    assert np.allclose(p[38 * 4], [c, 12 / 300, 0.1, 0.1])       # the next row
    # The first prior of the 19 x 19 map (step 16, min 60).
    assert np.allclose(p[38 * 38 * 4], [8 / 300, 8 / 300, 0.2, 0.2])
    # The last prior: the 1 x 1 map's 1:2 box of the 264-pixel square, its height clipped to 1.
    assert np.allclose(p[-1], [0.5, 0.5, 0.88 / math.sqrt(2), 1.0])
    assert np.allclose(p[-2], [0.5, 0.5, 1.0, 0.88 / math.sqrt(2)])
    assert np.allclose(p[-3], [0.5, 0.5, math.sqrt(264 * 315) / 300, math.sqrt(264 * 315) / 300])
    assert np.allclose(p[-4], [0.5, 0.5, 0.88, 0.88])
    assert p.min() >= 0 and p.max() <= 1


@pytest.mark.parametrize("cfg", [SSDConfig.ssd300(), SSDConfig.small(), SSDConfig.ssd300(clip=False)],
                         ids=["ssd300", "small", "unclipped"])
def test_priors_match_naive_loops(cfg):
    assert np.allclose(prior_boxes(cfg), naive_priors(cfg), rtol=0, atol=1e-12)


def test_prior_boxes_are_a_copy():
    cfg = SSDConfig.small()
    p = prior_boxes(cfg)
    p[:] = -1
    assert prior_boxes(cfg).min() >= 0


# ---------------------------------------------------------------------------------------------------------------
# Heads, decoding, NMS


def test_flatten_heads_order():
    cfg = SSDConfig.small(num_classes=3)
    heads = random_heads(cfg, 1)
    loc, conf = flatten_heads(heads, cfg)
    assert loc.shape == (950, 4) and conf.shape == (950, 3)
    # Prior number n of map 1 (6 x 6, 6 anchors) at row i, column j, anchor a.
    i, j, a = 4, 2, 5
    n = 13 * 13 * 4 + (i * 6 + j) * 6 + a
    assert np.allclose(loc[n], heads["loc1"][0, a * 4:a * 4 + 4, i, j])
    assert np.allclose(conf[n], heads["conf1"][0, a * 3:a * 3 + 3, i, j])


def test_flatten_heads_rejects_bad_outputs():
    cfg = SSDConfig.small()
    heads = random_heads(cfg, 2)
    with pytest.raises(ValueError, match="'conf2' is missing"):
        flatten_heads({k: v for k, v in heads.items() if k != "conf2"}, cfg)
    with pytest.raises(ValueError, match="'loc1' has shape"):
        flatten_heads({**heads, "loc1": heads["loc1"][..., :5]}, cfg)
    with pytest.raises(ValueError, match="'loc0' has shape"):
        flatten_heads({**heads, "loc0": heads["loc0"][0]}, cfg)
    with pytest.raises(ValueError, match="dtype"):
        flatten_heads({**heads, "loc0": heads["loc0"].astype(str)}, cfg)


def test_decode_boxes_by_hand():
    priors = np.array([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.1, 0.1]])
    loc = np.array([[1.0, -2.0, 0.0, 5 * math.log(2.0)], [0.0, 0.0, 0.0, 0.0]])
    got = decode_boxes(loc, priors, (0.1, 0.2))
    # centre (0.5 + 0.1 * 0.2, 0.5 - 0.2 * 0.4) = (0.52, 0.42); size (0.2, 0.4 * 2)
    assert np.allclose(got, [[0.42, 0.02, 0.62, 0.82], [0.05, 0.85, 0.15, 0.95]])
    huge = decode_boxes(np.array([[0.0, 0.0, 1e6, 1e6]]), priors[:1], (0.1, 0.2))
    assert np.isfinite(huge).all() and np.allclose(huge[0, 2] - huge[0, 0], 0.2 * math.exp(MAX_LOG_SCALE))


def test_nms_by_hand():
    boxes = np.array([[0, 0, 1, 1], [0.1, 0, 1.1, 1], [2, 2, 3, 3], [0, 0, 1, 0.5], [5, 5, 5, 6]], float)
    scores = np.array([0.9, 0.95, 0.5, 0.8, 0.7])
    # 1 beats 0 (IoU 0.9 / 1.1); 3 overlaps 1 by 0.45 / 1.05 < 0.45 is kept; 4 has no area: overlaps nothing.
    assert nms(boxes, scores, 0.45).tolist() == [1, 3, 4, 2]
    assert nms(boxes, scores, 0.4).tolist() == [1, 4, 2]
    assert nms(boxes, scores, 1.0).tolist() == [1, 0, 3, 4, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    # IoU exactly at the threshold: kept (only "more than" suppresses)
    assert nms(boxes[[0, 3]], np.array([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms(boxes[[0, 3]], np.array([0.9, 0.8]), 0.49).tolist() == [0]
    # equal scores: the lower index first
    assert nms(boxes[:2], np.array([0.5, 0.5]), 0.45).tolist() == [0]


def test_nms_matches_naive_loop():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 1, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.01, 0.3, (300, 2))], axis=1)
    scores = rng.uniform(0, 1, 300)
    order = sorted(range(300), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(naive_iou(boxes[i], boxes[q]) <= 0.45 for q in kept):
            kept.append(i)
    assert nms(boxes, scores, 0.45).tolist() == kept


# ---------------------------------------------------------------------------------------------------------------
# detect


@pytest.mark.parametrize("cfg, conf_scale", [
    (SSDConfig.small(), 1.0),
    (SSDConfig.small(confidence_threshold=0.06, candidates_per_class=30, top_k=1000, nms_iou=0.3), 2.0),
    (SSDConfig.small(top_k=50), 2.0),
    (SSDConfig.small(num_classes=4, top_k=1000, candidates_per_class=1000), 3.0),
    (SSDConfig.ssd300(num_classes=5), 3.0),
], ids=["small", "small-strict", "small-top50", "small-everything", "ssd300"])
def test_detect_matches_naive_loops(cfg, conf_scale):
    heads = random_heads(cfg, 7, conf_scale)
    got = detect(heads, cfg)
    want = naive_detect(heads, cfg)
    assert len(got) > 0
    assert_same(got, want)
    assert [d.score for d in got] == sorted((d.score for d in got), reverse=True)
    assert all(1 <= d.label < cfg.num_classes and 0 <= min(d.box) and max(d.box) <= 1 for d in got)
    assert len(got) <= cfg.top_k


def _crafted():
    """A 10 x 10 input, one 2 x 2 map, two square priors per cell (4 px and sqrt(4 * 6) px), three classes."""
    cfg = SSDConfig(image_size=10, feature_maps=[2], steps=[5], min_sizes=[4], max_sizes=[6], aspect_ratios=[[]],
                    num_classes=3, loc_outputs=["l"], conf_outputs=["c"])
    loc = np.zeros((1, 8, 2, 2), np.float32)
    conf = np.zeros((1, 6, 2, 2), np.float32)

    def set_conf(i, j, a, logits):
        conf[0, a * 3:a * 3 + 3, i, j] = logits

    for i in range(2):
        for j in range(2):
            for a in range(2):
                set_conf(i, j, a, [5, 0, 0])                    # background: classes 1, 2 at 0.0067
    set_conf(0, 0, 0, [0, 5, -10])      # prior 0: class 1, 0.993
    set_conf(0, 0, 1, [0, 4, -10])      # prior 1: class 1, 0.982; same cell as prior 0, IoU 0.67: suppressed
    set_conf(0, 1, 0, [0, 3, -10])      # prior 2: class 1, 0.953, moved and widened below
    set_conf(0, 1, 1, [0, 0, 2])        # prior 3: class 2, 0.787; class 1 0.106 overlaps prior 2: suppressed
    set_conf(1, 0, 0, [5, 0.4, -10])    # prior 4: class 1, 0.00989, below the threshold
    set_conf(1, 0, 1, [5, 0.4140625, -10])  # prior 5: class 1, 0.01009, just above it (53 / 128: exact in float32)
    loc[0, 0:4, 0, 1] = [1.0, 0.0, 5 * math.log(1.25), 0.0]     # prior 2: centre x + 0.1 * 0.4, width x 1.25
    return cfg, {"l": loc, "c": conf}


def test_detect_crafted_case():
    cfg, heads = _crafted()
    got = detect(heads, cfg)
    e = math.exp
    s = 0.4 * math.sqrt(1.5) / 2                                # half the side of the second prior of a cell
    want = [
        (e(5) / (1 + e(5) + e(-10)), 1, [0.05, 0.05, 0.45, 0.45]),
        (e(3) / (1 + e(3) + e(-10)), 1, [0.79 - 0.25, 0.05, 1.0, 0.45]),          # x2 = 1.04 clipped
        (e(2) / (e(2) + 2), 2, [0.75 - s, 0.25 - s, 0.75 + s, 0.25 + s]),
        (e(0.4140625) / (e(5) + e(0.4140625) + e(-10)), 1, [0.25 - s, 0.75 - s, 0.25 + s, 0.75 + s]),
    ]
    assert_same(got, want)
    assert_same(got, naive_detect(heads, cfg))
    # prior 1 and prior 3 (for class 1) were suppressed; prior 4 was below the threshold
    assert all(d.score > cfg.confidence_threshold for d in got)
    # top_k keeps the highest; a stricter threshold drops the weak one
    assert_same(detect(heads, cfg.replace(top_k=2)), want[:2])
    assert_same(detect(heads, cfg.replace(confidence_threshold=0.05)), want[:3])
    # the candidates are chosen before suppression: of class 1's two best (priors 0 and 1) only prior 0 survives
    assert_same(detect(heads, cfg.replace(candidates_per_class=2)), [want[0], want[2]])
    assert_same(detect(heads, cfg.replace(candidates_per_class=3)), want[:3])
    # without suppression the overlapping ones come back
    assert len(detect(heads, cfg.replace(nms_iou=1.0))) == 6


def test_detect_skips_non_finite():
    cfg, heads = _crafted()
    heads["l"][0, 0, 0, 0] = np.nan                             # prior 0's box
    heads["c"][0, 0:3, 0, 1] = np.nan                           # prior 2's scores
    got = detect(heads, cfg)
    assert all(np.isfinite(d.box).all() and math.isfinite(d.score) for d in got)
    assert [float(f"{d.score:.3g}") for d in got] == [0.982, 0.787, 0.107, 0.0101]


def test_detection_to_dict():
    d = Detection((0.1, 0.2, 0.3, 0.4), 15, 0.5)
    assert d.to_dict(VOC_LABELS) == {
        "box": [0.1, 0.2, 0.3, 0.4], "label": 15, "score": 0.5, "name": "person"}
    json.dumps(d.to_dict())


# ---------------------------------------------------------------------------------------------------------------
# Configuration


def test_config_round_trip():
    for cfg in (SSDConfig.ssd300(), SSDConfig.small(num_classes=5)):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert SSDConfig.from_dict(d) == cfg
    assert SSDConfig.from_dict({}) == SSDConfig.ssd300()
    assert SSDConfig.small().num_priors == 950
    assert SSDConfig.ssd300().output_names == tuple(f"loc{i}" for i in range(6)) + tuple(f"conf{i}" for i in range(6))


@pytest.mark.parametrize("changes, field", [
    ({"image_size": 300.0}, "image_size"),
    ({"image_size": True}, "image_size"),
    ({"image_size": -300}, "image_size"),
    ({"image_size": 10 ** 9}, "image_size"),
    ({"feature_maps": "38"}, "feature_maps"),
    ({"feature_maps": [38, 19, 10, 5, 3, -1]}, r"feature_maps\[5\]"),
    ({"feature_maps": [38, 19, 10, 5, 3, 1.5]}, r"feature_maps\[5\]"),
    ({"feature_maps": []}, "feature_maps"),
    ({"feature_maps": [1] * 1000}, "feature_maps"),
    ({"steps": [8, 16, 32, 64, 100]}, "steps"),
    ({"steps": [8, 16, 0, 64, 100, 300]}, r"steps\[2\]"),
    ({"steps": [8, 16, "32", 64, 100, 300]}, r"steps\[2\]"),
    ({"min_sizes": [30, 60, -111, 162, 213, 264]}, r"min_sizes\[2\]"),
    ({"min_sizes": [30, 60, float("nan"), 162, 213, 264]}, r"min_sizes\[2\]"),
    ({"max_sizes": [60, 111, 162, 213, 264, float("inf")]}, r"max_sizes\[5\]"),
    ({"max_sizes": [60, 111, 162, 213, 264]}, "max_sizes"),
    ({"max_sizes": [20, 111, 162, 213, 264, 315]}, r"max_sizes\[0\]"),
    ({"aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2]]}, "aspect_ratios"),
    ({"aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2], 2]}, r"aspect_ratios\[5\]"),
    ({"aspect_ratios": [[2], [2, 3], [2, -3], [2, 3], [2], [2]]}, r"aspect_ratios\[2\]\[1\]"),
    ({"aspect_ratios": [[2], [2, 3], [2] * 50, [2, 3], [2], [2]]}, r"aspect_ratios\[2\]"),
    ({"variances": [0.1]}, "variances"),
    ({"variances": [0.1, -0.2]}, r"variances\[1\]"),
    ({"clip": "yes"}, "clip"),
    ({"clip": 1}, "clip"),
    ({"num_classes": 1}, "num_classes"),
    ({"num_classes": "21"}, "num_classes"),
    ({"num_classes": 10 ** 6}, "num_classes"),
    ({"confidence_threshold": 1.5}, "confidence_threshold"),
    ({"confidence_threshold": float("nan")}, "confidence_threshold"),
    ({"nms_iou": -0.1}, "nms_iou"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"candidates_per_class": -1}, "candidates_per_class"),
    ({"loc_outputs": ["loc0"] * 6}, r"loc_outputs\[1\]"),
    ({"conf_outputs": ["loc0", "conf1", "conf2", "conf3", "conf4", "conf5"]}, r"conf_outputs\[0\]"),
    ({"conf_outputs": ["conf0", "conf1", 2, "conf3", "conf4", "conf5"]}, r"conf_outputs\[2\]"),
    ({"conf_outputs": ["conf0", "conf1", "", "conf3", "conf4", "conf5"]}, r"conf_outputs\[2\]"),
    ({"conf_outputs": ["conf0"]}, "conf_outputs"),
    ({"bogus": 1}, "bogus"),
])
def test_config_rejects_bad_fields(changes, field):
    with pytest.raises(ValueError, match=field):
        SSDConfig.from_dict({**SSDConfig.ssd300().to_dict(), **changes})


def test_config_rejects_too_many_priors():
    one_map = dict(feature_maps=[200], steps=[1.5], min_sizes=[3], max_sizes=[6], aspect_ratios=[[2, 3]],
                   loc_outputs=["l"], conf_outputs=["c"])
    with pytest.raises(ValueError, match="240,000 prior boxes"):
        SSDConfig.from_dict(one_map)
    # the largest side a map may have, with the most ratios: refused without building anything
    with pytest.raises(ValueError, match=r"feature_maps\[0\]"):
        SSDConfig.from_dict({**one_map, "feature_maps": [10 ** 9]})
    with pytest.raises(ValueError, match="prior boxes"):
        SSDConfig.from_dict({**one_map, "feature_maps": [1024], "aspect_ratios": [[2] * 8]})
    assert SSDConfig.from_dict({**one_map, "feature_maps": [100]}).num_priors == 60_000 <= MAX_PRIORS
    with pytest.raises(ValueError, match="scores"):
        SSDConfig.from_dict({**one_map, "feature_maps": [100], "num_classes": 1000})


def test_config_rejects_non_objects():
    for bad in ([], "ssd300", None, 3):
        with pytest.raises(ValueError, match="JSON object"):
            SSDConfig.from_dict(bad)
    with pytest.raises(TypeError):
        prior_boxes({"image_size": 300})
