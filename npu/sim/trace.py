"""Chrome trace / Perfetto JSON export of a schedule: one track per unit."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import NPUConfig
from .program import ChainOp, DmaOp
from .timing import Schedule

TRACKS = {"load DMA": 1, "MVU": 2, "MFU": 3, "store DMA": 4, "control": 5}


def _label(op) -> str:
    if isinstance(op, ChainOp):
        kind = "mv_mul chain" if op.mbase is not None else f"vector chain ({op.reduce})"
        return f"{kind} #{op.index}"
    return f"{getattr(op, 'mnemonic', '?')} #{op.index}"


def trace_events(schedule: Schedule, config: NPUConfig, regions=()) -> list[dict]:
    """Trace events (microseconds at the configured clock) for every scheduled op."""
    us = 1.0 / config.clock_mhz
    events = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": f"NPU {config.name}"}}]
    for name, tid in TRACKS.items():
        events.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": name}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": tid, "args": {"sort_index": tid}})
    region_of = {}
    for rname, first, last in regions:
        for i in range(first, last + 1):
            region_of[i] = rname
    for e in schedule.entries:
        op = e.op
        args = {"instruction": op.index, "cycles": e.end - e.start, "start_cycle": e.start}
        if op.index in region_of:
            args["region"] = region_of[op.index]
        if e.stalls:
            args["stall_cycles"] = e.stall
            args["stalls"] = dict(e.stalls)
        if e.cost.macs:
            args["macs"] = e.cost.macs
        if e.cost.dram_bytes:
            args["bytes"] = e.cost.dram_bytes
        if isinstance(op, DmaOp):
            tids = [TRACKS["store DMA" if op.mnemonic == "v_store" else "load DMA"]]
        elif isinstance(op, ChainOp):
            tids = ([TRACKS["MVU"]] if op.mbase is not None else []) + [TRACKS["MFU"]]
        else:
            tids = [TRACKS["control"]]
        for tid in tids:
            events.append({"name": _label(op), "cat": region_of.get(op.index, "program"), "ph": "X", "pid": 1,
                           "tid": tid, "ts": e.start * us, "dur": max(e.end - e.start, 1) * us, "args": args})
    return events


def write_trace(path: str | Path, schedule: Schedule, config: NPUConfig, regions=()) -> None:
    """Write a Chrome trace / Perfetto JSON file."""
    doc = {"traceEvents": trace_events(schedule, config, regions), "displayTimeUnit": "ns",
           "otherData": {"machine": config.name, "clock_mhz": config.clock_mhz,
                         "total_cycles": schedule.total_cycles}}
    Path(path).write_text(json.dumps(doc))
