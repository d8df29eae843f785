"""Property tests (hypothesis) on the boundaries of the realtime path and on clip loading:
whatever comes in (NaN/inf, empty, huge, wrong dtype, wrong rank), what goes on is well
formed, or it is refused with a one-line error; nothing is half-written."""
import os
import pickle
import queue
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from posestream.engines.pose import MIN_BOX_SIDE, PersonPose, sanitize_people, usable_box
from posestream.realtime.batcher import ActionBatcher, WindowJob, clean_window
from posestream.realtime.config import RunConfig
from posestream.realtime.events import EventLogic, LabelSmoother
from posestream.realtime.frames import FrameError, to_bgr_uint8
from posestream.train.data.clips import ClipFormatError, load_clip, load_dataset, save_clip, save_dataset

QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])

any_float = st.floats(allow_nan=True, allow_infinity=True, width=32)
IMAGE_DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64, np.bool_]


# -- frames -----------------------------------------------------------------------------------

@st.composite
def images(draw):
    dtype = draw(st.sampled_from(IMAGE_DTYPES))
    rank = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(0, 6)) for _ in range(rank))
    return draw(hnp.arrays(dtype, shape))


@QUICK
@given(images())
def test_a_frame_is_converted_to_bgr_uint8_or_refused_with_a_reason(image):
    try:
        out = to_bgr_uint8(image)
    except FrameError as exc:
        assert str(exc) and "\n" not in str(exc)
        assert image.ndim not in (2, 3) or image.size == 0 or (image.ndim == 3 and image.shape[2] not in (1, 3, 4))
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape == (image.shape[0], image.shape[1], 3)
    assert out.flags.c_contiguous or out is image
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        assert out is image  # already a frame: no copy
    if image.dtype == np.uint8 and image.ndim == 2:
        assert (out == image[:, :, None]).all()  # grey: the same level in every channel


# -- boxes and keypoints ------------------------------------------------------------------------

@st.composite
def people(draw):
    n = draw(st.integers(0, 5))
    out = []
    for _ in range(n):
        box = np.array(draw(st.lists(st.one_of(any_float, st.floats(-50, 700)), min_size=5, max_size=5)), np.float32)
        v = draw(st.sampled_from([17, 17, 17, 33, 0]))
        kp = draw(hnp.arrays(np.float32, (v, 3), elements=st.one_of(any_float, st.floats(-10, 700, width=32))))
        out.append(PersonPose(box, kp, "movenet"))
    return out


@QUICK
@given(people(), st.integers(1, 1000), st.integers(1, 1000))
def test_sanitized_people_have_finite_boxes_inside_the_frame_and_finite_joints(persons, h, w):
    kept, dropped, cleared = sanitize_people(persons, (h, w))
    assert len(kept) + dropped == len(persons)
    for p in kept:
        assert p.box.shape == (5,) and np.isfinite(p.box).all()
        assert 0 <= p.box[0] and p.box[2] <= w and 0 <= p.box[1] and p.box[3] <= h
        assert p.box[2] - p.box[0] >= MIN_BOX_SIDE and p.box[3] - p.box[1] >= MIN_BOX_SIDE
        assert p.keypoints.shape == (17, 3) and np.isfinite(p.keypoints).all()
        assert ((0 <= p.keypoints[:, 2]) & (p.keypoints[:, 2] <= 1)).all()
    # a person is kept exactly when its box is usable and it has a COCO-17 skeleton
    expected = sum(1 for p in persons if usable_box(p.box, (h, w)) is not None and p.keypoints.shape == (17, 3))
    assert len(kept) == expected


@QUICK
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 5), st.just(2)),
                  elements=any_float),
       st.data())
def test_a_cleaned_window_is_finite_and_keeps_every_finite_joint(kp, data):
    sc = data.draw(hnp.arrays(np.float32, kp.shape[:-1], elements=any_float))
    kp0, sc0 = kp.copy(), sc.copy()
    out_kp, out_sc, cleared = clean_window(kp, sc)
    assert np.array_equal(kp, kp0, equal_nan=True) and np.array_equal(sc, sc0, equal_nan=True)  # inputs untouched
    assert np.isfinite(out_kp).all() and np.isfinite(out_sc).all()
    assert ((0 <= out_sc) & (out_sc <= 1)).all()
    good = np.isfinite(kp).all(axis=-1) & np.isfinite(sc)
    assert cleared == int((~good).sum())
    assert np.array_equal(out_kp[good], kp[good]) and (out_sc[~good] == 0).all()


# -- the batcher, on the shipped action model ---------------------------------------------------

