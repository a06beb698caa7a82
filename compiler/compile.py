"""``compile_model``: ONNX model -> versioned NPU program file, with a per-layer report.

The pipeline is :data:`STEPS`, a named list of small steps over one
:class:`Compilation`; each step's time is recorded in ``timings``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

from npu.config import NPUConfig
from npu.isa.encoding import encode_program
from npu.npuz import ProgramFile, ProgramMetadata
from npu.preprocess import MAX_SIDE, Preprocess

from .errors import CompileError
from .frontend import import_onnx
from .ir import Graph
from .lower.codegen import Codegen, ConstPool, Generated, LayerInfo
from .lower.plan import Plan, build_plan, check_counts, check_dram, place
from .passes import run_machine_passes
from .precision import (PRECISIONS, apply_layer_formats, config_for_layer_formats, layer_format_pair,  # noqa: F401
                        read_precision_file, resolve_config)

@dataclass
class CompiledModel:
    """A compiled program with the IR it came from and what the compiler measured."""

    program: ProgramFile
    graph: Graph
    plan: Plan
    layers: list[LayerInfo]
    timings: dict = field(default_factory=dict)

    @property
    def config(self) -> NPUConfig:
        """The machine the program was built for."""
        return self.program.config

    def save(self, path) -> None:
        """Write the ``.npuz`` program file."""
        self.program.save(path)


@dataclass
class Compilation:
    """What the steps of :data:`STEPS` read and write, in the order they fill it."""

    model: object                     # path or onnx.ModelProto
    config: NPUConfig
    cut_at: str | None = None
    preprocess: dict | None = None
    labels: list[str] | None = None
    progress: Callable | None = None
    layer_formats: dict | None = None
    weight_rounding: str = "nearest"          # compiler.weight_rounding.METHODS
    bias_correction: bool = False
    calibration: list | None = None           # model inputs for gptq / bias correction
    image_input: bool = True                  # False: a segment fed by another segment (no image recipe)
    timings: dict = field(default_factory=dict)
    graph: Graph | None = None
    plan: Plan | None = None
    consts: ConstPool | None = None
    generated: Generated | None = None
    program: ProgramFile | None = None


def _model_prop(graph: Graph, key: str):
    """A JSON value the model file carries in its ``metadata_props`` (None if absent)."""
    text = graph.metadata.get("model_props", {}).get(key)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise CompileError(f"{graph.name}: the model's metadata_props[{key!r}] is not JSON") from None


def preprocess_recipe(graph: Graph, given: dict | None = None) -> Preprocess:
    """The image recipe stored in the program: the default sized to the model's input, then the model file's
    own (``metadata_props['preprocess']``), then ``given``."""
    t = graph.inputs[0]
    shape = graph.metadata.get("original_shapes", {}).get(t, graph.shapes[t])
    side = int(shape[1] if graph.metadata.get("io_order", {}).get(t) == "hwc" else shape[-1])
    if side > MAX_SIDE:
        raise CompileError(f"{graph.name}: input {t!r} is {side} pixels wide; the program's image recipe takes "
                           f"at most {MAX_SIDE} (npu.preprocess.MAX_SIDE)")
    recipe = Preprocess.for_input(side, resize=min(int(round(side * 256 / 224)), MAX_SIDE))
    for where, extra in (("the model's metadata_props['preprocess']", _model_prop(graph, "preprocess")),
                         ("the preprocess option", given)):
        if extra is None:
            continue
        if not isinstance(extra, dict):
            raise CompileError(f"{graph.name}: {where} is not a JSON object")
        try:
            recipe = recipe.replace(**extra)
        except (TypeError, ValueError) as exc:
            raise CompileError(f"{graph.name}: {where}: {exc}") from None
    return recipe


def detection_config(graph: Graph, outputs: list[str]):
    """The model's SSD detection settings (``metadata_props['detection']``), checked against its outputs, or None."""
    from npu.detection import SSDConfig

    data = _model_prop(graph, "detection")
    if data is None:
        return None
    try:
        cfg = SSDConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise CompileError(f"{graph.name}: the model's metadata_props['detection']: {exc}") from None
    missing = [t for t in cfg.output_names if t not in outputs]
    if missing:
        raise CompileError(f"{graph.name}: the detection settings name head outputs {', '.join(missing)}, which the "
                           f"model does not have (its outputs: {', '.join(outputs)})")
    return cfg


def step_import(c: Compilation) -> None:
    """Read the ONNX model and run the graph passes through the legality check."""
    c.graph = import_onnx(c.model, c.timings, outputs=[c.cut_at] if c.cut_at else None)


def _stage_progress(progress: Callable | None, stage: str) -> Callable | None:
    """``progress(done, total)``, passing ``stage=`` too when ``progress`` takes it."""
    if progress is None:
        return None
    import inspect

    try:
        params = inspect.signature(progress).parameters
    except (TypeError, ValueError):
        params = {}
    if "stage" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return lambda done, total: progress(done, total, stage=stage)
    return progress


def step_machine_passes(c: Compilation) -> None:
    """Rewrite the checked graph for the machine (input packing, separable max pooling, weight rounding)."""
    apply_layer_formats(c.graph, c.config, c.layer_formats)     # before the passes: weight rounding reads them
    c.graph.metadata["weight_rounding"] = {
        "method": c.weight_rounding, "bias_correction": c.bias_correction, "calibration": c.calibration,
        "progress": _stage_progress(c.progress, "rounding weights")}
    c.graph = run_machine_passes(c.graph, c.config, c.timings)


