"""Test doubles and helpers for ``runtime.server``: worker request handlers that crash, stall or slow down on
request, a small program to serve, and RSS readings.

The simulator workers are spawned processes that import their handler, so this
module stays light (no server, protocol or compiler imports at module level).
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


#: Seconds ``slow_score`` spends on each request before scoring it (NPU_TEST_SLOW_SECONDS in the environment
#: the workers start with overrides it).
SLOW_SECONDS = 0.05


def slow_score(session, kind: str, payload):
    """Request handler: ``crash_or_sleep``, and every scored request first takes SLOW_SECONDS more (so a burst of
    clients fills a small queue, or a request outlasts a timeout)."""
    if kind in ("tensor", "image"):
        time.sleep(float(os.environ.get("NPU_TEST_SLOW_SECONDS", SLOW_SECONDS)))
    return crash_or_sleep(session, kind, payload)


def small_program(path):
    """Compile the small ResNet the server tests serve (model name: the file's stem) to ``path``."""
    from compiler.compile import compile_model
    from compiler.models import nets

    compile_model(nets.resnet_small(), "tiny", "ms-fp9").save(path)
    return path


def rss_bytes(pid: int | None = None) -> tuple[int, int]:
    """(current, peak) resident set size of a process, in bytes (Linux /proc)."""
    fields = {}
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                fields[k] = int(v.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]
