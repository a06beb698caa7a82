"""python -m compiler.models NAME -o FILE.onnx [--seed S] [--headless]: write a reference network."""
from __future__ import annotations

import argparse
import sys

import onnx

from .nets import MODELS, TRAINED


def main(argv: list[str] | None = None) -> int:
    """Write one reference network as an ONNX file; exit status."""
    p = argparse.ArgumentParser(prog="python -m compiler.models", description=__doc__.splitlines()[0])
    p.add_argument("name", choices=sorted(MODELS))
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default 0; trained networks ignore it)")
    p.add_argument("--headless", action="store_true", help="cut the classifier: featurizer outputs")
    args = p.parse_args(argv)
    try:
        model = MODELS[args.name](seed=args.seed, headless=args.headless)
    except ImportError as exc:                  # a trained network whose package (the models extra) is missing
        print(f"error: {exc}", file=sys.stderr)
        return 2
    onnx.save(model, args.output)
    weights = "trained weights" if args.name in TRAINED else f"seed {args.seed}"
    print(f"{args.name}{' (headless)' if args.headless else ''}, {weights}: "
          f"{len(model.graph.node)} nodes -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
