"""A head trained on featurizer outputs, served with its featurizer as one model, answers with class names.

A pipeline (.npup: a headless featurizer and a dense head trained on its features, with labels) in a model
repository, asked over the classification extension (a requested output with ``classification: K``): through
tritonclient over HTTP (JSON and binary) and gRPC, and through ``PredictionClient(class_count=K)``, the answer
is the K best classes as ``score:index:label``, the same classes and scores as in-process ``Session.top``.
"""
import io

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from compiler.compile import compile_model
from compiler.models import nets
from compiler.models.photos import load_photos
from runtime.client import PredictionClient
from runtime.heads import DenseHead, save_head
from runtime.pipelines import create_pipeline
from runtime.server import Server
from runtime.session import Session

LABELS = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("served")
    compile_model(nets.resnet_small(headless=True), "tiny", "ms-fp9").save(d / "feat.npuz")
    featurizer = Session(d / "feat.npuz")
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((9, 1, 3, 32, 32)).astype(np.float32) + (np.arange(9) % 3)[:, None, None, None, None]
    feats = np.stack([featurizer.score_numpy_array(x).output.reshape(-1) for x in xs])
    save_head(DenseHead.fit(feats, np.arange(9) % 3, labels=LABELS, steps=50), d / "head.npz")
    repo = d / "repo"
    (repo / "pets" / "1").mkdir(parents=True)
    create_pipeline(d / "feat.npuz", d / "head.npz", name="pets", version="1").save(repo / "pets" / "1" / "p.npup")
    srv = Server(repo, host="127.0.0.1", http_port=0, grpc_port=0, workers=1).start()
    buf = io.BytesIO()
    (_, photo), = load_photos(["chelsea"])
    Image.fromarray(photo).save(buf, format="PNG")
    yield {"server": srv, "session": Session(repo / "pets" / "1" / "p.npup"), "png": buf.getvalue(), "dir": d}
    srv.stop()


def _expected(served, k):
    result = served["session"].score_image(served["png"])
    return [(label, score) for _, label, score in served["session"].top(result, k)]


def _parse(items):
    out = []
    for b in np.asarray(items).reshape(-1):
        score, index, label = (b.decode() if isinstance(b, bytes) else b).split(":", 2)
        out.append((label, float(score), int(index)))
    return out


def _check(got, want):
    assert [g[0] for g in got] == [w[0] for w in want]
    assert np.allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-5)
    assert [g[2] for g in got] == [LABELS.index(w[0]) for w in want]


@pytest.mark.parametrize("binary", [True, False])
def test_http_answers_with_class_names(served, binary):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{served['server'].http.port}")
    image = httpclient.InferInput("images", [1], "BYTES")
    image.set_data_from_numpy(np.array([served["png"]], dtype=np.object_), binary_data=True)
    out = httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)
    result = client.infer("pets", [image], outputs=[out])
    answer = result.as_numpy("probabilities")
    assert answer.shape == (1, 2)
    _check(_parse(answer), _expected(served, 2))


def test_grpc_answers_with_class_names(served):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{served['server'].grpc.port}")
    image = grpcclient.InferInput("images", [1], "BYTES")
    image.set_data_from_numpy(np.array([served["png"]], dtype=np.object_))
    result = client.infer("pets", [image], outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=3)])
    _check(_parse(result.as_numpy("probabilities")), _expected(served, 3))


def test_prediction_client_answers_with_class_names(served, tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(served["png"])
    client = PredictionClient("127.0.0.1", served["server"].grpc.port, service_name="pets")
    got = client.score_file(path, class_count=3)
    want = _expected(served, 3)
    assert [g[0] for g in got] == [w[0] for w in want]
    assert np.allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-5)
    scores = client.score_file(path)                       # without: the probabilities, as before
    assert scores.shape == (1, 3) and np.isclose(scores.sum(), 1, atol=1e-5)


def test_bad_classification_requests_are_refused(served):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{served['server'].http.port}")
    image = httpclient.InferInput("images", [1], "BYTES")
    image.set_data_from_numpy(np.array([served["png"]], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="classification needs a vector of at least 4"):
        client.infer("pets", [image], outputs=[httpclient.InferRequestedOutput("probabilities", class_count=4)])
