"""Serving needs no torch: ``pip install posestream`` (the runtime, no torch) runs the shipped
ONNX model end to end, and only ``posestream[train]`` adds torch.

Each test runs a fresh interpreter (torch is already loaded in this one) in which, for most,
``import torch`` fails exactly as it does where torch is not installed; the child checks that
first, so a blocker that stopped working fails the test instead of passing it."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from posestream.engines.action import card_from_metadata, read_onnx_metadata
from posestream.realtime.pipeline import default_action_model

VTEST = Path(__file__).resolve().parent / ".media" / "vtest.avi"

#: Prepended to a child's code: from here on, importing torch fails as on a machine without it.
NO_TORCH = '''
import sys
assert "torch" not in sys.modules, "torch was loaded before the blocker"

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
try:
    import torch
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the torch blocker does not work")
'''


def _child(code: str, *, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this one's environment (so the same posestream)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def _loaded(prefixes: str) -> str:
    """Child code: print, as JSON, the loaded modules that start with any of ``prefixes``."""
    return (f"import json, sys; print(json.dumps(sorted(m for m in sys.modules "
            f"if m.split('.')[0] == 'torch' or m.startswith({prefixes!r}))))")


def test_the_shipped_pipeline_runs_on_real_footage_without_torch(tmp_path):
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing: run tests/get_media.sh first")
    events = tmp_path / "events.jsonl"
    code = NO_TORCH + f'''
from posestream.cli import main
rc = main(["run", {str(VTEST)!r}, "--max-frames", "40", "--pace", "fast", "--events", {str(events)!r}])
print("rc", rc, file=sys.stderr)
''' + _loaded(("posestream.train.checkpoints", "posestream.train.models"))
    result = _child(code, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rc 0" in result.stderr
    # neither torch nor the torch side of train (checkpoints, the model zoo) was loaded
    assert json.loads(result.stdout.splitlines()[-1]) == []
    # the run's summary: the labels each track got, e.g. "vtest track 3: walking x2, running x1"
    labels = re.findall(r"^vtest track \S+: (.+)$", result.stderr, flags=re.M)
    assert labels, result.stderr[-3000:]
    classes = set(card_from_metadata(read_onnx_metadata(default_action_model())).class_names)
    named = {item.rsplit(" x", 1)[0] for line in labels for item in line.split(", ")}
    assert named and named <= classes, (named, classes)
    assert "40 frames processed" in result.stderr


def test_every_serving_module_imports_without_torch_or_train():
    code = NO_TORCH + '''
import importlib, pkgutil
import posestream, posestream.engines, posestream.realtime
for package in (posestream, posestream.engines, posestream.realtime):
    for info in pkgutil.iter_modules(package.__path__):
        # (__main__ runs the CLI; an installed posestream also lists its subpackages here)
        if info.name not in ("__main__", "engines", "realtime", "train"):
            importlib.import_module(f"{package.__name__}.{info.name}")
''' + _loaded(("posestream.train",))
    result = _child(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_engines_read_an_onnx_card_without_importing_train():
    """No cycle: train.export imports the engines' metadata helpers, and the engines do not
    import train back (the ONNX engine builds its card from engines.card)."""
    code = f'''
from posestream.engines.action import OnnxEngine
engine = OnnxEngine({default_action_model()!r})
assert engine.card.arch == "x3d_s", engine.card
''' + _loaded(("posestream.train",))
    result = _child(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_train_export_imports_on_its_own():
    pytest.importorskip("torch", reason="export is part of posestream[train]")
    result = _child("import posestream.train.export")
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("args", [
    ["export", "MODEL", "--out", "OUT"],
    ["train", "synthetic_x3d_s"],
    ["run", "VIDEO", "--model", "MODEL", "--max-frames", "1"],
])
def test_torch_commands_without_torch_name_the_extra(args, tmp_path):
    if "VIDEO" in args and not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing: run tests/get_media.sh first")
    shipped = Path(default_action_model()).with_suffix(".pth")  # the shipped model's checkpoint
    args = [{"MODEL": str(shipped), "OUT": str(tmp_path / "m.onnx"), "VIDEO": str(VTEST)}.get(a, a) for a in args]
    result = _child(NO_TORCH + f"from posestream.cli import main; sys.exit(main({args!r}))")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"posestream {args[0]}: error: ")
    assert 'pip install torch==2.13.0 "posestream[train]"' in lines[0]
    assert not (tmp_path / "m.onnx").exists()
