"""The arguments of a training run: three typed dataclasses and the parser that fills them.

`ModelArguments` (which model, how to initialise it, LoRA), `DataArguments` (data set, protocol, folds, input
preparation) and `LoopArguments` (optimisation, checkpoints, outputs; named so that it is not mistaken for
transformers' `TrainingArguments`, which it does not extend) are parsed by transformers' `HfArgumentParser`.
``--config FILE`` (JSON or YAML, keys = argument names) sets defaults that the command line overrides::

    python scripts/train.py --config facet_vlm/configs/facet_vlm_synthetic_small.json --num_epochs 2

This module imports nothing of the run layer, so every other module of it may import it.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError
from .registry import MODEL_NAMES


@dataclass
class ModelArguments:
    """Which model to train and how to initialise it."""

    model: str = field(default="facet_vlm", metadata={
        "help": "Model family (an entry of facet_vlm.registry).", "choices": list(MODEL_NAMES)})
    init_from: str | None = field(default=None, metadata={
        "help": "A pretrained CLIP (Hub name or local dir, e.g. openai/clip-vit-base-patch16) to build the towers "
                "from, or a directory written by save_pretrained (this library's model) to fine-tune, with the same "
                "or another label set (see --keep_known_classes)."})
    model_config: dict[str, Any] | str | None = field(default=None, metadata={
        "help": "Config overrides as a JSON object (a dict in a --config file), e.g. "
                "'{\"projection_dim\": 64, \"vision_config\": {\"hidden_size\": 64}}'."})
    label_set: str | None = field(default=None, metadata={
        "help": "Label set of facet_vlm.labels.LABEL_SETS (default: the data set's, e.g. basic6)."})
    keep_known_classes: bool = field(default=True, metadata={
        "help": "--init_from a model of this library with other classes than the data's: the towers are reused and "
                "the class heads (classifier rows, CoupleFER's prototypes, FACET-VLM's prompts) rebuilt for the "
                "new classes; this keeps the rows/prompts of the classes the saved model already has (by name). "
                "Our choice; --keep_known_classes false starts every class head from scratch."})
    peft: Literal["none", "lora"] = field(default="none", metadata={"help": "Parameter-efficient fine-tuning."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    attn_implementation: Literal["sdpa", "eager"] = field(default="sdpa", metadata={
        "help": "Attention kernel of every attention module (transformers' attention interface): sdpa or eager."})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute activations in the backward pass (less memory, ~30 %% more time); not for AFNet-M."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"],
        metadata={"help": "Module names (or suffixes) that get LoRA adapters."})

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ConfigError(f"unknown --model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}")
        if isinstance(self.model_config, str):
            try:
                self.model_config = json.loads(self.model_config)
            except json.JSONDecodeError as error:
                raise ConfigError(f"--model_config is not a JSON object: {error}") from error
        if self.model_config is not None and not isinstance(self.model_config, dict):
            raise ConfigError(f"model_config must be a JSON object, got {type(self.model_config).__name__}")
        if self.model_config:
            check_config_keys(self.model, self.model_config)
        if self.label_set is not None:
            from .labels import LABEL_SETS

            if self.label_set not in LABEL_SETS:
                raise ConfigError(f"unknown --label_set {self.label_set!r}; choose one of {', '.join(LABEL_SETS)}")
        if self.init_from is not None:
            check_init_from(self.init_from)
        if self.lora_r < 1:
            raise ConfigError(f"lora_r must be >= 1, got {self.lora_r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")


#: A Hub repository id: NAME or ORG/NAME (letters, digits, ``-``, ``_``, ``.``).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def check_init_from(init_from: str) -> None:
    """``--init_from`` is an existing folder or has the form of a Hub id; a path that does not exist is named as
    such (instead of the Hub client's "Repo id must be in the form ..."). open_clip names (``hf-hub:org/repo``,
    ``local-dir:FOLDER``, ``ARCH/TAG``, ``ARCH/CHECKPOINT_FILE``) are accepted as they are."""
    from .models.facet_vlm.convert_open_clip_to_hf import is_open_clip_tag

    if is_open_clip_tag(init_from):
        return
    path = Path(init_from)
    if path.exists():
        if not path.is_dir():
            raise ConfigError("--init_from must be a model folder or a Hub id, not a file", init_from)
        return
    if not HUB_ID.match(init_from) or init_from.startswith((".", "~")):
        raise ConfigError("--init_from: no such folder (and not a Hub id ORG/NAME)", init_from)


def config_keys(config_class: Any) -> set[str]:
    """Every key a config class accepts: its attributes, its ``__init__`` parameters and their aliases."""
    keys = set(config_class().to_dict())
    keys |= {name for name in inspect.signature(config_class.__init__).parameters if name not in ("self", "kwargs")}
    keys |= set(getattr(config_class, "attribute_map", {}) or {})
    return keys


def check_config_keys(model: str, overrides: dict[str, Any]) -> None:
    """Refuse keys of ``--model_config`` (also inside ``vision_config``, ``text_config``, ...) that the model's
    config does not know, naming the close matches: a typo would otherwise be ignored silently."""
    from .registry import model_entry

    config_class = model_entry(model).config_class
    _check_keys(config_class, overrides, "model_config")


def _check_keys(config_class: Any, overrides: dict[str, Any], where: str) -> None:
    known = config_keys(config_class)
    sub_configs = getattr(config_class, "sub_configs", None) or {}
    for key, value in overrides.items():
        if key in sub_configs and isinstance(value, dict):
            _check_keys(sub_configs[key], value, f"{where}.{key}")
        elif key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown key {key!r} in --{where} of {config_class.__name__}{hint}")


def merge_dicts(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` merged into `base`, recursively for nested objects (``vision_config`` keeps the keys it does not
    override)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass
class DataArguments:
    """Where the data comes from, how it is split into folds and how model inputs are prepared."""

    dataset: str = field(default="synthetic", metadata={
        "help": "synthetic | synthetic:DIR | bu3dfe:ROOT | bosphorus:ROOT | bu4dfe:ROOT | bp4d:ROOT | 4dme:ROOT | "
                "mahnob:ROOT | deap:ROOT. Plain 'synthetic' generates a set (--synthetic_format layout) into the "
                "cache dir (once). 4dme: use --protocol loso (pooled UF1/UAR are reported)."})
    protocol: str = field(default="subject-kfold", metadata={
        "help": "subject-kfold (K folds of subjects), loso (leave one subject out), holdout (one split: "
                "--test_fraction of the subjects), bu3dfe-p1-10fold / bu3dfe-p2-10fold (BU-3DFE protocols)."})
    folds: int = field(default=10, metadata={"help": "K of subject-kfold."})
    fold: int | None = field(default=None, metadata={"help": "Run only this fold (0-based); default: every fold."})
    max_folds: int | None = field(default=None, metadata={"help": "Run only the first N folds (quick runs)."})
    test_fraction: float = field(default=0.2, metadata={"help": "Share of subjects held out by --protocol holdout."})
    fold_seed: int = field(default=0, metadata={"help": "Seed of the subject shuffle that makes the folds."})
    max_train_subjects: int | None = field(default=None, metadata={
        "help": "Train each fold on at most this many of its training subjects (learning curves); the test subjects "
                "stay the same. The subset is drawn by --train_subjects_seed and the fold index "
                "(facet_vlm.data.folds.limit_train_subjects; a smaller subset is inside a larger one)."})
    train_subjects_seed: int = field(default=0, metadata={"help": "Seed of the --max_train_subjects choice."})
    intensities: list[int] | None = field(default=None, metadata={
        "help": "Keep only these expression intensities (BU-3DFE: 1..4; protocol P1 uses 3 4)."})
    synthetic_subjects: int = field(default=40, metadata={"help": "Subjects of a generated synthetic set."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of a generated synthetic set."})
    synthetic_carrier: str = field(default="both", metadata={
        "help": "What carries the emotion in generated face videos (the physio model): both (face and pulse), face "
                "or pulse; see facet_vlm.data.synthetic_video."})
    synthetic_options: dict[str, Any] | str | None = field(default=None, metadata={
        "help": "JSON object of further facet_vlm.data.synthetic.generate arguments (a dict in a --config file), "
                "e.g. '{\"vertices\": 3000, \"texture_size\": 256}'; for generated face videos (the physio "
                "model) those of facet_vlm.data.synthetic_video.generate_videos, e.g. '{\"trials_per_subject\": 3}'."})
    cache_dir: str = field(default=".cache/facet_vlm", metadata={
        "help": "Generated data and the render cache (reused by later runs)."})
    num_proc: int = field(default=1, metadata={"help": "Processes for data generation and rendering."})
    feature_overrides: dict[str, Any] | str | None = field(default=None, metadata={
        "help": "JSON object overriding the processor settings of input preparation (e.g. "
                "'{\"num_points\": 1024}'); see facet_vlm.data.prepare."})
    augment: dict[str, Any] | str | None = field(default=None, metadata={
        "help": "JSON object of training-time augmentation of the cached renders "
                "(facet_vlm.geometry.augment): FACET-VLM's views (ViewAugmenter: mirror_prob, max_shift, max_zoom, "
                "max_holes, hole_radius, depth_noise), AFNet-M's and CoupleFER's frontal images (ImageAugmenter: the "
                "same, plus point_rotation_deg and point_noise for CoupleFER's points), e.g. "
                "'{\"mirror_prob\": 0.5, \"max_shift\": 2, \"max_zoom\": 0.08}'; sequences (FACET-VLM) get "
                "one draw per clip."})
    render_augment: dict[str, Any] | str | None = field(default=None, metadata={
        "help": "JSON object of mesh-level augmentation rendered into K cached variants per scan "
                "(facet_vlm.geometry.augment.RenderAugmentation: variants, pose_deg [yaw, pitch, roll], "
                "decimate_prob, decimate_keep [low, high], seed), e.g. '{\"variants\": 2, \"pose_deg\": [10, 8, 5]}'; "
                "training picks the original or a variant per sample; still scans only."})
    synthetic_format: str = field(default="bu3dfe", metadata={
        "help": "Layout of a generated --dataset synthetic set: bu3dfe (still scans), bu4dfe (expression sequences), "
                "bp4d (task sequences) or 4dme (micro/macro clips with onset/apex/offset)."})
    num_frames: int = field(default=8, metadata={
        "help": "Sequence data sets: frames T per sample of the temporal model (<= the model's num_frames)."})
    frame_mode: str = field(default="uniform", metadata={
        "help": "Sequence data sets: uniform | onset_apex_offset | apex (facet_vlm.data.sequences.FrameSelection)."})
    short_policy: str = field(default="repeat", metadata={
        "help": "Sequence data sets: a clip shorter than --num_frames repeats frames (repeat) or is refused."})
    frame_cache_dtype: str = field(default="float32", metadata={
        "help": "Sequence data sets: storage of the per-frame render cache, float32 | float16 (half the bytes to read; "
                "rows carry float16 and the collator converts each batch to float32; values within float16 "
                "precision). A different dtype is a different cache (frames are rendered again)."})

    def __post_init__(self) -> None:
        for name in ("feature_overrides", "synthetic_options", "augment", "render_augment"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    setattr(self, name, json.loads(value))
                except json.JSONDecodeError as error:
                    raise ConfigError(f"--{name} is not a JSON object: {error}") from error
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise ConfigError(f"--{name} must be a JSON object")
        if self.frame_cache_dtype not in ("float32", "float16"):
            raise ConfigError(f"--frame_cache_dtype must be float32 or float16, got {self.frame_cache_dtype!r}")
        if self.render_augment:  # checked now, not after the data set is generated and rendered
            from .geometry.augment import RenderAugmentation

            RenderAugmentation.from_settings(self.render_augment)
        if self.folds < 2 and self.protocol == "subject-kfold":
            raise ConfigError(f"--folds must be >= 2 for subject-kfold, got {self.folds}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"--test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.num_proc < 1:
            raise ConfigError(f"--num_proc must be >= 1, got {self.num_proc}")
        if self.fold is not None and self.fold < 0:
            raise ConfigError(f"--fold must be >= 0, got {self.fold}")
        if self.max_folds is not None and self.max_folds < 1:
            raise ConfigError(f"--max_folds must be >= 1, got {self.max_folds}")
        if self.max_train_subjects is not None and self.max_train_subjects < 1:
            raise ConfigError(f"--max_train_subjects must be >= 1, got {self.max_train_subjects}")


@dataclass
class LoopArguments:
    """The optimisation loop, checkpoints and outputs."""

    output_dir: str = field(default="outputs/run", metadata={"help": "Where results, checkpoints and the model go."})
    num_epochs: int = field(default=10, metadata={"help": "Training epochs per fold."})
    max_steps: int | None = field(default=None, metadata={
        "help": "Optimizer steps per fold; overrides --num_epochs when set."})
    batch_size: int = field(default=16, metadata={
        "help": "Global batch size, split over the processes (must divide by their number)."})
    eval_batch_size: int | None = field(default=None, metadata={"help": "Default: --batch_size."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate of AdamW."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on biases and norms)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of the steps spent warming up linearly."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0: off)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = field(default="auto", metadata={
        "help": "auto = bf16 on GPUs that have it, else fp16 on GPUs, no on CPU."})
    checkpointing_steps: str | None = field(default=None, metadata={
        "help": "Save the training state every N optimizer steps, or 'epoch'."})
    checkpoints_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept per fold (newest)."})
    keep_checkpoints: bool = field(default=False, metadata={
        "help": "Keep a fold's checkpoints after its results are written (default: delete them then)."})
    resume_from_checkpoint: str | None = field(default=None, metadata={
        "help": "A checkpoint directory, or 'latest' (the newest checkpoint of the fold being run)."})
    stop_after_steps: int | None = field(default=None, metadata={
        "help": "Stop the process after this many optimizer steps of a fold, as if it were killed (tests resume)."})
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, data order and dropout."})
    report_to: Literal["auto", "tensorboard", "none"] = field(default="auto", metadata={
        "help": "Tracker: auto = tensorboard when installed."})
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every N optimizer steps."})
    eval_each_epoch: bool = field(default=True, metadata={
        "help": "Score the test fold after every epoch for curves.png (never used to pick a model)."})
    save_adapters_only: bool = field(default=False, metadata={
        "help": "With --peft lora: save model/ as a PEFT adapter folder (adapter weights + modules_to_save) that "
                "names its base model (--init_from, or the untrained model saved in base_model/), instead of the "
                "model with the adapters merged."})
    final_model: Literal["last_fold", "every_fold", "all_data", "none"] = field(default="last_fold", metadata={
        "help": "What model/ holds: the last fold's model, one retrained on every subject, or nothing; every_fold: "
                "the last fold's model, and each fold's own model in fold_<i>/model (for per-fold analyses of "
                "unseen subjects, e.g. scripts/bench.py physio-readout RUN_DIR)."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    num_threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads (default: torch's choice). Use 1 when other CPU-heavy jobs share the machine: "
                "contended threads slowed steps 6-9x on a 2-core machine."})
    torch_compile: bool = field(default=False, metadata={
        "help": "Compile the model with torch.compile (inductor) through Accelerate."})
    allow_changed_args: bool = field(default=False, metadata={
        "help": "Resume from a checkpoint although run-defining arguments (learning rate, seed, model config, ...) "
                "differ from the ones stored with it."})

    def __post_init__(self) -> None:
        if self.checkpointing_steps is not None and self.checkpointing_steps != "epoch":
            if not str(self.checkpointing_steps).isdigit() or int(self.checkpointing_steps) < 1:
                raise ConfigError(f"--checkpointing_steps must be a positive integer or 'epoch', "
                                  f"got {self.checkpointing_steps!r}")
            self.checkpointing_steps = str(int(self.checkpointing_steps))
        for name in ("num_epochs", "batch_size", "gradient_accumulation_steps", "checkpoints_total_limit",
                     "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max_steps must be >= 1, got {self.max_steps}")
        for name in ("eval_batch_size", "stop_after_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"--num_threads must be >= 1, got {self.num_threads}")
        if self.dataloader_num_workers < 0:
            raise ConfigError(f"--dataloader_num_workers must be >= 0, got {self.dataloader_num_workers}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"--learning_rate must be a finite number > 0, got {self.learning_rate}")
        for name in ("weight_decay", "max_grad_norm"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"--{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"--warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        if self.lr_scheduler_type not in LR_SCHEDULERS:
            raise ConfigError(f"unknown --lr_scheduler_type {self.lr_scheduler_type!r}; choose one of "
                              f"{', '.join(LR_SCHEDULERS)}")
        check_output_dir(self.output_dir)


#: The transformers schedulers the loop can drive: they need no metric (``reduce_lr_on_plateau``) and no
#: scheduler-specific arguments (``cosine_with_min_lr``, ``warmup_stable_decay``, ...).
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt")


def check_output_dir(output_dir: str) -> None:
    """``--output_dir`` is a folder or can become one: neither it nor a folder above it is a file."""
    path = Path(output_dir)
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise ConfigError("--output_dir must be a folder, but this is a file", candidate)
            return


ARGUMENT_CLASSES = (ModelArguments, DataArguments, LoopArguments)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON or YAML argument file (a flat mapping of argument names to values)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text)
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"not valid JSON: {error}", path) from error
    if not isinstance(values, dict):
        raise ConfigError("a config file must hold a mapping of argument names to values", path)
    values = {key: value for key, value in values.items() if not key.startswith("_")}  # "_comment" keys
    known = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown arguments {unknown}; see scripts/train.py --help", path)
    for key in ("model_config", "feature_overrides", "synthetic_options", "augment", "render_augment"):
        if isinstance(values.get(key), dict):
            values[key] = json.dumps(values[key])
    return values


def parse_args(argv: Sequence[str] | None = None, description: str | None = None
               ) -> tuple[ModelArguments, DataArguments, LoopArguments]:
    """Parse ``--config FILE`` (defaults) and the command line (overrides) into the three argument dataclasses."""
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    pre_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre_parser.add_argument("--config", default=None)
    pre_parser.add_argument("--model_config", default=None)
    known, remaining = pre_parser.parse_known_args(argv)
    parser = HfArgumentParser(ARGUMENT_CLASSES, description=description or __doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="JSON/YAML file of argument defaults; the command line wins.")
    parser.add_argument("--debug", action="store_true", help="Show the traceback of an error (facet_vlm.cli).")
    file_values = load_config_file(known.config) if known.config else {}
    if known.model_config is not None:
        remaining += ["--model_config", _merged_model_config(file_values.get("model_config"), known.model_config)]
    if file_values:
        parser.set_defaults(**file_values)
    *arguments, extra = parser.parse_args_into_dataclasses(remaining + (["--config", known.config]
                                                                        if known.config else []),
                                                           return_remaining_strings=True)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    model_args, data_args, loop_args = (a for a in arguments if not isinstance(a, argparse.Namespace))
    return model_args, data_args, loop_args


def _merged_model_config(from_file: str | None, from_command_line: str) -> str:
    """``--model_config`` of the command line merged (recursively) into the config file's ``model_config``."""
    if from_file is None:
        return from_command_line
    try:
        override = json.loads(from_command_line)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--model_config is not a JSON object: {error}") from error
    if not isinstance(override, dict):
        raise ConfigError(f"--model_config must be a JSON object, got {type(override).__name__}")
    return json.dumps(merge_dicts(json.loads(from_file), override))
