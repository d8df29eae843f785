"""docs/dashboard.png: the dashboard of a real `posestream run` of vtest.avi, in headless Chromium.

    python benchmarks/dashboard_screenshot.py [--watch-s 90] [--out docs/dashboard.png]

Runs vtest.avi (looped, at its own pace) with an event rule on ``walking`` and --http, opens the
dashboard (Debian's /usr/bin/chromium driven by Playwright), lets the run go for ``--watch-s``
seconds so that events and a stretch of the latency chart exist, acknowledges the third event
shown, plays the newest clip, takes a full-page screenshot (saved with 256 colours) and stops
the run (Ctrl-C).
"""
from __future__ import annotations

import argparse
import io
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
VTEST = ROOT / "tests" / ".media" / "vtest.avi"
RULE = '[[action_events]]\nlabel = "walking"\nmin_score = 0.0\nmin_duration_s = 0.0\n'
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(VTEST))
    ap.add_argument("--watch-s", type=float, default=90.0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "rule.toml").write_text(RULE)
        proc = subprocess.Popen([sys.executable, "-m", "posestream", "run", args.video, "--loop", "--config",
                                 str(Path(tmp) / "rule.toml"), "--http", "127.0.0.1:0", "--evidence",
                                 str(Path(tmp) / "ev"), "--pre-s", "2", "--post-s", "2", "--events", "-"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
        try:
            deadline = time.monotonic() + 300
            while not (found := re.search(r"preview: (http://\S+?)/\s", "".join(lines))):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the run did not serve: {''.join(lines)[-2000:]}")
                time.sleep(0.2)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(found.group(1) + "/")
                page.wait_for_timeout(args.watch_s * 1000)
                page.locator("#event-rows button.ack").nth(2).click()
                page.locator("#event-rows button.play").first.click()
                page.wait_for_function("() => document.getElementById('clip').currentTime > 0.5", timeout=30_000)
                page.evaluate("() => { document.getElementById('clip').pause(); "
                              "document.querySelector('.table-wrap').scrollTo(0, 0); }")
                page.wait_for_timeout(5500)  # one more latency poll
                png = page.screenshot(full_page=True)
                browser.close()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    # 256 colours: a third of the size in the repository, the text as sharp
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
        args.out, optimize=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
