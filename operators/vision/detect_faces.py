"""Face detection (facenet-pytorch MTCNN) and aligned face crops."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import ray
import torch
import torch.nn.functional as F
from facenet_pytorch import MTCNN
from pydantic import BaseModel, ConfigDict, Field

from operators import schema as S
from operators.batches import ragged
from operators.resources import StageResources
from operators.step import Step
from operators.vision.track_faces import match_one_to_one

logger = logging.getLogger(__name__)

DETECTOR_NAME = "facenet-pytorch-mtcnn"
_FACES_PER_CROP_CALL = 16


class FaceDetectorConfig(BaseModel):
    """MTCNN settings and the geometry of the aligned crops handed to the emotion model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Webcam faces are large; 40 px (at the working size) skips the costly fine pyramid
    # levels but still finds a picture-in-picture webcam face (~60 px at 640 wide).
    min_face_size: int = Field(40, ge=12)
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # facenet-pytorch defaults
    # Final confidence floor: MTCNN's rare false positives on screen content score < 0.95.
    min_score: float = Field(0.95, ge=0, le=1)
    crop_size: int = Field(112, ge=32)
    # Context around the tight MTCNN box, as a share of its size: FER2013 faces include the
    # whole head outline, so the emotion models expect a little margin.
    crop_margin: float = Field(0.2, ge=0)
    # Frames per MTCNN call: amortises the per-call overhead without blowing up memory.
    frames_per_batch: int = Field(25, ge=1)
    device: str = "auto"  # "auto": CUDA when this actor was given a GPU, else CPU
    # Detect-then-track.  MTCNN is ~3/4 of the job's CPU time, and a participant barely moves
    # in 0.6 s, so it runs on every `detection_stride`-th sampled frame (and each chunk's
    # last); between two such keyframes whose faces pair up one-to-one (IoU >= `track_iou`)
    # with no scene cut between, boxes and eye points are interpolated; anything else (a
    # face came, went or jumped) re-detects every frame in between.  1 = detect every frame.
    # 3 keeps timelines within the tolerance of tests/pipelines/test_optimised_equivalence.py.
    detection_stride: int = Field(3, ge=1)
    track_iou: float = Field(0.5, gt=0, le=1)
    # Mean absolute change (0-255) of a coarse grey thumbnail between consecutive sampled
    # frames that counts as a scene cut (camera switch, screen-share toggle): far above a
    # talking participant's frame-to-frame change (< 5 on the benchmark corpus).
    scene_cut: float = Field(20.0, gt=0)
    # Longest side of the picture MTCNN sees: frames are downscaled to it for detection
    # (min_face_size scales with them), boxes are scaled back and crops are cut from the
    # full working-size frame.  320 saves ~28% of the detector's time with stride 3 and stays
    # within the same tolerance, but MTCNN is less discerning there: on a sideways (not yet
    # rotated) face it fired at p = 0.954 where the working size finds nothing.  So it is
    # opt-in; None (the default) detects at the working size.
    detection_max_side: int | None = Field(None, ge=64)


@dataclass(frozen=True)
class _Faces:
    """The faces kept in one frame: boxes (n, 4), scores (n,), landmarks (n, 5, 2)."""

    boxes: np.ndarray
    scores: np.ndarray
    points: np.ndarray

    @staticmethod
    def empty() -> _Faces:
        return _Faces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                      np.zeros((0, 5, 2), np.float32))

    def select(self, keep: np.ndarray) -> _Faces:
        return _Faces(self.boxes[keep], self.scores[keep], self.points[keep])

    @staticmethod
    def between(a: _Faces, b: _Faces, order: np.ndarray, t: float) -> _Faces:
        """Linear interpolation at ``t`` in [0, 1] from ``a`` to ``b`` (``a[i]`` ↔
        ``b[order[i]]``); the score is the lower of the two ends: no more confident than
        the detections it rests on."""
        bb = b.select(order)
        return _Faces(((1 - t) * a.boxes + t * bb.boxes).astype(np.float32),
                      np.minimum(a.scores, bb.scores),
                      ((1 - t) * a.points + t * bb.points).astype(np.float32))


