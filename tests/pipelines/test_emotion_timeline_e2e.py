"""The timeline job end to end: local Ray, inputs and outputs on a real S3 server on
127.0.0.1, runs logged to a real MLflow server, on the generated fixture recordings."""

from __future__ import annotations

import json
import re

import boto3
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest
import s3fs

from operators import schema as S
from pipelines.emotion_timeline.config import load_config
from pipelines.emotion_timeline.job import run

pytestmark = pytest.mark.integration

BUCKET = "recordings"


@pytest.fixture(scope="module")
def job(media, s3_endpoint, mlflow_server, ray_local):
    """Upload the fixture media, run the job twice over S3, return what it wrote."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for name, path in media.items():
        # a space and a non-ASCII letter in one key, as users name their files
        key = f"in/session 1/{path.name}" if name != "face_speech" else f"in/Jürgen {path.name}"
        s3.upload_file(str(path), BUCKET, key)
    config = load_config(None, [f"storage.endpoint_url={s3_endpoint}",
                                f"tracking.uri={mlflow_server}",
                                "tracking.experiment=e2e"])
    first = run(f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", config)
    second = run(f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", config)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    timelines = pads.dataset(f"{BUCKET}/out/timelines", filesystem=fs, format="parquet")
    clips = pads.dataset(f"{BUCKET}/out/clips", filesystem=fs, format="parquet")
    truth = json.loads((media["face_speech"].parent / "cases.json").read_text())
    return {"first": first, "second": second, "timelines": timelines, "clips": clips,
            "truth": truth, "fs": fs}


def _clip(job, case: str) -> pd.Series:
    clips = job["second"].clips
    row = clips[clips[S.URI].str.endswith(f"{case}.mp4")]
    assert len(row) == 1, f"expected one clip row for {case}"
    return row.iloc[0]


def _timeline(job, case: str) -> pd.DataFrame:
    tl = job["timelines"].to_table().to_pandas()
    return tl[tl[S.URI].str.endswith(f"{case}.mp4")].sort_values(
        [S.TRACK_ID, S.WINDOW_INDEX], na_position="first")


def test_every_input_has_exactly_one_expected_status(job, media):
    clips = job["clips"].to_table().to_pandas()
    assert len(clips) == len(media) and clips[S.CLIP_ID].is_unique
    for case, spec in job["truth"].items():
        row = _clip(job, case.removesuffix(".mp4"))
        assert row[S.STATUS] == spec["expected_status"], (case, row[S.ERROR])
        if spec["expected_status"] == "ok":
            assert row[S.ERROR] is None or pd.isna(row[S.ERROR]), (case, row[S.ERROR])
        else:
            assert re.fullmatch(spec["error"], row[S.ERROR] or ""), (case, row[S.ERROR])
            assert "s3://" not in row[S.ERROR] and "emoray-staging" not in row[S.ERROR]
    faceless = _clip(job, "no_face")
    counted = int(re.fullmatch(job["truth"]["no_face.mp4"]["error"], faceless[S.ERROR]).group(1))
    assert counted == faceless[S.FRAMES_SAMPLED] > 0


def test_written_parquet_has_the_declared_schemas(job):
    assert job["timelines"].schema == S.TIMELINE_SCHEMA
    assert job["clips"].schema == S.CLIP_SCHEMA


def test_second_run_replaced_rows_instead_of_duplicating(job):
    tl = job["timelines"].to_table().to_pandas()
    assert len(tl) > 0
    assert not tl.duplicated([S.CLIP_ID, S.TRACK_ID, S.WINDOW_INDEX]).any()
    assert len(job["fs"].ls(f"{BUCKET}/out/clips")) == len(job["truth"])
    assert job["first"].run_id != job["second"].run_id
    assert set(job["clips"].to_table().column(S.RUN_ID).to_pylist()) == {job["second"].run_id}


def test_astronaut_participant_is_happy_and_always_seen(job):
    row = _clip(job, "face_speech")
    assert row[S.DOMINANT_EMOTION] == "happy"
    assert row["share_happy"] > 0.8
    assert row[S.FACE_COVERAGE] > 0.95
    tl = _timeline(job, "face_speech")
    participant = tl[tl[S.IS_PARTICIPANT].fillna(False)]
    assert participant[S.FACE_PRESENT].mean() > 0.95
    assert (participant[S.VALENCE].dropna() > 0.3).mean() > 0.8
    # the default job fuses face and voice by the product rule
    assert (participant[S.VA_SOURCE].dropna() == "circumplex_from_fused_probs").all()


def test_default_job_gives_speech_only_to_a_face_that_speaks(job):
    """The default (product rule, shipped voice model).  The sample's participant is a
    still photograph, so the speech over it is nobody's on screen: the face stays
    `face_only`, the speech windows are `offscreen_speech` with `voice_only` rows of their
    own (null track), and a faceless clip's speech is `voice_only` on the null track.
    (Fusion on a face that does speak: tests/pipelines/test_people.py.)"""
    tl = _timeline(job, "face_speech")
    participant = tl[tl[S.TRACK_ID] == 0]
    speech = participant[S.SPEECH_PRESENT].astype(bool)
    assert speech.any() and (~speech).any()
    assert (participant[S.FUSION_MODE] == "face_only").all()
    assert not participant[S.SPEAKING].any()
    assert participant.loc[speech, S.OFFSCREEN_SPEECH].all()
    assert not participant.loc[~speech, S.OFFSCREEN_SPEECH].any()
    voice = tl[tl[S.TRACK_ID].isna()]
    assert sorted(voice[S.WINDOW_INDEX]) == sorted(participant.loc[speech, S.WINDOW_INDEX])
    assert (voice[S.FUSION_MODE] == "voice_only").all()
    assert voice[list(S.VOICE_PROB_COLUMNS)].notna().all().all()
    silent = _timeline(job, "face_silence")
    assert (silent[S.FUSION_MODE] == "face_only").all()
    faceless = _timeline(job, "no_face")
    spoken = faceless[S.SPEECH_PRESENT].astype(bool)
    assert spoken.any() and (faceless.loc[spoken, S.FUSION_MODE] == "voice_only").all()
    assert faceless.loc[~spoken, S.FUSION_MODE].isna().all()
    # The voice model ran on the faceless clip's speech; its neutral synthetic voice is no
    # confident emotion (the trust issue's measured failure), so no category is claimed.
    assert faceless.loc[spoken, list(S.VOICE_PROB_COLUMNS)].notna().all().all()
    assert faceless.loc[spoken, S.CONFIDENCE].between(0, 1).all()
    assert faceless.loc[spoken, S.DOMINANT_EMOTION].isna().all()
    assert pd.isna(_clip(job, "no_face")[S.DOMINANT_EMOTION])
    assert _clip(job, "face_speech")[S.FACE_MODEL].endswith("(product rule)")


def test_each_modality_keeps_its_own_output(job):
    """face_p_* is the face model alone on every face row; the happy astronaut reads happy
    there with a confidence that clears the threshold, and the clip says so."""
    tl = _timeline(job, "face_speech")
    face = tl[tl[S.FACE_PRESENT]]
    probs = face[list(S.FACE_PROB_COLUMNS)].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert (probs.argmax(axis=1) == S.EMOTIONS.index("happy")).mean() > 0.8
    assert face[S.FACE_VALENCE].notna().all() and face[S.FACE_AROUSAL].notna().all()
    assert face[list(S.VOICE_PROB_COLUMNS)].isna().all().all()  # the voice is not hers
    assert (face[S.CONFIDENCE] >= 0.3).mean() > 0.8
    assert _clip(job, "face_speech")[S.PARTICIPANT_REASON] == "the only face"


def test_face_coverage_is_zero_without_a_face(job):
    row = _clip(job, "no_face")
    assert row[S.FACE_COVERAGE] == 0 and row[S.FACE_TRACKS] == 0
    tl = _timeline(job, "no_face")
    assert len(tl) > 0 and tl[S.TRACK_ID].isna().all() and not tl[S.FACE_PRESENT].any()
    assert tl[S.BOX].isna().all()
    # categories only from the voice, only where there is speech
    assert tl.loc[~tl[S.SPEECH_PRESENT].astype(bool), "p_happy"].isna().all()


def test_face_leaving_leaves_null_windows(job):
    spec = job["truth"]["face_then_noface.mp4"]
    face_end = max(end for _, end in spec["face_intervals"])
    tl = _timeline(job, "face_then_noface")
    participant = tl[tl[S.TRACK_ID] == 0]
    late = participant[participant[S.WINDOW_START_S] > face_end + 0.5]
    early = participant[participant[S.WINDOW_END_S] < face_end - 0.5]
    assert len(late) and not late[S.FACE_PRESENT].any() and late[S.BOX].isna().all()
    # without the face the participant has no category; the speech there is nobody's on
    # screen: voice-only rows of its own (null track), only where it speaks
    spoken = late[S.SPEECH_PRESENT].astype(bool)
    assert spoken.any() and late[S.FUSION_MODE].isna().all() and late["p_happy"].isna().all()
    assert late.loc[spoken, S.OFFSCREEN_SPEECH].all()
    voice = tl[tl[S.TRACK_ID].isna() & (tl[S.WINDOW_START_S] > face_end + 0.5)]
    assert sorted(voice[S.WINDOW_INDEX]) == sorted(late.loc[spoken, S.WINDOW_INDEX])
    assert (voice[S.FUSION_MODE] == "voice_only").all()
    assert early[S.FACE_PRESENT].all()


def test_speech_present_only_where_speech_is(job):
    for case in ("face_speech", "no_face", "two_faces"):
        spec = job["truth"][f"{case}.mp4"]
        windows = _timeline(job, case).drop_duplicates(S.WINDOW_INDEX)
        inside = np.zeros(len(windows), bool)
        touching = np.zeros(len(windows), bool)
        for start, end in spec["speech_intervals"]:
            inside |= (windows[S.WINDOW_START_S] >= start) & (windows[S.WINDOW_END_S] <= end)
            touching |= (windows[S.WINDOW_START_S] < end) & (windows[S.WINDOW_END_S] > start)
        assert inside.any()
        assert windows[S.SPEECH_PRESENT][inside].all(), case
        assert not windows[S.SPEECH_PRESENT][~touching].any(), case
    silent = _timeline(job, "face_silence")
    assert not silent[S.SPEECH_PRESENT].any() and silent[S.SPEECH_PRESENT].notna().all()


def test_two_faces_make_two_tracks_participant_larger(job):
    """Two still photographs: neither moves nor sits in a corner inset, so the participant
    is the most-seen (then larger) face, as before the evidence rules; the other face, a
    still picture, is flagged on screen and never takes speech."""
    row = _clip(job, "two_faces")
    assert row[S.FACE_TRACKS] == 2
    assert row[S.PARTICIPANT_REASON].startswith("screen time")
    tl = _timeline(job, "two_faces")
    boxes = {t: np.stack(g[S.BOX].dropna().to_numpy()) for t, g in tl.groupby(S.TRACK_ID)}
    area = {t: np.mean((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) for t, b in boxes.items()}
    assert area[0] > area[1]
    other = tl[tl[S.TRACK_ID] == 1]
    assert other[S.ON_SCREEN].all() and not tl[S.SPEAKING].fillna(False).any()
    assert not tl[tl[S.TRACK_ID].notna()][S.FUSION_MODE].eq("fusion").any()


def test_no_audio_clip_has_faces_and_null_voice(job):
    row = _clip(job, "no_audio")
    assert not bool(row[S.HAS_AUDIO])
    tl = _timeline(job, "no_audio")
    assert tl[S.FACE_PRESENT].all() and tl[S.SPEECH_PRESENT].isna().all()


def test_run_is_logged_to_mlflow(job, mlflow_server):
    mlflow.set_tracking_uri(mlflow_server)
    run = mlflow.get_run(job["second"].run_id)
    assert run.data.metrics["clips"] == len(job["truth"])
    assert run.data.metrics["realtime_factor"] > 0
    assert run.data.params["decode.sample_fps"] == "5.0"
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)]
    assert "clips.parquet" in artifacts
    assert job["second"].summary_line().startswith(f"clips: {len(job['truth'])}")


# What may hold a picture, a face crop or an embedding; file kinds of images and arrays.
_BIOMETRIC_NAMES = ("crop", "embed", "feature", "image", "pixel", "thumb", "jpeg", "png")
_PICTURE_FILES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".npy",
                  ".npz")
# The only list columns the output declares, each with its most values: a box, and the mean
# MFCCs of the window's audio (13 > 7 classes, but voice summary statistics, not a face).
_LIST_COLUMNS = {S.BOX: 4, S.MFCC_MEAN: S.N_MFCC}


def test_no_face_crops_or_embeddings_are_written_by_default(job):
    """Biometric data stays in the workers: the output holds one Parquet file per clip in
    clips/ and timelines/ (and, where findings exist, moments/ and segments/), and none of
    their columns can hold a picture or a feature vector
    (by name: no crop/embedding/feature column; by type: no binary column, no nested list,
    lists only where declared and no longer than declared)."""
    files = job["fs"].find(f"{BUCKET}/out")
    assert files
    assert not [f for f in files if f.lower().endswith(_PICTURE_FILES)], files
    outputs = rf"{BUCKET}/out/(clips|timelines|moments|segments)/[0-9a-f]{{16}}\.parquet"
    strays = [f for f in files if not re.fullmatch(outputs, f)]
    assert not strays, strays
    forbidden = {S.FRAMES, S.FACE_CROPS, S.FACE_FEATURES, S.VOICE_FEATURES, S.AUDIO}
    for dataset in (job["timelines"], job["clips"]):
        fragments = list(dataset.get_fragments())
        assert fragments
        for fragment in fragments:
            for field in fragment.physical_schema:
                where = (fragment.path, field.name, str(field.type))
                assert field.name not in forbidden, where
                assert not any(word in field.name.lower() for word in _BIOMETRIC_NAMES), where
                assert not (pa.types.is_binary(field.type)
                            or pa.types.is_large_binary(field.type)
                            or pa.types.is_fixed_size_binary(field.type)), where
                if pa.types.is_list(field.type) or pa.types.is_large_list(field.type) or (
                        pa.types.is_fixed_size_list(field.type)):
                    # the clip row's warnings are text (marker and metadata problems)
                    if field.name == S.WARNINGS:
                        assert pa.types.is_string(field.type.value_type), where
                        continue
                    assert field.name in _LIST_COLUMNS, where
                    assert pa.types.is_floating(field.type.value_type), where
                else:
                    assert not pa.types.is_nested(field.type), where
        table = dataset.to_table()
        for column, most in _LIST_COLUMNS.items():
            if column in table.column_names:
                lengths = pc.list_value_length(table.column(column)).drop_null()
                assert len(lengths) and pc.max(lengths).as_py() <= most, column
