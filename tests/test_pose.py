"""Pose front ends (posestream.engines.pose): the shipped ONNX models on real footage, the
BlazePose -> COCO mapping, de-duplication, the MoveNet fallback, and the bring-your-own RTM
path with tiny generated ONNX models; pre/post-processing against hand-computed numbers.

Real footage comes from tests/get_media.sh (OpenCV's sample data); CI runs it first, so a
missing file is a failure, not a skip.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a dependency of the pose front end")
pytest.importorskip("onnxruntime", reason="onnxruntime is a dependency of the pose front end")

from posestream.engines import pose as P  # noqa: E402
from posestream.skeleton import KEYPOINT_NAMES  # noqa: E402

MEDIA = Path(__file__).resolve().parent / ".media"
# People a person counts in vtest.avi at these frames. MoveNet MultiPose returns at most 6.
VTEST_PEOPLE = {0: 3, 100: 7, 300: 6, 600: 6}


def media(name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run tests/get_media.sh first (it fetches OpenCV's sample footage)")
    return path


@pytest.fixture(scope="module")
def vtest_frames() -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(media("vtest.avi")))
    frames, i = {}, 0
    while len(frames) < len(VTEST_PEOPLE):
        ok, frame = cap.read()
        assert ok, f"vtest.avi ended at frame {i}"
        if i in VTEST_PEOPLE:
            frames[i] = frame
        i += 1
    cap.release()
    return frames


@pytest.fixture(scope="module")
def estimator() -> P.MoveNetBlazePose:
    return P.make_pose_estimator("default")


@pytest.fixture(scope="module")
def messi() -> np.ndarray:
    return cv2.imread(str(media("messi5.jpg")))


@pytest.fixture(scope="module")
def basketball() -> np.ndarray:
    return cv2.imread(str(media("basketball1.png")))


# ----------------------------------------------------------------------------------------------
# The shipped models


def test_shipped_models_match_the_model_card_and_run():
    card = (P.MODELS_DIR / "MODEL_CARD.md").read_text()
    conversion = json.loads((P.MODELS_DIR / "conversion.json").read_text())
    assert (P.MODELS_DIR / "LICENSE").is_file()
    for name in (P.MOVENET_FILE, P.LANDMARK_FILE):
        path = P.MODELS_DIR / name
        assert path.stat().st_size < 20 * 1024 * 1024, f"{name} must stay under 20 MB"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest in card, f"{name}: SHA-256 {digest} is not the one in MODEL_CARD.md"
        assert conversion["models"][name[:-5]]["onnx_sha256"] == digest

    movenet = P.ort_session(P.shipped_model(P.MOVENET_FILE))
    name = movenet.get_inputs()[0].name
    for h, w in ((256, 256), (288, 384), (384, 512), (480, 640)):  # the input size is dynamic
        out = movenet.run(None, {name: np.zeros((1, h, w, 3), np.uint8)})[0]
        assert out.shape == (1, 6, 56) and out.dtype == np.float32

    landmarks = P.BlazePoseLandmarks()
    outs = landmarks.session.run(None, {landmarks.input_name: np.zeros((1, 256, 256, 3), np.float32)})
    assert sorted(o.shape for o in outs) == sorted([(1, 195), (1, 1), (1, 256, 256, 1), (1, 64, 64, 39), (1, 117)])


# ----------------------------------------------------------------------------------------------
# Real footage


def test_vtest_people_counts_and_keypoints_inside_boxes(estimator, vtest_frames):
    found = {}
    inside = total = 0
    for i, frame in vtest_frames.items():
        people = estimator(frame)
        found[i] = len(people)
        assert estimator.timing.detector_ms > 0 and estimator.timing.total_ms >= estimator.timing.detector_ms
        assert len(estimator.timing.landmarks_ms) >= len(people)
        for p in people:
            assert p.box.shape == (5,) and p.keypoints.shape == (17, 3) and p.keypoints.dtype == np.float32
            assert p.source in ("blazepose", "movenet")
            x1, y1, x2, y2 = p.box[:4]
            mx, my = 0.25 * (x2 - x1), 0.25 * (y2 - y1)  # BlazePose may reach a little past MoveNet's box
            conf = p.keypoints[:, 2] >= 0.3
            kp = p.keypoints[conf]
            total += len(kp)
            inside += int(((kp[:, 0] >= x1 - mx) & (kp[:, 0] <= x2 + mx) & (kp[:, 1] >= y1 - my)
                           & (kp[:, 1] <= y2 + my)).sum())
    # Measured: 3/5/6/6. MoveNet returns at most 6 people, so frame 100's 7 can give 6 at best;
    # there two pairs walk side by side and one person is small and far. Never more people than
    # are there (no phantoms), at most one missed per frame.
    for i, n in VTEST_PEOPLE.items():
        assert min(n, 6) - 1 <= found[i] <= n, f"frame {i}: found {found[i]} people, {n} are there ({found})"
    assert sum(found.values()) >= 19, found  # of the 21 MoveNet could return
    assert total > 100 and inside / total >= 0.97, f"{inside}/{total} confident keypoints inside their boxes"


def test_single_person_photo_has_plausible_geometry(estimator, messi):
    people = estimator(messi)
    assert len(people) == 1, [p.box for p in people]
    p = people[0]
    assert p.source == "blazepose" and p.presence > 0.9
    kp = p.keypoints
    shoulders, hips, ankles = kp[[5, 6], 1].mean(), kp[[11, 12], 1].mean(), kp[[15, 16], 1].mean()
    assert kp[0, 1] < shoulders < hips < ankles  # nose above shoulders above hips above ankles
    assert kp[[5, 6, 11, 12], 2].min() > 0.5
    x1, y1, x2, y2 = p.box[:4]
    assert (y2 - y1) > 0.5 * messi.shape[0]
    assert landmarks_agree_with_coco(p)


def landmarks_agree_with_coco(p: P.PersonPose) -> bool:
    return np.allclose(p.landmarks[P.BLAZEPOSE_TO_COCO, :2], p.keypoints[:, :2])


def test_two_people_and_the_left_right_convention(estimator, basketball):
    people = estimator(basketball)
    assert len(people) == 2
    left_player = min(people, key=lambda p: p.box[0])
    # He faces the camera, so his left side is on the image's right: BlazePose's "left" is the
    # person's left, as COCO's.
    kp = left_player.keypoints
    assert kp[5, 0] > kp[6, 0] and kp[11, 0] > kp[12, 0]
    # MoveNet (COCO-trained) agrees with the mapped BlazePose keypoints on the body joints
    movenet = next(d for d in estimator.detect(basketball) if P.box_iou(d.box, left_player.box) > 0.5)
    body = [5, 6, 11, 12, 13, 14, 15, 16]
    err = np.linalg.norm(movenet.keypoints[body, :2] - kp[body, :2], axis=1)
    assert np.median(err) < 0.05 * (left_player.box[3] - left_player.box[1]), err


@pytest.mark.parametrize("rotation", [cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_90_COUNTERCLOCKWISE])
def test_lying_person_is_rotated_upright_for_blazepose(estimator, basketball, rotation):
    """A person lying on the floor (here: the photo turned 90 degrees) gets the same skeleton as
    upright: the crop is rotated so that hips->shoulders points up (without it the median error
    was ~10-75 px)."""
    h, w = basketball.shape[:2]
    upright = min(estimator(basketball), key=lambda p: p.box[0])
    turned = estimator(cv2.rotate(basketball, rotation))
    x, y = upright.keypoints[:, 0], upright.keypoints[:, 1]
    expected = np.stack([h - 1 - y, x], 1) if rotation == cv2.ROTATE_90_CLOCKWISE else np.stack([y, w - 1 - x], 1)
    errors = [np.median(np.linalg.norm(p.keypoints[:, :2] - expected, axis=1)) for p in turned]
    best = int(np.argmin(errors))
    assert turned[best].source == "blazepose"
    assert errors[best] < 8.0, errors  # pixels, on a person ~400 px tall


def test_close_up_duplicates_are_merged(messi):
    """At MoveNet input 512, the close-up gives two detections of one person (box IoU 0.47, so
    an IoU rule alone keeps both; their keypoints agree, OKS ~1): one person comes out."""
    est = P.MoveNetBlazePose(input_size=512)
    raw, s, hw = est.detector.raw(messi)
    candidates = [r for r in raw if r[55] >= est.detector.score_threshold]
    assert len(candidates) >= 2
    assert len(est.detect(messi)) == 1
    assert len(est(messi)) == 1


# ----------------------------------------------------------------------------------------------
# Mapping, de-duplication, fallback


BLAZEPOSE_NAMES = {0: "nose", 2: "left_eye", 5: "right_eye", 7: "left_ear", 8: "right_ear", 11: "left_shoulder",
                   12: "right_shoulder", 13: "left_elbow", 14: "right_elbow", 15: "left_wrist", 16: "right_wrist",
                   23: "left_hip", 24: "right_hip", 25: "left_knee", 26: "right_knee", 27: "left_ankle",
                   28: "right_ankle"}


def test_blazepose_to_coco_mapping():
    assert [BLAZEPOSE_NAMES[int(i)] for i in P.BLAZEPOSE_TO_COCO] == list(KEYPOINT_NAMES)
    lm = np.zeros((33, 5), np.float32)
    lm[:, 0] = np.arange(33)
    lm[:, 1] = 100 + np.arange(33)
    lm[:, 2] = np.arange(33) / 100
    coco = P.blazepose_to_coco(lm)
    assert coco.shape == (17, 3) and coco.dtype == np.float32
    np.testing.assert_array_equal(coco[:, 0], [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28])
    np.testing.assert_array_equal(coco[:, 1], coco[:, 0] + 100)


def _pose(box, keypoints, score=0.5):
    return P.PersonPose(np.array([*box, score], np.float32), np.asarray(keypoints, np.float32), "movenet")


def _skeleton(x0, y0, height=100.0):
    """A crude standing COCO-17 person, all keypoints confident."""
    rel = np.array([[0, 0], [-3, -3], [3, -3], [-6, -1], [6, -1], [-12, 15], [12, 15], [-15, 35], [15, 35],
                    [-16, 50], [16, 50], [-8, 55], [8, 55], [-8, 78], [8, 78], [-8, 100], [8, 100]], np.float32)
    kp = np.ones((17, 3), np.float32)
    kp[:, :2] = rel * height / 100 + [x0, y0]
    return kp


def test_dedup_merges_overlapping_poses_of_one_person_and_keeps_neighbours():
    rng = np.random.default_rng(0)
    a = _skeleton(100, 50)
    b = a.copy()
    b[:, :2] += rng.normal(0, 2, (17, 2))  # the same person, keypoints jittered by ~2 px
    first = _pose([80, 45, 125, 155], a, 0.6)
    dup = _pose([60, 30, 150, 160], b, 0.4)  # a looser box: IoU ~0.43
    assert P.box_iou(first.box, dup.box) < 0.5
    assert P.keypoint_oks(a, b, 45 * 110) > 0.9
    kept = P.dedup_people([dup, first])
    assert len(kept) == 1 and kept[0] is first  # the better score survives

    # two people shoulder to shoulder, 15 px apart: boxes overlap (IoU 0.5), keypoints do not
    c = _skeleton(115, 50)
    neighbour = _pose([95, 45, 140, 155], c, 0.5)
    assert P.box_iou(first.box, neighbour.box) == pytest.approx(0.5)
    assert P.keypoint_oks(a, c, 45 * 110) < 0.4
    assert len(P.dedup_people([first, neighbour])) == 2
    # near-identical boxes are merged whatever the keypoints say
    twin = _pose([81, 45, 125, 156], c, 0.3)
    assert len(P.dedup_people([first, twin])) == 1


def test_keypoint_oks_by_hand():
    a = np.zeros((17, 3), np.float32)
    a[:, 2] = 1
    b = a.copy()
    b[5, 0] = 10.0  # left shoulder 10 px off; sigma 0.079
    area = 100.0 * 100.0
    expected = (16 + np.exp(-100.0 / (2 * area * (2 * 0.079) ** 2))) / 17
    assert P.keypoint_oks(a, b, area) == pytest.approx(expected, rel=1e-6)
    b[:, 2] = 0  # nothing shared
    assert P.keypoint_oks(a, b, area) == 0.0


def test_fallback_to_movenet_keypoints_when_presence_is_low(vtest_frames):
    """Force the landmark model's presence below the threshold: every person MoveNet is sure of
    keeps MoveNet's own keypoints; weak candidates (which only BlazePose could confirm) go."""
    est = P.MoveNetBlazePose(landmark_presence_threshold=1.01)  # presence is at most 1
    frame = vtest_frames[600]
    candidates = est.detect(frame)
    people = est(frame)
    confident = [c for c in candidates if c.score >= est.detection_threshold]
    assert len(people) == len(confident) >= 3
    for p, c in zip(people, confident):
        assert p.source == "movenet"
        np.testing.assert_array_equal(p.keypoints, c.keypoints)
        assert 0 <= p.presence <= 1  # the landmark model ran and said so

    # the same when the presence itself is low: patch the landmark stage's decoding (the
    # network still runs, once for all people of the frame)
    est = P.MoveNetBlazePose()
    real = est.landmarks.decode

    def low_presence(lm, flag, heat, m):
        keypoints, landmarks, _, aux = real(lm, flag, heat, m)
        return keypoints, landmarks, 0.1, aux

    est.landmarks.decode = low_presence
    people = est(frame)
    assert people and all(p.source == "movenet" and p.presence == pytest.approx(0.1) for p in people)


