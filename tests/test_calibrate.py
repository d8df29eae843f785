"""Temperature scaling, ECE, the confidence threshold, and the runtime's use of them."""
from __future__ import annotations

import dataclasses
import queue

import numpy as np
import pytest

from posestream.train.calibrate import (confidence_threshold, expected_calibration_error, fit_temperature, nll,
                                        softmax)


def calibrated_sample(n: int = 4000, classes: int = 6, seed: int = 0):
    """Logits whose softmax is the true label distribution (labels drawn from it)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, (n, classes))
    p = softmax(z)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return z, labels


def test_fit_temperature_recovers_the_scale_of_overconfident_logits():
    z, labels = calibrated_sample()
    assert fit_temperature(z, labels) == pytest.approx(1.0, abs=0.08)
    assert fit_temperature(3.0 * z, labels) == pytest.approx(3.0, rel=0.08)   # over-confident by 3x
    assert fit_temperature(0.5 * z, labels) == pytest.approx(0.5, rel=0.08)   # under-confident
    t = fit_temperature(3.0 * z, labels)
    assert nll(3.0 * z, labels, t) < nll(3.0 * z, labels)


def test_ece_is_small_when_calibrated_and_large_when_not():
    z, labels = calibrated_sample()
    assert expected_calibration_error(softmax(z), labels) < 0.03
    assert expected_calibration_error(softmax(4.0 * z), labels) > 0.1
    # temperature scaling brings it back
    assert expected_calibration_error(softmax(4.0 * z, fit_temperature(4.0 * z, labels)), labels) < 0.03


def test_confidence_threshold_reaches_the_target_precision():
    z, labels = calibrated_sample(seed=1)
    p = softmax(z)
    c = confidence_threshold(p, labels, 0.9)
    shown = p.max(1) >= c
    assert 0 < c < 1 and shown.any() and not shown.all()
    assert (p.argmax(1) == labels)[shown].mean() >= 0.9
    right = np.eye(6)[labels]  # always right: no threshold needed
    assert confidence_threshold(right, labels, 0.9) == 0.0


def test_the_runtime_divides_by_the_cards_temperature_and_takes_its_threshold():
    from posestream.realtime.batcher import ActionBatcher, WindowJob
    from posestream.realtime.pipeline import DEFAULT_MIN_LABEL_SCORE, default_action_model, label_threshold
    from posestream.engines.action import make_engine

    engine = make_engine("onnx", default_action_model())
    assert label_threshold(None, engine) == engine.card.extra.get("min_confidence", DEFAULT_MIN_LABEL_SCORE)
    assert label_threshold(0.42, engine) == 0.42
    rng = np.random.default_rng(0)
    clip_len, size = engine.card.clip_len, engine.card.size
    kp = rng.uniform(5, size - 5, (1, clip_len, 17, 2)).astype(np.float32)
    sc = rng.uniform(0.5, 1.0, (1, clip_len, 17)).astype(np.float32)
    job = WindowJob("s", 1, kp, sc, 0.0, 0, queue.Queue())
    plain = ActionBatcher(engine).classify([job])[0].probs
    engine.card = dataclasses.replace(engine.card, extra={**engine.card.extra, "temperature": 2.5, "min_confidence": 0.7})
    hot = ActionBatcher(engine)
    warm = hot.classify([job])[0].probs
    logits = engine.predict(hot.rasterizer(kp[None], sc[None]))
    np.testing.assert_allclose(warm, softmax(logits, 2.5)[0], rtol=1e-5, atol=1e-6)
    assert warm.max() < plain.max()  # a higher temperature is less sure of its top class
    assert label_threshold(None, engine) == 0.7
