"""The MQTT sink (realtime/mqtt.py) against a real broker: Debian's ``mosquitto``, started by the
test on a free loopback port and killed by its PID. A real Runtime (or a ``posestream run``
process) on real footage (vtest.avi) publishes; a paho subscriber checks what arrives.

The broker tests skip when ``mosquitto`` is not installed (``sh tests/setup_services.sh``
installs it), and fail instead when ``POSESTREAM_REQUIRE_SERVICES=1`` (as on CI)."""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from posestream.realtime.config import RunConfig
from posestream.realtime.metrics import Metrics
from posestream.realtime.mqtt import MqttSink, parse_mqtt_url, topic_level
from posestream.realtime.pipeline import Runtime
from posestream.realtime.sinks import SinkError
from posestream.realtime.sources import SourceSpec

from netutil import free_port, wait_until

HERE = Path(__file__).resolve().parent
VTEST = HERE / ".media" / "vtest.avi"
WALKING = {"label": "walking", "min_score": 0.0, "min_duration_s": 0.0}


# --- URLs and topic names (no broker) -------------------------------------------------------------


def test_mqtt_urls():
    t = parse_mqtt_url("mqtt://127.0.0.1")
    assert (t.host, t.port, t.prefix, t.username, t.password) == ("127.0.0.1", 1883, "posestream", None, None)
    t = parse_mqtt_url("mqtt://ha%40home:p%3Ass@broker.lan:1884/site/cams/")
    assert (t.host, t.port, t.prefix, t.username, t.password) == ("broker.lan", 1884, "site/cams", "ha@home", "p:ss")
    assert t.where == "mqtt://***@broker.lan:1884/site/cams"  # what logs and /status show
    assert parse_mqtt_url("mqtt://[::1]:1883/x").where == "mqtt://[::1]:1883/x"


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:1883/x", "the scheme must be mqtt://"),
    ("mqtts://127.0.0.1/x", "TLS (mqtts://) is not supported yet"),
    ("mqtt:///x", "no host"),
    ("mqtt://127.0.0.1:99999/x", "Port out of range"),
    ("mqtt://127.0.0.1:port/x", "Port could not be cast"),
    ("mqtt://127.0.0.1/a/+/b", "wildcards"),
    ("mqtt://127.0.0.1/a#b", "a query or fragment"),
    ("mqtt://127.0.0.1/a//b", "empty level"),
    ("mqtt://127.0.0.1/$SYS", "must not start with $"),
    ("mqtt://me:hunter2@127.0.0.1:1883/x?qos=2", "a query or fragment"),
])
def test_bad_mqtt_urls_are_one_line_naming_the_url_without_its_password(url, says):
    with pytest.raises(SinkError) as info:
        parse_mqtt_url(url)
    message = str(info.value)
    assert says in message and "\n" not in message and "hunter2" not in message
    assert message.startswith("--mqtt " + url.replace("me:hunter2@", "***@"))


def test_stream_names_are_one_topic_level_and_decode_back():
    names = ["cam0", "cam/1", "a+b", "#", "%2F", "$SYS", "x\x00y", "", "caf\u00e9 d\u00e9j\u00e0"]
    levels = [topic_level(n) for n in names]
    assert levels[:6] == ["cam0", "cam%2F1", "a%2Bb", "%23", "%252F", "%24SYS"]
    for name, level in zip(names, levels):
        assert not set(level) & set("/+#\x00") and not level.startswith("$") and level
        if name:
            assert urllib.parse.unquote(level) == name
    assert len(set(levels)) == len(levels)  # no two streams share a topic


