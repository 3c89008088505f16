"""A paired face–voice corpus for training and measuring the fusion model.

**This is not audio-visual data.** No labelled audio-visual recordings are available here
(``shared/data`` holds FER2013 still faces and RAVDESS audio-only speech), so each sample joins
a short sequence of FER2013 face images and one analysis window of a RAVDESS utterance that
carry the **same emotion label**. The faces and the voice belong to different people, were
never recorded together and are not synchronous. Such pairs teach a fusion model that the two
modalities always agree, which real recordings contradict (a polite smile over a frustrated
voice). Numbers measured on this corpus show how well fusion combines two independent opinions
of the same label, not how it does on a usability-test recording.

Splits never mix: training pairs draw FER2013 ``Training`` faces and RAVDESS actors 1–16,
validation pairs ``PublicTest`` faces and actors 17–20 (``corpora.ravdess.ravdess_split``). The face
and voice models whose features fill the pairs were trained on those same training splits, so
their training-pair outputs are more accurate than on new people (the shipped voice model:
0.83 per window on actors 1–16, 0.54 on 17–20): a fusion model trained on the pairs learns to
trust them more than it should. Features from models that never saw the training pairs
(cross-fitting) would remove that bias.

A sample mirrors one window of the timeline job: ``frames`` face crops (the job samples 5 fps,
so 5 per 1 s window) and one 1 s voice window. The frames show one FER2013 face by default (one
person, as in a recording's window; :func:`pair_indices` explains why not five people). Rows
carry the fusion task's columns (``pipelines.train.corpora.parquet``): ``face_features`` (frames ×
Df: the face model's features of each image), ``face_mask`` (frames, all true),
``voice_features`` (1 × Dv: the voice model's embedding of the window), ``voice_mask`` (true),
``speaking`` (the window's voice activity ratio, measured as the timeline measures it),
``label``, ``valence``/``arousal`` (the label's circumplex point,
``models.emotions.CIRCUMPLEX``: derived from the category, not rated),
``split``, for provenance ``face_rows`` (FER2013 row numbers), ``uri``, ``start_s``, ``end_s``
of the voice window, and the unimodal models' own probabilities ``face_probs`` (frames × 7) and
``voice_probs`` (7), so face-only, voice-only and decision-level fusion are measured on exactly
the samples the fusion model is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from models import face_emotion, voice_emotion
from models.emotions import CIRCUMPLEX, MIN_PROB
from models.voice_emotion import PROSODY_FEATURES, prosody_vector
from operators.schema import AROUSAL, EMOTIONS, SAMPLE_RATE, URI, VALENCE
from pipelines.train.corpora.fer2013 import PIXELS, fer_pixels_to_image, read_fer2013
from pipelines.train.corpora.parquet import (
    FACE_FEATURES,
    FACE_MASK,
    SPEAKING,
    VOICE_FEATURES,
    VOICE_MASK,
    read_prepared,
)
from pipelines.train.corpora.ravdess import ravdess_split, read_ravdess
from pipelines.train.media import load_audio
from pipelines.train.metrics import (
    ACCURACY,
    MACRO,
    classification_report,
    confusion_matrix,
    plot_confusion_matrix,
)
from pipelines.train.table import END_S, LABEL, SPLIT, START_S, TRAIN, VAL
from pipelines.train.utterances import loudest_windows

logger = logging.getLogger(__name__)

FACE_ROWS = "face_rows"
FACE_PROBS, VOICE_PROBS = "face_probs", "voice_probs"
# The untrained rules measured by rule_reports, in report order.
FACE_ONLY, VOICE_ONLY, PRODUCT, MEAN = "face only", "voice only", "product", "mean"
RULES: tuple[str, ...] = (FACE_ONLY, VOICE_ONLY, PRODUCT, MEAN)
_ACTIVITY = PROSODY_FEATURES.index("voice_activity_ratio")


def pair_indices(face_labels: np.ndarray, voice_labels: np.ndarray, frames: int = 5,
                 draws: int = 1, seed: int = 0, people: int = 1
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Join every voice item with ``draws`` face sequences of its own class.

    Returns ``(voice_index (N,), face_index (N, frames))`` with N = ``draws`` × voice items
    (each voice item's draws are consecutive).  A sequence shows ``people`` distinct faces of
    the voice item's label (drawn uniformly, ``seed``), repeated in turn to fill ``frames``.
    The default, one face per sequence, is what a 1 s window of a recording holds: one person
    whose frames are nearly the same picture.  Several distinct faces are independent
    opinions of the same label, and their average is far more accurate than one person's
    frames would be (on the shipped models 0.88 vs 0.61 with 5), which flatters the face
    side of any fusion measured on them.  Pass the labels of ONE split for both modalities.
    Raises ValueError when a voice class has fewer than ``people`` faces.
    """
    face_labels = np.asarray(face_labels)
    voice_labels = np.asarray(voice_labels)
    if frames < 1 or draws < 1 or not 1 <= people <= frames:
        raise ValueError("need frames >= 1, draws >= 1 and 1 <= people <= frames")
    by_class = {c: np.flatnonzero(face_labels == c) for c in np.unique(voice_labels)}
    short = {EMOTIONS[int(c)]: len(rows) for c, rows in by_class.items() if len(rows) < people}
    if short:
        raise ValueError(f"too few faces for {people} distinct faces per sequence of classes "
                         f"{short}")
    rng = np.random.default_rng(seed)
    voice_index = np.repeat(np.arange(len(voice_labels)), draws)
    cycle = np.arange(frames) % people
    face_index = np.stack([rng.choice(by_class[voice_labels[v]], people, replace=False)[cycle]
                           for v in voice_index]) if len(voice_index) else np.zeros(
        (0, frames), np.int64)
    return voice_index, face_index


