"""Codecs: one run of the timeline job over one talking-face recording in every codec.

The folder holds ``pipelines/sample_media/codecs.CODEC_VARIANTS`` (H.264 in mp4/mkv/flv, HEVC
in mov with and without a display matrix, VP8 and VP9 with Opus in webm, AV1 in mp4 and webm,
ProRes in mov, Motion JPEG and MPEG-4 Part 2 in avi: the same 4 s of a real face and
espeak-ng speech, transcoded by ffmpeg) and one H.264 file whose first video packets are
overwritten, which no decoder reads.  The job runs once, on the session's local Ray; each
test checks what it wrote.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators import schema as S
from pipelines.emotion_timeline.config import load_config
from pipelines.emotion_timeline.job import run
from pipelines.sample_media.build import recording_speech_intervals
from pipelines.sample_media.codecs import (
    CODEC_SECONDS,
    CODEC_SIZE,
    CODEC_VARIANTS,
    make_codec_variants,
)
from pipelines.sample_media.edge_cases import _damage_packets

pytestmark = pytest.mark.integration

logger = logging.getLogger(__name__)

SAMPLE_FPS = 5
DAMAGED = "damaged_start.mp4"


@pytest.fixture(scope="module")
def job(ray_local, tmp_path_factory):
    """Every variant and the damaged file in one folder, one run of the job."""
    folder = tmp_path_factory.mktemp("codec-inputs")
    files = {name: path.name for name, path in make_codec_variants(folder).items()}
    _damage_packets(folder / files["h264_mp4"], folder / DAMAGED, "v:0", (0.0, 0.3), seed=7)
    out = tmp_path_factory.mktemp("codec-out")
    started = time.perf_counter()
    result = run(str(folder), str(out), load_config(None, ["tracking.enabled=false"]))
    logger.info("codec matrix: %d clips in %.1f s", len(result.clips),
                time.perf_counter() - started)
    clips = result.clips.set_index(result.clips[S.URI].map(lambda uri: Path(uri).name))
    timelines = pd.read_parquet(out / "timelines")
    timelines["file"] = timelines[S.URI].map(lambda uri: Path(uri).name)
    return {"out": out, "files": files, "clips": clips, "timelines": timelines}


def _participant_box(job, file: str) -> np.ndarray:
    """The participant's median box over the windows where it is present (x1, y1, x2, y2)."""
    tl = job["timelines"]
    mine = tl[(tl["file"] == file) & (tl[S.TRACK_ID] == 0) & tl[S.FACE_PRESENT]]
    return np.median(np.stack(mine[S.BOX].to_list()), axis=0)


@pytest.mark.parametrize("name", list(CODEC_VARIANTS))
def test_every_codec_is_analysed(job, name):
    variant = CODEC_VARIANTS[name]
    row = job["clips"].loc[job["files"][name]]
    assert row[S.STATUS] == S.Status.OK.value, (row[S.STATUS], row[S.ERROR])
    assert row[S.ERROR] is None or pd.isna(row[S.ERROR])
    assert row[S.VIDEO_CODEC] == variant.video_codec
    assert variant.muxer in row[S.CONTAINER].split(",")
    assert row[S.VIDEO_DECODER] == variant.decoder
    assert (row[S.WIDTH], row[S.HEIGHT]) == CODEC_SIZE  # as displayed, turned or not
    assert row[S.ROTATION] == variant.rotation
    assert row[S.DURATION_S] == pytest.approx(CODEC_SECONDS, abs=0.1)
    assert row[S.FRAMES_SAMPLED] == math.ceil(row[S.DURATION_S] * SAMPLE_FPS - 1e-9)
    assert bool(row[S.HAS_AUDIO])
    assert row[S.FACE_COVERAGE] > 0.9, row[S.FACE_COVERAGE]
    # One phrase fills 1.0-3.5 s (recording_speech_intervals): the 4 windows inside it of the
    # 8-9 have speech, the first window (0-1 s) only room noise.
    assert row[S.SPEECH_COVERAGE] > 0.4, row[S.SPEECH_COVERAGE]
    (phrase_start, phrase_end), = recording_speech_intervals(CODEC_SECONDS)
    tl = job["timelines"]
    windows = tl[tl["file"] == job["files"][name]].groupby(S.WINDOW_INDEX).first()
    inside = ((windows[S.WINDOW_START_S] >= phrase_start)
              & (windows[S.WINDOW_END_S] <= phrase_end))
    assert inside.sum() == 4 and windows.loc[inside, S.SPEECH_PRESENT].all()
    assert not windows.loc[windows[S.WINDOW_END_S] <= phrase_start, S.SPEECH_PRESENT].any()


@pytest.mark.parametrize("name", [n for n in CODEC_VARIANTS if n != "h264_mp4"])
def test_every_codec_shows_the_same_picture(job, name):
    """The participant's face is where it is in the H.264 original: each decoder scaled the
    picture to the same size and turned it upright (the rotated HEVC is stored sideways)."""
    want = _participant_box(job, job["files"]["h264_mp4"])
    got = _participant_box(job, job["files"][name])
    assert np.abs(got - want).max() < 8, (got, want)  # pixels at 320×240


def test_a_stream_no_decoder_reads_is_a_decode_error(job):
    row = job["clips"].loc[DAMAGED]
    assert row[S.STATUS] == S.Status.DECODE_ERROR.value
    assert row[S.ERROR] == ("video decoding failed at 0.0s: the video codec refused a packet "
                            "(invalid data)")
    assert row[S.VIDEO_DECODER] is None or pd.isna(row[S.VIDEO_DECODER])
    assert row[S.FRAMES_SAMPLED] == 0
    assert DAMAGED not in set(job["timelines"]["file"])


def test_clip_files_written_before_the_decoder_column_still_read(job, tmp_path):
    """``video_decoder`` is appended last and nullable: a folder holding clip files of both
    kinds reads with today's schema, the older rows with a null decoder."""
    clip_id = job["clips"].loc[job["files"]["av1_mp4"], S.CLIP_ID]
    written = job["out"] / "clips" / f"{clip_id}.parquet"
    assert pq.read_schema(written) == S.CLIP_SCHEMA
    new = pq.read_table(written)
    old = new.drop_columns([S.VIDEO_DECODER]).replace_schema_metadata(None)
    pq.write_table(new, tmp_path / "new.parquet")
    pq.write_table(old.set_column(0, S.CLIP_ID, pa.array(["old"])), tmp_path / "old.parquet")
    both = pq.read_table(tmp_path, schema=S.CLIP_SCHEMA).to_pandas().set_index(S.CLIP_ID)
    assert pd.isna(both.loc["old", S.VIDEO_DECODER])
    assert both.loc[clip_id, S.VIDEO_DECODER] == "pyav"
