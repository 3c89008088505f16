"""The voice emotion network: a small CNN over log-mel spectrograms with attention pooling.

Architecture
------------
``waveform (B, samples)`` → :class:`~models.voice_emotion.features.LogMel` ``(B, 1, F, T)`` →
``len(channels)`` conv blocks (two 3×3 conv + batch norm + ReLU each, 2×2 max pooling between
blocks) → 1×1 conv to ``embed_dim`` → **attention pooling**: every cell of the final feature
map is a time-frequency region (with the defaults 8 mel bands × 80 ms; 8 × 12 = 96 regions for
a 1 s window); an additive scorer ``v·tanh(W h_r + b)`` (Mirsamadi et al., ICASSP 2017) gives
each region a scalar importance, a softmax over the regions turns the scores into weights, and
the weighted sum of the regions is the embedding.  Emotion in speech is carried by a few
salient stretches (a stressed syllable, a laugh) rather than spread evenly, which is what
plain average pooling assumes; the weights also show which regions the decision rests on.

Heads on the embedding: class logits over :data:`operators.schema.EMOTIONS` and valence and
arousal through ``tanh`` (so in [-1, 1]).  The embedding itself is the feature vector handed to
multimodal fusion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import nn

from models.voice_emotion.features import (
    HOP_LENGTH,
    N_FFT,
    N_MELS,
    LogMel,
    normalise_speaker,
    speaker_statistics,
    speech_window_mask,
)
from operators.schema import EMOTIONS, SAMPLE_RATE


@dataclass(frozen=True)
class VoiceEmotionConfig:
    """Hyper-parameters of :class:`VoiceEmotionNet`; stored as a checkpoint's ``hparams``."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    hop_length: int = HOP_LENGTH
    n_mels: int = N_MELS
    # Channels of the conv blocks; 2×2 max pooling follows each block but the last.
    channels: tuple[int, ...] = (16, 32, 64, 128)
    # Size of the pooled embedding, i.e. of the feature vector handed to fusion.
    embed_dim: int = 128
    # Hidden size of the attention scorer: small, it only has to rank regions.
    attention_dim: int = 64
    # Dropout before the heads: the training sets (RAVDESS: 1,200 clips) are small.
    dropout: float = 0.2
    # Analysis window the model is meant for (the timeline's window).  Other lengths of at
    # least `min_samples` run (the attention pools any number of regions) but are untested.
    window_s: float = 1.0
    # Inputs are speaker-normalised (features.normalise_speaker): the log-mel minus the
    # speaker's per-band mean, over its per-band std.  False in checkpoints written before it
    # existed, which therefore keep running on plain inputs.
    speaker_norm: bool = False

    def __post_init__(self) -> None:
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive, got {self.channels}")
        if self.n_mels < 2 ** (len(self.channels) - 1):
            raise ValueError(
                f"n_mels {self.n_mels} is too few for {len(self.channels) - 1} pooling steps"
            )
        if (
            min(self.sample_rate, self.n_fft, self.hop_length, self.embed_dim, self.attention_dim)
            < 1
            or not 0 <= self.dropout < 1
            or self.window_s <= 0
        ):
            raise ValueError(f"invalid voice emotion config {self}")

    @property
    def min_samples(self) -> int:
        """Shortest waveform the network accepts: one region in time after the pooling."""
        frames = 2 ** (len(self.channels) - 1)
        return max((frames - 1) * self.hop_length, self.n_fft // 2 + 1)

    def region_grid(self, n_samples: int) -> tuple[int, int]:
        """``(mel regions, time regions)`` of the attention map for windows of n_samples.

        ``attention`` is this grid flattened row-major (mel region major).
        """
        pool = 2 ** (len(self.channels) - 1)
        return self.n_mels // pool, (1 + n_samples // self.hop_length) // pool

    def to_hparams(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any] | None) -> VoiceEmotionConfig:
        """Config from a checkpoint's hparams; missing keys take defaults, unknown ones raise."""
        values = dict(hparams or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown voice emotion hparams {sorted(unknown)}")
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        return cls(**values)


class VoiceEmotionOutput(NamedTuple):
    """What :class:`VoiceEmotionNet` returns (a NamedTuple, so TorchScript keeps it)."""

    logits: torch.Tensor  # (B, len(EMOTIONS)), unnormalised
    valence: torch.Tensor  # (B,), in [-1, 1]
    arousal: torch.Tensor  # (B,), in [-1, 1]
    features: torch.Tensor  # (B, embed_dim): the attention-pooled embedding
    attention: torch.Tensor  # (B, regions): weights >= 0 summing to 1 per window


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    # bias=False: the batch norm right after supplies the offset.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class VoiceEmotionNet(nn.Module):
    """Waveform windows → emotion logits, valence, arousal, embedding and attention map.

    ``forward(waveform)`` takes ``(B, samples)`` float32 at ``config.sample_rate`` with
    ``samples >= config.min_samples`` and returns a :class:`VoiceEmotionOutput`; given a 4-D
    ``(B, 1, n_mels, frames)`` tensor it takes it as the (already speaker-normalised, where
    the config says so) :class:`LogMel` output, as :meth:`forward_spectrogram` does (for
    training with spectrogram augmentation).  With ``config.speaker_norm`` the log-mel of a
    waveform batch is normalised by ``speaker`` (``(2, n_mels)`` or ``(B, 2, n_mels)``, from
    :meth:`speaker_stats` of the speaker's windows); without ``speaker`` the batch itself is
    taken as one speaker's windows.  Windows are independent of each other in eval mode (batch
    norm uses its running statistics) given their speaker statistics.  Scriptable with
    ``torch.jit.script``.
    """

    def __init__(self, config: VoiceEmotionConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else VoiceEmotionConfig()
        self.config = cfg
        self.speaker_norm = cfg.speaker_norm  # an attribute: TorchScript reads no dataclass
        self.log_mel = LogMel(cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels)
        layers: list[nn.Module] = []
        c_in = 1
        for i, c_out in enumerate(cfg.channels):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers.append(_conv_block(c_in, c_out))
            c_in = c_out
        layers += [
            nn.Conv2d(c_in, cfg.embed_dim, 1, bias=False),
            nn.BatchNorm2d(cfg.embed_dim),
            nn.ReLU(inplace=True),
        ]
        self.trunk = nn.Sequential(*layers)
        self.attention_score = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, cfg.attention_dim, 1),
            nn.Tanh(),
            nn.Conv2d(cfg.attention_dim, 1, 1, bias=False),
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.embed_dim, len(EMOTIONS))
        self.valence_arousal = nn.Linear(cfg.embed_dim, 2)

    def forward(self, waveform: torch.Tensor, speaker: torch.Tensor | None = None
                ) -> VoiceEmotionOutput:
        if waveform.dim() == 4:
            # Already the front end's (B, 1, n_mels, frames) output: training masks the
            # log-mel (SpecAugment) and must still call the module itself (DDP's wrapper
            # only synchronises gradients of computations that go through its forward).
            return self.forward_spectrogram(waveform)
        spec = self.log_mel(waveform)
        if self.speaker_norm:
            if speaker is None:
                speaker = speaker_statistics(spec, speech_window_mask(waveform))
            spec = normalise_speaker(spec, speaker)
        return self.forward_spectrogram(spec)

    @torch.jit.export
    def speaker_stats(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(2, n_mels)``: the speaker statistics of one speaker's ``(B, samples)`` windows
        (``features.speaker_statistics`` over its speech windows)."""
        return speaker_statistics(self.log_mel(waveform), speech_window_mask(waveform))

    def forward_spectrogram(self, spec: torch.Tensor) -> VoiceEmotionOutput:
        regions = self.trunk(spec)  # (B, D, F', T')
        scores = self.attention_score(regions).flatten(1)  # (B, F' * T')
        weights = torch.softmax(scores, dim=1)
        pooled = torch.einsum("bdr,br->bd", regions.flatten(2), weights)
        hidden = self.dropout(pooled)
        va = torch.tanh(self.valence_arousal(hidden))
        return VoiceEmotionOutput(self.classifier(hidden), va[:, 0], va[:, 1], pooled, weights)
