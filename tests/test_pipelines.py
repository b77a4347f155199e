"""The pipelines as transformers pipelines: `transformers.pipeline(task, model=DIR, trust_remote_code=True)` for the
3D models, the face-video pipeline of the physio model (emotion scores, heart rate, pulse), and scripts/predict.py on
a video."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import facet_vlm
from facet_vlm.pipelines import ExpressionRecognitionPipeline, VideoEmotionRecognitionPipeline

REPO = Path(__file__).resolve().parents[1]
TOWER = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two 6 s face videos with a known heart rate (MAHNOB layout on disk) and their ground truth."""
    from facet_vlm.data.synthetic_video import generate_videos

    root = tmp_path_factory.mktemp("videos")
    truth = generate_videos(root, subjects=1, trials_per_subject=2, seconds=6.0, size=48, seed=3)
    paths = sorted(path for path in root.rglob("*") if path.suffix in (".avi", ".mp4"))
    assert len(paths) == 2
    return list(zip(paths, truth))


@pytest.fixture(scope="module")
def physio_dir(tmp_path_factory) -> Path:
    from couple import PhysioPromptConfig, PhysioPromptForEmotionRecognition, PhysioPromptProcessor

    folder = tmp_path_factory.mktemp("physio")
    config = PhysioPromptConfig(vision_config={**TOWER, "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
                                num_prompts=2, adapter_bottleneck=8, pulse_hidden_size=16, pulse_conv_channels=4)
    torch.manual_seed(0)
    PhysioPromptForEmotionRecognition(config).save_pretrained(folder)
    PhysioPromptProcessor.from_config(config, num_frames=4, tfr_size=[32, 32]).save_pretrained(folder)
    return folder


def test_transformers_pipeline_loads_a_scan_model_folder(tmp_path):
    import trimesh

    from facet_vlm import Face, FacetVLMConfig, FacetVLMForExpressionRecognition, FacetVLMProcessor

    config = FacetVLMConfig(vision_config={**TOWER, "image_size": 32, "patch_size": 8}, text_config=TOWER,
                            projection_dim=32, cvsa_heads=2, mtgf_heads=2)
    torch.manual_seed(0)
    model = FacetVLMForExpressionRecognition(config).eval()
    model.save_pretrained(tmp_path)
    processor = FacetVLMProcessor.from_config(config)
    processor.save_pretrained(tmp_path)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=75.0)
    faces = [Face(sphere.vertices, sphere.faces), Face(sphere.vertices * [1.0, 0.7, 1.0], sphere.faces)]

    facet_vlm.register_pipelines()
    classify = transformers.pipeline("expression-recognition", model=str(tmp_path), trust_remote_code=True)
    assert isinstance(classify, ExpressionRecognitionPipeline)
    with torch.no_grad():
        expected = model(**processor(faces=faces)).logits.softmax(-1)
    rows = classify(faces[0], top_k=3)
    assert len(rows) == 3 and rows[0]["label"] == config.id2label[int(expected[0].argmax())]
    assert rows[0]["score"] == pytest.approx(expected[0].max().item(), abs=1e-5)
    batched = classify(faces, batch_size=2)  # our collate stacks the rendered views
    for result, probabilities in zip(batched, expected):
        assert [row["score"] for row in result] == pytest.approx(sorted(probabilities.tolist(), reverse=True),
                                                                 abs=1e-5)


