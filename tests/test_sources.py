"""Frame sources on real inputs: OpenCV's vtest.avi, an image folder made from it, a camera
device that does not exist, and a real RTSP server (tests/rtsp_server.py, GStreamer) that is
killed and restarted under the reader."""
from __future__ import annotations

import functools
import http.server
import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from posestream.realtime.sources import (
    FrameReader,
    SourceError,
    SourceSpec,
    parse_source,
    probe_source,
)

HERE = Path(__file__).resolve().parent
MEDIA = HERE / ".media"
VTEST = MEDIA / "vtest.avi"  # 795 frames, 768x576, 10 fps
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER = HERE / "rtsp_server.py"
MISSING_CAMERA = "/dev/video99"


@pytest.fixture(scope="module")
def vtest() -> Path:
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing: run tests/get_media.sh first "
                    "(it fetches OpenCV's sample footage)")
    return VTEST


def one_line(text: str) -> str:
    assert text and "\n" not in text, repr(text)
    return text


def wait_until(condition, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def take_all(reader: FrameReader, timeout: float = 5.0) -> list:
    frames = []
    while (frame := reader.get(timeout=timeout)) is not None:
        frames.append(frame)
    return frames


# --- parse_source -----------------------------------------------------------------------------


def test_parse_cameras():
    assert parse_source("0") == SourceSpec("camera", "0", "cam0")
    assert parse_source("2") == SourceSpec("camera", "2", "cam2")
    assert parse_source("/dev/video3") == SourceSpec("camera", "/dev/video3", "video3")
    assert parse_source("0", name="door").name == "door"


def test_parse_urls():
    assert parse_source("rtsp://127.0.0.1:8554/test") == SourceSpec(
        "rtsp", "rtsp://127.0.0.1:8554/test", "127.0.0.1_8554_test")
    assert parse_source("rtsps://cam.example.com/live/main").kind == "rtsp"
    assert parse_source("rtsps://cam.example.com/live/main").name == "cam.example.com_live_main"
    http = parse_source("http://192.168.1.20:8080/video.mjpg?x=1")
    assert (http.kind, http.name) == ("http", "192.168.1.20_8080_video.mjpg")
    assert parse_source("https://example.com").name == "example.com"
    # credentials open the stream but never reach the name or messages
    secret = parse_source("rtsp://admin:hunter2@10.0.0.5:554/stream1")
    assert secret.uri == "rtsp://admin:hunter2@10.0.0.5:554/stream1"
    assert secret.name == "10.0.0.5_554_stream1"
    assert "hunter2" not in secret.display


def test_parse_files_and_folders(vtest, tmp_path):
    assert parse_source(str(vtest)) == SourceSpec("file", str(vtest), "vtest")
    folder = tmp_path / "shots 1"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert parse_source(str(folder)) == SourceSpec("images", str(folder), "shots_1")


@pytest.mark.parametrize("text, message", [
    ("x.mp4", "x.mp4: no such file"),
    ("rtsp://", "rtsp://: malformed URL (no host)"),
    ("rtsp://cam:abc/x", "rtsp://cam:abc/x: malformed URL (port is not a number from 0 to 65535)"),
    ("http://:8080/x", "http://:8080/x: malformed URL (no host)"),
    ("", "empty source"),
])
def test_parse_errors(text, message):
    with pytest.raises(SourceError) as err:
        parse_source(text)
    assert one_line(str(err.value)).startswith(message)


def test_parse_error_unsupported_scheme_says_what_works():
    with pytest.raises(SourceError) as err:
        parse_source("ftp://host/file.mp4")
    text = one_line(str(err.value))
    assert text.startswith("ftp://host/file.mp4: unsupported scheme 'ftp', use ")
    assert "rtsp://" in text and "camera" in text


def test_parse_error_folder_without_images_and_bad_name(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(SourceError, match=r"folder has no \.jpg/\.jpeg/\.png/\.bmp images"):
        parse_source(str(tmp_path))
    with pytest.raises(SourceError, match="bad stream name"):
        parse_source("0", name="front door")


def test_password_masked_in_errors():
    with pytest.raises(SourceError) as err:
        parse_source("rtsp://admin:hunter2@cam:x/s")
    assert "hunter2" not in str(err.value) and "admin:***@" in str(err.value)


# --- files --------------------------------------------------------------------------------------


def test_probe_video_file(vtest):
    assert probe_source(parse_source(str(vtest))) == {
        "fps": 10.0, "frame_count": 795, "width": 768, "height": 576}
    assert probe_source(parse_source("0")) == {}  # live sources are not opened by the probe


def test_non_video_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video\n" * 100)
    spec = parse_source(str(bad))  # exists, so it parses; decoding is checked by the probe
    with pytest.raises(SourceError) as err:
        probe_source(spec)
    assert one_line(str(err.value)).startswith(f"{bad}: cannot be decoded as video")
    # the reader reports the same thing instead of raising in its thread
    with FrameReader(spec, pace="fast") as reader:
        assert reader.get(timeout=5) is None
        assert reader.ended.is_set()
    assert reader.health == "failed"
    assert one_line(reader.last_error).startswith(f"{bad}: cannot be decoded as video")


def test_a_file_read_fast_keeps_its_own_clock_for_motion(vtest):
    """At pace fast a file is read as fast as frames are taken: the read times follow the CPU
    (here slower than the file: 0.25 s a frame against its 0.1 s), the stream clock (t_clock,
    what windows, tracks and the fall logic measure motion on) keeps the file's own time, or a
    fast CPU would make walkers run. At the file's own pace the two are the same clock."""
    with FrameReader(parse_source(str(vtest)), pace="fast", max_frames=6) as reader:
        frames = []
        while len(frames) < 6:
            frame = reader.get(timeout=5)
            assert frame is not None
            frames.append(frame)
            time.sleep(0.25)
    clock = np.diff([f.t_clock for f in frames])
    read = np.diff([f.t_capture for f in frames])
    np.testing.assert_allclose(clock, 0.1, atol=1e-9)
    assert read[1:].min() > 0.2  # (the reader reads a frame ahead: frame 1 came at once)
    assert frames[0].t_clock == pytest.approx(frames[0].t_capture)
    with FrameReader(parse_source(str(vtest)), pace="realtime", max_frames=3) as reader:
        live = [reader.get(timeout=5) for _ in range(3)]
    assert all(f is not None and f.t_stream is None and f.t_clock == f.t_capture for f in live)


def test_fast_reads_every_frame_in_order(vtest):
    reader = FrameReader(parse_source(str(vtest)), pace="fast")
    assert reader.stats()["nominal_fps"] == 10.0  # known before start, for the pipeline
    with reader:
        frames = take_all(reader)
    assert [f.index for f in frames] == list(range(795))
    assert all(f.stream == "vtest" and f.image.shape == (576, 768, 3) and f.image.dtype == np.uint8
               for f in frames)
    assert frames[10].pts == pytest.approx(1.0)
    assert all(a.t_capture <= b.t_capture for a, b in zip(frames, frames[1:]))
    stats = reader.stats()
    assert stats["health"] == "ended" and reader.ended.is_set() and stats["last_error"] is None
    assert (stats["frames_read"], stats["frames_dropped"], stats["bad_frames"]) == (795, 0, 0)
    assert (stats["width"], stats["height"], stats["nominal_fps"]) == (768, 576, 10.0)
    # the frames are the file's frames
    cap = cv2.VideoCapture(str(vtest))
    for _ in range(3):
        ok, first = cap.read()
    cap.release()
    assert np.array_equal(first, frames[2].image)


def test_realtime_plays_at_the_file_rate(vtest):
    with FrameReader(parse_source(str(vtest)), max_frames=20) as reader:
        frames = take_all(reader, timeout=3)
    assert [f.index for f in frames][-1] == 19 and reader.health == "ended"
    took = frames[-1].t_capture - frames[0].t_capture
    assert 1.6 < took < 3.0, took  # 19 intervals of 0.1 s
    assert [f.pts for f in frames] == pytest.approx([f.index / 10 for f in frames])
    assert 7 < reader.stats()["fps"] < 13


def test_realtime_slow_consumer_drops_and_counts(vtest):
    taken = []
    with FrameReader(parse_source(str(vtest))) as reader:
        for _ in range(5):
            taken.append(reader.get(timeout=3))
            time.sleep(0.35)  # a consumer at ~3 fps behind a 10 fps file
        reader.stop()
        taken += take_all(reader, timeout=1)  # a frame may still wait in the slot
    indices = [f.index for f in taken]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    dropped = reader.frames_dropped
    assert dropped >= 5, reader.stats()
    # every frame read was either taken or counted as dropped; gaps in indices are the drops
    assert len(taken) + dropped == reader.frames_read
    assert sum(b - a - 1 for a, b in zip(indices, indices[1:])) == dropped - indices[0]


def test_loop_continues_past_the_end(vtest):
    with FrameReader(parse_source(str(vtest)), pace="fast", loop=True, max_frames=850) as reader:
        frames = take_all(reader)
    assert [f.index for f in frames] == list(range(850))
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))  # time goes on across the loop
    assert frames[795].pts == pytest.approx(79.5)
    assert np.array_equal(frames[795].image, frames[0].image)
    assert reader.health == "ended" and reader.last_error is None


