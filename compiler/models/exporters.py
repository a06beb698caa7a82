"""Small CNNs in the shapes real exporters write, for testing the ONNX front end.

Each builder makes the same kind of network (32x32 RGB input, a few
conv / batch-norm / ReLU layers, a residual add, pooling and a classifier,
seeded numpy weights) but spells it the way one exporter does:

* :func:`torch_style` - the TorchScript-based ``torch.onnx.export`` of
  PyTorch 2.x: opset 17 or 18, a dynamic ``batch_size`` dimension,
  ``/module/path/Op`` node names, ``Constant`` nodes, ``Identity`` nodes on
  shared weights, ``x.view(x.size(0), -1)`` traced as
  Shape -> Gather -> Unsqueeze -> Concat -> Reshape, a ``Gemm`` classifier
  and the weights in an external ``model.onnx.data`` file.
* :func:`caffe2_style` - the Caffe2 / ONNX model zoo files of 2018: opset 8,
  IR version 3 with every initializer also listed as a graph input,
  ``BatchNormalization`` with ``spatial=1``, ``Sum`` for the residual join,
  inference ``Dropout``, a ``MatMul`` + ``Add`` classifier and a final
  ``Softmax``.
* :func:`unsupported_model` / :func:`dynamic_size_model` - models the
  compiler must refuse, with every reason listed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Side of the square input images.
INPUT_HW = 32
#: Classes of the classifiers.
NUM_CLASSES = 10


class _Weights:
    """Seeded initializers: He-normal convolution weights and sane batch-norm statistics."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.inits: list[onnx.TensorProto] = []

    def add(self, name: str, array, dtype=np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def conv(self, name: str, cin: int, cout: int, k: int) -> str:
        w = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        return self.add(name, w)

    def vector(self, name: str, n: int, scale: float = 0.1, offset: float = 0.0) -> str:
        return self.add(name, offset + scale * self.rng.standard_normal(n))

    def bn(self, prefix: str, c: int, gamma_scale: float = 1.0, sep: str = ".") -> list[str]:
        """scale, bias, mean, var initializers named ``prefix{sep}weight`` etc. (torch's names)."""
        gamma = gamma_scale * (1.0 + 0.1 * self.rng.standard_normal(c))
        beta = 0.1 * self.rng.standard_normal(c)
        mean = 0.1 * self.rng.standard_normal(c)
        var = 1.0 + 0.2 * np.abs(self.rng.standard_normal(c))
        return [self.add(f"{prefix}{sep}{p}", v) for p, v in
                (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var))]

    def dense(self, name: str, rows: int, cols: int) -> str:
        return self.add(name, self.rng.standard_normal((rows, cols)) / np.sqrt(max(rows, cols)))


# --------------------------------------------------------------------------------------------------------------
# torch.onnx (TorchScript exporter, PyTorch 2.x)
# --------------------------------------------------------------------------------------------------------------

def _param(scope: str) -> str:
    """Torch's parameter prefix for the module at node scope ``scope``: "/layer1/layer1.0/conv1" -> "layer1.0.conv1"."""
    parts = scope.strip("/").split("/")
    return parts[0] if len(parts) == 1 else ".".join(parts[1:])


