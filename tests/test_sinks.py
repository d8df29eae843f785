"""The realtime sinks against real files, real pipes and real HTTP servers on 127.0.0.1."""
from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.realtime.metrics import Metrics
from posestream.realtime.sinks import (
    EventLog,
    PreviewStore,
    SinkError,
    StatusServer,
    VideoSink,
    WebhookSink,
)

MEDIA = Path(__file__).resolve().parent / ".media"
REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def real_frames(n: int, size: tuple[int, int] = (320, 240)) -> list[np.ndarray]:
    """``n`` frames of vtest.avi (OpenCV's sample footage, tests/get_media.sh) scaled to
    ``size``; synthetic ones (a moving rectangle on a gradient) where it is missing."""
    w, h = size
    frames = []
    path = MEDIA / "vtest.avi"
    if path.exists():
        cap = cv2.VideoCapture(str(path))
        while len(frames) < n:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
        cap.release()
    base = np.tile(np.linspace(0, 255, w, dtype=np.uint8)[None, :, None], (h, 1, 3))
    while len(frames) < n:
        img = base.copy()
        i = len(frames)
        cv2.rectangle(img, (10 + 3 * i, 30), (60 + 3 * i, 120), (0, 0, 255), -1)
        cv2.putText(img, str(i), (20, h - 20), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        frames.append(img)
    return frames


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# --------------------------------------------------------------------------------------------
# VideoSink
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".mp4", ".avi", ".mkv"])
def test_video_sink_writes_every_frame(tmp_path, ext):
    frames = real_frames(24)
    out = tmp_path / f"overlay{ext}"
    sink = VideoSink(out, fps=12)
    assert all(sink.write(f) for f in frames)
    assert not out.exists()  # only the temporary file exists until close
    assert sink.close() == out
    back = read_video(out)
    assert len(back) == 24
    assert back[0].shape == (240, 320, 3)
    assert psnr(back[5], frames[5]) > 25  # the frames themselves, in order
    assert psnr(back[5], frames[5]) > psnr(back[5], frames[20])
    assert sink.stats()["frames_written"] == 24 and sink.stats()["frames_dropped"] == 0
    assert leftovers(tmp_path) == []


def test_video_sink_resizes_later_frames_and_evens_odd_sizes(tmp_path):
    out = tmp_path / "sizes.mp4"
    sink = VideoSink(out, fps=10)
    frames = real_frames(4, (161, 121)) + real_frames(3, (320, 240)) + [real_frames(1, (161, 121))[0][:, :, 0]]
    for f in frames:
        assert sink.write(f)
    sink.close()
    back = read_video(out)
    assert len(back) == 8
    assert {f.shape for f in back} == {(120, 160, 3)}  # MPEG-4 needs even sizes: 161x121 -> 160x120
    assert sink.stats()["size"] == (160, 120)


def test_full_queue_drops_and_counts_without_blocking(tmp_path):
    # 1080p noise takes mp4v tens of ms a frame: the writer falls far behind
    noise = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    metrics = Metrics()
    sink = VideoSink(tmp_path / "slow.mp4", fps=30, queue_size=2, metrics=metrics, name="slow")
    durations, accepted = [], 0
    for _ in range(60):
        t0 = time.perf_counter()
        accepted += sink.write(noise)
        durations.append(time.perf_counter() - t0)
    # a write that waited for the encoder would cost tens of ms each, seconds for all 60
    assert sum(durations) < 0.25, f"60 writes took {sum(durations) * 1000:.0f} ms"
    assert max(durations) < 0.1, f"a write blocked for {max(durations) * 1000:.1f} ms"
    dropped = sink.stats()["frames_dropped"]
    assert dropped > 0 and accepted + dropped == 60
    assert metrics.counter("posestream_sink_dropped_total", sink="slow").value == dropped
    sink.close()
    assert sink.stats()["frames_written"] == accepted
    assert len(read_video(tmp_path / "slow.mp4")) == accepted
    assert not sink.write(noise)  # closed: dropped, counted
    assert sink.stats()["frames_dropped"] == dropped + 1


