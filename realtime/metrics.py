"""Counters, gauges and latency histograms for the realtime path, and their two views:
Prometheus text (``GET /metrics``) and a JSON-able snapshot (``/status``, ``bench``).

One :class:`Metrics` registry per run. Each stage asks it once for the objects it updates
(``metrics.latency("posestream_stage_latency_seconds", "...", stream="cam0", stage="pose")``)
and keeps them: asking again with the same name and labels returns the same object, so the
lookup stays out of the per-frame path. Every object is thread-safe on its own (its own lock),
so a stage thread updates it while the status server reads it.

The names the runtime uses (all prefixed ``posestream_``):

=========================================  ===================================================
``posestream_stage_latency_seconds``       histogram, labels ``stream``, ``stage`` (read,
                                           detect, track, pose, rasterize, classify,
                                           frame_to_label)
``posestream_frames_total``                counter, ``stream``
``posestream_frames_dropped_total``        counter, ``stream``, ``stage``
``posestream_reconnects_total``            counter, ``stream``
``posestream_events_total``                counter, ``stream``, ``label``
``posestream_sink_dropped_total``          counter, ``sink``
``posestream_mqtt_published_total``        counter, ``sink``: messages the broker acknowledged
``posestream_mqtt_reconnects_total``       counter, ``sink``
``posestream_mqtt_connect_failures_total`` counter, ``sink``
``posestream_mqtt_connected``              gauge, ``sink``: 1 while connected
``posestream_triton_calls_total``          counter, ``network``, ``where`` (server, local): calls
                                           of a network on a Triton server (posestream.engines
                                           .triton) and on the local fall-back
``posestream_triton_retries_total``        counter, ``network``
``posestream_triton_fallbacks_total``      counter, ``network``: times it went local
``posestream_triton_returns_total``        counter, ``network``: times it went back to the server
``posestream_triton_on_server``            gauge, ``network``: 1 while on the server
=========================================  ===================================================

:class:`LatencyStats` keeps two things: Prometheus-style bucket counts over every observation
(what a scraper aggregates across time and machines) and the most recent ``reservoir``
observations, from which it computes exact percentiles of "now" (what ``bench`` and the status
page show). Count, mean and max are over every observation.
"""
from __future__ import annotations

import bisect
import logging
import math
import re
import threading
import time
from collections import deque
from typing import Iterable, Sequence

import numpy as np

__all__ = ["DEFAULT_LATENCY_BUCKETS", "STAGE_LATENCY", "LatencyStats", "LatencyHistory", "Counter", "Gauge",
           "Metrics"]

log = logging.getLogger(__name__)

#: Histogram upper bounds in seconds: 1 ms to 10 s, 1-2.5-5 steps (Prometheus' usual spacing).
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

