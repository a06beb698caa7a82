"""``npu landcover``: from an aerial raster to a land-cover map (scene, train, map; ``npu batch`` scores).

The walkthrough (docs/landcover.md)::

    npu landcover scene data                                   # synthetic training and mapping scenes
    npu landcover train data/train.tif data/train_labels.tif --out lc
    npu batch lc/featurizer.npuz data/area.tif --head lc/head.npz --out lc/area
    npu landcover map lc/area data/area.tif --labels data/area_labels.tif --out lc/area_map.tif
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .progress import BatchProgress

#: Featurizer networks: the trained one first (the default), then seeded reference networks.
FEATURIZERS = ("efficientnet_lite0", "resnet50", "vgg16", "densenet121")
#: The precision each featurizer is compiled at by default.
DEFAULT_PRECISION = "mxint8"


class LandcoverError(Exception):
    """A land-cover command cannot go on; the message says why."""


def _say(message: str) -> None:
    print(f"npu landcover: {message}", file=sys.stderr, flush=True)


def cmd_scene(args: argparse.Namespace) -> int:
    """Write a training scene and a mapping scene (different seeds), each with its label raster."""
    from runtime.scenes import make_scene

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, seed in (("train", args.seed), ("area", args.seed + 1)):
        classes = make_scene(out / f"{name}.tif", out / f"{name}_labels.tif", width=args.size, height=args.size,
                             seed=seed)
        _say(f"{out / f'{name}.tif'} and {out / f'{name}_labels.tif'}: {args.size} x {args.size} pixels, classes "
             f"{', '.join(classes)}")
    return 0


def compile_featurizer(model: str, path: Path, config: str, precision: str, chip: int) -> None:
    """Compile ``model`` without its classifier for chips of ``chip`` pixels (no resize, no crop) to ``path``."""
    from compiler.compile import compile_model
    from compiler.models import nets

    if model not in FEATURIZERS:
        raise LandcoverError(f"featurizer {model!r} unknown; choose one of {', '.join(FEATURIZERS)}")
    onnx_model = nets.MODELS[model](headless=True)
    compiled = compile_model(onnx_model, config, precision, preprocess={"resize": chip, "crop": chip})
    compiled.save(path)


def cmd_train(args: argparse.Namespace) -> int:
    """Featurize the training scene's chips on the NPU (Dask), train a head on them, save it."""
    from runtime.batch import run_batch
    from runtime.heads import save_head
    from runtime.imagery import chip_grid
    from runtime.landcover import features_and_targets, train_head
    from runtime.scenes import CLASSES

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    program = out / "featurizer.npuz"
    if not program.exists():
        _say(f"compiling the {args.model} featurizer for {args.config} at {args.precision} -> {program}")
        compile_featurizer(args.model, program, args.config, args.precision, args.chip)
    grid = chip_grid(args.image, chip=args.chip, stride=args.stride, edge=args.edge)
    _say(f"featurizing {grid.count} chips of {args.image} ({grid.rows} x {grid.cols}) on "
         f"{args.scheduler or f'a local Dask cluster of {args.workers} worker(s)'}")
    progress = BatchProgress("featurizing")
    try:
        report = run_batch(str(program), [args.image], out / "features", scheduler=args.scheduler,
                           workers=args.workers, chunk_size=args.chunk_size, chip=args.chip, stride=args.stride,
                           edge=args.edge, progress=progress)
    finally:
        progress.end()
    print(report.table())
    features, targets, _ = features_and_targets(out / "features", grid, args.labels)
    head, train = train_head(features, targets, list(CLASSES), kind=args.head, validation=args.validation)
    save_head(head, out / "head.npz")
    (out / "train_report.json").write_text(json.dumps(train.to_dict(), indent=1) + "\n")
    print(train.table())
    _say(f"head ({args.head}, {features.shape[1]} features -> {len(CLASSES)} classes) -> {out / 'head.npz'}; "
         f"features in {out / 'features' / 'parts'} (Parquet)")
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    """The class map of a scored batch job: a GeoTIFF of class codes, a colour PNG, and the accuracy."""
    from runtime.imagery import chip_grid, write_class_map, write_map_png
    from runtime.landcover import class_map, map_accuracy
    from runtime.scenes import CLASS_COLOURS, CLASSES

    job = json.loads((Path(args.batch) / "job.json").read_text())
    grid = chip_grid(args.image, chip=int(job.get("chip", 224)), stride=job.get("stride"), edge=job.get("edge", "pad"))
    classes = class_map(args.batch, grid)
    out = Path(args.out)
    write_class_map(out, grid, classes)
    title = f"land cover of {Path(args.image).name}: {grid.rows} x {grid.cols} chips"
    if args.labels:
        accuracy, confusion = map_accuracy(classes, grid, args.labels, len(CLASSES))
        title += f", accuracy {accuracy:.1%} against {Path(args.labels).name}"
        print(f"accuracy against {args.labels}: {accuracy:.3f} over {int(confusion.sum())} chips")
        width = 12
        print(" " * width + "".join(f"{c[:width - 1]:>{width}}" for c in CLASSES))
        for name, row in zip(CLASSES, confusion):
            print(f"{name[:width - 1]:<{width}}" + "".join(f"{int(v):>{width}}" for v in row))
    png = out.with_suffix(".png")
    write_map_png(png, classes, list(CLASSES), list(CLASS_COLOURS), title)
    _say(f"{out} (class codes, the source's georeference) and {png} (colour, with a legend)")
    return 0


