"""Cancelling a real run: the worker stops within 2 s and no output file (nor partial file or sidecar) stays."""

from __future__ import annotations

import os
import time

import processing
import pytest
from qgis.core import QgsProcessingException


def test_cancel_mid_run(terramind_provider, example, tmp_path, recording_feedback, qgis_new_project):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    feedback = recording_feedback(cancel_at_progress=2.5)  # after the model is loaded, during decoding
    params = {"INPUT": example("S2L2A"), "MODALITY": "S2L2A", "MODEL": "test_tokenizer_s2l2a", "UNTRAINED": True,
              "TIMESTEPS": 1000, "OUTPUT": str(out_dir / "rec.tif"), "DIFFERENCE": str(out_dir / "diff.tif")}
    started = time.monotonic()
    with pytest.raises(QgsProcessingException, match="TerraMind run cancelled; no output was written"):
        processing.runAndLoadResults("terramind:reconstructwithtokenizer", params, feedback=feedback)
    ended = time.monotonic()
    assert feedback.cancelled_at is not None, "the run never reported 2.5 % progress"
    assert ended - feedback.cancelled_at < 2.0, f"stopped {ended - feedback.cancelled_at:.2f} s after the cancel"
    assert max(feedback.progress) < 50, "cancel came too late to show that the run stopped early"
    assert os.listdir(out_dir) == []  # no GeoTIFF, no partial file, no sidecar
    assert any("Worker stopped" in info for info in feedback.infos)
    print(f"run {ended - started:.1f} s, cancel to return {ended - feedback.cancelled_at:.2f} s, "
          f"progress {feedback.progress[:8]}")
