"""Host fallback: a model whose operators do not all run on the NPU becomes NPU segments and host segments.

The model is read and its constants folded; every operator the legality
check refuses goes to the host, with the reason.  The remaining operators
are ordered so that each side's run is as long as possible (a topological
order that stays on one side while it can), and cut wherever the side
changes.  Each NPU segment is an ONNX model of its operators, compiled by
the usual pipeline; when that compile refuses an operator (an NPU segment
sees only its own inputs, so a fact such as non-negativity no longer crosses
from the host), the operator moves to the host and the split is made again.
Each host segment is an ONNX model of the model's own operators, which the
runtime runs with onnxruntime.  The result is a ``npu.segments``
program file.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from npu.config import NPUConfig
from npu.npuz import ProgramMetadata
from npu.segments import Segment, SegmentedProgram, TensorSpec

from .compile import (CompiledModel, _model_prop, compile_model, detection_config, preprocess_recipe,
                      resolve_config)
from .errors import CompileError, Problem, UnsupportedModelError
from .frontend.loader import _read, load_onnx, node_names
from .ir import Graph
from .passes._util import NON_NEGATIVE_INPUTS, non_negative
from .passes.fold_constants import fold_constants


@dataclass
class SegmentedModel:
    """A model compiled with host fallback: the segmented program and each NPU segment's compilation."""

    program: SegmentedProgram
    compiled: dict[str, CompiledModel]          # NPU segment name -> its compilation
    models: dict[str, onnx.ModelProto]          # segment name -> the ONNX model of its operators
    timings: dict = field(default_factory=dict)

    @property
    def config(self) -> NPUConfig:
        """The machine the NPU segments were built for."""
        return self.program.config

    @property
    def host_ops(self) -> list[dict]:
        """Every operator that runs on the host: ``{"node", "op", "reason"}``."""
        return self.program.host_ops

    def save(self, path) -> None:
        """Write the segmented program file."""
        self.program.save(path)


def compile_with_host_fallback(model, config="bw-s10", precision: str | None = None, *, progress=None,
                               cut_at: str | None = None, preprocess: dict | None = None,
                               labels: list[str] | None = None, layer_formats: dict[str, str] | None = None,
                               weight_rounding: str = "nearest", bias_correction: bool = False,
                               calibration: list | None = None) -> "CompiledModel | SegmentedModel":
    """Compile ``model`` for the NPU, running on the host whatever the NPU cannot.

    Returns the plain ``CompiledModel`` when every operator runs on the NPU
    (exactly what ``compile_model`` gives), else a :class:`SegmentedModel`.
    Takes ``compile_model``'s arguments; ``calibration`` (model inputs) is
    carried to each single-input NPU segment as onnxruntime's values of its
    input.  Errors that are not about operators (the model does not fit the
    machine, a file that cannot be read) are raised as ``compile_model``
    raises them.
    """
    options = dict(preprocess=preprocess, labels=labels, layer_formats=layer_formats,
                   weight_rounding=weight_rounding, bias_correction=bias_correction, calibration=calibration)
    try:
        return compile_model(model, config, precision, progress=progress, cut_at=cut_at, **options)
    except UnsupportedModelError as exc:
        first = exc
    t0 = time.perf_counter()
    proto, where = _read(model)
    graph = fold_constants(load_onnx(proto))
    if cut_at:
        graph.outputs = [cut_at]
    runtime = _runtime_nodes(graph)
    host: dict[str, Problem] = {}
    _move_to_host(first.problems, graph, runtime, host, first)
    originals = dict(zip(node_names(proto.graph), proto.graph.node))
    cfg = resolve_config(config, precision)
    cache: dict[frozenset, CompiledModel] = {}
    while True:
        plan = split(graph, runtime, set(host))
        if _absorb_light_segments(graph, plan, host):
            continue
        models = {name: segment_model(proto, graph, originals, nodes, ins, outs, name)
                  for name, _kind, nodes, ins, outs in plan}
        try:
            compiled = _compile_npu_segments(plan, models, cache, config, precision, options, proto, progress,
                                             graph.inputs)
            break
        except _SegmentRefused as refused:
            before = len(host)
            _move_to_host(refused.error.problems, graph, runtime, host, refused.error, refused.nodes,
                          refused.inputs)
            if len(host) == before:
                raise refused.error from None
    if not compiled:
        raise CompileError(f"{where}: with host fallback every operator would run on the host, nothing on the NPU; "
                           f"what the NPU refused first:\n{first}")
    program = _program(proto, graph, cfg, plan, models, compiled, host, preprocess, labels)
    timings = {"host fallback": time.perf_counter() - t0}
    return SegmentedModel(program, compiled, models, timings)


class _SegmentRefused(Exception):
    def __init__(self, error: UnsupportedModelError, nodes: list[str], inputs: list[str]):
        self.error, self.nodes, self.inputs = error, nodes, inputs


def _runtime_nodes(graph: Graph) -> list[str]:
    """The operators left after constant folding (those that compute on the model's input), in order."""
    return [n.name for n in graph.topological()]


