"""Per-model input builders for training: data-set rows → cached model inputs → batches.

The model's own processor (`FacetVLMProcessor`, `CoupleFERProcessor`, `AFNetMProcessor`, ...) is the feature
function of the render cache (`facet_vlm.geometry.cache.prepare_features`), so a model sees exactly the same inputs
in training (from the cache) as at inference (`facet_vlm.pipeline(...)`, ``scripts/predict.py``), and the processor
saved next to the model rebuilds them from raw scans. `FeatureCollator` stacks cached rows into the model's keyword
arguments plus ``labels``.

`prepare_dataset` turns ``--dataset`` into rows: it generates the synthetic set once (into the cache dir), reads the
data-set index, keeps the classes of the label set (and the chosen intensities), and renders through the cache with
``--num_proc`` workers.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, DatasetLayoutError
from .face import Face


@dataclass(frozen=True)
class ModelEntry:
    """Where a model family's classes live (imported lazily, so listing the registry imports no model)."""

    name: str
    package: str
    config_name: str
    model_name: str
    processor_name: str

    def _load(self, name: str, module: str) -> Any:
        """`name` from the package, or from its own file when the package does not re-export it."""
        package = importlib.import_module(self.package)
        if hasattr(package, name):
            return getattr(package, name)
        return getattr(importlib.import_module(f"{self.package}.{module}_{self.name}"), name)

    @property
    def config_class(self) -> Any:
        return self._load(self.config_name, "configuration")

    @property
    def model_class(self) -> Any:
        return self._load(self.model_name, "modeling")

    @property
    def processor_class(self) -> Any:
        if not self.processor_name:
            return VideoFeatures
        return getattr(importlib.import_module(self.package), self.processor_name)

    @property
    def is_video(self) -> bool:
        """Video models (face frames + pulse) read clips, not 3D scans."""
        return not self.processor_name

    def from_pretrained_backbone(self, name_or_path: str, labels: Sequence[str], overrides: dict[str, Any]) -> Any:
        """A model whose CLIP towers come from `name_or_path` (the model class's ``from_clip``), new heads."""
        label_kwargs = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)},
                        "num_labels": len(labels)}
        from_clip = getattr(self.model_class, "from_clip", None)
        if from_clip is None:
            raise ConfigError(f"{self.model_name} has no pretrained backbone to load; --init_from takes a directory "
                              f"saved by {self.model_name}.save_pretrained", name_or_path)
        return from_clip(name_or_path, **{**overrides, **label_kwargs})


MODEL_REGISTRY: dict[str, ModelEntry] = {
    "facet_vlm": ModelEntry("facet_vlm", "facet_vlm", "FacetVLMConfig", "FacetVLMForExpressionRecognition",
                            "FacetVLMProcessor"),
    "couplefer": ModelEntry("couplefer", "couple", "CoupleFERConfig", "CoupleFERForExpressionRecognition",
                            "CoupleFERProcessor"),
    "afnet_m": ModelEntry("afnet_m", "couple", "AFNetMConfig", "AFNetMForExpressionRecognition", "AFNetMProcessor"),
    "physio_prompt": ModelEntry("physio_prompt", "couple", "PhysioPromptConfig", "PhysioPromptForEmotionRecognition",
                                ""),
}


def model_registry(name: str) -> ModelEntry:
    """The registry entry of a model family (``facet_vlm``, ``couplefer``, ``afnet_m``, ``physio_prompt``)."""
    if name not in MODEL_REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name]


def make_processor(model_type: str, config: Any, overrides: dict[str, Any] | None = None) -> Any:
    """The processor matching a model config (``from_model_config``/``from_config``), with `overrides` applied."""
    cls = model_registry(model_type).processor_class
    for factory in ("from_model_config", "from_config"):
        if hasattr(cls, factory):
            processor = getattr(cls, factory)(config)
            break
    else:
        processor = cls()
    if overrides:
        settings = processor.to_dict() if hasattr(processor, "to_dict") else {}
        settings.pop("processor_class", None)
        unknown = sorted(set(overrides) - set(settings))
        if unknown:
            raise ConfigError(f"--feature_overrides {unknown} are not settings of {cls.__name__} "
                              f"(settings: {sorted(settings)})")
        processor = cls(**{**settings, **overrides})
    return processor


class ProcessorFeatures:
    """Feature function of the render cache: one `Face` → the processor's arrays for that face (no batch axis).

    Picklable (the processor holds plain settings), so ``prepare_features(..., num_proc=N)`` can fan it out.
    """

    def __init__(self, processor: Any):
        self.processor = processor

    @property
    def spec(self) -> dict[str, Any]:
        settings = self.processor.to_dict() if hasattr(self.processor, "to_dict") else vars(self.processor)
        return {"name": "processor", "settings": json.loads(json.dumps(settings, default=str))}

    def __call__(self, face: Face) -> dict[str, np.ndarray]:
        batch = self.processor([face])
        return {name: _to_numpy(value)[0] for name, value in batch.items() if name != "labels"}


