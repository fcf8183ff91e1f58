"""A ``Progress`` double that records what long-running code reports, and can ask it to stop."""

from __future__ import annotations


class RecordingProgress:
    """Records percentages, messages and warnings; cancels after ``cancel_after`` progress calls."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.percents: list[float] = []
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.cancel_after = cancel_after
        self.asked = 0  # how often is_canceled was called

    def set_progress(self, percent: float) -> None:
        self.percents.append(percent)

    def info(self, message: str) -> None:
        self.infos.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def is_canceled(self) -> bool:
        self.asked += 1
        return self.cancel_after is not None and len(self.percents) >= self.cancel_after

    @property
    def messages(self) -> list[str]:
        return self.infos + self.warnings
