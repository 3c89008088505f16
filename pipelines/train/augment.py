"""Training augmentation of face crops, waveforms and log-mel spectrograms (plain PyTorch).

Every augmentation draws its randomness from a ``generator`` (CPU; the global RNG when None),
per image or row, so a seeded generator repeats the same output on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _image_batch(images: torch.Tensor) -> torch.Tensor:
    """``images`` (H, W), (C, H, W) or (N, C, H, W) floats as (N, C, H, W)."""
    if not torch.is_floating_point(images):
        raise TypeError(f"augmentations take float images in [0, 1], got {images.dtype}")
    if not 2 <= images.dim() <= 4:
        raise ValueError(f"images must be (H, W), (C, H, W) or (N, C, H, W), got "
                         f"{tuple(images.shape)}")
    return images.reshape((1,) * (4 - images.dim()) + tuple(images.shape))


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None,
             like: torch.Tensor) -> torch.Tensor:
    # Drawn on the CPU generator and then moved, so a seed gives the same draws on any device.
    draws = torch.rand(n, generator=generator, dtype=torch.float64)
    return (low + (high - low) * draws).to(device=like.device, dtype=like.dtype)


def _rotation(n: int, max_degrees: float, generator: torch.Generator | None,
              like: torch.Tensor) -> torch.Tensor:
    angle = _uniform(n, -max_degrees, max_degrees, generator, like) * (math.pi / 180)
    cos, sin, zero, one = angle.cos(), angle.sin(), torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1),
                        torch.stack([zero, zero, one], 1)], 1)


def _crop(n: int, scale: tuple[float, float], generator: torch.Generator | None,
          like: torch.Tensor) -> torch.Tensor:
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"crop scale must satisfy 0 < low <= high <= 1, got {scale}")
    side = _uniform(n, scale[0], scale[1], generator, like).sqrt()
    shift_x = _uniform(n, -1, 1, generator, like) * (1 - side)
    shift_y = _uniform(n, -1, 1, generator, like) * (1 - side)
    zero, one = torch.zeros_like(side), torch.ones_like(side)
    return torch.stack([torch.stack([side, zero, shift_x], 1),
                        torch.stack([zero, side, shift_y], 1),
                        torch.stack([zero, zero, one], 1)], 1)


def _warp(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample (N, C, H, W) ``images``: output pixel p reads input at ``matrix @ p``
    (normalised coordinates, (N, 3, 3)).  Edge pixels extend outward, so no black corners."""
    grid = F.affine_grid(matrix[:, :2], list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def hflip(images: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
          ) -> torch.Tensor:
    """Mirror each image left–right with probability ``p`` (faces are near-symmetric, the
    expression is the same).  Shapes (H, W), (C, H, W) or (N, C, H, W), floats; same shape out.
    Every augmentation here draws its randomness from ``generator`` (CPU; the global RNG when
    None), per image in a batch, so a seeded generator repeats the same output."""
    batch = _image_batch(images)
    flip = _uniform(len(batch), 0, 1, generator, batch) < p
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch).reshape(images.shape)


