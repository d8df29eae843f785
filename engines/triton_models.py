"""What posestream serves on Triton Inference Server, and the model repository for a real server.

Three networks are served: the action model (``x3d_s_synthetic`` by default), the default
front end's person detector (``movenet_multipose_lightning``) and its landmark model
(``pose_landmark_full``). :func:`served_model` reads what Triton must know about each from the
ONNX file itself (tensor names, dtypes, dims, whether the batch is dynamic), so the server
(``posestream serve``, engines/triton_server.py), the model repository
(``posestream export --triton-repo``, :func:`write_model_repository`) and the client
(engines/triton.py) agree by construction.

Names (the contract with the client):

- a model is called :func:`triton_model_name` of its ONNX file (the stem, made safe);
- the model repository keeps the ONNX graph's own tensor names (Triton's ONNX Runtime backend
  matches them exactly), while models served through PyTriton use :func:`triton_tensor_name`
  (PyTriton's names must be identifiers: ``serving_default_input:0`` -> ``serving_default_input_0``).
  A client maps by the exact name first, then by :func:`triton_tensor_name`.

Batch: dimension 0 of every input and output is the batch. The shipped landmark model has a
fixed batch of 1; it is served from its dynamic-batch copy
(:func:`posestream.engines.pose.dynamic_batch_model`) so that a batch Triton forms is one real
call. MoveNet's graph computes a Reshape target from its input, which that rewrite refuses: it
keeps its batch of 1 (``batch_dynamic`` False). PyTriton still queues and groups its requests
(run one by one); in the model repository it gets ``max_batch_size: 0`` and its full dims,
because a real Triton backend would hand the batch-1 graph a batch of N.

Nothing here imports torch; it runs under the main Python (3.11) and the server's (3.13).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from posestream import __version__
from posestream.errors import first_line

#: ``backend=`` values of :func:`write_model_repository`.
REPO_BACKENDS: tuple[str, ...] = ("onnxruntime", "openvino", "tensorrt")
#: The file that marks a folder as a model repository written by posestream (Triton reads only
#: the model folders at the top level of a repository and ignores files beside them).
REPO_MARKER = ".posestream-triton-repo.json"

#: numpy dtype name -> Triton's model-config data type.
TRITON_DTYPES: dict[str, str] = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
}


class TritonModelError(ValueError):
    """A one-line, user-facing error about a model to serve or a model repository."""


@dataclass
class TensorSpec:
    name: str  # the ONNX graph's name
    dtype: str  # numpy dtype name: "float32", "uint8", ...
    dims: tuple[int, ...]  # without the batch dimension; -1 where variable


@dataclass
class ServedModel:
    name: str  # triton_model_name(onnx_path)
    onnx_path: Path  # the file as given
    load_path: Path  # the file the server loads (the dynamic-batch copy where there is one)
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    batch_dynamic: bool = False
    what: str = "model"


def triton_model_name(path: str | os.PathLike) -> str:
    """The name a model is served under: its ONNX file's stem, every character outside
    ``[A-Za-z0-9_-]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", Path(path).stem)


