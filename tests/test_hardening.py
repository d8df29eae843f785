"""The realtime pipeline survives faults at its boundaries (issue 14): real footage (vtest.avi),
the shipped pose networks and action model in ONNX Runtime, the real Runtime around them.
Faults are injected at the boundary only: a wrapper around the real estimator or engine that
corrupts or raises on chosen calls, or a capture that hands the real reader odd frames."""
import json
import queue
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.engines.pose import make_pose_estimator, mmpose_people
from posestream.realtime import pipeline, sources
from posestream.realtime.batcher import ActionBatcher, WindowJob
from posestream.realtime.config import RunConfig
from posestream.realtime.pipeline import Runtime, load_action_engine
from posestream.realtime.sources import FrameReader, SourceSpec, parse_source
from posestream.realtime.supervision import StagePolicy
from posestream.realtime.tracker import ByteTracker

from test_sources import free_port

HERE = Path(__file__).resolve().parent
VTEST = HERE / ".media" / "vtest.avi"


@pytest.fixture(scope="module")
def vtest() -> Path:
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing: run tests/get_media.sh first")
    return VTEST


@pytest.fixture(scope="module")
def engine():
    """The shipped action model in ONNX Runtime, shared by the module's runs."""
    return load_action_engine(RunConfig())


class Faults:
    """Which calls of a stage go wrong: ``calls`` counts them (shared by every estimator a
    restart creates), ``plan(stage, n)`` says what happens to call ``n``."""

    def __init__(self, plan):
        self.plan = plan
        self.calls = {"detect": 0, "refine": 0}
        self.times = {"detect": [], "refine": []}  # when each call came
        self.lock = threading.Lock()

    def next(self, stage: str):
        with self.lock:
            n = self.calls[stage]
            self.calls[stage] += 1
            self.times[stage].append(time.monotonic())
        return self.plan(stage, n)


class FaultyEstimator:
    """The real default pose front end; on the calls ``faults`` picks, its output is corrupted
    (``"nan"``: a NaN box and NaN joints, ``"zero"``: a zero-size box) or the call raises."""

    def __init__(self, faults: Faults):
        self.created = time.monotonic()
        self.real = make_pose_estimator("default")
        self.faults = faults

    def tracker_thresholds(self):
        return self.real.tracker_thresholds()

    def detect(self, image):
        fault = self.faults.next("detect")
        people = self.real.detect(image)
        if fault == "raise":
            raise RuntimeError("injected detector failure")
        if fault in ("nan", "zero") and people:
            p = people[0]
            p.box = p.box.copy()
            if fault == "nan":
                p.box[0] = np.nan
                p.keypoints = p.keypoints.copy()
                p.keypoints[3:6, :2] = np.nan
            else:
                p.box[2] = p.box[0]
        return people

    def refine(self, image, people):
        fault = self.faults.next("refine")
        if fault == "raise":
            raise RuntimeError("injected pose failure")
        out = self.real.refine(image, people)
        if fault == "nan" and out:
            out[0].keypoints = out[0].keypoints.copy()
            out[0].keypoints[:, :2] = np.nan
        return out


def _run(vtest, engine, faults, frames=40, policy=None, watch=None, **config):
    made = []

    def factory():
        made.append(FaultyEstimator(faults))
        return made[-1]

    cfg = RunConfig(pace="fast", max_frames=frames, events_out=None, **config)
    runtime = Runtime([parse_source(str(vtest))], cfg, engine=engine, estimator_factory=factory,
                      stage_policy=policy)
    seen = []
    with runtime:
        deadline = time.monotonic() + 300
        while not runtime.wait(timeout=0.05):
            assert time.monotonic() < deadline, "the run did not finish"
            if watch is not None:
                seen.append(watch(runtime))
    return runtime, made, seen


