"""One protocol, four methods: the comparison, ablation, robustness and cross-dataset report.

``scripts/bench.py compare --config facet_vlm/configs/benchmark_small.json`` runs `run_benchmark`, which writes into the
config's ``output_dir``: ``report.md`` (the tables), ``results.json`` (the same numbers, machine-readable), the plots
(``side_by_side.png``, ``ablations.png``, ``robustness.png``, ``physio_probe.png``) and one training-run folder per
model and variant under ``runs/``. Every training goes through `facet_vlm.training.run` (the same entry point as
``scripts/train.py``); finished folds are reused when the benchmark is run again with the same settings.

Sections:

1. **Side by side**: every scan model on the same subject-independent K folds (``subject-kfold``, same
   ``fold_seed``) of one generated set in the BU-3DFE layout (intensities of ``data.use_intensities``, P1-style),
   the physio model on generated face videos: accuracy, UAR, macro-F1 (mean ± population std over folds, %),
   parameters, the run's wall time (input preparation included; cached inputs are reused by later runs) and
   inference throughput (model forward on the cached inputs of the last fold's test subjects, after one warm-up
   batch; scans or clips per second).
2. **Ablations**: `ABLATIONS` lists each paper component's switch (config fields, or processor settings through
   ``feature_overrides``); a variant whose switch the model's config lacks is reported as missing, not run.
3. **Robustness**: the last fold's model of each scan model scores that fold's test scans (at most
   ``robustness.max_scans``, evenly spaced) read from disk, perturbed by `facet_vlm.geometry.perturb` and rendered
   uncached by the model's own processor, at every configured strength.
4. **Cross-dataset**: the generator writes the BU-3DFE and Bosphorus layouts from the same subjects; a model trained
   (``holdout`` protocol) on one layout is scored on the other layout's scans of its held-out subjects only.
5. **Physio subject invariance**: a logistic-regression probe (scikit-learn, standardised features, stratified
   K-fold over clips) predicts the subject of the training subjects' clips from two feature sets of the model with
   and without the decoupled adapters: the time-pooled video embedding the heads read (the frozen tower's output
   with everything the trainable path adds; the frozen tower sees each person's skin and background) and the shared
   adapters' contribution alone (``shared_code``, what the decoupling acts on); chance = 1 / number of subjects.

Timings on a shared CPU are distorted by whatever else runs there; the report states the torch thread count.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

logger = logging.getLogger(__name__)

SCAN_MODELS = ("facet_vlm", "couplefer", "afnet_m")
PHYSIO = "physio_prompt"
METRICS = ("accuracy", "uar", "macro_f1")
RESULTS_FILE = "results.json"
#: Strength of each perturbation that leaves a scan unchanged (where the clean accuracy is drawn on its curve).
CLEAN_STRENGTH = {"decimation": 1.0}
REPORT_FILE = "report.md"

#: Ablation name → overrides: ``model_config`` (merged into the model's config) and ``feature_overrides``
#: (processor settings). ``requires`` names config fields that must exist for the variant to run.
ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "facet_vlm": {
        "without CVSA": {"model_config": {"use_cvsa": False}},
        "without MTGF": {"model_config": {"use_mtgf": False}},
        "without consistency loss": {"model_config": {"consistency_weight": 0.0}},
        "one view (frontal)": {"model_config": {"num_views": 1, "view_angles": [[0.0, 0.0]]}},
        "channels: depth": {"model_config": {"channels": ["depth"]}},
        "channels: normal": {"model_config": {"channels": ["normal"]}},
        "channels: texture": {"model_config": {"channels": ["texture"]}},
        "channels: texture+depth+normal": {"model_config": {"channels": ["texture", "depth", "normal"]}},
    },
    "couplefer": {
        "without CouPle": {"model_config": {"couple_mode": "off"}},
        "without cluster-level supervision": {"model_config": {"prototype_loss_weight": 0.0}},
        "image only": {"model_config": {"input_modality": "image"}},
        "points only": {"model_config": {"input_modality": "points"}},
    },
    "afnet_m": {
        "without mask attention": {"model_config": {"mask_attention_stages": []}},
        "equal fusion weights": {"model_config": {"importance_weight_stages": []}},
        "2D only": {"model_config": {"input_modality": "2d"}},
        "3D only": {"model_config": {"input_modality": "3d"}},
    },
    PHYSIO: {
        "without pulse prompts": {"model_config": {"use_pulse_prompts": False}},
        "without decoupled adapters": {"model_config": {"use_subject_adapters": False}},
        "rPPG: CHROM (instead of POS)": {"feature_overrides": {"rppg_method": "chrom"}},
    },
}


# ----------------------------------------------------------------------------------------------------- config
def load_benchmark_config(path: str | Path) -> dict[str, Any]:
    """Read a benchmark config (JSON); see ``facet_vlm/configs/benchmark_small.json`` for every key.

    ``ablations`` is ``"all"`` (every variant of `ABLATIONS` for every configured model) or a mapping of model →
    variant names; each model may carry its own ``loop`` overrides (e.g. the physio model's batch size).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("benchmark config not found", path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"not valid JSON: {error}", path) from error
    required = ("output_dir", "data", "loop", "models")
    missing = [key for key in required if key not in config]
    if missing:
        raise ConfigError(f"benchmark config lacks {missing}", path)
    unknown = sorted(set(config["models"]) - {*SCAN_MODELS, PHYSIO})
    if unknown:
        raise ConfigError(f"unknown models {unknown}", path)
    if config.get("ablations") == "all":
        config["ablations"] = {model: list(ABLATIONS[model]) for model in config["models"]}
    for model, names in (config.get("ablations") or {}).items():
        bad = sorted(set(names) - set(ABLATIONS.get(model, {})))
        if bad:
            raise ConfigError(f"unknown ablations of {model}: {bad}; known: {sorted(ABLATIONS.get(model, {}))}", path)
    return config


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _config_fields(model: str) -> set[str]:
    from ..registry import model_entry

    cls = model_entry(model).config_class
    names = {f.name for f in fields(cls)} if hasattr(cls, "__dataclass_fields__") else set()
    return names | set(vars(cls()).keys())


# ----------------------------------------------------------------------------------------------------- data
def generate_scans(config: dict[str, Any]) -> Path:
    """The generated set (BU-3DFE and Bosphorus layouts, same subjects) under the cache dir, once."""
    from ..data.synthetic import generate

    data = config["data"]
    options = {"vertices": data.get("vertices", 3000), "texture_size": data.get("texture_size", 256),
               "intensities": data.get("intensities", 4), "include_neutral": False}
    name = f"benchmark_s{data['subjects']}_seed{data.get('seed', 0)}_v{options['vertices']}_t{options['texture_size']}"
    root = Path(config.get("cache_dir", ".cache/facet_vlm_benchmark")) / "data" / name
    if not (root / ".complete").is_file():
        generate(root, subjects=data["subjects"], seed=data.get("seed", 0), formats=("bu3dfe", "bosphorus"),
                 num_proc=config.get("num_proc", 1), progress=False, **options)
        (root / ".complete").write_text("done\n")
    return root


def generate_video_set(config: dict[str, Any]) -> Path:
    from ..data.synthetic_video import generate_videos

    videos = config["physio"]["videos"]
    key = "_".join(f"{k}{videos[k]}" for k in sorted(videos))
    root = Path(config.get("cache_dir", ".cache/facet_vlm_benchmark")) / "videos" / key
    if not (root / ".complete").is_file():
        generate_videos(root, **videos)
        (root / ".complete").write_text("done\n")
    return root


# ----------------------------------------------------------------------------------------------------- training
def run_slug(name: str) -> str:
    """A variant or arm name as a run-folder name (non-alphanumerics become ``_``)."""
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def train(config: dict[str, Any], model: str, variant: str, dataset: str, overrides: dict[str, Any] | None = None,
          protocol: str = "subject-kfold", intensities: list[int] | None = None) -> dict[str, Any]:
    """One training run through `facet_vlm.training.run`; returns its all_results plus the run folder."""
    from ..arguments import DataArguments, LoopArguments, ModelArguments
    from ..training import run

    overrides = overrides or {}
    spec = config["models"][model]
    model_config = _merge(spec.get("model_config") or {}, overrides.get("model_config") or {})
    features = _merge(spec.get("feature_overrides") or {}, overrides.get("feature_overrides") or {})
    slug = run_slug(variant) or "main"
    output_dir = Path(config["output_dir"]) / "runs" / model / slug
    model_args = ModelArguments(model=model, model_config=json.dumps(model_config), label_set=spec.get("label_set"))
    data_args = DataArguments(
        dataset=dataset, protocol=protocol, folds=config.get("folds", 2), fold_seed=config.get("fold_seed", 0),
        test_fraction=config.get("cross_dataset", {}).get("test_fraction", 0.25), intensities=intensities,
        cache_dir=str(Path(config.get("cache_dir", ".cache/facet_vlm_benchmark"))), num_proc=config.get("num_proc", 1),
        feature_overrides=json.dumps(features) if features else None,
        augment=json.dumps(spec["augment"]) if spec.get("augment") else None)
    loop = {**config["loop"], **(spec.get("loop") or {})}
    loop_args = LoopArguments(output_dir=str(output_dir), report_to="none", eval_each_epoch=False,
                              final_model="last_fold", **loop)
    results = run(model_args, data_args, loop_args)
    if results is None:
        raise ConfigError(f"the {model} run {variant!r} stopped early", output_dir)
    results["run_dir"] = str(output_dir)
    return results


def _pct(value: float) -> float:
    return round(100.0 * float(value), 2)


def metric_row(results: dict[str, Any]) -> dict[str, Any]:
    """Mean and std (in %, 2 decimals) of every reported metric of a run."""
    row = {}
    for name in METRICS:
        row[name] = _pct(results[name])
        row[f"{name}_std"] = _pct(results[f"{name}_std"])
    row["folds"] = len(results["fold_ids"])
    return row


def load_run_model(run_dir: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """The saved model (last fold), its processor and the last fold's record; given a fold's folder of a
    ``--final_model every_fold`` run (``fold_<i>``, holding ``model/`` and ``results.json``), that fold's."""
    from ..registry import model_entry

    model_dir = Path(run_dir) / "model"
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    entry = model_entry(config["model_type"])
    model = entry.model_class.from_pretrained(str(model_dir)).eval()
    processor = entry.processor_class.from_pretrained(str(model_dir))
    own = Path(run_dir) / "results.json"
    folds = [own] if own.is_file() else sorted(Path(run_dir).glob("fold_*/results.json"),
                                               key=lambda p: int(p.parent.name.split("_")[1]))
    record = json.loads(folds[-1].read_text(encoding="utf-8"))
    return model, processor, record


def count_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def throughput(config: dict[str, Any], model_name: str, dataset: str, run_dir: str, overrides=None,
               intensities=None) -> tuple[int, float]:
    """(parameters, inference samples/s) of a run's saved model on the cached inputs of its last test fold."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from ..arguments import DataArguments, ModelArguments
    from ..data.folds import column
    from ..data.prepare import prepare_dataset

    model, _, record = load_run_model(run_dir)
    spec = config["models"][model_name]
    features = _merge(spec.get("feature_overrides") or {}, (overrides or {}).get("feature_overrides") or {})
    model_config = _merge(spec.get("model_config") or {}, (overrides or {}).get("model_config") or {})
    prepared = prepare_dataset(
        ModelArguments(model=model_name, model_config=json.dumps(model_config)),
        DataArguments(dataset=dataset, folds=config.get("folds", 2), intensities=intensities,
                      cache_dir=str(Path(config.get("cache_dir", ".cache/facet_vlm_benchmark"))),
                      feature_overrides=json.dumps(features) if features else None),
        Accelerator(cpu=not torch.cuda.is_available()))
    subjects = np.asarray(column(prepared.dataset, "subject"))
    test = prepared.dataset.select(np.flatnonzero(np.isin(subjects, record["test_subjects"])))
    batch_size = config["loop"].get("eval_batch_size") or config["loop"].get("batch_size", 8)
    loader = DataLoader(test, batch_size=batch_size, collate_fn=prepared.collate_fn)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    batches = [{k: v.to(device) for k, v in batch.items() if k not in ("labels", "subject_ids")} for batch in loader]
    with torch.no_grad():
        model(**batches[0])  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in batches:
            model(**batch)
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return count_parameters(model), round(len(test) / max(elapsed, 1e-9), 1)


# ----------------------------------------------------------------------------------------------------- scoring
def score_faces(model: Any, processor: Any, faces: list[Any], labels: list[int], batch_size: int = 8) -> float:
    """Accuracy (%) of `model` on `faces` rendered uncached by its processor."""
    correct = 0
    with torch.no_grad():
        for start in range(0, len(faces), batch_size):
            inputs = processor(faces[start:start + batch_size])
            inputs = {k: v for k, v in inputs.items() if k != "labels"}
            predictions = model(**inputs).logits.argmax(dim=-1).cpu().numpy()
            correct += int((predictions == np.asarray(labels[start:start + batch_size])).sum())
    return _pct(correct / max(len(faces), 1))


def _scan_rows(index: Any, subjects: list[str], labels: list[str], intensities: list[int] | None) -> list[dict]:
    rows = []
    for row in index:
        if row["subject"] not in subjects or row["expression"] not in labels:
            continue
        if intensities and "intensity" in row and row["intensity"] not in (None, 0) and \
                int(row["intensity"]) not in intensities:
            continue
        rows.append(row)
    return rows


def robustness(config: dict[str, Any], model_name: str, run_dir: str, root: Path) -> list[dict[str, Any]]:
    """Accuracy of the last fold's model on its perturbed test scans, one row per perturbation and strength."""
    from ..data import load_bu3dfe
    from ..geometry.perturb import perturb
    from ..io import read_face

    settings = config["robustness"]
    model, processor, record = load_run_model(run_dir)
    labels = record["labels"]
    rows = _scan_rows(load_bu3dfe(root / "bu3dfe"), record["test_subjects"], labels,
                      config["data"].get("use_intensities"))
    limit = settings.get("max_scans")
    if limit and len(rows) > limit:
        rows = [rows[i] for i in np.linspace(0, len(rows) - 1, limit).round().astype(int)]
    faces = [read_face(row["path"]) for row in rows]
    targets = [labels.index(row["expression"]) for row in rows]
    out = [{"model": model_name, "perturbation": "none", "strength": 0.0, "scans": len(faces),
            "accuracy": score_faces(model, processor, faces, targets)}]
    for name, strengths in settings["perturbations"].items():
        for strength in strengths:
            perturbed = [perturb(face, name, float(strength), seed=i) for i, face in enumerate(faces)]
            out.append({"model": model_name, "perturbation": name, "strength": float(strength), "scans": len(faces),
                        "accuracy": score_faces(model, processor, perturbed, targets)})
    return out


def _bosphorus_names(subjects: int, seed: int) -> dict[str, str]:
    from ..data.synthetic import subject_identity

    return {subject_identity(i, seed).bu3dfe.lower(): subject_identity(i, seed).bosphorus for i in range(subjects)}


def cross_dataset(config: dict[str, Any], model_name: str, root: Path) -> list[dict[str, Any]]:
    """Train on one layout (holdout), score on the other layout's scans of the held-out subjects."""
    from ..data import load_bosphorus, load_bu3dfe
    from ..io import read_face

    data = config["data"]
    bu_to_bs = _bosphorus_names(data["subjects"], data.get("seed", 0))
    bs_to_bu = {bs: bu for bu, bs in bu_to_bs.items()}
    out = []
    for source, target in (("bu3dfe", "bosphorus"), ("bosphorus", "bu3dfe")):
        intensities = data.get("use_intensities") if source == "bu3dfe" else None
        results = train(config, model_name, f"cross_{source}", f"{source}:{root / source}", protocol="holdout",
                        intensities=intensities)
        model, processor, record = load_run_model(results["run_dir"])
        mapping = bu_to_bs if source == "bu3dfe" else bs_to_bu
        test_subjects = [mapping[s.lower()] for s in record["test_subjects"]]
        loader = load_bosphorus if target == "bosphorus" else load_bu3dfe
        index = loader(root / target)
        index_subjects = {s.lower(): s for s in set(index["subject"])}
        test_subjects = [index_subjects[s.lower()] for s in test_subjects if s.lower() in index_subjects]
        rows = _scan_rows(index, test_subjects, record["labels"],
                          data.get("use_intensities") if target == "bu3dfe" else None)
        faces = [read_face(row["path"]) for row in rows]
        targets = [record["labels"].index(row["expression"]) for row in rows]
        out.append({"model": model_name, "train": source, "test": target, "test_subjects": len(test_subjects),
                    "scans": len(faces), "within_accuracy": _pct(results["accuracy"]),
                    "cross_accuracy": score_faces(model, processor, faces, targets)})
    return out


def subject_probe(run_dir: str, dataset_root: Path, config: dict[str, Any], overrides=None) -> dict[str, Any]:
    """Linear-probe subject-identity accuracy (%) of the training subjects' clips from the time-pooled video
    embeddings (``probe_accuracy``) and from the shared adapters' contribution (``shared_code_probe_accuracy``),
    the same stratified splits for both."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from ..arguments import DataArguments, ModelArguments
    from ..data.folds import column
    from ..data.prepare import prepare_dataset
    from .probes import identity_cv_scores

    model, _, record = load_run_model(run_dir)
    spec = config["models"][PHYSIO]
    features = _merge(spec.get("feature_overrides") or {}, (overrides or {}).get("feature_overrides") or {})
    model_config = _merge(spec.get("model_config") or {}, (overrides or {}).get("model_config") or {})
    prepared = prepare_dataset(
        ModelArguments(model=PHYSIO, model_config=json.dumps(model_config)),
        DataArguments(dataset=f"synthetic:{dataset_root}", cache_dir=str(Path(config.get("cache_dir", ".cache"))),
                      feature_overrides=json.dumps(features) if features else None),
        Accelerator(cpu=True))
    subjects = np.asarray(column(prepared.dataset, "subject"))
    rows = prepared.dataset.select(np.flatnonzero(np.isin(subjects, record["train_subjects"])))
    embeds: dict[str, list[np.ndarray]] = {"video_embeds": [], "shared_code": []}
    with torch.no_grad():
        for batch in DataLoader(rows, batch_size=8, collate_fn=prepared.collate_fn):
            batch = {k: v for k, v in batch.items() if k not in ("labels", "subject_ids")}
            output = model(**batch)
            for name, parts in embeds.items():
                parts.append(getattr(output, name).float().numpy())
    ids = np.asarray(column(rows, "subject"))
    if len(set(ids)) < 2:
        raise ConfigError(f"the subject probe needs at least 2 training subjects, got {len(set(ids))}; "
                          "generate more subjects (physio.videos.subjects)")
    folds = config["physio"].get("probe_folds", 4)
    try:
        accuracy = {name: _pct(identity_cv_scores(np.concatenate(parts), ids, folds).mean())
                    for name, parts in embeds.items()}
    except ConfigError as error:
        raise ConfigError(f"the subject probe on the training subjects: {error.reason}") from None
    return {"probe_accuracy": accuracy["video_embeds"], "shared_code_probe_accuracy": accuracy["shared_code"],
            "chance": _pct(1 / len(set(ids))), "subjects": len(set(ids)), "clips": len(ids)}


# ----------------------------------------------------------------------------------------------------- report
def _fmt(row: dict[str, Any], name: str) -> str:
    return f"{row[name]:.2f} ± {row[name + '_std']:.2f}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render_report(results: dict[str, Any]) -> str:
    """report.md text from results.json content (the only source of its numbers)."""
    from ..registry import model_entry

    parts = ["# FACET-VLM benchmark report", "",
             f"Config `{results['config_path']}`; torch threads: {results['threads']}; device: {results['device']}. "
             "Timings on a shared machine are distorted by other jobs.", ""]
    parts += ["## 1. Side by side", "",
              f"Subject-independent {results['folds']}-fold CV of a generated BU-3DFE-layout set "
              f"({results['subjects']} subjects); the physio model on generated face videos "
              f"({results.get('physio_label_set', 'valence')}). "
              "Metrics in % (mean ± std over folds); time = wall time of the run; throughput = samples/s of the "
              "model forward on cached inputs.", ""]
    header = ["model", "accuracy", "UAR", "macro-F1", "parameters", "training time (s)", "inference (samples/s)"]
    rows = [[model_entry(r["model"]).title, _fmt(r, "accuracy"), _fmt(r, "uar"), _fmt(r, "macro_f1"),
             r["parameters"], r["runtime_s"], r["samples_per_s"]] for r in results["side_by_side"]]
    parts += [_table(header, rows), "", "![side by side](side_by_side.png)", ""]
    parts += ["## 2. Ablations", "", "Each row switches off one paper component (config override in brackets).", ""]
    header = ["model", "variant", "override", "accuracy", "UAR", "macro-F1"]
    rows = []
    for r in results["ablations"]:
        if r.get("missing"):
            rows.append([model_entry(r["model"]).title, r["variant"], f"`{r['override']}`",
                         f"not run: {r['missing']}", "–", "–"])
        else:
            rows.append([model_entry(r["model"]).title, r["variant"], f"`{r['override']}`", _fmt(r, "accuracy"),
                         _fmt(r, "uar"), _fmt(r, "macro_f1")])
    parts += [_table(header, rows), "", "![ablations](ablations.png)", ""]
    parts += ["## 3. Robustness", "", "Accuracy (%) of the last fold's model on its perturbed test scans "
              "(rendered uncached; strength 0 row = unperturbed).", ""]
    header = ["model", "perturbation", "strength", "scans", "accuracy"]
    rows = [[model_entry(r["model"]).title, r["perturbation"], r["strength"], r["scans"], f"{r['accuracy']:.2f}"]
            for r in results["robustness"]]
    parts += [_table(header, rows), "", "![robustness](robustness.png)", ""]
    parts += ["## 4. Cross-dataset", "", "Holdout training on one layout; accuracy (%) on the held-out subjects' "
              "scans in the same layout (within) and in the other layout (cross).", ""]
    header = ["model", "train", "test", "test subjects", "scans", "within accuracy", "cross accuracy"]
    rows = [[model_entry(r["model"]).title, r["train"], r["test"], r["test_subjects"], r["scans"],
             f"{r['within_accuracy']:.2f}", f"{r['cross_accuracy']:.2f}"] for r in results["cross_dataset"]]
    parts += [_table(header, rows), ""]
    parts += ["## 5. Physio subject invariance", "", "Linear-probe subject-identity accuracy (%) of the training "
              "subjects' clips from the time-pooled video embeddings the heads read and from the shared adapters' "
              "contribution alone (the shared code); lower = more subject-invariant.", ""]
    header = ["variant", "subjects", "clips", "video embeddings", "shared code", "chance"]
    rows = [[r["variant"], r["subjects"], r["clips"], f"{r['probe_accuracy']:.2f}",
             f"{r['shared_code_probe_accuracy']:.2f}", f"{r['chance']:.2f}"] for r in results["physio_probe"]]
    parts += [_table(header, rows), "", "![physio probe](physio_probe.png)", ""]
    return "\n".join(parts)


def plot_report(results: dict[str, Any], output_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    side = results["side_by_side"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([r["model"] for r in side], [r["accuracy"] for r in side], yerr=[r["accuracy_std"] for r in side],
           capsize=4)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("side by side")
    paths.append(output_dir / "side_by_side.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    ran = [r for r in results["ablations"] if not r.get("missing")]
    fig, ax = plt.subplots(figsize=(7, 0.35 * max(len(ran), 1) + 1.5))
    ax.barh([f"{r['model']}: {r['variant']}" for r in ran], [r["accuracy"] for r in ran],
            xerr=[r["accuracy_std"] for r in ran], capsize=3)
    ax.set_xlabel("accuracy (%)")
    ax.invert_yaxis()
    paths.append(output_dir / "ablations.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    from ..geometry.perturb import PERTURBATIONS

    names = list(dict.fromkeys(r["perturbation"] for r in results["robustness"] if r["perturbation"] != "none"))
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.2 * max(len(names), 1), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        for model in dict.fromkeys(r["model"] for r in results["robustness"]):
            rows = [r for r in results["robustness"] if r["model"] == model and r["perturbation"] == name]
            clean = [r for r in results["robustness"] if r["model"] == model and r["perturbation"] == "none"]
            points = [(CLEAN_STRENGTH.get(name, 0.0), clean[0]["accuracy"])] if clean else []
            points += [(r["strength"], r["accuracy"]) for r in rows]
            ax.plot(*zip(*sorted(points)), marker="o", label=model)
        ax.set_title(name)
        ax.set_xlabel(PERTURBATIONS[name][1])
        ax.set_ylabel("accuracy (%)")
    axes[0][0].legend(fontsize=7)
    paths.append(output_dir / "robustness.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    probe = results["physio_probe"]
    fig, ax = plt.subplots(figsize=(5, 3))
    at = np.arange(len(probe))
    ax.bar(at - 0.2, [r["probe_accuracy"] for r in probe], 0.4, label="video embeddings")
    ax.bar(at + 0.2, [r["shared_code_probe_accuracy"] for r in probe], 0.4, label="shared code")
    ax.set_xticks(at, [r["variant"] for r in probe])
    if probe:
        ax.axhline(probe[0]["chance"], color="grey", linestyle="--", label="chance")
        ax.legend()
    ax.set_ylabel("subject-probe accuracy (%)")
    paths.append(output_dir / "physio_probe.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------------------------------- main
def select_models(config: dict[str, Any], names: list[str] | None) -> dict[str, Any]:
    """The config restricted to the models ``names`` (all of them when ``None``): their entries, ablations,
    robustness and cross-dataset runs; the physio section runs only with the physio model."""
    if names is None:
        return config
    unknown = sorted(set(names) - set(config["models"]))
    if unknown:
        raise ConfigError(f"models {unknown} are not in the benchmark config (it has {sorted(config['models'])})")
    config = copy.deepcopy(config)
    config["models"] = {name: spec for name, spec in config["models"].items() if name in names}
    config["ablations"] = {name: v for name, v in (config.get("ablations") or {}).items() if name in names}
    for key in ("robustness", "cross_dataset"):
        if config.get(key):
            config[key]["models"] = [name for name in config[key].get("models", []) if name in names]
    return config


def run_benchmark(config_path: str | Path, output_dir: str | Path | None = None,
                  models: list[str] | None = None) -> dict[str, Any]:
    """Run every section of the benchmark config (for ``models`` only, when given; `select_models`); write
    results.json, report.md and the plots; return results."""
    config = select_models(load_benchmark_config(config_path), models)
    if output_dir is not None:
        config["output_dir"] = str(output_dir)
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    models = [m for m in config["models"] if m in SCAN_MODELS]
    root = generate_scans(config) if models else None
    scans = f"synthetic:{root}"
    intensities = config["data"].get("use_intensities")
    results: dict[str, Any] = {
        "config_path": str(config_path), "threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu", "folds": config.get("folds", 2),
        "subjects": config["data"]["subjects"], "side_by_side": [], "ablations": [], "robustness": [],
        "cross_dataset": [], "physio_probe": [],
        "physio_label_set": (config["models"].get(PHYSIO) or {}).get("label_set") or "valence"}
    video_root = generate_video_set(config) if PHYSIO in config["models"] else None
    datasets = {m: scans for m in models}
    if video_root is not None:
        datasets[PHYSIO] = f"synthetic:{video_root}"
    main_runs = {}
    for model, dataset in datasets.items():
        scan_intensities = intensities if model != PHYSIO else None
        res = train(config, model, "main", dataset, intensities=scan_intensities)
        main_runs[model] = res["run_dir"]
        parameters, speed = throughput(config, model, dataset, res["run_dir"], intensities=scan_intensities)
        results["side_by_side"].append({"model": model, **metric_row(res), "parameters": parameters,
                                        "runtime_s": res["runtime_s"], "samples_per_s": speed})
    for model, variants in (config.get("ablations") or {}).items():
        if model not in datasets:
            continue
        known = _config_fields(model)
        for variant in variants:
            override = ABLATIONS[model][variant]
            shown = json.dumps({**override.get("model_config", {}), **override.get("feature_overrides", {})})
            missing = sorted(set(override.get("model_config", {})) - known)
            if missing:
                results["ablations"].append({"model": model, "variant": variant, "override": shown,
                                             "missing": f"no config switch {', '.join(missing)}"})
                continue
            res = train(config, model, variant, datasets[model], override,
                        intensities=intensities if model != PHYSIO else None)
            results["ablations"].append({"model": model, "variant": variant, "override": shown, **metric_row(res),
                                         "run_dir": res["run_dir"]})
    for model in (config.get("robustness") or {}).get("models", []):
        results["robustness"] += robustness(config, model, main_runs[model], root)
    for model in (config.get("cross_dataset") or {}).get("models", []):
        results["cross_dataset"] += cross_dataset(config, model, root)
    if video_root is not None and (config.get("physio") or {}).get("probe", True):
        results["physio_probe"].append({"variant": "with decoupled adapters",
                                        **subject_probe(main_runs[PHYSIO], video_root, config)})
        override = ABLATIONS[PHYSIO]["without decoupled adapters"]
        res = train(config, PHYSIO, "without decoupled adapters", datasets[PHYSIO], override)
        results["physio_probe"].append({"variant": "without decoupled adapters",
                                        **subject_probe(res["run_dir"], video_root, config, override)})
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    report = render_report(results)
    (out / REPORT_FILE).write_text(report + "\n", encoding="utf-8")
    plot_report(results, out)
    print(report)
    return results


def add_compare_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compare", help="the four methods side by side, ablations, robustness, "
                                                   "cross-dataset and the physio subject probe (report.md)")
    parser.add_argument("--config", required=True, help="benchmark config (JSON), e.g. "
                                                        "facet_vlm/configs/benchmark_small.json")
    parser.add_argument("--output_dir", "--output-dir", default=None, help="overrides the config's output_dir")
    parser.add_argument("--models", nargs="+", default=None, choices=[*SCAN_MODELS, PHYSIO],
                        help="run only these models' rows, ablations and sections (default: every configured model)")
    parser.set_defaults(run=run_compare)


def run_compare(args: argparse.Namespace) -> None:
    run_benchmark(args.config, args.output_dir, args.models)


__all__ = ["ABLATIONS", "add_compare_parser", "load_benchmark_config", "render_report", "run_benchmark",
           "run_compare", "select_models"]
