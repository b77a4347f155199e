"""The training loop of one fold: loaders, optimizer and schedule through `accelerator.prepare`, gradient-accumulated
steps, per-epoch records and checkpoints (`facet_vlm.training.checkpoints`), the score on the fold's test subjects.

Reproducibility: every fold starts from ``set_seed(seed)``, batches are drawn by a seedable sampler (order =
f(seed, epoch)), and ``--batch_size`` is the global batch split across processes (``split_batches``), so one process
and two processes see the same batches; training drops the last incomplete batch so that every process gets an
equal share. A resumed fold restores model, optimizer, scheduler, RNG and the running epoch loss, and skips the
batches already done with `accelerator.skip_first_batches`; it ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..arguments import LoopArguments, ModelArguments
from ..data.folds import column
from ..data.prepare import PreparedData
from ..errors import ConfigError
from ..evaluation import (
    compute_metrics,
    evaluate_model,
)
from ..progress import progress_bar
from .build import build_model
from .checkpoints import TRAINER_STATE, check_resume_arguments, load_checkpoint, resume_path, save_checkpoint

logger = logging.getLogger(__name__)


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
    subject_index, config_overrides = training_subject_index(train_dataset, prepared)
    model = build_model(model_args, prepared.labels, config_overrides)
    run = prepare_fold(accelerator, fold_name, fold_dir, model, train_dataset, test_dataset, prepared, loop_args,
                       arguments, subject_index)
    if run_epochs(accelerator, run, prepared, loop_args):
        return FoldOutcome(None, run.model, run.state["history"], stopped=True)
    results = None
    if run.test_loader is not None:
        scored = evaluate_model(accelerator, run.model, run.test_loader, prepared.logits_key, prepared.target_index)
        results = compute_metrics(scored["predictions"], scored["references"], num_labels=len(prepared.labels))
    return FoldOutcome(results, run.model, run.state["history"])



def training_subject_index(train_dataset: Any, prepared: PreparedData) -> tuple[dict[Any, int] | None, dict[str, Any]]:
    """Subject-aware models: each training subject's index (adapters exist for this fold's training subjects only)
    and the config override that sizes the adapters; (None, {}) for the other models."""
    if not prepared.subject_adapters:
        return None, {}
    subjects = sorted(set(column(train_dataset, "subject")))
    return {subject: index for index, subject in enumerate(subjects)}, {"num_train_subjects": len(subjects)}


class SubjectIdCollator:
    """The training collate function of a subject-aware model: every row gets ``subject_ids``, its subject's index
    among the fold's training subjects, before `collate_fn` makes the batch.

    Added per batch, not as a column: adding a column to a fold's selection of rows makes `datasets` first write a
    copy of those rows next to the cached inputs (a 160 MB file per fold and run for the small physio config, never
    reused or removed)."""

    def __init__(self, collate_fn: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
                 subject_index: dict[Any, int]):
        self.collate_fn = collate_fn
        self.subject_index = subject_index

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.collate_fn([{**row, "subject_ids": self.subject_index[row["subject"]]} for row in rows])


def prepare_fold(accelerator: Any, fold_name: str, fold_dir: Path, model: Any, train_dataset: Any,
                 test_dataset: Any | None, prepared: PreparedData, loop_args: LoopArguments,
                 arguments: dict[str, Any] | None = None, subject_index: dict[Any, int] | None = None) -> FoldRun:
    """Loaders, optimizer and schedule of a fold, passed through `accelerator.prepare`; the state of a resume.
    `subject_index` (subject-aware models) gives the training batches their ``subject_ids``."""
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    # Own generators: iterating a DataLoader otherwise draws a worker seed from the global RNG, which would shift
    # dropout after a resume (the resumed run iterates a fresh, skipping loader).
    def loader(dataset: Any, batch_size: int, train: bool) -> Any:
        collate_fn = (prepared.train_collate_fn or prepared.collate_fn) if train else prepared.collate_fn
        if train and subject_index is not None:
            collate_fn = SubjectIdCollator(collate_fn, subject_index)
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
    resume = resume_path(loop_args.resume_from_checkpoint, fold_dir)
    if resume is not None:
        check_resume_arguments(resume, run.arguments, loop_args.allow_changed_args)
        load_checkpoint(accelerator, resume)
        run.state = json.loads((resume / TRAINER_STATE).read_text(encoding="utf-8"))
        logger.info("%s: resumed from %s at step %d", fold_name, resume, run.state["completed_steps"])
    return run



def run_epochs(accelerator: Any, run: FoldRun, prepared: PreparedData, loop_args: LoopArguments) -> bool:
    """The training loop of a fold, from where its state says; True when ``--stop_after_steps`` stopped it."""
    progress = progress_bar(total=run.total_steps, initial=run.state["completed_steps"], desc=f"{run.name} train",
                            enabled=accelerator.is_local_main_process, dynamic_ncols=True)
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
