"""Corpus adapters (pipelines/train/corpora/) on tiny corpora in each corpus's exact format
(tests/fixtures/corpora.py), locally and on S3, and decoding one sample's audio.

Expected labels follow from the file names and from the hand-made FER+ vote rows, computed by
hand below.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from infra.storage import StorageConfig
from operators.schema import EMOTIONS, URI, VALENCE
from pipelines.train.corpora.cremad import read_cremad
from pipelines.train.corpora.fer2013 import PIXELS, fer_pixels_to_image, read_fer2013
from pipelines.train.corpora.ferplus import draw_labels, ferplus_targets, read_ferplus
from pipelines.train.corpora.folders import read_image_folders
from pipelines.train.corpora.manifest import read_manifest
from pipelines.train.corpora.ravdess import ravdess_split, read_ravdess
from pipelines.train.media import load_audio, load_image
from pipelines.train.table import (
    COLUMNS,
    END_S,
    LABEL,
    LABEL_DIST,
    NO_LABEL,
    SPLIT,
    START_S,
    SUBJECT,
)

E = {name: i for i, name in enumerate(EMOTIONS)}
FER_LABELS = [3, 3, 1, 5, 0]
"""FER2013 emotions of the fixture faces (``FACES`` of tests/fixtures/corpora.py): happy,
happy, disgust, surprise, angry; Usage Training ×3, PublicTest, PrivateTest."""
N_RAVDESS = 7
"""Media files in the RAVDESS fixture (``RAVDESS_FILES`` of tests/fixtures/corpora.py)."""


def dist(**shares: float) -> np.ndarray:
    """A 7-vector over EMOTIONS from named shares."""
    out = np.zeros(len(EMOTIONS), dtype=np.float32)
    for name, share in shares.items():
        out[E[name]] = share
    return out


def assert_schema(frame: pd.DataFrame) -> None:
    assert tuple(frame.columns[: len(COLUMNS)]) == COLUMNS
    assert frame[LABEL].dtype == np.int64


def test_fer2013_rows_splits_and_pixels(fer2013_csv, fer_faces):
    frame = read_fer2013(str(fer2013_csv))
    assert_schema(frame)
    assert frame[LABEL].tolist() == FER_LABELS
    assert frame[SPLIT].tolist() == ["train", "train", "train", "val", "test"]
    assert frame[URI].isna().all() and frame[SUBJECT].isna().all()
    assert frame[VALENCE].isna().all() and frame[START_S].isna().all()
    for pixels, face in zip(frame[PIXELS], fer_faces, strict=True):
        image = fer_pixels_to_image(pixels)
        assert image.dtype == np.uint8 and image.shape == (48, 48)
        np.testing.assert_array_equal(image, face)


def test_fer2013_plain_csv_and_unlabelled_file(tmp_path, fer2013_csv):
    table = pd.read_csv(fer2013_csv)
    plain = tmp_path / "test.csv"
    table[["pixels"]].to_csv(plain, index=False)  # the challenge's unlabelled test file
    frame = read_fer2013(str(plain))
    assert (frame[LABEL] == NO_LABEL).all() and frame[SPLIT].isna().all()


@pytest.mark.parametrize(("column", "value", "message"), [
    ("emotion", 7, "emotion must be 0–6"),
    ("Usage", "Validation", "unknown Usage"),
])
def test_fer2013_rejects_bad_cells(tmp_path, fer2013_csv, column, value, message):
    table = pd.read_csv(fer2013_csv)
    table.loc[1, column] = value
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=message):
        read_fer2013(str(path))


@pytest.mark.parametrize("pixels", ["1 2 3", " ".join(["300"] * 2304)])
def test_fer_pixels_rejects_wrong_size_and_range(pixels):
    with pytest.raises(ValueError):
        fer_pixels_to_image(pixels)


def test_ferplus_majority_joins_by_order_and_drops_non_faces(ferplus_csv, fer2013_csv):
    frame = read_ferplus(str(ferplus_csv), str(fer2013_csv), "majority")
    assert_schema(frame)
    # rows 3 (unknown plurality 5 > surprise 4) and 4 (NF) are dropped
    assert frame[LABEL].tolist() == [E["happy"], E["happy"], E["disgust"]]
    assert frame["fer2013_label"].tolist() == [3, 3, 1]
    assert frame[SPLIT].tolist() == ["train"] * 3
    np.testing.assert_array_equal(np.stack(frame[LABEL_DIST]),
                                  np.stack([dist(happy=1), dist(happy=1), dist(disgust=1)]))
    # the images come along with their own row: row 2 of FER2013 is the disgust face
    original = read_fer2013(str(fer2013_csv))
    assert frame[PIXELS][2] == original[PIXELS][2]


def test_ferplus_crossentropy_and_multilabel_targets(ferplus_csv, fer2013_csv):
    soft = read_ferplus(str(ferplus_csv), str(fer2013_csv), "crossentropy")
    expected = np.stack([dist(happy=0.8, surprise=0.1, neutral=0.1),  # 8/1/1 of 10
                         dist(happy=6 / 9, surprise=3 / 9),  # contempt vote dropped
                         dist(disgust=4 / 7, angry=3 / 7)])  # 3 contempt votes dropped
    np.testing.assert_allclose(np.stack(soft[LABEL_DIST]), expected, rtol=1e-6)
    np.testing.assert_allclose(np.stack(soft["vote_dist"]), expected, rtol=1e-6)

    multi = read_ferplus(str(ferplus_csv), str(fer2013_csv), "multilabel",
                         multilabel_threshold=0.3)
    np.testing.assert_array_equal(np.stack(multi[LABEL_DIST]), np.stack([
        dist(happy=1), dist(happy=1, surprise=1), dist(disgust=1, angry=1)]))


def test_ferplus_contempt_merge_and_min_votes(ferplus_csv, fer2013_csv):
    merged = read_ferplus(str(ferplus_csv), str(fer2013_csv), "crossentropy",
                          contempt="disgust", min_votes=2)
    np.testing.assert_allclose(np.stack(merged[LABEL_DIST]), np.stack([
        dist(happy=1),  # single neutral and surprise votes removed as noise
        dist(happy=6 / 9, surprise=3 / 9),  # the single contempt vote is removed too
        dist(disgust=7 / 10, angry=3 / 10)]), rtol=1e-6)


def test_ferplus_joins_a_fer2013_copy_without_private_test(ferplus_csv, fer2013_csv):
    images = read_fer2013(str(fer2013_csv))
    frame = read_ferplus(str(ferplus_csv), images[images[SPLIT] != "test"], "majority")
    assert len(frame) == 3
    with pytest.raises(ValueError, match="not the same corpus order"):
        read_ferplus(str(ferplus_csv), images.drop(index=0), "majority")


def test_ferplus_targets_ties_and_contempt_plurality():
    votes = np.array([
        [0, 5, 0, 0, 0, 0, 0, 0, 5, 0],  # happy ties unknown: dropped
        [0, 0, 0, 5, 5, 0, 0, 0, 0, 0],  # sadness ties anger: angry (first in EMOTIONS)
        [0, 0, 0, 0, 0, 4, 0, 6, 0, 0],  # contempt plurality
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # no votes
    ])
    dropped = ferplus_targets(votes, "majority")
    assert dropped.keep.tolist() == [False, True, False, False]
    assert dropped.label.tolist() == [-1, E["angry"], -1, -1]
    assert np.isnan(dropped.target[0]).all()
    merged = ferplus_targets(votes, "crossentropy", contempt="disgust")
    assert merged.keep.tolist() == [False, True, True, False]
    np.testing.assert_allclose(merged.target[1], dist(angry=0.5, sad=0.5))
    np.testing.assert_allclose(merged.target[2], dist(disgust=1.0))
    # a threshold above every share still marks the plurality class
    strict = ferplus_targets(votes[1:2], "multilabel", multilabel_threshold=0.9)
    np.testing.assert_array_equal(strict.target[0], dist(angry=1))


def test_ferplus_probability_draws_follow_the_votes():
    votes = np.tile([[1, 8, 1, 0, 0, 0, 0, 0, 0, 0]], (4000, 1))
    first = ferplus_targets(votes, "probability", seed=3)
    again = ferplus_targets(votes, "probability", seed=3)
    np.testing.assert_array_equal(first.label, again.label)
    assert set(np.unique(first.label)) == {E["happy"], E["surprise"], E["neutral"]}
    shares = np.bincount(first.label, minlength=7) / len(votes)
    np.testing.assert_allclose(shares, dist(happy=0.8, surprise=0.1, neutral=0.1), atol=0.03)
    np.testing.assert_array_equal(first.target, np.eye(7, dtype=np.float32)[first.label])
    redrawn = draw_labels(first.vote_dist, seed=4)
    assert (redrawn != first.label).any()


def test_ferplus_rejects_other_columns(tmp_path, fer2013_csv):
    path = tmp_path / "fer2013new.csv"
    path.write_text("Usage,Image name,neutral,happy\nTraining,a.png,1,9\n")
    with pytest.raises(ValueError, match="expected FER\\+ columns"):
        read_ferplus(str(path), str(fer2013_csv))


def test_ravdess_names_labels_subjects(ravdess_root):
    frame = read_ravdess(str(ravdess_root))
    assert_schema(frame)
    assert len(frame) == N_RAVDESS  # README.txt skipped
    by_name = frame.set_index(frame[URI].map(lambda u: u.rsplit("/", 1)[1]))
    expected = {
        "03-01-05-02-01-01-01.flac": ("angry", "ravdess:01", "audio", "speech", "strong"),
        "03-01-02-01-02-01-01.flac": ("neutral", "ravdess:01", "audio", "speech", "normal"),
        "03-01-03-01-01-02-02.flac": ("happy", "ravdess:02", "audio", "speech", "normal"),
        "03-02-04-01-01-01-02.flac": ("sad", "ravdess:02", "audio", "song", "normal"),
        "03-01-08-02-02-01-17.flac": ("surprise", "ravdess:17", "audio", "speech", "strong"),
        "03-01-07-01-01-01-18.flac": ("disgust", "ravdess:18", "audio", "speech", "normal"),
        "01-01-06-01-01-01-18.mp4": ("fear", "ravdess:18", "audio-video", "speech", "normal"),
    }
    for name, (emotion, subject, modality, channel, intensity) in expected.items():
        row = by_name.loc[name]
        assert EMOTIONS[row[LABEL]] == emotion
        assert (row[SUBJECT], row["modality"], row["vocal_channel"], row["intensity"]) == (
            subject, modality, channel, intensity)
    assert by_name.loc["03-01-02-01-02-01-01.flac", "emotion_code"] == "02"  # calm, kept
    assert frame[SPLIT].isna().all()


def test_ravdess_rejects_undefined_codes(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    (tmp_path / "Actor_01" / "03-01-09-01-01-01-01.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="emotion code 09"):
        read_ravdess(str(tmp_path))


def test_ravdess_fixed_split(ravdess_root):
    frame = ravdess_split(read_ravdess(str(ravdess_root)))
    splits = dict(zip(frame[SUBJECT], frame[SPLIT], strict=True))
    assert splits == {"ravdess:01": "train", "ravdess:02": "train", "ravdess:17": "val",
                      "ravdess:18": "val"}
    with pytest.raises(ValueError, match="RAVDESS rows"):
        ravdess_split(frame.assign(subject="cremad:1001"))


def test_cremad_names_labels_subjects(cremad_root):
    frame = read_cremad(str(cremad_root))
    assert_schema(frame)
    assert [u.rsplit("/", 1)[1] for u in frame[URI]] == [
        "1001_DFA_ANG_XX.wav", "1001_IEO_HAP_HI.wav", "1002_TIE_SAD_LO.wav", "1091_DFA_NEU_XX.wav"]
    assert [EMOTIONS[i] for i in frame[LABEL]] == ["angry", "happy", "sad", "neutral"]
    assert frame[SUBJECT].tolist() == ["cremad:1001", "cremad:1001", "cremad:1002",
                                       "cremad:1091"]
    assert frame["intensity"].tolist() == ["unspecified", "high", "low", "unspecified"]
    assert frame["sentence"].tolist() == ["DFA", "IEO", "TIE", "DFA"]


def test_cremad_rejects_undefined_codes(tmp_path):
    (tmp_path / "1001_DFA_SUR_XX.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="emotion code SUR"):
        read_cremad(str(tmp_path))


def test_missing_corpus_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_cremad(str(tmp_path / "nowhere"))


def test_load_audio_flac_mp4_and_windows(ravdess_root):
    frame = read_ravdess(str(ravdess_root))
    flac = frame[URI][frame["modality"] == "audio"].iloc[0]
    whole = load_audio(flac)
    assert whole.dtype == np.float32 and 1.0 < whole.size / 16000 < 3.0
    assert np.sqrt(np.mean(whole**2)) > 0.01  # speech, not silence
    window = load_audio(flac, start_s=0.25, end_s=0.75)
    assert window.size == 8000
    np.testing.assert_allclose(window, whole[4000:12000], atol=1e-6)
    # the mp4's AAC track speaks statement 01, like this FLAC (AAC adds < 0.2 s of padding)
    mp4 = frame[URI][frame["modality"] == "audio-video"].iloc[0]
    same_statement = load_audio(str(ravdess_root / "Actor_01/03-01-05-02-01-01-01.flac"))
    assert abs(load_audio(mp4).size - same_statement.size) < 0.2 * 16000


def test_image_folders_with_splits_synonyms_and_contempt(affectnet_root):
    frame = read_image_folders(str(affectnet_root))
    assert_schema(frame)
    got = {u.split("/")[-2]: (EMOTIONS[i], s) for u, i, s in
           zip(frame[URI], frame[LABEL], frame[SPLIT], strict=True)}
    assert got == {"Anger": ("angry", "train"), "happiness": ("happy", "train"),
                   "Surprised": ("surprise", "val"), "NEUTRAL": ("neutral", "val")}
    merged = read_image_folders(str(affectnet_root), contempt="disgust")
    assert sorted(EMOTIONS[i] for i in merged[LABEL]) == [
        "angry", "disgust", "happy", "neutral", "surprise"]
    image = load_image(merged[URI][0])
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert load_image(merged[URI][0], grey=True).shape == (96, 96)


def test_image_folders_without_splits_and_unknown_classes(tmp_path, affectnet_root):
    flat = read_image_folders(str(affectnet_root / "val"))
    assert flat[SPLIT].isna().all() and len(flat) == 2
    bad = tmp_path / "bad"
    for folder in ("happy", "bored"):
        (bad / folder).mkdir(parents=True)
        (bad / folder / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"'bored'.* not emotion classes"):
        read_image_folders(str(bad))


def test_manifest_csv_names_indices_windows_and_relative_uris(tmp_path):
    path = tmp_path / "clips" / "manifest.csv"
    path.parent.mkdir()
    path.write_text(
        "uri,start,end,label,valence,arousal,subject,split\n"
        "rec1.mp4,0,2.5,Happy,0.6,0.4,p1,train\n"
        "s3://bucket/rec2.mp4,2.5,5,4,,,p2,VAL\n"
        "/data/rec3.mp4,,,anger,-0.5,0.7,p3,\n"
        "rec4.mp4,1,2,,0.1,-0.2,p1,test\n")
    frame = read_manifest(str(path))
    assert_schema(frame)
    assert frame[URI].tolist() == [str(tmp_path / "clips" / "rec1.mp4"),
                                   "s3://bucket/rec2.mp4", "/data/rec3.mp4",
                                   str(tmp_path / "clips" / "rec4.mp4")]
    assert frame[LABEL].tolist() == [E["happy"], E["sad"], E["angry"], NO_LABEL]
    np.testing.assert_array_equal(frame[START_S], [0, 2.5, np.nan, 1])
    np.testing.assert_array_equal(frame[END_S], [2.5, 5, np.nan, 2])
    np.testing.assert_array_equal(frame[VALENCE], [0.6, np.nan, -0.5, 0.1])
    assert frame[SPLIT].tolist()[:2] == ["train", "val"] and pd.isna(frame[SPLIT][2])


def test_manifest_parquet_with_label_dist_and_valence_only(tmp_path):
    path = tmp_path / "m.parquet"
    pd.DataFrame({"uri": ["a.wav", "b.wav"], "start_s": [0.0, 1.0], "end_s": [1.0, 2.0],
                  "label_dist": [list(dist(happy=0.5, neutral=0.5)), None],
                  "arousal": [0.2, -0.3]}).to_parquet(path)
    frame = read_manifest(str(path))
    np.testing.assert_array_equal(frame[LABEL_DIST][0], dist(happy=0.5, neutral=0.5))
    assert frame[LABEL_DIST][1] is None
    assert (frame[LABEL] == NO_LABEL).all() and frame[VALENCE].isna().all()


@pytest.mark.parametrize(("header", "row", "message"), [
    ("uri,lable", "a.mp4,happy", "unknown manifest columns \\['lable'\\]"),
    ("uri,label", "a.mp4,bored", "unknown label\\(s\\) 'bored' \\(row 0\\)"),
    ("uri,label", "a.mp4,7", "unknown label\\(s\\) '7'"),
    ("uri,start,end,label", "a.mp4,3,2,happy", "0 <= start < end"),
    ("uri,valence", "a.mp4,5", "valence must be in \\[-1, 1\\]"),
    ("uri,label,split", "a.mp4,sad,dev", "unknown split values \\['dev'\\]"),
    ("path,label", "a.mp4,sad", "unknown manifest columns"),
    ("uri,subject", "a.mp4,p1", "needs 'label'"),
    ("uri,start,start_s,label", "a.mp4,1,1,sad", "either 'start' or 'start_s'"),
])
def test_manifest_errors_name_the_problem(tmp_path, header, row, message):
    path = tmp_path / "m.csv"
    path.write_text(f"{header}\n{row}\n")
    with pytest.raises(ValueError, match=message):
        read_manifest(str(path))


def test_adapters_read_from_s3(s3_endpoint, fer2013_csv, ravdess_root):
    import s3fs

    options = StorageConfig(endpoint_url=s3_endpoint).storage_options()
    fs = s3fs.S3FileSystem(**options["s3"])
    fs.mkdir("corpora")
    fs.put(str(fer2013_csv), "corpora/fer2013.csv.gz")
    fs.put(str(ravdess_root), "corpora/ravdess", recursive=True)

    fer = read_fer2013("s3://corpora/fer2013.csv.gz", options)
    assert fer[LABEL].tolist() == FER_LABELS
    ravdess = read_ravdess("s3://corpora/ravdess", options)
    assert len(ravdess) == N_RAVDESS
    assert ravdess[URI].str.startswith("s3://corpora/ravdess/Actor_").all()
    name = "Actor_01/03-01-02-01-02-01-01.flac"  # the first in sorted order
    assert ravdess[URI][0] == f"s3://corpora/ravdess/{name}"
    remote = load_audio(ravdess[URI][0], end_s=0.5, storage_options=options)
    local = load_audio(str(ravdess_root / name), end_s=0.5)
    np.testing.assert_array_equal(remote, local)
