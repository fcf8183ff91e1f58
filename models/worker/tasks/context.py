"""What a task receives from the worker besides its request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ...core.progress import Progress
from ...runtime.device import DeviceChoice
from .outputs import OutputSet


@dataclass
class RunContext:
    """Progress/cancellation, the job's backend and device, and the run's outputs (aborted on failure).

    ``on_commit`` is called just before the outputs are renamed into place: the worker stops cancel
    signals from interrupting there, so outputs appear all together or not at all.
    """

    progress: Progress
    device: DeviceChoice
    backend: str = "torch"
    outputs: OutputSet = field(default_factory=OutputSet)
    on_commit: Callable[[], None] = lambda: None

    def commit(self) -> dict[str, str]:
        """Finish every output (non-finite values are reported), then rename them into place."""
        self.outputs.warn_nonfinite(self.progress)
        self.on_commit()
        return self.outputs.commit()
