"""Whole-model compilation: against onnxruntime (wide formats) and bit for bit against the numpy reference.

The reference (``compiler.reference``) evaluates the compiled graph from
whole arrays with the numerics contract; the simulator runs the compiled
instructions.  Equal bits check layouts, chains, banding, spilling, weight
streaming and synchronisation together.
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compiler.compile import PRECISIONS, compile_model
from npu.hostio import run_on_simulator
from compiler.errors import CompileError
from compiler.models import nets
from compiler.reference import reference_outputs
from npu.config import PRESETS
from npu.npuz import load_program

TINY = PRESETS["tiny"]


def _input(model, seed=0):
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32)


def _ort(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {model.graph.input[0].name: x})[0].reshape(-1)


def _npu(compiled, x, mode="functional"):
    outs, result = run_on_simulator(compiled.program, {"data": x}, mode=mode)
    (y,) = outs.values()
    return y.reshape(-1), result


SMALL = ["resnet_small", "vgg_small", "densenet_small"]


@pytest.mark.parametrize("name", SMALL)
def test_wide_precision_matches_onnxruntime(name):
    model = nets.MODELS[name]()
    x = _input(model, 3)
    y, _ = _npu(compile_model(model, "tiny", "wide"), x)
    ref = _ort(model, x)
    assert np.abs(y - ref).max() <= 2e-4 * np.abs(ref).max()


@pytest.mark.parametrize("name, precision", [("resnet_small", "ms-fp9"), ("resnet_small", "mxfp4"),
                                             ("vgg_small", "ms-fp8"), ("vgg_small", "mxfp8"),
                                             ("densenet_small", "ms-fp9"), ("densenet_small", "mxint8")])
def test_simulator_equals_numpy_reference_bit_for_bit(name, precision):
    model = nets.MODELS[name]()
    compiled = compile_model(model, "tiny", precision)
    x = _input(model, 5)
    y, _ = _npu(compiled, x)
    (ref,) = reference_outputs(compiled, {"data": x}).values()
    assert np.array_equal(y.view(np.uint32), ref.reshape(-1).astype(np.float32).view(np.uint32))
    # and the narrow result still follows float32 (ms-fp8 on vgg_small gives about 0.84, the others > 0.95)
    ref32 = _ort(model, x)
    assert y @ ref32 / np.linalg.norm(y) / np.linalg.norm(ref32) > 0.8


def test_spilling_and_banding_stay_bit_exact():
    """A small vector memory forces tensors into DRAM and layers into row bands."""
    model = nets.resnet_small()
    cfg = TINY.replace(vrf_depth=2048)
    compiled = compile_model(model, cfg, "ms-fp9")
    spilled = [s.name for s in compiled.plan.storages.values() if s.dram]
    assert spilled and compiled.plan.band_rows
    x = _input(model, 1)
    y, result = _npu(compiled, x, mode="full")
    (ref,) = reference_outputs(compiled, {"data": x}).values()
    assert np.array_equal(y, ref.reshape(-1))
    assert result.stats.dram_write_bytes > 0                  # the spills went out and came back


def test_small_matrix_register_file_streams_weights_in_chunks():
    model = nets.vgg_small()
    cfg = TINY.replace(mrf_tiles=64)        # the 4x4x64 -> 128 classifier alone needs 128 tiles
    compiled = compile_model(model, cfg, "mxfp8")
    assert compiled.program.metadata.weight_tiles > cfg.mrf_tiles
    x = _input(model, 2)
    y, _ = _npu(compiled, x, mode="full")
    (ref,) = reference_outputs(compiled, {"data": x}).values()
    assert np.array_equal(y, ref.reshape(-1))


def test_model_too_big_for_the_matrix_register_file_is_a_clear_error():
    with pytest.raises(CompileError, match="weight tiles"):
        compile_model(nets.vgg_small(), TINY.replace(mrf_tiles=8), "ms-fp9")


def test_program_file_round_trip(tmp_path):
    model = nets.resnet_small()
    compiled = compile_model(model, "tiny", "ms-fp9")
    path = tmp_path / "m.npuz"
    compiled.save(path)
    loaded = load_program(path, TINY.replace(weight_format="ms-fp9", activation_format="ms-fp9"))
    x = _input(model, 4)
    a, _ = _npu(compiled, x)
    outs, _ = run_on_simulator(loaded, {"data": x}, mode="functional")
    assert np.array_equal(a, next(iter(outs.values())).reshape(-1))
    assert loaded.inputs[0].params.packing == "strip"      # the 3-channel input is strip-packed


def test_report_counts_the_models_macs():
    """The per-layer MACs add up to the MACs computed from the ONNX graph's own shapes."""
    model = nets.resnet_small()
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    expected = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            _, _, oh, ow = shapes[node.output[0]]
            expected += int(np.prod(inits[node.input[1]])) * oh * ow
        elif node.op_type == "Gemm":
            expected += int(np.prod(inits[node.input[1]]))
    compiled = compile_model(model, "tiny", "ms-fp9")
    assert sum(layer.macs for layer in compiled.layers) == expected


