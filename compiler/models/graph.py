"""A small ONNX graph builder with seeded synthetic (or given, trained) weights, shared by the reference networks."""
from __future__ import annotations

import functools
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    """Accumulates nodes and initializers; each layer helper returns its output tensor name."""

    def __init__(self, name: str, seed: int, input_name: str = "data", input_shape=(1, 3, 224, 224)):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.input = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))
        self.input_name = input_name
        self._count: dict[str, int] = {}
        self._shared: set[str] = set()

    def _name(self, kind: str) -> str:
        self._count[kind] = self._count.get(kind, 0) + 1
        return f"{kind}{self._count[kind]}"

    def const(self, name: str, array: np.ndarray, dtype=np.float32) -> str:
        """Add an initializer (float32 unless ``dtype`` says otherwise)."""
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, pad: int | None = None,
             bias: bool = False) -> str:
        """A k x k convolution with He-normal weights."""
        name = self._name("conv")
        pad = k // 2 if pad is None else pad
        w = self.rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(np.sqrt(2.0 / (cin * k * k)))
        inputs = [x, self.const(f"{name}.weight", w)]
        if bias:
            inputs.append(self.const(f"{name}.bias", 0.01 * self.rng.standard_normal(cout)))
        self.nodes.append(helper.make_node("Conv", inputs, [name], name=name, kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[pad] * 4))
        return name

    def bn(self, x: str, c: int, gamma_scale: float = 1.0) -> str:
        """Inference batch normalisation with sane random statistics (keeps activations O(1)).

        ``gamma_scale`` < 1 damps a residual branch so that deep residual
        stacks keep their activations bounded (as zero-init residual training does).
        """
        name = self._name("bn")
        gamma = gamma_scale * (1.0 + 0.1 * self.rng.standard_normal(c))
        beta = 0.1 * self.rng.standard_normal(c)
        mean = 0.1 * self.rng.standard_normal(c)
        var = 1.0 + 0.1 * np.abs(self.rng.standard_normal(c))
        ins = [x] + [self.const(f"{name}.{p}", v) for p, v in
                     (("scale", gamma), ("bias", beta), ("mean", mean), ("var", var))]
        self.nodes.append(helper.make_node("BatchNormalization", ins, [name], name=name, epsilon=1e-5))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        """Any other single-output node."""
        name = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True,
                gamma_scale: float = 1.0) -> str:
        """Conv (no bias) -> BatchNorm -> optional ReLU."""
        y = self.bn(self.conv(x, cin, cout, k, stride), cout, gamma_scale)
        return self.relu(y) if relu else y

    def dense(self, x: str, cin: int, cout: int) -> str:
        """Gemm with transB (the torchvision classifier form)."""
        name = self._name("fc")
        w = self.rng.standard_normal((cout, cin), dtype=np.float32) * np.float32(np.sqrt(1.0 / cin))
        self.nodes.append(helper.make_node(
            "Gemm", [x, self.const(f"{name}.weight", w), self.const(f"{name}.bias", 0.01 * self.rng.standard_normal(cout))],
            [name], name=name, transB=1))
        return name

    def calibrated_dense(self, x: str, cin: int, cout: int, images: np.ndarray, opset: int = 17) -> str:
        """A classifier whose logits depend on the input, as a trained one's do.

        With random weights, the features of every image share a large
        common part, so a random classifier gives every image the same
        class.  Here the features of calibration ``images`` (computed with
        onnxruntime on the graph built so far) are standardised inside the
        classifier: W' = W / sigma, b = -W' mu.
        """
        import onnxruntime as ort

        probe = self.finish(x, [1, cin], opset)
        sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        feats = np.concatenate([sess.run(None, {self.input_name: img[None]})[0] for img in images]).astype(np.float64)
        mu, sigma = feats.mean(axis=0), feats.std(axis=0) + 1e-3 * (feats.std() + 1e-12)
        name = self._name("fc")
        w = self.rng.standard_normal((cout, cin)) / np.sqrt(cin) / sigma
        b = -w @ mu
        self.nodes.append(helper.make_node(
            "Gemm", [x, self.const(f"{name}.weight", w.astype(np.float32)), self.const(f"{name}.bias", b)],
            [name], name=name, transB=1))
        return name

    # Layers with given (e.g. trained) parameters; ``param`` names their initializers (default: the node name).

    def conv_given(self, x: str, weight: np.ndarray, bias: np.ndarray | None = None, stride: int = 1,
                   pads=(0, 0, 0, 0), group: int = 1, param: str | None = None) -> str:
        """Conv with the given (cout, cin / group, kh, kw) weights; ``pads`` (top, left, bottom, right) as in ONNX."""
        name = self._name("conv")
        param = param or name
        weight = np.asarray(weight, np.float32)
        inputs = [x, self.const(f"{param}.weight", weight)]
        if bias is not None:
            inputs.append(self.const(f"{param}.bias", bias))
        self.nodes.append(helper.make_node("Conv", inputs, [name], name=name, kernel_shape=list(weight.shape[2:]),
                                           strides=[stride, stride], pads=[int(p) for p in pads], group=group))
        return name

    def bn_given(self, x: str, scale, bias, mean, var, epsilon: float = 1e-5, param: str | None = None) -> str:
        """Inference BatchNormalization with the given statistics."""
        name = self._name("bn")
        param = param or name
        ins = [x] + [self.const(f"{param}.{p}", v) for p, v in
                     (("weight", scale), ("bias", bias), ("running_mean", mean), ("running_var", var))]
        self.nodes.append(helper.make_node("BatchNormalization", ins, [name], name=name, epsilon=float(epsilon)))
        return name

    def pad(self, x: str, pads) -> str:
        """Constant zero Pad (the ``ZeroPad2d`` export); ``pads`` in ONNX order, one begin and one end per axis."""
        name = self._name("pad")
        p = self.const(f"{name}.pads", np.asarray(pads, np.int64), np.int64)
        self.nodes.append(helper.make_node("Pad", [x, p], [name], name=name, mode="constant"))
        return name

    def clip(self, x: str, lo: float, hi: float) -> str:
        """Clip with min / max as scalar initializer inputs (the opset >= 11 form; ReLU6 is clip(0, 6))."""
        names = []
        for bound, value in (("min", lo), ("max", hi)):
            cname = f"clip.{bound}_{value:g}"
            if cname not in self._shared:                       # one pair of bound initializers per value
                self._shared.add(self.const(cname, np.float32(value)))
            names.append(cname)
        return self.op("Clip", [x] + names)

    def dense_given(self, x: str, weight: np.ndarray, bias: np.ndarray, param: str | None = None) -> str:
        """Gemm with transB and the given (cout, cin) weight and bias (the torch ``Linear`` export)."""
        name = self._name("fc")
        param = param or name
        self.nodes.append(helper.make_node(
            "Gemm", [x, self.const(f"{param}.weight", weight), self.const(f"{param}.bias", bias)],
            [name], name=name, transB=1))
        return name

    def finish(self, output: str, out_shape, opset: int = 17, metadata: dict | None = None) -> onnx.ModelProto:
        """The checked model with one output named ``output``.

        ``metadata`` (JSON-ready values) goes into the model's
        ``metadata_props``, each value as JSON text: ``preprocess`` and
        ``labels`` there are what the compiler stores in the program.
        """
        graph = helper.make_graph(self.nodes, self.name, [self.input],
                                  [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(out_shape))],
                                  self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name="npu-toolkit model builders")
        if metadata:
            helper.set_model_props(model, {k: json.dumps(v) for k, v in metadata.items()})
        onnx.checker.check_model(model)
        return model


def cached(builder):
    """Build each (arguments) network once per process; callers get their own copy of the ModelProto."""
    build = functools.lru_cache(maxsize=8)(builder)

    @functools.wraps(builder)
    def wrapper(*args, **kwargs):
        model = onnx.ModelProto()
        model.CopyFrom(build(*args, **kwargs))
        return model

    return wrapper
