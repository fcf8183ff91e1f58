"""Scenes from STAC, CSV, text lists and globs; the template; the manifest; command-line errors (no cluster)."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import rasterio
from fleet_fixtures import (
    EXAMPLES,
    fleet_command,
    fleet_env,
    run_fleet,
    template,
    write_template,
)
from rasterio.transform import from_origin

from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.fleet.manifest import (
    Manifest,
    file_digest,
    outputs_match,
    read_records,
)
from terramind_qgis.models.fleet.plan import make_plan
from terramind_qgis.models.fleet.scenes import load_scenes
from terramind_qgis.models.fleet.stac import parse_overrides, read_stac
from terramind_qgis.models.fleet.template import JobTemplate

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def _band(path, value: int, size: int = 48, pixel: float = 10.0) -> str:
    """A single-band raster covering the same 480 m square at ``pixel`` m (``value`` + its row index)."""
    data = (np.full((size, size), value, np.int16) + np.arange(size, dtype=np.int16)[:, None])[None]
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="int16", crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, pixel, pixel), nodata=-1) as dst:  # fmt: skip
        dst.write(data)
    return str(path)


def _item_collection(tmp_path):
    import pystac

    def item(ident: str) -> pystac.Item:
        return pystac.Item(ident, geometry=None, bbox=None, datetime=pystac.utils.str_to_datetime("2024-05-01T10:00:00Z"),
                           properties={})  # fmt: skip

    a = item("S2A_scene/one")  # keys that are modality names; relative hrefs
    a.add_asset("s2l2a", pystac.Asset("a_s2.tif", roles=["data"]))
    a.add_asset("DEM", pystac.Asset("a_dem.tif"))
    a.add_asset("thumbnail", pystac.Asset("a.png", roles=["thumbnail"]))
    b = item("scene-two")  # one asset per band, Sentinel-2 at 10/20/60 m, Sentinel-1 vv + vh
    for i, band in enumerate(S2_BANDS):
        pixel = 20.0 if band in ("B05", "B06", "B07", "B8A", "B11", "B12") else 60.0 if band in ("B01", "B09") else 10.0
        _band(tmp_path / f"b_{band}.tif", 100 * (i + 1), size=int(480 / pixel), pixel=pixel)
        b.add_asset(band, pystac.Asset(f"b_{band}.tif"))
    for pol, value in (("vv", -12), ("vh", -20)):
        b.add_asset(pol, pystac.Asset(_band(tmp_path / f"b_{pol}.tif", value)))
    c = item("three")  # a role names the modality; a key only an override knows
    c.add_asset("elev", pystac.Asset("c_dem.tif", roles=["data", "elevation"]))
    c.add_asset("classes", pystac.Asset("c_lc.tif"))
    path = tmp_path / "items.json"
    pystac.ItemCollection([a, b, c]).save_object(dest_href=str(path))
    return str(path)


def test_stac_item_collection_assets_resolve_to_modalities(tmp_path):
    path = _item_collection(tmp_path)
    scenes = {s.id: s for s in load_scenes([path], assets=parse_overrides(["LULC=classes"]))}
    assert list(scenes) == ["S2A_scene_one", "scene-two", "three"]
    one, two, three = scenes.values()
    assert one.assets == {"S2L2A": str(tmp_path / "a_s2.tif"), "DEM": str(tmp_path / "a_dem.tif")} and not one.bands
    assert two.assets == {} and set(two.bands) == {"S2L2A", "S1GRD"}
    assert two.bands["S2L2A"] == tuple(str(tmp_path / f"b_{b}.tif") for b in S2_BANDS)
    assert two.bands["S1GRD"] == (str(tmp_path / "b_vv.tif"), str(tmp_path / "b_vh.tif"))
    assert three.assets == {"DEM": str(tmp_path / "c_dem.tif"), "LULC": str(tmp_path / "c_lc.tif")}
    assert "LULC" not in {s.id: s for s in read_stac(path, {})}["three"].assets, "'classes' maps only when told"


def test_band_assets_become_a_vrt_the_worker_reads_as_one_raster(tmp_path):
    path = _item_collection(tmp_path)
    tmpl = JobTemplate({**template(), "inputs": {"S2L2A": {}, "S1GRD": {"optional": True}}}, str(tmp_path))
    plan = make_plan(tmpl, load_scenes([path]), str(tmp_path / "out"))
    assert set(plan.broken) == {"three"} and "scene 'three' has no S2L2A raster" in plan.broken["three"]
    job = {j.scene: j.job for j in plan.jobs}["scene-two"]
    s2, s1 = job["inputs"]["S2L2A"]["path"], job["inputs"]["S1GRD"]["path"]
    assert s2 == str(tmp_path / "out" / ".fleet" / "vrt" / "scene-two.S2L2A.vrt")
    with rasterio.open(s2) as vrt, rasterio.open(tmp_path / "b_B02.tif") as b02, rasterio.open(tmp_path / "b_B8A.tif") as b8a:
        assert (vrt.count, vrt.width, vrt.height, vrt.crs) == (12, 48, 48, b02.crs) and vrt.transform == b02.transform
        data = vrt.read()
        assert np.array_equal(data[1], b02.read(1)), "10 m bands are copied"
        assert data[8].min() >= b8a.read(1).min() and data[8].max() <= b8a.read(1).max(), "20 m bands resampled"
    with rasterio.open(s1) as vrt:
        assert vrt.count == 2 and vrt.read(1)[0, 0] == -12 and vrt.read(2)[0, 0] == -20
    assert "S1GRD" not in {j.scene: j.job for j in plan.jobs}["S2A_scene_one"]["inputs"], "optional input left out"


def test_stac_catalog_and_the_command_line(tmp_path):
    import pystac

    _band(tmp_path / "dem.tif", 5)
    cat = pystac.Catalog("cat", "test catalog")
    for ident in ("x1", "x2"):
        it = pystac.Item(ident, None, None, pystac.utils.str_to_datetime("2024-05-01T10:00:00Z"), {})
        it.add_asset("dem", pystac.Asset(str(tmp_path / "dem.tif")))
        cat.add_item(it)
    cat.normalize_hrefs(str(tmp_path / "catalog"))
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    data = {**template(), "task": "reconstruct", "inputs": {"DEM": {}}, "params": {"modality": "DEM"}}
    code, lines, stderr = run_fleet(write_template(tmp_path, data), str(tmp_path / "catalog" / "catalog.json"), "-o",
                                    str(tmp_path / "out"), "--dry-run")  # fmt: skip
    assert code == 0, stderr
    assert [(x["scene"], x["status"], x["job"]["inputs"]["DEM"]["path"]) for x in lines] == [
        ("x1", "to_run", str(tmp_path / "dem.tif")), ("x2", "to_run", str(tmp_path / "dem.tif"))]  # fmt: skip
    assert lines[0]["job"]["outputs"] == {"reconstruction": str(tmp_path / "out" / "x1" / "rec.tif")}


def test_csv_text_and_globs(tmp_path):
    lulc, dem = EXAMPLES / "LULC", EXAMPLES / "DEM"
    paired = load_scenes([f"LULC={lulc}/*.tif", f"DEM={dem}/*.tif"])
    assert len(paired) == 4 and all(set(s.assets) == {"LULC", "DEM"} for s in paired)
    assert paired[0].id == "282D_485L_3_3" and paired[0].assets["DEM"] == str(dem / "282D_485L_3_3.tif")
    (tmp_path / "list.txt").write_text(f"# scenes\n{lulc}/38D_378R_2_3.tif\nrel.tif  # relative\n", encoding="utf-8")
    listed = load_scenes([str(tmp_path / "list.txt")], modality="lulc")
    assert [(s.id, s.assets) for s in listed] == [("38D_378R_2_3", {"LULC": str(lulc / "38D_378R_2_3.tif")}),
                                                  ("rel", {"LULC": str(tmp_path / "rel.tif")})]  # fmt: skip
    (tmp_path / "s.csv").write_text("id,s1grd,Dem\nmine,a.tif,\n,b.tif,c.tif\n", encoding="utf-8")
    rows = load_scenes([str(tmp_path / "s.csv")])
    assert [(s.id, sorted(s.assets)) for s in rows] == [("mine", ["S1GRD"]), ("b", ["DEM", "S1GRD"])]
    with pytest.raises(ConfigError, match="two scenes have the id '38D_378R_2_3'"):
        load_scenes([str(tmp_path / "list.txt"), f"{lulc}/38D_*.tif"], modality="LULC")
    with pytest.raises(ConfigError, match="say which with --modality"):
        load_scenes([f"{lulc}/*.tif"])
    (tmp_path / "bad.csv").write_text("scene,S9X\nx,a.tif\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="column 'S9X' is not a modality"):
        load_scenes([str(tmp_path / "bad.csv")])


def test_template_rules(tmp_path):
    base = template()
    for outputs, pattern in (({"reconstruction": "rec.tif"}, r"must contain \{scene\}"),
                             ({"reconstruction": "/abs/{scene}.tif"}, "must be relative"),
                             ({"reconstruction": "{scene}/{date}.tif"}, r"unknown placeholder \{date\}")):  # fmt: skip
        with pytest.raises(ConfigError, match=pattern):
            JobTemplate({**base, "outputs": outputs}, str(tmp_path))
    with pytest.raises(ConfigError, match="task must be one of generate, reconstruct, segment, map_water"):
        JobTemplate({**base, "task": "download"}, str(tmp_path))
    gen = JobTemplate({**base, "task": "generate", "outputs": None, "inputs": {"S2L2A": {"path": "{s2l2a}"},
                                                                              "DEM": {"path": "mosaic/dem.tif"}},
                       "params": {"outputs": ["LULC", "NDVI"]}, "device": "cuda:1"}, str(tmp_path))  # fmt: skip
    assert gen.output_paths == {"LULC": "{scene}/LULC.tif", "NDVI": "{scene}/NDVI.tif"} and gen.gpu
    job = gen.scene_job("s1", {"S2L2A": "/data/s2.tif"}, "/out")
    assert job.job["inputs"] == {"S2L2A": {"path": "/data/s2.tif"}, "DEM": {"path": str(tmp_path / "mosaic" / "dem.tif")}}
    assert job.outputs == {"LULC": "/out/s1/LULC.tif", "NDVI": "/out/s1/NDVI.tif"} and job.gpu
    assert job.job_sha256 != gen.scene_job("s2", {"S2L2A": "/data/s2.tif"}, "/out").job_sha256
    with pytest.raises(ConfigError, match="scene 's1' has no S2L2A raster for input 'S2L2A' \\(it has: DEM\\)"):
        gen.scene_job("s1", {"DEM": "/d.tif"}, "/out")
    with pytest.raises(ConfigError, match="scene 'x': tiling.tile_size: must be"):
        JobTemplate({**base, "tiling": {"tile_size": 20}}, str(tmp_path)).scene_job("x", {"LULC": "/a.tif"}, "/o")


def test_manifest_ignores_a_torn_line_and_is_one_writer_at_a_time(tmp_path):
    out = tmp_path / "out"
    (out / "s").mkdir(parents=True)
    (out / "s" / "a.tif").write_bytes(b"pixels")
    digest, size = file_digest(str(out / "s" / "a.tif"))
    rec = {"scene": "s", "status": "succeeded", "outputs": {"a": {"path": "s/a.tif", "sha256": digest, "bytes": size}}}
    (out / "manifest.jsonl").write_text(json.dumps(rec) + "\n" + '{"scene": "t", "sta', encoding="utf-8")
    assert [r["scene"] for r in read_records(str(out / "manifest.jsonl"))] == ["s"]
    with Manifest(str(out)) as m:
        with pytest.raises(ConfigError, match="another fleet is writing"):
            Manifest(str(out)).__enter__()
        m.append({"scene": "u", "status": "failed"})
    assert [r["scene"] for r in read_records(str(out / "manifest.jsonl"))] == ["s", "u"]
    outputs = {"a": str(out / "s" / "a.tif")}
    assert outputs_match(rec, str(out), outputs)
    (out / "s" / "a.tif").write_bytes(b"pixelz")  # same size, other bytes
    assert not outputs_match(rec, str(out), outputs)


@pytest.mark.parametrize("args,pattern", [
    (["--workers", "0"], "argument --workers: must be at least 1"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--asset", "S2L2A"], "--asset takes MODALITY=KEY"),
    (["--gpus-per-worker", "1", "--scheduler", "tcp://h:1"], "--gpus-per-worker is for the LocalCluster"),
])  # fmt: skip
def test_a_bad_command_line_is_one_line_and_exit_2(tmp_path, args, pattern):
    tmpl = write_template(tmp_path, template())
    proc = subprocess.run(fleet_command(tmpl, str(EXAMPLES / "LULC" / "*.tif"), "-o", str(tmp_path / "o"), *args),
                          capture_output=True, text=True, env=fleet_env(), timeout=60)  # fmt: skip
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and pattern in lines[0], proc.stderr
    assert not os.path.exists(tmp_path / "o")


def test_a_bad_template_is_an_error_event(tmp_path):
    tmpl = write_template(tmp_path, {**template(), "outputs": {"reconstruction": "rec.tif"}})
    code, events, stderr = run_fleet(tmpl, str(EXAMPLES / "LULC" / "*.tif"), "-o", str(tmp_path / "o"))
    assert code == 2 and len(stderr.splitlines()) == 1 and "must contain {scene}" in stderr
    assert events == [{"event": "error", "type": "ConfigError", "message": stderr.strip().split("fleet: ", 1)[1]}]


@pytest.mark.parametrize("visible,args,pattern", [
    ("", [], "the template's device is cuda but this machine shows no GPU"),
    ("0,1", ["--workers", "3"], "3 worker(s) x 1 GPU(s) need 3 GPUs; this machine shows 2: give --workers 2"),
])  # fmt: skip
def test_a_cuda_fleet_on_a_local_cluster_needs_the_gpus(tmp_path, visible, args, pattern):
    tmpl = write_template(tmp_path, template(device="cuda"))
    env = {**fleet_env(), "CUDA_VISIBLE_DEVICES": visible}
    proc = subprocess.run(fleet_command(tmpl, str(EXAMPLES / "LULC" / "*.tif"), "-o", str(tmp_path / "o"), *args),
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"terramind fleet: {pattern}"), proc.stderr


def test_an_unreachable_scheduler_is_one_line_and_exit_1(tmp_path):
    env = {**fleet_env(), "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    proc = subprocess.run(fleet_command(write_template(tmp_path, template()), str(EXAMPLES / "LULC" / "38D_378R_2_3.tif"),
                                        "-o", str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:9", "--events"),
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "cannot reach the Dask scheduler tcp://127.0.0.1:9" in lines[0]
    assert json.loads(proc.stdout)["type"] == "WorkerError"
    assert os.listdir(tmp_path / "o") == ["manifest.jsonl"] and (tmp_path / "o" / "manifest.jsonl").read_text() == ""
