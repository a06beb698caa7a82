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
from ..limits import MAX_TENSOR_BYTES, MAX_TENSOR_ELEMENTS, elements, quote
from .legacy import modernize

MIN_OPSET = 7


def dtype_name(elem_type: int) -> str:
    """The ONNX name of an element type (``FLOAT``), or a description of an unknown code."""
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"unknown element type {elem_type}"


def _bad_text(msg, path: str) -> str | None:
    """The path of the first string field of ``msg`` (recursively) that is not valid UTF-8, or None.

    protobuf hands such a field to Python as bytes instead of str.
    """
    for fd in msg.DESCRIPTOR.fields:
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
        if fd.type == fd.TYPE_STRING:
            values = getattr(msg, fd.name) if repeated else [getattr(msg, fd.name)]
            for i, v in enumerate(values):
                if not isinstance(v, str):
                    return f"{path}.{fd.name}" + (f"[{i}]" if repeated else "")
        elif fd.type == fd.TYPE_MESSAGE:
            if repeated:
                items = enumerate(getattr(msg, fd.name))
            elif msg.HasField(fd.name):
                items = [(None, getattr(msg, fd.name))]
            else:
                continue
            for i, sub in items:
                bad = _bad_text(sub, f"{path}.{fd.name}" + ("" if i is None else f"[{i}]"))
                if bad:
                    return bad
    return None


def _check_model_proto(model: onnx.ModelProto, where: str) -> None:
    if not model.HasField("graph"):
        raise ModelLoadError(f"{where}: not an ONNX model (no graph)")
    bad = _bad_text(model, "model")
    if bad:
        raise ModelLoadError(f"{where}: not an ONNX model: the text field {bad} is not valid UTF-8")


def _read(source) -> tuple[onnx.ModelProto, str]:
    if isinstance(source, onnx.ModelProto):
        where = source.graph.name if isinstance(source.graph.name, str) and source.graph.name else "model"
        _check_model_proto(source, where)
        return source, where
    path = Path(source)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{path}: the file is empty (0 bytes), not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:   # protobuf DecodeError and friends: the bytes are not a ModelProto
        raise ModelLoadError(f"{path}: not an ONNX model ({type(exc).__name__}: {quote(exc)})") from None
    _check_model_proto(model, f"{path} ({size:,} bytes)")
    _check_external_sizes(model, path)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:   # onnx raises OSError, ValueError or its checker's ValidationError here
        raise ModelLoadError(f"{path}: external weight data could not be read ({quote(exc)}); keep the data "
                             f"files beside the model as the exporter wrote them") from None
    return model, str(path)


def _check_external_sizes(model: onnx.ModelProto, path: Path) -> None:
    """Refuse external tensors larger than the compiler's limit before their data is read."""
    for t in model.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        n = elements(t.dims)
        try:
            length = int(info["length"]) if "length" in info else None
            offset = int(info.get("offset", 0))
        except ValueError:
            raise ModelLoadError(f"{path}: initializer {t.name!r}: external data offset/length "
                                 f"{info.get('offset')!r}/{info.get('length')!r} are not numbers") from None
        if length is None:          # onnx reads from the offset to the end of the file
            data_file = path.parent / info.get("location", "")
            length = max(data_file.stat().st_size - offset, 0) if data_file.is_file() else 0
        if any(d < 0 for d in t.dims) or n > MAX_TENSOR_ELEMENTS or length > MAX_TENSOR_BYTES:
            raise ModelLoadError(f"{path}: initializer {t.name!r} declares dims {list(t.dims)} ({n:,} elements, "
                                 f"{length:,} bytes of external data); the compiler's limit is "
                                 f"{MAX_TENSOR_ELEMENTS:,} elements and {MAX_TENSOR_BYTES:,} bytes per tensor")


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
    """Set a symbolic leading (batch) dimension of every real input to 1; report other symbolic dims.

    Also reports zero or negative dimensions and inputs larger than the
    compiler's limit.
    """
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        dims = vi.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if d.HasField("dim_value"):
                if d.dim_value <= 0:
                    problems.append(Problem(vi.name, "input", f"dimension {i} is {d.dim_value}; every dimension "
                                            f"of an input must be positive"))
                continue
            if i == 0:
                d.Clear()
                d.dim_value = 1
            else:
                problems.append(Problem(vi.name, "input", f"dimension {i} is dynamic ({d.dim_param or '?'}); "
                                        f"export the model with a fixed input size"))
        if dims and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            n = elements(d.dim_value for d in dims)
            if n > MAX_TENSOR_ELEMENTS:
                problems.append(Problem(vi.name, "input", f"shape {[d.dim_value for d in dims]} has {n:,} "
                                        f"elements, more than the compiler's limit of {MAX_TENSOR_ELEMENTS:,}"))


