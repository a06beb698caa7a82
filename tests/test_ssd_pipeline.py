"""SSD-VGG end to end: compiled with host fallback, every NPU layer checked, the detections checked.

The SSD's L2 normalisation of conv4_3 runs on the host (the MFU has no
reciprocal square root and no sum across a vector's lanes); its dilated
fc6, the extra layers and the twelve heads run on the NPU.  The program
carries the prior configuration; ``Session`` decodes the heads into
detections, which must equal a deliberately naive Python decoding
(``test_detection.naive_detect``) of onnxruntime's float32 heads.  The small
instance runs in the fast suite, SSD300 itself in the full suite.
"""
import numpy as np
import onnxruntime as ort
import pytest

from compiler.models import nets
from compiler.models.photos import load_photos
from compiler.partition import SegmentedModel, compile_with_host_fallback
from compiler.verify import verify_segmented
from runtime.program_io import DETECTION_OUTPUTS
from runtime.session import Session
from test_detection import naive_detect

L2NORM_OPS = {"Pow", "ReduceSum", "Sqrt", "Add", "Div"}


def _heads(model, x) -> dict:
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in ref.get_outputs()], ref.run(None, {ref.get_inputs()[0].name: x})))


def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _found(d, others) -> bool:
    return any(d[1] == o[1] and abs(d[0] - o[0]) <= 1e-3 and np.allclose(d[2], o[2], atol=1e-3) for o in others)


def _check_detections(result, heads, cfg, compare: int = 20) -> None:
    """The NPU's detections against the naive decoding of onnxruntime's heads: each of either side's ``compare``
    best is among the other side's (same class, box and score within 1e-3; two scores closer than that may swap
    places, as seeded weights' near-certain scores do)."""
    want = naive_detect(heads, cfg)
    got = [(d.score, d.label, list(d.box)) for d in result.detections]
    assert got and abs(len(got) - len(want)) <= 2
    assert all(_found(d, want) for d in got[:compare])
    assert all(_found(w, got) for w in want[:compare])
    assert [d[0] for d in got] == sorted((d[0] for d in got), reverse=True)
    got = result.detections
    boxes = result.outputs["detection_boxes"]
    assert boxes.shape == (1, len(got), 4) and result.outputs["detection_scores"].shape == (1, len(got))
    assert np.array_equal(result.outputs["detection_classes"][0], [d.label for d in got])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    model = nets.ssd_small()
    compiled = compile_with_host_fallback(model, "bw-s10", "wide")
    path = tmp_path_factory.mktemp("ssd") / "ssd_small.npuz"
    compiled.save(path)
    return model, compiled, path


def _photos(session: Session, names=("astronaut", "chelsea", "coffee")) -> list[np.ndarray]:
    return [session.preprocess.array(p) for _, p in load_photos(list(names))]


def test_small_ssd_splits_at_the_l2_normalisation(small):
    _, compiled, _ = small
    assert isinstance(compiled, SegmentedModel)
    assert [s.kind for s in compiled.program.segments] == ["npu", "host", "npu"]
    assert {p["op"] for p in compiled.host_ops} == L2NORM_OPS
    assert compiled.program.metadata.detection.num_priors == 950
    npu_ops = {n.split(" ")[0] for s in compiled.program.npu_segments for n in s.nodes}
    assert {"Conv", "MaxPool", "Relu", "Mul"} <= npu_ops


def test_small_ssd_every_npu_layer_matches(small):
    model, compiled, path = small
    session = Session(path)
    report = verify_segmented(model, compiled, "wide", _photos(session))
    assert report.ok, report.table()
    assert all(c.exact for c in report.layers)
    assert {"fc6.relu", "loc0", "conf3"} <= {c.tensor for c in report.layers}


def test_small_ssd_detections_match_a_naive_decoding_of_onnxruntime(small):
    model, compiled, path = small
    session = Session(path)
    for x in _photos(session):
        result = session.score_numpy_array(x)
        heads = _heads(model, x)
        for name, y in heads.items():
            assert _cosine(result.outputs[name], y) >= 0.9999, name
        _check_detections(result, heads, session.detection)


def test_detection_outputs_are_listed_and_served(small):
    from runtime.server import Server
    import tritonclient.http as httpclient

    _, _, path = small
    session = Session(path)
    assert set(DETECTION_OUTPUTS) <= {o.name for o in session.outputs}
    (_, photo), = load_photos(["astronaut"])
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    want = session.score_image(buf.getvalue())
    srv = Server(path, host="127.0.0.1", http_port=0, grpc_port=0, workers=1).start()
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{srv.http.port}")
        meta = client.get_model_metadata(srv.service.name)
        shapes = {o["name"]: o["shape"] for o in meta["outputs"]}
        assert shapes["detection_boxes"] == [1, -1, 4]
        image = httpclient.InferInput("images", [1], "BYTES")
        image.set_data_from_numpy(np.array([buf.getvalue()], dtype=np.object_), binary_data=True)
        outs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in DETECTION_OUTPUTS]
        got = client.infer(srv.service.name, [image], outputs=outs)
        for name in DETECTION_OUTPUTS:
            assert np.array_equal(got.as_numpy(name), want.outputs[name]), name
    finally:
        srv.stop()


def test_detection_demo_draws_the_boxes(tmp_path, capsys):
    from npu_toolkit.cli import main

    assert main(["demo", "--model", "ssd-small", "--config", "tiny", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "on the host: Add, Div, Pow, ReduceSum, Sqrt" in out and "detections from the NPU's heads" in out
    assert "are among onnxruntime's detections" in out
    png = tmp_path / "ssd-small.detections.png"
    assert png.stat().st_size > 10_000
    from PIL import Image

    assert Image.open(png).size[0] >= 500


@pytest.mark.fullsize
def test_ssd300_end_to_end():
    model = nets.ssd_vgg()
    compiled = compile_with_host_fallback(model, "bw-s10", "wide")
    assert [s.kind for s in compiled.program.segments] == ["npu", "host", "npu"]
    assert {p["op"] for p in compiled.host_ops} == L2NORM_OPS
    session = Session(compiled.program)
    assert session.detection.num_priors == 8732
    (x,) = _photos(session, ["astronaut"])
    report = verify_segmented(model, compiled, "wide", [x])
    assert report.ok, report.table()
    result = session.score_numpy_array(x)
    _check_detections(result, _heads(model, x), session.detection)
