"""The worker entry point as the QGIS side and headless users run it (real subprocesses)."""

from __future__ import annotations

import glob
import io
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import rasterio
from worker_fixtures import (
    EXAMPLES,
    make_mosaic,
    reconstruct_job,
    run_worker,
    worker_command,
    worker_env,
    write_job,
)  # fmt: skip

from terramind_qgis.models.core.job import EXIT_BAD_JOB, EXIT_CANCELLED, EXIT_ERROR, partial_glob
from terramind_qgis.models.core.modalities import get_modality
from terramind_qgis.models.worker.cli import run_job_file
from terramind_qgis.models.worker.events import EventStream, WorkerProgress


def _one_line_error(code, events, stderr, expected_code, expected_type, pattern):
    assert code == expected_code
    assert events[-1]["event"] == "error" and events[-1]["type"] == expected_type
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert pattern in lines[0] and pattern in events[-1]["message"]


def test_help_describes_the_command_line():
    proc = subprocess.run(worker_command("--help")[:-1] + ["--help"], capture_output=True, text=True, env=worker_env())
    assert proc.returncode == 0
    assert "job" in proc.stdout and "exit codes" in proc.stdout and "reconstruct" in proc.stdout


def _run_in_process(job_path: str, capsys) -> tuple[int, list[dict], str]:
    """``cli.run_job_file`` in this process (what ``main`` runs after claiming stdout)."""
    buf = io.StringIO()
    code = run_job_file(job_path, WorkerProgress(EventStream(buf)))
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    return code, events, capsys.readouterr().err


def test_bad_job_as_a_process_gives_one_line_an_error_event_and_exit_2(tmp_path):
    path = tmp_path / "job.json"
    path.write_text("{not json", encoding="utf-8")
    code, events, stderr = run_worker(str(path))
    _one_line_error(code, events, stderr, EXIT_BAD_JOB, "ConfigError", "job is not valid JSON")
    assert [e["event"] for e in events] == ["error"]


@pytest.mark.parametrize(
    "content,etype,pattern",
    [
        (json.dumps({"protocol": 1, "task": "paint", "model": {"id": "x"}}), "ConfigError", "unknown task 'paint'"),
        (json.dumps({"protocol": 7, "task": "describe", "model": {"id": "x"}}), "ConfigError", "job protocol 7"),
        (json.dumps({"protocol": 1, "task": "reconstruct", "model": {"id": "x"}}), "ConfigError", "needs one input"),
        (json.dumps({"task": "describe"}), "ConfigError", "malformed job"),
        (json.dumps({"task": "describe", "model": {"id": "x"}, "extent": [1, 2, 3]}), "ConfigError",
         r"extent must be four numbers"),
        (json.dumps({"task": "describe", "model": {"id": "x"}, "tiling": {"tile_size": 128.0}}), "ConfigError",
         r"tiling.tile_size: must be a whole number, got 128.0"),
        (json.dumps({"task": "describe", "model": {"id": "x"}, "inputs": {"DEM": {"path": "d.tif", "nodata": "none"}}}),
         "ConfigError", r"inputs.DEM.nodata must be a number or null"),
        (json.dumps({"task": "describe", "model": {"id": "x"}, "inputs": {"DEM": "d.tif"}}), "ConfigError",
         "malformed job"),
    ],
)
def test_bad_jobs_give_one_line_an_error_event_and_exit_2(tmp_path, capsys, content, etype, pattern):
    path = tmp_path / "job.json"
    path.write_text(content, encoding="utf-8")
    _one_line_error(*_run_in_process(str(path), capsys), EXIT_BAD_JOB, etype, pattern)


