"""The realtime pipeline: sources -> pose -> tracks -> windows -> one batcher -> events -> sinks.

Threads, and what each one owns::

    reader (one per source)      FrameReader: opens, reads, reconnects; a latest-frame slot
    detect (one per stream)      person detection on the newest frame -> a one-slot hand-off;
                                 with landmark tracking only on the frames the detection
                                 schedule names (the others are handed on undetected)
    pose (one per stream)        top-down pose per box (or, on an undetected frame, per person
                                 carried from the previous frame's landmarks), the tracker, the
                                 track histories, the windows it submits, the annotated frames
                                 it hands to sinks (and to the evidence ring, with --evidence)
    action-batcher (one)         rasterize + classify windows of every stream together
    events (one)                 label smoothing, fall state machines, event sinks, label changes
    sink threads                 video writer, event log, label log, webhook, HTTP server,
                                 evidence writer (snapshots, clips, the SQLite event store)

Detection and pose run in two threads so that, on two cores, the detector works on frame
n + 1 while the landmark model works on frame n; the ONNX Runtime sessions release the GIL.
A front end that can follow people by their landmarks (``estimator.tracks_landmarks``) runs
its detector only every ``config.detect_every``-th frame, when nobody is tracked, after a
tracked person was lost, or when frames come more than ``config.track_max_gap_s`` apart
(:mod:`posestream.realtime.perception`).
Every hand-off is a bounded slot or queue; whatever is overwritten or refused is counted.
Each per-frame stage runs supervised (:mod:`posestream.realtime.supervision`): a failure
skips its frame and is counted, a stage that keeps failing is restarted with backoff.

Shutdown (:meth:`Runtime.stop`, Ctrl-C): readers stop, the stream threads finish the frame they
hold and exit, the batcher and the events thread drain, then the sinks close (the video file is
finalised, so an interrupted run still leaves a playable video).
"""
from __future__ import annotations

import collections
import functools
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from posestream.engines.action import ActionEngine
from posestream.realtime.batcher import ActionBatcher, WindowJob, WindowResult
from posestream.realtime.config import RunConfig
from posestream.realtime.frames import Frame
from posestream.engines.pose import sanitize_people
from posestream.realtime.metrics import STAGE_LATENCY, Metrics
from posestream.realtime.supervision import StagePolicy, StageSupervisor, health_of
from posestream.realtime.tracker import CONFIRMED, ByteTracker

log = logging.getLogger(__name__)

__all__ = ["Runtime", "StreamWorker", "LabelBoard"]

#: The shipped default action model, in posestream/engines/models (see x3d_s_synthetic.md there).
DEFAULT_ACTION_MODEL = "x3d_s_synthetic.onnx"
STAGE_HELP = "latency of each pipeline stage, per frame or window"

# Bounds (README, "Bounds" lists every queue of the realtime path with these numbers).
#: Classified windows waiting for the events thread; when full the batcher drops the oldest.
RESULTS_QUEUE_SIZE = 256
#: Batches of ended tracks waiting for the events thread to forget them; when full, the
#: batch is dropped (counted) and :data:`STALE_KEY_S` catches those tracks later.
FORGET_QUEUE_SIZE = 1024
#: Events kept in :attr:`Runtime.events` (older ones fall off, counted in ``events_dropped``).
EVENT_HISTORY = 1000
#: Ended tracks whose label counts :meth:`Runtime.label_summary` still lists one by one.
ENDED_TRACKS_KEPT = 1000
#: A track (or scene) with no window for this long has its event state dropped even if its
#: forget message was lost; longer than any window gap of a live track (stride frames).
STALE_KEY_S = 60.0
#: How long stop() waits for the stream and reader threads (together), the batcher, and the
#: events thread; and for each sink to close.
JOIN_TIMEOUT_S = 10.0
SINK_CLOSE_TIMEOUT_S = 10.0
#: The evidence writer may still be encoding a few clips (about a second each) when stop() comes.
EVIDENCE_CLOSE_TIMEOUT_S = 60.0


