"""The ``posestream`` command line.

Each sub-command is one function; heavy imports happen inside it, so ``posestream --help``
stays fast and the serving commands (``run``, ``demo``, ``bench`` on an ONNX model) work
without torch, which only ``posestream[train]`` installs. Errors a user can fix (a bad file, a
bad option, that missing extra) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from pathlib import Path

from posestream import __version__
from posestream.files import atomic_write


class UsageError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


#: What the runtime install (``pip install posestream``) leaves out: training, checkpoints and
#: export need these, from the ``train`` extra.
TRAIN_EXTRA_MODULES = ("torch", "onnxscript")
TRAIN_EXTRA_HINT = ("needs the training extra (PyTorch), which `pip install posestream` leaves out (it serves "
                    'ONNX models): pip install torch==2.13.0 "posestream[train]"')


def main(argv: list[str] | None = None) -> int:
    # OpenCV and FFmpeg print their own warnings (e.g. "moov atom not found") to stderr from C;
    # posestream reports every such failure itself as one line. Set these to see them again.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except (UsageError, ValueError, OSError) as exc:
        print(f"posestream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in TRAIN_EXTRA_MODULES:
            raise
        print(f"posestream {args.command}: error: {args.command} {TRAIN_EXTRA_HINT} (no module {exc.name!r})",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"posestream {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    # The choices come from the registries that define them (none of these modules imports torch).
    from posestream.engines.action import ALL_ENGINE_KINDS
    from posestream.engines.pose import FRONT_ENDS
    from posestream.engines.pose import PRESETS as POSE_PRESETS
    from posestream.realtime.config import PACES, PRESET_SETTINGS
    from posestream.skeleton import LIMB_LAYOUTS

    parser = argparse.ArgumentParser(prog="posestream", description="Real-time skeleton action recognition "
                                     "with PoseConv3D heatmap volumes.")
    parser.add_argument("--version", action="version", version=f"posestream {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("sample-clip", help="write a small two-person sample clip (PYSKL clip format)")
    p.add_argument("--out", required=True, help="clip file to write (.pkl)")
    p.add_argument("--frames", type=int, default=72, help="number of frames (default 72)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_sample_clip)

    p = commands.add_parser("synth", help="generate a labelled synthetic skeleton-action dataset (PYSKL format)")
    p.add_argument("--out", required=True, help="dataset pickle to write")
    p.add_argument("--clips", "--num-clips", dest="clips", type=int, default=2000, help="number of clips (default 2000)")
    p.add_argument("--classes", help="comma-separated action names (default: all; see --list)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=None,
                   help="share of subjects held out for validation (default 0.2; 0.1 with --families)")
    p.add_argument("--bystander-prob", type=float, default=0.25, help="chance of a second person in a clip")
    p.add_argument("--extra-train-clips", type=int, default=0,
                   help="further clips, by new subjects, for the train split only (the val split stays that of "
                        "--clips and --seed)")
    p.add_argument("--families", action="store_true",
                   help="the shipped models' dataset: every body, style, camera and fall family, windows cut "
                        "as the runtime cuts them, and held-out families with their own validation splits")
    p.add_argument("--holdout", default=None,
                   help="with --families: KEY=VALUE,... families kept out of training (keys camera, body, style, "
                        "fall; default camera=corner,body=large,style=shuffle,fall=push; 'none' for none)")
    p.add_argument("--holdout-clips", type=int, default=240, help="with --families: clips per held-out family")
    p.add_argument("--served-share", type=float, default=0.6,
                   help="with --families: share of training samples that are served windows (the rest whole clips)")
    p.add_argument("--workers", type=int, default=1, help="processes that make the clips (the result is the same)")
    p.add_argument("--list", action="store_true", help="print the available actions and exit")
    p.set_defaults(run=cmd_synth)

    p = commands.add_parser("show-clip", help="draw a clip's skeletons over time to a GIF, WebP or MP4")
    p.add_argument("clips", help="a dataset pickle or a single-clip pickle")
    p.add_argument("--out", required=True, help="animation to write (.gif, .webp or .mp4)")
    p.add_argument("--index", type=int, default=0, help="which clip of a dataset (default 0)")
    p.add_argument("--fps", type=float, help="playback rate (default: the clip's own, else 15)")
    p.add_argument("--size", type=int, help="longest side of the drawing in pixels")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load pickles with the unrestricted unpickler (runs code: trusted files only)")
    p.set_defaults(run=cmd_show_clip)

    p = commands.add_parser("pose", help="skeleton clips (PYSKL format) of every tracked person in videos")
    p.add_argument("videos", nargs="+", help="video files")
    p.add_argument("--out", required=True, help="dataset pickle to write (one clip per track, split 'all')")
    p.add_argument("--label", type=int, default=0, help="label given to every clip (default 0)")
    p.add_argument("--overlay", help="also write an annotated video (boxes, track ids, skeletons), .mp4")
    p.add_argument("--min-frames", type=int, default=15, help="drop tracks seen in fewer frames (default 15)")
    p.add_argument("--max-frames", type=int, help="read at most this many frames of each video")
    p.add_argument("--pose", choices=FRONT_ENDS, default="default",
                   help="pose front end (default: MoveNet + BlazePose, shipped with posestream)")
    p.add_argument("--det-onnx", help="RTMDet person detector ONNX (with --pose rtm)")
    p.add_argument("--pose-onnx", help="RTMPose ONNX (with --pose rtm)")
    p.add_argument("--threads", type=int, default=1, help="threads of each pose network (default 1)")
    p.add_argument("--pose-backend", choices=["auto", "openvino", "onnx"], default="auto",
                   help="where the MoveNet + BlazePose networks run (default auto: OpenVINO when installed, else "
                        "ONNX Runtime); --pose rtm runs in ONNX Runtime")
    p.set_defaults(run=cmd_pose)

    p = commands.add_parser("train", help="train a model from a PYSKL-format config (a file or a shipped name)")
    _add_train_options(p)
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("test", help="evaluate a checkpoint: top-1/top-5/mean class, confusion, robustness")
    _add_test_options(p)
    p.set_defaults(run=cmd_test)

    p = commands.add_parser("calibrate", help="fit a temperature on held-out data (ECE before/after) and the "
                                              "confidence below which the runtime shows no label")
    p.add_argument("config", help="a config file or a shipped config's name (its test data holds the splits)")
    p.add_argument("checkpoint", help="the posestream checkpoint (.pth) to calibrate")
    p.add_argument("--split", action="append", required=True, help="split(s) to fit on (repeat for several)")
    p.add_argument("--report-split", action="append", default=[], help="further split(s) to report on only")
    p.add_argument("--target-precision", type=float, default=0.9,
                   help="labels shown must be right this often on the fitting data (default 0.9)")
    p.add_argument("--write", action="store_true", help="store temperature and min_confidence in the checkpoint")
    p.add_argument("--json", help="also write the report to this JSON file")
    p.add_argument("--trust-pickle", action="store_true", help="load the dataset with the unrestricted unpickler")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    p.set_defaults(run=cmd_calibrate)

    p = commands.add_parser("fuse", help="late fusion of saved test scores (e.g. joint + limb)")
    _add_fuse_options(p)
    p.set_defaults(run=cmd_fuse)

    p = commands.add_parser("models", help="list the networks with parameters and FLOPs beside the paper's")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--num-classes", type=int, default=60, help="classes of the final layer (default 60, NTU-60)")
    p.set_defaults(run=cmd_models)

    p = commands.add_parser("export", help="export a checkpoint to ONNX, verified against torch in ONNX Runtime; "
                            "or write a Triton model repository (--triton-repo)")
    p.add_argument("checkpoint", nargs="?", help="a posestream checkpoint (.pth); not needed with --triton-repo")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", help="ONNX file to write (default: the checkpoint's name with .onnx)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17, default 18)")
    p.add_argument("--atol", type=float, default=1e-4, help="largest |ORT - torch| logit difference accepted")
    p.add_argument("--int8", action="store_true",
                   help="also write an int8 model (static, QDQ, per-channel) calibrated on real volumes")
    p.add_argument("--calibration", help="clips (dataset or clip pickle) to calibrate int8 on "
                   "(default: posestream's sample clips; the model's own training clips are better)")
    p.add_argument("--split", help="with --calibration: use this split of the dataset")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load the calibration pickle with the unrestricted unpickler (trusted files only)")
    _add_triton_repo_options(p)
    p.set_defaults(run=cmd_export)

    p = commands.add_parser("serve", help="serve the action model and the pose networks on Triton Inference Server "
                            "(in the Python 3.13 env of scripts/setup_serve.sh)")
    _add_serve_options(p)
    p.set_defaults(run=cmd_serve)

    p = commands.add_parser("import-checkpoint", help="convert a PYSKL / MMAction2 PoseC3D checkpoint to ours")
    p.add_argument("src", help="the PYSKL or MMAction2 checkpoint (.pth)")
    p.add_argument("--arch", required=True, help="our model name (see `posestream models`), e.g. slowonly")
    p.add_argument("--out", required=True, help="posestream checkpoint to write")
    p.add_argument("--num-classes", type=int, help="default: read from the classifier weights")
    p.add_argument("--heatmap", choices=["joints", "limbs"], default="joints",
                   help="what the model was trained on (a limb model carries its limb order)")
    p.add_argument("--limbs", choices=list(LIMB_LAYOUTS),
                   help="limb order of a limb model (default pyskl_released, PYSKL's released limb configs)")
    p.add_argument("--class-names", help="a text file with one class name per line")
    p.add_argument("--clip-len", type=int, default=48, help="test-time frames per volume (default 48)")
    p.add_argument("--size", type=int, default=64, help="test-time volume size (default 64)")
    p.add_argument("--no-strict", action="store_true",
                   help="import what fits and report the rest instead of refusing")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load Python objects in the checkpoint's metadata (runs code: trusted files only)")
    p.set_defaults(run=cmd_import_checkpoint)

    p = commands.add_parser("render", help="render heatmap volumes of every clip in a clip or dataset file")
    p.add_argument("clips", help="a dataset pickle (split + annotations) or a single-clip pickle")
    p.add_argument("--out", required=True, help="folder for one VOLUME.npy per clip plus index.json")
    p.add_argument("--split", help="render only this split of a dataset")
    _add_volume_options(p)
    p.add_argument("--num-clips", type=int, default=1, help="clips sampled per video (test-time sampling)")
    p.add_argument("--flip", action="store_true", help="also render the mirrored volume (flip testing)")
    p.set_defaults(run=cmd_render)

    p = commands.add_parser("show-volume", help="draw a clip's heatmap volume as a PNG grid of frames")
    p.add_argument("clips", help="a dataset pickle or a single-clip pickle")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--index", type=int, default=0, help="which clip of a dataset (default 0)")
    p.add_argument("--frames", type=int, default=8, help="frames to show (default 8)")
    p.add_argument("--scale", type=int, default=4, help="pixel enlargement (default 4)")
    _add_volume_options(p, limbs_help="also draw the limb volume in this limb order")
    p.set_defaults(run=cmd_show_volume)
    p = commands.add_parser("run", help="watch cameras, video files, RTSP/HTTP streams or image folders: "
                            "pose, track, classify actions, raise fall events")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="camera index or /dev/videoN, video file, rtsp://..., http(s)://..., or a folder of images")
    _add_run_options(p)
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(run=cmd_run)

    p = commands.add_parser("demo", help="the webcam if there is one, else the sample video (vtest.avi from "
                            "Debian's opencv-doc): an annotated video and events")
    p.add_argument("--source", help="use this source instead of looking for a webcam / the sample video")
    p.add_argument("--out", default="demo.mp4", help="annotated video to write (default demo.mp4)")
    p.add_argument("--max-frames", type=int, default=300,
                   help="frames of the sample video to process (default 300; 0 for all)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (webcam default 30)")
    p.add_argument("--model", help="action model: a posestream checkpoint or ONNX file (default: the shipped one)")
    p.add_argument("--engine", choices=ALL_ENGINE_KINDS,
                   help="action engine")
    _add_backend_options(p)
    p.add_argument("--engine-precision", choices=["fp32", "bf16"],
                   help="with --engine openvino: bf16 (AMX) prints its accuracy check against fp32 (default fp32)")
    p.add_argument("--show", action="store_true", help="also show a live window (needs an OpenCV build with GUI)")
    p.add_argument("--http", metavar="HOST:PORT", help="serve status, MJPEG preview and /metrics here")
    p.set_defaults(run=cmd_demo)

    p = commands.add_parser("bench", help="per-stage latency and throughput of the realtime pipeline with 1, 2, 4 "
                            "streams (table + JSON)")
    p.add_argument("--video", help="video to read (default: the sample video vtest.avi)")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4], help="stream counts (default 1 2 4)")
    p.add_argument("--frames", type=int, default=150, help="frames per stream per run (default 150)")
    p.add_argument("--preset", choices=list(PRESET_SETTINGS), default="surveillance",
                   help="surveillance: default pose front end, every person; webcam: the fast front end, "
                        "landmarks for one person")
    p.add_argument("--config", help="run settings (.toml or .json) applied before --preset")
    p.add_argument("--model", help="action model (default: the shipped one)")
    p.add_argument("--engine", choices=ALL_ENGINE_KINDS,
                   help="action engine")
    _add_backend_options(p)
    p.add_argument("--engine-precision", choices=["fp32", "bf16"],
                   help="with --engine openvino: bf16 (AMX) prints its accuracy check against fp32 (default fp32)")
    p.add_argument("--pace", choices=PACES, default="realtime",
                   help="realtime: the video plays at its own rate like a camera, the pipeline drops what it "
                        "cannot take (latency as live); fast: every frame, as fast as processed (throughput)")
    p.add_argument("--detect-every", type=int, metavar="N",
                   help="run the person detector at least every N processed frames, tracking people by their "
                        "landmarks in between (default 5; 1: every frame)")
    p.add_argument("--landmark-batch", type=int, metavar="N",
                   help="at most N people per landmark-model call (default 1; 6: all people of a frame at once)")
    p.add_argument("--pose-threads", type=int, metavar="N", help="ONNX Runtime threads of each pose network")
    p.add_argument("--engine-threads", type=int, metavar="N", help="threads of the action engine")
    p.add_argument("--json", default="bench.json", help="report to write (default bench.json)")
    p.set_defaults(run=cmd_bench)
    return parser


def _add_training_process_options(p: argparse.ArgumentParser) -> None:
    """The options `train` and `test` share."""
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. data.videos_per_gpu=8 total_epochs=2 (as PYSKL's --cfg-options)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--workers", type=int, help="data loading processes (default: the config's workers_per_gpu)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's; on a busy CPU, 1 can be "
                                               "much faster)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load pickles with the unrestricted unpickler (runs code: trusted files only)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    """``posestream train CONFIG``. Launched by ``torchrun --nproc_per_node N``, the same command
    trains on N processes."""
    p.add_argument("config", help="a PYSKL-format config file, or a shipped config's name (e.g. ntu60_xsub_joint)")
    p.add_argument("--work-dir", help="where checkpoints and logs go (default: the config's work_dir)")
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/latest.pth")
    p.add_argument("--seed", type=int, help="random seed (default: the config's seed, else 0)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (smoke runs)")
    p.add_argument("--no-validate", action="store_true", help="skip validation (no best.pth)")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    _add_training_process_options(p)


def _add_test_options(p: argparse.ArgumentParser) -> None:
    """``posestream test CONFIG CHECKPOINT``."""
    p.add_argument("config", help="a PYSKL-format config file, or a shipped config's name")
    p.add_argument("checkpoint", help="a posestream checkpoint (.pth)")
    p.add_argument("--split", help="split to test (default: the config's data.test split)")
    p.add_argument("--num-clips", type=int, help="clips per video (default: the config's test pipeline, 10 in "
                                                 "PYSKL's; 1 for 1-clip testing)")
    flip = p.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_true", default=None,
                      help="also test the mirrored volumes and average (default: as the config)")
    flip.add_argument("--no-flip", dest="flip", action="store_false", help="no flip testing")
    p.add_argument("--out", help="folder for scores.npy, meta.json, results.json, confusion.png "
                                 "(default: beside the checkpoint)")
    p.add_argument("--batch-size", type=int, help="videos per forward pass (default: the config's test_dataloader)")
    p.add_argument("--robustness", action="store_true",
                   help="also run the paper's Table 7 test: drop one limb keypoint per person and frame with "
                        "p in {0, 1/8, 1/4, 1/2, 1}")
    p.add_argument("--drop-probs", type=float, nargs="+", metavar="P", help="robustness test at these probabilities")
    p.add_argument("--drop-seed", type=int, default=0, help="seed of the robustness test's draws (default 0)")
    p.add_argument("--top-confused", type=int, default=5, help="most confused class pairs to list (default 5)")
    _add_training_process_options(p)


def _add_fuse_options(p: argparse.ArgumentParser) -> None:
    """``posestream fuse RUN RUN ...``."""
    p.add_argument("runs", nargs="+", help="evaluation folders written by `posestream test` (same split)")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per run (default: all 1)")
    p.add_argument("--out", help="folder for the fused scores and results")
    p.add_argument("--top-confused", type=int, default=5, help="most confused class pairs to list (default 5)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    from posestream.engines.action import ALL_ENGINE_KINDS
    from posestream.engines.pose import PRESETS as POSE_PRESETS
    from posestream.realtime.config import MODES, PACES

    p.add_argument("--config", help="run settings file (.toml or .json; see posestream.realtime.config)")
    p.add_argument("--model", help="action model: a posestream checkpoint or ONNX file (default: the shipped one)")
    p.add_argument("--engine", choices=ALL_ENGINE_KINDS,
                   help="action engine (default auto; the GPU kinds fall back to the CPU with a notice)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where the action engine runs (default cpu)")
    _add_backend_options(p)
    p.add_argument("--engine-precision", choices=["fp32", "bf16"],
                   help="with --engine openvino: bf16 (AMX) prints its accuracy check against fp32 (default fp32)")
    p.add_argument("--pose", choices=list(POSE_PRESETS), help="pose front end preset")
    p.add_argument("--mode", choices=MODES, help="one window per person (track) or per stream (scene)")
    p.add_argument("--out", dest="video_out", help="annotated video to write (.mp4; several streams: one file each)")
    p.add_argument("--events", dest="events_out",
                   help="events as JSON lines to this file ('-' for stdout, the default)")
    p.add_argument("--webhook", help="POST each event as JSON to this URL")
    p.add_argument("--mqtt", metavar="mqtt://HOST:PORT/PREFIX",
                   help="publish events (PREFIX/<stream>/event) and label changes (PREFIX/<stream>/labels) to "
                        "this MQTT broker; PREFIX/status says online/offline (retained, last will); "
                        "mqtt://user:password@host/prefix to log in")
    p.add_argument("--mqtt-discovery", action="store_true", default=None,
                   help="with --mqtt: Home Assistant MQTT discovery, a 'Fall detected' binary sensor per stream")
    p.add_argument("--http", metavar="HOST:PORT", help="serve status, MJPEG preview and /metrics here "
                   "(127.0.0.1 unless you also give --token)")
    p.add_argument("--token", help="bearer token the HTTP server requires")
    p.add_argument("--evidence", metavar="DIR", help="keep each event (SQLite events.db) with a snapshot and an "
                   "H.264 clip under DIR (default ~/.local/share/posestream/evidence, or $XDG_DATA_HOME/posestream/"
                   "evidence); served at /api/events with --http")
    p.add_argument("--no-evidence", action="store_true", help="keep no evidence (events go only to the other sinks)")
    p.add_argument("--pre-s", dest="evidence_pre_s", type=float, help="clip seconds before an event (default 5)")
    p.add_argument("--post-s", dest="evidence_post_s", type=float, help="clip seconds after an event (default 5)")
    p.add_argument("--retention-days", type=float, help="delete evidence older than this (default 30)")
    p.add_argument("--retention-gb", type=float, help="delete the oldest evidence past this size (default 10)")
    p.add_argument("--labels", dest="labels_out", metavar="FILE|-",
                   help="one JSON line per label change per track (stream, track, label, score, time, frame)")
    p.add_argument("--show", action="store_true", default=None, help="also show a live window")
    p.add_argument("--pace", choices=PACES, help="video files at their own rate (default) or as fast "
                   "as processed")
    p.add_argument("--loop", action="store_true", default=None, help="loop video files and image folders")
    p.add_argument("--max-frames", type=int, help="stop each source after this many frames")
    p.add_argument("--landmark-batch", type=int, metavar="N",
                   help="at most N people per landmark-model call (default 1; 6: all people of a frame at once, "
                        "one round trip a frame with --pose-backend triton)")


def _add_backend_options(p: argparse.ArgumentParser) -> None:
    from posestream.engines.backend import BACKENDS

    p.add_argument("--pose-backend", choices=BACKENDS,
                   help="where the pose networks run (default auto: OpenVINO when installed, else ONNX Runtime; "
                        "triton: on the --triton-url server)")
    p.add_argument("--triton-url", metavar="grpc://HOST:PORT",
                   help="the Triton server (posestream serve) of --engine triton and --pose-backend triton")
    p.add_argument("--triton-timeout", dest="triton_timeout_s", type=float, metavar="S",
                   help="seconds a Triton call may take before it is retried and then run locally (default 2)")


def _add_volume_options(p: argparse.ArgumentParser, limbs_help: str | None = None) -> None:
    from posestream.skeleton import LIMB_LAYOUTS

    p.add_argument("--clip-len", type=int, default=48, help="frames per volume (default 48, as PYSKL's NTU configs)")
    p.add_argument("--size", type=int, default=64, help="volume height and width (default 64)")
    p.add_argument("--limbs", choices=list(LIMB_LAYOUTS),
                   help=limbs_help or "limb heatmaps in this limb order instead of joint heatmaps")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load pickles with the unrestricted unpickler (runs code: trusted files only)")


def cmd_sample_clip(args) -> int:
    from posestream.train.data.clips import save_clip
    from posestream.train.data.sample import waving_and_walking_clip

    if args.frames < 1:
        raise UsageError(f"--frames must be at least 1, got {args.frames}")
    save_clip(args.out, waving_and_walking_clip(num_frames=args.frames, seed=args.seed))
    print(f"wrote {args.out}: 2 persons x {args.frames} frames x 17 keypoints")
    return 0


def cmd_synth(args) -> int:
    from posestream.train.data.clips import save_dataset
    from posestream.train.data.synthetic import ACTIONS, generate_dataset

    if args.list:
        print("\n".join(ACTIONS))
        return 0
    classes = None
    if args.classes:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        unknown = [c for c in classes if c not in ACTIONS]
        if unknown:
            raise UsageError(f"unknown action(s) {', '.join(unknown)}; known: {', '.join(ACTIONS)}")
    if args.clips < 1:
        raise UsageError(f"--clips must be at least 1, got {args.clips}")
    if args.extra_train_clips < 0:
        raise UsageError(f"--extra-train-clips must be at least 0, got {args.extra_train_clips}")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.families:
        from posestream.train.data.served import generate_families_dataset

        holdout = None
        if args.holdout is not None:
            holdout = {}
            for item in filter(None, (x.strip() for x in args.holdout.split(","))):
                if item == "none":
                    continue
                key, sep, value = item.partition("=")
                if not sep:
                    raise UsageError(f"--holdout {args.holdout}: expected KEY=VALUE,..., got {item!r}")
                holdout[key.strip()] = value.strip()
        try:
            data = generate_families_dataset(
                args.clips, seed=args.seed, holdout=holdout, served_share=args.served_share,
                val_fraction=0.1 if args.val_fraction is None else args.val_fraction,
                holdout_clips=args.holdout_clips, classes=classes or ACTIONS, progress=True, workers=args.workers)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:
        data = generate_dataset(args.clips, classes=classes, seed=args.seed,
                                val_fraction=0.2 if args.val_fraction is None else args.val_fraction,
                                bystander_prob=args.bystander_prob, progress=True,
                                extra_train_clips=args.extra_train_clips)
    save_dataset(args.out, data)
    sizes = ", ".join(f"{name} {len(members)}" for name, members in data["split"].items())
    print(f"wrote {args.out}: {len(data['annotations'])} clips of {len(data['class_names'])} actions ({sizes})")
    return 0


def cmd_show_clip(args) -> int:
    from posestream.train.data.show import render_clip_animation

    clip = _pick_clip(args.clips, args.index, args.trust_pickle)
    path = render_clip_animation(clip, args.out, fps=args.fps, size=args.size)
    print(f"wrote {path}: {clip['frame_dir']!r}, {clip['total_frames']} frames")
    return 0


def cmd_pose(args) -> int:
    from posestream.engines.pose import PRESETS as POSE_PRESETS
    from posestream.engines.pose import make_pose_estimator
    from posestream.realtime.video_clips import extract_clips
    from posestream.train.data.clips import save_dataset

    options = {"threads": args.threads}
    if args.pose in POSE_PRESETS:
        options["backend"] = args.pose_backend
    if args.pose == "rtm":
        if not (args.det_onnx and args.pose_onnx):
            raise UsageError("--pose rtm needs --det-onnx and --pose-onnx")
        options.update(det_onnx=args.det_onnx, pose_onnx=args.pose_onnx)
    estimator = make_pose_estimator(args.pose, **options)
    data = extract_clips(args.videos, estimator, label=args.label, min_frames=args.min_frames,
                         overlay=args.overlay, max_frames=args.max_frames, progress=True)
    save_dataset(args.out, data)
    for video in data.get("videos", []):
        print(json.dumps(video))
    print(f"wrote {args.out}: {len(data['annotations'])} clips")
    return 0


def cmd_train(args) -> int:
    from posestream.train.trainer import TrainOptions, run_train

    return run_train(TrainOptions(
        config=args.config, work_dir=args.work_dir, resume=args.resume, seed=args.seed, max_steps=args.max_steps,
        validate=not args.no_validate, amp=False if args.no_amp else None, **_process_options(args)))


def _process_options(args) -> dict:
    """The ProcessOptions fields from the options of :func:`_add_training_process_options`."""
    from posestream.train.config import parse_cfg_options

    return dict(options=parse_cfg_options(args.cfg_options), device=args.device, workers=args.workers,
                threads=args.threads, trusted=args.trust_pickle, progress=not args.quiet)


def cmd_calibrate(args) -> int:
    from posestream.files import atomic_write
    from posestream.train.calibrate import calibrate
    from posestream.train.config import load_config, parse_cfg_options

    if not 0 < args.target_precision <= 1:
        raise UsageError(f"--target-precision must be in (0, 1], got {args.target_precision}")
    try:
        config = load_config(args.config, parse_cfg_options(args.cfg_options))
        report = calibrate(config, args.checkpoint, args.split, args.report_split,
                           target_precision=args.target_precision, write=args.write, trusted=args.trust_pickle)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"temperature {report['temperature']:.3f}, min_confidence {report['min_confidence']:.3f} "
          f"(labels shown right >= {args.target_precision:.0%} of the time on {', '.join(args.split)})")
    for name, row in report["splits"].items():
        shown = "-" if row["shown_top1"] is None else f"{row['shown_top1']:.1%}"
        print(f"  {name:32s} {row['videos']:5d} videos  top-1 {row['top1']:.1%}  ECE {row['ece_before']:.3f} -> "
              f"{row['ece_after']:.3f}  NLL {row['nll_before']:.3f} -> {row['nll_after']:.3f}  "
              f"shown {row['shown']:.1%} (top-1 {shown})")
    if args.json:
        atomic_write(args.json, lambda f: f.write((json.dumps(report, indent=2) + "\n").encode()))
    if args.write:
        print(f"wrote temperature and min_confidence into {args.checkpoint}")
    return 0


def cmd_test(args) -> int:
    from posestream.train.evaluate import TABLE7_DROP_PROBS, EvalOptions, run_test

    return run_test(EvalOptions(
        config=args.config, checkpoint=args.checkpoint, split=args.split, num_clips=args.num_clips, flip=args.flip,
        out_dir=args.out, batch_size=args.batch_size,
        drop_probs=args.drop_probs or (TABLE7_DROP_PROBS if args.robustness else None), drop_seed=args.drop_seed,
        top_confused=args.top_confused, **_process_options(args)))


def cmd_fuse(args) -> int:
    from posestream.train.evaluate import format_results, fuse_results

    print(format_results(fuse_results(args.runs, args.weights, out_dir=args.out, top_confused=args.top_confused)))
    return 0


def cmd_models(args) -> int:
    from posestream.train.models import MODEL_NAMES, PAPER_TABLE, build_model, model_complexity

    rows = []
    for name in MODEL_NAMES:
        model = build_model(name, num_classes=args.num_classes)
        counts = model_complexity(model)
        paper = PAPER_TABLE.get(name, {})
        rows.append({
            "name": name, "paper_name": model.paper_name, "input_shape": model.paper_input_shape,
            "params": counts["params"], "params_no_fc": counts["params_no_fc"], "gmacs": round(counts["gmacs"], 4),
            "paper_params": paper.get("params"), "paper_gmacs": paper.get("gmacs"),
        })
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"Multiply-adds (GMACs, the paper's 'GFLOPs') of conv and linear layers for one sample at the "
          f"paper's input; params with a {args.num_classes}-class fc, and without it (as the paper counts).")
    header = f"{'name':<21}{'paper name':<33}{'input':<24}{'params':>11}{'no fc':>11}{'GMACs':>9}{'paper':>15}{'d params':>10}{'d MACs':>9}"
    print(header)
    for r in rows:
        shape = "x".join(map(str, r["input_shape"])) if isinstance(r["input_shape"][0], int) else \
            " + ".join("x".join(map(str, s)) for s in r["input_shape"])
        if r["paper_params"]:
            paper = f"{_si(r['paper_params'])} / {r['paper_gmacs']}G"
            dp = f"{100 * (r['params_no_fc'] / r['paper_params'] - 1):+.1f}%"
            dm = f"{100 * (r['gmacs'] / r['paper_gmacs'] - 1):+.1f}%"
        else:
            paper, dp, dm = "-", "", ""
        print(f"{r['name']:<21}{r['paper_name']:<33}{shape:<24}{r['params']:>11,}{r['params_no_fc']:>11,}"
              f"{r['gmacs']:>9.3f}{paper:>15}{dp:>10}{dm:>9}")
    return 0


def _si(count: float) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1e6 else f"{count / 1e3:.0f}K"


def _add_triton_repo_options(p) -> None:
    from posestream.engines.triton_models import REPO_BACKENDS

    g = p.add_argument_group("Triton model repository (no torch needed)")
    g.add_argument("--triton-repo", metavar="DIR", help="write a model repository for NVIDIA's Triton server here: "
                   "the action model, MoveNet and the landmark model, each with a config.pbtxt")
    g.add_argument("--model", metavar="PATH", help="with --triton-repo: the action model's ONNX file (default: the shipped one)")
    g.add_argument("--triton-backend", choices=REPO_BACKENDS, default="onnxruntime",
                   help="Triton backend of the configs (tensorrt: ONNX Runtime with the TensorRT accelerator, on GPU)")
    g.add_argument("--max-batch", type=int, default=8, help="max_batch_size of models that batch (default 8)")
    g.add_argument("--max-queue-delay-us", type=int, default=2000,
                   help="dynamic batching: longest wait for a batch to fill, microseconds (default 2000)")
    g.add_argument("--instances", type=int, default=1, help="model instances per model (default 1)")


def cmd_export_triton_repo(args) -> int:
    from posestream.engines.triton_models import default_served_models, write_model_repository

    models = default_served_models(args.model)
    configs = write_model_repository(args.triton_repo, models, backend=args.triton_backend, max_batch=args.max_batch,
                                     max_queue_delay_us=args.max_queue_delay_us, instances=args.instances)
    for m, config in zip(models, configs):
        batching = f"max batch {args.max_batch}" if m.batch_dynamic else "batch 1 (graph has a fixed batch)"
        print(f"wrote {config.parent}: {m.what} {m.name} ({args.triton_backend}, {batching})")
    return 0


def cmd_export(args) -> int:
    if args.triton_repo:
        return cmd_export_triton_repo(args)
    if not args.checkpoint:
        raise UsageError("give a checkpoint to export, or --triton-repo DIR")
    from posestream.train.export import export_int8, export_onnx

    if args.opset < 17:
        raise UsageError(f"--opset must be at least 17, got {args.opset}")
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    report = export_onnx(args.checkpoint, out, opset=args.opset, atol=args.atol)
    print(report.summary())
    if args.int8:
        clips = _load_clips(args.calibration, args.trust_pickle, args.split) if args.calibration else None
        int8_out = out.with_name(out.stem + "_int8.onnx")
        summary = export_int8(out, int8_out, clips)
        print(f"wrote {int8_out}: calibrated on {summary['calibration_volumes']} volumes; on held-out volumes "
              f"max |int8 - fp32| / max |fp32| = {summary['max_rel_logit_error']:.3f}, "
              f"same top-1 in {100 * summary['argmax_agreement']:.0f}%")
    return 0


def _add_serve_options(p) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address the HTTP, gRPC and metrics endpoints listen on (default 127.0.0.1, loopback only; "
                        "0.0.0.0 for every interface)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP endpoint, health at /v2/health/ready (default 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC endpoint the clients use (default 8001)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Triton's Prometheus metrics at /metrics (default 8002)")
    p.add_argument("--model", metavar="PATH", help="the action model's ONNX file (default: the shipped one)")
    p.add_argument("--backend", choices=["auto", "openvino", "onnx"], default="auto",
                   help="where the served networks run (default auto: OpenVINO when installed, else ONNX Runtime)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of each network (default 1)")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch Triton forms (default 8)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000,
                   help="dynamic batching: longest a request waits for others to join its batch, microseconds (default 2000)")


def cmd_serve(args) -> int:
    from posestream.engines.triton_models import default_served_models
    from posestream.engines.triton_server import ServeError, serve

    try:
        models = default_served_models(args.model)
        return serve(models, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                     metrics_port=args.metrics_port, max_batch=args.max_batch,
                     max_queue_delay_us=args.max_queue_delay_us, threads=args.threads, backend=args.backend)
    except ServeError as exc:
        raise UsageError(str(exc)) from None


def cmd_import_checkpoint(args) -> int:
    from posestream.train.import_checkpoint import import_checkpoint

    class_names = None
    if args.class_names:
        class_names = [line.strip() for line in Path(args.class_names).read_text().splitlines() if line.strip()]
    report = import_checkpoint(args.src, args.arch, args.out, num_classes=args.num_classes, heatmap=args.heatmap,
                               limbs=args.limbs, strict=not args.no_strict, trusted=args.trust_pickle,
                               class_names=class_names, clip_len=args.clip_len, size=args.size)
    print(report.summary())
    return 0


def cmd_render(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from posestream.train.transforms import test_pipeline

    clips = _load_clips(args.clips, args.trust_pickle, args.split)
    pipeline = test_pipeline(clip_len=args.clip_len, num_clips=args.num_clips, size=args.size,
                             limbs=args.limbs, double=args.flip)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index, rendered = [], 0
    for clip in tqdm(clips, desc="render", unit="clip", disable=None):
        name = _file_name(clip["frame_dir"])
        target = out / f"{name}.npy"
        index.append({"frame_dir": clip["frame_dir"], "label": int(clip["label"]), "file": target.name})
        if target.exists():  # resume: an interrupted run leaves only complete files behind
            continue
        volume = pipeline(clip)["imgs"]
        atomic_write(target, lambda f: np.save(f, volume, allow_pickle=False))
        rendered += 1
    atomic_write(out / "index.json", lambda f: f.write(json.dumps(index, indent=1).encode()))
    shape = "x".join(map(str, volume.shape)) if rendered else "already present"
    print(f"{out}: {rendered} volumes rendered ({shape}), {len(index) - rendered} already there")
    return 0


def cmd_show_volume(args) -> int:
    from posestream.engines.draw import volume_grid
    from posestream.engines.raster import rasterize
    from posestream.train.transforms import val_pipeline

    clip = _pick_clip(args.clips, args.index, args.trust_pickle)
    # Sample, crop and resize once; draw the limbs from the same grid keypoints as the joints.
    grid = val_pipeline(clip_len=args.clip_len, size=args.size)(clip)
    rows = [("joints", grid["imgs"][0])]
    if args.limbs:
        rows.append((f"limbs ({args.limbs})", rasterize(grid["keypoint"], grid["keypoint_score"],
                                                        args.size, args.size, limbs=args.limbs)))
    image = volume_grid(rows, frames=args.frames, scale=args.scale)
    atomic_write(Path(args.out), lambda f: image.save(f, format="PNG"))
    print(f"wrote {args.out}: {clip['frame_dir']!r}, {image.width}x{image.height}")
    return 0


def _pick_clip(path: str, index: int, trusted: bool) -> dict:
    clips = _load_clips(path, trusted)
    if not 0 <= index < len(clips):
        raise UsageError(f"{path}: --index {index} is out of range (0..{len(clips) - 1})")
    return clips[index]


def _load_clips(path: str, trusted: bool, split: str | None = None) -> list[dict]:
    from posestream.train.data.clips import load_clips

    return load_clips(path, trusted=trusted, split=split)


def _file_name(frame_dir: str) -> str:
    """A clip's frame_dir as a safe file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(frame_dir)).strip("._") or "clip"