def _move_to_host(problems: list[Problem], graph: Graph, runtime: list[str], host: dict[str, Problem],
                  error: UnsupportedModelError, within: list[str] | None = None,
                  segment_inputs: list[str] | None = None) -> None:
    """Put the nodes ``problems`` name on the host; raise ``error`` if a problem names no operator.

    A problem about an input of an NPU segment (it is not C x H x W) moves
    the segment's readers of that input.
    """
    names = set(runtime)
    scope = set(within) if within is not None else names
    for p in problems:
        if p.node in names and p.node in scope:
            host.setdefault(p.node, p)
            continue
        readers = [n for n in runtime if n in scope and p.node in graph.node(n).inputs]
        if p.op_type == "input" and (segment_inputs is None or p.node in segment_inputs) and readers:
            for n in readers:
                host.setdefault(n, Problem(n, graph.node(n).op_type, f"reads {p.node!r}, which crosses from "
                                           f"the host as {p.message.split(' is ')[0]}: {p.message}"))
            continue
        raise error from None


def split(graph: Graph, runtime: list[str], host: set[str]) -> list[tuple[str, str, list[str], list[str], list[str]]]:
    """``(name, kind, nodes, inputs, outputs)`` per segment, in the order they run.

    The order is topological and stays on one side (NPU or host) while any
    node of that side is ready, so segments are few and long.
    """
    dag = graph.dag.subgraph(runtime)
    rank = {n: i for i, n in enumerate(runtime)}
    kind = {n: ("host" if n in host else "npu") for n in runtime}
    waiting = {n: dag.in_degree(n) for n in runtime}
    ready = {"npu": [], "host": []}
    for n in runtime:
        if waiting[n] == 0:
            ready[kind[n]].append(n)
    groups: list[tuple[str, list[str]]] = []
    side = kind[min((n for r in ready.values() for n in r), key=rank.get)] if runtime else "npu"
    while ready["npu"] or ready["host"]:
        if not ready[side]:
            side = "host" if side == "npu" else "npu"
        run = []
        while ready[side]:
            ready[side].sort(key=rank.get)
            n = ready[side].pop(0)
            run.append(n)
            for m in dag.successors(n):
                waiting[m] -= 1
                if waiting[m] == 0:
                    ready[kind[m]].append(m)
        groups.append((side, run))
        side = "host" if side == "npu" else "npu"
    writer = {t: k for k, (_, run) in enumerate(groups) for n in run for t in graph.node(n).outputs}
    plan = []
    for k, (side, run) in enumerate(groups):
        inside = set(run)
        inputs, outputs = [], []
        for n in run:
            for t in graph.node(n).inputs:
                if t and not graph.is_constant(t) and writer.get(t) != k and t not in inputs:
                    inputs.append(t)
        later = {t for j, (_, other) in enumerate(groups) if j > k for n in other for t in graph.node(n).inputs}
        for n in run:
            for t in graph.node(n).outputs:
                if t and (t in later or t in graph.outputs) and t not in outputs:
                    outputs.append(t)
        assert inside
        plan.append((f"segment{k}", side, run, inputs, outputs))
    return plan


#: Operators that give an NPU segment matrix work (the MVU's job).
MATRIX_OPS = ("Conv", "Gemm", "MatMul")


def _absorb_light_segments(graph: Graph, plan, host: dict[str, Problem]) -> bool:
    """Put on the host each NPU segment with no matrix work that reads only what host segments wrote.

    Such a segment (an Add of a constant between two host operators, a
    Flatten after one) costs two crossings for work the host does as fast.
    Returns whether any moved.
    """
    written_by_host = {t for _, kind, _, _, outs in plan if kind == "host" for t in outs}
    moved = False
    for _, kind, nodes, ins, _ in plan:
        if kind != "npu" or any(graph.node(n).op_type in MATRIX_OPS for n in nodes):
            continue
        if ins and all(t in written_by_host for t in ins):
            for n in nodes:
                host[n] = Problem(n, graph.node(n).op_type, "kept on the host between host operators: it has no "
                                  "matrix work, and on the NPU its data would cross over and back")
            moved = True
    return moved


def _value_info(graph: Graph, t: str) -> onnx.ValueInfoProto:
    elem = graph.metadata.get("elem_types", {}).get(t, onnx.TensorProto.FLOAT)
    return helper.make_tensor_value_info(t, elem, list(graph.shapes[t]) if t in graph.shapes else None)


def segment_model(proto: onnx.ModelProto, graph: Graph, originals: dict, nodes: list[str], inputs: list[str],
                  outputs: list[str], name: str) -> onnx.ModelProto:
    """An ONNX model of the model's own operators ``nodes``, reading ``inputs`` and writing ``outputs``.

    Constant inputs (the model's initializers and what constant folding
    computed) become initializers.
    """
    node_protos, consts = [], []
    for n in nodes:
        p = onnx.NodeProto()
        p.CopyFrom(originals[n])
        p.name = n
        node_protos.append(p)
        for t in p.input:
            if t and graph.is_constant(t) and t not in consts:
                consts.append(t)
    initializers = [numpy_helper.from_array(np.asarray(graph.constants[t]), t) for t in consts]
    inner = [t for n in nodes for t in graph.node(n).outputs if t and t not in outputs and t in graph.shapes]
    g = helper.make_graph(node_protos, f"{graph.name}.{name}", [_value_info(graph, t) for t in inputs],
                          [_value_info(graph, t) for t in outputs], initializers,
                          value_info=[_value_info(graph, t) for t in inner])
    model = helper.make_model(g, opset_imports=list(proto.opset_import), ir_version=max(proto.ir_version, 4),
                              producer_name="npu-toolkit host fallback")
    known = [t for t in inputs if non_negative(graph, t)]
    if known:
        helper.set_model_props(model, {NON_NEGATIVE_INPUTS: json.dumps(known)})
    return model


