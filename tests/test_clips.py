"""Tests for the skeleton clip pickle format (posestream.train.data.clips)."""
from __future__ import annotations

import collections
import fractions
import os
import pickle
import pickletools
import stat

import numpy as np
import pytest

from posestream.train.data import clips
from posestream.train.data.clips import (
    ClipFormatError,
    SkeletonDataset,
    load_clip,
    load_dataset,
    save_clip,
    save_dataset,
    validate_clip,
    validate_dataset,
)


def make_clip(frame_dir="clip_a", label=1, m=2, t=8, v=17, seed=0, score_dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {
        "frame_dir": frame_dir,
        "label": label,
        "img_shape": (480, 640),
        "original_shape": (480, 640),
        "total_frames": t,
        "keypoint": (rng.random((m, t, v, 2)) * 400).astype(np.float32),
        "keypoint_score": rng.random((m, t, v)).astype(score_dtype),
    }


def make_dataset():
    anns = [make_clip("clip_a", 0, seed=1), make_clip("clip_b", 1, seed=2), make_clip("clip_c", 2, seed=3)]
    return {"split": {"train": ["clip_c", "clip_a"], "val": ["clip_b"]}, "annotations": anns}


def raw_dump(path, obj, protocol=pickle.HIGHEST_PROTOCOL):
    """Write a pickle without any validation (how a foreign tool would)."""
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def assert_one_line(exc: ClipFormatError, *parts: str) -> str:
    msg = str(exc)
    assert "\n" not in msg and "\r" not in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


def test_dataset_round_trip(tmp_path):
    data = make_dataset()
    data["annotations"][1]["keypoint_score"] = data["annotations"][1]["keypoint_score"].astype(np.float16)
    data["annotations"][2]["extra"] = {"camera": 3, "note": "kept"}
    data["annotations"][0]["label"] = np.int64(0)
    path = tmp_path / "data.pkl"
    save_dataset(path, data)

    ds = load_dataset(path, num_classes=3)
    assert isinstance(ds, SkeletonDataset)
    assert ds.split == {"train": ["clip_c", "clip_a"], "val": ["clip_b"]}
    assert ds.num_classes == 3
    assert [c["frame_dir"] for c in ds.clips("train")] == ["clip_c", "clip_a"]
    assert [c["frame_dir"] for c in ds.clips("val")] == ["clip_b"]
    for orig, got in zip(data["annotations"], ds.annotations):
        np.testing.assert_array_equal(got["keypoint"], orig["keypoint"])
        np.testing.assert_array_equal(got["keypoint_score"], orig["keypoint_score"])
        assert got["keypoint"].dtype == orig["keypoint"].dtype
        assert got["keypoint_score"].dtype == orig["keypoint_score"].dtype
        assert got["img_shape"] == (480, 640) and got["original_shape"] == (480, 640)
        assert got["label"] == orig["label"] and got["total_frames"] == orig["total_frames"]
    assert ds.annotations[2]["extra"] == {"camera": 3, "note": "kept"}
    assert os.listdir(tmp_path) == ["data.pkl"]

    # a SkeletonDataset saves too, and the reload is identical
    path2 = tmp_path / "again.pkl"
    save_dataset(path2, ds)
    ds2 = load_dataset(path2)
    assert ds2.split == ds.split
    np.testing.assert_array_equal(ds2.annotations[1]["keypoint"], ds.annotations[1]["keypoint"])


def test_clip_round_trip(tmp_path):
    clip = make_clip("S001C001P001R001A001", label=np.int32(7), m=1, t=5, v=5, score_dtype=np.float64)
    clip["keypoint"] = clip["keypoint"].astype(np.float16)  # float16 coordinates are accepted
    clip["img_shape"] = [720, 1280]  # a list is kept as a list
    clip["frame_inds"] = np.arange(5)
    path = tmp_path / "one.pkl"
    save_clip(path, clip)
    got = load_clip(path, num_classes=8)
    assert set(got) == set(clip)
    np.testing.assert_array_equal(got["keypoint"], clip["keypoint"])
    np.testing.assert_array_equal(got["keypoint_score"], clip["keypoint_score"])
    np.testing.assert_array_equal(got["frame_inds"], np.arange(5))
    assert got["keypoint"].dtype == np.float16 and got["keypoint_score"].dtype == np.float64
    assert got["img_shape"] == [720, 1280]
    assert got["label"] == 7


def test_written_file_is_protocol_4_with_numpy1_names(tmp_path):
    path = tmp_path / "data.pkl"
    save_dataset(path, make_dataset())
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x04"
    strings = {arg for op, arg, _ in pickletools.genops(raw) if "UNICODE" in op.name}
    assert "numpy.core.multiarray" in strings  # readable by numpy 1.x (PYSKL) and 2.x
    assert b"numpy._core" not in raw
    # the normal unpickler reads it back identically
    with open(path, "rb") as f:
        plain = pickle.load(f)
    np.testing.assert_array_equal(plain["annotations"][0]["keypoint"],
                                  make_dataset()["annotations"][0]["keypoint"])


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_older_and_newer_protocols_load_safely(tmp_path, protocol):
    data = make_dataset()
    data["annotations"][0]["meta"] = collections.OrderedDict(a=np.float32(1.5), b={1, 2})
    data["annotations"][1]["empty"] = np.zeros((0, 3))
    path = tmp_path / f"p{protocol}.pkl"
    raw_dump(path, data, protocol=protocol)
    ds = load_dataset(path)  # safe unpickler by default
    np.testing.assert_array_equal(ds.annotations[2]["keypoint"], data["annotations"][2]["keypoint"])
    assert ds.annotations[0]["meta"] == collections.OrderedDict(a=1.5, b={1, 2})
    assert ds.annotations[1]["empty"].shape == (0, 3)


def test_python2_numpy_pickle_loads_safely(tmp_path):
    # A protocol 2 pickle as Python 2 + numpy 1.x writes it: array bytes as a py2 str.
    values = np.arange(3, dtype="<f8")
    data = values.tobytes()
    array_pickle = (
        b"cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85q\x02U\x01b"
        b"\x87q\x03Rq\x04(K\x01K\x03\x85cnumpy\ndtype\nU\x02f8K\x00K\x01\x87Rq\x05(K\x03U\x01<"
        b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U" + bytes([len(data)]) + data + b"tb"
    )
    path = tmp_path / "py2.pkl"
    path.write_bytes(b"\x80\x02}q\x10U\x03arrq\x11" + array_pickle + b"s.")
    with open(path, "rb") as f:
        out = clips._SafeUnpickler(f, str(path)).load()
    np.testing.assert_array_equal(out["arr"], values)


def test_any_float_dtype_and_any_joint_count_is_valid(tmp_path):
    # Valid means it saves and loads back as it was (both validate); the scores' bounds are
    # checked in the clip's own dtype: exactly 0 and 1 pass, the next value above 1 fails.
    for dtype in (np.float16, np.float32, np.float64):
        for m, t, v in ((2, 8, 5), (1, 1, 1)):
            clip = make_clip(m=m, t=t, v=v)
            clip["keypoint"] = clip["keypoint"].astype(dtype)
            clip["keypoint_score"] = clip["keypoint_score"].astype(dtype)
            score = clip["keypoint_score"]
            score.flat[0], score.flat[-1] = 1.0, 0.0  # the bounds themselves (one value when the clip has one)
            path = tmp_path / f"{np.dtype(dtype).name}_{m}x{t}x{v}.pkl"
            save_clip(path, clip)
            got = load_clip(path)
            assert got["keypoint"].dtype == dtype and got["keypoint"].shape == (m, t, v, 2)
            np.testing.assert_array_equal(got["keypoint"], clip["keypoint"])
            np.testing.assert_array_equal(got["keypoint_score"], clip["keypoint_score"])
            score.flat[0] = np.nextafter(dtype(1), dtype(2))
            with pytest.raises(ClipFormatError, match="keypoint_score"):
                validate_clip(clip)


# --------------------------------------------------------------------------------------------
# Bad clips inside a dataset file: message names file, clip (frame_dir + index) and field
# --------------------------------------------------------------------------------------------


def _set(key, value):
    def mutate(clip):
        clip[key] = value(clip) if callable(value) else value
    return mutate


def _drop(key):
    def mutate(clip):
        del clip[key]
    return mutate


def _scores(fn):
    def mutate(clip):
        s = clip["keypoint_score"].copy()
        fn(s)
        clip["keypoint_score"] = s
    return mutate


def _coords(fn):
    def mutate(clip):
        k = clip["keypoint"].copy()
        fn(k)
        clip["keypoint"] = k
    return mutate


BAD_CLIPS = {
    "missing keypoint": (_drop("keypoint"), "keypoint", "missing"),
    "missing keypoint_score": (_drop("keypoint_score"), "keypoint_score", "missing"),
    "missing img_shape": (_drop("img_shape"), "img_shape", "missing"),
    "missing total_frames": (_drop("total_frames"), "total_frames", "missing"),
    "missing label": (_drop("label"), "label", "missing"),
    "keypoint is a list": (_set("keypoint", lambda c: c["keypoint"].tolist()), "keypoint", "list"),
    "keypoint 3 dims": (_set("keypoint", lambda c: c["keypoint"][0]), "keypoint", "4 dims"),
    "keypoint last dim 3": (_set("keypoint", lambda c: np.zeros((2, 8, 17, 3), np.float32)),
                            "keypoint", "3D"),
    "keypoint int dtype": (_set("keypoint", lambda c: c["keypoint"].astype(np.int32)), "keypoint", "int32"),
    "keypoint object dtype": (_set("keypoint", lambda c: c["keypoint"].astype(object)), "keypoint", "object"),
    "keypoint str dtype": (_set("keypoint", lambda c: c["keypoint"].astype(str)), "keypoint", "dtype"),
    "keypoint complex": (_set("keypoint", lambda c: c["keypoint"].astype(np.complex64)), "keypoint", "dtype"),
    "no people (M=0)": (lambda c: c.update(keypoint=np.zeros((0, 8, 17, 2), np.float32),
                                           keypoint_score=np.zeros((0, 8, 17), np.float32)),
                        "keypoint", "empty clip"),
    "no frames (T=0)": (lambda c: c.update(keypoint=np.zeros((2, 0, 17, 2), np.float32),
                                           keypoint_score=np.zeros((2, 0, 17), np.float32),
                                           total_frames=0),
                        "keypoint", "empty clip"),
    "score shape": (_set("keypoint_score", lambda c: c["keypoint_score"][:, :-1]), "keypoint_score",
                    "does not match"),
    "score int dtype": (_set("keypoint_score", lambda c: (c["keypoint_score"] > 0.5).astype(np.uint8)),
                        "keypoint_score", "uint8"),
    "NaN coordinate": (_coords(lambda k: k.__setitem__((1, 3, 4, 0), np.nan)), "keypoint",
                       "person 1, frame 3, joint 4"),
    "inf score": (_scores(lambda s: s.__setitem__((0, 2, 5), np.inf)), "keypoint_score", "non-finite"),
    "score above 1": (_scores(lambda s: s.__setitem__((0, slice(0, 2), 0), 1.7)), "keypoint_score",
                      "2 values outside [0, 1] (max 1.7)"),
    "score below 0": (_scores(lambda s: s.__setitem__((1, 0, 0), -0.25)), "keypoint_score",
                      "1 value outside [0, 1] (min -0.25)"),
    "img_shape zero": (_set("img_shape", (0, 640)), "img_shape", "positive"),
    "img_shape one value": (_set("img_shape", (480,)), "img_shape", "two positive ints"),
    "img_shape floats": (_set("img_shape", (480.0, 640.0)), "img_shape", "two positive ints"),
    "img_shape str": (_set("img_shape", "480x640"), "img_shape", "two positive ints"),
    "total_frames mismatch": (_set("total_frames", 9), "total_frames", "T = 8"),
    "total_frames float": (_set("total_frames", 8.0), "total_frames", "float"),
    "label bool": (_set("label", True), "label", "bool"),
    "label float": (_set("label", 1.0), "label", "float"),
    "label str": (_set("label", "walk"), "label", "str"),
    "label negative": (_set("label", -1), "label", "negative"),
}


@pytest.mark.parametrize("mutate,field,detail", BAD_CLIPS.values(), ids=list(BAD_CLIPS))
def test_bad_clip_in_dataset_is_rejected(tmp_path, mutate, field, detail):
    data = make_dataset()
    mutate(data["annotations"][1])
    path = tmp_path / "data.pkl"
    raw_dump(path, data)
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path)
    assert_one_line(info.value, str(path), "'clip_b'", "#1", field, detail)
    assert info.value.frame_dir == "clip_b" and info.value.index == 1

    # the same clip alone in a clip file: same field, no index
    clip_path = tmp_path / "clip_b.pkl"
    raw_dump(clip_path, data["annotations"][1])
    with pytest.raises(ClipFormatError) as info:
        load_clip(clip_path)
    assert_one_line(info.value, str(clip_path), "'clip_b'", field, detail)


