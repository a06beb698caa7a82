"""Choosing a format per layer: the cheapest mix that keeps the network's output within a target.

``choose_precisions`` measures, on calibration inputs, how much each layer
alone costs the network's output when it runs in each cheaper format (a
sensitivity analysis on the bit-exact evaluation of the numerics contract,
``compiler.reference``), and then spends that error budget where it saves
the most bits: layer moves are taken in order of bits saved per unit of
output error until the predicted output cosine to onnxruntime's reaches the
target on every calibration input.  The predicted mix is then evaluated as
a whole, and moves are given back (by bisection) until the measured cosine
meets the target too.  Errors of different layers add only roughly, which
is why the final check is a measurement, not the prediction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from npu.numerics.formats import get_format

from .compile import compile_model
from .precision import PRECISIONS, layer_format_pair, resolve_config
from .errors import CompileError
from .ir import Conv
from .reference import Reference

#: Precisions tried per layer by default, cheapest first (the safest, last, is where every layer starts):
#: precisions of ``PRECISIONS`` or block-format names (bfp24: 16-bit blocks, nearly exact).
DEFAULT_CANDIDATES = ("ms-fp9", "mxfp4", "mxfp6", "mxint8", "bfp24")


@dataclass
class LayerCost:
    """One layer's size and its measured sensitivity."""

    name: str
    weights: int                     # weight values (each counted once)
    activations: int                 # input values the layer's MVU reads (each counted once)
    #: precision -> per-calibration-input loss of output cosine when this layer alone runs in it
    loss: dict[str, list[float]] = field(default_factory=dict)

    @property
    def values(self) -> int:
        """Weights and activations together: what a layer's bits/value is weighted by."""
        return self.weights + self.activations


@dataclass
class PrecisionChoice:
    """A chosen format per layer, with what it was measured to cost and keep."""

    default: str | None                           # the precision (of PRECISIONS) of every layer not listed
    layers: dict[str, str]                        # layer name -> precision, where it differs from ``default``
    target_cosine: float
    cosines: list[float]                          # measured output cosine per calibration input, chosen mix
    bits_per_value: float                         # weights and activations, weighted by their counts
    weight_bits: float
    activation_bits: float
    costs: list[LayerCost] = field(default_factory=list)

    def precision_of(self, layer: str) -> str:
        """The precision the choice gives ``layer``."""
        return self.layers.get(layer, self.default)

    def as_json(self) -> dict:
        """The ``npu compile --precision FILE.json`` form of the choice."""
        return ({"default": self.default} if self.default else {}) | {"layers": dict(self.layers)}


def _bits(precision: str, native_dim: int) -> float:
    return get_format(layer_format_pair(precision)[0]).bits_per_value(native_dim)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine of two arrays, in binary64 (0 for a zero array)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300))


class _Evaluator:
    """Runs the compiled graph's contract evaluation with per-layer formats, reusing unchanged tensors."""

    def __init__(self, compiled, inputs: list[np.ndarray], targets: list[np.ndarray]):
        self.graph, self.program = compiled.graph, compiled.program
        self.reference = Reference(self.graph, compiled.config)
        self.order = list(self.graph.topological())
        self.index = {nd.name: i for i, nd in enumerate(self.order)}
        self.output = self.graph.outputs[0]
        desc = self.program.inputs[0]
        self.inputs = [self.reference.inputs({desc.name: x}, self.program.inputs) for x in inputs]
        self.targets = targets
        self.base: list[dict] = []

    def set(self, layer: Conv, precision: str) -> None:
        layer.weight_format, layer.activation_format = layer_format_pair(precision)

    def run_all(self) -> list[float]:
        """Evaluate every input from scratch, keep the tensors as the baseline; output cosines."""
        self.base = []
        for env0 in self.inputs:
            env = dict(env0)
            for nd in self.order:
                env[nd.outputs[0]] = self.reference.node(nd, [env[t] for t in nd.inputs])
            self.base.append(env)
        return [cosine(env[self.output], t) for env, t in zip(self.base, self.targets)]

    def run_from(self, layer: Conv) -> list[float]:
        """Output cosines with only ``layer`` and what depends on it recomputed from the baseline."""
        changed, downstream = set(), []
        for nd in self.order[self.index[layer.name]:]:
            if nd is layer or any(t in changed for t in nd.inputs):
                downstream.append(nd)
                changed.update(nd.outputs)
        out = []
        for base, target in zip(self.base, self.targets):
            env = {}
            for nd in downstream:
                env[nd.outputs[0]] = self.reference.node(nd, [env.get(t, base.get(t)) for t in nd.inputs])
            out.append(cosine(env.get(self.output, base[self.output]), target))
        return out


def _everywhere(proto, cfg, precision: str) -> dict[str, str]:
    """``layer_formats`` putting every MVU layer of the model at ``precision``."""
    graph = compile_model(proto, cfg, None).graph
    return {nd.name: precision for nd in _layers(graph)}


