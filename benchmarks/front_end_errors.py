"""The pose front end's real errors on real frames, and the generator's noise model beside them.

    sh tests/get_media.sh
    python benchmarks/front_end_errors.py [--frames 200] [--flip-every 5] [--rescale 0.8 0.6]
                                          [--json out.json] [--write-measured train/data/front_end_measured.json]

Runs the runtime's own front end (``make_pose_estimator(--preset)``: MoveNet finds people,
BlazePose refines them; ``detect`` then ``refine`` as the pipeline calls them, then the
pipeline's tracker with the front end's thresholds) on the first ``--frames`` consecutive
frames of ``vtest.avi`` (10 fps, pedestrians seen from above; 795 = all of it) and on the two
stills, and measures:

- **BlazePose vs MoveNet** on the same people (the MoveNet candidate whose box BlazePose
  refined): per-joint distance, left/right disagreement by person height, and the
  BlazePose-33 -> COCO-17 mapping's systematic offsets of the hips and shoulders against
  MoveNet, a COCO-trained estimator (mid-hip / mid-shoulder along the trunk in trunk lengths,
  width ratios; per skeleton and per track).
- **Flip consistency**: every ``--flip-every``-th frame (and each still) is also run mirrored;
  the skeletons are un-mirrored (x -> W - x, left <-> right) and matched by box. The distance
  is the estimator's randomness at a fixed image, free of motion: / sqrt(2) it is one
  estimate's random error.
- **Temporal jitter** along each track: the second difference ``x[t] - (x[t-1] + x[t+1]) / 2``
  (what remains after removing locally linear motion), per joint group, in body heights.
- **Misses and left/right swaps by person height**: track gaps, joints below score 0.3, frames
  whose left/right pair is closer to its neighbours' frames crossed than straight,
  BlazePose -> MoveNet fallbacks; and the same people **shrunk** (``--rescale``: every 40th
  frame scaled down onto a canvas of its size): people still found, left/right crossings and
  how much of the legs' articulation survives.
- **Scores**, **limb-length** change, **ankle spread**, **knee flexion**, **cadence** (the
  dominant frequency of the ankles' left-right difference) and **speed** of each track.

The track statistics (``posestream.train.data.noise_stats``, shared with the tests) are
computed the same way on the generator's own noisy walking, standing and running clips at
vtest's rate and image size, from elevated and ceiling cameras, with people of the real
tracks' sizes and the front end's score style, and printed side by side with the real
walking and standing tracks; the generator's random error (noisy minus exact projection,
less its track mean) beside the flip test's. ``--write-measured`` writes the real figures,
the file the generator's tests compare against. The front end's results are cached under
``--cache`` (keyed by video, frames, preset and stills): a second run takes seconds.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from posestream.engines.pose import box_iou
from posestream.skeleton import KEYPOINT_FLIP_INDEX, NUM_KEYPOINTS
from posestream.train.data.noise_stats import (GROUPS, MIN_SCORE, generator_tracks, height_bin, person_height, quantiles,
                                              knee_flexion, random_error, track_statistics,
                                              trunk_convention)

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# The front end on real frames
# --------------------------------------------------------------------------------------------


def _people_record(people, candidates) -> list[dict]:
    """What we keep of the refined people: box, keypoints, source, the MoveNet keypoints of the
    candidate whose box was refined (``refine`` copies the candidate's box)."""
    out = []
    for p in people:
        movenet = None
        for c in candidates:
            if np.array_equal(c.box[:4], p.box[:4]):
                movenet = c.keypoints.copy()
                break
        out.append({"box": p.box.copy(), "keypoints": p.keypoints.copy(), "source": p.source,
                    "movenet": movenet, "landmarks": None if p.landmarks is None else p.landmarks.copy()})
    return out


def unflip_keypoints(keypoints: np.ndarray, width: int) -> np.ndarray:
    """Keypoints ``[17, 3]`` found on a horizontally mirrored frame, in the original frame: x ->
    W - x (pixel i covers [i, i + 1), as the estimators' normalised outputs do) and the
    person's left and right exchanged."""
    out = keypoints[KEYPOINT_FLIP_INDEX].copy()
    out[:, 0] = width - out[:, 0]
    return out


def run_front_end(video: Path, frames: int, flip_every: int, preset: str = "default", threads: int = 1,
                  cache_dir: Path | None = None, stills: tuple[Path, ...] = ()) -> dict:
    """The front end and the pipeline's tracker on the first ``frames`` frames of ``video``
    (and mirrored every ``flip_every``-th frame; 0: never), plus each still (and its mirror)."""
    import cv2

    from posestream.engines.pose import make_pose_estimator
    from posestream.realtime.tracker import ByteTracker

    key = hashlib.sha1(f"{video.resolve()}|{video.stat().st_size}|{frames}|{flip_every}|{preset}|"
                       f"{[str(s) for s in stills]}".encode()).hexdigest()[:12]
    path = cache_dir / f"front_end_errors_{key}.pkl" if cache_dir else None
    if path is not None and path.is_file():
        return pickle.loads(path.read_bytes())
    est = make_pose_estimator(preset, threads=threads)
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"{video}: cannot open")
    fps = float(cap.get(cv2.CAP_PROP_FPS)) or 10.0
    tracker = ByteTracker(fps=fps, max_lost_s=1.0, **est.tracker_thresholds())
    records, flipped = [], {}
    t0 = time.monotonic()
    shape = None
    for index in range(frames):
        ok, frame = cap.read()
        if not ok:
            break
        shape = frame.shape[:2]
        candidates = est.detect(frame)
        people = est.refine(frame, candidates)
        tracks = tracker.update(people, frame_index=index)
        rec = _people_record(people, candidates)
        for tr in tracks:
            if tr.detection_index is not None:
                rec[tr.detection_index]["track"] = int(tr.track_id)
                rec[tr.detection_index]["confirmed"] = tr.state == "confirmed"
        records.append(rec)
        if flip_every and index % flip_every == 0:
            mirror = np.ascontiguousarray(frame[:, ::-1])
            flipped[index] = _people_record(est.refine(mirror, est.detect(mirror)), [])
        if index % 50 == 49:
            print(f"  front end: {index + 1}/{frames} frames, {time.monotonic() - t0:.0f} s", file=sys.stderr,
                  flush=True)
    cap.release()
    still_records = {}
    for still in stills:
        image = cv2.imread(str(still))
        if image is None:
            continue
        cands = est.detect(image)
        mirror = np.ascontiguousarray(image[:, ::-1])
        still_records[still.name] = {"shape": image.shape[:2], "people": _people_record(est.refine(image, cands), cands),
                                     "flipped": _people_record(est.refine(mirror, est.detect(mirror)), [])}
    result = {"video": str(video), "fps": fps, "img_shape": shape, "preset": preset, "frames": records,
              "flipped": flipped, "stills": still_records, "seconds": time.monotonic() - t0}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(result))
        tmp.replace(path)
    return result


