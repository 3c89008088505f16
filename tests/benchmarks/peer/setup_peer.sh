#!/usr/bin/env bash
# The peer tool's own environment: the MIT `fer` package (25.10.3) with TensorFlow (CPU), in a
# virtualenv apart from the project's .venv (TensorFlow and our torch pins must not meet).
#   bash tests/benchmarks/peer/setup_peer.sh [VENV_DIR]   # default: tests/benchmarks/peer/.venv
# fer's metadata also pulls facenet-pytorch (and with it an old torch) for its optional MTCNN
# detector; its default video path uses OpenCV's Haar cascade, so fer is installed without
# dependencies and only what that path imports is added.  Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-$here/.venv}"
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# setuptools < 81: fer imports pkg_resources, which newer setuptools drop.  OpenCV < 5: 5.0 moved
# the Haar cascades out of cv2.data, and fer's default detector loads an empty cascade.  Not the
# headless build: Video.analyze calls cv2.waitKey on every frame, which headless OpenCV refuses.
"$venv/bin/python" -m pip install -q "tensorflow-cpu==2.20.0" "opencv-contrib-python<5" \
  "pandas" "requests" "tqdm>=4.62.1" "Pillow" "matplotlib" "ffmpeg-python>=0.2.0" \
  "moviepy>=1.0.3,<2.0" "setuptools<81"
"$venv/bin/python" -m pip install -q --no-deps "fer==25.10.3"
"$venv/bin/python" -c "import tensorflow as tf, fer; print('peer env ready: tensorflow', tf.__version__)"
