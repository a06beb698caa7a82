"""compiler.models.ssd: the SSD builders give valid ONNX whose head outputs are what npu.detection expects."""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compiler.models import nets
from compiler.models.ssd import ssd300_vgg16, ssd_small
from npu.detection import VOC_LABELS, Detection, SSDConfig, detect, flatten_heads
from npu.preprocess import Preprocess

ort = pytest.importorskip("onnxruntime")


def _session(model: onnx.ModelProto):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _props(model: onnx.ModelProto) -> dict:
    return {p.key: json.loads(p.value) for p in model.metadata_props}


def _output_shapes(model: onnx.ModelProto) -> dict:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return {o.name: tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in inferred.graph.output}


def _image(side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side + 17, side + 5, 3), dtype=np.uint8)


def _nodes(model: onnx.ModelProto) -> dict:
    return {n.name: n for n in model.graph.node}


def _attr(node, name):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def test_small_model_runs_and_detects():
    model = ssd_small()
    onnx.checker.check_model(model, full_check=True)
    cfg = SSDConfig.from_dict(_props(model)["detection"])
    assert cfg == SSDConfig.small()
    assert [o.name for o in model.graph.output] == list(cfg.output_names)
    assert _output_shapes(model) == cfg.head_shapes()
    props = _props(model)
    assert props["labels"] == list(VOC_LABELS) and props["labels"][0] == "background"
    recipe = Preprocess.for_input(100).replace(**props["preprocess"])
    x = recipe.array(_image(100))
    assert x.shape == (1, 3, 100, 100)

    sess = _session(model)
    outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))
    assert {k: v.shape for k, v in outputs.items()} == cfg.head_shapes()
    assert all(np.isfinite(v).all() and v.std() > 0.1 for v in outputs.values())
    loc, conf = flatten_heads(outputs, cfg)
    assert loc.shape == (950, 4) and conf.shape == (950, 21)
    found = detect(outputs, cfg)
    assert 0 < len(found) <= cfg.top_k
    assert all(isinstance(d, Detection) and 1 <= d.label <= 20 for d in found)
    assert all(0 <= v <= 1 for d in found for v in d.box)
    assert all(d.box[0] <= d.box[2] and d.box[1] <= d.box[3] for d in found)
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
    # another image, other detections: the outputs depend on the input
    other = dict(zip(outputs, sess.run(None, {sess.get_inputs()[0].name: recipe.array(_image(100, 1))})))
    assert detect(other, cfg) != found


def test_small_model_structure():
    model = ssd_small()
    ops = [n.op_type for n in model.graph.node]
    assert not {"Transpose", "Concat", "Softmax", "Reshape", "Flatten"} & set(ops)
    nodes = _nodes(model)
    assert _attr(nodes["pool3"], "ceil_mode") == 1 and _attr(nodes["pool2"], "ceil_mode") == 0
    assert _attr(nodes["pool5"], "kernel_shape") == [3, 3] and _attr(nodes["pool5"], "strides") == [1, 1]
    assert _attr(nodes["fc6"], "dilations") == [2, 2] and _attr(nodes["fc6"], "pads") == [2, 2, 2, 2]
    assert ops.count("Conv") == 13 + 2 + 2 * 2 + 2 * 4                  # VGG, fc6 / fc7, two extras, 4 x 2 heads
    assert nodes["l2norm.sum"].op_type == "ReduceSum" and len(nodes["l2norm.sum"].input) == 2      # opset 13 axes
    assert [o.version for o in model.opset_import] == [13]
    older = ssd_small(opset=11)
    assert _attr(_nodes(older)["l2norm.sum"], "axes") == [1]
    assert _output_shapes(older) == SSDConfig.small().head_shapes()


def test_l2norm_matches_numpy():
    """The L2Norm of conv4_3, read from onnxruntime beside its input: x / (||x|| over channels + 1e-10) * 20."""
    model = ssd_small()
    for name in ("conv4_3.relu", "l2norm"):
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = _session(model)
    x = Preprocess.for_input(100).replace(**_props(model)["preprocess"]).array(_image(100))
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"data": x})))
    feat = got["conv4_3.relu"].astype(np.float64)
    assert feat.shape == (1, 64, 13, 13)
    want = feat / (np.sqrt((feat ** 2).sum(axis=1, keepdims=True)) + 1e-10) * 20
    assert np.allclose(got["l2norm"], want, rtol=1e-5, atol=1e-5)
    scale = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}["l2norm.weight"]
    assert scale.shape == (1, 64, 1, 1) and (scale == 20).all()


