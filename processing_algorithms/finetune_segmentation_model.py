"""Fine-tune segmentation model: a TerraMind backbone fine-tuned on a dataset folder (Prepare training data),
written as a Lightning checkpoint + TerraTorch YAML + model card that *Segment with fine-tuned model* runs."""

from __future__ import annotations

import json
import os
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingUtils,
)

from ..models.core.errors import CancelledError
from ..models.core.job import ModelRequest, TilingSpec
from ..models.core.params import FINETUNED_INPUTS, MAX_SEED
from ..models.core.training_params import (
    BACKBONE_MODES,
    BACKBONES,
    CLASS_WEIGHTS,
    DEFAULT_BACKBONE,
    LOSSES,
    STATISTICS,
    DatasetSummary,
    FinetuneParams,
    check_model_folder,
    parse_bands,
)
from . import environment
from . import parameters as p
from .base import OutputTarget, RunPlan, TerraMindAlgorithm
from .planning import input_file

DEFAULTS = FinetuneParams(dataset="-")


class FinetuneSegmentationModelAlgorithm(TerraMindAlgorithm):
    """Dataset folder → fine-tuned model files, per-epoch metrics, training curve and test-split evaluation."""

    NAME, DISPLAY_NAME, GROUP = "finetunesegmentationmodel", "Fine-tune segmentation model", "finetuning"
    DATASET = "DATASET"
    MODALITIES = "MODALITIES"
    BANDS = "BANDS"
    MODEL_NAME = "MODEL_NAME"
    LOSS = "LOSS"
    CLASS_WEIGHTS = "CLASS_WEIGHTS"
    LEARNING_RATE = "LEARNING_RATE"
    EPOCHS = "EPOCHS"
    BATCH_SIZE = "BATCH_SIZE"
    PATIENCE = "PATIENCE"
    BACKBONE = "BACKBONE"
    AUGMENT = "AUGMENT"
    STATISTICS = "STATISTICS"
    RESUME = "RESUME"
    OUTPUT = "OUTPUT"
    OUTPUT_CHECKPOINT, OUTPUT_CONFIG, OUTPUT_CARD = "OUTPUT_CHECKPOINT", "OUTPUT_CONFIG", "OUTPUT_CARD"
    OUTPUT_METRICS, OUTPUT_CURVE = "OUTPUT_METRICS", "OUTPUT_CURVE"
    OUTPUT_EVALUATION, OUTPUT_CONFUSION = "OUTPUT_EVALUATION", "OUTPUT_CONFUSION"
    BEST_EPOCH, VAL_MIOU, TEST_MIOU, TEST_IOU = "BEST_EPOCH", "VAL_MIOU", "TEST_MIOU", "TEST_IOU"
    FIELDS = {"params.dataset": DATASET, "params.modalities": MODALITIES, "params.bands": BANDS, "params.name": MODEL_NAME,
              "params.loss": LOSS, "params.class_weights": CLASS_WEIGHTS, "params.lr": LEARNING_RATE,
              "params.epochs": EPOCHS, "params.batch_size": BATCH_SIZE, "params.patience": PATIENCE,
              "params.backbone": BACKBONE, "params.augment": AUGMENT, "params.statistics": STATISTICS,
              "params.resume": RESUME, "outputs.model": OUTPUT}  # fmt: skip
    FILES = {"checkpoint": OUTPUT_CHECKPOINT, "config": OUTPUT_CONFIG, "card": OUTPUT_CARD, "metrics": OUTPUT_METRICS,
             "curve": OUTPUT_CURVE, "evaluation": OUTPUT_EVALUATION, "confusion": OUTPUT_CONFUSION}  # fmt: skip

    def initAlgorithm(self, config: dict | None = None) -> None:
        integer, double = QgsProcessingParameterNumber.Type.Integer, QgsProcessingParameterNumber.Type.Double
        d = DEFAULTS
        self.addParameter(QgsProcessingParameterFile(self.DATASET, self.tr("Dataset folder (from Prepare training data)"),
                                                     QgsProcessingParameterFile.Behavior.Folder))  # fmt: skip
        self.addParameter(p.enum_param(p.MODEL, self.tr("Backbone"), list(BACKBONES), DEFAULT_BACKBONE))
        self.addParameter(p.enum_param(self.MODALITIES, self.tr("Modalities the model reads (empty: every modality of "
                                       "the dataset)"), list(FINETUNED_INPUTS), None, multiple=True, optional=True))  # fmt: skip
        self.addParameter(p.advanced(QgsProcessingParameterString(
            self.BANDS, self.tr("Band subsets, e.g. 'S2L2A: BLUE, GREEN, RED' (empty: the dataset's bands)"), optional=True)))
        self.addParameter(QgsProcessingParameterString(self.MODEL_NAME, self.tr("Model name (file names)"), "model"))
        self.addParameter(p.enum_param(self.LOSS, self.tr("Loss"), list(LOSSES), d.loss))
        self.addParameter(p.enum_param(self.CLASS_WEIGHTS, self.tr("Class weights (ce loss)"), list(CLASS_WEIGHTS),
                                       "none"))  # fmt: skip
        self.addParameter(QgsProcessingParameterNumber(self.LEARNING_RATE, self.tr("Learning rate"), double, d.lr,
                                                       minValue=1e-8, maxValue=1.0))  # fmt: skip
        self.addParameter(QgsProcessingParameterNumber(self.EPOCHS, self.tr("Epochs (at most)"), integer, d.epochs,
                                                       minValue=1, maxValue=10000))  # fmt: skip
        self.addParameter(QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Chips per batch"), integer, d.batch_size,
                                                       minValue=1, maxValue=1024))  # fmt: skip
        self.addParameter(QgsProcessingParameterNumber(self.PATIENCE, self.tr("Early stopping: epochs without a better "
                                                       "val loss (0: none)"), integer, d.patience, minValue=0))  # fmt: skip
        self.addParameter(p.enum_param(self.BACKBONE, self.tr("Backbone weights during training (auto: frozen on CPU)"),
                                       list(BACKBONE_MODES), d.backbone))  # fmt: skip
        self.addParameter(QgsProcessingParameterBoolean(self.AUGMENT, self.tr("D4 augmentation (flips and rotations)"),
                                                        d.augment))  # fmt: skip
        self.addParameter(p.advanced(p.enum_param(self.STATISTICS, self.tr("Standardisation statistics"), list(STATISTICS),
                                                  d.statistics)))  # fmt: skip
        self.addParameter(QgsProcessingParameterNumber(p.SEED, self.tr("Random seed"), integer, d.seed, minValue=0,
                                                       maxValue=MAX_SEED))  # fmt: skip
        self.addParameter(p.advanced(QgsProcessingParameterFile(
            self.RESUME, self.tr("Resume from a checkpoint (<name>.last.ckpt of an earlier run)"),
            QgsProcessingParameterFile.Behavior.File, fileFilter="Checkpoints (*.ckpt)", optional=True)))
        for param in p.shared_params():
            if param.name() in (p.WEIGHTS, p.DEVICE, p.PRECISION, p.UNTRAINED):
                self.addParameter(param)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, self.tr("Model folder")))
        for key, what in ((self.OUTPUT_CHECKPOINT, "Checkpoint (.ckpt, Lightning / TerraTorch)"),
                          (self.OUTPUT_CONFIG, "TerraTorch config (.yaml)"), (self.OUTPUT_CARD, "Model card (.json)"),
                          (self.OUTPUT_CURVE, "Training curve (.png)"), (self.OUTPUT_EVALUATION, "Test evaluation (.json)"),
                          (self.OUTPUT_CONFUSION, "Test confusion matrix (.csv)")):  # fmt: skip
            self.addOutput(QgsProcessingOutputFile(key, self.tr(what)))
        self.addOutput(QgsProcessingOutputVectorLayer(self.OUTPUT_METRICS, self.tr("Metrics per epoch (table)"),
                                                      QgsProcessing.SourceType.TypeVector))  # fmt: skip
        self.addOutput(QgsProcessingOutputNumber(self.BEST_EPOCH, self.tr("Best epoch")))
        self.addOutput(QgsProcessingOutputNumber(self.VAL_MIOU, self.tr("Validation mIoU of the best epoch")))
        self.addOutput(QgsProcessingOutputNumber(self.TEST_MIOU, self.tr("Test mIoU")))
        self.addOutput(QgsProcessingOutputString(self.TEST_IOU, self.tr("Test IoU per class (JSON)")))

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        dataset = self.parameterAsFile(parameters, self.DATASET, context)
        dataset = os.path.abspath(dataset) if dataset else ""
        modalities = [m for m in self.parameterAsEnumStrings(parameters, self.MODALITIES, context) if m]
        resume = input_file(self, parameters, self.RESUME, context, (".ckpt",))
        params = FinetuneParams(
            dataset, self.parameterAsString(parameters, self.MODEL_NAME, context) or "model", tuple(modalities),
            parse_bands(self.parameterAsString(parameters, self.BANDS, context)),
            self.parameterAsEnumString(parameters, self.LOSS, context) or DEFAULTS.loss,
            self.parameterAsEnumString(parameters, self.CLASS_WEIGHTS, context) or "none",
            self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            self.parameterAsInt(parameters, self.EPOCHS, context), self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            self.parameterAsInt(parameters, self.PATIENCE, context),
            self.parameterAsEnumString(parameters, self.BACKBONE, context) or "auto",
            self.parameterAsBoolean(parameters, self.AUGMENT, context),
            self.parameterAsEnumString(parameters, self.STATISTICS, context) or DEFAULTS.statistics,
            self.parameterAsInt(parameters, p.SEED, context), os.path.abspath(resume) if resume else None,
        )  # fmt: skip
        model_id = self.parameterAsEnumString(parameters, p.MODEL, context) or DEFAULT_BACKBONE
        params.check(model_id, DatasetSummary.read(dataset))
        folder = self.parameterAsString(parameters, self.OUTPUT, context)
        folder = os.path.abspath(folder) if folder else folder
        check_model_folder(folder, params.name, params.resume)
        weights = p.read_weights(self, parameters, context)
        untrained = self.parameterAsBoolean(parameters, p.UNTRAINED, context)
        return RunPlan(task="finetune", inputs=[], outputs={"model": OutputTarget(self.OUTPUT, folder, "", "model")},
                       model=ModelRequest(id=model_id, weights=os.path.abspath(weights) if weights else None,
                                          untrained=untrained), params=params.as_params(), tiling=TilingSpec(),
                       extent=None, device=self.parameterAsEnumString(parameters, p.DEVICE, context) or "auto",
                       precision=self.parameterAsEnumString(parameters, p.PRECISION, context) or "fp32")  # fmt: skip

    def execute(self, plan: RunPlan, interpreter: environment.Interpreter, context: QgsProcessingContext,
                feedback: QgsProcessingFeedback) -> dict[str, Any]:  # fmt: skip
        """The default worker run (a folder output is kept, only unfinished files in it go); a cancel says
        whether a best checkpoint was written and kept."""
        folder, name = plan.outputs["model"].path, plan.params["name"]
        best, config, last = (os.path.join(folder, name + s) for s in (".ckpt", ".yaml", ".last.ckpt"))
        before = os.path.getmtime(best) if os.path.exists(best) else None
        try:
            return super().execute(plan, interpreter, context, feedback)
        except CancelledError:
            if os.path.exists(best) and os.path.getmtime(best) != before:
                raise CancelledError(f"fine-tuning cancelled; the best checkpoint so far is kept: {best} with its "
                                     f"config {config} (resume from {last})") from None  # fmt: skip
            raise CancelledError("fine-tuning cancelled before the first epoch ended: no checkpoint was written") from None

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        files = result.get("outputs") or {}
        out: dict[str, Any] = {self.OUTPUT: plan.outputs["model"].path}
        for key, param in self.FILES.items():
            out[param] = files.get(key)
        m = result.get("metrics") or {}
        test = m.get("test") or {}
        out[self.BEST_EPOCH] = m.get("best_epoch")
        out[self.VAL_MIOU] = (m.get("val") or {}).get("mIoU")
        out[self.TEST_MIOU] = test.get("mIoU")
        out[self.TEST_IOU] = json.dumps(test.get("iou") or {})
        val_miou = out[self.VAL_MIOU] if out[self.VAL_MIOU] is not None else float("nan")
        feedback.pushInfo(f"Best epoch {m.get('best_epoch')} of {m.get('epochs_run')} ({m.get('stopped')}): val loss "
                          f"{m.get('best_val_loss', float('nan')):.4f}, val mIoU {val_miou:.3f}")  # fmt: skip
        if test:
            feedback.pushInfo(f"Test split: mIoU {test['mIoU']:.3f}; IoU " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                                                     test["iou"].items()))  # fmt: skip
        feedback.pushInfo(f"Segment with fine-tuned model: MODEL_FILE = {files.get('checkpoint')} with CONFIG = "
                          f"{files.get('config')} (or MODEL_FILE = the card {files.get('card')})")  # fmt: skip
        return out

    def after_run(self, plan: RunPlan, outputs: dict[str, Any], result: dict[str, Any], parameters: dict,
                  context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict[str, Any]:  # fmt: skip
        """The metrics table is loaded as a table (no geometry) when the run loads its outputs."""
        metrics = outputs.get(self.OUTPUT_METRICS)
        if metrics and context.project() is not None:
            name = f"Training metrics ({plan.params.get('name')})"
            details = QgsProcessingContext.LayerDetails(name, context.project(), self.OUTPUT_METRICS,
                                                        QgsProcessingUtils.LayerHint.Vector)  # fmt: skip
            context.addLayerToLoadOnCompletion(metrics, details)
        return outputs
