"""Temporal head: per-window emotions from the sequence of a clip's fused window features."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from operators.schema import EMOTIONS


class TemporalOutput(NamedTuple):
    """What :class:`TemporalHead` returns for B padded sequences of L windows."""

    logits: Tensor  # (B, L, 7) class logits, order EMOTIONS; 0 at padded steps
    valence: Tensor  # (B, L) in [-1, 1]; 0 at padded steps
    arousal: Tensor  # (B, L) in [-1, 1]; 0 at padded steps


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B, max_len) bool mask, true at the first ``lengths[b]`` steps of each row."""
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


class TemporalHead(nn.Module):
    """2-layer LSTM over a clip's window features, emitting per-window emotions.

    ``forward(features (B, L, D), lengths (B,) int) -> TemporalOutput``: row b holds a clip's
    first ``lengths[b]`` windows in time order (1 <= lengths[b] <= L), the rest is padding.
    Sequences are packed, so padding never reaches the LSTM: a window's outputs do not depend
    on the padding or on other rows.

    Bidirectional by default: the timeline job sees whole recordings, so each window can use
    the context after it as well as before it (an annotator also judges a moment knowing how
    it continues).  ``bidirectional=False`` gives a causal head for streaming use.
    """

    def __init__(self, input_dim: int = 128, hidden_dim: int = 128, num_layers: int = 2,
                 bidirectional: bool = True, dropout: float = 0.2):
        super().__init__()
        self.input_norm = nn.LayerNorm(input_dim)
        self.lstm = nn.LSTM(input_dim, hidden_dim, num_layers=num_layers, batch_first=True,
                            bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        out_dim = hidden_dim * (2 if bidirectional else 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(out_dim, len(EMOTIONS))
        self.valence_arousal = nn.Linear(out_dim, 2)

    def forward(self, features: Tensor, lengths: Tensor) -> TemporalOutput:
        max_len = features.shape[1]
        mask = lengths_to_mask(lengths, max_len).unsqueeze(-1)
        # Zero the padding first so that NaN or garbage there cannot reach the layer norm.
        features = self.input_norm(features.masked_fill(~mask, 0.0))
        packed = pack_padded_sequence(features, lengths.cpu().to(torch.int64), batch_first=True,
                                      enforce_sorted=False)
        hidden, _ = self.lstm(packed)
        hidden, _ = pad_packed_sequence(hidden, batch_first=True, total_length=max_len)
        hidden = self.dropout(hidden)
        logits = self.classifier(hidden).masked_fill(~mask, 0.0)
        valence_arousal = torch.tanh(self.valence_arousal(hidden)).masked_fill(~mask, 0.0)
        return TemporalOutput(logits, valence_arousal[..., 0], valence_arousal[..., 1])
