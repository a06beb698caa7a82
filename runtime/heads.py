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
