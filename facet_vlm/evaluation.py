"""Scoring of the run layer: the evaluation loop, metrics, fold summaries, results tables, plots and result files,
shared by `scripts/train.py` (`facet_vlm.training`) and `scripts/evaluate_model.py` (`evaluate_saved_model`).

Every metric is computed from one confusion matrix (`confusion_matrix`, then `metrics_from_confusion`), so they
always agree with each other and with the plotted matrix. Reported per fold and as mean ± std over the folds:

- ``accuracy``: correct / all;
- ``war``: weighted average recall (support-weighted mean of per-class recalls; equals accuracy);
- ``uar``: unweighted average recall (mean per-class recall over the classes present in the references, as
  scikit-learn's ``balanced_accuracy_score``: a fold missing a class is not penalised for it);
- ``macro_f1``: mean per-class F1, ``2 TP_c / (2 TP_c + FP_c + FN_c)``, over the classes of the label set that are
  predicted or true (a class neither predicted nor true has no F1);
- ``uf1``: the micro-expression metric (MEGC): the same mean F1, computed once over the predictions pooled over every
  fold (`pooled_metrics`), not averaged over folds;
- ``confusion_matrix``: rows = true class, columns = predicted class (summed over folds for the plot).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

logger = logging.getLogger(__name__)

#: Result files of a run: per fold (written the moment the fold ends; a rerun skips folds that have it), the run's
#: summary, the printed table, and a saved model's evaluation by `evaluate_saved_model`.
FOLD_RESULTS = "results.json"
ALL_RESULTS = "all_results.json"
RESULTS_TABLE = "results.txt"
EVALUATION_RESULTS = "evaluation_results.json"
#: Saved next to the final model: how it was trained, which subjects it saw, how to build its inputs.
TRAINING_RECORD = "facet_vlm_training.json"

SCALAR_METRICS = ("accuracy", "uar", "war", "macro_f1")


def confusion_matrix(predictions: Sequence[int] | np.ndarray, references: Sequence[int] | np.ndarray,
                     num_labels: int) -> np.ndarray:
    """(num_labels, num_labels) int64 counts: rows = true class, columns = predicted class."""
    predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
    references = np.asarray(references, dtype=np.int64).reshape(-1)
    if predictions.shape != references.shape:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if len(references) and (min(predictions.min(), references.min()) < 0
                            or max(predictions.max(), references.max()) >= num_labels):
        raise ValueError(f"class ids must lie in [0, {num_labels}), got predictions "
                         f"[{predictions.min()}, {predictions.max()}], references [{references.min()}, "
                         f"{references.max()}]")
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (references, predictions), 1)
    return matrix


def metrics_from_confusion(matrix: Sequence[Sequence[int]] | np.ndarray) -> dict[str, float]:
    """accuracy, war, uar, macro_f1 and uf1 (the same formula as macro_f1; see the module doc) of one confusion
    matrix; NaN where there is nothing to average (no samples)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    total = matrix.sum()
    true_positive = np.diag(matrix)
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    present = support > 0
    recalls = true_positive[present] / support[present]
    f1_denominator = support + predicted
    scored = f1_denominator > 0
    f1 = 2 * true_positive[scored] / f1_denominator[scored]
    nan = float("nan")
    accuracy = float(true_positive.sum() / total) if total else nan
    return {
        "accuracy": accuracy,
        "war": float(np.sum(support[present] * recalls) / total) if total else nan,
        "uar": float(recalls.mean()) if recalls.size else nan,
        "macro_f1": float(f1.mean()) if f1.size else nan,
        "uf1": float(f1.mean()) if f1.size else nan,
    }


def compute_metrics(
    predictions: Sequence[int] | np.ndarray, references: Sequence[int] | np.ndarray, num_labels: int
) -> dict[str, Any]:
    """Every scalar metric plus the (num_labels, num_labels) confusion matrix of one evaluation."""
    matrix = confusion_matrix(predictions, references, num_labels)
    metrics = metrics_from_confusion(matrix)
    return {**{name: metrics[name] for name in SCALAR_METRICS}, "confusion_matrix": matrix.tolist(),
            "num_samples": int(matrix.sum())}


