"""A pool's output or a program input that a concatenation places inside a vector goes through the MVU.

Only a convolution can write at any lane; ``align_concat_inputs`` routes the others through an identity 1x1
convolution.  The compiled network must match onnxruntime at every layer (at ``wide``) and the numerics
contract bit for bit (at a narrow format too, where the copy rounds its input to the activation format).
"""
import numpy as np
import pytest
from onnx import TensorProto, helper

from compiler.compile import compile_model
from compiler.models.graph import GraphBuilder
from compiler.models.photos import load_photos
from compiler.verify import verify_model
from npu.preprocess import Preprocess

HW = 16


def _inception_like():
    """Conv (12 channels) and a 3x3/1 max pool of the stem (8 channels) concatenated: the pool at channel 12."""
    g = GraphBuilder("align", seed=6, input_shape=(1, 3, HW, HW))
    x = g.relu(g.conv(g.input_name, 3, 8, 3, bias=True))
    a = g.relu(g.conv(x, 8, 12, 3, bias=True))
    b = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    cat = g.op("Concat", [a, b], axis=1)
    y = g.relu(g.conv(cat, 20, 16, 3, bias=True))
    graph = helper.make_graph(g.nodes, "align", [g.input], [helper.make_tensor_value_info(y, TensorProto.FLOAT,
                                                                                         [1, 16, HW, HW])], g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("config", ["tiny", "bw-s10"])
@pytest.mark.parametrize("precision", ["wide", "ms-fp9"])
def test_a_pool_inside_a_vector_of_a_concatenation(config, precision):
    model = _inception_like()
    compiled = compile_model(model, config, precision)
    aligned = [nd for nd in compiled.graph.nodes() if nd.source == "Concat (alignment)"]
    assert len(aligned) == 1 and aligned[0].inputs == ["maxpool1"]
    inputs = [Preprocess.for_input(HW).array(p) for _, p in load_photos(["chelsea", "coffee"])]
    report = verify_model(model, config, precision, inputs, compiled=compiled)
    assert all(c.exact for c in report.layers), report.table()
    if precision == "wide":
        assert report.ok, report.table()
    weights = [np.prod(t.dims) for t in model.graph.initializer if t.name.endswith(".weight")]
    assert compiled.program.metadata.macs == sum(int(w) * HW * HW for w in weights)    # the copy is not counted


def test_an_aligned_pool_needs_no_copy():
    g = GraphBuilder("aligned", seed=7, input_shape=(1, 3, HW, HW))
    x = g.relu(g.conv(g.input_name, 3, 8, 3, bias=True))
    a = g.relu(g.conv(x, 8, 32, 3, bias=True))                   # the pool starts at channel 32: a whole vector
    b = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    y = g.op("Concat", [a, b], axis=1)
    graph = helper.make_graph(g.nodes, "aligned", [g.input], [helper.make_tensor_value_info(y, TensorProto.FLOAT,
                                                                                           [1, 40, HW, HW])], g.inits)
    compiled = compile_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), "tiny", "wide")
    assert 32 % compiled.config.native_dim == 0
    assert not [nd for nd in compiled.graph.nodes() if nd.source == "Concat (alignment)"]


@pytest.mark.parametrize("config", ["tiny", "bw-s10"])
def test_a_program_input_after_the_first_channel_of_a_concatenation(config):
    """The host writes an input into its own image, so an input concatenated after a layer's output -- even at a
    vector boundary (channel 32 on tiny) -- is copied into place (a host segment's output in host fallback)."""
    g = GraphBuilder("input_cat", seed=8, input_shape=(1, 32, 8, 8))
    a = g.relu(g.conv(g.input_name, 32, 32, 3, bias=True))
    cat = g.op("Concat", [a, g.input_name], axis=1)
    y = g.conv(cat, 64, 8, 1, bias=True)
    graph = helper.make_graph(g.nodes, "input_cat", [g.input], [helper.make_tensor_value_info(y, TensorProto.FLOAT,
                                                                                             [1, 8, 8, 8])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    compiled = compile_model(model, config, "wide")
    assert [nd.inputs for nd in compiled.graph.nodes() if nd.source == "Concat (alignment)"] == [["data"]]
    x = np.random.default_rng(0).standard_normal((1, 32, 8, 8)).astype(np.float32)
    report = verify_model(model, config, "wide", [x], compiled=compiled)
    assert report.ok and all(c.exact for c in report.layers), report.table()
