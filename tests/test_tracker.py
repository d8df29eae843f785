"""ByteTrack tracker: scripted person boxes, no pose model needed."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from posestream.realtime.tracker import (
    CONFIRMED,
    LOST,
    TENTATIVE,
    ByteTracker,
    KalmanBoxFilter,
    iou_matrix,
    xyah_to_xyxy,
    xyxy_to_xyah,
)


@dataclass
class Det:
    """A PersonPose-like detection."""

    box: np.ndarray
    keypoints: np.ndarray | None = None


def det(cx: float, cy: float, w: float = 60, h: float = 160, score: float = 0.9,
        tag: float | None = None) -> Det:
    """A box centred at (cx, cy); ``tag`` fills the keypoints so a test can tell who it is."""
    kp = None if tag is None else np.full((17, 3), tag, dtype=np.float32)
    return Det(np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score], np.float32), kp)


def by_id(tracks):
    return {t.track_id: t for t in tracks}


def center(box):
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


# --------------------------------------------------------------------------------------------


def test_iou_matrix_and_box_conversions():
    a = np.array([[0, 0, 10, 10], [100, 100, 110, 120]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60]], float)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0])
    np.testing.assert_allclose(iou[1], [0.0, 0.0, 0.0])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)
    xyah = xyxy_to_xyah(a)
    np.testing.assert_allclose(xyah[1], [105, 110, 0.5, 20])
    np.testing.assert_allclose(xyah_to_xyxy(xyah), a)


def test_kalman_learns_constant_velocity_and_predicts_it():
    kf = KalmanBoxFilter()
    mean, cov = kf.initiate(np.array([100.0, 200.0, 0.4, 150.0]))
    mean, cov = mean[None], cov[None]
    for f in range(1, 30):
        mean, cov = kf.predict(mean, cov)
        mean, cov = kf.update(mean, cov, np.array([[100.0 + 5 * f, 200.0 - 2 * f, 0.4, 150.0]]))
    np.testing.assert_allclose(mean[0, 4:6], [5, -2], atol=0.05)
    for _ in range(10):
        mean, cov = kf.predict(mean, cov)
    np.testing.assert_allclose(mean[0, :4], [100 + 5 * 39, 200 - 2 * 39, 0.4, 150], atol=1.0)


def test_lost_track_box_keeps_moving_with_its_velocity():
    tr = ByteTracker(max_lost=10)
    for f in range(30):
        tracks = tr.update([det(100 + 10 * f, 300)])
    (t,) = tracks
    assert t.state == CONFIRMED and t.time_since_update == 0
    last = center(t.box)
    for k in range(1, 5):
        (t,) = tr.update([])
        assert t.state == LOST and t.keypoints is None and t.detection_index is None
        assert t.time_since_update == k and t.box[4] == 0.0
        np.testing.assert_allclose(center(t.box), last + [10 * k, 0], atol=0.1 * k + 0.5)
        np.testing.assert_allclose(t.box[3] - t.box[1], 160, atol=1.0)  # size kept


def test_identity_kept_through_crossing_and_short_occlusion():
    """A walks right, B walks left; they cross, and B is hidden behind A for 4 frames."""
    tr = ByteTracker()
    seen: dict[str, set[int]] = {"A": set(), "B": set()}
    hidden = range(14, 18)
    for f in range(32):
        dets = [det(100 + 12 * f, 300, tag=1.0)]
        if f not in hidden:
            dets.append(det(480 - 12 * f, 320, w=64, h=170, tag=2.0))
        for t in tr.update(dets):
            if t.state == CONFIRMED and t.keypoints is not None:
                seen["A" if t.keypoints[0, 0] == 1.0 else "B"].add(t.track_id)
            if f in hidden and t.state == LOST:
                assert t.track_id in seen["B"]
    assert len(seen["A"]) == 1 and len(seen["B"]) == 1, seen
    assert seen["A"] != seen["B"]
    # B came back nearby and was re-activated: same id, confirmed, still two tracks in all
    assert {t.track_id for t in tr.tracks()} == seen["A"] | seen["B"]
    assert all(t.state == CONFIRMED for t in tr.tracks())


def test_low_score_detections_keep_a_track_alive():
    """ByteTrack's second association: a partly occluded person detected at 0.3 keeps the track."""
    def run(tracker):
        states = []
        for f in range(6):
            tracker.update([det(100 + 5 * f, 300, score=0.9)])
        for f in range(6, 12):
            (t,) = tracker.update([det(100 + 5 * f, 300, score=0.3, tag=float(f))])
            states.append((t.state, t.track_id, t.keypoints))
        return states

    states = run(ByteTracker())
    assert all(s == CONFIRMED and tid == 1 for s, tid, _ in states)
    assert states[-1][2] is not None and states[-1][2][0, 0] == 11.0  # the low-score skeleton
    # with the low-score stage effectively off (0.3 below low_thresh) the track is lost
    states = run(ByteTracker(low_thresh=0.4))
    assert all(s == LOST and tid == 1 and kp is None for s, tid, kp in states)


def test_low_score_detections_never_start_or_revive_a_track():
    tr = ByteTracker(min_hits=1)
    assert tr.update([det(100, 300, score=0.3)]) == []
    assert tr.update([det(100, 300, score=0.55)]) == []  # high, but below new_track_thresh 0.6
    (t,) = tr.update([det(100, 300, score=0.9)])
    assert t.track_id == 1
    (t,) = tr.update([])
    assert t.state == LOST
    (t,) = tr.update([det(100, 300, score=0.3)])
    assert t.state == LOST  # lost tracks only come back with a high-score detection
    (t,) = tr.update([det(100, 300, score=0.8)])
    assert t.state == CONFIRMED and t.track_id == 1


