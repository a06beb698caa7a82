"""Read an ONNX model as exported (any opset 7..newest, external data, initializers as inputs) into the IR.

Every ONNX node becomes an :class:`~compiler.ir.OnnxOp`; initializers and
``Constant`` outputs become constants.  Typing the nodes is the ``lift``
pass's job, after constant folding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from ..errors import ModelLoadError, Problem, UnsupportedModelError
from ..ir import Graph, OnnxOp

MIN_OPSET = 7


def _read(source) -> tuple[onnx.ModelProto, str]:
    if isinstance(source, onnx.ModelProto):
        return source, source.graph.name or "model"
    path = Path(source)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:   # protobuf DecodeError and friends: the bytes are not a ModelProto
        raise ModelLoadError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:   # onnx raises OSError, ValueError or its checker's ValidationError here
        raise ModelLoadError(f"{path}: external weight data could not be read ({exc}); keep the data files "
                             f"beside the model as the exporter wrote them") from None
    return model, str(path)


def _opset(model: onnx.ModelProto, where: str) -> int:
    versions = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    v = versions.get("ai.onnx")
    if v is None:
        raise ModelLoadError(f"{where}: the model imports no default-domain (ai.onnx) opset")
    if v < MIN_OPSET:
        raise ModelLoadError(f"{where}: opset {v} is older than the oldest supported ({MIN_OPSET}); convert it "
                             f"with onnx.version_converter.convert_version(model, {MIN_OPSET})")
    if v > onnx.defs.onnx_opset_version():
        raise ModelLoadError(f"{where}: opset {v} is newer than this onnx ({onnx.__version__}) knows "
                             f"({onnx.defs.onnx_opset_version()}); upgrade onnx")
    return v


def _fix_batch(model: onnx.ModelProto, init_names: set[str], problems: list[Problem]) -> None:
    """Set a symbolic leading (batch) dimension of every real input to 1; report other symbolic dims."""
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        dims = vi.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if i == 0:
                d.Clear()
                d.dim_value = 1
            else:
                problems.append(Problem(vi.name, "input", f"dimension {i} is dynamic ({d.dim_param or '?'}); "
                                        f"export the model with a fixed input size"))


#: Initializers with more elements than this are left out of the copy that is checked and shape-inferred.
_LIGHT_LIMIT = 4096


def _light_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose large initializers are graph inputs of the same type and shape.

    Checking and shape inference serialise the model; without the weights
    that takes milliseconds instead of seconds for VGG-16.  The caller's
    model is not changed.
    """
    g = model.graph
    small, big = [], []
    for t in g.initializer:
        (big if int(np.prod(t.dims)) > _LIGHT_LIMIT or t.data_location == onnx.TensorProto.EXTERNAL
         else small).append(t)
    declared = {vi.name for vi in g.input}
    inputs = list(g.input) + [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                              for t in big if t.name not in declared]
    graph = onnx.helper.make_graph(g.node, g.name, inputs, g.output, small, value_info=g.value_info)
    light = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return light


def _shape(vi: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def load_onnx(source) -> Graph:
    """The model at ``source`` (path or ModelProto) as an IR graph of OnnxOp nodes with inferred shapes.

    Shapes keep ONNX's batch dimension here (fixed to 1); ``lift`` drops it.
    Raises ModelLoadError for unreadable files and UnsupportedModelError for
    dynamic input sizes.
    """
    model, where = _read(source)
    opset = _opset(model, where)
    g = model.graph
    init_names = {t.name for t in g.initializer}
    light = _light_model(model)
    problems: list[Problem] = []
    _fix_batch(light, init_names, problems)
    if problems:
        raise UnsupportedModelError(problems, where)
    try:
        onnx.checker.check_model(light, full_check=False)
    except onnx.checker.ValidationError as exc:
        raise ModelLoadError(f"{where}: the model is not valid ONNX: {str(exc).splitlines()[0]}") from None
    try:
        inferred = shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception as exc:   # onnx raises InferenceError and plain RuntimeErrors
        raise ModelLoadError(f"{where}: ONNX shape inference failed: {str(exc).splitlines()[0]}") from None

    graph = Graph(g.name or Path(where).stem)
    graph.metadata["source"] = where
    graph.metadata["opset"] = opset
    graph.metadata["model_props"] = {p.key: p.value for p in model.metadata_props}
    for t in g.initializer:
        graph.constants[t.name] = numpy_helper.to_array(t)
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        s = _shape(vi)
        if s is not None:
            graph.shapes[vi.name] = s
    for vi in light.graph.input:
        if vi.name in init_names:
            continue                       # old exporters list initializers as inputs too
        elem = vi.type.tensor_type.elem_type
        if elem != onnx.TensorProto.FLOAT:
            raise UnsupportedModelError([Problem(vi.name, "input", f"element type "
                                                 f"{onnx.TensorProto.DataType.Name(elem)} is not float32")], where)
        graph.inputs.append(vi.name)
    if not graph.inputs:
        raise ModelLoadError(f"{where}: the model has no non-constant input")
    graph.outputs = [vi.name for vi in g.output]

    names: set[str] = set()
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        while name in names:
            name += "_"
        names.add(name)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        for k, v in attrs.items():
            if isinstance(v, onnx.TensorProto):
                attrs[k] = numpy_helper.to_array(v)
            elif isinstance(v, bytes):
                attrs[k] = v.decode()
        graph.add(OnnxOp(name, list(n.input), list(n.output), source=n.op_type, op_type=n.op_type, attrs=attrs,
                         domain=n.domain, opset=opset, proto=n))
    return graph