def real_tracks(run: dict, min_frames: int = 10) -> list[dict]:
    """The tracker's tracks of a :func:`run_front_end` result as ``keypoint [T, 17, 2]``,
    ``score [T, 17]``, ``present [T]``, ``source [T]`` (first to last matched frame; tracks
    never confirmed or with fewer than ``min_frames`` matched frames left out)."""
    by_track: dict[int, dict[int, dict]] = {}
    confirmed = set()
    for index, people in enumerate(run["frames"]):
        for p in people:
            if "track" in p:
                by_track.setdefault(p["track"], {})[index] = p
                if p.get("confirmed"):
                    confirmed.add(p["track"])
    tracks = []
    for tid, frames in sorted(by_track.items()):
        if tid not in confirmed or len(frames) < min_frames:
            continue
        lo, hi = min(frames), max(frames) + 1
        kp = np.zeros((hi - lo, NUM_KEYPOINTS, 2))
        sc = np.zeros((hi - lo, NUM_KEYPOINTS))
        present = np.zeros(hi - lo, dtype=bool)
        source = np.array([""] * (hi - lo), dtype=object)
        for index, p in frames.items():
            kp[index - lo] = p["keypoints"][:, :2]
            sc[index - lo] = p["keypoints"][:, 2]
            present[index - lo] = True
            source[index - lo] = p["source"]
        tracks.append({"track": tid, "start": lo, "keypoint": kp, "score": sc, "present": present, "source": source})
    return tracks


