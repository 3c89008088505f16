"""What differs between the four trainable models, each in one place: how a prepared row
becomes tensors, how the network is built or loaded, and what it outputs.

Everything else (losses, the loop, checkpoints, metrics) is shared by ``loop.py``.  A task's
network returns :class:`Outputs`: class logits (B, 7) and, where the model predicts them,
valence/arousal (B,) in [-1, 1].  The temporal head works on sequences; its per-step outputs
and targets are flattened to the valid steps, so the same losses and metrics apply.

Prepared rows (:mod:`pipelines.train.corpora.parquet`, which names their columns) carry the
inputs and the targets ``label`` (EMOTIONS index, -1 absent), ``label_dist`` (7 weights or
null), ``vote_dist`` (FER+ vote shares or null), ``valence``/``arousal`` (NaN absent).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from models import face_emotion, fusion, temporal, voice_emotion
from models.voice_emotion.features import normalise_speaker
from operators.schema import AROUSAL, AUDIO, SAMPLE_RATE, VALENCE
from pipelines.train.augment import augment_face, augment_voice, spec_augment
from pipelines.train.corpora.ferplus import VOTE_DIST
from pipelines.train.corpora.parquet import (
    FACE_FEATURES,
    FACE_MASK,
    FEATURES,
    IMAGE,
    SPEAKING,
    VOICE_FEATURES,
    VOICE_MASK,
)
from pipelines.train.table import LABEL, LABEL_DIST, N_CLASSES, SUBJECT
from pipelines.train.utterances import random_crops, utterance_windows
from pipelines.train_model.config import AugmentConfig, TrainConfig

AUDIO_LENGTH = "audio_length"  # samples of signal in a (padded) voice item
SPEAKER_STATS = "speaker_stats"  # (2, n_mels) speaker statistics of a voice row's subject


class Outputs(NamedTuple):
    logits: torch.Tensor  # (B, 7)
    valence: torch.Tensor | None  # (B,) or None when the model has no VA head
    arousal: torch.Tensor | None


@dataclass
class Built:
    """A trainable network and how to write it as an emoray checkpoint."""

    module: nn.Module
    arch: str
    hparams: dict[str, Any]
    save: Callable[[nn.Module, Path, dict[str, Any]], None]


def _targets(row: pd.Series) -> dict[str, torch.Tensor]:
    dist = row.get(LABEL_DIST)
    votes = row.get(VOTE_DIST)
    nan7 = torch.full((N_CLASSES,), math.nan)
    return {
        LABEL: torch.tensor(int(row[LABEL]), dtype=torch.int64),
        LABEL_DIST: nan7 if dist is None else torch.as_tensor(np.asarray(dist, np.float32)),
        VOTE_DIST: nan7 if votes is None else torch.as_tensor(np.asarray(votes, np.float32)),
        VALENCE: torch.tensor(float(row.get(VALENCE, math.nan)), dtype=torch.float32),
        AROUSAL: torch.tensor(float(row.get(AROUSAL, math.nan)), dtype=torch.float32),
    }


class RowDataset(torch.utils.data.Dataset):
    """A prepared table as a map-style dataset: item i = ``task.inputs(row i)`` + targets."""

    def __init__(self, table: pd.DataFrame, task: TaskSpec, built: Built):
        self.table = task.with_context(table.reset_index(drop=True), built)
        self.task = task
        self.built = built

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.table.iloc[index]
        return {**self.task.inputs(row, self.built), **self.task.targets(row),
                "index": torch.tensor(index)}


class TaskSpec:
    """Base of the four tasks (subclasses override what differs)."""

    name = ""
    default_arch = ""
    input_columns: tuple[str, ...] = ()
    has_va = True

    def build(self, arch: str, hparams: dict[str, Any], init: Path | None, seed: int) -> Built:
        raise NotImplementedError

    def load(self, path: Path, device: torch.device) -> Built:
        raise NotImplementedError

    def inputs(self, row: pd.Series, built: Built) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def targets(self, row: pd.Series) -> dict[str, torch.Tensor]:
        return _targets(row)

    def with_context(self, table: pd.DataFrame, built: Built) -> pd.DataFrame:
        """The rows with what an item needs from other rows (voice: its subject's speaker
        statistics); unchanged unless the task needs that."""
        return table

    def sample(self, batch: dict[str, torch.Tensor], built: Built, config: TrainConfig,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The training batch drawn from a loaded batch (every training step, before
        :meth:`augment`); identity unless the task draws samples (voice crops)."""
        return batch

    def augment(self, batch: dict[str, torch.Tensor], built: Built, config: AugmentConfig,
                generator: torch.Generator) -> dict[str, torch.Tensor]:
        return batch

    def forward(self, module: nn.Module, built: Built, batch: dict[str, torch.Tensor]
                ) -> Outputs:
        raise NotImplementedError

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return torch.utils.data.default_collate(items)


