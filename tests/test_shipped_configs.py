"""The shipped training configs render to exactly what they rendered before they were factored
into ``_base_`` files plus deltas: tests/data/rendered_configs.json holds every shipped config as
:func:`read_config_file` returns it (bases merged), written from the configs as they were.

A config meant to change is re-rendered on purpose with
``python tests/test_shipped_configs.py --write`` (posestream.train imported from this checkout)
and the JSON diff reviewed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from posestream.train.config import CONFIG_DIR, read_config_file, shipped_configs

SNAPSHOT = Path(__file__).parent / "data" / "rendered_configs.json"


def _jsonable(value):
    """JSON cannot tell a tuple from a list, and the configs hold both (``out_indices=(2, )``,
    ``step=[9, 11]``): a tuple is written as ``{"__tuple__": [...]}`` so that a tuple turned into a
    list, or the other way round, is a difference too."""
    if isinstance(value, tuple):
        return {"__tuple__": [_jsonable(v) for v in value]}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value), value
        return {k: _jsonable(v) for k, v in value.items()}
    assert value is None or isinstance(value, (str, int, float)), f"not a config value: {value!r}"
    return value


def render_shipped() -> dict:
    return {name: _jsonable(read_config_file(path)) for name, path in shipped_configs().items()}


def test_shipped_configs_render_as_the_snapshot():
    expected = json.loads(SNAPSHOT.read_text())
    rendered = render_shipped()
    assert sorted(rendered) == sorted(expected), "the set of shipped configs changed"
    for name in expected:
        # dict equality ignores key order (nothing reads a config's key order); values, types
        # (int vs float, tuple vs list) and nesting must match exactly.
        assert rendered[name] == expected[name], name


def test_snapshot_comparison_sees_a_changed_value_and_a_tuple_made_a_list():
    config = render_shipped()["ntu60_xsub_joint"]
    changed = json.loads(json.dumps(config))
    changed["data"]["train"]["times"] = 11
    assert changed != config
    as_list = json.loads(json.dumps(config))
    as_list["model"]["backbone"]["out_indices"] = [2]
    assert as_list != config


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_shipped_configs.py --write   (re-renders the snapshot)")
    here = (Path(__file__).resolve().parent.parent / "train" / "configs").resolve()
    if CONFIG_DIR.resolve() != here:  # an editable install of another checkout: its configs, not these
        sys.exit(f"posestream.train reads the configs in {CONFIG_DIR}, not {here}")
    SNAPSHOT.write_text(json.dumps(render_shipped(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
