"""Land-cover mapping: features of chips from the NPU, a head trained on them, and the map.

The workflow of the accelerated-models service this toolkit follows: a
headless ImageNet network on the NPU turns each 224 x 224 chip of an aerial
raster into a feature vector; a small classifier trained on the host
(scikit-learn) maps features to land-cover classes; the head then rides
with the featurizer and every chip of a raster is scored in batch
(``runtime.batch``), which gives a class map.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .heads import DenseHead, MlpHead

if TYPE_CHECKING:
    import pyarrow

#: Head kinds :func:`train_head` fits.
HEAD_KINDS = ("logistic", "mlp")


@dataclass
class TrainReport:
    """How a head fits: accuracy on the chips it was trained on and on held-out chips, and their confusion."""

    kind: str
    classes: list[str]
    train_chips: int
    validation_chips: int
    train_accuracy: float
    validation_accuracy: float
    confusion: np.ndarray = field(repr=False)      # validation: rows true class, columns predicted

    def table(self) -> str:
        """The accuracies and the validation confusion matrix as text."""
        width = max(8, max(len(c) for c in self.classes) + 1)
        lines = [f"head: {self.kind}; train accuracy {self.train_accuracy:.3f} on {self.train_chips} chips, "
                 f"validation accuracy {self.validation_accuracy:.3f} on {self.validation_chips} chips",
                 "validation confusion (rows: true class, columns: predicted):",
                 " " * width + "".join(f"{c[:width - 1]:>{width}}" for c in self.classes)]
        for name, row in zip(self.classes, self.confusion):
            lines.append(f"{name[:width - 1]:<{width}}" + "".join(f"{int(v):>{width}}" for v in row))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON form."""
        return {"kind": self.kind, "classes": self.classes, "train_chips": self.train_chips,
                "validation_chips": self.validation_chips, "train_accuracy": self.train_accuracy,
                "validation_accuracy": self.validation_accuracy, "confusion": self.confusion.tolist()}


