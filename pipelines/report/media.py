"""The recording a session page plays: the original when a browser plays it, else a proxy.

Browsers play H.264/AAC in MP4 everywhere; anything else (HEVC, VP9 in Matroska, MPEG-4
Part 2 in AVI, ProRes, …) and every recording on object storage gets a web-playable proxy:
H.264 (yuv420p) + AAC in MP4, at most 720 lines on its short side, ``+faststart`` so it plays
while loading, made with ffmpeg.  A playable local original is hard-linked (or copied) into
the report folder, so the report works from ``file://`` and from any static host: the report
folder holds the recordings.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
from tqdm import tqdm

from operators import schema as S
from operators.io.files import StorageOptions, download, is_remote, open_fs
from pipelines.report.read import USABLE, Session

logger = logging.getLogger("emoray.report")

MEDIA_DIR = "media"
# The proxy's picture: 720 lines on its short side is enough to read a face and a screen,
# and keeps a 60-minute session near 0.5 GB at CRF 26.
PROXY_SHORT_SIDE = 720
PROXY_VIDEO = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "26", "-pix_fmt", "yuv420p")
PROXY_AUDIO = ("-c:a", "aac", "-b:a", "96k", "-ac", "2")
_PLAYABLE_SUFFIXES = (".mp4", ".m4v")


@dataclass(frozen=True)
class Media:
    """What the page plays: ``path`` relative to the report folder, or None and ``note``
    saying why not; with a video, ``note`` says how it was made."""

    path: str | None
    note: str


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def browser_playable(path: Path) -> bool:
    """Whether every browser plays ``path`` as it is: H.264 (4:2:0) video and AAC audio (or
    none) in an MP4 container."""
    if path.suffix.lower() not in _PLAYABLE_SUFFIXES:
        return False
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error:
        return False
    if "mp4" not in info.get("format", {}).get("format_name", "").split(","):
        return False
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video"]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    return (len(video) >= 1 and video[0].get("codec_name") == "h264"
            and video[0].get("pix_fmt") in ("yuv420p", "yuvj420p")
            and all(s.get("codec_name") == "aac" for s in audio))


def fingerprint(uri: str, storage_options: StorageOptions) -> str | None:
    """What changes when the recording changes (ETag or size + modification time); None
    when it is gone."""
    fs, path = open_fs(uri, storage_options) if is_remote(uri) else (None, None)
    try:
        if fs is None:
            stat = local_path(uri).stat()
            return f"{stat.st_size}:{stat.st_mtime_ns}"
        info = fs.info(path)
    except FileNotFoundError:
        return None
    return str(info.get("ETag") or f"{info.get('size')}:{info.get('LastModified')}")


def make_proxy(src: Path, dest: Path, duration_s: float | None, label: str) -> None:
    """Transcode ``src`` to a web-playable MP4 ``dest`` (see module doc), showing ffmpeg's
    progress in seconds of media.  Raises ``RuntimeError`` with ffmpeg's last words."""
    # Short side at most PROXY_SHORT_SIDE, never upscaled; even sizes for yuv420p.  ffmpeg
    # applies the display rotation first, so iw/ih are the picture as shown.
    short = PROXY_SHORT_SIDE
    scale = (f"scale='if(gte(iw,ih),-2,min({short},iw))':'if(gte(iw,ih),min({short},ih),-2)'")
    cmd = ["ffmpeg", "-nostdin", "-y", "-v", "error", "-nostats", "-progress", "pipe:1",
           "-i", str(src), "-map", "0:v:0", "-map", "0:a:0?", "-vf", scale, *PROXY_VIDEO,
           *PROXY_AUDIO, "-movflags", "+faststart", "-f", "mp4", str(dest)]
    with tempfile.TemporaryFile() as stderr, tqdm(
            total=round(duration_s or 0, 1) or None, unit="s", desc=f"proxy {label}",
            leave=False, disable=None) as bar:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True)
        for line in proc.stdout or ():
            key, _, value = line.strip().partition("=")
            if key == "out_time_us" and value.isdigit():
                bar.update(round(int(value) / 1e6, 1) - bar.n)
        if proc.wait():
            stderr.seek(0)
            lines = stderr.read().decode("utf-8", "replace").strip().splitlines()
            reason = lines[-1].replace(str(src), "the recording") if lines else \
                f"ffmpeg exit {proc.returncode}"
            raise RuntimeError(reason)


def _place(src: Path, dest: Path) -> None:
    """Put ``src`` at ``dest``: a hard link (no second copy of a long recording on disk)
    where both are on one file system, else a copy."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def prepare_media(session: Session, folder, storage_options: StorageOptions) -> Media:
    """Make ``media/<clip_id>.mp4`` in the report ``folder`` (a ``ReportFolder``) for the
    session's recording, unless the one there was made from the same recording (its
    ``.json`` sidecar records the fingerprint).  Never raises for a recording that is gone
    or cannot be converted: the returned note says so."""
    if session.clip is None:
        return Media(None, "no clip row, so no recording to play")
    uri, status = session.clip[S.URI], session.clip[S.STATUS]
    if status not in USABLE:
        return Media(None, f"the recording could not be read by the job ({status}): "
                           "nothing to play")
    current = fingerprint(uri, storage_options)
    if current is None:
        return Media(None, f"the recording is no longer at {uri}: the timeline is shown "
                           "without it")
    rel = f"{MEDIA_DIR}/{session.clip_id}.mp4"
    sidecar = f"{MEDIA_DIR}/{session.clip_id}.json"
    recorded = folder.read_text(sidecar)
    if recorded and folder.exists(rel):
        made = json.loads(recorded)
        if made.get("uri") == uri and made.get("fingerprint") == current:
            return Media(rel, made["note"])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emoray-report-") as tmp:
        if is_remote(uri):
            src = Path(tmp) / f"source{Path(uri).suffix}"
            download(uri, storage_options, src)
        else:
            src = local_path(uri)
        name = Path(uri).name
        if not is_remote(uri) and browser_playable(src):
            note = "the original recording (H.264/AAC in MP4)"
            if folder.local:
                target = folder.local_path(rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                _place(src, target)
            else:
                folder.put(src, rel)
        else:
            codec = session.clip.get(S.VIDEO_CODEC) or "unknown codec"
            container = session.clip.get(S.CONTAINER) or "unknown container"
            where = "on object storage" if is_remote(uri) else f"{codec} in {container}"
            logger.info("making a browser-playable proxy of %s (%s)", name, where)
            proxy = Path(tmp) / "proxy.mp4"
            try:
                make_proxy(src, proxy, session.clip.get(S.DURATION_S), name)
            except RuntimeError as exc:
                logger.warning("no proxy for %s: %s", uri, exc)
                return Media(None, f"the recording could not be converted for the browser: "
                                   f"{exc}")
            note = (f"a browser-playable proxy (H.264/AAC, ≤{PROXY_SHORT_SIDE}p) of the "
                    f"recording ({where})")
            folder.put(proxy, rel)
            logger.info("proxy of %s made in %.1f s", name, time.perf_counter() - started)
    folder.write_text(sidecar, json.dumps({"uri": uri, "fingerprint": current, "note": note}))
    return Media(rel, note)