def test_movenet_only_mode(vtest_frames):
    est = P.MoveNetBlazePose(use_landmarks=False)
    people = est(vtest_frames[0])
    assert len(people) == 3 and all(p.source == "movenet" for p in people)
    assert est.timing.landmarks_ms == []


def test_bad_input_and_names_give_one_line_errors(estimator):
    with pytest.raises(P.PoseError, match="uint8"):
        estimator(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(P.PoseError, match=r"\[H, W, 3\]"):
        estimator(np.zeros((10, 10), np.uint8))
    with pytest.raises(P.PoseError, match="unknown pose front end"):
        P.make_pose_estimator("openpose")
    with pytest.raises(P.PoseError, match="det_onnx"):
        P.make_pose_estimator("rtm")
    with pytest.raises(P.PoseError, match="no such"):
        P.RtmTopDown("/nonexistent/det.onnx", "/nonexistent/pose.onnx")
    with pytest.raises(P.PoseError, match="multiple of 32"):
        P.MoveNetBlazePose(input_size=300)


def test_mmpose_front_end_explains_what_is_missing():
    try:
        import mmpose  # noqa: F401
    except ImportError:
        with pytest.raises(P.PoseError, match="mim install"):
            P.make_pose_estimator("mmpose")
    else:  # pragma: no cover - not installed on CI
        pytest.skip("mmpose is installed here")


def test_empty_frame_finds_nobody(estimator):
    assert estimator(np.zeros((480, 640, 3), np.uint8)) == []


# ----------------------------------------------------------------------------------------------
# Geometry by hand


def test_movenet_input_shape():
    assert P.movenet_input_shape(576, 768, 384) == (288, 384)
    assert P.movenet_input_shape(480, 640, 256) == (192, 256)
    assert P.movenet_input_shape(720, 1280, 256) == (160, 256)  # 144 rounded up to 32
    assert P.movenet_input_shape(1280, 720, 256) == (256, 160)  # portrait
    assert P.movenet_input_shape(100, 100, (256, 320)) == (256, 320)


def test_movenet_decode_maps_back_to_pixels():
    est = P.MoveNetDetector(input_size=(192, 256))
    raw = np.zeros((6, 56), np.float32)
    raw[0, :51].reshape(17, 3)[:] = [0.5, 0.25, 0.9]  # y, x, score
    raw[0, 51:56] = [0.1, 0.2, 0.6, 0.4, 0.8]  # ymin, xmin, ymax, xmax, score
    # a 640x480 frame -> 256x192 input: scale 0.4
    people = est.decode(raw, 0.4, (192, 256), (480, 640))
    assert len(people) == 1
    np.testing.assert_allclose(people[0].box, [0.2 * 256 / 0.4, 0.1 * 192 / 0.4, 0.4 * 256 / 0.4,
                                               0.6 * 192 / 0.4, 0.8], rtol=1e-6)
    np.testing.assert_allclose(people[0].keypoints[0], [160.0, 240.0, 0.9], rtol=1e-6)


def test_crop_transform_and_upright_angle():
    m = P.crop_transform((100, 200), 128, 0.0, 256)  # scale 2
    np.testing.assert_allclose(m, [[2, 0, 128 - 200], [0, 2, 128 - 400]])
    np.testing.assert_allclose(P.apply_affine(P.invert_affine(m), [[128, 128], [0, 0]]), [[100, 200], [36, 136]])

    kp = np.zeros((17, 3), np.float32)
    kp[[5, 6, 11, 12], 2] = 1
    kp[[5, 6], :2] = [[300, 100], [300, 120]]  # shoulders to the right of the hips: lying
    kp[[11, 12], :2] = [[200, 100], [200, 120]]
    angle = P.upright_angle(kp)
    assert angle == pytest.approx(-np.pi / 2)
    m = P.crop_transform((250, 110), 200, angle, 256)
    sh, hip = P.apply_affine(m, [[300, 110], [200, 110]])
    assert sh[1] < hip[1] and sh[0] == pytest.approx(hip[0])  # shoulders straight above the hips
    kp[[5, 6], :2] = [[200, 0], [200, 20]]  # upright
    assert P.upright_angle(kp) == pytest.approx(0.0)
    kp[[5, 6], 2] = 0.1
    assert P.upright_angle(kp) is None
    assert P.rotated_extent(40, 100, 0.0) == pytest.approx(100)
    assert P.rotated_extent(40, 100, np.pi / 2) == pytest.approx(100)


def test_refine_from_heatmap_by_hand():
    heat = np.full((64, 64, 2), -80.0, np.float32)
    heat[10, 20, 0] = 80.0  # one confident cell
    heat[30, 40, 1] = 80.0  # two equal cells
    heat[30, 42, 1] = 80.0
    xy = np.array([[21.5 / 64, 11.2 / 64], [41.0 / 64, 30.0 / 64]], np.float32)
    out = P.refine_from_heatmap(xy, heat)
    np.testing.assert_allclose(out, [[20 / 64, 10 / 64], [41 / 64, 30 / 64]], atol=1e-6)
    weak = np.full((64, 64, 1), -80.0, np.float32)
    weak[10, 20, 0] = -1.0  # sigmoid 0.27 < 0.5: not refined
    np.testing.assert_allclose(P.refine_from_heatmap(xy[:1], weak), xy[:1])


def test_rtm_bbox_center_scale_and_aspect_ratio():
    c, s = P.bbox_xyxy_to_cs(np.array([10, 20, 110, 220]), 1.25)
    np.testing.assert_allclose(c, [60, 120])
    np.testing.assert_allclose(s, [125, 250])
    np.testing.assert_allclose(P.fix_aspect_ratio(np.array([100.0, 100.0]), 0.75), [100, 400 / 3])
    np.testing.assert_allclose(P.fix_aspect_ratio(np.array([30.0, 100.0]), 0.75), [75, 100])


def _mmpose_warp(center, scale, rot, output_size):
    """MMPose's get_warp_matrix, three-point construction, written out for the test."""
    def rotate(pt, r):
        sn, cs = np.sin(r), np.cos(r)
        return np.array([[cs, -sn], [sn, cs]]) @ pt

    def third(a, b):
        d = a - b
        return b + np.r_[-d[1], d[0]]

    src_w = scale[0]
    dst_w, dst_h = output_size
    src_dir = rotate(np.array([0.0, src_w * -0.5]), np.deg2rad(rot))
    dst_dir = np.array([0.0, dst_w * -0.5])
    src = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + src_dir
    src[2] = third(src[0], src[1])
    dst = np.zeros((3, 2), np.float32)
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = dst[0] + dst_dir
    dst[2] = third(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


def test_rtm_warp_matrix_by_hand_and_against_mmpose():
    # box centre (100, 200), size 96 x 128 -> 192 x 256 input: factor 2
    m = P.get_warp_matrix((100, 200), (96, 128), 0.0, (192, 256))
    np.testing.assert_allclose(m, [[2, 0, 96 - 200], [0, 2, 128 - 400]], atol=1e-9)
    for rot in (0.0, 30.0, -90.0):
        np.testing.assert_allclose(P.get_warp_matrix((321.5, 87.0), (150, 200), rot, (192, 256)),
                                   _mmpose_warp(np.array([321.5, 87.0]), np.array([150.0, 200.0]), rot, (192, 256)),
                                   atol=1e-3)


def test_simcc_decoding_by_hand():
    sx = np.zeros((2, 384), np.float32)
    sy = np.zeros((2, 512), np.float32)
    sx[0, 101], sy[0, 300] = 0.8, 0.6
    sx[1] -= 0.5
    sy[1] -= 0.5  # no positive response: invalid
    locs, vals = P.decode_simcc(sx, sy, 2.0)
    np.testing.assert_allclose(locs, [[50.5, 150.0], [-1, -1]])
    np.testing.assert_allclose(vals, [0.6, -0.5])
    locs3, _ = P.decode_simcc(sx[None], sy[None])
    assert locs3.shape == (1, 2, 2)


# ----------------------------------------------------------------------------------------------
# Bring your own: tiny RTMDet / RTMPose ONNX files with the MMDeploy signatures


def _export(module, example, path, inputs, outputs):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (example,), str(path), input_names=inputs, output_names=outputs,
                              opset_version=17, dynamo=False)
        except Exception:  # a torch without the TorchScript exporter
            torch.onnx.export(module, (example,), str(path), input_names=inputs, output_names=outputs, dynamo=True)


@pytest.fixture(scope="module")
def tiny_rtm(tmp_path_factory):
    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("rtm")

    class Det(torch.nn.Module):
        """dets [1, 3, 5] in the 320x320 input's pixels, labels [1, 3]: a person, a weak
        person, a confident non-person."""

        def forward(self, x):
            dets = torch.tensor([[[40.0, 60.0, 140.0, 200.0, 0.9], [0.0, 0.0, 10.0, 10.0, 0.3],
                                  [50.0, 50.0, 80.0, 80.0, 0.95]]]) + 0 * x.mean()
            labels = torch.tensor([[0, 0, 2]], dtype=torch.int64)
            return dets, labels

    class Pose(torch.nn.Module):
        """simcc peaks where the crop is brightest: every keypoint at the brightest pixel."""

        def forward(self, x):  # [1, 3, 256, 192], normalised
            s = x.sum(1) * 0.1  # [1, 256, 192]
            col = s.amax(dim=1)  # [1, 192]
            row = s.amax(dim=2)  # [1, 256]
            sx = torch.stack([col, col], -1).reshape(1, 1, 384).expand(1, 17, 384)
            sy = torch.stack([row, row], -1).reshape(1, 1, 512).expand(1, 17, 512)
            return sx, sy

    det, pose = root / "rtmdet.onnx", root / "rtmpose.onnx"
    _export(Det(), torch.zeros(1, 3, 320, 320), det, ["input"], ["dets", "labels"])
    _export(Pose(), torch.zeros(1, 3, 256, 192), pose, ["input"], ["simcc_x", "simcc_y"])
    return det, pose


def test_rtm_top_down_with_tiny_models(tiny_rtm):
    det, pose = tiny_rtm
    est = P.make_pose_estimator("rtm", det_onnx=det, pose_onnx=pose)
    assert est.det_hw == (320, 320) and est.pose_hw == (256, 192)
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[299:302, 179:182] = 255  # a white dot at (180, 300), inside the person's box
    people = est(frame)
    assert len(people) == 1  # label 2 and the 0.3 score are not people
    p = people[0]
    # 640x480 -> 320x320 input: factor 0.5, so the box is twice the detector's
    np.testing.assert_allclose(p.box, [80, 120, 280, 400, 0.9], rtol=1e-6)
    assert p.source == "rtmpose"
    # every keypoint decodes to the dot, through the crop's affine and back. The crop: centre
    # (180, 260), the 200 x 280 box x 1.25 = 250 x 350, grown to 3:4 = 262.5 x 350, so one
    # input pixel is 262.5 / 192 = 1.37 image pixels.
    s = 192 / 262.5
    np.testing.assert_allclose(p.keypoints[:, 0], 180, atol=2)
    np.testing.assert_allclose(p.keypoints[:, 1], 300, atol=2)
    assert np.all((p.keypoints[:, 2] > 0) & (p.keypoints[:, 2] <= 1))
    assert est.timing.detector_ms > 0 and len(est.timing.landmarks_ms) == 1

    # the preprocessing by hand: the crop matrix and the normalisation
    x, m = est.pose_preprocess(frame, p.box)
    np.testing.assert_allclose(m, [[s, 0, 96 - 180 * s], [0, s, 128 - 260 * s]], atol=1e-9)
    assert x.shape == (1, 3, 256, 192)
    np.testing.assert_allclose(x[0, :, 0, 0], -np.array(P.RTMPOSE_MEAN_RGB) / np.array(P.RTMPOSE_STD_RGB), rtol=1e-6)
    xd, s = est.det_preprocess(frame)
    assert s == 0.5 and xd.shape == (1, 3, 320, 320)
    # padding (114) below the 320x240 resized frame, BGR normalisation
    np.testing.assert_allclose(xd[0, :, 300, 10], (114 - np.array(P.RTMDET_MEAN_BGR)) / np.array(P.RTMDET_STD_BGR),
                               rtol=1e-6)
