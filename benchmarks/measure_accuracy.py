"""Accuracy of a compiled reference network against onnxruntime float32, per precision.

    .venv/bin/python benchmarks/measure_accuracy.py resnet50 --precisions ms-fp9,mxfp8,ms-fp8,mxfp4 --images 10

For each precision: the cosine similarity of the NPU's logits to
onnxruntime's and the top-1 agreement over structured synthetic images
(compiler/models/images.py), simulated functionally on the chosen machine;
and the same cosine for the features the classifier reads (the network
compiled up to the classifier's input), with their spread across the images
(mean distance from the images' mean feature, relative to its norm): the
builders' calibrated classifier reads exactly that spread, so the format's
feature error relative to it is what reaches the logits.
"""
from __future__ import annotations

import argparse

import numpy as np
import onnx
import onnxruntime as ort

from compiler.compile import compile_model
from compiler.io import run_on_simulator
from compiler.models import nets
from compiler.models.images import synthetic_batch


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _classifier_input(model: onnx.ModelProto) -> str:
    """The tensor the last Gemm (or MatMul) reads."""
    dense = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    return dense[-1].input[0]


def _onnxruntime(model: onnx.ModelProto, extra: str, xs: np.ndarray):
    """(logits, features) of every image, with ``extra`` exposed as a second output."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(extra, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {"data": x[None]}) for x in xs]
    return [o[0].reshape(-1) for o in outs], [o[1].reshape(-1) for o in outs]


def _npu(model, config: str, precision: str, xs: np.ndarray, cut_at: str | None = None):
    compiled = compile_model(model, config, precision, cut_at=cut_at)
    return [next(iter(run_on_simulator(compiled.program, {"data": x[None]}, mode="functional")[0].values()))
            .reshape(-1) for x in xs]


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
    feature = _classifier_input(model)
    refs, ref_feats = _onnxruntime(model, feature, xs)
    mean = np.mean(ref_feats, axis=0)
    spread = float(np.mean([np.linalg.norm(f - mean) for f in ref_feats]) / np.linalg.norm(mean))
    print(f"{args.model}: classifier input {feature!r}, spread across the images {spread:.1%} of its mean",
          flush=True)
    for precision in args.precisions.split(","):
        logits = _npu(model, args.config, precision, xs)
        feats = _npu(model, args.config, precision, xs, cut_at=feature)
        cos = [_cosine(y, r) for y, r in zip(logits, refs)]
        fcos = [_cosine(f, r) for f, r in zip(feats, ref_feats)]
        error = np.mean([np.linalg.norm(f - r) for f, r in zip(feats, ref_feats)]) / np.linalg.norm(mean)
        agree = sum(int(y.argmax() == r.argmax()) for y, r in zip(logits, refs))
        print(f"{args.model} {precision}: logits cosine min {min(cos):.4f} mean {np.mean(cos):.4f}, "
              f"top-1 {agree}/{len(xs)}; features cosine mean {np.mean(fcos):.4f}, "
              f"error {error / spread:.2f}x the spread", flush=True)


if __name__ == "__main__":
    main()
