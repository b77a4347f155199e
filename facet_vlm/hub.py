"""Publishing trained models to the Hugging Face Hub: a model card from the run's results, a self-contained folder
(safetensors weights, remote code, processor files) and the upload.

The folder is built completely on disk before anything touches the network, so an offline machine (or a failed
upload) still leaves a folder that can be pushed later with ``huggingface-cli upload`` or ``--push``.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, FacetVLMError
from .starting_weights import describe_record, prompts_are_language, starting_weights_of

#: The model-card template (Jinja2, rendered by huggingface_hub); package data, so it is there after any install.
DEFAULT_TEMPLATE = Path(__file__).resolve().parent / "templates" / "model_card_template.md"

#: Files a processor (or tokenizer) writes with ``save_pretrained``; copied verbatim into the Hub folder.
PROCESSOR_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "image_processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)

#: Files of a PEFT adapter directory that make up the adapter.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")

#: Suffixes that would carry pickled code; never uploaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

#: Metric keys of ``all_results.json`` and how the card names them (Hub ``metric_type`` ids where one exists).
METRICS = {"accuracy": ("accuracy", "Accuracy"), "uar": ("recall", "Unweighted average recall (UAR)"),
           "macro_f1": ("f1", "Macro F1")}


@dataclass(frozen=True)
class MethodInfo:
    """What the card says about one model family (`citation`: the BibTeX of its paper, empty when it has none)."""

    name: str
    summary: str
    inputs: str
    pipeline_tag: str
    tags: tuple[str, ...]
    citation: str


def _bibtex(entry_type: str, key: str, **fields: str) -> str:
    """A BibTeX entry with aligned fields, in the order given."""
    width = max(len(name) for name in fields)
    body = ",\n".join(f"  {name.ljust(width)} = {{{value}}}" for name, value in fields.items())
    return f"@{entry_type}{{{key},\n{body}\n}}"


#: The paper of every method, as the project's sources give it (issue #13): a field they leave open is left out,
#: not guessed: no author list for CoupleFER (its affiliations are given instead), no venue or year for the physio
#: paper (an arXiv preprint). Titles are double-braced so that BibTeX styles keep their capitals.
CITATIONS: dict[str, str] = {
    "facet_vlm": _bibtex(
        "article", "behzad2025facetvlm",
        author="M. Behzad",
        title="{Facial Emotion Learning with Text-Guided Multiview Fusion via Vision-Language Model for 3D/4D "
              "Facial Expression Recognition}",
        journal="Neurocomputing",
        volume="657",
        eid="131621",
        year="2025",
        eprint="2507.01673",
        archivePrefix="arXiv",
    ),
    "couplefer": _bibtex(
        "article", "couplefer2025",
        title="{CoupleFER: Dynamic Cross-Modal Fusion via Prompt Learning for Improved 2D+3D FER}",
        journal="IEEE Transactions on Affective Computing",
        volume="16",
        number="4",
        pages="3154--3168",
        year="2025",
        note="Beihang University, Shanghai AI Laboratory",
    ),
    "afnet_m": _bibtex(
        "inproceedings", "sui2023afnetm",
        author="M. Sui and H. Li and Z. Zhu and F. Zhao",
        title="{AFNet-M: Adaptive Fusion Network with Masks for 2D+3D Facial Expression Recognition}",
        booktitle="IEEE International Conference on Image Processing (ICIP)",
        year="2023",
        eprint="2205.11785",
        archivePrefix="arXiv",
    ),
    "physio_prompt": _bibtex(
        "misc", "luo_physio_prompt",
        author="X. Luo and J. Li and R. Song and Y. Liu and J. Cheng",
        title="{Adaptive Physical-Facial Representation Fusion via Subject-Invariant Cross-Modal Prompt Tuning for "
              "Video-Based Emotion Recognition}",
        eprint="2605.05694",
        archivePrefix="arXiv",
    ),
}

#: Card text per model, keyed by the `facet_vlm.registry` name (= the config's ``model_type``); a test checks that
#: every registry entry has one.
METHODS: dict[str, MethodInfo] = {
    "facet_vlm": MethodInfo(
        name="FACET-VLM (text-guided multiview fusion)",
        summary=("FACET-VLM recognises facial expressions from 3D (and 4D) face scans. The scan is rendered into "
                 "several views (texture, depth and surface normals); a CLIP vision tower encodes every view, "
                 "cross-view semantic aggregation (CVSA) pools them into one view-consistent face embedding, and "
                 "multiview text-guided fusion (MTGF) uses CLIP text embeddings of emotion prompts as queries "
                 "over the views. Logits are scaled cosine similarities to the class text embeddings."),
        inputs="multiview renderings (V x C x H x W) of a 3D face scan produced by `FacetVLMProcessor`",
        pipeline_tag="image-classification",
        tags=("facial-expression-recognition", "3d", "multiview", "clip", "vision-language"),
        citation=CITATIONS["facet_vlm"],
    ),
    "couplefer": MethodInfo(
        name="CoupleFER (2D-guided 3D point transformer with dual-level supervision)",
        summary=("CoupleFER couples an image branch (a ViT on the 2D texture) with a point-cloud branch (a "
                 "transformer over point patches). At every layer a CouPle module turns the image tokens into "
                 "prompt tokens for the point branch, so that 2D texture guides 3D geometry; training uses "
                 "sample-level (cross-entropy, 2D-3D contrastive) and cluster-level (class prototype) supervision."),
        inputs="the 2D texture image and a point cloud (xyz, normals, colour) sampled from the 3D scan",
        pipeline_tag="image-classification",
        tags=("facial-expression-recognition", "3d", "point-cloud", "multimodal"),
        citation=CITATIONS["couplefer"],
    ),
    "afnet_m": MethodInfo(
        name="AFNet-M (adaptive fusion with mask attention)",
        summary=("AFNet-M fuses a 2D texture branch and a 3D branch (depth and normal maps) of CNNs. A mask "
                 "attention module turns salient-region masks (eyes, brows, nose, mouth) into scale and shift "
                 "vectors that modulate the feature maps and weights the maps spatially towards those regions, and "
                 "an importance-weight module fuses the two branches "
                 "with input-dependent weights at several stages."),
        inputs="the 2D texture image, depth and normal maps of the frontal view and salient-region masks",
        pipeline_tag="image-classification",
        tags=("facial-expression-recognition", "3d", "2d+3d", "attention"),
        citation=CITATIONS["afnet_m"],
    ),
    "physio_prompt": MethodInfo(
        name="Subject-invariant physio-facial prompt tuning",
        summary=("A frozen CLIP ViT over face-video frames, prompted by tokens computed from the remote "
                 "photoplethysmography (rPPG) pulse's time-frequency map, with decoupled shared and "
                 "subject-specific adapters so that the model generalises to unseen people."),
        inputs="face video frames and the pulse signal extracted from them (or a sensor channel)",
        pipeline_tag="video-classification",
        tags=("emotion-recognition", "rppg", "video", "prompt-tuning"),
        citation=CITATIONS["physio_prompt"],
    ),
}

_GENERIC_METHOD = MethodInfo(
    name="facet-vlm model",
    summary="A facial expression recognition model built with the facet-vlm library.",
    inputs="the tensors produced by the model's processor",
    pipeline_tag="image-classification",
    tags=("facial-expression-recognition",),
    citation="",
)


class PublishError(FacetVLMError):
    """The run directory cannot be published as it is, or the upload failed."""


def method_info(model_type: str) -> MethodInfo:
    """Card text of a model family, found by its config ``model_type`` (a `facet_vlm.registry` name)."""
    return METHODS.get(model_type, _GENERIC_METHOD)


# ---------------------------------------------------------------------------------------------------------------
# Results of a run
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class RunResults:
    """The parts of a training run's ``all_results.json`` that go into the card.

    ``metrics`` holds the mean over folds per metric key (``accuracy``, ``uar``, ``macro_f1``), ``stds`` their
    standard deviation over folds, ``folds`` one dict of metric values per fold run (ids in ``fold_ids``), and the
    descriptive fields say how the numbers were obtained (``num_protocol_folds`` = K of the protocol, which may
    exceed the folds actually run).
    """

    metrics: dict[str, float]
    stds: dict[str, float] = field(default_factory=dict)
    folds: list[dict[str, float]] = field(default_factory=list)
    fold_ids: list[str] = field(default_factory=list)
    protocol: str = "unspecified"
    num_protocol_folds: int | None = None
    dataset: str = "unspecified"
    label_set: str = "custom"
    labels: list[str] = field(default_factory=list)
    model: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: str | Path) -> RunResults:
        """Read an ``all_results.json`` written by ``scripts/train.py``; raises `ConfigError` if unusable."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("results file not found; pass --results pointing at the run's all_results.json",
                              path) from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"not valid JSON ({error.msg} at line {error.lineno})", path) from None
        if not isinstance(raw, dict):
            raise ConfigError("expected a JSON object with accuracy, uar, macro_f1 and per-fold values", path)
        return cls.from_dict(raw, source=path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str | Path | None = None) -> RunResults:
        """Pick metrics, folds and protocol from a results dict.

        Understands train.py's layout (``accuracy``, ``accuracy_std``, ``per_fold: {"0": {...}}``, ``labels``,
        ``protocol``, ``dataset``) and also ``folds: [{...}]`` lists or ``accuracy_per_fold: [...]`` columns.
        """
        metrics = {key: float(raw[key]) for key in METRICS if _is_number(raw.get(key))}
        if not metrics:
            raise ConfigError(f"no metric found (expected one of {', '.join(METRICS)} as numbers)", source)
        fold_ids, folds = _fold_entries(raw)
        folds = [{key: float(value) for key, value in fold.items() if key in metrics and _is_number(value)}
                 for fold in folds]
        stds = {key: float(raw[f"{key}_std"]) for key in metrics if _is_number(raw.get(f"{key}_std"))}
        for key in metrics:
            values = [fold[key] for fold in folds if key in fold]
            if key not in stds and len(values) > 1:
                mean = sum(values) / len(values)
                stds[key] = math.sqrt(sum((value - mean) ** 2 for value in values) / len(values))
        labels = raw.get("labels") or raw.get("label_names") or []
        label_set = raw.get("label_set") or _known_label_set(labels)
        num_protocol_folds = raw.get("num_protocol_folds")
        return cls(metrics=metrics, stds=stds, folds=folds, fold_ids=fold_ids,
                   protocol=str(raw.get("protocol", "unspecified")),
                   num_protocol_folds=int(num_protocol_folds) if _is_number(num_protocol_folds) else None,
                   dataset=str(raw.get("dataset", raw.get("dataset_name", "unspecified"))), label_set=str(label_set),
                   labels=[str(label) for label in labels], model=raw.get("model"), raw=raw)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _known_label_set(labels: list[str]) -> str:
    """The name of the `facet_vlm.labels` label set with exactly these classes, else "custom"."""
    from .labels import LABEL_SETS

    for name, names in LABEL_SETS.items():
        if list(names) == list(labels):
            return name
    return "custom"