def train_head(features: np.ndarray, targets: np.ndarray, classes: list[str], *, kind: str = "logistic",
               validation: float = 0.25, seed: int = 0) -> tuple["DenseHead | MlpHead", TrainReport]:
    """Fit a head (``logistic`` regression or a one-hidden-layer ``mlp``) on features and class indices.

    A stratified ``validation`` share of the chips is held out and
    reported; the returned head is the one fitted on the rest, with the
    features' standardisation folded into its first layer.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import confusion_matrix
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    if kind not in HEAD_KINDS:
        raise ValueError(f"head kind {kind!r} unknown; choose one of {', '.join(HEAD_KINDS)}")
    x = np.asarray(features, np.float64).reshape(len(features), -1)
    y = np.asarray(targets, np.int64)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"{len(x)} feature rows for {len(y)} targets; at least two chips are needed")
    if y.min() < 0 or y.max() >= len(classes):
        raise ValueError(f"targets must be class indices 0..{len(classes) - 1}")
    present = np.unique(y)
    held = int(np.ceil(validation * len(y)))
    if not 0 < held < len(y):
        raise ValueError(f"validation share {validation} of {len(y)} chips leaves no chips to train or to check on")
    fits = np.bincount(y)[present].min() >= 2 and len(present) <= min(held, len(y) - held)
    stratify = y if fits else None           # a stratified split needs every class on both sides
    xt, xv, yt, yv = train_test_split(x, y, test_size=validation, random_state=seed, stratify=stratify)
    mean, scale = xt.mean(0), xt.std(0) + 1e-6
    zt = (xt - mean) / scale
    if kind == "logistic":
        model = LogisticRegression(max_iter=2000, C=1.0, random_state=seed).fit(zt, yt)
        layers = [(model.coef_, model.intercept_)]
        if len(model.classes_) == 2:                       # scikit-learn keeps one row for two classes
            layers = [(np.vstack([-model.coef_, model.coef_]) / 2, np.hstack([-model.intercept_, model.intercept_]) / 2)]
    else:
        model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=seed, alpha=1e-3).fit(zt, yt)
        layers = [(w.T, b) for w, b in zip(model.coefs_, model.intercepts_)]
        if len(model.classes_) == 2:
            w, b = layers[-1]
            layers[-1] = (np.vstack([-w, w]) / 2, np.hstack([-b, b]) / 2)
    layers = _expand_classes(layers, model.classes_, len(classes))
    w0, b0 = layers[0]
    layers[0] = (w0 / scale, b0 - (w0 / scale) @ mean)            # standardisation folded into the first layer
    head = DenseHead(*layers[0], list(classes)) if len(layers) == 1 else MlpHead(layers, list(classes))
    pt = head(xt).argmax(1)
    pv = head(xv).argmax(1)
    report = TrainReport(kind, list(classes), len(xt), len(xv), float((pt == yt).mean()), float((pv == yv).mean()),
                         confusion_matrix(yv, pv, labels=list(range(len(classes)))))
    return head, report


def _expand_classes(layers, seen, count: int):
    """The last layer with a row per class of ``count`` (classes absent from training never win)."""
    w, b = layers[-1]
    full_w = np.zeros((count, w.shape[1]))
    full_b = np.full(count, -1e4)
    full_w[seen], full_b[seen] = w, b
    return layers[:-1] + [(full_w, full_b)]


#: Rows of chips whose labels are read at a time (bounds memory whatever the raster's size).
LABEL_CHUNK = 256


def read_parts(batch_dir) -> "pyarrow.Table":
    """Every finished part of a batch job (``runtime.batch``) as one table, ordered by input and chip."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted((Path(batch_dir) / "parts").glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{batch_dir}: no finished parts (parts/part-*.parquet); run npu batch first")
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    return table.sort_by([("input", "ascending"), ("chip", "ascending")])


def chip_labels(label_path, grid) -> np.ndarray:
    """The label raster's majority class under every chip of ``grid`` (``runtime.imagery.ChipGrid``)."""
    from .imagery import label_of_chips

    out = np.empty(grid.count, np.int64)
    for start in range(0, grid.count, LABEL_CHUNK):
        stop = min(start + LABEL_CHUNK, grid.count)
        out[start:stop] = label_of_chips(label_path, grid, start, stop)
    return out


def features_and_targets(batch_dir, grid, label_path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, class index, chip index) of every chip a featurizing batch job scored, labels from the raster."""
    table = read_parts(batch_dir)
    column = "features" if "features" in table.column_names else "output"
    chips = np.asarray(table.column("chip").to_numpy(), np.int64)
    features = np.stack([np.asarray(v, np.float32) for v in table.column(column).to_pylist()])
    return features, chip_labels(label_path, grid)[chips], chips


def class_map(batch_dir, grid, nodata: int = 255) -> np.ndarray:
    """The (rows, cols) grid of classes a batch job with a head gave each chip (``nodata`` where none)."""
    table = read_parts(batch_dir)
    classes = np.full(grid.count, nodata, np.uint8)
    classes[np.asarray(table.column("chip").to_numpy(), np.int64)] = np.asarray(table.column("class").to_numpy())
    return classes.reshape(grid.rows, grid.cols)


def map_accuracy(classes: np.ndarray, grid, label_path, count: int, nodata: int = 255) -> tuple[float, np.ndarray]:
    """(accuracy, confusion) of a class map against the label raster's majority class per chip."""
    truth = chip_labels(label_path, grid).reshape(grid.rows, grid.cols)
    scored = classes != nodata
    confusion = np.zeros((count, count), np.int64)
    np.add.at(confusion, (truth[scored], classes[scored].astype(np.int64)), 1)
    total = int(scored.sum())
    return (float(np.trace(confusion)) / total if total else 0.0), confusion
