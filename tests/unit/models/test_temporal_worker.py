"""The worker's ``segment`` task with a multi-temporal model, against terratorch 1.2.11.

The tiled golden (``tests/goldens/temporal/tiled_impactmesh_flood.npz``: terratorch's
``tiled_inference`` with the tiny ImpactMesh flood config's settings, crop 256, stride 208, delta 8,
on the 4-date, 3-modality 480 × 480 input of ``temporal_fixtures.tiled_inputs()``) is reproduced by
the worker from GeoTIFFs, one file per date (the DEM one file), through the whole task: job →
multi-date inputs on the working grid → chip plan → model → streaming blender → written logits,
classes and probabilities. Logits must match within 1e-4 relative (max |ours − ref| / max |ref|),
the classes exactly except at ties. Also: the nodata rule of multi-temporal runs (nodata only
where no date of any input has data, elsewhere predicted from the rest), every date-count mismatch
is one error naming the input, and the chip plan is TerraTorch's for other sizes too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from temporal_fixtures import TILED_SIZE, tiled_inputs, write_date_rasters
from test_temporal_goldens import CASES, GOLD, blend_mask, case_inputs, reference_tiling, write_checkpoint

from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.core.job import InputSpec, Job, ModelRequest, TilingSpec
from terramind_qgis.models.engine.chips import ChipPlan, chip_axis_window, chip_origins
from terramind_qgis.models.segmentation.checkpoint import load_segmentation_model
from testlib.errors import refused
from testlib.tasks import run_task, validate
from testlib.tolerances import RTOL, relative_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CONFIG = str(GOLD / CASES["tiny_impactmesh_flood"]["config"])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    return str(write_checkpoint(tmp_path_factory.mktemp("flood") / "best_val_loss.ckpt", "tiny_impactmesh_flood"))


@pytest.fixture(scope="module")
def raw_dates() -> dict[str, np.ndarray]:
    return tiled_inputs()


@pytest.fixture(scope="module")
def date_files(tmp_path_factory, raw_dates) -> dict[str, list[Path]]:
    return write_date_rasters(tmp_path_factory.mktemp("dates"), raw_dates)


def dated(files: list[Path], name: str) -> InputSpec:
    """A job input with one file per date (the first is the input's path)."""
    return InputSpec(str(files[0]), name=name, dates=tuple(InputSpec(str(f), name=name) for f in files))


def flood_job(ckpt: str, files: dict[str, list[Path]], out: Path, *, batch: int = 4, **params) -> Job:
    inputs = {m: dated(f, f"{m.lower()} series") if len(f) > 1 else InputSpec(str(f[0]), name=m.lower())
              for m, f in files.items()}  # fmt: skip
    outputs = {k: str(out / f"{k}.tif") for k in ("classes", "probabilities", "logits")}
    return Job("segment", inputs, outputs, ModelRequest("flood_tiny", weights=ckpt), params={"config": CONFIG, **params},
               tiling=TilingSpec(224, 32, batch), device="cpu")  # fmt: skip


def read(path: str) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(), {"tags": src.tags(), "nodata": src.nodata, "descriptions": src.descriptions}


def test_worker_tiled_run_matches_terratorch_tiled_inference(ckpt, date_files, tmp_path) -> None:
    """The golden's tile grid: 3 x 3 chips of 256 px (origins 0, 208, 240 in the padded raster)."""
    job = flood_job(ckpt, date_files, tmp_path)
    assert json.loads(job.to_json())["inputs"]["S2L2A"]["dates"][3]["path"].endswith("S2L2A_t4.tif")
    result = run_task(Job.from_json(job.to_json()))  # through the job's JSON form, as the worker reads it
    ref = np.load(GOLD / "tiled_impactmesh_flood.npz")["output"][0]  # (K, 480, 480)
    logits, src = read(result["outputs"]["logits"])
    assert logits.shape == ref.shape == (2, TILED_SIZE, TILED_SIZE)
    assert relative_error(logits, ref) <= RTOL, relative_error(logits, ref)
    classes, csrc = read(result["outputs"]["classes"])
    top2 = np.sort(ref, axis=0)
    tie = (top2[-1] - top2[-2]) < RTOL * np.abs(ref).max()
    assert ((classes[0] == ref.argmax(0)) | tie).all()
    prob, _ = read(result["outputs"]["probabilities"])
    e = np.exp(ref - ref.max(0))
    np.testing.assert_allclose(prob, e / e.sum(0), atol=1e-4 * np.abs(ref).max())
    assert result["metrics"]["tiles"] == 9 and result["metrics"]["tiles_predicted"] == 9 and result["metrics"]["dates"] == 4
    tags = json.loads(src["tags"]["TERRAMIND_TILED_INFERENCE"])
    assert tags == {"crop": 256, "stride": 208, "delta": 8, "blend_overlaps": True, "dates": 4}
    assert (src["nodata"], csrc["nodata"], src["descriptions"]) == (-9999.0, 255.0, ("logit(Class 0)", "logit(Class 1)"))
    assert not (classes == 255).any()  # every pixel has data on some date


@pytest.mark.slow
def test_batch_size_and_chip_override_keep_terratorchs_result(ckpt, date_files, raw_dates, tmp_path) -> None:
    """Batches of 1 give the same logits; CHIP_* change the grid the way terratorch would (checked by its
    rule, stated in test_temporal_goldens.reference_tiling, on the same model)."""
    for name in ("b1", "c"):
        (tmp_path / name).mkdir()
    one = run_task(flood_job(ckpt, date_files, tmp_path / "b1", batch=1))
    ref = np.load(GOLD / "tiled_impactmesh_flood.npz")["output"][0]
    assert relative_error(read(one["outputs"]["logits"])[0], ref) <= RTOL
    other = run_task(flood_job(ckpt, date_files, tmp_path / "c", chip_size=224, chip_stride=176, chip_delta=16))
    model = load_segmentation_model(ckpt, CONFIG)
    x = case_inputs(raw_dates, "tiny_impactmesh_flood", (0, 0, TILED_SIZE, TILED_SIZE))
    expected = reference_tiling(model, x, 224, 176, 16)[0]
    assert relative_error(read(other["outputs"]["logits"])[0], expected) <= RTOL
    assert other["metrics"]["tiles"] == len(chip_origins(TILED_SIZE, 224, 176, 16)) ** 2 == 9


def test_nodata_only_where_no_date_of_any_input_has_data(ckpt, raw_dates, tmp_path) -> None:
    """Per element as ImpactMesh: NaN and values equal to the layer's nodata value are replaced by 0 and
    predicted from (the logits equal terratorch's tiling of the model on the replaced input); the output
    is nodata only where every date of every input is missing."""
    size = 300  # 2 x 2 chips
    raw = {k: np.ascontiguousarray(v[..., 180:, 180:]) for k, v in raw_dates.items()}  # (T, C, 300, 300)
    raw["S2L2A"][:, :, 120:160, 20:60] = np.nan  # every date of S2: S1 and the DEM remain, predicted
    for k in raw:
        raw[k][..., 220:250, 220:260] = np.nan  # every date of every input: nodata
    raw["S1RTC"][2, 0, 100:110, 100:110] = np.nan  # one band of one date
    files = write_date_rasters(tmp_path / "in", raw)
    with rasterio.open(files["S1RTC"][1], "r+") as dst:  # date 2 of S1 marks missing data with -9999
        block = dst.read()
        block[1, 200:220, 30:60] = -9999.0
        dst.write(block)
        dst.nodata = -9999.0
    (tmp_path / "out").mkdir()
    result = run_task(flood_job(ckpt, files, tmp_path / "out"))
    classes = read(result["outputs"]["classes"])[0][0]
    logits = read(result["outputs"]["logits"])[0]
    missing = np.zeros(classes.shape, bool)
    missing[220:250, 220:260] = True
    assert ((classes == 255) == missing).all()
    assert (logits[:, missing] == -9999.0).all() and result["metrics"]["tiles"] == 4
    raw["S1RTC"][1, 1, 200:220, 30:60] = np.nan  # what the nodata value means
    model = load_segmentation_model(ckpt, CONFIG)
    expected = reference_tiling(model, case_inputs(raw, "tiny_impactmesh_flood", (0, 0, size, size)), 256, 208, 8)[0]
    assert relative_error(logits[:, ~missing], expected[:, ~missing]) <= RTOL
    assert result["metrics"]["class_pixels"]["Class 0"] + result["metrics"]["class_pixels"]["Class 1"] == (~missing).sum()


def test_every_date_count_mismatch_is_one_clear_error(ckpt, date_files, tmp_path) -> None:
    files = dict(date_files)
    with refused(r"^inputs\.S1RTC: 3 dates \(layers\) given, but the model reads 4 dates of S1RTC; give 4 layers"):
        validate(flood_job(ckpt, {**files, "S1RTC": files["S1RTC"][:3]}, tmp_path))
    with refused(r"^inputs\.DEM: 2 dates \(layers\) given, but the model reads 4 dates of DEM"):
        validate(flood_job(ckpt, {**files, "DEM": files["DEM"] * 2}, tmp_path))
    with refused(r"^inputs\.S1RTC: the fine-tuned model \(terramind_v1_tiny\) needs input S1RTC "
                 r".* one layer per date \(4 dates\)"):
        validate(flood_job(ckpt, {k: v for k, v in files.items() if k != "S1RTC"}, tmp_path))
    req = validate(flood_job(ckpt, {**files, "S2L2A": files["S2L2A"][:1]}, tmp_path))  # one date: repeated (warned)
    assert (req.dates.dates, req.dates.repeated) == (4, ("S2L2A", "DEM"))
    req.close()
    assert list(tmp_path.iterdir()) == []  # no file written by any of them


def test_single_date_models_refuse_dates(tmp_path) -> None:
    from test_segmentation_goldens import CASES as SEG_CASES
    from test_segmentation_goldens import GOLD as SEG_GOLD
    from test_segmentation_goldens import write_checkpoint as seg_checkpoint

    from testlib.paths import example

    ckpt = seg_checkpoint(tmp_path / "tiny.ckpt", "tiny_sen1floods11")
    s2 = str(example("S2L1C"))
    inputs = {"S2L1C": InputSpec(s2, dates=(InputSpec(s2), InputSpec(s2))), "S1GRD": InputSpec(str(example("S1RTC")))}
    job = Job("segment", inputs, {"classes": str(tmp_path / "c.tif")}, ModelRequest("m", weights=str(ckpt)),
              params={"config": str(SEG_GOLD / SEG_CASES["tiny_sen1floods11"]["config"])})  # fmt: skip
    with refused(r"^inputs\.S2L1C: 2 dates \(layers\) given, but this model is not multi-temporal"):
        validate(job)


@pytest.mark.parametrize("length", [1, 100, 239, 240, 241, 242, 449, 480, 1024, 1500])
@pytest.mark.parametrize("crop, stride, delta", [(256, 208, 8), (224, 192, 8), (224, 200, 12), (64, 16, 4)])
def test_chip_plan_is_terratorchs_tile_grid(length: int, crop: int, stride: int, delta: int) -> None:
    """Origins, kept size and blend weights equal the reference rule (``reference_tiling``/``blend_mask``)
    wherever terratorch tiles the axis; everywhere every pixel is covered by a kept region."""
    kept = crop - 2 * delta
    padded = length + 2 * delta
    ref = sorted(set(range(0, padded - crop - 1, stride)) | {padded - crop})
    ours = chip_origins(length, crop, stride, delta)
    if padded - crop not in (1,) and padded - crop >= 0:  # where terratorch covers every pixel
        assert list(ours) == ref
    covered = np.zeros(length, bool)
    for o in ours:
        covered[o : o + kept] = True
    assert covered.all()
    window = chip_axis_window(crop, stride, delta)
    mask = window[:, None] * window[None, :] + 1e-6
    np.testing.assert_allclose(mask, blend_mask(crop, stride, delta).numpy(), rtol=0, atol=2.5e-7)  # float32 cos
    plan = ChipPlan.build(length, length, crop, stride, delta, any_size=False)
    assert plan.tile_size == kept and plan.row_origins == ours and not plan.whole


def test_small_rasters_are_one_forward_pass(ckpt, raw_dates, tmp_path) -> None:
    """A raster no larger than one chip is one forward pass on the raster itself (as tiled_inference)."""
    files = write_date_rasters(tmp_path / "in", raw_dates, crop=(100, 60, 200, 250))
    result = run_task(flood_job(ckpt, files, tmp_path))
    model = load_segmentation_model(ckpt, CONFIG)
    with torch.no_grad():
        ref = model(case_inputs(raw_dates, "tiny_impactmesh_flood", (100, 60, 200, 250)))[0].numpy()
    assert relative_error(read(result["outputs"]["logits"])[0], ref) <= RTOL
    assert result["metrics"]["tiles"] == 1


def test_chip_settings_are_checked(ckpt, date_files, tmp_path) -> None:
    with refused(r"^params\.chip_stride: must not be larger than the chip size \(64 px\), got 96"):
        validate(flood_job(ckpt, date_files, tmp_path, chip_size=64, chip_stride=96))
    with refused(r"^params\.chip_size: must be between 32 and 4096, got 8"):
        validate(flood_job(ckpt, date_files, tmp_path, chip_size=8))
    with pytest.raises(ConfigError, match="must be a whole number"):
        validate(flood_job(ckpt, date_files, tmp_path, chip_delta="8"))
    with refused(r"^params\.chip_stride: a stride of 300 px leaves pixels between chips of 256 px without a prediction"):
        validate(flood_job(ckpt, date_files, tmp_path, chip_stride=300))  # the config's chip size, a stride too large


def test_a_model_without_tiled_settings_uses_the_engine_tiling(tmp_path, raw_dates) -> None:
    """The crop model (one modality, a band subset, 3 dates, no tiled_inference_parameters): the engine's
    own tile, reflect-padded beyond a small raster, read over every date."""
    from test_temporal_goldens import HLS_BANDS

    case = "tiny_multitemporal_crop"
    crop_ckpt = write_checkpoint(tmp_path / "crop.ckpt", case)
    config = str(GOLD / CASES[case]["config"])
    files = write_date_rasters(tmp_path / "in", {"S2L2A": raw_dates["S2L2A"][:3]}, crop=(100, 300, 64, 96))
    (tmp_path / "out").mkdir()
    bands = tuple(b + 1 for b in HLS_BANDS)  # the band mapping, the same for every date
    s2 = InputSpec(str(files["S2L2A"][0]), bands=bands, dates=tuple(InputSpec(str(f), bands=bands) for f in files["S2L2A"]))
    job = Job("segment", {"S2L2A": s2}, {"logits": str(tmp_path / "out" / "l.tif"),
              "classes": str(tmp_path / "out" / "c.tif")}, ModelRequest("crop", weights=str(crop_ckpt)),
              params={"config": config}, tiling=TilingSpec(128, 0, 1))  # fmt: skip
    result = run_task(job)
    assert result["metrics"]["tiles"] == 1 and result["metrics"]["dates"] == 3
    model = load_segmentation_model(crop_ckpt, config)
    x = raw_dates["S2L2A"][:3, HLS_BANDS, 100:164, 300:396]  # (T, 6, 64, 96)
    x = np.pad(np.nan_to_num(x, nan=0.0), ((0, 0), (0, 0), (0, 64), (0, 32)), mode="reflect")  # the tile: 128 x 128
    with torch.no_grad():
        ref = model({"S2L2A": torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, 0, 1)))[None]})[0, :, :64, :96].numpy()
    assert relative_error(read(result["outputs"]["logits"])[0], ref) <= RTOL


