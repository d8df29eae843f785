"""One batcher shared by every stream: windows in, class probabilities out.

Perception threads (one per stream) submit skeleton windows, already mapped onto the model's
``size x size`` grid (:mod:`posestream.realtime.windows`). The batcher thread collects them
until ``max_batch`` windows are waiting or the oldest has waited ``max_wait_s``, rasterizes the
whole batch into one reused volume (:class:`posestream.engines.raster.Rasterizer`, the code
training uses) and runs the action engine once on it. Each result goes back to the queue the
window came with.

Why one batcher for all streams: a CNN call on a batch of 8 costs far less than 8 calls of one
(X3D-s int8: 84 ms against 4 x 27 ms on this CPU), and the model needs one thread, not one per
stream. Why a deadline: a window must not wait for company longer than the latency budget.

The input queue is bounded (:data:`QUEUE_SIZE` windows); a window that finds it full is
dropped and counted (the stream submits a fresher one ``stride`` frames later). A result queue
that is full drops its oldest result (counted): a stalled consumer never stalls the batcher.

What crosses the boundary is checked, so that one bad window costs only itself, never the
batch (of every stream) it would ride in: a window with another keypoint count than the
model's is refused at :meth:`ActionBatcher.submit` (``rejected_shape``), non-finite joints
are cleared before rasterizing (``joints_cleared``), and a window whose logits come back
NaN or infinite gets no result (``nonfinite_logits``); each is counted and logged.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from posestream.engines.action import ActionEngine
from posestream.engines.raster import Rasterizer
from posestream.skeleton import NUM_KEYPOINTS

log = logging.getLogger(__name__)

__all__ = ["WindowJob", "WindowResult", "ActionBatcher", "softmax", "QUEUE_SIZE", "clean_window"]

#: Windows waiting for the batcher at most (more are dropped and counted).
QUEUE_SIZE = 64


def clean_window(keypoint: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """A window's keypoints ``[M, T, V, 2]`` and scores ``[M, T, V]`` with every joint whose
    coordinates or score are not finite cleared (x, y, score = 0: a joint nobody saw, which
    draws nothing) and scores clipped to [0, 1]; and how many joints were cleared. The inputs
    are not modified."""
    kp = np.asarray(keypoint, np.float32)
    sc = np.asarray(score, np.float32)
    bad = ~(np.isfinite(kp).all(axis=-1) & np.isfinite(sc))
    n = int(bad.sum())
    if n:
        kp = np.where(bad[..., None], np.float32(0), kp)
        sc = np.where(bad, np.float32(0), sc)
    return kp, np.clip(sc, 0.0, 1.0), n


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[N, C]`` logits, in float64 then back to float32."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass(eq=False)
class WindowJob:
    """One window to classify.

    keypoint ``[M, T, V, 2]`` on the model's grid, score ``[M, T, V]``; ``key`` identifies the
    window for its submitter (e.g. a track id); ``t_last_capture`` is the time of the
    window's newest frame on its stream's clock (``Frame.t_clock``), ``read_offset`` that frame's
    read time minus it (0 but for files read at pace fast), so that the frame-to-label latency is
    measured from ``t_last_capture + read_offset``; ``reply`` is the queue the result goes to.
    """

    stream: str
    key: Any
    keypoint: np.ndarray
    score: np.ndarray
    t_last_capture: float
    frame_index: int
    reply: "queue.Queue[WindowResult]"
    context: Any = None   #: passed through to the result untouched (e.g. the latest skeleton)
    t_submit: float = field(default_factory=time.monotonic)
    read_offset: float = 0.0


@dataclass(eq=False)
class WindowResult:
    """What the batcher says about one window: ``probs`` ``[C]`` (softmax of the logits),
    the timings of the batch it rode in (rasterize and classify seconds, batch size), and the
    moment the result was ready (``t_done``, monotonic)."""

    stream: str
    key: Any
    frame_index: int
    probs: np.ndarray
    t_last_capture: float
    t_submit: float
    t_done: float
    batch_size: int
    rasterize_s: float
    classify_s: float
    context: Any = None
    read_offset: float = 0.0  #: as WindowJob's

    @property
    def label_index(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def t_last_read(self) -> float:
        """When the reader got the window's newest frame (monotonic)."""
        return self.t_last_capture + self.read_offset

    @property
    def latency_s(self) -> float:
        """Capture of the window's last frame -> its label ready."""
        return self.t_done - self.t_last_read


