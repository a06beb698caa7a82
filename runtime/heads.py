"""Classifier heads that run on the host after an NPU featurizer, and top-k with labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64, returned as float32."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def topk(scores: np.ndarray, k: int = 5, labels: list[str] | None = None) -> list[tuple[int, str, float]]:
    """The ``k`` best (class index, label, score), best first."""
    s = np.asarray(scores).reshape(-1)
    idx = np.argsort(-s, kind="stable")[:k]
    return [(int(i), labels[i] if labels and i < len(labels) else str(int(i)), float(s[i])) for i in idx]


class DenseHead:
    """A dense layer + softmax in numpy: ``probs = softmax(features @ weight.T + bias)``."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None, labels: list[str] | None = None):
        self.weight = np.asarray(weight, np.float32)
        if self.weight.ndim != 2:
            raise ValueError(f"head weight must be (classes, features), got shape {self.weight.shape}")
        self.bias = np.zeros(self.weight.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32)
        self.labels = labels

    @classmethod
    def fit(cls, features: np.ndarray, targets: np.ndarray, *, l2: float = 1e-3, steps: int = 300,
            labels: list[str] | None = None) -> "DenseHead":
        """Train a softmax-regression head on featurizer outputs (full-batch gradient descent, numpy)."""
        x = np.asarray(features, np.float64).reshape(len(features), -1)
        y = np.asarray(targets, int)
        classes = int(y.max()) + 1
        mu, sd = x.mean(0), x.std(0) + 1e-6
        xs = (x - mu) / sd
        w = np.zeros((classes, xs.shape[1]))
        b = np.zeros(classes)
        onehot = np.eye(classes)[y]
        for _ in range(steps):
            p = softmax(xs @ w.T + b).astype(np.float64)
            g = (p - onehot) / len(xs)
            w -= 0.5 * (g.T @ xs + l2 * w)
            b -= 0.5 * g.sum(0)
        return cls((w / sd).astype(np.float32), (b - (w / sd) @ mu).astype(np.float32), labels)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features, np.float32).reshape(-1, self.weight.shape[1])
        return softmax(f @ self.weight.T + self.bias)


class OnnxHead:
    """Any ONNX head (features in, scores out) run by onnxruntime."""

    def __init__(self, model, labels: list[str] | None = None):
        import onnxruntime as ort

        data = model.SerializeToString() if hasattr(model, "SerializeToString") else Path(model).read_bytes()
        self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.labels = labels

    def __call__(self, features: np.ndarray) -> np.ndarray:
        shape = [d if isinstance(d, int) else 1 for d in self.input.shape]
        x = np.asarray(features, np.float32).reshape(shape)
        return self.session.run(None, {self.input.name: x})[0]


class MlpHead:
    """A small multilayer perceptron in numpy: dense layers with ReLU between them, softmax at the end."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], labels: list[str] | None = None):
        self.layers = [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in layers]
        if not self.layers:
            raise ValueError("an MLP head needs at least one layer")
        for k, (w, b) in enumerate(self.layers):
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise ValueError(f"layer {k}: weight must be (outputs, inputs) and bias (outputs,), got "
                                 f"{list(w.shape)} and {list(b.shape)}")
            if k and w.shape[1] != self.layers[k - 1][0].shape[0]:
                raise ValueError(f"layer {k} takes {w.shape[1]} inputs; layer {k - 1} gives "
                                 f"{self.layers[k - 1][0].shape[0]}")
        self.labels = labels

    @property
    def weight(self) -> np.ndarray:
        """The first layer's weight (its second dimension is the feature count the head takes)."""
        return self.layers[0][0]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float32).reshape(-1, self.layers[0][0].shape[1])
        for k, (w, b) in enumerate(self.layers):
            x = x @ w.T + b
            if k < len(self.layers) - 1:
                x = np.maximum(x, 0)
        return softmax(x)


#: Largest saved head file :func:`load_head` reads.
MAX_HEAD_BYTES = 1 << 28
#: Most layers a saved head may have.
MAX_HEAD_LAYERS = 16


def save_head(head: "DenseHead | MlpHead", path) -> None:
    """Write a head as a NumPy ``.npz`` of plain arrays (no pickle): ``w0``, ``b0``, ``w1``, ... and ``labels``.

    One layer is a ``DenseHead``; several are an ``MlpHead`` (ReLU between
    them).  Written to a temporary name, then renamed.
    """
    layers = [(head.weight, head.bias)] if isinstance(head, DenseHead) else head.layers
    arrays = {}
    for k, (w, b) in enumerate(layers):
        arrays[f"w{k}"], arrays[f"b{k}"] = np.asarray(w, np.float32), np.asarray(b, np.float32)
    if head.labels is not None:
        arrays["labels"] = np.array([str(x) for x in head.labels], dtype=np.str_)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


class HeadFileError(ValueError):
    """A saved head is missing, unreadable or malformed; the message names the file and the fault."""


def load_head(path) -> "DenseHead | MlpHead":
    """Read a head written by :func:`save_head` (arrays only, never pickled objects)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise HeadFileError(f"{path}: cannot read the head ({exc.strerror or exc})") from None
    if size > MAX_HEAD_BYTES:
        raise HeadFileError(f"{path}: {size:,} bytes, more than a head file may hold ({MAX_HEAD_BYTES:,})")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise HeadFileError(f"{path}: not a head file (a NumPy .npz of arrays): {exc}") from None
    return head_from_arrays(arrays, str(path))


def head_from_arrays(arrays: dict, path: str = "head") -> "DenseHead | MlpHead":
    """The head that :func:`save_head`'s arrays describe (HeadFileError naming ``path`` and the fault)."""
    count = 0
    while f"w{count}" in arrays and count <= MAX_HEAD_LAYERS:
        count += 1
    unknown = set(arrays) - {f"{p}{k}" for k in range(count) for p in "wb"} - {"labels"}
    if not count or count > MAX_HEAD_LAYERS or unknown:
        raise HeadFileError(f"{path}: a head file holds w0, b0, ... (1 to {MAX_HEAD_LAYERS} layers) and labels; "
                            f"found {', '.join(sorted(arrays)) or 'nothing'}")
    layers = []
    for k in range(count):
        w, b = arrays[f"w{k}"], arrays.get(f"b{k}")
        if b is None or w.dtype.kind != "f" or b.dtype.kind != "f":
            raise HeadFileError(f"{path}: layer {k} needs float arrays w{k} and b{k}")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise HeadFileError(f"{path}: layer {k} holds NaN or infinite values")
        layers.append((w, b))
    labels = arrays.get("labels")
    if labels is not None:
        if labels.dtype.kind != "U" or labels.ndim != 1:
            raise HeadFileError(f"{path}: labels must be a list of strings")
        labels = [str(x) for x in labels]
    try:
        head = DenseHead(*layers[0], labels) if count == 1 else MlpHead(layers, labels)
    except ValueError as exc:
        raise HeadFileError(f"{path}: {exc}") from None
    classes = head.bias.shape[0] if count == 1 else layers[-1][1].shape[0]
    if labels is not None and len(labels) != classes:
        raise HeadFileError(f"{path}: {len(labels)} labels for {classes} classes")
    return head
