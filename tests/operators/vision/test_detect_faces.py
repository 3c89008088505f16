"""MTCNN detector and aligned crops on the real astronaut photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.data import astronaut

from operators import schema as S
from operators.vision.detect_faces import FaceDetector, FaceDetectorConfig, align_crops


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(FaceDetectorConfig())


def test_detects_the_astronaut_and_crops_her_face(detector):
    frames = np.stack([astronaut()] * 3)
    out = detector.process_chunk(frames)
    assert out[S.FACE_FRAME].tolist() == [0, 1, 2]
    np.testing.assert_allclose(out[S.FACE_BOX][0], [181, 62, 268, 172], atol=4)
    assert out[S.FACE_SCORE].min() > 0.99
    assert out[S.FACE_CROPS].shape == (3, 112, 112, 3)
    # the crop is centred on the face: its centre is skin, not the dark background
    centre = out[S.FACE_CROPS][0, 40:72, 40:72].astype(float)
    assert centre.mean() > 120


def test_no_face_and_no_frames(detector):
    blank = np.full((2, 240, 320, 3), 128, np.uint8)
    out = detector.process_chunk(blank)
    assert len(out[S.FACE_FRAME]) == 0 and out[S.FACE_CROPS].shape == (0, 112, 112, 3)
    empty = detector.process_chunk(np.zeros((0, 2, 2, 3), np.uint8))
    assert len(empty[S.FACE_BOX]) == 0


def test_batch_call_drops_frames_and_keeps_rows(detector):
    batch = {S.FRAMES: np.empty(2, dtype=object), S.STAGE_SECONDS: np.zeros(2)}
    batch[S.FRAMES][:] = [np.stack([astronaut()]), np.zeros((0, 2, 2, 3), np.uint8)]
    out = detector(batch)
    assert S.FRAMES not in out
    assert [len(f) for f in out[S.FACE_FRAME]] == [1, 0]
    assert out[S.STAGE_SECONDS][0] > 0


def test_align_crops_levels_the_eyes():
    # a synthetic frame with two bright "eyes" on a tilted line
    frame = torch.zeros(1, 3, 200, 200)
    left, right = (80.0, 90.0), (120.0, 110.0)
    for x, y in (left, right):
        frame[0, :, int(y) - 3:int(y) + 3, int(x) - 3:int(x) + 3] = 255
    crop = align_crops(frame, np.array([[70, 70, 130, 130]], np.float32),
                       np.array([[left, right]], np.float32), 64, 0.0)[0].float().mean(-1)
    rows = torch.nonzero(crop > 100)[:, 0]
    # after alignment both eyes lie on (nearly) the same row
    assert rows.max() - rows.min() <= 8
