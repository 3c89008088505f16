"""Face–voice fusion networks for one analysis window.

Both networks take the same batched inputs and return a :class:`FusionOutput`, so either can
stand behind :mod:`models.fusion.model` and be exported to TorchScript:

* ``face_feats (B, T, Df)`` -- the face model's penultimate feature vector for each of the T
  sampled frames of the window (any values where ``face_mask`` is false, NaN included);
* ``face_mask (B, T)`` bool -- the frame has a face of this track;
* ``voice_feats (B, R, Dv)`` -- voice features per spectrogram region, or one pooled vector
  with R = 1 (any values where ``voice_mask`` is false);
* ``voice_mask (B,)`` bool -- the window has voice features;
* ``speaking (B,)`` float in [0, 1] -- share of the window with speech.  Taken as 0 where
  ``voice_mask`` is false: without audio there is no evidence of speech.

Masked inputs never reach the arithmetic (they are zeroed first), so they cannot change an
output, and a window without any modality gets finite outputs and mode ``"none"``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from operators.schema import EMOTIONS

FUSION_MODES: tuple[str, ...] = ("fusion", "face_only", "voice_only", "none")
"""Names of the ``mode`` codes: index = code.  ``none`` windows get finite outputs that the
pipeline must replace by nulls."""

N_CLASSES = len(EMOTIONS)


class FusionOutput(NamedTuple):
    """What a fusion network returns for B windows."""

    logits: Tensor  # (B, 7) class logits, order EMOTIONS
    valence: Tensor  # (B,) in [-1, 1]
    arousal: Tensor  # (B,) in [-1, 1]
    features: Tensor  # (B, feature_dim) input of the temporal head
    mode: Tensor  # (B,) int64 index into FUSION_MODES


def fusion_mode(face_present: Tensor, voice_present: Tensor) -> Tensor:
    """Code into :data:`FUSION_MODES` from (B,) bool presence flags of the two modalities."""
    both = face_present & voice_present
    mode = torch.full_like(face_present, 3, dtype=torch.long)
    mode = torch.where(voice_present, torch.full_like(mode, 2), mode)
    mode = torch.where(face_present, torch.full_like(mode, 1), mode)
    return torch.where(both, torch.zeros_like(mode), mode)


def masked_softmax(scores: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to ``mask``; all-masked slices give zeros.

    Masked entries get weight exactly 0 whatever their score (NaN included).  A plain
    ``-inf`` fill would make an all-masked slice 0/0 = NaN, so the shift by the present
    maximum and the normalisation are done here, with the empty case explicitly zero.
    """
    # The shift only guards exp against overflow (softmax is shift-invariant): no gradient.
    present_max = scores.masked_fill(~mask, float("-inf")).amax(dim, keepdim=True).detach()
    present_max = torch.where(torch.isfinite(present_max), present_max,
                              torch.zeros_like(present_max))
    weights = torch.exp((scores - present_max).masked_fill(~mask, float("-inf")))
    # The present maximum contributes exp(0) = 1, so the clamp only acts on empty slices.
    return weights / weights.sum(dim, keepdim=True).clamp_min(1.0e-12)


class AdditiveAttention(nn.Module):
    """Additive (Bahdanau) attention pooling of a set of vectors, conditioned on a context.

    ``forward(x (B, N, D), mask (B, N), context (B, C)) -> (pooled (B, D), weights (B, N))``;
    masked entries get weight exactly 0 and an all-masked set pools to the zero vector.
    """

    def __init__(self, dim: int, context_dim: int, hidden: int):
        super().__init__()
        self.key = nn.Linear(dim, hidden)
        self.context = nn.Linear(context_dim, hidden, bias=False)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, x: Tensor, mask: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        hidden = torch.tanh(self.key(x) + self.context(context).unsqueeze(1))
        weights = masked_softmax(self.score(hidden).squeeze(-1), mask, dim=1)
        return torch.bmm(weights.unsqueeze(1), x).squeeze(1), weights


