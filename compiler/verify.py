"""Every layer of a compiled model against onnxruntime: the toolkit's debug executor.

``verify_model`` compiles a model, simulates the program once per input and
reads every tensor the program materialises as soon as the layer that
writes it has finished.  onnxruntime evaluates the same ONNX tensors in one
run (each added as a graph output), and the numpy evaluation of the
numerics contract (``compiler.reference``) gives the error the format is
expected to cause.  A layer *departs* when

* the simulator differs from that evaluation in any bit (a compiler or
  simulator fault, never a format effect);
* the compiled layer, evaluated alone in binary64 without formats on
  onnxruntime's values of its inputs, differs from onnxruntime's output by
  more than :data:`GRAPH_TOLERANCE` of its largest sum of |w x| products
  (a rewrite of the graph changed what the layer computes);
* or, at ``wide`` precision, its cosine against onnxruntime is below
  :data:`WIDE_COSINE` (a fault the contract's evaluation shares).

Each row also shows the layer's *local* error: the contract's evaluation of
the layer alone on onnxruntime's inputs, so the table shows where a
format's error enters rather than how it accumulates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from npu.numerics.pack import unpack_floats
from npu.sim import simulate

from .compile import CompiledModel, compile_model
from .errors import CompileError
from .frontend.loader import _read
from npu.hostio import dram_with_inputs
from .ir import Concat, Flatten
from npu.layout import ActLayout
from .reference import Reference

#: Smallest cosine against onnxruntime that any tensor may show at ``wide`` (the features show >= 0.99999).
WIDE_COSINE = 0.999
#: Largest error of a compiled layer in binary64 against onnxruntime's float32, relative to its largest
#: sum of |weight x input| products: float32 evaluation noise, far below any misplaced tap or channel.
GRAPH_TOLERANCE = 1e-5


@dataclass
class LayerCheck:
    """One materialised tensor compared with onnxruntime (worst case over the inputs)."""

    tensor: str                   # ONNX tensor name
    node: str                     # the compiled step that writes it
    shape: tuple[int, ...]
    cosine: float                 # simulator vs onnxruntime
    max_rel_error: float          # max |simulator - onnxruntime| / max |onnxruntime|
    expected_cosine: float        # numerics-contract evaluation vs onnxruntime
    expected_max_rel_error: float
    exact: bool                   # simulator == numerics-contract evaluation, bit for bit
    local_error: float = 0.0      # the layer alone (contract) on onnxruntime's inputs: max |error| / max |output|
    local_cosine: float = 1.0     # ... and its cosine to onnxruntime's output
    graph_error: float = 0.0      # the compiled layer in binary64 on onnxruntime's inputs: max |error| / max sum|w x|
    departs: bool = False
    why: str = ""


@dataclass
class VerifyReport:
    """Per-layer comparison of one compiled model with onnxruntime."""

    model: str
    config: str
    precision: str
    inputs: int
    layers: list[LayerCheck] = field(default_factory=list)
    compiled: CompiledModel | None = field(default=None, repr=False)

    @property
    def first_departure(self) -> LayerCheck | None:
        """The first layer (in program order) that departs from its expectation, or None."""
        return next((c for c in self.layers if c.departs), None)

    @property
    def ok(self) -> bool:
        """Whether every layer meets its expectation."""
        return self.first_departure is None

    def table(self) -> str:
        """One row per layer; the first departing layer is marked with '<-- first departure'."""
        first = self.first_departure
        head = f"{'tensor':<34} {'shape':<14} {'cosine':>10} {'max rel err':>11} {'expected cos':>12} " \
               f"{'exp rel err':>11} {'own cos':>9} {'graph err':>9} {'bits':>5}"
        lines = [head, "-" * len(head)]
        for c in self.layers:
            mark = "  <-- first departure: " + c.why if c is first else ("  departs: " + c.why if c.departs else "")
            lines.append(f"{c.tensor[:34]:<34} {'x'.join(map(str, c.shape)):<14} {c.cosine:>10.6f} "
                         f"{c.max_rel_error:>11.3e} {c.expected_cosine:>12.6f} {c.expected_max_rel_error:>11.3e} "
                         f"{c.local_cosine:>9.6f} {c.graph_error:>9.2e} {'same' if c.exact else 'DIFF':>5}{mark}")
        verdict = "every layer meets its expectation" if first is None else \
            f"{sum(c.departs for c in self.layers)} layer(s) depart; the first is {first.tensor!r} ({first.node})"
        lines.append(f"{self.model} on {self.config} at {self.precision}, {self.inputs} input(s): {verdict}")
        return "\n".join(lines)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def _max_rel_error(a: np.ndarray, ref: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    err = np.abs(a.astype(np.float64) - ref)
    if not np.isfinite(err).all():
        return math.inf
    scale = np.abs(ref).max() if ref.size else 0.0
    return float(err.max() / scale) if scale > 0 else float(err.max() if err.size else 0.0)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


class _Recorder:
    """Reads each planned tensor out of the machine when the step that completes it has run."""

    def __init__(self, compiled: CompiledModel, tensors: list[str]):
        plan, program = compiled.plan, compiled.program
        self.plan, self.n, self.fmt = plan, compiled.config.native_dim, compiled.config.mfu_format
        self.vec_bytes = compiled.config.vector_bytes
        step_of = {nd.name: i for i, nd in enumerate(plan.steps)}
        ready: dict[str, int] = {}
        for nd in compiled.graph.topological():            # concatenations and flattens are views
            if isinstance(nd, Concat):
                ready[nd.outputs[0]] = max(ready.get(t, -1) for t in nd.inputs)
            elif isinstance(nd, Flatten):
                ready[nd.outputs[0]] = ready.get(nd.inputs[0], -1)
            elif nd.name in step_of:
                for t in nd.outputs:
                    ready[t] = step_of[nd.name]
        self.at_step: dict[int, list[str]] = {}
        self.at_end: list[str] = []
        for t in tensors:
            if plan.storage_of(t).dram or not plan.steps:
                self.at_end.append(t)
            else:                   # a view of an input only (ready -1) is intact until its last reader
                self.at_step.setdefault(max(ready.get(t, -1), 0), []).append(t)
        # the instruction that ends each step's compute region
        self.step_at_instr: dict[int, int] = {}
        for name, _first, last in program.regions:
            if name in step_of:
                self.step_at_instr[last] = step_of[name]
        self.values: dict[str, np.ndarray] = {}

    def _view(self, t: str, vectors: np.ndarray) -> np.ndarray:
        st = self.plan.storage_of(t)
        c, h, w = self.plan.shapes[t]
        lay = st.layout(self.n)
        full = ActLayout(lay.stride * self.n, lay.height, lay.width, lay.pad, self.n)
        off = self.plan.views[t][1]
        return full.from_vectors(vectors.astype(np.float32))[off:off + c].reshape(c, h, w)

    def observe(self, op, machine) -> None:
        """Simulator callback: after a step's last compute op, copy the tensors it completed."""
        end = getattr(op, "end_index", op.index)
        step = self.step_at_instr.get(end)
        if step is None:
            return
        for t in self.at_step.get(step, []):
            st = self.plan.storage_of(t)
            lay = st.layout(self.n)
            self.values[t] = self._view(t, machine.vmem[lay.base:lay.base + lay.size])

    def finish(self, result) -> dict[str, np.ndarray]:
        """Read the spilled tensors from DRAM; returns every recorded tensor."""
        for t in self.at_end:
            st = self.plan.storage_of(t)
            if not st.dram:                     # a program without steps: the machine's final state
                lay = st.layout(self.n)
                self.values[t] = self._view(t, result.machine.vmem[lay.base:lay.base + lay.size])
                continue
            size = st.size(self.n)
            data = result.dram(st.daddr, size * self.vec_bytes)
            self.values[t] = self._view(t, unpack_floats(data, self.fmt, size * self.n).reshape(size, self.n))
        return self.values


