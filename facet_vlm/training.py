"""Training and subject-independent evaluation of every model of the library with Hugging Face Accelerate.

`main(argv)` is what ``scripts/train.py`` and the ``facet-vlm-train`` console script run::

    accelerate launch scripts/train.py --config facet_vlm/configs/facet_vlm_synthetic_small.json
    OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 scripts/train.py --model couplefer ...

The run reads top to bottom, one module per stage:
arguments (`facet_vlm.arguments`) → data-set index and cached model inputs (`facet_vlm.data.prepare`) → folds
(`facet_vlm.data.folds`) → per fold: the model (`facet_vlm.registry`; optionally LoRA through PEFT) →
`accelerator.prepare` → epochs of gradient-accumulated, mixed-precision steps with `save_state` checkpoints → scoring
(`facet_vlm.evaluation.evaluate_model`, `gather_for_metrics`) → ``fold_<i>/results.json`` written the moment the fold
ends (a rerun skips finished folds). At the end: ``all_results.json`` (mean ± std and per-fold metrics),
``results.txt`` (the table), ``confusion_matrix.png`` (summed over folds), ``curves.png`` (loss and test accuracy per
epoch) and the final model with its processor in ``model/`` (the model of the last fold run, or one retrained on every
subject with ``--final_model all_data``). With ``--peft lora --save_adapters_only`` ``model/`` is a PEFT adapter
folder whose ``base_model_name_or_path`` is ``--init_from`` or the untrained base model saved in ``base_model/``.
``all_results.json`` also holds ``pooled``: UF1, UAR and accuracy of the predictions pooled over the folds run (the
micro-expression convention of 4DME under ``--protocol loso``; `facet_vlm.evaluation.pooled_metrics`).
Sequence data sets (``--dataset bu4dfe:ROOT | bp4d:ROOT | 4dme:ROOT``) are prepared by
`facet_vlm.data.prepare.prepare_sequences`; BP4D as a cross-dataset test set is scored with
``scripts/evaluate_model.py MODEL --dataset bp4d:ROOT`` (`facet_vlm.evaluation.evaluate_saved_model`).

Reproducibility: every fold starts from ``set_seed(seed)``, batches are drawn by a seedable sampler
(order = f(seed, epoch)), and ``--batch_size`` is the global batch split across processes (``split_batches``), so
one process and two processes see the same batches; training drops the last incomplete batch so that every
process gets an equal share. A resumed run restores model, optimizer, scheduler, RNG and the running epoch loss,
and skips the batches already done with `accelerator.skip_first_batches`; it ends where an uninterrupted run ends.
No model selection happens on the test fold: the per-epoch test accuracy is only plotted, the reported model is the
one after the last epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .arguments import DataArguments, LoopArguments, ModelArguments, parse_args
from .data.folds import build_folds, column, limit_train_subjects, select_folds
from .data.prepare import PreparedData, prepare_dataset, save_processor
from .errors import ConfigError, FormatError
from .evaluation import (
    ALL_RESULTS,
    FOLD_RESULTS,
    RESULTS_TABLE,
    TRAINING_RECORD,
    compute_metrics,
    evaluate_model,
    format_results_table,
    plot_confusion_matrix,
    plot_curves,
    pooled_metrics,
    summarize_folds,
    write_json,
)
from .registry import check_model_files, model_entry

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
#: The run-defining arguments (`run_arguments`) saved with every checkpoint and compared on resume.
CHECKPOINT_ARGUMENTS = "run_arguments.json"
#: Folder of the untrained base model that an adapter-only ``model/`` names (random-init runs only).
BASE_MODEL_DIR = "base_model"


# ----------------------------------------------------------------------------------------------------- model
def build_model(model_args: ModelArguments, labels: Sequence[str], config_overrides: dict | None = None) -> Any:
    """The model to train: from a saved model dir, from a pretrained CLIP, or randomly initialised from a config
    (`facet_vlm.registry` names the classes); wrapped with LoRA when ``--peft lora``.

    ``config_overrides`` (set by the run, e.g. the number of training subjects of a fold) win over
    ``--model_config``.
    """
    model = build_base_model(model_args, labels, config_overrides)
    model.set_attn_implementation(model_args.attn_implementation)
    if model_args.gradient_checkpointing:
        if not model.supports_gradient_checkpointing:
            raise ConfigError(f"--gradient_checkpointing: {type(model).__name__} does not support it (batch-norm "
                              f"statistics would be updated twice)")
        model.activation_checkpointing_enable()
    return apply_lora(model, model_args) if model_args.peft == "lora" else model


def build_base_model(model_args: ModelArguments, labels: Sequence[str], config_overrides: dict | None = None) -> Any:
    """`build_model` without PEFT."""
    entry = model_entry(model_args.model)
    overrides = {**(model_args.model_config or {}), **(config_overrides or {})}
    label_kwargs = {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}
    init_from = model_args.init_from
    if init_from and (Path(init_from) / "config.json").is_file() and _is_our_model(Path(init_from), entry):
        try:
            model = entry.model_class.from_pretrained(init_from, **overrides)
        except RuntimeError as error:  # transformers' report of weights whose shape the overrides changed
            if "ignore_mismatched_sizes" not in str(error):
                raise
            raise ConfigError(f"--model_config {json.dumps(overrides)} changes the shape of weights of the saved "
                              "model; keep its architecture (drop those keys, or use the config it was trained "
                              "with)", init_from) from error
        if class_names(model.config) != list(labels):
            adapt_label_set(model, labels, model_args.keep_known_classes, init_from)
        return model
    if init_from:
        try:
            return entry.from_pretrained_backbone(init_from, labels, overrides)
        except OSError as error:  # not a CLIP folder, not on the Hub, not cached (offline)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"--init_from: cannot load a pretrained CLIP: {reason}", init_from) from error
    config = entry.config_class(**{**overrides, **label_kwargs, "num_labels": len(labels)})
    return entry.model_class(config)


def class_names(config: Any) -> list[str]:
    """The classes of a model config, in class-index order."""
    return [config.id2label[index] for index in range(len(config.id2label))]


def adapt_label_set(model: Any, labels: Sequence[str], keep_known_classes: bool, source: str) -> None:
    """Fine-tuning a saved model on other classes: keep its towers, rebuild its class heads (the model's
    ``set_labels``: FACET-VLM's class prompts, CoupleFER's classifiers and prototypes, AFNet-M's classifier) and log
    which weights were reused and which were initialised anew."""
    if not hasattr(model, "set_labels"):
        raise ConfigError(f"the saved {type(model).__name__} has classes {class_names(model.config)}, the data "
                          f"{list(labels)}, and it cannot change its classes; train with a matching --label_set",
                          source)
    saved_labels = class_names(model.config)
    before = {name: (tensor.data_ptr(), tuple(tensor.shape)) for name, tensor in model.state_dict().items()}
    model.set_labels(list(labels), keep_known_classes=keep_known_classes)
    after = model.state_dict()
    rebuilt = sorted(name for name, tensor in after.items()
                     if before.get(name) != (tensor.data_ptr(), tuple(tensor.shape)))
    known = [name for name in labels if name in saved_labels] if keep_known_classes else []
    logger.info("--init_from %s: the saved classes %s become %s; %d of %d weight tensors reused as saved; "
                "initialised anew for the new classes: %s%s", source, saved_labels, list(labels),
                len(after) - len(rebuilt), len(after), ", ".join(rebuilt) or "none (no weight depends on the classes; "
                "the class text embeddings are encoded from the new classes' prompts by the loaded text tower)",
                f" (the rows of {known}, classes the saved model knows, copied)" if rebuilt and known else "")


def _keeps_classes(init_from: str, labels: Sequence[str]) -> bool:
    """True unless ``init_from`` is a saved model (``config.json``) with other classes than `labels`."""
    if not (Path(init_from) / "config.json").is_file():
        return True
    saved = check_model_files(init_from).get("id2label") or {}
    return [saved.get(str(index)) for index in range(len(saved))] == list(labels)


def _is_our_model(path: Path, entry: Any) -> bool:
    return check_model_files(path).get("model_type") == entry.config_class.model_type


#: Parameter-name parts of the pretrained CLIP towers: with LoRA they get adapters, everything else trains in full.
PRETRAINED_TOWERS = ("vision_model", "text_model", "image_encoder", "visual_projection", "text_projection")


def lora_config(model: torch.nn.Module, model_args: ModelArguments) -> Any:
    """The `peft.LoraConfig` of a run: LoRA on ``--lora_target_modules`` inside the pretrained towers, and the
    modules outside them (CVSA, MTGF, point branch, CouPle, heads: they start from random weights) in
    ``modules_to_save``, i.e. trained in full and saved with the adapter. A model that declares its own recipe
    (``peft_config_kwargs``, the physio-prompt model) gets that recipe instead."""
    from peft import LoraConfig

    if hasattr(model, "peft_config_kwargs"):
        return LoraConfig(**{**model.peft_config_kwargs(), "lora_dropout": model_args.lora_dropout})
    tower_linears = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
                     and any(tower in name.split(".") for tower in PRETRAINED_TOWERS)}
    targets = list(model_args.lora_target_modules)
    if not any(name.rsplit(".", 1)[-1] in targets for name in tower_linears):
        names = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                        if isinstance(module, torch.nn.Linear)})
        raise ConfigError(f"--lora_target_modules {targets} match no nn.Linear of the pretrained towers of "
                          f"{type(model).__name__}; linear layer names: {names}")
    towers = "|".join(PRETRAINED_TOWERS)
    pattern = rf"(.*\.)?({towers})\..*\.({'|'.join(targets)})"
    return LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                      target_modules=pattern, modules_to_save=modules_outside_towers(model))


def modules_outside_towers(model: torch.nn.Module) -> list[str]:
    """Full names of the largest submodules that hold parameters and no pretrained-tower parameter (items of a
    `ModuleList`/`ModuleDict` count one by one), i.e. PEFT's ``modules_to_save``."""
    def holds_tower(prefix: str) -> bool:
        return any(name.startswith(prefix) and any(t in name.split(".") for t in PRETRAINED_TOWERS)
                   for name, _ in model.named_parameters())

    found, pending = [], [("", model)]
    while pending:
        prefix, module = pending.pop()
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            if child_name in PRETRAINED_TOWERS or not any(True for _ in child.parameters()):
                continue
            # PEFT wraps modules, not containers: the items of a ModuleList/ModuleDict are saved one by one.
            if holds_tower(name + ".") or isinstance(child, torch.nn.ModuleList | torch.nn.ModuleDict):
                pending.append((name + ".", child))
            else:
                found.append(name)
    return sorted(found)


def apply_lora(model: torch.nn.Module, model_args: ModelArguments) -> torch.nn.Module:
    """`peft.get_peft_model` with `lora_config`: adapters train, the towers stay frozen, new modules train in full."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, model_args))


# ----------------------------------------------------------------------------------------------------- one fold
@dataclass
class FoldOutcome:
    """What `train_fold` hands back: metrics (None when stopped early or when there is no test set) and the model."""

    results: dict[str, Any] | None
    model: Any
    history: list[dict[str, float]]
    stopped: bool = False


@dataclass
class FoldRun:
    """Everything the loop of one fold works on, after `accelerator.prepare`."""

    name: str
    directory: Path
    model: Any
    optimizer: Any
    scheduler: Any
    train_loader: Any
    test_loader: Any | None
    steps_per_epoch: int
    total_steps: int
    num_epochs: int
    state: dict[str, Any] = field(default_factory=lambda: {"completed_steps": 0, "epoch_loss_sum": 0.0,
                                                           "epoch_loss_count": 0, "history": []})
    arguments: dict[str, Any] = field(default_factory=dict)


def train_fold(accelerator: Any, fold_name: str, fold_dir: Path, train_dataset: Any, test_dataset: Any | None,
               prepared: PreparedData, model_args: ModelArguments, loop_args: LoopArguments,
               arguments: dict[str, Any] | None = None) -> FoldOutcome:
    """Train one model on `train_dataset` and score it on `test_dataset`; resumable from its checkpoints, which
    store `arguments` (`run_arguments`) to compare on resume."""
    from accelerate.utils import set_seed

    set_seed(loop_args.seed)
    train_dataset, config_overrides = with_subject_ids(train_dataset, prepared)
    model = build_model(model_args, prepared.labels, config_overrides)
    run = prepare_fold(accelerator, fold_name, fold_dir, model, train_dataset, test_dataset, prepared, loop_args,
                       arguments)
    if run_epochs(accelerator, run, prepared, loop_args):
        return FoldOutcome(None, run.model, run.state["history"], stopped=True)
    results = None
    if run.test_loader is not None:
        scored = evaluate_model(accelerator, run.model, run.test_loader, prepared.logits_key, prepared.target_index)
        results = compute_metrics(scored["predictions"], scored["references"], num_labels=len(prepared.labels))
    return FoldOutcome(results, run.model, run.state["history"])


def with_subject_ids(train_dataset: Any, prepared: PreparedData) -> tuple[Any, dict[str, Any]]:
    """Subject-aware models get a ``subject_ids`` column (adapters exist for this fold's training subjects only)."""
    if not prepared.subject_adapters:
        return train_dataset, {}
    subjects = sorted(set(column(train_dataset, "subject")))
    ids = [subjects.index(subject) for subject in column(train_dataset, "subject")]
    return train_dataset.add_column("subject_ids", ids), {"num_train_subjects": len(subjects)}


def prepare_fold(accelerator: Any, fold_name: str, fold_dir: Path, model: Any, train_dataset: Any,
                 test_dataset: Any | None, prepared: PreparedData, loop_args: LoopArguments,
                 arguments: dict[str, Any] | None = None) -> FoldRun:
    """Loaders, optimizer and schedule of a fold, passed through `accelerator.prepare`; the state of a resume."""
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    # Own generators: iterating a DataLoader otherwise draws a worker seed from the global RNG, which would shift
    # dropout after a resume (the resumed run iterates a fresh, skipping loader).
    def loader(dataset: Any, batch_size: int, train: bool) -> Any:
        collate_fn = (prepared.train_collate_fn or prepared.collate_fn) if train else prepared.collate_fn
        return DataLoader(dataset, batch_size=batch_size, shuffle=train,
                          drop_last=train and len(dataset) >= batch_size, collate_fn=collate_fn,
                          num_workers=loop_args.dataloader_num_workers,
                          generator=torch.Generator().manual_seed(loop_args.seed))

    train_loader = loader(train_dataset, loop_args.batch_size, True)
    if len(train_loader) == 0:
        raise ConfigError(f"{fold_name}: no training samples")
    steps_per_epoch = math.ceil(len(train_loader) / loop_args.gradient_accumulation_steps)
    total_steps = loop_args.max_steps or steps_per_epoch * loop_args.num_epochs
    optimizer = make_optimizer(model, loop_args)
    scheduler = get_scheduler(loop_args.lr_scheduler_type, optimizer=optimizer,
                              num_warmup_steps=int(loop_args.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    test_loader = None
    if test_dataset is not None and len(test_dataset):
        test_loader = accelerator.prepare(loader(test_dataset, loop_args.eval_batch_size or loop_args.batch_size,
                                                 False))
    run = FoldRun(fold_name, fold_dir, model, optimizer, scheduler, train_loader, test_loader, steps_per_epoch,
                  total_steps, math.ceil(total_steps / steps_per_epoch), arguments=dict(arguments or {}))
    resume = _resume_path(loop_args.resume_from_checkpoint, fold_dir)
    if resume is not None:
        check_resume_arguments(resume, run.arguments, loop_args.allow_changed_args)
        load_checkpoint(accelerator, resume)
        run.state = json.loads((resume / TRAINER_STATE).read_text(encoding="utf-8"))
        logger.info("%s: resumed from %s at step %d", fold_name, resume, run.state["completed_steps"])
    return run


def run_epochs(accelerator: Any, run: FoldRun, prepared: PreparedData, loop_args: LoopArguments) -> bool:
    """The training loop of a fold, from where its state says; True when ``--stop_after_steps`` stopped it."""
    from tqdm.auto import tqdm

    progress = tqdm(total=run.total_steps, initial=run.state["completed_steps"], desc=f"{run.name} train",
                    disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    run.model.train()
    try:
        for epoch in range(run.state["completed_steps"] // run.steps_per_epoch, run.num_epochs):
            run.train_loader.set_epoch(epoch)
            if hasattr(prepared.train_collate_fn, "set_epoch"):  # the augmentation's draws (FeatureCollator)
                prepared.train_collate_fn.set_epoch(epoch, loop_args.seed)
            loader = run.train_loader
            done_in_epoch = run.state["completed_steps"] - epoch * run.steps_per_epoch
            if done_in_epoch > 0:
                loader = accelerator.skip_first_batches(run.train_loader,
                                                        done_in_epoch * loop_args.gradient_accumulation_steps)
            for batch in loader:
                batch_loss = train_step(accelerator, run, batch, loop_args)
                run.state["epoch_loss_sum"] += batch_loss
                run.state["epoch_loss_count"] += 1
                if not accelerator.sync_gradients:
                    continue
                progress.update(1)
                if progress.n % loop_args.logging_steps == 0:
                    progress.set_postfix(loss=f"{batch_loss:.4f}")
                outcome = after_optimizer_step(accelerator, run, prepared, loop_args, epoch, batch_loss)
                if outcome == "stop":
                    return True
                if outcome == "done":
                    return False
    finally:
        progress.close()
    return False


def train_step(accelerator: Any, run: FoldRun, batch: dict[str, torch.Tensor], loop_args: LoopArguments) -> float:
    """One forward/backward (and an optimizer step at the end of an accumulation); the batch loss over processes."""
    with accelerator.accumulate(run.model):
        loss = run.model(**batch).loss
        accelerator.backward(loss)
        if accelerator.sync_gradients and loop_args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(run.model.parameters(), loop_args.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad()
    return accelerator.reduce(loss.detach().float(), reduction="mean").item()


def after_optimizer_step(accelerator: Any, run: FoldRun, prepared: PreparedData, loop_args: LoopArguments,
                         epoch: int, batch_loss: float) -> str | None:
    """Logging, the end-of-epoch record, checkpoints and stopping after an optimizer step: "stop", "done" or None."""
    state = run.state
    state["completed_steps"] += 1
    step = state["completed_steps"]
    if step % loop_args.logging_steps == 0:
        accelerator.log({f"{run.name}/train_loss": batch_loss,
                         f"{run.name}/learning_rate": run.scheduler.get_last_lr()[0]}, step=step)
    epoch_ends = step % run.steps_per_epoch == 0 or step == run.total_steps
    if epoch_ends:
        record = {"epoch": epoch + 1, "step": step,
                  "train_loss": state["epoch_loss_sum"] / max(state["epoch_loss_count"], 1)}
        if run.test_loader is not None and loop_args.eval_each_epoch:
            scored = evaluate_model(accelerator, run.model, run.test_loader, prepared.logits_key,
                                    prepared.target_index)
            record["eval_accuracy"] = float(np.mean(scored["predictions"] == scored["references"]))
        accelerator.log({f"{run.name}/{key}": value for key, value in record.items() if key != "step"}, step=step)
        state["history"].append(record)
        state["epoch_loss_sum"], state["epoch_loss_count"] = 0.0, 0
    every = loop_args.checkpointing_steps
    if ((every == "epoch" and epoch_ends) or (every not in (None, "epoch") and step % int(every) == 0)) \
            and step < run.total_steps:
        save_checkpoint(accelerator, run.directory, state, loop_args.checkpoints_total_limit, run.arguments)
    if loop_args.stop_after_steps is not None and step >= loop_args.stop_after_steps:
        logger.warning("%s: stopped after step %d (--stop_after_steps)", run.name, step)
        return "stop"
    return "done" if step >= run.total_steps else None


# ----------------------------------------------------------------------------------------------------- saving
def save_final_model(accelerator: Any, model: Any, directory: Path, record: dict[str, Any],
                     adapters_only: bool = False) -> None:
    """Save the trained model with its processor and training record.

    By default `save_pretrained` of the unwrapped model with LoRA merged into the weights; with `adapters_only`
    (a PEFT model) the PEFT adapter folder (``adapter_config.json`` naming the base model, adapter weights and the
    ``modules_to_save``), which `facet_vlm.pipelines.load_model` and ``PeftModel.from_pretrained`` load on the base.
    """
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    is_peft = hasattr(unwrapped, "merge_and_unload")
    if is_peft and not adapters_only:
        unwrapped = unwrapped.merge_and_unload()
    if accelerator.is_main_process:
        if directory.exists():
            shutil.rmtree(directory)
        unwrapped.save_pretrained(str(directory), safe_serialization=True)
        save_processor(unwrapped.get_base_model() if is_peft and adapters_only else unwrapped, directory,
                       record.get("features", {}))
        write_json(directory / TRAINING_RECORD, record)
    accelerator.wait_for_everyone()


def save_base_model(accelerator: Any, model_args: ModelArguments, prepared: PreparedData, loop_args: LoopArguments
                    ) -> str:
    """Where an adapter-only ``model/`` finds its base: ``--init_from``, or the model every fold starts from (built
    from the same seed and config, so it holds exactly the weights the adapters were trained on) saved once into
    ``base_model/`` with its processor: the untrained model, or ``--init_from`` with the class heads rebuilt for
    other classes (`adapt_label_set`)."""
    from accelerate.utils import set_seed

    if model_args.init_from and _keeps_classes(model_args.init_from, prepared.labels):
        return model_args.init_from
    if prepared.subject_adapters:
        raise ConfigError(f"--save_adapters_only with {model_args.model}: its base model depends on the training "
                          "subjects of a fold; save a base model first and pass it as --init_from")
    directory = Path(loop_args.output_dir) / BASE_MODEL_DIR
    if accelerator.is_main_process:
        set_seed(loop_args.seed)
        base = build_base_model(model_args, prepared.labels)
        base.save_pretrained(str(directory), safe_serialization=True)
        save_processor(base, directory, prepared.feature_spec)
    accelerator.wait_for_everyone()
    return str(directory.resolve())


# ----------------------------------------------------------------------------------------------------- the run
def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Train and evaluate per ``--protocol``; returns the all_results dict (None on ``--stop_after_steps``)."""
    model_args, data_args, loop_args = parse_args(argv, description=__doc__.split("\n\n")[0])
    return run(model_args, data_args, loop_args)


def make_accelerator(loop_args: LoopArguments) -> Any:
    """The run's `Accelerator`: split global batches, a seedable sampler, mixed precision and trackers per args."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    output_dir = Path(loop_args.output_dir)
    # `accelerate launch --multi_gpu` on a machine without GPUs starts the processes but Accelerate only joins them
    # (MULTI_CPU over gloo) when asked for the CPU.
    on_cpu_cluster = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    if loop_args.num_threads is not None:
        torch.set_num_threads(loop_args.num_threads)
    accelerator = Accelerator(
        dynamo_backend="inductor" if loop_args.torch_compile else "no",
        cpu=on_cpu_cluster,
        gradient_accumulation_steps=loop_args.gradient_accumulation_steps,
        mixed_precision=resolve_mixed_precision(loop_args.mixed_precision),
        log_with=resolve_report_to(loop_args.report_to),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True,
                                                  data_seed=loop_args.seed),
    )
    for size_name in ("batch_size", "eval_batch_size"):
        size = getattr(loop_args, size_name) or loop_args.batch_size
        if size % accelerator.num_processes:
            raise ConfigError(f"--{size_name} {size} must be divisible by the {accelerator.num_processes} processes "
                              f"(it is the global batch, split over them)")
    return accelerator


def run(model_args: ModelArguments, data_args: DataArguments, loop_args: LoopArguments) -> dict[str, Any] | None:
    """The body of `main` for already-parsed arguments: data → folds → per-fold training → report → final model."""
    started = time.perf_counter()
    if loop_args.save_adapters_only and model_args.peft != "lora":
        raise ConfigError("--save_adapters_only saves PEFT adapters: it needs --peft lora")
    accelerator = make_accelerator(loop_args)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    output_dir = Path(loop_args.output_dir)
    prepared = prepare_dataset(model_args, data_args, accelerator)
    folds = limit_train_subjects(build_folds(prepared.dataset, data_args.protocol, data_args.folds,
                                             data_args.fold_seed, data_args.test_fraction),
                                 data_args.max_train_subjects, data_args.train_subjects_seed)
    fold_ids = select_folds(len(folds), data_args.fold, data_args.max_folds)
    fingerprint = run_fingerprint(model_args, data_args, loop_args)
    check_resumable(output_dir, fold_ids, run_arguments(model_args, data_args, loop_args), loop_args)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "run_config.json", {"model": asdict(model_args), "data": asdict(data_args),
                                                    "training": asdict(loop_args), "fingerprint": fingerprint,
                                                    "num_processes": accelerator.num_processes})
    accelerator.init_trackers("facet_vlm", config=_flat_config(model_args, data_args, loop_args))
    logger.info("%d samples, %d subjects, labels %s; protocol %s: %d folds, running %s", len(prepared.dataset),
                len(set(column(prepared.dataset, "subject"))), list(prepared.labels), data_args.protocol,
                len(folds), fold_ids)
    base_model = None
    if model_args.peft == "lora" and loop_args.save_adapters_only and loop_args.final_model != "none":
        base_model = save_base_model(accelerator, model_args, prepared, loop_args)
    context = RunContext(accelerator, prepared, model_args, data_args, loop_args, fingerprint, base_model)
    fold_results, histories = {}, {}
    for index in fold_ids:
        outcome = run_fold(context, index, folds[index], save_model=loop_args.final_model == "last_fold"
                           and index == fold_ids[-1])
        if outcome is None:
            accelerator.end_training()
            return None
        fold_results[index], histories[f"fold_{index}"] = outcome
    if loop_args.final_model == "all_data" and not train_on_all_subjects(context):
        accelerator.end_training()
        return None
    all_results = write_report(context, folds, fold_ids, fold_results, histories, time.perf_counter() - started)
    accelerator.end_training()
    return all_results


@dataclass
class RunContext:
    """What every fold of a run shares."""

    accelerator: Any
    prepared: PreparedData
    model_args: ModelArguments
    data_args: DataArguments
    loop_args: LoopArguments
    fingerprint: str
    base_model: str | None = None

    @property
    def output_dir(self) -> Path:
        return Path(self.loop_args.output_dir)

    @property
    def arguments(self) -> dict[str, Any]:
        """The run-defining arguments saved with every checkpoint (`run_arguments`)."""
        return run_arguments(self.model_args, self.data_args, self.loop_args)

    def final_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """The training record saved next to the final model."""
        return {**record, "model": self.model_args.model, "dataset": self.data_args.dataset,
                **({"base_model": self.base_model} if self.base_model else {})}

    def save_model(self, model: Any, record: dict[str, Any]) -> None:
        adapters_only = self.base_model is not None
        if adapters_only:
            self.accelerator.unwrap_model(model).peft_config["default"].base_model_name_or_path = self.base_model
        save_final_model(self.accelerator, model, self.output_dir / "model", self.final_record(record),
                         adapters_only=adapters_only)


def run_fold(context: RunContext, index: int, fold: tuple[list[str], list[str]], save_model: bool
             ) -> tuple[dict[str, Any], list[dict[str, float]]] | None:
    """Train and score one fold (or reuse its finished results); None when ``--stop_after_steps`` stopped it."""
    accelerator, prepared = context.accelerator, context.prepared
    fold_name, fold_dir = f"fold_{index}", context.output_dir / f"fold_{index}"
    train_subjects, test_subjects = fold
    finished = fold_dir / FOLD_RESULTS
    if finished.is_file():
        saved = json.loads(finished.read_text(encoding="utf-8"))
        if saved.get("fingerprint") == context.fingerprint:
            logger.info("%s: already finished, reusing %s", fold_name, finished)
            return saved["metrics"], saved["history"]
        logger.info("%s: %s is from different arguments; training again", fold_name, finished)
    subjects = np.asarray(column(prepared.dataset, "subject"))
    outcome = train_fold(accelerator, fold_name, fold_dir,
                         prepared.dataset.select(np.flatnonzero(np.isin(subjects, train_subjects))),
                         prepared.dataset.select(np.flatnonzero(np.isin(subjects, test_subjects))),
                         prepared, context.model_args, context.loop_args, context.arguments)
    if outcome.stopped:
        return None
    record = {"fold": index, "train_subjects": train_subjects, "test_subjects": test_subjects,
              "protocol": context.data_args.protocol, "label_set": prepared.label_set_name,
              "labels": list(prepared.labels), "features": prepared.feature_spec,
              "weights_sha256": weights_digest(accelerator.unwrap_model(outcome.model))}
    if save_model:
        context.save_model(outcome.model, record)
    write_json(fold_dir / f"rank_{accelerator.process_index}_weights.json",
               {"weights_sha256": record["weights_sha256"]})
    if accelerator.is_main_process:
        write_json(finished, {**record, "metrics": outcome.results, "history": outcome.history,
                              "fingerprint": context.fingerprint})
        if not context.loop_args.keep_checkpoints:
            shutil.rmtree(fold_dir / "checkpoints", ignore_errors=True)
    accelerator.free_memory()
    accelerator.wait_for_everyone()
    return outcome.results, outcome.history


def train_on_all_subjects(context: RunContext) -> bool:
    """``--final_model all_data``: train once more on every subject and save that model; False when stopped."""
    prepared, all_dir = context.prepared, context.output_dir / "all_data"
    outcome = train_fold(context.accelerator, "all_data", all_dir, prepared.dataset, None, prepared,
                         context.model_args, context.loop_args, context.arguments)
    if outcome.stopped:
        return False
    context.save_model(outcome.model, {
        "fold": None, "train_subjects": sorted(set(column(prepared.dataset, "subject"))), "test_subjects": [],
        "protocol": "all subjects", "label_set": prepared.label_set_name, "labels": list(prepared.labels),
        "features": prepared.feature_spec})
    if context.accelerator.is_main_process and not context.loop_args.keep_checkpoints:
        shutil.rmtree(all_dir / "checkpoints", ignore_errors=True)
    context.accelerator.free_memory()
    return True


def write_report(context: RunContext, folds: list, fold_ids: list[int], fold_results: dict[int, Any],
                 histories: dict[str, Any], runtime_s: float) -> dict[str, Any]:
    """``all_results.json``, ``results.txt``, ``confusion_matrix.png`` and ``curves.png``; returns all_results."""
    prepared, model_args, data_args = context.prepared, context.model_args, context.data_args
    labels, output_dir = list(prepared.labels), context.output_dir
    summary = summarize_folds([fold_results[i] for i in fold_ids])
    all_results = {
        **{key: summary[key] for key in summary if key != "confusion_matrix"},
        "fold_ids": fold_ids,
        "fold_results": [{"fold": i, **fold_results[i]} for i in fold_ids],
        "confusion_matrix": summary.get("confusion_matrix"),
        "protocol": data_args.protocol,
        "num_protocol_folds": len(folds),
        "label_set": prepared.label_set_name,
        "labels": labels,
        "model": model_args.model,
        "dataset": data_args.dataset,
        "num_samples": len(prepared.dataset),
        "num_subjects": len(set(column(prepared.dataset, "subject"))),
        "num_processes": context.accelerator.num_processes,
        "final_model": context.loop_args.final_model,
        "runtime_s": round(runtime_s, 1),
    }
    if summary.get("confusion_matrix") is not None:
        all_results["pooled"] = pooled_metrics(summary["confusion_matrix"])
    if context.accelerator.is_main_process:
        write_json(output_dir / ALL_RESULTS, all_results)
        title = f"{model_args.model} on {data_args.dataset}, protocol {data_args.protocol} ({len(labels)} classes)"
        table = format_results_table(summary, fold_ids, title=title)
        if "pooled" in all_results:
            pooled = all_results["pooled"]
            table += (f"\npooled over folds ({pooled['num_samples']} samples): UF1 {100 * pooled['uf1']:.2f}  "
                      f"UAR {100 * pooled['uar']:.2f}  accuracy {100 * pooled['accuracy']:.2f}")
        (output_dir / RESULTS_TABLE).write_text(table + "\n", encoding="utf-8")
        if summary.get("confusion_matrix") is not None:
            plot_confusion_matrix(summary["confusion_matrix"], labels, output_dir / "confusion_matrix.png",
                                  title=f"{model_args.model}: folds {fold_ids} summed")
        plot_curves(histories, output_dir / "curves.png")
        logger.info("\n%s\n\nresults: %s  (%s s)", table, output_dir / ALL_RESULTS, all_results["runtime_s"])
    return all_results


# ----------------------------------------------------------------------------------------------------- helpers
def make_optimizer(model: torch.nn.Module, loop_args: LoopArguments) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices only (no decay on biases, norms, embeddings of size 1-D)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": loop_args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=loop_args.learning_rate)


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


def save_checkpoint(accelerator: Any, fold_dir: Path, state: dict[str, Any], limit: int,
                    arguments: dict[str, Any] | None = None) -> Path:
    """`accelerator.save_state` + the loop's own state (and the run-defining `arguments`, compared on resume); keeps
    the newest `limit` checkpoints.

    The trainer state file is written last, so a checkpoint interrupted half-way is never picked up as 'latest'.
    """
    path = fold_dir / "checkpoints" / f"step_{state['completed_steps']:07d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        if arguments:
            write_json(path / CHECKPOINT_ARGUMENTS, arguments)
        write_json(path / TRAINER_STATE, state)
        for old in checkpoint_dirs(fold_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


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


#: Arguments that do not change a fold's result: left out of `run_arguments` (the fingerprint, the resume check).
NON_DEFINING_ARGUMENTS = frozenset({
    "output_dir", "fold", "max_folds", "num_proc", "cache_dir", "resume_from_checkpoint", "stop_after_steps",
    "report_to", "logging_steps", "checkpointing_steps", "checkpoints_total_limit", "keep_checkpoints",
    "dataloader_num_workers", "final_model", "save_adapters_only", "allow_changed_args",
    # speed and memory only: the same result within floating-point tolerance (tests/test_attention.py)
    "num_threads", "torch_compile", "attn_implementation", "gradient_checkpointing"})


def run_arguments(model_args: ModelArguments, data_args: DataArguments, loop_args: LoopArguments) -> dict[str, Any]:
    """Every argument that changes a fold's result (as JSON values): saved with checkpoints, hashed by
    `run_fingerprint`."""
    values = {key: value for argument in (model_args, data_args, loop_args)
              for key, value in asdict(argument).items() if key not in NON_DEFINING_ARGUMENTS}
    return json.loads(json.dumps(values, sort_keys=True, default=str))


def run_fingerprint(model_args: ModelArguments, data_args: DataArguments, loop_args: LoopArguments) -> str:
    """A hash of every argument that changes a fold's result; a finished fold is reused only when it matches."""
    values = run_arguments(model_args, data_args, loop_args)
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_resume_arguments(checkpoint: Path, arguments: dict[str, Any], allow_changed: bool) -> None:
    """Refuse to resume `checkpoint` with run-defining arguments other than the ones it was saved with (a changed
    learning rate or seed would silently make a run that neither configuration describes), unless
    ``--allow_changed_args``. Checkpoints written before the arguments were saved are resumed with a warning."""
    stored_file = checkpoint / CHECKPOINT_ARGUMENTS
    if not stored_file.is_file():
        logger.warning("%s: no %s, cannot check that the arguments match", checkpoint, CHECKPOINT_ARGUMENTS)
        return
    try:
        stored = json.loads(stored_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"not valid JSON ({error})", stored_file) from error
    changed = [f"{key} {stored.get(key)!r} -> {arguments.get(key)!r}" for key in sorted(set(stored) | set(arguments))
               if stored.get(key) != arguments.get(key)]
    if not changed:
        return
    if allow_changed:
        logger.warning("resuming %s with changed arguments (--allow_changed_args): %s", checkpoint, "; ".join(changed))
        return
    raise ConfigError(f"the checkpoint was saved with other run-defining arguments (checkpoint -> now): "
                      f"{'; '.join(changed)}; resume with the same arguments, or pass --allow_changed_args",
                      stored_file)


def check_resumable(output_dir: Path, fold_ids: Sequence[int], arguments: dict[str, Any],
                    loop_args: LoopArguments) -> None:
    """`check_resume_arguments` for every fold a ``--resume_from_checkpoint`` run would resume, before the run
    overwrites ``run_config.json`` (each fold checks again when it loads its checkpoint)."""
    if loop_args.resume_from_checkpoint is None:
        return
    for name in [f"fold_{index}" for index in fold_ids] + ["all_data"]:
        resume = _resume_path(loop_args.resume_from_checkpoint, output_dir / name)
        if resume is not None:
            check_resume_arguments(resume, arguments, loop_args.allow_changed_args)


def load_checkpoint(accelerator: Any, checkpoint: Path) -> None:
    """`accelerator.load_state`, with a truncated file or a model that no longer fits the checkpoint (architecture
    or ``--model_config`` changed) reported as a `FacetVLMError` naming the file."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(checkpoint.iterdir()):
        # torch.save writes zip archives; a truncated one has lost its central directory at the end.
        if file.suffix in (".bin", ".pkl", ".pt") and not zipfile.is_zipfile(file):
            raise FormatError("truncated or corrupt (not a complete torch archive); resume from another checkpoint",
                              file)
        if file.suffix == ".safetensors":
            try:
                with safe_open(str(file), framework="pt"):
                    pass
            except (SafetensorError, OSError) as error:
                raise FormatError(f"truncated or corrupt weights ({error})", file) from error
    try:
        accelerator.load_state(str(checkpoint))
    except (RuntimeError, ValueError, KeyError) as error:
        message = " ".join(line.strip() for line in str(error).strip().splitlines()[:4])
        if "state_dict" in message:
            weights = sorted(checkpoint.glob("model*.safetensors")) or sorted(checkpoint.glob("pytorch_model*.bin"))
            file = weights[0] if weights else checkpoint
        elif "group" in message or "optimizer" in message:
            file = checkpoint / "optimizer.bin"
        else:
            file = checkpoint
        raise ConfigError(f"does not fit the model being trained (architecture or --model_config changed?): "
                          f"{message}", file) from error


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


