"""Does the physio-facial prompt model learn, and what does each of its parts add? (``bench.py physio``)

Every arm trains the same training config (default ``facet_vlm/configs/physio_prompt_synthetic_small.json``) on
generated face videos of the same subjects, ratings and subject-independent folds; arms differ only in what carries
the emotion in the videos (``synthetic_carrier``, see `facet_vlm.data.synthetic_video`) and in one model switch:

* ``both`` — the main result: face and pulse carry the arousal;
* ``face`` — the face alone carries it (the pulse stays at each person's baseline);
* ``pulse`` and ``pulse, without pulse prompts`` — the pulse alone carries it, with the pulse prompts on and off
  (off, the model reads no pulse at all: `PhysioPromptConfig.use_pulse_prompts` also turns the pulse-to-head
  shortcut off), so the difference is what the pulse path brings;
* ``pulse, prompts only`` — as ``pulse`` without the pulse-to-head shortcut (`use_pulse_embedding` off): the pulse
  reaches the heads through the prompt tokens alone;
* ``both, without subject adapters`` — no subject-specific adapters and no subject adversary, scored on the same
  unseen people;
* ``both, adapters without decoupling losses`` — the same shared and subject-specific adapters, no orthogonality
  and no adversary (the control for what the decoupling losses do); ``both, subject adversary alone`` — the
  adversary without the orthogonality loss;
* ``both, shared adapters on the tokens`` (and ``..., without decoupling losses``, ``..., without subject
  adapters``) — the shared adapters read the tokens themselves (``shared_adapter_input="tokens"``, the earlier
  design) instead of their within-clip change (the small config's ``"temporal_deviation"``);
* with the shared adapters on the tokens, the identity terms tried there: ``both, adversary on the shared code``
  (``adversary_input="shared_code"``), ``both, confusion adversary on the shared code`` / ``... on the pooled
  features`` (``adversary_objective="confusion"``), ``both, subject-mean matching on the shared code``
  (``invariance_weight`` 1), ``both, identity projection of the shared adapters`` (``identity_nullspace_rank`` 8);
* ``both, pulse relative to the person`` / ``pulse, pulse relative to the person`` — every clip's pulse map read
  against the mean map of the same person's clips (``pulse_reference="person_mean"``; shared adapters on the
  tokens, as when these arms were measured), with face and pulse or the pulse alone carrying the arousal; the
  same with the small config's shared adapters: ``..., within-clip change``.

A subject-identity probe then measures how much identity two feature sets of the last fold's saved model hold, over
the clips of that fold's training subjects (logistic regression on standardised features, stratified CV):
``video_embeds``, the time-pooled features the heads read (the frozen tower's output plus everything the trainable
path adds), and ``shared_code``, the shared adapters' contribution alone — what the decoupling acts on. The frozen
tower sees each person's skin, background and lighting, so identity in ``video_embeds`` mostly measures the frozen
tower; the decoupling works when the shared code holds less identity than the shared code of the shared adapters on
the tokens (and than the pooled features), while it still carries the emotion (``bench.py physio-readout``). The
probe runs twice: on the training subjects (whom the adversary and the subject adapters saw) and on the same fold's
test subjects (people the model never saw: chance is higher with fewer people, so compare arms, not the two tables).

Writes ``physio.json`` (every number, per fold) and ``physio.md`` (the tables) to the output folder. Every arm
saves each fold's model (``--final_model every_fold``), so that ``bench.py physio-readout OUT/runs/<arm>`` probes
the unseen people of every fold.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .comparison import load_run_model, run_slug

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = "facet_vlm/configs/physio_prompt_synthetic_small.json"
#: Override of the arms measured with the shared adapters on the tokens (the earlier small config's design).
TOKENS = {"shared_adapter_input": "tokens"}
#: Arm name -> the generator's carrier and the model-config overrides of that arm.
ARMS: dict[str, dict[str, Any]] = {
    "both": {"carrier": "both", "model_config": {}},
    "face": {"carrier": "face", "model_config": {}},
    "pulse": {"carrier": "pulse", "model_config": {}},
    "pulse, prompts only": {"carrier": "pulse", "model_config": {"use_pulse_embedding": False}},
    "pulse, without pulse prompts": {"carrier": "pulse", "model_config": {"use_pulse_prompts": False}},
    "both, without subject adapters": {"carrier": "both", "model_config": {"use_subject_adapters": False}},
    "both, adapters without decoupling losses": {"carrier": "both", "model_config": {"orthogonality_weight": 0.0,
                                                                                     "adversarial_weight": 0.0}},
    "both, subject adversary alone": {"carrier": "both", "model_config": {"orthogonality_weight": 0.0}},
    # the shared adapters on the tokens themselves (the earlier design) and the identity terms tried with it
    "both, shared adapters on the tokens": {"carrier": "both", "model_config": dict(TOKENS)},
    "both, shared adapters on the tokens, without decoupling losses": {
        "carrier": "both", "model_config": {**TOKENS, "orthogonality_weight": 0.0, "adversarial_weight": 0.0}},
    "both, shared adapters on the tokens, without subject adapters": {
        "carrier": "both", "model_config": {**TOKENS, "use_subject_adapters": False}},
    "both, adversary on the shared code": {"carrier": "both",
                                           "model_config": {**TOKENS, "adversary_input": "shared_code"}},
    "both, confusion adversary on the shared code": {
        "carrier": "both",
        "model_config": {**TOKENS, "adversary_input": "shared_code", "adversary_objective": "confusion"}},
    "both, confusion adversary on the pooled features": {
        "carrier": "both", "model_config": {**TOKENS, "adversary_objective": "confusion"}},
    "both, subject-mean matching on the shared code": {"carrier": "both",
                                                       "model_config": {**TOKENS, "invariance_weight": 1.0}},
    "both, identity projection of the shared adapters": {"carrier": "both",
                                                         "model_config": {**TOKENS, "identity_nullspace_rank": 8}},
    "both, pulse relative to the person": {"carrier": "both",
                                           "model_config": {**TOKENS, "pulse_reference": "person_mean"}},
    "pulse, pulse relative to the person": {"carrier": "pulse",
                                            "model_config": {**TOKENS, "pulse_reference": "person_mean"}},
    # the same reference with the small config's shared adapters (on within-clip change)
    "both, pulse relative to the person, within-clip change": {"carrier": "both",
                                                               "model_config": {"pulse_reference": "person_mean"}},
    "pulse, pulse relative to the person, within-clip change": {"carrier": "pulse",
                                                                "model_config": {"pulse_reference": "person_mean"}},
}
#: Arms whose saved model gets the subject-identity probe: every arm whose videos carry the emotion in both.
PROBED = tuple(arm for arm, spec in ARMS.items() if spec["carrier"] == "both")
#: Output fields of the model the identity probe reads (see the module docstring).
PROBE_FEATURES = ("video_embeds", "shared_code")
RESULTS_FILE, REPORT_FILE = "physio.json", "physio.md"
#: Output fields `embed_clips` collects: what the heads read (``features``: the pooled video features, with the pulse
#: embedding when the model feeds it to the heads), and its parts.
EMBEDDED_FIELDS = ("features", "video_embeds", "pulse_embeds", "shared_code")


def arm_argv(config_path: str | Path, arm: str) -> list[str]:
    """Training arguments of an arm: the config, the arm's carrier and its model-config overrides."""
    spec = ARMS[arm]
    argv = ["--config", str(config_path), "--synthetic_carrier", spec["carrier"]]
    if spec["model_config"]:
        argv += ["--model_config", json.dumps(spec["model_config"])]
    return argv


