"""The accuracy/cost frontier: bits per value against accuracy, for every way the compiler narrows a network.

    .venv/bin/python benchmarks/measure_frontier.py --markdown --chart docs/accuracy_frontier.png
    .venv/bin/python benchmarks/measure_frontier.py --quick          # 2 calibration + 4 held-out photos

The bundled photographs are split: ``CALIBRATION`` chooses formats and
calibrates weight rounding, the others (20 of 23) are held out and measured.
Points, each compiled for bw-s10 with 4-bit multipliers (``multiplier_bits=4``,
an ms-fp9-class MVU: formats with wider significands take several passes):

* direct cast: every narrow precision, weights rounded to nearest;
* weight rounding (``compiler.weight_rounding``): mse, gptq, gptq with bias
  correction, at the precisions where the direct cast loses most;
* the automatic per-layer choice (``compiler.auto_precision``) at several
  target cosines, alone and with gptq rounding.

Accuracy is measured with ``compiler.reference`` (bit-exact with the
simulator: tests/test_mixed_formats.py, tests/test_weight_rounding.py)
against onnxruntime float32: logits cosine (mean, min), top-1 and top-5
agreement.  Bits per value count each layer's weights once and its input
activations once, each in its layer's format.  Cycles are the simulator's
timing model for one image.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np


from compiler.auto_precision import DEFAULT_CANDIDATES, choose_from, cosine, measure_sensitivity
from compiler.compile import compile_model, resolve_config
from compiler.models import nets
from compiler.models.photos import PHOTO_NAMES, load_photos
from compiler.reference import reference_outputs
from compiler.verify import ort_with_outputs
from npu.hostio import run_on_simulator
from npu.numerics.formats import get_format

CALIBRATION = ["motorcycle_left", "china", "moon"]
DIRECT = ["ms-fp8", "ms-fp9", "mxfp4", "msfp12", "mxfp6", "mxfp8", "mxint8"]
ROUNDED = ["ms-fp9", "mxfp4", "mxfp6"]
ROUNDINGS = [("mse", False), ("gptq", False), ("gptq", True)]
TARGETS = [0.999, 0.995, 0.99, 0.98, 0.95]
MULTIPLIER_BITS = 4


@dataclass
class Point:
    """One compiled variant of the network and what it keeps."""

    label: str
    kind: str                            # "direct", "rounding", "auto"
    bits_per_value: float
    weight_bits: float
    activation_bits: float
    cycles: int
    cosines: list[float] = field(default_factory=list)
    top1: int = 0
    top5: int = 0
    layers: dict = field(default_factory=dict)      # the automatic choice: layer -> precision

    def line(self, n: int) -> str:
        """One line of results."""
        return (f"{self.label:<34} {self.bits_per_value:5.2f} bits/value (w {self.weight_bits:.2f}, a "
                f"{self.activation_bits:.2f}), {self.cycles:>9,} cycles, logits cosine mean "
                f"{np.mean(self.cosines):.4f} min {np.min(self.cosines):.4f}, top-1 {self.top1}/{n}, top-5 "
                f"{self.top5}/{n}")


def _program_bits(compiled, native_dim: int) -> tuple[float, float, float]:
    """Bits per value of the program's MVU operands: (all, weights, activations), each layer in its formats."""
    from compiler.ir import Conv

    cfg = compiled.config
    w = a = nw = na = 0.0
    for nd in compiled.graph.topological():
        if not isinstance(nd, Conv):
            continue
        weights = nd.weight.size // max(nd.column_phases, 1)
        acts = int(np.prod(compiled.graph.shapes[nd.inputs[0]][1:]))
        wb = get_format(nd.weight_format or cfg.weight_format).bits_per_value(native_dim)
        ab = get_format(nd.activation_format or cfg.activation_format).bits_per_value(native_dim)
        w, a, nw, na = w + weights * wb, a + acts * ab, nw + weights, na + acts
    return (w + a) / (nw + na), w / nw, a / na


