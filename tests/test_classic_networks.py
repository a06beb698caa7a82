"""The ONNX model zoo's classic ImageNet CNNs in their Caffe2-era form compile (with host fallback) and match.

``compiler.models.classic`` rebuilds AlexNet, ZFNet-512, GoogLeNet, Inception v2, ShuffleNet v1, DenseNet-121,
VGG-19, ResNet-50 and SqueezeNet 1.1 as the 2018 zoo files spell them (IR 3, initializers listed as inputs,
unnamed nodes, opset 8/9 attribute forms, LRN, Caffe's ceil-rounded pools as end padding, grouped convolutions,
the 5-d channel shuffle, Reshape / Unsqueeze on constants, a final Softmax), with seeded weights.  Each
network, at ``small`` size on ``tiny`` and ``bw-s10`` and at full size (224 x 224, 1000 classes, marked
``fullsize``) on ``bw-s10``, is compiled at ``wide`` with host fallback; every NPU layer is compared with
onnxruntime on real photographs (bit-exact with the numerics contract, cosine at wide), the whole program scored
by ``Session`` must give onnxruntime's output (cosine >= 0.9999, same top-1), and exactly the expected
operators run on the host:

* AlexNet, ZFNet-512, GoogLeNet: the two LRNs (every padded, ceil-rounded max pool stays on the NPU, also after
  an LRN);
* ShuffleNet: the channel shuffles (Reshape to 5-d, Transpose, Reshape back), and, when its padded shortcut
  average pools do not count the padding (Caffe2's pools; ONNX's default), those pools too;
* SqueezeNet: its final Softmax, which the zoo's file applies to the pooled (1, 1000, 1, 1) map (the NPU's
  Softmax takes an N x K tensor);
* DenseNet-121, VGG-19, ResNet-50, Inception v2: nothing (a plain ``CompiledModel``).  Inception v2's block 4e
  concatenates its 3x3/2 max pool at channel 448 (56 when small), inside a vector: the machine pass
  ``align_concat_inputs`` copies it there through an identity 1x1 convolution, as it does a host segment's output
  that ShuffleNet concatenates after an NPU branch.

None of the networks is too big for ``tiny`` at small size (the largest, small VGG-19, has 0.3 M weights).
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compiler.errors import CompileError
from compiler.frontend.loader import node_names
from compiler.models import classic, nets
from compiler.models.photos import load_photos
from compiler.partition import SegmentedModel, compile_with_host_fallback
from compiler.verify import verify_model, verify_segmented
from npu.preprocess import Preprocess
from runtime.session import Session

CONFIGS = ["tiny", "bw-s10"]
PHOTOS = ["chelsea", "coffee", "astronaut"]
MIN_COSINE = 0.9999


def _lrn(n: onnx.NodeProto) -> bool:
    return n.op_type == "LRN"


def _shuffle(n: onnx.NodeProto) -> bool:
    return n.op_type in ("Reshape", "Transpose") and "_shuffle" in n.output[0]


def _padded_avg_pool(n: onnx.NodeProto) -> bool:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
    return n.op_type == "AveragePool" and any(attrs.get("pads", [])) and not attrs.get("count_include_pad", 0)


def _nothing(n: onnx.NodeProto) -> bool:
    return False


#: case -> (registry name, builder options, which ONNX nodes must run on the host).
CASES = {
    "alexnet": ("alexnet", {}, _lrn),
    "zfnet512": ("zfnet512", {}, _lrn),
    "googlenet": ("googlenet", {}, _lrn),
    "shufflenet-include-pad": ("shufflenet", {"count_include_pad": True}, _shuffle),
    "shufflenet": ("shufflenet", {}, lambda n: _shuffle(n) or _padded_avg_pool(n)),
    "inception_v2": ("inception_v2", {}, _nothing),
    "inception_v2-caffe2-pools": ("inception_v2", {"count_include_pad": False}, _padded_avg_pool),
    "densenet121-caffe2": ("densenet121-caffe2", {}, _nothing),
    "vgg19-caffe2": ("vgg19-caffe2", {}, _nothing),
    "resnet50-caffe2": ("resnet50-caffe2", {}, _nothing),
    "squeezenet": ("squeezenet", {}, lambda n: n.op_type == "Softmax"),
}


def _cases(names=CASES):
    """``CASES`` as pytest params."""
    return list(names)


def _build(case: str, size: str) -> onnx.ModelProto:
    name, options, _ = CASES[case]
    return nets.MODELS[name](size=size, **options)


def _side(model: onnx.ModelProto) -> int:
    return model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value


def _photos(model: onnx.ModelProto, count: int) -> list[np.ndarray]:
    recipe = Preprocess.for_input(_side(model))
    return [recipe.array(p) for _, p in load_photos(PHOTOS[:count])]


def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _host_outputs(model: onnx.ModelProto, compiled) -> set[str]:
    """The output tensors of the ONNX nodes that run on the host."""
    if not isinstance(compiled, SegmentedModel):
        return set()
    nodes = dict(zip(node_names(model.graph), model.graph.node))
    return {nodes[p["node"]].output[0] for p in compiled.host_ops}


def check_network(case: str, model: onnx.ModelProto, config: str, photos: int) -> None:
    """Compile ``model`` (of ``case``) with host fallback at wide; assert its host operators, every NPU layer and
    the whole program's output on ``photos`` photographs."""
    expected_host = {n.output[0] for n in model.graph.node if CASES[case][2](n)}
    inputs = _photos(model, photos)
    assert all(np.std(x) > 0.1 for x in inputs)                            # the inputs carry signal
    compiled = compile_with_host_fallback(model, config, "wide")
    assert _host_outputs(model, compiled) == expected_host
    assert isinstance(compiled, SegmentedModel) == bool(expected_host)
    if isinstance(compiled, SegmentedModel):
        report = verify_segmented(model, compiled, "wide", inputs)
        assert all(r.layers for _, r in report.segments)                   # every NPU segment is checked
    else:
        report = verify_model(model, config, "wide", inputs, compiled=compiled)
    assert report.ok, report.table()
    assert report.layers and all(c.exact for c in report.layers), report.table()
    session = Session(compiled.program)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = ref.get_inputs()[0].name
    for x in inputs:
        got = session.score_numpy_array(x).output
        (want,) = ref.run(None, {name: x})
        assert got.shape == want.shape
        assert _cosine(got, want) >= MIN_COSINE
        assert int(np.argmax(got)) == int(np.argmax(want))


