"""The job's learnt-fusion path: a voice model and a fusion model (small checkpoints made
here) decide categories and valence/arousal per window, with the modality used recorded;
and the model identity of each way of combining face and voice.  The default (product rule)
is tested end to end in test_emotion_timeline_e2e, the face-only opt-out in
test_emotion_timeline_cli."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from models import fusion, voice_emotion
from operators import schema as S
from pipelines.emotion_timeline.config import load_config
from pipelines.emotion_timeline.job import resolve_models, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fused_run(media, ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fusion")
    voice_path, fusion_path = tmp / "voice.pt", tmp / "fusion.pt"
    voice_emotion.save(voice_emotion.build(seed=1), voice_path)
    fusion.save(fusion.build("attention-bilinear", {"face_dim": 128, "voice_dim": 128}, seed=1),
                fusion_path)
    inputs = tmp / "in"
    inputs.mkdir()
    for case in ("face_speech", "no_face", "face_silence"):
        shutil.copy(media[case], inputs)
    config = load_config(None, ["tracking.enabled=false", f"voice_model={voice_path}",
                                f"fusion_model={fusion_path}"])
    result = run(str(inputs), str(tmp / "out"), config)
    timelines = pd.read_parquet(tmp / "out" / "timelines")
    return result, timelines


def _windows(timelines: pd.DataFrame, case: str) -> pd.DataFrame:
    return timelines[timelines[S.URI].str.endswith(f"{case}.mp4")].sort_values(S.WINDOW_INDEX)


def test_modes_follow_the_modalities_present(fused_run):
    result, timelines = fused_run
    assert set(result.clips[S.STATUS]) == {"ok", "no_face"}
    # The sample's participant is a still photograph: the speech over it is off screen, so
    # the fusion model gets her face alone and the speech rows of its own (null track).
    clip = _windows(timelines, "face_speech")
    face, voice = clip[clip[S.TRACK_ID] == 0], clip[clip[S.TRACK_ID].isna()]
    speech = face[S.SPEECH_PRESENT].astype(bool)
    assert speech.any() and (~speech).any()
    assert (face[S.FUSION_MODE] == "face_only").all()
    assert sorted(voice[S.WINDOW_INDEX]) == sorted(face.loc[speech, S.WINDOW_INDEX])
    assert (voice[S.FUSION_MODE] == "voice_only").all()
    assert (_windows(timelines, "face_silence")[S.FUSION_MODE] == "face_only").all()

    voice_only = _windows(timelines, "no_face")
    spoken = voice_only[S.SPEECH_PRESENT].astype(bool)
    assert voice_only[S.TRACK_ID].isna().all()
    assert (voice_only.loc[spoken, S.FUSION_MODE] == "voice_only").all()
    # neither a face nor speech: nulls, not guesses
    silent = voice_only[~spoken]
    assert len(silent) and silent[S.FUSION_MODE].isna().all() and silent["p_happy"].isna().all()
    assert silent[S.VALENCE].isna().all()


def test_fused_rows_are_valid_predictions(fused_run):
    result, timelines = fused_run
    predicted = timelines[timelines[S.FUSION_MODE].notna()]
    probs = predicted[list(S.PROB_COLUMNS)].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert (predicted[S.VA_SOURCE] == "fusion_model").all()
    assert predicted[S.VALENCE].between(-1, 1).all() and predicted[S.AROUSAL].between(-1, 1).all()
    assert set(predicted[S.FUSION_MODE]) <= set(S.FUSION_MODES)
    face_model = result.clips[S.FACE_MODEL].dropna()
    assert face_model.str.contains("voice-emotion-cnn").all()


def test_model_identity_follows_the_fusion_rule_and_voice_model(tmp_path):
    """A nightly output is redone when the way face and voice combine changes."""
    other_voice = tmp_path / "voice.pt"
    voice_emotion.save(voice_emotion.build(seed=2), other_voice)
    fusion_path = tmp_path / "fusion.pt"
    fusion.save(fusion.build("decision", {"face_dim": 128, "voice_dim": 128}, seed=1),
                fusion_path)
    configs = {
        "product": [],
        "face_only": ["fusion=face_only"],
        "other voice": [f"voice_model={other_voice}"],
        "learnt": [f"fusion_model={fusion_path}"],
    }
    identities = {}
    for name, overrides in configs.items():
        models = resolve_models(load_config(None, overrides), tmp_path / name)
        identities[name] = models.identity
    assert len(set(identities.values())) == len(configs), identities
    assert resolve_models(load_config(None, []), tmp_path / "again").identity == (
        identities["product"])
    product = resolve_models(load_config(None, []), tmp_path / "p")
    assert product.fusion == "product" and product.voice_checkpoint == (
        voice_emotion.DEFAULT_WEIGHTS.read_bytes())
