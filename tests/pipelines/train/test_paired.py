"""The paired face–voice corpus (``pipelines/train/paired.py``): pairing rules, the rows the
fusion job reads, and the voice side on real (espeak-ng) speech in RAVDESS's layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import fusion, voice_emotion
from models.emotions import CIRCUMPLEX
from operators.schema import EMOTIONS, URI
from pipelines.train import paired
from pipelines.train.corpora.parquet import read_prepared
from pipelines.train.corpora.ravdess import read_ravdess
from pipelines.train.media import load_audio
from pipelines.train.table import END_S, LABEL, SPLIT, START_S, VAL


def test_pairs_join_faces_of_the_voice_class_distinct_and_seeded():
    rng = np.random.default_rng(1)
    face_labels = rng.integers(0, 7, 400)
    voice_labels = rng.integers(0, 7, 50)
    v_idx, f_idx = paired.pair_indices(face_labels, voice_labels, frames=5, draws=3, seed=7,
                                       people=5)
    assert v_idx.tolist() == np.repeat(np.arange(50), 3).tolist()
    assert f_idx.shape == (150, 5)
    assert (face_labels[f_idx] == voice_labels[v_idx][:, None]).all()
    assert all(len(set(row)) == 5 for row in f_idx.tolist())
    again = paired.pair_indices(face_labels, voice_labels, 5, 3, seed=7, people=5)[1]
    other = paired.pair_indices(face_labels, voice_labels, 5, 3, seed=8, people=5)[1]
    assert (again == f_idx).all() and not (other == f_idx).all()
    # by default one person per sequence, as in a recording's window; 2 people take turns
    one = paired.pair_indices(face_labels, voice_labels, frames=5, draws=3, seed=7)[1]
    assert (one == one[:, :1]).all() and (face_labels[one] == voice_labels[v_idx][:, None]).all()
    two = paired.pair_indices(face_labels, voice_labels, frames=5, seed=7, people=2)[1]
    assert (two[:, 0] != two[:, 1]).all() and (two[:, ::2] == two[:, :1]).all()
    # the draws of one voice item differ (more training pairs, not copies)
    assert len({tuple(row) for row in f_idx[:3].tolist()}) == 3


def test_pairs_refuse_a_class_with_too_few_faces():
    with pytest.raises(ValueError, match="disgust"):
        paired.pair_indices(np.array([0, 0, 0, 1]), np.array([0, 1]), frames=2, people=2)


def test_paired_rows_round_trip_parquet_and_feed_the_fusion_model(tmp_path):
    rng = np.random.default_rng(0)
    face_feats = rng.normal(size=(60, 128)).astype(np.float32)
    face_labels = np.arange(60) % 7
    voice_feats = rng.normal(size=(14, 128)).astype(np.float32)
    voice_labels = np.arange(14) % 7
    meta = {URI: [f"a{i}.flac" for i in range(14)], START_S: np.zeros(14),
            END_S: np.ones(14)}
    frame = paired.paired_frame(face_feats, np.arange(100, 160), face_labels, voice_feats,
                                np.linspace(0, 1, 14), voice_labels, pd.DataFrame(meta),
                                VAL, frames=5, draws=2, seed=0, people=3,
                                face_probs=np.eye(7, dtype=np.float32)[face_labels],
                                voice_probs=np.eye(7, dtype=np.float32)[voice_labels])
    assert len(frame) == 28 and (frame[SPLIT] == VAL).all()
    path = tmp_path / "val.parquet"
    frame.to_parquet(path, index=False)
    back = read_prepared(str(path))
    for i in (0, 27):
        row = back.iloc[i]
        label = int(row[LABEL])
        assert label == voice_labels[i // 2]
        assert (face_labels[np.asarray(row[paired.FACE_ROWS]) - 100] == label).all()
        assert (row["valence"], row["arousal"]) == pytest.approx(CIRCUMPLEX[EMOTIONS[label]])
        assert np.allclose(np.stack(row["voice_features"]), voice_feats[i // 2][None])
        # the unimodal baselines travel with the sample: one-hot here, so argmax = label
        assert (np.stack(row[paired.FACE_PROBS]).argmax(axis=1) == label).all()
        assert np.argmax(row[paired.VOICE_PROBS]) == label
    model = fusion.build("attention-bilinear", seed=0)
    pred = fusion.predict(
        model, np.stack([np.stack(f) for f in back["face_features"]]),
        np.stack(back["face_mask"]), np.stack([np.stack(v) for v in back["voice_features"]]),
        back["voice_mask"].to_numpy().copy(), back["speaking"].to_numpy(np.float32).copy())
    assert pred.probs.shape == (28, 7) and set(pred.fusion_mode) == {"fusion"}


def test_voice_windows_skip_silence_and_voice_table_on_real_speech(ravdess_root):
    files = read_ravdess(str(ravdess_root))
    files = files[files["modality"] == "audio"].head(2)
    speech = load_audio(files[URI].iloc[0])
    padded = np.concatenate([np.zeros(32000, np.float32), speech, np.zeros(32000, np.float32)])
    starts, windows = paired.voice_windows(padded, limit=2)
    assert windows.shape == (2, 16000)
    assert all(32000 - 16000 < s < 32000 + len(speech) for s in starts)
    model = voice_emotion.build(seed=0)
    table, probs, feats = paired.voice_table(files, model, windows_per_file=2)
    assert len(table) == len(probs) == len(feats) <= 4
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and feats.shape[1] == 128
    assert table["speaking"].between(0.2, 1).all()  # espeak speech fills most of each window
    assert (table[END_S] - table[START_S]).eq(1.0).all()


def _rule_frame() -> pd.DataFrame:
    """Two samples where the rules disagree.  Sample 0: frames averaging to face
    (0.5, 0.4, 0.1), voice (0.1, 0.2, 0.7): the product (0.05, 0.08, 0.07) / 0.2 picks class 1,
    which neither model nor their mean (0.3, 0.3, 0.4) picks.  Sample 1: certain face (class 3)
    and certain voice (class 4) that disagree: the raw product is 0 everywhere."""
    face0 = np.zeros((2, 7))
    face0[0, :3], face0[1, :3] = (0.6, 0.3, 0.1), (0.4, 0.5, 0.1)
    voice0 = np.zeros(7)
    voice0[:3] = (0.1, 0.2, 0.7)
    # rows of frames as lists, as paired_frame writes them (Parquet needs 1-D list items)
    return pd.DataFrame({paired.FACE_PROBS: [list(face0), list(np.eye(7)[[3, 3]])],
                         paired.VOICE_PROBS: [voice0, np.eye(7)[4]], LABEL: [1, 4]})


def test_rules_average_frames_and_renormalise_the_product():
    probs = paired.rule_probs(_rule_frame())
    assert list(probs) == list(paired.RULES)
    assert probs[paired.FACE_ONLY][0, :3] == pytest.approx([0.5, 0.4, 0.1])
    assert probs[paired.PRODUCT][0, :3] == pytest.approx([0.25, 0.4, 0.35])
    assert probs[paired.MEAN][0, :3] == pytest.approx([0.3, 0.3, 0.4])
    assert [int(p[0].argmax()) for p in probs.values()] == [0, 2, 1, 2]
    # disagreeing certainties: finite, renormalised, split between the two classes
    assert np.isfinite(probs[paired.PRODUCT]).all()
    assert np.allclose(probs[paired.PRODUCT].sum(axis=1), 1)
    assert probs[paired.PRODUCT][1, [3, 4]] == pytest.approx([0.5, 0.5])
    reports = paired.rule_reports(_rule_frame())
    assert [reports[r].loc["accuracy", "f1"] for r in paired.RULES] == [0.0, 0.5, 0.5, 0.0]
    assert EMOTIONS[3:5] == ("happy", "sad")
    assert reports[paired.PRODUCT].loc["sad", "recall"] == 0  # sample 1: sad → happy
    assert reports[paired.PRODUCT].loc["disgust", "recall"] == 1  # sample 0 (label 1) → 1


def test_report_reads_a_written_split_and_draws_the_product_confusion(tmp_path):
    path = tmp_path / "val.parquet"
    _rule_frame().to_parquet(path, index=False)
    png = tmp_path / "confusion.png"
    text = paired.report(str(path), str(png))
    assert text.splitlines()[2:6] == ["face only    0.000     0.000",
                                      "voice only   0.500     0.333",
                                      "product      0.500     0.333",
                                      "mean         0.000     0.000"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tempering_the_face_moves_the_product_towards_the_voice(tmp_path):
    """Sample 0: face (0.5, 0.4, 0.1), voice (0.1, 0.2, 0.7).  Temper 1 is the plain
    product; temper 0 would be the voice alone; in between the voice's class 2 gains."""
    frame = _rule_frame()
    products = paired.tempered_products(frame, (1.0, 0.5, 0.0))
    assert products[1.0] == pytest.approx(paired.rule_probs(frame)[paired.PRODUCT])
    assert products[0.0][0, :3] == pytest.approx([0.1, 0.2, 0.7], abs=1e-4)
    assert products[1.0][0, 2] < products[0.5][0, 2] < products[0.0][0, 2]
    assert np.allclose([p.sum(axis=1) for p in products.values()], 1)
    frame.to_parquet(tmp_path / "val.parquet", index=False)
    text = paired.report(str(tmp_path / "val.parquet"))
    assert "product with the face tempered" in text
    assert [line.split()[0] for line in text.splitlines() if line[:3] in ("1.0", "0.8", "0.6",
                                                                          "0.4")] == [
        "1.0", "0.8", "0.6", "0.4"]
