"""Face track linking: continuity, participant choice, gaps, re-entry and noise."""

from __future__ import annotations

import numpy as np

from operators.vision.track_faces import TrackConfig, iou, link_tracks


def _boxes(*boxes):
    return np.asarray(boxes, np.float32)


def test_iou():
    a = _boxes([0, 0, 10, 10])
    assert iou(a, _boxes([0, 0, 10, 10]))[0, 0] == 1
    assert iou(a, _boxes([5, 0, 15, 10]))[0, 0] == np.float32(50 / 150)
    assert iou(a, _boxes([20, 20, 30, 30]))[0, 0] == 0


def test_two_people_participant_is_the_one_seen_most_then_larger():
    ts = np.arange(10) * 0.2
    big, small = [100, 100, 300, 300], [400, 50, 460, 110]
    frames, boxes = [], []
    for f in range(10):
        frames.append(f)
        boxes.append([b + f for b in big])  # drifting slowly
        if f < 6:
            frames.append(f)
            boxes.append(small)
    ids = link_tracks(ts, np.array(frames), _boxes(*boxes), TrackConfig())
    boxes = _boxes(*boxes)
    assert set(ids[boxes[:, 0] >= 400]) == {1}
    assert set(ids[boxes[:, 0] < 400]) == {0}


def test_rejoin_after_leaving_and_drop_noise():
    ts = np.arange(40) * 0.2
    frames = list(range(0, 10)) + list(range(30, 40)) + [20]
    boxes = [[100, 100, 200, 200]] * 20 + [[500, 10, 520, 30]]
    ids = link_tracks(ts, np.array(frames), _boxes(*boxes), TrackConfig())
    # same seat after a 4 s absence: one track; a single stray detection is dropped
    assert set(ids[:20]) == {0}
    assert ids[20] == -1


def test_no_detections():
    assert len(link_tracks(np.zeros(3), np.zeros(0, int), np.zeros((0, 4)), TrackConfig())) == 0
