"""The common base of the library's processors: settings saved as ``processor_config.json``, loaded back with
``from_pretrained`` (directly or through `transformers.AutoProcessor`), and outputs as `transformers.BatchFeature`.

The processors are `transformers.ProcessorMixin` subclasses, so ``transformers.pipeline`` and `AutoProcessor`
accept them. They hold plain settings (image size, views, point count, ...) and no sub-processor (no image processor
or tokenizer object to save: rendering a 3D scan or cropping a face video is their own code), so this base replaces
the sub-processor parts of the mixin: ``save_pretrained`` writes the settings and the class name (under
``processor_class``) to ``processor_config.json`` (transformers' `PROCESSOR_NAME`), ``from_pretrained`` takes a
folder or a Hub id with the usual Hub keyword arguments, ``__call__`` returns a `BatchFeature`.
`facet_vlm.registry.register_processors` registers each processor with `AutoProcessor`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from transformers import BatchFeature, ProcessorMixin

from .errors import ConfigError
from .face import Face

PROCESSOR_CONFIG_NAME = "processor_config.json"
#: Keyword arguments of `from_pretrained` that locate a file on the Hub (the rest are settings overrides).
HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


class SettingsProcessor(ProcessorMixin):
    """Base of the processors: subclasses list their settings in ``fields`` and build them in ``__init__`` (which
    takes no sub-processor, so the mixin's ``__init__`` has nothing to set up)."""

    fields: ClassVar[tuple[str, ...]] = ()
    chat_template = None

    def to_dict(self) -> dict[str, Any]:
        """The settings (what ``__init__`` takes) plus ``processor_class``; JSON-serialisable."""
        return {"processor_class": type(self).__name__, **{name: getattr(self, name) for name in self.fields}}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    __hash__ = None  # mutable settings

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False,
                        **kwargs: Any) -> list[str]:
        """Write ``processor_config.json`` into `save_directory` (created if needed); returns the written files."""
        path = Path(save_directory) / PROCESSOR_CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json_string(), encoding="utf-8")
        if push_to_hub:
            raise ConfigError("push a model folder with scripts/publish.py (it validates the card and the files)")
        return [str(path)]

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> SettingsProcessor:
        """Settings matching a model config; `overrides` win. Subclasses map config fields to settings."""
        return cls(**overrides)

    @classmethod
    def settings_file(cls, pretrained: str | os.PathLike, **kwargs: Any) -> Path | None:
        """``processor_config.json`` of a local folder or a Hub repository (None when there is none)."""
        folder = Path(pretrained)
        if folder.is_dir():
            path = folder / kwargs.get("subfolder", "") / PROCESSOR_CONFIG_NAME
            return path if path.is_file() else None
        from transformers.utils import cached_file

        hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
        found = cached_file(str(pretrained), PROCESSOR_CONFIG_NAME, _raise_exceptions_for_missing_entries=False,
                            **hub_kwargs)
        return Path(found) if found else None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> SettingsProcessor:
        """Load the settings saved by `save_pretrained` (a folder or a Hub id); a model folder without processor
        settings gives the processor matching its ``config.json``. Keyword arguments that name settings override
        them; Hub arguments (``revision``, ``token``, ...) and those `AutoProcessor` adds are accepted."""
        overrides = {key: value for key, value in kwargs.items() if key in cls.fields}
        path = cls.settings_file(pretrained_model_name_or_path, **kwargs)
        if path is None:
            return cls._from_model_config(pretrained_model_name_or_path, overrides, kwargs)
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ConfigError(f"not valid JSON ({error})", path) from error
        if not isinstance(settings, dict):
            raise ConfigError("must hold a JSON object of processor settings", path)
        name = settings.pop("processor_class", cls.__name__)
        if name != cls.__name__:
            raise ConfigError(f"{PROCESSOR_CONFIG_NAME} was written by {name}, not {cls.__name__}", path)
        unknown = sorted(set(settings) - set(cls.fields))
        if unknown:
            raise ConfigError(f"unknown settings {unknown} for {cls.__name__} (settings: {list(cls.fields)})", path)
        return cls(**{**settings, **overrides})

    @classmethod
    def _from_model_config(cls, source: str | os.PathLike, overrides: dict[str, Any],
                           kwargs: dict[str, Any]) -> SettingsProcessor:
        from transformers import AutoConfig

        hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
        try:
            config = AutoConfig.from_pretrained(str(source), **hub_kwargs)
        except (OSError, ValueError) as error:
            raise ConfigError(f"no {PROCESSOR_CONFIG_NAME} or model config.json here; save a processor or a model "
                              f"first ({error})", source) from error
        return cls.from_config(config, **overrides)


#: What a scan processor takes: a `Face`, or the path of a scan `facet_vlm.io.read_face` reads.
FaceLike = Face | str | PathLike
#: The one view of the single-view processors: frontal (yaw 0, pitch 0).
FRONTAL_VIEW = ((0.0, 0.0),)


