"""Augmentation switches of issue 12: pose jitter and decimation at render time (cached variants), zoom, and the
single-view models' images and points (facet_vlm.geometry.augment)."""

from __future__ import annotations

import dataclasses
import json

import datasets
import numpy as np
import pytest
import torch

from couple.afnet_m.processing_afnet_m import AFNetMProcessor
from facet_vlm.data.prepare import FeatureCollator
from facet_vlm.data.synthetic import SyntheticSettings, generate, make_scan
from facet_vlm.errors import ConfigError
from facet_vlm.geometry import align, render_views
from facet_vlm.geometry.augment import (
    AugmentedFeatures,
    ImageAugmenter,
    RenderAugmentation,
    ViewAugmenter,
    augmenter_for,
    jitter_points,
    mirror_points,
    pose_face,
    random_zoom,
    zoom_views,
)

CHANNELS = ("texture", "depth", "normal")


@pytest.fixture(scope="module")
def face():
    return align(make_scan(0, "surprise", 4, SyntheticSettings(vertices=1500, texture_size=64)).face)


def _close(result, expected, mask_a, mask_b, median=1e-3, mean=0.02):
    both = mask_a & mask_b
    assert both.sum() > 0.9 * mask_b.sum()
    error = np.abs(result - expected).transpose(1, 0, 2, 3)[:, both]
    assert np.median(error) < median and np.mean(error) < mean
    return both


def test_posed_render_equals_the_render_of_the_turned_view(face):
    for yaw, pitch in ((12.0, 0.0), (0.0, -9.0), (8.0, 6.0)):
        posed, posed_mask = render_views(pose_face(face, yaw, pitch, 0.0), [(0.0, 0.0)], 48, CHANNELS)
        expected, expected_mask = render_views(face, [(yaw, pitch)], 48, CHANNELS)
        _close(posed, expected, posed_mask, expected_mask)
    plain, _ = render_views(face, [(0.0, 0.0)], 48, CHANNELS)
    turned, _ = render_views(pose_face(face, 12.0, 0.0, 0.0), [(0.0, 0.0)], 48, CHANNELS)
    assert np.abs(turned - plain).mean() > 0.01
    rolled = pose_face(face, 0.0, 0.0, 90.0)  # roll: the face's x axis becomes y
    assert np.allclose(rolled.vertices[:, 1], face.vertices[:, 0], atol=1e-5)


def test_render_augmentation_variants_differ_are_deterministic_and_off_is_a_no_op(face):
    raw = make_scan(0, "surprise", 4, SyntheticSettings(vertices=1500, texture_size=64)).face
    raw.meta["path"] = "F0001_SU04WH_F3D.wrl"
    off = RenderAugmentation(variants=1)
    assert np.array_equal(off.apply(raw, 1, "a").vertices, align(raw).vertices)
    augmentation = RenderAugmentation(variants=2, pose_deg=(10.0, 8.0, 5.0), decimate_prob=1.0,
                                      decimate_keep=(0.5, 0.6))
    one, again, two = (augmentation.apply(raw, k, "a") for k in (1, 1, 2))
    assert np.array_equal(one.vertices, again.vertices) and not np.array_equal(one.vertices, two.vertices)
    cropped = align(raw).num_vertices  # alignment crops to the 90 mm sphere
    assert 0.4 * cropped < one.num_vertices < 0.7 * cropped
    features = AugmentedFeatures(lambda f: {"n": np.asarray(f.num_vertices)}, augmentation, 2, {"name": "x"})
    keyed = augmentation.apply(raw, 2, raw.meta["path"])  # the cache keys a variant by the scan's path
    assert features.spec["variant"] == 2 and features(raw)["n"] == keyed.num_vertices
    with pytest.raises(ConfigError, match="unknown render augmentation"):
        RenderAugmentation.from_settings({"variants": 1, "spin": 3})
    from facet_vlm.arguments import DataArguments

    assert DataArguments(render_augment='{"variants": 2}').render_augment == {"variants": 2}
    with pytest.raises(ConfigError, match="variants must be >= 0"):
        DataArguments(render_augment='{"variants": -1}')


