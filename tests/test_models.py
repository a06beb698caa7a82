"""Reference networks: valid ONNX, run in onnxruntime, the featurizers' sizes (2048/4096/1024), bounded activations."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compiler.models import densenet121, resnet50, resnet152, resnet_small, vgg16, vgg_small


def run(model, seed=0):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
    return sess.run(None, {model.graph.input[0].name: x})[0]


@pytest.mark.parametrize("build, classes", [(resnet_small, 10), (vgg_small, 10)])
def test_small_models_run_and_depend_on_their_seed(build, classes):
    a, b = build(seed=0), build(seed=1)
    ya, yb = run(a), run(b)
    assert ya.shape == (1, classes) and np.isfinite(ya).all()
    assert not np.allclose(ya, yb)                                   # seeded weights differ
    assert np.array_equal(run(build(seed=0)), ya)                    # and are reproducible


@pytest.mark.fullsize
@pytest.mark.parametrize("build, features", [(resnet50, 2048), (densenet121, 1024)])
def test_full_size_featurizers(build, features):
    model = build(headless=True)
    y = run(model)
    assert y.shape == (1, features) and np.isfinite(y).all()
    assert 0 < np.abs(y).max() < 100                                  # activations stay O(1)


@pytest.mark.fullsize
def test_resnet50_classifier_is_bounded():
    y = run(resnet50())
    assert y.shape == (1, 1000) and np.isfinite(y).all() and 0 < np.abs(y).max() < 100


@pytest.mark.fullsize
def test_vgg16_headless_gives_fc7():
    model = vgg16(headless=True)
    assert model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 4096
    y = run(model)
    assert y.shape == (1, 4096) and np.isfinite(y).all() and (y >= 0).all()    # fc7 after ReLU


@pytest.mark.fullsize
def test_resnet152_is_valid_and_shape_infers():
    model = resnet152()
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    assert sum(n.op_type == "Conv" for n in model.graph.node) == 155          # 151 + 4 projections
    assert inferred.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 1000


def test_command_line_writes_a_model(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "r.onnx"
    proc = subprocess.run([sys.executable, "-m", "compiler.models", "resnet_small", "-o", str(out), "--seed", "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(run(onnx.load(str(out))), run(resnet_small(seed=3)))
