"""Input listing over local folders, globs and manifests, and over a real S3 server."""

from __future__ import annotations

import boto3
import pytest

from infra.storage import InputError, StorageConfig, clip_id_for, list_inputs
from operators.schema import VIDEO_EXTENSIONS


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_glob_and_manifest(tmp_path):
    a = _touch(tmp_path / "in" / "a.mp4")
    _touch(tmp_path / "in" / "sub" / "b kö.MKV")
    _touch(tmp_path / "in" / "notes.txt")
    refs = list_inputs(str(tmp_path / "in"), StorageConfig(), VIDEO_EXTENSIONS)
    assert [r.uri.rsplit("/", 1)[1] for r in refs] == ["a.mp4", "b kö.MKV"]
    assert refs[0].size_bytes == 1
    assert len(list_inputs(str(tmp_path / "in" / "*.mp4"), StorageConfig(), VIDEO_EXTENSIONS)) == 1

    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# session 1\n{a}\n{tmp_path / 'missing.mp4'}\n")
    listed = list_inputs(str(manifest), StorageConfig(), VIDEO_EXTENSIONS)
    assert len(listed) == 2 and listed[1].size_bytes is None  # kept: it gets a status row
    csv = tmp_path / "list.csv"
    csv.write_text(f"uri,participant\n{a},p1\n")
    assert list_inputs(str(csv), StorageConfig(), VIDEO_EXTENSIONS)[0].uri == str(a)


def test_clear_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_inputs(str(tmp_path / "nope"), StorageConfig(), VIDEO_EXTENSIONS)
    _touch(tmp_path / "empty" / "readme.md")
    with pytest.raises(InputError, match="no recordings"):
        list_inputs(str(tmp_path / "empty"), StorageConfig(), VIDEO_EXTENSIONS)
    bad = tmp_path / "bad.csv"
    bad.write_text("path\nx\n")
    with pytest.raises(InputError, match="'uri' column"):
        list_inputs(str(bad), StorageConfig(), VIDEO_EXTENSIONS)


def test_s3_prefix_listing(s3_endpoint):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="listing")
    for key in ("rec/one.mp4", "rec/deep/two.webm", "rec/skip.json", "other/three.mp4"):
        s3.put_object(Bucket="listing", Key=key, Body=b"abc")
    refs = list_inputs("s3://listing/rec", StorageConfig(endpoint_url=s3_endpoint),
                       VIDEO_EXTENSIONS)
    assert [r.uri for r in refs] == ["s3://listing/rec/deep/two.webm", "s3://listing/rec/one.mp4"]
    assert clip_id_for(refs[0].uri) != clip_id_for(refs[1].uri)