def rotate(images: torch.Tensor, max_degrees: float = 10.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each image by a uniform angle in ±``max_degrees`` about its centre (head roll);
    meant for square crops.  Shapes as :func:`hflip`."""
    batch = _image_batch(images)
    return _warp(batch, _rotation(len(batch), max_degrees, generator, batch)
                 ).reshape(images.shape)


def crop_resize(images: torch.Tensor, scale: tuple[float, float] = (0.8, 1.0),
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop a random square covering ``scale`` (area share) of each image and resize it back
    to the full size (detector box jitter).  Shapes as :func:`hflip`."""
    batch = _image_batch(images)
    return _warp(batch, _crop(len(batch), scale, generator, batch)).reshape(images.shape)


def brightness(images: torch.Tensor, max_delta: float = 0.2,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each image's intensities by a factor in 1 ± ``max_delta`` (lighting), clipped to
    [0, 1].  Shapes as :func:`hflip`."""
    batch = _image_batch(images)
    factor = _uniform(len(batch), 1 - max_delta, 1 + max_delta, generator, batch)
    return (batch * factor[:, None, None, None]).clamp(0, 1).reshape(images.shape)


def gaussian_noise(images: torch.Tensor, std: float = 0.02,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Add Gaussian noise of standard deviation ``std`` (sensor noise, webcam compression),
    clipped to [0, 1].  Any float shape."""
    if not torch.is_floating_point(images):
        raise TypeError(f"augmentations take float images in [0, 1], got {images.dtype}")
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float64)
    return (images + std * noise.to(images.device, images.dtype)).clamp(0, 1)


def augment_face(images: torch.Tensor, generator: torch.Generator | None = None, *,
                 p_flip: float = 0.5, max_degrees: float = 10.0,
                 crop_scale: tuple[float, float] = (0.8, 1.0), max_brightness: float = 0.2,
                 noise_std: float = 0.02) -> torch.Tensor:
    """Training augmentation of face crops in [0, 1]: flip, rotation and crop-resize (composed
    into one resampling, so the image is interpolated once), brightness, Gaussian noise.
    Shapes as :func:`hflip`; the output is in [0, 1] with the input's shape and dtype."""
    batch = _image_batch(images)
    batch = hflip(batch, p_flip, generator)
    # out(p) = rotated(crop(p)) = x(R · C · p): one grid_sample instead of two blurs
    matrix = _rotation(len(batch), max_degrees, generator, batch) @ _crop(
        len(batch), crop_scale, generator, batch)
    batch = brightness(_warp(batch, matrix), max_brightness, generator)
    return gaussian_noise(batch, noise_std, generator).reshape(images.shape)


# --- augmentation: audio --------------------------------------------------------------------
def _rows(audio: torch.Tensor) -> torch.Tensor:
    """``audio`` (..., T) floats as (rows, T)."""
    if not torch.is_floating_point(audio):
        raise TypeError(f"audio augmentations take float samples, got {audio.dtype}")
    if audio.dim() == 0:
        raise ValueError("audio needs a time axis")
    return audio.reshape(-1, audio.shape[-1])


def random_gain(audio: torch.Tensor, min_db: float = -6.0, max_db: float = 6.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each row of ``audio`` (..., T) by a gain drawn uniformly in [min_db, max_db] dB
    (microphone level).  Not clipped: the features take float samples.  Randomness as
    :func:`hflip`, per row."""
    rows = _rows(audio)
    gain_db = _uniform(len(rows), min_db, max_db, generator, rows)
    return (rows * 10 ** (gain_db[:, None] / 20)).reshape(audio.shape)


def add_noise(audio: torch.Tensor, snr_db: float | tuple[float, float] = (10.0, 30.0),
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Add white Gaussian noise at a signal-to-noise ratio of ``snr_db`` (a value, or a range
    drawn uniformly per row) relative to each row's mean power (room noise, cheap
    microphones).  A silent row stays silent (its SNR is undefined).  Shape (..., T)."""
    rows = _rows(audio)
    low, high = (snr_db, snr_db) if isinstance(snr_db, (int, float)) else snr_db
    snr = _uniform(len(rows), low, high, generator, rows)
    signal_power = rows.pow(2).mean(dim=1)
    noise_std = (signal_power / 10 ** (snr / 10)).sqrt()
    noise = torch.randn(rows.shape, generator=generator, dtype=torch.float64)
    return (rows + noise_std[:, None] * noise.to(rows.device, rows.dtype)).reshape(audio.shape)


def time_mask(audio: torch.Tensor, max_fraction: float = 0.1, n_masks: int = 1,
              value: float = 0.0, feature_dims: int = 0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Set ``n_masks`` random spans along the last (time) axis to ``value``, each up to
    ``max_fraction`` of its length (dropouts; SpecAugment's time masking).

    The last ``feature_dims + 1`` axes form one item whose feature rows share the spans:
    ``feature_dims=0`` for waveforms (..., T), ``1`` for spectrograms (..., F, T) (then pass
    the spectrogram's floor as ``value``).  Spans are drawn per item; same shape out."""
    if not torch.is_floating_point(audio):
        raise TypeError(f"audio augmentations take float samples, got {audio.dtype}")
    if audio.dim() < feature_dims + 1:
        raise ValueError(f"a tensor of shape {tuple(audio.shape)} has no time axis after "
                         f"{feature_dims} feature axes")
    length = audio.shape[-1]
    items = audio.reshape(-1, math.prod(audio.shape[audio.dim() - feature_dims - 1:-1]), length)
    n = len(items)
    widths = (_uniform(n * n_masks, 0, max_fraction * length, generator, items)
              .floor().long().reshape(n, n_masks))
    starts = (_uniform(n * n_masks, 0, 1, generator, items).reshape(n, n_masks)
              * (length - widths + 1)).floor().long()
    position = torch.arange(length, device=audio.device)[None, None, :]
    hit = ((position >= starts[..., None]) & (position < (starts + widths)[..., None])).any(1)
    return items.masked_fill(hit[:, None, :], value).reshape(audio.shape)


def augment_voice(audio: torch.Tensor, generator: torch.Generator | None = None, *,
                  min_db: float = -6.0, max_db: float = 6.0,
                  snr_db: float | tuple[float, float] = (10.0, 30.0),
                  max_mask_fraction: float = 0.1, n_masks: int = 1) -> torch.Tensor:
    """Training augmentation of waveforms (..., T): gain, noise at an SNR, time masking, in
    that order (masking last, so a masked span is a true dropout: silence, not noise)."""
    audio = random_gain(audio, min_db, max_db, generator)
    audio = add_noise(audio, snr_db, generator)
    return time_mask(audio, max_mask_fraction, n_masks, generator=generator)


def spec_augment(spec: torch.Tensor, generator: torch.Generator | None = None, *,
                 time_masks: int = 2, freq_masks: int = 2, max_fraction: float = 0.15,
                 value: float = 0.0) -> torch.Tensor:
    """SpecAugment (Park et al., Interspeech 2019) without time warping: ``time_masks`` spans
    of frames and ``freq_masks`` bands of mel bins of spectrograms (..., F, T) set to
    ``value``, each span up to ``max_fraction`` of its axis, drawn per spectrogram.

    The voice front end standardises each window, so its mean is 0: the default ``value``
    masks with the mean (no step the network could key on).  Same shape out."""
    if time_masks:
        spec = time_mask(spec, max_fraction, time_masks, value, feature_dims=1,
                         generator=generator)
    if freq_masks:
        # Bands along the mel axis = time masks of the transposed spectrograms.
        spec = time_mask(spec.transpose(-1, -2), max_fraction, freq_masks, value,
                         feature_dims=1, generator=generator).transpose(-1, -2)
    return spec
