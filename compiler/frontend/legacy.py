"""Older opsets' operator forms, rewritten to the current form when the model is read (one home for them).

Before opset 13, Unsqueeze and Squeeze take ``axes`` as an attribute;
before opset 11, Pad takes ``pads``/``value`` and Clip ``min``/``max`` as
attributes; before opset 5, Reshape takes ``shape`` as an attribute.  Later
opsets pass these as (constant) inputs.  The loader rewrites every such node
into the later form, with the attribute values as new constants, so
constant folding (onnx's reference evaluator only implements the later
forms), lifting, Pad folding and Clip fusion see one form only.  The
rewritten node's ``opset`` is the version that introduced the form.  A node
whose attributes do not have the expected types is left as it is: the pass
that reads it reports the problem.
"""
from __future__ import annotations

import numpy as np
import onnx


def _int_list(v) -> list[int] | None:
    if isinstance(v, (list, tuple)) and all(isinstance(x, (int, np.integer)) for x in v):
        return [int(x) for x in v]
    return None


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else None


def modern_form(op_type: str, opset: int, inputs: list[str], attrs: dict):
    """``(new_opset, inputs_to_add, attrs_to_keep)`` for an older form, or None when ``op_type`` is current.

    ``inputs_to_add`` are ``(position, suffix, array)``: constant inputs to
    insert (``array`` None: an empty, omitted input).
    """
    if op_type in ("Unsqueeze", "Squeeze") and opset < 13 and "axes" in attrs:
        axes = _int_list(attrs["axes"])
        if axes is None or len(inputs) != 1:
            return None
        rest = {k: v for k, v in attrs.items() if k != "axes"}
        return 13, [(1, "axes", np.array(axes, np.int64))], rest
    if op_type == "Reshape" and opset < 5 and "shape" in attrs:
        shape = _int_list(attrs["shape"])
        if shape is None or len(inputs) != 1:
            return None
        rest = {k: v for k, v in attrs.items() if k not in ("shape", "consumed_inputs")}
        return 5, [(1, "shape", np.array(shape, np.int64))], rest
    if op_type == "Pad" and opset < 11:
        pads = _int_list(attrs.get("pads"))
        value = _number(attrs.get("value", 0.0))
        if pads is None or value is None or len(inputs) != 1:
            return None
        rest = {k: v for k, v in attrs.items() if k not in ("pads", "value")}
        return 11, [(1, "pads", np.array(pads, np.int64)), (2, "value", np.array(value, np.float32))], rest
    if op_type == "Clip" and opset < 11:
        lo, hi = attrs.get("min"), attrs.get("max")
        if (lo is not None and _number(lo) is None) or (hi is not None and _number(hi) is None) or len(inputs) != 1:
            return None
        rest = {k: v for k, v in attrs.items() if k not in ("min", "max")}
        add = [(1, "min", None if lo is None else np.array(_number(lo), np.float32)),
               (2, "max", None if hi is None else np.array(_number(hi), np.float32))]
        return 11, add, rest
    return None


def modernize(proto: onnx.NodeProto, name: str, opset: int, attrs: dict, constants: dict,
              taken: set[str]) -> tuple[onnx.NodeProto, int, list[str], dict]:
    """``proto`` in its current form: ``(proto, opset, inputs, attrs)``; new constants go into ``constants``.

    ``taken`` holds the tensor names already in use (new names are added to it).
    """
    inputs = list(proto.input)
    form = modern_form(proto.op_type, opset, inputs, attrs)
    if form is None:
        return proto, opset, inputs, attrs
    new_opset, add, rest = form
    for pos, suffix, value in add:
        t = ""
        if value is not None:
            t = f"{name}::{suffix}"
            while t in taken:
                t += "_"
            taken.add(t)
            constants[t] = value
        inputs[pos:pos] = [t]
    while inputs and not inputs[-1]:
        inputs.pop()
    kept = [a for a in proto.attribute if a.name in rest]
    new = onnx.NodeProto()
    new.CopyFrom(proto)
    del new.input[:]
    new.input.extend(inputs)
    del new.attribute[:]
    new.attribute.extend(kept)
    return new, new_opset, inputs, rest