def _fold_entries(raw: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Per-fold values as (fold ids, one dict per fold) from whichever layout the results file uses."""
    per_fold = raw.get("per_fold")
    if isinstance(per_fold, dict) and all(isinstance(value, dict) for value in per_fold.values()):
        ids = sorted(per_fold, key=lambda key: (not str(key).isdigit(), int(key) if str(key).isdigit() else key))
        return [str(key) for key in ids], [per_fold[key] for key in ids]
    for key in ("folds", "per_fold", "fold_results"):
        value = raw.get(key)
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            return [str(item.get("fold", index)) for index, item in enumerate(value)], value
    columns = {key: raw[f"{key}_per_fold"] for key in METRICS if isinstance(raw.get(f"{key}_per_fold"), list)}
    length = max((len(values) for values in columns.values()), default=0)
    listed = raw.get("folds") if isinstance(raw.get("folds"), list) and len(raw["folds"]) == length else None
    ids = [str(fold) for fold in listed] if listed else [str(index) for index in range(length)]
    return ids, [{key: values[index] for key, values in columns.items() if index < len(values)}
                 for index in range(length)]


# ---------------------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------------------


def build_model_card(
    config: dict[str, Any],
    repo_id: str,
    results: RunResults | None = None,
    *,
    base_model: str | None = None,
    is_peft: bool = False,
    license: str = "apache-2.0",
    pipeline_tag: str | None = None,
    datasets: Iterable[str] = (),
    confusion_matrix: str | None = None,
    trained_on_synthetic: bool | None = None,
    template_path: str | Path = DEFAULT_TEMPLATE,
):
    """Render the model card (a `huggingface_hub.ModelCard`) of a model config and its run results.

    The metadata comes from `ModelCardData` (library, pipeline tag, tags, data sets, metrics, base model and one
    `EvalResult` per metric, which become the ``model-index``); the body from the Jinja template. Whether the
    weights were trained on synthetic faces is taken from the results' data set name unless given. The starting
    weights of each tower (`facet_vlm.starting_weights`) come from the results' ``starting_weights`` record, else
    from the config's; a model whose text tower did not start from CLIP is said to have learned class anchors,
    not language, as prompts.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model_type = str(config.get("model_type", "unknown"))
    method = method_info(model_type)
    labels = _labels_of(config, results)
    dataset = results.dataset if results is not None else "unspecified"
    if trained_on_synthetic is None:
        trained_on_synthetic = "synthetic" in dataset.lower()
    dataset_ids = list(datasets) or ([dataset] if dataset != "unspecified" else [])
    tag = pipeline_tag or method.pipeline_tag
    model_name = repo_id.split("/")[-1]
    raw = results.raw if results is not None else {}
    weights = starting_weights_of(raw if raw.get("starting_weights") else config)
    eval_results = [EvalResult(task_type=tag, task_name="Facial expression recognition", dataset_type=dataset,
                               dataset_name=dataset, dataset_split=results.protocol, metric_type=METRICS[key][0],
                               metric_name=METRICS[key][1], metric_value=round(value, 6),
                               metric_config=key if METRICS[key][0] != key else None)
                    for key, value in (results.metrics.items() if results is not None else ())]
    card_data = ModelCardData(
        library_name="peft" if is_peft else "transformers",
        pipeline_tag=tag,
        license=license,
        tags=["facet-vlm", model_type, *method.tags, *(["peft", "adapter"] if is_peft else [])],
        datasets=dataset_ids or None,
        metrics=sorted({METRICS[key][0] for key in results.metrics}) if results is not None else None,
        base_model=base_model,
        model_name=model_name,
        eval_results=eval_results or None,
    )
    template = Path(template_path)
    if not template.is_file():
        raise PublishError("model card template not found; pass --template", template)
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        repo_id=repo_id,
        model_title=model_name,
        method_name=method.name,
        method_summary=method.summary,
        inputs_description=method.inputs,
        model_class=(config.get("architectures") or ["unknown"])[0],
        model_type=model_type,
        processor_class=config.get("processor_class") or "the model's processor",
        label_set_name=results.label_set if results is not None else "custom",
        labels=labels,
        base_model=base_model,
        is_peft=is_peft,
        license=license,
        dataset_name=dataset,
        protocol=results.protocol if results is not None else "unspecified",
        protocol_description=_protocol_description(results),
        num_folds=len(results.folds) if results is not None else 0,
        num_protocol_folds=results.num_protocol_folds if results is not None else None,
        results=_result_rows(results),
        fold_metric_names=[METRICS[key][1] for key in results.metrics] if results is not None else [],
        fold_rows=_fold_rows(results),
        confusion_matrix=confusion_matrix,
        trained_on_synthetic=trained_on_synthetic,
        starting_weights=_starting_weight_rows(weights),
        has_text_tower="text_tower" in weights and not str(weights["text_tower"]).startswith("none"),
        prompts_are_language=prompts_are_language(weights),
        citation=method.citation,
        neutral_reference=None if config.get("neutral_reference", "none") == "none" else config["neutral_reference"],
        video_task=_is_video_model(model_type),
        pulse_reference=config.get("pulse_reference", "none") != "none",
    )


