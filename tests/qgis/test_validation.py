"""Bad inputs are refused on the QGIS side, before any worker starts, with one message naming the
layer or parameter and saying what is expected. A missing worker environment gives the how-to.
"""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import processing
import pytest
from osgeo import gdal
from qgis.core import QgsApplication, QgsProcessingException
from tm_helpers import add_model_cards, reduced_terramind_card

RECONSTRUCT = "terramind:reconstructwithtokenizer"
GENERATE = "terramind:generatemodalities"


def _fails(algorithm_id, params, match):
    with pytest.raises(QgsProcessingException, match=match) as info:
        processing.run(algorithm_id, params)
    return str(info.value)


def _rec(path, tmp_path, **extra):
    return {"INPUT": path, "MODALITY": "S2L2A", "OUTPUT": str(tmp_path / "rec.tif"), "UNTRAINED": True, **extra}


def _raster(path, dtype=gdal.GDT_Int16, bands=1, crs=True):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 64, 64, bands, dtype)
    ds.SetGeoTransform((500000, 10, 0, 4000000, 0, -10))
    if crs:
        ds.SetProjection("EPSG:32633")
    for b in range(bands):
        ds.GetRasterBand(b + 1).WriteArray(np.ones((64, 64)))
    ds = None
    return str(path)


def test_band_count_after_band_mapping(terramind_provider, example, tmp_path):
    msg = _fails(RECONSTRUCT, _rec(example("S2L2A"), tmp_path, BANDS=[4, 3, 2]),
                 r"layer '282D_485L_3_3' \(INPUT\) has 3 bands selected, but S2L2A needs 12 \(B01, B02")
    assert msg.endswith("choose 12 band(s) in that order in BANDS")


def test_band_count_without_mapping(terramind_provider, example, tmp_path):
    _fails(RECONSTRUCT, _rec(example("S2L2A"), tmp_path, MODALITY="DEM"),
           r"has 12 bands, but DEM needs 1 \(Elevation\)")


def test_band_mapping_with_a_band_the_layer_lacks(terramind_provider, example, tmp_path):
    _fails(RECONSTRUCT, _rec(example("DEM"), tmp_path, MODALITY="DEM", BANDS=[2]),
           r"layer '282D_485L_3_3' \(INPUT\) has no band 2; it has bands 1 to 1")


def test_raster_without_crs(terramind_provider, tmp_path):
    path = _raster(tmp_path / "nocrs.tif", crs=False)
    _fails(RECONSTRUCT, _rec(path, tmp_path, MODALITY="DEM"), r"layer 'nocrs' \(INPUT\) has no coordinate reference system")


def test_complex_data_type(terramind_provider, tmp_path):
    path = _raster(tmp_path / "complex.tif", dtype=gdal.GDT_CInt16)
    _fails(RECONSTRUCT, _rec(path, tmp_path, MODALITY="DEM"),
           r"layer 'complex' \(INPUT\) band 1 has data type CInt16, which TerraMind cannot read")


def test_extent_outside_the_layer(terramind_provider, example, tmp_path):
    _fails(RECONSTRUCT, _rec(example("S2L2A"), tmp_path, EXTENT="0,1000,0,1000 [EPSG:32722]"),
           r"EXTENT does not overlap layer '282D_485L_3_3' \(INPUT\)")


@pytest.mark.parametrize(("tile", "overlap", "match"), [
    (208, 32, r"TILE_SIZE: must be a multiple of 32 \(the diffusion decoder works on 32-pixel multiples\), got 208 \(try 192\)"),
    (224, 128, r"OVERLAP: must be between 0 and half the tile size \(112 px\), got 128"),
])  # fmt: skip
def test_tiling(terramind_provider, example, tmp_path, tile, overlap, match):
    _fails(RECONSTRUCT, _rec(example("S2L2A"), tmp_path, TILE_SIZE=tile, OVERLAP=overlap), match)


