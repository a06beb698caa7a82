"""Models exported from NHWC frameworks: the layout Transposes fold into the program's input and output."""
import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.compile import compile_model
from compiler.frontend import import_onnx
from npu.hostio import run_on_simulator
from compiler.ir import OnnxOp
from compiler.verify import verify_model

RNG = np.random.default_rng(0)


def _nhwc_model(tail: str, hw=(10, 12)):
    """NHWC input -> Transpose -> Conv/2 -> ReLU -> Transpose to NHWC -> tail."""
    h, w = hw
    oh, ow = -(-h // 2), -(-w // 2)
    inits = {"w": RNG.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.3,
             "shape": np.array([1, -1], np.int64)}
    nodes = [helper.make_node("Transpose", ["data"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Transpose", ["r"], ["rt"], perm=[0, 2, 3, 1])]
    k = 16 * oh * ow
    if tail == "output":
        out, shape = "rt", [1, oh, ow, 16]
    else:
        flat = helper.make_node("Reshape", ["rt", "shape"], ["f"]) if tail != "flatten" else \
            helper.make_node("Flatten", ["rt"], ["f"], axis=1)
        nodes.append(flat)
        if tail == "matmul":
            inits["fc"] = RNG.standard_normal((k, 10)).astype(np.float32) * 0.1
            nodes.append(helper.make_node("MatMul", ["f", "fc"], ["out"]))
        else:
            inits["fc"] = RNG.standard_normal((10, k)).astype(np.float32) * 0.1
            nodes.append(helper.make_node("Gemm", ["f", "fc"], ["out"], transB=1))
        out, shape = "out", [1, 10]
    g = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, h, w, 3])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)],
                          [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("tail", ["reshape", "flatten", "matmul", "output"])
@pytest.mark.parametrize("preset", ["tiny", "bw-s10"])
def test_nhwc_models_compile_without_transposes(tail, preset):
    model = _nhwc_model(tail)
    graph = import_onnx(model)
    assert not any(isinstance(n, OnnxOp) for n in graph.nodes())          # no Transpose is left
    compiled = compile_model(model, preset, "wide")
    (desc,) = compiled.program.inputs
    assert desc.shape == (10, 12, 3) and desc.params.order == "hwc"
    x = RNG.standard_normal((1, 10, 12, 3)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
    outs, _ = run_on_simulator(compiled.program, {"data": x}, mode="functional")
    (y,) = outs.values()
    assert y.shape == ref.shape[1:]                                        # the model's own output layout
    assert np.abs(y - ref[0]).max() <= 1e-3 * np.abs(ref).max()
    report = verify_model(model, preset, "wide", [x], compiled=compiled)
    assert report.ok, report.table()


def test_a_transpose_elsewhere_is_still_refused():
    model = _nhwc_model("reshape")
    model.graph.node[2].output[0] = "r0"                 # ReLU -> r0; a Transpose in the middle, then on
    model.graph.node.insert(3, helper.make_node("Transpose", ["r0"], ["r1"], perm=[0, 1, 3, 2]))
    model.graph.node.insert(4, helper.make_node("Transpose", ["r1"], ["r"], perm=[0, 1, 3, 2]))
    from compiler.errors import UnsupportedModelError
    with pytest.raises(UnsupportedModelError, match="Transpose"):
        compile_model(model, "tiny", "wide")


def test_session_scores_images_into_an_nhwc_program(tmp_path):
    from PIL import Image

    from runtime import Session

    model = _nhwc_model("output", hw=(32, 32))
    path = tmp_path / "nhwc.npuz"
    compile_model(model, "tiny", "wide").save(path)
    session = Session(path)
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(buf, format="PNG")
    x = session.image_tensor(buf.getvalue())
    assert x.shape == (1, 32, 32, 3)
    result = session.score_image(buf.getvalue())
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
    assert result.output.shape == ref.shape
    assert np.abs(result.output - ref).max() <= 1e-3 * np.abs(ref).max()
