"""Action engines: heatmap volumes ``[N, K, T, H, W]`` float32 -> logits ``[N, classes]``.

Every engine has the same interface (:class:`ActionEngine`): ``predict(volumes)`` returns a
numpy array of logits, and ``card`` / ``input_shape`` / ``num_classes`` / ``class_names`` say
how the model must be fed (joint or limb heatmaps, limb order, clip length, size, sigma), so
the runtime rasterizes exactly the volume the model was trained on. Engines:

=============  ==================================================================================
name           what runs
=============  ==================================================================================
torch          the posestream checkpoint in eager PyTorch (the reference)
torch-cl3d     the same with weights and input in ``channels_last_3d`` memory format
onnx           an ONNX file (from :func:`posestream.train.export.export_onnx`) in ONNX Runtime;
               CUDAExecutionProvider when present, else CPU
onnx-int8      the same, on an int8 (QDQ) file from :func:`posestream.engines.quantize.quantize_int8`
openvino       an ONNX file compiled by OpenVINO for the CPU (:class:`OpenVinoEngine`): fp32 by
               default; ``options={"precision": "bf16"}`` (AMX) only with its accuracy check
               printed (:func:`precision_check`); an int8 file with its check against ONNX
               Runtime's int8 printed. Without OpenVINO: ``onnx``, after a notice
auto           see :func:`make_engine`
torch-cuda     the checkpoint in PyTorch on a CUDA GPU: fp16/bf16, channels-last-3d, CUDA graphs
               (:class:`posestream.engines.action_gpu.TorchCudaEngine`)
tensorrt       a TensorRT engine built from the ONNX file and cached on disk
               (:class:`posestream.engines.action_gpu.TensorRTEngine`)
=============  ==================================================================================

The GPU kinds (:data:`GPU_ENGINE_KINDS`) live in :mod:`posestream.engines.action_gpu`, imported
only when asked for; without CUDA (or TensorRT) they fall back, with a logged notice, to what
the machine can run (see :func:`posestream.engines.action_gpu.make_gpu_engine`).

All engines agree with ``torch`` on the same volumes: the fp32 ones within 1e-4 on the
logits (measured: about 1e-6), the int8 one within a few percent of the logit range.

ONNX files carry the model card (:class:`posestream.engines.card.ModelCard`) in their
``metadata_props`` (see :func:`card_metadata`), so an ONNX engine needs nothing but the
``.onnx`` file, and no torch: this module imports torch only inside the torch engines, and
``posestream.train`` only where one loads a checkpoint.

Threads: ``threads`` sets ONNX Runtime's intra-op pool of the engine's own session. PyTorch's
intra-op pool is one per process: a torch engine sets ``torch.set_num_threads(threads)`` when it
is built and again before a call if something changed it since. When pose estimation shares
the CPU, one thread per engine is usually fastest.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from posestream.engines.card import ModelCard
from posestream.errors import first_line

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

ENGINE_KINDS: tuple[str, ...] = ("auto", "torch", "torch-cl3d", "onnx", "onnx-int8", "openvino", "triton")
#: The GPU engines (posestream.engines.action_gpu); make_engine accepts ALL_ENGINE_KINDS.
GPU_ENGINE_KINDS: tuple[str, ...] = ("torch-cuda", "tensorrt")
ALL_ENGINE_KINDS: tuple[str, ...] = ENGINE_KINDS + GPU_ENGINE_KINDS

# ONNX metadata_props written by the exporter and read back by OnnxEngine.
META_FORMAT = "posestream.format"          # "posestream-onnx"
META_VERSION = "posestream.version"        # "1"
META_CARD = "posestream.card"              # JSON of the whole ModelCard (authoritative)
META_PRECISION = "posestream.precision"    # "fp32" or "int8"
META_INPUT_SHAPE = "posestream.input_shape"  # JSON [null, K, T, H, W] (null = dynamic batch)
META_QUANTIZATION = "posestream.quantization"  # JSON of the quantization settings (int8 files)
ONNX_FORMAT = "posestream-onnx"
ONNX_VERSION = 1
# Plain copies of the card's fields, for people reading the file in Netron or onnx.load;
# posestream itself reads META_CARD.
READABLE_KEYS = ("arch", "num_classes", "in_channels", "heatmap", "limbs", "clip_len", "size", "sigma",
                 "class_names")


class EngineError(ValueError):
    """A one-line, user-facing error about an engine, its file or its input."""


# ----------------------------------------------------------------------------------------------
# Metadata


def card_metadata(card: ModelCard, *, precision: str = "fp32",
                  input_shape: Sequence[int | None] | None = None) -> dict[str, str]:
    """The ``metadata_props`` (string to string) that describe ``card`` in an ONNX file."""
    fields = card.to_dict()
    props = {META_FORMAT: ONNX_FORMAT, META_VERSION: str(ONNX_VERSION),
             META_CARD: json.dumps(fields, default=str, sort_keys=True), META_PRECISION: precision}
    if input_shape is not None:
        props[META_INPUT_SHAPE] = json.dumps([None if d is None else int(d) for d in input_shape])
    for name in READABLE_KEYS:
        value = fields[name]
        props[name] = json.dumps(value) if isinstance(value, (list, tuple)) else ("" if value is None else str(value))
    return props


def card_from_metadata(props: Mapping[str, str], source: str = "<onnx>") -> ModelCard | None:
    """The ModelCard stored by :func:`card_metadata`, or None for a file without one."""
    if props.get(META_FORMAT) != ONNX_FORMAT or META_CARD not in props:
        return None
    version = props.get(META_VERSION)
    if version != str(ONNX_VERSION):
        raise EngineError(f"{source}: posestream ONNX metadata version {version!r}, this posestream reads {ONNX_VERSION}")
    try:
        fields = json.loads(props[META_CARD])
        return ModelCard.from_dict(fields)
    except (TypeError, ValueError) as exc:
        raise EngineError(f"{source}: bad model card in the ONNX metadata ({exc})") from None


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict (reads the file with the ``onnx`` package)."""
    import onnx

    _require_file(path)
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends
        raise EngineError(f"{os.fspath(path)}: not an ONNX model ({first_line(exc)})") from None
    return {p.key: p.value for p in model.metadata_props}


