"""``compile_model``: ONNX model -> versioned NPU program file, with a per-layer report."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from npu.config import NPUConfig, load_config
from npu.npuz import ProgramFile
from npu.isa.encoding import encode_program

from .frontend import import_onnx
from .ir import Graph
from .lower.codegen import Codegen, ConstPool, Generated, LayerInfo
from .lower.pack_input import pack_first_conv
from .lower.split_pool import split_max_pools
from .lower.plan import CompileError, Plan, build_plan, place

#: Named precisions: (weight format, activation format, MFU format).
PRECISIONS: dict[str, tuple[str, str, str]] = {
    "ms-fp8": ("ms-fp8", "ms-fp8", "fp16"),
    "ms-fp9": ("ms-fp9", "ms-fp9", "fp16"),
    "msfp12": ("msfp12", "msfp12", "fp16"),
    "mxint8": ("mxint8", "mxint8", "fp16"),
    "mxfp8": ("mxfp8_e4m3", "mxfp8_e4m3", "fp16"),
    "mxfp6": ("mxfp6_e2m3", "mxfp6_e2m3", "fp16"),
    "mxfp4": ("mxfp4_e2m1", "mxfp4_e2m1", "fp16"),
    "wide": ("bfp24", "bfp24", "fp32"),
}


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


def resolve_config(config, precision: str | None) -> NPUConfig:
    """A config (preset name, JSON path or NPUConfig) with ``precision`` applied."""
    cfg = config if isinstance(config, NPUConfig) else load_config(config)
    if precision is None:
        return cfg
    if precision not in PRECISIONS:
        raise CompileError(f"precision {precision!r} unknown; choose one of {', '.join(PRECISIONS)}")
    w, a, m = PRECISIONS[precision]
    return cfg.replace(weight_format=w, activation_format=a, mfu_format=m)


#: The brief's recipe scaled for the reference networks, which expect unit-scale inputs (as DenseNet's 0.017).
DEFAULT_SCALE = 0.017


def _model_prop(graph: Graph, key: str):
    """A JSON value the model file carries in its ``metadata_props`` (None if absent or not JSON)."""
    text = graph.metadata.get("model_props", {}).get(key)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise CompileError(f"{graph.name}: the model's metadata_props[{key!r}] is not JSON") from None


def _preprocess_recipe(graph: Graph, given: dict | None) -> dict:
    """The image recipe stored in the program: the brief's, sized to the model's input, then the model file's
    own recipe (``metadata_props['preprocess']``), then ``given``."""
    t = graph.inputs[0]
    shape = graph.metadata.get("original_shapes", {}).get(t, graph.shapes[t])
    crop = int(shape[1] if graph.metadata.get("io_order", {}).get(t) == "hwc" else shape[-1])
    recipe = {"crop": crop, "resize": int(round(crop * 256 / 224)), "mean": [123.68, 116.779, 103.939],
              "scale": DEFAULT_SCALE, "channel_order": "RGB"}
    carried = _model_prop(graph, "preprocess")
    if carried is not None and not isinstance(carried, dict):
        raise CompileError(f"{graph.name}: the model's metadata_props['preprocess'] is not a JSON object")
    recipe.update(carried or {})
    recipe.update(given or {})
    return recipe


def compile_model(model, config="bw-s10", precision: str | None = None, *, progress=None, cut_at: str | None = None,
                  preprocess: dict | None = None, labels: list[str] | None = None) -> CompiledModel:
    """Compile an ONNX model (path or ModelProto) for ``config`` at ``precision``.

    ``cut_at`` names a tensor that becomes the only output (a headless
    featurizer); ``preprocess`` (see ``runtime.Preprocess``) and ``labels``
    are stored in the program for the runtime.  ``progress(done, total)`` is
    called as layers are generated.  Raises
    ModelLoadError for unreadable files, UnsupportedModelError listing every
    unsupported construct, and CompileError when the model does not fit the
    machine.
    """
    cfg = resolve_config(config, precision)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    graph = import_onnx(model, timings, outputs=[cut_at] if cut_at else None)
    graph = pack_first_conv(graph, cfg.native_dim)
    graph = split_max_pools(graph, cfg.mfus)
    t1 = time.perf_counter()
    plan = build_plan(graph, cfg)
    consts = ConstPool.for_plan(plan)
    big_inputs = {plan.views[t][0] for t in graph.inputs
                  if plan.storage_of(t).size(cfg.native_dim) > cfg.vrf_depth // 4}
    place(plan, cfg, reserved=consts.size, input_in_dram=big_inputs)
    t2 = time.perf_counter()
    gen: Generated = Codegen(graph, plan, cfg, consts, progress).generate()
    t3 = time.perf_counter()
    if len(gen.dram) > cfg.dram_bytes:
        raise CompileError(f"the program needs {len(gen.dram):,} bytes of DRAM; {cfg.name} has {cfg.dram_bytes:,}")
    metadata = {
        "model": graph.name, "precision": {"weight": cfg.weight_format, "activation": cfg.activation_format,
                                            "mfu": cfg.mfu_format},
        "postprocess": graph.metadata.get("postprocess", {}),
        "layers": [vars(layer) for layer in gen.layers],
        "weight_tiles": gen.weight_tiles,
        "preprocess": _preprocess_recipe(graph, preprocess),
    }
    labels = labels if labels is not None else _model_prop(graph, "labels")
    if labels is not None:
        if not isinstance(labels, list):
            raise CompileError(f"{graph.name}: labels must be a list of class names")
        metadata["labels"] = [str(x) for x in labels]
    program = ProgramFile(cfg, encode_program(gen.instructions), gen.dram, gen.inputs, gen.outputs, gen.regions,
                          metadata, encode_program(gen.warm_instructions) if gen.warm_instructions else b"",
                          gen.warm_regions)
    timings.update({"front end": t1 - t0, "placement": t2 - t1, "code generation": t3 - t2})
    return CompiledModel(program, graph, plan, gen.layers, timings)
