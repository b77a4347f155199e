"""A fuzz corpus of bad command lines (issue 15, items 13-17): every script answers each one with one clear line and
exit code 2 (bad arguments) or 1 (bad data), never a traceback (unless ``--debug``) or a silent accept.

Validation runs through `parse_args` directly where it can (fast); a few real script runs check the exit codes and
the one-line messages. Every bad input (corrupt files included) is generated here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY_MODELS, CommandResult, run_command, script_main, tiny_config

from facet_vlm.arguments import merge_dicts, parse_args
from facet_vlm.errors import ConfigError, FacetVLMError, FormatError

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"

# ---------------------------------------------------------------------------------------------------------------
# Arguments refused by parse_args (items 14 and 15)
# ---------------------------------------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (["--eval_batch_size", "-2"], "eval_batch_size"),
    (["--eval_batch_size", "0"], "eval_batch_size"),
    (["--dataloader_num_workers", "-1"], "dataloader_num_workers"),
    (["--learning_rate", "-1"], "learning_rate"),
    (["--learning_rate", "0"], "learning_rate"),
    (["--learning_rate", "nan"], "learning_rate"),
    (["--learning_rate", "inf"], "learning_rate"),
    (["--weight_decay", "-1"], "weight_decay"),
    (["--weight_decay", "nan"], "weight_decay"),
    (["--warmup_ratio", "5"], "warmup_ratio"),
    (["--warmup_ratio", "-0.1"], "warmup_ratio"),
    (["--warmup_ratio", "nan"], "warmup_ratio"),
    (["--max_grad_norm", "-1"], "max_grad_norm"),
    (["--lr_scheduler_type", "bogus"], "lr_scheduler_type 'bogus'; choose one of linear, cosine"),
    (["--lr_scheduler_type", "reduce_lr_on_plateau"], "lr_scheduler_type"),
    (["--label_set", "bogus"], "label_set 'bogus'; choose one of basic6"),
    (["--init_from", "/nonexistent/model"], "/nonexistent/model: --init_from: no such folder"),
    (["--init_from", "./missing_model_dir"], "no such folder"),
    (["--init_from", "a/b/c"], "no such folder"),
    (["--stop_after_steps", "0"], "stop_after_steps"),
    (["--fold", "-1"], "--fold"),
    (["--max_folds", "0"], "max_folds"),
    (["--lora_dropout", "1.5"], "lora_dropout"),
    (["--model_config", '{"hiden_size": 32}'], "'hiden_size' in --model_config of FacetVLMConfig"),
    (["--model_config", '{"vision_config": {"hiden_size": 32}}'],
     "'hiden_size' in --model_config.vision_config of CLIPVisionConfig; did you mean hidden_size"),
    (["--model_config", '{"text_config": {"num_hiden_layers": 1}}'], "did you mean num_hidden_layers"),
    (["--model", "afnet_m", "--model_config", '{"depth": [1, 1]}'], "did you mean depths"),
    (["--model_config", "[1, 2]"], "JSON object"),
    (["--model_config", "{not json"], "not a JSON object"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_bad_argument_is_refused_with_a_clear_config_error(argv, message):
    with pytest.raises(ConfigError) as raised:
        parse_args(argv)
    assert message in str(raised.value)


def test_output_dir_naming_a_file_is_refused(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    for output_dir in (a_file, a_file / "run"):
        with pytest.raises(ConfigError, match="--output_dir must be a folder"):
            parse_args(["--output_dir", str(output_dir)])
    assert parse_args(["--output_dir", str(tmp_path / "new" / "run")])[2].output_dir == str(tmp_path / "new" / "run")


def test_good_values_at_the_edges_are_accepted(tmp_path):
    _, _, loop = parse_args(["--warmup_ratio", "0", "--weight_decay", "0", "--dataloader_num_workers", "0",
                             "--lr_scheduler_type", "linear", "--output_dir", str(tmp_path)])
    assert (loop.warmup_ratio, loop.weight_decay, loop.lr_scheduler_type) == (0.0, 0.0, "linear")
    model, _, _ = parse_args(["--init_from", "openai/clip-vit-base-patch16", "--label_set", "basic7"])
    assert model.init_from == "openai/clip-vit-base-patch16" and model.label_set == "basic7"


def test_command_line_model_config_merges_into_the_config_file(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model": "facet_vlm", "model_config": TINY_MODELS["facet_vlm"]}))
    model_args, _, _ = parse_args(["--config", str(config), "--model_config",
                                   '{"projection_dim": 16, "vision_config": {"num_hidden_layers": 1}}'])
    expected = {**TINY_MODELS["facet_vlm"], "projection_dim": 16,
                "vision_config": {**TINY_MODELS["facet_vlm"]["vision_config"], "num_hidden_layers": 1}}
    assert model_args.model_config == expected
    assert merge_dicts({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4}) == {"a": {"b": 1, "c": 3}, "d": 4}
    # `--model` alone is not mistaken for an abbreviation of --model_config.
    assert parse_args(["--config", str(config), "--model", "facet_vlm"])[0].model_config == TINY_MODELS["facet_vlm"]
    # A typo inside the file's model_config is refused as well, and so is one the merge brings in.
    config.write_text(json.dumps({"model_config": {"vision_config": {"hiden_size": 8}}}))
    with pytest.raises(ConfigError, match="hiden_size"):
        parse_args(["--config", str(config)])
    config.write_text(json.dumps({"model_config": {"projection_dim": 8}}))
    with pytest.raises(ConfigError, match="projection_dimm"):
        parse_args(["--config", str(config), "--model_config", '{"projection_dimm": 4}'])


# ---------------------------------------------------------------------------------------------------------------
# Corrupt model folders (item 14)
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """A tiny random AFNet-M saved with save_pretrained."""
    from facet_vlm.registry import model_entry

    entry = model_entry("afnet_m")
    folder = tmp_path_factory.mktemp("model") / "model"
    entry.model_class(entry.config_class(**TINY_MODELS["afnet_m"], num_labels=6)).save_pretrained(folder)
    return folder


def corrupt_copy(saved: Path, target: Path, file_name: str, corrupt) -> Path:
    import shutil

    shutil.copytree(saved, target)
    corrupt(target / file_name)
    return target / file_name


CORRUPTIONS = {
    "config_truncated_json": ("config.json", lambda f: f.write_text(f.read_text()[: len(f.read_text()) // 2])),
    "config_not_utf8": ("config.json", lambda f: f.write_bytes(b"\xff\xfe{" + os.urandom(16))),
    "config_a_list": ("config.json", lambda f: f.write_text("[1, 2]")),
    "weights_truncated": ("model.safetensors", lambda f: os.truncate(f, f.stat().st_size // 2)),
    "weights_header_only": ("model.safetensors", lambda f: os.truncate(f, 8)),
    "weights_empty": ("model.safetensors", lambda f: f.write_bytes(b"")),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_model_file_is_named(name, saved_model, tmp_path):
    from facet_vlm.pipelines import load_model

    file_name, corrupt = CORRUPTIONS[name]
    broken = corrupt_copy(saved_model, tmp_path / "model", file_name, corrupt)
    with pytest.raises(FormatError) as raised:
        load_model(broken.parent)
    assert str(raised.value).startswith(str(broken))


def test_training_from_a_corrupt_saved_model_names_the_file(saved_model, tmp_path):
    from facet_vlm.training import build_base_model

    broken = corrupt_copy(saved_model, tmp_path / "model", "model.safetensors",
                          lambda f: os.truncate(f, f.stat().st_size - 100))
    model_args, _, _ = parse_args(["--model", "afnet_m", "--init_from", str(broken.parent)])
    with pytest.raises(FormatError, match="model.safetensors"):
        build_base_model(model_args, [f"class{i}" for i in range(6)])


def test_unknown_hub_id_offline_as_init_from_is_a_config_error():
    from facet_vlm.training import build_base_model

    model_args, _, _ = parse_args(["--init_from", "nobody/no-such-clip"])
    with pytest.raises(ConfigError, match="nobody/no-such-clip: --init_from: cannot load a pretrained CLIP"):
        build_base_model(model_args, ["a", "b"])


# ---------------------------------------------------------------------------------------------------------------
# Real script runs: one line, exit codes, --debug (item 13), predict with a bad scan (item 16)
# ---------------------------------------------------------------------------------------------------------------

def run_script(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess | CommandResult:
    """``scripts/<script> ARGS``: in this process through its `facet_vlm.cli` entry point, except predict.py (a
    subprocess)."""
    if script != "predict.py":
        return run_command(script_main(script), *args)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(SCRIPTS / script), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0]


def test_train_bad_argument_exits_2_with_one_line_and_debug_keeps_the_traceback():
    result = run_script("train.py", "--learning_rate", "nan")
    assert_one_line_error(result, 2, "error: --learning_rate must be a finite number > 0, got nan")
    debug = run_script("train.py", "--learning_rate", "nan", "--debug")
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_unknown_hub_id_offline_and_a_zero_batch_exit_2(saved_model, tmp_path):
    result = run_script("predict.py", "--model", "nobody/no-such-model", str(tmp_path / "scan.wrl"))
    assert_one_line_error(result, 2, "nobody/no-such-model")
    result = run_script("predict.py", "--model", str(saved_model), "--top_k", "0", str(tmp_path / "scan.wrl"))
    assert_one_line_error(result, 2, "--top_k must be >= 1")
    result = run_script("evaluate_model.py", str(saved_model), "--dataset", "synthetic", "--batch_size", "0")
    assert_one_line_error(result, 2, "--batch_size must be >= 1")


def test_predict_reports_the_good_scan_and_the_bad_one_and_exits_1(saved_model, scans, tmp_path):  # noqa: F811
    good = sorted((scans / "bu3dfe").rglob("*.wrl"))[0]
    bad = tmp_path / "F9999_HA04WH_F3D.wrl"
    bad.write_bytes(good.read_bytes()[:300])  # truncated in the middle of the geometry
    result = run_script("predict.py", "--model", str(saved_model), "--json", "--batch_size", "2", str(good), str(bad))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["path"] for line in lines] == [str(good), str(bad)]
    assert abs(sum(entry["score"] for entry in lines[0]["scores"]) - 1) < 1e-4
    assert lines[1]["error"].startswith(str(bad))
    assert f"1 of 2 inputs failed: {bad}" in result.stderr


def test_prepare_data_bad_scan_exits_1_with_one_line(tmp_path):
    bad = tmp_path / "broken.wrl"
    bad.write_text("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0")
    result = run_script("prepare_data.py", "views", str(bad), "--out", str(tmp_path / "views.png"))
    assert_one_line_error(result, 1, str(bad))
    assert not (tmp_path / "views.png").exists()


# ---------------------------------------------------------------------------------------------------------------
# Resuming (item 17)
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, scans, cache_dir) -> tuple[Path, Path]:  # noqa: F811
    """A tiny AFNet-M run stopped after its step-1 checkpoint: (config file, output dir)."""
    tmp = tmp_path_factory.mktemp("stopped")
    config = tiny_config(tmp, "afnet_m", scans, cache_dir, checkpointing_steps="1", eval_each_epoch=False)
    result = run_script("train.py", "--config", str(config), "--stop_after_steps", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = tmp / "run" / "fold_0" / "checkpoints" / "step_0000001"
    assert (checkpoint / "run_arguments.json").is_file()
    return config, tmp / "run"


def copy_run(run: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(run, target)
    return target / "fold_0" / "checkpoints" / "step_0000001"


@pytest.mark.parametrize(("changes", "message"), [
    (["--learning_rate", "0.01"], "learning_rate 0.0003 -> 0.01"),
    (["--seed", "7"], "seed 42 -> 7"),
])
def test_resuming_with_changed_arguments_is_refused(changes, message, stopped_run, tmp_path):
    config, run = stopped_run
    checkpoint = copy_run(run, tmp_path / "run")
    result = run_script("train.py", "--config", str(config), "--output_dir", str(tmp_path / "run"),
                        "--resume_from_checkpoint", "latest", *changes)
    assert_one_line_error(result, 2, str(checkpoint / "run_arguments.json"), message, "--allow_changed_args")
    # Refused before the run's record of its arguments is overwritten.
    assert (tmp_path / "run" / "run_config.json").read_text() == (run / "run_config.json").read_text()


def test_resuming_a_changed_architecture_or_a_truncated_optimizer_names_the_file(stopped_run, tmp_path):
    config, run = stopped_run
    checkpoint = copy_run(run, tmp_path / "arch")
    wider = json.dumps({**TINY_MODELS["afnet_m"], "embedding_size": 16})
    result = run_script("train.py", "--config", str(config), "--output_dir", str(tmp_path / "arch"),
                        "--resume_from_checkpoint", "latest", "--model_config", wider, "--allow_changed_args")
    assert_one_line_error(result, 2, str(checkpoint / "model.safetensors"), "size mismatch")

    checkpoint = copy_run(run, tmp_path / "truncated")
    optimizer = checkpoint / "optimizer.bin"
    os.truncate(optimizer, optimizer.stat().st_size // 2)
    result = run_script("train.py", "--config", str(config), "--output_dir", str(tmp_path / "truncated"),
                        "--resume_from_checkpoint", "latest")
    assert_one_line_error(result, 1, str(optimizer), "truncated")


def test_error_family():
    """The exit code follows the class: a ConfigError is a bad argument, any other FacetVLMError bad data."""
    from facet_vlm.cli import run_cli

    def fails(error):
        def main(argv):
            raise error
        return main

    assert run_cli(fails(ConfigError("bad")), []) == 2
    assert run_cli(fails(FormatError("bad", "x.wrl")), []) == 1
    assert run_cli(lambda argv: 3, []) == 3 and run_cli(lambda argv: {"a": 1}, []) == 0
    with pytest.raises(KeyError):
        run_cli(fails(KeyError("a bug keeps its traceback")), [])
    assert issubclass(ConfigError, FacetVLMError)
