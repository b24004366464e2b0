"""Progress bars for long work, one look for the whole package (stage: all).

Training, calibration, bias correction and validation show the same bar (what, a bar,
done/total, elapsed and remaining time) through this module, so a change to how progress
is shown (plain lines when stdout is no terminal, say) is made once, here.

    for batch in track(batches, "calibrating", total=n, size=len):   # advances by len(batch)
        ...
    with ProgressBar("validate", total=n, enabled=progress) as bar:
        bar.advance(len(idx))
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")


class ProgressBar:
    """A rich progress bar as a context manager; does nothing when `enabled` is false.
    `transient` bars disappear when done (the default); training leaves its bar on screen."""

    def __init__(self, description: str, total: Optional[int] = None, enabled: bool = True,
                 transient: bool = True) -> None:
        self.description, self.total, self.enabled, self.transient = description, total, enabled, transient
        self._bar = self._task = None

    def __enter__(self) -> "ProgressBar":
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), transient=self.transient)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def advance(self, amount: float = 1, description: Optional[str] = None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=amount, **({"description": description} if description else {}))


def track(iterable: Iterable[T], description: str, total: Optional[int] = None, enabled: bool = True,
          size: Callable[[T], float] = lambda item: 1) -> Iterator[T]:
    """Yield the items of `iterable`, advancing a bar by `size(item)` after each one."""
    if not enabled:
        yield from iterable
        return
    with ProgressBar(description, total) as bar:
        for item in iterable:
            yield item
            bar.advance(size(item))
