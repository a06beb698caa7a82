"""Vector-memory planning: buffers alive together never overlap, and the plan reuses dead space."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import MemoryPlanError
from compiler.memory import Buffer, plan_memory


@st.composite
def buffer_sets(draw):
    n = draw(st.integers(1, 12))
    out = []
    for i in range(n):
        first = draw(st.integers(0, 10))
        out.append(Buffer(f"t{i}", draw(st.integers(1, 50)), first, first + draw(st.integers(0, 6))))
    return out


@settings(max_examples=300, deadline=None)
@given(buffer_sets(), st.integers(0, 5))
def test_live_buffers_never_overlap(buffers, reserved):
    plan = plan_memory(buffers, capacity=10_000, reserved=reserved)
    for a in buffers:
        assert plan[a.name] >= reserved
        for b in buffers:
            if a is b or a.last < b.first or b.last < a.first:
                continue
            assert plan[a.name] + a.size <= plan[b.name] or plan[b.name] + b.size <= plan[a.name], (a, b)


def test_dead_buffers_are_reused():
    chain = [Buffer("x", 100, 0, 1), Buffer("y", 100, 1, 2), Buffer("z", 100, 2, 3)]
    plan = plan_memory(chain, capacity=200)
    assert plan["z"] == plan["x"]                     # x is dead when z is born
    assert max(plan.values()) + 100 <= 200


def test_too_small_memory_names_the_step_and_buffers():
    with pytest.raises(MemoryPlanError, match=r"step 1: buffers x, y need 200 vectors together, more than the 150"):
        plan_memory([Buffer("x", 100, 0, 1), Buffer("y", 100, 1, 2)], capacity=150)
    with pytest.raises(ValueError, match="not valid"):
        plan_memory([Buffer("bad", 0, 0, 1)], capacity=10)