def _to_numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


class FeatureCollator:
    """Stack cached rows into a batch: the model's input columns as float tensors (bool kept) and ``labels``.

    ``labels`` is (B,) for one target or (B, K) when rows hold a list (the physio model's valence and arousal).
    ``subject_ids`` (training rows of subject-aware models only) are passed on as integers.
    """

    def __init__(self, input_names: Sequence[str], augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.input_names = tuple(input_names)
        self.augment = augment  # training only: renders (B, V, C, H, W) -> augmented (facet_vlm.geometry.augment)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {}
        for name in self.input_names:
            array = np.stack([np.asarray(row[name]) for row in rows])
            tensor = torch.from_numpy(array)
            batch[name] = tensor if tensor.dtype == torch.bool else tensor.float()
        if "subject_ids" in rows[0]:
            batch["subject_ids"] = torch.tensor([int(row["subject_ids"]) for row in rows], dtype=torch.long)
        batch["labels"] = torch.as_tensor(np.asarray([row["labels"] for row in rows]), dtype=torch.long)
        if self.augment is not None:
            batch["pixel_values"] = self.augment(batch["pixel_values"])
        return batch


class VideoFeatures:
    """Inputs of the physio-prompt model from one face video: sampled face crops and the rPPG time-frequency map.

    The settings play the role of a processor (saved as ``processor_config.json`` next to the model).

    Args:
        image_size: side of the face crops (the ViT's image size).
        num_frames: crops sampled uniformly over the clip.
        tfr_size: (frequency bins, time columns) of the pulse map.
        tfr_method: "stft" or "morlet"; rppg_method: "pos" or "chrom" (see `facet_vlm.physio`).
    """

    def __init__(self, image_size: int = 224, num_frames: int = 8, tfr_size: Sequence[int] = (64, 64),
                 tfr_method: str = "stft", rppg_method: str = "pos"):
        self.image_size, self.num_frames = int(image_size), int(num_frames)
        self.tfr_size = [int(v) for v in tfr_size]
        self.tfr_method, self.rppg_method = tfr_method, rppg_method

    @classmethod
    def from_config(cls, config: Any) -> VideoFeatures:
        return cls(image_size=config.vision_config.image_size)

    def to_dict(self) -> dict[str, Any]:
        return {"processor_class": type(self).__name__, "image_size": self.image_size, "num_frames": self.num_frames,
                "tfr_size": self.tfr_size, "tfr_method": self.tfr_method, "rppg_method": self.rppg_method}

    def save_pretrained(self, directory: str | Path) -> Path:
        path = Path(directory) / "processor_config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def __call__(self, row: dict[str, Any]) -> dict[str, np.ndarray]:
        from .physio import physio_inputs, read_video

        frames, fps = read_video(row["video_path"])
        return physio_inputs(frames, fps, num_frames=self.num_frames, image_size=self.image_size,
                             tfr_size=tuple(self.tfr_size), tfr_method=self.tfr_method, rppg_method=self.rppg_method)


def column(dataset: Any, name: str) -> list[Any]:
    """One column of a `datasets.Dataset` as a plain list (datasets 5 returns a lazy `Column` object)."""
    return list(dataset.with_format(None)[name])


@dataclass
class PreparedData:
    """What `prepare_dataset` returns: rows with model inputs, the class names, the input spec and the collator.

    ``logits_key`` names the output field scored against ``labels[:, target_index]`` (``target_index`` None: the
    labels are one column); ``subject_adapters`` says the model gets per-fold training-subject ids.
    """

    dataset: Any
    labels: tuple[str, ...]
    feature_spec: dict[str, Any]
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
    label_set_name: str
    logits_key: str = "logits"
    target_index: int | None = None
    subject_adapters: bool = False
    train_collate_fn: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]] | None = None  # with augmentation


def synthetic_root(cache_dir: str | Path, subjects: int, seed: int, options: dict[str, Any] | None = None) -> Path:
    """Where ``--dataset synthetic`` keeps its generated set (one folder per subjects, seed and options)."""
    name = f"bu3dfe_s{subjects}_seed{seed}"
    if options:
        name += "_" + hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    return Path(cache_dir) / "synthetic" / name