def test_video_pipeline_reports_emotion_heart_rate_and_pulse(physio_dir, clips):
    facet_vlm.register_pipelines()
    video = transformers.pipeline("video-emotion-recognition", model=str(physio_dir))
    assert isinstance(video, VideoEmotionRecognitionPipeline)
    results = video([str(path) for path, _ in clips])
    for result, (path, truth) in zip(results, clips):
        for head in ("valence", "arousal"):
            assert {row["label"] for row in result[head]} == {f"low {head}", f"high {head}"}
            assert sum(row["score"] for row in result[head]) == pytest.approx(1.0, abs=1e-5)
        assert result["fps"] == pytest.approx(truth.fps)
        assert len(result["pulse"]) == len(truth.frames)
        # rPPG (POS) on the clip recovers the generator's heart rate
        assert abs(result["heart_rate"] - truth.hr_bpm) < 6.0, (path.name, result["heart_rate"], truth.hr_bpm)
        # Every frame's skin region is accounted for (MTCNN, held, the skin-colour fallback, or none), and the
        # quality fields come with the heart rate.
        face = result["face"]
        assert sum(face[f"{kind}_frames"] for kind in ("detector", "held", "fallback", "no_face")) == len(truth.frames)
        assert isinstance(result["heart_rate_low_confidence"], bool) and isinstance(result["heart_rate_snr_db"], float)
        assert result["heart_rate_low_confidence"] == bool(result["heart_rate_warnings"])
        assert len(result["heart_rate_over_time"]["heart_rates"]) >= 1
    # frames given directly (e.g. a webcam capture) need their frame rate and give the same answer
    frames = clips[0][1].frames
    direct = video(np.asarray(frames), fps=clips[0][1].fps)
    assert direct["heart_rate"] == pytest.approx(results[0]["heart_rate"], abs=1.0)
    from facet_vlm.errors import ConfigError

    with pytest.raises(ConfigError, match="fps"):
        video(np.asarray(frames))
    from facet_vlm.errors import FormatError

    text = clips[0][0].parent / "notes.mp4"
    text.write_text("not a video\n" * 20)
    with pytest.raises(FormatError, match="notes.mp4: not a video file"):
        video(str(text))


def test_predict_script_on_a_video_prints_scores_and_saves_a_pulse_plot(physio_dir, clips, tmp_path):
    path, truth = clips[0]
    plot = tmp_path / "pulse.png"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "predict.py"), "--model", str(physio_dir),
                             "--json", "--pulse_plot", str(plot), str(path)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["path"] == str(path) and printed["pulse_plot"] == str(plot)
    assert abs(printed["heart_rate"] - truth.hr_bpm) < 6.0
    assert plot.is_file() and plot.stat().st_size > 1000


def test_processor_reports_the_heart_rate_method_while_the_model_input_keeps_its_own(physio_dir, clips):
    """The reported heart rate uses `heart_rate_method` (CHROM by default) on the same tracked regions; the pulse
    map the model reads still comes from `rppg_method` (POS), whatever the reported method."""
    from couple import PhysioPromptProcessor
    from facet_vlm.errors import ConfigError

    path, truth = clips[0]
    default = PhysioPromptProcessor.from_pretrained(physio_dir)
    assert default.rppg_method == "pos" and default.heart_rate_method == "chrom"
    settings = {name: getattr(default, name) for name in default.fields}
    as_pos = PhysioPromptProcessor(**{**settings, "heart_rate_method": "pos"})
    arrays, pulse = default.analyze(str(path))
    pos_arrays, pos_pulse = as_pos.analyze(str(path))
    assert pulse["method"] == "chrom" and pos_pulse["method"] == "pos"
    np.testing.assert_array_equal(arrays["tfr_values"], pos_arrays["tfr_values"])
    for reported in (pulse, pos_pulse, default.pulse(str(path))):
        assert abs(reported["heart_rate"] - truth.hr_bpm) < 6.0
    assert default.pulse(str(path))["method"] == "chrom"
    with pytest.raises(ConfigError, match="heart_rate_method"):
        PhysioPromptProcessor(heart_rate_method="green")


