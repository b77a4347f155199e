"""Training and subject-independent evaluation of every model of the library with Hugging Face Accelerate.

`main(argv)` is what ``scripts/train.py`` and the ``facet-vlm-train`` console script run::

    accelerate launch scripts/train.py --config facet_vlm/configs/facet_vlm_synthetic_small.json
    OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 scripts/train.py --model couplefer ...

Arguments are three typed dataclasses (`ModelArguments`, `DataArguments`, `TrainingArguments`) parsed by
transformers' `HfArgumentParser`; ``--config FILE`` (JSON or YAML, keys = argument names) sets defaults that the
command line overrides.

What a run does, per fold of the protocol (subjects never cross from train to test):
build the model (random init, a pretrained CLIP, or a saved model; optionally LoRA through PEFT) → `accelerator.prepare`
→ epochs of gradient-accumulated, mixed-precision steps with `save_state` checkpoints → evaluation with
`gather_for_metrics` → ``fold_<i>/results.json`` written the moment the fold ends (a rerun skips finished folds).
At the end: ``all_results.json`` (mean ± std and per-fold metrics), ``results.txt`` (the printed table),
``confusion_matrix.png`` (summed over folds), ``curves.png`` (loss and test accuracy per epoch) and the final
model with its processor in ``model/`` (the model of the last fold run, or one retrained on every subject with
``--final_model all_data``).

Reproducibility: every fold starts from ``set_seed(seed)``, batches are drawn by a seedable sampler
(order = f(seed, epoch)), and ``--batch_size`` is the global batch split across processes (``split_batches``), so
one process and two processes see the same batches; training drops the last incomplete batch so that every
process gets an equal share. A resumed run restores model, optimizer, scheduler, RNG and the running epoch loss,
and skips the batches already done with `accelerator.skip_first_batches`; it ends where an uninterrupted run ends.
No model selection happens on the test fold: the per-epoch test accuracy is only plotted, the reported model is the
one after the last epoch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .errors import ConfigError
from .evaluation import (
    compute_metrics,
    format_results_table,
    plot_confusion_matrix,
    plot_curves,
    summarize_folds,
    write_json,
)

logger = logging.getLogger(__name__)

MODEL_TYPES = ("facet_vlm", "couplefer", "afnet_m", "physio_prompt")
#: Marker a fold folder gets once its results are final; a rerun skips folds that have it.
FOLD_RESULTS = "results.json"
TRAINER_STATE = "trainer_state.json"
#: Saved next to the final model: how it was trained, which subjects it saw, how to build its inputs.
TRAINING_RECORD = "facet_vlm_training.json"


@dataclass
class ModelArguments:
    """Which model to train and how to initialise it."""

    model: Literal["facet_vlm", "couplefer", "afnet_m", "physio_prompt"] = field(
        default="facet_vlm", metadata={"help": "Model family."})
    init_from: str | None = field(default=None, metadata={
        "help": "A pretrained CLIP (Hub name or local dir, e.g. openai/clip-vit-base-patch16) to build the towers "
                "from, or a directory written by save_pretrained (this library's model) to fine-tune."})
    model_config: str | None = field(default=None, metadata={
        "help": "Config overrides as a JSON object (a dict in a --config file), e.g. "
                "'{\"projection_dim\": 64, \"vision_config\": {\"hidden_size\": 64}}'."})
    label_set: str | None = field(default=None, metadata={
        "help": "Label set of facet_vlm.labels.LABEL_SETS (default: the data set's, e.g. basic6)."})
    peft: Literal["none", "lora"] = field(default="none", metadata={"help": "Parameter-efficient fine-tuning."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"],
        metadata={"help": "Module names (or suffixes) that get LoRA adapters."})

    def __post_init__(self) -> None:
        if isinstance(self.model_config, str):
            try:
                self.model_config = json.loads(self.model_config)
            except json.JSONDecodeError as error:
                raise ConfigError(f"--model_config is not a JSON object: {error}") from error
        if self.model_config is not None and not isinstance(self.model_config, dict):
            raise ConfigError(f"model_config must be a JSON object, got {type(self.model_config).__name__}")
        if self.lora_r < 1:
            raise ConfigError(f"lora_r must be >= 1, got {self.lora_r}")


@dataclass
class DataArguments:
    """Where the data comes from, how it is split into folds and how model inputs are prepared."""

    dataset: str = field(default="synthetic", metadata={
        "help": "synthetic | synthetic:DIR | bu3dfe:ROOT | bosphorus:ROOT | bu4dfe:ROOT | mahnob:ROOT | deap:ROOT. "
                "Plain 'synthetic' generates a BU-3DFE-layout set into the cache dir (once)."})
    protocol: str = field(default="subject-kfold", metadata={
        "help": "subject-kfold (K folds of subjects), loso (leave one subject out), holdout (one split: "
                "--test_fraction of the subjects), bu3dfe-p1-10fold / bu3dfe-p2-10fold (BU-3DFE protocols)."})
    folds: int = field(default=10, metadata={"help": "K of subject-kfold."})
    fold: int | None = field(default=None, metadata={"help": "Run only this fold (0-based); default: every fold."})
    max_folds: int | None = field(default=None, metadata={"help": "Run only the first N folds (quick runs)."})
    test_fraction: float = field(default=0.2, metadata={"help": "Share of subjects held out by --protocol holdout."})
    fold_seed: int = field(default=0, metadata={"help": "Seed of the subject shuffle that makes the folds."})
    intensities: list[int] | None = field(default=None, metadata={
        "help": "Keep only these expression intensities (BU-3DFE: 1..4; protocol P1 uses 3 4)."})
    synthetic_subjects: int = field(default=40, metadata={"help": "Subjects of a generated synthetic set."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of a generated synthetic set."})
    synthetic_options: str | None = field(default=None, metadata={
        "help": "JSON object of further facet_vlm.data.synthetic.generate arguments (a dict in a --config file), "
                "e.g. '{\"vertices\": 3000, \"texture_size\": 256}'."})
    cache_dir: str = field(default=".cache/facet_vlm", metadata={
        "help": "Generated data and the render cache (reused by later runs)."})
    num_proc: int = field(default=1, metadata={"help": "Processes for data generation and rendering."})
    feature_overrides: str | None = field(default=None, metadata={
        "help": "JSON object overriding input preparation (e.g. '{\"num_points\": 1024}'); see facet_vlm.features."})
    augment: str | None = field(default=None, metadata={
        "help": "JSON object of training-time augmentation of FACET-VLM's renders (facet_vlm.geometry.augment."
                "ViewAugmenter), e.g. '{\"mirror_prob\": 0.5, \"max_shift\": 2}'."})

    def __post_init__(self) -> None:
        for name in ("feature_overrides", "synthetic_options", "augment"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    setattr(self, name, json.loads(value))
                except json.JSONDecodeError as error:
                    raise ConfigError(f"--{name} is not a JSON object: {error}") from error
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise ConfigError(f"--{name} must be a JSON object")
        if self.folds < 2 and self.protocol == "subject-kfold":
            raise ConfigError(f"--folds must be >= 2 for subject-kfold, got {self.folds}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"--test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.num_proc < 1:
            raise ConfigError(f"--num_proc must be >= 1, got {self.num_proc}")


@dataclass
class TrainingArguments:
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
    final_model: Literal["last_fold", "all_data", "none"] = field(default="last_fold", metadata={
        "help": "What model/ holds: the last fold's model, one retrained on every subject, or nothing."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})

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


ARGUMENT_CLASSES = (ModelArguments, DataArguments, TrainingArguments)


# ----------------------------------------------------------------------------------------------------- arguments
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
    for key in ("model_config", "feature_overrides", "synthetic_options"):
        if isinstance(values.get(key), dict):
            values[key] = json.dumps(values[key])
    return values


def parse_args(argv: Sequence[str] | None = None, description: str | None = None
               ) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Parse ``--config FILE`` (defaults) and the command line (overrides) into the three argument dataclasses."""
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--config", default=None)
    known, remaining = pre_parser.parse_known_args(argv)
    parser = HfArgumentParser(ARGUMENT_CLASSES, description=description or __doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="JSON/YAML file of argument defaults; the command line wins.")
    if known.config:
        parser.set_defaults(**load_config_file(known.config))
    *arguments, extra = parser.parse_args_into_dataclasses(remaining + (["--config", known.config]
                                                                        if known.config else []),
                                                           return_remaining_strings=True)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    model_args, data_args, training_args = (a for a in arguments if not isinstance(a, argparse.Namespace))
    return model_args, data_args, training_args


