"""Who speaks, who is the participant, which faces are on the screen: the rules of
operators/fusion/participant.py on their own and inside the timeline step."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from operators import schema as S
from operators.batches import ragged
from operators.fusion.build_timeline import BuildTimeline, TimelineConfig, confidence
from operators.fusion.participant import (
    ParticipantConfig,
    TrackEvidence,
    choose_participant,
    mouth_motion,
    on_screen_flags,
)
from tests.operators.fusion.test_build_timeline import HAPPY, SAD, _probs, _thumbs

FRAME = (1280, 720)


def _evidence(*, detections=50, size=100.0, centre=(0.5, 0.5), live=True, speaking=0):
    return TrackEvidence(detections=detections, median_area=size * size, centre=centre,
                         width_share=size / FRAME[0], live=live, speaking_windows=speaking)


PHOTO_ON_SCREEN = _evidence(size=207, centre=(0.55, 0.45), live=False)
INSET = _evidence(size=52, centre=(0.88, 0.84), speaking=20)
VIDEO_CALL = _evidence(size=300, centre=(0.45, 0.45), speaking=25)


def test_a_still_photo_loses_to_the_live_inset():
    """The measured failure: a stock photo's large face, seen as often as the webcam's."""
    index, reason = choose_participant([PHOTO_ON_SCREEN, INSET], ParticipantConfig())
    assert index == 1 and reason.startswith("live")
    assert on_screen_flags([PHOTO_ON_SCREEN, INSET], 1) == [True, False]


def test_a_video_call_on_screen_loses_to_the_webcam_inset():
    """Both faces move and both mouths move while somebody speaks: the layout decides."""
    index, reason = choose_participant([VIDEO_CALL, INSET], ParticipantConfig())
    assert index == 1 and reason.startswith("layout")
    assert on_screen_flags([VIDEO_CALL, INSET], 1) == [True, False]


def test_two_live_people_in_a_room_the_speaker_wins_then_screen_time():
    talker = _evidence(size=120, centre=(0.35, 0.4), speaking=12, detections=40)
    listener = _evidence(size=150, centre=(0.7, 0.45), speaking=2, detections=50)
    assert choose_participant([listener, talker], ParticipantConfig()) == (
        1, "speaking: in 12 speech windows, the next face in 2")
    quiet = _evidence(size=120, centre=(0.35, 0.4), speaking=3, detections=40)
    index, reason = choose_participant([listener, quiet], ParticipantConfig())
    assert index == 0 and reason.startswith("screen time")
    assert on_screen_flags([listener, quiet], 0) == [False, False]


def test_two_photos_keep_the_most_seen_and_the_other_is_on_screen():
    """The two_faces sample (two still photographs): unchanged participant."""
    big = _evidence(size=128, centre=(0.32, 0.4), live=False)
    small = _evidence(size=58, centre=(0.8, 0.34), live=False, detections=49)
    index, reason = choose_participant([big, small], ParticipantConfig())
    assert index == 0 and reason.startswith("screen time")
    assert on_screen_flags([big, small], 0) == [False, True]


@pytest.mark.parametrize(("region", "expected"), [
    ("top-left", 0), ("bottom-right", 1), ((0.0, 0.0, 0.6, 0.6), 0)])
def test_a_pinned_region_overrides_the_evidence(region, expected):
    tracks = [_evidence(centre=(0.2, 0.2), live=False), INSET]
    index, reason = choose_participant(tracks, ParticipantConfig(region=region))
    assert index == expected and reason.startswith("pinned")


def test_a_pinned_region_without_a_face_says_so_and_falls_back():
    index, reason = choose_participant([PHOTO_ON_SCREEN, INSET],
                                       ParticipantConfig(region="top-left"))
    assert index == 1 and reason.startswith("participant.region top-left holds no face")


@pytest.mark.parametrize("region", [(0.5, 0.5, 0.4, 0.9), (0, 0, 1, 1.5), "middle"])
def test_a_bad_region_is_refused(region):
    with pytest.raises(ValidationError):
        ParticipantConfig(region=region)


def test_mouth_motion_is_zero_for_a_still_face_and_skips_gaps():
    ts = np.array([0.0, 0.2, 0.4, 1.4, 1.6])
    assert np.isnan(mouth_motion(ts, _thumbs(5, talking=False), 0.45)[0])
    np.testing.assert_allclose(mouth_motion(ts, _thumbs(5, talking=False), 0.45)[1:],
                               [0, 0, np.nan, 0])
    moving = mouth_motion(ts, _thumbs(5, talking=True), 0.45)
    assert (moving[[1, 2, 4]] > 0.5).all() and np.isnan(moving[[0, 3]]).all()


def test_confidence_grows_with_certainty_evidence_and_agreement():
    peaked, flat = _probs(happy=0.9, neutral=0.1), np.full(7, 1 / 7, np.float32)
    assert confidence(flat, face=flat, voice=None, face_quality=1, voice_quality=0) == (
        pytest.approx(0, abs=1e-6))
    sure = confidence(peaked, face=peaked, voice=None, face_quality=1, voice_quality=0)
    assert 0.6 < sure < 1
    assert confidence(peaked, face=peaked, voice=None, face_quality=0.5,
                      voice_quality=0) == pytest.approx(sure / 2)
    agree = confidence(peaked, face=peaked, voice=peaked, face_quality=1, voice_quality=1)
    disagree = confidence(peaked, face=peaked, voice=_probs(sad=0.9, neutral=0.1),
                          face_quality=1, voice_quality=1)
    assert agree == pytest.approx(sure) and disagree < agree / 2


def _two_faces(talking=(True, False), fps=5, seconds=4.0):
    """One chunk: face A (centre, large) and face B (a bottom-right inset) in every frame, talking
    or still as given, face A happy and B sad; speech over [1, 3) s, voice says angry."""
    ts = np.arange(0, seconds * fps) / fps
    n = len(ts)
    vs = np.arange(0, seconds, 0.5)
    speech = np.where((vs >= 1.0) & (vs < 3.0), 0.6, 0.0).astype(np.float32)
    thumbs = [_thumbs(n, t, seed=k) for k, t in enumerate(talking)]
    boxes = [np.float32([400, 200, 600, 400]), np.float32([1100, 550, 1180, 630])]
    row = {
        S.CLIP_ID: "clip", S.URI: "/x.mp4", S.SIZE_BYTES: 10, S.STATUS: "", S.ERROR: "",
        S.CONTAINER: "mp4", S.VIDEO_CODEC: "h264", S.DURATION_S: seconds, S.FPS: 25.0,
        S.WIDTH: 1280.0, S.HEIGHT: 720.0, S.ROTATION: 0.0, S.HAS_AUDIO: True,
        S.CHUNK_INDEX: 0, S.N_CHUNKS: 1, S.CHUNK_START_S: 0.0, S.CHUNK_END_S: seconds,
        S.FRAME_TS: ts, S.FRAME_WIDTH: FRAME[0], S.FRAME_HEIGHT: FRAME[1],
        S.FACE_FRAME: np.repeat(np.arange(n, dtype=np.int32), 2),
        S.FACE_BOX: np.stack([boxes[i % 2] for i in range(2 * n)]),
        S.FACE_SCORE: np.ones(2 * n, np.float32),
        S.FACE_THUMB: np.stack([thumbs[i % 2][i // 2] for i in range(2 * n)]),
        S.FACE_PROBS: np.stack([(HAPPY, SAD)[i % 2] for i in range(2 * n)]),
        S.VOICE_WINDOW_START_S: vs, S.VOICE_SPEECH_RATIO: speech,
        S.VOICE_PITCH_HZ: np.full(len(vs), 150, np.float32),
        S.VOICE_LOUDNESS_DB: np.full(len(vs), -20, np.float32),
        S.VOICE_MFCC: np.zeros((len(vs), S.N_MFCC), np.float32),
        S.VOICE_PROBS: np.tile(_probs(angry=0.8, neutral=0.2), (len(vs), 1)),
        S.VOICE_VALENCE: np.zeros(len(vs), np.float32),
        S.VOICE_AROUSAL: np.zeros(len(vs), np.float32),
        S.STAGE_SECONDS: 0.1, S.VIDEO_DECODER: "decord",
    }
    return {k: (ragged([v]) if isinstance(v, np.ndarray) else np.asarray([v]))
            for k, v in row.items()}


def _run(batch, participant=None):
    step = BuildTimeline(TimelineConfig(median_windows=1), min_speech_ratio=0.15,
                         product=True, participant=participant)
    table = step(batch)
    tl = pa.Table.from_struct_array(table.column(S.TIMELINE).combine_chunks().flatten())
    return table.drop_columns([S.TIMELINE]).to_pylist()[0], tl.to_pandas()


def test_speech_goes_to_the_face_that_speaks_not_to_the_still_one():
    """Delivery (a) in miniature: the talking face is the participant even though the still
    one is larger; speech is fused into it only, the still face is on screen."""
    batch = _two_faces(talking=(False, True))
    clip, tl = _run(batch)
    assert clip[S.PARTICIPANT_REASON].startswith("live")
    talker, still = tl[tl[S.TRACK_ID] == 0], tl[tl[S.TRACK_ID] == 1]
    assert (talker[S.BOX].map(lambda b: b[0]) == 1100).all()  # the small right face
    speech = talker[S.SPEECH_PRESENT].to_numpy(bool)
    assert talker.loc[speech, S.SPEAKING].all() and not talker.loc[~speech, S.SPEAKING].any()
    assert (talker.loc[speech, S.FUSION_MODE] == "fusion").all()
    assert talker[S.SPEAKING_SCORE].min() > 0.5
    assert not still[S.SPEAKING].any() and (still[S.SPEAKING_SCORE] == 0).all()
    assert (still[S.FUSION_MODE] == "face_only").all() and still[S.ON_SCREEN].all()
    assert still[list(S.VOICE_PROB_COLUMNS)].isna().all().all()
    assert not talker[S.ON_SCREEN].any() and not tl[S.OFFSCREEN_SPEECH].any()
    assert tl[S.TRACK_ID].notna().all()  # no speech is left over for a voice-only row
    # Each modality's own output sits beside the fused one.
    np.testing.assert_allclose(talker[list(S.FACE_PROB_COLUMNS)].to_numpy(),
                               np.tile(SAD, (len(talker), 1)), atol=1e-6)
    np.testing.assert_allclose(talker.loc[speech, list(S.VOICE_PROB_COLUMNS)].to_numpy(),
                               np.tile(_probs(angry=0.8, neutral=0.2), (speech.sum(), 1)),
                               atol=1e-6)
    assert talker.loc[~speech, list(S.VOICE_PROB_COLUMNS)].isna().all().all()


def test_speech_with_no_moving_mouth_on_screen_is_offscreen():
    """Delivery (b): a still face, speech from somebody unseen: no fusion on the face."""
    batch = _two_faces(talking=(False, False))
    clip, tl = _run(batch)
    faces = tl[tl[S.TRACK_ID].notna()]
    assert (faces[S.FUSION_MODE] == "face_only").all() and not faces[S.SPEAKING].any()
    speech = tl.drop_duplicates(S.WINDOW_INDEX).set_index(S.WINDOW_INDEX)[S.SPEECH_PRESENT]
    offscreen = tl.drop_duplicates(S.WINDOW_INDEX).set_index(S.WINDOW_INDEX)[
        S.OFFSCREEN_SPEECH]
    assert offscreen.tolist() == speech.tolist() and speech.sum() == 4
    voice = tl[tl[S.TRACK_ID].isna()]
    assert len(voice) == 4 and (voice[S.FUSION_MODE] == "voice_only").all()
    # Neither face moves: the corner inset is the participant (the webcam's place), and the
    # clip describes it (sad, face only), never the unseen voice (angry).
    assert clip[S.PARTICIPANT_REASON].startswith("layout")
    assert clip[S.DOMINANT_EMOTION] == "sad" and clip["share_sad"] == 1.0


def test_a_pinned_region_picks_the_participant_and_the_reason_says_so():
    clip, tl = _run(_two_faces(talking=(False, True)),
                    ParticipantConfig(region=(0.0, 0.0, 0.5, 1.0)))
    assert clip[S.PARTICIPANT_REASON] == "pinned: participant.region (0.0, 0.0, 0.5, 1.0)"
    participant = tl[tl[S.TRACK_ID] == 0]
    assert (participant[S.BOX].map(lambda b: b[0]) == 400).all()
    # The pinned participant is still: it does not speak, so the talker keeps the speech.
    assert not participant[S.SPEAKING].any()
    talker = tl[tl[S.TRACK_ID] == 1]
    assert talker.loc[talker[S.SPEECH_PRESENT].astype(bool), S.SPEAKING].all()
