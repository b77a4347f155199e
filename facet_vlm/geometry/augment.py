"""Training-time augmentation of rendered views, applied to cached renders batch by batch.

Rendering is cached (``facet_vlm.geometry.cache``), so augmentation works on the renders themselves, a batch of
``pixel_values`` (B, V, C, H, W) in the renderer's native ranges (texture and depth in [0, 1], normals in [-1, 1], 0 on
the background; see `facet_vlm.geometry.render`):

* `mirror_views`: the left-right mirror image of every face. A view (yaw, pitch) of the mirrored face is the
  horizontally flipped view (-yaw, pitch) of the original with the normals' x negated (the renderer's convention), so
  the views are flipped *and* swapped with their mirror partners; expressions keep their label.
* `shift_views`: translate each view by a few pixels (residual alignment error), background filling the gap.
* `punch_holes`: set random discs of every view to the background (scanner holes that training did not see).
* `jitter_depth`: Gaussian noise on the depth of foreground pixels (scanner noise).

`ViewAugmenter` chains them with per-sample probabilities; it draws from torch's global RNG, whose state Accelerate
saves in checkpoints. The amounts are our choice (in pixels and depth units); a config sets them.

Sequences (B, T, V, C, H, W) are augmented as one sample each: the frames of a view are stacked along the channels,
so that the mirroring, the shift and the holes of a view are the same in every frame of the sequence (our choice: the
augmentation transforms the clip as a whole, and a temporal model comparing frames sees no change that the
augmentation made). Only the depth noise is drawn per frame, as a scanner's noise is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ..errors import ConfigError
from .render import CHANNEL_SIZES


def _offsets(channels: Sequence[str]) -> dict[str, list[int]]:
    """The first channel index of every group, per group name (a name repeats when frames are stacked)."""
    offsets, start = {}, 0
    for name in channels:
        if name not in CHANNEL_SIZES:
            raise ConfigError(f"unknown channel {name!r}; known: {', '.join(CHANNEL_SIZES)}")
        offsets.setdefault(name, []).append(start)
        start += CHANNEL_SIZES[name]
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


def jitter_depth(pixel_values: torch.Tensor, channels: Sequence[str], std: float) -> torch.Tensor:
    """Add N(0, std) to the depth channel where it is foreground (depth > 0), clipped to [0, 1]."""
    starts = _offsets(channels).get("depth", [])
    if std <= 0 or not starts:
        return pixel_values
    out = pixel_values.clone()
    for start in starts:
        depth = out[:, :, start]
        noisy = (depth + std * torch.randn_like(depth)).clamp(0.0, 1.0)
        out[:, :, start] = torch.where(depth > 0, noisy, depth)
    return out


@dataclass
class ViewAugmenter:
    """Random augmentation of a batch of renders (B, V, C, H, W) or sequences of renders (B, T, V, C, H, W); every
    sample draws its own, and all frames of a sequence share it (but the depth noise; see the module docstring).

    Args:
        view_angles: (yaw, pitch) of the V views (mirroring needs them symmetric in yaw).
        channels: channel groups of C, in order (`FacetVLMConfig.channels`).
        mirror_prob: chance that a sample is replaced by its mirror image.
        max_shift: largest translation in pixels (0: none).
        max_holes / hole_radius: up to this many background discs per view, radius range in pixels (0: none).
        depth_noise: standard deviation of the depth noise (depth units: 1 = the crop diameter; 0: none).
    """

    view_angles: Sequence[Sequence[float]]
    channels: Sequence[str]
    mirror_prob: float = 0.5
    max_shift: int = 2
    max_holes: int = 0
    hole_radius: tuple[float, float] = (1.0, 3.0)
    depth_noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.mirror_prob <= 1.0:
            raise ConfigError(f"augmentation mirror_prob must lie in [0, 1], got {self.mirror_prob}")
        if self.max_shift < 0 or self.max_holes < 0 or self.depth_noise < 0:
            raise ConfigError("augmentation max_shift, max_holes and depth_noise must be >= 0")
        if self.mirror_prob > 0:
            mirror_partners(self.view_angles)
        _offsets(self.channels)
        self.hole_radius = tuple(float(r) for r in self.hole_radius)

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
        out = shift_views(out, self.max_shift)
        out = punch_holes(out, self.max_holes, self.hole_radius)
        return jitter_depth(out, channels, self.depth_noise)

    @classmethod
    def from_processor(cls, processor, settings: dict) -> ViewAugmenter:
        """An augmenter for the renders of a processor with `view_angles` and `channels` (FACET-VLM's)."""
        if not hasattr(processor, "view_angles") or not hasattr(processor, "channels"):
            raise ConfigError(f"augmentation works on multiview renders; {type(processor).__name__} makes none")
        known = {"mirror_prob", "max_shift", "max_holes", "hole_radius", "depth_noise"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"unknown augmentation settings {unknown}; known: {sorted(known)}")
        return cls(view_angles=processor.view_angles, channels=processor.channels, **settings)
