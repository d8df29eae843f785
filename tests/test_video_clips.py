"""Clips from real (small, generated) video files with a scripted pose estimator."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from posestream.realtime.tracker import ByteTracker
from posestream.realtime.video_clips import (
    NoClipsError,
    VideoError,
    draw_tracks,
    extract_clips,
    overlay_paths,
)
from posestream.train.data.clips import load_dataset, save_dataset

W, H, FPS = 160, 120, 10.0
RED, GREEN = (0, 0, 255), (0, 255, 0)


@dataclass
class Pose:
    box: np.ndarray
    keypoints: np.ndarray


def write_video(path, frames=20, green_from=None):
    """A red 30x70 rectangle walking right 4 px a frame; from ``green_from`` on, a green one
    standing still on the far right."""
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    assert out.isOpened()
    for f in range(frames):
        img = np.zeros((H, W, 3), np.uint8)
        cv2.rectangle(img, (10 + 4 * f, 30), (40 + 4 * f, 100), RED, -1)
        if green_from is not None and f >= green_from:
            cv2.rectangle(img, (125, 20), (150, 90), GREEN, -1)
        out.write(img)
    out.release()
    return path


class ColourEstimator:
    """Finds the red and green rectangles in the decoded frame and returns one PersonPose
    each, keypoints spread over the box (x, y, score = 0.9). ``skip`` holds frame numbers in
    which the red person is "not detected"."""

    def __init__(self, skip=()):
        self.skip = set(skip)
        self.frame = -1

    def __call__(self, frame):
        assert frame.dtype == np.uint8 and frame.shape == (H, W, 3)
        self.frame += 1
        people = []
        b, g, r = (frame[..., i].astype(int) for i in range(3))
        for name, mask in (("red", (r > 128) & (g < 100) & (b < 100)),
                           ("green", (g > 128) & (r < 100) & (b < 100))):
            if name == "red" and self.frame in self.skip:
                continue
            ys, xs = np.nonzero(mask)
            if len(xs) < 50:
                continue
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            kx = np.linspace(x1, x2, 17, dtype=np.float32)
            ky = np.linspace(y1, y2, 17, dtype=np.float32)
            kp = np.stack([kx, ky, np.full(17, 0.9, np.float32)], axis=1)
            people.append(Pose(np.array([x1, y1, x2, y2, 0.95], np.float32), kp))
        return people


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    n, shape = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n, shape = n + 1, frame.shape
    cap.release()
    return n, shape


# --------------------------------------------------------------------------------------------


def test_one_person_one_clip_in_pyskl_format(tmp_path):
    video = write_video(tmp_path / "walk.mp4")
    data = extract_clips([video], ColourEstimator(), min_frames=5, progress=False)
    assert data["split"] == {"all": ["walk_track1"]}
    (clip,) = data["annotations"]
    assert clip["frame_dir"] == "walk_track1"
    assert clip["keypoint"].shape == (1, 20, 17, 2) and clip["keypoint"].dtype == np.float32
    assert clip["keypoint_score"].shape == (1, 20, 17)
    assert clip["total_frames"] == 20 and clip["label"] == 0
    assert clip["img_shape"] == (H, W) and clip["original_shape"] == (H, W)
    assert clip["start_frame"] == 0 and clip["track_id"] == 1 and clip["video"] == str(video)
    # the skeleton follows the rectangle: left edge at 10 + 4 f (give or take the codec)
    np.testing.assert_allclose(clip["keypoint"][0, :, 0, 0], 10 + 4 * np.arange(20), atol=2)
    np.testing.assert_allclose(clip["keypoint_score"], 0.9)
    (summary,) = data["videos"]
    assert summary["frames"] == 20 and summary["fps"] == pytest.approx(FPS)
    assert summary["clips"] == 1 and summary["overlay"] is None
    # it saves and loads as a dataset file
    save_dataset(tmp_path / "clips.pkl", data)
    loaded = load_dataset(tmp_path / "clips.pkl")
    assert loaded.clips("all")[0]["frame_dir"] == "walk_track1"


def test_lost_frames_are_zeros_inside_one_clip(tmp_path):
    video = write_video(tmp_path / "walk.mp4")
    data = extract_clips(video, ColourEstimator(skip={8, 9, 10}), min_frames=5, progress=False)
    (clip,) = data["annotations"]  # same track across the gap
    assert clip["total_frames"] == 20
    assert np.all(clip["keypoint"][0, 8:11] == 0) and np.all(clip["keypoint_score"][0, 8:11] == 0)
    assert np.all(clip["keypoint_score"][0, :8] > 0) and np.all(clip["keypoint_score"][0, 11:] > 0)


def test_box_without_a_skeleton_counts_as_missing(tmp_path):
    video = write_video(tmp_path / "walk.mp4")

    class BoxOnly(ColourEstimator):  # like a pose engine whose landmark model gave up
        def __call__(self, frame):
            people = super().__call__(frame)
            if self.frame in (5, 6):
                for p in people:
                    p.keypoints[:, 2] = 0
            return people

    (clip,) = extract_clips(video, BoxOnly(), min_frames=5, progress=False)["annotations"]
    assert clip["total_frames"] == 20
    assert np.all(clip["keypoint"][0, 5:7] == 0) and np.all(clip["keypoint_score"][0, 5:7] == 0)
    assert np.all(clip["keypoint_score"][0, 7:] > 0)
    with pytest.raises(NoClipsError, match=r"longest: 18"):
        extract_clips(video, BoxOnly(), min_frames=19, progress=False)


def test_two_people_two_clips_each_over_its_own_frames(tmp_path):
    video = write_video(tmp_path / "pair.mp4", green_from=10)
    data = extract_clips([video], ColourEstimator(), min_frames=5, label=3, progress=False)
    by_dir = {c["frame_dir"]: c for c in data["annotations"]}
    assert sorted(by_dir) == ["pair_track1", "pair_track2"]
    red, green = by_dir["pair_track1"], by_dir["pair_track2"]
    assert red["total_frames"] == 20 and red["start_frame"] == 0
    assert green["total_frames"] == 10 and green["start_frame"] == 10
    assert green["keypoint"].shape == (1, 10, 17, 2)
    assert green["keypoint"][0, :, 0, 0].min() > 120  # the green person, on the right
    assert red["label"] == green["label"] == 3


def test_min_frames_drops_short_tracks(tmp_path):
    video = write_video(tmp_path / "pair.mp4", green_from=10)
    data = extract_clips([video], ColourEstimator(), min_frames=12, progress=False)
    assert [c["frame_dir"] for c in data["annotations"]] == ["pair_track1"]
    assert data["videos"][0]["tracks"] == 2 and data["videos"][0]["clips"] == 1
    with pytest.raises(NoClipsError, match=r"at least 21 detected frames \(longest: 20\)"):
        extract_clips([video], ColourEstimator(), min_frames=21, progress=False)


def test_max_frames_and_the_tracker_factory_gets_the_fps(tmp_path):
    video = write_video(tmp_path / "walk.mp4")
    seen = []

    def factory(fps=None):
        seen.append(fps)
        return ByteTracker(fps=fps, min_hits=1)

    data = extract_clips([video], ColourEstimator(), min_frames=1, max_frames=5,
                         tracker_factory=factory, progress=False)
    assert seen == [pytest.approx(FPS)]
    assert data["annotations"][0]["total_frames"] == 5 and data["videos"][0]["frames"] == 5


def test_same_stem_in_two_folders_gives_unique_frame_dirs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    videos = [write_video(tmp_path / "a" / "cam.mp4"), write_video(tmp_path / "b" / "cam.mp4")]
    data = extract_clips(videos, ColourEstimator(), min_frames=5, progress=False)
    assert data["split"]["all"] == ["cam_track1", "cam_2_track1"]


def test_bad_videos_give_one_line_errors_naming_the_file(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoError, match=r"missing\.mp4: no such file"):
        extract_clips([missing], ColourEstimator(), progress=False)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VideoError, match=r"notes\.mp4: cannot open") as err:
        extract_clips([text], ColourEstimator(), progress=False)
    assert "\n" not in str(err.value)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty\.mp4: cannot open: empty file"):
        extract_clips([empty], ColourEstimator(), progress=False)
    with pytest.raises(VideoError, match="is a directory"):
        extract_clips([tmp_path], ColourEstimator(), progress=False)
    # a missing second video is reported before the first one is processed
    good = write_video(tmp_path / "walk.mp4")
    estimator = ColourEstimator()
    with pytest.raises(VideoError, match="missing.mp4"):
        extract_clips([good, missing], estimator, progress=False)
    assert estimator.frame == -1


def test_bad_arguments(tmp_path):
    video = write_video(tmp_path / "walk.mp4", frames=3)
    for label in (-1, True, 1.5):
        with pytest.raises(ValueError, match="label must be an int >= 0"):
            extract_clips([video], ColourEstimator(), label=label, progress=False)
    with pytest.raises(ValueError, match="min_frames"):
        extract_clips([video], ColourEstimator(), min_frames=0, progress=False)
    with pytest.raises(ValueError, match="no videos"):
        extract_clips([], ColourEstimator(), progress=False)


def test_overlay_video_is_written_readable_and_complete(tmp_path):
    video = write_video(tmp_path / "walk.mp4")
    out = tmp_path / "overlay.mp4"
    data = extract_clips([video], ColourEstimator(), min_frames=5, overlay=out, progress=False)
    assert data["videos"][0]["overlay"] == str(out)
    assert count_frames(out) == (20, (H, W, 3))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    # something was drawn: the overlay differs from the source video
    src, ovl = cv2.VideoCapture(str(video)), cv2.VideoCapture(str(out))
    for _ in range(5):
        a, b = src.read()[1], ovl.read()[1]
    src.release()
    ovl.release()
    assert np.abs(a.astype(int) - b.astype(int)).max() > 100


def test_overlay_for_several_videos_and_its_names(tmp_path):
    videos = [write_video(tmp_path / "one.mp4", frames=8), write_video(tmp_path / "two.mp4", frames=6)]
    out = tmp_path / "ov.mp4"
    assert overlay_paths(out, videos) == [tmp_path / "ov_one.mp4", tmp_path / "ov_two.mp4"]
    assert overlay_paths(out, videos[:1]) == [out]
    extract_clips(videos, ColourEstimator(), min_frames=3, overlay=out, progress=False)
    assert count_frames(tmp_path / "ov_one.mp4")[0] == 8
    assert count_frames(tmp_path / "ov_two.mp4")[0] == 6
    assert not out.exists()


def test_failed_run_leaves_no_overlay_behind(tmp_path):
    video = write_video(tmp_path / "walk.mp4")
    out = tmp_path / "overlay.mp4"

    class Broken(ColourEstimator):
        def __call__(self, frame):
            if self.frame == 4:
                raise RuntimeError("model crashed")
            return super().__call__(frame)

    with pytest.raises(RuntimeError, match="model crashed"):
        extract_clips([video], Broken(), overlay=out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.mp4"]


def test_draw_tracks_draws_boxes_and_skeletons():
    tracker = ByteTracker(min_hits=1)
    kp = np.stack([np.linspace(20, 60, 17), np.linspace(20, 100, 17), np.full(17, 0.9)], 1)
    tracks = tracker.update([Pose(np.array([20, 20, 60, 100, 0.9], np.float32), kp.astype(np.float32))])
    img = draw_tracks(np.zeros((H, W, 3), np.uint8), tracks)
    assert img[20, 20:61].any() and img.sum() > 0
    lost = tracker.update([])  # a lost track is a thin grey box, no skeleton
    img = draw_tracks(np.zeros((H, W, 3), np.uint8), lost)
    assert set(np.unique(img)) <= {0, 128}
