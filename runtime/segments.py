"""Running a segmented program (host fallback): NPU segments on a backend, host segments on onnxruntime.

``SegmentedBackend`` has the ``Backend`` interface, so a ``Session`` scores
a segmented program exactly as a plain one.  Every host segment's ONNX model
is checked before onnxruntime sees it: default-domain operators only, every
weight inside the file (external data would make onnxruntime read files named
by the program), and inputs and outputs as the segment table says.
"""
from __future__ import annotations

import time

import numpy as np
import onnx

from npu.npuz import ProgramFileError
from npu.segments import Segment, SegmentedProgram

from .backends import RunStats, mac_utilisation, make_backend
from .heads import softmax


class HostSegmentError(ProgramFileError):
    """A host segment's ONNX model is malformed or not what the segment table says."""


def _tensors(graph: onnx.GraphProto):
    """Every TensorProto of a graph: initializers and attribute tensors, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _tensors(a.g)
            for sub in a.graphs:
                yield from _tensors(sub)


def parse_checked_onnx(data: bytes, name: str, what: str = "a host segment",
                       error: type[Exception] = None) -> onnx.ModelProto:
    """ONNX bytes parsed (never run) and checked for what onnxruntime must not see: tensors naming external data
    (onnxruntime would read files), operators outside the default domain; then onnx's checker.  ``error(message)`` is raised, naming
    ``name`` and the fault (default HostSegmentError); ``what`` says what holds the weights."""
    error = error or HostSegmentError
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:          # protobuf's DecodeError and friends
        raise error(f"{name}: not an ONNX model ({type(exc).__name__})") from None
    for t in _tensors(model.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL or t.external_data:
            raise error(f"{name}: tensor {t.name!r} refers to external data; {what} holds its weights inside "
                        f"the file")
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise error(f"{name}: operator {node.domain}.{node.op_type} ({node.name!r}) is outside the default "
                        f"ONNX domain")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise error(f"{name}: not valid ONNX: {str(exc).splitlines()[0]}") from None
    return model


def check_host_model(seg: Segment, where: str = "") -> onnx.ModelProto:
    """The host segment's ONNX model, checked (HostSegmentError naming the segment and the fault)."""
    name = f"{where}{seg.name}"
    model = parse_checked_onnx(seg.onnx, name)
    ins = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    outs = [o.name for o in model.graph.output]
    if sorted(ins) != sorted(seg.inputs) or sorted(outs) != sorted(seg.outputs):
        raise HostSegmentError(f"{name}: the model reads {ins} and writes {outs}; the segment table says "
                               f"{seg.inputs} and {seg.outputs}")
    return model


class _HostRunner:
    """One host segment on onnxruntime."""

    def __init__(self, seg: Segment, where: str):
        import onnxruntime as ort

        model = check_host_model(seg, where)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:          # onnxruntime's load errors (Fail, InvalidGraph, NotImplemented)
            raise HostSegmentError(f"{where}{seg.name}: onnxruntime cannot load it: "
                                   f"{str(exc).splitlines()[0][:300]}") from None
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.outputs, {k: feeds[k] for k in self.inputs})
        return dict(zip(self.outputs, values))


class SegmentedBackend:
    """Runs a segmented program: NPU segments on ``backend`` ("sim" or "rtl"), host segments on onnxruntime.

    Cycles, latency and MAC utilisation count the NPU segments (run one
    after the other on one machine); ``host_us`` is the wall time of the host
    segments.  Weights are not kept resident between runs: the segments
    share one matrix register file.
    """

    def __init__(self, program: SegmentedProgram, backend: str = "sim", where: str = ""):
        self.program = program
        self.name = backend
        self.runners = []
        for seg in program.segments:
            if seg.kind == "npu":
                b = make_backend(backend, seg.program)
                if hasattr(b, "keep_resident"):
                    b.keep_resident = False
                self.runners.append(b)
            else:
                self.runners.append(_HostRunner(seg, where))
        self.macs = program.metadata.macs
        last_use: dict[str, int] = {}
        for k, seg in enumerate(program.segments):
            for t in seg.inputs:
                last_use[t] = k
        self._last_use = last_use

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], RunStats]:
        """Outputs by name (ONNX shapes without the batch dimension, float32) and the run's statistics."""
        prog = self.program
        values = {}
        for spec in prog.inputs:
            if spec.name not in feeds:
                raise ValueError(f"input {spec.name!r} is missing")
            values[spec.name] = np.asarray(feeds[spec.name], np.float32).reshape(spec.shape)
        cycles, latency, host_s, warm = 0, 0.0, 0.0, True
        keep = {t.name for t in prog.outputs}
        for k, (seg, runner) in enumerate(zip(prog.segments, self.runners)):
            if seg.kind == "npu":
                descs = {d.name: d for d in seg.program.inputs}
                outs, st = runner.run({t: values[t].reshape(descs[t].shape) for t in seg.inputs})
                post = seg.program.metadata.postprocess
                for t, y in outs.items():
                    y = np.asarray(y, np.float32).reshape(prog.tensors[t])
                    values[t] = softmax(y) if post.get(t) == "softmax" else y
                cycles += st.cycles
                latency += st.latency_us
                warm = warm and st.warm
            else:
                t0 = time.perf_counter()
                outs = runner.run({t: values[t] for t in seg.inputs})
                host_s += time.perf_counter() - t0
                for t in seg.outputs:
                    y = np.asarray(outs[t])
                    if tuple(y.shape) != tuple(prog.tensors[t]):
                        raise HostSegmentError(f"{seg.name}: wrote {t!r} in shape {list(y.shape)}, the program "
                                               f"says {list(prog.tensors[t])}")
                    values[t] = y.astype(np.float32, copy=False)
            for t in [t for t, last in self._last_use.items() if last == k and t not in keep]:
                values.pop(t, None)               # no later segment reads it
        result = {t.name: values[t.name][0] for t in prog.outputs}
        util = mac_utilisation(self.macs, cycles, prog.config)
        return result, RunStats(cycles, latency, util, warm and cycles > 0, host_us=host_s * 1e6)
