"""The driver killed mid-run (SIGKILL, as a lost node or an OOM kill would) and the job run
again: every input ends with exactly one clip row and no timeline row is duplicated, because
outputs are files named by clip id, each replaced atomically."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import ray

from operators import schema as S
from pipelines.emotion_timeline.__main__ import run
from pipelines.emotion_timeline.config import load_config

pytestmark = pytest.mark.integration


def test_rerun_after_driver_kill_completes_without_duplicates(media, ray_local, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in ("face_speech", "no_face", "two_faces", "no_audio", "corrupt"):
        shutil.copy(media[case], inputs)
    out = tmp_path / "out"
    # The first driver joins the test's Ray cluster, so killing it kills only the driver
    # (Ray then cancels its tasks), never the cluster the rest of the suite uses.
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipelines.emotion_timeline", str(inputs), "--out", str(out),
         "--address", ray.get_runtime_context().gcs_address,
         "--set", "tracking.enabled=false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        if (out / "clips").is_dir() and any((out / "clips").glob("*.parquet")):
            break
        time.sleep(0.05)
    killed_mid_write = driver.poll() is None
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    assert killed_mid_write, "the first driver finished before it could be killed"
    # What a write interrupted by the kill leaves behind: a hidden temporary file, which
    # Parquet readers skip (names starting with '.'), next to complete files.
    (out / "clips" / ".0123456789abcdef.parquet.dead.tmp").write_bytes(b"PAR1 truncated")

    result = run(str(inputs), str(out), load_config(None, ["tracking.enabled=false"]))
    clips = pd.read_parquet(out / "clips")
    assert len(clips) == 5 and clips[S.CLIP_ID].is_unique
    assert len(result.clips) == 5
    timelines = pd.read_parquet(out / "timelines")
    assert not timelines.duplicated([S.CLIP_ID, S.TRACK_ID, S.WINDOW_INDEX]).any()
    assert set(timelines[S.CLIP_ID]) <= set(clips[S.CLIP_ID])