# --- the Caffe2-era form ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_small_network_is_valid_and_runs_in_onnxruntime(case):
    model = _build(case, "small")
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _photos(model, 1)[0]
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x})
    classes = 10
    assert y.shape in ((1, classes), (1, classes, 1, 1)) and np.isfinite(y).all()
    assert _side(model) <= 80


@pytest.mark.parametrize("name", classic.NETWORKS)
def test_small_network_is_written_as_the_caffe2_converter_wrote_it(name):
    model = nets.MODELS[name](size="small")
    g = model.graph
    assert model.ir_version == 3 and model.producer_name == "onnx-caffe2"
    opset = model.opset_import[0].version
    assert opset == (8 if any(n.op_type == "BatchNormalization" for n in g.node) else 9)
    assert {t.name for t in g.initializer} <= {i.name for i in g.input}     # initializers listed as inputs
    assert len(g.input) == len(g.initializer) + 1
    assert not any(n.name for n in g.node)                                  # Caffe2 left nodes unnamed
    for n in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "BatchNormalization":
            assert attrs["spatial"] == 1                                    # BatchNormalization-7
        if n.op_type == "Dropout":
            assert set(attrs) == {"ratio"}                                  # Dropout-7: no is_test
        if n.op_type == "LRN":
            assert attrs == {"size": 5, "alpha": pytest.approx(1e-4), "beta": 0.75, "bias": 1.0}
        if n.op_type == "Unsqueeze":
            assert "axes" in attrs and len(n.input) == 1                    # the attribute form
        if n.op_type == "Gemm":
            assert attrs.get("transB") == 1
    last = g.node[-1]
    if name == "densenet121-caffe2":                                        # the zoo's fc6_1 (1, 1000, 1, 1)
        assert last.op_type == "Conv" and g.output[0].name == "fc6_1"
    else:
        assert last.op_type == "Softmax"


