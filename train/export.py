"""Export posestream models to ONNX, verified against PyTorch in ONNX Runtime before anything
is written.

    from posestream.train.export import export_onnx
    report = export_onnx("x3d_s.pth", "x3d_s.onnx")      # raises if ORT disagrees with torch
    print(report.summary())

The file has one input ``volume`` ``[batch, K, T, H, W]`` float32 (batch dynamic unless
``batch_dynamic=False``; K, T, H, W fixed to the checkpoint card's ``in_channels``,
``clip_len``, ``size``) and one output ``logits`` ``[batch, classes]``; its ``metadata_props``
carry the model card (arch, classes, heatmap kind, limb order, clip length, size, sigma, class
names; see :func:`posestream.engines.action.card_metadata`), so an engine can rasterize the
right volume from the ``.onnx`` alone. RGBPose-Conv3D exports with two inputs, ``rgb``
``[batch, 3, clip_len / 4, 4 size, 4 size]`` and ``volume``, and two outputs ``rgb_logits`` and
``pose_logits`` (fuse them with ``late_fusion`` on the softmax scores); the action engines do
not serve it (the streaming pipeline has no RGB clips).

Export uses ``torch.onnx.export(..., dynamo=True)`` (opset 18 by default; at least 17), then
runs the serialized model in an ONNX Runtime CPU session on random volumes at two batch sizes
and compares with the torch model; a difference above ``atol`` raises
:class:`ExportVerificationError` and leaves no file (the file is only written, through a
temporary file and a rename, once it has passed).

This module also renders *real* heatmap volumes for int8 calibration
(:func:`render_volumes`, :func:`sample_calibration_volumes`) and wraps
:func:`posestream.engines.quantize.quantize_int8` for a posestream ONNX file (:func:`export_int8`).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from posestream.errors import first_line
from posestream.engines.action import card_metadata
from posestream.files import atomic_write

log = logging.getLogger(__name__)

MIN_OPSET = 17
DEFAULT_OPSET = 18
# The batch sizes every export is verified at (dynamic batch): a single volume and a batch.
VERIFY_BATCHES = (1, 3)


class ExportError(ValueError):
    """Export failed (bad arguments, a model torch.onnx cannot export, an unwritable path)."""


class ExportVerificationError(ExportError):
    """ONNX Runtime's output differs from torch's by more than the tolerance; nothing was written."""


@dataclass
class ExportReport:
    """What :func:`export_model` / :func:`export_onnx` did."""

    path: str
    arch: str | None
    opset: int
    input_names: list[str]
    output_names: list[str]
    input_shapes: list[list[int | None]]   # per input, batch first (None = dynamic)
    batch_dynamic: bool
    verified: bool
    batch_sizes: list[int] = field(default_factory=list)   # the batches ORT was checked at
    max_abs_diff: float | None = None                     # max |ORT - torch| over all outputs
    max_abs_logit: float | None = None                    # max |torch| (for scale)
    atol: float = 1e-4
    size_bytes: int = 0
    export_seconds: float = 0.0
    verify_seconds: float = 0.0
    metadata: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        shapes = "; ".join(f"{n} [{', '.join('batch' if d is None else str(d) for d in s)}]"
                           for n, s in zip(self.input_names, self.input_shapes))
        check = (f"ONNX Runtime matches torch within {self.max_abs_diff:.2g} (atol {self.atol:g}) at batch "
                 f"{'/'.join(map(str, self.batch_sizes))}" if self.verified else "not verified")
        return (f"{self.path}: {self.arch or 'model'} opset {self.opset}, {shapes} -> "
                f"{', '.join(self.output_names)}; {self.size_bytes / 1e6:.1f} MB; {check}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Export


def export_onnx(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                batch_dynamic: bool = True, verify: bool = True, samples: int = 4,
                atol: float = 1e-4) -> ExportReport:
    """Export a posestream checkpoint to ONNX with its card in the metadata, verified in ONNX
    Runtime (see the module docstring). ``samples`` random volumes are checked, split into a
    batch of 1 and a batch of ``samples - 1`` (dynamic batch) or run one export-batch at a time.
    Raises a one-line ValueError on failure (:class:`ExportError` for the export itself,
    :class:`ExportVerificationError` when ORT disagrees), leaving no file."""
    from posestream.train.checkpoints import load_model

    model, card = load_model(checkpoint_path)
    k, t, s = card.in_channels, card.clip_len, card.size
    if card.arch == "rgbpose_conv3d":
        speed = model.backbone.speed_ratio
        if t % speed:
            raise ExportError(f"{os.fspath(checkpoint_path)}: RGBPose-Conv3D needs clip_len divisible by {speed}, "
                              f"the card says {t}")
        input_shape: Any = ((3, t // speed, 4 * s, 4 * s), (k, t, s, s))
    else:
        input_shape = (k, t, s, s)
    return export_model(model, out_path, input_shape, card=card, opset=opset, batch_dynamic=batch_dynamic,
                        verify=verify, samples=samples, atol=atol)


def export_model(model: torch.nn.Module, out_path: str | os.PathLike,
                 input_shape: Sequence[int] | Sequence[Sequence[int]], *, card=None,
                 metadata: dict[str, str] | None = None, opset: int = DEFAULT_OPSET, batch_dynamic: bool = True,
                 verify: bool = True, samples: int = 4, atol: float = 1e-4,
                 input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
                 seed: int = 0) -> ExportReport:
    """Export ``model`` (put in eval mode for the export, then restored) to ``out_path``.

    ``input_shape`` is the shape of one sample, ``(K, T, H, W)``, or one such shape per input
    for a multi-input model (RGBPose-Conv3D: ``((3, T, H, W), (K, 4T, H', W'))``). Input names
    default to ``volume`` (one input) or ``rgb``, ``volume`` (two); outputs to ``logits`` or
    ``rgb_logits``, ``pose_logits``. ``card`` (a ModelCard) and ``metadata`` go into the file's
    ``metadata_props``. With ``verify`` the serialized model runs in ONNX Runtime on ``samples``
    random volumes in [0, 1) and must match torch within ``atol`` (max abs difference), else
    :class:`ExportVerificationError` and no file.
    """
    started = time.perf_counter()
    dest = Path(out_path)
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; posestream exports opset {MIN_OPSET} or newer")
    if samples < 1:
        raise ExportError(f"samples must be at least 1, got {samples}")
    if not dest.parent.is_dir():
        raise ExportError(f"{dest}: the folder {dest.parent} does not exist")
    shapes = _input_shapes(input_shape)
    n_in = len(shapes)
    input_names = list(input_names or (["volume"] if n_in == 1 else ["rgb", "volume"] if n_in == 2
                                       else [f"input{i}" for i in range(n_in)]))
    if len(input_names) != n_in:
        raise ExportError(f"{len(input_names)} input names for {n_in} inputs")

    was_training = model.training
    model.eval()
    try:
        example_batch = 2 if batch_dynamic else 1   # batch 1 would be specialized by torch.export
        example = tuple(torch.rand(example_batch, *shape) for shape in shapes)
        try:
            with torch.inference_mode():
                probe = model(*[x.clone() for x in example])
        except (RuntimeError, ValueError) as exc:
            raise ExportError(f"{getattr(model, 'name', type(model).__name__)} does not take inputs of shape "
                              f"{[list(x.shape) for x in example]}: {first_line(exc)}") from None
        n_out = len(probe) if isinstance(probe, (tuple, list)) else 1
        output_names = list(output_names or (["logits"] if n_out == 1 else ["rgb_logits", "pose_logits"]
                                             if n_out == 2 else [f"output{i}" for i in range(n_out)]))
        if len(output_names) != n_out:
            raise ExportError(f"{len(output_names)} output names for {n_out} outputs")
        proto = _to_onnx(model, example, opset=opset, batch_dynamic=batch_dynamic,
                         input_names=input_names, output_names=output_names)
        arch = getattr(card, "arch", None) or getattr(model, "name", None)
        props: dict[str, str] = {}
        if card is not None:
            props.update(card_metadata(card, input_shape=[None if batch_dynamic else 1, *shapes[-1]]))
        props.update(metadata or {})
        _set_metadata(proto, props)
        data = proto.SerializeToString()
        export_seconds = time.perf_counter() - started
        report = ExportReport(path=os.fspath(dest), arch=arch, opset=opset, input_names=input_names,
                              output_names=output_names,
                              input_shapes=[[None if batch_dynamic else 1, *shape] for shape in shapes],
                              batch_dynamic=batch_dynamic, verified=False, atol=atol, size_bytes=len(data),
                              export_seconds=export_seconds, metadata=props)
        if verify:
            t0 = time.perf_counter()
            _verify(model, data, shapes, input_names, report, samples=samples, seed=seed, dest=dest)
            report.verify_seconds = time.perf_counter() - t0
    finally:
        model.train(was_training)
    try:
        atomic_write(dest, lambda f: f.write(data))
    except OSError as exc:
        raise ExportError(f"{dest}: cannot write ({exc.strerror or exc})") from None
    log.info("%s", report.summary())
    return report


def _to_onnx(model: torch.nn.Module, example: tuple[torch.Tensor, ...], *, opset: int, batch_dynamic: bool,
             input_names: list[str], output_names: list[str]):
    """torch.onnx.export with dynamo -> an ``onnx.ModelProto`` (in memory)."""
    dynamic_shapes = None
    if batch_dynamic:
        batch = torch.export.Dim("batch", min=1, max=4096)
        dynamic_shapes = tuple({0: batch} for _ in example)
    sink = io.StringIO()
    # torch.onnx warns "torchvision is not installed"; onnxscript / onnx_ir log every rewrite at INFO.
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, example, dynamo=True, opset_version=opset, input_names=input_names,
                                        output_names=output_names, dynamic_shapes=dynamic_shapes, verbose=False,
                                        optimize=True, report=False)
    except Exception as exc:
        raise ExportError(f"torch.onnx could not export {getattr(model, 'name', type(model).__name__)}: "
                          f"{first_line(exc)}") from None
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    return program.model_proto


def _set_metadata(proto, props: dict[str, str]) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = str(value)
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)


def _verify(model, data: bytes, shapes, input_names, report: ExportReport, *, samples: int, seed: int,
            dest: Path) -> None:
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as exc:
        raise ExportVerificationError(f"{dest}: the exported model is not valid ONNX ({first_line(exc)}); "
                                      "nothing written") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportVerificationError(f"{dest}: ONNX Runtime cannot load the export ({first_line(exc)}); "
                                      "nothing written") from None
    if report.batch_dynamic:
        batches = [1] if samples == 1 else [1, samples - 1]
    else:
        batches = [1] * samples
    rng = np.random.default_rng(seed)
    worst, scale = 0.0, 0.0
    for n in batches:
        inputs = [rng.random((n, *shape), dtype=np.float32) for shape in shapes]
        with torch.inference_mode():
            ref = model(*[torch.from_numpy(x.copy()) for x in inputs])
        refs = [r.numpy() for r in (ref if isinstance(ref, (tuple, list)) else (ref,))]
        outs = session.run(None, dict(zip(input_names, inputs)))
        for name, got, want in zip(report.output_names, outs, refs):
            if got.shape != want.shape:
                raise ExportVerificationError(f"{dest}: ONNX Runtime output {name} has shape {list(got.shape)}, torch "
                                              f"{list(want.shape)} (batch {n}); nothing written")
            diff = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
            if not np.isfinite(diff):
                diff = float("inf")
            worst, scale = max(worst, diff), max(scale, float(np.max(np.abs(want))) if want.size else 0.0)
            if diff > report.atol:
                raise ExportVerificationError(
                    f"{dest}: ONNX Runtime disagrees with torch on {name} by {diff:.3g} > atol {report.atol:g} "
                    f"(batch {n}); nothing written")
    report.verified = True
    report.batch_sizes = sorted(set(batches))
    report.max_abs_diff = worst
    report.max_abs_logit = scale


def _input_shapes(input_shape) -> list[tuple[int, ...]]:
    shape = tuple(input_shape)
    if shape and all(isinstance(d, (int, np.integer)) for d in shape):
        shapes = [tuple(int(d) for d in shape)]
    else:
        shapes = [tuple(int(d) for d in s) for s in shape]
    for s in shapes:
        if len(s) != 4 or min(s) < 1:
            raise ExportError(f"input_shape must be (K, T, H, W) per input (no batch), got {input_shape!r}")
    return shapes


# ----------------------------------------------------------------------------------------------
# Real volumes for int8 calibration


def render_volumes(clips: Iterable[dict], card=None, *, clip_len: int | None = None, size: int | None = None,
                   limbs: str | None = None, sigma: float | None = None) -> np.ndarray:
    """Heatmap volumes ``[N, K, T, H, W]`` rendered by the validation pipeline (uniform
    sampling, subjects-centred crop, resize, rasterize) from skeleton clip dicts, with the
    geometry of ``card`` (a ModelCard) unless overridden: the volumes a served model sees."""
    from posestream.train.transforms import GeneratePoseTarget, val_pipeline

    clip_len = clip_len or (card.clip_len if card is not None else 48)
    size = size or (card.size if card is not None else 56)
    if limbs is None and card is not None and card.heatmap == "limbs":
        limbs = card.limbs
    sigma = sigma if sigma is not None else (card.sigma if card is not None else 0.6)
    pipeline = val_pipeline(clip_len, limbs=limbs, size=size)
    for step in pipeline.steps:
        if isinstance(step, GeneratePoseTarget):
            step.sigma = sigma
    volumes = [pipeline(clip)["imgs"] for clip in clips]
    if not volumes:
        raise ValueError("no clips to render")
    return np.concatenate(volumes).astype(np.float32, copy=False)


def sample_clips(count: int, seed: int = 0) -> list[dict]:
    """``count`` varied skeleton clips from :func:`waving_and_walking_clip`: different seeds,
    lengths and image shapes, as a two-person scene, the waver alone and the walker alone."""
    from posestream.train.data.sample import waving_and_walking_clip

    rng = np.random.default_rng(seed)
    shapes = ((480, 640), (720, 1280), (1080, 1920), (576, 768), (640, 480))
    clips = []
    for i in range(count):
        clip = waving_and_walking_clip(num_frames=int(rng.integers(32, 121)),
                                       img_shape=shapes[int(rng.integers(len(shapes)))],
                                       seed=int(rng.integers(2**31)))
        who = i % 3   # 0: both persons, 1: the waver, 2: the walker
        if who:
            m = who - 1
            clip = dict(clip, keypoint=clip["keypoint"][m:m + 1], keypoint_score=clip["keypoint_score"][m:m + 1])
        clips.append(clip)
    return clips


def sample_calibration_volumes(card=None, count: int = 16, seed: int = 0, **geometry) -> np.ndarray:
    """``count`` real volumes (see :func:`sample_clips`) at the card's geometry: a stand-in
    calibration set when the user has no clips of their own. Prefer the model's own data."""
    return render_volumes(sample_clips(count, seed), card, **geometry)


