"""LatencyStats and the Metrics registry: percentiles, histograms, Prometheus text, threads."""
from __future__ import annotations

import json
import math
import re
import threading

import numpy as np
import pytest

from posestream.realtime.metrics import DEFAULT_LATENCY_BUCKETS, LatencyStats, Metrics

# --------------------------------------------------------------------------------------------
# A small parser of the Prometheus text format 0.0.4, strict enough to catch malformed output
# --------------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], value)


def _parse_labels(text: str) -> dict[str, str]:
    labels, pos = {}, 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        assert m, f"bad label set {text!r} at {pos}"
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return labels


def parse_prometheus(text: str) -> tuple[dict[str, str], dict[str, str], list[tuple[str, dict, float]]]:
    """(help by name, type by name, samples). Asserts HELP / TYPE appear once per name and
    before that name's samples."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples = []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert name not in helps, f"HELP twice for {name}"
            helps[name] = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name not in types, f"TYPE twice for {name}"
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            types[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"bad sample line {line!r}"
            name, labels, value = m.group(1), _parse_labels(m.group(3) or ""), float(m.group(4))
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            assert family in types, f"sample {name} before its TYPE"
            samples.append((name, labels, value))
    return helps, types, samples


def check_histograms(types: dict[str, str], samples) -> dict[tuple, dict]:
    """Per histogram series: buckets cumulative, le increasing, +Inf == _count. Returns
    {(name, labels without le): {"buckets": [(le, n)], "sum": s, "count": c}}."""
    series: dict[tuple, dict] = {}
    for name, labels, value in samples:
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and types.get(base) == "histogram":
                key = (base, tuple(sorted((k, v) for k, v in labels.items() if k != "le")))
                entry = series.setdefault(key, {"buckets": []})
                if suffix == "_bucket":
                    entry["buckets"].append((float(labels["le"]), value))
                else:
                    entry[suffix[1:]] = value
    for key, entry in series.items():
        les = [le for le, _ in entry["buckets"]]
        counts = [n for _, n in entry["buckets"]]
        assert les == sorted(les) and les[-1] == math.inf, key
        assert all(a <= b for a, b in zip(counts, counts[1:])), f"{key}: buckets not cumulative: {counts}"
        assert counts[-1] == entry["count"], key
    return series


# --------------------------------------------------------------------------------------------
# LatencyStats
# --------------------------------------------------------------------------------------------


def test_percentiles_match_numpy():
    rng = np.random.default_rng(0)
    data = rng.lognormal(mean=-4.0, sigma=1.0, size=1000)  # ~18 ms median, long tail
    stats = LatencyStats()
    for x in data:
        stats.observe(x)
    got = stats.percentiles((50, 90, 95, 99))
    want = np.percentile(data, [50, 90, 95, 99]) * 1000
    np.testing.assert_allclose([got[p] for p in (50, 90, 95, 99)], want, rtol=1e-12)

    s = stats.summary()
    assert s["count"] == 1000
    assert s["mean_ms"] == pytest.approx(data.mean() * 1000)
    assert s["max_ms"] == pytest.approx(data.max() * 1000)
    assert s["p95_ms"] == pytest.approx(want[2])
    json.dumps(s)


def test_reservoir_keeps_the_most_recent_but_totals_keep_all():
    stats = LatencyStats(reservoir=100)
    data = np.concatenate([np.full(500, 1.0), np.linspace(0.001, 0.1, 100)])  # a slow start, then fast
    for x in data:
        stats.observe(x)
    assert stats.percentiles((50,))[50] == pytest.approx(np.percentile(data[-100:], 50) * 1000)
    s = stats.summary()
    assert s["count"] == 600
    assert s["max_ms"] == pytest.approx(1000.0)
    assert s["mean_ms"] == pytest.approx(data.mean() * 1000)


def test_empty_stats_and_rejected_observations():
    stats = LatencyStats()
    assert stats.summary() == {"count": 0, "mean_ms": None, "p50_ms": None, "p95_ms": None, "p99_ms": None,
                               "max_ms": None}
    for bad in (float("nan"), float("inf"), -0.001):
        stats.observe(bad)
    assert stats.count == 0 and stats.rejected == 3
    with pytest.raises(ValueError):
        stats.percentiles((101,))


def test_buckets_count_le_inclusive():
    stats = LatencyStats(buckets=(0.01, 0.1, 1.0))
    for x in (0.0, 0.01, 0.0100001, 0.1, 0.5, 1.0, 7.0):
        stats.observe(x)
    buckets, total, count = stats.histogram()
    assert buckets == [(0.01, 2), (0.1, 4), (1.0, 6), (math.inf, 7)]
    assert count == 7 and total == pytest.approx(8.6200001)
    assert DEFAULT_LATENCY_BUCKETS[0] == 0.001 and DEFAULT_LATENCY_BUCKETS[-1] == 10.0
    with pytest.raises(ValueError):
        LatencyStats(buckets=(0.1, 0.01))


def test_concurrent_observe_and_inc():
    metrics = Metrics()
    stats = metrics.latency("posestream_stage_latency_seconds", "latency", stream="cam0", stage="pose")
    frames = metrics.counter("posestream_frames_total", "frames", stream="cam0")
    n_threads, per_thread = 8, 5000
    start = threading.Barrier(n_threads + 1)

    def work(seed: int) -> None:
        values = np.random.default_rng(seed).uniform(0, 0.2, per_thread)
        start.wait()
        for v in values:
            stats.observe(v)
            frames.inc()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    # read while they write: every read must be self-consistent
    start.wait()
    while any(t.is_alive() for t in threads):
        _, types, samples = parse_prometheus(metrics.render_prometheus())
        check_histograms(types, samples)
    for t in threads:
        t.join()
    expected_sum = sum(np.random.default_rng(i).uniform(0, 0.2, per_thread).sum() for i in range(n_threads))
    buckets, total, count = stats.histogram()
    assert count == n_threads * per_thread == buckets[-1][1]
    assert total == pytest.approx(expected_sum)
    assert frames.value == n_threads * per_thread


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


def test_same_name_and_labels_give_the_same_object():
    m = Metrics()
    a = m.counter("posestream_events_total", "events", stream="cam0", label="fall")
    assert m.counter("posestream_events_total", "events", label="fall", stream="cam0") is a
    assert m.counter("posestream_events_total", "events", stream="cam1", label="fall") is not a
    lat = m.latency("posestream_stage_latency_seconds", "latency", stream="cam0", stage="read")
    assert m.latency("posestream_stage_latency_seconds", stream="cam0", stage="read") is lat
    with pytest.raises(ValueError, match="counter"):
        m.gauge("posestream_events_total", stream="cam0", label="fall")
    with pytest.raises(ValueError):
        m.counter("bad name")
    with pytest.raises(ValueError):
        m.latency("posestream_x_seconds", le="1")
    with pytest.raises(ValueError):
        a.inc(-1)


def test_prometheus_text_parses_and_escapes_labels():
    m = Metrics()
    stage_help = "per-stage latency, capture to done\nin seconds \\ per frame"
    for stage, values in (("read", [0.0004, 0.003]), ("pose", [0.02, 0.03, 0.5, 12.0])):
        lat = m.latency("posestream_stage_latency_seconds", stage_help, stream="cam0", stage=stage)
        for v in values:
            lat.observe(v)
    m.latency("posestream_stage_latency_seconds", stage_help, stream="cam1", stage="read")  # empty
    m.counter("posestream_frames_total", "frames read", stream="cam0").inc(41)
    m.counter("posestream_frames_total", "frames read", stream="cam0").inc()
    weird = 'lobby "east"\\door\nline2'
    m.counter("posestream_events_total", "events", stream=weird, label="fall").inc(2)
    m.counter("posestream_sink_dropped_total", "sink drops", sink="webhook").inc(0)
    m.gauge("posestream_queue_depth", "queued windows").set(3.5)

    text = m.render_prometheus()
    helps, types, samples = parse_prometheus(text)
    assert types == {"posestream_stage_latency_seconds": "histogram", "posestream_frames_total": "counter",
                     "posestream_events_total": "counter", "posestream_sink_dropped_total": "counter",
                     "posestream_queue_depth": "gauge"}
    assert _unescape(helps["posestream_stage_latency_seconds"]) == stage_help
    series = check_histograms(types, samples)
    pose = series[("posestream_stage_latency_seconds", (("stage", "pose"), ("stream", "cam0")))]
    assert pose["count"] == 4 and pose["sum"] == pytest.approx(12.55)
    assert dict(pose["buckets"])[0.025] == 1 and dict(pose["buckets"])[10.0] == 3
    empty = series[("posestream_stage_latency_seconds", (("stage", "read"), ("stream", "cam1")))]
    assert empty["count"] == 0 and len(empty["buckets"]) == len(DEFAULT_LATENCY_BUCKETS) + 1

    values = {(name, tuple(sorted(labels.items()))): v for name, labels, v in samples}
    assert values[("posestream_frames_total", (("stream", "cam0"),))] == 42
    assert values[("posestream_events_total", (("label", "fall"), ("stream", weird)))] == 2
    assert values[("posestream_queue_depth", ())] == 3.5
    assert Metrics().render_prometheus() == ""


def test_snapshot_is_json():
    m = Metrics()
    m.counter("posestream_reconnects_total", "reconnects", stream="rtsp1").inc(3)
    m.gauge("posestream_fps", "fps", stream="rtsp1").set(29.5)
    lat = m.latency("posestream_stage_latency_seconds", "latency", stream="rtsp1", stage="detect")
    lat.observe(0.010)
    lat.observe(0.030)
    snap = json.loads(json.dumps(m.snapshot()))
    assert snap["counters"] == {'posestream_reconnects_total{stream="rtsp1"}': 3}
    assert snap["gauges"] == {'posestream_fps{stream="rtsp1"}': 29.5}
    summary = snap["latency"]['posestream_stage_latency_seconds{stage="detect",stream="rtsp1"}']
    assert summary["count"] == 2 and summary["mean_ms"] == pytest.approx(20.0)
    assert summary["p50_ms"] == pytest.approx(20.0) and summary["max_ms"] == pytest.approx(30.0)