def _is_video_model(model_type: str) -> bool:
    """Whether `model_type` reads face videos (the ``video-emotion-recognition`` pipeline), per the registry."""
    from .registry import MODEL_REGISTRY

    entry = MODEL_REGISTRY.get(model_type)
    return bool(entry is not None and entry.is_video)


def _starting_weight_rows(record: dict[str, Any]) -> list[dict[str, str]]:
    """(part, starting weights) rows of the card's "Starting weights" list."""
    source = record.get("source", "random")
    prefix = {"clip": "CLIP ", "saved_model": "the saved model "}.get(source, "")
    rows = []
    for key, value in record.items():
        if key in ("vision_tower", "text_tower", "image_tower", "model"):
            text = str(value)
            text = text if text == "random" or text.startswith("none") else f"{prefix}`{text}`"
            rows.append({"part": key.replace("_", " ").capitalize(), "value": text})
    if not rows:
        rows.append({"part": "All weights", "value": "random"})
    if "text_tower_trained" in record and any(row["part"] == "Text tower" for row in rows):
        rows.append({"part": "Text tower trained", "value": "yes" if record["text_tower_trained"] else "no (frozen)"})
    if record.get("prompt_context"):
        rows.append({"part": "Prompts", "value": str(record["prompt_context"])})
    if record.get("saved_model_started_from"):
        rows.append({"part": "The saved model started from",
                     "value": describe_record(record["saved_model_started_from"])})
    return rows


