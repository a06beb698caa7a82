"""The ONNX model zoo's classic ImageNet CNNs in their Caffe2-era form, with seeded synthetic weights.

The zoo's AlexNet, ZFNet-512, GoogLeNet, Inception v2 (BN-Inception),
ShuffleNet v1, DenseNet-121, VGG-19, ResNet-50 and SqueezeNet files were
converted from Caffe / Caffe2 in 2018 and cannot be downloaded here.  These
builders write the same architectures the way those files spell them, so
that what made them hard to compile can be reproduced:

* IR version 3, every initializer also listed as a graph input, unnamed
  nodes, Caffe2 blob names (``conv1_w_0``, ``conv1_1``, ``conv1_2`` after an
  in-place ReLU, ``OC2_DUMMY_n`` for the converter's own tensors, the
  ``gpu_0/`` prefix of the Caffe2 trainer's ZFNet-512 and ResNet-50);
* opset 9 by default (8 for the networks with batch normalization, so that
  ``BatchNormalization`` carries ``spatial=1``; any of 7 .. 11 can be asked
  for); ``Dropout`` in inference form with only ``ratio`` (``is_test``
  belongs to Dropout-6, which onnxruntime does not run; every opset-7+
  zoo file has only ``ratio``);
* Caffe's ceil-rounded pools as the converter wrote them: floor pools with
  extra end padding (``pads=[0, 0, 1, 1]``) up to opset 9, ``ceil_mode=1``
  from opset 10 (where that attribute exists);
* ``LRN`` (size 5, alpha 1e-4, beta 0.75, bias 1) after the first two ReLUs
  of AlexNet / ZFNet-512 and around GoogLeNet's stem;
* grouped convolutions (AlexNet's conv2/4/5 in two groups, ShuffleNet's 1x1
  group convolutions and depthwise 3x3s), ShuffleNet's channel shuffle as
  Reshape to 5-d -> Transpose -> Reshape with the shapes as initializers;
* the classifier flattened by ``Reshape`` with an initializer shape, then
  ``Gemm`` (``transB=1``) and a final ``Softmax``; Inception v2 computes the
  Reshape's target with Shape -> Gather -> Unsqueeze (``axes`` attribute) ->
  Concat; DenseNet-121 applies Caffe's Scale layers as ``Mul`` / ``Add`` by
  per-channel constants made (C, 1, 1) by ``Unsqueeze`` (``axes`` attribute)
  and ends, as the zoo's file, in the 1x1 ``fc6`` convolution (output
  (1, 1000, 1, 1), no Softmax); SqueezeNet ends in a Softmax over its
  pooled (1, 1000, 1, 1) map, as the zoo's ``softmaxout_1``.

Every builder takes ``size``: ``"full"`` is the real architecture on
224 x 224 inputs with 1000 classes; ``"small"`` the same structure (every
layer kind, join and padding, in the same order) with about an eighth of
the channels, 10 classes and a 64 x 64 input (32 for VGG-19, 80 for
ZFNet-512, whose strides need it), for fast tests.  Weights are He-normal; batch
normalisation statistics are sane random values; the last BatchNorm of each
residual branch is damped (:data:`RESIDUAL_GAMMA`).  The final classifier
is calibrated on structured synthetic images (as
``GraphBuilder.calibrated_dense``) so that its logits depend on the input.
``headless=True`` cuts the classifier: the output is the flattened
featurizer output (fc7 after its ReLU for AlexNet / ZFNet-512 / VGG-19, the
pooled features for the others).
"""
from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .images import synthetic_batch

#: The sizes every builder knows.
SIZES = ("full", "small")
#: Calibration images for the classifiers (seed kept apart from test inputs).
CALIBRATION_IMAGES = 8
CALIBRATION_SEED = 1_000_003
#: Floor of a feature's spread in the calibration, relative to the features' root mean square spread.
CALIBRATION_FLOOR = 0.5
#: Scale of the last BatchNorm of each residual branch: keeps deep residual stacks' activations O(1).
RESIDUAL_GAMMA = 0.2
#: Local response normalisation of AlexNet, ZFNet-512 and GoogLeNet.
LRN = dict(size=5, alpha=1e-4, beta=0.75, bias=1.0)
#: The opsets the builders can write (Unsqueeze's and Dropout's attribute forms end at 12).
OPSETS = range(7, 12)


