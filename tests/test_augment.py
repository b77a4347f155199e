"""Training-time augmentation of rendered views (facet_vlm.geometry.augment)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from facet_vlm.data.synthetic import SyntheticSettings, make_scan
from facet_vlm.errors import ConfigError
from facet_vlm.geometry import DEFAULT_VIEWS, align, render_views
from facet_vlm.geometry.augment import (
    ViewAugmenter,
    jitter_depth,
    mirror_partners,
    mirror_views,
    punch_holes,
    shift_views,
)

CHANNELS = ("texture", "depth", "normal")


def test_mirrored_renders_equal_renders_of_the_mirrored_face():
    face = align(make_scan(0, "happiness", 4, SyntheticSettings(vertices=1500, texture_size=64)).face)
    mirrored = dataclasses.replace(face, vertices=face.vertices * np.array([-1.0, 1.0, 1.0]),
                                   faces=face.faces[:, ::-1].copy())
    views, mask = render_views(face, DEFAULT_VIEWS, 48, CHANNELS)
    expected, expected_mask = render_views(mirrored, DEFAULT_VIEWS, 48, CHANNELS)
    result = mirror_views(torch.from_numpy(views)[None], DEFAULT_VIEWS, CHANNELS)[0].numpy()
    both = mask[mirror_partners(DEFAULT_VIEWS)][:, :, ::-1] & expected_mask
    assert both.sum() > 0.9 * expected_mask.sum()
    error = np.abs(result - expected).transpose(1, 0, 2, 3)[:, both]
    assert np.median(error) < 1e-3 and np.mean(error) < 0.02
    unmirrored = np.abs(views - expected).transpose(1, 0, 2, 3)[:, both]
    assert np.mean(unmirrored) > 5 * np.mean(error)


def test_mirror_needs_symmetric_views_and_twice_is_identity():
    assert mirror_partners(DEFAULT_VIEWS) == [0, 2, 1, 3, 4]
    pixels = torch.rand(2, 5, 7, 8, 8)
    assert torch.equal(mirror_views(mirror_views(pixels, DEFAULT_VIEWS, CHANNELS), DEFAULT_VIEWS, CHANNELS), pixels)
    with pytest.raises(ConfigError, match="no mirror view"):
        mirror_partners([(0.0, 0.0), (30.0, 0.0)])
    with pytest.raises(ConfigError, match="unknown augmentation settings"):
        ViewAugmenter.from_processor(type("P", (), {"view_angles": DEFAULT_VIEWS, "channels": CHANNELS})(),
                                     {"rotate": 1})


def test_shift_holes_and_depth_noise_keep_the_background():
    torch.manual_seed(0)
    pixels = torch.zeros(4, 5, 7, 16, 16)
    pixels[..., 4:12, 4:12] = 0.5
    shifted = shift_views(pixels, 2)
    assert torch.allclose(shifted.sum(dim=(-1, -2)), pixels.sum(dim=(-1, -2)))  # moved, not cut (2 px margin)
    assert not torch.equal(shifted, pixels)
    holed = punch_holes(pixels, 3, (2.0, 3.0))
    assert (holed <= pixels).all() and holed.sum() < pixels.sum()
    noisy = jitter_depth(pixels, CHANNELS, 0.05)
    assert torch.equal(noisy[:, :, 3][pixels[:, :, 3] == 0], pixels[:, :, 3][pixels[:, :, 3] == 0])
    assert not torch.equal(noisy[:, :, 3], pixels[:, :, 3]) and torch.equal(noisy[:, :, :3], pixels[:, :, :3])
    augmenter = ViewAugmenter(DEFAULT_VIEWS, CHANNELS, mirror_prob=1.0, max_shift=0)
    assert torch.equal(augmenter(pixels), mirror_views(pixels, DEFAULT_VIEWS, CHANNELS))


def test_training_collator_augments_and_the_evaluation_collator_does_not():
    from facet_vlm.arguments import DataArguments
    from facet_vlm.data.prepare import FeatureCollator

    rng = np.random.default_rng(0)
    rows = [{"pixel_values": rng.random((5, 7, 8, 8), dtype=np.float32), "labels": i} for i in range(4)]
    augmenter = ViewAugmenter(DEFAULT_VIEWS, CHANNELS, mirror_prob=1.0, max_shift=0)
    plain = FeatureCollator(["pixel_values"])(rows)
    train = FeatureCollator(["pixel_values"], augmenter)(rows)
    assert torch.equal(train["pixel_values"], mirror_views(plain["pixel_values"], DEFAULT_VIEWS, CHANNELS))
    assert torch.equal(train["labels"], plain["labels"])
    assert DataArguments(augment='{"mirror_prob": 0.5, "max_shift": 2}').augment == {"mirror_prob": 0.5,
                                                                                     "max_shift": 2}


def test_training_collator_draws_per_batch_and_epoch_and_leaves_the_global_rng_alone():
    from facet_vlm.data.prepare import FeatureCollator

    rng = np.random.default_rng(0)
    rows = [{"pixel_values": rng.random((5, 7, 8, 8), dtype=np.float32), "labels": i, "path": f"s{i}.wrl"}
            for i in range(4)]
    collate = FeatureCollator(["pixel_values"], ViewAugmenter(DEFAULT_VIEWS, CHANNELS, mirror_prob=0.5, max_shift=2,
                                                              max_holes=2, depth_noise=0.01), seed=3)
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    first = collate(rows)["pixel_values"]
    assert torch.equal(torch.random.get_rng_state(), before)  # dropout's stream is not moved by the augmentation
    torch.manual_seed(123)
    assert torch.equal(collate(rows)["pixel_values"], first)  # the same batch of the same epoch: the same draws
    collate.set_epoch(1)
    second_epoch = collate(rows)["pixel_values"]
    assert not torch.equal(second_epoch, first)
    collate.set_epoch(1, seed=4)
    assert not torch.equal(collate(rows)["pixel_values"], second_epoch)
    assert not torch.equal(collate(rows[:2])["pixel_values"], first[:2])  # another batch, other draws


def test_a_sequence_gets_one_draw_for_all_its_frames():
    torch.manual_seed(0)
    frames = torch.rand(6, 4, 5, 7, 16, 16)  # different content per frame: the draw must still be shared
    augmenter = ViewAugmenter(DEFAULT_VIEWS, CHANNELS, mirror_prob=0.5, max_shift=2, max_holes=3)
    out = augmenter(frames)
    assert out.shape == frames.shape and not torch.equal(out, frames)
    # the same transformation in every frame: the augmentation of a static clip is static
    static = frames[:, :1].expand(-1, 4, -1, -1, -1, -1).contiguous()
    torch.manual_seed(1)
    augmented = augmenter(static)
    assert torch.equal(augmented, augmented[:, :1].expand_as(augmented))
    assert not torch.equal(augmented, static)
    # frame by frame it is the still augmentation of that frame with the clip's draw
    torch.manual_seed(1)
    first_frames = augmenter(static[:, 0])
    assert torch.equal(augmented[:, 0], first_frames)
    # mirroring flips every frame: twice mirrored is the clip itself, normal x negated in each frame
    mirror = ViewAugmenter(DEFAULT_VIEWS, CHANNELS, mirror_prob=1.0, max_shift=0)
    mirrored = mirror(frames)
    for t in range(4):
        assert torch.equal(mirrored[:, t], mirror_views(frames[:, t], DEFAULT_VIEWS, CHANNELS))


def test_depth_noise_is_drawn_per_frame_of_a_sequence():
    torch.manual_seed(0)
    static = torch.full((2, 3, 5, 7, 8, 8), 0.5)
    noisy = ViewAugmenter(DEFAULT_VIEWS, CHANNELS, mirror_prob=0.0, max_shift=0, depth_noise=0.05)(static)
    assert not torch.equal(noisy[:, 0, :, 3], noisy[:, 1, :, 3])
    assert torch.equal(noisy[:, :, :, :3], static[:, :, :, :3]) and torch.equal(noisy[:, :, :, 4:], static[:, :, :, 4:])