def _skeleton_height(kp: np.ndarray) -> float:
    return float(kp[:, 1].max() - kp[:, 1].min())


def _pair_crossed(a: np.ndarray, b: np.ndarray, left: int, right: int, min_sep: float) -> bool | None:
    """Is ``a``'s left/right pair closer to ``b``'s crossed than straight (by a factor 2)?
    None when ``b``'s pair lies within ``min_sep`` pixels (cannot be told)."""
    if np.linalg.norm(b[left] - b[right]) < min_sep:
        return None
    straight = np.linalg.norm(a[left] - b[left]) + np.linalg.norm(a[right] - b[right])
    crossed = np.linalg.norm(a[left] - b[right]) + np.linalg.norm(a[right] - b[left])
    return bool(crossed < 0.5 * straight)


def compare_skeletons(pairs: list[tuple[np.ndarray, np.ndarray, float]]) -> dict:
    """Per joint group median/p90 distance (in heights) and left/right crossings of
    ``(a [17, 3], b [17, 3], height px)`` pairs, overall and by height bin; joints with a
    score below 0.3 in either are left out."""
    dist = {g: [] for g in GROUPS}
    crossed_by_bin: dict[str, list[int]] = {}
    overall_cross = [0, 0]
    for a, b, height in pairs:
        ok = (a[:, 2] >= MIN_SCORE) & (b[:, 2] >= MIN_SCORE)
        d = np.linalg.norm(a[:, :2] - b[:, :2], axis=-1) / max(height, 1.0)
        for g, j in GROUPS.items():
            dist[g].extend(d[list(j)][ok[list(j)]].tolist())
        hb = height_bin(height)
        cb = crossed_by_bin.setdefault(hb, [0, 0])
        for left, right in ((5, 6), (11, 12), (13, 14), (15, 16), (7, 8), (9, 10)):
            if not (ok[left] and ok[right]):
                continue
            c = _pair_crossed(a[:, :2], b[:, :2], left, right, 0.05 * height)
            if c is None:
                continue
            cb[0] += int(c)
            cb[1] += 1
            overall_cross[0] += int(c)
            overall_cross[1] += 1
    return {"pairs": len(pairs),
            "distance": {g: dict(zip(("p50", "p90"), quantiles(v, (50, 90)))) for g, v in dist.items()},
            "crossed": overall_cross[0] / overall_cross[1] if overall_cross[1] else float("nan"),
            "crossed_by_height": {k: {"rate": v[0] / v[1] if v[1] else float("nan"), "checked": v[1]}
                                  for k, v in sorted(crossed_by_bin.items())}}


def blazepose_vs_movenet(run: dict) -> dict:
    """BlazePose's skeletons against MoveNet's for the same people (the candidate BlazePose
    refined): distances, crossings and the trunk convention (:func:`trunk_convention`)."""
    pairs, conventions = [], []
    by_track: dict[int, list[dict]] = {}
    people = [p for frame in run["frames"] for p in frame]
    for still in run["stills"].values():
        people += still["people"]
    for p in people:
        if p["source"] != "blazepose" or p["movenet"] is None:
            continue
        bp, mn = p["keypoints"], p["movenet"]
        height = _skeleton_height(bp[:, :2])
        pairs.append((bp, mn, height))
        if (mn[[5, 6, 11, 12], 2] >= MIN_SCORE).all() and (bp[[5, 6, 11, 12], 2] >= MIN_SCORE).all():
            conventions.append(trunk_convention(bp[:, :2], mn[:, :2]))
            if "track" in p:
                by_track.setdefault(p["track"], []).append(conventions[-1])
    keys = ("hip_up", "shoulder_up", "hip_width", "shoulder_width")
    out = compare_skeletons(pairs)
    out["convention"] = {k: dict(zip(("p25", "p50", "p75"), quantiles([c[k] for c in conventions], (25, 50, 75))))
                         for k in keys}
    out["convention_people"] = len(conventions)
    # a clip-wide offset is what the generator draws: the spread of the tracks' own medians
    # (tracks with >= 10 such frames), free of the frame-to-frame noise
    medians = [{k: float(np.median([c[k] for c in cs])) for k in keys} for cs in by_track.values() if len(cs) >= 10]
    out["convention_per_track"] = {k: dict(zip(("p25", "p50", "p75"), quantiles([m[k] for m in medians], (25, 50, 75))))
                                   for k in keys}
    out["convention_tracks"] = len(medians)
    return out


