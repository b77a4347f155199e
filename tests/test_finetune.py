"""Fine-tuning a saved model of the library (``--init_from``) on the same or another label set: the towers are
reused, the class heads (FACET-VLM's prompts, CoupleFER's classifiers and prototypes, AFNet-M's classifier) are
rebuilt for the new classes, and the model trains; and the report of the learning-curve benchmark
(``scripts/bench.py curve``) that compares fine-tuning with training from scratch."""

import json
import logging
from pathlib import Path

import pytest
import torch
from helpers import TINY_MODELS, fold_record, run_train, tiny_config

from facet_vlm.arguments import ModelArguments
from facet_vlm.labels import label_set
from facet_vlm.training import build_base_model, weights_digest

MODELS_3D = ("facet_vlm", "couplefer", "afnet_m")
#: State-dict names of the class heads; every other weight is a tower or fusion weight and must be reused.
HEADS = {"facet_vlm": (), "couplefer": ("image_classifier.", "point_classifier.", "classifier.", "prototypes"),
         "afnet_m": ("classifier.",)}
BASIC7 = label_set("basic7")
BASIC6 = label_set("basic6")
REPO = Path(__file__).resolve().parents[1]


def model_args(model: str, init_from=None, **changes) -> ModelArguments:
    return ModelArguments(model=model, model_config=json.dumps(TINY_MODELS[model]),
                          init_from=None if init_from is None else str(init_from), **changes)


def saved_model(model: str, labels, directory):
    torch.manual_seed(0)
    source = build_base_model(model_args(model), labels)
    with torch.no_grad():  # as if trained: no weight keeps its initial value (zero biases would match new ones)
        for parameter in source.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    source.save_pretrained(directory)
    return source