def test_seeds_and_classes():
    a, b, c = ssd_small(seed=0), ssd_small(seed=0), ssd_small(seed=1)
    assert a.SerializeToString() == b.SerializeToString()
    def weights(m):
        return numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "conf0.weight"))

    assert not np.array_equal(weights(a), weights(c))
    five = ssd_small(num_classes=5)
    cfg = SSDConfig.from_dict(_props(five)["detection"])
    assert cfg.num_classes == 5 and "labels" not in _props(five)
    assert _output_shapes(five) == cfg.head_shapes()


def test_headless_outputs_the_source_maps():
    model = ssd_small(headless=True)
    assert _output_shapes(model) == {"source0": (1, 64, 13, 13), "source1": (1, 128, 6, 6),
                                     "source2": (1, 64, 3, 3), "source3": (1, 64, 1, 1)}
    assert "detection" not in _props(model)


def test_registered_for_the_command_line(tmp_path):
    from compiler.models.__main__ import main

    assert {"ssd-vgg", "ssd-small"} <= set(nets.MODELS) and {"ssd-vgg", "ssd-small"} <= nets.DETECTORS
    assert nets.MODELS["ssd-small"]().SerializeToString() == ssd_small().SerializeToString()
    out = tmp_path / "ssd.onnx"
    assert main(["ssd-small", "-o", str(out), "--seed", "3"]) == 0
    assert onnx.load(str(out)).SerializeToString() == ssd_small(seed=3).SerializeToString()


def test_ssd300_graph_shapes():
    """The full-size graph, by shape inference only: the heads the SSD300 configuration implies, 8732 priors."""
    model = ssd300_vgg16()
    cfg = SSDConfig.from_dict(_props(model)["detection"])
    assert cfg == SSDConfig.ssd300()
    shapes = _output_shapes(model)
    assert list(shapes) == [f"loc{i}" for i in range(6)] + [f"conf{i}" for i in range(6)]
    assert shapes == cfg.head_shapes()
    sides = [38, 19, 10, 5, 3, 1]
    anchors = [4, 6, 6, 6, 4, 4]
    assert [shapes[f"loc{k}"] for k in range(6)] == [(1, a * 4, s, s) for a, s in zip(anchors, sides)]
    assert [shapes[f"conf{k}"] for k in range(6)] == [(1, a * 21, s, s) for a, s in zip(anchors, sides)]
    assert sum(c // 4 * h * w for _, c, h, w in (shapes[f"loc{k}"] for k in range(6))) == 8732
    assert sum(c // 21 * h * w for _, c, h, w in (shapes[f"conf{k}"] for k in range(6))) == 8732
    nodes = _nodes(model)
    assert _attr(nodes["fc6"], "dilations") == [6, 6] and _attr(nodes["fc6"], "pads") == [6] * 4
    assert _attr(nodes["pool3"], "ceil_mode") == 1
    inferred = onnx.shape_inference.infer_shapes(model)
    inner = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in inferred.graph.value_info}
    assert inner["pool3"] == (1, 256, 38, 38) and inner["l2norm"] == (1, 512, 38, 38)
    assert inner["fc7.relu"] == (1, 1024, 19, 19) and inner["conv11_2.relu"] == (1, 256, 1, 1)
    conv_weights = sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.name.endswith(".weight"))
    assert 25_000_000 < conv_weights < 28_000_000                          # SSD300-VGG16 has about 26.3 M
    assert _props(model)["preprocess"]["crop"] == 300


@pytest.mark.fullsize
def test_ssd300_runs_and_detects():
    model = ssd300_vgg16()
    cfg = SSDConfig.ssd300()
    sess = _session(model)
    x = Preprocess.for_input(300).replace(**_props(model)["preprocess"]).array(_image(300))
    outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"data": x})))
    assert {k: v.shape for k, v in outputs.items()} == cfg.head_shapes()
    loc, conf = flatten_heads(outputs, cfg)
    assert loc.shape == (8732, 4) and conf.shape == (8732, 21) and np.isfinite(conf).all()
    found = detect(outputs, cfg)
    assert 0 < len(found) <= 200