def train_arm(config_path: str | Path, arm: str, output_dir: Path, extra: list[str] | None = None) -> dict[str, Any]:
    """One training run of an arm through `facet_vlm.training.run`; returns its all_results plus the run folder."""
    from ..arguments import parse_args
    from ..training import run

    run_dir = output_dir / "runs" / run_slug(arm)
    model_args, data_args, loop_args = parse_args(
        [*arm_argv(config_path, arm), "--output_dir", str(run_dir), "--report_to", "none", "--final_model",
         "every_fold", *(extra or [])])
    results = run(model_args, data_args, loop_args)
    if results is None:
        raise ConfigError(f"the physio arm {arm!r} stopped early", run_dir)
    results["run_dir"] = str(run_dir)
    results["arguments"] = {"model": vars(model_args), "data": vars(data_args)}
    return results


def embed_clips(run_dir: str | Path, config_path: str | Path, arm: str, cache_dir: str | None = None
                ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, Any]]:
    """Every clip of the arm's data set through a saved fold model: ``({field: (N, D)} for `EMBEDDED_FIELDS`,
    labels (N,) of the config's target, subjects (N,), the fold's record)``, in the data set's order."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from ..arguments import parse_args
    from ..data.folds import column
    from ..data.prepare import prepare_dataset

    model, _, record = load_run_model(run_dir)
    model.eval()
    argv = arm_argv(config_path, arm) + (["--cache_dir", str(cache_dir)] if cache_dir else [])
    model_args, data_args, _ = parse_args(argv)
    prepared = prepare_dataset(model_args, data_args, Accelerator(cpu=True))
    target = 0 if prepared.label_set_name == "valence" else 1
    fields: dict[str, list[np.ndarray]] = {name: [] for name in EMBEDDED_FIELDS}
    labels = []
    with torch.no_grad():
        for batch in DataLoader(prepared.dataset, batch_size=8, collate_fn=prepared.collate_fn):
            batch_labels = batch["labels"].numpy()
            labels.append(batch_labels[:, target] if batch_labels.ndim == 2 else batch_labels)
            output = model(**{k: v for k, v in batch.items() if k not in ("labels", "subject_ids")})
            for name in EMBEDDED_FIELDS:
                value = getattr(output, name)
                if value is not None:
                    fields[name].append(value.float().numpy())
    stacked = {name: np.concatenate(rows) for name, rows in fields.items() if rows}
    return stacked, np.concatenate(labels), np.asarray(column(prepared.dataset, "subject")).astype(str), record


def identity_probe(run_dir: str | Path, config_path: str | Path, arm: str, folds: int = 4,
                   features: tuple[str, ...] = PROBE_FEATURES, subjects: str = "train",
                   cache_dir: str | None = None) -> dict[str, Any]:
    """Subject-identity accuracy (%) of a logistic-regression probe on each of `features` (output fields of the
    model: ``video_embeds``, ``shared_code``) of the last fold's saved model, cross-validated (stratified, ``folds``,
    the same splits for every feature set) over the clips of that fold's training subjects (``subjects="train"``:
    the people the subject adapters and the adversary were trained on) or of its test subjects (``"test"``: people
    the model never saw, so what the probe reads there is identity the shared path carries in general, not
    what the decoupling losses fitted to the training people).

    Returns ``identity_accuracy``/``identity_accuracy_std`` for the first feature set (``video_embeds``) and
    ``features``: {name: {"accuracy", "accuracy_std"}} for all of them."""
    return identity_probes(run_dir, config_path, arm, folds, features, (subjects,), cache_dir)[subjects]


def identity_probes(run_dir: str | Path, config_path: str | Path, arm: str, folds: int = 4,
                    features: tuple[str, ...] = PROBE_FEATURES,
                    subjects: tuple[str, ...] = ("train", "test"), cache_dir: str | None = None
                    ) -> dict[str, dict[str, Any]]:
    """`identity_probe` for each of `subjects` ("train", "test"), keyed by it: the model is loaded, the data set
    prepared and each clip embedded once for all of them."""
    from .probes import identity_cv_scores

    wrong = [who for who in subjects if who not in ("train", "test")]
    if wrong or not subjects:
        raise ConfigError(f"identity probe subjects={wrong or list(subjects)}: use 'train' or 'test'")
    unknown = sorted(set(features) - set(PROBE_FEATURES))
    if unknown or not features:
        raise ConfigError(f"identity probe features {unknown or list(features)}; choose from {list(PROBE_FEATURES)}")
    stacked, _, all_ids, record = embed_clips(run_dir, config_path, arm, cache_dir)
    results: dict[str, dict[str, Any]] = {}
    for who in subjects:
        keep = np.isin(all_ids, record[f"{who}_subjects"])
        ids = all_ids[keep]
        try:
            scores = {name: identity_cv_scores(stacked[name][keep], ids, folds) for name in features}
        except ConfigError as error:
            raise ConfigError(f"the identity probe on the {who} subjects: {error.reason}", run_dir) from None
        scored = {name: {"accuracy": round(100 * float(values.mean()), 2),
                         "accuracy_std": round(100 * float(values.std()), 2)} for name, values in scores.items()}
        first = scored[features[0]]
        results[who] = {"arm": arm, "identity_accuracy": first["accuracy"],
                        "identity_accuracy_std": first["accuracy_std"], "features": scored,
                        "chance": round(100 / len(set(ids)), 2), "subjects": len(set(ids)), "clips": len(ids),
                        "probed_subjects": who}
    return results


def _row(arm: str, results: dict[str, Any], wall_s: float) -> dict[str, Any]:
    return {"arm": arm, "carrier": ARMS[arm]["carrier"], "override": ARMS[arm]["model_config"],
            "accuracy": round(100 * results["accuracy"], 2), "accuracy_std": round(100 * results["accuracy_std"], 2),
            "accuracy_per_fold": [round(100 * a, 2) for a in results["accuracy_per_fold"]],
            "macro_f1": round(100 * results["macro_f1"], 2), "macro_f1_std": round(100 * results["macro_f1_std"], 2),
            "folds": results["num_folds"], "subjects": results["num_subjects"], "clips": results["num_samples"],
            "label_set": results["label_set"], "wall_s": round(wall_s, 1), "run_dir": results["run_dir"]}


def _probe_table(probes: list[dict[str, Any]], caption: str) -> list[str]:
    names = [n for n in PROBE_FEATURES if any(n in p.get("features", {}) for p in probes)] or ["video_embeds"]
    lines = [f"Subject-identity probe (logistic regression on standardised features of {caption}, stratified CV; "
             "`video_embeds`: the pooled features the heads read, frozen tower included; `shared_code`: the shared "
             "adapters' contribution alone; lower = less identity):", "",
             "| arm | " + " | ".join(f"identity accuracy, `{n}`" for n in names) + " | chance | subjects | clips |",
             "|---|" + "---|" * len(names) + "---|---|---|"]
    for p in probes:
        cells = []
        for name in names:
            scored = p.get("features", {}).get(name)
            if scored is None and name == "video_embeds":
                scored = {"accuracy": p["identity_accuracy"], "accuracy_std": p["identity_accuracy_std"]}
            cells.append("—" if scored is None else f"{scored['accuracy']:.2f} ± {scored['accuracy_std']:.2f}")
        lines.append(f"| {p['arm']} | " + " | ".join(cells) + f" | {p['chance']:.2f} | {p['subjects']} | "
                     f"{p['clips']} |")
    return lines


def render_physio_report(results: dict[str, Any]) -> str:
    """physio.md from physio.json content (its only source of numbers)."""
    rows = results["arms"]
    first = rows[0]
    parts = ["# Physio-facial prompt model: learning and ablations", "",
             f"Config `{results['config']}`; {first['subjects']} generated subjects, {first['clips']} clips, target "
             f"{first['label_set']} (high/low), subject-independent {first['folds']}-fold CV (every test subject "
             f"unseen in training); torch threads: {results['threads']}. Accuracy and macro-F1: mean ± population "
             "std over folds (%).", "",
             "| arm | carrier | override | accuracy | macro-F1 | per fold | wall time |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        parts.append(f"| {r['arm']} | {r['carrier']} | `{json.dumps(r['override'])}` | {r['accuracy']:.2f} ± "
                     f"{r['accuracy_std']:.2f} | {r['macro_f1']:.2f} ± {r['macro_f1_std']:.2f} | "
                     f"{', '.join(f'{a:.1f}' for a in r['accuracy_per_fold'])} | {r['wall_s']:.0f} s |")
    by_arm = {r["arm"]: r for r in rows}
    if "pulse" in by_arm and "pulse, without pulse prompts" in by_arm:
        gain = by_arm["pulse"]["accuracy"] - by_arm["pulse, without pulse prompts"]["accuracy"]
        parts += ["", f"Pulse prompts in the pulse-only setting: {gain:+.2f} points."]
    if "both" in by_arm and "both, without subject adapters" in by_arm:
        gain = by_arm["both"]["accuracy"] - by_arm["both, without subject adapters"]["accuracy"]
        parts += ["", f"Subject adapters on unseen people (both): {gain:+.2f} points."]
    captions = {"probe": "the last fold's training subjects' clips (the people the adversary saw)",
                "probe_unseen": "the last fold's test subjects' clips (people the model never saw)"}
    for key, caption in captions.items():
        if results.get(key):
            parts += ["", *_probe_table(results[key], caption)]
    return "\n".join(parts)


def run_physio_benchmark(config_path: str | Path = DEFAULT_CONFIG, output_dir: str | Path = "outputs/bench_physio",
                         arms: list[str] | None = None, probe: bool = True,
                         extra: list[str] | None = None, cache_dir: str | None = None) -> dict[str, Any]:
    """Train every arm, probe the probed ones, write physio.json and physio.md; return the results. ``cache_dir``
    overrides the config's (generated videos and the input cache) for training and probes alike."""
    arms = list(arms or ARMS)
    extra = [*(extra or []), *(["--cache_dir", str(cache_dir)] if cache_dir else [])]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ConfigError(f"unknown physio arms {unknown}; known: {list(ARMS)}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"config": str(config_path), "threads": torch.get_num_threads(), "arms": [],
                               "probe": [], "probe_unseen": []}
    for arm in arms:
        started = time.perf_counter()
        res = train_arm(config_path, arm, out, extra)
        results["arms"].append(_row(arm, res, time.perf_counter() - started))
    if probe:
        for row in results["arms"]:
            if row["arm"] in PROBED:
                probes = identity_probes(row["run_dir"], config_path, row["arm"], cache_dir=cache_dir)
                results["probe"].append(probes["train"])
                results["probe_unseen"].append(probes["test"])
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    report = render_physio_report(results)
    (out / REPORT_FILE).write_text(report + "\n", encoding="utf-8")
    print(report)
    return results


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("physio", help="the physio-facial prompt model: face / pulse / both, pulse "
                                                  "prompts and subject adapters on/off, identity probe")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="training config of every arm")
    parser.add_argument("--output_dir", "--output-dir", default="outputs/bench_physio")
    parser.add_argument("--arms", nargs="+", default=None, choices=list(ARMS), metavar="ARM",
                        help=f"arms to run (default all): {', '.join(repr(a) for a in ARMS)}")
    parser.add_argument("--no_probe", action="store_true", help="skip the subject-identity probe")
    parser.add_argument("--max_folds", type=int, default=None, help="run only the first N folds of every arm")
    parser.add_argument("--cache_dir", default=None, help="generated videos and input cache (default: the config's)")
    parser.set_defaults(run=run_physio)


def run_physio(args: argparse.Namespace) -> None:
    extra = ["--max_folds", str(args.max_folds)] if args.max_folds else []
    run_physio_benchmark(args.config, args.output_dir, args.arms, probe=not args.no_probe, extra=extra,
                         cache_dir=args.cache_dir)


__all__ = ["ARMS", "EMBEDDED_FIELDS", "PROBED", "PROBE_FEATURES", "add_parser", "arm_argv", "embed_clips",
           "identity_probe", "identity_probes", "render_physio_report", "run_physio_benchmark", "train_arm"]