def _layers(graph) -> list[Conv]:
    return [nd for nd in graph.topological() if isinstance(nd, Conv)]


def _layer_sizes(graph, layer: Conv) -> tuple[int, int]:
    weights = int(layer.weight.size // max(layer.column_phases, 1))
    shape = graph.shapes[layer.inputs[0]]
    return weights, int(np.prod(shape[1:] if len(shape) == 4 else shape))


def _average_bits(costs: list[LayerCost], choice: dict[str, str], native_dim: int) -> tuple[float, float, float]:
    w = sum(c.weights * _bits(choice[c.name], native_dim) for c in costs)
    a = sum(c.activations * _bits(choice[c.name], native_dim) for c in costs)
    nw, na = sum(c.weights for c in costs), sum(c.activations for c in costs)
    return (w + a) / max(nw + na, 1), w / max(nw, 1), a / max(na, 1)


def _moves(costs: list[LayerCost], candidates: list[str], safest: str, native_dim: int):
    """Per layer, the steps from ``safest`` down its lower convex hull of (loss, bits), best savers first."""
    steps = []
    for c in costs:
        here, here_loss = safest, 0.0
        options = sorted((p for p in candidates if p != safest), key=lambda p: -_bits(p, native_dim))
        while True:
            best = None
            for p in options:
                saved = (_bits(here, native_dim) - _bits(p, native_dim)) * c.values
                if saved <= 0:
                    continue
                extra = max(max(c.loss[p]) - here_loss, 1e-12)
                ratio = saved / extra
                if best is None or ratio > best[0]:
                    best = (ratio, p, saved, extra)
            if best is None:
                break
            ratio, p, saved, extra = best
            steps.append((ratio, c.name, here, p))
            here, here_loss = p, here_loss + extra
            options = [q for q in options if _bits(q, native_dim) < _bits(p, native_dim)]
    # a layer's later steps have lower ratios than its earlier ones (convex hull), so a global sort keeps order
    steps.sort(key=lambda s: -s[0])
    return steps


@dataclass
class Sensitivity:
    """What :func:`measure_sensitivity` found: each layer's cost and loss per candidate, and the baseline."""

    candidates: list[str]            # cheapest first; the last is the safest, where every layer starts
    native_dim: int
    base: list[float]                # output cosine per calibration input, every layer at the safest
    costs: list[LayerCost]
    evaluator: "_Evaluator"
    layers: list[Conv]

    @property
    def safest(self) -> str:
        """The most expensive candidate."""
        return self.candidates[-1]


def _check_candidates(candidates, mfu_format: str) -> list[str]:
    """The candidates, checked: precisions or block formats, whose MFU format (for a precision) is the machine's."""
    if not candidates:
        raise CompileError("choosing formats per layer needs at least one candidate precision")
    for p in candidates:
        layer_format_pair(p, "candidate")
        if p in PRECISIONS and PRECISIONS[p][2] != mfu_format:
            raise CompileError(f"candidate precision {p!r} computes in {PRECISIONS[p][2]}, but the machine's MFU "
                               f"format is {mfu_format}; a layer changes only its MVU formats")
    return list(dict.fromkeys(candidates))


def measure_sensitivity(model, config="bw-s10", calibration: list[np.ndarray] | None = None, *,
                        candidates=DEFAULT_CANDIDATES, progress: Callable[[str], None] | None = None) -> Sensitivity:
    """How much each layer alone, in each candidate precision, lowers the output's cosine to onnxruntime's.

    ``model`` is an ONNX path or ModelProto with one input and one output;
    ``calibration`` are preprocessed model inputs (1, C, H, W).
    ``candidates`` are names of ``compiler.compile.PRECISIONS`` sharing one
    MFU format.  Every layer starts at the most expensive candidate; each
    layer is then moved alone to each cheaper one and the network evaluated
    from that layer on (``compiler.reference``, bit-exact with the
    simulator).
    """
    from .frontend.loader import _read
    from .verify import ort_with_outputs

    say = progress or (lambda _m: None)
    if not calibration:
        raise CompileError("choosing formats per layer needs calibration inputs (images)")
    proto, _ = _read(model)
    cfg = resolve_config(config, None)
    candidates = _check_candidates(candidates, cfg.mfu_format)
    n = cfg.native_dim
    ordered = sorted(candidates, key=lambda p: _bits(p, n))
    safest = ordered[-1]
    say(f"compiling with every layer at {safest}")
    compiled = compile_model(proto, cfg, None, layer_formats=_everywhere(proto, cfg, safest))
    graph = compiled.graph
    if len(compiled.program.inputs) != 1 or len(graph.outputs) != 1:
        raise CompileError("choosing formats per layer takes models with one input and one output")
    out = graph.outputs[0]
    onnx_out = graph.metadata.get("renamed", {}).get(out, out)
    session = ort_with_outputs(proto, [onnx_out])
    input_name = session.get_inputs()[0].name
    desc = compiled.program.inputs[0]
    try:
        xs = [np.asarray(x, np.float32).reshape(1, *desc.shape) for x in calibration]
    except ValueError:
        raise CompileError(f"calibration inputs must have the model's input shape {[1, *desc.shape]}") from None
    names = [o.name for o in session.get_outputs()]
    targets = [np.asarray(dict(zip(names, session.run(None, {input_name: x})))[onnx_out], np.float32).ravel()
               for x in xs]
    layers = _layers(graph)
    ev = _Evaluator(compiled, xs, targets)
    for nd in layers:
        ev.set(nd, safest)
    say(f"evaluating {len(xs)} calibration input(s) at {safest}")
    base = ev.run_all()
    costs = []
    for i, nd in enumerate(layers):
        c = LayerCost(nd.name, *_layer_sizes(graph, nd))
        for p in ordered[:-1]:
            ev.set(nd, p)
            c.loss[p] = [b - v for b, v in zip(base, ev.run_from(nd))]
        ev.set(nd, safest)
        costs.append(c)
        say(f"sensitivity: layer {i + 1}/{len(layers)} {nd.name}")
    return Sensitivity(ordered, n, base, costs, ev, layers)


def choose_from(sens: Sensitivity, target_cosine: float = 0.99,
                progress: Callable[[str], None] | None = None) -> PrecisionChoice:
    """The cheapest mix the sensitivities predict to keep every calibration output's cosine >= ``target_cosine``,
    moves given back until the measured mix does too."""
    say = progress or (lambda _m: None)
    if not 0.0 < target_cosine < 1.0:
        raise CompileError(f"target cosine {target_cosine} must lie between 0 and 1")
    safest, n, base, ev = sens.safest, sens.native_dim, sens.base, sens.evaluator
    if min(base) < target_cosine:
        raise CompileError(f"even {safest} everywhere gives an output cosine of {min(base):.4f} on a calibration "
                           f"input, below the target {target_cosine}; add a more precise candidate or lower the "
                           f"target")
    steps = _moves(sens.costs, sens.candidates, safest, n)
    by_name = {nd.name: nd for nd in sens.layers}
    loss_of = {c.name: c.loss for c in sens.costs}

    def mix(k: int) -> dict[str, str]:
        choice = {nd.name: safest for nd in sens.layers}
        for _, name, _, p in steps[:k]:
            choice[name] = p
        return choice

    def predicted(k: int) -> float:
        per_input = np.array(base, np.float64)
        for name, p in mix(k).items():
            if p != safest:
                per_input -= np.array(loss_of[name][p])
        return float(per_input.min())

    def measured(k: int) -> list[float]:
        for name, p in mix(k).items():
            ev.set(by_name[name], p)
        try:
            return ev.run_all()
        finally:
            for nd in sens.layers:
                ev.set(nd, safest)

    k = 0
    while k < len(steps) and predicted(k + 1) >= target_cosine:
        k += 1
    say(f"target {target_cosine}: {k} of {len(steps)} moves predicted; measuring the mix")
    best = (0, list(base))                 # mix(0), every layer at the safest, meets the target
    got = measured(k)
    if min(got) >= target_cosine:
        best = (k, got)
    else:
        lo, hi = 0, k                      # mix(lo) meets the target, mix(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            got = measured(mid)
            say(f"target {target_cosine}: {mid} moves measure min cosine {min(got):.4f}")
            if min(got) >= target_cosine:
                lo, best = mid, (mid, got)
            else:
                hi = mid
    k, cosines = best
    choice = mix(k)
    counts = {p: sum(1 for v in choice.values() if v == p) for p in sens.candidates if p in PRECISIONS}
    default = max(counts, key=lambda p: (counts[p], -_bits(p, n))) if counts else None
    total, wbits, abits = _average_bits(sens.costs, choice, n)
    return PrecisionChoice(default, {name: p for name, p in choice.items() if p != default}, target_cosine,
                           cosines, total, wbits, abits, sens.costs)


def choose_precisions(model, config="bw-s10", calibration: list[np.ndarray] | None = None, *,
                      target_cosine: float = 0.99, candidates=DEFAULT_CANDIDATES,
                      progress: Callable[[str], None] | None = None) -> PrecisionChoice:
    """The cheapest format per layer keeping the output's cosine to onnxruntime >= ``target_cosine`` on every
    calibration input (:func:`measure_sensitivity`, then :func:`choose_from`)."""
    if not 0.0 < target_cosine < 1.0:
        raise CompileError(f"target cosine {target_cosine} must lie between 0 and 1")
    sens = measure_sensitivity(model, config, calibration, candidates=candidates, progress=progress)
    return choose_from(sens, target_cosine, progress)
