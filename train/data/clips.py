"""Skeleton clip files: the PYSKL / MMAction2 annotation pickle format, read and written safely.

A *dataset file* is a pickle of ``{"split": {name: [frame_dir, ...]}, "annotations": [clip, ...]}``;
a *clip file* is a pickle of one clip. A clip is a dict with

=================  ===========================================================================
``keypoint``       real floating array ``[M, T, V, 2]``: (x, y) in image pixels, M >= 1 people,
                   T >= 1 frames, V >= 1 joints (COCO-17 in practice, but V is not fixed here)
``keypoint_score`` real floating array ``[M, T, V]`` with values in [0, 1]
``img_shape``      (h, w): two positive ints
``total_frames``   int, equal to T
``label``          int >= 0 (and < ``num_classes`` when that is given); bool is refused
``frame_dir``      str, unique within a dataset
=================  ===========================================================================

Any other field (``original_shape``, ``img_shape`` given as a list, ...) is kept untouched.

Validation is strict and complete: a file is checked from end to end before anything is
returned, so a caller never sees a half-loaded dataset. Every problem is a
:class:`ClipFormatError` whose message is one line naming the file, the clip (frame_dir and
index) and the field, e.g.
``data.pkl: clip 'S001C001P001R001A001' (#3): keypoint_score: 2 values outside [0, 1] (max 1.7)``.
NaN or infinite coordinates/scores are rejected, not silently zeroed: PYSKL's published
pickles are clean, so a non-finite value means the file was produced by a broken tool.

SECURITY — pickle runs code. Unpickling a file can execute arbitrary commands chosen by
whoever wrote it. By default this module therefore unpickles with a restricted unpickler that
only builds plain Python containers, numpy arrays/scalars/dtypes and ``OrderedDict``; any
other global is refused with a :class:`ClipFormatError` naming it. Pass ``trusted=True``
(CLI: ``--trust-pickle``) only for files from a source you trust as much as your own code:
it uses the normal unpickler, which will run whatever the file asks for. The restriction
stops code execution, not resource exhaustion: a crafted file can still ask for a huge array.

Files are written with pickle protocol 4 (readable by Python 3.4+, so by PYSKL's Python
3.7) and with numpy's 1.x global names (``numpy.core.multiarray._reconstruct``), which both
numpy 1.x and 2.x resolve; numpy 2's own names (``numpy._core...``) cannot be imported by the
numpy 1.x that PYSKL environments run. Writes are atomic: a temp file in the destination's
directory, fsync, then ``os.replace``; on any error the destination is untouched and the temp
file is removed.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib
import os
import pickle
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from posestream.files import atomic_write

__all__ = [
    "ClipFormatError",
    "UnknownSplitError",
    "SkeletonDataset",
    "REQUIRED_CLIP_KEYS",
    "PICKLE_PROTOCOL",
    "load_dataset",
    "save_dataset",
    "load_clip",
    "load_clips",
    "save_clip",
    "validate_clip",
    "validate_dataset",
]

StrPath = Union[str, os.PathLike]

#: Keys every clip dict must have.
REQUIRED_CLIP_KEYS = (
    "keypoint", "keypoint_score", "img_shape", "total_frames", "label", "frame_dir",
)
#: Keys a dataset dict must have.
REQUIRED_DATASET_KEYS = ("split", "annotations")
#: Protocol used when writing: 4 is readable by every Python 3.4+ (PYSKL runs 3.7+).
PICKLE_PROTOCOL = 4
#: How many missing frame_dirs a split error names before summarising the rest.
_MAX_NAMED_MISSING = 3

_MEMORY = "<memory>"


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ClipFormatError(ValueError):
    """A skeleton clip / dataset file (or in-memory object) is not valid.

    ``str(error)`` is always a single line. ``source``, ``frame_dir``, ``index`` and ``field``
    hold the parts of the message that are known (None otherwise).
    """

    def __init__(self, message: str, *, source: str | None = None, frame_dir: str | None = None,
                 index: int | None = None, field: str | None = None):
        message = re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip()
        super().__init__(message)
        self.source = source
        self.frame_dir = frame_dir
        self.index = index
        self.field = field

    def __str__(self) -> str:  # keep ValueError's plain message even in KeyError subclasses
        return str(self.args[0]) if self.args else ""


class UnknownSplitError(ClipFormatError, KeyError):
    """:meth:`SkeletonDataset.clips` was asked for a split the dataset does not have.

    It is both a :class:`ClipFormatError` and a :class:`KeyError`.
    """


_short_repr = reprlib.Repr()
_short_repr.maxstring = 60
_short_repr.maxother = 60
_short_repr.maxlist = _short_repr.maxtuple = 4


def _r(value: Any) -> str:
    """A short one-line repr of ``value`` for error messages."""
    return _short_repr.repr(value)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _clip_error(source: str, problem: str, *, frame_dir: Any = None, index: int | None = None,
                field: str | None = None) -> ClipFormatError:
    """Build ``"<source>: clip '<frame_dir>' (#<index>): <field>: <problem>"``."""
    fd = frame_dir if isinstance(frame_dir, str) else None
    if fd is not None and index is not None:
        who = f"clip {fd!r} (#{index})"
    elif fd is not None:
        who = f"clip {fd!r}"
    elif index is not None:
        who = f"clip #{index}"
    else:
        who = "clip"
    where = f"{who}: {field}" if field else who
    return ClipFormatError(f"{source}: {where}: {problem}", source=source, frame_dir=fd,
                           index=index, field=field)


def _file_error(source: str, problem: str, *, field: str | None = None) -> ClipFormatError:
    prefix = f"{source}: {field}: " if field else f"{source}: "
    return ClipFormatError(prefix + problem, source=source, field=field)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    """A Python or numpy integer, but not a bool (``True`` is not a label)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_num_classes(num_classes: int | None) -> None:
    if num_classes is not None and (not _is_int(num_classes) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int or None, got {_r(num_classes)}")


def _check_float_array(value: Any, name: str, err) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise err(f"expected a numpy float array, got {_type_name(value)}", field=name)
    if value.dtype.kind != "f":
        raise err(f"dtype {value.dtype} is not a real floating type (expected float16/32/64)",
                  field=name)
    return value


def _check_finite(arr: np.ndarray, name: str, axes: tuple[str, ...], err) -> None:
    finite = np.isfinite(arr)
    if finite.all():
        return
    bad = np.argwhere(~finite)
    first = ", ".join(f"{a} {int(i)}" for a, i in zip(axes, bad[0]))
    raise err(f"{_count(len(bad), 'non-finite value')} (NaN/inf), first at {first}: "
              f"{arr[tuple(bad[0])]}", field=name)


def validate_clip(clip: Any, source: str = _MEMORY, index: int | None = None,
                  num_classes: int | None = None) -> None:
    """Check one clip dict; raise :class:`ClipFormatError` on the first problem found.

    ``source`` (a file name) and ``index`` (the clip's position in ``annotations``) only
    shape the error message. Labels are checked against ``num_classes`` when it is given.
    NaN/inf coordinates or scores are errors (never silently zeroed).
    """
    _check_num_classes(num_classes)
    source = os.fspath(source) if isinstance(source, os.PathLike) else str(source)

    if not isinstance(clip, Mapping):
        raise _clip_error(source, f"expected a dict, got {_type_name(clip)}", index=index)

    frame_dir = clip.get("frame_dir")

    def err(problem: str, field: str | None = None) -> ClipFormatError:
        return _clip_error(source, problem, frame_dir=frame_dir, index=index, field=field)

    missing = [k for k in REQUIRED_CLIP_KEYS if k not in clip]
    if missing:
        raise err("missing required keys: " + ", ".join(missing))

    if not isinstance(frame_dir, str) or not frame_dir:
        raise err(f"expected a non-empty str, got {_r(frame_dir)}", field="frame_dir")

    # keypoint [M, T, V, 2]
    kp = _check_float_array(clip["keypoint"], "keypoint", err)
    if kp.ndim != 4:
        raise err(f"expected 4 dims [M, T, V, 2], got shape {kp.shape}", field="keypoint")
    m, t, v, c = kp.shape
    if c != 2:
        hint = " (3D keypoints are not supported)" if c == 3 else ""
        raise err(f"last dim must be 2 (x, y), got shape {kp.shape}{hint}", field="keypoint")
    if m == 0 or t == 0 or v == 0:
        raise err(f"empty clip: shape {kp.shape} needs M >= 1 people, T >= 1 frames, "
                  "V >= 1 joints", field="keypoint")

    # keypoint_score [M, T, V]
    score = _check_float_array(clip["keypoint_score"], "keypoint_score", err)
    if score.shape != kp.shape[:-1]:
        raise err(f"shape {score.shape} does not match keypoint shape {kp.shape[:-1]} [M, T, V]",
                  field="keypoint_score")

    _check_finite(kp, "keypoint", ("person", "frame", "joint", "coord"), err)
    _check_finite(score, "keypoint_score", ("person", "frame", "joint"), err)
    outside = (score < 0) | (score > 1)
    n_out = int(np.count_nonzero(outside))
    if n_out:
        lo, hi = float(score.min()), float(score.max())
        extreme = f"max {hi:g}" if hi > 1 else f"min {lo:g}"
        if hi > 1 and lo < 0:
            extreme = f"min {lo:g}, max {hi:g}"
        raise err(f"{_count(n_out, 'value')} outside [0, 1] ({extreme})", field="keypoint_score")

    # img_shape (h, w)
    img_shape = clip["img_shape"]
    if isinstance(img_shape, np.ndarray):
        ok = img_shape.ndim == 1 and img_shape.dtype.kind in "iu"
        hw = tuple(img_shape.tolist()) if ok else ()
    else:
        ok = isinstance(img_shape, (tuple, list))
        hw = tuple(img_shape) if ok else ()
    if not ok or len(hw) != 2 or not all(_is_int(x) and x > 0 for x in hw):
        raise err(f"expected (h, w) as two positive ints, got {_r(img_shape)}", field="img_shape")

    # total_frames == T
    total = clip["total_frames"]
    if not _is_int(total):
        raise err(f"expected an int, got {_type_name(total)} {_r(total)}", field="total_frames")
    if total != t:
        raise err(f"{int(total)} does not match keypoint's T = {t} frames", field="total_frames")

    # label
    label = clip["label"]
    if not _is_int(label):
        raise err(f"expected an int, got {_type_name(label)} {_r(label)}", field="label")
    if label < 0:
        raise err(f"{int(label)} is negative", field="label")
    if num_classes is not None and label >= num_classes:
        raise err(f"{int(label)} is out of range for num_classes={int(num_classes)}", field="label")


def _as_dataset_parts(data: Any, source: str) -> tuple[Any, Any]:
    """(split, annotations) of a SkeletonDataset or a dataset dict, with top-level checks."""
    if isinstance(data, SkeletonDataset):
        return data.split, data.annotations
    if not isinstance(data, Mapping):
        hint = ""
        if isinstance(data, list):
            hint = (f" (a list of {_count(len(data), 'item')}: an old per-split MMAction2 "
                    "annotation list? wrap it as {'split': {...}, 'annotations': [...]})")
        raise _file_error(source, f"top-level object is {_type_name(data)}, expected a dict with "
                                  f"keys 'split' and 'annotations'{hint}")
    missing = [k for k in REQUIRED_DATASET_KEYS if k not in data]
    if missing:
        hint = ""
        if "keypoint" in data and "frame_dir" in data:
            hint = " (this looks like a single clip; use load_clip)"
        raise _file_error(source, "missing required top-level keys: " + ", ".join(missing) + hint)
    return data["split"], data["annotations"]


def validate_dataset(data: Any, source: str = _MEMORY, num_classes: int | None = None) -> None:
    """Check a dataset dict (or :class:`SkeletonDataset`) completely.

    Checks the top-level structure, every clip (see :func:`validate_clip`), frame_dir
    uniqueness, that the dataset is not empty and that every split names only known clips.
    Raises :class:`ClipFormatError` on the first problem found.
    """
    _check_num_classes(num_classes)
    source = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
    split, annotations = _as_dataset_parts(data, source)

    if not isinstance(annotations, list):
        raise _file_error(source, f"expected a list of clip dicts, got {_type_name(annotations)}",
                          field="annotations")
    if not annotations:
        raise _file_error(source, "empty dataset: no clips", field="annotations")
    if not isinstance(split, Mapping):
        raise _file_error(source, f"expected a dict of split name -> list of frame_dir, "
                                  f"got {_type_name(split)}", field="split")

    first_index: dict[str, int] = {}
    for i, clip in enumerate(annotations):
        validate_clip(clip, source, index=i, num_classes=num_classes)
        fd = clip["frame_dir"]
        if fd in first_index:
            raise _clip_error(source, f"duplicate of clip #{first_index[fd]}", frame_dir=fd,
                              index=i, field="frame_dir")
        first_index[fd] = i

    for name, members in split.items():
        if not isinstance(name, str):
            raise _file_error(source, f"split name {name!r} is {_type_name(name)}, expected str",
                              field="split")
        where = f"split {name!r}"
        if not isinstance(members, (list, tuple)):
            raise _file_error(source, f"expected a list of frame_dir, got {_type_name(members)}",
                              field=where)
        unknown = []
        for j, fd in enumerate(members):
            if not isinstance(fd, str):
                raise _file_error(source, f"item #{j} is {_type_name(fd)} {_r(fd)}, expected a "
                                          "frame_dir str", field=where)
            if fd not in first_index:
                unknown.append(fd)
        if unknown:
            named = ", ".join(repr(fd) for fd in unknown[:_MAX_NAMED_MISSING])
            more = len(unknown) - _MAX_NAMED_MISSING
            rest = f" (and {more} more)" if more > 0 else ""
            raise _file_error(source, f"{_count(len(unknown), 'frame_dir')} not in annotations: "
                                      f"{named}{rest}", field=where)


# --------------------------------------------------------------------------------------------
# The dataset object
# --------------------------------------------------------------------------------------------


@dataclass
class SkeletonDataset:
    """A loaded skeleton dataset: split name -> frame_dirs, and the clip dicts.

    ``source`` (the file it came from) only labels error messages.
    """

    split: dict[str, list[str]]
    annotations: list[dict]
    source: str = dataclasses.field(default=_MEMORY, compare=False, repr=False)

    def clips(self, split_name: str) -> list[dict]:
        """The clip dicts of ``split_name``, in the split's order (the same objects, not copies).

        An unknown split raises :class:`UnknownSplitError` (a ClipFormatError and a KeyError).
        """
        if split_name not in self.split:
            known = ", ".join(repr(s) for s in self.split) or "none"
            raise UnknownSplitError(f"{self.source}: split: unknown split {split_name!r}; "
                                    f"known splits: {known}", source=self.source, field="split")
        by_dir = {clip["frame_dir"]: clip for clip in self.annotations}
        try:
            return [by_dir[fd] for fd in self.split[split_name]]
        except KeyError as exc:  # only if the object was edited after validation
            raise _file_error(self.source, f"frame_dir {exc.args[0]!r} not in annotations",
                              field=f"split {split_name!r}") from None

    @property
    def num_classes(self) -> int:
        """``max(label) + 1`` over all clips (0 for an empty dataset)."""
        return max((int(c["label"]) for c in self.annotations), default=-1) + 1

    def to_dict(self) -> dict:
        """The plain ``{"split": ..., "annotations": ...}`` dict that is pickled."""
        return {"split": self.split, "annotations": self.annotations}


# --------------------------------------------------------------------------------------------
# Reading: restricted unpickler
# --------------------------------------------------------------------------------------------


def _np_attr(modules: tuple[str, ...], name: str):
    """Resolve ``name`` from the first importable module (numpy 2 name first, then numpy 1)."""
    for mod in modules:
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    return None


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode`` that only does what protocol 0-2 pickles need.

    Python 3 writes ``bytes`` (numpy array data included) into protocol <= 2 pickles as
    ``_codecs.encode(text, "latin1")``; nothing else is allowed through.
    """
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed with latin1, got {_r(encoding)}")
    return text.encode("latin1")


def _build_allowed() -> dict[tuple[str, str], Any]:
    core2, core1 = "numpy._core", "numpy.core"
    reconstruct = _np_attr((f"{core2}.multiarray", f"{core1}.multiarray"), "_reconstruct")
    scalar = _np_attr((f"{core2}.multiarray", f"{core1}.multiarray"), "scalar")
    frombuffer = _np_attr((f"{core2}.numeric", f"{core1}.numeric"), "_frombuffer")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in (core2, core1):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    for builtins_name in ("builtins", "__builtin__"):  # Python 2 pickles say __builtin__
        for cls in (bytes, bytearray, set, frozenset):
            allowed[(builtins_name, cls.__name__)] = cls
    return {k: v for k, v in allowed.items() if v is not None}


_ALLOWED_GLOBALS = _build_allowed()


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only builds containers, numpy arrays/scalars/dtypes and OrderedDict."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")  # latin1: numpy arrays in Python 2 pickles
        self._source = source

    def find_class(self, module: str, name: str):
        obj = _ALLOWED_GLOBALS.get((module, name))
        if obj is None and not all(p.isidentifier() for p in f"{module}.{name}".split(".")):
            # text that happens to start with the GLOBAL opcode 'c' (e.g. a CSV file)
            raise pickle.UnpicklingError(f"invalid global name {module!r}, {name!r}")
        if obj is None:
            raise _file_error(self._source, f"refused to unpickle global '{module}.{name}': "
                              "skeleton files need only numpy arrays and plain containers; pass "
                              "trusted=True (CLI: --trust-pickle) only for files from a trusted "
                              "source, since unpickling can run arbitrary code")
        return obj


_MAGIC_HINTS = (
    (b"\x1f\x8b", "a gzip file"),
    (b"PK\x03\x04", "a zip / .npz file"),
    (b"\x93NUMPY", "a .npy file"),
    (b"\x89HDF", "an HDF5 file"),
    (b"{", "JSON text"),
    (b"[", "JSON text"),
)


def _sniff(head: bytes) -> str:
    for magic, what in _MAGIC_HINTS:
        if head.startswith(magic):
            return f"; it looks like {what}"
    return ""


def _unpickle(path: StrPath, trusted: bool) -> Any:
    """Read one pickle from ``path``; every failure becomes a one-line ClipFormatError."""
    source = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise _file_error(source, f"cannot open: {exc.strerror or exc}") from exc
    head = b""
    with f:
        size = 0
        try:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise _file_error(source, "empty file (0 bytes), not a pickle")
            head = f.read(8)
            f.seek(0)
            if trusted:
                data = pickle.Unpickler(f, encoding="latin1").load()
            else:
                data = _SafeUnpickler(f, source).load()
            trailing = f.read(1)
        except ClipFormatError:
            raise
        except EOFError as exc:
            raise _file_error(source, "truncated pickle (unexpected end of file)") from exc
        except pickle.UnpicklingError as exc:
            msg = str(exc)
            if "truncated" in msg:
                raise _file_error(source, f"truncated pickle ({msg})") from exc
            raise _file_error(source, f"not a valid pickle ({msg}){_sniff(head)}") from exc
        except MemoryError as exc:
            raise _file_error(source, f"out of memory while unpickling a {size}-byte file") from exc
        except OSError as exc:
            raise _file_error(source, f"cannot read: {exc.strerror or exc}") from exc
        except Exception as exc:  # corrupt opcodes, missing modules under trusted=True, ...
            raise _file_error(source, f"cannot unpickle ({type(exc).__name__}: {exc})"
                                      f"{_sniff(head)}") from exc
    if trailing:
        raise _file_error(source, "unexpected data after the end of the pickle "
                                  "(concatenated or corrupted file)")
    return data


def load_dataset(path: StrPath, num_classes: int | None = None,
                 trusted: bool = False) -> SkeletonDataset:
    """Load and fully validate a dataset pickle (see the module docstring for the format).

    ``trusted=False`` (default) refuses any pickle global besides numpy arrays and plain
    containers; ``trusted=True`` uses the normal unpickler, which can run arbitrary code from
    the file. Raises :class:`ClipFormatError` for every problem; nothing is half-loaded.
    """
    _check_num_classes(num_classes)
    source = os.fspath(path)
    data = _unpickle(path, trusted)
    validate_dataset(data, source, num_classes=num_classes)
    split = {name: list(members) for name, members in data["split"].items()}
    return SkeletonDataset(split=split, annotations=data["annotations"], source=source)


def load_clip(path: StrPath, num_classes: int | None = None, trusted: bool = False) -> dict:
    """Load and validate a single-clip pickle; same safety rules as :func:`load_dataset`."""
    _check_num_classes(num_classes)
    source = os.fspath(path)
    data = _unpickle(path, trusted)
    if isinstance(data, Mapping) and "annotations" in data and "keypoint" not in data:
        raise _file_error(source, "this is a dataset file (has 'annotations'), not a single "
                                  "clip; use load_dataset")
    if not isinstance(data, Mapping):
        raise _file_error(source, f"top-level object is {_type_name(data)}, expected a clip dict")
    validate_clip(data, source, num_classes=num_classes)
    return data


def load_clips(path: StrPath, trusted: bool = False, split: str | None = None) -> list[dict]:
    """The clips of either kind of file: all clips of a dataset file (or those of ``split``),
    or the one clip of a clip file. Same safety and validation rules as the loaders above."""
    source = os.fspath(path)
    data = _unpickle(path, trusted)
    if isinstance(data, Mapping) and "keypoint" not in data and "annotations" in data:
        validate_dataset(data, source)
        dataset = SkeletonDataset(split={k: list(v) for k, v in data["split"].items()},
                                  annotations=data["annotations"], source=source)
        return dataset.annotations if split is None else dataset.clips(split)
    if not isinstance(data, Mapping):
        raise _file_error(source, f"top-level object is {_type_name(data)}, expected a dataset or a clip dict")
    validate_clip(data, source)
    if split is not None:
        raise _file_error(source, f"--split {split!r} given, but this is a single-clip file")
    return [data]


# --------------------------------------------------------------------------------------------
# Writing: numpy-1-compatible names, atomic replace
# --------------------------------------------------------------------------------------------


def _numpy1_names() -> dict[tuple[str, str], tuple[str, str]]:
    """numpy 2 module names of pickled globals -> the numpy 1.x names both versions load."""
    names = {}
    for mod, name in (("numpy._core.multiarray", "_reconstruct"),
                      ("numpy._core.multiarray", "scalar"),
                      ("numpy._core.numeric", "_frombuffer")):
        names[(mod, name)] = (mod.replace("numpy._core", "numpy.core"), name)
    return names


class _CompatPickler(pickle._Pickler):
    """Pickler that writes numpy globals under their numpy 1.x names.

    numpy 2 pickles arrays as ``numpy._core.multiarray._reconstruct``; numpy 1.x (what PYSKL
    installs) cannot import ``numpy._core``, while numpy 2 still resolves the 1.x
    ``numpy.core.multiarray`` names without a warning. The pure-Python pickler is used
    because only it lets us choose the name written for a global.
    """

    _RENAME = _numpy1_names()

    def save_global(self, obj, name=None):
        key = (getattr(obj, "__module__", None), name or getattr(obj, "__qualname__", None))
        renamed = self._RENAME.get(key)
        if renamed is None:
            return super().save_global(obj, name)
        module, qualname = renamed
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("utf-8"))
        self.memoize(obj)


def _atomic_write(path: StrPath, obj: Any) -> None:
    """Pickle ``obj`` to ``path`` atomically; every failure is a ClipFormatError."""
    source = os.fspath(path)
    try:
        atomic_write(path, lambda f: _CompatPickler(f, protocol=PICKLE_PROTOCOL).dump(obj))
    except OSError as exc:
        raise _file_error(source, f"cannot write: {exc.strerror or exc}") from exc
    except Exception as exc:  # unpicklable extra fields and the like
        raise _file_error(source, f"cannot pickle: {type(exc).__name__}: {exc}") from exc


def save_dataset(path: StrPath, dataset_or_dict: SkeletonDataset | Mapping) -> None:
    """Validate, then atomically write a dataset pickle (protocol 4).

    Only ``split`` and ``annotations`` are written (other top-level keys of a dict are
    dropped); clip dicts are written as they are, extra fields included. On any error the
    destination is left untouched and no temp file remains.
    """
    source = os.fspath(path)
    validate_dataset(dataset_or_dict, source)
    split, annotations = _as_dataset_parts(dataset_or_dict, source)
    _atomic_write(path, {"split": {k: list(v) for k, v in split.items()},
                         "annotations": list(annotations)})


def save_clip(path: StrPath, clip: Mapping) -> None:
    """Validate, then atomically write a single-clip pickle (protocol 4)."""
    validate_clip(clip, os.fspath(path))
    _atomic_write(path, clip)
