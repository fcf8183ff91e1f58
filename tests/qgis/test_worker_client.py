"""The worker client (processing_algorithms/worker_client.py) against a stand-in worker process.

The stand-in (data/fake_worker.py) plays a worker that succeeds, fails, crashes, or runs long and
does or does not honour SIGTERM, so every path of the client runs for real: subprocess, pipes,
event relay, cancel timing, clean-up of partial and finished files.
"""

from __future__ import annotations

import os
import stat
import time

import pytest
from tm_helpers import QGIS_DATA, REPO

from terramind_qgis.models.core.errors import CancelledError, InputRasterError, WorkerError
from terramind_qgis.models.core.job import Job, ModelRequest
from terramind_qgis.processing_algorithms import environment, worker_client
from terramind_qgis.processing_algorithms.environment import Interpreter


@pytest.fixture
def fake_python(tmp_path, worker_python):
    script = tmp_path / "bin" / "python"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\nexec "{worker_python}" "{QGIS_DATA / "fake_worker.py"}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return Interpreter(str(script), "test")


@pytest.fixture
def out_dir(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _job(out_dir, **params) -> Job:
    return Job(task="reconstruct", inputs={}, outputs={"reconstruction": str(out_dir / "rec.tif"),
                                                       "difference": str(out_dir / "diff.tif")},
               model=ModelRequest(id="test"), params=params)


def test_success_relays_events_and_returns_the_result(qgis_app, fake_python, out_dir, recording_feedback):
    feedback = recording_feedback()
    result = worker_client.run_job(_job(out_dir, behaviour="ok"), fake_python, feedback)
    assert result["outputs"] == {"reconstruction": str(out_dir / "rec.tif"), "difference": str(out_dir / "diff.tif")}
    assert result["metrics"]["psnr"] == {"B01": 30.5}
    assert feedback.progress == [0, 25, 50, 75, 100]
    assert "device: cpu" in feedback.infos and "untrained weights" in feedback.warnings
    assert sorted(os.listdir(out_dir)) == ["diff.tif", "rec.tif"]
    command = next(d for d in feedback.debug if d.startswith("TerraMind worker: "))
    assert f"-m {environment.package_name()}.models.worker " in command
    job_file = command.split()[-1]
    assert job_file.endswith("job.json") and not os.path.exists(job_file)  # temporary job folder removed


def test_non_protocol_lines_go_to_the_debug_log(qgis_app, fake_python, out_dir, recording_feedback):
    feedback = recording_feedback()
    worker_client.run_job(_job(out_dir, behaviour="noise"), fake_python, feedback)
    assert "plain text line from a library" in feedback.debug and "{not json" in feedback.debug


def test_error_event_becomes_its_typed_error_with_stderr_only_in_the_log(qgis_app, fake_python, out_dir, recording_feedback):
    from qgis.core import QgsApplication

    logged = []
    QgsApplication.messageLog().messageReceived.connect(lambda msg, tag, level: logged.append((tag, msg)))
    feedback = recording_feedback()
    job = _job(out_dir, behaviour="error", type="InputRasterError", message="layer 's2' (INPUT) band 3 is complex")
    with pytest.raises(InputRasterError) as info:
        worker_client.run_job(job, fake_python, feedback)
    assert str(info.value) == "layer 's2' (INPUT) band 3 is complex"
    assert any("details for the log only" in d for d in feedback.debug)
    assert any(tag == "TerraMind" and "details for the log only" in msg for tag, msg in logged)


def test_crash_without_event_is_one_worker_error(qgis_app, fake_python, out_dir, recording_feedback):
    feedback = recording_feedback()
    with pytest.raises(WorkerError, match=r"stopped unexpectedly \(exit code 3\)") as info:
        worker_client.run_job(_job(out_dir, behaviour="crash"), fake_python, feedback)
    assert "secret internal detail" not in str(info.value)
    assert any("RuntimeError: secret internal detail" in d for d in feedback.debug)


def test_a_failed_job_keeps_files_it_did_not_write(qgis_app, fake_python, out_dir, recording_feedback):
    existing = out_dir / "rec.tif"
    existing.write_bytes(b"earlier result")
    os.utime(existing, (1_000_000, 1_000_000))
    with pytest.raises(WorkerError):
        worker_client.run_job(_job(out_dir, behaviour="crash"), fake_python, recording_feedback())
    assert existing.read_bytes() == b"earlier result"


@pytest.mark.parametrize("behaviour", ["slow", "stubborn"])
def test_cancel_stops_the_worker_within_two_seconds_and_leaves_no_file(qgis_app, fake_python, out_dir,
                                                                       recording_feedback, behaviour):
    feedback = recording_feedback(cancel_at_progress=1.0)
    with pytest.raises(CancelledError, match="cancelled"):
        worker_client.run_job(_job(out_dir, behaviour=behaviour, seconds=30), fake_python, feedback)
    stopped_after = time.monotonic() - feedback.cancelled_at
    assert stopped_after < 2.0, f"worker stopped {stopped_after:.2f} s after the cancel"
    assert os.listdir(out_dir) == []  # partial files of the terminated/killed worker removed
    if behaviour == "stubborn":  # ignored SIGTERM: it had to be killed after the grace period
        assert stopped_after >= worker_client.TERMINATE_GRACE_S


def test_a_missing_interpreter_is_a_worker_error(qgis_app, out_dir, recording_feedback):
    with pytest.raises(WorkerError, match="could not start the TerraMind worker '/nonexistent/python'"):
        worker_client.run_job(_job(out_dir), Interpreter("/nonexistent/python", "test"), recording_feedback())


def test_worker_environment_is_clean(monkeypatch):
    monkeypatch.setenv("PROJ_LIB", "/usr/share/proj")
    monkeypatch.setenv("PROJ_DATA", "/usr/share/proj")
    monkeypatch.setenv("GDAL_DATA", "/usr/share/gdal")
    monkeypatch.setenv("PYTHONHOME", "/usr")
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    env = environment.worker_environment()
    assert not {"PROJ_LIB", "PROJ_DATA", "GDAL_DATA", "PYTHONHOME"} & set(env)
    assert env["PYTHONPATH"] == os.path.dirname(environment.plugin_dir())
    assert os.path.isfile(os.path.join(env["PYTHONPATH"], environment.package_name(), "models", "core", "job.py"))
    assert env["PYTHONPATH"] == str(REPO / ".pluginpath")


def test_a_killed_workers_scratch_folder_is_removed(qgis_app, out_dir):
    """A worker killed mid-run leaves its tiled engine's carry folder beside the output: the clean-up takes it."""
    from terramind_qgis.models.core.job import blend_scratch_prefix

    job = _job(out_dir, behaviour="crash")
    before = worker_client._snapshot([])
    scratch = out_dir / (os.path.basename(blend_scratch_prefix(job.outputs["reconstruction"])) + "x1y2")
    scratch.mkdir()
    (scratch / "carry-1.f32").write_bytes(b"\0" * 64)
    (out_dir / "unrelated.tif.partial-blend-1-z").mkdir()  # another output's: kept
    removed = worker_client.remove_job_files(job, before)
    assert removed == [str(scratch)] and not scratch.exists()
    assert (out_dir / "unrelated.tif.partial-blend-1-z").exists()
