"""Progress lines for long train tasks: series done, time spent, time left.

A backtest of a slow model on hundreds of series runs for many minutes; without a line
in the task log nobody can tell a busy task from a stuck one. One line at most every
``every_s`` seconds (and one at the end), so a log stays short.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLog:
    """``start(total)`` then ``update(n)`` as series finish; logs ``<label>: 40/400 series (10 %), …``."""

    def __init__(self, label: str, logger: logging.Logger, every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.label, self.logger, self.every_s, self.clock = label, logger, every_s, clock
        self.total = 0
        self.done = 0
        self.started = self.last = clock()

    def start(self, total: int) -> None:
        self.total, self.done = total, 0
        self.started = self.last = self.clock()
        self.logger.info("%s: backtesting %d series", self.label, total)

    def update(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n) if self.total else self.done + n
        now = self.clock()
        finished = bool(self.total) and self.done >= self.total
        if now - self.last < self.every_s and not finished:
            return
        self.last = now
        elapsed = now - self.started
        if self.total and self.done:
            left = elapsed / self.done * (self.total - self.done)
            self.logger.info("%s: %d/%d series (%d %%), %s elapsed, about %s left", self.label, self.done,
                             self.total, 100 * self.done // self.total, format_seconds(elapsed), format_seconds(left))
        else:
            self.logger.info("%s: %d series, %s elapsed", self.label, self.done, format_seconds(elapsed))


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest finished child process, in MB.

    The process's own peak is Linux's ``VmHWM``: ``ru_maxrss`` keeps the peak of the
    process that started it across ``exec``, so a small task started by a large one would
    report the large one's peak.
    """
    import resource

    own = _vm_hwm_kb()
    if own is None:
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KB
    own /= 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(own, 1), "children_peak_rss_mb": round(children, 1)}


def _vm_hwm_kb() -> float | None:
    """This process's peak resident memory in KB from ``/proc/self/status``; None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            lines = [line for line in status if line.startswith("VmHWM:")]
    except OSError:
        return None
    return float(lines[0].split()[1]) if lines else None


def log_peak_memory(step: str, logger: logging.Logger) -> dict[str, float]:
    """Log ``<step>: peak RSS <n> MB (largest child <m> MB)``: what a task needed, for sizing workers."""
    peak = peak_rss_mb()
    logger.info("%s: peak RSS %.0f MB (largest child %.0f MB)", step, peak["peak_rss_mb"],
                peak["children_peak_rss_mb"])
    return peak
