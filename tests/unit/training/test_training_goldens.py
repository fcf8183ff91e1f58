"""Fine-tuning against terratorch 1.2.11 goldens (tools/goldens/training.py; the tests never import terratorch).

- losses and metrics: value and gradient of ``ce`` / ``dice`` / ``focal`` as ``SemanticSegmentationTask``
  builds them, and its torchmetrics ``val_metrics``;
- one training step (``Trainer.fit(max_steps=1)`` there, ``step.train_step`` here) from the same
  rule-filled weights on the same batch: loss <= 1e-5 relative, gradients of every trainable
  parameter <= 1e-4, weights after the AdamW step <= 1e-5, BatchNorm buffers after the step
  <= 1e-5; the frozen cases also through the feature cache;
- a checkpoint + YAML written by our writer, as terratorch loaded it (``load_from_checkpoint`` and
  through the config): our loader gives terratorch's logits <= 1e-5 on the batch its data module read
  from our dataset, and our reader reads that batch;
- one epoch of our trainer: its val loss and metrics equal ``Trainer.validate`` of the checkpoint it
  wrote, run by terratorch through the YAML it wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from example_data import step_batch
from tensor_summary import deviation

from terramind_qgis.models.segmentation.checkpoint import load_segmentation_model
from terramind_qgis.models.segmentation.config import config_from_task_args
from terramind_qgis.models.segmentation.model import SegmentationModel, build_pixel_wise_model
from terramind_qgis.models.training.chip_dataset import ChipDataset, collate
from terramind_qgis.models.training.export import (
    save_checkpoint,
    terratorch_config,
    terratorch_parameters,
    training_checkpoint,  # fmt: skip
    write_yaml,
)
from terramind_qgis.models.training.features import FeatureCache
from terramind_qgis.models.training.losses import criterion_for
from terramind_qgis.models.training.metrics import ConfusionMatrix
from terramind_qgis.models.training.network import encode, set_backbone_trainable_
from terramind_qgis.models.training.plan import plan_run
from terramind_qgis.models.training.recipe import Recipe
from terramind_qgis.models.training.step import StepContext, train_step
from terramind_qgis.models.training.trainer import train
from terramind_qgis.models.weights.untrained import fill_module_
from testlib.tolerances import relative_error as rel

GOLD = Path(__file__).resolve().parents[2] / "goldens" / "training"
META = json.loads((GOLD / "goldens.json").read_text())
S2_MEAN_STD = {"means": {"S2L2A": [0.0] * 12}, "stds": {"S2L2A": [1.0] * 12}}  # the step batch is standardised




@pytest.mark.parametrize("prefix", ["", "absent_"], ids=["all-classes", "class2-absent"])
@pytest.mark.parametrize("name", ["ce", "ce_weighted", "dice", "focal"])
def test_losses_match_terratorch(name: str, prefix: str) -> None:
    g = np.load(GOLD / "losses.npz")
    loss, weights = {"ce": ("ce", None), "ce_weighted": ("ce", META["step_cases"]["ce_weighted_frozen"]["class_weights"]),
                     "dice": ("dice", [0.5, 2.0, 1.25]), "focal": ("focal", None)}[name]  # fmt: skip
    target = torch.from_numpy(g[f"{prefix}target"])
    logits = torch.from_numpy(g["logits"]).requires_grad_(True)
    value = criterion_for(loss, -1, weights)(logits, target)
    value.backward()
    assert rel(value.item(), g[f"{prefix}{name}:value"]) <= 1e-6
    assert rel(logits.grad.numpy(), g[f"{prefix}{name}:grad"]) <= 1e-6
    if name == "dice":  # TerraTorch does not pass class weights to Dice: neither do we
        assert criterion_for("dice", -1, None)(logits, target).item() == value.item()


@pytest.mark.parametrize("case", ["all", "absent2"])
def test_metrics_match_torchmetrics(case: str) -> None:
    g = np.load(GOLD / "metrics.npz")
    cm = ConfusionMatrix(3, ignore_index=-1)
    cm.update(torch.from_numpy(g[f"{case}:preds"]), torch.from_numpy(g[f"{case}:target"]))
    ours = cm.summary(META["class_names"])
    names = [str(n) for n in g[f"{case}:names"]]
    assert set(names) <= set(ours)
    for name, ref in zip(names, g[f"{case}:values"]):
        assert ours[name] == pytest.approx(float(ref), abs=1e-6), name
    if case == "absent2":  # torchmetrics leaves a class absent from target and prediction out of the macro mean
        assert ours["IoU_Trees"] == 0.0 and ours["mIoU"] == pytest.approx((ours["IoU_Others"] + ours["IoU_Water"]) / 2)


def _step_model(case: dict) -> SegmentationModel:
    cfg = config_from_task_args({"model_args": META["step_model_args"], "class_names": META["class_names"]}, S2_MEAN_STD)
    net = build_pixel_wise_model(cfg)
    fill_module_(net, "model.")
    set_backbone_trainable_(net, not case["freeze_backbone"])
    return SegmentationModel(net, cfg, (), None).train()  # type: ignore[arg-type]


STEP_RUNS = [pytest.param(name, cached, id=f"{name}-{'cached' if cached else 'full'}")
             for name, case in META["step_cases"].items() for cached in (False, True)
             if case["freeze_backbone"] or not cached]  # the feature cache serves frozen backbones only  # fmt: skip


@pytest.mark.parametrize(("name", "cached"), STEP_RUNS)
def test_training_step_matches_terratorch(name: str, cached: bool) -> None:
    case = META["step_cases"][name]
    g = np.load(GOLD / f"step_{name}.npz")
    x, y = step_batch()
    assert x.sum(dtype=np.float64) == pytest.approx(float(g["x_sum"]), rel=1e-12)
    model = _step_model(case)
    net = model.net
    params = terratorch_parameters(net)
    assert len(params) == int(g["n_params"])  # the task's parameters(), frozen ones included, same order
    optimizer = torch.optim.AdamW(params, lr=META["lr"], weight_decay=META["weight_decay"])
    ctx = StepContext(model, criterion_for(case["loss"], -1, case["class_weights"]), optimizer)
    batch = {"image": {"S2L2A": torch.from_numpy(x)}, "mask": torch.from_numpy(y), "index": torch.arange(2)}
    if cached:  # the encoder's outputs come from the cache, computed in eval mode
        net.encoder.eval()
        ctx.train_cache = FeatureCache(2, 1, lambda idx, k: encode(net, {"S2L2A": torch.from_numpy(x)[list(idx)]}))
    grads: dict[str, torch.Tensor] = {}
    original_step = optimizer.step

    def step_and_record(*a, **k):  # noqa: ANN002, ANN003
        grads.update({n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None})
        return original_step(*a, **k)

    optimizer.step = step_and_record  # type: ignore[method-assign]
    loss = train_step(ctx, batch, [0, 0])
    assert rel(loss, float(g["loss"])) <= 1e-5
    grad_dev = deviation("grad", grads, g)
    assert max(grad_dev.values()) <= 1e-4, sorted(grad_dev.items(), key=lambda kv: -kv[1])[:3]
    if case["freeze_backbone"]:
        assert not any(k.startswith("encoder.") for k in grads)
    else:
        assert any(k.startswith("encoder.") for k in grads)
    after = {n: p for n, p in net.named_parameters() if n in grads}
    after_dev = deviation("after", after, g)
    assert max(after_dev.values()) <= 1e-5, sorted(after_dev.items(), key=lambda kv: -kv[1])[:3]
    buffers = {k: v for k, v in net.state_dict().items() if "running_" in k or "num_batches" in k}
    assert sorted(buffers) == sorted(k.removeprefix("buffer:") for k in g.files if k.startswith("buffer:"))
    for key, value in buffers.items():
        assert rel(value.numpy(), g[f"buffer:{key}"]) <= 1e-5, key


@pytest.fixture(scope="module")
def filled_checkpoint(three_class_ds, tmp_path_factory):
    """The rule-filled checkpoint and YAML the golden script wrote with our writer, re-made here."""
    work = tmp_path_factory.mktemp("filled")
    plan = plan_run(Recipe.from_dict(META["run_recipe"]), three_class_ds, "cpu")
    net = build_pixel_wise_model(plan.config)
    fill_module_(net, "model.")
    optimizer = torch.optim.AdamW(terratorch_parameters(net), lr=META["lr"])
    ckpt = training_checkpoint(net, plan.task_args, plan.recipe, criterion=criterion_for("ce", -1, plan.class_weights),
                               optimizer=optimizer, scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer),
                               epochs=1, global_step=0, train_batches=0, val_batches=0, best_path=work / "filled.ckpt",
                               best_loss=1.0, current_loss=1.0)  # fmt: skip
    path = save_checkpoint(work / "filled.ckpt", ckpt)
    yaml = write_yaml(work / "filled.yaml", terratorch_config(plan.recipe, three_class_ds, plan.task_args, plan.means,
                                                              plan.stds, work))  # fmt: skip
    return plan, path, yaml


def test_our_checkpoint_as_terratorch_loaded_it(filled_checkpoint, three_class_ds) -> None:
    plan, path, yaml = filled_checkpoint
    gold = META["checkpoint"]
    assert gold["state_dict_keys_equal"] and gold["cli_equals_load_from_checkpoint"]  # as recorded by the script
    assert plan.class_weights == gold["class_weights"]
    g = np.load(GOLD / "checkpoint.npz")
    model = load_segmentation_model(path, yaml)
    val = ChipDataset(three_class_ds, "val", ["S2L2A", "S1RTC"], plan.recipe.bands)
    assert [f"{i}_label.tif" for i in val.ids] == gold["splits"]["val"]  # TerraTorch's data module found our chips
    batch = collate([val[i] for i in range(4)])
    assert [f"{f}_label.tif" for f in batch["filename"]] == gold["val_batch_files"]
    assert torch.equal(batch["mask"], torch.from_numpy(g["mask"]))
    standardised = model.standardize(batch["image"])
    assert max(deviation("input", standardised, g).values()) <= 1e-6  # incl. NaN nodata → no_data_replace
    with torch.no_grad():
        logits = model(batch["image"]).numpy()
    assert rel(logits, g["logits"]) <= 1e-5


def test_one_epoch_matches_terratorch_validate(three_class_ds, tmp_path: Path) -> None:
    result = train(three_class_ds, tmp_path, Recipe.from_dict(META["run_recipe"]), model_name="run", untrained=True)
    record = result.history[0]
    ref = META["checkpoint"]["validate"]
    assert record.val_loss == pytest.approx(ref["val/loss"], rel=1e-5)
    for key in ("mIoU", "mIoU_Micro", "F1_Score", "Accuracy", "Pixel_Accuracy", "IoU_Water", "Class_Accuracy_Trees"):
        assert record.val[key] == pytest.approx(ref[f"val/{key}"], abs=1e-5), key
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["global_step"] == META["checkpoint"]["resumed"]["our_global_step"]