def _onnx_tensors(model: onnx.ModelProto) -> set[str]:
    return {o for n in model.graph.node for o in n.output if o}


def ort_with_outputs(model: onnx.ModelProto, names: list[str]):
    """An onnxruntime session (no graph optimisation) that also returns the tensors ``names``."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for t in names:
        if t not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _max_error(y: np.ndarray, ref: np.ndarray, scale: float) -> float:
    err = np.abs(y.astype(np.float64) - ref.reshape(y.shape).astype(np.float64))
    if not np.isfinite(err).all():
        return math.inf
    top = float(err.max(initial=0.0))
    return top / scale if scale > 0 else top


def _local_errors(graph, contract: Reference, exact: Reference, feeds: dict, descs,
                  ort: dict[str, np.ndarray]) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """Each node alone on onnxruntime's values of its inputs, per tensor: the contract's (error, cosine) and the
    binary64 graph error."""
    env_c, env_x = contract.inputs(feeds, descs), exact.inputs(feeds, descs)
    local: dict[str, tuple[float, float]] = {}
    graph_err: dict[str, float] = {}
    for nd in graph.topological():
        t = nd.outputs[0]
        ins_c = [ort.get(u, env_c.get(u)) for u in nd.inputs]
        ins_x = [ort.get(u, env_x.get(u)) for u in nd.inputs]
        env_c[t] = contract.node(nd, ins_c)
        env_x[t] = exact.node(nd, ins_x)
        if t in ort:
            local[t] = (_max_error(env_c[t], ort[t], float(np.abs(ort[t]).max(initial=0.0))),
                        _cosine(env_c[t], ort[t].reshape(env_c[t].shape)))
            graph_err[t] = _max_error(env_x[t], ort[t], float(exact.magnitude(nd, ins_x).max(initial=0.0)))
    return local, graph_err


def verify_model(model, config="bw-s10", precision: str = "wide", inputs: list[np.ndarray] | None = None, *,
                 compiled: CompiledModel | None = None, progress=None) -> VerifyReport:
    """Compile ``model`` (path or ModelProto) and compare every tensor the program materialises with onnxruntime.

    ``inputs`` are (1, C, H, W) float32 arrays for the model's input (already
    preprocessed), or for a model of several inputs dicts {input name:
    array}; by default one seeded normal array per input.  ``progress(message)``
    is called before each long step.
    """
    proto, where = _read(model)
    say = progress or (lambda _msg: None)
    if compiled is None:
        say("compiling")
        compiled = compile_model(proto, config, precision)
    graph, plan, program = compiled.graph, compiled.plan, compiled.program
    descs = {d.name: d for d in program.inputs}
    if inputs is None:
        rng = np.random.default_rng(0)
        inputs = [{n: rng.standard_normal((1, *d.shape)).astype(np.float32) for n, d in descs.items()}]
    renamed = graph.metadata.get("renamed", {})       # IR tensor -> the ONNX tensor holding its value
    known = _onnx_tensors(proto)
    onnx_name = {t: renamed.get(t, t) for t in plan.views}
    tensors = [t for t in plan.views if onnx_name[t] in known and t not in graph.inputs]
    order = {t: i for i, t in enumerate(t for nd in graph.topological() for t in nd.outputs)}
    tensors.sort(key=lambda t: order.get(t, len(order)))
    session = ort_with_outputs(proto, [onnx_name[t] for t in tensors])
    reference = Reference(graph, compiled.config)
    exact = Reference(graph, compiled.config, exact=True)
    checks: dict[str, LayerCheck] = {}
    producer = {t: nd.name for nd in graph.topological() for t in nd.outputs}
    for k, item in enumerate(inputs):
        if not isinstance(item, dict):
            if len(descs) != 1:
                raise CompileError(f"{where}: the model has {len(descs)} inputs; give each input as a dict "
                                   f"{{name: array}}")
            item = {next(iter(descs)): item}
        if set(item) != set(descs):
            raise CompileError(f"{where}: input {k} gives {sorted(item)}; the model takes {sorted(descs)}")
        feeds = {n: np.asarray(x, np.float32).reshape(1, *descs[n].shape) for n, x in item.items()}
        say(f"input {k + 1}/{len(inputs)}: onnxruntime")
        ort_values = dict(zip([o.name for o in session.get_outputs()],
                              session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})))
        say(f"input {k + 1}/{len(inputs)}: numerics-contract evaluation")
        expected = reference.tensors(feeds, program.inputs)
        ort_ir = {t: np.asarray(ort_values[onnx_name[t]], np.float32).reshape(plan.shapes[t] if len(
            graph.shapes[t]) == 3 else graph.shapes[t]) for t in tensors}
        local, graph_err = _local_errors(graph, reference, exact, feeds, program.inputs, ort_ir)
        say(f"input {k + 1}/{len(inputs)}: simulation")
        recorder = _Recorder(compiled, tensors)
        result = simulate(program, program.config, dram=dram_with_inputs(program, feeds),
                          mode="functional", observe=recorder.observe)
        got = recorder.finish(result)
        for t in tensors:
            shape = plan.shapes[t]
            sim = got[t]
            ref = ort_ir[t].reshape(shape)
            exp = expected[t].reshape(shape)
            c = LayerCheck(t, producer.get(t, ""), tuple(graph.shapes[t]), _cosine(sim, ref),
                           _max_rel_error(sim, ref), _cosine(exp, ref), _max_rel_error(exp, ref),
                           _same_bits(sim, exp), *local.get(t, (0.0, 1.0)), graph_err.get(t, 0.0))
            old = checks.get(t)
            if old is not None:      # keep the worst case over the inputs
                c.cosine = min(c.cosine, old.cosine)
                c.max_rel_error = max(c.max_rel_error, old.max_rel_error)
                c.expected_cosine = min(c.expected_cosine, old.expected_cosine)
                c.expected_max_rel_error = max(c.expected_max_rel_error, old.expected_max_rel_error)
                c.exact = c.exact and old.exact
                c.local_error = max(c.local_error, old.local_error)
                c.local_cosine = min(c.local_cosine, old.local_cosine)
                c.graph_error = max(c.graph_error, old.graph_error)
            checks[t] = c
    report = VerifyReport(graph.name, compiled.config.name, precision, len(inputs), compiled=compiled)
    for t in tensors:
        c = checks[t]
        why = []
        if not c.exact:
            why.append("differs from the numerics-contract evaluation")
        if not c.graph_error <= GRAPH_TOLERANCE:
            why.append(f"the compiled layer computes something else than the ONNX layer (binary64 error "
                       f"{c.graph_error:.1e} of its products)")
        if precision == "wide" and not c.cosine >= WIDE_COSINE:
            why.append(f"cosine {c.cosine:.6f} against onnxruntime is below {WIDE_COSINE} at wide")
        c.departs, c.why = bool(why), "; ".join(why)
        report.layers.append(c)
    return report


@dataclass
class SegmentedVerifyReport:
    """Every NPU segment of a host-fallback program checked layer by layer, on onnxruntime's values of its inputs."""

    model: str
    segments: list[tuple[str, VerifyReport]]
    host_ops: list[dict]

    @property
    def ok(self) -> bool:
        """Whether every layer of every NPU segment meets its expectation."""
        return all(r.ok for _, r in self.segments)

    @property
    def layers(self) -> list[LayerCheck]:
        """Every checked layer, in program order."""
        return [c for _, r in self.segments for c in r.layers]

    def table(self) -> str:
        """Each NPU segment's table, then what ran on the host and why."""
        parts = []
        for name, report in self.segments:
            parts.append(f"== {name} (NPU) ==\n{report.table()}")
        ops = "\n".join(f"  {p['node']} ({p['op']}): {p['reason']}" for p in self.host_ops)
        parts.append(f"on the host (onnxruntime), not checked against the numerics contract:\n{ops}")
        verdict = "every NPU layer meets its expectation" if self.ok else "some NPU layer departs (see above)"
        parts.append(f"{self.model}: {len(self.segments)} NPU segment(s), {len(self.host_ops)} host operator(s): "
                     f"{verdict}")
        return "\n".join(parts)