def test_nan_and_zero_size_boxes_are_dropped_and_the_stream_runs_on(vtest, engine, tmp_path):
    # detector calls 5-14 give a NaN box (and NaN joints) or a zero-size one; before the fix
    # the NaN box passed MoveNet's size filter and int(NaN) killed the stream when drawing
    bad = {n: ("nan" if n % 2 else "zero") for n in range(5, 15)}
    faults = Faults(lambda stage, n: bad.get(n) if stage == "detect" else None)
    runtime, _, _ = _run(vtest, engine, faults, video_out=str(tmp_path / "annotated.mp4"))
    stream = runtime.status()["streams"][0]
    assert stream["frames_processed"] == 40 and stream["frames_skipped"] == 0, stream
    assert stream["people_dropped"] >= 10, stream  # one per corrupted frame (vtest has people in each)
    assert stream["errors"] == 0 and stream["health"] == "ok", stream
    assert all(s["failures"] == 0 for s in stream["stages"].values()), stream["stages"]
    for t in runtime.workers[0].latest_tracks:
        assert np.isfinite(t.box).all()
    assert runtime.not_finished == []


def test_nan_keypoints_from_the_pose_model_are_cleared(vtest, engine):
    faults = Faults(lambda stage, n: "nan" if stage == "refine" and 10 <= n < 20 else None)
    runtime, _, _ = _run(vtest, engine, faults)
    stream = runtime.status()["streams"][0]
    assert stream["frames_processed"] == 40 and stream["errors"] == 0, stream
    assert stream["joints_cleared"] >= 10 * 17, stream
    # every label shown is a real probability: no NaN reached the smoothing
    for logic in runtime._event_logic.values():
        for smoothed, _ in logic.smoother._state.values():
            assert np.isfinite(smoothed).all()


def test_a_failing_stage_costs_its_frame_and_is_counted_in_status_and_metrics(vtest, engine):
    faults = Faults(lambda stage, n: "raise" if stage == "refine" and n in (5, 12) else None)
    runtime, made, _ = _run(vtest, engine, faults)
    stream = runtime.status()["streams"][0]
    assert stream["frames_skipped"] == 2 and stream["frames_processed"] == 38, stream
    pose = stream["stages"]["pose"]
    assert (pose["failures"], pose["restarts"], pose["state"]) == (2, 0, "ok"), pose
    assert "injected pose failure" in pose["last_error"]
    assert stream["health"] == "ok" and len(made) == 1  # two isolated failures restart nothing
    text = runtime.metrics.render_prometheus()
    assert 'posestream_stage_failures_total{stage="pose",stream="vtest"} 2' in text
    assert 'posestream_frames_skipped_total{stream="vtest"} 2' in text


def test_a_stage_failing_in_a_row_restarts_with_backoff_and_health_says_so(vtest, engine):
    port = free_port()
    url = f"http://127.0.0.1:{port}/status"

    def watch(runtime):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.loads(r.read())["streams"][0]["health"]
        except OSError:
            return None

    # pose calls 10-19 raise: 3 in a row restart it (0.2 s, then 0.4 s backoff), and a new
    # estimator comes from the factory each time; from call 20 on it works again
    faults = Faults(lambda stage, n: "raise" if stage == "refine" and 10 <= n < 20 else None)
    policy = StagePolicy(restart_after=3, backoff_initial_s=0.2, backoff_max_s=0.4)
    runtime, made, seen = _run(vtest, engine, faults, frames=60, policy=policy, watch=watch,
                               http=f"127.0.0.1:{port}")
    stream = runtime.status()["streams"][0]
    pose = stream["stages"]["pose"]
    assert pose["failures"] == 10 and pose["restarts"] == 3, pose  # after calls 12, 15, 18
    assert len(made) == 1 + 3  # the first estimator and one per restart
    assert stream["frames_skipped"] == 10 and stream["frames_processed"] == 50, stream
    assert "degraded: pose restarting" in seen, sorted(set(map(str, seen)))
    assert stream["health"] == "ok" and pose["state"] == "ok"  # it recovered
    # each restart came a backoff after the failure that made it: 0.2 s, then 0.4 s (the cap)
    calls = faults.times["refine"]
    waits = [made[k].created - calls[n] for k, n in ((1, 12), (2, 15), (3, 18))]
    assert 0.2 <= waits[0] < 0.4 + 0.5 and 0.4 <= waits[1] and 0.4 <= waits[2], waits
    text = runtime.metrics.render_prometheus()
    assert 'posestream_stage_restarts_total{stage="pose",stream="vtest"} 3' in text
    assert 'posestream_stage_degraded{stage="pose",stream="vtest"} 0.0' in text  # back to ok


