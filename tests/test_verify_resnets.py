"""Every layer of the full-size ResNet-50 and ResNet-152 on real photographs (see test_verify_networks.py)."""
import pytest

from test_verify_networks import verify_on_photos

pytestmark = pytest.mark.fullsize


@pytest.mark.parametrize("name", ["resnet50", "resnet152"])
def test_every_layer_on_photographs(name):
    verify_on_photos(name)


def test_every_layer_on_the_n64_machine():
    """ResNet-50 on bw-s10-n64w16: N = 64 tiles, and the stem's one-phase input strips."""
    verify_on_photos("resnet50", "bw-s10-n64w16")
