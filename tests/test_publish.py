"""Publishing (scripts/publish.py, facet_vlm.hub) and the expression-recognition pipeline (facet_vlm.pipelines).

A tiny random FACET-VLM is saved as a "trained" run directory (model + processor, a hand-written all_results.json
in train.py's layout and a confusion-matrix image), published to a folder, and then checked the way a Hub user
would meet it: remote code loading in a process that cannot import this project, the card's metadata, and a push
without network that fails cleanly and leaves the folder complete.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facet_vlm.cli import EXIT_PUSH_FAILED, publish_main

REPO = Path(__file__).resolve().parents[1]
PUBLISH_SCRIPT = REPO / "scripts" / "publish.py"
TINY_TOWER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
REPO_ID = "facet-vlm-tests/tiny-facet-vlm"


def tiny_facet_vlm(seed: int = 0):
    from facet_vlm import FacetVLMConfig, FacetVLMForExpressionRecognition

    torch.manual_seed(seed)
    config = FacetVLMConfig(vision_config={**TINY_TOWER, "image_size": 32, "patch_size": 8}, text_config=TINY_TOWER,
                            projection_dim=32, cvsa_heads=2, mtgf_heads=2)
    return FacetVLMForExpressionRecognition(config).eval()


def sphere_face(radius: float = 75.0, squash: float = 1.0):
    """A textured-free test "face": an icosphere (flattened along z by `squash`), in millimetres."""
    import trimesh

    from facet_vlm import Face

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    vertices = np.asarray(sphere.vertices, np.float32) * np.array([1.0, 1.0, squash], np.float32)
    return Face(vertices=vertices, faces=np.asarray(sphere.faces, np.int64))


def results_dict(labels: list[str]) -> dict:
    """An all_results.json in train.py's layout: means, stds, per-fold values, protocol and labels."""
    per_fold = {"0": {"accuracy": 0.5, "uar": 0.4, "war": 0.5, "macro_f1": 0.35},
                "1": {"accuracy": 0.7, "uar": 0.6, "war": 0.7, "macro_f1": 0.55}}
    summary = {}
    for metric in ("accuracy", "uar", "war", "macro_f1"):
        values = [fold[metric] for fold in per_fold.values()]
        summary[metric] = float(np.mean(values))
        summary[f"{metric}_std"] = float(np.std(values))
        summary[f"{metric}_per_fold"] = values
    return {**summary, "num_folds": 2, "folds": [0, 1], "per_fold": per_fold, "protocol": "subject-kfold",
            "num_protocol_folds": 10, "labels": labels, "model": "facet_vlm", "dataset": "synthetic"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A training-run directory as scripts/train.py leaves it: model/, all_results.json, confusion_matrix.png."""
    from PIL import Image

    from facet_vlm import FacetVLMProcessor

    run = tmp_path_factory.mktemp("run")
    model = tiny_facet_vlm()
    model.save_pretrained(run / "model")
    FacetVLMProcessor.from_config(model.config).save_pretrained(run / "model")
    (run / "all_results.json").write_text(json.dumps(results_dict(model.config.labels)))
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(run / "confusion_matrix.png")
    return run


@pytest.fixture(scope="module")
def published(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "export"
    code = publish_main([str(run_dir / "model"), "--repo-id", REPO_ID, "--out", str(out)])
    assert code == 0
    return out


def test_folder_is_complete_and_safe(published):
    from facet_vlm.hub import validate_hub_folder

    files = set(validate_hub_folder(published))
    assert {"model.safetensors", "config.json", "configuration_facet_vlm.py", "modeling_facet_vlm.py",
            "processor_config.json", "README.md", "confusion_matrix.png", "all_results.json"} <= files
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pkl"))]
    auto_map = json.loads((published / "config.json").read_text())["auto_map"]
    assert auto_map["AutoConfig"].startswith("configuration_facet_vlm.")
    assert auto_map["AutoModel"].startswith("modeling_facet_vlm.")


#: The papers as issue #13 gives them: (title, identifiers that must appear: arXiv id and/or venue details).
PAPERS = {
    "facet_vlm": ("Facial Emotion Learning with Text-Guided Multiview Fusion via Vision-Language Model for 3D/4D "
                  "Facial Expression Recognition", ("2507.01673", "Neurocomputing", "657", "131621", "M. Behzad")),
    "couplefer": ("CoupleFER: Dynamic Cross-Modal Fusion via Prompt Learning for Improved 2D+3D FER",
                  ("IEEE Transactions on Affective Computing", "3154--3168", "{16}", "{4}", "{2025}")),
    "afnet_m": ("AFNet-M: Adaptive Fusion Network with Masks for 2D+3D Facial Expression Recognition",
                ("2205.11785", "ICIP", "{2023}", "M. Sui and H. Li and Z. Zhu and F. Zhao")),
    "physio_prompt": ("Adaptive Physical-Facial Representation Fusion via Subject-Invariant Cross-Modal Prompt Tuning "
                      "for Video-Based Emotion Recognition",
                      ("2605.05694", "X. Luo and J. Li and R. Song and Y. Liu and J. Cheng")),
}


def test_every_models_card_cites_its_paper():
    from couple import AFNetMConfig, CoupleFERConfig, PhysioPromptConfig
    from facet_vlm import FacetVLMConfig
    from facet_vlm.hub import build_model_card

    model_types = {config.model_type for config in (FacetVLMConfig, CoupleFERConfig, AFNetMConfig, PhysioPromptConfig)}
    assert model_types == set(PAPERS)
    for model_type, (title, identifiers) in PAPERS.items():
        citation = build_model_card({"model_type": model_type}, REPO_ID).text.split("## Citation", 1)[1]
        assert f"title = {{{{{title}}}}}" in " ".join(citation.split()), model_type
        for identifier in identifiers:
            assert identifier in citation, (model_type, identifier)
        assert "TODO" not in citation
    assert "@" not in build_model_card({"model_type": "unknown"}, REPO_ID).text.split("## Citation", 1)[1]


def test_the_card_of_a_model_with_a_neutral_reference_says_how_to_pass_the_neutral_scan():
    from facet_vlm.hub import build_model_card

    for model_type in ("facet_vlm", "couplefer", "afnet_m"):
        card = build_model_card({"model_type": model_type, "neutral_reference": "difference"}, REPO_ID).text
        usage = card.split("## How to use", 1)[1]
        assert 'neutral="F0001_NE00WH_F3D.wrl"' in usage and "same person's neutral scan" in usage, model_type
        plain = build_model_card({"model_type": model_type, "neutral_reference": "none"}, REPO_ID).text
        assert "neutral=" not in plain.split("## How to use", 1)[1], model_type


def test_the_card_of_a_video_model_shows_the_video_pipeline_and_its_pulse_reference():
    from facet_vlm.hub import build_model_card

    plain = build_model_card({"model_type": "physio_prompt"}, REPO_ID).text
    usage = plain.split("## How to use", 1)[1]
    assert 'pipeline("video-emotion-recognition"' in usage and "expression-recognition" not in usage
    assert "pulse_reference" not in usage and "millimetres" not in plain and "rPPG" in plain
    relative = build_model_card({"model_type": "physio_prompt", "pulse_reference": "person_mean"}, REPO_ID).text
    usage = relative.split("## How to use", 1)[1]
    assert "pulse_reference=reference" in usage and "same person's own clips" in usage
    scan = build_model_card({"model_type": "afnet_m"}, REPO_ID).text
    assert 'pipeline("expression-recognition"' in scan and "video-emotion-recognition" not in scan


def test_card_metadata_has_model_index_from_results(published, run_dir):
    from huggingface_hub import ModelCard

    card = ModelCard.load(published / "README.md")
    results = json.loads((run_dir / "all_results.json").read_text())
    data = card.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "image-classification"
    assert "facet-vlm" in data.tags and data.license == "apache-2.0"
    assert data.base_model is None
    by_config = {(result.metric_config or result.metric_type): result for result in data.eval_results}
    assert by_config["accuracy"].metric_value == pytest.approx(results["accuracy"])
    assert by_config["uar"].metric_value == pytest.approx(results["uar"])
    assert by_config["macro_f1"].metric_value == pytest.approx(results["macro_f1"])
    assert {result.dataset_split for result in data.eval_results} == {results["protocol"]}
    assert card.data.to_dict()["model-index"][0]["name"] == REPO_ID.split("/")[1]
    body = card.text
    for label in results["labels"]:
        assert label in body
    assert f"{results['accuracy']:.4f}" in body and f"{results['per_fold']['1']['macro_f1']:.4f}" in body
    assert "synthetic faces" in body and "confusion_matrix.png" in body and "trust_remote_code=True" in body


def test_remote_code_loads_without_the_package(published, run_dir):
    """AutoModel + trust_remote_code on the published folder, in a process where facet_vlm/couple cannot be imported
    (the helper asserts that), gives the logits of the original model."""
    from helpers import load_remote_and_compare

    from facet_vlm import FacetVLMForExpressionRecognition, FacetVLMProcessor

    processor = FacetVLMProcessor.from_pretrained(published)
    inputs = processor(faces=[sphere_face(), sphere_face(squash=0.6)])
    with torch.no_grad():
        expected = FacetVLMForExpressionRecognition.from_pretrained(run_dir / "model").eval()(**inputs).logits
    remote = load_remote_and_compare(published, {"pixel_values": inputs["pixel_values"].numpy()},
                                     {"logits": expected}, auto_class="AutoModel")
    assert not np.allclose(remote["logits"][0], remote["logits"][1]), "two different faces gave the same logits"


def test_push_offline_fails_cleanly_and_keeps_folder(run_dir, tmp_path, capsys):
    from facet_vlm.hub import validate_hub_folder

    out = tmp_path / "export"
    code = publish_main([str(run_dir / "model"), "--repo-id", REPO_ID, "--out", str(out), "--push"])
    assert code == EXIT_PUSH_FAILED
    message = capsys.readouterr().err
    assert "cannot reach the Hugging Face Hub" in message and str(out) in message
    assert "Traceback" not in message
    assert "model.safetensors" in validate_hub_folder(out)


@pytest.mark.slow
def test_push_without_network_from_the_command_line(published, tmp_path):
    """The real CLI with online mode on but an unreachable Hub endpoint: exit code 3 (2 means bad arguments), a
    message, no traceback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{closed_port}",
           "HF_TOKEN": "hf_dummy_token_for_tests"}
    out = tmp_path / "export"
    completed = subprocess.run([sys.executable, str(PUBLISH_SCRIPT), str(published), "--repo-id", REPO_ID,
                                "--out", str(out), "--push"], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 3, completed.stdout + completed.stderr
    assert "cannot reach the Hugging Face Hub" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


def test_bad_arguments_exit_with_a_message(run_dir, tmp_path, capsys):
    assert publish_main([str(run_dir / "model"), "--repo-id", "no-slash", "--out", str(tmp_path / "a")]) == 1
    assert "ORG/NAME" in capsys.readouterr().err
    assert publish_main([str(tmp_path / "missing"), "--repo-id", REPO_ID, "--out", str(tmp_path / "b")]) == 1
    assert "model directory not found" in capsys.readouterr().err


def test_validation_refuses_pickles(published, tmp_path):
    import shutil

    from facet_vlm.hub import PublishError, validate_hub_folder

    copy = tmp_path / "copy"
    shutil.copytree(published, copy)
    (copy / "training_args.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(PublishError, match="pickle"):
        validate_hub_folder(copy)


def test_peft_run_publishes_adapter_only(tmp_path):
    from huggingface_hub import ModelCard
    from peft import LoraConfig, PeftModel, get_peft_model

    from facet_vlm import FacetVLMProcessor

    base = tiny_facet_vlm(seed=1)
    peft_model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "run" / "model")
    FacetVLMProcessor.from_config(base.config).save_pretrained(tmp_path / "run" / "model")
    out = tmp_path / "export"
    code = publish_main([str(tmp_path / "run" / "model"), "--repo-id", REPO_ID, "--out", str(out),
                                       "--base-model", "facet-vlm-tests/tiny-base"])
    assert code == 0
    files = {path.name for path in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "processor_config.json"} <= files
    assert "model.safetensors" not in files and not any(name.endswith(".py") for name in files)
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "facet-vlm-tests/tiny-base"
    assert card.data.library_name == "peft" and "peft" in card.data.tags
    pixel_values = torch.rand(1, base.config.num_views, base.config.num_channels, 32, 32)
    with torch.no_grad():
        expected = peft_model(pixel_values=pixel_values).logits
        reloaded = PeftModel.from_pretrained(tiny_facet_vlm(seed=1), out).eval()
        torch.testing.assert_close(reloaded(pixel_values=pixel_values).logits, expected)


# ---------------------------------------------------------------------------------------------------------------
# pipeline
# ---------------------------------------------------------------------------------------------------------------


def test_pipeline_matches_model_softmax_and_sorts(published, run_dir, tmp_path):
    from facet_vlm import FacetVLMForExpressionRecognition, FacetVLMProcessor
    from facet_vlm.io import write_wrl
    from facet_vlm.pipelines import pipeline

    faces = [sphere_face(), sphere_face(squash=0.6)]
    paths = []
    for index, face in enumerate(faces):
        paths.append(tmp_path / f"scan_{index}.wrl")
        write_wrl(paths[-1], face)
    classifier = pipeline("expression-recognition", model=published)
    model = FacetVLMForExpressionRecognition.from_pretrained(run_dir / "model").eval()
    with torch.no_grad():
        expected = model(**FacetVLMProcessor.from_pretrained(run_dir / "model")(faces=faces)).logits.softmax(-1)
    labels = model.config.labels

    one = classifier(str(paths[0]))
    assert [row["label"] for row in one] == [labels[i] for i in torch.argsort(expected[0], descending=True)]
    assert [row["score"] for row in one] == pytest.approx(sorted(expected[0].tolist(), reverse=True), abs=1e-5)
    assert sum(row["score"] for row in one) == pytest.approx(1.0, abs=1e-5)

    batch = classifier(paths, top_k=2, batch_size=1)
    assert len(batch) == 2 and all(len(rows) == 2 for rows in batch)
    for rows, probabilities in zip(batch, expected):
        assert rows[0]["score"] == pytest.approx(probabilities.max().item(), abs=1e-5)
        assert rows[0]["score"] >= rows[1]["score"]
    assert classifier(faces[1], top_k=1)[0]["label"] == labels[int(expected[1].argmax())]


def test_pipeline_accepts_a_model_instance_and_rejects_bad_input(tmp_path):
    from facet_vlm.errors import ConfigError, FacetVLMError
    from facet_vlm.pipelines import pipeline

    classifier = pipeline("expression-recognition", model=tiny_facet_vlm())
    assert len(classifier(sphere_face())) == classifier.model.config.num_labels
    with pytest.raises(ConfigError, match="unknown pipeline task"):
        pipeline("text-generation", model=classifier.model)
    missing = tmp_path / "missing.wrl"
    with pytest.raises(FacetVLMError, match="missing.wrl"):
        classifier(str(missing))


def _tiny_couplefer():
    from couple import CoupleFERConfig, CoupleFERForExpressionRecognition

    return CoupleFERForExpressionRecognition(CoupleFERConfig(
        vision_config={**TINY_TOWER, "image_size": 32, "patch_size": 8}, point_hidden_size=32,
        point_intermediate_size=64, point_num_attention_heads=2, num_point_groups=8, point_group_size=8,
        projection_dim=16, num_labels=6))


def _tiny_afnet_m():
    from couple import AFNetMConfig, AFNetMForExpressionRecognition

    return AFNetMForExpressionRecognition(AFNetMConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                       fusion_stages=[0, 1], num_labels=6))


