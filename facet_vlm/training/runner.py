"""One training run from parsed arguments: data set index and cached inputs → folds → per fold the model, the loop
and its score → ``all_results.json``, ``results.txt``, plots → the final model with its processor and card data.

`main(argv)` is what ``scripts/train.py`` and the ``facet-vlm-train`` console script run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..arguments import DataArguments, LoopArguments, ModelArguments, parse_args
from ..data.folds import build_folds, column, limit_train_subjects, select_folds
from ..data.prepare import PreparedData, generate_data, prepare_dataset, save_processor
from ..errors import ConfigError
from ..evaluation import (
    ALL_RESULTS,
    FOLD_RESULTS,
    RESULTS_TABLE,
    TRAINING_RECORD,
    format_results_table,
    plot_confusion_matrix,
    plot_curves,
    pooled_metrics,
    summarize_folds,
    write_json,
)
from ..starting_weights import starting_weights_of, unwrap_base
from .build import build_base_model, keeps_classes
from .checkpoints import check_resumable, run_arguments, run_fingerprint, weights_digest
from .loop import train_fold

logger = logging.getLogger(__name__)


CHECKPOINT_ARGUMENTS = "run_arguments.json"
#: Folder of the untrained base model that an adapter-only ``model/`` names (random-init runs only).
BASE_MODEL_DIR = "base_model"


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
    """The body of `main` for already-parsed arguments: data generation (synthetic sets) → data → folds → per-fold
    training → report → final model."""
    started = time.perf_counter()
    if loop_args.save_adapters_only and model_args.peft != "lora":
        raise ConfigError("--save_adapters_only saves PEFT adapters: it needs --peft lora")
    accelerator = make_accelerator(loop_args)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    output_dir = Path(loop_args.output_dir)
    generate_data(model_args, data_args, accelerator)
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
        base_model = save_base_model(accelerator, model_args, prepared, loop_args,
                                     saved_model_subjects(prepared, folds[fold_ids[-1]][0], loop_args))
    context = RunContext(accelerator, prepared, model_args, data_args, loop_args, fingerprint, base_model)
    fold_results, histories = {}, {}
    for index in fold_ids:
        outcome = run_fold(context, index, folds[index],
                           save_model=loop_args.final_model in ("last_fold", "every_fold") and index == fold_ids[-1])
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
    #: What the towers started from (`facet_vlm.starting_weights`), taken from the first fold's model or record.
    starting_weights: dict[str, Any] | None = None

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

    def save_model(self, model: Any, record: dict[str, Any], directory: Path | None = None,
                   adapters_only: bool | None = None) -> None:
        """Save ``model`` with its record in ``directory`` (default: ``model/`` of the output dir), as a PEFT adapter
        folder on the saved base when ``adapters_only`` (default: whenever the run saves a base model)."""
        if adapters_only is None:
            adapters_only = self.base_model is not None
        if adapters_only:
            self.accelerator.unwrap_model(model).peft_config["default"].base_model_name_or_path = self.base_model
        save_final_model(self.accelerator, model, directory or self.output_dir / "model", self.final_record(record),
                         adapters_only=adapters_only)



def run_fold(context: RunContext, index: int, fold: tuple[list[str], list[str]], save_model: bool
             ) -> tuple[dict[str, Any], list[dict[str, float]]] | None:
    """Train and score one fold (or reuse its finished results); None when ``--stop_after_steps`` stopped it.

    With ``--final_model every_fold`` the fold's model is saved in ``fold_<i>/model`` before its results (the whole
    model, LoRA merged, also under ``--save_adapters_only``), and a finished fold without that folder (run without
    every_fold) is trained again."""
    accelerator, prepared = context.accelerator, context.prepared
    fold_name, fold_dir = f"fold_{index}", context.output_dir / f"fold_{index}"
    train_subjects, test_subjects = fold
    finished = fold_dir / FOLD_RESULTS
    every_fold = context.loop_args.final_model == "every_fold"
    if finished.is_file():
        saved = json.loads(finished.read_text(encoding="utf-8"))
        if every_fold and not (fold_dir / "model").is_dir():
            logger.info("%s: finished without its model (--final_model every_fold); training again", fold_name)
        elif saved.get("fingerprint") == context.fingerprint:
            logger.info("%s: already finished, reusing %s", fold_name, finished)
            context.starting_weights = context.starting_weights or saved.get("starting_weights")
            return saved["metrics"], saved["history"]
        else:
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
              "weights_sha256": weights_digest(accelerator.unwrap_model(outcome.model)),
              "starting_weights": starting_weights_of(unwrap_base(accelerator.unwrap_model(outcome.model)).config)}
    context.starting_weights = context.starting_weights or record["starting_weights"]
    if save_model:
        context.save_model(outcome.model, record)
    if every_fold:  # whole (merged) models: the saved base has the last fold's number of subject adapters only
        context.save_model(outcome.model, record, fold_dir / "model", adapters_only=False)
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
        "starting_weights": context.starting_weights,
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



def saved_model_subjects(prepared: PreparedData, last_train_subjects: list[str], loop_args: LoopArguments
                         ) -> dict[str, Any] | None:
    """The config overrides of the saved model of a subject-aware model (its number of subject-specific adapters:
    the training subjects of the last fold, or of every fold with ``--final_model all_data``); None for others."""
    if not prepared.subject_adapters:
        return None
    present = set(column(prepared.dataset, "subject"))
    subjects = present if loop_args.final_model == "all_data" else set(last_train_subjects) & present
    return {"num_train_subjects": len(subjects)}


def save_base_model(accelerator: Any, model_args: ModelArguments, prepared: PreparedData, loop_args: LoopArguments,
                    config_overrides: dict[str, Any] | None = None) -> str:
    """Where an adapter-only ``model/`` finds its base: ``--init_from``, or the model every fold starts from (built
    from the same seed and config, and for a subject-aware model with the saved model's number of subject adapters,
    `config_overrides`, so it holds exactly the weights the adapters were trained on) saved once into
    ``base_model/`` with its processor: the untrained model, or ``--init_from`` with the class heads rebuilt for
    other classes (`adapt_label_set`)."""
    from accelerate.utils import set_seed

    if model_args.init_from and keeps_classes(model_args.init_from, prepared.labels):
        return model_args.init_from
    if prepared.subject_adapters and config_overrides is None:
        raise ConfigError(f"--save_adapters_only with {model_args.model}: its base model depends on the training "
                          "subjects of a fold; save a base model first and pass it as --init_from")
    directory = Path(loop_args.output_dir) / BASE_MODEL_DIR
    if accelerator.is_main_process:
        set_seed(loop_args.seed)
        base = build_base_model(model_args, prepared.labels, config_overrides)
        base.save_pretrained(str(directory), safe_serialization=True)
        save_processor(base, directory, prepared.feature_spec)
    accelerator.wait_for_everyone()
    return str(directory.resolve())



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



def _flat_config(*arguments: Any) -> dict[str, Any]:
    """Argument dataclasses flattened to tracker-friendly scalars."""
    flat = {}
    for argument in arguments:
        for key, value in asdict(argument).items():
            flat[key] = value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)
    return {key: ("" if value is None else value) for key, value in flat.items()}
