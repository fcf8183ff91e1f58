"""The run of every tiled task, written once.

A tiled task subclasses ``TiledTask`` and says what is particular to it — how to load its model,
which rasters it writes, its model heads, its predictor, what it does with each finished block,
its metrics. ``TiledTask.run`` does the rest, always in this order: report the grid → load the
model → open the tagged outputs → plan the tiles → run them (models/engine ``run_tiled``) → commit
the outputs → metrics. The inputs are closed whatever happens; outputs that were not committed are
removed by the worker (``RunContext.outputs``).

Outputs are written on the working grid and tiles are blended (``run_tiled``) unless a task says
otherwise with ``output_grid`` and ``execute`` (the embedding task writes one value per 16 x 16
patch on the token grid, models/engine/tokens.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ...core.job import blend_scratch_prefix
from ...core.progress import ScaledProgress
from ...engine import GeoTiffWriter, OutputRaster, Released, TiledRunStats, TilePlan, WorkingGrid, run_tiled
from ...engine.runner import Predict
from ...runtime.device import OomBackoff
from .context import RunContext
from .inputs import TiledInputs, make_plan, report_grid

R = TypeVar("R")  # the task's request: has ``.tiled`` (TiledInputs)
M = TypeVar("M")  # the task's loaded runtime: has ``.info`` (RuntimeInfo)


class TiledTask(ABC, Generic[R, M]):
    """One run of a tiled task (see the module docstring)."""

    group_width = 2048  # columns of one strip group (the blender's memory); tasks with many heads use less

    def __init__(self, req: R, ctx: RunContext) -> None:
        self.req, self.ctx = req, ctx
        self.tiled: TiledInputs = req.tiled  # type: ignore[attr-defined]
        self.backoff = OomBackoff(self.tiled.job.tiling.batch_size, ctx.progress)

    # -- what a task says -------------------------------------------------------------------------
    def before_load(self) -> None:
        """Messages before the model is loaded (e.g. inputs the model ignores)."""

    @abstractmethod
    def load(self) -> M: ...

    @abstractmethod
    def output_rasters(self, model: M) -> list[OutputRaster]: ...

    @abstractmethod
    def heads(self, model: M) -> dict[str, int]: ...

    @abstractmethod
    def predictor(self, model: M) -> Predict: ...

    @abstractmethod
    def finish(self, released: Released, writers: dict[str, GeoTiffWriter]) -> None: ...

    def metrics(self, model: M) -> dict[str, Any]:
        return {}

    def output_grid(self) -> WorkingGrid:
        """The grid the outputs are written on (default: the working grid)."""
        return self.tiled.grid

    def tile_plan(self) -> TilePlan:
        """The tiles of the run: the job's tiling (a task may plan otherwise, e.g. TerraTorch's chips)."""
        return make_plan(self.tiled.job, self.tiled.grid, self.group_width)

    def tile_reader(self, plan: TilePlan) -> Any:
        """What ``run_tiled`` reads each tile from: the inputs' stack (or a reader over it)."""
        return self.tiled.stack

    def execute(self, model: M) -> TiledRunStats:
        """Run every tile and hand finished blocks to ``finish`` (default: blended, ``tile_plan`` over
        ``tile_reader``; the embedding task keeps tokens instead)."""
        tiled, ctx = self.tiled, self.ctx
        job = tiled.job
        self.plan = plan = self.tile_plan()
        self.reader = reader = self.tile_reader(plan)
        finish: Callable[[Released], None] = lambda rel: self.finish(rel, ctx.outputs.writers)  # noqa: E731
        return run_tiled(reader, plan, self.heads(model), self.predictor(model), finish,
                         batch_size=job.tiling.batch_size, progress=ScaledProgress(ctx.progress, 2.0, 99.0),
                         scratch=blend_scratch_prefix(next(iter(tiled.paths.values()))))  # fmt: skip

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        tiled, ctx = self.tiled, self.ctx
        job, grid, stack = tiled.job, tiled.grid, tiled.stack
        try:
            report_grid(ctx.progress, grid, stack)
            self.before_load()
            model = self.load()
            for spec in self.output_rasters(model):
                ctx.outputs.open(spec, self.output_grid(), job, model.info, ctx.device.description)  # type: ignore[attr-defined]
            stats = self.execute(model)
            paths = ctx.commit()
        finally:
            stack.close()
        return {"outputs": paths, "metrics": {**tile_metrics(stats), **self.metrics(model)}}


def tile_metrics(stats: TiledRunStats) -> dict[str, Any]:
    return {"tiles": stats.tiles, "tiles_predicted": stats.predicted, "tiles_skipped_nodata": stats.skipped_nodata,
            "blend_buffer_mb": round(stats.strip_bytes / 2**20, 1)}  # fmt: skip


def chunk_progress(progress: Any, a: int, b: int, n: int) -> ScaledProgress:
    """The share of a batch's progress that tiles ``a..b`` of ``n`` take."""
    return ScaledProgress(progress, 100.0 * a / n, 100.0 * b / n)
