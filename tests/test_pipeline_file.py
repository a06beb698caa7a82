"""Pipeline files (.npup): a program, a host head, labels and a version in one checksummed file."""
import hashlib
import io
import json
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from compiler.compile import compile_model
from compiler.models import nets
from compiler.models.graph import GraphBuilder
from compiler.partition import compile_with_host_fallback
from npu.npuz import ProgramFileError, header_digest
from npu.pipeline import PipelineFile, is_pipeline, load_pipeline, load_pipeline_bytes
from npu.preprocess import Preprocess
from npu.segments import SegmentedProgram, load_program_bytes
from runtime.heads import DenseHead, MlpHead, OnnxHead, load_head, save_head
from runtime.pipelines import PROBABILITIES, PipelineError, create_pipeline
from runtime.session import Pipeline, Session

LABELS = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    compile_model(nets.resnet_small(headless=True), "tiny", "ms-fp9").save(d / "feat.npuz")
    s = Session(d / "feat.npuz")
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((9, 1, 3, 32, 32)).astype(np.float32)
    ys = np.arange(9) % 3
    xs += ys[:, None, None, None, None] * 0.5
    feats = np.stack([s.score_numpy_array(x).output.reshape(-1) for x in xs])
    head = DenseHead.fit(feats, ys, labels=LABELS, steps=50)
    save_head(head, d / "head.npz")
    (d / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (d / "head.onnx").write_bytes(_onnx_head(head).SerializeToString())
    return {"dir": d, "program": d / "feat.npuz", "head": d / "head.npz", "onnx": d / "head.onnx",
            "labels": d / "labels.txt", "xs": xs, "features": feats.shape[1]}


def _onnx_head(head, domain="", external=False) -> onnx.ModelProto:
    w = numpy_helper.from_array(head.weight, "w")
    if external:
        w.data_location = TensorProto.EXTERNAL
        w.ClearField("raw_data")
        e = w.external_data.add()
        e.key, e.value = "location", "/etc/passwd"
    nodes = [helper.make_node("Gemm", ["f", "w", "b"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["p"], axis=1, domain=domain)]
    g = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("f", TensorProto.FLOAT,
                                                                        [1, head.weight.shape[1]])],
                          [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, head.weight.shape[0]])],
                          [w, numpy_helper.from_array(head.bias, "b")])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(g, opset_imports=opsets)


@pytest.fixture(scope="module")
def dense_pipe(files):
    path = files["dir"] / "dense.npup"
    create_pipeline(files["program"], files["head"], version="1.2", name="pets").save(path)
    return path


@pytest.fixture(scope="module")
def onnx_pipe(files):
    path = files["dir"] / "onnx.npup"
    create_pipeline(files["program"], files["onnx"], LABELS, "7", "pets-onnx").save(path)
    return path