def verify_segmented(model, segmented, precision: str = "wide", inputs: list[np.ndarray] | None = None, *,
                     progress=None) -> SegmentedVerifyReport:
    """Check each NPU segment of ``segmented`` (``compiler.partition.SegmentedModel``) with :func:`verify_model`.

    onnxruntime runs the whole model on ``inputs`` (the model's own inputs,
    as for :func:`verify_model`); each NPU segment is fed onnxruntime's
    values of its input tensors, so every layer is compared where it stands.
    """
    proto, _ = _read(model)
    say = progress or (lambda _msg: None)
    program = segmented.program
    crossing = sorted({t for s in program.segments if s.kind == "npu" for t in s.inputs})
    session = ort_with_outputs(proto, crossing)
    names = [o.name for o in session.get_outputs()]
    feeds_in = [i.name for i in session.get_inputs()]
    if inputs is None:
        rng = np.random.default_rng(0)
        inputs = [rng.standard_normal(program.inputs[0].shape).astype(np.float32)]
    per_segment: dict[str, list[dict]] = {s.name: [] for s in program.npu_segments}
    for x in inputs:
        values = dict(zip(names, session.run(None, {feeds_in[0]: np.asarray(x, np.float32)})))
        values[feeds_in[0]] = np.asarray(x, np.float32)
        for s in program.npu_segments:
            per_segment[s.name].append({t: values[t] for t in s.inputs})
    reports = []
    for s in program.npu_segments:
        say(f"{s.name}: checking {len(s.nodes)} operator(s)")
        report = verify_model(segmented.models[s.name], precision=precision, inputs=per_segment[s.name],
                              compiled=segmented.compiled[s.name], progress=progress)
        reports.append((s.name, report))
    return SegmentedVerifyReport(program.metadata.model, reports, list(program.host_ops))