def _labels_of(config: dict[str, Any], results: RunResults | None) -> list[str]:
    id2label = config.get("id2label") or {}
    if id2label:
        return [str(id2label[key]) for key in sorted(id2label, key=lambda key: int(key))]
    return list(results.labels) if results is not None else []


def _protocol_description(results: RunResults | None) -> str:
    if results is None:
        return "No evaluation protocol was recorded for this model."
    if not results.folds:
        return f"Protocol `{results.protocol}`; metrics as recorded by the training run."
    total = results.num_protocol_folds or len(results.folds)
    ran = f"all {total} folds" if len(results.folds) == total else f"{len(results.folds)} of its {total} folds"
    return (f"Subject-independent evaluation with protocol `{results.protocol}` ({ran} were run): no subject "
            "appears in both the training and the test split of a fold, every metric is computed on the held-out "
            "subjects of each fold and then averaged over folds. UAR is the unweighted mean of per-class recalls; "
            "macro F1 the unweighted mean of per-class F1 scores.")


def _result_rows(results: RunResults | None) -> list[dict[str, Any]]:
    if results is None:
        return []
    rows = []
    for key, value in results.metrics.items():
        std = results.stds.get(key)
        rows.append({"name": METRICS[key][1], "mean": value, "std_text": "—" if std is None else f"{std:.4f}"})
    return rows


