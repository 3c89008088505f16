"""Incremental nightly runs over a real S3 server (moto on 127.0.0.1), a local Ray and a
sqlite MLflow store: the second run processes nothing, a changed object and a model change
are reprocessed, --since/--limit/--dry-run select as documented, and every run is an MLflow
run in experiment ``nightly`` with the right numbers and artifacts."""

from __future__ import annotations

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest
import s3fs
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from models import face_emotion
from operators import schema as S
from pipelines.nightly.__main__ import main
from pipelines.nightly.config import load_nightly_config
from pipelines.nightly.job import run
from pipelines.nightly.state import CHANGED, MODEL_CHANGED, NEW, RETRY, read_state

pytestmark = pytest.mark.integration

CASES = ("face_speech", "no_face")


@pytest.fixture
def setup(media, bucket, s3_endpoint, tmp_path, ray_local):
    name, client = bucket
    for case in CASES:
        client.upload_file(str(media[case]), name, f"in/{case}.mp4")
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = [f"storage.endpoint_url={s3_endpoint}", f"tracking.uri={tracking}"]
    return {"bucket": name, "client": client, "input": f"s3://{name}/in",
            "out": f"s3://{name}/out", "overrides": overrides, "tracking": tracking,
            "fs": s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}),
            "storage": load_nightly_config(None, overrides).storage.storage_options()}


def _config(setup, *extra):
    return load_nightly_config(None, [*setup["overrides"], *extra])


def _reasons(plan) -> dict[str, str]:
    return {p.recording.ref.uri.rsplit("/", 1)[-1]: p.reason for p in plan.selected}


def test_incremental_runs_and_their_dashboard(setup, media, tmp_path, capsys):
    first = run(setup["input"], setup["out"], _config(setup))
    assert _reasons(first.plan) == {"face_speech.mp4": NEW, "no_face.mp4": NEW}
    assert sorted(first.clips[S.STATUS]) == ["no_face", "ok"]
    state = read_state(setup["out"], setup["storage"])
    assert len(state) == 2 and set(state[S.RUN_ID]) == {first.run_id}
    assert state["fingerprint"].str.startswith("etag=").all()
    clip_rows = pd.read_parquet(f"{setup['bucket']}/out/clips", filesystem=setup["fs"])
    assert clip_rows[S.MODEL_IDENTITY].notna().all()
    assert set(clip_rows[S.MODEL_IDENTITY]) == set(state[S.MODEL_IDENTITY])
    # Compaction folded the per-clip records into one table.
    assert setup["fs"].exists(f"{setup['bucket']}/out/_state/processed.parquet")
    assert not setup["fs"].exists(f"{setup['bucket']}/out/_state/processed") or not (
        setup["fs"].ls(f"{setup['bucket']}/out/_state/processed", refresh=True))

    # The MLflow run: metrics from the clips it wrote, model tags, the artifacts.
    client = MlflowClient(setup["tracking"])
    mrun = client.get_run(first.run_id)
    assert client.get_experiment(mrun.info.experiment_id).name == "nightly"
    metrics = mrun.data.metrics
    durations = first.clips[S.DURATION_S].sum()
    assert metrics["clips_new"] == 2 and metrics["clips_processed"] == 2
    assert metrics["clips_ok"] == 1 and metrics["clips_failed"] == 0
    assert metrics["video_hours"] == pytest.approx(durations / 3600)
    assert metrics["realtime_factor"] == pytest.approx(durations / metrics["wall_seconds"])
    assert metrics["faces_found"] == first.clips[S.FACE_TRACKS].sum() >= 1
    ok = first.clips[first.clips[S.STATUS] == "ok"].iloc[0]
    # Only the clip with a face contributes shares: the run's shares are that clip's.
    for col in S.SHARE_COLUMNS:
        assert metrics[col] == pytest.approx(ok[col], abs=1e-6)
    stage_metrics = [k for k in metrics if k.startswith("stage_seconds.")]
    assert any("decode" in k for k in stage_metrics), stage_metrics
    assert all(metrics[k] >= 0 for k in stage_metrics)
    assert mrun.data.tags["emoray.model_identity"] == state[S.MODEL_IDENTITY].iloc[0]
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"clips.parquet", "daily_summary.parquet", "emotion_share_per_day.png",
            "failures_per_day.png"} <= artifacts
    png = mlflow.artifacts.download_artifacts(
        run_id=first.run_id, artifact_path="emotion_share_per_day.png",
        dst_path=str(tmp_path / "a"), tracking_uri=setup["tracking"])
    assert Image.open(png).size[0] > 300

    # Second run: nothing new, no Ray work, one more daily-summary row.
    second = run(setup["input"], setup["out"], _config(setup))
    assert second.plan.selected == [] and second.plan.up_to_date == 2
    assert len(second.clips) == 0
    daily = pq.read_table(f"{setup['bucket']}/out/summary/daily.parquet",
                          filesystem=setup["fs"]).to_pandas()
    assert list(daily[S.RUN_ID]) == [first.run_id, second.run_id]
    assert list(daily["clips_processed"]) == [2, 0]

    # A changed object (new bytes under the same key) is reprocessed, and only it.
    setup["client"].put_object(Bucket=setup["bucket"], Key="in/no_face.mp4",
                               Body=media["corrupt"].read_bytes())
    assert main(["--input", setup["input"], "--out", setup["out"], "--dry-run",
                 *(arg for o in setup["overrides"] for arg in ("--set", o))]) == 0
    printed = capsys.readouterr().out
    assert "would process 1 recording(s); 1 up to date" in printed
    assert f"{CHANGED}" in printed and "no_face.mp4" in printed
    third = run(setup["input"], setup["out"], _config(setup))
    assert _reasons(third.plan) == {"no_face.mp4": CHANGED}
    assert list(third.clips[S.STATUS]) == ["decode_error"]
    state = read_state(setup["out"], setup["storage"]).set_index(S.URI)
    assert state.loc[f"s3://{setup['bucket']}/in/no_face.mp4", S.RUN_ID] == third.run_id
    assert state.loc[f"s3://{setup['bucket']}/in/face_speech.mp4", S.RUN_ID] == first.run_id
    assert MlflowClient(setup["tracking"]).get_run(third.run_id).data.metrics[
        "clips_failed"] == 1