class Frontier:
    """Compiles and measures points on one network, photographs split into calibration and held-out."""

    def __init__(self, model_name: str, config: str, calibration: list[str], held_out: list[str], say=print):
        self.model = nets.MODELS[model_name]()
        self.config = resolve_config(config, None).replace(multiplier_bits=MULTIPLIER_BITS)
        self.say = say
        recipe = compile_model(self.model, self.config, "wide").program.metadata.preprocess
        self.calibration = [recipe.array(img) for _, img in load_photos(calibration)]
        self.held_out = [recipe.array(img) for _, img in load_photos(held_out)]
        out = self.model.graph.output[0].name
        session = ort_with_outputs(self.model, [])
        name = session.get_inputs()[0].name
        self.targets = [np.asarray(session.run([out], {name: x})[0], np.float32).ravel() for x in self.held_out]
        self.points: list[Point] = []

    def measure(self, label: str, kind: str, **compile_args) -> Point:
        """Compile with ``compile_args``, evaluate the held-out photographs, time one image."""
        t0 = time.perf_counter()
        if compile_args.get("weight_rounding", "nearest") != "nearest" or compile_args.get("bias_correction"):
            compile_args["calibration"] = self.calibration
        compiled = compile_model(self.model, self.config, **compile_args)
        desc = compiled.program.inputs[0]
        _, result = run_on_simulator(compiled.program, {desc.name: self.held_out[0]}, mode="timing")
        point = Point(label, kind, *_program_bits(compiled, self.config.native_dim), result.stats.total_cycles)
        for x, ref in zip(self.held_out, self.targets):
            y = next(iter(reference_outputs(compiled, {desc.name: x}).values())).ravel()
            point.cosines.append(cosine(y, ref))
            point.top1 += int(y.argmax() == ref.argmax())
            point.top5 += int(ref.argmax() in np.argsort(-y)[:5])
        point.layers = dict(compile_args.get("layer_formats") or {})
        self.points.append(point)
        self.say(f"{point.line(len(self.held_out))} ({time.perf_counter() - t0:.0f} s)")
        return point

    def run(self, direct=DIRECT, rounded=ROUNDED, roundings=ROUNDINGS, targets=TARGETS,
            candidates=DEFAULT_CANDIDATES) -> list[Point]:
        """Every point: direct casts, weight rounding, the automatic choice at each target."""
        for p in direct:
            self.measure(p, "direct", precision=p)
        for p in rounded:
            for method, bias in roundings:
                self.measure(f"{p} {method}{' + bias corr.' if bias else ''}", "rounding", precision=p,
                             weight_rounding=method, bias_correction=bias)
        if targets:
            t0 = time.perf_counter()
            sens = measure_sensitivity(self.model, self.config, self.calibration, candidates=candidates,
                                       progress=lambda m: None)
            self.say(f"sensitivity of {len(sens.layers)} layers x {len(candidates) - 1} precisions on "
                     f"{len(self.calibration)} photographs: {time.perf_counter() - t0:.0f} s")
            for target in targets:
                choice = choose_from(sens, target)
                for method in ("nearest", "gptq"):
                    self.measure(f"auto {target} ({choice.default} + {len(choice.layers)} layers)"
                                 + ("" if method == "nearest" else " gptq"), "auto", precision=choice.default,
                                 layer_formats=choice.layers, weight_rounding=method)
        return self.points


def markdown(points: list[Point], n: int) -> str:
    """The docs table."""
    out = ["| variant | bits/value (weights, activations) | cycles | logits cosine mean / min | top-1 | top-5 |",
           "|---|---|---|---|---|---|"]
    for p in points:
        out.append(f"| {p.label} | {p.bits_per_value:.2f} ({p.weight_bits:.2f}, {p.activation_bits:.2f}) | "
                   f"{p.cycles:,} | {np.mean(p.cosines):.4f} / {np.min(p.cosines):.4f} | {p.top1}/{n} | "
                   f"{p.top5}/{n} |")
    return "\n".join(out)


def chart(points: list[Point], path: str, title: str) -> None:
    """A PNG: bits/value against the worst and mean logits cosine, one marker per kind of variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"direct": ("o", "tab:blue"), "rounding": ("s", "tab:orange"), "auto": ("^", "tab:green")}
    for kind, (marker, color) in styles.items():
        pts = [p for p in points if p.kind == kind]
        if not pts:
            continue
        ax.scatter([p.bits_per_value for p in pts], [np.min(p.cosines) for p in pts], marker=marker, color=color,
                   label=kind)
        bx.scatter([p.bits_per_value for p in pts], [p.cycles for p in pts], marker=marker, color=color, label=kind)
        for p in pts:
            ax.annotate(p.label.split(" (")[0], (p.bits_per_value, np.min(p.cosines)), fontsize=6,
                        xytext=(3, 2), textcoords="offset points")
    ax.axhline(0.99, color="grey", linewidth=0.8, linestyle="--")
    ax.axvline(5.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("bits per value (weights and activations)")
    ax.set_ylabel("worst logits cosine to fp32 (held-out photographs)")
    ax.set_ylim(-0.05, 1.02)
    ax.legend(fontsize=8)
    bx.set_xlabel("bits per value")
    bx.set_ylabel("simulated cycles per image")
    bx.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    """Measure the frontier; print one line per point (and the docs table, chart, JSON on request)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet_lite0", choices=sorted(nets.TRAINED))
    p.add_argument("--config", default="bw-s10")
    p.add_argument("--quick", action="store_true", help="2 calibration and 4 held-out photographs, fewer points")
    p.add_argument("--markdown", action="store_true", help="print the docs table")
    p.add_argument("--chart", metavar="PNG", help="write the frontier chart")
    p.add_argument("--json", metavar="FILE", help="write every point as JSON")
    args = p.parse_args(argv)
    calibration = CALIBRATION[:2] if args.quick else CALIBRATION
    held_out = [n for n in PHOTO_NAMES if n not in CALIBRATION][:4 if args.quick else None]
    say = lambda m: print(m, flush=True)          # noqa: E731
    say(f"{args.model} on {args.config} (multiplier_bits={MULTIPLIER_BITS}): calibrating on {', '.join(calibration)};"
        f" measuring on {len(held_out)} held-out photographs")
    f = Frontier(args.model, args.config, calibration, held_out, say)
    if args.quick:
        points = f.run(direct=["ms-fp9", "mxint8"], rounded=["ms-fp9"], roundings=[("mse", False)],
                       targets=[0.99], candidates=("ms-fp9", "mxint8", "bfp24"))
    else:
        points = f.run()
    n = len(held_out)
    if args.markdown:
        print(markdown(points, n))
    if args.chart:
        chart(points, args.chart, f"{args.model} on {args.config} with 4-bit multipliers, {n} held-out photographs "
                                  f"(benchmarks/measure_frontier.py --chart)")
        print(f"chart written to {args.chart}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([asdict(p) for p in points], fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
