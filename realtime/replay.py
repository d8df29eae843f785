"""Skeletons through the runtime's decision path, without video and without threads.

``posestream run`` turns frames into people (detector + landmarks), people into tracks
(:class:`~posestream.realtime.tracker.ByteTracker`), tracks into windows
(:class:`~posestream.realtime.windows.WindowScheduler`), windows into probabilities
(:meth:`~posestream.realtime.batcher.ActionBatcher.classify`: the training rasterizer and the
action engine, calibrated) and probabilities into labels and events
(:meth:`~posestream.realtime.events.EventLogic.on_result`). :func:`replay` runs the same
objects, in one thread, from people given frame by frame: already-extracted skeletons, or
synthetic ones with known labels and falls. So a fall-detection figure measured with it is a
figure of what the runtime decides, at the frame rate the replay is given (the runtime's
processed frames: drop frames from the input to replay a slower pipeline).
"""
from __future__ import annotations

import queue
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ReplayOutcome", "replay", "people_from_keypoints"]


@dataclass
class ReplayOutcome:
    """What a replay decided: ``events`` (event dicts, as the event sinks receive them),
    ``labels`` (one ``(t, track_id, label or None, score, window top-1 index)`` per classified
    window, ``t`` the window's newest frame time), ``windows`` classified."""

    events: list[dict] = field(default_factory=list)
    labels: list[tuple[float, Any, str | None, float, int]] = field(default_factory=list)
    windows: int = 0


def people_from_keypoints(keypoints: np.ndarray, scores: np.ndarray, min_score: float = 0.05,
                          padding: float = 0.1) -> list:
    """:class:`~posestream.engines.pose.PersonPose` s of one frame from ``keypoints [M, V, 2]``
    and ``scores [M, V]`` (a person with no joint above ``min_score`` is not there): the box is
    the seen joints' extent grown by ``padding`` of its size, scored by their mean score."""
    from posestream.engines.pose import PersonPose

    people = []
    for kp, sc in zip(np.asarray(keypoints, dtype=np.float32), np.asarray(scores, dtype=np.float32)):
        seen = sc > min_score
        if seen.sum() < 2:
            continue
        (x0, y0), (x1, y1) = kp[seen].min(0), kp[seen].max(0)
        pad = padding * max(x1 - x0, y1 - y0, 1.0)
        box = np.array([x0 - pad, y0 - pad, x1 + pad, y1 + pad, float(sc[seen].mean())], dtype=np.float32)
        people.append(PersonPose(box=box, keypoints=np.concatenate([kp, sc[:, None]], axis=1), source="replay"))
    return people


def replay(frames: Iterable[tuple[int, float, Sequence[Any]]], img_shape: tuple[int, int], engine, config=None, *,
           stream: str = "replay", fps_hint: float | None = None,
           tracker_thresholds: dict[str, float] | None = None) -> ReplayOutcome:
    """Run ``frames`` — ``(frame_index, t_capture, people)`` each, people as the pose stage
    gives them (objects with ``box`` and ``keypoints``) — through the tracker, the window
    scheduler, the batcher's classify step and the event logic of ``config`` (a
    :class:`~posestream.realtime.config.RunConfig`; default: the runtime's defaults), with the
    action ``engine``. Times are seconds (events carry them as given). ``tracker_thresholds``:
    the tracker's score thresholds as the front end that made the people sets them
    (``estimator.tracker_thresholds()``, as the runtime does); default ByteTrack's."""
    from posestream.realtime.batcher import ActionBatcher, WindowJob
    from posestream.realtime.config import RunConfig
    from posestream.realtime.events import EventLogic
    from posestream.realtime.pipeline import label_threshold
    from posestream.realtime.tracker import ByteTracker
    from posestream.realtime.windows import StreamTracks, WindowScheduler

    cfg = (config or RunConfig()).validate()
    batcher = ActionBatcher(engine, max_batch=cfg.max_batch)  # not started: classify() is called here
    tracker = ByteTracker(**(tracker_thresholds or {}), max_lost_s=1.0, fps=fps_hint)
    tracks = StreamTracks(stream, keep_s=cfg.keep_s)
    scheduler = WindowScheduler(clip_len=batcher.clip_len, size=batcher.size, window_s=cfg.window_s,
                                stride=cfg.stride, **cfg.window_minimum(), mode=cfg.mode,
                                scene_persons=cfg.scene_persons)
    names = engine.class_names or [str(i) for i in range(engine.num_classes)]
    logic = EventLogic(stream, names, smooth_alpha=cfg.smooth_alpha, smooth_margin=cfg.smooth_margin,
                       min_score=label_threshold(cfg.min_label_score, engine), fall=cfg.fall,
                       action_rules=cfg.action_events)
    out = ReplayOutcome()
    sink: "queue.Queue" = queue.Queue()  # the jobs' reply queue (unused: classify() returns the results)
    for frame_index, t_capture, people in frames:
        live = tracker.update(list(people), frame_index=int(frame_index))
        for track_id in tracks.update(live, int(frame_index), float(t_capture), img_shape=img_shape):
            logic.forget(track_id)
        due = scheduler.due(tracks, float(t_capture))
        jobs = [WindowJob(stream, key, sample.keypoint, sample.score, sample.t_last_capture, sample.last_frame, sink,
                          frames_since, t_submit=time.monotonic())
                for key, sample, frames_since in due]
        for start in range(0, len(jobs), cfg.max_batch):
            for result in batcher.classify(jobs[start:start + cfg.max_batch]):
                events, label = logic.on_result(result.key, result.t_last_capture, result.t_last_capture,
                                                result.probs, result.context, result.frame_index)
                out.windows += 1
                out.labels.append((result.t_last_capture, result.key, None if label is None else label[0],
                                   0.0 if label is None else float(label[1]), result.label_index))
                out.events.extend(e.to_dict() for e in events)
    return out