def test_limit_since_model_change_and_dry_run(setup, tmp_path):
    # --limit takes the oldest-modified first; the rest waits for the next run.
    limited = run(setup["input"], setup["out"], _config(setup), limit=1)
    assert len(limited.clips) == 1 and len(limited.plan.deferred) == 1
    done = limited.clips[S.URI].iloc[0].rsplit("/", 1)[-1]
    other = ({"face_speech.mp4", "no_face.mp4"} - {done}).pop()
    before = read_state(setup["out"], setup["storage"])
    assert len(before) == 1

    # --since filters by modification time.
    future = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)
    plan = run(setup["input"], setup["out"], _config(setup), dry_run=True,
               since=future.to_pydatetime()).plan
    assert plan.selected == [] and plan.before_since == 2

    # Another face model (different weights): the processed clip is due as "model changed",
    # the deferred one is still "new"; a dry run changes nothing.
    model = face_emotion.load()
    with torch.no_grad():
        model.module.net.classifier.bias[S.EMOTIONS.index("sad")] += 20.0
    face_emotion.save(model, tmp_path / "face.pt", metadata={"name": "sad-biased"})
    changed = _config(setup, f"face_model={tmp_path}/face.pt")
    plan = run(setup["input"], setup["out"], changed, dry_run=True).plan
    assert _reasons(plan) == {done: MODEL_CHANGED, other: NEW}
    assert "made by fer2013-mini-xception + ravdess-voice-cnn (product rule)#" in plan.selected[
        [p.reason for p in plan.selected].index(MODEL_CHANGED)].detail
    pd.testing.assert_frame_equal(before, read_state(setup["out"], setup["storage"]))

    # The run with the new model processes both; afterwards nothing is due.
    rest = run(setup["input"], setup["out"], changed)
    assert len(rest.clips) == 2
    state = read_state(setup["out"], setup["storage"])
    assert len(state) == 2 and set(state[S.RUN_ID]) == {rest.run_id}
    assert not state[S.MODEL_IDENTITY].str.startswith("fer2013-mini-xception").any()
    assert run(setup["input"], setup["out"], changed, dry_run=True).plan.selected == []


def test_failed_clips_are_retried_but_data_errors_are_not(setup, media):
    setup["client"].upload_file(str(media["corrupt"]), setup["bucket"], "in/corrupt.mp4")
    manifest = "in/list.txt"
    missing = f"s3://{setup['bucket']}/in/deleted.mp4"
    setup["client"].put_object(
        Bucket=setup["bucket"], Key=manifest,
        Body=f"s3://{setup['bucket']}/in/corrupt.mp4\n{missing}\n".encode())
    spec = f"s3://{setup['bucket']}/{manifest}"
    first = run(spec, setup["out"], _config(setup))
    statuses = dict(zip(first.clips[S.URI], first.clips[S.STATUS], strict=True))
    assert statuses[missing] == "read_error"
    # read_error is transient (storage), decode_error depends only on the bytes.
    plan = run(spec, setup["out"], _config(setup), dry_run=True).plan
    assert _reasons(plan) == {"deleted.mp4": RETRY}
    assert "read_error" in plan.selected[0].detail and plan.up_to_date == 1


def test_model_identity_is_a_content_hash(tmp_path):
    from pipelines.emotion_timeline.build import ResolvedModels

    a = ResolvedModels("m", b"weights-1").identity
    assert a == ResolvedModels("m", b"weights-1").identity
    assert a != ResolvedModels("m", b"weights-2").identity
    assert ResolvedModels("m").identity != ResolvedModels("m", b"weights-1").identity
