"""First-layer input packing (compiler/passes/pack_input.py, npu/hostio.py).

The strip rewrite (phase weights over host-packed strips) must be the same
convolution as the model's, checked in float64 against a direct
convolution; compiled stems must then run bit for bit like the numpy
reference and follow onnxruntime with a wide format.
"""
import numpy as np
import onnxruntime as ort
import pytest

from compiler.compile import compile_model
from npu.hostio import run_on_simulator, strip_windows
from compiler.passes.pack_input import strip_group, strip_weights
from compiler.models.graph import GraphBuilder
from compiler.reference import reference_outputs
from npu.config import PRESETS

TINY = PRESETS["tiny"]


def _direct_conv(x, w, stride, pads):
    """Float64 convolution with (top, left, bottom, right) zero padding."""
    cout, c, kh, kw = w.shape
    top, left, bottom, right = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right)))
    oh = (xp.shape[1] - kh) // stride[0] + 1
    ow = (xp.shape[2] - kw) // stride[1] + 1
    y = np.zeros((cout, oh, ow))
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, ky:ky + stride[0] * (oh - 1) + 1:stride[0], kx:kx + stride[1] * (ow - 1) + 1:stride[1]]
            y += np.einsum("chw,oc->ohw", patch, w[:, :, ky, kx])
    return y


@pytest.mark.parametrize("c, hw, kernel, stride, pads, n", [
    (3, (32, 32), (3, 3), (1, 1), (1, 1, 1, 1), 32),
    (3, (224, 224), (7, 7), (2, 2), (3, 3, 3, 3), 64),                   # one phase
    (3, (224, 224), (7, 7), (2, 2), (3, 3, 3, 3), 128),
    (3, (20, 23), (3, 5), (1, 2), (1, 2, 0, 2), 64),
    (1, (17, 19), (5, 5), (2, 3), (2, 2, 2, 2), 32),
])
def test_strip_phases_compute_the_models_convolution(c, hw, kernel, stride, pads, n):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((c, *hw))
    w = rng.standard_normal((5, c, *kernel)).astype(np.float32)      # the rewrite keeps float32 weights exactly
    ref = _direct_conv(x, w, stride, pads)
    cout, (oh, ow) = 5, ref.shape[1:]
    group = strip_group(c, kernel[0], stride[1], n)
    phases = group // stride[1]
    assert phases >= 1 and kernel[0] * group * c <= n
    wp, taps = strip_weights(w, stride[1], group)
    width = -(-ow // phases)
    strips = strip_windows(x, kernel, stride, pads, group, (oh, width + taps - 1))
    z = sum(np.einsum("oi,iym->oym", wp[:, :, 0, t], strips[:, :, t:t + width]) for t in range(taps))
    y = z.reshape(phases, cout, oh, width).transpose(1, 2, 3, 0).reshape(cout, oh, width * phases)[:, :, :ow]
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def _stem_model(kernel: int, stride: int, hw: int = 32):
    """conv kernel x kernel / stride (with BatchNorm, ReLU), 3x3/2 max pool, global pool, classifier."""
    g = GraphBuilder(f"stem{kernel}s{stride}", 3, input_shape=(1, 3, hw, hw))
    x = g.conv_bn(g.input_name, 3, 16, kernel, stride=stride)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x], axis=1)
    return g.finish(g.dense(x, 16, 10), [1, 10])


@pytest.mark.parametrize("kernel, stride, config, packing", [
    (7, 2, TINY.replace(native_dim=128, vrf_depth=8192), "strip"),     # the ResNet stem: 3 phases of 2 taps
    (7, 2, TINY, "im2col"),                                            # N = 32 holds no two-phase strip
    (3, 2, TINY, "im2col"),                                            # a one-phase strip would move more
    (7, 2, TINY.replace(native_dim=64, vrf_depth=4096), "strip"),     # N = 64: one phase of 4 taps, 1/3 the bytes
])
def test_packed_stem_is_bit_exact_and_follows_onnxruntime(kernel, stride, config, packing):
    model = _stem_model(kernel, stride)
    x = np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float32)
    compiled = compile_model(model, config, "ms-fp9")
    assert compiled.program.inputs[0].params.packing == packing
    outs, _ = run_on_simulator(compiled.program, {"data": x})
    (y,) = outs.values()
    (ref,) = reference_outputs(compiled, {"data": x}).values()
    assert np.array_equal(y.reshape(-1).view(np.uint32), ref.reshape(-1).astype(np.float32).view(np.uint32))

    wide, _ = run_on_simulator(compile_model(model, config, "wide").program, {"data": x})
    (yw,) = wide.values()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref32 = sess.run(None, {"data": x})[0].reshape(-1)
    assert np.abs(yw.reshape(-1) - ref32).max() <= 2e-4 * np.abs(ref32).max()


