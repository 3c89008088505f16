"""Faults: a worker process killed while it decodes a recording (a real SIGKILL, as a decoder
crash or the OOM killer would do).  The clip is retried; if every retry dies it ends as
`failed` with the reason, and the other clips are complete either way."""

from __future__ import annotations

import math
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from operators import schema as S
from pipelines.emotion_timeline.config import load_config
from pipelines.emotion_timeline.job import run
from pipelines.sample_media.build import make_webcam_recording

pytestmark = pytest.mark.integration


class WorkerKiller(threading.Thread):
    """Kill Ray worker processes that have ``target`` open, at most ``limit`` times."""

    def __init__(self, target: Path, limit: int | None):
        super().__init__(daemon=True)
        self.target, self.limit = str(target), limit
        self.killed: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set() and (self.limit is None or len(self.killed) < self.limit):
            for proc in psutil.process_iter(["cmdline"]):
                cmdline = proc.info["cmdline"] or [""]
                if not cmdline[0].startswith("ray::"):
                    continue
                try:
                    if any(f.path == self.target for f in proc.open_files()):
                        proc.kill()
                        self.killed.append(proc.pid)
                except psutil.Error:
                    continue
            time.sleep(0.05)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


@pytest.fixture(scope="module")
def inputs(media, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fault-inputs")
    make_webcam_recording(folder / "long_session.mp4", 30)
    for case in ("face_speech", "no_face"):
        shutil.copy(media[case], folder)
    return folder


def _run_with_killer(inputs: Path, out: Path, limit: int | None):
    killer = WorkerKiller(inputs / "long_session.mp4", limit)
    killer.start()
    try:
        result = run(str(inputs), str(out), load_config(None, ["tracking.enabled=false"]))
    finally:
        killer.stop()
    clips = result.clips.set_index(result.clips[S.URI].map(lambda uri: Path(uri).name))
    return killer, clips


def _assert_complete(clips: pd.DataFrame, timelines: pd.DataFrame, name: str, status: str):
    """The clip ended as ``status`` with a timeline window every hop over its whole length."""
    row = clips.loc[name]
    assert row[S.STATUS] == status, (name, row[S.ERROR])
    # Windows start every 0.5 s hop from 0 to the last sampled frame (5 fps).
    expected = math.floor((math.ceil(row[S.DURATION_S] * 5 - 1e-9) - 1) / 5 / 0.5 + 1e-9) + 1
    assert row[S.WINDOWS] == expected, name
    own = timelines[timelines[S.CLIP_ID] == row[S.CLIP_ID]]
    assert own[S.WINDOW_INDEX].nunique() == expected, name


def test_killed_worker_is_retried_and_the_clip_completes(inputs, ray_local, tmp_path):
    killer, clips = _run_with_killer(inputs, tmp_path / "out", limit=1)
    assert len(killer.killed) == 1
    assert len(clips) == 3
    timelines = pd.read_parquet(tmp_path / "out" / "timelines")
    assert clips.loc["long_session.mp4", S.WINDOWS] == pytest.approx(30 / 0.5, abs=1)
    for name, status in (("long_session.mp4", "ok"), ("face_speech.mp4", "ok"),
                         ("no_face.mp4", "no_face")):
        _assert_complete(clips, timelines, name, status)
    assert not timelines.duplicated([S.CLIP_ID, S.TRACK_ID, S.WINDOW_INDEX]).any()


def test_clip_killing_every_worker_ends_failed_and_others_complete(inputs, ray_local, tmp_path):
    killer, clips = _run_with_killer(inputs, tmp_path / "out", limit=None)
    assert len(killer.killed) >= 2  # the first attempt and at least one retry
    assert len(clips) == 3
    long = clips.loc["long_session.mp4"]
    assert long[S.STATUS] == "failed"
    # The reason names the stages whose task died and how (Ray's error for a killed worker).
    assert long[S.ERROR].startswith("processing failed on every retry (the worker process "
                                    "died"), long[S.ERROR]
    assert "decode" in long[S.ERROR] and "WorkerCrashedError" in long[S.ERROR], long[S.ERROR]
    timelines = pd.read_parquet(tmp_path / "out" / "timelines")
    _assert_complete(clips, timelines, "face_speech.mp4", "ok")
    _assert_complete(clips, timelines, "no_face.mp4", "no_face")
    written = pd.read_parquet(tmp_path / "out" / "clips")
    assert set(written[S.STATUS]) == {"ok", "no_face", "failed"}
    assert not (tmp_path / "out" / "timelines" / f"{long[S.CLIP_ID]}.parquet").exists()
