"""The voice emotion model (models/voice_emotion): contracts, file formats, prosody, learning.

Plain PyTorch, no Ray.  Speech is synthesised on the fly with espeak-ng (a GPL-3.0 program;
the audio it synthesises is not covered by its licence), read with ``wave`` and resampled to
16 kHz.  espeak-ng is deterministic, so every run sees the same samples.

Thresholds were checked against the values they guard (espeak-ng 1.51, torch 2.11 CPU): on
1 s windows of the test sentence the voice activity ratio is >= 0.30, the median F0 ~ 80 Hz at
``-p 20`` and ~ 156 Hz at ``-p 90``, the voiced-onset rate ~ 2.1/s at ``-s 80`` and ~ 6/s at
``-s 260``, the speech loudness ~ -31 dBFS at ``-a 30`` and ~ -18 dBFS at ``-a 150``.  The
overfit run reaches 100 % eval-mode accuracy by step ~ 35 of 60 for build seeds 0-4 and its
valence/arousal MSE falls from ~ 0.36 to <= 0.03.
"""

from __future__ import annotations

import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

import models.voice_emotion as ve
from models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from models.voice_emotion.features import (
    LogMel,
    normalise_speaker,
    speaker_statistics,
    speech_window_mask,
)
from operators.audio.voice_features import VoiceFeaturesConfig, window_voice_features
from operators.schema import EMOTIONS, VOICE_PITCH_HZ, VOICE_SPEECH_RATIO

SR = 16000
SENTENCE = "The checkout button was hard to find, I expected it on the top right of the page."
PROSODY = {name: i for i, name in enumerate(ve.PROSODY_FEATURES)}


def espeak(path: Path, text: str, *args: str) -> np.ndarray:
    """``text`` spoken by espeak-ng with extra ``args`` (voice, -s, -p, -a), 16 kHz float32."""
    subprocess.run(["espeak-ng", *args, "-w", str(path), text], check=True, capture_output=True)
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    samples = torch.from_numpy(pcm.astype(np.float32) / 32768)
    return torchaudio.functional.resample(samples, rate, SR).numpy()


def windows(audio: np.ndarray, seconds: float = 1.0) -> np.ndarray:
    """The complete consecutive windows of ``audio``, ``(n, seconds * SR)``."""
    size = round(seconds * SR)
    n = audio.size // size
    return audio[: n * size].reshape(n, size)


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """Run this module's torch on one thread, as a test worker on a shared machine should.

    These models are small, so a second thread gains little (60 overfit steps: 2.4 s on two
    idle cores, 4 s on one), but OpenMP threads spin-wait for each other when another process
    holds a core: the same 60 steps took 95 s with two threads on a busy 2-core machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The test sentence, espeak-ng en-us defaults (~ 4.7 s)."""
    return espeak(tmp_path_factory.mktemp("voice") / "speech.wav", SENTENCE, "-v", "en-us")


@pytest.fixture(scope="module")
def model() -> ve.VoiceEmotionModel:
    return ve.build(seed=0)


def noise(batch: int, samples: int = SR, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((batch, samples))).astype(np.float32)


def assert_same_prediction(a: ve.VoicePrediction, b: ve.VoicePrediction, atol: float) -> None:
    for name in ("probs", "valence", "arousal", "features", "attention"):
        np.testing.assert_allclose(
            getattr(a, name), getattr(b, name), atol=atol, rtol=0, err_msg=name
        )


# --- contract of predict -------------------------------------------------------------------


def test_predict_shapes_and_dtypes(model: ve.VoiceEmotionModel, speech: np.ndarray) -> None:
    batch = np.concatenate([windows(speech)[:2], noise(1)])
    pred = ve.predict(model, batch)
    regions = np.prod(model.config.region_grid(SR))
    embed = model.hparams["embed_dim"]
    expected = {
        "probs": (3, len(EMOTIONS)),
        "valence": (3,),
        "arousal": (3,),
        "features": (3, embed),
        "attention": (3, regions),
    }
    for name, shape in expected.items():
        value = getattr(pred, name)
        assert value.shape == shape, name
        assert value.dtype == np.float32, name
        assert np.isfinite(value).all(), name
    np.testing.assert_allclose(pred.probs.sum(axis=1), 1.0, atol=1e-5)
    assert model.classes == EMOTIONS
    assert not model.module.training
    assert regions == 96  # 8 mel regions × 12 time regions for the default 1 s window


