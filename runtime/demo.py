"""``npu demo``: the main job on embedded defaults.

Builds a ResNet-50 with seeded weights, compiles it for the default preset,
scores scikit-learn's sample photographs and a few generated images through
the runtime (decode, resize, crop, normalise, simulate), and prints top-5,
simulated latency, MVU utilisation and a per-layer cycle table; writes a
Perfetto trace and a PNG chart of per-layer cycles.
"""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np


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


def _images(size: int = 256) -> list[tuple[str, bytes]]:
    """scikit-learn's sample photographs and three generated images, as encoded bytes."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from compiler.models.images import synthetic_image

    out = []
    data = load_sample_images()
    for name, arr in zip(data.filenames, data.images):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=92)
        out.append((Path(name).name, buf.getvalue()))
    rng = np.random.default_rng(2024)
    for i in range(3):
        img = (synthetic_image(rng, size).transpose(1, 2, 0) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append((f"generated-{i}.png", buf.getvalue()))
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


def run_demo(config: str = "bw-s10", model: str = "resnet50", precision: str = "ms-fp9",
             out_dir: str = "demo_out") -> int:
    """Build, compile, score and report; returns the exit status."""
    from compiler.compile import compile_model
    from compiler.models import nets
    from compiler.report import layer_rows, report_table
    from npu.sim import simulate

    from .session import Session

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"building {model} with seeded weights ...", file=sys.stderr, flush=True)
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
    images = _images()
    progress = Progress("scoring images on the simulator")
    progress(0, len(images))
    results = []
    for i, (name, data) in enumerate(images):
        t0 = time.perf_counter()
        r = session.score_image(data, name)
        results.append((name, r, time.perf_counter() - t0))
        progress(i + 1, len(images))
    print()
    for name, r, wall in results:
        top = ", ".join(f"{label}:{score:.3f}" for _, label, score in session.top(r, 5))
        print(f"{name:<16} top-5 classes {top}")
        print(f"{'':<16} simulated {r.stats.latency_us:,.1f} us ({r.stats.cycles:,} cycles, MVU "
              f"{r.stats.mac_utilisation:.1%}, {'weights resident' if r.stats.warm else 'weights loaded'}); "
              f"simulator wall time {wall:.2f} s")

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
