"""The Triton model repository (`posestream export --triton-repo`, engines/triton_models.py).

Every generated config.pbtxt is parsed with Triton's own model-config schema (tritonclient's
``model_config_pb2``, the ``triton`` extra) by protobuf's text-format parser, which rejects any
unknown field or misspelt enum, and the parsed fields are compared with the ONNX files' real
tensors (read again here with onnx, not through the code under test)."""
import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from onnx import helper
from tritonclient.grpc import model_config_pb2

from posestream.engines.pose import LANDMARK_FILE, MOVENET_FILE, dynamic_batch_model, shipped_model
from posestream.engines.triton_models import (REPO_MARKER, TritonModelError, default_served_models, served_model,
                                              triton_model_name, triton_tensor_name, write_model_repository)

ACTION_FILE = "x3d_s_synthetic.onnx"
DTYPES = {"float32": model_config_pb2.TYPE_FP32, "uint8": model_config_pb2.TYPE_UINT8}


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def onnx_tensors(path: Path):
    """(name, numpy dtype name, full dims with -1 for variable) of the graph's inputs and outputs."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def rows(values):
        return [(v.name, helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                 [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim])
                for v in values]

    return rows(graph.input), rows(graph.output)


def test_names():
    assert triton_model_name(shipped_model(ACTION_FILE)) == "x3d_s_synthetic"
    assert triton_model_name("/x/movenet_multipose_lightning.onnx") == "movenet_multipose_lightning"
    assert triton_model_name("/x/my model.v2.onnx") == "my_model_v2"
    assert triton_tensor_name("serving_default_input:0") == "serving_default_input_0"
    assert triton_tensor_name("StatefulPartitionedCall:0") == "StatefulPartitionedCall_0"
    assert triton_tensor_name("a-b.c") == "a_b_c"


def test_served_models_read_from_the_files():
    action, detector, landmark = default_served_models()
    assert [m.name for m in (action, detector, landmark)] == ["x3d_s_synthetic", "movenet_multipose_lightning",
                                                              "pose_landmark_full"]
    assert [m.what for m in (action, detector, landmark)] == ["action model", "person detector", "landmark model"]
    assert (action.batch_dynamic, detector.batch_dynamic, landmark.batch_dynamic) == (True, False, True)
    assert [(s.name, s.dtype, s.dims) for s in action.inputs] == [("volume", "float32", (17, 32, 48, 48))]
    assert [(s.name, s.dtype, s.dims) for s in detector.inputs] == [("serving_default_input:0", "uint8", (-1, -1, 3))]
    # the landmark model is served from its dynamic-batch copy; MoveNet's graph has no such copy
    assert landmark.onnx_path == shipped_model(LANDMARK_FILE)
    assert landmark.load_path == dynamic_batch_model(shipped_model(LANDMARK_FILE)) != landmark.onnx_path
    assert detector.load_path == detector.onnx_path == shipped_model(MOVENET_FILE)
    assert action.load_path == action.onnx_path


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "tensorrt"])
def test_repository_configs_parse_with_tritons_schema(tmp_path, backend):
    models = default_served_models()
    repo = tmp_path / "repo"
    configs = write_model_repository(repo, models, backend=backend, max_batch=6, max_queue_delay_us=1500, instances=2)
    assert configs == [repo / m.name / "config.pbtxt" for m in models]
    assert sorted(p.name for p in repo.iterdir()) == sorted([REPO_MARKER] + [m.name for m in models])
    for m, config_path in zip(models, configs):
        config = parse_config(config_path)
        model_file = repo / m.name / "1" / "model.onnx"
        assert model_file.read_bytes() == Path(m.load_path).read_bytes()
        inputs, outputs = onnx_tensors(model_file)
        assert config.name == m.name
        assert config.default_model_filename == "model.onnx"
        assert config.backend == ("openvino" if backend == "openvino" else "onnxruntime")
        batching = m.name != "movenet_multipose_lightning"
        assert config.max_batch_size == (6 if batching else 0)
        for section, real in ((config.input, inputs), (config.output, outputs)):
            assert [t.name for t in section] == [name for name, _, _ in real]
            assert [t.data_type for t in section] == [DTYPES[dtype] for _, dtype, _ in real]
            for t, (_, _, dims) in zip(section, real):
                if batching:
                    assert dims[0] == -1  # the file itself batches
                    assert list(t.dims) == dims[1:]
                else:
                    assert list(t.dims) == dims and dims[0] == 1
        assert config.HasField("dynamic_batching") == batching
        if batching:
            assert config.dynamic_batching.max_queue_delay_microseconds == 1500
        kind = model_config_pb2.ModelInstanceGroup.KIND_GPU if backend == "tensorrt" else \
            model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert [(g.count, g.kind) for g in config.instance_group] == [(2, kind)]
        accelerators = [a.name for a in config.optimization.execution_accelerators.gpu_execution_accelerator]
        assert accelerators == (["tensorrt"] if backend == "tensorrt" else [])
    marker = json.loads((repo / REPO_MARKER).read_text())
    assert marker["backend"] == backend and marker["models"] == [m.name for m in models]


def test_schema_catches_a_typo(tmp_path):
    # the check above is only worth something if the parser rejects what Triton would reject
    config = (write_model_repository(tmp_path / "r", default_served_models()[:1]))[0]
    bad = config.read_text().replace("max_queue_delay_microseconds", "max_queue_delay_microsecond")
    with pytest.raises(text_format.ParseError):
        text_format.Parse(bad, model_config_pb2.ModelConfig())
    with pytest.raises(text_format.ParseError):
        text_format.Parse(config.read_text().replace("KIND_CPU", "KIND_CPUS"), model_config_pb2.ModelConfig())


def test_rewrite_replaces_a_posestream_repository(tmp_path):
    repo = tmp_path / "repo"
    models = default_served_models()
    write_model_repository(repo, models)
    write_model_repository(repo, models[:1], backend="openvino", max_batch=4)
    assert sorted(p.name for p in repo.iterdir()) == sorted([REPO_MARKER, models[0].name])
    assert parse_config(repo / models[0].name / "config.pbtxt").max_batch_size == 4
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no temporary folders left


def test_bad_inputs(tmp_path):
    models = default_served_models()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(TritonModelError, match="not empty and is not a model repository posestream wrote"):
        write_model_repository(foreign, models)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_model_repository(empty, models[:1])  # an empty folder is fine
    with pytest.raises(TritonModelError, match="nope.onnx: action model file not found"):
        served_model(tmp_path / "nope.onnx", what="action model")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(TritonModelError, match="junk.onnx: not a readable ONNX"):
        served_model(junk)
    with pytest.raises(TritonModelError, match="unknown Triton backend"):
        write_model_repository(tmp_path / "x", models, backend="tflite")
    with pytest.raises(TritonModelError, match="max_batch must be at least 1"):
        write_model_repository(tmp_path / "x", models, max_batch=0)
    assert not (tmp_path / "x").exists()


def test_cli_writes_a_repository_without_torch(tmp_path):
    # `posestream export --triton-repo` in an interpreter where torch cannot be imported
    repo = tmp_path / "repo"
    code = ("import sys; sys.modules['torch'] = None; from posestream.cli import main; "
            f"sys.exit(main(['export', '--triton-repo', {str(repo)!r}, '--max-batch', '4']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith(f"wrote {repo}/") for line in lines)
    assert parse_config(repo / "x3d_s_synthetic" / "config.pbtxt").max_batch_size == 4
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "a").write_text("")
    out = subprocess.run([sys.executable, "-m", "posestream", "export", "--triton-repo", str(foreign)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and f"{foreign}: folder is not empty" in out.stderr
