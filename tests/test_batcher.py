"""The shared batcher: windows from several streams, one rasterize + classify per batch."""
import queue
import time

import numpy as np
import pytest

from posestream.engines.action import TorchEngine
from posestream.engines.raster import rasterize_batch
from posestream.realtime.batcher import ActionBatcher, WindowJob, softmax
from posestream.train.checkpoints import ModelCard
from posestream.train.models import build_model

CLIP_LEN, SIZE = 8, 32


@pytest.fixture(scope="module")
def engine(one_torch_thread):
    import torch

    torch.manual_seed(0)
    card = ModelCard(arch="x3d_s", num_classes=5, clip_len=CLIP_LEN, size=SIZE,
                     class_names=["a", "b", "c", "d", "e"])
    model = build_model("x3d_s", num_classes=5, in_channels=17).eval()
    # An untrained head gives logits ~1e-4 that barely differ between windows: its
    # probabilities would all be 0.2 to within 1e-5, so a comparison could not tell one
    # window's result from another's. Scaled up, the logits spread ~0.1-0.5 across windows.
    with torch.no_grad():
        model.head.fc.weight.mul_(1e4)
    return TorchEngine(model, card, threads=1)


def _window(rng, persons=1):
    kp = rng.uniform(2, SIZE - 2, size=(persons, CLIP_LEN, 17, 2)).astype(np.float32)
    sc = rng.uniform(0.3, 1.0, size=(persons, CLIP_LEN, 17)).astype(np.float32)
    return kp, sc


def test_batched_results_match_one_by_one(engine):
    rng = np.random.default_rng(0)
    windows = [_window(rng, persons=1 + i % 2) for i in range(6)]
    replies = queue.Queue()
    with ActionBatcher(engine, max_batch=8, max_wait_s=0.2) as batcher:
        for i, (kp, sc) in enumerate(windows):
            assert batcher.submit(WindowJob("s0" if i % 2 else "s1", i, kp, sc, time.monotonic(), i, replies,
                                            context=("ctx", i)))
        results = [replies.get(timeout=30) for _ in windows]
    assert sorted(r.key for r in results) == list(range(6))
    assert max(r.batch_size for r in results) > 1  # they really rode together
    one_by_one = [softmax(engine.predict(rasterize_batch(kp[None], sc[None], SIZE, SIZE, sigma=0.6)))[0]
                  for kp, sc in windows]
    atol = 1e-5
    # the check can see a result handed to the wrong window: any two windows differ by far more
    gaps = [np.abs(a - b).max() for i, a in enumerate(one_by_one) for b in one_by_one[i + 1:]]
    assert min(gaps) > 100 * atol
    for r in results:
        # batch-norm in eval mode: a window's result does not depend on its batch mates
        np.testing.assert_allclose(r.probs, one_by_one[r.key], atol=atol)
        assert r.context == ("ctx", r.key)
        assert r.stream == ("s0" if r.key % 2 else "s1")
        assert r.latency_s >= r.classify_s > 0


def test_a_lone_window_waits_only_until_the_deadline(engine):
    rng = np.random.default_rng(1)
    replies = queue.Queue()
    with ActionBatcher(engine, max_batch=8, max_wait_s=0.05) as batcher:
        batcher.engine.warmup(1)
        kp, sc = _window(rng)
        t0 = time.monotonic()
        batcher.submit(WindowJob("s", 0, kp, sc, t0, 0, replies))
        r = replies.get(timeout=10)
    assert r.batch_size == 1
    # the deadline (50 ms) plus one small engine call; generous for a loaded 2-core CI box
    assert r.t_done - t0 < 0.05 + 2.0
    assert r.t_done - r.t_submit >= 0.05 - 1e-3


def test_a_full_queue_drops_and_counts(engine):
    rng = np.random.default_rng(2)
    replies = queue.Queue()
    batcher = ActionBatcher(engine, max_batch=2, max_wait_s=0.0, queue_size=3)  # not started: nothing drains
    kp, sc = _window(rng)
    accepted = [batcher.submit(WindowJob("s", i, kp, sc, time.monotonic(), i, replies)) for i in range(5)]
    assert accepted == [True, True, True, False, False]
    assert batcher.stats()["dropped_full"] == 2
    batcher.start()
    got = [replies.get(timeout=30).key for _ in range(3)]
    batcher.close()
    assert sorted(got) == [0, 1, 2]


def test_a_stalled_consumer_loses_its_oldest_results_not_the_batcher(engine):
    rng = np.random.default_rng(3)
    replies = queue.Queue(maxsize=2)  # nobody reads it
    with ActionBatcher(engine, max_batch=1, max_wait_s=0.0) as batcher:
        kp, sc = _window(rng)
        for i in range(5):
            batcher.submit(WindowJob("s", i, kp, sc, time.monotonic(), i, replies))
        deadline = time.monotonic() + 30
        while batcher.stats()["windows"] < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.stats()["windows"] == 5
    assert batcher.stats()["replies_dropped"] == 3
    assert [replies.get_nowait().key for _ in range(2)] == [3, 4]


def test_wrong_window_shape_is_a_clear_error(engine):
    batcher = ActionBatcher(engine)
    with pytest.raises(ValueError, match=r"\[M, 8, V, 2\]"):
        batcher.submit(WindowJob("cam0", 1, np.zeros((1, 5, 17, 2), np.float32), np.zeros((1, 5, 17), np.float32),
                                 0.0, 0, queue.Queue()))