def _node_name(node: onnx.NodeProto, index: int) -> str:
    """The name the IR gives node ``index`` (its own, or ``<op_type>_<index>`` when it has none)."""
    return node.name or f"{node.op_type}_{index}"


def _check_references(g: onnx.GraphProto, where: str) -> None:
    """Every node input and graph output is a graph input, an initializer or an earlier node's output."""
    known = {vi.name for vi in g.input} | {t.name for t in g.initializer} | {""}
    written = {}
    for i, n in enumerate(g.node):
        for o in n.output:
            written.setdefault(o, i)
    for i, n in enumerate(g.node):
        for t in n.input:
            if t in known:
                continue
            what = f"{where}: node {_node_name(n, i)!r} ({n.op_type}) reads tensor {t!r}"
            if t in written:
                k = written[t]
                raise ModelLoadError(f"{what} before node {_node_name(g.node[k], k)!r} writes it: the nodes are "
                                     f"not in topological order")
            raise ModelLoadError(f"{what}, which is no graph input, initializer or node output (a missing "
                                 f"initializer?)")
        known.update(n.output)
    if not g.output:
        raise ModelLoadError(f"{where}: the graph has no outputs")
    for vi in g.output:
        if vi.name not in known:
            raise ModelLoadError(f"{where}: graph output {vi.name!r} is no graph input, initializer or node "
                                 f"output")


def _check_initializers(g: onnx.GraphProto, where: str) -> None:
    """Refuse initializers with negative dimensions or more elements than the compiler's limit."""
    for t in g.initializer:
        dims = list(t.dims)
        if any(d < 0 for d in dims):
            raise ModelLoadError(f"{where}: initializer {t.name!r} has dims {dims}; a dimension cannot be negative")
        n = elements(dims)
        if n > MAX_TENSOR_ELEMENTS:
            raise ModelLoadError(f"{where}: initializer {t.name!r} declares dims {dims} ({n:,} elements), more "
                                 f"than the compiler's limit of {MAX_TENSOR_ELEMENTS:,}")


#: Element types packed several to a byte (their data is checked by onnx alone).
_SUB_BYTE_TYPES = {"UINT4", "INT4", "FLOAT4E2M1", "UINT2", "INT2", "FLOAT6E2M3", "FLOAT6E3M2"}


def tensor_array(t: onnx.TensorProto, what: str) -> np.ndarray:
    """The array of a TensorProto; ModelLoadError (``what`` names it) when its data does not match its dims."""
    dims, n, kind = list(t.dims), elements(t.dims), dtype_name(t.data_type)
    try:
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        field = onnx.helper.tensor_dtype_to_field(t.data_type)
    except KeyError:
        raise ModelLoadError(f"{what} has {kind}, which is not an ONNX tensor element type") from None
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise ModelLoadError(f"{what}: its data is in an external file; load the model from its path so the "
                             f"data files beside it are read")
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"{what} has dims {dims}; a dimension cannot be negative")
    whole_bytes = kind not in _SUB_BYTE_TYPES and np_dtype != object
    if t.HasField("raw_data") and whole_bytes:
        need = n * np_dtype.itemsize
        if len(t.raw_data) != need:
            raise ModelLoadError(f"{what} holds {len(t.raw_data):,} bytes of data, but its dims {dims} of {kind} "
                                 f"need {need:,}")
    elif not t.HasField("raw_data") and whole_bytes:
        have = len(getattr(t, field)) // (2 if np_dtype.kind == "c" else 1)
        if have != n:
            raise ModelLoadError(f"{what} holds {have:,} values in {field}, but its dims {dims} need {n:,}")
    try:
        return numpy_helper.to_array(t)
    except Exception as exc:   # onnx raises ValueError, TypeError, KeyError for malformed tensors
        raise ModelLoadError(f"{what} ({kind}, dims {dims}) cannot be read: {quote(exc)}") from None