def test_label_out_of_range_only_with_num_classes(tmp_path):
    path = tmp_path / "data.pkl"
    raw_dump(path, make_dataset())
    assert load_dataset(path).num_classes == 3
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path, num_classes=2)
    assert_one_line(info.value, str(path), "'clip_c'", "#2", "label", "num_classes=2")
    clip_path = tmp_path / "c.pkl"
    raw_dump(clip_path, make_clip(label=np.uint8(4)))
    with pytest.raises(ClipFormatError, match="label: 4 is out of range"):
        load_clip(clip_path, num_classes=4)
    assert load_clip(clip_path, num_classes=5)["label"] == 4
    with pytest.raises(ValueError, match="num_classes"):
        load_clip(clip_path, num_classes=0)


def test_bad_frame_dir_is_named_by_index(tmp_path):
    data = make_dataset()
    data["annotations"][1]["frame_dir"] = 17
    path = tmp_path / "data.pkl"
    raw_dump(path, data)
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path)
    assert_one_line(info.value, str(path), "clip #1", "frame_dir", "17")

    del data["annotations"][1]["frame_dir"]
    raw_dump(path, data)
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path)
    assert_one_line(info.value, str(path), "clip #1", "missing required keys: frame_dir")


def test_clip_that_is_not_a_dict(tmp_path):
    data = make_dataset()
    data["annotations"][2] = ["not", "a", "clip"]
    path = tmp_path / "data.pkl"
    raw_dump(path, data)
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path)
    assert_one_line(info.value, str(path), "clip #2", "expected a dict, got list")


