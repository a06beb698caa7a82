"""npu.sim.placement: a run's calling thread and its kernel threads on different CPUs, and put back after."""
from __future__ import annotations

import os
import threading

import numba
import pytest

from npu.sim import placement

multi_cpu = pytest.mark.skipif(
    not placement.ENABLED or len(os.sched_getaffinity(0)) < 2 or numba.get_num_threads() < 2,
    reason="needs thread affinity, two CPUs and two Numba threads")


def _pool():
    caller = threading.get_native_id()
    return caller, placement._kernel_threads(caller)


@multi_cpu
def test_the_pool_threads_are_found():
    caller, others = _pool()
    assert len(others) == numba.get_num_threads() - 1
    assert caller not in others and len(set(others)) == len(others)
    assert all(os.path.isdir(f"/proc/self/task/{tid}") for tid in others)


@multi_cpu
def test_inside_a_run_the_caller_and_kernel_threads_are_apart_and_put_back_after():
    caller, others = _pool()
    before = {tid: os.sched_getaffinity(tid) for tid in [caller] + others}
    with placement.threads_apart():
        mine = os.sched_getaffinity(0)
        assert len(mine) == 1
        for tid in others:
            assert not (os.sched_getaffinity(tid) & mine) and os.sched_getaffinity(tid)
    assert {tid: os.sched_getaffinity(tid) for tid in [caller] + others} == before


@multi_cpu
def test_affinities_are_put_back_when_the_run_fails():
    before = os.sched_getaffinity(0)
    with pytest.raises(RuntimeError):
        with placement.threads_apart():
            raise RuntimeError("simulated failure")
    assert os.sched_getaffinity(0) == before
    assert placement._active == 0


@multi_cpu
def test_a_second_run_at_the_same_time_pins_nothing():
    """Two calling threads pinned to the CPU they share would stay there: only the first run pins."""
    inside, release, seen = threading.Event(), threading.Event(), {}

    def first():
        with placement.threads_apart():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=first)
    t.start()
    try:
        assert inside.wait(10)
        before = os.sched_getaffinity(0)
        with placement.threads_apart():
            seen["during"] = os.sched_getaffinity(0)
        assert seen["during"] == before
    finally:
        release.set()
        t.join(10)
    assert placement._active == 0


def test_turned_off_it_changes_nothing(monkeypatch):
    monkeypatch.setattr(placement, "ENABLED", False)
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    with placement.threads_apart():
        if before is not None:
            assert os.sched_getaffinity(0) == before
