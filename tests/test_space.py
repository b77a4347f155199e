"""The Gradio Space (hub/space/app.py) served on 127.0.0.1 and called through gradio_client.

The app runs in a subprocess exactly as on a Space (``python app.py``, port from GRADIO_SERVER_PORT), in its offline
mode (no model configured: a tiny random FACET-VLM), so the test exercises start-up, example generation, uploads,
the /predict and /analyze endpoints and error handling of bad uploads without any network.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from helpers import APP, running_space


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory) -> Path:
    """One synthetic subject in BU-3DFE layout (.wrl + texture + landmarks)."""
    from facet_vlm.data.synthetic import generate

    out = tmp_path_factory.mktemp("scans")
    generate(out, subjects=1, seed=3, intensities=1, progress=False)
    return out


@pytest.fixture(scope="module")
def client(space_url):
    from gradio_client import Client

    return Client(space_url, verbose=False)


def _scan_with_companions(scan_dir: Path) -> list[Path]:
    scan = sorted(scan_dir.rglob("*_F3D.wrl"))[0]
    return sorted(path for path in scan.parent.iterdir() if path.stem == scan.stem)


def _confidences(result: dict) -> dict[str, float]:
    return {row["label"]: row["confidence"] for row in result["confidences"]}


def test_predict_zip_returns_probabilities(client, scan_dir, tmp_path):
    from gradio_client import handle_file

    files = _scan_with_companions(scan_dir)
    bundle = tmp_path / "scan.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        for path in files:
            archive.write(path, arcname=path.name)
    result = client.predict(handle_file(str(bundle)), api_name="/predict")
    scores = _confidences(result)
    from facet_vlm.labels import BASIC_EXPRESSIONS

    assert set(scores) == set(BASIC_EXPRESSIONS)
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-4)
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    assert result["label"] == max(scores, key=scores.get)


def test_analyze_uploaded_files_renders_views_and_glb(client, scan_dir):
    from gradio_client import handle_file

    from facet_vlm.geometry import DEFAULT_VIEWS

    files = [handle_file(str(path)) for path in _scan_with_companions(scan_dir)]
    gallery, viewer, label, summary = client.predict(files, None, None, api_name="/analyze")
    assert len(gallery) == len(DEFAULT_VIEWS)
    assert Path(viewer).suffix == ".glb" and Path(viewer).read_bytes()[:4] == b"glTF"
    assert sum(_confidences(label).values()) == pytest.approx(1.0, abs=1e-4)
    assert label["label"] in summary


def test_bad_uploads_get_messages_and_server_keeps_serving(client, scan_dir, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a scan")
    with pytest.raises(AppError, match="Unsupported file type"):
        client.predict(handle_file(str(text_file)), api_name="/predict")

    scan = sorted(scan_dir.rglob("*_F3D.wrl"))[0]
    truncated = tmp_path / scan.name
    truncated.write_bytes(scan.read_bytes()[: scan.stat().st_size // 3])
    with pytest.raises(AppError, match=scan.name):
        client.predict(handle_file(str(truncated)), api_name="/predict")

    result = client.predict(handle_file(str(_zip_of(scan_dir, tmp_path))), api_name="/predict")
    assert sum(_confidences(result).values()) == pytest.approx(1.0, abs=1e-4)


def _neutral_with_companions(scan_dir: Path) -> list[Path]:
    neutral = sorted(scan_dir.rglob("*_NE00*_F3D.wrl"))[0]
    return sorted(path for path in neutral.parent.iterdir() if path.stem == neutral.stem)


def test_a_neutral_scan_for_a_model_without_a_reference_is_refused(client, scan_dir):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    files = [handle_file(str(path)) for path in _scan_with_companions(scan_dir)]
    neutral = [handle_file(str(path)) for path in _neutral_with_companions(scan_dir)]
    with pytest.raises(AppError, match="takes no neutral reference"):
        client.predict(files, None, None, neutral, api_name="/analyze")


def _zip_of(scan_dir: Path, tmp_path: Path) -> Path:
    bundle = tmp_path / "good.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        for path in _scan_with_companions(scan_dir):
            archive.write(path, arcname=path.name)
    return bundle


def test_example_faces_are_listed_and_analyzed(client):
    dropdowns = [component for component in client.config["components"] if component.get("type") == "dropdown"]
    examples = [value for value, _ in dropdowns[0]["props"]["choices"]]
    from facet_vlm.labels import BASIC_EXPRESSIONS

    assert {name.split(" ", 1)[1] for name in examples} >= set(BASIC_EXPRESSIONS)
    happy = next(name for name in examples if name.endswith("happiness"))
    gallery, viewer, label, summary = client.predict([], happy, None, api_name="/analyze")
    assert "_HA" in summary and Path(viewer).is_file()
    assert sum(_confidences(label).values()) == pytest.approx(1.0, abs=1e-4)


def test_oversized_upload_is_refused_with_a_message(client, scan_dir, tmp_path):
    from gradio_client import handle_file

    big = tmp_path / "big.ply"
    big.write_bytes(b"ply\n" + bytes(6 * 2**20))  # the fixture's server allows MAX_UPLOAD_MB=5
    with pytest.raises(ValueError, match="maximum file size"):
        client.predict(handle_file(str(big)), api_name="/predict")
    result = client.predict(handle_file(str(_zip_of(scan_dir, tmp_path))), api_name="/predict")
    assert sum(_confidences(result).values()) == pytest.approx(1.0, abs=1e-4)


def test_video_tab_reports_emotion_heart_rate_and_pulse(client, tmp_path):
    """/analyze_video on a generated face clip: valence and arousal scores, the heart rate near the generator's, a
    plot; a file that is not a video gets a message."""
    from gradio_client import handle_file

    from facet_vlm.data.synthetic_video import generate_videos

    (truth,) = generate_videos(tmp_path / "videos", subjects=1, trials_per_subject=1, seconds=6.0, size=48, seed=5)
    clip = next(path for path in (tmp_path / "videos").rglob("*") if path.suffix in (".avi", ".mp4"))
    names = [c["props"]["choices"] for c in client.config["components"]
             if c.get("type") == "radio" and c["props"].get("label") == "Video model"][0]
    valence, arousal, heart, plot = client.predict(handle_file(str(clip)), names[0][0], None,
                                                   api_name="/analyze_video")
    for scores in (valence, arousal):
        assert sum(item["confidence"] for item in scores["confidences"]) == pytest.approx(1.0, abs=1e-4)
    bpm = float(heart.split("**Heart rate:**")[1].split("bpm")[0])
    assert abs(bpm - truth.hr_bpm) < 6.0
    assert plot is not None
    note = tmp_path / "note.txt"
    note.write_text("not a video")
    with pytest.raises(Exception, match="unsupported video type"):
        client.predict(handle_file(str(note)), names[0][0], None, api_name="/analyze_video")


def test_space_readme_front_matter():
    import gradio
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(APP.parent / "README.md")
    data = card.data
    assert data.sdk == "gradio" and (APP.parent / data.app_file).is_file()
    assert data.sdk_version.split(".")[0] == gradio.__version__.split(".")[0]
    assert data.title and data.emoji and data.license
    requirements = (APP.parent / "requirements.txt").read_text()
    assert "facet-vlm" in requirements and "gradio" in requirements


@pytest.mark.slow
def test_space_serves_a_configured_model(scan_dir, tmp_path):
    """FACET_VLM_MODEL=<saved folder>: no offline notice, and /predict gives the pipeline's probabilities."""
    from gradio_client import Client, handle_file

    from facet_vlm import FacetVLMConfig, FacetVLMForExpressionRecognition, FacetVLMProcessor
    from facet_vlm.pipelines import pipeline

    tower = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    config = FacetVLMConfig(vision_config={**tower, "image_size": 32, "patch_size": 8}, text_config=tower,
                            projection_dim=32, cvsa_heads=2, mtgf_heads=2)
    model_dir = tmp_path / "model"
    FacetVLMForExpressionRecognition(config).save_pretrained(model_dir)
    FacetVLMProcessor.from_config(config).save_pretrained(model_dir)
    bundle = _zip_of(scan_dir, tmp_path)
    with running_space(tmp_path / "space.log", FACET_VLM_MODEL=str(model_dir)) as url:
        client = Client(url, verbose=False)
        radios = [component for component in client.config["components"] if component.get("type") == "radio"]
        assert [value for value, _ in radios[0]["props"]["choices"]] == ["FACET-VLM"]
        assert "Offline demo" not in json.dumps(client.config)
        served = _confidences(client.predict(handle_file(str(bundle)), api_name="/predict"))
    scan = next(path for path in _scan_with_companions(scan_dir) if path.suffix == ".wrl")
    expected = {row["label"]: row["score"] for row in pipeline("expression-recognition", model=model_dir)(scan)}
    assert served == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_space_serves_the_trained_model_found_locally_and_names_it(scan_dir, tmp_path):
    """No *_MODEL variable, a saved AFNet-M in a folder of the local search list: the Space serves it (not the random
    demo), names its folder on the page, and /predict gives that model's probabilities."""
    from gradio_client import Client, handle_file

    from couple import AFNetMConfig, AFNetMForExpressionRecognition
    from facet_vlm.pipelines import pipeline
    from facet_vlm.registry import model_entry

    config = AFNetMConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], fusion_stages=[0, 1],
                          image_size=32, mask_hidden_size=8, fusion_hidden_size=8, template_size=16)
    model_dir = tmp_path / "outputs" / "pretrain_afnet_m" / "model"
    AFNetMForExpressionRecognition(config).save_pretrained(model_dir)
    model_entry("afnet_m").processor_class.from_config(config).save_pretrained(model_dir)
    search = f"{tmp_path}/missing/{{name}}/model:{tmp_path}/outputs/pretrain_{{name}}/model"
    bundle = _zip_of(scan_dir, tmp_path)
    with running_space(tmp_path / "space.log", FACET_VLM_LOCAL_MODELS=search) as url:
        client = Client(url, verbose=False)
        radios = [component for component in client.config["components"] if component.get("type") == "radio"]
        assert [value for value, _ in radios[0]["props"]["choices"]] == ["AFNet-M"]
        page = json.dumps(client.config)
        assert "Offline demo" not in page and str(model_dir) in page and "found locally" in page
        served = _confidences(client.predict(handle_file(str(bundle)), api_name="/predict"))
    scan = next(path for path in _scan_with_companions(scan_dir) if path.suffix == ".wrl")
    expected = {row["label"]: row["score"] for row in pipeline("expression-recognition", model=model_dir)(scan)}
    assert served == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_space_serves_a_model_with_a_neutral_reference(scan_dir, tmp_path):
    """A saved FACET-VLM with ``neutral_reference="difference"``: /analyze classifies the scan against the uploaded
    neutral scan as the pipeline does, asks for the neutral scan when it is missing, and an example face brings its
    subject's neutral example; /predict (one file) refuses."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from facet_vlm import FacetVLMConfig, FacetVLMForExpressionRecognition
    from facet_vlm.pipelines import pipeline

    tower = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    config = FacetVLMConfig(vision_config={**tower, "image_size": 32, "patch_size": 8}, text_config=tower,
                            projection_dim=32, cvsa_heads=2, mtgf_heads=2, neutral_reference="difference")
    model_dir = tmp_path / "model"
    FacetVLMForExpressionRecognition(config).save_pretrained(model_dir)
    scan = next(path for path in _scan_with_companions(scan_dir) if path.suffix == ".wrl")
    neutral = next(path for path in _neutral_with_companions(scan_dir) if path.suffix == ".wrl")
    files = [handle_file(str(path)) for path in _scan_with_companions(scan_dir)]
    neutral_files = [handle_file(str(path)) for path in _neutral_with_companions(scan_dir)]
    with running_space(tmp_path / "space.log", FACET_VLM_MODEL=str(model_dir)) as url:
        client = Client(url, verbose=False)
        label = client.predict(files, None, None, neutral_files, api_name="/analyze")[2]
        with pytest.raises(AppError, match="neutral scan"):
            client.predict(files, None, None, None, api_name="/analyze")
        with pytest.raises(AppError, match="neutral scan"):
            client.predict(handle_file(str(_zip_of(scan_dir, tmp_path))), api_name="/predict")
        dropdowns = [component for component in client.config["components"] if component.get("type") == "dropdown"]
        happy = next(value for value, _ in dropdowns[0]["props"]["choices"] if value.endswith("happiness"))
        example_label = client.predict([], happy, None, None, api_name="/analyze")[2]
    runner = pipeline("expression-recognition", model=model_dir)
    expected = {row["label"]: row["score"] for row in runner(scan, neutral=neutral)}
    assert _confidences(label) == pytest.approx(expected, abs=1e-5)
    assert sum(_confidences(example_label).values()) == pytest.approx(1.0, abs=1e-4)


def test_space_serves_a_video_model_with_a_person_pulse_reference(tmp_path):
    """A saved physio model with ``pulse_reference="person_mean"``: /analyze_video asks for other clips of the person
    without them, and with them scores the clip as the pipeline does with that person's reference."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from couple import PhysioPromptConfig, PhysioPromptForEmotionRecognition, PhysioPromptProcessor
    from facet_vlm.data.synthetic_video import generate_videos
    from facet_vlm.pipelines import pipeline

    generate_videos(tmp_path / "videos", subjects=1, trials_per_subject=2, seconds=6.0, size=48, seed=4)
    clips = sorted(str(path) for path in (tmp_path / "videos").rglob("*") if path.suffix in (".avi", ".mp4"))
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
              "image_size": 32, "patch_size": 8}
    config = PhysioPromptConfig(vision_config=vision, num_prompts=2, adapter_bottleneck=8, pulse_hidden_size=16,
                                pulse_conv_channels=4, pulse_reference="person_mean")
    model_dir = tmp_path / "model"
    PhysioPromptForEmotionRecognition(config).save_pretrained(model_dir)
    PhysioPromptProcessor.from_config(config, num_frames=4, tfr_size=[32, 32]).save_pretrained(model_dir)
    with running_space(tmp_path / "space.log", PHYSIO_PROMPT_MODEL=str(model_dir)) as url:
        client = Client(url, verbose=False)
        names = [c["props"]["choices"] for c in client.config["components"]
                 if c.get("type") == "radio" and c["props"].get("label") == "Video model"][0]
        with pytest.raises(AppError, match="relative to the person's own clips"):
            client.predict(handle_file(clips[1]), names[0][0], None, api_name="/analyze_video")
        valence, arousal, heart, _ = client.predict(handle_file(clips[1]), names[0][0],
                                                    [handle_file(clip) for clip in clips], api_name="/analyze_video")
    runner = pipeline("video-emotion-recognition", model=model_dir)
    expected = runner(clips[1], pulse_reference=runner.processor.pulse_reference(clips))
    assert _confidences(arousal) == pytest.approx({row["label"]: row["score"] for row in expected["arousal"]},
                                                  abs=1e-5)
    assert "**Heart rate:**" in heart
