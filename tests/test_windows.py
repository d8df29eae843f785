"""Track histories and windows (posestream.realtime.windows) and the shared clip geometry
(posestream.engines.crop): a window must be exactly what the validation pipeline makes of a
clip of the same frames."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.engines.crop import compact_box, uniform_sample_indices, window_to_grid
from posestream.realtime.tracker import CONFIRMED, LOST, TENTATIVE, Track
from posestream.realtime.windows import (
    StreamTracks,
    TrackHistory,
    history_capacity,
    sample_scene_window,
    sample_track_window,
)
from posestream.train import transforms as T
from posestream.train.data.synthetic import generate_clip

CLIP_LEN, SIZE = 32, 48


def val_until_resize(clip_len=CLIP_LEN, size=SIZE):
    """The deterministic validation pipeline up to (and including) Resize."""
    return T.Compose([T.UniformSampleFrames(clip_len, num_clips=1, test_mode=True), T.PoseDecode(),
                      T.PoseCompact(hw_ratio=1.0, allow_imgpad=True), T.Resize((size, size), keep_ratio=False)])


def track(track_id, frame, keypoints, state=CONFIRMED, box=(10, 20, 110, 220, 0.9)):
    """A tracker snapshot: observed when it has keypoints, else lost."""
    observed = keypoints is not None and state != LOST
    return Track(track_id=track_id, box=np.asarray(box, np.float32), keypoints=keypoints,
                 state=state if observed or state == TENTATIVE else LOST, age=frame, hits=frame,
                 time_since_update=0 if observed else 1, frame_index=frame, detection_index=0 if observed else None)


def skeleton(clip, person, frame):
    """Frame ``frame`` of person ``person`` of a PYSKL clip as [17, 3], None if missing."""
    score = clip["keypoint_score"][person, frame]
    if not score.any():
        return None
    return np.concatenate([clip["keypoint"][person, frame], score[:, None]], axis=1)


def feed(clip, fps=None, stream="cam0", persons=None, **kwargs):
    """Play a clip into a StreamTracks, person m as track m + 1; returns it and the frame times."""
    fps = fps or clip.get("fps", 25)
    tracks = StreamTracks(stream, **kwargs)
    times = np.arange(clip["total_frames"]) / fps
    persons = range(clip["keypoint"].shape[0]) if persons is None else persons
    for f, t in enumerate(times):
        tracks.update([track(m + 1, f, skeleton(clip, m, f)) for m in persons], f, t, img_shape=clip["img_shape"])
    return tracks, times


def trimmed(clip, person=0):
    """The clip of one person from its first to its last observed frame (what a track records)."""
    seen = np.flatnonzero(clip["keypoint_score"][person].any(axis=-1))
    first, last = seen[0], seen[-1] + 1
    return dict(clip, keypoint=clip["keypoint"][person:person + 1, first:last],
                keypoint_score=clip["keypoint_score"][person:person + 1, first:last], total_frames=last - first)


def assert_same(sample, reference):
    np.testing.assert_allclose(sample.keypoint, reference["keypoint"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(sample.score, reference["keypoint_score"], rtol=0, atol=1e-6)
    assert sample.keypoint.dtype == np.float32 and sample.score.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# engines.crop: the shared geometry


@pytest.mark.parametrize("num_frames, clip_len, num_clips", [(100, 48, 1), (60, 48, 1), (20, 8, 2), (5, 8, 10),
                                                             (90, 32, 1), (31, 32, 1), (1, 32, 1)])
def test_uniform_sample_indices_are_the_test_mode_sampler(num_frames, clip_len, num_clips):
    inds = uniform_sample_indices(num_frames, clip_len, num_clips)
    expected = T.UniformSampleFrames(clip_len, num_clips, test_mode=True)({"total_frames": num_frames})["frame_inds"]
    np.testing.assert_array_equal(inds, expected)
    assert inds.dtype == np.int64 and not inds.flags.writeable  # shared from the cache
    assert uniform_sample_indices(num_frames, clip_len, num_clips) is inds


def test_uniform_sample_indices_leave_global_rng_alone():
    np.random.seed(7)
    state = np.random.get_state()
    uniform_sample_indices(123, 17, seed=3)
    assert np.array_equal(np.random.get_state()[1], state[1])
    with pytest.raises(ValueError):
        uniform_sample_indices(0, 32)


def random_clip(persons=2, frames=40, seed=0, img_shape=(480, 640), spread=80.0):
    rng = np.random.default_rng(seed)
    kp = (rng.uniform(150, 350, (persons, 1, 1, 2)) + rng.normal(0, spread, (persons, frames, 17, 2))).astype(np.float32)
    score = rng.uniform(0.1, 1, (persons, frames, 17)).astype(np.float32)
    kp[rng.random((persons, frames)) < 0.15] = 0  # missing person-frames
    kp[0, 3, 4, 0] = 0                          # a single missing x (its y stays)
    kp[0, 5, 6] = np.nan
    return dict(keypoint=kp, keypoint_score=score, img_shape=img_shape, total_frames=frames)


@pytest.mark.parametrize("spread", [80.0, 0.5])  # ~3 px wide: below PoseCompact's threshold, no crop
@pytest.mark.parametrize("size", [48, 64])
def test_window_to_grid_is_posecompact_then_resize(spread, size):
    clip = random_clip(persons=2 if spread > 10 else 1, spread=spread)
    steps = T.Compose([T.PoseCompact(hw_ratio=1.0, allow_imgpad=True), T.Resize((size, size), keep_ratio=False)])
    expected = steps(clip)
    kp, score = window_to_grid(clip["keypoint"], clip["keypoint_score"], size, img_shape=clip["img_shape"])
    np.testing.assert_array_equal(kp, expected["keypoint"])
    np.testing.assert_array_equal(score, clip["keypoint_score"])
    assert (compact_box(clip["keypoint"], hw_ratio=1.0) is None) == (spread < 10)
    assert np.isnan(clip["keypoint"]).any()  # the input is untouched


# ---------------------------------------------------------------------------------------------
# Parity with the validation pipeline


@pytest.mark.parametrize("action, seed", [("walking", 0), ("falling", 1), ("sitting_down", 2), ("lying", 3),
                                          ("running", 13)])
@pytest.mark.parametrize("clip_len, size", [(32, 48), (48, 64)])
def test_track_window_over_a_whole_clip_is_the_val_pipeline(action, seed, clip_len, size):
    clip = generate_clip(action, rng=seed, camera_kind="level")  # a person in view throughout
    tracks, times = feed(clip, persons=[0])
    sample = sample_track_window(tracks.history(1), times[-1], times[-1] + 1.0, clip_len, size, min_frames=1)
    reference = val_until_resize(clip_len, size)(trimmed(clip))
    assert_same(sample, reference)
    assert sample.keypoint.shape == (1, clip_len, 17, 2) and sample.track_ids == (1,)
    assert sample.num_frames == reference["total_frames"] and sample.size == size
    assert sample.img_shape == clip["img_shape"] and sample.stream == "cam0"


def test_track_window_with_missing_frames_is_the_val_pipeline():
    # noise-free: the person is seen in every frame but those made missing here
    clip = generate_clip("walking", rng=5, fps=15, duration=4.0, noise=False)
    score = clip["keypoint_score"]
    score[0, [0, 1, 7, 8, 9, 20, 41, 58, 59]] = 0  # lost at both ends and in between
    clip["keypoint"][0, [0, 1, 7, 8, 9, 20, 41, 58, 59]] = 0
    clip["keypoint"][0, 12, 3] = 0                  # one missing joint
    clip["keypoint_score"][0, 12, 3] = 0
    tracks, times = feed(clip, persons=[0])
    history = tracks.history(1)
    assert len(history) == 60 - 2  # the history starts at the first observed frame
    sample = sample_track_window(history, times[-1], 10.0, CLIP_LEN, SIZE, min_frames=1)
    reference = val_until_resize()(trimmed(clip))
    assert reference["total_frames"] == 56 and sample.num_frames == 56 and sample.num_observed == 56 - 5
    assert (sample.first_frame, sample.last_frame) == (2, 57)
    assert sample.t_last_capture == pytest.approx(times[57])
    assert_same(sample, reference)


def test_short_window_loops_like_a_short_clip():
    clip = generate_clip("waving", rng=4, fps=10, duration=2.0)  # 20 frames < clip_len
    tracks, times = feed(clip, persons=[0])
    sample = sample_track_window(tracks.history(1), times[-1], 5.0, CLIP_LEN, SIZE, min_frames=1)
    assert_same(sample, val_until_resize()(trimmed(clip)))


def test_scene_window_is_the_val_pipeline_of_the_two_person_clip():
    # noise-free: every frame has both persons, so only the gaps made below decide the order
    clip = generate_clip("walking", rng=11, bystander=True, fps=20, duration=3.0, noise=False)
    assert clip["keypoint"].shape[0] == 2
    # make the bystander (person 1) the most observed one, so it comes first
    clip["keypoint_score"][0, 25:35] = 0
    clip["keypoint"][0, 25:35] = 0
    clip["keypoint_score"][1, :5] = 0
    clip["keypoint"][1, :5] = 0
    tracks, times = feed(clip)
    sample = sample_scene_window(tracks, times[-1], 10.0, CLIP_LEN, SIZE, min_frames=1)
    assert sample.track_ids == (2, 1)  # most observed first
    reordered = dict(clip, keypoint=clip["keypoint"][::-1], keypoint_score=clip["keypoint_score"][::-1])
    reference = val_until_resize()(reordered)
    assert sample.keypoint.shape == (2, CLIP_LEN, 17, 2) and sample.score.shape == (2, CLIP_LEN, 17)
    assert sample.num_frames == clip["total_frames"]
    assert_same(sample, reference)


def test_scene_window_takes_the_most_observed_persons_and_a_common_box():
    rng = np.random.default_rng(0)
    tracks = StreamTracks("cam1", img_shape=(480, 640))
    centres = {1: (100, 100), 2: (500, 300), 3: (300, 200)}
    for f in range(30):
        people = []
        for tid, (cx, cy) in centres.items():
            seen = not (tid == 3 and f % 2) and not (tid == 1 and f < 5)  # 3 seen half the time, 1 from frame 5
            kp = np.concatenate([rng.normal((cx, cy), 20, (17, 2)), np.full((17, 1), 0.9)], 1).astype(np.float32)
            people.append(track(tid, f, kp if seen else None))
        tracks.update(people, f, f / 30)
    sample = sample_scene_window(tracks, 29 / 30, 2.0, 16, 56, max_persons=2, min_frames=4)
    assert sample.track_ids == (2, 1) and sample.keypoint.shape == (2, 16, 17, 2)
    # person 1 is missing in the first sampled frames: zeros there, like PYSKL's missing person
    assert not sample.score[1, 0].any() and not sample.keypoint[1, 0].any()
    # one common box: person 1 (top left) and person 2 (bottom right) at opposite corners
    seen = sample.score > 0
    assert sample.keypoint[0][seen[0]].min() > 28 and sample.keypoint[1][seen[1]].max() < 28
    assert sample.keypoint[seen].min() >= 0 and sample.keypoint[seen].max() <= 56
    three = sample_scene_window(tracks, 29 / 30, 2.0, 16, 56, max_persons=3, min_frames=4)
    assert three.track_ids == (2, 1, 3)
    assert sample_scene_window(tracks, 29 / 30, 2.0, 16, 56, min_frames=31) is None


# ---------------------------------------------------------------------------------------------
# Timing, ring buffer, lifetime


def kp_at(x, score=0.9):
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0] = x + np.arange(17) * 3.0
    kp[:, 1] = 100 + np.arange(17) * 10.0
    kp[:, 2] = score
    return kp


def test_window_is_cut_by_capture_time():
    history = TrackHistory(100, img_shape=(480, 640), track_id=7, stream="s")
    # irregular capture times (a jittery camera), one frame lost
    times = [0.0, 0.1, 0.15, 0.4, 0.45, 0.9, 1.0, 1.3, 1.31, 1.7]
    for f, t in enumerate(times):
        history.append(f * 2, t, None if f == 6 else kp_at(100 + f), np.array([0, 0, 10, 10, 1.0]))
    sample = sample_track_window(history, now=1.35, window_s=1.0, clip_len=8, size=32, min_frames=1)
    # frames with 0.35 <= t <= 1.35: indices 3..8 (frame 6 lost inside the window: kept, zeros)
    assert (sample.first_frame, sample.last_frame) == (6, 16) and sample.num_frames == 6
    assert sample.num_observed == 5 and sample.t_last_capture == 1.31 and sample.t_first_capture == 0.4
    reference = dict(keypoint=np.stack([kp_at(100 + f)[:, :2] * (f != 6) for f in range(3, 9)])[None],
                     keypoint_score=np.stack([kp_at(100 + f)[:, 2] * (f != 6) for f in range(3, 9)])[None],
                     img_shape=(480, 640), total_frames=6)
    assert_same(sample, val_until_resize(8, 32)(reference))
    assert sample_track_window(history, now=1.35, window_s=1.0, clip_len=8, size=32, min_frames=6) is None
    # a window ending on a lost frame ends at the last observed one
    late = sample_track_window(history, now=1.05, window_s=0.2, clip_len=8, size=32, min_frames=1)
    assert (late.first_frame, late.last_frame, late.num_frames) == (10, 10, 1)
    assert sample_track_window(history, now=1.05, window_s=0.1, clip_len=8, size=32, min_frames=1) is None


def test_ring_buffer_is_bounded_and_wraps():
    history = TrackHistory(10, img_shape=(480, 640))
    arrays = (history.keypoints, history.frame_index, history.t_capture)
    for f in range(25):
        history.append(f, f * 0.1, kp_at(float(f + 1)))
    assert len(history) == 10 and history.capacity == 10
    assert all(a is b for a, b in zip(arrays, (history.keypoints, history.frame_index, history.t_capture)))
    order = history.order()
    np.testing.assert_array_equal(history.frame_index[order], np.arange(15, 25))
    assert history.span_s == pytest.approx(0.9) and history.last_frame == 24
    keypoints, _ = history.latest()
    assert keypoints[0, 0] == 25.0
    sample = sample_track_window(history, now=2.5, window_s=100.0, clip_len=4, size=32, min_frames=1)
    assert (sample.first_frame, sample.last_frame, sample.num_frames) == (15, 24, 10)
    with pytest.raises(ValueError, match="must increase"):
        history.append(24, 2.5, kp_at(1.0))


def test_stream_tracks_capacity_bounds_every_history():
    tracks = StreamTracks(history_s=1.0, max_fps=10.0, img_shape=(480, 640))
    assert tracks.capacity == history_capacity(1.0, 10.0) == 11
    for f in range(200):  # 100 fps, far above max_fps: the history covers less time, no more memory
        tracks.update([track(1, f, kp_at(100.0))], f, f / 100)
    history = tracks.history(1)
    assert len(history) == 11 and history.keypoints.shape == (11, 17, 3)
    assert len(tracks.timeline()[0]) == 11


def test_stream_tracks_records_confirmed_tracks_and_missing_frames():
    tracks = StreamTracks("cam0", img_shape=(480, 640))
    blank = kp_at(50.0, score=0.0)  # a box the pose model found no skeleton in
    script = [
        [track(1, 0, kp_at(10.0), state=TENTATIVE)],      # not yet a person: not kept
        [track(1, 1, None)],                               # lost before ever being kept: nothing
        [track(1, 2, kp_at(12.0)), track(2, 2, blank)],    # 1 starts; 2 has no skeleton: not started
        [track(1, 3, None), track(2, 3, kp_at(30.0))],     # 1 lost: a zero row; 2 starts
        [track(1, 4, blank), track(2, 4, kp_at(31.0))],    # 1 matched without a skeleton: a zero row
        [track(1, 5, kp_at(15.0))],
    ]
    for f, people in enumerate(script):
        dropped = tracks.update(people, f, f * 0.1)
        assert dropped == []
    assert tracks.active_ids() == [1, 2] and 1 in tracks and len(tracks) == 2
    one = tracks.history(1)
    order = one.order()
    np.testing.assert_array_equal(one.frame_index[order], [2, 3, 4, 5])
    np.testing.assert_array_equal(one.observed[order], [True, False, False, True])
    assert not one.keypoints[order[1:3]].any()
    assert one.box[order[1]].tolist() == pytest.approx([10, 20, 110, 220, 0.9])
    assert one.last_seen == pytest.approx(0.5) and tracks.history(2).last_seen == pytest.approx(0.4)
    assert tracks.active_ids(since=0.45) == [1]
    assert tracks.history(99) is None


def test_tracks_are_dropped_after_keep_s():
    tracks = StreamTracks(keep_s=2.0, img_shape=(480, 640))
    tracks.update([track(1, 0, kp_at(10.0)), track(2, 0, kp_at(50.0))], 0, 0.0)
    t, f = 0.0, 0
    dropped_at = {}
    while t < 5.0:
        f += 1
        t = f * 0.25
        people = [track(2, f, kp_at(50.0))]
        if t <= 1.0:
            people.append(track(1, f, None))  # the tracker still reports 1 as lost for a while
        for k in tracks.update(people, f, t):
            dropped_at[k] = t
    assert dropped_at == {1: 2.25}  # last seen at 0.0, more than 2 s later
    assert tracks.active_ids() == [2] and tracks.dropped_total == 1


def test_stream_tracks_keep_at_most_max_tracks():
    tracks = StreamTracks(max_tracks=3, img_shape=(480, 640))
    for f in range(6):
        tracks.update([track(f + 1, f, kp_at(10.0 * f))], f, f * 0.01)
    assert tracks.active_ids() == [4, 5, 6]


def test_frames_must_move_forward():
    tracks = StreamTracks(img_shape=(480, 640))
    tracks.update([], 5, 0.0)
    with pytest.raises(ValueError, match="frame_index must increase"):
        tracks.update([], 5, 0.1)


def test_tiny_skeleton_needs_the_image_shape():
    history = TrackHistory(50)  # no img_shape: a skeleton under 10 px cannot be mapped exactly
    for f in range(10):
        kp = kp_at(100.0)
        kp[:, :2] = [100 + f * 0.1, 200]
        history.append(f, f * 0.1, kp)
    assert sample_track_window(history, 1.0, 2.0, 8, 32, min_frames=1) is None
    history.img_shape = (480, 640)
    sample = sample_track_window(history, 1.0, 2.0, 8, 32, min_frames=1)
    clip = dict(keypoint=history.keypoints[:10, :, :2][None], keypoint_score=history.keypoints[:10, :, 2][None],
                img_shape=(480, 640), total_frames=10)
    assert_same(sample, val_until_resize(8, 32)(clip))