def _run_config(args, **overrides):
    from posestream.realtime.config import load_run_config

    config = load_run_config(getattr(args, "config", None))
    options = {k: getattr(args, k, None) for k in ("model", "engine", "device", "pose", "pose_backend",
                                                   "triton_url", "triton_timeout_s", "engine_precision", "mode",
                                                   "video_out",
                                                   "events_out", "webhook", "mqtt", "mqtt_discovery", "http",
                                                   "token", "show", "pace", "loop", "max_frames", "evidence",
                                                   "evidence_pre_s", "evidence_post_s", "retention_days",
                                                   "retention_gb", "labels_out", "landmark_batch")}
    return config.replace(**options).replace(**overrides)


def _print_run_summary(status: dict, out=sys.stderr) -> None:
    for s in status["streams"]:
        src = s["source"]
        print(f"{s['stream']}: {s['frames_processed']} frames processed, {src.get('frames_dropped', 0)} dropped "
              f"(the pipeline was busy), {src.get('reconnects', 0)} reconnects, "
              f"{s['windows_submitted']} windows, health {src.get('health')}"
              + (f", last error: {s['last_error']}" if s.get("last_error") else ""), file=out)
    for network, counts in status.get("triton", {}).items():
        print(f"triton {network}: {counts.get('remote_calls', 0)} calls on the server, {counts.get('local_calls', 0)} "
              f"local, {counts.get('retries', 0)} retries, {counts.get('fallbacks', 0)} fall-backs to the local "
              f"engine, {counts.get('returns', 0)} returns to the server", file=out)
    for stream, tracks in status.get("labels", {}).items():
        for key, counts in tracks.items():
            top = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
            print(f"{stream} track {key}: {top}", file=out)
    print(f"{len(status['events'])} event(s)", file=out)
    evidence = status.get("sinks", {}).get("evidence")
    if evidence:
        print(f"evidence: {evidence['complete'] + evidence['partial']} clip(s) in {evidence['folder']}", file=out)
    for path in (status.get("video_out") or {}).values():
        print(f"wrote {path}", file=out)