# ----------------------------------------------------------------------------------------------
# Engines


class ActionEngine:
    """``predict(volumes [N, K, T, H, W] float32) -> logits [N, classes]`` (numpy).

    Attributes: ``name`` (the engine kind, e.g. ``"onnx-int8"``), ``card`` (the ModelCard, or
    None for a foreign ONNX file), ``input_shape`` (``(K, T, H, W)`` of one volume; a None entry
    is free), ``num_classes``, ``class_names``, ``precision`` (``"fp32"``/``"int8"``),
    ``device``, ``threads`` (None = the runtime's default), ``source`` (the file).
    """

    name: str = "engine"
    precision: str = "fp32"
    device: str = "cpu"

    def __init__(self, card: "ModelCard | None", input_shape: Sequence[int | None], num_classes: int,
                 threads: int | None, source: str):
        if threads is not None and (int(threads) != threads or threads < 1):
            raise EngineError(f"threads must be a positive integer or None, got {threads!r}")
        self.card = card
        self.input_shape = tuple(input_shape)
        self.num_classes = int(num_classes)
        self.threads = None if threads is None else int(threads)
        self.source = source

    @property
    def class_names(self) -> list[str] | None:
        return None if self.card is None else self.card.class_names

    def predict(self, volumes: "np.ndarray | torch.Tensor") -> np.ndarray:
        raise NotImplementedError

    def __call__(self, volumes: "np.ndarray | torch.Tensor") -> np.ndarray:
        return self.predict(volumes)

    def warmup(self, batch: int = 1) -> None:
        """Run once on zeros (the first call of a runtime allocates and plans)."""
        shape = [1 if d is None else d for d in self.input_shape]
        self.predict(np.zeros((batch, *shape), dtype=np.float32))

    def info(self) -> dict[str, Any]:
        """What the engine runs, for logs and benchmark reports."""
        card = self.card
        return {"engine": self.name, "source": self.source, "precision": self.precision, "device": self.device,
                "threads": self.threads, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "arch": None if card is None else card.arch,
                "heatmap": None if card is None else card.heatmap,
                "limbs": None if card is None else card.limbs,
                "sigma": None if card is None else card.sigma}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, source={self.source!r}, input_shape={self.input_shape}, "
                f"classes={self.num_classes}, threads={self.threads})")

    def _check_batch(self, volumes) -> np.ndarray | "torch.Tensor":
        shape = tuple(volumes.shape) if hasattr(volumes, "shape") else np.shape(volumes)
        expected = self.input_shape
        if len(shape) != 5 or any(e is not None and e != s for e, s in zip(expected, shape[1:])):
            want = ", ".join("?" if d is None else str(d) for d in expected)
            raise EngineError(f"{self.name} engine ({self.source}): expected volumes [N, {want}], got {list(shape)}")
        if shape[0] == 0:
            raise EngineError(f"{self.name} engine ({self.source}): empty batch")
        return volumes