def _fold_rows(results: RunResults | None) -> list[dict[str, Any]]:
    if results is None:
        return []
    return [{"index": fold_id, "cells": [f"{fold[key]:.4f}" if key in fold else "—" for key in results.metrics]}
            for fold_id, fold in zip(results.fold_ids, results.folds)]


# ---------------------------------------------------------------------------------------------------------------
# Folder assembly
# ---------------------------------------------------------------------------------------------------------------


def model_class_for(config: dict[str, Any], source: str | Path | None = None):
    """The facet-vlm model class named in a config's ``architectures`` (found through `facet_vlm.registry`)."""
    from .registry import entry_for_class

    names = config.get("architectures") or []
    for name in names:
        entry = entry_for_class(name)
        if entry is not None and name in (entry.model_name, entry.base_model_name):
            return entry.model_class if name == entry.model_name else entry.base_model_class
    raise PublishError(f"no facet-vlm model class named {names or '(config has no architectures)'}; the run "
                       "directory must hold a model saved with save_pretrained by facet-vlm", source)


def is_adapter_dir(model_dir: str | Path) -> bool:
    """True when the directory holds a PEFT adapter rather than full weights."""
    return (Path(model_dir) / "adapter_config.json").is_file()


def find_run_file(model_dir: Path, name: str, explicit: str | Path | None = None) -> Path | None:
    """A run artefact (``all_results.json``, ``confusion_matrix.png``) next to or one level above the model."""
    if explicit is not None:
        return Path(explicit)
    for folder in (model_dir, model_dir.parent):
        if (folder / name).is_file():
            return folder / name
    return None


