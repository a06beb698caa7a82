"""Progress displays for the command line's long jobs."""
from __future__ import annotations

import sys
import time


class BatchProgress:
    """A one-line bar for a batch job on stderr: chips done, chips/s, time left; the dashboard link once.

    Call it as ``progress(done, total, info)`` (``runtime.batch.run_batch``'s
    callback); :meth:`end` finishes the line.  On a terminal the bar is
    redrawn at most five times a second; otherwise a line every ten seconds.
    """

    def __init__(self, label: str = "", unit: str = "chips"):
        self.label = f"{label}: " if label else ""
        self.unit = unit
        self.tty = sys.stderr.isatty()
        self.shown = 0.0
        self.dashboard = False
        self.open = False

    def __call__(self, done: int, total: int, info: dict | None = None) -> None:
        info = info or {}
        if info.get("dashboard") and not self.dashboard:
            print(f"dashboard: {info['dashboard']}", file=sys.stderr)
            self.dashboard = True
        now = time.monotonic()
        if done < total and now - self.shown < (0.2 if self.tty else 10.0):
            return
        self.shown = now
        frac = done / total if total else 1.0
        rate = info.get("chips_per_s", info.get("per_s", 0.0))
        eta = f"{(total - done) / rate:,.0f} s left" if rate > 0 and done < total else ""
        bar = "#" * int(30 * frac)
        line = (f"{self.label}[{bar:<30}] {done:,}/{total:,} {self.unit} {100 * frac:5.1f} %  {rate:,.1f} "
                f"{self.unit}/s  {eta}")
        sys.stderr.write(f"\r{line:<110}" if self.tty else line + "\n")
        sys.stderr.flush()
        self.open = self.tty

    def end(self) -> None:
        """Finish the bar's line."""
        if self.open:
            sys.stderr.write("\n")
            self.open = False