class AttentionBilinearFusion(nn.Module):
    """Attention-guided factorized bilinear pooling of face frames and voice regions.

    1. Each present frame is layer-normalised and pooled by additive attention whose context is
       ``speaking``: during speech the mouth moves for phonetic, not emotional, reasons, so the
       network can learn to weight frames (and, in step 3, the face path) differently.
    2. Voice regions are pooled the same way (context: ``speaking``).
    3. Three paths map to ``fused_dim``: the low-rank bilinear product of the two pooled vectors
       (MFB, Yu et al. 2017, after Kim et al. 2017: project both to ``k·o``, multiply
       elementwise, sum-pool over k, signed square root, L2 normalisation), and a face-only and
       a voice-only projection.  A gate (softmax over the paths, from the path outputs and
       ``speaking``) mixes them, with the paths whose inputs are absent masked out: the
       bilinear path needs both modalities, so a window with one modality is predicted from it
       alone and a window with none gets the zero vector.
    4. Heads: 7 class logits, and valence/arousal through ``tanh``.

    In training mode, ``modality_dropout`` is the probability, per window that has both
    modalities, of hiding the face, and the same for the voice (never both): the unimodal
    paths then learn to stand alone, as they must on windows without a face or audio.

    ``features`` (``fused_dim``) is the gated mixture before the heads; it is all zeros for
    mode ``none``.
    """

    def __init__(
        self,
        face_dim: int = 128,
        voice_dim: int = 128,
        attention_dim: int = 64,
        factor_k: int = 5,
        bilinear_dim: int = 128,
        fused_dim: int = 128,
        dropout: float = 0.1,
        modality_dropout: float = 0.1,
    ):
        super().__init__()
        if not 0.0 <= modality_dropout <= 0.5:
            raise ValueError(f"modality_dropout must lie in [0, 0.5], got {modality_dropout}")
        self.factor_k = factor_k
        self.bilinear_dim = bilinear_dim
        self.modality_dropout = modality_dropout
        self.face_norm = nn.LayerNorm(face_dim)
        self.voice_norm = nn.LayerNorm(voice_dim)
        self.face_attention = AdditiveAttention(face_dim, 1, attention_dim)
        self.voice_attention = AdditiveAttention(voice_dim, 1, attention_dim)
        self.face_factor = nn.Linear(face_dim, factor_k * bilinear_dim)
        self.voice_factor = nn.Linear(voice_dim, factor_k * bilinear_dim)
        self.bilinear_out = nn.Sequential(nn.Linear(bilinear_dim, fused_dim), nn.GELU())
        self.face_out = nn.Sequential(nn.Linear(face_dim, fused_dim), nn.GELU())
        self.voice_out = nn.Sequential(nn.Linear(voice_dim, fused_dim), nn.GELU())
        self.gate = nn.Linear(3 * fused_dim + 1, 3)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(fused_dim, N_CLASSES)
        self.valence_arousal = nn.Linear(fused_dim, 2)

    def _bilinear(self, face: Tensor, voice: Tensor) -> Tensor:
        joint = self.dropout(self.face_factor(face) * self.voice_factor(voice))
        pooled = joint.view(-1, self.bilinear_dim, self.factor_k).sum(-1)
        # Signed square root, shifted so that it is 0 at 0 with a finite slope there: the plain
        # sqrt has an infinite derivative at 0, which turns into NaN gradients.
        eps = 1e-6
        pooled = torch.sign(pooled) * (torch.sqrt(pooled.abs() + eps) - math.sqrt(eps))
        return F.normalize(pooled, dim=-1)

    def forward(
        self,
        face_feats: Tensor,
        face_mask: Tensor,
        voice_feats: Tensor,
        voice_mask: Tensor,
        speaking: Tensor,
    ) -> FusionOutput:
        face_mask = face_mask.to(torch.bool)
        voice_mask = voice_mask.to(torch.bool)
        if self.training and self.modality_dropout > 0:
            both = face_mask.any(1) & voice_mask
            draw = torch.rand(both.shape, device=both.device)
            hide_face = both & (draw < self.modality_dropout)
            hide_voice = both & (draw >= self.modality_dropout) & (
                draw < 2 * self.modality_dropout)
            face_mask = face_mask & ~hide_face.unsqueeze(1)
            voice_mask = voice_mask & ~hide_voice
        face_present = face_mask.any(1)
        speaking = torch.where(voice_mask, speaking.clamp(0.0, 1.0).nan_to_num(0.0),
                               torch.zeros_like(speaking)).unsqueeze(1)
        # Zero masked inputs before any arithmetic: NaN or garbage there must not propagate.
        face = self.face_norm(face_feats.masked_fill(~face_mask.unsqueeze(-1), 0.0))
        region_mask = voice_mask.unsqueeze(1).expand(-1, voice_feats.shape[1])
        voice = self.voice_norm(voice_feats.masked_fill(~region_mask.unsqueeze(-1), 0.0))
        face, _ = self.face_attention(face, face_mask, speaking)
        voice, _ = self.voice_attention(voice, region_mask, speaking)

        paths = torch.stack(
            [self.bilinear_out(self._bilinear(face, voice)), self.face_out(face),
             self.voice_out(voice)], dim=1)
        available = torch.stack([face_present & voice_mask, face_present, voice_mask], dim=1)
        gate = masked_softmax(self.gate(torch.cat([paths.flatten(1), speaking], 1)), available, 1)
        fused = (gate.unsqueeze(-1) * paths).sum(1)

        hidden = self.dropout(fused)
        valence_arousal = torch.tanh(self.valence_arousal(hidden))
        return FusionOutput(self.classifier(hidden), valence_arousal[:, 0], valence_arousal[:, 1],
                            fused, fusion_mode(face_present, voice_mask))


