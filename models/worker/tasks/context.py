"""What a task receives from the worker besides its request."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...core.progress import Progress
from ..device import DeviceChoice
from .common import OutputSet


@dataclass
class RunContext:
    """Progress/cancellation, the chosen device, and the run's outputs (aborted on failure)."""

    progress: Progress
    device: DeviceChoice
    outputs: OutputSet = field(default_factory=OutputSet)
