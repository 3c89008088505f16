"""``emoray paired``: the paired corpus's command, here its ``--report`` form on a written
split (building the corpus needs the shared FER2013/RAVDESS data and the shipped models; its
pieces are tested in tests/pipelines/train/test_paired.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.cli import main
from pipelines.train.paired import FACE_PROBS, RULES, VOICE_PROBS
from pipelines.train.table import LABEL


def test_report_prints_every_rule_and_draws_the_confusion(tmp_path, capsys):
    # Sample 0 (label 2): the face is right, the voice leans to class 0; sample 1 (label 6):
    # the face leans to class 5, the voice is right and surer.  Margins are wide, so the
    # product and the mean are right on both, each model alone on one.
    face, voice = np.zeros((2, 7)), np.zeros((2, 7))
    face[0, [2, 0]], voice[0, [2, 0]] = (0.7, 0.3), (0.4, 0.6)
    face[1, [6, 5]], voice[1, [6, 5]] = (0.45, 0.55), (0.9, 0.1)
    path = tmp_path / "val.parquet"
    pd.DataFrame({FACE_PROBS: [[list(face[0])], [list(face[1])]],
                  VOICE_PROBS: list(voice), LABEL: [2, 6]}).to_parquet(path, index=False)
    png = tmp_path / "confusion.png"
    assert main(["paired", "--report", str(path), "--confusion", str(png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}: 2 samples"
    accuracy = {line[:12].strip(): line.split()[-2] for line in lines[2:6]}
    assert accuracy == dict(zip(RULES, ["0.500", "0.500", "1.000", "1.000"], strict=True))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_confusion_without_report_is_refused(tmp_path):
    assert main(["paired", "--confusion", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