def test_lulc_tokenizer_allows_multiples_of_16(terramind_provider, example, tmp_path):
    """The VQ-VAE (LULC) decoder works on 16-pixel patches: 208 passes validation (fails later, not here)."""
    alg = QgsApplication.processingRegistry().createAlgorithmById(RECONSTRUCT)
    from qgis.core import QgsProcessingContext

    ok, message = alg.checkParameterValues(_rec(example("LULC"), tmp_path, MODALITY="LULC", TILE_SIZE=208),
                                           QgsProcessingContext())
    assert ok, message


def test_tokenizer_of_another_modality(terramind_provider, example, tmp_path):
    _fails(RECONSTRUCT, _rec(example("S2L2A"), tmp_path, MODEL="terramind_v1_tokenizer_dem"),
           r"MODEL: 'terramind_v1_tokenizer_dem' is the tokenizer of DEM, but the modality is S2L2A")


def test_missing_weights_file(terramind_provider, example, tmp_path):
    _fails(RECONSTRUCT, _rec(example("S2L2A"), tmp_path, WEIGHTS=str(tmp_path / "nope.safetensors")),
           r"WEIGHTS: '.*nope.safetensors' does not exist")


def test_output_must_be_a_geotiff(terramind_provider, example, tmp_path):
    _fails(RECONSTRUCT, _rec(example("S2L2A"), tmp_path, OUTPUT=str(tmp_path / "rec.img")),
           r"OUTPUT: '.*rec.img' must be a GeoTIFF file name ending in .tif")


def test_custom_card_without_weights_needs_weights_or_untrained(terramind_provider, example, tmp_path, monkeypatch):
    card = {"id": "validation_tokenizer_dem", "kind": "tokenizer", "title": "t", "weights": None, "modality": "DEM",
            "config": {"type": "TokenizerConfig", "kind": "divae", "in_channels": 1}}
    add_model_cards(monkeypatch, tmp_path, {"card.json": card})
    _fails(RECONSTRUCT, _rec(example("DEM"), tmp_path, MODALITY="DEM", MODEL="validation_tokenizer_dem", UNTRAINED=False),
           r"MODEL: 'validation_tokenizer_dem' has no published weights; give a checkpoint in WEIGHTS or tick UNTRAINED")


def _gen(tmp_path, **extra):
    return {"OUTPUTS": ["DEM"], "MODEL": "terramind_v1_tiny", "UNTRAINED": True, **extra}


def test_generation_needs_an_input(terramind_provider, tmp_path):
    _fails(GENERATE, _gen(tmp_path), r"give at least one input layer \(INPUT_S2L2A, INPUT_S2L1C, ")


def test_generation_cannot_generate_an_input(terramind_provider, example, tmp_path):
    _fails(GENERATE, _gen(tmp_path, INPUT_DEM=example("DEM"), OUTPUTS=["LULC", "DEM"]),
           r"OUTPUTS: DEM is also an input; TerraMind cannot generate a modality it is given")


def test_generation_checks_each_input_layer(terramind_provider, example, tmp_path):
    _fails(GENERATE, _gen(tmp_path, INPUT_S2L2A=example("S2L2A"), INPUT_S1RTC=example("DEM")),
           r"layer '282D_485L_3_3' \(INPUT_S1RTC\) has 1 band, but S1RTC needs 2 \(VV, VH\); "
           r"give a raster with exactly these bands in that order")


def test_generation_inputs_must_overlap(terramind_provider, example, tmp_path):
    msg = _fails(GENERATE, _gen(tmp_path, INPUT_S2L2A=example("S2L2A"), INPUT_S1RTC=example("S1RTC", "38D_378R_2_3")),
                 r"layer '38D_378R_2_3' \(INPUT_S1RTC\) does not overlap the area to process")
    # both layers named, both with finite bounds in one CRS
    assert re.search(r"layer '38D_378R_2_3' \(INPUT_S1RTC\) covers \[-?\d+\.\d+, -?\d+\.\d+, -?\d+\.\d+, -?\d+\.\d+\], "
                     r"the extent of layer '282D_485L_3_3' \(INPUT_S2L2A\) \[-?\d+\.\d+, .*\] "
                     r"\(left, bottom, right, top in EPSG:4326\)", msg), msg


