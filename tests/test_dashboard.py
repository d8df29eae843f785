"""The operator's dashboard at / of --http (issue 15): its files and the latency history on the
server, and a real browser (Debian's headless Chromium driven by Playwright) on a real
`posestream run` of vtest.avi: live tiles, events appearing without a reload, a clip playing,
an acknowledgement made with the keyboard that sticks across a reload and a restart. Hostile
stream names and labels go through the real server and store into the real browser."""
from __future__ import annotations

import ast
import fnmatch
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import cv2
import pytest

from posestream.realtime.evidence import EventStore
from posestream.realtime.metrics import STAGE_LATENCY, LatencyHistory, Metrics
from posestream.realtime.sinks import DASHBOARD_CSP, PreviewStore, StatusServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VTEST = HERE / ".media" / "vtest.avi"
STATIC = ROOT / "realtime" / "static"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]
# A stream name and a label that would run script if a page put them in as HTML.
NASTY_STREAM = '<img src=x onerror="window.__pwned=1">/../../etc'
NASTY_LABEL = '"><script>window.__pwned=2</script><b>fall</b>'


def get(base: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """A raw GET: http.client sends the path exactly as given (no ../ folding)."""
    host, port = base.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


# ----------------------------------------------------------------------------------------------
# The server side


def test_latency_history_keeps_each_interval_alone_and_only_the_last_minutes():
    metrics = Metrics()
    pose = metrics.latency(STAGE_LATENCY, stream="all", stage="pose")
    read = metrics.latency(STAGE_LATENCY, stream="cam0", stage="read")
    history = LatencyHistory(metrics, interval_s=2.0, keep_s=10.0)
    for _ in range(10):
        pose.observe(0.010)
    read.observe(0.001)
    assert history.sample(ts=100.0) == 3  # all/pose, cam0/read and the pooled all/read
    for v in range(1, 101):
        pose.observe(v / 1000)  # 1..100 ms: p50 50.5, p95 95.05
    assert history.sample(ts=102.0) == 1  # read saw nothing: no point (a gap, not a zero)
    assert history.sample(ts=104.0) == 0
    snap = history.snapshot(now=105.0)
    assert snap["metric"] == STAGE_LATENCY and snap["interval_s"] == 2.0 and snap["keep_s"] == 10.0
    by = {(s["stream"], s["stage"]): s for s in snap["series"]}
    assert by["all", "pose"]["ts"] == [100.0, 102.0] and by["all", "pose"]["count"] == [10, 100]
    assert by["all", "pose"]["p50_ms"] == [10.0, 50.5] and by["all", "pose"]["p95_ms"] == [10.0, 95.05]
    assert by["cam0", "read"]["p50_ms"] == [1.0]
    # read is recorded for cam0 alone: its stream="all" series is pooled from the streams
    assert by["all", "read"]["p50_ms"] == [1.0] and by["all", "read"]["count"] == [1]
    assert [s["stage"] for s in history.snapshot(stream="cam0", now=105.0)["series"]] == ["read"]
    # older than keep_s is not shown, and at most keep_s / interval_s + 1 points are kept
    assert history.snapshot(now=111.0)["series"][0]["ts"] == [102.0]
    for i in range(50):
        pose.observe(0.001)
        history.sample(ts=200.0 + i)
    assert len(history._series[(("stage", "pose"), ("stream", "all"))][1]) == 6
    json.dumps(history.snapshot(), allow_nan=False)
    with pytest.raises(ValueError, match="interval_s"):
        LatencyHistory(metrics, interval_s=0)


def test_the_reservoir_gives_what_came_since_a_count():
    metrics = Metrics()
    stats = metrics.latency(STAGE_LATENCY, stream="a", stage="pose")
    for v in (1, 2, 3):
        stats.observe(v)
    assert stats.recent_since(0) == (3, [1.0, 2.0, 3.0])
    assert stats.recent_since(2) == (3, [3.0])
    assert stats.recent_since(3) == (3, [])
    assert [labels for labels, _ in metrics.series(STAGE_LATENCY)] == [{"stream": "a", "stage": "pose"}]
    assert metrics.series("posestream_nothing") == []


@pytest.fixture
def plain_server():
    metrics = Metrics()
    metrics.latency(STAGE_LATENCY, stream="all", stage="pose").observe(0.02)
    server = StatusServer("127.0.0.1", 0, status_fn=lambda: {"streams": []}, metrics=metrics,
                          latency_interval_s=0.2).start()
    yield server
    server.close()


def test_dashboard_files_are_served_with_their_types_and_nothing_else(plain_server):
    base = plain_server.url
    code, headers, page = get(base, "/")
    assert code == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"] == DASHBOARD_CSP and "script-src 'self'" in DASHBOARD_CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert b'<script src="/static/dashboard.js" defer>' in page and b"__TOKEN_QUERY__" not in page
    assert b"<script>" not in page and b"style=" not in page  # nothing inline: the CSP would refuse it
    for name, ctype in (("dashboard.js", "text/javascript; charset=utf-8"), ("dashboard.css", "text/css; charset=utf-8")):
        code, headers, body = get(base, f"/static/{name}")
        assert code == 200 and headers["content-type"] == ctype and headers["x-content-type-options"] == "nosniff"
        assert body == (STATIC / name).read_bytes()
    # no data is ever put into the page as HTML: the script sets text, never innerHTML
    script = (STATIC / "dashboard.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", script)
    for path in ("/static/../../etc/passwd", "/static/..%2f..%2fetc%2fpasswd", "/static/%2e%2e/sinks.py",
                 "/static/%2E%2E%2Fsinks.py", "/static/", "/static", "/static//etc/passwd", "/static/dashboard.js%00",
                 "/static/dashboard.js/..", "/static/./dashboard.js", "/static/DASHBOARD.JS", "/static/index.html",
                 "/static/..\\..\\sinks.py", "/static/%5c..%5csinks.py", "/static/" + "a" * 5000):
        code, _, body = get(base, path)
        assert code == 404, path
        assert b"root:" not in body and b"import" not in body, path
    code, headers, body = get(base, "/api/latency")
    assert code == 200 and headers["content-type"].startswith("application/json")
    assert {(s["stream"], s["stage"]) for s in json.loads(body)["series"]} == {("all", "pose")}
    assert json.loads(get(base, "/api/latency?stream=cam9")[2])["series"] == []


def test_the_token_rule_covers_the_dashboard_and_its_links_carry_the_token():
    token = 'se"cr<e>t&x'
    server = StatusServer("127.0.0.1", 0, token=token, status_fn=lambda: {"streams": []}, metrics=Metrics()).start()
    q = urllib.parse.quote(token, safe="")
    try:
        for path in ("/", "/index.html", "/static/dashboard.js", "/static/dashboard.css", "/api/latency", "/previews"):
            assert get(server.url, path)[0] == 401, path
            assert get(server.url, path, {"Authorization": "Bearer nope"})[0] == 401, path
            assert get(server.url, f"{path}?token={q}")[0] == 200, path
            assert get(server.url, path, {"Authorization": f"Bearer {token}"})[0] == 200, path
        page = get(server.url, f"/?token={q}")[2].decode()
        # the script and the style sheet are fetched with the token, percent-encoded in the URL
        assert f'src="/static/dashboard.js?token={q}"' in page and f'href="/static/dashboard.css?token={q}"' in page
        assert token not in page
    finally:
        server.close()


def test_package_data_ships_every_dashboard_file():
    tree = ast.parse((ROOT / "setup.py").read_text())
    data = next(ast.literal_eval(k.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
                for k in node.keywords if k.arg == "package_data")
    patterns = data["posestream.realtime"]
    files = sorted(p.name for p in STATIC.iterdir())
    assert {"index.html", "dashboard.js", "dashboard.css"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(f"static/{name}", pat) for pat in patterns), name
    assert "recursive-include realtime/static *.html *.js *.css" in (ROOT / "MANIFEST.in").read_text()


# ----------------------------------------------------------------------------------------------
# A real browser


def require_browser():
    why = None
    if CHROMIUM is None:
        why = "no chromium on this machine (sh tests/setup_services.sh, or apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "playwright is not installed (pip install -e '.[test]')"
    if why is not None:
        if os.environ.get("POSESTREAM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"POSESTREAM_REQUIRE_SERVICES=1 but {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser, url: str):
    """A page on ``url`` that records script errors, dialogs and CSP violations."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.seen = {"errors": [], "dialogs": []}
    page.on("pageerror", lambda e: page.seen["errors"].append(str(e)))
    page.on("dialog", lambda d: (page.seen["dialogs"].append(d.message), d.dismiss()))
    page.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation', "
                         "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
    page.goto(url)
    return page


def vtest_frames(n: int) -> list:
    cap = cv2.VideoCapture(str(VTEST))
    frames = [cap.read()[1] for _ in range(n)]
    cap.release()
    return frames


def test_names_and_labels_with_markup_are_shown_as_text(browser, tmp_path):
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing: run tests/get_media.sh first")
    from test_evidence import event, record_events

    folder = tmp_path / "ev"
    record_events(folder, [event(NASTY_STREAM, 8, label=NASTY_LABEL, track="<i>7</i>"), event("cam", 12)])
    store = EventStore(folder)
    previews = PreviewStore(max_fps=50)
    frames = vtest_frames(2)
    previews.update(NASTY_STREAM, frames[0])
    previews.update("cam", frames[1])
    status = {"streams": [{"stream": NASTY_STREAM, "health": "ok", "fps": 9.0, "tracks": 2, "frames_processed": 3,
                           "last_error": "<b>boom</b>", "source": {"health": "live", "frames_dropped": 0}},
                          {"stream": "cam", "health": "ok", "fps": 9.0, "tracks": 1, "source": {"health": "live"}}],
              "health": "ok", "uptime_s": 3.0, "events": 2}
    server = StatusServer("127.0.0.1", 0, status_fn=lambda: status, metrics=Metrics(), preview_fn=previews.get,
                          events=store).start()
    try:
        page = open_page(browser, server.url)
        page.wait_for_function("() => document.querySelectorAll('#event-rows tr').length === 2 && "
                               "document.querySelectorAll('.tile').length === 2", timeout=20_000)
        tiles = page.locator(".tile h3").all_text_contents()
        assert tiles == [NASTY_STREAM, "cam"]
        # the hostile stream's preview loads (scaled to the store's 640 px): its name went into the URL
        # percent-encoded
        page.wait_for_function("() => [...document.querySelectorAll('.tile img')].every(i => i.naturalWidth === 640)",
                               timeout=20_000)
        row = page.locator("#event-rows tr").nth(1)  # the older event, id 1
        cells = row.locator("td").all_text_contents()
        assert cells[1:4] == [NASTY_STREAM, "<i>7</i>", NASTY_LABEL]
        assert page.locator(".tile dd").nth(6).text_content() == "<b>boom</b>"
        assert NASTY_STREAM in page.locator("#latency-stream option").all_text_contents()
        snapshot_alt = row.locator("img").get_attribute("alt")
        assert NASTY_STREAM in snapshot_alt and NASTY_LABEL in snapshot_alt
        injected = page.evaluate("""() => ({
            pwned: window.__pwned ?? null, csp: window.__csp,
            scripts: document.scripts.length, bold: document.querySelectorAll('main b, main i').length,
            stray: document.querySelectorAll('img[src="x"], img:not([src])').length})""")
        assert injected == {"pwned": None, "csp": [], "scripts": 1, "bold": 0, "stray": 0}
        assert page.seen == {"errors": [], "dialogs": []}
        page.close()
    finally:
        server.close()
        store.close()


def test_many_streams_and_many_events(browser, tmp_path):
    """Five streams: the tiles refresh still JPEGs (five MJPEG streams would hold five of the
    browser's six connections to the server) and the polls still get through. Sixty events: the
    newest 50, then the older ones on request; a new event appears on top, announced, and an
    event deleted from the store (retention) leaves the list."""
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing: run tests/get_media.sh first")
    store = EventStore(tmp_path / "ev")
    db = store.connect()
    try:
        for i in range(60):
            e = {"kind": "action", "stream": f"cam{i % 5}", "track_id": i, "label": "walking", "score": 0.5,
                 "start_ts": time.time(), "end_ts": time.time(), "frame_index": i}
            store.set_evidence(db, store.insert(db, e), "no_frames")
        db.commit()
    finally:
        db.close()
    previews = PreviewStore(max_fps=50)
    frames = vtest_frames(5)
    names = [f"cam{i}" for i in range(5)]
    for name, image in zip(names, frames):
        previews.update(name, image)
    status = {"streams": [{"stream": n, "health": "ok", "fps": 5.0, "source": {"health": "live"}} for n in names],
              "health": "ok", "uptime_s": 1.0, "events": 0}
    server = StatusServer("127.0.0.1", 0, status_fn=lambda: status, metrics=Metrics(), preview_fn=previews.get,
                          events=store).start()
    try:
        page = open_page(browser, server.url)
        page.wait_for_function("() => document.querySelectorAll('#event-rows tr').length === 50", timeout=20_000)
        page.wait_for_function("() => [...document.querySelectorAll('.tile img')].length === 5 && "
                               "[...document.querySelectorAll('.tile img')].every(i => i.naturalWidth > 0)",
                               timeout=20_000)
        srcs = page.locator(".tile img").evaluate_all("imgs => imgs.map(i => new URL(i.src).pathname)")
        assert srcs == [f"/preview/{n}.jpg" for n in names]
        assert page.locator("#event-rows tr").first.get_attribute("data-event-id") == "60"
        assert page.locator("#event-rows td").nth(5).text_content() == "none (no_frames)"
        older = page.locator("#older")
        assert older.is_visible()
        older.click()
        page.wait_for_function("() => document.querySelectorAll('#event-rows tr').length === 60", timeout=10_000)
        assert older.is_hidden()
        ids = page.locator("#event-rows tr").evaluate_all("rows => rows.map(r => +r.dataset.eventId)")
        assert ids == list(range(60, 0, -1))
        db = store.connect()
        try:
            new_id = store.insert(db, {"kind": "action", "stream": "cam2", "track_id": 99, "label": "walking",
                                       "score": 0.9, "start_ts": time.time(), "frame_index": 61})
            db.execute("DELETE FROM events WHERE id = 55")
            db.commit()
        finally:
            db.close()
        page.wait_for_function(f"() => document.querySelector('#event-rows tr').dataset.eventId === '{new_id}'",
                               timeout=10_000)
        page.wait_for_function("() => !document.querySelector('#event-rows tr[data-event-id=\"55\"]')", timeout=10_000)
        assert page.locator("#event-news").text_content() == "New event: walking on cam2, track 99"
        assert page.seen == {"errors": [], "dialogs": []}
        page.close()
    finally:
        server.close()
        store.close()


RULE = """
[[action_events]]
label = "walking"
min_score = 0.0
min_duration_s = 0.0
"""


class Run:
    """A real `posestream run` of vtest.avi (looped, at its own pace) with --http on a free port."""

    def __init__(self, tmp_path: Path, evidence: Path):
        config = tmp_path / "rule.toml"
        config.write_text(RULE)
        cmd = [sys.executable, "-m", "posestream", "run", str(VTEST), "--loop", "--config", str(config),
               "--http", "127.0.0.1:0", "--evidence", str(evidence), "--pre-s", "1", "--post-s", "1",
               "--events", "-"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self._wait_for_url(120)

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in list(self.lines):
                found = re.search(r"preview: (http://127\.0\.0\.1:\d+)/", line)
                if found:
                    return found.group(1) + "/"
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the run did not serve: {self.log()}")

    def log(self) -> str:
        return "".join(self.lines)[-3000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        return self.proc.returncode


def api(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_the_dashboard_of_a_real_run_in_a_real_browser(browser, tmp_path):
    """Tiles move, events arrive without a reload, a clip plays, an ack made with the keyboard
    stays after a reload and after a restart of the run on the same evidence folder. A
    screenshot of the page goes to tmp_path (and to $POSESTREAM_DASHBOARD_PNG when set)."""
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing: run tests/get_media.sh first")
    evidence = tmp_path / "ev"
    run = Run(tmp_path, evidence)
    try:
        page = open_page(browser, run.url)
        page.evaluate("window.__sameDocument = true")
        # the live tile: the stream's annotated frames, changing
        page.wait_for_function("() => document.querySelector('.tile img') && "
                               "document.querySelector('.tile img').naturalWidth > 0", timeout=60_000)
        assert page.locator(".tile h3").all_text_contents() == ["vtest"]
        tile = page.locator(".tile img")
        first = tile.screenshot()
        deadline = time.monotonic() + 15  # a few frames a second here; a loaded machine may pause
        while tile.screenshot() == first:
            assert time.monotonic() < deadline, "the preview did not change in 15 s"
            page.wait_for_timeout(300)
        page.wait_for_function("() => parseFloat(document.querySelectorAll('.tile dd')[2].textContent) > 0", timeout=30_000)
        assert page.locator(".tile dd").first.text_content() == "ok"
        # events appear in the same document, announced to screen readers
        page.wait_for_selector("#event-rows tr", timeout=90_000)
        assert page.evaluate("window.__sameDocument") is True
        page.wait_for_function("() => document.getElementById('event-news').textContent.includes('vent')", timeout=10_000)
        # a clip plays once its evidence is written
        play = page.locator("#event-rows button.play").last
        play.wait_for(timeout=60_000)
        play.click()
        page.wait_for_function("() => (() => { const v = document.getElementById('clip'); return v.readyState >= 2 && "
                               "v.duration > 0 && isFinite(v.duration) && v.currentTime > 0; })()", timeout=30_000)
        video = page.evaluate("(() => { const v = document.getElementById('clip'); return {error: v.error, "
                              "w: v.videoWidth, h: v.videoHeight, duration: v.duration}; })()")
        assert video["error"] is None and video["w"] > 0 and video["h"] > 0 and video["duration"] > 0.5
        # reach an Acknowledge button with Tab alone, press Enter
        page.evaluate("document.activeElement && document.activeElement.blur()")
        for _ in range(120):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.classList.contains('ack') && "
                             "document.activeElement.getAttribute('aria-disabled') !== 'true'"):
                break
        else:
            raise AssertionError("Tab never reached an Acknowledge button")
        acked_id = int(page.evaluate("document.activeElement.closest('tr').dataset.eventId"))
        page.keyboard.press("Enter")
        row = page.locator(f'#event-rows tr[data-event-id="{acked_id}"]')
        page.wait_for_function(f"() => document.querySelector('#event-rows tr[data-event-id=\"{acked_id}\"]')"
                               ".classList.contains('acked')", timeout=10_000)
        assert row.locator("button.ack").text_content() == "Acknowledged"
        assert page.evaluate("document.activeElement.closest('tr').dataset.eventId") == str(acked_id)  # focus kept
        assert api(f"{run.url}api/events/{acked_id}")["acked"] is True
        page.wait_for_function("() => document.querySelectorAll('#latency-rows tr[data-stage]').length >= 4", timeout=30_000)
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("POSESTREAM_DASHBOARD_PNG"):
            shutil.copyfile(shot, os.environ["POSESTREAM_DASHBOARD_PNG"])
        # the ack is the store's: a reload shows it
        page.reload()
        page.wait_for_selector(f'#event-rows tr[data-event-id="{acked_id}"].acked', timeout=20_000)
        assert page.seen == {"errors": [], "dialogs": []} and page.evaluate("window.__csp") == []
    finally:
        code = run.stop()
    assert code == 130, run.log()
    # and so does a new run on the same evidence folder
    again = Run(tmp_path, evidence)
    try:
        page.goto(again.url)
        page.wait_for_selector(f'#event-rows tr[data-event-id="{acked_id}"].acked', timeout=30_000)
        assert page.locator(f'#event-rows tr[data-event-id="{acked_id}"] button.ack').text_content() == "Acknowledged"
        page.close()
    finally:
        again.stop()
