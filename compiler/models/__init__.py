"""Reference networks built as ONNX graphs with seeded synthetic weights (and one trained network)."""
from .nets import (MODELS, densenet121, efficientnet_lite0, mobile_small, resnet50, resnet152, resnet_small, vgg16,
                   vgg_small)

__all__ = ["MODELS", "densenet121", "efficientnet_lite0", "mobile_small", "resnet50", "resnet152", "resnet_small", "vgg16",
           "vgg_small"]
