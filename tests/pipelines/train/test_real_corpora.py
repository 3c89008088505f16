"""The adapters on the real corpora in shared/data, checked against its README.

Skipped where the shared data is absent (e.g. a checkout outside this workspace).  Reading the
full FER2013 CSV takes ~3–4 s (gzip decompression of 290 MB of text dominates).
"""

from __future__ import annotations

import gzip

import numpy as np

from operators.schema import EMOTIONS, URI
from pipelines.train.corpora.fer2013 import PIXELS, fer_pixels_to_image, read_fer2013
from pipelines.train.corpora.ravdess import ravdess_split, read_ravdess
from pipelines.train.media import load_audio
from pipelines.train.table import LABEL, SPLIT
from tests.fixtures.shared_data import SHARED_DATA

FER2013 = SHARED_DATA / "fer2013.csv.gz"
RAVDESS = SHARED_DATA / "ravdess_speech_16k"

FER2013_CLASS_COUNTS = {
    "train": [3995, 436, 4097, 7215, 4830, 3171, 4965],
    "val": [467, 56, 496, 895, 653, 415, 607],
}
"""FER2013's per-class counts (angry … neutral) for Training and PublicTest, as published
with the challenge data; the README states the shared copy matches them exactly."""


def test_real_fer2013_header_splits_and_counts():
    with gzip.open(FER2013, "rt") as handle:
        header = handle.readline().strip()
    assert header == "emotion,pixels,Usage"
    frame = read_fer2013(str(FER2013))
    assert frame[SPLIT].value_counts().to_dict() == {"train": 28709, "val": 3589}
    for split, counts in FER2013_CLASS_COUNTS.items():
        labels = frame[LABEL][frame[SPLIT] == split]
        assert np.bincount(labels, minlength=7).tolist() == counts
    image = fer_pixels_to_image(frame[PIXELS].iloc[0])
    assert image.shape == (48, 48) and image.std() > 10  # a face, not a blank


def test_real_ravdess_listing_labels_and_fixed_split():
    frame = ravdess_split(read_ravdess(str(RAVDESS)))
    assert len(frame) == 1200
    assert sorted(frame["actor"].unique()) == list(range(1, 21))
    assert (frame.groupby("actor").size() == 60).all()
    assert (frame["modality"] == "audio").all() and (frame["vocal_channel"] == "speech").all()
    assert frame[URI].str.endswith(".flac").all()
    # per actor: neutral 4 + calm 8 -> neutral 12; each other emotion 8
    counts = frame[LABEL].map(dict(enumerate(EMOTIONS))).value_counts().to_dict()
    assert counts == {"neutral": 240, **{e: 160 for e in EMOTIONS if e != "neutral"}}
    assert frame.groupby(SPLIT)["actor"].agg(set).to_dict() == {
        "train": set(range(1, 17)), "val": {17, 18, 19, 20}}
    audio = load_audio(frame[URI].iloc[0])
    assert audio.dtype == np.float32 and 2.5 < audio.size / 16000 < 6.0