def test_strip_packing_moves_fewer_input_bytes_than_im2col():
    """The packed ResNet-50 stem input: 112 rows x 39 strips of one vector, not 112 x 112 x 2 vectors."""
    model = _stem_model(7, 2, hw=224)
    compiled = compile_model(model, "bw-s10", "ms-fp9")
    desc = compiled.program.inputs[0]
    assert desc.params.packing == "strip" and desc.params.group == 6
    assert (desc.params.height, desc.params.width, desc.params.vectors) == (112, 39, 1)
    assert sum(layer.macs for layer in compiled.layers) == 16 * 3 * 49 * 112 * 112 + 16 * 10


def _desc(layout, shape, dtype):
    from npu.hostio import _layout
    from npu.npuz import TensorDesc

    size = _layout(TensorDesc("x", shape, "hwc-padded", dtype, 0, 2, layout)).size * layout.native_dim
    return TensorDesc("x", shape, "hwc-padded", dtype, 0, size * (4 if dtype == "fp32" else 2), layout)


_PACKINGS = {
    "strip": (dict(channels=7 * 6 * 3, height=20, width=8, pad=0, vectors=1, native_dim=128, packing="strip",
                   kernel=(7, 7), stride=(2, 2), pads=(3, 3, 3, 3), image_shape=(3, 40, 36), group=6), (3, 40, 36)),
    "im2col": (dict(channels=27, height=10, width=12, pad=0, vectors=1, native_dim=32, packing="im2col",
                    kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), image_shape=(3, 10, 12)), (3, 10, 12)),
    "chw": (dict(channels=40, height=6, width=5, pad=1, vectors=2, native_dim=32), (40, 6, 5)),
    "hwc": (dict(channels=40, height=6, width=5, pad=2, vectors=2, native_dim=32, order="hwc"), (6, 5, 40)),
}


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("packing", sorted(_PACKINGS))
def test_packed_input_images_hold_each_element_where_the_layout_puts_it(packing, dtype, monkeypatch):
    """pack_input (an element map, then one gather) gives the bits of the layout's vector image of the packed
    tensor (``input_tensor``, then ``to_vectors``), each element rounded to the format, byte for byte; so does
    the path for inputs too large for a map.  Special values included: NaN, infinities, signed zeros, values
    that overflow or underflow binary16."""
    from npu import hostio
    from npu.npuz import TensorLayout
    from npu.numerics import mfu_kernels

    params, shape = _PACKINGS[packing]
    desc = _desc(TensorLayout(**params), shape, dtype)
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 12, replace=False)] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-8, -3e-6, 7e4, -1e5,
                                                      65519.0, 2.0 ** -24, 3.4e38]
    vectors = hostio._layout(desc).to_vectors(hostio.input_tensor(desc, x)).reshape(-1)
    want = np.empty(vectors.size, np.uint32 if dtype == "fp32" else np.uint16)
    mfu_kernels.encode_values(vectors, mfu_kernels.format_code(dtype), want)
    assert np.count_nonzero(want) > 0.5 * flat.size
    got = hostio.pack_input(desc, x[None])
    assert got == want.astype(want.dtype.newbyteorder("<")).tobytes()
    monkeypatch.setattr(hostio, "MAP_MAX_ELEMENTS", 0)
    hostio._element_map.cache_clear()
    assert hostio.pack_input(desc, x) == got
    hostio._element_map.cache_clear()