# --- image folders ------------------------------------------------------------------------------


@pytest.fixture
def image_folder(vtest, tmp_path):
    """Frames 0, 10, .. 40 of vtest.avi as 000.jpg .. 003.jpg and 004.png, plus a corrupt
    002x.jpg between 002.jpg and 003.jpg, and a text file that is not an image."""
    cap = cv2.VideoCapture(str(vtest))
    folder = tmp_path / "stills"
    folder.mkdir()
    for i in range(41):
        ok, frame = cap.read()
        assert ok
        if i % 10 == 0:
            cv2.imwrite(str(folder / f"{i // 10:03d}.{'png' if i == 40 else 'jpg'}"), frame)
    cap.release()
    (folder / "002x.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (folder / "readme.txt").write_text("not an image")
    return folder


def test_image_folder_in_order_with_bad_file_counted(image_folder):
    spec = parse_source(str(image_folder))
    assert spec.kind == "images" and spec.name == "stills"
    assert probe_source(spec) == {"fps": None, "frame_count": 6, "width": 768, "height": 576}
    with FrameReader(spec, pace="fast", image_fps=10.0) as reader:
        frames = take_all(reader)
    names = ["000.jpg", "001.jpg", "002.jpg", "003.jpg", "004.png"]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert [f.pts for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.4, 0.5])  # 002x.jpg was 0.3
    for frame, name in zip(frames, names):
        assert np.array_equal(frame.image, cv2.imread(str(image_folder / name)))
    assert reader.bad_frames == 1 and reader.frames_dropped == 0
    assert reader.health == "ended" and reader.stats()["nominal_fps"] == 10.0


