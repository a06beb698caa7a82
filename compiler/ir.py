"""The compiler's IR: a networkx DAG of typed nodes over statically shaped tensors.

Tensors are named; activations have shape (C, H, W) or (C,) (batch 1, the
batch dimension dropped).  Constants (weights, shape vectors) live in
``Graph.constants``.  Nodes are typed dataclasses; ``OnnxOp`` holds an
operator the front end only keeps for constant folding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import networkx as nx
import numpy as np

from .errors import Problem


@dataclass
class Node:
    """Base of every IR node: a name, input and output tensor names, and the ONNX op it came from."""

    name: str
    inputs: list[str]
    outputs: list[str]
    source: str = ""              # ONNX op_type (or fused chain) this node came from

    @property
    def kind(self) -> str:
        """The node's type name, e.g. 'Conv'."""
        return type(self).__name__


@dataclass
class OnnxOp(Node):
    """An ONNX operator kept verbatim; only legal if constant folding removes it."""

    op_type: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    opset: int = 0
    proto: Any = None             # the onnx.NodeProto, for evaluation by onnx.reference


@dataclass
class Conv(Node):
    """Convolution (Gemm is a 1x1 or whole-image convolution); optional bias, residual add and ReLU.

    ``weight`` is (Cout, Cin / groups, kh, kw) float32; ``pads`` is (top,
    left, bottom, right).  With ``groups`` G > 1, output channel o reads
    only the input channels of its group ``o // (Cout / G)`` (depthwise
    when G = Cin).  With ``residual`` the second input tensor is added after
    the bias, then ReLU if ``relu``, then min(., ``clip_max``) if set (ReLU6).

    ``dilation`` (dh, dw) spaces the kernel's taps: tap (ky, kx) of output
    pixel (oy, ox) reads input row ``stride_h*oy + dh*ky - top`` and column
    ``stride_w*ox + dw*kx - left`` (ONNX's ``dilations``), so the window
    spans ``extent`` = (dh*(kh-1)+1, dw*(kw-1)+1) input pixels.  The weight
    and the MAC count are those of the kh x kw kernel.

    With ``column_phases`` P > 1 the weight is (P*Cout, Cin, kh, kw): output
    column ``P*m + p`` is phase p's weights applied to the window at input
    column ``m`` (stride 1), so P neighbouring output columns share one input
    column (the strip-packed first layer, ``compiler.passes.pack_input``).
    ``model_macs`` keeps the model's own MAC count when such a rewrite
    changes the weight's shape.

    ``weight_format`` / ``activation_format`` name the block formats its
    chains multiply in (mixed precision, ``compile_model(layer_formats=...)``);
    None means the machine's own pair (MVU format mode 0).
    """

    weight: np.ndarray = None
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    relu: bool = False
    residual: bool = False
    column_phases: int = 1
    model_macs: int | None = None
    groups: int = 1
    clip_max: float | None = None
    weight_format: str | None = None
    activation_format: str | None = None
    dilation: tuple[int, int] = (1, 1)

    @property
    def in_channels(self) -> int:
        """Input channels the convolution reads (all groups)."""
        return self.weight.shape[1] * self.groups

    @property
    def kernel(self) -> tuple[int, int]:
        """(kh, kw)."""
        return tuple(self.weight.shape[2:])

    @property
    def extent(self) -> tuple[int, int]:
        """(rows, columns) of input pixels one window spans: the kernel with its dilation, d*(k-1)+1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    @property
    def out_channels(self) -> int:
        """Output channels (Cout, whatever the number of column phases)."""
        return self.weight.shape[0] // self.column_phases

    def phase_weight(self, p: int) -> np.ndarray:
        """The (Cout, Cin, kh, kw) weights of column phase ``p``."""
        c = self.out_channels
        return self.weight[p * c:(p + 1) * c]

    def macs(self, out_hw: tuple[int, int]) -> int:
        """Multiply-accumulates of the layer for an output of ``out_hw`` pixels, as the model counts them."""
        if self.model_macs is not None:
            return self.model_macs
        cout, cin, kh, kw = self.weight.shape
        return int(cout * cin * kh * kw * out_hw[0] * out_hw[1])


@dataclass
class Pool(Node):
    """Max or average pooling (average counts padding, as ONNX's count_include_pad=1)."""

    mode: str = "max"
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    count_include_pad: bool = True


@dataclass
class GlobalPool(Node):
    """Global average (or max) pooling: (C, H, W) -> (C, 1, 1)."""

    mode: str = "avg"


@dataclass
class BatchNorm(Node):
    """Inference BatchNormalization, kept as per-channel scale and shift until folded."""

    scale: np.ndarray = None
    shift: np.ndarray = None


@dataclass
class Affine(Node):
    """Per-channel y = x * scale + shift, optionally followed by ReLU (a BatchNorm with no Conv before it).

    ``clip_max`` then takes min(., clip_max) (ReLU6), as on Conv and Add.
    """

    scale: np.ndarray = None
    shift: np.ndarray = None
    relu: bool = False
    clip_max: float | None = None


@dataclass
class Add(Node):
    """Elementwise sum of two activations (residual join), optionally followed by ReLU (and ``clip_max``)."""

    relu: bool = False
    clip_max: float | None = None


@dataclass
class Clip(Node):
    """Elementwise min(max(x, lo), hi); a bound of None is absent (ONNX Clip with constant bounds)."""

    lo: float | None = None
    hi: float | None = None


@dataclass
class Pad(Node):
    """Zero padding of the spatial dimensions: ``pads`` is (top, left, bottom, right), all >= 0."""

    pads: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass
class Relu(Node):
    """Elementwise max(x, 0)."""


@dataclass
class Concat(Node):
    """Channel concatenation of (C_i, H, W) activations."""


@dataclass
class Flatten(Node):
    """(C, H, W) -> (C*H*W,) in ONNX (channel-major) order; also Reshape to a vector."""


@dataclass
class Softmax(Node):
    """Softmax over the class vector (done on the host after the NPU)."""


@dataclass
class Identity(Node):
    """Identity or inference-mode Dropout: removed by a pass."""


class Graph:
    """Nodes in a networkx DiGraph (edge producer -> consumer), plus tensor shapes and constants."""

    def __init__(self, name: str = "model"):
        self.name = name
        self.dag = nx.DiGraph()
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.metadata: dict[str, Any] = {}
        self.problems: list[Problem] = []     # found by the front end, reported by the legality check
        self._order = 0

    # --- construction -------------------------------------------------------------------------
    def add(self, node: Node) -> Node:
        """Insert a node and connect it to the producers of its inputs and consumers of its outputs."""
        if node.name in self.dag:
            raise ValueError(f"node name {node.name!r} is used twice")
        self.dag.add_node(node.name, node=node, order=self._order)
        self._order += 1
        self._connect(node)
        return node

    def _connect(self, node: Node) -> None:
        for t in node.inputs:
            p = self.producer(t)
            if p is not None and p.name != node.name:
                self.dag.add_edge(p.name, node.name)
        for t in node.outputs:
            for c in self.consumers(t):
                if c.name != node.name:
                    self.dag.add_edge(node.name, c.name)

    def remove(self, name: str) -> None:
        """Delete a node (its output tensors keep their shapes until no longer referenced)."""
        self.dag.remove_node(name)

    def replace(self, old: str, node: Node) -> Node:
        """Put ``node`` where node ``old`` was (same position in the order)."""
        order = self.dag.nodes[old]["order"]
        self.dag.remove_node(old)
        self.dag.add_node(node.name, node=node, order=order)
        self._connect(node)
        return node

    def rename_tensor(self, old: str, new: str) -> None:
        """Make every consumer of tensor ``old`` (and the graph outputs) read ``new`` instead."""
        for n in self.nodes():
            n.inputs = [new if t == old else t for t in n.inputs]
        self.outputs = [new if t == old else t for t in self.outputs]
        self.rebuild_edges()

    def rebuild_edges(self) -> None:
        """Recompute every edge from the nodes' inputs and outputs."""
        self.dag.remove_edges_from(list(self.dag.edges))
        producers = {t: n.name for n in self.nodes() for t in n.outputs}
        for n in self.nodes():
            for t in n.inputs:
                if t in producers:
                    self.dag.add_edge(producers[t], n.name)

    # --- queries ------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        """The node called ``name``."""
        return self.dag.nodes[name]["node"]

    def nodes(self) -> list[Node]:
        """All nodes in insertion order (not necessarily topological after rewrites)."""
        items = sorted(self.dag.nodes(data=True), key=lambda kv: kv[1]["order"])
        return [d["node"] for _, d in items]

    def topological(self) -> Iterator[Node]:
        """Nodes in a deterministic topological order (ties broken by insertion order)."""
        order = {n: d["order"] for n, d in self.dag.nodes(data=True)}
        for name in nx.lexicographical_topological_sort(self.dag, key=lambda n: order[n]):
            yield self.node(name)

    def producer(self, tensor: str) -> Node | None:
        """The node writing ``tensor`` (None for graph inputs and constants)."""
        for _, d in self.dag.nodes(data=True):
            if tensor in d["node"].outputs:
                return d["node"]
        return None

    def consumers(self, tensor: str) -> list[Node]:
        """Nodes reading ``tensor``, in insertion order."""
        return [n for n in self.nodes() if tensor in n.inputs]

    def is_constant(self, tensor: str) -> bool:
        """Whether ``tensor`` is a known constant."""
        return tensor in self.constants

    def __len__(self) -> int:
        return self.dag.number_of_nodes()

    def summary(self) -> str:
        """One line per node: name, kind, inputs -> outputs with shapes."""
        lines = []
        for n in self.topological():
            ins = ", ".join(f"{t}{list(self.shapes.get(t, ()))}" for t in n.inputs)
            outs = ", ".join(f"{t}{list(self.shapes.get(t, ()))}" for t in n.outputs)
            lines.append(f"{n.name:<32} {n.kind:<10} {ins} -> {outs}")
        return "\n".join(lines)
