"""The trainable network, its encode/decode split and feature cache, the recipe and plan, and the written files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from example_data import HLS6

from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.segmentation.checkpoint import load_segmentation_model
from terramind_qgis.models.segmentation.model import SegmentationModel, build_pixel_wise_model
from terramind_qgis.models.training.augment import d4
from terramind_qgis.models.training.chip_dataset import ChipDataset, collate
from terramind_qgis.models.training.export import TORCH_ORDER, task_state_dict, terratorch_parameters
from terramind_qgis.models.training.features import FeatureCache
from terramind_qgis.models.training.losses import balanced_class_weights
from terramind_qgis.models.training.network import build_training_network, decode, encode, load_encoder
from terramind_qgis.models.training.plan import plan_run
from terramind_qgis.models.training.recipe import Recipe, necks


@pytest.fixture(scope="module")
def tiny_plan(three_class_ds):
    return plan_run(Recipe(modalities=("S2L2A", "S1RTC"), bands={"S2L2A": HLS6}, head_dropout=0.0), three_class_ds)


@pytest.fixture(scope="module")
def tiny_net(tiny_plan):
    return build_training_network(tiny_plan.config, load_encoder(tiny_plan.config, untrained=True), seed=7).eval()


def test_recipe_defaults_are_ibms_and_errors_list_everything() -> None:
    r = Recipe()
    assert (r.loss, r.head_dropout, r.lr, r.weight_decay, r.batch_size, r.seed) == ("dice", 0.1, 1e-4, 0.01, 8, 42)
    assert necks(r)[0] == {"name": "SelectIndices", "indices": [2, 5, 8, 11]} and r.channels == (256, 128, 64, 32)
    assert Recipe(backbone="terramind_v1_base").channels == (512, 256, 128, 64)
    assert necks(Recipe(backbone="terramind_v1_large_tim"))[0]["indices"] == [5, 11, 17, 23]
    assert r.frozen_on("cpu") and not r.frozen_on("cuda") and Recipe(freeze_backbone=False).frozen_on("cpu") is False
    assert Recipe.from_dict(Recipe(class_weights=(1.0, 2.0), bands={"S2L2A": ("RED",)}).to_dict()) == \
        Recipe(class_weights=(1.0, 2.0), bands={"S2L2A": ("RED",)})  # fmt: skip
    with pytest.raises(ConfigError) as err:
        Recipe(backbone="vit_huge", loss="jaccard", precision="fp8", lr=0, modalities=("LULC",))
    for piece in ("backbone 'vit_huge'", "loss 'jaccard'", "precision 'fp8'", "lr 0", "modality 'LULC' is a tokenized"):
        assert piece in str(err.value)
    assert "class weights act on the 'ce' loss only" in Recipe(class_weights="balanced").notes()[0]


def test_plan_balanced_weights_band_subset_and_mismatches(three_class_ds, tiny_plan) -> None:
    pixels = three_class_ds.splits["train"].class_pixels
    assert balanced_class_weights(pixels) == pytest.approx([sum(pixels) / (3 * n) for n in pixels])
    plan = plan_run(Recipe(class_weights="balanced", loss="ce", modalities=("S1RTC",)), three_class_ds)
    assert plan.class_weights == [round(w, 6) for w in balanced_class_weights(pixels)]
    assert tiny_plan.task_args["model_args"]["backbone_bands"] == {"S2L2A": list(HLS6)}
    assert [i.name for i in tiny_plan.config.inputs] == ["S2L2A", "S1RTC"] and tiny_plan.config.inputs[0].band_subset
    assert tiny_plan.means["S2L2A"] == [1503.317, 1718.197, 1853.91, 3132.22, 2424.884, 1857.648]  # pre-training stats
    ds_stats = plan_run(Recipe(statistics="dataset", modalities=("S1RTC",)), three_class_ds)
    assert ds_stats.means["S1RTC"] == list(three_class_ds.modalities["S1RTC"].mean)
    assert tiny_plan.frozen and tiny_plan.task_args["freeze_backbone"] is True
    assert tiny_plan.task_args["model_args"]["backbone_pretrained"] is False
    with pytest.raises(ConfigError, match=r"reads \['DEM'\], which the dataset does not have"):
        plan_run(Recipe(modalities=("DEM",)), three_class_ds)
    with pytest.raises(ConfigError, match=r"bands \['FOO'\] of S2L2A are not in the dataset"):
        plan_run(Recipe(bands={"S2L2A": ("FOO",)}), three_class_ds)


def test_network_has_the_loaders_layout_and_reference_init(tiny_plan, tiny_net) -> None:
    with torch.device("meta"):
        ref = build_pixel_wise_model(tiny_plan.config)
    ours = {k: tuple(v.shape) for k, v in tiny_net.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    keys = list(task_state_dict(tiny_net))
    assert list(dict.fromkeys(k.split(".")[1] for k in keys)) == list(TORCH_ORDER)  # TerraTorch's module order
    assert len(terratorch_parameters(tiny_net)) == len(list(tiny_net.parameters()))
    bn = tiny_net.decoder.decoder.blocks[0].conv1[1]
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and not bn.bias.any()  # smp initialize_decoder
    again = build_training_network(tiny_plan.config, tiny_net.encoder, seed=7)
    assert torch.equal(again.head.head[2].weight, tiny_net.head.head[2].weight)
    assert not torch.equal(build_training_network(tiny_plan.config, tiny_net.encoder, seed=8).head.head[2].weight,
                           tiny_net.head.head[2].weight)  # fmt: skip


def test_encode_decode_and_the_cache_equal_the_forward(three_class_ds, tiny_plan, tiny_net) -> None:
    model = SegmentationModel(tiny_net, tiny_plan.config, (), None).eval()  # type: ignore[arg-type]
    ds = ChipDataset(three_class_ds, "train", ["S2L2A", "S1RTC"], tiny_plan.recipe.bands)
    batch = collate([ds[i] for i in (0, 3)])
    x = model.standardize(batch["image"])
    with torch.no_grad():
        assert torch.equal(decode(tiny_net, encode(tiny_net, x)), tiny_net(x))
        calls = []

        def encode_chips(idx, k):
            calls.append((tuple(idx), k))
            raw = {m: torch.stack([d4(ds.image(i)[m], k) for i in idx]) for m in ds.modalities}
            return encode(tiny_net, model.standardize(raw))

        cache = FeatureCache(len(ds), 8, encode_chips, scratch=None)
        got = decode(tiny_net, cache.get([0, 3], [5, 5]))
        rotated = {m: torch.stack([d4(v, 5) for v in t]) for m, t in batch["image"].items()}
        assert torch.equal(got, tiny_net(model.standardize(rotated)))  # = the augmented input, not rotated features
        assert not torch.allclose(got, torch.stack([d4(v, 5) for v in tiny_net(x)]), atol=1e-3)
        cache.get([3, 0], [5, 0])
        assert calls == [((0, 3), 5), ((0,), 0)]  # computed once per (chip, element), on first use
        assert cache.computed == 3 and cache.nbytes == len(ds) * 8 * 4 * 16 * 192 * 4


def test_cache_spills_to_a_scratch_file(tmp_path: Path) -> None:
    from terramind_qgis.models.training.network import Encoded

    def fake(idx, k):
        return Encoded([torch.full((len(idx), 4, 3), float(k) + i) for i in range(2)], (32, 32), (32, 32))

    cache = FeatureCache(5, 2, fake, scratch=tmp_path, ram_budget=100)
    out = cache.get([4, 1], [1, 0])
    assert (tmp_path / next(iter(p.name for p in tmp_path.iterdir()))).stat().st_size == 5 * 2 * 2 * 4 * 3 * 4
    assert torch.equal(out.features[1][0], torch.full((4, 3), 2.0)) and torch.equal(out.features[0][1], torch.zeros(4, 3))
    cache.close()
    assert list(tmp_path.iterdir()) == []


def test_written_checkpoint_round_trips_through_our_loader(water_ds, tmp_path: Path) -> None:
    from terramind_qgis.models.training.trainer import train

    result = train(water_ds, tmp_path, Recipe(max_epochs=1, batch_size=4, class_weights=(1.0, 3.0), loss="ce"),
                   model_name="water", untrained=True)  # fmt: skip
    ckpt = torch.load(result.checkpoint, weights_only=True)  # the safe path loads it
    assert {"epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "callbacks",
            "optimizer_states", "lr_schedulers", "hparams_name", "hyper_parameters"} <= set(ckpt)  # fmt: skip
    hp = ckpt["hyper_parameters"]
    assert hp["model_args"]["backbone_pretrained"] is False and hp["class_weights"] == [1.0, 3.0]
    assert torch.equal(ckpt["state_dict"]["criterion.weight"], torch.tensor([1.0, 3.0]))
    by_ckpt = load_segmentation_model(result.checkpoint, result.config)
    n_params = len(list(by_ckpt.net.parameters()))
    assert len(ckpt["optimizer_states"][0]["param_groups"][0]["params"]) == n_params
    assert 0 < len(ckpt["optimizer_states"][0]["state"]) < n_params  # frozen encoder: no AdamW state
    by_hparams = load_segmentation_model(result.checkpoint)  # no YAML: hyper_parameters (+ TerraMind statistics)
    by_card = load_segmentation_model(result.card)
    assert [(c.name, c.color) for c in by_card.classes] == [("Others", "#D9D9D9"), ("Water", "#1F77B4")]
    raw = collate([ChipDataset(water_ds, "val")[i] for i in range(2)])["image"]
    with torch.no_grad():
        ref = by_ckpt(raw)
        assert torch.equal(by_card(raw), ref) and torch.equal(by_hparams(raw), ref)
    assert "UNTRAINED" in (result.card.read_text() + result.config.read_text())
    assert np.isfinite(result.best_val_loss) and result.best_epoch == 1


def test_tim_checkpoint_has_terratorchs_layout() -> None:
    """Our TiM network + the TiM tokenizer TerraTorch keeps = the layout of TerraTorch's TiM task
    (tools/goldens/training.py loaded such a checkpoint there strictly: ``tim_loaded_strict``)."""
    import json

    from terramind_qgis.models.segmentation.config import config_from_task_args
    from terramind_qgis.models.training.network import tim_tokenizer_tensors

    gold_dir = Path(__file__).resolve().parents[2] / "goldens" / "training"
    gold = json.loads((gold_dir / "tim_layout.json").read_text())
    assert json.loads((gold_dir / "goldens.json").read_text())["tim_loaded_strict"] is True
    cfg = config_from_task_args(gold["task_args"], {})
    net = build_training_network(cfg, load_encoder(cfg, untrained=True), seed=0)
    state = task_state_dict(net, None, tim_tokenizer_tensors(cfg, untrained=True))
    assert {k: list(v.shape) for k, v in state.items()} == gold["tensors"]
    shared: dict[int, list[str]] = {}
    for key, value in state.items():  # tensors that share memory are exactly the ones TerraTorch shares
        shared.setdefault(value.untyped_storage().data_ptr(), []).append(key)
    assert sorted(g for g in shared.values() if len(g) > 1) == gold["shared"]


def test_mixed_precision_steps(three_class_ds, tiny_plan, tiny_net) -> None:
    """bf16/fp16 autocast (Lightning's ``*-mixed``): the loss stays near fp32's and fp16 steps through a GradScaler."""
    import copy

    from terramind_qgis.models.training.losses import criterion_for
    from terramind_qgis.models.training.step import StepContext, loss_of, train_step

    ds = ChipDataset(three_class_ds, "train", ["S2L2A", "S1RTC"], tiny_plan.recipe.bands)
    batch = collate([ds[i] for i in range(2)])
    losses = {}
    for precision in ("fp32", "bf16", "fp16"):
        net = copy.deepcopy(tiny_net).train()
        model = SegmentationModel(net, tiny_plan.config, (), None)  # type: ignore[arg-type]
        ctx = StepContext(model, criterion_for("dice", -1, None), precision=precision)
        with torch.no_grad():
            losses[precision] = float(loss_of(ctx, batch, [0, 0], None)[0])
        if precision == "fp16":
            ctx.optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
            ctx.scaler = torch.amp.GradScaler("cpu")
            before = net.head.head[2].weight.detach().clone()
            for _ in range(20):  # the scaler skips steps whose scaled gradients overflow, halving its scale
                assert math.isfinite(train_step(ctx, batch, [0, 0]))
                if not torch.equal(before, net.head.head[2].weight):
                    break
            assert not torch.equal(before, net.head.head[2].weight) and ctx.scaler.get_scale() <= 65536.0
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
    assert losses["fp16"] == pytest.approx(losses["fp32"], rel=0.01)
