"""Weight rounding (nearest / mse / gptq, bias correction off / on) on the trained network, per precision.

    .venv/bin/python benchmarks/measure_rounding.py                  # EfficientNet-Lite0, 6 precisions x 6 choices
    .venv/bin/python benchmarks/measure_rounding.py --precisions mxfp4 --methods nearest,gptq --markdown

The bundled photographs are split: every third one (``--calibrate-every``)
calibrates gptq and bias correction, the others are held out and measured.
Each choice is compiled through the machine passes (where weights are
rounded: ``compiler.passes.round_weights``) and evaluated by
``compiler.reference`` -- bit-exact with the simulator (tests/test_weight_rounding.py
checks every lever) and much faster -- against onnxruntime float32:
logits cosine (mean, min) and top-1 agreement.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time

import numpy as np

from compiler.auto_precision import cosine
from compiler.compile import PRECISIONS, Compilation, compile_model, resolve_config, step_import, \
    step_machine_passes
from compiler.models import nets
from compiler.models.photos import PHOTO_NAMES, load_photos
from compiler.passes.round_weights import _input_desc
from compiler.reference import Reference

DEFAULT_PRECISIONS = ["ms-fp9", "msfp12", "mxfp4", "mxfp6", "mxfp8", "mxint8"]
METHODS = ["nearest", "mse", "gptq"]


def split_photos(every: int) -> tuple[list[str], list[str]]:
    """(calibration, held-out) photograph names: every ``every``-th one (from the ``every``-th) calibrates."""
    cal = [n for i, n in enumerate(PHOTO_NAMES) if i % every == every - 1]
    return cal, [n for n in PHOTO_NAMES if n not in cal]


def evaluate(model, imported, config: str, precision: str, method: str, bias_correction: bool, calibration,
             tests) -> tuple[list[float], int, float]:
    """(logits cosines, top-1 agreements, seconds to round) of one choice on the held-out inputs."""
    cfg = resolve_config(config, precision)
    c = Compilation(model, cfg, weight_rounding=method, bias_correction=bias_correction,
                    calibration=calibration if (method == "gptq" or bias_correction) else None)
    c.graph = copy.deepcopy(imported)
    t0 = time.perf_counter()
    step_machine_passes(c)
    seconds = time.perf_counter() - t0
    graph = c.graph
    desc = _input_desc(graph, cfg, graph.inputs[0])
    ref = Reference(graph, cfg)
    cosines, top1 = [], 0
    for x, want in tests:
        (y,) = ref.run({graph.inputs[0]: x}, [desc]).values()
        cosines.append(cosine(y, want))
        top1 += int(np.argmax(y) == np.argmax(want))
    return cosines, top1, seconds


def measure(precisions=DEFAULT_PRECISIONS, methods=METHODS, corrections=(False, True), every: int = 3,
            config: str = "bw-s10", model_name: str = "efficientnet_lite0", say=print,
            held_out: int | None = None) -> list[dict]:
    """One row per (precision, method, bias correction)."""
    import onnxruntime as ort

    model = nets.MODELS[model_name]()
    recipe = compile_model(model, config, "wide").program.metadata.preprocess
    cal_names, test_names = split_photos(every)
    test_names = test_names[:held_out]
    calibration = [recipe.array(img) for _n, img in load_photos(cal_names)]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    tests = []
    for _n, img in load_photos(test_names):
        x = recipe.array(img)
        tests.append((x, sess.run(None, {name: x})[0].reshape(-1)))
    c = Compilation(model, resolve_config(config, None))
    step_import(c)
    say(f"{model_name}: calibrating on {len(cal_names)} photographs ({', '.join(cal_names)}), measuring on "
        f"{len(test_names)} others")
    rows = []
    for precision in precisions:
        for method in methods:
            for bc in corrections:
                t0 = time.perf_counter()
                cos, top1, rounding = evaluate(model, c.graph, config, precision, method, bc, calibration, tests)
                row = {"precision": precision, "method": method, "bias_correction": bc, "mean": float(np.mean(cos)),
                       "min": float(np.min(cos)), "top1": top1, "n": len(tests), "rounding_s": rounding}
                rows.append(row)
                say(f"{precision:<8} {method:<8} bias corr {'on ' if bc else 'off'}: logits cosine mean "
                    f"{row['mean']:.4f} min {row['min']:.4f}, top-1 {top1}/{len(tests)} "
                    f"(rounding {rounding:.1f} s, total {time.perf_counter() - t0:.0f} s)")
    return rows


def markdown(rows: list[dict]) -> str:
    """The table for docs/numerics.md."""
    out = ["| precision | rounding | bias correction | logits cosine mean / min | top-1 |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['precision']} | {r['method']} | {'on' if r['bias_correction'] else 'off'} | "
                   f"{r['mean']:.4f} / {r['min']:.4f} | {r['top1']}/{r['n']} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet_lite0", choices=sorted(nets.MODELS))
    p.add_argument("--precisions", default=",".join(DEFAULT_PRECISIONS), help=f"of {', '.join(PRECISIONS)}")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--bias-correction", choices=("both", "off", "on"), default="both")
    p.add_argument("--calibrate-every", type=int, default=3, help="every N-th photograph calibrates (default 3)")
    p.add_argument("--held-out", type=int, help="measure on at most this many held-out photographs (default all)")
    p.add_argument("--config", default="bw-s10")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    corrections = {"both": (False, True), "off": (False,), "on": (True,)}[args.bias_correction]
    rows = measure(args.precisions.split(","), args.methods.split(","), corrections, args.calibrate_every,
                   args.config, args.model, say=lambda m: print(m, flush=True),
                   held_out=args.held_out)
    if args.markdown:
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
