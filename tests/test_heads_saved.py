"""Heads trained on the host (scikit-learn) as plain arrays: same predictions as scikit-learn, saved without pickle.

``runtime.landcover.train_head`` folds the features' standardisation into the head's first layer; its class
for each chip must be scikit-learn's own prediction.  ``save_head``/``load_head`` round-trip exactly and refuse a
file that is not plain float arrays (pickled objects, NaN, a shape that does not chain, labels that do not fit).
"""
import numpy as np
import pytest

from runtime.heads import DenseHead, HeadFileError, MlpHead, load_head, save_head
from runtime.landcover import train_head

CLASSES = ["water", "forest", "field", "built-up", "bare ground"]


def _data(n=400, d=24, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(CLASSES), d)) * 2.5
    y = rng.integers(0, len(CLASSES), n)
    return centres[y] * rng.uniform(0.5, 3, d) + rng.standard_normal((n, d)) + 10, y


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_trained_head_predicts_as_scikit_learn(kind):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = _data()
    head, report = train_head(x, y, CLASSES, kind=kind, validation=0.25, seed=3)
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.25, random_state=3, stratify=y)
    mean, scale = xt.mean(0), xt.std(0) + 1e-6
    model = (LogisticRegression(max_iter=2000, random_state=3) if kind == "logistic" else
             MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=3, alpha=1e-3))
    model.fit((xt - mean) / scale, yt)
    assert np.array_equal(head(xv).argmax(1), model.predict((xv - mean) / scale))
    assert report.validation_accuracy == pytest.approx((model.predict((xv - mean) / scale) == yv).mean())
    assert report.confusion.sum() == len(yv) == report.validation_chips
    assert np.trace(report.confusion) == round(report.validation_accuracy * len(yv))
    assert "validation confusion" in report.table() and "bare ground"[:8] in report.table()


def test_a_class_missing_from_training_never_wins():
    x, y = _data()
    keep = y != 2
    head, _ = train_head(x[keep], y[keep], CLASSES, kind="logistic")
    assert head(x).shape == (len(x), 5) and (head(x).argmax(1) != 2).all()


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_saved_heads_round_trip(tmp_path, kind):
    x, y = _data()
    head, _ = train_head(x, y, CLASSES, kind=kind)
    save_head(head, tmp_path / "head.npz")
    again = load_head(tmp_path / "head.npz")
    assert type(again) is type(head) and again.labels == CLASSES
    assert np.array_equal(again(x), head(x))


def test_hostile_head_files_are_refused(tmp_path):
    p = tmp_path / "h.npz"
    np.savez(p, w0=np.array([object()], dtype=object), b0=np.zeros(1))
    with pytest.raises(HeadFileError, match="not a head file"):
        load_head(p)
    np.savez(p, w0=np.full((3, 4), np.nan, np.float32), b0=np.zeros(3, np.float32))
    with pytest.raises(HeadFileError, match="NaN"):
        load_head(p)
    np.savez(p, w0=np.zeros((3, 4), np.float32), b0=np.zeros(3, np.float32), w1=np.zeros((2, 5), np.float32),
             b1=np.zeros(2, np.float32))
    with pytest.raises(HeadFileError, match="layer 1 takes 5 inputs; layer 0 gives 3"):
        load_head(p)
    np.savez(p, w0=np.zeros((3, 4), np.float32), b0=np.zeros(3, np.float32), labels=np.array(["a", "b"]))
    with pytest.raises(HeadFileError, match="2 labels for 3 classes"):
        load_head(p)
    np.savez(p, weights=np.zeros((3, 4), np.float32))
    with pytest.raises(HeadFileError, match="holds w0, b0"):
        load_head(p)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(HeadFileError, match="junk.npz"):
        load_head(tmp_path / "junk.npz")
    with pytest.raises(HeadFileError, match="cannot read"):
        load_head(tmp_path / "missing.npz")
    assert isinstance(DenseHead(np.zeros((2, 3))), DenseHead) and MlpHead
