"""Program-level rules: chain grammar, MFU capacity, tokens, address extents for a config."""
from __future__ import annotations

from ..config import NPUConfig
from ..numerics.pack import tile_nbytes
from .errors import IsaError
from .table import MFU_SLOT_NAMES, MFU_SLOTS, REDUCE_MODES

CHAIN_PARTS = {"v_rd", "mv_mul", "v_wr"} | set(MFU_SLOTS)


def mfu_assignment(ops: list[str], mfus: int | None = None) -> list[tuple[int, int]]:
    """(MFU index, slot) of each MFU op in order; IsaError if more than ``mfus`` MFUs are needed."""
    out, unit, nxt = [], 0, 0
    for i, name in enumerate(ops):
        slot = MFU_SLOTS[name]
        if slot < nxt:
            unit += 1
        nxt = slot + 1
        if mfus is not None and unit >= mfus:
            raise IsaError(f"MFU op {i + 1} ({name}) needs MFU {unit + 1} but the machine has {mfus}; "
                           f"each MFU runs {' -> '.join(MFU_SLOT_NAMES)} once")
        out.append((unit, slot))
    return out


def instruction_groups(instrs):
    """Yield (index of the first instruction, group) for each unit of a program, in order.

    A chain's group runs from `chain` through its parts (v_rd, mv_mul, MFU ops, v_wr) to `end_chain`;
    every other instruction, a chain part outside a chain too, is a group of its own.  A chain whose
    parts are followed by anything but `end_chain` is not closed: its group stops before that
    instruction (so it does not end with `end_chain`) and the walk goes on from there.
    """
    n = len(instrs)
    i = 0
    while i < n:
        if instrs[i].spec.mnemonic == "chain":
            j = i + 1
            while j < n and instrs[j].spec.mnemonic in CHAIN_PARTS:
                j += 1
            if j < n and instrs[j].spec.mnemonic == "end_chain":
                j += 1
            yield i, instrs[i:j]
            i = j
        else:
            yield i, instrs[i:i + 1]
            i += 1


def address_extent(base: int, terms) -> tuple[int, int]:
    """Lowest and highest address of ``base + sum(i_k * stride_k)`` over ``i_k < count_k`` for (stride, count) terms."""
    lo = hi = base
    for stride, count in terms:
        span = stride * (count - 1)
        lo += min(0, span)
        hi += max(0, span)
    return lo, hi


class _Checker:
    def __init__(self, config: NPUConfig | None, lines, source: str | None):
        self.config = config
        self.lines = lines
        self.source = source
        self.errors: list[str] = []
        self.first: int | None = None

    def err(self, index: int, msg: str) -> None:
        self.first = index if self.first is None else min(self.first, index)
        if self.lines and index < len(self.lines):
            self.errors.append(f"{self.source or '<program>'}:{self.lines[index]}: instruction {index}: {msg}")
        else:
            self.errors.append(f"instruction {index}: {msg}")

    def mode(self, index, name, fmt) -> bool:
        """Whether ``fmt`` is one of the config's MVU format modes (an error naming the instruction if not)."""
        if self.config is None:
            return True
        modes = len(self.config.mvu_modes)
        if fmt >= modes:
            self.err(index, f"{name}: field fmt={fmt} but {self.config.name} has MVU format modes 0..{modes - 1} "
                            f"({', '.join(f'{i}={w}/{a}' for i, (w, a) in enumerate(self.config.mvu_modes))})")
            return False
        return True

    def vrange(self, index, name, field, lo, hi):
        if self.config is None:
            return
        depth = self.config.vrf_depth
        if lo < 0 or hi >= depth:
            self.err(index, f"{name}: field {field} reaches vector addresses {lo}..{hi}, outside the "
                            f"vector memory 0..{depth - 1} of {self.config.name}")


def validate_program(instrs, config: NPUConfig | None = None, lines=None, source: str | None = None) -> None:
    """Raise IsaError listing every rule the program breaks (see docs/isa.md).

    With ``lines`` (source line of each instruction) messages start with
    ``source:line:``; with a ``config`` addresses are checked against its memories.
    """
    ck = _Checker(config, lines, source)
    n = len(instrs)
    if n == 0 or instrs[-1].spec.mnemonic != "halt":
        ck.err(max(n - 1, 0), "the program must end with halt")
    for i, group in instruction_groups(instrs):
        name = group[0].spec.mnemonic
        if name == "halt" and i != n - 1:
            ck.err(i, "halt must be the last instruction")
        if name == "chain":
            if group[-1].spec.mnemonic == "end_chain":
                _check_chain(ck, i, group)
            else:
                j = i + len(group)
                ck.err(i, "chain is not closed by end_chain" + (
                    f" (instruction {j} is {instrs[j].spec.mnemonic})" if j < n else ""))
        elif name in CHAIN_PARTS or name == "end_chain":
            ck.err(i, f"{name} outside a chain (a chain starts with `chain`)")
        else:
            _check_plain(ck, i, group[0])
    if ck.errors:
        raise IsaError("\n".join(ck.errors), ck.first)


