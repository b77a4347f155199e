"""A contact sheet of the rendered views, so a person can check alignment and rendering at a glance."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..face import Face
from .align import align
from .masks import REGION_NAMES, region_masks
from .render import DEFAULT_VIEWS, render_views

REGION_COLOURS = np.array([[1.0, 0.2, 0.2], [1.0, 0.8, 0.1], [0.2, 0.9, 0.2], [0.2, 0.5, 1.0]])


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) from a (C, H, W) float image in [0, 1] (C = 1 or 3)."""
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
    return (np.clip(rgb.transpose(1, 2, 0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def contact_sheet(
    face: Face | str | os.PathLike,
    out_path: str | os.PathLike,
    views: Sequence[tuple[float, float]] | None = None,
    size: int = 224,
    channels: Sequence[str] = ("texture", "depth", "normal", "mask"),
) -> Path:
    """Write a PNG grid: one row per view, one column per channel, with labels.

    Args:
        face: a Face or a path that :func:`facet_vlm.io.read_face` reads.
        out_path: the PNG to write (parent folders are created).
        views: (yaw, pitch) pairs in degrees; default the five standard views.
        size: pixel size of each tile.
        channels: columns among "texture", "depth", "normal" (shown as RGB = (n + 1) / 2), "shaded", "mask" (the
            foreground) and "regions" (the region masks as colours over the frontal texture; empty tile for other
            views, since the masks are defined for the frontal view only).

    Returns:
        The path written.
    """
    if not isinstance(face, Face):
        from ..io import read_face

        face = read_face(face)
    aligned = align(face)
    views = DEFAULT_VIEWS if views is None else tuple(views)
    rendered = [c for c in channels if c not in ("mask", "regions")]
    if "regions" in channels and "texture" not in rendered:
        rendered.append("texture")
    images, masks = render_views(aligned, views, size, rendered or ("depth",))
    offsets, start = {}, 0
    for name in rendered:
        offsets[name] = start
        start += {"texture": 3, "normal": 3}.get(name, 1)
    regions = region_masks(aligned, size) if "regions" in channels else None

    label_height, label_width = 18, 110
    sheet = Image.new("RGB", (label_width + size * len(channels), label_height + size * len(views)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for c, name in enumerate(channels):
        draw.text((label_width + c * size + 4, 3), name, fill="black", font=font)
    for v, (yaw, pitch) in enumerate(views):
        top = label_height + v * size
        draw.text((4, top + size // 2 - 6), f"yaw {yaw:+g} pitch {pitch:+g}", fill="black", font=font)
        for c, name in enumerate(channels):
            if name == "mask":
                tile = _to_rgb(masks[v][None].astype(np.float32))
            elif name == "regions":
                tile = np.zeros((size, size, 3), np.uint8)
                if (yaw, pitch) == (0.0, 0.0):
                    texture = images[v, offsets["texture"]:offsets["texture"] + 3]
                    colour = np.einsum("rhw,rc->chw", regions, REGION_COLOURS[: len(REGION_NAMES)])
                    weight = np.clip(regions.max(axis=0), 0.0, 1.0)[None] * 0.6
                    tile = _to_rgb(texture * (1.0 - weight) + np.clip(colour, 0.0, 1.0) * weight)
            else:
                width = 3 if name in ("texture", "normal") else 1
                image = images[v, offsets[name]:offsets[name] + width]
                if name == "normal":
                    image = np.where(masks[v][None], (image + 1.0) * 0.5, 0.0)
                tile = _to_rgb(image)
            sheet.paste(Image.fromarray(tile), (label_width + c * size, top))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path)
    return out_path