# ----------------------------------------------------------------------------------------------------- data
def build_folds(dataset: Any, data_args: DataArguments) -> list[tuple[list[str], list[str]]]:
    """(train subjects, test subjects) per fold of ``--protocol``; no subject is ever on both sides of a fold.

    ``bu3dfe-p1-<K>fold`` / ``bu3dfe-p2-<K>fold`` are `facet_vlm.data.bu3dfe_protocol` (60 subjects drawn by
    ``--fold_seed``, or every subject when the data set has fewer; the two highest intensities, which
    `prepare_dataset` keeps for these protocols).
    """
    from . import data as data_module
    from .features import column

    subjects = sorted(set(column(dataset, "subject")))
    protocol = data_args.protocol
    if protocol == "subject-kfold":
        if data_args.folds > len(subjects):
            raise ConfigError(f"--folds {data_args.folds} is more than the {len(subjects)} subjects of the data set")
        folds = data_module.subject_kfold(subjects, k=data_args.folds, seed=data_args.fold_seed)
    elif protocol == "loso":
        folds = data_module.leave_one_subject_out(subjects)
    elif protocol == "holdout":
        order = np.random.default_rng(data_args.fold_seed).permutation(len(subjects))
        num_test = max(1, round(data_args.test_fraction * len(subjects)))
        test = sorted(subjects[i] for i in order[:num_test])
        folds = [(sorted(set(subjects) - set(test)), test)]
    elif protocol.startswith("bu3dfe-"):
        variant, k = parse_bu3dfe_protocol(protocol)
        splits = data_module.bu3dfe_protocol(dataset.with_format(None), protocol=variant, k=k,
                                             seed=data_args.fold_seed, num_subjects=min(60, len(subjects)))
        folds = [(sorted(set(column(train, "subject"))), sorted(set(column(test, "subject"))))
                 for train, test in splits]
    else:
        raise ConfigError(f"unknown --protocol {protocol!r}; use subject-kfold, loso, holdout, bu3dfe-p1-10fold "
                          f"or bu3dfe-p2-10fold")
    folds = [(sorted(train), sorted(test)) for train, test in folds]
    for index, (train, test) in enumerate(folds):
        shared = set(train) & set(test)
        if shared:
            raise ConfigError(f"fold {index} of protocol {protocol!r} has subjects in train and test: {sorted(shared)}")
    return folds