def cmd_run(args) -> int:
    from posestream.realtime.app import run_realtime
    from posestream.realtime.sources import parse_source, probe_source

    config = _run_config(args)
    if args.no_evidence:
        if args.evidence:
            raise UsageError("--evidence and --no-evidence contradict each other")
        config = dataclasses.replace(config, evidence=None)
    elif config.evidence is None:
        from posestream.realtime.evidence import default_evidence_dir

        config = config.replace(evidence=default_evidence_dir())
    specs = [parse_source(s) for s in args.sources]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):  # two files with one stem, two cameras...: number them
        specs = [type(s)(s.kind, s.uri, f"{s.name}_{i}") for i, s in enumerate(specs)]
    for spec in specs:
        probe_source(spec)
    status = run_realtime(specs, config, duration_s=args.duration)
    _print_run_summary(status)
    return 130 if status["interrupted"] else 0


def cmd_demo(args) -> int:
    from posestream.realtime.app import find_camera, find_sample_video, run_realtime
    from posestream.realtime.sources import parse_source, probe_source

    duration = args.duration
    if args.source:
        spec = parse_source(args.source)
    else:
        camera = find_camera()
        if camera is not None:
            print(f"demo: webcam {camera}", file=sys.stderr)
            spec = parse_source(camera)
            duration = duration or 30.0
        else:
            video = find_sample_video()
            if video is None:
                raise UsageError("no webcam and no sample video: run `sh tests/get_media.sh` in the posestream "
                                 "checkout (unpacks vtest.avi from Debian's opencv-doc), or install opencv-doc, "
                                 "or pass --source VIDEO")
            print(f"demo: no webcam; sample video {video} (Debian opencv-doc's vtest.avi)", file=sys.stderr)
            spec = parse_source(str(video))
    probe_source(spec)
    live = spec.kind in ("camera", "rtsp", "http")
    from posestream.realtime.config import RunConfig

    config = RunConfig().replace(video_out=args.out, events_out="-", model=args.model, engine=args.engine,
                                 pose_backend=args.pose_backend, engine_precision=args.engine_precision,
                                 triton_url=args.triton_url, triton_timeout_s=args.triton_timeout_s,
                                 show=args.show or None, http=args.http,
                                 pace="realtime" if live else "fast",
                                 max_frames=None if live or not args.max_frames else args.max_frames)
    status = run_realtime([spec], config, duration_s=duration)
    _print_run_summary(status)
    return 130 if status["interrupted"] else 0