def test_duplicate_frame_dir(tmp_path):
    data = make_dataset()
    data["annotations"][2]["frame_dir"] = "clip_a"
    path = tmp_path / "data.pkl"
    raw_dump(path, data)
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path)
    assert_one_line(info.value, str(path), "'clip_a'", "#2", "frame_dir", "duplicate of clip #0")


def test_long_frame_dir_is_named_in_full(tmp_path):
    long_dir = "videos/warehouse/cam_07/2024-05-01/" + "x" * 80 + "/clip_000123"
    data = make_dataset()
    data["annotations"][0]["frame_dir"] = long_dir
    data["annotations"][0]["total_frames"] = 99
    data["split"] = {"train": [long_dir]}
    path = tmp_path / "data.pkl"
    raw_dump(path, data)
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path)
    assert_one_line(info.value, repr(long_dir), "total_frames")


def test_frame_dir_with_newline_keeps_message_on_one_line(tmp_path):
    data = make_dataset()
    data["annotations"][0]["frame_dir"] = "bad\nname"
    data["annotations"][0]["label"] = -3
    data["split"] = {}
    path = tmp_path / "data.pkl"
    raw_dump(path, data)
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path)
    assert_one_line(info.value, str(path), r"'bad\nname'", "label")


# --------------------------------------------------------------------------------------------
# Bad dataset structure and bad files
# --------------------------------------------------------------------------------------------


