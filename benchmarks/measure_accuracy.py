"""Accuracy of a compiled reference network against onnxruntime float32, per precision.

    .venv/bin/python benchmarks/measure_accuracy.py resnet50 --precisions ms-fp9,mxfp8,ms-fp8,mxfp4 --images 10

For each precision: the cosine similarity of the NPU's logits to
onnxruntime's and the top-1 agreement over structured synthetic images
(compiler/models/images.py), simulated functionally on the chosen machine.
"""
from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort

from compiler.compile import compile_model
from compiler.io import run_on_simulator
from compiler.models import nets
from compiler.models.images import synthetic_batch


def main() -> None:
    """Print one line per precision."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=sorted(nets.MODELS))
    p.add_argument("--precisions", default="ms-fp9,mxfp8")
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--config", default="bw-s10")
    args = p.parse_args()
    model = nets.MODELS[args.model]()
    size = model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value
    xs = synthetic_batch(args.images, 42, size)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    refs = [sess.run(None, {"data": x[None]})[0].reshape(-1) for x in xs]
    for precision in args.precisions.split(","):
        compiled = compile_model(model, args.config, precision)
        cos, agree = [], 0
        for x, ref in zip(xs, refs):
            outs, _ = run_on_simulator(compiled.program, {"data": x[None]}, mode="functional")
            y = next(iter(outs.values())).reshape(-1)
            cos.append(float(y @ ref / np.linalg.norm(y) / np.linalg.norm(ref)))
            agree += int(y.argmax() == ref.argmax())
        print(f"{args.model} {precision}: cosine min {min(cos):.4f} mean {np.mean(cos):.4f}, "
              f"top-1 {agree}/{len(xs)}", flush=True)


if __name__ == "__main__":
    main()
