"""Every layer of the full-size ResNet-50 and ResNet-152 on real photographs (see test_verify_networks.py)."""
import pytest

from test_verify_networks import verify_on_photos

pytestmark = pytest.mark.fullsize


@pytest.mark.parametrize("name", ["resnet50", "resnet152"])
def test_every_layer_on_photographs(name):
    verify_on_photos(name)