def test_network_specific_forms():
    ops = {name: [n for n in nets.MODELS[name](size="small").graph.node] for name in classic.NETWORKS}

    def attrs(n):
        return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}

    # Caffe's ceil-rounded pools as end padding: AlexNet's pool1, GoogLeNet's four stage pools
    assert [attrs(n).get("pads") for n in ops["alexnet"] if n.op_type == "MaxPool"] == [[0, 0, 1, 1], None, None]
    assert sum(attrs(n).get("pads") == [0, 0, 1, 1] for n in ops["googlenet"] if n.op_type == "MaxPool") == 4
    # AlexNet's grouped convolutions; ShuffleNet's group-3 1x1s, depthwise 3x3s and 5-d shuffles
    assert [attrs(n).get("group", 1) for n in ops["alexnet"] if n.op_type == "Conv"] == [1, 2, 1, 2, 2]
    shuffle = [n for n in ops["shufflenet"] if _shuffle(n)]
    assert [n.op_type for n in shuffle] == ["Reshape", "Transpose", "Reshape"] * 3
    assert all(attrs(n)["perm"] == [0, 2, 1, 3, 4] for n in shuffle if n.op_type == "Transpose")
    assert {n.op_type for n in ops["shufflenet"] if n.op_type in ("Concat", "Add")} == {"Concat", "Add"}
    # GoogLeNet and Inception v2: nine / ten inception blocks
    assert sum(n.op_type == "Concat" for n in ops["googlenet"]) == 9
    assert sum(n.op_type == "Concat" and n.output[0].startswith("inception_") for n in ops["inception_v2"]) == 10
    # Inception v2: Reshape through Shape -> Gather -> Unsqueeze -> Concat; DenseNet: Scale as Unsqueeze + Mul/Add
    assert [n.op_type for n in ops["inception_v2"][-7:-2]] == ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape"]
    assert sum(n.op_type == "Unsqueeze" for n in ops["densenet121-caffe2"]) == \
        2 * sum(n.op_type == "BatchNormalization" for n in ops["densenet121-caffe2"])
    # ResNet-50 joins with Sum; the Caffe2 trainer's gpu_0/ names
    assert any(n.op_type == "Sum" for n in ops["resnet50-caffe2"])
    assert all(n.output[0].startswith("gpu_0/") for n in ops["resnet50-caffe2"] + ops["zfnet512"]
               if not n.output[0].startswith("OC2_DUMMY"))


def test_the_registry_and_the_command_line(tmp_path):
    from compiler.models.__main__ import main

    for name in classic.NETWORKS:
        assert name in nets.MODELS
        small = nets.MODELS[name](seed=1, headless=True, size="small")      # the CLI's keywords, and size
        assert small.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 1
        assert len(small.graph.output[0].type.tensor_type.shape.dim) == 2
    a, b = nets.MODELS["googlenet"](size="small", seed=0), nets.MODELS["googlenet"](size="small", seed=1)
    assert a.graph.initializer[0].raw_data != b.graph.initializer[0].raw_data
    with pytest.raises(ValueError, match="size"):
        nets.MODELS["alexnet"](size="medium")
    assert main(["squeezenet", "-o", str(tmp_path / "s.onnx"), "--seed", "2"]) == 0     # full size: 1.2 M weights
    model = onnx.load(str(tmp_path / "s.onnx"))
    assert model.ir_version == 3 and model.graph.output[0].name == "softmaxout_1"


# --- small networks: compile, host operators, every layer, the whole program ------------------------------------

@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("case", _cases())
def test_small_network_compiles_with_host_fallback_and_matches(case, config):
    check_network(case, _build(case, "small"), config, photos=3)


