"""``npu demo --model ssd-vgg``: the SSD300 VGG-16 detector end to end, boxes drawn on a photograph.

Builds the detector with seeded weights, compiles it with host fallback (the
L2 normalisation of conv4_3 runs on the host, everything else on the NPU),
scores a photograph through the runtime (the NPU's head outputs, then the
host's prior boxes, decoding, per-class non-maximum suppression and top-k),
prints the detections next to those decoded from onnxruntime's float32
heads, and draws the NPU's boxes on the photograph as a PNG.  With seeded
weights the boxes mean nothing; the picture says so.
"""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np

#: The photograph the detector is shown on.
PHOTO = "astronaut"
#: Boxes drawn (the highest scores).
DRAWN = 10


def _photo_bytes(name: str) -> bytes:
    from PIL import Image

    from compiler.models.photos import load_photos

    (_, rgb), = load_photos([name])
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _draw(x: np.ndarray, recipe, detections, labels, path: Path, title: str) -> None:
    """The network's input square (undoing the recipe's normalisation) with the detections' boxes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rgb = x[0].transpose(1, 2, 0) / np.float32(recipe.scale)
    if recipe.channel_order.upper() == "BGR":
        rgb = rgb[:, :, ::-1]
    rgb = np.clip(rgb + np.asarray(recipe.mean, np.float32), 0, 255).astype(np.uint8)
    side = rgb.shape[0]
    fig, ax = plt.subplots(figsize=(6, 6.6))
    ax.imshow(rgb)
    colours = plt.get_cmap("tab10")
    for i, d in enumerate(detections[:DRAWN]):
        x1, y1, x2, y2 = (v * side for v in d.box)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2, color=colours(i % 10)))
        name = labels[d.label] if labels and d.label < len(labels) else str(d.label)
        ax.text(x1, y1, f"{name} {d.score:.2f}", color="white", fontsize=7, va="bottom",
                bbox=dict(facecolor=colours(i % 10), alpha=0.8, pad=1, lw=0))
    ax.set_axis_off()
    ax.set_title(title, fontsize=9, pad=16)
    fig.text(0.5, 0.02, "SEEDED (UNTRAINED) WEIGHTS: these boxes and classes mean nothing;\nthey show the "
             "pipeline (NPU heads -> host priors, decoding, NMS), not a detector", ha="center", fontsize=9,
             color="darkred")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_detection_demo(config: str = "bw-s10", model: str = "ssd-vgg", precision: str | None = None,
                       out_dir: str = "demo_out") -> int:
    """Build, compile (with host fallback), score one photograph, print and draw the detections."""
    import onnxruntime as ort

    from compiler.models import nets
    from compiler.partition import SegmentedModel, compile_with_host_fallback
    from npu.detection import detect
    from runtime import Session

    from .demo import DEFAULT_PRECISION, Progress

    precision = precision or DEFAULT_PRECISION["seeded"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"building {model} with seeded weights ...", file=sys.stderr, flush=True)
    onnx_model = nets.MODELS[model]()
    compiled = compile_with_host_fallback(onnx_model, config, precision, progress=Progress(f"compiling for {config}"))
    program_path = out / f"{model}.npuz"
    compiled.save(program_path)
    if isinstance(compiled, SegmentedModel):
        sides = ", ".join(f"{s.name} {s.kind}" for s in compiled.program.segments)
        host = ", ".join(sorted({p["op"] for p in compiled.host_ops}))
        print(f"\n{model} compiled for {compiled.config.name} at {precision} with host fallback: {sides}; on the host: "
              f"{host} (the L2 normalisation) -> {program_path}")
    session = Session(program_path)
    data = _photo_bytes(PHOTO)
    x = session.image_tensor(data, PHOTO)
    print(f"scoring {PHOTO} ({x.shape[-1]} x {x.shape[-2]} input) on the simulated NPU ...", file=sys.stderr,
          flush=True)
    t0 = time.perf_counter()
    result = session.score_numpy_array(x)
    wall = time.perf_counter() - t0
    reference = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    heads = dict(zip([o.name for o in reference.get_outputs()],
                     reference.run(None, {reference.get_inputs()[0].name: x})))
    theirs = detect(heads, session.detection)
    labels = session.labels
    st = result.stats
    print(f"\n{len(result.detections)} detections from the NPU's heads, {len(theirs)} from onnxruntime's float32 heads "
          f"(the same host decoding); simulated {st.latency_us:,.1f} us ({st.cycles:,} cycles) on the NPU, "
          f"{st.host_us:,.0f} us on the host; simulator {wall:.1f} s")
    print(f"{'':>3} {'NPU: class':<14} {'score':>6} {'box (x1 y1 x2 y2)':<26} | {'onnxruntime: class':<18} {'score':>6}")
    for i in range(min(DRAWN, max(len(result.detections), len(theirs)))):
        a = result.detections[i] if i < len(result.detections) else None
        b = theirs[i] if i < len(theirs) else None
        left = (f"{(labels[a.label] if labels else a.label)!s:<14} {a.score:6.3f} "
                f"{' '.join(f'{v:.3f}' for v in a.box):<26}") if a else " " * 48
        right = f"{(labels[b.label] if labels else b.label)!s:<18} {b.score:6.3f}" if b else ""
        print(f"{i + 1:>3} {left} | {right}")
    top = result.detections[:DRAWN]
    agree = sum(any(b.label == a.label and max(abs(u - v) for u, v in zip(a.box, b.box)) <= 0.01 for b in theirs)
                for a in top)
    print(f"{agree} of the NPU's top {len(top)} are among onnxruntime's detections (same class, box within 0.01)")
    picture = out / f"{model}.detections.png"
    _draw(x, session.preprocess, result.detections, labels, picture,
          f"{model} on {compiled.config.name} ({precision}): the NPU's top {DRAWN} detections on '{PHOTO}'")
    print(f"\ndetections drawn on the photograph: {picture} (seeded weights: the boxes mean nothing)\n"
          f"demo finished in {time.perf_counter() - t_start:.1f} s")
    return 0