def test_generation_model_must_be_able_to_generate(terramind_provider, example, tmp_path, monkeypatch):
    add_model_cards(monkeypatch, tmp_path, {"card.json": reduced_terramind_card("validation_terramind_dem_only")})
    _fails(GENERATE, _gen(tmp_path, INPUT_S2L2A=example("S2L2A"), MODEL="validation_terramind_dem_only", OUTPUTS=["LULC"]),
           r"OUTPUTS: model 'validation_terramind_dem_only' cannot generate LULC \(it generates DEM\)")
    _fails(GENERATE, _gen(tmp_path, INPUT_DEM=example("DEM"), MODEL="validation_terramind_dem_only", OUTPUTS=["LULC"]),
           r"INPUT_DEM: model 'validation_terramind_dem_only' does not accept DEM \(it accepts S2L2A\)")


@pytest.mark.parametrize(("python", "match"), [
    ("/nonexistent/bin/python", r"The TerraMind worker interpreter '/nonexistent/bin/python' \(from the environment "
                                r"variable TERRAMIND_PYTHON\) does not exist or is not executable\. "
                                r"Run the algorithm 'TerraMind > "
                                r"Environment > Set up the Python environment' \(qgis_process: terramind:setupenvironment\)"),
    ("BARE_VENV", r"The TerraMind worker interpreter '.*/bare/bin/python' .* lacks torch.*TERRAMIND_PYTHON"),
])  # fmt: skip
def test_missing_worker_environment_gives_the_how_to(terramind_provider, example, tmp_path, monkeypatch, python, match):
    if python == "BARE_VENV":  # a real interpreter without the worker's packages (no system site-packages)
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
        python = str(tmp_path / "bare" / "bin" / "python")
    logged = []
    QgsApplication.messageLog().messageReceived.connect(lambda msg, tag, level: logged.append((tag, msg)))
    monkeypatch.setenv("TERRAMIND_PYTHON", python)
    message = _fails(RECONSTRUCT, _rec(example("S2L2A"), tmp_path), match)
    assert "README" in message and message.count("TERRAMIND_PYTHON") >= 1
    assert any(tag == "TerraMind" and "README" in msg for tag, msg in logged)
    assert not (tmp_path / "rec.tif").exists()