def parse_bu3dfe_protocol(protocol: str) -> tuple[str, int]:
    """``"bu3dfe-p1-10fold"`` → ``("p1", 10)``."""
    parts = protocol.lower().split("-")
    if len(parts) != 3 or parts[1] not in ("p1", "p2") or not parts[2].endswith("fold") or not parts[2][:-4].isdigit():
        raise ConfigError(f"--protocol {protocol!r}: write bu3dfe-p1-<K>fold or bu3dfe-p2-<K>fold "
                          "(e.g. bu3dfe-p1-10fold)")
    return parts[1], int(parts[2][:-4])


def selected_folds(num_folds: int, data_args: DataArguments) -> list[int]:
    """Indices of the folds this run trains (``--fold`` or ``--max_folds`` or all)."""
    if data_args.fold is not None:
        if not 0 <= data_args.fold < num_folds:
            raise ConfigError(f"--fold {data_args.fold} is out of range: protocol {data_args.protocol!r} has "
                              f"{num_folds} folds (0..{num_folds - 1})")
        return [data_args.fold]
    count = num_folds if data_args.max_folds is None else min(num_folds, data_args.max_folds)
    return list(range(count))


# ----------------------------------------------------------------------------------------------------- model
def build_model(model_args: ModelArguments, labels: Sequence[str], config_overrides: dict | None = None) -> Any:
    """The model to train: from a saved model dir, from a pretrained CLIP, or randomly initialised from a config.

    ``config_overrides`` (set by the run, e.g. the number of training subjects of a fold) win over
    ``--model_config``.
    """
    from .features import model_registry

    entry = model_registry(model_args.model)
    overrides = {**(model_args.model_config or {}), **(config_overrides or {})}
    label_kwargs = {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}
    init_from = model_args.init_from
    if init_from and (Path(init_from) / "config.json").is_file() and _is_our_model(Path(init_from), entry):
        saved = entry.config_class.from_pretrained(init_from)
        if list(saved.id2label.values()) != list(labels):
            raise ConfigError(f"the saved model has classes {list(saved.id2label.values())}, the data "
                              f"{list(labels)}; train with a matching --label_set", init_from)
        model = entry.model_class.from_pretrained(init_from, **overrides)
    elif init_from:
        model = entry.from_pretrained_backbone(init_from, labels, overrides)
    else:
        config = entry.config_class(**{**overrides, **label_kwargs, "num_labels": len(labels)})
        model = entry.model_class(config)
    if model_args.peft == "lora":
        model = apply_lora(model, model_args)
    return model