def test_worker_command_line_with_dates(ckpt, date_files, tmp_path) -> None:
    """The worker entry point: dates as plain paths in the job file; a wrong count is one line and exit 2."""
    import subprocess
    import sys

    from testlib.paths import PLUGIN_PATH

    small = write_date_rasters(tmp_path / "in", tiled_inputs(), crop=(0, 0, 64, 96))
    (tmp_path / "out").mkdir()
    job = {"protocol": 1, "task": "segment", "model": {"id": "flood", "weights": ckpt}, "params": {"config": CONFIG},
           "inputs": {m: {"dates": [str(p) for p in f], "name": m} if len(f) > 1 else {"path": str(f[0])}
                      for m, f in small.items()},
           "outputs": {"classes": str(tmp_path / "out" / "c.tif")}, "device": "cpu"}  # fmt: skip

    def run(j: dict) -> subprocess.CompletedProcess:
        (tmp_path / "job.json").write_text(json.dumps(j))
        return subprocess.run([sys.executable, "-m", "terramind_qgis.models.worker", str(tmp_path / "job.json")],
                              capture_output=True, text=True, timeout=300,
                              env={"PYTHONPATH": str(PLUGIN_PATH), "PATH": "/usr/bin:/bin"})  # fmt: skip

    done = run(job)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert any("multi-temporal model (concat pooling): 4 date(s) of S2L2A, S1RTC, DEM" in e.get("message", "") for e in events)
    assert any("DEM has one date (layer); it is used for all 4 dates" in e.get("message", "") for e in events)
    assert events[-1]["event"] == "result" and events[-1]["metrics"]["dates"] == 4
    bad = {**job, "inputs": {**job["inputs"], "S1RTC": {"dates": job["inputs"]["S1RTC"]["dates"][:2]}}}
    refused_run = run(bad)
    lines = refused_run.stdout.strip().splitlines()
    assert refused_run.returncode == 2 and len(lines) == 1
    expected = "inputs.S1RTC: 2 dates (layers) given, but the model reads 4 dates of S1RTC"
    assert json.loads(lines[0])["message"].startswith(expected)
    assert "Traceback" not in refused_run.stderr


