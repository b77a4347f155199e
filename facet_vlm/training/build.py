"""The model a run trains: built from a config, a saved model or a pretrained CLIP (`facet_vlm.registry` names the
classes), its class set adapted to the data, optionally wrapped with LoRA through PEFT."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..arguments import ModelArguments
from ..errors import ConfigError
from ..registry import check_model_files, model_entry
from ..starting_weights import record_starting_weights

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------- model
def build_model(model_args: ModelArguments, labels: Sequence[str], config_overrides: dict | None = None) -> Any:
    """The model to train: from a saved model dir, from a pretrained CLIP, or randomly initialised from a config
    (`facet_vlm.registry` names the classes); wrapped with LoRA when ``--peft lora``.

    ``config_overrides`` (set by the run, e.g. the number of training subjects of a fold) win over
    ``--model_config``.
    """
    model = build_base_model(model_args, labels, config_overrides)
    model.set_attn_implementation(model_args.attn_implementation)
    if model_args.gradient_checkpointing:
        if not model.supports_gradient_checkpointing:
            raise ConfigError(f"--gradient_checkpointing: {type(model).__name__} does not support it (batch-norm "
                              f"statistics would be updated twice)")
        model.activation_checkpointing_enable()
    model = apply_lora(model, model_args) if model_args.peft == "lora" else model
    record_starting_weights(model, model_args.init_from)
    return model



def build_base_model(model_args: ModelArguments, labels: Sequence[str], config_overrides: dict | None = None) -> Any:
    """`build_model` without PEFT."""
    entry = model_entry(model_args.model)
    overrides = {**(model_args.model_config or {}), **(config_overrides or {})}
    label_kwargs = {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}
    init_from = model_args.init_from
    if init_from and (Path(init_from) / "config.json").is_file() and is_own_model(Path(init_from), entry):
        try:
            model = entry.model_class.from_pretrained(init_from, **overrides)
        except RuntimeError as error:  # transformers' report of weights whose shape the overrides changed
            if "ignore_mismatched_sizes" not in str(error):
                raise
            raise ConfigError(f"--model_config {json.dumps(overrides)} changes the shape of weights of the saved "
                              "model; keep its architecture (drop those keys, or use the config it was trained "
                              "with)", init_from) from error
        if class_names(model.config) != list(labels):
            adapt_label_set(model, labels, model_args.keep_known_classes, init_from)
        return model
    if init_from:
        try:
            return entry.from_pretrained_backbone(init_from, labels, overrides)
        except OSError as error:  # not a CLIP folder, not on the Hub, not cached (offline)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"--init_from: cannot load a pretrained CLIP: {reason}", init_from) from error
    config = entry.config_class(**{**overrides, **label_kwargs, "num_labels": len(labels)})
    return entry.model_class(config)



def class_names(config: Any) -> list[str]:
    """The classes of a model config, in class-index order."""
    return [config.id2label[index] for index in range(len(config.id2label))]



def adapt_label_set(model: Any, labels: Sequence[str], keep_known_classes: bool, source: str) -> None:
    """Fine-tuning a saved model on other classes: keep its towers, rebuild its class heads (the model's
    ``set_labels``: FACET-VLM's class prompts, CoupleFER's classifiers and prototypes, AFNet-M's classifier) and log
    which weights were reused and which were initialised anew."""
    if not hasattr(model, "set_labels"):
        raise ConfigError(f"the saved {type(model).__name__} has classes {class_names(model.config)}, the data "
                          f"{list(labels)}, and it cannot change its classes; train with a matching --label_set",
                          source)
    saved_labels = class_names(model.config)
    before = {name: (tensor.data_ptr(), tuple(tensor.shape)) for name, tensor in model.state_dict().items()}
    model.set_labels(list(labels), keep_known_classes=keep_known_classes)
    after = model.state_dict()
    rebuilt = sorted(name for name, tensor in after.items()
                     if before.get(name) != (tensor.data_ptr(), tuple(tensor.shape)))
    known = [name for name in labels if name in saved_labels] if keep_known_classes else []
    logger.info("--init_from %s: the saved classes %s become %s; %d of %d weight tensors reused as saved; "
                "initialised anew for the new classes: %s%s", source, saved_labels, list(labels),
                len(after) - len(rebuilt), len(after), ", ".join(rebuilt) or "none (no weight depends on the classes; "
                "the class text embeddings are encoded from the new classes' prompts by the loaded text tower)",
                f" (the rows of {known}, classes the saved model knows, copied)" if rebuilt and known else "")



def keeps_classes(init_from: str, labels: Sequence[str]) -> bool:
    """True unless ``init_from`` is a saved model (``config.json``) with other classes than `labels`."""
    if not (Path(init_from) / "config.json").is_file():
        return True
    saved = check_model_files(init_from).get("id2label") or {}
    return [saved.get(str(index)) for index in range(len(saved))] == list(labels)



def is_own_model(path: Path, entry: Any) -> bool:
    return check_model_files(path).get("model_type") == entry.config_class.model_type



#: Parameter-name parts of the pretrained CLIP towers: with LoRA they get adapters, everything else trains in full.
PRETRAINED_TOWERS = ("vision_model", "text_model", "image_encoder", "visual_projection", "text_projection")



def lora_config(model: torch.nn.Module, model_args: ModelArguments) -> Any:
    """The `peft.LoraConfig` of a run: LoRA on ``--lora_target_modules`` inside the pretrained towers, and the
    modules outside them (CVSA, MTGF, point branch, CouPle, heads: they start from random weights) in
    ``modules_to_save``, i.e. trained in full and saved with the adapter. A model that declares its own recipe
    (``peft_config_kwargs``, the physio-prompt model) gets that recipe instead."""
    from peft import LoraConfig

    if hasattr(model, "peft_config_kwargs"):
        return LoraConfig(**{**model.peft_config_kwargs(), "lora_dropout": model_args.lora_dropout})
    adapted = getattr(model, "lora_towers", PRETRAINED_TOWERS)  # a model may keep some towers without adapters
    tower_linears = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
                     and any(tower in name.split(".") for tower in adapted)}
    targets = list(model_args.lora_target_modules)
    if not any(name.rsplit(".", 1)[-1] in targets for name in tower_linears):
        names = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                        if isinstance(module, torch.nn.Linear)})
        raise ConfigError(f"--lora_target_modules {targets} match no nn.Linear of the pretrained towers of "
                          f"{type(model).__name__}; linear layer names: {names}")
    towers = "|".join(adapted)
    pattern = rf"(.*\.)?({towers})\..*\.({'|'.join(targets)})"
    return LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                      target_modules=pattern, modules_to_save=modules_outside_towers(model))



def modules_outside_towers(model: torch.nn.Module) -> list[str]:
    """Full names of the largest submodules that hold parameters and no pretrained-tower parameter (items of a
    `ModuleList`/`ModuleDict` count one by one), i.e. PEFT's ``modules_to_save``."""
    def holds_tower(prefix: str) -> bool:
        return any(name.startswith(prefix) and any(t in name.split(".") for t in PRETRAINED_TOWERS)
                   for name, _ in model.named_parameters())

    found, pending = [], [("", model)]
    while pending:
        prefix, module = pending.pop()
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            if child_name in PRETRAINED_TOWERS or not any(True for _ in child.parameters()):
                continue
            # PEFT wraps modules, not containers: the items of a ModuleList/ModuleDict are saved one by one.
            if holds_tower(name + ".") or isinstance(child, torch.nn.ModuleList | torch.nn.ModuleDict):
                pending.append((name + ".", child))
            else:
                found.append(name)
    return sorted(found)



def apply_lora(model: torch.nn.Module, model_args: ModelArguments) -> torch.nn.Module:
    """`peft.get_peft_model` with `lora_config`: adapters train, the towers stay frozen, new modules train in full."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, model_args))