def _is_our_model(path: Path, entry: Any) -> bool:
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return config.get("model_type") == entry.config_class.model_type


#: Parameter-name parts of the pretrained CLIP towers; with LoRA they are adapted, everything else trains in full.
PRETRAINED_TOWERS = ("vision_model", "text_model", "image_encoder", "visual_projection", "text_projection")


def apply_lora(model: torch.nn.Module, model_args: ModelArguments) -> torch.nn.Module:
    """Wrap `model` with LoRA adapters on ``--lora_target_modules`` of its pretrained towers.

    Modules outside the pretrained CLIP towers (CVSA, MTGF, point branch, CouPle, heads: they start from random
    weights) stay fully trainable, as is usual when adapting a backbone to a new task. A model that declares its own
    PEFT recipe (``peft_config_kwargs``, the physio-prompt model) gets that recipe instead. Either way the saved
    model has the adapters merged into its weights.
    """
    from peft import LoraConfig, get_peft_model

    if hasattr(model, "peft_config_kwargs"):
        return get_peft_model(model, LoraConfig(**{**model.peft_config_kwargs(),
                                                   "lora_dropout": model_args.lora_dropout}))
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    missing = [target for target in model_args.lora_target_modules if target not in names]
    if missing:
        raise ConfigError(f"--lora_target_modules {missing} match no nn.Linear of {type(model).__name__}; "
                          f"linear layer names: {sorted(names)}")
    frozen_by_model = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    config = LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                        target_modules=list(model_args.lora_target_modules))
    peft_model = get_peft_model(model, config)
    for name, parameter in model.named_parameters():
        if "lora_" in name or any(tower in name for tower in PRETRAINED_TOWERS) or name in frozen_by_model:
            continue
        parameter.requires_grad = True
    return peft_model


def make_optimizer(model: torch.nn.Module, training_args: TrainingArguments) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices only (no decay on biases, norms, embeddings of size 1-D)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": training_args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=training_args.learning_rate)