def summarize_folds(fold_results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and (population) std over folds of every scalar metric, the per-fold values and the summed matrix.

    The std is the population std (ddof=0), as most FER papers report over their 10 folds; with one fold it is 0.
    """
    summary: dict[str, Any] = {"num_folds": len(fold_results)}
    for name in SCALAR_METRICS:
        values = [float(result[name]) for result in fold_results]
        summary[name] = float(np.mean(values)) if values else float("nan")
        summary[f"{name}_std"] = float(np.std(values)) if values else float("nan")
        summary[f"{name}_per_fold"] = values
    matrices = [np.asarray(result["confusion_matrix"]) for result in fold_results]
    if matrices:
        summary["confusion_matrix"] = np.sum(matrices, axis=0).tolist()
    return summary


def pooled_metrics(matrix: Sequence[Sequence[int]] | np.ndarray) -> dict[str, float]:
    """UF1, UAR and accuracy of the predictions pooled over folds (the summed confusion matrix: rows = true class).

    The micro-expression convention (MEGC, 4DME leave-one-subject-out): the metrics are computed once over every
    test sample of every fold, not averaged over folds, since a fold usually holds few clips and misses classes.
    """
    metrics = metrics_from_confusion(matrix)
    return {"num_samples": int(np.asarray(matrix).sum()), "uf1": metrics["uf1"], "uar": metrics["uar"],
            "accuracy": metrics["accuracy"]}


def format_results_table(summary: dict[str, Any], fold_ids: Sequence[int] | None = None, title: str = "") -> str:
    """A plain-text table: one row per fold and a mean ± std row, metrics in percent."""
    columns = SCALAR_METRICS
    header = f"{'fold':>8} | " + " | ".join(f"{name:>14}" for name in columns)
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    num_folds = len(summary.get(f"{columns[0]}_per_fold", []))
    fold_ids = list(fold_ids) if fold_ids is not None else list(range(num_folds))
    for row, fold in enumerate(fold_ids):
        cells = [f"{100 * summary[f'{name}_per_fold'][row]:14.2f}" for name in columns]
        lines.append(f"{fold:>8} | " + " | ".join(cells))
    lines.append("-" * len(header))
    cells = [f"{100 * summary[name]:7.2f} ±{100 * summary[f'{name}_std']:5.2f}" for name in columns]
    lines.append(f"{'mean':>8} | " + " | ".join(cells))
    return "\n".join(lines)


def plot_confusion_matrix(matrix: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str], path: str | Path,
                          title: str = "Confusion matrix") -> Path:
    """Save a row-normalised confusion matrix (counts printed in each cell) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix, dtype=np.float64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.8 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            axis.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                      color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_curves(histories: dict[str, Sequence[dict[str, float]]], path: str | Path) -> Path:
    """Save training loss and test accuracy per epoch, one line per fold, as a PNG.

    Args:
        histories: fold name -> list of per-epoch records with ``epoch``, ``train_loss`` and optionally
            ``eval_accuracy``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for name, history in histories.items():
        epochs = [record["epoch"] for record in history]
        loss_axis.plot(epochs, [record.get("train_loss", math.nan) for record in history], marker="o", label=name)
        accuracy_axis.plot(epochs, [record.get("eval_accuracy", math.nan) for record in history], marker="o",
                           label=name)
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    accuracy_axis.set_xlabel("epoch")
    accuracy_axis.set_ylabel("test accuracy")
    accuracy_axis.set_ylim(0, 1.02)
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        if histories:
            axis.legend(fontsize=7)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_pulse(signal: Sequence[float] | np.ndarray, fps: float, heart_rate: float | None = None,
               path: str | Path | None = None, title: str = "rPPG pulse") -> Any:
    """The pulse signal over time (seconds), with the heart rate in the title; saved as a PNG when `path` is given.

    Returns the matplotlib figure (the Space shows it); the caller closes it (``plt.close(figure)``) when `path`
    is None.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    signal = np.asarray(signal, dtype=np.float64)
    figure, axis = plt.subplots(figsize=(8, 2.6))
    axis.plot(np.arange(len(signal)) / fps, signal, linewidth=1.0, color="tab:red")
    axis.set_xlabel("time (s)")
    axis.set_ylabel("pulse (a.u.)")
    axis.set_title(title + (f": {heart_rate:.1f} bpm" if heart_rate is not None else ""))
    axis.grid(alpha=0.3)
    figure.tight_layout()
    if path is not None:
        figure.savefig(Path(path), dpi=120)
        plt.close(figure)
    return figure


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write `data` as indented JSON atomically (write to a temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def evaluate_model(accelerator: Any, model: Any, dataloader: Any, logits_key: str = "logits",
                   target_index: int | None = None) -> dict[str, np.ndarray]:
    """Predictions, references and class probabilities over a (prepared) data loader, gathered from all processes.

    `gather_for_metrics` drops the samples duplicated to make the last batch even, so every sample counts once.
    ``logits_key``/``target_index`` pick the scored head and label column of multi-target models. The model is put
    back into training mode afterwards.
    """
    import torch

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


def evaluate_saved_model(model_dir: str | Path, dataset: str, protocol: str = "all", folds: int = 10,
                         fold: int | None = None, fold_seed: int = 0, cache_dir: str = ".cache/facet_vlm",
                         num_proc: int = 1, batch_size: int = 16, output_dir: str | Path | None = None,
                         synthetic_subjects: int = 40, synthetic_seed: int = 0, zero_shot: bool = False,
                         label_set: str | None = None, prompts: dict[str, list[str]] | None = None,
                         model_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score a model saved by ``scripts/train.py`` (or any model folder of this library) on a data set.

    ``protocol="all"`` scores every sample; a fold protocol (``subject-kfold``, ``loso``, ``holdout``,
    ``bu3dfe-p1-10fold``, ...) scores the test subjects of each fold (or of ``fold``). When the model's training
    record says it was trained on this same data set, its training subjects are always left out, so the score is
    subject-independent. A sequence data set is read as in training (the frame selection of the training record;
    static models take the apex frame). Cross-dataset testing: a model trained on BU-4DFE or BU-3DFE (label set
    ``basic6``) scored on ``bp4d:ROOT`` sees the BP4D tasks whose emotion is in its label set (T1 happiness, T2
    sadness, T3 surprise, T5 fear, T7 anger, T8 disgust); the others are left out. Writes
    ``evaluation_results.json`` and ``confusion_matrix.png`` into `output_dir` (default ``MODEL_DIR/evaluation``),
    logs the results table and returns the results (``table`` holds the text).

    ``zero_shot``: score a CLIP-initialised FACET-VLM with no training (`zero_shot_model`): `model_dir` is a CLIP
    name or folder (or a saved FACET-VLM), the classes are the data set's label set (or `label_set`), each with
    the prompts of `prompts` (class -> prompt ensemble; by default the config's templates x class descriptions),
    and the logits are CLIP's image-text similarities (`FacetVLMModel.zero_shot`). `model_config` goes to
    ``from_clip`` (views, channels, image size). Default `output_dir`: ``outputs/zero_shot/<name>``.
    """
    from accelerate import Accelerator

    from .arguments import DataArguments, ModelArguments
    from .data.prepare import generate_data, prepare_dataset
    from .pipelines import load_model

    if batch_size < 1:
        raise ConfigError(f"--batch_size must be >= 1, got {batch_size}")
    if not zero_shot and (prompts or model_config):
        raise ConfigError("--prompts and --model_config are for --zero_shot (a trained model keeps its classes)")
    if zero_shot:
        model = zero_shot_model(str(model_dir), model_config)
        record, settings = {}, _processor_settings(model)
        model_args = ModelArguments(model=model.config.model_type, label_set=label_set)
    else:
        model_dir = Path(model_dir)
        model = load_model(str(model_dir))
        record = _read_json(model_dir / TRAINING_RECORD)
        settings = _read_json(model_dir / "processor_config.json")
        settings.pop("processor_class", None)
        model_args = ModelArguments(model=model.config.model_type, init_from=str(model_dir),
                                    label_set=record.get("label_set") or label_set)
    data_args = DataArguments(dataset=dataset, protocol="holdout" if protocol == "all" else protocol, folds=folds,
                              fold=fold, fold_seed=fold_seed, cache_dir=cache_dir, num_proc=num_proc,
                              synthetic_subjects=synthetic_subjects, synthetic_seed=synthetic_seed,
                              feature_overrides=json.dumps(settings) if settings else None,
                              **_frame_arguments(record))
    accelerator = Accelerator()
    generate_data(model_args, data_args, accelerator)
    prepared = prepare_dataset(model_args, data_args, accelerator)
    labels = list(prepared.labels)
    if zero_shot:
        model.set_labels(labels, prompts=_prompts_for(labels, prompts, model_dir), keep_known_classes=False)
    model_labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    if prepared.target_index is None and labels != model_labels:
        raise ConfigError(f"the model predicts {model_labels}, the data set's label set is {labels}", model_dir)
    seen = set(record.get("train_subjects", [])) if record.get("dataset") == dataset else set()
    splits = _test_splits(prepared.dataset, protocol, data_args)
    scored_model = _zero_shot_scorer(model) if zero_shot else model
    per_split, excluded = _score_splits(accelerator, accelerator.prepare(scored_model), prepared, splits, seen,
                                        batch_size)
    if not per_split:
        raise ConfigError("nothing to score: every test subject was seen in training", model_dir)
    summary = summarize_folds(list(per_split.values()))
    kind = "zero-shot " if zero_shot else ""
    table = format_results_table(summary, list(range(len(per_split))), title=f"{kind}{model_dir} on {dataset}, "
                                 f"{protocol} ({len(excluded)} training subjects left out)")
    results = {**{key: value for key, value in summary.items() if key != "confusion_matrix"},
               "fold_results": [{"fold": name, **values} for name, values in per_split.items()],
               "confusion_matrix": summary["confusion_matrix"], "protocol": protocol, "dataset": dataset,
               "labels": labels, "model": str(model_dir), "excluded_training_subjects": excluded,
               "zero_shot": zero_shot, "starting_weights": getattr(model.config, "starting_weights", None)}
    if zero_shot:
        results["prompts"] = model.config.label_prompts
    if accelerator.is_main_process:
        default_dir = Path("outputs") / "zero_shot" / str(model_dir).strip("/").replace("/", "_") if zero_shot \
            else Path(model_dir) / "evaluation"
        output_dir = Path(output_dir) if output_dir else default_dir
        write_json(output_dir / EVALUATION_RESULTS, results)
        plot_confusion_matrix(summary["confusion_matrix"], labels, output_dir / "confusion_matrix.png",
                              title=f"{kind}{model.config.model_type} on {dataset}")
        logger.info("\n%s", table)
    return {**results, "table": table}


def _zero_shot_scorer(model: Any) -> Any:
    """A module whose forward is the FACET-VLM's `zero_shot` (what the scoring loop calls as ``model(**batch)``)."""
    import torch

    class ZeroShotScorer(torch.nn.Module):
        def __init__(self, model: Any):
            super().__init__()
            self.model = model

        def forward(self, pixel_values: Any, **kwargs: Any) -> Any:
            return self.model.zero_shot(pixel_values)

    return ZeroShotScorer(model)


def zero_shot_model(name_or_path: str, model_config: dict[str, Any] | None = None) -> Any:
    """The model that `evaluate_saved_model(zero_shot=True)` scores: a saved FACET-VLM folder as it is, or a
    FACET-VLM whose towers are the CLIP `name_or_path` (`FacetVLMForExpressionRecognition.from_clip`), with
    `model_config` for its settings."""
    from .registry import check_model_files, model_entry

    entry = model_entry("facet_vlm")
    path = Path(name_or_path)
    if (path / "config.json").is_file() and check_model_files(path).get("model_type") == "facet_vlm":
        if model_config:
            raise ConfigError("--model_config applies to a CLIP; this is a saved FACET-VLM", path)
        return entry.model_class.from_pretrained(path).eval()
    try:
        return entry.model_class.from_clip(name_or_path, **(model_config or {})).eval()
    except OSError as error:  # not a CLIP folder, not on the Hub, not cached (offline)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"--zero_shot: cannot load a pretrained CLIP: {reason}", name_or_path) from error


def _processor_settings(model: Any) -> dict[str, Any]:
    """The processor settings that match a model config (what a saved model's ``processor_config.json`` holds)."""
    from .registry import make_processor

    settings = make_processor(model.config.model_type, model.config).to_dict()
    settings.pop("processor_class", None)
    return settings


def _prompts_for(labels: list[str], prompts: dict[str, list[str]] | None, source: Any) -> dict[str, list[str]] | None:
    """`prompts` checked against the label set: every class needs a non-empty list of strings."""
    if prompts is None:
        return None
    missing = [label for label in labels if not prompts.get(label)]
    if missing:
        raise ConfigError(f"--prompts has no prompt for the classes {missing} (label set {labels})", source)
    bad = [label for label in labels if not all(isinstance(p, str) for p in prompts[label])]
    if bad:
        raise ConfigError(f"--prompts: the prompts of {bad} must be a list of strings", source)
    return {label: list(prompts[label]) for label in labels}


def _frame_arguments(record: dict[str, Any]) -> dict[str, Any]:
    """The frame selection a temporal model was trained with (its training record), for scoring sequences alike."""
    frames = record.get("features", {}).get("frames")
    if not isinstance(frames, dict):
        return {}
    return {"num_frames": frames["num_frames"], "frame_mode": frames["mode"], "short_policy": frames["short_policy"]}


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _test_splits(dataset: Any, protocol: str, data_args: Any) -> dict[str, list[str]]:
    """Test subjects per split: every subject (``all``), or the test subjects of each selected fold."""
    from .data.folds import build_folds, column, select_folds

    if protocol == "all":
        return {"all": sorted(set(column(dataset, "subject")))}
    fold_list = build_folds(dataset, data_args.protocol, data_args.folds, data_args.fold_seed,
                            data_args.test_fraction)
    return {f"fold_{i}": fold_list[i][1] for i in select_folds(len(fold_list), data_args.fold, data_args.max_folds)}


def _score_splits(accelerator: Any, model: Any, prepared: Any, splits: dict[str, list[str]], seen: set[str],
                  batch_size: int) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Metrics per split over its test subjects minus the `seen` (training) ones, and the subjects left out."""
    from torch.utils.data import DataLoader

    from .data.folds import column

    subjects = np.asarray(column(prepared.dataset, "subject"))
    per_split = {}
    for name, test_subjects in splits.items():
        rows = np.flatnonzero(np.isin(subjects, [s for s in test_subjects if s not in seen]))
        if len(rows) == 0:
            continue
        loader = accelerator.prepare(DataLoader(prepared.dataset.select(rows), batch_size=batch_size,
                                                collate_fn=prepared.collate_fn))
        scored = evaluate_model(accelerator, model, loader, prepared.logits_key, prepared.target_index)
        per_split[name] = compute_metrics(scored["predictions"], scored["references"],
                                          num_labels=len(prepared.labels))
    return per_split, sorted(seen & set(subjects.tolist()))
