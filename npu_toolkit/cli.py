"""The ``npu`` command line: one entry point, one subcommand per job."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from npu import __version__
from npu.config import DEFAULT_PRESET, PRESETS, ConfigError, NPUConfig, load_config
from npu.sim.memory import DEFAULT_MEMORY_BUDGET

#: The candidates of ``npu compile --precision auto`` (``compiler.auto_precision.DEFAULT_CANDIDATES``).
AUTO_CANDIDATES = ("ms-fp9", "mxfp4", "mxfp6", "mxint8", "bfp24")


class CliError(Exception):
    """A user-facing error: printed as one message, exit status 2."""


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(str(c).rjust(w) if isinstance(c, (int, float)) else str(c).ljust(w)
                             for c, w in zip(r, widths)))
    return "\n".join(out)


def presets_table(configs: list[NPUConfig]) -> str:
    """A readable table of machine configurations."""
    rows = []
    for c in configs:
        formats = f"{c.weight_format}/{c.activation_format}/{c.mfu_format}"
        if c.extra_formats:
            formats += " + " + ", ".join(c.extra_formats)
        rows.append([c.name, c.native_dim, c.tiles, c.lanes, f"{c.macs:,}", c.mfus, c.write_ports,
                     f"{c.clock_mhz:g}", f"{c.peak_tops:.1f}", f"{c.vrf_depth * c.vector_bytes / 2**20:g}",
                     c.mrf_tiles, f"{c.dram_gbps:g}", formats])
    return _table(["preset", "N", "tiles", "lanes", "MACs", "MFUs", "write ports", "MHz", "peak TOPS", "VRF MiB",
                   "MRF tiles", "DRAM GB/s", "formats w/a/mfu (+ extra MVU modes)"], rows)


def formats_table(native_dim: int) -> str:
    """A readable table of every numeric format."""
    from npu.numerics.formats import FORMATS, BlockFormat, FloatFormat

    rows = []
    for f in FORMATS.values():
        if isinstance(f, BlockFormat):
            el = f.element
            elem = {"sm": f"sign+{el.bits - 1}-bit magnitude", "int": "int8 two's complement",
                    "fp": f"E{el.ebits}M{el.mbits} minifloat"}[el.kind]
            block = f"N={native_dim}" if f.block == 0 else str(f.block)
            rows.append([f.name, "block (MVU)", elem, block, f"{f.scale_bits}-bit exp",
                         f"{f.bits_per_value(native_dim):.3g}", f"{el.max_normal:g} x 2^s"])
        elif isinstance(f, FloatFormat):
            rows.append([f.name, "scalar (MFU)", "IEEE-style float", "-", "-", f.bits, "-"])
        else:
            rows.append([f.name, "reference", "int8, binary32 scale per row", "row", "fp32 scale",
                         "8 + 32/row", "127 x scale"])
    return _table(["format", "family", "element", "block", "scale", "bits/value", "largest"], rows)


def _cmd_formats(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    print(formats_table(cfg.native_dim))
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    if args.show:
        print(load_config(args.show).to_json(), end="")
    else:
        print(presets_table(list(PRESETS.values())))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from hdl.core import UnsupportedConfig
    from hdl.synth import report_table, synthesize
    from hdl.toolchain import ToolchainError

    cfg = load_config(args.config)
    try:
        report = synthesize(cfg, stage=args.stage, reuse=args.reuse)
    except (UnsupportedConfig, ToolchainError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(report.to_json(), end="")
    else:
        print(report_table([report]))
        print(f"{report.yosys}, {report.family}; memories: " + ", ".join(
            f"{m.name} {m.depth} x {m.width} ({m.read_ports} read ports)" for m in report.memories))
        for note in report.notes:
            print(note)
    return 0 if report.synthesisable else 1


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read: {exc}") from None


def _cmd_asm(args: argparse.Namespace) -> int:
    from npu.isa.assembler import assemble

    cfg = load_config(args.config)
    program = assemble(_read_text(args.source), cfg, source=args.source)
    out = Path(args.output) if args.output else Path(args.source).with_suffix(".bin")
    out.write_bytes(program.words)
    print(f"{args.source}: {len(program.instructions)} instructions, {len(program.words)} bytes -> {out}")
    return 0


def _cmd_disasm(args: argparse.Namespace) -> int:
    from npu.isa.disassembler import disassemble
    from npu.isa.encoding import decode_program

    try:
        data = Path(args.binary).read_bytes()
    except OSError as exc:
        raise CliError(f"{args.binary}: cannot read: {exc.strerror or exc}") from None
    text = disassemble(decode_program(data), show_index=args.index)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from npu.sim import simulate

    path = Path(args.program)
    image = None
    if path.suffix == ".npuz":
        from npu.npuz import load_program

        program = load_program(path, load_config(args.config) if args.config else None)
        cfg, image = program.config, program.dram
    else:
        cfg = load_config(args.config or DEFAULT_PRESET)
        if path.suffix in (".s", ".asm"):
            from npu.isa.assembler import assemble

            program = assemble(_read_text(args.program), cfg, source=args.program)
        else:
            try:
                program = path.read_bytes()
            except OSError as exc:
                raise CliError(f"{args.program}: cannot read: {exc.strerror or exc}") from None
    if args.dram:
        try:
            image = Path(args.dram).read_bytes()
        except OSError as exc:
            raise CliError(f"{args.dram}: cannot read: {exc.strerror or exc}") from None
    if args.memory_budget < 1:
        raise CliError(f"--memory-budget {args.memory_budget}: must be at least 1 (MiB)")
    result = simulate(program, cfg, dram=image, mode=args.mode, cycle_budget=args.budget,
                      memory_budget=args.memory_budget << 20)
    if result.stats is not None:
        print(result.stats.table())
    else:
        print(f"{args.program}: ran functionally (no timing in this mode)")
    if args.trace:
        result.write_trace(args.trace)
        print(f"trace written to {args.trace} (open it in Perfetto or chrome://tracing)")
    if args.dump:
        try:
            addr_text, size_text = args.dump.split(":")
            addr, size = int(addr_text, 0), int(size_text, 0)
        except ValueError:
            raise CliError(f"--dump {args.dump!r}: expected ADDR:NBYTES, e.g. 0x1000:4096") from None
        out = Path(args.dump_to)
        out.write_bytes(result.dram(addr, size))
        print(f"DRAM {addr:#x}..{addr + size - 1:#x} written to {out}")
    return 0


def _precision_option(text: str | None) -> tuple[str | None, dict | None]:
    """(precision, layer formats) of a ``--precision`` value: a precision name, or a JSON file
    ``{"default": ..., "layers": {...}}`` (``compiler.compile.read_precision_file``)."""
    from compiler.precision import PRECISIONS, read_precision_file

    if text is None or text in PRECISIONS or not (text.endswith(".json") or Path(text).is_file()):
        return text, None
    return read_precision_file(text)


#: File name endings ``--calibration`` reads as images.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def calibration_inputs(model, directory: str) -> list[np.ndarray]:
    """The images of ``directory`` as model inputs, preprocessed with the recipe the program will carry."""
    from compiler.compile import preprocess_recipe
    from compiler.frontend import import_onnx
    from npu.preprocess import ImageError

    folder = Path(directory)
    if not folder.is_dir():
        raise CliError(f"--calibration {directory}: no such directory")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CliError(f"--calibration {directory}: no images ({', '.join(IMAGE_SUFFIXES)}) in the directory")
    graph = import_onnx(model)
    recipe = preprocess_recipe(graph)
    hwc = graph.metadata.get("io_order", {}).get(graph.inputs[0]) == "hwc"
    inputs = []
    for path in files:
        try:
            x = recipe(path.read_bytes(), str(path))
        except OSError as exc:
            raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except ImageError as exc:
            raise CliError(f"--calibration: {exc}") from None
        inputs.append(x.transpose(0, 2, 3, 1) if hwc else x)
    return inputs


def _choose_precisions(args: argparse.Namespace, calibration: list, out: Path) -> tuple[str | None, dict]:
    """``--precision auto``: choose per-layer formats, say what was chosen, save it beside the program."""
    import json

    from compiler.auto_precision import choose_precisions

    def say(message: str) -> None:
        if sys.stderr.isatty() or not message.startswith("sensitivity: layer"):
            print(f"npu compile: {message}", file=sys.stderr, flush=True)

    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    choice = choose_precisions(args.model, args.config, calibration, target_cosine=args.target_cosine,
                               candidates=candidates, progress=say)
    path = out.with_suffix(".precision.json")
    path.write_text(json.dumps(choice.as_json(), indent=1) + "\n")
    say(f"chose {choice.default or 'per-layer formats'} with {len(choice.layers)} layer(s) in other formats: "
        f"{choice.bits_per_value:.2f} bits/value (weights {choice.weight_bits:.2f}, activations "
        f"{choice.activation_bits:.2f}); output cosine on the {len(calibration)} calibration image(s): min "
        f"{min(choice.cosines):.4f}, mean {sum(choice.cosines) / len(choice.cosines):.4f} -> {path} (reuse it "
        f"with --precision {path})")
    return choice.default, choice.layers


def _cmd_compile(args: argparse.Namespace) -> int:
    import time

    from compiler.compile import compile_model
    from compiler.partition import SegmentedModel, compile_with_host_fallback
    from compiler.report import report_table
    from npu.sim import simulate

    def progress(done: int, total: int, stage: str = "generating code") -> None:
        if sys.stderr.isatty() or done == total:
            print(f"\r{stage}: layer {done}/{total}", end="\n" if done == total else "", file=sys.stderr)

    t0 = time.perf_counter()
    auto = args.precision == "auto"
    if auto and not args.calibration:
        raise CliError("--precision auto needs --calibration DIR (a directory of images)")
    if (args.weight_rounding == "gptq" or args.bias_correction) and not args.calibration:
        raise CliError(f"--weight-rounding {args.weight_rounding}"
                       f"{' with --bias-correction' if args.bias_correction else ''} needs --calibration DIR "
                       f"(a directory of images)")
    calibration = calibration_inputs(args.model, args.calibration) if args.calibration else None
    out = Path(args.output) if args.output else Path(args.model).with_suffix(".npuz")
    if auto:
        precision, layer_formats = _choose_precisions(args, calibration, out)
    else:
        precision, layer_formats = _precision_option(args.precision)
    compile_fn = compile_model if args.no_host_fallback else compile_with_host_fallback
    compiled = compile_fn(args.model, args.config, precision, progress=progress, layer_formats=layer_formats,
                          weight_rounding=args.weight_rounding, bias_correction=args.bias_correction,
                          calibration=calibration)
    seconds = time.perf_counter() - t0
    compiled.save(out)
    if isinstance(compiled, SegmentedModel):
        return _report_segmented(args, compiled, seconds, out)
    stats = simulate(compiled.program, compiled.config, dram=compiled.program.dram, mode="timing").stats
    print(report_table(compiled, stats))
    cfg = compiled.config
    print(f"{args.model}: compiled in {seconds:.2f} s for {cfg.name} (weights {cfg.weight_format}, activations "
          f"{cfg.activation_format}, MFU {cfg.mfu_format}); {len(compiled.program.words) // 16:,} instructions, "
          f"{len(compiled.program.dram) / 1e6:,.1f} MB DRAM image -> {out}")
    return 0


def _report_segmented(args: argparse.Namespace, compiled, seconds: float, out: Path) -> int:
    """The compile report of a host-fallback program: each NPU segment's layers, then the split."""
    from compiler.report import measure_host_seconds, report_table, split_table
    from npu.sim import simulate

    stats, host = {}, {}
    for seg in compiled.program.segments:
        if seg.kind == "npu":
            stats[seg.name] = simulate(seg.program, seg.program.config, dram=seg.program.dram, mode="timing").stats
            print(f"== {seg.name} (NPU) ==")
            print(report_table(compiled.compiled[seg.name], stats[seg.name]))
        else:
            host[seg.name] = measure_host_seconds(compiled.models[seg.name])
    print("== split between the NPU and the host ==")
    print(split_table(compiled, stats, host))
    cfg = compiled.config
    npu = compiled.program.npu_segments
    print(f"{args.model}: compiled in {seconds:.2f} s for {cfg.name} (weights {cfg.weight_format}, activations "
          f"{cfg.activation_format}, MFU {cfg.mfu_format}) with host fallback: {len(npu)} NPU and "
          f"{len(compiled.program.segments) - len(npu)} host segment(s) -> {out} (--no-host-fallback refuses "
          f"instead)")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from compiler.compile import compile_model
    from compiler.partition import SegmentedModel, compile_with_host_fallback
    from compiler.verify import verify_model, verify_segmented
    from npu.preprocess import ImageError
    from runtime.session import model_io

    def say(message: str) -> None:
        print(f"npu verify: {message}", file=sys.stderr, flush=True)

    say(f"compiling {args.model} for {args.config} at {args.precision}")
    precision, layer_formats = _precision_option(args.precision)
    compile_fn = compile_model if args.no_host_fallback else compile_with_host_fallback
    compiled = compile_fn(args.model, args.config, precision, layer_formats=layer_formats)
    desc = model_io(compiled.program)[0][0]
    hwc = desc.order == "hwc"
    recipe = compiled.program.metadata.preprocess
    inputs, names = [], []
    if args.image:
        for path in args.image:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from None
            try:
                x = recipe(data, path)
                inputs.append(x.transpose(0, 2, 3, 1) if hwc else x)
            except ImageError as exc:
                raise CliError(str(exc)) from None
            names.append(path)
    else:
        from compiler.models.photos import MissingPhotosError, load_photos

        try:
            if desc.shape[-1 if hwc else 0] != 3 or recipe is None:
                raise MissingPhotosError("not an RGB model")
            for name, photo in load_photos(["chelsea", "coffee"]):
                x = recipe.array(photo)
                inputs.append(x.transpose(0, 2, 3, 1) if hwc else x)
                names.append(f"{name} (scikit-image)")
        except MissingPhotosError:
            inputs = [np.random.default_rng(0).standard_normal((1, *desc.shape)).astype(np.float32)]
            names = ["seeded normal noise"]
    if inputs and tuple(inputs[0].shape[1:]) != tuple(desc.shape):
        raise CliError(f"the images become {list(inputs[0].shape)} tensors; the model takes {[1, *desc.shape]}")
    say(f"inputs: {', '.join(names)}")
    if isinstance(compiled, SegmentedModel):
        say(f"host fallback: {len(compiled.host_ops)} operator(s) run on the host; checking each NPU segment")
        report = verify_segmented(args.model, compiled, args.precision, inputs, progress=say)
    else:
        report = verify_model(args.model, compiled.config, args.precision, inputs, compiled=compiled, progress=say)
    print(report.table())
    return 0 if report.ok else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from runtime.server import Limits, ListenError, serve_forever
    from runtime.server.limits import MiB

    if not (Path(args.program).is_file() or Path(args.program).is_dir()):
        raise CliError(f"{args.program}: no such program file or model repository directory")
    if Path(args.program).is_dir() and args.name:
        raise CliError("--name names the model of a single program file; a repository's models are named by "
                       "their directories")
    if args.worker_memory is not None and not args.worker_memory > 0:
        raise CliError(f"--worker-memory must be a positive number of MiB, not {args.worker_memory:g}")
    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise CliError(f"--token-file {args.token_file}: cannot read ({exc.strerror or exc})") from None
        if not token:
            raise CliError(f"--token-file {args.token_file}: the file is empty")
    elif os.environ.get("NPU_SERVE_TOKEN"):
        token = os.environ["NPU_SERVE_TOKEN"]
    if (args.tls_cert is None) != (args.tls_key is None):
        raise CliError("TLS needs both --tls-cert and --tls-key")
    mib = lambda v: None if v is None else int(v * MiB)   # noqa: E731
    try:
        limits = Limits().with_(max_body=mib(args.max_body), max_json=mib(args.max_json),
                                body_memory=mib(args.body_memory), read_timeout=args.read_timeout,
                                body_timeout=args.body_timeout, keep_alive=args.keep_alive, backlog=args.backlog,
                                grpc_calls=args.grpc_calls)
        return serve_forever(args.program, host=args.host, http_port=args.port, grpc_port=args.grpc_port,
                             workers=args.workers, queue_size=args.queue, timeout=args.timeout, name=args.name,
                             limits=limits, token=token, certfile=args.tls_cert, keyfile=args.tls_key,
                             **({} if args.worker_memory is None else {"worker_memory": mib(args.worker_memory)}))
    except (ListenError, ValueError, RuntimeError) as exc:   # a port in use, a bad limit, workers that cannot start
        raise CliError(str(exc)) from None