def test_missing_job_file_and_bad_inputs_are_bad_jobs(tmp_path, capsys):
    run = lambda job: _run_in_process(write_job(tmp_path, job), capsys)  # noqa: E731
    _one_line_error(*_run_in_process(str(tmp_path / "nope.json"), capsys), EXIT_BAD_JOB, "ConfigError",
                    "cannot read the job file")  # fmt: skip
    _one_line_error(*run(reconstruct_job(tmp_path, bands=[1, 2, 3])), EXIT_BAD_JOB, "InputRasterError",
                    "layer 'my layer': S2L2A needs 12")  # fmt: skip
    _one_line_error(*run(reconstruct_job(tmp_path, model="no_such_model")), EXIT_BAD_JOB, "ModelNotFoundError",
                    "'no_such_model' is not in the catalogue")  # fmt: skip
    _one_line_error(*run(reconstruct_job(tmp_path, tile=112)), EXIT_BAD_JOB, "ConfigError",
                    "tiling.tile_size: must be a multiple of 32")
    job = reconstruct_job(tmp_path)
    job["precision"] = "fp16"
    _one_line_error(*run(job), EXIT_BAD_JOB, "ConfigError", "'fp16' needs a CUDA GPU")
    job = reconstruct_job(tmp_path)
    job["params"]["timesteps"] = 0
    _one_line_error(*run(job), EXIT_BAD_JOB, "ConfigError", "params.timesteps: must be between 1 and 1000")
    assert os.listdir(tmp_path / "out") == [], "nothing is written for a bad job"


def test_describe_reports_the_environment(tmp_path):
    job = {"protocol": 1, "task": "describe", "inputs": {}, "outputs": {}, "model": {"id": ""}}
    code, events, _ = run_worker(write_job(tmp_path, job))
    assert code == 0 and events[-1]["event"] == "result"
    env = events[-1]["environment"]
    import torch

    assert env["torch"] == torch.__version__ and env["cuda_available"] == torch.cuda.is_available()
    assert env["gdal"] == rasterio.__gdal_version__ and env["device"]["device"] in ("cpu", "cuda:0")


def test_reconstruct_writes_styled_outputs_and_per_band_metrics(tmp_path):
    code, events, stderr = run_worker(write_job(tmp_path, reconstruct_job(tmp_path)))
    assert code == 0, stderr
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "result" and "progress" in kinds and kinds.count("result") == 1
    assert any(e["event"] == "info" and "device cpu" in e["message"] for e in events)
    percents = [e["percent"] for e in events if e["event"] == "progress"]
    assert percents == sorted(percents) and percents[-1] == 100.0
    result = events[-1]
    rec, diff = result["outputs"]["reconstruction"], result["outputs"]["difference"]
    labels = get_modality("S2L2A").band_labels
    assert set(result["metrics"]["psnr"]) == set(labels) == set(result["metrics"]["mae"])
    with rasterio.open(EXAMPLES / "S2L2A" / "282D_485L_3_3.tif") as src, rasterio.open(rec) as r, rasterio.open(diff) as d:
        assert r.crs == src.crs and r.transform == src.transform and r.shape == src.shape
        assert r.descriptions == labels and r.dtypes[0] == "float32" and r.nodata == -9999.0
        tags = r.tags()
        assert tags["TERRAMIND_UNTRAINED"] == "YES" and tags["TERRAMIND_MODEL_ID"] == "test_tokenizer_s2l2a"
        assert json.loads(tags["TERRAMIND_PARAMS"])["timesteps"] == 1 and "TERRAMIND_PLUGIN_VERSION" in tags
        x, y, dd = src.read().astype(np.float64), r.read().astype(np.float64), d.read().astype(np.float64)
    np.testing.assert_allclose(dd, y - x, atol=1e-2)  # difference = reconstruction - input (float32 rounding)
    mae = np.abs(y - x).mean(axis=(1, 2))
    np.testing.assert_allclose([result["metrics"]["mae"][b] for b in labels], mae, rtol=1e-5)
    rng = x.max(axis=(1, 2)) - x.min(axis=(1, 2))
    psnr = 10 * np.log10(rng**2 / ((y - x) ** 2).mean(axis=(1, 2)))
    np.testing.assert_allclose([result["metrics"]["psnr"][b] for b in labels], psnr, rtol=1e-5)
    # the DiVAE clamps to mean +- 1 std (standardized [-1, 1]): a real check of de-standardisation
    m = get_modality("S2L2A")
    lo, hi = np.array(m.mean) - np.array(m.std), np.array(m.mean) + np.array(m.std)
    assert (y.min(axis=(1, 2)) >= lo - 1e-2).all() and (y.max(axis=(1, 2)) <= hi + 1e-2).all()
    assert os.path.exists(rec[:-4] + ".qml") and os.path.exists(diff[:-4] + ".qml")
    assert not glob.glob(partial_glob(rec)) and not glob.glob(partial_glob(diff))


