"""Face, waveform and spectrogram augmentation (pipelines/train/augment.py): shapes, ranges,
determinism, and that each transform does what its name says on a real face and real speech."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines.train.augment import (
    add_noise,
    augment_face,
    augment_voice,
    brightness,
    crop_resize,
    gaussian_noise,
    hflip,
    random_gain,
    rotate,
    spec_augment,
    time_mask,
)
from pipelines.train.media import load_audio


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def faces(fer_faces) -> torch.Tensor:
    """The fixture faces as a float batch (5, 1, 48, 48) in [0, 1]."""
    return torch.from_numpy(np.stack(fer_faces)).float().div(255)[:, None]


@pytest.fixture(scope="module")
def waves(ravdess_root) -> torch.Tensor:
    """Two 1 s windows of real (espeak-ng) speech, (2, 16000)."""
    files = sorted(ravdess_root.glob("Actor_01/*.flac"))
    return torch.stack([torch.from_numpy(load_audio(str(f), 0.2, 1.2)) for f in files])


FACE_AUGMENTS = {
    "hflip": lambda x, g: hflip(x, 0.5, g),
    "rotate": lambda x, g: rotate(x, 15.0, g),
    "crop_resize": lambda x, g: crop_resize(x, (0.7, 0.9), g),
    "brightness": lambda x, g: brightness(x, 0.3, g),
    "gaussian_noise": lambda x, g: gaussian_noise(x, 0.05, g),
    "augment_face": lambda x, g: augment_face(x, g),
}


@pytest.mark.parametrize("name", FACE_AUGMENTS)
@pytest.mark.parametrize("shape", [(48, 48), (1, 48, 48), (5, 1, 48, 48), (5, 3, 48, 48)])
def test_face_augment_shapes_ranges_determinism(faces, name, shape):
    rgb = faces.expand(5, 3, 48, 48).contiguous()
    images = {(48, 48): rgb[0, 0], (1, 48, 48): rgb[0, :1], (5, 1, 48, 48): rgb[:, :1],
              (5, 3, 48, 48): rgb}[shape]
    augment = FACE_AUGMENTS[name]
    out = augment(images, seeded(1))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, augment(images, seeded(1)), rtol=0, atol=0)
    if name != "hflip" or images.dim() == 4:  # one image may draw "no flip" for both seeds
        assert not torch.equal(augment(images, seeded(1)), augment(images, seeded(2)))


def test_face_augments_do_what_they_say(faces):
    flipped = hflip(faces, p=1.0)
    torch.testing.assert_close(flipped, faces.flip(-1))
    torch.testing.assert_close(hflip(faces, p=0.0), faces)
    torch.testing.assert_close(rotate(faces, 0.0), faces, atol=1e-5, rtol=0)
    torch.testing.assert_close(crop_resize(faces, (1.0, 1.0)), faces, atol=1e-5, rtol=0)
    dim = faces * 0.5 + 0.05  # in [0.05, 0.55]: a factor up to 1.3 never clips
    ratio = (brightness(dim, max_delta=0.3, generator=seeded(0)) / dim).flatten(1)
    assert (ratio.max(1).values - ratio.min(1).values < 1e-5).all()  # one factor per image
    assert ((ratio[:, 0] >= 0.7) & (ratio[:, 0] <= 1.3)).all()
    assert ratio[:, 0].unique().numel() == len(faces)  # drawn for each image
    noisy = gaussian_noise(torch.full((1, 100, 100), 0.5), std=0.05, generator=seeded(0))
    assert abs(float((noisy - 0.5).std()) - 0.05) < 0.005


def principal_angle(images: torch.Tensor) -> torch.Tensor:
    """Orientation in degrees of the bright structure in each (1, H, W) image."""
    _, _, height, width = images.shape
    y, x = torch.meshgrid(torch.arange(height) - (height - 1) / 2,
                          torch.arange(width) - (width - 1) / 2, indexing="ij")
    w = images[:, 0] / images[:, 0].sum(dim=(1, 2), keepdim=True)
    cxx, cyy, cxy = (w * x * x).sum((1, 2)), (w * y * y).sum((1, 2)), (w * x * y).sum((1, 2))
    return torch.rad2deg(0.5 * torch.atan2(2 * cxy, cxx - cyy))


def test_rotate_turns_within_the_limit():
    line = torch.zeros(64, 1, 65, 65)
    line[:, :, 31:34, 8:57] = 1.0  # a horizontal bar, short of the edges
    angles = principal_angle(rotate(line, max_degrees=20.0, generator=seeded(0)))
    assert angles.abs().max() <= 20.5
    assert angles.std() > 8  # uniform on ±20° has a standard deviation of 11.5°


def test_crop_resize_zooms_in_by_the_area_scale():
    square = torch.zeros(16, 1, 64, 64)
    square[:, :, 24:40, 24:40] = 1.0  # stays inside every crop of half the area
    zoomed = crop_resize(square, scale=(0.5, 0.5), generator=seeded(0))
    growth = zoomed.sum(dim=(1, 2, 3)) / square.sum(dim=(1, 2, 3))
    assert ((growth > 1.8) & (growth < 2.2)).all()


def test_face_augments_reject_integer_images(fer_faces):
    with pytest.raises(TypeError):
        augment_face(torch.tensor(fer_faces[0]))


def test_audio_gain_noise_mask(waves):
    gained = random_gain(waves, 6.0, 6.0)
    torch.testing.assert_close(gained, waves * 10 ** (6 / 20))

    noisy = add_noise(waves, snr_db=20.0, generator=seeded(0))
    noise = noisy - waves
    snr = 10 * torch.log10(waves.pow(2).mean(1) / noise.pow(2).mean(1))
    torch.testing.assert_close(snr, torch.full((2,), 20.0), atol=0.2, rtol=0)
    silent = torch.zeros(1, 16000)
    torch.testing.assert_close(add_noise(silent, 10.0), silent)

    masked = time_mask(waves, max_fraction=0.2, n_masks=2, generator=seeded(0))
    changed = masked != waves
    assert 0 < int(changed.sum(1).max()) <= 2 * int(0.2 * 16000)
    assert (masked[changed] == 0).all()


def test_time_mask_on_spectrograms_masks_whole_frames():
    spectrogram = torch.ones(3, 40, 100)
    masked = time_mask(spectrogram, max_fraction=0.3, value=-80.0, feature_dims=1,
                       generator=seeded(0))
    frames = masked == -80.0
    # a masked frame is masked in all 40 bands, and no item loses more than 30 frames
    assert (frames.all(1) == frames.any(1)).all()
    assert 0 < int(frames.all(1).sum(1).max()) <= 30


@pytest.mark.parametrize("shape", [(16000,), (2, 16000), (2, 2, 8000)])
def test_augment_voice_shapes_and_determinism(waves, shape):
    audio = waves.reshape(-1)[: int(np.prod(shape))].reshape(shape)
    out = augment_voice(audio, seeded(5))
    assert out.shape == audio.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, augment_voice(audio, seeded(5)), rtol=0, atol=0)
    assert not torch.equal(out, augment_voice(audio, seeded(6)))


def test_spec_augment_masks_whole_bands_and_frames_with_the_mean():
    spec = torch.randn(6, 1, 40, 51) + 5.0  # no zeros of its own
    out = spec_augment(spec, seeded(0), time_masks=2, freq_masks=2, max_fraction=0.15)
    assert out.shape == spec.shape
    zero = out == 0
    kept = ~zero
    torch.testing.assert_close(out[kept], spec[kept])  # what is not masked is untouched
    for item in zero[:, 0]:
        bands = item.all(1)  # mel bins masked over every frame
        frames = item.all(0)  # frames masked over every bin
        # every masked cell lies in a fully masked band or frame
        assert torch.equal(item, bands[:, None] | frames[None, :])
        assert int(bands.sum()) <= 2 * math.floor(0.15 * 40)
        assert int(frames.sum()) <= 2 * math.floor(0.15 * 51)
    assert bool(zero.any(dim=(1, 2, 3)).sum() >= 4)  # most items get some mask
    torch.testing.assert_close(spec_augment(spec, seeded(0), max_fraction=0.15), out,
                               rtol=0, atol=0)
    assert not torch.equal(spec_augment(spec, seeded(1), max_fraction=0.15), out)
    torch.testing.assert_close(spec_augment(spec, seeded(0), time_masks=0, freq_masks=0),
                               spec)