def _cmd_demo(args: argparse.Namespace) -> int:
    from compiler.models.nets import DETECTORS

    from .demo import run_demo

    if args.model in DETECTORS:
        from .demo_detect import run_detection_demo

        return run_detection_demo(args.config, args.model, args.precision, args.out)
    return run_demo(args.config, args.model, args.precision, args.out)


def _cmd_batch(args: argparse.Namespace) -> int:
    from runtime.batch import BatchError, BatchFailed, run_batch

    from .progress import BatchProgress

    progress = BatchProgress()
    end_bar = progress.end

    try:
        report = run_batch(args.program, args.inputs, args.out, head=args.head, scheduler=args.scheduler,
                           workers=args.workers, chunk_size=args.chunk_size, chip=args.chip, stride=args.stride,
                           edge=args.edge, features=args.features, progress=progress)
    except BatchFailed as exc:
        end_bar()
        print(exc.report.table())
        raise CliError(str(exc)) from None
    except BatchError as exc:
        raise CliError(str(exc)) from None
    finally:
        end_bar()
    print(report.table())
    return 0


def _cmd_pipeline_create(args: argparse.Namespace) -> int:
    import json

    from npu.preprocess import Preprocess
    from runtime.pipelines import create_pipeline

    labels = None
    if args.labels:
        labels = [line.strip() for line in _read_text(args.labels).splitlines() if line.strip()]
    preprocess = None
    if args.preprocess:
        try:
            preprocess = Preprocess.from_dict(json.loads(_read_text(args.preprocess)))
        except (TypeError, ValueError, AttributeError) as exc:
            raise CliError(f"--preprocess {args.preprocess}: not a preprocessing recipe: {exc}") from None
    name = args.name if args.name is not None else Path(args.output).stem
    pipe = create_pipeline(args.program, args.head, labels, args.version, name, preprocess)
    pipe.save(args.output)
    print(f"wrote {args.output}: {_pipeline_summary(pipe)}")
    return 0


