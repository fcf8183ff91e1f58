"""The worker as the safety boundary (real subprocesses, the command line scripts and fleets call).

Every output rule of ``models/core/outputs.py`` is enforced by the worker itself, for every task that
writes files, before any model is loaded: an output equal to, a symbolic link to or a hard link of an
input; two outputs on one file; a missing or unwritable folder. Each refusal is exit 2, one stderr line
naming the job field, one ``error`` event and nothing else (no model loaded, no device reported), no
file written and the input byte-identical.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from worker_fixtures import CATALOGUE, S2, reconstruct_job, run_worker, write_job

from terramind_qgis.models.core.job import EXIT_BAD_JOB


def digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def refused_before_loading(job: dict, tmp: Path, field: str, pattern: str) -> None:
    """Exit 2, one line ``<field>: ...pattern...``, only an error event, inputs unchanged, no new file."""
    inputs = [d["path"] for d in job["inputs"].values()]
    before = {p: digest(p) for p in inputs}
    listing = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.name != "job.json")
    code, events, stderr = run_worker(write_job(tmp, job))
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == EXIT_BAD_JOB, stderr
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"terramind worker: {field}: ") and pattern in lines[0], lines[0]
    assert [e["event"] for e in events] == ["error"], "nothing ran (no device, no model) before the refusal"
    assert events[0]["field"] == field and pattern in events[0]["message"]
    assert {p: digest(p) for p in inputs} == before, "the input is byte-identical"
    assert sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.name != "job.json") == listing, "no file left"


@pytest.fixture
def own_input(tmp_path) -> str:
    """A copy of the example Sentinel-2 patch the test may (wrongly) ask to overwrite."""
    path = tmp_path / "in" / "s2.tif"
    path.parent.mkdir()
    shutil.copy(S2, path)
    return str(path)


def test_output_equal_to_the_input_is_refused(tmp_path, own_input):
    job = reconstruct_job(tmp_path, path=own_input)
    job["outputs"]["reconstruction"] = own_input
    refused_before_loading(job, tmp_path, "outputs.reconstruction", "is the file of input layer 'my layer'")


def test_output_spelled_differently_or_linked_to_the_input_is_refused(tmp_path, own_input):
    other = tmp_path / "in" / ".." / "in" / "s2.tif"  # same file, other spelling
    job = reconstruct_job(tmp_path, path=own_input)
    job["outputs"]["difference"] = str(other)
    refused_before_loading(job, tmp_path, "outputs.difference", "writing there would destroy the input")
    link = tmp_path / "out" / "symlink.tif"
    link.symlink_to(own_input)
    job["outputs"]["difference"] = str(link)
    refused_before_loading(job, tmp_path, "outputs.difference", "is the file of input layer 'my layer'")
    hard = tmp_path / "out" / "hardlink.tif"
    os.link(own_input, hard)
    job["outputs"]["difference"] = str(hard)
    refused_before_loading(job, tmp_path, "outputs.difference", "is the file of input layer 'my layer'")


def test_an_input_given_as_a_link_to_the_output_is_refused(tmp_path, own_input):
    """The other way round: the input is a hard link of a file named as the output."""
    job = reconstruct_job(tmp_path)
    linked = tmp_path / "in" / "linked.tif"
    os.link(own_input, linked)
    job["inputs"]["S2L2A"]["path"] = str(linked)
    job["outputs"]["reconstruction"] = own_input
    refused_before_loading(job, tmp_path, "outputs.reconstruction", "is the file of input layer 'my layer'")


def test_two_outputs_on_one_file_are_refused(tmp_path):
    job = reconstruct_job(tmp_path)
    job["outputs"]["difference"] = job["outputs"]["reconstruction"]
    refused_before_loading(job, tmp_path, "outputs.difference", "is also the file of outputs.reconstruction")


def test_missing_and_unwritable_folders_are_refused(tmp_path):
    job = reconstruct_job(tmp_path)
    job["outputs"]["reconstruction"] = str(tmp_path / "nowhere" / "rec.tif")
    refused_before_loading(job, tmp_path, "outputs.reconstruction", f"the folder '{tmp_path / 'nowhere'}' does not exist")
    job["outputs"]["reconstruction"] = "/proc/rec.tif"  # exists, and not even root can create files there
    refused_before_loading(job, tmp_path, "outputs.reconstruction", "cannot write in the folder '/proc'")


TINY = {"id": "test_terramind_tiny", "untrained": True, "catalogue_paths": [str(CATALOGUE)]}


def _task_job(task: str, inp: str, out_dir: Path) -> tuple[dict, str]:
    """A valid job of ``task`` reading ``inp``; returns it and the output key to aim at the input."""
    tiling = {"tile_size": 224, "overlap": 32, "batch_size": 1}
    if task == "generate":
        return {"protocol": 1, "task": task, "inputs": {"S2L2A": {"path": inp, "name": "my layer"}},
                "outputs": {"DEM": str(out_dir / "dem.tif")}, "model": TINY,
                "params": {"outputs": ["DEM"], "timesteps": 1}, "tiling": tiling, "device": "cpu"}, "DEM"  # fmt: skip
    if task == "map_water":
        return {"protocol": 1, "task": task, "inputs": {"S2L2A": {"path": inp, "name": "my layer"}},
                "outputs": {"water": str(out_dir / "w.tif")}, "model": TINY, "tiling": tiling, "device": "cpu"}, "water"
    if task == "embed":
        return {"protocol": 1, "task": task, "inputs": {"S2L2A": {"path": inp, "name": "my layer"}},
                "outputs": {"embeddings": str(out_dir / "e.tif")}, "model": TINY,
                "tiling": {"tile_size": 128, "overlap": 32, "batch_size": 1}, "device": "cpu"}, "embeddings"  # fmt: skip
    key = {"similarity": "similarity", "cluster": "clusters", "classify": "classes"}[task]
    point = {"type": "Point", "coordinates": [0.0, 0.0]}
    params = {"similarity": {"references": {"crs": "EPSG:4326", "features": [{"id": 1, "geometry": point}]}},
              "cluster": {"clusters": 3},
              "classify": {"folds": 2, "labels": {"crs": "EPSG:4326", "features": [{"id": 1, "class": "a", "geometry": point},
                                                                      {"id": 2, "class": "b", "geometry": point}]}},
              }[task]  # fmt: skip
    return {"protocol": 1, "task": task, "inputs": {"EMBEDDINGS": {"path": inp, "name": "my layer"}},
            "outputs": {key: str(out_dir / "o.tif")}, "model": {"id": "embeddings"}, "params": params,
            "device": "cpu"}, key  # fmt: skip


@pytest.mark.parametrize("task", ["generate", "map_water", "embed", "similarity", "cluster", "classify"])
def test_every_task_refuses_to_write_over_its_input(tmp_path, own_input, task):
    (tmp_path / "out").mkdir()
    job, key = _task_job(task, own_input, tmp_path / "out")
    job["outputs"][key] = own_input
    refused_before_loading(job, tmp_path, f"outputs.{key}", "is the file of input layer 'my layer'")


# ----------------------------------------------------------------------------- reads that fail
def _truncated_s2(folder: Path) -> str:
    """The example patch as a tiled GeoTIFF cut in half: it opens, its lower blocks cannot be read."""
    import rasterio

    with rasterio.open(S2) as src:
        profile, data = src.profile, src.read()
    whole = folder / "whole.tif"
    profile.update(tiled=True, blockxsize=64, blockysize=64, compress="none")
    with rasterio.open(whole, "w", **profile) as dst:
        dst.write(data)
    cut = folder / "truncated.tif"
    raw = whole.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    whole.unlink()
    return str(cut)


def _one_line(code: int, events: list[dict], stderr: str, expected: int) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == expected, stderr
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert events[-1]["event"] == "error" and events[-1]["message"] in lines[0]
    return lines[0]


def test_a_truncated_geotiff_is_one_line_naming_the_file_and_window_and_leaves_no_file(tmp_path):
    (tmp_path / "in").mkdir()
    cut = _truncated_s2(tmp_path / "in")
    before = digest(cut)
    job = reconstruct_job(tmp_path, path=cut, tile=64, overlap=0)
    code, events, stderr = run_worker(write_job(tmp_path, job))
    line = _one_line(code, events, stderr, EXIT_BAD_JOB)  # found by the value rules' sample, before loading
    assert [e["event"] for e in events] == ["error"]
    assert f"layer 'my layer': cannot read '{cut}' (rows " in line and "columns " in line, line
    assert "TIFFRead" in line or "IReadBlock" in line, "GDAL's own reason, not 'see previous exception'"
    assert digest(cut) == before and os.listdir(tmp_path / "out") == [], "no output, not even a partial one"


def _vrt_with_a_missing_source(folder: Path) -> tuple[str, str]:
    """A VRT mosaic of the example patch and a shifted copy; the copy is then deleted."""
    import rasterio
    from osgeo import gdal

    left, right = folder / "left.tif", folder / "right.tif"
    shutil.copy(S2, left)
    with rasterio.open(S2) as src:
        profile, data, t = src.profile, src.read(), src.transform
    profile.update(transform=rasterio.Affine(t.a, t.b, t.c + 224 * t.a, t.d, t.e, t.f))
    with rasterio.open(right, "w", **profile) as dst:
        dst.write(data)
    vrt = folder / "mosaic.vrt"
    gdal.BuildVRT(str(vrt), [str(left), str(right)]).FlushCache()
    right.unlink()
    return str(vrt), str(right)


def test_a_vrt_whose_source_is_missing_is_refused_naming_it(tmp_path):
    (tmp_path / "in").mkdir()
    vrt, gone = _vrt_with_a_missing_source(tmp_path / "in")
    before = digest(vrt)
    job = reconstruct_job(tmp_path, path=vrt)
    code, events, stderr = run_worker(write_job(tmp_path, job))
    line = _one_line(code, events, stderr, EXIT_BAD_JOB)
    assert f"layer 'my layer': the VRT '{vrt}' refers to 1 source file(s) that do not exist ('{gone}')" in line
    assert [e["event"] for e in events] == ["error"], "refused before any model is loaded"
    assert digest(vrt) == before and os.listdir(tmp_path / "out") == []


def test_every_read_goes_through_one_guarded_function(tmp_path):
    """A read error anywhere in the reader (direct, warped, mask, embedding raster) is a RasterReadError:
    the reader and the embedding source call ``read_window`` and nothing else reads pixels."""
    import re

    from worker_fixtures import REPO

    from terramind_qgis.models.core.errors import RasterReadError
    from terramind_qgis.models.engine.reader import read_window

    readers = set()
    for path in (REPO / "models").rglob("*.py"):
        if "training" in path.parts:  # the training data set reads whole chips of its own files
            continue
        text = path.read_text(encoding="utf-8")
        calls = re.finditer(r"\b\w+\.(read|dataset_mask|read_masks)\([^)]*window", text)
        readers |= {f"{path.name}: {m.group(0)}" for m in calls}
    assert readers == {"reader.py: src.dataset_mask(window=window", "reader.py: src.read(indexes, window=window"}, readers
    import rasterio

    (tmp_path / "in").mkdir()
    cut = _truncated_s2(tmp_path / "in")
    with rasterio.open(cut) as src, pytest.raises(RasterReadError, match=r"layer 'x': cannot read .*rows 192-223"):
        read_window(src, ((192, 224), (0, 224)), "layer 'x'", indexes=[1])


# ----------------------------------------------------------------------------- one-line errors, always
def test_library_warnings_are_warning_events_never_stray_lines(tmp_path):
    """A raster without georeferencing: rasterio's NotGeoreferencedWarning is a warning event, and
    stderr holds the one-line error alone."""
    import rasterio

    with rasterio.open(S2) as src:
        profile, data = src.profile, src.read()
    for key in ("crs", "transform"):
        profile.pop(key)
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "plain.tif"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    code, events, stderr = run_worker(write_job(tmp_path, reconstruct_job(tmp_path, path=str(path))))
    line = _one_line(code, events, stderr, EXIT_BAD_JOB)
    assert f"layer 'my layer': '{path}' has no georeferencing" in line
    assert [e["event"] for e in events] == ["warning", "error"]
    assert events[0]["message"].startswith("NotGeoreferencedWarning: Dataset has no geotransform")


def test_warnings_and_log_records_of_libraries_become_events(tmp_path):
    """``capture_library_warnings`` as the worker installs it: Python warnings and WARNING log records
    (GDAL messages that rasterio logs) are events, each distinct text once; nothing reaches stderr."""
    import json
    import subprocess
    import sys

    from worker_fixtures import worker_env

    script = (
        "import logging, sys, warnings\n"
        "from terramind_qgis.models.worker.events import EventStream, WorkerProgress, capture_library_warnings\n"
        "capture_library_warnings(WorkerProgress(EventStream(sys.stdout)))\n"
        "for _ in range(3):\n"
        "    warnings.warn('a library says so', UserWarning)\n"
        "logging.getLogger('rasterio._env').warning('CPLE_AppDefined in %s', 'f.tif')\n"
        "logging.getLogger('rasterio._env').info('not for the user')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=worker_env(), timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events == [{"event": "warning", "message": "UserWarning: a library says so"},
                      {"event": "warning", "message": "rasterio._env: CPLE_AppDefined in f.tif"}]  # fmt: skip


def test_layers_that_do_not_overlap_are_named_both_with_bounds_in_one_crs(tmp_path):
    import rasterio
    from worker_fixtures import EXAMPLES

    s1 = EXAMPLES / "S1RTC" / "282D_485L_3_3.tif"
    with rasterio.open(s1) as src:
        profile, data = src.profile, src.read()
    far = tmp_path / "far.tif"
    profile.update(crs="EPSG:4326", transform=rasterio.Affine(1e-4, 0, -170.0, 0, -1e-4, -40.0))  # another CRS too
    with rasterio.open(far, "w", **profile) as dst:
        dst.write(data)
    (tmp_path / "out").mkdir()
    job, _ = _task_job("generate", S2, tmp_path / "out")
    job["inputs"]["S1RTC"] = {"path": str(far), "name": "radar"}
    code, events, stderr = run_worker(write_job(tmp_path, job))
    line = _one_line(code, events, stderr, EXIT_BAD_JOB)
    assert "layer 'radar' does not overlap layer 'my layer': layer 'radar' covers [" in line
    assert ", layer 'my layer' [790236.0, 7195799.3, 792476.0, 7198039.3] (left, bottom, right, top in EPSG:32722)" in line
    assert "inf" not in line and os.listdir(tmp_path / "out") == []


def test_a_container_of_several_rasters_lists_them_and_one_picked_runs(tmp_path):
    import numpy as np
    from osgeo import gdal

    gpkg = tmp_path / "in" / "two.gpkg"
    gpkg.parent.mkdir()
    for i, table in enumerate(("first", "second")):
        options = [f"RASTER_TABLE={table}"] + (["APPEND_SUBDATASET=YES"] if i else [])
        ds = gdal.GetDriverByName("GPKG").Create(str(gpkg), 64, 64, 1, gdal.GDT_Int16, options=options)  # elevations
        ds.SetGeoTransform((500000, 10, 0, 4000000, 0, -10))
        ds.SetProjection("EPSG:32633")
        ds.GetRasterBand(1).WriteArray(np.full((64, 64), 100 * (i + 1), np.int16))
        ds = None
    job = reconstruct_job(tmp_path, path=str(gpkg), modality="DEM", model="test_tokenizer_dem", tile=64, overlap=0)
    code, events, stderr = run_worker(write_job(tmp_path, job))
    line = _one_line(code, events, stderr, EXIT_BAD_JOB)
    assert (f"layer 'my layer': '{gpkg}' holds 2 rasters ('GPKG:{gpkg}:first', 'GPKG:{gpkg}:second'); "
            "give one of them as the path") in line  # fmt: skip
    assert [e["event"] for e in events] == ["error"], "no misleading 'no geotransform' warning for a container"
    job["inputs"]["DEM"]["path"] = f"GPKG:{gpkg}:second"
    code, events, stderr = run_worker(write_job(tmp_path, job))
    assert code == 0, stderr
    assert os.path.isfile(tmp_path / "out" / "rec.tif")


# ----------------------------------------------------------------------------- bottom-up grids
def _bottom_up_copy(source: str, path: Path) -> str:
    """``source`` stored bottom-up: rows reversed, positive y pixel size, origin at the south-west corner."""
    import rasterio

    with rasterio.open(source) as src:
        profile, data, t = src.profile, src.read(), src.transform
    profile.update(transform=rasterio.Affine(t.a, 0.0, t.c, 0.0, -t.e, t.f + t.e * src.height))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[:, ::-1, :])
    return str(path)


def test_a_bottom_up_grid_gives_exactly_the_run_on_its_north_up_copy(tmp_path):
    import numpy as np
    import rasterio

    (tmp_path / "in").mkdir()
    flipped = _bottom_up_copy(S2, tmp_path / "in" / "bottom_up.tif")
    with rasterio.open(flipped) as src:
        assert src.transform.e > 0
    results = {}
    for name, path in (("north_up", S2), ("bottom_up", flipped)):
        folder = tmp_path / name
        folder.mkdir()
        code, events, stderr = run_worker(write_job(folder, reconstruct_job(folder, path=path)))
        assert code == 0, stderr
        with rasterio.open(folder / "out" / "rec.tif") as out, rasterio.open(folder / "out" / "diff.tif") as diff:
            results[name] = (out.read(), diff.read(), out.transform, out.crs, diff.transform)
        results[name + "_info"] = [e["message"] for e in events if e["event"] == "info"]
    (a, da, ta, ca, tda), (b, db, tb, cb, tdb) = results["north_up"], results["bottom_up"]
    assert ta == tb == tda == tdb and ta.e < 0 and ca == cb, "written north-up, on the same grid"
    assert np.array_equal(a, b) and np.array_equal(da, db), "the same pixels, exactly"
    assert any("stored bottom-up (positive y pixel size); it is read flipped" in m for m in results["bottom_up_info"])
    assert not any("bottom-up" in m for m in results["north_up_info"])


def test_a_bottom_up_second_input_reads_like_its_north_up_copy(tmp_path):
    import numpy as np
    import rasterio

    from terramind_qgis.models.core.job import InputSpec
    from terramind_qgis.models.core.modalities import get_modality
    from terramind_qgis.models.engine import InputRaster
    from terramind_qgis.models.engine.grid import build_working_grid

    flipped = _bottom_up_copy(S2, tmp_path / "bottom_up.tif")
    with rasterio.open(S2) as src:
        grid = build_working_grid(src, "s2")
    m = get_modality("S2L2A")
    a, b = InputRaster("S2L2A", InputSpec(S2), m, grid), InputRaster("S2L2A", InputSpec(flipped), m, grid)
    assert not b.resampled, "read directly (flipped), not warped"
    for window in ((0, 0, 224, 224), (37, 5, 100, 61), (200, 190, 24, 34)):
        (da, va), (db, vb) = a.read(*window), b.read(*window)
        assert np.array_equal(da, db) and np.array_equal(va, vb), window
    a.close(), b.close()


def test_rotated_or_sheared_grids_are_still_refused(tmp_path):
    import rasterio

    with rasterio.open(S2) as src:
        profile, data, t = src.profile, src.read(), src.transform
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "rotated.tif"
    profile.update(transform=rasterio.Affine(t.a, 2.0, t.c, 1.5, t.e, t.f))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    code, events, stderr = run_worker(write_job(tmp_path, reconstruct_job(tmp_path, path=str(path))))
    line = _one_line(code, events, stderr, EXIT_BAD_JOB)
    assert "layer 'my layer' has a rotated, sheared or east-to-west geotransform; warp it to a north-up grid first" in line


def test_a_read_that_fails_mid_run_is_exit_1_one_line_and_no_partial_file(tmp_path):
    """Damage the sampled windows miss (a block in the middle of the tile grid): the run starts, the
    read fails, the worker says so in one line and removes its partial outputs."""
    import rasterio

    with rasterio.open(S2) as src:
        profile, data = src.profile, src.read()
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "damaged.tif"
    profile.update(tiled=True, blockxsize=16, blockysize=16, compress="deflate", interleave="pixel")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(path) as src:  # the block at rows 64-79, columns 64-79: between the sampled windows
        offset = int(src.get_tag_item("BLOCK_OFFSET_4_4", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_4_4", "TIFF", bidx=1))
    raw = bytearray(path.read_bytes())
    raw[offset: offset + size] = b"\xff" * size  # not deflate data any more
    path.write_bytes(bytes(raw))
    before = digest(path)
    code, events, stderr = run_worker(write_job(tmp_path, reconstruct_job(tmp_path, path=str(path), tile=64, overlap=0)))
    line = _one_line(code, events, stderr, 1)
    assert f"layer 'my layer': cannot read '{path}' (rows " in line
    assert any(e["event"] == "info" for e in events), "the run had started"
    assert digest(path) == before and os.listdir(tmp_path / "out") == [], "no output, not even a partial one"


def test_missing_sources_are_found_through_nested_vrts_and_remote_ones_are_left_to_gdal(tmp_path):
    from terramind_qgis.models.core.sources import missing_vrt_sources

    (tmp_path / "in").mkdir()
    _, gone = _vrt_with_a_missing_source(tmp_path / "in")
    outer = tmp_path / "outer.vrt"
    outer.write_text('<VRTDataset rasterXSize="448" rasterYSize="224"><VRTRasterBand dataType="Int16" band="1">'
                     '<SimpleSource><SourceFilename relativeToVRT="1">in/mosaic.vrt</SourceFilename></SimpleSource>'
                     '<SimpleSource><SourceFilename relativeToVRT="0">/vsicurl/https://example.org/x.tif</SourceFilename>'
                     '</SimpleSource><SimpleSource><SourceFilename>NETCDF:"f.nc":var</SourceFilename></SimpleSource>'
                     '</VRTRasterBand></VRTDataset>', encoding="utf-8")  # fmt: skip
    assert missing_vrt_sources(str(outer)) == [gone]
    assert missing_vrt_sources(S2) == [] and missing_vrt_sources(str(tmp_path / "nothing.vrt")) == []
