"""A ``Progress`` double that records what long-running code reports, and can ask it to stop."""

from __future__ import annotations

from collections.abc import Callable


class RecordingProgress:
    """Records percentages, messages (in order) and warnings; asks to cancel once ``cancel_when(self)``
    is true, or after ``cancel()``."""

    def __init__(self, cancel_when: Callable[[RecordingProgress], bool] | None = None) -> None:
        self.percents: list[float] = []
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.messages: list[str] = []  # infos and warnings in order, warnings as "warning: ..."
        self.cancel_when = cancel_when
        self.cancelled = False

    @classmethod
    def cancelling_after(cls, percents: int | None = None, messages: int | None = None) -> RecordingProgress:
        """Cancels once ``percents`` percentages or ``messages`` messages were reported."""
        if percents is not None:
            return cls(lambda p: len(p.percents) >= percents)
        return cls(lambda p: len(p.messages) >= messages)

    def set_progress(self, percent: float) -> None:
        self.percents.append(percent)

    def info(self, message: str) -> None:
        self.infos.append(message)
        self.messages.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.messages.append("warning: " + message)

    def cancel(self) -> None:
        self.cancelled = True

    def is_canceled(self) -> bool:
        if not self.cancelled and self.cancel_when is not None and self.cancel_when(self):
            self.cancelled = True
        return self.cancelled
