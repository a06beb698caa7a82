"""What onnxruntime accepts from older exporters (Caffe2-era IR 3, opset 7-10) compiles and matches it.

Small instances of the structures that made GoogLeNet, Inception v2 and the Caffe2 DenseNet-121 fail: a padded
MaxPool after a Concat of ReLU outputs (value facts carried through the Concat), older opsets' attribute forms of
Unsqueeze/Squeeze/Pad/Clip, IR-3 models whose initializers are not all graph inputs, and grouped convolutions.
Each compiles at ``wide`` on ``tiny`` and ``bw-s10`` and matches onnxruntime at every layer.
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from compiler.compile import compile_model
from compiler.errors import UnsupportedModelError
from compiler.frontend import load_onnx
from compiler.frontend.legacy import modern_form
from compiler.ir import Pool
from compiler.models.graph import GraphBuilder
from compiler.models.photos import load_photos
from compiler.passes import fold_constants
from compiler.verify import verify_model

CONFIGS = ["tiny", "bw-s10"]
HW = 32


# --- model builders -------------------------------------------------------------------------------------------

def _group_conv(g: GraphBuilder, x: str, cin: int, cout: int, k: int, group: int) -> str:
    fan_in = cin // group * k * k
    w = g.rng.standard_normal((cout, cin // group, k, k)).astype(np.float32) * np.float32(np.sqrt(2 / fan_in))
    b = 0.05 * g.rng.standard_normal(cout)
    name = f"gconv{len(g.nodes)}"
    return g.op("Conv", [x, g.const(f"{name}.w", w), g.const(f"{name}.b", b)], kernel_shape=[k, k],
                pads=[k // 2] * 4, group=group)


def _head(g: GraphBuilder, x: str, c: int, classes: int = 10) -> str:
    p = g.op("GlobalAveragePool", [x])
    f = g.op("Flatten", [p], axis=1)
    return g.dense(f, c, classes)


def _inception(opset: int = 13, negative_branch: bool = False) -> onnx.ModelProto:
    """Stem, one Inception-v1 block (1x1, 3x3, 5x5 and a 3x3/1 padded max pool branch), a padded max pool of the
    Concat, then the classifier.  ``negative_branch``: the 1x1 branch has no ReLU (can be negative)."""
    g = GraphBuilder("inception_block", seed=3, input_shape=(1, 3, HW, HW))
    x = g.relu(g.conv(g.input_name, 3, 16, 3, bias=True))
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    b1 = g.conv(x, 16, 8, 1, bias=True)
    b1 = b1 if negative_branch else g.relu(b1)
    b2 = g.relu(g.conv(g.relu(g.conv(x, 16, 8, 1, bias=True)), 8, 12, 3, bias=True))
    b3 = g.relu(g.conv(g.relu(g.conv(x, 16, 4, 1, bias=True)), 4, 6, 5, bias=True))
    b4 = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    b4 = g.relu(g.conv(b4, 16, 6, 1, bias=True))
    cat = g.op("Concat", [b1, b2, b3, b4], axis=1)
    y = g.op("MaxPool", [cat], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    return g.finish(_head(g, y, 32), (1, 10), opset=opset)


def _as_ir3(model: onnx.ModelProto, opset: int = 9) -> onnx.ModelProto:
    """``model`` as a Caffe2-era exporter wrote it: IR 3 at ``opset``, initializers NOT listed as graph inputs
    (as after a tool rewrote the weights)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.ir_version = 3
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("", opset))
    inits = {t.name for t in m.graph.initializer}
    assert not inits & {vi.name for vi in m.graph.input}
    return m


def _legacy_shapes(opset: int = 9) -> onnx.ModelProto:
    """Inception v2 / Caffe2 DenseNet style: Unsqueeze, Squeeze and Reshape (attribute forms) on constants make a
    per-channel scale and the classifier's target shape."""
    g = GraphBuilder("legacy_shapes", seed=5, input_shape=(1, 3, HW, HW))
    x = g.relu(g.conv(g.input_name, 3, 8, 3, bias=True))
    scale = g.const("scale", 2 * g.rng.random(8))                             # (8,)
    scale = g.op("Clip", [scale], min=0.5, max=1.5)                           # Clip (attributes) on a constant
    s4 = g.op("Unsqueeze", [scale], axes=[0, 2, 3])                           # (1, 8, 1, 1)
    x = g.op("Mul", [x, s4])
    bias = g.const("bias", 0.1 * g.rng.standard_normal((1, 6)))               # (1, 6)
    bias = g.op("Pad", [bias], pads=[0, 1, 0, 1], value=0.25)                 # Pad (attributes) on a constant: (1, 8)
    b = g.op("Squeeze", [bias], axes=[0])                                     # (8,)
    b = g.op("Unsqueeze", [b], axes=[1, 2])                                   # (8, 1, 1)
    x = g.op("Add", [x, b])
    p = g.op("GlobalAveragePool", [x])
    one = g.const("one", np.array(1, np.int64), np.int64)
    minus = g.const("minus", np.array([[-1]], np.int64), np.int64)
    shape = g.op("Concat", [g.op("Unsqueeze", [one], axes=[0]), g.op("Squeeze", [minus], axes=[1])], axis=0)
    f = g.op("Reshape", [p, shape])
    return g.finish(g.dense(f, 8, 10), (1, 10), opset=opset)