def test_image_folder_paced_and_looped(image_folder):
    spec = parse_source(str(image_folder))
    with FrameReader(spec, loop=True, max_frames=12, image_fps=20.0) as reader:
        frames = take_all(reader)
    assert [f.index for f in frames] == list(range(12))
    assert frames[5].pts == pytest.approx(6 / 20)  # the second pass, after 6 positions
    took = frames[-1].t_capture - frames[0].t_capture
    assert 0.5 < took < 1.5, took  # 13 positions (one bad) at 20 per second
    assert reader.bad_frames == 2


# --- cameras, stopping, threads -----------------------------------------------------------------


def test_missing_camera_retries_with_backoff_and_stops_promptly():
    reader = FrameReader(parse_source(MISSING_CAMERA), backoff_initial_s=0.05, backoff_max_s=0.2)
    with reader:
        assert wait_until(lambda: reader.open_failures >= 4, timeout=5), reader.stats()
        assert reader.health == "retrying" and not reader.ended.is_set()
        assert one_line(reader.last_error).startswith(f"camera {MISSING_CAMERA}: cannot be opened")
        t = time.monotonic()
        reader.stop()
        assert time.monotonic() - t < 0.1
        assert reader.join(timeout=2)
    assert reader.ended.is_set() and reader.health == "ended" and reader.frames_read == 0
    assert reader.reconnects == 0