def test_a_worker_error_becomes_one_processing_exception(terramind_provider, tmp_path):
    """Checks only the worker can make (the class values) arrive as one exception with its message."""
    path = str(tmp_path / "classes.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 64, 64, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((500000, 10, 0, 4000000, 0, -10))
    ds.SetProjection("EPSG:32633")
    ds.GetRasterBand(1).WriteArray(np.full((64, 64), 42, np.uint8))
    ds = None
    with pytest.raises(QgsProcessingException) as info:
        processing.run(RECONSTRUCT, {"INPUT": path, "MODALITY": "LULC", "MODEL": "test_tokenizer_lulc", "UNTRAINED": True,
                                     "OUTPUT": str(tmp_path / "rec.tif")})
    message = str(info.value)
    assert message.startswith("layer 'classes': ") and "class values must be 0..9, found 42..42" in message
    assert "\n" not in message and "Traceback" not in message
    assert sorted(os.listdir(tmp_path)) == ["classes.tif"]  # no output, no partial file, no sidecar


def test_a_vrt_with_a_missing_source_is_refused_not_exported_as_data(terramind_provider, example, tmp_path):
    """GDAL opens the VRT and QGIS would export the missing half as ordinary pixels: refused, naming
    the layer, its parameter and the missing file; nothing is written."""
    import shutil

    left, right = tmp_path / "left.tif", tmp_path / "right.tif"
    shutil.copy(example("S2L2A"), left)
    ds = gdal.Translate(str(right), str(left))
    gt = list(ds.GetGeoTransform())
    gt[0] += 224 * gt[1]
    ds.SetGeoTransform(gt)
    ds = None
    gdal.BuildVRT(str(tmp_path / "mosaic.vrt"), [str(left), str(right)]).FlushCache()
    os.remove(right)
    msg = _fails(RECONSTRUCT, {**_rec(str(tmp_path / "mosaic.vrt"), tmp_path), "MODEL": "test_tokenizer_s2l2a"},
                 r"layer 'mosaic' \(INPUT\): the VRT '.*mosaic\.vrt' refers to 1 source file\(s\) that do not exist")
    assert str(right) in msg and not os.path.exists(tmp_path / "rec.tif")


def test_a_truncated_geotiff_stops_the_run_naming_the_file_and_leaves_no_output(terramind_provider, example, tmp_path):
    whole, cut = tmp_path / "whole.tif", tmp_path / "truncated.tif"
    gdal.Translate(str(whole), example("S2L2A"), creationOptions=["TILED=YES", "BLOCKXSIZE=64", "BLOCKYSIZE=64"])
    raw = whole.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    msg = _fails(RECONSTRUCT, {**_rec(str(cut), tmp_path), "MODEL": "test_tokenizer_s2l2a", "TIMESTEPS": 1},
                 r"layer 'truncated': cannot read")
    assert f"cannot read '{cut}' (rows " in msg and "Traceback" not in msg, msg
    assert not os.path.exists(tmp_path / "rec.tif") and not [f for f in os.listdir(tmp_path) if "partial" in f]


def test_a_value_rule_warning_of_the_worker_is_a_feedback_warning(terramind_provider, example, tmp_path, recording_feedback):
    """Sentinel-2 reflectance as 0..1: the run goes ahead, and the worker's warning reaches QGIS's log."""
    gdal.Translate(str(tmp_path / "s2_unit.tif"), example("S2L2A"), outputType=gdal.GDT_Float32,
                   scaleParams=[[0, 10000, 0, 1]]).FlushCache()  # fmt: skip
    feedback = recording_feedback()
    processing.run(RECONSTRUCT, {**_rec(str(tmp_path / "s2_unit.tif"), tmp_path), "MODEL": "test_tokenizer_s2l2a",
                                 "TIMESTEPS": 1}, feedback=feedback)  # fmt: skip
    assert any("like reflectance 0..1, but S2L2A is reflectance x 10000" in w for w in feedback.warnings), feedback.warnings
    assert os.path.isfile(tmp_path / "rec.tif")


def test_a_file_qgis_cannot_open_is_not_called_not_found(terramind_provider, tmp_path):
    """A container of several rasters lists them and says how to pick one; a damaged file gives GDAL's reason."""
    gpkg = tmp_path / "two.gpkg"
    for i, table in enumerate(("first", "second")):
        options = [f"RASTER_TABLE={table}"] + (["APPEND_SUBDATASET=YES"] if i else [])
        ds = gdal.GetDriverByName("GPKG").Create(str(gpkg), 64, 64, 1, gdal.GDT_Int16, options=options)
        ds.SetGeoTransform((500000, 10, 0, 4000000, 0, -10))
        ds.SetProjection("EPSG:32633")
        ds.GetRasterBand(1).WriteArray(np.full((64, 64), 5, np.int16))
        ds = None
    dem = {"MODALITY": "DEM", "MODEL": "test_tokenizer_dem"}
    msg = _fails(RECONSTRUCT, {**_rec(str(gpkg), tmp_path), **dem}, r"INPUT: '.*two\.gpkg' holds 2 rasters")
    assert f"('GPKG:{gpkg}:first', 'GPKG:{gpkg}:second'); add the one you want as a layer" in msg and "not found" not in msg
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + b"\x00" * 64)
    msg = _fails(RECONSTRUCT, {**_rec(str(junk), tmp_path), **dem},
                 r"INPUT: '.*junk\.tif' exists but is not a raster QGIS can read \(")
    assert "not found" not in msg and not os.path.exists(tmp_path / "rec.tif")
    # the table itself, picked as listed, runs
    processing.run(RECONSTRUCT, {**_rec(f"GPKG:{gpkg}:second", tmp_path), **dem, "TIMESTEPS": 1})
    assert os.path.isfile(tmp_path / "rec.tif")