def test_onnx_export_and_run_of_a_multi_temporal_model(ckpt, tmp_path) -> None:
    """``export_onnx`` writes the 4-date model for its chip size (inputs ``(B, C, 4, H, W)``); ``segment``
    runs it in ONNX Runtime with the same chips as torch, and refuses a chip size the graph does not serve."""
    import onnx

    files = write_date_rasters(tmp_path / "in", tiled_inputs(), crop=(40, 300, 112, 144))
    (tmp_path / "out").mkdir()
    graph = tmp_path / "out" / "flood.onnx"
    export = Job("export_onnx", {}, {"model": str(graph)}, ModelRequest("flood_tiny", weights=ckpt),
                 params={"config": CONFIG}, tiling=TilingSpec(64, 0, 1), device="cpu")  # fmt: skip
    exported = run_task(export)
    assert exported["metrics"]["max_relative_deviation"] <= 1e-4
    dims = [[d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in onnx.load(str(graph)).graph.input]
    assert dims == [["batch", 12, 4, 64, 64], ["batch", 2, 4, 64, 64], ["batch", 1, 4, 64, 64]]
    chips = {"chip_size": 64, "chip_stride": 48, "chip_delta": 4}
    torch_run = run_task(flood_job(ckpt, files, tmp_path / "out", **chips))
    torch_logits = read(torch_run["outputs"]["logits"])[0]
    (tmp_path / "onnx").mkdir()
    onnx_job = flood_job(str(graph), files, tmp_path / "onnx", **chips)
    onnx_run = run_task(Job.from_dict({**json.loads(onnx_job.to_json()), "params": {**chips}}))
    assert onnx_run["metrics"]["tiles"] == torch_run["metrics"]["tiles"] == 3 * 3
    assert relative_error(read(onnx_run["outputs"]["logits"])[0], torch_logits) <= RTOL
    with refused(r"^params\.chip_size: the ONNX graph serves 64 px chips, but the model's tiled inference uses 256 px"):
        validate(Job.from_dict({**json.loads(onnx_job.to_json()), "params": {}}))


def test_chip_plan_memory_does_not_grow_with_the_raster() -> None:
    """The blender's strip for TerraTorch's chips depends on chip and batch size only (as the engine's own)."""
    from terramind_qgis.models.engine import StreamingBlender

    sizes = []
    for side in (4096, 8192, 30000):  # all wider than one column group
        plan = ChipPlan.build(side, side, 256, 208, 8, any_size=False)
        blender = StreamingBlender(plan, {"logits": 2}, batch_size=4)
        try:
            sizes.append(blender.nbytes)
        finally:
            blender.close()
    assert sizes[0] == sizes[1] == sizes[2] < 64 * 2**20