def step_plan(c: Compilation) -> None:
    """Give every tensor a storage and every storage an address (spilling to DRAM when it must)."""
    cfg = c.config
    c.plan = build_plan(c.graph, cfg)
    check_counts(c.plan)
    c.consts = ConstPool.for_plan(c.plan)
    big_inputs = {c.plan.views[t][0] for t in c.graph.inputs
                  if c.plan.storage_of(t).size(cfg.native_dim) > cfg.vrf_depth // 4}
    place(c.plan, cfg, reserved=c.consts.size, input_in_dram=big_inputs)
    check_dram(c.plan, cfg, c.consts.size)


def step_codegen(c: Compilation) -> None:
    """Emit the instruction streams, the DRAM image and the tensor descriptions."""
    c.generated = Codegen(c.graph, c.plan, c.config, c.consts, c.progress).generate()
    if len(c.generated.dram) > c.config.dram_bytes:
        raise CompileError(f"the program needs {len(c.generated.dram):,} bytes of DRAM; {c.config.name} has "
                           f"{c.config.dram_bytes:,}")


def step_program(c: Compilation) -> None:
    """Assemble the program file: machine code, DRAM image, tensors, regions and metadata."""
    cfg, gen, graph = c.config, c.generated, c.graph
    labels = c.labels if c.labels is not None else _model_prop(graph, "labels")
    if labels is not None and not isinstance(labels, list):
        raise CompileError(f"{graph.name}: labels must be a list of class names")
    metadata = ProgramMetadata(
        model=graph.name,
        precision={"weight": cfg.weight_format, "activation": cfg.activation_format, "mfu": cfg.mfu_format},
        postprocess=dict(graph.metadata.get("postprocess", {})),
        layers=[vars(layer) for layer in gen.layers], weight_tiles=gen.weight_tiles,
        layer_formats={layer.name: {"weight": layer.weight_format, "activation": layer.activation_format}
                       for layer in gen.layers if layer.weight_format},
        preprocess=preprocess_recipe(graph, c.preprocess) if c.image_input else None,
        labels=[str(x) for x in labels] if labels is not None else None,
        weight_rounding=_rounding_summary(graph),
        detection=detection_config(graph, [d.name for d in gen.outputs]) if c.image_input else None)
    c.program = ProgramFile(cfg, encode_program(gen.instructions), gen.dram, gen.inputs, gen.outputs, gen.regions,
                            metadata, encode_program(gen.warm_instructions) if gen.warm_instructions else b"",
                            gen.warm_regions)


def _rounding_summary(graph: Graph) -> dict:
    """What the weight-rounding pass did, for the program's metadata (``ProgramMetadata.weight_rounding``)."""
    done = graph.metadata.get("weight_rounding") or {}
    return {"method": str(done.get("method", "nearest")), "bias_correction": bool(done.get("bias_correction")),
            "calibration_inputs": int(done.get("calibration_inputs", 0)),
            "repaired_blocks": int(done.get("repaired_blocks", 0))}


Step = Callable[[Compilation], None]

#: The compile pipeline: (name, step) in the order they run.
STEPS: tuple[tuple[str, Step], ...] = (
    ("import", step_import),
    ("machine passes", step_machine_passes),
    ("placement", step_plan),
    ("code generation", step_codegen),
    ("program file", step_program),
)


def compile_model(model, config="bw-s10", precision: str | None = None, *, progress=None, cut_at: str | None = None,
                  preprocess: dict | None = None, labels: list[str] | None = None,
                  layer_formats: dict[str, str] | None = None, weight_rounding: str = "nearest",
                  bias_correction: bool = False, calibration: list | None = None,
                  image_input: bool = True) -> CompiledModel:
    """Compile an ONNX model (path or ModelProto) for ``config`` at ``precision``.

    ``cut_at`` names a tensor that becomes the only output (a headless
    featurizer); ``preprocess`` (keys of ``npu.preprocess.Preprocess``) and
    ``labels`` are stored in the program for the runtime.  ``layer_formats``
    maps a layer (node) name of the compiled graph -- a Conv keeps its ONNX
    node's name -- to a precision of :data:`PRECISIONS` or a block-format
    name: that layer multiplies in those formats (mixed precision), the
    machine's ``extra_formats`` extended by the formats it needs.  ``progress(done,
    total)`` is called as layers are generated (and, given a ``stage``
    keyword parameter, with ``stage="rounding weights"`` as layers are
    rounded first).  ``weight_rounding`` ("nearest", "mse" or "gptq") and
    ``bias_correction`` choose how weights are rounded to their block format
    (``compiler.weight_rounding``); ``calibration`` (model input arrays) is
    the data gptq and bias correction need.  ``image_input=False`` stores no
    image recipe (a segment of a host-fallback program fed by another
    segment, ``compiler.partition``).  Raises ModelLoadError for
    unreadable files, UnsupportedModelError listing every unsupported
    construct, and CompileError when the model does not fit the machine.
    """
    cfg = config_for_layer_formats(resolve_config(config, precision), layer_formats)
    from .weight_rounding import METHODS

    if weight_rounding not in METHODS:
        raise CompileError(f"weight rounding {weight_rounding!r} unknown; choose one of {', '.join(METHODS)}")
    if (weight_rounding == "gptq" or bias_correction) and not calibration:
        raise CompileError(f"weight rounding {weight_rounding!r}{' with bias correction' if bias_correction else ''}"
                           f" needs calibration inputs (calibration=[model input arrays])")
    c = Compilation(model, cfg, cut_at, preprocess, labels, progress, layer_formats=dict(layer_formats or {}),
                    weight_rounding=weight_rounding, bias_correction=bool(bias_correction),
                    calibration=list(calibration) if calibration is not None else None, image_input=image_input)
    for name, step in STEPS:
        t0 = time.perf_counter()
        step(c)
        c.timings[name] = time.perf_counter() - t0
    return CompiledModel(c.program, c.graph, c.plan, c.generated.layers, c.timings)
