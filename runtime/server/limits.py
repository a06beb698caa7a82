"""Every limit of ``npu serve`` in one place: its default, and the ``npu serve`` flag that sets it.

docs/architecture.md ("Limits and safe serving") lists the same table; keep the two together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """The server's limits.  Sizes are bytes, times seconds."""

    #: ``--max-body`` (MiB): an HTTP request body, and a gRPC request message.  Checked against the
    #: Content-Length before the body is read: a larger body gets 413, a larger message RESOURCE_EXHAUSTED.
    max_body: int = 64 * MiB
    #: ``--max-json`` (MiB): the JSON part of an HTTP inference request (the whole body without the binary
    #: tensor extension).  None: max(8 MiB, 32 bytes per element of the model's input tensor), at most
    #: ``max_body``.  Checked before the body is read (413); larger tensors go in the binary extension.
    max_json: int | None = None
    #: ``--body-memory`` (MiB): request bodies the HTTP endpoint holds at once (their Content-Lengths added up,
    #: reserved before reading).  A request that would pass it gets 503 at once.  At least ``max_body``.
    body_memory: int = 256 * MiB
    #: ``--read-timeout`` (s): a request body that stalls this long (no data) gets 408 and its connection is
    #: closed.  A client waiting quietly for its answer is not cut.
    read_timeout: float = 10.0
    #: ``--body-timeout`` (s): the whole request body must arrive within this time (else 408, connection closed).
    body_timeout: float = 60.0
    #: ``--keep-alive`` (s): an idle connection is closed after this long; a new connection's request headers
    #: must have arrived within it too.
    keep_alive: float = 5.0
    #: ``--backlog``: connections the kernel holds before the server accepts them (listen backlog; the
    #: kernel caps it at net.core.somaxconn).  The server accepts at once and answers an overload with 503.
    backlog: int = 1024
    #: Request bodies parsed (JSON decoding, tensor conversion) at once; the others wait, their bodies held
    #: within ``body_memory``.
    parse_threads: int = 2
    #: ``--grpc-calls``: gRPC calls in progress at once; more get RESOURCE_EXHAUSTED before their message is
    #: read.  gRPC reads a whole message before the server sees it, so this times ``max_body`` bounds the
    #: memory gRPC messages take.  None: queue size + workers + 4 (every call that can be queued or running,
    #: and a few for health and metadata).
    grpc_calls: int | None = None

    def __post_init__(self):
        for name in ("max_body", "body_memory", "backlog", "parse_threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"limit {name} must be a positive integer, not {v!r}")
        for name in ("max_json", "grpc_calls"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"limit {name} must be a positive integer or None, not {v!r}")
        for name in ("read_timeout", "body_timeout", "keep_alive"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"limit {name} must be a positive number of seconds, not {v!r}")
        if self.body_memory < self.max_body:
            object.__setattr__(self, "body_memory", self.max_body)

    def json_limit(self, input_elements: int) -> int:
        """The JSON part's limit for a model whose input tensor has ``input_elements`` elements."""
        if self.max_json is not None:
            return min(self.max_json, self.max_body)
        return min(self.max_body, max(8 * MiB, 32 * input_elements))

    def grpc_call_limit(self, queue_size: int, workers: int) -> int:
        """gRPC calls served at once."""
        if self.grpc_calls is not None:
            return self.grpc_calls
        return queue_size + workers + 4

    def with_(self, **changes) -> "Limits":
        """A copy with some limits changed (None values are left out)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
