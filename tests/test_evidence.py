"""Evidence of events (issue 15): snapshot + H.264 clip per event in an SQLite store, the events
API on the status server, the label stream. Real parts only: vtest.avi through the real
pipeline, real SQLite files, the real libx264 encoder (PyAV) and decoder, the real HTTP server,
a real `posestream run` killed with SIGKILL."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from posestream.realtime.config import RunConfig
from posestream.realtime.evidence import EventStore, EvidenceRecorder
from posestream.realtime.frames import Frame
from posestream.realtime.metrics import Metrics
from posestream.realtime.pipeline import Runtime
from posestream.realtime.sinks import SinkError, StatusServer
from posestream.realtime.sources import parse_source

HERE = Path(__file__).resolve().parent
VTEST = HERE / ".media" / "vtest.avi"
FRAMES = 60
PRE_S = POST_S = 1.0
FPS = 10  # vtest.avi's rate; its frames carry pts, so a second of clip is 10 frames at any pace
WALKING = {"label": "walking", "min_score": 0.0, "min_duration_s": 0.0}


@pytest.fixture(scope="module")
def vtest() -> Path:
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing: run tests/get_media.sh first")
    return VTEST


def vtest_frames(n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(VTEST))
    frames = [cap.read()[1] for _ in range(n)]
    cap.release()
    assert all(f is not None for f in frames)
    return frames


@pytest.fixture(scope="module")
def evidence_run(vtest, tmp_path_factory):
    """60 frames of vtest.avi through the whole pipeline with a walking event rule (vtest's
    pedestrians walk), evidence with 1 s before and after, and the label stream."""
    out = tmp_path_factory.mktemp("evidence")
    config = RunConfig(pace="fast", max_frames=FRAMES, events_out=None, evidence=str(out / "ev"),
                       evidence_pre_s=PRE_S, evidence_post_s=POST_S, labels_out=str(out / "labels.jsonl"),
                       action_events=[WALKING])
    runtime = Runtime([parse_source(str(vtest))], config).start()
    assert runtime.wait(timeout=300), "the run did not finish"
    assert runtime.stop() == []
    assert runtime.events, "no walking event: the evidence would be checked empty"
    return runtime, out


def rows(folder: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(folder / "events.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM events ORDER BY id").fetchall()
    finally:
        db.close()


def top_level_boxes(path: Path) -> list[bytes]:
    data = path.read_bytes()
    boxes, i = [], 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i:i + 4], "big")
        boxes.append(data[i + 4:i + 8])
        if size < 8:
            break
        i += size
    return boxes


def decode(path: Path) -> tuple[str, list[float], list[np.ndarray]]:
    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context.name
        times, images = [], []
        for frame in container.decode(video=0):
            times.append(float(frame.time))
            images.append(frame.to_ndarray(format="bgr24"))
    return codec, times, images


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-9))


# ----------------------------------------------------------------------------------------------
# Evidence of a real run


def test_every_event_has_a_row_a_snapshot_and_a_browser_playable_h264_clip(evidence_run):
    runtime, out = evidence_run
    folder = out / "ev"
    stored = rows(folder)
    assert [json.loads(r["event_json"]) for r in stored] == list(runtime.events)
    stats = runtime.sinks["evidence"].stats()
    assert stats["complete"] + stats["partial"] == len(stored) and stats["dropped"] == 0
    last = FRAMES - 1
    for r in stored:
        f = r["frame_index"]
        # every frame was processed (pace fast), so the clip is exactly the frames within 1 s
        first_expected, last_expected = max(0, f - PRE_S * FPS), min(last, f + POST_S * FPS)
        assert r["evidence"] == ("complete" if f + POST_S * FPS <= last else "partial"), dict(r)
        assert r["clip_frames"] == last_expected - first_expected + 1
        clip, snap = folder / r["clip"], folder / r["snapshot"]
        assert r["bytes"] == clip.stat().st_size + snap.stat().st_size
        # H.264 in MP4, index first (a browser plays it while it downloads)
        boxes = top_level_boxes(clip)
        assert boxes[0] == b"ftyp" and boxes.index(b"moov") < boxes.index(b"mdat")
        codec, times, images = decode(clip)
        assert codec == "h264"
        assert len(images) == r["clip_frames"] and images[0].shape == (576, 768, 3)
        assert times[-1] - times[0] == pytest.approx((r["clip_frames"] - 1) / FPS, abs=0.002)
        # the snapshot is the event's own (annotated) frame, and the clip holds it at its place
        snapshot = cv2.imdecode(np.frombuffer(snap.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        assert snapshot.shape == (576, 768, 3)
        at = int(f - first_expected)
        similarity = [psnr(image, snapshot) for image in images]
        assert similarity[at] > 30 and abs(int(np.argmax(similarity)) - at) <= 1, similarity
    media = sorted(p.name for p in (folder / "media").iterdir())
    assert media == sorted(n for r in stored for n in (Path(r["clip"]).name, Path(r["snapshot"]).name))


def test_the_label_stream_has_one_line_per_label_change_per_track(evidence_run):
    runtime, out = evidence_run
    lines = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert lines, "no label line"
    by_track: dict = {}
    for line in lines:
        assert set(line) == {"stream", "track_id", "label", "score", "time", "ts", "frame_index"}
        assert line["stream"] == "vtest" and 0 <= line["frame_index"] < FRAMES
        by_track.setdefault(line["track_id"], []).append(line)
    names = set(runtime.engine.class_names)
    for track, changes in by_track.items():
        assert changes[0]["label"] is not None  # the first line is a track getting a label
        for a, b in zip(changes, changes[1:]):
            assert a["label"] != b["label"] and a["frame_index"] <= b["frame_index"]
        for c in changes:
            assert c["label"] is None or (c["label"] in names and 0 < c["score"] <= 1)
    # every walking event was raised on a track whose label stream says walking at that frame
    for event in runtime.events:
        said = [c for c in by_track[event["track_id"]] if c["frame_index"] <= event["frame_index"]]
        assert said and said[-1]["label"] == "walking"


def test_events_survive_a_restart_and_the_api_acks_them(evidence_run, vtest):
    runtime, out = evidence_run
    folder = out / "ev"
    before = rows(folder)
    config = RunConfig(pace="fast", max_frames=5, events_out=None, evidence=str(folder), http="127.0.0.1:0")
    second = Runtime([parse_source(str(vtest))], config).start()
    try:
        base = second.server.url.rstrip("/")
        code, headers, body = http(f"{base}/api/events?limit=2")
        assert code == 200 and headers["Content-Type"].startswith("application/json")
        page = json.loads(body)
        assert page["total"] == len(before) and [e["id"] for e in page["events"]] == [before[-1]["id"],
                                                                                        before[-2]["id"]]
        seen = page["events"]
        while page["next_before"] is not None:
            page = json.loads(http(f"{base}/api/events?limit=2&before={page['next_before']}")[2])
            seen += page["events"]
        assert sorted(e["id"] for e in seen) == [r["id"] for r in before]
        one = seen[-1]
        assert one["stream"] == "vtest" and one["label"] == "walking" and not one["acked"]
        assert one["evidence"]["state"] in ("complete", "partial")
        code, headers, jpeg = http(base + one["evidence"]["snapshot"])
        assert code == 200 and headers["Content-Type"] == "image/jpeg"
        assert jpeg == (folder / before[0]["snapshot"]).read_bytes()
        code, headers, mp4 = http(base + one["evidence"]["clip"], headers={"Range": "bytes=0-99"})
        assert code == 206 and headers["Content-Type"] == "video/mp4" and len(mp4) == 100
        code, _, body = http(f"{base}/api/events/{one['id']}/ack", method="POST")
        assert code == 200 and json.loads(body)["acked"] is True
        assert http(f"{base}/api/events/{one['id']}/ack")[0] == 405  # ack is a POST
    finally:
        second.stop()
    store = EventStore(folder)
    try:
        again = store.get(one["id"])
        assert again["acked"] and again["acked_ts"] > 0  # the ack was kept across the restart
        assert store.list_events(limit=500)["total"] == len(before)
    finally:
        store.close()


# ----------------------------------------------------------------------------------------------
# The API: the token rule, traversal, injection


def http(url: str, *, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {},
                                     data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def record_events(folder: Path, events: list[dict], frames: int = 30, **options) -> dict:
    """Real vtest frames through a real recorder, with ``events`` raised at their frame_index."""
    recorder = EvidenceRecorder(folder, pre_s=0.5, post_s=0.5, **options)
    due = {}
    for e in events:
        due.setdefault(e["frame_index"], []).append(e)
    streams = sorted({e["stream"] for e in events})
    t0 = time.monotonic()
    for i, image in enumerate(vtest_frames(frames)):
        for stream in streams:
            recorder.add_frame(stream, Frame(stream, i, t0 + i / FPS, time.time(), image, pts=i / FPS), image)
        for e in due.get(i, []):
            recorder.on_event(e)
    assert recorder.close(60)
    return recorder.stats()


def event(stream: str, frame: int, label: str = "fall", track=1) -> dict:
    return {"kind": "fall", "stream": stream, "track_id": track, "label": label, "score": 0.9,
            "start_ts": time.time(), "end_ts": time.time(), "frame_index": frame, "details": {}}


@pytest.fixture(scope="module")
def hostile_store(vtest, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "ev"
    nasty = '<script>alert("x")</script>/../../etc'
    stats = record_events(folder, [event(nasty, 8, label='"><img src=x onerror=alert(1)>', track="../1"),
                                   event("cam", 12)])
    assert stats["complete"] == 2
    return folder, nasty


def test_api_is_json_whatever_the_names_and_serves_nothing_outside_the_evidence(hostile_store):
    folder, nasty = hostile_store
    store = EventStore(folder)
    server = StatusServer("127.0.0.1", 0, status_fn=lambda: {"streams": [nasty, "cam"]}, metrics=Metrics(),
                          events=store).start()
    base = server.url.rstrip("/")
    try:
        code, headers, body = http(f"{base}/api/events")
        assert code == 200 and headers["Content-Type"] == "application/json; charset=utf-8"
        assert headers["X-Content-Type-Options"] == "nosniff"  # a browser must not sniff it as HTML
        listed = json.loads(body)["events"]
        assert {e["stream"] for e in listed} == {nasty, "cam"}  # kept as text, returned as JSON text
        assert {e["label"] for e in listed} == {'"><img src=x onerror=alert(1)>', "fall"}
        # the one server-drawn HTML page escapes the name wherever it shows it (the dashboard at /
        # draws names from the JSON as text: tests/test_dashboard.py)
        code, headers, page = http(f"{base}/previews")
        assert code == 200 and headers["Content-Type"].startswith("text/html")
        assert b"<script>" not in page and b"&lt;script&gt;" in page
        # files are named by id only: nothing of a stream name or label reaches the disk
        assert all(re.fullmatch(r"[0-9]+\.(jpg|mp4)", p.name) for p in (folder / "media").iterdir())
        secret = (folder / "events.db").read_bytes()[:64]
        for path in ("/api/events/../../etc/passwd", "/api/events/..%2f..%2fetc%2fpasswd",
                     "/api/events/%2e%2e/events.db", "/api/events/1/../../events.db", "/api/events/1abc",
                     "/api/events/-1", "/api/events/1.0", "/api/events/%31%00", "/api/events/%EF%BC%91",
                     "/api/events/99999999999999999999999", "/api/events/1/snapshot.jpg/../../../events.db",
                     "/api/events/1/..%2f..%2fevents.db", "/api/events/999/clip.mp4"):
            code, headers, body = http(base + path)
            assert code == 404, path
            assert headers["Content-Type"].startswith("application/json") and "error" in json.loads(body), path
            assert b"root:" not in body and secret not in body
        assert http(f"{base}/api/events?limit=0")[0] == 400
        assert http(f"{base}/api/events?before=x")[0] == 400
        assert http(f"{base}/api/events", method="POST")[0] == 405
        assert http(f"{base}/status", method="POST")[0] == 405
    finally:
        server.close()
        store.close()


def test_api_needs_the_token_when_one_is_set(hostile_store):
    folder, _ = hostile_store
    store = EventStore(folder)
    server = StatusServer("127.0.0.1", 0, token="s3cret", status_fn=lambda: {"streams": []}, metrics=Metrics(),
                          events=store).start()
    base = server.url.rstrip("/")
    try:
        for path, method in (("/api/events", "GET"), ("/api/events/1", "GET"), ("/api/events/1/snapshot.jpg", "GET"),
                             ("/api/events/1/clip.mp4", "GET"), ("/api/events/1/ack", "POST")):
            assert http(base + path, method=method)[0] == 401, path
            assert http(base + path, method=method, headers={"Authorization": "Bearer wrong"})[0] == 401, path
        assert http(f"{base}/api/events/1/ack", method="POST")[0] == 401
        assert store.get(1)["acked"] is False  # the refused ack changed nothing
        ok = {"Authorization": "Bearer s3cret"}
        assert http(f"{base}/api/events", headers=ok)[0] == 200
        assert http(f"{base}/api/events/2/snapshot.jpg?token=s3cret")[0] == 200
        assert http(f"{base}/api/events/1/ack", method="POST", headers=ok)[0] == 200
        assert store.get(1)["acked"] is True
    finally:
        server.close()
        store.close()
    with pytest.raises(SinkError, match="needs a token"):
        StatusServer("0.0.0.0", 0, status_fn=dict, metrics=Metrics(), events=None)


# ----------------------------------------------------------------------------------------------
# Bounds, retention, bad input


def test_retention_by_size_and_by_age_deletes_rows_and_files(vtest, tmp_path):
    folder = tmp_path / "ev"
    # each event's files are ~130 KB (a 768x576 JPEG and an 11-frame clip): 250 KB keeps one
    stats = record_events(folder, [event("cam", f) for f in (6, 12, 18, 24)], frames=30, retention_gb=250e-6)
    assert stats["complete"] == 4 and stats["retention_deleted"] >= 2
    left = rows(folder)
    assert len(left) == 4 - stats["retention_deleted"] and sum(r["bytes"] for r in left) <= 250_000
    assert [r["id"] for r in left] == list(range(5 - len(left), 5))  # the oldest went first
    names = {p.name for p in (folder / "media").iterdir()}
    assert names == {Path(r[k]).name for r in left for k in ("snapshot", "clip")}
    # by age: make the rows old, as if written 40 days ago
    db = sqlite3.connect(folder / "events.db")
    db.execute("UPDATE events SET created_ts = created_ts - 40 * 86400")
    db.commit()
    db.close()
    store = EventStore(folder)
    db = store.connect()
    try:
        assert store.enforce_retention(db, 30, None) == len(left)
    finally:
        db.close()
        store.close()
    assert rows(folder) == [] and list((folder / "media").iterdir()) == []


def test_too_many_clips_at_once_are_dropped_counted_and_said_in_their_rows(vtest, tmp_path):
    folder = tmp_path / "ev"
    burst = [event("cam", 5, track=i) for i in range(20)]  # 20 events on one frame, 16 may collect at once
    metrics = Metrics()
    stats = record_events(folder, burst, frames=12, metrics=metrics)
    assert stats["evidence_dropped"] == 4 and stats["complete"] == 16
    assert metrics.counter("posestream_sink_dropped_total", sink="evidence").value == 4
    states = [r["evidence"] for r in rows(folder)]
    assert states.count("complete") == 16 and states.count("dropped") == 4  # every event kept its row
    assert len(list((folder / "media").glob("*.mp4"))) == 16


def test_a_stream_whose_frames_stop_still_gets_its_clip_written(vtest, tmp_path):
    """A camera that goes dark after an event: its clip cannot collect post_s of frames, so
    the writer writes it with what it has once stall_s has passed, without waiting for close()."""
    folder = tmp_path / "ev"
    recorder = EvidenceRecorder(folder, pre_s=0.5, post_s=5.0, stall_s=0.5)
    try:
        t0 = time.monotonic()
        for i, image in enumerate(vtest_frames(8)):
            recorder.add_frame("cam", Frame("cam", i, t0 + i / FPS, time.time(), image, pts=i / FPS), image)
            if i == 5:
                recorder.on_event(event("cam", 5))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and recorder.stats()["partial"] == 0:
            time.sleep(0.05)
        assert not recorder.closed and recorder.stats()["partial"] == 1
        (row,) = rows(folder)
        assert row["evidence"] == "partial" and row["clip_frames"] == 8  # frames 0..7: 0.5 s before frame 5, 2 after
        assert len(decode(folder / row["clip"])[2]) == 8
    finally:
        assert recorder.close(30)


def test_bad_evidence_folders_are_one_line_errors(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(SinkError, match=rf"evidence folder {re.escape(str(not_a_folder))}: exists and is not a folder"):
        EventStore(not_a_folder)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "events.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SinkError, match="events.db is not a usable SQLite database"):
        EventStore(broken)
    first = EventStore(tmp_path / "shared")
    try:
        with pytest.raises(SinkError, match="in use by another posestream run"):
            EventStore(tmp_path / "shared")
    finally:
        first.close()
    EventStore(tmp_path / "shared").close()  # free again once the first run let go
    with pytest.raises(ValueError, match="evidence_pre_s must be"):
        RunConfig(evidence_pre_s=-1).validate()


# ----------------------------------------------------------------------------------------------
# A crash in the middle


KILL_RULE = """
[[action_events]]
label = "walking"
min_score = 0.0
min_duration_s = 0.0
"""


def test_sigkill_while_writing_leaves_no_half_file_and_a_consistent_db(vtest, tmp_path):
    """`posestream run` killed with SIGKILL while an evidence file is being written (a
    temporary file exists): no file under a final name is partial, the DB is intact, and the
    next open cleans up and marks what was lost."""
    folder = tmp_path / "ev"
    config = tmp_path / "rule.toml"
    config.write_text(KILL_RULE)
    cmd = [sys.executable, "-m", "posestream", "run", str(vtest), "--config", str(config), "--pace", "fast",
           "--max-frames", "120", "--evidence", str(folder), "--pre-s", "1", "--post-s", "1", "--events", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    killed_mid_write = False
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            media = folder / "media"
            finals = [p for p in media.glob("*.mp4")] if media.is_dir() else []
            if len(finals) >= 1 and any(media.glob(".*.tmp*")):
                os.kill(proc.pid, signal.SIGKILL)
                killed_mid_write = True
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
    assert killed_mid_write, f"the run ended before a clip was being written: {err.decode()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    db = sqlite3.connect(folder / "events.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    stored = rows(folder)
    assert stored and any(r["evidence"] == "pending" for r in stored)
    # every file under a final name is whole: each clip decodes to the frames its row says (a
    # file renamed just before the kill, whose row was not updated yet, decodes all the same)
    finals = sorted((folder / "media").glob("[0-9]*"))
    assert finals
    by_name = {Path(r[k]).name: r for r in stored for k in ("clip", "snapshot") if r[k]}
    for p in finals:
        if p.suffix == ".mp4":
            codec, _, images = decode(p)
            assert codec == "h264" and images
            if p.name in by_name:
                assert len(images) == by_name[p.name]["clip_frames"]
        else:
            assert cv2.imdecode(np.frombuffer(p.read_bytes(), np.uint8), cv2.IMREAD_COLOR).shape == (576, 768, 3)
    assert any((folder / "media").glob(".*.tmp*"))
    store = EventStore(folder)
    store.close()
    assert store.recovered["tmp_removed"] >= 1 and store.recovered["interrupted"] >= 1
    assert not any((folder / "media").glob(".*"))
    after = rows(folder)
    assert {r["evidence"] for r in after} <= {"complete", "partial", "interrupted"}
    # after recovery every file is some row's, and every path a row names exists
    named = {Path(r[k]).name for r in after for k in ("clip", "snapshot") if r[k]}
    assert named == {p.name for p in finals}


def test_ctrl_c_writes_the_clips_still_collecting_frames_as_partial(vtest, tmp_path):
    """SIGINT to a realtime `posestream run` while its clips wait for 30 s of post-event frames:
    the clean shutdown writes them with what they have, and leaves nothing pending."""
    folder = tmp_path / "ev"
    config = tmp_path / "rule.toml"
    config.write_text(KILL_RULE)
    labels = tmp_path / "labels.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "posestream", "run", str(vtest), "--config", str(config),
                             "--evidence", str(folder), "--pre-s", "1", "--post-s", "30", "--events", "-",
                             "--labels", str(labels)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if (folder / "events.db").is_file() and rows(folder):
                    break
            except sqlite3.OperationalError:  # the run is still creating the table
                pass
            time.sleep(0.1)
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()[-2000:]
    stored = rows(folder)
    assert stored and {r["evidence"] for r in stored} == {"partial"}  # 30 s had not passed for any
    for r in stored:
        _, times, images = decode(folder / r["clip"])
        # the frames of the second before (fewer at the stream's start, and at realtime pace the
        # reader drops what a busy pipeline cannot take) and those after, up to the Ctrl-C
        assert len(images) == r["clip_frames"] >= 2
        assert times[-1] - times[0] == pytest.approx(r["clip_s"] - 1 / FPS, abs=0.002)
    assert not any((folder / "media").glob(".*"))
    assert labels.read_text().count("\n") >= 1  # the label stream from the CLI


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_a_browser_plays_the_clip_from_the_api(hostile_store, tmp_path):
    """Headless Chromium loads an event's clip from the events API into a <video> and plays it
    to the end. --dump-dom dumps the page at its load event, so an image from a local server
    that answers after 6 s holds that event back while the (2 s) clip plays. Skips without
    chromium (tests/setup_services.sh installs it), fails instead with POSESTREAM_REQUIRE_SERVICES=1."""
    if CHROMIUM is None:
        why = "no chromium on this machine (sh tests/setup_services.sh, or apt-get install chromium)"
        if os.environ.get("POSESTREAM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"POSESTREAM_REQUIRE_SERVICES=1 but {why}")
        pytest.skip(why)
    folder, _ = hostile_store
    store = EventStore(folder)
    server = StatusServer("127.0.0.1", 0, status_fn=lambda: {"streams": []}, metrics=Metrics(), events=store).start()
    hold = ThreadingHTTPServer(("127.0.0.1", 0), _HoldTheLoadEvent)
    threading.Thread(target=hold.serve_forever, daemon=True).start()
    clip = store.get(2)["evidence"]
    page = tmp_path / "play.html"
    page.write_text(PLAY_PAGE.replace("CLIP", server.url.rstrip("/") + clip["clip"])
                    .replace("HOLD", f"http://127.0.0.1:{hold.server_address[1]}/hold"))
    try:
        done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                               "--autoplay-policy=no-user-gesture-required", "--dump-dom", page.as_uri()],
                              capture_output=True, text=True, timeout=90)
    finally:
        hold.shutdown()
        server.close()
        store.close()
    found = re.search(r'<pre id="out">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stdout[-1000:] + done.stderr[-1000:]
    seen = json.loads(found.group(1))
    assert seen["tag"] == "ended" and seen["error"] is None, seen
    assert (seen["w"], seen["h"]) == (768, 576)
    assert seen["duration"] == pytest.approx(clip["clip_s"], abs=0.05) and seen["t"] == pytest.approx(seen["duration"])
    assert seen["frames"] >= 1  # frames presented (a loaded machine may skip some)


class _HoldTheLoadEvent(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(6.0)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


PLAY_PAGE = """<!doctype html><html><body><pre id="out">waiting</pre>
<video id="v" muted playsinline preload="auto" src="CLIP"></video>
<script>
const v = document.getElementById("v"), out = document.getElementById("out");
let frames = 0;
function report(tag) {
  out.textContent = JSON.stringify({tag, error: v.error && v.error.code, w: v.videoWidth, h: v.videoHeight,
                                    duration: v.duration, t: v.currentTime, frames});
}
function count() { frames++; v.requestVideoFrameCallback(count); }
v.requestVideoFrameCallback(count);
v.addEventListener("error", () => report("error"));
v.addEventListener("ended", () => report("ended"));
v.addEventListener("loadedmetadata", () => { report("metadata"); v.play().catch(e => report("play failed: " + e)); });
</script><img src="HOLD" style="display:none"></body></html>
"""
