"""Speed and memory options of the run layer (issue #16): attention kernel, gradient checkpointing, threads."""

import pytest
import torch
from helpers import TINY_MODELS

from facet_vlm.arguments import DataArguments, LoopArguments, ModelArguments
from facet_vlm.errors import ConfigError
from facet_vlm.training import build_model, make_accelerator, run_fingerprint

LABELS = ["anger", "happiness", "sadness"]


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attn_implementation_reaches_the_built_model(implementation):
    model = build_model(ModelArguments(model="facet_vlm", model_config=TINY_MODELS["facet_vlm"],
                                       attn_implementation=implementation), LABELS)
    assert model.config._attn_implementation == implementation


def test_gradient_checkpointing_is_switched_on_or_refused():
    model = build_model(ModelArguments(model="facet_vlm", model_config=TINY_MODELS["facet_vlm"],
                                       gradient_checkpointing=True), LABELS)
    assert model.is_gradient_checkpointing
    plain = build_model(ModelArguments(model="facet_vlm", model_config=TINY_MODELS["facet_vlm"]), LABELS)
    assert not plain.is_gradient_checkpointing
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        build_model(ModelArguments(model="afnet_m", gradient_checkpointing=True), LABELS)


def test_num_threads_sets_torchs_threads_and_is_validated(tmp_path):
    before = torch.get_num_threads()
    try:
        make_accelerator(LoopArguments(output_dir=str(tmp_path / "run"), num_threads=1, report_to="none"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="num_threads"):
        LoopArguments(output_dir=str(tmp_path / "run"), num_threads=0)


def test_speed_options_do_not_change_the_run_fingerprint(tmp_path):
    data = DataArguments()
    base = run_fingerprint(ModelArguments(), data, LoopArguments(output_dir=str(tmp_path)))
    fast = run_fingerprint(ModelArguments(attn_implementation="eager", gradient_checkpointing=True), data,
                           LoopArguments(output_dir=str(tmp_path), num_threads=1, torch_compile=True))
    assert fast == base
    assert run_fingerprint(ModelArguments(), data, LoopArguments(output_dir=str(tmp_path), seed=1)) != base


@pytest.mark.parametrize("value, main, disabled", [("", True, False), ("1", True, True), ("true", True, True),
                                                   ("0", True, False), ("", False, True)])
def test_tqdm_disable_turns_every_bar_off(monkeypatch, value, main, disabled):
    from facet_vlm.progress import progress_bar, progress_disabled

    monkeypatch.setenv("TQDM_DISABLE", value)
    assert progress_disabled(main) is disabled
    assert progress_bar(range(3), enabled=main).disable is disabled


def test_tqdm_disable_silences_the_bars_that_were_asked_for(monkeypatch, tmp_path, capsys):
    """Scan validation asks for its bar (progress=True); TQDM_DISABLE=1 still keeps it off."""
    from facet_vlm.io.validate import validate_files

    (tmp_path / "broken.wrl").write_text("not a scan")
    monkeypatch.setenv("TQDM_DISABLE", "")
    validate_files([tmp_path / "broken.wrl"], progress=True)
    assert "validating scans" in capsys.readouterr().err
    monkeypatch.setenv("TQDM_DISABLE", "1")
    report = validate_files([tmp_path / "broken.wrl"], progress=True)
    assert "validating scans" not in capsys.readouterr().err and len(report.bad) == 1
