"""``prepare`` as a Ray Data job on the corpus fixtures: the written Parquet matches the
declared schema, samples keep their labels and splits, voice windows are the loud ones, video
faces come from the timeline job's detector, and undecodable inputs become error rows."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from operators.schema import EMOTIONS, SAMPLE_RATE
from pipelines.train.corpora.parquet import prepared_schema, read_prepared
from pipelines.train.media import load_audio
from pipelines.train_model.config import DataSource
from pipelines.train_model.prepare import prepare_source

pytestmark = pytest.mark.integration


def _schemas(folder: str) -> list:
    return [pq.read_schema(p) for p in sorted(Path(folder).rglob("*.parquet"))]


def test_voice_samples_from_ravdess(ray_local, ravdess_root, tmp_path):
    source = DataSource(format="ravdess", uri=str(ravdess_root), max_windows_per_file=2)
    out = prepare_source("voice", source, str(tmp_path / "voice"))
    assert all(schema.equals(prepared_schema("voice")) for schema in _schemas(out))
    table = read_prepared(out)
    # every file of the corpus (6 FLAC + the audio-video mp4), 1–2 windows each
    per_file = table.groupby("uri").size()
    assert len(per_file) == 7 and per_file.between(1, 2).all()
    angry = table[table["uri"].str.endswith("03-01-05-02-01-01-01.flac")]
    assert set(angry["label"]) == {EMOTIONS.index("angry")}
    assert set(angry["split"]) == {"train"}
    assert set(table[table["uri"].str.contains("Actor_18")]["split"]) == {"val"}
    whole = load_audio(angry["uri"].iloc[0])

    def rms(start: int) -> float:
        return float(np.sqrt(np.mean(whole[start:start + SAMPLE_RATE] ** 2)))

    chosen = [round(s * SAMPLE_RATE) for s in angry["start_s"]]
    others = [s for s in range(0, len(whole) - SAMPLE_RATE + 1, SAMPLE_RATE // 2)
              if s not in chosen]
    for start, (_, row) in zip(chosen, angry.iterrows(), strict=True):
        window = np.asarray(row["audio"], np.float32)
        assert len(window) == SAMPLE_RATE
        assert row["end_s"] - row["start_s"] == pytest.approx(1.0)
        # the recording's samples there, at least as loud as every window left out
        np.testing.assert_allclose(window, whole[start:start + SAMPLE_RATE], atol=1e-6)
        assert all(rms(start) >= rms(other) for other in others)


def test_face_samples_from_videos_through_the_detector(ray_local, media, ravdess_root,
                                                       tmp_path):
    grey_video = next(ravdess_root.rglob("*.mp4"))  # a grey picture: no face
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"uri": [str(media["face_speech"]), str(grey_video),
                          str(tmp_path / "missing.mp4")],
                  "start": [0.0, None, None], "end": [2.0, None, None],
                  "label": ["neutral", "fear", "sad"]}).to_csv(manifest, index=False)
    out = prepare_source("face", DataSource(format="manifest", uri=str(manifest)),
                         str(tmp_path / "faces"))
    assert all(schema.equals(prepared_schema("face")) for schema in _schemas(out))
    raw = pq.read_table(out).to_pandas()
    faces = raw[raw["uri"] == str(media["face_speech"])]
    # 2 s sampled every hop (0.5 s): a crop per frame, all inside the labelled window
    assert 3 <= len(faces) <= 5 and faces["error"].isna().all()
    assert set(faces["label"]) == {EMOTIONS.index("neutral")}
    assert ((faces["start_s"] >= 0) & (faces["start_s"] < 2.0)).all()
    crop = np.asarray(Image.open(io.BytesIO(faces["image"].iloc[0])))
    assert crop.shape == (112, 112, 3) and crop.std() > 20  # a real picture, not a blank
    grey = raw[raw["uri"] == str(grey_video)]
    assert len(grey) == 1 and grey["error"].iloc[0].startswith("no_face")
    assert grey["image"].isna().all()
    missing = raw[raw["uri"].str.endswith("missing.mp4")]
    assert len(missing) == 1 and missing["error"].iloc[0].startswith("read_error")
    # readers leave the error rows out
    assert len(read_prepared(out)) == len(faces)


def test_face_samples_from_fer2013(ray_local, fer2013_csv, tmp_path):
    out = prepare_source("face", DataSource(format="fer2013", uri=str(fer2013_csv),
                                            split="train"), str(tmp_path / "fer"))
    table = read_prepared(out)
    assert list(table["label"]) == [3, 3, 1]  # the fixture's three Training rows, in order
    image = np.asarray(Image.open(io.BytesIO(table["image"].iloc[0])))
    assert image.shape == (48, 48)  # FER2013's grey pictures, kept as they are
    assert all(math.isnan(v) for v in table["valence"])
