"""runtime.Session, preprocessing, host heads and featurizer pipelines."""
import io

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from compiler.compile import compile_model
from compiler.models import nets
from runtime import DenseHead, ImageError, OnnxHead, Pipeline, Preprocess, Session, softmax, topk


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    path = tmp_path_factory.mktemp("rt") / "small.npuz"
    compile_model(nets.resnet_small(), "tiny", "wide", labels=[f"class-{i}" for i in range(10)]).save(path)
    return path


def _jpeg(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_session_scores_arrays_like_onnxruntime(program):
    s = Session(program)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    r = s.score_numpy_array(x)
    ref = ort.InferenceSession(nets.resnet_small().SerializeToString()).run(None, {"data": x})[0]
    assert r.output.shape == ref.shape == (1, 10)
    assert np.abs(r.output - ref).max() <= 2e-4 * np.abs(ref).max()
    assert r.stats.cycles > 0 and r.stats.latency_us > 0 and 0 < r.stats.mac_utilisation <= 1
    assert np.array_equal(s.score_numpy_array(x[0]).output, r.output)        # batch dimension optional
    assert s.top(r, 3)[0][1].startswith("class-")


def test_weights_stay_resident_after_the_first_run(program):
    s = Session(program)
    x = np.ones((1, 3, 32, 32), np.float32)
    first, second = s.score_numpy_array(x), s.score_numpy_array(x)
    assert not first.stats.warm and second.stats.warm
    assert np.array_equal(first.output, second.output)


def test_preprocessing_follows_the_recipe():
    arr = (np.random.default_rng(1).random((300, 400, 3)) * 255).astype(np.uint8)
    p = Preprocess(crop=224, resize=256, scale=0.5)
    x = p.tensor(Image.fromarray(arr))
    # independent recipe: resize shorter side to 256 (bilinear), centre crop, subtract means, scale
    img = Image.fromarray(arr).resize((341, 256), Image.BILINEAR)
    ref = np.asarray(img, np.float32)[16:240, 58:282] - np.array([123.68, 116.779, 103.939], np.float32)
    assert x.shape == (1, 3, 224, 224)
    assert np.allclose(x[0], 0.5 * ref.transpose(2, 0, 1), atol=1e-4)
    bgr = Preprocess(crop=224, resize=256, scale=0.5, channel_order="BGR").tensor(Image.fromarray(arr))
    assert np.allclose(bgr[0, 0], x[0, 2], atol=1e-4)               # each colour keeps its own mean


def test_a_program_compiled_without_options_uses_the_documented_recipe(tmp_path):
    """docs/architecture.md: shorter side to 256/224 of the input, bilinear; centre crop; subtract R 123.68,
    G 116.779, B 103.939; times 0.017; RGB.  One definition, carried in the program, applied by the runtime."""
    path = tmp_path / "small.npuz"
    compile_model(nets.resnet_small(), "tiny", "wide").save(path)
    arr = (np.random.default_rng(3).random((45, 60, 3)) * 255).astype(np.uint8)
    image = tmp_path / "a.png"
    Image.fromarray(arr).save(image)
    s = Session(path)
    img = Image.fromarray(arr).resize((49, 37), Image.BILINEAR)          # 32 * 256 / 224 = 36.6 -> 37
    top, left = (37 - 32) // 2, (49 - 32) // 2
    want = (np.asarray(img, np.float32)[top:top + 32, left:left + 32] - np.array([123.68, 116.779, 103.939],
                                                                               np.float32)) * np.float32(0.017)
    assert np.allclose(s.preprocess(image.read_bytes()), want.transpose(2, 0, 1)[None], atol=1e-5)
    assert np.array_equal(s.score_file(image).output, s.score_numpy_array(want.transpose(2, 0, 1)).output)


def test_images_files_and_batches(program, tmp_path):
    s = Session(program)
    arr = (np.random.default_rng(2).random((40, 50, 3)) * 255).astype(np.uint8)
    data = _jpeg(arr)
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    a = s.score_image(data).output
    assert np.array_equal(s.score_file(path).output, a)
    x = s.preprocess(data)
    batch = s.score_batch([data, path, x])
    assert all(np.array_equal(b.output, a) for b in batch)


@pytest.mark.parametrize("bad, message", [(b"", "not a decodable image"), (b"GIF89a-broken", "not a decodable")])
def test_bad_images_are_clear_errors(program, bad, message):
    with pytest.raises(ImageError, match=message):
        Session(program).score_image(bad)


def test_wrong_shapes_and_missing_files(program, tmp_path):
    s = Session(program)
    with pytest.raises(ValueError, match="does not match"):
        s.score_numpy_array(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(ImageError, match="cannot read"):
        s.score_file(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="backend 'fpga'"):
        Session(program, backend="fpga")


def test_featurizer_cut_and_trained_head(tmp_path):
    """Cut the classifier off, train a new head on NPU features, attach it without recompiling."""
    model = nets.resnet_small()
    feat = compile_model(model, "tiny", "wide", cut_at="globalaveragepool1")
    feat.save(tmp_path / "feat.npuz")
    s = Session(tmp_path / "feat.npuz")
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((24, 1, 3, 32, 32)).astype(np.float32)
    labels = np.arange(24) % 2
    xs[labels == 1] += 0.8                                    # class 1 images are brighter
    feats = np.stack([s.score_numpy_array(x).output.reshape(-1) for x in xs])
    head = DenseHead.fit(feats, labels, labels=["dark", "bright"])
    pipe = Pipeline(s, head)
    right = sum(pipe.top(pipe.score_numpy_array(x)[0], 1)[0][0] == y for x, y in zip(xs, labels))
    assert right >= 22
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph([helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)], "head",
                          [helper.make_tensor_value_info("f", TensorProto.FLOAT, [1, feats.shape[1]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                          [numpy_helper.from_array(head.weight, "w"), numpy_helper.from_array(head.bias, "b")])
    onnx_head = OnnxHead(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    scores = Pipeline(s, onnx_head).score_numpy_array(xs[0])[0]
    assert np.allclose(softmax(scores), head(feats[0]), atol=1e-5)


def test_topk():
    assert topk(np.array([0.1, 0.7, 0.2]), 2, ["a", "b", "c"]) == [(1, "b", pytest.approx(0.7)),
                                                                   (2, "c", pytest.approx(0.2))]


# ----- image limits: memory is bounded before it is spent ----------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with almost no pixel data."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _refused_quickly(call, *fragments):
    import time
    import tracemalloc

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ImageError) as info:
            call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2 and peak < 32 << 20, (time.perf_counter() - t0, peak)
    for frag in fragments:
        assert frag in str(info.value), (frag, str(info.value))
    return str(info.value)


def test_an_extreme_aspect_ratio_is_refused_before_resizing(program):
    """Regression: a few-hundred-byte 1 x 200000 PNG made preprocessing allocate over 1 GB (the shorter side is
    resized to 256, so the image would become 256 x 51,200,000), far below Pillow's pixel guard."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 200_000)).save(buf, format="PNG", optimize=True)
    data = buf.getvalue()
    assert len(data) < 2000
    msg = _refused_quickly(lambda: Preprocess()(data, "tall.png"), "tall.png:", "1 x 200000",
                           "256 x 51200000", "MAX_RESIZED_PIXELS")
    assert "16,777,216" in msg
    _refused_quickly(lambda: Session(program).score_image(data, "tall.png"), "tall.png:", "MAX_RESIZED_PIXELS")
    _refused_quickly(lambda: Preprocess().array(np.zeros((1, 70_000, 3), np.uint8)), "array:", "MAX_RESIZED_PIXELS")


def test_a_huge_declared_image_is_refused_from_its_header():
    """The size in the header is checked before any pixel is decoded (a decompression bomb never inflates)."""
    data = _png_header_only(100_000, 100_000)
    assert len(data) < 200
    _refused_quickly(lambda: Preprocess()(data, "bomb.png"), "bomb.png:", "10000000000 pixels",
                     "the limit is 50,000,000 pixels, npu.preprocess.MAX_IMAGE_PIXELS")
    with pytest.warns(Warning):                                # Pillow warns between its limit and twice that
        _refused_quickly(lambda: Preprocess()(_png_header_only(8000, 8000), "big.png"), "big.png:",
                         "8000 x 8000 image has 64,000,000 pixels", "limit of 50,000,000 (npu.preprocess.MAX_IMAGE_PIXELS)")
    from PIL import Image as PILImage

    import npu.preprocess as pre

    assert PILImage.MAX_IMAGE_PIXELS <= pre.MAX_IMAGE_PIXELS               # Pillow's own guard is lowered too


def test_image_limits_are_read_when_used(monkeypatch):
    import npu.preprocess as pre

    arr = (np.random.default_rng(4).random((40, 50, 3)) * 255).astype(np.uint8)
    assert Preprocess(crop=32, resize=36).array(arr).shape == (1, 3, 32, 32)
    monkeypatch.setattr(pre, "MAX_IMAGE_PIXELS", 1000)
    _refused_quickly(lambda: Preprocess(crop=32, resize=36).array(arr), "2,000 pixels", "limit of 1,000")


def test_a_square_image_at_the_limits_passes_and_recipe_sides_are_bounded():
    import npu.preprocess as pre

    p = Preprocess(crop=8, resize=pre.MAX_SIDE)
    assert p.check_size(100, 100) == (pre.MAX_SIDE, pre.MAX_SIDE)
    with pytest.raises(ImageError):
        p.check_size(100, 101)
    for bad in (dict(crop=0), dict(resize=pre.MAX_SIDE + 1), dict(crop=2.5), dict(crop=True), dict(mean=(1, 2)),
                dict(scale="big"), dict(channel_order=5), dict(extra=[])):
        with pytest.raises(ValueError):
            Preprocess(**bad)


@pytest.mark.parametrize("data", [
    _png_header_only(64, 64),                                  # header fine, pixel data missing: truncated
    b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
    b"BM" + b"\xff" * 60,
])
def test_any_decoder_failure_is_an_image_error(data):
    with pytest.raises(ImageError, match="img.bin: not a decodable image"):
        Preprocess()(data, "img.bin")