def _check_size(size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")


def _small(c: int, div: int = 8, least: int = 2) -> int:
    """``c`` channels scaled down for the small networks."""
    return max(least, int(round(c / div)))


def _out(n: int, k: int, s: int, before: int, after: int) -> int:
    """Floor-rounded output size of a window ``k`` / stride ``s`` over ``n`` padded by ``before`` / ``after``."""
    return (n + before + after - k) // s + 1


def _ceil_extra(n: int, k: int, s: int, pad: int) -> int:
    """Extra end padding that makes floor rounding give Caffe's ceil-rounded pool size (Caffe drops a last
    window that would start in the end padding)."""
    out = -(-(n + 2 * pad - k) // s) + 1
    if pad and (out - 1) * s >= n + pad:
        out -= 1
    return max((out - 1) * s + k - (n + 2 * pad), 0)


class _Caffe2Net:
    """Accumulates a Caffe2-converted graph: unnamed nodes, versioned blob names, IR 3 with initializers as inputs."""

    def __init__(self, name: str, seed: int, hw: int, opset: int, input_name: str = "data_0", prefix: str = ""):
        if opset not in OPSETS:
            raise ValueError(f"opset must be in {OPSETS.start} .. {OPSETS.stop - 1}, not {opset}")
        self.name, self.hw, self.opset, self.prefix = name, hw, opset, prefix
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.input_name = input_name if input_name.startswith(prefix) else prefix + input_name
        self._version: dict[str, int] = {}
        self._dummy = 0

    # -- names and parameters ------------------------------------------------------------------------------

    def blob(self, base: str) -> str:
        """The next version of blob ``base``: ``conv1_1``, then ``conv1_2`` (Caffe2's in-place ops)."""
        v = self._version.get(base, 0) + 1
        self._version[base] = v
        return f"{self.prefix}{base}_{v}"

    def dummy(self) -> str:
        """A converter-made tensor name (``OC2_DUMMY_n``)."""
        name = f"OC2_DUMMY_{self._dummy}"
        self._dummy += 1
        return name

    def param(self, name: str, array, dtype=np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], out: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))        # Caffe2 left nodes unnamed
        return out

    @staticmethod
    def _base(t: str) -> str:
        """The blob a tensor is a version of: ``gpu_0/conv1_2`` -> ``conv1``."""
        base = t.rsplit("/", 1)[-1] if t.startswith("gpu_0/") else t
        return base.rsplit("_", 1)[0]

    # -- layers ----------------------------------------------------------------------------------------------

    def conv(self, x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0, group: int = 1,
             bias: bool = True, weight: np.ndarray | None = None) -> str:
        """A k x k convolution (He-normal weights unless given), with a small bias unless ``bias`` is False."""
        p = self.prefix + name
        if weight is None:
            fan_in = cin // group * k * k
            weight = self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)
        inputs = [x, self.param(f"{p}_w_0", weight)]
        if bias:
            inputs.append(self.param(f"{p}_b_0", 0.01 * self.rng.standard_normal(cout)))
        attrs = dict(kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride])
        if group != 1:
            attrs["group"] = group
        return self.node("Conv", inputs, self.blob(name), **attrs)

    def bn(self, x: str, name: str, c: int, gamma_scale: float = 1.0, unit: bool = False) -> str:
        """Inference SpatialBN; ``spatial=1`` up to opset 8 (BatchNormalization-9 dropped the attribute).

        ``unit``: scale 1 and bias 0 (Caffe's BatchNorm layer, followed by a separate Scale layer).
        """
        p = self.prefix + name
        gamma = np.ones(c) if unit else gamma_scale * (1.0 + 0.1 * self.rng.standard_normal(c))
        beta = np.zeros(c) if unit else 0.1 * self.rng.standard_normal(c)
        mean = 0.1 * self.rng.standard_normal(c)
        var = 1.0 + 0.2 * np.abs(self.rng.standard_normal(c))
        ins = [x] + [self.param(f"{p}_{s}_0", v) for s, v in (("s", gamma), ("b", beta), ("rm", mean), ("riv", var))]
        attrs = dict(epsilon=1e-5, momentum=0.9)
        if self.opset <= 8:
            attrs["spatial"] = 1
        return self.node("BatchNormalization", ins, self.blob(name), **attrs)

    def scale(self, x: str, name: str, c: int, gamma_scale: float = 1.0) -> str:
        """Caffe's Scale layer as the opset-7+ converter wrote it: Mul and Add by (C,) parameters made (C, 1, 1)
        by Unsqueeze with the ``axes`` attribute."""
        p = self.prefix + name
        gamma = self.param(f"{p}_w_0", gamma_scale * (1.0 + 0.1 * self.rng.standard_normal(c)))
        beta = self.param(f"{p}_b_0", 0.1 * self.rng.standard_normal(c))
        g = self.node("Unsqueeze", [gamma], self.dummy(), axes=[1, 2])
        y = self.node("Mul", [x, g], self.blob(name))
        b = self.node("Unsqueeze", [beta], self.dummy(), axes=[1, 2])
        return self.node("Add", [y, b], self.blob(name))

    def relu(self, x: str) -> str:
        return self.node("Relu", [x], self.blob(self._base(x)))                # in place: conv1_1 -> conv1_2

    def lrn(self, x: str, name: str) -> str:
        return self.node("LRN", [x], self.blob(name), **LRN)

    def pool(self, x: str, name: str, mode: str, hw: int, k: int, s: int, pad: int = 0, ceil: bool = False,
             count_include_pad: bool | None = None) -> tuple[str, int]:
        """Max or average pooling; ``ceil``: Caffe's ceil rounding (extra end padding, or ``ceil_mode=1`` from
        opset 10).  Returns the output and its side."""
        pads = [pad, pad, pad, pad]
        attrs = dict(kernel_shape=[k, k], strides=[s, s])
        if ceil and self.opset >= 10:
            attrs["ceil_mode"] = 1
            out = _out(hw, k, s, pad, pad + _ceil_extra(hw, k, s, pad))
        else:
            if ceil:
                extra = _ceil_extra(hw, k, s, pad)
                pads = [pad, pad, pad + extra, pad + extra]
            out = _out(hw, k, s, pads[0], pads[2])
        if any(pads):
            attrs["pads"] = pads
        if count_include_pad is not None and mode == "avg":
            attrs["count_include_pad"] = int(count_include_pad)
        op = "MaxPool" if mode == "max" else "AveragePool"
        return self.node(op, [x], self.blob(name), **attrs), out

    def concat(self, xs: list[str], name: str) -> str:
        return self.node("Concat", xs, self.blob(name), axis=1)

    def sum(self, xs: list[str], name: str) -> str:
        return self.node("Sum", xs, self.blob(name))

    def add(self, a: str, b: str, name: str) -> str:
        return self.node("Add", [a, b], self.blob(name))

    def dropout(self, x: str, ratio: float = 0.5) -> str:
        return self.node("Dropout", [x], self.blob(self._base(x)), ratio=ratio)

    def reshape(self, x: str, shape: list[int]) -> str:
        """Reshape with the target shape as an initializer (the converter's ``OC2_DUMMY``)."""
        return self.node("Reshape", [x, self.param(self.dummy(), shape, np.int64)], self.blob(self._base(x)))

    def flatten_by_shape(self, x: str) -> str:
        """Reshape to (N, -1) with N read from the tensor: Shape -> Gather(0) -> Unsqueeze(axes=[0]) -> Concat."""
        shape = self.node("Shape", [x], self.dummy())
        n = self.node("Gather", [shape, self.param(self.dummy(), np.array(0, np.int64), np.int64)], self.dummy(),
                      axis=0)
        n = self.node("Unsqueeze", [n], self.dummy(), axes=[0])
        target = self.node("Concat", [n, self.param(self.dummy(), [-1], np.int64)], self.dummy(), axis=0)
        return self.node("Reshape", [x, target], self.blob(self._base(x)))

    def shuffle(self, x: str, name: str, c: int, hw: int, groups: int) -> str:
        """ShuffleNet's channel shuffle: Reshape (1, g, c / g, h, w) -> Transpose (0, 2, 1, 3, 4) -> Reshape back."""
        y = self.node("Reshape", [x, self.param(self.dummy(), [1, groups, c // groups, hw, hw], np.int64)],
                      self.blob(name + "_reshape"))
        y = self.node("Transpose", [y], self.blob(name + "_transpose"), perm=[0, 2, 1, 3, 4])
        return self.node("Reshape", [y, self.param(self.dummy(), [1, c, hw, hw], np.int64)], self.blob(name))

    def features(self, x: str) -> np.ndarray:
        """onnxruntime's values of ``x`` on the calibration images, one row per image and position."""
        import onnxruntime as ort

        probe = self.model(x, None)
        sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        rows = []
        for img in synthetic_batch(CALIBRATION_IMAGES, CALIBRATION_SEED, self.hw):
            (y,) = sess.run(None, {self.input_name: img[None]})
            y = y.reshape(y.shape[0], y.shape[1], -1) if y.ndim > 2 else y[:, :, None]
            rows.append(np.moveaxis(y, 1, -1).reshape(-1, y.shape[1]))
        return np.concatenate(rows).astype(np.float64)

    def _calibrated(self, x: str, cin: int, cout: int) -> tuple[np.ndarray, np.ndarray]:
        """Classifier weights whose logits depend on the input (the features of the calibration images are
        standardised inside the classifier: W' = W / sigma, b = -W' mu)."""
        feats = self.features(x)
        mu, sigma = feats.mean(axis=0), feats.std(axis=0)
        # a floor under each feature's spread: a feature (nearly) constant on the calibration images must not get
        # a huge weight (it would dominate other images' logits, and the logits would cancel strongly)
        sigma = np.sqrt(sigma ** 2 + (CALIBRATION_FLOOR * np.sqrt(np.mean(sigma ** 2)) + 1e-12) ** 2)
        w = self.rng.standard_normal((cout, cin)) / np.sqrt(cin) / sigma
        return w, -w @ mu

    def fc(self, x: str, name: str, cin: int, cout: int, calibrate: bool = False) -> str:
        """Caffe2's FC: Gemm with ``transB=1``; ``calibrate`` for the final classifier."""
        p = self.prefix + name
        if calibrate:
            w, b = self._calibrated(x, cin, cout)
        else:
            w, b = self.rng.standard_normal((cout, cin)) * np.sqrt(2.0 / cin), 0.01 * self.rng.standard_normal(cout)
        return self.node("Gemm", [x, self.param(f"{p}_w_0", w), self.param(f"{p}_b_0", b)], self.blob(name),
                         alpha=1.0, beta=1.0, transB=1)

    def conv_classifier(self, x: str, name: str, cin: int, cout: int) -> str:
        """A calibrated 1x1 convolution as the classifier (SqueezeNet's conv10, DenseNet's fc6)."""
        w, b = self._calibrated(x, cin, cout)
        p = self.prefix + name
        return self.node("Conv", [x, self.param(f"{p}_w_0", w.reshape(cout, cin, 1, 1)), self.param(f"{p}_b_0", b)],
                         self.blob(name), kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[1, 1])

    def softmax(self, x: str, name: str = "prob") -> str:
        return self.node("Softmax", [x], self.blob(name), axis=1)

    # -- the model -------------------------------------------------------------------------------------------

    def model(self, output: str, out_shape) -> onnx.ModelProto:
        """The model so far with output ``output``: IR 3, the opset, every initializer also a graph input."""
        inputs = [helper.make_tensor_value_info(self.input_name, TensorProto.FLOAT, [1, 3, self.hw, self.hw])] + \
            [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.inits]
        graph = helper.make_graph(list(self.nodes), self.name, inputs,
                                  [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
                                  list(self.inits))
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=3,
                                 producer_name="onnx-caffe2")

    def finish(self, output: str, out_shape) -> onnx.ModelProto:
        model = self.model(output, list(out_shape))
        onnx.checker.check_model(model)
        return model


def _cached(builder):
    """Build each small network once per process (the full-size ones, hundreds of MB, are not kept); callers get
    their own copy of the ModelProto."""
    build = functools.lru_cache(maxsize=16)(builder)

    @functools.wraps(builder)
    def wrapper(size: str = "full", seed: int = 0, opset: int | None = None, headless: bool = False, **kwargs):
        _check_size(size)
        if size == "full":
            return builder(size, seed, opset, headless, **kwargs)
        model = onnx.ModelProto()
        model.CopyFrom(build(size, seed, opset, headless, **kwargs))
        return model

    return wrapper


def _head(net: _Caffe2Net, x: str, cin: int, classes: int, headless: bool, name: str = "fc",
          prob: str = "prob") -> onnx.ModelProto:
    """The calibrated classifier and the final Softmax, or (headless) the features ``x`` of shape (1, cin)."""
    if headless:
        return net.finish(x, (1, cin))
    y = net.fc(x, name, cin, classes, calibrate=True)
    return net.finish(net.softmax(y, prob), (1, classes))


# ---------------------------------------------------------------------------------------------------------------
# AlexNet and ZFNet-512
# ---------------------------------------------------------------------------------------------------------------

@_cached
def alexnet(size: str = "full", seed: int = 0, opset: int | None = None, headless: bool = False) -> onnx.ModelProto:
    """BVLC AlexNet (the zoo's ``bvlcalexnet``): 224 x 224 input.

    conv1 11x11/4 96 -> ReLU -> LRN -> 3x3/2 max pool (ceil: pads [0, 0, 1, 1], 54 -> 27); conv2 5x5 pad 2,
    256 in 2 groups -> ReLU -> LRN -> pool (13); conv3 3x3 384; conv4 3x3 384 in 2 groups; conv5 3x3 256 in 2
    groups -> pool (6); Reshape to 9216; fc6 4096 -> ReLU -> Dropout; fc7 4096 -> ReLU -> Dropout; fc8 1000;
    Softmax.  Small: 64 x 64 input, channels 16/32/48/48/32, fc 64, 10 classes (pool1 also rounds up: 14 -> 7).
    """
    full = size == "full"
    hw, classes = (224, 1000) if full else (64, 10)
    c1, c2, c3, c4, c5, fc = (96, 256, 384, 384, 256, 4096) if full else (16, 32, 48, 48, 32, 64)
    net = _Caffe2Net("alexnet", seed, hw, opset or 9)
    x = net.relu(net.conv(net.input_name, "conv1", 3, c1, 11, stride=4))
    h = _out(hw, 11, 4, 0, 0)
    x, h = net.pool(net.lrn(x, "norm1"), "pool1", "max", h, 3, 2, ceil=True)
    x = net.relu(net.conv(x, "conv2", c1, c2, 5, pad=2, group=2))
    x, h = net.pool(net.lrn(x, "norm2"), "pool2", "max", h, 3, 2, ceil=True)
    x = net.relu(net.conv(x, "conv3", c2, c3, 3, pad=1))
    x = net.relu(net.conv(x, "conv4", c3, c4, 3, pad=1, group=2))
    x = net.relu(net.conv(x, "conv5", c4, c5, 3, pad=1, group=2))
    x, h = net.pool(x, "pool5", "max", h, 3, 2, ceil=True)
    x = net.reshape(x, [1, c5 * h * h])
    x = net.dropout(net.relu(net.fc(x, "fc6", c5 * h * h, fc)))
    x = net.dropout(net.relu(net.fc(x, "fc7", fc, fc)))
    return _head(net, x, fc, classes, headless, "fc8")


@_cached
def zfnet512(size: str = "full", seed: int = 0, opset: int | None = None, headless: bool = False) -> onnx.ModelProto:
    """ZFNet-512 (the zoo's Caffe2 ``zfnet512``; ``gpu_0/`` names): 224 x 224 input.

    conv1 7x7/2 pad 1, 96 -> ReLU -> LRN -> 3x3/2 max pool (110 -> 54); conv2 5x5/2 256 -> ReLU -> LRN -> pool
    (25 -> 12); conv3 3x3 512, conv4 3x3 1024, conv5 3x3 512 -> pool (5); Reshape to 12800; fc6 4096 -> ReLU ->
    Dropout; fc7 4096 -> ReLU -> Dropout; fc8 1000; Softmax (85 M parameters, the zoo's 341 MB).  Small: 80 x 80
    input (38 -> 18 -> 7 -> 3 -> 1), channels 12/24/32/48/32, fc 64, 10 classes.
    """
    full = size == "full"
    hw, classes = (224, 1000) if full else (80, 10)
    c1, c2, c3, c4, c5, fc = (96, 256, 512, 1024, 512, 4096) if full else (12, 24, 32, 48, 32, 64)
    net = _Caffe2Net("zfnet512", seed, hw, opset or 9, prefix="gpu_0/")
    x = net.relu(net.conv(net.input_name, "conv1", 3, c1, 7, stride=2, pad=1))
    h = _out(hw, 7, 2, 1, 1)
    x, h = net.pool(net.lrn(x, "norm1"), "pool1", "max", h, 3, 2)
    x = net.relu(net.conv(x, "conv2", c1, c2, 5, stride=2))
    h = _out(h, 5, 2, 0, 0)
    x, h = net.pool(net.lrn(x, "norm2"), "pool2", "max", h, 3, 2)
    x = net.relu(net.conv(x, "conv3", c2, c3, 3, pad=1))
    x = net.relu(net.conv(x, "conv4", c3, c4, 3, pad=1))
    x = net.relu(net.conv(x, "conv5", c4, c5, 3, pad=1))
    x, h = net.pool(x, "pool5", "max", h, 3, 2)
    x = net.reshape(x, [1, c5 * h * h])
    x = net.dropout(net.relu(net.fc(x, "fc6", c5 * h * h, fc)))
    x = net.dropout(net.relu(net.fc(x, "fc7", fc, fc)))
    return _head(net, x, fc, classes, headless, "fc8", "softmax")


# ---------------------------------------------------------------------------------------------------------------
# GoogLeNet (Inception v1) and Inception v2 (BN-Inception)
# ---------------------------------------------------------------------------------------------------------------

#: GoogLeNet's inception blocks: (name, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection); "pool" marks the
#: 3x3/2 max pools between the stages.
GOOGLENET_BLOCKS = (
    ("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64), "pool",
    ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64), ("4c", 128, 128, 256, 24, 64, 64),
    ("4d", 112, 144, 288, 32, 64, 64), ("4e", 256, 160, 320, 32, 128, 128), "pool",
    ("5a", 256, 160, 320, 32, 128, 128), ("5b", 384, 192, 384, 48, 128, 128),
)


@_cached
def googlenet(size: str = "full", seed: int = 0, opset: int | None = None, headless: bool = False) -> onnx.ModelProto:
    """BVLC GoogLeNet (Inception v1, the zoo's ``googlenet``): 224 x 224 input.

    conv1 7x7/2 64 -> ReLU -> 3x3/2 max pool (ceil: 112 -> 56) -> LRN; conv2 1x1 64 -> ReLU -> 3x3 192 -> ReLU
    -> LRN -> pool (28); inception 3a, 3b -> pool (14) -> 4a .. 4e -> pool (7) -> 5a, 5b (each: 1x1 | 1x1 -> 3x3
    | 1x1 -> 5x5 | 3x3/1 pad-1 max pool -> 1x1, every convolution with bias and ReLU, Concat); 7x7 average
    pool; Dropout 0.4; Reshape to 1024; fc 1000; Softmax.  The four ceil-rounded pools have pads [0, 0, 1, 1]
    (``ceil_mode=1`` from opset 10).  Small: 64 x 64 input (32 -> 16 -> 8 -> 4 -> 2), an eighth of the
    channels, 10 classes.
    """
    full = size == "full"
    hw, classes = (224, 1000) if full else (64, 10)
    ch = (lambda c: c) if full else _small
    net = _Caffe2Net("googlenet", seed, hw, opset or 9)
    x = net.relu(net.conv(net.input_name, "conv1/7x7_s2", 3, ch(64), 7, stride=2, pad=3))
    h = _out(hw, 7, 2, 3, 3)
    x, h = net.pool(x, "pool1/3x3_s2", "max", h, 3, 2, ceil=True)
    x = net.lrn(x, "pool1/norm1")
    x = net.relu(net.conv(x, "conv2/3x3_reduce", ch(64), ch(64), 1))
    x = net.relu(net.conv(x, "conv2/3x3", ch(64), ch(192), 3, pad=1))
    x = net.lrn(x, "conv2/norm2")
    x, h = net.pool(x, "pool2/3x3_s2", "max", h, 3, 2, ceil=True)
    c = ch(192)
    stage = 3
    for block in GOOGLENET_BLOCKS:
        if block == "pool":
            x, h = net.pool(x, f"pool{stage}/3x3_s2", "max", h, 3, 2, ceil=True)
            stage += 1
            continue
        name, n1, n3r, n3, n5r, n5, npool = block[0], *map(ch, block[1:])
        p = f"inception_{name}/"
        b1 = net.relu(net.conv(x, p + "1x1", c, n1, 1))
        b2 = net.relu(net.conv(net.relu(net.conv(x, p + "3x3_reduce", c, n3r, 1)), p + "3x3", n3r, n3, 3, pad=1))
        b3 = net.relu(net.conv(net.relu(net.conv(x, p + "5x5_reduce", c, n5r, 1)), p + "5x5", n5r, n5, 5, pad=2))
        b4, _ = net.pool(x, p + "pool", "max", h, 3, 1, pad=1)
        b4 = net.relu(net.conv(b4, p + "pool_proj", c, npool, 1))
        x = net.concat([b1, b2, b3, b4], p + "output")
        c = n1 + n3 + n5 + npool
    x, h = net.pool(x, "pool5/7x7_s1", "avg", h, h, 1)
    x = net.reshape(net.dropout(x, 0.4), [1, c])
    return _head(net, x, c, classes, headless, "loss3/classifier")


#: BN-Inception's blocks: (name, 1x1, 3x3 reduce, 3x3, double 3x3 reduce, double 3x3, pool, pool projection,
#: stride); a stride-2 block has no 1x1 and no projection, and passes its max pool through.
INCEPTION_V2_BLOCKS = (
    ("3a", 64, 64, 64, 64, 96, "avg", 32, 1), ("3b", 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 224, 64, 96, 96, 128, "avg", 128, 1), ("4b", 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 160, 128, 160, 128, 160, "avg", 128, 1), ("4d", 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 352, 192, 320, 160, 224, "avg", 128, 1), ("5b", 352, 192, 320, 192, 224, "max", 128, 1),
)


@_cached
def inception_v2(size: str = "full", seed: int = 0, opset: int | None = None, headless: bool = False,
                 count_include_pad: bool = True) -> onnx.ModelProto:
    """BN-Inception (the zoo's Caffe2 ``inception_v2``): 224 x 224 input, every convolution followed by
    BatchNormalization (``spatial=1`` at the default opset 8) and ReLU.

    conv1 7x7/2 64 -> 3x3/2 max pool (ceil: 112 -> 56); conv2 1x1 64 -> 3x3 192 -> pool (28); inception 3a,
    3b, 3c (stride 2: 14), 4a .. 4e (stride 2: 7), 5a, 5b (each: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | pool ->
    1x1; the pools are 3x3/1 pad-1 averages, 5b's a max, the stride-2 blocks' a ceil-rounded 3x3/2 max passed
    through); 7x7 average pool; Reshape to (N, -1) through Shape -> Gather -> Unsqueeze -> Concat; fc 1000;
    Softmax.  The padded average pools count the padding (``count_include_pad=1``, Caffe's AVE pooling);
    ``count_include_pad=False`` writes them without the attribute (ONNX's default 0).  Small: 64 x 64 input
    (32 -> 16 -> 8 -> 4 -> 2), an eighth of the channels, 10 classes.
    """
    full = size == "full"
    hw, classes = (224, 1000) if full else (64, 10)
    ch = (lambda c: c) if full else _small
    net = _Caffe2Net("inception_v2", seed, hw, opset or 8)

    def cbr(t: str, name: str, cin: int, cout: int, k: int, stride: int = 1) -> str:
        return net.relu(net.bn(net.conv(t, name, cin, cout, k, stride, pad=k // 2, bias=False), name + "_bn", cout))

    x = cbr(net.input_name, "conv1_7x7_s2", 3, ch(64), 7, 2)
    h = _out(hw, 7, 2, 3, 3)
    x, h = net.pool(x, "pool1_3x3_s2", "max", h, 3, 2, ceil=True)
    x = cbr(x, "conv2_3x3_reduce", ch(64), ch(64), 1)
    x = cbr(x, "conv2_3x3", ch(64), ch(192), 3)
    x, h = net.pool(x, "pool2_3x3_s2", "max", h, 3, 2, ceil=True)
    c = ch(192)
    for name, n1, n3r, n3, nd3r, nd3, pool, npool, stride in INCEPTION_V2_BLOCKS:
        n1, n3r, n3, nd3r, nd3, npool = (ch(v) if v else 0 for v in (n1, n3r, n3, nd3r, nd3, npool))
        p = f"inception_{name}_"
        branches = []
        if n1:
            branches.append(cbr(x, p + "1x1", c, n1, 1))
        branches.append(cbr(cbr(x, p + "3x3_reduce", c, n3r, 1), p + "3x3", n3r, n3, 3, stride))
        d = cbr(cbr(x, p + "double_3x3_reduce", c, nd3r, 1), p + "double_3x3_1", nd3r, nd3, 3)
        branches.append(cbr(d, p + "double_3x3_2", nd3, nd3, 3, stride))
        if stride == 2:
            y, out = net.pool(x, p + "pool", "max", h, 3, 2, ceil=True)
            branches.append(y)
            width = c
        else:
            y, out = net.pool(x, p + "pool", pool, h, 3, 1, pad=1,
                              count_include_pad=(count_include_pad or None) if pool == "avg" else None)
            branches.append(cbr(y, p + "pool_proj", c, npool, 1))
            width = npool
        x = net.concat(branches, p + "output")
        c, h = n1 + n3 + nd3 + width, out
    x, h = net.pool(x, "global_pool", "avg", h, h, 1)
    x = net.flatten_by_shape(x)
    return _head(net, x, c, classes, headless, "fc")


# ---------------------------------------------------------------------------------------------------------------
# ShuffleNet v1
# ---------------------------------------------------------------------------------------------------------------

@_cached
def shufflenet(size: str = "full", seed: int = 0, opset: int | None = None, headless: bool = False,
               count_include_pad: bool = False) -> onnx.ModelProto:
    """ShuffleNet v1 1x with 3 groups (the zoo's Caffe2 ``shufflenet``): 224 x 224 input.

    conv1 3x3/2 24 -> BN -> ReLU -> 3x3/2 pad-1 max pool (56); stages of 4, 8, 4 units with 240, 480, 960
    channels.  A unit: 1x1 group conv (3 groups; 1 in the very first unit) to a quarter of its output channels
    -> BN -> ReLU -> channel shuffle (Reshape to (1, 3, c / 3, h, w) -> Transpose -> Reshape) -> depthwise 3x3
    -> BN -> 1x1 group conv -> BN; the first unit of a stage has stride 2 and joins a 3x3/2 pad-1 average pool
    of its input by Concat, the others join their input by Add; then ReLU.  7x7 average pool; Reshape to 960;
    fc 1000; Softmax.  The padded shortcut pools are written as Caffe2 pools (which leave the padding out of the
    average): no ``count_include_pad`` attribute, ONNX's default 0; ``count_include_pad=True`` writes 1.  Small:
    64 x 64 input, stem 12, stages of 2, 1, 1 units with 24, 48, 96 channels, 10 classes.
    """
    full = size == "full"
    hw, classes = (224, 1000) if full else (64, 10)
    groups = 3
    stem, widths, repeats = (24, (240, 480, 960), (4, 8, 4)) if full else (12, (24, 48, 96), (2, 1, 1))
    net = _Caffe2Net("shufflenet", seed, hw, opset or 8)
    x = net.relu(net.bn(net.conv(net.input_name, "conv1", 3, stem, 3, 2, pad=1, bias=False), "conv1_bn", stem))
    h = _out(hw, 3, 2, 1, 1)
    x, h = net.pool(x, "pool1", "max", h, 3, 2, pad=1)
    c = stem
    for s, (width, count) in enumerate(zip(widths, repeats)):
        for i in range(count):
            p = f"gconv{s + 2}_{i}_"
            stride = 2 if i == 0 else 1
            out = width - c if stride == 2 else width
            mid = width // 4
            g1 = 1 if (s == 0 and i == 0) else groups
            y = net.relu(net.bn(net.conv(x, p + "1", c, mid, 1, group=g1, bias=False), p + "1_bn", mid))
            if g1 > 1:
                y = net.shuffle(y, p + "shuffle", mid, h, groups)
            y = net.bn(net.conv(y, p + "dw", mid, mid, 3, stride, pad=1, group=mid, bias=False), p + "dw_bn", mid)
            oh = _out(h, 3, stride, 1, 1)
            y = net.bn(net.conv(y, p + "2", mid, out, 1, group=groups, bias=False), p + "2_bn", out,
                       gamma_scale=RESIDUAL_GAMMA if stride == 1 else 1.0)
            if stride == 2:
                sc, _ = net.pool(x, p + "shortcut", "avg", h, 3, 2, pad=1,
                                 count_include_pad=True if count_include_pad else None)
                x = net.relu(net.concat([sc, y], p + "concat"))
            else:
                x = net.relu(net.add(x, y, p + "add"))
            c, h = width, oh
    x, h = net.pool(x, "pool_ave", "avg", h, h, 1)
    x = net.reshape(x, [1, c])
    return _head(net, x, c, classes, headless, "fc", "softmax")


# ---------------------------------------------------------------------------------------------------------------
# DenseNet-121, VGG-19, ResNet-50 and SqueezeNet 1.1 (Caffe2 forms)
# ---------------------------------------------------------------------------------------------------------------

@_cached
def densenet121_caffe2(size: str = "full", seed: int = 0, opset: int | None = None,
                       headless: bool = False) -> onnx.ModelProto:
    """DenseNet-121 as the zoo's Caffe2 ``densenet121`` (from the Caffe model): 224 x 224 input.

    Every normalisation is Caffe's BatchNorm (BatchNormalization with scale 1 and bias 0, ``spatial=1`` at the
    default opset 8) then its Scale layer (Mul and Add by per-channel parameters Unsqueezed to (C, 1, 1) with
    the ``axes`` attribute).  conv1 7x7/2 64 -> BN/Scale -> ReLU -> 3x3/2 pad-1 max pool (56); dense blocks of
    6, 12, 24, 16 layers (BN/Scale -> ReLU -> 1x1 128 -> BN/Scale -> ReLU -> 3x3 32, Concat), transitions
    (BN/Scale -> ReLU -> 1x1 halving the channels -> 2x2/2 average pool); BN/Scale -> ReLU -> 7x7 average pool
    -> fc6, a 1x1 convolution to 1000 channels with bias: the output ``fc6_1`` is (1, 1000, 1, 1), with no
    Softmax, as the zoo's file.  ``headless``: the pooled 1024 features, flattened.  Small: 64 x 64 input,
    stem 16, growth 8, bottleneck 16, blocks of 2, 2, 2, 2 layers (16 -> 8 -> 4 -> 2), 10 classes.
    """
    full = size == "full"
    hw, classes = (224, 1000) if full else (64, 10)
    init, growth, bottleneck, blocks = (64, 32, 128, (6, 12, 24, 16)) if full else (16, 8, 16, (2, 2, 2, 2))
    net = _Caffe2Net("densenet121", seed, hw, opset or 8)

    def bn_scale_relu(t: str, name: str, c: int) -> str:
        return net.relu(net.scale(net.bn(t, name + "_bn", c, unit=True), name + "_scale", c))

    x = net.conv(net.input_name, "conv1", 3, init, 7, 2, pad=3, bias=False)
    x = bn_scale_relu(x, "conv1", init)
    h = _out(hw, 7, 2, 3, 3)
    x, h = net.pool(x, "pool1", "max", h, 3, 2, pad=1)
    c = init
    for b, layers in enumerate(blocks):
        for i in range(layers):
            p = f"conv{b + 2}_{i + 1}"
            y = net.conv(bn_scale_relu(x, p + "_x1", c), p + "_x1", c, bottleneck, 1, bias=False)
            y = net.conv(bn_scale_relu(y, p + "_x2", bottleneck), p + "_x2", bottleneck, growth, 3, pad=1, bias=False)
            x = net.concat([x, y], f"concat_{b + 2}_{i + 1}")
            c += growth
        if b < len(blocks) - 1:
            p = f"conv{b + 2}_blk"
            y = net.conv(bn_scale_relu(x, p, c), p, c, c // 2, 1, bias=False)
            x, h = net.pool(y, f"pool{b + 2}", "avg", h, 2, 2)
            c //= 2
    x = bn_scale_relu(x, f"conv{len(blocks) + 1}_blk", c)
    x, h = net.pool(x, "pool5", "avg", h, h, 1)
    if headless:
        return net.finish(net.reshape(x, [1, c]), (1, c))
    return net.finish(net.conv_classifier(x, "fc6", c, classes), (1, classes, 1, 1))


#: VGG-19 (configuration E): channels per convolution, "M" for a 2x2/2 max pool.
VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


@_cached
def vgg19_caffe2(size: str = "full", seed: int = 0, opset: int | None = None,
                 headless: bool = False) -> onnx.ModelProto:
    """VGG-19 as the zoo's Caffe2 ``vgg19``: 224 x 224 input, sixteen 3x3 convolutions with bias and ReLU in
    five blocks (2, 2, 4, 4, 4) each closed by a 2x2/2 max pool; Reshape to 25088; fc6 4096 -> ReLU -> Dropout;
    fc7 4096 -> ReLU -> Dropout; fc8 1000; Softmax (144 M parameters).  Small: 32 x 32 input, an eighth of the
    channels, fc 64, 10 classes."""
    full = size == "full"
    hw, classes, fc = (224, 1000, 4096) if full else (32, 10, 64)
    net = _Caffe2Net("vgg19", seed, hw, opset or 9)
    x, c, h = net.input_name, 3, hw
    block, k = 1, 1
    for v in VGG19_CFG:
        if v == "M":
            x, h = net.pool(x, f"pool{block}", "max", h, 2, 2)
            block, k = block + 1, 1
            continue
        v = v if full else _small(v)
        x = net.relu(net.conv(x, f"conv{block}_{k}", c, v, 3, pad=1))
        c, k = v, k + 1
    x = net.reshape(x, [1, c * h * h])
    x = net.dropout(net.relu(net.fc(x, "fc6", c * h * h, fc)))
    x = net.dropout(net.relu(net.fc(x, "fc7", fc, fc)))
    return _head(net, x, fc, classes, headless, "fc8")


@_cached
def resnet50_caffe2(size: str = "full", seed: int = 0, opset: int | None = None,
                    headless: bool = False) -> onnx.ModelProto:
    """ResNet-50 as the Caffe2 trainer builds it (the zoo's ``resnet50``; ``gpu_0/`` names): 224 x 224 input.

    conv1 7x7/2 64 (no bias) -> SpatialBN (``spatial=1`` at the default opset 8) -> ReLU -> an unpadded 3x3/2
    max pool (112 -> 55); stages of 3, 4, 6, 3 bottlenecks (1x1 -> 3x3, with the stride -> 1x1, each with BN;
    a 1x1 projection with BN when the channels grow; joined by ``Sum``, then ReLU): 55 -> 28 -> 14 -> 7; 7x7
    average pool; Reshape to 2048; fc 1000; Softmax.  Small: 64 x 64 input (32 -> 15 -> 8 -> 4 -> 2), widths
    8/16/32/64 (x4 out), stages of 2, 1, 1, 1 blocks, 10 classes.
    """
    full = size == "full"
    hw, classes = (224, 1000) if full else (64, 10)
    width, blocks = (64, (3, 4, 6, 3)) if full else (8, (2, 1, 1, 1))
    net = _Caffe2Net("resnet50", seed, hw, opset or 8, prefix="gpu_0/")

    def conv_bn(t: str, name: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True,
                gamma: float = 1.0) -> str:
        y = net.bn(net.conv(t, name, cin, cout, k, stride, pad=k // 2, bias=False), name + "_bn", cout, gamma)
        return net.relu(y) if relu else y

    x = conv_bn(net.input_name, "conv1", 3, width, 7, 2)
    h = _out(hw, 7, 2, 3, 3)
    x, h = net.pool(x, "pool1", "max", h, 3, 2)
    cin = width
    for s, count in enumerate(blocks):
        mid = width * 2 ** s
        cout = mid * 4
        for i in range(count):
            p = f"res{s + 2}_{i}_branch"
            stride = 2 if (i == 0 and s > 0) else 1
            y = conv_bn(x, p + "2a", cin, mid, 1)
            y = conv_bn(y, p + "2b", mid, mid, 3, stride)
            y = conv_bn(y, p + "2c", mid, cout, 1, relu=False, gamma=RESIDUAL_GAMMA)
            sc = conv_bn(x, p + "1", cin, cout, 1, stride, relu=False) if cout > cin else x
            x = net.relu(net.sum([y, sc], f"res{s + 2}_{i}_branch2c_sum"))
            cin = cout
            h = _out(h, 3, stride, 1, 1)
    x, h = net.pool(x, "pool5", "avg", h, h, 1)
    x = net.reshape(x, [1, cin])
    return _head(net, x, cin, classes, headless, "pred", "softmax")


#: SqueezeNet 1.1's fire modules: (squeeze, expand 1x1, expand 3x3); "M" for a 3x3/2 max pool.
SQUEEZENET11_FIRES = ((16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128), "M",
                      (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))


@_cached
def squeezenet(size: str = "full", seed: int = 0, opset: int | None = None, headless: bool = False) -> onnx.ModelProto:
    """SqueezeNet 1.1 in the zoo's Caffe2 SqueezeNet form: 224 x 224 input.

    conv1 3x3/2 64 -> ReLU -> 3x3/2 max pool (111 -> 55); fire2, fire3 -> pool (27); fire4, fire5 -> pool (13);
    fire6 .. fire9 (squeeze 1x1 -> ReLU, then expand 1x1 and expand 3x3 pad 1, each with ReLU, Concat);
    Dropout; conv10 1x1 to 1000 -> ReLU -> 13x13 average pool -> Softmax over the (1, 1000, 1, 1) map (the zoo's
    ``softmaxout_1``).  ``headless``: fire9's output averaged (512), flattened.  Small: 64 x 64 input
    (31 -> 15 -> 7 -> 3), an eighth of the channels, 10 classes.
    """
    full = size == "full"
    hw, classes = (224, 1000) if full else (64, 10)
    ch = (lambda c: c) if full else _small
    net = _Caffe2Net("squeezenet", seed, hw, opset or 9)
    x = net.relu(net.conv(net.input_name, "conv1", 3, ch(64), 3, 2))
    h = _out(hw, 3, 2, 0, 0)
    c = ch(64)
    x, h = net.pool(x, "pool1", "max", h, 3, 2, ceil=True)
    fire, pool = 2, 3
    for spec in SQUEEZENET11_FIRES:
        if spec == "M":
            x, h = net.pool(x, f"pool{pool}", "max", h, 3, 2, ceil=True)
            pool += 2
            continue
        sq, e1, e3 = map(ch, spec)
        p = f"fire{fire}/"
        s = net.relu(net.conv(x, p + "squeeze1x1", c, sq, 1))
        a = net.relu(net.conv(s, p + "expand1x1", sq, e1, 1))
        b = net.relu(net.conv(s, p + "expand3x3", sq, e3, 3, pad=1))
        x = net.concat([a, b], p + "concat")
        c, fire = e1 + e3, fire + 1
    x = net.dropout(x, 0.5)
    if headless:
        y, _ = net.pool(x, "pool_features", "avg", h, h, 1)
        return net.finish(net.reshape(y, [1, c]), (1, c))
    x = net.relu(net.conv_classifier(x, "conv10", c, classes))
    x, h = net.pool(x, "pool10", "avg", h, h, 1)
    return net.finish(net.softmax(x, "softmaxout"), (1, classes, 1, 1))


#: Every classic network: registry name -> builder.
NETWORKS = {
    "alexnet": alexnet, "zfnet512": zfnet512, "googlenet": googlenet, "shufflenet": shufflenet,
    "inception_v2": inception_v2, "densenet121-caffe2": densenet121_caffe2, "vgg19-caffe2": vgg19_caffe2,
    "resnet50-caffe2": resnet50_caffe2, "squeezenet": squeezenet,
}
