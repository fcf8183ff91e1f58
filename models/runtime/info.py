"""What an output's metadata says about the model that made it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RuntimeInfo:
    """The loaded model: its id, the Hub revision of its weights, and where each file came from."""

    model_id: str
    revision: str = "n/a"  # Hub revision of catalogue weights; n/a for user files
    weights_source: dict[str, str] = field(default_factory=dict)  # part -> provenance string
    untrained: bool = False
    extra_tags: dict[str, str] = field(default_factory=dict)  # task-specific metadata (backbone, config, ...)
