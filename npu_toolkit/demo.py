"""``npu demo``: the main job on embedded defaults.

Builds the ImageNet-trained EfficientNet-Lite0 (weights from the ``models``
extra), compiles it for the default preset, scores the photographs bundled
with scikit-learn and scikit-image through the runtime (decode, resize,
crop, normalise, simulate), and prints each photograph's top-5 classes from
the NPU next to onnxruntime's in float32, with the simulated latency; then a
per-layer cycle table, a Perfetto trace and a PNG chart of per-layer cycles.
``--model resnet50`` (or any reference network) runs a seeded network instead.
"""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np

#: The demo's network, and the precision each kind of network is shown at by default.
DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_PRECISION = {"trained": "mxint8", "seeded": "ms-fp9"}


class Progress:
    """One-line progress on stderr for the slow steps."""

    def __init__(self, label: str):
        self.label = label
        self.t0 = time.perf_counter()
        self._last = -1.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self._last < 0.2:
            return
        self._last = now
        width = 30
        bar = "#" * int(width * done / max(total, 1))
        end = "\n" if done >= total else ""
        print(f"\r{self.label:<28} [{bar:<{width}}] {done}/{total} {now - self.t0:5.1f} s", end=end, file=sys.stderr,
              flush=True)


def _photographs() -> list[tuple[str, bytes]]:
    """The photographs scikit-learn and scikit-image ship, PNG-encoded as files arriving at a service would be."""
    from PIL import Image

    from compiler.models.photos import load_photos

    out = []
    for name, arr in load_photos():
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        out.append((name, buf.getvalue()))
    return out


def _chart(rows, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.16), 4))
    xs = np.arange(len(rows))
    ax.bar(xs, [r.cycles for r in rows], color="#4c72b0", label="simulated cycles")
    ax.bar(xs, [r.ideal_cycles for r in rows], color="#dd8452", alpha=0.8, label="ideal (MACs / peak)")
    ax.set_xticks(xs[::max(1, len(rows) // 40)])
    ax.set_xticklabels([rows[i].name for i in xs[::max(1, len(rows) // 40)]], rotation=90, fontsize=6)
    ax.set_ylabel("cycles")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _top(probs: np.ndarray, labels, k: int = 5) -> list[tuple[str, float]]:
    idx = np.argsort(-probs)[:k]
    return [((labels[i] if labels else str(i)), float(probs[i])) for i in idx]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max())
    return e / e.sum()


def run_demo(config: str = "bw-s10", model: str = DEFAULT_MODEL, precision: str | None = None,
             out_dir: str = "demo_out") -> int:
    """Build, compile, score and report; returns the exit status."""
    import onnxruntime as ort

    from compiler.compile import compile_model
    from compiler.models import nets
    from compiler.report import layer_rows, report_table
    from npu.sim import simulate

    from runtime import Session

    if model not in nets.MODELS:
        print(f"npu demo: unknown model {model!r}; choose one of {', '.join(sorted(nets.MODELS))}", file=sys.stderr)
        return 2
    trained = model in nets.TRAINED
    precision = precision or DEFAULT_PRECISION["trained" if trained else "seeded"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"building {model} with {'its trained' if trained else 'seeded'} weights ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    onnx_model = nets.MODELS[model]()
    print(f"built {model} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    compiled = compile_model(onnx_model, config, precision, progress=Progress(f"compiling for {config}"))
    cfg = compiled.config
    program_path = out / f"{model}.npuz"
    compiled.save(program_path)
    print(f"\n{model} compiled for {cfg.name}: N={cfg.native_dim}, {cfg.macs:,} MACs @ {cfg.clock_mhz:g} MHz; "
          f"weights {cfg.weight_format}, activations {cfg.activation_format}, MFU {cfg.mfu_format}; "
          f"{len(compiled.program.words) // 16} instructions -> {program_path}")

    session = Session(program_path)
    reference = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref_input = reference.get_inputs()[0].name
    images = _photographs()
    progress = Progress("scoring photographs on the NPU")
    progress(0, len(images))
    results = []
    for i, (name, data) in enumerate(images):
        x = session.image_tensor(data, name)
        t0 = time.perf_counter()
        r = session.score_numpy_array(x)
        wall = time.perf_counter() - t0
        results.append((name, r, reference.run(None, {ref_input: x})[0].reshape(-1), wall))
        progress(i + 1, len(images))
    print(f"\ntop-5 classes per photograph: the NPU ({precision}) | onnxruntime float32")
    agree, cosines = 0, []
    for name, r, ref, wall in results:
        npu = r.output.reshape(-1).astype(np.float64)
        cos = float(npu @ ref / (np.linalg.norm(npu) * np.linalg.norm(ref) + 1e-30))
        cosines.append(cos)
        agree += int(npu.argmax() == ref.argmax())
        mine, theirs = _top(_softmax(npu), session.labels), _top(_softmax(ref), session.labels)
        print(f"{name}  (logits cosine {cos:.4f}; simulated {r.stats.latency_us:,.1f} us, {r.stats.cycles:,} "
              f"cycles, {'weights resident' if r.stats.warm else 'weights loaded'}; simulator {wall:.2f} s)")
        for (a, pa), (b, pb) in zip(mine, theirs):
            print(f"    {a[:30]:<30} {pa:6.3f}   | {b[:30]:<30} {pb:6.3f}")
    print(f"top-1 agreement with onnxruntime: {agree}/{len(results)}; logits cosine mean {np.mean(cosines):.4f}, "
          f"min {np.min(cosines):.4f}")

    timing = simulate(compiled.program.warm() or compiled.program, cfg, dram=compiled.program.dram, mode="timing")
    print("\nper-layer cycles (one inference, weights resident when they fit):")
    print(report_table(compiled, timing.stats))
    trace = out / f"{model}.trace.json"
    timing.write_trace(trace)
    chart = out / f"{model}.cycles.png"
    _chart(layer_rows(compiled, timing.stats), chart, f"{model} on {cfg.name} ({precision}): cycles per layer")
    print(f"\nPerfetto trace: {trace} (open in https://ui.perfetto.dev)\nper-layer chart: {chart}\n"
          f"demo finished in {time.perf_counter() - t_start:.1f} s")
    return 0