def test_every_precision_name_compiles():
    model = nets.vgg_small()
    for precision, (w, a, m) in PRECISIONS.items():
        cfg = compile_model(model, "tiny", precision).config
        assert (cfg.weight_format, cfg.activation_format, cfg.mfu_format) == (w, a, m)
    with pytest.raises(CompileError, match="precision"):
        compile_model(model, "tiny", "fp7")


def test_report_names_each_layers_busiest_resource():
    """Each layer's cycles cover its busiest resource; pooling is read-bound, convolutions MVU- or write-bound."""
    from compiler.report import layer_rows
    from npu.sim import simulate

    compiled = compile_model(nets.vgg_small(), "tiny", "ms-fp9")
    stats = simulate(compiled.program, compiled.config, mode="timing").stats
    regions = {r.name: r for r in stats.regions if r.ops}
    rows = layer_rows(compiled, stats)
    for row in rows:
        r = regions[row.name]
        busy = {"MVU": r.mvu_busy, "write": r.writes, "read": r.reads, "DRAM": r.dma_busy}
        assert row.bound == max(busy, key=busy.get) and row.cycles >= max(busy.values())
        assert row.bound in (("read",) if row.kind in ("Pool", "GlobalPool") else ("MVU", "write", "DRAM"))
    assert {row.bound for row in rows if row.kind == "Conv"} >= {"MVU"}


def test_compile_cli_writes_a_program_and_reports(tmp_path, capsys):
    from npu_toolkit.cli import main

    src = tmp_path / "m.onnx"
    onnx.save(nets.vgg_small(), src)
    out = tmp_path / "m.npuz"
    assert main(["compile", str(src), "--config", "tiny", "--precision", "ms-fp9", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "conv1" in text and "total" in text and "util" in text
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["compile", str(bad), "--config", "tiny"]) == 2
    assert "bad.onnx" in capsys.readouterr().err


def test_warm_program_reuses_resident_weights():
    """The warm variant has no weight loads and, on an MRF left by a cold run, gives the same bits."""
    from npu.hostio import run_warm

    model = nets.resnet_small()
    compiled = compile_model(model, "tiny", "ms-fp9")
    assert compiled.program.warm_words and len(compiled.program.warm_words) < len(compiled.program.words)
    x0, x1 = _input(model, 10), _input(model, 11)
    _, cold = run_on_simulator(compiled.program, {"data": x0}, mode="full")
    warm_out, warm = run_warm(compiled.program, {"data": x1}, cold)
    expected, _ = _npu(compiled, x1)
    assert np.array_equal(next(iter(warm_out.values())).reshape(-1), expected)
    assert warm.stats.dram_read_bytes < cold.stats.dram_read_bytes


def _single_layer(nodes, inits, in_shape, out_shape):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("data", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("config", ["bw-s10", "bw-a10", "tiny"])
def test_a_small_first_convolution_compiles_on_every_preset_and_matches_onnxruntime(config):
    """3 -> 4 channels, 3x3 on 8x8: on bw-s10 the strip holds more column phases than the output has columns
    (a phase without columns gave 'chain: field n1=0 outside [1, 4095]')."""
    from onnx import helper

    rng = np.random.default_rng(7)
    model = _single_layer([helper.make_node("Conv", ["data", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
                          {"w": 0.3 * rng.standard_normal((4, 3, 3, 3)), "b": 0.1 * rng.standard_normal(4)},
                          [1, 3, 8, 8], [1, 4, 8, 8])
    compiled = compile_model(model, config, "wide")
    conv = compiled.plan.steps[0]
    if config == "bw-s10":
        assert conv.column_phases > compiled.plan.shapes["y"][2]           # more phases than output columns
    x = _input(model, 2)
    y, _ = _npu(compiled, x)
    ref = _ort(model, x)
    assert np.abs(y - ref).max() <= 2e-4 * np.abs(ref).max()


def test_a_fully_connected_layer_reading_the_model_input_is_packed_and_matches_onnxruntime():
    """Input packing took the whole-image convolution's C x 1 x 1 output for C x H x W (a ValueError)."""
    from onnx import helper

    rng = np.random.default_rng(8)
    nodes = [helper.make_node("Flatten", ["data"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)]
    model = _single_layer(nodes, {"w": 0.3 * rng.standard_normal((10, 48)), "b": rng.standard_normal(10)},
                          [1, 4, 12, 1], [1, 10])
    compiled = compile_model(model, "tiny", "wide")
    assert compiled.program.inputs[0].params.packing in ("strip", "im2col")
    x = _input(model, 3)
    y, _ = _npu(compiled, x)
    ref = _ort(model, x)
    assert np.abs(y - ref).max() <= 2e-4 * np.abs(ref).max()
