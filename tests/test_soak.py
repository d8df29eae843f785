"""A short soak: the pipeline at full speed on looped real footage keeps its memory bounded.
(``benchmarks/soak.py --seconds 600`` is the long version.)"""
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


def test_memory_stays_flat_at_full_speed():
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing: run tests/get_media.sh first")
    report = _soak_module().soak(str(VTEST), seconds=40, streams=1, every=2.0, progress=False)
    assert report["frames"] >= 100  # it really ran at speed (vtest: 795 frames, looped)
    # A frame is 1.3 MB: anything that kept frames (an unbounded queue) would grow by
    # hundreds of MB over these 20 s; the bounded pipeline stays within allocator noise.
    assert report["second_half_growth_mb"] < 40, report["samples"]