class DecisionFusion(nn.Module):
    """Late-fusion baseline: a learnt weighted average of unimodal predictions.

    A face head (masked mean over frames, then an MLP) and a voice head (mean over regions,
    then an MLP) each predict class probabilities and valence/arousal.  The two are averaged
    with weights ``softmax(modality_logits)``, renormalised over the modalities present in
    the window, so a window with one modality gets that modality's prediction unchanged.
    ``speaking`` is accepted for interface parity and not used.

    ``logits`` are the log of the averaged probabilities (softmax gives them back);
    ``features`` (9) are the averaged probabilities followed by valence and arousal.  With no
    modality the probabilities are uniform and valence/arousal 0.
    """

    def __init__(self, face_dim: int = 128, voice_dim: int = 128, hidden_dim: int = 64,
                 dropout: float = 0.1):
        super().__init__()
        self.n_classes = N_CLASSES
        self.face_norm = nn.LayerNorm(face_dim)
        self.voice_norm = nn.LayerNorm(voice_dim)
        self.face_head = nn.Sequential(nn.Linear(face_dim, hidden_dim), nn.GELU(),
                                       nn.Dropout(dropout), nn.Linear(hidden_dim, N_CLASSES + 2))
        self.voice_head = nn.Sequential(nn.Linear(voice_dim, hidden_dim), nn.GELU(),
                                        nn.Dropout(dropout), nn.Linear(hidden_dim, N_CLASSES + 2))
        # Equal weights at the start: neither modality is preferred before training.
        self.modality_logits = nn.Parameter(torch.zeros(2))

    def modality_weights(self) -> Tensor:
        """The learnt (face, voice) weights for a window with both modalities."""
        return torch.softmax(self.modality_logits, 0)

    def forward(
        self,
        face_feats: Tensor,
        face_mask: Tensor,
        voice_feats: Tensor,
        voice_mask: Tensor,
        speaking: Tensor,
    ) -> FusionOutput:
        face_mask = face_mask.to(torch.bool)
        voice_mask = voice_mask.to(torch.bool)
        face_present = face_mask.any(1)
        # Equal scores: a mean over the present frames (zero vector when there are none).
        frame_weights = masked_softmax(torch.zeros_like(face_feats[..., 0]), face_mask, 1)
        face = self.face_norm(face_feats.masked_fill(~face_mask.unsqueeze(-1), 0.0))
        face = torch.bmm(frame_weights.unsqueeze(1), face).squeeze(1)
        voice = voice_feats.masked_fill(~voice_mask.view(-1, 1, 1), 0.0)
        voice = self.voice_norm(voice).mean(1)

        outputs = torch.stack([self.face_head(face), self.voice_head(voice)], dim=1)
        probs = torch.softmax(outputs[..., :self.n_classes], -1)
        valence_arousal = torch.tanh(outputs[..., self.n_classes:])
        present = torch.stack([face_present, voice_mask], dim=1)
        weights = self.modality_weights().unsqueeze(0) * present.to(probs.dtype)
        weights = (weights / weights.sum(1, keepdim=True).clamp_min(1e-12)).unsqueeze(-1)
        fused_probs = (weights * probs).sum(1)
        fused_probs = torch.where(present.any(1, keepdim=True), fused_probs,
                                  torch.full_like(fused_probs, 1.0 / self.n_classes))
        fused_va = (weights * valence_arousal).sum(1)
        return FusionOutput(torch.log(fused_probs.clamp_min(1e-12)), fused_va[:, 0],
                            fused_va[:, 1], torch.cat([fused_probs, fused_va], 1),
                            fusion_mode(face_present, voice_mask))
