"""Test doubles for ``runtime.server``: a worker request handler that can crash or stall on request.

The simulator workers are spawned processes that import their handler, so this
module stays light (no server, protocol or compiler imports).
"""
import os
import time

from runtime.server.workers import score


def crash_or_sleep(session, kind: str, payload):
    """Request handler: ``"crash"`` kills the worker mid-request (exit code 17), ``"sleep"`` keeps it busy
    ``payload`` seconds and answers no outputs; any other kind is scored as in production."""
    if kind == "crash":
        os._exit(17)
    if kind == "sleep":
        time.sleep(float(payload))
        return {}, {}
    return score(session, kind, payload)
