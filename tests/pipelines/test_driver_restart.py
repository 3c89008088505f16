"""The driver killed mid-run (SIGKILL, as a lost node or an OOM kill would) and the job run
again: every input ends with exactly one clip row and no timeline row is duplicated, because
outputs are files named by clip id, each replaced atomically.  After the rerun each input
is in its expected terminal status and each complete clip has every window of its duration."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import ray

from operators import schema as S
from pipelines.emotion_timeline.config import load_config
from pipelines.emotion_timeline.job import run
from pipelines.sample_media.build import CASES

pytestmark = pytest.mark.integration

CASE_NAMES = ("face_speech", "no_face", "two_faces", "no_audio", "corrupt")
# Statuses of clips decoded to their end: every window of the duration must be there.
COMPLETE = {"ok", "no_face", "no_audio"}
WITH_TIMELINE = COMPLETE | {"partial"}


def _expected_windows(duration_s: float, sample_fps: float, hop_s: float) -> int:
    """Windows start every hop from 0 up to the last sampled frame (the timeline's rule)."""
    last_frame_s = (math.ceil(duration_s * sample_fps - 1e-9) - 1) / sample_fps
    return math.floor(last_frame_s / hop_s + 1e-9) + 1


def test_rerun_after_driver_kill_completes_without_duplicates(media, ray_local, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in CASE_NAMES:
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

    config = load_config(None, ["tracking.enabled=false"])
    result = run(str(inputs), str(out), config)
    clips = pd.read_parquet(out / "clips")
    assert len(clips) == len(CASE_NAMES) and clips[S.CLIP_ID].is_unique
    assert len(result.clips) == len(CASE_NAMES)
    # every clip row is the rerun's: none is left over from the killed driver
    assert set(clips[S.RUN_ID]) == {result.run_id}
    by_file = clips.set_index(clips[S.URI].map(lambda uri: Path(uri).name))
    assert sorted(by_file.index) == sorted(CASES[case].file for case in CASE_NAMES)
    for case in CASE_NAMES:
        row = by_file.loc[CASES[case].file]
        assert row[S.STATUS] == CASES[case].expected_status, (case, row[S.STATUS], row[S.ERROR])

    timelines = pd.read_parquet(out / "timelines")
    assert not timelines.duplicated([S.CLIP_ID, S.TRACK_ID, S.WINDOW_INDEX]).any()
    assert set(timelines[S.CLIP_ID]) == set(
        clips.loc[clips[S.STATUS].isin(WITH_TIMELINE), S.CLIP_ID])
    sample_fps, hop_s = config.decode.sample_fps, config.hop_s
    complete = by_file[by_file[S.STATUS].isin(COMPLETE)]
    assert len(complete) == 4  # all but corrupt.mp4
    for file, row in complete.iterrows():
        expected = _expected_windows(row[S.DURATION_S], sample_fps, hop_s)
        assert row[S.WINDOWS] == expected, file
        assert row[S.FRAMES_SAMPLED] == math.ceil(row[S.DURATION_S] * sample_fps - 1e-9), file
        tl = timelines[timelines[S.CLIP_ID] == row[S.CLIP_ID]]
        # each track (or the null track of a faceless clip) has every window, once
        # (beside faces, the null track holds only off-screen speech windows, each once)
        has_faces = tl[S.TRACK_ID].notna().any()
        for track, windows in tl.groupby(S.TRACK_ID, dropna=False):
            if has_faces and pd.isna(track):
                assert windows[S.WINDOW_INDEX].is_unique, (file, track)
                assert windows[S.OFFSCREEN_SPEECH].all(), (file, track)
                continue
            assert sorted(windows[S.WINDOW_INDEX]) == list(range(expected)), (file, track)
        assert tl[S.WINDOW_END_S].max() == pytest.approx(row[S.DURATION_S]), file
