"""``npu verify``: every materialised tensor against onnxruntime, and the checks that make it able to fail."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compiler.compile import compile_model
from compiler.lower import codegen
from compiler.models import nets
from compiler.models.graph import GraphBuilder
from compiler.verify import GRAPH_TOLERANCE, verify_model
from npu_toolkit.cli import main


def _onnx_outputs(model):
    return {o for n in model.graph.node for o in n.output}


@pytest.mark.parametrize("name", ["resnet_small", "vgg_small", "densenet_small", "mobile_small"])
def test_every_layer_of_the_small_networks(name):
    model = nets.MODELS[name]()
    report = verify_model(model, "tiny", "wide")
    assert report.ok, report.table()
    assert {c.tensor for c in report.layers} <= _onnx_outputs(model)
    steps = [nd for nd in report.compiled.plan.steps if nd.outputs[0] in _onnx_outputs(model)]
    assert len(report.layers) >= len(steps)                  # every compiled layer's output is compared
    for c in report.layers:
        assert c.exact and c.cosine > 0.99999 and c.graph_error < GRAPH_TOLERANCE
        assert c.max_rel_error == pytest.approx(c.expected_max_rel_error)


def _first_conv(size):
    g = GraphBuilder("first_conv", 3, input_shape=(1, 3, size, size))
    y = g.relu(g.conv(g.input_name, 3, 64, 3, bias=True))
    y = g.relu(g.conv(y, 64, 32, 3, bias=True))
    return g.finish(y, [1, 32, size, size])


def _recreate_the_phase_fault(monkeypatch):
    """Each column phase sweeps the spilled output on its own and stores whole bands, erasing the others."""
    sweep = codegen.Codegen._sweep
    monkeypatch.setattr(codegen, "_weight_sets", lambda passes, capacity: [[p] for p in passes])
    monkeypatch.setattr(codegen.Codegen, "_sweep", lambda self, *args, merge=False, **kw: sweep(self, *args, **kw))


@pytest.mark.fullsize
def test_a_lowering_fault_is_found_at_its_layer(monkeypatch):
    model = _first_conv(176)
    _recreate_the_phase_fault(monkeypatch)
    report = verify_model(model, "bw-s10", "wide")
    assert not report.ok
    first = report.first_departure
    assert first is report.layers[0] and not first.exact and first.cosine < 0.5
    assert "first departure" in report.table()


def test_a_compiled_graph_that_is_not_the_model_is_found():
    """Compile one model, verify it against another that differs in one weight of its second layer."""
    model = nets.vgg_small()
    compiled = compile_model(model, "tiny", "ms-fp9")
    other = onnx.ModelProto()
    other.CopyFrom(model)
    init = next(t for t in other.graph.initializer if t.name == "conv2.weight")
    w = numpy_helper.to_array(init).copy()
    w[3, 1, 1, 1] += 0.5
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    report = verify_model(other, "tiny", "ms-fp9", compiled=compiled)
    first = report.first_departure
    assert first is not None and first.tensor == "relu2"
    assert first.exact and first.graph_error > 100 * GRAPH_TOLERANCE        # same bits, another computation
    assert all(c.graph_error < GRAPH_TOLERANCE for c in report.layers if c.tensor != "relu2")


def test_narrow_precision_shows_where_the_error_enters():
    report = verify_model(nets.vgg_small(), "tiny", "mxfp4", [np.random.default_rng(2).standard_normal(
        (1, 3, 32, 32)).astype(np.float32)])
    assert report.ok                                  # bit-exact: the error is the format's, not a fault
    assert all(c.local_error > 1e-3 and c.local_cosine < 0.9999 for c in report.layers if c.tensor.startswith("relu"))
    assert report.layers[-1].cosine < 0.9999


@pytest.mark.fullsize
def test_cli_verify_exit_status_and_table(tmp_path, capsys, monkeypatch):
    path = tmp_path / "m.onnx"
    onnx.save(_first_conv(176), path)
    assert main(["verify", str(path), "--config", "bw-s10"]) == 0
    out = capsys.readouterr()
    assert "every layer meets its expectation" in out.out and "chelsea" in out.err
    _recreate_the_phase_fault(monkeypatch)
    assert main(["verify", str(path), "--config", "bw-s10"]) == 1
    assert "<-- first departure" in capsys.readouterr().out


def test_cli_verify_reads_image_files(tmp_path, capsys):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    img = tmp_path / "china.jpg"
    Image.fromarray(load_sample_image("china.jpg")).save(img)
    model = tmp_path / "m.onnx"
    onnx.save(nets.resnet_small(), model)
    assert main(["verify", str(model), "--config", "tiny", "--precision", "ms-fp9", "--image", str(img)]) == 0
    assert "1 input(s): every layer" in capsys.readouterr().out
    assert main(["verify", str(model), "--config", "tiny", "--image", str(tmp_path / "none.jpg")]) == 2
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert main(["verify", str(model), "--config", "tiny", "--image", str(tmp_path / "bad.jpg")]) == 2
    err = capsys.readouterr().err
    assert "none.jpg" in err and "bad.jpg: not a decodable image" in err