def add_parser(sub) -> None:
    """The ``landcover`` command and its subcommands."""
    p = sub.add_parser("landcover", help="land-cover mapping: synthetic scenes, train a head on NPU features, maps")
    lc = p.add_subparsers(dest="landcover_command", required=True, metavar="STEP")

    s = lc.add_parser("scene", help="write a synthetic training scene and mapping scene with label rasters")
    s.add_argument("out", help="directory for train.tif, train_labels.tif, area.tif, area_labels.tif")
    s.add_argument("--size", type=int, default=2240, help="side in pixels (default 2240: 10 x 10 chips of 224)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_scene)

    s = lc.add_parser("train", help="featurize a scene's chips on the NPU and train a head on its labels")
    s.add_argument("image", help="raster (GeoTIFF, PNG or JPEG)")
    s.add_argument("labels", help="label raster of class codes, the image's size")
    s.add_argument("--out", required=True, help="directory for featurizer.npuz, features/, head.npz")
    s.add_argument("--model", default=FEATURIZERS[0], help=f"featurizer: {FEATURIZERS[0]} (ImageNet-trained, "
                   f"default) or a seeded reference network ({', '.join(FEATURIZERS[1:])})")
    s.add_argument("--config", default="bw-s10")
    s.add_argument("--precision", default=DEFAULT_PRECISION)
    s.add_argument("--head", choices=("logistic", "mlp"), default="logistic")
    s.add_argument("--validation", type=float, default=0.25, help="share of chips held out (default 0.25)")
    _batch_options(s)
    s.set_defaults(func=cmd_train)

    s = lc.add_parser("map", help="write the land-cover map of a batch job scored with a head")
    s.add_argument("batch", help="the output directory of npu batch ... --head")
    s.add_argument("image", help="the raster the job scored")
    s.add_argument("--out", required=True, help="map GeoTIFF to write (a .png beside it)")
    s.add_argument("--labels", help="label raster: report the map's accuracy against it")
    s.set_defaults(func=cmd_map)


def _batch_options(s) -> None:
    s.add_argument("--chip", type=int, default=224)
    s.add_argument("--stride", type=int, help="pixels between chips (default: the chip size)")
    s.add_argument("--edge", choices=("pad", "drop", "shift"), default="pad")
    s.add_argument("--workers", type=int, default=2, help="local Dask workers (default 2)")
    s.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    s.add_argument("--chunk-size", type=int, default=8, help="chips per task (default 8)")