class ActionBatcher:
    """The shared rasterize + classify stage (see the module docstring).

    ``engine``: an :class:`~posestream.engines.action.ActionEngine` whose card says how to
    rasterize (joints or limbs, sigma, size). ``max_batch``: windows per engine call.
    ``max_wait_s``: how long the first window of a batch may wait for others. ``queue_size``:
    windows waiting at most (more are dropped and counted). ``metrics``: an optional
    :class:`posestream.realtime.metrics.Metrics`; the stage latencies go there too.
    """

    def __init__(self, engine: ActionEngine, *, max_batch: int = 8, max_wait_s: float = 0.02,
                 queue_size: int = QUEUE_SIZE, metrics: Any = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        card = engine.card
        if card is None:
            raise ValueError(f"{engine.source}: the action model has no posestream model card, so the runtime "
                             "cannot tell how to rasterize its input (export it with posestream export)")
        self.engine = engine
        self.clip_len, self.size = int(card.clip_len), int(card.size)
        # the joints a window must have: a joint model's channels are its joints; a limb model
        # draws the COCO-17 skeleton's limbs
        self.num_keypoints = int(card.in_channels) if card.heatmap == "joints" else NUM_KEYPOINTS
        # calibrated probabilities: softmax(logits / T), T fitted on held-out data (posestream
        # calibrate); 1 for an uncalibrated model
        self.temperature = float((card.extra or {}).get("temperature", 1.0))
        if not self.temperature > 0:
            raise ValueError(f"{engine.source}: the model card's temperature must be > 0, got {self.temperature}")
        limbs = None if card.heatmap == "joints" else card.limbs
        self.rasterizer = None
        if hasattr(engine, "input_buffer"):
            # A GPU engine: the CUDA kernel writes the batch straight into the engine's input
            # tensor (None, with a logged notice, when CuPy/CUDA cannot run it).
            from posestream.engines.action_gpu import gpu_batch_rasterizer

            self.rasterizer = gpu_batch_rasterizer(engine)
        if self.rasterizer is None:
            self.rasterizer = Rasterizer(self.size, self.size, sigma=float(card.sigma), limbs=limbs)
        self.max_batch, self.max_wait_s = int(max_batch), float(max_wait_s)
        self._queue: queue.Queue[WindowJob | None] = queue.Queue(maxsize=int(queue_size))
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.metrics = metrics
        self.counts = {"windows": 0, "batches": 0, "dropped_full": 0, "replies_dropped": 0, "errors": 0,
                       "rejected_shape": 0, "joints_cleared": 0, "nonfinite_logits": 0}
        self.last_error: str | None = None

    # ------------------------------------------------------------------------------------------

    def start(self) -> "ActionBatcher":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="action-batcher", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float | None = 5.0) -> bool:
        """Stop after the batch in flight; windows still queued are dropped. True when the
        thread finished within ``timeout`` (or never ran); False, logged, when it is still
        running (a stuck engine call): its handle is kept, so :attr:`alive` still says so."""
        self._stop.set()
        try:
            self._queue.put_nowait(None)  # wake the thread
        except queue.Full:
            pass
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("action batcher: its thread did not finish within %s s", timeout)
            return False
        self._thread = None
        return True

    @property
    def alive(self) -> bool:
        """Whether the batcher's thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "ActionBatcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, job: WindowJob) -> bool:
        """Queue a window; False (and counted) when the queue is full, the batcher stopped, or
        the window has another joint count than the model's. A window of the wrong rank or
        length is a bug of the caller: ValueError."""
        expected = (self.clip_len,)
        if job.keypoint.ndim != 4 or job.keypoint.shape[1:2] != expected or job.keypoint.shape[-1] != 2:
            raise ValueError(f"{job.stream}: window keypoints must be [M, {self.clip_len}, V, 2], "
                             f"got {list(job.keypoint.shape)}")
        if job.keypoint.shape[2] != self.num_keypoints or job.score.shape != job.keypoint.shape[:3]:
            with self._lock:
                self.counts["rejected_shape"] += 1
                total = self.counts["rejected_shape"]
            self._count_metric("posestream_windows_rejected_total", "windows refused by the batcher",
                               stream=job.stream, reason="shape")
            if total == 1 or total % 100 == 0:
                log.warning("%s: refused a window of keypoints %s, scores %s (the model takes %d joints); "
                            "%d refused so far", job.stream, list(job.keypoint.shape), list(job.score.shape),
                            self.num_keypoints, total)
            return False
        if self._stop.is_set():
            return False
        try:
            self._queue.put_nowait(job)
            return True
        except queue.Full:
            with self._lock:
                self.counts["dropped_full"] += 1
            self._count_metric("posestream_frames_dropped_total", "windows dropped", stream=job.stream,
                               stage="batcher")
            return False

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counts, "queued": self._queue.qsize(), "max_batch": self.max_batch,
                    "max_wait_s": self.max_wait_s, "last_error": self.last_error}

    # ------------------------------------------------------------------------------------------

    def _collect(self) -> list[WindowJob]:
        first = self._queue.get()
        if first is None:
            return []
        batch = [first]
        deadline = first.t_submit + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if job is None:
                break
            batch.append(job)
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if not batch:
                continue
            try:
                self._classify(batch)
            except Exception as exc:  # a bad batch must not kill the stage: count it, go on
                with self._lock:
                    self.counts["errors"] += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("action batcher: a batch of %d windows failed", len(batch))

    def _classify(self, batch: list[WindowJob]) -> None:
        for job, result in self._classified(batch):
            self._reply(job, result)

    def classify(self, batch: list[WindowJob]) -> list[WindowResult]:
        """Rasterize and classify ``batch`` now, in the caller's thread (the batcher's own
        thread does this for the windows submitted to it; an offline replay calls it itself).
        Windows that cannot be classified (another joint count, non-finite logits) get no
        result, so the list may be shorter than ``batch``; each result names its window."""
        return [result for _, result in self._classified(batch)]

    def _classified(self, batch: list[WindowJob]) -> list[tuple[WindowJob, WindowResult]]:
        batch = [j for j in batch if self._fits(j)]
        if not batch:
            return []
        n = len(batch)
        m = max(j.keypoint.shape[0] for j in batch)
        v = self.num_keypoints
        kp = np.zeros((n, m, self.clip_len, v, 2), dtype=np.float32)
        sc = np.zeros((n, m, self.clip_len, v), dtype=np.float32)
        cleared = 0
        for i, j in enumerate(batch):  # fewer persons than the batch's widest: zeros draw nothing
            jk, js, bad = clean_window(j.keypoint, j.score)
            kp[i, : jk.shape[0]] = jk
            sc[i, : js.shape[0]] = js
            cleared += bad
        t0 = time.monotonic()
        volumes = self.rasterizer(kp, sc)
        t1 = time.monotonic()
        logits = np.asarray(self.engine.predict(volumes), dtype=np.float64)
        finite = np.isfinite(logits).all(axis=1)
        probs = softmax(np.where(finite[:, None], logits, 0.0) / self.temperature)
        t2 = time.monotonic()
        with self._lock:
            self.counts["windows"] += n
            self.counts["batches"] += 1
            self.counts["joints_cleared"] += cleared
            self.counts["nonfinite_logits"] += int((~finite).sum())
            nonfinite_total = self.counts["nonfinite_logits"]
        results = []
        for j, p, ok in zip(batch, probs, finite):
            if not ok:  # no label is better than a NaN one, which would stick in the smoothing
                self._count_metric("posestream_windows_rejected_total", "windows refused by the batcher",
                                   stream=j.stream, reason="nonfinite_logits")
                log.warning("%s: the action model gave non-finite logits for window %r (frame %d); "
                            "%d such windows so far", j.stream, j.key, j.frame_index, nonfinite_total)
                continue
            results.append((j, WindowResult(j.stream, j.key, j.frame_index, p, j.t_last_capture, j.t_submit, t2,
                                            n, t1 - t0, t2 - t1, j.context, j.read_offset)))
            if self.metrics is not None:
                self.metrics.latency("posestream_stage_latency_seconds", "per-stage latency",
                                     stream=j.stream, stage="rasterize").observe(t1 - t0)
                self.metrics.latency("posestream_stage_latency_seconds", "per-stage latency",
                                     stream=j.stream, stage="classify").observe(t2 - t1)
        return results

    def _fits(self, job: WindowJob) -> bool:
        """Whether ``job`` can ride in a batch (a caller of :meth:`classify` may not have
        gone through :meth:`submit`); a window that cannot is counted and left out."""
        k = job.keypoint
        if (k.ndim == 4 and k.shape[1] == self.clip_len and k.shape[2] == self.num_keypoints and k.shape[3] == 2
                and job.score.shape == k.shape[:3]):
            return True
        with self._lock:
            self.counts["rejected_shape"] += 1
        self._count_metric("posestream_windows_rejected_total", "windows refused by the batcher",
                           stream=job.stream, reason="shape")
        log.warning("%s: left a window of keypoints %s out of the batch (the model takes [M, %d, %d, 2])",
                    job.stream, list(k.shape), self.clip_len, self.num_keypoints)
        return False

    def _reply(self, job: WindowJob, result: WindowResult) -> None:
        while True:
            try:
                job.reply.put_nowait(result)
                return
            except queue.Full:
                try:  # the consumer is behind: its oldest result is the least useful one
                    job.reply.get_nowait()
                except queue.Empty:
                    pass
                with self._lock:
                    self.counts["replies_dropped"] += 1

    def _count_metric(self, name: str, help_text: str, **labels) -> None:
        if self.metrics is not None:
            self.metrics.counter(name, help_text, **labels).inc()