def _legacy_pad_clip(opset: int) -> onnx.ModelProto:
    """Pad (pads/value attributes) before a padded max pool and Clip (min/max attributes) as ReLU6 and as a
    plain clip: the opset 9/10 forms."""
    g = GraphBuilder("legacy_pad_clip", seed=7, input_shape=(1, 3, HW, HW))
    x = g.conv(g.input_name, 3, 8, 3, bias=True)
    x = g.op("Clip", [x], min=0.0, max=6.0)                                  # ReLU6, fused into the conv
    x = g.op("Pad", [x], mode="constant", pads=[0, 0, 1, 1, 0, 0, 1, 1], value=0.0)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2])            # the Pad folds into it
    x = g.conv(x, 8, 8, 3, bias=True)
    x = g.op("Pad", [x], mode="constant", pads=[0, 0, 1, 1, 0, 0, 1, 1], value=0.0)
    x = g.conv(x, 8, 8, 3, pad=0, bias=True)                                  # the Pad folds into the conv
    x = g.op("Clip", [x], min=-1.0, max=1.5)
    return g.finish(_head(g, x, 8), (1, 10), opset=opset)


def _grouped(group: int, opset: int = 13) -> onnx.ModelProto:
    """AlexNet-style (group=2) or ShuffleNet-style (group=4) grouped convolutions."""
    g = GraphBuilder(f"grouped{group}", seed=11, input_shape=(1, 3, HW, HW))
    x = g.relu(g.conv(g.input_name, 3, 16, 3, bias=True))
    x = g.relu(_group_conv(g, x, 16, 32, 3, group))
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2])
    x = g.relu(_group_conv(g, x, 32, 32, 1, group))
    return g.finish(_head(g, x, 32), (1, 10), opset=opset)


def _non_negative_chain() -> onnx.ModelProto:
    """The value fact through an Add of ReLU outputs, an average pool and Dropout into a zero Pad that folds into
    a max pool, and through a Concat of a Clip(0, 4) and a ReLU output into a padded max pool."""
    g = GraphBuilder("non_negative_chain", seed=13, input_shape=(1, 3, HW, HW))
    a = g.relu(g.conv(g.input_name, 3, 8, 3, bias=True))
    b = g.relu(g.conv(g.input_name, 3, 8, 3, bias=True))
    x = g.op("Add", [a, b])
    x = g.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Dropout", [x])
    x = g.op("Pad", [x], mode="constant", pads=[0, 0, 1, 1, 0, 0, 1, 1])
    y = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1])           # folds: a padded max pool
    c = g.op("Clip", [g.conv(y, 8, 8, 3, bias=True)], min=0.0, max=4.0)
    z = g.op("Concat", [c, g.relu(g.conv(y, 8, 8, 3, bias=True))], axis=1)
    z = g.op("MaxPool", [z], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    return g.finish(_head(g, z, 16), (1, 10), opset=10)


MODELS = {
    "inception_v1_block": lambda: _inception(),
    "inception_v1_block_ir3_opset9": lambda: _as_ir3(_inception(opset=9)),
    "legacy_unsqueeze_squeeze_reshape_opset9": lambda: _as_ir3(_legacy_shapes(9)),
    "legacy_pad_clip_opset9": lambda: _as_ir3(_legacy_pad_clip(9)),
    "legacy_pad_clip_opset10": lambda: _legacy_pad_clip(10),
    "non_negative_chain_opset10": _non_negative_chain,
    "alexnet_group2": lambda: _grouped(2),
    "shufflenet_group4": lambda: _grouped(4),
}


def _photos(model, config) -> list[np.ndarray]:
    recipe = compile_model(model, config, "wide").program.metadata.preprocess
    return [recipe.array(img) for _, img in load_photos(["chelsea", "coffee"])]


# --- tests ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MODELS))
def test_onnxruntime_accepts_the_model(name):
    model = MODELS[name]()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"data": np.ones((1, 3, HW, HW), np.float32)})
    assert y.shape == (1, 10)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", list(MODELS))
def test_the_model_compiles_at_wide_and_matches_onnxruntime_at_every_layer(name, config):
    model = MODELS[name]()
    inputs = _photos(model, config)
    assert all(np.std(x) > 0.1 for x in inputs)                              # the inputs carry signal
    report = verify_model(model, config, "wide", inputs)
    assert report.ok, [(c.tensor, c.why) for c in report.layers if c.departs]
    assert len(report.layers) >= 5


def test_the_padded_max_pool_after_the_concat_stays_a_padded_max_pool():
    graph = compile_model(_inception(), "tiny", "wide").graph
    pools = [n for n in graph.nodes() if isinstance(n, Pool) and n.mode == "max" and any(n.pads)]
    assert any(graph.producer(n.inputs[0]).kind == "Concat" for n in pools)