def test_interrupted_run_still_leaves_a_playable_file(tmp_path):
    out = tmp_path / "interrupted.mp4"
    frames = real_frames(8)
    sink = VideoSink(out, fps=10)
    with pytest.raises(KeyboardInterrupt):
        try:
            for i in range(1000):
                sink.write(frames[i % 8])
                if i == 11:
                    raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
                time.sleep(0.005)
        finally:
            sink.close()
    assert len(read_video(out)) == 12
    assert leftovers(tmp_path) == []


CTRL_C_CHILD = textwrap.dedent("""
    import signal, sys, time
    import numpy as np
    from posestream.realtime.sinks import VideoSink

    # A process started with SIGINT ignored (inherited from its parent, as a child of some test
    # runners is) never gets a KeyboardInterrupt: restore Python's default, as a shell would.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    w, h = int(sys.argv[2]), int(sys.argv[3])
    sink = VideoSink(sys.argv[1], fps=25)
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    i = 0
    try:
        while True:
            sink.write(np.roll(noise, i, axis=1))
            i += 1
            if i == 40:
                print("ready", flush=True)
            time.sleep(0.001)
    except KeyboardInterrupt:
        pass
    finally:
        sink.close()
        print(sink.stats()["frames_written"], flush=True)
""")


@pytest.mark.parametrize("presses,size", [(1, (160, 120)), (2, (1920, 1080))])
def test_ctrl_c_in_a_real_process_leaves_a_playable_file(tmp_path, presses, size):
    """Ctrl-C (SIGINT) in a process writing video; with 1080p noise the writer falls about a
    second behind, so a second Ctrl-C lands while close() drains the queue."""
    out = tmp_path / "ctrl_c.mp4"
    child = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, str(out), *map(str, size)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        assert not out.exists()
        for _ in range(presses):
            child.send_signal(signal.SIGINT)
            time.sleep(0.2)
        stdout, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    back = read_video(out)
    assert back and back[0].shape == (size[1], size[0], 3)
    if presses == 1:
        assert child.returncode == 0, stderr
        assert len(back) == int(stdout.split()[-1]) >= 1
    else:  # the second KeyboardInterrupt ends the process, after the file is finished
        assert "finishing the video file" in stderr or child.returncode == 0, stderr
    assert leftovers(tmp_path) == []


def test_video_sink_abort_and_empty_leave_no_file(tmp_path):
    sink = VideoSink(tmp_path / "aborted.mp4", fps=10)
    for f in real_frames(5):
        sink.write(f)
    sink.abort()
    empty = VideoSink(tmp_path / "empty.mp4", fps=10)
    assert empty.close() is None
    assert list(tmp_path.iterdir()) == []


def test_video_sink_construction_errors_are_one_line(tmp_path):
    cases = [
        (tmp_path / "missing" / "a.mp4", {}, "does not exist"),
        (tmp_path / "a.mov", {}, "unsupported video extension"),
        (tmp_path / "a", {}, "unsupported video extension"),
        (tmp_path / "a.mp4", {"fourcc": "ZZZZ"}, "cannot write 'ZZZZ'"),
        (tmp_path / "a.mp4", {"fourcc": "mp4"}, "4 characters"),
        (tmp_path / "a.mp4", {"fps": 0}, "fps must be > 0"),
    ]
    for path, kwargs, message in cases:
        with pytest.raises(SinkError, match=message) as err:
            VideoSink(path, **{"fps": 10, **kwargs})
        assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # the codec probe cleaned up after itself


# --------------------------------------------------------------------------------------------
# EventLog
# --------------------------------------------------------------------------------------------

EVENT = {"stream": "cam0", "track_id": np.int64(7), "label": "falling", "score": np.float32(0.875),
         "start": 12.5, "end": None, "frame_index": np.int32(301), "probs": np.array([0.1, 0.9]),
         "nan": float("nan"), "box": (1, 2, 3, 4), "ok": np.bool_(True), "note": 'two\nlines "quoted"'}