def _check_plain(ck: _Checker, i: int, ins) -> None:
    cfg, f, name = ck.config, ins.fields, ins.spec.mnemonic
    if cfg is None:
        return
    if name == "s_wr" and f["sreg"] >= cfg.scalar_regs:
        ck.err(i, f"s_wr: field sreg={f['sreg']} but {cfg.name} has {cfg.scalar_regs} scalar registers")
    if name in ("v_load", "v_store"):
        lo, hi = address_extent(f["vaddr"], [(f["vstride"], f["rows"])])
        ck.vrange(i, name, "vaddr", lo, hi + f["row_len"] - 1)
        end = f["daddr"] + (f["rows"] - 1) * f["dstride"] + f["row_len"] * cfg.vector_bytes
        if end > cfg.dram_bytes:
            ck.err(i, f"{name}: field daddr: transfer ends at byte {end}, beyond DRAM of {cfg.dram_bytes} bytes")
    if name == "m_load":
        if f["maddr"] + f["count"] > cfg.mrf_tiles:
            ck.err(i, f"m_load: field maddr: tiles {f['maddr']}..{f['maddr'] + f['count'] - 1} outside the "
                      f"matrix register file 0..{cfg.mrf_tiles - 1}")
        if not ck.mode(i, name, f.get("fmt", 0)):
            return
        wfmt = cfg.mode_formats(f.get("fmt", 0))[0]
        end = f["daddr"] + f["count"] * tile_nbytes(wfmt, cfg.native_dim)
        if end > cfg.dram_bytes:
            ck.err(i, f"m_load: field daddr: transfer ends at byte {end}, beyond DRAM of {cfg.dram_bytes} bytes")


def _check_chain(ck: _Checker, start: int, group) -> None:
    head, end = group[0], group[-1]
    body = group[1:-1]
    names = [g.spec.mnemonic for g in body]
    if end.wait:
        ck.err(start + len(group) - 1, "end_chain cannot wait; put the chain's waits on `chain`")
    if head.signal:
        ck.err(start, "chain cannot signal; put the chain's signals on end_chain")
    for k, g in enumerate(body, start=start + 1):
        if g.wait or g.signal:
            ck.err(k, f"{g.spec.mnemonic} inside a chain cannot carry tokens")
    if not names or names[0] != "v_rd":
        ck.err(start + 1, "a chain starts with v_rd after `chain`")
        return
    if names.count("v_wr") != 1 or names[-1] != "v_wr":
        ck.err(start + len(group) - 2, "a chain has exactly one v_wr, just before end_chain")
        return
    if names.count("v_rd") != 1:
        ck.err(start + 1 + names.index("v_rd", 1), "a chain has one v_rd")
        return
    has_mv = "mv_mul" in names
    if has_mv and names.index("mv_mul") != 1:
        ck.err(start + 1 + names.index("mv_mul"), "mv_mul must follow v_rd directly")
    if names.count("mv_mul") > 1:
        ck.err(start + 1, "a chain has at most one mv_mul")
    ops = [nm for nm in names if nm in MFU_SLOTS]
    cfg = ck.config
    try:
        mfu_assignment(ops, cfg.mfus if cfg else None)
    except IsaError as exc:
        ck.err(start, str(exc))
    hf = head.fields
    reduce = REDUCE_MODES[hf["reduce"]]
    if has_mv and reduce != "none":
        ck.err(start, f"chain: field reduce={reduce} but the chain has mv_mul (the MVU reduces)")
    if not has_mv and reduce == "none" and (hf["k0"], hf["k1"], hf["c"]) != (1, 1, 1):
        ck.err(start, "chain: fields k0, k1, c must be 1 when there is no mv_mul and reduce=none")
    if cfg is None:
        return
    n0, n1, k0, k1, c, r = (hf[x] for x in ("n0", "n1", "k0", "k1", "c", "r"))
    out_terms = lambda f: [(f["s_n0"], n0), (f["s_n1"], n1), (f["s_r"], r)]  # noqa: E731
    for k, g in enumerate(body, start=start + 1):
        nm, f = g.spec.mnemonic, g.fields
        if nm == "v_rd":
            terms = [(f["s_n0"], n0), (f["s_n1"], n1), (f["s_k0"], k0), (f["s_k1"], k1), (1, c), (f["s_r"], r)]
            ck.vrange(k, nm, "base", *address_extent(f["base"], terms))
        elif nm == "mv_mul":
            ck.mode(k, nm, f.get("fmt", 0))
            last = f["mbase"] + r * k0 * k1 * c - 1
            if last >= cfg.mrf_tiles:
                ck.err(k, f"mv_mul: field mbase: tiles {f['mbase']}..{last} outside the matrix register file "
                          f"0..{cfg.mrf_tiles - 1}")
        elif nm in ("v_wr",) or nm.startswith("vv_"):
            ck.vrange(k, nm, "base", *address_extent(f["base"], out_terms(f)))
            if nm == "v_wr":
                hi = f["hi"] or cfg.native_dim
                if not f["lo"] < hi <= cfg.native_dim:
                    ck.err(k, f"v_wr: fields lo={f['lo']}, hi={f['hi']} must satisfy lo < hi <= N={cfg.native_dim}")
        elif nm.startswith("vs_") and f["sreg"] >= cfg.scalar_regs:
            ck.err(k, f"{nm}: field sreg={f['sreg']} but {cfg.name} has {cfg.scalar_regs} scalar registers")