def cmd_bench(args) -> int:
    from posestream.realtime.app import find_sample_video
    from posestream.realtime.bench import format_table, run_bench
    from posestream.realtime.config import PRESET_SETTINGS, load_run_config

    video = args.video or find_sample_video()
    if video is None:
        raise UsageError("no sample video: run `sh tests/get_media.sh` (vtest.avi from Debian's opencv-doc) "
                         "or pass --video")
    if any(n < 1 for n in args.streams):
        raise UsageError("--streams: counts must be >= 1")
    if args.frames < 1:
        raise UsageError("--frames must be >= 1")
    config = load_run_config(args.config).replace(**PRESET_SETTINGS[args.preset]).replace(
        model=args.model, engine=args.engine, pose_backend=args.pose_backend, engine_precision=args.engine_precision,
        triton_url=args.triton_url, triton_timeout_s=args.triton_timeout_s, detect_every=args.detect_every, landmark_batch=args.landmark_batch, pose_threads=args.pose_threads,
        engine_threads=args.engine_threads)
    report = run_bench(str(video), args.streams, args.frames, config, json_out=args.json,
                       extra={"preset": args.preset}, pace=args.pace)
    print(format_table(report))
    print(f"wrote {args.json}")
    return 0


# Last, so that every command function above exists when `python posestream/cli.py` runs main().
if __name__ == "__main__":
    sys.exit(main())
