"""What a program takes and gives, as a caller sees it: one home shared by Session, pipelines and the server."""
from __future__ import annotations

from dataclasses import dataclass

from npu.npuz import ProgramFile
from npu.segments import SegmentedProgram

#: The outputs a detection program adds to its head tensors: boxes (1, K, 4) as x1, y1, x2, y2 fractions of the
#: input image, scores (1, K) and class indices (1, K), K detections highest score first.
DETECTION_OUTPUTS = {"detection_boxes": (-1, 4), "detection_scores": (-1,), "detection_classes": (-1,)}


@dataclass(frozen=True)
class TensorIO:
    """A model input or output as a caller sees it: name, shape without the batch dimension, array order."""

    name: str
    shape: tuple[int, ...]
    order: str = "chw"           # "hwc": an image input is N x H x W x C


def model_io(program: "ProgramFile | SegmentedProgram") -> tuple[list[TensorIO], list[TensorIO]]:
    """The inputs and outputs a program takes and gives, for a plain or a segmented (host-fallback) program."""
    if isinstance(program, SegmentedProgram):
        inputs = [TensorIO(t.name, tuple(t.shape[1:]), t.order) for t in program.inputs]
        outputs = [TensorIO(t.name, tuple(t.shape[1:])) for t in program.outputs]
    else:
        inputs = [TensorIO(d.name, tuple(d.shape), d.params.order) for d in program.inputs]
        outputs = [TensorIO(d.name, tuple(d.shape), d.params.order) for d in program.outputs]
    if program.metadata.detection is not None:
        outputs += [TensorIO(name, shape) for name, shape in DETECTION_OUTPUTS.items()]
    return inputs, outputs