def face_features(model: face_emotion.FaceEmotionModel, images: np.ndarray,
                  batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The face model's (probabilities (N, 7), features (N, Df)) for uint8 grey (N, H, W)
    images, through :func:`models.face_emotion.predict` (grey copied to RGB)."""
    probs, feats = [], []
    for i in range(0, len(images), batch_size):
        crops = np.repeat(images[i:i + batch_size, :, :, None], 3, axis=-1)
        p, f = face_emotion.predict(model, crops)
        probs.append(p)
        feats.append(f)
    return np.concatenate(probs), np.concatenate(feats)


def voice_windows(audio: np.ndarray, window_s: float = 1.0, hop_s: float = 0.5,
                  limit: int = 3) -> tuple[list[int], np.ndarray]:
    """The ``limit`` loudest ``window_s`` windows of a 16 kHz utterance every ``hop_s`` (the
    voice training job's rule, so leading/trailing silence carries no label): their start
    samples and the windows, zero-padded to full length, (n, window samples) float32."""
    size = round(window_s * SAMPLE_RATE)
    starts = loudest_windows(audio, window_s, hop_s, limit)
    out = np.zeros((len(starts), size), np.float32)
    for i, s in enumerate(starts):
        piece = audio[s:s + size]
        out[i, :len(piece)] = piece
    return starts, out


def paired_frame(face_feats: np.ndarray, face_rows: np.ndarray, face_labels: np.ndarray,
                 voice_feats: np.ndarray, speaking: np.ndarray, voice_labels: np.ndarray,
                 voice_meta: pd.DataFrame, split: str, frames: int = 5, draws: int = 1,
                 seed: int = 0, face_probs: np.ndarray | None = None,
                 voice_probs: np.ndarray | None = None, people: int = 1) -> pd.DataFrame:
    """Rows of one split (module docstring): every voice window (features (W, Dv),
    ``speaking`` (W,), labels (W,), ``voice_meta`` with ``uri``/``start_s``/``end_s``) joined
    with ``draws`` sequences of ``frames`` faces of its class showing ``people`` distinct
    faces (:func:`pair_indices`; features (F, Df) of the faces
    whose FER2013 row numbers are ``face_rows`` and labels ``face_labels``).  With the
    unimodal models' probabilities (``face_probs`` (F, 7), ``voice_probs`` (W, 7)) the rows
    also carry :data:`FACE_PROBS` (frames × 7) and :data:`VOICE_PROBS` (7): the face-only and
    voice-only baselines on exactly these samples."""
    v_idx, f_idx = pair_indices(face_labels, voice_labels, frames, draws, seed, people)
    labels = voice_labels[v_idx].astype(np.int64)
    circumplex = np.asarray([CIRCUMPLEX[e] for e in EMOTIONS], np.float64)
    extra = {}
    if face_probs is not None:
        extra[FACE_PROBS] = [list(face_probs[row]) for row in f_idx]
    if voice_probs is not None:
        extra[VOICE_PROBS] = list(voice_probs[v_idx])
    return pd.DataFrame({
        FACE_FEATURES: [list(face_feats[row]) for row in f_idx],
        FACE_MASK: [np.ones(frames, bool)] * len(v_idx),
        VOICE_FEATURES: [[voice_feats[v]] for v in v_idx],
        VOICE_MASK: np.ones(len(v_idx), bool),
        SPEAKING: speaking[v_idx].astype(np.float32),
        LABEL: labels,
        VALENCE: circumplex[labels, 0],
        AROUSAL: circumplex[labels, 1],
        SPLIT: split,
        FACE_ROWS: [face_rows[row] for row in f_idx],
        URI: voice_meta[URI].to_numpy()[v_idx],
        START_S: voice_meta[START_S].to_numpy()[v_idx],
        END_S: voice_meta[END_S].to_numpy()[v_idx],
        **extra,
    })


def voice_table(files: pd.DataFrame, model: voice_emotion.VoiceEmotionModel,
                windows_per_file: int = 3) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Decode RAVDESS ``files`` (adapter rows), cut each into its loudest 1 s windows and run
    the voice model: (window table with uri/start_s/end_s/label, voice probabilities (W, 7),
    embeddings (W, Dv)).  The table's ``speaking`` column is each window's voice activity
    ratio (``prosody_vector``)."""
    rows, probs, feats = [], [], []
    for uri, label in zip(files[URI], files[LABEL], strict=True):
        audio = load_audio(uri)
        starts, windows = voice_windows(audio, limit=windows_per_file)
        pred = voice_emotion.predict(model, windows)
        activity = prosody_vector(windows)[:, _ACTIVITY]
        probs.append(pred.probs)
        feats.append(pred.features)
        rows += [{URI: uri, START_S: s / SAMPLE_RATE, END_S: s / SAMPLE_RATE + 1.0,
                  LABEL: int(label), SPEAKING: float(a)}
                 for s, a in zip(starts, activity, strict=True)]
    return pd.DataFrame(rows), np.concatenate(probs), np.concatenate(feats)


def write_paired_corpus(fer2013_uri: str, ravdess_root: str, out: str | Path,
                        face_model: face_emotion.FaceEmotionModel,
                        voice_model: voice_emotion.VoiceEmotionModel, frames: int = 5,
                        draws: Sequence[int] = (3, 1), windows_per_file: int = 3,
                        max_faces_per_class: int | None = 1000, people: int = 1,
                        seed: int = 0) -> dict[str, Path]:
    """Build the train and val pairs and write ``out/train.parquet`` and ``out/val.parquet``.

    ``draws`` = face sequences per voice window for (train, val): more than one multiplies
    the training pairs, one keeps validation a plain count of voice windows; ``people``
    distinct faces per sequence (:func:`pair_indices`: 1, as in a recording).  Faces are drawn
    from at most ``max_faces_per_class`` images per class and split (a seeded sample; None:
    all), which bounds the face model's work: a few thousand voice windows need no more.
    Returns the paths written.  Decoding errors raise (the corpora are fixed and known to
    decode).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fer = read_fer2013(fer2013_uri)
    ravdess = ravdess_split(read_ravdess(ravdess_root))
    written = {}
    for i, (split, n_draws) in enumerate(zip((TRAIN, VAL), draws, strict=True)):
        faces = fer[fer[SPLIT] == split]
        if max_faces_per_class is not None:
            labels = faces[LABEL].to_numpy()
            rng = np.random.default_rng(seed)
            keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))
                                   [:max_faces_per_class] for c in np.unique(labels)])
            faces = faces.iloc[np.sort(keep)]
        images = np.stack([fer_pixels_to_image(p) for p in faces[PIXELS]])
        f_probs, f_feats = face_features(face_model, images)
        voices, v_probs, v_feats = voice_table(ravdess[ravdess[SPLIT] == split], voice_model,
                                               windows_per_file)
        frame = paired_frame(f_feats, faces.index.to_numpy(), faces[LABEL].to_numpy(),
                             v_feats, voices[SPEAKING].to_numpy(), voices[LABEL].to_numpy(),
                             voices, split, frames, n_draws, seed + i, f_probs, v_probs,
                             people)
        path = out / f"{split}.parquet"
        frame.to_parquet(path, index=False)
        logger.info("paired %s: %d samples (%d voice windows × %d face sequences) -> %s",
                    split, len(frame), len(voices), n_draws, path)
        written[split] = path
    return written


def rule_probs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each untrained rule's class probabilities (N, 7) for paired rows carrying
    :data:`FACE_PROBS` (frames × 7) and :data:`VOICE_PROBS` (7).

    ``face only`` is the mean over the frames (as the timeline averages a window's frames),
    ``voice only`` the voice model's, ``product`` the renormalised product of the two (the
    timeline job's default rule, computed the same way: in log space with its probability
    floor, so two confident models that disagree cannot give 0/0), ``mean`` their average.
    Raises KeyError when a probability column is missing (a corpus written without them).
    """
    face = np.stack([np.stack(f) for f in frame[FACE_PROBS]]).astype(np.float64).mean(axis=1)
    voice = np.stack(frame[VOICE_PROBS].to_numpy()).astype(np.float64)
    log_p = np.log(np.maximum(face, MIN_PROB)) + np.log(np.maximum(voice, MIN_PROB))
    product = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    return {FACE_ONLY: face, VOICE_ONLY: voice,
            PRODUCT: product / product.sum(axis=1, keepdims=True), MEAN: (face + voice) / 2}


FACE_TEMPERS = (1.0, 0.8, 0.6, 0.4)
"""Exponents on the face's probabilities tried before the product (1 = the plain product):
the timeline's ``timeline.trust.speaking_face_temper`` is chosen among them."""


def tempered_products(frame: pd.DataFrame, tempers: Sequence[float] = FACE_TEMPERS
                      ) -> dict[float, np.ndarray]:
    """The product rule with the face's probabilities raised to each temper (a softer face
    while its owner speaks), renormalised as the timeline computes it."""
    probs = rule_probs(frame)
    face = np.log(np.maximum(probs[FACE_ONLY], MIN_PROB))
    voice = np.log(np.maximum(probs[VOICE_ONLY], MIN_PROB))
    out = {}
    for temper in tempers:
        log_p = temper * face + voice
        p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
        out[temper] = p / p.sum(axis=1, keepdims=True)
    return out


def rule_reports(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """:func:`pipelines.train.metrics.classification_report` of each rule of
    :func:`rule_probs` against the rows' ``label``, in :data:`RULES` order."""
    labels = frame[LABEL].to_numpy()
    return {rule: classification_report(labels, probs)
            for rule, probs in rule_probs(frame).items()}


def report(val_uri: str, confusion_png: str | None = None) -> str:
    """The untrained rules on a written split (``val.parquet``): a side-by-side table of
    accuracy and macro-F1, then each rule's per-class table, as text.  With
    ``confusion_png``, the product rule's confusion matrix is drawn there."""
    frame = read_prepared(val_uri)
    reports = rule_reports(frame)
    lines = [f"{val_uri}: {len(frame)} samples", f"{'rule':<12} accuracy  macro-F1"]
    lines += [f"{rule:<12} {table.loc[ACCURACY, 'f1']:.3f}     {table.loc[MACRO, 'f1']:.3f}"
              for rule, table in reports.items()]
    labels = frame[LABEL].to_numpy()
    lines += ["", "product with the face tempered (face_p ** temper, as while its track speaks)",
              f"{'temper':<12} accuracy  macro-F1"]
    for temper, probs in tempered_products(frame).items():
        table = classification_report(labels, probs)
        lines.append(f"{temper:<12} {table.loc[ACCURACY, 'f1']:.3f}     "
                     f"{table.loc[MACRO, 'f1']:.3f}")
    for rule, table in reports.items():
        lines += ["", rule, table.round(3).to_string()]
    if confusion_png:
        cm = confusion_matrix(frame[LABEL].to_numpy(), rule_probs(frame)[PRODUCT])
        plot_confusion_matrix(cm, EMOTIONS, confusion_png,
                              title="paired val: decision-level product")
        lines += ["", f"confusion matrix: {confusion_png}"]
    return "\n".join(lines)
