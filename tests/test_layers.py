"""The layers of ARCHITECTURE.md hold: ``lint-imports`` keeps the contracts of pyproject.toml's
``[tool.importlinter]`` on the code, and it breaks them on a tree that violates them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "operators", "infra", "pipelines")
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the packages under ``root`` with ``root``'s pyproject.toml.  Their
    folder goes first on the path: emoray's own install would otherwise be analysed."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_code_keeps_the_layer_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    """The four packages' Python files and pyproject.toml, copied to break on purpose."""
    root = tmp_path_factory.mktemp("layers")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.png", "*.md",
                                                      "*.yaml", "*.json"))
    shutil.copy(ROOT / "pyproject.toml", root)
    return root


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("models/checkpoint.py", "from operators.batches import ragged", "Layers"),
    ("models/checkpoint.py", "import pipelines.cli", "Layers"),
    ("operators/batches.py", "import infra.logs", "Layers"),
    ("infra/logs.py", "from pipelines import cli", "Layers"),
    ("operators/schema.py", "import operators.batches", "The data contract"),
    ("pipelines/train/losses.py", "import pipelines.train_model.config",
     "Training building blocks"),
    ("pipelines/train_model/video_faces.py", "import pipelines.train_model.prepare",
     "No import cycles"),
])
def test_a_violation_breaks_its_contract(source_copy, module, line, broken):
    path = source_copy / module
    original = path.read_text()
    # Inside a function, where an import is easiest to slip in unnoticed.
    path.write_text(f"{original}\n\ndef _violation():\n    {line}\n")
    try:
        result = lint_imports(source_copy)
    finally:
        path.write_text(original)
    assert result.returncode == 1, result.stdout + result.stderr
    # The report after this heading names each broken contract, then its offending imports.
    report = result.stdout.partition("Broken contracts")[2]
    assert broken in report, result.stdout
    assert Path(module).stem in report  # the importing module is named