#: The per-stage latency histogram of the realtime path (labels ``stream``, ``stage``).
STAGE_LATENCY = "posestream_stage_latency_seconds"

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class LatencyStats:
    """A latency histogram plus a reservoir of the most recent observations.

    ``observe(seconds)`` is cheap (a bisect and a deque append under a lock). A NaN, infinite
    or negative observation is a bug in the caller's timing; it is not recorded but counted
    in ``rejected`` (and logged once), so one bad clock reading cannot poison the mean.
    """

    def __init__(self, buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS, reservoir: int = 2048):
        bounds = tuple(float(b) for b in buckets)
        if not bounds or any(not math.isfinite(b) for b in bounds) or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"buckets must be finite, strictly increasing and not empty, got {buckets!r}")
        if reservoir < 1:
            raise ValueError(f"reservoir must be >= 1, got {reservoir!r}")
        self._bounds = bounds
        self._lock = threading.Lock()
        # Per-bucket (not cumulative) counts; the last slot is +Inf. Cumulated when read.
        self._bucket_counts = [0] * (len(bounds) + 1)
        self._count = 0
        self._sum = 0.0
        self._max = 0.0
        self._recent: deque[float] = deque(maxlen=int(reservoir))
        self._rejected = 0

    @property
    def buckets(self) -> tuple[float, ...]:
        return self._bounds

    def observe(self, seconds: float) -> None:
        """Record one latency, in seconds."""
        s = float(seconds)
        if not (s >= 0.0 and math.isfinite(s)):  # also catches NaN
            with self._lock:
                self._rejected += 1
                first = self._rejected == 1
            if first:
                log.warning("latency observation %r rejected (must be finite and >= 0); "
                            "later ones are only counted", seconds)
            return
        i = bisect.bisect_left(self._bounds, s)  # first bound >= s: Prometheus' "le"
        with self._lock:
            self._bucket_counts[i] += 1
            self._count += 1
            self._sum += s
            if s > self._max:
                self._max = s
            self._recent.append(s)

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    @property
    def rejected(self) -> int:
        with self._lock:
            return self._rejected

    def recent_since(self, seen: int) -> tuple[int, list[float]]:
        """``(count, observations)``: the observations (seconds) made after the first ``seen``
        ones, as far as the reservoir still holds them, and the count to pass next time. A
        sampler that calls this every few seconds gets the percentiles of each interval alone."""
        with self._lock:
            count = self._count
            new = min(max(count - int(seen), 0), len(self._recent))
            tail = list(self._recent)[len(self._recent) - new:] if new else []
        return count, tail

    def histogram(self) -> tuple[list[tuple[float, int]], float, int]:
        """``([(upper bound, cumulative count), ..., (inf, count)], sum, count)``, read
        together under the lock so the three agree."""
        with self._lock:
            counts = list(self._bucket_counts)
            total, count = self._sum, self._count
        cumulative, running = [], 0
        for bound, c in zip(self._bounds + (math.inf,), counts):
            running += c
            cumulative.append((bound, running))
        return cumulative, total, count

    def percentiles(self, ps: Iterable[float] = (50, 95, 99)) -> dict[float, float | None]:
        """``{p: milliseconds}`` over the recent observations (numpy's linear interpolation);
        None for each p while there is none."""
        ps = tuple(ps)
        for p in ps:
            if not 0 <= p <= 100:
                raise ValueError(f"percentile must be in [0, 100], got {p!r}")
        with self._lock:
            recent = np.fromiter(self._recent, dtype=np.float64, count=len(self._recent))
        if recent.size == 0:
            return {p: None for p in ps}
        values = np.percentile(recent, ps) * 1000.0
        return {p: float(v) for p, v in zip(ps, values)}

    def summary(self) -> dict:
        """``{"count", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"}``; the
        millisecond values are None before the first observation."""
        with self._lock:
            count, total, peak = self._count, self._sum, self._max
        pct = self.percentiles((50, 95, 99))
        return {
            "count": count,
            "mean_ms": total / count * 1000.0 if count else None,
            "p50_ms": pct[50],
            "p95_ms": pct[95],
            "p99_ms": pct[99],
            "max_ms": peak * 1000.0 if count else None,
        }


class Counter:
    """A value that only goes up (events, frames, drops)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def inc(self, n: int | float = 1) -> None:
        if n < 0:
            raise ValueError(f"a counter only goes up; inc({n!r})")
        with self._lock:  # += on a shared attribute is not atomic across threads
            self._value += n

    @property
    def value(self) -> int | float:
        with self._lock:
            return self._value


class Gauge:
    """A value that is set (queue depth, fps, connected)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: float = 0.0

    def set(self, v: float) -> None:
        with self._lock:
            self._value = float(v)

    def inc(self, n: float = 1.0) -> None:
        with self._lock:
            self._value += n

    def dec(self, n: float = 1.0) -> None:
        self.inc(-n)

    @property
    def value(self) -> float:
        with self._lock:
            return self._value


_KINDS = {Counter: "counter", Gauge: "gauge", LatencyStats: "histogram"}


class _Family:
    """Every series (label set) of one metric name."""

    __slots__ = ("name", "help", "kind", "series")

    def __init__(self, name: str, help: str, kind: str):
        self.name = name
        self.help = help
        self.kind = kind
        self.series: dict[tuple[tuple[str, str], ...], Counter | Gauge | LatencyStats] = {}