def resolve_mixed_precision(choice: str) -> str:
    """'auto' → bf16 on GPUs that support it, fp16 on other GPUs, 'no' on CPU (CPU autocast is slower there)."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def resolve_report_to(choice: str) -> list[str] | None:
    if choice == "none":
        return None
    if choice == "auto":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            return None
    return ["tensorboard"]


# ----------------------------------------------------------------------------------------------------- loop pieces
def checkpoint_dirs(fold_dir: Path) -> list[Path]:
    """A fold's checkpoints, oldest first (folders ``checkpoints/step_<N>`` with a finished trainer state)."""
    root = fold_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [path for path in root.glob("step_*") if (path / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda path: int(path.name.split("_")[1]))


def save_checkpoint(accelerator: Any, fold_dir: Path, state: dict[str, Any], limit: int) -> Path:
    """`accelerator.save_state` + the loop's own state; keeps the newest `limit` checkpoints.

    The trainer state file is written last, so a checkpoint interrupted half-way is never picked up as 'latest'.
    """
    path = fold_dir / "checkpoints" / f"step_{state['completed_steps']:07d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        write_json(path / TRAINER_STATE, state)
        for old in checkpoint_dirs(fold_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def evaluate_model(accelerator: Any, model: torch.nn.Module, dataloader: Any, logits_key: str = "logits",
                   target_index: int | None = None) -> dict[str, np.ndarray]:
    """Predictions, references and class probabilities over a (prepared) data loader, gathered from all processes.

    `gather_for_metrics` drops the samples duplicated to make the last batch even, so every sample counts once.
    ``logits_key``/``target_index`` pick the scored head and label column of multi-target models.
    """
    model.eval()
    predictions, references, probabilities = [], [], []
    with torch.no_grad():
        for batch in dataloader:
            labels = batch.pop("labels")
            batch.pop("subject_ids", None)
            if target_index is not None:
                labels = labels[:, target_index]
            logits = getattr(model(**batch), logits_key).float()
            logits, labels = accelerator.gather_for_metrics((logits, labels))
            probabilities.append(torch.softmax(logits, dim=-1).cpu().numpy())
            predictions.append(logits.argmax(dim=-1).cpu().numpy())
            references.append(labels.cpu().numpy())
    model.train()
    if not predictions:
        empty = np.zeros(0, dtype=np.int64)
        return {"predictions": empty, "references": empty, "probabilities": np.zeros((0, 0), np.float32)}
    return {"predictions": np.concatenate(predictions), "references": np.concatenate(references),
            "probabilities": np.concatenate(probabilities)}


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the model's parameters and buffers (names, shapes and bytes), to compare runs and ranks."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach().cpu().contiguous()
        digest.update(str(tuple(data.shape)).encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _flat_config(*arguments: Any) -> dict[str, Any]:
    """Argument dataclasses flattened to tracker-friendly scalars."""
    flat = {}
    for argument in arguments:
        for key, value in asdict(argument).items():
            flat[key] = value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)
    return {key: ("" if value is None else value) for key, value in flat.items()}


def run_fingerprint(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> str:
    """A hash of every argument that changes a fold's result; a finished fold is reused only when it matches."""
    ignored = {"output_dir", "fold", "max_folds", "num_proc", "cache_dir", "resume_from_checkpoint", "stop_after_steps",
               "report_to", "logging_steps", "checkpointing_steps", "checkpoints_total_limit", "keep_checkpoints",
               "dataloader_num_workers", "final_model"}
    values = {key: value for argument in (model_args, data_args, training_args)
              for key, value in asdict(argument).items() if key not in ignored}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class FoldOutcome:
    """What `train_fold` hands back: metrics (None when stopped early or when there is no test set) and the model."""

    results: dict[str, Any] | None
    model: Any
    history: list[dict[str, float]]
    stopped: bool = False


def train_fold(accelerator: Any, fold_name: str, fold_dir: Path, train_dataset: Any, test_dataset: Any | None,
               prepared: Any, model_args: ModelArguments, training_args: TrainingArguments) -> FoldOutcome:
    """Train one model on `train_dataset` and score it on `test_dataset`; resumable from its checkpoints."""
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from .features import column

    labels, collate_fn = prepared.labels, prepared.collate_fn
    set_seed(training_args.seed)
    config_overrides = {}
    if prepared.subject_adapters:
        # Subject-specific adapters exist for the training subjects of this fold only.
        train_subjects = sorted(set(column(train_dataset, "subject")))
        train_dataset = train_dataset.add_column(
            "subject_ids", [train_subjects.index(subject) for subject in column(train_dataset, "subject")])
        config_overrides["num_train_subjects"] = len(train_subjects)
    model = build_model(model_args, labels, config_overrides)
    eval_batch_size = training_args.eval_batch_size or training_args.batch_size
    drop_last = len(train_dataset) >= training_args.batch_size
    # Own generators: iterating a DataLoader otherwise draws a worker seed from the global RNG, which would shift
    # dropout after a resume (the resumed run iterates a fresh, skipping loader).
    train_loader = DataLoader(train_dataset, batch_size=training_args.batch_size, shuffle=True, drop_last=drop_last,
                              collate_fn=prepared.train_collate_fn or collate_fn,
                              num_workers=training_args.dataloader_num_workers,
                              generator=torch.Generator().manual_seed(training_args.seed))
    optimizer = make_optimizer(model, training_args)
    batches_per_epoch = len(train_loader)
    if batches_per_epoch == 0:
        raise ConfigError(f"{fold_name}: no training samples")
    steps_per_epoch = math.ceil(batches_per_epoch / training_args.gradient_accumulation_steps)
    total_steps = training_args.max_steps or steps_per_epoch * training_args.num_epochs
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = get_scheduler(training_args.lr_scheduler_type, optimizer=optimizer,
                              num_warmup_steps=int(training_args.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    test_loader = None
    if test_dataset is not None and len(test_dataset):
        test_loader = accelerator.prepare(DataLoader(test_dataset, batch_size=eval_batch_size, shuffle=False,
                                                     collate_fn=collate_fn,
                                                     num_workers=training_args.dataloader_num_workers,
                                                     generator=torch.Generator().manual_seed(training_args.seed)))

    state: dict[str, Any] = {"completed_steps": 0, "epoch_loss_sum": 0.0, "epoch_loss_count": 0, "history": []}
    resume = _resume_path(training_args.resume_from_checkpoint, fold_dir)
    if resume is not None:
        accelerator.load_state(str(resume))
        state = json.loads((resume / TRAINER_STATE).read_text(encoding="utf-8"))
        accelerator.print(f"{fold_name}: resumed from {resume} at step {state['completed_steps']}")

    checkpoint_every = training_args.checkpointing_steps
    progress = tqdm(total=total_steps, initial=state["completed_steps"], desc=f"{fold_name} train",
                    disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    model.train()
    start_epoch = state["completed_steps"] // steps_per_epoch
    for epoch in range(start_epoch, num_epochs):
        train_loader.set_epoch(epoch)
        loader = train_loader
        done_in_epoch = state["completed_steps"] - epoch * steps_per_epoch
        if done_in_epoch > 0:
            loader = accelerator.skip_first_batches(train_loader, done_in_epoch
                                                    * training_args.gradient_accumulation_steps)
        for batch in loader:
            with accelerator.accumulate(model):
                outputs = model(**batch)
                loss = outputs.loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and training_args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), training_args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            batch_loss = accelerator.reduce(loss.detach().float(), reduction="mean").item()
            state["epoch_loss_sum"] += batch_loss
            state["epoch_loss_count"] += 1
            if not accelerator.sync_gradients:
                continue
            state["completed_steps"] += 1
            progress.update(1)
            step = state["completed_steps"]
            if step % training_args.logging_steps == 0:
                progress.set_postfix(loss=f"{batch_loss:.4f}")
                accelerator.log({f"{fold_name}/train_loss": batch_loss,
                                 f"{fold_name}/learning_rate": scheduler.get_last_lr()[0]}, step=step)
            epoch_ends = step % steps_per_epoch == 0 or step == total_steps
            if epoch_ends:
                record = {"epoch": epoch + 1, "step": step,
                          "train_loss": state["epoch_loss_sum"] / max(state["epoch_loss_count"], 1)}
                if test_loader is not None and training_args.eval_each_epoch:
                    scored = evaluate_model(accelerator, model, test_loader, prepared.logits_key,
                                            prepared.target_index)
                    record["eval_accuracy"] = float(np.mean(scored["predictions"] == scored["references"]))
                accelerator.log({f"{fold_name}/{key}": value for key, value in record.items() if key != "step"},
                                step=step)
                state["history"].append(record)
                state["epoch_loss_sum"], state["epoch_loss_count"] = 0.0, 0
            wants_checkpoint = (checkpoint_every == "epoch" and epoch_ends) or (
                checkpoint_every not in (None, "epoch") and step % int(checkpoint_every) == 0)
            if wants_checkpoint and step < total_steps:
                save_checkpoint(accelerator, fold_dir, state, training_args.checkpoints_total_limit)
            if training_args.stop_after_steps is not None and step >= training_args.stop_after_steps:
                progress.close()
                accelerator.print(f"{fold_name}: stopped after step {step} (--stop_after_steps)")
                return FoldOutcome(None, model, state["history"], stopped=True)
            if step >= total_steps:
                break
        if state["completed_steps"] >= total_steps:
            break
    progress.close()

    results = None
    if test_loader is not None:
        scored = evaluate_model(accelerator, model, test_loader, prepared.logits_key, prepared.target_index)
        results = compute_metrics(scored["predictions"], scored["references"], num_labels=len(labels))
    return FoldOutcome(results, model, state["history"])


def _resume_path(resume: str | None, fold_dir: Path) -> Path | None:
    """The checkpoint to resume a fold from: ``latest`` (None when the fold has none yet) or a given folder."""
    if resume is None:
        return None
    if resume == "latest":
        found = checkpoint_dirs(fold_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / TRAINER_STATE).is_file():
        raise ConfigError(f"not a checkpoint of scripts/train.py (no {TRAINER_STATE})", path)
    if path.resolve().parent.parent != fold_dir.resolve():
        return None  # a checkpoint of another fold: this fold starts fresh.
    return path


def save_final_model(accelerator: Any, model: Any, directory: Path, record: dict[str, Any]) -> None:
    """`save_pretrained` of the unwrapped model (LoRA merged into the weights) with its processor and record."""
    from .features import save_processor

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if hasattr(unwrapped, "merge_and_unload"):
        unwrapped = unwrapped.merge_and_unload()
    if accelerator.is_main_process:
        if directory.exists():
            shutil.rmtree(directory)
        unwrapped.save_pretrained(str(directory), safe_serialization=True)
        save_processor(unwrapped, directory, record.get("features", {}))
        write_json(directory / TRAINING_RECORD, record)
    accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Train and evaluate per ``--protocol``; returns the all_results dict (None on ``--stop_after_steps``)."""
    model_args, data_args, training_args = parse_args(argv)
    return run(model_args, data_args, training_args)


def run(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
        ) -> dict[str, Any] | None:
    """The body of `main` for already-parsed arguments."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    from .features import column, prepare_dataset

    started = time.perf_counter()
    output_dir = Path(training_args.output_dir)
    # `accelerate launch --multi_gpu` on a machine without GPUs starts the processes but Accelerate only joins them
    # (MULTI_CPU over gloo) when asked for the CPU.
    on_cpu_cluster = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=on_cpu_cluster,
        gradient_accumulation_steps=training_args.gradient_accumulation_steps,
        mixed_precision=resolve_mixed_precision(training_args.mixed_precision),
        log_with=resolve_report_to(training_args.report_to),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True,
                                                  data_seed=training_args.seed),
    )
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for size_name in ("batch_size", "eval_batch_size"):
        size = getattr(training_args, size_name) or training_args.batch_size
        if size % accelerator.num_processes:
            raise ConfigError(f"--{size_name} {size} must be divisible by the {accelerator.num_processes} processes "
                              f"(it is the global batch, split over them)")

    prepared = prepare_dataset(model_args, data_args, accelerator)
    dataset, labels, feature_spec = prepared.dataset, prepared.labels, prepared.feature_spec
    folds = build_folds(dataset, data_args)
    fold_ids = selected_folds(len(folds), data_args)
    fingerprint = run_fingerprint(model_args, data_args, training_args)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "run_config.json", {"model": asdict(model_args), "data": asdict(data_args),
                                                    "training": asdict(training_args), "fingerprint": fingerprint,
                                                    "num_processes": accelerator.num_processes})
    accelerator.init_trackers("facet_vlm", config=_flat_config(model_args, data_args, training_args))
    accelerator.print(f"{len(dataset)} samples, {len(set(dataset['subject']))} subjects, labels {list(labels)}; "
                      f"protocol {data_args.protocol}: {len(folds)} folds, running {fold_ids}")

    subjects_column = np.asarray(column(dataset, "subject"))
    fold_results, histories, last_model = {}, {}, None
    final_record: dict[str, Any] = {}
    for index in fold_ids:
        fold_name = f"fold_{index}"
        fold_dir = output_dir / fold_name
        train_subjects, test_subjects = folds[index]
        finished = fold_dir / FOLD_RESULTS
        if finished.is_file():
            saved = json.loads(finished.read_text(encoding="utf-8"))
            if saved.get("fingerprint") == fingerprint:
                accelerator.print(f"{fold_name}: already finished, reusing {finished}")
                fold_results[index], histories[fold_name] = saved["metrics"], saved["history"]
                continue
            accelerator.print(f"{fold_name}: {finished} is from different arguments; training again")
        train_rows = np.flatnonzero(np.isin(subjects_column, train_subjects))
        test_rows = np.flatnonzero(np.isin(subjects_column, test_subjects))
        outcome = train_fold(accelerator, fold_name, fold_dir, dataset.select(train_rows), dataset.select(test_rows),
                             prepared, model_args, training_args)
        if outcome.stopped:
            accelerator.end_training()
            return None
        record = {"fold": index, "train_subjects": train_subjects, "test_subjects": test_subjects,
                  "protocol": data_args.protocol, "label_set": prepared.label_set_name, "labels": list(labels),
                  "features": feature_spec,
                  "weights_sha256": weights_digest(accelerator.unwrap_model(outcome.model))}
        if training_args.final_model == "last_fold" and index == fold_ids[-1]:
            final_record = {**record, "model": model_args.model, "dataset": data_args.dataset}
            save_final_model(accelerator, outcome.model, output_dir / "model", final_record)
        write_json(fold_dir / f"rank_{accelerator.process_index}_weights.json",
                   {"weights_sha256": record["weights_sha256"]})
        if accelerator.is_main_process:
            write_json(finished, {**record, "metrics": outcome.results, "history": outcome.history,
                                  "fingerprint": fingerprint})
            if not training_args.keep_checkpoints:
                shutil.rmtree(fold_dir / "checkpoints", ignore_errors=True)
        fold_results[index], histories[fold_name] = outcome.results, outcome.history
        last_model = outcome.model
        accelerator.free_memory()
        accelerator.wait_for_everyone()

    if training_args.final_model == "all_data":
        all_dir = output_dir / "all_data"
        subjects = sorted(set(column(dataset, "subject")))
        outcome = train_fold(accelerator, "all_data", all_dir, dataset, None, prepared, model_args, training_args)
        if outcome.stopped:
            accelerator.end_training()
            return None
        final_record = {"fold": None, "train_subjects": subjects, "test_subjects": [],
                        "protocol": "all subjects", "label_set": prepared.label_set_name, "labels": list(labels),
                        "features": feature_spec,
                        "model": model_args.model, "dataset": data_args.dataset}
        save_final_model(accelerator, outcome.model, output_dir / "model", final_record)
        if accelerator.is_main_process and not training_args.keep_checkpoints:
            shutil.rmtree(all_dir / "checkpoints", ignore_errors=True)
        accelerator.free_memory()
    del last_model

    summary = summarize_folds([fold_results[i] for i in fold_ids])
    all_results = {
        **{key: summary[key] for key in summary if key != "confusion_matrix"},
        "fold_ids": fold_ids,
        "fold_results": [{"fold": i, **fold_results[i]} for i in fold_ids],
        "confusion_matrix": summary.get("confusion_matrix"),
        "protocol": data_args.protocol,
        "num_protocol_folds": len(folds),
        "label_set": prepared.label_set_name,
        "labels": list(labels),
        "model": model_args.model,
        "dataset": data_args.dataset,
        "num_samples": len(dataset),
        "num_subjects": len(set(column(dataset, "subject"))),
        "num_processes": accelerator.num_processes,
        "final_model": training_args.final_model,
        "runtime_s": round(time.perf_counter() - started, 1),
    }
    if accelerator.is_main_process:
        write_json(output_dir / "all_results.json", all_results)
        title = f"{model_args.model} on {data_args.dataset}, protocol {data_args.protocol} ({len(labels)} classes)"
        table = format_results_table(summary, fold_ids, title=title)
        (output_dir / "results.txt").write_text(table + "\n", encoding="utf-8")
        if summary.get("confusion_matrix") is not None:
            plot_confusion_matrix(summary["confusion_matrix"], labels, output_dir / "confusion_matrix.png",
                                  title=f"{model_args.model}: folds {fold_ids} summed")
        plot_curves(histories, output_dir / "curves.png")
        print("\n" + table + f"\n\nresults: {output_dir / 'all_results.json'}  ({all_results['runtime_s']} s)")
    accelerator.end_training()
    return all_results