def test_event_log_writes_json_lines_and_appends(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    for i in range(5):
        assert log.emit({**EVENT, "seq": i})
    assert log.close()
    log2 = EventLog(path)  # appends
    log2.emit({"stream": "cam1", "seq": 5})
    log2.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(6))
    first = events[0]
    assert list(first)[:4] == ["stream", "track_id", "label", "score"]  # the runtime's order
    assert first["track_id"] == 7 and isinstance(first["track_id"], int)
    assert first["score"] == pytest.approx(0.875)
    assert first["frame_index"] == 301 and first["probs"] == [0.1, 0.9] and first["box"] == [1, 2, 3, 4]
    assert first["nan"] is None and first["ok"] is True and first["note"] == 'two\nlines "quoted"'
    assert log.stats() == {"path": str(path), "lines_written": 5, "dropped": 0, "failed": 0, "queued": 0}
    assert not log.emit({"late": 1}) and log.stats()["dropped"] == 1


@pytest.mark.parametrize("where", [None, "-"])
def test_event_log_to_stdout(capsys, where):
    log = EventLog(where)
    log.emit({"stream": "cam0", "label": "walking", "score": np.float64(0.5)})
    log.close()
    out = capsys.readouterr().out
    assert [json.loads(line) for line in out.splitlines()] == [{"stream": "cam0", "label": "walking", "score": 0.5}]