def _pipeline_summary(pipe) -> str:
    from runtime.session import model_io

    program = pipe.program()
    kind = type(program).__name__
    _, outputs = model_io(program)
    head = {"none": "no head", "arrays": "arrays head (head.npz)", "onnx": "ONNX head (head.onnx)"}[pipe.head_kind]
    classes = len(pipe.labels) if pipe.labels is not None else "unlabelled"
    return (f"pipeline {pipe.name!r} version {pipe.version!r}: {kind} ({program.metadata.model or 'model'}, "
            f"output {', '.join(f'{o.name} {list(o.shape)}' for o in outputs)}), {head}, {classes} labels")


def _cmd_pipeline_show(args: argparse.Namespace) -> int:
    import json

    from npu.pipeline import load_pipeline
    from runtime.pipelines import check_pipeline, head_classes, head_features
    from runtime.session import model_io

    pipe = load_pipeline(args.file)
    head = check_pipeline(pipe, args.file)
    program = pipe.program()
    inputs, outputs = model_io(program)
    meta = program.metadata
    print(f"pipeline: {pipe.name or '(unnamed)'}  version: {pipe.version or '(none)'}")
    print(f"program: {type(program).__name__} for machine {program.config.name!r}, model "
          f"{meta.model or '(unnamed)'}, {len(pipe.program_bytes):,} bytes")
    print(f"  input:  {', '.join(f'{t.name} {list(t.shape)} {t.order}' for t in inputs)}")
    print(f"  output: {', '.join(f'{t.name} {list(t.shape)}' for t in outputs)}")
    if head is None:
        print("head: none (scores are the program's outputs)")
    else:
        print(f"head: {pipe.head_kind} ({type(head).__name__}), {head_features(head)} features -> "
              f"{head_classes(head)} classes, {len(pipe.head_bytes):,} bytes")
    recipe = pipe.preprocess or meta.preprocess
    source = "pipeline" if pipe.preprocess is not None else "program" if meta.preprocess is not None else "default"
    print(f"preprocess ({source}): {json.dumps(recipe.to_dict()) if recipe is not None else 'for the input size'}")
    if pipe.labels is None:
        print("labels: none")
    else:
        shown = ", ".join(pipe.labels[:10]) + (", ..." if len(pipe.labels) > 10 else "")
        print(f"labels ({len(pipe.labels)}): {shown}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from compiler.sweep import SweepError, pareto, read_spec, run_sweep

    from .progress import BatchProgress

    try:
        spec = read_spec(args.spec)
    except SweepError as exc:
        raise CliError(str(exc)) from None
    bar = BatchProgress("sweep", "points")
    t0 = time.perf_counter()
    try:
        rows = run_sweep(spec, args.out, scheduler=args.scheduler, workers=args.workers,
                         progress=lambda done, total, link: bar(done, total, {
                             "dashboard": link, "per_s": done / max(time.perf_counter() - t0, 1e-9)}))
    finally:
        bar.end()
    refused = [r for r in rows if not r["ok"]]
    print(f"{len(rows)} points ({len(refused)} refused) in {time.perf_counter() - t0:.1f} s -> {args.out}, "
          f"{Path(args.out).with_suffix('.png')}")
    print(f"{'model':<14} {'images/s':>10} {'util':>7} {'area proxy':>12}  changes (Pareto frontier)")
    for r in pareto(rows):
        changes = ", ".join(f"{k}={r[k]}" for k in sorted(r) if k in spec.get("grid", spec.get("random", {})
                                                                             .get("fields", {})))
        print(f"{r['model']:<14} {r['images_per_s']:>10,.1f} {r['utilisation']:>7.1%} {r['area_proxy']:>12,.0f}  "
              f"{changes}")
    for r in refused[:10]:
        print(f"refused: {r['model']} {r['key']}: {r['reason']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``npu`` command."""
    p = argparse.ArgumentParser(prog="npu", description="Brainwave-style NPU toolkit")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("demo", help="compile the trained EfficientNet-Lite0 and classify photographs on the "
                                    "simulator, beside onnxruntime (embedded defaults)")
    s.add_argument("--config", default=DEFAULT_PRESET, help="preset name or JSON file")
    s.add_argument("--model", default="efficientnet_lite0", help="network: efficientnet_lite0 (trained) or a seeded "
                   "reference network such as resnet50 (python -m compiler.models --help); ssd-vgg (or ssd-small) "
                   "detects objects and draws the boxes on a photograph")
    s.add_argument("--precision", help="numeric precision (see npu compile --help; default mxint8 for the trained "
                                       "network, ms-fp9 for seeded ones)")
    s.add_argument("--out", default="demo_out", help="directory for the program, trace and chart")
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser("run", help="simulate a program and print its statistics")
    s.add_argument("program", help="program file (.npuz), binary words, or assembly text (.s / .asm)")
    s.add_argument("--config", help=f"preset name or JSON file (default: the .npuz file's machine, "
                                     f"else {DEFAULT_PRESET})")
    s.add_argument("--dram", help="initial DRAM image (raw bytes from address 0; a .npuz carries its own)")
    s.add_argument("--mode", choices=("full", "timing", "functional"), default="full",
                   help="full: timing and arithmetic; timing: cycles only; functional: arithmetic only")
    s.add_argument("--trace", metavar="OUT.json", help="write a Chrome trace / Perfetto timeline")
    s.add_argument("--budget", type=int, default=1_000_000_000, help="stop past this many cycles (default 1e9)")
    s.add_argument("--memory-budget", type=int, metavar="MiB", default=DEFAULT_MEMORY_BUDGET >> 20,
                   help="refuse a program whose simulation would need more host memory than this "
                        f"(default {DEFAULT_MEMORY_BUDGET >> 20})")
    s.add_argument("--dump", metavar="ADDR:NBYTES", help="save this DRAM range after the run")
    s.add_argument("--dump-to", default="dram_dump.bin", help="file for --dump (default dram_dump.bin)")
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser("compile", help="compile an ONNX model into a program file (.npuz) and report per layer")
    s.add_argument("model", help="ONNX model file (external weight data beside it is read)")
    s.add_argument("--config", default=DEFAULT_PRESET, help=f"preset name or JSON file (default {DEFAULT_PRESET})")
    s.add_argument("--precision", help="ms-fp8, ms-fp9, msfp12, mxint8, mxfp8, mxfp6, mxfp4 or wide "
                                       "(default: the config's formats), a JSON file of per-layer formats "
                                       '{"default": "ms-fp9", "layers": {"conv1": "mxint8"}}, or auto: the '
                                       "cheapest format per layer that keeps --target-cosine on --calibration")
    s.add_argument("--target-cosine", type=float, default=0.99, help="with --precision auto: the least cosine "
                   "of the output to onnxruntime's on every calibration image (default 0.99)")
    s.add_argument("--candidates", default=",".join(AUTO_CANDIDATES), help="with --precision auto: precisions or "
                   f"block formats a layer may take (default {','.join(AUTO_CANDIDATES)})")
    s.add_argument("-o", "--output", help="program file to write (default: MODEL with .npuz)")
    s.add_argument("--weight-rounding", choices=("nearest", "mse", "gptq"), default="nearest",
                   help="how weights are rounded to their block format: nearest (the machine's rule), mse (per "
                        "block, the scale of least squared error) or gptq (error feedback on calibration data; "
                        "needs --calibration)")
    s.add_argument("--bias-correction", action="store_true", help="shift each bias by the mean error the rounded "
                   "weights cause on the calibration data (needs --calibration)")
    s.add_argument("--calibration", metavar="DIR", help="directory of images for --precision auto, gptq and bias "
                   "correction, preprocessed with the program's recipe")
    s.add_argument("--no-host-fallback", action="store_true", help="refuse a model with operators the NPU does "
                   "not run, instead of running them on the host (onnxruntime) between NPU segments")
    s.set_defaults(func=_cmd_compile)

    s = sub.add_parser("verify", help="compile a model and compare every layer with onnxruntime; exit 1 if one "
                                      "departs")
    s.add_argument("model", help="ONNX model file")
    s.add_argument("--config", default=DEFAULT_PRESET, help=f"preset name or JSON file (default {DEFAULT_PRESET})")
    s.add_argument("--precision", default="wide", help="precision to check (default wide: every layer must match "
                                                        "onnxruntime closely), or a JSON file of per-layer formats "
                                                        "as for npu compile")
    s.add_argument("--image", nargs="+", metavar="FILE", help="images to run, preprocessed with the program's "
                   "recipe (default: scikit-image's chelsea and coffee photographs)")
    s.add_argument("--no-host-fallback", action="store_true", help="refuse a model with operators the NPU does "
                   "not run (by default they run on the host and each NPU segment is checked)")
    s.set_defaults(func=_cmd_verify)

    s = sub.add_parser("serve", help="serve a program or a model repository over KServe v2 (HTTP and gRPC) on "
                                     "simulator workers",
                       description="Serve a compiled program, or every program and pipeline of a model repository "
                                   "directory (REPO/NAME/VERSION/<file>.npuz|.npup; the highest VERSION is the "
                                   "default; load and unload with Triton's repository extension), over KServe v2 "
                                   "HTTP and gRPC. Listens on 127.0.0.1 only unless --host says otherwise; "
                                   "docs/architecture.md 'Limits and safe serving' lists every limit.")
    s.add_argument("program", help="compiled program (.npuz) or pipeline (.npup), or a model repository directory")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                   "0.0.0.0 or :: for every interface, then use --token-file and TLS)")
    s.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    s.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    s.add_argument("--token-file", metavar="FILE", help="require 'Authorization: Bearer <token>' (HTTP) / "
                   "'authorization' metadata (gRPC) with the token in FILE (default: $NPU_SERVE_TOKEN if set, "
                   "else no authentication); health probes stay open")
    s.add_argument("--tls-cert", metavar="PEM", help="TLS certificate chain file (HTTPS and gRPC over TLS)")
    s.add_argument("--tls-key", metavar="PEM", help="TLS private key file for --tls-cert")
    s.add_argument("--workers", type=int, default=2, help="simulator worker processes (default 2)")
    s.add_argument("--queue", type=int, default=64, help="requests admitted and waiting; more get 503 / "
                   "RESOURCE_EXHAUSTED (default 64)")
    s.add_argument("--timeout", type=float, default=60.0, help="per-request deadline in seconds; a request's own "
                   "'timeout' parameter can only shorten it (default 60)")
    s.add_argument("--max-body", type=float, metavar="MiB", help="largest HTTP body / gRPC message (default 64)")
    s.add_argument("--max-json", type=float, metavar="MiB", help="largest JSON part of an HTTP request (default: "
                   "8, or 32 bytes per input element if more)")
    s.add_argument("--body-memory", type=float, metavar="MiB", help="HTTP request bodies held in memory at once; "
                   "more get 503 (default 256)")
    s.add_argument("--read-timeout", type=float, metavar="S", help="close a connection that sends nothing for this "
                   "long (default 10)")
    s.add_argument("--body-timeout", type=float, metavar="S", help="a request body must arrive within this time, "
                   "else 408 (default 60)")
    s.add_argument("--keep-alive", type=float, metavar="S", help="close idle connections after this long; request "
                   "headers must arrive within it (default 5)")
    s.add_argument("--backlog", type=int, help="listen backlog of the HTTP socket (default 1024)")
    s.add_argument("--grpc-calls", type=int, help="gRPC calls in progress at once; more get RESOURCE_EXHAUSTED "
                   "(default: queue + workers + 4)")
    s.add_argument("--worker-memory", type=float, metavar="MiB", help="programs each simulator worker keeps "
                   "loaded, by their estimated size; the least recently used are evicted (default 2048)")
    s.add_argument("--name", help="model name (default: the program file's stem)")
    s.set_defaults(func=_cmd_serve)

    s = sub.add_parser("sweep", help="design-space sweep: machine configurations x models, compiled and timed on "
                                     "Dask; results as Parquet and a Pareto chart")
    s.add_argument("spec", help="YAML or JSON spec: base, models, precision, grid or random (docs/architecture.md)")
    s.add_argument("--out", required=True, help="results (.parquet); the chart is written beside it as .png")
    s.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    s.add_argument("--workers", type=int, default=2, help="local Dask workers (default 2)")
    s.set_defaults(func=_cmd_sweep)

    from .landcover_cli import add_parser as add_landcover

    add_landcover(sub)

    s = sub.add_parser("batch", help="score every chip of aerial rasters with a featurizer program (and a head) on "
                                     "a Dask cluster; Parquet parts, resumable")
    s.add_argument("program", help="featurizer program (.npuz, plain or segmented) of 3-channel images")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="rasters (GeoTIFF, PNG, JPEG, ...) cut into chips")
    s.add_argument("--out", required=True, metavar="DIR", help="output directory: job.json, manifest.json, "
                   "parts/*.parquet; run again with the same arguments to finish an interrupted job")
    s.add_argument("--head", metavar="HEAD.npz", help="classifier head (arrays weight, bias, labels); without it "
                   "the program's output vectors are written")
    s.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler (tcp://host:port); default: a local "
                   "cluster of --workers processes (the workers need the files on a shared filesystem)")
    s.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    s.add_argument("--chunk-size", type=int, default=32, help="chips per task (default 32)")
    s.add_argument("--chip", type=int, default=224, help="chip side in pixels (default 224)")
    s.add_argument("--stride", type=int, help="pixels between chips (default: the chip side)")
    s.add_argument("--edge", choices=("pad", "drop", "shift"), default="pad", help="partial chips at the right and "
                   "bottom edges: pad with zeros (default), drop them, or shift them inward")
    s.add_argument("--features", action="store_true", help="also write the program's output vector of each chip")
    s.set_defaults(func=_cmd_batch)

    s = sub.add_parser("pipeline", help="pipeline files (.npup): a program, a host head, labels and a version in "
                                        "one checksummed file that runtime.Session scores")
    pipe_sub = s.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    s = pipe_sub.add_parser("create", help="bundle a program file and an optional head into a pipeline file")
    s.add_argument("--program", required=True, help="compiled program (.npuz, plain or segmented)")
    s.add_argument("--head", metavar="HEAD.npz|HEAD.onnx", help="host head: arrays written by save_head (.npz), "
                   "or an ONNX model (default-domain operators, weights inside the file); its feature count must "
                   "be the program's output size")
    s.add_argument("--labels", metavar="FILE", help="class names, one a line (default: the head's, or without a "
                   "head the program's)")
    s.add_argument("--version", default="", help="the pipeline's version string")
    s.add_argument("--name", help="the pipeline's name (default: the output file's stem)")
    s.add_argument("--preprocess", metavar="JSON", help="preprocessing recipe overriding the program's "
                   "(npu.preprocess.Preprocess fields)")
    s.add_argument("-o", "--output", required=True, help="pipeline file to write (.npup)")
    s.set_defaults(func=_cmd_pipeline_create)
    s = pipe_sub.add_parser("show", help="print what a pipeline file holds (after every check)")
    s.add_argument("file", help="pipeline file (.npup)")
    s.set_defaults(func=_cmd_pipeline_show)

    s = sub.add_parser("presets", help="list machine presets, or print one as JSON")
    s.add_argument("--show", metavar="NAME", help="print this preset (or JSON file) as JSON")
    s.set_defaults(func=_cmd_presets)

    s = sub.add_parser("synth", help="synthesise the RTL core with Yosys (Arria 10 fabric): ALUTs, registers, DSP "
                                     "blocks, memory bits, latches, loops; exit 1 if it has latches or loops")
    s.add_argument("--config", default="tiny", help="machine preset or JSON file (default tiny)")
    s.add_argument("--stage", choices=("full", "coarse"), default="full",
                   help="full: mapped to ALUTs, registers and DSP blocks (about ten minutes for tiny); coarse: "
                        "checks, multipliers, register bits and memories, no LUT mapping (a few minutes)")
    s.add_argument("--reuse", action="store_true", help="read back the last run in build/synth when it ran the same "
                                                         "script on the same sources, instead of running Yosys again")
    s.add_argument("--json", action="store_true", help="print the full report as JSON")
    s.set_defaults(func=_cmd_synth)

    s = sub.add_parser("formats", help="list the numeric formats")
    s.add_argument("--config", default=DEFAULT_PRESET, help="machine whose native vector sizes blocks")
    s.set_defaults(func=_cmd_formats)

    s = sub.add_parser("asm", help="assemble a text program into binary instruction words")
    s.add_argument("source", help="assembly text file")
    s.add_argument("-o", "--output", help="output binary (default: SOURCE with .bin)")
    s.add_argument("--config", default=DEFAULT_PRESET, help="machine to check addresses against")
    s.set_defaults(func=_cmd_asm)

    s = sub.add_parser("disasm", help="disassemble binary instruction words into text")
    s.add_argument("binary", help="binary program (16-byte little-endian words)")
    s.add_argument("-o", "--output", help="write the text here instead of standard output")
    s.add_argument("--index", action="store_true", help="prefix each line with its instruction index")
    s.set_defaults(func=_cmd_disasm)
    return p


def _runtime_errors():
    """The runtime's user-facing error types of batch and land-cover work (imagery, heads, batch jobs)."""
    from runtime.batch import BatchError
    from runtime.heads import HeadFileError
    from runtime.imagery import ImageryError

    from .landcover_cli import LandcoverError

    return BatchError, HeadFileError, ImageryError, LandcoverError


def _compiler_errors():
    """The compiler's user-facing error types (bad model files, unsupported models, models that do not fit)."""
    from compiler.errors import USER_ERRORS

    return USER_ERRORS


def main(argv: list[str] | None = None) -> int:
    """Run the ``npu`` command; returns the exit status."""
    from npu.isa.errors import IsaError
    from npu.numerics.formats import FormatError
    from npu.npuz import ProgramFileError
    from npu.sim.errors import SimulationError

    args = build_parser().parse_args(argv)
    user_errors = (CliError, ConfigError, IsaError, FormatError, SimulationError, ProgramFileError,
                   *_compiler_errors(), *_runtime_errors())
    try:
        return args.func(args)
    except user_errors as exc:
        print(f"npu {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"npu {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
