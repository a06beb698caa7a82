"""Running a program again: the simulator keeps its decoded form and per-chain address arrays.

A serving session runs one program many times; later runs must give the
same memory and statistics as the first, and a program is only reused for
the same words, regions and machine.
"""
import numpy as np
import pytest

from compiler.compile import compile_model
from npu.hostio import dram_image_with_inputs
from compiler.models import nets
from npu.sim import CycleBudgetExceeded, clear_program_cache, simulate


def _compiled():
    model = nets.resnet_small()
    compiled = compile_model(model, "tiny", "ms-fp9")
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    return compiled, dram_image_with_inputs(compiled.program, {"data": x})


def test_repeated_runs_reuse_the_decoded_program_and_agree():
    compiled, image = _compiled()
    clear_program_cache()
    first = simulate(compiled.program, compiled.config, dram=image)
    again = simulate(compiled.program, compiled.config, dram=image)
    assert again.program is first.program                     # decoded once
    assert all(op.derived for op in first.program.ops if hasattr(op, "derived") and op.mbase is not None)
    assert np.array_equal(first.machine.dram.data, again.machine.dram.data)
    assert first.stats.total_cycles == again.stats.total_cycles
    clear_program_cache()
    fresh = simulate(compiled.program, compiled.config, dram=image)
    assert fresh.program is not first.program
    assert np.array_equal(first.machine.dram.data, fresh.machine.dram.data)


def test_a_rerun_gives_its_own_copy_of_the_statistics_collected_once():
    """The statistics of a replayed placement are collected when it is placed; each run gets an independent
    copy equal to collecting the schedule afresh, so changing one run's statistics changes no other's."""
    from npu.sim.stats import collect

    compiled, image = _compiled()
    clear_program_cache()
    first = simulate(compiled.program, compiled.config, dram=image)
    again = simulate(compiled.program, compiled.config, dram=image)
    prog = again.program
    fresh = collect(again.schedule, compiled.config, prog.instruction_count, prog.regions)
    assert again.stats == fresh and first.stats == fresh
    assert again.stats is not first.stats and again.stats.regions[0] is not first.stats.regions[0]
    assert len(fresh.regions) > 3 and fresh.stalls
    again.stats.regions[0].macs += 1
    again.stats.stalls["extra"] = 1
    again.stats.mvu_busy += 1
    third = simulate(compiled.program, compiled.config, dram=image)
    assert third.stats == fresh and first.stats == fresh


def test_a_program_is_reused_only_on_the_same_machine():
    compiled, image = _compiled()
    a = simulate(compiled.program, compiled.config, dram=image, mode="timing")
    other = compiled.config.replace(tiles=1)
    b = simulate(compiled.program, other, dram=image, mode="timing")
    assert b.program is not a.program
    assert b.stats.total_cycles > a.stats.total_cycles        # half the tile engines


def test_a_rerun_replays_the_placement_and_stops_at_the_same_op_under_a_cycle_budget():
    """A full run keeps its placement (SimProgram.timeline); a rerun replays it: the same ops issued in the same
    order, and the same CycleBudgetExceeded before the same op as a fresh placement, halt included."""
    compiled, image = _compiled()
    clear_program_cache()
    first = simulate(compiled.program, compiled.config, dram=image)
    total = first.stats.total_cycles
    ends = sorted({e.end for e in first.schedule.entries})
    issued = []
    again = simulate(compiled.program, compiled.config, dram=image, observe=lambda op, m: issued.append(op.index))
    assert again.schedule is first.schedule and again.program.timeline is not None
    assert issued == [e.op.index for e in first.schedule.entries[:-1]]       # every op but the halt, in order
    for budget in (ends[0] - 1, ends[len(ends) // 3], ends[-2], total - 1):
        outcomes = []
        for placed in (False, True):
            clear_program_cache()
            if placed:
                simulate(compiled.program, compiled.config, dram=image)          # keeps the placement
            seen = []
            with pytest.raises(CycleBudgetExceeded) as info:
                simulate(compiled.program, compiled.config, dram=image, cycle_budget=budget,
                         observe=lambda op, m: seen.append(op.index))
            outcomes.append((str(info.value), info.value.index, seen))
        assert outcomes[0] == outcomes[1], budget
    assert "halt" in outcomes[-1][0]