def flip_consistency(run: dict) -> dict:
    """The skeletons found on mirrored frames, un-mirrored, against those of the frames
    themselves (people matched by box IoU >= 0.5)."""
    width = run["img_shape"][1]
    pairs = []
    sources = [(run["frames"][i], flipped, width) for i, flipped in run["flipped"].items()]
    sources += [(s["people"], s["flipped"], s["shape"][1]) for s in run["stills"].values()]
    for people, flipped, w in sources:
        for q in flipped:
            kp = unflip_keypoints(q["keypoints"], w)
            box = np.array([w - q["box"][2], q["box"][1], w - q["box"][0], q["box"][3]])
            best = max(people, key=lambda p: box_iou(p["box"], box), default=None)
            if best is None or box_iou(best["box"], box) < 0.5 or best["source"] != q["source"]:
                continue
            pairs.append((kp, best["keypoints"], _skeleton_height(best["keypoints"][:, :2])))
    return compare_skeletons(pairs)


def _knee_flexion(kp: np.ndarray) -> float:
    """Mean of both knees' flexion in the image (degrees; 0 = straight leg) of one skeleton."""
    return float(np.mean([knee_flexion(kp[None, :, :2], side)[0] for side in ("left", "right")]))


def rescaled(images: list[np.ndarray], scales: tuple[float, ...], preset: str = "default", threads: int = 1) -> dict:
    """The same people at fewer pixels: each image shrunk by each of ``scales`` onto a canvas of
    its own size (filled with its median colour), the front end run on it, its skeletons
    scaled back and matched by box (IoU >= 0.5) to those of the full-size image. Per scale:
    the share of full-size people found, left/right crossings and joint distance against the
    full-size skeleton, and the ratios of ankle spread and knee flexion (how much of the legs'
    articulation survives), by the shrunk person's height."""
    import cv2

    from posestream.engines.pose import make_pose_estimator

    est = make_pose_estimator(preset, threads=threads)
    reference = [est(im) for im in images]
    out = {}
    for s in scales:
        pairs, found, total, spread, flex = [], 0, 0, [], []
        for im, ref in zip(images, reference):
            h, w = im.shape[:2]
            small = cv2.resize(im, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            canvas = np.empty_like(im)
            canvas[:] = np.median(im.reshape(-1, 3), axis=0).astype(im.dtype)
            canvas[:small.shape[0], :small.shape[1]] = small
            people = est(canvas)
            for p in ref:
                if p.source != "blazepose":
                    continue
                total += 1
                best = max(people, key=lambda q: box_iou(q.box[:4] / s, p.box[:4]), default=None)
                if best is None or box_iou(best.box[:4] / s, p.box[:4]) < 0.5:
                    continue
                found += 1
                kp = best.keypoints.copy()
                kp[:, :2] /= s
                height = _skeleton_height(p.keypoints[:, :2])
                pairs.append((kp, p.keypoints, height))
                spread.append(np.linalg.norm(kp[15, :2] - kp[16, :2]) / max(np.linalg.norm(p.keypoints[15, :2] - p.keypoints[16, :2]), 1e-6))
                flex.append((_knee_flexion(kp), _knee_flexion(p.keypoints)))
        cmp = compare_skeletons(pairs)
        heights = [h * s for _, _, h in pairs]
        flex_arr = np.asarray(flex) if flex else np.zeros((0, 2))
        out[f"{s:g}"] = {"people": total, "found": found / total if total else float("nan"),
                         "height_px": quantiles(heights, (50,))[0], "crossed": cmp["crossed"],
                         "distance": {g: v["p50"] for g, v in cmp["distance"].items()},
                         "ankle_spread_ratio": quantiles(spread, (50,))[0],
                         "knee_flexion_deg": [float(flex_arr[:, 0].mean()) if len(flex_arr) else float("nan"),
                                              float(flex_arr[:, 1].mean()) if len(flex_arr) else float("nan")]}
    return out


# --------------------------------------------------------------------------------------------
# Real vs generator
# --------------------------------------------------------------------------------------------

#: The figures of :func:`track_statistics` printed side by side (name, getter, format).
ROWS = (
    ("tracks", lambda s: s["tracks"], "{:d}"),
    ("person height px p50", lambda s: s["height_px"][1], "{:.0f}"),
    *((f"jitter {g} p50 (heights)", (lambda g: lambda s: s["jitter"][g]["p50"])(g), "{:.4f}") for g in GROUPS),
    *((f"jitter {g} p90", (lambda g: lambda s: s["jitter"][g]["p90"])(g), "{:.4f}") for g in ("arms", "legs")),
    *((f"swap {g} (share of frames)", (lambda g: lambda s: s["swap"][g])(g), "{:.4f}") for g in ("shoulders", "hips", "arms", "legs")),
    ("joints scored < 0.3", lambda s: s["joint_miss"], "{:.3f}"),
    ("arms scored < 0.3", lambda s: s["score"]["arms"]["below_0_3"], "{:.3f}"),
    ("legs score p10", lambda s: s["score"]["legs"]["p10"], "{:.2f}"),
    ("trunk score p10", lambda s: s["score"]["hips"]["p10"], "{:.2f}"),
    ("track gaps (share of frames)", lambda s: s["gap"], "{:.3f}"),
    ("limb length change / frame", lambda s: s["limb_change"], "{:.3f}"),
    ("ankle spread (heights)", lambda s: s["ankle_spread"], "{:.3f}"),
    ("knee flexion p90 (deg)", lambda s: s["knee_flexion"], "{:.1f}"),
    ("cadence Hz p50", lambda s: s["cadence_hz"]["p50"], "{:.2f}"),
    ("cadence Hz p75", lambda s: s["cadence_hz"]["p75"], "{:.2f}"),
    ("mid-hip speed (heights/s)", lambda s: s["speed"], "{:.2f}"),
    ("ankle speed rel. hip (heights/s)", lambda s: s["ankle_speed"], "{:.2f}"),
)


def _fmt(fmt: str, value) -> str:
    try:
        if isinstance(value, float) and not math.isfinite(value):
            return "-"
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def print_table(columns: dict[str, dict]) -> None:
    names = list(columns)
    print("| figure | " + " | ".join(names) + " |")
    print("|---" + "|---:" * len(names) + "|")
    for label, get, fmt in ROWS:
        print(f"| {label} | " + " | ".join(_fmt(fmt, get(columns[n])) for n in names) + " |")


def split_moving(tracks: list[dict], fps: float, min_speed: float = 0.25) -> tuple[list[dict], list[dict]]:
    """(walking, standing) tracks by the mid-hip's median speed (heights/s)."""
    moving, still = [], []
    for tr in tracks:
        (moving if track_statistics([tr], fps)["speed"] > min_speed else still).append(tr)
    return moving, still


def per_track_legs(tracks: list[dict], fps: float) -> dict:
    """10/50/90 % over ``tracks`` of each track's ankle spread and knee flexion."""
    per = [track_statistics([tr], fps) for tr in tracks]
    return {k: quantiles([p[k] for p in per], (10, 50, 90)) for k in ("ankle_spread", "knee_flexion")}


def measure(run: dict) -> dict:
    """Every real figure of a :func:`run_front_end` result (what ``--write-measured`` keeps)."""
    fps = run["fps"]
    tracks = real_tracks(run)
    moving, still = split_moving(tracks, fps)
    by_height: dict[str, list[dict]] = {}
    for tr in tracks:
        by_height.setdefault(height_bin(person_height(tr["keypoint"], tr["present"])), []).append(tr)
    sources = np.concatenate([tr["source"][tr["present"]] for tr in tracks]) if tracks else np.zeros(0)
    switches = sum(int(((tr["source"][1:] != tr["source"][:-1]) & tr["present"][1:] & tr["present"][:-1]).sum())
                   for tr in tracks)
    pairs = sum(int((tr["present"][1:] & tr["present"][:-1]).sum()) for tr in tracks)
    flip = flip_consistency(run)
    return {
        "video": Path(run["video"]).name, "fps": fps, "img_shape": list(run["img_shape"]), "preset": run["preset"],
        "frames": len(run["frames"]), "flipped_frames": len(run["flipped"]),
        "tracks": track_statistics(tracks, fps), "walking": track_statistics(moving, fps),
        "standing": track_statistics(still, fps),
        # the walkers' legs track by track (10/50/90 %), to set against the generator's clip by clip
        "walking_per_track": per_track_legs(moving, fps),
        "by_height": {k: track_statistics(v, fps) for k, v in sorted(by_height.items())},
        "movenet_fallback": float((sources == "movenet").mean()) if len(sources) else float("nan"),
        "source_switches": switches / pairs if pairs else float("nan"),
        "blazepose_vs_movenet": blazepose_vs_movenet(run),
        "flip": flip,
        # one estimate's random error: the flip distance / sqrt(2) (two independent estimates)
        "random_error": {g: v["p50"] / math.sqrt(2.0) for g, v in flip["distance"].items()},
    }


def generator_columns(measured: dict, per_action: int, seed: int) -> dict[str, dict]:
    """The generator's clips at the real video's rate, image size, camera heights (elevated and
    ceiling cameras) and person sizes (the real tracks' 10-90 % heights), in the score style
    modelled on this front end (``confident``)."""
    lo, _, hi = measured["tracks"]["height_px"]
    kw = dict(fps=measured["fps"], img_shape=tuple(measured["img_shape"]), heights=(lo, hi), score_style="confident")
    walk = generator_tracks("walking", per_action, seed, **kw)
    stand = generator_tracks("standing", per_action, seed + 1, **kw)
    run = generator_tracks("running", per_action, seed + 2, **kw)
    fps = measured["fps"]
    return {"walk": walk, "stand": stand, "run": run,
            "stats": {"gen walking": track_statistics(walk, fps), "gen standing": track_statistics(stand, fps),
                      "gen running": track_statistics(run, fps)},
            "random_error": random_error(walk + stand)}


def _comparison_line(what: str, cmp: dict, crossed: str) -> str:
    """One line of a :func:`compare_skeletons` result."""
    return (f"{what} ({cmp['pairs']} skeletons): distance p50 (heights) "
            + ", ".join(f"{g} {v['p50']:.3f}" for g, v in cmp["distance"].items())
            + f"; {crossed} {cmp['crossed']:.1%} of pairs ("
            + ", ".join(f"{k} {v['rate']:.1%}" for k, v in cmp["crossed_by_height"].items()) + ")")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", default=str(REPO / "tests" / ".media"))
    ap.add_argument("--frames", type=int, default=200, help="consecutive frames of vtest.avi from the start (795: all)")
    ap.add_argument("--flip-every", type=int, default=5, help="also run every N-th frame mirrored (0: never)")
    ap.add_argument("--preset", default="default", help="front end preset (posestream.engines.pose)")
    ap.add_argument("--generator-clips", type=int, default=40, help="generator clips per action")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rescale", type=float, nargs="*", default=[0.8, 0.6],
                    help="also run every 40th frame shrunk by these factors (none: skip)")
    ap.add_argument("--cache", default="/tmp/posestream_front_end_errors", help="cache of the front end's output")
    ap.add_argument("--json", help="write every figure (real, generator) to this JSON file")
    ap.add_argument("--write-measured", help="write the real figures alone (train/data/front_end_measured.json)")
    args = ap.parse_args(argv)

    media = Path(args.media)
    video = media / "vtest.avi"
    if not video.is_file():
        print(f"{video}: no such file (sh tests/get_media.sh)", file=sys.stderr)
        return 2
    stills = tuple(p for p in (media / "messi5.jpg", media / "basketball1.png") if p.is_file())
    t0 = time.monotonic()
    run = run_front_end(video, args.frames, args.flip_every, args.preset, cache_dir=Path(args.cache), stills=stills)
    measured = measure(run)
    if args.rescale:
        import cv2

        cap = cv2.VideoCapture(str(video))
        images = []
        for i in range(args.frames):
            ok, frame = cap.read()
            if not ok:
                break
            if i % 40 == 0:
                images.append(frame)
        cap.release()
        measured["rescaled"] = rescaled(images, tuple(args.rescale), args.preset)
    gen = generator_columns(measured, args.generator_clips, args.seed)

    print(f"# {video.name}: {measured['frames']} frames ({measured['flipped_frames']} also mirrored), preset "
          f"{args.preset}, {measured['tracks']['tracks']} tracks; the generator at {measured['fps']:g} fps, "
          f"{measured['img_shape'][1]}x{measured['img_shape'][0]}, elevated/ceiling cameras, people "
          f"{measured['tracks']['height_px'][0]:.0f}-{measured['tracks']['height_px'][2]:.0f} px, 'confident' scores")
    print_table({"real walking": measured["walking"], **gen["stats"], "real standing": measured["standing"]})
    legs = per_track_legs(gen["walk"], measured["fps"])
    for key, what in (("ankle_spread", "ankle spread (heights)"), ("knee_flexion", "knee flexion p90 (deg)")):
        print(f"| walkers' {what}, track by track 10/50/90 % | "
              + "/".join(f"{v:.3g}" for v in measured["walking_per_track"][key]) + " | "
              + "/".join(f"{v:.3g}" for v in legs[key]) + " | | | |")
    print()
    print("| random error of one estimate (heights, p50) | " + " | ".join(GROUPS) + " |")
    print("|---" + "|---:" * len(GROUPS) + "|")
    print("| real: flip distance / sqrt 2 | " + " | ".join(f"{measured['random_error'][g]:.4f}" for g in GROUPS) + " |")
    print("| generator: noisy - exact, less its track mean | " + " | ".join(
        f"{gen['random_error'][g]['p50']:.4f}" for g in GROUPS) + " |")
    print()
    bm = measured["blazepose_vs_movenet"]
    conv = bm["convention"]
    print(_comparison_line("BlazePose vs MoveNet on the same people", bm, "left/right disagree"))
    print(f"  BlazePose-33 -> COCO-17 against MoveNet ({bm['convention_people']} skeletons, p25/p50/p75): "
          f"mid-hip along the trunk {conv['hip_up']['p25']:+.3f}/{conv['hip_up']['p50']:+.3f}/{conv['hip_up']['p75']:+.3f} "
          f"trunk lengths, hip width x {conv['hip_width']['p25']:.2f}/{conv['hip_width']['p50']:.2f}/{conv['hip_width']['p75']:.2f}, "
          f"mid-shoulder {conv['shoulder_up']['p25']:+.3f}/{conv['shoulder_up']['p50']:+.3f}/{conv['shoulder_up']['p75']:+.3f}, "
          f"shoulder width x {conv['shoulder_width']['p25']:.2f}/{conv['shoulder_width']['p50']:.2f}/{conv['shoulder_width']['p75']:.2f}")
    tc = bm["convention_per_track"]
    print(f"  ... the tracks' own medians ({bm['convention_tracks']} tracks, p25/p50/p75; what the generator draws "
          "per clip): " + ", ".join(f"{k} {tc[k]['p25']:+.3f}/{tc[k]['p50']:+.3f}/{tc[k]['p75']:+.3f}" for k in tc))
    fl = measured["flip"]
    print(_comparison_line("Flip consistency", fl, "left/right crossed"))
    print(f"MoveNet fallbacks {measured['movenet_fallback']:.1%} of skeletons; source switches inside a track "
          f"{measured['source_switches']:.1%} of frame pairs")
    print("By person height (real tracks): " + "; ".join(
        f"{k}: {v['tracks']} tracks, legs swap {v['swap']['legs']:.1%}, gaps {v['gap']:.1%}, "
        f"face jitter {v['jitter']['face']['p50']:.3f}" for k, v in measured["by_height"].items()))
    for s, r in measured.get("rescaled", {}).items():
        print(f"Shrunk x{s} (people {r['height_px']:.0f} px): found {r['found']:.0%} of {r['people']}, left/right crossed "
              f"{r['crossed']:.1%}, ankle spread kept {r['ankle_spread_ratio']:.2f}, knee flexion "
              f"{r['knee_flexion_deg'][0]:.0f} vs {r['knee_flexion_deg'][1]:.0f} deg full size")
    print(f"({time.monotonic() - t0:.0f} s)")
    if args.write_measured:
        _write_json(Path(args.write_measured), {
            "measured_with": "python benchmarks/front_end_errors.py " + " ".join(sys.argv[1:] if argv is None else argv),
            **measured})
    if args.json:
        _write_json(Path(args.json), {"real": measured, "generator": gen["stats"],
                                      "generator_random_error": gen["random_error"]})
    return 0


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else round(float(obj), 5)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=1) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
