"""In-process scoring: load a compiled program once, score arrays, image files, image bytes and batches."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from npu.detection import Detection, SSDConfig, detect
from npu.pipeline import PipelineFile
from npu.npuz import ProgramFile
from npu.segments import SegmentedProgram
from npu.preprocess import ImageError, Preprocess

from .backends import RunStats, make_backend
from .program_io import TensorIO, model_io
from .heads import softmax, topk


@dataclass
class ScoreResult:
    """Named outputs (batch dimension 1 first) and what the run cost; a detector's decoded ``detections`` too."""

    outputs: dict[str, np.ndarray]
    stats: RunStats
    detections: list[Detection] | None = None

    @property
    def output(self) -> np.ndarray:
        """The only output (ValueError if there are several)."""
        if len(self.outputs) != 1:
            raise ValueError(f"the model has {len(self.outputs)} outputs: {', '.join(self.outputs)}")
        return next(iter(self.outputs.values()))


def open_session_backend(program: "ProgramFile | SegmentedProgram", backend: str):
    """The backend that runs ``program``: ``backend`` itself, or segments on it and onnxruntime."""
    if isinstance(program, SegmentedProgram):
        from .segments import SegmentedBackend

        return SegmentedBackend(program, backend)
    return make_backend(backend, program)


class Session:
    """A compiled program loaded once and scored many times on one backend.

    ``program`` is a plain program or a segmented one (compiled with host
    fallback: its host segments run on onnxruntime between the NPU ones), or a
    pipeline file (``.npup``, ``npu.pipeline``): with a head its one output is
    ``"probabilities"`` (runtime.pipelines), its labels the pipeline's.
    """

    def __init__(self, program: "ProgramFile | SegmentedProgram | PipelineFile | str | Path", backend: str = "sim"):
        from .pipelines import open_scorable

        self.program, self.pipeline = open_scorable(program)
        inputs, self.outputs = model_io(self.program)
        if len(inputs) != 1:
            raise ValueError("sessions serve programs with exactly one input")
        head = None if self.pipeline is None else self._pipeline_head(program)
        self.backend = open_session_backend(self.program, backend)
        self.input = inputs[0]
        meta = self.program.metadata
        side = self.input.shape[1] if self.input.order == "hwc" else self.input.shape[-1]
        self.preprocess: Preprocess = meta.preprocess or Preprocess.for_input(side)
        self.labels: list[str] | None = meta.labels
        self.postprocess: dict = meta.postprocess
        self.detection: SSDConfig | None = meta.detection
        if self.pipeline is not None:        # a pipeline file (.npup): its recipe, labels and head
            self.preprocess = self.pipeline.preprocess or self.preprocess
            self.labels = self.pipeline.labels
        if head is not None:
            from .pipelines import PROBABILITIES, HeadBackend, head_classes

            self.backend = HeadBackend(self.backend, head, self.outputs[0].name, self.postprocess)
            self.outputs = [TensorIO(PROBABILITIES, (head_classes(head),))]
            self.postprocess = {}

    def _pipeline_head(self, source):
        from .pipelines import check_pipeline

        where = str(source) if isinstance(source, (str, Path)) else self.pipeline.name or "pipeline"
        return check_pipeline(self.pipeline, where)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The model input's shape with its batch dimension, e.g. (1, 3, 224, 224)."""
        return (1, *self.input.shape)

    def score_numpy_array(self, array: np.ndarray) -> ScoreResult:
        """Score one input tensor of the model's input shape (with or without the batch dimension)."""
        x = np.asarray(array)
        if not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"input must be numeric, got dtype {x.dtype}")
        if x.shape not in (tuple(self.input.shape), self.input_shape):
            raise ValueError(f"input shape {list(x.shape)} does not match the model's {list(self.input_shape)}")
        outs, stats = self.backend.run({self.input.name: x.astype(np.float32)})
        result = {}
        for name, y in outs.items():
            y = y[None].astype(np.float32)
            if self.postprocess.get(name) == "softmax":
                y = softmax(y)
            result[name] = y
        if self.detection is None:
            return ScoreResult(result, stats)
        found = detect(result, self.detection)
        result["detection_boxes"] = np.array([d.box for d in found], np.float32).reshape(1, -1, 4)
        result["detection_scores"] = np.array([d.score for d in found], np.float32).reshape(1, -1)
        result["detection_classes"] = np.array([d.label for d in found], np.float32).reshape(1, -1)
        return ScoreResult(result, stats, found)

    def image_tensor(self, data: bytes, source: str = "image") -> np.ndarray:
        """The model input for encoded image bytes: the program's preprocessing, in the model's array order."""
        x = self.preprocess(bytes(data), source)
        return x.transpose(0, 2, 3, 1) if self.input.order == "hwc" else x

    def score_image(self, data: bytes, source: str = "image") -> ScoreResult:
        """Score encoded image bytes (JPEG, PNG, ...) after the program's preprocessing."""
        return self.score_numpy_array(self.image_tensor(data, source))

    def score_file(self, path: "str | Path") -> ScoreResult:
        """Score an image file."""
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ImageError(f"{p}: cannot read ({exc.strerror or exc})") from None
        return self.score_image(data, str(p))

    def score_batch(self, items: Iterable) -> list[ScoreResult]:
        """Score many inputs: numpy arrays, encoded image bytes or image paths, in order."""
        out = []
        for item in items:
            if isinstance(item, np.ndarray):
                out.append(self.score_numpy_array(item))
            elif isinstance(item, (bytes, bytearray)):
                out.append(self.score_image(item))
            else:
                out.append(self.score_file(item))
        return out

    def top(self, result: ScoreResult, k: int = 5) -> list[tuple[int, str, float]]:
        """The ``k`` best classes of a single-output result, with the program's labels."""
        return topk(result.output, k, self.labels)


class Pipeline:
    """Preprocess -> NPU featurizer (a headless program) -> classifier head on the host."""

    def __init__(self, featurizer: Session, head):
        self.featurizer = featurizer
        self.head = head

    def _finish(self, result: ScoreResult) -> tuple[np.ndarray, RunStats]:
        return self.head(result.output.reshape(1, -1)), result.stats

    def score_numpy_array(self, array) -> tuple[np.ndarray, RunStats]:
        """Class scores from the head and the featurizer's run statistics."""
        return self._finish(self.featurizer.score_numpy_array(array))

    def score_image(self, data: bytes) -> tuple[np.ndarray, RunStats]:
        """Class scores for encoded image bytes."""
        return self._finish(self.featurizer.score_image(data))

    def score_file(self, path) -> tuple[np.ndarray, RunStats]:
        """Class scores for an image file."""
        return self._finish(self.featurizer.score_file(path))

    def top(self, scores: np.ndarray, k: int = 5):
        """Top-k of the head's scores with the head's labels."""
        return topk(scores, k, getattr(self.head, "labels", None))