def batch(model: str, config, size: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    if model == "facet_vlm":
        channels = sum({"texture": 3, "depth": 1, "normal": 3, "shaded": 1}[name] for name in config.channels)
        size_hw = config.vision_config.image_size
        return {"pixel_values": torch.rand(size, config.num_views, channels, size_hw, size_hw, generator=generator)}
    if model == "couplefer":
        return {"pixel_values": torch.rand(size, 3, 32, 32, generator=generator),
                "points": torch.randn(size, 64, 6, generator=generator)}
    return {"pixel_values": torch.rand(size, 3, 32, 32, generator=generator),
            "geometry_values": torch.rand(size, 4, 32, 32, generator=generator)}


def is_head(model: str, name: str) -> bool:
    return any(name.startswith(head) for head in HEADS[model])


@pytest.mark.parametrize("model", MODELS_3D)
def test_same_label_set_keeps_every_weight(model, tmp_path):
    source = saved_model(model, BASIC7, tmp_path / "saved")
    loaded = build_base_model(model_args(model, tmp_path / "saved"), BASIC7)
    assert weights_digest(loaded) == weights_digest(source)
    assert [loaded.config.id2label[i] for i in range(7)] == list(BASIC7)


def test_model_config_that_changes_the_saved_architecture_is_a_config_error(tmp_path):
    from facet_vlm.errors import ConfigError

    saved_model("afnet_m", BASIC6, tmp_path / "saved")
    args = model_args("afnet_m", tmp_path / "saved")
    args.model_config = {**TINY_MODELS["afnet_m"], "hidden_sizes": [8, 24]}
    with pytest.raises(ConfigError, match="changes the shape of weights of the saved model"):
        build_base_model(args, BASIC6)


@pytest.mark.parametrize("model", MODELS_3D)
@pytest.mark.parametrize("keep_known", [True, False])
def test_new_label_set_reuses_the_towers_and_rebuilds_the_heads(model, keep_known, tmp_path, caplog):
    source = saved_model(model, BASIC7, tmp_path / "saved")
    new_labels = ("neutral", "happiness", "contempt", "surprise")  # a subset in another order and a class of its own
    with caplog.at_level(logging.INFO, logger="facet_vlm.training"):
        tuned = build_base_model(model_args(model, tmp_path / "saved", keep_known_classes=keep_known), new_labels)
    assert [tuned.config.id2label[i] for i in range(4)] == list(new_labels)
    assert tuned.config.label2id == {name: i for i, name in enumerate(new_labels)}
    assert "become" in caplog.text and "initialised anew" in caplog.text

    before, after = source.state_dict(), tuned.state_dict()
    assert set(before) == set(after)
    for name, tensor in after.items():
        if is_head(model, name):
            assert tensor.shape[0] == 4, name
            for new, label in enumerate(new_labels):
                if label == "contempt":
                    continue
                same = torch.equal(tensor[new], before[name][BASIC7.index(label)])
                assert same == keep_known, (name, label)
        else:
            assert torch.equal(tensor, before[name]), name  # towers and fusion modules as saved

    if model == "facet_vlm":  # no weight depends on the classes: the new prompts go through the loaded text tower
        prompts = tuned.config.label_prompts
        assert set(prompts) == set(new_labels)
        assert prompts["happiness"] == source.config.label_prompts["happiness"]
        assert tuned.facet_vlm.get_text_embeds().shape == (4, tuned.config.projection_dim)

    inputs = batch(model, tuned.config)
    labels = torch.tensor([0, 1, 2, 3])
    tuned.train()
    optimizer = torch.optim.SGD(tuned.parameters(), lr=0.1)
    output = tuned(**inputs, labels=labels)
    assert output.logits.shape == (4, 4) and torch.isfinite(output.loss)
    output.loss.backward()
    head = tuned.facet_vlm.visual_projection if model == "facet_vlm" else tuned.classifier
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    previous = head.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(head.weight, previous)


@pytest.mark.parametrize("model", MODELS_3D)
def test_train_script_fine_tunes_a_saved_model_on_another_label_set(model, tmp_path, scans, cache_dir):  # noqa: F811
    """scripts/train.py --init_from a model saved with basic7 on data labelled basic6: the run trains, scores the
    six classes and saves a model of six classes whose towers started from the saved ones."""
    saved_model(model, BASIC7, tmp_path / "saved")
    config = tiny_config(tmp_path, model, scans, cache_dir, init_from=str(tmp_path / "saved"))
    result = run_train("--config", str(config))
    assert "initialised anew for the new classes" in result.stderr
    output = tmp_path / "run"
    results = json.loads((output / "all_results.json").read_text())
    assert results["labels"] == list(BASIC6)
    saved = json.loads((output / "model" / "config.json").read_text())
    assert [saved["id2label"][str(i)] for i in range(6)] == list(BASIC6)
    assert fold_record(output)["history"][-1]["step"] == 2


def test_curve_report_writes_the_table_json_and_plot(tmp_path):
    """bench.py curve's report: one row per number of training subjects, one column per arm, a missing run shown as
    a dash, the JSON as given and the plot."""
    from facet_vlm.benchmarks import accuracy as bench

    runs = [{"arm": arm, "train_subjects": count, "test_subjects": 6, "accuracy": accuracy}
            for arm, count, accuracy in [("scratch", 10, 0.5), ("scratch", 54, 0.8), ("pretrained", 10, 0.75)]]
    results = {"model": "facet_vlm", "config": "c.json", "protocol": "bu3dfe-p1-10fold", "fold": 0, "subjects": 60,
               "generator_seed": 7, "generator_options": {}, "pretrained": "p", "augment": {}, "train_args": "",
               "finetune_args": "", "omp_num_threads": "1", "runs": runs}
    bench.write_curve_report(results, tmp_path)
    table = (tmp_path / "curve.md").read_text()
    assert "| training subjects | scratch | pretrained |" in table
    assert "| 10 | 50.0 % | 75.0 % |" in table and "| 54 | 80.0 % | – |" in table
    assert json.loads((tmp_path / "curve.json").read_text()) == results
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_adapter_only_fine_tuning_on_another_label_set_saves_its_own_base(tmp_path, scans, cache_dir):  # noqa: F811
    """--peft lora --save_adapters_only from a saved basic7 CoupleFER on basic6 data: the adapters' base is the saved
    model with its heads rebuilt for basic6 (base_model/), not the saved model itself (its heads have 7 rows), and
    model/ loads on it."""
    from facet_vlm.pipelines import load_model

    saved_model("couplefer", BASIC7, tmp_path / "saved")
    run_train("--config", str(tiny_config(tmp_path, "couplefer", scans, cache_dir, init_from=str(tmp_path / "saved"),
                                          peft="lora", lora_r=2, save_adapters_only=True)))
    output = tmp_path / "run"
    adapter = json.loads((output / "model" / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == (output / "base_model").resolve()
    tuned = load_model(output / "model")
    assert [tuned.config.id2label[i] for i in range(6)] == list(BASIC6)
    assert weights_digest(tuned) != weights_digest(load_model(output / "base_model"))
