"""A bad recording never takes good ones down: good and bad clips forced into the same
shuffle partitions all end in their own status, in the timeline and the nightly job.

Ray's hash shuffle (``groupby(clip_id)``) concatenates the blocks of one partition with
``pa.concat_tables``, which refuses blocks whose columns differ in order or type.  Rows made
by the decoder's error branch once listed their columns in another order than decoded
chunks, so every clip hashed into a partition with an undecodable one ended ``failed``.
With ``resources.shuffle_partitions`` forced to 1 and 2, every good clip here shares its
partition with bad ones.  (The edge-case job, ``test_edge_cases.py``, runs all its cases in
one partition too.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from operators import schema as S
from pipelines.emotion_timeline.config import load_config
from pipelines.emotion_timeline.job import run
from pipelines.nightly.config import load_nightly_config
from pipelines.nightly.job import run as run_nightly
from pipelines.sample_media.build import CASES
from pipelines.sample_media.edge_cases import EDGE_CASES, make_edge_cases

pytestmark = pytest.mark.integration

# Every kind of input, good and bad (the missing file is listed by the manifest only).
MIX = ("face_speech", "no_audio", "no_face", "corrupt", "zero_bytes", "not_a_video",
       "audio_only")
EDGE = ("corrupt_middle",)  # partial: frames up to the damage, then nothing


@pytest.fixture(scope="module")
def mix(media, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("mix")
    expected = {}
    for name in MIX:
        shutil.copy(media[name], folder / media[name].name)
        expected[media[name].name] = CASES[name].expected_status
    for name, path in make_edge_cases(folder, EDGE).items():
        expected[path.name] = EDGE_CASES[name].expected_status
    missing = folder / "gone.mp4"
    manifest = folder.parent / f"{folder.name}.txt"
    manifest.write_text("\n".join([*(str(folder / f) for f in expected), str(missing)]) + "\n")
    return {"folder": folder, "manifest": manifest, "expected": expected,
            "missing": missing.name}


def _statuses(clips: pd.DataFrame) -> dict[str, str]:
    return dict(zip(clips[S.URI].map(lambda uri: Path(uri).name), clips[S.STATUS],
                    strict=True))


@pytest.mark.parametrize("partitions", [1, 2])
def test_every_input_ends_in_its_own_status_whatever_shares_its_partition(
        mix, ray_local, tmp_path, partitions):
    config = load_config(None, ["tracking.enabled=false",
                                f"resources.shuffle_partitions={partitions}"])
    result = run(str(mix["manifest"]), str(tmp_path / "out"), config)
    want = {**mix["expected"], mix["missing"]: S.Status.READ_ERROR.value}
    assert _statuses(result.clips) == want
    assert not result.clips[S.URI].duplicated().any()
    written = pd.read_parquet(tmp_path / "out" / "clips")
    assert _statuses(written) == want
    # the good clip's timeline is whole: a window every hop up to its end
    timeline = pd.read_parquet(tmp_path / "out" / "timelines")
    good = timeline[timeline[S.URI].str.endswith(CASES["face_speech"].file)]
    assert good[S.WINDOW_INDEX].nunique() >= CASES["face_speech"].duration_s / 0.5 - 1


def test_the_nightly_job_records_every_input_of_a_mixed_folder(mix, ray_local, tmp_path):
    config = load_nightly_config(None, ["tracking.enabled=false",
                                        "resources.shuffle_partitions=1"])
    first = run_nightly(str(mix["folder"]), str(tmp_path / "out"), config)
    assert _statuses(first.clips) == mix["expected"]
    # Nothing is due again: no clip was recorded `failed` (which the next night retries).
    again = run_nightly(str(mix["folder"]), str(tmp_path / "out"), config, dry_run=True)
    assert again.plan.selected == []
