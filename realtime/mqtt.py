"""Events and label changes -> an MQTT broker (home automation, NVRs, pagers), with paho-mqtt.

``posestream run ... --mqtt mqtt://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX]`` (port 1883, prefix
``posestream`` by default) publishes:

=================================  =========================================================
``PREFIX/<stream>/event``          each event (the JSON of the event log), QoS 1
``PREFIX/<stream>/labels``         each change of a track's displayed label: stream,
                                   track_id, label (null: no label any more), score, time,
                                   ts, frame_index; QoS 1
``PREFIX/<stream>/fall``           ``ON`` on each fall event (the Home Assistant binary
                                   sensor's state; it turns itself off after ``off_delay``)
``PREFIX/status``                  ``online`` (retained) once connected; ``offline``
                                   (retained) on a clean stop, and as the last will, which the
                                   broker publishes when the process dies or the link is lost
``homeassistant/binary_sensor/     with ``--mqtt-discovery``: a retained Home Assistant MQTT
<id>/config``                      discovery config per stream ("Fall detected")
=================================  =========================================================

``<stream>`` is the stream name with the characters MQTT gives a meaning to (``/`` the level
separator, ``+`` and ``#`` the wildcards, ``%`` itself, a leading ``$``, NUL and other control
characters) percent-encoded (:func:`topic_level`), so every stream is exactly one topic level,
two names never share a topic, and a subscriber can decode the name back.

One thread owns the paho client (paho's own network thread is not used): it connects,
publishes, calls ``client.loop()`` and reconnects after a lost connection or a failed attempt
with a backoff of ``backoff_initial_s`` doubling up to ``backoff_max_s``. ``emit`` and
``emit_label`` never block: they serialize the message and put it in the bounded outbox (the
:class:`~posestream.realtime.sinks._QueuedSink` queue); a full outbox drops the new message,
counted. Label changes may fill only half the outbox, so that during a long outage the other
half stays for events. At most ``max_inflight`` messages are handed to paho unacknowledged;
paho sends those again after a reconnect (QoS 1: at least once). Every message ends up in
exactly one of ``published`` (acknowledged by the broker) or ``dropped`` (outbox full, sink
closed, or not acknowledged when ``close()`` ran out of time); reconnects and failed
connection attempts are counted and logged. Credentials in the URL are sent to the broker and
never logged (:attr:`MqttSink.where`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from posestream.errors import first_line
from posestream.realtime.metrics import Metrics
from posestream.realtime.sinks import SinkError, _QueuedSink, _RateLimitedWarning, event_json, jsonable

__all__ = ["MqttTarget", "MqttSink", "parse_mqtt_url", "topic_level", "DEFAULT_PREFIX", "DISCOVERY_PREFIX"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
DEFAULT_PREFIX = "posestream"
#: Home Assistant's default discovery prefix.
DISCOVERY_PREFIX = "homeassistant"
#: How long Home Assistant shows "fall detected" after a fall event before it turns it off
#: itself (nothing here knows when the person got up).
FALL_OFF_DELAY_S = 60
MQTT_PUBLISHED = "posestream_mqtt_published_total"
MQTT_RECONNECTS = "posestream_mqtt_reconnects_total"
MQTT_CONNECT_FAILURES = "posestream_mqtt_connect_failures_total"
MQTT_CONNECTED = "posestream_mqtt_connected"

# Characters percent-encoded in a topic level: the separator, the wildcards, the escape
# character itself, and control characters (NUL is forbidden in topics; the others would only
# confuse a log). A leading "$" is encoded too: brokers keep $-topics for themselves ($SYS).
_UNSAFE = re.compile(r"[/+#%\x00-\x1f\x7f]")


def topic_level(name: str) -> str:
    """``name`` as one MQTT topic level: ``/``, ``+``, ``#``, ``%``, control characters and a
    leading ``$`` percent-encoded (``"cam/1"`` -> ``"cam%2F1"``); reversible with
    ``urllib.parse.unquote``. The empty name becomes ``"_"`` (an empty level, ``prefix//event``,
    would read as a mistake in every subscriber's log)."""
    text = _UNSAFE.sub(lambda m: "%{:02X}".format(ord(m.group())), str(name))
    if text.startswith("$"):
        text = "%24" + text[1:]
    return text or "_"


@dataclass(frozen=True)
class MqttTarget:
    """Where :class:`MqttSink` connects: from :func:`parse_mqtt_url`."""

    host: str
    port: int
    prefix: str
    username: str | None = None
    password: str | None = None

    @property
    def where(self) -> str:
        """The URL without the credentials, for logs and ``/status``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = "***@" if self.username is not None else ""
        return f"mqtt://{user}{host}:{self.port}/{self.prefix}"


def _redact(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@`` (for error messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}://{netloc}{slash}{tail}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX]`` -> :class:`MqttTarget`; a
    :class:`~posestream.realtime.sinks.SinkError` naming the (redacted) URL otherwise.

    The prefix is the URL's path (percent-decoded, slashes inside it are topic levels:
    ``/site/cams`` -> ``site/cams``); it must not hold wildcards or empty levels."""
    if not isinstance(url, str):
        raise SinkError(f"--mqtt: expected a URL string, got {type(url).__name__}")
    shown = _redact(url)
    hint = "expected mqtt://[user[:password]@]host[:port][/prefix], e.g. mqtt://127.0.0.1:1883/posestream"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises ValueError on a port that is not a number or out of range
    except ValueError as exc:
        raise SinkError(f"--mqtt {shown}: {first_line(exc)}; {hint}") from None
    if parts.scheme == "mqtts":
        raise SinkError(f"--mqtt {shown}: TLS (mqtts://) is not supported yet; use mqtt:// on a trusted network "
                        "or a local broker that bridges over TLS")
    if parts.scheme != "mqtt":
        raise SinkError(f"--mqtt {shown}: the scheme must be mqtt://; {hint}")
    if not parts.hostname:
        raise SinkError(f"--mqtt {shown}: no host; {hint}")
    if parts.query or parts.fragment:
        raise SinkError(f"--mqtt {shown}: a query or fragment (?...#...) means nothing here; {hint}")
    if port == 0:
        raise SinkError(f"--mqtt {shown}: port 0 is not a broker's port; {hint}")
    prefix = urllib.parse.unquote(parts.path).strip("/") or DEFAULT_PREFIX
    levels = prefix.split("/")
    if any(not level for level in levels):
        raise SinkError(f"--mqtt {shown}: the topic prefix {prefix!r} has an empty level (//)")
    if any(c in prefix for c in "+#\x00"):
        raise SinkError(f"--mqtt {shown}: the topic prefix {prefix!r} must not contain the MQTT wildcards + or #")
    if prefix.startswith("$"):
        raise SinkError(f"--mqtt {shown}: the topic prefix {prefix!r} must not start with $ (broker topics)")
    username = None if parts.username is None else urllib.parse.unquote(parts.username)
    password = None if parts.password is None else urllib.parse.unquote(parts.password)
    return MqttTarget(parts.hostname, port or DEFAULT_PORT, prefix, username, password)


def _object_id(text: str) -> str:
    """Home Assistant's ids allow ``[a-zA-Z0-9_-]``."""
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", text).strip("_") or "_"


class MqttSink(_QueuedSink):
    """Events and label changes -> ``target`` (an ``mqtt://`` URL or :class:`MqttTarget`); see
    the module docstring for the topics, the outbox and the counts.

    ``streams``: the run's stream names (for the Home Assistant discovery configs, published
    on every connect when ``discovery`` is true). ``queue_size``: the outbox. ``close()``
    delivers what is queued for up to its ``timeout``, publishes ``offline`` and disconnects.
    """

    def __init__(self, target: str | MqttTarget, *, streams: Sequence[str] = (), discovery: bool = False,
                 queue_size: int = 1000, max_inflight: int = 20, keepalive_s: int = 30,
                 connect_timeout_s: float = 5.0, backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 metrics: Metrics | None = None, name: str = "mqtt", client_id: str | None = None):
        self.target = target if isinstance(target, MqttTarget) else parse_mqtt_url(target)
        self.where = self.target.where
        if not (0 < backoff_initial_s <= backoff_max_s):
            raise SinkError(f"mqtt {self.where}: need 0 < backoff_initial_s <= backoff_max_s, "
                            f"got {backoff_initial_s!r}, {backoff_max_s!r}")
        if isinstance(max_inflight, bool) or not isinstance(max_inflight, int) or max_inflight < 1:
            raise SinkError(f"mqtt {self.where}: max_inflight must be an int >= 1, got {max_inflight!r}")
        import paho.mqtt.client as paho  # a runtime dependency (setup.py); imported here, like cv2

        self._paho = paho
        self.prefix = self.target.prefix
        self.status_topic = f"{self.prefix}/status"
        self.streams = [str(s) for s in streams]
        self.discovery = bool(discovery)
        self.max_inflight = max_inflight
        self.keepalive_s = int(keepalive_s)
        self.backoff_initial_s, self.backoff_max_s = float(backoff_initial_s), float(backoff_max_s)
        # unique per process and run: a broker disconnects the older of two clients with one id
        self.client_id = client_id or f"posestream-{secrets.token_hex(6)}"
        super().__init__("mqtt", name, queue_size, metrics)
        labels = {"sink": name}
        self._m_published = metrics.counter(MQTT_PUBLISHED, "MQTT messages the broker acknowledged", **labels) \
            if metrics is not None else None
        self._m_reconnects = metrics.counter(MQTT_RECONNECTS, "MQTT connections made again after a loss",
                                             **labels) if metrics is not None else None
        self._m_failures = metrics.counter(MQTT_CONNECT_FAILURES, "failed MQTT connection attempts",
                                           **labels) if metrics is not None else None
        self._m_connected = metrics.gauge(MQTT_CONNECTED, "1 while connected to the MQTT broker", **labels) \
            if metrics is not None else None
        # Written by the sink's thread only; stats() reads them (int reads: at most stale).
        self._counts = {"events_published": 0, "labels_published": 0, "falls_published": 0, "control_published": 0,
                        "connects": 0, "reconnects": 0, "connect_failures": 0, "disconnects": 0}
        self._connected = False
        self._last_error: str | None = None
        self._unacked: dict[int, str] = {}  # mid -> "event" | "label" | "fall" | "control"
        self._warn_connect = _RateLimitedWarning(logger=log)
        self._deadline = math.inf  # set by close() before it sets _closed (the thread reads both)
        self._backoff = self.backoff_initial_s
        self._next_attempt = 0.0                  # monotonic time of the next connection attempt
        self._awaiting_connack: float | None = None  # while an attempt waits for CONNACK: its deadline
        self._client = self._new_client(connect_timeout_s)
        self._start()

    # -- producer side ---------------------------------------------------------------------

    def emit(self, event: Mapping[str, Any]) -> bool:
        """Queue one event for ``PREFIX/<stream>/event`` (and ``ON`` for ``PREFIX/<stream>/fall``
        when it is a fall and discovery is on); False (counted as dropped) when the outbox is
        full or the sink is closed. Never blocks."""
        stream = topic_level(event.get("stream", ""))
        ok = self._offer(("event", f"{self.prefix}/{stream}/event", event_json(event).encode("utf-8"), False))
        if self.discovery and event.get("kind") == "fall":
            ok = self._offer(("fall", f"{self.prefix}/{stream}/fall", b"ON", False)) and ok
        return ok

    def emit_label(self, change: Mapping[str, Any]) -> bool:
        """Queue one label change for ``PREFIX/<stream>/labels``. Refused (counted as dropped)
        once the outbox is half full: the other half is kept for events."""
        if self._qsize() >= max(1, self._maxsize // 2):
            self._count_drop("outbox half full: label changes give way to events")
            return False
        stream = topic_level(change.get("stream", ""))
        return self._offer(("label", f"{self.prefix}/{stream}/labels", event_json(change).encode("utf-8"), False))

    def close(self, timeout: float = 5.0) -> bool:
        """Deliver what is queued for up to ``timeout`` s, publish ``offline`` (retained),
        disconnect (so the broker does not send the will); what is still queued or
        unacknowledged then is counted as dropped. True when the thread finished in time."""
        self._deadline = time.monotonic() + max(0.0, timeout)
        # the thread may be in a connection attempt (connect_timeout_s) and then says offline (1 s)
        return self._close(timeout + self._client.connect_timeout + 3.0)

    @property
    def connected(self) -> bool:
        return self._connected

    def stats(self) -> dict[str, Any]:
        counts = dict(self._counts)
        return {"url": self.where, "connected": self._connected, **counts,
                "published": counts["events_published"] + counts["labels_published"] + counts["falls_published"],
                "dropped": self.dropped,
                "queued": self._qsize(), "inflight": len(self._unacked), "last_error": self._last_error}

    # -- the client (the sink's thread only, after construction) ------------------------------

    def _new_client(self, connect_timeout: float):
        paho = self._paho
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv311, clean_session=True)
        if self.target.username is not None:
            client.username_pw_set(self.target.username, self.target.password)
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.connect_timeout = float(connect_timeout)
        # this thread decides when to reconnect; paho's own reconnect is for loop_forever/loop_start
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _bump(self, what: str) -> int:
        self._counts[what] += 1
        return self._counts[what]

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._connect_failed(f"the broker refused the connection: {reason_code}")
            client.disconnect()
            return
        self._connected = True
        self._backoff = self.backoff_initial_s
        first = self._bump("connects") == 1
        if self._m_connected is not None:
            self._m_connected.set(1)
        if first:
            log.info("mqtt %s: connected (client id %s)", self.where, self.client_id)
        else:
            self._bump("reconnects")
            if self._m_reconnects is not None:
                self._m_reconnects.inc()
            log.warning("mqtt %s: connected again (reconnect %d; %d messages waiting)", self.where,
                        self._counts["reconnects"], self._qsize() + len(self._unacked))
        # a broker restarted without persistence has lost the retained messages: send them each time
        self._publish_control(self.status_topic, b"online")
        if self.discovery:
            for stream in self.streams:
                topic, config = self._discovery_config(stream)
                self._publish_control(topic, json.dumps(config).encode("utf-8"))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected
        self._connected = False
        if self._m_connected is not None:
            self._m_connected.set(0)
        if not was and self._awaiting_connack is not None:  # the broker closed before its CONNACK
            self._connect_failed(f"connection closed before the CONNACK: {reason_code}")
        elif was and not self._closed:  # (after close(), _finish disconnects on purpose)
            self._bump("disconnects")
            self._last_error = f"connection lost: {reason_code}"
            log.warning("mqtt %s: connection lost (%s); reconnecting with backoff, %d messages waiting",
                        self.where, reason_code, self._qsize() + len(self._unacked))
            self._next_attempt = time.monotonic() + self._backoff

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        kind = self._unacked.pop(mid, None)
        if kind is None:
            return
        self._bump(f"{kind}s_published" if kind != "control" else "control_published")
        if kind != "control" and self._m_published is not None:
            self._m_published.inc()

    def _publish(self, kind: str, topic: str, payload: bytes, retain: bool) -> bool:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != self._paho.MQTT_ERR_SUCCESS and info.rc != self._paho.MQTT_ERR_NO_CONN:
            # paho keeps a QoS 1 message queued over NO_CONN and sends it after the reconnect;
            # any other code (a payload too large, a bad topic) means it never will
            self._count_drop(f"paho refused it: {self._paho.error_string(info.rc)}")
            return False
        self._unacked[info.mid] = kind
        return True

    def _publish_control(self, topic: str, payload: bytes) -> None:
        self._publish("control", topic, payload, True)

    def _discovery_config(self, stream: str) -> tuple[str, dict]:
        from posestream import __version__

        object_id = _object_id(f"posestream_{self.prefix}_{stream}_fall")
        level = topic_level(stream)
        config = {
            "name": "Fall detected",
            "unique_id": object_id,
            "object_id": object_id,
            "device_class": "safety",
            "state_topic": f"{self.prefix}/{level}/fall",
            "payload_on": "ON",
            "payload_off": "OFF",
            "off_delay": FALL_OFF_DELAY_S,
            "availability_topic": self.status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "json_attributes_topic": f"{self.prefix}/{level}/event",
            "device": {"identifiers": [_object_id(f"posestream_{self.prefix}_{stream}")],
                       "name": f"posestream {stream}", "manufacturer": "posestream", "sw_version": __version__},
        }
        return f"{DISCOVERY_PREFIX}/binary_sensor/{object_id}/config", config

    def _connect_failed(self, why: str) -> None:
        self._last_error = why
        failures = self._bump("connect_failures")
        if self._m_failures is not None:
            self._m_failures.inc()
        self._warn_connect("mqtt %s: cannot connect (%s); retrying in %.1f s (%d failed attempts so far)",
                           self.where, why, self._backoff, failures)
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self.backoff_max_s, self._backoff * 2)
        self._awaiting_connack = None

    def _attempt(self) -> None:
        """One connection attempt: the TCP connect and CONNECT here, the CONNACK in loop()."""
        self._next_attempt = math.inf  # until the attempt ends one way or the other
        try:
            self._client.connect(self.target.host, self.target.port, keepalive=self.keepalive_s)
        except (OSError, ValueError) as exc:  # refused, unreachable, DNS, timeout
            self._connect_failed(f"{type(exc).__name__}: {first_line(exc)}")
            return
        self._awaiting_connack = time.monotonic() + self._client.connect_timeout

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:  # a bug here must not leave close() waiting
            log.exception("mqtt %s: the sink's thread failed; later messages are dropped", self.where)
        finally:
            try:
                self._finish()
            except Exception:
                log.exception("mqtt %s: finishing failed", self.where)
            finally:
                self._finished.set()

    def _serve(self) -> None:
        while True:
            now = time.monotonic()
            if self._closed and (now >= self._deadline or not (self._items or self._unacked)):
                return
            if not self._connected:
                if self._awaiting_connack is not None and now >= self._awaiting_connack:
                    self._connect_failed("no CONNACK within the connect timeout")
                    self._client.disconnect()
                if self._awaiting_connack is None and now >= self._next_attempt:
                    self._attempt()
                if self._awaiting_connack is None:  # no socket: nothing for loop() to do
                    time.sleep(min(0.05, max(0.0, min(self._next_attempt, self._deadline) - now)))
                    continue
            else:
                self._awaiting_connack = None
                self._pump()
            # reads CONNACK/PUBACK (callbacks run here), writes what publish() queued, pings;
            # a lost connection shows as on_disconnect
            self._client.loop(timeout=0.0 if self._connected and self._items else 0.05)

    def _pump(self) -> None:
        while self._connected and len(self._unacked) < self.max_inflight:
            try:
                kind, topic, payload, retain = self._items.popleft()
            except IndexError:
                return
            self._publish(kind, topic, payload, retain)

    def _finish(self) -> None:
        # what is left is dropped now; a PUBACK that still comes for it must not count it twice
        unacked = [mid for mid, kind in self._unacked.items() if kind != "control"]
        for mid in unacked:
            del self._unacked[mid]
        left = len(self._items) + len(unacked)
        self._items.clear()
        for _ in range(left):
            self._count_drop("not delivered before close() ran out of time")
        if self._connected:
            # say offline ourselves: a clean DISCONNECT makes the broker discard the will
            self._publish_control(self.status_topic, b"offline")
            end = time.monotonic() + 1.0
            while self._connected and self._unacked and time.monotonic() < end:
                self._client.loop(timeout=0.05)
            self._client.disconnect()
            self._client.loop(timeout=0.05)
        else:
            self._client.disconnect()  # a half-open attempt's socket; the will says offline
        self._connected = False
        if self._m_connected is not None:
            self._m_connected.set(0)
        c = self._counts
        log.info("mqtt %s: closed; %d events and %d label changes published, %d dropped, %d reconnects",
                 self.where, c["events_published"], c["labels_published"], self.dropped, c["reconnects"])