def test_a_model_with_a_person_pulse_reference_needs_the_persons_clips(physio_dir, clips, tmp_path):
    """A physio model trained with pulse_reference='person_mean' reads each clip's pulse map minus the person's mean
    map: the pipeline refuses to guess it, takes it from the processor, and gives the model exactly the relative
    map; a model without it refuses a reference; predict.py builds it from --pulse_reference clips."""
    from couple import PhysioPromptConfig, PhysioPromptForEmotionRecognition, PhysioPromptProcessor
    from facet_vlm.errors import ConfigError

    config = PhysioPromptConfig.from_pretrained(physio_dir, pulse_reference="person_mean")
    torch.manual_seed(1)
    model = PhysioPromptForEmotionRecognition(config).eval()
    folder = tmp_path / "relative"
    model.save_pretrained(folder)
    processor = PhysioPromptProcessor.from_pretrained(physio_dir)
    processor.save_pretrained(folder)
    paths = [str(path) for path, _ in clips]

    facet_vlm.register_pipelines()
    video = transformers.pipeline("video-emotion-recognition", model=str(folder))
    with pytest.raises(ConfigError, match="relative to the person's own clips"):
        video(paths[0])
    with pytest.raises(ConfigError, match="at least 2"):
        processor.pulse_reference(paths[:1])
    reference = processor.pulse_reference(paths)
    maps = processor(paths)["tfr_values"].numpy()
    np.testing.assert_allclose(reference, maps.mean(axis=0), atol=1e-5)
    batch = processor(paths, pulse_reference=reference)
    np.testing.assert_allclose(batch["tfr_values"].numpy().sum(axis=0), 0.0, atol=1e-4)  # the person's maps cancel
    with torch.no_grad():
        expected = model(**batch).arousal_logits.softmax(-1)
    result = video(paths[1], pulse_reference=reference)
    high = next(row["score"] for row in result["arousal"] if row["label"] == "high arousal")
    assert high == pytest.approx(expected[1, 1].item(), abs=1e-5)
    with pytest.raises(ConfigError, match="shape"):
        video(paths[1], pulse_reference=reference[:, :5])
    plain = transformers.pipeline("video-emotion-recognition", model=str(physio_dir))
    with pytest.raises(ConfigError, match="pulse_reference='none'"):
        plain(paths[0], pulse_reference=reference)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "scripts" / "predict.py"), "--model", str(folder), "--json"]
    refused = subprocess.run([*command, paths[1]], capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode != 0 and "--pulse_reference" in refused.stderr
    answered = subprocess.run([*command, "--pulse_reference", *paths, "--", paths[1]], capture_output=True,
                              text=True, env=env, timeout=300)
    assert answered.returncode == 0, answered.stderr[-3000:]
    printed = json.loads(answered.stdout.strip().splitlines()[-1])
    scores = {row["label"]: row["score"] for row in printed["arousal"]}
    assert scores["high arousal"] == pytest.approx(expected[1, 1].item(), abs=1e-4)


def test_pipeline_refuses_a_model_of_the_other_task(physio_dir):
    from facet_vlm.errors import ConfigError
    from facet_vlm.pipelines import pipeline

    with pytest.raises(ConfigError, match="video-emotion-recognition"):
        pipeline("expression-recognition", model=physio_dir)


def test_pipeline_and_predict_script_default_to_the_trained_model_found_locally(tmp_path, monkeypatch):
    """No model named: the pipeline and scripts/predict.py run the first saved model of the local search list (here
    from FACET_VLM_LOCAL_MODELS, relative to the current directory); with none there, a ConfigError names the
    folders searched."""
    import trimesh

    from facet_vlm import Face, FacetVLMConfig, FacetVLMForExpressionRecognition, FacetVLMProcessor
    from facet_vlm.errors import ConfigError
    from facet_vlm.pipelines import pipeline
    from facet_vlm.registry import find_local_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACET_VLM_LOCAL_MODELS", os.pathsep.join(["empty/{name}", "runs/pretrain_{name}/model"]))
    with pytest.raises(ConfigError, match="no trained model found locally.*runs/pretrain_facet_vlm/model"):
        pipeline("expression-recognition")
    config = FacetVLMConfig(vision_config={**TOWER, "image_size": 32, "patch_size": 8}, text_config=TOWER,
                            projection_dim=32, cvsa_heads=2, mtgf_heads=2)
    torch.manual_seed(0)
    model = FacetVLMForExpressionRecognition(config).eval()
    (tmp_path / "empty" / "facet_vlm").mkdir(parents=True)  # a folder without a model is passed over
    model.save_pretrained(tmp_path / "runs" / "pretrain_facet_vlm" / "model")
    FacetVLMProcessor.from_config(config).save_pretrained(tmp_path / "runs" / "pretrain_facet_vlm" / "model")
    assert find_local_model("facet_vlm") == Path("runs/pretrain_facet_vlm/model")
    assert find_local_model("couplefer") is None  # a folder of another model type does not count

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=75.0)
    face = Face(sphere.vertices, sphere.faces)
    classify = pipeline("expression-recognition")
    with torch.no_grad():
        expected = model(**FacetVLMProcessor.from_config(config)(faces=[face])).logits.softmax(-1)[0]
    assert classify(face)[0]["score"] == pytest.approx(expected.max().item(), abs=1e-5)

    scan = tmp_path / "sphere.ply"
    sphere.export(scan)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "predict.py"), "--json", str(scan)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the trained model found locally: runs/pretrain_facet_vlm/model" in result.stderr
    prediction = json.loads(result.stdout.strip().splitlines()[-1])
    assert prediction["scores"][0]["score"] == pytest.approx(classify(str(scan))[0]["score"], abs=1e-5)