def build_hub_folder(
    model_dir: str | Path,
    out_dir: str | Path,
    repo_id: str,
    *,
    results_path: str | Path | None = None,
    confusion_matrix_path: str | Path | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
    pipeline_tag: str | None = None,
    datasets: Iterable[str] = (),
    template_path: str | Path = DEFAULT_TEMPLATE,
) -> Path:
    """Assemble a Hub-ready folder from a trained model directory and return its path.

    Full models are loaded with their facet-vlm class, registered for ``AutoConfig``/``AutoModel`` and saved with
    ``save_pretrained`` (safetensors, ``auto_map`` in config.json, the configuration/modeling files copied as remote
    code). PEFT runs (``adapter_config.json`` present) publish the adapter files only and name the base model in
    the card. Processor files, the run's results and confusion matrix and the README.md model card are added.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    validate_repo_id(repo_id)
    if not model_dir.is_dir():
        raise PublishError("model directory not found (expected the DIR/model folder written by train.py)",
                           model_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise PublishError("output folder must differ from the model directory", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    is_peft = is_adapter_dir(model_dir)
    if is_peft:
        config, base_model = _copy_adapter(model_dir, out_dir, base_model)
    else:
        config = _save_full_model(model_dir, out_dir)
    for name in PROCESSOR_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)

    results_file = find_run_file(model_dir, "all_results.json", results_path)
    results = RunResults.from_json(results_file) if results_file is not None else None
    if results_file is not None:
        shutil.copy2(results_file, out_dir / "all_results.json")
    matrix_file = find_run_file(model_dir, "confusion_matrix.png", confusion_matrix_path)
    if matrix_file is not None and not matrix_file.is_file():
        raise PublishError("confusion matrix image not found", matrix_file)
    if matrix_file is not None:
        shutil.copy2(matrix_file, out_dir / "confusion_matrix.png")

    processor_config = out_dir / "processor_config.json"
    if processor_config.is_file():
        config = {**config, "processor_class": json.loads(processor_config.read_text()).get("processor_class")}
    card = build_model_card(config, repo_id, results, base_model=base_model, is_peft=is_peft, license=license,
                            pipeline_tag=pipeline_tag, datasets=datasets, template_path=template_path,
                            confusion_matrix="confusion_matrix.png" if matrix_file is not None else None)
    card.save(out_dir / "README.md")
    validate_hub_folder(out_dir)
    return out_dir


def _save_full_model(model_dir: Path, out_dir: Path) -> dict[str, Any]:
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise PublishError("no config.json; is this a save_pretrained folder?", model_dir)
    if not any(model_dir.glob("*.safetensors")):
        raise PublishError("no .safetensors weights found; facet-vlm publishes safetensors only", model_dir)
    config = json.loads(config_file.read_text())
    model_cls = model_class_for(config, config_file)
    model = model_cls.from_pretrained(model_dir)  # importing facet_vlm marked the classes for remote code
    model.save_pretrained(out_dir)
    return json.loads((out_dir / "config.json").read_text())


def _copy_adapter(model_dir: Path, out_dir: Path, base_model: str | None) -> tuple[dict[str, Any], str | None]:
    missing = [name for name in ADAPTER_FILES if not (model_dir / name).is_file()]
    if missing:
        raise PublishError(f"PEFT adapter directory lacks {', '.join(missing)} (adapters are published as "
                           "safetensors only)", model_dir)
    for name in ADAPTER_FILES:
        shutil.copy2(model_dir / name, out_dir / name)
    adapter_config = json.loads((model_dir / "adapter_config.json").read_text())
    base_model = base_model or adapter_config.get("base_model_name_or_path")
    if not base_model:
        raise PublishError("adapter_config.json names no base_model_name_or_path; pass --base-model ORG/NAME",
                           model_dir / "adapter_config.json")
    if Path(base_model).exists():
        raise PublishError(f"the adapter's base model is the local folder {base_model}; publish that folder first "
                           "(scripts/publish.py BASE_DIR --repo-id ORG/BASE) and pass --base-model ORG/BASE",
                           model_dir / "adapter_config.json")
    validate_repo_id(base_model)
    config_file = model_dir / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    return config, base_model


# ---------------------------------------------------------------------------------------------------------------
# Validation and upload
# ---------------------------------------------------------------------------------------------------------------


def validate_repo_id(repo_id: str) -> None:
    """Raise `PublishError` unless ``repo_id`` is a valid ``ORG/NAME`` Hub model id."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hub_validate

    if repo_id.count("/") != 1:
        raise PublishError(f"repo id {repo_id!r} must have the form ORG/NAME")
    try:
        hub_validate(repo_id)
    except HFValidationError as error:
        raise PublishError(f"invalid repo id {repo_id!r}: {error}") from None


