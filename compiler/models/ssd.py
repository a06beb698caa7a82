"""SSD (single-shot multibox detector) with a VGG-16 backbone, as ONNX graphs with seeded synthetic weights.

``ssd300_vgg16`` is SSD300 (Liu et al., 2016, in the layout of the
reference ``ssd.pytorch`` implementation): VGG-16 conv1_1 .. conv5_3 with
ReLUs, max pools 2x2/2 (pool3 with ``ceil_mode=1``: 75 -> 38) and a 3x3/1
pad-1 pool5; fc6 as a 3x3 convolution with dilation 6 (1024 channels) and
fc7 as a 1x1 (1024), both with ReLU; the extra layers conv8_1 .. conv11_2
(1x1 then 3x3, stride 2 pad 1 for conv8_2 / conv9_2, pad 0 for conv10_2 /
conv11_2, all with ReLU); the L2 normalisation of conv4_3 with a learned
per-channel scale (initialised to 20), as torch exports it:
``x / (sqrt(sum(x ** 2 over channels)) + 1e-10) * scale``.  A 3x3 pad-1
``loc`` convolution (anchors x 4 channels) and a 3x3 pad-1 ``conf``
convolution (anchors x num_classes) on each of the six source maps
(L2Norm(conv4_3) 38 x 38, fc7 19, conv8_2 10, conv9_2 5, conv10_2 3,
conv11_2 1; 4, 6, 6, 6, 4, 4 anchors per cell) are the graph's outputs, the
raw NCHW head tensors ``loc0`` .. ``loc5`` then ``conf0`` .. ``conf5``: the
reordering, softmax, box decoding and non-maximum suppression run on the
host (:mod:`npu.detection`).

``ssd_small`` has the same structure with an eighth of the channels on a
100 x 100 input (pool3 rounds 25 up to 13, fc6 has dilation 2) and four
source maps 13, 6, 3, 1 (conv8_2 stride 2, conv9_2 pad 0), for fast tests.

Weights are He-normal with small biases (every convolution has a bias, as
in VGG and SSD).  The model's ``metadata_props`` carry ``preprocess`` (the
image recipe, keys of ``npu.preprocess.Preprocess``), ``labels`` (the 21
PASCAL VOC class names, background first, when ``num_classes`` is 21) and
``detection`` (``npu.detection.SSDConfig.to_dict()``: the priors and
detection settings the host needs).  ``headless=True`` leaves the heads out:
the outputs are the source maps ``source0`` .. (the featurizer).
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper

from npu.detection import VOC_LABELS, SSDConfig

from .graph import GraphBuilder
from .graph import cached as _cached

#: ImageNet-style input recipe (RGB, mean subtracted, about 1 / std): the input is resized (shorter side) to
#: the network's side and centre-cropped to a square.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_SCALE = 0.017
#: The L2Norm epsilon and initial scale of ssd.pytorch.
L2NORM_EPS = 1e-10
L2NORM_SCALE = 20.0

#: VGG-16 conv1 .. conv5: (channels, convolutions) per block.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
#: SSD300's extra layers: (1x1 channels, 3x3 channels, 3x3 stride, 3x3 padding), conv8 .. conv11.
SSD300_EXTRAS = ((256, 512, 2, 1), (128, 256, 2, 1), (128, 256, 1, 0), (128, 256, 1, 0))


def preprocess_recipe(side: int) -> dict:
    """The input recipe of an SSD with a ``side`` x ``side`` input (keys of ``npu.preprocess.Preprocess``)."""
    return {"crop": side, "resize": side, "mean": list(IMAGENET_MEAN), "scale": IMAGENET_SCALE,
            "channel_order": "RGB"}


def _conv(g: GraphBuilder, x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0,
          dilation: int = 1, relu: bool = True) -> str:
    """A k x k convolution named ``name`` with He-normal weights and a small bias, optionally followed by ReLU."""
    w = g.rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(np.sqrt(2.0 / (cin * k * k)))
    b = 0.01 * g.rng.standard_normal(cout)
    attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
    if dilation != 1:
        attrs["dilations"] = [dilation, dilation]
    g.nodes.append(helper.make_node("Conv", [x, g.const(f"{name}.weight", w), g.const(f"{name}.bias", b)], [name],
                                    name=name, **attrs))
    if not relu:
        return name
    g.nodes.append(helper.make_node("Relu", [name], [f"{name}.relu"], name=f"{name}.relu"))
    return f"{name}.relu"


def _node(g: GraphBuilder, op: str, inputs: list[str], name: str, **attrs) -> str:
    g.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
    return name


def _l2norm(g: GraphBuilder, x: str, channels: int, opset: int) -> str:
    """ssd.pytorch's L2Norm as torch exports it: Pow, ReduceSum over channels (keepdims), Sqrt, Add eps, Div,
    Mul by the (1, C, 1, 1) scale."""
    sq = _node(g, "Pow", [x, g.const("l2norm.exponent", np.float32(2.0))], "l2norm.pow")
    if opset >= 13:
        total = _node(g, "ReduceSum", [sq, g.const("l2norm.axes", np.array([1], np.int64), np.int64)],
                      "l2norm.sum", keepdims=1)
    else:
        total = _node(g, "ReduceSum", [sq], "l2norm.sum", axes=[1], keepdims=1)
    norm = _node(g, "Add", [_node(g, "Sqrt", [total], "l2norm.sqrt"), g.const("l2norm.eps", np.float32(L2NORM_EPS))],
                 "l2norm.norm")
    y = _node(g, "Div", [x, norm], "l2norm.div")
    scale = np.full((1, channels, 1, 1), L2NORM_SCALE, np.float32)
    return _node(g, "Mul", [y, g.const("l2norm.weight", scale)], "l2norm")


def _pool_side(side: int, k: int, stride: int, pad: int, ceil: bool = False) -> int:
    span = side + 2 * pad - k
    return (-(-span // stride) if ceil else span // stride) + 1


def _conv_side(side: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    return (side + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _finish(g: GraphBuilder, outputs: dict[str, tuple], opset: int, metadata: dict) -> onnx.ModelProto:
    """The checked model with the given (name -> shape) outputs, in order, and JSON ``metadata_props``."""
    values = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs.items()]
    graph = helper.make_graph(g.nodes, g.name, [g.input], values, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="npu-toolkit model builders")
    helper.set_model_props(model, {k: json.dumps(v) for k, v in metadata.items()})
    onnx.checker.check_model(model)
    return model


def _ssd(name: str, det: SSDConfig, seed: int, opset: int, headless: bool, blocks, fc: int, extras,
         dilation: int) -> onnx.ModelProto:
    """SSD on VGG: ``blocks`` (channels, convolutions) for conv1 .. conv5, fc6 / fc7 of ``fc`` channels (fc6
    with ``dilation``), ``extras`` (1x1 channels, 3x3 channels, stride, pad) after fc7; heads per ``det``."""
    side = det.image_size
    g = GraphBuilder(name, seed, input_shape=(1, 3, side, side))
    x, cin = g.input_name, 3
    sources: list[tuple[str, int, int]] = []                    # (tensor, channels, side)
    for b, (cout, count) in enumerate(blocks, start=1):
        for i in range(1, count + 1):
            x, cin = _conv(g, x, f"conv{b}_{i}", cin, cout, 3, pad=1), cout
        if b == 4:                                              # conv4_3 -> L2Norm: the first source
            sources.append((_l2norm(g, x, cin, opset), cin, side))
        if b < 5:                                               # pool1 .. pool4 2x2/2; pool3 rounds up
            ceil = b == 3
            x = _node(g, "MaxPool", [x], f"pool{b}", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=int(ceil))
            side = _pool_side(side, 2, 2, 0, ceil)
    x = _node(g, "MaxPool", [x], "pool5", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    x = _conv(g, x, "fc6", cin, fc, 3, pad=dilation, dilation=dilation)
    x, cin = _conv(g, x, "fc7", fc, fc, 1), fc
    sources.append((x, cin, side))
    for e, (mid, cout, stride, pad) in enumerate(extras, start=8):
        x = _conv(g, x, f"conv{e}_1", cin, mid, 1)
        x, cin = _conv(g, x, f"conv{e}_2", mid, cout, 3, stride, pad), cout
        side = _conv_side(side, 3, stride, pad)
        sources.append((x, cin, side))
    sides = tuple(s for _, _, s in sources)
    if sides != det.feature_maps:
        raise ValueError(f"{name}: the source maps are {sides}, but the SSD configuration has feature_maps "
                         f"{det.feature_maps}")
    metadata = {"preprocess": preprocess_recipe(det.image_size)}
    if headless:
        outputs = {}
        for k, (t, c, s) in enumerate(sources):
            outputs[_node(g, "Identity", [t], f"source{k}")] = (1, c, s, s)
        return _finish(g, outputs, opset, metadata)
    locs, confs = {}, {}
    for k, ((t, c, s), anchors) in enumerate(zip(sources, det.anchors_per_location)):
        loc, conf = det.loc_outputs[k], det.conf_outputs[k]
        locs[_conv(g, t, loc, c, anchors * 4, 3, pad=1, relu=False)] = (1, anchors * 4, s, s)
        confs[_conv(g, t, conf, c, anchors * det.num_classes, 3, pad=1, relu=False)] = \
            (1, anchors * det.num_classes, s, s)
    if det.num_classes == len(VOC_LABELS):
        metadata["labels"] = list(VOC_LABELS)
    metadata["detection"] = det.to_dict()
    return _finish(g, {**locs, **confs}, opset, metadata)


@_cached
def ssd300_vgg16(seed: int = 0, num_classes: int = 21, opset: int = 13, headless: bool = False) -> onnx.ModelProto:
    """SSD300 with a VGG-16 backbone, input ``data`` (1, 3, 300, 300); outputs the 12 NCHW head tensors
    ``loc0`` .. ``loc5`` (1, anchors x 4, side, side) and ``conf0`` .. ``conf5`` (1, anchors x num_classes,
    side, side) on maps of side 38, 19, 10, 5, 3, 1 (8732 priors: ``npu.detection.SSDConfig.ssd300``)."""
    return _ssd("ssd300_vgg16", SSDConfig.ssd300(num_classes), seed, opset, headless, VGG16_BLOCKS, 1024,
                SSD300_EXTRAS, 6)


@_cached
def ssd_small(seed: int = 0, num_classes: int = 21, opset: int = 13, headless: bool = False) -> onnx.ModelProto:
    """A small SSD of the same structure (8 .. 64 channels, fc6 / fc7 128, dilation 2) on (1, 3, 100, 100);
    outputs ``loc0`` .. ``loc3`` and ``conf0`` .. ``conf3`` on maps 13, 6, 3, 1 (950 priors:
    ``npu.detection.SSDConfig.small``)."""
    blocks = tuple((c // 8, n) for c, n in VGG16_BLOCKS)
    return _ssd("ssd_small", SSDConfig.small(num_classes), seed, opset, headless, blocks, 128,
                ((32, 64, 2, 1), (32, 64, 1, 0)), 2)