def paired_neutral_faces(faces: Sequence[Any], neutral_faces: FaceLike | Sequence[FaceLike]) -> list[FaceLike]:
    """`neutral_faces` (one scan or a list) as a list with one neutral scan per face of `faces`; `ConfigError`
    when the counts differ."""
    neutral = [neutral_faces] if isinstance(neutral_faces, (Face, str, PathLike)) else list(neutral_faces)
    if len(neutral) != len(faces):
        raise ConfigError(f"{len(neutral)} neutral faces for {len(faces)} faces (one per face)")
    return neutral


class FaceProcessor(SettingsProcessor):
    """Base of the single-view scan processors (CoupleFER, AFNet-M): load faces, align them, stack per-face arrays
    into a `BatchFeature`; settings I/O from `SettingsProcessor`. Subclasses implement `process_face`."""

    @staticmethod
    def load_face(face: FaceLike) -> Face:
        """A `Face` as is, or read from a scan path with `facet_vlm.io.read_face`, then aligned."""
        from .geometry import align, is_aligned

        if not isinstance(face, Face):
            from .io import read_face

            face = read_face(face)
        return face if is_aligned(face) else align(face)

    #: Outputs that have a neutral counterpart (``neutral_`` + name) when `__call__` gets ``neutral_faces``.
    neutral_outputs: tuple[str, ...] = ()

    @staticmethod
    def load_pair(face: FaceLike, neutral: FaceLike) -> tuple[Face, Face]:
        """A scan and the same person's neutral scan (`Face` or path), both in the neutral scan's canonical frame:
        the neutral scan aligned by `facet_vlm.geometry.align`, the scan registered to it on the stable landmarks
        (eye corners, nose: `facet_vlm.geometry.align.align_to_reference`), so that their renders differ only
        where the face moved. Faces given already aligned are used as they are."""
        from .geometry import align, is_aligned
        from .geometry.align import align_to_reference
        from .io import read_face

        face = face if isinstance(face, Face) else read_face(face)
        neutral = neutral if isinstance(neutral, Face) else read_face(neutral)
        if is_aligned(face) or is_aligned(neutral):
            return (face if is_aligned(face) else align(face)), (neutral if is_aligned(neutral) else align(neutral))
        aligned_neutral = align(neutral)
        return align_to_reference(face, neutral, aligned_reference=aligned_neutral), aligned_neutral

    def process_face(self, face: Face) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def process_pair(self, face: Face, reference: Face) -> dict[str, np.ndarray]:
        """The inputs of a scan and its neutral scan, both already in the neutral scan's frame (`load_pair`): the
        scan's `process_face` arrays and ``neutral_<name>`` for each name of `neutral_outputs`. Processors whose
        reference inputs compare the two scans directly override this."""
        reference_arrays = self.process_face(reference)
        return {**self.process_face(face),
                **{f"neutral_{name}": reference_arrays[name] for name in self.neutral_outputs}}

    def __call__(
        self,
        faces: FaceLike | Sequence[FaceLike],
        labels: int | Sequence[int] | None = None,
        return_tensors: str | None = "pt",
        neutral_faces: FaceLike | Sequence[FaceLike] | None = None,
    ) -> BatchFeature:
        """Process one face or a list of faces (or paths) into a batch; `labels` are added as `labels` if given.

        `neutral_faces` (one per face: the same person's neutral scan) adds ``neutral_<name>`` for each name of
        `neutral_outputs`, the inputs of a model with a neutral reference (``neutral_reference`` of AFNet-M and
        CoupleFER; `process_pair`); each face is then put into its neutral scan's frame (`load_pair`).
        """
        single = isinstance(faces, (Face, str, PathLike))
        faces = [faces] if single else list(faces)
        if not faces:
            raise ConfigError(f"{type(self).__name__}: no faces given")
        if neutral_faces is None:
            arrays = [self.process_face(self.load_face(face)) for face in faces]
        else:
            if not self.neutral_outputs:
                raise ConfigError(f"{type(self).__name__} makes no neutral-reference inputs; neutral_faces is for "
                                  "processors of models with a neutral reference (AFNet-M, CoupleFER, FACET-VLM)")
            neutral = paired_neutral_faces(faces, neutral_faces)
            arrays = [self.process_pair(*self.load_pair(face, reference)) for face, reference in zip(faces, neutral)]
        data = {name: np.stack([item[name] for item in arrays]) for name in arrays[0]}
        if labels is not None:
            labels = [labels] if np.isscalar(labels) else list(labels)
            if len(labels) != len(faces):
                raise ConfigError(f"{len(labels)} labels for {len(faces)} faces")
            data["labels"] = np.asarray(labels, dtype=np.int64)
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = ["FRONTAL_VIEW", "FaceLike", "FaceProcessor", "PROCESSOR_CONFIG_NAME", "SettingsProcessor",
           "paired_neutral_faces"]
