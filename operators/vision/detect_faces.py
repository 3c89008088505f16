"""Face detection (facenet-pytorch MTCNN) and aligned face crops."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from facenet_pytorch import MTCNN
from pydantic import BaseModel, ConfigDict, Field

from operators import schema as S
from operators.batches import ragged

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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


class FaceDetector:
    """Ray Data ``map_batches`` actor: MTCNN on each chunk's frames, plus aligned crops.

    Columns read: ``FRAMES`` (uint8 n×H×W×3 RGB), ``FRAME_TS``.  Columns written (flat per chunk,
    one entry per face): ``FACE_FRAME`` (int32 index into ``FRAME_TS``), ``FACE_BOX`` (float32
    x1, y1, x2, y2 at the working size), ``FACE_SCORE``, ``FACE_CROPS`` (uint8 faces×S×S×3).
    ``FRAMES`` is dropped.  Chunks without frames (failed clips) get empty face columns.
    Resources: the model loads once per actor, on CUDA when the actor holds a GPU (fractional
    GPUs let several actors share one), else CPU.  Bad input cannot reach here (the decoder
    turns it into status rows); an exception here is a bug or an infrastructure fault.
    """

    def __init__(self, config: FaceDetectorConfig):
        self.config = config
        self.device = resolve_device(config.device)
        self.mtcnn = MTCNN(
            keep_all=True, min_face_size=config.min_face_size, thresholds=list(config.thresholds),
            post_process=False, device=self.device,
        )
        logger.info("FaceDetector on %s (min face %d px)", self.device, config.min_face_size)

    def _detect(self, frames: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray],
                                                   list[np.ndarray]]:
        boxes_out, scores_out, points_out = [], [], []
        for start in range(0, len(frames), self.config.frames_per_batch):
            batch = frames[start:start + self.config.frames_per_batch]
            boxes, scores, points = self.mtcnn.detect(batch, landmarks=True)
            for b, s, p in zip(boxes, scores, points, strict=True):
                # numpy 2: facenet returns object arrays, and None for frames without faces.
                if b is None:
                    boxes_out.append(np.zeros((0, 4), np.float32))
                    scores_out.append(np.zeros(0, np.float32))
                    points_out.append(np.zeros((0, 5, 2), np.float32))
                    continue
                boxes_out.append(np.asarray(b, dtype=np.float32).reshape(-1, 4))
                scores_out.append(np.asarray(s, dtype=np.float32).reshape(-1))
                points_out.append(np.asarray(p, dtype=np.float32).reshape(-1, 5, 2))
        return boxes_out, scores_out, points_out

    def process_chunk(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Detect and crop the faces of one chunk's frames (uint8 n×H×W×3)."""
        size = self.config.crop_size
        if len(frames) == 0:
            return {
                S.FACE_FRAME: np.zeros(0, np.int32), S.FACE_BOX: np.zeros((0, 4), np.float32),
                S.FACE_SCORE: np.zeros(0, np.float32),
                S.FACE_CROPS: np.zeros((0, size, size, 3), np.uint8),
            }
        boxes, scores, points = self._detect(frames)
        frame_index = np.concatenate([np.full(len(b), i, np.int32) for i, b in enumerate(boxes)])
        all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
        all_points = np.concatenate(points)
        keep = all_scores >= self.config.min_score
        frame_index, all_boxes = frame_index[keep], all_boxes[keep]
        all_scores, all_points = all_scores[keep], all_points[keep]
        crops = []
        # A few faces at a time: each needs its whole frame as float (~3.7 MB at 640×480).
        for start in range(0, len(frame_index), _FACES_PER_CROP_CALL):
            sl = slice(start, start + _FACES_PER_CROP_CALL)
            face_frames = torch.from_numpy(frames[frame_index[sl]]).to(self.device)
            crops.append(align_crops(face_frames.permute(0, 3, 1, 2).float(), all_boxes[sl],
                                     all_points[sl, :2], size, self.config.crop_margin))
        return {
            S.FACE_FRAME: frame_index,
            S.FACE_BOX: all_boxes,
            S.FACE_SCORE: all_scores,
            S.FACE_CROPS: (torch.cat(crops).numpy() if crops
                           else np.zeros((0, size, size, 3), np.uint8)),
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs: dict[str, list[np.ndarray]] = {
            c: [] for c in (S.FACE_FRAME, S.FACE_BOX, S.FACE_SCORE, S.FACE_CROPS)
        }
        seconds = np.array(batch[S.STAGE_SECONDS], dtype=np.float64)  # batches are read-only
        for i, frames in enumerate(batch[S.FRAMES]):
            started = time.perf_counter()
            result = self.process_chunk(np.asarray(frames))
            for column, value in result.items():
                outputs[column].append(value)
            seconds[i] += time.perf_counter() - started
        del batch[S.FRAMES]
        batch[S.STAGE_SECONDS] = seconds
        for column, values in outputs.items():
            batch[column] = ragged(values)
        return batch