@pytest.mark.parametrize("name, options", [
    ("googlenet", {"opset": 10}),                     # ceil_mode=1 instead of the end padding
    ("alexnet", {"opset": 7}),
    ("resnet50-caffe2", {"opset": 9}),                # BatchNormalization-9: no spatial attribute
    ("densenet121-caffe2", {"opset": 9}),
    ("shufflenet", {"opset": 9, "count_include_pad": True}),
])
def test_other_opsets_compile_alike(name, options):
    model = nets.MODELS[name](size="small", **options)
    onnx.checker.check_model(model)
    plain = nets.MODELS[name](size="small", **{k: v for k, v in options.items() if k != "opset"})
    compiled = compile_with_host_fallback(model, "tiny", "wide")
    host, plain_host = _host_outputs(model, compiled), _host_outputs(plain, compile_with_host_fallback(plain, "tiny",
                                                                                                     "wide"))
    assert sorted(n.op_type for n in model.graph.node if n.output[0] in host) == \
        sorted(n.op_type for n in plain.graph.node if n.output[0] in plain_host)
    if name == "googlenet":
        assert sum(any(a.name == "ceil_mode" and a.i == 1 for a in n.attribute) for n in model.graph.node) == 4
    report = verify_segmented(model, compiled, "wide", _photos(model, 2)) if isinstance(compiled, SegmentedModel) \
        else verify_model(model, "tiny", "wide", _photos(model, 2), compiled=compiled)
    assert report.ok and all(c.exact for c in report.layers), report.table()


@pytest.mark.parametrize("case, config", [("inception_v2", "tiny"), ("shufflenet", "bw-s10")])
def test_concatenation_inputs_inside_a_vector_go_through_the_mvu(case, config):
    """Inception v2's 4e max pool at channel 56 of its Concat, ShuffleNet's host-pooled shortcut after its NPU
    branch: each reaches its lanes through an identity 1x1 convolution (a layer the model does not have)."""
    compiled = compile_with_host_fallback(_build(case, "small"), config, "wide")
    programs = [compiled] if not isinstance(compiled, SegmentedModel) else list(compiled.compiled.values())
    aligned = [nd for c in programs for nd in c.graph.nodes() if nd.source == "Concat (alignment)"]
    assert aligned and all(np.array_equal(nd.weight[:, :, 0, 0], np.eye(nd.weight.shape[0])) for nd in aligned)
    assert all(nd.macs((1, 1)) == 0 for nd in aligned)                  # not counted as the model's work


# --- full size (224 x 224, 1000 classes) on bw-s10 --------------------------------------------------------------

#: Trainable parameters (weights, biases, batch-norm / Scale affine; not the running statistics) of the full
#: networks: the published counts of AlexNet, VGG-19, ResNet-50, DenseNet-121 and SqueezeNet 1.1, and this
#: module's for the others (ZFNet-512: the zoo file's 341 MB).
FULL_PARAMETERS = {
    "alexnet": 60_965_224, "zfnet512": 84_558_952, "googlenet": 6_998_552, "shufflenet-include-pad": 1_865_728,
    "shufflenet": 1_865_728, "inception_v2": 11_285_224, "inception_v2-caffe2-pools": 11_285_224,
    "densenet121-caffe2": 7_978_856, "vgg19-caffe2": 143_667_240, "resnet50-caffe2": 25_557_032, "squeezenet": 1_235_496,
}
#: Convolutions (with the fully connected layers) of the full networks.
FULL_MATRIX_OPS = {
    "alexnet": 8, "zfnet512": 8, "googlenet": 58, "shufflenet-include-pad": 50, "shufflenet": 50,
    "inception_v2": 70, "inception_v2-caffe2-pools": 70, "densenet121-caffe2": 121, "vgg19-caffe2": 19, "resnet50-caffe2": 54, "squeezenet": 26,
}
#: Photographs per full-size network (VGG-19 and ZFNet-512, the largest, on one).
FULL_PHOTOS = {"vgg19-caffe2": 1, "zfnet512": 1}


def _trainable(model: onnx.ModelProto) -> int:
    skip = ("_rm_0", "_riv_0") + (("_bn_s_0", "_bn_b_0") if model.graph.name == "densenet121" else ())
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT and not t.name.endswith(skip))


@pytest.mark.fullsize
@pytest.mark.parametrize("case", _cases())
def test_full_size_network_on_bw_s10(case):
    model = _build(case, "full")
    assert _side(model) == 224 and model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 1000
    assert _trainable(model) == FULL_PARAMETERS[case]
    assert sum(n.op_type in ("Conv", "Gemm") for n in model.graph.node) == FULL_MATRIX_OPS[case]
    check_network(case, model, "bw-s10", photos=FULL_PHOTOS.get(case, 2))
