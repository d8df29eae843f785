"""What the runtime says about real footage where everyone walks or stands: the label mix of
``vtest.avi`` (pedestrians seen from above, 10 fps) at the video's own pace and as fast as the
pipeline goes, and the fall events (there should be none).

    python benchmarks/vtest_labels.py                       # both paces, the shipped model
    python benchmarks/vtest_labels.py --hours 1 --pace fast  # looped: false alarms per hour of video

Reported per pace: the top-1 label of every classified window (what ``posestream demo``'s
summary counts), the labels the tracks displayed after each window (smoothed, calibrated;
"none" = not sure), the share of walking/standing among them, the processed frame rate and the
fall events. ``--hours`` loops the video for that much video time and reports fall and fallen
events per hour.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

UPRIGHT_CALM = ("walking", "standing")


def mix(counts: dict[str, int]) -> dict:
    total = sum(counts.values())
    shown = {k: v for k, v in counts.items() if k != "none"}
    n_shown = sum(shown.values())
    return {"total": total, "counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
            "walking_standing": (sum(shown.get(k, 0) for k in UPRIGHT_CALM) / n_shown) if n_shown else None,
            "none": counts.get("none", 0) / total if total else None}


def run(video: str, pace: str, model: str | None, max_frames: int | None, loop: bool,
        detect_every: int | None = None) -> dict:
    from posestream.realtime.app import run_realtime
    from posestream.realtime.config import RunConfig
    from posestream.realtime.sources import parse_source

    extra = {} if detect_every is None else {"detect_every": detect_every}
    config = RunConfig(pace=pace, model=model, events_out=None, loop=loop, max_frames=max_frames, **extra).validate()
    t0 = time.monotonic()
    status = run_realtime([parse_source(video)], config, quiet=True)
    wall = time.monotonic() - t0
    top1: dict[str, int] = {}
    for tracks in status["labels"].values():
        for counts in tracks.values():
            for label, n in counts.items():
                top1[label] = top1.get(label, 0) + n
    shown: dict[str, int] = {}
    for counts in status["shown_labels"].values():
        for label, n in counts.items():
            shown[label] = shown.get(label, 0) + n
    stream = status["streams"][0]
    frames_read = stream["source"].get("frames_read", 0)
    return {"pace": pace, "wall_s": round(wall, 1), "frames_processed": stream["frames_processed"],
            "frames_read": frames_read, "processed_fps": round(stream["frames_processed"] / wall, 2),
            "windows_top1": mix(top1), "shown": mix(shown),
            "fall_events": sum(e.get("kind") == "fall" for e in status["events"]),
            "fallen_events": sum(e.get("kind") == "fallen" for e in status["events"]),
            "events": status["events"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="tests/.media/vtest.avi")
    parser.add_argument("--model", help="action model (default: the shipped one)")
    parser.add_argument("--pace", nargs="+", default=["realtime", "fast"], choices=["realtime", "fast"])
    parser.add_argument("--hours", type=float, help="loop the video for this much video time (10 fps)")
    parser.add_argument("--detect-every", type=int, help="the person detector's period in processed frames "
                        "(default: the run config's; 1: every frame, no landmark tracking in between)")
    parser.add_argument("--out", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if not Path(args.video).is_file():
        print(f"{args.video}: no such file (sh tests/get_media.sh)", file=sys.stderr)
        return 2
    results = []
    for pace in args.pace:
        max_frames = int(args.hours * 3600 * 10) if args.hours else None
        r = run(args.video, pace, args.model, max_frames, loop=bool(args.hours), detect_every=args.detect_every)
        results.append(r)
        hours = r["frames_read"] / 10 / 3600
        ws = r["shown"]["walking_standing"]
        print(f"{pace:8s} {r['frames_processed']} of {r['frames_read']} frames processed ({r['processed_fps']} fps), "
              f"{r['windows_top1']['total']} windows")
        print(f"  window top-1: {r['windows_top1']['counts']}  walking/standing "
              f"{r['windows_top1']['walking_standing']:.1%}")
        print(f"  shown labels: {r['shown']['counts']}  walking/standing "
              f"{'-' if ws is None else f'{ws:.1%}'} of those shown, not sure {r['shown']['none']:.1%}")
        print(f"  fall events {r['fall_events']}, fallen events {r['fallen_events']}"
              + (f" in {hours:.2f} h of video: {r['fall_events'] / hours:.2f} per hour" if args.hours else ""))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
