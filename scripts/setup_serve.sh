#!/bin/sh
# The environment of `posestream serve`: a Python 3.13 venv, .venv-serve at the repository root
# (gitignored), with posestream's runtime (no torch) and PyTriton, which bundles Triton
# Inference Server. Python 3.13 because PyTriton's Python backend embeds the interpreter it runs
# under and 3.13 is the one that worked here (a 3.11 venv failed to load models).
#
# nvidia-pytriton 0.7.0 pins numpy<2, which has no wheel for Python 3.13: it is installed
# without its dependencies (--no-deps) beside the ones it needs at run time, with numpy 2
# (engines/triton_server.py bridges numpy 2 into Triton's Python backend).
#
# Idempotent: when the venv answers and was made from this setup.py and this script, it only
# says so (under a second). Interpreter: $PYTHON313, else a working `python3.13` on PATH, else
# pyenv's $(pyenv root)/versions/3.13*/bin/python3.13 (pyenv's shim on PATH may not run).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${SERVE_VENV:-$ROOT/.venv-serve}
PYTRITON="nvidia-pytriton==0.7.0"
# nvidia-pytriton 0.7.0's requirements, numpy aside
PYTRITON_DEPS='protobuf>=3.7 pyzmq>=23.0 sh>=1.14 tritonclient[grpc,http]~=2.50 grpcio>=1.64.3 typing_inspect>=0.6.0 wrapt>=1.11 typer>=0.9.0 importlib_metadata>=7.0.1'

stamp_of() {
    # what the venv was made from: this script and setup.py (the runtime dependencies)
    cat "$0" "$ROOT/setup.py" | cksum | cut -d' ' -f1
}

works() {
    "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1
}

find_python() {
    if [ -n "${PYTHON313:-}" ]; then
        works "$PYTHON313" && { echo "$PYTHON313"; return 0; }
        echo "setup_serve: PYTHON313=$PYTHON313 is not a working Python 3.13" >&2
        return 1
    fi
    if command -v python3.13 >/dev/null 2>&1 && works python3.13; then
        command -v python3.13
        return 0
    fi
    if command -v pyenv >/dev/null 2>&1; then
        for candidate in "$(pyenv root)"/versions/3.13*/bin/python3.13; do
            if [ -x "$candidate" ] && works "$candidate"; then
                echo "$candidate"
                return 0
            fi
        done
    fi
    echo "setup_serve: no Python 3.13 found (PATH, pyenv); install one (e.g. pyenv install 3.13) or set PYTHON313" >&2
    return 1
}

ready() {
    [ -x "$VENV/bin/posestream" ] && [ -f "$VENV/.posestream-stamp" ] &&
        [ "$(cat "$VENV/.posestream-stamp")" = "$(stamp_of)" ] &&
        "$VENV/bin/python" -c 'import pytriton.triton, posestream.engines.triton_server' >/dev/null 2>&1
}

if ready; then
    echo "setup_serve: $VENV already set up ($("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])'), $PYTRITON)"
    exit 0
fi

PYTHON=$(find_python)
# Triton's Python backend stub links libpython3.13.so: a static-only build cannot be embedded.
if ! "$PYTHON" -c 'import sysconfig, sys; sys.exit(not sysconfig.get_config_var("Py_ENABLE_SHARED"))'; then
    echo "setup_serve: $PYTHON was built without --enable-shared; Triton's Python backend needs libpython3.13.so" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ] || ! works "$VENV/bin/python"; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --upgrade pip
# posestream's runtime (torch-free), from this checkout
"$VENV/bin/pip" install --quiet -e "$ROOT"
# shellcheck disable=SC2086  # the requirement list is meant to split
"$VENV/bin/pip" install --quiet $PYTRITON_DEPS
"$VENV/bin/pip" install --quiet --no-deps "$PYTRITON"
"$VENV/bin/python" -c 'import pytriton.triton, posestream.engines.triton_server, numpy, sys; print("setup_serve: ready in '"$VENV"' (Python", sys.version.split()[0] + ", numpy", numpy.__version__ + ", '"$PYTRITON"')")'
stamp_of >"$VENV/.posestream-stamp"
