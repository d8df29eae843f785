"""What the dashboard costs the run: CPU seconds of the `posestream run` process per processed
frame, without a browser page open and with the dashboard open in headless Chromium.

    python benchmarks/dashboard_cost.py [--frames 300] [--rounds 3] [--pace fast] [--json out.json]

Each round runs the same `posestream run VIDEO --max-frames N --http 127.0.0.1:0 --evidence
TMP` (with an event rule on ``walking``, so events happen and the page has them to list) twice,
one after the other: once with nothing watching, once with the dashboard open (Debian's
``/usr/bin/chromium`` driven by Playwright: the MJPEG tile, the 1.5 s polls of /status and
/api/events, the 5 s poll of /api/latency). The order alternates between rounds so that a
drift in the machine's load does not land on one side only. Measured per run: the process's
user + system CPU from the moment its server answers (read from /proc) to its exit (wait4),
and its processed frames (from its summary line); the model loading before the server is up
is left out, as it is the same either way. Also reported: Chromium's own CPU over the same
time (its processes on this machine), which the run does not pay but the box does.

Needs a Linux /proc, `pip install playwright` and Debian's chromium (tests/setup_services.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from posestream.realtime.bench import machine_info

ROOT = Path(__file__).resolve().parent.parent
VTEST = ROOT / "tests" / ".media" / "vtest.avi"
RULE = '[[action_events]]\nlabel = "walking"\nmin_score = 0.0\nmin_duration_s = 0.0\n'
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def chromium_cpu_s() -> float:
    """CPU seconds so far of the live chromium processes started under this one (Playwright's
    driver starts the browser): another chromium on the machine is not counted."""
    procs = {}  # pid -> (parent pid, command, cpu s)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        fields = text.rsplit(")", 1)[1].split()
        procs[int(stat.parent.name)] = (int(fields[1]), text[text.index("(") + 1:text.rindex(")")],
                                        (int(fields[11]) + int(fields[12])) / TICK)
    total = 0.0
    for pid, (_, name, cpu) in procs.items():
        if not name.startswith("chrom"):
            continue
        ancestor, hops = procs[pid][0], 0
        while ancestor in procs and ancestor != os.getpid() and hops < 64:
            ancestor, hops = procs[ancestor][0], hops + 1
        if ancestor == os.getpid():
            total += cpu
    return total


def one_run(args, browser, watch: bool, work: Path) -> dict:
    evidence = Path(tempfile.mkdtemp(prefix="ev", dir=work))
    cmd = [sys.executable, "-m", "posestream", "run", args.video, "--config", str(work / "rule.toml"),
           "--max-frames", str(args.frames), "--pace", args.pace, "--http", "127.0.0.1:0",
           "--evidence", str(evidence), "--events", os.devnull]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    url_seen = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "preview: http://" in line:
                url_seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    page = None
    try:
        if not url_seen.wait(300):
            raise SystemExit(f"the run did not serve within 300 s: {''.join(lines)[-2000:]}")
        cpu0, t0, chrome0 = proc_cpu_s(proc.pid), time.monotonic(), chromium_cpu_s()
        url = re.search(r"preview: (http://\S+?)/\s", "".join(lines)).group(1) + "/"
        if watch:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - t0
        chrome = chromium_cpu_s() - chrome0
    finally:
        if page is not None:
            page.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        reader.join(10)
        shutil.rmtree(evidence, ignore_errors=True)
    text = "".join(lines)
    if proc.returncode != 0:
        raise SystemExit(f"the run failed ({proc.returncode}): {text[-2000:]}")
    frames = sum(int(n) for n in re.findall(r": (\d+) frames processed", text))
    cpu = usage.ru_utime + usage.ru_stime - cpu0
    return {"dashboard": watch, "frames": frames, "cpu_s": round(cpu, 3), "wall_s": round(wall, 2),
            "cpu_s_per_frame": cpu / frames if frames else None, "chromium_cpu_s": round(chrome, 3),
            "events": int(re.search(r"(\d+) event\(s\)", text).group(1))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(VTEST))
    ap.add_argument("--frames", type=int, default=300, help="frames per run (--max-frames)")
    ap.add_argument("--rounds", type=int, default=3, help="pairs of runs (without, with the dashboard)")
    ap.add_argument("--pace", choices=["fast", "realtime"], default="fast")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--json", help="also write the report here")
    args = ap.parse_args()
    if not Path(args.video).is_file():
        raise SystemExit(f"{args.video}: no such file (sh tests/get_media.sh)")
    from playwright.sync_api import sync_playwright

    runs = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        work = Path(tmp)
        (work / "rule.toml").write_text(RULE)
        browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            for r in range(args.rounds):
                for watch in ((False, True) if r % 2 == 0 else (True, False)):
                    run = one_run(args, browser, watch, work)
                    run["round"] = r
                    runs.append(run)
                    print(f"round {r} {'dashboard open' if watch else 'no page     '}: {run['frames']} frames, "
                          f"{run['cpu_s']:.1f} CPU s in {run['wall_s']:.1f} s, "
                          f"{1000 * run['cpu_s_per_frame']:.1f} CPU ms/frame, chromium {run['chromium_cpu_s']:.1f} "
                          f"CPU s, {run['events']} events", flush=True)
        finally:
            browser.close()
    without = [r["cpu_s_per_frame"] for r in runs if not r["dashboard"]]
    with_page = [r["cpu_s_per_frame"] for r in runs if r["dashboard"]]
    report = {
        "cpu": machine_info()["cpu"], "cores": os.cpu_count(), "pace": args.pace, "frames_per_run": args.frames,
        "rounds": args.rounds, "runs": runs,
        "cpu_s_per_frame_without": statistics.median(without),
        "cpu_s_per_frame_with_dashboard": statistics.median(with_page),
        "ratio": statistics.median(with_page) / statistics.median(without),
        "chromium_cpu_s_per_frame": statistics.median(
            r["chromium_cpu_s"] / r["frames"] for r in runs if r["dashboard"] and r["frames"]),
    }
    print(f"\n{report['cpu']}, {report['cores']} cores, pace {args.pace}, {args.frames} frames x {args.rounds} rounds")
    print(f"run process, CPU s per processed frame (median): without a page {report['cpu_s_per_frame_without']:.4f}, "
          f"with the dashboard open {report['cpu_s_per_frame_with_dashboard']:.4f}, ratio {report['ratio']:.3f}")
    print(f"chromium itself: {report['chromium_cpu_s_per_frame']:.4f} CPU s per run frame (not the run's)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
