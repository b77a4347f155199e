"""scripts/train.py end to end on tiny generated data: every model, resume after a stop, two processes, folds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, TINY_MODELS, fold_record, run_command, run_train, tiny_config

from facet_vlm.arguments import ModelArguments, parse_args
from facet_vlm.data.folds import build_folds, column
from facet_vlm.errors import ConfigError
from facet_vlm.training import build_model, weights_digest


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """3 subjects x 4 short face videos with a pulse (MAHNOB-HCI layout)."""
    from facet_vlm.data.synthetic_video import generate_videos

    root = tmp_path_factory.mktemp("videos")
    generate_videos(root, subjects=3, trials_per_subject=4, seconds=3.0, size=32, seed=0)
    return root


@pytest.mark.parametrize("model", ["facet_vlm", "couplefer", "afnet_m", "physio_prompt"])
def test_two_step_run_writes_results_and_a_loadable_model(model, tmp_path, scans, videos, cache_dir):
    data_root = videos if model == "physio_prompt" else scans
    run_train("--config", str(tiny_config(tmp_path, model, data_root, cache_dir)))
    output = tmp_path / "run"

    results = json.loads((output / "all_results.json").read_text())
    for key in ("accuracy", "uar", "macro_f1", "war", "accuracy_std", "accuracy_per_fold", "protocol", "labels"):
        assert key in results
    assert results["fold_ids"] == [0] and results["protocol"] == "subject-kfold"
    matrix = np.asarray(results["confusion_matrix"])
    assert matrix.shape == (len(results["labels"]),) * 2
    assert matrix.sum() == results["fold_results"][0]["num_samples"] > 0
    assert results["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert (output / "confusion_matrix.png").is_file() and (output / "curves.png").is_file()
    assert (output / "model" / "processor_config.json").is_file()
    weights = results["starting_weights"]  # built from a config: every tower random, the record saved with the model
    assert weights["source"] == "random" and weights["text_tower_trained"] is False
    assert json.loads((output / "model" / "config.json").read_text())["starting_weights"] == weights

    # The saved model is the last fold's model: reloading it gives the same weights.
    from facet_vlm.registry import model_entry

    reloaded = model_entry(model).model_class.from_pretrained(output / "model")
    record = fold_record(output)
    assert weights_digest(reloaded) == record["weights_sha256"]
    assert record["history"][-1]["step"] == 2
    assert not set(record["train_subjects"]) & set(record["test_subjects"])
    if model == "afnet_m":
        check_evaluate_and_predict(output, data_root, cache_dir, record)


def check_evaluate_and_predict(output: Path, data_root: Path, cache_dir: Path, record: dict) -> None:
    """scripts/evaluate_model.py leaves the model's training subjects out; scripts/predict.py prints probabilities."""
    from facet_vlm.cli import evaluate_main

    result = run_command(evaluate_main, str(output / "model"), "--dataset", f"synthetic:{data_root}", "--cache_dir",
                         str(cache_dir), "--output_dir", str(output / "eval"))
    assert result.returncode == 0, result.stderr[-3000:]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    scored = json.loads((output / "eval" / "evaluation_results.json").read_text())
    assert scored["excluded_training_subjects"] == record["train_subjects"]
    assert scored["fold_results"][0]["num_samples"] == 6 * len(record["test_subjects"])

    scan = sorted((data_root / "bu3dfe").rglob("*.wrl"))[0]
    command = [sys.executable, str(REPO / "scripts" / "predict.py"), "--model", str(output / "model"), "--json",
               str(scan)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    prediction = json.loads(result.stdout.strip().splitlines()[-1])
    assert prediction["path"] == str(scan)
    assert sum(entry["score"] for entry in prediction["scores"]) == pytest.approx(1.0, abs=1e-4)
    assert prediction["expression"] == prediction["scores"][0]["label"]


@pytest.mark.parametrize("augment", [None, {"mirror_prob": 0.5, "max_shift": 2, "max_holes": 2, "depth_noise": 0.01}],
                         ids=["plain", "augmented"])
def test_stopped_run_resumes_to_the_uninterrupted_result(tmp_path, scans, cache_dir, augment):
    # AFNet-M has dropout and batch norm: equality needs the RNG, the optimizer and the data order restored; with
    # augmentation the collator must draw the same per batch whether the run was resumed or not (loader prefetch).
    changes = {"augment": augment} if augment else {}
    config = tiny_config(tmp_path, "afnet_m", scans, cache_dir, max_steps=None, num_epochs=2,
                         checkpointing_steps="2", eval_each_epoch=True, **changes)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_train("--config", str(config), "--output_dir", str(whole))
    # 12 training scans / batch 4 = 3 steps per epoch: stop in the middle of epoch 2, after the step-4 checkpoint.
    stopped = run_train("--config", str(config), "--output_dir", str(resumed), "--stop_after_steps", "5")
    assert "stopped after step 5" in stopped.stdout + stopped.stderr
    assert not (resumed / "fold_0" / "results.json").exists()
    assert sorted(p.name for p in (resumed / "fold_0" / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    again = run_train("--config", str(config), "--output_dir", str(resumed), "--resume_from_checkpoint", "latest")
    assert "resumed from" in again.stdout + again.stderr

    expected, actual = fold_record(whole), fold_record(resumed)
    assert actual["weights_sha256"] == expected["weights_sha256"]
    assert actual["history"] == expected["history"]
    assert actual["metrics"] == expected["metrics"]
    # A rerun skips the finished fold and reports the same numbers.
    rerun = run_train("--config", str(config), "--output_dir", str(resumed))
    assert "already finished" in rerun.stdout + rerun.stderr
    assert json.loads((resumed / "all_results.json").read_text())["accuracy"] == expected["metrics"]["accuracy"]


@pytest.mark.e2e
def test_two_processes_agree_with_each_other_and_with_one_process(tmp_path, scans, cache_dir):
    config = tiny_config(tmp_path, "couplefer", scans, cache_dir, max_steps=3)
    one, two = tmp_path / "one", tmp_path / "two"
    run_train("--config", str(config), "--output_dir", str(one))
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                "29517"]
    run_train("--config", str(config), "--output_dir", str(two), launcher=launcher)

    ranks = [json.loads((two / "fold_0" / f"rank_{rank}_weights.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert json.loads((two / "all_results.json").read_text())["num_processes"] == 2
    # The global batch is split over the processes and DDP averages the gradients: same losses up to float noise.
    losses_one = [record["train_loss"] for record in fold_record(one)["history"]]
    losses_two = [record["train_loss"] for record in fold_record(two)["history"]]
    assert losses_two == pytest.approx(losses_one, rel=1e-4)


def subject_table(subjects: int = 12, intensities: int = 4):
    import datasets

    rows = [{"subject": f"F{s:04d}", "label": label, "intensity": level, "expression": str(label)}
            for s in range(subjects) for label in range(6) for level in range(1, intensities + 1)]
    return datasets.Dataset.from_list(rows)


@pytest.mark.parametrize("protocol, folds", [("subject-kfold", 5), ("loso", None), ("holdout", None),
                                             ("bu3dfe-p1-4fold", 4), ("bu3dfe-p2-3fold", 3)])
def test_folds_never_share_a_subject(protocol, folds):
    table = subject_table()
    splits = build_folds(table, protocol, k=folds or 10, test_fraction=0.25)
    everyone = set(table["subject"])
    assert len(splits) == {"loso": len(everyone), "holdout": 1}.get(protocol, folds)
    tested = []
    for train, test in splits:
        assert test and not set(train) & set(test)
        assert set(train) | set(test) == everyone
        tested += test
    if protocol != "holdout":
        assert sorted(tested) == sorted(everyone)  # every subject is tested exactly once


def test_config_file_sets_defaults_and_command_line_wins(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: afnet_m\nlearning_rate: 0.01\nmodel_config:\n  depths: [1, 1]\nintensities: [3, 4]\n")
    model_args, data_args, training_args = parse_args(["--config", str(config), "--learning_rate", "0.5"])
    assert model_args.model == "afnet_m" and model_args.model_config == {"depths": [1, 1]}
    assert data_args.intensities == [3, 4]
    assert training_args.learning_rate == 0.5

    (tmp_path / "bad.json").write_text(json.dumps({"learning_rat": 0.1}))
    with pytest.raises(ConfigError, match="learning_rat"):
        parse_args(["--config", str(tmp_path / "bad.json")])
    with pytest.raises(ConfigError, match="checkpointing_steps"):
        parse_args(["--checkpointing_steps", "often"])


def test_lora_adapts_the_towers_and_trains_the_new_modules_in_full():
    from facet_vlm.labels import BASIC_EXPRESSIONS

    model_args = ModelArguments(model="facet_vlm", model_config=json.dumps(TINY_MODELS["facet_vlm"]), peft="lora",
                                lora_r=4)
    model = build_model(model_args, BASIC_EXPRESSIONS)
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert any("vision_model" in name and "lora_A" in name for name in trainable)
    assert not any("vision_model" in name and "lora_" not in name for name in trainable)  # tower weights frozen
    assert any(".cvsa." in name and "lora_" not in name for name in trainable)  # new fusion modules train in full

    with pytest.raises(ConfigError, match="match no nn.Linear"):
        build_model(ModelArguments(model="afnet_m", model_config=json.dumps(TINY_MODELS["afnet_m"]), peft="lora"),
                    BASIC_EXPRESSIONS)


def test_lora_run_saves_an_adapter_folder_that_loads_on_its_base(tmp_path, scans, cache_dir):
    """--peft lora --save_adapters_only: model/ is a PEFT adapter naming base_model/; PeftModel.from_pretrained on
    that base gives the trained weights, the pipeline runs it, and publish.py wants a Hub id for the base."""
    from peft import PeftModel

    from facet_vlm import FacetVLMForExpressionRecognition
    from facet_vlm.hub import PublishError, build_hub_folder
    from facet_vlm.pipelines import pipeline

    run_train("--config", str(tiny_config(tmp_path, "facet_vlm", scans, cache_dir, peft="lora", lora_r=2,
                                          save_adapters_only=True)))
    output = tmp_path / "run"
    adapter = json.loads((output / "model" / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == (output / "base_model").resolve()
    assert any(name.endswith("cvsa") for name in adapter["modules_to_save"])
    assert not (output / "model" / "model.safetensors").exists()
    base = FacetVLMForExpressionRecognition.from_pretrained(adapter["base_model_name_or_path"])
    trained = PeftModel.from_pretrained(base, output / "model")
    assert weights_digest(trained) == fold_record(output)["weights_sha256"]

    scan = sorted((scans / "bu3dfe").rglob("*.wrl"))[0]
    rows = pipeline("expression-recognition", model=output / "model")(scan)
    processor = pipeline("expression-recognition", model=output / "model").processor
    with torch.no_grad():
        expected = trained.eval()(**processor(faces=[scan])).logits.softmax(-1)[0]
    assert rows[0]["score"] == pytest.approx(expected.max().item(), abs=1e-5)

    with pytest.raises(PublishError, match="publish that folder first"):
        build_hub_folder(output / "model", tmp_path / "hub", "facet-vlm-tests/tiny-adapter")
    folder = build_hub_folder(output / "model", tmp_path / "hub", "facet-vlm-tests/tiny-adapter",
                              base_model="facet-vlm-tests/tiny-base")
    assert "base_model: facet-vlm-tests/tiny-base" in (folder / "README.md").read_text()


def test_physio_pulse_reference_trains_on_each_persons_relative_pulse_maps(tmp_path, videos, cache_dir):
    """With pulse_reference='person_mean' every clip's pulse map is its measured map minus the mean map of the same
    person's clips (labels unused); the trained model keeps the setting, so prediction asks for the reference."""
    from accelerate import Accelerator

    from facet_vlm.data.prepare import prepare_dataset

    relative_config = {**TINY_MODELS["physio_prompt"], "pulse_reference": "person_mean"}
    prepared = {}
    for name, model_config in (("absolute", TINY_MODELS["physio_prompt"]), ("relative", relative_config)):
        config = tiny_config(tmp_path, "physio_prompt", videos, cache_dir, model_config=model_config)
        model_args, data_args, _ = parse_args(["--config", str(config)])
        prepared[name] = prepare_dataset(model_args, data_args, Accelerator(cpu=True)).dataset
    persons = np.asarray(column(prepared["absolute"], "subject"))
    absolute = np.stack([np.asarray(m) for m in prepared["absolute"]["tfr_values"]])
    relative = np.stack([np.asarray(m) for m in prepared["relative"]["tfr_values"]])
    assert len(set(persons)) == 3 and relative.shape == absolute.shape
    for person in set(persons):
        rows = persons == person
        np.testing.assert_allclose(relative[rows], absolute[rows] - absolute[rows].mean(axis=0), atol=1e-5)
    assert np.abs(absolute).mean() > 10 * np.abs(relative.sum(axis=0)).mean()

    run_train("--config", str(tiny_config(tmp_path, "physio_prompt", videos, cache_dir, model_config=relative_config)))
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["pulse_reference"] == "person_mean"


def test_face_video_inputs_are_stored_as_fixed_shape_arrays_and_an_old_list_cache_is_reused(tmp_path, videos):
    """The physio inputs are cached as fixed-shape arrays (a batch reads back as one array; nested lists were
    converted element by element); a cache an earlier release wrote as nested lists is cast once and reused, not
    computed again (here the videos are no longer readable by then)."""
    import shutil

    from accelerate import Accelerator
    from datasets import Dataset, Features, List, Value

    from facet_vlm.data.prepare import prepare_dataset

    shutil.copytree(videos, tmp_path / "videos")
    config = tiny_config(tmp_path, "physio_prompt", tmp_path / "videos", tmp_path / "cache")
    model_args, data_args, _ = parse_args(["--config", str(config)])
    prepared = prepare_dataset(model_args, data_args, Accelerator(cpu=True)).dataset
    pixels, maps = prepared.features["pixel_values"], prepared.features["tfr_values"]
    assert type(pixels).__name__ == "Array4D" and type(maps).__name__ == "Array3D"
    batch = prepared[[0, 1, 2]]
    assert batch["pixel_values"].shape == (3, *pixels.shape) and batch["tfr_values"].shape == (3, *maps.shape)

    (arrays_file,) = (tmp_path / "cache" / "features").glob("video_*.arrow")  # the map's own file is gone
    assert arrays_file.name.endswith(".arrays.arrow")
    nested = {"pixel_values": List(List(List(List(Value("float32"))))),
              "tfr_values": List(List(List(Value("float32"))))}
    current = Dataset.from_file(str(arrays_file))
    current.cast(Features({**current.features, **nested}),
                 cache_file_name=str(arrays_file.parent / arrays_file.name.replace(".arrays", "")))
    del current
    arrays_file.unlink()
    for video in (tmp_path / "videos").rglob("*.avi"):
        video.write_text("not a video any more")
    again = prepare_dataset(model_args, data_args, Accelerator(cpu=True)).dataset
    assert again.features["pixel_values"] == pixels and again.features["tfr_values"] == maps
    np.testing.assert_array_equal(again[[0, 1, 2]]["pixel_values"], batch["pixel_values"])
    assert list((tmp_path / "cache" / "features").glob("video_*.arrow")) == [arrays_file]


def test_cached_face_video_inputs_take_their_labels_from_the_data_set_as_read_now(tmp_path, videos):
    """The crops and pulse maps are cached by video path and settings; a session relabelled afterwards gets its new
    labels with the cached inputs (the videos are unreadable by then, so the inputs cannot have been recomputed)."""
    import re
    import shutil

    from accelerate import Accelerator

    from facet_vlm.data.prepare import prepare_dataset

    shutil.copytree(videos, tmp_path / "videos")
    config = tiny_config(tmp_path, "physio_prompt", tmp_path / "videos", tmp_path / "cache")
    model_args, data_args, _ = parse_args(["--config", str(config)])
    first = prepare_dataset(model_args, data_args, Accelerator(cpu=True)).dataset
    before = {path: tuple(int(v) for v in labels) for path, labels in zip(column(first, "video_path"),
                                                                          column(first, "labels"))}
    pixels = dict(zip(column(first, "video_path"), first["pixel_values"]))

    flipped = []
    for xml in sorted((tmp_path / "videos" / "Sessions").glob("*/session.xml"))[:3]:
        text = xml.read_text()
        arousal = float(re.search(r'feltArsl="([0-9.]+)"', text).group(1))
        xml.write_text(re.sub(r'feltArsl="[0-9.]+"', f'feltArsl="{2 if arousal > 5 else 8}"', text))
        flipped.append(next(path for path in before if Path(path).parent == xml.parent))
    for video in (tmp_path / "videos").rglob("*.avi"):
        video.write_text("not a video any more")
    again = prepare_dataset(model_args, data_args, Accelerator(cpu=True)).dataset
    after = {path: tuple(int(v) for v in labels) for path, labels in zip(column(again, "video_path"),
                                                                         column(again, "labels"))}
    assert set(after) == set(before) and len(flipped) == 3
    for path, (valence, arousal) in after.items():
        expected_arousal = 1 - before[path][1] if path in flipped else before[path][1]
        assert (valence, arousal) == (before[path][0], expected_arousal), path
    for path, pixel in zip(column(again, "video_path"), again["pixel_values"]):
        np.testing.assert_array_equal(pixel, pixels[path])


def test_subject_ids_reach_the_training_batches_without_a_copy_of_the_folds_rows(tmp_path, videos):
    """A subject-aware model's training batches carry each row's index among the fold's training subjects; the
    run leaves only the cached inputs in the cache dir (a subject-id column added to a fold's rows made `datasets`
    write a copy of them there, per fold and run)."""
    from accelerate import Accelerator

    from facet_vlm.data.prepare import prepare_dataset
    from facet_vlm.training.loop import SubjectIdCollator, training_subject_index

    config = tiny_config(tmp_path, "physio_prompt", videos, tmp_path / "cache")
    run_train("--config", str(config))
    assert [path.name for path in (tmp_path / "cache" / "features").iterdir()] == \
        [next((tmp_path / "cache" / "features").glob("video_*.arrays.arrow")).name]

    model_args, data_args, _ = parse_args(["--config", str(config)])
    prepared = prepare_dataset(model_args, data_args, Accelerator(cpu=True))
    subjects = column(prepared.dataset, "subject")
    train_rows = [row for row, subject in enumerate(subjects) if subject != sorted(set(subjects))[0]]
    index, overrides = training_subject_index(prepared.dataset.select(train_rows), prepared)
    assert overrides == {"num_train_subjects": len(set(subjects)) - 1}
    batch = SubjectIdCollator(prepared.collate_fn, index)([prepared.dataset[row] for row in train_rows])
    expected = [sorted(set(subjects))[1:].index(subjects[row]) for row in train_rows]
    assert batch["subject_ids"].tolist() == expected and set(expected) == {0, 1}
    assert batch["pixel_values"].shape[0] == len(train_rows)


def test_face_video_workers_finish_after_the_parent_ran_torch_on_several_threads(tmp_path, videos):
    """`--num_proc 2` computes the crops and pulse maps in forked workers; in a process that had already run torch's
    thread pool (a model trained before, as in `bench.py compare`), the workers hung forever in their first
    parallel torch op (MTCNN's weights). A fresh interpreter: torch on 2 threads runs parallel ops, then the map."""
    import signal

    config = tiny_config(tmp_path, "physio_prompt", videos, tmp_path / "cache", num_proc=2)
    script = "\n".join([
        "import torch",
        "torch.set_num_threads(2)",
        "a = torch.randn(1500, 1500); (a @ a).sum(); torch.zeros(8_000_000).clone()",
        "from accelerate import Accelerator",
        "from facet_vlm.arguments import parse_args",
        "from facet_vlm.data.prepare import prepare_dataset",
        f"model_args, data_args, _ = parse_args(['--config', {str(config)!r}])",
        "prepared = prepare_dataset(model_args, data_args, Accelerator(cpu=True))",
        "print('rows', len(prepared.dataset), 'threads', torch.get_num_threads())"])
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("the face-video map workers did not finish within 300 s (a fork after torch's threads ran)")
    assert process.returncode == 0, stderr[-2000:]
    assert stdout.split()[-4:] == ["rows", "12", "threads", "2"]  # the parent keeps its threads


def test_physio_lora_run_saves_adapters_that_peft_loads_on_the_saved_base(tmp_path, videos, cache_dir):
    """The physio model trains through PEFT (--peft lora) and saves only its adapters (prompts, shared and subject
    adapters, pooling, heads); the base it names has the last fold's number of subject adapters, and PEFT loads the
    adapters on it into exactly the trained weights."""
    from peft import PeftModel

    from couple.physio_prompt.modeling_physio_prompt import PhysioPromptForEmotionRecognition

    run_train("--config", str(tiny_config(tmp_path, "physio_prompt", videos, cache_dir, peft="lora",
                                          save_adapters_only=True)))
    output = tmp_path / "run"
    adapter = json.loads((output / "model" / "adapter_config.json").read_text())
    assert {"prompt_generator", "shared_adapter", "specific_adapter", "heads"} <= set(adapter["modules_to_save"])
    assert not (output / "model" / "model.safetensors").exists()
    record = fold_record(output)
    base = PhysioPromptForEmotionRecognition.from_pretrained(adapter["base_model_name_or_path"])
    assert base.config.num_train_subjects == len(record["train_subjects"])
    trained = PeftModel.from_pretrained(base, output / "model").eval()
    assert weights_digest(trained) == record["weights_sha256"]


def test_every_fold_with_adapters_only_saves_whole_fold_models(tmp_path, videos, cache_dir):
    """Under ``--save_adapters_only`` model/ is a PEFT folder on a base with the last fold's number of subject
    adapters; each fold's own model is saved whole (LoRA merged), so that every fold loads on its own."""
    from facet_vlm.benchmarks.comparison import load_run_model

    run_train("--config", str(tiny_config(tmp_path, "physio_prompt", videos, cache_dir, peft="lora",
                                          save_adapters_only=True, max_folds=2, final_model="every_fold")))
    output = tmp_path / "run"
    assert (output / "model" / "adapter_config.json").is_file()
    digests = []
    for k in (0, 1):
        folder = output / f"fold_{k}" / "model"
        assert (folder / "model.safetensors").is_file() and not (folder / "adapter_config.json").exists()
        model, _, record = load_run_model(output / f"fold_{k}")
        assert record["fold"] == k and model.config.num_train_subjects == len(record["train_subjects"])
        digests.append(weights_digest(model))
    assert digests[0] != digests[1]


def test_identity_probe_reads_the_training_or_the_unseen_test_subjects(tmp_path, cache_dir):
    """`bench.py physio`'s probe reads the last fold's training subjects or its test subjects (people the model
    never saw): each set's clips and no other, with chance set by how many people it holds."""
    from facet_vlm.benchmarks.physio import identity_probe, identity_probes
    from facet_vlm.data.synthetic_video import generate_videos

    root = tmp_path / "videos"
    generate_videos(root, subjects=4, trials_per_subject=4, seconds=3.0, size=32, seed=1)
    config = tiny_config(tmp_path, "physio_prompt", root, cache_dir, folds=2)
    run_train("--config", str(config))
    record = fold_record(tmp_path / "run")
    assert len(record["train_subjects"]) == len(record["test_subjects"]) == 2
    probes = {who: identity_probe(tmp_path / "run", config, "both", subjects=who) for who in ("train", "test")}
    for who, probe in probes.items():
        assert probe["probed_subjects"] == who and probe["subjects"] == 2 and probe["clips"] == 8
        assert probe["chance"] == 50.0 and set(probe["features"]) == {"video_embeds", "shared_code"}
        assert all(0.0 <= scored["accuracy"] <= 100.0 for scored in probe["features"].values())
    assert identity_probes(tmp_path / "run", config, "both") == probes  # one pass for both gives the same
    with pytest.raises(ConfigError, match="subjects"):
        identity_probe(tmp_path / "run", config, "both", subjects="all")
    # `bench.py physio-readout` on the same saved fold: a read-out per feature field, fitted on the fold's training
    # people and scored on its unseen test people, before and after centring each person's features.
    from facet_vlm.benchmarks.cli import main as bench

    bench(["physio-readout", str(tmp_path / "run"), "--config", str(config), "--output", str(tmp_path / "r.json")])
    readout = json.loads((tmp_path / "r.json").read_text())
    fold = readout["folds"][0]
    assert fold["test_subjects"] == record["test_subjects"] and readout["arm"] == "both"
    assert {"features", "video_embeds", "shared_code"} <= set(fold) and set(readout["mean_std"]) <= set(fold)
    for name in readout["mean_std"]:
        assert fold[name]["identity_chance"] == 50.0
        assert {"accuracy", "accuracy_centred", "identity", "identity_centred"} <= set(fold[name])


def test_every_fold_run_saves_each_folds_model_for_the_per_fold_readout(tmp_path, videos, cache_dir):
    """``--final_model every_fold`` saves each fold's own model in ``fold_<i>/model`` (model/ stays the last fold's);
    ``bench.py physio-readout RUN`` reads every one of them; a rerun reuses the folds with a model and trains again
    the one whose model is gone."""
    import shutil

    from facet_vlm.benchmarks.cli import main as bench
    from facet_vlm.benchmarks.comparison import load_run_model

    config = tiny_config(tmp_path, "physio_prompt", videos, cache_dir, max_folds=2, final_model="every_fold")
    run_train("--config", str(config))
    output = tmp_path / "run"
    records = [fold_record(output, k) for k in (0, 1)]
    assert records[0]["test_subjects"] != records[1]["test_subjects"]
    for k, record in enumerate(records):
        model, _, loaded = load_run_model(output / f"fold_{k}")
        assert weights_digest(model) == record["weights_sha256"] and loaded["fold"] == k
    assert records[0]["weights_sha256"] != records[1]["weights_sha256"]
    assert weights_digest(load_run_model(output)[0]) == records[1]["weights_sha256"]

    bench(["physio-readout", str(output), "--config", str(config), "--output", str(tmp_path / "r.json")])
    readout = json.loads((tmp_path / "r.json").read_text())
    assert [fold["test_subjects"] for fold in readout["folds"]] == [r["test_subjects"] for r in records]

    shutil.rmtree(output / "fold_0" / "model")
    log = run_train("--config", str(config)).stderr
    assert "fold_0: finished without its model" in log and "fold_1: already finished" in log
    assert (output / "fold_0" / "model" / "config.json").is_file()
    with pytest.raises(ConfigError, match="no saved model"):
        bench(["physio-readout", str(tmp_path), "--config", str(config)])


def test_max_train_subjects_keeps_a_nested_deterministic_subset_of_the_fold_training_subjects():
    from facet_vlm.data.folds import limit_train_subjects

    folds = build_folds(subject_table(60, 2), "bu3dfe-p1-10fold", seed=0)
    small = limit_train_subjects(folds, 10, seed=0)
    large = limit_train_subjects(folds, 40, seed=0)
    assert limit_train_subjects(folds, 10, seed=0) == small  # deterministic
    assert limit_train_subjects(folds, 10, seed=1) != small  # and drawn by the seed
    assert limit_train_subjects(folds, None) == folds and limit_train_subjects(folds, 54) == folds
    for (train, test), (few, few_test), (more, _) in zip(folds, small, large):
        assert len(train) == 54 and len(few) == 10 and len(more) == 40
        assert few_test == test  # the test subjects are untouched ...
        assert set(few) <= set(more) <= set(train)  # ... nested subsets of the fold's training subjects ...
        assert not set(more) & set(test)  # ... never a test subject
    assert small[0][0] != small[1][0]  # each fold draws its own subset
    with pytest.raises(ConfigError, match="max_train_subjects"):
        limit_train_subjects(folds, 0)
    _, data_args, _ = parse_args(["--max_train_subjects", "20", "--train_subjects_seed", "3"])
    assert (data_args.max_train_subjects, data_args.train_subjects_seed) == (20, 3)


def test_the_main_job_config_runs_with_calibrated_motion(tmp_path):
    """The README's main job (its config as it is, a tiny budget): generated identities moved by the calibrated
    motion, trained and scored on held-out subjects, its model found where the pipeline and the Space look."""
    config = REPO / "facet_vlm" / "configs" / "facet_vlm_calibrated_small.json"
    out = tmp_path / "main"
    run_train("--config", str(config), "--max_steps", "1", "--synthetic_subjects", "4", "--synthetic_options",
              json.dumps({"vertices": 800, "texture_size": 32, "motion": "bu4dfe"}), "--cache_dir",
              str(tmp_path / "cache"), "--output_dir", str(out), "--num_proc", "1", "--num_threads", "1")
    results = json.loads((out / "all_results.json").read_text())
    assert results["protocol"] == "holdout" and results["num_subjects"] == 4
    assert results["starting_weights"]["text_tower_trained"] is False
    generated = list((tmp_path / "cache" / "synthetic").glob("*/.complete"))
    assert len(generated) == 1 and json.loads(generated[0].read_text())["options"]["motion"] == "bu4dfe"
    assert (out / "model" / "config.json").is_file()