def test_split_with_unknown_frame_dirs(tmp_path):
    data = make_dataset()
    data["split"]["test"] = ["clip_a", "gone_1", "gone_2", "gone_3", "gone_4", "gone_5"]
    path = tmp_path / "data.pkl"
    raw_dump(path, data)
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path)
    msg = assert_one_line(info.value, str(path), "split 'test'", "5 frame_dirs not in annotations",
                          "'gone_1', 'gone_2', 'gone_3'", "(and 2 more)")
    assert "gone_4" not in msg


@pytest.mark.parametrize("data,detail", [
    ({"split": {"train": []}, "annotations": []}, "annotations: empty dataset"),
    ({"annotations": [make_clip()]}, "missing required top-level keys: split"),
    ({"split": {}}, "missing required top-level keys: annotations"),
    ([make_clip()], "top-level object is list"),
    ("hello", "top-level object is str"),
    ({"split": ["clip_a"], "annotations": [make_clip()]}, "split: expected a dict"),
    ({"split": {}, "annotations": (make_clip(),)}, "annotations: expected a list"),
    ({"split": {"train": "clip_a"}, "annotations": [make_clip()]}, "split 'train': expected a list"),
    ({"split": {"train": [3]}, "annotations": [make_clip()]}, "split 'train': item #0 is int"),
    (make_clip(), "looks like a single clip; use load_clip"),
], ids=["empty", "no split", "no annotations", "list", "str", "split list", "annotations tuple",
        "split member str", "split member int", "clip file"])