def validate_hub_folder(folder: str | Path) -> list[str]:
    """Check that a folder is complete and safe to upload; return the uploaded file names or raise `PublishError`.

    Requires a README.md whose metadata parses, and either an adapter (config + safetensors) or full weights in
    safetensors plus a config.json whose ``auto_map`` names code files present in the folder. Pickle files are
    refused.
    """
    from huggingface_hub import ModelCard

    folder = Path(folder)
    files = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    pickles = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise PublishError(f"refusing to upload pickle files {pickles}; save weights as safetensors", folder)
    if "README.md" not in files:
        raise PublishError("missing README.md model card", folder)
    try:
        ModelCard.load(folder / "README.md")
    except Exception as error:  # the card's YAML is user-visible: report any parse failure as ours
        raise PublishError(f"README.md metadata does not parse: {error}", folder) from None
    if "adapter_config.json" in files:
        if "adapter_model.safetensors" not in files:
            raise PublishError("adapter_config.json without adapter_model.safetensors", folder)
        return files
    if not any(name.endswith(".safetensors") for name in files):
        raise PublishError("no .safetensors weights", folder)
    if "config.json" not in files:
        raise PublishError("missing config.json", folder)
    auto_map = json.loads((folder / "config.json").read_text()).get("auto_map") or {}
    if "AutoModel" not in auto_map or "AutoConfig" not in auto_map:
        raise PublishError("config.json auto_map lacks AutoConfig/AutoModel; remote code would not load", folder)
    for reference in auto_map.values():
        module = str(reference).split("--")[-1].rsplit(".", 1)[0]
        if f"{module}.py" not in files:
            raise PublishError(f"auto_map names {reference!r} but {module}.py is not in the folder", folder)
    return files


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the Hub could not be reached" for the installed HTTP client."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name in ("httpx2", "httpx", "requests"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        for attribute in ("TransportError", "ConnectionError", "Timeout"):
            error_type = getattr(module, attribute, None)
            if isinstance(error_type, type) and issubclass(error_type, BaseException):
                errors.append(error_type)
    return tuple(errors)


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str = "Upload model with facet-vlm") -> str:
    """Create the Hub repository (if needed) and upload the validated folder; return the commit URL.

    Network and authentication failures become a `PublishError` that says the folder is complete and how to
    push it later.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    folder = Path(folder)
    validate_repo_id(repo_id)
    validate_hub_folder(folder)
    later = f"the folder {folder} is complete; push it later with `hf upload {repo_id} {folder}` or --push"
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    except _network_errors() as error:
        raise PublishError(f"cannot reach the Hugging Face Hub ({type(error).__name__}: {error}); {later}") from None
    except LocalTokenNotFoundError:
        raise PublishError(f"no Hugging Face token: run `hf auth login` or set HF_TOKEN; {later}") from None
    except HfHubHTTPError as error:
        raise PublishError(f"the Hub refused the upload ({error}); {later}") from None
    return str(getattr(commit, "commit_url", commit))