def test_a_stage_that_never_recovers_keeps_retrying_and_the_stream_stays_up(vtest, engine):
    faults = Faults(lambda stage, n: "raise" if stage == "detect" and n >= 5 else None)
    policy = StagePolicy(restart_after=2, backoff_initial_s=0.05, backoff_max_s=0.1)
    runtime, made, seen = _run(vtest, engine, faults, frames=20, policy=policy,
                               watch=lambda rt: rt.workers[0].health)
    stream = runtime.status()["streams"][0]
    detect = stream["stages"]["detect"]
    assert detect["failures"] == 15 and detect["restarts"] == 7, detect  # every 2 failures in a row
    assert len(made) == 1 + 7 and detect["state"] == "restarting"
    assert stream["frames_processed"] == 5 and stream["frames_skipped"] == 15, stream
    assert "degraded: detect restarting" in seen
    assert 'posestream_stage_degraded{stage="detect",stream="vtest"} 2.0' in runtime.metrics.render_prometheus()
    assert runtime.workers[0].done.is_set() and runtime.not_finished == []  # it ended with its source


def test_a_failing_video_sink_costs_frames_of_the_video_not_of_the_tracking(vtest, engine, tmp_path, monkeypatch):
    """The draw stage (annotate + video sink) is skipped during its backoff, not waited for."""
    from posestream.realtime import sinks

    real_write = sinks.VideoSink.write
    writes = {"n": 0}

    def flaky_write(self, frame):
        writes["n"] += 1
        if 10 <= writes["n"] < 13:
            raise OSError("injected: disk full")
        return real_write(self, frame)

    monkeypatch.setattr(sinks.VideoSink, "write", flaky_write)
    policy = StagePolicy(restart_after=3, backoff_initial_s=1.0, backoff_max_s=1.0)
    runtime, _, _ = _run(vtest, engine, Faults(lambda stage, n: None), frames=40, policy=policy,
                         video_out=str(tmp_path / "annotated.mp4"))
    stream = runtime.status()["streams"][0]
    draw = stream["stages"]["draw"]
    assert stream["frames_processed"] == 40 and stream["frames_skipped"] == 0, stream  # every frame tracked
    assert draw["failures"] == 3 and draw["restarts"] == 1 and draw["skipped"] >= 1, draw
    assert stream["errors"] == 3 and stream["health"] == "ok", stream
    cap = cv2.VideoCapture(str(tmp_path / "annotated.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 40 - 3 - draw["skipped"]  # the video lacks exactly the frames drawing lost


class NanLogits:
    """The real ONNX action engine; every third call's first window gets NaN logits, one an inf."""

    def __init__(self, real):
        self.real = real
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def predict(self, volumes):
        out = np.array(self.real.predict(volumes), dtype=np.float32)
        self.calls += 1
        if self.calls % 3 == 0:
            out[0, :] = np.nan
            out[-1, 0] = np.inf
        return out


def test_nan_logits_never_reach_the_labels(vtest, engine):
    nan_engine = NanLogits(engine)
    faults = Faults(lambda stage, n: None)
    runtime, _, _ = _run(vtest, nan_engine, faults, frames=60, mode="scene", stride=2)
    stats = runtime.batcher.stats()
    assert stats["nonfinite_logits"] >= 2 and stats["errors"] == 0, stats
    assert stats["windows"] - stats["nonfinite_logits"] >= 5, stats  # the others were labelled
    logic = runtime._event_logic["vtest"]
    smoothed, _ = logic.smoother._state["scene"]
    assert np.isfinite(smoothed).all() and abs(smoothed.sum() - 1) < 1e-4
    assert runtime.status()["streams"][0]["frames_processed"] == 60


def test_one_window_with_another_keypoint_count_costs_only_itself(engine):
    rng = np.random.default_rng(0)
    batcher = ActionBatcher(engine, max_batch=8, max_wait_s=0.5)
    t = batcher.clip_len
    replies = {"a": queue.Queue(), "b": queue.Queue()}

    def job(stream, key, v):
        kp = rng.uniform(5, batcher.size - 5, size=(1, t, v, 2)).astype(np.float32)
        return WindowJob(stream, key, kp, np.full((1, t, v), 0.9, np.float32), time.monotonic(), 0, replies[stream])

    with batcher:
        assert batcher.submit(job("a", 1, 17))
        assert not batcher.submit(job("b", 2, 33))  # BlazePose's 33 landmarks: refused, counted
        assert batcher.submit(job("b", 3, 17))
        got = [replies["a"].get(timeout=30).key, replies["b"].get(timeout=30).key]
    assert got == [1, 3]
    assert batcher.stats()["rejected_shape"] == 1 and batcher.stats()["errors"] == 0
    # classify() on a mixed batch (a caller that skipped submit) gives the good ones their labels
    results = batcher.classify([job("a", 4, 17), job("b", 5, 13), job("a", 6, 17)])
    assert [r.key for r in results] == [4, 6] and all(np.isfinite(r.probs).all() for r in results)


class OddFrames:
    """A camera that hands out vtest.avi's frames as grey, BGRA, 16-bit, and now and then a
    zero-size one (what V4L2 devices, PNG sequences and broken decoders give)."""

    def __init__(self, spec, **kwargs):
        self.cap = cv2.VideoCapture(str(VTEST))
        self.next_t = time.monotonic()
        self.nominal_fps = None
        self.n = 0

    def read(self):
        self.next_t += 0.1  # a 10 fps camera
        time.sleep(max(0.0, self.next_t - time.monotonic()))
        ok, frame = self.cap.read()
        if not ok:
            return False, None
        self.n += 1
        kind = self.n % 5
        if kind == 0:
            return True, np.zeros((0, 768, 3), np.uint8)
        if kind == 1:
            return True, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if kind == 2:
            return True, cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
        if kind == 3:
            return True, frame.astype(np.uint16) * 257
        return True, frame

    def release(self):
        self.cap.release()


def test_grey_bgra_and_16_bit_frames_are_converted_not_a_reason_to_reconnect(vtest, engine, monkeypatch):
    monkeypatch.setattr(sources, "VideoCaptureSource", OddFrames)
    cfg = RunConfig(max_frames=40, events_out=None)
    runtime = Runtime([SourceSpec("camera", "0", "cam")], cfg, engine=engine)
    with runtime:
        assert runtime.wait(timeout=300)
    src = runtime.status()["streams"][0]["source"]
    assert src["reconnects"] == 0 and src["open_failures"] == 0, src
    assert src["frames_read"] == 40 and src["frames_converted"] == 30, src  # 3 of every 5 converted
    assert src["bad_frames"] == 9, src  # only the zero-size ones (the 10th comes after frame 40)
    stream = runtime.status()["streams"][0]
    assert stream["frames_processed"] >= 10 and stream["errors"] == 0, stream
    assert stream["tracks"] >= 1  # the converted frames are real frames: people are found in them


def test_16_bit_frames_keep_their_picture():
    from posestream.realtime.frames import to_bgr_uint8

    frame = cv2.VideoCapture(str(VTEST)).read()[1] if VTEST.is_file() else np.full((8, 8, 3), 200, np.uint8)
    assert np.array_equal(to_bgr_uint8(frame.astype(np.uint16) * 257), frame)
    assert np.array_equal(to_bgr_uint8(cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)), frame)


def test_mmpose_results_without_a_bbox_keep_one_track_per_person(vtest):
    """MMPose predictions as the inferencer returns them for a bottom-up model (no ``bbox``):
    the real skeletons of vtest.avi's people. Before, each got a zero-size box at (0, 0) and
    started a new track every frame."""
    estimator = make_pose_estimator("default")
    cap = cv2.VideoCapture(str(vtest))
    tracker = ByteTracker(**estimator.tracker_thresholds(), max_lost_s=1.0, fps=10.0)
    ids, people_per_frame = set(), []
    for i in range(20):
        frame = cap.read()[1]
        people = estimator(frame)
        preds = [{"keypoints": p.keypoints[:, :2].tolist(), "keypoint_scores": p.keypoints[:, 2].tolist(),
                  "bbox_score": p.score} for p in people]
        parsed = mmpose_people(preds, frame.shape[:2])
        assert len(parsed) == len(people)
        for p in parsed:
            assert p.box[2] - p.box[0] >= 1 and p.box[3] - p.box[1] >= 1
        ids.update(t.track_id for t in tracker.update(parsed, frame_index=i))
        people_per_frame.append(len(parsed))
    cap.release()
    assert max(people_per_frame) >= 3
    assert len(ids) <= max(people_per_frame) + 3, (ids, people_per_frame)  # not one per frame


def test_stop_names_the_threads_that_did_not_finish(vtest, engine, monkeypatch):
    monkeypatch.setattr(pipeline, "JOIN_TIMEOUT_S", 1.0)
    release = threading.Event()

    class Hangs(FaultyEstimator):
        def refine(self, image, people):
            if self.faults.next("refine") == "hang":
                release.wait(60)  # an engine call that never returns
            return self.real.refine(image, people)

    faults = Faults(lambda stage, n: "hang" if stage == "refine" and n == 3 else None)
    runtime = Runtime([parse_source(str(vtest))], RunConfig(pace="fast", events_out=None), engine=engine,
                      estimator_factory=lambda: Hangs(faults))
    runtime.start()
    try:
        deadline = time.monotonic() + 120
        while faults.calls["refine"] < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        left = runtime.stop()
        assert time.monotonic() - t0 < 10  # it did not wait for the hung call
        assert left == ["pose-vtest"] and runtime.not_finished == left
        assert runtime.stop() == left  # idempotent
    finally:
        release.set()
    runtime.workers[0].join(30)
    assert runtime.workers[0].alive_threads() == []


def test_the_event_history_is_a_ring_and_counts_what_fell_off(vtest, engine, monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "EVENT_HISTORY", 2)
    # an event as soon as a track shows any label: one rule per class, no delay, no cooldown
    rules = [{"label": n, "min_score": 0.0, "min_duration_s": 0.0, "cooldown_s": 0.0} for n in engine.class_names]
    log_path = tmp_path / "events.jsonl"
    cfg = RunConfig(pace="fast", max_frames=60, events_out=str(log_path), stride=2, action_events=rules,
                    min_label_score=0.0)
    runtime = Runtime([parse_source(str(vtest))], cfg, engine=engine)
    with runtime:
        assert runtime.wait(timeout=300)
    status = runtime.status()
    assert status["events"] > 2, status  # vtest.avi's people, one event each at least
    assert status["events_kept"] == len(runtime.events) == 2
    assert status["events_dropped"] == status["events"] - 2
    lines = log_path.read_text().splitlines()
    assert len(lines) == status["events"]  # the sinks got every one
    assert [e["label"] for e in runtime.recent_events()] == [json.loads(line)["label"] for line in lines[-2:]]


def test_per_track_state_goes_with_the_track_even_when_the_forget_queue_is_full(vtest, engine, monkeypatch):
    from posestream.realtime.batcher import WindowResult

    monkeypatch.setattr(pipeline, "FORGET_QUEUE_SIZE", 1)
    runtime = Runtime([parse_source(str(vtest))], RunConfig(events_out=None), engine=engine)
    probs = np.full(engine.num_classes, 1.0 / engine.num_classes, np.float32)
    now = time.monotonic()
    for key in range(4):
        runtime._on_result(WindowResult("vtest", key, 0, probs, now, now, now, 1, 0.0, 0.0, None))
    assert len(runtime._event_logic["vtest"].smoother) == 4
    runtime._forget_tracks("vtest", [0])
    runtime._forget_tracks("vtest", [1])  # the queue (1) is full: dropped, counted
    stream, ids = runtime._forget.get_nowait()
    runtime._forget_keys(stream, ids)
    logic = runtime._event_logic["vtest"]
    assert len(logic.smoother) == 3 and runtime.labels.get("vtest", 0) is None
    assert 'stage="forget"' in runtime.metrics.render_prometheus()
    # the stale-key pruning catches track 1 (and 2, 3) once nothing came for STALE_KEY_S
    runtime._on_result(WindowResult("vtest", 3, 0, probs, now, now, now, 1, 0.0, 0.0, None))
    runtime._last_result[("vtest", 3)] = now + pipeline.STALE_KEY_S  # 3 is still live then
    runtime._prune_stale(now + pipeline.STALE_KEY_S + 1)
    assert len(logic.smoother) == 1 and set(runtime._last_result) == {("vtest", 3)}
    # the label counts of ended tracks are kept (bounded), not lost
    assert set(runtime.label_summary()["vtest"]) == {"0", "1", "2", "3"}
    runtime.stop()


def test_the_documented_bounds_are_the_ones_the_code_uses():
    import inspect

    from posestream.realtime import batcher, sinks

    readme = (HERE.parent / "README.md").read_text()

    def default(cls, name="queue_size"):
        return inspect.signature(cls).parameters[name].default

    rows = [f"(`batcher.QUEUE_SIZE`) | {batcher.QUEUE_SIZE} windows",
            f"(`pipeline.RESULTS_QUEUE_SIZE`) | {pipeline.RESULTS_QUEUE_SIZE} results",
            f"(`pipeline.FORGET_QUEUE_SIZE`) | {pipeline.FORGET_QUEUE_SIZE} batches",
            f"`pipeline.STALE_KEY_S` ({pipeline.STALE_KEY_S:g} s)",
            f"(`pipeline.EVENT_HISTORY`, `Runtime.events`) | {pipeline.EVENT_HISTORY} events",
            f"(`pipeline.ENDED_TRACKS_KEPT`) | {pipeline.ENDED_TRACKS_KEPT} ended tracks",
            f"(`VideoSink` `queue_size`) | {default(sinks.VideoSink)} frames",
            f"(`EventLog` `queue_size`) | {default(sinks.EventLog)} lines",
            f"(`WebhookSink` `queue_size`) | {default(sinks.WebhookSink)} events",
            f"`pipeline.JOIN_TIMEOUT_S` ({pipeline.JOIN_TIMEOUT_S:g} s)",
            f"`pipeline.SINK_CLOSE_TIMEOUT_S` ({pipeline.SINK_CLOSE_TIMEOUT_S:g} s)"]
    for row in rows:
        assert row in readme, row
    policy = StagePolicy()
    assert (f"{policy.restart_after} failures\nin a row restart the stage after a backoff of "
            f"{policy.backoff_initial_s:g} s doubling to {policy.backoff_max_s:g} s") in readme
    runtime_results = Runtime.__init__.__code__.co_names
    assert "RESULTS_QUEUE_SIZE" in runtime_results and "FORGET_QUEUE_SIZE" in runtime_results
