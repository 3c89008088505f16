"""Probe on the generated fixture media: media facts and failure verdicts."""

from __future__ import annotations

import pytest

from operators import schema as S
from operators.io.probe_media import ProbeError, ProbeMedia, probe_media


def test_probe_reports_media_facts(media):
    facts = probe_media(media["face_speech"])
    assert facts[S.WIDTH] == 640 and facts[S.HEIGHT] == 480
    assert facts[S.HAS_AUDIO] is True
    assert 3.0 < facts[S.DURATION_S] < 10.0
    assert facts[S.FPS] == pytest.approx(25, abs=0.5)
    assert facts[S.ROTATION] == 0
    assert probe_media(media["no_audio"])[S.HAS_AUDIO] is False


@pytest.mark.parametrize(
    ("case", "status", "needle"),
    [
        ("zero_bytes", S.Status.EMPTY_FILE, "empty"),
        ("not_a_video", S.Status.NOT_VIDEO, "text"),
        ("audio_only", S.Status.NOT_VIDEO, "no video stream"),
        ("corrupt", S.Status.DECODE_ERROR, "unreadable"),
    ],
)
def test_probe_failures_have_specific_status(media, case, status, needle):
    with pytest.raises(ProbeError) as info:
        probe_media(media[case])
    assert info.value.status is status
    assert needle in info.value.message


def test_probe_fn_turns_failures_into_status_rows(media):
    probe = ProbeMedia()
    row = probe(
        {
            S.URI: "x",
            S.LOCAL_PATH: str(media["zero_bytes"]),
            S.STATUS: "",
            S.ERROR: "",
            S.STAGE_SECONDS: 0.0,
        }
    )
    assert row[S.STATUS] == S.Status.EMPTY_FILE.value and row[S.ERROR]
    # an upstream failure passes through untouched
    failed = probe(
        {
            S.URI: "x",
            S.LOCAL_PATH: "",
            S.STATUS: "read_error",
            S.ERROR: "gone",
            S.STAGE_SECONDS: 0.0,
        }
    )
    assert failed[S.STATUS] == "read_error" and failed[S.ERROR] == "gone"
