"""The rules behind the multi-node tests (tests/pipelines/test_cluster.py), without Ray:
where a node stages its inputs, and what a `failed` clip says when a node was lost."""

from __future__ import annotations

import tempfile
from pathlib import Path

from infra.ray_logs import BlockError
from operators.io.stage_input import STAGING_DIR_ENV, node_staging_dir
from pipelines.emotion_timeline.config import load_config
from pipelines.runner import failure_reason

DECODE_OP = "Map(stage)->Map(probe)->FlatMap(decode)->MapBatches(VoiceFeatures)"


def test_each_node_stages_in_its_own_folder(monkeypatch, tmp_path):
    # By default the folder is resolved on the node: its variable, else its temp folder.
    assert load_config(None, []).staging_dir is None
    monkeypatch.delenv(STAGING_DIR_ENV, raising=False)
    assert node_staging_dir(None) == str(Path(tempfile.gettempdir()) / "emoray-staging")
    monkeypatch.setenv(STAGING_DIR_ENV, str(tmp_path / "node"))
    assert node_staging_dir(None) == str(tmp_path / "node")
    # A folder the job configures is used on every node.
    configured = load_config(None, [f"staging_dir={tmp_path / 'shared'}"]).staging_dir
    assert node_staging_dir(configured) == str(tmp_path / "shared")


def test_a_lost_node_is_named_first_whatever_ray_called_its_tasks_errors():
    crash = BlockError(DECODE_OP, "WorkerCrashedError", "The worker died unexpectedly.")
    node = "10.0.0.7 (node id 3d2a16f54fec, received SIGKILL)"
    reason = failure_reason([crash], [node])
    assert reason == (
        "processing failed on every retry (a node of the cluster was lost during the run, "
        "with the tasks and actors on it. Run the same command again to process this clip: "
        f"{node}): stage → probe → decode → VoiceFeatures: WorkerCrashedError: The worker "
        "died unexpectedly.")
    # Ray's own word for it is enough, and no error reaching the driver still names the node.
    died = BlockError(DECODE_OP, "NodeDiedError", "The node running this task died.")
    assert failure_reason([died]).startswith(
        "processing failed on every retry (a node of the cluster was lost during the run")
    assert failure_reason([], [node]).endswith(f"to process this clip: {node})")
    # Without a lost node, a killed worker is still a killed worker.
    assert "the worker process died" in failure_reason([crash])
