"""The realtime pipeline end to end, with real parts: real footage (vtest.avi), the shipped pose
networks and action model in ONNX Runtime, a real RTSP server, real output files."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from posestream.realtime.config import RunConfig, load_run_config
from posestream.realtime.pipeline import Runtime, default_action_model
from posestream.realtime.sources import SourceSpec, parse_source

from test_sources import RtspServerProcess, free_port, rtsp_ready  # noqa: F401  (a fixture)

HERE = Path(__file__).resolve().parent
VTEST = HERE / ".media" / "vtest.avi"


@pytest.fixture(scope="module")
def vtest() -> Path:
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing: run tests/get_media.sh first")
    return VTEST


def _frames_in(path: Path) -> tuple[int, tuple[int, int]]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    n, shape = 0, (0, 0)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n, shape = n + 1, frame.shape[:2]
    cap.release()
    return n, shape


def test_the_shipped_action_model_is_installed():
    path = Path(default_action_model())
    assert path.is_file() and path.stat().st_size > 100_000


@pytest.fixture(scope="module")
def vtest_run(vtest, tmp_path_factory):
    """80 frames of vtest.avi through the whole pipeline, every frame processed; an action event
    rule for walking (vtest's pedestrians walk) so that the event log has lines to check."""
    out = tmp_path_factory.mktemp("run")
    # track_max_gap_s: at pace "fast" frames are as far apart as this (busy) machine takes to
    # process them; with the gap rule off the detection period alone decides, as checked below
    config = RunConfig(pace="fast", max_frames=80, video_out=str(out / "annotated.mp4"),
                       events_out=str(out / "events.jsonl"), track_max_gap_s=60.0,
                       action_events=[{"label": "walking", "min_score": 0.0, "min_duration_s": 0.0}])
    # Before Runtime(): constructing it already starts threads (the sinks' writers), and those
    # must be gone after stop() too.
    baseline = threading.active_count()
    runtime = Runtime([parse_source(str(vtest))], config)
    runtime.start()
    assert runtime.wait(timeout=300), "the run did not finish"
    runtime.stop()
    return runtime, out, baseline


def test_vtest_tracks_are_formed_and_every_track_gets_labels(vtest_run):
    runtime, _, _ = vtest_run
    status = runtime.status()
    stream = status["streams"][0]
    assert stream["frames_processed"] == 80
    assert stream["source"]["health"] == "ended"
    # the detector ran on some frames only (every 5th, or after a lost track); the others
    # were tracked by their landmarks
    detection = stream["detection"]
    assert detection["every"] == 5 and detection["frames"] == 80
    assert 80 // 5 <= stream["detector_calls"] == detection["detector_calls"] <= 80 // 2
    assert stream["people_seen"] >= 3 * 80
    labels = runtime.label_summary()["vtest"]
    # vtest.avi has 3-7 pedestrians in view over these frames
    assert len(labels) >= 3
    names = set(runtime.engine.class_names)
    for track, counts in labels.items():
        assert sum(counts.values()) >= 1 and set(counts) <= names
    # every track with a long enough history got at least one window classified
    worker = runtime.workers[0]
    assert worker.counts["windows_submitted"] == runtime.batcher.stats()["windows"]


def test_nobody_falls_in_vtest_and_the_event_log_holds_every_event(vtest_run):
    runtime, out, _ = vtest_run
    assert runtime.events, "no walking event: the log would be checked empty"
    assert {e["kind"] for e in runtime.events} == {"action"} and {e["label"] for e in runtime.events} == {"walking"}
    # one JSON line per event raised, in the order raised (the file exists: the run wrote it)
    logged = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert logged == list(runtime.events)  # a ring (deque) of the kept events


def test_annotated_video_and_stage_latencies(vtest_run):
    runtime, out, baseline = vtest_run
    n, shape = _frames_in(out / "annotated.mp4")
    assert n == 80 and shape == (576, 768)
    snap = runtime.metrics.snapshot()["latency"]
    for stage in ("read", "detect", "pose", "track", "frame", "frame_to_label"):
        key = f'posestream_stage_latency_seconds{{stage="{stage}",stream="all"}}'
        assert snap[key]["count"] > 0, stage
    assert snap['posestream_stage_latency_seconds{stage="classify",stream="vtest"}']["count"] > 0
    # every thread the run started is gone
    deadline = time.monotonic() + 10
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= baseline


def test_two_streams_share_one_batcher(vtest):
    # The two streams' windows of a frame reach the batcher apart by however the pose threads
    # got the CPU; the default 5 ms wait rarely spans that on a busy 2-core machine (no shared
    # batch in 40 frames), so the first window of a batch waits up to 0.5 s for the others here.
    config = RunConfig(pace="fast", max_frames=40, events_out=None, max_wait_s=0.5)
    sources = [SourceSpec("file", str(vtest), "a"), SourceSpec("file", str(vtest), "b")]
    runtime = Runtime(sources, config)
    # The streams of every batch the batcher classifies (its thread calls self._classify).
    batch_streams = []
    classify = runtime.batcher._classify

    def recording_classify(batch):
        batch_streams.append({job.stream for job in batch})
        return classify(batch)

    runtime.batcher._classify = recording_classify
    with runtime:
        assert runtime.wait(timeout=300)
    assert [w.counts["frames_processed"] for w in runtime.workers] == [40, 40]
    assert len(batch_streams) == runtime.batcher.stats()["batches"]
    assert {"a", "b"} in batch_streams  # windows of both streams rode in one batch
    assert set(runtime.label_summary()) == {"a", "b"}


def test_scene_mode_gives_one_label_per_stream(vtest):
    config = RunConfig(pace="fast", max_frames=40, events_out=None, mode="scene")
    with Runtime([parse_source(str(vtest))], config) as runtime:
        assert runtime.wait(timeout=300)
    assert list(runtime.label_summary()["vtest"]) == ["scene"]


def test_stop_in_the_middle_of_a_realtime_run_leaves_a_playable_video(vtest, tmp_path):
    config = RunConfig(video_out=str(tmp_path / "partial.mp4"), events_out=None)  # paced at 10 fps
    runtime = Runtime([parse_source(str(vtest))], config).start()
    time.sleep(3.0)
    runtime.stop()
    n, _ = _frames_in(tmp_path / "partial.mp4")
    assert 5 <= n < 795
    assert n == runtime.workers[0].counts["frames_processed"]


def test_run_config_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('window_s = 2.5\nstride = 4\n[fall]\ndown_s = 1.5\n')
    config = load_run_config(path)
    assert (config.window_s, config.stride, config.fall) == (2.5, 4, {"down_s": 1.5})
    path.write_text("strid = 4\n")
    with pytest.raises(ValueError, match="unknown setting.*strid"):
        load_run_config(path)


def _posestream(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "posestream", *args], capture_output=True, text=True,
                          timeout=kwargs.pop("timeout", 120), **kwargs)