@pytest.fixture(scope="module")
def engine():
    from posestream.realtime.pipeline import load_action_engine

    return load_action_engine(RunConfig())


class ChosenLogits:
    """The real engine, whose logits are then replaced by the ones a test chose."""

    def __init__(self, real):
        self.real, self.logits = real, None

    def __getattr__(self, name):
        return getattr(self.real, name)

    def predict(self, volumes):
        out = self.real.predict(volumes)
        return out if self.logits is None else self.logits[: len(out)]


@SLOW
@given(st.lists(st.tuples(st.sampled_from([17, 17, 33, 13]), st.booleans(), st.integers(1, 3)), min_size=1,
                max_size=6),
       st.data())
def test_a_mixed_batch_labels_every_window_that_fits_and_only_those(engine, windows, data):
    batcher = ActionBatcher(engine, max_batch=8)
    t, size = batcher.clip_len, batcher.size
    rng = np.random.default_rng(len(windows))
    jobs = []
    for i, (v, poisoned, m) in enumerate(windows):
        kp = rng.uniform(0, size, size=(m, t, v, 2)).astype(np.float32)
        sc = rng.uniform(0, 1, size=(m, t, v)).astype(np.float32)
        if poisoned:  # NaN and inf joints from a broken pose model
            kp[0, : t // 2, 0] = np.nan
            sc[0, -1, :3] = np.inf
        jobs.append(WindowJob(f"s{i % 2}", i, kp, sc, time.monotonic(), i, queue.Queue()))
    results = batcher.classify(jobs)
    assert [r.key for r in results] == [i for i, (v, _, _) in enumerate(windows) if v == 17]
    for r in results:
        assert r.probs.shape == (engine.num_classes,) and np.isfinite(r.probs).all()
        assert abs(float(r.probs.sum()) - 1) < 1e-4
    assert batcher.stats()["rejected_shape"] == sum(v != 17 for v, _, _ in windows)


@SLOW
@given(st.integers(1, 5), st.data())
def test_non_finite_or_huge_logits_never_become_a_result(engine, n, data):
    wrapped = ChosenLogits(engine)
    wrapped.logits = data.draw(hnp.arrays(np.float32, (n, engine.num_classes),
                                          elements=st.one_of(any_float, st.floats(float(np.float32(-1e30)), float(np.float32(1e30)), width=32))))
    batcher = ActionBatcher(wrapped, max_batch=8)
    t = batcher.clip_len
    jobs = [WindowJob("s", i, np.full((1, t, 17, 2), 10, np.float32), np.full((1, t, 17), 0.9, np.float32),
                      0.0, i, queue.Queue()) for i in range(n)]
    results = batcher.classify(jobs)
    finite_rows = [i for i in range(n) if np.isfinite(wrapped.logits[i]).all()]
    assert [r.key for r in results] == finite_rows
    assert all(np.isfinite(r.probs).all() and abs(float(r.probs.sum()) - 1) < 1e-4 for r in results)
    assert batcher.stats()["nonfinite_logits"] == n - len(finite_rows)


# -- label smoothing and the event logic ---------------------------------------------------------

@QUICK
@given(st.lists(hnp.arrays(np.float64, 4, elements=st.one_of(any_float, st.floats(0, 1))), min_size=1, max_size=30))
def test_label_smoothing_stays_finite_whatever_the_windows_say(windows):
    smoother = LabelSmoother(alpha=0.6, margin=0.1, min_score=0.3)
    logic = EventLogic("s", ["walking", "falling", "lying", "sitting"])
    bad = 0
    for i, probs in enumerate(windows):
        bad += not np.isfinite(probs).all()
        out = smoother.update("t", probs)
        assert np.isfinite(out.probs).all() and np.isfinite(out.score)
        assert out.label is None or 0 <= out.label < 4
        outcome = logic.on_window("t", float(i), probs)
        assert outcome.label is None or np.isfinite(outcome.label[1])
    assert smoother.rejected == bad
    state = smoother._state.get("t")
    assert (state is None) == (bad == len(windows))


# -- clip loading ------------------------------------------------------------------------------

def _clip(m=1, t=4, v=17, label=0, frame_dir="clip0"):
    rng = np.random.default_rng(0)
    return {"keypoint": rng.uniform(0, 100, size=(m, t, v, 2)).astype(np.float32),
            "keypoint_score": rng.uniform(0, 1, size=(m, t, v)).astype(np.float32),
            "img_shape": (480, 640), "total_frames": t, "label": label, "frame_dir": frame_dir}


BREAKAGES = ["nan", "inf", "empty_people", "empty_frames", "int_dtype", "object_dtype", "complex_dtype",
             "rank3", "rank5", "score_shape", "score_range", "huge_values", "huge_frames", "list_not_array",
             "total_frames", "missing_key", "none"]


def _broken(kind: str, rng: np.random.Generator) -> dict:
    clip = _clip()
    if kind == "nan":
        clip["keypoint"][0, rng.integers(4), rng.integers(17), 0] = np.nan
    elif kind == "inf":
        clip["keypoint_score"][0, rng.integers(4), rng.integers(17)] = np.inf
    elif kind == "empty_people":
        clip["keypoint"], clip["keypoint_score"] = clip["keypoint"][:0], clip["keypoint_score"][:0]
    elif kind == "empty_frames":
        clip["keypoint"], clip["keypoint_score"] = clip["keypoint"][:, :0], clip["keypoint_score"][:, :0]
        clip["total_frames"] = 0
    elif kind == "int_dtype":
        clip["keypoint"] = clip["keypoint"].astype(np.int32)
    elif kind == "object_dtype":
        clip["keypoint"] = clip["keypoint"].astype(object)
    elif kind == "complex_dtype":
        clip["keypoint_score"] = clip["keypoint_score"].astype(np.complex64)
    elif kind == "rank3":
        clip["keypoint"] = clip["keypoint"][0]
    elif kind == "rank5":
        clip["keypoint"] = clip["keypoint"][None]
    elif kind == "score_shape":
        clip["keypoint_score"] = clip["keypoint_score"][:, :, :5]
    elif kind == "score_range":
        clip["keypoint_score"][0, 0, 0] = 1.5
    elif kind == "huge_values":  # finite but absurd: float32's max
        clip["keypoint"][0, 0, 0] = np.finfo(np.float32).max
    elif kind == "huge_frames":  # a long clip is fine, just big
        clip = _clip(t=3000)
    elif kind == "list_not_array":
        clip["keypoint"] = clip["keypoint"].tolist()
    elif kind == "total_frames":
        clip["total_frames"] = 5
    elif kind == "missing_key":
        del clip["label"]
    return clip


VALID_KINDS = {"none", "huge_values", "huge_frames"}


@QUICK
@given(st.sampled_from(BREAKAGES), st.integers(0, 2**32 - 1))
def test_a_bad_clip_file_is_one_clear_error_naming_the_file(tmp_path_factory, kind, seed):
    folder = tmp_path_factory.mktemp("clips")
    path = folder / f"{kind}.pkl"
    clip = _broken(kind, np.random.default_rng(seed))
    with open(path, "wb") as f:
        pickle.dump(clip, f, protocol=4)
    if kind in VALID_KINDS:
        loaded = load_clip(path)
        assert np.array_equal(loaded["keypoint"], clip["keypoint"])
        return
    with pytest.raises(ClipFormatError) as info:
        load_clip(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message, message


@QUICK
@given(st.sampled_from(sorted(set(BREAKAGES) - VALID_KINDS)), st.integers(0, 2**32 - 1))
def test_saving_a_bad_clip_or_dataset_writes_nothing(tmp_path_factory, kind, seed):
    folder = tmp_path_factory.mktemp("save")
    good = {"split": {"all": ["clip0"]}, "annotations": [_clip()]}
    save_dataset(folder / "data.pkl", good)
    before = (folder / "data.pkl").read_bytes()
    clip = _broken(kind, np.random.default_rng(seed))
    with pytest.raises(ClipFormatError):
        save_dataset(folder / "data.pkl", {"split": {"all": [clip.get("frame_dir", "clip0")]}, "annotations": [clip]})
    with pytest.raises(ClipFormatError):
        save_clip(folder / "clip.pkl", clip)
    assert (folder / "data.pkl").read_bytes() == before  # the old file is untouched
    assert sorted(os.listdir(folder)) == ["data.pkl"]  # no new file, no temp file left behind
    assert load_dataset(folder / "data.pkl").annotations[0]["frame_dir"] == "clip0"


@QUICK
@given(st.floats(0.0, 1.0, exclude_max=True))
def test_a_truncated_dataset_file_is_refused_not_half_loaded(tmp_path_factory, fraction):
    folder = tmp_path_factory.mktemp("cut")
    save_dataset(folder / "data.pkl", {"split": {"all": ["a", "b"]},
                                       "annotations": [_clip(frame_dir="a"), _clip(frame_dir="b", t=9)]})
    data = (folder / "data.pkl").read_bytes()
    cut = folder / "cut.pkl"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ClipFormatError) as info:
        load_dataset(cut)
    assert str(info.value).startswith(str(cut)) and "\n" not in str(info.value)
