"""Layers too large for the vector memory, on every preset: each path checked tensor by tensor.

A large layer can take several paths: its input strip-packed (first layer),
its input or output spilled to DRAM and swept in row bands, its weights
streamed in several sets, its output written in place into a
concatenation, pooling over spilled tensors.  Every test runs ``verify_model``,
which compares each tensor the program materialises with onnxruntime
(element by element, through the compiled graph in binary64) and with the
numpy evaluation of the numerics contract (bit for bit), and also checks
that the path under test was really taken.
"""
import numpy as np
import pytest

from compiler.compile import compile_model, resolve_config
from compiler.models.graph import GraphBuilder
from compiler.verify import verify_model
from npu.config import PRESETS


def _input(shape, seed=0):
    return [np.random.default_rng(seed).standard_normal(shape).astype(np.float32)]


def _first_conv(size: int, k: int, stride: int):
    g = GraphBuilder("first_conv", 7, input_shape=(1, 3, size, size))
    y = g.relu(g.conv(g.input_name, 3, 64, k, stride, bias=True))
    out = -(-size // stride)
    return g.finish(y, [1, 64, out, out])


def _assert_verified(report):
    assert report.ok, report.table()
    assert all(c.exact for c in report.layers)
    assert len(report.layers) > 0


@pytest.mark.fullsize
@pytest.mark.parametrize("size, k, stride", [(176, 3, 1), (184, 3, 1), (192, 3, 1), (224, 3, 1), (448, 7, 2)])
def test_first_convolution_with_a_spilled_output_is_exact(size, k, stride):
    """The sizes at which a strip-packed first layer's spilled output kept only one column phase."""
    model = _first_conv(size, k, stride)
    compiled = compile_model(model, "bw-s10", "wide")
    conv = compiled.plan.steps[0]
    assert conv.column_phases > 1                                  # strip-packed input, several phases
    assert compiled.plan.storage_of(conv.outputs[0]).dram          # ... writing a spilled output in bands
    report = verify_model(model, "bw-s10", "wide", _input((1, 3, size, size)), compiled=compiled)
    _assert_verified(report)
    (layer,) = report.layers
    assert layer.cosine > 0.99999 and layer.max_rel_error < 1e-3


def _big_network(c: int, hw: int):
    """Every large-layer path: a strip-packed stem and a wide convolution between spilled tensors, split max
    pooling of a spilled tensor, then a residual block, dense concatenations and average pooling."""
    g = GraphBuilder("big", 11, input_shape=(1, 3, hw, hw))
    x = g.conv_bn(g.input_name, 3, c, 3)                                   # strip stem -> spilled
    x = g.conv_bn(x, c, 4 * c, 3)                                          # spilled -> spilled, weight sets
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])   # split, banded
    x = g.conv_bn(x, 4 * c, c, 1)
    y = g.conv_bn(g.conv_bn(x, c, c, 3), c, c, 3, relu=False)
    x = g.relu(g.op("Add", [y, x]))                                        # residual into a conv chain
    ch = c
    for _ in range(2):                                                     # DenseNet-style concatenation
        y = g.conv(g.relu(g.bn(x, ch)), ch, c // 2, 1)
        x, ch = g.op("Concat", [x, y], axis=1), ch + c // 2
    x = g.op("AveragePool", [g.relu(g.bn(x, ch))], kernel_shape=[2, 2], strides=[2, 2])
    x = g.conv_bn(x, ch, 2 * c, 1)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    return g.finish(g.dense(x, 2 * c, 10), [1, 10])


#: (preset, channels, image side, vector memory, MRF tiles): small memories force every large-layer path.
SHRUNK = [("tiny", 32, 40, 2048, 24), ("bw-a10", 128, 32, 1365, 24), ("bw-s10", 128, 40, 2048, 32)]


@pytest.mark.parametrize("preset, c, hw, vrf, mrf", SHRUNK, ids=[s[0] for s in SHRUNK])
@pytest.mark.parametrize("precision", ["wide", "mxfp8"])
def test_every_large_layer_path_on_every_preset(preset, c, hw, vrf, mrf, precision):
    model = _big_network(c, hw)
    cfg = PRESETS[preset].replace(vrf_depth=vrf, mrf_tiles=mrf)
    compiled = compile_model(model, cfg, precision)
    plan = compiled.plan
    kinds = {nd.name: nd for nd in plan.steps}
    spilled = {st.name for st in plan.storages.values() if st.dram and st.name not in compiled.graph.inputs}
    banded = [plan.steps[i] for i in plan.band_rows]
    assert spilled, "no tensor was spilled"
    assert any(nd.kind == "Conv" and nd.column_phases > 1 for nd in banded), "no strip-packed banded stem"
    assert any(nd.kind == "Pool" and plan.storage_of(nd.inputs[0]).dram for nd in banded), "no pooling of a spill"
    assert any(st.lane_writes for st in plan.storages.values()), "no concatenation in place"
    streamed = [layer for layer in compiled.layers if layer.banded and layer.tiles > cfg.mrf_tiles // 2
                and plan.storage_of(kinds[layer.name].outputs[0]).dram]
    assert streamed, "no banded layer with a spilled output needs several weight sets"
    assert compiled.program.metadata.weight_tiles > cfg.mrf_tiles       # weights stream during the run
    report = verify_model(model, cfg, precision, _input((1, 3, hw, hw), 3), compiled=compiled)
    _assert_verified(report)
    if precision == "wide":
        assert min(c.cosine for c in report.layers) > 0.9999


def test_weight_sets_merge_into_one_spilled_band():
    """A layer whose output vectors need several weight sets adds each set's vectors to the stored bands."""
    g = GraphBuilder("merge", 5, input_shape=(1, 3, 24, 24))
    x = g.conv_bn(g.input_name, 3, 64, 3)
    y = g.conv_bn(x, 64, 256, 3)
    model = g.finish(y, [1, 256, 24, 24])
    cfg = PRESETS["tiny"].replace(vrf_depth=1024, mrf_tiles=40)     # 18 tiles per output vector, sets of one
    compiled = compile_model(model, cfg, "ms-fp9")
    last = compiled.plan.steps[-1]
    assert compiled.plan.storage_of(last.outputs[0]).dram and len(compiled.plan.steps) - 1 in compiled.plan.band_rows
    assert compiled.layers[-1].tiles > 2 * (cfg.mrf_tiles // 2)
    _assert_verified(verify_model(model, cfg, "ms-fp9", _input((1, 3, 24, 24), 4), compiled=compiled))
    _assert_verified(verify_model(model, cfg, "wide", _input((1, 3, 24, 24), 4)))


def test_resolve_config_keeps_the_shrunk_memories():
    cfg = resolve_config(PRESETS["bw-s10"].replace(vrf_depth=6144), "wide")
    assert cfg.vrf_depth == 6144 and cfg.weight_format == "bfp24"