@pytest.mark.parametrize("which", ["dense_pipe", "onnx_pipe"])
def test_a_pipeline_scores_like_program_and_head(files, which, request):
    path = request.getfixturevalue(which)
    assert is_pipeline(path) and not is_pipeline(files["program"])
    s = Session(path)
    ref_head = load_head(files["head"]) if which == "dense_pipe" else OnnxHead(files["onnx"])
    ref = Pipeline(Session(files["program"]), ref_head)
    assert s.labels == LABELS
    assert [o.name for o in s.outputs] == [PROBABILITIES] and s.outputs[0].shape == (3,)
    for x in files["xs"][:4]:
        r = s.score_numpy_array(x)
        want, _ = ref.score_numpy_array(x)
        assert r.output.shape == (1, 3)
        assert np.array_equal(r.output, np.asarray(want).reshape(1, 3))           # bit for bit
        assert r.stats.cycles > 0
        top = s.top(r, 3)
        assert [t[1] for t in top] == [LABELS[i] for i in np.argsort(-r.output[0], kind="stable")]
    # the same through the other score_* APIs: images (the program's recipe) and batches
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(5).random((40, 48, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    want, _ = ref.score_image(buf.getvalue())
    assert np.array_equal(s.score_image(buf.getvalue()).output, np.asarray(want).reshape(1, 3))
    batch = s.score_batch([files["xs"][0][0], buf.getvalue()])
    assert np.array_equal(batch[0].output, s.score_numpy_array(files["xs"][0]).output)
    assert np.array_equal(batch[1].output, s.score_image(buf.getvalue()).output)


def test_round_trip_and_fields(files, dense_pipe, tmp_path):
    p = load_pipeline(dense_pipe)
    assert (p.name, p.version, p.labels, p.head_kind, p.preprocess) == ("pets", "1.2", LABELS, "arrays", None)
    assert p.program_bytes == files["program"].read_bytes()
    assert type(p.program()).__name__ == "ProgramFile"
    p.save(tmp_path / "again.npup")
    q = load_pipeline(tmp_path / "again.npup")
    assert q == p and (tmp_path / "again.npup").read_bytes() == dense_pipe.read_bytes()
    assert load_pipeline_bytes(dense_pipe.read_bytes()) == p
    # a preprocess override and a headless pipeline: the program's outputs, the pipeline's labels
    recipe = Preprocess(crop=32, resize=40, scale=0.5)
    headless = PipelineFile(files["program"].read_bytes(), labels=None, version="3", name="feat", preprocess=recipe)
    headless.save(tmp_path / "headless.npup")
    s = Session(tmp_path / "headless.npup")
    assert s.preprocess == recipe and s.labels is None and s.outputs[0].name == "flatten1"
    x = files["xs"][1]
    assert np.array_equal(s.score_numpy_array(x).output, Session(files["program"]).score_numpy_array(x).output)
    assert Session(load_pipeline(dense_pipe)).labels == LABELS                      # a PipelineFile object too


def test_a_segmented_program_in_a_pipeline(tmp_path):
    g = GraphBuilder("lrn_feat", seed=0, input_shape=(1, 3, 16, 16))
    x = g.relu(g.conv(g.input_name, 3, 8, 3, bias=True))
    x = g.op("LRN", [x], size=3, alpha=1e-4, beta=0.75, bias=1.0)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [g.relu(g.conv(x, 8, 8, 3, bias=True))])], axis=1)
    compile_with_host_fallback(g.finish(x, (1, 8), opset=13), "tiny", "wide").save(tmp_path / "seg.npuz")
    assert isinstance(load_program_bytes((tmp_path / "seg.npuz").read_bytes()), SegmentedProgram)
    head = MlpHead([(np.ones((5, 8), np.float32) * 0.1, np.zeros(5, np.float32)),
                    (np.eye(2, 5, dtype=np.float32), np.zeros(2, np.float32))])
    save_head(head, tmp_path / "mlp.npz")
    create_pipeline(tmp_path / "seg.npuz", tmp_path / "mlp.npz", ["a", "b"]).save(tmp_path / "seg.npup")
    s = Session(tmp_path / "seg.npup")
    assert isinstance(s.program, SegmentedProgram)
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    want, _ = Pipeline(Session(tmp_path / "seg.npuz"), load_head(tmp_path / "mlp.npz")).score_numpy_array(x)
    assert np.array_equal(s.score_numpy_array(x).output, want.reshape(1, -1))


# --- hostile and inconsistent files ----------------------------------------------------------------------------

def _members(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(path, members: dict, rehash: bool = True, reheader: bool = True) -> None:
    header = json.loads(members["header.json"])
    if rehash:
        for n, d in members.items():
            if n != "header.json":
                header["sha256"][n] = hashlib.sha256(d).hexdigest()
                header["sizes"][n] = len(d)
    if reheader:
        header["header_sha256"] = header_digest(header)
    members = dict(members, **{"header.json": json.dumps(header).encode()})
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)


def test_a_changed_byte_is_a_checksum_error(dense_pipe, tmp_path):
    m = _members(dense_pipe)
    prog = bytearray(m["program.npuz"])
    prog[len(prog) // 2] ^= 1
    _write(tmp_path / "a.npup", dict(m, **{"program.npuz": bytes(prog)}), rehash=False)
    with pytest.raises(ProgramFileError, match="checksum mismatch in program.npuz"):
        load_pipeline(tmp_path / "a.npup")
    head = bytearray(m["head.npz"])
    head[-30] ^= 1
    _write(tmp_path / "b.npup", dict(m, **{"head.npz": bytes(head)}), rehash=False)
    with pytest.raises(ProgramFileError, match="checksum mismatch in head.npz"):
        load_pipeline(tmp_path / "b.npup")
    raw = bytearray(dense_pipe.read_bytes())                        # a byte of the archive itself
    raw[200] ^= 0xFF
    (tmp_path / "c.npup").write_bytes(bytes(raw))
    with pytest.raises(ProgramFileError):
        load_pipeline(tmp_path / "c.npup")


def test_a_header_changed_without_its_checksum(dense_pipe, tmp_path):
    m = _members(dense_pipe)
    header = json.loads(m["header.json"])
    header["labels"] = ["cat", "dog", "wolf"]
    _write(tmp_path / "a.npup", dict(m, **{"header.json": json.dumps(header).encode()}), rehash=False,
           reheader=False)
    with pytest.raises(ProgramFileError, match=r"header.json checksum mismatch \(header_sha256\)"):
        load_pipeline(tmp_path / "a.npup")


@pytest.mark.parametrize("change, message", [
    (lambda h: h.update(labels="cat"), "header field labels: not a list"),
    (lambda h: h.update(labels=["a", 3]), r"header field labels\[1\]"),
    (lambda h: h.update(model_version=2), "header field model_version: 2 is not a string"),
    (lambda h: h.update(head="pickle"), "header field head: 'pickle' is none of"),
    (lambda h: h.update(head="onnx"), "members do not match the header"),
    (lambda h: h.update(version=2), "pipeline file version 2"),
    (lambda h: h.update(extra=1), "unknown extra"),
    (lambda h: h["sizes"].update({"head.npz": -1}), r"header field sizes.head.npz: -1"),
    (lambda h: h.update(preprocess={"crop": "big"}), "header field preprocess"),
])
def test_bad_header_fields_are_named(dense_pipe, tmp_path, change, message):
    m = _members(dense_pipe)
    header = json.loads(m["header.json"])
    change(header)
    _write(tmp_path / "a.npup", dict(m, **{"header.json": json.dumps(header).encode()}), rehash=False)
    with pytest.raises(ProgramFileError, match=message):
        load_pipeline(tmp_path / "a.npup")


def test_a_pickled_head_is_refused(files, dense_pipe, tmp_path):
    buf = io.BytesIO()
    np.savez(buf, w0=np.array([object()], dtype=object), b0=np.zeros(3, np.float32))
    m = _members(dense_pipe)
    _write(tmp_path / "a.npup", dict(m, **{"head.npz": buf.getvalue()}))
    with pytest.raises(ProgramFileError, match="head.npz: holds pickled objects"):
        load_pipeline(tmp_path / "a.npup")
    (tmp_path / "pickled.npz").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="pickle"):
        create_pipeline(files["program"], tmp_path / "pickled.npz")
    _write(tmp_path / "b.npup", dict(m, **{"head.npz": b"not a zip"}))
    with pytest.raises(ProgramFileError, match="head.npz: not a NumPy .npz"):
        load_pipeline(tmp_path / "b.npup")


