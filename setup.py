"""posestream: one distribution, one import namespace.

The top-level folders realtime/, engines/ and train/ are mapped into the ``posestream``
namespace so that nothing generic like ``train`` lands in site-packages.
"""
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "posestream" / "__init__.py").read_text()).group(1)

setup(
    name="posestream",
    version=VERSION,
    description="Real-time streaming skeleton action recognition with PoseConv3D",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # 3.11: run configs are TOML, read with the standard library's tomllib (new in 3.11); a
    # tomli fallback for 3.10 would be a second code path that no test runs.
    python_requires=">=3.11",
    packages=[
        "posestream",
        "posestream.engines",
        "posestream.realtime",
        "posestream.train",
        "posestream.train.data",
        "posestream.train.models",
    ],
    package_dir={
        "posestream": "posestream",
        "posestream.engines": "engines",
        "posestream.realtime": "realtime",
        "posestream.train": "train",
        "posestream.train.data": "train/data",
        "posestream.train.models": "train/models",
    },
    # The runtime: serving the shipped (or any exported) ONNX model needs no torch. Training,
    # torch checkpoints and export come with the `train` extra below.
    install_requires=[
        "numpy>=1.24",
        "pillow>=9",
        "tqdm>=4.60",
        "scipy>=1.10",
        # OpenCV 5 removed HOGDescriptor/CascadeClassifier and changed video I/O; stay on 4.x.
        "opencv-python-headless>=4.8,<5",
        "onnxruntime>=1.17",
        # the CPU runtime of the three networks (engines/backend.py): 1.9x-3.6x faster than ONNX
        # Runtime on an Intel Xeon with AMX, same outputs in fp32; ONNX Runtime stays the
        # fallback where its wheel is missing or a model fails to compile. Tested with 2026.4.
        "openvino>=2024.0",
        # reading a model's metadata and the int8 quantizer; tested with onnx 1.23 and
        # onnxruntime 1.32.
        "onnx>=1.18",
        # `--mqtt`: events to home automation, NVRs and pagers. A runtime dependency, not an
        # extra: it is one small pure-Python wheel with no dependencies of its own, and a
        # camera box installed with plain `pip install posestream` then speaks MQTT without a
        # second install step (and without a "needs the mqtt extra" error path that no test
        # could run). 2.x: the CallbackAPIVersion.VERSION2 callbacks; tested with 2.2.0.
        "paho-mqtt>=2.0,<3",
        # event clips (realtime/evidence.py): H.264 in MP4 through libx264, which PyAV's wheels
        # bundle with FFmpeg (OpenCV's writers give mp4v, which browsers do not play). Tested
        # with av 18.1.
        "av>=14",
    ],
    # The pose front end's converted networks (see engines/models/MODEL_CARD.md).
    package_data={
        "posestream.engines": ["models/*.onnx", "models/*.pth", "models/*.json", "models/*.md", "models/LICENSE", "models/NOTICE",
                               # the CUDA rasterizer's source, compiled at run time with NVRTC
                               "kernels/*.cu"],
        # PYSKL-format training configs, runnable by name (posestream train ntu60_xsub_joint).
        # the operator's dashboard that --http serves at /
        "posestream.realtime": ["static/*.html", "static/*.js", "static/*.css"],
        "posestream.train": ["configs/*.py", "configs/label_maps/*.txt",
                             # the front end's measured errors the generator's noise model is checked against
                             "data/front_end_measured.json"],
    },
    extras_require={
        # training, evaluation, torch checkpoints, the torch engines and export. torch is pinned
        # by the README's install commands (torch==2.13.0, CPU wheel); a bare range here keeps
        # an already-installed build instead of pulling a CUDA one. torch.onnx's dynamo exporter
        # builds the graph with onnxscript (tested with 0.7).
        "train": ["torch>=2.1", "onnxscript>=0.4"],
        # playwright drives a real browser (Debian's chromium, not Playwright's own download)
        # through the dashboard in tests/test_dashboard.py; tested with 1.65.
        "test": ["pytest>=7", "hypothesis>=6", "playwright>=1.40", "tritonclient[grpc]>=2.50"],
        # the client of a Triton Inference Server (`--engine triton`, the model-config schema the
        # tests parse `posestream export --triton-repo` configs with); tested with 2.73. The
        # server itself (`posestream serve`) runs in its own Python 3.13 venv:
        # scripts/setup_serve.sh.
        "triton": ["tritonclient[grpc]>=2.50"],
        "tensorboard": ["tensorboard>=2.10"],
        # physics falls for `posestream synth` (train/data/ragdoll.py): MuJoCo simulates the CMU
        # humanoid of dm-control. Only dm-control's model file is used, and its own dependencies
        # (labmaze, glfw, PyOpenGL, ...) are not needed: install it with
        # `pip install --no-deps dm-control==1.0.50` (tested with mujoco 4.0.0).
        "synth": ["mujoco>=3.2"],
    },
    entry_points={"console_scripts": ["posestream=posestream.cli:main"]},
)
