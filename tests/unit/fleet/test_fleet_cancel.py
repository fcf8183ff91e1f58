"""A worker process killed mid-scene, and cancelling the fleet: never a partial file, never a fake output."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

from fleet_fixtures import (
    EXAMPLES,
    fleet_command,
    fleet_env,
    lulc_mosaic,
    partials,
    read_manifest,
    template,
    wait_for,
    write_template,
)  # fmt: skip

from terramind_qgis.models.core.job import EXIT_CANCELLED, EXIT_OK


class FleetProcess:
    """The fleet command as a subprocess whose events are collected as they come."""

    def __init__(self, *args: str, new_session: bool = False) -> None:
        self.proc = subprocess.Popen(fleet_command(*args, "--events"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=fleet_env(), start_new_session=new_session)  # fmt: skip
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip():
                self.events.append(json.loads(line))

    def messages(self, kind: str = "info") -> list[str]:
        return [e["message"] for e in list(self.events) if e["event"] == kind]

    def started(self, scene: str) -> bool:
        return any(m.startswith(f"scene {scene}: started on ") for m in self.messages())

    def done(self, scene: str) -> bool:
        return any(m.startswith(f"scene {scene}: done in ") for m in self.messages())

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code, self.proc.stderr.read()


PARTIAL_TIF = re.compile(r"\.partial-(\d+)\.tif$")  # the output being written (not the blend scratch folder)


def _partial_tif(out) -> str | None:
    return next((p for p in partials(out) if PARTIAL_TIF.search(p)), None)


def _worker_pid_of(partial: str) -> int:
    return int(PARTIAL_TIF.search(partial).group(1))


def test_a_worker_process_killed_mid_scene_is_retried_and_completes(tmp_path, scheduler):
    mosaic = lulc_mosaic(tmp_path / "mosaic.tif", repeat=1)  # 448 x 448: 4 tiles
    tmpl = write_template(tmp_path, template())
    out = tmp_path / "out"
    fleet = FleetProcess(tmpl, mosaic, "-o", str(out), "--scheduler", scheduler, "--retries", "1")
    partial = wait_for(lambda: _partial_tif(out))
    pid = _worker_pid_of(partial)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"terramind_qgis.models.worker" in cmdline, "the partial belongs to the scene's worker process"
    os.kill(pid, signal.SIGKILL)  # no chance to clean up: the fleet must
    code, stderr = fleet.finish()
    assert code == EXIT_OK, stderr
    (record,) = read_manifest(out)
    assert record["scene"] == "mosaic" and record["status"] == "succeeded" and record["attempts"] == 2
    assert record["errors"] == ["attempt 1: the worker was killed by SIGKILL (out of memory?)"]
    warnings = fleet.messages("warning")
    assert warnings == ["scene mosaic failed (attempt 1 of 2): the worker was killed by SIGKILL (out of memory?); retrying"]
    assert fleet.events[-1]["metrics"]["succeeded"] == 1
    assert not os.path.exists(partial) and not partials(out)
    assert os.path.getsize(out / "mosaic" / "rec.tif") == record["outputs"]["reconstruction"]["bytes"]


def test_ctrl_c_lets_running_scenes_end_and_a_second_one_stops_them(tmp_path):
    """On its own LocalCluster (2 workers x 1 thread), Ctrl-C to the whole process group, as a terminal sends it."""
    long = lulc_mosaic(tmp_path / "long.tif", repeat=6)  # 2688 x 2688: 144 tiles, still running when "short" is done
    short, queued = (str(EXAMPLES / "LULC" / f"{s}.tif") for s in ("282D_485L_3_3", "38D_378R_2_3"))
    (tmp_path / "scenes.csv").write_text(f"scene,LULC\nlong,{long}\nshort,{short}\nqueued,{queued}\n", encoding="utf-8")
    tmpl = write_template(tmp_path, template())
    out = tmp_path / "out"
    fleet = FleetProcess(tmpl, str(tmp_path / "scenes.csv"), "-o", str(out), "--workers", "2", "--threads-per-worker", "1",
                         "--dashboard-address", ":0", new_session=True)  # fmt: skip
    wait_for(lambda: fleet.started("long") and fleet.started("short"), timeout=90)
    os.killpg(fleet.proc.pid, signal.SIGINT)
    wait_for(lambda: any(m.startswith("cancel: no new scene starts") for m in fleet.messages()))
    wait_for(lambda: fleet.done("short"), timeout=90)  # a running scene ends normally
    assert not os.path.exists(out / "long" / "rec.tif") and partials(out), "'long' is still being written"
    os.killpg(fleet.proc.pid, signal.SIGINT)  # the second Ctrl-C stops the running scenes
    code, stderr = fleet.finish()
    assert code == EXIT_CANCELLED, stderr
    last = fleet.events[-1]
    assert last["event"] == "error" and last["type"] == "CancelledError" and last["message"].startswith("cancelled: ")
    assert last["metrics"] | {"seconds": 0} == {"scenes": 3, "skipped": 0, "succeeded": 1, "failed": 0, "cancelled": 2,
                                                "seconds": 0}  # fmt: skip
    assert not fleet.started("queued"), "no scene starts after the cancel"
    assert not partials(out), "no partial file is left"
    assert sorted(os.listdir(out / "short")) == ["rec.qml", "rec.tif", "rec.tif.aux.xml"]
    assert not os.path.exists(out / "long" / "rec.tif") and not os.path.exists(out / "queued")
    records = {r["scene"]: r for r in read_manifest(out)}
    assert set(records) == {"short", "long"}
    assert records["short"]["status"] == "succeeded" and records["long"]["status"] == "cancelled"
    assert records["long"]["outputs"] == {} and "cancelled" in records["long"]["error"]
    assert "Traceback" not in stderr


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_dask_worker_killed_mid_scene_takes_its_worker_process_along_and_the_scene_completes(tmp_path, scheduler):
    """SIGKILL to the Dask worker process: its scene's worker process gets SIGTERM (parent-death signal) and
    removes its partial file; Dask reschedules the task on the other worker; the scheduler and fleet carry on."""
    mosaic = lulc_mosaic(tmp_path / "mosaic.tif", repeat=1)
    out = tmp_path / "out"
    fleet = FleetProcess(write_template(tmp_path, template()), mosaic, "-o", str(out), "--scheduler", scheduler)
    partial = wait_for(lambda: _partial_tif(out))
    pid = _worker_pid_of(partial)
    dask_worker = _ppid(pid)
    assert b"spawn_main" in Path(f"/proc/{dask_worker}/cmdline").read_bytes(), "its parent is a Dask worker process"
    first = next(m for m in fleet.messages() if m.startswith("scene mosaic: started on ")).rsplit(" ", 1)[1]
    os.kill(dask_worker, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", timeout=30)
    code, stderr = fleet.finish()
    assert code == EXIT_OK, stderr
    (record,) = read_manifest(out)
    assert record["status"] == "succeeded" and record["worker"] != first
    assert not os.path.exists(partial) and not partials(out)
    started = [m.rsplit(" ", 1)[1] for m in fleet.messages() if m.startswith("scene mosaic: started on ")]
    assert started == [first, record["worker"]], "started again, on the other worker"


def test_sigterm_with_kill_running_stops_the_running_scene_at_once(tmp_path, scheduler):
    """What a QGIS algorithm relaying the fleet sends on cancel (SIGTERM), with --kill-running."""
    long = lulc_mosaic(tmp_path / "long.tif", repeat=6)
    out = tmp_path / "out"
    fleet = FleetProcess(write_template(tmp_path, template()), long, "-o", str(out), "--scheduler", scheduler,
                         "--kill-running")  # fmt: skip
    wait_for(lambda: partials(out))
    fleet.proc.send_signal(signal.SIGTERM)
    code, stderr = fleet.finish(timeout=60)
    assert code == EXIT_CANCELLED, stderr
    assert fleet.events[-1]["type"] == "CancelledError" and fleet.events[-1]["metrics"]["cancelled"] == 1
    assert any("running scenes are stopped" in m for m in fleet.messages())
    assert not partials(out) and not os.path.exists(out / "long" / "rec.tif")
    (record,) = read_manifest(out)
    assert record["status"] == "cancelled" and record["error"] == "stopped: the fleet was cancelled (--kill-running)"


def test_a_scene_past_its_timeout_is_stopped_and_fails_without_a_trace(tmp_path, scheduler):
    long = lulc_mosaic(tmp_path / "long.tif", repeat=6)
    out = tmp_path / "out"
    fleet = FleetProcess(write_template(tmp_path, template()), long, "-o", str(out), "--scheduler", scheduler,
                         "--scene-timeout", "3", "--retries", "0")  # fmt: skip
    code, stderr = fleet.finish(timeout=60)
    assert code == 3, stderr
    (record,) = read_manifest(out)
    assert record["status"] == "failed" and record["error"] == "stopped: timeout after 3 s" and record["attempts"] == 1
    assert not partials(out) and not os.path.exists(out / "long")
