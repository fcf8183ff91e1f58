"""Progress and cancellation, passed into every long-running call (torch-free).

Engine entry points take a ``Progress``; they report percentages and messages through it and call
``check_cancelled()`` between batches and diffusion steps. Nothing prints.
"""

from __future__ import annotations

from typing import Protocol

from .errors import CancelledError


class Progress(Protocol):
    """What long-running code may report to, and ask, its caller."""

    def set_progress(self, percent: float) -> None: ...

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def is_canceled(self) -> bool: ...


class NullProgress:
    """A progress sink that ignores everything and never cancels."""

    def set_progress(self, percent: float) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def is_canceled(self) -> bool:
        return False


class _SubProgress:
    """A sub-task's progress: messages and cancellation go to the parent; percentages are the subclass's."""

    parent: Progress

    def info(self, message: str) -> None:
        self.parent.info(message)

    def warn(self, message: str) -> None:
        self.parent.warn(message)

    def is_canceled(self) -> bool:
        return self.parent.is_canceled()


class ScaledProgress(_SubProgress):
    """Maps 0-100 % of a sub-task onto ``[start, end]`` % of a parent progress."""

    def __init__(self, parent: Progress, start: float, end: float) -> None:
        self.parent, self.start, self.end = parent, start, end

    def set_progress(self, percent: float) -> None:
        self.parent.set_progress(self.start + (self.end - self.start) * percent / 100.0)


def check_cancelled(progress: Progress) -> None:
    """Raise ``CancelledError`` if the caller asked to stop."""
    if progress.is_canceled():
        raise CancelledError("cancelled by the user")


class PercentAsMessages(_SubProgress):
    """For a sub-task (a weights download) inside a run whose progress bar belongs to the main work:
    passes messages and cancellation on, and reports its percentages as an info line every ``step`` %.

    Progress bars only move forward (the QGIS side keeps the highest value), so a download that took
    the bar to 100 % would freeze it for the rest of the run.
    """

    def __init__(self, parent: Progress, what: str, step: float = 10.0) -> None:
        self.parent, self.what, self.step = parent, what, step
        self._reported = 0.0

    def set_progress(self, percent: float) -> None:
        reached = int(percent // self.step) * self.step
        if reached > self._reported:
            self._reported = reached
            self.parent.info(f"{self.what}: {reached:.0f} %")