def test_empty_batch(model: ve.VoiceEmotionModel) -> None:
    pred = ve.predict(model, np.zeros((0, SR), dtype=np.float32))
    assert pred.probs.shape == (0, len(EMOTIONS))
    assert pred.valence.shape == pred.arousal.shape == (0,)
    assert pred.features.shape == (0, model.hparams["embed_dim"])
    assert pred.attention.shape == (0, 96)
    assert ve.log_mel(np.zeros((0, SR), dtype=np.float32)).shape == (0, 1, 64, 101)
    assert ve.prosody_vector(np.zeros((0, SR), dtype=np.float32)).shape == (0, 7)


def test_bad_input_raises(model: ve.VoiceEmotionModel) -> None:
    with pytest.raises(ValueError, match="shape"):
        ve.predict(model, np.zeros(SR, dtype=np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        ve.predict(model, np.full((1, SR), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="shorter"):
        ve.predict(model, np.zeros((1, model.config.min_samples - 1), dtype=np.float32))
    with pytest.raises(ValueError, match="unknown"):
        ve.build({"n_mel": 40})
    # Shortest accepted window: one time region.
    pred = ve.predict(model, noise(2, model.config.min_samples))
    assert pred.attention.shape == (2, 8)


def test_attention_is_a_distribution_and_va_in_range(speech: np.ndarray) -> None:
    model = ve.build(seed=3)
    # Blow up the valence/arousal head so that its pre-activations are far outside [-1, 1].
    with torch.no_grad():
        model.module.valence_arousal.weight.mul_(1e3)
        model.module.valence_arousal.bias.fill_(50.0)
    batch = np.concatenate([windows(speech), noise(3), np.zeros((1, SR), dtype=np.float32)])
    pred = ve.predict(model, batch)
    assert (pred.attention >= 0).all()
    np.testing.assert_allclose(pred.attention.sum(axis=1), 1.0, atol=1e-5)
    for values in (pred.valence, pred.arousal):
        assert ((values >= -1) & (values <= 1)).all()


def test_determinism_and_batch_independence(speech: np.ndarray) -> None:
    a, b, other = ve.build(seed=7), ve.build(seed=7), ve.build(seed=8)
    state_a, state_b = a.module.state_dict(), b.module.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not torch.equal(
        state_a["classifier.weight"], other.module.state_dict()["classifier.weight"]
    )
    batch = np.concatenate([windows(speech), noise(2)])
    first = ve.predict(a, batch)
    assert_same_prediction(first, ve.predict(a, batch), atol=0)
    assert_same_prediction(first, ve.predict(b, batch), atol=0)
    # A window's outputs do not depend on its batch (per-window dB cut-off and normalisation,
    # batch norm in eval mode).
    alone = ve.predict(a, batch[1:2])
    for name in ("probs", "features", "attention"):
        np.testing.assert_allclose(getattr(alone, name)[0], getattr(first, name)[1], atol=1e-5)


def test_log_mel_is_gain_invariant_and_normalised(speech: np.ndarray) -> None:
    batch = windows(speech)[:2]
    spec = ve.log_mel(batch)
    assert spec.shape == (2, 1, 64, 101)
    assert spec.dtype == torch.float32
    np.testing.assert_allclose(spec.mean(dim=(1, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(spec.std(dim=(1, 2, 3)), 1.0, atol=1e-4)
    # 20 dB quieter (another webcam's gain) gives the same input to the network.
    torch.testing.assert_close(ve.log_mel(0.1 * batch), spec, atol=1e-3, rtol=0)
    # The network's front end is the same transform.
    torch.testing.assert_close(LogMel()(torch.from_numpy(batch)), spec)
    assert torch.equal(ve.log_mel(np.zeros((1, SR), dtype=np.float32)), torch.zeros(1, 1, 64, 101))


def test_network_takes_its_front_end_output_too(speech: np.ndarray) -> None:
    """Training masks the log-mel (SpecAugment) and hands it to the module itself: a 4-D
    input is the front end's output, and gives what the waveform gives."""
    net = ve.build(seed=3).module.eval()
    batch = torch.from_numpy(windows(speech)[:2])
    with torch.inference_mode():
        from_wave = net(batch)
        from_spec = net(net.log_mel(batch))
    for a, b in zip(from_wave, from_spec, strict=True):
        torch.testing.assert_close(a, b)


# --- files -----------------------------------------------------------------------------------


def test_torchscript_export_parity(tmp_path: Path, speech: np.ndarray) -> None:
    model = ve.build(seed=1)
    path = ve.export_torchscript(model, tmp_path / "voice.ts")
    loaded = ve.load(path)
    assert isinstance(loaded.module, torch.jit.ScriptModule)
    assert (loaded.name, loaded.hparams, loaded.classes) == (
        model.name,
        model.hparams,
        model.classes,
    )
    batch = np.concatenate([windows(speech), noise(2)])
    assert_same_prediction(ve.predict(model, batch), ve.predict(loaded, batch), atol=1e-5)
    # A model loaded from TorchScript can be saved as a checkpoint again.
    ve.save(loaded, tmp_path / "again.pt")
    assert_same_prediction(
        ve.predict(model, batch), ve.predict(ve.load(tmp_path / "again.pt"), batch), atol=1e-5
    )


def test_checkpoint_round_trip(tmp_path: Path, speech: np.ndarray) -> None:
    hparams = {"channels": [8, 16, 32], "embed_dim": 32, "attention_dim": 16, "n_mels": 40}
    model = ve.build(hparams, seed=2)
    # Non-trivial batch norm statistics, so the round trip covers buffers as well as weights.
    model.module.train()
    with torch.no_grad():
        model.module(torch.from_numpy(windows(speech)))
    model.module.eval()
    metadata = {"data": "espeak-ng test speech", "licence": "none", "metrics": {"acc": 0.5}}
    ve.save(model, tmp_path / "voice.pt", metadata)

    raw = load_checkpoint(tmp_path / "voice.pt")
    assert raw.arch == ve.ARCH == "voice-emotion-cnn"
    assert raw.metadata == {"name": model.name, **metadata}
    loaded = ve.load(tmp_path / "voice.pt")
    assert loaded.hparams == model.hparams
    assert loaded.config.channels == (8, 16, 32)
    assert loaded.name == model.name
    batch = np.concatenate([windows(speech), noise(1)])
    pred = ve.predict(loaded, batch)
    assert pred.features.shape == (batch.shape[0], 32)
    assert pred.attention.shape == (batch.shape[0], 10 * 25)  # 40 // 4 mel × 101 // 4 time
    assert_same_prediction(ve.predict(model, batch), pred, atol=0)


def test_load_errors(tmp_path: Path) -> None:
    assert ve.load(None).name == ve.DEFAULT_MODEL  # the shipped weights (test_shipped_weights)
    with pytest.raises(FileNotFoundError):
        ve.load(tmp_path / "missing.pt")

    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    face = tmp_path / "face.pt"
    save_checkpoint(face, Checkpoint(arch="face-emotion-cnn", state_dict={}, classes=EMOTIONS))
    wrong_classes = tmp_path / "ravdess8.pt"
    model = ve.build()
    save_checkpoint(
        wrong_classes,
        Checkpoint(
            arch=ve.ARCH,
            state_dict=model.module.state_dict(),
            hparams=model.hparams,
            classes=(*EMOTIONS, "calm"),
        ),
    )
    mismatched = tmp_path / "mismatched.pt"
    save_checkpoint(
        mismatched,
        Checkpoint(
            arch=ve.ARCH,
            state_dict=model.module.state_dict(),
            hparams={"embed_dim": 64},
            classes=EMOTIONS,
        ),
    )
    script = tmp_path / "linear.ts"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(script))
    for path, message in [
        (text, "not a torch checkpoint"),
        (foreign, "not an emoray-checkpoint"),
        (face, "face-emotion-cnn"),
        (wrong_classes, "calm"),
        (mismatched, "do not fit"),
        (script, "TorchScript file without"),
    ]:
        with pytest.raises(ValueError, match=message):
            ve.load(path)


def test_ravdess_mapping_merges_calm_into_neutral() -> None:
    assert ve.RAVDESS_EMOTIONS["02"] == ve.RAVDESS_EMOTIONS["01"] == "neutral"
    assert sorted(ve.RAVDESS_EMOTIONS) == [f"{code:02d}" for code in range(1, 9)]
    assert set(ve.RAVDESS_EMOTIONS.values()) == set(EMOTIONS)


# --- prosody ---------------------------------------------------------------------------------


def test_prosody_speech_versus_silence(speech: np.ndarray) -> None:
    speech_windows = windows(speech)
    silence = np.zeros((2, SR), dtype=np.float32)
    faint_noise = (1e-4 * np.random.default_rng(1).standard_normal((1, SR))).astype(np.float32)
    prosody = ve.prosody_vector(np.concatenate([speech_windows, silence, faint_noise]))
    assert prosody.shape == (speech_windows.shape[0] + 3, len(ve.PROSODY_FEATURES))
    assert prosody.dtype == np.float32
    assert np.isfinite(prosody).all()
    spoken, quiet = prosody[: speech_windows.shape[0]], prosody[speech_windows.shape[0] :]
    assert (spoken[:, PROSODY["voice_activity_ratio"]] >= 0.25).all()
    assert (spoken[:, PROSODY["speech_present"]] == 1).all()
    assert (
        (spoken[:, PROSODY["pitch_median_hz"]] > 60) & (spoken[:, PROSODY["pitch_median_hz"]] < 400)
    ).all()
    assert (spoken[:, PROSODY["loudness_mean_dbfs"]] < 0).all()
    assert (spoken[:, PROSODY["voiced_onsets_per_s"]] >= 1).all()
    # No speech: every entry 0, the mask included (undefined, not invented).
    assert np.array_equal(quiet, np.zeros_like(quiet))


def test_prosody_matches_timeline_voice_features(speech: np.ndarray) -> None:
    batch = windows(speech)
    prosody = ve.prosody_vector(batch, SR)
    timeline = window_voice_features(
        speech, SR, 0.0, np.arange(batch.shape[0], dtype=float), VoiceFeaturesConfig()
    )
    np.testing.assert_allclose(
        prosody[:, PROSODY["voice_activity_ratio"]], timeline[VOICE_SPEECH_RATIO], atol=1e-6
    )
    np.testing.assert_allclose(
        prosody[:, PROSODY["pitch_median_hz"]], timeline[VOICE_PITCH_HZ], atol=1e-3
    )


def test_prosody_follows_espeak_pitch_rate_and_amplitude(tmp_path: Path) -> None:
    def mean_of(feature: str, *args: str) -> float:
        audio = espeak(tmp_path / "prosody.wav", SENTENCE, "-v", "en-us", *args)
        return float(ve.prosody_vector(windows(audio))[:, PROSODY[feature]].mean())

    low, high = mean_of("pitch_median_hz", "-p", "20"), mean_of("pitch_median_hz", "-p", "90")
    assert high > 1.5 * low
    slow, fast = (
        mean_of("voiced_onsets_per_s", "-s", "80"),
        mean_of("voiced_onsets_per_s", "-s", "260"),
    )
    assert fast > 2 * slow
    quiet, loud = (
        mean_of("loudness_mean_dbfs", "-a", "30"),
        mean_of("loudness_mean_dbfs", "-a", "150"),
    )
    assert loud > quiet + 8


# --- learning --------------------------------------------------------------------------------

STYLES: dict[str, tuple[str, ...]] = {
    "angry": ("-v", "en-us+m3", "-s", "210", "-p", "45", "-a", "190"),
    "happy": ("-v", "en-us+f3", "-s", "185", "-p", "85", "-a", "150"),
    "sad": ("-v", "en-us+m3", "-s", "110", "-p", "15", "-a", "60"),
    "neutral": ("-v", "en-us+f3", "-s", "150", "-p", "40", "-a", "100"),
}
"""Four synthetic "emotions" that differ in voice, rate, pitch and amplitude."""
VALENCE_AROUSAL = {
    "angry": (-0.7, 0.8),
    "happy": (0.8, 0.6),
    "sad": (-0.6, -0.6),
    "neutral": (0.0, 0.0),
}
"""Made-up targets: only the regression losses' decrease is checked."""
UTTERANCES = (
    "Where is the save button on this page?",
    "I clicked next but nothing happened here.",
    "Okay, the search results look about right.",
    "This form keeps asking for my address again.",
)


def test_tiny_overfit_on_espeak_speech(tmp_path: Path) -> None:
    """16 one-second clips in 4 styles are learnt to 100 % (eval mode) in 60 Adam steps."""
    clips, labels, targets = [], [], []
    for style, args in STYLES.items():
        for i, text in enumerate(UTTERANCES):
            audio = espeak(tmp_path / f"{style}_{i}.wav", text, *args)
            clip = np.zeros(SR, dtype=np.float32)
            clip[: min(SR, audio.size)] = audio[:SR]
            clips.append(clip)
            labels.append(EMOTIONS.index(style))
            targets.append(VALENCE_AROUSAL[style])
    x = torch.from_numpy(np.stack(clips))
    y = torch.tensor(labels)
    va = torch.tensor(targets)

    model = ve.build(seed=0)
    net = model.module

    def eval_metrics() -> tuple[float, float]:
        pred = ve.predict(model, x.numpy())
        accuracy = float((pred.probs.argmax(axis=1) == y.numpy()).mean())
        mse = float(np.mean((np.stack([pred.valence, pred.arousal], axis=1) - va.numpy()) ** 2))
        return accuracy, mse

    _, mse_before = eval_metrics()
    torch.manual_seed(0)  # dropout
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for step in range(60):
        out = net(x)
        loss = torch.nn.functional.cross_entropy(out.logits, y) + torch.nn.functional.mse_loss(
            torch.stack([out.valence, out.arousal], 1), va
        )
        optimiser.zero_grad()
        loss.backward()
        if step == 0:
            # Gradients reach every parameter: front end to heads through the attention pooling.
            for name, param in net.named_parameters():
                assert param.grad is not None and param.grad.abs().sum() > 0, name
                assert torch.isfinite(param.grad).all(), name
        optimiser.step()
    net.eval()

    accuracy, mse_after = eval_metrics()
    assert accuracy == 1.0
    assert mse_after < 0.3 * mse_before
    assert mse_after < 0.1


# --- speaker normalisation -------------------------------------------------------------------

SMALL_NORM = {"channels": [8, 16, 32], "embed_dim": 32, "attention_dim": 16, "n_mels": 40,
              "hop_length": 320, "speaker_norm": True}


def test_speaker_statistics_are_the_speech_windows_band_moments(speech: np.ndarray) -> None:
    talk = windows(speech)
    quiet = 10 ** (-70 / 20) * noise(2)  # -70 dBFS room noise: not a voice
    batch = torch.from_numpy(np.concatenate([talk, quiet]))
    mask = speech_window_mask(batch)
    assert mask.tolist() == [True] * len(talk) + [False, False]
    spec = ve.log_mel(batch, n_mels=40)
    stats = speaker_statistics(spec, mask)
    assert stats.shape == (2, 40)
    # Over the speech windows' frames every band has mean 0 and std 1 after normalisation;
    # the quiet windows are left out of the statistics.
    normalised = normalise_speaker(spec, stats)[: len(talk), 0]
    frames = normalised.transpose(0, 1).reshape(40, -1)
    torch.testing.assert_close(frames.mean(1), torch.zeros(40), atol=1e-4, rtol=0)
    torch.testing.assert_close(frames.std(1, unbiased=False), torch.ones(40), atol=1e-4,
                               rtol=0)
    # A recording 20 dB quieter is the same speaker: the per-window standardisation already
    # took the gain off, so the statistics do not move.
    quieter = speaker_statistics(ve.log_mel(batch * 0.1, n_mels=40), mask)
    torch.testing.assert_close(quieter, stats, atol=1e-3, rtol=0)
    # Only silence: all windows count (never an empty set); nothing at all: the identity.
    assert speech_window_mask(torch.zeros(3, SR)).all()
    empty = speaker_statistics(spec[:0], mask[:0])
    assert empty[0].eq(0).all() and empty[1].eq(1).all()


def test_speaker_norm_model_normalises_by_the_given_speaker(tmp_path: Path,
                                                            speech: np.ndarray) -> None:
    model = ve.build(SMALL_NORM, seed=3)
    assert model.config.speaker_norm
    talk = windows(speech)
    other = windows(espeak(tmp_path / "other.wav", SENTENCE, "-v", "en-us", "-p", "90"))
    stats = ve.speaker_statistics(model, talk)
    assert stats.shape == (2, 40) and stats.dtype == np.float32
    # Without statistics the batch is one speaker: the same as giving the batch's own.
    assert_same_prediction(ve.predict(model, talk), ve.predict(model, talk, stats), atol=1e-5)
    # Given them, rows are independent of each other; per-row statistics work too.
    one = ve.predict(model, talk[:1], stats)
    assert_same_prediction(one, _rows(ve.predict(model, talk, stats), 1), atol=1e-5)
    per_row = np.stack([stats] * len(talk))
    assert_same_prediction(ve.predict(model, talk, per_row), ve.predict(model, talk, stats),
                           atol=1e-6)
    # Another voice has other statistics, and the network sees the log-mel normalised by
    # the given ones (not the identity: a voice's bands are not mean 0, std 1).
    other_stats = ve.speaker_statistics(model, other)
    assert np.abs(other_stats - stats).max() > 0.05
    assert np.abs(stats[0]).max() > 0.1 and np.abs(stats[1] - 1).max() > 0.1
    net, given = model.module, torch.from_numpy(stats)
    with torch.no_grad():
        expected = net.forward_spectrogram(normalise_speaker(net.log_mel(torch.from_numpy(talk)),
                                                             given))
    np.testing.assert_allclose(ve.predict(model, talk, stats).features,
                               expected.features.numpy(), atol=1e-5)
    # The checkpoint records it, TorchScript keeps it.
    ve.save(model, tmp_path / "norm.pt")
    loaded = ve.load(tmp_path / "norm.pt")
    assert loaded.hparams["speaker_norm"] is True
    assert_same_prediction(ve.predict(loaded, talk, stats), ve.predict(model, talk, stats),
                           atol=0)
    scripted = ve.load(ve.export_torchscript(model, tmp_path / "norm.ts"))
    np.testing.assert_allclose(ve.speaker_statistics(scripted, talk), stats, atol=1e-5)
    assert_same_prediction(ve.predict(scripted, talk, stats), ve.predict(model, talk, stats),
                           atol=1e-5)


def _rows(pred: ve.VoicePrediction, n: int) -> ve.VoicePrediction:
    return ve.VoicePrediction(**{k: getattr(pred, k)[:n] for k in
                                 ("probs", "valence", "arousal", "features", "attention")})


def test_checkpoints_without_speaker_norm_keep_plain_inputs(tmp_path: Path,
                                                            speech: np.ndarray) -> None:
    """A checkpoint written before speaker normalisation existed has no ``speaker_norm``
    hparam: it loads as False and ignores speaker statistics."""
    model = ve.build({k: v for k, v in SMALL_NORM.items() if k != "speaker_norm"}, seed=4)
    raw_hparams = {k: v for k, v in model.hparams.items() if k != "speaker_norm"}
    save_checkpoint(tmp_path / "old.pt", Checkpoint(
        arch=ve.ARCH, state_dict=model.module.state_dict(), hparams=raw_hparams,
        classes=EMOTIONS, metadata={"name": "old"}))
    old = ve.load(tmp_path / "old.pt")
    assert old.config.speaker_norm is False
    talk = windows(speech)
    unrelated = np.stack([np.zeros(40), np.full(40, 3.0)]).astype(np.float32)
    assert_same_prediction(ve.predict(old, talk), ve.predict(old, talk, unrelated), atol=0)
    assert_same_prediction(ve.predict(old, talk[:1]), _rows(ve.predict(old, talk), 1),
                           atol=1e-5)