def scene_cuts(frames: np.ndarray, threshold: float) -> np.ndarray:
    """(n,) bool: frame ``i`` differs from frame ``i - 1`` by more than ``threshold``.

    The measure is the mean absolute difference (0-255) of grey thumbnails taken every 16th
    pixel: cheap next to detection and blind to noise, but a cut or a large move shows.
    """
    thumbs = frames[:, ::16, ::16].mean(axis=-1, dtype=np.float32)
    change = np.abs(np.diff(thumbs, axis=0)).mean(axis=(1, 2))
    return np.concatenate([[False], change > threshold])


def resolve_device(name: str) -> torch.device:
    """The torch device of a step's ``device`` setting; ``auto``: CUDA when this process can
    use it, else the CPU.  A worker Ray gave a GPU share where CUDA is absent (a node that
    declares GPUs its driver or torch build cannot use) runs on the CPU and logs that once
    per process, not per model or batch."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    global _cpu_fallback_logged
    given = ray.get_gpu_ids() if ray.is_initialized() else []
    if given and not _cpu_fallback_logged:
        _cpu_fallback_logged = True
        logger.warning("this worker holds a share of GPU %s but CUDA is not available here "
                       "(torch %s, CUDA build %s): running on the CPU",
                       ",".join(map(str, given)), torch.__version__, torch.version.cuda)
    return torch.device("cpu")


# Whether this process has logged its CPU fallback (resolve_device).
_cpu_fallback_logged = False


def align_crops(
    frames: torch.Tensor, boxes: np.ndarray, eyes: np.ndarray, size: int, margin: float
) -> torch.Tensor:
    """Cut rotation-normalised square face crops.

    ``frames`` is float (faces, 3, H, W): for each face, the frame it was found in; ``boxes``
    (x1, y1, x2, y2) and ``eyes`` ((left x, y), (right x, y)) are in pixels.  The crop is
    centred on the box, its side is the box's longer side × (1 + margin), and it is turned so
    the eyes are level.  Returns uint8 (faces, size, size, 3).
    """
    n = len(boxes)
    if n == 0:
        return torch.zeros((0, size, size, 3), dtype=torch.uint8)
    _, _, height, width = frames.shape
    boxes_t = torch.as_tensor(boxes, dtype=torch.float32, device=frames.device)
    eyes_t = torch.as_tensor(eyes, dtype=torch.float32, device=frames.device)
    centre = (boxes_t[:, :2] + boxes_t[:, 2:]) / 2
    half = (boxes_t[:, 2:] - boxes_t[:, :2]).max(dim=1).values * (1 + margin) / 2
    delta = eyes_t[:, 1] - eyes_t[:, 0]
    angle = torch.atan2(delta[:, 1], delta[:, 0])
    cos, sin = torch.cos(angle) * half, torch.sin(angle) * half
    # affine_grid maps output coords in [-1, 1] to input coords in [-1, 1]:
    # pixel = centre + R(angle) · half · (u, v), then normalised by the frame size.
    theta = torch.stack([
        torch.stack([cos * 2 / width, -sin * 2 / width, centre[:, 0] * 2 / width - 1], dim=1),
        torch.stack([sin * 2 / height, cos * 2 / height, centre[:, 1] * 2 / height - 1], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    crops = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border",
                          align_corners=False)
    return crops.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def face_thumbnails(crops: np.ndarray) -> np.ndarray:
    """uint8 (faces, T²) grey thumbnails (area mean) of uint8 (faces, S, S, 3) crops."""
    size = S.FACE_THUMB_SIZE
    if len(crops) == 0:
        return np.zeros((0, size * size), np.uint8)
    grey = torch.from_numpy(crops).float().mean(dim=-1, keepdim=True).permute(0, 3, 1, 2)
    thumbs = F.interpolate(grey, size=(size, size), mode="area")
    return thumbs.round().clamp(0, 255).to(torch.uint8).reshape(len(crops), -1).numpy()


class FaceDetector(Step):
    """MTCNN on each chunk's frames, plus aligned crops (an actor: it holds the model).

    Columns read: ``FRAMES`` (uint8 n×H×W×3 RGB), ``FRAME_TS``, ``CHUNK_INDEX``, ``ERROR``.
    Columns written (flat per chunk, one entry per face): ``FACE_FRAME`` (int32 index into
    ``FRAME_TS``), ``FACE_BOX`` (float32 x1, y1, x2, y2 at the working size), ``FACE_SCORE``,
    ``FACE_CROPS`` (uint8 faces×S×S×3), ``FACE_THUMB`` (uint8 faces×T², a grey T×T
    thumbnail of each crop, ``T = schema.FACE_THUMB_SIZE``: the timeline step reads mouth
    and face motion from it).
    ``FRAMES`` is dropped.  Chunks without frames (failed clips) get empty face columns.
    Frames smaller than ``min_face_size`` get no faces, and the clip's first chunk a note in
    ``ERROR`` saying why (its clip then ends ``no_face`` with that message).
    With ``detection_stride`` > 1 some faces are tracked rather than detected (see the
    config): each has its box, eye points and a score no higher than its two detections'.
    Chunks are tracked independently, so no state crosses rows.
    The model loads once per actor (``setup``), on CUDA when the actor holds a GPU share,
    else CPU.  Bad input cannot reach here (the decoder turns it into status rows); an
    exception here is a bug or an infrastructure fault.
    """

    name = "FaceDetector"
    actor = True
    gpu = True
    reads = (S.FRAMES, S.CHUNK_INDEX, S.ERROR, S.STAGE_SECONDS)
    writes = (S.FACE_FRAME, S.FACE_BOX, S.FACE_SCORE, S.FACE_CROPS, S.FACE_THUMB, S.ERROR)
    drops = (S.FRAMES,)

    def __init__(self, config: FaceDetectorConfig, resources: StageResources | None = None):
        super().__init__(resources)
        self.config = config

    def setup(self) -> None:
        self.device = resolve_device(self.config.device)
        self.mtcnn = MTCNN(
            keep_all=True, min_face_size=self.config.min_face_size,
            thresholds=list(self.config.thresholds), post_process=False, device=self.device,
        )
        logger.info("FaceDetector on %s (min face %d px)", self.device,
                    self.config.min_face_size)

    def _detect(self, frames: np.ndarray, indices: list[int]) -> list[_Faces]:
        """MTCNN on ``frames[indices]`` (at the detection size); kept faces per frame."""
        if not indices:
            return []
        _, height, width, _ = frames.shape
        if self.too_small(height, width):
            return [_Faces.empty() for _ in indices]
        max_side = self.config.detection_max_side
        scale = min(1.0, max_side / max(height, width)) if max_side else 1.0
        # MTCNN's smallest face is 12 px; the floor keeps the configured size meaningful.
        self.mtcnn.min_face_size = max(12, round(self.config.min_face_size * scale))
        out: list[_Faces] = []
        for start in range(0, len(indices), self.config.frames_per_batch):
            picked = frames[indices[start:start + self.config.frames_per_batch]]
            batch: np.ndarray | torch.Tensor = picked
            if scale < 1.0:
                # area averaging, as MTCNN's own pyramid does; a float NHWC tensor goes
                # straight into facenet-pytorch without another copy
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                batch = F.interpolate(
                    torch.from_numpy(picked).to(self.device).permute(0, 3, 1, 2).float(),
                    size=size, mode="area").permute(0, 2, 3, 1)
            boxes, scores, points = self.mtcnn.detect(batch, landmarks=True)
            for b, s, p in zip(boxes, scores, points, strict=True):
                # numpy 2: facenet returns object arrays, and None for frames without faces.
                if b is None:
                    out.append(_Faces.empty())
                    continue
                faces = _Faces(np.asarray(b, np.float32).reshape(-1, 4) / scale,
                               np.asarray(s, np.float32).reshape(-1),
                               np.asarray(p, np.float32).reshape(-1, 5, 2) / scale)
                out.append(faces.select(faces.scores >= self.config.min_score))
        return out

    def too_small(self, height: int, width: int) -> bool:
        """A frame smaller than ``min_face_size`` cannot show a face that large, and MTCNN's
        image pyramid (which starts at that size) has no level for it: facenet-pytorch
        would fail on an empty list, so such frames are not given to it."""
        return min(height, width) < self.config.min_face_size

    def _detect_and_track(self, frames: np.ndarray) -> list[_Faces]:
        """Faces of every frame: detected on keyframes, interpolated or re-detected between."""
        n, stride = len(frames), self.config.detection_stride
        keys = sorted({*range(0, n, stride), n - 1})
        faces: list[_Faces | None] = [None] * n
        for k, found in zip(keys, self._detect(frames, keys), strict=True):
            faces[k] = found
        if stride > 1:
            cut = scene_cuts(frames, self.config.scene_cut)
            redetect: list[int] = []
            for a, b in itertools.pairwise(keys):
                order = match_one_to_one(faces[a].boxes, faces[b].boxes, self.config.track_iou)
                if order is None or cut[a + 1:b + 1].any():
                    redetect.extend(range(a + 1, b))
                    continue
                for i in range(a + 1, b):
                    faces[i] = _Faces.between(faces[a], faces[b], order, (i - a) / (b - a))
            for i, found in zip(redetect, self._detect(frames, redetect), strict=True):
                faces[i] = found
        return faces

    def process_chunk(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Detect (or track) and crop the faces of one chunk's frames (uint8 n×H×W×3)."""
        size = self.config.crop_size
        if len(frames) == 0:
            return {
                S.FACE_FRAME: np.zeros(0, np.int32), S.FACE_BOX: np.zeros((0, 4), np.float32),
                S.FACE_SCORE: np.zeros(0, np.float32),
                S.FACE_CROPS: np.zeros((0, size, size, 3), np.uint8),
                S.FACE_THUMB: np.zeros((0, S.FACE_THUMB_SIZE ** 2), np.uint8),
            }
        faces = self._detect_and_track(frames)
        frame_index = np.concatenate(
            [np.full(len(f.boxes), i, np.int32) for i, f in enumerate(faces)])
        all_boxes = np.concatenate([f.boxes for f in faces])
        all_scores = np.concatenate([f.scores for f in faces])
        all_points = np.concatenate([f.points for f in faces])
        crops = []
        # A few faces at a time: each needs its whole frame as float (~3.7 MB at 640×480).
        for start in range(0, len(frame_index), _FACES_PER_CROP_CALL):
            sl = slice(start, start + _FACES_PER_CROP_CALL)
            face_frames = torch.from_numpy(frames[frame_index[sl]]).to(self.device)
            crops.append(align_crops(face_frames.permute(0, 3, 1, 2).float(), all_boxes[sl],
                                     all_points[sl, :2], size, self.config.crop_margin))
        all_crops = (torch.cat(crops).numpy() if crops
                     else np.zeros((0, size, size, 3), np.uint8))
        return {
            S.FACE_FRAME: frame_index,
            S.FACE_BOX: all_boxes,
            S.FACE_SCORE: all_scores,
            S.FACE_CROPS: all_crops,
            S.FACE_THUMB: face_thumbnails(all_crops),
        }

    def process(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs: dict[str, list[np.ndarray]] = {
            c: [] for c in (S.FACE_FRAME, S.FACE_BOX, S.FACE_SCORE, S.FACE_CROPS, S.FACE_THUMB)
        }
        errors = list(batch[S.ERROR])
        for i, frames in enumerate(batch[S.FRAMES]):
            frames = np.asarray(frames)
            result = self.process_chunk(frames)
            for column, value in result.items():
                outputs[column].append(value)
            if len(frames) and self.too_small(*frames.shape[1:3]) and not batch[S.CHUNK_INDEX][i]:
                # Said once per clip (on its first chunk): the clip ends no_face, and why.
                note = (f"frames are {frames.shape[2]}×{frames.shape[1]} px, smaller than "
                        f"detector.min_face_size ({self.config.min_face_size} px): no face "
                        "can be found")
                errors[i] = "; ".join(e for e in (errors[i], note) if e)
        del batch[S.FRAMES]
        batch[S.ERROR] = np.asarray(errors, dtype=object)
        for column, values in outputs.items():
            batch[column] = ragged(values)
        return batch
