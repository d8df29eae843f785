"""The MQTT sink (realtime/mqtt.py): its URLs, topic names, and its outbox without a broker."""
import socket
import time
import urllib.parse

import pytest

from posestream.realtime.metrics import Metrics
from posestream.realtime.mqtt import MqttSink, parse_mqtt_url, topic_level
from posestream.realtime.sinks import SinkError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


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
