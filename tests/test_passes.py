"""Front end and graph passes on small hand-built graphs."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import ModelLoadError, import_onnx
from compiler.ir import UnsupportedModelError

RNG = np.random.default_rng(0)


def _w(name, *shape):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _model(nodes, inits, out_shape, opset=17, in_shape=(1, 4, 8, 8), out="y", batch="N"):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *in_shape[1:]])
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _kinds(graph):
    return sorted(n.kind for n in graph.nodes())


def test_legality_reports_every_problem_at_once():
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="grouped", group=3, pads=[1] * 4),
        helper.make_node("Conv", ["a", "w2"], ["b"], name="dilated", dilations=[2, 2], pads=[2] * 4),
        helper.make_node("LeakyRelu", ["b"], ["c"], name="leaky"),
        helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                         ceil_mode=1),
    ]
    model = _model(nodes, [_w("w1", 4, 2, 3, 3), _w("w2", 4, 4, 3, 3)], ["N", 4, 4, 4])
    with pytest.raises(UnsupportedModelError) as info:
        import_onnx(model)
    problems = {p.node: p for p in info.value.problems}
    assert {"grouped", "dilated", "leaky", "pool"} <= set(problems)
    assert "group=3 does not divide" in problems["grouped"].message
    assert "dilation" in problems["dilated"].message
    assert problems["leaky"].op_type == "LeakyRelu" and "not supported" in problems["leaky"].message
    assert "ceil_mode" in problems["pool"].message
    assert str(info.value).count("\n  - ") == len(info.value.problems)


def test_shape_chain_folds_and_flatten_becomes_the_classifier_input():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Shape", ["p"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["p", "shape"], ["f"]),
        helper.make_node("Identity", ["f"], ["f2"]),
        helper.make_node("Gemm", ["f2", "fc", "fcb"], ["y"], transB=1),
    ]
    inits = [_w("w", 8, 4, 3, 3), _w("fc", 5, 8), _w("fcb", 5),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    g = import_onnx(_model(nodes, inits, ["N", 5]))
    assert _kinds(g) == ["Conv", "Conv", "GlobalPool"]
    conv = [n for n in g.nodes() if n.kind == "Conv" and n.relu][0]
    assert conv.source == "Conv+Relu"


def test_batchnorm_folds_into_conv_or_becomes_affine():
    c = 4
    bn = [numpy_helper.from_array(v.astype(np.float32), f"{p}{i}") for i in (1, 2)
          for p, v in (("g", 1 + 0.1 * RNG.standard_normal(c)), ("b", RNG.standard_normal(c)),
                       ("m", RNG.standard_normal(c)), ("v", 1 + RNG.random(c)))]
    nodes = [
        helper.make_node("BatchNormalization", ["x", "g1", "b1", "m1", "v1"], ["a"]),   # no conv before it
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["c"]),
        helper.make_node("BatchNormalization", ["c", "g2", "b2", "m2", "v2"], ["y"]),
    ]
    g = import_onnx(_model(nodes, bn + [_w("w", 4, 4, 1, 1)], ["N", 4, 8, 8]))
    assert _kinds(g) == ["Affine", "Conv"]
    affine = [n for n in g.nodes() if n.kind == "Affine"][0]
    assert affine.relu
    conv = [n for n in g.nodes() if n.kind == "Conv"][0]
    assert conv.bias is not None and "BatchNormalization" in conv.source


def test_residual_add_and_relu_fuse_into_the_later_conv():
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["b"], pads=[1] * 4),
        helper.make_node("Dropout", ["b"], ["d"]),
        helper.make_node("Sum", ["d", "r"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    g = import_onnx(_model(nodes, [_w("w1", 4, 4, 3, 3), _w("w2", 4, 4, 3, 3)], ["N", 4, 8, 8]))
    assert _kinds(g) == ["Conv", "Conv"]
    second = [n for n in g.nodes() if n.residual][0]
    assert second.relu and second.inputs[1] == "r" and second.outputs == ["y"]


def test_dead_nodes_are_removed():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Conv", ["x", "w"], ["unused"])]
    g = import_onnx(_model(nodes, [_w("w", 4, 4, 1, 1)], ["N", 4, 8, 8]))
    assert _kinds(g) == ["Relu"]


def test_unreadable_files_name_the_file(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00\x01 definitely not protobuf" * 10)
    with pytest.raises(ModelLoadError, match="garbage.onnx"):
        import_onnx(bad)
    with pytest.raises(ModelLoadError, match="no such file"):
        import_onnx(tmp_path / "missing.onnx")


def test_external_weights_are_read_and_missing_data_is_reported(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
    model = _model(nodes, [_w("w", 4, 4, 1, 1)], ["N", 4, 8, 8])
    expected = numpy_helper.to_array(model.graph.initializer[0])
    path = tmp_path / "m.onnx"
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="m.data",
                    size_threshold=0)
    g = import_onnx(path)
    conv = g.nodes()[0]
    assert np.array_equal(conv.weight, expected)
    (tmp_path / "m.data").unlink()
    with pytest.raises(ModelLoadError, match="external"):
        import_onnx(path)


def test_old_opset_with_initializers_listed_as_inputs():
    w = _w("w", 4, 4, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    wi = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 4, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    model = helper.make_model(helper.make_graph(nodes, "g", [x, wi], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    g = import_onnx(model)
    assert g.inputs == ["x"] and _kinds(g) == ["Conv"]


def test_dynamic_spatial_size_is_refused():
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "H", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "H", 8])
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError, match="dynamic"):
        import_onnx(model)


def _conv_block_inits(prefix, cin, cout, k):
    return [_w(f"{prefix}.w", cout, cin, k, k)] + [
        numpy_helper.from_array(v.astype(np.float32), f"{prefix}.{p}") for p, v in
        (("g", 1 + 0.1 * RNG.standard_normal(cout)), ("b", 0.1 * RNG.standard_normal(cout)),
         ("m", 0.1 * RNG.standard_normal(cout)), ("v", 1 + 0.1 * RNG.random(cout)))]


def _compile_and_compare(model, x, path=None, tol=2e-4):
    import onnxruntime as ort

    from compiler.compile import compile_model
    from compiler.io import run_on_simulator
    from runtime.heads import softmax

    compiled = compile_model(path or model, "tiny", "wide")
    outs, _ = run_on_simulator(compiled.program, {model.graph.input[0].name: x}, mode="functional")
    (name, y), = outs.items()
    if compiled.program.metadata["postprocess"].get(name) == "softmax":
        y = softmax(y)
    sess = ort.InferenceSession(str(path) if path else model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {model.graph.input[0].name: x})[0].reshape(-1)
    assert np.abs(y.reshape(-1) - ref).max() <= tol * np.abs(ref).max()


def test_torch_exporter_shaped_model(tmp_path):
    """Opset 18, dynamic batch, external weights, '/layer/op' names, a Shape->Gather->Concat->Reshape flatten,
    ReduceMean (axes as input) pooling, a residual Add and a Gemm classifier."""
    N = "batch_size"
    nodes = [
        helper.make_node("Conv", ["input", "c1.w"], ["/conv1/Conv_output_0"], name="/conv1/Conv", pads=[1] * 4),
        helper.make_node("BatchNormalization", ["/conv1/Conv_output_0", "c1.g", "c1.b", "c1.m", "c1.v"],
                         ["/bn1/BatchNormalization_output_0"], name="/bn1/BatchNormalization"),
        helper.make_node("Relu", ["/bn1/BatchNormalization_output_0"], ["/relu/Relu_output_0"], name="/relu/Relu"),
        helper.make_node("Conv", ["/relu/Relu_output_0", "c2.w"], ["/layer1/conv/Conv_output_0"],
                         name="/layer1/conv/Conv", pads=[1] * 4),
        helper.make_node("BatchNormalization", ["/layer1/conv/Conv_output_0", "c2.g", "c2.b", "c2.m", "c2.v"],
                         ["/layer1/bn/BatchNormalization_output_0"], name="/layer1/bn/BatchNormalization"),
        helper.make_node("Add", ["/layer1/bn/BatchNormalization_output_0", "/relu/Relu_output_0"],
                         ["/layer1/Add_output_0"], name="/layer1/Add"),
        helper.make_node("Relu", ["/layer1/Add_output_0"], ["/layer1/relu/Relu_output_0"], name="/layer1/relu/Relu"),
        helper.make_node("Constant", [], ["/Constant_output_0"], name="/Constant",
                         value=numpy_helper.from_array(np.array([2, 3], np.int64))),
        helper.make_node("ReduceMean", ["/layer1/relu/Relu_output_0", "/Constant_output_0"],
                         ["/avgpool/ReduceMean_output_0"], name="/avgpool/ReduceMean", keepdims=1),
        helper.make_node("Shape", ["/avgpool/ReduceMean_output_0"], ["/Shape_output_0"], name="/Shape"),
        helper.make_node("Constant", [], ["/Constant_1_output_0"], name="/Constant_1",
                         value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["/Shape_output_0", "/Constant_1_output_0"], ["/Gather_output_0"], name="/Gather",
                         axis=0),
        helper.make_node("Unsqueeze", ["/Gather_output_0", "axes0"], ["/Unsqueeze_output_0"], name="/Unsqueeze"),
        helper.make_node("Concat", ["/Unsqueeze_output_0", "minus1"], ["/Concat_output_0"], name="/Concat", axis=0),
        helper.make_node("Reshape", ["/avgpool/ReduceMean_output_0", "/Concat_output_0"], ["/Reshape_output_0"],
                         name="/Reshape"),
        helper.make_node("Gemm", ["/Reshape_output_0", "fc.weight", "fc.bias"], ["output"], name="/fc/Gemm",
                         alpha=1.0, beta=1.0, transB=1),
    ]
    inits = _conv_block_inits("c1", 3, 8, 3) + _conv_block_inits("c2", 8, 8, 3) + [
        _w("fc.weight", 5, 8), _w("fc.bias", 5), numpy_helper.from_array(np.array([0], np.int64), "axes0"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    x_vi = helper.make_tensor_value_info("input", TensorProto.FLOAT, [N, 3, 16, 16])
    y_vi = helper.make_tensor_value_info("output", TensorProto.FLOAT, [N, 5])
    model = helper.make_model(helper.make_graph(nodes, "main_graph", [x_vi], [y_vi], inits),
                              opset_imports=[helper.make_opsetid("", 18)], producer_name="pytorch")
    path = tmp_path / "model.onnx"
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=256)       # small shape vectors stay inline
    assert (tmp_path / "model.onnx.data").stat().st_size > 0
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
    _compile_and_compare(onnx.load(str(path)), x, path=path)


def test_caffe2_zoo_shaped_model():
    """Opset 7, initializers listed as graph inputs, BatchNormalization with spatial=1, Sum for the residual,
    inference Dropout, padded MaxPool after Relu, AveragePool, MatMul + Add classifier, final Softmax."""
    nodes = [
        helper.make_node("Conv", ["data", "c1.w"], ["c1"], pads=[1] * 4),
        helper.make_node("BatchNormalization", ["c1", "c1.g", "c1.b", "c1.m", "c1.v"], ["bn1"], spatial=1,
                         epsilon=1e-5),
        helper.make_node("Relu", ["bn1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p1", "c2.w"], ["c2"], pads=[1] * 4),
        helper.make_node("BatchNormalization", ["c2", "c2.g", "c2.b", "c2.m", "c2.v"], ["bn2"], spatial=1),
        helper.make_node("Sum", ["bn2", "p1"], ["s"]),
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("AveragePool", ["r2"], ["ap"], kernel_shape=[8, 8], strides=[1, 1]),
        helper.make_node("Dropout", ["ap"], ["d"], ratio=0.5),
        helper.make_node("Flatten", ["d"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "fc.w"], ["mm"]),
        helper.make_node("Add", ["mm", "fc.b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]
    inits = _conv_block_inits("c1", 3, 8, 3) + _conv_block_inits("c2", 8, 8, 3) + [_w("fc.w", 8, 6), _w("fc.b", 6)]
    ins = [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 16, 16])] + \
        [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits]
    out = helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 6])
    model = helper.make_model(helper.make_graph(nodes, "caffe2_net", ins, [out], inits),
                              opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
    _compile_and_compare(model, x)


def test_conv_reading_and_writing_one_concatenation_buffer_is_a_clear_compile_error():
    from compiler.compile import compile_model
    from compiler.lower.plan import CompileError

    nodes = [helper.make_node("Relu", ["x"], ["d"]), helper.make_node("Conv", ["d", "w"], ["a"], pads=[1] * 4),
             helper.make_node("Concat", ["d", "a"], ["y"], axis=1)]
    model = _model(nodes, [_w("w", 8, 4, 3, 3)], ["N", 12, 8, 8])
    with pytest.raises(CompileError, match="same concatenation buffer"):
        compile_model(model, "tiny", "wide")


def test_training_mode_dropout_is_refused():
    nodes = [helper.make_node("Dropout", ["x", "ratio", "train"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
             numpy_helper.from_array(np.array(True), "train")]
    with pytest.raises(UnsupportedModelError, match="training-mode Dropout"):
        import_onnx(_model(nodes, inits, ["N", 4, 8, 8]))
