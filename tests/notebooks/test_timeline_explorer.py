"""The timeline explorer notebook runs top to bottom (nbclient, a real IPython kernel) on
the output of a real nightly run stored on the S3 server (moto), and draws its plots."""

from __future__ import annotations

from pathlib import Path

import boto3
import nbformat
import pytest
from nbclient import NotebookClient

from pipelines.nightly.config import load_nightly_config
from pipelines.nightly.job import run

pytestmark = pytest.mark.integration

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "timeline_explorer.ipynb"


def test_notebook_runs_on_nightly_output_in_s3(media, s3_endpoint, ray_local, monkeypatch):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="explorer")
    for case in ("face_speech", "corrupt"):
        client.upload_file(str(media[case]), "explorer", f"in/{case}.mp4")
    run("s3://explorer/in", "s3://explorer/out", load_nightly_config(
        None, [f"storage.endpoint_url={s3_endpoint}", "tracking.enabled=false"]))

    # The kernel inherits the environment: where the output is, and the S3 endpoint.
    monkeypatch.setenv("EMORAY_OUT", "s3://explorer/out")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("EMORAY_CLIP", "face_speech")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "s3://explorer/out: 2 clips" in text
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 5  # clip timeline, shares, valence/arousal, statuses, nightly days
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "face_speech.mp4" in html and "decode_error" in html
    assert "clips_processed" in html  # the nightly summary table
