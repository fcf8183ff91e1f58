"""Task ``classify``: few-shot classification of embeddings from a few labelled features.

Job: ``inputs.EMBEDDINGS`` (or the inputs of ``embed``, embedded first); ``params``:
models/core/embedding_params.py ``ClassifyParams``: ``labels`` (points, lines or polygons with a
class, models/core/features.py) to train, or ``classifier`` (a file this task saved) to apply;
``folds``, ``seed``, ``regularization``, ``upsample``. ``outputs``: ``classes`` (uint8, palette and
class names), optionally ``probabilities`` (float32, one band per class) and, when training,
``classifier`` (.json, models/learning/classifier_file.py).

Training: every labelled feature gives the valid tokens it covers (at most ``MAX_SAMPLES`` in all:
a seeded subsample keeping at least one token per feature); the classifier is a multinomial
logistic regression on unit-length, standardised embeddings (models/learning/softmax.py). k-fold
cross-validation over features (models/learning/folds.py: stratified, a feature never split)
gives the accuracy, balanced accuracy and confusion matrix reported in the metrics; the classifier
saved is then fitted on every feature. Applying a saved classifier checks that the embeddings were
made the way its training embeddings were (model, inputs, bands, merge, layers, TiM, D) and refuses
others with one message.

Outputs are on the embedding grid, or with ``upsample`` on the input grid the embeddings coarsen
(each 16 x 16 block of pixels takes its token's class and probabilities), nodata where the
embeddings are nodata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.embedding_params import ClassifyParams
from ...core.embeddings import PATCH_SIZE, require_same
from ...core.errors import ConfigError
from ...core.features import class_table
from ...core.job import Job
from ...core.modalities import ClassInfo
from ...core.outputs import check_output_path, check_outputs_apart
from ...engine import GeoTiffWriter, OutputRaster, WorkingGrid, pixel_area_m2
from ...engine.tokens import fine_grid
from ...learning import classifier_file
from ...learning.folds import cross_validate, feature_folds
from ...learning.softmax import SoftmaxModel, fit_softmax
from .context import RunContext
from .embedding_source import (
    FIELD as EMBEDDINGS_FIELD,
)
from .embedding_source import (
    EmbeddingRaster,
    EmbeddingSource,
    check_progress,
    feature_tokens,
    prepare_source,
    valid_feature_tokens,
)
from .inputs import output_paths
from .outputs import plugin_version
from .similarity import summarized

FIELD = "params.labels"
MAX_SAMPLES = 5000
TOKEN_BLOCK = 16


@dataclass(frozen=True)
class ClassifyRequest:
    job: Job
    params: ClassifyParams
    source: EmbeddingSource
    paths: dict[str, str]
    classifier_out: str | None
    saved: classifier_file.SavedClassifier | None  # the classifier to apply

    def close(self) -> None:
        self.source.close()


def validate(job: Job, backend: str) -> ClassifyRequest:
    params = ClassifyParams.from_params(job.params, probabilities="probabilities" in job.outputs)
    paths = output_paths(job, ["classes"] + (["probabilities"] if params.probabilities else []))
    out = job.outputs.get("classifier") or None
    if out and not params.training:
        raise ConfigError("a saved classifier is applied here, not trained: leave out outputs.classifier",
                          field="outputs.classifier")  # fmt: skip
    if out:
        check_output_path("outputs.classifier", out, (".json",))
        check_outputs_apart({f"layer '{s.name or k}'": s.path for k, s in job.inputs.items()},
                            {**{f"outputs.{k}": v for k, v in paths.items()}, "outputs.classifier": out})  # fmt: skip
    saved = classifier_file.load(params.classifier) if params.classifier else None
    source = prepare_source(job, backend, paths["classes"])
    try:
        if saved is not None:
            if source.raster is not None:
                info, what = source.raster.info, f"the embedding raster {source.raster.what}"
            else:
                from .embed import embedding_info

                info, what = embedding_info(source.embed), "the embeddings these inputs give"
            require_same(saved.embedding, info, EMBEDDINGS_FIELD, f"the classifier '{os.path.basename(params.classifier or '')}'",
                         what)  # fmt: skip
    except BaseException:
        source.close()
        raise
    return ClassifyRequest(job, params, source, paths, out, saved)


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class Samples:
    x: np.ndarray  # (n, D)
    y: np.ndarray  # (n,) class index
    groups: np.ndarray  # (n,) feature index
    feature_class: np.ndarray  # (F,) class index of each feature


def training_samples(raster: EmbeddingRaster, params: ClassifyParams, classes: tuple[ClassInfo, ...],
                     rng: np.random.Generator) -> Samples:  # fmt: skip
    assert params.labels is not None
    index = {c.name: i for i, c in enumerate(classes)}
    burnt = valid_feature_tokens(raster, feature_tokens(params.labels, raster, FIELD), FIELD)
    sizes = np.array([len(v) for _, v in burnt])
    keep = sizes
    if sizes.sum() > MAX_SAMPLES:  # proportional share, at least one token per feature
        keep = np.maximum(1, np.floor(sizes * MAX_SAMPLES / sizes.sum()).astype(int))
    xs, ys, gs = [], [], []
    for g, ((ft, values), k) in enumerate(zip(burnt, keep)):
        chosen = np.sort(rng.choice(len(values), size=int(k), replace=False)) if k < len(values) else np.arange(len(values))
        xs.append(values[chosen])
        ys.append(np.full(len(chosen), index[str(ft.feature.label)]))
        gs.append(np.full(len(chosen), g))
    feature_class = np.array([index[str(ft.feature.label)] for ft, _ in burnt])
    return Samples(np.concatenate(xs), np.concatenate(ys), np.concatenate(gs), feature_class)


def train(raster: EmbeddingRaster, params: ClassifyParams, ctx: RunContext, start: float
          ) -> tuple[classifier_file.SavedClassifier, dict]:  # fmt: skip
    assert params.labels is not None
    classes = class_table(params.labels.labels)
    rng = np.random.default_rng(params.seed)
    s = training_samples(raster, params, classes, rng)
    k = len(classes)
    per_class = np.bincount(s.feature_class, minlength=k)
    few = [c.name for c, n in zip(classes, per_class) if n < params.folds]
    if few:
        ctx.progress.warn(f"class(es) {', '.join(few)} have fewer labelled features than the {params.folds} folds: some "
                          "folds test without them")  # fmt: skip
    ctx.progress.info(f"few-shot classifier: {k} classes, {len(s.feature_class)} labelled features, {len(s.y)} embedding "
                      f"pixels; {params.folds}-fold cross-validation over features")  # fmt: skip
    step = lambda f, n: check_progress(ctx.progress, f, n + 1, start, start + 20)  # noqa: E731
    cv = cross_validate(s.x, s.y, s.groups, feature_folds(s.feature_class, params.folds, rng), k, params.regularization,
                        step)  # fmt: skip
    step(params.folds, params.folds)
    model = fit_softmax(s.x, s.y, k, s.groups, params.regularization)
    ctx.progress.info(f"cross-validated accuracy {100 * cv.accuracy:.1f} % (balanced {100 * cv.balanced_accuracy:.1f} %)")
    training = {
        "features": int(len(s.feature_class)), "pixels": int(len(s.y)), "folds": params.folds,
        "cv_accuracy": cv.accuracy, "cv_balanced_accuracy": cv.balanced_accuracy, "cv_fold_accuracy": list(cv.fold_accuracy),
        "confusion_matrix": cv.confusion.tolist(), "features_per_class": {c.name: int(n) for c, n in zip(classes, per_class)},
    }  # fmt: skip
    return classifier_file.SavedClassifier(model, classes, raster.info.signature(), training), training


# ----------------------------------------------------------------------------- prediction
def output_specs(req: ClassifyRequest, classes: tuple[ClassInfo, ...]) -> list[OutputRaster]:
    block = 256 if req.params.upsample else TOKEN_BLOCK
    specs = [OutputRaster("classes", req.paths["classes"], ("class",), "classes", "uint8", classes, block_size=block)]
    if "probabilities" in req.paths:
        specs.append(OutputRaster("probabilities", req.paths["probabilities"], tuple(f"P({c.name})" for c in classes),
                                  "probability", block_size=block))  # fmt: skip
    return specs


def upsampled(a: np.ndarray, patch: int, h: int, w: int) -> np.ndarray:
    """``a`` ``(..., th, tw)`` with each token over its ``patch`` x ``patch`` pixels, cropped to ``(h, w)``."""
    return np.repeat(np.repeat(a, patch, axis=-2), patch, axis=-1)[..., :h, :w]


def predict(raster: EmbeddingRaster, model: SoftmaxModel, classes: tuple[ClassInfo, ...],
            writers: dict[str, GeoTiffWriter], upsample: bool, ctx: RunContext, start: float) -> np.ndarray:  # fmt: skip
    """Classify every valid token and write the outputs; returns the pixels per class."""
    k, p = len(classes), PATCH_SIZE
    values = np.array([c.value for c in classes], np.float32)
    fine_h, fine_w = raster.info.input_grid[1], raster.info.input_grid[0]
    counts = np.zeros(k, np.int64)
    windows = list(raster.windows(raster.dim + k * (p * p if upsample else 1)))
    for n, (row, col, h, w) in enumerate(windows):
        check_progress(ctx.progress, n, len(windows), start, 99.0)
        data, valid = raster.read(row, col, h, w)
        prob = model.probabilities(data.reshape(raster.dim, -1).T).T.reshape(k, h, w)  # (K, h, w)
        label = values[prob.argmax(axis=0)][None]  # (1, h, w)
        at = (row, col)
        if upsample:  # each token's values over its 16 x 16 pixels, cropped to the input grid
            hh, ww = min(h * p, fine_h - row * p), min(w * p, fine_w - col * p)
            prob, label, valid = (upsampled(a, p, hh, ww) for a in (prob, label, valid))
            at = (row * p, col * p)
        counts += np.bincount(prob.argmax(axis=0)[valid], minlength=k)
        writers["classes"].write(*at, label, valid)
        if "probabilities" in writers:
            writers["probabilities"].write(*at, prob, valid)
    check_progress(ctx.progress, 1, 1, 99.0, 99.0)
    return counts


def run(req: ClassifyRequest, ctx: RunContext) -> dict[str, Any]:
    p = req.params
    table = None
    try:
        computing = req.source.raster is None
        raster = req.source.open(ctx)
        start = 80.0 if computing else 0.0
        if req.saved is None:
            saved, training = train(raster, p, ctx, start)
            if req.classifier_out:
                table = f"{req.classifier_out}.partial-{os.getpid()}.json"
                classifier_file.save(table, saved, p.regularization, plugin_version())
        else:
            saved, training = req.saved, dict(req.saved.training)
            ctx.progress.info(f"applying the classifier {os.path.basename(p.classifier or '')} ({len(saved.classes)} classes)")
        grid: WorkingGrid = fine_grid(raster.grid, *raster.info.input_grid) if p.upsample else raster.grid
        info = raster.runtime_info()
        job = summarized(req.job, "labels")
        for spec in output_specs(req, saved.classes):
            ctx.outputs.open(spec, grid, job, info, ctx.device.description)
        counts = predict(raster, saved.model, saved.classes, ctx.outputs.writers, p.upsample, ctx,
                         start + 20 if req.saved is None else start)  # fmt: skip
        paths = ctx.commit()
        if table and req.classifier_out:
            os.replace(table, req.classifier_out)
            paths["classifier"] = req.classifier_out
    finally:
        if table and os.path.exists(table):
            os.remove(table)
        req.close()
    area = pixel_area_m2(grid)
    metrics: dict[str, Any] = {
        "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in saved.classes],
        "class_pixels": {c.name: int(n) for c, n in zip(saved.classes, counts)},
        "class_area_m2": {c.name: float(n) * area for c, n in zip(saved.classes, counts)} if area is not None else None,
        "trained": req.saved is None,
    }  # fmt: skip
    for key in ("cv_accuracy", "cv_balanced_accuracy", "cv_fold_accuracy", "confusion_matrix", "features", "pixels",
                "folds", "features_per_class"):  # fmt: skip
        if key in training:
            metrics[key] = training[key]
    return {"outputs": paths, "metrics": metrics}