class TorchEngine(ActionEngine):
    """Eager PyTorch on the CPU; ``channels_last_3d`` runs it in that memory format.

    ``model`` is a posestream checkpoint path or an ``nn.Module`` (then ``card`` should say how
    to feed it; without one only the channel count is known; with ``channels_last_3d`` the
    engine converts a copy and leaves the caller's module as it was). ``source`` names the
    model in messages.
    """

    def __init__(self, model: "torch.nn.Module | str | os.PathLike", card: "ModelCard | None" = None, *,
                 channels_last_3d: bool = False, threads: int | None = None, source: str | None = None):
        import torch

        if isinstance(model, (str, os.PathLike)):
            source = os.fspath(model)
            _require_file(source)
            if _looks_like_onnx(source):
                raise EngineError(f"{source}: the torch engines need a posestream checkpoint, this is an ONNX "
                                  "model (use the onnx engine)")
            model, card = _load_checkpoint(source)
        source = source or "<module>"
        if not isinstance(model, torch.nn.Module):
            raise EngineError(f"TorchEngine needs an nn.Module or a checkpoint path, got {type(model).__name__}")
        if _is_rgbpose(model, card):
            raise EngineError(f"{source}: RGBPose-Conv3D also needs RGB frames; the action engines serve "
                              "pose-only models")
        in_channels = getattr(model, "in_channels", None) if card is None else card.in_channels
        if card is not None:
            input_shape: tuple = (card.in_channels, card.clip_len, card.size, card.size)
            num_classes = card.num_classes
        else:
            input_shape = (in_channels, None, None, None)
            num_classes = _torch_num_classes(model)
        super().__init__(card, input_shape, num_classes, threads, source)
        self.channels_last_3d = bool(channels_last_3d)
        self.name = "torch-cl3d" if self.channels_last_3d else "torch"
        if self.channels_last_3d:
            if source == "<module>":   # the caller's module: convert a copy, not theirs
                model = copy.deepcopy(model)
            model = model.to(memory_format=torch.channels_last_3d)
        self.model = model.eval()
        self._set_threads()

    def _check_batch(self, volumes):
        # The network takes any T, H, W; only K is fixed. The card's geometry is what the model
        # was trained on (and what the ONNX export fixes), but torch does not insist on it.
        shape = tuple(volumes.shape) if hasattr(volumes, "shape") else np.shape(volumes)
        if len(shape) != 5 or shape[1] != self.input_shape[0]:
            raise EngineError(f"{self.name} engine ({self.source}): expected volumes [N, {self.input_shape[0]}, T, H, W], "
                              f"got {list(shape)}")
        if shape[0] == 0:
            raise EngineError(f"{self.name} engine ({self.source}): empty batch")
        return volumes

    def _set_threads(self) -> None:
        import torch

        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def predict(self, volumes) -> np.ndarray:
        import torch

        self._check_batch(volumes)
        self._set_threads()
        x = volumes if isinstance(volumes, torch.Tensor) else torch.from_numpy(_as_float32(volumes))
        x = x.to(dtype=torch.float32, device="cpu")
        with torch.inference_mode():
            if self.channels_last_3d:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            out = self.model(x)
        return out.numpy()