def _attributes(n: onnx.NodeProto, name: str, where: str) -> dict:
    """The attributes of node ``n`` as Python values (tensors as arrays, strings as text)."""
    attrs = {}
    for a in n.attribute:
        what = f"{where}: node {name!r} ({n.op_type}): attribute {a.name!r}"
        try:
            v = onnx.helper.get_attribute_value(a)
        except Exception as exc:   # an attribute without a (known) type
            raise ModelLoadError(f"{what} cannot be read: {quote(exc)}") from None
        if isinstance(v, onnx.TensorProto):
            v = tensor_array(v, f"{what}: the tensor")
        elif isinstance(v, bytes):
            try:
                v = v.decode()
            except UnicodeDecodeError:
                raise ModelLoadError(f"{what} is not UTF-8 text ({v[:40]!r})") from None
        attrs[a.name] = v
    return attrs


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
        (big if elements(t.dims) > _LIGHT_LIMIT or t.data_location == onnx.TensorProto.EXTERNAL
         else small).append(t)
    declared = {vi.name for vi in g.input}
    # IR < 4 requires every initializer to be a graph input too; onnxruntime (and this compiler) accepts models
    # whose tools left some out, so the checked copy lists them
    listed = big if model.ir_version >= 4 else big + small
    inputs = list(g.input) + [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                              for t in listed if t.name not in declared]
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


def node_names(g: onnx.GraphProto) -> list[str]:
    """The IR's name for each node of ``g``, in order: its own name, else ``<op_type>_<index>``; unique."""
    names: list[str] = []
    taken: set[str] = set()
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        while name in taken:
            name += "_"
        taken.add(name)
        names.append(name)
    return names


def load_onnx(source) -> Graph:
    """The model at ``source`` (path or ModelProto) as an IR graph of OnnxOp nodes with inferred shapes.

    Shapes keep ONNX's batch dimension here (fixed to 1); ``lift`` drops it.
    Raises ModelLoadError for unreadable files and UnsupportedModelError for
    dynamic input sizes.
    """
    model, where = _read(source)
    opset = _opset(model, where)
    g = model.graph
    _check_initializers(g, where)
    _check_references(g, where)
    init_names = {t.name for t in g.initializer}
    light = _light_model(model)
    problems: list[Problem] = []
    _fix_batch(light, init_names, problems)
    if problems:
        raise UnsupportedModelError(problems, where)
    try:
        onnx.checker.check_model(light, full_check=False)
    except onnx.checker.ValidationError as exc:
        raise ModelLoadError(f"{where}: the model is not valid ONNX: {quote(exc)}") from None
    try:
        inferred = shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception as exc:   # onnx raises InferenceError and plain RuntimeErrors
        raise ModelLoadError(f"{where}: ONNX shape inference failed: {quote(exc)}") from None

    graph = Graph(g.name or Path(where).stem)
    graph.metadata["source"] = where
    graph.metadata["opset"] = opset
    graph.metadata["model_props"] = {p.key: p.value for p in model.metadata_props}
    for t in g.initializer:
        graph.constants[t.name] = tensor_array(t, f"{where}: initializer {t.name!r}")
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        s = _shape(vi)
        if s is not None:
            graph.shapes[vi.name] = s
        if vi.type.tensor_type.elem_type:
            graph.metadata.setdefault("elem_types", {})[vi.name] = vi.type.tensor_type.elem_type
    for vi in light.graph.input:
        if vi.name in init_names:
            continue                       # old exporters list initializers as inputs too
        elem = vi.type.tensor_type.elem_type
        if elem != onnx.TensorProto.FLOAT:
            raise UnsupportedModelError([Problem(vi.name, "input", f"element type {dtype_name(elem)} is not "
                                                 f"float32")], where)
        graph.inputs.append(vi.name)
    if not graph.inputs:
        raise ModelLoadError(f"{where}: the model has no non-constant input")
    graph.outputs = [vi.name for vi in g.output]

    tensors = {t for n in g.node for t in (*n.input, *n.output)} | init_names | {vi.name for vi in g.input}
    for n, name in zip(g.node, node_names(g)):
        attrs = _attributes(n, name, where)
        proto, node_opset, inputs = n, opset, list(n.input)
        if n.domain in ("", "ai.onnx"):           # older opsets' attribute forms become the later input forms
            proto, node_opset, inputs, attrs = modernize(n, name, opset, attrs, graph.constants, tensors)
        graph.add(OnnxOp(name, inputs, list(n.output), source=n.op_type, op_type=n.op_type, attrs=attrs,
                         domain=n.domain, opset=node_opset, proto=proto))
    return graph