def torch_style_model(opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """The in-memory ModelProto :func:`torch_style` saves (weights inline, not yet external).

    A ResNet-like net: conv1/bn1/relu, a 3x3/2 max pool, a basic block with
    an identity shortcut and one with a strided 1x1 downsample shortcut,
    global average pooling, ``x.view(x.size(0), -1)`` and ``fc``.  With
    ``opset`` 17 the pooling is ``GlobalAveragePool`` (``nn.AdaptiveAvgPool2d``);
    with 18 it is ``ReduceMean`` with its axes as a second input
    (``x.mean(dim=(2, 3), keepdim=True)``, as opset 18 spells it).
    """
    if opset not in (17, 18):
        raise ValueError(f"torch-style models are written with opset 17 or 18, not {opset}")
    w = _Weights(seed)
    nodes: list[onnx.NodeProto] = []

    def node(op: str, scope: str, inputs: list[str], **attrs) -> str:
        name = f"{scope}/{op}"
        out = f"{name}_output_0"
        nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv_bn(x: str, scope: str, module: str, cin: int, cout: int, k: int, stride: int = 1,
                relu: str | None = None, weight: str | None = None, gamma_scale: float = 1.0) -> str:
        conv_scope = f"{scope}/{module}"
        wname = weight or w.conv(f"{_param(conv_scope)}.weight", cin, cout, k)
        y = node("Conv", conv_scope, [x, wname], dilations=[1, 1], group=1, kernel_shape=[k, k],
                 pads=[k // 2] * 4, strides=[stride, stride])
        bn_scope = f"{scope}/{module.replace('conv', 'bn')}"
        params = w.bn(_param(bn_scope), cout, gamma_scale)
        y = node("BatchNormalization", bn_scope, [y, *params], epsilon=1e-5, momentum=0.9)
        return node("Relu", f"{scope}/{relu}", [y]) if relu else y

    x = "input"
    # stem: 3 -> 16, 32x32, then max pool to 16x16 (padded, after the ReLU)
    x = conv_bn(x, "", "conv1", 3, 16, 3, relu="relu")
    x = node("MaxPool", "/maxpool", [x], ceil_mode=0, dilations=[1, 1], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
             strides=[2, 2])
    # layer1.0: basic block, identity shortcut; conv2's weight reaches the Conv through an Identity
    # (what the exporter writes for a parameter it also uses elsewhere)
    scope = "/layer1/layer1.0"
    y = conv_bn(x, scope, "conv1", 16, 16, 3, relu="relu")
    shared = w.conv("layer1.0.conv2.weight", 16, 16, 3)
    nodes.append(helper.make_node("Identity", [shared], ["onnx::Conv_91"], name="Identity_0"))
    y = conv_bn(y, scope, "conv2", 16, 16, 3, weight="onnx::Conv_91", gamma_scale=0.5)
    y = node("Add", scope, [y, x])
    x = node("Relu", f"{scope}/relu_1", [y])
    # layer2.0: 16 -> 32, stride 2, with a 1x1 downsample shortcut
    scope = "/layer2/layer2.0"
    y = conv_bn(x, scope, "conv1", 16, 32, 3, stride=2, relu="relu")
    y = conv_bn(y, scope, "conv2", 32, 32, 3, gamma_scale=0.5)
    sc = node("Conv", f"{scope}/downsample/downsample.0", [x, w.conv("layer2.0.downsample.0.weight", 16, 32, 1)],
              dilations=[1, 1], group=1, kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[2, 2])
    sc = node("BatchNormalization", f"{scope}/downsample/downsample.1",
              [sc, *w.bn("layer2.0.downsample.1", 32)], epsilon=1e-5, momentum=0.9)
    y = node("Add", scope, [y, sc])
    x = node("Relu", f"{scope}/relu_1", [y])
    # pooling to 32 x 1 x 1
    if opset >= 18:
        nodes.append(helper.make_node("Constant", [], ["/avgpool/Constant_output_0"], name="/avgpool/Constant",
                                      value=numpy_helper.from_array(np.array([2, 3], np.int64))))
        x = node("ReduceMean", "/avgpool", [x, "/avgpool/Constant_output_0"], keepdims=1)
    else:
        x = node("GlobalAveragePool", "/avgpool", [x])
    # x.view(x.size(0), -1): Shape -> Gather(0) -> Unsqueeze -> Concat([n, -1]) -> Reshape
    shape = node("Shape", "", [x])
    nodes.append(helper.make_node("Constant", [], ["/Constant_output_0"], name="/Constant",
                                  value=numpy_helper.from_array(np.array(0, np.int64))))
    n = node("Gather", "", [shape, "/Constant_output_0"], axis=0)
    nodes.append(helper.make_node("Constant", [], ["/Constant_1_output_0"], name="/Constant_1",
                                  value=numpy_helper.from_array(np.array([0], np.int64))))
    n = node("Unsqueeze", "", [n, "/Constant_1_output_0"])
    minus1 = w.add("onnx::Concat_120", [-1], np.int64)
    target = node("Concat", "", [n, minus1], axis=0)
    x = node("Reshape", "", [x, target])
    # fc: Gemm with transB; its bias also reaches it through an Identity
    bias = w.vector("fc.bias", NUM_CLASSES, 0.05)
    nodes.append(helper.make_node("Identity", [bias], ["onnx::Gemm_121"], name="Identity_1"))
    nodes.append(helper.make_node("Gemm", [x, w.dense("fc.weight", NUM_CLASSES, 32), "onnx::Gemm_121"], ["output"],
                                  name="/fc/Gemm", alpha=1.0, beta=1.0, transB=1))

    graph = helper.make_graph(
        nodes, "main_graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 3, INPUT_HW, INPUT_HW])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", NUM_CLASSES])],
        w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8,
                              producer_name="pytorch", producer_version="2.4.0")
    onnx.checker.check_model(model)
    return model


