"""FACET-VLM processor: the glue from raw scans and prompts to model inputs.

`processor(faces=[...])` reads scans (`facet_vlm.io.read_face`), aligns and renders them into the configured views
and channels (`facet_vlm.geometry.render_views`) and stacks `pixel_values` in the renderer's native ranges (the
model applies CLIP's normalisation itself). `processor(text=[...])` runs the offline CLIP tokenizer. Settings save
and load like every processor of the library (`facet_vlm.processing_utils.SettingsProcessor`), also through
`AutoProcessor.from_pretrained(model_folder)`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature

from facet_vlm.errors import ConfigError
from facet_vlm.face import Face
from facet_vlm.processing_utils import FaceProcessor, SettingsProcessor, paired_neutral_faces

from .configuration_facet_vlm import DEFAULT_VIEW_ANGLES, FacetVLMConfig
from .tokenization_facet_vlm import CONTEXT_LENGTH, clip_tokenize, offline_clip_tokenizer

FaceLike = Face | str | os.PathLike


class FacetVLMProcessor(SettingsProcessor):
    """Render faces into multiview `pixel_values` and tokenize text for FACET-VLM.

    Args:
        image_size: render size in pixels (the vision tower's image size).
        view_angles: (yaw, pitch) degrees of every view; default frontal, yaw +-30, pitch +-20.
        channels: renderer channel groups in order (texture, depth, normal, shaded).
        context_length: longest token sequence of the text tower.

    Attributes:
        tokenizer: transformers' `CLIPTokenizer` with CLIP's vocabulary (built offline from the vocabulary that ships
            with open_clip, `tokenization_facet_vlm.offline_clip_tokenizer`): what `tokenize` and
            ``model.set_labels(labels, tokenizer=processor.tokenizer)`` use. Created on first use.

    Example:

    ```python
    >>> import trimesh
    >>> from facet_vlm import Face, FacetVLMProcessor
    >>> sphere = trimesh.creation.icosphere(subdivisions=3, radius=75.0)
    >>> processor = FacetVLMProcessor(image_size=32)
    >>> processor(faces=[Face(sphere.vertices, sphere.faces)])["pixel_values"].shape
    torch.Size([1, 5, 7, 32, 32])
    ```
    """

    fields = ("image_size", "view_angles", "channels", "context_length")

    def __init__(
        self,
        image_size: int = 224,
        view_angles: Sequence[Sequence[float]] | None = None,
        channels: Sequence[str] = ("texture", "depth", "normal"),
        context_length: int = CONTEXT_LENGTH,
    ):
        if image_size < 1:
            raise ConfigError(f"image_size={image_size}: must be a positive number of pixels")
        self.image_size = int(image_size)
        self.view_angles = [[float(yaw), float(pitch)] for yaw, pitch in (view_angles or DEFAULT_VIEW_ANGLES)]
        self.channels = list(channels)
        self.context_length = int(context_length)

    @classmethod
    def from_config(cls, config: FacetVLMConfig, **overrides: Any) -> FacetVLMProcessor:
        """The processor that matches a model configuration (views, channels, image size); `overrides` win."""
        settings = {
            "image_size": config.image_size,
            "view_angles": config.view_angles,
            "channels": config.channels,
            "context_length": config.text_config.max_position_embeddings,
        }
        return cls(**{**settings, **overrides})

    def render(self, face: FaceLike) -> np.ndarray:
        """float32 (V, C, H, W) renders of one scan (a `Face` or a path any `facet_vlm.io` reader understands)."""
        from facet_vlm.geometry import render_views
        from facet_vlm.io import read_face

        if not isinstance(face, Face):
            face = read_face(face)
        images, _ = render_views(face, views=self.view_angles, size=self.image_size, channels=self.channels)
        return images

    @property
    def tokenizer(self) -> Any:
        """The CLIP tokenizer (see the class doc)."""
        return offline_clip_tokenizer()

    def tokenize(self, text: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """`input_ids` and `attention_mask` (N, L) of CLIP BPE tokens, padded with 0 to the longest text."""
        return clip_tokenize([text] if isinstance(text, str) else list(text), self.context_length)

    @staticmethod
    def class_prompts(labels: Sequence[str]) -> dict[str, list[str]]:
        """The prompt ensemble of every class from `facet_vlm.labels` (for `model.set_labels(labels, prompts=...)`)."""
        from facet_vlm.labels import class_prompts

        return {label: class_prompts(label) for label in labels}

    def render_pair(self, face: FaceLike, neutral: FaceLike) -> tuple[np.ndarray, np.ndarray]:
        """(V, C, H, W) renders of a scan and of the same person's neutral scan, both in the neutral scan's frame
        (the scan registered to it on the stable landmarks: `FaceProcessor.load_pair`), so that they differ only
        where the face moved: the ``pixel_values`` and ``neutral_pixel_values`` of a model with a neutral
        reference."""
        face, neutral = FaceProcessor.load_pair(face, neutral)
        return self.render(face), self.render(neutral)

    def __call__(
        self,
        faces: Sequence[FaceLike | Sequence[FaceLike]] | None = None,
        text: str | Sequence[str] | None = None,
        return_tensors: str = "pt",
        neutral_faces: FaceLike | Sequence[FaceLike] | None = None,
    ) -> BatchFeature:
        """Model inputs.

        Args:
            faces: scans (`Face` objects or paths) -> `pixel_values` (B, V, C, H, W); an item that is itself a list
                of scans is a 4D sequence, and then every item must be one of equal length -> (B, T, V, C, H, W).
            text: strings -> `input_ids` and `attention_mask`.
            return_tensors: only "pt" (torch tensors).
            neutral_faces: one neutral scan of the same person per (single-scan) face -> also
                `neutral_pixel_values` (B, V, C, H, W), the inputs of a model with ``neutral_reference``; each face
                is then rendered in its neutral scan's frame (`render_pair`).

        Returns:
            a `transformers.BatchFeature` (``.to(device)`` moves every tensor).
        """
        if return_tensors != "pt":
            raise ConfigError(f"return_tensors={return_tensors!r}: only 'pt' is supported")
        if faces is None and text is None:
            raise ConfigError("give faces=..., text=... or both")
        result: dict[str, torch.Tensor] = {}
        if neutral_faces is not None:
            return self._pairs(faces, neutral_faces, text)
        if faces is not None:
            if isinstance(faces, (Face, str, os.PathLike)):
                faces = [faces]
            sequences = [isinstance(item, (list, tuple)) for item in faces]
            if any(sequences) and not all(sequences):
                raise ConfigError("faces mixes single scans and sequences; give one kind per call")
            if all(sequences) and faces:
                lengths = {len(item) for item in faces}
                if len(lengths) != 1:
                    raise ConfigError(f"sequences have different lengths {sorted(lengths)}; sample equal frame counts")
                stacked = np.stack([np.stack([self.render(frame) for frame in item]) for item in faces])
            else:
                stacked = np.stack([self.render(face) for face in faces])
            result["pixel_values"] = torch.from_numpy(np.ascontiguousarray(stacked, dtype=np.float32))
        if text is not None:
            result.update(self.tokenize(text))
        return BatchFeature(data=result)

    def _pairs(self, faces: Any, neutral_faces: Any, text: Any) -> BatchFeature:
        """`__call__` with ``neutral_faces``: one neutral scan per single scan."""
        faces = [faces] if isinstance(faces, (Face, str, os.PathLike)) else list(faces or [])
        if any(isinstance(item, (list, tuple)) for item in faces):
            raise ConfigError("neutral_faces pairs single scans; a 4D sequence carries its own neutral frame "
                              "(frame_reference)")
        neutral = paired_neutral_faces(faces, neutral_faces)
        if not faces:
            raise ConfigError(f"{type(self).__name__}: no faces given")
        pairs = [self.render_pair(face, reference) for face, reference in zip(faces, neutral)]
        result = {name: torch.from_numpy(np.ascontiguousarray(np.stack(stack), dtype=np.float32))
                  for name, stack in (("pixel_values", [p[0] for p in pairs]),
                                      ("neutral_pixel_values", [p[1] for p in pairs]))}
        if text is not None:
            result.update(self.tokenize(text))
        return BatchFeature(data=result)


__all__ = ["FacetVLMProcessor"]
