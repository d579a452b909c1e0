"""Live progress for long work: done / total, a rate and an ETA, updated as pieces finish.

On a terminal `Meter` draws a tqdm bar on stderr; anywhere else (a log file, Slurm's output) it
prints a plain line every ``every_s`` seconds (10 by default) and one at the end, so a job that
is still starting or stuck says so in its log. A background thread keeps either form moving
while nothing finishes (an engine starting), and `Meter` is safe to update from several
threads (the engine runner's persisted batches and its live ticks)."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from typing import Any, TextIO

WINDOW_S = 30.0  # the rate shown is over this many recent seconds


def _fixed(x: float, of: float) -> str:
    """`x` with the decimals a total of `of` needs to show progress (11.0, 2.40, 0.048)."""
    return f"{x:.1f}" if of >= 10 else f"{x:.2f}" if of >= 1 else f"{x:.3f}"


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Meter:
    """Progress of `total` units of work (``unit``: rows, pieces, ...), with an amount whose
    rate is shown (``rate_unit``: output tokens per second, MB/s, ...).

    `set` gives absolute values (what is done so far), `add` increments; `skip` counts work
    that cost nothing (rows from the row cache), left out of the rate and the ETA.

    ``scale``: done and total are shown divided by it (bytes counted, MB shown: ``unit="MB"``,
    ``scale=1e6``). ``amount_total``: the amount the whole work comes to (reference MB of a
    scan, ``amount_unit="MB"``); the line then shows the amount so far of it, and the ETA
    follows the amount's pace instead of the units' (pieces of unequal sizes).
    """

    def __init__(self, label: str, total: int, *, unit: str = "rows", rate_unit: str = "tok/s",
                 enabled: bool = True, every_s: float = 10.0, stream: TextIO | None = None,
                 bar: bool | None = None, scale: float = 1.0, amount_total: float | None = None,
                 amount_unit: str = ""):
        self.label, self.total, self.unit, self.rate_unit = label, max(int(total), 0), unit, rate_unit
        self.scale, self.amount_total, self.amount_unit = scale, amount_total, amount_unit
        self.enabled, self.every_s = enabled, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.skipped = 0
        self.amount = 0.0
        self.note = ""
        self.t0 = time.perf_counter()
        self.first: tuple[float, int] | None = None  # (time, live done) at the first finish
        self.first_amount = 0.0  # the amount at the first finish
        self._samples: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()
        self._last_line = self.t0
        self._closed = False
        self._bar: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not enabled:
            return
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if bar if bar is not None else tty:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=label, unit=unit[:-1] if unit.endswith("s")
                             else unit, file=self.stream, dynamic_ncols=True, leave=True,
                             unit_scale=1 / scale if scale != 1 else False)
        self._thread = threading.Thread(target=self._tick, name=f"progress-{label}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ updates
    def set(self, done: int | None = None, amount: float | None = None, skipped: int | None = None,
            note: str | None = None) -> None:
        with self._lock:
            if done is not None:
                self.done = min(max(int(done), self.done), self.total)
            if amount is not None:
                self.amount = max(float(amount), self.amount)
            if skipped is not None:
                self.skipped = min(int(skipped), self.total)
            if note is not None:
                self.note = note
            self._moved()

    def add(self, done: int = 0, amount: float = 0.0, skipped: int = 0) -> None:
        with self._lock:
            self.skipped = min(self.skipped + skipped, self.total)
            self.done = min(self.done + done + skipped, self.total)
            self.amount += amount
            self._moved()

    def _moved(self) -> None:
        live = self.done - self.skipped
        if self.first is None and live > 0:
            self.first = (time.perf_counter(), live)
            self.first_amount = self.amount
        self._show(final=False)

    # ------------------------------------------------------------------ figures
    def rate(self) -> float | None:
        """Amount per second over the last `WINDOW_S` seconds (since the start while the meter
        is younger; None while nothing is counted)."""
        now = time.perf_counter()
        samples = self._samples
        if not samples or samples[-1][1] != self.amount:
            samples.append((now, self.amount))
        while len(samples) > 2 and samples[1][0] < now - WINDOW_S:
            samples.popleft()
        t_old, a_old = samples[0] if now - self.t0 > WINDOW_S else (self.t0, 0.0)
        return (self.amount - a_old) / (now - t_old) if self.amount and now > t_old else None

    def eta_s(self) -> float | None:
        """Seconds left at the pace of the work done since the first piece finished (so an
        engine's start-up does not count), or since the start while only one piece did."""
        live = self.done - self.skipped
        if self.first is None or live <= 0 or self.done >= self.total:
            return None
        now = time.perf_counter()
        t1, live1 = self.first
        if self.amount_total is not None:  # by the amount: (amount_total - amount) at its pace
            if self.amount <= 0 or self.amount >= self.amount_total:
                return None
            a1 = self.first_amount
            pace = (now - t1) / (self.amount - a1) if self.amount > a1 and now > t1 \
                else (now - self.t0) / self.amount
            return (self.amount_total - self.amount) * pace
        pace = (now - t1) / (live - live1) if live > live1 and now > t1 else (now - self.t0) / live
        return (self.total - self.done) * pace

    def _count(self, n: float, of: float) -> str:
        """`n` in shown units: an integer, or scaled with the decimals `of` (the total) needs."""
        if self.scale == 1:
            return str(int(n))
        return _fixed(n / self.scale, of / self.scale)

    def amount_part(self) -> str | None:
        """``4.20/11.00 MB``: the amount so far of `amount_total` (None without one)."""
        if self.amount_total is None:
            return None
        unit = f" {self.amount_unit}" if self.amount_unit else ""
        of = self.amount_total
        return f"{_fixed(self.amount, of)}/{_fixed(of, of)}{unit}"

    def line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        parts = [f"[{self.label}] {self._count(self.done, self.total)}/"
                 f"{self._count(self.total, self.total)} {self.unit} ({pct:.0f}%)"]
        amount = self.amount_part()
        if amount is not None:
            parts.append(amount)
        if self.skipped:
            parts.append(f"{self.skipped} cached")
        rate = self.rate()
        if rate is not None:
            parts.append(f"{rate:.1f} {self.rate_unit}")
        eta = self.eta_s()
        if eta is not None and math.isfinite(eta):
            parts.append(f"ETA {duration(eta)}")
        parts.append(f"{duration(time.perf_counter() - self.t0)} elapsed")
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)

    # ------------------------------------------------------------------ output
    def _show(self, final: bool) -> None:
        if not self.enabled or self._closed:
            return
        now = time.perf_counter()
        if self._bar is not None:
            self._bar.n = self.done
            rate = self.rate()
            post = f"{rate:.1f} {self.rate_unit}" if rate is not None else ""
            amount = self.amount_part()
            if amount is not None:
                post = f"{amount}, {post}" if post else amount
            if self.skipped:
                post = f"{post}, {self.skipped} cached" if post else f"{self.skipped} cached"
            if self.note:
                post = f"{post}, {self.note}" if post else self.note
            self._bar.set_postfix_str(post, refresh=False)
            self._bar.refresh()
            return
        if final or now - self._last_line >= self.every_s:
            self._last_line = now
            print(self.line(), file=self.stream, flush=True)

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, max(self.every_s / 2, 0.05))):
            with self._lock:
                self._show(final=False)

    def close(self, final: bool = True) -> None:
        """The final line (or the bar's last state); idempotent. ``final=False``: stop without
        one (the work failed: its one-line error says the rest)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            if self._closed:
                return
            if final:
                self._show(final=True)
            self._closed = True
            if self._bar is not None:
                self._bar.close()

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
