"""MTCNN detector and aligned crops on the real astronaut photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.data import astronaut

from operators import schema as S
from operators.step import StepRunner
from operators.vision.detect_faces import (
    FaceDetector,
    FaceDetectorConfig,
    align_crops,
    scene_cuts,
)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(FaceDetectorConfig()).ready()


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
    # one grey thumbnail per crop: the crop's area mean, for the timeline's mouth motion
    side = S.FACE_THUMB_SIZE
    assert out[S.FACE_THUMB].shape == (3, side * side) and out[S.FACE_THUMB].dtype == np.uint8
    # the mean of R, G and B (not luma), area-averaged
    grey = Image.fromarray(out[S.FACE_CROPS][0].astype(np.float32).mean(axis=-1)).resize(
        (side, side), Image.Resampling.BOX)
    thumb = out[S.FACE_THUMB][0].astype(float)
    assert abs(thumb.mean() - np.asarray(grey, float).mean()) < 1
    assert np.corrcoef(thumb, np.asarray(grey, float).ravel())[0, 1] > 0.95


def test_no_face_and_no_frames(detector):
    blank = np.full((2, 240, 320, 3), 128, np.uint8)
    out = detector.process_chunk(blank)
    assert len(out[S.FACE_FRAME]) == 0 and out[S.FACE_CROPS].shape == (0, 112, 112, 3)
    assert out[S.FACE_THUMB].shape == (0, S.FACE_THUMB_SIZE ** 2)
    empty = detector.process_chunk(np.zeros((0, 2, 2, 3), np.uint8))
    assert len(empty[S.FACE_BOX]) == 0


def test_batch_call_drops_frames_and_keeps_rows(detector):
    batch = {S.FRAMES: np.empty(2, dtype=object), S.STAGE_SECONDS: np.zeros(2),
             S.CHUNK_INDEX: np.zeros(2, np.int64), S.ERROR: np.array(["", ""], object)}
    batch[S.FRAMES][:] = [np.stack([astronaut()]), np.zeros((0, 2, 2, 3), np.uint8)]
    out = StepRunner(detector)(batch)  # as a job runs it: the step's time is added
    assert S.FRAMES not in out
    assert [len(f) for f in out[S.FACE_FRAME]] == [1, 0]
    assert out[S.STAGE_SECONDS].min() > 0
    assert out[S.ERROR].tolist() == ["", ""]


@pytest.mark.parametrize("side", [32, 64, 99])
def test_frames_smaller_than_the_smallest_face_give_no_face_and_say_why(side):
    """min_face_size 100 on tiny pictures (a 1×1 video is decoded stretched to 64 px): no
    crash inside MTCNN's empty image pyramid, no faces, and a note on the clip's first chunk."""
    detector = FaceDetector(FaceDetectorConfig(min_face_size=100, detection_stride=1)).ready()
    frames = np.stack([np.asarray(astronaut()[::4, ::4][:side, :side])] * 2)
    assert len(detector.process_chunk(frames)[S.FACE_FRAME]) == 0
    batch = {S.FRAMES: np.empty(2, dtype=object), S.STAGE_SECONDS: np.zeros(2),
             S.CHUNK_INDEX: np.array([0, 1]), S.ERROR: np.array(["earlier note", ""], object)}
    batch[S.FRAMES][:] = [frames, frames]
    out = detector(batch)
    assert [len(f) for f in out[S.FACE_FRAME]] == [0, 0]
    assert out[S.ERROR][0] == (f"earlier note; frames are {side}×{side} px, smaller than "
                               "detector.min_face_size (100 px): no face can be found")
    assert out[S.ERROR][1] == ""  # once per clip


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


def _shifted(image: np.ndarray, dx: int, dy: int, size: tuple[int, int] = (640, 640)) -> np.ndarray:
    """``image`` placed at (dx, dy) on a grey canvas: a face that moves between frames."""
    canvas = np.full((*size, 3), 90, np.uint8)
    canvas[dy:dy + image.shape[0], dx:dx + image.shape[1]] = image
    return canvas


def _full(**overrides) -> FaceDetector:
    """The unoptimised path: MTCNN on every frame at the working size."""
    return FaceDetector(FaceDetectorConfig(detection_stride=1, detection_max_side=None,
                                           **overrides)).ready()


def test_tracked_frames_follow_a_moving_face():
    # the astronaut drifts 6 px right and 3 px down per frame; stride 3 detects frames
    # 0, 3, 6 and interpolates 1, 2, 4, 5
    frames = np.stack([_shifted(astronaut(), 6 * i, 3 * i) for i in range(7)])
    tracked = FaceDetector(FaceDetectorConfig(detection_stride=3, detection_max_side=None)
                           ).ready().process_chunk(frames)
    detected = _full().process_chunk(frames)
    assert tracked[S.FACE_FRAME].tolist() == detected[S.FACE_FRAME].tolist() == list(range(7))
    np.testing.assert_allclose(tracked[S.FACE_BOX], detected[S.FACE_BOX], atol=6)
    # boxes move with the face, not stuck at the last detection
    centres = (tracked[S.FACE_BOX][:, 0] + tracked[S.FACE_BOX][:, 2]) / 2
    assert np.all(np.diff(centres) > 3)
    assert tracked[S.FACE_SCORE].min() > 0.99


def test_a_face_that_leaves_between_keyframes_is_redetected_not_interpolated():
    # face on frames 0..3, gone on 4..6: keyframes 0 and 3 agree, 3 and 6 do not, so 4 and
    # 5 are detected (no face) instead of being filled in
    face = _shifted(astronaut(), 40, 40)
    blank = np.full_like(face, 90)
    frames = np.stack([face] * 4 + [blank] * 3)
    out = FaceDetector(FaceDetectorConfig(detection_stride=3)).ready().process_chunk(frames)
    assert out[S.FACE_FRAME].tolist() == [0, 1, 2, 3]


def test_a_scene_cut_between_matching_keyframes_is_redetected():
    # the same face at both keyframes, but a different picture in between (a screen share
    # toggled on and off): interpolation would invent faces on frames 1 and 2
    face = _shifted(astronaut(), 40, 40)
    screen = np.full_like(face, 235)
    frames = np.stack([face, screen, screen, face])
    out = FaceDetector(FaceDetectorConfig(detection_stride=3)).ready().process_chunk(frames)
    assert out[S.FACE_FRAME].tolist() == [0, 3]


def test_reduced_detection_size_gives_boxes_at_the_working_size():
    frames = np.stack([_shifted(astronaut(), 64, 0)])
    small = FaceDetector(FaceDetectorConfig(detection_max_side=256)).ready().process_chunk(frames)
    full = _full().process_chunk(frames)
    np.testing.assert_allclose(small[S.FACE_BOX], full[S.FACE_BOX], atol=8)
    np.testing.assert_allclose(full[S.FACE_BOX][0], [245, 62, 332, 172], atol=4)
    # crops come from the full-size frame either way: same picture, up to the box jitter
    diff = np.abs(small[S.FACE_CROPS].astype(int) - full[S.FACE_CROPS].astype(int)).mean()
    assert diff < 20


def test_scene_cuts_flags_only_large_changes():
    rng = np.random.default_rng(0)
    base = np.full((4, 480, 640, 3), 120, np.uint8)
    noisy = np.clip(base + rng.integers(-4, 5, base.shape), 0, 255).astype(np.uint8)
    noisy[2] = 250
    assert scene_cuts(noisy, 20.0).tolist() == [False, False, True, True]