def test_bad_dataset_structure(tmp_path, data, detail):
    path = tmp_path / "data.pkl"
    raw_dump(path, data)
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path)
    assert_one_line(info.value, str(path), detail)


def test_dataset_file_given_to_load_clip(tmp_path):
    path = tmp_path / "data.pkl"
    raw_dump(path, make_dataset())
    with pytest.raises(ClipFormatError) as info:
        load_clip(path)
    assert_one_line(info.value, str(path), "use load_dataset")
    raw_dump(path, [1, 2])
    with pytest.raises(ClipFormatError) as info:
        load_clip(path)
    assert_one_line(info.value, str(path), "top-level object is list")


@pytest.mark.parametrize("content,detail", [
    (b"", "empty file"),
    (b"frame_dir,label\nclip_a,1\n", "not a valid pickle"),
    (b"clip,label\nS001C001,1\n", "pickle ("),  # starts with the GLOBAL opcode 'c'
    (b'{"split": {}}', "JSON"),
    (b"\x1f\x8b\x08\x00garbage", "gzip"),
    (b"\x00\x01\x02\x03 binary junk", "not a valid pickle"),
], ids=["empty", "csv", "csv-c", "json", "gzip", "junk"])
def test_not_a_pickle(tmp_path, content, detail):
    path = tmp_path / "data.pkl"
    path.write_bytes(content)
    for loader in (load_dataset, load_clip):
        for trusted in (False, True):
            with pytest.raises(ClipFormatError) as info:
                loader(path, trusted=trusted)
            assert_one_line(info.value, str(path), detail)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_truncated_file(tmp_path, protocol):
    raw = pickle.dumps(make_dataset(), protocol=protocol)
    path = tmp_path / "data.pkl"
    for cut in (len(raw) // 2, len(raw) - 1, 3):
        path.write_bytes(raw[:cut])
        with pytest.raises(ClipFormatError) as info:
            load_dataset(path)
        assert_one_line(info.value, str(path), "truncated")


def test_trailing_data_after_pickle(tmp_path):
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(make_dataset(), protocol=4) + b"\x80\x04more")
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path)
    assert_one_line(info.value, str(path), "after the end of the pickle")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pkl"
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path)
    assert_one_line(info.value, str(path), "cannot open")


def test_unknown_split_name():
    ds = SkeletonDataset(split={"train": ["clip_a"], "val": []}, annotations=[make_clip()])
    with pytest.raises(ClipFormatError) as info:
        ds.clips("test")
    assert isinstance(info.value, KeyError)
    assert_one_line(info.value, "unknown split 'test'", "known splits: 'train', 'val'")
    assert ds.clips("val") == []
    assert SkeletonDataset(split={}, annotations=[]).num_classes == 0


def test_in_memory_validation_names_memory():
    with pytest.raises(ClipFormatError) as info:
        validate_clip(make_clip(label=-1), index=4)
    assert_one_line(info.value, "<memory>: clip 'clip_a' (#4): label: -1 is negative")
    with pytest.raises(ClipFormatError, match=r"^train\.pkl: annotations: empty dataset"):
        validate_dataset({"split": {}, "annotations": []}, "train.pkl")
    validate_dataset(make_dataset(), "x.pkl", num_classes=3)


# --------------------------------------------------------------------------------------------
# Pickle safety
# --------------------------------------------------------------------------------------------


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_malicious_global_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    data = make_dataset()
    data["annotations"][1]["payload"] = _RunsShell(marker)
    path = tmp_path / "evil.pkl"
    raw_dump(path, data)
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path)
    msg = assert_one_line(info.value, str(path), "refused", "system", "trusted=True", "--trust-pickle")
    assert f"{os.system.__module__}.system" in msg
    assert not marker.exists()

    clip_path = tmp_path / "evil_clip.pkl"
    raw_dump(clip_path, _RunsShell(marker), protocol=2)
    with pytest.raises(ClipFormatError, match="refused"):
        load_clip(clip_path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_builtins_eval_is_refused(tmp_path, protocol):
    path = tmp_path / "evil.pkl"
    raw_dump(path, {"split": {}, "annotations": [_Evals()]}, protocol=protocol)
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path)
    assert_one_line(info.value, str(path), "refused", "eval")


