"""Timeline assembly from chunk rows: windows, tracks, nulls, smoothing and status."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from models.emotions import CIRCUMPLEX
from operators import schema as S
from operators.batches import ragged, to_list_columns
from operators.fusion.build_timeline import (
    BuildTimeline,
    TimelineConfig,
    circumplex_va,
    median_smooth,
)

HAPPY = np.eye(7, dtype=np.float32)[S.EMOTIONS.index("happy")]
SAD = np.eye(7, dtype=np.float32)[S.EMOTIONS.index("sad")]


def _thumbs(n: int, talking: bool, seed: int = 0) -> np.ndarray:
    """Face thumbnails: a fresh random picture per frame for a moving face (its mouth
    region changes far beyond any threshold), one fixed picture for a still one."""
    rng = np.random.default_rng(seed)
    size = S.FACE_THUMB_SIZE ** 2
    if talking:
        return rng.integers(0, 256, (n, size), dtype=np.uint8)
    return np.tile(rng.integers(0, 256, size, dtype=np.uint8), (n, 1))


def _chunks(n_chunks=2, chunk_s=2.0, fps=5, face=lambda t: True, has_audio=True,
            status=None, talking=True):
    """Chunk rows as the face-emotion stage hands them over (one face, talking or still)."""
    cols = {k: [] for k in (S.CLIP_ID, S.URI, S.SIZE_BYTES, S.STATUS, S.ERROR, S.CONTAINER,
                            S.VIDEO_CODEC, S.DURATION_S, S.FPS, S.WIDTH, S.HEIGHT, S.ROTATION,
                            S.HAS_AUDIO, S.CHUNK_INDEX, S.N_CHUNKS, S.CHUNK_START_S,
                            S.CHUNK_END_S,
                            S.FRAME_TS, S.FACE_FRAME, S.FACE_BOX, S.FACE_SCORE, S.FACE_PROBS,
                            S.VOICE_WINDOW_START_S, S.VOICE_SPEECH_RATIO, S.VOICE_PITCH_HZ,
                            S.VOICE_LOUDNESS_DB, S.VOICE_MFCC, S.STAGE_SECONDS,
                            S.VIDEO_DECODER, S.FACE_THUMB, S.FRAME_WIDTH, S.FRAME_HEIGHT)}
    status = status or ("",) * n_chunks
    for c in reversed(range(n_chunks)):  # out of order on purpose
        start, end = c * chunk_s, (c + 1) * chunk_s
        ts = np.arange(start * fps, end * fps) / fps
        frames = np.array([i for i, t in enumerate(ts) if face(t)], np.int32)
        vs = np.arange(start, end, 0.5)
        speech = np.where((vs >= 1.0) & (vs < 3.0), 0.6, 0.0).astype(np.float32)
        for key, value in {
            S.CLIP_ID: "clip", S.URI: "/x.mp4", S.SIZE_BYTES: 10, S.STATUS: status[c],
            S.ERROR: "", S.CONTAINER: "mp4", S.VIDEO_CODEC: "h264",
            S.DURATION_S: n_chunks * chunk_s, S.FPS: 25.0, S.WIDTH: 640.0, S.HEIGHT: 480.0,
            S.ROTATION: 0.0, S.HAS_AUDIO: has_audio, S.CHUNK_INDEX: c, S.N_CHUNKS: n_chunks,
            S.CHUNK_START_S: start,
            S.CHUNK_END_S: end, S.FRAME_TS: ts, S.FACE_FRAME: frames,
            S.FACE_BOX: np.tile(np.float32([100, 100, 200, 200]), (len(frames), 1)),
            S.FACE_SCORE: np.ones(len(frames), np.float32),
            S.FACE_THUMB: _thumbs(len(frames), talking, seed=c),
            S.FRAME_WIDTH: 640, S.FRAME_HEIGHT: 480,
            S.FACE_PROBS: np.tile(HAPPY, (len(frames), 1)),
            S.VOICE_WINDOW_START_S: vs,
            S.VOICE_SPEECH_RATIO: speech if has_audio else np.full(len(vs), np.nan, np.float32),
            S.VOICE_PITCH_HZ: np.full(len(vs), 150, np.float32),
            S.VOICE_LOUDNESS_DB: np.full(len(vs), -20, np.float32),
            S.VOICE_MFCC: np.zeros((len(vs), S.N_MFCC), np.float32),
            S.STAGE_SECONDS: 0.5, S.VIDEO_DECODER: "decord",
        }.items():
            cols[key].append(value)
    return {k: (ragged(v) if isinstance(v[0], np.ndarray) else np.asarray(v))
            for k, v in cols.items()}


def _build(batch, **config):
    table = BuildTimeline(TimelineConfig(**config), min_speech_ratio=0.15)(batch)
    assert table.num_rows == 1
    timeline = pa.Table.from_struct_array(table.column(S.TIMELINE).combine_chunks().flatten())
    return table.drop_columns([S.TIMELINE]).to_pylist()[0], timeline.to_pandas()


def test_face_and_voice_windows():
    summary, tl = _build(_chunks())
    assert summary[S.STATUS] == "ok" and summary[S.ERROR] is None
    assert summary[S.WINDOWS] == 8 and len(tl) == 8  # 4 s on a 0.5 s hop, one track
    assert (tl[S.TRACK_ID] == 0).all() and tl[S.FACE_PRESENT].all()
    assert (tl[S.DOMINANT_EMOTION] == "happy").all()
    assert tl[S.VALENCE].iloc[0] == pytest.approx(CIRCUMPLEX["happy"][0])
    assert tl[S.SPEECH_PRESENT].tolist() == [False, False, True, True, True, True, False, False]
    assert summary[S.FACE_COVERAGE] == 1.0 and summary["share_happy"] == 1.0
    assert summary[S.PROCESSING_S] >= 1.0
    assert summary[S.VIDEO_DECODER] == "decord"  # carried from the chunk rows
    assert tl[S.WINDOW_END_S].max() == 4.0


def test_the_clip_names_the_decoder_of_its_chunks_with_frames():
    """Chunk rows without frames carry "" (see DecodeFrames): the clip takes the decoder of
    a chunk that has frames, and "" (null when written) when none has."""
    batch = _chunks()  # rows in reverse chunk order: [chunk 1, chunk 0]
    batch[S.VIDEO_DECODER] = np.asarray(["pyav", ""])
    assert _build(batch)[0][S.VIDEO_DECODER] == "pyav"
    batch[S.VIDEO_DECODER] = np.asarray(["", ""])
    assert _build(batch)[0][S.VIDEO_DECODER] == ""


def test_windows_end_with_the_last_sampled_frame():
    """A 0.52 s clip sampled at 0, 0.2, 0.4 s: no window [0.5, 0.52] s without a picture; the
    one window reaches to the end of the clip, so its last 20 ms of audio are still in it."""
    batch = _chunks(n_chunks=1, chunk_s=0.52)
    assert batch[S.FRAME_TS][0].tolist() == [0.0, 0.2, 0.4]
    assert batch[S.VOICE_WINDOW_START_S][0].tolist() == [0.0, 0.5]
    clip, tl = _build(batch)
    assert clip[S.WINDOWS] == 1 and clip[S.FRAMES_SAMPLED] == 3
    assert tl[S.WINDOW_START_S].tolist() == [0.0]
    assert tl[S.WINDOW_END_S].tolist() == [pytest.approx(0.52)]
    assert tl[S.FACE_PRESENT].all() and tl[S.SPEECH_RATIO].notna().all()


def test_absent_face_windows_stay_null():
    summary, tl = _build(_chunks(face=lambda t: t < 2.0), median_windows=1)
    absent = tl[~tl[S.FACE_PRESENT] & tl[S.TRACK_ID].notna()]
    assert len(absent) > 0
    assert absent["p_happy"].isna().all() and absent[S.DOMINANT_EMOTION].isna().all()
    assert absent[S.VALENCE].isna().all() and absent[S.TRACK_ID].eq(0).all()
    assert summary[S.FACE_COVERAGE] == pytest.approx(0.5)


def test_no_face_clip_keeps_windows_with_null_track():
    summary, tl = _build(_chunks(face=lambda t: False))
    assert summary[S.STATUS] == "no_face" and "no face" in summary[S.ERROR]
    assert len(tl) == 8 and tl[S.TRACK_ID].isna().all() and not tl[S.FACE_PRESENT].any()
    assert tl[S.SPEECH_PRESENT].notna().all()


def test_no_audio_clip_has_null_voice():
    summary, tl = _build(_chunks(has_audio=False))
    assert summary[S.STATUS] == "no_audio"
    assert tl[S.SPEECH_PRESENT].isna().all() and tl[S.SPEECH_RATIO].isna().all()
    assert summary[S.SPEECH_COVERAGE] is None


def test_a_lost_chunk_makes_the_clip_partial():
    batch = _chunks(n_chunks=3)
    kept = {k: v[[0, 2]] for k, v in batch.items()}  # rows are in reverse: chunk 1 is lost
    summary, tl = _build(kept)
    assert summary[S.STATUS] == "partial" and "[1] of 3 lost" in summary[S.ERROR]
    assert summary[S.WINDOWS] == 8 and len(tl) == 8  # the two chunks that arrived


def test_upstream_failure_wins():
    summary, _ = _build(_chunks(status=("", "partial")))
    assert summary[S.STATUS] == "partial"


def test_median_smoothing_removes_a_one_window_blip_but_not_gaps():
    values = np.tile(HAPPY, (7, 1))
    values[3] = SAD
    present = np.ones(7, bool)
    present[6] = False
    out = median_smooth(values, present, 3)
    assert np.argmax(out[3]) == S.EMOTIONS.index("happy")
    assert np.isnan(out[6]).all()


def test_circumplex_is_a_weighted_mean():
    probs = np.stack([HAPPY, SAD, (HAPPY + SAD) / 2])
    valence, arousal = circumplex_va(probs)
    assert valence[2] == pytest.approx((valence[0] + valence[1]) / 2)
    assert valence[0] > 0 > valence[1] and arousal[0] > 0 > arousal[1]


def test_list_columns_round_trip_into_the_builder():
    """Chunk rows flattened for the shuffle (to_list_columns) build the same timeline."""
    batch = _chunks()
    flat = to_list_columns(batch)
    assert flat.schema.field(S.FACE_BOX).type == pa.list_(pa.float32())
    assert flat.schema.field(S.FACE_FRAME).type == pa.list_(pa.int32())
    assert flat.schema.field(S.STATUS).type == pa.string()
    as_numpy = {name: np.asarray(flat.column(name).to_numpy(zero_copy_only=False))
                for name in flat.column_names}
    _, direct = _build(batch)
    _, via_lists = _build(as_numpy)
    pd.testing.assert_frame_equal(direct, via_lists)


def test_list_columns_accept_uniform_row_arrays():
    """Ray hands an (rows, n, 4) array, not an object array, when all rows agree in shape."""
    flat = to_list_columns({S.FACE_BOX: np.ones((2, 3, 4), np.float32),
                            S.CHUNK_INDEX: np.arange(2)})
    assert flat.column(S.FACE_BOX).to_pylist()[1] == [1.0] * 12


def _probs(**classes):
    """A probability vector (EMOTIONS order) from a few class weights; the rest share 1e-3."""
    p = np.full(len(S.EMOTIONS), 1e-3, np.float32)
    for name, value in classes.items():
        p[S.EMOTIONS.index(name)] = value
    return p / p.sum()


def _product(batch, voice, *, face=None, speech_ok=lambda t: True):
    """Run the product rule (no smoothing) with ``face``/``voice`` probabilities on every
    face/window; ``speech_ok`` false makes that window's voice output NaN."""
    batch = dict(batch)
    if face is not None:
        batch[S.FACE_PROBS] = ragged([np.tile(face, (len(f), 1)) for f in batch[S.FACE_FRAME]])
    batch[S.VOICE_PROBS] = ragged([
        np.stack([voice if speech_ok(t) else np.full(7, np.nan, np.float32) for t in starts])
        for starts in batch[S.VOICE_WINDOW_START_S]])
    for column, value in ((S.VOICE_VALENCE, -0.25), (S.VOICE_AROUSAL, 0.5)):
        batch[column] = ragged([np.full(len(starts), value, np.float32)
                                for starts in batch[S.VOICE_WINDOW_START_S]])
    table = BuildTimeline(TimelineConfig(median_windows=1), min_speech_ratio=0.15,
                          product=True)(batch)
    timeline = pa.Table.from_struct_array(table.column(S.TIMELINE).combine_chunks().flatten())
    return (table.drop_columns([S.TIMELINE]).to_pylist()[0],
            timeline.to_pandas().sort_values(S.WINDOW_START_S, ignore_index=True))


