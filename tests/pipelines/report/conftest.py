"""The report tests' shared parts: one real job run on generated recordings (every report
test reads its output), and Debian's chromium driven through Selenium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from operators import schema as S
from operators.io.files import write_parquet_atomic
from operators.io.write_outputs import MOMENTS_DIR
from pipelines.emotion_timeline.config import load_config
from pipelines.emotion_timeline.job import run
from pipelines.sample_media.build import make_sample_media
from pipelines.sample_media.codecs import make_codec_variants

# An H.264/AAC MP4 with a face and speech, one in a screen capture, one without a face, a
# broken file, and MPEG-4 Part 2 + MP3 in AVI (no browser plays it: the report makes a proxy).
CASES = ("face_speech", "pip_webcam", "no_face", "corrupt")
CODECS = ("mpeg4_avi",)
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# The moments written for face_speech when the job found fewer than two there (5 s of one
# expression are too short for a baseline): two, so "next moment" has somewhere to go.
PLANTED_MOMENTS = ((1.0, 2.5, "confusion"), (3.0, 4.0, "delight"))


def moments_table(clip_id: str, uri: str, spans) -> pa.Table:
    """Moment rows of the findings contract (``MOMENT_SCHEMA``) at ``spans``."""
    rows = [{S.CLIP_ID: clip_id, S.URI: uri, S.TRACK_ID: 0, S.KIND: kind, S.RANK: rank,
             S.START_S: start, S.END_S: end, S.PEAK_S: (start + end) / 2,
             S.SCORE: 0.9, S.EVIDENCE: f"planted by the report tests: {kind}",
             S.TASK: None} for rank, (start, end, kind) in enumerate(spans, 1)]
    return pa.Table.from_pylist(rows, schema=S.MOMENT_SCHEMA)


@pytest.fixture(scope="session")
def job_output(tmp_path_factory, ray_local) -> dict:
    """The timeline job's output on the fixture recordings: ``out`` (folder), ``clips``
    (its clip rows), ``inputs`` (case → path), ``moments_of`` (the clip id whose moments
    the browser tests click) and ``moment_starts`` (theirs, in time order)."""
    inputs_dir = tmp_path_factory.mktemp("report-in")
    inputs = {**make_sample_media(inputs_dir, cases=CASES),
              **make_codec_variants(inputs_dir, CODECS)}
    out = tmp_path_factory.mktemp("report-out")
    result = run(str(inputs_dir), str(out), load_config(None, ["tracking.enabled=false"]))
    clips = result.clips.set_index(S.URI)
    face_speech = clips.loc[str(inputs["face_speech"])]
    moments = out / MOMENTS_DIR / f"{face_speech[S.CLIP_ID]}.parquet"
    if not moments.exists() or len(pd.read_parquet(moments)) < 2:
        write_parquet_atomic(moments_table(face_speech[S.CLIP_ID], str(inputs["face_speech"]),
                                           PLANTED_MOMENTS), str(moments), {})
    return {"out": out, "clips": result.clips, "inputs": inputs,
            "moments_of": face_speech[S.CLIP_ID],
            "moment_starts": sorted(pd.read_parquet(moments)[S.START_S])}


def copy_output(job_output: dict, dest: Path) -> Path:
    """A copy of the job's output that a test may damage."""
    shutil.copytree(job_output["out"], dest)
    return dest


def start_chromium():
    """Headless Debian chromium through its own chromedriver (paths given: Selenium
    Manager never runs, so nothing is downloaded), browser console logs kept, muted
    autoplay allowed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian's chromium and chromium-driver are not installed: "
                    "bash infra/install.sh --test installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", "--autoplay-policy=no-user-gesture-required",
                 "--mute-audio"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager, if ever reached: no network
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()