def test_event_log_to_a_stalled_pipe_drops_instead_of_blocking(monkeypatch):
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "r", encoding="utf-8")
    writer = os.fdopen(write_fd, "w", encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", writer)  # a real pipe nobody reads yet
    log = EventLog(None, queue_size=50)
    event = {"stream": "cam0", "label": "x" * 200}
    t0 = time.perf_counter()
    accepted = sum(log.emit(event) for _ in range(2000))  # 400 kB > the pipe's 64 kB buffer
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0
    dropped = log.stats()["dropped"]
    assert dropped > 0 and accepted + dropped == 2000
    got: list[str] = []
    drain = threading.Thread(target=lambda: got.extend(reader))
    drain.start()  # the reader catches up: the log drains and closes
    assert log.close(timeout=10)
    writer.close()
    drain.join(10)
    reader.close()
    assert len(got) == accepted == log.stats()["lines_written"]
    assert json.loads(got[-1]) == event


def test_event_log_missing_folder(tmp_path):
    with pytest.raises(SinkError, match="does not exist"):
        EventLog(tmp_path / "nope" / "events.jsonl")


# --------------------------------------------------------------------------------------------
# WebhookSink against a real HTTP server
# --------------------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on 127.0.0.1: ``/<code>`` answers that code, ``/fail<k>`` answers
    500 to the first k requests then 200, ``/slow`` answers after 0.3 s. Records every body."""

    def __init__(self):
        receiver = self
        self.lock = threading.Lock()
        self.hits: dict[str, int] = {}
        self.bodies: dict[str, list] = {}
        self.auth: list[str | None] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                path = self.path
                with receiver.lock:
                    n = receiver.hits[path] = receiver.hits.get(path, 0) + 1
                    receiver.bodies.setdefault(path, []).append(json.loads(body))
                    receiver.auth.append(self.headers.get("Authorization"))
                if path.startswith("/fail"):
                    code = 500 if n <= int(path[5:]) else 200
                elif path == "/slow":
                    time.sleep(0.3)
                    code = 200
                else:
                    code = int(path[1:])
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_webhook_delivers_every_event(receiver):
    hook = WebhookSink(receiver.url + "/200", headers={"X-Token": "abc"})
    for i in range(5):
        assert hook.emit({"seq": i, "score": np.float32(0.5)})
    assert hook.close(timeout=5)
    assert hook.stats()["sent"] == 5 and hook.stats()["failed"] == 0 and hook.stats()["retried"] == 0
    assert receiver.bodies["/200"] == [{"seq": i, "score": 0.5} for i in range(5)]


def test_webhook_sends_url_credentials_as_basic_auth(receiver):
    url = receiver.url.replace("http://", "http://hook%20user:p%40ss@") + "/200"
    hook = WebhookSink(url)
    hook.emit({"seq": 0})
    hook.close()
    assert hook.stats()["sent"] == 1
    assert receiver.auth == ["Basic " + base64.b64encode(b"hook user:p@ss").decode()]


def test_webhook_retries_5xx_then_succeeds(receiver):
    hook = WebhookSink(receiver.url + "/fail2", retries=3, backoff_s=0.01)
    hook.emit({"seq": 0})
    hook.close(timeout=5)
    s = hook.stats()
    assert (s["sent"], s["failed"], s["retried"]) == (1, 0, 2)
    assert receiver.hits["/fail2"] == 3


def test_webhook_gives_up_after_bounded_retries(receiver):
    metrics = Metrics()
    hook = WebhookSink(receiver.url + "/503", retries=2, backoff_s=0.01, metrics=metrics)
    hook.emit({"seq": 0})
    hook.emit({"seq": 1})
    hook.close(timeout=5)
    s = hook.stats()
    assert (s["sent"], s["failed"], s["retried"], s["dropped"]) == (0, 2, 4, 0)
    assert "503" in s["last_error"] and "3 attempts" in s["last_error"]
    assert receiver.hits["/503"] == 6


@pytest.mark.parametrize("code", [400, 404, 302])
def test_webhook_does_not_retry_4xx_or_redirects(receiver, code):
    hook = WebhookSink(f"{receiver.url}/{code}", retries=3, backoff_s=0.01)
    hook.emit({"seq": 0})
    hook.close(timeout=5)
    s = hook.stats()
    assert (s["sent"], s["failed"], s["retried"]) == (0, 1, 0)
    assert receiver.hits[f"/{code}"] == 1 and f"HTTP {code}" in s["last_error"]


def test_webhook_unreachable_and_silent_servers_fail_fast():
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    silent = socket.socket()  # listens, accepts into the backlog, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        t0 = time.monotonic()
        refused = WebhookSink(f"http://127.0.0.1:{closed_port}/hook", retries=2, backoff_s=0.01, timeout_s=1.0)
        mute = WebhookSink(f"http://127.0.0.1:{silent.getsockname()[1]}/hook", retries=0, timeout_s=0.3)
        refused.emit({"seq": 0})
        mute.emit({"seq": 0})
        refused.close(timeout=5)
        mute.close(timeout=5)
        assert time.monotonic() - t0 < 3.0
    finally:
        silent.close()
    assert (refused.stats()["failed"], refused.stats()["retried"], refused.stats()["sent"]) == (1, 2, 0)
    assert "refused" in refused.stats()["last_error"].lower()
    assert (mute.stats()["failed"], mute.stats()["sent"]) == (1, 0)
    assert "timed out" in mute.stats()["last_error"].lower()


def test_webhook_close_stops_after_the_current_attempt(receiver):
    metrics = Metrics()
    hook = WebhookSink(receiver.url + "/500", retries=5, backoff_s=10.0, metrics=metrics, name="hook")
    for i in range(4):
        hook.emit({"seq": i})
    deadline = time.monotonic() + 5
    while receiver.hits.get("/500", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # the first event's first attempt has failed; it now waits 10 s to retry
    t0 = time.monotonic()
    assert hook.close(timeout=0.3)
    assert time.monotonic() - t0 < 1.5
    s = hook.stats()
    assert (s["sent"], s["failed"], s["dropped"]) == (0, 1, 3)  # the rest abandoned, counted
    assert metrics.counter("posestream_sink_dropped_total", sink="hook").value == 3


def test_webhook_full_queue_drops_without_blocking(receiver):
    hook = WebhookSink(receiver.url + "/slow", queue_size=2)
    t0 = time.perf_counter()
    accepted = sum(hook.emit({"seq": i}) for i in range(50))
    assert time.perf_counter() - t0 < 1.0  # a blocking emit would wait 0.3 s per event
    hook.close(timeout=5)
    s = hook.stats()
    assert s["dropped"] > 0 and s["sent"] == accepted and accepted + s["dropped"] == 50


def test_webhook_url_is_checked_and_kept_out_of_logs(caplog):
    hook = WebhookSink("http://user:pw@127.0.0.1:9/hooks/SECRET?key=SECRET2", retries=0, timeout_s=0.5)
    hook.emit({"seq": 0})
    hook.close()
    assert hook.stats()["failed"] == 1 and hook.stats()["url"] == "http://127.0.0.1:9/…"
    assert "SECRET" not in caplog.text and "pw" not in caplog.text and "not delivered" in caplog.text

    for url in ("ftp://example.com/hook", "http://", "example.com/hook", "http://host:99999/x", "http://[::1/x"):
        with pytest.raises(SinkError, match="webhook URL") as err:
            WebhookSink(url)
        assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------
# PreviewStore and StatusServer
# --------------------------------------------------------------------------------------------


def test_preview_store_rate_limits_and_downscales():
    store = PreviewStore(max_fps=2)
    frame = cv2.resize(real_frames(1)[0], (1280, 960))
    assert store.get("cam0") is None
    assert store.update("cam0", frame)
    first = store.get("cam0")
    assert sum(store.update("cam0", frame) for _ in range(50)) == 0  # within 1/2 s: skipped
    assert store.get("cam0") is first
    time.sleep(0.51)
    assert store.update("cam0", frame) and store.get("cam0") is not first
    assert store.update("cam1", frame)  # per stream
    assert store.stats() == {"encoded": 3, "skipped": 50, "failed": 0}
    image = cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3)
    assert sorted(store.streams()) == ["cam0", "cam1"]


def get(server: StatusServer, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def read_mjpeg_parts(response: http.client.HTTPResponse, n: int) -> list[bytes]:
    parts = []
    while len(parts) < n:
        line = response.fp.readline()
        if not line:
            break
        if line.strip() != b"--frame":
            continue
        headers = {}
        while (line := response.fp.readline().strip()):
            k, _, v = line.decode().partition(":")
            headers[k.lower()] = v.strip()
        assert headers["content-type"] == "image/jpeg"
        parts.append(response.fp.read(int(headers["content-length"])))
    return parts


@pytest.fixture
def status_server():
    metrics = Metrics()
    metrics.counter("posestream_frames_total", "frames", stream="cam0").inc(12)
    metrics.latency("posestream_stage_latency_seconds", "latency", stream="cam0", stage="pose").observe(0.02)
    store = PreviewStore(max_fps=50)
    frames = real_frames(30)
    store.update("cam0", frames[0])
    broken = {"on": False}

    def status():
        if broken["on"]:
            raise RuntimeError("status_fn broke")
        return {"streams": {"cam0": {"fps": np.float32(25.0)}, "lobby door": {}}, "uptime_s": 1.5}

    server = StatusServer("127.0.0.1", 0, status_fn=status, metrics=metrics, preview_fn=store.get).start()
    server.test_store, server.test_frames, server.test_broken = store, frames, broken
    yield server
    server.close()


def test_status_metrics_index_and_404s(status_server):
    code, headers, body = get(status_server, "/status")
    assert code == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"streams": {"cam0": {"fps": 25.0}, "lobby door": {}}, "uptime_s": 1.5}

    code, headers, body = get(status_server, "/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'posestream_frames_total{stream="cam0"} 12' in body.decode()
    assert 'posestream_stage_latency_seconds_count{stage="pose",stream="cam0"} 1' in body.decode()

    code, headers, body = get(status_server, "/")  # the dashboard (tests/test_dashboard.py)
    assert code == 200 and headers["content-type"].startswith("text/html") and b"/static/dashboard.js" in body
    code, headers, body = get(status_server, "/previews")  # the plain list, no script needed
    assert code == 200 and headers["content-type"].startswith("text/html")
    assert b'href="/preview/cam0.mjpg"' in body and b"/preview/lobby%20door.mjpg" in body

    code, headers, body = get(status_server, "/preview/cam0.jpg")
    assert code == 200 and headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)

    for path in ("/nope", "/preview/cam9.jpg", "/preview/cam9.mjpg", "/preview/.jpg", "/status/x"):
        assert get(status_server, path)[0] == 404, path
    assert status_server.url == f"http://127.0.0.1:{status_server.port}/" and status_server.port > 0


def test_a_failing_handler_does_not_kill_the_server(status_server):
    status_server.test_broken["on"] = True
    assert get(status_server, "/status")[0] == 500
    assert get(status_server, "/previews")[0] == 200  # the plain page shows no streams rather than failing
    status_server.test_broken["on"] = False
    assert get(status_server, "/status")[0] == 200
    assert status_server.stats()["errors"] == 2


def test_mjpeg_stream_delivers_changing_jpegs(status_server):
    store, frames = status_server.test_store, status_server.test_frames
    stop = threading.Event()

    def camera():  # a new annotated frame every 30 ms
        i = 1
        while not stop.is_set():
            store.update("cam0", frames[i % len(frames)])
            i += 1
            stop.wait(0.03)

    feeder = threading.Thread(target=camera)
    feeder.start()
    conn = http.client.HTTPConnection("127.0.0.1", status_server.port, timeout=5)
    try:
        conn.request("GET", "/preview/cam0.mjpg")
        r = conn.getresponse()
        assert r.status == 200
        assert r.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=frame"
        parts = read_mjpeg_parts(r, 3)
    finally:
        stop.set()
        feeder.join()
        conn.close()
    assert len(parts) == 3 and len({bytes(p) for p in parts}) == 3  # only changed previews are sent
    images = [cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR) for p in parts]
    assert all(img is not None and img.shape == (240, 320, 3) for img in images)


def test_mjpeg_stream_ends_when_the_server_closes():
    store = PreviewStore()
    store.update("cam0", real_frames(1)[0])
    server = StatusServer(port=0, status_fn=dict, metrics=Metrics(), preview_fn=store.get).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/preview/cam0.mjpg")
        r = conn.getresponse()
        assert len(read_mjpeg_parts(r, 1)) == 1
        t0 = time.monotonic()
        server.close()
        assert r.read().strip() == b"--frame--"  # the closing boundary, then EOF (not a 5 s timeout)
        assert time.monotonic() - t0 < 2.0
    finally:
        conn.close()
    with pytest.raises(OSError):
        get(server, "/status")


def test_token_is_required_when_set():
    store = PreviewStore()
    store.update("cam0", real_frames(1)[0])
    token = "s3cret-token"
    with StatusServer("127.0.0.1", 0, token=token, status_fn=lambda: {"streams": ["cam0"]}, metrics=Metrics(),
                      preview_fn=store.get) as server:
        for path in ("/status", "/metrics", "/", "/previews", "/preview/cam0.jpg", "/preview/cam0.mjpg", "/nope"):
            code, headers, _ = get(server, path)
            assert code == 401, path
            assert headers["www-authenticate"].startswith("Bearer")
        assert get(server, "/status", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(server, "/status?token=wrong")[0] == 401
        assert get(server, "/status", {"Authorization": f"Bearer {token}"})[0] == 200
        assert get(server, f"/status?token={token}")[0] == 200
        assert get(server, f"/metrics?token={token}")[0] == 200
        code, _, body = get(server, f"/previews?token={token}")
        assert code == 200 and f"/preview/cam0.mjpg?token={token}".encode() in body  # links keep working
        assert get(server, f"/nope?token={token}")[0] == 404
        assert server.stats()["unauthorized"] == 9


def test_binding_beyond_loopback_needs_a_token():
    for host in ("0.0.0.0", "", "192.168.1.20", "camera-box.local"):
        with pytest.raises(SinkError, match="needs a token") as err:
            StatusServer(host, 0, status_fn=dict, metrics=Metrics())
        assert "\n" not in str(err.value)
    server = StatusServer("0.0.0.0", 0, token="t", status_fn=dict, metrics=Metrics()).start()
    try:
        assert get(server, "/status?token=t")[0] == 200
    finally:
        server.close()


def test_port_in_use_is_a_one_line_error():
    first = StatusServer(port=0, status_fn=dict, metrics=Metrics())
    try:
        with pytest.raises(OSError, match="cannot listen on 127.0.0.1") as err:
            StatusServer(port=first.port, status_fn=dict, metrics=Metrics())
        assert "\n" not in str(err.value)
    finally:
        first.close()
