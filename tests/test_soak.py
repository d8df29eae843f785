"""A short soak: the pipeline at full speed on looped real footage keeps its memory, open files
and threads flat. (``benchmarks/soak.py --seconds 3600`` is the long version.)"""
import importlib.util
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
VTEST = HERE / ".media" / "vtest.avi"


def _soak_module():
    spec = importlib.util.spec_from_file_location("soak", HERE.parent / "benchmarks" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_memory_files_and_threads_stay_flat_at_full_speed():
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing: run tests/get_media.sh first")
    soak = _soak_module()
    report = soak.soak(str(VTEST), seconds=40, streams=1, every=2.0, progress=False)
    assert report["frames"] >= 100  # it really ran at speed (vtest: 795 frames, looped)
    half = report["second_half"]
    samples = report["samples"]
    # A frame is 1.3 MB: anything that kept frames (an unbounded queue) would grow by
    # hundreds of MB over these 20 s; the bounded pipeline stays within allocator noise.
    assert half["rss_mb"]["growth"] < 40, samples
    # Every thread and descriptor is made at start (reader, stream threads, batcher, events,
    # ONNX Runtime's pools, the video file): none may appear while it runs. The file reader
    # reopens vtest.avi at each loop, so a sample may catch the moment with one more open.
    assert half["fds"]["max"] - half["fds"]["first"] <= 1 and half["fds"]["growth"] <= 0, samples
    assert half["threads"]["max"] == half["threads"]["min"], samples
    # and stop() ended every thread it started (native pools of ONNX Runtime and OpenCV live
    # as long as the process) and closed the video
    assert report["not_finished"] == []
    assert report["after_stop"]["python_threads"] <= report["before_start"]["python_threads"], report["after_stop"]
    assert not any("vtest" in target for target in report["fds_opened_and_kept"]), report["fds_opened_and_kept"]
    assert all(h == "ok" for h in report["health"])
    text = soak.summary(report)
    assert "resident memory" in text and "open file descriptors" in text and "threads" in text
