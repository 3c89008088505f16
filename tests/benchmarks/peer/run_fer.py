"""The peer tool on one recording: the MIT ``fer`` package's own video path (run on demand).

Runs in the peer environment (``setup_peer.sh``), never in the project's:

    tests/benchmarks/peer/.venv/bin/python tests/benchmarks/peer/run_fer.py CLIP \
        --sample-fps 5 --json out.json [--mtcnn]

``fer.Video.analyze`` with a ``fer.FER`` detector (OpenCV Haar cascade by default, as fer
ships it; ``--mtcnn`` selects its facenet-pytorch MTCNN, which needs torch in this env),
inference on every ``fps / sample_fps``-th frame (fer's ``frequency``), no frame or video
output.  fer's results carry no timestamps and skip frames without a face, so the detector
is wrapped to record every call: call ``i`` is frame ``i * frequency``.  Writes JSON: the
wall time of ``analyze`` (model loading excluded and reported apart), and per sampled frame
its time and faces (box x, y, w, h and the 7 probabilities).  Depends only on fer, OpenCV
and the standard library, so the two environments never mix.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
from fer.classes import Video
from fer.fer import FER


class RecordingFER(FER):
    """``fer.FER`` that keeps what each ``detect_emotions`` call returned, in call order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[list[dict]] = []

    def detect_emotions(self, img, face_rectangles=None):
        faces = super().detect_emotions(img, face_rectangles)
        self.calls.append([
            {"box": [int(v) for v in face["box"]],
             "emotions": {k: float(v) for k, v in face["emotions"].items()}}
            for face in faces
        ])
        return faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--sample-fps", type=float, default=5.0)
    parser.add_argument("--mtcnn", action="store_true")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    capture = cv2.VideoCapture(str(args.clip))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    frequency = max(1, round(fps / args.sample_fps))

    started = time.perf_counter()
    detector = RecordingFER(mtcnn=args.mtcnn)
    video = Video(str(args.clip), outdir=str(args.json.parent / "fer-output"))
    load_s = time.perf_counter() - started

    started = time.perf_counter()
    video.analyze(detector, display=False, frequency=frequency, save_frames=False,
                  save_video=False, annotate_frames=False, zip_images=False, output="pandas")
    wall_s = time.perf_counter() - started

    frames = [{"t": i * frequency / fps, "faces": faces}
              for i, faces in enumerate(detector.calls)]
    args.json.write_text(json.dumps({
        "clip": str(args.clip), "fps": fps, "frequency": frequency,
        "detector": "mtcnn" if args.mtcnn else "haar", "load_s": load_s, "wall_s": wall_s,
        "frames_analysed": len(frames), "cpu_count": os.cpu_count(), "frames": frames,
    }))
    print(f"fer on {args.clip.name}: {len(frames)} frames in {wall_s:.1f} s "
          f"(+{load_s:.1f} s loading)")


if __name__ == "__main__":
    main()
