"""int8 static quantization of a posestream ONNX model with ONNX Runtime (QDQ format).

    from posestream.engines.quantize import quantize_int8
    quantize_int8("x3d_s.onnx", "x3d_s.int8.onnx", volumes)   # volumes: real [N, K, T, H, W]

Settings, and why (measured on a 2-core AMD EPYC Zen 3, AVX2, no AVX-512/VNNI, ORT 1.32):

- *static* quantization, QDQ format, uint8 activations and int8 weights: ORT's fast U8S8
  convolution kernels. Dynamic quantization was 1.2-3x *slower* than fp32 here, and int8
  activations (S8S8) ran ~1.4x slower than U8S8.
- ``reduce_range=True`` (7-bit weights): without VNNI, ORT's U8S8 kernels add pairs of
  uint8 x int8 products in int16, which saturates with full-range weights; that gave 14-17%
  relative logit error on Pose-X3D-s, against 3-4% with ``reduce_range``.
- ``per_channel=True``: one weight scale per output channel (the depthwise and 1x1x1 convs of
  X3D have very different ranges per channel).
- calibration on *real* heatmap volumes (rendered by our pipeline from skeleton clips):
  heatmaps are sparse (most voxels 0, peaks near 1), and calibrating on random noise would give
  activation ranges the model never sees. The calibration set should come from the data the
  model serves; :func:`posestream.train.export.sample_calibration_volumes` renders a stand-in.
- ``calibration="percentile"`` (ranges cover 99.999% of the calibration activations) rather
  than MinMax: MinMax lets rare outliers set the range of a whole tensor, and X3D (depthwise,
  BatchNorm folded in) amplifies the resulting noise layer by layer. On an X3D-s trained on
  our waving/walking clips (fp32 100% top-1 on 400 validation clips) MinMax int8 flipped 55
  of 400 top-1s (mean logit error 30% of the logit range); percentile flipped none (8%).
  16-bit activations fixed it too but ran 3x slower than int8.

The output keeps the input's ``metadata_props`` (the model card) and adds
``posestream.precision = int8`` and ``posestream.quantization`` (the settings as JSON), so
``make_engine("onnx-int8", path)`` knows what it runs. It is written atomically.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from posestream.errors import first_line
from posestream.engines.action import (
    META_PRECISION,
    META_QUANTIZATION,
    EngineError,
)
from posestream.files import atomic_write

log = logging.getLogger(__name__)


class _ArrayReader:
    """A CalibrationDataReader over volumes, ``batch`` at a time. ``set_range`` lets ONNX
    Runtime collect statistics a chunk of batches at a time (``CalibStridedMinMax``), so the
    intermediate activations of the whole calibration set never sit in memory at once."""

    def __init__(self, input_name: str, volumes: np.ndarray, batch: int):
        self.input_name = input_name
        self.batches = [volumes[i:i + batch] for i in range(0, len(volumes), batch)]
        self.start, self.end = 0, len(self.batches)
        self.position = 0

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, min(end_index, len(self.batches))
        self.position = self.start

    def get_next(self):
        if self.position >= self.end:
            return None
        self.position += 1
        return {self.input_name: self.batches[self.position - 1]}

    def rewind(self):
        self.position = self.start


def _chunk(num_batches: int, most: int = 8) -> int:
    """The largest divisor of ``num_batches`` up to ``most`` (ORT wants equal chunks)."""
    return max(d for d in range(1, min(most, num_batches) + 1) if num_batches % d == 0)


class _QuietPreprocessHint(logging.Filter):
    """ORT logs "Please consider to run pre-processing" on the root logger; our exports are
    already shape-inferred and folded (BatchNorm is in the convolutions)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def quantize_int8(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike,
                  calibration_volumes: np.ndarray | Iterable[np.ndarray], *, per_channel: bool = True,
                  reduce_range: bool = True, calibration: str = "percentile", percentile: float = 99.999,
                  batch: int = 1) -> str:
    """Statically quantize ``onnx_in`` to int8 (QDQ) at ``onnx_out``; returns ``onnx_out``.

    ``calibration_volumes``: real heatmap volumes ``[N, K, T, H, W]`` (or an iterable of
    such batches), matching the model's input; use ~100 (MinMax ranges: on a trained X3D-s, 32
    volumes gave a ~5x larger mean logit error than 128). They are fed ``batch`` at a time. Raises :class:`EngineError` (one line) for a missing or foreign
    file or volumes of the wrong shape; nothing is written on failure.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
               "entropy": CalibrationMethod.Entropy}
    if calibration not in methods:
        raise EngineError(f"calibration must be one of {', '.join(methods)}, got {calibration!r}")
    if not 50 < percentile <= 100:
        raise EngineError(f"percentile must lie in (50, 100], got {percentile!r}")
    source, dest = os.fspath(onnx_in), Path(onnx_out)
    if not Path(source).is_file():
        raise EngineError(f"{source}: no such file")
    if not dest.parent.is_dir():
        raise EngineError(f"{dest}: the folder {dest.parent} does not exist")
    try:
        model = onnx.load(source)
    except Exception as exc:
        raise EngineError(f"{source}: not an ONNX model ({first_line(exc)})") from None
    if len(model.graph.input) != 1:
        raise EngineError(f"{source}: quantize_int8 handles single-input models, this one has "
                          f"{len(model.graph.input)} inputs")
    props = {p.key: p.value for p in model.metadata_props}
    if props.get(META_PRECISION) == "int8" or any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        raise EngineError(f"{source}: already quantized")
    graph_input = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    volumes = _stack(calibration_volumes)
    if volumes.ndim != len(dims) or any(d is not None and d != s for d, s in zip(dims[1:], volumes.shape[1:])):
        want = ", ".join("N" if d is None else str(d) for d in dims)
        raise EngineError(f"{source}: calibration volumes have shape {list(volumes.shape)}, the model takes [{want}]")
    if len(volumes) == 0:
        raise EngineError("no calibration volumes")
    if dims[0] is not None:
        batch = dims[0]
        if len(volumes) % batch:
            raise EngineError(f"{source}: a fixed batch of {batch} needs a multiple of {batch} calibration volumes")
    if not np.isfinite(volumes).all():
        raise EngineError("calibration volumes contain NaN or infinity")

    settings = {"format": "QDQ", "activations": "uint8", "weights": "int8", "per_channel": bool(per_channel),
                "reduce_range": bool(reduce_range), "calibration": calibration,
                "calibration_volumes": int(len(volumes))}
    if calibration == "percentile":
        settings["percentile"] = float(percentile)
    root = logging.getLogger()
    hint = _QuietPreprocessHint()
    root.addFilter(hint)
    try:
        with tempfile.TemporaryDirectory(prefix="posestream-int8-") as tmp:
            raw = Path(tmp) / "int8.onnx"
            reader = _ArrayReader(graph_input.name, volumes, batch)
            try:
                with contextlib.redirect_stdout(io.StringIO()):   # the histogram calibrators print progress
                    quantize_static(model, raw, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                    reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                                    weight_type=QuantType.QInt8, calibrate_method=methods[calibration],
                                    extra_options={"CalibPercentile": float(percentile),
                                                   "CalibStridedMinMax": _chunk(len(reader))})
            except Exception as exc:
                raise EngineError(f"{source}: int8 quantization failed ({first_line(exc)})") from None
            quantized = onnx.load(raw)
    finally:
        root.removeFilter(hint)
    del quantized.metadata_props[:]
    for key, value in {**props, META_PRECISION: "int8", META_QUANTIZATION: json.dumps(settings)}.items():
        entry = quantized.metadata_props.add()
        entry.key, entry.value = key, value
    data = quantized.SerializeToString()
    atomic_write(dest, lambda f: f.write(data))
    log.info("%s: int8 (%s) from %s, calibrated on %d volumes", dest, settings["format"], source, len(volumes))
    return os.fspath(dest)


def _stack(volumes) -> np.ndarray:
    if isinstance(volumes, np.ndarray):
        arr = volumes
    elif type(volumes).__module__.startswith("torch"):
        arr = volumes.detach().cpu().numpy()
    else:
        parts = [np.asarray(v) for v in volumes]
        if not parts:
            raise EngineError("no calibration volumes")
        arr = np.concatenate([p if p.ndim == 5 else p[None] for p in parts])
    return np.ascontiguousarray(arr, dtype=np.float32)


__all__ = ["quantize_int8"]