def test_a_padded_max_pool_over_a_concat_that_can_be_negative_is_still_refused():
    with pytest.raises(UnsupportedModelError, match="padded max pooling is only supported on non-negative input"):
        compile_model(_inception(negative_branch=True), "tiny", "wide")


def test_an_ir3_model_with_initializers_not_listed_as_inputs_loads_and_keeps_one_input():
    model = _as_ir3(_inception(opset=9))
    with pytest.raises(onnx.checker.ValidationError, match="initializer but not in graph input"):
        onnx.checker.check_model(model)                                       # the strict checker refuses it
    graph = load_onnx(model)
    assert graph.inputs == ["data"]
    assert {t.name for t in model.graph.initializer} <= set(graph.constants)


def test_an_ir3_model_still_fails_the_other_checks():
    model = _as_ir3(_inception(opset=9))
    model.graph.node[0].op_type = "NoSuchOperator"
    with pytest.raises(Exception, match="NoSuchOperator"):
        load_onnx(model)


@pytest.mark.parametrize("op, opset, attrs, added", [
    ("Unsqueeze", 9, {"axes": [0, 2]}, [[0, 2]]),
    ("Squeeze", 11, {"axes": [1]}, [[1]]),
    ("Reshape", 4, {"shape": [1, -1]}, [[1, -1]]),
    ("Pad", 10, {"pads": [0, 0, 1, 1], "value": 0.5, "mode": "constant"}, [[0, 0, 1, 1], 0.5]),
    ("Clip", 9, {"min": 0.0}, [0.0, None]),
])
def test_older_attribute_forms_become_the_later_input_forms(op, opset, attrs, added):
    new_opset, add, rest = modern_form(op, opset, ["x"], attrs)
    assert new_opset > opset
    assert [None if v is None else np.asarray(v).tolist() for _, _, v in add] == added
    assert not {"axes", "shape", "pads", "value", "min", "max"} & set(rest)
    assert modern_form(op, 13, ["x", "y"], {}) is None                      # the current forms are left alone


def test_an_older_unsqueeze_on_constants_folds():
    graph = load_onnx(_as_ir3(_legacy_shapes(9)))
    folded = fold_constants(graph)
    assert not any(getattr(n, "op_type", "") in ("Unsqueeze", "Squeeze", "Concat", "Pad", "Clip") and
                   all(folded.is_constant(t) for t in n.inputs) for n in folded.nodes())


# --- ceil_mode max pooling (GoogLeNet's, SSD's pool3) ------------------------------------------------------------

@pytest.mark.parametrize("side,kernel,stride,pad", [(75, 2, 2, 0), (8, 3, 2, 1), (13, 3, 2, 0), (5, 2, 2, 0),
                                                    (7, 3, 3, 0), (8, 2, 1, 1)])
def test_ceil_mode_max_pool_matches_onnxruntime(side, kernel, stride, pad):
    """A ceil_mode MaxPool on non-negative input is a floor-mode pool with extra end padding (its last window
    hangs over the edge); the output size and every value as onnxruntime has them."""
    g = GraphBuilder("ceil_pool", seed=4, input_shape=(1, 3, side, side))
    x = g.relu(g.conv(g.input_name, 3, 8, 3, bias=True))
    y = g.op("MaxPool", [x], kernel_shape=[kernel] * 2, strides=[stride] * 2, pads=[pad] * 4, ceil_mode=1)
    graph = helper.make_graph(g.nodes, "ceil_pool", [g.input], [helper.make_tensor_value_info(y, 1, ["n", "c", "h", "w"])],
                              g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x_in = np.random.default_rng(side).standard_normal((1, 3, side, side)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"data": x_in})[0]
    assert want.shape[-1] == -(-(side + 2 * pad - kernel) // stride) + 1        # the ceil_mode size
    report = verify_model(model, "tiny", "wide", [x_in])
    assert report.ok and all(c.exact for c in report.layers)
    assert report.layers[-1].shape == want.shape[1:] and report.layers[-1].cosine > 0.99999


def test_ceil_mode_where_onnx_and_onnxruntime_disagree_is_refused_clearly():
    """onnx's shape inference keeps a last window that starts past the input; onnxruntime drops it.  The compiler
    sides with onnxruntime and says so instead of compiling a shape the model's own graph contradicts."""
    g = GraphBuilder("ceil_pool", seed=4, input_shape=(1, 3, 13, 13))
    x = g.relu(g.conv(g.input_name, 3, 8, 3, bias=True))
    y = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2], pads=[1] * 4, ceil_mode=1)
    graph = helper.make_graph(g.nodes, "ceil_pool", [g.input], [helper.make_tensor_value_info(y, 1, ["n", "c", "h", "w"])],
                              g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedModelError, match=r"shape inference gives the output 'maxpool1' shape \[1, 8, 8, 8\], "
                                                    r"the compiler computes \[1, 8, 7, 7\]"):
        compile_model(model, "tiny", "wide")