class LabelBoard:
    """The latest smoothed label of every track, written by the events thread and read by the
    pose threads when they draw (a dict behind a lock: tiny, and readers copy what they need)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._labels: dict[tuple[str, Any], tuple[str, float]] = {}

    def set(self, stream: str, key: Any, label: str | None, score: float) -> None:
        with self._lock:
            if label is None:
                self._labels.pop((stream, key), None)
            else:
                self._labels[(stream, key)] = (label, float(score))

    def get(self, stream: str, key: Any) -> tuple[str, float] | None:
        with self._lock:
            return self._labels.get((stream, key))

    def forget(self, stream: str, keys: Sequence[Any]) -> None:
        with self._lock:
            for k in keys:
                self._labels.pop((stream, k), None)


class _Both:
    """Observe into two latency series at once (one stream's, and the pooled one)."""

    def __init__(self, *stats: Any) -> None:
        self.stats = stats

    def observe(self, seconds: float) -> None:
        for s in self.stats:
            s.observe(seconds)


@dataclass
class _Detected:
    frame: Frame
    people: list | None   # None: not detected; the pose thread tracks its people by landmarks
    detect_s: float
    reason: str | None = None  # why the detector ran (DetectionSchedule.reason)


class StreamWorker:
    """Perception for one stream: a detect thread and a pose thread (see the module docstring).

    ``reader``: a started-or-not :class:`posestream.realtime.sources.FrameReader`.
    ``estimator``: a :class:`posestream.engines.pose.PoseEstimator` (its ``detect`` runs in one
    thread and its ``refine`` in the other; they use different networks).
    ``submit``: the batcher's submit; ``results``: where the events thread sends this stream's
    drawing labels (a :class:`LabelBoard`). ``frame_sinks``: callables taking the annotated
    frame (video writer, preview).

    Every stage (``detect``, ``pose``, ``track``, ``window``, ``draw``) runs supervised
    (:mod:`posestream.realtime.supervision`, ``policy``): a failure skips that frame and is
    counted; a stage failing ``policy.restart_after`` times in a row is restarted after a
    backoff: ``detect`` and ``pose`` get a new estimator from ``estimator_factory`` (each of
    the two threads then owns its own), ``track`` a new tracker, track histories and scheduler
    (the old tracks are forgotten), ``window`` a new scheduler; ``draw`` has no state to renew.
    ``window`` and ``draw`` are skipped during their backoff instead of waiting it out. What the
    detector and the pose model return is sanitized first
    (:func:`posestream.engines.pose.sanitize_people`): non-finite or zero-size boxes are
    dropped, non-finite joints cleared, both counted.
    """

    def __init__(self, name: str, reader: Any, estimator: Any, batcher: ActionBatcher, config: RunConfig,
                 results: "queue.Queue[WindowResult]", labels: LabelBoard, metrics: Metrics,
                 frame_sinks: Sequence[Callable[[str, np.ndarray], Any]] = (), fps_hint: float | None = None,
                 forget: Callable[[str, list], Any] | None = None,
                 estimator_factory: Callable[[], Any] | None = None, policy: StagePolicy | None = None,
                 evidence: Any = None):
        from posestream.realtime.windows import StreamTracks

        self.name = name
        self.reader = reader
        self.estimator = estimator
        self.estimator_factory = estimator_factory
        # each thread's own estimator (the same object until a restart gives one a new one)
        self._detector = estimator
        self._refiner = estimator
        self.batcher = batcher
        self.config = config
        self.results = results
        self.labels = labels
        self.metrics = metrics
        self.frame_sinks = list(frame_sinks)
        # an EvidenceRecorder: given each annotated frame with its Frame (index and time)
        self.evidence = evidence
        self._fps_hint = fps_hint
        self.tracker = self._new_tracker()
        self.tracks = StreamTracks(name, keep_s=config.keep_s)
        self.forget = forget
        self._handoff = threading.Condition()
        self._pending: _Detected | None = None   # guarded by _handoff
        self._detect_done = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.scheduler = self._new_scheduler()
        # Landmark tracking (posestream.realtime.perception): the detector runs only on the
        # frames the schedule names; the others' people are followed from the previous frame's
        # landmarks (self._carried, owned by the pose thread). The schedule and _pose_busy are
        # guarded by _handoff.
        from posestream.realtime.perception import DetectionSchedule

        self._tracking = bool(getattr(estimator, "tracks_landmarks", False)) and config.detect_every > 1
        self.schedule = DetectionSchedule(config.detect_every if self._tracking else 1, config.track_max_gap_s)
        self._carried: list = []
        self._pose_busy = False
        self._processed = 0
        self._fps_times: list[float] = []
        # frames_skipped: frames a failed detect/pose/track call left out; people_dropped:
        # detections with a non-finite, zero-size or malformed box; joints_cleared: non-finite
        # joints zeroed; errors: failed stage calls plus thread crashes
        # detector_calls: frames that ran the person detector (the others were tracked by
        # landmarks); people_seen: people kept, summed over processed frames
        self.counts = {"frames_processed": 0, "frames_skipped": 0, "windows_submitted": 0,
                       "windows_refused": 0, "people_dropped": 0, "joints_cleared": 0, "errors": 0,
                       "detector_calls": 0, "people_seen": 0}
        self.policy = policy or StagePolicy()
        restarts = {"detect": self._restart_detect, "pose": self._restart_pose, "track": self._restart_tracks,
                    "window": self._restart_windows, "draw": None}
        # the stream needs detect, pose and track for anything; without windows or drawing it
        # still tracks, so those two skip their backoff instead of waiting it out
        self.stages = {stage: StageSupervisor(name, stage, self.policy, self._stop, restart=restart, metrics=metrics,
                                              blocking=stage in ("detect", "pose", "track"))
                       for stage, restart in restarts.items()}
        self._sanitized = metrics.counter("posestream_detections_dropped_total",
                                          "detections with a non-finite, zero-size or malformed box", stream=name)
        self.last_error: str | None = None
        self._crashed: str | None = None
        self.latest_tracks: list = []
        self.done = threading.Event()
        # per stream, and pooled over every stream (what bench reports)
        self._lat = {stage: _Both(metrics.latency(STAGE_LATENCY, STAGE_HELP, stream=name, stage=stage),
                                  metrics.latency(STAGE_LATENCY, STAGE_HELP, stream="all", stage=stage))
                     for stage in ("read", "detect", "pose", "track", "window", "frame")}
        self._frames_total = metrics.counter("posestream_frames_total", "frames processed", stream=name)
        self._skipped_total = metrics.counter("posestream_frames_skipped_total",
                                              "frames a failed detect, pose or track call left out", stream=name)

    # ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._guard, args=(self._detect_loop,), name=f"detect-{self.name}",
                                          daemon=True),
                         threading.Thread(target=self._guard, args=(self._pose_loop,), name=f"pose-{self.name}",
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        for t in self._threads:
            t.join(timeout)

    def alive_threads(self) -> list[str]:
        """Names of this stream's threads still running."""
        return [t.name for t in self._threads if t.is_alive()]

    @property
    def health(self) -> str:
        """``"ok"``, ``"degraded: <stage> failing|restarting"`` or ``"stopped: <error>"``
        (a thread crashed outside any stage)."""
        if self._crashed is not None:
            return f"stopped: {self._crashed}"
        return health_of(self.stages)

    def fps(self) -> float:
        """Processed frames per second over the last 5 s."""
        now = time.monotonic()
        recent = [t for t in list(self._fps_times) if now - t < 5.0]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0

    def status(self) -> dict[str, Any]:
        return {"stream": self.name, "health": self.health, **self.counts, "fps": round(self.fps(), 2),
                "detection": self.schedule.stats(),
                "tracks": len(self.latest_tracks), "last_error": self.last_error,
                "stages": {name: s.status() for name, s in self.stages.items()}, "source": self.reader.stats()}

    # -- restarts (each runs in the thread of the stage it restarts) ---------------------------

    def _new_tracker(self) -> ByteTracker:
        est = self.estimator
        thresholds = est.tracker_thresholds() if hasattr(est, "tracker_thresholds") else {}
        return ByteTracker(**thresholds, max_lost_s=1.0, fps=self._fps_hint)

    def _new_scheduler(self):
        from posestream.realtime.windows import WindowScheduler

        c = self.config
        return WindowScheduler(clip_len=self.batcher.clip_len, size=self.batcher.size, window_s=c.window_s,
                               stride=c.stride, **c.window_minimum(), mode=c.mode, scene_persons=c.scene_persons)

    def _restart_detect(self) -> None:
        if self.estimator_factory is not None:
            self._detector = self.estimator_factory()

    def _restart_pose(self) -> None:
        if self.estimator_factory is not None:
            self._refiner = self.estimator_factory()

    def _restart_windows(self) -> None:
        self.scheduler = self._new_scheduler()

    def _restart_tracks(self) -> None:
        """A new tracker, new track histories and a new scheduler (the pose thread owns all
        three); the tracks held so far are forgotten downstream."""
        from posestream.realtime.windows import StreamTracks

        gone = self.tracks.active_ids()
        self._carried = []
        self.tracker = self._new_tracker()
        self.tracks = StreamTracks(self.name, keep_s=self.config.keep_s)
        self.scheduler = self._new_scheduler()
        self.latest_tracks = []
        if gone and self.forget is not None:
            self.forget(self.name, list(gone))

    # ------------------------------------------------------------------------------------------

    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except Exception as exc:  # a bug outside the stages: this stream ends, the others go on
            self.counts["errors"] += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._crashed = self.last_error
            log.exception("stream %s: %s stopped", self.name, threading.current_thread().name)
            self._stop.set()
        finally:
            if threading.current_thread().name.startswith("detect-"):
                with self._handoff:
                    self._detect_done = True
                    self._handoff.notify_all()
            else:
                self.done.set()

    # The hand-off between the two threads holds at most one detected frame, and the detect
    # thread reads a new frame only once the pose thread has taken the last one: detection of
    # frame n + 1 overlaps the pose of frame n, and no frame is detected that pose would never
    # process (frames the pipeline cannot take are dropped in the reader's slot, before any work
    # is spent on them, and counted there). A frame waits at most one pose step in between.
    # With landmark tracking, a frame the schedule may leave to the landmark model waits until
    # the pose thread has finished the previous one (the detect thread has nothing else to do
    # then): that frame's outcome decides (a lost track sends this one to the detector), and
    # the frame taken is the newest.

    def _detect_loop(self) -> None:
        while not self._stop.is_set():
            with self._handoff:
                while self._pending is not None and not self._stop.is_set():
                    self._handoff.wait(0.1)
                if self._tracking and not self.schedule.due():
                    while self._pose_busy and not self._stop.is_set():
                        self._handoff.wait(0.1)
            frame = self.reader.get(timeout=0.2)
            if frame is None:
                if self.reader.ended.is_set():
                    frame = self.reader.get(timeout=0)  # a last frame may still sit in the slot
                    if frame is None:
                        return
                else:
                    continue
            self._lat["read"].observe(max(0.0, time.monotonic() - frame.t_capture))
            with self._handoff:
                reason = self.schedule.reason(frame.t_clock) if self._tracking else "period"
                self.schedule.dispatch(reason, frame.t_clock)
            if reason is None:
                with self._handoff:
                    self._pending = _Detected(frame, None, 0.0)
                    self._handoff.notify_all()
                continue
            t0 = time.perf_counter()
            ok, people = self._run_stage("detect", self._detect, frame)
            detect_s = time.perf_counter() - t0
            if not ok:
                with self._handoff:  # no outcome to wait for: the next frame tries the detector again
                    self.schedule.record(0)
                self._skip_frame()
                continue
            self._lat["detect"].observe(detect_s)
            with self._handoff:
                self._pending = _Detected(frame, people, detect_s, reason)
                self._handoff.notify_all()

    def _pose_loop(self) -> None:
        while True:
            with self._handoff:
                while self._pending is None and not self._detect_done:
                    self._handoff.wait(0.1)
                item, self._pending = self._pending, None
                self._pose_busy = item is not None
                self._handoff.notify_all()
            if item is None:  # the detect thread ended and nothing is left
                return
            try:
                if not self._stop.is_set():
                    self._process(item)
            finally:
                with self._handoff:
                    self._pose_busy = False
                    self._handoff.notify_all()

    def _detect(self, frame: Frame) -> list:
        people = self._detector.detect(frame.image)
        return self._sanitize(people, frame)

    def _refine(self, frame: Frame, people: list | None) -> tuple[list, int]:
        """-> (people, tracked people lost). ``people`` None: track by landmarks."""
        if people is None:
            kept = self._refiner.track(frame.image, self._carried)
            return self._sanitize(kept, frame), int(self._refiner.lost)
        if self._tracking:
            return self._sanitize(self._refiner.refine(frame.image, people, carried=self._carried), frame), 0
        return self._sanitize(self._refiner.refine(frame.image, people), frame), 0

    def _sanitize(self, people: list, frame: Frame) -> list:
        kept, dropped, cleared = sanitize_people(people, frame.shape)
        if dropped:
            self.counts["people_dropped"] += dropped
            self._sanitized.inc(dropped)
        self.counts["joints_cleared"] += cleared
        return kept

    def _track(self, frame: Frame, people: list) -> list:
        tracks = self.tracker.update(people, frame_index=frame.index)
        dropped = self.tracks.update(tracks, frame.index, frame.t_clock, img_shape=frame.shape)
        if dropped and self.forget is not None:
            self.forget(self.name, list(dropped))
        return tracks

    def _draw(self, frame: Frame, tracks: list) -> None:
        annotated = self._annotate(frame, tracks)
        for sink in self.frame_sinks:
            sink(self.name, annotated)
        if self.evidence is not None:
            self.evidence.add_frame(self.name, frame, annotated)

    def _run_stage(self, stage: str, fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        supervisor = self.stages[stage]
        failures = supervisor.failures
        result = supervisor.run(fn, *args)
        if supervisor.failures != failures:
            self.counts["errors"] += 1
        return result

    def _skip_frame(self) -> None:
        self.counts["frames_skipped"] += 1
        self._skipped_total.inc()

    def _process(self, item: _Detected) -> None:
        frame = item.frame
        t0 = time.perf_counter()
        detected = item.people is not None
        ok, result = self._run_stage("pose", self._refine, frame, item.people)
        if not ok:
            self._carried = []
            with self._handoff:  # nothing to track from: the next frame goes to the detector
                self.schedule.record(0)
                self._handoff.notify_all()
            return self._skip_frame()
        people, lost = result
        self._carried = people
        with self._handoff:
            self.schedule.record(len(people), lost)
            self._handoff.notify_all()
        if detected:
            self.counts["detector_calls"] += 1
        self.counts["people_seen"] += len(people)
        t1 = time.perf_counter()
        ok, tracks = self._run_stage("track", self._track, frame, people)
        if not ok:
            return self._skip_frame()
        t2 = time.perf_counter()
        self._run_stage("window", self._submit_windows, frame)  # on failure only this frame's windows are lost
        t3 = time.perf_counter()
        self.latest_tracks = tracks
        self._lat["pose"].observe(t1 - t0)
        self._lat["track"].observe(t2 - t1)
        self._lat["window"].observe(t3 - t2)
        if self.frame_sinks or self.evidence is not None:  # on failure: missing from video, preview, evidence
            self._run_stage("draw", self._draw, frame, tracks)
        self.counts["frames_processed"] += 1
        self._frames_total.inc()
        self._lat["frame"].observe(time.monotonic() - frame.t_capture)
        self._fps_times.append(time.monotonic())
        if len(self._fps_times) > 64:
            del self._fps_times[:32]

    def _submit_windows(self, frame: Frame) -> None:
        for key, sample, frames in self.scheduler.due(self.tracks, frame.t_clock):
            job = WindowJob(self.name, key, sample.keypoint, sample.score, sample.t_last_capture,
                            sample.last_frame, self.results, frames, read_offset=frame.t_capture - frame.t_clock)
            if self.batcher.submit(job):
                self.counts["windows_submitted"] += 1
            else:
                self.counts["windows_refused"] += 1

    def _annotate(self, frame: Frame, tracks: list) -> np.ndarray:
        from posestream.realtime.video_clips import draw_tracks, track_color

        import cv2

        image = frame.image.copy()
        if not self.config.draw:
            return image
        draw_tracks(image, tracks)
        h = image.shape[0]
        scale = max(0.4, h / 720)
        thick = max(1, round(h / 360))
        for t in tracks:
            if t.state != CONFIRMED:
                continue
            label = self.labels.get(self.name, t.track_id)
            if label is None:
                continue
            x1, _, _, y2 = (int(v) for v in t.box[:4])
            text = f"{label[0]} {label[1]:.2f}"
            cv2.putText(image, text, (x1, y2 + int(16 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale,
                        track_color(t.track_id), thick, cv2.LINE_AA)
        scene = self.labels.get(self.name, "scene")
        header = f"{self.name}  {self.fps():.1f} fps  {len([t for t in tracks if t.state == CONFIRMED])} people"
        if scene is not None:
            header += f"  scene: {scene[0]} {scene[1]:.2f}"
        cv2.putText(image, header, (8, int(24 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0),
                    thick + 2, cv2.LINE_AA)
        cv2.putText(image, header, (8, int(24 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255),
                    thick, cv2.LINE_AA)
        return image


class Runtime:
    """Everything of one run: readers, stream workers, the batcher, events and sinks.

    ``sources``: :class:`posestream.realtime.sources.SourceSpec` s. ``engine``: the action
    engine (default: the configured or shipped model). ``estimator_factory()``: a new pose
    estimator per stream (default: ``make_pose_estimator(config.pose, ...)``). ``on_event``:
    extra callables given each event dict (the CLI's event sinks are set up from the config).
    ``on_label_change``: callables given a :func:`~posestream.realtime.events.label_change` dict
    each time a track's displayed label changes (the MQTT sink's is added from the config);
    like ``on_event`` they run on the events thread and must not block.
    ``stage_policy``: when a stream's failing stage is restarted (:class:`StagePolicy`).

    Memory stays bounded however long it runs: :attr:`events` keeps the last
    :data:`EVENT_HISTORY` events (``events_dropped`` counts the older ones; every event went to
    the sinks), per-track state (label smoothing, fall machines, label counts) goes with its
    track, and every hand-off between threads has a fixed bound (README, "Bounds").
    """

    def __init__(self, sources: Sequence[Any], config: RunConfig | None = None, *,
                 engine: ActionEngine | None = None, estimator_factory: Callable[[], Any] | None = None,
                 metrics: Metrics | None = None, on_event: Sequence[Callable[[dict], Any]] = (),
                 on_label_change: Sequence[Callable[[dict], Any]] = (),
                 stage_policy: StagePolicy | None = None):
        from posestream.realtime.sources import FrameReader

        self.config = (config or RunConfig()).validate()
        self.metrics = metrics or Metrics()
        self.engine = engine or load_action_engine(self.config)
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"stream names must be unique, got {', '.join(names)}")
        if not sources:
            raise ValueError("no sources given")
        self.sources = list(sources)
        self.batcher = ActionBatcher(self.engine, max_batch=self.config.max_batch,
                                     max_wait_s=self.config.max_wait_s, metrics=self.metrics)
        self.workers: list[Any] = []
        self.metrics.add_refresher(self._triton_metrics)
        self.labels = LabelBoard()
        self.results: "queue.Queue[WindowResult]" = queue.Queue(maxsize=RESULTS_QUEUE_SIZE)
        self.on_event = list(on_event)
        self.on_label_change = list(on_label_change)  # the label-change hook (see _on_result)
        self.events: "collections.deque[dict]" = collections.deque(maxlen=EVENT_HISTORY)
        self.events_total = 0    # events raised (all sent to the sinks); events holds the newest
        self._label_counts: dict[tuple[str, Any], dict[str, int]] = {}  # live tracks
        # the ENDED_TRACKS_KEPT most recently ended tracks' counts, then per stream the sum of older ones
        self._ended_counts: "collections.OrderedDict[tuple[str, Any], dict[str, int]]" = collections.OrderedDict()
        self._older_label_counts: dict[str, dict[str, int]] = {}
        self._last_result: dict[tuple[str, Any], float] = {}  # monotonic time of each key's newest window
        self._next_prune = 0.0
        self._shown_counts: dict[str, dict[str, int]] = {}  # per stream: displayed labels ("none": not sure)
        self._events_lock = threading.Lock()
        self._event_sinks: list[Any] = []
        self._frame_sinks: list[Any] = []
        # (name, close, finished): each sink's close and whether its thread then ended
        self._closers: list[tuple[str, Callable[[], Any], Callable[[], bool]]] = []
        self.preview = None
        self.server = None
        self.evidence = None   # an EvidenceRecorder with --evidence
        factory = estimator_factory or (lambda: default_estimator(self.config))
        self.readers = [FrameReader(s, pace=self.config.pace, loop=self.config.loop,
                                    rtsp_transport=self.config.rtsp_transport, max_frames=self.config.max_frames)
                        for s in self.sources]
        self._setup_sinks()
        self._forget: "queue.Queue[tuple[str, list]]" = queue.Queue(maxsize=FORGET_QUEUE_SIZE)
        self.workers = [StreamWorker(s.name, r, factory(), self.batcher, self.config, self.results, self.labels,
                                     self.metrics, self._frame_sinks, fps_hint=_nominal_fps(r),
                                     forget=self._forget_tracks, estimator_factory=factory, policy=stage_policy,
                                     evidence=self.evidence)
                        for s, r in zip(self.sources, self.readers)]
        self.not_finished: list[str] = []  # what stop() left running
        self._event_logic: dict[str, Any] = {}
        self._events_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stopped = False
        self.t_start: float | None = None
        self.label_latency = self.metrics.latency(STAGE_LATENCY, STAGE_HELP, stream="all", stage="frame_to_label")

    # ------------------------------------------------------------------------------------------

    def _setup_sinks(self) -> None:
        from posestream.realtime import sinks

        cfg = self.config
        self.sinks: dict[str, Any] = {}
        # a bad --mqtt URL fails here, before any sink has started a thread or opened a file
        mqtt_target = None
        if cfg.mqtt:
            from posestream.realtime.mqtt import parse_mqtt_url

            mqtt_target = parse_mqtt_url(cfg.mqtt)
        if cfg.video_out:
            paths = _video_paths(cfg.video_out, [s.name for s in self.sources])
            writers = {s.name: sinks.VideoSink(p, _nominal_fps(r) or 10.0, metrics=self.metrics, name=f"video-{s.name}")
                       for s, r, p in zip(self.sources, self.readers, paths)}
            self.video_paths = {k: str(v) for k, v in zip(writers, paths)}
            self._frame_sinks.append(lambda stream, image: writers[stream].write(image))
            self._closers.extend((f"video-{k}", functools.partial(w.close, SINK_CLOSE_TIMEOUT_S),
                                  lambda w=w: w.finished) for k, w in writers.items())
            self.sinks.update({f"video-{k}": w for k, w in writers.items()})
        if cfg.http or cfg.show:
            self.preview = sinks.PreviewStore()
            self._frame_sinks.append(self.preview.update)
        if cfg.events_out:
            log_sink = sinks.EventLog(None if cfg.events_out == "-" else cfg.events_out, metrics=self.metrics,
                                      name="events")
            self._event_sinks.append(log_sink.emit)
            self._closers.append(("events", functools.partial(log_sink.close, SINK_CLOSE_TIMEOUT_S),
                                  lambda: log_sink.finished))
            self.sinks["events"] = log_sink
        if cfg.webhook:
            hook = sinks.WebhookSink(cfg.webhook, metrics=self.metrics, name="webhook")
            self._event_sinks.append(hook.emit)
            self._closers.append(("webhook", functools.partial(hook.close, SINK_CLOSE_TIMEOUT_S),
                                  lambda: hook.finished))
            self.sinks["webhook"] = hook
        if mqtt_target is not None:
            from posestream.realtime.mqtt import MqttSink

            broker = MqttSink(mqtt_target, streams=[s.name for s in self.sources], discovery=cfg.mqtt_discovery,
                              metrics=self.metrics, name="mqtt")
            self._event_sinks.append(broker.emit)
            self.on_label_change.append(broker.emit_label)
            self._closers.append(("mqtt", functools.partial(broker.close, SINK_CLOSE_TIMEOUT_S),
                                  lambda: broker.finished))
            self.sinks["mqtt"] = broker
        if cfg.evidence:
            from posestream.realtime.evidence import EvidenceRecorder

            recorder = self.evidence = EvidenceRecorder(
                cfg.evidence, pre_s=cfg.evidence_pre_s, post_s=cfg.evidence_post_s,
                retention_days=cfg.retention_days, retention_gb=cfg.retention_gb, metrics=self.metrics)
            self._event_sinks.append(recorder.on_event)
            self._closers.append(("evidence", functools.partial(recorder.close, EVIDENCE_CLOSE_TIMEOUT_S),
                                  lambda: recorder.finished))
            self.sinks["evidence"] = recorder
        if cfg.labels_out:
            # one JSON line per label change: the same contract (events.label_change) as MQTT's
            labels = sinks.EventLog(None if cfg.labels_out == "-" else cfg.labels_out, metrics=self.metrics,
                                    name="labels")
            self.on_label_change.append(labels.emit)
            self._closers.append(("labels", functools.partial(labels.close, SINK_CLOSE_TIMEOUT_S),
                                  lambda: labels.finished))
            self.sinks["labels"] = labels
        if cfg.http:
            host, _, port = cfg.http.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"--http {cfg.http}: expected HOST:PORT, e.g. 127.0.0.1:8080")
            self.server = sinks.StatusServer(host, int(port), token=cfg.token, status_fn=self.status,
                                             metrics=self.metrics, preview_fn=self.preview.get,
                                             events=None if self.evidence is None else self.evidence.store)
            server = self.server
            self._closers.insert(0, ("http", functools.partial(server.close, SINK_CLOSE_TIMEOUT_S),
                                     lambda: not server.alive))

    def start(self) -> "Runtime":
        self.t_start = time.monotonic()
        # Every batch size once: ONNX Runtime plans memory per input shape, and a first call at
        # a new batch size took hundreds of ms (it showed as the tail of frame-to-label latency).
        for batch in range(1, self.config.max_batch + 1):
            self.engine.warmup(batch)
        for w in self.workers:  # the same for the landmark model's batch sizes (all people of a frame)
            warmup = getattr(w.estimator, "warmup", None)
            if warmup is not None:
                warmup()
        self.batcher.start()
        self._events_thread = threading.Thread(target=self._events_loop, name="events", daemon=True)
        self._events_thread.start()
        if self.server is not None:
            self.server.start()
            log.info("status page at %s", self.server.url)
        for r in self.readers:
            r.start()
        for w in self.workers:
            w.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every stream has ended (or ``timeout``); True when all ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for w in self.workers:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not w.done.wait(remaining):
                return False
        return True

    def stop(self) -> list[str]:
        """Shut down in order (idempotent): readers, streams, batcher, events, sinks. Returns
        (and logs, and keeps in :attr:`not_finished`) the name of every thread or sink that did
        not finish within its timeout (:data:`JOIN_TIMEOUT_S` each, sinks
        :data:`SINK_CLOSE_TIMEOUT_S`); an empty list is a clean shutdown."""
        if self._stopped:
            return list(self.not_finished)
        self._stopped = True
        left: list[str] = []
        for r in self.readers:
            r.stop()
        for w in self.workers:
            w.stop()
        deadline = time.monotonic() + JOIN_TIMEOUT_S  # one budget for all streams, not one each
        for w in self.workers:
            w.join(max(0.0, deadline - time.monotonic()))
            left.extend(w.alive_threads())
        for r in self.readers:
            if not r.join(max(0.0, deadline - time.monotonic())):
                left.append(f"reader-{r.name}")
        # let the windows already submitted come back, then stop the batcher and events
        drain = time.monotonic() + 2.0
        while time.monotonic() < drain and (self.batcher.stats()["queued"] or not self.results.empty()):
            time.sleep(0.02)
        if not self.batcher.close(JOIN_TIMEOUT_S):
            left.append("action-batcher")
        self._stop.set()
        if self._events_thread is not None:
            self._events_thread.join(JOIN_TIMEOUT_S)
            if self._events_thread.is_alive():
                left.append("events")
        for name, close, finished in self._closers:
            try:
                close()
            except Exception:
                log.exception("closing sink %s failed", name)
            if not finished():
                left.append(f"sink {name}")
        self.not_finished = left
        if left:
            log.error("shutdown: %d thread(s) or sink(s) did not finish in time: %s", len(left), ", ".join(left))
        else:
            log.info("shutdown: every thread and sink finished")
        return list(left)

    def __enter__(self) -> "Runtime":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------

    def _logic(self, stream: str):
        from posestream.realtime.events import EventLogic

        logic = self._event_logic.get(stream)
        if logic is None:
            cfg = self.config
            logic = self._event_logic[stream] = EventLogic(
                stream, self.engine.class_names or [str(i) for i in range(self.engine.num_classes)],
                smooth_alpha=cfg.smooth_alpha, smooth_margin=cfg.smooth_margin,
                min_score=label_threshold(cfg.min_label_score, self.engine),
                fall=cfg.fall, action_rules=cfg.action_events)
        return logic

    def _forget_tracks(self, stream: str, track_ids: list) -> None:
        """Called by a stream's pose thread: tracks it dropped; the events thread forgets them."""
        try:
            self._forget.put_nowait((stream, track_ids))
        except queue.Full:  # the events thread is far behind; the stale-key pruning catches these
            self.metrics.counter("posestream_frames_dropped_total", "dropped", stream=stream, stage="forget").inc()
            log.warning("stream %s: the forget queue is full; %d ended tracks wait for the stale-key pruning",
                        stream, len(track_ids))

    def _forget_keys(self, stream: str, keys: Sequence[Any]) -> None:
        """Drop all per-track state of ``keys`` (events thread only); their label counts go to
        the stream's ended-track totals."""
        logic = self._event_logic.get(stream)
        for key in keys:
            if logic is not None:
                logic.forget(key)
            self._last_result.pop((stream, key), None)
            counts = self._label_counts.pop((stream, key), None)
            if counts:
                self._ended_counts[(stream, key)] = counts
        while len(self._ended_counts) > ENDED_TRACKS_KEPT:
            (old_stream, _), counts = self._ended_counts.popitem(last=False)
            older = self._older_label_counts.setdefault(old_stream, {})
            for label, n in counts.items():
                older[label] = older.get(label, 0) + n
        self.labels.forget(stream, keys)

    def _prune_stale(self, now: float) -> None:
        """The backstop for lost forget messages: keys with no window for STALE_KEY_S."""
        stale: dict[str, list] = {}
        limit = max(STALE_KEY_S, 4 * self.config.keep_s)  # never before the tracker itself lets go
        for (stream, key), t in self._last_result.items():
            if now - t > limit:
                stale.setdefault(stream, []).append(key)
        for stream, keys in stale.items():
            log.info("stream %s: forgetting %d tracks with no window for %.0f s", stream, len(keys), limit)
            self._forget_keys(stream, keys)

    def _events_loop(self) -> None:
        while not (self._stop.is_set() and self.results.empty()):
            while True:
                try:
                    stream, ids = self._forget.get_nowait()
                except queue.Empty:
                    break
                self._forget_keys(stream, ids)
            now = time.monotonic()
            if now >= self._next_prune:
                self._next_prune = now + STALE_KEY_S / 4
                self._prune_stale(now)
            try:
                result = self.results.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._on_result(result)
            except Exception:
                log.exception("events: handling a result of stream %s failed", result.stream)

    def _on_result(self, result: WindowResult) -> None:
        now = time.monotonic()
        self.label_latency.observe(now - result.t_last_read)
        self.metrics.latency(STAGE_LATENCY, STAGE_HELP, stream=result.stream,
                             stage="frame_to_label").observe(now - result.t_last_read)
        logic = self._logic(result.stream)
        wall = time.time() - (now - result.t_last_read)
        events, label = logic.on_result(result.key, wall, result.t_last_capture, result.probs, result.context,
                                        result.frame_index)
        previous = self.labels.get(result.stream, result.key)
        self.labels.set(result.stream, result.key, *(label or (None, 0.0)))
        if self.on_label_change and (previous and previous[0]) != (label and label[0]):
            self._label_changed(result, label, wall)
        shown = self._shown_counts.setdefault(result.stream, {})  # bounded: one entry per class
        name = label[0] if label else "none"
        shown[name] = shown.get(name, 0) + 1
        top = self.engine.class_names[result.label_index] if self.engine.class_names else str(result.label_index)
        seen = self._label_counts.setdefault((result.stream, result.key), {})
        seen[top] = seen.get(top, 0) + 1
        self._last_result[(result.stream, result.key)] = now
        for event in events:
            record = event.to_dict()
            with self._events_lock:
                self.events.append(record)  # a ring: the oldest falls off
                self.events_total += 1
            self.metrics.counter("posestream_events_total", "events raised", stream=result.stream,
                                 label=record.get("label", "")).inc()
            for sink in self._event_sinks + self.on_event:
                try:
                    sink(record)
                except Exception:
                    log.exception("an event sink failed")

    def _label_changed(self, result: WindowResult, label: tuple[str, float] | None, wall: float) -> None:
        """One message per change of a track's displayed label, to every ``on_label_change``."""
        from posestream.realtime.events import label_change

        change = label_change(result.stream, result.key, *(label or (None, None)), wall, result.frame_index)
        for listener in self.on_label_change:
            try:
                listener(change)
            except Exception:
                log.exception("a label-change listener failed")

    # ------------------------------------------------------------------------------------------

    def label_summary(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per stream, per track (or "scene"): how many windows got each top-1 label. Tracks
        that ended more than :data:`ENDED_TRACKS_KEPT` tracks ago are summed under
        ``"older_tracks"`` (one entry per track ever seen would grow with uptime)."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        every = list(self._ended_counts.items()) + list(self._label_counts.items())
        for (stream, key), counts in sorted(every, key=lambda kv: (kv[0][0], str(kv[0][1]))):
            out.setdefault(stream, {})[str(key)] = dict(counts)
        for stream, counts in sorted(self._older_label_counts.items()):
            out.setdefault(stream, {})["older_tracks"] = dict(counts)
        return out

    def recent_events(self) -> list[dict]:
        """A copy of the newest events (at most :data:`EVENT_HISTORY`), oldest first."""
        with self._events_lock:
            return list(self.events)

    @property
    def events_dropped(self) -> int:
        """Events that fell off :attr:`events` (they went to the sinks all the same)."""
        with self._events_lock:
            return self.events_total - len(self.events)

    def shown_label_counts(self) -> dict[str, dict[str, int]]:
        """Per stream, how many classified windows left each displayed (smoothed, calibrated)
        label on their track; ``"none"`` counts the windows after which it showed none."""
        return {stream: dict(counts) for stream, counts in sorted(self._shown_counts.items())}

    def _triton_metrics(self, metrics: Metrics) -> None:
        """The Triton sessions' counts (posestream.engines.triton) into ``metrics``, at scrape time."""
        for network, counts in _triton_stats(self.engine, list(self.workers)).items():
            for name, help_text, key, labels in (
                    ("posestream_triton_calls_total", "calls of a network, on the Triton server or local",
                     "remote_calls", {"where": "server"}),
                    ("posestream_triton_calls_total", "", "local_calls", {"where": "local"}),
                    ("posestream_triton_retries_total", "Triton calls retried", "retries", {}),
                    ("posestream_triton_fallbacks_total", "times a network went to its local engine",
                     "fallbacks", {}),
                    ("posestream_triton_returns_total", "times a network went back to the Triton server",
                     "returns", {})):
                counter = metrics.counter(name, help_text, network=network, **labels)
                counter.inc(max(0, int(counts.get(key, 0)) - counter.value))  # the sessions count up only
            metrics.gauge("posestream_triton_on_server", "1 while the network runs on the Triton server",
                          network=network).set(1.0 if counts.get("on_server") else 0.0)

    def status(self) -> dict[str, Any]:
        return {"uptime_s": None if self.t_start is None else round(time.monotonic() - self.t_start, 1),
                "engine": self.engine.info(), "pose": _pose_info(self.workers), "batcher": self.batcher.stats(),
                **({"triton": triton} if (triton := _triton_stats(self.engine, self.workers)) else {}),
                "streams": [w.status() for w in self.workers],
                "sinks": {name: sink.stats() for name, sink in self.sinks.items()},
                "health": "ok" if all(w.health == "ok" for w in self.workers) else "degraded",
                "events": self.events_total, "events_kept": len(self.events), "events_dropped": self.events_dropped}


# ----------------------------------------------------------------------------------------------


#: The label threshold of a model without a calibrated one.
DEFAULT_MIN_LABEL_SCORE = 0.3


def label_threshold(configured: float | None, engine: ActionEngine) -> float:
    """The smoothed probability a track's label needs: the configured one, else the model
    card's calibrated ``min_confidence`` (below it, the model is wrong too often on held-out
    data to show a label: ``posestream calibrate``), else :data:`DEFAULT_MIN_LABEL_SCORE`."""
    if configured is not None:
        return float(configured)
    extra = getattr(engine.card, "extra", None) or {}
    value = extra.get("min_confidence")
    return float(value) if value is not None else DEFAULT_MIN_LABEL_SCORE


def _pose_info(workers: Sequence[Any]) -> dict[str, Any] | None:
    """The first stream's pose front end (name, settings, which backend runs each network)."""
    estimator = getattr(workers[0], "estimator", None) if workers else None
    info = getattr(estimator, "info", None)
    return info() if callable(info) else None


def _triton_stats(engine: Any, workers: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """The networks on a Triton server (posestream.engines.triton): per network, its calls on
    the server and locally, retries, fall-backs and returns, summed over the streams."""
    out: dict[str, dict[str, Any]] = {}
    stats = getattr(engine, "stats", None)
    if getattr(engine, "name", None) == "triton" and callable(stats):
        out["action"] = {k: v for k, v in stats().items() if k != "last_error"}
    for worker in workers:
        per_network = getattr(getattr(worker, "estimator", None), "triton_stats", None)
        for network, counts in (per_network() if callable(per_network) else {}).items():
            total = out.setdefault(network, {"on_server": True})
            for key, value in counts.items():
                if key == "on_server":
                    total["on_server"] = total["on_server"] and bool(value)
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    total[key] = total.get(key, 0) + value
    return out


def default_estimator(config: RunConfig):
    from posestream.engines.pose import make_pose_estimator

    from posestream.engines.pose import PRESETS

    kwargs: dict[str, Any] = {"threads": config.pose_threads}
    if config.max_people is not None:
        kwargs["max_people"] = config.max_people
    if config.pose in PRESETS:  # the MoveNet + BlazePose front ends
        kwargs["backend"] = config.pose_backend
        if config.pose_backend == "triton":
            kwargs["triton"] = {"url": config.triton_url, "timeout_s": config.triton_timeout_s}
    if config.landmark_batch != 1:  # only the MoveNet + BlazePose presets batch their landmarks
        kwargs["landmark_batch"] = config.landmark_batch
    return make_pose_estimator(config.pose, **kwargs)


def load_action_engine(config: RunConfig) -> ActionEngine:
    """The configured action model, or the shipped default, on the configured engine."""
    from posestream.engines.action import make_engine

    path = config.model or default_action_model()
    kind = config.engine
    if config.device == "cuda" and kind == "auto":
        kind = "tensorrt" if str(path).lower().endswith(".onnx") else "torch-cuda"
    device = "auto" if kind in ("torch-cuda", "tensorrt") else config.device
    if config.device == "cuda" and kind in ("onnx", "onnx-int8"):
        device = "cuda"
    options: dict[str, Any] | None = None
    if kind in ("torch-cuda", "tensorrt"):
        options = {"max_batch": max(32, config.max_batch)}
    elif kind == "triton":
        options = {"triton": {"url": config.triton_url, "timeout_s": config.triton_timeout_s}}
    elif config.engine_precision != "fp32":
        options = {"precision": config.engine_precision}
    return make_engine(kind, path, threads=config.engine_threads, device=device, options=options)


def default_action_model() -> str:
    """The path of the shipped default action model."""
    from posestream.engines.pose import shipped_model

    return str(shipped_model(DEFAULT_ACTION_MODEL))


def _nominal_fps(reader: Any) -> float | None:
    try:
        fps = reader.stats().get("nominal_fps")
    except Exception:
        return None
    return float(fps) if fps else None


def _video_paths(out: str, names: Sequence[str]):
    from pathlib import Path

    p = Path(out)
    if len(names) == 1:
        return [p]
    return [p.with_name(f"{p.stem}_{n}{p.suffix}") for n in names]