def test_zoom_equals_the_render_of_the_scaled_face_and_keeps_it_centred(face):
    views, mask = render_views(face, [(0.0, 0.0), (30.0, 0.0)], 64, CHANNELS)
    pixels = torch.from_numpy(views)[None]
    assert torch.equal(zoom_views(pixels, CHANNELS, torch.ones(1)), pixels)
    assert torch.equal(random_zoom(pixels, CHANNELS, 0.0), pixels)
    for scale in (0.85, 1.1):
        zoomed = zoom_views(pixels, CHANNELS, torch.tensor([scale]))[0].numpy()
        scaled = dataclasses.replace(face, vertices=face.vertices * scale)
        expected, expected_mask = render_views(scaled, [(0.0, 0.0), (30.0, 0.0)], 64, CHANNELS)
        zoomed_mask = zoomed[:, 3] > 0
        both = _close(zoomed, expected, zoomed_mask, expected_mask, median=0.015, mean=0.04)  # nearest-pixel zoom
        unzoomed = np.abs(views - expected).transpose(1, 0, 2, 3)[:, both & mask]
        assert np.median(unzoomed) > 3 * np.median(np.abs(zoomed - expected).transpose(1, 0, 2, 3)[:, both])
        # Centred: every foreground pixel's offset from the image centre grows by the factor.
        rows, cols = np.nonzero(mask[0])
        zrows, zcols = np.nonzero(zoomed_mask[0])
        centre = 31.5
        for before, after in ((rows, zrows), (cols, zcols)):
            assert abs((after.mean() - centre) - scale * (before.mean() - centre)) < 1.0
            assert abs(np.ptp(after) - scale * np.ptp(before)) < 2.0


def test_afnet_images_mirror_with_their_masks_and_geometry(face):
    mirrored_face = dataclasses.replace(face, vertices=face.vertices * np.array([-1.0, 1.0, 1.0], np.float32),
                                        faces=face.faces[:, ::-1].copy())
    processor = AFNetMProcessor(image_size=48, with_masks=True)
    batch = {name: torch.as_tensor(value) for name, value in processor([face]).items()}
    expected = processor([mirrored_face])
    augmenter = ImageAugmenter.from_settings("AFNetMProcessor", {"mirror_prob": 1.0, "max_shift": 0})
    result = augmenter.augment_batch({**batch, "labels": torch.tensor([3])})
    assert torch.equal(result["labels"], torch.tensor([3]))
    mask = (batch["geometry_values"][0, 0] > 0).numpy()[:, ::-1]
    expected_mask = (torch.as_tensor(expected["geometry_values"])[0, 0] > 0).numpy()
    for name in ("pixel_values", "geometry_values"):
        _close(result[name].numpy(), torch.as_tensor(expected[name]).numpy(), mask[None], expected_mask[None])
    assert torch.equal(result["region_masks"], batch["region_masks"].flip(-1))
    off = ImageAugmenter.from_settings("AFNetMProcessor", {"mirror_prob": 0.0, "max_shift": 0})
    assert all(torch.equal(off.augment_batch(batch)[name], batch[name]) for name in batch)
    zoom = ImageAugmenter.from_settings("AFNetMProcessor", {"mirror_prob": 0.0, "max_shift": 0, "max_zoom": 0.2})
    def foreground(inputs):
        return inputs["geometry_values"][:, 0] > 0

    assert torch.equal(batch["pixel_values"].amax(1) > 0, foreground(batch))
    changed = []
    for seed in range(6):
        torch.manual_seed(seed)
        zoomed = zoom.augment_batch(batch)
        assert torch.equal(zoomed["pixel_values"].amax(1) > 0, foreground(zoomed))  # one draw moves all inputs
        changed.append(not torch.equal(foreground(zoomed), foreground(batch)))
    assert any(changed)  # zooming out shows background at the border (zooming in may not: the face fills it)
    with pytest.raises(ConfigError, match="point_noise"):
        ImageAugmenter.from_settings("AFNetMProcessor", {"point_noise": 0.01})


@pytest.mark.parametrize("settings, message", [({"mirror_prob": 1.5}, "mirror_prob"), ({"max_zoom": 1.0}, "max_zoom"),
                                               ({"max_holes": -1}, "max_holes")])
def test_both_augmenters_check_the_image_amounts(settings, message):
    with pytest.raises(ConfigError, match=message):
        ImageAugmenter.from_settings("AFNetMProcessor", settings)
    with pytest.raises(ConfigError, match=message):
        ViewAugmenter(((0.0, 0.0),), ("depth",), **settings)
    assert ImageAugmenter.from_settings("CoupleFERProcessor", {"hole_radius": [1, 2]}).hole_radius == (1.0, 2.0)


