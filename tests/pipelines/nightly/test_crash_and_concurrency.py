"""Real processes: a nightly driver SIGKILLed mid-run and started again ends with every
clip processed exactly once; two nightly runs started at once on the same output do not
both process anything.  The drivers join the test session's Ray (``--address``), so
killing one kills only that driver, never the cluster."""

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
from pipelines.nightly.config import load_nightly_config
from pipelines.nightly.job import run
from pipelines.nightly.state import processed_dir, read_state

pytestmark = pytest.mark.integration


def _driver(inputs, out, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.nightly", "--input", str(inputs), "--out", str(out),
         "--address", ray.get_runtime_context().gcs_address,
         "--set", "tracking.enabled=false", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())


def test_driver_killed_mid_run_then_restarted_processes_each_clip_once(media, ray_local,
                                                                       tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    cases = ("face_speech", "no_face", "two_faces", "no_audio", "corrupt")
    for case in cases:
        shutil.copy(media[case], inputs)
    out = tmp_path / "out"
    records = processed_dir(str(out))
    # One clip per write task, so records appear one by one and the kill lands between.
    driver = _driver(inputs, out, "--set", "resources.writer.batch_size=1")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        if os.path.isdir(records) and any(n.endswith(".parquet") for n in os.listdir(records)):
            break
        time.sleep(0.005)
    alive = driver.poll() is None
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    assert alive, f"the first driver ended before it could be killed:\n{driver.stdout.read()}"
    time.sleep(2)  # tasks of the dead driver are cancelled by Ray; let stragglers settle
    first = read_state(str(out), {})
    assert 1 <= len(first) <= len(cases)
    print(f"the killed run had recorded {len(first)} of {len(cases)} clips")

    # Restart: the dead driver's lease is stale at once (its process is gone on this host).
    result = run(str(inputs), str(out), load_nightly_config(None, ["tracking.enabled=false"]))
    redone = set(result.clips[S.CLIP_ID])
    assert not redone & set(first[S.CLIP_ID]), "a clip recorded by the killed run ran again"
    assert redone | set(first[S.CLIP_ID]) == set(read_state(str(out), {})[S.CLIP_ID])
    state = read_state(str(out), {})
    assert len(state) == len(cases) and state[S.CLIP_ID].is_unique
    clips = pd.read_parquet(out / "clips")
    assert len(clips) == len(cases) and clips[S.CLIP_ID].is_unique
    timelines = pd.read_parquet(out / "timelines")
    assert not timelines.duplicated([S.CLIP_ID, S.TRACK_ID, S.WINDOW_INDEX]).any()
    # Each clip row was written by the run that recorded it.
    merged = clips.merge(state, on=S.CLIP_ID, suffixes=("", "_state"))
    assert (merged[S.RUN_ID] == merged[f"{S.RUN_ID}_state"]).all()
    # A third run has nothing to do.
    again = run(str(inputs), str(out), load_nightly_config(None, ["tracking.enabled=false"]))
    assert again.plan.selected == [] and again.plan.up_to_date == len(cases)


def test_two_runs_started_at_once_do_not_both_process(media, ray_local, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in ("face_speech", "corrupt"):
        shutil.copy(media[case], inputs)
    out = tmp_path / "out"
    drivers = [_driver(inputs, out), _driver(inputs, out)]
    outputs = [d.communicate(timeout=600)[0] for d in drivers]
    codes = sorted(d.returncode for d in drivers)
    assert codes == [0, 3], outputs
    loser = outputs[[d.returncode for d in drivers].index(3)]
    assert "another nightly run (owner" in loser and "holds the lease on" in loser
    assert str(out) in loser
    state = read_state(str(out), {})
    assert len(state) == 2 and state[S.RUN_ID].nunique() == 1
    clips = pd.read_parquet(out / "clips")
    assert set(clips[S.RUN_ID]) == set(state[S.RUN_ID])
