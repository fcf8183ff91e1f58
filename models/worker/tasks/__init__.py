"""The worker's tasks: an explicit table of ``name -> (validate, run)``.

``validate(job, backend) -> request`` checks a job without loading models (its errors mean a bad
job, exit code 2; ``backend`` is the runtime chosen for the job, models/runtime/backend.py); the
request holds what the run needs and ``close()`` releases any files it opened;
``run(request, ctx) -> {"outputs": {...}, "metrics": {...}, ...}`` does the work. A new task adds
one line here (CONTRIBUTING.md, "Add a worker task").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from . import (
    classify,
    cluster,
    describe,
    download,
    embed,
    export_onnx,
    finetune,
    generate,
    map_water,
    prepare_training_data,
    reconstruct,
    segment,
    similarity,
)


class TaskEntry(NamedTuple):
    validate: Callable[[Any, str], Any]
    run: Callable[[Any, Any], dict[str, Any]]


TASKS: dict[str, TaskEntry] = {
    "reconstruct": TaskEntry(reconstruct.validate, reconstruct.run),
    "generate": TaskEntry(generate.validate, generate.run),
    "describe": TaskEntry(describe.validate, describe.run),
    "segment": TaskEntry(segment.validate, segment.run),
    "map_water": TaskEntry(map_water.validate, map_water.run),
    "download": TaskEntry(download.validate, download.run),
    "export_onnx": TaskEntry(export_onnx.validate, export_onnx.run),
    "embed": TaskEntry(embed.validate, embed.run),
    "similarity": TaskEntry(similarity.validate, similarity.run),
    "cluster": TaskEntry(cluster.validate, cluster.run),
    "classify": TaskEntry(classify.validate, classify.run),
    "prepare_training_data": TaskEntry(prepare_training_data.validate, prepare_training_data.run),
    "finetune": TaskEntry(finetune.validate, finetune.run),
}
