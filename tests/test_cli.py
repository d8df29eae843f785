"""The README's main job, command by command, on real files in a temporary folder."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import posestream.cli
from posestream.cli import main
from posestream.train.data.clips import load_clip, save_dataset
from posestream.train.data.sample import waving_and_walking_clip
from posestream.train.transforms import test_pipeline


def test_sample_render_and_show(tmp_path, capsys):
    clip_file = tmp_path / "sample.pkl"
    assert main(["sample-clip", "--out", str(clip_file)]) == 0
    clip = load_clip(clip_file)
    assert clip["keypoint"].shape == (2, 72, 17, 2)

    out = tmp_path / "volumes"
    assert main(["render", str(clip_file), "--out", str(out)]) == 0
    volume = np.load(out / "sample.npy")
    assert volume.shape == (1, 17, 48, 64, 64) and volume.dtype == np.float32
    np.testing.assert_array_equal(volume, test_pipeline(num_clips=1, double=False)(clip)["imgs"])
    assert json.loads((out / "index.json").read_text()) == [{"frame_dir": "sample", "label": 0, "file": "sample.npy"}]

    png = tmp_path / "volume.png"
    assert main(["show-volume", str(clip_file), "--limbs", "pyskl_released", "--out", str(png)]) == 0
    image = np.asarray(Image.open(png))
    assert image.ndim == 3 and image.shape[0] > 2 * 64 * 4  # a joints row and a limbs row
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # colour-coded heatmaps, not a blank
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def test_render_dataset_split_limbs_flip_and_resume(tmp_path, capsys):
    clips = [waving_and_walking_clip(num_frames=40 + 10 * i, seed=i) | {"frame_dir": f"S001/clip {i}", "label": i}
             for i in range(3)]
    data = tmp_path / "data.pkl"
    save_dataset(data, {"split": {"train": ["S001/clip 0", "S001/clip 1"], "val": ["S001/clip 2"]},
                        "annotations": clips})
    out = tmp_path / "v"
    args = ["render", str(data), "--split", "train", "--out", str(out), "--limbs", "pyskl_released",
            "--num-clips", "2", "--flip", "--clip-len", "16", "--size", "32"]
    assert main(args) == 0
    files = sorted(p.name for p in out.glob("*.npy"))
    assert files == ["S001_clip_0.npy", "S001_clip_1.npy"]
    assert np.load(out / files[0]).shape == (4, 17, 16, 32, 32)
    # An interrupted run resumes: existing volumes are kept, missing ones are rendered.
    (out / files[1]).unlink()
    before = (out / files[0]).stat().st_mtime_ns
    assert main(args) == 0
    assert "1 volumes rendered" in capsys.readouterr().out
    assert (out / files[0]).stat().st_mtime_ns == before and (out / files[1]).exists()


@pytest.mark.parametrize("make,args,message", [
    (None, ["render", "{dir}/missing.pkl", "--out", "{dir}/o"], "missing.pkl"),
    (b"not a pickle at all", ["render", "{file}", "--out", "{dir}/o"], "not a valid pickle"),
    ("clip", ["show-volume", "{file}", "--index", "3", "--out", "{dir}/x.png"], "out of range"),
    ("clip", ["render", "{file}", "--split", "xsub_val", "--out", "{dir}/o"], "single-clip"),
])
def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys, make, args, message):
    path = tmp_path / "input.pkl"
    if make == "clip":
        assert main(["sample-clip", "--out", str(path)]) == 0
        capsys.readouterr()
    elif make is not None:
        path.write_bytes(make)
    argv = [a.format(dir=tmp_path, file=path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert str(tmp_path) in err or "input.pkl" in err or "--index" in err


def test_console_script_is_installed(tmp_path):
    exe = shutil.which("posestream") or pytest.fail("the posestream console script is not on PATH")
    result = subprocess.run([exe, "sample-clip", "--out", str(tmp_path / "c.pkl"), "--frames", "5"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "c.pkl").exists()
    result = subprocess.run([sys.executable, "-m", "posestream", "--version"], capture_output=True, text=True,
                            timeout=120, env=os.environ)
    assert result.stdout.startswith("posestream ")


def test_cli_file_runs_as_a_script():
    # `python posestream/cli.py` runs the module's __main__ block as the file executes: every
    # command function the parser names must already exist there (the block comes last).
    import posestream.cli

    result = subprocess.run([sys.executable, posestream.cli.__file__, "--help"], capture_output=True, text=True,
                            timeout=120, env=os.environ)
    assert result.returncode == 0, result.stderr
    for command in ("train", "test", "run", "demo", "bench"):
        assert f"    {command} " in result.stdout, command


def test_cli_choices_are_the_registries():
    # Each option with a fixed set of values offers exactly what the code behind it accepts, on
    # every command that has it: a kind added to a registry appears in the CLI without a paste.
    import argparse

    from posestream.cli import build_parser
    from posestream.engines.action import ALL_ENGINE_KINDS
    from posestream.engines.pose import FRONT_ENDS, PRESETS
    from posestream.realtime.config import MODES, PACES, PRESET_SETTINGS
    from posestream.skeleton import LIMB_LAYOUTS

    registries = {"engine": ALL_ENGINE_KINDS, "limbs": tuple(LIMB_LAYOUTS), "mode": MODES, "pace": PACES,
                  "preset": tuple(PRESET_SETTINGS)}
    pose_choices = {"pose": FRONT_ENDS, "run": tuple(PRESETS), "demo": tuple(PRESETS), "bench": tuple(PRESETS)}
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    seen = set()
    for command, parser in subparsers.choices.items():
        for action in parser._actions:
            expected = pose_choices.get(command) if action.dest == "pose" else registries.get(action.dest)
            if expected is not None and action.choices is not None:
                assert tuple(action.choices) == tuple(expected), (command, action.dest)
                seen.add(action.dest)
    assert seen == set(registries) | {"pose"}


def test_command_line_options_are_defined_only_in_the_cli():
    # The library modules take typed options (TrainOptions, EvalOptions, RunConfig): argparse is
    # the CLI's business, so one option has one definition.
    root = Path(posestream.cli.__file__).resolve().parent.parent
    offenders = [str(path.relative_to(root)) for folder in ("train", "engines", "realtime", "posestream")
                 for path in sorted((root / folder).rglob("*.py"))
                 if path.name != "cli.py" and re.search(r"\bargparse\b|\.add_argument\(", path.read_text())]
    assert offenders == []


def test_models_json_lists_every_variant_with_counts(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    from posestream.train.models import MODEL_NAMES

    assert [r["name"] for r in rows] == list(MODEL_NAMES)
    by_name = {r["name"]: r for r in rows}
    assert by_name["slowonly"]["paper_name"] == "SlowOnly" and by_name["x3d_s"]["paper_name"] == "X3D-s"
    assert by_name["x3d_s"]["params_no_fc"] == 241_488
    assert abs(by_name["slowonly"]["gmacs"] - 15.63) < 0.01
    assert all(r["params"] > r["params_no_fc"] > 0 for r in rows)


def test_import_checkpoint_command(tmp_path, capsys):
    import torch

    from posestream.train.checkpoints import load_checkpoint
    from posestream.train.import_checkpoint import to_pyskl_state_dict
    from posestream.train.models import build_model

    src = tmp_path / "pyskl_limb.pth"
    torch.save({"state_dict": to_pyskl_state_dict(build_model("c3d_s", num_classes=4).state_dict()),
                "meta": {"epoch": 24}}, src)
    out = tmp_path / "ours.pth"
    assert main(["import-checkpoint", str(src), "--arch", "c3d_s", "--heatmap", "limbs", "--out", str(out)]) == 0
    card, _ = load_checkpoint(out)
    assert (card.arch, card.num_classes, card.heatmap, card.limbs) == ("c3d_s", 4, "limbs", "pyskl_released")
    capsys.readouterr()
    bad = tmp_path / "bad.pth"
    assert main(["import-checkpoint", str(src), "--arch", "x3d_s", "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "pyskl_limb.pth" in err and len(err.strip().splitlines()) == 1 and not bad.exists()


def test_synth_and_show_clip(tmp_path, capsys):
    data = tmp_path / "synth.pkl"
    assert main(["synth", "--clips", "12", "--classes", "falling,walking,waving", "--seed", "3", "--out", str(data)]) == 0
    from posestream.train.data.clips import load_dataset

    dataset = load_dataset(data)
    assert len(dataset.annotations) == 12 and set(dataset.split) == {"train", "val"}
    assert {c["label"] for c in dataset.annotations} == {0, 1, 2}
    assert list(dataset.annotations[0]["class_names"]) == ["falling", "walking", "waving"]
    gif = tmp_path / "clip.gif"
    assert main(["show-clip", str(data), "--index", "1", "--out", str(gif)]) == 0
    with Image.open(gif) as image:
        assert image.n_frames == dataset.annotations[1]["total_frames"]
    capsys.readouterr()
    assert main(["synth", "--classes", "flying", "--out", str(tmp_path / "x.pkl")]) == 2
    assert "flying" in capsys.readouterr().err
    more = tmp_path / "more.pkl"
    assert main(["synth", "--clips", "12", "--classes", "falling,walking,waving", "--seed", "3",
                 "--extra-train-clips", "6", "--out", str(more)]) == 0
    grown = load_dataset(more)
    assert grown.split["val"] == dataset.split["val"]
    assert len(grown.split["train"]) == len(dataset.split["train"]) + 6
    assert main(["synth", "--extra-train-clips", "-1", "--out", str(tmp_path / "y.pkl")]) == 2
    assert "--extra-train-clips" in capsys.readouterr().err


def test_pose_command_on_real_footage(tmp_path, capsys):
    """`posestream pose vtest.avi --overlay` with the shipped front end and the tracker."""
    import cv2

    from posestream.train.data.clips import load_dataset

    video = os.path.join(os.path.dirname(__file__), ".media", "vtest.avi")
    if not os.path.exists(video):
        pytest.fail("tests/.media/vtest.avi is missing: run tests/get_media.sh first")
    out, overlay = tmp_path / "clips.pkl", tmp_path / "overlay.mp4"
    assert main(["pose", video, "--max-frames", "40", "--min-frames", "10", "--out", str(out),
                 "--overlay", str(overlay)]) == 0
    dataset = load_dataset(out)
    assert len(dataset.annotations) >= 2  # 3 people walk through the first 40 frames
    for clip in dataset.annotations:
        assert clip["img_shape"] == (576, 768) and clip["keypoint"].shape[0] == 1
        seen = clip["keypoint_score"][0].max(axis=1) > 0
        assert seen.sum() >= 10
    capture = cv2.VideoCapture(str(overlay))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 40


def test_export_command_writes_verified_fp32_and_int8(tmp_path, capsys):
    import onnx

    from posestream.engines.action import make_engine
    from posestream.train.checkpoints import ModelCard, save_checkpoint
    from posestream.train.models import build_model

    ckpt = tmp_path / "m.pth"
    save_checkpoint(ckpt, ModelCard(arch="x3d_s", num_classes=3, clip_len=8, size=32),
                    build_model("x3d_s", num_classes=3).state_dict())
    assert main(["export", str(ckpt), "--format", "onnx", "--int8"]) == 0
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m_int8.onnx"
    assert onnx.load(str(fp32)).graph.input[0].name == "volume"
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8)).graph.node)
    engine = make_engine("onnx", fp32)
    assert engine.predict(np.random.rand(2, 17, 8, 32, 32).astype(np.float32)).shape == (2, 3)
