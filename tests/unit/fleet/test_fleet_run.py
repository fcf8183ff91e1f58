"""The fleet command on a real Dask LocalCluster (2 workers x 1 thread): outputs, manifest, resume.

Each scene is a real worker job (LULC reconstruction with the reduced test tokenizer on the 224 x 224
example patches), run by the fleet as a subprocess on a Dask worker.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from fleet_fixtures import (
    EXAMPLES,
    SCENES,
    partials,
    raster_content,
    read_manifest,
    run_fleet,
    template,
    write_template,
)

from terramind_qgis.models.core.job import EXIT_BAD_JOB, EXIT_OK
from terramind_qgis.models.fleet.manifest import file_digest

GOOD = SCENES[:3]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, scheduler):
    """3 good scenes and 1 broken one (a file that is not a GeoTIFF) through the fleet command."""
    tmp = tmp_path_factory.mktemp("fleet")
    broken = tmp / "broken.tif"
    broken.write_text("not a GeoTIFF\n", encoding="utf-8")
    rows = ["scene,LULC"] + [f"{s},{EXAMPLES / 'LULC' / (s + '.tif')}" for s in GOOD] + ["broken,broken.tif"]
    (tmp / "scenes.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    tmpl = write_template(tmp, template())
    out = tmp / "out"
    code, events, stderr = run_fleet(tmpl, str(tmp / "scenes.csv"), "-o", str(out), "--scheduler", scheduler)
    return {"tmp": tmp, "out": out, "template": tmpl, "csv": str(tmp / "scenes.csv"), "code": code, "events": events,
            "stderr": stderr, "scheduler": scheduler}  # fmt: skip


def _sequential_outputs(tmp, scene: str) -> str:
    """The same job run by the worker entry point, on its own (in this process)."""
    from terramind_qgis.models.core.job import Job
    from terramind_qgis.models.fleet.template import JobTemplate
    from terramind_qgis.models.worker.cli import run_job_file
    from terramind_qgis.models.worker.events import EventStream, WorkerProgress

    tmpl = JobTemplate.from_file(str(tmp / "template.json"))
    job = tmpl.scene_job(scene, {"LULC": str(EXAMPLES / "LULC" / f"{scene}.tif")}, str(tmp / "sequential")).job
    path = tmp / f"{scene}.job.json"
    path.write_text(Job.from_dict(job).to_json(), encoding="utf-8")
    os.makedirs(os.path.dirname(job["outputs"]["reconstruction"]), exist_ok=True)  # the worker writes into existing folders
    buf = io.StringIO()
    assert run_job_file(str(path), WorkerProgress(EventStream(buf))) == EXIT_OK, buf.getvalue()
    return job["outputs"]["reconstruction"]


def test_three_scenes_and_a_broken_one(first_run):
    code, events, stderr = first_run["code"], first_run["events"], first_run["stderr"]
    assert code == 3, stderr  # ran to its end, one scene failed
    result = events[-1]
    assert result["event"] == "result" and [e["event"] for e in events].count("result") == 1
    assert result["metrics"] | {"seconds": 0} == {"scenes": 4, "skipped": 0, "succeeded": 3, "failed": 1, "cancelled": 0,
                                                  "seconds": 0}  # fmt: skip
    assert set(result["failures"]) == {"broken"}
    percents = [e["percent"] for e in events if e["event"] == "progress"]
    assert percents == sorted(percents) and percents[-1] == 100.0
    infos = [e["message"] for e in events if e["event"] == "info"]
    assert any(m.startswith("Dask dashboard: http") for m in infos)
    for scene in GOOD:
        assert any(m.startswith(f"scene {scene}: started on tcp://") for m in infos)
        assert any(m.startswith(f"scene {scene}: done in ") for m in infos)
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("scene broken failed: InputRasterError")
    assert "Traceback" not in stderr


def test_manifest_records_each_scene_with_checksums_and_the_broken_ones_error(first_run):
    out = first_run["out"]
    records = {r["scene"]: r for r in read_manifest(out)}
    assert set(records) == {*GOOD, "broken"}
    for scene in GOOD:
        r = records[scene]
        assert r["status"] == "succeeded" and r["attempts"] == 1 and r["error"] is None and r["task"] == "reconstruct"
        entry = r["outputs"]["reconstruction"]
        assert entry["path"] == f"{scene}/rec.tif"
        assert (entry["sha256"], entry["bytes"]) == file_digest(str(out / scene / "rec.tif"))
        assert r["worker"].startswith("tcp://") and r["seconds"] > 0 and r["peak_rss_mb"] > 50
        assert r["exit_code"] == 0 and len(r["job_sha256"]) == 64
    bad = records["broken"]
    assert bad["status"] == "failed" and bad["exit_code"] == EXIT_BAD_JOB
    assert bad["attempts"] == 1, "a bad job is not retried"
    assert bad["error"].startswith("InputRasterError: ") and "broken.tif" in bad["error"] and "\n" not in bad["error"]
    assert bad["outputs"] == {} and not os.path.exists(out / "broken")
    assert not partials(out)


def test_outputs_equal_sequential_worker_runs(first_run):
    """Pixels, georeferencing, colour table and every tag but the creation time: the same as the worker alone."""
    tmp, out = first_run["tmp"], first_run["out"]
    for scene in GOOD:
        facts, pixels = raster_content(str(out / scene / "rec.tif"))
        ref_facts, ref_pixels = raster_content(_sequential_outputs(tmp, scene))
        assert facts == ref_facts
        assert pixels.dtype == ref_pixels.dtype and np.array_equal(pixels, ref_pixels)
    assert not np.array_equal(raster_content(str(out / GOOD[0] / "rec.tif"))[1],
                              raster_content(str(out / GOOD[1] / "rec.tif"))[1]), "scenes differ"  # fmt: skip


def _good_csv(run) -> str:
    """The scene list without its broken scene."""
    path = run["tmp"] / "good.csv"
    path.write_text("\n".join(Path(run["csv"]).read_text(encoding="utf-8").splitlines()[:-1]) + "\n", encoding="utf-8")
    return str(path)


def test_rerun_after_success_does_nothing(first_run):
    out = first_run["out"]
    before = (out / "manifest.jsonl").read_text(encoding="utf-8")
    mtimes = {s: os.stat(out / s / "rec.tif").st_mtime_ns for s in GOOD}
    # without the broken scene every scene is complete: no cluster is even needed (nothing listens on port 9)
    code, events, stderr = run_fleet(first_run["template"], _good_csv(first_run), "-o", str(out), "--scheduler",
                                     "tcp://127.0.0.1:9")  # fmt: skip
    assert code == EXIT_OK, stderr
    assert events[-1]["metrics"] | {"seconds": 0} == {"scenes": 3, "skipped": 3, "succeeded": 0, "failed": 0, "cancelled": 0,
                                                      "seconds": 0}  # fmt: skip
    assert any("nothing to do" in e.get("message", "") for e in events)
    assert (out / "manifest.jsonl").read_text(encoding="utf-8") == before
    assert {s: os.stat(out / s / "rec.tif").st_mtime_ns for s in GOOD} == mtimes


def test_rerun_after_deleting_an_output_redoes_only_that_scene(first_run):
    out, scene = first_run["out"], GOOD[1]
    others = {s: os.stat(out / s / "rec.tif").st_mtime_ns for s in GOOD if s != scene}
    _, old_pixels = raster_content(str(out / scene / "rec.tif"))
    os.remove(out / scene / "rec.tif")
    n_before = len(read_manifest(out))
    code, events, stderr = run_fleet(first_run["template"], _good_csv(first_run), "-o", str(out), "--scheduler",
                                     first_run["scheduler"])  # fmt: skip
    assert code == EXIT_OK, stderr
    m = events[-1]["metrics"]
    assert (m["skipped"], m["succeeded"], m["failed"]) == (2, 1, 0)
    started = [e["message"].split(":")[0] for e in events if e["event"] == "info" and ": started on " in e["message"]]
    assert started == [f"scene {scene}"]
    new = read_manifest(out)[n_before:]
    assert [r["scene"] for r in new] == [scene]
    assert {s: os.stat(out / s / "rec.tif").st_mtime_ns for s in GOOD if s != scene} == others
    rec = next(r for r in new if r["scene"] == scene)
    assert rec["outputs"]["reconstruction"]["sha256"] == file_digest(str(out / scene / "rec.tif"))[0]
    assert np.array_equal(raster_content(str(out / scene / "rec.tif"))[1], old_pixels)


def test_a_changed_template_reruns_and_a_tampered_output_is_redone(first_run, tmp_path):
    """The manifest vouches for a scene only for the same job and the same bytes (planning only: --dry-run)."""
    out = first_run["out"]
    changed = json.loads(Path(first_run["template"]).read_text(encoding="utf-8"))
    changed["params"]["seed"] = 4
    other = write_template(tmp_path, changed)
    code, events, _ = run_fleet(other, first_run["csv"], "-o", str(out), "--dry-run")
    lines = [e for e in events if "status" in e]
    assert code == EXIT_OK and {e["scene"]: e["status"] for e in lines} == {s: "to_run" for s in (*GOOD, "broken")}
    path = out / GOOD[0] / "rec.tif"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    code, events, _ = run_fleet(first_run["template"], first_run["csv"], "-o", str(out), "--dry-run")
    status = {e["scene"]: e["status"] for e in events if "status" in e}
    assert status[GOOD[0]] == "to_run" and status[GOOD[2]] == "complete"