def export_int8(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike, clips: Iterable[dict] | None = None, *,
                count: int = 128, seed: int = 0, per_channel: bool = True, reduce_range: bool = True) -> dict:
    """Quantize a posestream ONNX file to int8, calibrated on volumes rendered (at the card's
    geometry) from ``clips`` (skeleton clip dicts, e.g. from the training split; ``count`` of
    them drawn at random when there are more) or, without clips, from ``count`` sample clips. Returns a summary with the int8-vs-fp32 logit drift on
    held-out volumes (``max_rel_logit_error``: max |int8 - fp32| / max |fp32|; and the arg-max
    agreement)."""
    from posestream.engines.action import OnnxEngine
    from posestream.engines.quantize import quantize_int8

    fp32 = OnnxEngine(onnx_in, device="cpu")
    if fp32.card is None:
        raise ExportError(f"{os.fspath(onnx_in)}: no posestream model card in the metadata; export it with export_onnx")
    if clips is None:
        clips = sample_clips(count, seed)
    else:
        clips = list(clips)
        if not clips:
            raise ExportError("no calibration clips")
        if len(clips) > count:   # a whole training split would take long and add little to the ranges
            picks = np.random.default_rng(seed).choice(len(clips), count, replace=False)
            clips = [clips[i] for i in sorted(picks)]
    volumes = render_volumes(clips, fp32.card)
    held_out = sample_calibration_volumes(fp32.card, count=6, seed=seed + 1)
    quantize_int8(onnx_in, onnx_out, volumes, per_channel=per_channel, reduce_range=reduce_range)
    int8 = OnnxEngine(onnx_out, device="cpu")
    ref, got = fp32.predict(held_out), int8.predict(held_out)
    return {"path": os.fspath(onnx_out), "calibration_volumes": len(volumes),
            "max_rel_logit_error": float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12)),
            "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}


__all__ = ["ExportError", "ExportVerificationError", "ExportReport", "export_onnx", "export_model",
           "render_volumes", "sample_clips", "sample_calibration_volumes", "export_int8"]