def test_product_rule_multiplies_face_and_voice_where_both_are_present():
    # Face says happy, voice says sad, each hedging towards neutral: the product's argmax is
    # neutral, which neither modality ranks first.
    face, voice = _probs(happy=0.45, neutral=0.4, sad=0.15), _probs(sad=0.45, neutral=0.4,
                                                                     happy=0.15)
    summary, tl = _product(_chunks(), voice, face=face)
    speech = tl[S.SPEECH_PRESENT].to_numpy(bool)
    assert speech.tolist() == [False, False, True, True, True, True, False, False]
    assert (tl.loc[speech, S.FUSION_MODE] == "fusion").all()
    assert (tl.loc[~speech, S.FUSION_MODE] == "face_only").all()
    probs = tl[list(S.PROB_COLUMNS)].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    expected = face * voice / (face * voice).sum()
    np.testing.assert_allclose(probs[speech], np.tile(expected, (4, 1)), atol=1e-5)
    np.testing.assert_allclose(probs[~speech], np.tile(face, (4, 1)), atol=1e-5)
    assert (tl.loc[speech, S.DOMINANT_EMOTION] == "neutral").all()
    assert (tl.loc[~speech, S.DOMINANT_EMOTION] == "happy").all()
    valence, arousal = circumplex_va(expected[None])
    assert tl.loc[speech, S.VALENCE].to_numpy() == pytest.approx(np.full(4, valence[0]), abs=1e-5)
    assert tl.loc[speech, S.AROUSAL].to_numpy() == pytest.approx(np.full(4, arousal[0]), abs=1e-5)
    assert (tl[S.VA_SOURCE] == "circumplex_from_fused_probs").all()
    assert summary[S.VA_SOURCE] == "circumplex_from_fused_probs"
    assert summary["share_neutral"] == 0.5 and summary["share_happy"] == 0.5