def test_far_away_detection_gets_a_new_id():
    tr = ByteTracker()
    for f in range(5):
        tr.update([det(100 + 4 * f, 300)])
    tracks = by_id(tr.update([det(900, 300)]))
    assert set(tracks) == {1, 2}
    assert tracks[1].state == LOST
    assert tracks[2].state == TENTATIVE and tracks[2].age == 0 and tracks[2].hits == 1
    tracks = by_id(tr.update([det(902, 300)]))
    assert tracks[2].state == CONFIRMED and tracks[2].hits == 2


def test_tentative_track_that_misses_a_frame_dies_and_min_hits_1_confirms_at_birth():
    tr = ByteTracker(min_hits=3)
    assert [t.state for t in tr.update([det(100, 300)])] == [TENTATIVE]
    assert [t.state for t in tr.update([det(101, 300)])] == [TENTATIVE]
    assert tr.update([]) == []  # died unconfirmed
    (t,) = tr.update([det(100, 300)])
    assert t.track_id == 2  # ids are given at birth and never reused
    tr = ByteTracker(min_hits=1)
    (t,) = tr.update([det(100, 300)])
    assert t.state == CONFIRMED and t.track_id == 1


def test_tracks_die_after_max_lost_frames():
    tr = ByteTracker(max_lost=3, min_hits=1)
    tr.update([det(100, 300)])
    for k in range(1, 4):
        (t,) = tr.update([])
        assert t.state == LOST and t.time_since_update == k
    assert tr.update([]) == []
    (t,) = tr.update([det(100, 300)])
    assert t.track_id == 2  # gone for good: a new id


def test_lost_time_counts_seconds_and_frame_index_gaps():
    tr = ByteTracker(fps=10, max_lost_s=0.5, min_hits=1)
    assert tr.max_lost == 5
    assert ByteTracker().max_lost == 30 and ByteTracker(fps=60).max_lost == 60
    tr.update([det(100, 300)], frame_index=100)
    (t,) = tr.update([], frame_index=105)  # 5 frames lost: kept
    assert t.state == LOST and t.time_since_update == 5 and t.frame_index == 105
    assert tr.update([], frame_index=106) == []
    # a gap the Kalman filter predicts across: a moving box is found again after 3 dropped frames
    tr = ByteTracker(min_hits=1)
    for f in range(10):
        tr.update([det(100 + 20 * f, 300)], frame_index=f)
    (t,) = tr.update([det(100 + 20 * 13, 300)], frame_index=13)
    assert t.track_id == 1 and t.state == CONFIRMED and t.time_since_update == 0


def test_ids_are_deterministic_per_instance_and_reset_starts_over():
    rng = np.random.default_rng(0)
    frames = [[det(c + 6 * f + rng.normal(), 200 + 30 * i, score=float(s))
               for i, (c, s) in enumerate(zip((100, 400, 700), rng.uniform(0.2, 1.0, 3)))]
              for f in range(40)]

    def run(tracker):
        return [[(t.track_id, t.state, t.box.tobytes()) for t in tracker.update(fr)] for fr in frames]

    a, b = ByteTracker(), ByteTracker()
    first = run(a)
    assert run(b) == first
    a.reset()
    assert a.frame_index is None
    assert run(a) == first
    # two instances are independent: interleaving streams changes nothing
    c, d = ByteTracker(), ByteTracker()
    out_c = []
    for fr in frames:
        out_c.append([(t.track_id, t.state, t.box.tobytes()) for t in c.update(fr)])
        d.update([det(50, 50)])
    assert out_c == first


def test_track_carries_the_matched_detection():
    tr = ByteTracker(min_hits=1)
    dets = [det(500, 300, tag=0.5), det(100, 300, tag=0.25)]
    tracks = tr.update(dets)
    assert [t.track_id for t in tracks] == [1, 2]
    for t in tracks:
        d = dets[t.detection_index]
        np.testing.assert_array_equal(t.box, d.box)
        np.testing.assert_array_equal(t.keypoints, d.keypoints)
        assert t.box.dtype == np.float32 and t.keypoints.dtype == np.float32
        assert t.is_observed
    # snapshots are copies: changing one does not touch the tracker
    tracks[0].box[:] = 0
    assert tr.tracks()[0].box[0] == dets[0].box[0]
    # detections without keypoints (boxes only) and plain arrays work too
    arr = np.array([[470, 220, 530, 380, 0.9], [70, 220, 130, 380, 0.9]], np.float32)
    tracks = tr.update(arr)
    assert [t.track_id for t in tracks] == [1, 2]
    assert all(t.keypoints is None and t.is_observed for t in tracks)


def test_bad_input_is_refused_clearly():
    tr = ByteTracker()
    tr.update([], frame_index=5)
    with pytest.raises(ValueError, match="frame_index must increase"):
        tr.update([], frame_index=5)
    with pytest.raises(ValueError, match="detection 0: box must have 5 values"):
        tr.update([Det(np.zeros(4))])
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        tr.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="fps"):
        ByteTracker(fps=0)
    with pytest.raises(ValueError, match="min_hits"):
        ByteTracker(min_hits=0)
