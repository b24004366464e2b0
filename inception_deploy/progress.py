"""Progress for long work, one look for the whole package (stage: all).

Training, calibration, bias correction, validation and engine builds report through this
module. Each prints a start line saying what it is doing and roughly how long it takes.
On a terminal a rich bar follows; where stdout is no terminal (CI logs, `| tee`, `| cat`)
rich would draw nothing until the end, so plain lines are printed instead, at least every
`PLAIN_INTERVAL_S` seconds, from a timer thread (one slow step still gets its lines).

    for batch in track(batches, "calibrating", total=n, size=len):   # advances by len(batch)
        ...
    with ProgressBar("validate", total=n, enabled=progress, about="about 20 s") as bar:
        bar.advance(len(idx))
    with working("building the INT8 plan with TensorRT-RTX", about="a few seconds"):
        ...
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Iterable, Iterator, Optional, TextIO, TypeVar

T = TypeVar("T")

PLAIN_INTERVAL_S = 15.0  # plain lines at least this often (the promise is every 30 s)

# Where progress goes. The CLI points it at stderr when stdout carries JSON (`--json -`).
stream: Optional[TextIO] = None


def _out() -> TextIO:
    return stream or sys.stdout


def is_terminal() -> bool:
    try:
        return _out().isatty()
    except (AttributeError, ValueError):
        return False


def say(line: str) -> None:
    """One plain status line, flushed at once (CI logs show it when it happens)."""
    out = _out()
    out.write(line + "\n")
    out.flush()


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class _Ticker:
    """Calls `tick()` every `interval` seconds on a daemon thread until stopped."""

    def __init__(self, tick: Callable[[], None], interval: float) -> None:
        self._tick, self._interval = tick, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._tick()

    def start(self) -> "_Ticker":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


class ProgressBar:
    """Progress of `total` units as a context manager; does nothing when `enabled` is false.

    `about` says roughly how long the work takes ("about 2 minutes on 2 cores"); it goes into
    the start line. `transient` rich bars disappear when done (the default); training leaves
    its bar on screen. `plain` forces plain lines (None: plain exactly when stdout is no TTY).
    """

    def __init__(self, description: str, total: Optional[int] = None, enabled: bool = True,
                 transient: bool = True, about: Optional[str] = None, plain: Optional[bool] = None,
                 interval: float = PLAIN_INTERVAL_S) -> None:
        self.description, self.total, self.enabled, self.transient = description, total, enabled, transient
        self.about, self.plain, self.interval = about, plain, interval
        self.done = 0.0
        self._bar = self._task = self._ticker = None
        self._started = 0.0
        self._latest = description  # the last description advance() gave (epoch, loss), for plain lines

    def _begin(self) -> None:
        """Start the clock and settle plain lines vs rich (plain exactly when stdout is no TTY)."""
        self._started = time.perf_counter()
        if self.plain is None:
            self.plain = not is_terminal()

    def __enter__(self) -> "ProgressBar":
        if not self.enabled:
            return self
        self._begin()
        if self.plain:
            size = f" ({self.total} steps)" if self.total else ""
            say(f"{self.description}: started{size}" + (f", {self.about}" if self.about else ""))
            self._ticker = _Ticker(self._plain_line, self.interval).start()
            return self
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        if self.about:
            say(f"{self.description}: {self.about}")
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), transient=self.transient)
        self._bar.__enter__()
        self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def _plain_line(self, final: bool = False) -> None:
        elapsed = time.perf_counter() - self._started
        if final:
            say(f"{self.description}: done, {self._count()} in {_duration(elapsed)}")
            return
        left = ""
        if self.total and self.done > 0:
            left = f", about {_duration(elapsed * (self.total - self.done) / self.done)} left"
        say(f"{self._latest}: {self._count()}, {_duration(elapsed)} elapsed{left}")

    def _count(self) -> str:
        if not self.total and not self.done:
            return "preparing"
        done = int(self.done) if float(self.done).is_integer() else round(self.done, 1)
        return f"{done}/{self.total}" if self.total else f"{done}"

    def __exit__(self, exc_type, *exc) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
            if exc_type is None:
                self._plain_line(final=True)
        if self._bar is not None:
            self._bar.__exit__(exc_type, *exc)
            self._bar = None

    def set_total(self, total: int) -> None:
        """The size of the work, once known (the bar started before it could be counted)."""
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def advance(self, amount: float = 1, description: Optional[str] = None) -> None:
        self.done += amount
        if description:
            self._latest = description
        if self._bar is not None:
            self._bar.update(self._task, advance=amount, **({"description": description} if description else {}))


def track(iterable: Iterable[T], description: str, total: Optional[int] = None, enabled: bool = True,
          size: Callable[[T], float] = lambda item: 1, about: Optional[str] = None) -> Iterator[T]:
    """Yield the items of `iterable`, advancing a bar by `size(item)` after each one."""
    if not enabled:
        yield from iterable
        return
    with ProgressBar(description, total, about=about) as bar:
        for item in iterable:
            yield item
            bar.advance(size(item))


class working(ProgressBar):
    """Work with no steps to count (an engine build): a start line, then plain "still ..."
    lines every interval where stdout is no terminal; a rich spinner on a terminal."""

    def __init__(self, description: str, enabled: bool = True, about: Optional[str] = None,
                 plain: Optional[bool] = None, interval: float = PLAIN_INTERVAL_S) -> None:
        super().__init__(description, None, enabled, about=about, plain=plain, interval=interval)

    def __enter__(self) -> "working":
        if not self.enabled:
            return self
        self._begin()
        say(f"{self.description}: started" + (f", {self.about}" if self.about else ""))
        if self.plain:
            self._ticker = _Ticker(self._plain_line, self.interval).start()
        else:
            from rich.console import Console

            self._bar = Console().status(self.description)
            self._bar.__enter__()
        return self

    def _plain_line(self, final: bool = False) -> None:
        elapsed = _duration(time.perf_counter() - self._started)
        say(f"{self.description}: done in {elapsed}" if final else f"{self.description}: still working, {elapsed} elapsed")

    def __exit__(self, exc_type, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, *exc)
            self._bar = None
        super().__exit__(exc_type, *exc)