def test_missing_camera_gives_up_after_max_retries():
    with FrameReader(parse_source(MISSING_CAMERA), backoff_initial_s=0.02, max_retries=2) as reader:
        assert reader.get(timeout=5) is None
        assert reader.ended.wait(5)
    assert reader.health == "failed"
    assert reader.open_failures == 3  # the first attempt and two retries
    assert one_line(reader.last_error) == (
        f"camera {MISSING_CAMERA}: cannot be opened (no such device, busy, or no permission) "
        "(gave up after 2 retries)")


def test_stop_wakes_a_consumer_blocked_in_get():
    reader = FrameReader(parse_source(MISSING_CAMERA), backoff_initial_s=0.05)
    got = []
    consumer = threading.Thread(target=lambda: got.append(reader.get()))
    with reader:
        consumer.start()
        time.sleep(0.3)
        assert consumer.is_alive()  # blocked: the camera gives nothing
        t = time.monotonic()
        reader.stop()
        consumer.join(timeout=1)
        assert not consumer.is_alive() and time.monotonic() - t < 0.5
    assert got == [None] and reader.ended.is_set()


def test_threads_return_to_baseline(vtest):
    baseline = threading.active_count()
    readers = [FrameReader(parse_source(str(vtest))), FrameReader(parse_source(MISSING_CAMERA)),
               FrameReader(parse_source(str(vtest)), pace="fast", max_frames=3)]
    for reader in readers:
        reader.start()
    assert readers[0].get(timeout=3) is not None
    assert threading.active_count() >= baseline + 2
    for reader in readers:
        reader.stop()
    for reader in readers:
        assert reader.join(timeout=3)
    assert threading.active_count() == baseline


# --- a real RTSP server -------------------------------------------------------------------------


def _rtsp_server_available() -> str | None:
    """None when Debian's python3 can run tests/rtsp_server.py, else why not."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found"
    check = ("import gi; gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import GstRtspServer")
    done = subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no error text"])[-1]
        return f"{SYSTEM_PYTHON} cannot import GstRtspServer ({last}): run tests/setup_rtsp.sh"
    return None


@pytest.fixture(scope="module")
def rtsp_ready() -> Path:
    """The video to serve; skips when the server cannot run here, or fails when CI said it
    must (POSESTREAM_REQUIRE_RTSP=1)."""
    why_not = _rtsp_server_available()
    if why_not is None and not VTEST.is_file():
        why_not = f"{VTEST} is missing: run tests/get_media.sh first"
    if why_not:
        if os.environ.get("POSESTREAM_REQUIRE_RTSP") == "1":
            pytest.fail(f"POSESTREAM_REQUIRE_RTSP=1 but {why_not}")
        pytest.skip(why_not)
    return VTEST


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServerProcess:
    """tests/rtsp_server.py serving a video on 127.0.0.1:port, started and killed by PID."""

    def __init__(self, video: Path, port: int):
        self.video, self.port = video, port
        self.url = f"rtsp://127.0.0.1:{port}/test"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(RTSP_SERVER), "--video", str(self.video), "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().strip() if ready else ""
        if line != "READY":
            self.kill()
            raise RuntimeError(f"rtsp_server.py did not get ready on port {self.port}: "
                               f"{line!r} {self.proc.stderr.read()[-500:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        if self.proc is not None:
            self.proc.stdout.close()
            self.proc.stderr.close()
        self.proc = None


@pytest.fixture
def rtsp_server(rtsp_ready):
    server = RtspServerProcess(rtsp_ready, free_port())
    server.start()
    yield server
    server.kill()


def next_frame_after(reader: FrameReader, index: int, timeout: float):
    """The first frame taken with an index of at least ``index``, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        frame = reader.get(timeout=left)
        if frame is not None and frame.index >= index:
            return frame
    return None