def volume_io(source: str, inputs: Sequence[Any], outputs: Sequence[Any],
              card: ModelCard | None) -> tuple[str, str, list[int | None], int]:
    """``(input name, output name, input dims with None for dynamic ones, number of classes)``
    of an action model's session (ONNX Runtime's or OpenVINO's ``get_inputs()`` /
    ``get_outputs()``), or a one-line :class:`EngineError` when it does not take one volume
    batch ``[N, K, T, H, W]`` or its class count cannot be told (from the card, else the output)."""
    if len(inputs) != 1:
        arch = f" ({card.arch})" if card is not None else ""
        raise EngineError(f"{source}: the model{arch} takes {len(inputs)} inputs "
                          f"({', '.join(i.name for i in inputs)}); the action engines feed one heatmap volume")
    dims = [d if isinstance(d, int) else None for d in inputs[0].shape]
    if len(dims) != 5:
        raise EngineError(f"{source}: input {inputs[0].name!r} has shape {inputs[0].shape}, "
                          "expected a volume batch [N, K, T, H, W]")
    out_dims = outputs[0].shape
    if card is not None:
        num_classes = card.num_classes
    elif len(out_dims) == 2 and isinstance(out_dims[1], int):
        num_classes = out_dims[1]
    else:
        raise EngineError(f"{source}: cannot tell the number of classes from output shape {out_dims}")
    return inputs[0].name, outputs[0].name, dims, num_classes


