"""The fleet's core (``Fleet``) as a QGIS algorithm or a script would drive it: injected progress and cancel."""

from __future__ import annotations

import pytest
from fleet_fixtures import EXAMPLES, SCENES, read_manifest, template

from terramind_qgis.models.fleet.manifest import Manifest
from terramind_qgis.models.fleet.plan import make_plan
from terramind_qgis.models.fleet.runner import Fleet, FleetOptions
from terramind_qgis.models.fleet.scenes import Scene
from terramind_qgis.models.fleet.template import JobTemplate
from testlib.progress import RecordingProgress


@pytest.fixture
def client(cluster):
    from distributed import Client

    with Client(cluster) as c:
        yield c


def _scenes(n: int) -> list[Scene]:
    return [Scene(s, {"LULC": str(EXAMPLES / "LULC" / f"{s}.tif")}) for s in SCENES[:n]]


def test_cuda_scenes_ask_for_a_gpu_and_each_worker_gives_its_own(tmp_path, client):
    """The fixture's workers have one GPU resource each; this machine has no CUDA, so the worker refuses the
    device (a bad job: failed once, not retried), after the fleet placed each scene on a GPU of its worker."""
    tmpl = JobTemplate(template(device="cuda"), str(tmp_path))
    out = tmp_path / "out"
    progress = RecordingProgress()
    with Manifest(str(out)) as manifest:
        plan = make_plan(tmpl, _scenes(2), str(out), manifest.latest())
        summary = Fleet(client, plan, manifest, progress, FleetOptions(retries=2, local_gpus_per_worker=1)).run()
    assert (summary.total, summary.failed, summary.succeeded) == (2, 2, 0)
    records = read_manifest(out)
    assert {r["scene"] for r in records} == set(SCENES[:2])
    info = client.scheduler_info()["workers"]
    for r in records:
        assert r["attempts"] == 1 and r["exit_code"] == 2 and "cuda" in r["error"].lower()
        assert r["gpu"] == str(info[r["worker"]]["name"]), "worker i of a LocalCluster uses GPU i"
    assert len(progress.warnings) == 2 and all(" failed: " in w for w in progress.warnings)
    assert progress.percents[-1] == 100.0 and progress.percents == sorted(progress.percents)


def test_a_fleet_cancelled_before_it_starts_starts_nothing(tmp_path, client):
    tmpl = JobTemplate(template(), str(tmp_path))
    out = tmp_path / "out"
    progress = RecordingProgress()
    progress.cancel()
    with Manifest(str(out)) as manifest:
        plan = make_plan(tmpl, _scenes(3), str(out), manifest.latest())
        summary = Fleet(client, plan, manifest, progress).run()
    assert summary.was_cancelled and (summary.cancelled, summary.succeeded, summary.failed) == (3, 0, 0)
    assert not any(": started on " in m for m in progress.infos)
    assert read_manifest(out) == [] and sorted(p.name for p in out.iterdir()) == ["manifest.jsonl"]