class Metrics:
    """The registry: counters, gauges and latency histograms by name and labels."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}  # insertion order = exposition order
        self._refreshers: list = []

    def add_refresher(self, fn) -> None:
        """Call ``fn(self)`` before every exposition (:meth:`render_prometheus`, :meth:`snapshot`):
        for figures another object counts itself (a Triton session's calls), brought into the
        registry when they are read instead of on every call."""
        with self._lock:
            self._refreshers.append(fn)

    def _refresh(self) -> None:
        with self._lock:
            refreshers = list(self._refreshers)
        for fn in refreshers:
            try:
                fn(self)
            except Exception:  # a scrape must not fail because one source of figures did
                log.exception("metrics refresher %r failed", fn)

    def counter(self, name: str, help: str = "", **labels) -> Counter:
        return self._get(Counter, name, help, labels)

    def gauge(self, name: str, help: str = "", **labels) -> Gauge:
        return self._get(Gauge, name, help, labels)

    def latency(self, name: str, help: str = "", **labels) -> LatencyStats:
        """A histogram in seconds with :data:`DEFAULT_LATENCY_BUCKETS`."""
        return self._get(LatencyStats, name, help, labels)

    def _get(self, cls, name: str, help: str, labels: dict):
        kind = _KINDS[cls]
        key = _label_key(name, labels, kind)
        with self._lock:
            family = self._families.get(name)
            if family is None:
                family = self._families[name] = _Family(name, help, kind)
            elif family.kind != kind:
                raise ValueError(f"metric {name!r} is a {family.kind}, asked for as a {kind}")
            elif help and not family.help:
                family.help = help
            obj = family.series.get(key)
            if obj is None:
                obj = family.series[key] = cls()
            return obj

    def series(self, name: str) -> list[tuple[dict[str, str], Counter | Gauge | LatencyStats]]:
        """Every series of the metric ``name`` as ``(labels, object)``, in creation order;
        empty when nothing asked for ``name`` yet."""
        with self._lock:
            family = self._families.get(name)
            return [] if family is None else [(dict(key), obj) for key, obj in family.series.items()]

    def _families_copy(self) -> list[tuple[_Family, list]]:
        with self._lock:
            return [(f, list(f.series.items())) for f in self._families.values()]

    def render_prometheus(self) -> str:
        """Everything, in the Prometheus text exposition format 0.0.4."""
        self._refresh()
        lines: list[str] = []
        for family, series in self._families_copy():
            if family.help:
                lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            for key, obj in series:
                if family.kind == "histogram":
                    buckets, total, count = obj.histogram()
                    for bound, cumulative in buckets:
                        le = (("le", _format_value(bound)),)
                        lines.append(f"{family.name}_bucket{_format_labels(key + le)} {cumulative}")
                    lines.append(f"{family.name}_sum{_format_labels(key)} {_format_value(total)}")
                    lines.append(f"{family.name}_count{_format_labels(key)} {count}")
                else:
                    lines.append(f"{family.name}{_format_labels(key)} {_format_value(obj.value)}")
        return "\n".join(lines) + "\n" if lines else ""

    def snapshot(self) -> dict:
        """``{"counters": {series: value}, "gauges": {series: value}, "latency": {series:
        summary}}`` where ``series`` is written as Prometheus does,
        ``name{label="value",...}`` (just ``name`` without labels)."""
        self._refresh()
        out: dict[str, dict] = {"counters": {}, "gauges": {}, "latency": {}}
        section = {"counter": "counters", "gauge": "gauges", "histogram": "latency"}
        for family, series in self._families_copy():
            for key, obj in series:
                value = obj.summary() if family.kind == "histogram" else obj.value
                out[section[family.kind]][family.name + _format_labels(key)] = value
        return out


def _label_key(name: str, labels: dict, kind: str) -> tuple[tuple[str, str], ...]:
    if not _METRIC_NAME.match(name):
        raise ValueError(f"invalid metric name {name!r}")
    for label in labels:
        if not _LABEL_NAME.match(label) or label.startswith("__"):
            raise ValueError(f"metric {name}: invalid label name {label!r}")
        if kind == "histogram" and label == "le":
            raise ValueError(f"metric {name}: 'le' is the histogram's own label")
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_labels(key: tuple[tuple[str, str], ...]) -> str:
    if not key:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in key) + "}"


def _format_value(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


class LatencyHistory:
    """Per-interval p50/p95 of every series of one latency histogram over the last ``keep_s``
    seconds: what the dashboard's latency chart draws (``GET /api/latency``).

    Each :meth:`sample` (every ``interval_s`` on the thread of :meth:`start`, or called by hand)
    takes, for every series of ``name``, the observations made since the previous sample
    (:meth:`LatencyStats.recent_since`) and keeps their p50, p95 and count, so a point is that
    interval alone, not a mix with older ones. An interval in which a series saw nothing keeps
    no point for it (a gap in its line, not a zero). Memory is bounded: at most
    ``keep_s / interval_s`` points per series.
    """

    def __init__(self, metrics: "Metrics", name: str = STAGE_LATENCY, *, interval_s: float = 2.0,
                 keep_s: float = 600.0):
        if not (math.isfinite(interval_s) and interval_s > 0 and math.isfinite(keep_s) and keep_s >= interval_s):
            raise ValueError(f"latency history: need 0 < interval_s <= keep_s, got {interval_s!r}, {keep_s!r}")
        self.metrics = metrics
        self.name = name
        self.interval_s = float(interval_s)
        self.keep_s = float(keep_s)
        self._maxlen = int(math.ceil(keep_s / interval_s)) + 1
        self._lock = threading.Lock()
        # labels (sorted tuple) -> [observations seen, deque of (ts, p50_ms, p95_ms, count)]
        self._series: dict[tuple[tuple[str, str], ...], list] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self, ts: float | None = None) -> int:
        """Take one point per series that saw observations since the last sample (``ts``:
        its epoch time, default now); returns how many points were added."""
        ts = time.time() if ts is None else float(ts)
        added = 0
        # A stage recorded per stream only (the batcher's rasterize, classify) gets a
        # stream="all" series here, pooled from its streams, like the stages recorded both ways.
        pooled: dict[str, list[float]] = {}
        has_all: set[str] = set()
        for labels, stats in self.metrics.series(self.name):
            if not isinstance(stats, LatencyStats):
                continue
            key = tuple(sorted(labels.items()))
            entry = self._entry(key)
            count, new = stats.recent_since(entry[0])
            entry[0] = count
            if set(labels) == {"stream", "stage"}:
                if labels["stream"] == "all":
                    has_all.add(labels["stage"])
                else:
                    pooled.setdefault(labels["stage"], []).extend(new)
            added += self._add_point(entry, ts, new)
        for stage, new in pooled.items():
            if stage not in has_all:
                added += self._add_point(self._entry((("stage", stage), ("stream", "all"))), ts, new)
        return added

    def _entry(self, key: tuple[tuple[str, str], ...]) -> list:
        with self._lock:
            entry = self._series.get(key)
            if entry is None:
                # a series first met now: all it saw so far falls in this interval
                entry = self._series[key] = [0, deque(maxlen=self._maxlen)]
            return entry

    def _add_point(self, entry: list, ts: float, new: list[float]) -> int:
        if not new:
            return 0
        p50, p95 = np.percentile(np.asarray(new, dtype=np.float64), (50, 95)) * 1000.0
        with self._lock:
            entry[1].append((ts, float(p50), float(p95), len(new)))
        return 1

    def snapshot(self, *, stream: str | None = None, now: float | None = None) -> dict:
        """``{"metric", "interval_s", "keep_s", "now", "series": [{labels..., "ts": [...],
        "p50_ms": [...], "p95_ms": [...], "count": [...]}]}``: the points of the last
        ``keep_s`` seconds, oldest first, of every series (of ``stream`` only, if given)."""
        now = time.time() if now is None else float(now)
        oldest = now - self.keep_s
        out = []
        with self._lock:
            items = [(key, list(entry[1])) for key, entry in self._series.items()]
        for key, points in items:
            labels = dict(key)
            if stream is not None and labels.get("stream") != stream:
                continue
            points = [p for p in points if p[0] >= oldest]
            out.append({**labels, "ts": [round(p[0], 3) for p in points],
                        "p50_ms": [round(p[1], 3) for p in points], "p95_ms": [round(p[2], 3) for p in points],
                        "count": [p[3] for p in points]})
        return {"metric": self.name, "interval_s": self.interval_s, "keep_s": self.keep_s, "now": round(now, 3),
                "series": out}

    def start(self) -> "LatencyHistory":
        """Sample every ``interval_s`` on a daemon thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="posestream-latency-history", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        self.sample()  # the observations so far count as the first interval
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception:  # a sampling bug must not end the history silently mid-run
                log.exception("latency history: sampling failed")

    def close(self, timeout: float | None = 2.0) -> bool:
        """Stop the sampling thread; True when it ended within ``timeout``."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