def ensure_synthetic(root: Path, subjects: int, seed: int, num_proc: int = 1,
                     options: dict[str, Any] | None = None) -> Path:
    """Generate the synthetic BU-3DFE-layout set into `root` unless a finished one is already there.

    The generator itself resumes an interrupted set subject by subject; ``.complete`` marks a finished one.
    """
    from .data import synthetic

    done = root / ".complete"
    if done.is_file():
        return root
    summary = synthetic.generate(root, subjects=subjects, seed=seed, formats=("bu3dfe",), num_proc=num_proc,
                                 **(options or {}))
    done.write_text(json.dumps({"subjects": subjects, "seed": seed, "options": options or {}}) + "\n")
    print(summary.table() if hasattr(summary, "table") else summary)
    return root


def load_index(dataset: str, cache_dir: str, subjects: int, seed: int, num_proc: int, main_process: bool,
               wait: Callable[[], None], options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The data-set index (a `datasets.Dataset` with subject, expression, path, ...) and its kind."""
    from . import data

    kind, _, root = dataset.partition(":")
    if kind == "synthetic":
        folder = Path(root) if root else synthetic_root(cache_dir, subjects, seed, options)
        if not root and main_process:
            ensure_synthetic(folder, subjects, seed, num_proc, options)
        wait()
        # The generator writes one sub-folder per format; a given DIR may be either the generator's root or its
        # bu3dfe sub-folder.
        layout = folder / "bu3dfe" if (folder / "bu3dfe").is_dir() else folder
        return data.load_bu3dfe(layout), "synthetic"
    loaders = {"bu3dfe": "load_bu3dfe", "bosphorus": "load_bosphorus", "bu4dfe": "load_bu4dfe",
               "mahnob": "load_mahnob", "deap": "load_deap"}
    if kind not in loaders or not root:
        raise ConfigError(f"--dataset {dataset!r}: use synthetic, synthetic:DIR or one of "
                          f"{', '.join(k + ':ROOT' for k in loaders)}")
    if not Path(root).is_dir():
        raise DatasetLayoutError("data-set root not found", root)
    return getattr(data, loaders[kind])(root), kind


def prepare_dataset(model_args: Any, data_args: Any, accelerator: Any) -> PreparedData:
    """Rows of ``--dataset`` with the model's inputs (rendered through the cache) and an integer ``labels`` column.

    The main process renders first (with ``--num_proc`` workers); the other processes then load the finished cache.
    """
    from .geometry.cache import prepare_features
    from .labels import DATASET_LABEL_SET, label_set

    if model_registry(model_args.model).is_video:
        return prepare_video_dataset(model_args, data_args, accelerator)
    index, kind = load_index(data_args.dataset, data_args.cache_dir, data_args.synthetic_subjects,
                             data_args.synthetic_seed, data_args.num_proc, accelerator.is_main_process,
                             accelerator.wait_for_everyone, data_args.synthetic_options)
    label_set_name = model_args.label_set or DATASET_LABEL_SET.get(kind, "basic6")
    labels = label_set(label_set_name)
    required = {"subject", "expression", "path"}
    if not required <= set(index.column_names):
        raise DatasetLayoutError(f"the {kind} index lacks columns {sorted(required - set(index.column_names))}",
                                 data_args.dataset)
    expressions = column(index, "expression")
    keep = np.array([expression in labels for expression in expressions])
    intensities = data_args.intensities
    if intensities is None and data_args.protocol.startswith("bu3dfe-") and "intensity" in index.column_names:
        intensities = sorted(set(column(index, "intensity")))[-2:]  # the protocols' two highest levels
    if intensities is not None and "intensity" in index.column_names:
        keep &= np.isin(np.asarray(column(index, "intensity")), intensities)
    index = index.select(np.flatnonzero(keep))
    if len(index) == 0:
        raise DatasetLayoutError(f"no sample of {kind} has a class of {list(labels)}"
                                 + (f" and intensity in {intensities}" if intensities else ""),
                                 data_args.dataset)
    index = index.add_column("labels", [labels.index(expression) for expression in column(index, "expression")])

    entry = model_registry(model_args.model)
    config = _config_for_features(entry, model_args, labels)
    processor = make_processor(model_args.model, config, data_args.feature_overrides)
    feature_fn = ProcessorFeatures(processor)
    cache_dir = Path(data_args.cache_dir) / "features"
    with accelerator.main_process_first():
        prepared = prepare_features(index, cache_dir, feature_fn, num_proc=data_args.num_proc,
                                    desc=f"render {model_args.model} inputs")
    input_names = [name for name in prepared.column_names if name not in index.column_names]
    train_collate_fn = None
    if getattr(data_args, "augment", None):
        from .geometry.augment import ViewAugmenter

        train_collate_fn = FeatureCollator(input_names, ViewAugmenter.from_processor(processor, data_args.augment))
    return PreparedData(prepared, tuple(labels), feature_fn.spec, FeatureCollator(input_names), label_set_name,
                        train_collate_fn=train_collate_fn)


def _config_for_features(entry: ModelEntry, model_args: Any, labels: Sequence[str]) -> Any:
    """The config the processor is built from: the saved model's, or the one the run will create."""
    init_from = model_args.init_from
    overrides = dict(model_args.model_config or {})
    if init_from and (Path(init_from) / "config.json").is_file():
        saved = json.loads((Path(init_from) / "config.json").read_text(encoding="utf-8"))
        if saved.get("model_type") == entry.config_class.model_type:
            return entry.config_class.from_pretrained(init_from, **overrides)
    return entry.config_class(**overrides, num_labels=len(labels))


def save_processor(model: Any, directory: Path, feature_spec: dict[str, Any]) -> None:
    """Save the processor that built the model's training inputs next to the model (``processor_config.json``)."""
    settings = dict(feature_spec.get("settings", {}))
    name = settings.pop("processor_class", None)
    entry = MODEL_REGISTRY.get(getattr(model.config, "model_type", None))
    if entry is None:
        return
    cls = entry.processor_class
    if name is not None and name != cls.__name__:
        raise ConfigError(f"the training inputs were built by {name}, not {cls.__name__}")
    cls(**settings).save_pretrained(directory)


def synthetic_video_root(cache_dir: str | Path, subjects: int, seed: int) -> Path:
    """Where ``--dataset synthetic`` keeps the generated face videos of the physio model."""
    return Path(cache_dir) / "synthetic" / f"mahnob_s{subjects}_seed{seed}"


def prepare_video_dataset(model_args: Any, data_args: Any, accelerator: Any) -> PreparedData:
    """Rows of a face-video data set (synthetic, MAHNOB-HCI, DEAP) with crops, pulse maps and (valence, arousal).

    The model is trained on both binary targets; the label set (``valence`` by default, or ``arousal``) picks the
    one that is scored. Inputs are computed once with ``datasets.map`` (``--num_proc`` workers) into an Arrow file
    of the cache dir, named by the settings and the rows, and reused by later runs.
    """
    from .data.synthetic_video import generate_videos
    from .labels import label_set

    kind, _, root = data_args.dataset.partition(":")
    if kind == "synthetic":
        folder = Path(root) if root else synthetic_video_root(data_args.cache_dir, data_args.synthetic_subjects,
                                                              data_args.synthetic_seed)
        if not root and accelerator.is_main_process and not (folder / ".complete").is_file():
            generate_videos(folder, subjects=data_args.synthetic_subjects, seed=data_args.synthetic_seed)
            (folder / ".complete").write_text("done\n")
        accelerator.wait_for_everyone()
        from .data.mahnob import load_mahnob

        index = load_mahnob(folder)
    elif kind in ("mahnob", "deap") and root:
        if not Path(root).is_dir():
            raise DatasetLayoutError("data-set root not found", root)
        if kind == "mahnob":
            from .data.mahnob import load_mahnob as loader
        else:
            from .data.deap import load_deap as loader
        index = loader(root)
    else:
        raise ConfigError(f"--dataset {data_args.dataset!r}: the physio_prompt model reads face videos; use "
                          "synthetic, synthetic:DIR (MAHNOB layout), mahnob:ROOT or deap:ROOT")
    label_set_name = model_args.label_set or "valence"
    if label_set_name not in ("valence", "arousal"):
        raise ConfigError(f"--label_set {label_set_name!r}: the physio_prompt model predicts valence or arousal")
    index = index.filter(lambda row: row["video_path"] is not None)
    index = index.add_column("labels", [[int(v), int(a)] for v, a in zip(column(index, "valence_high"),
                                                                        column(index, "arousal_high"))])
    entry = model_registry(model_args.model)
    config = _config_for_features(entry, model_args, label_set(label_set_name))
    features = make_processor(model_args.model, config, data_args.feature_overrides)
    spec = {"name": "video", "settings": features.to_dict(), "videos": column(index, "video_path")}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    cache_file = Path(data_args.cache_dir) / "features" / f"video_{digest}.arrow"
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with accelerator.main_process_first():
        prepared = index.map(features, num_proc=data_args.num_proc if data_args.num_proc > 1 else None,
                             cache_file_name=str(cache_file), load_from_cache_file=True,
                             desc="face crops and pulse maps")
    prepared = prepared.with_format("numpy", columns=["pixel_values", "tfr_values"], output_all_columns=True)
    return PreparedData(prepared, label_set(label_set_name), {"settings": features.to_dict()},
                        FeatureCollator(["pixel_values", "tfr_values"]), label_set_name,
                        logits_key=f"{label_set_name}_logits", target_index=0 if label_set_name == "valence" else 1,
                        subject_adapters=True)