def triton_tensor_name(onnx_name: str) -> str:
    """The name PyTriton serves an ONNX tensor under: every character outside ``[A-Za-z0-9_]``
    replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", onnx_name)


def served_model(path: str | os.PathLike, what: str = "model") -> ServedModel:
    """What Triton must know to serve the ONNX file at ``path`` (read with ``onnx``, external
    data not loaded). A fixed batch of 1 is made dynamic when
    :func:`~posestream.engines.pose.dynamic_batch_model` can rewrite the graph (the landmark
    model), else kept (MoveNet)."""
    src = Path(path)
    if not src.is_file():
        raise TritonModelError(f"{src}: {what} file not found")
    inputs, outputs, batch = _read_tensors(src, what)
    load_path, dynamic = src, all(b is None for b in batch)
    if not dynamic:
        load_path, dynamic = _dynamic_copy(src, what)
    return ServedModel(name=triton_model_name(src), onnx_path=src, load_path=load_path, inputs=inputs,
                       outputs=outputs, batch_dynamic=dynamic, what=what)


def _read_tensors(src: Path, what: str):
    """(inputs, outputs, batch dims) of the graph; a batch dim is None when it is not a number."""
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for a file that is not ONNX
        raise TritonModelError(f"{src}: not a readable ONNX {what} ({first_line(exc)})") from None
    initializers = {t.name for t in model.graph.initializer}
    batch: list[int | None] = []

    def specs(values) -> list[TensorSpec]:
        out = []
        for v in values:
            if v.name in initializers:  # old exporters list weights as graph inputs
                continue
            tt = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            if not dims:
                raise TritonModelError(f"{src}: tensor {v.name!r} of the {what} has no batch dimension")
            dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
            if dtype not in TRITON_DTYPES:
                raise TritonModelError(f"{src}: tensor {v.name!r} of the {what} has type {dtype}, which Triton "
                                       "configs here do not map")
            batch.append(dims[0] if dims[0] > 0 else None)
            out.append(TensorSpec(name=v.name, dtype=dtype, dims=tuple(dims[1:])))
        return out

    inputs, outputs = specs(model.graph.input), specs(model.graph.output)
    if not inputs or not outputs:
        raise TritonModelError(f"{src}: the {what} has no inputs or no outputs")
    fixed = {b for b in batch if b is not None}
    if fixed and fixed != {1}:
        raise TritonModelError(f"{src}: the {what}'s batch dimension is {sorted(fixed)}, expected 1 or dynamic")
    return inputs, outputs, batch


def _dynamic_copy(src: Path, what: str) -> tuple[Path, bool]:
    from posestream.engines.pose import PoseError, dynamic_batch_model

    try:
        return Path(dynamic_batch_model(src)), True
    except PoseError:  # a graph the rewrite does not know: served with its batch of 1
        return src, False


def default_served_models(action_model: str | os.PathLike | None = None) -> list[ServedModel]:
    """The action model (``action_model``, else the shipped default), then the default front
    end's person detector and landmark model, in that order."""
    from posestream.engines.pose import LANDMARK_FILE, MOVENET_FILE, shipped_model

    # realtime/pipeline.py's DEFAULT_ACTION_MODEL; engines import nothing from realtime.
    action = Path(action_model) if action_model is not None else shipped_model("x3d_s_synthetic.onnx")
    models = [served_model(action, what="action model"),
              served_model(shipped_model(MOVENET_FILE), what="person detector"),
              served_model(shipped_model(LANDMARK_FILE), what="landmark model")]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise TritonModelError(f"{action}: the action model's Triton name {models[0].name!r} is taken by a pose network")
    return models


# --- the model repository ------------------------------------------------------------------------