def test_rtsp_reconnects_after_the_server_dies(rtsp_server, capsys):
    spec = parse_source(rtsp_server.url)
    reader = FrameReader(spec, rtsp_transport="tcp", backoff_initial_s=0.25, backoff_max_s=1.0,
                         read_timeout_s=1.0)
    with reader:
        frames = [next_frame_after(reader, i, timeout=15) for i in range(5)]
        assert all(f is not None and f.image.shape == (576, 768, 3) for f in frames), reader.stats()
        assert reader.health == "live" and [f.pts for f in frames] == [None] * 5

        rtsp_server.kill()
        t_kill = time.monotonic()
        assert wait_until(lambda: reader.health == "retrying", timeout=10), reader.stats()
        t_retrying = time.monotonic()
        assert wait_until(lambda: reader.open_failures >= 1, timeout=5), reader.stats()
        assert not reader.ended.is_set()

        rtsp_server.start()
        t_restart = time.monotonic()
        frame = next_frame_after(reader, reader.frames_read, timeout=10)
        t_flowing = time.monotonic()
        assert frame is not None, reader.stats()
        assert frame.image.shape == (576, 768, 3)
        assert reader.health == "live" and reader.reconnects >= 1, reader.stats()
        stats = reader.stats()
    assert reader.join(timeout=5) and reader.health == "ended"
    with capsys.disabled():
        print(f"\nrtsp tcp: retrying {t_retrying - t_kill:.2f} s after kill; frames again "
              f"{t_flowing - t_restart:.2f} s after restart; stats {stats}")


def test_rtsp_server_that_starts_late(rtsp_ready):
    """A camera that boots after posestream: the reader retries until it answers."""
    server = RtspServerProcess(rtsp_ready, free_port())
    reader = FrameReader(parse_source(server.url), backoff_initial_s=0.1, backoff_max_s=0.5)
    try:
        with reader:
            assert wait_until(lambda: reader.open_failures >= 2, timeout=5), reader.stats()
            assert reader.health == "retrying" and reader.frames_read == 0
            server.start()
            frame = reader.get(timeout=10)
            # the first frames of the stream; on a busy CPU the slot may already hold a later one,
            # and then every frame before it was counted as dropped, none silently lost
            assert frame is not None and frame.index <= reader.stats()["frames_dropped"], reader.stats()
            assert reader.health == "live" and reader.reconnects == 1
    finally:
        server.kill()


def test_rtsp_over_udp(rtsp_server):
    with FrameReader(parse_source(rtsp_server.url), rtsp_transport="udp", max_frames=20) as reader:
        frames = take_all(reader, timeout=15)
    assert frames and frames[-1].index == 19, reader.stats()
    assert all(f.image.shape == (576, 768, 3) for f in frames)
    assert reader.health == "ended" and reader.reconnects == 0 and reader.open_failures == 0


# --- HTTP ---------------------------------------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # one line per request on stderr is noise in test output
        pass


class QuietHTTPServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # FFmpeg hangs up mid-download when the reader stops: expected, not worth a traceback
        pass


@pytest.fixture
def http_url(vtest):
    """vtest.avi served by a real HTTP server on 127.0.0.1 (Python's http.server)."""
    handler = functools.partial(QuietHandler, directory=str(vtest.parent))
    server = QuietHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{vtest.name}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_http_source_reads_frames(http_url):
    spec = parse_source(http_url)
    assert spec.kind == "http" and probe_source(spec) == {}
    with FrameReader(spec, max_frames=30) as reader:
        frames = take_all(reader, timeout=10)
    assert frames and frames[-1].index == 29, reader.stats()
    assert all(f.image.shape == (576, 768, 3) and f.pts is None for f in frames)
    # live sources are never paced: a consumer slower than the download drops frames
    assert len(frames) + reader.frames_dropped == 30
    assert reader.health == "ended" and reader.open_failures == 0