def test_codecs_encode_is_limited_to_latin1():
    with pytest.raises(pickle.UnpicklingError):
        clips._latin1_encode("x", "zlib_codec")
    assert clips._latin1_encode("\xff", "latin1") == b"\xff"


def test_trusted_loads_other_globals(tmp_path):
    clip = make_clip()
    clip["fps"] = fractions.Fraction(30000, 1001)
    path = tmp_path / "clip.pkl"
    raw_dump(path, clip)
    with pytest.raises(ClipFormatError) as info:
        load_clip(path)
    assert_one_line(info.value, str(path), "fractions.Fraction")
    got = load_clip(path, trusted=True)
    assert got["fps"] == fractions.Fraction(30000, 1001)

    data_path = tmp_path / "data.pkl"
    data = make_dataset()
    data["annotations"][0]["fps"] = fractions.Fraction(25)
    raw_dump(data_path, data)
    assert load_dataset(data_path, trusted=True).annotations[0]["fps"] == 25


def test_trusted_still_validates(tmp_path):
    data = make_dataset()
    data["annotations"][0]["label"] = 1.5
    path = tmp_path / "data.pkl"
    raw_dump(path, data)
    with pytest.raises(ClipFormatError) as info:
        load_dataset(path, trusted=True)
    assert_one_line(info.value, str(path), "'clip_a'", "label")


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


@pytest.fixture
def existing(tmp_path):
    path = tmp_path / "data.pkl"
    save_dataset(path, make_dataset())
    return path, path.read_bytes()


def _assert_untouched(path, before):
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == [path.name]


def test_invalid_dataset_is_not_written(existing):
    path, before = existing
    data = make_dataset()
    data["annotations"][2]["keypoint_score"][0, 0, 0] = 2.0
    with pytest.raises(ClipFormatError) as info:
        save_dataset(path, data)
    assert_one_line(info.value, str(path), "'clip_c'", "keypoint_score")
    _assert_untouched(path, before)


def test_failure_while_pickling_leaves_old_file(existing):
    path, before = existing
    data = make_dataset()
    data["annotations"][2]["callback"] = lambda: None  # valid clip, but not picklable
    with pytest.raises(ClipFormatError) as info:
        save_dataset(path, data)
    assert_one_line(info.value, str(path), "cannot pickle")
    _assert_untouched(path, before)


def test_failure_in_dump_and_replace_leaves_old_file(existing, monkeypatch):
    path, before = existing

    def boom(self, obj):
        self.write(b"partial bytes")
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as m:
        m.setattr(clips._CompatPickler, "dump", boom)
        with pytest.raises(ClipFormatError, match="disk on fire"):
            save_dataset(path, make_dataset())
    _assert_untouched(path, before)

    def no_replace(src, dst):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(clips.os, "replace", no_replace)
        with pytest.raises(ClipFormatError) as info:
            save_clip(path, make_clip())
    assert_one_line(info.value, str(path), "cannot write", "No space left")
    _assert_untouched(path, before)


def test_interrupt_during_write_cleans_up(existing, monkeypatch):
    path, before = existing

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(clips.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_dataset(path, make_dataset())
    _assert_untouched(path, before)


def test_save_into_missing_directory(tmp_path):
    path = tmp_path / "no" / "such" / "dir.pkl"
    with pytest.raises(ClipFormatError) as info:
        save_clip(path, make_clip())
    assert_one_line(info.value, str(path), "cannot write")


def test_file_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        new = tmp_path / "new.pkl"
        save_clip(new, make_clip())
        assert stat.S_IMODE(new.stat().st_mode) == 0o644  # not mkstemp's 0600
        os.chmod(new, 0o640)
        save_clip(new, make_clip(label=3))
        assert stat.S_IMODE(new.stat().st_mode) == 0o640  # replacing keeps the old mode
        assert load_clip(new)["label"] == 3
    finally:
        os.umask(umask)
