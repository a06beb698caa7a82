"""Pipeline files (``.npup``, ``npu.pipeline``) in the runtime: their heads, their checks, scoring them.

A ``Session`` opened on a pipeline scores it exactly like a program: the
program runs on the backend and its (single) output, after the program's own
postprocessing, goes through the host head.  The session's outputs are then
one tensor, ``"probabilities"`` (1, classes): the head's output, which for a
dense or MLP head is a softmax, and for an ONNX head its first output as the
model gives it (a Gemm + Softmax head gives probabilities).  The featurizer's
vector is not an output of a pipeline with a head (score the program for it).
A pipeline without a head is its program, with the pipeline's labels, version
and preprocessing recipe.

Heads are checked before they run: an arrays head is read without unpickling
(``runtime.heads.head_from_arrays``); an ONNX head must use default-domain
operators only and keep its weights inside the file
(``runtime.segments.parse_checked_onnx``), and have one input.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from npu.npuz import ProgramFile, ProgramFileError
from npu.pipeline import HEAD_MEMBERS, PipelineFile, check_head_arrays, is_pipeline, load_pipeline
from npu.preprocess import Preprocess
from npu.segments import SegmentedProgram, open_program

from .backends import RunStats
from .heads import DenseHead, HeadFileError, MlpHead, OnnxHead, head_from_arrays

#: The output of a pipeline with a head: the head's class scores.
PROBABILITIES = "probabilities"


class PipelineError(ProgramFileError):
    """A pipeline's head is malformed or does not fit its program or labels (names the file and the fault)."""


def load_head_bytes(kind: str, data: bytes, where: str = "head") -> "DenseHead | MlpHead | OnnxHead | None":
    """The head a pipeline holds: None for kind "none", a DenseHead / MlpHead for "arrays" (a ``.npz`` of plain
    arrays, never unpickled), an OnnxHead for "onnx" (checked before onnxruntime sees it).  PipelineError names
    ``where`` and the fault."""
    def fail(message: str) -> PipelineError:
        return PipelineError(f"{where}: {message}")

    if kind == "none":
        return None
    if kind == "arrays":
        arrays = check_head_arrays(bytes(data), fail)
        try:
            return head_from_arrays(arrays, f"{where}")
        except HeadFileError as exc:
            raise PipelineError(str(exc)) from None
    if kind == "onnx":
        return _onnx_head(bytes(data), where, fail)
    raise fail(f"head kind {kind!r} is none of none, arrays, onnx")


def _onnx_head(data: bytes, where: str, fail) -> OnnxHead:

    from .segments import parse_checked_onnx

    model = parse_checked_onnx(data, where, "an ONNX head", PipelineError)
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or not model.graph.output:
        raise fail(f"an ONNX head takes one input and gives at least one output; this one takes "
                   f"{len(inputs)} and gives {len(model.graph.output)}")
    try:
        return OnnxHead(model)
    except Exception as exc:          # onnxruntime's load errors (Fail, InvalidGraph, NotImplemented)
        raise fail(f"onnxruntime cannot load it: {str(exc).splitlines()[0][:300]}") from None


def head_features(head) -> int:
    """How many features a head takes."""
    if isinstance(head, OnnxHead):
        return math.prod(d if isinstance(d, int) else 1 for d in head.input.shape)
    return int(head.weight.shape[1])


def head_classes(head) -> int:
    """How many class scores a head gives (an ONNX head is run once on zeros to see)."""
    if isinstance(head, DenseHead):
        return int(head.bias.shape[0])
    if isinstance(head, MlpHead):
        return int(head.layers[-1][1].shape[0])
    return int(np.asarray(head(np.zeros((1, head_features(head)), np.float32))).size)


def program_output_size(program: "ProgramFile | SegmentedProgram") -> tuple[str, int]:
    """The name and element count of a program's single output (PipelineError if it has several or detects)."""
    from .program_io import model_io

    _, outputs = model_io(program)
    if len(outputs) != 1 or program.metadata.detection is not None:
        raise PipelineError(f"a head needs a program of one output; this one gives "
                            f"{', '.join(o.name for o in outputs)}")
    return outputs[0].name, math.prod(outputs[0].shape)


