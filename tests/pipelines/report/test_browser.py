"""The report in a real browser (Debian's headless chromium through Selenium), from
``file://``: built from a real job's output, and from a synthetic 60-minute timeline for
the page's opening time."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from operators import schema as S
from operators.io.files import write_parquet_atomic
from operators.io.write_outputs import CLIPS_DIR, TIMELINES_DIR
from pipelines.report.build import build_report

pytestmark = pytest.mark.integration

# A page's opening time as the issue asks for (<3 s for a 60-minute session).  Measured on
# this 2-core machine under load: 0.3-0.6 s (README "Reviewing a session").
OPEN_LIMIT_MS = 3000


@pytest.fixture(scope="module")
def report(job_output, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("browser") / "report"
    build_report(str(job_output["out"]), str(folder), {})
    return folder


def open_page(browser, path: Path) -> list[dict]:
    """Load ``path`` from file:// and wait for its script to finish; returns the console
    messages logged meanwhile."""
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(path.as_uri())
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))
    return browser.get_log("browser")


def errors(logs: list[dict]) -> list[dict]:
    return [entry for entry in logs if entry["level"] in ("SEVERE", "WARNING")]


def video_state(browser) -> dict:
    return browser.execute_script(
        "var v = document.getElementById('player');"
        "return {t: v.currentTime, ready: v.readyState, duration: v.duration,"
        " paused: v.paused, left: parseFloat(document.getElementById('playhead').style.left)};")


def session_page(report: Path, clip_id: str) -> Path:
    return report / "clips" / f"{clip_id}.html"


def test_index_loads_without_errors_and_lists_every_clip(browser, report, job_output):
    assert not errors(open_page(browser, report / "index.html"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")
    assert len(rows) == len(job_output["clips"])
    shown = "\n".join(row.text for row in rows)
    for clip in job_output["clips"].to_dict("records"):
        assert Path(clip[S.URI]).name in shown and clip[S.STATUS] in shown
    failed = [r for r in rows if "failed" in r.get_attribute("class")]
    assert any("decode_error" in r.text and "moov atom not found" in r.text for r in failed)
    # Sorting by duration puts the clips without one last, the others in order.
    browser.find_element(By.XPATH, "//th[text()='Duration']").click()
    keys = [r.find_elements(By.TAG_NAME, "td")[4].get_attribute("data-key") for r in
            browser.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")]
    numbers = [float(k) for k in keys if k]
    assert numbers == sorted(numbers) and keys[len(numbers):] == [""] * (len(keys) - len(numbers))


def test_session_page_shows_the_player_and_the_timeline(browser, report, job_output):
    logs = open_page(browser, session_page(report, job_output["moments_of"]))
    assert not errors(logs)
    WebDriverWait(browser, 20).until(lambda d: video_state(d)["ready"] >= 1)
    assert abs(video_state(browser)["duration"] - 5.0) < 0.2  # the 5 s fixture recording
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".lane .label")]
    for lane in ("moments", "dominant", "fused", "face", "voice", "valence / arousal",
                 "confidence", "speech"):
        assert lane in labels
    assert len(browser.find_elements(By.CSS_SELECTOR, ".plot polygon")) >= 3 * len(S.EMOTIONS)


def test_a_moment_seeks_the_video_and_keys_move_between_moments(browser, report, job_output):
    open_page(browser, session_page(report, job_output["moments_of"]))
    WebDriverWait(browser, 20).until(lambda d: video_state(d)["ready"] >= 1)
    starts = job_output["moment_starts"]
    markers = browser.find_elements(By.CSS_SELECTOR, "button.moment")
    assert len(markers) == len(starts)
    markers[1].click()
    assert abs(video_state(browser)["t"] - starts[1]) < 0.5
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("p")
    assert abs(video_state(browser)["t"] - starts[0]) < 0.5
    body.send_keys("n")
    assert abs(video_state(browser)["t"] - starts[1]) < 0.5
    browser.find_elements(By.CSS_SELECTOR, "button.seek")[0].click()  # the list below
    assert abs(video_state(browser)["t"] - starts[0]) < 0.5


def test_the_playhead_follows_the_playing_video(browser, report, job_output, tmp_path):
    open_page(browser, session_page(report, job_output["moments_of"]))
    WebDriverWait(browser, 20).until(lambda d: video_state(d)["ready"] >= 2)
    before = video_state(browser)
    browser.find_element(By.TAG_NAME, "body").send_keys(" ")  # space plays
    WebDriverWait(browser, 10).until(lambda d: video_state(d)["t"] > before["t"] + 1.0)
    playing = video_state(browser)
    assert not playing["paused"] and playing["left"] > before["left"]
    assert abs(playing["left"] / 100 * 5.0 - playing["t"]) < 0.5  # where the video is
    # The screenshot a researcher would see, mid-play: written, and not a blank page.
    shot = tmp_path / "session.png"
    assert browser.save_screenshot(str(shot))
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 20  # a blank page is ~0; the page with its lanes measured ~70


def synthetic_output(out: Path, minutes: int = 60, hop_s: float = 0.5) -> str:
    """A 60-minute session's output without its video: the participant, a second face and
    off-screen speech rows at every window (``TIMELINE_SCHEMA``), and its clip row."""
    rng = np.random.default_rng(0)
    windows = int(minutes * 60 / hop_s)
    uri = str(out / "gone" / "sixty_minutes.mp4")
    clip_id = S.clip_id_for(uri)
    start = np.arange(windows) * hop_s
    columns: dict[str, list] = {}
    for track in (0, 1, None):
        def probs(n=windows):
            return rng.dirichlet(np.ones(len(S.EMOTIONS)), n).astype(np.float32)
        fused, face, voice = probs(), probs(), probs()
        rows = {S.CLIP_ID: [clip_id] * windows, S.URI: [uri] * windows,
                S.TRACK_ID: [track] * windows, S.IS_PARTICIPANT: [track == 0] * windows,
                S.WINDOW_INDEX: np.arange(windows, dtype=np.int32),
                S.WINDOW_START_S: start, S.WINDOW_END_S: start + 1.0,
                S.FACE_PRESENT: [track is not None] * windows,
                S.FACE_FRAMES: np.full(windows, 5 if track is not None else 0, np.int32),
                **{c: fused[:, i] for i, c in enumerate(S.PROB_COLUMNS)},
                **{c: face[:, i] for i, c in enumerate(S.FACE_PROB_COLUMNS)},
                **{c: voice[:, i] for i, c in enumerate(S.VOICE_PROB_COLUMNS)},
                S.DOMINANT_EMOTION: [S.EMOTIONS[i] for i in fused.argmax(1)],
                S.VALENCE: rng.uniform(-1, 1, windows), S.AROUSAL: rng.uniform(-1, 1, windows),
                S.CONFIDENCE: rng.uniform(0, 1, windows),
                S.SPEECH_PRESENT: rng.uniform(size=windows) > 0.5,
                S.SPEECH_RATIO: rng.uniform(size=windows),
                S.SPEAKING: rng.uniform(size=windows) > 0.7,
                S.OFFSCREEN_SPEECH: rng.uniform(size=windows) > 0.9}
        for name, values in rows.items():
            columns.setdefault(name, []).extend(list(values))
    table = pa.Table.from_pydict(
        {f.name: columns.get(f.name, [None] * len(columns[S.CLIP_ID])) for f in
         S.TIMELINE_SCHEMA}, schema=S.TIMELINE_SCHEMA)
    write_parquet_atomic(table, str(out / TIMELINES_DIR / f"{clip_id}.parquet"), {})
    clip = {S.CLIP_ID: clip_id, S.URI: uri, S.STATUS: S.Status.OK.value,
            S.DURATION_S: minutes * 60.0, S.WINDOWS: windows, S.FACE_TRACKS: 2}
    write_parquet_atomic(pa.Table.from_pylist([clip], schema=S.CLIP_SCHEMA),
                         str(out / CLIPS_DIR / f"{clip_id}.parquet"), {})
    return clip_id


def test_a_sixty_minute_session_opens_in_under_3_s(browser, tmp_path):
    clip_id = synthetic_output(tmp_path / "out")
    started = time.perf_counter()
    build_report(str(tmp_path / "out"), str(tmp_path / "r"), {})
    built_s = time.perf_counter() - started
    page = session_page(tmp_path / "r", clip_id)
    open_page(browser, page)
    timing = browser.execute_script(
        "var n = performance.getEntriesByType('navigation')[0];"
        "return {load: n.loadEventEnd - n.startTime, drawn: +document.body.dataset.drawnMs};")
    assert timing["load"] < OPEN_LIMIT_MS, timing
    assert "no longer at" in browser.find_element(By.ID, "no-video").text
    points = browser.execute_script(
        "return JSON.parse(document.getElementById('session-data').textContent).points;")
    assert points == 1200  # 7,200 windows drawn as 1,200 buckets
    print(f"60-minute page: {page.stat().st_size / 1e6:.2f} MB, built in {built_s:.1f} s, "
          f"load {timing['load']:.0f} ms (drawing {timing['drawn']} ms)")
