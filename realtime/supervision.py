"""Supervised stages: a failure costs one frame, a stage that keeps failing is restarted.

Each per-frame stage of a stream (``detect``, ``pose``, ``track``, ``window``, ``draw``) runs
under a :class:`StageSupervisor` owned by the thread that runs the stage. A call that raises
is counted (per stream and stage: ``posestream_stage_failures_total``), logged, and its frame
is skipped; the stream goes on with the next frame. ``restart_after`` failures in a row mean
the stage's state is broken, not its input: the supervisor waits a backoff (``backoff_initial_s``,
doubling with each restart that did not help, up to ``backoff_max_s``), then calls the stage's
``restart`` (a new engine session, a new tracker, ...) and counts it
(``posestream_stage_restarts_total``). The stream's health says ``degraded: pose failing`` or
``degraded: pose restarting`` until the stage succeeds again, then ``ok``.

A stage the stream cannot do without (``detect``, ``pose``, ``track``) waits its backoff in
its thread: there is nothing else that thread could do meanwhile, and the reader's slot drops
(and counts) the frames that come in the meantime. A stage the rest of the stream does not
need (``draw``: the annotated video and preview; ``window``: classification) is
non-blocking: during its backoff it is skipped (counted as ``skipped``) while the frames go on
being tracked, and it is restarted once the backoff is over. The waits are cut short by the
stream's stop event, so a stage in backoff never holds up shutdown.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)

__all__ = ["StagePolicy", "StageSupervisor", "STAGE_FAILURES", "STAGE_RESTARTS", "health_of"]

STAGE_FAILURES = "posestream_stage_failures_total"
STAGE_RESTARTS = "posestream_stage_restarts_total"
STAGE_DEGRADED = "posestream_stage_degraded"
#: A failing stage logs its traceback for the first failure of a streak, then every this many.
LOG_EVERY = 100


@dataclass(frozen=True)
class StagePolicy:
    """When a failing stage is restarted, and how long it waits first."""

    restart_after: int = 3          #: failures in a row that make the stage restart
    backoff_initial_s: float = 0.5  #: wait before the first restart of a streak
    backoff_max_s: float = 30.0     #: the wait doubles per restart that did not help, up to this

    def __post_init__(self):
        if self.restart_after < 1:
            raise ValueError(f"restart_after must be >= 1, got {self.restart_after}")
        if not 0 <= self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError(f"need 0 <= backoff_initial_s ({self.backoff_initial_s}) <= backoff_max_s "
                             f"({self.backoff_max_s})")

    def backoff(self, restarts_in_a_row: int) -> float:
        return min(self.backoff_initial_s * 2 ** restarts_in_a_row, self.backoff_max_s)


class StageSupervisor:
    """One stage of one stream (see the module docstring). Only the stage's own thread calls
    :meth:`run`; :meth:`status` may be read from any thread (plain values, replaced whole)."""

    def __init__(self, stream: str, stage: str, policy: StagePolicy, stop: threading.Event, *,
                 restart: Callable[[], Any] | None = None, metrics: Any = None, blocking: bool = True):
        self.stream, self.stage, self.policy = stream, stage, policy
        self._stop = stop
        self._restart = restart
        self.blocking = blocking
        self._resume_at: float | None = None  # a non-blocking stage in backoff: skipped until then
        self.skipped = 0           # calls left out during a non-blocking backoff
        self.failures = 0          # all failed calls
        self.in_a_row = 0          # failed calls since the last success
        self.restarts = 0          # restarts done
        self.restart_failures = 0  # restarts whose restart() itself raised
        self._restarts_in_a_row = 0
        self.state = "ok"          # "ok", "failing", "restarting"
        self.last_error: str | None = None
        self._failures_metric = metrics.counter(STAGE_FAILURES, "per-frame stage calls that raised (frame skipped)",
                                                stream=stream, stage=stage) if metrics is not None else None
        self._restarts_metric = metrics.counter(STAGE_RESTARTS, "stages restarted after failing in a row",
                                                stream=stream, stage=stage) if metrics is not None else None
        self._degraded_metric = metrics.gauge(STAGE_DEGRADED, "0 ok, 1 failing, 2 restarting (since its last success)",
                                              stream=stream, stage=stage) if metrics is not None else None
        self._set_state("ok")

    def _set_state(self, state: str) -> None:
        self.state = state
        if self._degraded_metric is not None:
            self._degraded_metric.set({"ok": 0, "failing": 1, "restarting": 2}[state])

    def run(self, fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """``(True, fn(*args))``, or ``(False, None)`` when it raised (counted, logged; after
        ``restart_after`` in a row, a blocking stage is restarted before this returns; a
        non-blocking one returns ``(False, None)`` at once, uncalled, until its backoff is over)."""
        if self._resume_at is not None:
            if time.monotonic() < self._resume_at:
                self.skipped += 1
                return False, None
            self._resume_at = None
            self._do_restart()
        try:
            value = fn(*args)
        except Exception as exc:
            self._failed(exc)
            return False, None
        if self.state != "ok":
            log.info("stream %s: %s works again (it was %s; %d failures, %d restarts in all)", self.stream,
                     self.stage, self.state, self.failures, self.restarts)
            self._set_state("ok")
        self.in_a_row = 0
        self._restarts_in_a_row = 0
        return True, value

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "failures": self.failures, "restarts": self.restarts,
                "restart_failures": self.restart_failures, "skipped": self.skipped, "last_error": self.last_error}

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.in_a_row += 1
        self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if self._failures_metric is not None:
            self._failures_metric.inc()
        if self.in_a_row == 1 or self.failures % LOG_EVERY == 0:
            log.error("stream %s: %s failed (frame skipped; %d failures in all): %s", self.stream, self.stage,
                      self.failures, self.last_error, exc_info=exc)
        else:
            log.warning("stream %s: %s failed (%d in a row): %s", self.stream, self.stage, self.in_a_row,
                        self.last_error)
        if self.state == "ok":
            self._set_state("failing")
        if self.in_a_row >= self.policy.restart_after:
            self._restart_stage()

    def _restart_stage(self) -> None:
        delay = self.policy.backoff(self._restarts_in_a_row)
        self._restarts_in_a_row += 1
        self._set_state("restarting")
        log.warning("stream %s: %s failed %d times in a row; restarting it in %.1f s%s", self.stream, self.stage,
                    self.in_a_row, delay, "" if self.blocking else " (skipped meanwhile)")
        if not self.blocking:
            self._resume_at = time.monotonic() + delay
            return
        if self._stop.wait(delay):
            return
        self._do_restart()

    def _do_restart(self) -> None:
        t0 = time.monotonic()
        try:
            if self._restart is not None:
                self._restart()
        except Exception as exc:
            self.restart_failures += 1
            self.last_error = f"restart: {type(exc).__name__}: {exc}".splitlines()[0]
            log.exception("stream %s: restarting %s failed", self.stream, self.stage)
        else:
            self.restarts += 1
            if self._restarts_metric is not None:
                self._restarts_metric.inc()
            log.warning("stream %s: %s restarted (%d restarts; took %.2f s)", self.stream, self.stage,
                        self.restarts, time.monotonic() - t0)
        self.in_a_row = 0  # the restarted stage gets restart_after calls of its own


def health_of(supervisors: dict[str, StageSupervisor]) -> str:
    """``"ok"``, or ``"degraded: "`` followed by each stage that is not, e.g.
    ``"degraded: pose restarting"``."""
    bad = [f"{name} {s.state}" for name, s in supervisors.items() if s.state != "ok"]
    return "degraded: " + ", ".join(bad) if bad else "ok"
