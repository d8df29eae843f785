"""Event logic (posestream.realtime.events): the fall state machine driven by real synthetic
skeletons and scripted model probabilities, label smoothing, action events, the event record."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from posestream.realtime.events import (
    COOLDOWN,
    DOWN,
    FALLING,
    RECOVERED,
    UPRIGHT,
    ActionEventRule,
    Event,
    EventLogic,
    FallStateMachine,
    LabelSmoother,
    body_geometry,
)
from posestream.realtime.config import RunConfig
from posestream.realtime.tracker import CONFIRMED, Track
from posestream.realtime.windows import StreamTracks, WindowScheduler
from posestream.train.data.synthetic import ACTIONS, generate_clip

FPS = 20  # processed frames a second, unless a test says otherwise
RUN = RunConfig()  # the runtime's defaults: the windows' stride, min_frames, window_s, keep_s


class Cadence:
    """When the runtime classifies a window of one person seen in every processed frame: the
    runtime's own StreamTracks + WindowScheduler (every ``RUN.stride`` frames once
    ``RUN.min_frames`` were seen). ``frame(index, t, keypoints)`` returns None, or the frames
    since the previous window that the runtime hands to the event logic with a window."""

    def __init__(self, track_id=1, img_shape=(1080, 1920)):
        self.track_id, self.img_shape = track_id, img_shape
        self.tracks = StreamTracks("cam", keep_s=RUN.keep_s)
        self.scheduler = WindowScheduler(clip_len=48, size=56, window_s=RUN.window_s, stride=RUN.stride,
                                         min_frames=RUN.min_frames)

    def frame(self, index, t, keypoints):
        seen = keypoints[keypoints[:, 2] > 0, :2]
        box = np.r_[seen.min(0), seen.max(0), 1.0].astype(np.float32)
        track = Track(self.track_id, box, keypoints.astype(np.float32), CONFIRMED, age=index, hits=index + 1,
                      time_since_update=0, frame_index=index, detection_index=0)
        self.tracks.update([track], index, t, img_shape=self.img_shape)
        due = self.scheduler.due(self.tracks, t)
        return due[0][2] if due else None


def skeletons(clip, person=0):
    """[T, 17, 3] (x, y, score) of one person of a clip."""
    return np.concatenate([clip["keypoint"][person], clip["keypoint_score"][person][..., None]], axis=-1)


def hold(frames, seconds, first=False):
    """The last (or first) frame repeated for ``seconds``: a person holding still."""
    frame = frames[0] if first else frames[-1]
    return np.repeat(frame[None], int(round(seconds * FPS)), axis=0)


def clip_of(action, seed, **kwargs):
    kwargs = {"fps": FPS, "noise": False, "camera_kind": "level", **kwargs}
    return generate_clip(action, rng=seed, **kwargs)


def fall_clip(seed=3, variant="forward-from-standing", **kwargs):
    clip = clip_of("falling", seed, variant=variant, duration=4.0, **kwargs)
    onset, impact = (f / FPS for f in clip["action_frames"])
    return clip, onset, impact


class Player:
    """Plays skeleton frames into a FallStateMachine at FPS, with a window's probabilities when
    the runtime's scheduler would classify one (``probs(t)`` -> dict, or None for no model),
    keeping the time running."""

    def __init__(self, machine):
        self.machine, self.t, self.frame = machine, 0.0, 0
        self.events, self.states, self.window_times = [], [], []
        self.cadence = Cadence()

    def play(self, frames, probs=None):
        for kp in frames:
            due = self.cadence.frame(self.frame, self.t, kp) is not None
            if due:
                self.window_times.append(self.t)
            window = probs(self.t) if probs is not None and due else None
            event = self.machine.update(self.t, window, kp, None, frame_index=self.frame)
            if event is not None:
                self.events.append(event)
            self.states.append((self.t, self.machine.state))
            self.t += 1 / FPS
            self.frame += 1
        return self

    def first_time_in(self, state):
        return next(t for t, s in self.states if s == state)


def const(**probs):
    return lambda t: probs


def fall_probs(onset, impact, t0=0.0, lag=0.4, window_s=3.0):
    """What a model classifying 3 s windows would say around a fall: standing, then falling
    while the fall is in the window, then lying."""
    def probs(t):
        t = t - t0
        if t < onset + lag:
            return {"standing": 0.85, "falling": 0.05}
        if t < impact + window_s:
            return {"falling": 0.75, "lying": 0.15}
        return {"lying": 0.85, "falling": 0.05}
    return probs


# ---------------------------------------------------------------------------------------------
# Geometry


def test_body_geometry_of_upright_and_lying_skeletons():
    clip, onset, impact = fall_clip()
    frames = skeletons(clip)
    up, down = body_geometry(frames[0]), body_geometry(frames[-1])
    assert up.axis_deg < 20 and up.aspect < 0.6
    assert down.axis_deg > 60 and down.aspect > 1.0
    assert body_geometry(None) is None
    box = body_geometry(frames[0], box=np.array([10, 20, 60, 220, 0.9]))
    assert (box.width, box.height, box.bottom) == (50, 200, 220)


# ---------------------------------------------------------------------------------------------
# Falls


def test_a_fall_raises_exactly_one_event_at_the_right_time():
    clip, onset, impact = fall_clip()
    frames = np.concatenate([skeletons(clip), hold(skeletons(clip), 6.0)])  # stays down 6 s more
    player = Player(FallStateMachine("cam0", 4)).play(frames, fall_probs(onset, impact))
    assert len(player.events) == 1
    event = player.events[0]
    assert event.kind == "fall" and event.label == "fall" and event.track_id == 4 and event.stream == "cam0"
    assert onset <= event.start <= impact + 0.5  # the onset, as the model saw it (0.4 s lag)
    t_down = player.first_time_in(DOWN)
    assert event.end == pytest.approx(t_down + 2.0, abs=1.5 / FPS)  # confirmed after down_s
    assert event.frame_index == round(event.end * FPS)
    assert event.score == pytest.approx(0.75)  # the peak falling (or, once down, lying) probability
    assert event.details["trigger"] in ("model", "geometry")
    assert player.machine.state == COOLDOWN  # lying on: still the one event


def test_a_fall_is_found_by_geometry_alone_without_a_model():
    clip, onset, impact = fall_clip()
    frames = np.concatenate([skeletons(clip), hold(skeletons(clip), 4.0)])
    player = Player(FallStateMachine()).play(frames, probs=None)
    assert len(player.events) == 1
    event = player.events[0]
    assert event.details["trigger"] == "geometry" and event.score is None
    assert onset <= event.start <= impact + 0.2


@pytest.mark.parametrize("variant", ["backward-from-walking", "left-from-standing", "collapse-from-standing"])
def test_other_falls_raise_one_event(variant):
    clip, onset, impact = fall_clip(seed=7, variant=variant)
    frames = np.concatenate([skeletons(clip), hold(skeletons(clip), 4.0)])
    player = Player(FallStateMachine()).play(frames, fall_probs(onset, impact))
    assert len(player.events) == 1 and onset - 0.3 <= player.events[0].start <= impact + 0.5


@pytest.mark.parametrize("seed", range(4))
def test_sitting_down_is_no_fall(seed):
    clip = clip_of("sitting_down", seed, duration=4.0)
    frames = np.concatenate([skeletons(clip), hold(skeletons(clip), 4.0)])
    player = Player(FallStateMachine()).play(frames, const(sitting_down=0.6, sitting=0.2, falling=0.1))
    assert player.events == [] and all(s == UPRIGHT for _, s in player.states)
    # even a model that wrongly says "falling" while the person sits down: a seated body is
    # not down, so FALLING times out without an event, and does not start again while the
    # model keeps saying so
    fooled = Player(FallStateMachine()).play(frames, const(falling=0.6, sitting=0.3))
    assert fooled.events == [] and fooled.machine.state == UPRIGHT
    falling = [t for t, s in fooled.states if s == FALLING]
    timeout = fooled.machine.falling_timeout_s
    assert falling[0] == fooled.window_times[0] and falling[-1] <= falling[0] + timeout + 1e-9


def test_lying_down_deliberately_is_no_fall():
    # The very skeletons of a fall, four times slower, and a model that says "lying", not
    # "falling": lying without a fall before it raises nothing.
    clip, onset, impact = fall_clip()
    slow = np.repeat(skeletons(clip), 4, axis=0)
    frames = np.concatenate([slow, hold(slow, 6.0)])
    player = Player(FallStateMachine()).play(frames, lambda t: {"lying": 0.8 if t > 4 * onset else 0.2,
                                                                "standing": 0.7 if t < 4 * onset else 0.1,
                                                                "falling": 0.05})
    assert player.events == []
    # someone already lying (in bed) when first seen: nothing either
    lying = clip_of("lying", 2, duration=6.0)
    rest = Player(FallStateMachine()).play(skeletons(lying), const(lying=0.9))
    assert rest.events == [] and all(s == UPRIGHT for _, s in rest.states)


@pytest.mark.parametrize("action", ["walking", "picking_up", "squatting", "jumping"])
def test_everyday_actions_are_no_falls(action):
    clip = clip_of(action, 1, duration=5.0)
    player = Player(FallStateMachine()).play(skeletons(clip), const(**{action: 0.8}))
    assert player.events == []


def test_a_stumble_that_never_gets_down_times_out():
    clip = clip_of("walking", 2, duration=6.0)
    player = Player(FallStateMachine(falling_timeout_s=1.5)).play(
        skeletons(clip), lambda t: {"falling": 0.7 if 1.0 <= t < 1.5 else 0.0, "walking": 0.8})
    assert player.events == []
    falling = [t for t, s in player.states if s == FALLING]
    first = next(t for t in player.window_times if t >= 1.0)  # the first window that says "falling"
    assert falling and falling[0] == pytest.approx(first) and falling[-1] <= first + 1.5 + 1e-9
    assert player.machine.state == UPRIGHT


def test_getting_up_before_confirmation_cancels_the_fall():
    clip, onset, impact = fall_clip()
    frames = skeletons(clip)
    land = int(round(impact * FPS))
    # down for 0.5 s, then up again (the fall played backwards) and standing
    sequence = np.concatenate([frames[:land], hold(frames[:land], 0.5), frames[:land][::-1],
                               hold(frames, 3.0, first=True)])
    player = Player(FallStateMachine()).play(sequence, probs=None)
    assert player.events == [] and DOWN in {s for _, s in player.states}
    assert player.machine.state == UPRIGHT


def test_cooldown_recovery_and_the_next_fall():
    clip, onset, impact = fall_clip()
    frames = skeletons(clip)
    fall = np.concatenate([frames, hold(frames, 3.0)])
    get_up = np.concatenate([frames[::-1], hold(frames, 4.0, first=True)])
    machine = FallStateMachine(cooldown_s=20.0, recover_s=3.0)
    player = Player(machine)
    player.play(fall, fall_probs(onset, impact, t0=player.t))
    assert len(player.events) == 1 and machine.state == COOLDOWN
    player.play(get_up, const(standing=0.8))
    assert machine.state == RECOVERED  # upright for recover_s after the fall
    # a second fall within the cooldown: followed, logged, but no event
    player.play(fall, fall_probs(onset, impact, t0=player.t))
    assert len(player.events) == 1 and machine.state == COOLDOWN
    player.play(get_up, const(standing=0.8))
    player.play(hold(frames, 10.0, first=True), const(standing=0.8))  # the cooldown runs out
    assert machine.state == UPRIGHT and player.t > player.events[0].end + 20.0
    player.play(fall, fall_probs(onset, impact, t0=player.t))
    assert len(player.events) == 2 and player.events[1].start > player.events[0].end + 20.0


def test_lying_on_after_a_fall_raises_one_fall_then_one_fallen_state_event():
    clip, onset, impact = fall_clip()
    frames = np.concatenate([skeletons(clip), hold(skeletons(clip), 40.0)])
    player = Player(FallStateMachine(cooldown_s=5.0, fallen_s=20.0)).play(frames, fall_probs(onset, impact))
    assert [e.kind for e in player.events] == ["fall", "fallen"] and player.machine.state == COOLDOWN
    fall, fallen = player.events
    # the fallen state: still down fallen_s after the fall was confirmed
    assert fallen.start == fall.end and fallen.end - fall.end == pytest.approx(20.0, abs=0.1)
    assert fallen.label == "fallen" and fallen.details["since_fall_s"] >= 20.0


def test_getting_up_before_fallen_s_raises_no_fallen_state_event():
    clip, onset, impact = fall_clip()
    frames = skeletons(clip)
    player = Player(FallStateMachine(cooldown_s=5.0, fallen_s=20.0))
    player.play(np.concatenate([frames, hold(frames, 5.0)]), fall_probs(onset, impact))
    assert [e.kind for e in player.events] == ["fall"]
    player.play(np.concatenate([frames[::-1], hold(frames, 25.0, first=True)]), const(standing=0.8))
    assert [e.kind for e in player.events] == ["fall"] and player.machine.state in (RECOVERED, UPRIGHT)


def test_transitions_are_logged_with_reasons(caplog):
    clip, onset, impact = fall_clip()
    frames = np.concatenate([skeletons(clip), hold(skeletons(clip), 3.0)])
    with caplog.at_level(logging.DEBUG, logger="posestream.realtime.events"):
        Player(FallStateMachine("cam9", 3)).play(frames, fall_probs(onset, impact))
    lines = [r.getMessage() for r in caplog.records]
    assert any("upright -> falling" in m and "(" in m for m in lines)
    assert any("falling -> down" in m for m in lines)
    assert any("down -> cooldown" in m and "fall confirmed" in m for m in lines)
    assert all("cam9" in m and "track 3" in m for m in lines)


def test_fall_thresholds_are_checked():
    with pytest.raises(ValueError):
        FallStateMachine(upright_deg=70, horizontal_deg=60)
    with pytest.raises(ValueError):
        FallStateMachine(down_s=-1)


# ---------------------------------------------------------------------------------------------
# Label smoothing


def test_label_smoother_moving_average():
    smoother = LabelSmoother(alpha=0.5, margin=0.1, min_score=0.3)
    first = smoother.update(1, [0.8, 0.2, 0.0])
    assert first.label == 0 and first.score == pytest.approx(0.8)
    second = smoother.update(1, [0.0, 1.0, 0.0])
    np.testing.assert_allclose(second.probs, [0.4, 0.6, 0.0])
    assert smoother.update(2, [0.1, 0.1, 0.8]).label == 2  # tracks are independent


def test_label_smoother_hysteresis():
    smoother = LabelSmoother(alpha=1.0, margin=0.15, min_score=0.3)  # alpha 1: no averaging
    assert smoother.update(1, [0.6, 0.4]).label == 0
    assert smoother.update(1, [0.45, 0.55]).label == 0   # ahead by 0.10 < margin: no change
    assert smoother.update(1, [0.4, 0.6]).label == 1     # ahead by 0.20: change
    assert smoother.update(1, [0.5, 0.5]).label == 1
    out = smoother.update(1, [0.75, 0.25])
    assert out.label == 0
    three = LabelSmoother(alpha=1.0, margin=0.15, min_score=0.3)
    three.update(1, [0.5, 0.3, 0.2])
    unknown = three.update(1, [0.28, 0.36, 0.36])  # label below min_score: unknown first...
    assert unknown.label == 1                        # ...then the top class, which qualifies
    low = three.update(1, [0.25, 0.25, 0.25, 0.25][:3])
    assert low.label is None and low.score == pytest.approx(0.25)
    three.forget(1)
    assert three.label(1) is None and len(three) == 0


# ---------------------------------------------------------------------------------------------
# Action events


def test_action_event_rule_needs_the_duration_and_fires_once_per_episode():
    rule = ActionEventRule("waving", min_score=0.6, min_duration_s=1.0, cooldown_s=5.0)
    events = []
    for i in range(40):  # 0.25 s apart: waving from 1.0 to 3.0 s, a break, waving again 3.5..
        t = i * 0.25
        waving = 1.0 <= t <= 3.0 or t >= 3.5
        event = rule.update(7, t, "waving" if waving else "standing", 0.8, stream="cam0", frame_index=i)
        if event is not None:
            events.append(event)
    assert len(events) == 2
    first, second = events
    assert (first.start, first.end, first.frame_index) == (1.0, 2.0, 8)
    assert first.kind == "action" and first.label == "waving" and first.stream == "cam0" and first.track_id == 7
    # the second episode starts at 3.5 and holds 1 s at 4.5, but the cooldown runs to 7.0
    assert second.start == 3.5 and second.end == 7.0


def test_action_event_rule_needs_the_score():
    rule = ActionEventRule("waving", min_score=0.6, min_duration_s=0.5)
    assert all(rule.update(1, i * 0.25, "waving", 0.5) is None for i in range(20))


# ---------------------------------------------------------------------------------------------
# Per stream


def test_event_logic_smooths_and_runs_the_fall_machine():
    names = list(ACTIONS)
    logic = EventLogic("cam0", names, smooth_alpha=0.6, fall={"down_s": 1.5},
                       action_rules=[{"label": "lying", "min_score": 0.5, "min_duration_s": 1.0}])
    clip, onset, impact = fall_clip()
    frames = np.concatenate([skeletons(clip), hold(skeletons(clip), 5.0)])
    scripted = fall_probs(onset, impact)
    events, labels = [], []
    cadence = Cadence(track_id=4)
    for i, kp in enumerate(frames):
        t = i / FPS
        if cadence.frame(i, t, kp) is None:
            events += logic.on_frame(4, t, kp, None, frame_index=i)
            continue
        probs = np.full(len(names), 0.01)
        for name, p in scripted(t).items():
            probs[names.index(name)] = p
        outcome = logic.on_window(4, t, probs / probs.sum(), keypoints=kp, box=None, frame_index=i)
        events += outcome.events
        labels.append(outcome.label)
    falls = [e for e in events if e.kind == "fall"]
    actions = [e for e in events if e.kind == "action"]
    assert len(falls) == 1 and falls[0].details["down_for_s"] >= 1.5
    assert len(actions) == 1 and actions[0].label == "lying"
    assert labels[0][0] == "standing" and labels[-1][0] == "lying"
    assert {label[0] for label in labels} == {"standing", "falling", "lying"}
    assert logic.state(4) == COOLDOWN
    logic.forget(4)
    assert logic.state(4) is None and logic.smoother.label(4) is None


def test_event_logic_checks_its_settings_early():
    with pytest.raises(TypeError):
        EventLogic("cam0", ["a", "b"], fall={"down_seconds": 2})
    logic = EventLogic("cam0", ["a", "b"])
    with pytest.raises(ValueError, match="3 probabilities for 2 class names"):
        logic.on_window(1, 0.0, np.array([0.2, 0.3, 0.5]))


def test_event_record_is_one_json_line():
    event = Event(stream="cam0", track_id=np.int64(3), label="fall", score=np.float32(0.8123456),
                  start=1_700_000_000.25, end=1_700_000_002.5, frame_index=np.int64(120), kind="fall",
                  details={"axis_deg": np.float64(81.5), "nan": float("nan"), "pair": (1, 2)})
    record = event.to_dict()
    line = event.to_json()
    assert "\n" not in line and json.loads(line) == record
    assert record["stream"] == "cam0" and record["track_id"] == 3 and record["frame_index"] == 120
    assert record["score"] == pytest.approx(0.8123, abs=1e-4)
    assert record["start"] == "2023-11-14T22:13:20.250+00:00" and record["start_ts"] == 1_700_000_000.25
    assert record["end"] == "2023-11-14T22:13:22.500+00:00"
    assert record["details"] == {"axis_deg": 81.5, "nan": None, "pair": [1, 2]}


# --------------------------------------------------------------------------------------------
# At the rate the runtime calls the fall logic: once per window, with the frames since the last


def play_windows(frames, probs, rate: float, fallen_s: float = 20.0):
    """Deliver ``frames`` (processed at ``rate`` frames/s) to an EventLogic the way the runtime
    does: a window (``probs(t)`` by class name) when its scheduler says, with the frames since
    the previous window (EventLogic.on_result). Returns the events."""
    logic = EventLogic("cam", list(ACTIONS), fall={"fallen_s": fallen_s})
    cadence = Cadence()
    events = []
    for i, kp in enumerate(frames):
        t = i / rate
        since = cadence.frame(i, t, kp)
        if since is not None:
            p = probs(t)
            vector = np.array([p.get(name, 0.0) for name in ACTIONS]) + 1e-3
            outcome = logic.on_result(1, t, t, vector / vector.sum(), since, i)
            events.extend(outcome.events)
    return events


def at_rate(clip_frames, clip_fps: float, rate: float):
    """The frames a pipeline processing ``rate`` frames/s keeps of a ``clip_fps`` clip."""
    step = clip_fps / rate
    return clip_frames[np.round(np.arange(0, len(clip_frames), step)).astype(int).clip(0, len(clip_frames) - 1)]


@pytest.mark.parametrize("rate", [3.0, 5.0, 10.0, 20.0])
def test_a_fall_is_caught_once_per_window_at_any_processed_rate(rate):
    clip, onset, impact = fall_clip()
    frames = at_rate(np.concatenate([skeletons(clip), hold(skeletons(clip), 25.0)]), FPS, rate)
    events = play_windows(frames, fall_probs(onset, impact), rate)
    assert [e.kind for e in events] == ["fall", "fallen"], rate
    assert events[0].end - impact < 6.0  # confirmed within seconds of the impact


@pytest.mark.parametrize("rate", [5.0, 10.0])
def test_a_fall_the_model_reads_as_sitting_is_still_caught(rate):
    """Real fallen people are often read as "sitting": geometry no label vetoes decides."""
    clip, onset, impact = fall_clip(variant="backward-from-standing")
    frames = at_rate(np.concatenate([skeletons(clip), hold(skeletons(clip), 6.0)]), FPS, rate)
    events = play_windows(frames, const(sitting=0.85, falling=0.05), rate)
    assert [e.kind for e in events] == ["fall"], rate


@pytest.mark.parametrize("action, variant", [("sitting_down", None), ("picking_up", None), ("squatting", "hold"),
                                             ("lying", "lie_down")])
def test_what_must_not_alarm_does_not_at_the_window_rate(action, variant):
    clip = clip_of(action, 4, variant=variant, duration=8.0)
    frames = at_rate(np.concatenate([skeletons(clip), hold(skeletons(clip), 5.0)]), FPS, 10.0)
    truth = {"sitting_down": "sitting_down", "picking_up": "picking_up", "squatting": "squatting",
             "lying": "sitting"}[action]
    # the model says what it is (then lying, for lying down on purpose)
    probs = (lambda t: {"sitting": 0.8} if t < 3.0 else {"lying": 0.85}) if action == "lying" else const(**{truth: 0.8})
    assert play_windows(frames, probs, 10.0) == []
