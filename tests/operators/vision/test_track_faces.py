"""Face track linking: continuity, participant choice, gaps, re-entry and noise."""

from __future__ import annotations

import numpy as np

from operators.vision.track_faces import TrackConfig, iou, link_tracks, match_one_to_one


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


def test_match_one_to_one_pairs_moved_faces_and_refuses_changes():
    a = _boxes([0, 0, 100, 100], [300, 0, 360, 60])
    b = _boxes([302, 2, 362, 62], [5, 3, 105, 103])  # same two faces, listed the other way
    assert match_one_to_one(a, b, 0.5).tolist() == [1, 0]
    assert match_one_to_one(a, b[:1], 0.5) is None  # a face left
    assert match_one_to_one(a[:1], _boxes([60, 60, 160, 160]), 0.5) is None  # it jumped
    assert match_one_to_one(a[:0], b[:0], 0.5).tolist() == []  # no faces at either end
