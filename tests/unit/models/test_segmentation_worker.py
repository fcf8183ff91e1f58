"""The worker tasks ``segment`` and ``map_water`` on real GeoTIFFs (no QGIS).

``segment`` runs the tiny Sen1Floods11 golden model (test_segmentation_goldens.py) through the
tiled engine: with one 224-px tile on a 224-px patch the class raster must be the argmax of the
terratorch golden logits and the probabilities their softmax. ``map_water`` runs the reduced test
TerraMind (tests/data/catalogue, untrained weights): the mask must be exactly LULC class 1 (and 3).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_segmentation_goldens import CASES, GOLD, write_checkpoint

from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.core.job import InputSpec, Job, ModelRequest, TilingSpec
from terramind_qgis.models.worker.tasks import map_water, segment
from testlib.tasks import run_task, validate

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "tests" / "data" / "examples"
CATALOGUE = REPO / "tests" / "data" / "catalogue"
SCENE = CASES["tiny_sen1floods11"]["scenes"][0]
TINY_CONFIG = str(GOLD / CASES["tiny_sen1floods11"]["config"])


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> str:
    return str(write_checkpoint(tmp_path_factory.mktemp("seg") / "flood_tiny.ckpt", "tiny_sen1floods11"))


def flood_inputs(s2: Path | None = None) -> dict[str, InputSpec]:
    return {
        "S2L1C": InputSpec(str(s2 or EXAMPLES / "S2L1C" / f"{SCENE}.tif"), name="s2"),
        "S1GRD": InputSpec(str(EXAMPLES / "S1RTC" / f"{SCENE}.tif"), name="s1 (RTC as GRD)"),
    }


DEFAULT_TILING = TilingSpec(224, 0, 2)


def segment_job(ckpt: str, out: Path, *, tiling=DEFAULT_TILING, inputs=None, **params) -> Job:
    outputs = {"classes": str(out / "classes.tif"), "probabilities": str(out / "prob.tif")}
    return Job("segment", inputs or flood_inputs(), outputs, ModelRequest("flood_tiny", weights=ckpt),
               params={"config": TINY_CONFIG, **params}, tiling=tiling)  # fmt: skip


def read(path: str) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        colormap = src.colormap(1) if src.count == 1 else None
        return src.read(), {"nodata": src.nodata, "transform": src.transform, "crs": src.crs,
                            "descriptions": src.descriptions, "colormap": colormap}  # fmt: skip


def test_segment_equals_reference_argmax_and_softmax(tiny_ckpt: str, tmp_path: Path) -> None:
    result = run_task(segment_job(tiny_ckpt, tmp_path, probabilities=True))
    classes, meta = read(result["outputs"]["classes"])
    prob, pmeta = read(result["outputs"]["probabilities"])
    ref = np.load(GOLD / "tiny_sen1floods11.npz")["logits"][0]  # (K, H, W)
    top2 = np.sort(ref, axis=0)
    tie = (top2[-1] - top2[-2]) < 1e-4 * np.abs(ref).max()
    assert ((classes[0] == ref.argmax(0)) | tie).all()
    e = np.exp(ref - ref.max(0))
    np.testing.assert_allclose(prob, e / e.sum(0), atol=2e-6)
    with rasterio.open(EXAMPLES / "S2L1C" / f"{SCENE}.tif") as src:
        assert (meta["transform"], meta["crs"]) == (src.transform, src.crs)
    assert meta["nodata"] == 255 and meta["colormap"][1][:3] == (0x1F, 0x77, 0xB4)
    assert pmeta["descriptions"] == ("P(Others)", "P(Flood)")
    counts = result["metrics"]["class_pixels"]
    assert counts == {"Others": int((classes[0] == 0).sum()), "Flood": int((classes[0] == 1).sum())}
    assert (tmp_path / "classes.qml").exists()


def test_segment_nodata_exactly_where_the_input_had_nodata(tiny_ckpt: str, tmp_path: Path) -> None:
    s2 = tmp_path / "s2_nodata.tif"
    shutil.copy(EXAMPLES / "S2L1C" / f"{SCENE}.tif", s2)
    with rasterio.open(s2, "r+") as dst:
        data = dst.read()
        data[:, 50:90, 100:180] = -9999
        data[3, 200, 7] = -9999  # one band of one pixel
        dst.write(data)
        dst.nodata = -9999
    job = segment_job(tiny_ckpt, tmp_path, tiling=TilingSpec(128, 32, 4), inputs=flood_inputs(s2))
    classes, _ = read(run_task(job)["outputs"]["classes"])
    expected = np.zeros((224, 224), bool)
    expected[50:90, 100:180] = True
    expected[200, 7] = True
    assert np.array_equal(classes[0] == 255, expected)
    assert set(np.unique(classes[0][~expected])) <= {0, 1}


def test_segment_input_keys_are_case_insensitive(tiny_ckpt: str, tmp_path: Path) -> None:
    inputs = {k.lower(): v for k, v in flood_inputs().items()}
    req = validate(segment_job(tiny_ckpt, tmp_path, inputs=inputs))
    assert set(req.tiled.job.inputs) == set(flood_inputs())


def test_segment_names_a_missing_modality(tiny_ckpt: str, tmp_path: Path) -> None:
    inputs = {"S2L1C": flood_inputs()["S2L1C"]}
    with pytest.raises(ConfigError, match=r"needs input S1GRD \(2 bands: VV, VH\).*INPUT_S1GRD"):
        validate(segment_job(tiny_ckpt, tmp_path, inputs=inputs))


def test_segment_names_an_unsupported_decoder(tiny_ckpt: str, tmp_path: Path) -> None:
    config = tmp_path / "fcn.yaml"
    config.write_text(Path(TINY_CONFIG).read_text().replace("decoder: UNetDecoder", "decoder: FCNDecoder"))
    with pytest.raises(ConfigError, match="decoder 'FCNDecoder'"):
        validate(segment_job(tiny_ckpt, tmp_path, config=str(config)))


@pytest.fixture(scope="module")
def water_run(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("water")
    job = Job("map_water", {"S2L2A": InputSpec(str(EXAMPLES / "S2L2A" / f"{SCENE}.tif"), name="s2"),
                            "s1rtc": InputSpec(str(EXAMPLES / "S1RTC" / f"{SCENE}.tif"), name="s1")},  # any case
              {"water": str(out / "water.tif"), "lulc": str(out / "lulc.tif")},
              ModelRequest("test_terramind_tiny", untrained=True, catalogue_paths=(str(CATALOGUE),)),
              params={"seed": 3, "flooded_vegetation": True}, tiling=TilingSpec(224, 0, 1))  # fmt: skip
    return run_task(job), out


def test_map_water_mask_is_the_water_classes(water_run) -> None:
    result, _ = water_run
    water, wmeta = read(result["outputs"]["water"])
    lulc, lmeta = read(result["outputs"]["lulc"])
    assert set(np.unique(lulc)) <= set(range(10))
    assert np.array_equal(water[0], ((lulc[0] == 1) | (lulc[0] == 3)).astype(np.uint8))
    assert result["metrics"]["water_pixels"] == int(water.sum())
    assert result["metrics"]["water_area_m2"] == pytest.approx(100.0 * water.sum())
    assert wmeta["descriptions"] == ("water (Water + Flooded vegetation)",)
    assert wmeta["colormap"][1][:3] == (0x31, 0x71, 0xAD) and lmeta["colormap"][7][:3] == (0x6F, 0xB2, 0xE4)


def test_map_water_requires_sentinel2(tmp_path: Path) -> None:
    job = Job("map_water", {"S1RTC": InputSpec(str(EXAMPLES / "S1RTC" / f"{SCENE}.tif"))},
              {"water": str(tmp_path / "w.tif")}, ModelRequest("terramind_v1_tiny"))  # fmt: skip
    with pytest.raises(ConfigError, match="needs a Sentinel-2 L2A input"):
        validate(job)
    job = Job("map_water", {"S2L2A": InputSpec(str(EXAMPLES / "S2L2A" / f"{SCENE}.tif")),
                            "DEM": InputSpec(str(EXAMPLES / "DEM" / f"{SCENE}.tif"))},
              {"water": str(tmp_path / "w.tif")}, ModelRequest("terramind_v1_tiny"))  # fmt: skip
    with pytest.raises(Exception, match="remove the input"):
        validate(job)


def test_water_mask_rule() -> None:
    lulc = np.array([[0, 1, 2, 3, 9]])
    assert map_water.water_mask(lulc, False).tolist() == [[0, 1, 0, 0, 0]]
    assert map_water.water_mask(lulc, True).tolist() == [[0, 1, 0, 1, 0]]


def test_band_subset_inputs_are_checked_against_the_model_bands() -> None:
    """Burn scars reads 6 of the 12 S2L2A bands: a 12-band layer needs a band mapping."""
    import yaml

    from terramind_qgis.models.core.errors import InputRasterError
    from terramind_qgis.models.segmentation.config import config_from_yaml_dict

    cfg = config_from_yaml_dict(yaml.safe_load((GOLD / "configs" / "base_burnscars.yaml").read_text()))
    assert segment.input_modality(cfg.inputs[0]).band_labels == ("B02", "B03", "B04", "B8A", "B11", "B12")
    path = str(EXAMPLES / "S2L2A" / f"{SCENE}.tif")
    job = Job("segment", {"S2L2A": InputSpec(path, name="hls")}, {"classes": "/tmp/x.tif"}, ModelRequest("burn"))
    with pytest.raises(InputRasterError, match=r"layer 'hls': S2L2A needs 6 band\(s\) \(B02, B03, B04, B8A, B11, B12\), got 12"):
        segment.open_model_inputs(job, cfg, ["classes"])
    mapped = Job("segment", {"S2L2A": InputSpec(path, bands=(2, 3, 4, 9, 11, 12), name="hls")}, {"classes": "/tmp/x.tif"},
                 ModelRequest("burn"))  # fmt: skip
    stack = segment.open_model_inputs(mapped, cfg, ["classes"]).stack
    try:
        data, valid = stack.read_tile(0, 0, 224)
        with rasterio.open(path) as src:
            np.testing.assert_array_equal(data["S2L2A"], src.read([2, 3, 4, 9, 11, 12]).astype(np.float32))
    finally:
        stack.close()
