"""Input listing over local folders, globs and manifests, and over a real S3 server."""

from __future__ import annotations

import boto3
import pytest

from infra.storage import InputError, StorageConfig, list_inputs
from operators.schema import VIDEO_EXTENSIONS, clip_id_for
from pipelines.nightly.state import Recording
from tests.fixtures.faulty_s3_proxy import FaultyS3Proxy


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


def test_s3_listing_fingerprints_without_a_request_per_object(s3_endpoint):
    """The nightly run's fingerprints come from the listing: the same ETag + size a HEAD
    gives, no HEAD per object, and a re-listing in the same process sees an overwrite."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="fingerprints")
    for key in ("rec/a.mp4", "rec/b.mp4"):
        s3.put_object(Bucket="fingerprints", Key=key, Body=b"first")
    with FaultyS3Proxy(s3_endpoint) as proxy:
        config = StorageConfig(endpoint_url=proxy.url)
        refs = list_inputs("s3://fingerprints/rec", config, VIDEO_EXTENSIONS)
        recordings = [Recording(ref) for ref in refs]
        assert proxy.count("HEAD", "fingerprints/rec/a.mp4") == 0
        assert proxy.counts(), "the listing went through the proxy"
        head = s3.head_object(Bucket="fingerprints", Key="rec/a.mp4")
        assert recordings[0].fingerprint == f"etag={head['ETag'].strip(chr(34))};size=5"
        assert recordings[0].modified_at == head["LastModified"]

        s3.put_object(Bucket="fingerprints", Key="rec/a.mp4", Body=b"second!")
        again = [Recording(ref)
                 for ref in list_inputs("s3://fingerprints/rec", config, VIDEO_EXTENSIONS)]
    assert again[0].fingerprint != recordings[0].fingerprint
    assert again[0].fingerprint.endswith(";size=7")
    assert again[1].fingerprint == recordings[1].fingerprint


def test_local_listing_fingerprints_match_the_files(tmp_path):
    a = _touch(tmp_path / "in" / "a.mp4", b"abc")
    refs = list_inputs(str(tmp_path / "in"), StorageConfig(), VIDEO_EXTENSIONS)
    [recording] = [Recording(ref) for ref in refs]
    assert recording.fingerprint == f"size=3;mtime_ns={int(a.stat().st_mtime * 1e9)}"
    missing = list_inputs(str(_manifest(tmp_path, tmp_path / "gone.mp4")), StorageConfig(),
                          VIDEO_EXTENSIONS)
    assert missing[0].fingerprint is None
    assert Recording(missing[0]).fingerprint is None


def _manifest(tmp_path, *uris):
    path = tmp_path / "list.txt"
    path.write_text("".join(f"{uri}\n" for uri in uris))
    return path