def _compile_npu_segments(plan, models, cache, config, precision, options, proto, progress,
                          model_inputs: list[str]) -> dict:
    """Each NPU segment compiled (from ``cache`` when its operators are unchanged); _SegmentRefused on refusal."""
    compiled = {}
    calibration = options.get("calibration")
    for name, kind, nodes, ins, outs in plan:
        if kind != "npu":
            continue
        key = frozenset(nodes) | {("in",) + tuple(ins), ("out",) + tuple(outs)}
        if key in cache:
            compiled[name] = cache[key]
            continue
        first = name == plan[0][0] and ins == model_inputs
        opts = dict(options)
        opts["layer_formats"] = {k: v for k, v in (options.get("layer_formats") or {}).items() if k in nodes}
        if calibration and not first:
            opts["calibration"] = _segment_calibration(proto, calibration, ins, name)
        try:
            cm = compile_model(models[name], config, precision, progress=progress, image_input=first,
                               **{k: v for k, v in opts.items() if k not in ("preprocess", "labels")})
        except UnsupportedModelError as exc:
            raise _SegmentRefused(exc, nodes, ins) from None
        cache[key] = compiled[name] = cm
    return compiled


def _segment_calibration(proto: onnx.ModelProto, calibration: list, inputs: list[str], name: str) -> list:
    """onnxruntime's values of a segment's one input for each calibration input of the model."""
    if len(inputs) != 1:
        raise CompileError(f"{name}: calibration (gptq, bias correction) needs NPU segments with one input; this "
                           f"one reads {', '.join(inputs)}")
    from .verify import ort_with_outputs

    session = ort_with_outputs(proto, inputs)
    feed = session.get_inputs()[0].name
    index = [o.name for o in session.get_outputs()].index(inputs[0])
    return [session.run(None, {feed: np.asarray(x, np.float32)})[index] for x in calibration]


def _program(proto, graph: Graph, cfg: NPUConfig, plan, models, compiled, host: dict[str, Problem], preprocess,
             labels) -> SegmentedProgram:
    """The segmented program file's content."""
    rank = {n: i for i, n in enumerate(_runtime_nodes(graph))}
    segments, tensors = [], {}
    for name, kind, nodes, ins, outs in plan:
        for t in ins + outs:
            tensors[t] = tuple(int(d) for d in graph.shapes[t])
        ops = [f"{graph.node(n).op_type} {n}" for n in nodes]
        if kind == "npu":
            segments.append(Segment("npu", name, ins, outs, program=compiled[name].program, nodes=ops))
        else:
            segments.append(Segment("host", name, ins, outs, onnx=models[name].SerializeToString(), nodes=ops))
    order = {}
    for s in segments:
        for d in (s.program.inputs if s.kind == "npu" else []):
            order.setdefault(d.name, d.params.order)
    inputs = [TensorSpec(t, tuple(int(d) for d in graph.shapes[t]), "hwc" if order.get(t) == "hwc" else "chw")
              for t in graph.inputs]
    outputs = [TensorSpec(t, tensors[t]) for t in graph.outputs]
    for t in graph.inputs:
        tensors[t] = tuple(int(d) for d in graph.shapes[t])
    if labels is None:
        labels = _model_prop(graph, "labels")
    layers = [layer for s in segments if s.kind == "npu" for layer in s.program.metadata.layers]
    metadata = ProgramMetadata(
        model=graph.name,
        precision={"weight": cfg.weight_format, "activation": cfg.activation_format, "mfu": cfg.mfu_format},
        layers=layers, preprocess=_recipe(graph, preprocess),
        labels=[str(x) for x in labels] if labels is not None else None,
        detection=detection_config(graph, [t.name for t in outputs]))
    host_ops = [{"node": n, "op": p.op_type, "reason": p.message}
                for n, p in sorted(host.items(), key=lambda kv: rank.get(kv[0], 0))]
    program = SegmentedProgram(cfg, segments, inputs, outputs, tensors, metadata, host_ops)
    return program


def _recipe(graph: Graph, given: dict | None):
    """The image recipe for the model's input (None if the input is not an image)."""
    shape = graph.shapes[graph.inputs[0]]
    if len(shape) != 4:
        return None
    lifted = Graph(graph.name)
    lifted.inputs = list(graph.inputs)
    lifted.shapes = {graph.inputs[0]: tuple(shape[1:])}
    lifted.metadata = {"model_props": graph.metadata.get("model_props", {})}
    return preprocess_recipe(lifted, given)

