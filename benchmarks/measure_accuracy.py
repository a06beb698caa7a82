"""Accuracy of a compiled network against onnxruntime float32 on real photographs, per precision.

    .venv/bin/python benchmarks/measure_accuracy.py                       # trained EfficientNet-Lite0, 8 precisions
    .venv/bin/python benchmarks/measure_accuracy.py --precisions mxfp8,mxint8 --photos 12 --markdown
    .venv/bin/python benchmarks/measure_accuracy.py --markdown --chart docs/accuracy_layers.png

Every photograph runs through ``npu verify`` (``compiler.verify``) once per
precision: the simulator's tensors must equal the numpy evaluation of the
numerics contract bit for bit (a difference is a bug and stops the
measurement), so what the table shows is the formats' own error.  Per
precision: the logits' cosine to onnxruntime's (mean, min), top-1 agreement,
top-5 agreement (onnxruntime's top-1 among the NPU's five best), the cosine
of the features the classifier reads, and the layers whose own error (the
contract's evaluation of the layer alone on onnxruntime's inputs, against
onnxruntime's output) is largest: where the error enters.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import numpy as np


from compiler.compile import PRECISIONS, compile_model
from compiler.models import nets
from compiler.models.photos import PHOTO_NAMES, load_photos
from compiler.verify import ort_with_outputs, verify_model

ALL_PRECISIONS = ["wide", "msfp12", "ms-fp9", "ms-fp8", "mxint8", "mxfp8", "mxfp6", "mxfp4"]


@dataclass
class PrecisionAccuracy:
    """One precision's agreement with onnxruntime over the photographs."""

    precision: str
    bits_per_value: float
    logits_cosine: list[float] = field(default_factory=list)
    features_cosine: list[float] = field(default_factory=list)
    top1: int = 0
    top5: int = 0
    local_cosine: dict[str, float] = field(default_factory=dict)    # each layer's own cosine, worst photograph
    order: list[str] = field(default_factory=list)                  # the tensors in program order

    def worst_layers(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` tensors whose layers add the largest error of their own (lowest own cosine)."""
        return sorted(self.local_cosine.items(), key=lambda kv: kv[1])[:k]


def _features_tensor(model) -> str:
    """The features the last Gemm (or MatMul) reads: the tensor before any Flatten or Reshape."""
    t = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")][-1].input[0]
    producers = {o: n for n in model.graph.node for o in n.output}
    while t in producers and producers[t].op_type in ("Flatten", "Reshape"):
        t = producers[t].input[0]
    return t


def measure(model_name: str = "efficientnet_lite0", precisions=ALL_PRECISIONS, photos: int = 12,
            config: str = "bw-s10", say=print) -> list[PrecisionAccuracy]:
    """Run every photograph at every precision through ``verify_model``; raises if a layer departs."""
    from npu.numerics.formats import get_format

    model = nets.MODELS[model_name]()
    recipe = compile_model(model, config, "wide").program.metadata.preprocess
    inputs = [(name, recipe.array(img)) for name, img in load_photos(PHOTO_NAMES[:photos])]
    feature = _features_tensor(model)
    logits_name = model.graph.output[0].name
    session = ort_with_outputs(model, [feature])
    ref = {name: dict(zip([o.name for o in session.get_outputs()], session.run(None, {"data": x})))
           for name, x in inputs}
    rows = []
    for precision in precisions:
        compiled = compile_model(model, config, precision)
        wfmt = get_format(PRECISIONS[precision][0])
        row = PrecisionAccuracy(precision, wfmt.bits_per_value(compiled.config.native_dim))
        t0 = time.perf_counter()
        for name, x in inputs:
            report = verify_model(model, config, precision, [x], compiled=compiled)
            if not report.ok:
                raise AssertionError(f"{precision}, {name}: a layer departs from the numerics contract\n"
                                     f"{report.table()}")
            by_tensor = {c.tensor: c for c in report.layers}
            row.order = [c.tensor for c in report.layers]
            for c in report.layers:
                row.local_cosine[c.tensor] = min(row.local_cosine.get(c.tensor, 1.0), c.local_cosine)
            row.features_cosine.append(by_tensor[feature].cosine if feature in by_tensor else np.nan)
            row.logits_cosine.append(by_tensor[logits_name].cosine)
            npu_logits = _npu_logits(compiled, x)
            r = ref[name][logits_name].reshape(-1)
            row.top1 += int(npu_logits.argmax() == r.argmax())
            row.top5 += int(r.argmax() in np.argsort(-npu_logits)[:5])
        rows.append(row)
        say(f"{precision}: {summary(row, len(inputs))} ({time.perf_counter() - t0:.0f} s)")
    return rows


def _npu_logits(compiled, x: np.ndarray) -> np.ndarray:
    from compiler.reference import reference_outputs

    # bit-exact with the simulator (verify_model checked every tensor): the contract's evaluation is the NPU's
    return next(iter(reference_outputs(compiled, {"data": x}).values())).reshape(-1)


def summary(row: PrecisionAccuracy, n: int) -> str:
    """One line of a precision's results."""
    worst = ", ".join(f"{t} {e:.4f}" for t, e in row.worst_layers())
    return (f"logits cosine mean {np.mean(row.logits_cosine):.4f} min {np.min(row.logits_cosine):.4f}, top-1 "
            f"{row.top1}/{n}, top-5 {row.top5}/{n}, features cosine {np.mean(row.features_cosine):.4f}; lowest "
            f"own cosines: {worst}")


def markdown(rows: list[PrecisionAccuracy], n: int) -> str:
    """The docs table."""
    out = ["| precision | bits/value | logits cosine mean / min | top-1 | top-5 | features cosine mean / min "
           "| lowest own cosine (layer) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        (t, e), = r.worst_layers(1)
        out.append(f"| {r.precision} | {r.bits_per_value:.2f} | {np.mean(r.logits_cosine):.4f} / "
                   f"{np.min(r.logits_cosine):.4f} | {r.top1}/{n} | {r.top5}/{n} | "
                   f"{np.mean(r.features_cosine):.4f} / {np.min(r.features_cosine):.4f} | {e:.4f} ({t}) |")
    return "\n".join(out)


def chart(rows: list[PrecisionAccuracy], path: str, title: str) -> None:
    """A PNG of each layer's own error (log scale), one line per precision: where each format's error enters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    for r in rows:
        if r.precision == "wide":
            continue
        ys = [max(1.0 - r.local_cosine[t], 1e-9) for t in r.order]
        ax.plot(range(len(ys)), ys, marker=".", linewidth=1, label=r.precision)
    names = rows[0].order
    step = max(1, len(names) // 30)
    ax.set_xticks(range(0, len(names), step))
    ax.set_xticklabels(names[::step], rotation=90, fontsize=6)
    ax.set_yscale("log")
    ax.set_ylabel("1 - cosine of the layer alone")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    """Print one line per precision (and the docs table with ``--markdown``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet_lite0", choices=sorted(nets.MODELS))
    p.add_argument("--precisions", default=",".join(ALL_PRECISIONS))
    p.add_argument("--photos", type=int, default=12, help=f"how many of the {len(PHOTO_NAMES)} bundled photographs")
    p.add_argument("--config", default="bw-s10")
    p.add_argument("--markdown", action="store_true", help="also print the table for docs/architecture.md")
    p.add_argument("--chart", metavar="PNG", help="write the per-layer chart of each precision's own errors")
    args = p.parse_args(argv)
    rows = measure(args.model, args.precisions.split(","), args.photos, args.config,
                   say=lambda m: print(m, flush=True))
    n = min(args.photos, len(PHOTO_NAMES))
    if args.markdown:
        print(markdown(rows, n))
    if args.chart:
        chart(rows, args.chart, f"{args.model} on {args.config}: each layer's own error, worst of {n} photographs "
                                f"(benchmarks/measure_accuracy.py --chart)")
        print(f"chart written to {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
