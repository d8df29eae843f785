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
    python_requires=">=3.10",
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
    install_requires=[
        # torch is pinned by the README's install command (torch==2.13.0, CPU wheel); a bare
        # range here keeps an already-installed build instead of pulling a CUDA one.
        "torch>=2.1",
        "numpy>=1.24",
        "pillow>=9",
        "tqdm>=4.60",
        "scipy>=1.10",
        # OpenCV 5 removed HOGDescriptor/CascadeClassifier and changed video I/O; stay on 4.x.
        "opencv-python-headless>=4.8,<5",
        "onnxruntime>=1.17",
        # ONNX export (torch.onnx's dynamo exporter builds the graph with onnxscript) and the
        # int8 quantizer; tested with onnx 1.23, onnxscript 0.7 and onnxruntime 1.32.
        "onnx>=1.18",
        "onnxscript>=0.4",
    ],
    # The pose front end's converted networks (see engines/models/MODEL_CARD.md).
    package_data={
        "posestream.engines": ["models/*.onnx", "models/*.pth", "models/*.json", "models/*.md", "models/LICENSE", "models/NOTICE",
                               # the CUDA rasterizer's source, compiled at run time with NVRTC
                               "kernels/*.cu"],
        # PYSKL-format training configs, runnable by name (posestream train ntu60_xsub_joint).
        "posestream.train": ["configs/*.py", "configs/label_maps/*.txt",
                             # the front end's measured errors the generator's noise model is checked against
                             "data/front_end_measured.json"],
    },
    extras_require={
        "test": ["pytest>=7"],
        "tensorboard": ["tensorboard>=2.10"],
        # physics falls for `posestream synth` (train/data/ragdoll.py): MuJoCo simulates the CMU
        # humanoid of dm-control. Only dm-control's model file is used, and its own dependencies
        # (labmaze, glfw, PyOpenGL, ...) are not needed: install it with
        # `pip install --no-deps dm-control==1.0.50` (tested with mujoco 4.0.0).
        "synth": ["mujoco>=3.2"],
    },
    entry_points={"console_scripts": ["posestream=posestream.cli:main"]},
)