class OnnxEngine(ActionEngine):
    """ONNX Runtime on a posestream ONNX file (fp32 or int8).

    ``device``: ``"auto"`` (CUDA when ONNX Runtime has the CUDAExecutionProvider, else CPU),
    ``"cpu"`` or ``"cuda"`` (falls back to the CPU with a logged notice when CUDA is missing).
    ``threads``: ONNX Runtime's intra-op threads for this session (None = its default, one per
    physical core).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, device: str = "auto"):
        import onnxruntime as ort

        source = os.fspath(path)
        _require_file(source)
        if device not in ("auto", "cpu", "cuda"):
            raise EngineError(f"device must be auto, cpu or cuda, got {device!r}")
        if threads is not None and (int(threads) != threads or threads < 1):
            raise EngineError(f"threads must be a positive integer or None, got {threads!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3  # errors only; ORT's warnings are about graph rewrites
        providers = ["CPUExecutionProvider"]
        cuda_available = "CUDAExecutionProvider" in ort.get_available_providers()
        if device in ("auto", "cuda") and cuda_available:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device == "cuda":
            log.warning("%s: ONNX Runtime has no CUDAExecutionProvider here (providers: %s); running on the CPU",
                        source, ", ".join(ort.get_available_providers()))
        try:
            session = ort.InferenceSession(source, options, providers=providers)
        except Exception as exc:
            if providers[0] != "CUDAExecutionProvider":
                raise EngineError(f"{source}: not a loadable ONNX model ({first_line(exc)})") from None
            log.warning("%s: CUDA session failed (%s); running on the CPU", source, first_line(exc))
            try:
                session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
            except Exception as exc2:
                raise EngineError(f"{source}: not a loadable ONNX model ({first_line(exc2)})") from None
        active = session.get_providers()
        if providers[0] == "CUDAExecutionProvider" and active[0] != "CUDAExecutionProvider":
            log.warning("%s: ONNX Runtime did not start CUDA (active: %s); running on the CPU", source, ", ".join(active))
        self.session = session
        self.device = "cuda" if active[0] == "CUDAExecutionProvider" else "cpu"
        props = dict(session.get_modelmeta().custom_metadata_map)
        self.metadata = props
        card = card_from_metadata(props, source)
        self.input_name, self.output_name, dims, num_classes = volume_io(
            source, session.get_inputs(), session.get_outputs(), card)
        self.batch_dynamic = dims[0] is None
        self.fixed_batch = dims[0]
        self.precision = props.get(META_PRECISION) or ("int8" if _has_qdq(source) else "fp32")
        super().__init__(card, dims[1:], num_classes, threads, source)
        self.name = "onnx-int8" if self.precision == "int8" else "onnx"

    def predict(self, volumes) -> np.ndarray:
        self._check_batch(volumes)
        if type(volumes).__module__.startswith("torch"):
            volumes = volumes.detach().cpu().numpy()
        x = _as_float32(volumes)
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            # An export with a fixed batch: run it volume group by volume group.
            b = self.fixed_batch
            if x.shape[0] % b:
                raise EngineError(f"{self.name} engine ({self.source}): the model was exported for batches of "
                                  f"{b}, got {x.shape[0]} volumes")
            return np.concatenate([self.session.run([self.output_name], {self.input_name: x[i:i + b]})[0]
                                   for i in range(0, x.shape[0], b)])
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["providers"] = self.session.get_providers()
        info["backend"] = "onnxruntime"
        return info

    def _adopt(self, source: str, session: Any, threads: int | None) -> str:
        """Run the posestream ONNX file ``source`` through ``session`` (ONNX Runtime's shape):
        its card, input and output names, shapes and batch; returns the file's precision."""
        props = read_onnx_metadata(source)
        card = card_from_metadata(props, source)
        self.input_name, self.output_name, dims, num_classes = volume_io(
            source, session.get_inputs(), session.get_outputs(), card)
        self.session = session
        self.metadata = props
        self.batch_dynamic = dims[0] is None
        self.fixed_batch = dims[0]
        ActionEngine.__init__(self, card, dims[1:], num_classes, threads, source)
        return props.get(META_PRECISION) or ("int8" if _has_qdq(source) else "fp32")


class OpenVinoEngine(OnnxEngine):
    """OpenVINO on a posestream ONNX file, on the CPU (see :mod:`posestream.engines.backend`
    for the compile settings: explicit precision hint, ``threads`` as INFERENCE_NUM_THREADS,
    LATENCY hint, compiled-model cache).

    ``precision``: ``"fp32"`` (the default; logits within about 1.5e-5 of ONNX Runtime's) or
    ``"bf16"`` (AMX; several times faster on a Sapphire Rapids Xeon, but it moved X3D-s logits
    by 0.4: :func:`make_engine` builds it only with :func:`precision_check` printed). An int8
    (QDQ) file runs as int8 whatever ``precision`` says about the float parts (:func:`make_engine`
    prints its agreement with ONNX Runtime's int8, the path ``export --int8`` checked). Raises when
    OpenVINO is missing or cannot compile the file (:func:`make_engine` then falls back).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, precision: str = "fp32"):
        from posestream.engines.backend import OpenVinoSession

        source = os.fspath(path)
        _require_file(source)
        if threads is not None and (int(threads) != threads or threads < 1):
            raise EngineError(f"threads must be a positive integer or None, got {threads!r}")
        if precision not in ("fp32", "bf16"):
            raise EngineError(f"the openvino engine runs fp32 or bf16, got precision {precision!r}")
        file_precision = self._adopt(source, OpenVinoSession(source, threads, precision=precision,
                                                             static_shapes=False), threads)
        self.precision = "int8" if file_precision == "int8" else precision
        self.accuracy: dict[str, Any] | None = None  # precision_check's figures, for bf16
        self.name = "openvino"
        self.device = "cpu"

    def info(self) -> dict[str, Any]:
        info = ActionEngine.info(self)
        info.update(self.session.info())
        if self.accuracy is not None:
            info["accuracy_check"] = dict(self.accuracy)
        return info


class TritonEngine(OnnxEngine):
    """A posestream ONNX file's model on a Triton server (:mod:`posestream.engines.triton`):
    the server's name for it is the file's (``triton_model_name``), the file itself gives the
    card, the shapes and the local fall-back (OpenVINO or ONNX Runtime) used while the server is
    gone. ``triton``: ``{"url": "grpc://HOST:PORT", "timeout_s": ..., "retries": ..., "probe_s": ...}``.
    Volumes go to the server as one request per batch (Triton's dynamic batcher joins the
    requests of several clients)."""

    def __init__(self, path: str | os.PathLike, triton: Mapping[str, Any], *, threads: int | None = None):
        from posestream.engines.backend import open_session

        source = os.fspath(path)
        _require_file(source)
        if threads is not None and (int(threads) != threads or threads < 1):
            raise EngineError(f"threads must be a positive integer or None, got {threads!r}")
        session = open_session(source, threads, "action model", backend="triton", error=EngineError, triton=triton)
        self.precision = self._adopt(source, session, threads)
        self.name = "triton"
        self.device = "remote"

    def info(self) -> dict[str, Any]:
        info = ActionEngine.info(self)
        info.update(self.session.info())
        return info

    def stats(self) -> dict[str, Any]:
        return self.session.stats()


def precision_check(reference: ActionEngine, candidate: ActionEngine, volumes: np.ndarray) -> dict[str, Any]:
    """How far ``candidate`` (e.g. OpenVINO bf16) is from ``reference`` (fp32) on ``volumes``:
    the same figures ``posestream export --int8`` prints (max |cand - ref| / max |ref|, top-1
    agreement) plus the max absolute logit difference."""
    ref, got = reference.predict(volumes), candidate.predict(volumes)
    diff = np.abs(got - ref)
    return {"volumes": int(len(volumes)), "max_abs_logit_diff": float(diff.max()),
            "max_rel_logit_error": float(diff.max() / max(np.abs(ref).max(), 1e-12)),
            "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}


def check_volumes(card: "ModelCard | None", count: int = 12, seed: int = 1) -> np.ndarray:
    """Volumes for :func:`precision_check`: the held-out set ``posestream export --int8``
    checks int8 on (sample skeleton clips rendered by the serving rasterizer at the card's
    geometry; no torch needed)."""
    from posestream.train.export import sample_calibration_volumes

    if card is None:
        raise EngineError("a precision check needs the model card (a posestream ONNX file) to render volumes")
    return sample_calibration_volumes(card, count=count, seed=seed)


def format_precision_check(name: str, check: Mapping[str, Any], reference: str = "fp32") -> str:
    return (f"{name}: on {check['volumes']} held-out volumes vs {reference}, "
            f"max |diff| = {check['max_abs_logit_diff']:.4f} "
            f"(max |diff| / max |{reference}| = {check['max_rel_logit_error']:.3f}), "
            f"same top-1 in {100 * check['argmax_agreement']:.0f}%")


def _openvino_or_onnx(source: str, threads: int | None, precision: str, device: str) -> ActionEngine:
    """:class:`OpenVinoEngine`, or ONNX Runtime's engine after one notice when OpenVINO is missing
    or cannot compile the file."""
    from posestream.engines.backend import notice_once, openvino_available

    if openvino_available():
        try:
            engine = OpenVinoEngine(source, threads=threads, precision=precision)
        except EngineError:
            raise
        except Exception as exc:
            notice_once(f"openvino-action:{source}", "OpenVINO could not load %s (%s); the action model runs in "
                        "ONNX Runtime", source, first_line(exc))
        else:
            if engine.precision != "fp32":
                # bf16 against OpenVINO fp32; an int8 file against ONNX Runtime's int8 (the
                # path `posestream export --int8` checked against fp32)
                if engine.precision == "int8":
                    reference, ref_name = OnnxEngine(source, threads=threads, device="cpu"), "ONNX Runtime int8"
                else:
                    reference, ref_name = OpenVinoEngine(source, threads=threads), "fp32"
                engine.accuracy = precision_check(reference, engine, check_volumes(engine.card))
                engine.accuracy["reference"] = ref_name
                message = format_precision_check(f"openvino {engine.precision} ({source})", engine.accuracy, ref_name)
                print(message, file=sys.stderr)  # printed, as `posestream export --int8` prints its check
            return engine
    if precision != "fp32":
        raise EngineError(f"{source}: {precision} needs OpenVINO (pip install openvino); ONNX Runtime runs fp32")
    return OnnxEngine(source, threads=threads, device="cpu" if device == "auto" else device)


# ----------------------------------------------------------------------------------------------
# Choosing an engine


def make_engine(kind: str, path: str | os.PathLike, *, threads: int | None = None,
                device: str = "auto", options: Mapping[str, Any] | None = None) -> ActionEngine:
    """Build an engine by name: ``torch``, ``torch-cl3d`` (a posestream checkpoint), ``onnx``
    (any posestream ONNX file, ONNX Runtime), ``onnx-int8`` (an int8 ONNX file), ``openvino``
    (any posestream ONNX file in OpenVINO; ``options={"precision": "bf16"}`` prints its
    accuracy check; falls back to ``onnx`` with a notice) or ``auto``; on a GPU
    ``torch-cuda`` (a checkpoint) or ``tensorrt`` (an ONNX file), built by
    :func:`posestream.engines.action_gpu.make_gpu_engine` with ``options`` (``precision``,
    ``max_batch``, ``cache_dir``, ...) and falling back to a CPU engine, with a logged notice,
    where CUDA is missing (``tensorrt`` without TensorRT: to ``torch-cuda``, see there).

    ``auto`` is the fastest CPU engine the file allows, as measured by ``benchmarks/action.py``
    (2 vCPU AMD EPYC, 2 threads, 17 x 48 x 56 x 56, median ms per call at batch 1 / batch 4):

    - an fp32 ONNX file runs in OpenVINO where it is installed (and the device is the CPU, or
      ONNX Runtime has no CUDA): on an Intel Xeon with AMX, X3D-s 13 vs 47 ms at batch 1 and
      62 vs 205 at batch 4 against ONNX Runtime (one thread; ``benchmarks/backends.py``); else
      in ONNX Runtime. An int8 file runs in ONNX Runtime as it is (its accuracy was checked
      there, not in OpenVINO). An int8 file is the fastest ONNX Runtime engine
      overall, and the recommended CPU deployment is ``export_onnx`` -> ``quantize_int8`` ->
      ``auto`` on the int8 file: X3D-s 27 / 84 ms (torch eager 53 / 205: 2.0x / 2.4x), SlowOnly
      156 / 555 (eager 351 / 2338: 2.3x / 4.2x), C3D-s 114 / 384 (eager 212 / 849: 1.9x /
      2.2x), with no top-1 change on our validation clips for a trained X3D-s;
    - a checkpoint runs in PyTorch with channels-last-3d, the fastest torch path for every
      variant measured (X3D-s 33 / 88 ms, 1.6x / 2.3x eager; X3D 2.6x / 2.2x; SlowOnly 1.8x /
      1.5x; C3D(-s) 1.1x) and, for X3D at batch 1, the fastest engine of all. A checkpoint is
      never silently converted to int8: that needs calibration volumes from the user's data.

    ``device`` applies to the ONNX engines (see :class:`OnnxEngine`); the torch engines run on
    the CPU. Errors (unknown kind, missing or wrong file) are one-line :class:`EngineError`.
    """
    kind_name = str(kind).strip().lower()
    if kind_name not in ALL_ENGINE_KINDS:
        raise EngineError(f"unknown engine {kind!r}; choose one of {', '.join(ALL_ENGINE_KINDS)}")
    source = os.fspath(path)
    _require_file(source)
    if kind_name in GPU_ENGINE_KINDS:
        from posestream.engines.action_gpu import make_gpu_engine

        return make_gpu_engine(kind_name, source, threads=threads, device=device, options=options)
    is_onnx = _looks_like_onnx(source)
    precision = str((options or {}).get("precision") or "fp32")
    if precision != "fp32" and kind_name not in ("openvino",):
        raise EngineError(f"precision {precision!r} is for the openvino (or GPU) engines; {kind_name} runs the "
                          "file's own precision")
    if kind_name == "triton":
        if not is_onnx:
            raise EngineError(f"{source}: the triton engine needs an ONNX model (the server runs it); export the "
                              "checkpoint first (posestream export)")
        triton = (options or {}).get("triton")
        if not triton or not triton.get("url"):
            raise EngineError("the triton engine needs a server: --triton-url grpc://HOST:PORT")
        return TritonEngine(source, triton, threads=threads)
    if kind_name == "openvino":
        if not is_onnx:
            raise EngineError(f"{source}: the openvino engine needs an ONNX model; export the checkpoint first "
                              "(posestream export)")
        return _openvino_or_onnx(source, threads, precision, device)
    if kind_name == "auto":
        if is_onnx:
            if device != "cuda" and not _onnxruntime_has_cuda(device) and not _has_qdq(source):
                return _openvino_or_onnx(source, threads, "fp32", device)
            return OnnxEngine(source, threads=threads, device=device)
        return TorchEngine(source, channels_last_3d=True, threads=threads)
    if kind_name in ("torch", "torch-cl3d"):
        if is_onnx:
            raise EngineError(f"{source}: the {kind_name} engine needs a posestream checkpoint, this is an ONNX "
                              "model (use the onnx engine)")
        return TorchEngine(source, channels_last_3d=kind_name == "torch-cl3d", threads=threads)
    if not is_onnx:
        raise EngineError(f"{source}: the {kind_name} engine needs an ONNX model; export the checkpoint first "
                          "(posestream.train.export.export_onnx, then quantize_int8 for onnx-int8)")
    engine = OnnxEngine(source, threads=threads, device=device)
    if kind_name == "onnx-int8" and engine.precision != "int8":
        raise EngineError(f"{source}: an {engine.precision} model, not int8; quantize it first "
                          "(posestream.engines.quantize.quantize_int8)")
    return engine


# ----------------------------------------------------------------------------------------------
# Helpers


def _load_checkpoint(source: str):
    from posestream.train.checkpoints import load_model

    try:
        return load_model(source)
    except ValueError as exc:
        raise EngineError(str(exc)) from None


def _require_file(path: str | os.PathLike) -> None:
    p = Path(path)
    if not p.exists():
        raise EngineError(f"{os.fspath(path)}: no such file")
    if not p.is_file():
        raise EngineError(f"{os.fspath(path)}: not a file")


def _looks_like_onnx(path: str) -> bool:
    """An ONNX file by its name, or (for other names) by not being a zip (torch.save's format)."""
    lower = path.lower()
    if lower.endswith(".onnx"):
        return True
    if lower.endswith((".pt", ".pth", ".ckpt")):
        return False
    with open(path, "rb") as f:
        head = f.read(4)
    return head[:2] != b"PK" and head[:1] != b"\x80"  # zip (torch.save) or a raw pickle


def _onnxruntime_has_cuda(device: str) -> bool:
    """Whether ``OnnxEngine(device=device)`` would run on CUDA (then ``auto`` keeps it)."""
    if device == "cpu":
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _has_qdq(path: str) -> bool:
    try:
        import onnx

        model = onnx.load(path, load_external_data=False)
    except Exception:
        return False
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _as_float32(volumes) -> np.ndarray:
    x = np.asarray(volumes)
    if x.dtype != np.float32:
        if not np.issubdtype(x.dtype, np.floating):
            raise EngineError(f"volumes must be floating point heatmaps, got dtype {x.dtype}")
        x = x.astype(np.float32)
    return np.ascontiguousarray(x)


def _is_rgbpose(model, card) -> bool:
    if card is not None and card.arch == "rgbpose_conv3d":
        return True
    return type(model).__name__ == "RGBPoseConv3D"


def _torch_num_classes(model) -> int:
    fc = getattr(getattr(model, "head", None), "fc", None)
    if fc is None or not hasattr(fc, "out_features"):
        raise EngineError("cannot tell the number of classes of this module; pass its ModelCard")
    return int(fc.out_features)


__all__ = [
    "ENGINE_KINDS", "GPU_ENGINE_KINDS", "ALL_ENGINE_KINDS", "EngineError", "ActionEngine", "TorchEngine",
    "OnnxEngine", "OpenVinoEngine", "make_engine", "precision_check", "check_volumes", "format_precision_check",
    "card_metadata", "card_from_metadata", "read_onnx_metadata",
]
