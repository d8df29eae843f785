"""Falls end to end: synthetic people who fall (or do something that must not alarm) through
the runtime's own decision path (posestream.realtime.replay: tracker, window scheduler, the
calibrated action model, the fall logic) at the processed frame rates a pipeline keeps up with,
and the fall recall and false alarms per family.

    python benchmarks/falls.py --per-case 8 --out falls.json
    python benchmarks/falls.py --model work_dirs/.../epoch_4.onnx --rates 5 10 --cameras corner

Falls: every fall family (hand-animated, and each physics scenario, "push" being held out of
the shipped model's training), from standing and from walking, the person then lying on for
10 s; a fall counts as caught when a ``fall`` event comes within 8 s of the impact, and the
``fallen`` state event is reported too. Must-not-alarm: picking something up, sitting down
(fast people too), lying down on purpose, squatting, walking, standing, sitting, running,
jumping, and two people walking across each other's path; any ``fall`` event is a false
alarm. Every case runs on several cameras (the held-out ceiling-corner one included) and at
several processed rates. The figures are printed as a table and written as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

FALL_CASES = ("kinematic", "trip", "slip", "push", "faint", "knees", "slump", "sideways")
NO_ALARM_CASES = ("picking_up", "sitting_down", "lie_down", "squatting", "walking", "standing", "sitting",
                  "running", "jumping", "crossing")
CAMERAS = ("level", "elevated", "ceiling", "corner")
LYING_ON_S = 24.0   # how long the fallen person stays down after the clip (past fallen_s)
CATCH_S = 8.0       # a fall event within this long after the impact catches it


def hold_still(clip: dict, seconds: float, rng: np.random.Generator) -> dict:
    """The clip with its last frame held for ``seconds`` more (a person lying still), with a
    little jitter so that the estimator's noise goes on."""
    fps = float(clip["fps"])
    n = int(round(seconds * fps))
    last_kp, last_sc = clip["keypoint"][:, -1:], clip["keypoint_score"][:, -1:]
    size = float(np.ptp(last_kp[0, 0][last_sc[0, 0] > 0], axis=0).max()) if (last_sc[0, 0] > 0).sum() > 1 else 50.0
    kp = np.repeat(last_kp, n, axis=1) + rng.normal(0.0, 0.006 * size, (last_kp.shape[0], n, 17, 2))
    kp = np.where(np.repeat(last_kp, n, axis=1) == 0, 0.0, kp).astype(np.float32)
    out = dict(clip)
    out["keypoint"] = np.concatenate([clip["keypoint"], kp], axis=1)
    out["keypoint_score"] = np.concatenate([clip["keypoint_score"], np.repeat(last_sc, n, axis=1)], axis=1)
    out["total_frames"] = out["keypoint"].shape[1]
    return out


def make_case(case: str, seed: int, camera: str) -> tuple[dict, float | None]:
    """One synthetic clip of ``case`` and the time of its impact (None for a no-alarm case)."""
    from posestream.train.data.synthetic import generate_clip

    rng = np.random.default_rng([seed, 99])
    common = {"camera_kind": camera, "fps": float(rng.choice([10, 15, 25, 30]))}
    if case in FALL_CASES:
        pre = "walking" if seed % 2 else "standing"
        direction = ("forward", "backward", "left", "right", "collapse")[seed % 5]
        variant = f"{direction if case == 'kinematic' else case}-from-{pre}"
        clip = generate_clip("falling", rng, variant=variant, duration=float(rng.uniform(4.5, 6.0)), **common)
        impact = next(seg[2] for seg in clip["timeline"] if seg[0] == "falling")
        return hold_still(clip, LYING_ON_S, rng), impact
    if case == "lie_down":
        return generate_clip("lying", rng, variant="lie_down", duration=float(rng.uniform(8.0, 12.0)), **common), None
    if case == "crossing":  # two people walking across each other
        return generate_clip("walking", rng, bystander=True, duration=float(rng.uniform(5.0, 8.0)), **common), None
    return generate_clip(case, rng, duration=float(rng.uniform(5.0, 8.0)), **common), None