def test_product_rule_survives_confident_disagreement():
    # One-hot face and voice on different classes multiply to 0 in float32 everywhere; the
    # rule still gives a distribution (the floor makes it a tie), never NaN.  The two
    # modalities share nothing: confidence is ~0 and no category is claimed.
    _, tl = _product(_chunks(), SAD, face=HAPPY)
    fused = tl[tl[S.FUSION_MODE] == "fusion"]
    probs = fused[list(S.PROB_COLUMNS)].to_numpy()
    assert len(fused) == 4 and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    top_two = np.sort(np.argsort(probs, axis=1)[:, -2:], axis=1)
    assert (top_two == sorted([S.EMOTIONS.index("happy"), S.EMOTIONS.index("sad")])).all()
    assert (fused[S.CONFIDENCE] < 0.05).all() and fused[S.DOMINANT_EMOTION].isna().all()


def test_product_rule_is_voice_only_without_a_face_and_face_only_without_voice_output():
    voice = _probs(angry=0.9, neutral=0.1)
    _, tl = _product(_chunks(face=lambda t: t < 2.0), voice,
                     speech_ok=lambda t: t != 1.5)
    face_rows = tl[tl[S.TRACK_ID] == 0].set_index(S.WINDOW_START_S)
    # speech over [1, 3) s, a talking face over [0, 2) s, the voice output missing at 1.5 s
    assert face_rows[S.FUSION_MODE].fillna("-").to_dict() == {
        0.0: "face_only", 0.5: "face_only", 1.0: "fusion", 1.5: "face_only",
        2.0: "-", 2.5: "-", 3.0: "-", 3.5: "-"}
    # Speech after the face has gone is nobody's on screen: rows of its own, null track.
    voice_rows = tl[tl[S.FUSION_MODE] == "voice_only"]
    assert voice_rows[S.TRACK_ID].isna().all()
    assert voice_rows[S.WINDOW_START_S].tolist() == [2.0, 2.5]
    assert voice_rows[S.OFFSCREEN_SPEECH].all()
    np.testing.assert_allclose(voice_rows[list(S.PROB_COLUMNS)].to_numpy(),
                               np.tile(voice, (2, 1)), atol=1e-5)
    np.testing.assert_allclose(voice_rows[list(S.VOICE_PROB_COLUMNS)].to_numpy(),
                               np.tile(voice, (2, 1)), atol=1e-5)
    assert (voice_rows[S.DOMINANT_EMOTION] == "angry").all()
    assert (voice_rows[S.VOICE_VALENCE] == -0.25).all()
    silent = face_rows[face_rows[S.FUSION_MODE].isna()]
    assert silent[list(S.PROB_COLUMNS)].isna().all().all() and silent[S.VALENCE].isna().all()

    # A faceless clip: the voice belongs to the null track.
    _, faceless = _product(_chunks(face=lambda t: False), voice)
    assert faceless[S.TRACK_ID].isna().all()
    spoken = faceless[S.SPEECH_PRESENT].to_numpy(bool)
    assert (faceless.loc[spoken, S.FUSION_MODE] == "voice_only").all()
    assert faceless.loc[~spoken, S.FUSION_MODE].isna().all()
    assert faceless[S.OFFSCREEN_SPEECH].tolist() == spoken.tolist()


def test_product_rule_and_a_fusion_model_exclude_each_other(tmp_path):
    from models import fusion

    fusion.save(fusion.build("decision", seed=0), tmp_path / "fusion.pt")
    with pytest.raises(ValueError, match="not both"):
        BuildTimeline(TimelineConfig(), 0.15, (tmp_path / "fusion.pt").read_bytes(),
                      product=True)
