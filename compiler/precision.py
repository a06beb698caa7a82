"""Precisions: the named format sets, per-layer formats, and the configs they make.

A precision names the machine's MVU weight and activation formats and its
MFU format; ``layer_formats`` gives single layers their own MVU formats
(mixed precision), which the machine holds as extra format modes.
"""
from __future__ import annotations

import json

from npu.config import MVU_FORMATS, ConfigError, NPUConfig, load_config
from npu.numerics.formats import BlockFormat, FormatError, get_format

from .errors import CompileError
from .ir import Conv, Graph

#: Named precisions: (weight format, activation format, MFU format).
PRECISIONS: dict[str, tuple[str, str, str]] = {
    "ms-fp8": ("ms-fp8", "ms-fp8", "fp16"),
    "ms-fp9": ("ms-fp9", "ms-fp9", "fp16"),
    "msfp12": ("msfp12", "msfp12", "fp16"),
    "mxint8": ("mxint8", "mxint8", "fp16"),
    "mxfp8": ("mxfp8_e4m3", "mxfp8_e4m3", "fp16"),
    "mxfp6": ("mxfp6_e2m3", "mxfp6_e2m3", "fp16"),
    "mxfp4": ("mxfp4_e2m1", "mxfp4_e2m1", "fp16"),
    "wide": ("bfp24", "bfp24", "fp32"),
}


def layer_format_pair(name: str, what: str = "format") -> tuple[str, str]:
    """(weight format, activation format) of a precision name of :data:`PRECISIONS` or a block-format name
    (both formats alike); CompileError naming ``what`` if it is neither (the MFU part of a precision is
    the machine's own: a layer changes only its MVU formats)."""
    if name in PRECISIONS:
        return PRECISIONS[name][0], PRECISIONS[name][1]
    try:
        fmt = get_format(name)
    except FormatError:
        fmt = None
    if not isinstance(fmt, BlockFormat):
        raise CompileError(f"{what} {name!r} is neither a precision ({', '.join(PRECISIONS)}) nor a block format "
                           f"({', '.join(MVU_FORMATS)})")
    return fmt.name, fmt.name


def config_for_layer_formats(cfg: NPUConfig, layer_formats: dict | None) -> NPUConfig:
    """``cfg`` with ``extra_formats`` extended by the formats ``layer_formats`` needs and it lacks.

    A layer whose pair is the machine's own (mode 0) or one of its modes needs nothing; the other formats
    are appended in the format table's order (stable whatever the map's order).
    """
    if not layer_formats:
        return cfg
    needed = []
    for layer, value in layer_formats.items():
        pair = layer_format_pair(value, f"layer {layer!r}: format")
        if cfg.mode_of(*pair) is not None:
            continue
        if pair[0] != pair[1]:
            raise CompileError(f"layer {layer!r}: format {value!r} pairs weights {pair[0]} with activations "
                               f"{pair[1]}; an extra MVU mode uses one format for both")
        if pair[0] not in needed:
            needed.append(pair[0])
    if not needed:
        return cfg
    needed.sort(key=MVU_FORMATS.index)
    try:
        return cfg.replace(extra_formats=cfg.extra_formats + tuple(needed))
    except ConfigError as exc:
        raise CompileError(f"layer formats need MVU modes for {', '.join(needed)}: {exc}") from None


def apply_layer_formats(graph: Graph, cfg: NPUConfig, layer_formats: dict | None) -> None:
    """Set each named Conv's weight/activation formats; CompileError naming an unknown or non-MVU layer."""
    if not layer_formats:
        return
    convs = {nd.name: nd for nd in graph.nodes() if isinstance(nd, Conv)}
    others = {nd.name for nd in graph.nodes()} - set(convs)
    for layer, value in layer_formats.items():
        nd = convs.get(layer)
        if nd is None:
            why = "has no matrix-vector product" if layer in others else "is no layer of the compiled graph"
            raise CompileError(f"layer_formats: {layer!r} {why}; layers with an MVU format: "
                               f"{', '.join(convs) or 'none'}")
        nd.weight_format, nd.activation_format = layer_format_pair(value, f"layer {layer!r}: format")


def read_precision_file(path) -> tuple[str | None, dict[str, str]]:
    """(default precision, layer formats) of a JSON file ``{"default": "ms-fp9", "layers": {"name": "mxint8"}}``.

    Both keys are optional; ``default`` is a precision of :data:`PRECISIONS`,
    each layer's value a precision or a block-format name.  CompileError
    names the file and the offending key.
    """
    from pathlib import Path

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise CompileError(f"{path}: cannot read the precision file: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CompileError(f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise CompileError(f"{path}: a precision file is a JSON object with keys \"default\" and \"layers\"")
    unknown = sorted(set(data) - {"default", "layers"})
    if unknown:
        raise CompileError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; the keys are \"default\" and "
                           f"\"layers\"")
    default = data.get("default")
    if default is not None and (not isinstance(default, str) or default not in PRECISIONS):
        raise CompileError(f"{path}: key \"default\": {default!r} is no precision; choose one of "
                           f"{', '.join(PRECISIONS)}")
    layers = data.get("layers", {})
    if not isinstance(layers, dict):
        raise CompileError(f"{path}: key \"layers\" must be an object mapping layer names to formats")
    for name, value in layers.items():
        if not isinstance(value, str):
            raise CompileError(f"{path}: key \"layers\".{name!r}: {value!r} is not a format name")
        try:
            layer_format_pair(value, "format")
        except CompileError as exc:
            raise CompileError(f"{path}: key \"layers\".{name!r}: {exc}") from None
    return default, dict(layers)


def resolve_config(config, precision: str | None) -> NPUConfig:
    """A config (preset name, JSON path or NPUConfig) with ``precision`` applied."""
    cfg = config if isinstance(config, NPUConfig) else load_config(config)
    if precision is None:
        return cfg
    if precision not in PRECISIONS:
        raise CompileError(f"precision {precision!r} unknown; choose one of {', '.join(PRECISIONS)}")
    w, a, m = PRECISIONS[precision]
    return cfg.replace(weight_format=w, activation_format=a, mfu_format=m)