def write_model_repository(dir: str | os.PathLike, models: Sequence[ServedModel], *, backend: str = "onnxruntime",
                           max_batch: int = 8, max_queue_delay_us: int = 2000, instances: int = 1,
                           kind: str | None = None) -> list[Path]:
    """Write Triton's standard layout, ``DIR/<name>/config.pbtxt`` and ``DIR/<name>/1/model.onnx``
    (the model's ``load_path``), for NVIDIA's Triton container as it is. Returns the config paths.

    ``backend``:

    - ``onnxruntime``: Triton's ONNX Runtime backend.
    - ``openvino``: Triton's OpenVINO backend, which reads ONNX files itself when
      ``default_model_filename: "model.onnx"`` is set (its README; it reads ``model.xml`` by
      default). Its README lists variable-shaped tensors other than the batch as not supported:
      MoveNet's variable H x W may need ``reshape`` entries for a fixed frame size there.
    - ``tensorrt``: a config for Triton's TensorRT backend cannot be made from an ONNX file (it
      loads serialized engines, built for one GPU and TensorRT version). What is written is the
      documented way to run an ONNX model through TensorRT in Triton: the ONNX Runtime backend
      with ``gpu_execution_accelerator [ { name: "tensorrt" } ]``, on ``KIND_GPU`` instances;
      TensorRT builds the engine when the model loads.

    A model whose batch is dynamic gets ``max_batch_size: max_batch``, dims without the batch and
    ``dynamic_batching`` (``max_queue_delay_microseconds``); one with a fixed batch of 1 (MoveNet)
    gets ``max_batch_size: 0`` and its full dims. ``instances`` instances of ``kind``
    (``KIND_CPU``, or ``KIND_GPU`` for ``tensorrt``) each.

    The repository is built beside DIR and renamed into place, so DIR never holds half of one. A
    DIR that exists must be empty or a repository posestream wrote (it is then replaced).
    """
    dest = Path(dir)
    if backend not in REPO_BACKENDS:
        raise TritonModelError(f"unknown Triton backend {backend!r}; choose one of {', '.join(REPO_BACKENDS)}")
    for option, value, least in (("max_batch", max_batch, 1), ("max_queue_delay_us", max_queue_delay_us, 0),
                                 ("instances", instances, 1)):
        if int(value) < least:
            raise TritonModelError(f"{option} must be at least {least}, got {value}")
    kind = kind or ("KIND_GPU" if backend == "tensorrt" else "KIND_CPU")
    if kind not in ("KIND_CPU", "KIND_GPU", "KIND_AUTO"):
        raise TritonModelError(f"unknown instance kind {kind!r}; choose KIND_CPU, KIND_GPU or KIND_AUTO")
    names = [m.name for m in models]
    if not models or len(set(names)) != len(names):
        raise TritonModelError(f"{dest}: need models with distinct names, got {names}")
    for m in models:
        if not Path(m.load_path).is_file():
            raise TritonModelError(f"{m.load_path}: {m.what} file not found")
    _check_target(dest)

    dest.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        for m in models:
            version = build / m.name / "1"
            version.mkdir(parents=True)
            shutil.copyfile(m.load_path, version / "model.onnx")
            text = model_config_text(m, backend=backend, max_batch=max_batch,
                                     max_queue_delay_us=max_queue_delay_us, instances=instances, kind=kind)
            (build / m.name / "config.pbtxt").write_text(text, encoding="utf-8")
        marker = {"posestream": __version__, "backend": backend, "models": names}
        (build / REPO_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _swap_into_place(build, dest)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return [dest / name / "config.pbtxt" for name in names]


def _check_target(dest: Path) -> None:
    if not dest.exists():
        return
    if not dest.is_dir():
        raise TritonModelError(f"{dest}: exists and is not a folder; choose another --triton-repo")
    if any(dest.iterdir()) and not (dest / REPO_MARKER).is_file():
        raise TritonModelError(f"{dest}: folder is not empty and is not a model repository posestream wrote; "
                               "choose an empty or new folder")


def _swap_into_place(build: Path, dest: Path) -> None:
    """Rename the finished repository ``build`` to ``dest``; an old ``dest`` is moved aside first
    and removed after."""
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old.{os.getpid()}"
        os.replace(dest, old)
    try:
        os.replace(build, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def model_config_text(model: ServedModel, *, backend: str = "onnxruntime", max_batch: int = 8,
                      max_queue_delay_us: int = 2000, instances: int = 1, kind: str = "KIND_CPU") -> str:
    """The ``config.pbtxt`` of one model (protobuf text format of Triton's ModelConfig)."""
    batching = model.batch_dynamic
    lines = [f"name: {_quote(model.name)}",
             # openvino: the backend's own name; tensorrt: ONNX Runtime with the TensorRT accelerator
             f"backend: {_quote('openvino' if backend == 'openvino' else 'onnxruntime')}",
             f"default_model_filename: {_quote('model.onnx')}",
             f"max_batch_size: {int(max_batch) if batching else 0}"]
    for section, specs in (("input", model.inputs), ("output", model.outputs)):
        lines.append(f"{section} [")
        entries = []
        for spec in specs:
            dims = spec.dims if batching else (1, *spec.dims)
            entries.append("\n".join([
                "  {",
                f"    name: {_quote(spec.name)}",
                f"    data_type: {TRITON_DTYPES[spec.dtype]}",
                f"    dims: [ {', '.join(str(int(d)) for d in dims)} ]",
                "  }"]))
        lines.append(",\n".join(entries))
        lines.append("]")
    if batching:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {int(max_queue_delay_us)}", "}"]
    lines += ["instance_group [", "  {", f"    count: {int(instances)}", f"    kind: {kind}", "  }", "]"]
    if backend == "tensorrt":
        lines += ["optimization {", "  execution_accelerators {",
                  '    gpu_execution_accelerator : [ { name : "tensorrt" } ]', "  }", "}"]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

