"""scripts/train.py on sequence (4D) data sets: tiny generated BU-4DFE, 4DME and BP4D sets, 2-step tiny models."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CommandResult, run_command, script_main

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "scripts" / "train.py"
EVALUATE = REPO / "scripts" / "evaluate_model.py"
CONFIGS = REPO / "facet_vlm" / "configs"
FRAMES_PER_SEQUENCE = 5
NUM_FRAMES = 3

TINY_FACET = {"vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
              "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                              "num_attention_heads": 2},
              "projection_dim": 32, "cvsa_heads": 2, "mtgf_heads": 2, "cvsa_layers": 1, "temporal_layers": 1,
              "num_frames": 4}
TINY_AFNET = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "fusion_stages": [0, 1],
              "image_size": 32, "mask_hidden_size": 8, "fusion_hidden_size": 8, "template_size": 16}
SMALL_MESHES = {"vertices": 1500, "texture_size": 64}


@pytest.fixture(scope="module")
def sequences(tmp_path_factory) -> Path:
    """3 subjects: BU-4DFE (6 sequences of 5 frames), 4DME (2 clips each) and BP4D (2 subjects, 8 tasks)."""
    from facet_vlm.data.synthetic import generate
    from facet_vlm.data.synthetic_sequences import generate_sequences

    root = tmp_path_factory.mktemp("sequences")
    generate(root / "bu", subjects=3, seed=0, formats=("bu4dfe",), sequence_frames=FRAMES_PER_SEQUENCE,
             progress=False, **SMALL_MESHES)
    generate_sequences(root / "me", subjects=3, seed=0, formats=("4dme",), clips=2, micro_frames=4, macro_frames=5,
                       **SMALL_MESHES)
    generate_sequences(root / "bp", subjects=2, seed=0, formats=("bp4d",), frames=4, **SMALL_MESHES)
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def run_script(script: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess | CommandResult:
    """``scripts/<script> ARGS``: train.py and evaluate_model.py in this process (their `facet_vlm.cli` entry
    points), the others as a subprocess."""
    if script.name in ("train.py", "evaluate_model.py"):
        done = run_command(script_main(script.name), *args)
        assert done.returncode == 0, done.stderr[-4000:]
        return done
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def train(tmp_path: Path, cache_dir: Path, dataset: str, **changes) -> Path:
    config = {"model": "facet_vlm", "model_config": TINY_FACET, "dataset": dataset, "protocol": "subject-kfold",
              "folds": 3, "max_folds": 1, "batch_size": 4, "max_steps": 2, "report_to": "none",
              "cache_dir": str(cache_dir), "output_dir": str(tmp_path / "run"), "num_frames": NUM_FRAMES,
              **changes}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    run_script(TRAIN, "--config", str(path))
    return tmp_path / "run"


@pytest.fixture(scope="module")
def bu4dfe_run(sequences, cache_dir, tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("bu4dfe_run"), cache_dir, f"bu4dfe:{sequences / 'bu' / 'bu4dfe'}")


def test_temporal_model_trains_on_bu4dfe_sequences_and_predicts_sequences(bu4dfe_run, sequences):
    from facet_vlm.data import load_bu4dfe
    from facet_vlm.data.prepare import ProcessorFeatures
    from facet_vlm.data.sequence_cache import sequence_features
    from facet_vlm.data.sequences import FrameSelection
    from facet_vlm.pipelines import load_model, load_processor

    results = json.loads((bu4dfe_run / "all_results.json").read_text())
    assert 0.0 <= results["accuracy"] <= 1.0 and results["num_samples"] == 18 and results["num_subjects"] == 3
    assert results["pooled"]["num_samples"] == results["fold_results"][0]["num_samples"]
    fold = json.loads((bu4dfe_run / "fold_0" / "results.json").read_text())
    assert fold["features"]["frames"] == {"num_frames": NUM_FRAMES, "mode": "uniform", "short_policy": "repeat",
                                          "apex_from_geometry": False, "max_apex_candidates": 16}
    assert not set(fold["train_subjects"]) & set(fold["test_subjects"])

    model = load_model(str(bu4dfe_run / "model")).eval()
    processor = load_processor(model, str(bu4dfe_run / "model"))
    frames = load_bu4dfe(sequences / "bu" / "bu4dfe")[0]["frames"]
    selected, features = sequence_features(frames, ProcessorFeatures(processor), FrameSelection(NUM_FRAMES))
    assert selected == [frames[0], frames[2], frames[4]]  # uniform over 5 frames, as sample_sequence_frames
    pixel_values = torch.from_numpy(features["pixel_values"])[None]
    assert pixel_values.shape == (1, NUM_FRAMES, 5, 7, 32, 32)
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
        first_frame_only = model(pixel_values=pixel_values[:, :1].expand_as(pixel_values)).logits
    assert logits.shape == (1, 6)
    assert not torch.allclose(logits, first_frame_only)  # every frame of the sequence counts, not only one


def test_static_model_uses_the_apex_frame_of_each_sequence(sequences, cache_dir, tmp_path):
    from accelerate import Accelerator

    from facet_vlm.arguments import DataArguments, ModelArguments
    from facet_vlm.data.prepare import prepare_dataset

    run = train(tmp_path, cache_dir, f"bu4dfe:{sequences / 'bu' / 'bu4dfe'}", model="afnet_m",
                model_config=TINY_AFNET)
    fold = json.loads((run / "fold_0" / "results.json").read_text())
    assert fold["features"]["frames"] == "apex" and "accuracy" in fold["metrics"]

    prepared = prepare_dataset(ModelArguments(model="afnet_m", model_config=json.dumps(TINY_AFNET)),
                               DataArguments(dataset=f"bu4dfe:{sequences / 'bu' / 'bu4dfe'}",
                                             cache_dir=str(cache_dir)), Accelerator(cpu=True))
    rows = prepared.dataset.with_format(None)
    for path, frames, apex in zip(rows["path"], rows["frames"], rows["apex_index"]):
        assert path == frames[apex] and apex > 0
    # Generated BU-4DFE clips go neutral -> apex (the middle frame) -> neutral; the geometric apex finder (frame
    # farthest from the first, on noisy scans) finds the middle frame of most of them.
    assert np.mean(np.equal(rows["apex_index"], FRAMES_PER_SEQUENCE // 2)) >= 0.75
    assert np.asarray(prepared.dataset[0]["pixel_values"]).ndim == 3  # one still image (C, H, W), no time axis


def test_4dme_leave_one_subject_out_reports_pooled_uf1_and_uar(sequences, cache_dir, tmp_path):
    run = train(tmp_path, cache_dir, f"4dme:{sequences / 'me' / '4dme'}", protocol="loso", max_folds=None,
                frame_mode="onset_apex_offset")
    results = json.loads((run / "all_results.json").read_text())
    assert results["labels"] == ["positive", "negative", "surprise", "repression", "others"]
    assert results["num_protocol_folds"] == 3 and results["fold_ids"] == [0, 1, 2]
    pooled = results["pooled"]
    assert pooled["num_samples"] == 6 == sum(fold["num_samples"] for fold in results["fold_results"])
    matrix = np.asarray(results["confusion_matrix"])
    assert pooled["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert 0.0 <= pooled["uf1"] <= 1.0 and 0.0 <= pooled["uar"] <= 1.0
    assert "UF1" in (run / "results.txt").read_text()


def test_bp4d_as_a_cross_dataset_test_set_keeps_the_training_classes(bu4dfe_run, sequences, tmp_path):
    run_script(EVALUATE, str(bu4dfe_run / "model"), "--dataset", f"bp4d:{sequences / 'bp' / 'bp4d'}",
               "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(tmp_path / "eval"))
    results = json.loads((tmp_path / "eval" / "evaluation_results.json").read_text())
    assert results["labels"] == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    # 2 subjects x the 6 tasks whose emotion is a basic expression (T4 embarrassment and T6 pain are left out).
    assert results["fold_results"][0]["num_samples"] == 12


def test_the_4d_synthetic_configs_run_with_tiny_overrides(cache_dir, tmp_path):
    overrides = ["--synthetic_subjects", "3", "--synthetic_options", json.dumps({**SMALL_MESHES,
                                                                                "sequence_frames": 3}),
                 "--model_config", json.dumps(TINY_FACET), "--max_steps", "2", "--batch_size", "4",
                 "--num_proc", "1", "--report_to", "none", "--cache_dir", str(cache_dir),
                 "--test_fraction", "0.34"]
    frames = {}
    for name in ("facet_vlm_4d_synthetic_small", "facet_vlm_4d_apex_synthetic_small"):
        config = json.loads((CONFIGS / f"{name}.json").read_text())
        assert config["synthetic_format"] == "bu4dfe" and config["model"] == "facet_vlm"
        out = tmp_path / name
        run_script(TRAIN, "--config", str(CONFIGS / f"{name}.json"), *overrides, "--num_frames",
                   str(min(config["num_frames"], 4)), "--output_dir", str(out))
        fold = json.loads((out / "fold_0" / "results.json").read_text())
        frames[name] = fold["features"]["frames"]
        assert json.loads((out / "all_results.json").read_text())["num_samples"] == 18
    assert frames["facet_vlm_4d_synthetic_small"]["mode"] == "uniform"
    assert frames["facet_vlm_4d_apex_synthetic_small"] == {**frames["facet_vlm_4d_synthetic_small"], "mode": "apex",
                                                           "num_frames": 1}


def test_pipeline_and_predict_take_a_sequence_as_folder_zip_or_frame_list(bu4dfe_run, sequences, tmp_path):
    import shutil

    from facet_vlm.data.prepare import ProcessorFeatures
    from facet_vlm.data.sequence_cache import sequence_features
    from facet_vlm.data.sequences import FrameSelection, SequenceError
    from facet_vlm.pipelines import pipeline

    model_dir = bu4dfe_run / "model"
    classifier = pipeline("expression-recognition", model=str(model_dir))
    folder = sequences / "bu" / "bu4dfe" / "F001" / "Happy"
    frames = sorted(str(path) for path in folder.glob("*.wrl"))
    archive = Path(shutil.make_archive(str(tmp_path / "happy"), "zip", folder.parent, folder.name))

    scores = classifier(str(folder), frame_scores=True)
    assert scores["frames"] == ["000.wrl", "002.wrl", "004.wrl"]  # the training selection: T=3, uniform
    assert classifier(str(archive)) == scores["scores"] == classifier(tuple(reversed(frames)))
    _, features = sequence_features(frames, ProcessorFeatures(classifier.processor), FrameSelection(NUM_FRAMES))
    pixel_values = torch.from_numpy(features["pixel_values"])[None]
    with torch.no_grad():
        expected = classifier.model(pixel_values=pixel_values).logits.softmax(-1)[0]
        first_frame = classifier.model(pixel_values=pixel_values[:, :1]).logits.softmax(-1)[0]
    labels = classifier.model.config.id2label
    assert {entry["label"]: entry["score"] for entry in scores["scores"]} == pytest.approx(
        {labels[i]: float(expected[i]) for i in range(len(expected))}, abs=1e-5)
    assert scores["frame_scores"][0] == pytest.approx(first_frame.tolist(), abs=1e-5)
    assert all(sum(row) == pytest.approx(1.0) for row in scores["frame_scores"])

    printed = run_script(REPO / "scripts" / "predict.py", "--model", str(model_dir), "--json", "--sequence", *frames)
    assert json.loads(printed.stdout.strip().splitlines()[-1])["expression"] == scores["scores"][0]["label"]

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "002.wrl").write_bytes(b"")
    with pytest.raises(SequenceError, match="002.wrl"):
        classifier(str(broken))


@pytest.mark.e2e
def test_sequence_hard_bench_prints_the_temporal_model_beside_its_apex_baseline(tmp_path):
    import shlex

    options = {**SMALL_MESHES, "sequence_frames": 4, "nuisance": "hard"}
    train_args = ["--max_steps", "2", "--batch_size", "4", "--test_fraction", "0.34",
                  "--model_config", json.dumps(TINY_FACET)]
    done = run_script(REPO / "scripts" / "bench.py", "sequence-hard", "--subjects", "3", "--seed", "5",
                      "--options", json.dumps(options), "--cache-dir", str(tmp_path / "cache"),
                      "--output-dir", str(tmp_path / "out"), "--json", str(tmp_path / "result.json"),
                      "--train-args", shlex.join(train_args), timeout=600)
    result = json.loads((tmp_path / "result.json").read_text())
    assert list(result["models"]) == ["temporal", "apex"] and result["options"] == options
    for name, numbers in result["models"].items():
        assert numbers["num_samples"] == 18 and 0 < numbers["num_test_samples"] < 18
        assert 0.0 <= numbers["accuracy"] <= 1.0
        frames = json.loads((tmp_path / "out" / name / "fold_0" / "results.json").read_text())["features"]["frames"]
        assert frames["mode"] == ("apex" if name == "apex" else
                                  json.loads((CONFIGS / "facet_vlm_4d_synthetic_small.json").read_text())["frame_mode"])
    table = done.stdout[done.stdout.index("hard 4D setting"):]
    assert "seed 5" in table and "temporal" in table and "apex" in table and table.count("%") >= 4