@pytest.mark.parametrize("source, message", [
    ("no_such_video.mp4", "no_such_video.mp4: no such file"),
    ("rtsp://", "malformed URL"),
    ("ftp://example.com/x", "unsupported scheme"),
])
def test_bad_sources_are_one_line_errors(source, message):
    done = _posestream("run", source)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_a_file_that_is_not_a_video(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.avi"
    text.write_text("not a video\n" * 100)
    for path in (empty, text):
        done = _posestream("run", str(path))
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and str(path) in done.stderr


def test_ctrl_c_shuts_down_cleanly_and_the_video_plays(vtest, tmp_path):
    out = tmp_path / "interrupted.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "posestream", "run", str(vtest), "--out", str(out),
                             "--events", str(tmp_path / "ev.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120  # the video sink's temporary file appears with the first frame
    while time.monotonic() < deadline and not any(tmp_path.glob(".interrupted*")):
        time.sleep(0.2)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "frames processed" in err
    n, _ = _frames_in(out)
    assert n > 0


def test_rtsp_run_survives_a_server_restart(rtsp_ready):  # noqa: F811
    server = RtspServerProcess(rtsp_ready, free_port())
    server.start()
    config = RunConfig(events_out=None)
    runtime = Runtime([parse_source(server.url)], config).start()
    worker = runtime.workers[0]
    try:
        deadline = time.monotonic() + 30
        while worker.counts["frames_processed"] < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.counts["frames_processed"] >= 5
        server.kill()
        deadline = time.monotonic() + 10
        while runtime.readers[0].health == "live" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runtime.readers[0].health in ("retrying", "connecting")
        before = worker.counts["frames_processed"]
        server.start()
        t_restart = time.monotonic()
        deadline = t_restart + 30
        while worker.counts["frames_processed"] <= before + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        resumed_after = time.monotonic() - t_restart
        assert worker.counts["frames_processed"] > before + 3, "the run did not resume"
        assert resumed_after < 15
        assert runtime.readers[0].stats()["reconnects"] >= 1
        assert worker.counts["errors"] == 0
    finally:
        runtime.stop()
        server.kill()


def test_demo_without_a_webcam_uses_the_sample_video(vtest, tmp_path):
    out = tmp_path / "demo.mp4"
    env = {k: v for k, v in os.environ.items() if k != "POSESTREAM_SAMPLE_VIDEO"}
    done = _posestream("demo", "--out", str(out), "--max-frames", "20", cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no webcam; sample video" in done.stderr and "vtest.avi" in done.stderr
    assert "20 frames processed" in done.stderr
    assert _frames_in(out)[0] == 20


def test_demo_says_how_to_get_the_sample_video_when_there_is_none(tmp_path):
    env = dict(os.environ, POSESTREAM_SAMPLE_VIDEO=str(tmp_path / "nothing.avi"))
    done = _posestream("demo", "--out", str(tmp_path / "demo.mp4"), cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "get_media.sh" in done.stderr