@pytest.mark.parametrize("build", [_tiny_couplefer, _tiny_afnet_m], ids=["couplefer", "afnet_m"])
def test_pipeline_runs_couple_models_through_their_processors(build, tmp_path):
    from facet_vlm.pipelines import pipeline

    torch.manual_seed(0)
    model = build().eval()
    model.save_pretrained(tmp_path / "model")
    classifier = pipeline("expression-recognition", model=tmp_path / "model")
    assert type(classifier.processor).__name__ == type(model).__name__.replace("ForExpressionRecognition",
                                                                               "Processor")
    face = sphere_face()
    with torch.no_grad():
        expected = model(**{key: value for key, value in classifier.processor(faces=[face]).items()}).logits
    rows = classifier(face)
    assert rows[0]["label"] == model.config.id2label[int(expected.argmax())]
    assert sum(row["score"] for row in rows) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_real_training_run_publishes_and_loads(tmp_path):
    """scripts/train.py (2 steps, one fold, tiny towers) → publish.py → card and pipeline on the published folder."""
    from huggingface_hub import ModelCard

    from facet_vlm.pipelines import pipeline

    tiny = {**TINY_TOWER, "num_hidden_layers": 1}
    model_config = {"vision_config": {**tiny, "image_size": 32, "patch_size": 8}, "text_config": tiny,
                    "projection_dim": 32, "cvsa_heads": 2, "mtgf_heads": 2}
    run = tmp_path / "run"
    train = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "--model", "facet_vlm",
                            "--model_config", json.dumps(model_config), "--synthetic_subjects", "4", "--folds", "2",
                            "--max_folds", "1", "--max_steps", "2", "--batch_size", "4", "--cache_dir",
                            str(tmp_path / "cache"), "--output_dir", str(run)], capture_output=True, text=True,
                           timeout=900)
    assert train.returncode == 0, train.stderr[-4000:]
    out = tmp_path / "export"
    assert publish_main([str(run / "model"), "--repo-id", REPO_ID, "--out", str(out)]) == 0
    results = json.loads((run / "all_results.json").read_text())
    card = ModelCard.load(out / "README.md")
    accuracy = next(result for result in card.data.eval_results if result.metric_type == "accuracy")
    assert accuracy.metric_value == pytest.approx(results["accuracy"], abs=1e-6)
    assert (out / "confusion_matrix.png").is_file()
    scan = sorted((tmp_path / "cache").rglob("*_F3D.wrl"))[0]
    rows = pipeline("expression-recognition", model=out)(scan)
    assert [row["label"] for row in rows] and sum(row["score"] for row in rows) == pytest.approx(1.0, abs=1e-5)


def test_card_ships_no_placeholders(published):
    text = (published / "README.md").read_text()
    assert "TODO" not in text and PAPERS["facet_vlm"][0] in " ".join(text.split())