@pytest.mark.parametrize("kw, message", [({"domain": "com.example"}, "outside the default ONNX domain"),
                                         ({"external": True}, "refers to external data")])
def test_hostile_onnx_heads_are_refused(files, dense_pipe, tmp_path, kw, message):
    bad = _onnx_head(load_head(files["head"]), **kw).SerializeToString()
    (tmp_path / "bad.onnx").write_bytes(bad)
    with pytest.raises(PipelineError, match=message):
        create_pipeline(files["program"], tmp_path / "bad.onnx", LABELS)
    # written by hand (create refuses it): the session refuses it before onnxruntime sees it
    pipe = PipelineFile(files["program"].read_bytes(), "onnx", bad, LABELS)
    pipe.save(tmp_path / "bad.npup")
    with pytest.raises(PipelineError, match=message):
        Session(tmp_path / "bad.npup")


def test_wrong_feature_count_and_label_count(files, tmp_path):
    save_head(DenseHead(np.zeros((3, files["features"] + 1), np.float32)), tmp_path / "wide.npz")
    with pytest.raises(PipelineError, match=f"the head takes {files['features'] + 1} features, but the "
                                            f"program's output 'flatten1' has {files['features']}"):
        create_pipeline(files["program"], tmp_path / "wide.npz")
    with pytest.raises(PipelineError, match="2 labels, but the head gives 3 classes"):
        create_pipeline(files["program"], files["head"], ["a", "b"])
    with pytest.raises(PipelineError, match="2 labels, but the head gives 3 classes"):
        create_pipeline(files["program"], files["onnx"], ["a", "b"])
    with pytest.raises(PipelineError, match=f"2 labels, but the program \\(no head\\) gives {files['features']}"):
        create_pipeline(files["program"], None, ["a", "b"])
    pipe = PipelineFile(files["program"].read_bytes(), "arrays", (tmp_path / "wide.npz").read_bytes())
    pipe.save(tmp_path / "wide.npup")                              # the format alone cannot know; the runtime does
    with pytest.raises(PipelineError, match="features"):
        Session(tmp_path / "wide.npup")


def test_cli_create_and_show(files, tmp_path, capsys):
    from npu_toolkit.cli import main

    out = tmp_path / "cli.npup"
    assert main(["pipeline", "create", "--program", str(files["program"]), "--head", str(files["head"]),
                 "--labels", str(files["labels"]), "--version", "2.0", "--name", "pets", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert Session(out).labels == LABELS and load_pipeline(out).version == "2.0"
    assert main(["pipeline", "show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pipeline: pets  version: 2.0" in text and "head: arrays (DenseHead)" in text
    assert f"{files['features']} features -> 3 classes" in text and "labels (3): cat, dog, fox" in text
    assert main(["pipeline", "create", "--program", str(files["program"]), "--head", str(files["onnx"]),
                 "-o", str(tmp_path / "o.npup")]) == 0
    capsys.readouterr()
    (tmp_path / "two.txt").write_text("a\nb\n")
    assert main(["pipeline", "create", "--program", str(files["program"]), "--head", str(files["head"]),
                 "--labels", str(tmp_path / "two.txt"), "-o", str(tmp_path / "bad.npup")]) == 2
    assert "2 labels, but the head gives 3 classes" in capsys.readouterr().err
    assert not (tmp_path / "bad.npup").exists()
    assert main(["pipeline", "show", str(files["program"])]) == 2
    assert "not a pipeline file" in capsys.readouterr().err