def test_bad_mqtt_url_on_the_command_line_is_one_line(tmp_path):
    video = tmp_path / "x.avi"
    video.write_bytes(b"")  # never opened: the URL is checked first
    done = subprocess.run([sys.executable, "-m", "posestream", "run", str(VTEST if VTEST.is_file() else video),
                           "--mqtt", "mqtt://me:hunter2@127.0.0.1:1883/a/+"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "hunter2" not in done.stderr
    assert "mqtt://***@127.0.0.1:1883/a/+" in done.stderr and "wildcards" in done.stderr
    done = subprocess.run([sys.executable, "-m", "posestream", "run", str(video), "--mqtt-discovery"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "needs mqtt" in done.stderr


def test_without_a_broker_the_outbox_is_bounded_and_every_drop_counted(caplog):
    """Nothing listens on the port: every attempt is refused and counted, the backoff doubles,
    the outbox keeps queue_size messages and drops (and counts) the rest; close() counts
    what it could not deliver as dropped too. Each message is published or dropped."""
    metrics = Metrics()
    sink = MqttSink(f"mqtt://127.0.0.1:{free_port()}/t", queue_size=10, backoff_initial_s=0.1,
                    backoff_max_s=0.4, metrics=metrics)
    try:
        accepted = [sink.emit({"stream": "s", "kind": "action", "label": "walking", "n": i}) for i in range(25)]
        assert accepted == [True] * 10 + [False] * 15
        # label changes may take only half the outbox, which events already filled
        assert sink.emit_label({"stream": "s", "track_id": 1, "label": "walking"}) is False
        assert wait_until(lambda: sink.stats()["connect_failures"] >= 3, 5.0)
        time.sleep(1.0)
        stats = sink.stats()
        # 0.1 + 0.2 + 0.4 + 0.4 ...: a few attempts a second, not a busy loop
        assert 3 <= stats["connect_failures"] <= 15, stats
        assert stats["connected"] is False and stats["queued"] == 10 and stats["dropped"] == 16
        assert "ConnectionRefusedError" in stats["last_error"]
    finally:
        assert sink.close(timeout=0.5)
    stats = sink.stats()
    assert stats["published"] == 0 and stats["dropped"] == 26 and stats["queued"] == 0
    text = metrics.render_prometheus()
    assert 'posestream_sink_dropped_total{sink="mqtt"} 26' in text
    assert f'posestream_mqtt_connect_failures_total{{sink="mqtt"}} {stats["connect_failures"]}' in text
    assert any("cannot connect" in r.getMessage() for r in caplog.records)


# --- a real broker --------------------------------------------------------------------------------


def _mosquitto() -> str | None:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.access(p, os.X_OK)), None)


@pytest.fixture(scope="module")
def mosquitto_binary() -> str:
    """The broker binary; skips when it is missing, or fails when CI said it must be there
    (POSESTREAM_REQUIRE_SERVICES=1)."""
    binary = _mosquitto()
    if binary is None:
        why = "mosquitto is not installed: run tests/setup_services.sh"
        if os.environ.get("POSESTREAM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"POSESTREAM_REQUIRE_SERVICES=1 but {why}")
        pytest.skip(why)
    return binary


class Broker:
    """``mosquitto -p PORT`` (loopback only, anonymous: its default without a config file), or
    ``mosquitto -c CONFIG`` whose listener is on ``port``; started and killed by PID, and
    restartable on the same port."""

    def __init__(self, binary: str, port: int, log_path: Path, config: Path | None = None):
        self.binary, self.port, self.log_path, self.config = binary, port, log_path, config
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        args = ["-p", str(self.port)] if self.config is None else ["-c", str(self.config)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([self.binary, *args], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}): {self.log_path.read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log_path.read_text()[-500:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None


@pytest.fixture
def broker(mosquitto_binary, tmp_path):
    b = Broker(mosquitto_binary, free_port(), tmp_path / "mosquitto.log")
    b.start()
    yield b
    b.kill()


class Subscriber:
    """A paho client subscribed (QoS 1) to ``topics`` before the test publishes anything; it
    keeps every message (topic, payload, retain flag)."""

    def __init__(self, port: int, topics=("#",), login: tuple[str, str] | None = None):
        import paho.mqtt.client as paho

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-{secrets.token_hex(4)}")
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(t, 1) for t in topics])
        self.client.loop_start()
        assert subscribed.wait(5), "no SUBACK"

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[tuple[bytes, bool]]:
        with self._lock:
            return [(p, r) for t, p, r in self.messages if t == topic]

    def json_on(self, topic: str) -> list[dict]:
        return [json.loads(p) for p, _ in self.on(topic)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def vtest() -> Path:
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing: run tests/get_media.sh first")
    return VTEST


def test_a_run_publishes_events_label_changes_availability_and_discovery(broker, vtest):
    """40 frames of vtest.avi through the real pipeline, a walking rule so that there are events,
    a stream name with every character MQTT gives a meaning to."""
    stream = "cam/1+#"
    level = "cam%2F1%2B%23"
    sub = Subscriber(broker.port)
    config = RunConfig(pace="fast", max_frames=40, events_out=None, mqtt=f"mqtt://127.0.0.1:{broker.port}/ps/test",
                       mqtt_discovery=True, action_events=[WALKING])
    heard: list[dict] = []  # what the runtime's label-change hook gave its listeners
    runtime = Runtime([SourceSpec("file", str(vtest), stream)], config, on_label_change=[heard.append])
    try:
        runtime.start()
        assert runtime.wait(timeout=300), "the run did not finish"
        assert wait_until(lambda: sub.on("ps/test/status"), 5)
        status_during = runtime.status()["sinks"]["mqtt"]
    finally:
        assert runtime.stop() == []
    sink = runtime.sinks["mqtt"]
    stats = sink.stats()
    events = runtime.recent_events()
    assert events, "no walking event: nothing to check"
    assert wait_until(lambda: len(sub.on(f"ps/test/{level}/event")) >= len(events), 5)
    # every event, in order, as the event log writes it; nothing on any other stream topic
    assert sub.json_on(f"ps/test/{level}/event") == events
    topics = {t for t, _, _ in sub.messages}
    discovery = {t for t in topics if t.startswith("homeassistant/")}
    assert topics - discovery == {"ps/test/status", f"ps/test/{level}/event", f"ps/test/{level}/labels"}
    assert len(discovery) == 1
    # label changes: one message per change, so consecutive ones of a track differ
    changes = sub.json_on(f"ps/test/{level}/labels")
    assert changes, "no label change published"
    assert changes == heard  # every change the hook saw, in order
    last: dict = {}
    for change in changes:
        assert set(change) == {"stream", "track_id", "label", "score", "time", "ts", "frame_index"}
        assert change["stream"] == stream and isinstance(change["frame_index"], int)
        assert change["label"] in runtime.engine.class_names or (change["label"] is None and change["score"] is None)
        assert last.get(change["track_id"], "-") != change["label"]
        last[change["track_id"]] = change["label"]
    # availability: online while running, offline after the clean stop; both retained (the
    # broker relays the stop's offline to the subscriber a moment after stop() returns)
    assert wait_until(lambda: len(sub.on("ps/test/status")) >= 2, 5)
    assert [p for p, _ in sub.on("ps/test/status")] == [b"online", b"offline"]
    late = Subscriber(broker.port, ["ps/test/status", "homeassistant/#"])
    try:
        # the broker sends the two retained topics one after the other
        assert wait_until(lambda: late.on("ps/test/status") and any(
            t.startswith("homeassistant/") for t, _, _ in late.messages), 5)
        assert late.on("ps/test/status") == [(b"offline", True)]
        # Home Assistant discovery: a retained binary sensor per stream
        configs = [(t, json.loads(p), r) for t, p, r in late.messages if t.startswith("homeassistant/")]
    finally:
        late.close()
    assert len(configs) == 1
    topic, ha, retained = configs[0]
    assert retained and topic == f"homeassistant/binary_sensor/{ha['unique_id']}/config"
    assert set(ha["unique_id"]) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    assert ha["state_topic"] == f"ps/test/{level}/fall" and ha["availability_topic"] == "ps/test/status"
    assert (ha["payload_on"], ha["payload_available"], ha["payload_not_available"]) == ("ON", "online", "offline")
    # the counts agree with what arrived; /status and /metrics show them
    assert stats["events_published"] == len(events) and stats["labels_published"] == len(changes)
    assert stats["dropped"] == 0 and stats["reconnects"] == 0 and status_during["connected"] is True
    assert status_during["url"] == f"mqtt://127.0.0.1:{broker.port}/ps/test"
    text = runtime.metrics.render_prometheus()
    assert f'posestream_mqtt_published_total{{sink="mqtt"}} {len(events) + len(changes)}' in text
    sub.close()


def test_the_last_will_says_offline_when_the_process_is_killed(broker, vtest):
    sub = Subscriber(broker.port)
    proc = subprocess.Popen([sys.executable, "-m", "posestream", "run", str(vtest), "--events", "-",
                             "--mqtt", f"mqtt://127.0.0.1:{broker.port}/will"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: sub.on("will/status") or proc.poll() is not None, 120), "never online"
        assert proc.poll() is None, proc.stderr.read()
        assert sub.on("will/status") == [(b"online", False)]
        joined = Subscriber(broker.port, ["will/status"])  # one that comes later gets it retained
        try:
            assert wait_until(lambda: joined.on("will/status"), 5)
            assert joined.on("will/status") == [(b"online", True)]
        finally:
            joined.close()
        # a label change shows the run is publishing, not just connected
        assert wait_until(lambda: sub.on("will/vtest/labels"), 60)
        os.kill(proc.pid, signal.SIGKILL)  # no clean stop: only the broker can say offline now
        proc.wait(timeout=10)
        assert wait_until(lambda: len(sub.on("will/status")) == 2, 10), "the will was not published"
        assert sub.on("will/status")[1][0] == b"offline"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        proc.stderr.close()
        sub.close()
    late = Subscriber(broker.port, ["will/status"])
    try:
        assert wait_until(lambda: late.on("will/status"), 5)
        assert late.on("will/status") == [(b"offline", True)]  # the will is retained
    finally:
        late.close()


def test_the_run_goes_on_through_a_broker_restart(broker, vtest, caplog):
    """Kill the broker mid-run and start it again on the same port: frames keep being
    processed meanwhile, the sink reconnects (counted, logged), events raised after the restart
    arrive, and no event is lost: the ones raised during the outage wait in the outbox."""
    sub = Subscriber(broker.port)
    config = RunConfig(events_out=None, mqtt=f"mqtt://127.0.0.1:{broker.port}/r", action_events=[WALKING])
    runtime = Runtime([SourceSpec("file", str(vtest), "vtest")], config)  # paced at 10 fps: 80 s of video
    worker, sink = runtime.workers[0], None
    try:
        runtime.start()
        sink = runtime.sinks["mqtt"]
        assert wait_until(lambda: sub.on("r/vtest/event"), 120), "no event before the restart"
        broker.kill()
        assert wait_until(lambda: not sink.connected, 10)
        sub.close()
        before = worker.counts["frames_processed"]
        time.sleep(2.0)
        assert worker.counts["frames_processed"] > before, "the run stalled without its broker"
        assert sink.stats()["connect_failures"] >= 1
        broker.start()
        after = Subscriber(broker.port)  # the broker kept no session: subscribe again
        t_restart = time.time()
        assert wait_until(lambda: sink.connected, 20), "no reconnect"
        assert wait_until(lambda: any(e["end_ts"] >= t_restart for e in after.json_on("r/vtest/event")), 60), \
            "no event raised after the restart arrived"
        assert runtime.readers[0].health == "live" and worker.counts["errors"] == 0
        status = runtime.status()["sinks"]["mqtt"]
        assert status["reconnects"] >= 1 and status["disconnects"] >= 1
        assert f'posestream_mqtt_reconnects_total{{sink="mqtt"}} {status["reconnects"]}' in \
            runtime.metrics.render_prometheus()
        assert after.on("r/status")[0][0] == b"online"  # said again: the broker lost the retained one
    finally:
        runtime.stop()
    stats = sink.stats()
    assert stats["dropped"] == 0 and stats["events_published"] == runtime.events_total
    assert any("connected again" in r.getMessage() for r in caplog.records)
    after.close()


def test_credentials_in_the_url_log_in_and_are_never_logged(mosquitto_binary, tmp_path, caplog):
    """A broker that wants a password (mosquitto with a password file): the wrong one is a
    refused, counted connection attempt with the broker's reason; the right one, percent-encoded
    in the URL, logs in and publishes. Neither password shows in the log or the stats."""
    password = "s3cr:t@x"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "alice", password], check=True,
                   capture_output=True, timeout=30)
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    # "user root": as root, mosquitto would otherwise switch to its own user, who cannot read
    # pytest's tmp_path (0700); not root, the line does nothing
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {tmp_path / 'passwd'}\n"
                      "user root\n")
    broker = Broker(mosquitto_binary, port, tmp_path / "mosquitto.log", config)
    broker.start()
    sub = None
    wrong = MqttSink(f"mqtt://alice:wrong-one@127.0.0.1:{port}/auth", backoff_initial_s=0.2, backoff_max_s=0.4)
    right = None
    try:
        assert wait_until(lambda: wrong.stats()["connect_failures"] >= 2, 10)
        stats = wrong.stats()
        assert not wrong.connected and stats["connects"] == 0 and "Not authorized" in stats["last_error"]
        assert stats["url"] == f"mqtt://***@127.0.0.1:{port}/auth"
        sub = Subscriber(port, ["auth/#"], login=("alice", password))
        right = MqttSink(f"mqtt://alice:{urllib.parse.quote(password, safe='')}@127.0.0.1:{port}/auth")
        assert right.emit({"stream": "cam0", "kind": "action", "label": "walking"})
        assert wait_until(lambda: sub.on("auth/cam0/event"), 10), right.stats()
        assert sub.json_on("auth/cam0/event") == [{"stream": "cam0", "kind": "action", "label": "walking"}]
        assert [p for p, _ in sub.on("auth/status")] == [b"online"]
    finally:
        wrong.close(timeout=0.5)
        if right is not None:
            right.close()
        if sub is not None:
            sub.close()
        broker.kill()
    assert not any(word in caplog.text for word in (password, "wrong-one", "s3cr"))
    assert "cannot connect" in caplog.text and "Not authorized" in caplog.text


def test_a_fall_event_turns_the_home_assistant_sensor_on(broker):
    """vtest.avi has no fall, so the sink is given a real fall Event's dict: with discovery it
    goes to the event topic and sets the stream's binary sensor ON; an action event does not."""
    from posestream.realtime.events import Event

    fall = Event(stream="cam/1", track_id=4, label="fall", score=0.91, start=1796286000.0, end=1796286002.5,
                 frame_index=120, kind="fall", details={"reason": "test"}).to_dict()
    walk = Event(stream="cam/1", track_id=5, label="walking", score=0.7, start=1796286001.0, end=1796286002.0,
                 frame_index=121).to_dict()
    sub = Subscriber(broker.port)
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/home", streams=["cam/1"], discovery=True)
    try:
        assert sink.emit(fall) and sink.emit(walk)
        assert wait_until(lambda: len(sub.on("home/cam%2F1/event")) == 2, 10), sink.stats()
    finally:
        assert sink.close()
    assert sub.json_on("home/cam%2F1/event") == [fall, walk]
    assert sub.on("home/cam%2F1/fall") == [(b"ON", False)]  # one fall, one ON
    (topic, payload, _), = [m for m in sub.messages if m[0].startswith("homeassistant/")]
    config = json.loads(payload)
    assert topic == f"homeassistant/binary_sensor/{config['unique_id']}/config"
    assert config["state_topic"] == "home/cam%2F1/fall" and config["device_class"] == "safety"
    assert sink.stats()["falls_published"] == 1 and sink.stats()["events_published"] == 2


def test_a_frozen_broker_is_noticed_and_left_then_found_again(broker):
    """SIGSTOP: the broker's kernel still accepts TCP connections, but nothing answers. A
    connection attempt then ends at the connect timeout (no CONNACK), and a live connection
    at the keepalive (no PINGRESP); after SIGCONT the sink is back. The event written into
    the frozen connection was never acknowledged: paho sends it again after the reconnect
    (QoS 1, at least once: the broker may deliver it twice), and it is counted published once."""
    sub = Subscriber(broker.port, ["f/#"])
    os.kill(broker.proc.pid, signal.SIGSTOP)
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/f", connect_timeout_s=1.0, keepalive_s=2,
                    backoff_initial_s=0.2, backoff_max_s=0.4)
    try:
        assert wait_until(lambda: sink.stats()["connect_failures"] >= 1, 10), sink.stats()
        assert "no CONNACK" in sink.stats()["last_error"] and not sink.connected
        os.kill(broker.proc.pid, signal.SIGCONT)
        assert wait_until(lambda: sink.connected, 10), sink.stats()
        assert sink.emit({"stream": "s", "kind": "action", "label": "walking", "n": 1})
        assert wait_until(lambda: sub.on("f/s/event"), 10)
        os.kill(broker.proc.pid, signal.SIGSTOP)
        assert sink.emit({"stream": "s", "kind": "action", "label": "walking", "n": 2})
        assert wait_until(lambda: not sink.connected, 15), "a frozen broker was not noticed"
        assert sink.stats()["disconnects"] == 1
        os.kill(broker.proc.pid, signal.SIGCONT)
        assert wait_until(lambda: [e["n"] for e in sub.json_on("f/s/event")][-1:] == [2], 20), sink.stats()
    finally:
        if broker.proc is not None:
            os.kill(broker.proc.pid, signal.SIGCONT)
        sink.close()
        sub.close()
    stats = sink.stats()
    assert stats["reconnects"] >= 1 and stats["events_published"] == 2 and stats["dropped"] == 0