def _init_state(init: Path | None) -> str | None:
    return None if init is None else str(init)


class FaceTask(TaskSpec):
    """Face crops → the 7 classes (no valence/arousal head: the timeline maps the face's
    probabilities to the circumplex)."""

    name = "face"
    default_arch = "mini-xception"
    input_columns = (IMAGE,)
    has_va = False

    def build(self, arch: str, hparams: dict[str, Any], init: Path | None, seed: int) -> Built:
        model = face_emotion.build(arch, {**hparams, "init_weights": _init_state(init)}, seed)
        # The checkpoint must not point at the (temporary) init file.
        model.hparams["init_weights"] = None
        return self._built(model)

    def load(self, path: Path, device: torch.device) -> Built:
        return self._built(face_emotion.load(path, device))

    @staticmethod
    def _built(model: face_emotion.FaceEmotionModel) -> Built:
        def save(module: nn.Module, path: Path, metadata: dict[str, Any]) -> None:
            model.module = module
            face_emotion.save(model, path, metadata)
        return Built(model.module, model.arch, model.hparams, save)

    def inputs(self, row: pd.Series, built: Built) -> dict[str, torch.Tensor]:
        size = int(built.hparams["input_size"])
        with Image.open(io.BytesIO(row[IMAGE])) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(rgb, dtype=np.uint8).copy()
        return {IMAGE: torch.from_numpy(pixels)}  # (H, W, 3) uint8

    def augment(self, batch: dict[str, torch.Tensor], built: Built, config: AugmentConfig,
                generator: torch.Generator) -> dict[str, torch.Tensor]:
        images = batch[IMAGE].permute(0, 3, 1, 2).float() / 255
        images = augment_face(images, generator, p_flip=config.p_flip,
                              max_degrees=config.max_degrees, crop_scale=config.crop_scale,
                              max_brightness=config.max_brightness, noise_std=config.noise_std)
        pixels = (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return {**batch, IMAGE: pixels}

    def forward(self, module: nn.Module, built: Built, batch: dict[str, torch.Tensor]
                ) -> Outputs:
        # The inference path's own preprocessing, so training sees what serving sees.
        spec = face_emotion.InputSpec.from_hparams(built.hparams)
        logits, _ = module(face_emotion.preprocess(batch[IMAGE], spec))
        return Outputs(logits, None, None)


class VoiceTask(TaskSpec):
    """Waveforms → the 7 classes and valence/arousal.

    A prepared row is one window (``samples: windows``) or one utterance's speech
    (``samples: speech``); items carry the samples padded to at least one window
    (``window_s`` of the model's hparams) and ``audio_length``, batches are padded to their
    longest item.  Training (:meth:`sample`) takes ``crops_per_sample`` random windows of
    each row (a one-window row gives itself); :meth:`augment` perturbs the waveforms
    (gain, noise, a time dropout) and then masks the log-mel (SpecAugment), handing the
    network spectrograms.  Evaluation of rows longer than a window scores the utterance:
    the mean of the class probabilities (and valence/arousal) of its windows every half
    window (:func:`~pipelines.train.utterances.utterance_windows`); ``logits`` are then the
    log of that mean, so the softmax of the outputs is the utterance's probabilities.
    Models with ``speaker_norm`` normalise every log-mel by its row subject's speaker
    statistics (:meth:`with_context`), in training before the masks.
    """

    name = "voice"
    default_arch = voice_emotion.model.ARCH
    input_columns = (AUDIO,)

    def build(self, arch: str, hparams: dict[str, Any], init: Path | None, seed: int) -> Built:
        _check_arch(arch, [voice_emotion.model.ARCH], "voice")
        model = voice_emotion.load(init) if init else voice_emotion.build(hparams, seed)
        return self._built(model)

    def load(self, path: Path, device: torch.device) -> Built:
        return self._built(voice_emotion.load(path, device))

    @staticmethod
    def _built(model: voice_emotion.VoiceEmotionModel) -> Built:
        def save(module: nn.Module, path: Path, metadata: dict[str, Any]) -> None:
            model.module = module
            voice_emotion.save(model, path, metadata)
        return Built(model.module, voice_emotion.model.ARCH, model.hparams, save)

    @staticmethod
    def window_samples(built: Built) -> int:
        return round(float(built.hparams.get("window_s", 1.0)) * SAMPLE_RATE)

    def with_context(self, table: pd.DataFrame, built: Built) -> pd.DataFrame:
        """Models with ``speaker_norm``: each row gets its subject's speaker statistics
        (:data:`SPEAKER_STATS`), over the windows every half window of all the subject's rows
        in ``table`` (its utterances, as evaluation cuts them) — an actor's whole speech in
        training and evaluation, as a recording's chunk is in the timeline job.  Taken on
        the clean audio, before any augmentation; rows without a subject are one speaker
        each."""
        if not built.hparams.get("speaker_norm"):
            return table
        size = self.window_samples(built)
        net = built.module
        stats: dict[Any, np.ndarray] = {}
        subjects = (table[SUBJECT] if SUBJECT in table else pd.Series(np.nan, table.index))
        keys = [s if isinstance(s, str) else f"row:{i}" for i, s in enumerate(subjects)]
        with torch.inference_mode():
            for key in dict.fromkeys(keys):
                windows = []
                for i in (i for i, k in enumerate(keys) if k == key):
                    samples = np.asarray(table[AUDIO].iloc[i], np.float32)
                    audio = np.zeros(max(len(samples), size), np.float32)
                    audio[:len(samples)] = samples
                    windows += [audio[s:s + size] for s in
                                utterance_windows(len(samples), size, max(1, size // 2))]
                device = next(net.buffers()).device
                stats[key] = net.speaker_stats(
                    torch.from_numpy(np.stack(windows)).to(device)).cpu().numpy()
        out = table.copy()
        out[SPEAKER_STATS] = [stats[k] for k in keys]
        return out

    def inputs(self, row: pd.Series, built: Built) -> dict[str, torch.Tensor]:
        samples = np.asarray(row[AUDIO], np.float32)
        audio = np.zeros(max(len(samples), self.window_samples(built)), np.float32)
        audio[: len(samples)] = samples  # a short window is padded with silence
        item = {AUDIO: torch.from_numpy(audio),
                AUDIO_LENGTH: torch.tensor(len(samples), dtype=torch.int64)}
        if SPEAKER_STATS in row:
            item[SPEAKER_STATS] = torch.as_tensor(np.asarray(row[SPEAKER_STATS], np.float32))
        return item

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        longest = max(len(item[AUDIO]) for item in items)
        padded = [{**item, AUDIO: nn.functional.pad(item[AUDIO], (0, longest - len(item[AUDIO])))}
                  for item in items]
        return torch.utils.data.default_collate(padded)

    def sample(self, batch: dict[str, torch.Tensor], built: Built, config: TrainConfig,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
        windows, row = random_crops(batch[AUDIO], batch[AUDIO_LENGTH],
                                    self.window_samples(built), config.crops_per_sample,
                                    generator)
        out = {name: value.index_select(0, row.to(value.device)) for name, value in
               batch.items() if name not in (AUDIO, AUDIO_LENGTH)}
        return {**out, AUDIO: windows}

    def augment(self, batch: dict[str, torch.Tensor], built: Built, config: AugmentConfig,
                generator: torch.Generator) -> dict[str, torch.Tensor]:
        audio = augment_voice(batch[AUDIO], generator, min_db=config.min_gain_db,
                              max_db=config.max_gain_db, snr_db=config.snr_db,
                              max_mask_fraction=config.max_mask_fraction)
        if not (config.spec_time_masks or config.spec_freq_masks):
            return {**batch, AUDIO: audio}
        front_end = built.module.log_mel
        device = next(front_end.buffers()).device
        with torch.no_grad():
            spec = front_end(audio.to(device))
            if SPEAKER_STATS in batch:
                spec = normalise_speaker(spec, batch[SPEAKER_STATS].to(device))
        spec = spec_augment(spec, generator, time_masks=config.spec_time_masks,
                            freq_masks=config.spec_freq_masks,
                            max_fraction=config.spec_max_fraction)
        # The network takes its front end's output as input too (VoiceEmotionNet.forward).
        return {**batch, AUDIO: spec}

    def forward(self, module: nn.Module, built: Built, batch: dict[str, torch.Tensor]
                ) -> Outputs:
        audio = batch[AUDIO]
        stats = batch.get(SPEAKER_STATS)
        size = self.window_samples(built)
        if audio.dim() != 2 or audio.shape[1] <= size:
            out = module(audio) if stats is None or audio.dim() != 2 else module(audio, stats)
            return Outputs(out.logits, out.valence, out.arousal)
        lengths = batch[AUDIO_LENGTH].cpu().tolist() if AUDIO_LENGTH in batch else (
            [audio.shape[1]] * len(audio))
        hop = max(1, size // 2)
        starts = [(b, s) for b, n in enumerate(lengths)
                  for s in utterance_windows(int(n), size, hop)]
        owner = torch.tensor([b for b, _ in starts], device=audio.device)
        windows = torch.stack([audio[b, s:s + size] for b, s in starts])
        out = module(windows) if stats is None else module(windows, stats[owner])
        counts = torch.bincount(owner, minlength=len(audio)).to(audio.dtype)[:, None]

        def mean(values: torch.Tensor) -> torch.Tensor:
            total = values.new_zeros((len(audio), *values.shape[1:]))
            return total.index_add(0, owner, values) / counts.reshape(
                -1, *([1] * (values.dim() - 1)))

        probs = mean(torch.softmax(out.logits.float(), 1))
        return Outputs(probs.clamp_min(1e-12).log(), mean(out.valence), mean(out.arousal))


class FusionTask(TaskSpec):
    """Face frame features + voice features of a window → the 7 classes and valence/arousal."""

    name = "fusion"
    default_arch = "attention-bilinear"
    input_columns = (FACE_FEATURES, FACE_MASK, VOICE_FEATURES, VOICE_MASK, SPEAKING)

    def build(self, arch: str, hparams: dict[str, Any], init: Path | None, seed: int) -> Built:
        model = fusion.load(init) if init else fusion.build(arch, hparams, seed)
        return self._built(model)

    def load(self, path: Path, device: torch.device) -> Built:
        return self._built(fusion.load(path, device))

    @staticmethod
    def _built(model: fusion.FusionModel) -> Built:
        def save(module: nn.Module, path: Path, metadata: dict[str, Any]) -> None:
            model.network = module
            fusion.save(model, path, metadata)
        return Built(model.network, model.arch, model.hparams, save)

    def inputs(self, row: pd.Series, built: Built) -> dict[str, torch.Tensor]:
        return {
            FACE_FEATURES: torch.as_tensor(np.stack(row[FACE_FEATURES]).astype(np.float32)),
            FACE_MASK: torch.as_tensor(np.asarray(row[FACE_MASK], dtype=bool)),
            VOICE_FEATURES: torch.as_tensor(np.stack(row[VOICE_FEATURES]).astype(np.float32)),
            VOICE_MASK: torch.tensor(bool(row[VOICE_MASK])),
            SPEAKING: torch.tensor(float(row[SPEAKING]), dtype=torch.float32),
        }

    def forward(self, module: nn.Module, built: Built, batch: dict[str, torch.Tensor]
                ) -> Outputs:
        out = module(batch[FACE_FEATURES], batch[FACE_MASK], batch[VOICE_FEATURES],
                     batch[VOICE_MASK], batch[SPEAKING])
        return Outputs(out.logits, out.valence, out.arousal)


class TemporalTask(TaskSpec):
    """A clip's sequence of fused window features → per-window classes and valence/arousal.

    Items are whole clips; :meth:`forward` returns the valid steps of the batch flattened in
    (clip, time) order, and :meth:`collate` pads the clips and flattens their targets the
    same way, so losses and metrics see one row per window."""

    name = "temporal"
    default_arch = temporal.model.ARCH
    input_columns = (FEATURES,)

    def build(self, arch: str, hparams: dict[str, Any], init: Path | None, seed: int) -> Built:
        _check_arch(arch, [temporal.model.ARCH], "temporal")
        model = temporal.load(init) if init else temporal.build(hparams, seed)
        return self._built(model)

    def load(self, path: Path, device: torch.device) -> Built:
        return self._built(temporal.load(path, device))

    @staticmethod
    def _built(model: temporal.TemporalModel) -> Built:
        def save(module: nn.Module, path: Path, metadata: dict[str, Any]) -> None:
            model.network = module
            temporal.save(model, path, metadata)
        return Built(model.network, temporal.model.ARCH, model.hparams, save)

    def inputs(self, row: pd.Series, built: Built) -> dict[str, torch.Tensor]:
        return {FEATURES: torch.as_tensor(np.stack(row[FEATURES]).astype(np.float32))}

    def targets(self, row: pd.Series) -> dict[str, torch.Tensor]:
        steps = len(row[FEATURES])

        def series(name: str, fill: float) -> np.ndarray:
            value = row.get(name)
            if value is None or np.isscalar(value):
                return np.full(steps, fill)
            return np.asarray(value, dtype=np.float64)

        return {LABEL: torch.as_tensor(series(LABEL, -1).astype(np.int64)),
                VALENCE: torch.as_tensor(series(VALENCE, math.nan).astype(np.float32)),
                AROUSAL: torch.as_tensor(series(AROUSAL, math.nan).astype(np.float32))}

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        lengths = torch.tensor([len(item[FEATURES]) for item in items])
        features = nn.utils.rnn.pad_sequence([item[FEATURES] for item in items],
                                             batch_first=True)
        flat = {name: torch.cat([item[name] for item in items])
                for name in (LABEL, VALENCE, AROUSAL)}
        nan7 = torch.full((len(flat[LABEL]), N_CLASSES), math.nan)
        index = torch.cat([torch.full((len(item[FEATURES]),), int(item["index"]))
                           for item in items])
        return {FEATURES: features, "lengths": lengths, **flat, LABEL_DIST: nan7,
                VOTE_DIST: nan7, "index": index}

    def forward(self, module: nn.Module, built: Built, batch: dict[str, torch.Tensor]
                ) -> Outputs:
        lengths = batch["lengths"]
        out = module(batch[FEATURES], lengths)
        valid = torch.arange(out.logits.shape[1], device=lengths.device)[None, :] < lengths[:, None]
        return Outputs(out.logits[valid], out.valence[valid], out.arousal[valid])


def _check_arch(arch: str, known: list[str], task: str) -> None:
    if arch not in known:
        raise ValueError(f"unknown {task} architecture {arch!r}; known: {known}")


TASKS: dict[str, TaskSpec] = {task.name: task for task in
                              (FaceTask(), VoiceTask(), FusionTask(), TemporalTask())}


def resolve_init(init: str | None, task: str) -> str | None:
    """``default`` → the shipped weights of the task's model (face only); else unchanged."""
    if init != "default":
        return init
    if task != "face":
        raise ValueError(f"model.init: default weights ship only for the face model, not {task}")
    return str(face_emotion.model.DEFAULT_WEIGHTS)
