"""Who speaks and who the participant is, end to end on recordings made from real faces:
a real talking-face video beside a still photograph, a stock photo on a screen with the
participant's webcam inset, a video call on the screen with the inset, one talking
participant, and a still face with speech from somebody unseen (the sample's face_speech).
One job run (local Ray, local files) serves every test here."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from operators import schema as S
from pipelines.emotion_timeline.config import load_config
from pipelines.emotion_timeline.job import run
from pipelines.sample_media.build import make_webcam_recording, recording_speech_intervals
from pipelines.sample_media.people import PEOPLE_SCENES

pytestmark = pytest.mark.integration

SECONDS = 15.0
WORKING = (640, 360)  # 1280×720 scenes at the decoder's working size (max side 640)


@pytest.fixture(scope="module")
def people(media, ray_local, tmp_path_factory):
    inputs = tmp_path_factory.mktemp("people-in")
    for name, make in PEOPLE_SCENES.items():
        make(inputs / f"{name}.mp4", SECONDS)
    make_webcam_recording(inputs / "talking_webcam.mp4", SECONDS)
    shutil.copy(media["face_speech"], inputs / "face_speech.mp4")
    out = tmp_path_factory.mktemp("people-out")
    result = run(str(inputs), str(out), load_config(None, ["tracking.enabled=false"]))
    return result.clips.set_index(S.URI), pd.read_parquet(out / "timelines")


def _clip(people, name: str) -> pd.Series:
    clips, _ = people
    return clips[clips.index.str.endswith(f"/{name}.mp4")].iloc[0]


def _timeline(people, name: str) -> pd.DataFrame:
    _, timelines = people
    return timelines[timelines[S.URI].str.endswith(f"/{name}.mp4")]


def _centre(track: pd.DataFrame) -> tuple[float, float]:
    boxes = np.stack(track[S.BOX].dropna().to_numpy())
    return (float(np.median(boxes[:, 0] + boxes[:, 2]) / 2),
            float(np.median(boxes[:, 1] + boxes[:, 3]) / 2))


def _inside_speech(windows: pd.DataFrame) -> pd.Series:
    """Windows wholly inside a phrase (the edges of a phrase are partly silence)."""
    inside = pd.Series(False, index=windows.index)
    for start, end in recording_speech_intervals(SECONDS):
        inside |= (windows[S.WINDOW_START_S] >= start) & (windows[S.WINDOW_END_S] <= end)
    return inside


def test_every_recording_is_ok(people):
    clips, _ = people
    assert len(clips) == 5 and (clips[S.STATUS] == "ok").all(), clips[[S.STATUS, S.ERROR]]


def test_the_talking_face_speaks_and_the_still_photo_does_not(people):
    """Delivery (a): speaking on >= 90 % of the talking track's speech windows, and on
    <= 5 % of the still face's."""
    tl = _timeline(people, "talking_beside_photo")
    assert set(tl[S.TRACK_ID].dropna()) == {0, 1}
    talker, still = tl[tl[S.TRACK_ID] == 0], tl[tl[S.TRACK_ID] == 1]
    assert _centre(talker)[0] < WORKING[0] / 2 < _centre(still)[0]  # talker left, photo right
    assert _clip(people, "talking_beside_photo")[S.PARTICIPANT_REASON].startswith("live")
    spoken = talker[talker[S.SPEECH_PRESENT].astype(bool) & talker[S.FACE_PRESENT]]
    assert len(spoken) >= 8 and spoken[S.SPEAKING].mean() >= 0.9
    heard = still[still[S.SPEECH_PRESENT].astype(bool) & still[S.FACE_PRESENT]]
    assert len(heard) >= 8 and heard[S.SPEAKING].mean() <= 0.05
    assert still[S.ON_SCREEN].all() and not still[S.FUSION_MODE].eq("fusion").any()
    assert (spoken.loc[spoken[S.SPEAKING], S.FUSION_MODE] == "fusion").all()


def test_one_talking_participant_is_still_fused(people):
    """Delivery (c), today's common case: fusion on >= 90 % of the speech windows."""
    tl = _timeline(people, "talking_webcam")
    participant = tl[tl[S.TRACK_ID] == 0]
    speech = participant[participant[S.SPEECH_PRESENT].astype(bool)]
    assert len(speech) >= 8 and (speech[S.FUSION_MODE] == "fusion").mean() >= 0.9
    # what each modality said is kept beside the fused result
    fused = speech[speech[S.FUSION_MODE] == "fusion"]
    assert fused[list(S.FACE_PROB_COLUMNS)].notna().all().all()
    assert fused[list(S.VOICE_PROB_COLUMNS)].notna().all().all()
    assert fused[[S.VOICE_VALENCE, S.VOICE_AROUSAL, S.CONFIDENCE]].notna().all().all()


def test_a_still_face_with_unseen_speech_is_never_fused(people):
    """Delivery (b): the astronaut photograph with speech: no fusion on her track, and
    `offscreen_speech` on every speech window."""
    tl = _timeline(people, "face_speech")
    face = tl[tl[S.TRACK_ID] == 0]
    assert not face[S.FUSION_MODE].eq("fusion").any() and not face[S.SPEAKING].any()
    windows = tl.drop_duplicates(S.WINDOW_INDEX)
    speech = windows[S.SPEECH_PRESENT].astype(bool)
    assert speech.sum() >= 4 and windows.loc[speech, S.OFFSCREEN_SPEECH].all()
    assert not windows.loc[~speech, S.OFFSCREEN_SPEECH].any()


@pytest.mark.parametrize("scene", ["stock_photo_pip", "video_call_pip"])
def test_the_participant_is_the_webcam_inset_not_a_face_on_the_screen(people, scene):
    """Issue 23's cases: a stock photo, then another real talking face, large on the screen;
    the participant talking in the bottom-right inset.  The screen's face is on screen and
    never takes speech; the clip summary describes the inset person."""
    clip = _clip(people, scene)
    tl = _timeline(people, scene)
    assert clip[S.FACE_TRACKS] == 2, clip[S.ERROR]
    participant, other = tl[tl[S.TRACK_ID] == 0], tl[tl[S.TRACK_ID] == 1]
    x, y = _centre(participant)
    assert x > 0.7 * WORKING[0] and y > 0.7 * WORKING[1], (x, y, clip[S.PARTICIPANT_REASON])
    assert participant[S.IS_PARTICIPANT].all() and not participant[S.ON_SCREEN].any()
    assert other[S.ON_SCREEN].all() and not other[S.FUSION_MODE].eq("fusion").any()
    assert not other[S.SPEAKING].fillna(False).any()
    speech = participant[participant[S.SPEECH_PRESENT].astype(bool)]
    assert (speech[S.FUSION_MODE] == "fusion").mean() >= 0.8
    confident = participant[S.DOMINANT_EMOTION].dropna()
    assert clip[S.DOMINANT_EMOTION] == confident.value_counts().idxmax()
