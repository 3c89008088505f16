"""``emoray report`` on a real job's output: what it writes (index, pages, exports,
sessions.xlsx, the recordings the pages play) and what it says about damaged outputs."""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path

import boto3
import ffmpeg
import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.storage import StorageConfig
from operators import schema as S
from operators.io.write_outputs import CLIPS_DIR, TIMELINES_DIR
from pipelines.cli import main as emoray
from pipelines.report.build import build_report, refresh_output_report
from tests.pipelines.report.conftest import copy_output

pytestmark = pytest.mark.integration


def _clip_id(job_output, case: str) -> str:
    uri = str(job_output["inputs"][case])
    return job_output["clips"].set_index(S.URI).loc[uri, S.CLIP_ID]


def _page_data(page: Path) -> dict | None:
    found = re.search(r'<script id="session-data" type="application/json">(.*?)</script>',
                      page.read_text(encoding="utf-8"), re.S)
    return json.loads(found.group(1).replace("<\\/", "</")) if found else None


@pytest.fixture(scope="module")
def report(job_output, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report") / "report"
    assert emoray(["report", str(job_output["out"]), "--out", str(folder)]) == 0
    return folder


def test_index_lists_every_clip_failed_ones_with_status_and_error(job_output, report):
    index = (report / "index.html").read_text(encoding="utf-8")
    rows = re.findall(r"<tr class=\"(failed)?\">(.*?)</tr>", index, re.S)
    assert len(rows) == len(job_output["clips"])
    for clip in job_output["clips"].to_dict("records"):
        row = next(r for _, r in rows if Path(clip[S.URI]).name in r)
        assert f"clips/{clip[S.CLIP_ID]}.html" in row
        assert f">{clip[S.STATUS]}<" in row
        if clip[S.STATUS] != S.Status.OK.value and clip[S.ERROR]:
            assert escape(clip[S.ERROR].split(" | ")[0]) in row
    sheets = pd.read_excel(report / "sessions.xlsx", sheet_name=None)
    assert sorted(sheets["sessions"]["status"]) == sorted(job_output["clips"][S.STATUS])
    assert len(sheets["moments"]) >= len(job_output["moment_starts"])


def test_session_exports_hold_every_window(job_output, report):
    for clip in job_output["clips"].to_dict("records"):
        timeline = job_output["out"] / TIMELINES_DIR / f"{clip[S.CLIP_ID]}.parquet"
        export = report / "clips" / clip[S.CLIP_ID] / "timeline.csv"
        if not timeline.exists():
            assert not export.exists()
            continue
        written = pd.read_csv(export)
        assert len(written) == pq.read_metadata(timeline).num_rows
        assert list(written.columns) == S.TIMELINE_SCHEMA.names
        assert json.loads(written[S.MFCC_MEAN].dropna().iloc[0])  # list columns as JSON
    moments = pd.read_csv(report / "clips" / job_output["moments_of"] / "moments.csv")
    assert len(moments) == len(job_output["moment_starts"])


def test_pages_play_the_original_or_a_web_playable_proxy(job_output, report):
    original = job_output["inputs"]["face_speech"]
    media = report / "media" / f"{_clip_id(job_output, 'face_speech')}.mp4"
    # H.264/AAC in MP4: the original itself, hard-linked (same file system here).
    assert media.stat().st_ino == original.stat().st_ino
    proxy = report / "media" / f"{_clip_id(job_output, 'mpeg4_avi')}.mp4"
    streams = {s["codec_type"]: s for s in ffmpeg.probe(str(proxy))["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert min(streams["video"]["width"], streams["video"]["height"]) <= 720
    page = (report / "clips" / f"{_clip_id(job_output, 'mpeg4_avi')}.html").read_text()
    assert f'src="../media/{proxy.name}"' in page and "proxy" in page
    broken = (report / "clips" / f"{_clip_id(job_output, 'corrupt')}.html").read_text()
    assert 'id="no-video"' in broken and "decode_error" in broken
    assert 'id="no-timeline"' in broken


def test_page_data_has_every_lane_of_the_output(job_output, report):
    data = _page_data(report / "clips" / f"{_clip_id(job_output, 'face_speech')}.html")
    assert data["rows"].startswith("participant")
    # The fixture's face is a photo: its mouth never moves, so its speech is off-screen.
    voice = "voice" if data["voice"] else "offscreen_voice"
    for lane in ("fused", "face", voice):
        assert len(data[lane]) == len(S.EMOTIONS)
        sums = [sum(p[i] for p in data[lane]) for i in range(data["points"])
                if data[lane][0][i] is not None]
        assert sums and all(abs(s - 1) < 0.01 for s in sums)  # probabilities, 3 decimals
    assert data["speech"] and data["confidence"] and data["speakers"]
    assert [m[S.START_S] for m in data["moments"]] == job_output["moment_starts"]
    faceless = _page_data(report / "clips" / f"{_clip_id(job_output, 'no_face')}.html")
    assert faceless["rows"].startswith("no face") and faceless["face"] is None


def test_a_second_report_keeps_the_media_it_made(job_output, report):
    made = {p: p.stat().st_mtime_ns for p in (report / "media").glob("*.mp4")}
    build_report(str(job_output["out"]), str(report), {})
    assert {p: p.stat().st_mtime_ns for p in (report / "media").glob("*.mp4")} == made


def test_output_without_timelines(job_output, tmp_path):
    out = copy_output(job_output, tmp_path / "out")
    for path in (out / TIMELINES_DIR).iterdir():
        path.unlink()
    (out / TIMELINES_DIR).rmdir()
    assert emoray(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    index = (tmp_path / "r" / "index.html").read_text()
    assert f"has no {TIMELINES_DIR}/ folder" in index
    page = (tmp_path / "r" / "clips" / f"{_clip_id(job_output, 'face_speech')}.html").read_text()
    assert "timeline file" in page and "is missing" in page and 'id="no-timeline"' in page


def test_recording_no_longer_there(job_output, tmp_path):
    out = copy_output(job_output, tmp_path / "out")
    clip_file = out / CLIPS_DIR / f"{_clip_id(job_output, 'face_speech')}.parquet"
    row = pq.read_table(clip_file).to_pylist()[0]
    gone = str(tmp_path / "moved-away" / "face_speech.mp4")
    row[S.URI] = gone
    pq.write_table(pa.Table.from_pylist([row], schema=S.CLIP_SCHEMA), clip_file)
    assert emoray(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    page = tmp_path / "r" / "clips" / f"{_clip_id(job_output, 'face_speech')}.html"
    text = page.read_text()
    assert 'id="no-video"' in text and f"no longer at {gone}" in text
    assert _page_data(page)["fused"]  # the timeline is still drawn


def test_half_written_output(job_output, tmp_path):
    out = copy_output(job_output, tmp_path / "out")
    truncated = out / CLIPS_DIR / f"{_clip_id(job_output, 'pip_webcam')}.parquet"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (out / CLIPS_DIR / f"{_clip_id(job_output, 'no_face')}.parquet").unlink()
    assert emoray(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    index = (tmp_path / "r" / "index.html").read_text()
    assert ">unreadable<" in index and "cannot be read" in index
    assert ">incomplete<" in index and "did not finish this clip" in index
    page = (tmp_path / "r" / "clips" / f"{_clip_id(job_output, 'no_face')}.html").read_text()
    assert "did not finish this clip" in page and _page_data(
        tmp_path / "r" / "clips" / f"{_clip_id(job_output, 'no_face')}.html")


def test_folders_that_are_not_outputs(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    assert emoray(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 0
    assert "Is it the OUT folder of `emoray run`?" in (tmp_path / "r" / "index.html").read_text()
    assert emoray(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r2")]) == 2
    assert "no output folder at" in caplog.text
    assert emoray(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r3"),
                   "--clip", "0123456789abcdef"]) == 2
    assert "no clip 0123456789abcdef" in caplog.text
    (tmp_path / "a-file").write_text("not a folder")
    assert emoray(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "a-file")]) == 4
    assert "cannot write the report to" in caplog.text


def test_output_and_recordings_on_s3(job_output, s3_endpoint, tmp_path):
    """An s3:// output whose recording is on S3 too: read through s3fs, played from a proxy
    written into the report folder, local or on S3."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="report")
    clip_id = _clip_id(job_output, "face_speech")
    s3.upload_file(str(job_output["inputs"]["face_speech"]), "report", "in/face_speech.mp4")
    row = pq.read_table(job_output["out"] / CLIPS_DIR / f"{clip_id}.parquet").to_pylist()[0]
    row[S.URI] = "s3://report/in/face_speech.mp4"
    local = tmp_path / "clip.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=S.CLIP_SCHEMA), local)
    s3.upload_file(str(local), "report", f"out/{CLIPS_DIR}/{clip_id}.parquet")
    s3.upload_file(str(job_output["out"] / TIMELINES_DIR / f"{clip_id}.parquet"), "report",
                   f"out/{TIMELINES_DIR}/{clip_id}.parquet")
    options = StorageConfig(endpoint_url=s3_endpoint).storage_options()
    result = build_report("s3://report/out", str(tmp_path / "r"), options)
    assert result.sessions == 1
    page = (tmp_path / "r" / "clips" / f"{clip_id}.html").read_text()
    assert "proxy" in page and "on object storage" in page
    assert ffmpeg.probe(str(tmp_path / "r" / "media" / f"{clip_id}.mp4"))["streams"]
    # The report itself on S3 too (as the nightly run writes OUT/report).
    build_report("s3://report/out", "s3://report/rep", options)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="report", Prefix="rep/")["Contents"]}
    assert {"rep/index.html", "rep/sessions.xlsx", "rep/static/report.js",
            f"rep/clips/{clip_id}.html", f"rep/media/{clip_id}.mp4"} <= keys


def test_nightly_refresh_writes_out_report_and_logs_its_pages(job_output, tmp_path):
    """``emoray nightly``'s report step: OUT/report, pages of the processed clips only, the
    index of every clip, and the HTML as artifacts of the active MLflow run."""
    out = copy_output(job_output, tmp_path / "out")
    processed = _clip_id(job_output, "face_speech")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("report", (tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            assert refresh_output_report(str(out), {}, []) is None  # nothing processed
            refresh_output_report(str(out), {}, [processed])
        client = mlflow.MlflowClient()
        logged = [a.path for a in client.list_artifacts(run.info.run_id, "report/clips")]
        tag = client.get_run(run.info.run_id).data.tags["emoray.report"]
    finally:
        mlflow.set_tracking_uri(previous)
    report = out / "report"
    assert [p.name for p in (report / "clips").glob("*.html")] == [f"{processed}.html"]
    assert logged == [f"report/clips/{processed}.html"]
    assert tag == str(report / "index.html")
    index = (report / "index.html").read_text()
    assert all(Path(uri).name in index for uri in job_output["clips"][S.URI])