def torch_style(path_dir, opset: int = 17, seed: int = 0) -> Path:
    """Write a torch.onnx-style model to ``path_dir/model.onnx`` + ``model.onnx.data``; returns the .onnx path.

    Mimics ``torch.onnx.export(model, x, "model.onnx", opset_version=opset,
    dynamic_axes={"input": {0: "batch_size"}, "output": {0: "batch_size"}})``
    of a small ResNet saved with its weights as external data (every
    initializer, down to the int64 ``[-1]`` of the flatten, in one file).
    See :func:`torch_style_model` for the graph.
    """
    model = torch_style_model(opset, seed)
    path_dir = Path(path_dir)
    path_dir.mkdir(parents=True, exist_ok=True)
    path = path_dir / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    return path


# --------------------------------------------------------------------------------------------------------------
# Caffe2 / ONNX model zoo (2018)
# --------------------------------------------------------------------------------------------------------------

def caffe2_style(seed: int = 1) -> onnx.ModelProto:
    """A small CNN as the Caffe2-converted ONNX model zoo files spell it.

    Opset 8 and IR version 3: every initializer is also a graph input,
    ``BatchNormalization`` (version 7) carries ``spatial=1``, ``Dropout``
    (version 7) has only ``ratio`` (``is_test`` was removed in opset 7).
    Layers: conv1 (with bias) -> BN -> Relu -> 3x3/2 MaxPool with pads after
    the Relu; a residual block joined by ``Sum``; a BatchNormalization with
    no convolution before it (pre-activation) -> Relu; a 2x2 AveragePool; a
    1x1 conv -> Relu; an 8x8 AveragePool as global pooling; Dropout;
    Flatten; ``MatMul`` + ``Add`` classifier and ``Softmax``.
    """
    w = _Weights(seed)
    nodes: list[onnx.NodeProto] = []

    def op(op_type: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op_type, inputs, [out], **attrs))      # caffe2 left nodes unnamed
        return out

    def bn(x: str, name: str, c: int, gamma_scale: float = 1.0) -> str:
        params = w.bn(name, c, gamma_scale, sep="_")
        return op("BatchNormalization", [x, *params], f"{name}_Y", epsilon=1e-5, momentum=0.9, spatial=1)

    x = op("Conv", ["data_0", w.conv("conv1_w_0", 3, 16, 3), w.vector("conv1_b_0", 16, 0.01)], "conv1_Y",
           kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    x = op("Relu", [bn(x, "conv1_bn", 16)], "conv1_relu_Y")
    p1 = op("MaxPool", [x], "pool1_Y", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])    # 16x16
    y = op("Conv", [p1, w.conv("res2a_branch2a_w_0", 16, 16, 3)], "res2a_branch2a_Y", kernel_shape=[3, 3],
           pads=[1, 1, 1, 1], strides=[1, 1])
    y = op("Relu", [bn(y, "res2a_branch2a_bn", 16)], "res2a_branch2a_relu_Y")
    y = op("Conv", [y, w.conv("res2a_branch2b_w_0", 16, 16, 3)], "res2a_branch2b_Y", kernel_shape=[3, 3],
           pads=[1, 1, 1, 1], strides=[1, 1])
    y = bn(y, "res2a_branch2b_bn", 16, gamma_scale=0.5)
    x = op("Relu", [op("Sum", [y, p1], "res2a_Y")], "res2a_relu_Y")
    x = op("Relu", [bn(x, "res2a_post_bn", 16)], "res2a_post_relu_Y")        # BN with no conv before it
    x = op("AveragePool", [x], "pool2_Y", kernel_shape=[2, 2], strides=[2, 2])                   # 8x8
    x = op("Conv", [x, w.conv("conv3_w_0", 16, 32, 1), w.vector("conv3_b_0", 32, 0.01)], "conv3_Y",
           kernel_shape=[1, 1], strides=[1, 1])
    x = op("Relu", [x], "conv3_relu_Y")
    x = op("AveragePool", [x], "pool3_Y", kernel_shape=[8, 8], strides=[1, 1])                   # 1x1
    x = op("Dropout", [x], "drop_Y", ratio=0.5)
    x = op("Flatten", [x], "flatten_Y", axis=1)
    x = op("MatMul", [x, w.dense("fc_w_0", 32, NUM_CLASSES)], "fc_mm_Y")
    x = op("Add", [x, w.vector("fc_b_0", NUM_CLASSES, 0.05)], "fc_Y")
    op("Softmax", [x], "softmaxout_1", axis=1)

    inputs = [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, INPUT_HW, INPUT_HW])] + \
        [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in w.inits]
    graph = helper.make_graph(nodes, "caffe2_net", inputs,
                              [helper.make_tensor_value_info("softmaxout_1", TensorProto.FLOAT, [1, NUM_CLASSES])],
                              w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)], ir_version=3,
                              producer_name="onnx-caffe2")
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------------------------------------------
# models the compiler must refuse
# --------------------------------------------------------------------------------------------------------------

