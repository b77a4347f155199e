"""Data preparation of a training or evaluation run: ``--dataset`` → rows with the model's cached inputs → batches.

The model's own processor (`FacetVLMProcessor`, `CoupleFERProcessor`, `AFNetMProcessor`, `PhysioPromptProcessor`;
see `facet_vlm.registry`) is the feature function of the render cache (`facet_vlm.data.cache.prepare_features`),
so a model sees exactly the same inputs in training (from the cache) as at inference (the pipelines,
``scripts/predict.py``), and the processor saved next to the model rebuilds them from raw scans or videos.
`FeatureCollator` stacks cached rows into the model's keyword arguments plus ``labels``.

`generate_data` is the run's explicit first step for ``--dataset synthetic``: it generates the synthetic set once
(into the cache dir; a finished set is reused). `prepare_dataset` then turns ``--dataset`` into rows: it reads the
data-set index (a synthetic set that was never generated is an error, not generated on the side), keeps the classes
of the label set (and the chosen intensities), and renders through the cache with ``--num_proc`` workers.
Face-video models go through `prepare_video_dataset` (crops and pulse maps once, with
``datasets.map``, into an Arrow file of the cache dir).

Sequence (4D) data sets (``bu4dfe:ROOT``, ``bp4d:ROOT``, ``4dme:ROOT``, ``synthetic`` with ``--synthetic_format``
bu4dfe / bp4d / 4dme) go through `prepare_sequences`: the temporal FACET-VLM gets ``pixel_values`` (T, V, C, H, W)
per row from the per-frame render cache (frames chosen by ``--num_frames`` / ``--frame_mode`` /
``--short_policy``), the static CoupleFER and AFNet-M get each sequence's apex frame. The label set keeps the
classes it names (``--label_set basic6`` on BP4D keeps the six tasks whose emotion is a basic expression).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DatasetLayoutError, FormatError
from ..face import Face
from ..registry import MODEL_REGISTRY, check_model_files, make_processor, model_entry
from .folds import column

logger = logging.getLogger(__name__)


#: Layouts ``--dataset synthetic`` can generate (``--synthetic_format``).
SYNTHETIC_FORMATS = ("bu3dfe", "bu4dfe", "bp4d", "4dme")
#: Readers of the sequence (4D) data sets: one row per sequence with its ``frames``.
SEQUENCE_LOADERS = {"bu4dfe": "load_bu4dfe", "bp4d": "load_bp4d", "4dme": "load_4dme"}


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
        return _first_row(self.processor([face]))


class NeutralPairFeatures(ProcessorFeatures):
    """Feature function of a model with a neutral reference (``neutral_reference`` of AFNet-M, CoupleFER and
    FACET-VLM): a scan → the
    processor's arrays for it and ``neutral_<name>`` of its neutral scan, the pair processed together (the
    processor registers the expressive scan to the neutral one: `facet_vlm.geometry.align.align_to_reference`).

    Args:
        processor: the model's processor (with ``neutral_outputs``).
        neutral_of: scan path → the path of its neutral scan or frame (`subject_neutral_paths`,
            `sequence_neutral_paths`); its digest is part of the cache key.
    """

    def __init__(self, processor: Any, neutral_of: dict[str, str]):
        super().__init__(processor)
        self.neutral_of = {str(path): str(neutral) for path, neutral in neutral_of.items()}

    @classmethod
    def for_rows(cls, processor: Any, index: Any, neutral_paths: Sequence[str]) -> tuple[Any, NeutralPairFeatures]:
        """`index` with its ``neutral_path`` column added, and the feature function pairing its rows so."""
        index = index.add_column("neutral_path", list(neutral_paths))
        return index, cls(processor, dict(zip(column(index, "path"), column(index, "neutral_path"))))

    @property
    def spec(self) -> dict[str, Any]:
        pairs = json.dumps(sorted(self.neutral_of.items())).encode()
        return {**super().spec, "neutral": hashlib.sha256(pairs).hexdigest()[:16]}

    def __call__(self, face: Face) -> dict[str, np.ndarray]:
        path = str(face.meta.get("path"))
        if path not in self.neutral_of:
            raise DatasetLayoutError("no neutral scan is known for this scan", path)
        return _first_row(self.processor([face], neutral_faces=[self.neutral_of[path]]))


def _first_row(batch: Any) -> dict[str, np.ndarray]:
    """The arrays of a one-face processor batch without the batch axis (labels left out)."""
    return {name: _to_numpy(value)[0] for name, value in batch.items() if name != "labels"}


def _to_numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


class FeatureCollator:
    """Stack cached rows into a batch: the model's input columns as float tensors (bool kept) and ``labels``.

    ``labels`` is (B,) for one target or (B, K) when rows hold a list (the physio model's valence and arousal).
    ``subject_ids`` (training rows of subject-aware models only) are passed on as integers.

    Training only: `augment` is a `facet_vlm.geometry.augment` augmenter (``augment_batch(batch)``, or a function
    of the renders (B, V, C, H, W)); `variants` are K cached render variants of the rows (`RenderAugmentation`),
    datasets in the order of `variant_rows` (row path -> position): each row is replaced by a random one of its K
    variants with probability K / (K + 1).

    The random draws of a batch come from torch's RNG seeded by (`seed`, the epoch of `set_epoch`, the paths of the
    batch's rows) inside `torch.random.fork_rng`, so the global RNG (dropout) is left as it was and a batch is
    augmented the same way however it is reached. Our choice: drawing from the global RNG instead made a resumed run
    differ from the uninterrupted one, because Accelerate's loader collates the next batch before the current
    step's checkpoint is saved, so the saved RNG state was one batch ahead.
    """

    def __init__(self, input_names: Sequence[str], augment: Any = None, variants: Sequence[Any] = (),
                 variant_rows: dict[str, int] | None = None, seed: int = 0):
        self.input_names = tuple(input_names)
        self.augment = augment
        self.variants = [variant.select_columns(list(self.input_names)) for variant in variants]
        self.variant_rows = variant_rows or {}
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """The epoch (and optionally the seed) of the next batches' random draws; the training loop calls it."""
        self.epoch = int(epoch)
        if seed is not None:
            self.seed = int(seed)

    def batch_seed(self, rows: list[dict[str, Any]]) -> int:
        """The seed of a batch's draws: a hash of the seed, the epoch and the rows' paths (their labels when they
        have no path)."""
        names = "\n".join(str(row.get("path", row.get("labels"))) for row in rows)
        digest = hashlib.sha256(f"{self.seed}/{self.epoch}/{names}".encode()).hexdigest()
        return int(digest[:15], 16)

    def _with_variants(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        choice = torch.randint(0, len(self.variants) + 1, (len(rows),)).tolist()
        return [row if k == 0 else {**row, **self.variants[k - 1][self.variant_rows[str(row["path"])]]}
                for row, k in zip(rows, choice)]

    def _stack(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {}
        for name in self.input_names:
            array = np.stack([np.asarray(row[name]) for row in rows])
            tensor = torch.from_numpy(array)
            batch[name] = tensor if tensor.dtype == torch.bool else tensor.float()
        if "subject_ids" in rows[0]:
            batch["subject_ids"] = torch.tensor([int(row["subject_ids"]) for row in rows], dtype=torch.long)
        batch["labels"] = torch.as_tensor(np.asarray([row["labels"] for row in rows]), dtype=torch.long)
        return batch

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not self.variants and self.augment is None:
            return self._stack(rows)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.batch_seed(rows))
            batch = self._stack(self._with_variants(rows) if self.variants else rows)
            if self.augment is None:
                return batch
            if hasattr(self.augment, "augment_batch"):
                return self.augment.augment_batch(batch)
            batch["pixel_values"] = self.augment(batch["pixel_values"])
            return batch


class VideoRowFeatures:
    """Feature function of a face-video index row (``video_path``): the video processor's arrays of that clip (one
    torch thread in a ``--num_proc`` worker, `cache.one_torch_thread_in_worker`)."""

    def __init__(self, processor: Any):
        self.processor = processor
        self.parent_pid = os.getpid()

    def __call__(self, row: dict[str, Any]) -> dict[str, np.ndarray]:
        from .cache import one_torch_thread_in_worker

        one_torch_thread_in_worker(self.parent_pid)
        return self.processor.process_video(row["video_path"])


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


def synthetic_root(cache_dir: str | Path, subjects: int, seed: int, options: dict[str, Any] | None = None,
                   fmt: str = "bu3dfe") -> Path:
    """Where ``--dataset synthetic`` keeps its generated set (one folder per layout, subjects, seed and options).

    With calibrated motion (``options["motion"]``: "bu4dfe" or a saved calibration's path) the key also holds the
    calibration file's content, so that a refitted calibration (a new release of the shipped one, or the same path
    rewritten) generates a new set instead of reusing one moved by the old motion."""
    name = f"{fmt}_s{subjects}_seed{seed}"
    if options:
        keyed = dict(options)
        if keyed.get("motion"):
            keyed["motion_file"] = _file_digest(keyed["motion"])
        name += "_" + hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:8]
    return Path(cache_dir) / "synthetic" / name


def _file_digest(motion: str) -> str:
    """SHA-256 of the calibration file that a ``motion`` option names ("" when it names no readable file: the
    generator then reports the problem)."""
    from .calibrate import CALIBRATION_FILE

    path = CALIBRATION_FILE if str(motion) == "bu4dfe" else Path(motion)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def ensure_synthetic(root: Path, subjects: int, seed: int, num_proc: int = 1,
                     options: dict[str, Any] | None = None, fmt: str = "bu3dfe") -> Path:
    """Generate the synthetic set of layout `fmt` into `root` unless a finished one is already there.

    ``bu3dfe`` and ``bu4dfe`` come from `facet_vlm.data.synthetic.generate` (which resumes an interrupted set
    subject by subject), ``bp4d`` and ``4dme`` from `facet_vlm.data.synthetic_sequences.generate_sequences`;
    `options` are further arguments of that generator. ``.complete`` marks a finished set.
    """
    from . import synthetic
    from .synthetic_sequences import generate_sequences

    if fmt not in SYNTHETIC_FORMATS:
        raise ConfigError(f"--synthetic_format {fmt!r}: use one of {', '.join(SYNTHETIC_FORMATS)}")
    done = root / ".complete"
    if done.is_file():
        return root
    if fmt in ("bu3dfe", "bu4dfe"):
        summary = synthetic.generate(root, subjects=subjects, seed=seed, formats=(fmt,), num_proc=num_proc,
                                     **(options or {}))
    else:
        summary = generate_sequences(root, subjects=subjects, seed=seed, formats=(fmt,), **(options or {}))
        summary = f"{len(summary.sequences)} {fmt} sequences in {summary.roots[fmt]}"
    done.write_text(json.dumps({"subjects": subjects, "seed": seed, "format": fmt, "options": options or {}}) + "\n")
    logger.info("%s", summary.table() if hasattr(summary, "table") else summary)
    return root


def generate_data(model_args: Any, data_args: Any, accelerator: Any) -> Path | None:
    """The run's data-generation step: for ``--dataset synthetic`` (without a DIR) generate the set of the run's
    layout (scans, sequences or, for a face-video model, videos) into the cache dir unless a finished one is there,
    and return its folder; None for every other data set. The main process generates, the others wait."""
    kind, _, root = data_args.dataset.partition(":")
    if kind != "synthetic" or root:
        return None
    if model_entry(model_args.model).is_video:
        carrier = getattr(data_args, "synthetic_carrier", "both")
        options = synthetic_video_options(data_args.synthetic_options)
        folder = synthetic_video_root(data_args.cache_dir, data_args.synthetic_subjects, data_args.synthetic_seed,
                                      carrier, options)
        if accelerator.is_main_process and not (folder / ".complete").is_file():
            from .synthetic_video import generate_videos

            generate_videos(folder, subjects=data_args.synthetic_subjects, seed=data_args.synthetic_seed,
                            carrier=carrier, **options)
            (folder / ".complete").write_text("done\n")
    else:
        fmt = getattr(data_args, "synthetic_format", "bu3dfe")
        folder = synthetic_root(data_args.cache_dir, data_args.synthetic_subjects, data_args.synthetic_seed,
                                data_args.synthetic_options, fmt)
        if accelerator.is_main_process:
            ensure_synthetic(folder, data_args.synthetic_subjects, data_args.synthetic_seed, data_args.num_proc,
                             data_args.synthetic_options, fmt)
    accelerator.wait_for_everyone()
    return folder


def load_index(dataset: str, cache_dir: str, subjects: int, seed: int,
               options: dict[str, Any] | None = None, fmt: str = "bu3dfe") -> tuple[Any, str]:
    """The data-set index (a `datasets.Dataset` with subject, expression, path, ...) and its kind.

    Sequence data sets (BU-4DFE, BP4D-Spontaneous, 4DME, and ``synthetic`` with `fmt` bu4dfe / bp4d / 4dme) give
    one row per sequence with its ``frames``; their kind is the layout name (it picks the default label set).
    """
    from .. import data

    kind, _, root = dataset.partition(":")
    if kind == "synthetic":
        if fmt not in SYNTHETIC_FORMATS:
            raise ConfigError(f"--synthetic_format {fmt!r}: use one of {', '.join(SYNTHETIC_FORMATS)}")
        folder = Path(root) if root else synthetic_root(cache_dir, subjects, seed, options, fmt)
        if not root and not (folder / ".complete").is_file():
            raise DatasetLayoutError("the synthetic set has not been generated; run generate_data first (the first "
                                     "step of scripts/train.py) or scripts/prepare_data.py synthetic", folder)
        # The generators write one sub-folder per format; a given DIR may be either the generator's root or its
        # sub-folder of the layout.
        layout = folder / fmt if (folder / fmt).is_dir() else folder
        return getattr(data, SEQUENCE_LOADERS.get(fmt, "load_bu3dfe"))(layout), "synthetic" if fmt == "bu3dfe" else fmt
    loaders = {"bu3dfe": "load_bu3dfe", "bosphorus": "load_bosphorus", **SEQUENCE_LOADERS,
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
    from ..labels import DATASET_LABEL_SET, label_set
    from .cache import prepare_features

    if model_entry(model_args.model).is_video:
        return prepare_video_dataset(model_args, data_args, accelerator)
    index, kind = load_index(data_args.dataset, data_args.cache_dir, data_args.synthetic_subjects,
                             data_args.synthetic_seed, data_args.synthetic_options,
                             getattr(data_args, "synthetic_format", "bu3dfe"))
    label_set_name = model_args.label_set or DATASET_LABEL_SET.get(kind, "basic6")
    labels = label_set(label_set_name)
    required = {"subject", "expression", "path"}
    if not required <= set(index.column_names):
        raise DatasetLayoutError(f"the {kind} index lacks columns {sorted(required - set(index.column_names))}",
                                 data_args.dataset)
    full_index = index
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

    entry = model_entry(model_args.model)
    config = config_for_inputs(entry, model_args, labels)
    processor = make_processor(model_args.model, config, data_args.feature_overrides)
    feature_fn = ProcessorFeatures(processor)
    cache_dir = Path(data_args.cache_dir) / "features"
    if "frames" in index.column_names:
        return prepare_sequences(index, entry, config, feature_fn, cache_dir, data_args, accelerator,
                                 (tuple(labels), label_set_name))
    if getattr(config, "neutral_input_names", ()):
        index, feature_fn = NeutralPairFeatures.for_rows(processor, index,
                                                         subject_neutral_paths(full_index, index, data_args.dataset))
    with accelerator.main_process_first():
        prepared = prepare_features(index, cache_dir, feature_fn, num_proc=data_args.num_proc,
                                    desc=f"render {model_args.model} inputs")
    input_names = [name for name in prepared.column_names if name not in index.column_names]
    train_collate_fn = None
    render_augment = getattr(data_args, "render_augment", None)
    if data_args.augment or render_augment:
        from ..geometry.augment import augmenter_for

        augmenter = augmenter_for(processor, data_args.augment) if data_args.augment else None
        variants = render_variants(index, cache_dir, feature_fn, render_augment, data_args, accelerator)
        rows = {str(path): i for i, path in enumerate(column(index, "path"))}
        train_collate_fn = FeatureCollator(input_names, augmenter, variants, rows)
    return PreparedData(prepared, tuple(labels), feature_fn.spec, FeatureCollator(input_names), label_set_name,
                        train_collate_fn=train_collate_fn)


def subject_neutral_paths(full_index: Any, index: Any, dataset: str) -> list[str]:
    """The neutral scan of each row's subject (rows of `index`), from the neutral rows (expression "neutral") of
    the unfiltered `full_index`: BU-3DFE's ``NE00`` scan, Bosphorus's first neutral (by path) where a subject has
    several.

    Raises:
        DatasetLayoutError: a subject with no neutral scan (named, with their count), never a row without one.
    """
    neutral: dict[str, str] = {}
    for subject, expression, path in zip(column(full_index, "subject"), column(full_index, "expression"),
                                         column(full_index, "path")):
        if expression == "neutral" and (subject not in neutral or str(path) < neutral[subject]):
            neutral[subject] = str(path)
    subjects = [str(subject) for subject in column(index, "subject")]
    missing = sorted(set(subjects) - set(neutral))
    if missing:
        raise DatasetLayoutError(f"the model takes a neutral reference (neutral_reference), but {len(missing)} "
                                 f"subject(s) have no neutral scan: {', '.join(missing[:10])}"
                                 + (" ..." if len(missing) > 10 else "")
                                 + "; for a data set without neutral scans train with --model_config "
                                   "'{\"neutral_reference\": \"none\"}'", dataset)
    return [neutral[subject] for subject in subjects]


def sequence_neutral_paths(index: Any) -> list[str]:
    """The neutral frame of each sequence row: the ``neutral`` frame index where the reader found one from the
    landmarks (`load_bu4dfe` with its landmark release), else the first frame (a 4D sequence starts neutral)."""
    neutral = column(index, "neutral") if "neutral" in index.column_names else [None] * len(index)
    paths = []
    for frames, found in zip(column(index, "frames"), neutral):
        frames = list(frames)
        paths.append(str(frames[int(found)] if found is not None and 0 <= int(found) < len(frames) else frames[0]))
    return paths


def render_variants(index: Any, cache_dir: Path, feature_fn: ProcessorFeatures, settings: dict[str, Any] | None,
                    data_args: Any, accelerator: Any) -> list[Any]:
    """The K cached render variants of every row (`facet_vlm.geometry.augment.RenderAugmentation`), in row order;
    each variant has its own cache folder (the variant index is part of its key), so they are rendered once."""
    from ..geometry.augment import AugmentedFeatures, RenderAugmentation
    from .cache import prepare_features

    augmentation = RenderAugmentation.from_settings(settings)
    variants = []
    for variant in range(1, augmentation.variants + 1):
        features = AugmentedFeatures(feature_fn, augmentation, variant, feature_fn.spec)
        with accelerator.main_process_first():
            variants.append(prepare_features(index, cache_dir, features, num_proc=data_args.num_proc,
                                             desc=f"render variant {variant}/{augmentation.variants}"))
    return variants


def frame_selection(data_args: Any) -> Any:
    """The `FrameSelection` of ``--num_frames``, ``--frame_mode`` and ``--short_policy``."""
    from .sequences import FrameSelection

    return FrameSelection(num_frames=getattr(data_args, "num_frames", 8),
                          mode=getattr(data_args, "frame_mode", "uniform"),
                          short_policy=getattr(data_args, "short_policy", "repeat"))


def prepare_sequences(index: Any, entry: Any, config: Any, feature_fn: ProcessorFeatures, cache_dir: Path,
                      data_args: Any, accelerator: Any, label_info: tuple[tuple[str, ...], str]) -> PreparedData:
    """Model inputs of sequence rows (one row per sequence, ``frames`` in order).

    - A temporal model (FACET-VLM): each row's T frames are chosen by `frame_selection`, every chosen frame is
      rendered once into the per-frame cache (`facet_vlm.data.sequence_cache.prepare_sequence_features`,
      resumable, shared by every sampling with the same processor settings) and stacked on access into
      ``pixel_values`` (T, V, C, H, W); the collator stacks rows into (N, T, V, C, H, W). ``--augment`` applies
      to training batches, the same draw to every frame of a sequence (`facet_vlm.geometry.augment`).
    - A static model (CoupleFER, AFNet-M): one row per sequence whose ``path`` is its apex frame (the annotated
      apex, else the frame farthest from the first: `facet_vlm.data.sequences.apex_rows`), prepared as a still
      scan, with the sequence's neutral frame as its neutral reference where the model takes one
      (`sequence_neutral_paths`). The feature spec records ``"frames": "apex"``.
    """
    from .cache import prepare_features
    from .sequence_cache import prepare_sequence_features
    from .sequences import apex_rows

    labels, label_set_name = label_info
    if not entry.temporal:
        with accelerator.main_process_first():
            index = apex_rows(index)
            if getattr(config, "neutral_input_names", ()):
                index, feature_fn = NeutralPairFeatures.for_rows(feature_fn.processor, index,
                                                                 sequence_neutral_paths(index))
            prepared = prepare_features(index, cache_dir, feature_fn, num_proc=data_args.num_proc,
                                        desc=f"render {entry.name} inputs (apex frames)")
        input_names = [name for name in prepared.column_names if name not in index.column_names]
        return PreparedData(prepared, labels, {**feature_fn.spec, "frames": "apex"}, FeatureCollator(input_names),
                            label_set_name)
    if getattr(config, "neutral_input_names", ()):
        raise ConfigError("a temporal model's 4D input has its own reference, the first frame (FACET-VLM's "
                          "frame_reference); neutral_reference is for single scans")
    selection = frame_selection(data_args)
    if selection.num_frames > config.num_frames:
        raise ConfigError(f"--num_frames {selection.num_frames} exceeds the model's num_frames={config.num_frames} "
                          "(learned frame positions); lower it or set model_config num_frames")
    with accelerator.main_process_first():
        dtype = getattr(data_args, "frame_cache_dtype", "float32")
        prepared, rendered = prepare_sequence_features(index, cache_dir, feature_fn, selection, dtype=dtype,
                                                       num_proc=data_args.num_proc,
                                                       progress=accelerator.is_local_main_process,
                                                       as_stored=dtype == "float16")
    logger.info("%d sequences, %d frames each (%s): %d frames rendered, the rest from the cache", len(prepared),
                selection.num_frames, selection.mode, rendered)
    spec = {**feature_fn.spec, "frames": asdict(selection)}
    train_collate_fn = None
    if data_args.augment:
        from ..geometry.augment import ViewAugmenter

        train_collate_fn = FeatureCollator(["pixel_values"],
                                           ViewAugmenter.from_processor(feature_fn.processor, data_args.augment))
    return PreparedData(prepared, labels, spec, FeatureCollator(["pixel_values"]), label_set_name,
                        train_collate_fn=train_collate_fn)


def config_for_inputs(entry: Any, model_args: Any, labels: Sequence[str]) -> Any:
    """The config the processor is built from: the saved model's, or the one the run will create."""
    init_from = model_args.init_from
    overrides = dict(model_args.model_config or {})
    if init_from and (Path(init_from) / "config.json").is_file():
        saved = check_model_files(init_from)
        if saved.get("model_type") == entry.config_class.model_type:
            return entry.config_class.from_pretrained(init_from, **overrides)
    return entry.config_class(**overrides, num_labels=len(labels))


def save_processor(model: Any, directory: Path, feature_spec: dict[str, Any]) -> None:
    """Save the processor that built the model's training inputs next to the model (``processor_config.json``)."""
    settings = dict(feature_spec.get("settings", {}))
    name = settings.pop("processor_class", None)
    model_type = getattr(model.config, "model_type", None)
    if model_type not in MODEL_REGISTRY:
        return
    cls = MODEL_REGISTRY[model_type].processor_class
    if name is not None and name != cls.__name__:
        raise ConfigError(f"the training inputs were built by {name}, not {cls.__name__}")
    cls(**settings).save_pretrained(directory)


VIDEO_OPTIONS = ("trials_per_subject", "fps", "seconds", "size", "noise_std")
"""The ``--synthetic_options`` that generated face videos take (`facet_vlm.data.synthetic_video.generate_videos`)."""


def synthetic_video_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """``--synthetic_options`` of a face-video set, checked: an option `generate_videos` does not take is an error
    that names it (the scan generator's options, e.g. ``vertices``, mean nothing here)."""
    unknown = sorted(set(options or {}) - set(VIDEO_OPTIONS))
    if unknown:
        raise ConfigError(f"--synthetic_options {', '.join(unknown)}: generated face videos take only "
                          f"{', '.join(VIDEO_OPTIONS)}")
    return dict(options or {})


def synthetic_video_root(cache_dir: str | Path, subjects: int, seed: int, carrier: str = "both",
                         options: dict[str, Any] | None = None) -> Path:
    """Where ``--dataset synthetic`` keeps the generated face videos of the physio model (one folder per carrier,
    subjects, seed and ``--synthetic_options``)."""
    from .synthetic_video import CARRIERS

    if carrier not in CARRIERS:
        raise ConfigError(f"--synthetic_carrier {carrier!r}: use one of {', '.join(CARRIERS)}")
    name = f"mahnob_s{subjects}_seed{seed}_{carrier}"
    options = synthetic_video_options(options)
    if options:
        name += "_" + hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    return Path(cache_dir) / "synthetic" / name


VIDEO_ARRAYS = ("pixel_values", "tfr_values")
"""The model-input columns of a face-video data set."""


def video_array_features(processor: Any) -> dict[str, Any]:
    """Fixed-shape feature types of the arrays `processor` makes per clip: ``pixel_values`` (T, 3, S, S) and
    ``tfr_values`` (1, F, T'), float32. Stored so, a batch reads back as one contiguous array; stored as nested
    lists (what `datasets` infers from arrays), every innermost row is converted on its own, which took most of a
    training step of the small physio config."""
    from .cache import infer_features

    size, (bins, steps) = processor.image_size, processor.tfr_size
    return infer_features({"pixel_values": np.empty((processor.num_frames, 3, size, size), np.float32),
                           "tfr_values": np.empty((1, bins, steps), np.float32)}, "float32")


def as_fixed_shape(prepared: Any, arrays: dict[str, Any], arrays_file: Path) -> Any:
    """``prepared`` (the rows `Dataset.map` wrote into its cache file) with its `arrays` columns cast to the given
    fixed-shape types, written to ``arrays_file``; the map's own cache files (same name without ``.arrays``, and its
    per-process shards) are removed, so that the inputs are kept on disk once. A map cache written by an earlier
    release is converted so, not computed again."""
    from datasets import Features

    prepared = prepared.cast(Features({**prepared.features, **arrays}), cache_file_name=str(arrays_file))
    for stale in arrays_file.parent.glob(arrays_file.name.replace(".arrays.arrow", "*.arrow")):
        if stale != arrays_file:
            stale.unlink()
    return prepared


def with_current_index(index: Any, prepared: Any, arrays_file: Path) -> Any:
    """The rows of `index` (as read now) beside the input arrays of `prepared` (read from `arrays_file`, possibly
    written by an earlier run with other labels): the cached index columns are dropped. The two must list the same
    videos in the same order (the cache is named by them); a file that does not is refused with its name."""
    from datasets import concatenate_datasets

    if len(prepared) != len(index) or list(column(prepared, "video_path")) != list(column(index, "video_path")):
        raise FormatError(f"the cached face-video inputs hold {len(prepared)} clips that do not match the "
                          f"{len(index)} clips of the data set; delete the file to compute them again", arrays_file)
    return concatenate_datasets([index.flatten_indices(), prepared.select_columns(list(VIDEO_ARRAYS))], axis=1)


def person_relative_pulse(prepared: Any) -> Any:
    """Rows of a face-video data set with every clip's ``tfr_values`` replaced by its map minus the mean map of the
    same person's clips in the set (`PhysioPromptConfig.pulse_reference` ``"person_mean"``; labels are not used).
    People with a single clip are named in a warning: their map becomes zeros."""
    from collections import Counter

    from ..physio import person_relative_maps

    persons = [str(person) for person in column(prepared, "subject")]
    single = sorted(person for person, count in Counter(persons).items() if count < 2)
    if single:
        logger.warning("pulse_reference person_mean: %d people have a single clip, so their pulse map is all zeros "
                       "(their clip is their own reference): %s", len(single), ", ".join(single[:10]))
    maps = person_relative_maps(np.stack([np.asarray(m) for m in prepared["tfr_values"]]), persons)
    prepared = prepared.remove_columns(["tfr_values"]).add_column("tfr_values", [m.tolist() for m in maps],
                                                                  feature=prepared.features["tfr_values"])
    return prepared.with_format("numpy", columns=list(VIDEO_ARRAYS), output_all_columns=True)


def prepare_video_dataset(model_args: Any, data_args: Any, accelerator: Any) -> PreparedData:
    """Rows of a face-video data set (synthetic, MAHNOB-HCI, DEAP) with crops, pulse maps and (valence, arousal).

    The model is trained on both binary targets; the label set (``valence`` by default, or ``arousal``) picks the
    one that is scored. Inputs are computed once with ``datasets.map`` (``--num_proc`` workers) into an Arrow file
    of the cache dir, named by the processor settings and the video paths, and reused by later runs; only the
    input arrays are taken from it: labels, ratings and the other index columns always come from the data set as
    it is read now (a session relabelled after its crops were cached gets its new labels).
    """
    from ..labels import label_set

    kind, _, root = data_args.dataset.partition(":")
    if kind == "synthetic":
        folder = Path(root) if root else synthetic_video_root(data_args.cache_dir, data_args.synthetic_subjects,
                                                              data_args.synthetic_seed,
                                                              getattr(data_args, "synthetic_carrier", "both"),
                                                              getattr(data_args, "synthetic_options", None))
        if not root and not (folder / ".complete").is_file():
            raise DatasetLayoutError("the synthetic video set has not been generated; run generate_data first (the "
                                     "first step of scripts/train.py)", folder)
        from .mahnob import load_mahnob

        index = load_mahnob(folder)
    elif kind in ("mahnob", "deap") and root:
        if not Path(root).is_dir():
            raise DatasetLayoutError("data-set root not found", root)
        if kind == "mahnob":
            from .mahnob import load_mahnob as loader
        else:
            from .deap import load_deap as loader
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
    entry = model_entry(model_args.model)
    config = config_for_inputs(entry, model_args, label_set(label_set_name))
    processor = make_processor(model_args.model, config, data_args.feature_overrides)
    spec = {"name": "video", "settings": processor.to_dict(), "videos": column(index, "video_path")}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    cache_file = Path(data_args.cache_dir) / "features" / f"video_{digest}.arrow"
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    from datasets import Dataset

    arrays_file = cache_file.with_suffix(".arrays.arrow")
    with accelerator.main_process_first():
        if arrays_file.is_file():
            prepared = Dataset.from_file(str(arrays_file))
        else:  # the map reuses a cache an earlier release wrote (as nested lists) under its own name
            prepared = index.map(VideoRowFeatures(processor),
                                 num_proc=data_args.num_proc if data_args.num_proc > 1 else None,
                                 cache_file_name=str(cache_file), load_from_cache_file=True,
                                 desc="face crops and pulse maps")
            prepared = as_fixed_shape(prepared, video_array_features(processor), arrays_file)
    prepared = with_current_index(index, prepared, arrays_file)
    prepared = prepared.with_format("numpy", columns=list(VIDEO_ARRAYS), output_all_columns=True)
    if getattr(config, "pulse_reference", "none") == "person_mean":
        prepared = person_relative_pulse(prepared)
    return PreparedData(prepared, label_set(label_set_name), {"settings": processor.to_dict()},
                        FeatureCollator(list(VIDEO_ARRAYS)), label_set_name,
                        logits_key=f"{label_set_name}_logits", target_index=0 if label_set_name == "valence" else 1,
                        subject_adapters=True)