def run_case(clip: dict, impact: float | None, engine, rate: float, seed: int) -> dict:
    from posestream.realtime.replay import people_from_keypoints, replay
    from posestream.train.data.served import processed_frames

    fps = float(clip["fps"])
    picked = processed_frames(np.random.default_rng([seed, 98]), int(clip["total_frames"]), fps, min(rate, fps))
    frames = [(int(f), f / fps, people_from_keypoints(clip["keypoint"][:, f], clip["keypoint_score"][:, f]))
              for f in picked]
    out = replay(frames, tuple(clip["img_shape"]), engine, fps_hint=min(rate, fps))
    falls = [e for e in out.events if e["kind"] == "fall"]
    fallen = [e for e in out.events if e["kind"] == "fallen"]
    row = {"falls": len(falls), "fallen": len(fallen), "windows": out.windows}
    if impact is not None:
        delays = [e["end_ts"] - impact for e in falls]
        row["caught"] = any(-1.0 <= d <= CATCH_S for d in delays)
        row["delay_s"] = min((d for d in delays if d >= -1.0), default=None)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="action model (default: the shipped one)")
    parser.add_argument("--per-case", type=int, default=6, help="seeds per case and camera")
    parser.add_argument("--rates", type=float, nargs="+", default=[5.0, 10.0, 25.0], help="processed frames/s")
    parser.add_argument("--cameras", nargs="+", default=list(CAMERAS), choices=CAMERAS)
    parser.add_argument("--cases", nargs="+", default=list(FALL_CASES + NO_ALARM_CASES),
                        choices=FALL_CASES + NO_ALARM_CASES)
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args(argv)

    from posestream.realtime.config import RunConfig
    from posestream.realtime.pipeline import load_action_engine

    engine = load_action_engine(RunConfig(model=args.model))
    rows = []
    t0 = time.perf_counter()
    jobs = [(case, camera, seed, rate) for case in args.cases for camera in args.cameras
            for seed in range(args.per_case) for rate in args.rates]
    for i, (case, camera, seed, rate) in enumerate(jobs):
        clip, impact = make_case(case, 1000 * seed + CAMERAS.index(camera), camera)
        row = run_case(clip, impact, engine, rate, seed)
        row.update(case=case, camera=camera, seed=seed, rate=rate, fall_case=case in FALL_CASES,
                   variant=clip["variant"], video_s=round(clip["total_frames"] / float(clip["fps"]), 2))
        rows.append(row)
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{len(jobs)} cases, {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    summary = summarize(rows)
    print(format_summary(summary))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    return 0


def summarize(rows: list[dict]) -> dict:
    by = defaultdict(list)
    for r in rows:
        by[(r["case"], "all")].append(r)
        by[(r["case"], r["camera"])].append(r)
    out: dict = {"cases": {}, "falls": {}, "no_alarm": {}}
    for (case, camera), rs in sorted(by.items()):
        if rs[0]["fall_case"]:
            entry = {"n": len(rs), "recall": float(np.mean([r["caught"] for r in rs])),
                     "fallen": float(np.mean([r["fallen"] > 0 for r in rs])),
                     "median_delay_s": float(np.median([r["delay_s"] for r in rs if r["delay_s"] is not None]))
                     if any(r["delay_s"] is not None for r in rs) else None}
        else:
            hours = sum(r["video_s"] for r in rs) / 3600.0
            alarms = sum(r["falls"] for r in rs)
            entry = {"n": len(rs), "false_alarms": alarms, "clips_with_alarm": float(np.mean([r["falls"] > 0 for r in rs])),
                     "video_h": round(hours, 3)}
        out["cases"].setdefault(case, {})[camera] = entry
    falls = [r for r in rows if r["fall_case"]]
    calm = [r for r in rows if not r["fall_case"]]
    if falls:
        out["falls"] = {"n": len(falls), "recall": float(np.mean([r["caught"] for r in falls])),
                        "by_rate": {str(rate): float(np.mean([r["caught"] for r in falls if r["rate"] == rate]))
                                    for rate in sorted({r["rate"] for r in falls})}}
    if calm:
        out["no_alarm"] = {"n": len(calm), "false_alarms": sum(r["falls"] for r in calm),
                           "clips_with_alarm": float(np.mean([r["falls"] > 0 for r in calm])),
                           "video_h": round(sum(r["video_s"] for r in calm) / 3600.0, 3)}
    return out


def format_summary(summary: dict) -> str:
    lines = []
    for case, cams in summary["cases"].items():
        cells = []
        for camera, e in cams.items():
            if "recall" in e:
                cells.append(f"{camera} {e['recall']:.0%} (fallen {e['fallen']:.0%})")
            else:
                cells.append(f"{camera} {e['false_alarms']} alarms/{e['n']}")
        lines.append(f"{case:14s} " + "  ".join(cells))
    if summary.get("falls"):
        f = summary["falls"]
        lines.append(f"falls caught: {f['recall']:.1%} of {f['n']}  by rate: " +
                     ", ".join(f"{k} fps {v:.0%}" for k, v in f["by_rate"].items()))
    if summary.get("no_alarm"):
        n = summary["no_alarm"]
        lines.append(f"must-not-alarm: {n['false_alarms']} false alarms in {n['n']} clips "
                     f"({n['clips_with_alarm']:.1%} of clips, {n['video_h'] * 60:.0f} min of video)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