def test_couplefer_points_mirror_with_the_image_and_jitter():
    torch.manual_seed(0)
    points = torch.rand(4, 32, 9) - 0.5
    image = torch.rand(4, 3, 8, 8)
    assert torch.equal(mirror_points(mirror_points(points)), points)
    mirrored = mirror_points(points)
    assert torch.equal(mirrored[..., [1, 2, 4, 5, 6, 7, 8]], points[..., [1, 2, 4, 5, 6, 7, 8]])
    augmenter = ImageAugmenter.from_settings("CoupleFERProcessor", {"mirror_prob": 0.5, "max_shift": 0})
    out = augmenter.augment_batch({"pixel_values": image, "points": points})
    flipped = [torch.equal(out["pixel_values"][b], image[b].flip(-1)) for b in range(4)]
    for b in range(4):
        assert torch.equal(out["points"][b], mirrored[b] if flipped[b] else points[b])
    assert torch.equal(jitter_points(points, (0.0, 0.0, 0.0), 0.0), points)
    turned = jitter_points(points, (10.0, 10.0, 10.0), 0.0)
    assert torch.allclose(turned[..., :3].norm(dim=-1), points[..., :3].norm(dim=-1), atol=1e-5)  # a rotation
    assert not torch.allclose(turned, points) and torch.equal(turned[..., 6:], points[..., 6:])


def test_training_collator_picks_cached_variants():
    torch.manual_seed(0)
    rows = [{"pixel_values": np.zeros((1, 1, 2, 2), np.float32), "labels": i, "path": f"s{i}.wrl"} for i in range(8)]
    variant = datasets.Dataset.from_dict({"pixel_values": [np.full((1, 1, 2, 2), i + 1.0) for i in range(8)]})
    collator = FeatureCollator(["pixel_values"], None, [variant.with_format("numpy")],
                               {f"s{i}.wrl": i for i in range(8)})
    seen = set()
    for _ in range(5):
        batch = collator(rows)
        values = batch["pixel_values"].flatten(1)[:, 0]
        assert all(v in (0.0, i + 1.0) for i, v in enumerate(values.tolist()))
        seen |= {v > 0 for v in values.tolist()}
    assert seen == {True, False}
    assert torch.equal(FeatureCollator(["pixel_values"])(rows)["pixel_values"], torch.zeros(8, 1, 1, 2, 2))
    assert isinstance(ViewAugmenter(((0.0, 0.0),), CHANNELS, max_zoom=0.1).augment_batch(
        {"pixel_values": torch.zeros(1, 1, 7, 4, 4)}), dict)


def test_each_model_gets_the_augmenter_of_its_inputs():
    from couple.couplefer.processing_couplefer import CoupleFERProcessor
    from facet_vlm.models.facet_vlm.processing_facet_vlm import FacetVLMProcessor

    assert isinstance(augmenter_for(FacetVLMProcessor(image_size=32), {"max_zoom": 0.1}), ViewAugmenter)
    images = augmenter_for(CoupleFERProcessor(image_size=32), {"point_noise": 0.01})
    assert isinstance(images, ImageAugmenter) and set(images.inputs) == {"pixel_values", "neutral_pixel_values"}
    with pytest.raises(ConfigError, match="makes none"):
        augmenter_for(object(), {})


@pytest.mark.parametrize("model", ["afnet_m", "couplefer"])
def test_training_with_both_switches_renders_one_cache_per_variant(model, tmp_path):
    from helpers import run_train, tiny_config  # the end-to-end helpers of scripts/train.py's tests

    generate(tmp_path / "scans", subjects=3, intensities=1, include_neutral=False, vertices=800, texture_size=32,
             progress=False)
    augment = {"mirror_prob": 0.5, "max_shift": 1, "max_zoom": 0.1}
    if model == "couplefer":
        augment.update(point_rotation_deg=[5.0, 5.0, 3.0], point_noise=0.01)
    config = tiny_config(tmp_path, model, tmp_path / "scans", tmp_path / "cache", augment=augment,
                         render_augment={"variants": 2, "pose_deg": [10.0, 8.0, 5.0], "decimate_prob": 0.5})
    run_train("--config", str(config))
    specs = [json.loads(path.read_text())["spec"] for path in (tmp_path / "cache" / "features").glob("*/spec.json")]
    assert sorted(spec.get("variant", 0) for spec in specs) == [0, 1, 2]
    assert json.loads((tmp_path / "run" / "all_results.json").read_text())["fold_results"][0]["num_samples"] > 0