#: The nodes of :func:`unsupported_model` that cannot be compiled: node name -> (op type, key word of the fix).
UNSUPPORTED_NODES = {
    "/pad/Pad": ("Pad", "reflect"),
    "/act/LeakyRelu": ("LeakyRelu", "LeakyRelu"),
    "/dilated/MaxPool": ("MaxPool", "dilation"),
    "/pool/AveragePool": ("AveragePool", "ceil_mode"),
    "/gate/Sigmoid": ("Sigmoid", "Sigmoid"),
}


def unsupported_model(seed: int = 2) -> onnx.ModelProto:
    """A valid opset-17 CNN with several constructs the NPU cannot run, each in its own node.

    Mimics a MobileNet/DeepLab-flavoured torch export: a reflection ``Pad``
    before a grouped convolution, a ``LeakyRelu``, a dilated max pool (``dilations=2``),
    a 3x3/2 ``AveragePool`` with ``ceil_mode=1`` on a 32x32 map (16 outputs
    instead of floor's 15) and a final ``Sigmoid``.  The nodes and what the
    compiler must say about them are in :data:`UNSUPPORTED_NODES`; the input
    size is static, so every problem can be found in one pass.
    """
    w = _Weights(seed)
    nodes = [
        helper.make_node("Conv", ["input", w.conv("conv1.weight", 3, 16, 3)], ["c1"], name="/conv1/Conv",
                         kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu/Relu"),
        helper.make_node("Pad", ["r1", w.add("pad.pads", [0, 0, 1, 1, 0, 0, 1, 1], np.int64)], ["rp"], name="/pad/Pad",
                         mode="reflect"),
        helper.make_node("Conv", ["rp", w.conv("grouped.weight", 8, 16, 3)], ["g"], name="/grouped/Conv",
                         kernel_shape=[3, 3], group=2),
        helper.make_node("LeakyRelu", ["g"], ["lr"], name="/act/LeakyRelu", alpha=0.1),
        helper.make_node("MaxPool", ["lr"], ["d"], name="/dilated/MaxPool", kernel_shape=[3, 3], pads=[2] * 4,
                         dilations=[2, 2]),
        helper.make_node("Relu", ["d"], ["r2"], name="/relu_1/Relu"),
        helper.make_node("AveragePool", ["r2"], ["p"], name="/pool/AveragePool", kernel_shape=[3, 3],
                         strides=[2, 2], ceil_mode=1),
        helper.make_node("GlobalAveragePool", ["p"], ["gap"], name="/avgpool/GlobalAveragePool"),
        helper.make_node("Flatten", ["gap"], ["f"], name="/Flatten", axis=1),
        helper.make_node("Gemm", ["f", w.dense("fc.weight", NUM_CLASSES, 16), w.vector("fc.bias", NUM_CLASSES)],
                         ["logits"], name="/fc/Gemm", transB=1),
        helper.make_node("Sigmoid", ["logits"], ["output"], name="/gate/Sigmoid"),
    ]
    graph = helper.make_graph(
        nodes, "unsupported",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, INPUT_HW, INPUT_HW])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, NUM_CLASSES])], w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="pytorch")
    onnx.checker.check_model(model)
    return model


def dynamic_size_model(seed: int = 3) -> onnx.ModelProto:
    """A torch export with ``dynamic_axes`` on height and width too: the input is N x 3 x height x width.

    The loader refuses symbolic spatial sizes before anything else (shapes
    cannot be inferred without them), so this is kept apart from
    :func:`unsupported_model`.
    """
    w = _Weights(seed)
    nodes = [
        helper.make_node("Conv", ["input", w.conv("conv1.weight", 3, 8, 3)], ["c1"], name="/conv1/Conv",
                         kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["output"], name="/relu/Relu"),
    ]
    graph = helper.make_graph(
        nodes, "dynamic",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 3, "height", "width"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", 8, "height", "width"])],
        w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="pytorch")
    onnx.checker.check_model(model)
    return model


__all__ = ["torch_style", "torch_style_model", "caffe2_style", "unsupported_model", "dynamic_size_model",
           "UNSUPPORTED_NODES", "INPUT_HW", "NUM_CLASSES"]
