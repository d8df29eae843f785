"""Settings of a realtime run: one dataclass, loadable from a TOML or JSON file.

``posestream run SOURCE ... --config run.toml`` reads a file like::

    pose = "surveillance"        # pose front end preset (default, webcam, surveillance)
    window_s = 3.0               # seconds of skeletons per window
    stride = 8                   # classify each track every 8 processed frames
    mode = "track"               # or "scene": all persons of a stream in one volume

    [fall]                       # FallStateMachine settings
    down_s = 2.0

    [[action_events]]            # other actions that raise events
    label = "waving"
    min_score = 0.6
    min_duration_s = 1.0

Unknown keys are errors (a typo must not silently fall back to a default). Command-line
options override the file.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from posestream.engines.crop import WINDOW_FLOOR_FRAMES, WINDOW_MIN_FRAMES, WINDOW_MIN_SPAN_S

__all__ = ["RunConfig", "load_run_config", "PRESET_SETTINGS", "MODES", "PACES"]


#: One window per person ("track") or per stream ("scene").
MODES: tuple[str, ...] = ("track", "scene")
#: Video files at their own frame rate ("realtime") or as fast as processed ("fast").
PACES: tuple[str, ...] = ("realtime", "fast")


@dataclass
class RunConfig:
    # perception
    pose: str = "default"          #: pose front end preset or name (posestream.engines.pose)
    #: threads of each pose network (OpenVINO or ONNX Runtime). 2, by measurement (README,
    #: "Detection schedule"): with the detector idle on most frames the landmark model has the second core
    pose_threads: int = 2
    pose_backend: str = "auto"     #: where the pose networks run: auto (OpenVINO if installed), openvino, onnx, triton
    #: the Triton server (grpc://HOST:PORT) of engine "triton" and pose_backend "triton"
    triton_url: str | None = None
    triton_timeout_s: float = 2.0  #: a Triton call slower than this is retried, then run locally
    max_people: int | None = None  #: landmarks for at most this many people a frame (None: all)
    #: the person detector runs at least every this many processed frames; between, people are
    #: tracked by their landmarks (front ends that can: posestream.realtime.perception). 1: always
    detect_every: int = 5
    #: ... and on every frame processed more than this many seconds after the previous one
    #: (people walk out of their last crop: a stream that slow detects every frame)
    track_max_gap_s: float = 0.3
    #: at most this many people per landmark-model call (1: one call per person, which measured
    #: faster in ONNX Runtime on CPU; 6: all people of a frame in one call)
    landmark_batch: int = 1
    # windows
    mode: str = "track"            #: "track" (one window per person) or "scene" (one per stream)
    window_s: float = 3.0          #: seconds of skeletons per window (the model saw 1.5-6 s clips)
    stride: int = 8                #: processed frames between two classifications of a track
    min_frames: int = WINDOW_MIN_FRAMES  #: observed frames that always make a window
    #: fewer observed frames make a window when there are at least floor_frames of them spanning
    #: min_span_s seconds (a slow stream's people still get labels: engines.crop.window_is_enough)
    floor_frames: int = WINDOW_FLOOR_FRAMES
    min_span_s: float = WINDOW_MIN_SPAN_S
    keep_s: float = 2.0            #: a track unseen this long is forgotten
    scene_persons: int = 2         #: persons per scene window (NTU's 2)
    # action model
    model: str | None = None       #: checkpoint or ONNX file; None: the shipped default
    engine: str = "auto"           #: auto, torch, torch-cl3d, onnx, onnx-int8, openvino, triton, torch-cuda, tensorrt
    #: "bf16": the openvino engine in bf16 (AMX), built only with its accuracy check printed
    engine_precision: str = "fp32"
    device: str = "cpu"            #: "cuda": the action engine on the GPU (auto -> torch-cuda)
    engine_threads: int = 1
    max_batch: int = 8
    max_wait_s: float = 0.005      #: a window waits at most this long for others to share its batch
    # labels and events
    smooth_alpha: float = 0.6      #: weight of the newest window in the label's moving average
    smooth_margin: float = 0.1     #: hysteresis of the displayed label
    #: a track shows no label while its smoothed top probability is below this; None: the
    #: model card's calibrated ``min_confidence`` (``posestream calibrate``), else 0.3
    min_label_score: float | None = None
    fall: dict = field(default_factory=dict)            #: FallStateMachine keyword arguments
    action_events: list = field(default_factory=list)   #: ActionEventRule keyword arguments each
    # sources
    pace: str = "realtime"         #: files at their own frame rate; "fast": as fast as processed
    loop: bool = False
    max_frames: int | None = None  #: stop each source after this many frames
    rtsp_transport: str = "tcp"
    # sinks
    video_out: str | None = None
    show: bool = False
    events_out: str | None = "-"   #: JSON lines file, "-" for stdout, None for none
    webhook: str | None = None
    #: mqtt://[user[:password]@]host[:port][/prefix]: events and label changes to a broker
    mqtt: str | None = None
    mqtt_discovery: bool = False   #: also Home Assistant MQTT discovery configs (a fall sensor per stream)
    http: str | None = None        #: "127.0.0.1:8080" serves status, MJPEG preview and /metrics
    token: str | None = None
    draw: bool = True
    #: folder for events.db and each event's snapshot and clip (posestream.realtime.evidence);
    #: None: no evidence (``posestream run`` defaults to ~/.local/share/posestream/evidence)
    evidence: str | None = None
    evidence_pre_s: float = 5.0    #: clip seconds before the event's frame
    evidence_post_s: float = 5.0   #: and after it
    retention_days: float | None = 30.0  #: evidence older than this is deleted (None: kept)
    retention_gb: float | None = 10.0    #: the oldest evidence goes when the files pass this
    #: one JSON line per label change per track to this file ("-": stdout), None for none
    labels_out: str | None = None

    def validate(self) -> "RunConfig":
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'track' or 'scene', got {self.mode!r}")
        if self.pace not in PACES:
            raise ValueError(f"pace must be 'realtime' or 'fast', got {self.pace!r}")
        if self.pose_backend not in ("auto", "openvino", "onnx", "triton"):
            raise ValueError(f"pose_backend must be auto, openvino, onnx or triton, got {self.pose_backend!r}")
        if (self.engine == "triton" or self.pose_backend == "triton") and not self.triton_url:
            raise ValueError("engine or pose_backend triton needs triton_url (--triton-url grpc://HOST:PORT)")
        if self.triton_url:
            from posestream.engines.triton import TritonError, parse_triton_url

            try:
                parse_triton_url(self.triton_url)
            except TritonError as exc:
                raise ValueError(str(exc)) from None
        if isinstance(self.triton_timeout_s, bool) or not isinstance(self.triton_timeout_s, (int, float)) \
                or not self.triton_timeout_s > 0:
            raise ValueError(f"triton_timeout_s must be > 0, got {self.triton_timeout_s!r}")
        if self.engine_precision not in ("fp32", "bf16"):
            raise ValueError(f"engine_precision must be fp32 or bf16, got {self.engine_precision!r}")
        if self.engine_precision != "fp32" and self.engine != "openvino":
            raise ValueError(f"engine_precision {self.engine_precision} needs engine openvino, got {self.engine!r}")
        if self.rtsp_transport not in ("tcp", "udp"):
            raise ValueError(f"rtsp_transport must be 'tcp' or 'udp', got {self.rtsp_transport!r}")
        for name in ("window_s", "keep_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("stride", "min_frames", "max_batch", "pose_threads", "engine_threads", "scene_persons",
                     "detect_every", "floor_frames", "landmark_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.track_max_gap_s, bool) or not isinstance(self.track_max_gap_s, (int, float)) \
                or not self.track_max_gap_s > 0:
            raise ValueError(f"track_max_gap_s must be a number of seconds > 0, got {self.track_max_gap_s!r}")
        if isinstance(self.min_span_s, bool) or not isinstance(self.min_span_s, (int, float)) or not self.min_span_s >= 0:
            raise ValueError(f"min_span_s must be a number of seconds >= 0, got {self.min_span_s!r}")
        if not 0 < self.smooth_alpha <= 1:
            raise ValueError(f"smooth_alpha must be in (0, 1], got {self.smooth_alpha}")
        if self.max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {self.max_wait_s}")
        if self.mqtt is not None and not isinstance(self.mqtt, str):
            raise ValueError(f"mqtt must be a URL string such as mqtt://127.0.0.1:1883/posestream, got {self.mqtt!r}")
        if self.mqtt_discovery and not self.mqtt:
            raise ValueError("mqtt_discovery (--mqtt-discovery) needs mqtt (--mqtt mqtt://HOST:PORT/PREFIX)")
        if not isinstance(self.fall, dict):
            raise ValueError("fall must be a table of FallStateMachine settings")
        for name in ("evidence_pre_s", "evidence_post_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 60:
                raise ValueError(f"{name} must be a number of seconds in 0..60, got {value!r}")
        for name in ("retention_days", "retention_gb"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"{name} must be a number > 0 (or unset for no limit), got {value!r}")
        if not isinstance(self.action_events, list) or not all(isinstance(r, dict) for r in self.action_events):
            raise ValueError("action_events must be a list of tables (label, min_score, min_duration_s)")
        return self

    def window_minimum(self) -> dict[str, Any]:
        """The windows' minimum as :class:`~posestream.realtime.windows.WindowScheduler` takes it."""
        return {"min_frames": self.min_frames, "floor_frames": self.floor_frames, "min_span_s": float(self.min_span_s)}

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes`` applied (None values are ignored: unset CLI options)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None}).validate()


#: What ``--preset`` means for ``demo`` and ``bench``.
PRESET_SETTINGS: dict[str, dict[str, Any]] = {
    "surveillance": {"pose": "default"},
    "webcam": {"pose": "webcam", "max_people": 1},
}


def load_run_config(path: str | os.PathLike | None, base: RunConfig | None = None) -> RunConfig:
    """Read a TOML (``.toml``) or JSON (``.json``) run configuration on top of ``base``."""
    config = base or RunConfig()
    if path is None:
        return config.validate()
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{path}: no such config file")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        elif p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            raise ValueError(f"{path}: config files are .toml or .json")
    except (json.JSONDecodeError, ValueError) as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not valid {p.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a table of settings at the top level")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return dataclasses.replace(config, **data).validate()
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
