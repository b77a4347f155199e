"""Training-time augmentation of rendered views, applied to cached renders batch by batch.

Rendering is cached (``facet_vlm.data.cache``), so augmentation works on the renders themselves, a batch of
``pixel_values`` (B, V, C, H, W) in the renderer's native ranges (texture and depth in [0, 1], normals in [-1, 1], 0 on
the background; see `facet_vlm.geometry.render`):

* `mirror_views`: the left-right mirror image of every face. A view (yaw, pitch) of the mirrored face is the
  horizontally flipped view (-yaw, pitch) of the original with the normals' x negated (the renderer's convention), so
  the views are flipped *and* swapped with their mirror partners; expressions keep their label.
* `shift_views`: translate each view by a few pixels (residual alignment error), background filling the gap.
* `punch_holes`: set random discs of every view to the background (scanner holes that training did not see).
* `jitter_depth`: Gaussian noise on the depth of foreground pixels (scanner noise).
* `zoom_views`: scale each face about the image centre (the nose tip, see `facet_vlm.geometry.align`) by a factor
  near 1, i.e. the render of the face scaled by that factor (depth scaled about the nose tip's 0.5 too): residual
  error of the crop radius / face size.

`ViewAugmenter` chains them with per-sample probabilities (FACET-VLM's views); `ImageAugmenter` does the same for the
single frontal images of AFNet-M (texture, depth + normals, region masks: one shared draw per sample, so they stay
registered) and CoupleFER (texture, and its point cloud: mirrored with the image, plus a small random rotation and
noise). Both draw from torch's RNG; the training collator (`facet_vlm.data.prepare.FeatureCollator`) seeds it per
batch from the run's seed, the epoch and the batch's rows, so a resumed run augments as the uninterrupted one. The
amounts are our choice (in pixels and depth units); a config sets them.

What image operations cannot do (turn the head, coarsen the mesh) happens on the mesh before rendering:
`RenderAugmentation` draws a pose jitter (a rotation of the aligned face about its nose tip) and a decimation per
(scan, variant), and `AugmentedFeatures` renders variant k of every scan through the render cache, whose key
includes the variant index, so K variants cost K renders of the data set once and nothing per epoch. Rendering on
the fly instead would cost a read, an alignment and a render per sample and step: 35 ms for a 2000-vertex generated
scan into FACET-VLM's 5 views of 64 px (78 ms for a 15k-triangle scan at 224 px, see `facet_vlm.data.cache`),
against 16-19 ms per training sample of the small FACET-VLM (both measured on the shared 2-core CPU, one
thread, loaded), i.e. about 3x slower training; so the variants are cached, and the training collator picks the
original or one of the K variants per sample at random (`facet_vlm.data.prepare.FeatureCollator`).

Sequences (B, T, V, C, H, W) are augmented as one sample each: the frames of a view are stacked along the channels,
so that the mirroring, the shift and the holes of a view are the same in every frame of the sequence (our choice: the
augmentation transforms the clip as a whole, and a temporal model comparing frames sees no change that the
augmentation made). Only the depth noise is drawn per frame, as a scanner's noise is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..face import Face
from .render import CHANNEL_SIZES, view_rotation


def _offsets(channels: Sequence[str], sizes: dict[str, int] | None = None) -> dict[str, list[int]]:
    """The first channel index of every group, per group name (a name repeats when a sequence's frames are stacked);
    `sizes` adds groups the renderer does not make (region masks)."""
    known = {**CHANNEL_SIZES, **(sizes or {})}
    offsets, start = {}, 0
    for name in channels:
        if name not in known:
            raise ConfigError(f"unknown channel {name!r}; known: {', '.join(known)}")
        offsets.setdefault(name, []).append(start)
        start += known[name]
    return offsets


def mirror_partners(view_angles: Sequence[Sequence[float]]) -> list[int]:
    """For every view (yaw, pitch) the index of the view (-yaw, pitch); ConfigError when one has none."""
    angles = [(round(float(yaw), 4), round(float(pitch), 4)) for yaw, pitch in view_angles]
    partners = []
    for yaw, pitch in angles:
        mirrored = (round(-yaw, 4) + 0.0, pitch)
        if mirrored not in angles:
            raise ConfigError(f"view (yaw {yaw}, pitch {pitch}) has no mirror view (yaw {-yaw}, pitch {pitch}); "
                              "mirroring needs view angles symmetric in yaw")
        partners.append(angles.index(mirrored))
    return partners


def mirror_views(pixel_values: torch.Tensor, view_angles: Sequence[Sequence[float]],
                 channels: Sequence[str]) -> torch.Tensor:
    """The renders (B, V, C, H, W) of the left-right mirrored faces (see the module docstring)."""
    mirrored = pixel_values[:, mirror_partners(view_angles)].flip(-1)
    for start in _offsets(channels).get("normal", []):
        mirrored[:, :, start] *= -1.0
    return mirrored


def shift_views(pixel_values: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate every view of every sample by its own integer (dy, dx) in [-max_shift, max_shift] pixels."""
    if max_shift <= 0:
        return pixel_values
    batch, views = pixel_values.shape[:2]
    size_y, size_x = pixel_values.shape[-2:]
    pad = max_shift
    padded = torch.nn.functional.pad(pixel_values.flatten(0, 1), (pad, pad, pad, pad))
    shifts = torch.randint(-max_shift, max_shift + 1, (batch * views, 2))
    out = torch.stack([padded[i, :, pad - dy: pad - dy + size_y, pad - dx: pad - dx + size_x]
                       for i, (dy, dx) in enumerate(shifts.tolist())])
    return out.view_as(pixel_values)


def punch_holes(pixel_values: torch.Tensor, max_holes: int, radius: tuple[float, float]) -> torch.Tensor:
    """Set up to `max_holes` random discs (radius in pixels) of every view to the background (0)."""
    if max_holes <= 0:
        return pixel_values
    batch, views, _, size_y, size_x = pixel_values.shape
    rows = torch.arange(size_y, dtype=torch.float32).view(1, size_y, 1)
    cols = torch.arange(size_x, dtype=torch.float32).view(1, 1, size_x)
    keep = torch.ones(batch * views, size_y, size_x, dtype=torch.bool)
    counts = torch.randint(0, max_holes + 1, (batch * views,))
    for _ in range(max_holes):
        centre_y = torch.rand(batch * views, 1, 1) * size_y
        centre_x = torch.rand(batch * views, 1, 1) * size_x
        r = radius[0] + torch.rand(batch * views, 1, 1) * (radius[1] - radius[0])
        inside = (rows - centre_y) ** 2 + (cols - centre_x) ** 2 < r**2
        keep &= ~(inside & (counts > _).view(-1, 1, 1))
    return pixel_values * keep.view(batch, views, 1, size_y, size_x)


def jitter_depth(pixel_values: torch.Tensor, channels: Sequence[str], std: float,
                 sizes: dict[str, int] | None = None) -> torch.Tensor:
    """Add N(0, std) to the depth channel where it is foreground (depth > 0), clipped to [0, 1]."""
    starts = _offsets(channels, sizes).get("depth", [])
    if std <= 0 or not starts:
        return pixel_values
    out = pixel_values.clone()
    for start in starts:
        depth = out[:, :, start]
        noisy = (depth + std * torch.randn_like(depth)).clamp(0.0, 1.0)
        out[:, :, start] = torch.where(depth > 0, noisy, depth)
    return out


def zoom_views(pixel_values: torch.Tensor, channels: Sequence[str], scales: torch.Tensor,
               sizes: dict[str, int] | None = None) -> torch.Tensor:
    """Every view of sample b scaled by ``scales[b]`` about the image centre (nearest-pixel resampling, so the
    background stays exactly 0); depth is scaled about the nose tip's 0.5 too, as the render of the scaled face."""
    if bool((scales == 1).all()):
        return pixel_values
    batch, views, num_channels, size_y, size_x = pixel_values.shape
    flat = pixel_values.flatten(0, 1)
    per_view = scales.to(flat.dtype).repeat_interleave(views)
    theta = torch.zeros(batch * views, 2, 3, dtype=flat.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / per_view
    grid = torch.nn.functional.affine_grid(theta, list(flat.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(flat, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    for start in _offsets(channels, sizes).get("depth", []):
        depth = out[:, start]
        scaled = (0.5 + (depth - 0.5) * per_view.view(-1, 1, 1)).clamp(1e-3, 1.0)
        out[:, start] = torch.where(depth > 0, scaled, depth)
    return out.view(batch, views, num_channels, size_y, size_x)


def random_zoom(pixel_values: torch.Tensor, channels: Sequence[str], max_zoom: float,
                sizes: dict[str, int] | None = None) -> torch.Tensor:
    """`zoom_views` by a factor drawn per sample from [1 - max_zoom, 1 + max_zoom] (0: unchanged)."""
    if max_zoom <= 0:
        return pixel_values
    scales = 1.0 + (2.0 * torch.rand(pixel_values.shape[0]) - 1.0) * max_zoom
    return zoom_views(pixel_values, channels, scales, sizes)


def mirror_points(points: torch.Tensor) -> torch.Tensor:
    """Point clouds (B, N, 6 or 9: xyz, normal, rgb) of the left-right mirrored faces: x and normal x negated."""
    out = points.clone()
    out[..., 0] *= -1.0
    out[..., 3] *= -1.0
    return out


def rotation_matrices(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations ``Rz(roll) @ view_rotation(yaw, pitch)`` (degrees; the renderer's view convention)."""
    return torch.stack([torch.as_tensor(_pose_rotation(float(y), float(p), float(r)), dtype=torch.float32)
                        for y, p, r in zip(yaw.tolist(), pitch.tolist(), roll.tolist())])


def _pose_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    t = np.radians(roll)
    rot_z = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    return rot_z @ view_rotation(yaw, pitch)


def jitter_points(points: torch.Tensor, max_degrees: Sequence[float], noise: float) -> torch.Tensor:
    """Rotate each cloud about the origin (the nose tip) by a random (yaw, pitch, roll) up to `max_degrees` and add
    N(0, noise) to its xyz (aligned units: 1 = the crop radius)."""
    limits = torch.as_tensor([float(d) for d in max_degrees])
    if not (limits > 0).any() and noise <= 0:
        return points
    out = points.clone()
    if (limits > 0).any():
        angles = (2.0 * torch.rand(points.shape[0], 3) - 1.0) * limits
        rotation = rotation_matrices(angles[:, 0], angles[:, 1], angles[:, 2]).to(points.dtype)
        out[..., 0:3] = points[..., 0:3] @ rotation.transpose(1, 2)
        out[..., 3:6] = points[..., 3:6] @ rotation.transpose(1, 2)
    if noise > 0:
        out[..., 0:3] += noise * torch.randn_like(out[..., 0:3])
    return out


@dataclass(kw_only=True)
class ImageAmounts:
    """The image-space amounts of `ViewAugmenter` and `ImageAugmenter` (keyword-only, so that the augmenters' own
    inputs stay positional), checked once here.

    Args:
        mirror_prob: chance that a sample is replaced by its mirror image.
        max_shift: largest translation in pixels (0: none).
        max_holes / hole_radius: up to this many background discs per view, radius range in pixels (0: none).
        depth_noise: standard deviation of the depth noise (depth units: 1 = the crop diameter; 0: none).
        max_zoom: scale/crop jitter: every face scaled about the image centre by a factor in [1 - max_zoom,
            1 + max_zoom] per sample (0: none; see `zoom_views`).
    """

    mirror_prob: float = 0.5
    max_shift: int = 2
    max_holes: int = 0
    hole_radius: tuple[float, float] = (1.0, 3.0)
    depth_noise: float = 0.0
    max_zoom: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.mirror_prob <= 1.0:
            raise ConfigError(f"augmentation mirror_prob must lie in [0, 1], got {self.mirror_prob}")
        if self.max_shift < 0 or self.max_holes < 0 or self.depth_noise < 0:
            raise ConfigError("augmentation max_shift, max_holes and depth_noise must be >= 0")
        if not 0.0 <= self.max_zoom < 1.0:
            raise ConfigError(f"augmentation max_zoom must lie in [0, 1), got {self.max_zoom}")
        self.hole_radius = tuple(float(r) for r in self.hole_radius)


@dataclass
class ViewAugmenter(ImageAmounts):
    """Random augmentation of a batch of renders (B, V, C, H, W) or sequences of renders (B, T, V, C, H, W); every
    sample draws its own, and all frames of a sequence share it (but the depth noise; see the module docstring).

    Args:
        view_angles: (yaw, pitch) of the V views (mirroring needs them symmetric in yaw).
        channels: channel groups of C, in order (`FacetVLMConfig.channels`).
        mirror_prob / max_shift / max_holes / hole_radius / depth_noise / max_zoom: see `ImageAmounts`.
    """

    view_angles: Sequence[Sequence[float]]
    channels: Sequence[str]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mirror_prob > 0:
            mirror_partners(self.view_angles)
        _offsets(self.channels)

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key not in ("view_angles", "channels")}

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() == 6:
            batch, frames, views, channels, height, width = pixel_values.shape
            stacked = pixel_values.transpose(1, 2).reshape(batch, views, frames * channels, height, width)
            out = self._augment(stacked, list(self.channels) * frames)
            return out.view(batch, views, frames, channels, height, width).transpose(1, 2).contiguous()
        if pixel_values.dim() != 5:
            raise ConfigError("augmentation takes renders (B, V, C, H, W) or sequences (B, T, V, C, H, W), got shape "
                              f"{tuple(pixel_values.shape)}")
        return self._augment(pixel_values, self.channels)

    def _augment(self, pixel_values: torch.Tensor, channels: Sequence[str]) -> torch.Tensor:
        """Augment (B, V, C, H, W) whose channels are the groups `channels` (every frame's, for a sequence)."""
        out = pixel_values
        if self.mirror_prob > 0:
            flip = torch.rand(out.shape[0]) < self.mirror_prob
            if flip.any():
                out = out.clone()
                out[flip] = mirror_views(out[flip], self.view_angles, channels)
        out = random_zoom(out, channels, self.max_zoom)
        out = shift_views(out, self.max_shift)
        out = punch_holes(out, self.max_holes, self.hole_radius)
        return jitter_depth(out, channels, self.depth_noise)

    def augment_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with its ``pixel_values`` augmented; a neutral reference (``neutral_pixel_values``, same shape)
        gets the same mirror, zoom, shift and holes, so that their difference shows the motion, not the
        augmentation."""
        pixel_values = batch["pixel_values"]
        neutral = batch.get("neutral_pixel_values")
        if neutral is None:
            return {**batch, "pixel_values": self(pixel_values)}
        if pixel_values.dim() != 5 or neutral.shape != pixel_values.shape:
            raise ConfigError(f"augmentation pairs renders (B, V, C, H, W) with neutral renders of the same shape, "
                              f"got {tuple(pixel_values.shape)} and {tuple(neutral.shape)}")
        channels = pixel_values.shape[2]
        out = self._augment(torch.cat([pixel_values, neutral], dim=2), list(self.channels) * 2)
        return {**batch, "pixel_values": out[:, :, :channels].contiguous(),
                "neutral_pixel_values": out[:, :, channels:].contiguous()}

    @classmethod
    def from_processor(cls, processor, settings: dict) -> ViewAugmenter:
        """An augmenter for the renders of a processor with `view_angles` and `channels` (FACET-VLM's)."""
        if not hasattr(processor, "view_angles") or not hasattr(processor, "channels"):
            raise ConfigError(f"augmentation works on multiview renders; {type(processor).__name__} makes none")
        known = set(ImageAmounts.__dataclass_fields__)
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"unknown augmentation settings {unknown}; known: {sorted(known)}")
        return cls(view_angles=processor.view_angles, channels=processor.channels, **settings)


def augmenter_for(processor, settings: dict) -> ViewAugmenter | ImageAugmenter:
    """The augmenter of a processor's inputs: a `ViewAugmenter` for multiview renders (FACET-VLM's processor, with
    `view_angles` and `channels`), an `ImageAugmenter` for the frontal images (and points) of AFNet-M and CoupleFER."""
    name = type(processor).__name__
    if name in IMAGE_AUGMENTER_INPUTS:
        return ImageAugmenter.from_settings(name, settings)
    if hasattr(processor, "view_angles") and hasattr(processor, "channels"):
        return ViewAugmenter.from_processor(processor, settings)
    raise ConfigError(f"augmentation works on rendered scans; {name} makes none")


#: The inputs of the single-view processors and their channel groups ("mask": region masks, moved with the image).
#: A neutral reference (the ``neutral_*`` images of AFNet-M and CoupleFER) gets the same mirror, zoom, shift and
#: holes as the expressive scan, so that their difference shows the motion, not the augmentation.
IMAGE_AUGMENTER_INPUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "AFNetMProcessor": {"pixel_values": ("texture",), "geometry_values": ("depth", "normal"),
                        "region_masks": ("mask",), "neutral_pixel_values": ("texture",),
                        "neutral_geometry_values": ("depth", "normal")},
    "CoupleFERProcessor": {"pixel_values": ("texture",), "neutral_pixel_values": ("texture",)},
}


@dataclass
class ImageAugmenter(ImageAmounts):
    """Random augmentation of the frontal images of AFNet-M and CoupleFER and of CoupleFER's points.

    Every image input of a sample (texture, depth + normals, region masks) gets the same mirror, zoom, shift and
    holes, so they stay registered; a mirrored sample's point cloud is mirrored too.

    Args:
        inputs: image input name -> its channel groups (texture, depth, normal; "mask" for region masks).
        mirror_prob / max_shift / max_holes / hole_radius / depth_noise / max_zoom: see `ImageAmounts`.
        point_rotation_deg: largest random (yaw, pitch, roll) of the point cloud about the nose tip (0: none).
        point_noise: standard deviation of xyz noise of the points (aligned units: 1 = the crop radius; 0: none).
    """

    inputs: dict[str, Sequence[str]]
    point_rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    point_noise: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.point_rotation_deg = tuple(float(d) for d in self.point_rotation_deg)
        if len(self.point_rotation_deg) != 3 or min(self.point_rotation_deg) < 0 or self.point_noise < 0:
            raise ConfigError("augmentation point_rotation_deg must be 3 angles >= 0 and point_noise >= 0")

    @classmethod
    def from_settings(cls, processor_name: str, settings: dict) -> ImageAugmenter:
        known = {item for item in cls.__dataclass_fields__ if item != "inputs"}
        unknown = sorted(set(settings) - known)
        if processor_name != "CoupleFERProcessor":
            unknown += sorted({"point_rotation_deg", "point_noise"} & set(settings))
        if unknown:
            raise ConfigError(f"unknown augmentation settings {unknown} for {processor_name}; known: {sorted(known)}")
        return cls(inputs=IMAGE_AUGMENTER_INPUTS[processor_name], **settings)

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "inputs"}

    def augment_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with its image inputs (and points) augmented; other entries unchanged."""
        names = [name for name in self.inputs if name in batch]
        sizes = [batch[name].shape[1] for name in names]
        channels = [channel for name in names for channel in self.inputs[name]]
        masks = {channel: size for name, size in zip(names, sizes) for channel in self.inputs[name]
                 if channel == "mask"}  # the region masks: one group of all their channels
        out = torch.cat([batch[name] for name in names], dim=1)[:, None]  # (B, 1, C, H, W): one view
        offsets = _offsets(channels, masks)
        flip = torch.rand(out.shape[0]) < self.mirror_prob if self.mirror_prob > 0 else None
        if flip is not None and flip.any():
            out = out.clone()
            out[flip] = out[flip].flip(-1)
            for start in offsets.get("normal", []):
                out[flip, :, start] *= -1.0
        out = random_zoom(out, channels, self.max_zoom, masks)
        out = shift_views(out, self.max_shift)
        out = punch_holes(out, self.max_holes, self.hole_radius)
        out = jitter_depth(out, channels, self.depth_noise, masks)
        result = dict(batch)
        for name, part in zip(names, torch.split(out[:, 0], sizes, dim=1)):
            result[name] = part.contiguous()
        if "points" in batch:
            points = batch["points"]
            if flip is not None and flip.any():
                points = points.clone()
                points[flip] = mirror_points(points[flip])
            result["points"] = jitter_points(points, self.point_rotation_deg, self.point_noise)
        return result


@dataclass
class RenderAugmentation:
    """Mesh-level augmentation before rendering, cached as K variants per scan (see the module docstring).

    Args:
        variants: K, the number of augmented renders per scan (0: off). Training picks the original or one variant
            per sample and epoch at random.
        pose_deg: largest |yaw|, |pitch|, |roll| in degrees of the rotation of the aligned face about its nose tip.
        decimate_prob: chance that a variant is decimated first ...
        decimate_keep: ... to a share of its vertices drawn from this range (`facet_vlm.geometry.perturb.decimate`).
        seed: seeds the draws; a variant of a scan depends only on (seed, variant, the scan's path).
    """

    variants: int = 0
    pose_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    decimate_prob: float = 0.0
    decimate_keep: tuple[float, float] = (0.5, 1.0)
    seed: int = 0

    def __post_init__(self) -> None:
        self.pose_deg = tuple(float(d) for d in self.pose_deg)
        self.decimate_keep = tuple(float(k) for k in self.decimate_keep)
        if self.variants < 0 or len(self.pose_deg) != 3 or min(self.pose_deg) < 0:
            raise ConfigError(f"render augmentation: variants must be >= 0 and pose_deg 3 angles >= 0, got "
                              f"{self.variants}, {self.pose_deg}")
        if not 0 <= self.decimate_prob <= 1 or not 0 < self.decimate_keep[0] <= self.decimate_keep[1] <= 1:
            raise ConfigError(f"render augmentation: decimate_prob must lie in [0, 1] and decimate_keep inside "
                              f"(0, 1], got {self.decimate_prob}, {self.decimate_keep}")

    @classmethod
    def from_settings(cls, settings: dict | None) -> RenderAugmentation:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(settings or {}) - known)
        if unknown:
            raise ConfigError(f"unknown render augmentation settings {unknown}; known: {sorted(known)}")
        return cls(**(settings or {}))

    def to_dict(self) -> dict:
        return asdict(self)

    def apply(self, face: Face, variant: int, key: str = "") -> Face:
        """Variant `variant` (1..K) of a scan: decimated (maybe), aligned, then turned by the pose jitter. `key`
        (the scan's path) seeds it with the variant; the result is aligned (renderers do not align it again)."""
        from .align import align, is_aligned
        from .perturb import decimate

        digest = int(hashlib.sha256(str(key).encode()).hexdigest()[:8], 16)
        rng = np.random.default_rng([self.seed, variant, digest])
        if self.decimate_prob > 0 and rng.random() < self.decimate_prob and not is_aligned(face):
            face = decimate(face, float(rng.uniform(*self.decimate_keep)), seed=int(rng.integers(2 ** 31)),
                            max_edge_factor=1.5)
        aligned = face if is_aligned(face) else align(face)
        yaw, pitch, roll = rng.uniform(-1.0, 1.0, 3) * np.asarray(self.pose_deg)
        return pose_face(aligned, yaw, pitch, roll)


def pose_face(face: Face, yaw: float, pitch: float, roll: float) -> Face:
    """An aligned face turned about its nose tip (the origin) by ``Rz(roll) @ view_rotation(yaw, pitch)``: its
    frontal render is the render of view (yaw, pitch) when roll is 0."""
    rotation = _pose_rotation(yaw, pitch, roll)

    def turn(points: np.ndarray) -> np.ndarray:
        return (points.astype(np.float64) @ rotation.T).astype(np.float32)

    return face.copy(vertices=turn(face.vertices),
                     landmarks=None if face.landmarks is None else turn(face.landmarks))


@dataclass
class AugmentedFeatures:
    """Feature function of the render cache: variant `variant` of `augmentation` of each scan, then `feature_fn`.

    Its ``spec`` adds the augmentation and the variant index to the wrapped function's, so every variant has its own
    cache folder.
    """

    feature_fn: Any
    augmentation: RenderAugmentation
    variant: int = 1
    spec_base: dict = field(default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        return {**self.spec_base, "render_augmentation": self.augmentation.to_dict(), "variant": self.variant}

    def __call__(self, face: Face) -> dict[str, np.ndarray]:
        return self.feature_fn(self.augmentation.apply(face, self.variant, face.meta.get("path", "")))
