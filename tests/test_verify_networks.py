"""Every layer of the full-size reference networks and of the trained EfficientNet-Lite0, on real photographs.

Each network is compiled for bw-s10 at ``wide`` and run on two photographs
bundled with scikit-image, preprocessed with the recipe stored in its
program; ``verify_model`` compares every tensor the program materialises
with onnxruntime and with the numpy evaluation of the numerics contract.
(ResNet-50 and ResNet-152 are in test_verify_resnets.py, so the two files
run side by side.)
"""
import pytest

from compiler.compile import compile_model
from compiler.models import nets
from compiler.models.photos import load_photos
from compiler.verify import verify_model

pytestmark = pytest.mark.fullsize


def verify_on_photos(name: str, config: str = "bw-s10"):
    """``verify_model`` of the named network on chelsea and coffee, asserting every layer."""
    model = nets.MODELS[name]()
    compiled = compile_model(model, config, "wide")
    recipe = compiled.program.metadata.preprocess
    inputs = [recipe.array(photo) for _, photo in load_photos(["chelsea", "coffee"])]
    report = verify_model(model, config, "wide", inputs, compiled=compiled)
    assert report.ok, report.table()
    assert len(report.layers) >= len([nd for nd in compiled.plan.steps if not nd.name.endswith(".rows")]) - 1
    features = report.layers[:-1]                      # the logits of a calibrated head cancel strongly
    assert min(c.cosine for c in features) > 0.9999, report.table()
    assert all(c.exact for c in report.layers)
    return report


@pytest.mark.parametrize("name", ["vgg16", "densenet121", "efficientnet_lite0"])
def test_every_layer_on_photographs(name):
    verify_on_photos(name)


def test_the_trained_network_keeps_its_recipe_and_labels():
    compiled = compile_model(nets.efficientnet_lite0(), "bw-s10", "mxfp8")
    meta = compiled.program.metadata
    assert meta.preprocess.mean == (127.0, 127.0, 127.0) and meta.preprocess.scale == 1 / 128
    assert len(meta.labels) == 1000 and meta.labels[967] == "espresso"