def test_lulc_reconstruction_is_a_class_raster_with_a_change_mask(tmp_path):
    job = reconstruct_job(tmp_path, path=str(EXAMPLES / "LULC" / "433D_629L_3_1.tif"), modality="LULC",
                          model="test_tokenizer_lulc", tile=112, overlap=16)  # fmt: skip
    code, events, stderr = run_worker(write_job(tmp_path, job))
    assert code == 0, stderr
    res = events[-1]
    with rasterio.open(res["outputs"]["reconstruction"]) as r, rasterio.open(res["outputs"]["difference"]) as d:
        assert r.dtypes[0] == "uint8" and r.nodata == 255 and r.colormap(1)[2][:3] == (0x46, 0x9C, 0x76)
        classes, changed = r.read(1), d.read(1)
    with rasterio.open(EXAMPLES / "LULC" / "433D_629L_3_1.tif") as src:
        truth = src.read(1)
    assert classes.max() <= 9 and np.array_equal(changed, (classes != truth).astype(np.uint8))
    assert res["metrics"]["accuracy"] == pytest.approx((classes == truth).mean())


def test_error_mid_run_removes_partial_outputs(tmp_path):
    bad = np.full((1, 224, 224), 4, np.uint8)
    bad[0, 150:, 150:] = 42  # not a LULC class: found only when that tile is predicted
    with rasterio.open(EXAMPLES / "LULC" / "433D_629L_3_1.tif") as src:
        profile = src.profile
    with rasterio.open(tmp_path / "bad.tif", "w", **profile) as dst:
        dst.write(bad)
    job = reconstruct_job(tmp_path, path=str(tmp_path / "bad.tif"), modality="LULC", model="test_tokenizer_lulc",
                          tile=112, overlap=16, batch=1)  # fmt: skip
    code, events, stderr = run_worker(write_job(tmp_path, job))
    assert code == EXIT_ERROR and events[-1]["type"] == "InputRasterError"
    assert "class values must be 0..9" in events[-1]["message"] and "my layer" in events[-1]["message"]
    assert any(e["event"] == "progress" for e in events), "it failed mid-run, after outputs were opened"
    out = tmp_path / "out"
    assert not glob.glob(str(out / "*.partial-*")) and not os.path.exists(out / "rec.tif")


def test_sigterm_mid_run_stops_quickly_and_leaves_no_partial_file(tmp_path):
    mosaic = make_mosaic(tmp_path / "mosaic.tif")
    job = reconstruct_job(tmp_path, path=mosaic, timesteps=50, tile=224, batch=1)
    proc = subprocess.Popen(worker_command(write_job(tmp_path, job)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=worker_env())  # fmt: skip
    events = []
    for line in proc.stdout:  # wait until it is computing (first progress inside a batch)
        events.append(json.loads(line))
        if events[-1]["event"] == "progress" and events[-1]["percent"] > 2.0:
            break
    partials = glob.glob(str(tmp_path / "out" / "*.partial-*.tif"))
    assert len(partials) == 2, "outputs are open (as partial files) when the signal arrives"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest, stderr = proc.communicate(timeout=30)
    elapsed = time.monotonic() - sent
    events += [json.loads(line) for line in rest.splitlines() if line.strip()]
    assert proc.returncode == EXIT_CANCELLED and events[-1]["type"] == "CancelledError"
    assert elapsed < 5.0, f"took {elapsed:.1f} s to stop"
    assert not glob.glob(str(tmp_path / "out" / "*.partial-*")) and not os.listdir(tmp_path / "out")
    assert "Traceback" not in stderr