def check_pipeline(pipeline: PipelineFile, where: str = "pipeline"):
    """The pipeline's head (or None), once it fits: its feature count is the program's output size and the labels
    name its classes (or the program's outputs, without a head).  PipelineError names the fault."""
    program = pipeline.program()
    head = load_head_bytes(pipeline.head_kind, pipeline.head_bytes,
                           f"{where}!{HEAD_MEMBERS.get(pipeline.head_kind, 'head')}")
    if head is None:
        from .program_io import model_io

        _, outputs = model_io(program)
        classes = math.prod(outputs[0].shape) if len(outputs) == 1 else None
        if pipeline.labels is not None and classes is not None and len(pipeline.labels) != classes:
            raise PipelineError(f"{where}: {len(pipeline.labels)} labels, but the program (no head) gives "
                                f"{classes} outputs")
        return None
    name, size = program_output_size(program)
    features = head_features(head)
    if features != size:
        raise PipelineError(f"{where}: the head takes {features} features, but the program's output {name!r} has "
                            f"{size}")
    classes = head_classes(head)
    if pipeline.labels is not None and len(pipeline.labels) != classes:
        raise PipelineError(f"{where}: {len(pipeline.labels)} labels, but the head gives {classes} classes")
    return head


def create_pipeline(program: "str | Path", head: "str | Path | None" = None, labels: list[str] | None = None,
                    version: str = "", name: str = "", preprocess: Preprocess | None = None) -> PipelineFile:
    """A pipeline of a program file and an optional head file (``.npz`` from ``save_head``, or ``.onnx``), checked
    to fit.  Labels default to the head's (an arrays head's ``labels``), else, without a head, the program's."""
    program = Path(program)
    try:
        program_bytes = program.read_bytes()
    except OSError as exc:
        raise PipelineError(f"{program}: cannot read ({exc.strerror or exc})") from None
    kind, head_bytes = "none", b""
    if head is not None:
        head = Path(head)
        kind = "onnx" if head.suffix.lower() == ".onnx" else "arrays"
        try:
            head_bytes = head.read_bytes()
        except OSError as exc:
            raise PipelineError(f"{head}: cannot read ({exc.strerror or exc})") from None
    pipe = PipelineFile(program_bytes, kind, head_bytes, labels, version, name, preprocess)
    loaded = pipe.program(str(program))
    if labels is None:
        if kind == "arrays":
            pipe.labels = load_head_bytes(kind, head_bytes, str(head)).labels
        elif kind == "none":
            pipe.labels = loaded.metadata.labels
    pipe.check(str(program))
    check_pipeline(pipe, str(head or program))
    return pipe


def open_scorable(source) -> "tuple[ProgramFile | SegmentedProgram, PipelineFile | None]":
    """What a Session scores: a program (plain or segmented) and, for a pipeline file, the pipeline."""
    if isinstance(source, PipelineFile):
        return source.program(), source
    if isinstance(source, (ProgramFile, SegmentedProgram)):
        return source, None
    if is_pipeline(source):
        pipe = load_pipeline(source)
        return pipe.program(), pipe
    return open_program(source), None


class HeadBackend:
    """A backend whose single output goes through a host head: ``run`` gives ``{"probabilities": ...}``.

    ``postprocess`` is the program's (a softmax the program asks for is applied before the head, as a Session
    scoring the program would)."""

    def __init__(self, backend, head, output: str, postprocess: dict):
        from .heads import softmax

        self.backend, self.head, self.output = backend, head, output
        self._softmax = softmax if postprocess.get(output) == "softmax" else None
        self.name = getattr(backend, "name", "")

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], RunStats]:
        outs, stats = self.backend.run(feeds)
        y = np.asarray(outs[self.output])[None].astype(np.float32)
        if self._softmax is not None:
            y = self._softmax(y)
        scores = np.asarray(self.head(y.reshape(1, -1)))
        return {PROBABILITIES: scores.reshape(-1).astype(np.float32, copy=False)}, stats

    def __getattr__(self, name):          # keep_resident, macs, ... of the wrapped backend
        if name == "backend":
            raise AttributeError(name)
        return getattr(self.backend, name)
